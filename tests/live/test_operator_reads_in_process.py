"""The operator reads of tests/live/test_operator_api.py in-process (so that mutation
testing sees them): payment statistics per caller and buyer, dead callbacks (listing,
the metric, requeue), the workers' backlogs and the system status. Rows are written
straight into the tables with chosen timestamps, and "now" is pinned, so every count,
sum and boundary is exact."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa
from aiohttp import web

from payments_svc import metrics
from payments_svc.auth.caller import Caller
from payments_svc.config import load_settings
from payments_svc.container import build_container
from payments_svc.db.migrate import migrate
from payments_svc.db.tables import audit_log, callback_deliveries, payments, stellar_cursors, worker_heartbeats
from payments_svc.domain.enums import DeliveryStatus, PaymentStatus
from payments_svc.domain.errors import ErrorKind, PermissionDeniedError, ValidationError
from payments_svc.providers.stellar.settings import StellarSettings
from payments_svc.repository.backlogs import BacklogRepository
from payments_svc.repository.dead_callbacks import DeadCallbackRepository
from payments_svc.repository.deliveries import CallbackDelivery
from payments_svc.repository.stats import StatsRepository, StatusGroup
from payments_svc.service import dead_callbacks, stats, system_status
from payments_svc.service.dead_callbacks import DeliveryRecord
from payments_svc.service.stats import PaymentStats
from payments_svc.service.system_status import CursorState, WorkerState

from ..conftest import BACKENDS, fresh_database
from ..support import base_env, new_database

NOW = datetime(2026, 12, 3, 12, 0, 0)
T0 = datetime(2026, 11, 1)  # the start of the ranges asked for
T1 = datetime(2026, 12, 1)  # their end (excluded)
SHOP, OTHER = Caller("shop"), Caller("other")
ADMIN = Caller("ops", frozenset({"*"}), key_id="7")
PENDING, PAID, FAILED, EXPIRED = PaymentStatus.PENDING, PaymentStatus.PAID, PaymentStatus.FAILED, PaymentStatus.EXPIRED
_seq = itertools.count()
# Refusals come before any read: their tests pass no database (a mutant letting one through fails on None).
NO_DATABASE = NO_SETTINGS = None

# SQLite (and MariaDB under the mysql mark) for these tests, which rerun for every mutant;
# test_the_reads_on_postgresql runs the queries once on PostgreSQL.
database = pytest.fixture(params=BACKENDS, name="database")(fresh_database)


@pytest.fixture
def pinned_now(monkeypatch):
    """Every service module under test reads the clock as NOW."""
    for module in (stats, dead_callbacks, system_status):
        monkeypatch.setattr(module, "utcnow", lambda: NOW)


async def add_payment(db, *, caller: str = "shop", customer_ref: str | None = None, status: PaymentStatus = PENDING,
                      currency: str = "USD", amount: int = 1000, refunded: int = 0, created_at: datetime = T0,
                      updated_at: datetime | None = None, reconcile_next_at: datetime | None = None) -> int:
    n = next(_seq)
    row = dict(
        request_id=f"ops-{n}", caller_service=caller, request_fingerprint="0" * 64, resource_type="order",
        resource_id=f"o-{n}", customer_ref=customer_ref, amount_cents=amount, currency=currency, status=int(status),
        payment_method=1, payment_type=1, provider=100, provider_payment_id=f"sbx_ops_{n}", provider_callback_hash=f"ops-{n}",
        provider_callback_url="http://127.0.0.1:1/cb", status_callback_url="https://shop.example/cb",
        refunded_cents=refunded, refundable_cents=amount - refunded, metadata_json="{}", created_at=created_at,
        updated_at=updated_at or created_at, reconcile_next_at=reconcile_next_at,
    )
    async with db.transaction() as conn:
        await conn.execute(payments.insert().values(row))
        return (await conn.execute(sa.select(payments.c.id).where(payments.c.request_id == row["request_id"]))).scalar_one()


async def add_delivery(db, payment_id: int, *, caller: str = "shop", status: DeliveryStatus = DeliveryStatus.FAILED,
                       updated_at: datetime = T0, event_type: str = "payment.paid", payment_status: PaymentStatus = PAID,
                       attempts: int = 10, next_attempt_at: datetime | None = None, last_error: str | None = "connection refused",
                       last_status_code: int | None = None) -> int:
    n = next(_seq)
    row = dict(delivery_id=f"msg_ops_{n}", payment_id=payment_id, caller_service=caller, event_type=event_type,
               payment_status=int(payment_status), status=int(status), attempts=attempts, next_attempt_at=next_attempt_at,
               last_error=last_error, last_status_code=last_status_code, created_at=T0 - timedelta(hours=1),
               updated_at=updated_at)
    async with db.transaction() as conn:
        await conn.execute(callback_deliveries.insert().values(row))
        return (await conn.execute(sa.select(callback_deliveries.c.id)
                                   .where(callback_deliveries.c.delivery_id == row["delivery_id"]))).scalar_one()


async def delivery_rows(db) -> dict[int, sa.Row]:
    async with db.read() as conn:
        return {r.id: r for r in await conn.execute(sa.select(callback_deliveries))}


def assert_refused(info, error: type, message: str, field: str | None) -> None:
    assert type(info.value) is error
    assert (info.value.message, info.value.field) == (message, field)


# ---------------------------------------------------------------------------------------------
# Payment statistics


async def seed_stats(db) -> None:
    """shop's payments in [T0, T1), written in the reverse of the order the groups come in."""
    await add_payment(db, customer_ref="b2", status=EXPIRED, currency="USD", amount=50, refunded=30, created_at=T0 + timedelta(days=6))
    await add_payment(db, status=EXPIRED, currency="USD", amount=100, created_at=T0 + timedelta(days=5))  # no buyer
    await add_payment(db, customer_ref="b2", status=FAILED, currency="USD", amount=700, created_at=T0 + timedelta(days=4))
    await add_payment(db, customer_ref="b1", status=PENDING, currency="USD", amount=250, created_at=T0 + timedelta(days=2))
    await add_payment(db, customer_ref="b1", status=PAID, currency="USD", amount=500, created_at=T0 + timedelta(days=1))
    await add_payment(db, customer_ref="b1", status=PAID, currency="USD", amount=1000, refunded=400, created_at=T0)  # first moment: in
    await add_payment(db, customer_ref="b1", status=PENDING, currency="EUR", amount=300, created_at=T0 + timedelta(days=3))
    # Out of the range or another caller's:
    await add_payment(db, customer_ref="b1", status=PAID, amount=9999, created_at=T1)  # the end is excluded
    await add_payment(db, customer_ref="b1", status=PAID, amount=8888, created_at=T0 - timedelta(seconds=1))
    await add_payment(db, caller="other", customer_ref="b1", status=PAID, amount=7777, created_at=T0 + timedelta(days=1))


