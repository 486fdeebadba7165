"""Cross-cutting steps for payments.PaymentsService, in the reference's order:
request id (required, echoed), auth, logging, and error → status mapping (with
rich details, api/errors.py). The request message is decoded here, after auth, so
a malformed one is INVALID_ARGUMENT and counted like any other call, and its
strings are checked (no NUL) before a handler sees them.
grpc.health.v1 and reflection pass through untouched (probes need no key)."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable

import grpc
import structlog
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message

from ... import metrics
from ...auth.authenticators import INVALID_KEY, Authenticator
from ...domain.errors import PaymentsError, UnauthenticatedError, ValidationError
from ...resilience.quotas import Quotas, rpc_class
from ..errors import GRPC_CODES, grpc_status, internal_error
from ..request_context import current_caller
from ..untrusted_input import check_text

SERVICE_PREFIX = "/payments.PaymentsService/"
log = structlog.get_logger("payments.grpc")


def _first(metadata, key: str) -> str:
    for name, value in metadata or ():
        if name == key:
            return value.strip() if isinstance(value, str) else ""
    return ""


def _is_metadata_text(value: str) -> bool:
    """gRPC's ASCII metadata values; anything else arrived from a broken or hostile client."""
    return value.isascii() and value.isprintable()


def _decoded(deserialize: Callable[[bytes], Message], raw: bytes) -> Message:
    try:
        return deserialize(raw)
    except DecodeError:  # broken wire format, invalid UTF-8 in a string, nesting past protobuf's limit
        name = getattr(deserialize, "__self__", None)
        what = name.DESCRIPTOR.full_name if name is not None else "request"
        raise ValidationError(f"malformed request: not a valid {what} message") from None


def check_strings(message: Message, prefix: str = "") -> None:
    """Every string in the message, map keys and values included, is text."""
    for field, value in message.ListFields():
        name = prefix + field.name
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            for text in (t for pair in value.items() for t in pair if isinstance(t, str)):
                check_text(name, text)
        elif field.type == FieldDescriptor.TYPE_STRING:
            for item in value if field.is_repeated else (value,):
                check_text(name, item)
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            for item in value if field.is_repeated else (value,):
                check_strings(item, name + ".")


async def _abort(context: grpc.aio.ServicerContext, error: PaymentsError) -> None:
    status = grpc_status(error)
    await context.abort(status.code, status.details, status.trailing_metadata)


async def _echoed_request_id(context: grpc.aio.ServicerContext, metadata, invalid_counter) -> str:
    """The call's x-request-id, sent back at once; aborts (and counts) a call without a usable one."""
    request_id = _first(metadata, "x-request-id")
    if not request_id or not _is_metadata_text(request_id):
        invalid_counter.inc()
        await _abort(context, ValidationError("x-request-id header is required" if not request_id else
                                              "x-request-id header must be printable ASCII", field="x-request-id"))
    await context.send_initial_metadata((("x-request-id", request_id),))
    return request_id


class PaymentsInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, authenticator: Authenticator, quotas: Quotas | None = None):
        self._authenticator = authenticator
        self._quotas = quotas
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
            if handler.unary_stream is not None:  # WatchPayment, WatchPayments
                wrapped = grpc.unary_stream_rpc_method_handler(
                    self._wrap_stream(method.removeprefix(SERVICE_PREFIX), handler.unary_stream, handler.request_deserializer),
                    request_deserializer=None,
                    response_serializer=handler.response_serializer,
                )
                self._wrapped[method] = wrapped
                return wrapped
            wrapped = grpc.unary_unary_rpc_method_handler(
                self._wrap(method.removeprefix(SERVICE_PREFIX), handler.unary_unary, handler.request_deserializer),
                request_deserializer=None,  # the raw bytes: decoded in the call
                response_serializer=handler.response_serializer,
            )
            self._wrapped[method] = wrapped
        return wrapped

    async def _admit(self, metadata, quota_class: str | None) -> None:
        """Authenticates the call's key (the caller is then current) and takes its quota."""
        api_key = _first(metadata, "x-api-key")
        if not api_key:
            raise UnauthenticatedError("missing x-api-key metadata")
        if not _is_metadata_text(api_key):  # no key we issue looks like that
            raise UnauthenticatedError(INVALID_KEY)
        caller = await self._authenticator.authenticate(api_key)
        current_caller.set(caller)
        structlog.contextvars.bind_contextvars(caller=caller.service_name)
        if self._quotas is not None:
            await self._quotas.admit(caller.service_name, quota_class)

    def _wrap(self, rpc: str, behavior, deserialize: Callable[[bytes], Message]):
        admit, quota_class = self._admit, rpc_class(rpc)
        # This RPC's metric children, found by their label values once, not on every call.
        requests = functools.cache(lambda code: metrics.GRPC_REQUESTS.labels(rpc, code.name))
        latency = functools.cache(lambda: metrics.GRPC_LATENCY.labels(rpc))

        async def call(raw: bytes, context: grpc.aio.ServicerContext):
            metadata = context.invocation_metadata()
            request_id = await _echoed_request_id(context, metadata, requests(grpc.StatusCode.INVALID_ARGUMENT))
            started = time.perf_counter()
            with structlog.contextvars.bound_contextvars(request_id=request_id, rpc=rpc):
                code, error = grpc.StatusCode.OK, None
                try:
                    await admit(metadata, quota_class)
                    request = _decoded(deserialize, raw)
                    check_strings(request)
                    return await behavior(request, context)
                except PaymentsError as exc:
                    error = exc
                except asyncio.CancelledError:
                    # The client cancelled or its deadline passed: log that, not OK.
                    code, error = grpc.StatusCode.CANCELLED, None
                    raise
                except Exception:
                    log.exception("grpc_unhandled_error")
                    error = internal_error()
                finally:
                    if error is not None:
                        code = GRPC_CODES[error.kind]
                    elapsed = time.perf_counter() - started
                    requests(code).inc()
                    latency().observe(elapsed)
                    latency_ms = round(elapsed * 1000, 3)
                    if code == grpc.StatusCode.OK:
                        log.info("grpc_request", grpc_code=code.name, latency_ms=latency_ms)
                    elif error is None:
                        log.warning("grpc_request", grpc_code=code.name, latency_ms=latency_ms,
                                    error="cancelled by the client or its deadline")
                    else:
                        log.warning("grpc_request", grpc_code=code.name, latency_ms=latency_ms, error=error.message)
                await _abort(context, error)

        return call

    def _wrap_stream(self, rpc: str, behavior, deserialize: Callable[[bytes], Message]):
        """The same steps for a server-streaming RPC: checked before the first message,
        an error while streaming ends the stream with its status; logged once, at the end."""
        admit, quota_class = self._admit, rpc_class(rpc)

        async def call(raw: bytes, context: grpc.aio.ServicerContext):
            metadata = context.invocation_metadata()
            invalid = metrics.GRPC_REQUESTS.labels(rpc, grpc.StatusCode.INVALID_ARGUMENT.name)
            request_id = await _echoed_request_id(context, metadata, invalid)
            started = time.perf_counter()
            with structlog.contextvars.bound_contextvars(request_id=request_id, rpc=rpc):
                code, error = grpc.StatusCode.OK, None
                try:
                    await admit(metadata, quota_class)  # opening a watch is a read
                    request = _decoded(deserialize, raw)
                    check_strings(request)
                    async for message in behavior(request, context):
                        yield message
                    return
                except PaymentsError as exc:
                    error = exc
                except (asyncio.CancelledError, GeneratorExit):
                    code = grpc.StatusCode.CANCELLED  # the client left: the usual end of a watch
                    raise
                except Exception:
                    log.exception("grpc_unhandled_error")
                    error = internal_error()
                finally:
                    if error is not None:
                        code = GRPC_CODES[error.kind]
                    metrics.GRPC_REQUESTS.labels(rpc, code.name).inc()
                    log.info("grpc_stream", grpc_code=code.name, seconds=round(time.perf_counter() - started, 3),
                             **({"error": error.message} if error is not None else {}))
                await _abort(context, error)

        return call
