"""callback_deliveries: status callbacks owed to callers (the transactional outbox)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from ..db import statements as st
from ..db.tables import callback_deliveries
from ..domain.enums import DeliveryStatus, PaymentStatus

_d = callback_deliveries.c
_VALUES = ("delivery_id", "payment_id", "caller_service", "event_type", "payment_status", "status", "attempts",
           "next_attempt_at", "created_at", "updated_at")
_binds = {name: sa.bindparam(name, type_=_d[name].type) for name in _VALUES}
INSERT = st.Statement(callback_deliveries.insert().values(**_binds))
# The delivery of a status change in the same batch as its event (statements.batch): on
# MySQL written only if the event was.
INSERT_AFTER_UPDATE = st.Statement(
    INSERT.clause,
    mysql=callback_deliveries.insert().from_select(
        list(_VALUES), sa.select(*_binds.values()).where(sa.func.row_count() == sa.literal_column("1"))
    ),
)


def delivery_row(*, payment_id: int, caller_service: str, event_type: str, payment_status: PaymentStatus,
                 now: datetime) -> dict[str, Any]:
    """A new delivery's bind parameters; its delivery_id stays the same across every retry."""
    return dict(
        delivery_id="msg_" + uuid.uuid4().hex,
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


class OutboxRepository:
    def __init__(self, conn: AsyncConnection):
        self.conn = conn

    async def enqueue(
        self, *, payment_id: int, caller_service: str, event_type: str, payment_status: PaymentStatus, now: datetime
    ) -> str:
        """Queues one delivery; returns its delivery_id."""
        row = delivery_row(payment_id=payment_id, caller_service=caller_service, event_type=event_type,
                           payment_status=payment_status, now=now)
        await st.execute(self.conn, INSERT, row)
        return row["delivery_id"]
