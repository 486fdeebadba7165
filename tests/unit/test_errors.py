"""The one mapping of errors to both transports: statuses, the JSON shape, retry
hints and google.rpc details."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from payments_svc.api.errors import GRPC_CODES, HTTP_STATUSES, error_body, grpc_status, http_error
from payments_svc.domain.errors import (
    ErrorKind,
    IdempotencyInProgressError,
    IdempotencyKeyReusedError,
    PaymentsError,
    ServiceUnavailableError,
    ValidationError,
)


def test_every_kind_has_a_status_on_both_transports():
    assert set(GRPC_CODES) == set(HTTP_STATUSES) == set(ErrorKind)


@pytest.mark.parametrize("error, status, body, headers", [
    (ValidationError("amount_cents must be > 0", field="amount_cents"), 400,
     {"error": "amount_cents must be > 0", "code": "invalid_argument", "field": "amount_cents"}, {}),
    (PaymentsError("payment not found", ErrorKind.NOT_FOUND), 404, {"error": "payment not found", "code": "not_found"}, {}),
    (IdempotencyKeyReusedError(), 422, {"error": IdempotencyKeyReusedError().message, "code": "idempotency_key_reused",
                                        "field": "request_id"}, {}),
    (IdempotencyInProgressError(), 409, {"error": IdempotencyInProgressError().message, "code": "idempotency_in_progress"},
     {"Retry-After": "1"}),
    (PaymentsError("conflict", ErrorKind.ABORTED), 409, {"error": "conflict", "code": "aborted"}, {"Retry-After": "1"}),
    (ServiceUnavailableError("database unavailable; retry"), 503,
     {"error": "database unavailable; retry", "code": "unavailable"}, {"Retry-After": "5"}),
    (ServiceUnavailableError("auth unavailable", retry_after_seconds=2), 503,
     {"error": "auth unavailable", "code": "unavailable"}, {"Retry-After": "2"}),
])
def test_http_answers(error, status, body, headers):
    assert http_error(error) == (status, body, headers)
    assert error_body(error) == body


def _details(error: PaymentsError) -> tuple[grpc.Status, dict]:
    status = grpc_status(error)
    (key, value), = status.trailing_metadata
    assert key == "grpc-status-details-bin"
    rich = status_pb2.Status.FromString(value)
    assert (rich.code, rich.message) == (status.code.value[0], status.details)
    out = {}
    for detail in rich.details:
        for kind in (error_details_pb2.ErrorInfo, error_details_pb2.BadRequest, error_details_pb2.RetryInfo):
            if detail.Is(kind.DESCRIPTOR):
                out[kind.__name__] = kind()
                detail.Unpack(out[kind.__name__])
    return status, out


def test_grpc_status_carries_error_info_field_violations_and_retry_info():
    status, details = _details(ValidationError("currency must be 3 letters", field="currency"))
    assert (status.code, status.details) == (grpc.StatusCode.INVALID_ARGUMENT, "currency must be 3 letters")
    assert (details["ErrorInfo"].reason, details["ErrorInfo"].domain) == ("INVALID_ARGUMENT", "payments-svc")
    assert [(v.field, v.description) for v in details["BadRequest"].field_violations] == [
        ("currency", "currency must be 3 letters")]
    assert "RetryInfo" not in details

    status, details = _details(ServiceUnavailableError("provider timed out"))
    assert status.code == grpc.StatusCode.UNAVAILABLE
    assert (set(details), details["RetryInfo"].retry_delay.seconds) == ({"ErrorInfo", "RetryInfo"}, 5)

    status, details = _details(IdempotencyInProgressError())
    assert (status.code, details["ErrorInfo"].reason, details["RetryInfo"].retry_delay.seconds) == (
        grpc.StatusCode.ABORTED, "IDEMPOTENCY_IN_PROGRESS", 1)