async def test_stats_of_a_caller_group_by_status_and_currency(container):
    await seed_stats(container.db)
    result = await stats.payment_stats(container.db, SHOP, caller_service="", customer_ref="", since=T0, until=T1)
    assert result == PaymentStats(
        caller_service="shop", customer_ref="", since=T0, until=T1,
        by_status=[
            StatusGroup(PENDING, "EUR", 1, 300, 0),
            StatusGroup(PENDING, "USD", 1, 250, 0),
            StatusGroup(PAID, "USD", 2, 1500, 400),
            StatusGroup(FAILED, "USD", 1, 700, 0),
            StatusGroup(EXPIRED, "USD", 2, 150, 30),
        ],
        created=7, paid=2, refunded_cents_by_currency={"USD": 430},  # refunds add up across the groups of a currency
    )
    assert type(result.by_status[0].status) is PaymentStatus
    assert result.conversion == 2 / 7


async def test_stats_of_one_buyer(container):
    await seed_stats(container.db)
    result = await stats.payment_stats(container.db, SHOP, caller_service=" shop ", customer_ref="  b1 ", since=T0, until=T1)
    assert result == PaymentStats(
        caller_service="shop", customer_ref="b1", since=T0, until=T1,
        by_status=[StatusGroup(PENDING, "EUR", 1, 300, 0), StatusGroup(PENDING, "USD", 1, 250, 0),
                   StatusGroup(PAID, "USD", 2, 1500, 400)],
        created=4, paid=2, refunded_cents_by_currency={"USD": 400},
    )
    assert result.conversion == 0.5


async def test_stats_refunds_are_kept_apart_per_currency(container):
    db = container.db
    await add_payment(db, status=PAID, currency="EUR", amount=900, refunded=100, created_at=T0)
    await add_payment(db, status=PAID, currency="USD", amount=900, refunded=250, created_at=T0)
    await add_payment(db, status=PAID, currency="VND", amount=90000, created_at=T0)
    result = await stats.payment_stats(db, SHOP, caller_service="", customer_ref="", since=T0, until=T1)
    assert result.refunded_cents_by_currency == {"EUR": 100, "USD": 250}  # no entry for a currency never refunded
    assert (result.created, result.paid, result.conversion) == (3, 3, 1.0)


async def test_stats_groups_come_by_status_then_currency(container):
    db = container.db
    for status, currency in ((FAILED, "AUD"), (PAID, "EUR"), (PENDING, "USD"), (PAID, "AUD")):
        await add_payment(db, status=status, currency=currency, amount=100, created_at=T0)
    result = await stats.payment_stats(db, SHOP, caller_service="", customer_ref="", since=T0, until=T1)
    assert [(g.status, g.currency) for g in result.by_status] == [(PENDING, "USD"), (PAID, "AUD"), (PAID, "EUR"), (FAILED, "AUD")]


async def test_stats_of_a_caller_without_payments_are_zero(container):
    await add_payment(container.db, caller="other", status=PAID, created_at=T0)
    result = await stats.payment_stats(container.db, SHOP, caller_service="shop", customer_ref="", since=T0, until=T1)
    assert (result.by_status, result.created, result.paid, result.refunded_cents_by_currency) == ([], 0, 0, {})
    assert result.conversion == 0.0


async def test_stats_default_to_the_last_30_days(container, pinned_now):
    db = container.db
    await add_payment(db, status=PAID, amount=1, created_at=NOW - timedelta(days=30))  # in: the first moment
    await add_payment(db, status=PAID, amount=2, created_at=NOW - timedelta(seconds=1))
    await add_payment(db, status=PAID, amount=4, created_at=NOW - timedelta(days=30, seconds=1))  # out
    await add_payment(db, status=PAID, amount=8, created_at=NOW)  # out: the end is excluded
    result = await stats.payment_stats(db, SHOP, caller_service="", customer_ref="", since=None, until=None)
    assert (result.since, result.until) == (NOW - timedelta(days=30), NOW)
    assert result.by_status == [StatusGroup(PAID, "USD", 2, 3, 0)]


