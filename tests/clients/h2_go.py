#!/usr/bin/env python3
"""Real client: Go's net/http client (Debian golang-go) over TLS against benchmarks/hello_server.

    h2_go.py PATH/hello_server

h2_go_client.go GETs / and /slow?ms=50 at once with InsecureSkipVerify; both must come over
HTTP/2 (resp.ProtoMajor == 2, h2 chosen by ALPN). Then SIGTERM: a graceful stop, nothing forced.
`go run` compiles the client first (GOCACHE in a temporary directory when HOME has none).
Skipped (77) without go.
"""
import os
import tempfile

from h2_common import certificate, hello_server, need, run, stop_gracefully

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    go = need("go")
    with certificate() as (cert, key), tempfile.TemporaryDirectory() as scratch:
        env = dict(os.environ, GO111MODULE="off", GOFLAGS="")
        if not os.path.isdir(os.environ.get("HOME", "/nonexistent")):
            env.update(GOCACHE=os.path.join(scratch, "cache"), HOME=scratch)
        server = hello_server("--tls", cert, key)
        base = f"https://127.0.0.1:{server.port}"
        out = run([go, "run", os.path.join(HERE, "h2_go_client.go"), f"{base}/", f"{base}/slow?ms=50"], env=env).stdout
        assert out.splitlines() == ["2 200 Hello, world!", "2 200 Hello, world!"], out
        stop_gracefully(server, "go net/http")


if __name__ == "__main__":
    main()
