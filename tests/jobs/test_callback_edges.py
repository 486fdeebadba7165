"""Status callback replays, the outbox gauges and the timeline rows they write, in-process
(SQLite, PostgreSQL, MariaDB).

A replay queues a new delivery of the current status, records it on the payment's
timeline and in the audit trail, and is refused with the policy's reason when the stored
URL may no longer receive callbacks; the outbox gauges count what is due, since when, and
what is dead; the payment_events repository writes and reads back every column, pages by
id, and names its bind parameters after the columns."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa

from payments_svc import metrics
from payments_svc.auth.caller import Caller
from payments_svc.db.tables import callback_deliveries, payment_events
from payments_svc.domain.enums import DeliveryStatus, PaymentStatus
from payments_svc.domain.errors import ErrorKind, NotFoundError, PaymentsError, ValidationError
from payments_svc.domain.payment import PaymentEvent
from payments_svc.repository.audit import AuditRepository
from payments_svc.repository.events import EVENT_VALUES, EventRepository, event_binds, event_row
from payments_svc.repository.outbox import OutboxRepository
from payments_svc.service import callbacks as callbacks_module
from payments_svc.service.callbacks import CallbackService, refresh_outbox_metrics

from ..integration.test_payment_service import command
from ..integration.test_refunds import SHOP, paid_payment

NOW = datetime(2026, 3, 1, 12, 0, 0)  # naive UTC, as the columns hold it
KEYED_SHOP = Caller("shop", key_id="key-7")


@pytest.fixture
def frozen(monkeypatch):
    """The callbacks module's clock stops at NOW."""
    monkeypatch.setattr(callbacks_module, "utcnow", lambda: NOW)
    return NOW


async def deliveries(container, payment_id: int) -> list[tuple]:
    d = callback_deliveries.c
    async with container.db.read() as conn:
        return [tuple(r) for r in await conn.execute(
            sa.select(d.delivery_id, d.event_type, d.status).where(d.payment_id == payment_id).order_by(d.id))]


async def timeline(container, payment_id: int) -> list[PaymentEvent]:
    async with container.db.read() as conn:
        return await EventRepository(conn).list(payment_id, limit=100, after_id=0)


async def audit_entries(container) -> list:
    async with container.db.read() as conn:
        return await AuditRepository(conn).list()


# ---- replay ---------------------------------------------------------------------------


async def test_a_replay_queues_the_current_status_and_records_it_on_the_timeline_and_in_the_audit(container, frozen):
    payment = await paid_payment(container.service)
    callbacks = CallbackService(container.service)
    replayed, delivery = await callbacks.replay(KEYED_SHOP, payment.id)
    assert replayed == await container.service.get_payment(SHOP, payment.id)
    delivery_id = delivery.delivery_id
    assert delivery_id.startswith("msg_")
    assert dataclasses.astuple(delivery)[1:] == (
        delivery_id, payment.id, "shop", "payment.paid", PaymentStatus.PAID, DeliveryStatus.PENDING, 0, NOW, None, None, NOW)
    assert [(event_type, status) for _, event_type, status in await deliveries(container, payment.id)] == [
        ("payment.paid", int(DeliveryStatus.PENDING)), ("payment.paid", int(DeliveryStatus.PENDING))]
    last = (await timeline(container, payment.id))[-1]
    assert dataclasses.astuple(last)[1:] == (
        payment.id, "callback_replay_requested", PaymentStatus.PAID, PaymentStatus.PAID, None, False,
        f"{delivery_id} queued", NOW)
    (entry,) = await audit_entries(container)
    assert (entry.actor_service, entry.actor_key_id, entry.action, entry.target_type, entry.target_id, entry.request_id,
            entry.detail) == ("shop", "key-7", "callback.replayed", "payment", str(payment.id), "", f"{delivery_id} queued")
    assert await callbacks.get_payment_with_delivery(SHOP, payment.id) == (replayed, delivery)  # the latest delivery


