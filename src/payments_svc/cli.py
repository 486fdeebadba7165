"""The `payments-svc` command line."""

from __future__ import annotations

import asyncio
import os
import sys
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version

import click

from .auth.caller import parse_acts_for
from .auth.keys import ApiKeyRepository
from .cli_settings import command_settings
from .config import ConfigError, Settings, redact_url
from .db.engine import Database, open_database
from .db.migrate import MYSQL_SERVERS, MigrationError, downgrade, migrate, migration_sql, schema_state
from .jobs.commands import callbacks, expire, reconcile, signing_secret
from .stellar.commands import stellar


def _run(coro) -> None:
    try:
        asyncio.run(coro)
    except (ConfigError, MigrationError) as exc:
        raise click.ClickException(str(exc)) from None


async def _with_db(settings: Settings, action):
    db = open_database(settings)
    try:
        return await action(db)
    finally:
        await db.close()


@click.group()
@click.option("--worker", is_flag=True, help="Run a job in a loop (for the job commands).")
@click.pass_context
def main(ctx: click.Context, worker: bool) -> None:
    """payments-svc: payment orchestration over gRPC and HTTP."""
    ctx.obj = {"worker": worker}


@main.command()
@click.option("--processes", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Server processes sharing the ports (use about one per core).")
@click.pass_context
def serve(ctx: click.Context, processes: int) -> None:
    """Serve gRPC (GRPC_PORT) and HTTP (HTTP_PORT) until SIGTERM."""
    if ctx.obj["worker"]:
        raise click.UsageError("serve does not take --worker; run the job commands as workers")
    settings = command_settings()
    from .server import CHILD_ENV, serve_processes
    from .server import serve as run_server

    if processes > 1:
        sys.exit(serve_processes(processes))
    _run(run_server(settings, shared_ports=os.environ.get(CHILD_ENV) == "1"))


@main.group()
def db() -> None:
    """Database schema: versioned migrations (Alembic)."""


@db.command("migrate")
@click.option("--sql", is_flag=True, help="Print the SQL instead of running it, for applying by hand (connects to nothing).")
@click.option("--from", "from_revision", metavar="REVISION",
              help="With --sql: the database's revision (`db current`); without it, the SQL for an empty database.")
@click.option("--server", type=click.Choice(MYSQL_SERVERS),
              help="With --sql on a MySQL URL: the server kind (their key collations differ).")
def db_migrate(sql: bool, from_revision: str | None, server: str | None) -> None:
    """Create the schema, or upgrade it to this release."""
    settings = command_settings()
    if not sql:
        if from_revision or server:
            raise click.UsageError("--from and --server go with --sql")

        async def action(database: Database):
            migration = await migrate(database)
            click.echo(f"{redact_url(settings.database_url)}: {migration.describe()}")

        _run(_with_db(settings, action))
        return
    try:
        click.echo(migration_sql(settings.database_url, from_revision=from_revision, server=server), nl=False)
    except MigrationError as exc:
        raise click.ClickException(str(exc)) from None


@db.command("current")
def db_current() -> None:
    """Show the schema's revision."""
    settings = command_settings()

    async def action(database: Database):
        state = await schema_state(database)
        advice = state.advice()
        click.echo(f"{redact_url(settings.database_url)}: {state.describe()}" + (f"; {advice}" if advice else ""))

    _run(_with_db(settings, action))


@db.command("downgrade")
@click.argument("revision")
def db_downgrade(revision: str) -> None:
    """Undo the migrations after REVISION (where they can be undone; deployment.md)."""
    settings = command_settings()

    async def action(database: Database):
        undone = await downgrade(database, revision)
        click.echo(f"{redact_url(settings.database_url)}: " + (f"undid {', '.join(undone)}" if undone else "nothing to undo"))

    _run(_with_db(settings, action))


@main.group()
def keys() -> None:
    """Built-in API keys (used when AUTH_SERVICE_GRPC_ADDR is not set)."""


@keys.command("create")
@click.option("--service", "service_name", required=True, help="The caller service the key authenticates.")
@click.option("--acts-for", multiple=True, help="Another caller service this key may act for ('*' for any: a gateway).")
def keys_create(service_name: str, acts_for: tuple[str, ...]) -> None:
    """Create a key and print it once; only its hash is stored."""
    settings = command_settings()

    async def action(database: Database):
        async with database.transaction() as conn:
            api_key, record = await ApiKeyRepository(conn).create(service_name.strip(), parse_acts_for(",".join(acts_for)))
        click.echo(f"created key id={record.id} for service {record.service_name}; it is shown only now:", err=True)
        click.echo(api_key)

    _run(_with_db(settings, action))


@keys.command("list")
def keys_list() -> None:
    """List keys (prefixes only)."""
    settings = command_settings()

    async def action(database: Database):
        async with database.read() as conn:
            records = await ApiKeyRepository(conn).list()
        for r in records:
            state = f"revoked {r.revoked_at:%Y-%m-%dT%H:%M:%SZ}" if r.revoked_at else "active"
            acts = ",".join(sorted(r.acts_for)) or "-"
            click.echo(f"{r.id}\t{r.service_name}\t{r.key_prefix}…\tacts-for={acts}\t{state}")

    _run(_with_db(settings, action))


@keys.command("revoke")
@click.argument("key_id", type=int)
def keys_revoke(key_id: int) -> None:
    """Revoke a key by id (takes effect within the auth cache TTL)."""
    settings = command_settings()

    async def action(database: Database):
        async with database.transaction() as conn:
            if not await ApiKeyRepository(conn).revoke(key_id):
                raise click.ClickException(f"no active key with id {key_id}")
        click.echo(f"revoked key {key_id}")

    _run(_with_db(settings, action))


@main.command()
def version() -> None:
    """Print the version."""
    try:
        click.echo(f"payments-svc {package_version('payments-svc')}")
    except PackageNotFoundError:
        click.echo("payments-svc dev")


main.add_command(reconcile)
main.add_command(callbacks)
main.add_command(expire)
main.add_command(stellar)
keys.add_command(signing_secret)
