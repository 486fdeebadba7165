"""callback_deliveries as the dispatcher sees them (claim, outcome, release) and the
callback_attempts log. Rows are written by OutboxRepository.enqueue."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from ..db import statements as st
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


_d = callback_deliveries.c
_PENDING = int(DeliveryStatus.PENDING)
_DUE_SUMMARY = st.Statement(
    sa.select(sa.func.count(), sa.func.min(_d.next_attempt_at))
    .where(_d.status == _PENDING, _d.next_attempt_at <= sa.bindparam("now"))
)
_due = (
    sa.select(*DELIVERY_COLUMNS)
    .where(_d.status == _PENDING, _d.next_attempt_at <= sa.bindparam("now"),
           sa.or_(_d.lease_until.is_(None), _d.lease_until <= sa.bindparam("now")))
    .order_by(_d.next_attempt_at, _d.id)
    .limit(sa.bindparam("limit"))
)
# Rows another dispatcher is claiming right now are skipped; SQLite's write lock
# serialises claimers instead.
_CLAIM_DUE = st.Statement(_due.with_for_update(skip_locked=True), sqlite=_due)
_RECORD = st.Statement(
    callback_deliveries.update()
    .where(_d.id == sa.bindparam("where_id"), _d.lease_owner == sa.bindparam("owner"), _d.status == _PENDING)
    .values(status=sa.bindparam("status"), attempts=sa.bindparam("attempts"),
            next_attempt_at=sa.bindparam("next_attempt_at", type_=_d.next_attempt_at.type),
            last_error=sa.bindparam("last_error"), last_status_code=sa.bindparam("last_status_code"),
            lease_owner=None, lease_until=None, updated_at=sa.bindparam("updated_at", type_=_d.updated_at.type))
)
_a = callback_attempts.c
_INSERT_ATTEMPT = st.Statement(
    callback_attempts.insert().values(
        {name: sa.bindparam(name, type_=_a[name].type)
         for name in ("callback_delivery_id", "attempt", "attempted_at", "status_code", "latency_ms", "error")}
    )
)
_GET_BY_DELIVERY_ID = st.Statement(sa.select(*DELIVERY_COLUMNS).where(_d.delivery_id == sa.bindparam("delivery_id")))


@functools.cache
def _lease_statement(count: int, release: bool) -> st.Statement:
    """Leases `count` claimed rows to their claimer, or gives them back (release: only the
    holder's); built once per number of rows."""
    ids = _d.id.in_([sa.bindparam(f"id_{i}") for i in range(count)])
    if release:
        stmt = callback_deliveries.update().where(ids, _d.lease_owner == sa.bindparam("owner"))
        return st.Statement(stmt.values(lease_owner=None, lease_until=None))
    return st.Statement(callback_deliveries.update().where(ids).values(
        lease_owner=sa.bindparam("owner"), lease_until=sa.bindparam("lease_until", type_=_d.lease_until.type)))


def _ids(ids: list[int]) -> dict[str, int]:
    return {f"id_{i}": row_id for i, row_id in enumerate(ids)}


class DeliveryRepository:
    def __init__(self, conn: AsyncConnection):
        self.conn = conn

    async def due_summary(self, now: datetime) -> tuple[int, datetime | None]:
        """How many deliveries are due now, and since when the oldest of them is."""
        count, oldest = await st.fetch_one(self.conn, _DUE_SUMMARY, {"now": now})
        return count, oldest

    async def claim_due(self, *, now: datetime, limit: int, owner: str, lease_until: datetime) -> list[CallbackDelivery]:
        """Leases up to `limit` due deliveries to `owner`, oldest due first. Rows another
        dispatcher is claiming right now are skipped (SKIP LOCKED), rows it holds are
        not due until their lease ends; SQLite's write lock serialises claimers instead."""
        claimed = [_to_delivery(row) for row in await st.fetch_all(self.conn, _CLAIM_DUE, {"now": now, "limit": limit})]
        if claimed:
            params = _ids([c.id for c in claimed]) | {"owner": owner, "lease_until": lease_until}
            await st.execute(self.conn, _lease_statement(len(claimed), False), params)
        return claimed

    async def record(self, delivery: CallbackDelivery, owner: str, outcome: Outcome) -> bool:
        """Stores one attempt's outcome and its log row, if `owner` still holds the lease
        (a dispatcher whose lease was taken over must not overwrite the new holder)."""
        attempt = delivery.attempts + 1
        error = None if outcome.error is None else outcome.error[:1024]
        updated = await st.execute(self.conn, _RECORD, dict(
            where_id=delivery.id, owner=owner, status=int(outcome.status), attempts=attempt,
            next_attempt_at=outcome.next_attempt_at, last_error=error, last_status_code=outcome.status_code,
            updated_at=outcome.attempted_at,
        ))
        if updated != 1:
            return False
        await st.execute(self.conn, _INSERT_ATTEMPT, dict(
            callback_delivery_id=delivery.id, attempt=attempt, attempted_at=outcome.attempted_at,
            status_code=outcome.status_code, latency_ms=outcome.latency_ms, error=error,
        ))
        return True

    async def release(self, ids: list[int], owner: str) -> None:
        """Gives back leased rows that were not attempted (shutdown), so they are due at once."""
        if ids:
            await st.execute(self.conn, _lease_statement(len(ids), True), _ids(ids) | {"owner": owner})

    async def get_by_delivery_id(self, delivery_id: str) -> CallbackDelivery | None:
        row = await st.fetch_one(self.conn, _GET_BY_DELIVERY_ID, {"delivery_id": delivery_id})
        return _to_delivery(row) if row else None
