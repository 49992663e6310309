#!/usr/bin/env python3
"""Side-by-side benchmark of sluice's hello_server and its peers (Node http, Go net/http, nginx).

    python3 benchmarks/run.py --loadgen BUILD/benchmarks/loadgen \
        [--sluice-server BUILD/benchmarks/hello_server] [--out-dir benchmarks/results] [--quick]

Measures stop latency (SIGINT with N idle keep-alive connections), graceful drain (SIGTERM),
throughput and connection churn (wrk) and memory per idle connection. Servers are pinned to
one CPU and the clients (loadgen, wrk) to another with taskset; servers are interleaved
within each round. Writes OUT/latest.md, OUT/latest.json, OUT/stop_latency.png and
OUT/throughput.png and prints the markdown on stdout; progress goes to stderr.

Python standard library only. Every server except nginx implements the interface of
sluice's hello_server: `SERVER [--port P] [--grace-ms G]`, prints `listening on
127.0.0.1:P`, serves `GET /` and `GET /slow?ms=X`, stops on SIGINT (now) / SIGTERM
(graceful) and prints one JSON line {"event":"stopped","mode":..,"ms":..,...}.
"""

import argparse
import atexit
import datetime
import json
import os
import platform
import re
import resource
import select
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PEERS = HERE / "peers"
SUBJECT = "sluice"          # the server the targets are about
CLK_TCK = os.sysconf("SC_CLK_TCK")
NO_DATA = "no data (every run failed)"
_children = []               # Popen objects we started, killed at exit if still running
# h2_bench and tls_bench import this module as `run`: the same one, not a second copy of it.
sys.modules.setdefault("run", sys.modules[__name__])
import h2_bench   # noqa: E402  HTTP/2 (issue 11)
import hold       # noqa: E402  the idle-connection client for TLS: its HTTP/1.1 GET and TLS client
import tls_bench  # noqa: E402  TLS (issue 12)


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, digits=1, unit=""):
    if x is None:
        return "n/a"
    if isinstance(x, float):
        return f"{x:,.{digits}f}{unit}"
    return f"{x:,}{unit}"


def _kill_children():
    for p in _children:
        if p.poll() is None:
            try:
                p.kill()
                p.wait(timeout=5)
            except Exception:
                pass


# --------------------------------------------------------------------------- environment

class Env:
    def __init__(self, args):
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="sluice-bench-"))
        cpus = sorted(os.sched_getaffinity(0))
        self.taskset = shutil.which("taskset")
        if self.taskset and len(cpus) >= 2:
            self.server_cpu, self.client_cpu = str(cpus[0]), str(cpus[1])
        else:
            self.server_cpu = self.client_cpu = None
            log("warning: fewer than 2 CPUs or no taskset: servers and clients are not pinned")
        self.loadgen = str(Path(args.loadgen).resolve())
        self.wrk = shutil.which("wrk")
        self.node = shutil.which("node")
        self.nginx = shutil.which("nginx") or (os.path.exists("/usr/sbin/nginx") and "/usr/sbin/nginx")
        self.go = shutil.which("go")
        self.gnuplot = shutil.which("gnuplot")
        # Children inherit this; 9000 connections need more than the usual 1024.
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != hard:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            except (ValueError, OSError) as e:
                log(f"warning: cannot raise RLIMIT_NOFILE: {e}")

    def on_server_cpu(self, argv):
        return ([self.taskset, "-c", self.server_cpu] if self.server_cpu else []) + argv

    def on_cpus(self, argv, cpus):
        return ([self.taskset, "-c", cpus] if self.taskset else []) + argv

    def on_client_cpu(self, argv):
        return ([self.taskset, "-c", self.client_cpu] if self.client_cpu else []) + argv


def build_go_peer(env):
    if not env.go:
        log("go not found: skipping the Go peer")
        return None
    out = env.tmp / "go-peer"
    e = dict(os.environ)
    # A build cache and GOPATH that work whatever HOME is (no module downloads: no deps).
    e.setdefault("GOCACHE", str(Path(tempfile.gettempdir()) / "sluice-bench-gocache"))
    e.setdefault("GOPATH", str(Path(tempfile.gettempdir()) / "sluice-bench-gopath"))
    e["GOFLAGS"] = ""
    e["GOPROXY"] = "off"
    e["GO111MODULE"] = "on"
    r = subprocess.run([env.go, "build", "-o", str(out), "."], cwd=PEERS / "go", env=e,
                       capture_output=True, text=True)
    if r.returncode != 0:
        log("go build of the Go peer failed:\n" + r.stderr)
        return None
    return str(out)


# --------------------------------------------------------------------------- servers

class LineReader:
    """Reads lines from a pipe with timeouts (no Python buffering in the way)."""

    def __init__(self, f):
        self.fd = f.fileno()
        self.buf = b""
        self.eof = False

    def readline(self, timeout):
        end = time.monotonic() + timeout
        while b"\n" not in self.buf and not self.eof:
            left = end - time.monotonic()
            if left <= 0:
                return None
            r, _, _ = select.select([self.fd], [], [], left)
            if r:
                chunk = os.read(self.fd, 65536)
                if not chunk:
                    self.eof = True
                self.buf += chunk
        if b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            return line.decode(errors="replace")
        if self.buf:
            line, self.buf = self.buf, b""
            return line.decode(errors="replace")
        return None

    def rest(self, timeout):
        lines = []
        while True:
            line = self.readline(timeout)
            if line is None:
                return lines
            lines.append(line)


class Server:
    """One kind of server. `hello_interface` servers print `listening on` and the JSON line."""

    def __init__(self, name, argv_fn, hello_interface=True, stop_tests=True, setup=None, cpus=None,
                 scheme="http", warm=None):
        self.name = name
        self.argv_fn = argv_fn
        self.hello_interface = hello_interface
        self.stop_tests = stop_tests   # takes part in stop / graceful / memory measurements
        self.setup = setup             # callable(run_dir, port) for nginx
        self.cpus = cpus               # CPUs it may use; None: the server CPU
        self.scheme = scheme           # "https": TLS (wrk, h2load)
        self.warm = warm               # callable(Running) when warm_up's plain HTTP/1.1 does not fit


class Running:
    def __init__(self, env, server, grace_ms=5000):
        self.server = server
        self.env = env
        self.run_dir = Path(tempfile.mkdtemp(prefix=server.name + "-", dir=env.tmp))
        self.stderr_path = self.run_dir / "stderr.log"
        port = 0
        if not server.hello_interface:
            port = free_port()
        argv = server.argv_fn(port=port, grace_ms=grace_ms, run_dir=self.run_dir)
        self.argv = argv
        with open(self.stderr_path, "wb") as err:
            pinned = env.on_cpus(argv, server.cpus) if server.cpus else env.on_server_cpu(argv)
            self.proc = subprocess.Popen(pinned, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.PIPE, stderr=err, cwd=self.run_dir)
        _children.append(self.proc)
        self.pid = self.proc.pid   # taskset execs the server: same pid
        self.out = LineReader(self.proc.stdout)
        if server.hello_interface:
            line = self.out.readline(20)
            m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line or "")
            if not m:
                self.kill()
                raise RuntimeError(f"{server.name}: no 'listening on' line (got {line!r}); "
                                   f"stderr: {self.stderr_tail()}")
            self.port = int(m.group(1))
        else:
            self.port = port
            wait_connectable(port, 20, self.proc)

    def stderr_tail(self):
        try:
            return self.stderr_path.read_text(errors="replace")[-800:]
        except OSError:
            return ""

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def wait_stopped(self, timeout):
        """Waits for the server to exit; returns its JSON 'stopped' line as a dict (or None)."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise RuntimeError(f"{self.server.name} did not exit within {timeout} s")
        stopped = None
        for line in self.out.rest(1):
            line = line.strip()
            if line.startswith("{"):
                try:
                    d = json.loads(line)
                except ValueError:
                    continue
                if d.get("event") == "stopped":
                    stopped = d
        if self.server.hello_interface and self.proc.returncode != 0:
            raise RuntimeError(f"{self.server.name} exited with {self.proc.returncode}: "
                               f"{self.stderr_tail()}")
        if self.server.hello_interface and stopped is None:
            raise RuntimeError(f"{self.server.name} printed no stopped line")
        return stopped

    def stop(self, sig=signal.SIGINT, timeout=15):
        if self.proc.poll() is None:
            os.kill(self.pid, sig)
        return self.wait_stopped(timeout)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_connectable(port, timeout, proc):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on port {port} after {timeout} s")


def warm_up(port, requests=20, tls=False):
    """A few keep-alive requests on one connection (lazy init / JIT), then close it."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    if tls:
        s = hold.client_context().wrap_socket(s)
    with s:
        for _ in range(requests):
            hold.h1_get(s)
    time.sleep(0.05)


