"""The live-status and operator RPCs of payments.PaymentsService (issue 15): proto in,
service calls, proto out. Mixed into PaymentsServicer."""

from __future__ import annotations

from ...domain.enums import PaymentStatus, ProviderType
from ...domain.errors import ValidationError
from ...domain.time_range import parse_moment
from ...gen import payments_pb2 as pb
from ...service import audit, dead_callbacks, stats, system_status
from ...service.verify import VerifyService
from ...service.watch import WatchHub, WatchService
from ..live_fields import audit_fields, delivery_record_fields, stats_fields, status_fields, update_fields, verify_fields
from ..request_context import current_caller


class LiveRpcs:
    def _init_live(self, service, hub: WatchHub | None) -> None:
        self._live_service = service
        self._hub = hub if hub is not None else WatchHub(service.db, service.settings)
        self._watch = WatchService(service.db, self._hub, service.settings)
        self._verify = VerifyService(service)

    async def WatchPayment(self, request: pb.WatchPaymentRequest, context):
        async for update in self._watch.watch_payment(current_caller.get(), request.id, request.after_event_id):
            yield pb.WatchUpdate(**update_fields(update))

    async def WatchPayments(self, request: pb.WatchPaymentsRequest, context):
        if request.provider != 0 and request.provider not in ProviderType._value2member_map_:
            raise ValidationError("invalid provider", field="provider")
        if request.has_status and request.status not in PaymentStatus._value2member_map_:
            raise ValidationError("invalid status", field="status")
        updates = self._watch.watch_payments(
            current_caller.get(), caller_service=request.caller_service.strip(),
            status=PaymentStatus(request.status) if request.has_status else None,
            provider=ProviderType(request.provider) if request.provider else None,
            after_event_id=request.after_event_id)
        async for update in updates:
            yield pb.WatchUpdate(**update_fields(update))

    async def VerifyPayment(self, request: pb.VerifyPaymentRequest, context):
        return pb.VerifyPaymentResponse(**verify_fields(await self._verify.verify(current_caller.get(), request.id)))

    async def ListCallbackDeliveries(self, request: pb.ListCallbackDeliveriesRequest, context):
        records = await dead_callbacks.list_deliveries(
            self._live_service.db, current_caller.get(), caller_service=request.caller_service.strip(),
            status=request.status, since=parse_moment("since", request.since), until=parse_moment("until", request.until),
            before_id=request.before_id, limit=request.limit)
        return pb.ListCallbackDeliveriesResponse(deliveries=[delivery_record_fields(r) for r in records])

    async def GetPaymentStats(self, request: pb.GetPaymentStatsRequest, context):
        result = await stats.payment_stats(
            self._live_service.db, current_caller.get(), caller_service=request.caller_service,
            customer_ref=request.customer_ref, since=parse_moment("since", request.since),
            until=parse_moment("until", request.until))
        return pb.GetPaymentStatsResponse(**stats_fields(result))

    async def GetSystemStatus(self, request: pb.GetSystemStatusRequest, context):
        result = await system_status.system_status(self._live_service.db, self._live_service.settings,
                                                   current_caller.get(), watchers=self._hub.watchers)
        return pb.GetSystemStatusResponse(**status_fields(result))

    async def ListAuditEntries(self, request: pb.ListAuditEntriesRequest, context):
        entries = await audit.list_entries(
            self._live_service.db, current_caller.get(), action=request.action.strip(),
            target_type=request.target_type.strip(), target_id=request.target_id.strip(), before_id=request.before_id,
            limit=request.limit)
        return pb.ListAuditEntriesResponse(entries=[audit_fields(e) for e in entries])
