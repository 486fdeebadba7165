"""The reference's external Auth service (auth.AuthService/ValidateInternalAccess),
faked in this process (tests/fakes/auth_server.py), in front of a real
`payments-svc serve` (SQLite: auth never touches the database). Both transports:
gRPC codes and HTTP statuses."""

from __future__ import annotations

import time
import uuid

import aiohttp
import grpc
import pytest

from payments_svc.gen import payments_pb2 as pb
from payments_svc.gen import payments_pb2_grpc

from ..fakes.auth_server import FakeAuth
from ..support import ServerProcess, base_env, cli, new_database

APP_API_KEY = "app-key-of-payments"
SERVICE = "payments-service"
INVALID = "invalid or expired api key"

# api key → what the fake Auth answers: (service_name, allowed_access), or a status code to fail with.
KEYS: dict[str, tuple[str, list[str]] | grpc.StatusCode] = {
    APP_API_KEY: (SERVICE, ["auth-service"]),  # our own key is a key of Auth too
    "k-shop": ("shop", [SERVICE, "orders-service"]),
    "k-cached": ("cached", [SERVICE]),
    "k-forbidden": ("crm", ["orders-service", "payments-service-admin", f"{SERVICE}:caller:*"]),
    "k-unauthenticated": grpc.StatusCode.UNAUTHENTICATED,
    "k-not-found": grpc.StatusCode.NOT_FOUND,
    "k-gateway": ("gateway", [SERVICE, f"{SERVICE}:caller:*"]),
    "k-billing-proxy": ("proxy", [SERVICE, f"{SERVICE}:caller:billing"]),
    "k-slow": ("slow", [SERVICE]),
}
SLOW_SECONDS = 2.5  # more than PAYMENTS_AUTH_TIMEOUT_SECONDS=1 below


def fake_auth_server() -> FakeAuth:
    return FakeAuth(KEYS, app_keys={APP_API_KEY}, delays={"k-slow": SLOW_SECONDS})


def _serve(fake: FakeAuth, tmp_path, **extra) -> tuple[ServerProcess, object]:
    database = new_database("sqlite", tmp_path)
    env = base_env(database.url, AUTH_SERVICE_GRPC_ADDR=fake.address, APP_API_KEY=APP_API_KEY,
                   TEST_LOG_DIR=str(tmp_path), **extra)
    cli(env, "db", "migrate")
    return ServerProcess(env).start(), database


def _stop(server: ServerProcess) -> None:
    code = server.stop()
    assert code == 0, f"server exited with {code} on SIGTERM:\n{server.logs()}"


@pytest.fixture(scope="module")
def fake_auth():
    fake = fake_auth_server()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def server(fake_auth, tmp_path_factory):
    """The server with the default auth cache TTL (30 s)."""
    server, database = _serve(fake_auth, tmp_path_factory.mktemp("external-auth"))
    yield server
    _stop(server)
    database.drop()


class Client:
    """One key over both transports."""

    def __init__(self, server: ServerProcess, channel: grpc.aio.Channel, session: aiohttp.ClientSession):
        self.server = server
        self.stub = payments_pb2_grpc.PaymentsServiceStub(channel)
        self.session = session

    def grpc(self, method: str, request, key: str | None):
        metadata = [("x-request-id", "r-" + uuid.uuid4().hex[:8])]
        if key is not None:
            metadata.append(("x-api-key", key))
        return getattr(self.stub, method)(request, metadata=metadata, timeout=15)

    async def grpc_error(self, method: str, request, key: str | None) -> tuple[grpc.StatusCode, str]:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await self.grpc(method, request, key)
        return info.value.code(), info.value.details()

    async def http(self, method: str, path: str, key: str | None, json: dict | None = None) -> tuple[int, dict]:
        headers = {"X-Request-ID": "r-" + uuid.uuid4().hex[:8]}
        if key is not None:
            headers["X-API-Key"] = key
        async with self.session.request(method, self.server.http_url + path, headers=headers, json=json) as resp:
            return resp.status, await resp.json()

    async def create(self, key: str, caller: str) -> pb.Payment:
        return (await self.grpc("CreatePayment", create_request(caller), key)).payment


def create_request(caller: str) -> pb.CreatePaymentRequest:
    return pb.CreatePaymentRequest(
        request_id="req-" + uuid.uuid4().hex[:12], caller_service=caller, resource_type="order", resource_id="o-1",
        amount_cents=900, currency="EUR", payment_method=1, payment_type=1,
        status_callback_url="https://shop.example/cb",
    )


def http_create_body(caller: str) -> dict:
    return {"request_id": "req-" + uuid.uuid4().hex[:12], "caller_service": caller, "resource_type": "order",
            "resource_id": "o-2", "amount_cents": 700, "currency": "EUR", "payment_method": 1, "payment_type": 1,
            "status_callback_url": "https://shop.example/cb"}


async def _client(server: ServerProcess):
    async with grpc.aio.insecure_channel(server.grpc_target) as channel, aiohttp.ClientSession() as session:
        yield Client(server, channel, session)


@pytest.fixture
async def client(server):
    async for c in _client(server):
        yield c


HEALTH = pb.HealthRequest()


