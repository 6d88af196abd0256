#!/usr/bin/env python3
"""Client of the bookinfo-lite example: sends GET requests one after the other
over one keep-alive connection and prints how many answers each pod gave.

usage: load.py [--count N] [--header NAME:VALUE]... [--deadline SECONDS] URL

Prints one JSON object: {"answers": {"<pod> <version>": n, ...},
"statuses": {"200": n, ...}, "errors": n}. A failed request is counted in
"errors" and the connection is opened again. Bounded: N at most 10000, the
whole run at most --deadline seconds (default 60), each request 5 s.
Run it inside a pod's network namespace: ip netns exec <netns> bin/load.py ...
"""

import http.client
import json
import sys
import time
from urllib.parse import urlsplit

MAX_COUNT = 10000


def main(argv):
    count, deadline, headers, url = 1, 60.0, {}, None
    args = iter(argv)
    for arg in args:
        if arg == "--count":
            count = max(1, min(int(next(args, "1")), MAX_COUNT))
        elif arg == "--deadline":
            deadline = float(next(args, "60"))
        elif arg == "--header":
            name, _, value = next(args, ":").partition(":")
            headers[name.strip()] = value.strip()
        else:
            url = arg
    if not url:
        print(__doc__, file=sys.stderr)
        return 2
    target = urlsplit(url)
    path = target.path or "/"
    end = time.monotonic() + deadline
    answers, statuses, errors = {}, {}, 0
    conn = None
    for _ in range(count):
        if time.monotonic() > end:
            errors += 1
            continue
        try:
            if conn is None:
                conn = http.client.HTTPConnection(target.hostname, target.port or 80, timeout=5)
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            body = response.read(4096).decode(errors="replace").strip()
            statuses[str(response.status)] = statuses.get(str(response.status), 0) + 1
            if response.status == 200:
                answers[body] = answers.get(body, 0) + 1
        except (OSError, http.client.HTTPException):
            errors += 1
            if conn is not None:
                conn.close()
            conn = None
    print(json.dumps({"answers": answers, "statuses": statuses, "errors": errors}, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
