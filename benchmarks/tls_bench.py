"""TLS benchmarks (issue 12), run by benchmarks/run.py (`--only tls`): sluice's hello_server --tls
against nginx (`ssl`), Go net/http and Node `https`, all on one RSA-2048 certificate made for the
run (what issue 12 measured with), TLS 1.3 (what every client here negotiates).

- memory per idle TLS keep-alive connection (each did one request) at 3,000 and 9,000 (hold.py --tls)
- stop_now() with 1,000 and 9,000 idle TLS connections against plain HTTP (benchmarks/tls_stop)
- full and resumed handshakes per second, one connection at a time (openssl s_time -new / -reuse)
- keep-alive throughput and CPU per 100k requests, and a new connection per request under load
  (wrk over https, keep-alive and Connection: close)

Figures are medians over rounds with the servers interleaved, as everywhere in run.py.
"""

import re
import subprocess
import sys
import time

import run as R

HOLD = R.HERE / "hold.py"
MAX_BYTES_PER_CONN = 10240   # issue 12's target (nginx measured 14,198)


def certificate(env):
    """The run's self-signed RSA-2048 certificate and key (PEM files in the run directory)."""
    cert, key = env.tmp / "cert.pem", env.tmp / "key.pem"
    if not cert.exists():
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                        "-out", str(cert), "-days", "7", "-subj", "/CN=localhost"], check=True, capture_output=True)
    return str(cert), str(key)


def tls_warm(srv):
    R.warm_up(srv.port, tls=True)


def tls_servers(env, sluice, go_peer, h2=False, warm=tls_warm):
    """The HTTPS servers. h2=False: HTTP/1.1 (Node `https`); h2=True: h2 by ALPN where the peer
    has it (nginx `ssl http2`, Node `http2`; Go and sluice offer h2 over TLS anyway)."""
    cert, key = certificate(env)
    https = {"scheme": "https", "warm": warm}
    servers = []
    if sluice:
        p = str(sluice)
        servers.append(R.Server(R.SUBJECT, lambda port, grace_ms, run_dir:
                                [p, "--port", str(port), "--grace-ms", str(grace_ms), "--tls", cert, key], **https))
    if env.nginx:
        servers.append(R.nginx_server(env, "nginx", listen="ssl http2" if h2 else "ssl",
                                      server_lines=f"ssl_certificate {cert}; ssl_certificate_key {key};", **https))
    if go_peer:
        servers.append(R.Server("go", lambda port, grace_ms, run_dir:
                                [go_peer, "--port", str(port), "--grace-ms", str(grace_ms), "--cert", cert,
                                 "--key", key], **https))
    if env.node:
        js = str(R.PEERS / "node" / ("h2server.js" if h2 else "server.js"))
        servers.append(R.Server("node", lambda port, grace_ms, run_dir:
                                [env.node, js, "--port", str(port), "--grace-ms", str(grace_ms), "--tls", cert, key],
                                **https))
    return servers


def hold_argv(*flags):
    """hold.py's argv for measure_memory (loadgen does not speak TLS)."""
    return lambda srv, n: [sys.executable, str(HOLD), "--port", str(srv.port), "--conns", str(n), *flags]


# --------------------------------------------------------------------------- measurements

def measure(env, res, sluice, go_peer, tls_stop, quick, rounds):
    servers = tls_servers(env, sluice, go_peer)
    R.log(f"[tls] servers: {', '.join(s.name for s in servers)}")
    ns = [1000] if quick else [3000, 9000]
    for n in ns:
        R.measure_memory(env, servers, n, rounds, res, key=f"tls_memory_{n}", hold_argv=hold_argv("--tls"))
    if tls_stop:
        rows = []
        for n in [1000] if quick else [1000, 9000]:
            rows += R.run_json_rows(env, f"tls stop N={n}", [tls_stop, "--conns", str(n), "--rounds",
                                                             str(3 if quick else 5)], 1800)
        res["tls_stop_ns"] = {"rows": rows}
    measure_handshakes(env, servers, 2 if quick else 5, rounds, res)
    if env.wrk:
        R.measure_wrk(env, servers, 3 if quick else 10, rounds, res,
                      kinds=(("tls_throughput", False), ("tls_churn", True)))


