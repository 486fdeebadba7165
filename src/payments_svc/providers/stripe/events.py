"""What a Stripe webhook event means for a payment: the status it reports, the ids and
metadata that find the payment, refunds, and the subscription's later life.

Pure functions of the event, so the same event always means the same thing; the
transition table then decides what it changes, so late or reordered events never
regress a status. Field locations cover the API versions an endpoint may be pinned to
(an invoice's subscription moved under `parent.subscription_details` in 2025).
"""

from __future__ import annotations

from typing import Any

from ...domain.enums import PaymentStatus
from ...domain.errors import CallbackRejectedError
from ...domain.refund import RefundStatus
from ..base import ProviderEvent, RefundSnapshot
from .amounts import from_stripe

# Metadata keys on every Stripe object we create (names kept from the reference, whose
# gateway routes by callback_hash).
META_PAYMENT_ID = "payment_id"
META_REQUEST_ID = "request_id"
META_CALLBACK_HASH = "callback_hash"
META_REFUND_ID = "refund_id"

# The event types the service acts on: the endpoint's "events to send" (README).
HANDLED_EVENT_TYPES = (
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
    "checkout.session.async_payment_failed",
    "checkout.session.expired",
    "invoice.paid",
    "invoice.payment_failed",
    "customer.subscription.deleted",
    "charge.refunded",
    "refund.created",
    "refund.updated",
    "refund.failed",
    "charge.dispute.created",
    "charge.dispute.updated",
    "charge.dispute.closed",
    "charge.dispute.funds_withdrawn",
    "charge.dispute.funds_reinstated",
)

PAID_SESSION = ("paid", "no_payment_required")

REFUND_STATUSES = {
    "pending": RefundStatus.PENDING,
    "requires_action": RefundStatus.PENDING,
    "succeeded": RefundStatus.SUCCEEDED,
    "failed": RefundStatus.FAILED,
    "canceled": RefundStatus.CANCELED,
}


def object_id(value: Any) -> str | None:
    """An expandable field: an id, or the expanded object carrying one."""
    if isinstance(value, str) and value:
        return value
    if isinstance(value, dict) and isinstance(value.get("id"), str):
        return value["id"]
    return None


def _metadata(value: Any) -> dict[str, str]:
    return value if isinstance(value, dict) else {}


def _ids(*values: Any) -> tuple[str, ...]:
    return tuple(dict.fromkeys(i for i in map(object_id, values) if i))


def invoice_subscription(invoice: dict[str, Any]) -> tuple[str | None, dict[str, str]]:
    """(subscription id, subscription metadata) of an invoice, in any API version."""
    details = _metadata(_metadata(invoice.get("parent")).get("subscription_details"))
    legacy = _metadata(invoice.get("subscription_details"))
    subscription = object_id(details.get("subscription")) or object_id(invoice.get("subscription"))
    return subscription, _metadata(details.get("metadata")) or _metadata(legacy.get("metadata"))


def refund_snapshot(refund: dict[str, Any]) -> RefundSnapshot:
    ours = str(_metadata(refund.get("metadata")).get(META_REFUND_ID, ""))
    return RefundSnapshot(
        provider_refund_id=str(refund["id"]),
        amount_cents=from_stripe(int(refund["amount"]), str(refund.get("currency") or "")),
        status=REFUND_STATUSES.get(str(refund.get("status")), RefundStatus.PENDING),
        failure_reason=refund.get("failure_reason") or None,
        refund_id=int(ours) if ours.isdigit() else None,
    )


def session_status(session: dict[str, Any]) -> PaymentStatus | None:
    """What a Checkout Session alone says; None for a completed session whose delayed
    payment has no outcome in the session (the payment intent or invoice knows)."""
    if session.get("status") == "expired":
        return PaymentStatus.EXPIRED
    if session.get("status") == "open":
        return PaymentStatus.PENDING
    if session.get("payment_status") in PAID_SESSION:
        return PaymentStatus.PAID
    return None


def parse_event(event: Any) -> ProviderEvent:
    """A verified event's meaning. Raises CallbackRejectedError if it is not an event."""
    try:
        event_id, event_type, obj = event["id"], event["type"], event["data"]["object"]
    except (KeyError, TypeError):
        raise CallbackRejectedError("payload is not a Stripe event") from None
    if not (isinstance(event_id, str) and event_id and isinstance(event_type, str) and event_type and isinstance(obj, dict)):
        raise CallbackRejectedError("payload is not a Stripe event")
    base = {"event_id": event_id, "event_type": event_type}
    if event_type not in HANDLED_EVENT_TYPES:
        return ProviderEvent(
            **base, status=None, handled=False, object_ids=_ids(obj.get("id")),
            callback_hash=_metadata(obj.get("metadata")).get(META_CALLBACK_HASH),
            message=f"{event_type} is not an event type the service acts on",
        )
    try:
        if event_type.startswith("checkout.session."):
            return _session_event(base, event_type, obj)
        if event_type.startswith("invoice."):
            return _invoice_event(base, event_type, obj)
        if event_type == "customer.subscription.deleted":
            return _subscription_deleted(base, obj)
        if event_type == "charge.refunded":
            return _charge_refunded(base, obj)
        if event_type.startswith("refund."):
            return _refund_event(base, obj)
        return _dispute_event(base, event_type, obj)
    except (KeyError, TypeError, ValueError):
        raise CallbackRejectedError(f"{event_type} event without the fields it always has") from None


