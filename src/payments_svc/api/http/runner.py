"""The aiohttp runner of `payments-svc serve`. Two things differ from aiohttp's own:

* Requests that aiohttp's parser refuses before any route or middleware sees them (CR/LF
  or NUL in a header, an oversized header line, a broken request line) are answered with
  the JSON error shape too, not aiohttp's text/plain page, and logged without a traceback
  (the fault is the client's).
* Its stop does not drop a request that has begun: a request is in flight from its first
  byte, not from when its handler runs. aiohttp's own cleanup closes every connection at
  once: one still receiving a request's head is cut, and one whose handler waits for the
  rest of the body stops reading, so the handler waits out the whole grace period for
  bytes that are dropped. Here the listener closes first; idle connections are closed;
  connections holding a request are left to finish it (within the grace period) and
  closed once idle.

This reaches into aiohttp's connection handler (its message queue, per-request method and
error page), pinned by pyproject's aiohttp range; tests/integration/test_serve_process.py
and tests/hardening fail if that changes."""

from __future__ import annotations

import asyncio

import structlog
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from .middleware import error_response, http_exception_error

log = structlog.get_logger("payments.http")

POLL_SECONDS = 0.02
# What aiohttp still waits for a handler after our own grace period ran out (0 means forever).
CANCEL_AFTER_SECONDS = 0.1


class _RequestHandler(RequestHandler):
    """aiohttp's connection handler, answering parser errors in JSON and counting the
    requests it has begun and answered."""

    __slots__ = ("_begun", "_answered", "_head_started", "_body")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._begun = self._answered = 0
        self._head_started = False
        self._body = None  # the payload of the latest request, while it is still arriving

    def data_received(self, data: bytes) -> None:
        queued = len(self._messages)
        reading_body = self._body is not None and not self._body.is_eof()
        super().data_received(data)
        parsed = len(self._messages) - queued
        if parsed > 0:
            self._begun += parsed
            self._body = self._messages[-1][1]
            self._head_started = False
        elif data and not reading_body and not (self._close or self._force_close):
            self._head_started = True  # the first bytes of a request whose head is not complete yet

    async def _handle_request(self, *args, **kwargs):
        try:
            return await super()._handle_request(*args, **kwargs)
        finally:
            self._answered += 1

    @property
    def holds_request(self) -> bool:
        """A request has begun on this connection and is not answered yet."""
        return self._head_started or self._answered < self._begun

    def handle_error(self, request, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if status >= 500:
            self.log_exception("Error handling request", exc_info=exc)
        else:
            log.info("http_request_refused", status=status, error=message, remote_ip=request.remote)
        if request.writer.output_size > 0:  # part of a response is out: the connection is broken
            raise ConnectionError("Response is sent already, cannot send another response with the error message")
        reason = (message or "Bad Request").splitlines()[0].rstrip(":")  # the rest echoes the offending bytes
        response = error_response(http_exception_error(status, f"malformed HTTP request: {reason}"))
        response.force_close()
        return response


class _Server(web.Server):
    def __call__(self) -> RequestHandler:
        return _RequestHandler(self, loop=self._loop, **self._kwargs)


class HttpRunner(web.AppRunner):
    def __init__(self, app: web.Application, **kwargs):
        super().__init__(app, shutdown_timeout=CANCEL_AFTER_SECONDS, **kwargs)

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _Server  # the same server, making our connection handlers
        return server

    async def stop(self, grace_seconds: float) -> None:
        """Stops listening, lets the requests that have begun finish within
        `grace_seconds` while closing every connection that is idle, then cleans up
        (cancelling what is still running)."""
        for site in list(self.sites):
            await site.stop()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_seconds
        while self.server is not None:
            busy = False
            for connection in self.server.connections:
                if connection.holds_request:
                    busy = True
                else:
                    connection.close()  # idle: nothing of a request received since the last answer
            if not busy or loop.time() >= deadline:
                break
            await asyncio.sleep(POLL_SECONDS)
        await self.cleanup()
