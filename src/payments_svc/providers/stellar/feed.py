"""Reading the receiving account's payments feed from Horizon (join=transactions for the
memos) and applying it from the stored cursor.

* Every (re)connect starts with `prepare`: Horizon's root must name the configured
  network, and its history must hold the stored cursor (see `check_cursor`), else the
  feed is refused (FeedRefused) until an operator acts.
* Paging (`catch_up`, also behind sync.sync_stellar_payments): from the stored cursor,
  200 records a page, until caught up. Horizon's own next link says where a page ends,
  so a record that cannot be read is stored for attention and passed over at its true
  position: it neither stalls the cursor nor moves it past a record not yet applied. A
  record at or before the cursor (some servers repeat the cursor's record) is a no-op.
* Streaming (`follow`, read by sse.py): records are applied as they arrive while each
  directly follows the last one applied. One that cannot be read, or that does not
  follow (another reader moved the cursor), is left to paging from the stored cursor.
* `watch` runs both forever: prepare, page until caught up, stream; when the stream
  ends or is silent for STELLAR_SILENCE_TIMEOUT_SECONDS (no record, no keep-alive),
  start over at once; after an error, after a backoff of STELLAR_BACKOFF_MIN_SECONDS
  doubling up to STELLAR_BACKOFF_MAX_SECONDS (or Horizon's Retry-After, within that
  bound); while the feed is refused, re-check every STELLAR_BACKOFF_MAX_SECONDS.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import aiohttp
import structlog
from stellar_sdk import ServerAsync
from stellar_sdk.client.aiohttp_client import AiohttpClient
from stellar_sdk.exceptions import BaseHorizonError, BaseRequestError

from ... import metrics
from ...clock import utcnow
from ...db.engine import Database
from ...repository.stellar import StellarCursorRepository, StellarOperationRepository
from .crediting import CursorMoved, Unreadable, apply_records, record_json
from .records import FeedRecord, MalformedRecord, parse_record
from .settings import StellarSettings, is_paging_token
from .sse import StreamBroken, StreamSilent, read_events
from .sync import FeedRefused, HorizonUnavailable

log = structlog.get_logger("payments.stellar")

PAGE_LIMIT = 200  # Horizon's maximum, for pages and for the records of one stream
# How far (in ledgers, about 5 s each) the stored cursor may run ahead of a Horizon's
# history before it counts as beyond it: nodes behind one load balancer lag each other
# by a few ledgers, a reset network or a wrong cursor by thousands.
LAGGING_LEDGERS = 60
STREAM_CONNECT_SECONDS = 10.0


def ledger_of(paging_token: int) -> int:
    """The ledger a paging token (a TOID: ledger << 32 | transaction << 12 | operation) is in."""
    return paging_token >> 32


def first_token_of(ledger: int) -> int:
    return ledger << 32


@dataclass(frozen=True, slots=True)
class Horizon:
    server: ServerAsync  # pages and the root, through stellar-sdk
    streams: aiohttp.ClientSession  # the SSE stream, read by sse.py


@asynccontextmanager
async def horizon_client(settings: StellarSettings) -> AsyncIterator[Horizon]:
    # No total timeout for streams: silence is watched line by line instead.
    timeout = aiohttp.ClientTimeout(total=None, connect=STREAM_CONNECT_SECONDS, sock_connect=STREAM_CONNECT_SECONDS)
    async with (
        ServerAsync(horizon_url=settings.horizon_url, client=AiohttpClient()) as server,
        aiohttp.ClientSession(timeout=timeout) as streams,
    ):
        yield Horizon(server, streams)


class WatcherHealth:
    """What the streaming watcher reports (metrics and its /healthz): unhealthy while it
    refuses the feed, or when its loop has made no progress for `stall_seconds`."""

    def __init__(self, stall_seconds: float):
        self.stall_seconds = stall_seconds
        self.refused: str | None = None
        self._last_progress = time.monotonic()

    def progress(self) -> None:
        self._last_progress = time.monotonic()

    def reading(self) -> None:
        self.refused = None
        metrics.STELLAR_FEED_REFUSED.set(0)

    def refuse(self, reason: str) -> None:
        self.refused = reason
        metrics.STELLAR_FEED_REFUSED.set(1)

    def problem(self) -> str | None:
        """None when healthy, else why not."""
        if self.refused is not None:
            return f"the Stellar feed is refused: {self.refused}"
        stalled = time.monotonic() - self._last_progress
        if stalled > self.stall_seconds:
            return f"the watcher has made no progress for {stalled:.0f} s"
        return None


def stall_seconds(settings: StellarSettings) -> float:
    """Longest a healthy watcher goes without progress: STELLAR_WATCHER_STALL_SECONDS, else
    a silent stream, the longest backoff, and Horizon's and the database's timeouts, twice over."""
    if settings.stall_limit_seconds is not None:
        return settings.stall_limit_seconds
    return 2 * (settings.silence_timeout_seconds + settings.backoff_max_seconds) + 60


async def watch(db: Database, settings: StellarSettings, health: WatcherHealth) -> None:
    """Streams the feed until cancelled, reconnecting as the module docstring says."""
    backoff = settings.backoff_min_seconds
    async with horizon_client(settings) as horizon:
        feed = StellarFeed(db, settings, horizon, health)
        while True:
            health.progress()
            feed.stream_opened = False
            try:
                await feed.prepare()
                health.reading()
                await feed.catch_up()
                await feed.follow()
                backoff = settings.backoff_min_seconds
                continue  # the stream ended or went silent: reconnect at once
            except FeedRefused as exc:
                health.refuse(str(exc))
                delay = settings.backoff_max_seconds
                log.error("stellar_feed_refused", account=settings.receiving_account, error=str(exc),
                          retry_in_seconds=delay)
            except HorizonUnavailable as exc:
                if feed.stream_opened:
                    backoff = settings.backoff_min_seconds  # it worked until now: retry soon
                delay = retry_delay(backoff, exc.retry_after, settings.backoff_max_seconds)
                log.warning("stellar_watch_retrying", error=str(exc), retry_in_seconds=delay)
            except Exception as exc:  # the database, mostly; the watcher must outlive it
                delay = backoff
                log.error("stellar_watch_retrying", error=f"{type(exc).__name__}: {exc}", retry_in_seconds=delay,
                          exc_info=True)
            await asyncio.sleep(delay)
            backoff = min(backoff * 2, settings.backoff_max_seconds)


def retry_delay(backoff: float, retry_after: float | None, longest: float) -> float:
    """The backoff, or Horizon's Retry-After when longer, never beyond the longest backoff."""
    return min(max(backoff, retry_after or 0.0), longest)


