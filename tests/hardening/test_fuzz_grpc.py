"""Property-based fuzzing of payments.PaymentsService on both backends: generated
messages of every RPC (plausible values mixed with any text and any number the
field's type holds), and garbled bytes (random, or a valid message with bytes
flipped, cut or appended). Never INTERNAL or UNKNOWN; every error carries its rich
details (google.rpc.ErrorInfo).

Bounded and derandomized: the same examples on every run, so CI is repeatable."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf.descriptor import FieldDescriptor
from google.rpc import error_details_pb2, status_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from payments_svc.gen import payments_pb2 as pb

EXAMPLES = 200
FUZZ_SETTINGS = settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
                         suppress_health_check=list(HealthCheck))
SERVICE = pb.DESCRIPTOR.services_by_name["PaymentsService"]
METHODS = list(SERVICE.methods)
NEVER = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
F = FieldDescriptor
BOUNDS = {F.TYPE_INT32: (-(2**31), 2**31 - 1), F.TYPE_INT64: (-(2**63), 2**63 - 1), F.TYPE_UINT64: (0, 2**64 - 1),
          F.TYPE_ENUM: (-(2**31), 2**31 - 1)}
# Values that pass validation, so generated requests also reach the service, the provider and the database.
PLAUSIBLE = {
    "caller_service": ["shop", "billing"], "resource_type": ["order"], "currency": ["usd", "EUR", "jpy", "XLM"],
    "status_callback_url": ["https://shop.example/cb"], "success_url": ["", "https://shop.example/ok"],
    "cancel_url": ["", "https://shop.example/no"], "recurring_interval": ["month", "week", "day", "year"],
    "provider": ["sandbox", "stripe", "1", "100"], "reason": ["", "duplicate", "customer asked"],
    "payload": ['{"id": "evt_1", "type": "payment.succeeded", "data": {"object": {}}}', "{}", "[]"],
    "signature": ["t=1,v1=00"],
}
SMALL_NUMBERS = {"id": (0, 20), "amount_cents": (0, 10_000), "payment_method": (0, 3), "payment_type": (0, 3),
                 "limit": (-1, 501), "offset": (-1, 5), "recurring_interval_count": (-1, 13), "status": (0, 40),
                 "after_event_id": (0, 50)}


def field_values(field: FieldDescriptor) -> st.SearchStrategy:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        return st.dictionaries(st.text(max_size=45), st.text(max_size=20), max_size=4)
    if field.type == F.TYPE_STRING:
        return st.one_of(st.sampled_from(PLAUSIBLE.get(field.name, ["x"])), st.text(max_size=40),
                         st.uuids().map(str))
    if field.type == F.TYPE_BOOL:
        return st.booleans()
    low, high = BOUNDS[field.type]
    small = SMALL_NUMBERS.get(field.name, (0, 3))
    return st.one_of(st.integers(*small), st.integers(low, high), st.sampled_from([low, high]))


# A valid request of each kind; generated ones change about one field in ten of it,
# so that many get past validation to the service, the provider and the database.
VALID = {
    "CreatePaymentRequest": dict(caller_service="shop", resource_type="order", resource_id="o-1", amount_cents=1500,
                                 currency="usd", payment_method=1, payment_type=1,
                                 status_callback_url="https://shop.example/cb"),
    "RefundPaymentRequest": dict(id=1, amount_cents=100),
    "HandleProviderCallbackRequest": dict(provider="sandbox", signature="t=1,v1=00"),
}


def messages(method) -> st.SearchStrategy:
    descriptor = method.input_type
    message_class = getattr(pb, descriptor.name)
    valid = VALID.get(descriptor.name, {})

    def value(field: FieldDescriptor) -> st.SearchStrategy:
        generated = field_values(field)
        if field.name == "request_id":
            return st.one_of(st.uuids().map(str), generated)
        if field.name in valid:
            return st.integers(0, 9).flatmap(lambda n: generated if n == 0 else st.just(valid[field.name]))
        return st.one_of(st.none(), generated)

    return st.fixed_dictionaries({f.name: value(f) for f in descriptor.fields}).map(
        lambda values: message_class(**{k: v for k, v in values.items() if v is not None}))


def assert_well_answered(error: grpc.RpcError) -> None:
    assert error.code() not in NEVER, (error.code(), error.details())
    trailers = dict(error.trailing_metadata() or ())
    if error.code() in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED):
        return  # grpc's own answers, before any handler
    status = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
    assert (status.code, status.message) == (error.code().value[0], error.details())
    assert any(d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR) for d in status.details), status


@pytest.fixture
def channel(deployment):
    with grpc.insecure_channel(deployment.server.grpc_target) as ch:
        yield ch


def _call(channel, deployment, method, request: bytes, request_id: str) -> None:
    metadata = (("x-request-id", request_id), ("x-api-key", deployment.api_key))
    try:
        if method.server_streaming:  # a watch: its first message or its error, then leave
            for _ in channel.unary_stream(f"/{SERVICE.full_name}/{method.name}")(request, metadata=metadata, timeout=10):
                break
        else:
            channel.unary_unary(f"/{SERVICE.full_name}/{method.name}")(request, metadata=metadata, timeout=30)  # bytes in, bytes out
    except grpc.RpcError as error:
        assert_well_answered(error)


def test_generated_messages_of_every_rpc(channel, deployment, seeded):
    @FUZZ_SETTINGS
    @given(data=st.data())
    def check(data):
        method = data.draw(st.sampled_from(METHODS))
        request = data.draw(messages(method))
        _call(channel, deployment, method, request.SerializeToString(), f"fuzz-{method.name}")

    check()


def garbled(valid: bytes) -> st.SearchStrategy[bytes]:
    flip = st.tuples(st.integers(0, max(len(valid) - 1, 0)), st.integers(0, 255)).map(
        lambda at: valid[:at[0]] + bytes([at[1]]) + valid[at[0] + 1:])
    cut = st.integers(0, len(valid)).map(lambda n: valid[:n])
    appended = st.binary(min_size=1, max_size=20).map(lambda tail: valid + tail)
    return st.one_of(flip, cut, appended, st.binary(max_size=64))


def test_garbled_bytes_to_every_rpc(channel, deployment, seeded):
    @FUZZ_SETTINGS
    @given(data=st.data())
    def check(data):
        method = data.draw(st.sampled_from(METHODS))
        valid = data.draw(messages(method)).SerializeToString()
        _call(channel, deployment, method, data.draw(garbled(valid)), f"garbled-{method.name}")

    check()
