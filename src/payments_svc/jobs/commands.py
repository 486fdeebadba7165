"""The job commands (`reconcile`, `callbacks dispatch`, `expire pending`) and
`keys signing-secret`; cli.py registers them. Jobs need no Auth service.

The jobs and the providers are imported when a job runs, so that every other
command (cli.py imports this module) starts without loading them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING

import click
from sqlalchemy.exc import SQLAlchemyError

from ..cli_settings import command_settings
from ..clock import utcnow
from ..config import ConfigError, Settings
from ..db.engine import open_database
from ..domain.errors import ServiceUnavailableError
from ..metrics import serve_worker_metrics
from ..repository.signing_secrets import SigningSecretExists, SigningSecretRepository

if TYPE_CHECKING:
    from ..service.payments import PaymentService
    from .runner import Job

worker_option = click.option(
    "--worker", is_flag=True, help="Run a batch every interval until SIGTERM, instead of one batch."
)


async def _run(settings: Settings, build: Callable[[PaymentService], Job], interval: float, worker: bool) -> int:
    from ..container import build_providers, check_schema
    from ..service.payments import PaymentService
    from .runner import install_stop_handlers, run_job

    stop = asyncio.Event()
    install_stop_handlers(stop)  # first: a SIGTERM during start-up still ends in an orderly exit
    db = open_database(settings)
    try:
        await db.ping()
        await check_schema(db)
        serve_worker_metrics(settings.metrics_port)
        providers = build_providers(settings)
        job = build(PaymentService(db, providers, settings))
        try:
            return await run_job(job, worker=worker, interval=interval, stop=stop)
        finally:
            await job.close()
            await providers.close()
    finally:
        await db.close()


def _start(ctx: click.Context, worker: bool, build: Callable[[PaymentService], Job], interval_setting: str) -> None:
    """Exit status: 0, or 1 when a one-off batch had failures or the job could not start."""
    settings = command_settings()
    worker = worker or bool((ctx.obj or {}).get("worker"))  # `payments-svc --worker <job>` sets it on the root
    try:
        code = asyncio.run(_run(settings, build, getattr(settings, interval_setting), worker))
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    except (SQLAlchemyError, OSError, ServiceUnavailableError) as exc:
        raise click.ClickException(f"database unavailable: {type(exc).__name__}: {exc}") from None
    ctx.exit(code)


@click.command()
@worker_option
@click.pass_context
def reconcile(ctx: click.Context, worker: bool) -> None:
    """Check open payments that went stale against their provider; finish crashed creates.

    Interval: PAYMENTS_RECONCILE_INTERVAL_MINUTES (2)."""
    from .reconcile import Reconciler

    _start(ctx, worker, Reconciler, "reconcile_interval_seconds")


@click.group()
def callbacks() -> None:
    """Status callbacks to caller services."""


@callbacks.command("dispatch")
@worker_option
@click.pass_context
def callbacks_dispatch(ctx: click.Context, worker: bool) -> None:
    """Deliver due status callbacks (signed, retried with backoff).

    Interval: PAYMENTS_CALLBACK_DISPATCH_INTERVAL_MINUTES (1)."""
    from .dispatch import CallbackDispatcher

    _start(ctx, worker, lambda service: CallbackDispatcher(service.db, service.settings),
           "callback_dispatch_interval_seconds")


@click.group()
def expire() -> None:
    """Expiry of payments."""


@expire.command("pending")
@worker_option
@click.pass_context
def expire_pending(ctx: click.Context, worker: bool) -> None:
    """Expire payments open longer than PAYMENTS_PENDING_TIMEOUT_MINUTES (60), at the provider first.

    Interval: PAYMENTS_EXPIRE_PENDING_INTERVAL_MINUTES (5)."""
    from .expire import PendingExpirer

    _start(ctx, worker, PendingExpirer, "expire_pending_interval_seconds")


@click.command("signing-secret")
@click.option("--service", "service_name", required=True, help="The caller service whose status callbacks it signs.")
@click.option("--rotate", is_flag=True, help="Replace the current secret; the old one keeps signing for --grace-hours.")
@click.option("--grace-hours", type=click.FloatRange(min=0), default=24.0, show_default=True,
              help="With --rotate: how long the old secret still signs alongside the new one.")
def signing_secret(service_name: str, rotate: bool, grace_hours: float) -> None:
    """Create or rotate a caller service's status callback signing secret and print it once."""
    service_name = service_name.strip()
    if not service_name or len(service_name) > 128:
        raise click.BadParameter("must be 1..128 characters", param_hint="--service")
    settings = command_settings()

    async def create() -> str:
        db = open_database(settings)
        try:
            async with db.transaction() as conn:
                return await SigningSecretRepository(conn).create(
                    service_name, rotate=rotate, grace=timedelta(hours=grace_hours), now=utcnow()
                )
        finally:
            await db.close()

    try:
        secret = asyncio.run(create())
    except SigningSecretExists:
        raise click.ClickException(
            f"caller service {service_name!r} has a signing secret already; rotate it with --rotate"
        ) from None
    note = f"; the previous one keeps signing for {grace_hours:g} hours" if rotate else ""
    click.echo(f"signing secret for {service_name}{note}. It is shown only now:", err=True)
    click.echo(secret)
