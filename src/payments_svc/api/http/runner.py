"""The aiohttp runner `serve` uses: requests that aiohttp's parser refuses before
any route or middleware sees them (CR/LF or NUL in a header, an oversized header
line, a broken request line) are answered with the JSON error shape too, not
aiohttp's text/plain page, and logged without a traceback (the fault is the client's)."""

from __future__ import annotations

import structlog
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from .middleware import error_response, http_exception_error

log = structlog.get_logger("payments.http")


class _JsonErrorRequestHandler(RequestHandler):
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


class _JsonErrorServer(web.Server):
    def __call__(self) -> RequestHandler:
        return _JsonErrorRequestHandler(self, loop=self._loop, **self._kwargs)


class HttpRunner(web.AppRunner):
    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _JsonErrorServer  # the same server; only its connections' error answers differ
        return server
