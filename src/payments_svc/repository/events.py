"""The payment_events timeline."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from ..db.tables import payment_events
from ..domain.enums import PaymentStatus
from ..domain.payment import PaymentEvent

_INSERT = payment_events.insert()  # built once: only the parameters change per event


class EventRepository:
    def __init__(self, conn: AsyncConnection):
        self.conn = conn

    async def add(
        self,
        *,
        payment_id: int,
        event_type: str,
        old_status: PaymentStatus | None,
        new_status: PaymentStatus,
        now: datetime,
        provider_event_id: str | None = None,
        needs_attention: bool = False,
        message: str | None = None,
        payload: str | None = None,
    ) -> None:
        await self.conn.execute(
            _INSERT,
            dict(
                payment_id=payment_id,
                event_type=event_type,
                old_status=None if old_status is None else int(old_status),
                new_status=int(new_status),
                provider_event_id=provider_event_id,
                needs_attention=needs_attention,
                message=None if message is None else message[:1024],
                payload_json=payload,
                created_at=now,
            )
        )

    async def list(self, payment_id: int, *, limit: int, after_id: int) -> list[PaymentEvent]:
        stmt = (
            sa.select(payment_events)
            .where(payment_events.c.payment_id == payment_id, payment_events.c.id > after_id)
            .order_by(payment_events.c.id)
            .limit(limit)
        )
        return [
            PaymentEvent(
                id=row.id,
                payment_id=row.payment_id,
                event_type=row.event_type,
                old_status=None if row.old_status is None else PaymentStatus(row.old_status),
                new_status=PaymentStatus(row.new_status),
                provider_event_id=row.provider_event_id,
                needs_attention=bool(row.needs_attention),
                message=row.message,
                created_at=row.created_at,
            )
            for row in await self.conn.execute(stmt)
        ]
