"""`payments-svc db migrate | current | downgrade`: Alembic owns the schema's versions, on
SQLite, MySQL/MariaDB and PostgreSQL. The revisions are db/migrations/versions/; the
schema at their head is db/tables.py.

A database made before versioned migrations (schema_migrations holding version 1) has
the baseline revision's schema: it is stamped at the baseline, then upgraded like any
other. One migrator runs at a time: MySQL's GET_LOCK, a PostgreSQL advisory lock, or
SQLite's write lock (BEGIN IMMEDIATE) on the migrating connection.
"""

from __future__ import annotations

import functools
import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.schema import CreateTable

from . import MYSQL_SERVERS
from .engine import Database

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
BASELINE = "0001"
LOCK_WAIT_SECONDS = 60
_MYSQL_LOCK = "payments_svc_migrate"
_POSTGRESQL_LOCK = 0x7061796D656E7473  # "payments" in ASCII: the advisory lock's key


class MigrationError(Exception):
    pass


@functools.cache
def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(_config())


@functools.cache
def revisions() -> tuple[str, ...]:
    """Every revision, oldest first (the history is one line)."""
    return tuple(reversed([script.revision for script in _scripts().walk_revisions()]))


def head() -> str:
    return revisions()[-1]


@dataclass(frozen=True)
class SchemaState:
    """Where a database stands. At most one of revision, pre_alembic_version and foreign
    is set; none of them: an empty database."""

    revision: str | None = None  # Alembic's revision
    pre_alembic_version: int | None = None  # schema_migrations' version, not yet stamped
    foreign: bool = False  # a payments table that payments-svc did not make (an ms-go-payments schema?)

    @property
    def newer(self) -> bool:
        """At a revision of a later release (this one does not know it)."""
        return self.revision is not None and self.revision not in revisions()

    @property
    def up_to_date(self) -> bool:
        """At this release's head, or newer: a later release's revisions are additive."""
        return self.revision == head() or self.newer

    def describe(self) -> str:
        if self.foreign:
            return "not a payments-svc schema (it has a payments table that payments-svc did not create)"
        if self.pre_alembic_version is not None:
            return f"version {self.pre_alembic_version} from before versioned migrations (the baseline {BASELINE})"
        if self.revision is None:
            return "empty"
        if self.revision == head():
            return f"{self.revision} (head)"
        if self.newer:
            return f"{self.revision} (newer than this release's head {head()})"
        return f"{self.revision} (behind this release's head {head()})"

    def advice(self) -> str:
        """What to do about it, if anything."""
        if self.foreign:
            return "use a new database for payments-svc"
        return "" if self.up_to_date else "run `payments-svc db migrate`"


@dataclass(frozen=True)
class Migration:
    before: SchemaState
    applied: tuple[str, ...]
    stamped: str | None = None  # the baseline, when a database from before Alembic was recognised

    def describe(self) -> str:
        if self.before.newer:
            return f"up to date: {self.before.describe()}"
        done = []
        if self.stamped:
            done.append(f"recognised schema version {self.before.pre_alembic_version}, stamped {self.stamped}")
        if self.applied:
            done.append("applied " + ", ".join(self.applied))
        return "; ".join(done) if done else f"up to date ({head()})"


async def migrate(db: Database) -> Migration:
    """Brings the schema to this release's head."""
    async with _migration_lock(db) as conn:
        migration = await conn.run_sync(_upgrade)
    if migration.applied:
        await db.close()  # pooled connections may hold PostgreSQL statement plans of the old tables
    return migration


async def downgrade(db: Database, revision: str) -> tuple[str, ...]:
    """Undoes the revisions after `revision`, newest first; returns them."""
    _check_known(revision)
    async with _migration_lock(db) as conn:
        undone = await conn.run_sync(_downgrade, revision)
    await db.close()  # as after migrate
    return undone


async def schema_state(db: Database) -> SchemaState:
    async with db.read() as conn:
        return await conn.run_sync(_read_state)


def migration_sql(url: str, *, from_revision: str | None = None, server: str | None = None) -> str:
    """The SQL `migrate` would run, for applying by hand: from an empty database, or from
    `from_revision` (`db current`). Connects to nothing. A MySQL URL does not tell MariaDB
    from MySQL, whose key collations differ: `server` says which."""
    options = {}
    if make_url(url).get_backend_name() == "mysql":
        if server not in MYSQL_SERVERS:
            raise MigrationError("for MySQL/MariaDB, say which server the SQL is for (--server mariadb or --server mysql): "
                                 "the key columns' collation differs")
        options["is_mariadb"] = server == "mariadb"
    out = io.StringIO()
    config = _config(output_buffer=out)
    config.attributes.update(url=url, dialect_opts=options)
    if from_revision is None:
        command.upgrade(config, "head", sql=True)
        return out.getvalue()
    _check_known(from_revision)
    out.write(_stamp_unversioned_sql(make_url(url).get_dialect()(**options), from_revision))
    command.upgrade(config, f"{from_revision}:head", sql=True)
    return out.getvalue()


