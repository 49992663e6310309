#!/usr/bin/env python3
"""Real client: curl against benchmarks/hello_server over HTTP/2.

    h2_curl.py PATH/hello_server

- --http2-prior-knowledge on the plain port (h2c): HTTP/2 (one URL per run: curl 7.88 fails a
  second request on a reused prior-knowledge connection with "Error in the HTTP2 framing layer",
  against Node's h2c server as well);
- --http2 on the plain port: curl asks for `Upgrade: h2c`, which the server ignores (RFC 9113
  deprecates it): the answer comes over HTTP/1.1, with no 101;
- --http2 over TLS (--tls CERT KEY, curl -k): h2 chosen by ALPN.
Then SIGTERM: the server stops gracefully. Skipped (77) without curl or without its HTTP2 feature.
"""
from h2_common import certificate, hello_server, need, run, skip, stop_gracefully

SHOW_VERSION = ["-w", "[%{http_version}]\n"]  # after each response body: the protocol version used


def main():
    curl = need("curl")
    if "HTTP2" not in run([curl, "--version"]).stdout:
        skip("this curl has no HTTP/2")

    server = hello_server()
    url = f"http://127.0.0.1:{server.port}/"
    out = run([curl, "-sS", "--http2-prior-knowledge", *SHOW_VERSION, url]).stdout
    assert out == "Hello, world!\n[2]\n", out

    upgrade = run([curl, "-sS", "-v", "--http2", *SHOW_VERSION, url])
    assert upgrade.stdout == "Hello, world!\n[1.1]\n", upgrade.stdout
    assert "> Upgrade: h2c" in upgrade.stderr, upgrade.stderr   # curl did ask
    assert "< HTTP/1.1 200" in upgrade.stderr and "< HTTP/1.1 101" not in upgrade.stderr, upgrade.stderr
    stop_gracefully(server, "curl h2c")

    with certificate() as (cert, key):
        server = hello_server("--tls", cert, key)
        https = f"https://127.0.0.1:{server.port}/"
        tls = run([curl, "-sS", "-v", "-k", "--http2", *SHOW_VERSION, https])
        assert tls.stdout == "Hello, world!\n[2]\n", tls.stdout
        assert "ALPN: server accepted h2" in tls.stderr or "ALPN, server accepted to use h2" in tls.stderr, tls.stderr
        stop_gracefully(server, "curl h2 over TLS")


if __name__ == "__main__":
    main()
