"""`bench/run.py --profile`: where one serve process spends its time.

1. py-spy samples the plain server (LOG_LEVEL as for the bench) under each scenario's
   load; the raw stacks are summarised as self time by library/module, self time by
   function and inclusive time by function.
2. bench/instrumented_serve.py counts MariaDB round trips (and pool check-outs and
   resets) per request for the same scenarios, with a fixed number of requests.

Writes bench/results/<date>-profile.json and the PROFILE block of bench/README.md.
"""

from __future__ import annotations

import collections
import json
import re
import shutil
import signal
import subprocess
import sys
import time

import run as bench  # bench/run.py

PROFILED = ("grpc-create-fresh", "grpc-get", "http-create-fresh", "http-get", "grpc-list", "grpc-create-replay")
FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def py_spy() -> str:
    found = shutil.which("py-spy") or str(bench.Path(sys.executable).parent / "py-spy")
    if not bench.Path(found).exists():
        bench.log("installing py-spy into the venv")
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "py-spy"], check=True)
    return found


def component(path: str, func: str) -> str:
    """A library or payments_svc module name for a frame's file."""
    p = path.replace("\\", "/")
    if "payments_svc/" in p:
        return "payments_svc." + p.split("payments_svc/", 1)[1].removesuffix(".py").replace("/", ".")
    for marker in ("site-packages/", "dist-packages/"):
        if marker in p:
            return p.split(marker, 1)[1].split("/", 1)[0].removesuffix(".py")
    if "/lib/python3" in p:
        rest = p.split("/lib/python3", 1)[1].split("/", 1)[1] if "/" in p.split("/lib/python3", 1)[1] else p
        return "stdlib." + rest.split("/", 1)[0].removesuffix(".py")
    if p.endswith(".pyx") or p.endswith(".pxi"):
        return "grpc(cython)"
    return p or func


SKIP_COMPONENTS = {"click/core.py", "click/decorators.py", "asyncio/runners.py", "<frozen runpy>", "payments_svc.cli",
                   "payments_svc.__main__"}
SKIP_FUNCTIONS = {"BaseEventLoop.run_until_complete", "BaseEventLoop.run_forever", "BaseEventLoop._run_once", "Handle._run",
                  "Thread._bootstrap", "Thread._bootstrap_inner", "<module>"}


def group(func: str, comp: str) -> str:
    """A coarse owner for a leaf frame's self time."""
    if comp.startswith("sqlalchemy") or comp.startswith("greenlet"):
        return "SQLAlchemy (incl. its asyncio/greenlet adapter)"
    if comp.startswith(("asyncmy", "aiomysql", "pymysql")):
        return "MySQL driver (asyncmy; aiomysql, PyMySQL)"
    if func == "_SelectorSocketTransport.write":
        return "socket send() in asyncio's transport (includes time preempted there)"
    if func == "Handle._run" or comp == "threading.py":
        return "gRPC C-core/Cython (self time of Handle._run and of grpc's threads)"
    if comp.startswith("asyncio") or comp in ("selectors.py", "socket.py"):
        return "asyncio event loop, streams, selectors"
    if comp.startswith(("aiohttp", "multidict", "yarl")):
        return "aiohttp"
    if comp.startswith("payments_svc"):
        return "payments_svc code"
    if comp.startswith(("google", "grpc")):
        return "protobuf / grpc Python"
    if comp.startswith("structlog") or comp.startswith("logging"):
        return "logging (structlog)"
    if comp.startswith(("json", "enum", "uuid", "hashlib", "datetime", "dataclasses")):
        return "stdlib conversions (json, enum, uuid, hashlib, datetime, dataclasses)"
    return "other"


def parse_frame(frame: str) -> tuple[str, str]:
    m = FRAME.match(frame.strip())
    if not m:
        return frame.strip(), ""
    return m["func"], m["file"] or ""


