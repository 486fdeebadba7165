#!/usr/bin/env python3
"""`make bench`, provider outage scenario: the provider fails every call by hanging past
the provider timeout (10 s), with 64 creates in flight over HTTP. Until the circuit opens
creates wait the full timeout; once it is open they must answer in milliseconds (503,
Retry-After), and GetPayment must go on as before the outage.

One `payments-svc serve` on a fresh MariaDB database (SQLite with --sqlite), the sandbox
provider delayed 60 s (PAYMENTS_SANDBOX_DELAY_MS) so every create times out, the default
breaker (5 consecutive failures). Phases: GetPayment alone (8 in flight) as the baseline,
then the outage: 64 creates in flight plus the same GetPayment load, for --duration
seconds. Prints the figures and writes bench/results/<date>-provider-outage.json."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
PY = sys.executable
MYSQL = dict(host=os.environ.get("TEST_MYSQL_HOST", "127.0.0.1"), port=int(os.environ.get("TEST_MYSQL_PORT", "3306")),
             user=os.environ.get("TEST_MYSQL_USER", "root"), password=os.environ.get("TEST_MYSQL_PASSWORD", ""))
CREATES_IN_FLIGHT, READS_IN_FLIGHT = 64, 8
PROVIDER_TIMEOUT_SECONDS = 10


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f}"


def create_body() -> dict:
    return dict(request_id="outage-" + uuid.uuid4().hex, caller_service="bench", resource_type="order",
                resource_id="o-1", amount_cents=1999, currency="usd", payment_method=1, payment_type=1,
                status_callback_url="https://shop.internal/payments/callback")


async def closed_loop(session, in_flight: int, until: float, request) -> list[tuple[float, float, int, str | None]]:
    """(started, seconds, status, Retry-After) of every request made by `in_flight` loops until `until`."""
    out = []

    async def loop():
        while time.monotonic() < until:
            started = time.monotonic()
            status, retry_after = await request(session)
            out.append((started, time.monotonic() - started, status, retry_after))

    await asyncio.gather(*(loop() for _ in range(in_flight)))
    return out


async def measure(base: str, key: str, payment_id: int, duration: float) -> dict:
    headers = {"X-API-Key": key}

    async def get(session):
        async with session.get(f"{base}/payments/{payment_id}", headers={**headers, "X-Request-ID": uuid.uuid4().hex}) as r:
            await r.read()
            return r.status, None

    async def create(session):
        async with session.post(f"{base}/payments", json=create_body(),
                                headers={**headers, "X-Request-ID": uuid.uuid4().hex}) as r:
            await r.read()
            return r.status, r.headers.get("Retry-After")

    connector = aiohttp.TCPConnector(limit=CREATES_IN_FLIGHT + READS_IN_FLIGHT)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
        baseline = await closed_loop(session, READS_IN_FLIGHT, time.monotonic() + 5, get)
        start = time.monotonic()
        until = start + duration
        creates, reads = await asyncio.gather(closed_loop(session, CREATES_IN_FLIGHT, until, create),
                                              closed_loop(session, READS_IN_FLIGHT, until, get))
        # At 64 in flight the latency is mostly queueing (Little's law: 64 / throughput); one
        # create at a time shows what a refused create itself costs.
        alone = await closed_loop(session, 1, time.monotonic() + 3, create)
    waited = [c for c in creates if c[1] >= PROVIDER_TIMEOUT_SECONDS * 0.9]
    fast = [c for c in creates if c[1] < PROVIDER_TIMEOUT_SECONDS * 0.9]
    opened_at = min((c[0] + c[1] for c in fast), default=None)
    return {
        "provider_timeout_seconds": PROVIDER_TIMEOUT_SECONDS,
        "creates_in_flight": CREATES_IN_FLIGHT,
        "duration_seconds": duration,
        "creates_that_waited_for_the_timeout": len(waited),
        "circuit_open_after_seconds": None if opened_at is None else round(opened_at - start, 2),
        "creates_once_open": len(fast),
        "creates_once_open_statuses": sorted({c[2] for c in fast}),
        "creates_once_open_retry_after": sorted({c[3] for c in fast if c[3]}),
        "creates_once_open_p50_ms": ms(percentile([c[1] for c in fast], 50)),
        "creates_once_open_p99_ms": ms(percentile([c[1] for c in fast], 99)),
        "creates_once_open_max_ms": ms(max((c[1] for c in fast), default=None)),
        "creates_once_open_per_second": round(len(fast) / (until - opened_at), 1) if opened_at else None,
        "create_alone_once_open_p50_ms": ms(percentile([c[1] for c in alone], 50)),
        "create_alone_once_open_p99_ms": ms(percentile([c[1] for c in alone], 99)),
        "get_baseline_requests": len(baseline),
        "get_baseline_p50_ms": ms(percentile([r[1] for r in baseline], 50)),
        "get_baseline_p99_ms": ms(percentile([r[1] for r in baseline], 99)),
        "get_during_outage_requests": len(reads),
        "get_during_outage_statuses": sorted({r[2] for r in reads}),
        "get_during_outage_p50_ms": ms(percentile([r[1] for r in reads], 50)),
        "get_during_outage_p99_ms": ms(percentile([r[1] for r in reads], 99)),
    }


def cli(env: dict, *args: str) -> str:
    return subprocess.run([PY, "-m", "payments_svc", *args], env=env, capture_output=True, text=True, check=True,
                          cwd=REPO).stdout.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of outage measured")
    parser.add_argument("--sqlite", action="store_true", help="the embedded SQLite database instead of MariaDB")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-outage-"))
    database = None
    if args.sqlite:
        url = f"sqlite+aiosqlite:///{tmp / 'bench.sqlite3'}"
    else:
        import pymysql

        database = "payments_bench_" + uuid.uuid4().hex[:10]
        conn = pymysql.connect(autocommit=True, **MYSQL)
        conn.cursor().execute(f"CREATE DATABASE `{database}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
        auth = MYSQL["user"] + (f":{MYSQL['password']}" if MYSQL["password"] else "")
        url = f"mysql+aiomysql://{auth}@{MYSQL['host']}:{MYSQL['port']}/{database}?charset=utf8mb4"
    http_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PAYMENTS_", "STRIPE_", "VNPAY_", "MYSQL_"))}
    env.update(PAYMENTS_DATABASE_URL=url, LOG_LEVEL="warning", HTTP_HOST="127.0.0.1", HTTP_PORT=str(http_port),
               GRPC_HOST="127.0.0.1", GRPC_PORT=str(free_port()), PAYMENTS_SANDBOX_DELAY_MS="60000",
               PAYMENTS_PROVIDER_TIMEOUT_SECONDS=str(PROVIDER_TIMEOUT_SECONDS))
    server = None
    try:
        cli(env, "db", "migrate")
        key = cli(env, "keys", "create", "--service", "bench")
        log = open(tmp / "serve.log", "w")
        server = subprocess.Popen([PY, "-m", "payments_svc", "serve"], env=env, stdout=log, stderr=subprocess.STDOUT,
                                  cwd=REPO)
        base = f"http://127.0.0.1:{http_port}"
        for _ in range(200):
            try:
                with urllib.request.urlopen(base + "/readyz", timeout=1):
                    break
            except OSError:
                time.sleep(0.1)
        # The payment GetPayment reads: created while the provider is still answering would need
        # another server; a create that timed out is a CREATED payment, as good to read.
        request = urllib.request.Request(base + "/payments", data=json.dumps(create_body()).encode(), method="POST",
                                         headers={"X-API-Key": key, "X-Request-ID": "fixture",
                                                  "Content-Type": "application/json"})
        try:
            urllib.request.urlopen(request, timeout=PROVIDER_TIMEOUT_SECONDS + 5)
        except urllib.error.HTTPError as exc:  # 503: the provider timed out (the first failure)
            assert exc.code == 503, exc.code
        payment_id = 1  # that payment, the first of a fresh database
        figures = asyncio.run(measure(base, key, payment_id, args.duration))
    finally:
        if server is not None:
            server.terminate()
            server.wait(30)
        if database is not None:
            conn.cursor().execute(f"DROP DATABASE IF EXISTS `{database}`")
    figures["database"] = "sqlite" if args.sqlite else "mariadb"
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{dt.datetime.now(dt.UTC):%Y-%m-%dT%H%M%SZ}-provider-outage.json"
    out.write_text(json.dumps(figures, indent=2) + "\n")
    width = max(map(len, figures))
    for name, value in figures.items():
        print(f"{name:<{width}}  {value}")
    print(f"written to {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
