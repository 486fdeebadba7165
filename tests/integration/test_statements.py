"""The driver-level data path (db/statements.py) on SQLite, MariaDB and PostgreSQL: a
batch writes the rows that record a conditional UPDATE only if it applied, a batch that
commits leaves the transaction consistent, a create's reserve is all or nothing, and a
fresh create takes three round trips on MariaDB."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from payments_svc.clock import utcnow
from payments_svc.db import statements as st
from payments_svc.db.tables import payment_events, payments
from payments_svc.domain.enums import PaymentStatus
from payments_svc.repository import events
from payments_svc.repository.payments import DuplicatePaymentKey, PaymentRepository

from .test_payment_service import SHOP, command, service  # noqa: F401  (fixture)


async def _events(service, payment_id: int) -> list[str]:  # noqa: F811  (the fixture's name)
    async with service.db.read() as conn:
        rows = await conn.execute(sa.select(payment_events.c.event_type)
                                  .where(payment_events.c.payment_id == payment_id).order_by(payment_events.c.id))
        return [r[0] for r in rows]


def _event(payment_id: int, event_type: str) -> tuple[st.Statement, dict]:
    return events.INSERT_AFTER_UPDATE, events.event_row(
        payment_id=payment_id, event_type=event_type, old_status=PaymentStatus.PENDING,
        new_status=PaymentStatus.PAID, now=utcnow())


async def test_a_batch_records_an_update_only_if_it_applied(service):  # noqa: F811
    p = (await service.create_payment(SHOP, command("batch"))).payment  # PENDING
    for commit in (False, True):
        async with service.db.transaction() as conn:
            applied = await PaymentRepository(conn).update_if_status(
                p.id, PaymentStatus.CREATED, {"status": PaymentStatus.PAID},
                then=[_event(p.id, f"not-applied-{commit}")], commit=commit)
        assert applied is False
    assert await _events(service, p.id) == ["payment_created", "checkout_created"]
    async with service.db.transaction() as conn:
        assert await PaymentRepository(conn).update_if_status(
            p.id, PaymentStatus.PENDING, {"status": PaymentStatus.PAID}, then=[_event(p.id, "applied")], commit=True)
    async with service.db.read() as conn:
        assert (await PaymentRepository(conn).get(p.id)).status == PaymentStatus.PAID
    assert await _events(service, p.id) == ["payment_created", "checkout_created", "applied"]


async def test_after_a_committing_batch_the_connection_starts_a_new_transaction(service):  # noqa: F811
    p = (await service.create_payment(SHOP, command("after-commit"))).payment
    # The pool hands the same connection out again: what it does next must commit, and
    # what fails next must roll back, as if the batch had not committed on its own.
    async with service.db.transaction() as conn:
        await PaymentRepository(conn).update_if_status(p.id, PaymentStatus.PENDING, {"status": PaymentStatus.PROCESSING},
                                                       then=[_event(p.id, "first")], commit=True)
    async with service.db.transaction() as conn:
        await conn.execute(payments.update().where(payments.c.id == p.id).values(failure_reason="kept"))
    try:
        async with service.db.transaction() as conn:
            await conn.execute(payments.update().where(payments.c.id == p.id).values(failure_reason="rolled back"))
            raise RuntimeError("abandon")
    except RuntimeError:
        pass
    async with service.db.read() as conn:
        stored = await PaymentRepository(conn).get(p.id)
    assert (stored.status, stored.failure_reason) == (PaymentStatus.PROCESSING, "kept")


async def test_a_reserve_with_a_taken_key_writes_nothing(service):  # noqa: F811
    p = (await service.create_payment(SHOP, command("taken"))).payment
    async with service.db.read() as conn:
        count_before = (await conn.execute(sa.select(sa.func.count()).select_from(payment_events))).scalar()
    values = service._new_payment(command("taken").normalized(), service.providers.resolve(0), p.request_fingerprint,
                                  utcnow())
    try:
        async with service.db.transaction() as conn:
            await PaymentRepository(conn).reserve([(values, dict(
                event_type="payment_created", old_status=None, new_status=PaymentStatus.CREATED, now=utcnow()))])
        raise AssertionError("the taken key was reserved again")
    except DuplicatePaymentKey:
        pass
    async with service.db.read() as conn:
        assert (await conn.execute(sa.select(sa.func.count()).select_from(payment_events))).scalar() == count_before
        assert (await conn.execute(sa.select(sa.func.count()).select_from(payments))).scalar() == 1


@pytest.mark.parametrize("database", [pytest.param("mysql", marks=pytest.mark.mysql)], indirect=True)
async def test_a_fresh_create_takes_three_round_trips_on_mariadb(service, monkeypatch):  # noqa: F811
    import asyncmy.connection

    assert service.db.engine.dialect.driver == "asyncmy"  # counted on its command method

    sent: list[str] = []
    original = asyncmy.connection.Connection._execute_command

    async def counted(self, command_code, sql):
        sent.append(sql.decode() if isinstance(sql, bytes) else str(sql))
        return await original(self, command_code, sql)

    await service.create_payment(SHOP, command("warm-up"))  # connections made, statements compiled
    monkeypatch.setattr(asyncmy.connection.Connection, "_execute_command", counted)
    created = await service.create_payment(SHOP, command("counted"))
    monkeypatch.undo()
    assert created.payment.status == PaymentStatus.PENDING
    # The key look-up; the payment, its event and COMMIT; the status UPDATE, its event and COMMIT.
    assert [s.split(None, 1)[0].upper() for s in sent] == ["SELECT", "INSERT", "UPDATE"], sent
    assert all(s.rstrip().endswith("COMMIT") for s in sent[1:]), sent
    assert await _events(service, created.payment.id) == ["payment_created", "checkout_created"]
