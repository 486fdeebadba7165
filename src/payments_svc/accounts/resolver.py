"""Which provider object serves a caller's create, and a payment's later operations.

Decrypted credentials and the providers built from them are cached per process for
PAYMENTS_ACCOUNT_CACHE_SECONDS, so the hot path neither reads provider_accounts nor
decrypts per request. The price of the cache: a change made with `payments-svc accounts`
(an added, disabled or rotated account) reaches every process within that TTL, not at
once. A disabled account is remembered as disabled for the same TTL, so a flood of
webhooks or retries for it does not reach the database either.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from ..domain.enums import ProviderType
from ..domain.errors import ErrorKind, NotFoundError, ProviderError, ServiceUnavailableError
from ..metrics import MeteredProvider
from ..providers.base import ClosableProvider, Provider
from .credentials import AccountCredentials
from .encryption import UndecryptableError
from .store import AccountKeysMissing, AccountStore, decrypt


class AccountDisabledError(ProviderError):
    def __init__(self, account_id: int, provider: ProviderType, caller_service: str):
        super().__init__(
            f"provider account {account_id} ({provider.code}, caller service {caller_service}) is disabled; "
            "payments created with it can no longer reach the provider through payments-svc",
            retryable=False, kind=ErrorKind.FAILED_PRECONDITION)


@dataclass(slots=True)
class _Cached:
    expires: float
    updated_at: datetime | None
    provider: Provider | None  # None: `error` says why the account cannot be used
    error: Exception | None = None


class AccountProviders:
    def __init__(self, store: AccountStore, build: Callable[[AccountCredentials], Provider], ttl_seconds: float,
                 clock: Callable[[], float] = time.monotonic, guard: Callable[[Provider], Provider] = lambda p: p):
        self._store = store
        self._build = build
        self._guard = guard  # the circuit breaker, keyed by (provider, account)
        self._ttl = ttl_seconds
        self._clock = clock
        self._accounts: dict[int, _Cached] = {}
        self._callers: dict[tuple[str, ProviderType], tuple[float, int | None]] = {}
        self._loading: dict[int, asyncio.Lock] = {}
        self._retired: list[Provider] = []  # replaced after a rotation; closed at shutdown (calls may be in flight)

    async def account_of(self, caller_service: str, provider: ProviderType) -> int | None:
        """The caller's newest enabled account at this provider; None: the default account."""
        key = (caller_service, provider)
        cached = self._callers.get(key)
        if cached is not None and cached[0] > self._clock():
            return cached[1]
        row = await self._store.enabled_for(caller_service, provider)
        account_id = row.id if row else None
        self._callers[key] = (self._clock() + self._ttl, account_id)
        return account_id

    async def provider(self, account_id: int, provider: ProviderType) -> Provider:
        """The provider built from this account's credentials. Raises NotFoundError (no
        such account of that provider), AccountDisabledError, or ServiceUnavailableError
        when its secrets cannot be decrypted here."""
        cached = self._accounts.get(account_id)
        if cached is None or cached.expires <= self._clock():
            lock = self._loading.setdefault(account_id, asyncio.Lock())
            async with lock:  # one load per account at a time; the others use its result
                cached = self._accounts.get(account_id)
                if cached is None or cached.expires <= self._clock():
                    cached = await self._load(account_id, cached)
                    self._accounts[account_id] = cached
        if cached.error is not None:
            raise cached.error
        if cached.provider.type != provider:
            raise NotFoundError(f"provider account {account_id} is not a {provider.code} account")
        return cached.provider

    async def _load(self, account_id: int, previous: _Cached | None) -> _Cached:
        row = await self._store.get(account_id)
        expires = self._clock() + self._ttl
        if row is None:
            return _Cached(expires, None, None, NotFoundError(f"provider account {account_id} not found"))
        if not row.enabled:
            return _Cached(expires, row.updated_at, None, AccountDisabledError(row.id, row.provider, row.caller_service))
        if previous is not None and previous.provider is not None and previous.updated_at == row.updated_at:
            return _Cached(expires, row.updated_at, previous.provider)  # unchanged: keep its connections
        try:
            credentials = decrypt(self._store.keys("provider accounts are in use"), row)
        except (AccountKeysMissing, UndecryptableError) as exc:
            # Not cached: an operator fixing the keys should not wait for a TTL.
            raise ServiceUnavailableError(f"provider account {account_id} cannot be used: {exc}") from None
        if previous is not None and previous.provider is not None:
            self._retired.append(previous.provider)
        return _Cached(expires, row.updated_at, self._guard(MeteredProvider(self._build(credentials), account_id=account_id)))

    async def close(self) -> None:
        for provider in [*self._retired, *(c.provider for c in self._accounts.values() if c.provider is not None)]:
            if isinstance(provider, ClosableProvider):
                await provider.close()
