"""What the HTTP/2 real-client tests share: benchmarks/hello_server as the server under test
(h2c by prior knowledge on its plain port, h2 by ALPN with --tls CERT KEY), a throwaway
certificate, and the end every scenario checks: the server stopped as asked, nothing forced.

Each test is `h2_X.py PATH/hello_server` and exits 77 (meson: skipped) when its client is not
installed. Every wait is bounded (WAIT_S) and waits on output or exit, never on a sleep.
"""
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile

from common import SKIP, WAIT_S, Example, LineReader, skip  # noqa: F401


def need(program):
    """The path of `program`, or skip the test."""
    path = shutil.which(program)
    if not path:
        skip(f"{program} is not installed")
    return path


def hello_server(*args):
    if len(sys.argv) < 2:
        sys.exit(f"usage: {sys.argv[0]} PATH/hello_server")
    return Example(sys.argv[1], *args)


@contextlib.contextmanager
def certificate():
    """(cert, key): a P-256 self-signed certificate for 127.0.0.1 and localhost, made with the
    openssl tool in a temporary directory (no key is ever committed)."""
    with tempfile.TemporaryDirectory() as d:
        cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
        subprocess.run([need("openssl"), "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-nodes", "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                       check=True, capture_output=True, timeout=WAIT_S)
        yield cert, key


def run(cmd, **kwargs):
    """Runs a client to its end; its CompletedProcess (text), which must have exited 0."""
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=WAIT_S, stdin=subprocess.DEVNULL, **kwargs)
    assert done.returncode == 0, f"{cmd} exited {done.returncode}: {done.stdout}\n{done.stderr}"
    return done


def stop_gracefully(server, client):
    """SIGTERM; the server's stopped line, which must show a graceful stop with nothing forced."""
    stopped = server.stop(signal.SIGTERM, "graceful")
    assert stopped["forced"] == 0, stopped
    print(f"{client}: server {stopped}")
    return stopped