def _session_event(base: dict, event_type: str, session: dict[str, Any]) -> ProviderEvent:
    common = dict(
        **base,
        callback_hash=_metadata(session.get("metadata")).get(META_CALLBACK_HASH),
        object_ids=_ids(session["id"], session.get("payment_link"), session.get("payment_intent"),
                        session.get("subscription"), session.get("invoice")),
        provider_subscription_id=object_id(session.get("subscription")),
    )
    if event_type == "checkout.session.completed":
        if session.get("payment_status") in PAID_SESSION:
            return ProviderEvent(**common, status=PaymentStatus.PAID)
        return ProviderEvent(**common, status=PaymentStatus.PROCESSING,
                             message="checkout completed with a delayed payment method; waiting for its outcome")
    if event_type == "checkout.session.async_payment_succeeded":
        return ProviderEvent(**common, status=PaymentStatus.PAID)
    if event_type == "checkout.session.async_payment_failed":
        return ProviderEvent(**common, status=PaymentStatus.FAILED, failure_reason="the delayed payment failed at Stripe")
    # checkout.session.expired
    if session.get("payment_link"):
        # A customer left a session the link opened; the link itself stays payable.
        return ProviderEvent(**common, status=None,
                             message=f"checkout session {session['id']} of the payment link expired; the link stays open")
    return ProviderEvent(**common, status=PaymentStatus.EXPIRED, message="the checkout session expired at Stripe")


def _invoice_event(base: dict, event_type: str, invoice: dict[str, Any]) -> ProviderEvent:
    subscription, metadata = invoice_subscription(invoice)
    first = invoice.get("billing_reason") == "subscription_create"
    common = dict(
        **base,
        callback_hash=metadata.get(META_CALLBACK_HASH),
        object_ids=_ids(invoice["id"], subscription),
        provider_subscription_id=subscription,
    )
    amount = invoice.get("amount_paid") if event_type == "invoice.paid" else invoice.get("amount_due")
    what = f"invoice {invoice['id']} ({invoice.get('billing_reason')}, {amount} {invoice.get('currency', '')})"
    if event_type == "invoice.paid":
        # A renewal of a paid subscription is announced, not a status change.
        return ProviderEvent(**common, status=PaymentStatus.PAID, message=f"{what} paid",
                             announce_if_paid=None if first else "payment.renewed")
    if first:
        return ProviderEvent(**common, status=PaymentStatus.FAILED, message=f"{what} payment failed",
                             failure_reason="the subscription's first payment failed at Stripe")
    # A failed renewal leaves the subscription past_due while Stripe retries; only its
    # end (customer.subscription.deleted) ends it, so a PAID payment stays PAID.
    return ProviderEvent(**common, status=None, message=f"{what} renewal payment failed; Stripe retries it",
                         announce_if_paid="payment.renewal_failed")


def _subscription_deleted(base: dict, subscription: dict[str, Any]) -> ProviderEvent:
    reason = _metadata(subscription.get("cancellation_details")).get("reason") or "unknown"
    return ProviderEvent(
        **base,
        status=PaymentStatus.CANCELED,
        callback_hash=_metadata(subscription.get("metadata")).get(META_CALLBACK_HASH),
        object_ids=_ids(subscription["id"]),
        provider_subscription_id=subscription["id"],
        message=f"subscription {subscription['id']} ended at Stripe (reason: {reason})",
        announce_if_paid="payment.subscription_canceled",
    )


def _charge_refunded(base: dict, charge: dict[str, Any]) -> ProviderEvent:
    return ProviderEvent(
        **base,
        status=None,
        callback_hash=_metadata(charge.get("metadata")).get(META_CALLBACK_HASH),
        object_ids=_ids(charge["id"], charge.get("payment_intent")),
        # Since API 2022-11-15 the charge no longer lists its refunds: fetch them.
        refunds_of=charge["id"],
        message=f"charge {charge['id']}: {int(charge['amount_refunded'])} of {int(charge['amount'])} refunded",
    )


def _refund_event(base: dict, refund: dict[str, Any]) -> ProviderEvent:
    snapshot = refund_snapshot(refund)
    return ProviderEvent(
        **base,
        status=None,
        callback_hash=_metadata(refund.get("metadata")).get(META_CALLBACK_HASH),
        object_ids=_ids(refund.get("payment_intent"), refund.get("charge")),
        refunds=(snapshot,),
        message=f"refund {snapshot.provider_refund_id} of {snapshot.amount_cents}: {refund.get('status')}",
    )


def _dispute_event(base: dict, event_type: str, dispute: dict[str, Any]) -> ProviderEvent:
    return ProviderEvent(
        **base,
        status=None,
        object_ids=_ids(dispute.get("payment_intent"), dispute.get("charge")),
        message=(f"dispute {dispute['id']}: {dispute.get('status')}, {int(dispute['amount'])} "
                 f"{dispute.get('currency', '')}, reason {dispute.get('reason')}"),
        needs_attention=event_type == "charge.dispute.created",
    )
