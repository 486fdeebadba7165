"""The database failing under a running `payments-svc serve` and a worker: stopped
(connections reset and refused), hung (nothing answers), and back. MariaDB itself is
never touched: the service reaches it through a FaultProxy the tests switch.

What must hold: every route and RPC answers 503 / UNAVAILABLE "retry" (never 500, never
a hang longer than the configured timeouts), the outage is logged once with its cause
(not a traceback per request), the server serves again by itself when the database is
back, and no payment is lost or duplicated by creates caught in the middle."""

from __future__ import annotations

import asyncio
import json
import urllib.parse
import uuid

import grpc
import pymysql
import pytest

from payments_svc.gen import payments_pb2 as pb
from payments_svc.providers.sandbox.provider import sign

from ..jobs.helpers import SHOP_SECRET, JobProcess, Receiver
from ..support import MYSQL_HOST, MYSQL_PORT, ServerProcess, _mysql_connect, base_env, cli, create_key, new_database, wait_until
from .proxy import FaultProxy
from .stack import DB_UNAVAILABLE, Client, create_body, every_route, every_rpc, log_lines, log_size

pytestmark = pytest.mark.mysql

STATEMENT_TIMEOUT = 2  # PAYMENTS_DB_STATEMENT_TIMEOUT_SECONDS of the server under test
SANDBOX_SECRET = "whsec_fault_tests"


