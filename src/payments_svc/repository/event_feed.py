"""Reads of payment_events across payments, by id: the watch hub's tail (one query per
interval per process) and a resuming watcher's backlog. Both walk the primary key."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from ..db.tables import payment_events, payments
from ..domain.enums import PaymentStatus, ProviderType
from ..domain.payment import PaymentEvent
from .events import EVENT_COLUMNS, to_event


@dataclass(frozen=True, slots=True)
class FeedEvent:
    """An event with what a watcher filters on: its payment's caller and provider."""

    event: PaymentEvent
    caller_service: str
    provider: ProviderType


_COLUMNS = (*EVENT_COLUMNS, payments.c.caller_service, payments.c.provider)
_FROM = payment_events.join(payments, payments.c.id == payment_events.c.payment_id)


def _to_feed_event(row) -> FeedEvent:
    return FeedEvent(to_event(row), row[len(EVENT_COLUMNS)], ProviderType(row[len(EVENT_COLUMNS) + 1]))


class EventFeedRepository:
    def __init__(self, conn: AsyncConnection):
        self.conn = conn

    async def last_id(self) -> int:
        return (await self.conn.execute(sa.select(sa.func.max(payment_events.c.id)))).scalar() or 0

    async def after(self, after_id: int, *, limit: int) -> list[FeedEvent]:
        """Events with an id above `after_id`, oldest first (a range scan of the primary key)."""
        stmt = (sa.select(*_COLUMNS).select_from(_FROM).where(payment_events.c.id > after_id)
                .order_by(payment_events.c.id).limit(limit))
        return [_to_feed_event(row) for row in await self.conn.execute(stmt)]

    async def for_callers(self, callers: frozenset[str], *, after_id: int, upto_id: int, limit: int,
                          status: PaymentStatus | None = None, provider: ProviderType | None = None) -> list[FeedEvent]:
        """A WatchPayments backlog: the callers' events in (after_id, upto_id], oldest first."""
        stmt = (sa.select(*_COLUMNS).select_from(_FROM)
                .where(payment_events.c.id > after_id, payment_events.c.id <= upto_id,
                       payments.c.caller_service.in_(sorted(callers))))
        if status is not None:
            stmt = stmt.where(payment_events.c.new_status == int(status))
        if provider is not None:
            stmt = stmt.where(payments.c.provider == int(provider))
        stmt = stmt.order_by(payment_events.c.id).limit(limit)
        return [_to_feed_event(row) for row in await self.conn.execute(stmt)]

    async def for_payment(self, payment_id: int, *, after_id: int, limit: int) -> list[FeedEvent]:
        stmt = (sa.select(*_COLUMNS).select_from(_FROM)
                .where(payment_events.c.payment_id == payment_id, payment_events.c.id > after_id)
                .order_by(payment_events.c.id).limit(limit))
        return [_to_feed_event(row) for row in await self.conn.execute(stmt)]

    async def for_payment_latest(self, payment_id: int) -> int:
        """The payment's latest event id (0: none)."""
        stmt = sa.select(sa.func.max(payment_events.c.id)).where(payment_events.c.payment_id == payment_id)
        return (await self.conn.execute(stmt)).scalar() or 0