def warm(srv):
    """Warms a running server up in the protocol it speaks."""
    if srv.server.warm:
        srv.server.warm(srv)
    else:
        warm_up(srv.port)


def read_rss_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def read_cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def make_servers(env, sluice_path, go_peer):
    servers = []
    if sluice_path:
        p = str(Path(sluice_path).resolve())
        servers.append(Server(SUBJECT, lambda port, grace_ms, run_dir:
                              [p, "--port", str(port), "--grace-ms", str(grace_ms)]))
        # Throughput only: the server on both CPUs, sharing one with wrk, in sluice's two
        # multi-thread shapes (one io_context on two threads; one per thread with SO_REUSEPORT).
        both = ",".join(sorted({env.server_cpu, env.client_cpu} - {None})) if env.client_cpu else None
        if both:
            servers.append(Server(SUBJECT + " 2 threads", lambda port, grace_ms, run_dir:
                                  [p, "--port", str(port), "--grace-ms", str(grace_ms), "--threads", "2"],
                                  stop_tests=False, cpus=both))
            servers.append(Server(SUBJECT + " 2 x reuseport", lambda port, grace_ms, run_dir:
                                  [p, "--port", str(port), "--grace-ms", str(grace_ms), "--threads", "2",
                                   "--reuseport"], stop_tests=False, cpus=both))
    if env.node:
        js = str(PEERS / "node" / "server.js")
        servers.append(Server("node", lambda port, grace_ms, run_dir:
                              [env.node, js, "--port", str(port), "--grace-ms", str(grace_ms)]))
    else:
        log("node not found: skipping the Node peer")
    if go_peer:
        servers.append(Server("go", lambda port, grace_ms, run_dir:
                              [go_peer, "--port", str(port), "--grace-ms", str(grace_ms)]))
    if env.nginx:
        servers.append(nginx_server(env, "nginx"))
    else:
        log("nginx not found: skipping the nginx peer")
    return servers


def nginx_server(env, name, listen="", server_lines="", **kw):
    """nginx from peers/nginx/nginx.conf.in; listen: extra listen parameters (http2, ssl),
    server_lines: extra server directives (the certificate)."""
    template = (PEERS / "nginx" / "nginx.conf.in").read_text()

    def nginx_argv(port, grace_ms, run_dir):
        rd = str(run_dir)
        (run_dir / "nginx.conf").write_text(template.replace("@RUNDIR@", rd).replace("@PORT@", str(port))
                                            .replace("@LISTEN@", listen).replace("@SERVER@", server_lines))
        return [env.nginx, "-p", rd + "/", "-c", rd + "/nginx.conf", "-e", rd + "/error.log"]
    return Server(name, nginx_argv, hello_interface=False, stop_tests=False, **kw)


def rotated(items, k):
    """Round k starts with a different server, so no server is always first or last."""
    if not items:
        return []
    k %= len(items)
    return items[k:] + items[:k]


# --------------------------------------------------------------------------- measurements

def run_loadgen_idle(env, srv, n, sig, inflight=0, slow_ms=2000, never=0, half=0, timeout_ms=30000,
                     websocket=None, extra=()):
    argv = [env.loadgen, "idle", "--port", str(srv.port), "--conns", str(n),
            "--server-pid", str(srv.pid), "--signal", sig, "--timeout-ms", str(timeout_ms), *extra]
    if websocket:
        argv += ["--websocket", websocket]
    if inflight:
        argv += ["--inflight", str(inflight), "--slow-ms", str(slow_ms)]
    if never:
        argv += ["--never-used", str(never)]
    if half:
        argv += ["--half-sent", str(half)]
    r = subprocess.run(env.on_client_cpu(argv), capture_output=True, text=True,
                       timeout=timeout_ms / 1000 + 180)
    if r.returncode != 0:
        raise RuntimeError(f"loadgen failed ({r.returncode}): {r.stderr.strip()[-600:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def stop_run(env, server, n, sig="INT", inflight=0, slow_ms=2000, never=0, half=0,
             grace_ms=5000, timeout_ms=30000, extra=()):
    srv = Running(env, server, grace_ms=grace_ms)
    try:
        warm(srv)
        rss_before = read_rss_kb(srv.pid)
        lg = run_loadgen_idle(env, srv, n, sig, inflight, slow_ms, never, half, timeout_ms, extra=extra)
        stopped = srv.wait_stopped(timeout=timeout_ms / 1000 + 10)
    except BaseException:
        srv.kill()
        raise
    return {"server": server.name, "n": n, "signal": sig, "rss_before_kb": rss_before,
            "stopped": stopped, "loadgen": lg}


def measure_stop(env, servers, scenarios, rounds, results):
    """Immediate stop (SIGINT) with N idle keep-alive connections (+ K slow in flight)."""
    runs = []
    for sc in scenarios:
        for r in range(rounds):
            for server in rotated(servers, r):
                label = f"N={sc['n']}" + (f"+{sc['inflight']} slow" if sc["inflight"] else "")
                try:
                    res = stop_run(env, server, sc["n"], "INT", inflight=sc["inflight"],
                                   slow_ms=sc["slow_ms"])
                    res.update(scenario=sc["name"], round=r)
                    lg = res["loadgen"]
                    log(f"[stop {label} round {r + 1}/{rounds}] {server.name}: server "
                        f"{fmt(res['stopped']['ms'], 2)} ms, client last close "
                        f"{fmt(lg['last_close_ms'], 2)} ms, unclosed {lg['unclosed']}")
                except Exception as e:
                    res = {"server": server.name, "scenario": sc["name"], "n": sc["n"],
                           "round": r, "error": str(e)}
                    log(f"[stop {label} round {r + 1}/{rounds}] {server.name}: ERROR {e}")
                runs.append(res)
    summary = {}
    for sc in scenarios:
        for server in servers:
            rs = [x for x in runs if x["server"] == server.name and x["scenario"] == sc["name"]
                  and "error" not in x]
            errors = sum(1 for x in runs if x["server"] == server.name
                         and x["scenario"] == sc["name"] and "error" in x)
            floors = [x["stopped"].get("floor_ms") for x in rs]
            summary.setdefault(sc["name"], {})[server.name] = {
                "n": sc["n"], "inflight": sc["inflight"],
                "server_ms": median([x["stopped"]["ms"] for x in rs]),
                "server_ms_all": [x["stopped"]["ms"] for x in rs],
                "client_last_close_ms": median([x["loadgen"]["last_close_ms"] for x in rs]),
                "client_median_close_ms": median([x["loadgen"]["idle"]["median_close_ms"] for x in rs]),
                "unclosed": max([x["loadgen"]["unclosed"] for x in rs], default=None),
                "floor_ms": median(floors) if any(f is not None for f in floors) else None,
                "rss_per_conn_b": median([(x["loadgen"]["rss_loaded_kb"] - x["rss_before_kb"]) * 1024 / x["n"]
                                          for x in rs if x["rss_before_kb"] and x["loadgen"]["rss_loaded_kb"] > 0]),
                "counts": rs[-1]["stopped"] if rs else None,
                "rounds": len(rs), "errors": errors,
            }
    for sc in scenarios:
        row = inproc_row(results, sc["n"])
        if row and SUBJECT in summary[sc["name"]] and not sc["inflight"]:
            summary[sc["name"]][SUBJECT]["floor_ms"] = row["floor_ms"]
    results["stop"] = {"scenarios": scenarios, "summary": summary, "runs": runs}


