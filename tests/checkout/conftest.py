"""The sandbox checkout as a customer meets it: a real `payments-svc serve` (SQLite: the
page does not depend on the backend), a key for the caller `shop`, and a plain HTTP
client that does not follow redirects (where a button sends the customer is tested)."""

from __future__ import annotations

import http.client
import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pytest

from ..support import ServerProcess, base_env, cli, create_key, new_database

PENDING, PAID, FAILED, CANCELED = 2, 10, 20, 30
SCREENSHOTS = pytest.StashKey[list[str]]()  # the browser test's, listed at the end of the run


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    text: str

    @property
    def json(self) -> Any:
        return json.loads(self.text)


@dataclass
class Shop:
    """The caller `shop` and its customer, against the server."""

    server: ServerProcess
    api_key: str
    made: list[dict] = field(default_factory=list)

    def request(self, method: str, path: str, body: Any = None, api: bool = True) -> Reply:
        parts = urlsplit(self.server.http_url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        headers = {"X-Request-ID": new_id("rq"), "X-API-Key": self.api_key} if api else {}
        data = None
        if body is not None:
            data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
        try:
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read().decode())
        finally:
            conn.close()

    def create(self, **fields: Any) -> dict:
        body = dict(request_id=new_id("req"), caller_service="shop", resource_type="order", resource_id=new_id("order"),
                    amount_cents=1500, currency="usd", payment_method=1, payment_type=1,
                    status_callback_url="https://shop.example/payments/cb")
        body.update(fields)
        reply = self.request("POST", "/payments", body)
        assert reply.status == 201, reply.text
        return reply.json["payment"]

    def get(self, payment_id: int) -> dict:
        reply = self.request("GET", f"/payments/{payment_id}")
        assert reply.status == 200, reply.text
        return reply.json["payment"]

    def events(self, payment_id: int) -> list[str]:
        reply = self.request("GET", f"/payments/{payment_id}/events")
        assert reply.status == 200, reply.text
        return [e["event_type"] for e in reply.json["events"]]

    def page(self, payment: dict) -> Reply:
        return self.request("GET", urlsplit(payment["checkout_url"]).path, api=False)

    def press(self, payment: dict, button: str) -> Reply:
        """Posts the page's form as its button would (no redirect followed)."""
        return self.request("POST", f"{urlsplit(payment['checkout_url']).path}/{button}", api=False)


@pytest.fixture(scope="module")
def shop(tmp_path_factory) -> Shop:
    database = new_database("sqlite", tmp_path_factory.mktemp("checkout-db"))
    env = base_env(database.url, LOG_LEVEL="info", TEST_LOG_DIR=str(tmp_path_factory.mktemp("checkout-logs")))
    cli(env, "db", "migrate")
    server = ServerProcess(env)
    try:
        with ThreadPoolExecutor(1) as pool:
            ready = pool.submit(server.start)
            api_key = create_key(env, "shop")
            ready.result()
        yield Shop(server, api_key)
    finally:
        server.stop()


def pytest_terminal_summary(terminalreporter, config) -> None:
    shots = config.stash.get(SCREENSHOTS, [])
    if shots:
        terminalreporter.write_line(f"sandbox checkout screenshots ({len(shots)}):")
        for path in shots:
            terminalreporter.write_line(f"  {path}")
