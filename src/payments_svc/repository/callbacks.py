"""payment_callbacks: the log of inbound provider callbacks and the per-event dedup key."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from ..db import statements as st
from ..db.engine import conflict_scope
from ..db.tables import payment_callbacks
from ..domain.enums import CallbackStatus

_c = payment_callbacks.c
_VALUES = ("payment_id", "provider", "callback_hash", "provider_event_id", "dedup_key", "signature", "payload_json",
           "status", "error", "created_at", "updated_at")
_binds = {name: sa.bindparam(name, type_=_c[name].type) for name in _VALUES}
_INSERT_CLAUSE = payment_callbacks.insert().values(**_binds)
# An applied event's row in the same batch as its status change (statements.batch): on
# MySQL written only if the row before it was.
INSERT_AFTER_UPDATE = st.Statement(
    _INSERT_CLAUSE,
    mysql=payment_callbacks.insert().from_select(
        list(_VALUES), sa.select(*_binds.values()).where(sa.func.row_count() == sa.literal_column("1"))
    ),
)


class DuplicateProviderEvent(Exception):
    """This provider event was already applied."""


def callback_row(*, provider: str, callback_hash: str, signature: str, payload: str, status: CallbackStatus,
                 now: datetime, payment_id: int | None = None, provider_event_id: str | None = None,
                 dedup_key: str | None = None, error: str | None = None) -> dict[str, Any]:
    """One logged callback's column values (what does not fit its column is cut)."""
    return dict(
        payment_id=payment_id,
        provider=provider[:32],
        callback_hash=callback_hash[:128],
        provider_event_id=None if provider_event_id is None else provider_event_id[:255],
        dedup_key=dedup_key,
        signature=signature[:1024],
        payload_json=payload,
        status=int(status),
        error=None if error is None else error[:1024],
        created_at=now,
        updated_at=now,
    )


class CallbackLogRepository:
    def __init__(self, conn: AsyncConnection):
        self.conn = conn

    async def record(self, **row) -> None:
        """Inserts one row (callback_row's arguments); with a dedup_key, raises
        DuplicateProviderEvent when that event was recorded before (the unique index is the
        arbiter, not a look-up)."""
        try:
            async with conflict_scope(self.conn):
                await self.conn.execute(payment_callbacks.insert().values(**callback_row(**row)))
        except IntegrityError as exc:
            if row.get("dedup_key") is None:
                raise
            raise DuplicateProviderEvent() from exc
