"""Status callbacks by caller and status (the dead ones: FAILED), and their requeue.
Listings walk idx_callback_deliveries_caller_status (caller_service, status, id)."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from ..db.tables import callback_deliveries
from ..domain.enums import DeliveryStatus
from .deliveries import DELIVERY_COLUMNS, CallbackDelivery, _to_delivery
from .outbox import OutboxRepository

d = callback_deliveries.c


class DeadCallbackRepository:
    def __init__(self, conn: AsyncConnection):
        self.conn = conn

    async def list(self, *, callers: frozenset[str] | None, status: DeliveryStatus | None, since: datetime | None,
                   until: datetime | None, before_id: int, limit: int) -> list[tuple[CallbackDelivery, datetime]]:
        """Newest first, with each delivery's updated_at (when it died, for FAILED)."""
        stmt = sa.select(*DELIVERY_COLUMNS, d.updated_at)
        if callers is not None:
            stmt = stmt.where(d.caller_service.in_(sorted(callers)))
        if status is not None:
            stmt = stmt.where(d.status == int(status))
        if since is not None:
            stmt = stmt.where(d.updated_at >= since)
        if until is not None:
            stmt = stmt.where(d.updated_at < until)
        if before_id:
            stmt = stmt.where(d.id < before_id)
        rows = await self.conn.execute(stmt.order_by(d.id.desc()).limit(limit))
        return [(_to_delivery(row[:-1]), row[-1]) for row in rows]

    async def count_dead(self) -> int:
        stmt = sa.select(sa.func.count()).select_from(callback_deliveries).where(d.status == int(DeliveryStatus.FAILED))
        return (await self.conn.execute(stmt)).scalar_one()

    async def requeue(self, caller_service: str, *, since: datetime | None, now: datetime, limit: int) -> list[tuple[int, str]]:
        """Sends the caller's dead deliveries (died at or after `since`) again: each becomes
        REQUEUED and a new delivery of the same message (a new webhook-id, a full retry
        budget) is queued. Returns (old id, new delivery id) pairs, at most `limit`."""
        stmt = sa.select(*DELIVERY_COLUMNS).where(d.caller_service == caller_service, d.status == int(DeliveryStatus.FAILED))
        if since is not None:
            stmt = stmt.where(d.updated_at >= since)
        if self.conn.dialect.name == "mysql":
            stmt = stmt.with_for_update(skip_locked=True)  # a concurrent requeue takes the others
        dead = [_to_delivery(row) for row in await self.conn.execute(stmt.order_by(d.id).limit(limit))]
        outbox, requeued = OutboxRepository(self.conn), []
        for delivery in dead:
            changed = await self.conn.execute(
                callback_deliveries.update()
                .where(d.id == delivery.id, d.status == int(DeliveryStatus.FAILED))
                .values(status=int(DeliveryStatus.REQUEUED), updated_at=now)
            )
            if changed.rowcount != 1:
                continue
            new_id = await outbox.enqueue(payment_id=delivery.payment_id, caller_service=delivery.caller_service,
                                          event_type=delivery.event_type, payment_status=delivery.payment_status, now=now)
            requeued.append((delivery.id, new_id))
        return requeued
