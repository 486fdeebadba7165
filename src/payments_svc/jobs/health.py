"""Each worker's heartbeat: after every successful batch it records when and how many
items it took (worker_heartbeats, one row per job name), so that GetSystemStatus, served
by any `serve` process, sees workers that run as processes of their own."""

from __future__ import annotations

import sqlalchemy as sa
import structlog
from sqlalchemy.exc import IntegrityError

from ..clock import utcnow
from ..db.engine import Database, conflict_scope
from ..db.tables import worker_heartbeats

log = structlog.get_logger("payments.jobs")

h = worker_heartbeats.c


async def beat(db: Database, worker: str, *, claimed: int) -> None:
    """Records a successful batch. Never fails the job: a missed beat shows as a stale worker."""
    now = utcnow()
    values = dict(last_success_at=now, backlog=claimed, detail=f"{claimed} item(s) in the last batch")
    try:
        async with db.transaction() as conn:
            updated = await conn.execute(worker_heartbeats.update().where(h.worker == worker).values(**values))
            if updated.rowcount == 0:
                try:
                    async with conflict_scope(conn):  # a concurrent first beat of the same worker wins
                        await conn.execute(worker_heartbeats.insert().values(worker=worker, **values))
                except IntegrityError:
                    pass
    except Exception as exc:
        log.warning("worker_heartbeat_failed", job=worker, error=f"{type(exc).__name__}: {exc}")


async def heartbeats(db: Database) -> dict[str, tuple]:
    """worker: (last_success_at, backlog, detail)."""
    async with db.read() as conn:
        rows = await conn.execute(sa.select(h.worker, h.last_success_at, h.backlog, h.detail))
        return {r.worker: (r.last_success_at, r.backlog, r.detail) for r in rows}
