"""Stripe's webhooks and refunds through the service in this process (the flows in
test_flows.py go through a `payments-svc serve` child, where mutation testing cannot see
them), on SQLite and MariaDB against the Stripe test double.

Webhooks: through the account endpoint and the per-payment URL; each event once, with the
objects it names recorded; an event for another payment's URL refused and logged; refunds
made at Stripe fetched and merged into the ledger, a returned refund reversing it, a stale
snapshot changing nothing; renewals announced without leaving PAID; events for nothing of
ours ignored or refused.

RefundPayment: reserved, asked of Stripe once and replayed by request_id; 0 refunds what is
left; too much, a reused request_id, an unpaid or subscription payment refused with their
messages; a refund Stripe refuses released and refused the same way on replay; one asked
during a Stripe outage kept reserved and finished by the retry."""

from __future__ import annotations

import copy
import json

import pytest
import sqlalchemy as sa

from payments_svc.auth.caller import Caller
from payments_svc.db.tables import callback_deliveries, payment_callbacks, provider_objects
from payments_svc.domain.enums import CallbackStatus, PaymentStatus, ProviderType
from payments_svc.domain.errors import (
    CallbackRejectedError,
    ErrorKind,
    NotFoundError,
    PaymentsError,
    ProviderError,
    ServiceUnavailableError,
    ValidationError,
)
from payments_svc.domain.payment import CreatePaymentCommand, ProviderCallback
from payments_svc.domain.refund import RefundCommand, RefundStatus
from payments_svc.repository.events import EventRepository
from payments_svc.service.refunds import validate_refund
from tests.fakes.stripe_server import FakeStripe, sign_event

SHOP = Caller("shop")
SECRET = "whsec_in_process"


@pytest.fixture
async def stripe():
    async with FakeStripe() as fake:
        yield fake


@pytest.fixture
async def service(make_container, stripe):
    container = await make_container(STRIPE_SECRET_KEY=stripe.secret_key, STRIPE_WEBHOOK_SECRET=SECRET,
                                     STRIPE_API_BASE=stripe.url)
    yield container.service
    await container.close()


def _command(request_id: str, **overrides) -> CreatePaymentCommand:
    fields = dict(
        request_id=request_id, caller_service="shop", resource_type="order", resource_id="o-1", customer_ref="",
        amount_cents=1500, currency="usd", payment_method=1, payment_type=1, provider=int(ProviderType.STRIPE),
        recurring_interval="", recurring_interval_count=0, status_callback_url="https://shop.example/cb",
        success_url="", cancel_url="", metadata={"cart": "42"},
    )
    fields.update(overrides)
    return CreatePaymentCommand(**fields)


def _signed(event: dict) -> tuple[bytes, str]:
    payload = json.dumps(event).encode()
    return payload, sign_event(payload, SECRET)


async def at_account(service, event: dict):
    """Delivered as Stripe does, to the account endpoint (/webhooks/stripe)."""
    return await service.handle_account_callback("stripe", *_signed(event))


async def at_url_of(service, payment, event: dict):
    """Delivered to a payment's own URL (/webhooks/providers/stripe/{hash})."""
    payload, signature = _signed(event)
    return await service.handle_provider_callback(ProviderCallback(
        request_id="cb", provider="stripe", callback_hash=payment.provider_callback_hash, signature=signature,
        payload=payload))


async def _logged(service, payment_id: int | None = None, event_id: str | None = None) -> list[tuple]:
    c = payment_callbacks.c
    query = sa.select(c.status, c.payment_id, c.error).order_by(c.id)
    query = query.where(c.payment_id == payment_id) if event_id is None else query.where(c.provider_event_id == event_id)
    async with service.db.read() as conn:
        return [(CallbackStatus(r[0]), r[1], r[2]) for r in await conn.execute(query)]


async def _announced(service, payment_id: int) -> list[str]:
    d = callback_deliveries.c
    async with service.db.read() as conn:
        return [r[0] for r in await conn.execute(sa.select(d.event_type).where(d.payment_id == payment_id).order_by(d.id))]


async def _paid(service, stripe, request_id: str, **overrides):
    payment = (await service.create_payment(SHOP, _command(request_id, **overrides))).payment
    for event in stripe.complete_session(payment.provider_payment_id):
        await at_account(service, event)
    return await service.get_payment(SHOP, payment.id)


