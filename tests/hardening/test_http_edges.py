"""Hostile and broken HTTP requests, each answered with a 4xx and the JSON error
shape, never a 500: deep JSON, unpaired surrogates and NUL in strings, undecodable
header bytes, huge ids, requests aiohttp's parser refuses, clients that hang up,
and Unicode case-folding that turned invalid input into valid-looking input."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from payments_svc.providers.sandbox.provider import sign
from tests.fakes.stripe_server import sign_event

from ..support import wait_until
from .conftest import (
    SANDBOX_SECRET,
    STRIPE_SECRET,
    metric_value,
    new_id,
    payment_body,
    raw_http,
    request_bytes,
)

DEEP_ARRAY = b"[" * 1000 + b"]" * 1000
DEEP_OBJECT = b'{"a":' * 1000 + b"1" + b"}" * 1000
CREATE_STRINGS = ["request_id", "caller_service", "resource_type", "resource_id", "customer_ref", "currency",
                  "recurring_interval", "status_callback_url", "success_url", "cancel_url"]
SURROGATE = "must be valid Unicode text (no unpaired surrogates such as \\ud800)"
NUL = "must not contain NUL characters"


def error(message: str, code: str = "invalid_argument", field: str | None = None) -> dict:
    return {"error": message, "code": code, **({"field": field} if field else {})}


class Http:
    def __init__(self, session: aiohttp.ClientSession, deployment):
        self.session, self.deployment = session, deployment

    async def call(self, method: str, path: str, *, body: bytes | None = None, headers: dict | None = None,
                   api: bool = True) -> tuple[int, dict, dict]:
        sent = {"X-Request-ID": new_id("rid"), "X-API-Key": self.deployment.api_key} if api else {}
        if body is not None:
            sent["Content-Type"] = "application/json"
        sent.update(headers or {})
        async with self.session.request(method, self.deployment.server.http_url + path, data=body, headers=sent,
                                        allow_redirects=False) as response:
            assert response.content_type == "application/json", (response.status, await response.text())
            return response.status, await response.json(), dict(response.headers)

    async def create(self, **fields) -> dict:
        status, body, _ = await self.call("POST", "/payments", body=json.dumps(payment_body(**fields)).encode())
        assert status == 201, body
        return body["payment"]

    async def paid(self) -> dict:
        payment = await self.create()
        event = json.dumps({"id": new_id("evt"), "type": "payment.succeeded", "created": 0, "data": {"object": {
            "id": payment["provider_payment_id"], "amount": payment["amount_cents"]}}}).encode()
        status, body, _ = await self.call("POST", f"/webhooks/providers/sandbox/{payment['provider_callback_hash']}",
                                          body=event, headers={"X-Provider-Signature": sign(event, SANDBOX_SECRET)})
        assert status == 200, body
        return payment


@pytest.fixture
async def http(deployment):
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield Http(session, deployment)


def with_member(body: dict, member: bytes) -> bytes:
    """The JSON of `body` with one more member written verbatim (the last of a key wins)."""
    return json.dumps(body).encode()[:-1] + b", " + member + b"}"


# ---- JSON nested a thousand deep ------------------------------------------------------


@pytest.mark.parametrize("deep", [DEEP_ARRAY, DEEP_OBJECT], ids=["array", "object"])
async def test_deeply_nested_json_is_400_on_every_route_with_a_body(http, deep):
    payment = await http.paid()
    nested = with_member(payment_body(), b'"metadata": ' + deep)
    too_deep = "invalid request body: nested more than 64 levels deep"
    assert await _status_body(http, "POST", "/payments", nested) == (400, error(too_deep))
    assert await _status_body(http, "POST", "/payments", deep) == (400, error(too_deep))
    assert await _status_body(http, "POST", f"/payments/{payment['id']}/refund", deep) == (400, error(too_deep))
    assert await _status_body(http, "POST", f"/payments/{payment['id']}/cancel", deep) == (400, error("invalid request"))

    webhook = f"/webhooks/providers/sandbox/{payment['provider_callback_hash']}"
    signed = {"X-Provider-Signature": sign(deep, SANDBOX_SECRET)}
    assert await _status_body(http, "POST", webhook, deep, signed) == (400, error(too_deep, field="payload"))
    wrapped = json.dumps({"payload": deep.decode(), "signature": sign(deep, SANDBOX_SECRET)}).encode()
    assert await _status_body(http, "POST", webhook, wrapped) == (
        400, error("payload is nested more than 64 levels deep", field="payload"))
    status, body, _ = await http.call("POST", "/webhooks/stripe", body=deep, api=False,
                                      headers={"Stripe-Signature": sign_event(deep, STRIPE_SECRET)})
    assert (status, body) == (400, error(too_deep, field="payload"))
    assert (await http.call("GET", f"/payments/{payment['id']}"))[1]["payment"]["status"] == 10  # nothing changed


async def _status_body(http, method, path, body, headers=None):
    status, answer, _ = await http.call(method, path, body=body, headers=headers)
    return status, answer


# ---- strings: unpaired surrogates and NUL -----------------------------------------------


@pytest.mark.parametrize("escape, problem", [("\\ud800", SURROGATE), ("\\udfff", SURROGATE), ("\\u0000", NUL)],
                         ids=["high-surrogate", "low-surrogate", "nul"])
async def test_bad_text_in_any_create_string_is_400_naming_the_field(http, escape, problem):
    for field in CREATE_STRINGS:
        recurring = payment_body(payment_type=2, recurring_interval="month", recurring_interval_count=1)
        raw = with_member(recurring, f'"{field}": "x{escape}"'.encode())
        status, body, _ = await http.call("POST", "/payments", body=raw)
        assert (status, body) == (400, error(f"invalid request body: {field} {problem}", field=field)), field
    for member in (f'"metadata": {{"k{escape}": "v"}}', f'"metadata": {{"k": "v{escape}"}}'):
        status, body, _ = await http.call("POST", "/payments", body=with_member(payment_body(), member.encode()))
        assert (status, body) == (400, error(f"invalid request body: metadata {problem}", field="metadata")), member


async def test_bad_text_in_refund_cancel_webhook_and_query_is_400(http):
    payment = await http.paid()
    for field in ("request_id", "reason"):
        status, body, _ = await http.call("POST", f"/payments/{payment['id']}/refund",
                                          body=f'{{"{field}": "\\ud800"}}'.encode())
        assert (status, body) == (400, error(f"invalid request body: {field} {SURROGATE}", field=field))
    status, body, _ = await http.call("POST", f"/payments/{payment['id']}/cancel", body=b'{"reason": "a\\u0000"}')
    assert (status, body) == (400, error("invalid request", field="reason"))

    webhook = f"/webhooks/providers/sandbox/{payment['provider_callback_hash']}"
    for wrapper, field in (({"payload": "{\ud800}", "signature": "t=1,v1=00"}, "payload"),
                           ({"payload": "{}", "signature": "t=1,v1=\ud800"}, "signature")):
        raw = json.dumps(wrapper).encode()  # ensure_ascii: the surrogate travels as \ud800
        status, body, _ = await http.call("POST", webhook, body=raw)
        assert (status, body) == (400, error(f"{field} {SURROGATE}", field=field))

    status, body, _ = await http.call("GET", "/payments?caller_service=shop%00")
    assert (status, body) == (400, error(f"caller_service {NUL}", field="caller_service"))


async def test_a_signature_that_is_not_ascii_is_rejected_not_a_crash(http):
    payment = await http.create()
    event = json.dumps({"id": new_id("evt"), "type": "payment.succeeded", "created": 0,
                        "data": {"object": {"id": payment["provider_payment_id"], "amount": 1500}}}).encode()
    webhook = f"/webhooks/providers/sandbox/{payment['provider_callback_hash']}"
    wrapped = json.dumps({"payload": event.decode(), "signature": "t=1,v1=é"}).encode()
    assert await _status_body(http, "POST", webhook, wrapped) == (400, error("callback rejected"))
    reply = await raw_http(http.deployment, request_bytes("POST", webhook, {
        "X-Request-ID": "rid-sig", "X-API-Key": http.deployment.api_key, "Content-Type": "application/json",
        "X-Provider-Signature": "t=1,v1=é".encode()}, event))
    assert (reply.status, reply.json) == (400, error("callback rejected"))


# ---- header bytes -------------------------------------------------------------------------


@pytest.mark.parametrize("raw_key", [b"psk_\xff\xfe", b"\xc3\x28", b"psk_\xe9t\xe9"])
async def test_undecodable_api_key_is_401_before_the_key_is_checked(deployment, raw_key):
    reply = await raw_http(deployment, request_bytes("GET", "/health", {"X-Request-ID": "rid-1", "X-API-Key": raw_key}))
    assert (reply.status, reply.json) == (401, error("invalid or expired api key", "unauthenticated"))
    assert reply.headers["x-request-id"] == "rid-1"


async def test_undecodable_request_id_is_400(deployment):
    for raw_id in (b"rid-\xff", b"\xed\xa0\x80"):
        reply = await raw_http(deployment, request_bytes("GET", "/health", {"X-Request-ID": raw_id,
                                                                           "X-API-Key": deployment.api_key}))
        assert (reply.status, reply.json) == (
            400, error("x-request-id header must be UTF-8 text without NUL characters", field="x-request-id"))
    # Valid UTF-8 is a request id like any other, echoed back as sent.
    reply = await raw_http(deployment, request_bytes("GET", "/health", {"X-Request-ID": "rid-é".encode(),
                                                                       "X-API-Key": deployment.api_key}))
    assert (reply.status, reply.json) == (200, {"status": "ok"})
    assert reply.headers["x-request-id"].encode("latin-1").decode() == "rid-é"


async def test_an_undecodable_signature_header_is_400(http, deployment):
    payment = await http.create()
    reply = await raw_http(deployment, request_bytes(
        "POST", f"/webhooks/providers/sandbox/{payment['provider_callback_hash']}",
        {"X-Request-ID": "rid-2", "X-API-Key": deployment.api_key, "Content-Type": "application/json",
         "X-Provider-Signature": b"t=1,v1=\xff"}, b"{}"))
    assert (reply.status, reply.json) == (
        400, error("X-Provider-Signature header must be UTF-8 text without NUL characters", field="signature"))


# ---- ids -----------------------------------------------------------------------------------


@pytest.mark.parametrize("method, template", [("GET", "/payments/{}"), ("GET", "/payments/{}/events"),
                                              ("POST", "/payments/{}/cancel"), ("POST", "/payments/{}/refund"),
                                              ("POST", "/payments/{}/callbacks/replay")])
async def test_ids_of_thousands_of_digits_are_400(http, method, template):
    for raw_id in ("9" * 5000, "0" * 5000 + "1", "1" * 21):
        status, body, _ = await http.call(method, template.format(raw_id))
        assert (status, body) == (400, error("invalid request", field="id")), raw_id[:30]


async def test_query_numbers_of_thousands_of_digits_are_400(http):
    for name in ("limit", "offset", "status"):
        status, body, _ = await http.call("GET", f"/payments?{name}={'9' * 5000}")
        assert (status, body) == (400, error("invalid request", field=name))


# ---- what aiohttp's parser refuses -------------------------------------------------------------


@pytest.mark.parametrize("request_head", [
    pytest.param(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Request-ID: a\rb\r\n\r\n", id="cr-in-header"),
    pytest.param(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Request-ID: a\nX-API-Key: b\r\n\r\n", id="bare-lf"),
    pytest.param(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", id="oversized-header"),
    pytest.param(b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", id="oversized-request-line"),
    pytest.param(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Request-ID: a\x00b\r\n\r\n", id="nul-in-header"),
    pytest.param(b"NOT HTTP AT ALL\r\n\r\n", id="garbage"),
])
async def test_requests_the_parser_refuses_get_the_json_error_shape(deployment, request_head):
    reply = await raw_http(deployment, request_head)
    assert reply.status == 400, reply
    body = reply.json
    assert body["code"] == "invalid_argument" and body["error"].startswith("malformed HTTP request: "), body


# ---- clients that hang up ---------------------------------------------------------------------


async def test_a_client_gone_while_its_body_is_read_is_not_a_server_error(deployment):
    labels = dict(route="/payments", method="POST")
    errors_before = await metric_value(deployment, "payments_http_requests_total", status="500", **labels)
    gone_before = await metric_value(deployment, "payments_http_requests_total", status="499", **labels)
    head = request_bytes("POST", "/payments", {"X-Request-ID": "rid-gone", "X-API-Key": deployment.api_key,
                                               "Content-Type": "application/json"})
    partial = head.replace(b"Content-Length: 0", b"Content-Length: 1000") + b'{"request_id": "'
    await raw_http(deployment, partial, close_after_send=True)

    async def counted() -> bool:
        return await metric_value(deployment, "payments_http_requests_total", status="499", **labels) > gone_before

    await wait_until(counted, timeout=30)
    assert await metric_value(deployment, "payments_http_requests_total", status="500", **labels) == errors_before
    assert "http_unhandled_error" not in deployment.server.logs()


# ---- case-folding after validation ---------------------------------------------------------------


@pytest.mark.parametrize("overrides, expected", [
    ({"currency": "ßd"}, error("currency must be 3 letters", field="currency")),  # "ßd".upper() == "SSD"
    ({"currency": "uſd"}, error("currency must be 3 letters", field="currency")),  # "ſ".upper() == "S"
    ({"payment_type": 2, "recurring_interval": "wee\u212a", "recurring_interval_count": 1},  # Kelvin sign: "k"
     error("recurring_interval must be day, week, month, or year", field="recurring_interval")),
    ({"payment_method": "hoſted_card"}, error("invalid request body: payment_method: unknown value 'hoſted_card'",
                                              field="payment_method")),
])
async def test_non_ascii_input_is_not_case_folded_into_valid_input(http, overrides, expected):
    status, body, _ = await http.call("POST", "/payments", body=json.dumps(payment_body(**overrides)).encode())
    assert (status, body) == (400, expected)


# ---- retry hints ------------------------------------------------------------------------------


async def test_in_progress_and_unavailable_answers_carry_retry_after(slow_deployment):
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        http = Http(session, slow_deployment)
        body = payment_body()
        raw = json.dumps(body).encode()
        first = asyncio.create_task(http.call("POST", "/payments", body=raw))

        async def reserved() -> bool:  # the first create holds the key and waits for the provider
            return bool((await http.call("GET", f"/payments?request_id={body['request_id']}"))[1]["payments"])

        await wait_until(reserved, timeout=30)
        status, answer, headers = await http.call("POST", "/payments", body=raw)
        assert (status, answer["code"], headers["Retry-After"]) == (409, "idempotency_in_progress", "1"), answer
        status, answer, headers = await first  # the provider outlasts PAYMENTS_PROVIDER_TIMEOUT_SECONDS
        assert (status, answer, headers["Retry-After"]) == (
            503, error("payment provider timed out; retry with the same request_id", "unavailable"), "5")
        assert "Retry-After" not in (await http.call("GET", "/payments/0"))[2]
