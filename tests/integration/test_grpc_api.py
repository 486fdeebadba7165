"""payments.PaymentsService over real gRPC against a real `payments-svc serve`
process, on SQLite and MariaDB: headers and auth, create/replay/idempotency,
get/list/cancel/events, provider callbacks, the standard health service,
reflection, graceful shutdown and concurrent duplicate creates."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from payments_svc.gen import payments_pb2 as pb
from payments_svc.gen import payments_pb2_grpc
from payments_svc.providers.sandbox.provider import sign

from ..conftest import ALL_BACKENDS
from ..support import ServerProcess, base_env, cli, create_key, new_database

WEBHOOK_SECRET = "whsec_grpc_api_tests"
PENDING, PAID, CANCELED = 2, 10, 30
SANDBOX = 100
SERVICE = "payments.PaymentsService"


def md_value(metadata, key: str) -> str | None:
    for name, value in metadata or ():
        if name == key:
            return value
    return None


def rid() -> str:
    return "req-" + uuid.uuid4().hex[:16]


def core(payment: pb.Payment) -> dict:
    """The Payment's fields 1..28 (the reference's and the first additions): what every RPC returns alike."""
    return {f.name: getattr(payment, f.name) for f in pb.Payment.DESCRIPTOR.fields if f.number <= 28}


def create_request(request_id: str | None = None, *, caller: str = "shop", **overrides) -> pb.CreatePaymentRequest:
    fields = dict(
        request_id=request_id if request_id is not None else rid(), caller_service=caller, resource_type="order",
        resource_id="o-1", amount_cents=1500, currency="usd", payment_method=1, payment_type=1,
        status_callback_url="https://shop.example/cb", metadata={"cart": "42"},
    )
    fields.update(overrides)
    return pb.CreatePaymentRequest(**fields)


@dataclass
class Deployment:
    backend: str
    server: ServerProcess
    shop_key: str
    other_key: str
    gateway_key: str


def _start(database, tmp_path, **extra_env) -> Deployment:
    """Migrates, then creates the keys while the server starts (each CLI call is a ~1 s process)."""
    env = base_env(database.url, PAYMENTS_SANDBOX_WEBHOOK_SECRET=WEBHOOK_SECRET, TEST_LOG_DIR=str(tmp_path), **extra_env)
    cli(env, "db", "migrate")
    server = ServerProcess(env)
    with ThreadPoolExecutor(4) as pool:
        started = pool.submit(server.start)
        keys = [pool.submit(create_key, env, *args) for args in (("shop",), ("other",), ("gateway", "*"))]
        try:
            started.result()
            return Deployment(database.backend, server, *(k.result() for k in keys))
        except BaseException:
            if server.proc is not None and server.proc.poll() is None:
                server.proc.kill()
            raise


def _stop(server: ServerProcess) -> None:
    if server.proc is not None and server.proc.poll() is None:
        code = server.stop()
        assert code == 0, f"server exited with {code} on SIGTERM:\n{server.logs()}"


@pytest.fixture(scope="module", params=ALL_BACKENDS)
def deployment(request, tmp_path_factory):
    """One server per backend for the whole module (fast); stopped with SIGTERM, exit 0."""
    tmp_path = tmp_path_factory.mktemp(f"grpc-{request.param}")
    database = new_database(request.param, tmp_path)
    try:
        deployment = _start(database, tmp_path)
        yield deployment
        _stop(deployment.server)
    finally:
        database.drop()


class Api:
    """A PaymentsService client that sends the mandatory metadata unless told not to."""

    def __init__(self, channel: grpc.aio.Channel, api_key: str):
        self.stub = payments_pb2_grpc.PaymentsServiceStub(channel)
        self.api_key = api_key

    def metadata(self, key: str | None = "default", request_id: str | None = "default"):
        md = []
        if request_id is not None:
            md.append(("x-request-id", rid() if request_id == "default" else request_id))
        if key is not None:
            md.append(("x-api-key", self.api_key if key == "default" else key))
        return tuple(md)

    def call(self, method: str, request, *, key: str | None = "default", request_id: str | None = "default"):
        return getattr(self.stub, method)(request, metadata=self.metadata(key, request_id), timeout=30)

    async def __call__(self, method: str, request, **kwargs):
        return await self.call(method, request, **kwargs)

    async def create(self, request_id: str | None = None, **overrides) -> pb.Payment:
        return (await self("CreatePayment", create_request(request_id, **overrides))).payment

    async def get(self, payment_id: int) -> pb.Payment:
        return (await self("GetPayment", pb.GetPaymentRequest(id=payment_id))).payment


async def expect_error(call, code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert (info.value.code(), info.value.details()) == (code, details)
    return info.value


@pytest.fixture
async def channel(deployment):
    async with grpc.aio.insecure_channel(deployment.server.grpc_target) as ch:
        yield ch


@pytest.fixture
def shop(channel, deployment):
    return Api(channel, deployment.shop_key)


@pytest.fixture
def other(channel, deployment):
    return Api(channel, deployment.other_key)


@pytest.fixture
def gateway(channel, deployment):
    return Api(channel, deployment.gateway_key)


def signed_callback(payment: pb.Payment, event_type: str = "payment.succeeded", *, secret: str = WEBHOOK_SECRET,
                    callback_hash: str | None = None) -> pb.HandleProviderCallbackRequest:
    body = json.dumps({"id": "evt_" + uuid.uuid4().hex, "type": event_type, "created": int(time.time()),
                       "data": {"object": {"id": payment.provider_payment_id, "amount": payment.amount_cents}}})
    return pb.HandleProviderCallbackRequest(
        request_id=rid(), provider="sandbox", callback_hash=callback_hash or payment.provider_callback_hash,
        signature=sign(body.encode(), secret), payload=body,
    )


# ---- headers, auth, Health RPC ---------------------------------------------------


async def test_request_id_is_required_before_auth_and_echoed(shop):
    for key in (None, "default", "psk_not-a-key"):
        await expect_error(shop.call("Health", pb.HealthRequest(), key=key, request_id=None),
                           grpc.StatusCode.INVALID_ARGUMENT, "x-request-id header is required")
    await expect_error(shop.call("GetPayment", pb.GetPaymentRequest(id=1), key=None, request_id="   "),
                       grpc.StatusCode.INVALID_ARGUMENT, "x-request-id header is required")

    call = shop.call("Health", pb.HealthRequest(), request_id="  trace-123  ")
    assert (await call).status == "ok"
    assert md_value(await call.initial_metadata(), "x-request-id") == "trace-123"
    assert await call.code() == grpc.StatusCode.OK


async def test_missing_and_bad_keys_are_unauthenticated_with_request_id_echoed(shop):
    error = await expect_error(shop.call("Health", pb.HealthRequest(), key=None, request_id="r-missing"),
                               grpc.StatusCode.UNAUTHENTICATED, "missing x-api-key metadata")
    assert md_value(error.initial_metadata(), "x-request-id") == "r-missing"
    await expect_error(shop.call("Health", pb.HealthRequest(), key="  "),
                       grpc.StatusCode.UNAUTHENTICATED, "missing x-api-key metadata")
    error = await expect_error(shop.call("CreatePayment", create_request(), key="psk_wrong", request_id="r-bad"),
                               grpc.StatusCode.UNAUTHENTICATED, "invalid or expired api key")
    assert md_value(error.initial_metadata(), "x-request-id") == "r-bad"


async def test_a_key_sharing_a_real_keys_prefix_is_refused(shop, deployment):
    # `keys list` shows the first 12 characters of every key: a key that matches them but not the
    # whole key must authenticate nobody.
    real = deployment.shop_key
    for near_miss in (real[:12] + "x" * (len(real) - 12), real[:-1] + ("A" if real[-1] != "A" else "B"), real[:12]):
        await expect_error(shop.call("Health", pb.HealthRequest(), key=near_miss),
                           grpc.StatusCode.UNAUTHENTICATED, "invalid or expired api key")
    assert (await shop.call("Health", pb.HealthRequest())).status == "ok"


# ---- CreatePayment ---------------------------------------------------------------


async def test_create_defaults_and_replay(shop):
    request = create_request(metadata={"cart": "42", "lang": "en"}, customer_ref="cust-9")
    call = shop.call("CreatePayment", request)
    payment = (await call).payment
    assert md_value(await call.trailing_metadata(), "idempotent-replayed") is None
    assert payment.id > 0
    assert payment.status == PENDING == pb.PAYMENT_STATUS_PENDING
    assert payment.provider == SANDBOX == pb.PROVIDER_TYPE_SANDBOX
    assert (payment.request_id, payment.caller_service, payment.currency) == (request.request_id, "shop", "USD")
    assert (payment.amount_cents, payment.refundable_cents, payment.refunded_cents) == (1500, 1500, 0)
    assert dict(payment.metadata) == {"cart": "42", "lang": "en"} and payment.customer_ref == "cust-9"
    assert payment.provider_payment_id.startswith("sbx_")
    assert payment.checkout_url.endswith("/sandbox/checkout/" + payment.provider_callback_hash)
    assert payment.provider_callback_url.endswith("/sandbox/" + payment.provider_callback_hash)
    assert len(payment.provider_callback_hash) == 36
    assert payment.created_at.endswith("Z") and payment.updated_at.endswith("Z")

    replay_call = shop.call("CreatePayment", request)
    replay = (await replay_call).payment
    assert md_value(await replay_call.trailing_metadata(), "idempotent-replayed") == "true"
    assert replay == payment
    assert core(await shop.get(payment.id)) == core(payment)


async def test_same_key_with_different_parameters_is_failed_precondition(shop):
    payment = await shop.create(request_id := rid())
    await expect_error(shop.call("CreatePayment", create_request(request_id, amount_cents=1600)),
                       grpc.StatusCode.FAILED_PRECONDITION,
                       "request_id was already used with different parameters; use a new request_id for a new payment")
    # Normalisation (trim, currency case) makes these the same request, not a different one.
    same = (await shop("CreatePayment", create_request(f"  {request_id} ", currency=" USD "))).payment
    assert same.id == payment.id


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(request_id=" "), "request_id is required"),
        (dict(caller_service=""), "caller_service is required"),
        (dict(resource_type=""), "resource_type is required"),
        (dict(resource_id=""), "resource_id is required"),
        (dict(amount_cents=0), "amount_cents must be > 0"),
        (dict(amount_cents=-5), "amount_cents must be > 0"),
        (dict(currency="EURO"), "currency must be 3 letters"),
        (dict(currency="1$3"), "currency must be 3 letters"),
        (dict(payment_method=0), "payment_method must be hosted_card or payment_link"),
        (dict(payment_type=3), "payment_type must be one_time or recurring"),
        (dict(provider=7), "provider is invalid"),
        (dict(status_callback_url=""), "status_callback_url is required"),
        (dict(status_callback_url="ftp://x.example/cb"), "status_callback_url must be an absolute http or https URL"),
        (dict(payment_type=2, recurring_interval="fortnight", recurring_interval_count=1),
         "recurring_interval must be day, week, month, or year"),
        (dict(payment_type=2, recurring_interval="month", recurring_interval_count=0),
         "recurring_interval_count must be > 0"),
    ],
)
async def test_create_validation_messages(shop, overrides, message):
    overrides = dict(overrides)  # the parameter is shared by both backends' runs
    request_id = overrides.pop("request_id", None)
    await expect_error(shop.call("CreatePayment", create_request(request_id, **overrides)),
                       grpc.StatusCode.INVALID_ARGUMENT, message)


async def test_grpc_create_needs_request_id_in_the_message(shop):
    # The x-request-id metadata is present (Api always sends it) but is not an idempotency key.
    await expect_error(shop.call("CreatePayment", create_request(""), request_id="transport-id"),
                       grpc.StatusCode.INVALID_ARGUMENT, "request_id is required")


async def test_caller_service_must_be_one_the_key_may_act_for(shop, gateway):
    await expect_error(shop.call("CreatePayment", create_request(caller="other")),
                       grpc.StatusCode.PERMISSION_DENIED, "this api key may not act for caller_service 'other'")
    payment = await gateway.create(caller="other")
    assert payment.caller_service == "other"


async def test_sandbox_is_refused_when_asked_for_stripe(shop):
    # Stripe is not enabled in the test server: a clear refusal, not a 500.
    await expect_error(shop.call("CreatePayment", create_request(provider=1)),
                       grpc.StatusCode.INVALID_ARGUMENT, "provider is not supported")


# ---- GetPayment / ListPayments ---------------------------------------------------


async def test_get_payment_errors_and_scoping(shop, other, gateway):
    await expect_error(shop.call("GetPayment", pb.GetPaymentRequest(id=0)),
                       grpc.StatusCode.INVALID_ARGUMENT, "invalid payment id")
    await expect_error(shop.call("GetPayment", pb.GetPaymentRequest(id=2**63 - 1)),
                       grpc.StatusCode.NOT_FOUND, "payment not found")
    theirs = await other.create(caller="other")
    await expect_error(shop.call("GetPayment", pb.GetPaymentRequest(id=theirs.id)),
                       grpc.StatusCode.NOT_FOUND, "payment not found")
    assert core(await other.get(theirs.id)) == core(theirs)
    assert core(await gateway.get(theirs.id)) == core(theirs)


async def test_list_payments_filters_bounds_and_scoping(shop, other, gateway):
    tag = "list-" + uuid.uuid4().hex[:8]
    first = await shop.create(resource_type=tag)
    second = await shop.create(resource_type=tag)
    theirs = await other.create(caller="other", resource_type=tag)
    await shop("CancelPayment", pb.CancelPaymentRequest(id=first.id))

    async def ids(api: Api, **fields) -> list[int]:
        response = await api("ListPayments", pb.ListPaymentsRequest(resource_type=tag, **fields))
        return [p.id for p in response.payments]

    assert await ids(shop) == [second.id, first.id]  # newest first, only the caller's own
    assert await ids(other) == [theirs.id]
    assert await ids(gateway) == [theirs.id, second.id, first.id]
    assert await ids(shop, has_status=True, status=CANCELED) == [first.id]
    assert await ids(shop, has_status=True, status=PENDING) == [second.id]
    assert await ids(shop, status=CANCELED) == [second.id, first.id]  # status without has_status is no filter
    assert await ids(shop, has_status=True, status=PAID) == []
    assert await ids(shop, provider=SANDBOX) == [second.id, first.id]
    assert await ids(shop, provider=1) == []
    assert await ids(shop, limit=1) == [second.id]
    assert await ids(shop, limit=1, offset=1) == [first.id]
    assert await ids(shop, limit=500) == [second.id, first.id]
    assert await ids(shop, request_id=second.request_id) == [second.id]
    assert await ids(gateway, caller_service="other") == [theirs.id]
    assert await ids(shop, caller_service="shop") == [second.id, first.id]

    for fields, message in [
        (dict(has_status=True, status=5), "invalid status"),
        (dict(has_status=True, status=0), "invalid status"),
        (dict(provider=7), "invalid provider"),
        (dict(limit=501), "limit must be between 1 and 500"),
        (dict(limit=-1), "limit must be between 1 and 500"),
        (dict(offset=-1), "offset must be >= 0"),
    ]:
        await expect_error(shop.call("ListPayments", pb.ListPaymentsRequest(**fields)),
                           grpc.StatusCode.INVALID_ARGUMENT, message)
    await expect_error(shop.call("ListPayments", pb.ListPaymentsRequest(caller_service="other")),
                       grpc.StatusCode.PERMISSION_DENIED,
                       "this api key may not read payments of caller_service 'other'")


# ---- CancelPayment / ListPaymentEvents / HandleProviderCallback ----------------


async def test_cancel_with_reason_is_idempotent(shop, other):
    payment = await shop.create()
    canceled = (await shop("CancelPayment", pb.CancelPaymentRequest(id=payment.id, reason="  customer left  "))).payment
    assert (canceled.status, canceled.cancel_reason) == (CANCELED, "customer left")
    again = (await shop("CancelPayment", pb.CancelPaymentRequest(id=payment.id, reason="other reason"))).payment
    assert (again.status, again.cancel_reason) == (CANCELED, "customer left")
    assert (await shop.get(payment.id)).cancel_reason == "customer left"

    await expect_error(shop.call("CancelPayment", pb.CancelPaymentRequest(id=0)),
                       grpc.StatusCode.INVALID_ARGUMENT, "invalid payment id")
    await expect_error(shop.call("CancelPayment", pb.CancelPaymentRequest(id=2**62)),
                       grpc.StatusCode.NOT_FOUND, "payment not found")
    await expect_error(other.call("CancelPayment", pb.CancelPaymentRequest(id=(await shop.create()).id)),
                       grpc.StatusCode.NOT_FOUND, "payment not found")
    await expect_error(shop.call("CancelPayment", pb.CancelPaymentRequest(id=payment.id, reason="x" * 256)),
                       grpc.StatusCode.INVALID_ARGUMENT, "reason must be at most 255 characters")


async def test_provider_callback_pays_then_cancel_is_refused_and_events_page(shop):
    payment = await shop.create()
    response = await shop("HandleProviderCallback", signed_callback(payment))
    assert response.message == "Provider callback processed"
    assert not response.HasField("payment")
    paid = await shop.get(payment.id)
    assert paid.status == PAID

    await expect_error(shop.call("CancelPayment", pb.CancelPaymentRequest(id=payment.id, reason="too late")),
                       grpc.StatusCode.INVALID_ARGUMENT, "invalid status: paid payments cannot be canceled")
    assert (await shop.get(payment.id)).status == PAID

    events = (await shop("ListPaymentEvents", pb.ListPaymentEventsRequest(id=payment.id))).events
    summary = [(e.event_type, e.old_status, e.new_status) for e in events]
    assert summary[:3] == [("payment_created", 0, 1), ("checkout_created", 1, PENDING), ("payment.succeeded", PENDING, PAID)]
    assert [e.id for e in events] == sorted(e.id for e in events) and all(e.payment_id == payment.id for e in events)
    assert events[2].provider_event_id.startswith("evt_")

    assert len(events) == 3  # the refused cancel changed nothing

    pages, after = [], 0
    while page := list((await shop("ListPaymentEvents", pb.ListPaymentEventsRequest(
            id=payment.id, limit=2, after_event_id=after))).events):
        pages.append([e.id for e in page])
        after = page[-1].id
    assert pages == [[events[0].id, events[1].id], [events[2].id]]
    await expect_error(shop.call("ListPaymentEvents", pb.ListPaymentEventsRequest(id=payment.id, limit=501)),
                       grpc.StatusCode.INVALID_ARGUMENT, "limit must be between 1 and 500")
    await expect_error(shop.call("ListPaymentEvents", pb.ListPaymentEventsRequest(id=0)),
                       grpc.StatusCode.INVALID_ARGUMENT, "invalid payment id")


async def test_provider_callback_rejections(shop):
    payment = await shop.create()
    await expect_error(shop.call("HandleProviderCallback", signed_callback(payment, secret="whsec_wrong")),
                       grpc.StatusCode.INVALID_ARGUMENT, "callback rejected")
    # The signature is checked before the hash: a bad signature on an unknown hash is 400, not 404.
    await expect_error(shop.call("HandleProviderCallback",
                                 signed_callback(payment, secret="whsec_wrong", callback_hash=str(uuid.uuid4()))),
                       grpc.StatusCode.INVALID_ARGUMENT, "callback rejected")
    await expect_error(shop.call("HandleProviderCallback", signed_callback(payment, callback_hash=str(uuid.uuid4()))),
                       grpc.StatusCode.NOT_FOUND, "payment not found")
    bad_provider = signed_callback(payment)
    bad_provider.provider = "paypal"
    await expect_error(shop.call("HandleProviderCallback", bad_provider),
                       grpc.StatusCode.INVALID_ARGUMENT, "provider is not supported")
    for field, message in [("request_id", "request_id is required"), ("provider", "provider is required"),
                           ("callback_hash", "callback hash is required"),
                           ("signature", "provider signature is required"), ("payload", "payload is required")]:
        request = signed_callback(payment)
        request.ClearField(field)
        await expect_error(shop.call("HandleProviderCallback", request), grpc.StatusCode.INVALID_ARGUMENT, message)
    assert (await shop.get(payment.id)).status == PENDING


# ---- standard health and reflection ------------------------------------------------


async def test_standard_health_check_needs_no_metadata(channel):
    stub = health_pb2_grpc.HealthStub(channel)
    for service in ("", SERVICE):
        response = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        assert response.status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=10)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_reflection_lists_services_and_serves_descriptors(channel):
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    requests = [reflection_pb2.ServerReflectionRequest(list_services=""),
                reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE)]
    responses = [r async for r in stub.ServerReflectionInfo(iter(requests), timeout=10)]
    names = {s.name for s in responses[0].list_services_response.service}
    assert {SERVICE, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= names
    files = [descriptor_pb2.FileDescriptorProto.FromString(b)
             for b in responses[1].file_descriptor_response.file_descriptor_proto]
    services = {f"{f.package}.{s.name}": [m.name for m in s.method] for f in files for s in f.service}
    generated = [m.name for m in pb.DESCRIPTOR.services_by_name["PaymentsService"].methods]
    assert services[SERVICE] == generated
    assert generated[:6] == ["Health", "CreatePayment", "GetPayment", "ListPayments", "CancelPayment",
                             "HandleProviderCallback"]  # the reference's RPCs, in its order


async def test_reflection_v1_is_served_too(channel):
    """grpc.reflection.v1 (current grpcurl, Postman): the v1alpha messages on the wire, under the v1 method."""
    info = channel.stream_stream("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                                 request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
                                 response_deserializer=reflection_pb2.ServerReflectionResponse.FromString)
    requests = [reflection_pb2.ServerReflectionRequest(list_services=""),
                reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE),
                reflection_pb2.ServerReflectionRequest(file_containing_symbol="grpc.reflection.v1.ServerReflection")]
    listed, payments, itself = [r async for r in info(iter(requests), timeout=10)]
    names = {s.name for s in listed.list_services_response.service}
    assert {SERVICE, "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection"} <= names
    files = [descriptor_pb2.FileDescriptorProto.FromString(b) for b in payments.file_descriptor_response.file_descriptor_proto]
    assert SERVICE in {f"{f.package}.{s.name}" for f in files for s in f.service}
    (reflection_file,) = [descriptor_pb2.FileDescriptorProto.FromString(b)
                          for b in itself.file_descriptor_response.file_descriptor_proto]
    (method,) = reflection_file.service[0].method
    assert (reflection_file.package, method.name, method.input_type, method.output_type) == (
        "grpc.reflection.v1", "ServerReflectionInfo", ".grpc.reflection.v1.ServerReflectionRequest",
        ".grpc.reflection.v1.ServerReflectionResponse")


def test_reflection_descriptor_database_resolves_everything_grpcurl_needs(deployment):
    """What grpcurl does without proto files, with grpc_reflection's own client."""
    with grpc.insecure_channel(deployment.server.grpc_target) as sync_channel:
        database = ProtoReflectionDescriptorDatabase(sync_channel)
        assert SERVICE in database.get_services()
        pool = descriptor_pool.DescriptorPool(database)
        service = pool.FindServiceByName(SERVICE)
        create = service.methods_by_name["CreatePayment"]
        assert create.input_type.full_name == "payments.CreatePaymentRequest"
        assert create.output_type.fields_by_name["payment"].message_type.fields_by_name["status"].enum_type.values_by_name[
            "PAYMENT_STATUS_PAID"].number == PAID


