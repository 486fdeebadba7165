"""VNPay's IPNs applied by the service in this process (test_flows.py drives them through a
`payments-svc serve` child, where mutation testing cannot see them), on SQLite and MariaDB
against the VNPay test double: a paid IPN once (its repeat is a duplicate), a failed one
with VNPay's reason, and the refusals, each logged with its reason: another amount, a
signature that is not the query's, a bad hash, a transaction of no payment of ours."""

from __future__ import annotations

import uuid
from urllib.parse import quote_plus, urlencode

import pytest
import sqlalchemy as sa

from payments_svc.auth.caller import Caller
from payments_svc.db.tables import callback_deliveries, payment_callbacks
from payments_svc.domain.enums import CallbackStatus, PaymentStatus
from payments_svc.domain.errors import CallbackAmountMismatchError, CallbackRejectedError, NotFoundError
from payments_svc.domain.payment import CreatePaymentCommand
from tests.fakes.vnpay_server import FakeVnpay

SHOP = Caller("shop")


@pytest.fixture
async def vnpay():
    async with FakeVnpay() as server:
        yield server


@pytest.fixture
async def service(make_container, vnpay):
    container = await make_container(**vnpay.env(), PAYMENTS_SANDBOX_ENABLED="false")
    yield container.service
    await container.close()


async def _created(service, amount_cents: int = 250000):
    command = CreatePaymentCommand(
        request_id=f"req-{uuid.uuid4().hex}", caller_service="shop", resource_type="order", resource_id="o-1",
        customer_ref="", amount_cents=amount_cents, currency="VND", payment_method=1, payment_type=1, provider=3,
        recurring_interval="", recurring_interval_count=0, status_callback_url="https://shop.example/cb",
        success_url="", cancel_url="", metadata={},
    )
    return (await service.create_payment(SHOP, command)).payment


async def ipn(service, params: dict[str, str], signature: str | None = None):
    """The IPN as VNPay sends it: the raw query string, its vnp_SecureHash the signature."""
    query = urlencode(params, quote_via=quote_plus).encode()
    return await service.handle_account_callback("vnpay", query, params["vnp_SecureHash"] if signature is None else signature)


async def _logged(service, payment_id: int | None) -> list[tuple]:
    c = payment_callbacks.c
    where = c.payment_id.is_(None) if payment_id is None else c.payment_id == payment_id
    async with service.db.read() as conn:
        return [(CallbackStatus(r[0]), r[1]) for r in await conn.execute(sa.select(c.status, c.error).where(where).order_by(c.id))]


async def _announced(service, payment_id: int) -> list[str]:
    d = callback_deliveries.c
    async with service.db.read() as conn:
        return [r[0] for r in await conn.execute(sa.select(d.event_type).where(d.payment_id == payment_id))]


async def test_a_paid_ipn_applies_once_and_its_repeat_is_a_duplicate(service, vnpay):
    payment = await _created(service)
    params = (await vnpay.pay(payment.checkout_url)).params
    outcome = await ipn(service, params)
    assert (outcome.status, outcome.previous_status) == (CallbackStatus.PROCESSED, PaymentStatus.PENDING)
    paid = await service.get_payment(SHOP, payment.id)
    assert paid.status == PaymentStatus.PAID and paid.provider_payment_id == params["vnp_TxnRef"]
    assert await _announced(service, payment.id) == ["payment.paid"]
    assert (await ipn(service, params)).status == CallbackStatus.DUPLICATE  # VNPay repeats an IPN unchanged
    assert await _logged(service, payment.id) == [(CallbackStatus.PROCESSED, None),
                                                  (CallbackStatus.DUPLICATE, "event already processed")]
    assert await _announced(service, payment.id) == ["payment.paid"]


async def test_a_failed_ipn_ends_the_payment_with_vnpays_reason(service, vnpay):
    payment = await _created(service)
    params = (await vnpay.fail(payment.checkout_url, "51")).params
    assert (await ipn(service, params)).status == CallbackStatus.PROCESSED
    failed = await service.get_payment(SHOP, payment.id)
    assert failed.status == PaymentStatus.FAILED
    assert failed.failure_reason.startswith("VNPay: ") and failed.failure_reason.endswith("(response code 51)")
    assert await _announced(service, payment.id) == ["payment.failed"]


async def test_an_ipn_of_another_amount_is_refused_and_logged(service, vnpay):
    payment = await _created(service)
    params = (await vnpay.pay(payment.checkout_url)).params
    tampered = vnpay.sign({**params, "vnp_Amount": str(100000 * 100)})  # signed, but not the payment's amount
    with pytest.raises(CallbackAmountMismatchError) as mismatch:
        await ipn(service, tampered)
    reason = "the event reports an amount of 100000, the payment is of 250000"
    assert mismatch.value.reason == reason
    assert (await service.get_payment(SHOP, payment.id)).status == PaymentStatus.PENDING
    assert await _logged(service, payment.id) == [(CallbackStatus.REJECTED, reason)]
    assert (await ipn(service, params)).status == CallbackStatus.PROCESSED  # the true one still applies


async def test_ipns_with_a_bad_signature_or_for_no_payment_are_refused_and_logged(service, vnpay):
    payment = await _created(service)
    params = (await vnpay.pay(payment.checkout_url)).params
    with pytest.raises(CallbackRejectedError) as other_signature:
        await ipn(service, params, signature="0" * 128)
    assert other_signature.value.reason == "the signature given is not the query's vnp_SecureHash"
    forged = {**params, "vnp_SecureHash": "0" * 128}
    with pytest.raises(CallbackRejectedError) as bad_hash:
        await ipn(service, forged)
    assert bad_hash.value.reason == "invalid vnp_SecureHash"
    assert (await service.get_payment(SHOP, payment.id)).status == PaymentStatus.PENDING
    stranger = vnpay.sign({**params, "vnp_TxnRef": "NOT-OURS-1"})
    with pytest.raises(NotFoundError):
        await ipn(service, stranger)
    assert await _logged(service, None) == [
        (CallbackStatus.REJECTED, "provider callback validation failed: the signature given is not the query's vnp_SecureHash"),
        (CallbackStatus.REJECTED, "provider callback validation failed: invalid vnp_SecureHash"),
        (CallbackStatus.REJECTED, "no payment for the event's objects"),
    ]
