#!/usr/bin/env python3
"""Real client: python3-websockets (Debian) against examples/websocket_echo.

    python_websockets.py PATH/websocket_echo

Echoes text and binary messages over permessage-deflate (the library offers it, the example
accepts it), then SIGTERM: the client must see Close 1001. Skipped (77) without the websockets module.
"""
import asyncio
import signal

from common import WAIT_S, check_stopped, skip, start_server

try:
    import websockets
except ImportError:
    skip("python3-websockets is not installed")


async def scenario(server):
    async with websockets.connect(f"ws://127.0.0.1:{server.port}/ws", open_timeout=WAIT_S) as ws:
        # The example accepts permessage-deflate; this client offers it: both directions compressed.
        assert [type(e).__name__ for e in ws.extensions] == ["PerMessageDeflate"], ws.extensions
        await ws.send("hello")
        assert await asyncio.wait_for(ws.recv(), WAIT_S) == "hello"
        await ws.send("echo " * 2000)
        assert await asyncio.wait_for(ws.recv(), WAIT_S) == "echo " * 2000
        await ws.send(b"\x00binary\xff")
        assert await asyncio.wait_for(ws.recv(), WAIT_S) == b"\x00binary\xff"
        server.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(ws.recv(), WAIT_S)
            raise AssertionError("a message instead of the close")
        except websockets.ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None


def main():
    server = start_server()
    code = asyncio.run(scenario(server))
    check_stopped(server, f"python3-websockets {websockets.__version__}", code)


if __name__ == "__main__":
    main()
