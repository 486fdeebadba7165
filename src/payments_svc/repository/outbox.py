"""callback_deliveries: status callbacks owed to callers (the transactional outbox)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from ..db.tables import callback_deliveries
from ..domain.enums import DeliveryStatus, PaymentStatus


class OutboxRepository:
    def __init__(self, conn: AsyncConnection):
        self.conn = conn

    async def enqueue(
        self, *, payment_id: int, caller_service: str, event_type: str, payment_status: PaymentStatus, now: datetime
    ) -> str:
        """Queues one delivery; its delivery_id stays the same across every retry."""
        delivery_id = "msg_" + uuid.uuid4().hex
        await self.conn.execute(
            callback_deliveries.insert().values(
                delivery_id=delivery_id,
                payment_id=payment_id,
                caller_service=caller_service,
                event_type=event_type,
                payment_status=int(payment_status),
                status=int(DeliveryStatus.PENDING),
                attempts=0,
                next_attempt_at=now,
                created_at=now,
                updated_at=now,
            )
        )
        return delivery_id
