"""The payments columns the reconcile and expire jobs own: the job lease (so two job
runs never work on one payment at once) and reconcile's per-payment schedule. Every
claim is for one provider: the jobs work on each provider's payments apart."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from ..db import statements as st
from ..db.tables import payments
from ..domain.enums import PaymentStatus, ProviderType
from ..domain.payment import Payment
from .payments import PAYMENT_COLUMNS, _to_payment

OPEN_STATUSES = (PaymentStatus.CREATED, PaymentStatus.PENDING, PaymentStatus.PROCESSING)
STARTED_STATUSES = (PaymentStatus.PENDING, PaymentStatus.PROCESSING)  # the provider has the payment


@dataclass(frozen=True, slots=True)
class ClaimedPayment:
    payment: Payment
    reconcile_attempts: int
    lease_until: datetime  # also the claim's token: release and finish match on it


_p = payments.c
_now = sa.bindparam("now", type_=_p.updated_at.type)
_due_for_job = sa.or_(_p.job_lease_until.is_(None), _p.job_lease_until <= _now)


def _constants(statuses) -> list:
    """Statuses written into the SQL: a list of bound values would be expanded per execution."""
    return [sa.literal_column(str(int(s))) for s in statuses]


def _claim_statement(condition, first_by: sa.ColumnElement) -> st.Statement:
    """Up to `limit` unleased payments matching `condition` for one provider, by `first_by`
    (NULL first) then id; rows another job run is claiming right now are skipped (SKIP
    LOCKED), SQLite's write lock serialises claimers instead. MySQL and SQLite sort NULL
    first by themselves (MariaDB has no NULLS FIRST); PostgreSQL is told."""
    def select(order: sa.ColumnElement) -> sa.Select:
        return (
            sa.select(*PAYMENT_COLUMNS, _p.reconcile_attempts)
            .where(condition, _p.provider == sa.bindparam("provider"), _due_for_job)
            .order_by(order, _p.id)
            .limit(sa.bindparam("limit"))
        )
    stmt = select(first_by)
    return st.Statement(stmt.with_for_update(skip_locked=True), sqlite=stmt,
                        postgresql=select(first_by.nulls_first()).with_for_update(skip_locked=True))


# The claims are built on first use (mutation testing sees only calls made after import).
@functools.cache
def _claim_unfinished_creates() -> st.Statement:
    """CREATED payments whose create lease ran out (their creator crashed or gave up) and
    whose next try is due: due the moment the lease ends, oldest lease first."""
    return _claim_statement(
        sa.and_(
            _p.status == int(PaymentStatus.CREATED),
            sa.or_(_p.create_lease_until.is_(None), _p.create_lease_until <= _now),
            sa.or_(_p.reconcile_next_at.is_(None), _p.reconcile_next_at <= _now),
        ),
        _p.create_lease_until,
    )


@functools.cache
def _claim_for_reconcile() -> st.Statement:
    """PENDING and PROCESSING payments unchanged since `stale_before` whose next check is due.
    Never checked ones (NULL) go first, then the longest overdue, so payments that never
    change cannot starve the rest."""
    return _claim_statement(
        sa.and_(
            _p.status.in_(_constants(STARTED_STATUSES)),
            _p.updated_at <= sa.bindparam("stale_before", type_=_p.updated_at.type),
            sa.or_(_p.reconcile_next_at.is_(None), _p.reconcile_next_at <= _now),
        ),
        _p.reconcile_next_at,
    )


@functools.cache
def _claim_for_expiry() -> st.Statement:
    return _claim_statement(
        sa.and_(_p.status.in_(_constants(OPEN_STATUSES)),
                _p.created_at <= sa.bindparam("created_before", type_=_p.created_at.type)),
        _p.created_at,
    )


_SCHEDULE_NEXT_RECONCILE = st.Statement(
    payments.update()
    .where(_p.id == sa.bindparam("where_id"), _p.job_lease_until == sa.bindparam("held_until", type_=_p.job_lease_until.type))
    .values(reconcile_attempts=sa.bindparam("attempts"),
            reconcile_next_at=sa.bindparam("next_at", type_=_p.reconcile_next_at.type), job_lease_until=None)
)
_RELEASE = st.Statement(
    payments.update()
    .where(_p.id == sa.bindparam("where_id"), _p.job_lease_until == sa.bindparam("held_until", type_=_p.job_lease_until.type))
    .values(job_lease_until=None)
)


@functools.cache
def _lease_statement(count: int) -> st.Statement:
    """Leases `count` claimed payments; built once per number of rows."""
    return st.Statement(
        payments.update()
        .where(_p.id.in_([sa.bindparam(f"id_{i}") for i in range(count)]))
        .values(job_lease_until=sa.bindparam("lease_until", type_=_p.job_lease_until.type))
    )


class PaymentJobRepository:
    def __init__(self, conn: AsyncConnection):
        self.conn = conn

    async def claim_unfinished_creates(
        self, *, provider: ProviderType, now: datetime, limit: int, lease_until: datetime
    ) -> list[ClaimedPayment]:
        return await self._claim(_claim_unfinished_creates(), {"provider": int(provider), "now": now, "limit": limit},
                                 lease_until)

    async def claim_for_reconcile(
        self, *, provider: ProviderType, now: datetime, stale_before: datetime, limit: int, lease_until: datetime
    ) -> list[ClaimedPayment]:
        params = {"provider": int(provider), "now": now, "stale_before": stale_before, "limit": limit}
        return await self._claim(_claim_for_reconcile(), params, lease_until)

    async def claim_for_expiry(
        self, *, provider: ProviderType, now: datetime, created_before: datetime, limit: int, lease_until: datetime
    ) -> list[ClaimedPayment]:
        params = {"provider": int(provider), "now": now, "created_before": created_before, "limit": limit}
        return await self._claim(_claim_for_expiry(), params, lease_until)

    async def _claim(self, stmt: st.Statement, params: dict, lease_until: datetime) -> list[ClaimedPayment]:
        rows = await st.fetch_all(self.conn, stmt, params)
        if rows:
            leases = {f"id_{i}": row[0] for i, row in enumerate(rows)} | {"lease_until": lease_until}
            await st.execute(self.conn, _lease_statement(len(rows)), leases)
        return [ClaimedPayment(_to_payment(r), r[len(PAYMENT_COLUMNS)], lease_until) for r in rows]

    async def schedule_next_reconcile(self, claimed: ClaimedPayment, backoff: tuple[float, ...], now: datetime) -> None:
        """After a check: the next one follows the backoff (its last step repeats), and the
        lease ends."""
        attempts = claimed.reconcile_attempts + 1
        delay = backoff[min(attempts, len(backoff)) - 1]
        await st.execute(self.conn, _SCHEDULE_NEXT_RECONCILE, {
            "where_id": claimed.payment.id, "held_until": claimed.lease_until, "attempts": attempts,
            "next_at": now + timedelta(seconds=delay),
        })

    async def release(self, claims: list[ClaimedPayment]) -> None:
        """Hands back claims that were not started (stopping): due again at once."""
        for claimed in claims:
            await st.execute(self.conn, _RELEASE, {"where_id": claimed.payment.id, "held_until": claimed.lease_until})
