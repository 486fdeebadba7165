"""payments.PaymentsService: proto messages in, service calls, proto messages out."""

from __future__ import annotations

import asyncio

import grpc

from ...domain.enums import PaymentStatus, ProviderType
from ...domain.errors import ValidationError
from ...domain.payment import CreatePaymentCommand, ListPaymentsQuery, ProviderCallback
from ...domain.refund import RefundCommand
from ...gen import payments_pb2 as pb
from ...gen import payments_pb2_grpc
from ...service.callbacks import CallbackService
from ...service.payments import PaymentService
from ...service.watch import WatchHub
from ..errors import REPLAYED_HEADER
from ..payment_fields import event_fields, payment_fields, refund_fields
from ..request_context import current_caller
from ..untrusted_input import MAX_JSON_DEPTH, json_too_deep
from .live_servicer import LiveRpcs


def _envelope(payment, delivery=None) -> pb.PaymentEnvelopeResponse:
    return pb.PaymentEnvelopeResponse(payment=pb.Payment(**payment_fields(payment, delivery)))


def _retrieve_exception(task: asyncio.Future) -> None:
    """The caller may be gone: mark the outcome as seen so nothing is logged as never retrieved."""
    if not task.cancelled():
        task.exception()


class PaymentsServicer(LiveRpcs, payments_pb2_grpc.PaymentsServiceServicer):
    def __init__(self, service: PaymentService, hub: WatchHub | None = None):
        self._service = service
        self._callbacks = CallbackService(service)
        self._init_live(service, hub)  # the watch streams share `hub` with the HTTP shim's

    async def Health(self, request, context):
        return pb.HealthResponse(status="ok")

    async def CreatePayment(self, request: pb.CreatePaymentRequest, context: grpc.aio.ServicerContext):
        command = CreatePaymentCommand(
            request_id=request.request_id,
            caller_service=request.caller_service,
            resource_type=request.resource_type,
            resource_id=request.resource_id,
            customer_ref=request.customer_ref,
            amount_cents=request.amount_cents,
            currency=request.currency,
            payment_method=request.payment_method,
            payment_type=request.payment_type,
            provider=request.provider,
            recurring_interval=request.recurring_interval,
            recurring_interval_count=request.recurring_interval_count,
            status_callback_url=request.status_callback_url,
            success_url=request.success_url,
            cancel_url=request.cancel_url,
            metadata=dict(request.metadata),
        )
        # A client that gives up (deadline, disconnect) must not abandon the create half way:
        # the provider may already have been called, and the key would stay locked until the
        # create lease ran out (ABORTED for every retry meanwhile). Finish it; the retry replays.
        create = asyncio.ensure_future(self._service.create_payment(current_caller.get(), command))
        create.add_done_callback(_retrieve_exception)
        result = await asyncio.shield(create)
        if result.replayed:
            context.set_trailing_metadata(((REPLAYED_HEADER, "true"),))
        return pb.PaymentEnvelopeResponse(payment=pb.Payment(**payment_fields(result.payment)),
                                          routing_rule=result.routing_rule or None)  # absent unless a rule chose

    async def GetPayment(self, request: pb.GetPaymentRequest, context):
        return _envelope(*await self._callbacks.get_payment_with_delivery(current_caller.get(), request.id))

    async def ListPayments(self, request: pb.ListPaymentsRequest, context):
        if request.provider != 0 and request.provider not in ProviderType._value2member_map_:
            raise ValidationError("invalid provider", field="provider")
        if request.has_status and request.status not in PaymentStatus._value2member_map_:
            raise ValidationError("invalid status", field="status")
        query = ListPaymentsQuery(
            request_id=request.request_id.strip(),
            caller_service=request.caller_service.strip(),
            resource_type=request.resource_type.strip(),
            resource_id=request.resource_id.strip(),
            status=PaymentStatus(request.status) if request.has_status else None,
            provider=ProviderType(request.provider) if request.provider else None,
            limit=request.limit,
            offset=request.offset,
        )
        payments = await self._service.list_payments(current_caller.get(), query)
        return pb.ListPaymentsResponse(payments=[pb.Payment(**payment_fields(p)) for p in payments])

    async def CancelPayment(self, request: pb.CancelPaymentRequest, context):
        return _envelope(await self._service.cancel_payment(current_caller.get(), request.id, request.reason))

    async def HandleProviderCallback(self, request: pb.HandleProviderCallbackRequest, context):
        if json_too_deep(request.payload):
            raise ValidationError(f"payload is nested more than {MAX_JSON_DEPTH} levels deep", field="payload")
        await self._service.handle_provider_callback(
            ProviderCallback(
                request_id=request.request_id,
                provider=request.provider,
                callback_hash=request.callback_hash,
                signature=request.signature,
                payload=request.payload.encode(),
            )
        )
        return pb.MessageResponse(message="Provider callback processed")

    async def ListPaymentEvents(self, request: pb.ListPaymentEventsRequest, context):
        events = await self._service.list_payment_events(
            current_caller.get(), request.id, limit=request.limit, after_event_id=request.after_event_id
        )
        return pb.ListPaymentEventsResponse(events=[pb.PaymentEvent(**event_fields(e)) for e in events])

    async def ReplayCallback(self, request: pb.ReplayCallbackRequest, context):
        return _envelope(*await self._callbacks.replay(current_caller.get(), request.id))

    async def RefundPayment(self, request: pb.RefundPaymentRequest, context):
        command = RefundCommand(payment_id=request.id, request_id=request.request_id.strip(),
                                amount_cents=request.amount_cents, reason=request.reason.strip())
        result = await self._service.refund_payment(current_caller.get(), command)
        if result.replayed:
            context.set_trailing_metadata(((REPLAYED_HEADER, "true"),))
        return pb.RefundPaymentResponse(payment=pb.Payment(**payment_fields(result.payment)),
                                        refund=pb.Refund(**refund_fields(result.refund)))
