#!/usr/bin/env python3
"""TCP health check of the PII demo (seed 001-healthcheck-tcp-gateway.yaml).

On every accepted connection the server sends one line,
"httpd-healthcheck ok <pod>\\n", and closes: a load balancer that probes the
ingress gateway's port 10001 sees the connection reach a live pod.

Environment: HEALTHCHECK_PORT (default 10001), VEIL_POD_NAME (set by `veil up`;
default the host name), HEALTHCHECK_MAX_CONNECTIONS (default 64; more are closed
at once). Standard library only.
"""

import os
import socket
import socketserver
import sys
import threading

POD = os.environ.get("VEIL_POD_NAME") or socket.gethostname()
PORT = int(os.environ.get("HEALTHCHECK_PORT", "10001"))
MAX_CONNECTIONS = int(os.environ.get("HEALTHCHECK_MAX_CONNECTIONS", "64"))
SEND_TIMEOUT_SECONDS = 5
SLOTS = threading.BoundedSemaphore(MAX_CONNECTIONS)


def log(message):
    print(f"healthcheck.py[{POD}]: {message}", file=sys.stderr, flush=True)


class Answer(socketserver.BaseRequestHandler):
    def handle(self):
        self.request.settimeout(SEND_TIMEOUT_SECONDS)
        try:
            self.request.sendall(f"httpd-healthcheck ok {POD}\n".encode())
            self.request.shutdown(socket.SHUT_WR)
        except OSError as e:
            log(f"{self.client_address[0]}: {e}")


class Server(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def process_request(self, request, client_address):
        if not SLOTS.acquire(blocking=False):
            log(f"too many connections; closing {client_address[0]}")
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            SLOTS.release()


def main():
    with Server(("0.0.0.0", PORT), Answer) as server:
        log(f"answering on tcp port {PORT}")
        server.serve_forever()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