async def test_stats_with_one_bound_take_30_days_from_the_other(container, pinned_now):
    until = datetime(2026, 6, 1)
    result = await stats.payment_stats(container.db, SHOP, caller_service="", customer_ref="", since=None, until=until)
    assert (result.since, result.until) == (datetime(2026, 5, 2), until)
    since = datetime(2026, 1, 1)  # with only a start, the range runs up to now
    result = await stats.payment_stats(container.db, SHOP, caller_service="", customer_ref="", since=since, until=None)
    assert (result.since, result.until) == (since, NOW)


async def test_stats_span_at_most_366_days(container):
    since = datetime(2025, 1, 1)
    longest = await stats.payment_stats(container.db, SHOP, caller_service="", customer_ref="", since=since,
                                        until=since + timedelta(days=366))
    assert longest.until - longest.since == timedelta(days=366)
    with pytest.raises(ValidationError) as info:
        await stats.payment_stats(container.db, SHOP, caller_service="", customer_ref="", since=since,
                                  until=since + timedelta(days=366, seconds=1))
    assert_refused(info, ValidationError, "the range may span at most 366 days; ask for several ranges", "since")


async def test_stats_refuse_bounds_out_of_order():
    for since, until in ((T1, T0), (T0, T0)):
        with pytest.raises(ValidationError) as info:
            await stats.payment_stats(NO_DATABASE, SHOP, caller_service="", customer_ref="", since=since, until=until)
        assert_refused(info, ValidationError, "since must be before until", "since")


async def test_stats_customer_ref_is_at_most_255_characters(container):
    await add_payment(container.db, customer_ref="b" * 255, status=PAID, created_at=T0)
    result = await stats.payment_stats(container.db, SHOP, caller_service="", customer_ref=" " + "b" * 255 + " ",
                                       since=T0, until=T1)
    assert (result.customer_ref, result.created) == ("b" * 255, 1)  # measured once stripped
    with pytest.raises(ValidationError) as info:
        await stats.payment_stats(container.db, SHOP, caller_service="", customer_ref="b" * 256, since=T0, until=T1)
    assert_refused(info, ValidationError, "customer_ref is longer than 255 characters", "customer_ref")


async def test_stats_of_another_caller_need_a_key_acting_for_it(container):
    await add_payment(container.db, status=PAID, created_at=T0)
    with pytest.raises(PermissionDeniedError) as info:
        await stats.payment_stats(container.db, OTHER, caller_service=" shop ", customer_ref="", since=T0, until=T1)
    assert_refused(info, PermissionDeniedError, "this api key may not read payments of caller_service 'shop'", "caller_service")
    assert info.value.kind == ErrorKind.PERMISSION_DENIED
    gateway = Caller("gateway", frozenset({"shop"}))
    result = await stats.payment_stats(container.db, gateway, caller_service="shop", customer_ref="", since=T0, until=T1)
    assert (result.caller_service, result.created, result.paid) == ("shop", 1, 1)
    own = await stats.payment_stats(container.db, gateway, caller_service="", customer_ref="", since=T0, until=T1)
    assert (own.caller_service, own.created) == ("gateway", 0)  # by default, the key's own payments


async def test_stats_repository_reads_one_callers_range(container):
    await seed_stats(container.db)
    async with container.db.read() as conn:
        groups = await StatsRepository(conn).by_status("shop", "b2", T0, T1)
    assert groups == [StatusGroup(FAILED, "USD", 1, 700, 0), StatusGroup(EXPIRED, "USD", 1, 50, 30)]
    assert all(type(value) is int for g in groups for value in (g.count, g.amount_cents, g.refunded_cents))


# ---------------------------------------------------------------------------------------------
# Dead callbacks: the listing


@dataclasses.dataclass
class Deliveries:
    shop_payment: int
    shop_dead: int  # d1: died at T0
    shop_success: int  # d2: T0 + 1 h
    other_dead: int  # d3: T0 + 2 h
    shop_dead_later: int  # d4: T0 + 3 h
    gateway_pending: int  # d5: T0 + 4 h


async def seed_deliveries(db) -> Deliveries:
    shop = await add_payment(db, status=PAID)
    other = await add_payment(db, caller="other", status=PAID)
    gateway = await add_payment(db, caller="gateway", status=PaymentStatus.CANCELED)
    return Deliveries(
        shop,
        await add_delivery(db, shop, updated_at=T0),
        await add_delivery(db, shop, status=DeliveryStatus.SUCCESS, updated_at=T0 + timedelta(hours=1), attempts=2,
                           last_error=None, last_status_code=200),
        await add_delivery(db, other, caller="other", updated_at=T0 + timedelta(hours=2)),
        await add_delivery(db, shop, updated_at=T0 + timedelta(hours=3), event_type="payment.refunded", attempts=7,
                           last_error="HTTP 500", last_status_code=500),
        await add_delivery(db, gateway, caller="gateway", status=DeliveryStatus.PENDING, updated_at=T0 + timedelta(hours=4),
                           event_type="payment.canceled", payment_status=PaymentStatus.CANCELED, attempts=0,
                           next_attempt_at=NOW, last_error=None),
    )


async def listed(db, caller: Caller, *, caller_service: str = "", status: int = 0, since: datetime | None = None,
                 until: datetime | None = None, before_id: int = 0, limit: int = 0) -> list[int]:
    records = await dead_callbacks.list_deliveries(db, caller, caller_service=caller_service, status=status, since=since,
                                                   until=until, before_id=before_id, limit=limit)
    return [r.delivery.id for r in records]