def run_json_rows(env, tag, argv, timeout):
    """Runs one of sluice's own benchmark programs with --json, pinned like a server, its client on
    the client CPU; returns the JSON objects it printed, one per line."""
    argv = argv + ["--json"] + (["--client-cpu", str(env.client_cpu)] if env.client_cpu else [])
    argv = env.on_server_cpu(argv)
    log(f"[{tag}] {' '.join(argv)}")
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    rows = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    if r.returncode != 0 or not rows:
        log(f"[{tag}] failed: {r.stderr.strip()[-400:]}")
    return rows


def measure_inprocess_stop(env, binary, ns, rounds, results):
    """sluice's stop_now() timed inside the server process, interleaved with the floor: a bare
    loop of close() over the same number of accepted sockets (benchmarks/stop_latency.cpp)."""
    rows = run_json_rows(env, "in-process stop", [binary, "--conns", ",".join(map(str, ns)), "--rounds",
                                                  str(rounds), "--loadgen", env.args.loadgen], 1800)
    for row in rows:
        log(f"[in-process stop] N={row['n']} {row['server']}: stop_now {row['stop_now_ms']:.2f} ms, "
            f"floor {row['floor_ms']:.2f} ms (in an epoll set {row['epoll_floor_ms']:.2f} ms), "
            f"ratio {row['ratio']:.2f}")
    results["inproc_stop"] = {"rounds": rounds, "rows": rows}


def measure_tls_stop(env, binary, n, rounds, results):
    """sluice's stop_now() with N idle HTTPS connections against the same with plain HTTP, timed
    inside the server process, alternating modes in each round (benchmarks/tls_stop.cpp)."""
    rows = run_json_rows(env, "tls stop", [binary, "--conns", str(n), "--rounds", str(rounds)], 600)
    for row in rows:
        log(f"[tls stop] N={row['n']} {row['server']}: stop_now {row['stop_now_ms']:.2f} ms, "
            f"{row['ratio_to_plain']:.2f}x plain")
    results["tls_stop"] = {"rounds": rounds, "rows": rows}


def inproc_row(res, n, server="http"):
    for row in res.get("inproc_stop", {}).get("rows", []):
        if row["n"] == n and row["server"] == server:
            return row
    return None


def measure_graceful(env, servers, cfg, rounds, results):
    """SIGTERM with idle, never-used, half-sent and slow in-flight connections."""
    runs = []
    for r in range(rounds):
        for server in rotated(servers, r):
            try:
                res = stop_run(env, server, cfg["n"], "TERM", inflight=cfg["slow"],
                               slow_ms=cfg["slow_ms"], never=cfg["never"], half=cfg["half"],
                               grace_ms=cfg["grace_ms"], timeout_ms=cfg["grace_ms"] + 10000)
                res["round"] = r
                g = graceful_figures(res)
                res["figures"] = g
                log(f"[graceful round {r + 1}/{rounds}] {server.name}: idle+never-used closed by "
                    f"{fmt(g['idle_never_last_ms'], 1)} ms, slow {g['slow_complete']}/{cfg['slow']} "
                    f"complete ({g['slow_with_close']} with Connection: close), last close "
                    f"{fmt(g['client_last_close_ms'], 1)} ms, server {fmt(g['server_ms'], 1)} ms")
            except Exception as e:
                res = {"server": server.name, "round": r, "error": str(e)}
                log(f"[graceful round {r + 1}/{rounds}] {server.name}: ERROR {e}")
            runs.append(res)
    summary = {}
    for server in servers:
        rs = [x["figures"] for x in runs if x["server"] == server.name and "error" not in x]
        if not rs:
            summary[server.name] = {"rounds": 0, "errors": sum(1 for x in runs if x["server"] == server.name)}
            continue
        s = {k: median([x[k] for x in rs]) for k in rs[0] if k not in ("counts",)}
        # correctness figures: the worst round
        for k in ("slow_complete", "slow_200", "slow_with_close"):
            s[k] = min(x[k] for x in rs)
        s["unclosed"] = max(x["unclosed"] for x in rs)
        s["counts"] = rs[-1]["counts"]
        s["rounds"] = len(rs)
        s["errors"] = sum(1 for x in runs if x["server"] == server.name and "error" in x)
        summary[server.name] = s
    results["graceful"] = {"config": cfg, "summary": summary, "runs": runs}


def graceful_figures(res):
    lg, st = res["loadgen"], res["stopped"]
    idle_last = lg["idle"]["last_close_ms"]
    never_last = lg.get("never_used", {}).get("last_close_ms")
    both = [x for x in (idle_last, never_last) if x is not None]
    unclosed_idle = (lg["idle"]["count"] - lg["idle"]["closed"]
                     + lg.get("never_used", {}).get("count", 0) - lg.get("never_used", {}).get("closed", 0))
    inflight = lg.get("inflight", {})
    last_close = lg["last_close_ms"]
    return {
        "idle_last_ms": idle_last,
        "never_last_ms": never_last,
        "idle_never_last_ms": (max(both) if both and unclosed_idle == 0 else None),
        "half_last_ms": lg.get("half_sent", {}).get("last_close_ms"),
        "slow_complete": inflight.get("complete", 0),
        "slow_200": inflight.get("status_200", 0),
        "slow_with_close": inflight.get("with_connection_close", 0),
        "slow_last_response_ms": inflight.get("last_response_ms"),
        "client_last_close_ms": last_close,
        "server_ms": st["ms"],
        "server_after_last_close_ms": (st["ms"] - last_close) if last_close is not None else None,
        "unclosed": lg["unclosed"],
        "counts": {k: st.get(k) for k in ("idle_closed", "completed", "forced")},
    }


WRK_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def parse_wrk(out):
    def dur(s):
        m = re.match(r"([\d.]+)(us|ms|s|m)$", s)
        return float(m.group(1)) * WRK_UNITS[m.group(2)] if m else None
    res = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    res["rps"] = float(m.group(1)) if m else None
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m),", out)
    res["requests"] = int(m.group(1)) if m else None
    res["duration_s"] = float(m.group(2)) * WRK_UNITS[m.group(3)] / 1e3 if m else None
    m = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    res["p99_ms"] = dur(m.group(1)) if m else None
    m = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    res["p50_ms"] = dur(m.group(1)) if m else None
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    res["socket_errors"] = sum(int(x) for x in m.groups()) if m else 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    res["non_2xx"] = int(m.group(1)) if m else 0
    return res


def wrk_run(env, srv, seconds, close):
    argv = [env.wrk, "-t1", "-c50", f"-d{seconds}s", "--latency"]
    if close:
        argv += ["-H", "Connection: close"]
    argv.append(f"{srv.server.scheme}://127.0.0.1:{srv.port}/")
    cpu0 = read_cpu_s(srv.pid)
    r = subprocess.run(env.on_client_cpu(argv), capture_output=True, text=True, timeout=seconds + 60)
    cpu1 = read_cpu_s(srv.pid)
    if r.returncode != 0:
        raise RuntimeError(f"wrk failed: {r.stderr.strip()[-400:]}")
    res = parse_wrk(r.stdout)
    res["server_cpu_s"] = cpu1 - cpu0
    # How busy the server's CPU was with the server: well below 100 % means the figure is
    # bound by the client or by other load on the machine, not by the server.
    res["server_cpu_pct"] = 100 * (cpu1 - cpu0) / res["duration_s"] if res["duration_s"] else None
    if res["requests"]:
        res["cpu_s_per_100k"] = (cpu1 - cpu0) * 100000 / res["requests"]
    else:
        res["cpu_s_per_100k"] = None
    return res


