"""HTTP middleware, in the reference's order: request id (required, echoed), then
auth; plus error mapping, access logs and a bounded, timed body read."""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import Awaitable

import structlog
from aiohttp import web

from ... import metrics
from ...auth.authenticators import Authenticator
from ...domain.errors import PaymentsError
from ..errors import HTTP_STATUSES, INTERNAL_MESSAGE
from ..request_context import current_caller

log = structlog.get_logger("payments.http")

# Probes, operator endpoints and the customer-facing pages (sandbox checkout, Stripe's and VNPay's return pages) are
# reached without our headers.
OPEN_PREFIXES = ("/healthz", "/readyz", "/metrics", "/openapi.json", "/sandbox/", "/stripe/return", "/vnpay/return")
# Webhooks a provider calls directly: no X-Request-ID or API key, the provider's
# signature is their authentication.
SIGNED_PATHS = ("/webhooks/stripe", "/webhooks/vnpay")


def json_response(body: dict, status: int = 200, headers: dict | None = None) -> web.Response:
    # A trailing newline, as the reference's encoder wrote one.
    return web.Response(
        body=json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode() + b"\n",
        status=status,
        content_type="application/json",
        headers=headers,
    )


def error_response(message: str, status: int) -> web.Response:
    return json_response({"error": message}, status)


class RequestError(Exception):
    """A malformed HTTP request (path, query or body); always 400 unless told otherwise."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message = message
        self.status = status


async def read_body(request: web.Request) -> bytes:
    timeout = request.app["read_timeout"]
    try:
        async with asyncio.timeout(timeout):
            return await request.read()
    except TimeoutError:
        raise RequestError(f"request body not received within {timeout:g} seconds", 408) from None
    except web.HTTPRequestEntityTooLarge:
        raise RequestError(f"request body too large; the limit is {request.app['max_body']} bytes", 413) from None


def build_middlewares(authenticator: Authenticator):
    @web.middleware
    async def request_id_and_auth(request: web.Request, handler):
        if request.path.startswith(OPEN_PREFIXES):
            return await handler(request)
        started = time.perf_counter()
        if request.path in SIGNED_PATHS:
            response = await _mapped(handler(request))
            _log_request(request, response, started)
            return response
        request_id = request.headers.get("X-Request-ID", "").strip()
        if not request_id:
            response = error_response("x-request-id header is required", 400)
            _log_request(request, response, started)
            return response
        with structlog.contextvars.bound_contextvars(request_id=request_id):
            response = await _mapped(_authenticated(request, handler, authenticator))
            response.headers["X-Request-ID"] = request_id
            _log_request(request, response, started)
            return response

    return [request_id_and_auth]


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


async def _authenticated(request: web.Request, handler, authenticator: Authenticator) -> web.StreamResponse:
    api_key = request.headers.get("X-API-Key", "").strip()
    if not api_key:
        return error_response("missing x-api-key header", 401)
    caller = await authenticator.authenticate(api_key)
    current_caller.set(caller)
    structlog.contextvars.bind_contextvars(caller=caller.service_name)
    return await handler(request)


async def _mapped(call: Awaitable[web.StreamResponse]) -> web.StreamResponse:
    """The response, or the error it raised as the reference's JSON error answer."""
    try:
        return await call
    except PaymentsError as exc:
        return error_response(exc.message, HTTP_STATUSES[exc.kind])
    except RequestError as exc:
        return error_response(exc.message, exc.status)
    except web.HTTPMethodNotAllowed as exc:
        return json_response({"message": "Method Not Allowed"}, 405, {"Allow": ", ".join(sorted(exc.allowed_methods))})
    except web.HTTPNotFound:
        return json_response({"message": "Not Found"}, 404)
    except web.HTTPException as exc:
        return error_response(exc.reason, exc.status)
    except Exception:
        log.exception("http_unhandled_error")
        return error_response(INTERNAL_MESSAGE, 500)
