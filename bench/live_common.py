"""What the live-status benches (watchers.py, stats.py) share: a fresh MariaDB database,
the CLI, a `serve` process on free ports, /proc CPU accounting, and their README block."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from contextlib import contextmanager
from pathlib import Path

import pymysql

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
README = REPO / "bench" / "README.md"
HZ = os.sysconf("SC_CLK_TCK")
MYSQL = dict(host=os.environ.get("TEST_MYSQL_HOST", "127.0.0.1"), port=int(os.environ.get("TEST_MYSQL_PORT", "3306")),
             user=os.environ.get("TEST_MYSQL_USER", "root"), password=os.environ.get("TEST_MYSQL_PASSWORD", ""))


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def sql(query: str, args=None, database: str | None = None) -> list[tuple]:
    conn = pymysql.connect(database=database, autocommit=True, **MYSQL)
    try:
        with conn.cursor() as cur:
            cur.execute(query, args)
            return list(cur.fetchall())
    finally:
        conn.close()


@contextmanager
def fresh_database(prefix: str):
    """A new MariaDB database, migrated; its URL. Dropped at the end."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    sql(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
    auth = MYSQL["user"] + (f":{MYSQL['password']}" if MYSQL["password"] else "")
    url = f"mysql+aiomysql://{auth}@{MYSQL['host']}:{MYSQL['port']}/{name}?charset=utf8mb4"
    try:
        yield name, url
    finally:
        sql(f"DROP DATABASE IF EXISTS `{name}`")
        log(f"dropped {name}")


def env_for(url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PAYMENTS_", "STRIPE_", "VNPAY_", "MYSQL_"))}
    env.update(PAYMENTS_DATABASE_URL=url, LOG_LEVEL="warning", PAYMENTS_ENV="test", **extra)
    return env


def cli(env: dict[str, str], *args: str) -> str:
    return subprocess.run([sys.executable, "-m", "payments_svc", *args], env=env, capture_output=True, text=True,
                          check=True, timeout=120).stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve(env: dict[str, str]):
    """`payments-svc serve` (one process) on free ports: (process, http url, grpc target)."""
    http, grpc_port = free_port(), free_port()
    env = dict(env, HTTP_HOST="127.0.0.1", GRPC_HOST="127.0.0.1", HTTP_PORT=str(http), GRPC_PORT=str(grpc_port),
               PAYMENTS_PUBLIC_BASE_URL=f"http://127.0.0.1:{http}")
    proc = subprocess.Popen([sys.executable, "-m", "payments_svc", "serve"], env=env)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{http}/readyz", timeout=1):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("serve did not start") from None
                time.sleep(0.1)
        yield proc, f"http://127.0.0.1:{http}", f"127.0.0.1:{grpc_port}"
    finally:
        proc.terminate()
        proc.wait(30)


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / HZ


def mariadb_pid() -> int | None:
    for name in ("mariadbd", "mysqld"):
        found = subprocess.run(["pidof", name], capture_output=True, text=True).stdout.split()
        if found:
            return int(found[0])
    return None


def write_block(name: str, text: str) -> None:
    """Replaces (or appends) the README block of one live bench."""
    begin, end = f"<!-- BEGIN {name}: bench/{name.lower()}.py rewrites this block -->", f"<!-- END {name} -->"
    readme = README.read_text()
    block = f"{begin}\n{text.rstrip()}\n{end}"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    README.write_text(pattern.sub(lambda _: block, readme) if pattern.search(readme) else readme.rstrip() + "\n\n" + block + "\n")
