"""A logged provider callback whose values do not fit their columns (a provider's long
name, hash, event id or signature; a long error) is still logged: each value is cut to
exactly its column's length, on every backend (SQLite would store it whole, the servers
would refuse the row), and values that fit are stored as they came."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from payments_svc.db.tables import payment_callbacks
from payments_svc.domain.enums import CallbackStatus
from payments_svc.repository.callbacks import CallbackLogRepository

NOW = datetime(2026, 3, 1, 12, 0, 0)
LIMITS = {"provider": 32, "callback_hash": 128, "provider_event_id": 255, "signature": 1024, "error": 1024}


def over_long(column: str) -> str:
    """A value one longer than the column, each character telling its position (so a cut in the wrong place shows)."""
    return "".join("0123456789abcdefghijklmnopqrstuvwxyz"[i % 36] for i in range(LIMITS[column] + 1))


async def stored(container) -> list[dict]:
    c = payment_callbacks.c
    async with container.db.read() as conn:
        rows = await conn.execute(sa.select(c.provider, c.callback_hash, c.provider_event_id, c.signature, c.error,
                                            c.payload_json, c.status).order_by(c.id))
        return [dict(r._mapping) for r in rows]


async def test_an_over_long_callback_is_logged_with_each_value_cut_to_its_column(container):
    values = {column: over_long(column) for column in LIMITS}
    async with container.db.transaction() as conn:
        await CallbackLogRepository(conn).record(payload='{"id": "evt"}', status=CallbackStatus.REJECTED, now=NOW,
                                                 **values)
    (row,) = await stored(container)
    assert {column: row[column] for column in LIMITS} == {column: values[column][:n] for column, n in LIMITS.items()}
    assert {column: len(row[column]) for column in LIMITS} == LIMITS
    assert (row["payload_json"], row["status"]) == ('{"id": "evt"}', int(CallbackStatus.REJECTED))


async def test_a_callback_whose_values_fit_is_logged_as_it_came(container):
    values = {column: over_long(column)[:n] for column, n in LIMITS.items()}
    async with container.db.transaction() as conn:
        await CallbackLogRepository(conn).record(payload="{}", status=CallbackStatus.PROCESSED, now=NOW, **values)
        await CallbackLogRepository(conn).record(provider="sandbox", callback_hash="h", signature="",
                                                 payload="{}", status=CallbackStatus.PROCESSED, now=NOW)
    fitting, bare = await stored(container)
    assert {column: fitting[column] for column in LIMITS} == values
    assert (bare["provider"], bare["callback_hash"], bare["provider_event_id"], bare["signature"], bare["error"]) == (
        "sandbox", "h", None, "", None)
