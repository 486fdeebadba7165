"""The data path of the repositories: SQLAlchemy statements compiled once per dialect
into the driver's own SQL and parameter order, executed directly on the driver
connection under the SQLAlchemy connection `Database` hands out, rows as plain tuples
read by position.

Why: per statement, SQLAlchemy's execution (compiled cache look-up, parameter
processing, result metadata, the greenlet bridge to the async driver) cost about as much
CPU as the driver itself on the hot paths (bench/README.md). Tables, migrations and the
modules that are not on a hot path keep using SQLAlchemy's execution.

Transactions stay SQLAlchemy's: the statements run inside the transaction (or the
autocommit read) the AsyncConnection is in, which commits or rolls back as before. On
MySQL/MariaDB a `batch` may end in its own COMMIT (one round trip for a whole
transaction); the write engine then skips the COMMIT it would send after it
(engine.py `_commit_if_open`). Driver errors come out as the driver raises them:
`engine.database_away` reads them unwrapped, `is_integrity_error` tells a constraint
violation."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import ClauseElement

Row = Sequence[Any]
MYSQL_DRIVERS = frozenset({"asyncmy", "aiomysql"})
_SERVER_STATUS_IN_TRANS = 1  # MySQL protocol: a transaction is open


@dataclass(frozen=True, slots=True)
class Compiled:
    """One statement for one dialect: the driver's SQL, the bind names in placeholder
    order with their default values, and the type conversions SQLAlchemy would apply
    (SQLite stores datetimes as text, for one)."""

    sql: str
    names: tuple[str, ...]
    defaults: tuple[Any, ...]
    bind_processors: tuple[tuple[int, Callable[[Any], Any]], ...]
    result_processors: tuple[tuple[int, Callable[[Any], Any]], ...]

    def args(self, params: dict[str, Any]) -> list[Any]:
        get = params.get
        args = [get(name, default) for name, default in zip(self.names, self.defaults, strict=True)]
        for i, process in self.bind_processors:
            if args[i] is not None:
                args[i] = process(args[i])
        return args

    def rows(self, rows) -> list[Row]:
        if not self.result_processors:
            return rows
        out = []
        for row in rows:
            values = list(row)
            for i, process in self.result_processors:
                values[i] = process(values[i])
            out.append(values)
        return out


class Statement:
    """A statement compiled on first use per dialect (and driver: placeholders differ).
    `per_dialect` gives a dialect its own form of the statement, e.g. MySQL's
    `INSERT … SELECT … WHERE ROW_COUNT() = 1` in a batch."""

    __slots__ = ("clause", "per_dialect", "_compiled")

    def __init__(self, clause: ClauseElement, **per_dialect: ClauseElement):
        self.clause = clause
        self.per_dialect = per_dialect
        self._compiled: dict[tuple[str, str], Compiled] = {}

    def compiled(self, dialect: Dialect) -> Compiled:
        key = (dialect.name, dialect.driver)
        found = self._compiled.get(key)
        if found is None:
            found = self._compiled[key] = compile_for(self.per_dialect.get(dialect.name, self.clause), dialect)
        return found


def compile_for(clause: ClauseElement, dialect: Dialect) -> Compiled:
    compiled = clause.compile(dialect=dialect)
    names = tuple(compiled.positiontup or ())
    values = compiled.params
    binds = compiled.binds
    bind_processors = []
    for i, name in enumerate(names):
        process = binds[name].type.dialect_impl(dialect).bind_processor(dialect)
        if process is not None:
            bind_processors.append((i, process))
    result_processors = []
    for i, column in enumerate(clause.exported_columns):  # a SELECT's columns, a DML statement's RETURNING
        process = column.type.dialect_impl(dialect).result_processor(dialect, None)
        if process is not None:
            result_processors.append((i, process))
    return Compiled(compiled.string, names, tuple(values.get(n) for n in names), tuple(bind_processors),
                    tuple(result_processors))


def _driver(conn: AsyncConnection):
    """The driver's own connection under `conn` (no I/O)."""
    return conn.sync_connection.connection.driver_connection


async def _pg_driver(conn: AsyncConnection):
    """asyncpg's connection, inside the transaction SQLAlchemy's adapter starts lazily on
    its first statement: started here when ours comes first (autocommit reads have none)."""
    fairy = conn.sync_connection.connection
    adapter = fairy.dbapi_connection
    if adapter._transaction is None and not adapter.autocommit:
        await adapter._start_transaction()
    return fairy.driver_connection


async def _mysql_cursor(conn: AsyncConnection, compiled: Compiled, params: dict[str, Any]):
    cursor = await _driver(conn).cursor()
    await cursor.execute(compiled.sql, compiled.args(params))
    return cursor


