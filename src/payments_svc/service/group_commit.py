"""Group commit of the two most frequent writes: a create's reserve (the payment row and
its payment_created event) and a status change (the conditional status UPDATE with its
event and, for an outcome, its callback's outbox row): a create's finish, a cancel, an
expiry, a reconcile outcome, a provider webhook's change of status (with its dedup row).

Why: per write, the transaction's COMMIT (a log flush) and round trip are most of the
database's work (bench/README.md). Writes that arrive while `max_in_flight` transactions
of their kind are being written wait for one to end and then go together in the next: a
lone write goes at once, in its own task, as without groups (no window, no added wait or
work at low concurrency), and groups grow with the load, up to `max_group` a transaction.

Each write keeps its own outcome. A status change is a conditional UPDATE that applies or
not on its own in the group (not applied: its caller retries it under the row's lock). A
taken key in a group of reserves (rare: the service looked the key up just before) rolls
the whole group back, and its writes are then made one by one, so that only the create
whose key was taken sees DuplicatePaymentKey; likewise a webhook whose event was applied
before, DuplicateProviderEvent. A write whose caller goes away meanwhile is still written
with its group: a reserve's row is then a create left half done, as after a crash (its
lease runs out; a retry or reconcile finishes it), and a status change is recorded as decided."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

from .. import metrics
from ..db.engine import Database

Item = TypeVar("Item")
Outcome = TypeVar("Outcome")


class GroupCommit(Generic[Item, Outcome]):
    """`write(conn, items)` writes a group in the transaction it is given and returns each
    item's outcome; `alone_after`: the error that makes a failed group be rewritten one by one."""

    def __init__(self, db: Database, kind: str, write: Callable[[AsyncConnection, list[Item]], Awaitable[list[Outcome]]],
                 *, max_group: int, max_in_flight: int = 2, alone_after: type[Exception] | None = None):
        self._db = db
        self._sizes = metrics.GROUP_COMMIT_SIZE.labels(kind)
        self._write_group = write
        self._max_group = max_group
        self._max_in_flight = max_in_flight
        self._alone_after = alone_after
        self._in_flight = 0  # transactions of this kind being written
        self._waiting: list[tuple[Item, asyncio.Future[Outcome]]] = []
        self._writers: set[asyncio.Task] = set()  # the group writers' tasks (the loop keeps only weak references)

    async def submit(self, item: Item) -> Outcome:
        """Writes one item, with whichever items are waiting too."""
        if self._max_group == 1:
            return await self._write_one(item)
        if self._in_flight < self._max_in_flight and not self._waiting:
            self._in_flight += 1
            try:
                return await self._write_one(item)
            finally:
                self._one_done()
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._in_flight < self._max_in_flight:
            self._start_writer()
        # The group is written whether or not this caller still waits (see the module's docstring).
        return await asyncio.shield(future)

    def _start_writer(self) -> None:
        group, self._waiting = self._waiting[: self._max_group], self._waiting[self._max_group:]
        self._in_flight += 1
        task = asyncio.create_task(self._write(group))
        self._writers.add(task)
        task.add_done_callback(self._writers.discard)
        task.add_done_callback(lambda _: self._one_done())

    def _one_done(self) -> None:
        self._in_flight -= 1
        if self._waiting and self._in_flight < self._max_in_flight:
            self._start_writer()

    async def _write(self, group: list[tuple[Item, asyncio.Future[Outcome]]]) -> None:
        try:
            try:
                async with self._db.transaction() as conn:
                    outcomes = await self._write_group(conn, [item for item, _ in group])
            except Exception as exc:
                if self._alone_after is None or not isinstance(exc, self._alone_after) or len(group) == 1:
                    raise
                for item, future in group:  # only the item that failed the group sees its error
                    try:
                        _settle(future, result=await self._write_one(item))
                    except Exception as alone:
                        _settle(future, error=alone)
                return
            self._sizes.observe(len(group))
            for (_, future), outcome in zip(group, outcomes, strict=True):
                _settle(future, result=outcome)
        except Exception as exc:  # the database away, a statement timeout: every write in the group learns it
            for _, future in group:
                _settle(future, error=exc)
        finally:  # cancelled (the loop shutting down): nobody may wait forever
            for _, future in group:
                if not future.done():
                    future.cancel()

    async def _write_one(self, item: Item) -> Outcome:
        async with self._db.transaction() as conn:
            [outcome] = await self._write_group(conn, [item])
        self._sizes.observe(1)
        return outcome


def _settle(future: asyncio.Future, *, result=None, error: Exception | None = None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
        future.exception()  # marked as seen: a caller that went away must not have it logged as lost
    else:
        future.set_result(result)