async def test_a_delivery_record_carries_the_delivery_and_when_it_died(container):
    d = await seed_deliveries(container.db)
    records = await dead_callbacks.list_deliveries(container.db, SHOP, caller_service="", status=int(DeliveryStatus.FAILED),
                                                   since=None, until=None, before_id=0, limit=1)
    assert records == [DeliveryRecord(
        CallbackDelivery(id=d.shop_dead_later, delivery_id=records[0].delivery.delivery_id, payment_id=d.shop_payment,
                         caller_service="shop", event_type="payment.refunded", payment_status=PAID,
                         status=DeliveryStatus.FAILED, attempts=7, next_attempt_at=None, last_error="HTTP 500",
                         last_status_code=500, created_at=T0 - timedelta(hours=1)),
        T0 + timedelta(hours=3),
    )]
    assert records[0].delivery.delivery_id.startswith("msg_ops_")
    assert type(records[0].delivery.status) is DeliveryStatus and type(records[0].delivery.payment_status) is PaymentStatus


async def test_a_key_lists_its_own_deliveries_newest_first(container):
    d = await seed_deliveries(container.db)
    assert await listed(container.db, SHOP) == [d.shop_dead_later, d.shop_success, d.shop_dead]
    assert await listed(container.db, SHOP, status=int(DeliveryStatus.FAILED)) == [d.shop_dead_later, d.shop_dead]
    assert await listed(container.db, SHOP, status=int(DeliveryStatus.SUCCESS)) == [d.shop_success]
    assert await listed(container.db, SHOP, caller_service="shop") == [d.shop_dead_later, d.shop_success, d.shop_dead]
    assert await listed(container.db, OTHER) == [d.other_dead]


async def test_a_gateway_lists_the_callers_it_acts_for_and_an_admin_every_caller(container):
    d = await seed_deliveries(container.db)
    gateway = Caller("gateway", frozenset({"other"}))
    assert await listed(container.db, gateway) == [d.gateway_pending, d.other_dead]
    assert await listed(container.db, gateway, caller_service="other") == [d.other_dead]
    assert await listed(container.db, ADMIN) == [d.gateway_pending, d.shop_dead_later, d.other_dead, d.shop_success, d.shop_dead]
    assert await listed(container.db, ADMIN, caller_service="shop", status=int(DeliveryStatus.FAILED)) == [
        d.shop_dead_later, d.shop_dead]
    assert await listed(container.db, ADMIN, status=int(DeliveryStatus.PENDING)) == [d.gateway_pending]


async def test_another_callers_deliveries_are_refused():
    with pytest.raises(PermissionDeniedError) as info:
        await listed(NO_DATABASE, OTHER, caller_service="shop")
    assert_refused(info, PermissionDeniedError, "this api key may not read callbacks of caller_service 'shop'", "caller_service")


async def test_deliveries_by_when_they_last_changed(container):
    d = await seed_deliveries(container.db)
    hour = timedelta(hours=1)
    assert await listed(container.db, SHOP, since=T0 + hour) == [d.shop_dead_later, d.shop_success]  # since: included
    assert await listed(container.db, SHOP, until=T0 + 3 * hour) == [d.shop_success, d.shop_dead]  # until: excluded
    assert await listed(container.db, SHOP, since=T0 + hour, until=T0 + 3 * hour) == [d.shop_success]
    with pytest.raises(ValidationError) as info:
        await listed(container.db, SHOP, since=T0 + hour, until=T0 + hour)
    assert_refused(info, ValidationError, "since must be before until", "since")


async def test_deliveries_page_by_id_and_limit(container):
    d = await seed_deliveries(container.db)
    assert await listed(container.db, SHOP, before_id=d.shop_dead_later) == [d.shop_success, d.shop_dead]  # excluded
    assert await listed(container.db, SHOP, limit=2) == [d.shop_dead_later, d.shop_success]
    assert await listed(container.db, SHOP, limit=1, before_id=d.shop_success) == [d.shop_dead]
    assert await listed(container.db, SHOP, limit=500) == [d.shop_dead_later, d.shop_success, d.shop_dead]


async def test_deliveries_limit_defaults_to_100(container):
    payment = await add_payment(container.db, status=PAID)
    async with container.db.transaction() as conn:
        await conn.execute(callback_deliveries.insert(), [
            dict(delivery_id=f"msg_many_{i}", payment_id=payment, caller_service="shop", event_type="payment.paid",
                 payment_status=int(PAID), status=int(DeliveryStatus.FAILED), attempts=10, created_at=T0, updated_at=T0)
            for i in range(101)])
    ids = await listed(container.db, SHOP)
    assert len(ids) == 100 and ids == sorted(ids, reverse=True)


@pytest.mark.parametrize("limit", [-1, 501])
async def test_deliveries_limit_out_of_bounds_is_refused(limit):
    with pytest.raises(ValidationError) as info:
        await listed(NO_DATABASE, SHOP, limit=limit)
    assert_refused(info, ValidationError, "limit must be between 1 and 500", "limit")


@pytest.mark.parametrize("status", [7, -1, 40])
async def test_an_unknown_delivery_status_is_refused(status):
    with pytest.raises(ValidationError) as info:
        await listed(NO_DATABASE, SHOP, status=status)
    assert_refused(info, ValidationError, "invalid status", "status")


