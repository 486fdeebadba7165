"""Running a job: one batch (exit status 1 when an item failed) or a worker loop,
with bounded concurrency inside a batch and a graceful stop on SIGTERM/SIGINT:
items in flight finish and are recorded, items not started are handed back. A one-off
batch run in a terminal shows its progress there."""

from __future__ import annotations

import asyncio
import math
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol, TextIO, TypeVar

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from .. import metrics
from ..db.engine import Database
from ..domain.errors import ServiceUnavailableError
from . import health

log = structlog.get_logger("payments.jobs")

T = TypeVar("T")


class ItemResult(Enum):
    DONE = "done"
    FAILED = "failed"  # tried again later: its claim stays until its lease or schedule says
    DEFERRED = "deferred"  # nothing to do yet (busy elsewhere, not stoppable yet): also left for later
    NOT_STARTED = "not_started"  # stopping, or its lease could run out: handed back at once


@dataclass(slots=True)
class BatchResult:
    claimed: int = 0
    done: int = 0
    failed: int = 0
    deferred: int = 0
    not_started: int = 0

    def add(self, result: ItemResult) -> None:
        match result:
            case ItemResult.DONE:
                self.done += 1
            case ItemResult.FAILED:
                self.failed += 1
            case ItemResult.DEFERRED:
                self.deferred += 1
            case ItemResult.NOT_STARTED:
                self.not_started += 1


@dataclass
class Progress:
    """One line on a terminal, rewritten as the items of a batch end:
    `reconcile: 40/100 items, 38 done, 2 failed`. For a person watching, not for logs."""

    job: str
    stream: TextIO = field(default_factory=lambda: sys.stderr)
    total: int = 0
    result: BatchResult = field(default_factory=BatchResult)

    def add_items(self, count: int) -> None:
        self.total += count
        if self.total:
            self._show()

    def item_ended(self, item_result: ItemResult) -> None:
        self.result.add(item_result)
        self._show()

    def finish(self) -> None:
        if self.total:
            self.stream.write("\n")
            self.stream.flush()

    def _show(self) -> None:
        r = self.result
        ended = r.done + r.failed + r.deferred + r.not_started
        line = f"{self.job}: {ended}/{self.total} items, {r.done} done, {r.failed} failed"
        if r.deferred or r.not_started:
            line += f", {r.deferred + r.not_started} left for later"
        self.stream.write("\r\x1b[K" + line)  # back to the line's start, clear it
        self.stream.flush()


_progress: ContextVar[Progress | None] = ContextVar("job_progress", default=None)


class Job(Protocol):
    name: str
    batch_size: int
    db: Database  # where its heartbeat goes (jobs/health.py)

    async def run_batch(self, stop: asyncio.Event) -> BatchResult: ...

    async def close(self) -> None: ...


def lease_seconds(item_seconds: float, batch_size: int, concurrency: int) -> float:
    """A claim's lease: every wave of the batch may run its items to their time limit,
    plus one wave of slack for the database writes around them."""
    return item_seconds * (math.ceil(batch_size / concurrency) + 1)


@asynccontextmanager
async def claim_transaction(db: Database) -> AsyncIterator[AsyncConnection]:
    """The transaction a claim runs in. On MySQL at READ COMMITTED, so that its
    FOR UPDATE SKIP LOCKED locks only the rows it returns, not the gaps between them
    (which would hold up the inserts of new rows). SQLite begins IMMEDIATE (engine.py)."""
    async with db.transaction(isolation_level="READ COMMITTED" if db.dialect == "mysql" else None) as conn:
        yield conn


