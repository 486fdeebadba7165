"""The OpenAPI 3.1 description of the HTTP shim, built from the proto descriptors so
message schemas cannot drift from the proto (tests validate it with
openapi-spec-validator and compare it with the committed openapi.json and with the
aiohttp routes). The served document lists only the enabled providers' routes; the
committed one (`build_openapi()`) has every provider's."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from ...domain.enums import ProviderType
from ...domain.errors import ErrorKind
from ...gen import payments_pb2 as pb

F = FieldDescriptor
_SCALARS = {
    F.TYPE_STRING: {"type": "string"},
    F.TYPE_BOOL: {"type": "boolean"},
    F.TYPE_INT32: {"type": "integer", "format": "int32"},
    F.TYPE_INT64: {"type": "integer", "format": "int64"},
    F.TYPE_UINT64: {"type": "integer", "format": "int64", "minimum": 0},
    F.TYPE_DOUBLE: {"type": "number"},
}
ERROR = {"$ref": "#/components/schemas/Error"}
REQUEST_ID = {"name": "X-Request-ID", "in": "header", "required": True, "schema": {"type": "string", "minLength": 1},
              "description": "Required on every call, checked before the key (400 without it); echoed back."}
SECURITY_SCHEMES = {
    "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key",
               "description": "The caller's API key (`payments-svc keys create`, or the external Auth service's)."},
    "RequestId": {"type": "apiKey", "in": "header", "name": "X-Request-ID",
                  "description": "Not a credential, but required beside the key on every call that needs one: any "
                                 "non-blank id of the caller's choosing, echoed back (each operation lists it as a header "
                                 "parameter, since a missing one is 400, not 401)."},
}
API_KEY = [{"ApiKey": []}]
RESPONSE_HEADERS = {
    "X-Request-ID": {"description": "The request's X-Request-ID, echoed back.", "schema": {"type": "string"}},
    "idempotent-replayed": {"description": "`true` when the answer is a replay of an earlier request with this request_id.",
                            "schema": {"type": "string", "enum": ["true"]}},
    "Retry-After": {"description": "Seconds to wait before retrying (with the same request_id).",
                    "schema": {"type": "integer", "minimum": 0}},
}
RETRY_STATUSES = (409, 429, 503)  # the statuses whose errors carry a retry hint
PATH_ID = {"name": "id", "in": "path", "required": True,
           "schema": {"type": "integer", "minimum": 1, "maximum": 2**64 - 1, "description": "uint64"}}
URL = {"type": "string", "maxLength": 1024, "pattern": "^\\s*[Hh][Tt][Tt][Pp][Ss]?://[^\\s/?#]+\\S*\\s*$"}
# What the service checks beyond the proto's types (domain/validation.py). Where a
# check depends on other fields or on configuration (recurring bounds, the provider's
# currencies, PAYMENTS_MAX_AMOUNT_CENTS, allowed callback hosts) the description is
# looser than the service and says so: anything it rejects, the service rejects too.
CREATE_CONSTRAINTS: dict[str, dict[str, Any]] = {
    "request_id": {"maxLength": 128, "description": "The idempotency key; blank: X-Request-ID."},
    "caller_service": {"minLength": 1, "maxLength": 128, "pattern": "\\S"},
    "resource_type": {"minLength": 1, "maxLength": 128, "pattern": "\\S"},
    "resource_id": {"minLength": 1, "maxLength": 255, "pattern": "\\S"},
    "customer_ref": {"maxLength": 255},
    "amount_cents": {"minimum": 1, "description": "Minor units; at most PAYMENTS_MAX_AMOUNT_CENTS."},
    "currency": {"pattern": "^\\s*[A-Za-z0-9]{1,12}\\s*$",
                 "description": "3 letters (ISO 4217) for card providers; the asset code for Stellar."},
    "recurring_interval": {"description": "Recurring payments: day, week, month or year (ignored for one-time payments)."},
    "recurring_interval_count": {"description": "Recurring payments: 1 up to one year's worth of intervals."},
    "status_callback_url": URL,
    "success_url": {"anyOf": [{"type": "string", "pattern": "^\\s*$"}, URL]},
    "cancel_url": {"anyOf": [{"type": "string", "pattern": "^\\s*$"}, URL]},
    "metadata": {"maxProperties": 50, "propertyNames": {"maxLength": 40, "pattern": "^[^\\[\\]]*[^\\s\\[\\]][^\\[\\]]*$"},
                 "additionalProperties": {"type": "string", "maxLength": 500}},
}
CREATE_REQUIRED = ["caller_service", "resource_type", "resource_id", "amount_cents", "currency", "payment_method",
                   "payment_type", "status_callback_url"]
CREATE_ENUM_VALUES = {"payment_method": [1, 2], "payment_type": [1, 2]}


def _field_schema(field: FieldDescriptor, *, accept_enum_names: bool) -> dict[str, Any]:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        value = field.message_type.fields_by_name["value"]
        return {"type": "object", "additionalProperties": _field_schema(value, accept_enum_names=False)}
    if field.type == F.TYPE_MESSAGE:
        schema: dict[str, Any] = {"$ref": f"#/components/schemas/{field.message_type.name}"}
    elif field.type == F.TYPE_ENUM:
        values = [v.number for v in field.enum_type.values]
        names = ", ".join(f"{v.number}={v.name}" for v in field.enum_type.values)
        schema = {"type": "integer", "enum": values, "description": f"{field.enum_type.name}: {names}"}
        if accept_enum_names:
            prefix = field.enum_type.values[0].name.removesuffix("UNSPECIFIED")
            labels = [v.name for v in field.enum_type.values] + [v.name.removeprefix(prefix).lower() for v in field.enum_type.values]
            schema = {"oneOf": [schema, {"type": "string", "enum": labels}]}
    else:
        schema = dict(_SCALARS[field.type])
    if field.is_repeated:
        return {"type": "array", "items": schema}
    return schema


def message_schema(descriptor: Descriptor, *, request: bool = False) -> dict[str, Any]:
    properties = {f.name: _field_schema(f, accept_enum_names=request) for f in descriptor.fields}
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if request:  # JSON null means "not given" in a request, as with the reference's binder
        schema["properties"] = {name: nullable(s) for name, s in properties.items()}
    else:
        required = [f.name for f in descriptor.fields if not f.has_presence]  # messages and `optional` fields may be absent
        if required:
            schema["required"] = required
        schema["additionalProperties"] = False
    return schema


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema, or JSON null."""
    if isinstance(schema.get("type"), str):
        out = {**schema, "type": [schema["type"], "null"]}
        if "enum" in schema:
            out["enum"] = [*schema["enum"], None]
        return out
    for key in ("oneOf", "anyOf"):
        if key in schema:
            return {**schema, key: [*schema[key], {"type": "null"}]}
    return {"anyOf": [schema, {"type": "null"}]}