async def test_the_repository_lists_every_caller_without_a_filter(container):
    d = await seed_deliveries(container.db)
    async with container.db.read() as conn:
        rows = await DeadCallbackRepository(conn).list(callers=None, status=None, since=None, until=None, before_id=0, limit=10)
    assert [(delivery.id, died) for delivery, died in rows] == [
        (d.gateway_pending, T0 + timedelta(hours=4)), (d.shop_dead_later, T0 + timedelta(hours=3)),
        (d.other_dead, T0 + timedelta(hours=2)), (d.shop_success, T0 + timedelta(hours=1)), (d.shop_dead, T0)]


# ---------------------------------------------------------------------------------------------
# Dead callbacks: the metric and the requeue


def dead_gauge() -> float:
    return metrics.REGISTRY.get_sample_value("payments_callback_deliveries_dead")


async def audit_entries(db) -> list[sa.Row]:
    async with db.read() as conn:
        return (await conn.execute(sa.select(audit_log).order_by(audit_log.c.id))).all()


async def test_the_dead_metric_counts_every_callers_dead_callbacks(container):
    await seed_deliveries(container.db)
    metrics.DEAD_CALLBACKS.set(99)
    assert await dead_callbacks.refresh_dead_metric(container.db) == 3
    assert dead_gauge() == 3.0


async def test_requeue_sends_a_callers_dead_callbacks_again(container, pinned_now):
    db = container.db
    d = await seed_deliveries(db)
    before = await delivery_rows(db)
    actor = Caller("cli", key_id="alice@host")
    requeued = await dead_callbacks.requeue(db, actor, "shop", since=None)
    assert [old for old, _ in requeued] == [d.shop_dead, d.shop_dead_later]  # oldest first
    rows = await delivery_rows(db)
    for old, new_delivery_id in requeued:
        assert (rows[old].status, rows[old].updated_at) == (int(DeliveryStatus.REQUEUED), NOW)
        [new] = [r for r in rows.values() if r.delivery_id == new_delivery_id]
        assert new_delivery_id.startswith("msg_") and new_delivery_id != rows[old].delivery_id  # a new webhook-id
        assert (new.payment_id, new.caller_service, new.event_type, new.payment_status) == (
            rows[old].payment_id, "shop", rows[old].event_type, int(PAID))
        assert (new.status, new.attempts, new.next_attempt_at, new.created_at, new.updated_at) == (
            int(DeliveryStatus.PENDING), 0, NOW, NOW, NOW)  # a full retry budget, due now
    assert rows[d.shop_dead_later].event_type == "payment.refunded"
    # The others' and the live deliveries are untouched.
    for untouched in (d.shop_success, d.other_dead, d.gateway_pending):
        assert rows[untouched] == before[untouched]
    assert len(rows) == len(before) + 2
    [entry] = await audit_entries(db)
    assert (entry.actor_service, entry.actor_key_id, entry.action, entry.target_type, entry.target_id, entry.detail) == (
        "cli", "alice@host", "callbacks.requeued", "caller_service", "shop", "2 dead callback(s) requeued")
    assert dead_gauge() == 1.0  # other's, still dead
    assert await dead_callbacks.requeue(db, actor, "shop", since=None) == []  # nothing is dead any more


async def test_requeue_since_takes_those_that_died_from_then(container, pinned_now):
    db = container.db
    d = await seed_deliveries(db)
    requeued = await dead_callbacks.requeue(db, ADMIN, "shop", since=T0 + timedelta(hours=3))  # when d4 died: included
    assert [old for old, _ in requeued] == [d.shop_dead_later]
    rows = await delivery_rows(db)
    assert rows[d.shop_dead].status == int(DeliveryStatus.FAILED)
    [entry] = await audit_entries(db)
    assert (entry.actor_service, entry.actor_key_id, entry.detail) == (
        "ops", "7", "1 dead callback(s) requeued (died since 2026-11-01T03:00:00Z)")
    assert dead_gauge() == 2.0


async def test_requeue_of_nothing_records_nothing_but_refreshes_the_metric(container, pinned_now):
    await seed_deliveries(container.db)
    metrics.DEAD_CALLBACKS.set(99)
    assert await dead_callbacks.requeue(container.db, ADMIN, "nobody", since=None) == []
    assert await audit_entries(container.db) == []
    assert dead_gauge() == 3.0


async def test_requeue_takes_at_most_max_requeue_per_run(container, pinned_now, monkeypatch):
    d = await seed_deliveries(container.db)
    monkeypatch.setattr(dead_callbacks, "MAX_REQUEUE", 1)
    assert [old for old, _ in await dead_callbacks.requeue(container.db, ADMIN, "shop", since=None)] == [d.shop_dead]
    assert [old for old, _ in await dead_callbacks.requeue(container.db, ADMIN, "shop", since=None)] == [d.shop_dead_later]


async def test_requeue_needs_a_caller_service():
    with pytest.raises(ValidationError) as info:
        await dead_callbacks.requeue(NO_DATABASE, ADMIN, "", since=None)
    assert_refused(info, ValidationError, "the caller service is required", "caller")


class RacingConnection:
    """A connection on which a concurrent requeue takes one delivery between our SELECT
    and our UPDATE of it."""

    def __init__(self, conn, taken_id: int):
        self._conn, self._taken_id, self._done = conn, taken_id, False

    def __getattr__(self, name):
        return getattr(self._conn, name)

    async def execute(self, statement, *args, **kwargs):
        if isinstance(statement, sa.Update) and not self._done:
            self._done = True
            await self._conn.execute(callback_deliveries.update().where(callback_deliveries.c.id == self._taken_id)
                                     .values(status=int(DeliveryStatus.REQUEUED)))
        return await self._conn.execute(statement, *args, **kwargs)


