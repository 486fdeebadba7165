"""`payments-svc stellar watch [--worker]`; cli.py registers the group."""

from __future__ import annotations

import asyncio
import signal
from typing import TYPE_CHECKING

import click
import structlog
from aiohttp import web
from sqlalchemy.exc import SQLAlchemyError

from .. import metrics
from ..cli_settings import command_settings
from ..config import ConfigError, Settings
from ..container import check_schema
from ..db.engine import open_database
from .sync import FeedRefused, HorizonUnavailable, sync_stellar_payments

if TYPE_CHECKING:
    from .feed import WatcherHealth

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
    With it: page, then stream (see the README); /healthz and /metrics on
    PAYMENTS_METRICS_PORT."""
    settings = command_settings()
    if settings.stellar is None:
        raise click.ClickException("the Stellar provider is not configured: set STELLAR_RECEIVING_ACCOUNT (see the README)")
    worker = worker or bool((ctx.obj or {}).get("worker"))  # `payments-svc --worker stellar watch` sets it on the root
    try:
        applied = asyncio.run(_watch(settings, worker))
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    except (SQLAlchemyError, OSError) as exc:
        raise click.ClickException(f"database unavailable: {type(exc).__name__}: {exc}") from None
    if applied is not None:
        click.echo(f"caught up: applied {applied} feed record(s) of {settings.stellar.receiving_account}")


async def _watch(settings: Settings, worker: bool) -> int | None:
    db = open_database(settings)
    try:
        await check_schema(db)
        if not worker:
            metrics.serve_worker_metrics(settings.metrics_port)
            try:
                return await sync_stellar_payments(db, settings)
            except HorizonUnavailable as exc:
                raise click.ClickException(f"Horizon unavailable: {exc}") from None
            except FeedRefused as exc:
                log.error("stellar_feed_refused", account=settings.stellar.receiving_account, error=str(exc))
                raise click.ClickException(f"the Stellar feed is refused: {exc} (see deployment.md, runbook)") from None
        from .feed import WatcherHealth, stall_seconds, watch  # stellar-sdk: only when streaming

        health = WatcherHealth(stall_seconds(settings.stellar))
        probes = await _serve_probes(settings.metrics_port, health) if settings.metrics_port else None
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
            if probes is not None:
                await probes.cleanup()
    finally:
        await db.close()


async def _serve_probes(port: int, health: WatcherHealth) -> web.AppRunner:
    """/metrics and /healthz (200, or 503 with the reason: the orchestrator's liveness
    probe). Served from the watcher's own event loop, so a loop that hangs fails it too."""

    async def healthz(_request: web.Request) -> web.Response:
        problem = health.problem()
        if problem is None:
            return web.json_response({"status": "ok"})
        return web.json_response({"status": "unhealthy", "error": problem}, status=503)

    async def metrics_page(_request: web.Request) -> web.Response:
        body, content_type = metrics.render()
        return web.Response(body=body, headers={"Content-Type": content_type})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", port).start()
    return runner
