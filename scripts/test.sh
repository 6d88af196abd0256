#!/usr/bin/env bash
# Runs every test of the workspace (unit, integration and the end-to-end
# tests on real network namespaces, which need root) and prints one summary
# line: "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "the end-to-end tests create network namespaces: run as root" >&2
  exit 2
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo build --workspace --all-targets 2>&1 | tail -n 3
# The end-to-end tests share one bridge; each test binary serialises its own
# tests, and binaries run one after another under `cargo test`.
cargo test --workspace --no-fail-fast 2>&1 | tee "$log"
status=${PIPESTATUS[0]}

passed=$(awk '/^test result:/ { for (i = 1; i < NF; i++) if ($(i+1) ~ /^passed/) s += $i } END { print s + 0 }' "$log")
failed=$(awk '/^test result:/ { for (i = 1; i < NF; i++) if ($(i+1) ~ /^failed/) s += $i } END { print s + 0 }' "$log")
# The smoke runs what the quick start builds: release binaries, the static sidecar.
if BENCH_PROFILE=release bash bench/run --quick --smoke; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "bench/run --quick --smoke failed" >&2; fi
echo
echo "${passed:-0} passed, ${failed:-0} failed"
if [ "$status" -ne 0 ] || [ "${failed:-0}" -ne 0 ] || [ "${passed:-0}" -eq 0 ]; then
  exit 1
fi
