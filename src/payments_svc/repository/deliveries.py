"""callback_deliveries as the dispatcher sees them (claim, outcome, release) and the
callback_attempts log. Rows are written by OutboxRepository.enqueue."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from ..db.tables import callback_attempts, callback_deliveries
from ..domain.enums import DeliveryStatus, PaymentStatus


@dataclass(frozen=True, slots=True)
class CallbackDelivery:
    id: int
    delivery_id: str  # the webhook-id: the same on every attempt
    payment_id: int
    caller_service: str
    event_type: str
    payment_status: PaymentStatus
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None
    last_status_code: int | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one attempt did to a delivery."""

    status: DeliveryStatus
    attempted_at: datetime
    status_code: int | None
    latency_ms: int
    error: str | None
    next_attempt_at: datetime | None  # only while PENDING


# The columns a CallbackDelivery is made of, in its fields' order (reads select only these).
DELIVERY_COLUMNS = tuple(callback_deliveries.c[f.name] for f in dataclasses.fields(CallbackDelivery))
_PAYMENT_STATUS_AT, _STATUS_AT = (DELIVERY_COLUMNS.index(callback_deliveries.c[n]) for n in ("payment_status", "status"))


def _to_delivery(row: Sequence[Any]) -> CallbackDelivery:
    """The CallbackDelivery in a row of DELIVERY_COLUMNS (by position: cheaper than by name)."""
    values = list(row)
    values[_PAYMENT_STATUS_AT] = PaymentStatus(values[_PAYMENT_STATUS_AT])
    values[_STATUS_AT] = DeliveryStatus(values[_STATUS_AT])
    return CallbackDelivery(*values)


class DeliveryRepository:
    def __init__(self, conn: AsyncConnection):
        self.conn = conn

    async def due_summary(self, now: datetime) -> tuple[int, datetime | None]:
        """How many deliveries are due now, and since when the oldest of them is."""
        d = callback_deliveries.c
        row = (
            await self.conn.execute(
                sa.select(sa.func.count(), sa.func.min(d.next_attempt_at)).where(
                    d.status == int(DeliveryStatus.PENDING), d.next_attempt_at <= now
                )
            )
        ).one()
        return row[0], row[1]

    async def claim_due(self, *, now: datetime, limit: int, owner: str, lease_until: datetime) -> list[CallbackDelivery]:
        """Leases up to `limit` due deliveries to `owner`, oldest due first. Rows another
        dispatcher is claiming right now are skipped (SKIP LOCKED), rows it holds are
        not due until their lease ends; SQLite's write lock serialises claimers instead."""
        d = callback_deliveries.c
        stmt = (
            sa.select(*DELIVERY_COLUMNS)
            .where(
                d.status == int(DeliveryStatus.PENDING),
                d.next_attempt_at <= now,
                sa.or_(d.lease_until.is_(None), d.lease_until <= now),
            )
            .order_by(d.next_attempt_at, d.id)
            .limit(limit)
        )
        if self.conn.dialect.name != "sqlite":
            stmt = stmt.with_for_update(skip_locked=True)
        claimed = [_to_delivery(row) for row in await self.conn.execute(stmt)]
        if claimed:
            await self.conn.execute(
                callback_deliveries.update()
                .where(d.id.in_([c.id for c in claimed]))
                .values(lease_owner=owner, lease_until=lease_until)
            )
        return claimed

    async def record(self, delivery: CallbackDelivery, owner: str, outcome: Outcome) -> bool:
        """Stores one attempt's outcome and its log row, if `owner` still holds the lease
        (a dispatcher whose lease was taken over must not overwrite the new holder)."""
        d = callback_deliveries.c
        attempt = delivery.attempts + 1
        updated = await self.conn.execute(
            callback_deliveries.update()
            .where(d.id == delivery.id, d.lease_owner == owner, d.status == int(DeliveryStatus.PENDING))
            .values(
                status=int(outcome.status),
                attempts=attempt,
                next_attempt_at=outcome.next_attempt_at,
                last_error=None if outcome.error is None else outcome.error[:1024],
                last_status_code=outcome.status_code,
                lease_owner=None,
                lease_until=None,
                updated_at=outcome.attempted_at,
            )
        )
        if updated.rowcount != 1:
            return False
        await self.conn.execute(
            callback_attempts.insert().values(
                callback_delivery_id=delivery.id,
                attempt=attempt,
                attempted_at=outcome.attempted_at,
                status_code=outcome.status_code,
                latency_ms=outcome.latency_ms,
                error=None if outcome.error is None else outcome.error[:1024],
            )
        )
        return True

    async def release(self, ids: list[int], owner: str) -> None:
        """Gives back leased rows that were not attempted (shutdown), so they are due at once."""
        if ids:
            d = callback_deliveries.c
            await self.conn.execute(
                callback_deliveries.update()
                .where(d.id.in_(ids), d.lease_owner == owner)
                .values(lease_owner=None, lease_until=None)
            )

    async def get_by_delivery_id(self, delivery_id: str) -> CallbackDelivery | None:
        row = (
            await self.conn.execute(sa.select(*DELIVERY_COLUMNS).where(callback_deliveries.c.delivery_id == delivery_id))
        ).first()
        return _to_delivery(row) if row else None