async def test_a_replay_to_a_url_the_policy_now_refuses_is_refused_and_queues_nothing(container):
    payment = await paid_payment(container.service)  # its callback URL is https://shop.example/cb
    before = (await deliveries(container, payment.id), await timeline(container, payment.id))
    service = container.service
    service.settings = dataclasses.replace(service.settings, callback_allowed_hosts=("hooks.shop.example",))
    with pytest.raises(PaymentsError) as refused:
        await CallbackService(service).replay(KEYED_SHOP, payment.id)
    assert (refused.value.kind, refused.value.message) == (
        ErrorKind.FAILED_PRECONDITION,
        "status_callback_url host 'shop.example' is not allowed by PAYMENTS_CALLBACK_ALLOWED_HOSTS; "
        "the callback cannot be delivered")
    assert (await deliveries(container, payment.id), await timeline(container, payment.id)) == before
    assert await audit_entries(container) == []


async def test_the_delivery_state_of_a_payment_without_callbacks_is_none_and_others_are_absent(container):
    pending = (await container.service.create_payment(SHOP, command("pending"))).payment
    callbacks = CallbackService(container.service)
    assert await callbacks.get_payment_with_delivery(SHOP, pending.id) == (pending, None)
    for caller, payment_id in ((SHOP, pending.id + 1), (Caller("billing"), pending.id)):
        with pytest.raises(NotFoundError):
            await callbacks.get_payment_with_delivery(caller, payment_id)
    with pytest.raises(ValidationError) as invalid:
        await callbacks.get_payment_with_delivery(SHOP, 0)
    assert (invalid.value.field, invalid.value.message) == ("id", "invalid payment id")


# ---- outbox gauges ----------------------------------------------------------------------


def gauges() -> tuple[float, float, float]:
    return (metrics.OUTBOX_DUE._value.get(), metrics.OUTBOX_OLDEST_DUE_AGE._value.get(),
            metrics.DEAD_CALLBACKS._value.get())


async def test_the_outbox_gauges_count_due_deliveries_the_oldest_ones_age_and_the_dead(container, frozen):
    payment = (await container.service.create_payment(SHOP, command("pending"))).payment
    async with container.db.transaction() as conn:
        outbox = OutboxRepository(conn)
        ids = [await outbox.enqueue(payment_id=payment.id, caller_service="shop", event_type="payment.paid",
                                    payment_status=PaymentStatus.PAID, now=NOW + timedelta(seconds=offset))
               for offset in (-30, -10, 0, 60, -100)]
        await conn.execute(sa.update(callback_deliveries).where(callback_deliveries.c.delivery_id == ids[-1])
                           .values(status=int(DeliveryStatus.FAILED)))  # exhausted its retries
    for gauge in (metrics.OUTBOX_DUE, metrics.OUTBOX_OLDEST_DUE_AGE, metrics.DEAD_CALLBACKS):
        gauge.set(99)
    await refresh_outbox_metrics(container.db)
    assert gauges() == (3, 30.0, 1)  # due at NOW counts; the one due in a minute does not

    async with container.db.transaction() as conn:
        await conn.execute(sa.update(callback_deliveries).where(callback_deliveries.c.delivery_id.in_(ids[:3]))
                           .values(status=int(DeliveryStatus.SUCCESS)))
    await refresh_outbox_metrics(container.db)
    assert gauges() == (0, 0, 1)


# ---- the payment_events timeline ------------------------------------------------------------


def test_event_bind_parameters_are_named_and_typed_after_their_columns():
    plain, prefixed = event_binds(), event_binds("event_")
    assert list(plain) == list(prefixed) == list(EVENT_VALUES)
    assert {name: bind.key for name, bind in plain.items()} == {name: name for name in EVENT_VALUES}
    assert {name: bind.key for name, bind in prefixed.items()} == {name: "event_" + name for name in EVENT_VALUES}
    for binds in (plain, prefixed):
        assert {name: type(bind.type) for name, bind in binds.items()} == {
            name: type(payment_events.c[name].type) for name in EVENT_VALUES}


