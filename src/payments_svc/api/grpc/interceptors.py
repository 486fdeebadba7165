"""Cross-cutting steps for payments.PaymentsService, in the reference's order:
request id (required, echoed), auth, logging, and error → status mapping.
grpc.health.v1 and reflection pass through untouched (probes need no key)."""

from __future__ import annotations

import asyncio
import functools
import time

import grpc
import structlog

from ... import metrics
from ...auth.authenticators import Authenticator
from ...domain.errors import PaymentsError
from ..errors import GRPC_CODES, INTERNAL_MESSAGE
from ..request_context import current_caller

SERVICE_PREFIX = "/payments.PaymentsService/"
log = structlog.get_logger("payments.grpc")


def _first(metadata, key: str) -> str:
    for name, value in metadata or ():
        if name == key:
            return value.strip() if isinstance(value, str) else ""
    return ""


class PaymentsInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, authenticator: Authenticator):
        self._authenticator = authenticator
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method
        if not method.startswith(SERVICE_PREFIX):
            return await continuation(handler_call_details)
        wrapped = self._wrapped.get(method)
        if wrapped is None:
            handler = await continuation(handler_call_details)
            if handler is None:
                return None
            wrapped = grpc.unary_unary_rpc_method_handler(
                self._wrap(method.removeprefix(SERVICE_PREFIX), handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
            self._wrapped[method] = wrapped
        return wrapped

    def _wrap(self, rpc: str, behavior):
        authenticator = self._authenticator
        # This RPC's metric children, found by their label values once, not on every call.
        requests = functools.cache(lambda code: metrics.GRPC_REQUESTS.labels(rpc, code.name))
        latency = functools.cache(lambda: metrics.GRPC_LATENCY.labels(rpc))

        async def call(request, context: grpc.aio.ServicerContext):
            metadata = context.invocation_metadata()
            request_id = _first(metadata, "x-request-id")
            if not request_id:
                requests(grpc.StatusCode.INVALID_ARGUMENT).inc()
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "x-request-id header is required")
            await context.send_initial_metadata((("x-request-id", request_id),))
            started = time.perf_counter()
            with structlog.contextvars.bound_contextvars(request_id=request_id, rpc=rpc):
                code, message = grpc.StatusCode.OK, None
                try:
                    api_key = _first(metadata, "x-api-key")
                    if not api_key:
                        code, message = grpc.StatusCode.UNAUTHENTICATED, "missing x-api-key metadata"
                    else:
                        caller = await authenticator.authenticate(api_key)
                        current_caller.set(caller)
                        structlog.contextvars.bind_contextvars(caller=caller.service_name)
                        return await behavior(request, context)
                except PaymentsError as exc:
                    code, message = GRPC_CODES[exc.kind], exc.message
                except asyncio.CancelledError:
                    # The client cancelled or its deadline passed: log that, not OK.
                    code, message = grpc.StatusCode.CANCELLED, "cancelled by the client or its deadline"
                    raise
                except Exception:
                    log.exception("grpc_unhandled_error")
                    code, message = grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE
                finally:
                    elapsed = time.perf_counter() - started
                    requests(code).inc()
                    latency().observe(elapsed)
                    latency_ms = round(elapsed * 1000, 3)
                    if code == grpc.StatusCode.OK:
                        log.info("grpc_request", grpc_code=code.name, latency_ms=latency_ms)
                    else:
                        log.warning("grpc_request", grpc_code=code.name, latency_ms=latency_ms, error=message)
                await context.abort(code, message)

        return call
