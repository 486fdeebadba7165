"""Prometheus metrics (prometheus-client). One registry per process; with
`serve --processes N` the children share PROMETHEUS_MULTIPROC_DIR so any of them
answers /metrics for all."""

from __future__ import annotations

import asyncio
import inspect
import os
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from .config import ConfigError

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

GRPC_REQUESTS = Counter("payments_grpc_requests_total", "gRPC requests to payments.PaymentsService.", ["method", "code"])
GRPC_LATENCY = Histogram("payments_grpc_request_duration_seconds", "gRPC request latency.", ["method"], buckets=LATENCY_BUCKETS)
HTTP_REQUESTS = Counter("payments_http_requests_total", "HTTP requests.", ["route", "method", "status"])
HTTP_LATENCY = Histogram("payments_http_request_duration_seconds", "HTTP request latency.", ["route", "method"], buckets=LATENCY_BUCKETS)
STATUS_TRANSITIONS = Counter("payments_status_transitions_total", "Payment status changes.", ["from_status", "to_status"])
PROVIDER_CALLS = Counter("payments_provider_calls_total", "Calls to payment providers.", ["provider", "operation", "outcome"])
PROVIDER_LATENCY = Histogram("payments_provider_call_duration_seconds", "Payment provider call latency.",
                             ["provider", "operation"], buckets=LATENCY_BUCKETS)
GROUP_COMMIT_SIZE = Histogram("payments_group_commit_size", "Creates' reserves, or status changes, written per transaction (group commit).",
                              ["kind"], buckets=(1, 2, 4, 8, 16, 32, 64, 128))
OUTBOX_DUE = Gauge("payments_callback_outbox_due", "Status callbacks due for delivery now.", multiprocess_mode="max")
OUTBOX_OLDEST_DUE_AGE = Gauge("payments_callback_outbox_oldest_due_age_seconds",
                              "How long the oldest due status callback has been waiting.", multiprocess_mode="max")
DELIVERY_ATTEMPTS = Counter("payments_callback_delivery_attempts_total", "Status callback delivery attempts.", ["outcome"])
JOB_RUNS = Counter("payments_job_runs_total", "Background job batches.", ["job", "outcome"])
JOB_DURATION = Histogram("payments_job_run_duration_seconds", "Background job batch duration.", ["job"],
                         buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300))
WATCHER_LAG = Gauge("payments_stellar_watcher_lag_seconds",
                    "Age of the newest Horizon record the Stellar watcher has applied.", multiprocess_mode="max")
# 0 in every other process: an alert on max() > 0 fires only for a watcher that refuses.
STELLAR_FEED_REFUSED = Gauge("payments_stellar_feed_refused",
                             "1 while the Stellar watcher refuses Horizon's feed and credits nothing (see the runbook).",
                             multiprocess_mode="max")

WATCHERS = Gauge("payments_watchers", "Open WatchPayment/WatchPayments/SSE streams.", multiprocess_mode="livesum")
WATCHERS_DROPPED = Counter("payments_watchers_dropped_total", "Watch streams ended because the client read too slowly.")
WATCH_TAIL_ERRORS = Counter("payments_watch_tail_errors_total", "Failed reads of the payment_events tail (retried next interval).")
DEAD_CALLBACKS = Gauge("payments_callback_deliveries_dead", "Status callbacks that exhausted their retries (FAILED).",
                       multiprocess_mode="max")


def render() -> tuple[bytes, str]:
    """The exposition text and its content type."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def _listening_socket(host: str, port: int, variable: str, *, reuse_port: bool = False) -> socket.socket:
    """A socket listening on host:port; ConfigError naming `variable` when it cannot."""
    try:
        return socket.create_server((host, port), reuse_port=reuse_port)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port} ({variable}): {exc.strerror or exc}") from None


_listeners: list[tuple[web.AppRunner, asyncio.Task]] = []  # nothing else refers to them


def serve_worker_metrics(
    port: int | None,
    *,
    reuse_port: bool = False,
    refresh: Callable[[], Awaitable[None]] | None = None,
    problem: Callable[[], str | None] | None = None,
) -> None:
    """GET /metrics and GET /healthz, and nothing else, on `port` (PAYMENTS_METRICS_PORT)
    if set: the workers' only listener, and serve's metrics-only one (so that what
    Prometheus and the kubelet reach never exposes the API). Served on the caller's
    event loop, so /healthz answering means that loop is not stuck. The port is bound
    here: one in use stops the start (ConfigError). `refresh` runs before each scrape;
    `problem` (a worker's own health, e.g. the Stellar watcher's) makes /healthz answer
    503 with the reason it returns."""
    if not port:
        return

    async def scrape(_request: web.Request) -> web.Response:
        if refresh is not None:
            await refresh()
        body, content_type = render()
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def alive(_request: web.Request) -> web.Response:
        reason = problem() if problem is not None else None
        if reason is None:
            return web.json_response({"status": "ok"})
        return web.json_response({"status": "unhealthy", "error": reason}, status=503)

    sock = _listening_socket("0.0.0.0", port, "PAYMENTS_METRICS_PORT", reuse_port=reuse_port)
    app = web.Application()
    app.router.add_get("/metrics", scrape)
    app.router.add_get("/healthz", alive)
    runner = web.AppRunner(app, access_log=None)

    async def start() -> None:
        await runner.setup()
        await web.SockSite(runner, sock).start()

    _listeners.append((runner, asyncio.get_running_loop().create_task(start())))


class MeteredProvider:
    """Wraps a provider: every coroutine method call is counted and timed. account_id
    names the provider account it calls with (None: the default account), for whatever
    keys on (provider, account), such as a circuit breaker."""

    def __init__(self, inner: Any, *, account_id: int | None = None):
        self._inner = inner
        self.type = inner.type
        self.account_id = account_id
        self._timed: dict[str, Any] = {}

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._inner, name)
        if name.startswith("_") or not inspect.iscoroutinefunction(attribute):
            return attribute
        timed = self._timed.get(name)
        if timed is None:
            timed = self._timed[name] = _timed_call(self.type.code, name, attribute)
        return timed


def _timed_call(provider: str, operation: str, method):
    calls_ok = PROVIDER_CALLS.labels(provider, operation, "ok")
    latency = PROVIDER_LATENCY.labels(provider, operation)

    async def call(*args, **kwargs):
        started = time.perf_counter()
        try:
            result = await method(*args, **kwargs)
        except BaseException as exc:
            PROVIDER_CALLS.labels(provider, operation, _outcome(exc)).inc()
            raise
        finally:
            latency.observe(time.perf_counter() - started)
        calls_ok.inc()
        return result

    return call


def _outcome(exc: BaseException) -> str:
    retryable = getattr(exc, "retryable", None)
    if isinstance(exc, TimeoutError):
        return "timeout"
    if retryable is True:
        return "unavailable"
    if retryable is False:
        return "rejected"
    return "error"


# Circuit breakers (resilience/breaker.py): this process's latest view of each circuit
# (with PAYMENTS_REDIS_URL every process shares the circuit, so max() is the truth).
CIRCUIT_STATE = Gauge("payments_provider_circuit_state",
                      "Provider circuit: 0 closed, 1 half-open (a probe is out), 2 open (calls fail fast).",
                      ["provider", "account"], multiprocess_mode="max")
SHORT_CIRCUITED = Counter("payments_provider_short_circuited_total",
                          "Provider calls refused at once because the provider's circuit is open.",
                          ["provider", "account", "operation"])
QUOTA_REJECTED = Counter("payments_quota_rejected_total", "Requests refused by a caller's quota.",
                         ["caller", "limit"])