def measure_wrk(env, servers, seconds, rounds, results, kinds=(("throughput", False), ("churn", True)),
                client=wrk_run):
    """Throughput (keep-alive) and churn (Connection: close); one process per server. kinds: the
    (results key, Connection: close?) pairs to measure; client: wrk_run or another with its
    signature and figures (h2_bench.h2load_run)."""
    running = {}
    for server in servers:
        try:
            running[server.name] = Running(env, server)
            warm(running[server.name])
        except Exception as e:
            log(f"[wrk] {server.name}: cannot start: {e}")
            if server.name in running:   # started but not serving: no rounds against it
                running.pop(server.name).kill()
    try:
        for srv in running.values():   # JIT / caches warm, equal for everyone
            try:
                client(env, srv, 1, close=False)
            except Exception as e:
                log(f"[wrk warm-up] {srv.server.name}: {e}")
        for kind, close in kinds:
            runs = []
            for r in range(rounds):
                for server in rotated(servers, r):
                    srv = running.get(server.name)
                    if srv is None:
                        continue
                    try:
                        res = client(env, srv, seconds, close)
                        res.update(server=server.name, round=r)
                        log(f"[{kind} round {r + 1}/{rounds}] {server.name}: {fmt(res['rps'], 0)} req/s, "
                            f"p99 {fmt(res['p99_ms'], 2)} ms, CPU {fmt(res['cpu_s_per_100k'], 3)} s/100k, "
                            f"server CPU busy {fmt(res['server_cpu_pct'], 0)} %, "
                            f"errors {res['socket_errors']}, non-2xx {res['non_2xx']}")
                    except Exception as e:
                        res = {"server": server.name, "round": r, "error": str(e)}
                        log(f"[{kind} round {r + 1}/{rounds}] {server.name}: ERROR {e}")
                    runs.append(res)
            summary = {}
            for server in servers:
                rs = [x for x in runs if x["server"] == server.name and "error" not in x]
                if not rs:
                    summary[server.name] = {"rounds": 0}
                    continue
                summary[server.name] = {
                    "rps": median([x["rps"] for x in rs]),
                    "rps_all": [x["rps"] for x in rs],
                    "p99_ms": median([x["p99_ms"] for x in rs]),
                    "cpu_s_per_100k": median([x["cpu_s_per_100k"] for x in rs]),
                    "server_cpu_pct": median([x["server_cpu_pct"] for x in rs]),
                    "socket_errors": sum(x["socket_errors"] for x in rs),
                    "non_2xx": sum(x["non_2xx"] for x in rs),
                    "rounds": len(rs),
                }
            results[kind] = {"seconds": seconds, "connections": 50, "summary": summary, "runs": runs}
    finally:
        for srv in running.values():
            try:
                srv.stop(signal.SIGINT if srv.server.hello_interface else signal.SIGTERM)
            except Exception as e:
                log(f"[wrk] {srv.server.name}: stop: {e}")


def measure_memory(env, servers, n, rounds, results, key="memory", websocket=None, hold_argv=None):
    """RSS growth per idle keep-alive connection (loadgen hold); with websocket=PATH, per idle
    WebSocket (no compression) instead. hold_argv: callable(srv, n) giving the argv of another holding
    client with loadgen hold's interface (HTTP/2, TLS)."""
    runs = []
    for r in range(rounds):
        for server in rotated(servers, r):
            try:
                srv = Running(env, server)
                try:
                    if websocket:
                        ws_warm_up(env, srv, websocket)
                    else:
                        warm(srv)
                    time.sleep(0.2)
                    before = read_rss_kb(srv.pid)
                    ws_args = ["--websocket", websocket] if websocket else []
                    argv = hold_argv(srv, n) if hold_argv else [env.loadgen, "hold", "--port", str(srv.port),
                                                                "--conns", str(n)] + ws_args
                    hold = subprocess.Popen(env.on_client_cpu(argv),
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                            stderr=subprocess.PIPE)
                    _children.append(hold)
                    ready = LineReader(hold.stdout).readline(120)
                    if not ready or '"ready"' not in ready:
                        hold.kill()
                        raise RuntimeError(f"loadgen hold: {ready!r} {hold.stderr.read().decode()[-400:]}")
                    time.sleep(0.3)
                    loaded = read_rss_kb(srv.pid)
                    hold.stdin.close()
                    hold.wait(timeout=30)
                    srv.stop(signal.SIGINT)
                finally:
                    srv.kill()
                per_conn = (loaded - before) * 1024 / n
                runs.append({"server": server.name, "round": r, "n": n, "rss_before_kb": before,
                             "rss_loaded_kb": loaded, "bytes_per_conn": per_conn})
                log(f"[{key} N={n} round {r + 1}/{rounds}] {server.name}: {before} -> {loaded} kB, "
                    f"{per_conn:,.0f} B/conn")
            except Exception as e:
                runs.append({"server": server.name, "round": r, "error": str(e)})
                log(f"[{key} round {r + 1}/{rounds}] {server.name}: ERROR {e}")
    summary = {}
    for server in servers:
        rs = [x for x in runs if x["server"] == server.name and "error" not in x]
        summary[server.name] = {"rounds": 0}
        if rs:
            summary[server.name] = {
                "n": n,
                "rss_before_kb": median([x["rss_before_kb"] for x in rs]),
                "rss_loaded_kb": median([x["rss_loaded_kb"] for x in rs]),
                "bytes_per_conn": median([x["bytes_per_conn"] for x in rs]),
                "rounds": len(rs),
            }
    results[key] = {"n": n, "summary": summary, "runs": runs}


# --------------------------------------------------------------------------- WebSocket

WS_PATH = "/ws"


def make_ws_servers(env, sluice_ws_path):
    """sluice's examples/websocket_echo and npm ws (benchmarks/peers/ws, installed by scripts/bench)."""
    servers = []
    if sluice_ws_path:
        p = str(Path(sluice_ws_path).resolve())
        servers.append(Server(SUBJECT, lambda port, grace_ms, run_dir:
                              [p, "--port", str(port), "--grace-ms", str(grace_ms)]))
    js = PEERS / "ws" / "server.js"
    if env.node and (PEERS / "ws" / "node_modules" / "ws").is_dir():
        servers.append(Server("ws", lambda port, grace_ms, run_dir:
                              [env.node, str(js), "--port", str(port), "--grace-ms", str(grace_ms)]))
    else:
        log("node or benchmarks/peers/ws/node_modules/ws missing (scripts/bench installs it): no npm ws peer")
    return servers