async def fetch_all(conn: AsyncConnection, stmt: Statement, params: dict[str, Any]) -> list[Row]:
    dialect = conn.dialect
    compiled = stmt.compiled(dialect)
    driver = dialect.driver
    if driver in MYSQL_DRIVERS:
        rows = await (await _mysql_cursor(conn, compiled, params)).fetchall()
    elif driver == "asyncpg":
        rows = await (await _pg_driver(conn)).fetch(compiled.sql, *compiled.args(params))
    else:
        rows = await _driver(conn).execute_fetchall(compiled.sql, compiled.args(params))
    return compiled.rows(rows)


async def fetch_one(conn: AsyncConnection, stmt: Statement, params: dict[str, Any]) -> Row | None:
    rows = await fetch_all(conn, stmt, params)
    return rows[0] if rows else None


async def execute(conn: AsyncConnection, stmt: Statement, params: dict[str, Any]) -> int:
    """Runs a statement that returns no rows; the number of rows it matched."""
    dialect = conn.dialect
    compiled = stmt.compiled(dialect)
    driver = dialect.driver
    if driver in MYSQL_DRIVERS:
        return (await _mysql_cursor(conn, compiled, params)).rowcount
    if driver == "asyncpg":
        status = await (await _pg_driver(conn)).execute(compiled.sql, *compiled.args(params))
        return int(status.rsplit(" ", 1)[1])  # "UPDATE 1", "INSERT 0 1"
    cursor = await _driver(conn).execute(compiled.sql, compiled.args(params))
    count = cursor.rowcount
    await cursor.close()
    return count


async def insert(conn: AsyncConnection, stmt: Statement, params: dict[str, Any]) -> int:
    """Runs an INSERT of one row; the row's new id. On PostgreSQL the statement must
    return it (`.returning(table.c.id)`), elsewhere the driver reports it."""
    dialect = conn.dialect
    compiled = stmt.compiled(dialect)
    driver = dialect.driver
    if driver in MYSQL_DRIVERS:
        return (await _mysql_cursor(conn, compiled, params)).lastrowid
    if driver == "asyncpg":
        return await (await _pg_driver(conn)).fetchval(compiled.sql, *compiled.args(params))
    cursor = await _driver(conn).execute(compiled.sql, compiled.args(params))
    new_id = cursor.lastrowid
    await cursor.close()
    return new_id


async def batch(conn: AsyncConnection, steps: Sequence[tuple[Statement, dict[str, Any]]], *,
                commit: bool = False) -> tuple[list[int], list[int]]:
    """Runs statements in order that each go on only if the one before matched exactly
    one row (the caller's conditional UPDATE, then the rows that record it): the
    statements after the first must be written for that (MySQL: their own form that
    checks `ROW_COUNT() = 1`). Returns each statement's row count (0: did not run) and,
    on MySQL, each one's new row id (0 where it inserted none; elsewhere no ids: []).

    MySQL/MariaDB: one round trip for all of them, and with `commit` the transaction's
    COMMIT too: the caller's transaction is over when this returns, so nothing else may
    follow in it. Elsewhere the statements run one by one and `commit` is left to the
    transaction."""
    dialect = conn.dialect
    if dialect.driver not in MYSQL_DRIVERS:
        counts: list[int] = []
        for stmt, params in steps:
            counts.append(0 if counts and counts[-1] != 1 else await execute(conn, stmt, params))
        return counts, []
    driver = _driver(conn)
    cursor = await driver.cursor()
    sql, args = [], []
    for stmt, params in steps:
        compiled = stmt.compiled(dialect)
        sql.append(compiled.sql)
        args.extend(compiled.args(params))
    if commit:
        sql.append("COMMIT")
    await cursor.execute(";\n".join(sql), args)
    counts, ids = [cursor.rowcount], [cursor.lastrowid]
    while await cursor.nextset():
        counts.append(cursor.rowcount)
        ids.append(cursor.lastrowid)
    if commit:
        # The COMMIT answered "no transaction": asyncmy keeps its previous server status
        # when the new one is 0, so say it here (engine._commit_if_open reads it).
        driver.server_status &= ~_SERVER_STATUS_IN_TRANS
    return counts[:len(steps)], ids[:len(steps)]


def is_integrity_error(exc: BaseException) -> bool:
    """Whether a driver error is a constraint violation (unique key, foreign key, not null)."""
    sqlstate = getattr(exc, "sqlstate", None)  # asyncpg
    if isinstance(sqlstate, str):
        return sqlstate.startswith("23")
    return type(exc).__name__ == "IntegrityError"  # asyncmy, aiomysql (PyMySQL), sqlite3
