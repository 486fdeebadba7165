"""The `payments-svc` command line.

Only click is imported up front: each command imports what it uses when it runs, so
`payments-svc --help` (and every `--help`) answers without loading grpc, SQLAlchemy
or the providers' SDKs."""

from __future__ import annotations

import importlib
import os
import sys
from datetime import timedelta
from typing import TYPE_CHECKING

import click

from .cli_settings import command_settings, run_command
from .db import MYSQL_SERVERS
from .jobs.commands import callbacks, expire, reconcile
from .operator_commands import record_operator_action
from .resilience.commands import keys_limits

if TYPE_CHECKING:
    from .config import Settings
    from .db.engine import Database


class CommandGroup(click.Group):
    """A group some of whose commands live in modules imported only when the command
    is used: those modules load the service, which listing the commands does not need."""

    def __init__(self, *args, lazy: dict[str, tuple[str, str]] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})  # name: ("module:attribute", its one-line help for the listing)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self.lazy})

    def get_command(self, ctx: click.Context | None, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy and cmd_name not in self.commands:
            module_name, attribute = self.lazy[cmd_name][0].split(":")
            self.add_command(getattr(importlib.import_module(module_name), attribute), cmd_name)
        return self.commands.get(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(map(len, names))
        rows = []
        for name in names:
            if name in self.commands:
                if not self.commands[name].hidden:
                    rows.append((name, self.commands[name].get_short_help_str(limit)))
            else:
                rows.append((name, self.lazy[name][1]))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from importlib.metadata import PackageNotFoundError, version

    try:
        click.echo(f"payments-svc {version('payments-svc')}")
    except PackageNotFoundError:  # run from a source tree that was never installed
        click.echo("payments-svc (not installed)")
    ctx.exit()


@click.group(
    cls=CommandGroup,
    context_settings={"help_option_names": ["-h", "--help"]},
    lazy={"stellar": ("payments_svc.providers.stellar.commands:stellar", "The Stellar provider's ledger watcher."),
          "accounts": ("payments_svc.accounts.commands:accounts", "Caller services' own provider accounts."),
          "providers": ("payments_svc.resilience.commands:providers", "How creates are routed to the providers."),
          "audit": ("payments_svc.operator_commands:audit", "The audit trail: who changed what outside the normal flow.")},
)
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_version,
              help="Print the version and exit.")
@click.option("--worker", is_flag=True, help="Run a job in a loop (for the job commands).")
@click.pass_context
def main(ctx: click.Context, worker: bool) -> None:
    """payments-svc: payment orchestration over gRPC and HTTP."""
    ctx.obj = {"worker": worker}


async def _with_database(settings: Settings, action, *, migrated: bool = True):
    """Runs `action(database)`; first checks that the schema is this release's, so that
    an unmigrated database is one clear line, not a missing-table error."""
    from .container import check_schema
    from .db.engine import open_database

    db = open_database(settings)
    try:
        if migrated:
            await check_schema(db)
        return await action(db)
    finally:
        await db.close()


@main.command()
@click.option("--processes", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Server processes sharing the ports (use about one per core).")
@click.option("--with-workers", is_flag=True,
              help="Also run the callback dispatcher, reconcile, expiry and (with Stellar) the Stellar watcher "
                   "in this process. A development convenience: production runs them as separate workers.")
@click.pass_context
def serve(ctx: click.Context, processes: int, with_workers: bool) -> None:
    """Serve gRPC (GRPC_PORT) and HTTP (HTTP_PORT) until SIGTERM."""
    if ctx.obj["worker"]:
        raise click.UsageError("serve does not take --worker; run the job commands as workers, or use serve --with-workers")
    if with_workers and processes > 1:
        raise click.UsageError("--with-workers runs the jobs in one server process: use it without --processes")
    settings = command_settings()
    from .server import CHILD_ENV, serve_processes
    from .server import serve as run_server

    if processes > 1:
        sys.exit(serve_processes(processes))
    sys.exit(run_command(settings, run_server(settings, shared_ports=os.environ.get(CHILD_ENV) == "1",
                                              with_workers=with_workers)))


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
    from .config import redact_url
    from .db.migrate import MigrationError, migrate, migration_sql

    if not sql:
        if from_revision or server:
            raise click.UsageError("--from and --server go with --sql")

        async def action(database: Database):
            migration = await migrate(database)
            click.echo(f"{redact_url(settings.database_url)}: {migration.describe()}")

        run_command(settings, _with_database(settings, action, migrated=False))
        return
    try:
        click.echo(migration_sql(settings.database_url, from_revision=from_revision, server=server), nl=False)
    except MigrationError as exc:
        raise click.ClickException(str(exc)) from None


@db.command("current")
def db_current() -> None:
    """Show the schema's revision."""
    settings = command_settings()
    from .config import redact_url
    from .db.migrate import schema_state

    async def action(database: Database):
        state = await schema_state(database)
        advice = state.advice()
        click.echo(f"{redact_url(settings.database_url)}: {state.describe()}" + (f"; {advice}" if advice else ""))

    run_command(settings, _with_database(settings, action, migrated=False))


@db.command("downgrade")
@click.argument("revision")
def db_downgrade(revision: str) -> None:
    """Undo the migrations after REVISION (where they can be undone; deployment.md)."""
    settings = command_settings()
    from .config import redact_url
    from .db.migrate import downgrade

    async def action(database: Database):
        undone = await downgrade(database, revision)
        click.echo(f"{redact_url(settings.database_url)}: " + (f"undid {', '.join(undone)}" if undone else "nothing to undo"))

    run_command(settings, _with_database(settings, action, migrated=False))


@main.group()
def keys() -> None:
    """Built-in API keys (used when AUTH_SERVICE_GRPC_ADDR is not set) and callback signing secrets."""


@keys.command("create")
@click.option("--service", "service_name", required=True, help="The caller service the key authenticates.")
@click.option("--acts-for", multiple=True, help="Another caller service this key may act for ('*' for any: a gateway).")
@click.option("--replace", is_flag=True, help="Revoke the service's other keys in the same step (e.g. `make run`'s dev key).")
def keys_create(service_name: str, acts_for: tuple[str, ...], replace: bool) -> None:
    """Create a key and print it once; only its hash is stored."""
    settings = command_settings()
    from .auth.caller import parse_acts_for
    from .auth.keys import ApiKeyRepository

    service_name = service_name.strip()

    async def action(database: Database):
        async with database.transaction() as conn:
            repo = ApiKeyRepository(conn)
            replaced = []
            if replace:
                for record in await repo.list():
                    if record.service_name == service_name and record.revoked_at is None and await repo.revoke(record.id):
                        replaced.append(record.id)
            api_key, record = await repo.create(service_name, parse_acts_for(",".join(acts_for)))
        for key_id in replaced:
            await record_operator_action(database, "key.revoked", "api_key", key_id, f"replaced by key {record.id}")
        await record_operator_action(database, "key.created", "api_key", record.id,
                                     f"service {service_name}, acts for {','.join(sorted(record.acts_for)) or '-'}")
        if replaced:
            click.echo(f"revoked the previous key(s) of {service_name}: id {', '.join(map(str, replaced))}", err=True)
        click.echo(f"created key id={record.id} for service {record.service_name}; it is shown only now:", err=True)
        click.echo(api_key)

    run_command(settings, _with_database(settings, action))


@keys.command("list")
def keys_list() -> None:
    """List keys (prefixes only)."""
    settings = command_settings()
    from .auth.keys import ApiKeyRepository

    async def action(database: Database):
        async with database.read() as conn:
            records = await ApiKeyRepository(conn).list()
        for r in records:
            state = f"revoked {r.revoked_at:%Y-%m-%dT%H:%M:%SZ}" if r.revoked_at else "active"
            acts = ",".join(sorted(r.acts_for)) or "-"
            click.echo(f"{r.id}\t{r.service_name}\t{r.key_prefix}…\tacts-for={acts}\t{state}")

    run_command(settings, _with_database(settings, action))


@keys.command("revoke")
@click.argument("key_id", type=int)
def keys_revoke(key_id: int) -> None:
    """Revoke a key by id (takes effect within the auth cache TTL)."""
    settings = command_settings()
    from .auth.keys import ApiKeyRepository

    async def action(database: Database):
        async with database.transaction() as conn:
            if not await ApiKeyRepository(conn).revoke(key_id):
                raise click.ClickException(f"no active key with id {key_id}")
        await record_operator_action(database, "key.revoked", "api_key", key_id)
        click.echo(f"revoked key {key_id}")

    run_command(settings, _with_database(settings, action))


@keys.command("signing-secret")
@click.option("--service", "service_name", required=True, help="The caller service whose status callbacks it signs.")
@click.option("--rotate", is_flag=True, help="Make a new secret; the current ones keep signing for --grace-hours.")
@click.option("--grace-hours", type=click.FloatRange(min=0), default=24.0, show_default=True,
              help="With --rotate: how long the current secrets still sign alongside the new one.")
def signing_secret(service_name: str, rotate: bool, grace_hours: float) -> None:
    """Print the secret status callbacks to a caller service are signed with (made now if
    it has none), or --rotate it.

    The newest secret is printed on stdout (give it to the caller); stderr lists every
    secret that signs now and until when. Callbacks carry one signature per secret, so
    during a rotation receivers holding the old or the new secret both verify them."""
    service_name = service_name.strip()
    if not service_name or len(service_name) > 128:
        raise click.BadParameter("must be 1..128 characters", param_hint="--service")
    settings = command_settings()
    from .clock import rfc3339, utcnow
    from .repository.signing_secrets import SigningSecretRepository, current_signing_secrets

    async def action(database: Database):
        now = utcnow()
        if rotate:
            async with database.transaction() as conn:
                await SigningSecretRepository(conn).rotate(service_name, grace=timedelta(hours=grace_hours), now=now)
            await record_operator_action(database, "signing_secret.rotated", "caller_service", service_name,
                                         f"previous secrets sign for {grace_hours:g} more hour(s)")
        return (await current_signing_secrets(database, [service_name], configured=settings.callback_signing_secrets,
                                              now=now))[service_name]

    current = run_command(settings, _with_database(settings, action))
    newest = current[0]
    if rotate:
        click.echo(f"rotated the signing secret of {service_name}; the new one:", err=True)
    elif newest.created_now:
        click.echo(f"{service_name} had no signing secret; created one:", err=True)
    else:
        click.echo(f"the signing secret of {service_name}:", err=True)
    if len(current) > 1:
        click.echo("every secret that signs its callbacks now (each callback carries one signature per secret):", err=True)
        for secret in current:
            if secret.created_at is None:
                origin = "from PAYMENTS_CALLBACK_SIGNING_SECRETS"
            else:
                until = f"until {rfc3339(secret.expires_at)}" if secret.expires_at else "until rotated"
                origin = f"created {rfc3339(secret.created_at)}, signs {until}"
            click.echo(f"  {secret.secret}  {origin}", err=True)
    click.echo(newest.secret)


keys.add_command(keys_limits)
main.add_command(reconcile)
main.add_command(callbacks)
main.add_command(expire)
