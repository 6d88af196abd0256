#!/usr/bin/env python3
"""HTTP service of the cloud-cargo example: the web app and the two freight APIs.

Every GET (or HEAD) answers 200 with a JSON body naming the service, the path and
the pod, e.g. {"service": "freight-rating-server", "path": "/api/freight-rating/quote",
"pod": "freight-rating-server"}; any other method answers 405.

Environment: SERVICE_NAME (required), SERVICE_PORT (default 8080), VEIL_POD_NAME
(set by `veil up`; default the host name), SERVICE_MAX_CONNECTIONS (default 64; more
are closed at once), SERVICE_IDLE_SECONDS (default 10: a silent connection is
closed). Standard library only.
"""

import http.server
import json
import os
import socket
import socketserver
import sys
import threading

NAME = os.environ.get("SERVICE_NAME", "")
PORT = int(os.environ.get("SERVICE_PORT", "8080"))
POD = os.environ.get("VEIL_POD_NAME") or socket.gethostname()
MAX_CONNECTIONS = int(os.environ.get("SERVICE_MAX_CONNECTIONS", "64"))
IDLE_SECONDS = float(os.environ.get("SERVICE_IDLE_SECONDS", "10"))
SLOTS = threading.BoundedSemaphore(MAX_CONNECTIONS)


def log(message):
    print(f"service.py[{NAME}]: {message}", file=sys.stderr, flush=True)


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
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


class Handler(http.server.BaseHTTPRequestHandler):
    timeout = IDLE_SECONDS
    server_version = "cloud-cargo"
    protocol_version = "HTTP/1.1"

    def answer(self, send_body):
        body = (json.dumps({"service": NAME, "path": self.path, "pod": POD}) + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def do_GET(self):
        self.answer(True)

    def do_HEAD(self):
        self.answer(False)

    def refuse(self):
        self.send_response(405)
        self.send_header("Allow", "GET, HEAD")
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_POST = do_PUT = do_DELETE = do_PATCH = refuse

    def log_message(self, fmt, *args):
        log(f"{self.client_address[0]} {fmt % args}")


def main():
    if not NAME:
        sys.exit("service.py: SERVICE_NAME must be set")
    with Server(("0.0.0.0", PORT), Handler) as server:
        log(f"serving {NAME} on port {PORT}")
        server.serve_forever()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
