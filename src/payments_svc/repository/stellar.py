"""stellar_cursors and stellar_operations, and finding a Stellar payment by its memo."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from ..db.engine import conflict_scope
from ..db.tables import payments, stellar_cursors, stellar_operations
from ..domain.enums import ProviderType, StellarOperationStatus
from ..domain.payment import Payment
from .payments import PAYMENT_COLUMNS, _to_payment

# Operations whose money went to their payment (counted in its received amount).
MATCHED_STATUSES = (StellarOperationStatus.CREDITED, StellarOperationStatus.REFUND_DUE)


class StellarCursorRepository:
    def __init__(self, conn: AsyncConnection):
        self.conn = conn

    async def get(self, account: str, *, for_update: bool = False) -> str | None:
        stmt = sa.select(stellar_cursors.c.paging_token).where(stellar_cursors.c.account == account)
        if for_update and self.conn.dialect.name != "sqlite":
            stmt = stmt.with_for_update()
        return (await self.conn.execute(stmt)).scalar()

    async def create(self, account: str, paging_token: str, now: datetime) -> bool:
        """False when the account has a cursor already (another process made it first)."""
        try:
            async with conflict_scope(self.conn):
                await self.conn.execute(
                    stellar_cursors.insert().values(account=account, paging_token=paging_token, updated_at=now)
                )
        except IntegrityError:
            return False
        return True

    async def advance(self, account: str, expected: str, paging_token: str, now: datetime) -> bool:
        """Moves the cursor only from where the caller read it (compare and set)."""
        stmt = (
            stellar_cursors.update()
            .where(stellar_cursors.c.account == account, stellar_cursors.c.paging_token == expected)
            .values(paging_token=paging_token, updated_at=now)
        )
        return (await self.conn.execute(stmt)).rowcount == 1


class StellarOperationRepository:
    def __init__(self, conn: AsyncConnection):
        self.conn = conn

    async def exists(self, operation_id: str) -> bool:
        stmt = sa.select(stellar_operations.c.id).where(stellar_operations.c.operation_id == operation_id)
        return (await self.conn.execute(stmt)).first() is not None

    async def add(self, *, status: StellarOperationStatus, **values: Any) -> None:
        """One row; a second row for one operation_id fails on the unique key."""
        await self.conn.execute(stellar_operations.insert().values(status=int(status), **values))

    async def received_stroops(self, payment_id: int) -> int:
        stmt = sa.select(sa.func.coalesce(sa.func.sum(stellar_operations.c.amount_stroops), 0)).where(
            stellar_operations.c.payment_id == payment_id,
            stellar_operations.c.status.in_([int(s) for s in MATCHED_STATUSES]),
        )
        return int((await self.conn.execute(stmt)).scalar())


async def find_stellar_payment(conn: AsyncConnection, memo: str) -> Payment | None:
    """The Stellar payment whose memo (its provider_payment_id) this is, locked for the update."""
    stmt = sa.select(*PAYMENT_COLUMNS).where(
        payments.c.provider == int(ProviderType.STELLAR), payments.c.provider_payment_id == memo
    )
    if conn.dialect.name != "sqlite":
        stmt = stmt.with_for_update()
    row = (await conn.execute(stmt)).first()
    return _to_payment(row) if row else None
