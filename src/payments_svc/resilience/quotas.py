"""Quotas per caller service: a token bucket per RPC class (create: the calls that write
and reach providers; read: the rest) and an optional cap on open payments. Over a limit
the request is refused before any work: 429 / RESOURCE_EXHAUSTED with Retry-After (gRPC:
RetryInfo), so one noisy caller cannot take the capacity the others need.

Limits are the configured default (PAYMENTS_QUOTA_*) unless `payments-svc keys limits`
set others for the service (caller_limits); every process rereads those every
PAYMENTS_QUOTA_REFRESH_SECONDS. The buckets live in the shared store (store.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import structlog

from .. import metrics
from ..db.engine import Database
from ..domain.errors import ErrorKind, PaymentsError
from ..repository.caller_limits import CallerLimitsRepository
from .settings import Limits, ResilienceSettings
from .store import LocalStore, RedisStore, retry_after

log = structlog.get_logger("payments.resilience")

CREATE, READ = "create", "read"
# The create class: what writes or reaches a provider (HTTP: every POST, the same operations).
CREATE_RPCS = frozenset({"CreatePayment", "CancelPayment", "RefundPayment", "ReplayCallback", "VerifyPayment"})
# Never limited: the health check, and provider webhooks a gateway forwards (a refused one
# would only come again, and the payment's outcome with it would be late).
UNLIMITED_RPCS = frozenset({"Health", "HandleProviderCallback"})


def rpc_class(rpc: str) -> str | None:
    """The class of a gRPC method of payments.PaymentsService (None: not limited)."""
    if rpc in UNLIMITED_RPCS:
        return None
    return CREATE if rpc in CREATE_RPCS else READ


def http_class(method: str, path: str) -> str | None:
    """The class of an HTTP request, as rpc_class for the gRPC method it stands for."""
    if path == "/health" or path.startswith("/webhooks/"):
        return None
    return CREATE if method == "POST" else READ


class QuotaExceededError(PaymentsError):
    kind = ErrorKind.RESOURCE_EXHAUSTED


class Quotas:
    def __init__(self, db: Database, store: LocalStore | RedisStore, settings: ResilienceSettings):
        self._db = db
        self._store = store
        self._default = settings.default_limits
        self._refresh_seconds = settings.limits_refresh_seconds
        self._by_service: dict[str, Limits] = {}
        self._loaded_at = float("-inf")
        self._loading = asyncio.Lock()

    async def limits(self, service: str) -> Limits:
        stale = time.monotonic() - self._loaded_at >= self._refresh_seconds
        # One reload at a time; while it runs the others use the limits read before, except
        # before the first read, when there are none to use.
        if stale and (not self._loading.locked() or self._loaded_at == float("-inf")):
            async with self._loading:
                if time.monotonic() - self._loaded_at >= self._refresh_seconds:
                    await self._reload()
        return self._by_service.get(service, self._default)

    async def _reload(self) -> None:
        try:
            async with self._db.read() as conn:
                rows = await CallerLimitsRepository(conn).all()
        except Exception as exc:  # the database is away: the limits last read stay in force
            log.warning("quota_limits_unreadable", error=f"{type(exc).__name__}: {exc}")
        else:
            self._by_service = {r.service_name: dataclasses.replace(self._default, **r.values) for r in rows}
        self._loaded_at = time.monotonic()

    async def admit(self, service: str, rpc_class: str | None) -> None:
        """Takes one request of the class from the service's bucket; raises QuotaExceededError."""
        if rpc_class is None:
            return
        rate, burst = (await self.limits(service)).bucket(rpc_class)
        if not rate:
            return
        wait = await self._store.take(f"bucket:{rpc_class}:{service}", rate, burst, time.time())
        if wait:
            metrics.QUOTA_REJECTED.labels(service, f"{rpc_class}_rps").inc()
            seconds = retry_after(wait)
            raise QuotaExceededError(f"rate limit exceeded: caller {service} may make {rate:g} {rpc_class} requests "
                                     f"per second (burst {burst}); retry in {seconds} s", retry_after_seconds=seconds)

    async def check_open_payments(self, caller_service: str) -> None:
        """Refuses a new payment while the caller service has its cap of open ones."""
        cap = (await self.limits(caller_service)).max_open_payments
        if not cap:
            return
        async with self._db.read() as conn:
            open_now = await CallerLimitsRepository(conn).count_open(caller_service, cap)
        if open_now >= cap:
            metrics.QUOTA_REJECTED.labels(caller_service, "open_payments").inc()
            raise QuotaExceededError(f"caller_service {caller_service} has {cap} open payments, its limit; "
                                     "retry once some are paid, canceled or expired", field="caller_service",
                                     retry_after_seconds=60)