def summarise(raw_path) -> dict:
    self_func = collections.Counter()
    self_comp = collections.Counter()
    incl_func = collections.Counter()
    incl_comp = collections.Counter()
    self_group = collections.Counter()
    total = 0
    for line in open(raw_path):
        line = line.rstrip("\n")
        if not line:
            continue
        stack, _, n = line.rpartition(" ")
        try:
            n = int(n)
        except ValueError:
            continue
        frames = [f for f in stack.split(";") if f and not f.startswith("process ") and not f.startswith("thread ")]
        if not frames:
            continue
        total += n
        func, path = parse_frame(frames[-1])
        comp = component(path, func)
        self_func[f"{func} ({comp})"] += n
        self_comp[comp] += n
        self_group[group(func, comp)] += n
        seen_f, seen_c = set(), set()
        for frame in frames:
            f, pth = parse_frame(frame)
            c = component(pth, f)
            key = f"{f} ({c})"
            if c in SKIP_COMPONENTS or f in SKIP_FUNCTIONS:
                continue
            if key not in seen_f:
                incl_func[key] += n
                seen_f.add(key)
            if c not in seen_c:
                incl_comp[c] += n
                seen_c.add(c)

    def top(counter, k):
        return [(name, round(100 * v / total, 1)) for name, v in counter.most_common(k)] if total else []

    return {"samples": total, "self_by_group": top(self_group, 12), "self_by_component": top(self_comp, 25), "self_by_function": top(self_func, 30),
            "inclusive_by_function": top(incl_func, 60), "inclusive_by_component": top(incl_comp, 40)}


def scenario_map(args, api_key, fixtures, tag):
    fast, _ = bench.build_scenarios(args, api_key, fixtures, tag)
    return {s.key: s for s in fast}


def run_profile(args, env, db, api_key, tag, servers, today) -> int:
    spy = py_spy()
    seconds = max(5, int(args.duration))
    out = {"date": today, "machine": bench.machine_info(db), "settings": vars(args), "profiles": {}, "round_trips": {}}

    # 1. py-spy on the plain server.
    server = bench.ServerProcess(env, 1, 0, f"profile-{tag}")
    servers.append(server)
    server.start()
    fixtures = bench.make_fixtures(server, api_key, tag)
    db.seed_rows(args.seed_rows)
    specs = scenario_map(args, api_key, fixtures, tag + "py")
    for key in PROFILED:
        spec = specs[key]
        raw = bench.TMP / f"pyspy-{key}.txt"
        cfg = bench.loadgen_config(spec, server, args)
        cfg.update(warmup_s=args.warmup, duration_s=seconds + 1)
        bench.log(f"py-spy: {key} ({spec.connections}x{spec.streams} in flight, {seconds} s)")
        gen = bench.start_loadgen(cfg)
        time.sleep(args.warmup)
        spy_proc = subprocess.run([spy, "record", "--pid", str(server.proc.pid), "--duration", str(seconds), "--rate", "200",
                                   "--format", "raw", "--output", str(raw), "--nonblocking"], capture_output=True, text=True)
        res = bench.finish_loadgen(gen, seconds + 120)
        if spy_proc.returncode != 0:
            bench.log(f"py-spy failed: {spy_proc.stderr[-500:]}")
            out["profiles"][key] = {"error": spy_proc.stderr[-2000:]}
            continue
        summary = summarise(raw)
        summary["load"] = {k: res[k] for k in ("ok_rps", "p50_ms", "p99_ms", "errors")}
        out["profiles"][key] = summary
        bench.log(f"  {res['ok_rps']:.0f} req/s under py-spy; top self: "
                  + ", ".join(f"{n} {p}%" for n, p in summary["self_by_component"][:6]))
    server.stop()

    # The slow provider: 256 creates in flight, each waiting 250 ms outside any transaction.
    slow_server = bench.ServerProcess(env, 1, args.slow_delay_ms, f"profile-slow-{tag}")
    servers.append(slow_server)
    slow_server.start()
    _, slow = bench.build_scenarios(args, api_key, fixtures, tag + "ps")
    spec = slow[0]
    raw = bench.TMP / f"pyspy-{spec.key}.txt"
    cfg = bench.loadgen_config(spec, slow_server, args)
    cfg.update(warmup_s=args.warmup + 2, duration_s=seconds + 1)
    bench.log(f"py-spy: {spec.key} ({spec.connections}x{spec.streams} in flight, provider {args.slow_delay_ms} ms, {seconds} s)")
    gen = bench.start_loadgen(cfg)
    time.sleep(args.warmup + 2)
    spy_proc = subprocess.run([spy, "record", "--pid", str(slow_server.proc.pid), "--duration", str(seconds), "--rate", "200",
                               "--format", "raw", "--output", str(raw), "--nonblocking"], capture_output=True, text=True)
    res = bench.finish_loadgen(gen, seconds + 120)
    if spy_proc.returncode == 0:
        summary = summarise(raw)
        summary["load"] = {k: res[k] for k in ("ok_rps", "p50_ms", "p99_ms", "errors")}
        out["profiles"][spec.key] = summary
        bench.log(f"  {res['ok_rps']:.0f} req/s under py-spy; top self: "
                  + ", ".join(f"{n} {p}%" for n, p in summary["self_by_component"][:6]))
    slow_server.stop()

    # 2. Round trips per request on the instrumented server.
    counts_file = bench.TMP / f"roundtrips-{tag}.jsonl"
    counts_file.unlink(missing_ok=True)
    inst = bench.ServerProcess(dict(env, BENCH_COUNTS_FILE=str(counts_file)), 1, 0, f"instrumented-{tag}",
                               command=[sys.executable, str(bench.BENCH / "instrumented_serve.py")])
    servers.append(inst)
    inst.start()
    specs = scenario_map(args, api_key, fixtures, tag + "rt")
    n_requests = 400
    for key in PROFILED:
        spec = specs[key]
        cfg = bench.loadgen_config(spec, inst, args)
        cfg.update(warmup_s=0, duration_s=0, max_requests=n_requests, connections=min(spec.connections, 4),
                   streams=min(spec.streams, 4))
        before = sum(1 for _ in open(counts_file)) if counts_file.exists() else 0
        inst.proc.send_signal(signal.SIGUSR1)  # reset
        _wait_lines(counts_file, before + 1)
        res = bench.run_loadgen(cfg, timeout=300)
        inst.proc.send_signal(signal.SIGUSR1)  # dump
        _wait_lines(counts_file, before + 2)
        snap = json.loads(open(counts_file).read().splitlines()[before + 1])
        ok = res["all_outcomes"].get("ok", 0) or 1
        per = {k: round(v / ok, 2) for k, v in sorted(snap["counts"].items())}
        stmts = {k: round(v / ok, 2) for k, v in sorted(snap["statements"].items(), key=lambda kv: -kv[1])}
        out["round_trips"][key] = {"requests_ok": res["all_outcomes"].get("ok", 0), "outcomes": res["all_outcomes"],
                                   "per_request": per, "statements_per_request": stmts}
        bench.log(f"round trips {key}: {per.get('round_trips')} per request; " + ", ".join(
            f"{k}={v}" for k, v in per.items() if k != "round_trips"))
    inst.stop()

    path = bench.RESULTS / f"{today}-profile.json"
    path.write_text(json.dumps(out, indent=1, default=str).replace(api_key, "<api key>") + "\n")
    bench.log(f"wrote {path.relative_to(bench.REPO)}")
    text = render(out, path)
    print(text)
    if not args.no_readme:
        readme = bench.README.read_text() if bench.README.exists() else "# Benchmarks\n"
        bench.README.write_text(bench.replace_block(readme, bench.PROF_BEGIN, bench.PROF_END, text))
    return 0


