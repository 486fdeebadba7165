"""Group commit of creates' reserves and of status changes (service/group_commit.py) on
SQLite, MariaDB and PostgreSQL: concurrent creates share transactions yet each gets its own
payment, events and status; a taken key in a group refuses only its own create; a finish
whose payment was canceled meanwhile does not apply while the others in its group do;
concurrent cancels and webhooks share transactions, each with its event and one callback
(a webhook delivered twice applies once; an event applied before refuses only its own
change in a group); a change whose payment changed after it was read is decided again under
the row lock; a group is written in payment id order; a create whose caller went away is still written; a
database fault reaches every create of the group."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter

import pytest
import sqlalchemy as sa
from prometheus_client import REGISTRY

from payments_svc.clock import utcnow
from payments_svc.db.tables import callback_deliveries, payment_callbacks, payment_events, payments
from payments_svc.domain.enums import CallbackStatus, PaymentStatus
from payments_svc.domain.errors import InvalidTransitionError, ServiceUnavailableError
from payments_svc.repository import callbacks as callback_rows
from payments_svc.repository.callbacks import CallbackLogRepository, DuplicateProviderEvent
from payments_svc.repository.payments import DuplicatePaymentKey, PaymentRepository
from payments_svc.service.group_commit import GroupCommit
from payments_svc.service.status_changes import StatusChange, apply_status_change, plan_transition, write_transitions

from ..support import wait_until
from .test_payment_service import SHOP, command, service, signed  # noqa: F401  (fixture)
from .test_statements import _events


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
def group_sizes(monkeypatch) -> dict[str, list[int]]:
    """The size of every reserve and status change transaction written."""
    sizes: dict[str, list[int]] = {"reserve": [], "status_change": []}
    reserve, finish = PaymentRepository.reserve, PaymentRepository.update_each_if_status

    async def reserved(self, creates):
        sizes["reserve"].append(len(creates))
        return await reserve(self, creates)

    async def finished(self, updates):
        sizes["status_change"].append(len(updates))
        return await finish(self, updates)

    monkeypatch.setattr(PaymentRepository, "reserve", reserved)
    monkeypatch.setattr(PaymentRepository, "update_each_if_status", finished)
    return sizes


async def test_concurrent_creates_share_transactions_and_each_gets_its_own_payment(service, group_sizes):  # noqa: F811
    results = await asyncio.gather(*(service.create_payment(SHOP, command(f"grouped-{i}")) for i in range(40)))
    assert sorted(r.payment.request_id for r in results) == sorted(f"grouped-{i}" for i in range(40))
    assert len({r.payment.id for r in results}) == 40
    assert all(r.payment.status == PaymentStatus.PENDING and not r.replayed for r in results)
    for kind in ("reserve", "status_change"):  # grouped, every create once
        assert sum(group_sizes[kind]) == 40 and max(group_sizes[kind]) > 1, group_sizes
        assert max(group_sizes[kind]) <= service.settings.group_commit_max
    assert await _counts(service) == (40, 40)
    async with service.db.read() as conn:  # each payment the one its caller was told about, PENDING with its checkout
        for r in results:
            stored = await PaymentRepository(conn).get(r.payment.id)
            assert (stored.request_id, stored.caller_service) == (r.payment.request_id, "shop")
            assert stored.status == PaymentStatus.PENDING and stored.provider_payment_id == r.payment.provider_payment_id
            assert stored.create_lease_until is None
    for r in results[:5]:
        assert await _events(service, r.payment.id) == ["payment_created", "checkout_created"]


async def test_a_taken_key_in_a_group_refuses_only_its_own_create(service, group_sizes):  # noqa: F811
    groups = service.reserves  # the service's own wiring (its write, its alone_after) ...
    groups._max_in_flight = 1  # ... with one transaction in flight: "a" alone, the rest together
    before = REGISTRY.get_sample_value("payments_group_commit_size_count", {"kind": "reserve"}) or 0
    await groups.submit(_create(service, "taken"))
    creates = [_create(service, key) for key in ("a", "b", "taken", "c", "d")]
    outcomes = await asyncio.gather(*(groups.submit(c) for c in creates), return_exceptions=True)
    refused = [i for i, o in enumerate(outcomes) if isinstance(o, DuplicatePaymentKey)]
    assert refused == [2], outcomes
    assert [o.request_id for i, o in enumerate(outcomes) if i != 2] == ["a", "b", "c", "d"]
    # The group [b, taken, c, d] was rolled back, then written one by one.
    assert group_sizes["reserve"] == [1, 1, 4, 1, 1, 1, 1], group_sizes
    assert REGISTRY.get_sample_value("payments_group_commit_size_count", {"kind": "reserve"}) == before + 5  # each committed transaction
    assert await _counts(service) == (5, 5)  # no row or event of the rolled-back group left behind


async def test_a_create_whose_caller_went_away_is_still_written(service):  # noqa: F811
    blocker = asyncio.ensure_future(asyncio.gather(*(service.reserves.submit(_create(service, f"busy-{i}"))
                                                     for i in range(2))))
    left = asyncio.ensure_future(service.reserves.submit(_create(service, "left")))
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
    outcomes = await asyncio.gather(*(service.reserves.submit(_create(service, f"f-{i}")) for i in range(6)),
                                    return_exceptions=True)
    assert all(isinstance(o, ServiceUnavailableError) for o in outcomes), outcomes
    monkeypatch.undo()
    assert await _counts(service) == (0, 0)
    assert (await service.reserves.submit(_create(service, "after"))).request_id == "after"  # not stuck


async def test_a_finish_in_a_group_applies_only_if_its_payment_is_still_created(service, group_sizes):  # noqa: F811
    reserved = [await service.reserves.submit(_create(service, f"fin-{i}")) for i in range(4)]
    await service.cancel_payment(SHOP, reserved[1].id, "changed mind")  # canceled while "the provider was called"
    group_sizes["status_change"].clear()  # the cancel's
    groups = GroupCommit(service.db, "status_change", write_transitions, max_group=32, max_in_flight=1)
    transitions = [plan_transition(p, StatusChange(PaymentStatus.PENDING, "checkout_created", values={
        "provider_payment_id": f"pp-{p.id}", "checkout_url": f"https://pay.example/{p.id}", "create_lease_until": None,
    }, announce=False), utcnow()) for p in reserved]
    applied = await asyncio.gather(*(groups.submit(t) for t in transitions))
    assert applied == [True, False, True, True]
    assert group_sizes["status_change"] == [1, 3], group_sizes  # the first alone, the rest together
    async with service.db.read() as conn:
        stored = [await PaymentRepository(conn).get(p.id) for p in reserved]
    assert [p.status for p in stored] == [PaymentStatus.PENDING, PaymentStatus.CANCELED, PaymentStatus.PENDING,
                                          PaymentStatus.PENDING]
    assert stored[1].provider_payment_id is None  # nothing of the finish that did not apply
    assert [p.provider_payment_id for p in stored[2:]] == [f"pp-{p.id}" for p in reserved[2:]]
    assert await _events(service, reserved[1].id) == ["payment_created", "payment_canceled"]
    assert await _events(service, reserved[2].id) == ["payment_created", "checkout_created"]


async def _callbacks(service, payment_id: int) -> list[str]:  # noqa: F811
    async with service.db.read() as conn:
        rows = await conn.execute(sa.select(callback_deliveries.c.event_type)
                                  .where(callback_deliveries.c.payment_id == payment_id))
        return [r[0] for r in rows]


async def test_concurrent_cancels_share_transactions_each_with_its_event_and_callback(service, group_sizes):  # noqa: F811
    created = await asyncio.gather(*(service.create_payment(SHOP, command(f"cx-{i}")) for i in range(20)))
    group_sizes["status_change"].clear()  # the creates' finishes
    canceled = await asyncio.gather(*(service.cancel_payment(SHOP, r.payment.id, "no longer needed") for r in created))
    assert [p.id for p in canceled] == [r.payment.id for r in created]
    assert all(p.status == PaymentStatus.CANCELED and p.cancel_reason == "no longer needed" for p in canceled)
    assert sum(group_sizes["status_change"]) == 20 and max(group_sizes["status_change"]) > 1, group_sizes
    for r in created:
        assert await _events(service, r.payment.id) == ["payment_created", "checkout_created", "payment_canceled"]
        assert await _callbacks(service, r.payment.id) == ["payment.canceled"]  # the outbox row, once


async def test_a_change_whose_payment_changed_after_it_was_read_is_decided_again_under_the_lock(service, monkeypatch):  # noqa: F811
    payment = (await service.create_payment(SHOP, command("race"))).payment
    submit = service.status_writes.submit

    async def paid_meanwhile(transition):  # the provider's "paid" lands between the cancel's read and its write
        monkeypatch.setattr(service.status_writes, "submit", submit)
        async with service.db.transaction() as conn:
            current = await PaymentRepository(conn).get(payment.id, for_update=True)
            await apply_status_change(conn, current, StatusChange(PaymentStatus.PAID, "provider_paid"), utcnow())
        return await submit(transition)

    monkeypatch.setattr(service.status_writes, "submit", paid_meanwhile)
    with pytest.raises(InvalidTransitionError):
        await service.cancel_payment(SHOP, payment.id, "too late")
    async with service.db.read() as conn:
        assert (await PaymentRepository(conn).get(payment.id)).status == PaymentStatus.PAID
    assert await _events(service, payment.id) == ["payment_created", "checkout_created", "provider_paid", "cancel_rejected"]
    assert await _callbacks(service, payment.id) == ["payment.paid"]


async def test_a_group_is_written_in_payment_id_order_and_answered_in_its_callers(service, monkeypatch):  # noqa: F811
    reserved = [await service.reserves.submit(_create(service, f"ord-{i}")) for i in range(3)]
    stale = dataclasses.replace(reserved[0], status=PaymentStatus.PENDING)  # the row is CREATED: does not apply
    written: list[int] = []
    update_each = PaymentRepository.update_each_if_status

    async def recorded(self, updates):
        written.extend(update[0] for update in updates)
        return await update_each(self, updates)

    monkeypatch.setattr(PaymentRepository, "update_each_if_status", recorded)
    cancel = StatusChange(PaymentStatus.CANCELED, "payment_canceled")
    transitions = [plan_transition(p, cancel, utcnow()) for p in (reserved[2], stale, reserved[1])]
    async with service.db.transaction() as conn:
        applied = await write_transitions(conn, transitions)
    assert written == sorted(p.id for p in reserved)  # rows locked in one order: two groups cannot deadlock
    assert applied == [True, False, True]
    async with service.db.read() as conn:
        stored = [await PaymentRepository(conn).get(p.id) for p in reserved]
    assert [p.status for p in stored] == [PaymentStatus.CREATED, PaymentStatus.CANCELED, PaymentStatus.CANCELED]


async def _logged(service, payment_id: int) -> list[CallbackStatus]:  # noqa: F811
    async with service.db.read() as conn:
        rows = await conn.execute(sa.select(payment_callbacks.c.status).where(payment_callbacks.c.payment_id == payment_id)
                                  .order_by(payment_callbacks.c.id))
        return [CallbackStatus(r[0]) for r in rows]


async def test_concurrent_webhooks_share_transactions_and_one_delivered_twice_applies_once(service, group_sizes):  # noqa: F811
    created = [r.payment for r in await asyncio.gather(*(service.create_payment(SHOP, command(f"wh-{i}")) for i in range(12)))]
    group_sizes["status_change"].clear()  # the creates' finishes
    paid = [signed(service.provider, p, "pay") for p in created]
    outcomes = await asyncio.gather(*(service.handle_provider_callback(cb) for cb in paid + paid[:3]))
    assert Counter(o.status for o in outcomes) == {CallbackStatus.PROCESSED: 12, CallbackStatus.DUPLICATE: 3}
    assert max(group_sizes["status_change"]) > 1, group_sizes
    for i, p in enumerate(created):
        assert (await service.get_payment(SHOP, p.id)).status == PaymentStatus.PAID
        assert await _events(service, p.id) == ["payment_created", "checkout_created", "payment.succeeded"]
        assert await _callbacks(service, p.id) == ["payment.paid"]
        assert Counter(await _logged(service, p.id)) == {CallbackStatus.PROCESSED: 1, **({CallbackStatus.DUPLICATE: 1} if i < 3 else {})}


async def test_an_event_applied_before_refuses_only_its_own_change_in_a_group(service, group_sizes):  # noqa: F811
    created = [(await service.create_payment(SHOP, command(f"dd-{i}"))).payment for i in range(4)]
    async with service.db.transaction() as conn:  # "evt_seen" was applied before
        await CallbackLogRepository(conn).record(provider="sandbox", callback_hash="h", signature="s", payload="{}",
                                                 status=CallbackStatus.PROCESSED, now=utcnow(), dedup_key="evt_seen")

    def processed(payment, event_id):
        return lambda now: [(callback_rows.INSERT_AFTER_UPDATE, callback_rows.callback_row(
            provider="sandbox", callback_hash=payment.provider_callback_hash, signature="s", payload="{}",
            status=CallbackStatus.PROCESSED, now=now, payment_id=payment.id, dedup_key=event_id))]

    service.status_writes._max_in_flight = 1  # the service's own wiring, one transaction in flight: the first alone, the rest together
    group_sizes["status_change"].clear()
    pay = StatusChange(PaymentStatus.PAID, "payment.succeeded")
    outcomes = await asyncio.gather(*(service.write_grouped(p, pay, processed(p, "evt_seen" if i == 2 else f"evt_{i}"))
                                      for i, p in enumerate(created)), return_exceptions=True)
    assert isinstance(outcomes[2], DuplicateProviderEvent), outcomes
    assert [o.status for i, o in enumerate(outcomes) if i != 2] == [PaymentStatus.PAID] * 3
    # The group [1, 2, 3] was rolled back, then written one by one.
    assert group_sizes["status_change"] == [1, 3, 1, 1, 1], group_sizes
    stored = [await service.get_payment(SHOP, p.id) for p in created]
    assert [p.status for p in stored] == [PaymentStatus.PAID, PaymentStatus.PAID, PaymentStatus.PENDING, PaymentStatus.PAID]
    assert [await _logged(service, p.id) for p in created] == [[CallbackStatus.PROCESSED], [CallbackStatus.PROCESSED], [],
                                                               [CallbackStatus.PROCESSED]]
