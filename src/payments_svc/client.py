"""A typed asyncio client of `payments.PaymentsService` (grpc.aio), for caller services
and for this project's own end-to-end suite.

    async with PaymentsClient("payments:9090", api_key="psk_...") as client:
        created = await client.create_payment(pb.CreatePaymentRequest(request_id="order-1001-1", ...))
        payment = await client.get_payment(created.payment.id)

Every call carries `x-request-id` (new per call unless given, the same on each retry)
and `x-api-key`, and has a deadline (`timeout` seconds for the whole call, retries
included). Calls are retried on UNAVAILABLE and ABORTED with the same request message,
so a retried create or refund carries the same request_id and the server replays it
instead of acting twice. Between attempts the client waits an exponential backoff with
full jitter, and at least what the server asks for in a `google.rpc.RetryInfo` status
detail; it never waits past the deadline. ReplayCallback is not retried: a repeat would
queue a second callback. A failed call raises PaymentsApiError.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2

from .gen import payments_pb2 as pb
from .gen import payments_pb2_grpc

RETRYABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED})
REPLAYED_TRAILER = "idempotent-replayed"
STATUS_DETAILS_TRAILER = "grpc-status-details-bin"


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    initial_backoff_seconds: float = 0.2
    max_backoff_seconds: float = 5.0
    multiplier: float = 2.0

    def backoff(self, retry: int, rng: random.Random) -> float:
        """The wait before retry number `retry` (0 for the first): "full jitter", uniform
        up to the exponential bound, so clients that failed together spread out."""
        bound = min(self.max_backoff_seconds, self.initial_backoff_seconds * self.multiplier**retry)
        return rng.uniform(0, bound)


NO_RETRIES = RetryPolicy(max_attempts=1)


class PaymentsApiError(Exception):
    """A call that failed for good: its gRPC status, the server's message, the
    x-request-id it was sent with (quote it to the service's operators) and how many
    attempts were made."""

    def __init__(self, code: grpc.StatusCode, message: str, *, request_id: str, attempts: int):
        super().__init__(f"{code.name}: {message} (x-request-id {request_id}, {attempts} attempt(s))")
        self.code = code
        self.message = message
        self.request_id = request_id
        self.attempts = attempts


@dataclass(frozen=True)
class CreatedPayment:
    payment: pb.Payment
    replayed: bool  # an earlier call with the same request_id made it


@dataclass(frozen=True)
class RefundResult:
    payment: pb.Payment
    refund: pb.Refund
    replayed: bool


def retry_delay_hint(trailers: Sequence[tuple[str, Any]] | None) -> float | None:
    """The delay a google.rpc.RetryInfo in the status details asks for, in seconds."""
    for key, value in trailers or ():
        if key != STATUS_DETAILS_TRAILER:
            continue
        try:
            status = status_pb2.Status.FromString(value)
        except (DecodeError, TypeError):
            return None
        for detail in status.details:
            info = error_details_pb2.RetryInfo()
            if detail.Unpack(info):
                return max(0.0, info.retry_delay.seconds + info.retry_delay.nanos / 1e9)
    return None


class PaymentsClient:
    def __init__(
        self,
        target: str,
        api_key: str,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        timeout: float = 30.0,
        retry: RetryPolicy = RetryPolicy(),
        rng: random.Random | None = None,
    ):
        """`credentials` (e.g. grpc.ssl_channel_credentials()) make a TLS channel; without
        them the channel is plaintext (a service mesh or a local server)."""
        self._channel = (grpc.aio.secure_channel(target, credentials) if credentials is not None
                         else grpc.aio.insecure_channel(target))
        self._stub = payments_pb2_grpc.PaymentsServiceStub(self._channel)
        self._api_key = api_key
        self._timeout = timeout
        self._retry = retry
        self._rng = rng or random.Random()

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> PaymentsClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # ---- the RPCs ---------------------------------------------------------------

    async def health(self, *, timeout: float | None = None) -> str:
        answer, _ = await self._call("Health", pb.HealthRequest(), timeout)
        return answer.status

    async def create_payment(self, request: pb.CreatePaymentRequest, *, timeout: float | None = None,
                             request_id: str | None = None) -> CreatedPayment:
        answer, trailers = await self._call("CreatePayment", request, timeout, request_id)
        return CreatedPayment(answer.payment, _replayed(trailers))

    async def get_payment(self, payment_id: int, *, timeout: float | None = None,
                          request_id: str | None = None) -> pb.Payment:
        answer, _ = await self._call("GetPayment", pb.GetPaymentRequest(id=payment_id), timeout, request_id)
        return answer.payment

    async def list_payments(self, request: pb.ListPaymentsRequest | None = None, *, timeout: float | None = None,
                            request_id: str | None = None) -> list[pb.Payment]:
        answer, _ = await self._call("ListPayments", request or pb.ListPaymentsRequest(), timeout, request_id)
        return list(answer.payments)

    async def cancel_payment(self, payment_id: int, reason: str = "", *, timeout: float | None = None,
                             request_id: str | None = None) -> pb.Payment:
        # Canceling a canceled payment returns it: a retry after a lost answer is harmless.
        answer, _ = await self._call("CancelPayment", pb.CancelPaymentRequest(id=payment_id, reason=reason),
                                     timeout, request_id)
        return answer.payment

    async def handle_provider_callback(self, request: pb.HandleProviderCallbackRequest, *, timeout: float | None = None,
                                       request_id: str | None = None) -> pb.MessageResponse:
        answer, _ = await self._call("HandleProviderCallback", request, timeout, request_id)
        return answer

    async def list_payment_events(self, payment_id: int, *, limit: int = 0, after_event_id: int = 0,
                                  timeout: float | None = None, request_id: str | None = None) -> list[pb.PaymentEvent]:
        request = pb.ListPaymentEventsRequest(id=payment_id, limit=limit, after_event_id=after_event_id)
        answer, _ = await self._call("ListPaymentEvents", request, timeout, request_id)
        return list(answer.events)

    async def refund_payment(self, payment_id: int, refund_request_id: str, amount_cents: int = 0, reason: str = "", *,
                             timeout: float | None = None, request_id: str | None = None) -> RefundResult:
        """`refund_request_id` is the refund's idempotency key (0 cents: all that is left)."""
        request = pb.RefundPaymentRequest(id=payment_id, request_id=refund_request_id, amount_cents=amount_cents,
                                          reason=reason)
        answer, trailers = await self._call("RefundPayment", request, timeout, request_id)
        return RefundResult(answer.payment, answer.refund, _replayed(trailers))

    async def replay_callback(self, payment_id: int, *, timeout: float | None = None,
                              request_id: str | None = None) -> pb.Payment:
        answer, _ = await self._call("ReplayCallback", pb.ReplayCallbackRequest(id=payment_id), timeout, request_id,
                                     retry=NO_RETRIES)
        return answer.payment

    # ---- calls ------------------------------------------------------------------

    async def _call(self, method: str, request: Any, timeout: float | None, request_id: str | None = None, *,
                    retry: RetryPolicy | None = None) -> tuple[Any, Sequence[tuple[str, Any]]]:
        policy = retry or self._retry
        request_id = request_id or str(uuid.uuid4())
        metadata = (("x-request-id", request_id), ("x-api-key", self._api_key))
        deadline = time.monotonic() + (self._timeout if timeout is None else timeout)
        attempt = 0
        while True:
            attempt += 1
            call = getattr(self._stub, method)(request, metadata=metadata, timeout=max(deadline - time.monotonic(), 0))
            try:
                answer = await call
                return answer, tuple(await call.trailing_metadata() or ())
            except grpc.aio.AioRpcError as exc:
                error = PaymentsApiError(exc.code(), exc.details() or "", request_id=request_id, attempts=attempt)
                if exc.code() not in RETRYABLE_CODES or attempt >= policy.max_attempts:
                    raise error from None
                delay = policy.backoff(attempt - 1, self._rng)
                asked = retry_delay_hint(exc.trailing_metadata())
                if asked is not None:
                    delay = max(delay, asked)
                if time.monotonic() + delay >= deadline:
                    raise error from None  # no time left for another attempt
            await asyncio.sleep(delay)


def _replayed(trailers: Sequence[tuple[str, Any]]) -> bool:
    return any(key == REPLAYED_TRAILER and value == "true" for key, value in trailers)
