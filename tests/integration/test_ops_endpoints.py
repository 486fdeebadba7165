"""/metrics and /openapi.json on a real server: no key needed, and the metrics move."""

from __future__ import annotations

import json
import urllib.request

import pytest

from ..support import ServerProcess, base_env, cli, create_key


def _get(url: str, headers: dict | None = None) -> tuple[int, str, str]:
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, response.headers.get("Content-Type", ""), response.read().decode()


def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.fixture
def server(database, tmp_path):
    env = base_env(database.url, TEST_LOG_DIR=str(tmp_path))
    cli(env, "db", "migrate")
    key = create_key(env, "shop")
    proc = ServerProcess(env).start()
    yield proc, key
    assert proc.stop() == 0


def test_metrics_count_requests_transitions_and_provider_calls(server):
    proc, key = server
    body = json.dumps({"request_id": "m-1", "caller_service": "shop", "resource_type": "order", "resource_id": "1",
                       "amount_cents": 100, "currency": "usd", "payment_method": 1, "payment_type": 1,
                       "status_callback_url": "https://shop.example/cb"}).encode()
    request = urllib.request.Request(proc.http_url + "/payments", data=body, method="POST", headers={
        "X-Request-ID": "m-1", "X-API-Key": key, "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 201
    status, content_type, text = _get(proc.http_url + "/metrics")
    assert status == 200 and content_type.startswith("text/plain")
    assert _metric(text, "payments_http_requests_total", route="/payments", method="POST", status="201") == 1
    assert _metric(text, "payments_http_request_duration_seconds_count", route="/payments", method="POST") == 1
    assert _metric(text, "payments_status_transitions_total", from_status="CREATED", to_status="PENDING") == 1
    assert _metric(text, "payments_provider_calls_total", provider="sandbox", operation="create_checkout", outcome="ok") == 1
    assert "payments_callback_outbox_due" in text and "payments_callback_outbox_oldest_due_age_seconds" in text


def test_openapi_is_served_without_a_key(server):
    proc, _ = server
    status, content_type, text = _get(proc.http_url + "/openapi.json")
    assert status == 200 and content_type.startswith("application/json")
    assert json.loads(text)["paths"]["/payments"]["post"]["operationId"] == "CreatePayment"
