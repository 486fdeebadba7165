"""The payment_events timeline."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from ..db import statements as st
from ..db.tables import payment_events
from ..domain.enums import PaymentStatus
from ..domain.payment import PaymentEvent

_e = payment_events.c
# The columns an event row is written with besides payment_id, and their bind parameters.
EVENT_VALUES = ("event_type", "old_status", "new_status", "provider_event_id", "needs_attention", "message",
                "payload_json", "created_at")


def event_binds(prefix: str = "") -> dict[str, sa.BindParameter]:
    return {name: sa.bindparam(prefix + name, type_=_e[name].type) for name in EVENT_VALUES}


INSERT = st.Statement(payment_events.insert().values(payment_id=sa.bindparam("payment_id"), **event_binds()))
# The event of a conditional UPDATE in the same batch (statements.batch): on MySQL written
# only if the UPDATE matched its row.
INSERT_AFTER_UPDATE = st.Statement(
    INSERT.clause,
    mysql=payment_events.insert().from_select(
        ["payment_id", *EVENT_VALUES],
        sa.select(sa.bindparam("payment_id", type_=_e.payment_id.type), *event_binds().values())
        .where(sa.func.row_count() == sa.literal_column("1")),
    ),
)
# The columns a PaymentEvent is made of, in its fields' order (to_event reads them by position).
EVENT_COLUMNS = (_e.id, _e.payment_id, _e.event_type, _e.old_status, _e.new_status, _e.provider_event_id,
                 _e.needs_attention, _e.message, _e.created_at)
_LIST = st.Statement(
    sa.select(*EVENT_COLUMNS)
    .where(_e.payment_id == sa.bindparam("payment_id"), _e.id > sa.bindparam("after_id"))
    .order_by(_e.id)
    .limit(sa.bindparam("limit"))
)


def event_row(
    *,
    payment_id: int | None,
    event_type: str,
    old_status: PaymentStatus | None,
    new_status: PaymentStatus,
    now: datetime,
    provider_event_id: str | None = None,
    needs_attention: bool = False,
    message: str | None = None,
    payload: str | None = None,
) -> dict[str, Any]:
    """An event's bind parameters (payment_id None: the statement supplies it)."""
    return dict(
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


class EventRepository:
    def __init__(self, conn: AsyncConnection):
        self.conn = conn

    async def add(self, **event: Any) -> None:
        """One event row; the arguments are event_row's."""
        await st.execute(self.conn, INSERT, event_row(**event))

    async def list(self, payment_id: int, *, limit: int, after_id: int) -> list[PaymentEvent]:
        rows = await st.fetch_all(self.conn, _LIST, {"payment_id": payment_id, "after_id": after_id, "limit": limit})
        return [to_event(row) for row in rows]


def to_event(row: Sequence[Any]) -> PaymentEvent:
    """The PaymentEvent in a row that starts with EVENT_COLUMNS."""
    return PaymentEvent(row[0], row[1], row[2], None if row[3] is None else PaymentStatus(row[3]),
                        PaymentStatus(row[4]), row[5], bool(row[6]), row[7], row[8])