def _config(output_buffer: io.StringIO | None = None) -> Config:
    config = Config(output_buffer=output_buffer)
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def _check_known(revision: str) -> None:
    if revision not in revisions():
        raise MigrationError(f"unknown revision {revision!r}; this release has {', '.join(revisions())}")


def _read_state(conn: sa.Connection) -> SchemaState:
    revision = MigrationContext.configure(conn).get_current_revision()
    if revision is not None:
        return SchemaState(revision=revision)
    tables = set(sa.inspect(conn).get_table_names())
    if "schema_migrations" in tables:
        version = conn.execute(sa.text("SELECT MAX(version) FROM schema_migrations")).scalar()
        if version != 1:
            raise MigrationError(f"schema_migrations holds version {version}; only version 1 was ever released")
        return SchemaState(pre_alembic_version=version)
    return SchemaState(foreign="payments" in tables)


def _upgrade(conn: sa.Connection) -> Migration:
    before = _read_state(conn)
    if before.foreign:
        raise MigrationError(f"this database is {before.describe()}: an ms-go-payments schema? "
                             "Migrate into a new database instead")
    if before.newer:
        return Migration(before, ())
    config = _config()
    config.attributes["connection"] = conn
    start, stamped = before.revision, None
    if before.pre_alembic_version is not None:
        command.stamp(config, BASELINE)
        start = stamped = BASELINE
    pending = revisions()[revisions().index(start) + 1:] if start else revisions()
    if pending:
        command.upgrade(config, "head")
    return Migration(before, pending, stamped)


def _downgrade(conn: sa.Connection, revision: str) -> tuple[str, ...]:
    current = _read_state(conn)
    if current.revision is None or current.newer:
        raise MigrationError(f"cannot downgrade a database that is {current.describe()}")
    at, to = revisions().index(current.revision), revisions().index(revision)
    if to > at:
        raise MigrationError(f"the database is at {current.revision}, before {revision}: use `db migrate`")
    undone = tuple(reversed(revisions()[to + 1: at + 1]))
    if undone:
        config = _config()
        config.attributes["connection"] = conn
        command.downgrade(config, revision)
    return undone


def _stamp_unversioned_sql(dialect: sa.Dialect, revision: str) -> str:
    """Statements that record `revision` in Alembic's version table unless a revision is
    recorded already: a database from before Alembic (at the baseline) gets stamped, a
    stamped one is left alone."""
    version = sa.Table(
        "alembic_version",
        sa.MetaData(),
        sa.Column("version_num", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("version_num", name="alembic_version_pkc"),
    )
    stamp = version.insert().from_select(
        ["version_num"], sa.select(sa.literal(revision)).where(~sa.exists(sa.select(version.c.version_num)))
    )
    create = str(CreateTable(version, if_not_exists=True).compile(dialect=dialect)).strip()
    insert = stamp.compile(dialect=dialect, compile_kwargs={"literal_binds": True})
    return f"-- Stamp {revision} unless a revision is recorded (a database from before versioned migrations)\n\n{create};\n\n{insert};\n\n"


@asynccontextmanager
async def _migration_lock(db: Database) -> AsyncIterator[AsyncConnection]:
    """A connection in a transaction that no other migrator runs alongside. PostgreSQL and
    SQLite run the whole migration in it (their DDL is transactional); MySQL commits each
    DDL statement by itself."""
    async with db.engine.connect() as conn:
        if db.dialect == "mysql":
            got = (await conn.execute(sa.text("SELECT GET_LOCK(:name, :wait)"),
                                      {"name": _MYSQL_LOCK, "wait": LOCK_WAIT_SECONDS})).scalar()
            await conn.commit()
            if got != 1:
                raise MigrationError("another migration holds the lock; try again")
        try:
            async with conn.begin():  # SQLite: BEGIN IMMEDIATE (engine.py), the write lock
                if db.dialect == "postgresql":
                    await _postgresql_lock(conn)
                yield conn
        finally:
            if db.dialect == "mysql":
                await conn.execute(sa.text("SELECT RELEASE_LOCK(:name)"), {"name": _MYSQL_LOCK})
                await conn.commit()


async def _postgresql_lock(conn: AsyncConnection) -> None:
    """The transaction's advisory lock (released when it ends), waited for as long as
    MySQL's GET_LOCK."""
    await conn.execute(sa.text(f"SET LOCAL lock_timeout = '{LOCK_WAIT_SECONDS}s'"))
    try:
        await conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _POSTGRESQL_LOCK})
    except sa.exc.DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) == "55P03":  # lock_not_available
            raise MigrationError("another migration holds the lock; try again") from None
        raise
    await conn.execute(sa.text("SET LOCAL lock_timeout TO DEFAULT"))
