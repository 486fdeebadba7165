"""Shared test helpers: databases on SQLite, MariaDB and PostgreSQL, and real server processes."""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MYSQL_HOST = os.environ.get("TEST_MYSQL_HOST", "127.0.0.1")
MYSQL_PORT = int(os.environ.get("TEST_MYSQL_PORT", "3306"))
MYSQL_USER = os.environ.get("TEST_MYSQL_USER", "root")
MYSQL_PASSWORD = os.environ.get("TEST_MYSQL_PASSWORD", "")
POSTGRES_HOST = os.environ.get("TEST_POSTGRES_HOST", "127.0.0.1")
POSTGRES_PORT = int(os.environ.get("TEST_POSTGRES_PORT", "5432"))
POSTGRES_USER = os.environ.get("TEST_POSTGRES_USER", "postgres")
POSTGRES_PASSWORD = os.environ.get("TEST_POSTGRES_PASSWORD", "")


def _mysql_connect(database: str | None = None):
    import pymysql

    return pymysql.connect(host=MYSQL_HOST, port=MYSQL_PORT, user=MYSQL_USER, password=MYSQL_PASSWORD,
                           database=database, autocommit=True, connect_timeout=3)


def mysql_available() -> str | None:
    """None if MariaDB/MySQL answers, else why not."""
    try:
        _mysql_connect().close()
        return None
    except Exception as exc:  # any failure means "not here"
        return f"{type(exc).__name__}: {exc}"


def require_mysql() -> None:
    _require("MariaDB", f"{MYSQL_HOST}:{MYSQL_PORT}", mysql_available())


def _require(server: str, address: str, problem: str | None) -> None:
    if problem is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{server} is required under CI but is unreachable at {address}: {problem}")
    pytest.skip(f"!!! {server.upper()} TESTS SKIPPED: {server} unreachable at {address} ({problem}) !!!")


def postgres_admin(*statements: str, database: str = "postgres") -> None:
    """Runs statements on the PostgreSQL server (asyncpg in a thread of its own, so that
    sync and async tests alike can call it)."""
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(host=POSTGRES_HOST, port=POSTGRES_PORT, user=POSTGRES_USER,
                                     password=POSTGRES_PASSWORD or None, database=database, timeout=3)
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, run()).result()


def postgres_available() -> str | None:
    """None if PostgreSQL answers, else why not."""
    try:
        postgres_admin("SELECT 1")
        return None
    except Exception as exc:  # any failure means "not here"
        return f"{type(exc).__name__}: {exc}"


def require_postgres() -> None:
    _require("PostgreSQL", f"{POSTGRES_HOST}:{POSTGRES_PORT}", postgres_available())


@dataclass
class TestDatabase:
    backend: str
    url: str
    name: str | None = None  # the MySQL or PostgreSQL database name

    def drop(self) -> None:
        if self.backend == "mysql":
            conn = _mysql_connect()
            with conn.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS `{self.name}`")
            conn.close()
        elif self.backend == "postgresql":
            postgres_admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def new_database(backend: str, tmp_path: Path) -> TestDatabase:
    """A new empty database: "sqlite" (a file in tmp_path), "mysql" or "postgresql" (a
    randomly named database on the local server; drop() it)."""
    if backend == "sqlite":
        return TestDatabase("sqlite", f"sqlite+aiosqlite:///{tmp_path / ('t-' + uuid.uuid4().hex[:8] + '.sqlite3')}")
    name = "payments_test_" + uuid.uuid4().hex[:12]
    if backend == "postgresql":
        require_postgres()
        postgres_admin(f'CREATE DATABASE "{name}" ENCODING \'UTF8\' TEMPLATE template0')
        auth = POSTGRES_USER + (f":{POSTGRES_PASSWORD}" if POSTGRES_PASSWORD else "")
        return TestDatabase("postgresql", f"postgresql+asyncpg://{auth}@{POSTGRES_HOST}:{POSTGRES_PORT}/{name}", name)
    require_mysql()
    conn = _mysql_connect()
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
    conn.close()
    auth = MYSQL_USER + (f":{MYSQL_PASSWORD}" if MYSQL_PASSWORD else "")
    return TestDatabase("mysql", f"mysql+asyncmy://{auth}@{MYSQL_HOST}:{MYSQL_PORT}/{name}?charset=utf8mb4", name)


# Test servers' ports: below Linux's ephemeral range (32768-60999), where the OS never puts an
# outgoing connection, in a block of their own per pytest-xdist worker, so that neither a
# client socket nor a parallel worker takes a port between its choice and the server's bind.
_PORT_BLOCK = 2000
_WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
_next_port = itertools.cycle(range(20000 + _WORKER * _PORT_BLOCK, 20000 + (_WORKER + 1) * _PORT_BLOCK))
for _ in range(random.randrange(_PORT_BLOCK)):  # another run's servers may still be closing
    next(_next_port)


def free_port() -> int:
    for _ in range(_PORT_BLOCK):
        port = next(_next_port)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in this worker's block")


def cli(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "payments_svc", *args], env=env, capture_output=True, text=True,
                          check=check, cwd=env.get("PWD_FOR_TESTS", str(REPO)), timeout=60)


def base_env(database_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PAYMENTS_", "STRIPE_", "VNPAY_", "MYSQL_", "AUTH_", "APP_"))}
    env.update({"PAYMENTS_DATABASE_URL": database_url, "LOG_LEVEL": "warning", "PAYMENTS_ENV": "test"})
    env.update(extra)
    return env


def create_key(env: dict[str, str], service: str, *acts_for: str) -> str:
    args = ["keys", "create", "--service", service]
    for other in acts_for:
        args += ["--acts-for", other]
    return cli(env, *args).stdout.strip()


@dataclass
class ServerProcess:
    """`payments-svc serve` as a real process on free ports."""

    env: dict[str, str]
    http_port: int = field(default_factory=free_port)
    grpc_port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None
    log_path: Path | None = None

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def start(self, *extra_args: str, timeout: float = 60.0) -> ServerProcess:
        env = dict(self.env, HTTP_PORT=str(self.http_port), GRPC_PORT=str(self.grpc_port), HTTP_HOST="127.0.0.1",
                   GRPC_HOST="127.0.0.1", PAYMENTS_PUBLIC_BASE_URL=f"http://127.0.0.1:{self.http_port}")
        self.env = env
        self.log_path = Path(env.get("TEST_LOG_DIR", "/tmp")) / f"serve-{self.http_port}.log"
        log = open(self.log_path, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "payments_svc", "serve", *extra_args], env=env,
                                     stdout=log, stderr=subprocess.STDOUT, cwd=str(REPO))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_path.read_text()}")
            try:
                import urllib.request

                with urllib.request.urlopen(self.http_url + "/readyz", timeout=1) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"server not ready in {timeout}s:\n{self.log_path.read_text()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise

    def logs(self) -> str:
        return self.log_path.read_text() if self.log_path else ""


async def wait_until(predicate, timeout: float = 20.0, interval: float = 0.05):  # room for a loaded CI machine
    deadline = time.monotonic() + timeout
    while True:
        result = await predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)
