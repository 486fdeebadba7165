"""The operator-facing parts over HTTP, gRPC and the command line against a real
`serve`: verify now (429 / RESOURCE_EXHAUSTED), dead callbacks (listing per caller,
the metric, `callbacks requeue`), payment statistics, the system status (admin keys only)
and the audit trail (`audit list`, ListAuditEntries)."""

from __future__ import annotations

import json
import re

import aiohttp
import grpc
import pytest

from payments_svc.api.http.openapi import build_openapi
from payments_svc.gen import payments_pb2 as pb

from ..conftest import ALL_BACKENDS
from ..support import cli, free_port, new_database
from ..unit.test_openapi import schema_validator
from .helpers import PAID, PENDING, Api, rid, start, stop

FAILED_DELIVERY, REQUEUED = 20, 30


@pytest.fixture(scope="module", params=ALL_BACKENDS)
def deployment(request, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp(f"ops-{request.param}")
    database = new_database(request.param, tmp_path)
    try:
        deployment = start(database, tmp_path, PAYMENTS_CALLBACK_MAX_ATTEMPTS="1",
                           PAYMENTS_VERIFY_MIN_INTERVAL_SECONDS="60")
        yield deployment
        stop(deployment)
    finally:
        database.drop()


@pytest.fixture
async def channel(deployment):
    channel = grpc.aio.insecure_channel(deployment.servers[0].grpc_target)
    yield channel
    await channel.close()


@pytest.fixture
async def http(deployment):
    async with aiohttp.ClientSession(deployment.servers[0].http_url) as session:
        yield session


DOCUMENT = build_openapi()


async def call(http, method: str, path: str, key: str, **kwargs):
    """(status, JSON body, headers); a 200's body is checked against the OpenAPI description of the route."""
    async with http.request(method, path, headers={"X-API-Key": key, "X-Request-ID": rid()}, **kwargs) as response:
        body = await response.json()
        operation = DOCUMENT["paths"][re.sub(r"^/payments/\d+", "/payments/{id}", path.split("?")[0])][method.lower()]
        if response.status == 200:
            schema = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
            schema_validator(DOCUMENT, schema).validate(body)
        return response.status, body, response.headers


async def test_verify_over_http_and_grpc_and_its_rate_limit(deployment, channel, http):
    api = Api(channel, deployment.shop_key)
    payment = await api.create()
    status, body, _ = await call(http, "POST", f"/payments/{payment.id}/verify", deployment.shop_key)
    assert status == 200
    assert (body["payment"]["status"], body["changed"], body["provider_status"]) == (PENDING, False, "pending")
    status, body, headers = await call(http, "POST", f"/payments/{payment.id}/verify", deployment.shop_key)
    assert status == 429 and body["code"] == "resource_exhausted" and 1 <= int(headers["Retry-After"]) <= 60
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await api("VerifyPayment", pb.VerifyPaymentRequest(id=payment.id))
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    status, body, _ = await call(http, "POST", f"/payments/{payment.id}/verify", deployment.other_key)
    assert (status, body) == (404, {"error": "payment not found", "code": "not_found"})


async def test_dead_callbacks_are_listed_per_caller_counted_and_requeued(deployment, channel, http):
    shop = Api(channel, deployment.shop_key)
    closed = f"http://127.0.0.1:{free_port()}/cb"  # nobody listens: the one attempt allowed fails
    payment = await shop.create(status_callback_url=closed)
    await shop.settle(payment)
    cli(deployment.env, "callbacks", "dispatch", check=False)  # exit 1: the delivery failed, for good

    status, body, _ = await call(http, "GET", "/callbacks/deliveries?status=dead", deployment.shop_key)
    assert status == 200
    dead = [d for d in body["deliveries"] if d["payment_id"] == payment.id]
    assert len(dead) == 1 and dead[0]["delivery"]["status"] == FAILED_DELIVERY and dead[0]["caller_service"] == "shop"
    assert dead[0]["delivery"]["event_type"] == "payment.paid" and dead[0]["delivery"]["attempts"] == 1
    status, body, _ = await call(http, "GET", "/callbacks/deliveries?status=dead", deployment.other_key)
    assert status == 200 and all(d["caller_service"] == "other" for d in body["deliveries"])
    status, body, _ = await call(http, "GET", "/callbacks/deliveries?caller_service=shop", deployment.other_key)
    assert status == 403 and body["field"] == "caller_service"
    status, body, _ = await call(http, "GET", "/callbacks/deliveries?status=zombie", deployment.shop_key)
    assert status == 400 and body["field"] == "status"
    listed = await shop("ListCallbackDeliveries", pb.ListCallbackDeliveriesRequest(status=FAILED_DELIVERY))
    assert dead[0]["id"] in [d.id for d in listed.deliveries]
    async with http.get("/metrics") as response:
        assert "payments_callback_deliveries_dead 1.0" in await response.text()

    requeued = cli(deployment.env, "callbacks", "requeue", "--caller", "shop", "--since", "2020-01-01")
    assert requeued.stdout.startswith(f"{dead[0]['id']}\tmsg_") and "requeued 1 dead callback(s) of shop" in requeued.stderr
    status, body, _ = await call(http, "GET", "/callbacks/deliveries?caller_service=shop", deployment.shop_key)
    mine = {d["id"]: d["delivery"]["status"] for d in body["deliveries"] if d["payment_id"] == payment.id}
    assert sorted(mine.values()) == [1, REQUEUED]  # the dead one, and its new PENDING delivery
    again = cli(deployment.env, "callbacks", "requeue", "--caller", "shop")
    assert "requeued 0 dead callback(s)" in again.stderr  # nothing is dead any more

    entries = [json.loads(line) for line in cli(deployment.env, "audit", "list", "--action", "callbacks.requeued")
               .stdout.splitlines()]
    assert entries[0]["target_id"] == "shop" and entries[0]["actor_service"] == "cli"
    assert entries[0]["detail"].startswith("1 dead callback(s) requeued")


async def test_payment_stats_for_a_caller_and_a_buyer(deployment, channel, http):
    shop = Api(channel, deployment.shop_key)
    buyer = "buyer-" + rid()
    paid = await shop.create(customer_ref=buyer, amount_cents=1000, currency="usd")
    await shop.settle(paid)
    await shop.create(customer_ref=buyer, amount_cents=250, currency="usd")
    await shop.create(customer_ref=buyer, amount_cents=300, currency="eur")
    await shop("RefundPayment", pb.RefundPaymentRequest(id=paid.id, request_id=rid(), amount_cents=400))

    status, body, _ = await call(http, "GET", f"/payments/stats?customer_ref={buyer}", deployment.shop_key)
    assert status == 200
    assert body["by_status"] == [
        {"status": PENDING, "currency": "EUR", "count": 1, "amount_cents": 300, "refunded_cents": 0},
        {"status": PENDING, "currency": "USD", "count": 1, "amount_cents": 250, "refunded_cents": 0},
        {"status": PAID, "currency": "USD", "count": 1, "amount_cents": 1000, "refunded_cents": 400},
    ]
    assert (body["created"], body["paid"], body["refunded_cents_by_currency"]) == (3, 1, {"USD": 400})
    assert body["conversion"] == pytest.approx(1 / 3)
    reply = await shop("GetPaymentStats", pb.GetPaymentStatsRequest(customer_ref=buyer))
    assert (reply.created, reply.paid, dict(reply.refunded_cents_by_currency)) == (3, 1, {"USD": 400})

    other_view = await Api(channel, deployment.other_key)("GetPaymentStats", pb.GetPaymentStatsRequest(customer_ref=buyer))
    assert other_view.created == 0  # the other caller's own payments: none of this buyer's
    status, body, _ = await call(http, "GET", "/payments/stats?caller_service=shop", deployment.other_key)
    assert status == 403
    status, body, _ = await call(http, "GET", "/payments/stats?since=yesterday", deployment.shop_key)
    assert status == 400 and body["field"] == "since"
    status, body, _ = await call(http, "GET", "/payments/stats?since=2026-01-02&until=2026-01-01", deployment.shop_key)
    assert (status, body["error"]) == (400, "since must be before until")


async def test_system_status_is_for_admin_keys(deployment, channel, http):
    status, body, _ = await call(http, "GET", "/status", deployment.shop_key)
    assert status == 403 and body["code"] == "permission_denied"
    cli(deployment.env, "reconcile")  # a successful batch: its heartbeat
    status, body, _ = await call(http, "GET", "/status", deployment.admin_key)
    assert status == 200
    workers = {w["name"]: w for w in body["workers"]}
    assert set(workers) == {"callbacks_dispatch", "reconcile", "expire_pending"}
    assert workers["reconcile"]["healthy"] and workers["reconcile"]["last_success_at"].endswith("Z")
    assert not workers["expire_pending"]["healthy"]  # never ran here
    assert workers["expire_pending"]["problem"] == "no successful batch recorded: is the worker running?"
    reply = await Api(channel, deployment.admin_key)("GetSystemStatus", pb.GetSystemStatusRequest())
    assert {w.name for w in reply.workers} == set(workers)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await Api(channel, deployment.shop_key)("GetSystemStatus", pb.GetSystemStatusRequest())
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_the_audit_trail_records_who_did_what(deployment, channel, http):
    shop = Api(channel, deployment.shop_key)
    payment = await shop.create()
    await shop("ReplayCallback", pb.ReplayCallbackRequest(id=payment.id))
    request_id = rid()
    await shop.stub.CancelPayment(pb.CancelPaymentRequest(id=payment.id, reason="customer left"),
                                  metadata=(("x-request-id", request_id), ("x-api-key", deployment.shop_key)))
    admin = Api(channel, deployment.admin_key)
    reply = await admin("ListAuditEntries", pb.ListAuditEntriesRequest(target_type="payment", target_id=str(payment.id)))
    assert [e.action for e in reply.entries] == ["payment.canceled", "callback.replayed"]  # newest first
    canceled = reply.entries[0]
    assert (canceled.actor_service, canceled.request_id, canceled.detail) == ("shop", request_id, "customer left")
    assert canceled.actor_key_id.isdigit()  # the built-in key's id, never the key
    keys = [json.loads(line) for line in cli(deployment.env, "audit", "list", "--action", "key.created").stdout.splitlines()]
    assert {k["detail"] for k in keys} >= {"service shop, acts for -", "service ops, acts for *"}
    status, body, _ = await call(http, "GET", "/audit", deployment.shop_key)
    assert status == 403
    status, body, _ = await call(http, "GET", f"/audit?target_type=payment&target_id={payment.id}", deployment.admin_key)
    assert status == 200 and [e["action"] for e in body["entries"]] == ["payment.canceled", "callback.replayed"]
