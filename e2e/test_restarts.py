"""Processes stopped in the middle of a flow: the server on SIGTERM with requests in
flight, the callback dispatcher on SIGKILL and on SIGTERM with a delivery in flight,
the Stellar watcher down while payments arrive. Every test leaves the stack running."""

from __future__ import annotations

import asyncio
import signal
import threading

import aiohttp
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tests.jobs.helpers import verify_standard_webhook

from .clients import DELIVERY_SUCCESS, PAID, PENDING, GrpcApi, HttpApi, eventually, new_id
from .conftest import DISPATCH_LEASE_SECONDS, DRAIN_SECONDS
from .test_lifecycle import assert_callback, delivered, status_of


@pytest.fixture
def restore(deployment):
    """Whatever a test stopped is running again afterwards."""
    yield
    stack = deployment.stack
    for proc in [stack.server, *stack.workers.values()]:
        if not proc.running():
            proc.start()
    stack.server.wait_ready()


async def health(target: str, service: str = "") -> str:
    async with grpc.aio.insecure_channel(target) as channel:
        answer = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)


async def test_server_sigterm_finishes_requests_in_flight_then_restarts(deployment, receiver, restore):
    server = deployment.stack.server
    stripe = deployment.drivers.get("stripe")
    sandbox = deployment.drivers["sandbox"]
    # Creates that are still at the provider when the signal arrives: Stripe answers
    # slower than the drain (so they finish in the grace period); the sandbox waits 100 ms.
    slow = [stripe] if stripe else []
    if stripe:
        stripe.fake.set_latency(DRAIN_SECONDS + 1.5)
    apis = [GrpcApi(server.grpc_target, deployment.api_key), HttpApi(server.http_url, deployment.api_key)]
    try:
        requests = [(api, driver, driver.fields(receiver.url(new_id("cb"))))
                    for api in apis for driver in [sandbox, *slow] for _ in range(2)]
        in_flight = [asyncio.create_task(api.create(**fields)) for api, _, fields in requests]
        await asyncio.sleep(0.5 if stripe else 0.03)
        slow_tasks = [t for t, (_, driver, _) in zip(in_flight, requests, strict=True) if driver in slow]
        assert not any(t.done() for t in slow_tasks), "the slow creates were meant to be in flight"
        server.send_signal(signal.SIGTERM)

        # Draining: readiness and gRPC health say NOT_SERVING while requests still complete.
        async with aiohttp.ClientSession() as session:
            async def not_ready():
                async with session.get(server.http_url + "/readyz") as response:
                    return response.status == 503
            await eventually(not_ready, DRAIN_SECONDS, interval=0.05, what="/readyz answering 503 while draining")
        assert await health(server.grpc_target) == "NOT_SERVING"
        assert await health(server.grpc_target, "payments.PaymentsService") == "NOT_SERVING"

        created = await asyncio.gather(*in_flight)  # none was cut off
        assert all(p["status"] == PENDING for p in created)
        assert await asyncio.to_thread(server.wait, 30) == 0
        with pytest.raises(aiohttp.ClientConnectionError):
            await apis[1].get(created[0]["id"])
    finally:
        if stripe:
            stripe.fake.set_latency(0)
        for api in apis:
            await api.close()

    server.start()
    reopened = {"grpc": GrpcApi(server.grpc_target, deployment.api_key), "http": HttpApi(server.http_url, deployment.api_key)}
    try:
        for (old, _, fields), payment in zip(requests, created, strict=True):
            replay = await reopened[old.transport].create_replayed(**fields)  # a client retrying after the restart
            assert replay["id"] == payment["id"] and replay["_replayed"]
        # The flow goes on after the restart: pay one per provider and transport, the callbacks arrive.
        for (old, driver, _), payment in list(zip(requests, created, strict=True))[::2]:
            api = reopened[old.transport]
            await driver.pay(api, payment)
            await status_of(api, payment["id"], PAID)
            await assert_callback(deployment, receiver, api, payment, "payment.paid", PAID)
    finally:
        for api in reopened.values():
            await api.close()


