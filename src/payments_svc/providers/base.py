"""What every provider implements, and the values it exchanges with the service."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from ..domain.enums import PaymentStatus, ProviderType
from ..domain.payment import Payment


def provider_idempotency_key(caller_service: str, request_id: str, step: str) -> str:
    """The key every provider call of one payment step carries, so a retry after a
    crash or timeout can never create a second provider object."""
    digest = hashlib.sha256(f"{caller_service}\x00{request_id}\x00{step}".encode()).hexdigest()
    return f"payments-svc-{digest}"


@dataclass(frozen=True, slots=True)
class Checkout:
    """What the provider created for a payment."""

    provider_payment_id: str
    checkout_url: str
    initial_status: PaymentStatus = PaymentStatus.PENDING
    provider_subscription_id: str | None = None


class CancelOutcome(Enum):
    CANCELED = "canceled"
    ALREADY_PAID = "already_paid"


@dataclass(frozen=True, slots=True)
class ProviderEvent:
    """A verified, parsed provider webhook."""

    event_id: str
    event_type: str
    status: PaymentStatus | None  # the status it reports, None when it reports none
    provider_payment_id: str | None = None
    provider_subscription_id: str | None = None
    failure_reason: str | None = None


class Provider(Protocol):
    type: ProviderType

    async def create_checkout(self, payment: Payment, idempotency_key: str) -> Checkout:
        """Creates the provider object. Raises ProviderError (retryable or not)."""

    async def cancel(self, payment: Payment, idempotency_key: str) -> CancelOutcome:
        """Stops the provider object from being paid, or reports it was paid already."""

    def parse_callback(self, payload: bytes, signature: str) -> ProviderEvent:
        """Verifies and parses a webhook. Raises CallbackRejectedError."""
