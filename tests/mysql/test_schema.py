"""One schema, three descriptions that agree: the migrations at their head, the tables
(db/tables.py) and, on MariaDB, schema.sql. And `db migrate` / `db current` on every
backend: creating, reporting, refusing a foreign schema, one migrator at a time, and
`serve`'s check that the schema is at this release's head or newer."""

from __future__ import annotations

import asyncio

import pymysql
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from payments_svc.config import ConfigError
from payments_svc.container import check_schema
from payments_svc.db.migrate import MigrationError, head, migrate, revisions, schema_state
from payments_svc.db.tables import metadata

from ..support import REPO, _mysql_connect, base_env, cli, new_database
from .backends import open_db


def _describe(name: str) -> dict:
    """Columns, indexes and foreign keys of every table but Alembic's, as MariaDB reports them."""
    conn = _mysql_connect(name)
    out = {}
    ours = "TABLE_SCHEMA=%s AND TABLE_NAME <> 'alembic_version'"
    with conn.cursor(pymysql.cursors.DictCursor) as cur:
        cur.execute("SELECT TABLE_NAME, COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE, COLUMN_DEFAULT, EXTRA, COLLATION_NAME, ORDINAL_POSITION "
                    f"FROM information_schema.COLUMNS WHERE {ours} ORDER BY TABLE_NAME, ORDINAL_POSITION", (name,))
        out["columns"] = [tuple(r.values()) for r in cur.fetchall()]
        cur.execute("SELECT TABLE_NAME, INDEX_NAME, NON_UNIQUE, SEQ_IN_INDEX, COLUMN_NAME FROM information_schema.STATISTICS "
                    f"WHERE {ours} ORDER BY TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX", (name,))
        out["indexes"] = [tuple(r.values()) for r in cur.fetchall()]
        cur.execute("SELECT k.TABLE_NAME, k.CONSTRAINT_NAME, k.COLUMN_NAME, k.REFERENCED_TABLE_NAME, r.DELETE_RULE "
                    "FROM information_schema.KEY_COLUMN_USAGE k JOIN information_schema.REFERENTIAL_CONSTRAINTS r "
                    "ON r.CONSTRAINT_SCHEMA=k.TABLE_SCHEMA AND r.CONSTRAINT_NAME=k.CONSTRAINT_NAME "
                    "WHERE k.TABLE_SCHEMA=%s ORDER BY 1, 2", (name,))
        out["foreign_keys"] = [tuple(r.values()) for r in cur.fetchall()]
        cur.execute(f"SELECT TABLE_NAME, ENGINE, TABLE_COLLATION FROM information_schema.TABLES WHERE {ours} ORDER BY 1", (name,))
        out["tables"] = [tuple(r.values()) for r in cur.fetchall()]
    conn.close()
    return out


def _run_schema_sql(name: str) -> None:
    lines = [line for line in (REPO / "schema.sql").read_text().splitlines() if not line.strip().startswith("--")]
    conn = _mysql_connect(name)
    with conn.cursor() as cur:
        for statement in "\n".join(lines).split(";"):
            if statement.strip():
                cur.execute(statement)
    conn.close()


@pytest.mark.mysql
async def test_schema_sql_the_migrations_and_the_tables_agree_on_mariadb(tmp_path):
    from_sql, from_migrations, from_tables = (new_database("mysql", tmp_path) for _ in range(3))
    try:
        _run_schema_sql(from_sql.name)
        for target, build in ((from_migrations, migrate), (from_tables, _create_all)):
            db = open_db(target.url)
            await build(db)
            await db.close()
        sql_schema = _describe(from_sql.name)
        assert sql_schema["tables"]
        assert _describe(from_migrations.name) == sql_schema
        assert _describe(from_tables.name) == sql_schema
        collations = {(t, c): coll for t, c, _, _, _, _, coll, _ in sql_schema["columns"]}
        assert collations[("payments", "request_id")] == "utf8mb4_nopad_bin"
        assert collations[("stellar_operations", "memo")] == "utf8mb4_nopad_bin"
    finally:
        for target in (from_sql, from_migrations, from_tables):
            target.drop()


async def _create_all(db) -> None:
    async with db.engine.begin() as conn:
        await conn.run_sync(metadata.create_all)


def schema_differences(conn: sa.Connection) -> list:
    """What Alembic's autogenerate would change to make the database match db/tables.py."""
    context = MigrationContext.configure(conn, opts={"compare_type": True})
    return compare_metadata(context, metadata)


async def test_the_migrations_at_head_make_the_tables_of_tables_py(database):
    db = open_db(database.url)
    try:
        await migrate(db)
        async with db.engine.connect() as conn:
            assert await conn.run_sync(schema_differences) == []
    finally:
        await db.close()


async def test_migrate_creates_then_reports_up_to_date(database):
    db = open_db(database.url)
    try:
        assert (await schema_state(db)).describe() == "empty"
        first = await migrate(db)
        assert first.applied == revisions() and first.stamped is None
        again = await migrate(db)
        assert again.applied == () and again.describe() == f"up to date ({head()})"
        state = await schema_state(db)
        assert state.revision == head() and state.up_to_date
        async with db.read() as conn:
            # What releases before versioned migrations look for, so that they still run here.
            assert (await conn.execute(sa.text("SELECT version FROM schema_migrations"))).scalars().all() == [1]
    finally:
        await db.close()


