"""`payments-svc serve`: gRPC and HTTP in one asyncio process, or N such
processes sharing the ports (SO_REUSEPORT) for multi-core.

On SIGTERM: health turns NOT_SERVING, new work is refused by readiness, in-flight
requests get the grace period to finish, then the process exits 0.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile

import grpc
import structlog
from aiohttp import web
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from .api.grpc.interceptors import PaymentsInterceptor
from .api.grpc.reflection import enable_reflection
from .api.grpc.servicer import PaymentsServicer
from .api.http.app import build_http_app
from .api.http.runner import HttpRunner
from .config import Settings
from .container import build_container, check_schema
from .gen import payments_pb2, payments_pb2_grpc

log = structlog.get_logger("payments.server")

PAYMENTS_SERVICE = payments_pb2.DESCRIPTOR.services_by_name["PaymentsService"].full_name
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
CHILD_ENV = "PAYMENTS_SERVE_SHARED_PORTS"


async def serve(settings: Settings, *, shared_ports: bool = False) -> None:
    # Signals first: a SIGTERM during start-up must still end in an orderly exit 0.
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)

    container = build_container(settings)
    await container.db.ping()
    await check_schema(container.db)

    async def readiness() -> str | None:
        if stopping.is_set():
            return "shutting down"
        try:
            await container.db.ping(timeout=settings.readiness_timeout_seconds)  # answer before the probe gives up
        except Exception as exc:  # readiness reports, it does not crash
            return f"database unreachable: {type(exc).__name__}"
        return None

    grpc_server = grpc.aio.server(
        interceptors=[PaymentsInterceptor(container.authenticator)],
        options=[
            ("grpc.so_reuseport", 1 if shared_ports else 0),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ],
    )
    payments_pb2_grpc.add_PaymentsServiceServicer_to_server(PaymentsServicer(container.service), grpc_server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, grpc_server)
    enable_reflection((PAYMENTS_SERVICE, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name), grpc_server)
    grpc_port = grpc_server.add_insecure_port(f"{settings.grpc_host}:{settings.grpc_port}")
    await grpc_server.start()

    app = build_http_app(settings, container.service, container.authenticator, readiness)
    # Idle keep-alive connections are closed after 75 s (aiohttp would keep them an hour).
    runner = HttpRunner(app, access_log=None, shutdown_timeout=settings.shutdown_grace_seconds, keepalive_timeout=75)
    await runner.setup()
    site = web.TCPSite(runner, settings.http_host, settings.http_port, reuse_port=shared_ports)
    await site.start()

    for service_name in ("", PAYMENTS_SERVICE):
        await health_servicer.set(service_name, health_pb2.HealthCheckResponse.SERVING)
    log.info("serving", grpc_port=grpc_port, http_port=settings.http_port, pid=os.getpid(),
             providers=[p.code for p in container.providers.enabled])

    await stopping.wait()
    log.info("shutting_down", drain_seconds=settings.shutdown_drain_seconds, grace_seconds=settings.shutdown_grace_seconds)
    await health_servicer.enter_graceful_shutdown()
    # Keep accepting while load balancers notice NOT_SERVING / readiness 503 and stop sending.
    await asyncio.sleep(settings.shutdown_drain_seconds)
    await asyncio.gather(grpc_server.stop(settings.shutdown_grace_seconds), runner.cleanup())
    await container.close()
    log.info("stopped")


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
