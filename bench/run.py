#!/usr/bin/env python3
"""`make bench`: throughput and latency of `payments-svc serve` on MariaDB, measured
against the ceiling of its own stack (a no-work RPC / route), in one run.

For each `serve --processes N` (default 1 and 2): a fresh MariaDB database, migrated,
an API key, the server with the sandbox provider (LOG_LEVEL=warning), then each
scenario over gRPC and HTTP; the same again with the sandbox provider taking 250 ms.
Writes bench/results/<date>.json (every raw figure) and regenerates the table in
bench/README.md between its GENERATED markers.

Generators: h2load (nghttp2-client) for fixed requests; bench/loadgen.js (Node) where
every request needs its own request_id (fresh creates), for the open-loop GetPayment
probe, and for short verification runs that read the gRPC status from the trailers.

`--profile` instead runs py-spy against one server process under fresh creates and
GetPayment, counts the MariaDB round trips per request (bench/instrumented_serve.py),
and writes bench/results/<date>-profile.json plus the PROFILE block of the README.
"""

from __future__ import annotations

import argparse
import base64
import collections
import datetime as dt
import hashlib
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
RESULTS = BENCH / "results"
TMP = RESULTS / "tmp"
README = BENCH / "README.md"
LOADGEN = BENCH / "loadgen.js"
PY = sys.executable
HZ = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024

MYSQL_HOST = os.environ.get("TEST_MYSQL_HOST", "127.0.0.1")
MYSQL_PORT = int(os.environ.get("TEST_MYSQL_PORT", "3306"))
MYSQL_USER = os.environ.get("TEST_MYSQL_USER", "root")
MYSQL_PASSWORD = os.environ.get("TEST_MYSQL_PASSWORD", "")
PG_HOST = os.environ.get("TEST_POSTGRES_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("TEST_POSTGRES_PORT", "5432"))
PG_USER = os.environ.get("TEST_POSTGRES_USER", "postgres")
PG_PASSWORD = os.environ.get("TEST_POSTGRES_PASSWORD", "")

CALLER = "bench"
CALLBACK_URL = "https://shop.internal/payments/callback"
COUNTER_WIDTH = 12

GEN_BEGIN, GEN_END = "<!-- BEGIN GENERATED: bench/run.py rewrites this block -->", "<!-- END GENERATED -->"
PG_BEGIN = "<!-- BEGIN GENERATED POSTGRESQL: bench/run.py --backend postgresql rewrites this block -->"
PG_END = "<!-- END GENERATED POSTGRESQL -->"
PROF_BEGIN, PROF_END = "<!-- BEGIN PROFILE: bench/run.py --profile rewrites this block -->", "<!-- END PROFILE -->"


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------------------------
# the database server: MariaDB (the reference's), or PostgreSQL with --backend postgresql


class MariaDB:
    name = "MariaDB"
    processes = ("mariadbd", "mysqld")

    def __init__(self, database: str):
        self.database = database

    def query(self, statement: str, args=None, *, in_database: bool = True) -> list[tuple]:
        from live_common import sql  # bench/live_common.py: one connection per statement

        return sql(statement, args, self.database if in_database else None)

    def url(self) -> str:
        auth = MYSQL_USER + (f":{MYSQL_PASSWORD}" if MYSQL_PASSWORD else "")
        return f"mysql+asyncmy://{auth}@{MYSQL_HOST}:{MYSQL_PORT}/{self.database}?charset=utf8mb4"

    def create(self) -> None:
        self.query(f"CREATE DATABASE `{self.database}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin", in_database=False)

    def drop(self) -> None:
        self.query(f"DROP DATABASE IF EXISTS `{self.database}`", in_database=False)

    def status_counters(self) -> dict[str, int]:
        names = ("Questions", "Com_select", "Com_insert", "Com_update", "Com_commit", "Com_rollback", "Com_set_option",
                 "Innodb_os_log_fsyncs", "Innodb_data_fsyncs", "Threads_connected")
        rows = self.query("SHOW GLOBAL STATUS WHERE Variable_name IN (" + ",".join(["%s"] * len(names)) + ")", names)
        return {k: int(v) for k, v in rows}

    def describe(self) -> dict:
        variables = dict(self.query("SHOW GLOBAL VARIABLES WHERE Variable_name IN ('innodb_flush_log_at_trx_commit', "
                                    "'innodb_buffer_pool_size', 'sync_binlog', 'log_bin', 'max_connections')"))
        return {"name": self.name, "version": self.query("SELECT VERSION()")[0][0], "settings": variables,
                "durability": f"innodb_flush_log_at_trx_commit={variables.get('innodb_flush_log_at_trx_commit')}"}

    def count_rows(self, prefix: str = "") -> dict[str, int]:
        rows = self.query("SELECT status, COUNT(*) FROM payments WHERE caller_service=%s AND request_id LIKE %s "
                          "GROUP BY status", (CALLER, prefix + "%"))
        return {str(status): int(count) for status, count in rows}

    def seed_rows(self, target: int) -> int:
        """Copies the caller's rows (new request_id and callback hash) until there are
        `target` of them, so that ListPayments reads a table with a few thousand rows."""
        columns = [r[0] for r in self.query(
            "SELECT column_name FROM information_schema.columns WHERE table_schema=%s AND table_name='payments' "
            "AND column_name <> 'id' ORDER BY ordinal_position", (self.database,))]
        select = ", ".join("CONCAT('seed-', UUID())" if c == "request_id" else "UUID()" if c == "provider_callback_hash"
                           else f"`{c}`" for c in columns)
        while (count := sum(self.count_rows().values())) < target:
            self.query(f"INSERT INTO payments ({', '.join('`' + c + '`' for c in columns)}) SELECT {select} FROM payments "
                       f"WHERE caller_service=%s LIMIT {target - count}", (CALLER,))
        return count


class PostgreSQL:
    name = "PostgreSQL"
    processes = ("postgres",)  # the postmaster and one backend per connection

    def __init__(self, database: str):
        self.database = database

    def query(self, statement: str, args=(), *, in_database: bool = True) -> list[tuple]:
        import asyncio

        import asyncpg

        async def run() -> list[tuple]:
            conn = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, password=PG_PASSWORD or None,
                                         database=self.database if in_database else "postgres", timeout=5)
            try:
                return [tuple(r) for r in await conn.fetch(statement, *args)]
            finally:
                await conn.close()

        return asyncio.run(run())

    def url(self) -> str:
        auth = PG_USER + (f":{PG_PASSWORD}" if PG_PASSWORD else "")
        return f"postgresql+asyncpg://{auth}@{PG_HOST}:{PG_PORT}/{self.database}"

    def create(self) -> None:
        self.query(f'CREATE DATABASE "{self.database}"', in_database=False)

    def drop(self) -> None:
        self.query(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)', in_database=False)

    def status_counters(self) -> dict[str, int]:
        # pg_stat_database is flushed by each backend at most once a second: a close count, not an exact one.
        row = self.query("SELECT xact_commit, xact_rollback, tup_returned, tup_fetched, tup_inserted, tup_updated, "
                         "numbackends FROM pg_stat_database WHERE datname = $1", (self.database,))[0]
        names = ("xact_commit", "xact_rollback", "tup_returned", "tup_fetched", "tup_inserted", "tup_updated", "numbackends")
        return dict(zip(names, map(int, row), strict=True))

    def describe(self) -> dict:
        settings = dict(self.query("SELECT name, setting FROM pg_settings WHERE name IN ('synchronous_commit', 'fsync', "
                                   "'shared_buffers', 'max_connections', 'wal_sync_method')"))
        return {"name": self.name, "version": self.query("SHOW server_version")[0][0], "settings": settings,
                "durability": f"synchronous_commit={settings.get('synchronous_commit')}, fsync={settings.get('fsync')}"}

    def count_rows(self, prefix: str = "") -> dict[str, int]:
        rows = self.query("SELECT status, COUNT(*) FROM payments WHERE caller_service=$1 AND request_id LIKE $2 "
                          "GROUP BY status", (CALLER, prefix + "%"))
        return {str(status): int(count) for status, count in rows}

    def seed_rows(self, target: int) -> int:
        """As MariaDB.seed_rows."""
        columns = [r[0] for r in self.query(
            "SELECT column_name FROM information_schema.columns WHERE table_schema='public' AND table_name='payments' "
            "AND column_name <> 'id' ORDER BY ordinal_position")]
        select = ", ".join("'seed-' || gen_random_uuid()" if c == "request_id" else "gen_random_uuid()::text"
                           if c == "provider_callback_hash" else f'"{c}"' for c in columns)
        while (count := sum(self.count_rows().values())) < target:
            self.query(f"INSERT INTO payments ({', '.join(chr(34) + c + chr(34) for c in columns)}) SELECT {select} "
                       f"FROM payments WHERE caller_service=$1 LIMIT {target - count}", (CALLER,))
        return count


