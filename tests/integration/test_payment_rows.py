"""The payments table's conditional writes through PaymentRepository, on SQLite and MariaDB:
taking over an unfinished create (only the one row, only while CREATED, only if its lease is
the one seen and has run out) and the status-change UPDATE that applies only on the expected
status; lookups by callback hash are per provider; a conditional UPDATE that waits on a row
whose holder then changes its status finds the change instead of deadlocking (MariaDB,
PostgreSQL)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from payments_svc.clock import utcnow
from payments_svc.db.tables import payments
from payments_svc.domain.enums import PaymentStatus, ProviderType
from payments_svc.repository.payments import PaymentRepository

from ..conftest import ALL_BACKENDS
from .test_payment_service import SHOP, command, service  # noqa: F401  (fixture)

NOW = utcnow().replace(microsecond=0)


async def _set(service, payment_id, **values):  # noqa: F811  (the fixture's name)
    async with service.db.transaction() as conn:
        await conn.execute(payments.update().where(payments.c.id == payment_id).values(**values))


async def test_an_unfinished_create_is_taken_over_once_and_only_after_its_lease(service):  # noqa: F811
    a = (await service.create_payment(SHOP, command("lease-a"))).payment
    b = (await service.create_payment(SHOP, command("lease-b"))).payment
    seen = NOW - timedelta(seconds=1)
    for p in (a, b):
        await _set(service, p.id, status=int(PaymentStatus.CREATED), create_lease_until=seen)
    new_lease = NOW + timedelta(minutes=2)
    async with service.db.transaction() as conn:
        repo = PaymentRepository(conn)
        assert await repo.claim_create_lease(a.id, NOW, NOW, new_lease) is False  # not the lease it holds
        assert await repo.claim_create_lease(a.id, seen, NOW - timedelta(seconds=2), new_lease) is False  # not run out
        assert await repo.claim_create_lease(a.id, seen, seen, new_lease) is True  # runs out at `seen` itself
        assert await repo.claim_create_lease(a.id, seen, NOW, new_lease) is False  # taken: its lease changed
        taken, untouched = await repo.get(a.id), await repo.get(b.id)
    assert (taken.create_lease_until, taken.updated_at) == (new_lease, seen)
    assert untouched.create_lease_until == seen and untouched.updated_at != seen
    await _set(service, b.id, status=int(PaymentStatus.PENDING))
    async with service.db.transaction() as conn:
        assert await PaymentRepository(conn).claim_create_lease(b.id, seen, NOW, new_lease) is False  # finished
    await _set(service, b.id, status=int(PaymentStatus.CREATED), create_lease_until=None)
    async with service.db.transaction() as conn:
        assert await PaymentRepository(conn).claim_create_lease(b.id, None, NOW, new_lease) is True  # never leased


async def test_a_status_change_applies_only_on_the_expected_status(service):  # noqa: F811
    p = (await service.create_payment(SHOP, command("cond"))).payment
    async with service.db.transaction() as conn:
        repo = PaymentRepository(conn)
        assert await repo.update_if_status(p.id, PaymentStatus.CREATED, {"status": PaymentStatus.CANCELED}) is False
        assert await repo.update_if_status(p.id + 1, PaymentStatus.PENDING, {"status": PaymentStatus.CANCELED}) is False
        assert await repo.update_if_status(p.id, PaymentStatus.PENDING, {"status": PaymentStatus.PAID,
                                                                          "metadata": {"k": "é"}}) is True
        stored = await repo.get(p.id)
    assert (stored.status, stored.metadata) == (PaymentStatus.PAID, {"k": "é"})


async def test_a_callback_hash_is_looked_up_for_its_provider_only(service):  # noqa: F811
    p = (await service.create_payment(SHOP, command("hash"))).payment
    async with service.db.read() as conn:
        repo = PaymentRepository(conn)
        assert (await repo.find_by_callback_hash(ProviderType.SANDBOX, p.provider_callback_hash)).id == p.id
        assert await repo.find_by_callback_hash(ProviderType.STRIPE, p.provider_callback_hash) is None
        assert await repo.find_by_callback_hash(ProviderType.SANDBOX, "no-such-hash") is None
        assert await repo.get(2**63) is None and await repo.get_with_latest_delivery(2**63) is None


async def test_a_payment_is_read_with_its_latest_callback_delivery_if_any(service):  # noqa: F811
    p = (await service.create_payment(SHOP, command("latest"))).payment
    async with service.db.read() as conn:
        payment, delivery = await PaymentRepository(conn).get_with_latest_delivery(p.id)
    assert (payment.id, delivery) == (p.id, None)  # no status callback yet
    await service.cancel_payment(SHOP, p.id, "")
    async with service.db.read() as conn:
        payment, delivery = await PaymentRepository(conn).get_with_latest_delivery(p.id)
    assert (payment.status, delivery.payment_id, delivery.event_type, delivery.payment_status) == (
        PaymentStatus.CANCELED, p.id, "payment.canceled", PaymentStatus.CANCELED)


@pytest.mark.parametrize("database", ALL_BACKENDS[1:], indirect=True)  # SQLite: one writer at a time, no overlap
async def test_a_conditional_update_waiting_on_a_locked_row_does_not_deadlock_with_its_holder(service):  # noqa: F811
    """A cancel's UPDATE (by id and status, no row lock taken first) waits while a webhook
    holds the row and then changes its status: the cancel must find the status changed,
    not deadlock. (On MariaDB the UPDATE once went through the status index and locked its
    entry first.)"""
    p = (await service.create_payment(SHOP, command("lock-order"))).payment
    for _ in range(5):
        async with service.db.transaction() as holder:
            await PaymentRepository(holder).get(p.id, for_update=True)  # the webhook's row lock

            async def cancel():
                async with service.db.transaction() as conn:
                    return await PaymentRepository(conn).update_if_status(
                        p.id, PaymentStatus.PENDING, {"status": PaymentStatus.CANCELED, "updated_at": utcnow()})

            waiting = asyncio.ensure_future(cancel())
            await asyncio.sleep(0.2)  # the cancel is now waiting for the row
            assert not waiting.done()
            await PaymentRepository(holder).update_if_status(
                p.id, PaymentStatus.PENDING, {"status": PaymentStatus.PAID, "updated_at": utcnow()})
        assert await waiting is False  # PAID meanwhile: not applied, and no deadlock error
        await _set(service, p.id, status=int(PaymentStatus.PENDING))
