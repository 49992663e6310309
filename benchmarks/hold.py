#!/usr/bin/env python3
"""Holds N idle connections for the memory figures of HTTP/2 and TLS (benchmarks/run.py), with
`loadgen hold`'s interface for the protocols loadgen does not speak (TLS, HTTP/2 over TLS):

    hold.py --port P --conns N [--tls] [--h2]

Each connection does one `GET /` and reads its 200 (HTTP/1.1 keep-alive, or with --h2 one stream
of an HTTP/2 connection: h2 by ALPN with --tls, h2c by prior knowledge without), then stays open
and idle. Prints {"ready":N} (one line) when all are, then waits for stdin EOF and closes them.

The connections are opened with blocking sockets by a few threads (OpenSSL's handshake releases
the GIL), enough to keep a one-core server busy: what is measured is the server's memory once
they are idle, not how fast they were made. Python standard library only.
"""

import argparse
import concurrent.futures
import json
import socket
import ssl
import struct
import sys

# HTTP/2 (RFC 9113): the client preface, an empty SETTINGS frame, and HEADERS on stream 1 for
# GET / with END_STREAM and END_HEADERS. The header block is HPACK from the static table
# (:method GET 0x82, :path / 0x84, :scheme http 0x86 / https 0x87) and a literal :authority.
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, SETTINGS, GOAWAY = 0x0, 0x1, 0x4, 0x7
END_STREAM, ACK, PADDED, PRIORITY = 0x1, 0x1, 0x8, 0x20
STATUS_200 = 0x88   # HPACK static table entry 8: ":status: 200", how every server here sends it
THREADS = 8         # connections being opened at once


def frame(ftype, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", stream) + payload


def h2_request(tls):
    block = bytes([0x82, 0x87 if tls else 0x86, 0x84, 0x41, 9]) + b"localhost"
    return PREFACE + frame(SETTINGS, 0, 0) + frame(HEADERS, END_STREAM | 0x4, 1, block)


def read_exact(s, n):
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise RuntimeError("connection closed during setup")
        data += chunk
    return data


def h2_get(s, tls):
    """One GET / as stream 1; the server's SETTINGS are acknowledged as a client must."""
    s.sendall(h2_request(tls))
    status = None
    while True:
        head = read_exact(s, 9)
        length = int.from_bytes(head[:3], "big")
        ftype, flags, stream = head[3], head[4], int.from_bytes(head[5:], "big") & 0x7FFFFFFF
        payload = read_exact(s, length)
        if ftype == SETTINGS and not flags & ACK:
            s.sendall(frame(SETTINGS, ACK, 0))
        elif ftype == GOAWAY:
            raise RuntimeError(f"GOAWAY during setup: {payload[:8].hex()}")
        elif stream == 1 and ftype == HEADERS:
            block = payload[(1 if flags & PADDED else 0) + (5 if flags & PRIORITY else 0):]
            status = 200 if block[:1] == bytes([STATUS_200]) else -1
        if stream == 1 and ftype in (DATA, HEADERS) and flags & END_STREAM:
            if status != 200:
                raise RuntimeError("response to GET / is not a 200")
            return


def h1_get(s):
    """One keep-alive GET / on s, its 200 read (run.py's warm_up too)."""
    s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
    data = b""
    while b"Hello, world!\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            raise RuntimeError("connection closed before the response")
        data += chunk
    if not data.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"unexpected response {data[:60]!r}")


def client_context(alpn="http/1.1"):
    """A TLS client that accepts the benchmark's self-signed certificate (run.py's warm_up too)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols([alpn])
    return ctx


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--conns", type=int, required=True)
    ap.add_argument("--tls", action="store_true")
    ap.add_argument("--h2", action="store_true")
    a = ap.parse_args()
    ctx = client_context("h2" if a.h2 else "http/1.1") if a.tls else None

    def open_one(_):
        s = socket.create_connection(("127.0.0.1", a.port), timeout=30)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if ctx:
            s = ctx.wrap_socket(s)
            if a.h2 and s.selected_alpn_protocol() != "h2":
                raise RuntimeError(f"the server did not select h2 (got {s.selected_alpn_protocol()})")
        h2_get(s, a.tls) if a.h2 else h1_get(s)
        return s
    with concurrent.futures.ThreadPoolExecutor(THREADS) as pool:
        held = list(pool.map(open_one, range(a.conns)))
    print(json.dumps({"ready": len(held)}), flush=True)
    sys.stdin.read()
    for s in held:
        s.close()
    print(json.dumps({"closed": len(held)}), flush=True)


if __name__ == "__main__":
    main()
