"""The HTTP shim of the live-status and operator RPCs: the SSE watch stream
(`GET /payments/{id}/watch`, `GET /payments/watch`), verify now, dead callbacks,
statistics, the system status and the audit trail."""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator

from aiohttp import web

from ...domain.enums import DeliveryStatus, PaymentStatus, ProviderType
from ...domain.errors import ValidationError
from ...domain.time_range import parse_moment
from ...service import audit, dead_callbacks, stats, system_status
from ...service.payments import PaymentService
from ...service.verify import VerifyService
from ...service.watch import Update, WatchHub, WatchService
from ..live_fields import audit_fields, delivery_record_fields, stats_fields, status_fields, update_fields, verify_fields
from ..request_context import current_caller
from .middleware import header_text, json_response
from .routes import INT64, _path_id, _query_enum, _query_int, _query_text

SSE_HEADERS = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache",
               "X-Accel-Buffering": "no"}  # nginx: pass each event on at once


def _after_event_id(request: web.Request) -> int:
    """The resume point: the SSE reconnect's Last-Event-ID, else ?after_event_id=."""
    last = header_text(request, "Last-Event-ID")
    if last:
        if not last.isascii() or not last.isdigit() or len(last) > 19:
            raise ValidationError("Last-Event-ID must be an event id (digits)", field="Last-Event-ID")
        return int(last)
    return _query_int(request, "after_event_id", 0, (0, INT64[1]))


def _sse(update: Update) -> bytes:
    """One SSE message: `payment` (the snapshot), `event`, `end`, or a keep-alive comment."""
    if update.ended_reason:
        return b"event: end\ndata: " + json.dumps({"ended_reason": update.ended_reason}).encode() + b"\n\n"
    if update.payment is None and update.event is None:
        return b": keep-alive\n\n"
    kind, event_id = ("event", update.event.id) if update.event is not None else ("payment", update.after_event_id)
    head = f"event: {kind}\n" + (f"id: {event_id}\n" if event_id else "")
    return head.encode() + b"data: " + json.dumps(update_fields(update), ensure_ascii=False).encode() + b"\n\n"


class LiveRoutes:
    def __init__(self, service: PaymentService, hub: WatchHub):
        self.service = service
        self.hub = hub

    @functools.cached_property
    def watch_service(self) -> WatchService:
        return WatchService(self.service.db, self.hub, self.service.settings)

    @functools.cached_property
    def verify_service(self) -> VerifyService:
        return VerifyService(self.service)

    def register(self, app: web.Application) -> None:
        # Before /payments/{id}: "stats" and "watch" are not ids.
        app.router.add_get("/payments/stats", self.stats)
        app.router.add_get("/payments/watch", self.watch_all)
        app.router.add_get("/payments/{id}/watch", self.watch)
        app.router.add_post("/payments/{id}/verify", self.verify)
        app.router.add_get("/callbacks/deliveries", self.deliveries)
        app.router.add_get("/status", self.status)
        app.router.add_get("/audit", self.audit)

    async def watch(self, request: web.Request):
        updates = self.watch_service.watch_payment(current_caller.get(), _path_id(request), _after_event_id(request))
        return await _stream(request, updates)

    async def watch_all(self, request: web.Request):
        status = _query_enum(request, "status", PaymentStatus)
        if status is not None and (status not in PaymentStatus._value2member_map_ or status == 0):
            raise ValidationError("invalid status", field="status")
        provider = _query_enum(request, "provider", ProviderType)
        if provider is not None and (provider not in ProviderType._value2member_map_ or provider == 0):
            raise ValidationError("invalid provider", field="provider")
        updates = self.watch_service.watch_payments(
            current_caller.get(), caller_service=_query_text(request, "caller_service"),
            status=PaymentStatus(status) if status is not None else None,
            provider=ProviderType(provider) if provider is not None else None,
            after_event_id=_after_event_id(request))
        return await _stream(request, updates)

    async def verify(self, request: web.Request):
        result = await self.verify_service.verify(current_caller.get(), _path_id(request))
        return json_response(verify_fields(result))

    async def deliveries(self, request: web.Request):
        status = _query_text(request, "status").lower()
        named = {"dead": DeliveryStatus.FAILED, **{s.name.lower(): s for s in DeliveryStatus}}
        if status and status not in named:
            raise ValidationError("status must be one of dead, pending, success, failed, requeued", field="status")
        records = await dead_callbacks.list_deliveries(
            self.service.db, current_caller.get(), caller_service=_query_text(request, "caller_service"),
            status=int(named[status]) if status else 0, since=parse_moment("since", _query_text(request, "since")),
            until=parse_moment("until", _query_text(request, "until")),
            before_id=_query_int(request, "before_id", 0, (0, INT64[1])), limit=_query_int(request, "limit", 0))
        return json_response({"deliveries": [delivery_record_fields(r) for r in records]})

    async def stats(self, request: web.Request):
        result = await stats.payment_stats(
            self.service.db, current_caller.get(), caller_service=_query_text(request, "caller_service"),
            customer_ref=_query_text(request, "customer_ref"), since=parse_moment("since", _query_text(request, "since")),
            until=parse_moment("until", _query_text(request, "until")))
        return json_response(stats_fields(result))

    async def status(self, request: web.Request):
        result = await system_status.system_status(self.service.db, self.service.settings, current_caller.get(),
                                                   watchers=self.hub.watchers)
        return json_response(status_fields(result))

    async def audit(self, request: web.Request):
        entries = await audit.list_entries(
            self.service.db, current_caller.get(), action=_query_text(request, "action"),
            target_type=_query_text(request, "target_type"), target_id=_query_text(request, "target_id"),
            before_id=_query_int(request, "before_id", 0, (0, INT64[1])), limit=_query_int(request, "limit", 0))
        return json_response({"entries": [audit_fields(e) for e in entries]})


async def _stream(request: web.Request, updates: AsyncIterator[Update]) -> web.StreamResponse:
    """Streams the updates as SSE. The first update is awaited before the response
    starts, so that a refusal (404, 403, 400) is an ordinary JSON error answer."""
    iterator = aiter(updates)
    try:
        update = await anext(iterator)
        response = web.StreamResponse(headers={**SSE_HEADERS, "X-Request-ID": request.headers.get("X-Request-ID", "")})
        await response.prepare(request)
        try:
            while True:
                await response.write(_sse(update))
                if update.final:
                    if not update.ended_reason:
                        await response.write(b'event: end\ndata: {"ended_reason": ""}\n\n')
                    break
                update = await anext(iterator)
            await response.write_eof()
        except ConnectionError:
            pass  # the client left: the usual end of a watch
        return response
    finally:
        await iterator.aclose()
