#!/usr/bin/env bash
# Measures the PII demo on this machine: time from `veil up` to ready,
# sidecar RSS, and the latency of a page that reads MariaDB, three ways in
# one run (median of N requests each):
#   mesh    curl → ingress gateway → httpd sidecar (mTLS) → Apache/PHP → sidecar → (mTLS) → MariaDB sidecar
#   nomesh  the same demo with injection disabled (gateway only, plaintext between pods)
#   direct  curl inside the httpd pod to Apache on loopback, no sidecars anywhere (the floor)
# Usage: sudo bench/pii-demo.sh [N]   (default N=200). Prints a Markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-200}
VEIL=${VEIL:-./target/release/veil}
[[ -x $VEIL ]] || cargo build --release --bin veil
HOST=pii-demo.apps.hl.test
work=$(mktemp -d)
chmod 755 "$work"   # the proxies (uid 1337) read the mesh root under the state dir
trap 'kill "$up_pid" 2>/dev/null; wait "$up_pid" 2>/dev/null; "$VEIL" down --state-dir "$work/state" >/dev/null 2>&1; rm -rf "$work"' EXIT

median() { sort -n | awk '{a[NR]=$1} END {if (NR==0) {print "nan"; exit} m=(NR+1)/2; i=int(m); print (m==i)?a[i]:(a[i]+a[i+1])/2}'; }
p90() { sort -n | awk '{a[NR]=$1} END {i=int(NR*0.9); if (i<1) i=1; print a[i]}'; }

run_mesh() { # $1 = label, $2 = example dir
    mkdir -p "$work/state"
    local t0 t1
    t0=$(date +%s.%N)
    "$VEIL" up "$2" --state-dir "$work/state" > "$work/up.log" 2>&1 &
    up_pid=$!
    for _ in $(seq 1 1800); do grep -q "mesh ready" "$work/up.log" && break; sleep 0.1; done
    grep -q "mesh ready" "$work/up.log" || { cat "$work/up.log"; exit 1; }
    t1=$(date +%s.%N)
    local port
    port=$(grep -o '(HTTP) published at 127.0.0.1:[0-9]*' "$work/up.log" | head -1 | cut -d: -f2)
    curl -s -o /dev/null -H "Host: $HOST" "http://127.0.0.1:$port/" # warm up
    for _ in $(seq 1 "$N"); do
        curl -s -o /dev/null -w '%{time_total}\n' -H "Host: $HOST" "http://127.0.0.1:$port/"
    done > "$work/$1.times"
    if [[ $1 == nomesh ]]; then
        for _ in $(seq 1 "$N"); do
            ip netns exec veil-pii-demo-httpd-server curl -s -o /dev/null -w '%{time_total}\n' http://127.0.0.1/
        done > "$work/direct.times"
    fi
    if [[ $1 == mesh ]]; then
        rss=$(for pid in $(jq -r '.pods[] | select(.sidecar) | .proxy_pid' "$work/state/mesh.json"); do
            awk '/VmRSS/ {print $2}' "/proc/$pid/status"; done | sort -n | tail -1)
        echo "ready_s=$(echo "$t1 - $t0" | awk '{print $1 - $3}')" > "$work/mesh.meta"
        echo "rss_kib=$rss" >> "$work/mesh.meta"
    fi
    kill -TERM "$up_pid"; wait "$up_pid" || true
}

run_mesh mesh examples/pii-demo
cp -a examples/pii-demo "$work/nomesh"
sed -i 's/istio-injection: enabled/istio-injection: disabled/' "$work/nomesh/namespace.yaml"
run_mesh nomesh "$work/nomesh"

. "$work/mesh.meta"
ms() { awk '{printf "%.2f", $1 * 1000}'; }
d50=$(median < "$work/direct.times" | ms); n50=$(median < "$work/nomesh.times" | ms); m50=$(median < "$work/mesh.times" | ms)
d90=$(p90 < "$work/direct.times" | ms); n90=$(p90 < "$work/nomesh.times" | ms); m90=$(p90 < "$work/mesh.times" | ms)
echo "PII demo on $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $N requests per path, GET / (PHP page reading MariaDB)"
echo
echo "| path | p50 ms | p90 ms | p50 vs direct |"
echo "|---|---|---|---|"
echo "| direct (curl in the httpd pod → Apache, no proxy anywhere) | $d50 | $d90 | 1.00× |"
echo "| no mesh (gateway, plaintext between pods) | $n50 | $n90 | $(awk -v a="$n50" -v b="$d50" 'BEGIN {printf "%.2f×", a/b}') |"
echo "| mesh (gateway + 2 sidecars, STRICT mTLS) | $m50 | $m90 | $(awk -v a="$m50" -v b="$d50" 'BEGIN {printf "%.2f×", a/b}') |"
echo
echo "veil up → ready: ${ready_s} s; sidecar RSS (largest of the pod sidecars, after the run): $((rss_kib / 1024)).$(( (rss_kib % 1024) * 10 / 1024 )) MiB"
