"""Shared by the live-status tests: servers, a gRPC client, sandbox payments and SSE reading."""

from __future__ import annotations

import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import aiohttp
import grpc

from payments_svc.gen import payments_pb2 as pb
from payments_svc.gen import payments_pb2_grpc
from payments_svc.providers.sandbox.provider import sign

from ..support import ServerProcess, base_env, cli, create_key

WEBHOOK_SECRET = "whsec_live_tests"
PENDING, PAID, FAILED, CANCELED = 2, 10, 20, 30
SANDBOX = 100


def rid() -> str:
    return "req-" + uuid.uuid4().hex[:16]


@dataclass
class Deployment:
    env: dict[str, str]
    servers: list[ServerProcess]
    shop_key: str
    other_key: str
    admin_key: str


def start(database, tmp_path, *, servers: int = 1, **extra_env) -> Deployment:
    env = base_env(database.url, PAYMENTS_SANDBOX_WEBHOOK_SECRET=WEBHOOK_SECRET, TEST_LOG_DIR=str(tmp_path),
                   PAYMENTS_WATCH_KEEPALIVE_SECONDS="1", **extra_env)
    cli(env, "db", "migrate")
    procs = [ServerProcess(dict(env)) for _ in range(servers)]
    with ThreadPoolExecutor(6) as pool:
        started = [pool.submit(p.start, timeout=90) for p in procs]  # a loaded machine starts slowly
        keys = [pool.submit(create_key, env, *args) for args in (("shop",), ("other",), ("ops", "*"))]
        try:
            for s in started:
                s.result()
            return Deployment(env, procs, *(k.result() for k in keys))
        except BaseException:
            for p in procs:
                if p.proc is not None and p.proc.poll() is None:
                    p.proc.kill()
            raise


def stop(deployment: Deployment) -> None:
    for server in deployment.servers:
        if server.proc is not None and server.proc.poll() is None:
            code = server.stop()
            assert code == 0, f"server exited with {code} on SIGTERM:\n{server.logs()}"


class Api:
    def __init__(self, channel: grpc.aio.Channel, api_key: str):
        self.stub = payments_pb2_grpc.PaymentsServiceStub(channel)
        self.api_key = api_key

    def metadata(self):
        return (("x-request-id", rid()), ("x-api-key", self.api_key))

    async def __call__(self, method: str, request):
        return await getattr(self.stub, method)(request, metadata=self.metadata(), timeout=30)

    def stream(self, method: str, request, timeout: float = 30):
        return getattr(self.stub, method)(request, metadata=self.metadata(), timeout=timeout)

    async def create(self, caller: str = "shop", **overrides) -> pb.Payment:
        fields = dict(request_id=rid(), caller_service=caller, resource_type="order", resource_id="o-1",
                      amount_cents=1500, currency="usd", payment_method=1, payment_type=1, provider=SANDBOX,
                      status_callback_url="https://shop.example/cb", customer_ref="buyer-1")
        fields.update(overrides)
        return (await self("CreatePayment", pb.CreatePaymentRequest(**fields))).payment

    async def settle(self, payment: pb.Payment, event_type: str = "payment.succeeded") -> None:
        """The sandbox's webhook for the payment (paid, or failed)."""
        body = json.dumps({"id": "evt_" + uuid.uuid4().hex, "type": event_type, "created": int(time.time()),
                           "data": {"object": {"id": payment.provider_payment_id, "amount": payment.amount_cents}}})
        await self("HandleProviderCallback", pb.HandleProviderCallbackRequest(
            request_id=rid(), provider="sandbox", callback_hash=payment.provider_callback_hash,
            signature=sign(body.encode(), WEBHOOK_SECRET), payload=body))


async def read_sse(response: aiohttp.ClientResponse, *, until_end: bool = True, count: int | None = None,
                   timeout: float = 10.0) -> list[dict]:
    """The SSE messages as {"event", "id", "data", "comment"} dicts, until `event: end` or `count` messages."""
    messages: list[dict] = []
    current: dict = {}
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"SSE stream did not end in time; got {messages}")
        line = await asyncio_wait(response.content.readline(), remaining)
        if not line:
            return messages
        text = line.decode().rstrip("\n")
        if text == "":
            if current:
                messages.append(current)
                if (until_end and current.get("event") == "end") or (count is not None and len(messages) >= count):
                    return messages
            current = {}
            continue
        if text.startswith(":"):
            current["comment"] = text[1:].strip()
            continue
        name, _, value = text.partition(": ")
        current[name] = json.loads(value) if name == "data" else value


async def asyncio_wait(awaitable, timeout: float):
    import asyncio

    return await asyncio.wait_for(awaitable, timeout)
