"""The service's answers in-process on SQLite and MariaDB: list filters and paging as the
repository applies them, and the idempotency errors' exact wording (what the caller reads
to decide whether to retry or use a new request_id)."""

from __future__ import annotations

import asyncio

import pytest

from payments_svc.domain.enums import PaymentStatus, ProviderType
from payments_svc.domain.errors import ErrorKind, IdempotencyInProgressError, IdempotencyKeyReusedError
from payments_svc.domain.payment import ListPaymentsQuery

from .test_payment_service import SHOP, command, service  # noqa: F401  (fixture)


async def test_list_filters_by_status_and_provider(service):  # noqa: F811
    pending = (await service.create_payment(SHOP, command("q-1", resource_id="o-1"))).payment
    canceled = (await service.create_payment(SHOP, command("q-2", resource_id="o-2"))).payment
    await service.cancel_payment(SHOP, canceled.id, "changed my mind")

    def ids(**filters):
        return service.list_payments(SHOP, ListPaymentsQuery(**filters))

    assert [p.id for p in await ids(status=PaymentStatus.PENDING)] == [pending.id]
    assert [p.id for p in await ids(status=PaymentStatus.CANCELED)] == [canceled.id]
    assert [p.id for p in await ids(provider=ProviderType.SANDBOX)] == [canceled.id, pending.id]  # newest first
    assert await ids(provider=ProviderType.STRIPE) == []
    assert [p.id for p in await ids(status=PaymentStatus.PENDING, provider=ProviderType.SANDBOX)] == [pending.id]
    assert [p.id for p in await ids(request_id="q-2")] == [canceled.id]
    assert [p.id for p in await ids(resource_type="order", resource_id="o-1")] == [pending.id]
    assert [p.id for p in await ids(limit=1, offset=1)] == [pending.id]


async def test_a_reused_key_tells_the_caller_to_use_a_new_request_id(service):  # noqa: F811
    await service.create_payment(SHOP, command("k-1"))
    with pytest.raises(IdempotencyKeyReusedError) as err:
        await service.create_payment(SHOP, command("k-1", amount_cents=1600))
    assert err.value.message == (
        "request_id was already used with different parameters; use a new request_id for a new payment")
    assert (err.value.kind, err.value.field, err.value.retry_after_seconds) == (
        ErrorKind.IDEMPOTENCY_KEY_REUSED, "request_id", None)


async def test_a_key_in_flight_tells_the_caller_to_retry_shortly(service):  # noqa: F811
    service.provider.gate = asyncio.Event()
    first = asyncio.create_task(service.create_payment(SHOP, command("k-2")))
    await service.provider.create_entered.wait()
    with pytest.raises(IdempotencyInProgressError) as err:
        await service.create_payment(SHOP, command("k-2"))
    service.provider.gate.set()
    await first
    assert err.value.message == (
        "a request with this request_id is still in progress; retry shortly with the same request_id")
    assert (err.value.kind, err.value.field, err.value.retry_after_seconds) == (
        ErrorKind.IDEMPOTENCY_IN_PROGRESS, None, 1)