def _wait_lines(path, n, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and sum(1 for _ in open(path)) >= n:
            return
        time.sleep(0.05)
    raise RuntimeError(f"the instrumented server did not write its counts to {path}")


def render(out: dict, path) -> str:
    lines = [f"Profile of {out['date']} (one serve process, py-spy 200 Hz, raw stacks in bench/results/tmp/; "
             f"figures: `{path.relative_to(bench.BENCH)}`).", ""]
    lines += ["MariaDB round trips per successful request (bench/instrumented_serve.py wraps the driver):", "",
              "| scenario | round trips | SELECT | INSERT | UPDATE | COMMIT | ROLLBACK | SET AUTOCOMMIT | pool check-outs | pool resets |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for key, rt in out["round_trips"].items():
        p = rt["per_request"]
        setac = sum(v for k, v in p.items() if k.startswith("sql.SET AUTOCOMMIT") or k.startswith("sql.SET autocommit"))
        lines.append(f"| {key} | {p.get('round_trips', 0)} | {p.get('sql.SELECT', 0)} | {p.get('sql.INSERT', 0)} | "
                     f"{p.get('sql.UPDATE', 0)} | {p.get('sql.COMMIT', 0)} | {p.get('sql.ROLLBACK', 0)} | {setac} | "
                     f"{p.get('pool.checkout', 0)} | {p.get('pool.reset_on_return', 0)} |")
    for key, prof in out["profiles"].items():
        if "error" in prof:
            lines += ["", f"**{key}**: py-spy failed: {prof['error'][:200]}"]
            continue
        load = prof["load"]
        lines += ["", f"**{key}** — {load['ok_rps']:.0f} req/s while sampled, {prof['samples']} samples. "
                  "Self time by owner: " + "; ".join(f"{n} {p}%" for n, p in prof["self_by_group"]) + "."]
        lines += ["", "| inclusive % | function (module) |", "|---:|---|"]
        for name, pct in prof["inclusive_by_function"][:12]:
            lines.append(f"| {pct} | `{name}` |")
    return "\n".join(lines)
