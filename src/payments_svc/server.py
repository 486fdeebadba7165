"""`payments-svc serve`: gRPC and HTTP in one asyncio process, or N such
processes sharing the ports (SO_REUSEPORT) for multi-core; with --with-workers the
background jobs run in the same process (a development convenience).

On SIGTERM: health turns NOT_SERVING, new work is refused by readiness, after the
drain the listeners close, requests in flight (from their first byte) get the grace
period to finish, in-process jobs finish their items, then the process exits 0.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager

import grpc
import structlog
from aiohttp import web
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from .api.grpc.interceptors import PaymentsInterceptor
from .api.grpc.reflection import enable_reflection
from .api.grpc.servicer import PaymentsServicer
from .api.http.app import build_http_app
from .api.http.runner import HttpRunner
from .config import ConfigError, Settings
from .container import Container, build_container, check_accounts, check_schema
from .gen import payments_pb2, payments_pb2_grpc
from .metrics import serve_worker_metrics
from .service.callbacks import refresh_outbox_metrics
from .service.watch import WatchHub

log = structlog.get_logger("payments.server")

PAYMENTS_SERVICE = payments_pb2.DESCRIPTOR.services_by_name["PaymentsService"].full_name
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
CHILD_ENV = "PAYMENTS_SERVE_SHARED_PORTS"


async def serve(settings: Settings, *, shared_ports: bool = False, with_workers: bool = False) -> int:
    """Serves until SIGTERM/SIGINT; returns the exit status (1: an in-process job died)."""
    # Signals first: a SIGTERM during start-up must still end in an orderly exit 0.
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)

    container = build_container(settings)
    async with _closed_on_failure(container.close):
        await container.db.ping()
        await check_schema(container.db)
        await check_accounts(container.db, settings)

    async def readiness() -> str | None:
        if stopping.is_set():
            return "shutting down"
        try:
            await container.db.ping(timeout=settings.readiness_timeout_seconds)  # answer before the probe gives up
        except Exception as exc:  # readiness reports, it does not crash
            return f"database unreachable: {type(exc).__name__}"
        return None

    grpc_server = grpc.aio.server(
        interceptors=[PaymentsInterceptor(container.authenticator, container.quotas)],
        options=[
            ("grpc.so_reuseport", 1 if shared_ports else 0),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ],
    )
    hub = WatchHub(container.db, settings)  # this process's one events tail, for gRPC and SSE watchers alike
    payments_pb2_grpc.add_PaymentsServiceServicer_to_server(PaymentsServicer(container.service, hub), grpc_server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, grpc_server)
    enable_reflection((PAYMENTS_SERVICE, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name), grpc_server)
    async with _closed_on_failure(container.close):
        grpc_port = _add_grpc_port(grpc_server, settings, shared_ports)
    await grpc_server.start()

    app = build_http_app(settings, container.service, container.authenticator, readiness,
                         quotas=container.quotas, hub=hub)
    # Idle keep-alive connections are closed after 75 s (aiohttp would keep them an hour).
    runner = HttpRunner(app, access_log=None, keepalive_timeout=75)
    await runner.setup()
    site = web.TCPSite(runner, settings.http_host, settings.http_port, reuse_port=shared_ports)
    async with _closed_on_failure(lambda: grpc_server.stop(0), runner.cleanup, container.close):
        try:
            await site.start()
        except OSError as exc:
            raise _cannot_listen(settings.http_host, settings.http_port, "HTTP_PORT", exc) from None
        serve_worker_metrics(settings.metrics_port, reuse_port=shared_ports,
                             refresh=lambda: refresh_outbox_metrics(container.db))
    workers = _start_workers(container, stopping) if with_workers else {}

    for service_name in ("", PAYMENTS_SERVICE):
        await health_servicer.set(service_name, health_pb2.HealthCheckResponse.SERVING)
    log.info("serving", grpc_port=grpc_port, http_port=settings.http_port, pid=os.getpid(),
             providers=[p.code for p in container.providers.enabled], workers=sorted(workers))

    exit_code = await _until_stopped(stopping, workers)
    log.info("shutting_down", drain_seconds=settings.shutdown_drain_seconds, grace_seconds=settings.shutdown_grace_seconds)
    await health_servicer.enter_graceful_shutdown()
    # Keep accepting while load balancers notice NOT_SERVING / readiness 503 and stop sending.
    await asyncio.sleep(settings.shutdown_drain_seconds)
    await hub.close()  # watch streams end now, telling clients to reconnect (elsewhere), not at the grace's end
    await asyncio.gather(grpc_server.stop(settings.shutdown_grace_seconds), runner.stop(settings.shutdown_grace_seconds))
    for name, task in workers.items():
        exit_code |= await _worker_exit(name, task)
    await container.close()
    log.info("stopped")
    return exit_code


@asynccontextmanager
async def _closed_on_failure(*closers: Callable[[], Awaitable[object]]):
    """Start-up steps that may fail (database, ports): on failure, release what was
    already opened before the error reaches the command line."""
    try:
        yield
    except BaseException:
        for close in closers:
            await close()
        raise


def _add_grpc_port(grpc_server: grpc.aio.Server, settings: Settings, shared_ports: bool) -> int:
    # Bind a plain socket first: when the port is taken, gRPC's own error comes with a
    # C-core log line of its own, where one clear line is wanted.
    host, port = settings.grpc_host, settings.grpc_port
    try:
        for family, kind, proto, _, address in socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM,
                                                                  flags=socket.AI_PASSIVE)[:1]:
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if shared_ports:
                    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                probe.bind(address)
        return grpc_server.add_insecure_port(f"{host}:{port}")
    except (OSError, RuntimeError) as exc:
        raise _cannot_listen(host, port, "GRPC_PORT", exc) from None


def _cannot_listen(host: str, port: int, variable: str, exc: Exception) -> ConfigError:
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return ConfigError(f"cannot listen on {host}:{port} ({variable}): {reason}")


def _start_workers(container: Container, stop: asyncio.Event) -> dict[str, asyncio.Task]:
    """The background jobs as tasks of this process, each looping on its interval until
    `stop`, as their `--worker` commands do (deployment.md, Workers)."""
    from .jobs.dispatch import CallbackDispatcher
    from .jobs.expire import PendingExpirer
    from .jobs.reconcile import Reconciler
    from .jobs.runner import run_job

    settings, service = container.settings, container.service

    async def run(job, interval: float) -> None:
        try:
            await run_job(job, worker=True, interval=interval, stop=stop)
        finally:
            await job.close()

    jobs = (
        (CallbackDispatcher(container.db, settings), settings.callback_dispatch_interval_seconds),
        (Reconciler(service), settings.reconcile_interval_seconds),
        (PendingExpirer(service), settings.expire_pending_interval_seconds),
    )
    tasks = {job.name: asyncio.create_task(run(job, interval), name=job.name) for job, interval in jobs}
    if settings.stellar is not None:
        from .providers.stellar.feed import WatcherHealth, stall_seconds, watch

        # Its health is in the logs and metrics here; the refused feed does not stop the server.
        health = WatcherHealth(stall_seconds(settings.stellar))
        tasks["stellar_watch"] = asyncio.create_task(watch(container.db, settings.stellar, health), name="stellar_watch")
    return tasks


async def _until_stopped(stopping: asyncio.Event, workers: dict[str, asyncio.Task]) -> int:
    """Waits for SIGTERM/SIGINT; an in-process job that ends before it is a bug or a
    fatal error: the server stops, exit 1."""
    stop_wait = asyncio.create_task(stopping.wait())
    done, _ = await asyncio.wait([stop_wait, *workers.values()], return_when=asyncio.FIRST_COMPLETED)
    if stop_wait in done:
        return 0
    stop_wait.cancel()
    stopping.set()
    return 1


async def _worker_exit(name: str, task: asyncio.Task) -> int:
    """Waits for an in-process job to finish its items; 1 if it failed."""
    if name == "stellar_watch":
        task.cancel()  # safe: a record's changes and its cursor commit together or not at all
    try:
        await task
    except asyncio.CancelledError:
        return 0
    except Exception as exc:
        log.error("worker_failed", worker=name, error=f"{type(exc).__name__}: {exc}", exc_info=exc)
        return 1
    return 0


def serve_processes(processes: int) -> int:
    """Runs `processes` copies of serve on shared ports; forwards SIGTERM/SIGINT and
    returns non-zero if any copy failed (so the orchestrator restarts the pod)."""
    env = dict(os.environ, **{CHILD_ENV: "1"})
    if not env.get("PROMETHEUS_MULTIPROC_DIR"):
        # The copies share one metrics directory, so whichever answers /metrics reports all of them.
        env["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="payments-svc-metrics-")
    children: list[subprocess.Popen] = []
    stop_requested = False

    def forward(signum, _frame):
        nonlocal stop_requested
        stop_requested = True
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    # Installed before any child exists, so no signal can leave children orphaned.
    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for _ in range(processes):
        if not stop_requested:
            children.append(subprocess.Popen([sys.executable, "-m", "payments_svc", "serve"], env=env))
    exit_code = 0
    remaining = list(children)
    while remaining:
        for child in list(remaining):
            try:
                code = child.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                continue
            remaining.remove(child)
            # A child stopped by our own forwarded signal before it could install its handler is a clean stop.
            if code != 0 and not (stop_requested and code in (-signal.SIGTERM, -signal.SIGINT)):
                exit_code = exit_code or (code if code > 0 else 1)
                forward(signal.SIGTERM, None)  # one copy died: stop the rest, let the supervisor restart us
    return exit_code
