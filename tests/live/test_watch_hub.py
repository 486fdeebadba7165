"""The watch hub in-process, on SQLite and MariaDB: one tail query per interval however
many watch, fan-out by payment and by caller, a slow watcher ended without holding up
the others, ids committed out of order still delivered, no queries while nobody watches,
and every watcher ended at shutdown."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from payments_svc.auth.caller import Caller
from payments_svc.clock import utcnow
from payments_svc.db.tables import payment_events
from payments_svc.domain.enums import PaymentStatus
from payments_svc.domain.payment import CreatePaymentCommand
from payments_svc.repository.event_feed import EventFeedRepository
from payments_svc.repository.events import EventRepository
from payments_svc.service import watch
from payments_svc.service.watch import SHUTTING_DOWN, SLOW_READER, WatchEnded

SHOP = Caller("shop")
INTERVAL = 0.05


@pytest.fixture
async def container(make_container):
    container = await make_container(PAYMENTS_WATCH_POLL_INTERVAL_SECONDS=str(INTERVAL), PAYMENTS_WATCH_QUEUE_SIZE="3")
    yield container
    await container.close()


@pytest.fixture
def tail_reads(monkeypatch):
    """Counts the hub's tail queries."""
    calls = []
    original = EventFeedRepository.after

    async def counted(self, after_id, *, limit):
        calls.append(after_id)
        return await original(self, after_id, limit=limit)

    monkeypatch.setattr(EventFeedRepository, "after", counted)
    return calls


async def create(container, caller: str = "shop"):
    command = CreatePaymentCommand(
        request_id="req-" + uuid.uuid4().hex[:12], caller_service=caller, resource_type="order", resource_id="o-1",
        customer_ref="", amount_cents=100, currency="usd", payment_method=1, payment_type=1, provider=100,
        recurring_interval="", recurring_interval_count=0, status_callback_url="https://shop.example/cb",
        success_url="", cancel_url="", metadata={},
    )
    return (await container.service.create_payment(Caller(caller), command)).payment


async def add_event(container, payment_id: int, event_type: str = "note", event_id: int | None = None) -> None:
    async with container.db.transaction() as conn:
        if event_id is None:
            await EventRepository(conn).add(payment_id=payment_id, event_type=event_type, old_status=PaymentStatus.PENDING,
                                            new_status=PaymentStatus.PENDING, now=utcnow())
        else:
            await conn.execute(payment_events.insert().values(
                id=event_id, payment_id=payment_id, event_type=event_type, old_status=int(PaymentStatus.PENDING),
                new_status=int(PaymentStatus.PENDING), needs_attention=False, created_at=utcnow()))


async def drain(sub, count: int, timeout: float = 3.0) -> list:
    got = []
    async with asyncio.timeout(timeout):
        while len(got) < count:
            update = await sub.next(1.0)
            if update is not None:
                got.append(update)
    return got


async def test_one_tail_query_per_interval_however_many_watch(container, hub, tail_reads):
    payment = await create(container)
    async with hub.subscribe(lambda row: True, payment_id=payment.id) as first:
        subs = [hub.subscribe(lambda row: True, payment_id=payment.id) for _ in range(199)]
        entered = [await s.__aenter__() for s in subs]
        try:
            assert hub.watchers == 200
            tail_reads.clear()
            await asyncio.sleep(20 * INTERVAL)
            assert 5 <= len(tail_reads) <= 25, f"{len(tail_reads)} tail queries in 20 intervals for 200 watchers"
            await add_event(container, payment.id)
            for sub in (first, *entered):
                [update] = await drain(sub, 1)
                assert update.event.event_type == "note" and update.payment.id == payment.id
        finally:
            for s in subs:
                await s.__aexit__(None, None, None)


async def test_events_go_to_the_watchers_of_their_payment_and_caller_only(container, hub):
    mine, other = await create(container), await create(container, "other")
    async with (hub.subscribe(lambda row: True, payment_id=mine.id) as by_payment,
                hub.subscribe(lambda row: row.event.event_type == "wanted", caller_service="shop") as by_caller,
                hub.subscribe(lambda row: True, caller_service="other") as others):
        await add_event(container, mine.id, "unwanted")
        await add_event(container, mine.id, "wanted")
        await add_event(container, other.id, "theirs")
        assert [u.event.event_type for u in await drain(by_payment, 2)] == ["unwanted", "wanted"]
        assert [u.event.event_type for u in await drain(by_caller, 1)] == ["wanted"]
        assert [u.event.event_type for u in await drain(others, 1)] == ["theirs"]
        await asyncio.sleep(4 * INTERVAL)
        assert by_caller.queue.empty() and others.queue.empty()


async def test_a_slow_watcher_is_ended_and_the_others_get_everything(container, hub):
    payment = await create(container)
    async with (hub.subscribe(lambda row: True, payment_id=payment.id) as slow,
                hub.subscribe(lambda row: True, payment_id=payment.id) as fast):
        received = []
        for i in range(6):  # the queue holds 3 (PAYMENTS_WATCH_QUEUE_SIZE)
            await add_event(container, payment.id, f"e{i}")
            received += await drain(fast, 1)
        assert [u.event.event_type for u in received] == [f"e{i}" for i in range(6)]
        with pytest.raises(WatchEnded, match="fell behind"):
            await slow.next(1.0)
        assert slow.ended == SLOW_READER


async def test_an_id_committed_after_a_higher_one_is_still_delivered(container, hub):
    payment = await create(container)
    async with hub.subscribe(lambda row: True, payment_id=payment.id) as sub:
        base = hub.cursor
        await add_event(container, payment.id, "second", event_id=base + 2)  # committed first
        assert [u.event.id for u in await drain(sub, 1)] == [base + 2]
        await add_event(container, payment.id, "first", event_id=base + 1)  # its transaction ended later
        assert [u.event.id for u in await drain(sub, 1)] == [base + 1]
        await asyncio.sleep(4 * INTERVAL)
        assert sub.queue.empty()  # each delivered once


async def test_no_queries_while_nobody_watches(container, hub, tail_reads):
    payment = await create(container)
    async with hub.subscribe(lambda row: True, payment_id=payment.id):
        await asyncio.sleep(3 * INTERVAL)
    await asyncio.sleep(2 * INTERVAL)  # the tail notices it is alone
    tail_reads.clear()
    await asyncio.sleep(10 * INTERVAL)
    assert tail_reads == []


async def test_shutdown_ends_every_watcher(container, hub):
    payment = await create(container)
    updates = watch.WatchService(container.db, hub, container.settings).watch_payment(SHOP, payment.id, 0)
    snapshot = await anext(updates)
    assert snapshot.payment.status == PaymentStatus.PENDING and snapshot.after_event_id > 0
    waiting = asyncio.ensure_future(anext(updates))
    await asyncio.sleep(3 * INTERVAL)
    await hub.close()
    ended = await asyncio.wait_for(waiting, 2)
    assert (ended.ended_reason, ended.final) == (SHUTTING_DOWN, True)
    await updates.aclose()
