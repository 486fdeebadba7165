"""The auth cache in-process, with a scripted inner authenticator and clock: a key
whose entry expired is validated once however many requests bring it at once; a
refusal is shared by those requests but not remembered; a request that goes away does
not cancel the validation for the others. And the operator's gateway grants."""

from __future__ import annotations

import asyncio

import pytest

from payments_svc.auth import cache
from payments_svc.auth.authenticators import CachingAuthenticator, GatewayGrants
from payments_svc.auth.caller import Caller
from payments_svc.domain.errors import UnauthenticatedError


class ScriptedAuth:
    """Answers each validation when the test opens the gate; counts validations."""

    def __init__(self, answer: Caller | Exception):
        self.answer = answer
        self.calls = 0
        self.gate = asyncio.Event()

    async def authenticate(self, api_key: str) -> Caller:
        self.calls += 1
        await self.gate.wait()
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer

    async def close(self) -> None:
        pass


@pytest.fixture
def clock(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(cache.time, "monotonic", lambda: now[0])
    return now


async def _settle() -> None:
    """Lets every ready task run up to its next wait (the requests, then the validation they started)."""
    for _ in range(5):
        await asyncio.sleep(0)


async def _together(count: int, call) -> list[asyncio.Task]:
    tasks = [asyncio.ensure_future(call()) for _ in range(count)]
    await _settle()
    return tasks


async def test_an_expired_entry_is_validated_once_for_fifty_concurrent_requests(clock):
    inner = ScriptedAuth(Caller("shop"))
    inner.gate.set()
    auth = CachingAuthenticator(inner, ttl_seconds=30)
    assert await auth.authenticate("k") == Caller("shop") and inner.calls == 1
    clock[0] += 10
    assert await auth.authenticate("k") == Caller("shop") and inner.calls == 1  # cached

    clock[0] += 31  # expired
    inner.gate.clear()
    tasks = await _together(50, lambda: auth.authenticate("k"))
    assert inner.calls == 2
    inner.gate.set()
    assert await asyncio.gather(*tasks) == [Caller("shop")] * 50
    assert inner.calls == 2
    assert await auth.authenticate("k") == Caller("shop") and inner.calls == 2  # cached again


async def test_a_refusal_is_shared_by_the_concurrent_requests_but_not_remembered(clock):
    inner = ScriptedAuth(UnauthenticatedError("invalid or expired api key"))
    auth = CachingAuthenticator(inner, ttl_seconds=30)
    tasks = await _together(20, lambda: auth.authenticate("bad"))
    inner.gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, UnauthenticatedError) for r in results) and inner.calls == 1
    with pytest.raises(UnauthenticatedError):
        await auth.authenticate("bad")
    assert inner.calls == 2


async def test_other_keys_fly_separately_and_a_waiter_going_away_does_not_cancel_the_flight(clock):
    inner = ScriptedAuth(Caller("shop"))
    auth = CachingAuthenticator(inner, ttl_seconds=0)  # nothing is cached: only flights are shared
    first, second = await _together(2, lambda: auth.authenticate("k"))
    other = asyncio.ensure_future(auth.authenticate("k2"))
    await _settle()
    assert inner.calls == 2  # one per key
    first.cancel()
    await _settle()
    inner.gate.set()
    assert await second == Caller("shop") and await other == Caller("shop")
    assert first.cancelled() and inner.calls == 2


async def test_gateway_services_act_for_any_caller():
    for caller, expected in ((Caller("payments-gateway", key_id="psk_gw01"),  # the key stays known (audit log)
                              Caller("payments-gateway", frozenset({"*"}), key_id="psk_gw01")),
                             (Caller("payments-gateway", frozenset({"billing"})),
                              Caller("payments-gateway", frozenset({"billing", "*"}))),
                             (Caller("shop"), Caller("shop"))):
        inner = ScriptedAuth(caller)
        inner.gate.set()
        granted = await GatewayGrants(inner, frozenset({"payments-gateway", "edge"})).authenticate("k")
        assert granted == expected
    assert Caller("payments-gateway", frozenset({"*"})).may_act_for("anyone")