def run_ws_echo(env, srv, conns, seconds, path=WS_PATH):
    argv = [env.loadgen, "ws-echo", "--port", str(srv.port), "--conns", str(conns), "--websocket", path,
            "--seconds", str(seconds)]
    r = subprocess.run(env.on_client_cpu(argv), capture_output=True, text=True, timeout=seconds + 120)
    if r.returncode != 0:
        raise RuntimeError(f"loadgen ws-echo failed ({r.returncode}): {r.stderr.strip()[-400:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def ws_warm_up(env, srv, path=WS_PATH):
    """A second of echo on one WebSocket (lazy init / JIT)."""
    run_ws_echo(env, srv, 1, 1, path)


def measure_ws_echo(env, servers, conns, seconds, rounds, results):
    """Echo round trips per second: N WebSockets, one message in flight on each."""
    runs = []
    for r in range(rounds):
        for server in rotated(servers, r):
            try:
                srv = Running(env, server)
                try:
                    ws_warm_up(env, srv)
                    cpu0 = read_cpu_s(srv.pid)
                    lg = run_ws_echo(env, srv, conns, seconds)
                    cpu = read_cpu_s(srv.pid) - cpu0
                    srv.stop(signal.SIGINT)
                finally:
                    srv.kill()
                runs.append({"server": server.name, "round": r, "per_second": lg["per_second"],
                             "cpu_us_per_rt": cpu * 1e6 / max(1, lg["round_trips"]), "loadgen": lg})
                log(f"[ws echo round {r + 1}/{rounds}] {server.name}: {lg['per_second']:,} round trips/s, "
                    f"server CPU {runs[-1]['cpu_us_per_rt']:.1f} µs per round trip")
            except Exception as e:
                runs.append({"server": server.name, "round": r, "error": str(e)})
                log(f"[ws echo round {r + 1}/{rounds}] {server.name}: ERROR {e}")
    summary = {}
    for server in servers:
        rs = [x for x in runs if x["server"] == server.name and "error" not in x]
        summary[server.name] = {"rounds": len(rs)}
        if rs:
            summary[server.name].update(per_second=median([x["per_second"] for x in rs]),
                                        per_second_all=[x["per_second"] for x in rs],
                                        cpu_us_per_rt=median([x["cpu_us_per_rt"] for x in rs]))
    results["ws_echo"] = {"conns": conns, "seconds": seconds, "summary": summary, "runs": runs}


def measure_ws_shutdown(env, servers, n, rounds, results, grace_ms=5000):
    """SIGTERM with N idle WebSockets: when each client saw the server's Close (and its code)."""
    runs = []
    for r in range(rounds):
        for server in rotated(servers, r):
            try:
                srv = Running(env, server, grace_ms=grace_ms)
                try:
                    ws_warm_up(env, srv)
                    lg = run_loadgen_idle(env, srv, n, "TERM", timeout_ms=grace_ms + 10000,
                                          websocket=WS_PATH)
                    stopped = srv.wait_stopped(timeout=grace_ms / 1000 + 20)
                finally:
                    srv.kill()
                wc = lg["ws_close"]
                runs.append({"server": server.name, "round": r, "codes": wc["codes"],
                             "max_close_frame_ms": wc["max_close_frame_ms"],
                             "median_close_frame_ms": wc["median_close_frame_ms"],
                             "last_tcp_close_ms": lg["last_close_ms"], "unclosed": lg["unclosed"],
                             "server_ms": stopped["ms"]})
                log(f"[ws shutdown N={n} round {r + 1}/{rounds}] {server.name}: close codes {wc['codes']}, "
                    f"last Close at {fmt(wc['max_close_frame_ms'], 1)} ms, last TCP close "
                    f"{fmt(lg['last_close_ms'], 1)} ms, server {fmt(stopped['ms'], 1)} ms")
            except Exception as e:
                runs.append({"server": server.name, "round": r, "error": str(e)})
                log(f"[ws shutdown round {r + 1}/{rounds}] {server.name}: ERROR {e}")
    summary = {}
    for server in servers:
        rs = [x for x in runs if x["server"] == server.name and "error" not in x]
        summary[server.name] = {"rounds": len(rs)}
        if rs:
            summary[server.name].update(
                all_1001=min(x["codes"].get("1001", 0) for x in rs), n=n,
                codes=rs[-1]["codes"],
                max_close_frame_ms=median([x["max_close_frame_ms"] for x in rs]),
                median_close_frame_ms=median([x["median_close_frame_ms"] for x in rs]),
                last_tcp_close_ms=median([x["last_tcp_close_ms"] for x in rs]),
                server_ms=median([x["server_ms"] for x in rs]),
                unclosed=max(x["unclosed"] for x in rs))
    results["ws_shutdown"] = {"n": n, "grace_ms": grace_ms, "summary": summary, "runs": runs}


# --------------------------------------------------------------------------- targets

def ratio_check(results, desc, section_key, metric, other, factor, better):
    """subject vs other. A subject without data (its runs failed) misses the target; a
    missing peer makes it n/a."""
    a = results.get(section_key, {}).get(SUBJECT, {}).get(metric)
    b = results.get(section_key, {}).get(other, {}).get(metric)
    if a is None:
        return {"target": desc, "value": NO_DATA, "met": False}
    if b is None or a <= 0 or b <= 0:
        return {"target": desc, "value": f"n/a (no {other} figure)", "met": None}
    if better == "faster":      # lower is better; ratio = other / subject
        ratio = b / a
        return {"target": desc, "value": f"{ratio:.2f}x ({fmt(a, 2)} vs {fmt(b, 2)})", "met": ratio >= factor}
    if better == "higher":      # ratio = subject / other
        ratio = a / b
        return {"target": desc, "value": f"{ratio:.2f}x ({fmt(a, 0)} vs {fmt(b, 0)})", "met": ratio >= factor}
    if better == "le":          # subject <= factor * other
        return {"target": desc, "value": f"{a / b:.2f}x ({fmt(a, 3)} vs {fmt(b, 3)})", "met": a <= factor * b}
    if better == "lt":
        return {"target": desc, "value": f"{a / b:.2f}x ({fmt(a, 0)} vs {fmt(b, 0)})", "met": a < b}
    raise ValueError(better)


def compute_targets(res, has_subject):
    checks = {"stop": [], "tls stop": [], "graceful": [], "throughput": [], "memory": [],
              "websocket": websocket_targets(res)}   # sluice's WebSocket server is its own option
    if not has_subject:
        return checks
    tls = {row["server"]: row for row in res.get("tls_stop", {}).get("rows", [])}
    if "tls" in tls:
        t = tls["tls"]
        checks["tls stop"].append({"target": f"TLS stop N={t['n']} <= 1.2x plain HTTP",
                                   "value": f"{t['ratio_to_plain']:.2f}x ({fmt(t['stop_now_ms'], 2)} vs "
                                            f"{fmt(tls['plain']['stop_now_ms'], 2)} ms)" if "plain" in tls else NO_DATA,
                                   "met": t["ratio_to_plain"] <= 1.2})
    flat = {}
    stop = res.get("stop", {})
    if stop:
        idle_scs = [sc for sc in stop["scenarios"] if not sc["inflight"]]
        big = max(idle_scs, key=lambda sc: sc["n"]) if idle_scs else None
        if big:
            flat["stop_big"] = stop["summary"][big["name"]]
            n = big["n"]
            s = flat["stop_big"].get(SUBJECT, {})
            ms, floor = s.get("server_ms"), s.get("floor_ms")
            inproc = inproc_row(res, n)
            if inproc:
                checks["stop"].append({"target": f"stop N={n} <= 1.15x bare close floor (in-process)",
                                       "value": f"{inproc['ratio']:.2f}x ({fmt(inproc['stop_now_ms'], 2)} vs floor "
                                                f"{fmt(inproc['floor_ms'], 2)})",
                                       "met": inproc["ratio"] <= 1.15})
            elif ms is None:
                checks["stop"].append({"target": f"stop N={n} <= 1.15x bare close floor",
                                       "value": NO_DATA, "met": False})
            elif floor:
                checks["stop"].append({"target": f"stop N={n} <= 1.15x bare close floor",
                                       "value": f"{ms / floor:.2f}x ({fmt(ms, 2)} vs floor {fmt(floor, 2)})",
                                       "met": ms <= 1.15 * floor})
            else:
                checks["stop"].append({"target": f"stop N={n} <= 1.15x bare close floor",
                                       "value": "n/a (no floor_ms in the server's line)", "met": None})
            checks["stop"].append(ratio_check(flat, f"stop N={n} >= 1.5x faster than node", "stop_big",
                                              "server_ms", "node", 1.5, "faster"))
            checks["stop"].append(ratio_check(flat, f"stop N={n} >= 2x faster than go", "stop_big",
                                              "server_ms", "go", 2.0, "faster"))
    g = res.get("graceful", {})
    if g:
        s = g["summary"].get(SUBJECT, {})
        k = g["config"]["slow"]
        v = s.get("idle_never_last_ms")
        if s.get("rounds"):
            checks["graceful"].append({"target": "idle + never-used closed within 50 ms",
                                       "value": f"{fmt(v, 1)} ms" if v is not None else "not all closed",
                                       "met": v is not None and v <= 50})
            ok = s["slow_complete"] == k and s["slow_200"] == k and s["slow_with_close"] == k
            checks["graceful"].append({"target": f"all {k} slow complete with Connection: close",
                                       "value": f"{s['slow_complete']}/{k} complete, {s['slow_with_close']}/{k} close",
                                       "met": ok})
            d = s.get("server_after_last_close_ms")
            checks["graceful"].append({"target": "returns within 5 ms of the last close",
                                       "value": f"{fmt(d, 1)} ms", "met": d is not None and d <= 5})
        else:
            checks["graceful"] += [{"target": t, "value": NO_DATA, "met": False} for t in
                                   ("idle + never-used closed within 50 ms",
                                    f"all {k} slow complete with Connection: close",
                                    "returns within 5 ms of the last close")]
    t = res.get("throughput", {})
    if t:
        flat["tp"] = t["summary"]
        checks["throughput"].append(ratio_check(flat, "req/s >= 1.0x nginx", "tp", "rps", "nginx", 1.0, "higher"))
        checks["throughput"].append(ratio_check(flat, "req/s >= 2x node", "tp", "rps", "node", 2.0, "higher"))
        checks["throughput"].append(ratio_check(flat, "CPU s/100k req <= nginx", "tp", "cpu_s_per_100k",
                                                "nginx", 1.0, "le"))
    m = res.get("memory", {})
    if m:
        flat["mem"] = m["summary"]
        v = m["summary"].get(SUBJECT, {}).get("bytes_per_conn")
        checks["memory"].append({"target": "<= 2048 B per idle connection",
                                 "value": NO_DATA if v is None else f"{fmt(v, 0)} B",
                                 "met": v is not None and v <= 2048})
        checks["memory"].append(ratio_check(flat, "B/conn < node", "mem", "bytes_per_conn", "node", 1, "lt"))
        checks["memory"].append(ratio_check(flat, "B/conn < go", "mem", "bytes_per_conn", "go", 1, "lt"))
    return checks


def websocket_targets(res):
    """Against npm ws, when sluice's WebSocket server took part (--sluice-ws-server)."""
    checks = []
    if SUBJECT not in res.get("meta", {}).get("ws_servers", []):
        return checks
    flat = {"echo": res.get("ws_echo", {}).get("summary", {}),
            "mem": res.get("ws_memory", {}).get("summary", {})}
    if flat["echo"]:
        checks.append(ratio_check(flat, "echo round trips/s >= npm ws", "echo", "per_second", "ws", 1.0, "higher"))
    if flat["mem"]:
        v = flat["mem"].get(SUBJECT, {}).get("bytes_per_conn")
        checks.append({"target": "<= 3072 B per idle WebSocket", "value": NO_DATA if v is None else f"{fmt(v, 0)} B",
                       "met": v is not None and v <= 3072})
    sd = res.get("ws_shutdown")
    if sd:
        s = sd["summary"].get(SUBJECT, {})
        ok = s.get("rounds") and s["all_1001"] == sd["n"] and s["max_close_frame_ms"] is not None
        checks.append({"target": f"every one of {sd['n']} clients saw Close 1001 within 50 ms",
                       "value": f"{s['all_1001']}/{sd['n']} saw 1001, last at {fmt(s['max_close_frame_ms'], 1)} ms"
                       if s.get("rounds") else NO_DATA,
                       "met": bool(ok and s["max_close_frame_ms"] <= 50)})
    return checks


def met_str(c):
    return "n/a" if c["met"] is None else ("met" if c["met"] else "missed")


def target_cell(checks, name, has_subject):
    if name != SUBJECT:
        return ""
    if not has_subject or not checks:
        return "n/a"
    return "; ".join(f"{c['target']}: {met_str(c)}" for c in checks)


# --------------------------------------------------------------------------- report

def table(headers, rows):
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def machine_info():
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": cpu, "kernel": platform.release(),
            "loadavg_at_start": os.getloadavg()[0]}


