"""verify_claims: when each payment was last verified with its provider (VerifyPayment's
rate limit, shared by every process)."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from ..db.engine import conflict_scope
from ..db.tables import verify_claims

v = verify_claims.c


class VerifyClaimRepository:
    def __init__(self, conn: AsyncConnection):
        self.conn = conn

    async def insert(self, payment_id: int, now: datetime) -> bool:
        """The payment's first verification; False when it has a row already."""
        try:
            async with conflict_scope(self.conn):
                await self.conn.execute(verify_claims.insert().values(payment_id=payment_id, verified_at=now))
        except IntegrityError:
            return False
        return True

    async def take(self, payment_id: int, now: datetime, not_after: datetime) -> bool:
        """Claims the next verification if the last one was at or before `not_after`."""
        result = await self.conn.execute(
            verify_claims.update().where(v.payment_id == payment_id, v.verified_at <= not_after).values(verified_at=now))
        return result.rowcount == 1

    async def last(self, payment_id: int) -> datetime | None:
        return (await self.conn.execute(sa.select(v.verified_at).where(v.payment_id == payment_id))).scalar()
