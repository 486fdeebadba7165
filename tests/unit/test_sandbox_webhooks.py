"""The sandbox provider's webhooks, in-process: the event its checkout page sends (Stripe's
shape), and the verifier at each edge of its header format and tolerance, with the reason an
operator reads for each refusal. Signatures here are computed independently (hmac, not the
product's signer)."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import uuid

import pytest

from payments_svc.clock import utcnow
from payments_svc.domain.enums import PaymentMethod, PaymentStatus, PaymentType, ProviderType
from payments_svc.domain.errors import CallbackRejectedError
from payments_svc.domain.payment import Payment
from payments_svc.domain.refund import Refund, RefundStatus
from payments_svc.providers.sandbox import provider as sandbox
from payments_svc.providers.sandbox.provider import SandboxProvider

SECRET = "whsec_sandbox_tests"
NOW = 1_700_000_000


def mac(payload: bytes, timestamp: int | str, secret: str = SECRET) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256).hexdigest()


def payment() -> Payment:
    now = utcnow()
    return Payment(
        id=7, request_id="r", caller_service="shop", request_fingerprint="f", resource_type="order", resource_id="1",
        customer_ref=None, amount_cents=1999, currency="USD", status=PaymentStatus.PENDING,
        payment_method=PaymentMethod.HOSTED_CARD, payment_type=PaymentType.ONE_TIME, provider=ProviderType.SANDBOX,
        recurring_interval=None, recurring_interval_count=None, provider_payment_id="sbx_obj", provider_subscription_id=None,
        checkout_url=None, provider_callback_hash=str(uuid.uuid4()), provider_callback_url="", status_callback_url="",
        success_url=None, cancel_url=None, refunded_cents=0, refundable_cents=1999, received_cents=0, metadata={},
        cancel_reason=None, failure_reason=None, create_error_code=None, attention_required=False, create_lease_until=None,
        created_at=now, updated_at=now,
    )


@pytest.fixture
def provider():
    return SandboxProvider(public_base_url="http://127.0.0.1:1/", webhook_secret=SECRET)


@pytest.fixture
def clock(monkeypatch):
    monkeypatch.setattr(sandbox.time, "time", lambda: NOW)


@pytest.mark.parametrize("action, event_type, status, reason", [
    ("pay", "payment.succeeded", PaymentStatus.PAID, None),
    ("decline", "payment.failed", PaymentStatus.FAILED, "declined at the sandbox checkout"),
])
def test_the_checkout_pages_webhook_is_a_signed_stripe_style_event(provider, clock, action, event_type, status, reason):
    body, signature = provider.build_event(payment(), action)
    event = json.loads(body)
    assert re.fullmatch(r"evt_sbx_[0-9a-f]{32}", event["id"])
    assert event == {"id": event["id"], "type": event_type, "created": NOW,
                     "data": {"object": {"id": "sbx_obj", "amount": 1999}}}
    assert signature == f"t={NOW},v1={mac(body, NOW)}"
    parsed = provider.parse_callback(body, signature)
    assert (parsed.event_id, parsed.event_type, parsed.status, parsed.provider_payment_id, parsed.failure_reason) == (
        event["id"], event_type, status, "sbx_obj", reason)


def test_the_tolerance_is_300_seconds_either_way(clock):
    body = b'{"id": "evt_1", "type": "payment.succeeded", "data": {"object": {"id": "o"}}}'
    for timestamp in (NOW - 300, NOW + 300, NOW):
        sandbox.verify(body, f"t={timestamp},v1={mac(body, timestamp)}", SECRET)
    for timestamp in (NOW - 301, NOW + 301):
        with pytest.raises(CallbackRejectedError) as rejected:
            sandbox.verify(body, f"t={timestamp},v1={mac(body, timestamp)}", SECRET)
        assert rejected.value.reason == "signature timestamp outside the tolerance"
    sandbox.verify(body, f"t={NOW - 1000},v1={mac(body, NOW - 1000)}", SECRET, tolerance=1000)


def test_any_v1_signature_may_match_and_spaces_are_allowed(clock):
    body = b"{}"
    sandbox.verify(body, f"t={NOW}, v1={'0' * 64}, v1={mac(body, NOW)}, v0=ignored", SECRET)
    with pytest.raises(CallbackRejectedError) as rejected:
        sandbox.verify(body, f"t={NOW},v1={'0' * 64},v0={mac(body, NOW)}", SECRET)
    assert rejected.value.reason == "invalid signature"
    with pytest.raises(CallbackRejectedError) as rejected:
        sandbox.verify(body, f"t={NOW},v1={mac(body, NOW, 'whsec_other')}", SECRET)
    assert rejected.value.reason == "invalid signature"


@pytest.mark.parametrize("header", ["", "t=,v1=ab", "v1=ab", "t=1700000000", "t=abc,v1=ab", "t=-5,v1=ab", "x=1,y=2"])
def test_malformed_headers_are_rejected_as_such(clock, header):
    with pytest.raises(CallbackRejectedError) as rejected:
        sandbox.verify(b"{}", header, SECRET)
    assert rejected.value.reason == "malformed signature header"


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"id": "e"}', b'{"id": "e", "type": "t", "data": {}}',
                                  b'{"id": "e", "type": "t", "data": {"object": null}}'])
def test_a_signed_body_that_is_no_sandbox_event_is_rejected(provider, clock, body):
    with pytest.raises(CallbackRejectedError) as rejected:
        provider.parse_callback(body, f"t={NOW},v1={mac(body, NOW)}")
    assert rejected.value.reason == "payload is not a sandbox event"


def test_an_event_of_another_type_reports_no_status(provider, clock):
    body = b'{"id": 42, "type": "payment.refunded", "data": {"object": {"id": ""}}}'
    parsed = provider.parse_callback(body, f"t={NOW},v1={mac(body, NOW)}")
    assert (parsed.event_id, parsed.status, parsed.provider_payment_id, parsed.failure_reason) == ("42", None, None, None)


def test_the_signer_uses_the_current_time_unless_told(clock):
    assert sandbox.sign(b"{}", SECRET) == f"t={NOW},v1={mac(b'{}', NOW)}"
    assert sandbox.sign(b"{}", SECRET, timestamp=5) == f"t=5,v1={mac(b'{}', 5)}"


def test_a_value_is_everything_after_the_first_equals_sign(clock):
    body = b"{}"
    with pytest.raises(CallbackRejectedError) as rejected:
        sandbox.verify(body, f"t={NOW},v1=a=b", SECRET)  # a v1 value that matches nothing, not a malformed header
    assert rejected.value.reason == "invalid signature"


async def test_a_sandbox_refund_succeeds_at_once_under_an_id_its_retry_gets_again(provider):
    now = utcnow()
    refund = Refund(12, 7, "r-1", "fp", 300, None, RefundStatus.PENDING, None, None, None, now, now)
    snapshot = await provider.refund(payment(), refund, "key-1")
    expected_id = "sbx_re_" + hashlib.sha256(b"key-1").hexdigest()[:24]
    assert (snapshot.provider_refund_id, snapshot.amount_cents, snapshot.status, snapshot.refund_id) == (
        expected_id, 300, RefundStatus.SUCCEEDED, 12)
    assert (await provider.refund(payment(), refund, "key-1")).provider_refund_id == expected_id
    assert (await provider.refund(payment(), refund, "key-2")).provider_refund_id != expected_id


@pytest.mark.parametrize("base", ["https://gateway.example/pay-X", "https://gateway.example/pay-X/"])
async def test_the_checkout_link_is_the_public_base_url_with_one_slash_before_the_sandbox_page(base):
    # PAYMENTS_PUBLIC_BASE_URL may be written with or without its trailing slash, and may have a path.
    shown = payment()
    checkout = await SandboxProvider(public_base_url=base, webhook_secret=SECRET).create_checkout(shown, "key-1")
    assert checkout.checkout_url == f"https://gateway.example/pay-X/sandbox/checkout/{shown.provider_callback_hash}"
    assert checkout.provider_payment_id == "sbx_" + hashlib.sha256(b"key-1").hexdigest()[:24]