def tool_versions(env):
    def v(argv):
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            return (r.stdout + r.stderr).strip().splitlines()[0]
        except Exception:
            return "n/a"
    def last_word(s, pattern):
        m = re.search(pattern, s)
        return m.group(1) if m else s
    return {"node": v([env.node, "--version"]) if env.node else "n/a",
            "go": last_word(v([env.go, "version"]), r"go version go(\S+)") if env.go else "n/a",
            "nginx": last_word(v([env.nginx, "-v"]), r"nginx/(\S+)") if env.nginx else "n/a",
            "wrk": last_word(v([env.wrk, "--version"]), r"^wrk (\S+)") if env.wrk else "n/a",
            "npm ws": npm_ws_version()}


def npm_ws_version():
    try:
        return json.loads((PEERS / "ws" / "node_modules" / "ws" / "package.json").read_text())["version"]
    except (OSError, ValueError, KeyError):
        return "n/a"


def render_markdown(res, checks, has_subject):
    L = []
    meta = res["meta"]
    L.append("# sluice benchmarks: hello_server vs Node http, Go net/http, nginx\n")
    L.append(f"- date: {meta['date']}")
    L.append(f"- machine: nproc {meta['machine']['nproc']}, {meta['machine']['cpu']}, Linux {meta['machine']['kernel']}, "
             f"load average {meta['machine']['loadavg_at_start']:.2f} at start, {meta['loadavg_at_end']:.2f} at end")
    L.append(f"- pinning: servers on CPU {meta['server_cpu']}, clients (loadgen, wrk) on CPU {meta['client_cpu']}")
    L.append(f"- tools: {', '.join(f'{k} {v}' for k, v in meta['tools'].items())}")
    L.append(f"- command: `{meta['command']}`")
    L.append(f"- mode: {'quick' if meta['quick'] else 'full'}, {meta['rounds']} round(s) per figure, servers "
             f"interleaved within each round; medians across rounds")
    if not has_subject:
        L.append("- no --sluice-server given: peers only, targets n/a")
    L.append("")

    ip = res.get("inproc_stop")
    if ip and ip["rows"]:
        L.append("## stop_now() against the bare close() floor (in-process)\n")
        L.append(f"benchmarks/stop_latency: N idle keep-alive connections held by loadgen in another process; "
                 f"the server process times stop_now() (tcp: sluice::tcp::server with a minimal responder, "
                 f"http: sluice::http::server) and, interleaved in each round, a bare loop of close() over the "
                 f"same number of accepted sockets; the epoll floor is that loop over sockets registered in "
                 f"an epoll set (what any event loop pays). Ratio: stop_now to the bare floor. Medians of "
                 f"{ip['rounds']} rounds; heap: bytes the server holds per idle connection (mallinfo2).\n")
        rows = [[r["n"], r["server"], fmt(r["stop_now_ms"], 2), fmt(r["floor_ms"], 2),
                 fmt(r["epoll_floor_ms"], 2), f"{r['epoll_floor_ms'] / r['floor_ms']:.2f}", f"{r['ratio']:.2f}",
                 fmt(r["us_per_conn"], 2), fmt(r["heap_bytes_per_conn"], 0)] for r in ip["rows"]]
        L.append(table(["N", "server", "stop_now ms", "floor ms", "epoll floor ms", "epoll floor / floor",
                        "ratio", "µs per connection", "heap B per idle connection"], rows))
        L.append("")

    ts = res.get("tls_stop")
    if ts and ts["rows"]:
        L.append("## stop_now() with idle HTTPS connections against plain HTTP (in-process)\n")
        L.append(f"benchmarks/tls_stop: a forked client opens N keep-alive connections (a full TLS handshake "
                 f"each for tls), makes one request on each and holds them idle; the server process times "
                 f"stop_now(). Modes alternate within each round; medians of {ts['rounds']} rounds.\n")
        rows = [[r["n"], r["server"], fmt(r["stop_now_ms"], 2), f"{r['ratio_to_plain']:.2f}",
                 fmt(r["us_per_conn"], 2), fmt(r["heap_bytes_per_conn"], 0)] for r in ts["rows"]]
        L.append(table(["N", "server", "stop_now ms", "ratio to plain", "µs per connection",
                        "heap B per idle connection"], rows))
        L.append("")

    stop = res.get("stop")
    if stop:
        L.append("## Stop latency (SIGINT, immediate)\n")
        L.append("Server ms: the server's own figure, signal receipt to everything closed (primary). "
                 "Client last close: loadgen's t0 (just before kill()) to the last EOF/RST it saw. "
                 "Floor: bare close() of the same number of sockets, from the in-process run above.\n")
        rows = []
        for sc in stop["scenarios"]:
            for name, s in stop["summary"][sc["name"]].items():
                label = f"{sc['n']} idle" + (f" + {sc['inflight']} slow in flight" if sc["inflight"] else "")
                cell = ""
                if name == SUBJECT:
                    idle_scs = [x for x in stop["scenarios"] if not x["inflight"]]
                    if idle_scs and sc is max(idle_scs, key=lambda x: x["n"]):
                        cell = target_cell(checks["stop"], name, has_subject)
                    else:
                        cell = "-"
                rows.append([label, name, fmt(s["server_ms"], 2), fmt(s["client_last_close_ms"], 2),
                             fmt(s["client_median_close_ms"], 2),
                             fmt(s["floor_ms"], 2) if s["floor_ms"] is not None else "n/a",
                             ", ".join(fmt(x, 1) for x in s["server_ms_all"]) or "-",
                             s["unclosed"] if s["unclosed"] is not None else "n/a",
                             s["errors"], cell])
        L.append(table(["connections", "server", "server ms", "client last close ms",
                        "client median close ms", "floor ms", "server ms, all rounds", "unclosed", "errors",
                        "target / met?"], rows))
        L.append("")

    g = res.get("graceful")
    if g:
        c = g["config"]
        L.append(f"## Graceful drain (SIGTERM, grace {c['grace_ms']} ms)\n")
        L.append(f"{c['n']} idle + {c['never']} never-used + {c['half']} half-sent + {c['slow']} slow "
                 f"({c['slow_ms']} ms, sent ~100 ms before the trigger) requests in flight. Times in ms "
                 f"after the trigger (loadgen's t0), "
                 f"medians; x/{c['slow']} figures are the worst round. 'server - last close' = server ms "
                 f"minus the client's last close (approximate: two clocks' start points differ slightly).\n")
        rows = []
        for name, s in g["summary"].items():
            if not s.get("rounds"):
                rows.append([name] + ["error"] * 10 + [target_cell(checks["graceful"], name, has_subject)])
                continue
            k = c["slow"]
            cnt = s["counts"]
            rows.append([name, fmt(s["idle_last_ms"], 1), fmt(s["never_last_ms"], 1), fmt(s["half_last_ms"], 1),
                         f"{s['slow_complete']}/{k}", f"{s['slow_with_close']}/{k}",
                         fmt(s["slow_last_response_ms"], 1), fmt(s["client_last_close_ms"], 1),
                         fmt(s["server_ms"], 1), fmt(s["server_after_last_close_ms"], 1),
                         f"{cnt['idle_closed']}/{cnt['completed']}/{cnt['forced']}",
                         target_cell(checks["graceful"], name, has_subject)])
        L.append(table(["server", "idle last close", "never-used last close", "half-sent last close",
                        "slow complete", "slow w/ Connection: close", "last slow response",
                        "client last close", "server ms", "server - last close",
                        "server idle_closed/completed/forced", "target / met?"], rows))
        L.append("")

    for kind, title in (("throughput", "Throughput (wrk, keep-alive, `GET /`)"),
                        ("churn", "Connection churn (wrk, `Connection: close`)")):
        t = res.get(kind)
        if not t:
            continue
        L.append(f"## {title}\n")
        L.append(f"wrk -t1 -c{t['connections']} -d{t['seconds']}s --latency; server CPU = utime+stime of "
                 f"the server process during the run. Server CPU busy well below 100 % means req/s was bound "
                 f"by the client (wrk) or by other load on the machine, not by the server; CPU s / 100k req "
                 f"is the steadier figure then.\n")
        rows = []
        for name, s in t["summary"].items():
            if s["rounds"]:
                row = [name, fmt(s["rps"], 0), fmt(s["p99_ms"], 2), fmt(s["cpu_s_per_100k"], 3),
                       fmt(s["server_cpu_pct"], 0), ", ".join(fmt(x, 0) for x in s["rps_all"]),
                       s["socket_errors"], s["non_2xx"]]
            else:
                row = [name] + ["error"] * 7
            if kind == "throughput":
                row.append(target_cell(checks["throughput"], name, has_subject))
            rows.append(row)
        headers = ["server", "req/s", "p99 ms", "CPU s / 100k req", "server CPU busy %", "req/s, all rounds",
                   "socket errors", "non-2xx"]
        if kind == "throughput":
            headers.append("target / met?")
        L.append(table(headers, rows))
        L.append("")

    m = res.get("memory")
    if m:
        L.append(f"## Memory per idle keep-alive connection (N={m['n']})\n")
        L.append("(VmRSS with N connections held by `loadgen hold` - VmRSS before) / N, after a warm-up.\n")
        rows = [[name, fmt(s["rss_before_kb"], 0), fmt(s["rss_loaded_kb"], 0), fmt(s["bytes_per_conn"], 0)]
                if s["rounds"] else [name] + ["error"] * 3 for name, s in m["summary"].items()]
        rows = [row + [target_cell(checks["memory"], row[0], has_subject)] for row in rows]
        L.append(table(["server", "RSS before kB", "RSS loaded kB", "B / conn", "target / met?"], rows))
        L.append("")

    L += render_websocket(res, checks, has_subject)
    L += h2_bench.render(res) + tls_bench.render(res)

    errors = {}
    for section in ("stop", "graceful", "throughput", "churn", "memory", "ws_echo", "ws_memory", "ws_shutdown"):
        for run in res.get(section, {}).get("runs", []):
            if "error" in run:
                errors.setdefault((section, run["server"], run["error"][:300]), 0)
                errors[(section, run["server"], run["error"][:300])] += 1
    if errors:
        L.append("## Errors\n")
        L.append(table(["measurement", "server", "error", "runs"],
                       [[sec, name, msg.replace("|", "\\|").replace("\n", " "), k]
                        for (sec, name, msg), k in errors.items()]))
        L.append("")

    L.append("## Targets (sluice)\n")
    if not has_subject:
        L.append("n/a: no --sluice-server given.\n")
    else:
        rows = []
        for section, cs in checks.items():
            for c in cs:
                rows.append([section, c["target"], c["value"], met_str(c)])
        L.append(table(["measurement", "target", "value", "met?"], rows))
        L.append("")
    return "\n".join(L)


