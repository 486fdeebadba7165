"""GroupCommit (service/group_commit.py) on a stand-in database whose transactions and
writes the test holds and releases, so each rule is seen exactly: a lone write goes at
once; with max_group 1 every write goes alone and at once; writes arriving while
max_in_flight transactions are written wait and go together, up to max_group a group;
the in-flight count; a group that fails with `alone_after` is rewritten one by one (a
group of one is not), any other error reaches every write of the group; a write that
answers for fewer items than it was given fails the rest; a writer cancelled mid-write
cancels its waiters; writers are forgotten once done; group sizes are measured."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from prometheus_client import REGISTRY

from payments_svc.service.group_commit import GroupCommit, _settle


class StandIn:
    """A database whose transactions count themselves; writes each item as item * 10,
    waiting while `held` (a set of items) holds one of the group's items."""

    def __init__(self):
        self.open = 0
        self.most_open = 0
        self.groups: list[list[int]] = []
        self.gates: dict[int, asyncio.Event] = {}
        self.fail: dict[int, BaseException] = {}  # item -> error raised while it is in a group
        self.short = False  # answer one outcome fewer than items

    @contextlib.asynccontextmanager
    async def transaction(self):
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        try:
            yield self
        finally:
            self.open -= 1

    def hold(self, *items: int) -> None:
        for item in items:
            self.gates[item] = asyncio.Event()

    def release(self, item: int) -> None:
        self.gates.pop(item).set()

    async def write(self, conn, items: list[int]) -> list[int]:
        assert conn is self
        self.groups.append(list(items))
        for item in items:
            if item in self.gates:
                await self.gates[item].wait()
        for item in items:
            if item in self.fail:
                raise self.fail[item]
        outcomes = [item * 10 for item in items]
        return outcomes[:-1] if self.short else outcomes


class Alone(Exception):
    """The error that makes a group be rewritten one by one."""


def measured(kind: str):
    """The (number, total size) of groups of `kind` measured since this was called."""
    def read() -> tuple[float, float]:
        labels = {"kind": kind}
        return (REGISTRY.get_sample_value("payments_group_commit_size_count", labels) or 0.0,
                REGISTRY.get_sample_value("payments_group_commit_size_sum", labels) or 0.0)

    start = read()
    return lambda: tuple(now - then for now, then in zip(read(), start, strict=True))


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def two_waiting_behind_a_lone_write(name: str):
    """One writer at a time: write 1 goes alone and is let through; 2 and 3 then go as one
    group, which is held at 2 (the test releases it)."""
    db = StandIn()
    groups = GroupCommit(db, name, db.write, max_group=8, max_in_flight=1)
    db.hold(1, 2)
    writes = [asyncio.ensure_future(groups.submit(i)) for i in (1, 2, 3)]
    await settle()
    db.release(1)
    return db, groups, writes


async def test_a_lone_write_goes_at_once_in_the_callers_task(request):
    db = StandIn()
    kind = request.node.name
    sizes = measured(kind)
    groups = GroupCommit(db, kind, db.write, max_group=8)
    assert await groups.submit(1) == 10
    assert await groups.submit(2) == 20
    assert db.groups == [[1], [2]] and groups._in_flight == 0 and groups._writers == set()
    assert sizes() == (2, 2)


async def test_with_max_group_one_every_write_goes_alone_and_at_once(request):
    db = StandIn()
    sizes = measured(request.node.name)
    groups = GroupCommit(db, request.node.name, db.write, max_group=1, max_in_flight=1)
    db.hold(1, 2, 3)
    writes = [asyncio.ensure_future(groups.submit(i)) for i in (1, 2, 3)]
    await settle()
    assert db.groups == [[1], [2], [3]] and db.most_open == 3  # no waiting for the one in flight
    for i in (1, 2, 3):
        db.release(i)
    assert await asyncio.gather(*writes) == [10, 20, 30]
    assert groups._in_flight == 0 and sizes() == (3, 3)


async def test_writes_arriving_while_the_transactions_are_busy_go_together_up_to_max_group(request):
    db = StandIn()
    kind = request.node.name
    sizes = measured(kind)
    groups = GroupCommit(db, kind, db.write, max_group=2, max_in_flight=1)
    db.hold(1)
    writes = [asyncio.ensure_future(groups.submit(i)) for i in (1, 2, 3, 4, 5)]
    await settle()
    assert db.groups == [[1]] and groups._in_flight == 1 and len(groups._waiting) == 4
    db.release(1)
    assert await asyncio.gather(*writes) == [10, 20, 30, 40, 50]
    assert db.groups == [[1], [2, 3], [4, 5]] and db.most_open == 1
    assert groups._in_flight == 0 and groups._waiting == [] and groups._writers == set()
    assert sizes() == (3, 5)


