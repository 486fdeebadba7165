"""PaymentService._finish_create's edges, in-process: what the provider's answer to a create
stores (its subscription id), that the checkout is never announced to the caller even when
the provider answers with an outcome, that the common finish is one grouped write, and a
payment that ended while its create was at the provider, with or without the provider's id."""

from __future__ import annotations

import asyncio
import dataclasses
from contextlib import asynccontextmanager

import pytest

from payments_svc.domain.enums import PaymentStatus, PaymentType, ProviderType
from payments_svc.providers.registry import ProviderRegistry

from ..conftest import BACKENDS, fresh_database
from .test_payment_service import SHOP, command
from .test_payment_service_edges import Provider, deliveries, events, set_row, stored

# As test_payment_service_edges: SQLite (and MariaDB under the mysql mark); no dialect-specific paths here.
database = pytest.fixture(params=BACKENDS, name="database")(fresh_database)


@pytest.fixture
async def svc(make_container):
    """The service with test_payment_service_edges' scripted sandbox provider (svc.provider)."""
    container = await make_container(PAYMENTS_CALLBACK_ALLOWED_HOSTS="shop.example")
    container.service.provider = Provider()
    container.service.providers = ProviderRegistry([container.service.provider], ProviderType.SANDBOX)
    yield container.service
    await container.close()


async def start_create(svc, request_id: str, **overrides) -> tuple[asyncio.Task, object]:
    """A create held inside its provider call: (its task, the reserved payment). Set svc.provider.gate to go on."""
    svc.provider.gate = asyncio.Event()
    task = asyncio.create_task(svc.create_payment(SHOP, command(request_id, **overrides)))
    await asyncio.wait_for(svc.provider.create_entered.wait(), 30)
    [(reserved, _)] = svc.provider.created
    return task, reserved


async def test_the_subscription_id_the_provider_gives_at_create_is_stored_with_the_payment(svc):
    """A recurring payment's provider subscription is how later invoices are matched to it."""
    ask = svc.provider.create_checkout

    async def with_subscription(payment, key):
        return dataclasses.replace(await ask(payment, key), provider_subscription_id="sub_1Qx9")

    svc.provider.create_checkout = with_subscription
    p = (await svc.create_payment(SHOP, command("sub", payment_type=2, recurring_interval="month",
                                                recurring_interval_count=1))).payment
    assert (p.payment_type, p.status, p.provider_subscription_id) == (PaymentType.RECURRING, PaymentStatus.PENDING, "sub_1Qx9")
    row = await stored(svc, p.id)
    assert (row.provider_subscription_id, row.provider_payment_id) == ("sub_1Qx9", p.provider_payment_id)


@pytest.mark.parametrize("initial", [PaymentStatus.PAID, PaymentStatus.FAILED])
async def test_a_checkout_that_ends_the_payment_at_once_is_answered_by_the_create_not_by_a_status_callback(svc, initial):
    """The create's own response tells the caller the outcome: no status callback is queued for it."""
    svc.provider.initial_status = initial
    p = (await svc.create_payment(SHOP, command(f"at-once-{initial.name}"))).payment
    assert (p.status, (await stored(svc, p.id)).status) == (initial, initial)
    assert [(e.event_type, e.old_status, e.new_status) for e in await events(svc, p.id)] == [
        ("payment_created", None, PaymentStatus.CREATED), ("checkout_created", PaymentStatus.CREATED, initial)]
    assert await deliveries(svc, p.id) == []


async def test_a_finished_create_is_one_grouped_write_without_reading_the_payment_back(svc, monkeypatch):
    """The row is still the CREATED one the create holds: its finish writes it and answers at once."""
    task, reserved = await start_create(svc, "one-write")
    real_read, reads = svc.db.read, []

    @asynccontextmanager
    async def counted_read():
        reads.append(1)
        async with real_read() as conn:
            yield conn

    monkeypatch.setattr(svc.db, "read", counted_read)
    svc.provider.gate.set()
    p = (await asyncio.wait_for(task, 30)).payment
    assert reads == []
    monkeypatch.undo()
    row = await stored(svc, reserved.id)
    assert (p.status, p.provider_payment_id, p.checkout_url, p.create_lease_until) == (
        row.status, row.provider_payment_id, row.checkout_url, None)
    assert p.status == PaymentStatus.PENDING and p.provider_payment_id.startswith("sbx_")


@pytest.mark.parametrize("ended", [PaymentStatus.CANCELED, PaymentStatus.EXPIRED])
async def test_a_payment_that_ended_with_the_providers_object_is_left_as_it_is_by_a_late_create(svc, ended):
    """Another attempt took the create over, stored the provider's object (the same one: the same
    idempotency key) and the payment then ended, stopping that object: the late answer changes nothing."""
    task, reserved = await start_create(svc, f"taken-over-{ended.name}")
    await set_row(svc, reserved.id, status=int(ended), provider_payment_id="sbx_taken_over",
                  checkout_url="https://checkout.example/taken", create_lease_until=None)
    before = [(e.event_type, e.old_status, e.new_status) for e in await events(svc, reserved.id)]
    svc.provider.gate.set()
    p = (await asyncio.wait_for(task, 30)).payment
    assert (p.status, p.provider_payment_id, p.checkout_url) == (ended, "sbx_taken_over", "https://checkout.example/taken")
    row = await stored(svc, reserved.id)
    assert (row.status, row.provider_payment_id, row.checkout_url) == (ended, "sbx_taken_over", "https://checkout.example/taken")
    assert [(e.event_type, e.old_status, e.new_status) for e in await events(svc, reserved.id)] == before
    assert svc.provider.cancels == []  # not asked again to stop it


async def test_a_payment_that_expired_before_the_providers_object_existed_keeps_the_ids_and_stops_the_object(svc):
    """As a cancel meanwhile: the late checkout is recorded on the ended payment and stopped at the provider."""
    task, reserved = await start_create(svc, "expired-early")
    await set_row(svc, reserved.id, status=int(PaymentStatus.EXPIRED))
    svc.provider.gate.set()
    p = (await asyncio.wait_for(task, 30)).payment
    assert p.status == PaymentStatus.EXPIRED and p.provider_payment_id.startswith("sbx_")
    row = await stored(svc, reserved.id)
    assert (row.status, row.provider_payment_id, row.checkout_url, row.create_lease_until) == (
        PaymentStatus.EXPIRED, p.provider_payment_id, p.checkout_url, None)
    last = (await events(svc, reserved.id))[-1]
    assert (last.event_type, last.old_status, last.new_status) == (
        "checkout_created_after_end", PaymentStatus.EXPIRED, PaymentStatus.EXPIRED)
    [(canceled, _)] = svc.provider.cancels
    assert (canceled.status, canceled.provider_payment_id) == (PaymentStatus.EXPIRED, p.provider_payment_id)
