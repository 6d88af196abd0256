#!/bin/bash
# Installs the Debian 12 packages that Veil's demos and tests need. Idempotent; run as root.
#
# The mesh runs MariaDB and Apache itself (examples/pii-demo/bin/*.sh), so the
# system services that the packages would start are stopped and disabled again.
set -euo pipefail

PACKAGES=(
    iproute2 iptables procps psmisc curl openssl ca-certificates jq
    tcpdump tshark
    mariadb-server mariadb-client
    apache2 libapache2-mod-php php-mysql
    protobuf-compiler
    stunnel4 haproxy iperf3 wrk
    nginx-light
)
# package -> system service it may start
declare -A SERVICES=([mariadb-server]=mariadb [apache2]=apache2 [haproxy]=haproxy [nginx-light]=nginx)

log() { echo "install-deps: $*"; }

[[ "$(id -u)" -eq 0 ]] || { echo "install-deps: must run as root" >&2; exit 1; }
command -v apt-get >/dev/null || { echo "install-deps: apt-get not found (Debian 12 expected)" >&2; exit 1; }
if [[ -r /etc/os-release ]]; then
    . /etc/os-release
    [[ "${ID:-}" == debian && "${VERSION_ID:-}" == 12 ]] \
        || log "warning: tested on Debian 12, this is ${PRETTY_NAME:-unknown}"
fi

is_installed() {
    [[ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)" == installed ]]
}

version_of() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || true; }

declare -A WAS_INSTALLED=() OLD_VERSION=()
for p in "${PACKAGES[@]}"; do
    if is_installed "$p"; then WAS_INSTALLED[$p]=1; OLD_VERSION[$p]=$(version_of "$p"); fi
done

export DEBIAN_FRONTEND=noninteractive
# tshark: do not ask whether non-root users may capture packets.
echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections

log "apt-get update"
apt-get update -q
log "apt-get install ${PACKAGES[*]}"
apt-get install -y -q --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    "${PACKAGES[@]}"

service_running() {
    if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null; then
        systemctl is-active --quiet "$1"
    else
        service "$1" status >/dev/null 2>&1
    fi
}

stop_service() {
    local svc=$1
    if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null; then
        systemctl stop "$svc" >/dev/null 2>&1 || true
        systemctl disable "$svc" >/dev/null 2>&1 || true
    else
        # `service` runs the init script directly (invoke-rc.d would obey policy-rc.d).
        if service_running "$svc"; then service "$svc" stop >/dev/null 2>&1 || true; fi
        update-rc.d "$svc" disable >/dev/null 2>&1 || true
    fi
}

# Stop and disable the services of packages this run installed (whether or not
# policy-rc.d let them start). Services that were installed before are left alone.
for p in "${!SERVICES[@]}"; do
    svc=${SERVICES[$p]}
    if [[ -z "${WAS_INSTALLED[$p]:-}" ]]; then
        if service_running "$svc"; then
            log "stopping and disabling the system service $svc (started by the install)"
        else
            log "disabling the system service $svc (not running)"
        fi
        stop_service "$svc"
    elif service_running "$svc"; then
        log "note: the system service $svc was already installed and is running; left as is"
    fi
done

log "summary:"
for p in "${PACKAGES[@]}"; do
    v=$(version_of "$p")
    if [[ -z "${WAS_INSTALLED[$p]:-}" ]]; then state="installed now"
    elif [[ "${OLD_VERSION[$p]}" != "$v" ]]; then state="upgraded from ${OLD_VERSION[$p]}"
    else state="already installed"; fi
    printf '  %-20s %-32s %s\n' "$p" "$v" "$state"
done
