"""schema.sql and the SQLAlchemy tables describe the same MariaDB schema, and
`db migrate` creates it on both backends, idempotently."""

from __future__ import annotations

import pymysql
import pytest

from payments_svc.config import load_settings
from payments_svc.db.engine import open_database
from payments_svc.db.migrate import CURRENT_VERSION, MigrationError, current_version, migrate

from ..support import REPO, _mysql_connect, base_env, new_database

pytestmark = pytest.mark.mysql


def _describe(name: str) -> dict:
    """Columns, indexes and foreign keys of every table, as MariaDB reports them."""
    conn = _mysql_connect(name)
    out = {}
    with conn.cursor(pymysql.cursors.DictCursor) as cur:
        cur.execute("SELECT TABLE_NAME, COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE, COLUMN_DEFAULT, EXTRA, COLLATION_NAME, ORDINAL_POSITION "
                    "FROM information_schema.COLUMNS WHERE TABLE_SCHEMA=%s ORDER BY TABLE_NAME, ORDINAL_POSITION", (name,))
        out["columns"] = [tuple(r.values()) for r in cur.fetchall()]
        cur.execute("SELECT TABLE_NAME, INDEX_NAME, NON_UNIQUE, SEQ_IN_INDEX, COLUMN_NAME FROM information_schema.STATISTICS "
                    "WHERE TABLE_SCHEMA=%s ORDER BY TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX", (name,))
        out["indexes"] = [tuple(r.values()) for r in cur.fetchall()]
        cur.execute("SELECT k.TABLE_NAME, k.CONSTRAINT_NAME, k.COLUMN_NAME, k.REFERENCED_TABLE_NAME, r.DELETE_RULE "
                    "FROM information_schema.KEY_COLUMN_USAGE k JOIN information_schema.REFERENTIAL_CONSTRAINTS r "
                    "ON r.CONSTRAINT_SCHEMA=k.TABLE_SCHEMA AND r.CONSTRAINT_NAME=k.CONSTRAINT_NAME "
                    "WHERE k.TABLE_SCHEMA=%s ORDER BY 1, 2", (name,))
        out["foreign_keys"] = [tuple(r.values()) for r in cur.fetchall()]
        cur.execute("SELECT TABLE_NAME, ENGINE, TABLE_COLLATION FROM information_schema.TABLES WHERE TABLE_SCHEMA=%s ORDER BY 1", (name,))
        out["tables"] = [tuple(r.values()) for r in cur.fetchall()]
    conn.close()
    return out


async def test_schema_sql_matches_the_sqlalchemy_tables(tmp_path):
    from_sql = new_database("mysql", tmp_path)
    from_tables = new_database("mysql", tmp_path)
    try:
        conn = _mysql_connect(from_sql.name)
        with conn.cursor() as cur:
            for statement in (REPO / "schema.sql").read_text().split(";"):
                lines = [line for line in statement.splitlines() if not line.strip().startswith("--")]
                if "".join(lines).strip():
                    cur.execute("\n".join(lines))
        conn.close()
        db = open_database(load_settings(base_env(from_tables.url)))
        await migrate(db)
        await db.close()
        sql_schema, table_schema = _describe(from_sql.name), _describe(from_tables.name)
        assert sql_schema["tables"] and sql_schema == table_schema
    finally:
        from_sql.drop()
        from_tables.drop()


@pytest.mark.parametrize("backend", ["sqlite", "mysql"])
async def test_migrate_creates_then_reports_up_to_date(backend, tmp_path):
    target = new_database(backend, tmp_path)
    db = open_database(load_settings(base_env(target.url)))
    try:
        assert await current_version(db) is None
        assert await migrate(db) == list(range(1, CURRENT_VERSION + 1))
        assert await migrate(db) == []
        assert await current_version(db) == CURRENT_VERSION
    finally:
        await db.close()
        target.drop()


async def test_migrate_refuses_a_foreign_payments_table(tmp_path):
    target = new_database("mysql", tmp_path)
    conn = _mysql_connect(target.name)
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE payments (id BIGINT PRIMARY KEY)")
    conn.close()
    db = open_database(load_settings(base_env(target.url)))
    try:
        with pytest.raises(MigrationError, match="did not create"):
            await migrate(db)
    finally:
        await db.close()
        target.drop()
