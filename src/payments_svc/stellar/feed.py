"""Reading the receiving account's payments feed from Horizon (stellar-sdk's
ServerAsync, join=transactions for the memos) and applying it from the stored cursor.

* Paging (`catch_up`, also behind sync.sync_stellar_payments): from the stored
  cursor, 200 records a page, until caught up. Horizon's own next link says where a
  page ends, so a record that cannot be read is stored for attention and passed over
  at its true position: it neither stalls the cursor nor moves it past a record not
  yet applied.
* Streaming (`follow`): records are applied as they arrive while each directly
  follows the last one applied. One that cannot be read, or that does not follow
  (another reader moved the cursor), is left to paging from the stored cursor.
* `watch` runs both forever: page until caught up, stream, and on an error or when
  the stream is silent for STELLAR_SILENCE_TIMEOUT_SECONDS, start over from the
  stored cursor (after a backoff of STELLAR_BACKOFF_MIN_SECONDS doubling up to
  STELLAR_BACKOFF_MAX_SECONDS when something failed). stellar-sdk does not surface
  keep-alives, so a quiet account also reconnects each silence timeout; that costs
  one page request and skips nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import structlog
from stellar_sdk import ServerAsync
from stellar_sdk.client.aiohttp_client import AiohttpClient
from stellar_sdk.exceptions import BaseRequestError

from ..clock import utcnow
from ..config import ConfigError
from ..db.engine import Database
from ..repository.stellar import StellarCursorRepository
from .crediting import CursorMoved, Unreadable, apply_records, record_json
from .records import FeedRecord, MalformedRecord, parse_record
from .settings import StellarSettings
from .sync import HorizonUnavailable

log = structlog.get_logger("payments.stellar")

PAGE_LIMIT = 200  # Horizon's maximum


@asynccontextmanager
async def horizon_server(settings: StellarSettings) -> AsyncIterator[ServerAsync]:
    async with ServerAsync(horizon_url=settings.horizon_url, client=AiohttpClient()) as server:
        yield server


async def watch(db: Database, settings: StellarSettings) -> None:
    """Streams the feed until cancelled, reconnecting as the module docstring says.
    Raises only ConfigError (Horizon serves another network)."""
    backoff = settings.backoff_min_seconds
    async with horizon_server(settings) as server:
        feed = StellarFeed(db, settings, server)
        while True:
            try:
                await feed.prepare()
                await feed.catch_up()
                backoff = settings.backoff_min_seconds  # Horizon and the database answer again
                await feed.follow()
            except ConfigError:
                raise
            except HorizonUnavailable as exc:
                log.warning("stellar_watch_retrying", error=str(exc), retry_in_seconds=backoff)
            except Exception as exc:  # the database, mostly; the watcher must outlive it
                log.error("stellar_watch_retrying", error=f"{type(exc).__name__}: {exc}", retry_in_seconds=backoff,
                          exc_info=True)
            else:
                continue  # silent stream: reconnect at once
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, settings.backoff_max_seconds)


class StellarFeed:
    def __init__(self, db: Database, settings: StellarSettings, server: ServerAsync):
        self.db = db
        self.settings = settings
        self.account = settings.receiving_account
        self.server = server
        self._prepared = False

    async def prepare(self) -> None:
        """Checks that Horizon serves the configured network, and gives the account a
        cursor (STELLAR_START_CURSOR) the first time."""
        if self._prepared:
            return
        root = await self._call(self.server.root())
        if root.get("network_passphrase") != self.settings.network_passphrase:
            raise ConfigError(
                f"STELLAR_HORIZON_URL {self.settings.horizon_url} serves the network "
                f"{root.get('network_passphrase')!r}, not STELLAR_NETWORK_PASSPHRASE {self.settings.network_passphrase!r}"
            )
        if await self.stored_cursor() is None:
            start = self.settings.start_cursor
            if start == "now":
                # Every operation of ledgers up to the latest sorts below the next ledger's first id.
                latest = root.get("history_latest_ledger")
                if not isinstance(latest, int):
                    raise HorizonUnavailable("Horizon's root has no history_latest_ledger")
                start = str(((latest + 1) << 32) - 1)
            async with self.db.transaction() as conn:
                if await StellarCursorRepository(conn).create(self.account, start, utcnow()):
                    log.info("stellar_cursor_created", account=self.account, paging_token=start)
        self._prepared = True

    async def stored_cursor(self) -> str | None:
        async with self.db.read() as conn:
            return await StellarCursorRepository(conn).get(self.account)

    async def catch_up(self) -> int:
        """Pages from the stored cursor until a page comes back short; returns how many
        records were applied."""
        applied = 0
        while True:
            cursor = await self._cursor()
            builder = self.server.payments().for_account(self.account).cursor(cursor).limit(PAGE_LIMIT).join("transactions")
            page = await self._call(builder)
            embedded = page.get("_embedded")
            records = embedded.get("records") if isinstance(embedded, dict) else None
            if not isinstance(records, list):
                raise HorizonUnavailable("Horizon answered a page without _embedded.records")
            if not records:
                return applied
            page_end = _page_end(builder.next_href)
            if page_end <= int(cursor):
                raise HorizonUnavailable(f"Horizon's next link does not move past the cursor {cursor}")
            try:
                await self._apply_page(cursor, records, page_end)
            except CursorMoved:
                continue  # another reader is on it too: go on from wherever it got to
            applied += len(records)
            if len(records) < PAGE_LIMIT:
                return applied

    async def _apply_page(self, cursor: str, records: list[Any], page_end: int) -> None:
        position, unreadable = cursor, []
        for index, raw in enumerate(records):
            try:
                record = parse_record(raw, self.account)
                if not int(position) < record.token <= page_end:
                    raise MalformedRecord(f"paging token {record.operation_id} is out of order in its page")
            except MalformedRecord as exc:
                unreadable.append(Unreadable(record_json(raw), str(exc)))
                if index == len(records) - 1:  # the page's next link is this record's true position
                    await apply_records(self.db, self.account, expected=position, paging_token=str(page_end),
                                        unreadable=tuple(unreadable))
                continue
            await apply_records(self.db, self.account, expected=position, paging_token=record.operation_id,
                                record=record, raw=record_json(raw), unreadable=tuple(unreadable))
            position, unreadable = record.operation_id, []

    async def follow(self) -> None:
        """Applies streamed records until the stream is silent for the silence timeout
        (returns) or fails (raises HorizonUnavailable)."""
        position = await self._cursor()
        stream = self.server.payments().for_account(self.account).cursor(position).join("transactions").stream()
        log.info("stellar_stream_open", account=self.account, cursor=position)
        try:
            while True:
                silence = asyncio.timeout(self.settings.silence_timeout_seconds)
                try:
                    async with silence:
                        raw = await anext(stream)
                except TimeoutError:
                    if not silence.expired():
                        raise
                    log.info("stellar_stream_silent", account=self.account, seconds=self.settings.silence_timeout_seconds)
                    return
                except StopAsyncIteration:
                    return
                position = await self._apply_streamed(raw, position)
        except BaseRequestError as exc:
            raise HorizonUnavailable(f"stream: {type(exc).__name__}: {exc}") from exc
        finally:
            await stream.aclose()

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
        except (BaseRequestError, TimeoutError, ValueError) as exc:
            raise HorizonUnavailable(f"{type(exc).__name__}: {exc}") from exc
        if not isinstance(response, dict):
            raise HorizonUnavailable("Horizon answered something other than a JSON object")
        return response


def _page_end(next_href: str | None) -> int:
    """The cursor of a page's next link: Horizon's paging token of its last record."""
    cursor = dict(parse_qsl(urlsplit(next_href or "").query)).get("cursor", "")
    if not cursor.isdigit():
        raise HorizonUnavailable(f"Horizon's next link has no usable cursor: {next_href!r}")
    return int(cursor)
