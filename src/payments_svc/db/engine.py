"""The async engine and the two ways code uses it: a write transaction or a read."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from ..config import Settings


def open_database(settings: Settings) -> Database:
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite":
        return Database(_create_sqlite_engine(url))
    common = dict(
        pool_size=settings.db_pool_size,
        max_overflow=0,
        pool_recycle=settings.db_pool_recycle_seconds,
        pool_pre_ping=False,
        # Transactions end in COMMIT or ROLLBACK (Database.transaction) and reads run in
        # autocommit: the pool's own ROLLBACK on every check-in would be a wasted round trip.
        pool_reset_on_return=None,
        connect_args={"init_command": "SET time_zone = '+00:00'", "autocommit": False},
    )
    # Reads get their own pool, in autocommit from the connect on: one round trip a query,
    # no isolation level switched back and forth per checkout.
    read_engine = create_async_engine(url, isolation_level="AUTOCOMMIT", **common)

    # SQLAlchemy ends every connection use with the driver's rollback(), which aiomysql
    # sends to the server even in autocommit, where there is nothing to roll back: a
    # wasted round trip per read. This engine's connections only ever run in autocommit.
    read_engine.sync_engine.dialect.do_rollback = _nothing

    return Database(create_async_engine(url, **common), read_engine=read_engine)


def _nothing(_dbapi_connection) -> None:
    return None


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
    single consistent-enough reads without a transaction round trip."""

    def __init__(self, engine: AsyncEngine, *, read_engine: AsyncEngine | None = None):
        self.engine = engine
        self._read_engine = read_engine

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        async with self.engine.connect() as conn:
            try:
                async with conn.begin():
                    yield conn
            except asyncio.CancelledError:
                # Cancelled mid-transaction, the ROLLBACK may not have reached the server:
                # never hand this connection to the next request.
                await conn.invalidate()
                raise

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        if self._read_engine is None:  # SQLite: one engine, reads outside BEGIN IMMEDIATE
            async with self.engine.connect() as conn:
                yield await conn.execution_options(isolation_level="AUTOCOMMIT")
            return
        async with self._read_engine.connect() as conn:
            try:
                yield conn
            except asyncio.CancelledError:
                await conn.invalidate()  # a half-read result would confuse the next reader
                raise

    async def ping(self) -> None:
        async with self.read() as conn:
            await conn.execute(sa.text("SELECT 1"))

    async def close(self) -> None:
        await self.engine.dispose()
        if self._read_engine is not None:
            await self._read_engine.dispose()
