#!/usr/bin/env python3
"""Real client: Node's http2 client through a graceful stop (h2c) of benchmarks/hello_server.

    h2_node.py PATH/hello_server

h2_node_client.js holds session A with /slow in flight and session B idle; then SIGTERM:
- A sees the two GOAWAY phases: lastStreamID 2147483647, then the real last stream (3: /slow is
  stream 1, the / sent with it stream 3), both NO_ERROR, and /slow still completes with 200;
- B, idle, gets one GOAWAY (its last stream, 1) and is closed at once (close-idle);
- a request sent after the final GOAWAY is refused with REFUSED_STREAM (7), and retried on a new
  connection once the server (--restart) listens again on the same port: 200.
Then SIGINT stops the restarted server (and, --restart listening again, it is killed). Skipped (77)
without node.
"""
import json
import signal
import subprocess
import os

from h2_common import LineReader, hello_server, need

HERE = os.path.dirname(os.path.abspath(__file__))
NGHTTP2_REFUSED_STREAM = 7


def stopped_line(server, sig, mode):
    """The JSON line of a stop of hello_server --restart (which then listens again, not exits)."""
    stopped = json.loads(server.line())
    assert stopped["event"] == "stopped" and stopped["mode"] == mode and stopped["signal"] == sig, stopped
    return stopped


def main():
    node = need("node")
    server = hello_server("--restart")
    client = subprocess.Popen([node, os.path.join(HERE, "h2_node_client.js"), f"http://127.0.0.1:{server.port}"],
                              stdout=subprocess.PIPE, stdin=subprocess.PIPE)
    out = LineReader(client, "node http2 client")
    lines = []
    while not lines or lines[-1] != "ready":
        lines.append(out.line())
    server.proc.send_signal(signal.SIGTERM)
    while not lines[-1].startswith(("refused", "late served")):
        lines.append(out.line())
    assert lines[-1].split()[:2] == ["refused", str(NGHTTP2_REFUSED_STREAM)], lines

    stopped = stopped_line(server, signal.SIGTERM, "graceful")
    assert stopped["forced"] == 0, stopped
    again = server.line()
    assert again == f"listening on 127.0.0.1:{server.port}", again
    client.stdin.write(b"retry\n")
    client.stdin.flush()
    while not lines[-1].startswith("retried"):
        lines.append(out.line())
    assert lines[-1] == "retried 200", lines
    assert client.wait(timeout=60) == 0

    a_goaways = [l for l in lines if l.startswith("goaway A")]
    b_goaways = [l for l in lines if l.startswith("goaway B")]
    assert a_goaways == ["goaway A 0 2147483647", "goaway A 0 3"], lines
    assert b_goaways == ["goaway B 0 1"], lines
    assert "close B" in lines and lines.index("close B") < lines.index("slow 200 Hello, world!"), lines
    server.proc.send_signal(signal.SIGINT)
    after_stop = stopped_line(server, signal.SIGINT, "now")
    server.proc.kill()  # --restart would listen again, forever
    server.proc.wait(timeout=60)
    print(f"node http2: {lines}; server {stopped}, after the restart {after_stop}")


if __name__ == "__main__":
    main()
