"""StripeProvider on its own against the fake Stripe: what reconcile learns (fetch_status),
webhook verification, error mapping, the session's expiry window, create validation."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from datetime import UTC, timedelta

import pytest

from payments_svc.clock import utcnow
from payments_svc.domain.enums import PaymentMethod, PaymentStatus, PaymentType, ProviderType
from payments_svc.domain.errors import CallbackRejectedError, ErrorKind, ProviderError, ValidationError
from payments_svc.domain.payment import CreatePaymentCommand, Payment
from payments_svc.providers.base import CancelOutcome
from payments_svc.providers.stripe.provider import StripeProvider
from payments_svc.providers.stripe.settings import StripeSettings
from tests.fakes.stripe_server import FakeStripe, sign_event

SECRET, OLD_SECRET = "whsec_provider_tests_new", "whsec_provider_tests_old"
_ids = iter(range(1, 1_000_000))


@pytest.fixture
async def fake():
    async with FakeStripe() as server:
        yield server


def make_provider(fake, **overrides) -> StripeProvider:
    settings = StripeSettings(**{"secret_key": fake.secret_key, "webhook_secrets": (SECRET, OLD_SECRET),
                                 "api_base": fake.url, **overrides})
    return StripeProvider(settings, public_base_url="http://payments.test", pending_timeout_seconds=3600)


@pytest.fixture
async def provider(fake):
    stripe_provider = make_provider(fake)
    yield stripe_provider
    await stripe_provider.close()


def payment(method: PaymentMethod = PaymentMethod.HOSTED_CARD, recurring: bool = False, **overrides) -> Payment:
    now = utcnow()
    payment_id = next(_ids)
    fields = dict(
        id=payment_id, request_id=f"req-{payment_id}", caller_service="shop", request_fingerprint="f" * 64,
        resource_type="order", resource_id=f"o-{payment_id}", customer_ref=None, amount_cents=1500, currency="USD",
        status=PaymentStatus.PENDING, payment_method=method,
        payment_type=PaymentType.RECURRING if recurring else PaymentType.ONE_TIME, provider=ProviderType.STRIPE,
        recurring_interval="month" if recurring else None, recurring_interval_count=1 if recurring else None,
        provider_payment_id=None, provider_subscription_id=None, checkout_url=None,
        provider_callback_hash=f"hash-{payment_id}", provider_callback_url="http://payments.test/cb",
        status_callback_url="https://shop.example/cb", success_url=None, cancel_url=None, refunded_cents=0,
        refundable_cents=1500, received_cents=0, metadata={}, cancel_reason=None, failure_reason=None,
        create_error_code=None, attention_required=False, create_lease_until=None, created_at=now, updated_at=now,
    )
    fields.update(overrides)
    return Payment(**fields)


async def created(provider, **kwargs) -> Payment:
    p = payment(**kwargs)
    checkout = await provider.create_checkout(p, f"key-{p.id}")
    return replace(p, provider_payment_id=checkout.provider_payment_id, checkout_url=checkout.checkout_url)


# ---- reconcile: the current truth ---------------------------------------------------


async def test_fetch_status_follows_the_session(fake, provider):
    open_ = await created(provider)
    assert await provider.fetch_status(open_) is None  # still open: no news

    paid = await created(provider)
    fake.complete_session(paid.provider_payment_id)
    assert await provider.fetch_status(paid) == PaymentStatus.PAID

    expired = await created(provider)
    fake.expire_session(expired.provider_payment_id)
    assert await provider.fetch_status(expired) == PaymentStatus.EXPIRED

    for outcome, status in ((None, PaymentStatus.PROCESSING), (True, PaymentStatus.PAID), (False, PaymentStatus.FAILED)):
        delayed = await created(provider)
        fake.complete_session(delayed.provider_payment_id, paid=False)
        if outcome is not None:
            fake.async_payment_result(delayed.provider_payment_id, outcome)
        assert await provider.fetch_status(delayed) == status, outcome


async def test_fetch_status_of_subscriptions_and_links(fake, provider):
    for outcome, status in ((None, PaymentStatus.PROCESSING), (True, PaymentStatus.PAID), (False, PaymentStatus.FAILED)):
        subscription = await created(provider, recurring=True)
        fake.complete_session(subscription.provider_payment_id, paid=False)
        if outcome is not None:
            fake.async_payment_result(subscription.provider_payment_id, outcome)
        assert await provider.fetch_status(subscription) == status, outcome

    link = await created(provider, method=PaymentMethod.PAYMENT_LINK)
    assert await provider.fetch_status(link) is None  # nobody paid it yet
    fake.pay_payment_link(link.provider_payment_id)
    assert await provider.fetch_status(link) == PaymentStatus.PAID


async def test_cancel_outcomes(fake, provider):
    open_ = await created(provider)
    assert await provider.cancel(open_, "k1") == CancelOutcome.CANCELED
    assert fake.get(open_.provider_payment_id)["status"] == "expired"
    assert await provider.cancel(open_, "k1") == CancelOutcome.CANCELED  # again: already stopped

    failed = await created(provider)
    fake.complete_session(failed.provider_payment_id, paid=False)
    fake.async_payment_result(failed.provider_payment_id, False)
    assert await provider.cancel(failed, "k2") == CancelOutcome.CANCELED  # nothing is left to pay

    # A subscription whose first payment is in flight is ended at Stripe.
    subscription = await created(provider, recurring=True)
    (completed,) = fake.complete_session(subscription.provider_payment_id, paid=False)
    assert await provider.cancel(subscription, "k3") == CancelOutcome.CANCELED
    assert fake.get(completed["data"]["object"]["subscription"])["status"] == "canceled"

    link = await created(provider, method=PaymentMethod.PAYMENT_LINK)
    fake.pay_payment_link(link.provider_payment_id)
    assert await provider.cancel(link, "k4") == CancelOutcome.ALREADY_PAID


# ---- webhooks -----------------------------------------------------------------------


def signed(event: dict, secret: str = SECRET, timestamp: int | None = None) -> tuple[bytes, str]:
    payload = json.dumps(event).encode()
    return payload, sign_event(payload, secret, timestamp)


async def test_webhook_verification(fake, provider):
    p = await created(provider)
    (event,) = fake.complete_session(p.provider_payment_id)
    parsed = provider.parse_callback(*signed(event))
    assert (parsed.event_id, parsed.status, parsed.callback_hash) == (event["id"], PaymentStatus.PAID, p.provider_callback_hash)
    assert provider.parse_callback(*signed(event, OLD_SECRET)).event_id == event["id"]  # a rotated-out secret
    assert provider.parse_callback(*signed(event, timestamp=int(time.time()) + 600)).event_id  # ahead: as Stripe's SDKs

    payload, signature = signed(event)
    for bad_payload, bad_signature, reason in (
        (payload, sign_event(payload, "whsec_other"), "no v1 signature matches"),
        (*signed(event, timestamp=int(time.time()) - 301), "more than 300 seconds old"),
        (payload + b" ", signature, "no v1 signature matches"),
        (payload, "garbage", "no v1 signature matches"),
        (b"\xff\xfe", sign_event(b"x", SECRET), "not UTF-8"),
        (b"{not json", sign_event(b"{not json", SECRET), "not valid JSON"),
        (b"[1, 2]", sign_event(b"[1, 2]", SECRET), "not a Stripe event"),
    ):
        with pytest.raises(CallbackRejectedError) as rejected:
            provider.parse_callback(bad_payload, bad_signature)
        assert reason in rejected.value.reason and rejected.value.message == "callback rejected"


# ---- errors -------------------------------------------------------------------------


async def test_stripe_errors_map_to_retryable_or_not(fake, provider):
    fake.fail_next(3, 500)
    with pytest.raises(ProviderError) as server_error:
        await provider.create_checkout(payment(), "k-500")
    assert server_error.value.retryable and server_error.value.kind == ErrorKind.UNAVAILABLE

    fake.fail_next(1, 429)  # the SDK does not retry a 429
    with pytest.raises(ProviderError) as rate_limited:
        await provider.create_checkout(payment(), "k-429")
    assert rate_limited.value.retryable and "rate limit" in rate_limited.value.message

    with pytest.raises(ProviderError) as missing:
        await provider.fetch_status(payment(provider_payment_id="cs_test_missing"))
    assert not missing.value.retryable and missing.value.kind == ErrorKind.FAILED_PRECONDITION
    assert "No such checkout.session: 'cs_test_missing'" in missing.value.message

    wrong_key = make_provider(fake, secret_key="sk_test_not_the_right_one")
    try:
        with pytest.raises(ProviderError) as unauthorized:
            await wrong_key.create_checkout(payment(), "k-401")
    finally:
        await wrong_key.close()
    assert unauthorized.value.retryable  # ours to fix; the payment waits for reconcile
    assert "sk_test" not in unauthorized.value.message and "STRIPE_SECRET_KEY" in unauthorized.value.message


async def test_a_slow_stripe_is_a_retryable_timeout(fake):
    slow = make_provider(fake, http_timeout_seconds=0.3, max_network_retries=0)
    fake.set_latency(1.0)
    try:
        with pytest.raises(ProviderError) as timed_out:
            await slow.create_checkout(payment(), "k-slow")
    finally:
        fake.set_latency(0)
        await slow.close()
    assert timed_out.value.retryable and timed_out.value.kind == ErrorKind.UNAVAILABLE


# ---- create ---------------------------------------------------------------------------


async def test_session_expiry_window_follows_the_pending_timeout_within_stripes_bounds(fake):
    for timeout, window in ((600, 35 * 60), (3600, 3600), (7 * 86400, 24 * 3600 - 300)):
        p = StripeProvider(StripeSettings(fake.secret_key, (SECRET,), fake.url), public_base_url="http://payments.test",
                           pending_timeout_seconds=timeout)
        try:
            made = payment()
            await p.create_checkout(made, f"window-{timeout}")
            sent = fake.requests[-1].params["expires_at"]
            assert sent == int(made.created_at.replace(tzinfo=UTC).timestamp() + window)
        finally:
            await p.close()


async def test_a_create_retried_too_late_for_a_session_fails_for_good(provider):
    late = payment(created_at=utcnow() - timedelta(minutes=40))  # 60 min timeout: 20 min left
    with pytest.raises(ProviderError) as too_late:
        await provider.create_checkout(late, "k-late")
    assert not too_late.value.retryable and too_late.value.kind == ErrorKind.FAILED_PRECONDITION


def test_metadata_leaves_room_for_the_payment_reference(fake):
    provider = make_provider(fake)
    command = CreatePaymentCommand(
        request_id="r", caller_service="shop", resource_type="order", resource_id="1", customer_ref="", amount_cents=1,
        currency="USD", payment_method=1, payment_type=1, provider=1, recurring_interval="", recurring_interval_count=0,
        status_callback_url="https://shop.example/cb", success_url="", cancel_url="",
        metadata={f"k{i}": "v" for i in range(48)},
    )
    with pytest.raises(ValidationError, match="at most 47 keys"):
        provider.validate(command)
    command.metadata = {f"k{i}": "v" for i in range(47)}
    provider.validate(command)
    command.currency = "US1"
    with pytest.raises(ValidationError, match="currency must be 3 letters"):
        provider.validate(command)
