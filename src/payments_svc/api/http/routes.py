"""The reference's routes, plus the events timeline, the probes and the OpenAPI description."""

from __future__ import annotations

import json
from enum import IntEnum

from aiohttp import web

from ...domain.enums import PaymentStatus, ProviderType
from ...domain.errors import ValidationError
from ...domain.payment import CreatePaymentCommand, ListPaymentsQuery, ProviderCallback
from ...domain.refund import RefundCommand
from ...service.callbacks import CallbackService
from ...service.payments import PaymentService
from ..errors import REPLAYED_HEADER
from ..payment_fields import event_fields, payment_fields, refund_fields
from ..request_context import current_caller
from ..untrusted_input import MAX_JSON_DEPTH, check_text, json_too_deep
from .json_body import CANCEL_FIELDS, CREATE_FIELDS, REFUND_FIELDS, BodyError, decode_object, enum_by_name
from .middleware import header_text, json_response, read_body
from .openapi import build_openapi

UINT64_MAX = 2**64 - 1
INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)


def _path_id(request: web.Request) -> int:
    raw = request.match_info["id"]
    # The length first: int() refuses more than 4300 digits with an error of its own.
    if len(raw) > len(str(UINT64_MAX)) or not raw.isascii() or not raw.isdigit() or int(raw) > UINT64_MAX:
        raise ValidationError("invalid request", field="id")
    return int(raw)


def _query_text(request: web.Request, name: str) -> str:
    return check_text(name, request.query.get(name, "")).strip()


def _query_int(request: web.Request, name: str, default: int, bounds: tuple[int, int] = INT32) -> int:
    """A base-10 integer of the field's width (the reference's fields are int32); a
    value that does not fit is a parse error, never a number the database chokes on."""
    raw = _query_text(request, name)
    if not raw:
        return default
    # Python's int() also takes "1_000" and non-ASCII digits; Go's ParseInt does not.
    if not raw.isascii() or "_" in raw or len(raw) > 20:
        raise ValidationError("invalid request", field=name)
    try:
        value = int(raw, 10)
    except ValueError:
        raise ValidationError("invalid request", field=name) from None
    if not bounds[0] <= value <= bounds[1]:
        raise ValidationError("invalid request", field=name)
    return value


def _query_enum(request: web.Request, name: str, enum: type[IntEnum]) -> int | None:
    """A number as the reference took it, or (new) the value's name: `paid`, `PAID`,
    `PAYMENT_STATUS_PAID`. None when not given; a name that is none is a parse error."""
    raw = _query_text(request, name)
    if not raw:
        return None
    if raw.lstrip("+-").isdigit():
        return _query_int(request, name, 0)
    number = enum_by_name(enum, raw)
    if number is None:
        raise ValidationError("invalid request", field=name)
    return number


def _is_json(request: web.Request) -> bool:
    return request.headers.get("Content-Type", "").lower().startswith("application/json")


async def _json_fields(request: web.Request, fields: dict, error: str) -> dict:
    """The reference's binding rules: an empty body binds nothing; form bodies bind
    nothing; any other non-JSON body is an error."""
    body = await read_body(request)
    if not body:
        return {}
    content_type = request.headers.get("Content-Type", "").lower()
    if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        return {}
    if not _is_json(request):
        raise ValidationError(f"{error}: Content-Type must be application/json")
    try:
        return decode_object(body, fields)
    except BodyError as exc:
        raise ValidationError(f"{error}: {exc.message}", field=exc.field) from None


async def read_webhook_body(request: web.Request) -> bytes:
    """A provider's raw webhook body, refused if no JSON parser should walk it."""
    payload = await read_body(request)
    if json_too_deep(payload):
        raise ValidationError(f"invalid request body: nested more than {MAX_JSON_DEPTH} levels deep", field="payload")
    return payload


def signature_header(request: web.Request, *names: str) -> str:
    """The first non-blank of the signature headers."""
    for name in names:
        value = header_text(request, name)
        if value is None:
            raise ValidationError(f"{name} header must be UTF-8 text without NUL characters", field="signature")
        if value:
            return value
    return ""


