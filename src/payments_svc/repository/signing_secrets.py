"""signing_secrets: the Standard Webhooks secrets status callbacks are signed with,
one or more per caller service (more than one while a rotation is under way)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from ..db.tables import signing_secrets
from ..webhooks_signing import generate_secret


class SigningSecretExists(Exception):
    """The caller service has a secret already; rotate it instead."""


def _active(now: datetime):
    s = signing_secrets.c
    return sa.or_(s.expires_at.is_(None), s.expires_at > now)


class SigningSecretRepository:
    def __init__(self, conn: AsyncConnection):
        self.conn = conn

    async def create(self, caller_service: str, *, rotate: bool, grace: timedelta, now: datetime) -> str:
        """Creates a secret and returns it. With `rotate`, the current secrets keep
        signing alongside the new one for `grace`, then expire; without it, a service
        that already has a secret is refused (SigningSecretExists)."""
        s = signing_secrets.c
        mine = s.caller_service == caller_service
        current = sa.select(s.id).where(mine, _active(now))
        if self.conn.dialect.name == "mysql":
            current = current.with_for_update()  # two concurrent rotations: one after the other
        if (await self.conn.execute(current)).first() is not None:
            if not rotate:
                raise SigningSecretExists()
            retire_at = now + grace
            await self.conn.execute(
                signing_secrets.update()
                .where(mine, sa.or_(s.expires_at.is_(None), s.expires_at > retire_at))
                .values(expires_at=retire_at)
            )
        secret = generate_secret()
        await self.conn.execute(signing_secrets.insert().values(caller_service=caller_service, secret=secret, created_at=now))
        return secret

    async def active(self, caller_services: Iterable[str], now: datetime) -> dict[str, list[str]]:
        """The secrets that sign now, per caller service, newest first."""
        s = signing_secrets.c
        rows = await self.conn.execute(
            sa.select(s.caller_service, s.secret)
            .where(s.caller_service.in_(list(caller_services)), _active(now))
            .order_by(s.id.desc())
        )
        out: dict[str, list[str]] = {}
        for row in rows:
            out.setdefault(row.caller_service, []).append(row.secret)
        return out