async def test_a_checkout_paid_applies_once_through_either_entrance_and_records_its_objects(service, stripe):
    payment = (await service.create_payment(SHOP, _command("paid"))).payment
    assert payment.status == PaymentStatus.PENDING
    events = stripe.complete_session(payment.provider_payment_id)
    outcomes = [await at_account(service, e) for e in events]
    assert [o.status for o in outcomes][0] == CallbackStatus.PROCESSED
    assert outcomes[0].previous_status == PaymentStatus.PENDING
    paid = await service.get_payment(SHOP, payment.id)
    assert paid.status == PaymentStatus.PAID and paid.refundable_cents == 1500
    assert await _announced(service, payment.id) == ["payment.paid"]
    intent = stripe.get(payment.provider_payment_id)["payment_intent"]
    async with service.db.read() as conn:
        owned = {r[0]: r[1] for r in await conn.execute(
            sa.select(provider_objects.c.object_id, provider_objects.c.payment_id)
            .where(provider_objects.c.provider == int(ProviderType.STRIPE)))}
    assert owned[intent] == payment.id  # later events naming only the intent find the payment

    again = await at_url_of(service, payment, events[0])  # a redelivery, at the other entrance
    assert again.status == CallbackStatus.DUPLICATE
    assert (await service.get_payment(SHOP, payment.id)).status == PaymentStatus.PAID
    assert await _announced(service, payment.id) == ["payment.paid"]
    assert [(s, e) for s, _, e in await _logged(service, event_id=events[0]["id"])] == [
        (CallbackStatus.PROCESSED, None), (CallbackStatus.DUPLICATE, "event already processed")]


async def test_an_event_at_another_payments_url_is_refused_there_and_changes_neither(service, stripe):
    mine = (await service.create_payment(SHOP, _command("mine"))).payment
    other = (await service.create_payment(SHOP, _command("other"))).payment
    completed = stripe.complete_session(mine.provider_payment_id)[0]
    with pytest.raises(CallbackRejectedError) as refused:
        await at_url_of(service, other, completed)
    assert refused.value.reason == "the event is about another payment"
    assert [(await service.get_payment(SHOP, p.id)).status for p in (mine, other)] == [PaymentStatus.PENDING] * 2
    assert await _logged(service, other.id) == [
        (CallbackStatus.REJECTED, other.id, "the event is about another payment than the callback hash's")]
    assert (await at_url_of(service, mine, completed)).status == CallbackStatus.PROCESSED  # its own URL takes it


async def test_refunds_made_at_stripe_are_fetched_merged_and_announced(service, stripe):
    payment = await _paid(service, stripe, "refunds")
    intent = stripe.get(payment.provider_payment_id)["payment_intent"]
    refund_created, charge_refunded = stripe.refund(payment_intent=intent, amount=400)
    await at_account(service, charge_refunded)  # names no refund: the charge's refunds are fetched from Stripe
    current = await service.get_payment(SHOP, payment.id)
    assert (current.status, current.refunded_cents, current.refundable_cents) == (PaymentStatus.PAID, 400, 1100)
    assert await _announced(service, payment.id) == ["payment.paid", "payment.refunded"]
    await at_account(service, refund_created)  # the same refund again: nothing new
    assert (await service.get_payment(SHOP, payment.id)).refunded_cents == 400
    assert await _announced(service, payment.id) == ["payment.paid", "payment.refunded"]

    (returned,) = stripe.fail_refund(refund_created["data"]["object"]["id"])
    await at_account(service, returned)
    reversed_ = await service.get_payment(SHOP, payment.id)
    assert (reversed_.refunded_cents, reversed_.refundable_cents) == (0, 1500)
    assert await _announced(service, payment.id) == ["payment.paid", "payment.refunded", "payment.refund_reversed"]
    await at_account(service, refund_created)  # a stale snapshot never revives it
    assert (await service.get_payment(SHOP, payment.id)).refunded_cents == 0


async def test_renewals_are_announced_without_leaving_paid(service, stripe):
    payment = await _paid(service, stripe, "subscription", payment_type=2, recurring_interval="month",
                          recurring_interval_count=1)
    subscription = payment.provider_subscription_id
    assert payment.status == PaymentStatus.PAID and subscription.startswith("sub_")
    for event in stripe.renew_subscription(subscription, succeeded=False):
        await at_account(service, event)
    for event in stripe.renew_subscription(subscription):
        await at_account(service, event)
    after = await service.get_payment(SHOP, payment.id)
    assert after.status == PaymentStatus.PAID and after.provider_subscription_id == subscription
    assert await _announced(service, payment.id) == ["payment.paid", "payment.renewal_failed", "payment.renewed"]