async def test_the_transactions_in_flight_are_counted_across_callers_and_writers(request):
    db = StandIn()
    groups = GroupCommit(db, request.node.name, db.write, max_group=8, max_in_flight=2)
    db.hold(1, 2, 3)
    a, b = asyncio.ensure_future(groups.submit(1)), asyncio.ensure_future(groups.submit(2))
    await settle()
    assert db.groups == [[1], [2]] and groups._in_flight == 2  # both at once, in their callers' tasks
    c, d = asyncio.ensure_future(groups.submit(3)), asyncio.ensure_future(groups.submit(4))
    await settle()
    assert db.groups == [[1], [2]] and len(groups._waiting) == 2  # both transactions busy: they wait
    db.release(1)
    assert await a == 10
    await settle()
    assert db.groups == [[1], [2], [3, 4]] and groups._in_flight == 2 and len(groups._writers) == 1
    e = asyncio.ensure_future(groups.submit(5))
    await settle()
    assert db.groups == [[1], [2], [3, 4]] and len(groups._waiting) == 1  # still two in flight: 5 waits
    db.release(2)
    assert await b == 20
    assert await e == 50 and db.groups == [[1], [2], [3, 4], [5]]
    db.release(3)
    assert await asyncio.gather(c, d) == [30, 40]
    await settle()
    assert groups._in_flight == 0 and groups._writers == set() and db.most_open == 2


async def test_a_group_failing_with_alone_after_is_rewritten_one_by_one(request):
    db = StandIn()
    kind = request.node.name
    sizes = measured(kind)
    groups = GroupCommit(db, kind, db.write, max_group=8, max_in_flight=1, alone_after=Alone)
    db.hold(1)
    db.fail[3] = Alone("taken")
    writes = [asyncio.ensure_future(groups.submit(i)) for i in (1, 2, 3)]
    await settle()
    db.release(1)
    outcomes = await asyncio.gather(*writes, return_exceptions=True)
    assert outcomes[:2] == [10, 20] and outcomes[2] is db.fail[3]
    assert db.groups == [[1], [2, 3], [2], [3]]
    assert sizes() == (2, 2)  # the failed group and the failed single write are not measured


async def test_a_lone_write_failing_with_alone_after_is_not_written_again(request):
    db = StandIn()
    groups = GroupCommit(db, request.node.name, db.write, max_group=8, max_in_flight=1, alone_after=Alone)
    db.hold(1)
    db.fail[2] = Alone("taken")
    first, second = asyncio.ensure_future(groups.submit(1)), asyncio.ensure_future(groups.submit(2))
    await settle()
    db.release(1)
    assert await first == 10
    with pytest.raises(Alone):
        await second
    assert db.groups == [[1], [2]]  # the group of one [2] failed: not written again alone


@pytest.mark.parametrize("alone_after", [None, Alone])
async def test_any_other_error_reaches_every_write_of_the_group(request, alone_after):
    db = StandIn()
    groups = GroupCommit(db, request.node.name, db.write, max_group=8, max_in_flight=1, alone_after=alone_after)
    db.hold(1)
    fault = ConnectionError("database away") if alone_after else Alone("no rewrite without alone_after")
    db.fail[2] = fault
    writes = [asyncio.ensure_future(groups.submit(i)) for i in (1, 2, 3)]
    await settle()
    db.release(1)
    outcomes = await asyncio.gather(*writes, return_exceptions=True)
    assert outcomes == [10, fault, fault]
    assert db.groups == [[1], [2, 3]]  # not rewritten
    assert groups._in_flight == 0 and groups._writers == set()


async def test_a_write_answering_for_fewer_items_fails_those_it_did_not_answer(request):
    db = StandIn()
    groups = GroupCommit(db, request.node.name, db.write, max_group=8, max_in_flight=1)
    db.hold(1)
    writes = [asyncio.ensure_future(groups.submit(i)) for i in (1, 2, 3)]
    await settle()
    db.short = True
    db.release(1)
    with pytest.raises(ValueError):  # the lone write: `[outcome] = []`
        await writes[0]
    outcomes = await asyncio.gather(*writes[1:], return_exceptions=True)
    assert outcomes[0] == 20 and isinstance(outcomes[1], ValueError)


async def test_a_writer_cancelled_mid_write_cancels_its_waiters(request):
    db, groups, writes = await two_waiting_behind_a_lone_write(request.node.name)
    assert await writes[0] == 10
    await settle()
    [writer] = groups._writers
    writer.cancel()  # e.g. the loop shutting down
    for waiter in writes[1:]:
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(waiter, 5)
    await settle()
    assert groups._in_flight == 0 and groups._writers == set()


async def test_a_caller_that_goes_away_does_not_stop_its_group(request):
    db, groups, writes = await two_waiting_behind_a_lone_write(request.node.name)
    await settle()
    writes[2].cancel()
    db.release(2)
    assert await writes[1] == 20
    with pytest.raises(asyncio.CancelledError):
        await writes[2]
    assert db.groups == [[1], [2, 3]]


def test_settle_sets_a_result_or_a_seen_error_once():
    loop = asyncio.new_event_loop()
    try:
        done, failed, first = loop.create_future(), loop.create_future(), loop.create_future()
        _settle(done, result=7)
        _settle(done, error=RuntimeError("late"))  # already settled: unchanged
        assert done.result() == 7
        error = RuntimeError("away")
        _settle(failed, error=error)
        assert failed.exception() is error
        _settle(first)
        assert first.result() is None
    finally:
        loop.close()


async def test_two_transactions_are_in_flight_by_default(request):
    db = StandIn()
    groups = GroupCommit(db, request.node.name, db.write, max_group=8)
    db.hold(1, 2)
    writes = [asyncio.ensure_future(groups.submit(i)) for i in (1, 2, 3)]
    await settle()
    assert db.groups == [[1], [2]] and len(groups._waiting) == 1  # the third waits for one of them
    db.release(1)
    db.release(2)
    assert await asyncio.gather(*writes) == [10, 20, 30] and db.groups == [[1], [2], [3]]
