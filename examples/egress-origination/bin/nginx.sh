#!/bin/bash
# The external nginx of seed 004, run by `veil up` in its own network namespace outside the
# mesh (veil.local.yaml: external: true). Port 443 requires a client certificate signed by
# the example's CA (ssl_verify_client on); port 80 serves plain HTTP, which only a client
# allowed to pass through (outboundTrafficPolicy ALLOW_ANY) reaches.
#
# Needs: nginx (Debian package nginx-light), the certificates of ./setup.sh.
# Environment from veil up: VEIL_POD_DIR (writable), VEIL_EXAMPLE_DIR.
set -euo pipefail

HOST=external-service.apps.e5dd.opentlc.com
EXAMPLE="${VEIL_EXAMPLE_DIR:-$(cd "$(dirname "$0")/.." && pwd)}"
RUN="${VEIL_POD_DIR:-$(mktemp -d)}"
CERTS="$EXAMPLE/certs"
command -v nginx >/dev/null || { echo "nginx.sh: nginx not found; install the nginx-light package (scripts/install-deps.sh)" >&2; exit 1; }
[[ -s "$CERTS/server/server.chain.pem" ]] || { echo "nginx.sh: no certificates; run $EXAMPLE/setup.sh first" >&2; exit 1; }

mkdir -p "$RUN/html" "$RUN/tmp"
cp "$EXAMPLE/html/index.html" "$RUN/html/index.html"
chmod -R a+rX "$RUN"
cat >"$RUN/nginx.conf" <<CONF
daemon off;
worker_processes 1;
pid $RUN/nginx.pid;
error_log stderr info;
events { worker_connections 64; }
http {
    access_log /dev/stdout;
    client_body_temp_path $RUN/tmp/body;
    proxy_temp_path $RUN/tmp/proxy;
    fastcgi_temp_path $RUN/tmp/fastcgi;
    uwsgi_temp_path $RUN/tmp/uwsgi;
    scgi_temp_path $RUN/tmp/scgi;
    server {
        listen 443 ssl;
        server_name $HOST;
        ssl_certificate $CERTS/server/server.chain.pem;
        ssl_certificate_key $CERTS/server/server.key;
        ssl_client_certificate $CERTS/ca/ca-chain.cert.pem;
        ssl_verify_client on;
        ssl_verify_depth 2;
        root $RUN/html;
        location / {
            add_header X-Client-Subject "\$ssl_client_s_dn" always;
            add_header X-Client-Verify "\$ssl_client_verify" always;
        }
    }
    server {
        listen 80;
        server_name $HOST;
        location / {
            default_type text/plain;
            return 200 "plain port 80 of the external nginx: reached without TLS\n";
        }
    }
}
CONF
exec nginx -p "$RUN" -c "$RUN/nginx.conf"
