"""A circuit breaker per provider account. Calls that fail for the provider's reasons
(timeouts, 5xx, refused connections: retryable ProviderErrors) count; a caller's own
mistake (a 4xx, a non-retryable ProviderError) is an answer, so it counts as success.
Consecutive failures, or a failure rate over a window, open the circuit: calls fail at
once with UNAVAILABLE naming the provider and a Retry-After, until the cool-down ends
and one probe goes through (half-open); its success closes the circuit."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog

from .. import metrics
from ..domain.errors import PaymentsError, ProviderError
from .settings import BreakerSettings
from .store import CLOSED, OPENED, PROBE, REJECT, CircuitRules, LocalStore, RedisStore, retry_after

log = structlog.get_logger("payments.resilience")
T = TypeVar("T")

DEADLINE_MARGIN_SECONDS = 0.02
DEFAULT_ACCOUNT = "default"  # provider accounts (several credentials per provider) key their own circuits
# Gauge values of payments_provider_circuit_state.
STATE_CLOSED, STATE_HALF_OPEN, STATE_OPEN = 0, 1, 2


class CircuitOpenError(ProviderError):
    """Refused without calling the provider: nothing was sent, so nothing exists there."""

    def __init__(self, provider: str, seconds: float):
        wait = retry_after(seconds)
        super().__init__(f"payment provider {provider} is unavailable (its circuit is open after repeated failures); "
                         f"retry in {wait} s", retryable=True)
        self.provider = provider
        self.retry_after_seconds = wait


def _failed(exc: BaseException) -> bool:
    """Whether an exception is the provider's failure (not the caller's mistake)."""
    if isinstance(exc, ProviderError):
        return exc.retryable
    if isinstance(exc, PaymentsError):
        return False  # e.g. a validation the provider module made before calling out
    return isinstance(exc, Exception)  # timeouts and anything unexpected from the call


class Breaker:
    def __init__(self, store: LocalStore | RedisStore, settings: BreakerSettings, *, timeout_seconds: float):
        self._store = store
        self._timeout = timeout_seconds
        # A probe holds the half-open circuit for at most one provider call (then the next may probe).
        self._rules = CircuitRules(settings.failure_threshold, settings.failure_rate, settings.min_calls,
                                   settings.window_seconds, settings.cooldown_seconds, timeout_seconds + 1)

    async def call(self, provider: str, account: str, operation: str, call: Callable[[], Awaitable[T]]) -> T:
        # The caller holds its own asyncio.timeout of the same length, entered just before this call.
        # Ours ends a little earlier, so the breaker sees the provider's TimeoutError rather than
        # the caller's cancellation (which a client hanging up looks just the same as).
        deadline = asyncio.get_running_loop().time() + self._timeout - DEADLINE_MARGIN_SECONDS
        key = f"circuit:{provider}:{account}"
        decision, wait = await self._store.admit(key, self._rules, time.time())
        if decision == REJECT:
            metrics.CIRCUIT_STATE.labels(provider, account).set(STATE_OPEN)
            metrics.SHORT_CIRCUITED.labels(provider, account, operation).inc()
            raise CircuitOpenError(provider, wait)
        probe = decision == PROBE
        metrics.CIRCUIT_STATE.labels(provider, account).set(STATE_HALF_OPEN if probe else STATE_CLOSED)
        try:
            async with asyncio.timeout_at(deadline):
                result = await call()
        except asyncio.CancelledError:
            if probe:
                await asyncio.shield(self._store.release_probe(key))
            raise
        except BaseException as exc:
            # Shielded: the caller's timeout may end while the outcome is being stored.
            await asyncio.shield(self._outcome(key, provider, account, operation, ok=not _failed(exc), probe=probe,
                                               error=exc))
            raise
        await asyncio.shield(self._outcome(key, provider, account, operation, ok=True, probe=probe, error=None))
        return result

    async def ensure_closed(self, provider: str, account: str) -> None:
        """Raises CircuitOpenError while calls to the provider would be refused (takes no probe)."""
        wait = await self._store.peek(f"circuit:{provider}:{account}", time.time())
        if wait > 0:
            metrics.CIRCUIT_STATE.labels(provider, account).set(STATE_OPEN)
            metrics.SHORT_CIRCUITED.labels(provider, account, "create_checkout").inc()
            raise CircuitOpenError(provider, wait)

    async def _outcome(self, key: str, provider: str, account: str, operation: str, *, ok: bool, probe: bool,
                       error: BaseException | None) -> None:
        transition = await self._store.record(key, self._rules, ok, probe, time.time())
        if transition is None:
            return
        if transition == CLOSED:
            metrics.CIRCUIT_STATE.labels(provider, account).set(STATE_CLOSED)
            log.info("provider_circuit_closed", provider=provider, account=account, operation=operation,
                     message=f"a probe call to {provider} succeeded: calls go through again")
            return
        metrics.CIRCUIT_STATE.labels(provider, account).set(STATE_OPEN)
        reason = "timeout" if isinstance(error, TimeoutError) else (
            getattr(error, "message", None) or f"{type(error).__name__}: {error}")
        log.warning("provider_circuit_opened", provider=provider, account=account, operation=operation,
                    reason=reason, probe_failed=transition != OPENED,
                    message=f"calls to {provider} fail fast for {self._rules.cooldown_seconds:g} s, then one probe")
