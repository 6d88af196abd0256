#!/bin/bash
# Makes the certificates of the egress-origination example, as the tutorial's openssl steps
# do: a self-signed root CA, an intermediate CA signed by it, and, signed by the
# intermediate, the external nginx's server certificate and the client certificate the
# egress gateway presents.
#
#   certs/root/ca.key, ca.cert.pem                       the root CA
#   certs/intermediate/intermediate.key, .cert.pem       the intermediate CA
#   certs/ca/ca-chain.cert.pem                           intermediate + root (both sides trust it)
#   certs/server/server.key, server.chain.pem            nginx: external-service.apps.e5dd.opentlc.com
#   certs/client/tls.key, tls.crt                        the egress gateway's client certificate
#
# On Kubernetes the tutorial stores the last two sets as Secrets and mounts them into the
# egress gateway at the paths the DestinationRule names:
#   kubectl create -n istio-system secret tls nginx-client-certs \
#       --key certs/client/tls.key --cert certs/client/tls.crt
#   kubectl create -n istio-system secret generic nginx-ca-certs \
#       --from-file=certs/ca/ca-chain.cert.pem
# Locally, veil.local.yaml's `mounts` do the same for the egress gateway pod.
#
# Usage: ./setup.sh [--force]   (--force makes new keys even when they exist)
set -euo pipefail

log() { echo "setup.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

DIR="$(cd "$(dirname "$0")" && pwd)"
HOST=external-service.apps.e5dd.opentlc.com
CERTS="$DIR/certs"
FORCE=0
case "${1:-}" in
    --force) FORCE=1 ;;
    "") ;;
    *) die "unknown argument $1 (usage: ./setup.sh [--force])" ;;
esac
command -v openssl >/dev/null || die "openssl not found (install the openssl package)"

serial() { echo "0x$(openssl rand -hex 8)"; }

# sign NAME CSR CA_CERT CA_KEY EXT_TEXT OUT: signs a request with a CA and extensions.
sign() {
    printf '%b' "$5" >"$CERTS/$1.ext"
    openssl x509 -req -sha256 -days 365 -CA "$3" -CAkey "$4" -set_serial "$(serial)" \
        -in "$2" -extfile "$CERTS/$1.ext" -out "$6" 2>/dev/null
    rm -f "$CERTS/$1.ext" "$2"
}

if [[ $FORCE == 1 || ! -s "$CERTS/ca/ca-chain.cert.pem" || ! -s "$CERTS/client/tls.crt" || ! -s "$CERTS/server/server.chain.pem" ]]; then
    rm -rf "$CERTS"
    mkdir -p "$CERTS"/{root,intermediate,ca,server,client}
    umask 077
    # The root CA: self-signed.
    openssl req -x509 -sha256 -nodes -days 730 -newkey rsa:2048 \
        -subj "/O=External Inc./CN=External Root CA" \
        -addext "basicConstraints=critical,CA:true" -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -keyout "$CERTS/root/ca.key" -out "$CERTS/root/ca.cert.pem" 2>/dev/null
    # The intermediate CA, signed by the root.
    openssl req -nodes -newkey rsa:2048 -subj "/O=External Inc./CN=External Intermediate CA" \
        -keyout "$CERTS/intermediate/intermediate.key" -out "$CERTS/intermediate.csr" 2>/dev/null
    sign intermediate "$CERTS/intermediate.csr" "$CERTS/root/ca.cert.pem" "$CERTS/root/ca.key" \
        'basicConstraints=critical,CA:true,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n' \
        "$CERTS/intermediate/intermediate.cert.pem"
    cat "$CERTS/intermediate/intermediate.cert.pem" "$CERTS/root/ca.cert.pem" >"$CERTS/ca/ca-chain.cert.pem"
    # The nginx server certificate for the external host, signed by the intermediate.
    openssl req -nodes -newkey rsa:2048 -subj "/O=External Inc./CN=$HOST" \
        -keyout "$CERTS/server/server.key" -out "$CERTS/server.csr" 2>/dev/null
    sign server "$CERTS/server.csr" "$CERTS/intermediate/intermediate.cert.pem" "$CERTS/intermediate/intermediate.key" \
        "subjectAltName=DNS:$HOST\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n" \
        "$CERTS/server/server.cert.pem"
    cat "$CERTS/server/server.cert.pem" "$CERTS/intermediate/intermediate.cert.pem" >"$CERTS/server/server.chain.pem"
    # The client certificate of the egress gateway, signed by the intermediate.
    openssl req -nodes -newkey rsa:2048 -subj "/O=Client Inc./CN=istio-egressgateway" \
        -keyout "$CERTS/client/tls.key" -out "$CERTS/client.csr" 2>/dev/null
    sign client "$CERTS/client.csr" "$CERTS/intermediate/intermediate.cert.pem" "$CERTS/intermediate/intermediate.key" \
        'extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n' \
        "$CERTS/client/client.cert.pem"
    cat "$CERTS/client/client.cert.pem" "$CERTS/intermediate/intermediate.cert.pem" >"$CERTS/client/tls.crt"
    rm -f "$CERTS/client/client.cert.pem"
    chmod 644 "$CERTS"/*/*.pem "$CERTS/client/tls.crt"
    log "made the root, intermediate, server and client certificates in $CERTS"
else
    log "keeping the certificates in $CERTS (./setup.sh --force makes new ones)"
fi
for cert in "$CERTS/server/server.cert.pem" "$CERTS/client/tls.crt"; do
    openssl verify -CAfile "$CERTS/ca/ca-chain.cert.pem" "$cert" >/dev/null || die "$cert does not chain to $CERTS/ca/ca-chain.cert.pem"
done
log "certs/client and certs/ca are what the egress gateway mounts (veil.local.yaml mounts)"
