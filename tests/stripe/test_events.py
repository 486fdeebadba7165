"""What each Stripe event means (providers.stripe.events.parse_event), on hand-made events in the
shapes of several API versions."""

from __future__ import annotations

import pytest

from payments_svc.domain.enums import PaymentStatus
from payments_svc.domain.errors import CallbackRejectedError
from payments_svc.domain.refund import RefundStatus
from payments_svc.providers.stripe.events import parse_event

REF = {"payment_id": "7", "request_id": "req-7", "callback_hash": "hash-7"}


def event(event_type: str, obj: dict) -> dict:
    return {"id": "evt_1", "object": "event", "type": event_type, "data": {"object": obj}}


def session(**fields) -> dict:
    return {"id": "cs_1", "object": "checkout.session", "status": "complete", "payment_status": "paid",
            "metadata": REF, "payment_intent": "pi_1", "subscription": None, "invoice": None, "payment_link": None, **fields}


@pytest.mark.parametrize(("event_type", "fields", "status"), [
    ("checkout.session.completed", {}, PaymentStatus.PAID),
    ("checkout.session.completed", {"payment_status": "no_payment_required"}, PaymentStatus.PAID),
    ("checkout.session.completed", {"payment_status": "unpaid"}, PaymentStatus.PROCESSING),
    ("checkout.session.async_payment_succeeded", {}, PaymentStatus.PAID),
    ("checkout.session.async_payment_failed", {"payment_status": "unpaid"}, PaymentStatus.FAILED),
    ("checkout.session.expired", {"status": "expired"}, PaymentStatus.EXPIRED),
    ("checkout.session.expired", {"status": "expired", "payment_link": "plink_1"}, None),  # the link stays open
])
def test_checkout_session_events(event_type, fields, status):
    parsed = parse_event(event(event_type, session(**fields)))
    assert parsed.status == status and parsed.handled
    assert parsed.callback_hash == "hash-7" and "cs_1" in parsed.object_ids and "pi_1" in parsed.object_ids
    assert parsed.provider_payment_id is None  # our object stays the session or link we created


def test_a_subscription_session_names_its_subscription():
    parsed = parse_event(event("checkout.session.completed", session(subscription={"id": "sub_1"}, invoice="in_1",
                                                                      payment_intent=None)))
    assert parsed.provider_subscription_id == "sub_1" and set(parsed.object_ids) == {"cs_1", "sub_1", "in_1"}


def invoice(billing_reason: str, *, legacy: bool = False) -> dict:
    base = {"id": "in_1", "object": "invoice", "billing_reason": billing_reason, "amount_paid": 1500,
            "amount_due": 1500, "currency": "usd"}
    if legacy:  # API versions before 2025-03-31
        return {**base, "subscription": "sub_1", "subscription_details": {"metadata": REF}}
    return {**base, "parent": {"type": "subscription_details",
                               "subscription_details": {"subscription": "sub_1", "metadata": REF}}}


@pytest.mark.parametrize("legacy", [False, True])
def test_invoice_events_in_both_shapes(legacy):
    first = parse_event(event("invoice.paid", invoice("subscription_create", legacy=legacy)))
    assert (first.status, first.announce_if_paid, first.callback_hash) == (PaymentStatus.PAID, None, "hash-7")
    assert first.provider_subscription_id == "sub_1" and set(first.object_ids) == {"in_1", "sub_1"}

    renewal = parse_event(event("invoice.paid", invoice("subscription_cycle", legacy=legacy)))
    assert (renewal.status, renewal.announce_if_paid) == (PaymentStatus.PAID, "payment.renewed")

    failed_first = parse_event(event("invoice.payment_failed", invoice("subscription_create", legacy=legacy)))
    assert failed_first.status == PaymentStatus.FAILED
    failed_renewal = parse_event(event("invoice.payment_failed", invoice("subscription_cycle", legacy=legacy)))
    assert (failed_renewal.status, failed_renewal.announce_if_paid) == (None, "payment.renewal_failed")


def test_subscription_deleted():
    parsed = parse_event(event("customer.subscription.deleted", {
        "id": "sub_1", "object": "subscription", "metadata": REF, "cancellation_details": {"reason": "payment_failed"}}))
    assert (parsed.status, parsed.announce_if_paid) == (PaymentStatus.CANCELED, "payment.subscription_canceled")
    assert "payment_failed" in parsed.message and parsed.provider_subscription_id == "sub_1"


def test_refund_events():
    charge = parse_event(event("charge.refunded", {"id": "ch_1", "object": "charge", "payment_intent": "pi_1",
                                                   "amount": 1500, "amount_refunded": 500, "metadata": REF}))
    assert (charge.refunds_of, charge.refunds, charge.status) == ("ch_1", (), None)
    assert charge.callback_hash == "hash-7" and set(charge.object_ids) == {"ch_1", "pi_1"}

    refund = parse_event(event("refund.updated", {
        "id": "re_1", "object": "refund", "amount": 500, "status": "failed", "failure_reason": "lost_or_stolen_card",
        "payment_intent": "pi_1", "charge": "ch_1", "metadata": {**REF, "refund_id": "3"}}))
    (snapshot,) = refund.refunds
    assert (snapshot.provider_refund_id, snapshot.amount_cents, snapshot.status) == ("re_1", 500, RefundStatus.FAILED)
    assert (snapshot.refund_id, snapshot.failure_reason) == (3, "lost_or_stolen_card")
    dashboard = parse_event(event("refund.created", {"id": "re_2", "object": "refund", "amount": 100, "status": "pending",
                                                     "payment_intent": "pi_1", "charge": "ch_1", "metadata": {}}))
    assert dashboard.callback_hash is None and dashboard.refunds[0].refund_id is None
    assert dashboard.refunds[0].status == RefundStatus.PENDING


def test_disputes_are_recorded_for_attention():
    dispute = {"id": "dp_1", "object": "dispute", "amount": 1500, "currency": "usd", "status": "needs_response",
               "reason": "fraudulent", "charge": "ch_1", "payment_intent": "pi_1"}
    created = parse_event(event("charge.dispute.created", dispute))
    assert created.status is None and created.needs_attention and "dp_1" in created.message
    assert not parse_event(event("charge.dispute.closed", dict(dispute, status="won"))).needs_attention


def test_unknown_types_are_acknowledged_not_acted_on():
    parsed = parse_event(event("customer.created", {"id": "cus_1", "object": "customer"}))
    assert (parsed.handled, parsed.status, parsed.object_ids) == (False, None, ("cus_1",))


@pytest.mark.parametrize("payload", [
    [],
    {"id": "evt_1", "type": "checkout.session.completed"},
    {"id": "", "type": "x", "data": {"object": {}}},
    {"id": "evt_1", "type": "checkout.session.completed", "data": {"object": "cs_1"}},
    {"id": "evt_1", "type": "checkout.session.completed", "data": {"object": {"object": "checkout.session"}}},
    {"id": "evt_1", "type": "charge.refunded", "data": {"object": {"id": "ch_1", "amount": "x"}}},
])
def test_malformed_events_are_rejected(payload):
    with pytest.raises(CallbackRejectedError):
        parse_event(payload)
