"""An example program run as a child process, as the example tests and the real-client tests use it.

    ex = Example(path)                 # started with --port 0; ex.port from its first line
    ex.line()                          # its next line of output (bounded wait)
    stopped = ex.stop(signal.SIGTERM, "graceful")   # its JSON stopped line, once it exited 0
    ex.proc.send_signal(signal.SIGTERM); ...; ex.stopped(signal.SIGTERM, "graceful")  # the same, in two steps

Every wait is bounded by WAIT_S (generous: a loaded machine, sanitizer builds) and waits on
output or exit, never on a sleep.
"""
import json
import os
import select
import subprocess

WAIT_S = 60
SKIP = 77  # meson: the test is skipped


class LineReader:
    """Lines from a child's pipe, each waited for at most WAIT_S."""

    def __init__(self, proc, what):
        self.proc, self.what, self.buf = proc, what, b""

    def line(self):
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buf:
            ready, _, _ = select.select([fd], [], [], WAIT_S)
            assert ready, f"{self.what}: no line within {WAIT_S} s (got {self.buf!r})"
            chunk = os.read(fd, 4096)
            assert chunk, f"{self.what}: output ended before a full line (got {self.buf!r})"
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode()


class Example(LineReader):
    def __init__(self, path, *args):
        proc = subprocess.Popen([path, "--port", "0", *args], stdout=subprocess.PIPE,
                                stdin=subprocess.DEVNULL)
        super().__init__(proc, os.path.basename(path))
        line = self.line()
        assert line.startswith("listening on 127.0.0.1:"), f"{path}: first line {line!r}"
        self.port = int(line.rsplit(":", 1)[1])

    def stop(self, sig, mode):
        """Sends sig; returns the JSON stopped line once the process exited 0."""
        self.proc.send_signal(sig)
        return self.stopped(sig, mode)

    def stopped(self, sig, mode):
        """The JSON stopped line after sig (sent by the caller), once the process exited 0."""
        stopped = json.loads(self.line())
        assert stopped["event"] == "stopped" and stopped["mode"] == mode, stopped
        assert stopped["signal"] == sig, stopped
        assert self.proc.wait(timeout=WAIT_S) == 0
        return stopped
