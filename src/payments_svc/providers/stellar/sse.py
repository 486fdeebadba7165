"""Reading a Server-Sent Events body (https://html.spec.whatwg.org/multipage/server-sent-events.html)
as Horizon writes it: `event: open` / `data: "hello"` first, then one event per record
(`id:` its paging token, `data:` its JSON), comment lines as keep-alives, and
`event: close` / `data: "byebye"` after `limit` records, or `event: error` (rate limited
mid-stream). Read here rather than through stellar-sdk, whose stream retries failed
connections for minutes without a word and hides keep-alives and statuses."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from aiohttp import StreamReader

MAX_LINE_BYTES = 8 * 1024 * 1024  # far above any record with its transaction joined


class StreamSilent(Exception):
    """Nothing at all (no event, no keep-alive) came for the silence timeout."""


class StreamBroken(Exception):
    """The body is not a readable event stream."""


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    event: str  # "message" unless named: Horizon names open, close and error
    data: str


async def read_events(body: StreamReader, silence_seconds: float, heard: Callable[[], None]) -> AsyncIterator[ServerSentEvent]:
    """The events of `body` until it ends. `heard` is called whenever bytes arrive.
    Raises StreamSilent, StreamBroken, or what aiohttp raises for a broken connection."""
    buffer = bytearray()
    event, data = "", []
    while True:
        end = buffer.find(b"\n")
        if end < 0:
            if len(buffer) > MAX_LINE_BYTES:
                raise StreamBroken(f"a line longer than {MAX_LINE_BYTES} bytes")
            try:
                async with asyncio.timeout(silence_seconds):
                    chunk = await body.readany()
            except TimeoutError:
                raise StreamSilent() from None
            if not chunk:
                return
            heard()
            buffer += chunk
            continue
        line = bytes(buffer[:end]).rstrip(b"\r").decode("utf-8", "replace")
        del buffer[: end + 1]
        if not line:  # a blank line dispatches the event
            if data:
                yield ServerSentEvent(event or "message", "\n".join(data))
            event, data = "", []
        elif not line.startswith(":"):  # a comment: a keep-alive
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)
            # id (the paging token, also in the record) and retry (reconnecting is the watcher's) are not needed
