"""caller_limits: each caller service's quotas as `payments-svc keys limits` set them;
and the count of a caller's open payments that the cap on them compares."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from ..clock import utcnow
from ..db.engine import conflict_scope
from ..db.tables import caller_limits, payments
from ..domain.enums import PaymentStatus

LIMIT_COLUMNS = ("create_rps", "create_burst", "read_rps", "read_burst", "max_open_payments")
OPEN_STATUSES = (PaymentStatus.CREATED, PaymentStatus.PENDING)  # not yet paid, failed or ended


@dataclass(frozen=True, slots=True)
class CallerLimitsRow:
    service_name: str
    values: dict[str, float | int]  # only the limits set for this service
    updated_at: datetime


class CallerLimitsRepository:
    def __init__(self, conn: AsyncConnection):
        self.conn = conn

    async def all(self) -> list[CallerLimitsRow]:
        rows = (await self.conn.execute(sa.select(caller_limits).order_by(caller_limits.c.service_name))).mappings()
        return [CallerLimitsRow(r["service_name"], {c: r[c] for c in LIMIT_COLUMNS if r[c] is not None}, r["updated_at"])
                for r in rows]

    async def set(self, service_name: str, values: dict[str, float | int | None]) -> None:
        """Sets the given limits (None: back to the default); the others stay."""
        row = {**values, "updated_at": utcnow()}
        where = caller_limits.c.service_name == service_name
        if (await self.conn.execute(caller_limits.update().where(where).values(**row))).rowcount:
            return
        try:
            async with conflict_scope(self.conn):
                await self.conn.execute(caller_limits.insert().values(service_name=service_name, **row))
        except IntegrityError:  # another `keys limits` inserted it first: ours is the later word
            await self.conn.execute(caller_limits.update().where(where).values(**row))

    async def delete(self, service_name: str) -> bool:
        result = await self.conn.execute(caller_limits.delete().where(caller_limits.c.service_name == service_name))
        return bool(result.rowcount)

    async def count_open(self, caller_service: str, up_to: int) -> int:
        """The caller's open payments, counted up to `up_to` (all the cap needs to know)."""
        open_ones = (sa.select(sa.literal(1)).select_from(payments)
                     .where(payments.c.caller_service == caller_service, payments.c.status.in_(OPEN_STATUSES))
                     .limit(up_to).subquery())
        return (await self.conn.execute(sa.select(sa.func.count()).select_from(open_ones))).scalar_one()