def test_an_event_row_binds_statuses_as_numbers_and_cuts_the_message_to_its_column():
    assert event_row(payment_id=None, event_type="note", old_status=None, new_status=PaymentStatus.PAID, now=NOW) == {
        "payment_id": None, "event_type": "note", "old_status": None, "new_status": int(PaymentStatus.PAID),
        "provider_event_id": None, "needs_attention": False, "message": None, "payload_json": None, "created_at": NOW}
    row = event_row(payment_id=7, event_type="paid", old_status=PaymentStatus.PENDING, new_status=PaymentStatus.PAID,
                    now=NOW, provider_event_id="evt_1", needs_attention=True, message="m" * 1025, payload='{"a": 1}')
    assert row == {"payment_id": 7, "event_type": "paid", "old_status": int(PaymentStatus.PENDING),
                   "new_status": int(PaymentStatus.PAID), "provider_event_id": "evt_1", "needs_attention": True,
                   "message": "m" * 1024, "payload_json": '{"a": 1}', "created_at": NOW}
    assert type(row["old_status"]) is int and type(row["new_status"]) is int  # bound as plain numbers


async def test_events_are_written_with_every_column_read_back_and_paged_by_id(container):
    first = (await container.service.create_payment(SHOP, command("first"))).payment
    payment = (await container.service.create_payment(SHOP, command("second"))).payment
    created = await timeline(container, payment.id)
    after = created[-1].id
    async with container.db.transaction() as conn:
        events = EventRepository(conn)
        await events.add(payment_id=payment.id, event_type="note", old_status=None, new_status=PaymentStatus.PENDING,
                         now=NOW, provider_event_id="evt_1", message="a note", payload='{"k": "v"}')
        await events.add(payment_id=payment.id, event_type="paid", old_status=PaymentStatus.PENDING,
                         new_status=PaymentStatus.PAID, now=NOW + timedelta(seconds=1), needs_attention=True)
        await events.add(payment_id=first.id, event_type="other", old_status=None, new_status=PaymentStatus.PENDING, now=NOW)
        await events.add(payment_id=payment.id, event_type="long", old_status=PaymentStatus.PAID,
                         new_status=PaymentStatus.PAID, now=NOW + timedelta(seconds=2), message="x" * 1030)
    async with container.db.read() as conn:
        events = EventRepository(conn)
        mine = await events.list(payment.id, limit=10, after_id=after)
        assert [(e.id > after, e.payment_id) for e in mine] == [(True, payment.id)] * 3
        assert [dataclasses.astuple(e)[1:] for e in mine] == [
            (payment.id, "note", None, PaymentStatus.PENDING, "evt_1", False, "a note", NOW),
            (payment.id, "paid", PaymentStatus.PENDING, PaymentStatus.PAID, None, True, None, NOW + timedelta(seconds=1)),
            (payment.id, "long", PaymentStatus.PAID, PaymentStatus.PAID, None, False, "x" * 1024, NOW + timedelta(seconds=2)),
        ]
        ids = [e.id for e in mine]
        assert ids == sorted(ids) and ids[1] - ids[0] == 1 and ids[2] - ids[1] == 2  # "other" in between
        assert await events.list(payment.id, limit=2, after_id=after) == mine[:2]
        assert await events.list(payment.id, limit=10, after_id=ids[0]) == mine[1:]
        assert await events.list(payment.id, limit=10, after_id=ids[2]) == []
        assert [e.payment_id for e in await events.list(first.id, limit=100, after_id=0)] == [first.id] * (len(created) + 1)
        payloads = [r[0] for r in await conn.execute(
            sa.select(payment_events.c.payload_json).where(payment_events.c.id.in_(ids)).order_by(payment_events.c.id))]
    assert payloads == ['{"k": "v"}', None, None]
