"""The e2e stack: a fresh database, and `payments-svc serve` plus every worker as real
processes, each with a pidfile and a log in the run directory.

Also a small command line for e2e/run.sh (which owns the database's life and the
last-resort clean-up):

    python -m e2e.stack create-db [SERVER_URL]   # prints the URL of a new, empty database
    python -m e2e.stack drop-db URL              # drops a database create-db made
    python -m e2e.stack reap RUN_DIR             # stops every process still listed in RUN_DIR/pids

SERVER_URL is a SQLAlchemy URL (`mysql+asyncmy://user:pass@host:3306/`,
`postgresql+asyncpg://postgres@host:5432/`) or a Go DSN
(`user:pass@tcp(host:3306)/anything`); without one, TEST_MYSQL_HOST/PORT/USER/PASSWORD
(default root@127.0.0.1:3306, as the unit tests use).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DB_PREFIX = "payments_e2e_"
# Variables of the operator's shell that must not leak into the processes under test.
FOREIGN_PREFIXES = ("PAYMENTS_", "STRIPE_", "STELLAR_", "VNPAY_", "MYSQL_", "AUTH_", "APP_", "HTTP_", "GRPC_", "LOG_LEVEL")


# --------------------------------------------------------------------------- database


def default_server_url() -> str:
    host = os.environ.get("TEST_MYSQL_HOST", "127.0.0.1")
    port = os.environ.get("TEST_MYSQL_PORT", "3306")
    user = os.environ.get("TEST_MYSQL_USER", "root")
    password = os.environ.get("TEST_MYSQL_PASSWORD", "")
    auth = user + (f":{password}" if password else "")
    return f"mysql+asyncmy://{auth}@{host}:{port}/"


def _normalise(url: str) -> str:
    from payments_svc.config import mysql_dsn_to_url

    if "://" not in url:
        url = mysql_dsn_to_url(url)  # a Go DSN, as MYSQL_DSN takes it
    return url


def _mysql_connect(url: str, database: str | None = None):
    import pymysql
    from sqlalchemy.engine import make_url

    u = make_url(url)
    kwargs = dict(host=u.host or "127.0.0.1", port=u.port or 3306, user=u.username or "root",
                  password=u.password or "", database=database, autocommit=True, connect_timeout=5)
    if "unix_socket" in u.query:
        kwargs["unix_socket"] = u.query["unix_socket"]
    return pymysql.connect(**kwargs)


def _postgres(url: str, statement: str) -> None:
    """One statement on the PostgreSQL server's `postgres` database (asyncpg, the driver
    the service uses)."""
    import asyncio

    import asyncpg
    from sqlalchemy.engine import make_url

    u = make_url(url)

    async def run() -> None:
        conn = await asyncpg.connect(host=u.host or "127.0.0.1", port=u.port or 5432, user=u.username or "postgres",
                                     password=u.password, database="postgres", timeout=5)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(run())


def create_database(server_url: str | None = None, run_dir: Path | None = None) -> str:
    """A new, empty database on the server; returns its URL for PAYMENTS_DATABASE_URL."""
    from sqlalchemy.engine import make_url

    url = _normalise(server_url or default_server_url())
    name = DB_PREFIX + uuid.uuid4().hex[:12]
    if url.startswith("sqlite"):
        directory = run_dir or Path(os.environ.get("TMPDIR", "/tmp"))
        return f"sqlite+aiosqlite:///{directory / (name + '.sqlite3')}"
    if make_url(url).get_backend_name() == "postgresql":
        _postgres(url, f'CREATE DATABASE "{name}" ENCODING \'UTF8\' TEMPLATE template0')
        return make_url(url).set(drivername="postgresql+asyncpg", database=name).render_as_string(hide_password=False)
    conn = _mysql_connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
    finally:
        conn.close()
    u = make_url(url)
    # The driver the URL names, if async (`mysql+aiomysql` runs the suite on aiomysql); else the default.
    u = u.set(drivername=u.drivername if u.drivername in ("mysql+asyncmy", "mysql+aiomysql") else "mysql+asyncmy",
              database=name)
    query = dict(u.query)
    query.setdefault("charset", "utf8mb4")
    return u.set(query=query).render_as_string(hide_password=False)


def drop_database(url: str) -> None:
    """Drops a database create_database made (refuses any other name)."""
    from sqlalchemy.engine import make_url

    if url.startswith("sqlite"):
        path = Path(url.split(":///", 1)[1])
        if path.name.startswith(DB_PREFIX):
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(str(path) + suffix).unlink(missing_ok=True)
        return
    name = make_url(url).database or ""
    if not name.startswith(DB_PREFIX):
        raise SystemExit(f"refusing to drop {name!r}: not a database the e2e suite created")
    if make_url(url).get_backend_name() == "postgresql":
        _postgres(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        return
    conn = _mysql_connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
    finally:
        conn.close()


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def payments_svc_command() -> list[str]:
    """The installed console script next to this interpreter (what operators run), else -m."""
    script = Path(sys.executable).with_name("payments-svc")
    return [str(script)] if script.exists() else [sys.executable, "-m", "payments_svc"]


def clean_environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN_PREFIXES)}


def run_cli(env: dict[str, str], *args: str, timeout: float = 60) -> str:
    """A one-off `payments-svc ...`; returns stdout, raises with stderr on failure."""
    done = subprocess.run([*payments_svc_command(), *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=str(REPO))
    if done.returncode != 0:
        raise RuntimeError(f"payments-svc {' '.join(args)} exited {done.returncode}:\n{done.stderr}")
    return done.stdout


def _is_ours(pid: int) -> bool:
    """Only ever signal a pid that is still a payments-svc process (pids are reused)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"payments_svc" in cmdline or b"payments-svc" in cmdline