def render_websocket(res, checks, has_subject):
    e, m, sd = res.get("ws_echo"), res.get("ws_memory"), res.get("ws_shutdown")
    if not (e or m or sd):
        return []
    L = ["## WebSocket: sluice (examples/websocket_echo) vs npm ws (no compression)\n"]
    if e:
        L.append(f"Echo: `loadgen ws-echo`, {e['conns']} WebSockets, one 32-byte text message in flight on "
                 f"each, {e['seconds']} s; server CPU = its utime+stime per round trip.\n")
        L.append(table(["server", "round trips / s", "all rounds", "server CPU µs / round trip"],
                       [[n, fmt(x.get("per_second"), 0), ", ".join(fmt(v, 0) for v in x.get("per_second_all", [])),
                         fmt(x.get("cpu_us_per_rt"), 1)] for n, x in e["summary"].items()]))
        L.append("")
    if m:
        L.append(f"Memory: (VmRSS with {m['n']} idle WebSockets held by `loadgen hold --websocket` - VmRSS "
                 f"before) / N.\n")
        L.append(table(["server", "RSS before kB", "RSS loaded kB", "B / WebSocket"],
                       [[n, fmt(x.get("rss_before_kb"), 0), fmt(x.get("rss_loaded_kb"), 0),
                         fmt(x.get("bytes_per_conn"), 0)] for n, x in m["summary"].items()]))
        L.append("")
    if sd:
        L.append(f"Graceful shutdown: SIGTERM (grace {sd['grace_ms']} ms) with {sd['n']} idle WebSockets; ms "
                 f"after the signal at which clients saw the server's Close frame (each answered it), and "
                 f"the last TCP close.\n")
        L.append(table(["server", "close codes seen", "median Close ms", "last Close ms", "last TCP close ms",
                        "server ms", "unclosed"],
                       [[n, ", ".join(f"{k} x{v}" for k, v in x["codes"].items()) if "codes" in x else "error", fmt(x.get("median_close_frame_ms"), 1),
                         fmt(x.get("max_close_frame_ms"), 1), fmt(x.get("last_tcp_close_ms"), 1),
                         fmt(x.get("server_ms"), 1), x.get("unclosed", "n/a")] for n, x in sd["summary"].items()]))
        L.append("")
    if checks.get("websocket"):
        L.append("Targets: " + "; ".join(f"{c['target']}: {c['value']} ({met_str(c)})" for c in checks["websocket"]))
        L.append("")
    return L