def through(proxy: FaultProxy, url: str) -> str:
    """The database URL with the proxy in place of the server."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc.replace(f"{MYSQL_HOST}:{MYSQL_PORT}", proxy.address)
    return parts._replace(netloc=netloc).geturl()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """A migrated database, the proxy in front of MariaDB, and a server using it."""
    tmp = tmp_path_factory.mktemp("db-faults")
    database = new_database("mysql", tmp)
    direct = base_env(database.url)
    cli(direct, "db", "migrate")
    key = create_key(direct, "shop")
    proxy = FaultProxy(MYSQL_HOST, MYSQL_PORT).start()
    env = base_env(
        through(proxy, database.url), TEST_LOG_DIR=str(tmp),
        PAYMENTS_DB_STATEMENT_TIMEOUT_SECONDS=str(STATEMENT_TIMEOUT), PAYMENTS_DB_CONNECT_TIMEOUT_SECONDS="1",
        PAYMENTS_DB_POOL_TIMEOUT_SECONDS="1", PAYMENTS_READINESS_TIMEOUT_SECONDS="1",
        PAYMENTS_AUTH_CACHE_TTL_SECONDS="3600",  # the key is checked once: requests reach their handlers
        PAYMENTS_CREATE_LEASE_SECONDS="1", PAYMENTS_SANDBOX_DELAY_MS="300",
        PAYMENTS_SANDBOX_WEBHOOK_SECRET=SANDBOX_SECRET,
    )
    server = ServerProcess(env).start()
    yield database, proxy, server, key
    proxy.pass_through()
    code = server.stop()
    proxy.stop()
    database.drop()
    assert code == 0, server.logs()


@pytest.fixture
async def client(stack):
    _, proxy, server, key = stack
    async with Client(server, key) as c:
        await c.http("GET", "/health")  # the key is in the auth cache from here on
        yield c
    proxy.pass_through()


async def _serving_again(client: Client) -> None:
    async def ready():
        return (await client.probe()).status == 200 and (await client.http("GET", "/payments?limit=1")).status == 200
    await wait_until(ready, timeout=30, interval=0.2)


def _rows(database, request_ids: list[str]) -> list[dict]:
    conn = _mysql_connect(database.name)
    try:
        with conn.cursor(pymysql.cursors.DictCursor) as cur:
            cur.execute("SELECT request_id, status, checkout_url FROM payments WHERE request_id IN %s", (request_ids,))
            return cur.fetchall()
    finally:
        conn.close()


@pytest.mark.parametrize("fault", ["refuse", "blackhole"], ids=["stopped", "hung"])
async def test_every_route_and_rpc_answers_unavailable_then_serves_again_without_restart(stack, client, fault):
    database, proxy, server, key = stack
    payment = (await client.http("POST", "/payments", create_body())).body["payment"]
    other_key = create_key(base_env(database.url), "crm")  # never validated: needs the database
    since = log_size(server)

    getattr(proxy, fault)()
    # All at once: a hung database holds each request for the statement timeout.
    routes = every_route(payment["id"], payment["provider_callback_hash"])
    rpcs = every_rpc(payment["id"], payment["provider_callback_hash"])
    answers = await asyncio.gather(
        *(client.http(method, path, body) for method, path, body in routes),
        *(client.rpc(method, request) for method, request in rpcs.items()),
        client.http("GET", "/health", key=other_key),
        client.rpc("Health", pb.HealthRequest(), key=other_key),
        client.probe("/metrics"),
        client.probe(),
    )
    http_answers, grpc_answers = answers[:len(routes)], answers[len(routes):len(routes) + len(rpcs)]
    for (method, path, _), answer in zip(routes, http_answers, strict=True):
        assert (method, path, answer.status, answer.body.get("error")) == (method, path, 503, DB_UNAVAILABLE)
    for method, (code, details) in zip(rpcs, grpc_answers, strict=True):
        assert (method, code, details) == (method, grpc.StatusCode.UNAVAILABLE, DB_UNAVAILABLE)
    uncached_http, uncached_rpc, metrics, ready = answers[-4:]
    assert metrics.status == 200  # operators still see the service
    assert (uncached_http.status, uncached_http.body.get("error")) == (503, DB_UNAVAILABLE)  # never 401
    assert uncached_rpc == (grpc.StatusCode.UNAVAILABLE, DB_UNAVAILABLE)
    assert ready.status == 503 and ready.body["reason"].startswith("database unreachable")

    proxy.pass_through()
    await _serving_again(client)
    fetched = await client.http("GET", f"/payments/{payment['id']}")
    assert fetched.status == 200 and fetched.body["payment"]["status"] == payment["status"]
    assert (await client.http("POST", "/payments", create_body())).status == 201
    assert (await client.http("GET", "/health", key=other_key)).status == 200

    logs = log_lines(server, since)
    assert [line for line in logs if "raw" in line] == []  # no tracebacks, nothing but JSON lines
    assert not [line for line in logs if line.get("event", "").endswith("unhandled_error")]
    outage = [line for line in logs if line.get("event") == "database_unavailable"]
    assert len(outage) == 1 and outage[0]["level"] == "error"  # once for the whole burst, with its cause
    if fault == "blackhole":  # requests beyond the pool's 10 connections wait for one first
        assert outage[0]["error"].startswith(("no answer within 2 s", "every pooled connection stayed busy"))
    else:
        # The driver's own words for a dropped connection: asyncmy says 2006, aiomysql 2013.
        assert outage[0]["error"].startswith(("OperationalError: (2006, 'MySQL server has gone away')",
                                               "OperationalError: (2013, 'Lost connection"))
    assert [line["failed_steps"] >= len(routes) for line in logs if line.get("event") == "database_available"] == [True]


async def test_readiness_answers_within_its_own_timeout_while_the_database_hangs(stack, client):
    _, proxy, _, _ = stack
    proxy.blackhole()
    # The probe's client gives up after 3 s, the readiness timeout is 1 s, the statement timeout 2 s.
    probe = await asyncio.wait_for(client.probe(), 3)
    assert probe.status == 503 and probe.body == {"status": "not ready", "reason": "database unreachable: TimeoutError"}
    proxy.pass_through()
    await _serving_again(client)


@pytest.mark.parametrize("fault", ["refuse", "blackhole"], ids=["stopped", "hung"])
async def test_creates_caught_by_the_fault_and_retried_end_with_one_payment_each(stack, client, fault):
    database, proxy, _, _ = stack
    bodies = [create_body() for _ in range(12)]
    first = [asyncio.ensure_future(client.http("POST", "/payments", body)) for body in bodies]
    await asyncio.sleep(0.15)  # the creates are reserved and at the provider (300 ms)
    getattr(proxy, fault)()
    outcomes = await asyncio.gather(*first)
    assert {o.status for o in outcomes} <= {201, 503}
    assert any(o.status == 503 for o in outcomes)

    proxy.pass_through()
    await _serving_again(client)
    retried = await asyncio.gather(*(client.create_until_done(body) for body in bodies))
    assert [r.status for r in retried] == [201] * len(bodies)
    for before, after in zip(outcomes, retried, strict=True):
        if before.status == 201:  # a retry of a create that succeeded is its replay
            assert after.headers.get("idempotent-replayed") == "true"
            assert after.body["payment"] == before.body["payment"]

    rows = _rows(database, [b["request_id"] for b in bodies])
    assert sorted(r["request_id"] for r in rows) == sorted(b["request_id"] for b in bodies)  # one row each
    assert {(r["status"], bool(r["checkout_url"])) for r in rows} == {(2, True)}  # all PENDING, none stuck half-made


async def test_a_worker_rides_out_an_outage_and_carries_on(stack, client, tmp_path):
    """The callback dispatcher keeps running through the outage (no exit, no traceback
    per tick) and delivers what became due after it, without a restart."""
    database, proxy, server, _ = stack
    receiver = await Receiver().start()
    worker = JobProcess(
        base_env(through(proxy, database.url), PAYMENTS_CALLBACK_SIGNING_SECRETS=f"shop={SHOP_SECRET}",
                 PYTHONUNBUFFERED="1", LOG_LEVEL="info", PAYMENTS_CALLBACK_DISPATCH_INTERVAL_SECONDS="0.2",
                 PAYMENTS_DB_STATEMENT_TIMEOUT_SECONDS=str(STATEMENT_TIMEOUT), PAYMENTS_DB_POOL_TIMEOUT_SECONDS="1"),
        ("callbacks", "dispatch", "--worker"), tmp_path / "dispatcher.log")
    await worker.start()
    try:
        await wait_until(_logged(worker, "worker_started"), timeout=30)
        proxy.refuse()
        await wait_until(_logged(worker, "job_failed", count=3), timeout=30)
        proxy.blackhole()
        await wait_until(_logged(worker, "job_failed", count=5), timeout=30)
        assert worker.proc.returncode is None

        proxy.pass_through()
        await _serving_again(client)
        # The server saw no traffic during the outage: its pooled connections died unnoticed,
        # and the first use of each answers 503 while it is replaced, so retry as callers do.
        payment = (await client.create_until_done(dict(create_body(), status_callback_url=receiver.url()))).body["payment"]
        assert (await client.http("POST", f"/payments/{payment['id']}/cancel", {"reason": "test"})).status == 200

        async def delivered():
            return [r for r in receiver.received if r.json()["payment"]["id"] == payment["id"]]
        [callback] = await wait_until(delivered, timeout=30)
        assert callback.json()["type"] == "payment.canceled"
        assert worker.proc.returncode is None
        logs = worker.logs()
        assert [line for line in logs if line.get("event") == "raw"] == []  # no tracebacks
        assert len([line for line in logs if line.get("event") == "database_unavailable"]) <= 2  # one per outage
    finally:
        worker.signal()
        assert await worker.wait() == 0
        await receiver.stop()


def _logged(worker: JobProcess, event: str, count: int = 1):
    async def check():
        return len([line for line in worker.logs() if line.get("event") == event]) >= count
    return check


async def test_a_signed_webhook_during_an_outage_is_refused_for_a_retry_and_applied_after(stack, client):
    """The provider's retry after a 503 applies the event once."""
    _, proxy, _, _ = stack
    payment = (await client.http("POST", "/payments", create_body())).body["payment"]
    event = json.dumps({"id": "evt_" + uuid.uuid4().hex[:8], "type": "payment.succeeded", "created": 0,
                        "data": {"object": {"id": payment["provider_payment_id"], "amount": payment["amount_cents"]}}})
    path = f"/webhooks/providers/sandbox/{payment['provider_callback_hash']}"

    async def deliver():
        return await client.http("POST", path, headers={"X-Provider-Signature": sign(event.encode(), SANDBOX_SECRET),
                                                        "Content-Type": "application/json"}, data=event.encode())

    proxy.refuse()
    assert (await deliver()).status == 503
    proxy.pass_through()
    await _serving_again(client)
    assert (await deliver()).status == 200
    assert (await deliver()).status == 200  # a duplicate: acknowledged, applied once
    events = (await client.http("GET", f"/payments/{payment['id']}/events")).body["events"]
    assert [e["new_status"] for e in events if e["old_status"] != e["new_status"]].count(10) == 1
