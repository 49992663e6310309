#!/usr/bin/env python3
"""Real client: Node's npm `ws` against examples/websocket_echo.

    node_ws.py PATH/websocket_echo NODE_MODULES

NODE_MODULES holds ws at the version benchmarks/peers/ws/package-lock.json pins (scripts/test
and scripts/bench install it there with npm ci). Echoes "hello" (offering permessage-deflate),
then SIGTERM: the client must see Close 1001. Skipped (77) without node or ws.
"""
import os
import shutil
import signal
import subprocess
import sys

from common import LineReader, check_stopped, skip, start_server

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    node = shutil.which("node")
    modules = sys.argv[2] if len(sys.argv) > 2 else ""
    if not node:
        skip("node is not installed")
    if not os.path.isdir(os.path.join(modules, "ws")):
        skip(f"npm ws is not in {modules!r} (npm ci --prefix benchmarks/peers/ws)")
    server = start_server()
    env = dict(os.environ, NODE_PATH=modules)
    client = subprocess.Popen([node, os.path.join(HERE, "node_ws_client.js"), f"ws://127.0.0.1:{server.port}/ws"],
                              stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env)
    out = LineReader(client, "node ws client")
    assert out.line() == "echo: hello"
    server.proc.send_signal(signal.SIGTERM)
    closed = out.line()
    assert closed.startswith("closed: "), closed
    assert client.wait(timeout=60) == 0
    check_stopped(server, "node ws", int(closed.split()[1]))


if __name__ == "__main__":
    main()
