"""The auth cache's edges, in-process with a scripted clock: each key is validated as itself
(never another's answer), an entry lives exactly its TTL, a TTL of 0 caches nothing, the
oldest entry goes first when the cache is full (10,000 keys unless told), and a validation that fails after every
waiter left does not leave an unretrieved error behind."""

from __future__ import annotations

import asyncio
import gc

import pytest

from payments_svc.auth import cache
from payments_svc.auth.authenticators import CachingAuthenticator, GatewayGrants
from payments_svc.auth.cache import SingleFlight, TTLCache
from payments_svc.auth.caller import Caller
from payments_svc.domain.errors import UnauthenticatedError


class KeyedAuth:
    """Answers with a caller named after the key it was given; counts validations per key."""

    def __init__(self):
        self.calls: dict[str, int] = {}

    async def authenticate(self, api_key: str) -> Caller:
        self.calls[api_key] = self.calls.get(api_key, 0) + 1
        if not api_key.startswith("psk_"):
            raise UnauthenticatedError("invalid or expired api key")
        return Caller(api_key.removeprefix("psk_"))

    async def close(self) -> None:
        pass


@pytest.fixture
def clock(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(cache.time, "monotonic", lambda: now[0])
    return now


async def test_each_key_is_validated_as_itself_and_cached_under_itself(clock):
    inner = KeyedAuth()
    auth = CachingAuthenticator(inner, ttl_seconds=30)
    assert await auth.authenticate("psk_shop") == Caller("shop")
    assert await auth.authenticate("psk_ads") == Caller("ads")
    assert await auth.authenticate("psk_shop") == Caller("shop")
    assert inner.calls == {"psk_shop": 1, "psk_ads": 1}
    with pytest.raises(UnauthenticatedError):
        await auth.authenticate("wrong")


async def test_gateway_grants_validate_the_key_given():
    auth = GatewayGrants(KeyedAuth(), frozenset({"gateway"}))
    assert await auth.authenticate("psk_shop") == Caller("shop")
    assert await auth.authenticate("psk_gateway") == Caller("gateway", frozenset({"*"}))


def test_an_entry_lives_exactly_its_ttl(clock):
    entries: TTLCache[str] = TTLCache(10)
    entries.put("k", "v")
    clock[0] = 1010.0
    assert entries.get("k") == "v"  # at the very end of its TTL: still valid
    clock[0] = 1010.001
    assert entries.get("k") is None
    clock[0] = 1000.0
    assert entries.get("k") is None  # gone for good, not merely hidden


@pytest.mark.parametrize("ttl, cached", [(0, False), (-1, False), (0.5, True), (1, True)])
def test_a_ttl_of_zero_caches_nothing(clock, ttl, cached):
    entries: TTLCache[str] = TTLCache(ttl)
    entries.put("k", "v")
    assert (entries.get("k") == "v") is cached


def test_a_full_cache_drops_its_oldest_entry(clock):
    entries: TTLCache[str] = TTLCache(60, max_entries=2)
    entries.put("a", "1")
    entries.put("b", "2")
    assert (entries.get("a"), entries.get("b")) == ("1", "2")  # full, not over
    entries.put("a", "1 again")  # refreshed: now the newest
    entries.put("c", "3")
    assert (entries.get("a"), entries.get("b"), entries.get("c")) == ("1 again", None, "3")


async def test_a_failure_nobody_waits_for_any_more_is_still_retrieved():
    problems: list[dict] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: problems.append(context))
    gate = asyncio.Event()

    async def failing() -> str:
        await gate.wait()
        raise UnauthenticatedError("invalid or expired api key")

    flights: SingleFlight[str] = SingleFlight()
    waiter = asyncio.create_task(flights.run("k", failing))
    await asyncio.sleep(0)
    waiter.cancel()  # the only request went away
    with pytest.raises(asyncio.CancelledError):
        await waiter
    gate.set()
    for _ in range(5):
        await asyncio.sleep(0)
    gc.collect()
    assert problems == []
    # A cancelled flight (the loop shutting down) is not an error either.
    flight = asyncio.create_task(flights.run("other", failing))
    await asyncio.sleep(0)
    for task in asyncio.all_tasks():
        if task is not asyncio.current_task() and not task.done():
            task.cancel()
    await asyncio.gather(flight, return_exceptions=True)
    for _ in range(5):
        await asyncio.sleep(0)
    gc.collect()
    assert problems == []


def test_by_default_the_cache_holds_ten_thousand_keys(clock):
    held = TTLCache(ttl_seconds=60)
    for i in range(10_001):
        held.put(f"psk_{i}", i)
    assert held.get("psk_0") is None  # the oldest went to make room
    assert held.get("psk_1") == 1 and held.get("psk_10000") == 10_000
