"""HTTP/2 benchmarks (issue 11), run by benchmarks/run.py (`--only h2`): sluice's hello_server against
nginx (`listen ... http2`), Node `http2` and Go net/http.

h2c (prior knowledge) where the peer has it: sluice, nginx, Node. Go 1.19 serves HTTP/2 only over
TLS (h2c needs golang.org/x/net), so every figure that Go takes part in is also measured over TLS
(h2 by ALPN) for sluice, nginx and Node: a like-for-like row.

- throughput: h2load -c 50 -m 10 (keep-alive), req/s and server CPU s per 100k requests
- graceful shutdown (SIGTERM) with 1,000 idle h2c connections and 10 in-flight /slow streams
  (loadgen idle --h2: when idle connections close, when the streams complete, the GOAWAYs)
- memory per idle HTTP/2 connection (one stream done) at 5,000 connections
- stop_now (SIGINT) with 5,000 idle h2c connections against the bare close() floor
"""

import re
import shutil
import subprocess

import run as R
import tls_bench

MAX_IDLE_CLOSE_MS = 50      # issue 11's targets for the graceful shutdown
MAX_RETURN_AFTER_MS = 5
STOP_FLOOR_FACTOR = 1.15    # HTTP/1.1's stop_now target against the same floor (run.py)
H2LOAD_PER_SECOND = 25000   # h2load requests per "second" of a run (h2load_run)


def url(srv):
    return f"{srv.server.scheme}://127.0.0.1:{srv.port}/"


def h2load(argv, timeout):
    """Runs h2load; its output, once it is sure the requests went over HTTP/2 (h2load falls back
    to HTTP/1.1 when a TLS server does not select h2)."""
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    m = re.search(r"Application protocol: (\S+)", r.stdout)
    if r.returncode != 0 or not m:
        raise RuntimeError(f"h2load failed: {(r.stdout + r.stderr).strip()[-400:]}")
    if m.group(1) not in ("h2", "h2c"):
        raise RuntimeError(f"the server did not speak HTTP/2 (h2load: {m.group(1)})")
    return r.stdout


def h2_warm(srv):
    """A few hundred streams on two connections (lazy init / JIT), in HTTP/2: the h2c peers
    answer no HTTP/1.1."""
    out = h2load([shutil.which("h2load"), "-n", "400", "-c", "2", "-m", "10", url(srv)], 60)
    m = re.search(r"^requests: .*$", out, re.M)
    if not m or not re.search(r" 400 succeeded", m.group(0)):
        raise RuntimeError(f"h2 warm-up failed: {m.group(0) if m else out.strip()[-300:]}")


def h2c_servers(env, sluice):
    """The servers that speak h2c by prior knowledge (Go does not)."""
    servers = []
    if sluice:
        p = str(sluice)
        servers.append(R.Server(R.SUBJECT, lambda port, grace_ms, run_dir:
                                [p, "--port", str(port), "--grace-ms", str(grace_ms)], warm=h2_warm))
    if env.nginx:
        servers.append(R.nginx_server(env, "nginx", listen="http2", warm=h2_warm))
    if env.node:
        js = str(R.PEERS / "node" / "h2server.js")
        servers.append(R.Server("node", lambda port, grace_ms, run_dir:
                                [env.node, js, "--port", str(port), "--grace-ms", str(grace_ms)], warm=h2_warm))
    return servers


