#!/usr/bin/env python3
"""productpage of seed 000: Bookinfo's front page, behind the third-party gateway.

GET (or HEAD) / answers 200 with a small HTML page titled "Simple Bookstore App" that
names the pod and the path; any other path answers 404, any other method 405. The
sidecar hands every request over in plaintext on 127.0.0.1 once mesh mTLS has been
checked, so the page never sees the gateway's certificate itself.

Environment: SERVICE_PORT (default 9080), VEIL_POD_NAME (set by `veil up`; default the
host name). Standard library only.
"""

import http.server
import os
import socket
import sys

PORT = int(os.environ.get("SERVICE_PORT", "9080"))
POD = os.environ.get("VEIL_POD_NAME") or socket.gethostname()
PAGE = """<!DOCTYPE html>
<html>
<head><title>Simple Bookstore App</title></head>
<body>
<h1>The Comedy of Errors</h1>
<p>Simple Bookstore App: productpage (pod {pod}) served {path}</p>
</body>
</html>
"""


class Handler(http.server.BaseHTTPRequestHandler):
    server_version = "productpage"
    protocol_version = "HTTP/1.1"
    timeout = 30

    def answer(self, send_body):
        if self.path.split("?", 1)[0] not in ("/", "/productpage"):
            self.send_error(404, "not found: productpage serves / and /productpage")
            return
        body = PAGE.format(pod=POD, path=self.path).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def do_GET(self):
        self.answer(True)

    def do_HEAD(self):
        self.answer(False)

    def log_message(self, fmt, *args):
        print(f"productpage.py: {self.address_string()} {fmt % args}", file=sys.stderr, flush=True)


def main():
    server = http.server.ThreadingHTTPServer(("0.0.0.0", PORT), Handler)
    server.daemon_threads = True
    print(f"productpage.py: serving on port {PORT}", file=sys.stderr, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
