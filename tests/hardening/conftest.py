"""One real `payments-svc serve` per backend for the whole package, with every
provider a request can reach (the sandbox as default, Stripe against the fake),
and clients that can send what no well-behaved client would."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from tests.fakes.stripe_server import FakeStripe

from ..conftest import BACKENDS
from ..support import ServerProcess, base_env, cli, create_key, new_database

SANDBOX_SECRET = "whsec_hardening_sandbox"
STRIPE_SECRET = "whsec_hardening_stripe"


def new_id(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def payment_body(**overrides: Any) -> dict[str, Any]:
    body = dict(request_id=new_id("req"), caller_service="shop", resource_type="order", resource_id=new_id("order"),
                amount_cents=1500, currency="usd", payment_method=1, payment_type=1,
                status_callback_url="https://shop.example/payments/cb", metadata={"cart": "42"})
    body.update(overrides)
    return body


@dataclass
class Deployment:
    backend: str
    server: ServerProcess
    api_key: str  # service "shop", may act for any caller
    env: dict[str, str]


@pytest.fixture(scope="package")
def fake_stripe():
    server = FakeStripe().start_in_thread()
    yield server
    server.stop_thread()


@pytest.fixture(scope="package", params=BACKENDS)
def deployment(request, fake_stripe, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp(f"hardening-{request.param}")
    database = new_database(request.param, tmp_path)
    env = base_env(database.url, PAYMENTS_SANDBOX_WEBHOOK_SECRET=SANDBOX_SECRET, PAYMENTS_DEFAULT_PROVIDER="sandbox",
                   STRIPE_SECRET_KEY=fake_stripe.secret_key, STRIPE_WEBHOOK_SECRET=STRIPE_SECRET,
                   STRIPE_API_BASE=fake_stripe.url, STRIPE_HTTP_TIMEOUT_SECONDS="5", TEST_LOG_DIR=str(tmp_path))
    server = ServerProcess(env)
    try:
        cli(env, "db", "migrate")
        api_key = create_key(env, "shop", "*")
        yield Deployment(request.param, server.start(), api_key, env)
    finally:
        server.stop()
        database.drop()


@pytest.fixture(scope="package")
def slow_deployment(deployment):
    """A second server on the same database whose provider answers after the
    provider timeout: creates stay in flight for seconds, then fail as unavailable."""
    env = dict(deployment.env, PAYMENTS_SANDBOX_DELAY_MS="30000", PAYMENTS_PROVIDER_TIMEOUT_SECONDS="4")
    server = ServerProcess(env)
    try:
        yield Deployment(deployment.backend, server.start(), deployment.api_key, env)
    finally:
        server.stop()


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        assert self.headers.get("content-type", "").startswith("application/json"), (self.status, self.headers, self.body)
        return json.loads(self.body)


async def raw_http(deployment: Deployment, request: bytes, *, close_after_send: bool = False) -> Reply | None:
    """Sends `request` byte for byte (headers no client library would send) and
    reads the whole answer; None when `close_after_send` hangs up first."""
    reader, writer = await asyncio.open_connection("127.0.0.1", deployment.server.http_port)
    try:
        writer.write(request)
        await writer.drain()
        if close_after_send:
            return None
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in filter(None, lines):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await asyncio.wait_for(reader.readexactly(int(headers.get("content-length", "0"))), 30)
        return Reply(int(status_line.split()[1]), headers, body)
    finally:
        writer.close()


def request_bytes(method: str, path: str, headers: dict[str, bytes | str], body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: 127.0.0.1"]
    for name, value in headers.items():
        lines.append(name.encode() + b": " + (value.encode() if isinstance(value, str) else value))
    if body or method == "POST":
        lines.append(b"Content-Length: " + str(len(body)).encode())
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


async def metric_value(deployment: Deployment, name: str, **labels: str) -> float:
    """The value of one Prometheus sample (0 when absent)."""
    async with aiohttp.ClientSession() as session, session.get(deployment.server.http_url + "/metrics") as response:
        text = await response.text()
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{name}\{{(.*)\}} (\S+)$", line)
        if match and all(f'{k}="{v}"' in match.group(1) for k, v in labels.items()):
            total += float(match.group(2))
    return total


@pytest.fixture(scope="package")
def seeded(deployment) -> list[dict]:
    """Payments for generated requests to find (the fuzzers favour small ids; these come
    first on the package's fresh database): pending ones, and one paid (refundable)."""
    import requests

    from payments_svc.providers.sandbox.provider import sign

    headers = {"X-API-Key": deployment.api_key, "Content-Type": "application/json"}
    payments = []
    with requests.Session() as session:
        for _ in range(4):
            answer = session.post(deployment.server.http_url + "/payments", data=json.dumps(payment_body()),
                                  headers={**headers, "X-Request-ID": new_id("seed")}, timeout=30)
            assert answer.status_code == 201, answer.text
            payments.append(answer.json()["payment"])
        paid = payments[0]
        event = json.dumps({"id": new_id("evt"), "type": "payment.succeeded", "created": 0, "data": {"object": {
            "id": paid["provider_payment_id"], "amount": paid["amount_cents"]}}}).encode()
        answer = session.post(f"{deployment.server.http_url}/webhooks/providers/sandbox/{paid['provider_callback_hash']}",
                              data=event, headers={**headers, "X-Request-ID": new_id("seed"),
                                                   "X-Provider-Signature": sign(event, SANDBOX_SECRET)}, timeout=30)
        assert answer.status_code == 200, answer.text
    return payments
