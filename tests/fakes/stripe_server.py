"""A local stand-in for api.stripe.com, for tests.

`FakeStripe` serves Stripe's v1 REST API on 127.0.0.1 (an ephemeral port) so the real `stripe`
SDK can talk to it. Every request is checked against Stripe's published OpenAPI spec (path,
method, form parameters, types, enums, required params), authenticated, recorded, and answered
with stateful objects shaped like Stripe's published fixtures. Plain-Python controls play the
customer and Stripe itself (pay, fail, renew, refund, dispute...) and return the webhook events
Stripe would send; `sign_event` and `deliver` send them the way Stripe does.

    async with FakeStripe() as fake:
        client = stripe.StripeClient(fake.secret_key, base_addresses={"api": fake.url},
                                     http_client=stripe.AIOHTTPClient())
        session = await client.v1.checkout.sessions.create_async(params={...})
        events = fake.complete_session(session.id)
        await deliver(events[0], "http://127.0.0.1:8080/webhooks/stripe", "whsec_test")
"""

from __future__ import annotations

import asyncio
import calendar
import copy
import hashlib
import hmac
import json
import secrets
import string
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
import stripe
from aiohttp import web

from tests.fakes.stripe_spec import EMPTY, Operation, ParamError, StripeSpec, decode_form, load_fixtures

# A trimmed copy of Stripe's published spec and fixtures (scripts/trim_stripe_spec.py says which).
DEFAULT_SPEC_DIR = Path(__file__).resolve().parent / "stripe_openapi"

_STRING = {"type": "string", "maxLength": 5000}
_INTEGER = {"type": "integer"}
_METADATA = {"type": "object", "additionalProperties": {"type": "string"}}
_RESTRICTIONS = {
    "type": "object",
    "properties": {
        "completed_sessions": {"type": "object", "properties": {"limit": _INTEGER}, "required": ["limit"]},
    },
    "required": ["completed_sessions"],
}
_FEEDBACK = {
    "type": "string",
    "enum": "customer_service low_quality missing_features other switched_service too_complex too_expensive unused".split(),
}

# spec3.json is Stripe's spec of 2022-04; the SDK pins a newer API version. Parameters the
# service needs that Stripe added since are allowed here explicitly (each checked against the
# installed SDK's params TypedDicts, stripe/params/...), so everything else stays validated.
NEWER_API_PARAMS: dict[tuple[str, str], dict[str, Any]] = {
    ("post", "/v1/payment_links"): {
        # Stop accepting payments after N completed sessions: keeps a one-off link one-off.
        "restrictions": _RESTRICTIONS,
        # Shown on the link's page once it is deactivated (by us, or by the restriction).
        "inactive_message": _STRING,
        # Metadata for the PaymentIntent / Subscription each payment creates, so webhooks about
        # them can be matched back to our payment.
        "payment_intent_data": {"type": "object", "properties": {"metadata": _METADATA}},
        "subscription_data[metadata]": _METADATA,
    },
    ("post", "/v1/payment_links/{payment_link}"): {
        "restrictions": {"anyOf": [_RESTRICTIONS, EMPTY]},
        "inactive_message": {"anyOf": [_STRING, EMPTY]},
    },
    ("get", "/v1/checkout/sessions"): {
        # Find the sessions a payment link produced.
        "payment_link": _STRING,
        "status": {"type": "string", "enum": ["complete", "expired", "open"]},
    },
    ("delete", "/v1/subscriptions/{subscription_exposed_id}"): {
        # Why a subscription was canceled, shown in the dashboard.
        "cancellation_details": {
            "type": "object",
            "properties": {
                "comment": {"anyOf": [_STRING, EMPTY]},
                "feedback": {"anyOf": [_FEEDBACK, EMPTY]},
            },
        },
    },
}
# Required-ness that changed since 2022: `mode` is required now that line items are always
# prices (2022-08-01); `cancel_url` became optional (Checkout then shows no back link).
NEWER_API_REQUIRED: dict[tuple[str, str], dict[str, bool]] = {
    ("post", "/v1/checkout/sessions"): {"mode": True, "cancel_url": False},
}

# Every operation the fake answers; scripts/trim_stripe_spec.py keeps exactly these of Stripe's spec.
SERVED_OPERATIONS: tuple[tuple[str, str], ...] = (
    ("post", "/v1/products"),
    ("get", "/v1/products/{id}"),
    ("post", "/v1/prices"),
    ("get", "/v1/prices"),
    ("get", "/v1/prices/{price}"),
    ("post", "/v1/checkout/sessions"),
    ("get", "/v1/checkout/sessions"),
    ("get", "/v1/checkout/sessions/{session}"),
    ("post", "/v1/checkout/sessions/{session}/expire"),
    ("get", "/v1/checkout/sessions/{session}/line_items"),
    ("post", "/v1/payment_links"),
    ("get", "/v1/payment_links"),
    ("get", "/v1/payment_links/{payment_link}"),
    ("post", "/v1/payment_links/{payment_link}"),
    ("get", "/v1/subscriptions/{subscription_exposed_id}"),
    ("delete", "/v1/subscriptions/{subscription_exposed_id}"),
    ("get", "/v1/invoices/{invoice}"),
    ("get", "/v1/payment_intents/{intent}"),
    ("get", "/v1/charges/{charge}"),
    ("post", "/v1/refunds"),
    ("get", "/v1/refunds"),
    ("get", "/v1/refunds/{refund}"),
    ("get", "/v1/events/{id}"),
)

_ALPHANUMERIC = string.ascii_letters + string.digits
_DAY = 24 * 3600


def _random(length: int) -> str:
    return "".join(secrets.choice(_ALPHANUMERIC) for _ in range(length))


def _new_id(prefix: str, length: int = 24) -> str:
    return f"{prefix}_{_random(length)}"


def _now() -> int:
    return int(time.time())


def sign_event(payload: bytes | str, secret: str, timestamp: int | None = None) -> str:
    """The Stripe-Signature header Stripe sends with a webhook: t=<ts>,v1=<HMAC-SHA256 hex>."""
    if isinstance(payload, bytes):
        payload = payload.decode("utf-8")
    t = _now() if timestamp is None else int(timestamp)
    signature = hmac.new(secret.encode("utf-8"), f"{t}.{payload}".encode(), hashlib.sha256).hexdigest()
    return f"t={t},v1={signature}"


async def deliver(
    event: Mapping[str, Any] | bytes,
    url: str,
    secret: str,
    *,
    headers: Mapping[str, str] | None = None,
) -> tuple[int, str]:
    """POSTs an event (or raw payload bytes) to a webhook endpoint as Stripe does; `headers`
    override the defaults (e.g. a bad Stripe-Signature). Returns (status, body)."""
    payload = event if isinstance(event, bytes) else json.dumps(event, indent=2).encode("utf-8")
    sent = {
        "Content-Type": "application/json; charset=utf-8",
        "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
        "Stripe-Signature": sign_event(payload, secret),
        **(headers or {}),
    }
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        async with session.post(url, data=payload, headers=sent) as response:
            return response.status, await response.text()