def plot(env, res, out_dir):
    if not env.gnuplot:
        log("gnuplot not found: no plots")
        return
    term_list = subprocess.run([env.gnuplot, "-e", "set terminal"], capture_output=True, text=True)
    term = "pngcairo" if "pngcairo" in (term_list.stdout + term_list.stderr) else "png"
    work = env.tmp / "plots"
    work.mkdir(exist_ok=True)
    stop = res.get("stop")
    if stop:
        idle_scs = sorted((sc for sc in stop["scenarios"] if not sc["inflight"]), key=lambda sc: sc["n"])
        names = [n for n in res["meta"]["servers"] if any(n in stop["summary"][sc["name"]] for sc in idle_scs)]
        plots = []
        for name in names:
            for metric, title, style in (("server_ms", name, "lw 2 pt 7"),
                                         ("floor_ms", f"{name}: bare close floor", "lw 1 dt 2 pt 6")):
                pts = [(sc["n"], stop["summary"][sc["name"]].get(name, {}).get(metric)) for sc in idle_scs]
                pts = [(n, v) for n, v in pts if v is not None]
                if not pts:
                    continue
                dat = work / f"stop_{name}_{metric}.dat"
                dat.write_text("".join(f"{n} {v}\n" for n, v in pts))
                plots.append(f"'{dat}' using 1:2 with linespoints {style} title '{title}'")
        if plots:
            script = (f"set terminal {term} size 800,500\nset output '{out_dir / 'stop_latency.png'}'\n"
                      "set title 'Immediate stop (SIGINT) with N idle keep-alive connections'\n"
                      "set xlabel 'idle connections'\nset ylabel 'stop ms (server-reported)'\n"
                      "set key left top\nset grid\nset yrange [0:*]\nset offsets 500,500,0,0\n"
                      "plot " + ", ".join(plots) + "\n")
            run_gnuplot(env, script)
    t = res.get("throughput")
    if t and t["summary"]:
        dat = work / "throughput.dat"
        with open(dat, "w") as f:
            for name, s in t["summary"].items():
                churn = res.get("churn", {}).get("summary", {}).get(name, {}).get("rps") or 0
                f.write(f"\"{name}\" {s.get('rps') or 0} {churn}\n")
        script = (f"set terminal {term} size 800,500\nset output '{out_dir / 'throughput.png'}'\n"
                  "set title 'wrk -t1 -c50 on one CPU; servers on the other (2-thread sluice: on both)'\n"
                  "set ylabel 'requests / s'\nset xtics rotate by 20 right\nset bmargin 7\n"
                  "set style data histograms\nset style histogram clustered gap 1\n"
                  "set style fill solid 0.8 border -1\nset boxwidth 0.9\nset grid ytics\nset yrange [0:*]\n"
                  "set key outside bottom center horizontal\n"
                  f"plot '{dat}' using 2:xtic(1) title 'keep-alive', '' using 3 title 'Connection: close'\n")
        run_gnuplot(env, script)


def run_gnuplot(env, script):
    r = subprocess.run([env.gnuplot], input=script, capture_output=True, text=True)
    if r.returncode != 0:
        log("gnuplot failed: " + r.stderr.strip()[-400:])


# --------------------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sluice-server", help="sluice's hello_server binary (omit: peers only)")
    ap.add_argument("--loadgen", required=True, help="the built benchmarks/loadgen")
    ap.add_argument("--stop-latency", help="the built benchmarks/stop_latency: sluice's in-process stop_now() "
                    "against the bare close() floor (omit: no floor)")
    ap.add_argument("--tls-stop", help="the built benchmarks/tls_stop: stop_now() with idle HTTPS connections "
                    "against plain HTTP (omit: no TLS figure)")
    ap.add_argument("--sluice-ws-server", help="sluice's examples/websocket_echo (omit: npm ws only)")
    ap.add_argument("--out-dir", default=str(HERE / "results"))
    ap.add_argument("--quick", action="store_true", help="1 round, small N, short wrk runs (< 2 min)")
    ap.add_argument("--only", default="stop,graceful,throughput,memory,websocket,h2,tls",
                    help="comma-separated subset of stop,graceful,throughput,memory,websocket,h2,tls (throughput "
                         "includes churn; websocket: echo, memory and graceful shutdown against npm ws; h2: "
                         "benchmarks/h2_bench.py; tls: benchmarks/tls_bench.py)")
    ap.add_argument("--rounds", type=int, help="rounds per figure (default 3; --quick: 1)")
    ap.add_argument("--keep-tmp", action="store_true", help="keep the temporary run directories "
                    "(server stderr logs, nginx error log)")
    args = ap.parse_args()

    if not os.access(args.loadgen, os.X_OK):
        sys.exit(f"loadgen not executable: {args.loadgen}")
    if args.sluice_server and not os.access(args.sluice_server, os.X_OK):
        sys.exit(f"sluice server not executable: {args.sluice_server}")
    env = Env(args)

    def cleanup():
        _kill_children()
        if not args.keep_tmp:
            shutil.rmtree(env.tmp, ignore_errors=True)
    atexit.register(cleanup)
    out_dir = Path(args.out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    only = set(args.only.split(","))

    started = time.monotonic()
    go_peer = build_go_peer(env)
    servers = make_servers(env, args.sluice_server, go_peer)
    has_subject = bool(args.sluice_server)
    stoppers = [s for s in servers if s.stop_tests]
    rounds = args.rounds or (1 if args.quick else 3)
    log(f"servers: {', '.join(s.name for s in servers)}; rounds: {rounds}; tmp: {env.tmp}")
    if os.getloadavg()[0] > 0.5:
        log(f"warning: load average {os.getloadavg()[0]:.2f}: other work on this machine makes figures noisy")

    res = {"meta": {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine_info(), "tools": tool_versions(env),
        "command": " ".join(shlex.quote(a) for a in sys.argv), "quick": args.quick, "rounds": rounds,
        "server_cpu": env.server_cpu, "client_cpu": env.client_cpu,
        "servers": [s.name for s in servers], "subject": SUBJECT if has_subject else None,
    }}

    if "stop" in only and args.stop_latency:
        measure_inprocess_stop(env, args.stop_latency, [1000] if args.quick else [1000, 5000, 9000],
                               3 if args.quick else 5, res)
    if "stop" in only and args.tls_stop:
        measure_tls_stop(env, args.tls_stop, 1000, 3 if args.quick else 5, res)
    if "stop" in only:
        ns = [1000] if args.quick else [1000, 5000, 9000]
        scenarios = [{"name": f"idle{n}", "n": n, "inflight": 0, "slow_ms": 2000} for n in ns]
        scenarios.append({"name": "idle1000_slow10", "n": 1000, "inflight": 10, "slow_ms": 2000})
        measure_stop(env, stoppers, scenarios, rounds, res)
    if "graceful" in only:
        cfg = {"n": 1000, "never": 10, "half": 10, "slow": 10, "slow_ms": 2000, "grace_ms": 5000}
        measure_graceful(env, stoppers, cfg, rounds, res)
    if "throughput" in only:
        if env.wrk:
            measure_wrk(env, servers, 3 if args.quick else 10, rounds, res)
        else:
            log("wrk not found: no throughput / churn")
    if "memory" in only:
        measure_memory(env, stoppers, 1000 if args.quick else 9000, rounds, res)

    if "websocket" in only:
        ws_servers = make_ws_servers(env, args.sluice_ws_server)
        res["meta"]["ws_servers"] = [s.name for s in ws_servers]
        measure_ws_echo(env, ws_servers, 50, 3 if args.quick else 10, rounds, res)
        measure_memory(env, ws_servers, 3000, rounds, res, key="ws_memory", websocket=WS_PATH)
        measure_ws_shutdown(env, ws_servers, 1000, rounds, res)
    sluice = args.sluice_server and Path(args.sluice_server).resolve()
    if "h2" in only:
        h2_bench.measure(env, res, sluice, go_peer, args.stop_latency, args.quick, rounds)
    if "tls" in only:
        tls_bench.measure(env, res, sluice, go_peer, args.tls_stop, args.quick, rounds)

    res["meta"]["loadavg_at_end"] = os.getloadavg()[0]
    checks = compute_targets(res, has_subject)
    checks.update(h2_bench.targets(res), **tls_bench.targets(res))
    res["targets"] = checks
    res["meta"]["duration_s"] = round(time.monotonic() - started, 1)
    md = render_markdown(res, checks, has_subject)
    md += f"\nTotal run time: {res['meta']['duration_s']} s.\n"
    (out_dir / "latest.md").write_text(md)
    with open(out_dir / "latest.json", "w") as f:
        json.dump(res, f, indent=1)
    for stale in ("stop_latency.png", "throughput.png"):   # never leave an old run's plot behind
        (out_dir / stale).unlink(missing_ok=True)
    plot(env, res, out_dir)
    print(md)
    written = [p.name for p in (out_dir / "latest.md", out_dir / "latest.json", out_dir / "stop_latency.png",
                                out_dir / "throughput.png") if p.exists()]
    log(f"wrote {', '.join(written)} in {out_dir} ({res['meta']['duration_s']} s)")


if __name__ == "__main__":
    main()
