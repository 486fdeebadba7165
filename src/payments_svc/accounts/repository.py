"""Reads and writes of provider_accounts. Secrets go in and come out encrypted: this
module sees only ciphertexts; accounts/store.py encrypts and decrypts them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from ..db.tables import provider_accounts
from ..domain.enums import ProviderType

# The encrypted fields, by the name their associated data carries.
SECRET_FIELDS = ("secret_key", "webhook_secret")


@dataclass(frozen=True, slots=True)
class AccountRow:
    id: int
    caller_service: str
    provider: ProviderType
    enabled: bool
    settings: dict[str, Any]
    secret_key: str = field(repr=False)  # ciphertexts: still never shown
    webhook_secret: str | None = field(repr=False)
    created_at: datetime
    updated_at: datetime


_c = provider_accounts.c
_COLUMNS = (_c.id, _c.caller_service, _c.provider, _c.enabled, _c.settings_json, _c.secret_key, _c.webhook_secret,
            _c.created_at, _c.updated_at)


def _row(row) -> AccountRow:
    return AccountRow(row.id, row.caller_service, ProviderType(row.provider), bool(row.enabled),
                      json.loads(row.settings_json), row.secret_key, row.webhook_secret, row.created_at, row.updated_at)


class ProviderAccountRepository:
    def __init__(self, conn: AsyncConnection):
        self.conn = conn

    async def insert(self, caller_service: str, provider: ProviderType, settings: dict[str, Any], now: datetime) -> int:
        """A row whose secrets are set next, in the same transaction (their associated
        data needs the id)."""
        result = await self.conn.execute(provider_accounts.insert().values(
            caller_service=caller_service, provider=int(provider), enabled=True,
            settings_json=json.dumps(settings, sort_keys=True), secret_key="", webhook_secret=None,
            created_at=now, updated_at=now,
        ))
        return result.inserted_primary_key[0]

    async def set_secrets(self, account_id: int, values: dict[str, str | None], now: datetime) -> None:
        unknown = set(values) - set(SECRET_FIELDS)
        if unknown:
            raise ValueError(f"not secret fields: {sorted(unknown)}")
        await self.conn.execute(provider_accounts.update().where(_c.id == account_id).values(**values, updated_at=now))

    async def get(self, account_id: int, *, for_update: bool = False) -> AccountRow | None:
        stmt = sa.select(*_COLUMNS).where(_c.id == account_id)
        if for_update and self.conn.dialect.name == "mysql":
            stmt = stmt.with_for_update()
        row = (await self.conn.execute(stmt)).first()
        return _row(row) if row else None

    async def enabled_for(self, caller_service: str, provider: ProviderType) -> AccountRow | None:
        row = (await self.conn.execute(
            sa.select(*_COLUMNS).where(_c.caller_service == caller_service, _c.provider == int(provider), _c.enabled)
            .order_by(_c.id.desc()).limit(1)
        )).first()
        return _row(row) if row else None

    async def list(self) -> list[AccountRow]:
        return [_row(r) for r in await self.conn.execute(sa.select(*_COLUMNS).order_by(_c.id))]

    async def disable(self, account_id: int, now: datetime) -> bool:
        result = await self.conn.execute(
            provider_accounts.update().where(_c.id == account_id, _c.enabled).values(enabled=False, updated_at=now))
        return result.rowcount == 1

    async def count(self) -> int:
        return (await self.conn.execute(sa.select(sa.func.count()).select_from(provider_accounts))).scalar_one()
