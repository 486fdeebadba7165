"""Enum values of the wire contract (numbers matter: they are stored and sent)."""

from __future__ import annotations

from enum import IntEnum


class PaymentStatus(IntEnum):
    UNSPECIFIED = 0
    CREATED = 1
    PENDING = 2
    PROCESSING = 3
    PAID = 10
    FAILED = 20
    CANCELED = 30
    EXPIRED = 40

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({PaymentStatus.PAID, PaymentStatus.FAILED, PaymentStatus.CANCELED, PaymentStatus.EXPIRED})


class PaymentMethod(IntEnum):
    UNSPECIFIED = 0
    HOSTED_CARD = 1
    PAYMENT_LINK = 2


class PaymentType(IntEnum):
    UNSPECIFIED = 0
    ONE_TIME = 1
    RECURRING = 2


class ProviderType(IntEnum):
    UNSPECIFIED = 0
    STRIPE = 1
    STELLAR = 2
    VNPAY = 3
    SANDBOX = 100

    @property
    def code(self) -> str:
        """The lower-case name used in webhook paths and configuration."""
        return self.name.lower()


class CallbackStatus(IntEnum):
    """payment_callbacks.status: what became of an inbound provider callback."""

    PROCESSED = 10
    REJECTED = 20
    DUPLICATE = 30
    IGNORED = 40  # acknowledged: a type the service does not act on, about no payment of ours


class DeliveryStatus(IntEnum):
    """callback_deliveries.status: the outbound status callback's state."""

    PENDING = 1
    SUCCESS = 10
    FAILED = 20  # retries exhausted (or never deliverable): a dead callback
    REQUEUED = 30  # was FAILED; sent again as a new delivery (`callbacks requeue`)


class StellarOperationStatus(IntEnum):
    """stellar_operations.status: what became of a payment to the Stellar receiving
    account, or of a record of its feed that could not be read."""

    CREDITED = 10  # counted towards an open payment
    REFUND_DUE = 20  # its payment had already ended: the money is to be returned
    UNMATCHED = 30  # no payment has its memo, or it is in another asset than its payment's
    MALFORMED = 40  # the record could not be read; kept raw
