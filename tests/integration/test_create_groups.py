"""Group commit of creates' reserves (service/create_groups.py) on SQLite, MariaDB and
PostgreSQL: concurrent creates share transactions yet each gets its own payment and
event; a taken key in a group refuses only its own create; a create whose caller went
away is still written; a database fault reaches every create of the group."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa

from payments_svc.clock import utcnow
from payments_svc.db.tables import payment_events, payments
from payments_svc.domain.enums import PaymentStatus
from payments_svc.domain.errors import ServiceUnavailableError
from payments_svc.repository.payments import DuplicatePaymentKey, PaymentRepository
from payments_svc.service.create_groups import CreateGroups

from ..support import wait_until
from .test_payment_service import SHOP, command, service  # noqa: F401  (fixture)


def _create(service, request_id: str) -> tuple[dict, dict]:  # noqa: F811  (the fixture's name)
    now = utcnow()
    values = service._new_payment(command(request_id).normalized(), service.providers.resolve(0), f"fp-{request_id}", now)
    return values, dict(event_type="payment_created", old_status=None, new_status=PaymentStatus.CREATED, now=now)


async def _counts(service) -> tuple[int, int]:  # noqa: F811
    async with service.db.read() as conn:
        rows = (await conn.execute(sa.select(sa.func.count()).select_from(payments))).scalar()
        created = (await conn.execute(sa.select(sa.func.count()).select_from(payment_events)
                                      .where(payment_events.c.event_type == "payment_created"))).scalar()
    return rows, created


@pytest.fixture
def group_sizes(monkeypatch) -> list[int]:
    """The size of every reserve transaction written."""
    sizes: list[int] = []
    original = PaymentRepository.reserve

    async def recorded(self, creates):
        sizes.append(len(creates))
        return await original(self, creates)

    monkeypatch.setattr(PaymentRepository, "reserve", recorded)
    return sizes


async def test_concurrent_creates_share_transactions_and_each_gets_its_own_payment(service, group_sizes):  # noqa: F811
    results = await asyncio.gather(*(service.create_payment(SHOP, command(f"grouped-{i}")) for i in range(40)))
    assert sorted(r.payment.request_id for r in results) == sorted(f"grouped-{i}" for i in range(40))
    assert len({r.payment.id for r in results}) == 40
    assert all(r.payment.status == PaymentStatus.PENDING and not r.replayed for r in results)
    assert sum(group_sizes) == 40 and max(group_sizes) > 1, group_sizes  # grouped, every create once
    assert max(group_sizes) <= service.settings.create_group_max
    assert await _counts(service) == (40, 40)
    async with service.db.read() as conn:  # each payment the one its caller was told about
        for r in results:
            stored = await PaymentRepository(conn).get(r.payment.id)
            assert (stored.request_id, stored.caller_service) == (r.payment.request_id, "shop")


async def test_a_taken_key_in_a_group_refuses_only_its_own_create(service, group_sizes):  # noqa: F811
    groups = CreateGroups(service.db, max_group=32, max_in_flight=1)  # "a" goes alone, the rest wait for it together
    await groups.reserve(*_create(service, "taken"))
    creates = [_create(service, key) for key in ("a", "b", "taken", "c", "d")]
    outcomes = await asyncio.gather(*(groups.reserve(*c) for c in creates), return_exceptions=True)
    refused = [i for i, o in enumerate(outcomes) if isinstance(o, DuplicatePaymentKey)]
    assert refused == [2], outcomes
    assert [o.request_id for i, o in enumerate(outcomes) if i != 2] == ["a", "b", "c", "d"]
    # The group [b, taken, c, d] was rolled back, then written one by one.
    assert group_sizes == [1, 1, 4, 1, 1, 1, 1], group_sizes
    assert await _counts(service) == (5, 5)  # no row or event of the rolled-back group left behind


async def test_a_create_whose_caller_went_away_is_still_written(service):  # noqa: F811
    blocker = asyncio.ensure_future(asyncio.gather(*(service.create_groups.reserve(*_create(service, f"busy-{i}"))
                                                     for i in range(2))))
    left = asyncio.ensure_future(service.create_groups.reserve(*_create(service, "left")))
    await asyncio.sleep(0)  # queued behind the two transactions in flight
    left.cancel()
    await blocker
    with pytest.raises(asyncio.CancelledError):
        await left

    async def stored():
        async with service.db.read() as conn:
            return await PaymentRepository(conn).find_by_key("shop", "left")

    payment = await wait_until(stored)
    assert payment.status == PaymentStatus.CREATED and payment.create_lease_until is not None  # a retry or reconcile finishes it


async def test_a_database_fault_reaches_every_create_of_the_group(service, monkeypatch):  # noqa: F811
    async def away(self, creates):
        raise ServiceUnavailableError("database unavailable; retry")

    monkeypatch.setattr(PaymentRepository, "reserve", away)
    outcomes = await asyncio.gather(*(service.create_groups.reserve(*_create(service, f"f-{i}")) for i in range(6)),
                                    return_exceptions=True)
    assert all(isinstance(o, ServiceUnavailableError) for o in outcomes), outcomes
    monkeypatch.undo()
    assert await _counts(service) == (0, 0)
    assert (await service.create_groups.reserve(*_create(service, "after"))).request_id == "after"  # not stuck