@pytest.mark.skipif(shutil.which("grpcurl") is None, reason="grpcurl is not installed (optional)")
def test_grpcurl_works_without_proto_files(deployment):
    target = deployment.server.grpc_target
    listed = subprocess.run(["grpcurl", "-plaintext", target, "list"], capture_output=True, text=True, timeout=30)
    assert SERVICE in listed.stdout.split(), listed.stderr
    health = subprocess.run(
        ["grpcurl", "-plaintext", "-H", "x-request-id: grpcurl-1", "-H", f"x-api-key: {deployment.shop_key}",
         target, f"{SERVICE}/Health"], capture_output=True, text=True, timeout=30)
    assert json.loads(health.stdout) == {"status": "ok"}, health.stderr


# ---- a slow provider: graceful shutdown and concurrent duplicates -------------------


@pytest.fixture(scope="module", params=ALL_BACKENDS)
def slow_deployment(request, tmp_path_factory):
    """A server whose sandbox provider takes 1.5 s per create."""
    tmp_path = tmp_path_factory.mktemp(f"grpc-slow-{request.param}")
    database = new_database(request.param, tmp_path)
    try:
        deployment = _start(database, tmp_path, PAYMENTS_SANDBOX_DELAY_MS="1500")
        yield deployment
        _stop(deployment.server)
    finally:
        database.drop()


