"""Hostile and broken gRPC requests: malformed protobuf, strings the service must
not take (NUL; invalid UTF-8 arrives as malformed protobuf), deep JSON in a webhook
payload, ids at the ends of their range; and the rich error details (google.rpc
ErrorInfo, BadRequest, RetryInfo) every error carries."""

from __future__ import annotations

import asyncio
import json
import time

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from payments_svc.gen import payments_pb2 as pb
from payments_svc.gen import payments_pb2_grpc
from payments_svc.providers.sandbox.provider import sign

from ..support import wait_until
from .conftest import SANDBOX_SECRET, metric_value, new_id

SERVICE = "/payments.PaymentsService/"
CREATE_STRINGS = ["request_id", "caller_service", "resource_type", "resource_id", "customer_ref", "currency",
                  "recurring_interval", "status_callback_url", "success_url", "cancel_url"]


def create_request(**overrides) -> pb.CreatePaymentRequest:
    fields = dict(request_id=new_id("req"), caller_service="shop", resource_type="order", resource_id=new_id("o"),
                  amount_cents=1500, currency="usd", payment_method=1, payment_type=1,
                  status_callback_url="https://shop.example/cb", metadata={"cart": "42"})
    fields.update(overrides)
    return pb.CreatePaymentRequest(**fields)


def rich_status(error: grpc.aio.AioRpcError) -> status_pb2.Status:
    """The google.rpc.Status of the grpc-status-details-bin trailer (what grpcio-status clients read)."""
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            assert (status.code, status.message) == (error.code().value[0], error.details())
            return status
    raise AssertionError(f"no rich status details: {error!r}")


def unpacked(status: status_pb2.Status) -> dict[str, object]:
    out = {}
    for detail in status.details:
        for kind in (error_details_pb2.ErrorInfo, error_details_pb2.BadRequest, error_details_pb2.RetryInfo):
            if detail.Is(kind.DESCRIPTOR):
                message = kind()
                detail.Unpack(message)
                out[kind.__name__] = message
    return out


@pytest.fixture
async def channel(deployment):
    async with grpc.aio.insecure_channel(deployment.server.grpc_target) as ch:
        yield ch


def metadata(deployment) -> tuple:
    return (("x-request-id", new_id("rid")), ("x-api-key", deployment.api_key))


async def expect_error(call, code: grpc.StatusCode, details: str | None = None) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == code, (info.value.code(), info.value.details())
    if details is not None:
        assert info.value.details() == details
    return info.value


# ---- malformed protobuf ----------------------------------------------------------------------


@pytest.mark.parametrize("raw", [
    pytest.param(b"\xff\xff\xff\xff", id="garbage"),
    pytest.param(b"\x0a\x05abc", id="truncated-string"),
    pytest.param(b"\x0a\x02\xff\xfe", id="invalid-utf8-in-request_id"),
    pytest.param(b"\x82\x01\x04\x0a\x02\xc3\x28", id="invalid-utf8-in-metadata-key"),
])
async def test_malformed_protobuf_is_invalid_argument_and_counted(channel, deployment, raw):
    before = await metric_value(deployment, "payments_grpc_requests_total", method="CreatePayment", code="INVALID_ARGUMENT")
    create = channel.unary_unary(SERVICE + "CreatePayment")  # no serializers: the bytes go as they are
    error = await expect_error(create(raw, metadata=metadata(deployment), timeout=30), grpc.StatusCode.INVALID_ARGUMENT,
                               "malformed request: not a valid payments.CreatePaymentRequest message")
    assert unpacked(rich_status(error))["ErrorInfo"].reason == "INVALID_ARGUMENT"
    after = await metric_value(deployment, "payments_grpc_requests_total", method="CreatePayment", code="INVALID_ARGUMENT")
    assert after == before + 1


# ---- strings ---------------------------------------------------------------------------------


