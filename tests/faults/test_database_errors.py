"""Which database errors mean "the database is away, retry" (503 / UNAVAILABLE) and
which are the statement's own (left alone), and the timeout settings."""

from __future__ import annotations

import sqlite3

import pymysql
import pytest
import sqlalchemy as sa

from payments_svc.config import ConfigError, load_settings
from payments_svc.db.engine import database_away


def _wrapped(error: Exception) -> sa.exc.DBAPIError:
    """As SQLAlchemy raises it for its driver."""
    base = pymysql.err.Error if isinstance(error, pymysql.err.Error) else sqlite3.Error
    return sa.exc.DBAPIError.instance("SELECT 1", {}, error, base)


@pytest.mark.parametrize("error", [
    pymysql.err.OperationalError(2003, "Can't connect to MySQL server on '127.0.0.1'"),
    pymysql.err.OperationalError(2013, "Lost connection to MySQL server during query"),
    pymysql.err.OperationalError(1040, "Too many connections"),
    pymysql.err.OperationalError(1205, "Lock wait timeout exceeded; try restarting transaction"),
    pymysql.err.OperationalError(1213, "Deadlock found when trying to get lock"),
    pymysql.err.OperationalError(1969, "Query execution was interrupted (max_statement_time exceeded)"),
    pymysql.err.InterfaceError(0, "Not connected"),
    sqlite3.OperationalError("database is locked"),
])
def test_the_database_being_away_is_recognised_wrapped_or_raw(error):
    assert database_away(_wrapped(error)) and database_away(error)


@pytest.mark.parametrize("error", [
    pymysql.err.ProgrammingError(1146, "Table 'payments.nope' doesn't exist"),
    pymysql.err.IntegrityError(1062, "Duplicate entry 'x' for key 'uq'"),
    pymysql.err.OperationalError(1054, "Unknown column 'nope' in 'field list'"),
    pymysql.err.DataError(1406, "Data too long for column"),
    sqlite3.OperationalError("no such table: nope"),
])
def test_a_statement_refused_is_not_an_outage(error):
    assert not database_away(_wrapped(error)) and not database_away(error)


def test_timeouts_and_connection_loss_are_outages():
    assert database_away(TimeoutError()) and database_away(sa.exc.TimeoutError("QueuePool limit"))
    assert database_away(ConnectionResetError()) and not database_away(ValueError("x"))
    # asyncmy on uvloop when the connection is dropped while it is being set up
    assert database_away(RuntimeError("Transport does not expose socket instance"))
    assert not database_away(RuntimeError("some bug"))


def test_timeout_settings():
    defaults = load_settings({})
    assert (defaults.db_connect_timeout_seconds, defaults.db_pool_timeout_seconds, defaults.db_statement_timeout_seconds,
            defaults.readiness_timeout_seconds) == (5, 5, 10, 1.5)
    tuned = load_settings({"PAYMENTS_DB_STATEMENT_TIMEOUT_SECONDS": "0.5", "PAYMENTS_READINESS_TIMEOUT_SECONDS": "1"})
    assert (tuned.db_statement_timeout_seconds, tuned.readiness_timeout_seconds) == (0.5, 1)
    for name in ("PAYMENTS_DB_CONNECT_TIMEOUT_SECONDS", "PAYMENTS_DB_POOL_TIMEOUT_SECONDS",
                 "PAYMENTS_DB_STATEMENT_TIMEOUT_SECONDS", "PAYMENTS_READINESS_TIMEOUT_SECONDS"):
        for bad in ("0", "-1", "soon"):
            with pytest.raises(ConfigError, match=name):
                load_settings({name: bad})


async def test_postgresql_errors_are_read_by_their_sqlstate(tmp_path):
    """asyncpg's errors as SQLAlchemy raises them: a cancelled statement (57014, what
    statement_timeout raises) is an outage, a duplicate key (23505) the statement's own."""
    from payments_svc.db.engine import open_database

    from ..support import base_env, new_database

    database = new_database("postgresql", tmp_path)
    db = open_database(load_settings(base_env(database.url), base_dir=tmp_path))
    try:
        async with db.engine.connect() as conn:
            await conn.execute(sa.text("CREATE TEMPORARY TABLE t (k int PRIMARY KEY)"))
            await conn.execute(sa.text("INSERT INTO t VALUES (1)"))
            with pytest.raises(sa.exc.DBAPIError) as duplicate:
                await conn.execute(sa.text("INSERT INTO t VALUES (1)"))
            await conn.rollback()
            await conn.execute(sa.text("SET statement_timeout = 10"))
            with pytest.raises(sa.exc.DBAPIError) as cancelled:
                await conn.execute(sa.text("SELECT pg_sleep(1)"))
        assert duplicate.value.orig.sqlstate == "23505" and not database_away(duplicate.value)
        assert cancelled.value.orig.sqlstate == "57014" and database_away(cancelled.value)
    finally:
        await db.close()
        database.drop()