async def test_migrate_refuses_a_foreign_payments_table(database):
    db = open_db(database.url)
    try:
        async with db.engine.begin() as conn:
            await conn.execute(sa.text("CREATE TABLE payments (id BIGINT PRIMARY KEY)"))
        with pytest.raises(MigrationError, match="did not create"):
            await migrate(db)
        with pytest.raises(ConfigError, match="not a payments-svc schema"):
            await check_schema(db)
    finally:
        await db.close()


async def test_concurrent_migrators_run_one_at_a_time(database):
    migrators = [open_db(database.url) for _ in range(3)]
    try:
        results = await asyncio.gather(*(migrate(db) for db in migrators))
        assert sorted(r.applied for r in results) == [(), (), revisions()]
        assert (await schema_state(migrators[0])).revision == head()
    finally:
        for db in migrators:
            await db.close()


@pytest.mark.parametrize("backend", [pytest.param("mysql", marks=pytest.mark.mysql), "postgresql"])
async def test_a_migrator_that_cannot_get_the_lock_in_time_says_so(backend, tmp_path, monkeypatch):
    import asyncpg

    from payments_svc.db import migrate as migrate_module

    monkeypatch.setattr(migrate_module, "LOCK_WAIT_SECONDS", 1)
    target = new_database(backend, tmp_path)
    db = open_db(target.url)
    holder = None
    try:
        if backend == "mysql":
            holder = _mysql_connect(target.name)
            with holder.cursor() as cur:
                # The lock's name is server-wide: another test's migration may hold it for a moment.
                cur.execute("SELECT GET_LOCK('payments_svc_migrate', 60)")
                assert cur.fetchone()[0] == 1
        else:
            holder = await asyncpg.connect(sa.make_url(target.url).set(drivername="postgresql").render_as_string(False))
            await holder.execute("SELECT pg_advisory_lock($1)", migrate_module._POSTGRESQL_LOCK)
        with pytest.raises(MigrationError, match="another migration holds the lock; try again"):
            await migrate(db)
        assert (await schema_state(db)).describe() == "empty"
    finally:
        if backend == "postgresql" and holder is not None:
            await holder.close()
        elif holder is not None:
            holder.close()
        await db.close()
        target.drop()


async def test_serve_and_jobs_refuse_a_schema_behind_head_and_accept_a_newer_one(database):
    db = open_db(database.url)
    try:
        with pytest.raises(ConfigError, match="database schema is empty: run `payments-svc db migrate`"):
            await check_schema(db)
        await migrate(db)
        await check_schema(db)
        async with db.engine.begin() as conn:
            await conn.execute(sa.text("UPDATE alembic_version SET version_num = :v"), {"v": revisions()[0]})
        with pytest.raises(ConfigError, match=f"is {revisions()[0]} \\(behind this release's head {head()}\\): run"):
            await check_schema(db)
        # A later release migrated first (a rolling upgrade): its revisions are additive.
        async with db.engine.begin() as conn:
            await conn.execute(sa.text("UPDATE alembic_version SET version_num = 'ffff_later_release'"))
        await check_schema(db)
        assert (await migrate(db)).describe().startswith("up to date: ffff_later_release (newer than")
    finally:
        await db.close()


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("mysql", marks=pytest.mark.mysql)])
def test_db_commands(backend, tmp_path):
    target = new_database(backend, tmp_path)
    try:
        env = base_env(target.url)
        assert cli(env, "db", "current").stdout.strip().endswith(": empty; run `payments-svc db migrate`")
        assert cli(env, "db", "migrate").stdout.strip().endswith(f": applied {', '.join(revisions())}")
        assert cli(env, "db", "current").stdout.strip().endswith(f": {head()} (head)")
        assert cli(env, "db", "migrate").stdout.strip().endswith(f": up to date ({head()})")
        assert cli(env, "db", "downgrade", revisions()[-2]).stdout.strip().endswith(f": undid {head()}")
        assert "behind this release's head" in cli(env, "db", "current").stdout
        refused = cli(env, "serve", check=False)
        assert refused.returncode == 1 and "run `payments-svc db migrate`" in refused.stderr
        assert cli(env, "db", "migrate").stdout.strip().endswith(f": applied {head()}")
        unknown = cli(env, "db", "downgrade", "nope", check=False)
        assert unknown.returncode == 1 and "unknown revision 'nope'" in unknown.stderr
    finally:
        target.drop()


def test_db_migrate_sql_needs_the_mysql_server_kind(tmp_path):
    env = base_env("mysql+aiomysql://payments@db.invalid:3306/payments")
    refused = cli(env, "db", "migrate", "--sql", check=False)
    assert refused.returncode == 1 and "--server mariadb or --server mysql" in refused.stderr
    mariadb = cli(env, "db", "migrate", "--sql", "--server", "mariadb").stdout
    mysql8 = cli(env, "db", "migrate", "--sql", "--server", "mysql", "--from", revisions()[0]).stdout
    assert "CREATE TABLE payments" in mariadb and "COLLATE utf8mb4_nopad_bin" in mariadb
    assert "CREATE TABLE payments" not in mysql8 and "COLLATE utf8mb4_0900_bin" in mysql8
    assert cli(env, "db", "migrate", "--server", "mysql", check=False).returncode == 2  # --server goes with --sql
