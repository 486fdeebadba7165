"""`payments-svc stellar watch [--worker]`; cli.py registers the group."""

from __future__ import annotations

import asyncio
import signal

import click
from sqlalchemy.exc import SQLAlchemyError

from ..cli_settings import command_settings
from ..config import ConfigError, Settings
from ..container import check_schema
from ..db.engine import open_database
from ..domain.errors import ServiceUnavailableError
from ..metrics import serve_worker_metrics
from .sync import HorizonUnavailable, sync_stellar_payments


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
    records were applied, exit. With it: page, then stream (see the README)."""
    settings = command_settings()
    if settings.stellar is None:
        raise click.ClickException("the Stellar provider is not configured: set STELLAR_RECEIVING_ACCOUNT (see the README)")
    worker = worker or bool((ctx.obj or {}).get("worker"))  # `payments-svc --worker stellar watch` sets it on the root
    try:
        applied = asyncio.run(_watch(settings, worker))
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    except (SQLAlchemyError, OSError, ServiceUnavailableError) as exc:
        raise click.ClickException(f"database unavailable: {type(exc).__name__}: {exc}") from None
    if applied is not None:
        click.echo(f"caught up: applied {applied} feed record(s) of {settings.stellar.receiving_account}")


async def _watch(settings: Settings, worker: bool) -> int | None:
    db = open_database(settings)
    try:
        await check_schema(db)
        serve_worker_metrics(settings.metrics_port)
        if not worker:
            try:
                return await sync_stellar_payments(db, settings)
            except HorizonUnavailable as exc:
                raise click.ClickException(f"Horizon unavailable: {exc}") from None
        from .feed import watch  # stellar-sdk: only when streaming

        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            # Cancelling is safe: a record's changes and its cursor commit together or not at all.
            loop.add_signal_handler(signum, task.cancel)
        try:
            await watch(db, settings.stellar)
        except asyncio.CancelledError:
            return None
    finally:
        await db.close()