async def test_valid_key_is_checked_with_our_app_key_and_acts_as_its_service(client, fake_auth):
    assert (await client.grpc("Health", HEALTH, "k-shop")).status == "ok"
    assert ("k-shop", (APP_API_KEY,)) in fake_auth.calls
    assert all(sent == (APP_API_KEY,) for _, sent in fake_auth.calls)

    payment = await client.create("k-shop", "shop")
    assert payment.caller_service == "shop" and payment.status == 2
    status, body = await client.http("GET", f"/payments/{payment.id}", "k-shop")
    assert (status, body["payment"]["id"], body["payment"]["caller_service"]) == (200, payment.id, "shop")
    status, body = await client.http("POST", "/payments", "k-shop", http_create_body("shop"))
    assert status == 201 and body["payment"]["caller_service"] == "shop"


async def test_missing_key_never_reaches_auth(client, fake_auth):
    before = len(fake_auth.calls)
    assert await client.grpc_error("Health", HEALTH, None) == (grpc.StatusCode.UNAUTHENTICATED, "missing x-api-key metadata")
    assert await client.http("GET", "/health", None) == (401, {"error": "missing x-api-key header", "code": "unauthenticated"})
    assert len(fake_auth.calls) == before


async def test_key_without_access_to_this_service_is_forbidden(client, fake_auth):
    assert await client.grpc_error("Health", HEALTH, "k-forbidden") == (grpc.StatusCode.PERMISSION_DENIED, "forbidden")
    assert await client.http("GET", "/health", "k-forbidden") == (403, {"error": "forbidden", "code": "permission_denied"})
    assert await client.grpc_error("CreatePayment", create_request("crm"), "k-forbidden") == (
        grpc.StatusCode.PERMISSION_DENIED, "forbidden")
    assert fake_auth.count("k-forbidden") == 3  # refusals are not cached


@pytest.mark.parametrize("key", ["k-unauthenticated", "k-not-found", "k-never-issued"])
async def test_keys_auth_rejects_are_unauthenticated(client, key):
    assert await client.grpc_error("Health", HEALTH, key) == (grpc.StatusCode.UNAUTHENTICATED, INVALID)
    assert await client.http("GET", "/health", key) == (401, {"error": INVALID, "code": "unauthenticated"})
    assert await client.http("GET", "/payments", key) == (401, {"error": INVALID, "code": "unauthenticated"})


async def test_a_valid_key_is_validated_once_per_ttl(client, fake_auth):
    assert fake_auth.count("k-cached") == 0
    for _ in range(3):
        assert (await client.grpc("Health", HEALTH, "k-cached")).status == "ok"
        assert await client.http("GET", "/health", "k-cached") == (200, {"status": "ok"})
    await client.create("k-cached", "cached")
    assert fake_auth.count("k-cached") == 1


async def test_gateway_grant_acts_for_any_caller_and_plain_key_does_not(client):
    for caller in ("billing", "crm"):
        payment = await client.create("k-gateway", caller)
        assert payment.caller_service == caller
        fetched = (await client.grpc("GetPayment", pb.GetPaymentRequest(id=payment.id), "k-gateway")).payment
        assert (fetched.id, fetched.caller_service, fetched.request_id) == (payment.id, caller, payment.request_id)
        assert await client.grpc_error("GetPayment", pb.GetPaymentRequest(id=payment.id), "k-shop") == (
            grpc.StatusCode.NOT_FOUND, "payment not found")

    assert await client.grpc_error("CreatePayment", create_request("billing"), "k-shop") == (
        grpc.StatusCode.PERMISSION_DENIED, "this api key may not act for caller_service 'billing'")
    status, body = await client.http("POST", "/payments", "k-shop", http_create_body("billing"))
    assert (status, body) == (403, {"error": "this api key may not act for caller_service 'billing'",
                                    "code": "permission_denied", "field": "caller_service"})

    # A grant for one named caller: that caller and its own name, nobody else.
    assert (await client.create("k-billing-proxy", "billing")).caller_service == "billing"
    assert (await client.create("k-billing-proxy", "proxy")).caller_service == "proxy"
    assert await client.grpc_error("CreatePayment", create_request("crm"), "k-billing-proxy") == (
        grpc.StatusCode.PERMISSION_DENIED, "this api key may not act for caller_service 'crm'")


async def test_auth_down_or_slow_is_unavailable_never_unauthenticated(tmp_path):
    fake = fake_auth_server()
    server, database = _serve(fake, tmp_path, PAYMENTS_AUTH_CACHE_TTL_SECONDS="0", PAYMENTS_AUTH_TIMEOUT_SECONDS="1")
    try:
        async for client in _client(server):
            assert (await client.grpc("Health", HEALTH, "k-shop")).status == "ok"
            assert (await client.grpc("Health", HEALTH, "k-shop")).status == "ok"
            assert fake.count("k-shop") == 2  # TTL 0: every request asks Auth

            started = time.monotonic()
            assert await client.grpc_error("Health", HEALTH, "k-slow") == (
                grpc.StatusCode.UNAVAILABLE, "authentication service unavailable; retry later")
            assert time.monotonic() - started < SLOW_SECONDS  # the auth timeout, not the fake's delay

            fake.stop()
            for key in ("k-shop", "k-unauthenticated"):
                code, details = await client.grpc_error("Health", HEALTH, key)
                assert (code, details) == (grpc.StatusCode.UNAVAILABLE, "authentication service unavailable; retry later")
                assert await client.http("GET", "/health", key) == (
                    503, {"error": "authentication service unavailable; retry later", "code": "unavailable"})
                code, _ = await client.grpc_error("CreatePayment", create_request("shop"), key)
                assert code == grpc.StatusCode.UNAVAILABLE
    finally:
        fake.stop()
        _stop(server)
        database.drop()
