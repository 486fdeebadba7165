"""Built-in API keys: generated here, shown once, stored only as SHA-256."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from ..clock import utcnow
from ..db.tables import api_keys
from .caller import Caller, parse_acts_for

KEY_PREFIX = "psk_"


def hash_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    id: int
    service_name: str
    key_prefix: str
    acts_for: frozenset[str]
    created_at: datetime
    revoked_at: datetime | None


class ApiKeyRepository:
    def __init__(self, conn: AsyncConnection):
        self.conn = conn

    async def create(self, service_name: str, acts_for: frozenset[str]) -> tuple[str, ApiKeyRecord]:
        """Returns (the new key in clear, its record); the clear key is not kept."""
        api_key = KEY_PREFIX + secrets.token_urlsafe(32)
        now = utcnow()
        values = dict(
            service_name=service_name,
            key_prefix=api_key[:12],
            key_hash=hash_key(api_key),
            acts_for=",".join(sorted(acts_for)),
            created_at=now,
        )
        result = await self.conn.execute(api_keys.insert().values(**values))
        record = ApiKeyRecord(result.inserted_primary_key[0], service_name, values["key_prefix"], acts_for, now, None)
        return api_key, record

    async def find_active(self, api_key: str) -> Caller | None:
        row = (
            await self.conn.execute(
                sa.select(api_keys.c.id, api_keys.c.service_name, api_keys.c.acts_for).where(
                    api_keys.c.key_hash == hash_key(api_key), api_keys.c.revoked_at.is_(None)
                )
            )
        ).first()
        return Caller(row.service_name, parse_acts_for(row.acts_for), key_id=str(row.id)) if row else None

    async def list(self) -> list[ApiKeyRecord]:
        rows = await self.conn.execute(sa.select(api_keys).order_by(api_keys.c.id))
        return [
            ApiKeyRecord(r.id, r.service_name, r.key_prefix, parse_acts_for(r.acts_for), r.created_at, r.revoked_at)
            for r in rows
        ]

    async def revoke(self, key_id: int) -> bool:
        result = await self.conn.execute(
            api_keys.update().where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None)).values(revoked_at=utcnow())
        )
        return result.rowcount == 1