async def test_nul_in_any_string_field_is_invalid_argument_naming_it(channel, deployment):
    stub = payments_pb2_grpc.PaymentsServiceStub(channel)
    for field in CREATE_STRINGS:
        request = create_request(**{"payment_type": 2, "recurring_interval": "month", "recurring_interval_count": 1,
                                    field: "x\x00y"})
        error = await expect_error(stub.CreatePayment(request, metadata=metadata(deployment), timeout=30),
                                   grpc.StatusCode.INVALID_ARGUMENT, f"{field} must not contain NUL characters")
        violations = unpacked(rich_status(error))["BadRequest"].field_violations
        assert [(v.field, v.description) for v in violations] == [(field, error.details())]
    for bad in ({"k\x00": "v"}, {"k": "v\x00"}):
        await expect_error(stub.CreatePayment(create_request(metadata=bad), metadata=metadata(deployment), timeout=30),
                           grpc.StatusCode.INVALID_ARGUMENT, "metadata must not contain NUL characters")
    await expect_error(stub.CancelPayment(pb.CancelPaymentRequest(id=1, reason="\x00"), metadata=metadata(deployment),
                                          timeout=30), grpc.StatusCode.INVALID_ARGUMENT, "reason must not contain NUL characters")
    await expect_error(stub.ListPayments(pb.ListPaymentsRequest(caller_service="shop\x00"), metadata=metadata(deployment),
                                         timeout=30), grpc.StatusCode.INVALID_ARGUMENT,
                       "caller_service must not contain NUL characters")


async def test_currency_and_interval_are_checked_before_case_folding(channel, deployment):
    stub = payments_pb2_grpc.PaymentsServiceStub(channel)
    for currency in ("ßd", "uſd"):
        await expect_error(stub.CreatePayment(create_request(currency=currency), metadata=metadata(deployment), timeout=30),
                           grpc.StatusCode.INVALID_ARGUMENT, "currency must be 3 letters")
    recurring = create_request(payment_type=2, recurring_interval="wee\u212a", recurring_interval_count=1)
    await expect_error(stub.CreatePayment(recurring, metadata=metadata(deployment), timeout=30),
                       grpc.StatusCode.INVALID_ARGUMENT, "recurring_interval must be day, week, month, or year")


# ---- provider callbacks ------------------------------------------------------------------------


async def test_deep_or_non_ascii_webhook_input_is_invalid_argument(channel, deployment):
    stub = payments_pb2_grpc.PaymentsServiceStub(channel)
    payment = (await stub.CreatePayment(create_request(), metadata=metadata(deployment), timeout=30)).payment
    deep = "[" * 1000 + "]" * 1000  # signed correctly: it would reach the provider's JSON parser
    callback = pb.HandleProviderCallbackRequest(request_id=new_id("cb"), provider="sandbox",
                                                callback_hash=payment.provider_callback_hash,
                                                signature=sign(deep.encode(), SANDBOX_SECRET), payload=deep)
    await expect_error(stub.HandleProviderCallback(callback, metadata=metadata(deployment), timeout=30),
                       grpc.StatusCode.INVALID_ARGUMENT, "payload is nested more than 64 levels deep")
    event = json.dumps({"id": new_id("evt"), "type": "payment.succeeded", "created": int(time.time()),
                        "data": {"object": {"id": payment.provider_payment_id, "amount": 1500}}})
    callback = pb.HandleProviderCallbackRequest(request_id=new_id("cb"), provider="sandbox",
                                                callback_hash=payment.provider_callback_hash,
                                                signature=f"t={int(time.time())},v1=é", payload=event)
    await expect_error(stub.HandleProviderCallback(callback, metadata=metadata(deployment), timeout=30),
                       grpc.StatusCode.INVALID_ARGUMENT, "callback rejected")


# ---- ids --------------------------------------------------------------------------------------


