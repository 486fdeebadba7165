"""/metrics of the server (on its HTTP port) and of each worker (on PAYMENTS_METRICS_PORT),
scraped after the lifecycles ran (test_metrics.py sorts after test_lifecycle.py).

METRIC_FAMILIES is the list deployment.md documents (tests/ops checks they agree):
rename a metric in src/payments_svc/metrics.py, here and in deployment.md together.
HOOK (issue 7, item 3): more assertions on the values go in here.
"""

from __future__ import annotations

import re

import aiohttp
import pytest

METRIC_FAMILIES = (
    "payments_http_requests_total",
    "payments_http_request_duration_seconds",
    "payments_grpc_requests_total",
    "payments_grpc_request_duration_seconds",
    "payments_group_commit_size",
    "payments_status_transitions_total",
    "payments_provider_calls_total",
    "payments_provider_call_duration_seconds",
    "payments_callback_outbox_due",
    "payments_callback_outbox_oldest_due_age_seconds",
    "payments_callback_delivery_attempts_total",
    "payments_job_runs_total",
    "payments_job_run_duration_seconds",
    "payments_stellar_watcher_lag_seconds",
    "payments_stellar_feed_refused",
    "payments_provider_circuit_state",
    "payments_provider_short_circuited_total",
    "payments_quota_rejected_total",
    "payments_callback_deliveries_dead",
    "payments_watchers",
    "payments_watchers_dropped_total",
    "payments_watch_tail_errors_total",
)
_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?P<labels>.*)\})?\s+(?P<value>\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


async def scrape(url: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        if response.status in (400, 401, 404):  # unknown routes meet the auth middleware first
            pytest.skip(f"{url} is not served yet (issue 7, item 3): {response.status} {(await response.text()).strip()}")
        assert response.status == 200, await response.text()
        assert response.headers["Content-Type"].startswith(("text/plain", "application/openmetrics-text"))
        return await response.text()


def families(text: str) -> set[str]:
    """Metric families in the exposition (a counter's family is named without _total in
    OpenMetrics, with it in the Prometheus text format: both forms are returned)."""
    names = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}
    return names | {n + "_total" for n in names}


def value(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match is None or match["name"] != name:
            continue
        have = dict(_LABEL.findall(match["labels"] or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(match["value"])
    return total


async def test_server_metrics(deployment):
    text = await scrape(deployment.stack.server.http_url + "/metrics")
    missing = [name for name in METRIC_FAMILIES if name not in families(text)]
    assert not missing, f"documented in deployment.md but not exposed: {missing}"
    assert value(text, "payments_http_requests_total", route="/payments", method="POST", status="201") > 0
    assert value(text, "payments_grpc_requests_total", code="OK") > 0
    assert value(text, "payments_status_transitions_total", to_status="PAID") > 0
    assert value(text, "payments_provider_calls_total", outcome="ok") > 0
    assert value(text, "payments_http_request_duration_seconds_count") > 0


@pytest.mark.parametrize("worker, job", [("dispatcher", "callbacks_dispatch"), ("reconcile", "reconcile"),
                                         ("expire", "expire_pending"), ("stellar-watch", None)])
async def test_worker_metrics(deployment, worker, job):
    from payments_svc.config import Settings

    if "metrics_port" not in Settings.__dataclass_fields__:
        pytest.skip("workers do not serve metrics yet (PAYMENTS_METRICS_PORT)")
    proc = deployment.stack.workers.get(worker)
    if proc is None:
        pytest.skip(f"{worker} is not part of this stack: {deployment.skipped.get('stellar', '')}")
    text = await scrape(f"http://127.0.0.1:{proc.metrics_port}/metrics")
    if job is not None:
        assert value(text, "payments_job_runs_total", job=job) > 0
    if worker == "dispatcher":
        assert value(text, "payments_callback_delivery_attempts_total", outcome="success") > 0
        assert "payments_callback_outbox_due" in families(text)
    if worker == "stellar-watch":
        assert "payments_stellar_watcher_lag_seconds" in families(text)
        assert value(text, "payments_stellar_feed_refused") == 0
