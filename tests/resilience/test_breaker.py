"""The circuit breaker on both stores: it opens after the threshold (consecutive failures or
a failure rate), fails fast while open (no call waits for the provider), lets one probe
through after the cool-down and closes on its success; a caller's own mistakes never
count. With Redis, two breakers (two processes) share one circuit."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from structlog.testing import capture_logs

from payments_svc import metrics
from payments_svc.domain.errors import ProviderError
from payments_svc.resilience.breaker import Breaker, CircuitOpenError
from payments_svc.resilience.guard import GuardedProvider, ensure_available
from payments_svc.resilience.settings import BreakerSettings
from payments_svc.resilience.store import RedisStore

from .conftest import KEY_PREFIX, REDIS_URL, forget


class Provider:
    """A provider double whose next calls fail, hang, or answer, as the test says."""

    def __init__(self) -> None:
        self.calls = 0
        self.mode = "ok"

    async def __call__(self) -> str:
        self.calls += 1
        if self.mode == "fail":
            raise ProviderError("provider answered 503", retryable=True)
        if self.mode == "reject":
            raise ProviderError("amount too small", retryable=False)
        if self.mode == "hang":
            await asyncio.sleep(3600)
        if self.mode == "slow":
            await asyncio.sleep(0.2)
        return "created"


def breaker(store, **settings) -> Breaker:
    timeout = settings.pop("timeout", 5.0)
    defaults = dict(failure_threshold=3, failure_rate=1.0, min_calls=1000, window_seconds=60, cooldown_seconds=60)
    return Breaker(store, BreakerSettings(**{**defaults, **settings}), timeout_seconds=timeout)


async def call(b: Breaker, name: str, provider: Provider):
    return await b.call(name, "default", "create_checkout", provider)


@pytest.fixture
async def cleanup(name):
    yield
    await forget(f"circuit:{name}:default")


async def open_it(b: Breaker, name: str, provider: Provider, failures: int = 3) -> None:
    provider.mode = "fail"
    for _ in range(failures):
        with pytest.raises(ProviderError):
            await call(b, name, provider)


async def test_opens_after_consecutive_failures_then_fails_fast(store, name, cleanup):
    b, provider = breaker(store), Provider()
    provider.mode = "fail"
    for _ in range(2):
        with pytest.raises(ProviderError):
            await call(b, name, provider)
    provider.mode = "ok"
    assert await call(b, name, provider) == "created"  # a success resets the count
    with capture_logs() as logs:
        await open_it(b, name, provider)
    assert provider.calls == 6
    assert [e["event"] for e in logs if e["event"].startswith("provider_circuit")] == ["provider_circuit_opened"]
    assert metrics.CIRCUIT_STATE.labels(name, "default")._value.get() == 2

    with pytest.raises(CircuitOpenError) as refused:
        await call(b, name, provider)
    assert provider.calls == 6  # refused without calling it
    assert name in refused.value.message and refused.value.retryable
    assert 58 <= refused.value.retry_after_seconds <= 60
    assert metrics.SHORT_CIRCUITED.labels(name, "default", "create_checkout")._value.get() == 1


async def test_the_callers_own_mistakes_never_open_it(store, name, cleanup):
    b, provider = breaker(store), Provider()
    provider.mode = "reject"
    for _ in range(10):
        with pytest.raises(ProviderError):
            await call(b, name, provider)
    assert provider.calls == 10


async def test_a_failure_rate_over_the_window_opens_it(store, name, cleanup):
    b, provider = breaker(store, failure_threshold=100, failure_rate=0.5, min_calls=10), Provider()
    for i in range(10):
        provider.mode = "fail" if i % 2 else "ok"
        try:
            await call(b, name, provider)
        except ProviderError:
            pass
    with pytest.raises(CircuitOpenError):
        await call(b, name, provider)
    assert provider.calls == 10


async def test_half_open_lets_one_probe_through_whose_success_closes_it(store, name, cleanup):
    b, provider = breaker(store, cooldown_seconds=0.3), Provider()
    await open_it(b, name, provider)
    await asyncio.sleep(0.35)
    provider.mode = "slow"
    calls_before = provider.calls
    with capture_logs() as logs:
        outcomes = await asyncio.gather(*(call(b, name, provider) for _ in range(5)), return_exceptions=True)
    assert provider.calls == calls_before + 1  # one probe, the others refused at once
    assert outcomes.count("created") == 1
    assert all(isinstance(o, CircuitOpenError) for o in outcomes if o != "created")
    assert "provider_circuit_closed" in [e["event"] for e in logs]
    provider.mode = "ok"
    assert await call(b, name, provider) == "created"


async def test_a_failed_probe_opens_it_again(store, name, cleanup):
    b, provider = breaker(store, cooldown_seconds=0.3), Provider()
    await open_it(b, name, provider)
    await asyncio.sleep(0.35)
    with pytest.raises(ProviderError) as probe:
        await call(b, name, provider)
    assert not isinstance(probe.value, CircuitOpenError)  # the probe reached the provider
    with pytest.raises(CircuitOpenError):
        await call(b, name, provider)


async def test_timeouts_count_and_while_open_no_call_waits_for_the_timeout(store, name, cleanup):
    b, provider = breaker(store, timeout=0.3), Provider()
    provider.mode = "hang"
    for _ in range(3):
        with pytest.raises(TimeoutError):
            # As the service calls providers: inside its own timeout of the same length.
            async with asyncio.timeout(0.3):
                await call(b, name, provider)
    for _ in range(20):
        with pytest.raises(CircuitOpenError):  # at once: the hanging provider is not called again
            await call(b, name, provider)
    assert provider.calls == 3


async def test_two_processes_share_one_circuit_through_redis(store, name, cleanup):
    if not isinstance(store, RedisStore):
        pytest.skip("one process's own circuits are not shared (by design)")
    other_store = RedisStore(REDIS_URL, KEY_PREFIX)
    try:
        one, other, provider = breaker(store), breaker(other_store), Provider()
        await open_it(one, name, provider)
        with pytest.raises(CircuitOpenError):
            await call(other, name, provider)
        assert provider.calls == 3
    finally:
        await other_store.close()


async def test_a_redis_that_does_not_answer_leaves_each_process_its_own_circuit(name):
    dead = RedisStore("redis://127.0.0.1:1/0", KEY_PREFIX)  # nothing listens on port 1
    try:
        b, provider = breaker(dead), Provider()
        with capture_logs() as logs:
            await open_it(b, name, provider)
            with pytest.raises(CircuitOpenError):
                await call(b, name, provider)
        assert "redis_unavailable" in [e["event"] for e in logs]
    finally:
        await dead.close()


class AccountProvider:
    """A provider object as the registry holds it: its type's code and the account it calls with."""

    def __init__(self, code: str, account_id: int | None) -> None:
        self.type = SimpleNamespace(code=code)
        self.account_id = account_id
        self.double = Provider()

    async def create_checkout(self) -> str:
        return await self.double()


async def test_each_provider_account_has_its_own_circuit(store, name):
    b = breaker(store)
    shops, default = (GuardedProvider(AccountProvider(name, account_id), b) for account_id in (7, None))
    shops.double.mode = "fail"
    try:
        for _ in range(3):
            with pytest.raises(ProviderError):
                await shops.create_checkout()
        with pytest.raises(CircuitOpenError):  # the caller's own account is open ...
            await ensure_available(shops)
        await ensure_available(default)  # ... the environment's account is not
        assert await default.create_checkout() == "created"
        assert shops.double.calls == 3 and default.double.calls == 1
    finally:
        await forget(f"circuit:{name}:7", f"circuit:{name}:default")