def h2load_run(env, srv, seconds, close):
    """h2load -c 50 -m 10 with wrk_run's figures (close: unused, HTTP/2 has no churn here).

    A request count (-n) rather than a duration (-D): with -D, h2load 1.52 sometimes never ends
    against a TLS server, and --warm-up-time would leave the server CPU we read covering more
    requests than h2load counts. `seconds` sets the count: seconds x H2LOAD_PER_SECOND requests."""
    argv = [shutil.which("h2load"), "-c50", "-m10", "-t1", "-n", str(seconds * H2LOAD_PER_SECOND), url(srv)]
    cpu0 = R.read_cpu_s(srv.pid)
    out = h2load(env.on_client_cpu(argv), seconds * 20 + 60)
    cpu = R.read_cpu_s(srv.pid) - cpu0
    m = re.search(r"finished in ([\d.]+)(s|ms), ([\d.]+) req/s", out)
    n = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, "
                  r"(\d+) timeout", out)
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    if not (m and n and codes):
        raise RuntimeError(f"h2load: unexpected output {out.strip()[-400:]}")
    if int(n.group(2)) == 0:
        raise RuntimeError(f"h2load: no request succeeded ({n.group(0)})")
    done = int(n.group(1))
    duration = float(m.group(1)) / (1000 if m.group(2) == "ms" else 1)
    return {"rps": float(m.group(3)), "requests": done, "duration_s": duration, "p99_ms": None,
            "socket_errors": sum(int(x) for x in n.groups()[2:]), "non_2xx": sum(int(x) for x in codes.groups()[1:]),
            "server_cpu_s": cpu, "server_cpu_pct": 100 * cpu / duration if duration else None,
            "cpu_s_per_100k": cpu * 100000 / done if done else None}


# --------------------------------------------------------------------------- measurements

def measure(env, res, sluice, go_peer, stop_latency, quick, rounds):
    plain = h2c_servers(env, sluice)
    over_tls = tls_bench.tls_servers(env, sluice, go_peer, h2=True, warm=h2_warm)
    R.log(f"[h2] h2c: {', '.join(s.name for s in plain)}; h2 over TLS: {', '.join(s.name for s in over_tls)}")
    seconds = 3 if quick else 10
    R.measure_wrk(env, plain, seconds, rounds, res, kinds=(("h2c_throughput", False),), client=h2load_run)
    R.measure_wrk(env, over_tls, seconds, rounds, res, kinds=(("h2_tls_throughput", False),), client=h2load_run)

    hello = [s for s in plain if s.hello_interface]   # nginx has no JSON stopped line
    measure_graceful(env, hello, 1000, 10, rounds, res)
    n = 1000 if quick else 5000

    def loadgen_h2(srv, n):
        return [env.loadgen, "hold", "--port", str(srv.port), "--conns", str(n), "--h2"]
    R.measure_memory(env, plain, n, rounds, res, key="h2c_memory", hold_argv=loadgen_h2)
    R.measure_memory(env, over_tls, n, rounds, res, key="h2_tls_memory", hold_argv=tls_bench.hold_argv("--tls", "--h2"))
    measure_stop(env, hello, n, stop_latency, rounds, res)