async def test_requeue_skips_a_delivery_taken_meanwhile_and_goes_on(container):
    db = container.db
    payment = await add_payment(db, status=PAID)
    first, second = await add_delivery(db, payment), await add_delivery(db, payment)
    async with db.transaction() as conn:
        requeued = await DeadCallbackRepository(RacingConnection(conn, first)).requeue("shop", since=None, now=NOW, limit=10)
    assert [old for old, _ in requeued] == [second]
    rows = await delivery_rows(db)
    assert len(rows) == 3  # one new delivery: the taken one is not sent twice
    assert (rows[first].status, rows[second].status) == (int(DeliveryStatus.REQUEUED), int(DeliveryStatus.REQUEUED))
    assert rows[first].updated_at == T0  # left as the other requeue wrote it


# ---------------------------------------------------------------------------------------------
# Backlogs


async def test_stale_payments_are_the_started_ones_reconcile_would_ask_about(container):
    db, stale_before = container.db, NOW - timedelta(minutes=15)
    hour, second = timedelta(hours=1), timedelta(seconds=1)
    await add_payment(db, status=PENDING, updated_at=stale_before)  # in: at the limit
    await add_payment(db, status=PaymentStatus.PROCESSING, updated_at=stale_before - hour, reconcile_next_at=NOW)  # in: due now
    await add_payment(db, status=PaymentStatus.PROCESSING, updated_at=stale_before - hour, reconcile_next_at=NOW - hour)  # in
    await add_payment(db, status=PENDING, updated_at=stale_before - hour, reconcile_next_at=NOW + second)  # backing off
    await add_payment(db, status=PENDING, updated_at=stale_before + second)  # changed recently
    await add_payment(db, status=PaymentStatus.CREATED, updated_at=stale_before - hour)  # not started
    await add_payment(db, status=PAID, updated_at=stale_before - hour)  # over
    async with db.read() as conn:
        assert await BacklogRepository(conn).stale_payments(stale_before=stale_before, now=NOW) == 3


async def test_overdue_payments_are_the_open_ones_past_their_timeout(container):
    db, created_before, hour = container.db, NOW - timedelta(hours=1), timedelta(hours=1)
    await add_payment(db, status=PaymentStatus.CREATED, created_at=created_before)  # in: at the limit
    await add_payment(db, status=PENDING, created_at=created_before - hour)
    await add_payment(db, status=PaymentStatus.PROCESSING, created_at=created_before - hour)
    await add_payment(db, status=PENDING, created_at=created_before + timedelta(seconds=1))  # not yet
    await add_payment(db, status=PAID, created_at=created_before - hour)
    await add_payment(db, status=EXPIRED, created_at=created_before - hour)
    async with db.read() as conn:
        assert await BacklogRepository(conn).overdue_payments(created_before=created_before) == 3


ACCOUNT, OTHER_ACCOUNT = "G" + "A" * 55, "G" + "B" * 55


async def add_cursor(db, account: str, token: str, updated_at: datetime = T0) -> None:
    async with db.transaction() as conn:
        await conn.execute(stellar_cursors.insert().values(account=account, paging_token=token, updated_at=updated_at))


async def test_the_stored_stellar_cursors(container):
    async with container.db.read() as conn:
        assert await BacklogRepository(conn).stellar_cursors() == []
    await add_cursor(container.db, ACCOUNT, "4294967303", T0)
    await add_cursor(container.db, OTHER_ACCOUNT, "12", T1)
    async with container.db.read() as conn:
        assert sorted(await BacklogRepository(conn).stellar_cursors()) == [
            (ACCOUNT, "4294967303", T0), (OTHER_ACCOUNT, "12", T1)]


# ---------------------------------------------------------------------------------------------
# System status


class Horizon:
    """A Horizon root answering what the test says: (status, JSON body or text, delay)."""

    def __init__(self):
        self.status, self.body, self.delay, self.paths = 200, {"history_latest_ledger": 1_000_120}, 0.0, []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _root(self, request: web.Request) -> web.Response:
        self.paths.append(request.path)
        if self.delay:
            await asyncio.sleep(self.delay)
        if isinstance(self.body, str):
            return web.Response(status=self.status, text=self.body, content_type="text/html")
        return web.json_response(self.body, status=self.status)

    async def start(self) -> Horizon:
        app = web.Application()
        app.router.add_get("/", self._root)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def stop(self) -> None:
        await self._runner.cleanup()


@pytest.fixture
async def horizon():
    h = await Horizon().start()
    yield h
    await h.stop()


@dataclasses.dataclass(frozen=True)
class _Settings:
    """The one setting _cursor_states reads."""

    stellar: StellarSettings | None = None


def with_stellar(settings, horizon_url: str):
    stellar = StellarSettings(horizon_url=horizon_url, network_passphrase="Test", receiving_account=ACCOUNT, assets=())
    return dataclasses.replace(settings, stellar=stellar)


async def add_beat(db, worker: str, last_success_at: datetime) -> None:
    async with db.transaction() as conn:
        await conn.execute(worker_heartbeats.insert().values(worker=worker, last_success_at=last_success_at, backlog=5,
                                                             detail="5 item(s) in the last batch"))


