"""HTTP middleware, in the reference's order: request id (required, echoed), then
auth; plus error mapping (every error answer is the JSON error shape), access logs
and a bounded, timed body read."""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import Awaitable

import structlog
from aiohttp import ClientPayloadError, web

from ... import metrics
from ...auth.authenticators import INVALID_KEY, Authenticator
from ...domain.errors import ErrorKind, PaymentsError, UnauthenticatedError, ValidationError
from ...resilience.quotas import Quotas, http_class
from ..errors import http_error, internal_error
from ..request_context import current_caller
from ..untrusted_input import text_problem

log = structlog.get_logger("payments.http")

# Probes, operator endpoints and the customer-facing pages (sandbox checkout, Stripe's and VNPay's return
# pages) are reached without our headers; so is a browser's /favicon.ico probe (a plain 404, not a 400).
OPEN_PREFIXES = ("/healthz", "/readyz", "/metrics", "/openapi.json", "/sandbox/", "/stripe/return", "/vnpay/return",
                 "/favicon.ico")
# Webhooks a provider calls directly: no X-Request-ID or API key, the provider's
# signature is their authentication.
SIGNED_PATHS = ("/webhooks/stripe", "/webhooks/vnpay",
                "/webhooks/stripe/{account_id}", "/webhooks/vnpay/{account_id}")  # a caller's provider account
# Logged and counted for a client that left mid-request (nginx's "client closed request").
CLIENT_CLOSED_REQUEST = 499


def json_response(body: dict, status: int = 200, headers: dict | None = None) -> web.Response:
    # A trailing newline, as the reference's encoder wrote one.
    return web.Response(
        body=json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode() + b"\n",
        status=status,
        content_type="application/json",
        headers=headers,
    )


def error_response(error: PaymentsError, *, headers: dict[str, str] | None = None,
                   compat: dict[str, str] | None = None) -> web.Response:
    """The JSON error answer; `compat` adds keys the reference's answer had."""
    status, body, error_headers = http_error(error)
    return json_response({**body, **(compat or {})}, status, {**error_headers, **(headers or {})})


class ClientDisconnected(Exception):
    """The client went away before its request was read: there is no one to answer."""


async def read_body(request: web.Request) -> bytes:
    timeout = request.app["read_timeout"]
    try:
        async with asyncio.timeout(timeout):
            return await request.read()
    except TimeoutError:
        raise PaymentsError(f"request body not received within {timeout:g} seconds", ErrorKind.REQUEST_TIMEOUT) from None
    except web.HTTPRequestEntityTooLarge:
        raise PaymentsError(f"request body too large; the limit is {request.app['max_body']} bytes",
                            ErrorKind.PAYLOAD_TOO_LARGE) from None
    except (ConnectionError, ClientPayloadError):
        raise ClientDisconnected() from None


def header_text(request: web.Request, name: str) -> str | None:
    """The header's trimmed value; None if it is not text (undecodable bytes arrive
    as lone surrogates, which could be neither stored nor echoed back)."""
    value = request.headers.get(name, "").strip()
    return None if text_problem(value) else value


def build_middlewares(authenticator: Authenticator, quotas: Quotas | None = None):
    @web.middleware
    async def request_id_and_auth(request: web.Request, handler):
        if request.path.startswith(OPEN_PREFIXES):
            return await _mapped(handler(request))
        started = time.perf_counter()
        resource = request.match_info.route.resource
        if (resource.canonical if resource is not None else request.path) in SIGNED_PATHS:
            response = await _mapped(handler(request))
            _log_request(request, response, started)
            return response
        try:
            request_id = _request_id(request)
        except PaymentsError as exc:
            response = error_response(exc)
            _log_request(request, response, started)
            return response
        with structlog.contextvars.bound_contextvars(request_id=request_id):
            response = await _mapped(_authenticated(request, handler, authenticator, quotas))
            response.headers["X-Request-ID"] = request_id
            _log_request(request, response, started)
            return response

    return [request_id_and_auth]


def _request_id(request: web.Request) -> str:
    request_id = header_text(request, "X-Request-ID")
    if request_id is None:
        raise ValidationError("x-request-id header must be UTF-8 text without NUL characters", field="x-request-id")
    if not request_id:
        raise ValidationError("x-request-id header is required", field="x-request-id")
    return request_id


def _route(request: web.Request) -> str:
    """The route template (/payments/{id}), never the raw path: bounded label values."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


# Metric children found by their label values once, not on every request (the values are
# bounded: route templates, methods, statuses).
@functools.cache
def _requests(route: str, method: str, status: int):
    return metrics.HTTP_REQUESTS.labels(route, method, str(status))


@functools.cache
def _latency(route: str, method: str):
    return metrics.HTTP_LATENCY.labels(route, method)


def _log_request(request: web.Request, response: web.StreamResponse, started: float) -> None:
    elapsed = time.perf_counter() - started
    route = _route(request)
    _requests(route, request.method, response.status).inc()
    _latency(route, request.method).observe(elapsed)
    log.info(
        "http_request",
        method=request.method,
        path=request.path,
        status=response.status,
        latency_ms=round(elapsed * 1000, 3),
        remote_ip=request.remote,
    )


async def _authenticated(request: web.Request, handler, authenticator: Authenticator,
                         quotas: Quotas | None) -> web.StreamResponse:
    api_key = header_text(request, "X-API-Key")
    if api_key == "":
        raise UnauthenticatedError("missing x-api-key header")
    if api_key is None:  # no key we issue has such bytes
        raise UnauthenticatedError(INVALID_KEY)
    caller = await authenticator.authenticate(api_key)
    current_caller.set(caller)
    structlog.contextvars.bind_contextvars(caller=caller.service_name)
    if quotas is not None:
        await quotas.admit(caller.service_name, http_class(request.method, request.path))
    return await handler(request)


# What an aiohttp HTTPException (routing, or raised by a page handler) is as an error.
_HTTP_EXCEPTION_KINDS = {404: ErrorKind.NOT_FOUND, 405: ErrorKind.METHOD_NOT_ALLOWED,
                         408: ErrorKind.REQUEST_TIMEOUT, 413: ErrorKind.PAYLOAD_TOO_LARGE}


def http_exception_error(status: int, message: str) -> PaymentsError:
    if status >= 500:
        return internal_error()
    return PaymentsError(message, _HTTP_EXCEPTION_KINDS.get(status, ErrorKind.INVALID_ARGUMENT))


async def _mapped(call: Awaitable[web.StreamResponse]) -> web.StreamResponse:
    """The response, or the error it raised as the JSON error answer."""
    try:
        return await call
    except PaymentsError as exc:
        return error_response(exc)
    except ClientDisconnected:
        return web.Response(status=CLIENT_CLOSED_REQUEST)
    except web.HTTPException as exc:
        if exc.status < 400:  # redirects
            raise
        default_text = exc.text is None or exc.text == f"{exc.status}: {exc.reason}"
        message = exc.reason if default_text else exc.text
        # The router's 404/405 keep the reference's {"message": ...} beside the error shape.
        compat = {"message": message} if default_text and exc.status in (404, 405) else None
        allow = {"Allow": ", ".join(sorted(exc.allowed_methods))} if isinstance(exc, web.HTTPMethodNotAllowed) else None
        return error_response(http_exception_error(exc.status, message), headers=allow, compat=compat)
    except Exception:
        log.exception("http_unhandled_error")
        return error_response(internal_error())