class Routes:
    def __init__(self, service: PaymentService, readiness):
        self.service = service
        self.callbacks = CallbackService(service)
        self.readiness = readiness
        self._openapi: bytes | None = None

    def register(self, app: web.Application) -> None:
        app.router.add_get("/health", self.health)
        app.router.add_get("/healthz", self.liveness)
        app.router.add_get("/readyz", self.ready)
        app.router.add_post("/payments", self.create)
        app.router.add_get("/payments", self.list)
        app.router.add_get("/payments/{id}", self.get)
        app.router.add_post("/payments/{id}/cancel", self.cancel)
        app.router.add_post("/payments/{id}/refund", self.refund)
        app.router.add_get("/payments/{id}/events", self.events)
        app.router.add_post("/payments/{id}/callbacks/replay", self.replay_callback)
        app.router.add_post("/webhooks/providers/{provider}/{hash}", self.provider_callback)
        app.router.add_get("/openapi.json", self.openapi)

    async def health(self, request):
        return json_response({"status": "ok"})

    async def openapi(self, request):
        """The description of what this server serves: the enabled providers' routes only."""
        if self._openapi is None:
            self._openapi = json.dumps(build_openapi(self.service.providers.enabled), indent=2).encode() + b"\n"
        return web.Response(body=self._openapi, content_type="application/json")

    async def liveness(self, request):
        return json_response({"status": "ok"})

    async def ready(self, request):
        problem = await self.readiness()
        if problem:
            return json_response({"status": "not ready", "reason": problem}, 503)
        return json_response({"status": "ok"})

    async def create(self, request: web.Request):
        fields = await _json_fields(request, CREATE_FIELDS, "invalid request body")
        if not fields.get("request_id", "").strip():
            fields["request_id"] = header_text(request, "X-Request-ID")  # the reference's fallback (checked by the middleware)
        command = CreatePaymentCommand(
            request_id=fields["request_id"],
            caller_service=fields.get("caller_service", ""),
            resource_type=fields.get("resource_type", ""),
            resource_id=fields.get("resource_id", ""),
            customer_ref=fields.get("customer_ref", ""),
            amount_cents=fields.get("amount_cents", 0),
            currency=fields.get("currency", ""),
            payment_method=fields.get("payment_method", 0),
            payment_type=fields.get("payment_type", 0),
            provider=fields.get("provider", 0),
            recurring_interval=fields.get("recurring_interval", ""),
            recurring_interval_count=fields.get("recurring_interval_count", 0),
            status_callback_url=fields.get("status_callback_url", ""),
            success_url=fields.get("success_url", ""),
            cancel_url=fields.get("cancel_url", ""),
            metadata=fields.get("metadata", {}),
        )
        result = await self.service.create_payment(current_caller.get(), command)
        headers = {REPLAYED_HEADER: "true"} if result.replayed else None
        return json_response({"payment": payment_fields(result.payment), "routing_rule": result.routing_rule}, 201, headers)

    async def get(self, request: web.Request):
        payment, delivery = await self.callbacks.get_payment_with_delivery(current_caller.get(), _path_id(request))
        return json_response({"payment": payment_fields(payment, delivery)})

    async def refund(self, request: web.Request):
        payment_id = _path_id(request)
        fields = await _json_fields(request, REFUND_FIELDS, "invalid request body")
        request_id = fields.get("request_id", "").strip() or header_text(request, "X-Request-ID")  # as create
        command = RefundCommand(payment_id=payment_id, request_id=request_id, amount_cents=fields.get("amount_cents", 0),
                                reason=fields.get("reason", "").strip())
        result = await self.service.refund_payment(current_caller.get(), command)
        headers = {REPLAYED_HEADER: "true"} if result.replayed else None
        return json_response({"payment": payment_fields(result.payment), "refund": refund_fields(result.refund)}, 200, headers)

    async def replay_callback(self, request: web.Request):
        payment, delivery = await self.callbacks.replay(current_caller.get(), _path_id(request))
        return json_response({"payment": payment_fields(payment, delivery)}, 202)  # queued, not yet delivered

    async def list(self, request: web.Request):
        status = _query_enum(request, "status", PaymentStatus)
        if status is not None and (status not in PaymentStatus._value2member_map_ or status == 0):
            raise ValidationError("invalid status", field="status")
        provider = _query_enum(request, "provider", ProviderType)
        if provider is not None and (provider not in ProviderType._value2member_map_ or provider == 0):
            raise ValidationError("invalid request", field="provider")
        query = ListPaymentsQuery(
            request_id=_query_text(request, "request_id"),
            caller_service=_query_text(request, "caller_service"),
            resource_type=_query_text(request, "resource_type"),
            resource_id=_query_text(request, "resource_id"),
            status=PaymentStatus(status) if status is not None else None,
            provider=ProviderType(provider) if provider is not None else None,
            limit=_query_int(request, "limit", 100),
            offset=_query_int(request, "offset", 0),
        )
        payments = await self.service.list_payments(current_caller.get(), query)
        return json_response({"payments": [payment_fields(p) for p in payments]})

    async def cancel(self, request: web.Request):
        payment_id = _path_id(request)
        body = await read_body(request)
        reason = ""
        if body:
            if not _is_json(request):
                raise ValidationError("invalid request")
            try:
                reason = decode_object(body, CANCEL_FIELDS).get("reason", "")
            except BodyError as exc:  # the reference's message, which says less than exc
                raise ValidationError("invalid request", field=exc.field) from None
        payment = await self.service.cancel_payment(current_caller.get(), payment_id, reason)
        return json_response({"payment": payment_fields(payment)})

    async def events(self, request: web.Request):
        events = await self.service.list_payment_events(
            current_caller.get(),
            _path_id(request),
            limit=_query_int(request, "limit", 0),
            after_event_id=_query_int(request, "after_event_id", 0, INT64),
        )
        return json_response({"events": [event_fields(e) for e in events]})

    async def provider_callback(self, request: web.Request):
        payload = await read_webhook_body(request)
        signature = signature_header(request, "Stripe-Signature", "X-Provider-Signature")
        try:
            wrapper = json.loads(payload)
        except ValueError:
            wrapper = None
        if isinstance(wrapper, dict):
            # The reference's forward format {"payload": "<raw>", "signature": "<header>"}.
            if isinstance(wrapper.get("payload"), str) and wrapper["payload"].strip():
                payload = check_text("payload", wrapper["payload"]).encode()
                if json_too_deep(payload):
                    raise ValidationError(f"payload is nested more than {MAX_JSON_DEPTH} levels deep", field="payload")
            if isinstance(wrapper.get("signature"), str) and wrapper["signature"].strip():
                signature = check_text("signature", wrapper["signature"]).strip()
        await self.service.handle_provider_callback(
            ProviderCallback(
                request_id=header_text(request, "X-Request-ID"),
                provider=check_text("provider", request.match_info["provider"]).strip().lower(),
                callback_hash=check_text("callback_hash", request.match_info["hash"]).strip(),
                signature=signature,
                payload=payload,
            )
        )
        return json_response({"message": "Provider callback processed"})