def measure_graceful(env, servers, n, inflight, rounds, res, slow_ms=2000, grace_ms=5000):
    """SIGTERM with n idle h2c connections and `inflight` connections with a /slow stream open."""
    runs = []
    for r in range(rounds):
        for server in R.rotated(servers, r):
            try:
                x = R.stop_run(env, server, n, "TERM", inflight=inflight, slow_ms=slow_ms, grace_ms=grace_ms,
                               timeout_ms=grace_ms + 10000, extra=["--h2"])
                lg, st = x["loadgen"], x["stopped"]
                f = {"server": server.name, "round": r,
                     "idle_last_ms": lg["idle"]["last_close_ms"] if lg["idle"]["closed"] == n else None,
                     "idle_goaway": n - lg["h2_idle"]["no_goaway"],
                     "slow_complete": lg["inflight"]["status_200"],
                     "slow_two_goaways": lg["h2_inflight"]["two_goaways"],
                     "slow_last_response_ms": lg["inflight"]["last_response_ms"],
                     "client_last_close_ms": lg["last_close_ms"], "server_ms": st["ms"],
                     "server_after_last_close_ms": st["ms"] - lg["last_close_ms"] if lg["last_close_ms"] else None,
                     "unclosed": lg["unclosed"], "loadgen": lg, "stopped": st}
                R.log(f"[h2 graceful round {r + 1}/{rounds}] {server.name}: idle closed by "
                      f"{R.fmt(f['idle_last_ms'], 1)} ms, slow {f['slow_complete']}/{inflight} complete, last close "
                      f"{R.fmt(f['client_last_close_ms'], 1)} ms, server {R.fmt(f['server_ms'], 1)} ms")
            except Exception as e:
                f = {"server": server.name, "round": r, "error": str(e)}
                R.log(f"[h2 graceful round {r + 1}/{rounds}] {server.name}: ERROR {e}")
            runs.append(f)
    summary = {}
    for server in servers:
        rs = [x for x in runs if x["server"] == server.name and "error" not in x]
        summary[server.name] = {"rounds": len(rs)}
        if rs:
            summary[server.name].update({k: R.median([x[k] for x in rs]) for k in
                                         ("idle_last_ms", "slow_last_response_ms", "client_last_close_ms",
                                          "server_ms", "server_after_last_close_ms")})
            # correctness figures: the worst round
            summary[server.name].update({k: min(x[k] for x in rs) for k in
                                         ("idle_goaway", "slow_complete", "slow_two_goaways")})
            summary[server.name]["unclosed"] = max(x["unclosed"] for x in rs)
    res["h2_graceful"] = {"n": n, "inflight": inflight, "slow_ms": slow_ms, "grace_ms": grace_ms,
                          "summary": summary, "runs": runs}


def measure_stop(env, servers, n, stop_latency, rounds, res):
    """stop_now() with n idle h2c connections: in-process against the bare close() floor
    (benchmarks/stop_latency --h2, its http2 row), and from outside with SIGINT for sluice and Node
    (the servers' own figures)."""
    rows = []
    if stop_latency:
        rows = R.run_json_rows(env, "h2 stop in-process", [stop_latency, "--conns", str(n), "--rounds",
                                                           str(max(3, rounds)), "--loadgen", env.loadgen, "--h2"], 1800)
    inproc = {row["server"]: row for row in rows}
    floor = inproc.get("http2") or R.inproc_row(res, n)
    runs = []
    for r in range(rounds):
        for server in R.rotated(servers, r):
            try:
                x = R.stop_run(env, server, n, "INT", extra=["--h2"])
                x["round"] = r
                R.log(f"[h2 stop N={n} round {r + 1}/{rounds}] {server.name}: server {R.fmt(x['stopped']['ms'], 2)} ms, "
                      f"client last close {R.fmt(x['loadgen']['last_close_ms'], 2)} ms, unclosed {x['loadgen']['unclosed']}")
            except Exception as e:
                x = {"server": server.name, "round": r, "error": str(e)}
                R.log(f"[h2 stop round {r + 1}/{rounds}] {server.name}: ERROR {e}")
            runs.append(x)
    summary = {}
    for server in servers:
        rs = [x for x in runs if x["server"] == server.name and "error" not in x]
        summary[server.name] = {"rounds": len(rs), "server_ms": R.median([x["stopped"]["ms"] for x in rs]),
                                "client_last_close_ms": R.median([x["loadgen"]["last_close_ms"] for x in rs]),
                                "unclosed": max((x["loadgen"]["unclosed"] for x in rs), default=None)}
    res["h2_stop"] = {"n": n, "floor_ms": floor["floor_ms"] if floor else None, "inproc": inproc.get("http2"),
                      "summary": summary, "runs": runs}


# --------------------------------------------------------------------------- targets and report