async def seed_status(db) -> None:
    """Two callbacks due, two stale payments, two overdue ones, one dead callback."""
    s = timedelta(seconds=1)
    stale = await add_payment(db, status=PENDING, created_at=NOW - 3600 * s, updated_at=NOW - 900 * s)  # stale, overdue
    await add_payment(db, status=PaymentStatus.PROCESSING, created_at=NOW - 1000 * s, updated_at=NOW - 1000 * s,
                      reconcile_next_at=NOW - s)  # stale
    await add_payment(db, status=PENDING, created_at=NOW - 10 * s)  # recent: neither
    await add_payment(db, status=PaymentStatus.CREATED, created_at=NOW - 4000 * s)  # overdue, never started
    paid = await add_payment(db, status=PAID, created_at=NOW - 5000 * s)
    await add_delivery(db, paid, status=DeliveryStatus.PENDING, next_attempt_at=NOW)  # due
    await add_delivery(db, stale, status=DeliveryStatus.PENDING, next_attempt_at=NOW - 10 * s)  # due
    await add_delivery(db, paid, status=DeliveryStatus.PENDING, next_attempt_at=NOW + s)  # later
    await add_delivery(db, paid, status=DeliveryStatus.FAILED)  # dead
    await add_beat(db, "callbacks_dispatch", NOW - timedelta(seconds=601))
    await add_beat(db, "reconcile", NOW - timedelta(seconds=600))  # at the limit: still healthy


def status_settings(container):
    return dataclasses.replace(container.settings, reconcile_stale_after_seconds=900.0, pending_timeout_seconds=3600.0,
                               worker_stale_after_seconds=600.0)


async def test_the_system_status_of_workers_backlogs_and_dead_callbacks(container, pinned_now):
    db = container.db
    await seed_status(db)
    await add_cursor(db, ACCOUNT, str(5 << 32))  # stored, but Stellar is not enabled here: not reported
    result = await system_status.system_status(db, status_settings(container), ADMIN, watchers=7)
    assert result == system_status.SystemStatus(
        workers=[
            WorkerState("callbacks_dispatch", NOW - timedelta(seconds=601), 601.0, 2,
                        "no successful batch for 601 s (more than 600 s)"),
            WorkerState("reconcile", NOW - timedelta(seconds=600), 600.0, 2, ""),
            WorkerState("expire_pending", None, 0.0, 2, "no successful batch recorded: is the worker running?"),
        ],
        stellar_cursors=[], dead_callbacks=1, watchers=7,
    )


async def test_the_system_status_with_stellar_reports_the_cursor_lag(container, pinned_now, horizon):
    await add_cursor(container.db, ACCOUNT, str((1_000_000 << 32) + 7))
    result = await system_status.system_status(container.db, with_stellar(status_settings(container), horizon.url), ADMIN,
                                               watchers=0)
    assert result.stellar_cursors == [CursorState(ACCOUNT, str((1_000_000 << 32) + 7), 1_000_000, 1_000_120, "")]
    assert (result.dead_callbacks, result.watchers) == (0, 0)
    assert [(w.name, w.backlog) for w in result.workers] == [("callbacks_dispatch", 0), ("reconcile", 0), ("expire_pending", 0)]
    assert horizon.paths == ["/"]


@pytest.mark.parametrize("caller", [SHOP, Caller("gateway", frozenset({"shop", "other"}))])
async def test_the_system_status_is_for_keys_acting_for_every_caller(caller):
    with pytest.raises(PermissionDeniedError) as info:
        await system_status.system_status(NO_DATABASE, NO_SETTINGS, caller, watchers=0)
    assert_refused(info, PermissionDeniedError,
                   "the system status is for operators: use a key that acts for every caller (--acts-for '*')", None)


@pytest.mark.parametrize(("age", "stale_after", "problem"), [
    (0.0, 600.0, ""),
    (600.0, 600.0, ""),
    (600.4, 600.0, "no successful batch for 600 s (more than 600 s)"),
    (90.6, 0.5, "no successful batch for 91 s (more than 0.5 s)"),
])
def test_a_worker_is_stale_after_the_limit(age, stale_after, problem):
    last = NOW - timedelta(seconds=age)
    state = system_status._worker("reconcile", (last, 3, "3 item(s)"), 11, NOW, stale_after)
    assert state == WorkerState("reconcile", last, pytest.approx(age), 11, problem)


def test_a_worker_without_a_heartbeat_is_reported():
    assert system_status._worker("expire_pending", None, 4, NOW, 600.0) == WorkerState(
        "expire_pending", None, 0.0, 4, "no successful batch recorded: is the worker running?")


@pytest.mark.parametrize(("cursor_ledger", "latest_ledger", "ledgers", "seconds"), [
    (100, 103, 3, 15.0),  # about 5 s a ledger
    (120, 100, 0, 0.0),  # ahead of the Horizon asked: never negative
    (100, 0, 0, 0.0),  # Horizon's ledger unknown: no lag claimed
])
def test_the_cursor_lag_in_ledgers_and_seconds(cursor_ledger, latest_ledger, ledgers, seconds):
    state = CursorState(ACCOUNT, "t", cursor_ledger, latest_ledger, "")
    assert (state.ledgers_behind, state.seconds_behind) == (ledgers, seconds)
    assert type(state.seconds_behind) is float


