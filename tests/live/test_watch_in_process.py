"""Live status in-process, exact values: the subscriptions' queues, the hub's tail (a page
of new events, ids committed late, the gap bound, the tail's outages and its lifecycle),
WatchPayment's snapshot, backlog and live events, WatchPayments' filters and backlog, and
the event feed's reads of payment_events."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime
from types import SimpleNamespace

import pytest

from payments_svc import metrics
from payments_svc.auth.caller import Caller
from payments_svc.db.tables import payment_events, payments
from payments_svc.domain.enums import PaymentStatus, ProviderType
from payments_svc.domain.errors import NotFoundError, PermissionDeniedError, ServiceUnavailableError, ValidationError
from payments_svc.domain.payment import CreatePaymentCommand, PaymentEvent
from payments_svc.repository.event_feed import EventFeedRepository, FeedEvent
from payments_svc.repository.payments import PaymentRepository
from payments_svc.service import watch
from payments_svc.service.watch import (
    KEEPALIVE,
    SHUTTING_DOWN,
    SLOW_READER,
    Subscription,
    Update,
    WatchEnded,
    WatchHub,
    WatchService,
)

SHOP, OTHER, OPS = Caller("shop"), Caller("other"), Caller("ops", frozenset({"*"}))
INTERVAL = 0.02
KEEPALIVE_SECONDS = 0.05
WHEN = datetime(2026, 3, 4, 5, 6, 7, 123456)  # the created_at of the events the tests add
PENDING, PAID, CANCELED = PaymentStatus.PENDING, PaymentStatus.PAID, PaymentStatus.CANCELED
SANDBOX, STRIPE = ProviderType.SANDBOX, ProviderType.STRIPE


@pytest.fixture(autouse=True)
def bounded_ready(monkeypatch):
    """A tail that never becomes ready fails the subscription in 3 s, not 10."""
    monkeypatch.setattr(watch, "READY_TIMEOUT_SECONDS", 3.0)


@pytest.fixture
async def container(make_container):
    container = await make_container(PAYMENTS_WATCH_POLL_INTERVAL_SECONDS=str(INTERVAL),
                                     PAYMENTS_WATCH_KEEPALIVE_SECONDS=str(KEEPALIVE_SECONDS),
                                     PAYMENTS_WATCH_QUEUE_SIZE="8")
    yield container
    await container.close()


@pytest.fixture
def service(container, hub):
    return WatchService(container.db, hub, container.settings)


async def create(container, caller: str = "shop"):
    command = CreatePaymentCommand(
        request_id="req-" + uuid.uuid4().hex[:12], caller_service=caller, resource_type="order", resource_id="o-1",
        customer_ref="", amount_cents=100, currency="usd", payment_method=1, payment_type=1, provider=100,
        recurring_interval="", recurring_interval_count=0, status_callback_url="https://shop.example/cb",
        success_url="", cancel_url="", metadata={},
    )
    return (await container.service.create_payment(Caller(caller), command)).payment


async def add_event(db, payment_id: int, event_type: str = "note", *, new_status: PaymentStatus = PENDING,
                    event_id: int | None = None, **columns) -> PaymentEvent:
    """Inserts one event (at `event_id` if given) and returns it as the feed reads it."""
    values = dict(payment_id=payment_id, event_type=event_type, old_status=int(PENDING), new_status=int(new_status),
                  provider_event_id=None, needs_attention=False, message=None, created_at=WHEN)
    values.update(columns)
    if event_id is not None:
        values["id"] = event_id
    async with db.transaction() as conn:
        result = await conn.execute(payment_events.insert().values(**values))
    return PaymentEvent(event_id or result.inserted_primary_key[0], payment_id, event_type, PENDING, new_status,
                        values["provider_event_id"], values["needs_attention"], values["message"], WHEN)


async def current(db, payment_id: int):
    async with db.read() as conn:
        return await PaymentRepository(conn).get(payment_id)


async def last_id(db) -> int:
    async with db.read() as conn:
        return await EventFeedRepository(conn).last_id()


async def set_payment(db, payment_id: int, **values) -> None:
    async with db.transaction() as conn:
        await conn.execute(payments.update().where(payments.c.id == payment_id).values(**values))


def queued(sub: Subscription) -> list[Update]:
    """What the hub has put in the subscription's queue so far (emptied)."""
    items = []
    while not sub.queue.empty():
        items.append(sub.queue.get_nowait())
    return items


