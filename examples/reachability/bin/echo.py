#!/usr/bin/env python3
"""Echo server of the reachability example: one process, three ports.

  HTTP   (ECHO_HTTP_PORT,  default 8080): GET/POST/HEAD any path -> 200, body "<pod>\\n".
  TCP    (ECHO_TCP_PORT,   default 9000): echoes every byte back (client speaks first).
  GREET  (ECHO_GREET_PORT, default 3306): server-first: on accept sends
         "hello from <pod>\\n", then echoes like TCP (the shape of MySQL, SMTP, ...).

The pod name comes from VEIL_POD_NAME (set by `veil up`), else the host name.
Bounded: at most ECHO_MAX_CONNECTIONS (default 64) connections at once over all
ports (more are closed at once), ECHO_IDLE_SECONDS (default 10) of silence closes a
connection, and at most 1 MiB is echoed per connection. Standard library only.
"""

import http.server
import os
import socket
import socketserver
import sys
import threading

POD = os.environ.get("VEIL_POD_NAME") or socket.gethostname()
MAX_CONNECTIONS = int(os.environ.get("ECHO_MAX_CONNECTIONS", "64"))
IDLE_SECONDS = float(os.environ.get("ECHO_IDLE_SECONDS", "10"))
MAX_ECHO_BYTES = 1 << 20
SLOTS = threading.BoundedSemaphore(MAX_CONNECTIONS)


def log(message):
    print(f"echo.py[{POD}]: {message}", file=sys.stderr, flush=True)


class Bounded(socketserver.ThreadingMixIn):
    """A threading server that refuses connections beyond the shared bound."""

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


class BoundedTCPServer(Bounded, socketserver.TCPServer):
    pass


class BoundedHTTPServer(Bounded, http.server.HTTPServer):
    pass


class HttpHandler(http.server.BaseHTTPRequestHandler):
    timeout = IDLE_SECONDS
    server_version = "reachability-echo"

    def answer(self, send_body):
        body = f"{POD}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def do_GET(self):
        self.answer(True)

    def do_POST(self):
        length = min(int(self.headers.get("Content-Length") or 0), MAX_ECHO_BYTES)
        self.rfile.read(length)
        self.answer(True)

    def do_HEAD(self):
        self.answer(False)

    def log_message(self, format, *args):
        log(f"http {self.client_address[0]} " + format % args)


def echo(sock):
    sent = 0
    while sent < MAX_ECHO_BYTES:
        data = sock.recv(65536)
        if not data:
            return
        sock.sendall(data)
        sent += len(data)


class TcpHandler(socketserver.BaseRequestHandler):
    def handle(self):
        self.request.settimeout(IDLE_SECONDS)
        try:
            echo(self.request)
        except OSError:
            pass


class GreetHandler(socketserver.BaseRequestHandler):
    def handle(self):
        self.request.settimeout(IDLE_SECONDS)
        try:
            self.request.sendall(f"hello from {POD}\n".encode())
            echo(self.request)
        except OSError:
            pass


def main():
    http_port = int(os.environ.get("ECHO_HTTP_PORT", "8080"))
    tcp_port = int(os.environ.get("ECHO_TCP_PORT", "9000"))
    greet_port = int(os.environ.get("ECHO_GREET_PORT", "3306"))
    # The HTTP port is bound last: `veil up` waits for it, so all three are up by then.
    servers = [
        BoundedTCPServer(("0.0.0.0", tcp_port), TcpHandler),
        BoundedTCPServer(("0.0.0.0", greet_port), GreetHandler),
        BoundedHTTPServer(("0.0.0.0", http_port), HttpHandler),
    ]
    log(f"serving http :{http_port}, tcp echo :{tcp_port}, server-first greeter :{greet_port}")
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


if __name__ == "__main__":
    main()
