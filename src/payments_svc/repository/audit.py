"""The audit_log table: inserts and reads only (the trail is append-only)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from ..db.tables import audit_log


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    occurred_at: datetime
    actor_service: str
    actor_key_id: str
    action: str
    target_type: str
    target_id: str
    request_id: str
    detail: str


class AuditRepository:
    def __init__(self, conn: AsyncConnection):
        self.conn = conn

    async def add(self, *, occurred_at: datetime, actor_service: str, actor_key_id: str, action: str,
                  target_type: str, target_id: str, request_id: str, detail: str) -> None:
        await self.conn.execute(audit_log.insert(), dict(
            occurred_at=occurred_at, actor_service=actor_service[:128], actor_key_id=actor_key_id[:64],
            action=action, target_type=target_type, target_id=target_id[:255], request_id=request_id[:255],
            detail=detail[:1024],
        ))

    async def list(self, *, action: str = "", target_type: str = "", target_id: str = "", before_id: int = 0,
                   limit: int = 100) -> list[AuditEntry]:
        """Newest first; each filter uses an index (action, id) or (target_type, target_id, id)."""
        stmt = sa.select(audit_log)
        if action:
            stmt = stmt.where(audit_log.c.action == action)
        if target_type:
            stmt = stmt.where(audit_log.c.target_type == target_type)
        if target_id:
            stmt = stmt.where(audit_log.c.target_id == target_id)
        if before_id:
            stmt = stmt.where(audit_log.c.id < before_id)
        rows = await self.conn.execute(stmt.order_by(audit_log.c.id.desc()).limit(limit))
        return [AuditEntry(r.id, r.occurred_at, r.actor_service, r.actor_key_id, r.action, r.target_type, r.target_id,
                           r.request_id, r.detail) for r in rows]
