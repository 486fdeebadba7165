"""The job claims at their edges, in-process on SQLite and MariaDB, through the repositories the
jobs use: which payments reconcile, expiry and the crashed-create sweep may take (status,
provider, age, schedule, lease, each boundary inclusive), in which order and how many, that a
claim holds them until its lease ends and only its own token releases or reschedules them; and
the same for status callback deliveries (due, leased to one dispatcher, recorded once)."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from payments_svc.clock import utcnow
from payments_svc.db.tables import callback_attempts, callback_deliveries, payments
from payments_svc.domain.enums import DeliveryStatus, PaymentStatus, ProviderType
from payments_svc.repository.deliveries import DeliveryRepository, Outcome
from payments_svc.repository.outbox import OutboxRepository
from payments_svc.repository.payment_jobs import PaymentJobRepository

from ..integration.test_payment_service import SHOP, command

S = PaymentStatus
NOW = utcnow().replace(microsecond=0)
LEASE = NOW + timedelta(minutes=5)


async def make_payments(container, count: int) -> list[int]:
    ids = []
    for i in range(count):
        ids.append((await container.service.create_payment(SHOP, command(f"claim-{i}"))).payment.id)
    return ids


async def set_row(container, payment_id: int, **values) -> None:
    async with container.db.transaction() as conn:
        await conn.execute(payments.update().where(payments.c.id == payment_id).values(
            **{k: int(v) if isinstance(v, (PaymentStatus, ProviderType)) else v for k, v in values.items()}))


async def claim(container, kind: str, *, now=NOW, limit=10, lease_until=LEASE, provider=ProviderType.SANDBOX, **cutoff):
    async with container.db.transaction() as conn:
        repo = PaymentJobRepository(conn)
        if kind == "expiry":
            return await repo.claim_for_expiry(provider=provider, now=now, created_before=cutoff.get("before", NOW),
                                               limit=limit, lease_until=lease_until)
        if kind == "reconcile":
            return await repo.claim_for_reconcile(provider=provider, now=now, stale_before=cutoff.get("before", NOW),
                                                  limit=limit, lease_until=lease_until)
        return await repo.claim_unfinished_creates(provider=provider, now=now, limit=limit, lease_until=lease_until)


def ids(claims) -> list[int]:
    return [c.payment.id for c in claims]


async def test_expiry_claims_open_payments_created_by_the_cutoff_oldest_first(container):
    a, b, c, d, e, f = await make_payments(container, 6)
    await set_row(container, a, created_at=NOW - timedelta(hours=2), status=S.PROCESSING)
    await set_row(container, b, created_at=NOW - timedelta(hours=3), status=S.CREATED)
    await set_row(container, c, created_at=NOW, status=S.PENDING)  # exactly at the cutoff: included
    await set_row(container, d, created_at=NOW + timedelta(seconds=1))  # after it
    await set_row(container, e, created_at=NOW - timedelta(hours=1), status=S.PAID)
    await set_row(container, f, created_at=NOW - timedelta(hours=1), provider=ProviderType.STRIPE)
    claims = await claim(container, "expiry")
    assert ids(claims) == [b, a, c]
    assert all(cl.lease_until == LEASE and cl.reconcile_attempts == 0 for cl in claims)
    assert [cl.payment.status for cl in claims] == [S.CREATED, S.PROCESSING, S.PENDING]
    assert ids(await claim(container, "expiry", provider=ProviderType.STRIPE)) == [f]


async def test_a_claim_holds_its_payments_until_the_lease_ends(container):
    a, b, c = await make_payments(container, 3)
    for pid in (a, b, c):
        await set_row(container, pid, created_at=NOW - timedelta(hours=1))
    assert ids(await claim(container, "expiry", limit=2)) == [a, b]  # the limit, in id order among equals
    assert ids(await claim(container, "expiry")) == [c]  # a and b are held
    assert ids(await claim(container, "expiry", now=LEASE - timedelta(seconds=1))) == []
    assert ids(await claim(container, "expiry", now=LEASE, lease_until=LEASE + timedelta(minutes=5))) == [a, b, c]


async def test_release_and_reschedule_need_the_claims_own_token(container):
    a, b = await make_payments(container, 2)
    for pid in (a, b):
        await set_row(container, pid, updated_at=NOW - timedelta(hours=1))
    first = await claim(container, "reconcile")
    async with container.db.transaction() as conn:
        repo = PaymentJobRepository(conn)
        # Another run took them over after the lease (a new token): the old claim changes nothing.
        await conn.execute(payments.update().values(job_lease_until=LEASE + timedelta(minutes=1)))
        await repo.release(first)
        await repo.schedule_next_reconcile(first[0], (60.0,), NOW)
        rows = (await conn.execute(sa.select(payments.c.job_lease_until, payments.c.reconcile_attempts))).all()
        assert rows == [(LEASE + timedelta(minutes=1), 0)] * 2
        await conn.execute(payments.update().values(job_lease_until=LEASE))
        await repo.release(first[:1])  # its own token: handed back, due at once; the other stays held
    assert ids(await claim(container, "reconcile")) == [a]
    async with container.db.transaction() as conn:
        await PaymentJobRepository(conn).release(first[1:])
    assert ids(await claim(container, "reconcile", lease_until=LEASE + timedelta(minutes=9))) == [b]


async def test_reconcile_claims_started_payments_unchanged_since_the_cutoff_when_due(container):
    a, b, c, d, e, f = await make_payments(container, 6)
    await set_row(container, a, updated_at=NOW - timedelta(hours=1), reconcile_next_at=NOW)  # due exactly now
    await set_row(container, b, updated_at=NOW - timedelta(hours=1))  # never checked: first
    await set_row(container, c, updated_at=NOW, status=S.PROCESSING, reconcile_next_at=NOW - timedelta(hours=1))
    await set_row(container, d, updated_at=NOW - timedelta(hours=1), reconcile_next_at=NOW + timedelta(seconds=1))
    await set_row(container, e, updated_at=NOW + timedelta(seconds=1))  # changed after the cutoff
    await set_row(container, f, updated_at=NOW - timedelta(hours=1), status=S.CREATED)  # not started: not reconcile's
    assert ids(await claim(container, "reconcile")) == [b, c, a]


async def test_reconcile_backoff_repeats_its_last_step(container):
    a, b = await make_payments(container, 2)
    await set_row(container, a, updated_at=NOW - timedelta(hours=1))
    backoff = (60.0, 600.0)
    now = NOW
    for attempt, delay in ((1, 60), (2, 600), (3, 600)):
        (claimed,) = await claim(container, "reconcile", now=now)
        assert claimed.reconcile_attempts == attempt - 1
        async with container.db.transaction() as conn:
            # b holds a lease with the same token (claimed in the same batch): only a is rescheduled
            await conn.execute(payments.update().where(payments.c.id == b).values(job_lease_until=LEASE))
            await PaymentJobRepository(conn).schedule_next_reconcile(claimed, backoff, now)
            row = (await conn.execute(sa.select(payments.c.reconcile_attempts, payments.c.reconcile_next_at,
                                                payments.c.job_lease_until).where(payments.c.id == a))).one()
            other = (await conn.execute(sa.select(payments.c.reconcile_attempts, payments.c.job_lease_until)
                                        .where(payments.c.id == b))).one()
        assert tuple(other) == (0, LEASE)
        assert tuple(row) == (attempt, now + timedelta(seconds=delay), None)
        assert await claim(container, "reconcile", now=now + timedelta(seconds=delay - 1)) == []
        now += timedelta(seconds=delay)


async def test_the_crashed_create_sweep_claims_created_payments_whose_lease_ran_out(container):
    a, b, c, d, e = await make_payments(container, 5)
    await set_row(container, a, status=S.CREATED, create_lease_until=NOW)  # ran out exactly now
    await set_row(container, b, status=S.CREATED, create_lease_until=NOW - timedelta(hours=1))
    await set_row(container, c, status=S.CREATED, create_lease_until=NOW + timedelta(seconds=1))  # still held
    await set_row(container, d, status=S.CREATED, create_lease_until=None, reconcile_next_at=NOW + timedelta(seconds=1))
    # e is another provider's
    await set_row(container, e, status=S.CREATED, create_lease_until=None, provider=ProviderType.STRIPE)
    assert ids(await claim(container, "creates", limit=1)) == [b]
    assert ids(await claim(container, "creates")) == [a]
    await set_row(container, d, reconcile_next_at=NOW)
    assert ids(await claim(container, "creates")) == [d]  # no lease at all (NULL) and due
    assert ids(await claim(container, "creates", provider=ProviderType.STRIPE)) == [e]


# ---- status callback deliveries --------------------------------------------------------------


async def enqueue(container, payment_id: int, next_attempt_at) -> str:
    async with container.db.transaction() as conn:
        delivery_id = await OutboxRepository(conn).enqueue(payment_id=payment_id, caller_service="shop",
                                                           event_type="payment.paid", payment_status=S.PAID, now=NOW)
        await conn.execute(callback_deliveries.update().where(callback_deliveries.c.delivery_id == delivery_id)
                           .values(next_attempt_at=next_attempt_at))
    return delivery_id


async def claim_due(container, *, now=NOW, limit=10, owner="d-1", lease_until=LEASE):
    async with container.db.transaction() as conn:
        return await DeliveryRepository(conn).claim_due(now=now, limit=limit, owner=owner, lease_until=lease_until)


async def test_due_deliveries_are_leased_to_one_dispatcher_oldest_first(container):
    (pid,) = await make_payments(container, 1)
    late = await enqueue(container, pid, NOW - timedelta(minutes=10))
    now_due = await enqueue(container, pid, NOW)  # due exactly now
    later = await enqueue(container, pid, NOW + timedelta(seconds=1))
    finished = await enqueue(container, pid, NOW - timedelta(hours=1))  # delivered: not due whatever its time
    async with container.db.transaction() as conn:
        await conn.execute(callback_deliveries.update().where(callback_deliveries.c.delivery_id == finished)
                           .values(status=int(DeliveryStatus.SUCCESS)))
    async with container.db.read() as conn:
        assert await DeliveryRepository(conn).due_summary(NOW) == (2, NOW - timedelta(minutes=10))
        assert await DeliveryRepository(conn).get_by_delivery_id("msg_unknown") is None
    claimed = await claim_due(container, limit=1)
    assert [d.delivery_id for d in claimed] == [late]
    assert (claimed[0].payment_status, claimed[0].status, claimed[0].attempts) == (S.PAID, DeliveryStatus.PENDING, 0)
    assert [d.delivery_id for d in await claim_due(container, owner="d-2")] == [now_due]  # late is leased to d-1
    # Until their lease ends only the one nobody holds is due (by then).
    assert [d.delivery_id for d in await claim_due(container, now=LEASE - timedelta(seconds=1), owner="d-3")] == [later]
    assert [d.delivery_id for d in await claim_due(container, now=LEASE, owner="d-3",
                                                     lease_until=LEASE + timedelta(minutes=5))] == [late, now_due, later]
    async with container.db.read() as conn:
        leased = (await conn.execute(sa.select(callback_deliveries.c.lease_owner, callback_deliveries.c.lease_until)
                                     .order_by(callback_deliveries.c.id))).all()
    assert leased == [("d-3", LEASE + timedelta(minutes=5))] * 3 + [(None, None)]


async def test_an_outcome_is_recorded_only_by_the_lease_holder(container):
    (pid,) = await make_payments(container, 1)
    delivery_id = await enqueue(container, pid, NOW)
    (delivery,) = await claim_due(container)
    retry_at = NOW + timedelta(minutes=1)
    outcome = Outcome(DeliveryStatus.PENDING, NOW, 500, 42, "HTTP 500: " + "e" * 2000, retry_at)
    async with container.db.transaction() as conn:
        repo = DeliveryRepository(conn)
        assert await repo.record(delivery, "someone-else", outcome) is False
        assert await repo.record(delivery, "d-1", outcome) is True
        assert await repo.record(delivery, "d-1", outcome) is False  # the lease ended with the record
    async with container.db.read() as conn:
        stored = await DeliveryRepository(conn).get_by_delivery_id(delivery_id)
        attempts = (await conn.execute(sa.select(callback_attempts))).all()
        assert await DeliveryRepository(conn).due_summary(NOW) == (0, None)
    assert (stored.attempts, stored.status, stored.next_attempt_at, stored.last_status_code) == (
        1, DeliveryStatus.PENDING, retry_at, 500)
    assert stored.last_error == outcome.error[:1024]
    assert len(attempts) == 1
    assert (attempts[0].attempt, attempts[0].status_code, attempts[0].latency_ms, attempts[0].error) == (
        1, 500, 42, outcome.error[:1024])
    assert [d.delivery_id for d in await claim_due(container, now=retry_at, owner="d-2")] == [delivery_id]


async def test_released_deliveries_are_due_at_once_but_only_the_holders(container):
    (pid,) = await make_payments(container, 1)
    first = await enqueue(container, pid, NOW)
    await enqueue(container, pid, NOW)
    held = await claim_due(container)
    async with container.db.transaction() as conn:
        await DeliveryRepository(conn).release([d.id for d in held], "someone-else")
    assert await claim_due(container, owner="d-2") == []
    async with container.db.transaction() as conn:
        await DeliveryRepository(conn).release([held[0].id], "d-1")
    assert [d.delivery_id for d in await claim_due(container, owner="d-2")] == [first]