async def test_ids_at_the_ends_of_their_range_are_not_found(channel, deployment):
    stub = payments_pb2_grpc.PaymentsServiceStub(channel)
    for payment_id in (2**63 - 1, 2**63, 2**64 - 1):
        for call in (stub.GetPayment(pb.GetPaymentRequest(id=payment_id), metadata=metadata(deployment), timeout=30),
                     stub.CancelPayment(pb.CancelPaymentRequest(id=payment_id), metadata=metadata(deployment), timeout=30),
                     stub.ListPaymentEvents(pb.ListPaymentEventsRequest(id=payment_id, after_event_id=2**63 - 1),
                                            metadata=metadata(deployment), timeout=30),
                     stub.ReplayCallback(pb.ReplayCallbackRequest(id=payment_id), metadata=metadata(deployment), timeout=30),
                     stub.RefundPayment(pb.RefundPaymentRequest(id=payment_id, request_id="r", amount_cents=2**63 - 1),
                                        metadata=metadata(deployment), timeout=30)):
            error = await expect_error(call, grpc.StatusCode.NOT_FOUND, "payment not found")
            assert unpacked(rich_status(error))["ErrorInfo"].reason == "NOT_FOUND"


# ---- rich details ------------------------------------------------------------------------------


async def test_errors_carry_error_info_and_field_violations(channel, deployment):
    stub = payments_pb2_grpc.PaymentsServiceStub(channel)
    error = await expect_error(stub.CreatePayment(create_request(amount_cents=0), metadata=metadata(deployment), timeout=30),
                               grpc.StatusCode.INVALID_ARGUMENT, "amount_cents must be > 0")
    details = unpacked(rich_status(error))
    info = details["ErrorInfo"]
    assert (info.reason, info.domain, dict(info.metadata)) == ("INVALID_ARGUMENT", "payments-svc", {"field": "amount_cents"})
    assert [(v.field, v.description) for v in details["BadRequest"].field_violations] == [
        ("amount_cents", "amount_cents must be > 0")]
    assert "RetryInfo" not in details

    error = await expect_error(stub.Health(pb.HealthRequest(), metadata=(("x-request-id", "r"),), timeout=30),
                               grpc.StatusCode.UNAUTHENTICATED, "missing x-api-key metadata")
    assert set(unpacked(rich_status(error))) == {"ErrorInfo"}
    error = await expect_error(stub.Health(pb.HealthRequest(), timeout=30), grpc.StatusCode.INVALID_ARGUMENT,
                               "x-request-id header is required")
    assert unpacked(rich_status(error))["BadRequest"].field_violations[0].field == "x-request-id"


async def test_in_progress_and_unavailable_carry_retry_info(slow_deployment):
    async with grpc.aio.insecure_channel(slow_deployment.server.grpc_target) as channel:
        stub = payments_pb2_grpc.PaymentsServiceStub(channel)
        request = create_request()
        first = asyncio.ensure_future(stub.CreatePayment(request, metadata=metadata(slow_deployment), timeout=60))

        async def reserved() -> bool:
            listed = await stub.ListPayments(pb.ListPaymentsRequest(request_id=request.request_id),
                                             metadata=metadata(slow_deployment), timeout=30)
            return bool(listed.payments)

        await wait_until(reserved, timeout=30)
        error = await expect_error(stub.CreatePayment(request, metadata=metadata(slow_deployment), timeout=30),
                                   grpc.StatusCode.ABORTED)
        details = unpacked(rich_status(error))
        assert (details["ErrorInfo"].reason, details["RetryInfo"].retry_delay.seconds) == ("IDEMPOTENCY_IN_PROGRESS", 1)
        error = await expect_error(first, grpc.StatusCode.UNAVAILABLE,
                                   "payment provider timed out; retry with the same request_id")
        details = unpacked(rich_status(error))
        assert (details["ErrorInfo"].reason, details["RetryInfo"].retry_delay.seconds) == ("UNAVAILABLE", 5)