BACKENDS = {"mariadb": MariaDB, "postgresql": PostgreSQL}
# On PostgreSQL the run measures what the PostgreSQL issue asks of it (create and get) and the
# ceilings they are compared with; the full matrix runs on MariaDB, the reference's database.
POSTGRESQL_SCENARIOS = re.compile(r"health-check$|healthz$|create-fresh$|-get$")


# ---------------------------------------------------------------------------------
# processes: CPU, RSS


def proc_children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                out.append(int(entry))
        except (OSError, IndexError, ValueError):
            continue
    return out


def proc_tree(pid: int) -> list[int]:
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(proc_children(p))
    return tree


def cpu_seconds(pid: int, *, system_only: bool = False) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        if system_only:
            return int(fields[12]) / HZ  # stime: in the kernel (syscalls: sockets, epoll)
        return (int(fields[11]) + int(fields[12])) / HZ  # utime + stime
    except (OSError, IndexError, ValueError):
        return 0.0


def status_kb(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def run_delay_seconds(pid: int) -> float:
    """Time the process's threads spent runnable but waiting for a CPU (schedstat)."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[1])
            except (OSError, IndexError, ValueError):
                continue
    except OSError:
        pass
    return total / 1e9


def machine_busy_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds over all cores since boot."""
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + parts[4]
    total = sum(parts[:8])
    return (total - idle) / HZ, total / HZ


def processes_cpu_seconds(names: tuple[str, ...]) -> float:
    """CPU time of every process whose command is one of `names` (the database server's)."""
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm") as f:
                if f.read().strip() not in names:
                    continue
        except OSError:
            continue
        total += cpu_seconds(int(entry))
    return total


class Sampler:
    """Samples VmRSS of the server's processes every 100 ms while a scenario runs and
    accounts CPU of the server, the database server, the generators (children of this
    process) and everything else on the machine."""

    def __init__(self, server: ServerProcess, db: MariaDB | PostgreSQL):
        self.server = server
        self.db_processes = db.processes
        self._stop = threading.Event()
        self.peak_sum_kb = 0
        self.peak_per_pid_kb: dict[int, int] = {}

    def __enter__(self):
        self.pids = self.server.pids()
        self.t0 = time.monotonic()
        self.cpu0 = {p: cpu_seconds(p) for p in self.pids}
        self.wait0 = {p: run_delay_seconds(p) for p in self.pids}
        self.sys0 = {p: cpu_seconds(p, system_only=True) for p in self.pids}
        self.db0 = processes_cpu_seconds(self.db_processes)
        self.busy0, self.total0 = machine_busy_seconds()
        self.children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.self0 = resource.getrusage(resource.RUSAGE_SELF)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            total = 0
            for p in self.pids:
                kb = status_kb(p, "VmRSS")
                total += kb
                self.peak_per_pid_kb[p] = max(self.peak_per_pid_kb.get(p, 0), kb)
            self.peak_sum_kb = max(self.peak_sum_kb, total)
            self._stop.wait(0.1)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        wall = time.monotonic() - self.t0
        busy1, total1 = machine_busy_seconds()
        ch = resource.getrusage(resource.RUSAGE_CHILDREN)
        me = resource.getrusage(resource.RUSAGE_SELF)
        server_cpu = sum(cpu_seconds(p) - self.cpu0[p] for p in self.pids)
        server_wait = sum(run_delay_seconds(p) - self.wait0[p] for p in self.pids)
        server_sys = sum(cpu_seconds(p, system_only=True) - self.sys0[p] for p in self.pids)
        db_cpu = processes_cpu_seconds(self.db_processes) - self.db0
        gen_cpu = (ch.ru_utime + ch.ru_stime) - (self.children0.ru_utime + self.children0.ru_stime)
        runner_cpu = (me.ru_utime + me.ru_stime) - (self.self0.ru_utime + self.self0.ru_stime)
        busy = busy1 - self.busy0
        ncpu = os.cpu_count() or 1
        workers = self.server.worker_pids()
        self.result = {
            "wall_s": round(wall, 3),
            "cores_server": round(server_cpu / wall, 3),
            "cores_server_in_kernel": round(server_sys / wall, 3),
            # Server threads runnable but not running (waiting for a core), in cores.
            "cores_server_runqueue_wait": round(server_wait / wall, 3),
            "cores_database": round(db_cpu / wall, 3),
            "cores_generator": round(gen_cpu / wall, 3),
            "cores_bench_runner": round(runner_cpu / wall, 3),
            "cores_other": round(max(0.0, busy - server_cpu - db_cpu - gen_cpu - runner_cpu) / wall, 3),
            "cores_busy": round(busy / wall, 3),
            "cores_machine": ncpu,
            "peak_rss_sum_mb": round(self.peak_sum_kb / 1024, 1),
            "peak_rss_max_worker_mb": round(max((self.peak_per_pid_kb.get(p, 0) for p in workers), default=0) / 1024, 1),
            "peak_rss_per_process_mb": {str(p): round(kb / 1024, 1) for p, kb in self.peak_per_pid_kb.items()},
        }
        return False


# ---------------------------------------------------------------------------------
# the server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add(parts[9])
        except OSError:
            continue
    return inodes


def socket_inodes(pid: int) -> set[str]:
    out = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                out.add(target[8:-1])
    except OSError:
        pass
    return out


@dataclass
class ServerProcess:
    env: dict
    processes: int
    delay_ms: int
    label: str
    http_port: int = field(default_factory=free_port)
    grpc_port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None
    command: list = field(default_factory=list)

    def start(self, timeout: float = 60.0) -> ServerProcess:
        env = dict(self.env, HTTP_PORT=str(self.http_port), GRPC_PORT=str(self.grpc_port), HTTP_HOST="127.0.0.1",
                   GRPC_HOST="127.0.0.1", PAYMENTS_PUBLIC_BASE_URL=f"http://127.0.0.1:{self.http_port}",
                   PAYMENTS_SANDBOX_DELAY_MS=str(self.delay_ms))
        self.log_path = TMP / f"serve-{self.label}.log"
        self.command = self.command or [PY, "-m", "payments_svc", "serve", "--processes", str(self.processes)]
        self.proc = subprocess.Popen(self.command, env=env, stdout=open(self.log_path, "w"), stderr=subprocess.STDOUT,
                                     cwd=str(REPO), start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_path.read_text()[-4000:]}")
            if self._all_workers_listening() and self._ready():
                return self
            time.sleep(0.1)
        raise RuntimeError(f"server not ready in {timeout}s:\n{self.log_path.read_text()[-4000:]}")

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/readyz", timeout=2) as resp:
                return resp.status == 200
        except (OSError, urllib.error.URLError):
            return False

    def _all_workers_listening(self) -> bool:
        workers = self.worker_pids()
        if len(workers) != self.processes:
            return False
        http_l, grpc_l = listening_inodes(self.http_port), listening_inodes(self.grpc_port)
        return all((socket_inodes(p) & http_l) and (socket_inodes(p) & grpc_l) for p in workers)

    def pids(self) -> list[int]:
        return proc_tree(self.proc.pid) if self.proc else []

    def worker_pids(self) -> list[int]:
        if not self.proc:
            return []
        return [self.proc.pid] if self.processes == 1 else proc_children(self.proc.pid)

    def hwm_mb(self) -> dict[str, float]:
        return {str(p): round(status_kb(p, "VmHWM") / 1024, 1) for p in self.pids()}

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait(5)


# ---------------------------------------------------------------------------------
# request bodies (built with the service's own generated code)


def grpc_frame(message) -> bytes:
    payload = message.SerializeToString()
    return b"\x00" + len(payload).to_bytes(4, "big") + payload


def create_fields(request_id: str) -> dict:
    return dict(request_id=request_id, caller_service=CALLER, resource_type="order", resource_id="bench-1",
                amount_cents=1999, currency="usd", payment_method=1, payment_type=1, provider=100,
                status_callback_url=CALLBACK_URL, metadata={"bench": "1"})


def grpc_create(request_id: str) -> bytes:
    from payments_svc.gen import payments_pb2 as pb

    return grpc_frame(pb.CreatePaymentRequest(**create_fields(request_id)))


def json_create(request_id: str) -> bytes:
    return json.dumps(create_fields(request_id), separators=(",", ":")).encode()


def fresh_template(build, prefix: str) -> dict:
    """A body whose request_id ends in COUNTER_WIDTH digits that loadgen.js overwrites.
    Checked: the patched template equals the body built for that request_id."""
    template = build(prefix + "0" * COUNTER_WIDTH)
    offset = template.index(prefix.encode()) + len(prefix)
    for n in (1, 987654321098):
        digits = str(n).zfill(COUNTER_WIDTH)
        patched = template[:offset] + digits.encode() + template[offset + COUNTER_WIDTH:]
        if patched != build(prefix + digits):
            raise AssertionError("fresh-create template does not patch cleanly")
    return {"template": template, "patch": {"offset": offset, "width": COUNTER_WIDTH}, "prefix": prefix}


# ---------------------------------------------------------------------------------
# generators


def run_loadgen(config: dict, timeout: float) -> dict:
    proc = subprocess.run(["node", str(LOADGEN), json.dumps(config)], capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"loadgen failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def start_loadgen(config: dict) -> subprocess.Popen:
    return subprocess.Popen(["node", str(LOADGEN), json.dumps(config)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def finish_loadgen(proc: subprocess.Popen, timeout: float) -> dict:
    out, err = proc.communicate(timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"loadgen failed ({proc.returncode}): {err[-2000:]}")
    return json.loads(out.strip().splitlines()[-1])


H2LOAD_FINISHED = re.compile(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s")
H2LOAD_REQUESTS = re.compile(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout")
H2LOAD_STATUS = re.compile(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx")
H2LOAD_TRAFFIC = re.compile(r"traffic: .*?\((\d+)\) total, .*?\((\d+)\) headers .*?, .*?\((\d+)\) data")


def parse_h2load(text: str) -> dict:
    m = H2LOAD_FINISHED.search(text)
    r = H2LOAD_REQUESTS.search(text)
    s = H2LOAD_STATUS.search(text)
    t = H2LOAD_TRAFFIC.search(text)
    if not (m and r and s and t):
        raise RuntimeError(f"unexpected h2load output:\n{text[-3000:]}")
    seconds = float(m.group(1)) / (1000 if m.group(2) == "ms" else 1)
    total, started, done, succeeded, failed, errored, timeout = map(int, r.groups())
    s2, s3, s4, s5 = map(int, s.groups())
    return {"seconds": seconds, "rps": float(m.group(3)), "total": total, "done": done, "succeeded": succeeded,
            "failed": failed, "errored": errored, "timeout": timeout, "status_2xx": s2, "status_3xx": s3,
            "status_4xx": s4, "status_5xx": s5, "bytes_total": int(t.group(1)), "bytes_headers": int(t.group(2)),
            "bytes_data": int(t.group(3))}


def percentile(sorted_values: list[float], p: float) -> float | None:
    if not sorted_values:
        return None
    i = min(len(sorted_values) - 1, max(0, -(-int(p * len(sorted_values)) // 100) - 1))
    return sorted_values[i]


def h2load_cmd(spec: Scenario, url: str, extra: list[str]) -> list[str]:
    cmd = ["h2load", "-t", "1", "-c", str(spec.connections), "-m", str(spec.streams)]
    if spec.transport == "http":
        cmd.append("--h1")
    if spec.body is not None:
        body_path = TMP / f"body-{spec.key}.bin"
        body_path.write_bytes(spec.body)
        cmd += ["-d", str(body_path)]
    for name, value in spec.headers.items():
        cmd += ["-H", f"{name}: {value}"]
    return cmd + extra + [url]


def run_h2load(spec: Scenario, server: ServerProcess, args, db: MariaDB | PostgreSQL) -> dict:
    port = server.grpc_port if spec.transport == "grpc" else server.http_port
    url = f"http://127.0.0.1:{port}{spec.path}"
    # Warm-up, which also sizes the measured run: a fixed request count (-n) so that every
    # response of the measured run is complete and its bytes can be checked.
    warm = subprocess.run(h2load_cmd(spec, url, ["-D", f"{round(args.warmup * 1000)}ms"]), capture_output=True, text=True,
                          timeout=args.warmup * 5 + 30)
    warm_stats = parse_h2load(warm.stdout)
    slots = spec.connections * spec.streams
    n = max(slots * 4, int(warm_stats["rps"] * args.duration))
    log_path = TMP / f"h2load-{spec.key}.tsv"
    with Sampler(server, db) as sampler:
        proc = subprocess.run(h2load_cmd(spec, url, ["-n", str(n), "--log-file", str(log_path)]), capture_output=True,
                              text=True, timeout=args.duration * 10 + 60)
    stats = parse_h2load(proc.stdout)
    latencies = []
    statuses = collections.Counter()
    with open(log_path) as f:
        for line in f:
            parts = line.split("\t")
            if len(parts) >= 3:
                statuses[parts[1]] += 1
                latencies.append(int(parts[2]) / 1000)
    latencies.sort()
    result = {
        "generator": "h2load",
        "command": " ".join(h2load_cmd(spec, url, ["-n", str(n)])),
        "warmup": warm_stats,
        "h2load": stats,
        "requests": stats["done"],
        "rps": stats["rps"],
        "p50_ms": percentile(latencies, 50),
        "p90_ms": percentile(latencies, 90),
        "p99_ms": percentile(latencies, 99),
        "max_ms": latencies[-1] if latencies else None,
        "log_statuses": dict(statuses),
        "resources": sampler.result,
    }
    http_errors = stats["total"] - stats["status_2xx"]
    if spec.transport == "grpc":
        # gRPC errors arrive as HTTP 200 with a non-zero grpc-status trailer and no message:
        # every OK response of this RPC has the same length (measured by the verification
        # run), so data bytes / that length counts the OK ones exactly.
        size = spec.verify_size
        ok = stats["bytes_data"] // size if size else None
        exact = bool(size) and stats["bytes_data"] % size == 0
        result["grpc_ok_by_bytes"] = ok
        result["grpc_check_exact"] = exact
        result["errors"] = http_errors + (stats["status_2xx"] - ok if ok is not None else 0)
    else:
        result["errors"] = http_errors
    return result


def verify_grpc(spec: Scenario, server: ServerProcess) -> dict:
    """A short run of loadgen.js with the same request, reading grpc-status from the trailers."""
    headers = {k: v for k, v in spec.headers.items() if k not in ("content-type", "te", "x-request-id")}
    res = run_loadgen({"transport": "grpc", "host": "127.0.0.1", "port": server.grpc_port, "path": spec.path,
                       "headers": headers, "body_b64": base64.b64encode(spec.body or b"").decode(),
                       "connections": 2, "streams": 8, "max_requests": 300}, timeout=120)
    sizes = res["body_lengths"]
    spec.verify_size = int(next(iter(sizes))) if len(sizes) == 1 else None
    return {"outcomes": res["all_outcomes"], "ok_body_lengths": sizes, "p50_ms": res["p50_ms"]}


# ---------------------------------------------------------------------------------
# scenarios


@dataclass
class Scenario:
    key: str
    transport: str  # grpc | http
    operation: str
    label: str
    path: str
    generator: str  # h2load | loadgen
    connections: int
    streams: int = 1
    method: str = "GET"
    body: bytes | None = None
    headers: dict = field(default_factory=dict)
    expect_status: int = 200
    fresh: dict | None = None  # {"template": bytes, "patch": {...}}
    probe: Scenario | None = None  # run alongside, open loop
    probe_rate: float = 0
    ceiling: bool = False
    note: str = ""
    verify_size: int | None = None


def grpc_headers(api_key: str | None) -> dict:
    h = {"content-type": "application/grpc", "te": "trailers", "x-request-id": "bench-h2load"}
    if api_key:
        h["x-api-key"] = api_key
    return h


def build_scenarios(args, api_key: str, fixtures: dict, tag: str) -> tuple[list[Scenario], list[Scenario]]:
    from grpc_health.v1 import health_pb2

    from payments_svc.gen import payments_pb2 as pb

    c_grpc, s_grpc = args.grpc_connections, args.grpc_streams
    c_http = args.http_connections
    http_h = {"X-Request-ID": "bench-h2load", "X-API-Key": api_key}
    http_json = dict(http_h, **{"Content-Type": "application/json"})
    svc = "/payments.PaymentsService/"
    fast = [
        Scenario("grpc-health-check", "grpc", "ceiling", "grpc.health.v1.Health/Check (no auth)", "/grpc.health.v1.Health/Check",
                 "h2load", c_grpc, s_grpc, "POST", grpc_frame(health_pb2.HealthCheckRequest()), grpc_headers(None),
                 ceiling=True),
        Scenario("grpc-health", "grpc", "health", "payments Health (auth)", svc + "Health", "h2load", c_grpc, s_grpc, "POST",
                 grpc_frame(pb.HealthRequest()), grpc_headers(api_key)),
        Scenario("grpc-create-fresh", "grpc", "create_fresh", "CreatePayment, fresh keys", svc + "CreatePayment", "loadgen",
                 c_grpc, s_grpc, "POST", headers={"x-api-key": api_key}, fresh=fresh_template(grpc_create, f"fg{tag}-")),
        Scenario("grpc-create-replay", "grpc", "create_replay", "CreatePayment, replay (same key)", svc + "CreatePayment",
                 "h2load", c_grpc, s_grpc, "POST", grpc_create(fixtures["replay_grpc"]), grpc_headers(api_key)),
        Scenario("grpc-get", "grpc", "get", "GetPayment", svc + "GetPayment", "h2load", c_grpc, s_grpc, "POST",
                 grpc_frame(pb.GetPaymentRequest(id=fixtures["get_id"])), grpc_headers(api_key)),
        Scenario("grpc-list", "grpc", "list", "ListPayments (limit 20)", svc + "ListPayments", "h2load", c_grpc, s_grpc,
                 "POST", grpc_frame(pb.ListPaymentsRequest(limit=20)), grpc_headers(api_key)),
        Scenario("http-healthz", "http", "ceiling", "GET /healthz (no auth)", "/healthz", "h2load", c_http, headers={},
                 ceiling=True),
        Scenario("http-health", "http", "health", "GET /health (auth)", "/health", "h2load", c_http, headers=http_h),
        Scenario("http-create-fresh", "http", "create_fresh", "POST /payments, fresh keys", "/payments", "loadgen", c_http,
                 1, "POST", headers={"X-API-Key": api_key, "Content-Type": "application/json"}, expect_status=201,
                 fresh=fresh_template(json_create, f"fh{tag}-")),
        Scenario("http-create-replay", "http", "create_replay", "POST /payments, replay (same key)", "/payments", "h2load",
                 c_http, 1, "POST", json_create(fixtures["replay_http"]), http_json),
        Scenario("http-get", "http", "get", "GET /payments/{id}", f"/payments/{fixtures['get_id']}", "h2load", c_http,
                 headers=http_h),
        Scenario("http-list", "http", "list", "GET /payments?limit=20", "/payments?limit=20", "h2load", c_http,
                 headers=http_h),
    ]
    conns = max(1, args.slow_inflight // 64)
    slow = [
        Scenario("grpc-create-slow", "grpc", "create_slow_provider",
                 f"CreatePayment, provider {args.slow_delay_ms} ms, {args.slow_inflight} in flight", svc + "CreatePayment",
                 "loadgen", conns, args.slow_inflight // conns, "POST", headers={"x-api-key": api_key},
                 fresh=fresh_template(grpc_create, f"sg{tag}-"), probe_rate=args.probe_rate,
                 probe=Scenario("grpc-get-probe", "grpc", "get_probe", "GetPayment alongside", svc + "GetPayment",
                                "loadgen", 1, 1, "POST", grpc_frame(pb.GetPaymentRequest(id=fixtures["get_id"])),
                                {"x-api-key": api_key})),
        Scenario("http-create-slow", "http", "create_slow_provider",
                 f"POST /payments, provider {args.slow_delay_ms} ms, {args.slow_inflight} in flight", "/payments", "loadgen",
                 args.slow_inflight, 1, "POST", headers={"X-API-Key": api_key, "Content-Type": "application/json"},
                 expect_status=201, fresh=fresh_template(json_create, f"sh{tag}-"), probe_rate=args.probe_rate,
                 probe=Scenario("http-get-probe", "http", "get_probe", "GET /payments/{id} alongside",
                                f"/payments/{fixtures['get_id']}", "loadgen", 256, 1, headers={"X-API-Key": api_key})),
    ]
    return fast, slow


def loadgen_config(spec: Scenario, server: ServerProcess, args, *, rate: float = 0) -> dict:
    port = server.grpc_port if spec.transport == "grpc" else server.http_port
    body = spec.fresh["template"] if spec.fresh else (spec.body or b"")
    return {"transport": spec.transport, "host": "127.0.0.1", "port": port, "method": spec.method, "path": spec.path,
            "headers": spec.headers, "body_b64": base64.b64encode(body).decode(),
            "patch": spec.fresh["patch"] if spec.fresh else None, "expect_status": spec.expect_status,
            "connections": spec.connections, "streams": spec.streams, "rate": rate or None,
            "warmup_s": args.warmup, "duration_s": args.duration, "counter_start": 0}


def run_loadgen_scenario(spec: Scenario, server: ServerProcess, args, db: MariaDB | PostgreSQL) -> dict:
    timeout = args.warmup + args.duration + 120
    with Sampler(server, db) as sampler:
        main = start_loadgen(loadgen_config(spec, server, args))
        probe = start_loadgen(loadgen_config(spec.probe, server, args, rate=spec.probe_rate)) if spec.probe else None
        res = finish_loadgen(main, timeout)
        probe_res = finish_loadgen(probe, timeout) if probe else None
    result = {
        "generator": "loadgen.js",
        "loadgen": res,
        "requests": res["requests"],
        "rps": res["ok_rps"],
        "attempted_rps": res["rps"],
        "p50_ms": res["p50_ms"],
        "p90_ms": res["p90_ms"],
        "p99_ms": res["p99_ms"],
        "max_ms": res["max_ms"],
        "errors": res["errors"],
        "resources": sampler.result,
    }
    if probe_res is not None:
        result["probe"] = {k: probe_res[k] for k in ("requests", "ok", "errors", "outcomes", "rps", "p50_ms", "p90_ms",
                                                      "p99_ms", "max_ms", "max_schedule_lag_ms", "cpu_user_s",
                                                      "cpu_system_s")}
    if spec.fresh:
        # Every request the generator saw succeed must be a finished row (PENDING=2) in the database.
        rows = db.count_rows(spec.fresh["prefix"])
        result["db_rows_by_status"] = rows
        result["db_check"] = {"ok_seen_by_generator": res["all_outcomes"].get("ok", 0), "rows_pending": rows.get("2", 0),
                              "rows_total": sum(rows.values())}
    return result


# ---------------------------------------------------------------------------------
# fixtures


def cli(env: dict, *args: str) -> str:
    proc = subprocess.run([PY, "-m", "payments_svc", *args], env=env, capture_output=True, text=True, cwd=str(REPO),
                          timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"payments-svc {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout.strip()


def grpc_call(server: ServerProcess, api_key: str, method: str, request, response_cls):
    import grpc

    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        call = channel.unary_unary(f"/payments.PaymentsService/{method}", request_serializer=lambda m: m.SerializeToString(),
                                   response_deserializer=response_cls.FromString)
        return call(request, metadata=(("x-request-id", "bench-setup"), ("x-api-key", api_key)), timeout=30)


def http_call(server: ServerProcess, api_key: str, method: str, path: str, body: bytes | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(f"http://127.0.0.1:{server.http_port}{path}", data=body, method=method,
                                 headers={"X-Request-ID": "bench-setup", "X-API-Key": api_key,
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return resp.status, json.loads(resp.read())


def make_fixtures(server: ServerProcess, api_key: str, tag: str) -> dict:
    from payments_svc.gen import payments_pb2 as pb

    get = grpc_call(server, api_key, "CreatePayment", pb.CreatePaymentRequest(**create_fields(f"get-{tag}")),
                    pb.PaymentEnvelopeResponse)
    replay_grpc, replay_http = f"replay-grpc-{tag}", f"replay-http-{tag}"
    grpc_call(server, api_key, "CreatePayment", pb.CreatePaymentRequest(**create_fields(replay_grpc)), pb.PaymentEnvelopeResponse)
    status, _ = http_call(server, api_key, "POST", "/payments", json_create(replay_http))
    assert status == 201, status
    return {"get_id": get.payment.id, "replay_grpc": replay_grpc, "replay_http": replay_http}


# ---------------------------------------------------------------------------------
# machine info


def run_text(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def machine_info(db: MariaDB | PostgreSQL) -> dict:
    cpu_model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    diff = subprocess.run(["git", "diff", "HEAD", "--", "src", "proto", "schema.sql"], capture_output=True, cwd=REPO).stdout
    status = run_text(["git", "-C", str(REPO), "status", "--porcelain", "--", "src", "proto", "schema.sql"])
    mem_kb = 0
    with open("/proc/meminfo") as f:
        mem_kb = int(f.readline().split()[1])
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model,
        "mem_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "database": db.describe(),
        "node": run_text(["node", "--version"]),
        "h2load": run_text(["h2load", "--version"]).splitlines()[0] if shutil.which("h2load") else "",
        "git_commit": run_text(["git", "-C", str(REPO), "rev-parse", "HEAD"]),
        "git_uncommitted_files_in_src": len([line for line in status.splitlines() if line.strip()]),
        "git_diff_src_sha256": hashlib.sha256(diff).hexdigest()[:16] if diff else None,
        "packages": {name: _version(name) for name in ("grpcio", "aiohttp", "SQLAlchemy", "asyncmy", "asyncpg", "uvloop", "protobuf", "structlog")},
        "loadavg_at_start": os.getloadavg(),
    }


def _version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return ""


# ---------------------------------------------------------------------------------
# the run


def base_env(database_url: str, args) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PAYMENTS_", "STRIPE_", "MYSQL_", "AUTH_", "APP_", "STELLAR_"))}
    env.update({"PAYMENTS_DATABASE_URL": database_url, "LOG_LEVEL": args.log_level, "PAYMENTS_ENV": "development",
                "PAYMENTS_SANDBOX_ENABLED": "true"})
    if args.pool:
        env["MYSQL_MAX_OPEN_CONNS"] = str(args.pool)
    env.update(setting.split("=", 1) for setting in args.set)
    return env


QUIET = {"waited_s": 0.0}


def wait_for_quiet(args) -> float:
    """Waits (bounded per scenario and per run) until the machine is nearly idle, so that
    other processes (someone's test run) disturb the next scenario as little as possible.
    Returns the busy cores seen last."""
    deadline = time.monotonic() + min(args.quiet_wait, max(0.0, args.quiet_budget - QUIET["waited_s"]))
    started = time.monotonic()
    while True:
        b0, _ = machine_busy_seconds()
        time.sleep(0.5)
        b1, _ = machine_busy_seconds()
        busy = (b1 - b0) / 0.5
        if busy <= args.quiet_cores or time.monotonic() >= deadline:
            QUIET["waited_s"] += time.monotonic() - started
            return round(busy, 2)


def run_fast(server: ServerProcess, scenarios: list[Scenario], args, db: MariaDB | PostgreSQL, out: list) -> None:
    for spec in scenarios:
        if args.only and not re.search(args.only, spec.key):
            continue
        if isinstance(db, PostgreSQL) and not POSTGRESQL_SCENARIOS.search(spec.key):
            continue
        idle_busy = wait_for_quiet(args)
        log(f"  {spec.key} ({spec.generator}, {spec.connections}x{spec.streams}; machine busy before: {idle_busy} cores)")
        before = db.status_counters()
        verify = verify_grpc(spec, server) if spec.generator == "h2load" and spec.transport == "grpc" else None
        if spec.generator == "h2load":
            result = run_h2load(spec, server, args, db)
        else:
            result = run_loadgen_scenario(spec, server, args, db)
        after = db.status_counters()
        result["database_status_delta"] = {k: after[k] - before[k] for k in after}
        if verify is not None:
            result["grpc_verify"] = verify
        result.update(machine_busy_cores_before=idle_busy, key=spec.key, transport=spec.transport, operation=spec.operation, label=spec.label,
                      in_flight=spec.connections * spec.streams, connections=spec.connections, streams=spec.streams,
                      processes=server.processes, provider_delay_ms=server.delay_ms)
        if spec.probe is not None:
            result["probe_label"] = spec.probe.label
            result["probe_rate"] = spec.probe_rate
        out.append(result)
        r = result["resources"]
        log(f"    {result['rps']:.0f} req/s  p50 {fmt(result['p50_ms'])} ms  p99 {fmt(result['p99_ms'])} ms  "
            f"errors {result['errors']}  server {r['cores_server']:.2f} cores  gen {r['cores_generator']:.2f}  "
            f"db {r['cores_database']:.2f}  other {r['cores_other']:.2f}  rss {r['peak_rss_sum_mb']} MB"
            + (f"  | probe p99 {fmt(result['probe']['p99_ms'])} ms" if "probe" in result else ""))


def fmt(x, digits=1) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=sorted(BACKENDS), default="mariadb",
                        help="postgresql: the fresh-create and GetPayment rows (and ceilings) on PostgreSQL")
    parser.add_argument("--processes", default="1,2", help="serve --processes values to run (comma-separated)")
    parser.add_argument("--duration", type=float, default=8.0, help="measured seconds per scenario")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per scenario")
    parser.add_argument("--grpc-connections", type=int, default=4)
    parser.add_argument("--grpc-streams", type=int, default=16, help="concurrent streams per gRPC connection")
    parser.add_argument("--http-connections", type=int, default=64, help="HTTP/1.1 keep-alive connections (one request each)")
    parser.add_argument("--seed-rows", type=int, default=5000, help="rows of the caller before the read scenarios")
    parser.add_argument("--slow-delay-ms", type=int, default=250)
    parser.add_argument("--slow-inflight", type=int, default=256)
    parser.add_argument("--probe-rate", type=float, default=50.0, help="GetPayment probe requests/s alongside slow creates")
    parser.add_argument("--pool", type=int, default=0, help="MYSQL_MAX_OPEN_CONNS (0: the service's default)")
    parser.add_argument("--log-level", default="warning")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a server setting (environment variable) for an A/B run, e.g. PAYMENTS_GROUP_COMMIT_MAX=1")
    parser.add_argument("--quiet-wait", type=float, default=10.0,
                        help="before each scenario wait up to this many seconds for the machine to be idle")
    parser.add_argument("--quiet-budget", type=float, default=90.0, help="at most this many seconds of such waits per run")
    parser.add_argument("--quiet-cores", type=float, default=0.25, help="'idle' means at most this many busy cores")
    parser.add_argument("--only", default="", help="regex: run only matching scenario keys (no README update)")
    parser.add_argument("--no-readme", action="store_true")
    parser.add_argument("--profile", action="store_true", help="profile instead (py-spy + round-trip counts)")
    parser.add_argument("--keep-db", action="store_true")
    parser.add_argument("--render", metavar="JSON", help="only rewrite the README block (table or profile) from a results file")
    args = parser.parse_args()
    if args.render:
        report = upgrade_report(json.loads(Path(args.render).read_text()))
        if "profiles" in report:
            from profile_run import render  # bench/profile_run.py

            text = render(report, Path(args.render).resolve())
            README.write_text(replace_block(README.read_text(), PROF_BEGIN, PROF_END, text))
            print(text)
            return 0
        annotate(report)
        write_readme(report, Path(args.render).resolve())
        print(render_table(report))
        return 0

    for tool in ("h2load", "node"):
        if not shutil.which(tool):
            print(f"bench: {tool} is missing (make bench installs h2load from nghttp2-client)", file=sys.stderr)
            return 2
    TMP.mkdir(parents=True, exist_ok=True)
    started = time.time()
    today = dt.date.today().isoformat()
    tag = uuid.uuid4().hex[:6]
    db = BACKENDS[args.backend](f"payments_bench_{tag}")
    db.create()
    env = base_env(db.url(), args)
    servers: list[ServerProcess] = []
    try:
        log(f"{db.name} database {db.database}: migrate, create an API key")
        cli(env, "db", "migrate")
        api_key = cli(env, "keys", "create", "--service", CALLER).splitlines()[-1].strip()
        if args.profile:
            from profile_run import run_profile  # bench/profile_run.py

            return run_profile(args, env, db, api_key, tag, servers, today)
        info = machine_info(db)
        results: list[dict] = []
        lifetimes: list[dict] = []
        fixtures = None
        for processes in [int(p) for p in args.processes.split(",") if p.strip()]:
            # The slow-provider pass measures the service, not the database: MariaDB only.
            for delay in (0, args.slow_delay_ms) if isinstance(db, MariaDB) else (0,):
                server = ServerProcess(env, processes, delay, f"p{processes}-d{delay}-{tag}")
                servers.append(server)
                log(f"serve --processes {processes}, sandbox delay {delay} ms")
                server.start()
                if fixtures is None:
                    fixtures = make_fixtures(server, api_key, tag)
                    rows = db.seed_rows(args.seed_rows)
                    log(f"fixtures {fixtures}; {rows} rows of caller {CALLER!r}")
                fast, slow = build_scenarios(args, api_key, fixtures, f"{tag}p{processes}")
                run_fast(server, fast if delay == 0 else slow, args, db, results)
                hwm = server.hwm_mb()
                code = server.stop()
                lifetimes.append({"processes": processes, "delay_ms": delay, "vm_hwm_mb": hwm, "exit_code": code,
                                  "log_tail": server.log_path.read_text()[-2000:]})
        (rows_total,), = db.query("SELECT COUNT(*) FROM payments")
        report = {
            "date": today,
            "started_at": dt.datetime.fromtimestamp(started, dt.UTC).isoformat(timespec="seconds"),
            "elapsed_s": round(time.time() - started, 1),
            "machine": info,
            "settings": {k: v for k, v in vars(args).items()},
            "database_rows_at_end": rows_total,
            "quiet_waited_s": round(QUIET["waited_s"], 1),
            "fixtures": fixtures,
            "server_lifetimes": lifetimes,
            "results": results,
        }
        annotate(report)
        if args.only:
            out = TMP / f"{today}-only.json"
        else:
            out = RESULTS / (f"{today}.json" if isinstance(db, MariaDB) else f"{today}-{args.backend}.json")
        RESULTS.mkdir(parents=True, exist_ok=True)
        # The key dies with the database, but keep it out of files that get committed.
        out.write_text(json.dumps(report, indent=1, default=str).replace(api_key, "<api key>") + "\n")
        log(f"wrote {out.relative_to(REPO)}")
        if not args.only and not args.no_readme:
            write_readme(report, out)
            log(f"updated {README.relative_to(REPO)}")
        print(render_table(report))
        return 0
    finally:
        for server in servers:
            server.stop()
        if not args.keep_db:
            db.drop()
            log(f"dropped {db.database}")


# ---------------------------------------------------------------------------------
# report


def annotate(report: dict) -> None:
    """Ratio to the ceiling of the same transport (same processes, same server run)."""
    ceilings = {}
    for r in report["results"]:
        if r["operation"] == "ceiling":
            ceilings[(r["processes"], r["transport"])] = r["rps"]
    for r in report["results"]:
        c = ceilings.get((r["processes"], r["transport"]))
        r["ratio_to_ceiling"] = round(r["rps"] / c, 3) if c else None
    report["targets"] = evaluate_targets(report)


def _best(report, transport, operation):
    rows = [r for r in report["results"] if r["transport"] == transport and r["operation"] == operation]
    return max(rows, key=lambda r: r["rps"]) if rows else None


def evaluate_targets(report: dict) -> list[dict]:
    """Issue 14's targets (the generator on the same 2 cores), each with its gap when missed."""
    out = []

    def add(name, row, measured, met, gap):
        out.append({"target": name, "row": row and f"--processes {row['processes']}, {row['transport']}",
                    "measured": measured, "met": met, "gap": gap})

    def at_least(name, row, floor, unit="/s"):
        if row:
            add(name, row, f"{row['rps']:.0f}{unit}", row["rps"] >= floor,
                "" if row["rps"] >= floor else f"{row['rps'] / floor:.0%} of target")

    def per_request_ms(row, key):
        return 1000 * row["resources"][key] / row["rps"] if row["rps"] else float("inf")

    for transport in ("grpc", "http"):
        r = _best(report, transport, "create_fresh")
        at_least(f"fresh creates >= 800/s ({transport})", r, 800)
        if r:
            server, db = per_request_ms(r, "cores_server"), per_request_ms(r, "cores_database")
            met = server <= 1.2 and db <= 0.5
            add(f"per fresh create: server CPU <= 1.2 ms, {report['machine']['database']['name']} CPU <= 0.5 ms ({transport})",
                r, f"{server:.2f} ms; {db:.2f} ms", met,
                "" if met else ", ".join(filter(None, [f"server {server / 1.2:.1f}x" if server > 1.2 else "",
                                                       f"database {db / 0.5:.1f}x" if db > 0.5 else ""])))
    get_floor = {"grpc": 1250, "http": 1750}
    for transport in ("grpc", "http"):
        get = _best(report, transport, "get")
        at_least(f"GetPayment >= {get_floor[transport]:,}/s ({transport})", get, get_floor[transport])
        if get and transport == "grpc" and get.get("ratio_to_ceiling") is not None:
            ratio = get["ratio_to_ceiling"]
            add("GetPayment >= 45 % of the same run's gRPC ceiling", get, f"{ratio:.0%}", ratio >= 0.45,
                "" if ratio >= 0.45 else f"{0.45 - ratio:.0%} short")
        replay = _best(report, transport, "create_replay")
        if get and replay:
            add(f"replay >= GetPayment ({transport})", replay, f"{replay['rps']:.0f}/s vs {get['rps']:.0f}/s",
                replay["rps"] >= get["rps"], "" if replay["rps"] >= get["rps"] else f"{replay['rps'] / get['rps']:.0%} of it")
        at_least(f"ListPayments (limit 20) >= 600/s ({transport})", _best(report, transport, "list"), 600)
    for transport in ("grpc", "http"):
        rows = [x for x in report["results"] if x["transport"] == transport and x["operation"] == "create_slow_provider"]
        if rows:
            r = max(rows, key=lambda x: x["rps"])
            p99 = r.get("probe", {}).get("p99_ms")
            met = r["rps"] >= 700 and p99 is not None and p99 < 50
            add(f"250 ms provider: >= 700 creates/s and GetPayment p99 < 50 ms ({transport})", r,
                f"{r['rps']:.0f}/s, GetPayment p99 {fmt(p99)} ms", met,
                "" if met else ", ".join(filter(None, [f"creates {r['rps'] / 700:.0%} of target" if r["rps"] < 700 else "",
                                                       f"p99 {p99 / 50:.1f}x the limit" if p99 and p99 >= 50 else ""])))
    for op in ("health", "create_fresh", "create_replay", "get", "list", "create_slow_provider"):
        for p in sorted({x["processes"] for x in report["results"]}):
            g = [x for x in report["results"] if x["transport"] == "grpc" and x["operation"] == op and x["processes"] == p]
            h = [x for x in report["results"] if x["transport"] == "http" and x["operation"] == op and x["processes"] == p]
            if g and h and g[0]["rps"]:
                ratio = h[0]["rps"] / g[0]["rps"]
                out.append({"target": f"HTTP within 80% of gRPC: {op}", "row": f"--processes {p}",
                            "measured": f"HTTP/gRPC = {ratio:.2f}", "met": ratio >= 0.8,
                            "gap": "" if ratio >= 0.8 else f"{0.8 - ratio:.2f} short"})
    worst = max((x["resources"]["peak_rss_max_worker_mb"] for x in report["results"]), default=0)
    worst_hwm = max((v for lt in report["server_lifetimes"] for v in lt["vm_hwm_mb"].values()), default=0)
    peak = max(worst, worst_hwm)
    out.append({"target": "peak RSS <= 150 MB per serve process", "row": "all runs",
                "measured": f"{peak:.0f} MB (max VmRSS sampled {worst:.0f}, VmHWM {worst_hwm:.0f})", "met": peak <= 150,
                "gap": "" if peak <= 150 else f"{peak - 150:.0f} MB over"})
    return out


DISTURBED_CORES = 0.3


def cpu_ms(cores: float, rps: float) -> str:
    """CPU milliseconds per request: less sensitive than req/s to other work on the machine."""
    return f"{1000 * cores / rps:.2f}" if rps else "-"


def render_table(report: dict) -> str:
    m = report["machine"]
    lines = [
        f"Run of {report['date']} ({report['elapsed_s']:.0f} s), commit `{m['git_commit'][:10]}`"
        + (f" with {m['git_uncommitted_files_in_src']} uncommitted files in src/ (diff sha256 {m['git_diff_src_sha256']})"
           if m["git_uncommitted_files_in_src"] else "")
        + f". Machine: {m['nproc']} cores ({m['cpu_model']}), {m['mem_gib']} GiB; Python {m['python']}, "
        f"{m['database']['name']} {m['database']['version']} ({m['database']['durability']}), "
        f"{m['h2load']}, Node {m['node']}.",
        "",
        f"**The server, {m['database']['name']} and the load generator share these {m['nproc']} cores.** "
        f"Each row: {report['settings']['warmup']:g} s warm-up, then about {report['settings']['duration']:g} s measured. "
        "CPU ms/req = CPU time of the server (all its processes) or of the database server per request: it moves much less than req/s "
        "when other work shares the cores, so it is the figure to compare runs by. "
        "CPU cores columns are cores used during the measured run: server = all serve processes (in brackets: cores' worth "
        "of time its threads were runnable but waiting for a CPU), DB = the database server, gen = the load generator, other = "
        f"everything else on the machine (⚠ above {DISTURBED_CORES} cores: the row was disturbed, e.g. by someone's "
        f"test run; the runner waited {report.get('quiet_waited_s', 0):.0f} s in all for quiet before scenarios).",
        "",
        "| proc | transport | operation | generator | in flight | req/s | p50 ms | p99 ms | errors | vs ceiling "
        "| CPU ms/req server; DB | CPU cores server (wait) / DB / gen / other | peak RSS MB (max process; sum) |",
        "|---:|---|---|---|---:|---:|---:|---:|---:|---:|---|---|---|",
    ]
    for r in report["results"]:
        res = r["resources"]
        gen = "h2load" if r["generator"] == "h2load" else "loadgen.js"
        if r["transport"] == "http" and r["generator"] == "h2load":
            gen += " --h1"
        errors = str(r["errors"])
        if r["transport"] == "grpc" and r["generator"] == "h2load":
            errors += " ✓" if r.get("grpc_check_exact") else " ?"
        label = r["label"]
        if r["operation"] == "ceiling":
            label = f"**{label}** (ceiling)"
        rss = f"{res['peak_rss_max_worker_mb']:.0f}; {res['peak_rss_sum_mb']:.0f}"
        lines.append(
            f"| {r['processes']} | {r['transport']} | {label} | {gen} | {r['in_flight']} | {r['rps']:.0f} | {fmt(r['p50_ms'])} "
            f"| {fmt(r['p99_ms'])} | {errors} | {fmt(r['ratio_to_ceiling'], 2)} | {cpu_ms(res['cores_server'], r['rps'])}; "
            f"{cpu_ms(res['cores_database'], r['rps'])} | {res['cores_server']:.2f} "
            f"({res['cores_server_runqueue_wait']:.2f}) / {res['cores_database']:.2f} / {res['cores_generator']:.2f} / "
            f"{res['cores_other']:.2f}{' ⚠' if res['cores_other'] > DISTURBED_CORES else ''} | {rss} |")
        if "probe" in r:
            p = r["probe"]
            lines.append(
                f"| {r['processes']} | {r['transport']} | ↳ {r['probe_label']} (open loop, {r['probe_rate']:g}/s) | loadgen.js "
                f"| - | {p['rps']:.0f} | {fmt(p['p50_ms'])} | {fmt(p['p99_ms'])} | {p['errors']} | | | | |")
    gens = collections.defaultdict(float)
    for r in report["results"]:
        gens[r["generator"]] = max(gens[r["generator"]], r["resources"]["cores_generator"])
    lines += ["", "Generators are not the bottleneck: at most " + ", ".join(
        f"{v:.2f} cores for {k}" for k, v in sorted(gens.items())) + " in any row (each is single-threaded, so it would "
        "saturate near 1.0; the slow-provider rows run two loadgen.js processes)."]
    lines += ["", "gRPC errors (✓): rows driven by h2load count a request OK only if its response carried the RPC's "
              "whole message (response data bytes = OK count × message size, taken from a loadgen.js run that read "
              "grpc-status from the trailers); loadgen.js rows read grpc-status itself.", ""]
    lines += ["| target | where | measured | met | gap |", "|---|---|---|---|---|"]
    for t in report["targets"]:
        lines.append(f"| {t['target']} | {t['row']} | {t['measured']} | {'yes' if t['met'] else '**no**'} | {t['gap']} |")
    checks = [r for r in report["results"] if "db_check" in r]
    if checks:
        lines += ["", "Fresh creates cross-checked in the database (every create the generator saw succeed is a "
                  "PENDING row): " + "; ".join(
                      f"{r['key']} p{r['processes']}: {r['db_check']['ok_seen_by_generator']} OK / "
                      f"{r['db_check']['rows_pending']} rows" for r in checks) + "."]
    return "\n".join(lines)


def replace_block(text: str, begin: str, end: str, body: str) -> str:
    block = f"{begin}\n{body}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        return head + block + tail
    return text.rstrip("\n") + "\n\n" + block + "\n"


def write_readme(report: dict, json_path: Path) -> None:
    text = README.read_text() if README.exists() else "# Benchmarks\n"
    body = render_table(report) + f"\n\nRaw figures: `{json_path.relative_to(BENCH)}`."
    begin, end = (GEN_BEGIN, GEN_END) if report["machine"]["database"]["name"] == "MariaDB" else (PG_BEGIN, PG_END)
    README.write_text(replace_block(text, begin, end, body))


def upgrade_report(report: dict) -> dict:
    """Results files written before --backend named MariaDB's figures after it."""
    m = report["machine"]
    if "mariadb" in m:
        settings = m.pop("mariadb_settings")
        m["database"] = {"name": "MariaDB", "version": m.pop("mariadb"), "settings": settings,
                         "durability": f"innodb_flush_log_at_trx_commit={settings.get('innodb_flush_log_at_trx_commit')}"}
        for r in report["results"]:
            r["resources"]["cores_database"] = r["resources"].pop("cores_mariadb")
    return report


if __name__ == "__main__":
    sys.path.insert(0, str(BENCH))
    sys.exit(main())
