#!/usr/bin/env python3
"""Client of the reachability example: calls targets and prints one line each.

usage: call.py [--timeout SECONDS] [--repeat N] TARGET...

TARGET is one of
  http://HOST:PORT[/PATH]  GET; ok when the answer is 200 (the body names the pod)
  tcp://HOST:PORT          sends a line; ok when the same line comes back
  greet://HOST:PORT        server-first: reads the server's "hello from <pod>" line
                           before sending anything, then checks an echo like tcp://
  banner://HOST:PORT       server-first, any protocol: ok when the server sends any
                           bytes first (e.g. a MySQL handshake)

Targets run concurrently, each --repeat times in a row. Every attempt prints
  ok TARGET pod=<pod or -> ms=<milliseconds>
  fail TARGET <reason> ms=<milliseconds>
in argument order. Every attempt has its own deadline of --timeout seconds
(default 3, at most 5). The exit status is 0 when every attempt was ok.
Run it inside a pod's network namespace: ip netns exec <netns> bin/call.py ...
"""

import http.client
import os
import socket
import sys
import threading
import time
from urllib.parse import urlsplit

MAX_TIMEOUT = 5.0
MAX_REPEAT = 100


class Failed(Exception):
    pass


def remaining(deadline):
    left = deadline - time.monotonic()
    if left <= 0:
        raise Failed("timeout")
    return left


def read_line(sock, deadline, limit=4096):
    data = b""
    while b"\n" not in data:
        sock.settimeout(remaining(deadline))
        chunk = sock.recv(limit)
        if not chunk:
            raise Failed(f"closed by peer after {len(data)} bytes")
        data += chunk
        if len(data) > limit:
            raise Failed("line too long")
    return data.split(b"\n", 1)[0].decode(errors="replace")


def check_echo(sock, deadline):
    nonce = f"ping {os.getpid()} {time.monotonic_ns()}"
    sock.sendall(nonce.encode() + b"\n")
    back = read_line(sock, deadline)
    if back != nonce:
        raise Failed(f"echo mismatch: {back[:60]!r}")


def call_http(host, port, path, deadline):
    conn = http.client.HTTPConnection(host, port, timeout=remaining(deadline))
    try:
        conn.request("GET", path or "/", headers={"Connection": "close"})
        response = conn.getresponse()
        body = response.read(4096).decode(errors="replace").strip()
    finally:
        conn.close()
    if response.status != 200:
        raise Failed(f"status {response.status}")
    return body or "-"


def call_stream(scheme, host, port, deadline):
    with socket.create_connection((host, port), timeout=remaining(deadline)) as sock:
        if scheme == "tcp":
            check_echo(sock, deadline)
            return "-"
        if scheme == "banner":
            sock.settimeout(remaining(deadline))
            if not sock.recv(1):
                raise Failed("closed by peer before any byte")
            return "-"
        greeting = read_line(sock, deadline)
        if not greeting.startswith("hello from "):
            raise Failed(f"unexpected greeting {greeting[:60]!r}")
        check_echo(sock, deadline)
        return greeting[len("hello from "):].strip() or "-"


def attempt(target, timeout):
    start = time.monotonic()
    deadline = start + timeout
    try:
        url = urlsplit(target)
        if url.scheme not in ("http", "tcp", "greet", "banner") or not url.hostname or not url.port:
            raise Failed("bad target; use http://, tcp://, greet:// or banner://HOST:PORT")
        if url.scheme == "http":
            pod = call_http(url.hostname, url.port, url.path, deadline)
        else:
            pod = call_stream(url.scheme, url.hostname, url.port, deadline)
        line = f"ok {target} pod={pod}"
    except (Failed, OSError, http.client.HTTPException, ValueError) as e:
        reason = str(e) or type(e).__name__
        line = f"fail {target} {type(e).__name__}: {reason}"
    return line, (time.monotonic() - start) * 1000


def main(argv):
    timeout, repeat, targets = 3.0, 1, []
    args = iter(argv)
    for arg in args:
        if arg == "--timeout":
            timeout = min(float(next(args, "3")), MAX_TIMEOUT)
        elif arg == "--repeat":
            repeat = max(1, min(int(next(args, "1")), MAX_REPEAT))
        else:
            targets.append(arg)
    if not targets:
        print(__doc__, file=sys.stderr)
        return 2
    results = [[] for _ in targets]

    def run(i, target):
        for _ in range(repeat):
            results[i].append(attempt(target, timeout))

    threads = [threading.Thread(target=run, args=(i, t), daemon=True) for i, t in enumerate(targets)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout * repeat + 1)
    ok = True
    for i, target in enumerate(targets):
        lines = list(results[i])
        if len(lines) < repeat:
            lines += [(f"fail {target} unfinished", timeout * 1000)] * (repeat - len(lines))
        for line, ms in lines:
            ok = ok and line.startswith("ok ")
            print(f"{line} ms={ms:.1f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
