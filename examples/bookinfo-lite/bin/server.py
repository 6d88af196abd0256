#!/usr/bin/env python3
"""Server of the bookinfo-lite example: answers every GET (any path) with
"<pod> <version>\\n", over HTTP/1.1 with keep-alive.

The pod name comes from VEIL_POD_NAME (set by `veil up`), else the host name;
the version from VERSION (the Deployment's env), else "-"; the port from PORT
(default 9080). Bounded: a connection idle for IDLE_SECONDS (default 30) is
closed. Standard library only.
"""

import http.server
import os
import socket
import sys

POD = os.environ.get("VEIL_POD_NAME") or socket.gethostname()
VERSION = os.environ.get("VERSION", "-")
IDLE_SECONDS = float(os.environ.get("IDLE_SECONDS", "30"))


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "bookinfo-lite"
    timeout = IDLE_SECONDS
    # Headers and body are two writes: without TCP_NODELAY the body waits for
    # the peer's delayed ACK (40 ms per keep-alive response).
    disable_nagle_algorithm = True

    def do_GET(self):
        body = f"{POD} {VERSION}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass


def main():
    port = int(os.environ.get("PORT", "9080"))
    server = http.server.ThreadingHTTPServer(("0.0.0.0", port), Handler)
    server.daemon_threads = True
    print(f"server.py[{POD}]: {VERSION} serving :{port}", file=sys.stderr, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