class StellarFeed:
    def __init__(self, db: Database, settings: StellarSettings, horizon: Horizon, health: WatcherHealth | None = None):
        self.db = db
        self.settings = settings
        self.account = settings.receiving_account
        self.horizon = horizon
        self.progress = health.progress if health is not None else _nothing  # for the watcher's liveness
        self.stream_opened = False  # set by follow() once Horizon accepted the stream

    async def prepare(self) -> None:
        """Checks that Horizon serves the configured network and holds the history from
        the stored cursor on, giving the account a cursor (STELLAR_START_CURSOR) the first
        time. Made on every (re)connect: the Horizon behind a URL can change. Raises
        FeedRefused or HorizonUnavailable."""
        root = await self._call(self.horizon.server.root())
        served = root.get("network_passphrase")
        if served != self.settings.network_passphrase:
            raise FeedRefused(
                f"STELLAR_HORIZON_URL {self.settings.horizon_url} serves the network {served!r}, "
                f"not STELLAR_NETWORK_PASSPHRASE {self.settings.network_passphrase!r}"
            )
        history = HorizonHistory.from_root(root)
        cursor = await self.stored_cursor()
        if cursor is None:
            start = self.settings.start_cursor
            if start == "now":
                # Every operation of ledgers up to the latest sorts below the next ledger's first id.
                start = str(first_token_of(history.latest_ledger + 1) - 1)
            async with self.db.transaction() as conn:
                if await StellarCursorRepository(conn).create(self.account, start, utcnow()):
                    log.info("stellar_cursor_created", account=self.account, paging_token=start)
            cursor = await self._cursor()
        history.check_cursor(cursor)

    async def stored_cursor(self) -> str | None:
        async with self.db.read() as conn:
            return await StellarCursorRepository(conn).get(self.account)

    async def catch_up(self) -> int:
        """Pages from the stored cursor until a page comes back short; returns how many
        records were applied."""
        applied = 0
        while True:
            cursor = await self._cursor()
            builder = (self.horizon.server.payments().for_account(self.account).cursor(cursor).limit(PAGE_LIMIT)
                       .join("transactions"))
            page = await self._call(builder)
            embedded = page.get("_embedded")
            records = embedded.get("records") if isinstance(embedded, dict) else None
            if not isinstance(records, list):
                raise HorizonUnavailable("Horizon answered a page without _embedded.records")
            if not records:
                return applied
            page_end = _page_end(builder.next_href)
            if page_end <= int(cursor):
                if await self._all_applied(records, int(cursor)):
                    return applied  # a page of nothing but the cursor's own record: caught up
                raise HorizonUnavailable(f"Horizon's next link does not move past the cursor {cursor}")
            try:
                applied += await self._apply_page(cursor, records, page_end)
            except CursorMoved:
                continue  # another reader is on it too: go on from wherever it got to
            self.progress()  # catching up after a long outage takes many pages
            if len(records) < PAGE_LIMIT:
                return applied

    async def _apply_page(self, cursor: str, records: list[Any], page_end: int) -> int:
        """Applies the records after `cursor`; returns how many."""
        position, unreadable, applied = cursor, [], 0
        for raw in records:
            try:
                record = parse_record(raw, self.account)
                if record.token <= int(position):
                    if await self._applied(record):
                        continue  # delivered again: nothing to do
                    raise MalformedRecord(f"payment operation {record.operation_id} comes before the cursor "
                                          f"{position} but was never applied")
                if record.token > page_end:
                    raise MalformedRecord(f"paging token {record.operation_id} is out of order in its page")
            except MalformedRecord as exc:
                unreadable.append(Unreadable(record_json(raw), str(exc)))
                continue
            await apply_records(self.db, self.account, expected=position, paging_token=record.operation_id,
                                record=record, raw=record_json(raw), unreadable=tuple(unreadable))
            applied += 1 + len(unreadable)
            position, unreadable = record.operation_id, []
        if unreadable:  # last in the page: the page's next link is their true position
            await apply_records(self.db, self.account, expected=position, paging_token=str(max(page_end, int(position))),
                                unreadable=tuple(unreadable))
            applied += len(unreadable)
        return applied

    async def _applied(self, record: FeedRecord) -> bool:
        """Whether a record at or before the cursor needs nothing more: not money to us, or
        an operation already recorded."""
        if record.incoming is None:
            return True
        async with self.db.read() as conn:
            return await StellarOperationRepository(conn).exists(record.operation_id)

    async def _all_applied(self, records: list[Any], cursor: int) -> bool:
        for raw in records:
            try:
                record = parse_record(raw, self.account)
            except MalformedRecord:
                return False
            if record.token > cursor or not await self._applied(record):
                return False
        return True

    async def follow(self) -> None:
        """Applies streamed records until the stream ends after delivering some (Horizon
        ends one after PAGE_LIMIT records) or is silent for the silence timeout (returns).
        Raises HorizonUnavailable when it cannot be opened or breaks, or ends having
        delivered nothing (a proxy closing streams would otherwise be reconnected to in a
        tight loop)."""
        position = await self._cursor()
        url = f"{self.settings.horizon_url}/accounts/{self.account}/payments"
        params = {"cursor": position, "join": "transactions", "limit": str(PAGE_LIMIT)}
        try:
            response = await self.horizon.streams.get(
                url, params=params, headers={"Accept": "text/event-stream", "Cache-Control": "no-cache"})
        except (aiohttp.ClientError, TimeoutError) as exc:  # TimeoutError: connecting took too long
            raise HorizonUnavailable(f"stream: cannot connect: {type(exc).__name__}: {exc}") from exc
        delivered = 0
        async with response:
            await _check_stream(response)
            self.stream_opened = True
            log.info("stellar_stream_open", account=self.account, cursor=position)
            try:
                async for event in read_events(response.content, self.settings.silence_timeout_seconds, self.progress):
                    if event.event == "close":
                        break
                    if event.event == "error":
                        raise HorizonUnavailable(f"stream: Horizon reported an error: {event.data[:200]}")
                    if event.event != "message":
                        continue  # "open": the stream's "hello"
                    delivered += 1
                    position = await self._apply_streamed(_json_or_text(event.data), position)
            except StreamSilent:
                log.info("stellar_stream_silent", account=self.account, seconds=self.settings.silence_timeout_seconds)
                return
            except (StreamBroken, aiohttp.ClientError) as exc:
                raise HorizonUnavailable(f"stream broken: {type(exc).__name__}: {exc}") from exc
        if not delivered:
            raise HorizonUnavailable("stream: Horizon ended the stream without sending a record")

    async def _apply_streamed(self, raw: Any, position: str) -> str:
        """Returns the new position: the last record known applied."""
        try:
            record: FeedRecord | None = parse_record(raw, self.account)
        except MalformedRecord:
            record = None
        if record is not None and record.token <= int(position):
            return position  # delivered again
        if record is not None:
            try:
                await apply_records(self.db, self.account, expected=position, paging_token=record.operation_id,
                                    record=record, raw=record_json(raw))
                return record.operation_id
            except CursorMoved as moved:
                if moved.stored is not None and record.token <= int(moved.stored):
                    return moved.stored  # another reader applied it
        # Unreadable (its position cannot be trusted) or not next to the last record
        # applied: paging, which has Horizon's page links, places it.
        await self.catch_up()
        return await self._cursor()

    async def _cursor(self) -> str:
        cursor = await self.stored_cursor()
        if cursor is None:
            raise RuntimeError("prepare() first: the account has no cursor")
        return cursor

    async def _call(self, builder) -> dict[str, Any]:
        try:
            response = await builder.call()
        except BaseHorizonError as exc:
            detail = exc.title or exc.message[:200]
            raise HorizonUnavailable(f"HTTP {exc.status} from Horizon: {detail}",
                                     retry_after=retry_after(exc.args[0].headers)) from exc
        except (BaseRequestError, TimeoutError, ValueError) as exc:
            raise HorizonUnavailable(f"{type(exc).__name__}: {exc}") from exc
        if not isinstance(response, dict):
            raise HorizonUnavailable("Horizon answered something other than a JSON object")
        return response


