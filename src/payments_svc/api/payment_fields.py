"""The Payment and PaymentEvent as wire fields (proto field names, enums as
numbers), shared by the gRPC messages and the HTTP JSON so both say the same."""

from __future__ import annotations

from typing import Any

from ..clock import rfc3339
from ..domain.payment import Payment, PaymentEvent


def payment_fields(p: Payment) -> dict[str, Any]:
    return {
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
