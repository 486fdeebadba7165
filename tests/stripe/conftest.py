"""Fixtures of the Stripe tests: the fake Stripe (one per module, in a thread), a
real `payments-svc serve` per backend pointed at it, and clients for both transports
that speak in plain dicts so one test body runs over gRPC and over HTTP."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import uuid
from dataclasses import dataclass
from typing import Any

import aiohttp
import grpc
import pytest

from payments_svc.auth.keys import ApiKeyRepository
from payments_svc.config import load_settings
from payments_svc.db.engine import open_database
from payments_svc.db.migrate import migrate
from payments_svc.gen import payments_pb2 as pb
from payments_svc.gen import payments_pb2_grpc
from tests.fakes.stripe_server import FakeStripe, deliver, sign_event

from ..conftest import BACKENDS
from ..support import ServerProcess, TestDatabase, _mysql_connect, base_env, new_database

WEBHOOK_SECRET = "whsec_stripe_tests_current"
OLD_WEBHOOK_SECRET = "whsec_stripe_tests_previous"  # still accepted: a rotation in progress
PENDING, PROCESSING, PAID, FAILED, CANCELED, EXPIRED = 2, 3, 10, 20, 30, 40
HOSTED_CARD, PAYMENT_LINK = 1, 2
ONE_TIME, RECURRING = 1, 2


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="module")
def fake():
    server = FakeStripe().start_in_thread()
    yield server
    server.stop_thread()


@pytest.fixture(scope="module", params=BACKENDS)
def module_database(request, tmp_path_factory):
    """One database per backend for a module's server (tests/conftest.py's `database` is per test)."""
    db = new_database(request.param, tmp_path_factory.mktemp(request.param))
    yield db
    db.drop()


@dataclass
class Deployment:
    database: TestDatabase
    server: ServerProcess
    api_key: str


@pytest.fixture(scope="module")
def deployment(fake, module_database, tmp_path_factory):
    database = module_database
    env = base_env(
        database.url,
        STRIPE_SECRET_KEY=fake.secret_key,
        STRIPE_WEBHOOK_SECRET=f"{WEBHOOK_SECRET},{OLD_WEBHOOK_SECRET}",
        STRIPE_API_BASE=fake.url,
        STRIPE_HTTP_TIMEOUT_SECONDS="5",
        PAYMENTS_SANDBOX_ENABLED="false",
        PAYMENTS_AUTH_CACHE_TTL_SECONDS="60",
        TEST_LOG_DIR=str(tmp_path_factory.mktemp("logs")),
    )
    # Migrated and keyed in-process: a CLI process per step would double the set-up time.
    api_key = asyncio.run(_migrate_and_create_key(load_settings(env)))
    server = ServerProcess(env).start()
    yield Deployment(database, server, api_key)
    server.stop()


async def _migrate_and_create_key(settings) -> str:
    db = open_database(settings)
    try:
        await migrate(db)
        async with db.transaction() as conn:
            api_key, _ = await ApiKeyRepository(conn).create("shop", frozenset())
        return api_key
    finally:
        await db.close()


def db_rows(database: TestDatabase, sql: str, *params: Any) -> list[tuple]:
    """Reads the service's database directly (sqlite3 / PyMySQL, `?` placeholders)."""
    if database.backend == "sqlite":
        conn = sqlite3.connect(database.url.split("///", 1)[1])
        try:
            return [tuple(r) for r in conn.execute(sql, params).fetchall()]
        finally:
            conn.close()
    conn = _mysql_connect(database.name)
    try:
        with conn.cursor() as cur:
            cur.execute(sql.replace("?", "%s"), params)
            return [tuple(r) for r in cur.fetchall()]
    finally:
        conn.close()


