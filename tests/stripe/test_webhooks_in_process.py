"""Stripe's webhooks applied by the service in this process (the flows in test_flows.py go
through a `payments-svc serve` child, where mutation testing cannot see them), on SQLite
and MariaDB against the Stripe test double: through the account endpoint and the
per-payment URL; each event once, with the objects it names recorded; an event for another
payment's URL refused and logged; refunds made at Stripe fetched and
merged into the ledger, a returned refund reversing it, a stale snapshot changing nothing;
renewals announced without leaving PAID; events for nothing of ours ignored or refused."""

from __future__ import annotations

import copy
import json

import pytest
import sqlalchemy as sa

from payments_svc.auth.caller import Caller
from payments_svc.db.tables import callback_deliveries, payment_callbacks, provider_objects
from payments_svc.domain.enums import CallbackStatus, PaymentStatus, ProviderType
from payments_svc.domain.errors import CallbackRejectedError, NotFoundError
from payments_svc.domain.payment import CreatePaymentCommand, ProviderCallback
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