@dataclass
class RecordedRequest:
    method: str
    path: str
    # Decoded and typed per the spec; the raw nested strings if the request failed validation.
    params: dict[str, Any]
    headers: Mapping[str, str]  # case-insensitive
    status: int | None = None
    replayed: bool = False

    @property
    def idempotency_key(self) -> str | None:
        return self.headers.get("Idempotency-Key")

    @property
    def stripe_version(self) -> str | None:
        return self.headers.get("Stripe-Version")


class _StripeError(Exception):
    """An error answer, in Stripe's shape."""

    def __init__(self, status: int, type_: str, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status = status
        error = {"type": type_, "message": message}
        if param is not None:
            error["param"] = param
        if code is not None:
            error["code"] = code
        self.body = {"error": error}


def _invalid(message: str, param: str | None = None, code: str | None = None, status: int = 400) -> _StripeError:
    return _StripeError(status, "invalid_request_error", message, param, code)


@dataclass
class _Fault:
    remaining: int
    status: int
    path_prefix: str | None


@dataclass
class _SavedResponse:
    method: str
    path: str
    params: dict[str, Any]
    status: int
    body: dict[str, Any]
    request_id: str


@dataclass
class _Sale:
    """What a checkout session was asked to create once paid: kept off the session object."""

    line_items: list[dict[str, Any]]
    payment_intent_data: dict[str, Any] = field(default_factory=dict)
    subscription_data: dict[str, Any] = field(default_factory=dict)


@cache
def _spec(spec_dir: Path) -> StripeSpec:
    return StripeSpec(spec_dir, NEWER_API_PARAMS, NEWER_API_REQUIRED)


def _metadata(new: Any, old: Mapping[str, str] | None = None) -> dict[str, str]:
    """Stripe's metadata semantics: keys merge, "" unsets a key, metadata="" unsets all."""
    if new == "":
        return {}
    merged = dict(old or {})
    for key, value in (new or {}).items():
        if value == "":
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


# Stripe's own amount units (https://docs.stripe.com/currencies), kept apart from the
# service's ISO 4217 table: where the two differ (ISK, MGA) the provider must convert.
ZERO_DECIMAL = frozenset("bif clp djf gnf jpy kmf krw mga pyg rwf ugx vnd vuv xaf xof xpf".split())
THREE_DECIMAL = frozenset("bhd jod kwd omr tnd".split())


def _decimals(currency: str) -> int:
    return 0 if currency in ZERO_DECIMAL else 3 if currency in THREE_DECIMAL else 2


def _check_amount(amount: int, currency: str, param: str) -> None:
    """Stripe's special cases: ISK in whole krónur (multiples of 100), three-decimal
    currencies in multiples of 10."""
    if currency == "isk" and amount % 100:
        raise _invalid("Invalid amount. Currency ISK has become effectively zero-decimal and charged amounts must be "
                       "evenly divisible by 100.", param, code="invalid_charge_amount_no_decimal_compatible")
    if currency in THREE_DECIMAL and amount % 10:
        raise _invalid(f"Invalid amount. Amounts in {currency.upper()} must have 0 as their last digit.", param,
                       code="invalid_charge_amount")


def _money(amount: int, currency: str) -> str:
    digits = _decimals(currency)
    major = f"{amount / 10**digits:,.{digits}f}"
    return f"${major}" if currency == "usd" else f"{major} {currency.upper()}"


def _add_interval(timestamp: int, interval: str, count: int) -> int:
    start = datetime.fromtimestamp(timestamp, UTC)
    if interval in ("day", "week"):
        return int((start + timedelta(days=count * (7 if interval == "week" else 1))).timestamp())
    years, month = divmod(start.month - 1 + count * (12 if interval == "year" else 1), 12)
    year = start.year + years
    day = min(start.day, calendar.monthrange(year, month + 1)[1])
    return int(start.replace(year=year, month=month + 1, day=day).timestamp())


class FakeStripe:
    """A Stripe API double. Use as `async with FakeStripe() as fake:`, or for sync tests and
    servers under test in other processes `fake = FakeStripe().start_in_thread()` ...
    `fake.stop_thread()`. Controls raise ValueError where Stripe would refuse."""

    def __init__(
        self,
        spec_dir: Path = DEFAULT_SPEC_DIR,
        *,
        secret_keys: tuple[str, ...] = ("sk_test_fake",),
        api_version: str = stripe.api_version,
    ):
        self._spec = _spec(Path(spec_dir))
        self._fixtures = load_fixtures(Path(spec_dir))
        self.secret_keys = secret_keys
        self.api_version = api_version  # stamped on events, as an account's default version is
        self.requests: list[RecordedRequest] = []
        self.events: list[dict[str, Any]] = []
        self._objects: dict[str, dict[str, Any]] = {}  # every object by id, in creation order
        self._line_items: dict[str, list[dict[str, Any]]] = {}  # by session / payment link id
        self._sales: dict[str, _Sale] = {}  # by session id
        self._idempotent: dict[tuple[str, str], _SavedResponse] = {}  # by (secret key, idempotency key)
        self._faults: list[_Fault] = []
        self._latency = 0.0
        self._request_context: dict[str, str | None] | None = None
        # Handlers and controls may run on different threads (start_in_thread); neither awaits
        # while holding this, so it never blocks the server's loop for long.
        self._lock = threading.RLock()
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        handlers = (
            self._create_product,
            self._retrieve("product"),
            self._create_price,
            self._list_prices,
            self._retrieve("price"),
            self._create_checkout_session,
            self._list_checkout_sessions,
            self._retrieve("checkout.session"),
            self._expire_checkout_session,
            self._list_session_line_items,
            self._create_payment_link,
            self._list_payment_links,
            self._retrieve("payment_link"),
            self._update_payment_link,
            self._retrieve("subscription"),
            self._delete_subscription,
            self._retrieve("invoice"),
            self._retrieve("payment_intent"),
            self._retrieve("charge"),
            self._create_refund,
            self._list_refunds,
            self._retrieve("refund"),
            self._retrieve("event"),
        )
        self._routes: dict[tuple[str, str], Callable[..., dict[str, Any]]] = dict(zip(SERVED_OPERATIONS, handlers, strict=True))

    # --- lifecycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self._port is None:
            raise RuntimeError("FakeStripe is not started")
        return f"http://127.0.0.1:{self._port}"

    @property
    def secret_key(self) -> str:
        return self.secret_keys[0]

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self._port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = self._port = None

    async def __aenter__(self) -> FakeStripe:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def start_in_thread(self) -> FakeStripe:
        """Serves from a background thread with its own event loop; returns self."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="FakeStripe", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.start(), self._loop).result(timeout=30)
        return self

    def stop_thread(self) -> None:
        if self._loop is None or self._thread is None:
            return
        asyncio.run_coroutine_threadsafe(self.stop(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()
        self._loop = self._thread = None

    def __enter__(self) -> FakeStripe:
        return self.start_in_thread()

    def __exit__(self, *exc_info: object) -> None:
        self.stop_thread()

    # --- test controls -------------------------------------------------------------------

    def get(self, object_id: str) -> dict[str, Any]:
        """A copy of any object the fake holds (session, payment intent, event, ...)."""
        with self._lock:
            return copy.deepcopy(self._objects[object_id])

    def fail_next(self, n: int = 1, status: int = 500, path_prefix: str | None = None) -> None:
        """The next n requests (to paths starting with path_prefix) fail with status, before
        auth and idempotency, as a failure in front of the API would: nothing is saved."""
        if status != 429 and status < 500:
            raise ValueError("fail_next simulates 429 or 5xx answers")
        with self._lock:
            self._faults.append(_Fault(n, status, path_prefix))

    def set_latency(self, seconds: float) -> None:
        """Delays every answer from now on, e.g. to exercise the service's timeouts."""
        self._latency = seconds

    def complete_session(self, session_id: str, paid: bool = True) -> list[dict[str, Any]]:
        """The customer finishes Checkout. paid=False is a delayed payment method (bank debit):
        the session completes unpaid and `async_payment_result` settles it later."""
        with self._control():
            return self._complete_session(self._find("checkout.session", session_id), paid)

    def async_payment_result(self, session_id: str, succeeded: bool) -> list[dict[str, Any]]:
        """A delayed payment (see complete_session) succeeds or fails."""
        with self._control():
            session = self._find("checkout.session", session_id)
            invoice = self._objects.get(session["invoice"] or "")
            intent = self._objects.get((invoice or session)["payment_intent"] or "")
            if intent is None or intent["status"] != "processing":
                raise _invalid(f"{session_id} has no payment awaiting its result")
            if invoice is not None:
                self._settle_invoice(invoice, succeeded)
                self._objects[session["subscription"]]["status"] = "active" if succeeded else "incomplete"
            else:
                self._settle_payment(intent, succeeded)
            session["payment_status"] = "paid" if succeeded else "unpaid"
            outcome = "succeeded" if succeeded else "failed"
            events = [self._emit(f"checkout.session.async_payment_{outcome}", session)]
            if invoice is not None:
                events.append(self._emit("invoice.paid" if succeeded else "invoice.payment_failed", invoice))
            return events

    def expire_session(self, session_id: str) -> list[dict[str, Any]]:
        with self._control():
            return [self._expire_session(self._find("checkout.session", session_id))]

    def pay_payment_link(self, payment_link_id: str, paid: bool = True) -> list[dict[str, Any]]:
        """A customer pays a link: a session is created from it (its metadata, payment_intent_data
        and subscription_data carried over, as Stripe does) and completed."""
        with self._control():
            link = self._find("payment_link", payment_link_id)
            if not link["active"]:
                raise _invalid(f"{payment_link_id} is inactive: customers cannot pay it")
            line_items = self._line_items[link["id"]]
            recurring = any(item["price"]["type"] == "recurring" for item in line_items)
            session = self._new_session(
                mode="subscription" if recurring else "payment",
                line_items=copy.deepcopy(line_items),
                metadata=link["metadata"],
                sale_data={
                    "payment_intent_data": link["payment_intent_data"] or {},
                    "subscription_data": link["subscription_data"] or {},
                },
                payment_link=link["id"],
                success_url=(link["after_completion"].get("redirect") or {}).get("url"),
            )
            return self._complete_session(session, paid)

    def renew_subscription(self, subscription_id: str, succeeded: bool = True) -> list[dict[str, Any]]:
        """A billing period ends: a new invoice is paid, or its payment fails (past_due)."""
        with self._control():
            subscription = self._find("subscription", subscription_id)
            if subscription["status"] not in ("active", "past_due"):
                raise _invalid(f"{subscription_id} is {subscription['status']}: it does not renew")
            price = subscription["items"]["data"][0]["price"]
            start = subscription["current_period_end"]
            end = _add_interval(start, price["recurring"]["interval"], price["recurring"]["interval_count"])
            subscription.update(current_period_start=start, current_period_end=end)
            for item in subscription["items"]["data"]:
                item.update(current_period_start=start, current_period_end=end)
            invoice = self._new_invoice(subscription, "subscription_cycle", succeeded)
            subscription["status"] = "active" if succeeded else "past_due"
            return [self._emit("invoice.paid" if succeeded else "invoice.payment_failed", invoice)]

    def cancel_subscription(self, subscription_id: str) -> list[dict[str, Any]]:
        """Stripe ends a subscription (e.g. after its failed payment retries run out)."""
        with self._control():
            subscription = self._find("subscription", subscription_id)
            return [self._cancel_subscription(subscription, {}, reason="payment_failed")]

    def refund(
        self,
        payment_intent: str | None = None,
        charge: str | None = None,
        amount: int | None = None,
        reason: str | None = None,
    ) -> list[dict[str, Any]]:
        """A refund made outside the service (e.g. in the dashboard)."""
        params = {"payment_intent": payment_intent, "charge": charge, "amount": amount, "reason": reason}
        with self._control():
            _, events = self._refund({k: v for k, v in params.items() if v is not None})
            return events

    def fail_refund(self, refund_id: str, failure_reason: str = "expired_or_canceled_card") -> list[dict[str, Any]]:
        """The bank returns a refund that had succeeded: the money is the merchant's again."""
        with self._control():
            refund = self._find("refund", refund_id)
            if refund["status"] != "succeeded":
                raise _invalid(f"{refund_id} is {refund['status']}, not succeeded")
            charge = self._objects[refund["charge"]]
            charge["amount_refunded"] -= refund["amount"]
            charge["refunded"] = False
            refund.update(status="failed", failure_reason=failure_reason)
            return [self._emit("refund.updated", refund, {"status": "succeeded", "failure_reason": None})]

    def create_dispute(
        self,
        payment_intent: str | None = None,
        charge: str | None = None,
        amount: int | None = None,
        reason: str = "fraudulent",
    ) -> list[dict[str, Any]]:
        """The customer's bank disputes a charge."""
        with self._control():
            disputed = self._refundable_charge({"payment_intent": payment_intent} if payment_intent else {"charge": charge})
            dispute = self._store(
                self._fixture(
                    "dispute",
                    id=_new_id("dp"),
                    amount=disputed["amount"] if amount is None else amount,
                    charge=disputed["id"],
                    payment_intent=disputed["payment_intent"],
                    currency=disputed["currency"],
                    reason=reason,
                    status="needs_response",
                    is_charge_refundable=False,
                    evidence_details={
                        "due_by": _now() + 7 * _DAY,
                        "has_evidence": False,
                        "past_due": False,
                        "submission_count": 0,
                    },
                )
            )
            disputed.update(disputed=True, dispute=dispute["id"])
            return [self._emit("charge.dispute.created", dispute)]

    @contextmanager
    def _control(self) -> Iterator[None]:
        with self._lock:
            try:
                yield
            except _StripeError as error:
                raise ValueError(error.body["error"]["message"]) from None

    # --- HTTP plumbing -------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self._latency:
            await asyncio.sleep(self._latency)
        recorded = RecordedRequest(request.method, request.path, {}, request.headers)
        with self._lock:
            self.requests.append(recorded)
            status, payload, headers = self._respond(recorded, request.query_string, body)
            recorded.status = status
        if status == 501:  # a gap in the fake: retrying cannot help
            headers["Stripe-Should-Retry"] = "false"
        return web.json_response(payload, status=status, headers=headers, dumps=lambda o: json.dumps(o, indent=2))

    def _respond(self, recorded: RecordedRequest, query: str, body: bytes) -> tuple[int, dict[str, Any], dict[str, str]]:
        request_id = _new_id("req", 14)
        headers = {"Request-Id": request_id, "Stripe-Version": recorded.stripe_version or self.api_version}
        fault = self._take_fault(recorded.path)
        if fault is not None:
            return fault.status, fault.body, headers
        pairs = parse_qsl(query, keep_blank_values=True) + parse_qsl(body.decode("utf-8"), keep_blank_values=True)
        try:
            recorded.params, malformed = decode_form(pairs), None
        except ParamError as error:
            malformed = error
        try:
            api_key = self._authenticate(recorded.headers.get("Authorization"))
            operation, path_params = self._operation(recorded.method, recorded.path)
            if malformed is not None:
                raise malformed
            params = operation.check(recorded.params)
            recorded.params = params
            handler = self._routes.get((operation.method, operation.path))
            if handler is None:
                raise _StripeError(501, "api_error", f"FakeStripe does not implement {recorded.method} {operation.path} yet")
        except ParamError as error:
            return 400, _invalid(error.message, error.param).body, headers
        except _StripeError as error:
            return error.status, error.body, headers

        key = recorded.idempotency_key if recorded.method == "POST" else None
        if key is not None and (saved := self._idempotent.get((api_key, key))) is not None:
            return self._replay(saved, recorded, params, key, headers)
        self._request_context = {"id": request_id, "idempotency_key": key}
        try:  # handlers get a copy: the recorded and saved params must stay as sent
            status, payload = 200, handler(copy.deepcopy(params), **path_params)
        except _StripeError as error:
            status, payload = error.status, error.body
        finally:
            self._request_context = None
        if key is not None:  # Stripe saves whatever the endpoint answered, errors included
            self._idempotent[(api_key, key)] = _SavedResponse(recorded.method, recorded.path, params, status, payload, request_id)
        return status, payload, headers

    def _replay(
        self, saved: _SavedResponse, recorded: RecordedRequest, params: dict[str, Any], key: str, headers: dict[str, str]
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        if (saved.method, saved.path) != (recorded.method, recorded.path):
            message = (
                f"Keys for idempotent requests can only be used for the same endpoint they were first used for "
                f"('{saved.method} {saved.path}' vs '{recorded.method} {recorded.path}'). "
                f"Try using a key other than '{key}' if you meant to execute a different request."
            )
            return 400, _StripeError(400, "idempotency_error", message).body, headers
        if saved.params != params:
            message = (
                "Keys for idempotent requests can only be used with the same parameters they were first used with. "
                f"Try using a key other than '{key}' if you meant to execute a different request."
            )
            return 400, _StripeError(400, "idempotency_error", message).body, headers
        recorded.replayed = True
        headers.update({"Idempotent-Replayed": "true", "Original-Request": saved.request_id})
        return saved.status, saved.body, headers

    def _take_fault(self, path: str) -> _StripeError | None:
        for fault in self._faults:
            if fault.path_prefix is None or path.startswith(fault.path_prefix):
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._faults.remove(fault)
                if fault.status == 429:
                    return _invalid(
                        "Request rate limit exceeded. You can learn more about rate limits here "
                        "https://stripe.com/docs/rate-limits.",
                        code="rate_limit",
                        status=429,
                    )
                return _StripeError(fault.status, "api_error", "An unknown error occurred (injected by FakeStripe).")
        return None

    def _authenticate(self, authorization: str | None) -> str:
        if not authorization or not authorization.startswith("Bearer "):
            raise _StripeError(
                401,
                "authentication_error",
                "You did not provide an API key. You need to provide your API key in the Authorization header, "
                "using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').",
            )
        key = authorization.removeprefix("Bearer ").strip()
        if key not in self.secret_keys:
            raise _StripeError(401, "authentication_error", f"Invalid API Key provided: {key[:8]}****{key[-4:]}")
        return key

    def _operation(self, method: str, path: str) -> tuple[Operation, dict[str, str]]:
        found = self._spec.match(method, path)
        if found is None:
            raise _invalid(
                f"Unrecognized request URL ({method}: {path}). Please see https://stripe.com/docs "
                "or we can help at https://support.stripe.com/.",
                status=404,
            )
        return found

    # --- object plumbing -----------------------------------------------------------------

    def _fixture(self, kind: str, **fields: Any) -> dict[str, Any]:
        obj = copy.deepcopy(self._fixtures[kind])
        for key, value in (("livemode", False), ("created", _now())):
            if key in obj:
                obj[key] = value
        obj.update(fields)
        return obj

    def _store(self, obj: dict[str, Any]) -> dict[str, Any]:
        self._objects[obj["id"]] = obj
        return obj

    def _find(self, kind: str, object_id: str, param: str = "id", status: int = 404) -> dict[str, Any]:
        obj = self._objects.get(object_id)
        if obj is None or obj["object"] != kind:
            raise _invalid(f"No such {kind}: '{object_id}'", param, "resource_missing", status)
        return obj

    def _emit(self, type_: str, obj: dict[str, Any], previous_attributes: dict[str, Any] | None = None) -> dict[str, Any]:
        data: dict[str, Any] = {"object": copy.deepcopy(obj)}
        if previous_attributes is not None:
            data["previous_attributes"] = previous_attributes
        event = self._store(
            self._fixture(
                "event",
                id=_new_id("evt"),
                api_version=self.api_version,
                type=type_,
                data=data,
                pending_webhooks=1,
                request=dict(self._request_context or {"id": None, "idempotency_key": None}),
            )
        )
        self.events.append(event)
        return copy.deepcopy(event)

    def _render(self, obj: dict[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
        rendered = copy.deepcopy(obj)
        for path in params.get("expand", []):
            self._expand(rendered, path.split("."), path)
        return rendered

    def _expand(self, node: dict[str, Any], parts: list[str], path: str) -> None:
        head, rest = parts[0], parts[1:]
        if head == "line_items" and node.get("id") in self._line_items:  # only ever sent expanded
            base = "checkout/sessions" if node["object"] == "checkout.session" else "payment_links"
            node["line_items"] = self._page(self._line_items[node["id"]], {}, f"/v1/{base}/{node['id']}/line_items")
        value = node.get(head)
        if isinstance(value, str) and value in self._objects:
            node[head] = value = copy.deepcopy(self._objects[value])
        elif not (isinstance(value, (dict, list)) or (value is None and head in node)):
            raise _invalid(f"This property cannot be expanded ({path}).", "expand")
        if rest and value is not None:
            for child in value if isinstance(value, list) else [value]:
                self._expand(child, rest, path)

    def _page(self, items: list[dict[str, Any]], params: Mapping[str, Any], url: str) -> dict[str, Any]:
        limit = params.get("limit", 10)
        if not 1 <= limit <= 100:
            raise _invalid("Invalid limit: must be between 1 and 100", "limit")
        ids = [item["id"] for item in items]
        for cursor in ("starting_after", "ending_before"):
            if cursor in params and params[cursor] not in ids:
                raise _invalid(f"No such object: '{params[cursor]}'", cursor, "resource_missing", 404)
        if "ending_before" in params:
            end = ids.index(params["ending_before"])
            page, has_more = items[max(0, end - limit) : end], end > limit
        else:
            start = ids.index(params["starting_after"]) + 1 if "starting_after" in params else 0
            page, has_more = items[start : start + limit], len(items) > start + limit
        return self._render({"object": "list", "data": page, "has_more": has_more, "url": url}, params)

    def _list(self, kind: str, params: Mapping[str, Any], url: str, filters: Mapping[str, str]) -> dict[str, Any]:
        """Newest first, as Stripe lists. `filters` maps supported query params to fields."""
        unsupported = set(params) - set(filters) - {"limit", "starting_after", "ending_before", "expand"}
        if unsupported:
            raise _StripeError(501, "api_error", f"FakeStripe does not filter {url} by {sorted(unsupported)}")
        items = [
            obj
            for obj in reversed(self._objects.values())
            if obj["object"] == kind
            and all(
                obj[field_] in params[name] if isinstance(params[name], list) else obj[field_] == params[name]
                for name, field_ in filters.items()
                if name in params
            )
        ]
        return self._page(items, params, url)

    def _retrieve(self, kind: str) -> Callable[..., dict[str, Any]]:
        def retrieve(params: dict[str, Any], **path: str) -> dict[str, Any]:
            ((param, object_id),) = path.items()
            return self._render(self._find(kind, object_id, param), params)

        return retrieve

    # --- products and prices -------------------------------------------------------------

    def _create_product(self, params: dict[str, Any]) -> dict[str, Any]:
        product_id = params.get("id") or _new_id("prod", 14)
        if product_id in self._objects:
            raise _invalid("Product already exists.", "id", "resource_already_exists")
        return self._render(self._new_product(params, product_id), params)

    def _new_product(self, params: Mapping[str, Any], product_id: str | None = None) -> dict[str, Any]:
        product = self._fixture(
            "product",
            id=product_id or _new_id("prod", 14),
            name=params["name"],
            active=params.get("active", True),
            metadata=_metadata(params.get("metadata")),
            description=None,
            updated=_now(),
        )
        echoed = ("description", "images", "shippable", "statement_descriptor", "tax_code", "unit_label", "url")
        product.update((k, params[k]) for k in echoed if k in params)
        return self._store(product)

    def _create_price(self, params: dict[str, Any]) -> dict[str, Any]:
        if "product" in params:
            product_id = self._find("product", params["product"], "product", 400)["id"]
        elif "product_data" in params:
            product_id = self._new_product(params["product_data"])["id"]
        else:
            raise _invalid("You must specify either `product` or `product_data` when creating a price.", "product")
        lookup_key = params.get("lookup_key")
        if lookup_key:
            holder = next((p for p in self._objects.values() if p["object"] == "price" and p["lookup_key"] == lookup_key), None)
            if holder is not None and not params.get("transfer_lookup_key"):
                raise _invalid(f"A price (`{holder['id']}`) already uses that lookup key.", "lookup_key")
            if holder is not None:
                holder["lookup_key"] = None
        price = self._new_price(params, product_id, active=params.get("active", True))
        price.update(lookup_key=lookup_key, nickname=params.get("nickname"))
        return self._render(price, params)

    def _new_price(self, params: Mapping[str, Any], product_id: str, active: bool, param: str = "") -> dict[str, Any]:
        if "unit_amount" in params:
            unit_amount = params["unit_amount"]
        elif "unit_amount_decimal" in params:
            unit_amount = int(float(params["unit_amount_decimal"]))
        else:
            name = f"{param}[unit_amount]" if param else "unit_amount"
            raise _invalid(f"Missing required param: {name}.", name)
        _check_amount(unit_amount, params["currency"].lower(), f"{param}[unit_amount]" if param else "unit_amount")
        recurring = params.get("recurring")
        if recurring is not None:
            recurring = {
                "aggregate_usage": None,
                "interval": recurring["interval"],
                "interval_count": recurring.get("interval_count", 1),
                "usage_type": recurring.get("usage_type", "licensed"),
            }
        return self._store(
            self._fixture(
                "price",
                id=_new_id("price"),
                active=active,
                currency=params["currency"].lower(),
                product=product_id,
                unit_amount=unit_amount,
                unit_amount_decimal=str(unit_amount),
                recurring=recurring,
                type="one_time" if recurring is None else "recurring",
                tax_behavior=params.get("tax_behavior", "unspecified"),
                metadata=_metadata(params.get("metadata")),
                lookup_key=None,
                nickname=None,
            )
        )

    def _list_prices(self, params: dict[str, Any]) -> dict[str, Any]:
        filters = {"active": "active", "currency": "currency", "product": "product", "type": "type", "lookup_keys": "lookup_key"}
        return self._list("price", params, "/v1/prices", filters)

    def _line_item(self, item: Mapping[str, Any], param: str) -> dict[str, Any]:
        """A checkout / payment link line item; price_data makes an inactive ad-hoc price."""
        if "price" in item:
            price = self._find("price", item["price"], f"{param}[price]", 400)
            if not price["active"]:
                raise _invalid("The price specified is inactive. This field only accepts active prices.", f"{param}[price]")
        elif "price_data" in item:
            data = item["price_data"]
            if "product" in data:
                product_id = self._find("product", data["product"], f"{param}[price_data][product]", 400)["id"]
            elif "product_data" in data:
                product_id = self._new_product(data["product_data"])["id"]
            else:
                raise _invalid(
                    f"You must specify either `product` or `product_data` in `{param}[price_data]`.", f"{param}[price_data]"
                )
            price = self._new_price(data, product_id, active=False, param=f"{param}[price_data]")
        else:
            raise _invalid(f"You must specify either `price` or `price_data` in `{param}`.", param)
        if "quantity" not in item:
            raise _invalid(f"Quantity is required. Add `quantity` to `{param}`", f"{param}[quantity]")
        amount = price["unit_amount"] * item["quantity"]
        return self._fixture(
            "item",
            id=_new_id("li"),
            price=copy.deepcopy(price),
            quantity=item["quantity"],
            currency=price["currency"],
            description=self._objects[price["product"]]["name"],
            amount_subtotal=amount,
            amount_total=amount,
            amount_discount=0,
            amount_tax=0,
        )

    def _line_items_from(self, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        items = [self._line_item(item, f"line_items[{i}]") for i, item in enumerate(params.get("line_items", []))]
        if len({item["currency"] for item in items}) > 1:
            raise _invalid("All prices must use the same currency.", "line_items")
        return items

    # --- checkout sessions ---------------------------------------------------------------

    def _create_checkout_session(self, params: dict[str, Any]) -> dict[str, Any]:
        mode = params["mode"]
        line_items = self._line_items_from(params)
        if mode != "setup" and not line_items:
            raise _invalid(f"`line_items` is required in `{mode}` mode.", "line_items")
        recurring = [item for item in line_items if item["price"]["type"] == "recurring"]
        if mode == "payment" and recurring:
            raise _invalid(
                "You specified `payment` mode but passed a recurring price. Either switch to `subscription` mode "
                "or use only one-time prices.",
                "line_items",
            )
        if mode == "subscription" and not recurring:
            raise _invalid(
                "You must provide at least one recurring price in `subscription` mode when using prices.", "line_items"
            )
        for data, only_in in (("payment_intent_data", "payment"), ("subscription_data", "subscription")):
            if data in params and mode != only_in:
                raise _invalid(f"You can not pass `{data}` in `{mode}` mode.", data)
        now = _now()
        expires_at = params.get("expires_at", now + _DAY)
        if not now + 1800 <= expires_at <= now + _DAY:
            raise _invalid(
                "The `expires_at` timestamp must be between 30 minutes and 24 hours from Checkout Session creation.", "expires_at"
            )
        session = self._new_session(
            mode=mode,
            line_items=line_items,
            metadata=params.get("metadata"),
            sale_data=params,
            expires_at=expires_at,
            success_url=params.get("success_url"),
            cancel_url=params.get("cancel_url"),
            client_reference_id=params.get("client_reference_id"),
            customer=params.get("customer"),
            customer_email=params.get("customer_email"),
            payment_method_types=params.get("payment_method_types", ["card"]),
            **{
                k: params[k]
                for k in ("allow_promotion_codes", "billing_address_collection", "customer_creation", "locale", "submit_type")
                if k in params
            },
        )
        return self._render(session, params)

    def _new_session(
        self,
        mode: str,
        line_items: list[dict[str, Any]],
        metadata: Any,
        sale_data: Mapping[str, Any],
        payment_link: str | None = None,
        expires_at: int | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        session_id = f"cs_test_a1{_random(56)}"
        amount = sum(item["amount_total"] for item in line_items)
        session = self._store(
            self._fixture(
                "checkout.session",
                id=session_id,
                url=f"https://checkout.stripe.com/c/pay/{session_id}",
                status="open",
                payment_status="unpaid",
                mode=mode,
                metadata=_metadata(metadata),
                expires_at=expires_at or _now() + _DAY,
                currency=line_items[0]["currency"] if line_items else None,
                amount_subtotal=amount,
                amount_total=amount,
                total_details={"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
                payment_intent=None,
                subscription=None,
                invoice=None,
                payment_link=payment_link,
                ui_mode="hosted",
                created=_now(),
                **fields,
            )
        )
        self._line_items[session_id] = line_items
        self._sales[session_id] = _Sale(
            line_items,
            payment_intent_data=copy.deepcopy(sale_data.get("payment_intent_data", {})),
            subscription_data=copy.deepcopy(sale_data.get("subscription_data", {})),
        )
        return session

    def _list_checkout_sessions(self, params: dict[str, Any]) -> dict[str, Any]:
        filters = {
            "payment_link": "payment_link",
            "payment_intent": "payment_intent",
            "subscription": "subscription",
            "status": "status",
        }
        return self._list("checkout.session", params, "/v1/checkout/sessions", filters)

    def _list_session_line_items(self, params: dict[str, Any], session: str) -> dict[str, Any]:
        self._find("checkout.session", session, "session")
        return self._page(self._line_items[session], params, f"/v1/checkout/sessions/{session}/line_items")

    def _expire_checkout_session(self, params: dict[str, Any], session: str) -> dict[str, Any]:
        found = self._find("checkout.session", session, "session")
        self._expire_session(found)
        return self._render(found, params)

    def _expire_session(self, session: dict[str, Any]) -> dict[str, Any]:
        if session["status"] != "open":
            raise _invalid(
                f'Only Checkout Sessions with a status in ["open"] can be expired. '
                f'This Checkout Session has a status of "{session["status"]}".'
            )
        session.update(status="expired", url=None)
        return self._emit("checkout.session.expired", session)

    def _complete_session(self, session: dict[str, Any], paid: bool) -> list[dict[str, Any]]:
        if session["status"] != "open":
            raise _invalid(f"{session['id']} is {session['status']}: only open sessions can be completed")
        sale = self._sales[session["id"]]
        customer = session["customer"] or _new_id("cus", 14)
        session.update(
            status="complete",
            url=None,
            customer=customer,
            customer_details={
                "address": None,
                "email": session["customer_email"] or "customer@example.com",
                "name": "Jenny Rosen",
                "phone": None,
                "tax_exempt": "none",
                "tax_ids": [],
            },
        )
        outcome = True if paid else None  # unpaid: a delayed payment method, still processing
        invoice = None
        if session["mode"] == "setup" or (session["mode"] == "payment" and session["amount_total"] == 0):
            session["payment_status"] = "no_payment_required"
        elif session["mode"] == "subscription":
            subscription = self._new_subscription(customer, sale, active=paid)
            invoice = self._new_invoice(subscription, "subscription_create", outcome, sale.line_items)
            session.update(subscription=subscription["id"], invoice=invoice["id"])
            session["payment_status"] = "paid" if paid else "unpaid"
        else:
            intent = self._new_payment_intent(
                session["amount_total"],
                session["currency"],
                customer,
                outcome,
                metadata=_metadata(sale.payment_intent_data.get("metadata")),
                description=sale.payment_intent_data.get("description"),
            )
            session.update(payment_intent=intent["id"], payment_status="paid" if paid else "unpaid")
        self._count_link_completion(session["payment_link"])
        events = [self._emit("checkout.session.completed", session)]
        if invoice is not None and paid:
            events.append(self._emit("invoice.paid", invoice))
        return events

    def _count_link_completion(self, payment_link_id: str | None) -> None:
        link = self._objects.get(payment_link_id or "")
        if link is None or not link["restrictions"]:
            return
        completed = link["restrictions"]["completed_sessions"]
        completed["count"] += 1
        if completed["count"] >= completed["limit"]:
            link["active"] = False  # Stripe deactivates a link whose restriction is met

    # --- payment links -------------------------------------------------------------------

    def _create_payment_link(self, params: dict[str, Any]) -> dict[str, Any]:
        line_items = self._line_items_from(params)
        after_completion = params.get("after_completion") or {"type": "hosted_confirmation"}
        if after_completion["type"] not in after_completion:
            name = f"after_completion[{after_completion['type']}]"
            if after_completion["type"] == "redirect":
                raise _invalid(f"Missing required param: {name}.", name)
            after_completion[after_completion["type"]] = {"custom_message": None}
        link_id = _new_id("plink")
        link = self._store(
            self._fixture(
                "payment_link",
                id=link_id,
                active=True,
                url=f"https://buy.stripe.com/test_{_random(14)}",
                currency=line_items[0]["currency"],
                metadata=_metadata(params.get("metadata")),
                after_completion=after_completion,
                restrictions=self._restrictions(params.get("restrictions")),
                inactive_message=params.get("inactive_message"),
                payment_intent_data=(
                    {"metadata": _metadata(params["payment_intent_data"].get("metadata"))}
                    if "payment_intent_data" in params
                    else None
                ),
                subscription_data=(
                    {
                        "metadata": _metadata(params["subscription_data"].get("metadata")),
                        "trial_period_days": params["subscription_data"].get("trial_period_days"),
                    }
                    if "subscription_data" in params
                    else None
                ),
                **{k: params[k] for k in ("allow_promotion_codes", "billing_address_collection") if k in params},
            )
        )
        self._line_items[link_id] = line_items
        return self._render(link, params)

    @staticmethod
    def _restrictions(requested: Any, current: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
        if not requested:
            return None
        count = current["completed_sessions"]["count"] if current else 0
        return {"completed_sessions": {"count": count, "limit": requested["completed_sessions"]["limit"]}}

    def _update_payment_link(self, params: dict[str, Any], payment_link: str) -> dict[str, Any]:
        link = self._find("payment_link", payment_link, "payment_link")
        if "line_items" in params:
            raise _StripeError(501, "api_error", "FakeStripe does not update payment link line_items")
        if "metadata" in params:
            link["metadata"] = _metadata(params["metadata"], link["metadata"])
        if "restrictions" in params:
            link["restrictions"] = self._restrictions(params["restrictions"], link["restrictions"])
        if "inactive_message" in params:
            link["inactive_message"] = params["inactive_message"] or None
        link.update(
            {
                k: params[k]
                for k in ("active", "after_completion", "allow_promotion_codes", "billing_address_collection")
                if k in params
            }
        )
        return self._render(link, params)

    def _list_payment_links(self, params: dict[str, Any]) -> dict[str, Any]:
        return self._list("payment_link", params, "/v1/payment_links", {"active": "active"})

    # --- payments: intents, charges, subscriptions, invoices -----------------------------

    def _new_payment_intent(
        self,
        amount: int,
        currency: str,
        customer: str,
        succeeded: bool | None,
        metadata: dict[str, str],
        description: str | None,
        invoice: str | None = None,
    ) -> dict[str, Any]:
        """A PaymentIntent with its charge. succeeded=None: still processing."""
        intent_id = _new_id("pi")
        charge = self._store(
            self._fixture(
                "charge",
                id=_new_id("ch"),
                amount=amount,
                amount_captured=0,
                amount_refunded=0,
                captured=False,
                refunded=False,
                disputed=False,
                currency=currency,
                customer=customer,
                description=description,
                invoice=invoice,
                metadata=dict(metadata),  # Stripe copies the intent's metadata onto its charges
                payment_intent=intent_id,
                status="pending",
                paid=False,
                balance_transaction=_new_id("txn"),
            )
        )
        del charge["refunds"]  # since API 2022-11-15, only sent when expanded
        intent = self._store(
            self._fixture(
                "payment_intent",
                id=intent_id,
                amount=amount,
                amount_received=0,
                currency=currency,
                customer=customer,
                description=description,
                invoice=invoice,
                metadata=metadata,
                status="processing",
                canceled_at=None,
                client_secret=f"{intent_id}_secret_{_random(25)}",
                payment_method=_new_id("pm"),
                latest_charge=charge["id"],
            )
        )
        del intent["charges"]  # replaced by latest_charge in API 2022-11-15
        if succeeded is not None:
            self._settle_payment(intent, succeeded)
        return intent

    def _settle_payment(self, intent: dict[str, Any], succeeded: bool) -> None:
        charge = self._objects[intent["latest_charge"]]
        if succeeded:
            charge.update(status="succeeded", paid=True, captured=True, amount_captured=charge["amount"])
            intent.update(status="succeeded", amount_received=intent["amount"], last_payment_error=None)
        else:
            decline = {
                "code": "card_declined",
                "decline_code": "generic_decline",
                "message": "Your card was declined.",
                "type": "card_error",
            }
            charge.update(status="failed", failure_code="card_declined", failure_message=decline["message"])
            intent.update(status="requires_payment_method", last_payment_error=decline)

    def _new_subscription(self, customer: str, sale: _Sale, active: bool) -> dict[str, Any]:
        subscription_id = _new_id("sub")
        recurring = [item for item in sale.line_items if item["price"]["type"] == "recurring"]
        interval = recurring[0]["price"]["recurring"]
        start = _now()
        end = _add_interval(start, interval["interval"], interval["interval_count"])
        items = [
            self._fixture(
                "subscription_item",
                id=_new_id("si", 14),
                price=copy.deepcopy(item["price"]),
                quantity=item["quantity"],
                subscription=subscription_id,
                current_period_start=start,  # where newer API versions keep the period
                current_period_end=end,
            )
            for item in recurring
        ]
        return self._store(
            self._fixture(
                "subscription",
                id=subscription_id,
                customer=customer,
                status="active" if active else "incomplete",
                currency=recurring[0]["currency"],
                metadata=_metadata(sale.subscription_data.get("metadata")),
                items={
                    "object": "list",
                    "data": items,
                    "has_more": False,
                    "total_count": len(items),
                    "url": f"/v1/subscription_items?subscription={subscription_id}",
                },
                start_date=start,
                billing_cycle_anchor=start,
                current_period_start=start,
                current_period_end=end,
                cancel_at=None,
                canceled_at=None,
                ended_at=None,
                trial_start=None,
                trial_end=None,
                latest_invoice=None,
                next_pending_invoice_item_invoice=None,
                cancellation_details={"comment": None, "feedback": None, "reason": None},
            )
        )

    def _new_invoice(
        self,
        subscription: dict[str, Any],
        billing_reason: str,
        succeeded: bool | None,
        first_items: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """An invoice for the current period of a subscription, paid through a new PaymentIntent.
        The first invoice also carries the checkout session's one-time items."""
        invoice_id = _new_id("in")
        period = {"start": subscription["current_period_start"], "end": subscription["current_period_end"]}
        template = self._fixtures["invoice"]["lines"]["data"][0]
        sold = first_items or [
            {
                "price": item["price"],
                "quantity": item["quantity"],
                "amount_total": item["price"]["unit_amount"] * item["quantity"],
            }
            for item in subscription["items"]["data"]
        ]
        lines = [
            {
                **copy.deepcopy(template),
                "id": _new_id("il"),
                "amount": item["amount_total"],
                "currency": subscription["currency"],
                "description": f"{item['quantity']} × {self._objects[item['price']['product']]['name']}",
                "invoice_item": None,
                "metadata": dict(subscription["metadata"]),
                "period": period,
                "price": copy.deepcopy(item["price"]),
                "quantity": item["quantity"],
                "subscription": subscription["id"],
                "type": "subscription" if item["price"]["type"] == "recurring" else "invoiceitem",
            }
            for item in sold
        ]
        amount = sum(line["amount"] for line in lines)
        intent = self._new_payment_intent(
            amount,
            subscription["currency"],
            subscription["customer"],
            None,
            metadata={},  # Stripe does not copy subscription metadata onto invoice payments
            description="Subscription creation" if billing_reason == "subscription_create" else "Subscription update",
            invoice=invoice_id,
        )
        details = {"metadata": dict(subscription["metadata"])}
        invoice = self._store(
            self._fixture(
                "invoice",
                id=invoice_id,
                number=f"{_random(8).upper()}-0001",
                customer=subscription["customer"],
                currency=subscription["currency"],
                billing_reason=billing_reason,
                subscription=subscription["id"],
                subscription_details=details,  # API versions of 2023-2024
                parent={  # API versions since 2025-03-31
                    "type": "subscription_details",
                    "quote_details": None,
                    "subscription_details": {**details, "subscription": subscription["id"]},
                },
                lines={
                    "object": "list",
                    "data": lines,
                    "has_more": False,
                    "total_count": len(lines),
                    "url": f"/v1/invoices/{invoice_id}/lines",
                },
                subtotal=amount,
                total=amount,
                amount_due=amount,
                amount_paid=0,
                amount_remaining=amount,
                period_start=period["start"],
                period_end=period["end"],
                payment_intent=intent["id"],
                charge=intent["latest_charge"],
                payments={
                    "object": "list",
                    "data": [
                        {
                            "object": "invoice_payment",
                            "id": _new_id("inpay"),
                            "invoice": invoice_id,
                            "status": "open",
                            "payment": {"type": "payment_intent", "payment_intent": intent["id"]},
                        }
                    ],
                    "has_more": False,
                    "url": f"/v1/invoice_payments?invoice={invoice_id}",
                },
                status="open",
                paid=False,
                auto_advance=False,
                attempted=succeeded is not None,
                attempt_count=int(succeeded is not None),
                due_date=None,
                next_payment_attempt=None,
                hosted_invoice_url=f"https://invoice.stripe.com/i/{invoice_id}",
                invoice_pdf=f"https://pay.stripe.com/invoice/{invoice_id}/pdf",
                status_transitions={"finalized_at": _now(), "marked_uncollectible_at": None, "paid_at": None, "voided_at": None},
            )
        )
        subscription["latest_invoice"] = invoice_id
        if succeeded is not None:
            self._settle_invoice(invoice, succeeded)
        return invoice

    def _settle_invoice(self, invoice: dict[str, Any], succeeded: bool) -> None:
        self._settle_payment(self._objects[invoice["payment_intent"]], succeeded)
        invoice.update(attempted=True, attempt_count=max(1, invoice["attempt_count"]))
        if succeeded:
            invoice.update(status="paid", paid=True, amount_paid=invoice["amount_due"], amount_remaining=0)
            invoice["status_transitions"]["paid_at"] = _now()
            invoice["payments"]["data"][0]["status"] = "paid"
        else:
            invoice["next_payment_attempt"] = _now() + 3 * _DAY  # Smart Retries would try again

    def _delete_subscription(self, params: dict[str, Any], subscription_exposed_id: str) -> dict[str, Any]:
        subscription = self._find("subscription", subscription_exposed_id, "subscription_exposed_id")
        self._cancel_subscription(subscription, params.get("cancellation_details", {}), reason="cancellation_requested")
        return self._render(subscription, params)

    def _cancel_subscription(self, subscription: dict[str, Any], details: Mapping[str, Any], reason: str) -> dict[str, Any]:
        if subscription["status"] in ("canceled", "incomplete_expired"):
            raise _invalid(f"Subscription {subscription['id']} is already canceled.")
        now = _now()
        subscription.update(
            status="canceled",
            canceled_at=now,
            ended_at=now,
            cancellation_details={
                "comment": details.get("comment") or None,
                "feedback": details.get("feedback") or None,
                "reason": reason,
            },
        )
        return self._emit("customer.subscription.deleted", subscription)

    # --- refunds -------------------------------------------------------------------------

    def _create_refund(self, params: dict[str, Any]) -> dict[str, Any]:
        refund, _ = self._refund(params)
        return self._render(refund, params)

    def _list_refunds(self, params: dict[str, Any]) -> dict[str, Any]:
        return self._list("refund", params, "/v1/refunds", {"charge": "charge", "payment_intent": "payment_intent"})

    def _refundable_charge(self, params: Mapping[str, Any]) -> dict[str, Any]:
        if "charge" in params:
            charge = self._find("charge", params["charge"], "charge", 400)
            if "payment_intent" in params and params["payment_intent"] != charge["payment_intent"]:
                raise _invalid(f"Charge {charge['id']} does not belong to PaymentIntent {params['payment_intent']}.", "charge")
        elif "payment_intent" in params:
            intent = self._find("payment_intent", params["payment_intent"], "payment_intent", 400)
            charge = self._objects[intent["latest_charge"]]
        else:
            raise _invalid("One of the following params should be provided for this request: payment_intent or charge.")
        if charge["status"] != "succeeded":
            raise _invalid(f"This charge ({charge['id']}) has not succeeded: there is nothing to refund or dispute.", "charge")
        return charge

    def _refund(self, params: Mapping[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        charge = self._refundable_charge(params)
        remaining = charge["amount"] - charge["amount_refunded"]
        if remaining == 0:
            raise _invalid(f"Charge {charge['id']} has already been refunded.", code="charge_already_refunded")
        amount = params.get("amount", remaining)
        if amount <= 0:
            raise _invalid("Invalid positive integer", "amount")
        _check_amount(amount, charge["currency"], "amount")
        if amount > remaining:
            what = "unrefunded amount on charge" if charge["amount_refunded"] else "charge amount"
            asked, left = _money(amount, charge["currency"]), _money(remaining, charge["currency"])
            raise _invalid(f"Refund amount ({asked}) is greater than {what} ({left})", "amount")
        refund = self._store(
            self._fixture(
                "refund",
                id=_new_id("re"),
                amount=amount,
                charge=charge["id"],
                payment_intent=charge["payment_intent"],
                currency=charge["currency"],
                reason=params.get("reason"),
                metadata=_metadata(params.get("metadata")),
                status="succeeded",
                failure_reason=None,
                balance_transaction=_new_id("txn"),
            )
        )
        previous = {"amount_refunded": charge["amount_refunded"], "refunded": charge["refunded"]}
        charge["amount_refunded"] += amount
        charge["refunded"] = charge["amount_refunded"] == charge["amount"]
        events = [self._emit("refund.created", refund), self._emit("charge.refunded", charge, previous)]
        return refund, events
