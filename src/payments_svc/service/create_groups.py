"""Group commit of creates' first transactions (the reserve: the payment row and its
payment_created event).

Why: per create, the reserve's COMMIT (a log flush) is most of the database's work
(bench/README.md). Creates that arrive while `max_in_flight` reserve transactions are
being written wait for one to end and then go together in the next: a lone create is
written at once, in its own task, as without groups (no window, no added wait or work at
low concurrency), and groups grow with the load, up to `max_group` creates a transaction.

Each create keeps its own outcome. A taken key in a group (rare: the service looked the
key up just before) rolls the whole group back, and its creates are then written one by
one, so that only the create whose key was taken sees DuplicatePaymentKey. A create
whose caller goes away meanwhile is still written with its group: its row is a create
left half done, as after a crash (its lease runs out; a retry or reconcile finishes it)."""

from __future__ import annotations

import asyncio
from typing import Any

from .. import metrics
from ..db.engine import Database
from ..domain.payment import Payment
from ..repository.payments import DuplicatePaymentKey, PaymentRepository

Create = tuple[dict[str, Any], dict[str, Any]]  # the payment's values, its first event (PaymentRepository.reserve)


class CreateGroups:
    def __init__(self, db: Database, *, max_group: int, max_in_flight: int = 2):
        self._db = db
        self._max_group = max_group
        self._max_in_flight = max_in_flight
        self._in_flight = 0  # reserve transactions being written
        self._waiting: list[tuple[Create, asyncio.Future[Payment]]] = []
        self._writers: set[asyncio.Task] = set()  # the group writers' tasks (the loop keeps only weak references)

    async def reserve(self, values: dict[str, Any], event: dict[str, Any]) -> Payment:
        """Writes one create's reserve, with whichever creates are waiting too."""
        if self._max_group == 1:
            return await self._write_one((values, event))
        if self._in_flight < self._max_in_flight and not self._waiting:
            self._in_flight += 1
            try:
                return await self._write_one((values, event))
            finally:
                self._one_done()
        future: asyncio.Future[Payment] = asyncio.get_running_loop().create_future()
        self._waiting.append(((values, event), future))
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

    async def _write(self, group: list[tuple[Create, asyncio.Future[Payment]]]) -> None:
        try:
            try:
                async with self._db.transaction() as conn:
                    payments = await PaymentRepository(conn).reserve([create for create, _ in group])
            except DuplicatePaymentKey:
                if len(group) == 1:
                    raise
                for create, future in group:  # only the taken key's create is refused
                    try:
                        _settle(future, result=await self._write_one(create))
                    except Exception as exc:
                        _settle(future, error=exc)
                return
            metrics.CREATE_GROUP_SIZE.observe(len(group))
            for (_, future), payment in zip(group, payments, strict=True):
                _settle(future, result=payment)
        except Exception as exc:  # the database away, a statement timeout: every create in the group learns it
            for _, future in group:
                _settle(future, error=exc)
        finally:  # cancelled (the loop shutting down): nobody may wait forever
            for _, future in group:
                if not future.done():
                    future.cancel()

    async def _write_one(self, create: Create) -> Payment:
        async with self._db.transaction() as conn:
            [payment] = await PaymentRepository(conn).reserve([create])
        metrics.CREATE_GROUP_SIZE.observe(1)
        return payment


def _settle(future: asyncio.Future[Payment], *, result: Payment | None = None, error: Exception | None = None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
        future.exception()  # marked as seen: a caller that went away must not have it logged as lost
    else:
        future.set_result(result)
