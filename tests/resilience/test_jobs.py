"""Reconcile and expiry respect the circuit: while a provider's circuit is open they leave
its payments for a later run without calling it (deferred, not failed), and call it again
once the circuit lets calls through."""

from __future__ import annotations

import asyncio

import pytest

from payments_svc.auth.caller import Caller
from payments_svc.domain.enums import PaymentStatus, ProviderType
from payments_svc.domain.errors import ProviderError
from payments_svc.jobs.expire import PendingExpirer
from payments_svc.jobs.reconcile import Reconciler
from payments_svc.providers.registry import ProviderRegistry
from payments_svc.resilience.breaker import Breaker
from payments_svc.resilience.store import LocalStore

from ..jobs.helpers import ScriptedProvider, command
from ..jobs.test_reconcile_expire import STALE, age

SHOP = Caller("shop")


@pytest.fixture
async def guarded(make_container):
    container = await make_container(PAYMENTS_PENDING_TIMEOUT_SECONDS="600", PAYMENTS_BREAKER_FAILURE_THRESHOLD="2",
                                     PAYMENTS_BREAKER_COOLDOWN_SECONDS="4", **STALE)
    provider = ScriptedProvider()
    settings = container.settings
    container.service.providers = ProviderRegistry(
        [provider], ProviderType.SANDBOX,
        Breaker(LocalStore(), settings.resilience.breaker, timeout_seconds=settings.provider_timeout_seconds))
    yield container.service, provider
    await container.close()


async def test_reconcile_and_expire_leave_a_provider_with_an_open_circuit_alone(guarded):
    service, provider = guarded
    stale = (await service.create_payment(SHOP, command("stale"))).payment
    old = (await service.create_payment(SHOP, command("old"))).payment
    await age(service, stale.id, seconds=120)
    await age(service, old.id, seconds=601)
    # Two failures open the circuit (the threshold).
    provider.status_errors = [ProviderError("503", retryable=True), ProviderError("503", retryable=True)]
    first = await Reconciler(service).run_batch(asyncio.Event())
    assert first.failed == 2 and len(provider.status_calls) == 2

    await age(service, stale.id, seconds=120, reconcile_next_at=None)
    await age(service, old.id, seconds=601, reconcile_next_at=None)
    calls = len(provider.status_calls)
    result = await Reconciler(service).run_batch(asyncio.Event())
    assert (result.deferred, result.failed) == (2, 0) and len(provider.status_calls) == calls  # not called

    expired = await PendingExpirer(service).run_batch(asyncio.Event())
    assert (expired.deferred, expired.failed) == (1, 0) and provider.cancel_keys == []
    assert (await service.get_payment(SHOP, old.id)).status == PaymentStatus.PENDING

    await asyncio.sleep(4.1)  # the cool-down (long enough that a loaded machine ends no run inside it): the next call is the probe, and it succeeds
    await age(service, old.id, seconds=601, reconcile_next_at=None, job_lease_until=None)  # the deferred claim's end
    expired = await PendingExpirer(service).run_batch(asyncio.Event())
    assert expired.done == 1 and len(provider.cancel_keys) == 1
    assert (await service.get_payment(SHOP, old.id)).status == PaymentStatus.EXPIRED
