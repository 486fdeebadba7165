"""Failover of a routed create to the rule's next provider, only when the first certainly
created nothing: its circuit was open, or the connection to it was never made. A provider
that may have created something (a timeout after sending, a 5xx) keeps the payment, and
reconcile finishes it there. The move happens while this request holds the payment's
create lease, so the payment stays one, with at most one live provider object."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import aiohttp
import structlog

from ..clock import utcnow
from ..domain.enums import PaymentStatus
from ..domain.errors import ServiceUnavailableError
from ..domain.payment import Payment
from ..repository.events import EventRepository
from ..repository.payments import PaymentRepository
from .breaker import CircuitOpenError

if TYPE_CHECKING:
    from ..service.payments import PaymentService

log = structlog.get_logger("payments.resilience")


def nothing_sent(exc: BaseException | None) -> bool:
    """Whether a failed provider call certainly never reached the provider."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (CircuitOpenError, ConnectionRefusedError, aiohttp.ClientConnectorError)):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


async def create_with_failover(service: PaymentService, payment: Payment, provider: Any, later: list[Any]) -> Payment:
    """service.call_provider_create, moving on to `later` providers while nothing was sent."""
    while True:
        try:
            return await service.call_provider_create(payment, provider)
        except ServiceUnavailableError as exc:
            if not later or not nothing_sent(exc.__cause__):
                raise
            moved = await _move(service, payment, provider, later[0], exc.message)
            if moved is None:
                raise  # a retry of the same request took the payment over meanwhile: it carries on
            payment, provider = moved, later.pop(0)


async def _move(service: PaymentService, payment: Payment, provider: Any, to: Any, reason: str) -> Payment | None:
    """Takes the create lease back (the failed call handed it back) and points the payment at `to`."""
    async with service.db.read() as conn:
        current = await PaymentRepository(conn).get(payment.id)
    if current is None or current.status != PaymentStatus.CREATED or current.provider != provider.type:
        return None
    claimed = await service.claim_unfinished_create(current)
    if claimed is None:
        return None
    callback_url = claimed.provider_callback_url.replace(f"/{provider.type.code}/", f"/{to.type.code}/")
    values = {"provider": to.type, "provider_account_id": to.account_id, "provider_callback_url": callback_url}
    now = utcnow()
    async with service.db.transaction() as conn:
        if not await PaymentRepository(conn).update_if_status(payment.id, PaymentStatus.CREATED, values):
            return None
        await EventRepository(conn).add(
            payment_id=payment.id, event_type="provider_failover", old_status=PaymentStatus.CREATED,
            new_status=PaymentStatus.CREATED, now=now,
            message=f"failed over from {provider.type.code} to {to.type.code}: {reason}"[:1024],
        )
    log.warning("provider_failover", payment_id=payment.id, from_provider=provider.type.code, to_provider=to.type.code,
                reason=reason)
    return dataclasses.replace(claimed, **values)


async def first_available(candidates: list[Any]) -> tuple[Any, list[Any], list[str]]:
    """The first candidate whose circuit lets calls through, those after it, and the names of
    the ones skipped; the first one's CircuitOpenError when every circuit is open."""
    from .guard import ensure_available

    skipped, first_error = [], None
    for index, candidate in enumerate(candidates):
        try:
            await ensure_available(candidate)
        except CircuitOpenError as exc:
            skipped.append(candidate.type.code)
            first_error = first_error or exc
            continue
        return candidate, candidates[index + 1:], skipped
    raise first_error
