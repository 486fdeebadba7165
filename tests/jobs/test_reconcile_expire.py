"""Reconcile and expire in-process, on SQLite and MariaDB, with a scripted provider."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
import sqlalchemy as sa

from payments_svc.auth.caller import Caller
from payments_svc.clock import utcnow
from payments_svc.db.tables import callback_deliveries, payments
from payments_svc.domain.enums import PaymentStatus, ProviderType
from payments_svc.domain.errors import ErrorKind, ProviderError
from payments_svc.jobs.expire import PendingExpirer
from payments_svc.jobs.reconcile import Reconciler
from payments_svc.providers.base import CancelOutcome, provider_idempotency_key
from payments_svc.providers.registry import ProviderRegistry

from .helpers import ScriptedProvider, command

SHOP = Caller("shop")
STALE = dict(PAYMENTS_RECONCILE_STALE_AFTER_SECONDS="60", PAYMENTS_RECONCILE_BACKOFF="1s,2s,1h")


@pytest.fixture
async def setup(make_container):
    built = []

    async def factory(**env):
        container = await make_container(**{"PAYMENTS_PENDING_TIMEOUT_SECONDS": "600", **STALE, **env})
        provider = ScriptedProvider()
        container.service.providers = ProviderRegistry([provider], ProviderType.SANDBOX)
        built.append(container)
        return container.service, provider

    yield factory
    for container in built:
        await container.close()


async def age(service, payment_id: int, *, seconds: float, **values) -> None:
    """Moves a payment back in time (created and last changed `seconds` ago)."""
    then = utcnow() - timedelta(seconds=seconds)
    async with service.db.transaction() as conn:
        await conn.execute(payments.update().where(payments.c.id == payment_id).values(created_at=then, updated_at=then, **values))


async def crashed_create(service, request_id: str, *, seconds: float):
    """A payment left CREATED by a process that died between the two phases of create."""
    payment = (await service.create_payment(SHOP, command(request_id))).payment
    await age(service, payment.id, seconds=seconds, status=int(PaymentStatus.CREATED), provider_payment_id=None,
              checkout_url=None, create_lease_until=utcnow() - timedelta(seconds=1))
    return payment


async def announced(service) -> list[str]:
    async with service.db.read() as conn:
        return list((await conn.execute(sa.select(callback_deliveries.c.event_type).order_by(callback_deliveries.c.id))).scalars())


async def job_columns(service, payment_id: int):
    async with service.db.read() as conn:
        return (await conn.execute(sa.select(payments.c.reconcile_attempts, payments.c.reconcile_next_at, payments.c.job_lease_until)
                                   .where(payments.c.id == payment_id))).one()


async def test_reconcile_finishes_a_create_that_crashed_between_its_phases(setup):
    service, provider = await setup()
    payment = await crashed_create(service, "crashed", seconds=120)
    result = await Reconciler(service).run_batch(asyncio.Event())
    assert (result.claimed, result.done) == (1, 1)
    current = await service.get_payment(SHOP, payment.id)
    assert current.status == PaymentStatus.PENDING and current.checkout_url and current.create_lease_until is None
    key = provider_idempotency_key("shop", "crashed", "create")
    assert provider.create_keys == [key, key]  # the same key: the provider cannot create a second object


async def test_reconcile_fails_a_crashed_create_the_provider_rejects(setup):
    service, provider = await setup()
    payment = await crashed_create(service, "rejected", seconds=120)
    provider.create_errors = [ProviderError("currency not supported", retryable=False)]
    result = await Reconciler(service).run_batch(asyncio.Event())
    assert result.done == 1
    current = await service.get_payment(SHOP, payment.id)
    assert current.status == PaymentStatus.FAILED and current.failure_reason == "currency not supported"


async def test_reconcile_leaves_a_create_in_progress_alone(setup):
    service, provider = await setup()
    payment = await crashed_create(service, "busy", seconds=120)
    async with service.db.transaction() as conn:
        await conn.execute(payments.update().values(create_lease_until=utcnow() + timedelta(minutes=1)))
    result = await Reconciler(service).run_batch(asyncio.Event())
    assert result.claimed == 0 and provider.create_keys == [provider_idempotency_key("shop", "busy", "create")]
    assert (await service.get_payment(SHOP, payment.id)).status == PaymentStatus.CREATED


async def test_reconcile_applies_what_the_provider_reports_through_the_transition_table(setup):
    service, provider = await setup()
    paid = (await service.create_payment(SHOP, command("paid"))).payment
    processing = (await service.create_payment(SHOP, command("processing"))).payment
    fresh = (await service.create_payment(SHOP, command("fresh"))).payment
    for p in (paid, processing):
        await age(service, p.id, seconds=120)
    provider.statuses = {paid.provider_payment_id: PaymentStatus.PAID, processing.provider_payment_id: PaymentStatus.PROCESSING,
                         fresh.provider_payment_id: PaymentStatus.PAID}
    result = await Reconciler(service).run_batch(asyncio.Event())
    assert (result.claimed, result.done) == (2, 2)
    assert sorted(provider.status_calls) == sorted([paid.id, processing.id])  # the fresh one is not stale yet
    assert (await service.get_payment(SHOP, paid.id)).status == PaymentStatus.PAID
    assert (await service.get_payment(SHOP, processing.id)).status == PaymentStatus.PROCESSING
    assert (await service.get_payment(SHOP, fresh.id)).status == PaymentStatus.PENDING
    assert await announced(service) == ["payment.paid"]
    events = await service.list_payment_events(SHOP, paid.id, limit=0, after_event_id=0)
    assert events[-1].event_type == "payment_reconciled" and events[-1].message == "provider reports PAID"

    # PROCESSING back to PENDING is a regression: ignored, without an event on every run.
    await age(service, processing.id, seconds=120, reconcile_next_at=None)
    provider.statuses[processing.provider_payment_id] = PaymentStatus.PENDING
    before = await service.list_payment_events(SHOP, processing.id, limit=0, after_event_id=0)
    await Reconciler(service).run_batch(asyncio.Event())
    assert (await service.get_payment(SHOP, processing.id)).status == PaymentStatus.PROCESSING
    assert await service.list_payment_events(SHOP, processing.id, limit=0, after_event_id=0) == before


async def test_reconcile_backs_off_per_payment_so_unchanging_rows_cannot_starve_the_rest(setup):
    service, provider = await setup(PAYMENTS_JOB_BATCH_SIZE="2")
    created = [(await service.create_payment(SHOP, command(f"p{i}"))).payment for i in range(3)]
    for p in created:
        await age(service, p.id, seconds=120)
    job = Reconciler(service)
    first = await job.run_batch(asyncio.Event())
    second = await job.run_batch(asyncio.Event())
    assert (first.claimed, second.claimed) == (2, 1)
    assert sorted(provider.status_calls) == sorted(p.id for p in created)  # each checked once, none twice
    assert (await job.run_batch(asyncio.Event())).claimed == 0  # none due again before its backoff

    columns = await job_columns(service, created[0].id)
    assert columns.reconcile_attempts == 1 and columns.job_lease_until is None
    assert timedelta(seconds=0.5) < columns.reconcile_next_at - utcnow() <= timedelta(seconds=1)
    await asyncio.sleep(1.1)
    provider.status_errors = [ProviderError("provider down", retryable=True)]
    third = await job.run_batch(asyncio.Event())
    assert (third.claimed, third.failed) == (2, 1)  # a failure is counted, and still rescheduled
    columns = await job_columns(service, created[0].id)
    assert columns.reconcile_attempts == 2
    assert timedelta(seconds=1.5) < columns.reconcile_next_at - utcnow() <= timedelta(seconds=2)


async def test_expire_asks_the_provider_first_then_expires_with_a_callback(setup):
    service, provider = await setup()
    old = (await service.create_payment(SHOP, command("old"))).payment
    young = (await service.create_payment(SHOP, command("young"))).payment
    await age(service, old.id, seconds=601)
    await age(service, young.id, seconds=300)
    result = await PendingExpirer(service).run_batch(asyncio.Event())
    assert (result.claimed, result.done) == (1, 1)
    assert provider.cancel_keys == [provider_idempotency_key("shop", "old", "expire")]
    assert (await service.get_payment(SHOP, old.id)).status == PaymentStatus.EXPIRED
    assert (await service.get_payment(SHOP, young.id)).status == PaymentStatus.PENDING
    assert await announced(service) == ["payment.expired"]
    events = await service.list_payment_events(SHOP, old.id, limit=0, after_event_id=0)
    assert events[-1].event_type == "payment_expired" and events[-1].message == "still PENDING 10 minutes after creation"
    assert (await PendingExpirer(service).run_batch(asyncio.Event())).claimed == 0


async def test_expire_makes_a_payment_the_provider_says_is_paid_paid(setup):
    service, provider = await setup()
    payment = (await service.create_payment(SHOP, command("paid-late"))).payment
    await age(service, payment.id, seconds=601)
    provider.cancel_outcome = CancelOutcome.ALREADY_PAID
    await PendingExpirer(service).run_batch(asyncio.Event())
    assert (await service.get_payment(SHOP, payment.id)).status == PaymentStatus.PAID
    assert await announced(service) == ["payment.paid"]


async def test_expire_keeps_the_payment_open_when_the_provider_fails(setup):
    service, provider = await setup()
    payment = (await service.create_payment(SHOP, command("flaky"))).payment
    await age(service, payment.id, seconds=601)
    provider.cancel_errors = [ProviderError("provider down", retryable=True)]
    result = await PendingExpirer(service).run_batch(asyncio.Event())
    assert result.failed == 1
    assert (await service.get_payment(SHOP, payment.id)).status == PaymentStatus.PENDING
    # It keeps its lease, so a worker taking the next batch at once does not hammer the provider...
    assert (await PendingExpirer(service).run_batch(asyncio.Event())).claimed == 0
    await age(service, payment.id, seconds=601, job_lease_until=utcnow() - timedelta(seconds=1))
    # ...and is tried again once the lease has ended.
    assert (await PendingExpirer(service).run_batch(asyncio.Event())).done == 1
    assert (await service.get_payment(SHOP, payment.id)).status == PaymentStatus.EXPIRED


async def test_expire_waits_for_a_payment_the_provider_cannot_stop_yet(setup):
    service, provider = await setup()
    payment = (await service.create_payment(SHOP, command("settling"))).payment
    await age(service, payment.id, seconds=601)
    provider.cancel_errors = [ProviderError("a delayed payment method is still settling", retryable=False,
                                            kind=ErrorKind.FAILED_PRECONDITION)]
    result = await PendingExpirer(service).run_batch(asyncio.Event())
    assert (result.deferred, result.failed) == (1, 0)  # not a failure: asked again later
    assert (await service.get_payment(SHOP, payment.id)).status == PaymentStatus.PENDING
    assert (await PendingExpirer(service).run_batch(asyncio.Event())).claimed == 0  # not before its lease ends


async def test_expire_ends_a_crashed_create_without_a_provider_call(setup):
    service, provider = await setup()
    payment = await crashed_create(service, "never-finished", seconds=601)
    await PendingExpirer(service).run_batch(asyncio.Event())
    current = await service.get_payment(SHOP, payment.id)
    assert current.status == PaymentStatus.EXPIRED and current.create_lease_until is None
    assert provider.cancel_keys == [] and await announced(service) == ["payment.expired"]
    # The caller retrying its create now gets the ended payment, not a new provider object.
    replay = await service.create_payment(SHOP, command("never-finished"))
    assert replay.replayed and replay.payment.status == PaymentStatus.EXPIRED
    assert len(provider.create_keys) == 1


async def test_one_run_finishes_every_crashed_create_first_and_as_soon_as_its_lease_ends(setup):
    service, provider = await setup(PAYMENTS_JOB_BATCH_SIZE="5")
    stale = [(await service.create_payment(SHOP, command(f"stale-{i}"))).payment for i in range(3)]
    for payment in stale:
        await age(service, payment.id, seconds=3600)  # older and stale: the old order took these first
    # A burst of creates whose process died a moment ago: leases just ended, nothing stale yet.
    crashed = [await crashed_create(service, f"burst-{i}", seconds=0) for i in range(12)]
    provider.create_keys.clear()

    result = await Reconciler(service).run_batch(asyncio.Event())

    assert result.failed == 0 and result.claimed == len(crashed) + len(stale)
    for payment in crashed:
        current = await service.get_payment(SHOP, payment.id)
        assert current.status == PaymentStatus.PENDING and current.checkout_url and current.create_lease_until is None
    # Each finished with its own create key, once: the provider can hold one object per payment only.
    assert sorted(provider.create_keys) == sorted(provider_idempotency_key("shop", f"burst-{i}", "create") for i in range(12))
    assert sorted(provider.status_calls) == sorted(p.id for p in stale)  # and the stale batch still checked


async def test_a_crashed_create_the_provider_cannot_take_now_is_tried_again_on_its_backoff(setup):
    service, provider = await setup()
    payment = await crashed_create(service, "provider-down", seconds=0)
    provider.create_errors = [ProviderError("provider down", retryable=True)]
    first = await Reconciler(service).run_batch(asyncio.Event())
    assert (first.claimed, first.failed) == (1, 1)  # tried once in the run, not in a loop
    assert (await Reconciler(service).run_batch(asyncio.Event())).claimed == 0  # not before its backoff (1s)
    await age(service, payment.id, seconds=0, reconcile_next_at=utcnow() - timedelta(seconds=1))
    assert (await Reconciler(service).run_batch(asyncio.Event())).done == 1
    assert (await service.get_payment(SHOP, payment.id)).status == PaymentStatus.PENDING
