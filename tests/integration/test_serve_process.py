"""`payments-svc serve` and the other commands as an operator meets them, as real
processes: a port in use, an unreachable database, a wrong password or an unmigrated
schema is one clear line and exit 1, never a traceback; SIGTERM with the default drain
of 0 answers requests that have begun arriving (from their first byte); the sandbox
enabled in production logs a warning; PAYMENTS_METRICS_PORT serves /metrics and
/healthz and nothing of the API; `serve --with-workers` runs the Stellar watcher too."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from contextlib import closing, contextmanager

import pytest
from stellar_sdk import Asset, Keypair, Network

from ..fakes.horizon_server import FakeHorizon
from ..support import MYSQL_HOST, MYSQL_PORT, MYSQL_USER, REPO, ServerProcess, base_env, cli, create_key, free_port, require_mysql

PENDING, PAID = 2, 10


@pytest.fixture
def sqlite_env(tmp_path):
    env = base_env(f"sqlite+aiosqlite:///{tmp_path / 'serve.sqlite3'}", TEST_LOG_DIR=str(tmp_path))
    cli(env, "db", "migrate")
    return env


@contextmanager
def running(env: dict[str, str], *args: str):
    server = ServerProcess(dict(env))
    try:
        yield server.start(*args)
    finally:
        server.stop()


def assert_one_clear_line(result: subprocess.CompletedProcess, *expected: str) -> str:
    assert result.returncode == 1, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.stderr
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


# ---- start-up failures: one line, exit 1 -------------------------------------------


@pytest.mark.parametrize("variable", ["HTTP_PORT", "GRPC_PORT", "PAYMENTS_METRICS_PORT"])
def test_a_port_in_use(sqlite_env, variable):
    with closing(socket.create_server(("127.0.0.1", 0))) as taken:
        port = taken.getsockname()[1]
        env = dict(sqlite_env, HTTP_HOST="127.0.0.1", GRPC_HOST="127.0.0.1", HTTP_PORT=str(free_port()),
                   GRPC_PORT=str(free_port()))
        env[variable] = str(port)
        line = assert_one_clear_line(cli(env, "serve", check=False), f":{port} ({variable})", "in use")
    assert line.startswith("Error: cannot listen on")


def test_an_unreachable_database(tmp_path):
    closed_port = free_port()  # nothing listens there
    env = base_env(f"mysql+aiomysql://payments:secret-pw@127.0.0.1:{closed_port}/payments")
    for args in (("serve",), ("keys", "list"), ("callbacks", "dispatch"), ("db", "migrate")):
        line = assert_one_clear_line(cli(env, *args, check=False), "database unavailable", "Can't connect")
        assert "secret-pw" not in line and "payments:***@" in line


@pytest.mark.mysql
def test_a_wrong_database_password():
    require_mysql()
    env = base_env(f"mysql+aiomysql://{MYSQL_USER}:not-the-password@{MYSQL_HOST}:{MYSQL_PORT}/mysql")
    for args in (("serve",), ("keys", "list")):
        line = assert_one_clear_line(cli(env, *args, check=False), "database unavailable", "Access denied")
        assert "not-the-password" not in line


def test_an_unmigrated_database(tmp_path):
    env = base_env(f"sqlite+aiosqlite:///{tmp_path / 'empty.sqlite3'}")
    for args in (("keys", "list"), ("keys", "create", "--service", "shop"), ("keys", "signing-secret", "--service", "shop"),
                 ("serve",), ("reconcile",)):
        assert_one_clear_line(cli(env, *args, check=False), "run `payments-svc db migrate`")


# ---- SIGTERM with the default drain of 0 ---------------------------------------------


def read_response(sock: socket.socket) -> tuple[int, dict]:
    """One HTTP/1.1 response with a Content-Length body: (status, JSON body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed mid-body"
        body += chunk
    return int(head.split(b" ")[1]), json.loads(body)


def create_request(key: str) -> bytes:
    body = json.dumps(dict(request_id=uuid.uuid4().hex, caller_service="shop", resource_type="order", resource_id="o-1",
                           amount_cents=1500, currency="usd", payment_method=1, payment_type=1,
                           status_callback_url="https://shop.example/cb")).encode()
    return (f"POST /payments HTTP/1.1\r\nHost: payments\r\nX-Request-ID: {uuid.uuid4().hex}\r\nX-API-Key: {key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


def test_sigterm_without_drain_answers_requests_that_have_begun_arriving(sqlite_env):
    key = create_key(sqlite_env, "shop")
    # A grace far longer than the test waits: an idle connection must not hold the exit up.
    env = dict(sqlite_env, LOG_LEVEL="info", PAYMENTS_SHUTDOWN_GRACE_SECONDS="120")
    server = ServerProcess(env).start()
    try:
        body_pending, head_pending, idle = (socket.create_connection(("127.0.0.1", server.http_port)) for _ in range(3))
        with body_pending, head_pending, idle:
            first, second = create_request(key), create_request(key)
            body_pending.sendall(first[:-20])  # the head and most of the body
            head_pending.sendall(second[:3])  # "POS"
            idle.sendall(create_request(key))
            assert read_response(idle)[0] == 201  # answered, kept alive, idle from now on
            time.sleep(0.2)  # let the server read what was sent

            server.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 20
            while '"event": "shutting_down"' not in server.logs():
                assert time.monotonic() < deadline, server.logs()
                time.sleep(0.05)
            time.sleep(0.2)  # past the drain of 0: the listener is closed now
            with pytest.raises(OSError):
                socket.create_connection(("127.0.0.1", server.http_port), timeout=2).close()

            body_pending.sendall(first[-20:])
            head_pending.sendall(second[3:])
            for sock in (body_pending, head_pending):
                status, answer = read_response(sock)
                assert status == 201 and answer["payment"]["status"] == PENDING, answer
            assert idle.recv(1) == b""  # idle connections are closed, not kept for the grace period
        assert server.proc.wait(60) == 0, server.logs()
    finally:
        server.stop()


# ---- warnings, the metrics port, workers in the server -------------------------------


def test_the_sandbox_enabled_in_production_logs_a_warning(sqlite_env):
    production = dict(sqlite_env, PAYMENTS_ENV="production", PAYMENTS_SANDBOX_ENABLED="true")
    with running(production) as server:
        warnings = [json.loads(line) for line in server.logs().splitlines() if "sandbox_enabled_in_production" in line]
    assert [w["level"] for w in warnings] == ["warning"], server.logs()
    assert "PAYMENTS_SANDBOX_ENABLED" in warnings[0]["message"]
    with running(sqlite_env) as server:  # a test environment: nothing to warn about
        assert "sandbox_enabled_in_production" not in server.logs()


def test_the_metrics_port_serves_metrics_and_liveness_only(sqlite_env, tmp_path):
    metrics_port = free_port()
    with running(dict(sqlite_env, PAYMENTS_METRICS_PORT=str(metrics_port))) as server:
        status, text = get(f"http://127.0.0.1:{metrics_port}/metrics")
        assert status == 200 and b"payments_callback_outbox_due" in text
        assert get(f"http://127.0.0.1:{metrics_port}/healthz") == (200, b'{"status": "ok"}')
        for path in ("/payments", "/readyz", "/openapi.json", "/health"):
            assert get(f"http://127.0.0.1:{metrics_port}{path}")[0] == 404, path
        assert get(server.http_url + "/metrics")[0] == 200  # the HTTP port keeps its /metrics

    worker_port = free_port()
    with open(tmp_path / "worker.log", "w") as log:
        worker = subprocess.Popen([sys.executable, "-m", "payments_svc", "callbacks", "dispatch", "--worker"],
                                  env=dict(sqlite_env, PAYMENTS_METRICS_PORT=str(worker_port)), cwd=str(REPO),
                                  stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                assert get(f"http://127.0.0.1:{worker_port}/healthz") == (200, b'{"status": "ok"}')
                break
            except OSError:
                assert worker.poll() is None and time.monotonic() < deadline, (tmp_path / "worker.log").read_text()
                time.sleep(0.1)
        status, text = get(f"http://127.0.0.1:{worker_port}/metrics")
        assert status == 200 and b"payments_job_runs_total" in text
        assert get(f"http://127.0.0.1:{worker_port}/payments")[0] == 404
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0, (tmp_path / "worker.log").read_text()


@pytest.fixture
def horizon():
    fake = FakeHorizon(sse_retry_ms=50, keepalive_interval=0.5)
    fake.start_in_thread()
    yield fake
    fake.stop_thread()


def test_serve_with_workers_runs_the_stellar_watcher(sqlite_env, horizon):
    shop, buyer = Keypair.random(), Keypair.random()
    horizon.create_account(shop)
    horizon.create_account(buyer, {Asset.native(): "1000"})
    env = dict(sqlite_env, LOG_LEVEL="info", STELLAR_HORIZON_URL=horizon.url, STELLAR_RECEIVING_ACCOUNT=shop.public_key,
               STELLAR_NETWORK_PASSPHRASE=Network.TESTNET_NETWORK_PASSPHRASE, STELLAR_ASSETS="XLM:native",
               STELLAR_START_CURSOR="now", STELLAR_BACKOFF_MIN_SECONDS="0.1", STELLAR_BACKOFF_MAX_SECONDS="1",
               PAYMENTS_RECONCILE_INTERVAL_MINUTES="60")  # so the watcher, not reconcile's paging, credits it
    key = create_key(env, "shop")
    with running(env, "--with-workers") as server:
        serving = next(json.loads(line) for line in server.logs().splitlines() if '"event": "serving"' in line)
        assert serving["workers"] == ["callbacks_dispatch", "expire_pending", "reconcile", "stellar_watch"]
        request = urllib.request.Request(server.http_url + "/payments", method="POST", data=json.dumps(dict(
            request_id=uuid.uuid4().hex, caller_service="shop", resource_type="order", resource_id="o-1", amount_cents=1500,
            currency="XLM", payment_method="payment_link", payment_type="one_time", provider="stellar",
            status_callback_url="https://shop.example/cb")).encode(),
            headers={"X-Request-ID": "r1", "X-API-Key": key, "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as resp:
            payment = json.loads(resp.read())["payment"]
        horizon.pay_sync(buyer, shop, "15", Asset.native(), payment["stellar_instructions"]["memo"])

        deadline = time.monotonic() + 30
        while True:
            request = urllib.request.Request(server.http_url + f"/payments/{payment['id']}",
                                             headers={"X-Request-ID": "r2", "X-API-Key": key})
            with urllib.request.urlopen(request, timeout=10) as resp:
                if json.loads(resp.read())["payment"]["status"] == PAID:
                    break
            assert time.monotonic() < deadline, server.logs()
            time.sleep(0.1)
        assert server.stop() == 0, server.logs()