def s_time(env, srv, mode, seconds):
    """openssl s_time -new (a full handshake per connection) or -reuse (resumption): one
    connection at a time, each a GET / then close. The rate is over our own wall clock (s_time
    prints whole seconds); resumed: the share of connections OpenSSL reports as resumed."""
    argv = ["openssl", "s_time", "-connect", f"127.0.0.1:{srv.port}", f"-{mode}", "-time", str(seconds), "-www", "/"]
    cpu0, t0 = R.read_cpu_s(srv.pid), time.monotonic()
    r = subprocess.run(env.on_client_cpu(argv), capture_output=True, text=True, timeout=seconds + 60)
    wall, cpu = time.monotonic() - t0, R.read_cpu_s(srv.pid) - cpu0
    m = re.search(r"(\d+) connections in [\d.]+s;", r.stdout)
    if r.returncode != 0 or not m:
        raise RuntimeError(f"s_time -{mode} failed: {(r.stdout + r.stderr).strip()[-300:]}")
    n = int(m.group(1))
    marks = "".join(re.findall(r"^[r*]+$", r.stdout, re.M))   # one mark per connection: r = resumed
    return {"per_second": n / wall, "connections": n, "server_cpu_ms_per_handshake": cpu * 1e3 / n,
            "resumed_share": marks.count("r") / len(marks) if marks else None}


def measure_handshakes(env, servers, seconds, rounds, res):
    runs = []
    for r in range(rounds):
        for server in R.rotated(servers, r):
            try:
                srv = R.Running(env, server)
                try:
                    tls_warm(srv)
                    for mode in ("new", "reuse"):
                        x = s_time(env, srv, mode, seconds)
                        x.update(server=server.name, round=r, mode=mode)
                        runs.append(x)
                        R.log(f"[tls handshakes -{mode} round {r + 1}/{rounds}] {server.name}: "
                              f"{x['per_second']:,.0f}/s, server CPU {x['server_cpu_ms_per_handshake']:.3f} ms each, "
                              f"resumed {R.fmt(x['resumed_share'], 2)}")
                    srv.stop(R.signal.SIGINT)
                finally:
                    srv.kill()
            except Exception as e:
                runs.append({"server": server.name, "round": r, "error": str(e)})
                R.log(f"[tls handshakes round {r + 1}/{rounds}] {server.name}: ERROR {e}")
    summary = {}
    for mode in ("new", "reuse"):
        for server in servers:
            rs = [x for x in runs if x.get("mode") == mode and x["server"] == server.name]
            summary.setdefault(mode, {})[server.name] = {
                "per_second": R.median([x["per_second"] for x in rs]),
                "per_second_all": [x["per_second"] for x in rs],
                "server_cpu_ms_per_handshake": R.median([x["server_cpu_ms_per_handshake"] for x in rs]),
                "resumed_share": min((x["resumed_share"] for x in rs if x["resumed_share"] is not None), default=None),
                "rounds": len(rs)}
    res["tls_handshakes"] = {"seconds": seconds, "summary": summary, "runs": runs}


# --------------------------------------------------------------------------- targets and report

def targets(res):
    checks = []
    if R.SUBJECT not in res.get("meta", {}).get("servers", []):
        return {"tls": checks}
    for key in sorted(k for k in res if k.startswith("tls_memory_")):
        m = res[key]
        v = m["summary"].get(R.SUBJECT, {}).get("bytes_per_conn")
        checks.append({"target": f"<= {MAX_BYTES_PER_CONN:,} B per idle TLS connection (N={m['n']})",
                       "value": R.NO_DATA if v is None else f"{R.fmt(v, 0)} B", "met": v is not None and v <= MAX_BYTES_PER_CONN})
        checks.append(R.ratio_check({"m": m["summary"]}, f"B/conn < nginx (N={m['n']})", "m", "bytes_per_conn",
                                    "nginx", 1, "lt"))
    rows = res.get("tls_stop_ns", {}).get("rows", [])
    for t in (row for row in rows if row["server"] == "tls"):
        checks.append({"target": f"TLS stop_now N={t['n']} <= 1.2x plain HTTP", "value": f"{t['ratio_to_plain']:.2f}x",
                       "met": t["ratio_to_plain"] <= 1.2})
    h = res.get("tls_handshakes", {}).get("summary", {})
    for mode, what in (("new", "full"), ("reuse", "resumed")):
        if mode in h:
            checks.append(R.ratio_check({"h": h[mode]}, f"{what} handshakes/s >= nginx", "h", "per_second", "nginx",
                                        1.0, "higher"))
    t = res.get("tls_throughput", {}).get("summary")
    if t:
        checks.append(R.ratio_check({"t": t}, "https keep-alive CPU s/100k req <= 1.1x nginx", "t", "cpu_s_per_100k",
                                    "nginx", 1.1, "le"))
    return {"tls": checks}


