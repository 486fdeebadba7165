"""payment_callbacks: the log of inbound provider callbacks and the per-event dedup key."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from ..db.engine import conflict_scope
from ..db.tables import payment_callbacks
from ..domain.enums import CallbackStatus


class DuplicateProviderEvent(Exception):
    """This provider event was already applied."""


class CallbackLogRepository:
    def __init__(self, conn: AsyncConnection):
        self.conn = conn

    async def record(
        self,
        *,
        provider: str,
        callback_hash: str,
        signature: str,
        payload: str,
        status: CallbackStatus,
        now: datetime,
        payment_id: int | None = None,
        provider_event_id: str | None = None,
        dedup_key: str | None = None,
        error: str | None = None,
    ) -> None:
        """Inserts one row; with a dedup_key, raises DuplicateProviderEvent when that
        event was recorded before (the unique index is the arbiter, not a look-up)."""
        try:
            async with conflict_scope(self.conn):
                await self.conn.execute(
                    payment_callbacks.insert().values(
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
                )
        except IntegrityError as exc:
            if dedup_key is None:
                raise
            raise DuplicateProviderEvent() from exc