async def next_event(updates, timeout: float = 3.0) -> Update:
    """The stream's next update that is not a keep-alive."""
    async with asyncio.timeout(timeout):
        while True:
            update = await anext(updates)
            if update is not KEEPALIVE:
                return update
            await asyncio.sleep(0)  # lets the timeout end a stream that only ever sends keep-alives


async def until_keepalive(updates, timeout: float = 3.0) -> list[Update]:
    """The updates already waiting, read until the first keep-alive (nothing more is queued)."""
    got = []
    async with asyncio.timeout(timeout):
        while (update := await anext(updates)) is not KEEPALIVE:
            got.append(update)
    return got


async def wait_for(condition, timeout: float = 3.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(INTERVAL / 2)


def everything(row: FeedEvent) -> bool:
    return True


# --- Subscription, _not_final, _check_after, _all_pages, _live: no database --------------


async def test_a_subscription_queues_updates_until_full_then_ends_as_too_slow():
    first, second, third = Update(after_event_id=1), Update(after_event_id=2), Update(after_event_id=3)
    sub = Subscription(everything, 2)
    assert (sub.matches, sub.queue.maxsize, sub.ended) == (everything, 2, None)
    assert sub.offer(first) is True
    assert await sub.next(1.0) is first
    assert sub.offer(KEEPALIVE) is True
    assert await sub.next(1.0) is None  # a queued keep-alive reads as "nothing yet"
    async with asyncio.timeout(1):
        assert await sub.next(0.01) is None  # nothing within the timeout

    assert (sub.offer(first), sub.offer(second)) == (True, True)
    assert sub.offer(third) is False  # full: the watcher is ended, the hub goes on
    assert sub.ended == SLOW_READER
    assert sub.offer(third) is True  # ended: quietly ignored
    assert list(sub.queue._queue) == [first, second]
    with pytest.raises(WatchEnded) as ended:
        await sub.next(1.0)
    assert str(ended.value) == SLOW_READER


async def test_ending_a_subscription_wakes_its_waiting_reader_with_the_reason():
    sub = Subscription(everything, 2)
    reader = asyncio.ensure_future(sub.next(5.0))
    await asyncio.sleep(0.01)  # the reader waits on the empty queue
    sub.end("bye")
    with pytest.raises(WatchEnded) as ended:
        await asyncio.wait_for(reader, 1)
    assert (str(ended.value), sub.ended) == ("bye", "bye")

    full = Subscription(everything, 1)
    assert full.offer(Update(after_event_id=1)) is True
    full.end("gone")  # a full queue: no wake-up needed, and no error
    assert full.ended == "gone"
    with pytest.raises(WatchEnded, match="^gone$"):
        await full.next(1.0)


def test_watch_payments_updates_are_never_final_except_the_end_of_the_stream():
    payment, event = object(), object()
    assert watch._not_final(Update(payment=payment, event=event, final=True)) == Update(payment=payment, event=event)
    ended = Update(ended_reason=SHUTTING_DOWN, final=True)
    assert watch._not_final(ended) is ended
    ongoing = Update(payment=payment, event=event)
    assert watch._not_final(ongoing) is ongoing
    assert watch._not_final(KEEPALIVE) is KEEPALIVE


def test_after_event_id_must_not_be_negative():
    watch._check_after(0)
    with pytest.raises(ValidationError) as refused:
        watch._check_after(-1)
    assert (refused.value.message, refused.value.field) == ("after_event_id must be >= 0", "after_event_id")


async def test_all_pages_reads_page_after_page_from_the_last_id_seen(monkeypatch):
    monkeypatch.setattr(watch, "BACKLOG_PAGE", 3)
    rows = [SimpleNamespace(event=SimpleNamespace(id=i)) for i in range(1, 8)]
    asked = []

    async def read(after):
        asked.append(after)
        return [row for row in rows if row.event.id > after][:3]

    assert [row.event.id for row in await watch._all_pages(read, 0)] == [1, 2, 3, 4, 5, 6, 7]
    assert asked == [0, 3, 6]
    asked.clear()
    assert [row.event.id for row in await watch._all_pages(read, 1)] == [2, 3, 4, 5, 6, 7]
    assert asked == [1, 4, 7]  # a full last page: one more read finds the end


async def test_live_skips_what_the_resume_point_and_the_backlog_covered_and_ends_with_the_reason():
    service = WatchService(None, None, SimpleNamespace(watch_keepalive_seconds=KEEPALIVE_SECONDS))
    assert service.keepalive_seconds == KEEPALIVE_SECONDS
    sub = Subscription(everything, 10)
    updates = {i: Update(event=SimpleNamespace(id=i)) for i in (4, 5, 6, 7, 8)}
    for update in updates.values():
        sub.offer(update)
    live = service._live(sub, 5, {7})
    async with asyncio.timeout(2):
        assert await anext(live) is updates[6]  # 4 and 5: at or before the resume point
        assert await anext(live) is updates[8]  # 7: sent with the backlog already
        assert await anext(live) is KEEPALIVE  # nothing for keepalive_seconds
        sub.end("bye")
        assert await anext(live) == Update(ended_reason="bye", final=True)
        with pytest.raises(StopAsyncIteration):
            await anext(live)


# --- the hub's tail, one tick at a time ---------------------------------------------------


async def test_a_tick_hands_each_new_event_to_the_watchers_of_its_payment_and_caller(container, hub):
    db = container.db
    assert (hub.watchers, hub.cursor) == (0, 0)
    mine, theirs, nobodys = await create(container), await create(container, "other"), await create(container, "third")
    hub._cursor = await last_id(db)
    seen = []

    def wanted(row: FeedEvent) -> bool:
        seen.append(row)
        return row.event.event_type == "wanted"

    by_payment, by_caller, others = Subscription(everything, 8), Subscription(wanted, 8), Subscription(everything, 8)
    hub._by_payment[mine.id] = {by_payment}
    hub._by_caller["shop"] = {by_caller}
    hub._by_caller["other"] = {others}
    unwanted = await add_event(db, mine.id, "unwanted")
    paid = await add_event(db, mine.id, "wanted", new_status=PAID)
    their = await add_event(db, theirs.id, "theirs")
    nobody = await add_event(db, nobodys.id, "nobody")  # no watcher of this payment or caller

    assert await hub._tick() is False  # less than a page: nothing more waiting
    assert (hub.cursor, hub._gaps) == (nobody.id, {})
    mine_now, theirs_now = await current(db, mine.id), await current(db, theirs.id)
    assert queued(by_payment) == [Update(payment=mine_now, event=unwanted, final=False),
                                  Update(payment=mine_now, event=paid, final=True)]
    assert queued(by_caller) == [Update(payment=mine_now, event=paid, final=True)]
    assert seen == [FeedEvent(unwanted, "shop", SANDBOX), FeedEvent(paid, "shop", SANDBOX)]
    assert queued(others) == [Update(payment=theirs_now, event=their, final=False)]

    assert await hub._tick() is False  # nothing new: nothing handed out again
    assert queued(by_payment) == queued(by_caller) == queued(others) == []


async def test_delivery_skips_a_deleted_payment_and_counts_each_watcher_it_drops(container, hub):
    db = container.db
    payment = await create(container)
    event = await add_event(db, payment.id, "note")
    ghost = FeedEvent(PaymentEvent(10**9, 10**9, "note", PENDING, PENDING, None, False, None, WHEN), "shop", SANDBOX)
    watcher = Subscription(everything, 8)
    hub._by_caller["shop"] = {watcher}
    await hub._deliver([ghost, FeedEvent(event, "shop", SANDBOX)])  # the ghost's payment is gone
    payment_now = await current(db, payment.id)
    assert queued(watcher) == [Update(payment=payment_now, event=event, final=False)]

    slow = Subscription(everything, 1)
    hub._by_caller["shop"] = {slow}
    dropped = metrics.WATCHERS_DROPPED._value.get()
    await hub._deliver([FeedEvent(event, "shop", SANDBOX)] * 3)  # queued, overflowing, ignored (ended)
    assert metrics.WATCHERS_DROPPED._value.get() - dropped == 1
    assert (slow.ended, list(slow.queue._queue)) == (SLOW_READER, [Update(payment=payment_now, event=event, final=False)])


async def test_an_id_committed_late_is_read_again_for_gap_wait_seconds_then_forgotten(container, hub, monkeypatch):
    clock = SimpleNamespace(now=1000.0)
    monkeypatch.setattr(watch, "time", SimpleNamespace(monotonic=lambda: clock.now))
    monkeypatch.setattr(watch, "TAIL_PAGE", 3)
    db = container.db
    payment = await create(container)
    base = hub._cursor = await last_id(db)
    sub = Subscription(everything, 16)
    hub._by_payment[payment.id] = {sub}

    second = await add_event(db, payment.id, "second", event_id=base + 2)  # committed first
    assert await hub._tick() is False
    assert [u.event for u in queued(sub)] == [second]
    assert (hub.cursor, hub._gaps) == (base + 2, {base + 1: 1000.0})

    clock.now = 1001.0
    first = await add_event(db, payment.id, "first", event_id=base + 1)  # its transaction ended later
    third = await add_event(db, payment.id, "third", event_id=base + 3)
    fourth = await add_event(db, payment.id, "fourth", event_id=base + 4)
    assert await hub._tick() is True  # a full page (TAIL_PAGE) from just below the gap: read again
    assert [u.event for u in queued(sub)] == [first, third]  # base + 2 once only
    assert (hub.cursor, hub._gaps) == (base + 3, {})
    assert await hub._tick() is False
    assert [u.event for u in queued(sub)] == [fourth]

    clock.now = 2000.0
    seventh = await add_event(db, payment.id, "seventh", event_id=base + 7)
    assert await hub._tick() is False
    assert [u.event for u in queued(sub)] == [seventh]
    assert (hub.cursor, hub._gaps) == (base + 7, {base + 5: 2000.0, base + 6: 2000.0})
    clock.now = 2004.999
    assert await hub._tick() is False
    assert hub._gaps == {base + 5: 2000.0, base + 6: 2000.0}  # still waited for
    clock.now = 2005.0
    assert await hub._tick() is False
    assert hub._gaps == {}  # GAP_WAIT_SECONDS passed
    await add_event(db, payment.id, "too late", event_id=base + 5)
    assert await hub._tick() is False
    assert (queued(sub), hub.cursor) == ([], base + 7)


async def test_a_jump_of_more_than_max_tracked_gap_ids_is_not_tracked_as_gaps(container, hub):
    db = container.db
    payment = await create(container)
    base = hub._cursor = await last_id(db)
    await add_event(db, payment.id, event_id=base + 1001)  # 1000 ids missing: tracked
    await hub._tick()
    assert (hub.cursor, sorted(hub._gaps)) == (base + 1001, list(range(base + 1, base + 1001)))
    hub._gaps.clear()
    await add_event(db, payment.id, event_id=base + 1001 + 1002)  # 1001 ids missing: a restored sequence
    await hub._tick()
    assert (hub.cursor, hub._gaps) == (base + 2003, {})


# --- the hub's tail task -------------------------------------------------------------------


async def test_the_tail_starts_at_the_tables_end_runs_while_anyone_watches_and_ends_at_close(container, hub):
    db = container.db
    payment = await create(container)
    async with hub.subscribe(everything, payment_id=payment.id) as sub:
        assert (hub.watchers, hub.cursor) == (1, await last_id(db))
        event = await add_event(db, payment.id, "after")
        async with asyncio.timeout(3):
            update = await sub.next(3.0)
        assert update == Update(payment=await current(db, payment.id), event=event, final=False)
    assert hub.watchers == 0
    await wait_for(hub._task.done)  # nobody watches: the tail stops
    assert not hub._ready.is_set()

    missed = await add_event(db, payment.id, "while nobody watched")
    async with (hub.subscribe(everything, payment_id=payment.id) as by_payment,
                hub.subscribe(everything, caller_service="shop") as by_caller):
        assert (hub.watchers, hub.cursor) == (2, missed.id)  # from the table's end again
        task = hub._task
        await hub.close()
        assert task.cancelled()
        for sub in (by_payment, by_caller):
            assert sub.ended == SHUTTING_DOWN
            with pytest.raises(WatchEnded) as ended:
                await sub.next(1.0)
            assert str(ended.value) == SHUTTING_DOWN
    with pytest.raises(ServiceUnavailableError) as refused:
        async with hub.subscribe(everything, payment_id=payment.id):
            pass
    assert refused.value.message == SHUTTING_DOWN
    assert hub.watchers == 0


async def test_closing_a_hub_nobody_used_is_fine(container):
    hub = WatchHub(container.db, container.settings)
    await hub.close()
    with pytest.raises(ServiceUnavailableError):
        async with hub.subscribe(everything, caller_service="shop"):
            pass


async def test_a_failing_tail_keeps_its_watchers_and_logs_once_per_outage(container, hub, monkeypatch):
    db = container.db
    logged = []
    monkeypatch.setattr(watch, "log", SimpleNamespace(warning=lambda event, **kw: logged.append((event, kw))))
    outage, reads = SimpleNamespace(on=False), SimpleNamespace(failed=0, ok=0)
    original = EventFeedRepository.after

    async def after(self, after_id, *, limit):
        if outage.on:
            reads.failed += 1
            raise RuntimeError("tail down")
        reads.ok += 1
        return await original(self, after_id, limit=limit)

    monkeypatch.setattr(EventFeedRepository, "after", after)
    payment = await create(container)
    outage.on = True  # from the tail's first read on
    async with hub.subscribe(everything, payment_id=payment.id) as sub:
        await wait_for(lambda: reads.failed >= 3)
        assert logged == [("watch_tail_failed", {"error": "RuntimeError: tail down"})]
        event = await add_event(db, payment.id, "through the outage")
        outage.on = False
        async with asyncio.timeout(3):
            update = await sub.next(3.0)
        assert update.event == event  # the watcher was kept
        ok = reads.ok
        await wait_for(lambda: reads.ok >= ok + 2)
        outage.on = True
        failed = reads.failed
        await wait_for(lambda: reads.failed >= failed + 2)
        assert logged == [("watch_tail_failed", {"error": "RuntimeError: tail down"})] * 2  # a new outage
        outage.on = False


# --- WatchService.watch_payment ------------------------------------------------------------


async def test_watch_payment_sends_the_snapshot_then_live_events_and_ends_after_the_terminal_one(container, service):
    db = container.db
    payment = await create(container)
    latest = await last_id(db)
    updates = service.watch_payment(SHOP, payment.id, 0)
    payment_now = await current(db, payment.id)
    assert await anext(updates) == Update(payment=payment_now, final=False, after_event_id=latest)
    async with asyncio.timeout(2):
        assert await anext(updates) is KEEPALIVE  # nothing happened for keepalive_seconds
    note = await add_event(db, payment.id, "note")
    assert await next_event(updates) == Update(payment=payment_now, event=note, final=False)
    paid = await add_event(db, payment.id, "paid", new_status=PAID)
    assert await next_event(updates) == Update(payment=payment_now, event=paid, final=True)
    with pytest.raises(StopAsyncIteration):
        await anext(updates)
    assert service.hub.watchers == 0


async def test_watch_payment_refuses_another_callers_payment_a_bad_id_and_a_negative_resume_point(container, service):
    payment = await create(container)
    with pytest.raises(NotFoundError):
        await anext(service.watch_payment(OTHER, payment.id, 0))
    with pytest.raises(ValidationError) as refused:
        await anext(service.watch_payment(SHOP, 0, 0))
    assert (refused.value.message, refused.value.field) == ("invalid payment id", "id")
    with pytest.raises(ValidationError) as refused:
        await anext(service.watch_payment(SHOP, payment.id, -1))
    assert (refused.value.message, refused.value.field) == ("after_event_id must be >= 0", "after_event_id")
    assert service.hub.watchers == 0


async def test_watch_payment_resumes_with_the_events_after_the_given_id_in_pages(container, service, monkeypatch):
    monkeypatch.setattr(watch, "BACKLOG_PAGE", 2)
    asked = []
    original = EventFeedRepository.for_payment

    async def for_payment(self, payment_id, *, after_id, limit):
        asked.append((payment_id, after_id, limit))
        return await original(self, payment_id, after_id=after_id, limit=limit)

    monkeypatch.setattr(EventFeedRepository, "for_payment", for_payment)
    db = container.db
    payment, other = await create(container), await create(container)
    resume = await last_id(db)
    missed = []
    for i in range(4):
        missed.append(await add_event(db, payment.id, f"missed {i}"))
        await add_event(db, other.id, "another payment's")
    updates = service.watch_payment(SHOP, payment.id, resume)
    payment_now = await current(db, payment.id)
    assert await anext(updates) == Update(payment=payment_now, final=False, after_event_id=resume)
    for event in missed:
        assert await anext(updates) == Update(payment=payment_now, event=event, final=False)
    assert asked == [(payment.id, resume, 2), (payment.id, missed[1].id, 2), (payment.id, missed[3].id, 2)]
    live = await add_event(db, payment.id, "live")
    assert await next_event(updates) == Update(payment=payment_now, event=live, final=False)
    await updates.aclose()


async def test_watch_payment_of_a_terminal_payment_sends_what_is_asked_then_ends(container, service):
    db = container.db
    payment = await create(container)
    resume = await last_id(db)
    missed = [await add_event(db, payment.id, f"missed {i}") for i in range(3)]
    await set_payment(db, payment.id, status=int(CANCELED))
    payment_now = await current(db, payment.id)

    async with asyncio.timeout(3):  # the stream ends by itself
        updates = [u async for u in service.watch_payment(SHOP, payment.id, 0)]
    assert updates == [Update(payment=payment_now, final=True, after_event_id=missed[-1].id)]

    async with asyncio.timeout(3):
        updates = [u async for u in service.watch_payment(SHOP, payment.id, resume)]
    assert updates == [Update(payment=payment_now, final=False, after_event_id=resume),
                       Update(payment=payment_now, event=missed[0], final=False),
                       Update(payment=payment_now, event=missed[1], final=False),
                       Update(payment=payment_now, event=missed[2], final=True)]


# --- WatchService.watch_payments -----------------------------------------------------------


async def test_watch_payments_is_for_the_callers_own_service_unless_it_acts_for_others(container, service):
    with pytest.raises(PermissionDeniedError) as refused:
        await anext(service.watch_payments(OTHER, caller_service="shop", status=None, provider=None, after_event_id=0))
    assert refused.value.message == "this api key may not read payments of caller_service 'shop'"
    assert refused.value.field == "caller_service"
    with pytest.raises(ValidationError) as refused:
        await anext(service.watch_payments(SHOP, caller_service="", status=None, provider=None, after_event_id=-1))
    assert (refused.value.message, refused.value.field) == ("after_event_id must be >= 0", "after_event_id")
    assert service.hub.watchers == 0


async def test_watch_payments_streams_the_callers_events_that_match_its_filters(container, hub, service):
    db = container.db
    payment, theirs = await create(container), await create(container, "other")
    streams = {
        "paid": service.watch_payments(SHOP, caller_service="", status=PAID, provider=None, after_event_id=0),
        "stripe": service.watch_payments(SHOP, caller_service="", status=None, provider=STRIPE, after_event_id=0),
        "paid sandbox": service.watch_payments(SHOP, caller_service="shop", status=PAID, provider=SANDBOX,
                                               after_event_id=0),
        "paid stripe": service.watch_payments(SHOP, caller_service="", status=PAID, provider=STRIPE, after_event_id=0),
        "all": service.watch_payments(SHOP, caller_service="", status=None, provider=None, after_event_id=0),
        "admin": service.watch_payments(OPS, caller_service="shop", status=None, provider=None, after_event_id=0),
    }
    for updates in streams.values():
        assert await anext(updates) is KEEPALIVE  # subscribed: what is committed from now on comes
    async with hub.subscribe(everything, caller_service="shop") as sentinel:
        note = await add_event(db, payment.id, "note")
        await add_event(db, theirs.id, "their paid", new_status=PAID)
        paid = await add_event(db, payment.id, "paid", new_status=PAID)
        async with asyncio.timeout(3):
            while (update := await sentinel.next(3.0)) is None or update.event != paid:
                pass  # once the sentinel has it, every stream of this caller has it queued
    payment_now = await current(db, payment.id)
    as_note, as_paid = Update(payment=payment_now, event=note), Update(payment=payment_now, event=paid)  # never final
    assert {name: await until_keepalive(updates) for name, updates in streams.items()} == {
        "paid": [as_paid], "stripe": [], "paid sandbox": [as_paid], "paid stripe": [], "all": [as_note, as_paid],
        "admin": [as_note, as_paid],
    }
    await hub.close()
    for updates in streams.values():
        assert await next_event(updates) == Update(ended_reason=SHUTTING_DOWN, final=True)
        with pytest.raises(StopAsyncIteration):
            await anext(updates)


async def test_watch_payments_resumes_with_a_filtered_backlog_in_pages_without_repeating_it(container, hub, service,
                                                                                           monkeypatch):
    monkeypatch.setattr(watch, "BACKLOG_PAGE", 3)
    asked = []
    original = EventFeedRepository.for_callers

    async def for_callers(self, callers, **kwargs):
        asked.append((callers, kwargs))
        return await original(self, callers, **kwargs)

    monkeypatch.setattr(EventFeedRepository, "for_callers", for_callers)
    db = container.db
    sandbox, stripe, theirs = await create(container), await create(container), await create(container, "other")
    await set_payment(db, stripe.id, provider=int(STRIPE))
    resume = await last_id(db)
    matching = []
    for i in range(4):
        matching.append(await add_event(db, sandbox.id, f"paid {i}", new_status=PAID))
        await add_event(db, sandbox.id, "note")  # another status
        await add_event(db, stripe.id, "stripe paid", new_status=PAID)  # another provider
        await add_event(db, theirs.id, "their paid", new_status=PAID)  # another caller

    async with hub.subscribe(everything, caller_service="shop") as sentinel:
        updates = service.watch_payments(SHOP, caller_service="", status=PAID, provider=SANDBOX, after_event_id=resume)
        assert await anext(updates) is KEEPALIVE
        # Committed after the subscription and handed out before the backlog is read: in both.
        both = await add_event(db, sandbox.id, "paid again", new_status=PAID)
        async with asyncio.timeout(3):
            while (update := await sentinel.next(3.0)) is None or update.event != both:
                pass
        upto = hub.cursor
        sandbox_now = await current(db, sandbox.id)
        assert await until_keepalive(updates) == [Update(payment=sandbox_now, event=e) for e in (*matching, both)]
        page = dict(upto_id=upto, limit=3, status=PAID, provider=SANDBOX)
        assert asked == [(frozenset({"shop"}), dict(after_id=resume, **page)),
                         (frozenset({"shop"}), dict(after_id=matching[2].id, **page))]
        live = await add_event(db, sandbox.id, "live paid", new_status=PAID)
        assert await next_event(updates) == Update(payment=sandbox_now, event=live)
        await updates.aclose()


# --- EventFeedRepository -------------------------------------------------------------------


async def test_the_event_feed_reads_events_with_their_payments_caller_and_provider(container):
    db = container.db
    async with db.read() as conn:
        assert (await EventFeedRepository(conn).last_id(), await EventFeedRepository(conn).for_payment_latest(1)) == (0, 0)
    shop, stripe, other = await create(container), await create(container), await create(container, "other")
    await set_payment(db, stripe.id, provider=int(STRIPE))
    base = await last_id(db)
    a = await add_event(db, shop.id, "a", provider_event_id="pe-a", needs_attention=True, message="look")
    b = await add_event(db, stripe.id, "b", new_status=PAID)
    c = await add_event(db, shop.id, "c", new_status=PAID)
    d = await add_event(db, other.id, "d", new_status=PAID)
    e = await add_event(db, stripe.id, "e")
    f = await add_event(db, shop.id, "f")
    fa, fb, fc, fd, fe, ff = (FeedEvent(a, "shop", SANDBOX), FeedEvent(b, "shop", STRIPE), FeedEvent(c, "shop", SANDBOX),
                              FeedEvent(d, "other", SANDBOX), FeedEvent(e, "shop", STRIPE), FeedEvent(f, "shop", SANDBOX))
    async with db.read() as conn:
        feed = EventFeedRepository(conn)
        assert feed.conn is conn
        assert await feed.last_id() == f.id
        assert await feed.after(base, limit=10) == [fa, fb, fc, fd, fe, ff]
        assert await feed.after(a.id, limit=3) == [fb, fc, fd]
        assert await feed.after(f.id, limit=10) == []

        shops = frozenset({"shop"})
        assert await feed.for_callers(shops, after_id=base, upto_id=f.id, limit=10) == [fa, fb, fc, fe, ff]
        assert await feed.for_callers(shops, after_id=a.id, upto_id=e.id, limit=10) == [fb, fc, fe]
        assert await feed.for_callers(shops, after_id=base, upto_id=f.id, limit=2) == [fa, fb]
        assert await feed.for_callers(frozenset({"other", "shop"}), after_id=base, upto_id=d.id, limit=10) == [
            fa, fb, fc, fd]
        assert await feed.for_callers(shops, after_id=base, upto_id=f.id, limit=10, status=PAID) == [fb, fc]
        assert await feed.for_callers(shops, after_id=base, upto_id=f.id, limit=10, provider=STRIPE) == [fb, fe]
        assert await feed.for_callers(shops, after_id=base, upto_id=f.id, limit=10, status=PAID, provider=SANDBOX) == [fc]

        assert await feed.for_payment(shop.id, after_id=base, limit=10) == [fa, fc, ff]
        assert await feed.for_payment(shop.id, after_id=a.id, limit=10) == [fc, ff]
        assert await feed.for_payment(shop.id, after_id=base, limit=2) == [fa, fc]
        assert (await feed.for_payment_latest(shop.id), await feed.for_payment_latest(other.id)) == (f.id, d.id)
        assert await feed.for_payment_latest(10**9) == 0
    # Stored out of id order (an id handed out first, committed last): still read in id order.
    high = await add_event(db, shop.id, "high", event_id=f.id + 2)
    low = await add_event(db, shop.id, "low", event_id=f.id + 1)
    async with db.read() as conn:
        feed = EventFeedRepository(conn)
        in_order = [FeedEvent(low, "shop", SANDBOX), FeedEvent(high, "shop", SANDBOX)]
        assert await feed.after(f.id, limit=10) == in_order
        assert await feed.for_payment(shop.id, after_id=f.id, limit=10) == in_order
