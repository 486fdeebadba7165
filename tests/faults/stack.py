"""What the fault tests share: the service under test as a real `payments-svc serve`
process, a client for both transports, and reading its JSON logs."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field

import aiohttp
import grpc

from payments_svc.gen import payments_pb2 as pb
from payments_svc.gen import payments_pb2_grpc

from ..support import ServerProcess

DB_UNAVAILABLE = "database unavailable; retry"


def create_body(request_id: str | None = None, caller: str = "shop") -> dict:
    return {"request_id": request_id or "req-" + uuid.uuid4().hex[:12], "caller_service": caller,
            "resource_type": "order", "resource_id": "o-" + uuid.uuid4().hex[:6], "amount_cents": 1250,
            "currency": "usd", "payment_method": 1, "payment_type": 1,
            "status_callback_url": "https://shop.example/payments/cb"}


@dataclass
class Answer:
    status: int
    body: dict
    headers: dict = field(default_factory=dict)


class Client:
    """One API key over HTTP and gRPC against a server. Requests carry a client-side
    timeout well above the server's own, so a server that hangs fails the test
    (`asyncio.TimeoutError`) instead of looking like an answer."""

    def __init__(self, server: ServerProcess, key: str, timeout: float = 20):
        self.server = server
        self.key = key
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        self._channel: grpc.aio.Channel | None = None

    async def __aenter__(self) -> Client:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        self._channel = grpc.aio.insecure_channel(self.server.grpc_target)
        self.stub = payments_pb2_grpc.PaymentsServiceStub(self._channel)
        return self

    async def __aexit__(self, *exc) -> None:
        await self._session.close()
        await self._channel.close()

    async def http(self, method: str, path: str, json_body: dict | None = None, *, key: str | None = None,
                   headers: dict | None = None, data: bytes | None = None) -> Answer:
        sent = {"X-Request-ID": "r-" + uuid.uuid4().hex[:8], "X-API-Key": key or self.key, **(headers or {})}
        async with self._session.request(method, self.server.http_url + path, json=json_body, data=data,
                                         headers=sent) as resp:
            body = await resp.json(content_type=None)
            return Answer(resp.status, body, dict(resp.headers))

    async def probe(self, path: str = "/readyz") -> Answer:
        """GET an endpoint that needs no headers; a body that is not JSON is kept as {"text": ...}."""
        async with self._session.get(self.server.http_url + path) as resp:
            text = await resp.text()
            try:
                return Answer(resp.status, json.loads(text))
            except ValueError:
                return Answer(resp.status, {"text": text})

    async def rpc(self, method: str, request, *, key: str | None = None) -> tuple[grpc.StatusCode, str]:
        """The status code and details of a call (OK and "" when it succeeded)."""
        try:
            await getattr(self.stub, method)(
                request, metadata=[("x-request-id", "r-" + uuid.uuid4().hex[:8]), ("x-api-key", key or self.key)],
                timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            return exc.code(), exc.details()
        return grpc.StatusCode.OK, ""

    async def create_until_done(self, body: dict, attempts_deadline: float = 30) -> Answer:
        """Retries a create with the same request_id, as a well-behaved caller does,
        while the answer says to (409 in progress, 503 unavailable)."""
        deadline = time.monotonic() + attempts_deadline
        while True:
            answer = await self.http("POST", "/payments", body)
            if answer.status not in (409, 503) or time.monotonic() > deadline:
                return answer
            await asyncio.sleep(0.2)


def log_lines(server: ServerProcess, since: int = 0) -> list[dict]:
    """The server's log lines from byte offset `since` on, parsed (non-JSON lines as {"raw": ...})."""
    with open(server.log_path, "rb") as f:
        f.seek(since)
        text = f.read().decode(errors="replace")
    lines = []
    for line in text.splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            lines.append({"raw": line})
    return lines


def log_size(server: ServerProcess) -> int:
    return server.log_path.stat().st_size


def every_rpc(payment_id: int, callback_hash: str) -> dict[str, object]:
    """A valid request for each RPC of payments.PaymentsService that needs the database."""
    return {
        "CreatePayment": pb.CreatePaymentRequest(**create_body()),
        "GetPayment": pb.GetPaymentRequest(id=payment_id),
        "ListPayments": pb.ListPaymentsRequest(caller_service="shop", limit=5),
        "CancelPayment": pb.CancelPaymentRequest(id=payment_id, reason="changed my mind"),
        "HandleProviderCallback": pb.HandleProviderCallbackRequest(
            request_id="cb-1", provider="sandbox", callback_hash=callback_hash, payload="{}", signature="t=1,v1=00"),
        "ListPaymentEvents": pb.ListPaymentEventsRequest(id=payment_id),
        "ReplayCallback": pb.ReplayCallbackRequest(id=payment_id),
        "RefundPayment": pb.RefundPaymentRequest(id=payment_id, request_id="refund-1"),
    }


def every_route(payment_id: int, callback_hash: str) -> list[tuple[str, str, dict | None]]:
    """(method, path, JSON body) of each HTTP route that needs the database."""
    return [
        ("POST", "/payments", create_body()),
        ("GET", f"/payments/{payment_id}", None),
        ("GET", "/payments?caller_service=shop&limit=5", None),
        ("POST", f"/payments/{payment_id}/cancel", {"reason": "changed my mind"}),
        ("POST", f"/payments/{payment_id}/refund", {"request_id": "refund-1"}),
        ("GET", f"/payments/{payment_id}/events", None),
        ("POST", f"/payments/{payment_id}/callbacks/replay", None),
        ("POST", f"/webhooks/providers/sandbox/{callback_hash}", {"payload": "{}", "signature": "t=1,v1=00"}),
        ("GET", f"/sandbox/checkout/{callback_hash}", None),  # the buyer's page: "retry", never "unknown"
        ("POST", f"/sandbox/checkout/{callback_hash}/pay", None),
    ]
