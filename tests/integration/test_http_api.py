"""The HTTP JSON API of a real `payments-svc serve` process, over real HTTP, on
SQLite and on MariaDB.

One server per backend serves most of the module (auth cache off so revocation
shows at once, a 2 KiB body limit so 413 is cheap to reach). Each test works on
its own payments (fresh request and resource ids), so the tests share that server
without seeing each other. Shutdown and `--processes` start their own servers on
the same database.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from payments_svc.providers.sandbox.provider import sign

from ..conftest import ALL_BACKENDS
from ..support import ServerProcess, base_env, cli, create_key, new_database, wait_until

SECRET = "whsec_http_api_tests"
MAX_BODY = 2048
RFC3339_SECONDS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
PAYMENT_KEYS = {
    "id", "request_id", "caller_service", "resource_type", "resource_id", "customer_ref", "amount_cents", "currency",
    "status", "payment_method", "payment_type", "provider", "recurring_interval", "recurring_interval_count",
    "provider_payment_id", "provider_subscription_id", "checkout_url", "provider_callback_hash",
    "provider_callback_url", "status_callback_url", "refunded_cents", "refundable_cents", "metadata", "created_at",
    "updated_at", "cancel_reason", "failure_reason", "attention_required", "received_cents",
}
PENDING, PAID, FAILED, CANCELED = 2, 10, 20, 30
SANDBOX = 100


def new_id(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def payment_body(**overrides: Any) -> dict[str, Any]:
    body = dict(
        request_id=new_id("req"), caller_service="shop", resource_type="order", resource_id=new_id("order"),
        amount_cents=1500, currency="usd", payment_method=1, payment_type=1,
        status_callback_url="https://shop.example/payments/cb", metadata={"cart": "42"},
    )
    body.update(overrides)
    return body


def error(message: str, code: str = "invalid_argument", field: str | None = None) -> dict:
    """An error answer's body: the reference's message, the machine-readable code, the offending field."""
    return {"error": message, "code": code, **({"field": field} if field else {})}


def core(payment: dict) -> dict:
    """The payment without GET's extra view of its outbound status callback."""
    return {k: v for k, v in payment.items() if k != "callback_delivery"}


def sandbox_event(payment: dict, event_type: str = "payment.succeeded", event_id: str | None = None) -> bytes:
    return json.dumps({
        "id": event_id or new_id("evt"), "type": event_type, "created": 0,
        "data": {"object": {"id": payment["provider_payment_id"], "amount": payment["amount_cents"]}},
    }).encode()


# ---- servers ------------------------------------------------------------------


@contextmanager
def running(env: dict[str, str], *args: str):
    """A started server, always sent SIGTERM afterwards (even if it never became ready)."""
    server = ServerProcess(dict(env))
    try:
        yield server.start(*args)
    finally:
        server.stop()


@dataclass(frozen=True)
class Keys:
    shop: str
    billing: str
    gateway: str  # acts for any caller service


@pytest.fixture(scope="module", params=ALL_BACKENDS)
def database(request, tmp_path_factory):
    """A module-scoped stand-in for conftest's `database`: one per backend, shared by the module."""
    db = new_database(request.param, tmp_path_factory.mktemp(request.param))
    yield db
    db.drop()


@pytest.fixture(scope="module")
def env(database, tmp_path_factory) -> dict[str, str]:
    env = base_env(database.url, PAYMENTS_SANDBOX_WEBHOOK_SECRET=SECRET,
                   TEST_LOG_DIR=str(tmp_path_factory.mktemp("logs")))
    cli(env, "db", "migrate")
    return env


@pytest.fixture(scope="module")
def started(env):
    """The module's server, and its keys made while it starts (every CLI call is a process start)."""
    server = ServerProcess(dict(env, PAYMENTS_AUTH_CACHE_TTL_SECONDS="0", PAYMENTS_HTTP_MAX_BODY_BYTES=str(MAX_BODY)))
    try:
        with ThreadPoolExecutor(1) as pool:
            ready = pool.submit(server.start)
            keys = Keys(shop=create_key(env, "shop"), billing=create_key(env, "billing"),
                        gateway=create_key(env, "gateway", "*"))
            ready.result()
        yield server, keys
    finally:
        server.stop()


@pytest.fixture(scope="module")
def server(started) -> ServerProcess:
    return started[0]


@pytest.fixture(scope="module")
def keys(started) -> Keys:
    return started[1]


# ---- client -------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: Any
    text: str

    @property
    def json(self) -> Any:
        assert self.headers.get("Content-Type", "").startswith("application/json"), self.headers
        return json.loads(self.text)


DEFAULT = object()


