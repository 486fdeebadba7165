"""The migrations on databases with rows in every table, on SQLite, MariaDB and
PostgreSQL: each revision from the baseline to head keeps every row and value; a
database made by the releases before versioned migrations is upgraded in place; 0002
can be undone; and `db migrate --sql`, applied by hand, does what `db migrate` does."""

from __future__ import annotations

from datetime import datetime

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from payments_svc.db.migrate import MIGRATIONS_DIR, _scripts, head, migrate, migration_sql, revisions, schema_state
from payments_svc.db.tables import payments

from ..support import new_database
from .backends import apply_sql, open_db
from .test_schema import _describe, schema_differences

BASELINE = _scripts().get_revision(revisions()[0]).module
MOMENT = datetime(2026, 3, 4, 5, 6, 7, 890123)


async def upgrade_to(db, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))

    def run(conn: sa.Connection) -> None:
        config.attributes["connection"] = conn
        command.upgrade(config, revision)

    async with db.engine.begin() as conn:
        await conn.run_sync(run)
    # PostgreSQL: pooled connections hold statement plans of the old tables (in service, the
    # first use of each answers 503 "retry", engine.py); these tests read on at once.
    await db.close()


async def create_as_before_versioned_migrations(db) -> None:
    """What `db migrate` of the releases before versioned migrations did on an empty database."""
    async with db.engine.begin() as conn:
        await conn.run_sync(BASELINE.baseline.create_all)
        await conn.execute(BASELINE.schema_migrations.insert().values(version=1, description="initial schema", applied_at=MOMENT))


def _value(table: sa.Table, column: sa.Column):
    """A value for every column of the baseline, non-ASCII where text may be."""
    if column.name == "id" or column.foreign_keys:
        return 1
    kind = column.type
    if isinstance(kind, sa.Boolean):
        return True
    if isinstance(kind, sa.DateTime):
        return MOMENT
    if isinstance(kind, sa.Integer):
        return 7
    if isinstance(kind, sa.CHAR):
        return ("0123456789abcdef" * 4)[: kind.length]
    text = f"{table.name}.{column.name} é✓"
    return text[: kind.length] if getattr(kind, "length", None) else text


def baseline_rows() -> dict[str, dict]:
    return {
        table.name: {column.name: _value(table, column) for column in table.columns}
        for table in BASELINE.baseline.sorted_tables
        if table.name != "schema_migrations"  # the baseline's own record
    }


async def fill(db) -> dict[str, dict]:
    rows = baseline_rows()
    async with db.engine.begin() as conn:
        for table in BASELINE.baseline.sorted_tables:
            if table.name in rows:
                await conn.execute(table.insert().values(rows[table.name]))
    return rows


async def read(db) -> dict[str, dict]:
    async with db.read() as conn:
        return {
            table.name: dict((await conn.execute(sa.select(table))).one()._mapping)
            for table in BASELINE.baseline.sorted_tables
            if table.name != "schema_migrations"
        }


async def test_every_migration_keeps_the_rows_of_every_table(database):
    db = open_db(database.url)
    try:
        await upgrade_to(db, revisions()[0])
        rows = await fill(db)
        assert await read(db) == rows
        for revision in revisions()[1:]:
            await upgrade_to(db, revision)
            assert (await schema_state(db)).revision == revision
            assert await read(db) == rows, f"after {revision}"
        assert revisions()[-1] == head()
        # The migrated unique key now takes a request_id that differs only in a trailing space.
        twin = dict(rows["payments"], id=2, request_id=rows["payments"]["request_id"] + " ",
                    provider_callback_hash=rows["payments"]["provider_callback_hash"] + " ")
        async with db.engine.begin() as conn:
            await conn.execute(payments.insert().values(twin))
        async with db.read() as conn:
            assert (await conn.execute(sa.select(sa.func.count()).select_from(payments))).scalar() == 2
    finally:
        await db.close()


async def test_a_database_from_before_versioned_migrations_is_upgraded_in_place(database, tmp_path):
    db = open_db(database.url)
    try:
        await create_as_before_versioned_migrations(db)
        rows = await fill(db)
        state = await schema_state(db)
        assert state.pre_alembic_version == 1 and not state.up_to_date
        migration = await migrate(db)
        assert migration.stamped == revisions()[0] and migration.applied == revisions()[1:]
        assert migration.describe() == f"recognised schema version 1, stamped {revisions()[0]}; applied {', '.join(revisions()[1:])}"
        assert (await schema_state(db)).revision == head()
        assert await read(db) == rows
        async with db.read() as conn:
            assert await conn.run_sync(schema_differences) == []
            legacy = (await conn.execute(sa.select(BASELINE.schema_migrations))).all()
        assert [(r.version, r.applied_at) for r in legacy] == [(1, MOMENT)]
        if database.backend == "mysql":  # the collations too, as a fresh database gets them
            fresh = new_database("mysql", tmp_path)
            try:
                fresh_db = open_db(fresh.url)
                await migrate(fresh_db)
                await fresh_db.close()
                assert _describe(database.name) == _describe(fresh.name)
            finally:
                fresh.drop()
    finally:
        await db.close()


async def test_byte_exact_keys_can_be_undone(database):
    from payments_svc.db.migrate import downgrade

    db = open_db(database.url)
    try:
        await upgrade_to(db, revisions()[0])
        rows = await fill(db)
        await migrate(db)
        later = tuple(revisions()[1:])  # 0002 and whatever came after it
        assert await downgrade(db, "0001") == later[::-1]
        assert (await schema_state(db)).revision == "0001"
        assert await read(db) == rows
        if database.backend == "mysql":
            collations = {c[:2]: c[6] for c in _describe(database.name)["columns"]}
            assert collations[("payments", "request_id")] == "utf8mb4_bin"
        assert (await migrate(db)).applied == later
        assert await read(db) == rows
    finally:
        await db.close()


def _server(database) -> str | None:
    return "mariadb" if database.backend == "mysql" else None


async def test_the_sql_for_an_empty_database_applied_by_hand(database):
    apply_sql(database, migration_sql(database.url, server=_server(database)))
    db = open_db(database.url)
    try:
        assert (await schema_state(db)).revision == head()
        async with db.read() as conn:
            assert await conn.run_sync(schema_differences) == []
            assert (await conn.execute(sa.text("SELECT version FROM schema_migrations"))).scalars().all() == [1]
    finally:
        await db.close()


@pytest.mark.parametrize("stamped", [False, True], ids=["before-versioned-migrations", "stamped-at-baseline"])
async def test_the_sql_from_the_baseline_applied_by_hand(database, stamped):
    db = open_db(database.url)
    try:
        if stamped:
            await upgrade_to(db, revisions()[0])
        else:
            await create_as_before_versioned_migrations(db)
        rows = await fill(db)
        apply_sql(database, migration_sql(database.url, from_revision=revisions()[0], server=_server(database)))
        assert (await schema_state(db)).revision == head()
        assert await read(db) == rows
        async with db.read() as conn:
            assert await conn.run_sync(schema_differences) == []
    finally:
        await db.close()


def test_the_migrations_ship_in_the_package():
    """A wheel (and so the Docker image) carries every file of the migrations directory."""
    import fnmatch
    import tomllib

    from ..support import REPO

    package = REPO / "src" / "payments_svc"
    globs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["payments_svc"]
    files = [p.relative_to(package).as_posix() for p in MIGRATIONS_DIR.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    assert files and [f for f in files if not any(fnmatch.fnmatch(f, g) for g in globs)] == []
