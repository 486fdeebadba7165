"""Quotas in-process on both stores and databases: the bucket's Retry-After, limits set
with `keys limits` reaching a running service, the cap on open payments (a replay is never
refused), and the RPC classes."""

from __future__ import annotations

import asyncio

import pytest

from payments_svc.api.errors import http_error
from payments_svc.auth.caller import Caller
from payments_svc.domain.errors import ErrorKind
from payments_svc.repository.caller_limits import CallerLimitsRepository
from payments_svc.resilience.quotas import CREATE, READ, QuotaExceededError, Quotas, http_class, rpc_class
from payments_svc.resilience.settings import Limits, ResilienceSettings

from ..jobs.helpers import command
from .conftest import forget

SHOP = Caller("shop")


async def set_limits(container, service: str, **values) -> None:
    async with container.db.transaction() as conn:
        await CallerLimitsRepository(conn).set(service, values)


async def test_a_bucket_refuses_with_the_wait_until_its_next_token(container, store, name):
    quotas = Quotas(container.db, store, ResilienceSettings(default_limits=Limits(create_rps=2, create_burst=2)))
    try:
        await quotas.admit(name, CREATE)
        await quotas.admit(name, CREATE)
        with pytest.raises(QuotaExceededError) as refused:
            await quotas.admit(name, CREATE)
        status, body, headers = http_error(refused.value)
        assert (status, body["code"], headers["Retry-After"]) == (429, "resource_exhausted", "1")
        assert refused.value.kind == ErrorKind.RESOURCE_EXHAUSTED and name in refused.value.message
        await quotas.admit(name, READ)  # another class, another bucket (unlimited by default)
        await asyncio.sleep(0.55)  # 2 per second: a token is back
        await quotas.admit(name, CREATE)
    finally:
        await forget(f"bucket:create:{name}", f"bucket:read:{name}")


async def test_limits_set_with_keys_limits_reach_a_running_service(container, store, name):
    quotas = Quotas(container.db, store, ResilienceSettings(limits_refresh_seconds=0.2))
    try:
        for _ in range(20):
            await quotas.admit(name, READ)  # the default: unlimited
        await set_limits(container, name, read_rps=1.0, read_burst=1)
        await asyncio.sleep(0.25)
        await quotas.admit(name, READ)
        with pytest.raises(QuotaExceededError):
            await quotas.admit(name, READ)
        async with container.db.transaction() as conn:
            await CallerLimitsRepository(conn).delete(name)
        await asyncio.sleep(0.25)
        await quotas.admit(name, READ)  # the default again
    finally:
        await forget(f"bucket:read:{name}")


async def test_the_cap_on_open_payments_refuses_new_ones_but_never_a_replay(make_container):
    container = await make_container(PAYMENTS_QUOTA_REFRESH_SECONDS="0")
    try:
        await set_limits(container, "shop", max_open_payments=2)
        service = container.service
        first = (await service.create_payment(SHOP, command("open-1"))).payment
        await service.create_payment(SHOP, command("open-2"))
        with pytest.raises(QuotaExceededError) as refused:
            await service.create_payment(SHOP, command("open-3"))
        assert refused.value.field == "caller_service" and "2 open payments" in refused.value.message
        assert (await service.create_payment(SHOP, command("open-1"))).payment.id == first.id  # a replay
        await service.cancel_payment(SHOP, first.id)
        await service.create_payment(SHOP, command("open-3"))  # one ended: room again
    finally:
        await container.close()


def test_rpc_classes():
    writes = ("CreatePayment", "CancelPayment", "RefundPayment", "ReplayCallback", "VerifyPayment")
    assert [rpc_class(r) for r in writes] == [CREATE] * 5  # as their HTTP POSTs
    reads = ("GetPayment", "ListPayments", "ListPaymentEvents", "WatchPayment", "WatchPayments", "GetPaymentStats")
    assert [rpc_class(r) for r in reads] == [READ] * 6
    assert rpc_class("Health") is None and rpc_class("HandleProviderCallback") is None
    assert http_class("POST", "/payments") == CREATE and http_class("POST", "/payments/7/refund") == CREATE
    assert http_class("GET", "/payments/7") == READ
    assert http_class("POST", "/webhooks/providers/sandbox/abc") is None and http_class("GET", "/health") is None