class Http:
    """Requests with our headers: a fresh X-Request-ID and the shop key unless told otherwise."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, keys: Keys):
        self.session, self.base_url, self.keys = session, base_url, keys

    async def call(self, method: str, path: str, body: Any = None, *, raw: bytes | None = None,
                   content_type: str | None = None, key: Any = DEFAULT, rid: Any = DEFAULT,
                   headers: dict[str, str] | None = None) -> Reply:
        sent = {}
        if rid is not None:
            sent["X-Request-ID"] = new_id("rid") if rid is DEFAULT else rid
        if key is not None:
            sent["X-API-Key"] = self.keys.shop if key is DEFAULT else key
        if body is not None:
            raw, content_type = json.dumps(body).encode(), content_type or "application/json"
        if content_type is not None:
            sent["Content-Type"] = content_type
        sent.update(headers or {})
        url = path if path.startswith("http") else self.base_url + path
        # With no Content-Type given, send none (aiohttp would add application/octet-stream).
        skip = () if content_type is not None else ("Content-Type",)
        async with self.session.request(method, url, data=raw, headers=sent, allow_redirects=False,
                                        skip_auto_headers=skip) as resp:
            return Reply(resp.status, resp.headers, await resp.text())

    async def create(self, key: Any = DEFAULT, **fields: Any) -> dict:
        reply = await self.call("POST", "/payments", payment_body(**fields), key=key)
        assert reply.status == 201, reply.text
        return reply.json["payment"]

    async def get(self, payment_id: int, key: Any = DEFAULT) -> dict:
        reply = await self.call("GET", f"/payments/{payment_id}", key=key)
        assert reply.status == 200, reply.text
        return reply.json["payment"]

    async def events(self, payment_id: int, query: str = "") -> list[dict]:
        reply = await self.call("GET", f"/payments/{payment_id}/events{query}")
        assert reply.status == 200, reply.text
        return reply.json["events"]

    async def webhook(self, callback_hash: str, payload: bytes, signature: str | None = None,
                      provider: str = "sandbox") -> Reply:
        headers = {"X-Provider-Signature": signature} if signature is not None else {}
        return await self.call("POST", f"/webhooks/providers/{provider}/{callback_hash}", raw=payload,
                               content_type="application/json", headers=headers)

    async def press(self, payment: dict, button: str) -> Reply:
        """What a person does on the sandbox checkout page: open it, press a button."""
        page = await self.call("GET", payment["checkout_url"], key=None, rid=None)
        assert page.status == 200 and page.headers["Content-Type"].startswith("text/html"), page.text
        action = re.search(rf'formaction="([^"]+)" id="{button}"', page.text)
        assert action, page.text
        return await self.call("POST", action.group(1), key=None, rid=None)


@pytest.fixture
async def http(server, keys):
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield Http(session, server.http_url, keys)


# ---- headers, auth, probes ---------------------------------------------------------


async def test_request_id_is_required_before_auth_and_echoed(http):
    for rid in (None, "   "):
        reply = await http.call("GET", "/health", key=None, rid=rid)
        assert (reply.status, reply.json) == (400, error("x-request-id header is required", field="x-request-id"))
    reply = await http.call("GET", "/no/such/path", key=None, rid=None)  # checked before routing, too
    assert (reply.status, reply.json) == (400, error("x-request-id header is required", field="x-request-id"))

    reply = await http.call("GET", "/health", key=None, rid="rid-missing-key")
    assert (reply.status, reply.json) == (401, error("missing x-api-key header", "unauthenticated"))
    assert reply.headers["X-Request-ID"] == "rid-missing-key"

    reply = await http.call("GET", "/health", key="psk_not_a_real_key", rid="rid-bad-key")
    assert (reply.status, reply.json) == (401, error("invalid or expired api key", "unauthenticated"))
    assert reply.headers["X-Request-ID"] == "rid-bad-key"

    reply = await http.call("GET", "/health", rid="  rid-ok  ")
    assert (reply.status, reply.json) == (200, {"status": "ok"})
    assert reply.headers["X-Request-ID"] == "rid-ok"
    assert reply.text.endswith("}\n")


async def test_probes_need_no_headers(http):
    for path in ("/healthz", "/readyz"):
        reply = await http.call("GET", path, key=None, rid=None)
        assert (reply.status, reply.json) == (200, {"status": "ok"})


async def test_openapi_document_describes_this_configuration(http):
    reply = await http.call("GET", "/openapi.json", key=None, rid=None)
    assert reply.status == 200
    assert "/webhooks/providers/{provider}/{hash}" in reply.json["paths"]
    assert "/webhooks/stripe" not in reply.json["paths"]  # Stripe is not enabled here


async def test_revoked_key_stops_working(http, env):
    created = await asyncio.to_thread(cli, env, "keys", "create", "--service", "shop")
    key_id = re.search(r"id=(\d+)", created.stderr).group(1)
    key = created.stdout.strip()
    assert (await http.call("GET", "/health", key=key)).status == 200

    await asyncio.to_thread(cli, env, "keys", "revoke", key_id)
    reply = await http.call("GET", "/health", key=key)
    assert (reply.status, reply.json) == (401, error("invalid or expired api key", "unauthenticated"))
    assert (await http.call("GET", "/health")).status == 200  # other keys are untouched


async def test_a_key_sharing_a_real_keys_prefix_is_refused(http, env):
    # `keys list` shows the first 12 characters of every key: a key that matches them but not the
    # whole key must authenticate nobody.
    real = (await asyncio.to_thread(cli, env, "keys", "create", "--service", "shop")).stdout.strip()
    assert (await http.call("GET", "/health", key=real)).status == 200
    for near_miss in (real[:12] + "x" * (len(real) - 12), real[:-1] + ("A" if real[-1] != "A" else "B"), real[:12]):
        reply = await http.call("GET", "/health", key=near_miss)
        assert (reply.status, reply.json["error"]) == (401, "invalid or expired api key")


# ---- create ---------------------------------------------------------------------


async def test_create_answers_201_with_the_wire_format(http):
    body = payment_body(currency=" eur ", customer_ref=" cust-7 ", metadata={"cart": "42", "note": "ü"})
    reply = await http.call("POST", "/payments", body, rid="rid-create")
    assert reply.status == 201, reply.text
    assert reply.headers["X-Request-ID"] == "rid-create"
    assert "idempotent-replayed" not in reply.headers
    assert reply.text.endswith("\n")
    assert set(reply.json) == {"payment", "routing_rule"} and reply.json["routing_rule"] == ""  # no rules here
    p = reply.json["payment"]
    assert PAYMENT_KEYS <= set(p) and all(re.fullmatch(r"[a-z][a-z0-9_]*", k) for k in p), sorted(p)
    for name in ("id", "amount_cents", "status", "payment_method", "payment_type", "provider", "refunded_cents",
                 "refundable_cents", "recurring_interval_count"):
        assert type(p[name]) is int, name
    assert p["id"] > 0
    assert {k: p[k] for k in ("request_id", "caller_service", "resource_type", "resource_id", "customer_ref",
                              "amount_cents", "currency", "status", "payment_method", "payment_type", "provider",
                              "refunded_cents", "refundable_cents", "metadata", "status_callback_url")} == {
        "request_id": body["request_id"], "caller_service": "shop", "resource_type": "order",
        "resource_id": body["resource_id"], "customer_ref": "cust-7", "amount_cents": 1500, "currency": "EUR",
        "status": PENDING, "payment_method": 1, "payment_type": 1, "provider": SANDBOX, "refunded_cents": 0,
        "refundable_cents": 1500, "metadata": {"cart": "42", "note": "ü"},
        "status_callback_url": "https://shop.example/payments/cb",
    }
    assert RFC3339_SECONDS.match(p["created_at"]) and RFC3339_SECONDS.match(p["updated_at"]), p
    callback_hash = p["provider_callback_hash"]
    assert len(callback_hash) == 36
    assert p["checkout_url"] == f"{http.base_url}/sandbox/checkout/{callback_hash}"
    assert p["provider_callback_url"] == f"{http.base_url}/webhooks/providers/sandbox/{callback_hash}"
    assert p["provider_payment_id"].startswith("sbx_")
    # A later read says exactly the same, timestamps included.
    assert core(await http.get(p["id"])) == p


async def test_replay_answers_201_with_the_same_payment_and_a_marker(http):
    body = payment_body()
    first = await http.call("POST", "/payments", body)
    again = await http.call("POST", "/payments", body)
    assert (first.status, again.status) == (201, 201)
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json == first.json

    changed = await http.call("POST", "/payments", dict(body, amount_cents=9999))
    assert (changed.status, changed.json) == (422, error(
        "request_id was already used with different parameters; use a new request_id for a new payment",
        "idempotency_key_reused", "request_id"))
    assert (await http.get(first.json["payment"]["id"]))["amount_cents"] == 1500


@pytest.mark.parametrize("given", ["absent", "", "   ", None], ids=["absent", "empty", "blank", "null"])
async def test_request_id_falls_back_to_the_header(http, given):
    body = payment_body()
    if given == "absent":
        del body["request_id"]
    else:
        body["request_id"] = given
    rid = new_id("hdr")
    reply = await http.call("POST", "/payments", body, rid=rid)
    assert reply.status == 201, reply.text
    assert reply.json["payment"]["request_id"] == rid


@pytest.mark.parametrize("method, kind", [("PAYMENT_METHOD_HOSTED_CARD", "PAYMENT_TYPE_ONE_TIME"),
                                          ("hosted_card", "one_time"), ("payment_link", "ONE_TIME")])
async def test_enum_names_are_accepted(http, method, kind):
    p = await http.create(payment_method=method, payment_type=kind)
    assert (p["payment_method"], p["payment_type"]) == (2 if "link" in method else 1, 1)


async def test_keys_match_case_insensitively_and_unknown_keys_are_ignored(http):
    body = {k.upper(): v for k, v in payment_body().items()}
    body.update(unknown_field=[1, 2, {"x": None}], Amount_Cents=2500)
    body.pop("AMOUNT_CENTS")
    reply = await http.call("POST", "/payments", body)
    assert reply.status == 201, reply.text
    p = reply.json["payment"]
    assert (p["request_id"], p["resource_id"], p["amount_cents"]) == (body["REQUEST_ID"], body["RESOURCE_ID"], 2500)


def with_field(fragment: bytes) -> bytes:
    """A valid create body with one more member written verbatim (the last of a key wins)."""
    return json.dumps(payment_body()).encode()[:-1] + b", " + fragment + b"}"


@pytest.mark.parametrize("fragment", [
    pytest.param(b'"amount_cents": 10.5', id="float"),
    pytest.param(b'"amount_cents": 1e3', id="exponent"),
    pytest.param(b'"amount_cents": "1000"', id="quoted-number"),
    pytest.param(b'"amount_cents": true', id="bool"),
    pytest.param(b'"amount_cents": 9223372036854775808', id="int64-overflow"),
    pytest.param(b'"payment_type": 2, "recurring_interval": "month", "recurring_interval_count": 2147483648',
                 id="int32-overflow"),
    pytest.param(b'"payment_method": "bitcoin"', id="unknown-enum-name"),
    pytest.param(b'"currency": 840', id="number-for-string"),
    pytest.param(b'"metadata": {"a": 1}', id="metadata-non-string"),
])
async def test_undecodable_field_values_are_400(http, fragment):
    reply = await http.call("POST", "/payments", raw=with_field(fragment), content_type="application/json")
    assert reply.status == 400, reply.text
    assert reply.json["error"].startswith("invalid request body"), reply.json
    offending = "recurring_interval_count" if b"2147483648" in fragment else fragment.split(b'"')[1].decode()
    assert (reply.json["code"], reply.json["field"]) == ("invalid_argument", offending), reply.json


@pytest.mark.parametrize("raw, content_type", [
    pytest.param(b'[{"amount_cents": 1000}]', "application/json", id="array"),
    pytest.param(b'"text"', "application/json", id="string"),
    pytest.param(b'{"amount_cents": ', "application/json", id="truncated"),
    pytest.param(None, "text/plain", id="text-plain"),
    pytest.param(None, None, id="no-content-type"),
])
async def test_non_object_and_non_json_bodies_are_400(http, raw, content_type):
    raw = raw or json.dumps(payment_body()).encode()
    reply = await http.call("POST", "/payments", raw=raw, content_type=content_type)
    assert reply.status == 400, reply.text
    assert set(reply.json) == {"error", "code"} and reply.json["error"].startswith("invalid request body"), reply.json


@pytest.mark.parametrize("raw, content_type", [
    pytest.param(b"caller_service=shop&amount_cents=1000", "application/x-www-form-urlencoded", id="form"),
    pytest.param(b"", "application/json", id="empty-json"),
    pytest.param(b"", None, id="empty-no-content-type"),
])
async def test_bodies_that_bind_nothing_fail_validation(http, raw, content_type):
    reply = await http.call("POST", "/payments", raw=raw, content_type=content_type)
    # request_id came from X-Request-ID, so the first missing field is caller_service.
    assert (reply.status, reply.json) == (400, error("caller_service is required", field="caller_service"))


async def test_body_over_the_limit_is_413(http):
    body = payment_body(metadata={f"k{i}": "x" * 100 for i in range(25)})
    raw = json.dumps(body).encode()
    assert len(raw) > MAX_BODY
    reply = await http.call("POST", "/payments", raw=raw, content_type="application/json")
    assert (reply.status, reply.json) == (413, error(f"request body too large; the limit is {MAX_BODY} bytes", "payload_too_large"))
    listed = await http.call("GET", f"/payments?request_id={body['request_id']}")
    assert listed.json == {"payments": []}


async def test_caller_service_of_another_caller_is_403(http):
    body = payment_body(caller_service="billing")
    reply = await http.call("POST", "/payments", body)
    assert (reply.status, reply.json) == (
        403, error("this api key may not act for caller_service 'billing'", "permission_denied", "caller_service"))
    # The gateway key may act for it.
    reply = await http.call("POST", "/payments", body, key=http.keys.gateway)
    assert reply.status == 201 and reply.json["payment"]["caller_service"] == "billing"


# ---- get ------------------------------------------------------------------------


@pytest.mark.parametrize("raw_id, status, expected", [
    ("abc", 400, error("invalid request", field="id")),
    ("-1", 400, error("invalid request", field="id")),
    ("1.0", 400, error("invalid request", field="id")),
    ("18446744073709551616", 400, error("invalid request", field="id")),  # 2**64
    ("0", 400, error("invalid payment id", field="id")),
    ("987654321987", 404, error("payment not found", "not_found")),
    ("9223372036854775807", 404, error("payment not found", "not_found")),  # 2**63 - 1
])
async def test_get_rejects_bad_and_unknown_ids(http, raw_id, status, expected):
    reply = await http.call("GET", f"/payments/{raw_id}")
    assert (reply.status, reply.json) == (status, expected)


@pytest.mark.parametrize("path", ["/payments/{id}", "/payments/{id}/events", "/payments/{id}/cancel"])
async def test_ids_beyond_int64_are_unknown_not_a_crash(http, path):
    method = "POST" if path.endswith("cancel") else "GET"
    reply = await http.call(method, path.format(id=2**64 - 1))
    assert (reply.status, reply.json) == (404, error("payment not found", "not_found"))


async def test_payments_of_other_callers_are_invisible(http):
    p = await http.create()
    for method, path in (("GET", f"/payments/{p['id']}"), ("POST", f"/payments/{p['id']}/cancel"),
                         ("GET", f"/payments/{p['id']}/events")):
        reply = await http.call(method, path, key=http.keys.billing)
        assert (reply.status, reply.json) == (404, error("payment not found", "not_found")), path
    assert core(await http.get(p["id"], key=http.keys.gateway)) == p
    assert (await http.get(p["id"]))["status"] == PENDING  # billing's cancel did nothing


# ---- list -----------------------------------------------------------------------


async def test_list_filters_and_pages(http):
    kind = new_id("kind")
    a, b, c = [await http.create(resource_type=kind) for _ in range(3)]
    assert (await http.call("POST", f"/payments/{b['id']}/cancel")).status == 200

    async def ids(query: str) -> list[int]:
        reply = await http.call("GET", f"/payments?resource_type={kind}&{query}")
        assert reply.status == 200, (query, reply.text)
        return [p["id"] for p in reply.json["payments"]]

    assert await ids("") == [c["id"], b["id"], a["id"]]  # newest first
    assert await ids(f"request_id={a['request_id']}") == [a["id"]]
    assert await ids(f"resource_id={c['resource_id']}") == [c["id"]]
    assert await ids("caller_service=shop") == [c["id"], b["id"], a["id"]]
    assert await ids("status=30") == [b["id"]]
    assert await ids("status=%202%20") == [c["id"], a["id"]]
    assert await ids("status=10") == []
    for provider in ("sandbox", "SANDBOX", "100"):
        assert await ids(f"provider={provider}") == [c["id"], b["id"], a["id"]]
    for provider in ("stripe", "1"):
        assert await ids(f"provider={provider}") == []
    assert await ids("limit=1") == [c["id"]]
    assert await ids("limit=1&offset=1") == [b["id"]]
    assert await ids("offset=3") == []
    assert await ids("limit=0") == [c["id"], b["id"], a["id"]]  # 0 means the default
    assert await ids("limit=500") == [c["id"], b["id"], a["id"]]

    reply = await http.call("GET", f"/payments?resource_type={kind}&status=10")
    assert reply.json == {"payments": []}
    reply = await http.call("GET", f"/payments?resource_type={kind}&limit=1")
    assert reply.json == {"payments": [core(await http.get(c["id"]))]}


@pytest.mark.parametrize("query, message", [
    ("status=0", "invalid status"),
    ("status=7", "invalid status"),
    ("status=UNSPECIFIED", "invalid status"),
    ("status=PAYED", "invalid request"),
    ("provider=unspecified", "invalid request"),
    ("provider=0", "invalid request"),
    ("provider=paypal", "invalid request"),
    ("limit=501", "limit must be between 1 and 500"),
    ("limit=-1", "limit must be between 1 and 500"),
    ("limit=ten", "invalid request"),
    ("limit=2147483648", "invalid request"),  # the reference's fields are int32
    ("offset=-1", "offset must be >= 0"),
    ("offset=1.5", "invalid request"),
    ("offset=99999999999999999999", "invalid request"),
    ("status=2147483658", "invalid request"),
    ("status=1_0", "invalid request"),
])
async def test_list_rejects_bad_queries(http, query, message):
    reply = await http.call("GET", f"/payments?{query}")
    assert (reply.status, reply.json) == (400, error(message, field=query.split("=")[0]))


async def test_list_filters_take_enum_names_too(http):
    paid = await http.create(resource_type=new_id("kind"))
    assert (await http.press(paid, "pay")).status == 303
    kind = paid["resource_type"]
    for query in ("status=10", "status=paid", "status=PAID", "status=PAYMENT_STATUS_PAID", "provider=sandbox",
                  "provider=SANDBOX", "provider=PROVIDER_TYPE_SANDBOX", "provider=100"):
        reply = await http.call("GET", f"/payments?resource_type={kind}&{query}")
        assert [p["id"] for p in reply.json["payments"]] == [paid["id"]], query
    reply = await http.call("GET", f"/payments?resource_type={kind}&status=pending")
    assert reply.json == {"payments": []}


async def test_list_shows_only_the_callers_own_payments(http):
    kind = new_id("kind")
    mine = await http.create(resource_type=kind)
    theirs = await http.create(resource_type=kind, caller_service="billing", key=http.keys.billing)

    async def listed(key: str, query: str = "") -> list[int]:
        reply = await http.call("GET", f"/payments?resource_type={kind}{query}", key=key)
        assert reply.status == 200, reply.text
        return [p["id"] for p in reply.json["payments"]]

    assert await listed(http.keys.shop) == [mine["id"]]
    assert await listed(http.keys.billing) == [theirs["id"]]
    assert await listed(http.keys.gateway) == [theirs["id"], mine["id"]]
    assert await listed(http.keys.gateway, "&caller_service=billing") == [theirs["id"]]
    reply = await http.call("GET", f"/payments?resource_type={kind}&caller_service=shop", key=http.keys.billing)
    assert (reply.status, reply.json) == (
        403, error("this api key may not read payments of caller_service 'shop'", "permission_denied", "caller_service"))


# ---- cancel ---------------------------------------------------------------------


async def test_cancel_without_and_with_a_reason(http):
    plain, reasoned = await http.create(), await http.create()

    reply = await http.call("POST", f"/payments/{plain['id']}/cancel")
    assert reply.status == 200, reply.text
    assert (reply.json["payment"]["status"], reply.json["payment"]["cancel_reason"]) == (CANCELED, "")

    reply = await http.call("POST", f"/payments/{reasoned['id']}/cancel", {"reason": "  customer changed mind  "})
    assert reply.status == 200, reply.text
    canceled = reply.json["payment"]
    assert (canceled["status"], canceled["cancel_reason"]) == (CANCELED, "customer changed mind")
    assert core(await http.get(reasoned["id"])) == canceled

    again = await http.call("POST", f"/payments/{reasoned['id']}/cancel", {"reason": "second"})
    assert (again.status, again.json) == (200, {"payment": canceled})  # idempotent, first reason kept
    assert [e["event_type"] for e in await http.events(reasoned["id"])].count("payment_canceled") == 1


@pytest.mark.parametrize("raw, content_type", [
    pytest.param(b"reason=x", "text/plain", id="text-plain"),
    pytest.param(b'{"reason": ', "application/json", id="bad-json"),
    pytest.param(b'{"reason": 5}', "application/json", id="reason-not-string"),
    pytest.param(b'["x"]', "application/json", id="array"),
])
async def test_cancel_with_an_unreadable_body_is_400(http, raw, content_type):
    p = await http.create()
    reply = await http.call("POST", f"/payments/{p['id']}/cancel", raw=raw, content_type=content_type)
    assert (reply.status, reply.json["error"], reply.json["code"]) == (400, "invalid request", "invalid_argument")
    assert (await http.get(p["id"]))["status"] == PENDING


@pytest.mark.parametrize("raw_id, status, expected", [
    ("abc", 400, error("invalid request", field="id")), ("0", 400, error("invalid payment id", field="id")),
    ("987654321987", 404, error("payment not found", "not_found")),
])
async def test_cancel_rejects_bad_and_unknown_ids(http, raw_id, status, expected):
    reply = await http.call("POST", f"/payments/{raw_id}/cancel")
    assert (reply.status, reply.json) == (status, expected)


async def test_paid_and_failed_payments_cannot_be_canceled(http):
    paid, failed = await http.create(), await http.create()
    assert (await http.press(paid, "pay")).status == 303
    assert (await http.press(failed, "decline")).status == 303
    for p, word in ((paid, "paid"), (failed, "failed")):
        reply = await http.call("POST", f"/payments/{p['id']}/cancel")
        assert (reply.status, reply.json) == (400, error(f"invalid status: {word} payments cannot be canceled"))
    assert (await http.get(paid["id"]))["status"] == PAID


# ---- events ---------------------------------------------------------------------


async def test_events_are_an_ordered_timeline_with_paging(http):
    p = await http.create()
    assert (await http.press(p, "pay")).status == 303
    events = await http.events(p["id"])
    assert [(e["event_type"], e["old_status"], e["new_status"]) for e in events] == [
        ("payment_created", 0, 1), ("checkout_created", 1, PENDING), ("payment.succeeded", PENDING, PAID)]
    assert [e["id"] for e in events] == sorted(e["id"] for e in events)
    assert all(e["payment_id"] == p["id"] and RFC3339_SECONDS.match(e["created_at"]) for e in events)
    assert events[2]["provider_event_id"].startswith("evt_sbx_")

    assert await http.events(p["id"], "?limit=1") == events[:1]
    assert await http.events(p["id"], f"?limit=1&after_event_id={events[0]['id']}") == events[1:2]
    assert await http.events(p["id"], f"?after_event_id={events[0]['id']}") == events[1:]
    assert await http.events(p["id"], f"?after_event_id={events[-1]['id']}") == []
    for query, message in (("limit=501", "limit must be between 1 and 500"), ("limit=x", "invalid request"),
                           ("after_event_id=99999999999999999999", "invalid request")):
        reply = await http.call("GET", f"/payments/{p['id']}/events?{query}")
        assert (reply.status, reply.json) == (400, error(message, field=query.split("=")[0])), query


# ---- the sandbox checkout, as a person uses it ------------------------------------------


async def test_sandbox_pay_redirects_and_marks_the_payment_paid(http):
    p = await http.create(success_url="https://shop.example/thanks", cancel_url="https://shop.example/cart")
    page = await http.call("GET", p["checkout_url"], key=None, rid=None)
    assert page.status == 200 and page.headers["Content-Type"].startswith("text/html")
    assert ">Pay</button>" in page.text and ">Decline</button>" in page.text
    assert 'id="amount">15.00 <span class="currency">USD</span>' in page.text

    reply = await http.press(p, "pay")
    assert (reply.status, reply.headers["Location"]) == (303, "https://shop.example/thanks")
    paid = await http.get(p["id"])
    assert (paid["status"], paid["failure_reason"]) == (PAID, "")
    assert "payment.succeeded" in [e["event_type"] for e in await http.events(p["id"])]

    page = await http.call("GET", p["checkout_url"], key=None, rid=None)
    assert "PAID" in page.text and ">Pay</button>" not in page.text  # nothing left to press


async def test_sandbox_decline_marks_the_payment_failed(http):
    p = await http.create(cancel_url="https://shop.example/cart")
    reply = await http.press(p, "decline")
    assert (reply.status, reply.headers["Location"]) == (303, "https://shop.example/cart")
    failed = await http.get(p["id"])
    assert (failed["status"], failed["failure_reason"]) == (FAILED, "declined at the sandbox checkout")
    assert [e["event_type"] for e in await http.events(p["id"])][-1] == "payment.failed"


async def test_sandbox_pay_without_success_url_returns_to_the_page(http):
    p = await http.create()
    reply = await http.press(p, "pay")
    assert (reply.status, reply.headers["Location"]) == (303, f"/sandbox/checkout/{p['provider_callback_hash']}")
    reply = await http.call("GET", f"/sandbox/checkout/{uuid.uuid4()}", key=None, rid=None)
    assert reply.status == 404


# ---- provider webhooks ----------------------------------------------------------------


async def test_signed_webhook_is_processed(http):
    p = await http.create()
    payload = sandbox_event(p)
    reply = await http.webhook(p["provider_callback_hash"], payload, sign(payload, SECRET))
    assert (reply.status, reply.json) == (200, {"message": "Provider callback processed"})
    paid = await http.get(p["id"])
    assert (paid["status"], paid["provider_payment_id"]) == (PAID, p["provider_payment_id"])


async def test_webhook_in_the_wrapper_form_is_processed(http):
    p = await http.create()
    payload = sandbox_event(p, "payment.failed")
    wrapper = json.dumps({"payload": payload.decode(), "signature": sign(payload, SECRET)}).encode()
    reply = await http.webhook(p["provider_callback_hash"], wrapper)
    assert (reply.status, reply.json) == (200, {"message": "Provider callback processed"})
    assert (await http.get(p["id"]))["status"] == FAILED


async def test_the_same_webhook_twice_is_applied_once(http):
    p = await http.create()
    payload = sandbox_event(p)
    for _ in range(2):
        reply = await http.webhook(p["provider_callback_hash"], payload, sign(payload, SECRET))
        assert (reply.status, reply.json) == (200, {"message": "Provider callback processed"})
    events = await http.events(p["id"])
    assert [e["event_type"] for e in events] == ["payment_created", "checkout_created", "payment.succeeded"]


async def test_webhook_rejections(http):
    p = await http.create()
    payload = sandbox_event(p)
    good = sign(payload, SECRET)
    cases = [
        (p["provider_callback_hash"], payload, sign(payload, "whsec_wrong"), "sandbox", 400, error("callback rejected")),
        (p["provider_callback_hash"], payload, good.replace("t=", "t=1"), "sandbox", 400, error("callback rejected")),
        (p["provider_callback_hash"], payload, None, "sandbox", 400,
         error("provider signature is required", field="signature")),
        (p["provider_callback_hash"], b"", good, "sandbox", 400, error("payload is required", field="payload")),
        (str(uuid.uuid4()), payload, sign(payload, "whsec_wrong"), "sandbox", 400, error("callback rejected")),
        (str(uuid.uuid4()), payload, good, "sandbox", 404, error("payment not found", "not_found")),
        (p["provider_callback_hash"], payload, good, "paypal", 400, error("provider is not supported", field="provider")),
    ]
    for callback_hash, body, signature, provider, status, expected in cases:
        reply = await http.webhook(callback_hash, body, signature, provider=provider)
        assert (reply.status, reply.json) == (status, expected), (provider, signature, expected)
    assert (await http.get(p["id"]))["status"] == PENDING


# ---- routing --------------------------------------------------------------------


@pytest.mark.parametrize("method, path, status, message", [
    ("GET", "/no/such/path", 404, "Not Found"),
    ("GET", "/payments/", 404, "Not Found"),
    ("GET", "/payments/1/refunds", 404, "Not Found"),
    ("DELETE", "/payments", 405, "Method Not Allowed"),
    ("PUT", "/payments/1", 405, "Method Not Allowed"),
    ("GET", "/payments/1/cancel", 405, "Method Not Allowed"),
    ("GET", "/webhooks/providers/sandbox/abc", 405, "Method Not Allowed"),
])
async def test_unknown_routes_and_methods(http, method, path, status, message):
    """The error shape, plus the reference's {"message": ...} (Echo's answer) for its clients."""
    reply = await http.call(method, path)
    code = "not_found" if status == 404 else "method_not_allowed"
    assert (reply.status, reply.json) == (status, {**error(message, code), "message": message})


# ---- process lifecycle -------------------------------------------------------------


async def test_graceful_shutdown_finishes_in_flight_requests(env, keys):
    with running(dict(env, PAYMENTS_SANDBOX_DELAY_MS="1500")) as slow:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            http = Http(session, slow.http_url, keys)
            body = payment_body()
            in_flight = asyncio.create_task(http.call("POST", "/payments", body))

            async def reserved():  # the create has reached the server: its row exists, still CREATED
                reply = await http.call("GET", f"/payments?request_id={body['request_id']}")
                return reply.json["payments"]

            assert (await wait_until(reserved))[0]["status"] == 1
            slow.proc.send_signal(signal.SIGTERM)

            readiness = []
            while not in_flight.done():  # best effort: the listener may close before we get in
                try:
                    async with aiohttp.ClientSession() as fresh:
                        async with fresh.get(slow.http_url + "/readyz") as resp:
                            readiness.append((resp.status, await resp.json()))
                except aiohttp.ClientError:
                    break
                await asyncio.sleep(0.02)

            reply = await in_flight
            assert reply.status == 201, reply.text
            assert reply.json["payment"]["status"] == PENDING
            assert all(r == (503, {"status": "not ready", "reason": "shutting down"}) for r in readiness), readiness
        code = await asyncio.to_thread(slow.proc.wait, 30)
        assert code == 0, slow.logs()


async def test_serve_with_two_processes_shares_the_port(env, keys):
    with running(dict(env, LOG_LEVEL="info"), "--processes", "2") as multi:
        async def both_serving():  # readiness answered by one copy says nothing of the other
            return multi.logs().count('"event": "serving"') == 2

        await wait_until(both_serving, timeout=20)
        connector = aiohttp.TCPConnector(force_close=True)  # new connections, spread by the kernel
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
            http = Http(session, multi.http_url, keys)
            replies = await asyncio.gather(*(http.call("POST", "/payments", payment_body()) for _ in range(20)))
        assert [r.status for r in replies] == [201] * 20, [r.text for r in replies if r.status != 201]
        assert len({r.json["payment"]["id"] for r in replies}) == 20
        code = await asyncio.to_thread(multi.stop)
        assert code == 0, multi.logs()
