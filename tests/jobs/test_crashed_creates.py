"""A real `payments-svc serve` killed (SIGKILL) in the middle of a burst of creates,
on SQLite and MariaDB, with Stripe played by its test double (slow, so the creates are
at Stripe when the server dies; Stripe finishes them without anyone to answer). One
`payments-svc reconcile` run, with a batch far smaller than the burst and older stale
payments waiting, finishes every one of them, each with exactly one Checkout Session
created under the payment's own idempotency key."""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections import defaultdict
from datetime import datetime

import aiohttp
import pytest
import sqlalchemy as sa

from payments_svc.clock import utcnow
from payments_svc.config import load_settings
from payments_svc.db.engine import open_database
from payments_svc.db.tables import payments
from payments_svc.domain.enums import PaymentStatus
from payments_svc.providers.base import provider_idempotency_key

from ..fakes.stripe_server import FakeStripe
from ..support import ServerProcess, cli, create_key
from .helpers import job_env, run_cli

BURST = 24
SESSIONS = "/v1/checkout/sessions"


@pytest.fixture
def stripe():
    fake = FakeStripe().start_in_thread()
    yield fake
    fake.stop_thread()


async def rows(env: dict[str, str]) -> list[sa.Row]:
    db = open_database(load_settings(env))
    try:
        async with db.read() as conn:
            return list(await conn.execute(sa.select(payments).order_by(payments.c.id)))
    finally:
        await db.close()


async def age_all(env: dict[str, str], when: datetime) -> None:
    db = open_database(load_settings(env))
    try:
        async with db.transaction() as conn:
            await conn.execute(payments.update().values(created_at=when, updated_at=when))
    finally:
        await db.close()


async def create(session: aiohttp.ClientSession, server: ServerProcess, key: str, request_id: str) -> None:
    body = {"request_id": request_id, "caller_service": "shop", "resource_type": "order", "resource_id": request_id,
            "amount_cents": 1999, "currency": "eur", "payment_method": "hosted_card", "payment_type": "one_time",
            "status_callback_url": "https://shop.example/callbacks"}
    headers = {"X-Request-ID": uuid.uuid4().hex, "X-API-Key": key}
    async with session.post(f"{server.http_url}/payments", json=body, headers=headers) as response:
        assert response.status == 201, await response.text()


async def until(check, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def test_one_reconcile_run_finishes_a_burst_of_creates_killed_mid_flight(database, tmp_path, stripe):
    env = job_env(database.url, TEST_LOG_DIR=str(tmp_path), STRIPE_SECRET_KEY=stripe.secret_key,
                  STRIPE_WEBHOOK_SECRET="whsec_crash", STRIPE_API_BASE=stripe.url, PAYMENTS_SANDBOX_ENABLED="false",
                  PAYMENTS_CREATE_LEASE_SECONDS="1", PAYMENTS_JOB_BATCH_SIZE="5", PAYMENTS_PENDING_TIMEOUT_SECONDS="3600")
    cli(env, "db", "migrate")
    key = create_key(env, "shop")
    server = ServerProcess(dict(env)).start()
    env = server.env  # the public URL the server built its Checkout return URLs from: the job must build the same
    try:
        async with aiohttp.ClientSession() as session:
            for i in range(3):  # finished earlier and stale by now: in the old order these came first
                await create(session, server, key, f"earlier-{i}")
            await age_all(env, utcnow().replace(year=utcnow().year - 1))

            stripe.set_latency(2.0)  # the burst's sessions are at Stripe when the server dies
            burst = [asyncio.create_task(create(session, server, key, f"burst-{i}")) for i in range(BURST)]

            async def reserved() -> bool:
                return sum(r.status == PaymentStatus.CREATED for r in await rows(env)) == BURST

            await until(reserved)
            server.stop(signal.SIGKILL)
            await asyncio.gather(*burst, return_exceptions=True)  # their connections died with the server
        stripe.set_latency(0)

        crashed = [r for r in await rows(env) if r.status == PaymentStatus.CREATED]
        assert len(crashed) == BURST

        async def leases_ended() -> bool:
            return all(r.create_lease_until <= utcnow() for r in await rows(env) if r.status == PaymentStatus.CREATED)

        await until(leases_ended)
        code, out, err = await run_cli(env, "reconcile")
        assert code == 0, err
    finally:
        server.stop()

    final = {r.id: r for r in await rows(env)}
    assert all(r.status == PaymentStatus.PENDING and r.provider_payment_id for r in final.values())
    created_sessions, keys = defaultdict(list), defaultdict(set)
    for request in list(stripe.requests):
        if request.method == "POST" and request.path == SESSIONS:
            payment_id = int(request.params["client_reference_id"])
            keys[payment_id].add(request.idempotency_key)
            if request.status == 200 and not request.replayed:
                created_sessions[payment_id].append(request)
    for row in crashed:
        assert len(created_sessions[row.id]) == 1, f"payment {row.id}: {len(created_sessions[row.id])} sessions"
        assert keys[row.id] == {provider_idempotency_key("shop", row.request_id, "create")}
        assert stripe.get(final[row.id].provider_payment_id)["client_reference_id"] == str(row.id)