async def test_events_about_nothing_of_ours_are_ignored_or_refused(service, stripe):
    unrelated = {"id": "evt_unrelated", "object": "event", "type": "customer.created",
                 "data": {"object": {"id": "cus_x", "object": "customer"}}}
    assert (await at_account(service, unrelated)).status == CallbackStatus.IGNORED
    assert await _logged(service, event_id="evt_unrelated") == [
        (CallbackStatus.IGNORED, None, "customer.created is not an event type the service acts on")]

    payment = await _paid(service, stripe, "elsewhere")
    refund_created, _ = stripe.refund(payment_intent=stripe.get(payment.provider_payment_id)["payment_intent"], amount=100)
    stranger = copy.deepcopy(refund_created)
    stranger["id"] = "evt_stranger"
    stranger["data"]["object"].update(payment_intent="pi_not_ours", charge="ch_not_ours")
    with pytest.raises(NotFoundError):  # not acknowledged: Stripe retries, and it applies once its object is known
        await at_account(service, stranger)
    assert await _logged(service, event_id="evt_stranger") == [
        (CallbackStatus.REJECTED, None, "no payment for the event's objects")]


# ---- RefundPayment ------------------------------------------------------------


def _refund_posts(stripe) -> list:
    return [r for r in stripe.requests if r.method == "POST" and r.path == "/v1/refunds"]


async def _refund(service, payment_id: int, request_id: str, amount_cents: int = 0, reason: str = ""):
    command = RefundCommand(payment_id=payment_id, request_id=request_id, amount_cents=amount_cents, reason=reason)
    validate_refund(command)
    return await service.refund_payment(SHOP, command)


async def _events(service, payment_id: int) -> list[tuple[str, str | None]]:
    async with service.db.read() as conn:
        return [(e.event_type, e.message) for e in await EventRepository(conn).list(payment_id, limit=100, after_id=0)]


async def test_a_refund_is_reserved_asked_once_and_replayed_by_its_request_id(service, stripe):
    payment = await _paid(service, stripe, "refunded")
    first = await _refund(service, payment.id, "r-1", 500, "requested_by_customer")
    assert not first.replayed and first.refund.status == RefundStatus.SUCCEEDED
    assert (first.refund.amount_cents, first.refund.request_id, first.refund.reason) == (500, "r-1", "requested_by_customer")
    assert first.refund.provider_refund_id.startswith("re_")
    assert (first.payment.refunded_cents, first.payment.refundable_cents) == (500, 1000)
    refund_id = first.refund.id
    assert (await _events(service, payment.id))[-2:] == [
        ("refund_requested", f"refund #{refund_id} of 500 requested"),
        ("refund_created", f"refund #{refund_id} ({first.refund.provider_refund_id}) of 500: SUCCEEDED")]
    assert await _announced(service, payment.id) == ["payment.paid", "payment.refunded"]
    (post,) = _refund_posts(stripe)
    assert post.params["amount"] == 500 and post.params["reason"] == "requested_by_customer" and post.idempotency_key

    again = await _refund(service, payment.id, "r-1", 500, "requested_by_customer")
    assert again.replayed and again.refund.id == refund_id
    assert (again.payment.refunded_cents, again.payment.refundable_cents) == (500, 1000)
    assert len(_refund_posts(stripe)) == 1  # Stripe asked once
    with pytest.raises(PaymentsError) as reused:
        await _refund(service, payment.id, "r-1", 600)
    assert (reused.value.kind, reused.value.field) == (ErrorKind.IDEMPOTENCY_KEY_REUSED, "request_id")
    assert reused.value.message.startswith("request_id was already used for a refund of this payment")

    with pytest.raises(PaymentsError) as too_much:
        await _refund(service, payment.id, "r-2", 1001)
    assert (too_much.value.kind, too_much.value.field) == (ErrorKind.FAILED_PRECONDITION, "amount_cents")
    assert too_much.value.message == "amount_cents 1001 is more than refundable_cents 1000"
    rest = await _refund(service, payment.id, "r-3")  # 0: everything still refundable
    assert rest.refund.amount_cents == 1000 and (rest.payment.refunded_cents, rest.payment.refundable_cents) == (1500, 0)
    with pytest.raises(PaymentsError) as nothing:
        await _refund(service, payment.id, "r-4")
    assert (nothing.value.kind, nothing.value.message) == (ErrorKind.FAILED_PRECONDITION,
                                                           "nothing left to refund: refundable_cents is 0")
    assert [p.params["amount"] for p in _refund_posts(stripe)] == [500, 1000]


