"""The Payment entity and the commands that act on it."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime

from .enums import PaymentMethod, PaymentStatus, PaymentType, ProviderType


@dataclass(slots=True)
class Payment:
    id: int
    request_id: str
    caller_service: str
    request_fingerprint: str
    resource_type: str
    resource_id: str
    customer_ref: str | None
    amount_cents: int
    currency: str
    status: PaymentStatus
    payment_method: PaymentMethod
    payment_type: PaymentType
    provider: ProviderType
    recurring_interval: str | None
    recurring_interval_count: int | None
    provider_payment_id: str | None
    provider_subscription_id: str | None
    checkout_url: str | None
    provider_callback_hash: str
    provider_callback_url: str
    status_callback_url: str
    success_url: str | None
    cancel_url: str | None
    refunded_cents: int
    refundable_cents: int
    received_cents: int  # what the provider reports received, where it does (Stellar)
    metadata: dict[str, str]
    cancel_reason: str | None
    failure_reason: str | None
    create_error_code: str | None
    attention_required: bool
    create_lease_until: datetime | None
    created_at: datetime
    updated_at: datetime
    provider_account_id: int | None = None  # the provider account it was created with; None: the default


@dataclass(slots=True)
class PaymentEvent:
    id: int
    payment_id: int
    event_type: str
    old_status: PaymentStatus | None
    new_status: PaymentStatus
    provider_event_id: str | None
    needs_attention: bool
    message: str | None
    created_at: datetime


def _ascii_upper(text: str) -> str:
    """Case-folds ASCII text only, so validation sees what was sent: str.upper()
    makes "ßd" the valid-looking "SSD", and str.lower() makes the Kelvin sign a "k"."""
    return text.upper() if text.isascii() else text


def _ascii_lower(text: str) -> str:
    return text.lower() if text.isascii() else text


@dataclass(slots=True)
class CreatePaymentCommand:
    """A create request after normalisation; both transports build one of these."""

    request_id: str
    caller_service: str
    resource_type: str
    resource_id: str
    customer_ref: str
    amount_cents: int
    currency: str
    payment_method: int
    payment_type: int
    provider: int
    recurring_interval: str
    recurring_interval_count: int
    status_callback_url: str
    success_url: str
    cancel_url: str
    metadata: dict[str, str] = field(default_factory=dict)

    def normalized(self) -> CreatePaymentCommand:
        """Trims and case-folds as the reference's HTTP shim did, now for gRPC too."""
        return CreatePaymentCommand(
            request_id=self.request_id.strip(),
            caller_service=self.caller_service.strip(),
            resource_type=self.resource_type.strip(),
            resource_id=self.resource_id.strip(),
            customer_ref=self.customer_ref.strip(),
            amount_cents=self.amount_cents,
            currency=_ascii_upper(self.currency.strip()),
            payment_method=self.payment_method,
            payment_type=self.payment_type,
            provider=self.provider,
            recurring_interval=_ascii_lower(self.recurring_interval.strip()),
            recurring_interval_count=self.recurring_interval_count,
            status_callback_url=self.status_callback_url.strip(),
            success_url=self.success_url.strip(),
            cancel_url=self.cancel_url.strip(),
            metadata=dict(self.metadata),
        )

    @property
    def is_recurring(self) -> bool:
        return self.payment_type == PaymentType.RECURRING

    def fingerprint(self, provider: ProviderType) -> str:
        """What makes two creates with one key "the same request" (the idempotency check)."""
        recurring = self.is_recurring
        body = {
            "resource_type": self.resource_type,
            "resource_id": self.resource_id,
            "customer_ref": self.customer_ref,
            "amount_cents": self.amount_cents,
            "currency": self.currency,
            "payment_method": self.payment_method,
            "payment_type": self.payment_type,
            "provider": int(provider),
            "recurring_interval": self.recurring_interval if recurring else "",
            "recurring_interval_count": self.recurring_interval_count if recurring else 0,
            "status_callback_url": self.status_callback_url,
            "success_url": self.success_url,
            "cancel_url": self.cancel_url,
            "metadata": self.metadata,
        }
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(slots=True)
class ListPaymentsQuery:
    request_id: str = ""
    caller_service: str = ""
    resource_type: str = ""
    resource_id: str = ""
    status: PaymentStatus | None = None
    provider: ProviderType | None = None
    limit: int = 100
    offset: int = 0


@dataclass(slots=True)
class ProviderCallback:
    """An inbound provider webhook as received, before verification."""

    request_id: str
    provider: str
    callback_hash: str
    signature: str
    payload: bytes
