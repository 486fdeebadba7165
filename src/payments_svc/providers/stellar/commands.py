"""`payments-svc stellar watch [--worker]`; cli.py registers the group (loaded on first use)."""

from __future__ import annotations

import asyncio
import signal

import click
import structlog

from ...cli_settings import command_settings, run_command
from ...config import Settings

log = structlog.get_logger("payments.stellar")


@click.group()
def stellar() -> None:
    """The Stellar provider's ledger watcher."""


@stellar.command()
@click.option("--worker", is_flag=True,
              help="Stream payments until SIGTERM, reconnecting as needed, instead of paging until caught up once.")
@click.pass_context
def watch(ctx: click.Context, worker: bool) -> None:
    """Apply payments to STELLAR_RECEIVING_ACCOUNT from the stored cursor on.

    Without --worker: page from the stored cursor until caught up, print how many
    records were applied, exit (1 when Horizon is unavailable or the feed is refused).
    With it: page, then stream (see the README); /healthz (503 while the feed is refused
    or makes no progress) and /metrics on PAYMENTS_METRICS_PORT."""
    settings = command_settings()
    if settings.stellar is None:
        raise click.ClickException("the Stellar provider is not configured: set STELLAR_RECEIVING_ACCOUNT (see the README)")
    worker = worker or bool((ctx.obj or {}).get("worker"))  # `payments-svc --worker stellar watch` sets it on the root
    applied = run_command(settings, _watch(settings, worker))
    if applied is not None:
        click.echo(f"caught up: applied {applied} feed record(s) of {settings.stellar.receiving_account}")


async def _watch(settings: Settings, worker: bool) -> int | None:
    from ...container import check_schema
    from ...db.engine import open_database
    from ...metrics import serve_worker_metrics
    from .sync import FeedRefused, HorizonUnavailable, sync_stellar_payments

    db = open_database(settings)
    try:
        await check_schema(db)
        if not worker:
            serve_worker_metrics(settings.metrics_port)
            try:
                return await sync_stellar_payments(db, settings)
            except HorizonUnavailable as exc:
                raise click.ClickException(f"Horizon unavailable: {exc}") from None
            except FeedRefused as exc:
                log.error("stellar_feed_refused", account=settings.stellar.receiving_account, error=str(exc))
                raise click.ClickException(f"the Stellar feed is refused: {exc} (see deployment.md, runbook)") from None
        from .feed import WatcherHealth, stall_seconds, watch  # stellar-sdk: only when streaming

        health = WatcherHealth(stall_seconds(settings.stellar))
        # Served from the watcher's own event loop, so a loop that hangs fails the probe too.
        serve_worker_metrics(settings.metrics_port, problem=health.problem)
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            # Cancelling is safe: a record's changes and its cursor commit together or not at all.
            loop.add_signal_handler(signum, task.cancel)
        try:
            await watch(db, settings.stellar, health)
        except asyncio.CancelledError:
            return None
    finally:
        await db.close()