class ApiError(Exception):
    def __init__(self, code: int | str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code  # HTTP status, or the gRPC status code's name
        self.message = message


def _plain(message) -> dict[str, Any]:
    return {f.name: getattr(message, f.name) for f in message.DESCRIPTOR.fields}


class GrpcApi:
    """payments.PaymentsService; webhooks come in as a gateway forwards them
    (HandleProviderCallback with the payment's callback hash)."""

    transport = "grpc"

    def __init__(self, deployment: Deployment):
        self._channel = grpc.aio.insecure_channel(deployment.server.grpc_target)
        self._stub = payments_pb2_grpc.PaymentsServiceStub(self._channel)
        self._key = deployment.api_key

    async def close(self) -> None:
        await self._channel.close()

    async def _call(self, method: str, request):
        metadata = (("x-request-id", new_id("rq")), ("x-api-key", self._key))
        try:
            return await getattr(self._stub, method)(request, metadata=metadata, timeout=30)
        except grpc.aio.AioRpcError as exc:
            raise ApiError(exc.code().name, exc.details()) from None

    async def create(self, **fields) -> dict[str, Any]:
        return _plain((await self._call("CreatePayment", pb.CreatePaymentRequest(**fields))).payment)

    async def get(self, payment_id: int) -> dict[str, Any]:
        payment = (await self._call("GetPayment", pb.GetPaymentRequest(id=payment_id))).payment
        return {**_plain(payment), "callback_type": payment.callback_delivery.event_type}

    async def cancel(self, payment_id: int, reason: str = "") -> dict[str, Any]:
        return _plain((await self._call("CancelPayment", pb.CancelPaymentRequest(id=payment_id, reason=reason))).payment)

    async def refund(self, payment_id: int, request_id: str, amount_cents: int = 0, reason: str = "") -> tuple[dict, dict]:
        answer = await self._call("RefundPayment", pb.RefundPaymentRequest(
            id=payment_id, request_id=request_id, amount_cents=amount_cents, reason=reason))
        return _plain(answer.payment), _plain(answer.refund)

    async def events(self, payment_id: int) -> list[dict[str, Any]]:
        answer = await self._call("ListPaymentEvents", pb.ListPaymentEventsRequest(id=payment_id))
        return [_plain(e) for e in answer.events]

    async def deliver(self, event: dict[str, Any] | bytes, payment: dict[str, Any], *, signature: str | None = None) -> None:
        payload = event if isinstance(event, bytes) else json.dumps(event).encode()
        await self._call("HandleProviderCallback", pb.HandleProviderCallbackRequest(
            request_id=new_id("rq"), provider="stripe", callback_hash=payment["provider_callback_hash"],
            signature=signature or sign_event(payload, WEBHOOK_SECRET), payload=payload.decode()))


class HttpApi:
    """The HTTP shim; webhooks come in as Stripe sends them, to /webhooks/stripe."""

    transport = "http"

    def __init__(self, deployment: Deployment):
        self.base = deployment.server.http_url
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        self._key = deployment.api_key

    async def close(self) -> None:
        await self._session.close()

    async def request(self, method: str, path: str, body: Any = None, headers: dict | None = None) -> tuple[int, Any]:
        sent = {"X-Request-ID": new_id("rq"), "X-API-Key": self._key, **(headers or {})}
        data = body if isinstance(body, bytes) else None if body is None else json.dumps(body).encode()
        if body is not None and not isinstance(body, bytes):
            sent["Content-Type"] = "application/json"
        async with self._session.request(method, self.base + path, data=data, headers=sent) as response:
            return response.status, await response.json(content_type=None)

    async def _ok(self, method: str, path: str, body: Any = None) -> Any:
        status, answer = await self.request(method, path, body)
        if status >= 300:
            raise ApiError(status, answer.get("error") or answer.get("message"))
        return answer

    async def create(self, **fields) -> dict[str, Any]:
        return _defaults((await self._ok("POST", "/payments", fields))["payment"])

    async def get(self, payment_id: int) -> dict[str, Any]:
        payment = (await self._ok("GET", f"/payments/{payment_id}"))["payment"]
        return {**_defaults(payment), "callback_type": (payment.get("callback_delivery") or {}).get("event_type", "")}

    async def cancel(self, payment_id: int, reason: str = "") -> dict[str, Any]:
        return _defaults((await self._ok("POST", f"/payments/{payment_id}/cancel", {"reason": reason}))["payment"])

    async def refund(self, payment_id: int, request_id: str, amount_cents: int = 0, reason: str = "") -> tuple[dict, dict]:
        answer = await self._ok("POST", f"/payments/{payment_id}/refund",
                                {"request_id": request_id, "amount_cents": amount_cents, "reason": reason})
        return _defaults(answer["payment"]), answer["refund"]

    async def events(self, payment_id: int) -> list[dict[str, Any]]:
        return (await self._ok("GET", f"/payments/{payment_id}/events"))["events"]

    async def deliver(self, event: dict[str, Any] | bytes, payment: dict[str, Any], *, signature: str | None = None) -> None:
        headers = {"Stripe-Signature": signature} if signature else None
        status, text = await deliver(event, self.base + "/webhooks/stripe", WEBHOOK_SECRET, headers=headers)
        if status != 200:
            raise ApiError(status, json.loads(text).get("error", text))


def _defaults(payment: dict[str, Any]) -> dict[str, Any]:
    """The shim leaves zero values out, as the reference did; put them back."""
    return {"refunded_cents": 0, "provider_subscription_id": "", "attention_required": False, "failure_reason": "",
            **payment}


@pytest.fixture(params=["grpc", "http"])
async def api(request, deployment):
    client = (GrpcApi if request.param == "grpc" else HttpApi)(deployment)
    yield client
    await client.close()


@pytest.fixture
async def http(deployment):
    client = HttpApi(deployment)
    yield client
    await client.close()


def payment_fields(**overrides: Any) -> dict[str, Any]:
    fields = dict(
        request_id=new_id("req"), caller_service="shop", resource_type="order", resource_id=new_id("order"),
        amount_cents=1500, currency="usd", payment_method=HOSTED_CARD, payment_type=ONE_TIME,
        status_callback_url="https://shop.example/payments/cb", metadata={"cart": "42"},
    )
    fields.update(overrides)
    return fields


def subscription_fields(**overrides: Any) -> dict[str, Any]:
    return payment_fields(payment_type=RECURRING, recurring_interval="month", recurring_interval_count=1, **overrides)

