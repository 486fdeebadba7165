"""The job claims' SQL at two edges test_claims.py and test_claim_edges.py leave: payments
that tie on the claim's order column (never checked, created at the same moment) are taken in id
order, whatever order the database reads them in; and on PostgreSQL a claim skips a due
payment another connection holds locked (FOR UPDATE SKIP LOCKED) instead of waiting for it."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
import sqlalchemy as sa

from payments_svc.db.tables import payments
from payments_svc.domain.enums import PaymentStatus

from ..conftest import on_server_databases
from .test_claims import LEASE, NOW, claim, ids, make_payments, set_row

S = PaymentStatus
OLD = NOW - timedelta(hours=1)


async def leases(container) -> dict[int, object]:
    async with container.db.read() as conn:
        return {r.id: r.job_lease_until for r in await conn.execute(sa.select(payments.c.id, payments.c.job_lease_until))}


async def test_never_checked_payments_are_reconciled_in_id_order_whatever_their_status(container):
    """All never checked (NULL next check): the tie goes to the oldest payment, not to the status index's order."""
    a, b, c, d, e = await make_payments(container, 5)
    # Updated newest first, each with another status: read by status or by row position they come out reversed.
    for pid, status in ((e, S.PROCESSING), (d, S.PENDING), (c, S.PROCESSING), (b, S.PENDING), (a, S.PROCESSING)):
        await set_row(container, pid, status=status, updated_at=OLD - timedelta(seconds=pid))
    assert ids(await claim(container, "reconcile", limit=3)) == [a, b, c]
    assert ids(await claim(container, "reconcile", limit=3)) == [d, e]


async def test_payments_created_at_the_same_moment_expire_in_id_order(container):
    a, b, c, d, e = await make_payments(container, 5)
    for pid, status in ((e, S.PROCESSING), (d, S.PENDING), (c, S.CREATED), (b, S.PROCESSING), (a, S.PENDING)):
        await set_row(container, pid, status=status, created_at=OLD)
    assert ids(await claim(container, "expiry", limit=3)) == [a, b, c]
    assert ids(await claim(container, "expiry", limit=3)) == [d, e]


# SQLite's write lock serialises claimers: no row is ever held by another claimer there.
@on_server_databases
@pytest.mark.parametrize("kind", ["expiry", "reconcile", "creates"])
async def test_a_claim_skips_a_due_payment_another_connection_holds_locked(container, kind):
    """A payment row another transaction holds (FOR UPDATE) is skipped, not waited for: the job goes on with the rest."""
    a, b = await make_payments(container, 2)
    for pid in (a, b):
        await set_row(container, pid, status=S.CREATED if kind == "creates" else S.PENDING, created_at=OLD,
                      updated_at=OLD)
    async with container.db.transaction() as holder:
        await holder.execute(sa.select(payments.c.id).where(payments.c.id == a).with_for_update())
        claimer = asyncio.create_task(claim(container, kind))
        done, _ = await asyncio.wait([claimer], timeout=10)
    claimed = await claimer  # (had it waited, the holder's commit let it go on)
    assert done, "the claim waited for the locked row instead of skipping it"
    assert ids(claimed) == [b]
    assert await leases(container) == {a: None, b: LEASE}
