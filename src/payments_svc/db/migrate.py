"""`payments-svc db migrate`: create the schema on a fresh database, or apply the
upgrades a database has not had yet. Versions are recorded in schema_migrations.

A fresh database gets the current tables (tables.py) in one step and is stamped
with every version; upgrades for older databases are listed in UPGRADES.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from ..clock import utcnow
from .engine import Database
from .tables import metadata, schema_migrations


@dataclass(frozen=True)
class Upgrade:
    version: int
    description: str
    apply: Callable[[AsyncConnection], Awaitable[None]] | None  # None: part of the baseline


UPGRADES: tuple[Upgrade, ...] = (Upgrade(1, "initial schema", None),)
CURRENT_VERSION = UPGRADES[-1].version


class MigrationError(Exception):
    pass


async def migrate(db: Database) -> list[int]:
    """Brings the schema to CURRENT_VERSION; returns the versions applied now."""
    async with db.engine.connect() as conn:
        if db.dialect == "mysql":
            # DDL is not transactional in MySQL: one migrator at a time.
            got = (await conn.execute(sa.text("SELECT GET_LOCK('payments_svc_migrate', 60)"))).scalar()
            if got != 1:
                raise MigrationError("another migration holds the lock; try again")
        try:
            return await _migrate(conn)
        finally:
            if db.dialect == "mysql":
                await conn.execute(sa.text("SELECT RELEASE_LOCK('payments_svc_migrate')"))
            await conn.commit()


async def _migrate(conn: AsyncConnection) -> list[int]:
    existing = await conn.run_sync(lambda sync: set(sa.inspect(sync).get_table_names()))
    if "schema_migrations" not in existing:
        if "payments" in existing:
            raise MigrationError(
                "this database has a payments table that payments-svc did not create "
                "(an ms-go-payments schema?); migrate into a new database instead"
            )
        await conn.run_sync(metadata.create_all)
        await _stamp(conn, UPGRADES)
        return [u.version for u in UPGRADES]
    applied = set((await conn.execute(sa.select(schema_migrations.c.version))).scalars())
    pending = [u for u in UPGRADES if u.version not in applied]
    for upgrade in pending:
        if upgrade.apply is not None:
            await upgrade.apply(conn)
        await _stamp(conn, [upgrade])
    return [u.version for u in pending]


async def _stamp(conn: AsyncConnection, upgrades) -> None:
    now = utcnow()
    for upgrade in upgrades:
        await conn.execute(
            schema_migrations.insert().values(version=upgrade.version, description=upgrade.description, applied_at=now)
        )
    await conn.commit()


async def current_version(db: Database) -> int | None:
    """The highest applied version, or None for an empty database."""
    async with db.read() as conn:
        tables = await conn.run_sync(lambda sync: set(sa.inspect(sync).get_table_names()))
        if "schema_migrations" not in tables:
            return None
        return (await conn.execute(sa.select(sa.func.max(schema_migrations.c.version)))).scalar()