def render(res):
    L = []
    mems = sorted((k for k in res if k.startswith("tls_memory_")), key=lambda k: res[k]["n"])
    if mems:
        L.append("## TLS: memory per idle keep-alive connection\n")
        L.append("(VmRSS with N idle TLS 1.3 connections, each did one GET /, held by benchmarks/hold.py - VmRSS "
                 f"before) / N. Target: <= {MAX_BYTES_PER_CONN:,} B (issue 12 measured nginx at 14,198).\n")
        names = list(res[mems[0]]["summary"])
        rows = []
        for name in names:
            row = [name]
            for k in mems:
                row.append(R.fmt(res[k]["summary"].get(name, {}).get("bytes_per_conn"), 0))
                row.append(ratio_to(res[k]["summary"], name, "nginx", "bytes_per_conn"))
            rows.append(row)
        L.append(R.table(["server"] + [h for k in mems for h in (f"B / conn N={res[k]['n']}", "x nginx")], rows))
        L.append("")
    rows = res.get("tls_stop_ns", {}).get("rows", [])
    if rows:
        L.append("## TLS: stop_now() with idle HTTPS connections against plain HTTP (benchmarks/tls_stop)\n")
        L.append(R.table(["N", "server", "stop_now ms", "ratio to plain", "µs per connection", "heap B per idle connection"],
                         [[r["n"], r["server"], R.fmt(r["stop_now_ms"], 2), f"{r['ratio_to_plain']:.2f}",
                           R.fmt(r["us_per_conn"], 2), R.fmt(r["heap_bytes_per_conn"], 0)] for r in rows]))
        L.append("")
    h = res.get("tls_handshakes")
    if h:
        L.append("## TLS: handshakes per second (openssl s_time, one connection at a time)\n")
        L.append(f"`openssl s_time -new` (a full handshake each: ECDHE, RSA-2048 signature) and `-reuse` (resumed), "
                 f"{h['seconds']} s per run, each connection one GET / then close; rate over the run's wall clock. "
                 f"Sequential: a latency figure (client and server alternate), not the server's capacity.\n")
        rows = []
        for name in h["summary"].get("new", {}):
            row = [name]
            for mode in ("new", "reuse"):
                s = h["summary"][mode][name]
                row += [R.fmt(s["per_second"], 0), ratio_to(h["summary"][mode], name, "nginx", "per_second"),
                        R.fmt(s["server_cpu_ms_per_handshake"], 3)]
            row.append(R.fmt(h["summary"]["reuse"][name]["resumed_share"], 2))
            rows.append(row)
        L.append(R.table(["server", "full / s", "x nginx", "server CPU ms / full", "resumed / s", "x nginx",
                          "server CPU ms / resumed", "share resumed (-reuse)"], rows))
        L.append("")
    for kind, title in (("tls_throughput", "keep-alive (wrk over https, `GET /`)"),
                        ("tls_churn", "a new connection per request under load (wrk over https, "
                                      "`Connection: close`)")):
        t = res.get(kind)
        if t:
            L.append(f"## TLS: {title}\n")
            L.append(f"wrk -t1 -c{t['connections']} -d{t['seconds']}s; server pinned to one CPU, CPU = its "
                     f"utime+stime during the run." + (" wrk reconnects with SSL_clear, which keeps the last "
                     "session: a server that resumes it does a resumed handshake per request, one that does "
                     "not a full one (compare CPU per request with the s_time table)." if kind == "tls_churn" else "")
                     + "\n")
            L.append(R.table(["server", "req/s", "x nginx", "CPU s / 100k req", "x nginx", "server CPU busy %",
                              "req/s, all rounds", "errors"],
                             [[n, R.fmt(s.get("rps"), 0), ratio_to(t["summary"], n, "nginx", "rps"),
                               R.fmt(s.get("cpu_s_per_100k"), 3), ratio_to(t["summary"], n, "nginx", "cpu_s_per_100k"),
                               R.fmt(s.get("server_cpu_pct"), 0), ", ".join(R.fmt(x, 0) for x in s.get("rps_all", [])),
                               s.get("socket_errors", "n/a")] for n, s in t["summary"].items()]))
            L.append("")
    return L + render_errors(res, "tls_")


def render_errors(res, prefix):
    """The failed runs of the sections whose results key starts with prefix, counted."""
    errors = {}
    for key in (k for k in res if k.startswith(prefix)):
        for run in res[key].get("runs", []) if isinstance(res[key], dict) else []:
            if "error" in run:
                k = (key, run["server"], run["error"][:300].replace("|", "\\|").replace("\n", " "))
                errors[k] = errors.get(k, 0) + 1
    if not errors:
        return []
    return [f"### Errors ({prefix.rstrip('_')})\n", R.table(["measurement", "server", "error", "runs"],
                                                  [[*k, v] for k, v in errors.items()]), ""]


def ratio_to(summary, name, other, metric):
    """name's figure over other's, as a table cell."""
    a, b = summary.get(name, {}).get(metric), summary.get(other, {}).get(metric)
    return f"{a / b:.2f}" if a is not None and b else "n/a"
