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
import os
import signal
import sys
import threading

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "support"))
from example_process import WAIT_S, Example  # noqa: E402


class HttpExample(Example):
    def __init__(self, path, *args):
        super().__init__(path, *args)
        self.open_connections = []

    def get(self, path):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=WAIT_S)
        conn.request("GET", path)
        r = conn.getresponse()
        self.open_connections.append(conn)  # kept open: idle when the signal comes
        return r.status, r.getheader("Connection"), r.read().decode()


def index_page(path):
    """Every example answers GET / (http_hello with its greeting, websocket_echo with its page)."""
    ex = HttpExample(path)
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
    ex = HttpExample(path, "--work-ms", "300", "--grace-ms", "30000")
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
    ex = HttpExample(path, "--work-ms", "600000", "--grace-ms", "100")
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