async def test_dispatcher_killed_mid_delivery_redelivers_with_the_same_webhook_id(deployment, receiver, http, restore):
    dispatcher = deployment.stack.workers["dispatcher"]
    sandbox = deployment.drivers["sandbox"]
    path = new_id("held")
    hold = receiver.hold(path)  # the receiver keeps the first request waiting
    payment = await http.create(**sandbox.fields(receiver.url(path)))
    await sandbox.pay(http, payment)
    await eventually(lambda: _value(hold.arrived.is_set()), 15, what="the dispatcher posting the callback")

    dispatcher.send_signal(signal.SIGKILL)  # dies with the delivery in flight, its outcome unrecorded
    assert await asyncio.to_thread(dispatcher.wait, 10) == -signal.SIGKILL
    hold.release.set()
    first = receiver.for_payment(payment["id"], "payment.paid")
    assert len(first) == 1
    dispatcher.start()

    # Nothing is lost: once the dead dispatcher's lease ends the delivery is due again,
    # under the same webhook-id, so the caller can tell it is the same callback.
    again = await eventually(lambda: _value(len(receiver.for_payment(payment["id"], "payment.paid")) >= 2),
                             DISPATCH_LEASE_SECONDS + 15, what="the redelivery after the lease")
    assert again
    current = await delivered(http, payment["id"], "payment.paid")
    arrivals = receiver.for_payment(payment["id"], "payment.paid")
    assert {r.webhook_id for r in arrivals} == {current["callback_delivery"]["delivery_id"]}  # exactly once by id
    assert current["callback_delivery"]["attempts"] == 1  # the killed attempt was never recorded
    assert all(verify_standard_webhook(deployment.signing_secret, r.headers, r.body) for r in arrivals)
    assert [e["event_type"] for e in await http.events(payment["id"])].count("callback_dispatched") == 1
    await asyncio.sleep(1)
    assert len(receiver.for_payment(payment["id"], "payment.paid")) == len(arrivals)  # and no more


async def test_dispatcher_sigterm_finishes_the_delivery_in_flight(deployment, receiver, http, restore):
    dispatcher = deployment.stack.workers["dispatcher"]
    sandbox = deployment.drivers["sandbox"]
    path = new_id("held")
    hold = receiver.hold(path)
    payment = await http.create(**sandbox.fields(receiver.url(path)))
    await sandbox.pay(http, payment)
    await eventually(lambda: _value(hold.arrived.is_set()), 15, what="the dispatcher posting the callback")

    dispatcher.send_signal(signal.SIGTERM)
    threading.Timer(0.5, hold.release.set).start()  # the receiver answers after a while
    assert await asyncio.to_thread(dispatcher.wait, 30) == 0
    current = await http.get(payment["id"])  # recorded before it exited
    assert current["callback_delivery"]["status"] == DELIVERY_SUCCESS
    dispatcher.start()
    await asyncio.sleep(DISPATCH_LEASE_SECONDS + 1)
    assert len(receiver.for_payment(payment["id"], "payment.paid")) == 1  # never sent again


async def test_stellar_payments_made_while_the_watcher_is_down_are_credited_after_it_restarts(
        deployment, receiver, http, restore):
    stellar = deployment.drivers.get("stellar")
    if stellar is None:
        pytest.skip(f"stellar: {deployment.skipped.get('stellar')}")
    watcher, reconcile = deployment.stack.workers["stellar-watch"], deployment.stack.workers["reconcile"]
    # Reconcile pages the same feed: stop it too, so only the watcher's restart can credit.
    assert watcher.stop() == 0 and reconcile.stop() == 0

    payments = [await http.create(**stellar.fields(receiver.url(new_id("cb")), amount_cents=250 * (i + 1)))
                for i in range(2)]
    for payment in payments:
        await stellar.pay(http, payment)
    await asyncio.sleep(1)
    assert [(await http.get(p["id"]))["status"] for p in payments] == [PENDING, PENDING]

    watcher.start()  # resumes from the stored cursor: nothing skipped, nothing twice
    for payment in payments:
        paid = await status_of(http, payment["id"], PAID, timeout=20)
        assert paid["received_cents"] == payment["amount_cents"]
        await assert_callback(deployment, receiver, http, payment, "payment.paid", PAID)
    reconcile.start()
    await asyncio.sleep(1.5)  # reconcile pages from the same cursor: nothing applied twice
    assert [(await http.get(p["id"]))["received_cents"] for p in payments] == [p["amount_cents"] for p in payments]


async def _value(value):
    return value