def _create_request_schema() -> dict[str, Any]:
    properties = {f.name: _field_schema(f, accept_enum_names=True) for f in pb.CreatePaymentRequest.DESCRIPTOR.fields}
    for name, constraints in CREATE_CONSTRAINTS.items():
        properties[name] = constraints if "anyOf" in constraints else {**properties[name], **constraints}
    for name, values in CREATE_ENUM_VALUES.items():
        numbers, names = properties[name]["oneOf"]
        numbers["enum"] = [v for v in numbers["enum"] if v in values]
        names["enum"] = [n for n in names["enum"] if not n.endswith(("UNSPECIFIED", "unspecified"))]
    return {"type": "object", "properties": {name: nullable(s) for name, s in properties.items()},
            "required": CREATE_REQUIRED}


def _with_nested(descriptors: list[Descriptor]) -> list[Descriptor]:
    """The messages and every message they contain (maps excepted), each once."""
    seen: dict[str, Descriptor] = {}
    pending = list(descriptors)
    while pending:
        descriptor = pending.pop()
        if descriptor.full_name in seen or descriptor.GetOptions().map_entry:
            continue
        seen[descriptor.full_name] = descriptor
        pending.extend(f.message_type for f in descriptor.fields if f.message_type is not None)
    return sorted(seen.values(), key=lambda d: d.name)