def targets(res):
    checks = []
    if R.SUBJECT not in res.get("meta", {}).get("servers", []):
        return {"h2": checks}
    t = res.get("h2c_throughput", {}).get("summary")
    if t:
        checks.append(R.ratio_check({"t": t}, "h2c req/s >= nginx", "t", "rps", "nginx", 1.0, "higher"))
        checks.append(R.ratio_check({"t": t}, "h2c CPU s/100k req <= nginx", "t", "cpu_s_per_100k", "nginx", 1.0, "le"))
    t = res.get("h2_tls_throughput", {}).get("summary")
    if t:
        checks.append(R.ratio_check({"t": t}, "h2 over TLS CPU s/100k req <= 1.1x nginx (issue 12)", "t",
                                    "cpu_s_per_100k", "nginx", 1.1, "le"))
    g = res.get("h2_graceful")
    if g:
        s = g["summary"].get(R.SUBJECT, {})
        k = g["inflight"]
        if s.get("rounds"):
            v, d = s["idle_last_ms"], s["server_after_last_close_ms"]
            checks += [{"target": f"h2 graceful: {g['n']} idle closed within {MAX_IDLE_CLOSE_MS} ms",
                        "value": f"{R.fmt(v, 1)} ms" if v is not None else "not all closed",
                        "met": v is not None and v <= MAX_IDLE_CLOSE_MS},
                       {"target": f"h2 graceful: {k}/{k} streams complete", "value": f"{s['slow_complete']}/{k}",
                        "met": s["slow_complete"] == k},
                       {"target": f"h2 graceful: returns within {MAX_RETURN_AFTER_MS} ms of the last close",
                        "value": f"{R.fmt(d, 1)} ms", "met": d is not None and d <= MAX_RETURN_AFTER_MS}]
        else:
            checks.append({"target": "h2 graceful shutdown", "value": R.NO_DATA, "met": False})
    st = res.get("h2_stop")
    if st and st.get("inproc"):
        row = st["inproc"]
        checks.append({"target": f"h2 stop_now N={st['n']} <= {STOP_FLOOR_FACTOR}x bare close floor (in-process)",
                       "value": f"{row['ratio']:.2f}x ({R.fmt(row['stop_now_ms'], 2)} vs floor {R.fmt(row['floor_ms'], 2)} ms)",
                       "met": row["ratio"] <= STOP_FLOOR_FACTOR})
    elif st:
        ms, floor = st["summary"].get(R.SUBJECT, {}).get("server_ms"), st["floor_ms"]
        checks.append({"target": f"h2 stop_now N={st['n']} <= {STOP_FLOOR_FACTOR}x bare close floor",
                       "value": R.NO_DATA if ms is None else (f"{ms / floor:.2f}x ({R.fmt(ms, 2)} vs floor "
                                                              f"{R.fmt(floor, 2)} ms)" if floor else f"{R.fmt(ms, 2)} ms, no floor"),
                       "met": None if ms is not None and not floor else ms is not None and ms <= STOP_FLOOR_FACTOR * floor})
    return {"h2": checks}


