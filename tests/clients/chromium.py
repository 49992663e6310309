#!/usr/bin/env python3
"""Real client: headless Chromium (Debian) running the page of examples/websocket_echo.

    chromium.py PATH/websocket_echo

The browser loads http://127.0.0.1:PORT/?report=URL; the page's script opens /ws, sends
"hello" and reports to URL (a small HTTP listener here) the echo it got and, after SIGTERM,
the close code it saw, which must be 1001. Skipped (77) without a Chromium binary.
"""
import http.server
import os
import queue
import shutil
import signal
import subprocess
import tempfile
import threading
import urllib.parse

from common import WAIT_S, check_stopped, skip, start_server


def start_listener():
    """What the page reports, as paths ("/echo?data=hello", "/closed?code=1001"), in a queue."""
    reports = queue.Queue()

    class Report(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            reports.put(urllib.parse.unquote(self.path))
            self.send_response(204)
            self.send_header("Access-Control-Allow-Origin", "*")
            self.end_headers()

        def log_message(self, *args):
            pass
    listener = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Report)
    threading.Thread(target=listener.serve_forever, daemon=True).start()
    return listener, reports


def next_report(reports, prefix):
    while True:
        path = reports.get(timeout=WAIT_S)
        if path.startswith(prefix):  # anything else (a favicon) is not the page's
            return path


def main():
    browser = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    if not browser:
        skip("chromium is not installed")
    server = start_server()
    listener, reports = start_listener()
    page = f"http://127.0.0.1:{server.port}/?report=http://127.0.0.1:{listener.server_address[1]}/"
    with tempfile.TemporaryDirectory() as profile:
        chromium = subprocess.Popen([browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                                     f"--user-data-dir={profile}", page],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                                    start_new_session=True)  # its own group: its renderers end with it
        try:
            assert next_report(reports, "/echo") == "/echo?data=hello"
            server.proc.send_signal(signal.SIGTERM)
            closed = next_report(reports, "/closed")
        finally:
            os.killpg(chromium.pid, signal.SIGKILL)
            chromium.wait()
            listener.shutdown()
    version = subprocess.run([browser, "--version"], capture_output=True, text=True).stdout.strip()
    check_stopped(server, version or "chromium", int(closed.split("=")[1]))


if __name__ == "__main__":
    main()
