"""The callback dispatcher in-process against a real HTTP receiver on 127.0.0.1, on
SQLite and MariaDB: signing, headers, retries, Retry-After, 410, redirects, the
host allow-list, leases, the attempt log, delivery state and replay."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
import sqlalchemy as sa

from payments_svc.auth.caller import Caller
from payments_svc.clock import utcnow
from payments_svc.container import Container
from payments_svc.db.tables import callback_attempts, callback_deliveries
from payments_svc.domain.enums import DeliveryStatus, PaymentStatus, ProviderType
from payments_svc.domain.errors import PaymentsError, ValidationError
from payments_svc.jobs.dispatch import CallbackDispatcher
from payments_svc.jobs.runner import BatchResult
from payments_svc.providers.registry import ProviderRegistry
from payments_svc.repository.deliveries import DeliveryRepository, Outcome
from payments_svc.repository.signing_secrets import SigningSecretRepository, current_signing_secrets
from payments_svc.service.callbacks import CallbackService

from .helpers import OLD_SHOP_SECRET, SHOP_SECRET, Receiver, ScriptedProvider, command, verify_standard_webhook

SHOP = Caller("shop")


@dataclass
class Harness:
    container: Container
    provider: ScriptedProvider
    dispatcher: CallbackDispatcher

    @property
    def service(self):
        return self.container.service

    @property
    def callbacks(self) -> CallbackService:
        return CallbackService(self.service)

    async def canceled_payment(self, url: str, request_id: str = "req-1"):
        payment = (await self.service.create_payment(SHOP, command(request_id, url))).payment
        return await self.service.cancel_payment(SHOP, payment.id, "customer left")

    async def dispatch(self) -> BatchResult:
        return await self.dispatcher.run_batch(asyncio.Event())

    async def delivery(self, payment_id: int):
        return (await self.callbacks.get_payment_with_delivery(SHOP, payment_id))[1]

    async def attempts(self) -> list[sa.Row]:
        async with self.container.db.read() as conn:
            return (await conn.execute(sa.select(callback_attempts).order_by(callback_attempts.c.id))).all()

    async def events(self, payment_id: int) -> list:
        return await self.service.list_payment_events(SHOP, payment_id, limit=0, after_event_id=0)


@pytest.fixture
async def receiver():
    r = await Receiver().start()
    yield r
    await r.stop()


@pytest.fixture
async def harness(make_container):
    built: list[Harness] = []

    async def factory(**env) -> Harness:
        env = {"PAYMENTS_CALLBACK_SIGNING_SECRETS": f"shop={SHOP_SECRET}", "PAYMENTS_CALLBACK_RETRY_INTERVAL_SECONDS": "0.05",
               "APP_API_KEY": "our-own-api-key", **env}
        container = await make_container(**env)
        provider = ScriptedProvider()
        container.service.providers = ProviderRegistry([provider], ProviderType.SANDBOX)
        h = Harness(container, provider, CallbackDispatcher(container.db, container.settings))
        built.append(h)
        return h

    yield factory
    for h in built:
        await h.dispatcher.close()
        await h.container.close()


async def test_delivers_a_signed_callback_once(harness, receiver):
    h = await harness()
    payment = await h.canceled_payment(receiver.url())
    result = await h.dispatch()
    assert (result.claimed, result.done, result.failed) == (1, 1, 0)
    assert len(receiver.received) == 1
    got = receiver.received[0]
    assert verify_standard_webhook(SHOP_SECRET, got.headers, got.body)
    assert got.headers["content-type"] == "application/json"
    assert got.headers["x-request-id"] == payment.request_id
    assert "x-api-key" not in got.headers and b"our-own-api-key" not in got.body
    body = got.json()
    assert body["type"] == "payment.canceled"
    assert body["payment"]["id"] == payment.id and body["payment"]["status"] == PaymentStatus.CANCELED
    assert body["payment"]["cancel_reason"] == "customer left"

    delivery = await h.delivery(payment.id)
    assert delivery.delivery_id == got.webhook_id
    assert (delivery.status, delivery.attempts, delivery.last_status_code, delivery.next_attempt_at) == (DeliveryStatus.SUCCESS, 1, 200, None)
    [attempt] = await h.attempts()
    assert (attempt.attempt, attempt.status_code, attempt.error) == (1, 200, None) and attempt.latency_ms >= 0
    assert [e.event_type for e in await h.events(payment.id)][-1] == "callback_dispatched"
    assert (await h.dispatch()).claimed == 0 and len(receiver.received) == 1


async def test_failing_receiver_is_retried_with_the_same_id_until_it_recovers(harness, receiver):
    h = await harness()
    receiver.responses = [(500, {}), (503, {})]
    payment = await h.canceled_payment(receiver.url())
    failures = 0
    for _ in range(100):
        result = await h.dispatch()
        failures += result.failed
        if result.done:
            break
        await asyncio.sleep(0.05)
    assert failures == 2
    assert [r.webhook_id for r in receiver.received] == [receiver.received[0].webhook_id] * 3
    assert all(verify_standard_webhook(SHOP_SECRET, r.headers, r.body) for r in receiver.received)
    delivery = await h.delivery(payment.id)
    assert (delivery.status, delivery.attempts, delivery.last_error) == (DeliveryStatus.SUCCESS, 3, None)
    assert [(a.attempt, a.status_code) for a in await h.attempts()] == [(1, 500), (2, 503), (3, 200)]
    events = [e for e in await h.events(payment.id) if e.event_type.startswith("callback_")]
    assert [e.event_type for e in events] == ["callback_dispatch_failed", "callback_dispatch_failed", "callback_dispatched"]
    assert "attempt 1: callback endpoint returned status=500" in events[0].message
    assert "next attempt at" in events[0].message


async def test_gone_stops_retrying(harness, receiver):
    h = await harness()
    receiver.responses = [(410, {})]
    payment = await h.canceled_payment(receiver.url())
    assert (await h.dispatch()).failed == 1
    delivery = await h.delivery(payment.id)
    assert delivery.status == DeliveryStatus.FAILED and delivery.next_attempt_at is None
    assert delivery.last_status_code == 410 and "410 (Gone): not retried" in delivery.last_error
    await asyncio.sleep(0.2)
    assert (await h.dispatch()).claimed == 0 and len(receiver.received) == 1


@pytest.mark.parametrize("header", ["2", "http-date"])
async def test_retry_after_is_honoured(harness, receiver, header):
    h = await harness()
    if header == "http-date":
        header = format_datetime(datetime.now(UTC) + timedelta(seconds=3), usegmt=True)
    receiver.responses = [(429, {"Retry-After": header})]
    payment = await h.canceled_payment(receiver.url())
    before = utcnow()
    await h.dispatch()
    delivery = await h.delivery(payment.id)
    assert delivery.status == DeliveryStatus.PENDING and delivery.last_status_code == 429
    # The backoff alone (base 0.05 s) would retry at once; the receiver asked for about 2 s.
    assert delivery.next_attempt_at >= before + timedelta(seconds=1.5)
    await asyncio.sleep(0.3)
    assert (await h.dispatch()).claimed == 0


async def test_redirects_are_not_followed(harness, receiver):
    h = await harness()
    receiver.responses = [(302, {"Location": receiver.url("/elsewhere")})]
    payment = await h.canceled_payment(receiver.url())
    assert (await h.dispatch()).failed == 1
    assert [r.path for r in receiver.received] == ["/callbacks"]
    delivery = await h.delivery(payment.id)
    assert delivery.status == DeliveryStatus.PENDING and "status=302 (redirects are not followed)" in delivery.last_error


async def test_gives_up_after_max_attempts(harness, receiver):
    h = await harness(PAYMENTS_CALLBACK_MAX_ATTEMPTS="2")
    receiver.responses = [(500, {})] * 5
    payment = await h.canceled_payment(receiver.url())
    for _ in range(40):
        await h.dispatch()
        if (await h.delivery(payment.id)).status != DeliveryStatus.PENDING:
            break
        await asyncio.sleep(0.05)
    delivery = await h.delivery(payment.id)
    assert delivery.status == DeliveryStatus.FAILED and delivery.attempts == 2
    assert delivery.last_error == "callback endpoint returned status=500; gave up after 2 attempts"
    assert len(receiver.received) == 2


async def test_timeouts_and_unreachable_receivers_are_retryable_failures(harness, receiver):
    h = await harness(PAYMENTS_CALLBACK_HTTP_TIMEOUT_SECONDS="1")
    receiver.delay = 1.5
    slow = await h.canceled_payment(receiver.url(), "slow")
    gone = await h.canceled_payment("http://127.0.0.1:9/nothing-listens", "gone")
    result = await h.dispatch()
    assert result.failed == 2
    assert "timed out after 1s" in (await h.delivery(slow.id)).last_error
    refused = await h.delivery(gone.id)
    assert refused.status == DeliveryStatus.PENDING and refused.last_error.startswith("callback request failed")
    assert refused.last_status_code is None


async def test_disallowed_hosts_are_refused_at_create_and_failed_at_dispatch(harness, receiver):
    restricted = await harness(PAYMENTS_CALLBACK_ALLOWED_HOSTS="*.internal.example")
    with pytest.raises(ValidationError, match="host '127.0.0.1' is not allowed by PAYMENTS_CALLBACK_ALLOWED_HOSTS"):
        await restricted.service.create_payment(SHOP, command("r", receiver.url()))
    assert restricted.provider.create_keys == []
    # A payment created before the allow-list was tightened: its callback fails for good.
    open_one = await harness()
    payment = await open_one.canceled_payment(receiver.url())
    assert (await restricted.dispatch()).failed == 1
    assert receiver.received == []
    delivery = await restricted.delivery(payment.id)
    assert delivery.status == DeliveryStatus.FAILED
    assert delivery.last_error == "status_callback_url host '127.0.0.1' is not allowed by PAYMENTS_CALLBACK_ALLOWED_HOSTS; not retried"
    with pytest.raises(PaymentsError, match="cannot be delivered"):
        await restricted.callbacks.replay(SHOP, payment.id)
    [attempt] = await restricted.attempts()
    assert attempt.status_code is None and "not allowed" in attempt.error


async def test_signing_secrets_from_the_database_and_rotation(harness, receiver):
    h = await harness(PAYMENTS_CALLBACK_SIGNING_SECRETS="")
    payment = await h.canceled_payment(receiver.url())
    assert (await h.dispatch()).failed == 0  # no secret for "shop" yet: one is created, nothing goes out unsigned
    [unsigned_never] = receiver.received
    [first] = (await current_signing_secrets(h.container.db, ["shop"], configured=(), now=utcnow()))["shop"]
    assert not first.created_now  # the dispatcher made it; this is the same one, read back
    assert verify_standard_webhook(first.secret, unsigned_never.headers, unsigned_never.body)

    async with h.container.db.transaction() as conn:
        second = await SigningSecretRepository(conn).rotate("shop", grace=timedelta(hours=1), now=utcnow())
    await asyncio.sleep(0.1)
    await h.callbacks.replay(SHOP, payment.id)
    for _ in range(40):
        await h.dispatch()
        if len(receiver.received) == 2:
            break
        await asyncio.sleep(0.05)
    got = receiver.received[-1]
    assert len(got.headers["webhook-signature"].split(" ")) == 2
    assert verify_standard_webhook(first.secret, got.headers, got.body) and verify_standard_webhook(second, got.headers, got.body)
    assert not verify_standard_webhook(OLD_SHOP_SECRET, got.headers, got.body)

    # The grace period over: only the new secret signs.
    later = await current_signing_secrets(h.container.db, ["shop"], configured=(), now=utcnow() + timedelta(hours=2))
    assert [s.secret for s in later["shop"]] == [second]


async def test_replay_queues_a_new_delivery_and_get_shows_the_latest(harness, receiver):
    h = await harness()
    payment = await h.canceled_payment(receiver.url())
    await h.dispatch()
    first = await h.delivery(payment.id)
    replayed_payment, queued = await h.callbacks.replay(SHOP, payment.id)
    assert replayed_payment.id == payment.id
    assert queued.delivery_id != first.delivery_id and queued.status == DeliveryStatus.PENDING and queued.attempts == 0
    assert queued.event_type == "payment.canceled"
    assert (await h.delivery(payment.id)).delivery_id == queued.delivery_id
    await h.dispatch()
    assert [r.webhook_id for r in receiver.received] == [first.delivery_id, queued.delivery_id]
    assert (await h.delivery(payment.id)).status == DeliveryStatus.SUCCESS
    kinds = [e.event_type for e in await h.events(payment.id)]
    assert kinds[-3:] == ["callback_dispatched", "callback_replay_requested", "callback_dispatched"]
    with pytest.raises(Exception, match="payment not found"):
        await h.callbacks.replay(Caller("other"), payment.id)  # scoped like GetPayment


async def test_a_dispatcher_that_lost_its_lease_cannot_record(harness, receiver):
    h = await harness()
    payment = await h.canceled_payment(receiver.url())
    now = utcnow()
    async with h.container.db.transaction() as conn:
        [mine] = await DeliveryRepository(conn).claim_due(now=now, limit=10, owner="a", lease_until=now + timedelta(seconds=1))
    async with h.container.db.transaction() as conn:  # still leased: not due for anyone else
        assert await DeliveryRepository(conn).claim_due(now=now, limit=10, owner="b", lease_until=now + timedelta(seconds=30)) == []
    later = now + timedelta(seconds=2)
    async with h.container.db.transaction() as conn:  # the lease ran out: taken over, same delivery id
        [theirs] = await DeliveryRepository(conn).claim_due(now=later, limit=10, owner="b", lease_until=later + timedelta(seconds=30))
    assert theirs.delivery_id == mine.delivery_id
    outcome = Outcome(DeliveryStatus.SUCCESS, later, 200, 5, None, None)
    async with h.container.db.transaction() as conn:
        assert not await DeliveryRepository(conn).record(mine, "a", outcome)
        assert await DeliveryRepository(conn).record(theirs, "b", outcome)
    assert (await h.delivery(payment.id)).status == DeliveryStatus.SUCCESS
    assert [a.attempt for a in await h.attempts()] == [1]


async def test_stop_hands_back_what_was_not_started(harness, receiver):
    h = await harness(PAYMENTS_JOB_CONCURRENCY="1")
    receiver.delay = 0.5
    for i in range(3):
        await h.canceled_payment(receiver.url(), f"p{i}")
    stop = asyncio.Event()
    batch = asyncio.create_task(h.dispatcher.run_batch(stop))
    while not receiver.received:
        await asyncio.sleep(0.01)
    stop.set()
    started = time.monotonic()
    result = await batch
    assert time.monotonic() - started >= 0.3  # the delivery in flight was finished, not abandoned
    assert (result.claimed, result.done, result.not_started) == (3, 1, 2)
    async with h.container.db.read() as conn:
        rows = (await conn.execute(sa.select(callback_deliveries.c.status, callback_deliveries.c.lease_owner))).all()
    assert sorted(r.status for r in rows) == [DeliveryStatus.PENDING, DeliveryStatus.PENDING, DeliveryStatus.SUCCESS]
    assert all(r.lease_owner is None for r in rows)  # handed back: due again at once
    receiver.delay = 0
    assert (await h.dispatch()).done == 2
