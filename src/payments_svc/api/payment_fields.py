"""The Payment and PaymentEvent as wire fields (proto field names, enums as
numbers), shared by the gRPC messages and the HTTP JSON so both say the same."""

from __future__ import annotations

from typing import Any

from ..clock import rfc3339
from ..domain.enums import ProviderType
from ..domain.payment import Payment, PaymentEvent
from ..domain.refund import Refund
from ..providers.stellar.instructions import StellarInstructions
from ..repository.deliveries import CallbackDelivery


def payment_fields(p: Payment, delivery: CallbackDelivery | None = None) -> dict[str, Any]:
    """`delivery`, when given, is shown as callback_delivery (GetPayment, ReplayCallback)."""
    fields = {
        "id": p.id,
        "request_id": p.request_id,
        "caller_service": p.caller_service,
        "resource_type": p.resource_type,
        "resource_id": p.resource_id,
        "customer_ref": p.customer_ref or "",
        "amount_cents": p.amount_cents,
        "currency": p.currency,
        "status": int(p.status),
        "payment_method": int(p.payment_method),
        "payment_type": int(p.payment_type),
        "provider": int(p.provider),
        "recurring_interval": p.recurring_interval or "",
        "recurring_interval_count": p.recurring_interval_count or 0,
        "provider_payment_id": p.provider_payment_id or "",
        "provider_subscription_id": p.provider_subscription_id or "",
        "checkout_url": p.checkout_url or "",
        "provider_callback_hash": p.provider_callback_hash,
        "provider_callback_url": p.provider_callback_url,
        "status_callback_url": p.status_callback_url,
        "refunded_cents": p.refunded_cents,
        "refundable_cents": p.refundable_cents,
        "metadata": p.metadata,
        "created_at": rfc3339(p.created_at),
        "updated_at": rfc3339(p.updated_at),
        "cancel_reason": p.cancel_reason or "",
        "failure_reason": p.failure_reason or "",
        "attention_required": p.attention_required,
        "received_cents": p.received_cents,
    }
    if p.provider == ProviderType.STELLAR and p.checkout_url:
        # The checkout_url is the SEP-7 URI the instructions were made into.
        fields["stellar_instructions"] = StellarInstructions.from_sep7_uri(p.checkout_url).fields()
    if delivery is not None:
        fields["callback_delivery"] = delivery_fields(delivery)
    return fields


def delivery_fields(d: CallbackDelivery) -> dict[str, Any]:
    return {
        "delivery_id": d.delivery_id,
        "status": int(d.status),
        "attempts": d.attempts,
        "next_attempt_at": rfc3339(d.next_attempt_at),
        "last_error": d.last_error or "",
        "last_status_code": d.last_status_code or 0,
        "event_type": d.event_type,
    }


def event_fields(e: PaymentEvent) -> dict[str, Any]:
    return {
        "id": e.id,
        "payment_id": e.payment_id,
        "event_type": e.event_type,
        "old_status": int(e.old_status) if e.old_status is not None else 0,
        "new_status": int(e.new_status),
        "provider_event_id": e.provider_event_id or "",
        "needs_attention": e.needs_attention,
        "message": e.message or "",
        "created_at": rfc3339(e.created_at),
    }


def refund_fields(r: Refund) -> dict[str, Any]:
    return {
        "id": r.id,
        "payment_id": r.payment_id,
        "request_id": r.request_id or "",
        "amount_cents": r.amount_cents,
        "status": int(r.status),
        "reason": r.reason or "",
        "provider_refund_id": r.provider_refund_id or "",
        "failure_reason": r.failure_reason or "",
        "created_at": rfc3339(r.created_at),
        "updated_at": rfc3339(r.updated_at),
    }
