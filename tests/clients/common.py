"""What the real-client tests share: the example under test and the end of the one scenario
they all check.

Each client test runs examples/websocket_echo, has its client echo "hello" over /ws, sends the
server SIGTERM and checks that the client saw Close 1001 and that the server then stopped
gracefully with nothing forced. It exits 77 (meson: skipped) when its client is not installed.
"""
import os
import signal
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from example_process import SKIP, WAIT_S, Example, LineReader  # noqa: E402,F401


def skip(why):
    print(f"skipped: {why}")
    sys.exit(SKIP)


def start_server():
    if len(sys.argv) < 2:
        sys.exit(f"usage: {sys.argv[0]} PATH/websocket_echo [client options]")
    return Example(sys.argv[1])


def check_stopped(server, client, close_code):
    """After the client saw the close: it was 1001, and the server drained without forcing."""
    assert close_code == 1001, f"{client} saw close code {close_code}"
    stopped = server.stopped(signal.SIGTERM, "graceful")
    assert stopped["forced"] == 0, stopped
    print(f"{client}: echo ok, Close 1001 seen; server {stopped}")