async def test_sigterm_lets_an_in_flight_create_finish_and_exits_zero(database, tmp_path):
    deployment = _start(database, tmp_path, PAYMENTS_SANDBOX_DELAY_MS="1500")
    server = deployment.server
    try:
        await _shutdown_during_a_create(deployment)
    finally:
        if server.proc.poll() is None:  # the test failed before the server stopped
            server.proc.kill()
    assert server.proc.returncode == 0, server.logs()


async def _shutdown_during_a_create(deployment: Deployment) -> None:
    server = deployment.server
    async with grpc.aio.insecure_channel(server.grpc_target) as channel:
        shop = Api(channel, deployment.shop_key)
        health = health_pb2_grpc.HealthStub(channel)
        watch = health.Watch(health_pb2.HealthCheckRequest(service=SERVICE))
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING

        request = create_request()
        in_flight = asyncio.ensure_future(shop("CreatePayment", request))

        async def reserved() -> bool:  # the row exists (CREATED) while the provider is being called
            listing = await shop("ListPayments", pb.ListPaymentsRequest(request_id=request.request_id))
            return bool(listing.payments)

        deadline = time.monotonic() + 10
        while not await reserved():
            assert time.monotonic() < deadline and not in_flight.done(), "the create never reached the database"
            await asyncio.sleep(0.02)
        assert not in_flight.done()

        server.proc.send_signal(signal.SIGTERM)
        # Health watchers are told at once; probes polling Check see NOT_SERVING or a refused connection.
        assert (await asyncio.wait_for(watch.read(), 10)).status == health_pb2.HealthCheckResponse.NOT_SERVING
        watch.cancel()
        try:
            status = (await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)).status
            assert status == health_pb2.HealthCheckResponse.NOT_SERVING
        except grpc.aio.AioRpcError as exc:  # a server that is stopping refuses new calls
            assert exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED), exc

        payment = (await asyncio.wait_for(in_flight, 20)).payment
        assert (payment.request_id, payment.status) == (request.request_id, PENDING)
    await asyncio.to_thread(server.proc.wait, 30)


