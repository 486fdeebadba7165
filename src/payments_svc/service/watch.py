"""Live status: WatchPayment, WatchPayments and the SSE stream, over one tail of the
payment_events table per process.

WatchHub reads the rows of payment_events with an id above the last it has seen,
once per PAYMENTS_WATCH_POLL_INTERVAL_SECONDS, while at least one watcher is open, and
hands each event to the watchers it matches (indexed by payment id and by caller
service) through bounded queues: a watcher that cannot keep up is ended, it never holds
up the others. A change committed by any process of the replica set is in the table,
so every process's hub sees it within one interval.

Auto-increment ids are handed out at insert and committed in any order (MySQL,
PostgreSQL): an id skipped by the tail is remembered as a gap and looked for again for
GAP_WAIT_SECONDS, so an event whose transaction committed late is still delivered."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import structlog

from .. import metrics
from ..auth.caller import Caller
from ..config import Settings
from ..db.engine import Database
from ..domain.enums import PaymentStatus, ProviderType
from ..domain.errors import PermissionDeniedError, ServiceUnavailableError, ValidationError
from ..domain.payment import Payment, PaymentEvent
from ..domain.validation import validate_payment_id
from ..repository.event_feed import EventFeedRepository, FeedEvent
from ..repository.payments import PaymentRepository
from .payments import visible_to

log = structlog.get_logger("payments.watch")

TAIL_PAGE = 1000
BACKLOG_PAGE = 500
GAP_WAIT_SECONDS = 5.0
MAX_TRACKED_GAP = 1000  # a larger jump in ids is not a commit-order gap (e.g. a restored sequence)
READY_TIMEOUT_SECONDS = 10.0
SLOW_READER = "the watcher fell behind (it read more slowly than events came); reconnect with the last event id received"
SHUTTING_DOWN = "the server is shutting down; reconnect with the last event id received"


@dataclass(frozen=True, slots=True)
class Update:
    """One message of a watch stream. Neither payment nor event: a keep-alive."""

    payment: Payment | None = None
    event: PaymentEvent | None = None
    final: bool = False
    ended_reason: str = ""
    after_event_id: int = 0  # the snapshot's resume point: the payment's latest event id when it was read


KEEPALIVE = Update()


class WatchEnded(Exception):
    """The hub ended this watcher (too slow, or shutting down); the message says why."""


class Subscription:
    def __init__(self, matches: Callable[[FeedEvent], bool], queue_size: int):
        self.matches = matches
        self.queue: asyncio.Queue[Update] = asyncio.Queue(queue_size)
        self.ended: str | None = None

    def offer(self, update: Update) -> bool:
        """Queues without waiting; False (and ended) when the queue is full."""
        if self.ended is not None:
            return True
        try:
            self.queue.put_nowait(update)
        except asyncio.QueueFull:
            self.end(SLOW_READER)
            return False
        return True

    def end(self, reason: str) -> None:
        self.ended = reason
        try:
            self.queue.put_nowait(KEEPALIVE)  # wakes a reader waiting on an empty queue
        except asyncio.QueueFull:
            pass  # not waiting: it finds `ended` on its next read

    async def next(self, timeout: float) -> Update | None:
        """The next update, None after `timeout` seconds without one (send a keep-alive)."""
        if self.ended is not None:
            raise WatchEnded(self.ended)
        try:
            update = await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            return None
        if self.ended is not None:
            raise WatchEnded(self.ended)
        return update if update is not KEEPALIVE else None


class WatchHub:
    def __init__(self, db: Database, settings: Settings):
        self._db = db
        self._interval = settings.watch_poll_interval_seconds
        self._queue_size = settings.watch_queue_size
        self._by_payment: dict[int, set[Subscription]] = {}
        self._by_caller: dict[str, set[Subscription]] = {}
        self._count = 0
        self._cursor = 0
        self._gaps: dict[int, float] = {}
        self._ready = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._closed = False

    @property
    def watchers(self) -> int:
        return self._count

    @property
    def cursor(self) -> int:
        return self._cursor

    @asynccontextmanager
    async def subscribe(self, matches: Callable[[FeedEvent], bool], *, payment_id: int | None = None,
                        caller_service: str | None = None) -> AsyncIterator[Subscription]:
        """A watcher of the events of one payment, or of one caller service, that `matches`
        accepts. Entered once the tail knows where the table ends: everything committed
        after that reaches the subscription (read what came before from the table)."""
        if self._closed:
            raise ServiceUnavailableError(SHUTTING_DOWN)
        sub = Subscription(matches, self._queue_size)
        index, key = (self._by_payment, payment_id) if payment_id is not None else (self._by_caller, caller_service)
        index.setdefault(key, set()).add(sub)
        self._count += 1
        metrics.WATCHERS.inc()
        try:
            if self._task is None or self._task.done():
                self._task = asyncio.create_task(self._run(), name="watch_hub")
            try:
                await asyncio.wait_for(self._ready.wait(), READY_TIMEOUT_SECONDS)
            except TimeoutError:
                raise ServiceUnavailableError("database unavailable; retry") from None
            yield sub
        finally:
            subs = index.get(key)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del index[key]
            self._count -= 1
            metrics.WATCHERS.dec()

    async def close(self) -> None:
        """Ends every watcher (they are told to reconnect) and the tail."""
        self._closed = True
        for subs in (*self._by_payment.values(), *self._by_caller.values()):
            for sub in subs:
                sub.end(SHUTTING_DOWN)
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        """The tail: runs while anyone watches (an idle process sends no queries)."""
        failing = False
        while self._count:
            try:
                if not self._ready.is_set():
                    async with self._db.read() as conn:
                        self._cursor = await EventFeedRepository(conn).last_id()
                    self._gaps.clear()
                    self._ready.set()
                while await self._tick():
                    pass  # a full page: more is waiting
                failing = False
            except Exception as exc:  # the database is away: keep the watchers, try next interval
                metrics.WATCH_TAIL_ERRORS.inc()
                if not failing:  # logged once per outage, not every interval
                    log.warning("watch_tail_failed", error=f"{type(exc).__name__}: {exc}")
                failing = True
            await asyncio.sleep(self._interval)
        # Nobody watches: the next watcher starts from the table's end again.
        self._ready.clear()

    async def _tick(self) -> bool:
        """Reads and hands out the new events; True when a full page came (read again)."""
        floor = min(self._gaps) - 1 if self._gaps else self._cursor
        async with self._db.read() as conn:
            rows = await EventFeedRepository(conn).after(floor, limit=TAIL_PAGE)
        now = time.monotonic()
        fresh: list[FeedEvent] = []
        for row in rows:
            event_id = row.event.id
            if event_id <= self._cursor:
                if self._gaps.pop(event_id, None) is None:
                    continue  # delivered already
            else:
                if event_id - self._cursor - 1 <= MAX_TRACKED_GAP:
                    for missing in range(self._cursor + 1, event_id):
                        self._gaps[missing] = now
                self._cursor = event_id
            fresh.append(row)
        self._gaps = {gap: seen for gap, seen in self._gaps.items() if now - seen < GAP_WAIT_SECONDS}
        if fresh:
            await self._deliver(fresh)
        return len(rows) == TAIL_PAGE

    async def _deliver(self, rows: list[FeedEvent]) -> None:
        wanted: list[tuple[Subscription, FeedEvent]] = []
        for row in rows:
            for sub in (*self._by_payment.get(row.event.payment_id, ()), *self._by_caller.get(row.caller_service, ())):
                if sub.matches(row):
                    wanted.append((sub, row))
        if not wanted:
            return
        # The payments after their events: one read per changed payment, not per watcher.
        payments: dict[int, Payment | None] = {}
        async with self._db.read() as conn:
            repository = PaymentRepository(conn)
            for payment_id in {row.event.payment_id for _, row in wanted}:
                payments[payment_id] = await repository.get(payment_id)
        for sub, row in wanted:
            payment = payments[row.event.payment_id]
            if payment is None:
                continue  # deleted meanwhile
            if not sub.offer(Update(payment=payment, event=row.event, final=row.event.new_status.is_terminal)):
                metrics.WATCHERS_DROPPED.inc()


class WatchService:
    """The watch streams as async iterators of Update (KEEPALIVE while nothing happens),
    the same for gRPC and SSE."""

    def __init__(self, db: Database, hub: WatchHub, settings: Settings):
        self.db = db
        self.hub = hub
        self.keepalive_seconds = settings.watch_keepalive_seconds

    async def watch_payment(self, caller: Caller, payment_id: int, after_event_id: int) -> AsyncIterator[Update]:
        """The payment now, the events after `after_event_id` (0: none of the past), then
        each new event; ends after the one that makes the payment terminal."""
        validate_payment_id(payment_id)
        _check_after(after_event_id)
        async with self.hub.subscribe(lambda row: True, payment_id=payment_id) as sub:
            async with self.db.read() as conn:
                payment = visible_to(caller, await PaymentRepository(conn).get(payment_id))
                feed = EventFeedRepository(conn)
                if after_event_id:
                    backlog = await _all_pages(lambda after: feed.for_payment(payment_id, after_id=after, limit=BACKLOG_PAGE),
                                               after_event_id)
                else:
                    # Only what comes next; the resume point is the payment's latest event.
                    latest = await feed.for_payment_latest(payment_id)
                    after_event_id, backlog = latest, []
            ending = payment.status.is_terminal
            yield Update(payment=payment, final=ending and not backlog, after_event_id=after_event_id)
            for i, row in enumerate(backlog):
                yield Update(payment=payment, event=row.event, final=ending and i == len(backlog) - 1)
            if ending:
                return
            sent = {row.event.id for row in backlog}
            async for update in self._live(sub, after_event_id, sent):
                yield update
                if update.final:
                    return

    async def watch_payments(self, caller: Caller, *, caller_service: str, status: PaymentStatus | None,
                             provider: ProviderType | None, after_event_id: int) -> AsyncIterator[Update]:
        """A keep-alive once subscribed, then every event of the caller service's payments
        (filtered), from `after_event_id` on (0: from now on). Never ends by itself."""
        caller_service = caller_service or caller.service_name
        if not caller.may_act_for(caller_service):
            raise PermissionDeniedError(f"this api key may not read payments of caller_service {caller_service!r}",
                                        field="caller_service")
        _check_after(after_event_id)

        def matches(row: FeedEvent) -> bool:
            return ((status is None or row.event.new_status == status)
                    and (provider is None or row.provider == provider))

        async with self.hub.subscribe(matches, caller_service=caller_service) as sub:
            # At once: the client knows that everything committed from now on will reach it.
            yield KEEPALIVE
            sent: set[int] = set()
            if after_event_id:
                upto = self.hub.cursor
                callers = frozenset({caller_service})
                async with self.db.read() as conn:
                    feed, payments = EventFeedRepository(conn), PaymentRepository(conn)
                    after = after_event_id
                    while True:
                        page = await feed.for_callers(callers, after_id=after, upto_id=upto, limit=BACKLOG_PAGE,
                                                      status=status, provider=provider)
                        current = {pid: await payments.get(pid) for pid in {row.event.payment_id for row in page}}
                        for row in page:
                            sent.add(row.event.id)
                            yield Update(payment=current[row.event.payment_id], event=row.event)
                        if len(page) < BACKLOG_PAGE:
                            break
                        after = page[-1].event.id
            async for update in self._live(sub, after_event_id, sent):
                yield _not_final(update)

    async def _live(self, sub: Subscription, after_event_id: int, sent: set[int]) -> AsyncIterator[Update]:
        try:
            while True:
                update = await sub.next(self.keepalive_seconds)
                if update is None:
                    yield KEEPALIVE
                elif update.event.id > after_event_id and update.event.id not in sent:
                    yield update
        except WatchEnded as ended:
            yield Update(ended_reason=str(ended), final=True)


def _not_final(update: Update) -> Update:
    """WatchPayments never ends on a payment's terminal status (other payments go on)."""
    if update.final and not update.ended_reason:
        return Update(payment=update.payment, event=update.event)
    return update


def _check_after(after_event_id: int) -> None:
    if after_event_id < 0:
        raise ValidationError("after_event_id must be >= 0", field="after_event_id")


async def _all_pages(read, after: int) -> list[FeedEvent]:
    rows: list[FeedEvent] = []
    while True:
        page = await read(after)
        rows.extend(page)
        if len(page) < BACKLOG_PAGE:
            return rows
        after = page[-1].event.id
