#!/usr/bin/env python3
"""Real client: h2load (Debian nghttp2-client) smoke test against benchmarks/hello_server.

    h2_h2load.py PATH/hello_server

1,000 requests over 10 h2c connections, 10 streams at once on each, then 200 over h2 by ALPN
(--tls): every one must succeed with a 2xx. Then SIGTERM: a graceful stop, nothing forced.
"""
import re

from h2_common import certificate, hello_server, need, run, stop_gracefully


def check_all_succeeded(out, n):
    requests = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                         r"(\d+) errored, (\d+) timeout", out)
    assert requests and [int(g) for g in requests.groups()] == [n, n, n, n, 0, 0, 0], out
    assert re.search(rf"status codes: {n} 2xx", out), out
    assert "Application protocol: h2" in out, out
    print(requests[0])


def main():
    h2load = need("h2load")
    server = hello_server()
    check_all_succeeded(run([h2load, "-n", "1000", "-c", "10", "-m", "10", f"http://127.0.0.1:{server.port}/"]).stdout,
                        1000)
    stop_gracefully(server, "h2load h2c")
    with certificate() as (cert, key):
        server = hello_server("--tls", cert, key)
        check_all_succeeded(run([h2load, "-n", "200", "-c", "2", "-m", "10",
                                 f"https://127.0.0.1:{server.port}/"]).stdout, 200)
        stop_gracefully(server, "h2load h2")


if __name__ == "__main__":
    main()
