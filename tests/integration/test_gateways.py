"""Gateways of the replaced Go service: services that create and read payments for
other caller services (the reference had no caller scoping). PAYMENTS_GATEWAY_SERVICES
names them, so they keep working unchanged, with the built-in keys and with the
external Auth service, over both transports. Services not named stay scoped."""

from __future__ import annotations

import json
import uuid

import aiohttp
import grpc
import pytest

from payments_svc.gen import payments_pb2 as pb
from payments_svc.gen import payments_pb2_grpc
from payments_svc.providers.sandbox.provider import sign

from ..fakes.auth_server import FakeAuth
from ..support import ServerProcess, base_env, cli, create_key, new_database

SERVICE = "payments-service"
APP_API_KEY = "app-key-of-payments"
SANDBOX_SECRET = "whsec_gateway_tests"
PAID, CANCELED = 10, 30


def _body(caller: str) -> dict:
    return {"request_id": "gw-" + uuid.uuid4().hex[:12], "caller_service": caller, "resource_type": "order",
            "resource_id": "o-" + uuid.uuid4().hex[:6], "amount_cents": 4200, "currency": "usd", "payment_method": 1,
            "payment_type": 1, "status_callback_url": f"https://{caller}.example/payments/cb"}


class Wire:
    def __init__(self, server: ServerProcess, session: aiohttp.ClientSession, stub):
        self.server, self.session, self.stub = server, session, stub

    async def http(self, key: str, method: str, path: str, body: dict | None = None, headers: dict | None = None,
                   data: bytes | None = None) -> tuple[int, dict]:
        sent = {"X-Request-ID": "r-" + uuid.uuid4().hex[:8], "X-API-Key": key, **(headers or {})}
        async with self.session.request(method, self.server.http_url + path, json=body, data=data, headers=sent) as r:
            return r.status, await r.json()

    async def rpc(self, key: str, method: str, request):
        return await getattr(self.stub, method)(
            request, metadata=[("x-request-id", "r-" + uuid.uuid4().hex[:8]), ("x-api-key", key)], timeout=15)


async def _the_reference_gateway_flow(wire: Wire, gateway: str, shop: str, unlisted: str) -> None:
    """The gateway creates, reads, lists, cancels and forwards provider webhooks for two
    other callers; the callers' own keys still see only their own payments."""
    made = {}
    for caller in ("shop", "billing"):
        status, body = await wire.http(gateway, "POST", "/payments", _body(caller))
        assert status == 201 and body["payment"]["caller_service"] == caller
        over_grpc = (await wire.rpc(gateway, "CreatePayment", pb.CreatePaymentRequest(**_body(caller)))).payment
        assert over_grpc.caller_service == caller
        made[caller] = (body["payment"], over_grpc)

        status, fetched = await wire.http(gateway, "GET", f"/payments/{over_grpc.id}")
        assert (status, fetched["payment"]["caller_service"]) == (200, caller)
        fetched = (await wire.rpc(gateway, "GetPayment", pb.GetPaymentRequest(id=body["payment"]["id"]))).payment
        assert fetched.request_id == body["payment"]["request_id"]
        status, listed = await wire.http(gateway, "GET", f"/payments?caller_service={caller}&limit=100")
        assert status == 200 and {body["payment"]["id"], over_grpc.id} <= {p["id"] for p in listed["payments"]}
        status, events = await wire.http(gateway, "GET", f"/payments/{over_grpc.id}/events")
        assert status == 200 and events["events"]

    status, canceled = await wire.http(gateway, "POST", f"/payments/{made['billing'][1].id}/cancel", {"reason": "gone"})
    assert (status, canceled["payment"]["status"]) == (200, CANCELED)

    # A provider webhook forwarded by the gateway, in the reference's {"payload", "signature"} form.
    paid = made["shop"][0]
    event = json.dumps({"id": "evt_" + uuid.uuid4().hex[:8], "type": "payment.succeeded", "created": 0,
                        "data": {"object": {"id": paid["provider_payment_id"], "amount": paid["amount_cents"]}}})
    status, _ = await wire.http(gateway, "POST", f"/webhooks/providers/sandbox/{paid['provider_callback_hash']}",
                                {"payload": event, "signature": sign(event.encode(), SANDBOX_SECRET)})
    assert status == 200
    assert (await wire.http(gateway, "GET", f"/payments/{paid['id']}"))[1]["payment"]["status"] == PAID

    # The callers themselves: their own payments only.
    assert (await wire.http(shop, "GET", f"/payments/{paid['id']}"))[0] == 200
    assert (await wire.http(shop, "GET", f"/payments/{made['billing'][0]['id']}"))[0] == 404
    # A gateway the operator did not name is an ordinary caller.
    assert await wire.http(unlisted, "POST", "/payments", _body("shop")) == (
        403, {"error": "this api key may not act for caller_service 'shop'", "code": "permission_denied", "field": "caller_service"})
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await wire.rpc(unlisted, "CreatePayment", pb.CreatePaymentRequest(**_body("billing")))
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def _run(env: dict[str, str], gateway: str, shop: str, unlisted: str) -> None:
    server = ServerProcess(env).start()
    try:
        async with aiohttp.ClientSession() as session, grpc.aio.insecure_channel(server.grpc_target) as channel:
            await _the_reference_gateway_flow(Wire(server, session, payments_pb2_grpc.PaymentsServiceStub(channel)),
                                              gateway, shop, unlisted)
    finally:
        assert server.stop() == 0, server.logs()


async def test_gateway_with_built_in_keys(tmp_path):
    database = new_database("sqlite", tmp_path)
    env = base_env(database.url, PAYMENTS_GATEWAY_SERVICES="payments-gateway, edge-gateway",
                   PAYMENTS_SANDBOX_WEBHOOK_SECRET=SANDBOX_SECRET, TEST_LOG_DIR=str(tmp_path))
    cli(env, "db", "migrate")
    # Keys made as for any caller: no --acts-for. The setting is what makes them gateways.
    keys = [create_key(env, name) for name in ("payments-gateway", "shop", "other-gateway")]
    await _run(env, *keys)


async def test_gateway_with_the_external_auth_service(tmp_path):
    fake = FakeAuth({APP_API_KEY: (SERVICE, ["auth-service"]),
                     "k-payments-gateway": ("payments-gateway", [SERVICE]),  # no :caller: grants at Auth
                     "k-shop": ("shop", [SERVICE]),
                     "k-other-gateway": ("other-gateway", [SERVICE])}, app_keys={APP_API_KEY})
    database = new_database("sqlite", tmp_path)
    env = base_env(database.url, AUTH_SERVICE_GRPC_ADDR=fake.address, APP_API_KEY=APP_API_KEY,
                   PAYMENTS_GATEWAY_SERVICES="payments-gateway", PAYMENTS_SANDBOX_WEBHOOK_SECRET=SANDBOX_SECRET,
                   TEST_LOG_DIR=str(tmp_path))
    cli(env, "db", "migrate")
    try:
        await _run(env, "k-payments-gateway", "k-shop", "k-other-gateway")
    finally:
        fake.stop()
