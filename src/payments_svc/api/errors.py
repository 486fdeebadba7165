"""The one mapping from service errors to what each transport answers.

HTTP: the status, `{"error": <message>, "code": <kind>, "field": <field, when one>}`
and `Retry-After` when the error has a retry hint. gRPC: the status code and
message, with google.rpc details: ErrorInfo (the same code), BadRequest (the
field) and RetryInfo (the hint).
"""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from ..domain.errors import ErrorKind, PaymentsError

GRPC_CODES = {
    ErrorKind.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorKind.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorKind.ALREADY_EXISTS: grpc.StatusCode.ALREADY_EXISTS,
    ErrorKind.PERMISSION_DENIED: grpc.StatusCode.PERMISSION_DENIED,
    ErrorKind.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    ErrorKind.FAILED_PRECONDITION: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorKind.IDEMPOTENCY_KEY_REUSED: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorKind.IDEMPOTENCY_IN_PROGRESS: grpc.StatusCode.ABORTED,
    ErrorKind.ABORTED: grpc.StatusCode.ABORTED,
    ErrorKind.RESOURCE_EXHAUSTED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorKind.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    ErrorKind.INTERNAL: grpc.StatusCode.INTERNAL,
    ErrorKind.METHOD_NOT_ALLOWED: grpc.StatusCode.UNIMPLEMENTED,
    ErrorKind.REQUEST_TIMEOUT: grpc.StatusCode.DEADLINE_EXCEEDED,
    ErrorKind.PAYLOAD_TOO_LARGE: grpc.StatusCode.RESOURCE_EXHAUSTED,
}

HTTP_STATUSES = {
    ErrorKind.INVALID_ARGUMENT: 400,
    ErrorKind.NOT_FOUND: 404,
    ErrorKind.ALREADY_EXISTS: 409,
    ErrorKind.PERMISSION_DENIED: 403,
    ErrorKind.UNAUTHENTICATED: 401,
    ErrorKind.FAILED_PRECONDITION: 400,
    ErrorKind.IDEMPOTENCY_KEY_REUSED: 422,
    ErrorKind.IDEMPOTENCY_IN_PROGRESS: 409,
    ErrorKind.ABORTED: 409,
    ErrorKind.RESOURCE_EXHAUSTED: 429,
    ErrorKind.UNAVAILABLE: 503,
    ErrorKind.INTERNAL: 500,
    ErrorKind.METHOD_NOT_ALLOWED: 405,
    ErrorKind.REQUEST_TIMEOUT: 408,
    ErrorKind.PAYLOAD_TOO_LARGE: 413,
}

INTERNAL_MESSAGE = "internal server error"
REPLAYED_HEADER = "idempotent-replayed"
ERROR_DOMAIN = "payments-svc"  # google.rpc.ErrorInfo.domain: whose codes these are


def internal_error() -> PaymentsError:
    return PaymentsError(INTERNAL_MESSAGE, ErrorKind.INTERNAL)


def error_body(error: PaymentsError) -> dict[str, Any]:
    body: dict[str, Any] = {"error": error.message, "code": error.code}
    if error.field:
        body["field"] = error.field
    return body


def http_error(error: PaymentsError) -> tuple[int, dict[str, Any], dict[str, str]]:
    """The HTTP status, JSON body and headers of an error answer."""
    headers = {}
    if error.retry_after_seconds is not None:
        headers["Retry-After"] = str(error.retry_after_seconds)
    return HTTP_STATUSES[error.kind], error_body(error), headers


def _packed(message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def grpc_status(error: PaymentsError) -> grpc.Status:
    """The gRPC status: code, message (the same text as over HTTP) and the
    `grpc-status-details-bin` trailer that grpcio-status clients unpack."""
    code = GRPC_CODES[error.kind]
    info = error_details_pb2.ErrorInfo(reason=error.code.upper(), domain=ERROR_DOMAIN)
    details = [info]
    if error.field:
        info.metadata["field"] = error.field
        details.append(error_details_pb2.BadRequest(field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=error.field, description=error.message)]))
    if error.retry_after_seconds is not None:
        details.append(error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=error.retry_after_seconds)))
    return rpc_status.to_status(status_pb2.Status(code=code.value[0], message=error.message,
                                                  details=[_packed(d) for d in details]))