async def test_fifty_concurrent_identical_creates_make_one_payment(slow_deployment):
    async with grpc.aio.insecure_channel(slow_deployment.server.grpc_target) as channel:
        shop = Api(channel, slow_deployment.shop_key)
        request = create_request()
        results = await asyncio.gather(*(shop("CreatePayment", request) for _ in range(50)), return_exceptions=True)
        successes = [r.payment for r in results if isinstance(r, pb.PaymentEnvelopeResponse)]
        failures = [r for r in results if not isinstance(r, pb.PaymentEnvelopeResponse)]
        assert successes, failures[:3]
        assert {p.id for p in successes} == {successes[0].id}
        assert all(isinstance(f, grpc.aio.AioRpcError) for f in failures), failures[:3]
        assert {(f.code(), f.details()) for f in failures} <= {(
            grpc.StatusCode.ABORTED,
            "a request with this request_id is still in progress; retry shortly with the same request_id",
        )}
        assert len(failures) >= 40  # the provider takes 1.5 s: nearly all arrive while the first is in flight

        call = shop.call("CreatePayment", request)
        replay = (await call).payment
        assert md_value(await call.trailing_metadata(), "idempotent-replayed") == "true"
        assert (replay.id, replay.status) == (successes[0].id, PENDING)
        listing = await shop("ListPayments", pb.ListPaymentsRequest(request_id=request.request_id))
        assert [p.id for p in listing.payments] == [replay.id]


async def test_a_create_whose_client_gave_up_still_finishes_and_the_retry_replays_it(slow_deployment):
    """A client deadline cancels the RPC, not the create: the key is not left locked (ABORTED) for
    the create lease (60 s); the retry gets the payment as soon as the provider has answered."""
    async with grpc.aio.insecure_channel(slow_deployment.server.grpc_target) as channel:
        shop = Api(channel, slow_deployment.shop_key)
        request = create_request()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await shop.stub.CreatePayment(request, metadata=shop.metadata(), timeout=0.3)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED

        deadline = time.monotonic() + 10
        while True:
            call = shop.call("CreatePayment", request)
            try:
                payment = (await call).payment
                break
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.ABORTED, exc
                assert time.monotonic() < deadline, "the abandoned create still holds the key"
                await asyncio.sleep(0.1)
        assert md_value(await call.trailing_metadata(), "idempotent-replayed") == "true"
        assert (payment.request_id, payment.status) == (request.request_id, PENDING)
        assert payment.provider_payment_id.startswith("sbx_")
