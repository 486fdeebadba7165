"""What every provider implements, and the values it exchanges with the service."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import Enum
from typing import Protocol, runtime_checkable

from ..domain.enums import PaymentStatus, ProviderType
from ..domain.payment import CreatePaymentCommand, Payment
from ..domain.refund import Refund, RefundStatus


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


@dataclass(frozen=True, slots=True)
class Verification:
    """What a provider says of a payment when asked now (VerifyPayment)."""

    status: PaymentStatus | None  # the status to apply; None: nothing to apply
    provider_status: str  # the provider's own answer, for the caller ("open", "paid", ...)
    read_feed: bool = False  # the truth is in an account feed the service pages itself (Stellar)


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
    # Finding the payment when the webhook did not come to its per-payment URL: the
    # callback hash the provider carried back (metadata), else the provider's ids of
    # the objects the event names.
    callback_hash: str | None = None
    object_ids: tuple[str, ...] = ()
    handled: bool = True  # False: a type the service does not act on (acknowledged and recorded)
    # A subscription's later life (a renewal, a failed renewal, its end) changes no
    # status once the payment is PAID; the caller hears of it by a callback of this type.
    announce_if_paid: str | None = None
    refunds: tuple[RefundSnapshot, ...] = ()  # refunds as the event reports them
    refunds_of: str | None = None  # a provider object whose refunds changed: fetch them (fetch_refunds)
    message: str | None = None
    needs_attention: bool = False  # e.g. a dispute: money at risk, an operator should look
    # The amount the event reports paid, in the payment's amount_cents unit, where the
    # provider reports one (VNPay): an event whose amount is not the payment's is refused.
    amount_cents: int | None = None


@dataclass(frozen=True, slots=True)
class RefundSnapshot:
    """A refund as the provider reports it."""

    provider_refund_id: str
    amount_cents: int
    status: RefundStatus
    failure_reason: str | None = None
    refund_id: int | None = None  # our refund's id, when the provider carried it back (metadata)


class Provider(Protocol):
    type: ProviderType

    def validate(self, command: CreatePaymentCommand) -> None:
        """What this provider requires of a create, the currency's form included
        (domain.validation.check_iso_currency for card providers). Raises ValidationError."""

    async def create_checkout(self, payment: Payment, idempotency_key: str) -> Checkout:
        """Creates the provider object. Raises ProviderError (retryable or not)."""

    async def cancel(self, payment: Payment, idempotency_key: str) -> CancelOutcome:
        """Stops the provider object from being paid (cancel, and expiry by the
        expire job), or reports it was paid already."""

    async def fetch_status(self, payment: Payment) -> PaymentStatus | None:
        """The status the provider reports for the payment's object (the reconcile job);
        None when it reports none. Raises ProviderError (retryable or not)."""

    def parse_callback(self, payload: bytes, signature: str) -> ProviderEvent:
        """Verifies and parses a webhook. Raises CallbackRejectedError."""

    async def verify(self, payment: Payment) -> Verification:
        """The provider's answer now, for VerifyPayment (an operator's or caller's "check
        now"). Raises ProviderError (retryable or not)."""


@runtime_checkable
class RefundingProvider(Protocol):
    """A provider that can return money (checked with isinstance before a refund)."""

    async def refund(self, payment: Payment, refund: Refund, idempotency_key: str) -> RefundSnapshot:
        """Refunds refund.amount_cents of a paid payment (the amount is reserved: no other
        refund can take it). The snapshot is SUCCEEDED, or PENDING when the provider
        reports the outcome later through its events. Raises ProviderError: retryable
        when the refund may be asked again with the same idempotency key."""


@runtime_checkable
class RefundListingProvider(Protocol):
    """A provider whose events may only say that refunds changed (ProviderEvent.refunds_of)."""

    async def fetch_refunds(self, object_id: str) -> list[RefundSnapshot]:
        """Every refund of one provider object. Raises ProviderError."""


@runtime_checkable
class ReleasingProvider(Protocol):
    """A provider whose objects can stay payable after their payment ended (a payment link)."""

    async def release(self, payment: Payment, idempotency_key: str) -> None:
        """The payment ended (paid, failed, canceled, expired): make sure its provider
        object takes no further payment. Raises ProviderError."""


@runtime_checkable
class ClosableProvider(Protocol):
    async def close(self) -> None:
        """Releases connections; called once at shutdown."""