def _responses(ok_status: int, ok_schema: str, *errors: int, replayed: bool = False,
               echoed: bool = True) -> dict[str, Any]:
    """The success answer and the error answers (400, 401, 403, 429 (a caller's quota), 503 and `errors`).
    `replayed`: the success may be an idempotent replay; `echoed`: X-Request-ID comes back."""
    echo = {"X-Request-ID": {"$ref": "#/components/headers/X-Request-ID"}} if echoed else {}
    ok_headers = {**echo, **({"idempotent-replayed": {"$ref": "#/components/headers/idempotent-replayed"}} if replayed else {})}
    out: dict[str, Any] = {str(ok_status): {
        "description": "OK", "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ok_schema}"}}},
        **({"headers": ok_headers} if ok_headers else {})}}
    for status in sorted({400, 401, 403, 429, 503, *errors}):
        headers = dict(echo)
        if status in RETRY_STATUSES:
            headers["Retry-After"] = {"$ref": "#/components/headers/Retry-After"}
        out[str(status)] = {"description": "Error", "content": {"application/json": {"schema": ERROR}},
                            **({"headers": headers} if headers else {})}
    return out


def _body(schema: str, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}}


def _query(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    # An empty value means "not given" (as in the reference), whatever the type.
    return {"name": name, "in": "query", "required": False, "allowEmptyValue": True, "schema": schema}


def _query_enum_values(enum) -> list[str]:
    """What a query filter takes for an enum: the number or the value's name, in any spelling."""
    prefix = enum.values[0].name.removesuffix("UNSPECIFIED")
    out: list[str] = []
    for value in enum.values:
        if value.number:
            short = value.name.removeprefix(prefix)
            out += [str(value.number), short.lower(), short, value.name]
    return out


ERROR_SCHEMA = {
    "type": "object",
    "required": ["error", "code"],
    "properties": {
        "error": {"type": "string", "description": "What went wrong and what to do (the reference's message)."},
        "code": {"type": "string", "enum": [kind.code for kind in ErrorKind], "description": "Machine-readable; "
                 "the same as the gRPC error's google.rpc.ErrorInfo reason, lower-cased."},
        "field": {"type": "string", "description": "The offending body field, query parameter or header, when there is one."},
        "message": {"type": "string", "description": "404 and 405 only: the same text under the key the reference's "
                                                     "router answered with."},
    },
}


LIVE_RESPONSES = [pb.WatchUpdate, pb.VerifyPaymentResponse, pb.ListCallbackDeliveriesResponse, pb.GetPaymentStatsResponse,
                  pb.GetSystemStatusResponse, pb.ListAuditEntriesResponse]
RFC3339 = {"type": "string", "description": "RFC 3339, e.g. 2026-12-01T00:00:00Z, or a date (midnight UTC)"}
RESUME = [{"name": "Last-Event-ID", "in": "header", "required": False, "schema": {"type": "string", "pattern": "^[0-9]*$"},
           "description": "Resume after this event id (an SSE client sends it when it reconnects)."},
          _query("after_event_id", {"type": "integer", "minimum": 0, "maximum": 2**63 - 1})]


def _sse(operation_id: str, description: str, parameters: list) -> dict[str, Any]:
    ok = {"description": "Server-Sent Events: `event: payment` (the snapshot), `event: event` (id: the event id), "
                         "`event: end`; keep-alive comments. Each data line is a WatchUpdate as JSON.",
          "headers": {"X-Request-ID": {"$ref": "#/components/headers/X-Request-ID"}},
          "content": {"text/event-stream": {"schema": {"type": "string"}}}}
    errors = {k: v for k, v in _responses(200, "WatchUpdate", 404).items() if k != "200"}
    return {"get": {"operationId": operation_id, "description": description, "parameters": [REQUEST_ID, *parameters],
                    "responses": {"200": ok, **errors}}}


def live_paths() -> dict[str, Any]:
    """The live-status and operator routes (api/http/live_routes.py)."""
    admin = "Keys that act for every caller service (`--acts-for '*'`) only; others get 403."
    return {
        "/payments/{id}/watch": _sse("WatchPayment", "The payment now, then each of its events until a terminal status "
                                     "(WatchPayment as SSE).", [PATH_ID, *RESUME]),
        "/payments/watch": _sse("WatchPayments", "Every event of a caller service's payments (WatchPayments as SSE); "
                                "never ends by itself.", [
            _query("caller_service", {"type": "string"}),
            _query("status", {"type": "string", "enum": _query_enum_values(pb.PaymentStatus.DESCRIPTOR)}),
            _query("provider", {"type": "string", "enum": _query_enum_values(pb.ProviderType.DESCRIPTOR)}), *RESUME]),
        "/payments/{id}/verify": {"post": {
            "operationId": "VerifyPayment", "parameters": [REQUEST_ID, PATH_ID],
            "description": "Asks the payment's provider now and applies its answer; at most once per "
                           "PAYMENTS_VERIFY_MIN_INTERVAL_SECONDS per payment (429 with Retry-After).",
            "responses": _responses(200, "VerifyPaymentResponse", 404, 429)}},
        "/payments/stats": {"get": {"operationId": "GetPaymentStats", "parameters": [
            REQUEST_ID, _query("caller_service", {"type": "string"}), _query("customer_ref", {"type": "string"}),
            _query("since", RFC3339), _query("until", RFC3339)],
            "responses": _responses(200, "GetPaymentStatsResponse")}},
        "/callbacks/deliveries": {"get": {"operationId": "ListCallbackDeliveries", "parameters": [
            REQUEST_ID, _query("caller_service", {"type": "string"}),
            _query("status", {"type": "string", "enum": ["dead", "pending", "success", "failed", "requeued"]}),
            _query("since", RFC3339), _query("until", RFC3339),
            _query("limit", {"type": "integer", "minimum": 0, "maximum": 500}),
            _query("before_id", {"type": "integer", "minimum": 0, "maximum": 2**63 - 1})],
            "description": "Status callbacks, newest first; `status=dead`: those whose retries are exhausted.",
            "responses": _responses(200, "ListCallbackDeliveriesResponse")}},
        "/status": {"get": {"operationId": "GetSystemStatus", "parameters": [REQUEST_ID], "description": admin,
                            "responses": _responses(200, "GetSystemStatusResponse")}},
        "/audit": {"get": {"operationId": "ListAuditEntries", "description": admin, "parameters": [
            REQUEST_ID, _query("action", {"type": "string"}), _query("target_type", {"type": "string"}),
            _query("target_id", {"type": "string"}), _query("limit", {"type": "integer", "minimum": 0, "maximum": 500}),
            _query("before_id", {"type": "integer", "minimum": 0, "maximum": 2**63 - 1})],
            "responses": _responses(200, "ListAuditEntriesResponse")}},
    }


def build_openapi(providers: Collection[ProviderType] | None = None) -> dict[str, Any]:
    """`providers`: the enabled ones (the served document); None: all of them."""
    responses = [pb.PaymentEnvelopeResponse, pb.ListPaymentsResponse, pb.MessageResponse,
                 pb.HealthResponse, pb.ListPaymentEventsResponse, pb.RefundPaymentResponse, *LIVE_RESPONSES]
    schemas = {d.name: message_schema(d) for d in _with_nested([m.DESCRIPTOR for m in responses])}
    schemas["CreatePaymentRequest"] = _create_request_schema()
    schemas["CancelPaymentRequest"] = {"type": "object", "properties": {
        "reason": {"type": ["string", "null"], "maxLength": 255}}}
    schemas["RefundPaymentRequest"] = {"type": "object", "properties": {
        "request_id": {"type": ["string", "null"], "maxLength": 128,
                       "description": "The refund's idempotency key; default X-Request-ID."},
        "amount_cents": {"type": ["integer", "null"], "format": "int64", "minimum": 0,
                         "description": "0: all still refundable."},
        "reason": {"type": ["string", "null"], "enum": ["", "duplicate", "fraudulent", "requested_by_customer", None]}}}
    schemas["Error"] = ERROR_SCHEMA
    signed_webhook = {"name": "Stripe-Signature", "in": "header", "required": True, "schema": {"type": "string"}}
    schemas["VnpayIpnAnswer"] = {"type": "object", "required": ["RspCode", "Message"], "properties": {
        "RspCode": {"type": "string", "enum": ["00", "01", "02", "04", "97", "99"]}, "Message": {"type": "string"}}}
    paths = {
        "/health": {"get": {"operationId": "Health", "parameters": [REQUEST_ID], "responses": _responses(200, "HealthResponse")}},
        "/healthz": {"get": {"operationId": "Liveness", "description": "Liveness probe; no headers needed.", "security": [],
                             "responses": {"200": {"description": "The process serves."}}}},
        "/readyz": {"get": {"operationId": "Readiness", "description": "Readiness probe; no headers needed.", "security": [],
                            "responses": {"200": {"description": "Ready."}, "503": {"description": "Not ready."}}}},
        "/payments": {
            "post": {"operationId": "CreatePayment", "parameters": [REQUEST_ID], "requestBody": _body("CreatePaymentRequest"),
                     "description": "201 also on an idempotent replay (header idempotent-replayed: true).",
                     "responses": _responses(201, "PaymentEnvelopeResponse", 408, 409, 413, 422, replayed=True)},
            "get": {"operationId": "ListPayments", "parameters": [
                REQUEST_ID,
                _query("request_id", {"type": "string"}), _query("caller_service", {"type": "string"}),
                _query("resource_type", {"type": "string"}), _query("resource_id", {"type": "string"}),
                _query("status", {"type": "string", "enum": _query_enum_values(pb.PaymentStatus.DESCRIPTOR)}),
                _query("provider", {"type": "string", "enum": _query_enum_values(pb.ProviderType.DESCRIPTOR)}),
                _query("limit", {"type": "integer", "minimum": 0, "maximum": 500}),
                _query("offset", {"type": "integer", "minimum": 0, "maximum": 2**31 - 1})],
                "responses": _responses(200, "ListPaymentsResponse")},
        },
        "/payments/{id}": {"get": {"operationId": "GetPayment", "parameters": [REQUEST_ID, PATH_ID],
                                   "responses": _responses(200, "PaymentEnvelopeResponse", 404)}},
        "/payments/{id}/cancel": {"post": {"operationId": "CancelPayment", "parameters": [REQUEST_ID, PATH_ID],
                                           "requestBody": _body("CancelPaymentRequest", required=False),
                                           "responses": _responses(200, "PaymentEnvelopeResponse", 404, 408, 413)}},
        "/payments/{id}/refund": {"post": {"operationId": "RefundPayment", "parameters": [REQUEST_ID, PATH_ID],
                                           "requestBody": _body("RefundPaymentRequest", required=False),
                                           "description": "Idempotent on request_id (header idempotent-replayed: true).",
                                           "responses": _responses(200, "RefundPaymentResponse", 404, 408, 413, 422,
                                                                   replayed=True)}},
        "/payments/{id}/callbacks/replay": {"post": {
            "operationId": "ReplayCallback", "parameters": [REQUEST_ID, PATH_ID],
            "description": "Queues a new status callback delivery of the payment's current status.",
            "responses": _responses(202, "PaymentEnvelopeResponse", 404)}},
        "/payments/{id}/events": {"get": {"operationId": "ListPaymentEvents", "parameters": [
            REQUEST_ID, PATH_ID, _query("limit", {"type": "integer", "minimum": 0, "maximum": 500}),
            _query("after_event_id", {"type": "integer", "minimum": 0, "maximum": 2**63 - 1})],
            "responses": _responses(200, "ListPaymentEventsResponse", 404)}},
        "/webhooks/providers/{provider}/{hash}": {"post": {
            "operationId": "HandleProviderCallback",
            "parameters": [
                REQUEST_ID,
                {"name": "provider", "in": "path", "required": True, "schema": {"type": "string"}},
                {"name": "hash", "in": "path", "required": True, "schema": {"type": "string"}},
                {**signed_webhook, "required": False},
                {"name": "X-Provider-Signature", "in": "header", "required": False, "schema": {"type": "string"}}],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}},
            "description": "The provider's raw webhook body, or {\"payload\": \"<raw>\", \"signature\": \"<header>\"}.",
            "responses": _responses(200, "MessageResponse", 404, 408, 413)}},
    }
    account_id = {"name": "account_id", "in": "path", "required": True,
                  "schema": {"type": "string", "pattern": "^[0-9]{1,19}$"}}
    if providers is None or ProviderType.STRIPE in providers:
        paths["/webhooks/stripe"] = {"post": {
            "operationId": "StripeWebhook", "security": [],
            "description": "Stripe's account-level webhook endpoint: no X-Request-ID or X-API-Key, the signature authenticates.",
            "parameters": [signed_webhook],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}},
            "responses": {k: v for k, v in _responses(200, "MessageResponse", 404, 408, 413, echoed=False).items()
                          if k not in ("401", "403")}}}
        paths["/webhooks/stripe/{account_id}"] = {"post": {
            **paths["/webhooks/stripe"]["post"], "operationId": "StripeAccountWebhook",
            "description": "The webhook endpoint of a caller's Stripe provider account (`payments-svc accounts add`): "
                           "verified with that account's signing secret; it changes only that account's payments.",
            "parameters": [account_id, signed_webhook]}}
    if providers is None or ProviderType.VNPAY in providers:
        paths["/webhooks/vnpay"] = {"get": {
            "operationId": "VnpayIpn", "security": [],
            "description": "VNPay's IPN URL: no X-Request-ID or X-API-Key, the vnp_* query parameters' vnp_SecureHash "
                           "authenticates. Always 200 with VNPay's answer: 00 confirmed, 01 order not found, 02 already "
                           "confirmed, 04 invalid amount, 97 invalid signature, 99 unknown error (VNPay retries).",
            "parameters": [{"name": "vnp_SecureHash", "in": "query", "required": True, "schema": {"type": "string"}}],
            "responses": {"200": {"description": "VNPay's answer", "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/VnpayIpnAnswer"}}}}}}}
        paths["/webhooks/vnpay/{account_id}"] = {"get": {
            **paths["/webhooks/vnpay"]["get"], "operationId": "VnpayAccountIpn",
            "description": "The IPN URL of a caller's VNPay provider account (`payments-svc accounts add`), verified "
                           "with that account's hash secret; answers as /webhooks/vnpay.",
            "parameters": [account_id, *paths["/webhooks/vnpay"]["get"]["parameters"]]}}
    paths.update(live_paths())
    # Links from a created payment to the operations on it (for clients and stateful testing).
    paths["/payments"]["post"]["responses"]["201"]["links"] = {
        op: {"operationId": op, "parameters": {"id": "$response.body#/payment/id"}}
        for op in ("GetPayment", "CancelPayment", "ListPaymentEvents", "RefundPayment", "ReplayCallback")
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "payments-svc HTTP shim", "version": "1",
                 "description": "The same operations as gRPC payments.PaymentsService, as JSON. Every error answer is "
                                "`{\"error\": <message>, \"code\": <code>, \"field\": <field, when one>}`."},
        "security": API_KEY,
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": SECURITY_SCHEMES, "headers": RESPONSE_HEADERS},
    }