async def test_cursor_states_keep_each_cursors_account_and_token(horizon):
    cursors = [(ACCOUNT, str((1_000_100 << 32) + 1), T0), (OTHER_ACCOUNT, str((1_000_200 << 32) + 9), T1)]
    states = await system_status._cursor_states(with_stellar(_Settings(), horizon.url), cursors)
    assert states == [CursorState(ACCOUNT, str((1_000_100 << 32) + 1), 1_000_100, 1_000_120, ""),
                      CursorState(OTHER_ACCOUNT, str((1_000_200 << 32) + 9), 1_000_200, 1_000_120, "")]
    assert (states[0].ledgers_behind, states[1].ledgers_behind) == (20, 0)  # the second is ahead of our Horizon


async def test_without_cursors_horizon_is_not_asked(horizon):
    assert await system_status._cursor_states(with_stellar(_Settings(), horizon.url), []) == []
    assert await system_status._cursor_states(_Settings(), []) == []  # even without Stellar settings
    assert horizon.paths == []


PREFIX = "Horizon's latest ledger is unknown: "


@pytest.mark.parametrize(("status", "body", "problem"), [
    (200, {"core_latest_ledger": 5}, PREFIX + "KeyError: 'history_latest_ledger'"),
    (200, {"history_latest_ledger": "soon"}, PREFIX + "ValueError: invalid literal for int() with base 10: 'soon'"),
    (200, {"history_latest_ledger": None},
     PREFIX + "TypeError: int() argument must be a string, a bytes-like object or a real number, not 'NoneType'"),
    (200, [1_000_120], PREFIX + "TypeError: list indices must be integers or slices, not str"),
])
async def test_an_unreadable_horizon_answer_is_reported(horizon, status, body, problem):
    horizon.status, horizon.body = status, body
    [state] = await system_status._cursor_states(with_stellar(_Settings(), horizon.url), [(ACCOUNT, str(5 << 32), T0)])
    assert state == CursorState(ACCOUNT, str(5 << 32), 5, 0, problem)


async def test_a_horizon_error_status_is_reported_even_with_a_ledger_in_its_body(horizon):
    horizon.status = 503  # the body still names a ledger: not to be trusted
    [state] = await system_status._cursor_states(with_stellar(_Settings(), horizon.url), [(ACCOUNT, str(5 << 32), T0)])
    assert (state.latest_ledger, state.ledgers_behind) == (0, 0)
    assert state.problem.startswith(PREFIX + "ClientResponseError: 503, message='Service Unavailable'")


async def test_a_horizon_answer_that_is_not_json_is_reported(horizon):
    horizon.body = "<html>maintenance</html>"
    [state] = await system_status._cursor_states(with_stellar(_Settings(), horizon.url), [(ACCOUNT, str(5 << 32), T0)])
    assert state.latest_ledger == 0 and state.problem.startswith(PREFIX + "ContentTypeError: ")


async def test_a_slow_horizon_is_given_up_on_after_the_timeout(horizon, monkeypatch):
    monkeypatch.setattr(system_status, "HORIZON_TIMEOUT_SECONDS", 0.05)
    horizon.delay = 0.4
    [state] = await system_status._cursor_states(with_stellar(_Settings(), horizon.url), [(ACCOUNT, str(5 << 32), T0)])
    assert (state.latest_ledger, state.problem) == (0, PREFIX + "TimeoutError: ")


@pytest.fixture
async def postgresql_container(tmp_path):
    database = new_database("postgresql", tmp_path)
    try:
        container = build_container(load_settings(base_env(database.url), base_dir=tmp_path))
        await migrate(container.db)
        yield container
        await container.close()
    finally:
        database.drop()


@pytest.mark.postgresql
async def test_the_reads_on_postgresql(postgresql_container, pinned_now):
    """The statements above on PostgreSQL's dialect, on one database (its creation is slow)."""
    db = postgresql_container.db
    await seed_stats(db)
    result = await stats.payment_stats(db, SHOP, caller_service="", customer_ref="", since=T0, until=T1)
    assert [(g.status, g.currency, g.count, g.amount_cents, g.refunded_cents) for g in result.by_status] == [
        (PENDING, "EUR", 1, 300, 0), (PENDING, "USD", 1, 250, 0), (PAID, "USD", 2, 1500, 400), (FAILED, "USD", 1, 700, 0),
        (EXPIRED, "USD", 2, 150, 30)]
    assert (await stats.payment_stats(db, SHOP, caller_service="", customer_ref="b1", since=T0, until=T1)).created == 4
    d = await seed_deliveries(db)
    assert await listed(db, SHOP, status=int(DeliveryStatus.FAILED), since=T0, until=T0 + timedelta(hours=4)) == [
        d.shop_dead_later, d.shop_dead]
    assert await listed(db, ADMIN, before_id=d.shop_success, limit=1) == [d.shop_dead]
    assert [old for old, _ in await dead_callbacks.requeue(db, ADMIN, "shop", since=None)] == [d.shop_dead, d.shop_dead_later]
    assert await dead_callbacks.refresh_dead_metric(db) == 1
    await add_cursor(db, ACCOUNT, "42")
    async with db.read() as conn:
        backlogs = BacklogRepository(conn)
        # seed_stats' open payments (PENDING, created from T0 to T0 + 3 days, never reconciled) are both stale and overdue.
        assert await backlogs.stale_payments(stale_before=T1, now=NOW) == 2
        assert await backlogs.overdue_payments(created_before=T0 + timedelta(days=2)) == 1
        assert await backlogs.stellar_cursors() == [(ACCOUNT, "42", T0)]
