"""The workers' backlogs as counts (GetSystemStatus): the same conditions their claims
use, each answered from the index that claim uses."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from ..db.tables import payments, stellar_cursors
from .payment_jobs import OPEN_STATUSES, STARTED_STATUSES

p = payments.c


class BacklogRepository:
    def __init__(self, conn: AsyncConnection):
        self.conn = conn

    async def stale_payments(self, *, stale_before: datetime, now: datetime) -> int:
        """Started payments reconcile would ask their provider about now (idx_payments_status_updated)."""
        stmt = sa.select(sa.func.count()).select_from(payments).where(
            p.status.in_([int(s) for s in STARTED_STATUSES]), p.updated_at <= stale_before,
            sa.or_(p.reconcile_next_at.is_(None), p.reconcile_next_at <= now))
        return (await self.conn.execute(stmt)).scalar_one()

    async def overdue_payments(self, *, created_before: datetime) -> int:
        """Open payments past their pending timeout, for the expiry job."""
        stmt = sa.select(sa.func.count()).select_from(payments).where(
            p.status.in_([int(s) for s in OPEN_STATUSES]), p.created_at <= created_before)
        return (await self.conn.execute(stmt)).scalar_one()

    async def stellar_cursors(self) -> list[tuple[str, str, datetime]]:
        rows = await self.conn.execute(sa.select(stellar_cursors.c.account, stellar_cursors.c.paging_token,
                                                 stellar_cursors.c.updated_at))
        return [(r.account, r.paging_token, r.updated_at) for r in rows]
