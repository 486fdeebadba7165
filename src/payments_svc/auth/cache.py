"""Remembering validations: a TTL cache of key → Caller, so a key is validated once per
TTL, not per request, and single flight, so concurrent requests with a key that is not
(or no longer) cached make one validation between them, not one each."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

V = TypeVar("V")


class TTLCache(Generic[V]):
    def __init__(self, ttl_seconds: float, max_entries: int = 10_000):
        self._ttl = ttl_seconds
        self._max = max_entries
        self._entries: OrderedDict[str, tuple[float, V]] = OrderedDict()

    def get(self, key: str) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if expires < time.monotonic():
            del self._entries[key]
            return None
        return value

    def put(self, key: str, value: V) -> None:
        if self._ttl <= 0:
            return
        self._entries[key] = (time.monotonic() + self._ttl, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)


class SingleFlight(Generic[V]):
    """`run(key, call)` while a call for `key` is in flight waits for that call's result
    (or error) instead of making another. The call runs on its own task: a waiter that
    is cancelled (its client went away) does not cancel it for the others."""

    def __init__(self) -> None:
        self._flights: dict[str, asyncio.Future[V]] = {}

    async def run(self, key: str, call: Callable[[], Awaitable[V]]) -> V:
        flight = self._flights.get(key)
        if flight is None:
            flight = asyncio.ensure_future(call())
            self._flights[key] = flight
            flight.add_done_callback(lambda done: self._landed(key, done))
        return await asyncio.shield(flight)

    def _landed(self, key: str, flight: asyncio.Future[V]) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]
        if not flight.cancelled():
            flight.exception()  # retrieved, even if every waiter was cancelled meanwhile
