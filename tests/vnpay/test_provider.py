"""VnpayProvider on its own against the fake VNPay: the payment URL, the IPN's meaning,
querydr (reconcile, cancel, expiry), refunds and how VNPay's failures map to errors."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import timedelta
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest

from payments_svc.clock import utcnow
from payments_svc.domain.enums import PaymentMethod, PaymentStatus, PaymentType, ProviderType
from payments_svc.domain.errors import (
    CallbackAmountMismatchError,
    CallbackRejectedError,
    ErrorKind,
    ProviderError,
    ValidationError,
)
from payments_svc.domain.payment import CreatePaymentCommand, Payment
from payments_svc.domain.refund import Refund, RefundStatus
from payments_svc.providers.base import CancelOutcome
from payments_svc.providers.vnpay.provider import VnpayProvider
from payments_svc.providers.vnpay.settings import VnpayCredentials
from tests.fakes.vnpay_server import FakeVnpay, PageError

_ids = iter(range(1, 1_000_000))


@pytest.fixture
async def fake():
    async with FakeVnpay() as server:  # no IPN URL: the IPN is not delivered, its parameters are kept
        yield server


def make_provider(fake: FakeVnpay, **credentials) -> VnpayProvider:
    values = dict(tmn_code=fake.tmn_code, hash_secret=fake.hash_secret, payment_url=fake.payment_url,
                  api_url=fake.api_url)
    values.update(credentials)
    return VnpayProvider(VnpayCredentials(**values), public_base_url="http://payments.test/",
                         pending_timeout_seconds=3600, timeout_seconds=5)


@pytest.fixture
async def provider(fake):
    vnpay = make_provider(fake)
    yield vnpay
    await vnpay.close()


def payment(**overrides) -> Payment:
    now = utcnow()
    payment_id = next(_ids)
    fields = dict(
        id=payment_id, request_id=f"req-{payment_id}", caller_service="shop", request_fingerprint="f" * 64,
        resource_type="order", resource_id=f"o-{payment_id}", customer_ref=None, amount_cents=150000, currency="VND",
        status=PaymentStatus.PENDING, payment_method=PaymentMethod.HOSTED_CARD, payment_type=PaymentType.ONE_TIME,
        provider=ProviderType.VNPAY, recurring_interval=None, recurring_interval_count=None, provider_payment_id=None,
        provider_subscription_id=None, checkout_url=None, provider_callback_hash=str(uuid.uuid4()),
        provider_callback_url="http://payments.test/cb", status_callback_url="https://shop.example/cb",
        success_url=None, cancel_url=None, refunded_cents=0, refundable_cents=150000, received_cents=0, metadata={},
        cancel_reason=None, failure_reason=None, create_error_code=None, attention_required=False,
        create_lease_until=None, created_at=now, updated_at=now,
    )
    fields.update(overrides)
    return Payment(**fields)


async def created(provider, **overrides) -> Payment:
    p = payment(**overrides)
    checkout = await provider.create_checkout(p, f"key-{p.id}")
    return replace(p, provider_payment_id=checkout.provider_payment_id, checkout_url=checkout.checkout_url)


def refund(p: Payment, amount: int, refund_id: int = 1, reason: str | None = None) -> Refund:
    now = utcnow()
    return Refund(refund_id, p.id, f"r-{refund_id}", "f", amount, reason, RefundStatus.PENDING, None, None, None, now, now)


def command(**overrides) -> CreatePaymentCommand:
    fields = dict(request_id="r", caller_service="shop", resource_type="order", resource_id="1", customer_ref="",
                  amount_cents=150000, currency="VND", payment_method=1, payment_type=1, provider=3,
                  recurring_interval="", recurring_interval_count=0, status_callback_url="https://shop.example/cb",
                  success_url="", cancel_url="", metadata={})
    fields.update(overrides)
    return CreatePaymentCommand(**fields)


# ---- the payment URL -----------------------------------------------------------------------


async def test_the_payment_url_carries_the_payment_signed_and_calls_nobody(provider, fake):
    p = payment(created_at=utcnow().replace(microsecond=0), metadata={"vnp_BankCode": "VNPAYQR", "vnp_Locale": "en",
                                                                      "vnp_IpAddr": "203.0.113.7", "cart": "42"})
    checkout = await provider.create_checkout(p, "key")
    assert checkout.checkout_url.startswith(fake.payment_url + "?")
    params = dict(parse_qsl(urlsplit(checkout.checkout_url).query))
    created_gmt7 = (p.created_at + timedelta(hours=7)).strftime("%Y%m%d%H%M%S")
    expires_gmt7 = (p.created_at + timedelta(hours=8)).strftime("%Y%m%d%H%M%S")  # the 60 minute pending timeout
    assert {k: v for k, v in params.items() if k != "vnp_SecureHash"} == {
        "vnp_Version": "2.1.0", "vnp_Command": "pay", "vnp_TmnCode": fake.tmn_code,
        "vnp_Amount": "15000000",  # 150,000 dong (VND has no minor unit: amount_cents is dong) x 100
        "vnp_CurrCode": "VND", "vnp_TxnRef": uuid.UUID(p.provider_callback_hash).hex,
        "vnp_OrderInfo": f"Payment {p.id} order o {p.id}", "vnp_OrderType": "other", "vnp_Locale": "en",
        "vnp_ReturnUrl": "http://payments.test/vnpay/return", "vnp_IpAddr": "203.0.113.7",
        "vnp_CreateDate": created_gmt7, "vnp_ExpireDate": expires_gmt7, "vnp_BankCode": "VNPAYQR",
    }
    assert checkout.provider_payment_id == params["vnp_TxnRef"]
    assert fake.api_requests == []  # no call to VNPay
    opened = fake.open(checkout.checkout_url)  # VNPay's page accepts it: its own check of the signature
    assert (opened.amount, opened.status) == (15000000, "01")
    # A retried create hands out the very same URL.
    assert (await provider.create_checkout(p, "key")).checkout_url == checkout.checkout_url


async def test_defaults_and_a_tampered_url(provider, fake):
    checkout = await provider.create_checkout(payment(resource_id="Đơn hàng #7/b"), "key")
    params = dict(parse_qsl(urlsplit(checkout.checkout_url).query))
    assert (params["vnp_Locale"], params["vnp_IpAddr"]) == ("vn", "127.0.0.1") and "vnp_BankCode" not in params
    assert params["vnp_OrderInfo"].endswith(" order n h ng 7 b")  # no diacritics, no special characters
    fake.open(checkout.checkout_url)
    tampered = checkout.checkout_url.replace("vnp_Amount=15000000", "vnp_Amount=100")
    with pytest.raises(PageError, match="invalid signature"):
        fake.open(tampered)


async def test_a_create_finished_too_late_is_refused(provider):
    with pytest.raises(ProviderError) as late:
        await provider.create_checkout(payment(created_at=utcnow() - timedelta(minutes=56)), "key")
    assert late.value.kind == ErrorKind.FAILED_PRECONDITION and not late.value.retryable
    await provider.create_checkout(payment(created_at=utcnow() - timedelta(minutes=50)), "key")  # 10 minutes left


@pytest.mark.parametrize(("overrides", "message"), [
    ({"currency": "USD"}, "currency must be VND with the vnpay provider"),
    ({"payment_type": 2, "recurring_interval": "month", "recurring_interval_count": 1}, "recurring payments"),
    ({"payment_method": 2}, "payment_method must be hosted_card"),
    ({"amount_cents": 10**10}, "amount_cents must be <= 9999999999"),
    ({"metadata": {"vnp_BankCode": "VN PAY"}}, "vnp_BankCode must be a VNPay bank code"),
    ({"metadata": {"vnp_Locale": "fr"}}, "vnp_Locale must be one of vn, en"),
    ({"metadata": {"vnp_IpAddr": "localhost"}}, "vnp_IpAddr must be the customer's IPv4 or IPv6 address"),
])
def test_what_a_vnpay_create_requires(provider, overrides, message):
    with pytest.raises(ValidationError, match=message):
        provider.validate(command(**overrides))
    provider.validate(command(amount_cents=9_999_999_999, metadata={"vnp_IpAddr": "2001:db8::1"}))


# ---- the IPN ---------------------------------------------------------------------------------


def query(params: dict[str, str]) -> bytes:
    return urlencode(params).encode()


async def test_ipns_mean_what_vnpays_code_tables_say(provider, fake):
    paid = await created(provider)
    delivery = await fake.pay(paid.checkout_url)
    event = provider.parse_callback(query(delivery.params), delivery.params["vnp_SecureHash"])
    assert (event.status, event.provider_payment_id, event.callback_hash, event.amount_cents) == (
        PaymentStatus.PAID, paid.provider_payment_id, paid.provider_callback_hash, 150000)
    assert event.event_id == f"vnpay:{paid.provider_payment_id}:{delivery.params['vnp_TransactionNo']}:00:00"
    assert "VNPay transaction" in event.message and not event.needs_attention

    canceled = await created(provider)
    event = provider.parse_callback(query((await fake.cancel(canceled.checkout_url)).params), "")
    assert event.status == PaymentStatus.FAILED
    assert event.failure_reason == "VNPay: the customer canceled the payment (response code 24)"

    poor = await created(provider)
    event = provider.parse_callback(query((await fake.fail(poor.checkout_url, "51")).params), "")
    assert (event.status, event.failure_reason) == (
        PaymentStatus.FAILED, "VNPay: the account's balance is insufficient (response code 51)")

    suspected = await created(provider)
    event = provider.parse_callback(query((await fake.fail(suspected.checkout_url, "07")).params), "")
    assert (event.status, event.needs_attention) == (PaymentStatus.PROCESSING, True)  # money taken, under review


async def test_ipns_that_are_not_vnpays_are_rejected(provider, fake):
    p = await created(provider)
    params = (await fake.pay(p.checkout_url)).params
    for bad, reason in [
        ({**params, "vnp_Amount": "1"}, "invalid vnp_SecureHash"),  # changed after signing
        ({**params, "vnp_SecureHash": "0" * 128}, "invalid vnp_SecureHash"),
        (fake.sign({**params, "vnp_TmnCode": "OTHERTMN"}), "is not this service's VNPay terminal"),
        ({k: v for k, v in params.items() if k != "vnp_TxnRef"}, "vnp_TxnRef missing"),
    ]:
        with pytest.raises(CallbackRejectedError) as rejected:
            provider.parse_callback(query(bad), "")
        assert reason in rejected.value.reason
    with pytest.raises(CallbackRejectedError, match="callback rejected"):
        provider.parse_callback(b"vnp_TxnRef=1&vnp_TxnRef=2", "")
    with pytest.raises(CallbackRejectedError):
        provider.parse_callback(query(params), "f" * 128)  # a signature that is not the query's
    with pytest.raises(CallbackAmountMismatchError):
        provider.parse_callback(query(fake.sign({**params, "vnp_Amount": "1500050"})), "")  # no whole dong
    other = make_provider(fake, hash_secret="another terminal secret")
    with pytest.raises(CallbackRejectedError):
        other.parse_callback(query(params), "")


# ---- querydr: reconcile, cancel, expiry --------------------------------------------------------


async def test_what_querydr_reports(provider, fake):
    unopened = await created(provider)
    assert await provider.fetch_status(unopened) is None  # 91: the customer never opened the URL
    assert await provider.cancel(unopened, "k") == CancelOutcome.CANCELED

    opened = await created(provider)
    fake.open(opened.checkout_url)
    assert await provider.fetch_status(opened) is None  # 01: not completed
    assert await provider.cancel(opened, "k") == CancelOutcome.CANCELED

    paid = await created(provider)
    await fake.pay(paid.checkout_url)
    assert await provider.fetch_status(paid) == PaymentStatus.PAID
    assert await provider.cancel(paid, "k") == CancelOutcome.ALREADY_PAID

    canceled = await created(provider)
    await fake.cancel(canceled.checkout_url)
    assert await provider.fetch_status(canceled) == PaymentStatus.FAILED

    held = await created(provider)
    await fake.fail(held.checkout_url, "07")
    assert await provider.fetch_status(held) == PaymentStatus.PROCESSING
    with pytest.raises(ProviderError, match="suspected of fraud") as refused:
        await provider.cancel(held, "k")
    assert refused.value.kind == ErrorKind.FAILED_PRECONDITION

    queries = [r for r in fake.api_requests if r["vnp_Command"] == "querydr"]
    assert len({r["vnp_RequestId"] for r in queries}) == len(queries) == 9
    assert queries[0]["vnp_TransactionDate"] == (unopened.created_at + timedelta(hours=7)).strftime("%Y%m%d%H%M%S")


async def test_an_amount_vnpay_reports_differently_is_an_error(provider, fake):
    p = await created(provider)
    await fake.pay(p.checkout_url)
    with pytest.raises(ProviderError, match="VNPay reports an amount of 15000000") as wrong:
        await provider.fetch_status(replace(p, amount_cents=150001))
    assert not wrong.value.retryable


# ---- refunds ----------------------------------------------------------------------------------------


async def test_refunds_in_part_then_in_full(provider, fake):
    p = await created(provider)
    await fake.pay(p.checkout_url)
    first = await provider.refund(p, refund(p, 50000, 1, "requested_by_customer"), "refund-key-1")
    assert (first.amount_cents, first.status, first.refund_id) == (50000, RefundStatus.SUCCEEDED, 1)
    second = await provider.refund(p, refund(p, 100000, 2), "refund-key-2")
    assert second.provider_refund_id != first.provider_refund_id
    refunds = fake.transaction(p.provider_payment_id).refunds
    assert [(r["type"], r["amount"], r["created_by"]) for r in refunds] == [("03", 5000000, "shop"), ("03", 10000000, "shop")]
    sent = [r for r in fake.api_requests if r["vnp_Command"] == "refund"]
    assert [r["vnp_OrderInfo"] for r in sent] == [f"Refund 1 of payment {p.id} requested by customer",
                                                  f"Refund 2 of payment {p.id}"]
    assert sent[0]["vnp_TransactionNo"] == fake.transaction(p.provider_payment_id).transaction_no

    whole = await created(provider)
    await fake.pay(whole.checkout_url)
    await provider.refund(whole, refund(whole, 150000, 3), "refund-key-3")
    assert [r["type"] for r in fake.transaction(whole.provider_payment_id).refunds] == ["02"]
    assert await provider.fetch_status(whole) == PaymentStatus.PAID  # still paid, now refunded


async def test_an_unpaid_payment_cannot_be_refunded(provider, fake):
    p = await created(provider)
    await fake.cancel(p.checkout_url)
    with pytest.raises(ProviderError, match="no paid transaction") as refused:
        await provider.refund(p, refund(p, 1000), "k")
    assert refused.value.kind == ErrorKind.FAILED_PRECONDITION


async def test_a_refund_whose_answer_was_lost_is_not_made_twice(provider, fake):
    p = await created(provider)
    await fake.pay(p.checkout_url)
    fake.fail_next_api(1, after_processing=True, command="refund")  # done at VNPay, its answer lost
    with pytest.raises(ProviderError) as lost:
        await provider.refund(p, refund(p, 50000), "refund-key")
    assert lost.value.retryable
    with pytest.raises(ProviderError, match="94") as again:  # the retry: VNPay knows the request id
        await provider.refund(p, refund(p, 50000), "refund-key")
    assert again.value.retryable
    assert len(fake.transaction(p.provider_payment_id).refunds) == 1


async def test_vnpay_failures_map_to_errors(fake):
    p = payment()
    # VNPay refuses our checksum (97), signing its answer with the terminal's real secret,
    # which the service then cannot verify either; or it does not know the terminal (02).
    for credentials, message in (({"hash_secret": "wrong secret"}, "code 97 .* failed its checksum"),
                                 ({"tmn_code": "WRONGTMN"}, "refused the querydr request with code 02")):
        vnpay = make_provider(fake, **credentials)
        with pytest.raises(ProviderError, match=message) as failed:
            await vnpay.fetch_status(p)
        assert failed.value.retryable and "wrong secret" not in failed.value.message
        await vnpay.close()

    vnpay = make_provider(fake)
    fake.fail_next_api(1, status=503)
    with pytest.raises(ProviderError, match="HTTP 503") as down:
        await vnpay.fetch_status(p)
    assert down.value.retryable
    unreachable = make_provider(fake, api_url="http://127.0.0.1:9/merchant_webapi/api/transaction")
    with pytest.raises(ProviderError, match="VNPay is unavailable") as gone:
        await unreachable.fetch_status(p)
    assert gone.value.retryable
    await vnpay.close()
    await unreachable.close()
