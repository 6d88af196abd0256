#!/bin/bash
# The third-party gateway of seed 000, run by `veil up` in the pod `enroute` (no sidecar).
# EnRoute is an Envoy-based gateway; locally HAProxy plays its part, configured as the
# seed's GatewayHost asks:
#
#   client --TLS (bookinfo.saaraslabs.com, the gateway's own certificate)--> :443
#          --mesh mTLS (the pod's mesh certificate, ALPN istio)--> productpage:9080
#
# The gateway's certificate comes from the Secret the GatewayHost names (secretName
# bookinfo-saaraslabs, written by ./setup.sh). The mesh certificate, key and root come from
# $OUTPUT_CERTS, which the helper of veil.local.yaml's `outputCerts` keeps current (Istio's
# OUTPUT_CERTS). The mesh certificate carries only a URI SAN (the SPIFFE ID), so HAProxy
# checks productpage's certificate against the mesh root without a host name check.
#
# Rotation: every second this script looks at cert-chain.pem; when the helper has rewritten
# it (at half-life), and the new key and certificate belong together, it copies them for
# HAProxy and reloads it (SIGUSR2 to the master: a seamless reload, listening sockets are
# handed over, connections in flight finish on the old worker).
#
# Needs: haproxy (Debian package haproxy), openssl, the Secret of ./setup.sh.
# Environment from veil up: OUTPUT_CERTS, VEIL_POD_DIR (writable), VEIL_EXAMPLE_DIR.
# UPSTREAM (default productpage.default.svc.cluster.local:9080) overrides the backend.
set -euo pipefail

log() { echo "enroute.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

HOST=bookinfo.saaraslabs.com
EXAMPLE="${VEIL_EXAMPLE_DIR:-$(cd "$(dirname "$0")/.." && pwd)}"
SECRET_FILE="$EXAMPLE/bookinfo-saaraslabs.yaml"
MESH="${OUTPUT_CERTS:-}"
UPSTREAM="${UPSTREAM:-productpage.default.svc.cluster.local:9080}"
RUN="${VEIL_POD_DIR:-$(mktemp -d)}/haproxy"

command -v haproxy >/dev/null || die "haproxy not found; install the haproxy package (scripts/install-deps.sh)"
command -v openssl >/dev/null || die "openssl not found; install the openssl package"
[[ -n "$MESH" ]] || die "OUTPUT_CERTS is not set: give the workload outputCerts in veil.local.yaml"
[[ -s "$SECRET_FILE" ]] || die "no $SECRET_FILE (Secret bookinfo-saaraslabs); run $EXAMPLE/setup.sh first"
mkdir -p "$RUN"
chmod 700 "$RUN"
umask 077

# secret_value KEY: the decoded value of KEY in the Secret's data (as setup.sh writes it).
secret_value() { sed -n "s/^  ${1//./\\.}: //p" "$SECRET_FILE" | head -n1 | base64 -d; }

# The gateway's own certificate and key, in the one file HAProxy's `crt` reads.
{ secret_value tls.crt; secret_value tls.key; } >"$RUN/gateway.pem"
openssl x509 -noout -in "$RUN/gateway.pem" 2>/dev/null || die "$SECRET_FILE has no usable tls.crt; run $EXAMPLE/setup.sh --force"

# mesh_files: copies the mesh certificate chain and key (one file, for `crt`) and the root
# (for `ca-file`) from $OUTPUT_CERTS, when the key and certificate belong together (the
# helper rewrites the files one after the other). Fails, changing nothing, otherwise.
mesh_files() {
    local chain key root
    chain="$(cat "$MESH/cert-chain.pem")" && key="$(cat "$MESH/key.pem")" && root="$(cat "$MESH/root-cert.pem")" || return 1
    [[ "$(openssl x509 -noout -pubkey <<<"$chain" 2>/dev/null)" == "$(openssl pkey -pubout <<<"$key" 2>/dev/null)" ]] || return 1
    printf '%s\n%s\n' "$chain" "$key" >"$RUN/mesh.pem.tmp" && mv "$RUN/mesh.pem.tmp" "$RUN/mesh.pem"
    printf '%s\n' "$root" >"$RUN/mesh-root.pem.tmp" && mv "$RUN/mesh-root.pem.tmp" "$RUN/mesh-root.pem"
    log "mesh certificate $(openssl x509 -noout -serial <<<"$chain") for $(openssl x509 -noout -ext subjectAltName <<<"$chain" | sed -n 's/^ *//p' | tail -n1), $(openssl x509 -noout -enddate <<<"$chain")"
}

chain_sum() { sha256sum "$MESH/cert-chain.pem" 2>/dev/null | cut -d' ' -f1 || true; }

last="$(chain_sum)"
for _ in $(seq 1 50); do
    mesh_files && break
    sleep 0.1
    last="$(chain_sum)"
done
[[ -s "$RUN/mesh.pem" ]] || die "no matching key.pem and cert-chain.pem in $MESH"

cat >"$RUN/haproxy.cfg" <<CFG
global
    log stdout format raw local0 info
    pidfile $RUN/haproxy.pid

defaults
    mode http
    log global
    option httplog
    timeout connect 5s
    timeout client 30s
    timeout server 30s

# GatewayHost productpage-9080-gatewayhost: fqdn $HOST, tls.secretName bookinfo-saaraslabs.
frontend bookinfo-saaraslabs
    bind :443 ssl crt $RUN/gateway.pem alpn h2,http/1.1
    acl gatewayhost req.hdr(host),field(1,:) -i $HOST
    http-request return status 404 content-type text/plain string "no GatewayHost for this host" unless gatewayhost
    default_backend productpage

# routes: prefix / -> productpage:9080, over mesh mTLS as spiffe://.../sa/enroute.
backend productpage
    server productpage $UPSTREAM ssl crt $RUN/mesh.pem ca-file $RUN/mesh-root.pem verify required alpn istio
CFG

haproxy -c -q -f "$RUN/haproxy.cfg" || die "HAProxy refuses $RUN/haproxy.cfg"
haproxy -W -f "$RUN/haproxy.cfg" &
HAPROXY=$!
trap 'kill -TERM "$HAPROXY" 2>/dev/null; wait "$HAPROXY"; exit 0' TERM INT
log "HAProxy (master pid $HAPROXY) serves https://$HOST on :443 -> $UPSTREAM over mesh mTLS"

# Follow the helper's rotations until HAProxy exits.
while kill -0 "$HAPROXY" 2>/dev/null; do
    sleep 1
    now="$(chain_sum)"
    [[ -n "$now" && "$now" != "$last" ]] || continue
    if mesh_files; then
        last="$now"
        kill -USR2 "$HAPROXY"
        log "mesh certificate rotated: reloaded HAProxy"
    fi
done
wait "$HAPROXY"
