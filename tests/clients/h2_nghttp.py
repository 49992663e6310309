#!/usr/bin/env python3
"""Real client: nghttp (Debian nghttp2-client) sees the two-phase GOAWAY of a graceful stop.

    h2_nghttp.py PATH/hello_server

nghttp -v asks for / and /slow?ms=1500 on one h2c connection. Once / has ended, the server has
both requests (nghttp sent them in one write, before any answer), so SIGTERM finds the slow
stream in flight: nghttp must print GOAWAY(last_stream_id=2147483647, NO_ERROR), then, after
the PING round trip, GOAWAY(last_stream_id=<the slow stream>, NO_ERROR); the slow stream still
gets its 200, and the server stops gracefully with nothing forced.
"""
import re
import signal
import subprocess

from h2_common import WAIT_S, LineReader, hello_server, need

FRAME = re.compile(r"(send|recv) (\w+) frame <.*stream_id=(\d+)>")
GOAWAY = re.compile(r"\(last_stream_id=(\d+), error_code=(\w+)\(")


def main():
    nghttp = need("nghttp")
    server = hello_server()
    base = f"http://127.0.0.1:{server.port}"
    client = subprocess.Popen([nghttp, "-v", "-n", "--no-dep", f"{base}/", f"{base}/slow?ms=1500"],
                              stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    out = LineReader(client, "nghttp")
    lines, paths, frame, stream = [], {}, ("", ""), None
    fast_done = False
    while not fast_done:  # until the stream of / has ended
        line = out.line()
        lines.append(line)
        if m := FRAME.search(line):
            frame, stream = (m[1], m[2]), int(m[3])
        elif frame == ("send", "HEADERS") and line.strip().startswith(":path: "):
            paths[line.strip()[len(":path: "):]] = stream
        elif frame[0] == "recv" and "; END_STREAM" in line and stream == paths.get("/"):
            fast_done = True
    server.proc.send_signal(signal.SIGTERM)
    rest, _ = client.communicate(timeout=WAIT_S)
    assert client.returncode == 0, f"nghttp exited {client.returncode}"
    text = "\n".join(lines) + "\n" + rest.decode() + out.buf.decode()

    slow = paths["/slow?ms=1500"]
    # The GOAWAYs received (nghttp sends one of its own as it ends: not that one), in order.
    goaways, direction = [], None
    for line in text.splitlines():
        if m := FRAME.search(line):
            direction = m[1]
        elif (m := GOAWAY.search(line)) and direction == "recv":
            goaways.append((int(m[1]), m[2]))
    assert goaways == [(2147483647, "NO_ERROR"), (slow, "NO_ERROR")], goaways
    assert re.search(rf"recv \(stream_id={slow}\) :status: 200", text), text
    # The PING that times the round trip, between the two GOAWAYs.
    between = text[text.index("last_stream_id=2147483647"):text.index(f"last_stream_id={slow},")]
    assert "recv PING frame" in between, between

    stopped = server.stopped(signal.SIGTERM, "graceful")
    assert stopped["forced"] == 0 and stopped["completed"] >= 1, stopped
    print(f"nghttp: GOAWAYs {goaways}; server {stopped}")


if __name__ == "__main__":
    main()
