"""The job commands (`reconcile`, `callbacks dispatch`, `expire pending`); cli.py
registers them. Jobs need no Auth service.

Only click is imported up front (cli.py imports this module for every command, `--help`
included); the jobs, the database and the providers are imported when a job runs."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

import click

from ..cli_settings import command_settings, run_command
from ..operator_commands import callbacks_dead, callbacks_requeue

if TYPE_CHECKING:
    from ..config import Settings
    from ..service.payments import PaymentService
    from .runner import Job

worker_option = click.option(
    "--worker", is_flag=True, help="Run a batch every interval until SIGTERM, instead of one batch."
)


async def _run(settings: Settings, build: Callable[[PaymentService], Job], interval: float, worker: bool) -> int:
    from ..container import build_providers, check_accounts, check_schema
    from ..db.engine import open_database
    from ..metrics import serve_worker_metrics
    from ..resilience.store import RedisStore, open_store
    from ..service.payments import PaymentService
    from .runner import install_stop_handlers, run_job

    stop = asyncio.Event()
    install_stop_handlers(stop)  # first: a SIGTERM during start-up still ends in an orderly exit
    db = open_database(settings)
    try:
        await db.ping()
        await check_schema(db)
        await check_accounts(db, settings)
        serve_worker_metrics(settings.metrics_port)
        store = open_store(settings.resilience)  # the circuits the servers see, with Redis
        providers = build_providers(settings, db, store)
        job = build(PaymentService(db, providers, settings))
        try:
            # A person running a one-off batch in a terminal sees it advance; logs stay as they are.
            progress = not worker and sys.stderr.isatty()
            return await run_job(job, worker=worker, interval=interval, stop=stop, progress=progress)
        finally:
            await job.close()
            await providers.close()
            if isinstance(store, RedisStore):
                await store.close()
    finally:
        await db.close()


def _start(ctx: click.Context, worker: bool, build: Callable[[PaymentService], Job], interval_setting: str) -> None:
    """Exit status: 0, or 1 when a one-off batch had failures or the job could not start."""
    settings = command_settings()
    worker = worker or bool((ctx.obj or {}).get("worker"))  # `payments-svc --worker <job>` sets it on the root
    ctx.exit(run_command(settings, _run(settings, build, getattr(settings, interval_setting), worker)))


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


# Dead-letter handling (operator_commands.py) beside the dispatcher.
callbacks.add_command(callbacks_dead)
callbacks.add_command(callbacks_requeue)