def render(res):
    L = []
    for key, title in (("h2c_throughput", "h2c (prior knowledge)"), ("h2_tls_throughput", "h2 over TLS (ALPN)")):
        t = res.get(key)
        if t:
            L.append(f"## HTTP/2 throughput, {title}: h2load -c 50 -m 10\n")
            L.append(f"h2load -c50 -m10 -t1 -n{t['seconds'] * H2LOAD_PER_SECOND}, `GET /`; server pinned to one CPU, CPU = its "
                     f"utime+stime during the run.\n")
            L.append(R.table(["server", "req/s", "x nginx", "CPU s / 100k req", "x nginx", "server CPU busy %",
                              "req/s, all rounds", "failed", "non-2xx"],
                             [[n, R.fmt(s.get("rps"), 0), tls_bench.ratio_to(t["summary"], n, "nginx", "rps"),
                               R.fmt(s.get("cpu_s_per_100k"), 3),
                               tls_bench.ratio_to(t["summary"], n, "nginx", "cpu_s_per_100k"),
                               R.fmt(s.get("server_cpu_pct"), 0), ", ".join(R.fmt(x, 0) for x in s.get("rps_all", [])),
                               s.get("socket_errors", "n/a"), s.get("non_2xx", "n/a")] for n, s in t["summary"].items()]))
            L.append("")
    g = res.get("h2_graceful")
    if g:
        k = g["inflight"]
        L.append(f"## HTTP/2 graceful shutdown (SIGTERM, grace {g['grace_ms']} ms)\n")
        L.append(f"loadgen idle --h2: {g['n']} idle h2c connections (each did one GET /) and {k} connections with a "
                 f"GET /slow?ms={g['slow_ms']} stream open; ms after the signal, medians (x/{k}: the worst round). "
                 f"GOAWAY columns: connections that received one (idle) / two, the two-phase shutdown (in flight).\n")
        L.append(R.table(["server", "idle last close ms", "idle with GOAWAY", "streams complete", "in flight with 2 GOAWAYs",
                          "last stream response ms", "client last close ms", "server ms", "server - last close ms",
                          "unclosed"],
                         [[n, R.fmt(s.get("idle_last_ms"), 1), f"{s.get('idle_goaway', 'n/a')}/{g['n']}",
                           f"{s.get('slow_complete', 'n/a')}/{k}", f"{s.get('slow_two_goaways', 'n/a')}/{k}",
                           R.fmt(s.get("slow_last_response_ms"), 1), R.fmt(s.get("client_last_close_ms"), 1),
                           R.fmt(s.get("server_ms"), 1), R.fmt(s.get("server_after_last_close_ms"), 1),
                           s.get("unclosed", "n/a")] for n, s in g["summary"].items()]))
        L.append("")
    mems = [k for k in ("h2c_memory", "h2_tls_memory") if k in res]
    if mems:
        L.append(f"## HTTP/2: memory per idle connection (N={res[mems[0]]['n']})\n")
        L.append("(VmRSS with N idle HTTP/2 connections, each did one stream, - VmRSS before) / N; h2c held by "
                 "`loadgen hold --h2`, h2 over TLS by benchmarks/hold.py --tls --h2.\n")
        rows = []
        for k in mems:
            summary = res[k]["summary"]
            rows += [[n, "h2c" if k == "h2c_memory" else "h2 / TLS", R.fmt(s.get("bytes_per_conn"), 0),
                      tls_bench.ratio_to(summary, n, "nginx", "bytes_per_conn")] for n, s in summary.items()]
        L.append(R.table(["server", "protocol", "B / conn", "x nginx"], rows))
        L.append("")
    st = res.get("h2_stop")
    if st:
        L.append(f"## HTTP/2: stop_now (SIGINT) with {st['n']} idle h2c connections\n")
        L.append(f"Server ms: the server's own figure, signal to everything closed. Floor: bare close() of as many "
                 f"accepted sockets (benchmarks/stop_latency, in-process): {R.fmt(st['floor_ms'], 2)} ms.\n")
        row = st.get("inproc")
        if row:
            L.append(f"In-process (benchmarks/stop_latency --h2, medians of {row['rounds']} rounds): sluice::http::server "
                     f"stop_now() {R.fmt(row['stop_now_ms'], 2)} ms, {row['ratio']:.2f}x the floor, "
                     f"{R.fmt(row['us_per_conn'], 2)} µs and {R.fmt(row['heap_bytes_per_conn'], 0)} heap bytes per idle "
                     f"h2c connection.\n")
        L.append(R.table(["server", "server ms", "x floor", "client last close ms", "unclosed"],
                         [[n, R.fmt(s["server_ms"], 2),
                           f"{s['server_ms'] / st['floor_ms']:.2f}" if s["server_ms"] and st["floor_ms"] else "n/a",
                           R.fmt(s["client_last_close_ms"], 2), R.fmt(s["unclosed"])] for n, s in st["summary"].items()]))
        L.append("")
    return L + tls_bench.render_errors(res, "h2")
