"""What the suite talks to the stack with: API clients for both transports that speak
plain dicts (one test body runs over gRPC and over HTTP; gRPC through the project's own
typed client, payments_svc.client), and the callback receiver."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
from aiohttp import web

from payments_svc.client import PaymentsApiError, PaymentsClient
from payments_svc.gen import payments_pb2 as pb

T = TypeVar("T")

CREATED, PENDING, PROCESSING, PAID, FAILED, CANCELED, EXPIRED = 1, 2, 3, 10, 20, 30, 40
DELIVERY_PENDING, DELIVERY_SUCCESS, DELIVERY_FAILED = 1, 10, 20
HOSTED_CARD, PAYMENT_LINK = 1, 2
ONE_TIME, RECURRING = 1, 2


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 15.0, interval: float = 0.1,
                     what: str = "condition") -> Any:
    """Polls `check` until it returns something truthy; fails with the last value."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = await check()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s (last: {last!r})")
        await asyncio.sleep(interval)


class ApiError(Exception):
    def __init__(self, code: int | str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code  # HTTP status, or the gRPC status code's name
        self.message = message


def _plain(message) -> dict[str, Any]:
    out = {}
    for f in message.DESCRIPTOR.fields:
        value = getattr(message, f.name)
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            value = dict(value)
        elif f.message_type is not None and hasattr(value, "DESCRIPTOR"):  # a singular message
            value = _plain(value) if message.HasField(f.name) else None
        elif f.message_type is not None:
            value = [_plain(v) for v in value]
        out[f.name] = value
    return out


def _http_payment(payment: dict[str, Any]) -> dict[str, Any]:
    """The shim may leave zero values out (as the reference did); put them back."""
    defaults = {"refunded_cents": 0, "refundable_cents": 0, "received_cents": 0, "attention_required": False,
                "failure_reason": "", "cancel_reason": "", "provider_payment_id": "", "checkout_url": "",
                "callback_delivery": None}
    return {**defaults, **payment}


class GrpcApi:
    """payments.PaymentsService through payments_svc.client, as a caller service uses it
    (its retries on UNAVAILABLE / ABORTED included). Provider webhooks come in as a
    gateway forwards them (HandleProviderCallback with the payment's callback hash)."""

    transport = "grpc"

    def __init__(self, target: str, api_key: str):
        self._client = PaymentsClient(target, api_key, timeout=30)

    async def close(self) -> None:
        await self._client.close()

    async def _ok(self, call: Awaitable[T]) -> T:
        try:
            return await call
        except PaymentsApiError as exc:
            raise ApiError(exc.code.name, exc.message) from None

    async def create(self, **fields) -> dict[str, Any]:
        return await self.create_replayed(**fields)

    async def create_replayed(self, **fields) -> dict[str, Any]:
        """The payment, with `_replayed` from the idempotent-replayed trailer."""
        created = await self._ok(self._client.create_payment(pb.CreatePaymentRequest(**fields)))
        return {**_plain(created.payment), "_replayed": created.replayed}

    async def get(self, payment_id: int) -> dict[str, Any]:
        return _plain(await self._ok(self._client.get_payment(payment_id)))

    async def cancel(self, payment_id: int, reason: str = "") -> dict[str, Any]:
        return _plain(await self._ok(self._client.cancel_payment(payment_id, reason)))

    async def refund(self, payment_id: int, request_id: str, amount_cents: int = 0, reason: str = "") -> tuple[dict, dict]:
        result = await self._ok(self._client.refund_payment(payment_id, request_id, amount_cents, reason))
        return _plain(result.payment), _plain(result.refund)

    async def events(self, payment_id: int) -> list[dict[str, Any]]:
        return [_plain(e) for e in await self._ok(self._client.list_payment_events(payment_id))]

    async def provider_webhook(self, provider: str, payment: dict[str, Any], payload: bytes, signature: str) -> None:
        await self._ok(self._client.handle_provider_callback(pb.HandleProviderCallbackRequest(
            request_id=new_id("rq"), provider=provider, callback_hash=payment["provider_callback_hash"],
            signature=signature, payload=payload.decode())))


class HttpApi:
    """The HTTP shim. Provider webhooks come in as the provider sends them."""

    transport = "http"

    def __init__(self, base_url: str, api_key: str):
        self.base = base_url
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        self._key = api_key

    async def close(self) -> None:
        await self._session.close()

    async def request(self, method: str, path: str, body: Any = None, headers: dict | None = None,
                      auth: bool = True) -> tuple[int, Any, dict[str, str]]:
        sent = {"X-Request-ID": new_id("rq"), **({"X-API-Key": self._key} if auth else {}), **(headers or {})}
        data = body if isinstance(body, bytes) else None if body is None else json.dumps(body).encode()
        if body is not None and not isinstance(body, bytes):
            sent["Content-Type"] = "application/json"
        async with self._session.request(method, self.base + path, data=data, headers=sent,
                                         allow_redirects=False) as response:
            text = await response.text()
            try:
                answer = json.loads(text) if text else None
            except ValueError:
                answer = text
            return response.status, answer, dict(response.headers)

    async def _ok(self, method: str, path: str, body: Any = None) -> tuple[Any, dict[str, str]]:
        status, answer, headers = await self.request(method, path, body)
        if status >= 300:
            message = answer.get("error") or answer.get("message") if isinstance(answer, dict) else str(answer)
            raise ApiError(status, message)
        return answer, headers

    async def create(self, **fields) -> dict[str, Any]:
        return await self.create_replayed(**fields)

    async def create_replayed(self, **fields) -> dict[str, Any]:
        answer, headers = await self._ok("POST", "/payments", fields)
        return {**_http_payment(answer["payment"]), "_replayed": headers.get("idempotent-replayed") == "true"}

    async def get(self, payment_id: int) -> dict[str, Any]:
        return _http_payment((await self._ok("GET", f"/payments/{payment_id}"))[0]["payment"])

    async def cancel(self, payment_id: int, reason: str = "") -> dict[str, Any]:
        return _http_payment((await self._ok("POST", f"/payments/{payment_id}/cancel", {"reason": reason}))[0]["payment"])

    async def refund(self, payment_id: int, request_id: str, amount_cents: int = 0, reason: str = "") -> tuple[dict, dict]:
        answer, _ = await self._ok("POST", f"/payments/{payment_id}/refund",
                                   {"request_id": request_id, "amount_cents": amount_cents, "reason": reason})
        return _http_payment(answer["payment"]), answer["refund"]

    async def events(self, payment_id: int) -> list[dict[str, Any]]:
        return (await self._ok("GET", f"/payments/{payment_id}/events"))[0]["events"]

    async def provider_webhook(self, provider: str, payment: dict[str, Any], payload: bytes, signature: str) -> None:
        """Stripe's account-level endpoint for Stripe; the per-payment route for others."""
        if provider == "stripe":
            path, headers = "/webhooks/stripe", {"Stripe-Signature": signature}
        else:
            path = f"/webhooks/providers/{provider}/{payment['provider_callback_hash']}"
            headers = {"X-Provider-Signature": signature}
        async with self._session.post(self.base + path, data=payload,
                                      headers={"Content-Type": "application/json", **headers}) as response:
            if response.status != 200:
                raise ApiError(response.status, await response.text())


# --------------------------------------------------------------------------- callbacks


@dataclass
class Received:
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    at: float

    @property
    def webhook_id(self) -> str:
        return self.headers.get("webhook-id", "")

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.body)

    @property
    def payment_id(self) -> int | None:
        try:
            return int(self.json["payment"]["id"])
        except (ValueError, KeyError, TypeError):
            return None

    @property
    def type(self) -> str:
        return self.json.get("type", "")


