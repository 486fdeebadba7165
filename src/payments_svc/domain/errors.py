"""Errors the service layer raises; each adapter maps them to its own status codes.

The kind decides the gRPC code and HTTP status (see api/errors.py); the message is
what the caller reads, so it must say what to do.
"""

from __future__ import annotations

from enum import Enum


class ErrorKind(Enum):
    INVALID_ARGUMENT = "invalid_argument"
    NOT_FOUND = "not_found"
    ALREADY_EXISTS = "already_exists"
    PERMISSION_DENIED = "permission_denied"
    UNAUTHENTICATED = "unauthenticated"
    FAILED_PRECONDITION = "failed_precondition"
    IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused"
    ABORTED = "aborted"
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"


class PaymentsError(Exception):
    kind: ErrorKind = ErrorKind.INTERNAL

    def __init__(self, message: str, kind: ErrorKind | None = None):
        super().__init__(message)
        self.message = message
        if kind is not None:
            self.kind = kind


class ValidationError(PaymentsError):
    kind = ErrorKind.INVALID_ARGUMENT


class NotFoundError(PaymentsError):
    kind = ErrorKind.NOT_FOUND

    def __init__(self, message: str = "payment not found"):
        super().__init__(message)


class PermissionDeniedError(PaymentsError):
    kind = ErrorKind.PERMISSION_DENIED


class UnauthenticatedError(PaymentsError):
    kind = ErrorKind.UNAUTHENTICATED


class IdempotencyKeyReusedError(PaymentsError):
    kind = ErrorKind.IDEMPOTENCY_KEY_REUSED

    def __init__(self) -> None:
        super().__init__(
            "request_id was already used with different parameters; use a new request_id for a new payment"
        )


class IdempotencyInProgressError(PaymentsError):
    kind = ErrorKind.ABORTED

    def __init__(self) -> None:
        super().__init__("a request with this request_id is still in progress; retry shortly with the same request_id")


class InvalidTransitionError(PaymentsError):
    """The payment's current status does not allow the requested change."""

    kind = ErrorKind.INVALID_ARGUMENT


class CallbackRejectedError(PaymentsError):
    kind = ErrorKind.INVALID_ARGUMENT

    def __init__(self, reason: str):
        super().__init__("callback rejected")
        self.reason = reason


class CallbackAmountMismatchError(CallbackRejectedError):
    """A verified callback reports another amount than its payment's."""


class ServiceUnavailableError(PaymentsError):
    kind = ErrorKind.UNAVAILABLE


class ProviderError(PaymentsError):
    """A provider call failed. `retryable` errors leave the payment for reconcile."""

    def __init__(self, message: str, *, retryable: bool, kind: ErrorKind | None = None):
        super().__init__(message, kind or (ErrorKind.UNAVAILABLE if retryable else ErrorKind.INVALID_ARGUMENT))
        self.retryable = retryable
