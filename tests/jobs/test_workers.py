"""The job commands as real processes: four dispatchers against MariaDB delivering
500 callbacks exactly once, SIGKILL mid-batch, SIGTERM, exit codes, the --worker
flag in both places, the signing-secret command, and replay over HTTP and gRPC."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections import Counter
from datetime import timedelta

import aiohttp
import grpc
import pytest
import sqlalchemy as sa

from payments_svc.clock import utcnow
from payments_svc.config import load_settings
from payments_svc.db.engine import open_database
from payments_svc.db.tables import callback_attempts, payments
from payments_svc.domain.enums import DeliveryStatus, PaymentStatus
from payments_svc.gen import payments_pb2 as pb
from payments_svc.gen import payments_pb2_grpc

from ..support import ServerProcess, base_env, cli, create_key, new_database
from .helpers import (
    SHOP_SECRET,
    JobProcess,
    Receiver,
    delivery_rows,
    eventually,
    job_env,
    migrate_database,
    run_cli,
    seed_due_callbacks,
    verify_standard_webhook,
)


@pytest.fixture
async def receiver():
    r = await Receiver().start()
    yield r
    await r.stop()


@pytest.fixture
async def migrated(database):
    await migrate_database(database.url)
    return database


@pytest.fixture
async def migrated_sqlite(tmp_path):
    """For what does not depend on the backend (exit codes, flags, the API shape)."""
    database = new_database("sqlite", tmp_path)
    await migrate_database(database.url)
    return database


@pytest.fixture
def processes():
    started: list[JobProcess] = []
    yield started
    for p in started:
        p.kill_if_running()


async def start(processes: list, env: dict, tmp_path, *args: str) -> JobProcess:
    process = await JobProcess(env, args, tmp_path / f"job-{len(processes)}.log").start()
    processes.append(process)
    return process


@pytest.mark.mysql
async def test_four_dispatchers_deliver_500_callbacks_exactly_once(tmp_path, receiver, processes):
    database = new_database("mysql", tmp_path)
    try:
        await migrate_database(database.url)
        ids = await seed_due_callbacks(database.url, 500, receiver.url())
        receiver.delay = 0.005  # slow enough that the dispatchers' batches overlap
        env = job_env(database.url, LOG_LEVEL="info", PAYMENTS_JOB_BATCH_SIZE="25",
                      PAYMENTS_CALLBACK_DISPATCH_INTERVAL_SECONDS="0.2")
        workers = [await start(processes, env, tmp_path, "callbacks", "dispatch", "--worker") for _ in range(4)]
        await eventually(lambda: len(receiver.received) >= 500, timeout=60)
        await asyncio.sleep(1.0)  # a duplicate would arrive now
        for w in workers:
            w.signal(signal.SIGTERM)
        assert [await w.wait() for w in workers] == [0, 0, 0, 0]

        counts = receiver.counts()
        assert len(counts) == 500 and set(counts) == set(ids)
        assert set(counts.values()) == {1}, [i for i, n in counts.items() if n > 1]
        assert all(verify_standard_webhook(SHOP_SECRET, r.headers, r.body) for r in receiver.received)
        rows = await delivery_rows(database.url)
        assert {(r.status, r.attempts) for r in rows.values()} == {(DeliveryStatus.SUCCESS, 1)}
        per_worker = [sum(1 for line in w.logs() if line.get("event") == "callback_delivered") for w in workers]
        assert sum(per_worker) == 500
        assert sum(1 for n in per_worker if n) >= 2, per_worker  # the work really was shared
    finally:
        database.drop()


async def test_a_dispatcher_killed_mid_batch_loses_nothing(migrated, tmp_path, receiver, processes):
    ids = await seed_due_callbacks(migrated.url, 6, receiver.url())
    # Lease = timeout x (batch / concurrency + 1) = 1 s x 2 = 2 s.
    env = job_env(migrated.url, PAYMENTS_CALLBACK_HTTP_TIMEOUT_SECONDS="1", PAYMENTS_JOB_BATCH_SIZE="10",
                  PAYMENTS_CALLBACK_DISPATCH_INTERVAL_SECONDS="0.2")
    receiver.delay = 30  # the receiver holds every request: the dispatcher dies with all of them in flight
    doomed = await start(processes, env, tmp_path, "callbacks", "dispatch", "--worker")
    await eventually(lambda: len(receiver.received) == 6)
    doomed.signal(signal.SIGKILL)
    assert await doomed.wait() == -signal.SIGKILL
    held = await delivery_rows(migrated.url)
    assert all(r.lease_owner is not None and r.status == DeliveryStatus.PENDING for r in held.values())
    lease_ends = time.monotonic() + (max(r.lease_until for r in held.values()) - utcnow()).total_seconds()
    receiver.delay = 0
    await start(processes, env, tmp_path, "callbacks", "dispatch", "--worker")
    await eventually(lambda: len(receiver.received) == 12, timeout=20)
    redelivered = receiver.received[6:]
    assert min(r.at for r in redelivered) >= lease_ends - 0.05  # not before the dead dispatcher's lease ended
    assert Counter(r.webhook_id for r in redelivered) == Counter(ids)  # every one, with the same delivery id
    for _ in range(50):  # the outcomes are recorded just after the answers
        rows = await delivery_rows(migrated.url)
        if all(r.status == DeliveryStatus.SUCCESS for r in rows.values()):
            break
        await asyncio.sleep(0.1)
    # Only the survivor's attempts were recorded; the dead one's were never answered.
    assert {(r.status, r.attempts) for r in rows.values()} == {(DeliveryStatus.SUCCESS, 1)}
    assert len(receiver.received) == 12


async def test_sigterm_lets_the_delivery_in_flight_finish_then_exits_0(migrated_sqlite, tmp_path, receiver, processes):
    await seed_due_callbacks(migrated_sqlite.url, 2, receiver.url())
    env = job_env(migrated_sqlite.url, PAYMENTS_JOB_CONCURRENCY="1", PAYMENTS_CALLBACK_DISPATCH_INTERVAL_SECONDS="0.2")
    receiver.delay = 1.0
    worker = await start(processes, env, tmp_path, "callbacks", "dispatch", "--worker")
    await eventually(lambda: len(receiver.received) == 1)
    worker.signal(signal.SIGTERM)
    assert await worker.wait() == 0
    rows = sorted((await delivery_rows(migrated_sqlite.url)).values(), key=lambda r: r.id)
    assert [r.status for r in rows] == [DeliveryStatus.SUCCESS, DeliveryStatus.PENDING]  # finished; the next not started
    assert rows[1].lease_owner is None and len(receiver.received) == 1


async def test_one_off_runs_exit_non_zero_when_their_batch_failed(migrated_sqlite, receiver):
    await seed_due_callbacks(migrated_sqlite.url, 3, receiver.url())
    env = job_env(migrated_sqlite.url, PAYMENTS_CALLBACK_RETRY_INTERVAL_SECONDS="0.1")
    receiver.responses = [(500, {})]
    code, _, err = await run_cli(env, "callbacks", "dispatch")
    assert code == 1, err
    assert len(receiver.received) == 3
    await asyncio.sleep(0.2)
    code, _, err = await run_cli(env, "callbacks", "dispatch")
    assert code == 0, err
    assert len(receiver.received) == 4


async def test_one_off_jobs_refuse_an_unmigrated_database(tmp_path):
    code, _, err = await run_cli(base_env(f"sqlite+aiosqlite:///{tmp_path / 'empty.sqlite3'}"), "reconcile")
    assert code == 1 and "payments-svc db migrate" in err


@pytest.mark.parametrize("args", [("--worker", "reconcile"), ("expire", "pending", "--worker")])
async def test_worker_flag_before_or_after_the_command(migrated_sqlite, tmp_path, processes, args):
    env = job_env(migrated_sqlite.url, LOG_LEVEL="debug", PAYMENTS_RECONCILE_INTERVAL_SECONDS="0.2",
                  PAYMENTS_EXPIRE_PENDING_INTERVAL_SECONDS="0.2")
    worker = await start(processes, env, tmp_path, *args)
    await eventually(lambda: sum(1 for line in worker.logs() if line.get("event") == "job_completed") >= 2)
    assert any(line.get("event") == "worker_started" for line in worker.logs())
    worker.signal(signal.SIGTERM)
    assert await worker.wait() == 0


@pytest.mark.mysql
async def test_reconcile_and_expire_one_off_runs_on_mariadb(tmp_path):
    """The sandbox provider, real processes: a crashed create is finished by reconcile,
    an old pending payment is expired with its callback queued. (Both jobs run on
    SQLite and MariaDB in-process in test_reconcile_expire.py.)"""
    migrated = new_database("mysql", tmp_path)
    await migrate_database(migrated.url)
    settings = load_settings(base_env(migrated.url))
    db = open_database(settings)
    now = utcnow()
    base = dict(caller_service="shop", request_fingerprint="0" * 64, resource_type="order", resource_id="o", amount_cents=100,
                currency="USD", payment_method=1, payment_type=1, provider=100, provider_callback_url="http://x/cb",
                status_callback_url="https://shop.example/cb", refundable_cents=100, metadata_json="{}",
                provider_payment_id=None, create_lease_until=None)
    async with db.transaction() as conn:
        await conn.execute(payments.insert(), [
            dict(base, request_id="crashed", status=int(PaymentStatus.CREATED), provider_callback_hash="h1",
                 create_lease_until=now - timedelta(minutes=1), created_at=now - timedelta(minutes=2),
                 updated_at=now - timedelta(minutes=2)),
            dict(base, request_id="old", status=int(PaymentStatus.PENDING), provider_callback_hash="h2",
                 provider_payment_id="sbx_old", created_at=now - timedelta(hours=2), updated_at=now - timedelta(hours=2)),
        ])
    env = job_env(migrated.url, PAYMENTS_RECONCILE_STALE_AFTER_SECONDS="60", PAYMENTS_PENDING_TIMEOUT_SECONDS="3600")
    try:
        assert (await run_cli(env, "reconcile"))[0] == 0
        assert (await run_cli(env, "expire", "pending"))[0] == 0
        async with db.read() as conn:
            rows = {r.request_id: r for r in await conn.execute(sa.select(payments))}
        assert rows["crashed"].status == PaymentStatus.PENDING and rows["crashed"].checkout_url
        assert rows["old"].status == PaymentStatus.EXPIRED
        assert [r.event_type for r in (await delivery_rows(migrated.url)).values()] == ["payment.expired"]
    finally:
        await db.close()
        migrated.drop()


async def test_signing_secret_command_shows_creates_and_rotates(migrated_sqlite):
    env = base_env(migrated_sqlite.url)
    first = cli(env, "keys", "signing-secret", "--service", "shop")
    secret = first.stdout.strip()
    assert secret.startswith("whsec_") and "shop had no signing secret; created one" in first.stderr
    again = cli(env, "keys", "signing-secret", "--service", "shop")
    assert again.stdout.strip() == secret and "the signing secret of shop" in again.stderr

    rotated = cli(env, "keys", "signing-secret", "--service", "shop", "--rotate", "--grace-hours", "2")
    new = rotated.stdout.strip()
    assert new.startswith("whsec_") and new != secret and "rotated" in rotated.stderr
    # Both sign during the overlap: shown newest first, each with when it stops.
    shown = cli(env, "keys", "signing-secret", "--service", "shop")
    assert shown.stdout.strip() == new
    lines = [line.split() for line in shown.stderr.splitlines() if "whsec_" in line]
    assert [words[0] for words in lines] == [new, secret]
    assert lines[0][-2:] == ["until", "rotated"] and lines[1][-2] == "until" and lines[1][-1].endswith("Z")

    # A service signed with configured secrets only: those are shown, none is created.
    configured = dict(env, PAYMENTS_CALLBACK_SIGNING_SECRETS=f"billing={SHOP_SECRET}")
    billing = cli(configured, "keys", "signing-secret", "--service", "billing")
    assert billing.stdout.strip() == SHOP_SECRET and "created" not in billing.stderr
    assert "--service" in cli(env, "keys", "signing-secret", "--service", " ", check=False).stderr


async def test_replay_and_delivery_state_over_http_and_grpc(migrated_sqlite, tmp_path, receiver):
    env = job_env(migrated_sqlite.url, TEST_LOG_DIR=str(tmp_path), PAYMENTS_SANDBOX_WEBHOOK_SECRET="whsec_replay_tests")
    server = ServerProcess(env).start()
    try:
        key = create_key(env, "shop")
        headers = {"X-API-Key": key, "X-Request-ID": "r-1"}
        body = dict(request_id="replay-1", caller_service="shop", resource_type="order", resource_id="o-1", amount_cents=500,
                    currency="usd", payment_method=1, payment_type=1, status_callback_url=receiver.url())
        async with aiohttp.ClientSession(server.http_url, headers=headers) as http:
            async with http.post("/payments", json=body) as resp:
                payment_id = (await resp.json())["payment"]["id"]
            async with http.get(f"/payments/{payment_id}") as resp:
                assert "callback_delivery" not in (await resp.json())["payment"]  # nothing to tell yet
            async with http.post(f"/payments/{payment_id}/cancel") as resp:
                assert resp.status == 200
            assert (await run_cli(env, "callbacks", "dispatch"))[0] == 0
            async with http.get(f"/payments/{payment_id}") as resp:
                state = (await resp.json())["payment"]["callback_delivery"]
            assert state == {"delivery_id": receiver.received[0].webhook_id, "status": 10, "attempts": 1, "next_attempt_at": "",
                             "last_error": "", "last_status_code": 200, "event_type": "payment.canceled"}
            async with http.post(f"/payments/{payment_id}/callbacks/replay") as resp:
                assert resp.status == 202
                replayed = (await resp.json())["payment"]["callback_delivery"]
            assert replayed["delivery_id"] != state["delivery_id"] and replayed["status"] == 1 and replayed["attempts"] == 0

            async with grpc.aio.insecure_channel(server.grpc_target) as channel:
                stub = payments_pb2_grpc.PaymentsServiceStub(channel)
                metadata = (("x-api-key", key), ("x-request-id", "r-2"))
                answer = await stub.ReplayCallback(pb.ReplayCallbackRequest(id=payment_id), metadata=metadata)
                grpc_delivery = answer.payment.callback_delivery
                assert grpc_delivery.status == pb.CALLBACK_DELIVERY_STATUS_PENDING
                assert grpc_delivery.delivery_id not in (state["delivery_id"], replayed["delivery_id"])
                with pytest.raises(grpc.aio.AioRpcError) as missing:
                    await stub.ReplayCallback(pb.ReplayCallbackRequest(id=payment_id + 1000), metadata=metadata)
                assert missing.value.code() == grpc.StatusCode.NOT_FOUND

                assert (await run_cli(env, "callbacks", "dispatch"))[0] == 0
                got = await stub.GetPayment(pb.GetPaymentRequest(id=payment_id), metadata=metadata)
                assert got.payment.callback_delivery.delivery_id == grpc_delivery.delivery_id
                assert got.payment.callback_delivery.status == pb.CALLBACK_DELIVERY_STATUS_SUCCESS
            assert len(set(receiver.counts())) == 3 and set(receiver.counts().values()) == {1}

            async with http.get(f"/payments/{payment_id}/events") as resp:
                kinds = [e["event_type"] for e in (await resp.json())["events"]]
            assert kinds.count("callback_dispatched") == 3 and kinds.count("callback_replay_requested") == 2
        db = open_database(load_settings(base_env(migrated_sqlite.url)))
        try:
            async with db.read() as conn:
                assert (await conn.execute(sa.select(sa.func.count()).select_from(callback_attempts))).scalar() == 3
        finally:
            await db.close()
        assert json.loads(receiver.received[0].body)["payment"]["status"] == PaymentStatus.CANCELED
    finally:
        server.stop()
