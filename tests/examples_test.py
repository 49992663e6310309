#!/usr/bin/env python3
"""Runs every example the way a user would and checks the rules all examples keep.

    examples_test.py NAME=PATH...      (meson passes the built examples)

Each example is started with --port 0; it must print `listening on 127.0.0.1:PORT` first and
answer a request. SIGTERM must bring shutdown(grace): one JSON line {"event":"stopped",
"mode":"graceful",...} and exit status 0; SIGINT must bring stop_now() ("mode":"now").
graceful_shutdown is also checked for what it shows: a request in progress at SIGTERM is
finished with "Connection: close" (completed 1), and one that outlasts the grace is forced.
Waits on lines and responses, never on sleeps; every wait has a generous bound.
"""
import http.client
import json
import os
import select
import signal
import subprocess
import sys
import threading

WAIT_S = 60  # generous: loaded machine, sanitizer builds


class Example:
    def __init__(self, path, *args):
        self.proc = subprocess.Popen([path, "--port", "0", *args], stdout=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL)
        self.buf = b""
        self.open_connections = []
        line = self.line()
        assert line.startswith("listening on 127.0.0.1:"), f"{path}: first line {line!r}"
        self.port = int(line.rsplit(":", 1)[1])

    def line(self):
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buf:
            ready, _, _ = select.select([fd], [], [], WAIT_S)
            assert ready, f"no line within {WAIT_S} s"
            chunk = os.read(fd, 4096)
            assert chunk, f"output ended before a full line (got {self.buf!r})"
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode()

    def get(self, path):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=WAIT_S)
        conn.request("GET", path)
        r = conn.getresponse()
        self.open_connections.append(conn)  # kept open: idle when the signal comes
        return r.status, r.getheader("Connection"), r.read().decode()

    def stop(self, sig, mode):
        """Sends sig; returns the stopped line once the process exited 0."""
        self.proc.send_signal(sig)
        stopped = json.loads(self.line())
        assert stopped["event"] == "stopped" and stopped["mode"] == mode, stopped
        assert stopped["signal"] == sig, stopped
        assert self.proc.wait(timeout=WAIT_S) == 0
        return stopped


def index_page(path):
    """Every example answers GET / (http_hello with its greeting, websocket_echo with its page)."""
    ex = Example(path)
    status, _, body = ex.get("/")
    assert status in (200, 404), status
    return ex, status, body


def check_common(name, path):
    for sig, mode in ((signal.SIGTERM, "graceful"), (signal.SIGINT, "now")):
        ex, status, body = index_page(path)
        if name == "http_hello":
            assert (status, body) == (200, "Hello, world!\n"), (status, body)
        if name == "websocket_echo":
            assert status == 200 and "new WebSocket(" in body, body[:200]
        stopped = ex.stop(sig, mode)
        if mode == "graceful":  # the request's connection was idle when the signal came
            assert (stopped["idle_closed"], stopped["completed"], stopped["forced"]) == (1, 0, 0), stopped
        print(f"{name}: {signal.Signals(sig).name} -> {stopped}")


def check_graceful_shutdown(path):
    # A request in progress at SIGTERM is finished, and told the connection closes.
    ex = Example(path, "--work-ms", "300", "--grace-ms", "30000")
    result = {}
    client = threading.Thread(target=lambda: result.update(r=ex.get("/work")))
    client.start()
    assert ex.line() == "working on /work"
    stopped = ex.stop(signal.SIGTERM, "graceful")
    client.join(WAIT_S)
    assert result["r"] == (200, "close", "done\n"), result
    assert (stopped["completed"], stopped["forced"]) == (1, 0), stopped
    print(f"graceful_shutdown: finished in the grace -> {stopped}")

    # One that outlasts the grace is cut at the deadline (no response).
    ex = Example(path, "--work-ms", "600000", "--grace-ms", "100")
    failed = threading.Event()

    def expect_cut():
        try:
            ex.get("/work")
        except (http.client.HTTPException, OSError):
            failed.set()
    client = threading.Thread(target=expect_cut)
    client.start()
    assert ex.line() == "working on /work"
    stopped = ex.stop(signal.SIGTERM, "graceful")
    client.join(WAIT_S)
    assert failed.is_set()
    assert (stopped["completed"], stopped["forced"]) == (0, 1), stopped
    print(f"graceful_shutdown: cut at the deadline -> {stopped}")


def main():
    examples = dict(arg.split("=", 1) for arg in sys.argv[1:])
    assert examples, "no examples given"
    for name, path in sorted(examples.items()):
        check_common(name, path)
        if name == "graceful_shutdown":
            check_graceful_shutdown(path)
    print(f"ok: {', '.join(sorted(examples))}")


if __name__ == "__main__":
    main()
