"""payments_svc.client against a real grpc.aio server started here, whose servicer
fails as told before answering: retries (same request, same x-request-id), the codes
that are and are not retried, RetryInfo hints, deadlines, the typed methods."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.rpc import error_details_pb2, status_pb2

from payments_svc.client import (
    STATUS_DETAILS_TRAILER,
    PaymentsApiError,
    PaymentsClient,
    RetryPolicy,
    retry_delay_hint,
)
from payments_svc.gen import payments_pb2 as pb
from payments_svc.gen import payments_pb2_grpc

FAST = RetryPolicy(max_attempts=4, initial_backoff_seconds=0.01, max_backoff_seconds=0.05)


@dataclass
class Attempt:
    method: str
    request: object
    metadata: dict[str, str]
    time_remaining: float | None
    at: float


@dataclass
class Failure:
    code: grpc.StatusCode
    retry_after: float | None = None  # sent as google.rpc.RetryInfo


@dataclass
class ScriptedServicer(payments_pb2_grpc.PaymentsServiceServicer):
    """Fails each call with the next scripted failure, then answers; records every attempt."""

    failures: list[Failure] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)
    stall_seconds: float = 0.0

    async def _answer(self, method: str, request, context, response, trailers=()):
        self.attempts.append(Attempt(method, request, dict(context.invocation_metadata()), context.time_remaining(),
                                     time.monotonic()))
        if self.stall_seconds:
            await asyncio.sleep(self.stall_seconds)
        if self.failures:
            failure = self.failures.pop(0)
            details = ()
            if failure.retry_after is not None:
                status = status_pb2.Status(code=failure.code.value[0], message="busy")
                status.details.add().Pack(error_details_pb2.RetryInfo(
                    retry_delay=Duration(seconds=int(failure.retry_after), nanos=int(failure.retry_after % 1 * 1e9))))
                details = ((STATUS_DETAILS_TRAILER, status.SerializeToString()),)
            await context.abort(failure.code, f"scripted {failure.code.name}", trailing_metadata=details)
        context.set_trailing_metadata(trailers)
        return response

    async def Health(self, request, context):
        return await self._answer("Health", request, context, pb.HealthResponse(status="SERVING"))

    async def CreatePayment(self, request, context):
        replayed = len([a for a in self.attempts if a.method == "CreatePayment"]) > 0
        payment = pb.Payment(id=41, request_id=request.request_id, amount_cents=request.amount_cents)
        return await self._answer("CreatePayment", request, context, pb.PaymentEnvelopeResponse(payment=payment),
                                  (("idempotent-replayed", "true"),) if replayed else ())

    async def GetPayment(self, request, context):
        return await self._answer("GetPayment", request, context, pb.PaymentEnvelopeResponse(payment=pb.Payment(id=request.id)))

    async def ListPayments(self, request, context):
        return await self._answer("ListPayments", request, context,
                                  pb.ListPaymentsResponse(payments=[pb.Payment(id=1), pb.Payment(id=2)]))

    async def CancelPayment(self, request, context):
        payment = pb.Payment(id=request.id, status=pb.PAYMENT_STATUS_CANCELED, cancel_reason=request.reason)
        return await self._answer("CancelPayment", request, context, pb.PaymentEnvelopeResponse(payment=payment))

    async def HandleProviderCallback(self, request, context):
        return await self._answer("HandleProviderCallback", request, context, pb.MessageResponse(message="processed"))

    async def ListPaymentEvents(self, request, context):
        events = [pb.PaymentEvent(id=request.after_event_id + 1, payment_id=request.id)]
        return await self._answer("ListPaymentEvents", request, context, pb.ListPaymentEventsResponse(events=events))

    async def ReplayCallback(self, request, context):
        return await self._answer("ReplayCallback", request, context, pb.PaymentEnvelopeResponse(payment=pb.Payment(id=request.id)))

    async def RefundPayment(self, request, context):
        refund = pb.Refund(id=3, payment_id=request.id, request_id=request.request_id, amount_cents=request.amount_cents)
        return await self._answer("RefundPayment", request, context,
                                  pb.RefundPaymentResponse(payment=pb.Payment(id=request.id), refund=refund))


@pytest.fixture
async def servicer():
    scripted = ScriptedServicer()
    server = grpc.aio.server()
    payments_pb2_grpc.add_PaymentsServiceServicer_to_server(scripted, server)
    scripted.port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield scripted
    await server.stop(None)


@pytest.fixture
async def client(servicer):
    async with PaymentsClient(f"127.0.0.1:{servicer.port}", "psk_test", timeout=10, retry=FAST,
                              rng=random.Random(7)) as made:
        yield made


def create_request() -> pb.CreatePaymentRequest:
    return pb.CreatePaymentRequest(request_id="order-1-attempt-1", caller_service="shop", resource_type="order",
                                   resource_id="1", amount_cents=1999, currency="usd")


async def test_a_create_is_retried_with_the_same_request_and_request_id(servicer, client):
    servicer.failures = [Failure(grpc.StatusCode.UNAVAILABLE), Failure(grpc.StatusCode.ABORTED)]
    created = await client.create_payment(create_request())
    assert (created.payment.id, created.payment.request_id, created.replayed) == (41, "order-1-attempt-1", True)
    assert len(servicer.attempts) == 3
    assert {a.request.SerializeToString() for a in servicer.attempts} == {create_request().SerializeToString()}
    assert len({a.metadata["x-request-id"] for a in servicer.attempts}) == 1
    assert {a.metadata["x-api-key"] for a in servicer.attempts} == {"psk_test"}


async def test_the_callers_request_id_and_deadline_reach_the_server(servicer, client):
    await client.get_payment(5, request_id="trace-me", timeout=3)
    (attempt,) = servicer.attempts
    assert attempt.metadata["x-request-id"] == "trace-me"
    # The grpc-timeout header carries the deadline in whole units and the server's clock
    # starts later than the client's: a few ms over 3 s is the same deadline, a default
    # (none, or the client's own) would be far from it.
    assert 2 < attempt.time_remaining < 3.1


@pytest.mark.parametrize("code", [grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION,
                                  grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED,
                                  grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.INTERNAL])
async def test_other_codes_are_not_retried(servicer, client, code):
    servicer.failures = [Failure(code)]
    with pytest.raises(PaymentsApiError) as failed:
        await client.get_payment(5, request_id="rq-1")
    assert (failed.value.code, failed.value.message, failed.value.attempts) == (code, f"scripted {code.name}", 1)
    assert failed.value.request_id == "rq-1" and "x-request-id rq-1" in str(failed.value)
    assert len(servicer.attempts) == 1


async def test_it_gives_up_after_the_last_attempt(servicer, client):
    servicer.failures = [Failure(grpc.StatusCode.UNAVAILABLE)] * 10
    with pytest.raises(PaymentsApiError) as failed:
        await client.cancel_payment(5, "changed mind")
    assert (failed.value.code, failed.value.attempts) == (grpc.StatusCode.UNAVAILABLE, FAST.max_attempts)
    assert len(servicer.attempts) == FAST.max_attempts


async def test_the_servers_retry_hint_is_honoured(servicer, client):
    servicer.failures = [Failure(grpc.StatusCode.UNAVAILABLE, retry_after=0.4)]
    result = await client.refund_payment(9, "refund-1", 500)
    assert (result.refund.request_id, result.refund.amount_cents, result.replayed) == ("refund-1", 500, False)
    first, second = servicer.attempts
    assert second.at - first.at >= 0.4  # the backoff alone would have been at most 0.01 s


async def test_no_retry_waits_past_the_deadline(servicer, client):
    servicer.failures = [Failure(grpc.StatusCode.ABORTED, retry_after=30)]
    with pytest.raises(PaymentsApiError) as failed:
        await client.create_payment(create_request(), timeout=2)
    assert (failed.value.code, failed.value.attempts) == (grpc.StatusCode.ABORTED, 1)


async def test_a_deadline_exceeded_is_not_retried(servicer, client):
    servicer.stall_seconds = 1
    with pytest.raises(PaymentsApiError) as failed:
        await client.list_payments(timeout=0.2)
    assert (failed.value.code, failed.value.attempts) == (grpc.StatusCode.DEADLINE_EXCEEDED, 1)
    assert len(servicer.attempts) == 1


async def test_replay_callback_is_never_retried(servicer, client):
    servicer.failures = [Failure(grpc.StatusCode.UNAVAILABLE)]
    with pytest.raises(PaymentsApiError) as failed:
        await client.replay_callback(5)
    assert failed.value.attempts == 1 and len(servicer.attempts) == 1


async def test_every_rpc_has_a_typed_method(servicer, client):
    assert await client.health() == "SERVING"
    assert (await client.get_payment(5)).id == 5
    assert [p.id for p in await client.list_payments(pb.ListPaymentsRequest(limit=2))] == [1, 2]
    canceled = await client.cancel_payment(6, "changed mind")
    assert (canceled.status, canceled.cancel_reason) == (pb.PAYMENT_STATUS_CANCELED, "changed mind")
    callback = pb.HandleProviderCallbackRequest(request_id="cb-1", provider="sandbox", callback_hash="h", payload="{}")
    assert (await client.handle_provider_callback(callback)).message == "processed"
    assert [e.id for e in await client.list_payment_events(7, after_event_id=3)] == [4]
    assert (await client.replay_callback(8)).id == 8
    created = await client.create_payment(create_request())
    assert created.payment.amount_cents == 1999 and not created.replayed
    assert [a.method for a in servicer.attempts] == [
        "Health", "GetPayment", "ListPayments", "CancelPayment", "HandleProviderCallback", "ListPaymentEvents",
        "ReplayCallback", "CreatePayment"]


def test_backoff_is_full_jitter_below_a_growing_capped_bound():
    policy = RetryPolicy(initial_backoff_seconds=0.2, max_backoff_seconds=5.0, multiplier=2.0)
    rng = random.Random(1)
    for retry, bound in enumerate([0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]):
        waits = [policy.backoff(retry, rng) for _ in range(200)]
        assert all(0 <= w <= bound for w in waits) and max(waits) > bound * 0.8, retry


def test_retry_hints_are_read_only_from_a_retry_info():
    status = status_pb2.Status(code=14)
    status.details.add().Pack(error_details_pb2.ErrorInfo(reason="PROVIDER_DOWN"))
    status.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=Duration(seconds=2, nanos=500_000_000)))
    assert retry_delay_hint(((STATUS_DETAILS_TRAILER, status.SerializeToString()),)) == 2.5
    assert retry_delay_hint((("retry-after", "3"),)) is None
    assert retry_delay_hint(((STATUS_DETAILS_TRAILER, b"\xff\xff not a status"),)) is None
    assert retry_delay_hint(None) is None
