"""The payments columns the reconcile and expire jobs own: the job lease (so two job
runs never work on one payment at once) and reconcile's per-payment schedule. Every
claim is for one provider: the jobs work on each provider's payments apart."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

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


class PaymentJobRepository:
    def __init__(self, conn: AsyncConnection):
        self.conn = conn

    def _null_first(self, column: sa.ColumnElement) -> sa.ColumnElement:
        """Ascending with NULL first: MySQL and SQLite sort it so by themselves (MariaDB has
        no NULLS FIRST); PostgreSQL sorts NULL last unless told."""
        return column.nulls_first() if self.conn.dialect.name == "postgresql" else column

    async def claim_unfinished_creates(
        self, *, provider: ProviderType, now: datetime, limit: int, lease_until: datetime
    ) -> list[ClaimedPayment]:
        """CREATED payments whose create lease ran out (their creator crashed or gave up)
        and whose next try is due: due the moment the lease ends, oldest lease first."""
        p = payments.c
        return await self._claim(
            sa.and_(
                p.status == int(PaymentStatus.CREATED),
                p.provider == int(provider),
                sa.or_(p.create_lease_until.is_(None), p.create_lease_until <= now),
                sa.or_(p.reconcile_next_at.is_(None), p.reconcile_next_at <= now),
            ),
            (self._null_first(p.create_lease_until), p.id),
            now=now, limit=limit, lease_until=lease_until,
        )

    async def claim_for_reconcile(
        self, *, provider: ProviderType, now: datetime, stale_before: datetime, limit: int, lease_until: datetime
    ) -> list[ClaimedPayment]:
        """PENDING and PROCESSING payments unchanged since `stale_before` whose next check
        is due. Never checked ones (NULL) go first,
        then the longest overdue, so payments that never change cannot starve the rest."""
        p = payments.c
        return await self._claim(
            sa.and_(
                p.status.in_([int(s) for s in STARTED_STATUSES]),
                p.provider == int(provider),
                p.updated_at <= stale_before,
                sa.or_(p.reconcile_next_at.is_(None), p.reconcile_next_at <= now),
            ),
            (self._null_first(p.reconcile_next_at), p.id),
            now=now, limit=limit, lease_until=lease_until,
        )

    async def claim_for_expiry(
        self, *, provider: ProviderType, now: datetime, created_before: datetime, limit: int, lease_until: datetime
    ) -> list[ClaimedPayment]:
        p = payments.c
        return await self._claim(
            sa.and_(p.status.in_([int(s) for s in OPEN_STATUSES]), p.provider == int(provider),
                    p.created_at <= created_before),
            (p.created_at, p.id),
            now=now, limit=limit, lease_until=lease_until,
        )

    async def _claim(self, condition, order_by, *, now: datetime, limit: int, lease_until: datetime) -> list[ClaimedPayment]:
        p = payments.c
        stmt = (
            sa.select(*PAYMENT_COLUMNS, payments.c.reconcile_attempts)
            .where(condition, sa.or_(p.job_lease_until.is_(None), p.job_lease_until <= now))
            .order_by(*order_by)
            .limit(limit)
        )
        if self.conn.dialect.name != "sqlite":
            stmt = stmt.with_for_update(skip_locked=True)
        rows = (await self.conn.execute(stmt)).all()
        if rows:
            await self.conn.execute(
                payments.update().where(p.id.in_([r.id for r in rows])).values(job_lease_until=lease_until)
            )
        return [ClaimedPayment(_to_payment(r), r.reconcile_attempts, lease_until) for r in rows]

    async def schedule_next_reconcile(self, claimed: ClaimedPayment, backoff: tuple[float, ...], now: datetime) -> None:
        """After a check: the next one follows the backoff (its last step repeats), and the
        lease ends."""
        attempts = claimed.reconcile_attempts + 1
        delay = backoff[min(attempts, len(backoff)) - 1]
        p = payments.c
        await self.conn.execute(
            payments.update()
            .where(p.id == claimed.payment.id, p.job_lease_until == claimed.lease_until)
            .values(reconcile_attempts=attempts, reconcile_next_at=now + timedelta(seconds=delay), job_lease_until=None)
        )

    async def release(self, claims: list[ClaimedPayment]) -> None:
        """Hands back claims that were not started (stopping): due again at once."""
        p = payments.c
        for claimed in claims:
            await self.conn.execute(
                payments.update()
                .where(p.id == claimed.payment.id, p.job_lease_until == claimed.lease_until)
                .values(job_lease_until=None)
            )
