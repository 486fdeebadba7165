"""RefundPayment in the service layer on SQLite and MariaDB, with the sandbox provider:
the refund ledger, idempotency, and the guard that refunds never exceed the payment."""

from __future__ import annotations

import asyncio

import pytest

from payments_svc.auth.caller import Caller
from payments_svc.domain.enums import PaymentStatus
from payments_svc.domain.errors import ErrorKind, NotFoundError, PaymentsError, ProviderError, ValidationError
from payments_svc.domain.payment import CreatePaymentCommand, ProviderCallback
from payments_svc.domain.refund import RefundCommand, RefundStatus
from payments_svc.providers.base import RefundSnapshot

SHOP = Caller("shop")


async def paid_payment(service, request_id: str = "req-1"):
    command = CreatePaymentCommand(
        request_id=request_id, caller_service="shop", resource_type="order", resource_id="o-1", customer_ref="",
        amount_cents=1500, currency="usd", payment_method=1, payment_type=1, provider=0, recurring_interval="",
        recurring_interval_count=0, status_callback_url="https://shop.example/cb", success_url="", cancel_url="", metadata={},
    )
    payment = (await service.create_payment(SHOP, command)).payment
    provider = service.providers.get(payment.provider)
    body, signature = provider.build_event(payment, "pay")
    await service.handle_provider_callback(ProviderCallback("rq", "sandbox", payment.provider_callback_hash, signature, body))
    return await service.get_payment(SHOP, payment.id)


async def test_partial_then_full_refund(container):
    service = container.service
    payment = await paid_payment(service)
    first = await service.refund_payment(SHOP, RefundCommand(payment.id, "r-1", 400, "duplicate"))
    assert (first.refund.status, first.refund.amount_cents, first.replayed) == (RefundStatus.SUCCEEDED, 400, False)
    assert (first.payment.refunded_cents, first.payment.refundable_cents) == (400, 1100)
    again = await service.refund_payment(SHOP, RefundCommand(payment.id, "r-1", 400, "duplicate"))
    assert (again.refund.id, again.replayed, again.payment.refunded_cents) == (first.refund.id, True, 400)
    with pytest.raises(PaymentsError) as reused:
        await service.refund_payment(SHOP, RefundCommand(payment.id, "r-1", 500, "duplicate"))
    assert reused.value.kind == ErrorKind.IDEMPOTENCY_KEY_REUSED

    rest = await service.refund_payment(SHOP, RefundCommand(payment.id, "r-2", 0, ""))
    assert rest.refund.amount_cents == 1100
    assert (rest.payment.status, rest.payment.refunded_cents, rest.payment.refundable_cents) == (PaymentStatus.PAID, 1500, 0)
    events = [e.event_type for e in await service.list_payment_events(SHOP, payment.id, limit=0, after_event_id=0)]
    assert events[-4:] == ["refund_requested", "refund_created", "refund_requested", "refund_created"]


async def test_concurrent_refunds_never_exceed_the_payment(container):
    service = container.service
    payment = await paid_payment(service)
    results = await asyncio.gather(
        *(service.refund_payment(SHOP, RefundCommand(payment.id, f"r-{i}", 1000, "")) for i in range(3)),
        return_exceptions=True,
    )
    succeeded = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, PaymentsError)]
    assert len(succeeded) == 1 and len(refused) == 2
    assert all(r.kind == ErrorKind.FAILED_PRECONDITION and "more than refundable_cents" in r.message for r in refused)
    current = await service.get_payment(SHOP, payment.id)
    assert (current.refunded_cents, current.refundable_cents) == (1000, 500)


async def test_refund_rules(container):
    service = container.service
    with pytest.raises(ValidationError, match="request_id is required"):
        await service.refund_payment(SHOP, RefundCommand(1, "", 0, ""))
    with pytest.raises(ValidationError, match="amount_cents must be >= 0"):
        await service.refund_payment(SHOP, RefundCommand(1, "r", -1, ""))
    with pytest.raises(ValidationError, match="invalid payment id"):
        await service.refund_payment(SHOP, RefundCommand(0, "r", 1, ""))
    payment = await paid_payment(service)
    with pytest.raises(NotFoundError):  # another caller's payment is as good as absent
        await service.refund_payment(Caller("billing"), RefundCommand(payment.id, "r", 1, ""))
    with pytest.raises(PaymentsError, match="more than refundable_cents 1500"):
        await service.refund_payment(SHOP, RefundCommand(payment.id, "r", 1501, ""))


async def test_a_provider_refusal_releases_the_reservation_and_is_replayed(container):
    service = container.service
    payment = await paid_payment(service)
    provider = service.providers.get(payment.provider)

    async def refuse(payment, refund, idempotency_key) -> RefundSnapshot:
        raise ProviderError("charge is disputed", retryable=False, kind=ErrorKind.FAILED_PRECONDITION)

    provider.refund = refuse
    for _ in range(2):
        with pytest.raises(PaymentsError, match="charge is disputed"):
            await service.refund_payment(SHOP, RefundCommand(payment.id, "r-1", 100, ""))
    assert (await service.get_payment(SHOP, payment.id)).refundable_cents == 1500