async def run_items(
    items: Sequence[T],
    handle: Callable[[T], Awaitable[ItemResult]],
    *,
    concurrency: int,
    stop: asyncio.Event,
    start_before: float,
) -> list[tuple[T, ItemResult]]:
    """Runs `handle` over `items`, `concurrency` at a time. An item is not started
    once `stop` is set or after `start_before` (time.monotonic()), when its lease
    could run out before it ends; those come back NOT_STARTED for the caller to
    release. `handle` reports its own failures; an exception is logged and counts
    as FAILED."""
    gate = asyncio.Semaphore(concurrency)
    progress = _progress.get()
    if progress is not None:
        progress.add_items(len(items))

    async def one(item: T) -> ItemResult:
        result = await attempt(item)
        if progress is not None:
            progress.item_ended(result)
        return result

    async def attempt(item: T) -> ItemResult:
        async with gate:
            if stop.is_set() or time.monotonic() >= start_before:
                return ItemResult.NOT_STARTED
            try:
                return await handle(item)
            except ServiceUnavailableError as exc:  # the database is away: logged once, where it was noticed
                log.warning("job_item_failed", error=exc.message)
                return ItemResult.FAILED
            except Exception:  # one bad item must not lose the others' outcomes
                log.exception("job_item_failed")
                return ItemResult.FAILED

    results = await asyncio.gather(*(one(item) for item in items))
    return list(zip(items, results, strict=True))


async def settle(
    outcomes: list[tuple[T, ItemResult]], release: Callable[[list[T]], Awaitable[None]]
) -> BatchResult:
    """Hands back the items that were not started, and counts the outcomes."""
    unstarted = [item for item, r in outcomes if r == ItemResult.NOT_STARTED]
    if unstarted:
        await release(unstarted)
    result = BatchResult(claimed=len(outcomes))
    for _, item_result in outcomes:
        result.add(item_result)
    return result


async def run_job(job: Job, *, worker: bool, interval: float, stop: asyncio.Event, progress: bool = False) -> int:
    """One batch, or batches every `interval` seconds until `stop`. Returns the exit
    status. `progress`: show a one-off batch's progress on stderr (a terminal)."""
    if not worker:
        shown = Progress(job.name) if progress else None
        _progress.set(shown)
        try:
            result = await _run_batch(job, stop, worker=False)
        finally:
            if shown is not None:
                shown.finish()
        return 0 if result is not None and result.failed == 0 else 1
    log.info("worker_started", job=job.name, interval_seconds=interval)
    while not stop.is_set():
        started = time.monotonic()
        result = await _run_batch(job, stop, worker=True)
        if result is not None and result.claimed >= job.batch_size:
            # A full batch: there is a backlog, take the next one now. What this batch
            # failed or deferred stays claimed (lease, schedule), so this never spins.
            continue
        try:
            await asyncio.wait_for(stop.wait(), max(0.0, interval - (time.monotonic() - started)))
        except TimeoutError:
            pass
    log.info("worker_stopped", job=job.name)
    return 0


async def _run_batch(job: Job, stop: asyncio.Event, *, worker: bool) -> BatchResult | None:
    started = time.monotonic()
    try:
        result = await job.run_batch(stop)
    except Exception as exc:  # e.g. the database is away: a worker logs and tries again next tick
        # An outage was logged with its cause when noticed: no traceback on every tick of it.
        emit = log.warning if isinstance(exc, ServiceUnavailableError) else log.exception
        emit("job_failed", job=job.name, error=f"{type(exc).__name__}: {exc}",
             latency_ms=round((time.monotonic() - started) * 1000))
        metrics.JOB_RUNS.labels(job.name, "error").inc()
        return None
    metrics.JOB_RUNS.labels(job.name, "failed" if result.failed else "ok").inc()
    if not result.failed:
        await health.beat(job.db, job.name, claimed=result.claimed)
    metrics.JOB_DURATION.labels(job.name).observe(time.monotonic() - started)
    if result.failed:
        emit, event = log.warning, "job_failed"
    else:  # an idle worker's empty batches (every interval) would drown the rest at info
        emit, event = (log.debug if worker and not result.claimed else log.info), "job_completed"
    emit(event, job=job.name, latency_ms=round((time.monotonic() - started) * 1000), claimed=result.claimed,
         done=result.done, failed=result.failed, deferred=result.deferred, not_started=result.not_started)
    return result


def install_stop_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if not stop.is_set():
            log.info("job_stopping", signal=signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
