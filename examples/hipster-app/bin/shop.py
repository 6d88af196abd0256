#!/usr/bin/env python3
"""The two services of the hipster-app example, standard library only.

  shop.py productcatalog   HTTP on 3550: GET /products -> the product list, one per line.
  shop.py frontend         HTTP on 8080: GET / -> "frontend:" and the list it fetched
                           from http://$PRODUCT_CATALOG_SERVICE_ADDR/products
                           (default productcatalogservice:3550); 502 when that fails.

Bounded: a request to the catalog times out after 5 s; idle connections close after 10 s.
"""

import http.server
import os
import socketserver
import sys
import urllib.request

PRODUCTS = ["vintage-typewriter", "film-camera", "city-bike"]
CATALOG = os.environ.get("PRODUCT_CATALOG_SERVICE_ADDR", "productcatalogservice:3550")


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class Handler(http.server.BaseHTTPRequestHandler):
    timeout = 10
    role = "frontend"

    def reply(self, code, text):
        body = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.role == "productcatalog":
            self.reply(200, "".join(p + "\n" for p in PRODUCTS))
            return
        try:
            with urllib.request.urlopen(f"http://{CATALOG}/products", timeout=5) as r:
                self.reply(200, "frontend:\n" + r.read().decode())
        except OSError as e:
            self.reply(502, f"frontend: the product catalog did not answer: {e}\n")

    def log_message(self, format, *args):
        print(f"shop.py[{self.role}]: {self.client_address[0]} " + format % args, file=sys.stderr, flush=True)


def main():
    role = sys.argv[1] if len(sys.argv) > 1 else "frontend"
    if role not in ("frontend", "productcatalog"):
        sys.exit(f"usage: shop.py frontend|productcatalog (got {role!r})")
    Handler.role = role
    port = 3550 if role == "productcatalog" else 8080
    Server(("0.0.0.0", port), Handler).serve_forever()


if __name__ == "__main__":
    main()
