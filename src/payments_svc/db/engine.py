"""The async engine and the two ways code uses it: a write transaction or a read.

Both are bounded in time and turn the database being away (refused, dropped, hung,
out of connections) into ServiceUnavailableError, which every route, RPC and job
reports as UNAVAILABLE / 503 "retry": the one place database faults are mapped."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import sqlalchemy as sa
import structlog
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from ..config import Settings
from ..domain.errors import ServiceUnavailableError

log = structlog.get_logger("payments.db")

UNAVAILABLE_MESSAGE = "database unavailable; retry"

_MYSQL_DEADLOCK, _POSTGRES_DEADLOCK = 1213, "40P01"
# MySQL/MariaDB errors that say the server cannot serve right now, not that the statement
# is wrong: a retry may well succeed. (Client-side errors, 2000-2999, are all of this kind:
# cannot connect, server gone, connection lost.)
_TRANSIENT_MYSQL_ERRORS = frozenset({
    1040,  # too many connections
    1045,  # access denied: credentials rotated under a running service
    1053,  # server shutdown in progress
    1205,  # lock wait timeout
    _MYSQL_DEADLOCK,  # the transaction was rolled back
    1317,  # query interrupted
    1927,  # connection killed
    1969,  # MariaDB max_statement_time exceeded
    3024,  # MySQL max_execution_time exceeded
    4031,  # disconnected by the server for inactivity
})
# PostgreSQL SQLSTATEs of the same kind: whole classes, and single codes of other classes.
_TRANSIENT_POSTGRES_CLASSES = frozenset({
    "08",  # connection exception
    "53",  # insufficient resources: too many connections, out of memory or disk
    "57",  # operator intervention: statement timeout / cancel, server shutting down or starting
})
_TRANSIENT_POSTGRES_ERRORS = frozenset({
    "28P01", "28000",  # authentication failed: credentials rotated under a running service
    "40001",  # serialization failure; the transaction was rolled back
    _POSTGRES_DEADLOCK,  # the transaction was rolled back
    "55P03",  # lock not available (lock_timeout)
})
# asyncmy on uvloop, when the connection is closed under it while it sets the socket's
# options (the server or the network dropped it at once): raised as is, not as a driver error.
_ASYNCMY_CLOSED_WHILE_CONNECTING = "Transport does not expose socket instance"
_TRANSIENT_SQLITE_ERRORS = ("database is locked", "unable to open database file", "disk i/o error")
# MySQL client capability flags (the protocol's, the same in every driver). FOUND_ROWS:
# an UPDATE reports the rows it matched, not only those it changed (SQLAlchemy's default,
# which passing client_flag replaces). MULTI_STATEMENTS: statements.batch sends a whole
# transaction as one query; every value in it is escaped by the driver, as in any query.
_CLIENT_FOUND_ROWS = 1 << 1
_CLIENT_MULTI_STATEMENTS = 1 << 16
_SERVER_STATUS_IN_TRANS = 1


def open_database(settings: Settings) -> Database:
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite":
        # A local file does not hang like a server: no deadline, SQLite's busy timeout bounds the waits.
        return Database(_create_sqlite_engine(url), statement_timeout=None)
    if url.get_backend_name() == "postgresql":
        # The session in UTC, like MySQL's time_zone below (the columns are naive UTC).
        connect_args = {"server_settings": {"timezone": "UTC"}, "timeout": settings.db_connect_timeout_seconds}
    else:
        connect_args = {"init_command": "SET time_zone = '+00:00'", "autocommit": False,
                        "connect_timeout": settings.db_connect_timeout_seconds,
                        "client_flag": _CLIENT_FOUND_ROWS | _CLIENT_MULTI_STATEMENTS}
    common = dict(
        pool_size=settings.db_pool_size,
        max_overflow=0,
        pool_recycle=settings.db_pool_recycle_seconds,
        pool_pre_ping=False,
        pool_timeout=settings.db_pool_timeout_seconds,
        # Transactions end in COMMIT or ROLLBACK (Database.transaction) and reads run in
        # autocommit: the pool's own ROLLBACK on every check-in would be a wasted round trip.
        pool_reset_on_return=None,
        connect_args=connect_args,
    )
    # Reads get their own pool, in autocommit from the connect on: one round trip a query,
    # no isolation level switched back and forth per checkout.
    read_engine = create_async_engine(url, isolation_level="AUTOCOMMIT", **common)

    # SQLAlchemy ends every connection use with the driver's rollback(), which aiomysql
    # sends to the server even in autocommit, where there is nothing to roll back: a
    # wasted round trip per read. This engine's connections only ever run in autocommit.
    read_engine.sync_engine.dialect.do_rollback = _nothing

    write_engine = create_async_engine(url, **common)
    if url.get_backend_name() == "mysql":
        write_engine.sync_engine.dialect.do_commit = _commit_if_open(write_engine.sync_engine.dialect)
    for engine in (write_engine, read_engine):
        engine.sync_engine.dialect.do_close = _close_or_drop

    return Database(write_engine, read_engine=read_engine,
                    statement_timeout=settings.db_statement_timeout_seconds)


def _nothing(_dbapi_connection) -> None:
    return None


def _commit_if_open(dialect):
    """The MySQL write engine's COMMIT: skipped when the server said the transaction is
    already over, i.e. a statements.batch sent its COMMIT with the transaction's statements
    (one round trip less)."""
    def do_commit(dbapi_connection) -> None:
        status = dialect.get_driver_connection(dbapi_connection).server_status
        if status is None or status & _SERVER_STATUS_IN_TRANS:
            dbapi_connection.commit()
    return do_commit


def _close_or_drop(dbapi_connection) -> None:
    """Closes politely (COM_QUIT), or just drops a connection the server already reset
    (a pool emptied after an outage would otherwise log a traceback per connection)."""
    try:
        dbapi_connection.close()
    except Exception:
        dbapi_connection.terminate()


def _create_sqlite_engine(url) -> AsyncEngine:
    if url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(url, connect_args={"timeout": 30})

    @sa.event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection, _record):
        # Let SQLAlchemy, not the driver, decide when transactions start, so that
        # writes can take the write lock up front (BEGIN IMMEDIATE) and never
        # deadlock upgrading a read lock when several processes share the file.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @sa.event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn):
        if conn.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


class Database:
    """Owns the engines. `transaction()` for writes (all or nothing), `read()` for
    single consistent-enough reads without a transaction round trip.

    Each is one step bounded by `statement_timeout` (from asking the pool for a
    connection to the last row; None: unbounded). A step that finds the database away
    raises ServiceUnavailableError; the first such step of an outage logs the cause
    once (`database_unavailable`), the first step that succeeds again logs its end and
    renews the pools. A database never reached is no outage: the command starting up
    reports it itself, on one line."""

    def __init__(self, engine: AsyncEngine, *, read_engine: AsyncEngine | None = None,
                 statement_timeout: float | None = None):
        self.engine = engine
        self._read_engine = read_engine
        self._statement_timeout = statement_timeout
        self._outage_since: float | None = None  # time.monotonic() of the outage's first failure
        self._outage_failures = 0
        self._reached = False

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @asynccontextmanager
    async def transaction(self, *, isolation_level: str | None = None) -> AsyncIterator[AsyncConnection]:
        try:
            async with asyncio.timeout(self._statement_timeout), self.engine.connect() as conn:
                try:
                    if isolation_level is not None:
                        conn = await conn.execution_options(isolation_level=isolation_level)
                    async with conn.begin():
                        try:
                            yield conn
                        except asyncio.CancelledError:
                            # Cancelled mid-transaction (or out of time), the ROLLBACK may not reach
                            # the server or its answer may never come: drop the connection instead.
                            await conn.invalidate()
                            raise
                except Exception as exc:
                    await _drop_if_broken(conn, exc)
                    raise
        except Exception as exc:
            unavailable = self._unavailable(exc)
            if unavailable is None:
                raise
            raise unavailable from exc
        if self._outage_since is not None:
            await self._end_outage()
        self._reached = True

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        try:
            async with asyncio.timeout(self._statement_timeout), (self._read_engine or self.engine).connect() as conn:
                try:
                    if self._read_engine is None:  # SQLite: one engine, reads outside BEGIN IMMEDIATE
                        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                    yield conn
                except asyncio.CancelledError:
                    await conn.invalidate()  # a half-read result would confuse the next reader
                    raise
                except Exception as exc:
                    await _drop_if_broken(conn, exc)
                    raise
        except Exception as exc:
            unavailable = self._unavailable(exc)
            if unavailable is None:
                raise
            raise unavailable from exc
        if self._outage_since is not None:
            await self._end_outage()
        self._reached = True

    async def ping(self, timeout: float | None = None) -> None:
        """SELECT 1 within `timeout` (default: the statement timeout). Raises the driver's
        error, or TimeoutError, as it is: start-up and readiness report the cause."""
        engine = self._read_engine or self.engine
        async with asyncio.timeout(timeout or self._statement_timeout), engine.connect() as conn:
            try:
                await conn.execute(sa.text("SELECT 1"))
            except asyncio.CancelledError:
                await conn.invalidate()
                raise

    def _unavailable(self, exc: Exception) -> ServiceUnavailableError | None:
        """The error to raise instead of `exc` when it means the database is away, else None."""
        if not database_away(exc):
            return None
        self._outage_failures += 1
        if self._outage_since is None:
            self._outage_since = time.monotonic()
            if self._reached:
                log.error("database_unavailable", error=describe(exc, self._statement_timeout),
                          message="requests and jobs answer UNAVAILABLE (503) until the database is back")
        return ServiceUnavailableError(UNAVAILABLE_MESSAGE)

    async def _end_outage(self) -> None:
        """The first step to succeed after an outage. Pooled connections that sat idle
        through it may be dead without knowing it: replace them all now, rather than let
        each fail the step that picks it up (after a job claimed its rows, say)."""
        if self._reached:
            log.warning("database_available", outage_seconds=round(time.monotonic() - self._outage_since, 3),
                        failed_steps=self._outage_failures)
        self._outage_since, self._outage_failures = None, 0
        for engine in (self.engine, self._read_engine):
            if engine is not None:
                await engine.dispose()  # checked-out connections are dropped when they come back

    async def close(self) -> None:
        await self.engine.dispose()
        if self._read_engine is not None:
            await self._read_engine.dispose()


@asynccontextmanager
async def conflict_scope(conn: AsyncConnection) -> AsyncIterator[None]:
    """Wraps an INSERT whose unique-key conflict the caller handles and then goes on in
    the same transaction. PostgreSQL aborts the whole transaction on any failed
    statement: there, a savepoint keeps the rest of it usable. MySQL and SQLite fail
    only the statement."""
    if conn.dialect.name != "postgresql":
        yield
        return
    async with conn.begin_nested():
        yield


async def _drop_if_broken(conn: AsyncConnection, exc: Exception) -> None:
    """Never hand a connection the database dropped to the next user. SQLAlchemy does this
    itself for errors of its statements, but not for those of its own set-up on a pooled
    connection (the isolation level), which would otherwise fail every later checkout."""
    if database_away(exc) and not conn.invalidated:
        await conn.invalidate()


def is_deadlock(exc: BaseException | None) -> bool:
    """Whether `exc`, or an error that caused it, is the database rolling a transaction
    back to break a deadlock (MySQL 1213, PostgreSQL 40P01): the whole transaction may be
    retried at once."""
    while exc is not None:
        orig = getattr(exc, "orig", exc)  # SQLAlchemy's wrapper, or the driver's own error
        if getattr(orig, "sqlstate", None) == _POSTGRES_DEADLOCK or getattr(orig, "args", (None,))[:1] == (_MYSQL_DEADLOCK,):
            return True
        exc = exc.__cause__
    return False


def database_away(exc: BaseException) -> bool:
    """Whether `exc` says the database cannot serve now (unreachable, gone, hung, out of
    connections, a lock timeout), as opposed to a statement it refused. Driver errors are
    read by their PEP 249 class, wrapped by SQLAlchemy or not."""
    if isinstance(exc, TimeoutError | sa.exc.TimeoutError):  # a deadline, or no free pooled connection
        return True
    if isinstance(exc, RuntimeError) and str(exc) == _ASYNCMY_CLOSED_WHILE_CONNECTING:
        return True
    if isinstance(exc, sa.exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        exc = exc.orig
    if type(exc).__name__ == "InvalidCachedStatementError":
        # PostgreSQL: a migration changed a table under this connection's prepared
        # statements. SQLAlchemy has dropped them; the retry prepares them afresh.
        return True
    sqlstate = getattr(exc, "sqlstate", None)  # PostgreSQL (asyncpg) errors carry their SQLSTATE
    if isinstance(sqlstate, str):
        return sqlstate[:2] in _TRANSIENT_POSTGRES_CLASSES or sqlstate in _TRANSIENT_POSTGRES_ERRORS
    kind = type(exc).__name__
    if kind == "InterfaceError":  # the connection is closed or unusable
        return True
    if kind != "OperationalError":
        return isinstance(exc, OSError)
    code = exc.args[0] if exc.args else None
    if isinstance(code, int):
        return 2000 <= code < 3000 or code in _TRANSIENT_MYSQL_ERRORS
    return any(text in str(exc).lower() for text in _TRANSIENT_SQLITE_ERRORS)


def describe(exc: BaseException, timeout: float | None) -> str:
    """The cause, without the statement or its parameters."""
    if isinstance(exc, TimeoutError) and timeout is not None:
        return f"no answer within {timeout:g} s (PAYMENTS_DB_STATEMENT_TIMEOUT_SECONDS)"
    if isinstance(exc, sa.exc.TimeoutError):
        return "every pooled connection stayed busy (PAYMENTS_DB_POOL_TIMEOUT_SECONDS, MYSQL_MAX_OPEN_CONNS)"
    if isinstance(exc, sa.exc.DBAPIError) and exc.orig is not None:
        exc = exc.orig
    return f"{type(exc).__name__}: {exc}"
