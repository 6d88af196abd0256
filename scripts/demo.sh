#!/usr/bin/env bash
# Quick start: installs the Debian packages, builds Veil and runs the PII demo
# (PHP app + MariaDB under STRICT mTLS) with `veil up`. Ctrl-C stops it and
# removes everything it created. Run as root (it creates network namespaces).
set -euo pipefail
cd "$(dirname "$0")/.."
[[ "$(id -u)" -eq 0 ]] || { echo "demo: run as root (sudo $0): veil up creates network namespaces" >&2; exit 1; }
bash scripts/install-deps.sh
cargo build --release -p veil --bin veil   # the CLI and control plane
cargo sidecar                              # the proxy-only `veil-sidecar` it starts in each pod, static (.cargo/config.toml)
exec ./target/release/veil up examples/pii-demo "$@"
