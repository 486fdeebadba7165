"""Errors the service layer raises; each adapter maps them to its own status codes.

The kind decides the gRPC code and HTTP status (see api/errors.py) and is the
machine-readable `code` callers see; the message is what the caller reads, so it
must say what to do. `field` names the offending request field when there is one;
`retry_after_seconds` is the retry hint (HTTP Retry-After, gRPC RetryInfo).
"""

from __future__ import annotations

from enum import Enum


class ErrorKind(Enum):
    """The value is the error's public `code` (and is stored with failed creates and
    refunds: never rename one)."""

    INVALID_ARGUMENT = "invalid_argument"
    NOT_FOUND = "not_found"
    ALREADY_EXISTS = "already_exists"
    PERMISSION_DENIED = "permission_denied"
    UNAUTHENTICATED = "unauthenticated"
    FAILED_PRECONDITION = "failed_precondition"
    IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused"
    IDEMPOTENCY_IN_PROGRESS = "idempotency_in_progress"
    ABORTED = "aborted"
    # Too many requests: a caller's quota (resilience/quotas.py), VerifyPayment per payment.
    RESOURCE_EXHAUSTED = "resource_exhausted"
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"
    # Raised by the HTTP edge only: the request itself could not be taken in.
    METHOD_NOT_ALLOWED = "method_not_allowed"
    REQUEST_TIMEOUT = "request_timeout"
    PAYLOAD_TOO_LARGE = "payload_too_large"

    @property
    def code(self) -> str:
        return self.value


# Kinds whose cause passes by itself: the caller is told when to try again unless
# the raiser knows better.
DEFAULT_RETRY_AFTER_SECONDS = {
    ErrorKind.IDEMPOTENCY_IN_PROGRESS: 1,
    ErrorKind.ABORTED: 1,
    ErrorKind.UNAVAILABLE: 5,
}


class PaymentsError(Exception):
    kind: ErrorKind = ErrorKind.INTERNAL

    def __init__(self, message: str, kind: ErrorKind | None = None, *, field: str | None = None,
                 retry_after_seconds: int | None = None):
        super().__init__(message)
        self.message = message
        if kind is not None:
            self.kind = kind
        self.field = field
        self.retry_after_seconds = retry_after_seconds if retry_after_seconds is not None else (
            DEFAULT_RETRY_AFTER_SECONDS.get(self.kind))

    @property
    def code(self) -> str:
        return self.kind.code


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
            "request_id was already used with different parameters; use a new request_id for a new payment",
            field="request_id",
        )


class IdempotencyInProgressError(PaymentsError):
    kind = ErrorKind.IDEMPOTENCY_IN_PROGRESS

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