async def test_refunds_of_unpaid_or_subscription_payments_and_bad_commands_are_refused(service, stripe):
    unpaid = (await service.create_payment(SHOP, _command("unpaid"))).payment
    with pytest.raises(PaymentsError) as not_paid:
        await _refund(service, unpaid.id, "r-1")
    assert (not_paid.value.kind, not_paid.value.message) == (
        ErrorKind.FAILED_PRECONDITION, "only paid payments can be refunded; this one is PENDING")
    subscription = await _paid(service, stripe, "subscription", payment_type=2, recurring_interval="month",
                               recurring_interval_count=1)
    with pytest.raises(PaymentsError, match="subscription payments cannot be refunded through the service") as recurring:
        await _refund(service, subscription.id, "r-1")
    assert recurring.value.kind == ErrorKind.FAILED_PRECONDITION
    assert _refund_posts(stripe) == []
    for command, field, message in (
        (RefundCommand(unpaid.id, "", 0, ""), "request_id", "request_id is required"),
        (RefundCommand(unpaid.id, "r" * 129, 0, ""), "request_id", "request_id must be at most 128 characters"),
        (RefundCommand(unpaid.id, "r-1", -1, ""), "amount_cents",
         "amount_cents must be >= 0 (0 refunds everything still refundable)"),
        (RefundCommand(unpaid.id, "r-1", 0, "because"), "reason",
         "reason must be empty or one of duplicate, fraudulent, requested_by_customer"),
    ):
        with pytest.raises(ValidationError) as invalid:
            validate_refund(command)
        assert (invalid.value.field, invalid.value.message) == (field, message)
    validate_refund(RefundCommand(unpaid.id, "r" * 128, 0, "duplicate"))  # at the limits: accepted


async def test_a_refund_stripe_refuses_is_released_and_refused_the_same_on_replay(service, stripe):
    payment = await _paid(service, stripe, "refused")
    stripe.refund(payment_intent=stripe.get(payment.provider_payment_id)["payment_intent"], amount=1000)  # behind our back
    with pytest.raises(ProviderError) as refused:
        await _refund(service, payment.id, "r-1", 600)
    assert refused.value.kind == ErrorKind.INVALID_ARGUMENT and not refused.value.retryable
    assert "greater than unrefunded amount on charge ($5.00)" in refused.value.message
    after = await service.get_payment(SHOP, payment.id)
    assert (after.refunded_cents, after.refundable_cents) == (0, 1500)  # the reservation released
    event, message = (await _events(service, payment.id))[-1]
    assert event == "refund_rejected" and message.startswith("refund #") and " of 600 refused by the provider: stripe: " in message
    with pytest.raises(ProviderError) as again:
        await _refund(service, payment.id, "r-1", 600)
    assert (again.value.kind, again.value.message) == (refused.value.kind, refused.value.message)
    assert len(_refund_posts(stripe)) == 1  # the replay did not ask again


async def test_a_refund_asked_during_an_outage_stays_reserved_and_the_retry_finishes_it(service, stripe):
    payment = await _paid(service, stripe, "outage")
    stripe.fail_next(3, 503, "/v1/refunds")  # the SDK's retries fail too
    with pytest.raises(ServiceUnavailableError, match="retry the refund with the same request_id"):
        await _refund(service, payment.id, "r-1", 500)
    held = await service.get_payment(SHOP, payment.id)
    assert (held.refunded_cents, held.refundable_cents) == (0, 1000)  # reserved until the answer is known
    retried = await _refund(service, payment.id, "r-1", 500)
    assert retried.replayed and retried.refund.status == RefundStatus.SUCCEEDED
    assert (retried.payment.refunded_cents, retried.payment.refundable_cents) == (500, 1000)
    assert [r.status for r in _refund_posts(stripe)] == [503, 503, 503, 200]
    assert len({r.idempotency_key for r in _refund_posts(stripe)}) == 1  # the same key each time