@dataclass(frozen=True, slots=True)
class HorizonHistory:
    """The ledgers a Horizon holds, from its root."""

    elder_ledger: int  # the oldest ledger it keeps the history of
    latest_ledger: int  # the newest ledger it has ingested
    core_ledger: int  # the newest ledger its Stellar Core knows

    @classmethod
    def from_root(cls, root: Mapping[str, Any]) -> HorizonHistory:
        values = [root.get(name) for name in ("history_elder_ledger", "history_latest_ledger", "core_latest_ledger")]
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
            raise HorizonUnavailable("Horizon's root lacks history_elder_ledger, history_latest_ledger or core_latest_ledger")
        return cls(*values)

    def check_cursor(self, cursor: str) -> None:
        """Raises FeedRefused when paging from `cursor` would silently return nothing for
        ever (the cursor lies beyond the network Horizon knows) or skip records (Horizon's
        history starts after it); HorizonUnavailable while Horizon is still ingesting up
        to it."""
        if not is_paging_token(cursor):
            raise FeedRefused(f"the stored cursor {cursor!r} is not a paging token (0 to 2^63-1)")
        token = int(cursor)
        ledger = ledger_of(token)
        if ledger > self.latest_ledger + LAGGING_LEDGERS:
            if ledger > self.core_ledger + LAGGING_LEDGERS:
                raise FeedRefused(
                    f"the stored cursor {cursor} is in ledger {ledger}, beyond Horizon's history, which ends at ledger "
                    f"{self.latest_ledger} (its Stellar Core is at {self.core_ledger}): a network reset, a wrong "
                    f"STELLAR_START_CURSOR or a Horizon restored from an old backup"
                )
            raise HorizonUnavailable(
                f"Horizon is still ingesting: its history ends at ledger {self.latest_ledger} (its Stellar Core is at "
                f"{self.core_ledger}), before the stored cursor's ledger {ledger}"
            )
        # Cursor 0 means "from the start of what Horizon has"; any other cursor is a
        # position reached, and records between it and Horizon's oldest would be skipped.
        if token > 0 and token < first_token_of(self.elder_ledger) - 1:
            raise FeedRefused(
                f"Horizon keeps history only from ledger {self.elder_ledger} on, after the stored cursor {cursor} "
                f"(ledger {ledger}): payments in between would be skipped"
            )


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Retry-After in seconds (Horizon sends whole seconds; an HTTP date is allowed too)."""
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


async def _check_stream(response: aiohttp.ClientResponse) -> None:
    if response.status != 200:
        try:
            title = (await response.json(content_type=None)).get("title")
        except (ValueError, AttributeError, aiohttp.ClientError):
            title = None
        raise HorizonUnavailable(f"stream: HTTP {response.status} from Horizon" + (f": {title}" if title else ""),
                                 retry_after=retry_after(response.headers))
    if response.content_type != "text/event-stream":
        raise HorizonUnavailable(f"stream: Horizon answered {response.content_type}, not text/event-stream")


def _json_or_text(data: str) -> Any:
    """An event's record; text that is not JSON is kept as it is, to be stored as malformed."""
    try:
        return json.loads(data)
    except ValueError:
        return data


def _nothing() -> None:
    pass


def _page_end(next_href: str | None) -> int:
    """The cursor of a page's next link: Horizon's paging token of its last record."""
    cursor = dict(parse_qsl(urlsplit(next_href or "").query)).get("cursor", "")
    if not is_paging_token(cursor):
        raise HorizonUnavailable(f"Horizon's next link has no usable cursor: {next_href!r}")
    return int(cursor)
