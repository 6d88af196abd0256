#!/bin/sh
# The benchmark server pod: iperf3 on 5201, and `veil-bench serve` with a
# 1 KiB HTTP/1.1 response on 8080 and a TCP echo on 9000. Both stay in this
# process group, so `veil down` stops them together.
set -e
bin="$VEIL_EXAMPLE_DIR/bin/veil-bench"
[ -x "$bin" ] || bin="$VEIL_EXAMPLE_DIR/../../target/release/veil-bench"
iperf3 --server --port 5201 &
exec "$bin" serve --http 8080 --echo 9000