@dataclass
class _Hold:
    arrived: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    used: bool = False


class Receiver:
    """A caller's status callback endpoint on 127.0.0.1, in a thread of its own (it
    outlives each test's event loop). Records every request on arrival and answers 200,
    except that a `hold(path)` keeps the next request to that path waiting until
    released (to catch a dispatcher with a delivery in flight)."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._holds: dict[str, _Hold] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    def start(self) -> Receiver:
        started = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop

            async def setup() -> None:
                app = web.Application()
                app.router.add_route("*", "/{tail:.*}", self._handle)
                self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
                await self._runner.setup()
                site = web.TCPSite(self._runner, "127.0.0.1", 0)
                await site.start()
                self.port = self._runner.addresses[0][1]

            loop.run_until_complete(setup())
            started.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, name="e2e-receiver", daemon=True)
        self._thread.start()
        started.wait(10)
        return self

    def stop(self) -> None:
        for hold in self._holds.values():
            hold.release.set()
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}"

    def hold(self, path: str) -> _Hold:
        hold = _Hold()
        self._holds["/" + path.lstrip("/")] = hold
        return hold

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        with self._lock:
            self.received.append(Received(request.path, {k.lower(): v for k, v in request.headers.items()},
                                          body, time.monotonic()))
            hold = self._holds.get(request.path)
            held = hold is not None and not hold.used
            if held:
                hold.used = True
        if held:
            hold.arrived.set()
            await asyncio.get_running_loop().run_in_executor(None, hold.release.wait, 30)
        return web.Response(status=200, text="ok")

    def for_payment(self, payment_id: int, type_: str | None = None) -> list[Received]:
        with self._lock:
            got = list(self.received)
        return [r for r in got if r.payment_id == payment_id and (type_ is None or r.type == type_)]

    async def wait_for(self, payment_id: int, type_: str, timeout: float = 15.0) -> Received:
        found = await eventually(lambda: _async(self.for_payment(payment_id, type_)), timeout,
                                 what=f"a {type_} callback for payment {payment_id}")
        return found[0]


async def _async(value):
    return value
