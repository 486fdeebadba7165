"""The job runner's pieces in-process (no database): a claim's lease length, the deadline
after which an item is no longer started, how a failed item is logged (an outage as a
warning without a traceback, anything else with its traceback) while the others still end,
and the progress line a one-off batch in a terminal shows as its items end."""

from __future__ import annotations

import asyncio
import io
from types import SimpleNamespace

import pytest
from structlog.testing import capture_logs

from payments_svc.domain.errors import ServiceUnavailableError
from payments_svc.jobs import runner
from payments_svc.jobs.runner import ItemResult, Progress, lease_seconds, run_items

R = ItemResult


def scripted(results: dict[int, ItemResult | Exception]):
    """A handle answering each item from the script (raising an exception given there);
    records the items it was called for."""
    started: list[int] = []

    async def handle(item: int) -> ItemResult:
        started.append(item)
        await asyncio.sleep(0)
        answer = results[item]
        if isinstance(answer, Exception):
            raise answer
        return answer

    return handle, started


async def run(items, handle, *, concurrency=1, start_before=float("inf"), stop=None):
    return await run_items(items, handle, concurrency=concurrency, stop=stop or asyncio.Event(),
                           start_before=start_before)


@pytest.fixture
def clock(monkeypatch):
    """The runner's monotonic clock, stopped at 100.0 (only the runner's: the event loop keeps its own)."""
    monkeypatch.setattr(runner, "time", SimpleNamespace(monotonic=lambda: 100.0))
    return 100.0


@pytest.fixture
def shown():
    """A one-off batch's progress line, written to a buffer instead of the terminal (as run_job sets it)."""
    progress = Progress("reconcile", stream=io.StringIO())
    token = runner._progress.set(progress)
    yield progress
    runner._progress.reset(token)


# ---- the lease ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("batch_size", "concurrency", "waves"), [(10, 4, 3), (8, 4, 2), (1, 4, 1), (5, 1, 5)])
def test_a_lease_covers_every_wave_of_the_batch_plus_one_wave_of_slack(batch_size, concurrency, waves):
    # 10 items 4 at a time run in 3 waves of up to 30 s each, plus one more for the writes around them.
    assert lease_seconds(30.0, batch_size, concurrency) == 30.0 * (waves + 1)


# ---- the start deadline ------------------------------------------------------------------------


async def test_an_item_is_not_started_once_its_start_deadline_is_reached(clock):
    """At exactly start_before its lease could run out before it ends: handed back, not started."""
    handle, started = scripted({1: R.DONE, 2: R.DONE})
    assert await run([1, 2], handle, start_before=clock) == [(1, R.NOT_STARTED), (2, R.NOT_STARTED)]
    assert started == []
    assert await run([1, 2], handle, start_before=clock + 0.001) == [(1, R.DONE), (2, R.DONE)]
    assert started == [1, 2]


async def test_no_item_is_started_once_the_job_is_stopping():
    handle, started = scripted({1: R.DONE})
    stop = asyncio.Event()
    stop.set()
    assert await run([1], handle, stop=stop) == [(1, R.NOT_STARTED)]
    assert started == []


# ---- failed items and their log lines ----------------------------------------------------------


async def test_an_outage_fails_its_item_with_one_warning_and_no_traceback():
    """The database being away was logged where it was noticed: here only the item's failure, with its message."""
    handle, _ = scripted({1: R.DONE, 2: ServiceUnavailableError("database unavailable"), 3: R.DONE})
    with capture_logs() as logs:
        outcomes = await run([1, 2, 3], handle)
    assert outcomes == [(1, R.DONE), (2, R.FAILED), (3, R.DONE)]
    assert logs == [{"event": "job_item_failed", "error": "database unavailable", "log_level": "warning"}]


async def test_an_unexpected_error_fails_its_item_with_its_traceback_and_the_others_still_end():
    handle, started = scripted({1: R.DONE, 2: RuntimeError("bug in the handler"), 3: R.DEFERRED})
    with capture_logs() as logs:
        outcomes = await run([1, 2, 3], handle, concurrency=2)
    assert outcomes == [(1, R.DONE), (2, R.FAILED), (3, R.DEFERRED)]
    assert sorted(started) == [1, 2, 3]
    assert logs == [{"event": "job_item_failed", "exc_info": True, "log_level": "error"}]


# ---- the progress line -------------------------------------------------------------------------


async def test_a_one_off_batch_shows_its_items_as_they_end(shown):
    handle, _ = scripted({1: R.DONE, 2: R.FAILED, 3: R.DEFERRED, 4: R.DONE})
    outcomes = await run([1, 2, 3, 4], handle)
    assert outcomes == [(1, R.DONE), (2, R.FAILED), (3, R.DEFERRED), (4, R.DONE)]
    lines = shown.stream.getvalue().split("\r\x1b[K")
    assert lines == ["",
                     "reconcile: 0/4 items, 0 done, 0 failed",
                     "reconcile: 1/4 items, 1 done, 0 failed",
                     "reconcile: 2/4 items, 1 done, 1 failed",
                     "reconcile: 3/4 items, 1 done, 1 failed, 1 left for later",
                     "reconcile: 4/4 items, 2 done, 1 failed, 1 left for later"]
    assert (shown.total, shown.result.done, shown.result.failed, shown.result.deferred) == (4, 2, 1, 1)


async def test_the_progress_line_counts_the_items_of_every_batch_of_the_run(shown, clock):
    """A second batch adds its items to the total; items not started count as left for later."""
    handle, _ = scripted({1: R.DONE, 2: R.DONE})
    await run([1], handle)
    await run([2], handle, start_before=clock)
    assert shown.stream.getvalue().split("\r\x1b[K")[-1] == "reconcile: 2/2 items, 1 done, 0 failed, 1 left for later"
