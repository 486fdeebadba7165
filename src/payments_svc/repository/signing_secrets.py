"""signing_secrets: the Standard Webhooks secrets status callbacks are signed with.

One story for the dispatcher and `payments-svc keys signing-secret`: the secrets that
sign a caller service's callbacks now are its unexpired rows here (newest first), then
any given in PAYMENTS_CALLBACK_SIGNING_SECRETS; a service with none gets one at its
first use, whoever uses it first. A rotation adds a row and gives the others an end,
so until then every callback carries one signature per secret and receivers holding
the old or the new one both verify it."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection

from ..db.engine import Database, is_deadlock
from ..db.tables import signing_secrets
from ..domain.errors import ServiceUnavailableError
from ..webhooks_signing import generate_secret


@dataclass(frozen=True, slots=True)
class SigningSecret:
    secret: str = field(repr=False)
    created_at: datetime | None  # None: given in PAYMENTS_CALLBACK_SIGNING_SECRETS
    expires_at: datetime | None  # None: signs until a rotation gives it an end
    created_now: bool = False  # made by this call, for a service that had none


def _signing_at(now: datetime):
    s = signing_secrets.c
    return sa.or_(s.expires_at.is_(None), s.expires_at > now)


class SigningSecretRepository:
    def __init__(self, conn: AsyncConnection):
        self.conn = conn

    async def active(self, caller_services: Iterable[str], now: datetime) -> dict[str, list[SigningSecret]]:
        """The stored secrets that sign now, per caller service, newest first."""
        s = signing_secrets.c
        rows = await self.conn.execute(
            sa.select(s.caller_service, s.secret, s.created_at, s.expires_at)
            .where(s.caller_service.in_(list(caller_services)), _signing_at(now))
            .order_by(s.id.desc())
        )
        out: dict[str, list[SigningSecret]] = {}
        for row in rows:
            out.setdefault(row.caller_service, []).append(SigningSecret(row.secret, row.created_at, row.expires_at))
        return out

    async def _lock_signing(self, caller_service: str, now: datetime) -> bool:
        """Locks the service's signing rows (on MySQL; SQLite's write transaction holds
        the whole database) so that creations and rotations of one service queue up.
        Returns whether it has any."""
        s = signing_secrets.c
        if self.conn.dialect.name == "postgresql":
            # PostgreSQL has no gap locks: FOR UPDATE on no rows locks nothing, and two
            # first uses would both insert. A lock on the service's name (until COMMIT) queues them.
            await self.conn.execute(sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtextextended(caller_service, 0))))
        query = sa.select(s.id).where(s.caller_service == caller_service, _signing_at(now))
        if self.conn.dialect.name != "sqlite":
            query = query.with_for_update()
        return (await self.conn.execute(query)).first() is not None

    async def _insert(self, caller_service: str, now: datetime) -> str:
        secret = generate_secret()
        await self.conn.execute(signing_secrets.insert().values(caller_service=caller_service, secret=secret, created_at=now))
        return secret

    async def create_if_none(self, caller_service: str, now: datetime) -> bool:
        """Creates the service's first secret unless it has one; True if it did."""
        if await self._lock_signing(caller_service, now):
            return False
        await self._insert(caller_service, now)
        return True

    async def rotate(self, caller_service: str, *, grace: timedelta, now: datetime) -> str:
        """A new secret; the service's others keep signing for `grace` (never longer than
        they would have), then stop."""
        s = signing_secrets.c
        await self._lock_signing(caller_service, now)
        retire_at = now + grace
        await self.conn.execute(
            signing_secrets.update()
            .where(s.caller_service == caller_service, sa.or_(s.expires_at.is_(None), s.expires_at > retire_at))
            .values(expires_at=retire_at)
        )
        return await self._insert(caller_service, now)


async def current_signing_secrets(
    db: Database, caller_services: Iterable[str], *, configured: Sequence[tuple[str, str]], now: datetime
) -> dict[str, list[SigningSecret]]:
    """Every secret that signs each service's callbacks now: stored ones newest first,
    then the configured ones. A service with neither gets a stored one here (marked
    created_now), so no callback ever goes out unsigned."""
    services = list(dict.fromkeys(caller_services))
    async with db.read() as conn:
        stored = await SigningSecretRepository(conn).active(services, now)
    from_config: dict[str, list[SigningSecret]] = {}
    for service, secret in configured:
        from_config.setdefault(service, []).append(SigningSecret(secret, None, None))
    missing = [s for s in services if s not in stored and s not in from_config]
    created = {service for service in missing if await _create_if_none(db, service, now)}
    if missing:  # made here, or just now by another process
        async with db.read() as conn:
            stored.update(await SigningSecretRepository(conn).active(missing, now))
    out = {}
    for service in services:
        mine = stored.get(service, [])
        if service in created:
            mine = [SigningSecret(s.secret, s.created_at, s.expires_at, created_now=True) for s in mine]
        # A secret both stored and configured signs once.
        seen = {s.secret for s in mine}
        out[service] = mine + [s for s in from_config.get(service, []) if s.secret not in seen]
    return out


async def _create_if_none(db: Database, caller_service: str, now: datetime) -> bool:
    # Concurrent first uses on MySQL: all lock the same empty index gap, all insert, InnoDB
    # rolls back all but one as deadlocks; a retry after a short random pause then finds
    # the winner's secret. Every round has a winner, so the attempts bound the processes
    # that may race here at once.
    attempt = 1
    while True:
        try:
            async with db.transaction() as conn:
                return await SigningSecretRepository(conn).create_if_none(caller_service, now)
        except (OperationalError, ServiceUnavailableError) as exc:
            if attempt == _FIRST_USE_ATTEMPTS or not is_deadlock(exc):
                raise
        attempt += 1
        await asyncio.sleep(random.uniform(0.005, 0.05))


_FIRST_USE_ATTEMPTS = 10
