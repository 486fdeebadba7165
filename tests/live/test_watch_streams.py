"""WatchPayment / WatchPayments over gRPC and the SSE stream, against real `serve`
processes: a change committed through one process reaches a watcher on another within
a second; resume points (after_event_id, Last-Event-ID) miss nothing; the streams end
after a terminal status; keep-alives flow while nothing happens; the caller scoping is
GetPayment's."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import grpc
import pytest

from payments_svc.gen import payments_pb2 as pb

from ..conftest import ALL_BACKENDS
from ..support import new_database
from .helpers import CANCELED, PAID, PENDING, Api, read_sse, rid, start, stop


@pytest.fixture(scope="module", params=ALL_BACKENDS)
def deployment(request, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp(f"watch-{request.param}")
    database = new_database(request.param, tmp_path)
    try:
        deployment = start(database, tmp_path, servers=2)
        yield deployment
        stop(deployment)
    finally:
        database.drop()


@pytest.fixture
async def channels(deployment):
    channels = [grpc.aio.insecure_channel(s.grpc_target) for s in deployment.servers]
    yield channels
    for channel in channels:
        await channel.close()


async def test_a_change_committed_by_one_process_reaches_a_watcher_on_the_other_within_a_second(deployment, channels):
    watcher, writer = Api(channels[0], deployment.shop_key), Api(channels[1], deployment.shop_key)
    payment = await writer.create()
    stream = watcher.stream("WatchPayment", pb.WatchPaymentRequest(id=payment.id))
    first = await stream.read()
    assert first.payment.id == payment.id and first.payment.status == PENDING and not first.final
    assert first.after_event_id > 0  # the resume point: the payment's latest event

    settled = time.monotonic()
    await writer.settle(payment)
    update = await stream.read()
    while not update.HasField("event"):  # keep-alives may come first
        update = await stream.read()
    arrived = time.monotonic() - settled
    # Within a second on a quiet machine (bench/README.md, Live status); the bound leaves room
    # for a loaded CI machine, and still fails a tail that stopped reading.
    assert arrived < 3.0, f"the change took {arrived:.2f} s to reach the other process's watcher"
    assert (update.event.new_status, update.payment.status, update.final) == (PAID, PAID, True)
    assert update.event.id > first.after_event_id
    assert await stream.read() == grpc.aio.EOF  # ended after the terminal status


async def test_resuming_after_an_event_id_sends_what_was_missed_then_ends(deployment, channels):
    api = Api(channels[0], deployment.shop_key)
    payment = await api.create()
    events = (await api("ListPaymentEvents", pb.ListPaymentEventsRequest(id=payment.id))).events
    await api.settle(payment)
    stream = api.stream("WatchPayment", pb.WatchPaymentRequest(id=payment.id, after_event_id=events[-1].id))
    updates = [u async for u in stream]
    assert updates[0].payment.status == PAID and not updates[0].final  # the snapshot, then what was missed
    assert [u.event.new_status for u in updates[1:]] == [PAID]
    assert updates[-1].final


async def test_a_terminal_payment_sends_its_snapshot_and_ends(deployment, channels):
    api = Api(channels[0], deployment.shop_key)
    payment = await api.create()
    await api("CancelPayment", pb.CancelPaymentRequest(id=payment.id))
    updates = [u async for u in api.stream("WatchPayment", pb.WatchPaymentRequest(id=payment.id))]
    assert [(u.payment.status, u.final) for u in updates] == [(CANCELED, True)]


async def test_keepalives_flow_while_nothing_happens(deployment, channels):
    api = Api(channels[0], deployment.shop_key)
    payment = await api.create()
    stream = api.stream("WatchPayment", pb.WatchPaymentRequest(id=payment.id))
    await stream.read()
    keepalive = await asyncio.wait_for(stream.read(), 10)  # PAYMENTS_WATCH_KEEPALIVE_SECONDS=1; slack for a loaded machine
    assert keepalive == pb.WatchUpdate()
    stream.cancel()


async def test_scoping_and_errors_are_getpayments(deployment, channels):
    shop, other = Api(channels[0], deployment.shop_key), Api(channels[0], deployment.other_key)
    payment = await shop.create()
    for request, code, details in (
        (pb.WatchPaymentRequest(id=payment.id), grpc.StatusCode.NOT_FOUND, "payment not found"),
        (pb.WatchPaymentRequest(id=0), grpc.StatusCode.INVALID_ARGUMENT, "invalid payment id"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await other.stream("WatchPayment", request).read()
        assert (info.value.code(), info.value.details()) == (code, details)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await other.stream("WatchPayments", pb.WatchPaymentsRequest(caller_service="shop")).read()
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    stub_without_key = shop.stub.WatchPayment(pb.WatchPaymentRequest(id=payment.id), metadata=(("x-request-id", rid()),))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub_without_key.read()
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_watch_payments_streams_a_callers_events_filtered_and_resumable(deployment, channels):
    shop, writer, other = (Api(channels[0], deployment.shop_key), Api(channels[1], deployment.shop_key),
                           Api(channels[1], deployment.other_key))
    stream = shop.stream("WatchPayments", pb.WatchPaymentsRequest(has_status=True, status=PAID))
    assert await stream.read() == pb.WatchUpdate()  # subscribed: what is committed from now on comes
    mine, theirs = await writer.create(), await other.create(caller="other")
    await other.settle(theirs)  # another caller's: never shown
    await writer.settle(mine)
    update = await stream.read()
    while not update.HasField("event"):
        update = await stream.read()
    assert (update.payment.id, update.event.new_status, update.final) == (mine.id, PAID, False)
    stream.cancel()

    # Resumed from an event id: the backlog first (only PAID events of shop), then live ones.
    resumed = shop.stream("WatchPayments", pb.WatchPaymentsRequest(after_event_id=update.event.id - 1,
                                                                   has_status=True, status=PAID))
    assert await resumed.read() == pb.WatchUpdate()  # subscribed, as on every WatchPayments stream
    again = await resumed.read()
    assert (again.event.id, again.payment.id) == (update.event.id, mine.id)
    resumed.cancel()


async def test_sse_stream_resumes_with_last_event_id_and_ends_after_the_terminal_status(deployment, channels):
    writer = Api(channels[1], deployment.shop_key)
    payment = await writer.create()
    url = f"{deployment.servers[0].http_url}/payments/{payment.id}/watch"
    headers = {"X-API-Key": deployment.shop_key, "X-Request-ID": rid()}
    async with aiohttp.ClientSession() as session:
        async with session.get(url, headers=headers) as response:
            assert response.status == 200 and response.headers["Content-Type"].startswith("text/event-stream")
            [snapshot] = await read_sse(response, count=1, until_end=False)
            assert snapshot["event"] == "payment" and snapshot["data"]["payment"]["status"] == PENDING
            resume_from = snapshot["id"]
        # The client is away while the payment is paid; it reconnects with the last id it saw.
        await writer.settle(payment)
        async with session.get(url, headers={**headers, "Last-Event-ID": resume_from}) as response:
            messages = [m for m in await read_sse(response) if "comment" not in m]
        assert [m["event"] for m in messages] == ["payment", "event", "end"]
        assert messages[1]["data"]["event"]["new_status"] == PAID and messages[1]["data"]["final"] is True
        assert int(messages[1]["id"]) > int(resume_from)

        # Refusals are JSON error answers, never a stream.
        async with session.get(url, headers={**headers, "X-API-Key": deployment.other_key}) as response:
            assert response.status == 404
            assert await response.json() == {"error": "payment not found", "code": "not_found"}
        async with session.get(url, headers={**headers, "Last-Event-ID": "x1"}) as response:
            assert response.status == 400 and (await response.json())["field"] == "Last-Event-ID"


async def test_sse_keepalives_and_the_end_on_shutdown_are_not_needed_for_a_live_change(deployment, channels):
    writer = Api(channels[1], deployment.shop_key)
    payment = await writer.create()
    url = f"{deployment.servers[0].http_url}/payments/{payment.id}/watch"
    async with aiohttp.ClientSession() as session:
        async with session.get(url, headers={"X-API-Key": deployment.shop_key, "X-Request-ID": rid()}) as response:
            first = await read_sse(response, count=2, until_end=False)
            assert first[0]["event"] == "payment" and first[1] == {"comment": "keep-alive"}
            await writer("CancelPayment", pb.CancelPaymentRequest(id=payment.id))
            rest = [m for m in await read_sse(response) if "comment" not in m]
    assert [m["event"] for m in rest] == ["event", "end"]
    assert rest[0]["data"]["payment"]["status"] == CANCELED


async def test_sse_watch_of_all_payments_opens_with_a_keepalive_then_streams_the_callers_events(deployment, channels):
    writer = Api(channels[1], deployment.shop_key)
    url = f"{deployment.servers[0].http_url}/payments/watch?status=paid"
    async with aiohttp.ClientSession() as session:
        async with session.get(url, headers={"X-API-Key": deployment.shop_key, "X-Request-ID": rid()}) as response:
            assert response.status == 200
            assert await read_sse(response, count=1, until_end=False) == [{"comment": "keep-alive"}]  # subscribed
            payment = await writer.create()
            await writer.settle(payment)
            [message] = await read_sse(response, count=1, until_end=False)
            while "comment" in message:  # keep-alives until the change arrives
                [message] = await read_sse(response, count=1, until_end=False)
    assert message["event"] == "event" and message["data"]["payment"]["id"] == payment.id
    assert message["data"]["event"]["new_status"] == PAID and message["data"]["final"] is False
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{deployment.servers[0].http_url}/payments/watch?status=bogus",
                               headers={"X-API-Key": deployment.shop_key, "X-Request-ID": rid()}) as response:
            assert response.status == 400 and (await response.json())["field"] == "status"
