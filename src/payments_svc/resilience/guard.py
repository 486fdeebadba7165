"""Every call to a provider goes through its circuit: the registry wraps each provider
in a GuardedProvider, so creates, cancels, refunds and the jobs' reads (reconcile,
expiry) all respect it without each call site knowing."""

from __future__ import annotations

import inspect
from typing import Any

from .breaker import DEFAULT_ACCOUNT, Breaker

# The methods that reach the provider over the network (parse_callback and validate do not).
GUARDED_OPERATIONS = frozenset({"create_checkout", "cancel", "refund", "fetch_status", "fetch_refunds", "release"})


class GuardedProvider:
    def __init__(self, inner: Any, breaker: Breaker):
        self._inner = inner
        self._breaker = breaker
        self.type = inner.type
        self.account_id = getattr(inner, "account_id", None)  # MeteredProvider names the provider account
        self._circuit_account = DEFAULT_ACCOUNT if self.account_id is None else str(self.account_id)
        self._guarded: dict[str, Any] = {}

    async def ensure_available(self) -> None:
        """Raises CircuitOpenError while this provider's circuit refuses calls."""
        await self._breaker.ensure_closed(self.type.code, self._circuit_account)

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._inner, name)
        if name not in GUARDED_OPERATIONS or not inspect.iscoroutinefunction(attribute):
            return attribute
        guarded = self._guarded.get(name)
        if guarded is None:
            guarded = self._guarded[name] = self._guard(name, attribute)
        return guarded

    def _guard(self, operation: str, method):
        breaker, provider, account = self._breaker, self.type.code, self._circuit_account

        async def call(*args, **kwargs):
            return await breaker.call(provider, account, operation, lambda: method(*args, **kwargs))

        return call


async def ensure_available(provider: Any) -> None:
    """Before reserving a payment at a provider: refuses at once (CircuitOpenError) while its
    circuit is open, so that no payment is left half-made for a provider known to be down."""
    if isinstance(provider, GuardedProvider):
        await provider.ensure_available()