@dataclass
class Proc:
    """One `payments-svc ...` process; start() again after it stopped restarts it."""

    name: str
    args: tuple[str, ...]
    env: dict[str, str]
    run_dir: Path
    ready_marker: str | None = None  # a log line's event once its signal handlers are in place
    metrics_port: int | None = None  # a worker's /metrics (PAYMENTS_METRICS_PORT)
    popen: subprocess.Popen | None = None
    starts: int = 0

    @property
    def pidfile(self) -> Path:
        return self.run_dir / "pids" / f"{self.name}.pid"

    @property
    def logfile(self) -> Path:
        return self.run_dir / "logs" / f"{self.name}.log"

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def start(self, wait: bool = True) -> Proc:
        """Starts it and (wait) waits until it is up: a SIGTERM that arrives while Python
        is still importing ends a process with -15, not with its orderly exit."""
        assert not self.running(), f"{self.name} is running already"
        self.pidfile.parent.mkdir(parents=True, exist_ok=True)
        self.logfile.parent.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        log = open(self.logfile, "a")
        log.write(f"\n===== start #{self.starts}: payments-svc {' '.join(self.args)} =====\n")
        log.flush()
        self.popen = subprocess.Popen([*payments_svc_command(), *self.args], env=self.env, stdout=log,
                                      stderr=subprocess.STDOUT, cwd=str(REPO))
        log.close()
        self.pidfile.write_text(str(self.popen.pid))
        if wait:
            self.wait_ready()
        return self

    def current_log(self) -> str:
        """The log of the current run only."""
        return self.log_text().rpartition(f"===== start #{self.starts}:")[2]

    def wait_ready(self, timeout: float = 60.0) -> Proc:
        deadline = time.monotonic() + timeout
        while self.ready_marker is not None and f'"{self.ready_marker}"' not in self.current_log():
            if not self.running():
                raise RuntimeError(f"{self.name} exited with {self.popen.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not log {self.ready_marker} in {timeout}s:\n{self.log_tail()}")
            time.sleep(0.05)
        return self

    def send_signal(self, sig: int) -> None:
        assert self.running(), f"{self.name} is not running"
        self.popen.send_signal(sig)

    def wait(self, timeout: float = 30.0) -> int:
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(10)
            self.pidfile.unlink(missing_ok=True)
            raise AssertionError(f"{self.name} did not exit within {timeout}s; killed. Log:\n{self.log_tail()}") from None
        self.pidfile.unlink(missing_ok=True)
        return code

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        """Signals and waits; None if it was not running."""
        if not self.running():
            return None
        self.send_signal(sig)
        return self.wait(timeout)

    def log_text(self) -> str:
        return self.logfile.read_text(errors="replace") if self.logfile.exists() else ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


