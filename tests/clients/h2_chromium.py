#!/usr/bin/env python3
"""Real client: headless Chromium (Debian) loading a page from benchmarks/hello_server over h2.

    h2_chromium.py PATH/hello_server

hello_server serves over TLS (--tls, a throwaway certificate: --ignore-certificate-errors). The
browser is driven through the DevTools protocol on a pipe (--remote-debugging-pipe: fd 3 in,
fd 4 out, NUL-terminated JSON): it navigates to https://127.0.0.1:PORT/, waits for the load
event, then has the page fetch /slow?ms=1 and report performance.getEntries()'s nextHopProtocol
for the page and for the fetch: both must be "h2". (A page served from another origin would not
do: without Timing-Allow-Origin, which hello_server does not send, a cross-origin entry's
nextHopProtocol is empty.) Then SIGTERM: a graceful stop, nothing forced. Skipped (77) without a
Chromium binary.
"""
import json
import os
import select
import shutil
import signal
import subprocess
import tempfile

from h2_common import WAIT_S, certificate, hello_server, skip, stop_gracefully

# Runs in the page once loaded: fetch, then the protocols of the navigation and of the fetch. The
# fetch's entry may be queued after its body ends: a PerformanceObserver waits for it, no timer.
REPORT = """new Promise((resolve) => {
  const target = new URL('/slow?ms=1', location).href;
  new PerformanceObserver((list, observer) => {
    if (list.getEntries().some((e) => e.name === target)) {
      observer.disconnect();
      resolve(performance.getEntries().map((e) => [e.name, e.nextHopProtocol]));
    }
  }).observe({type: 'resource', buffered: true});
  fetch(target).then((r) => r.text());
})"""


class devtools:
    """The browser's end of --remote-debugging-pipe: commands out, their results and events in."""

    def __init__(self, to_browser, from_browser):
        self.out, self.inp, self.buf, self.next_id, self.events = to_browser, from_browser, b"", 0, []

    def message(self):
        while b"\0" not in self.buf:
            ready, _, _ = select.select([self.inp], [], [], WAIT_S)
            assert ready, f"chromium: no DevTools message within {WAIT_S} s"
            chunk = os.read(self.inp, 65536)
            assert chunk, "chromium: the DevTools pipe closed"
            self.buf += chunk
        msg, self.buf = self.buf.split(b"\0", 1)
        return json.loads(msg)

    def call(self, method, session=None, **params):
        self.next_id += 1
        cmd = {"id": self.next_id, "method": method, "params": params}
        if session:
            cmd["sessionId"] = session
        os.write(self.out, json.dumps(cmd).encode() + b"\0")
        while True:
            msg = self.message()
            if msg.get("id") == self.next_id:
                assert "error" not in msg, msg
                return msg["result"]
            self.events.append(msg)

    def wait_event(self, method, session):
        while True:
            for i, e in enumerate(self.events):
                if e.get("method") == method and e.get("sessionId") == session:
                    return self.events.pop(i)
            self.events.append(self.message())


def main():
    browser = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    if not browser:
        skip("chromium is not installed")
    with certificate() as (cert, key), tempfile.TemporaryDirectory() as profile:
        server = hello_server("--tls", cert, key)
        url = f"https://127.0.0.1:{server.port}/"
        commands, to_browser = os.pipe()  # the browser reads commands on its fd 3
        from_browser, results = os.pipe()  # and writes results on its fd 4
        args = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--ignore-certificate-errors", "--remote-debugging-pipe", f"--user-data-dir={profile}", "about:blank"]
        chromium = subprocess.Popen(["sh", "-c", f'exec "$0" "$@" 3<&{commands} 4>&{results}', *args],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                                    pass_fds=(commands, results),
                                    start_new_session=True)  # its own group: its renderers end with it
        os.close(commands)
        os.close(results)
        try:
            cdp = devtools(to_browser, from_browser)
            target = cdp.call("Target.createTarget", url="about:blank")["targetId"]
            session = cdp.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
            cdp.call("Page.enable", session)
            cdp.call("Page.navigate", session, url=url)
            cdp.wait_event("Page.loadEventFired", session)
            result = cdp.call("Runtime.evaluate", session, expression=REPORT, awaitPromise=True, returnByValue=True)
        finally:
            os.killpg(chromium.pid, signal.SIGKILL)
            chromium.wait()
        entries = {name: protocol for name, protocol in result["result"]["value"] if name.startswith(url)}
        assert entries.get(url) == "h2" and entries.get(f"{url}slow?ms=1") == "h2", entries
        version = subprocess.run([browser, "--version"], capture_output=True, text=True).stdout.strip()
        stop_gracefully(server, f"{version or 'chromium'}: nextHopProtocol {entries}")


if __name__ == "__main__":
    main()