@dataclass
class Server(Proc):
    http_port: int = field(default_factory=free_port)
    grpc_port: int = field(default_factory=free_port)

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def wait_ready(self, timeout: float = 60.0) -> Server:  # readiness, as Kubernetes asks
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                raise RuntimeError(f"{self.name} exited with {self.popen.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.http_url + "/readyz", timeout=1) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready in {timeout}s:\n{self.log_tail()}")


# name: (arguments, the log event that says it is up and handles SIGTERM)
WORKERS: dict[str, tuple[tuple[str, ...], str]] = {
    "dispatcher": (("callbacks", "dispatch", "--worker"), "worker_started"),
    "reconcile": (("reconcile", "--worker"), "worker_started"),
    "expire": (("expire", "pending", "--worker"), "worker_started"),
    "stellar-watch": (("stellar", "watch", "--worker"), "stellar_stream_open"),
}


@dataclass
class Stack:
    """serve + the workers, sharing one environment."""

    env: dict[str, str]
    run_dir: Path
    server: Server = field(init=False)
    workers: dict[str, Proc] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.server = Server("server", ("serve",), {}, self.run_dir)
        self.env = {**self.env, "HTTP_HOST": "127.0.0.1", "GRPC_HOST": "127.0.0.1",
                    "HTTP_PORT": str(self.server.http_port), "GRPC_PORT": str(self.server.grpc_port),
                    "PAYMENTS_PUBLIC_BASE_URL": self.server.http_url}
        self.server.env = self.env

    def add_worker(self, name: str) -> Proc:
        args, marker = WORKERS[name]
        port = free_port()
        self.workers[name] = Proc(name, args, {**self.env, "PAYMENTS_METRICS_PORT": str(port)}, self.run_dir,
                                  ready_marker=marker, metrics_port=port)
        return self.workers[name]

    def start(self) -> None:
        procs = [self.server, *self.workers.values()]
        for p in procs:
            p.start(wait=False)
        for p in procs:
            p.wait_ready()

    def stop(self) -> dict[str, int]:
        """SIGTERM to everything still running; the exit code of every process started
        (of its last run: one that died on its own shows how)."""
        codes, stopping = {}, []
        for p in [*self.workers.values(), self.server]:
            if p.popen is None:
                continue
            if p.running():
                p.send_signal(signal.SIGTERM)
                stopping.append(p)
            else:
                codes[p.name] = p.popen.returncode
        for p in stopping:
            codes[p.name] = p.wait(60)
        return codes


def reap(run_dir: Path, grace: float = 20.0) -> list[int]:
    """Stops every process a pidfile in run_dir still names (after a crash of the suite)."""
    pids = []
    for pidfile in sorted((run_dir / "pids").glob("*.pid")):
        try:
            pid = int(pidfile.read_text().strip())
        except (OSError, ValueError):
            continue
        if _is_ours(pid):
            try:
                os.kill(pid, signal.SIGTERM)
                pids.append(pid)
            except ProcessLookupError:
                pass
        pidfile.unlink(missing_ok=True)
    deadline = time.monotonic() + grace
    for pid in pids:
        while _is_ours(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _is_ours(pid):
            os.kill(pid, signal.SIGKILL)
    return pids


def main(argv: list[str]) -> int:
    if len(argv) >= 1 and argv[0] == "create-db":
        print(create_database(argv[1] if len(argv) > 1 and argv[1] else None,
                              Path(argv[2]) if len(argv) > 2 else None))
        return 0
    if len(argv) == 2 and argv[0] == "drop-db":
        drop_database(argv[1])
        return 0
    if len(argv) == 2 and argv[0] == "reap":
        stopped = reap(Path(argv[1]))
        if stopped:
            print(f"stopped leftover processes: {' '.join(map(str, stopped))}", file=sys.stderr)
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
