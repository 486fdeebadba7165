"""Refunds: RefundPayment (full or partial, idempotent on the refund's request_id) and
the ledger that provider events keep up to date.

A refund first reserves its amount with a conditional UPDATE of refundable_cents
(so two refunds can never together exceed it), then asks the provider with an
idempotency key of its own. A provider refusal releases the reservation; a provider
outage keeps it, and the caller's retry with the same request_id asks again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from ..clock import utcnow
from ..domain.enums import PaymentStatus, PaymentType, ProviderType
from ..domain.errors import ErrorKind, PaymentsError, ProviderError, ServiceUnavailableError, ValidationError
from ..domain.payment import Payment
from ..domain.refund import REFUND_REASONS, Refund, RefundCommand, RefundStatus, refund_totals
from ..providers.base import RefundingProvider, RefundSnapshot, provider_idempotency_key
from ..repository.events import EventRepository
from ..repository.payments import PaymentRepository
from ..repository.refunds import DuplicateRefundKey, RefundRepository
from .part import ServicePart
from .status_changes import StatusChange, apply_status_change

if TYPE_CHECKING:
    pass

log = structlog.get_logger("payments.refunds")

REQUEST_ID_MAX = 128


@dataclass(frozen=True, slots=True)
class RefundResult:
    payment: Payment
    refund: Refund
    replayed: bool


@dataclass(frozen=True, slots=True)
class LedgerChange:
    """What merging provider snapshots changed: payment columns, and what to say."""

    values: dict
    notes: list[str]

    def callback_type(self, payment: Payment) -> str | None:
        """The caller hears of a change of refunded_cents."""
        refunded = self.values.get("refunded_cents", payment.refunded_cents)
        if refunded > payment.refunded_cents:
            return "payment.refunded"
        if refunded < payment.refunded_cents:
            return "payment.refund_reversed"  # a refund failed after it had succeeded
        return None

    def status_change(self, payment: Payment, event_type: str) -> StatusChange:
        """Records the refunds on the payment's timeline."""
        callback = self.callback_type(payment)
        return StatusChange(None, event_type, values=dict(self.values), message="; ".join(self.notes) or None,
                            announce=callback is not None, callback_type=callback)


def validate_refund(cmd: RefundCommand) -> None:
    if not cmd.request_id:
        raise ValidationError("request_id is required", field="request_id")
    if len(cmd.request_id) > REQUEST_ID_MAX:
        raise ValidationError(f"request_id must be at most {REQUEST_ID_MAX} characters", field="request_id")
    if cmd.amount_cents < 0:
        raise ValidationError("amount_cents must be >= 0 (0 refunds everything still refundable)", field="amount_cents")
    if cmd.reason and cmd.reason not in REFUND_REASONS:
        raise ValidationError(f"reason must be empty or one of {', '.join(REFUND_REASONS)}", field="reason")


async def merge_refunds(conn: AsyncConnection, payment: Payment, provider: ProviderType,
                        snapshots: Iterable[RefundSnapshot], now: datetime) -> LedgerChange:
    """Brings the ledger up to what the provider reports. Refunds only move forward, so
    a stale snapshot (a late or replayed event) changes nothing; refunds made at the
    provider are added. The caller holds the payment's row lock."""
    repo = RefundRepository(conn)
    notes = []
    for snap in snapshots:
        row = await repo.find_by_provider_id(provider, snap.provider_refund_id)
        if row is None and snap.refund_id is not None:
            ours = await repo.get(snap.refund_id)  # answered before we stored the provider's id
            if ours is not None and ours.payment_id == payment.id and ours.provider_refund_id is None:
                row = ours
        if row is not None and row.payment_id != payment.id:
            continue  # another payment's refund: the event named objects of both (never from Stripe)
        if row is None:
            await repo.insert(payment_id=payment.id, provider=provider, amount_cents=snap.amount_cents, status=snap.status,
                              now=now, provider_refund_id=snap.provider_refund_id, failure_reason=snap.failure_reason)
            notes.append(f"refund {snap.provider_refund_id} of {snap.amount_cents} made at the provider: {snap.status.name}")
            continue
        if snap.status.rank < row.status.rank or (snap.status.rank == row.status.rank and row.provider_refund_id is not None):
            continue
        await repo.update(row.id, dict(status=snap.status, provider_refund_id=snap.provider_refund_id,
                                       failure_reason=snap.failure_reason, updated_at=now))
        notes.append(f"refund #{row.id} ({snap.provider_refund_id}) of {row.amount_cents}: {snap.status.name}"
                     + (f" ({snap.failure_reason})" if snap.failure_reason else ""))
    if not notes:
        return LedgerChange({}, [])
    refunded, refundable = refund_totals(payment.amount_cents, await repo.list_for_payment(payment.id))
    values = {}
    if refunded != payment.refunded_cents:
        values["refunded_cents"] = refunded
    if refundable != payment.refundable_cents:
        values["refundable_cents"] = refundable
    return LedgerChange(values, notes)


class RefundService(ServicePart):
    """Part of PaymentService."""

    async def refund(self, payment: Payment, cmd: RefundCommand) -> RefundResult:
        """`payment` was read for the caller (scoped); `cmd` is validated (validate_refund)."""
        provider = await self.providers.for_payment(payment)
        if not isinstance(provider, RefundingProvider):
            raise PaymentsError(f"{provider.type.code} payments cannot be refunded through the service",
                                ErrorKind.FAILED_PRECONDITION)
        async with self.db.read() as conn:
            existing = await RefundRepository(conn).find_by_request(payment.id, cmd.request_id)
        if existing is not None:
            return await self._resume(payment, existing, cmd, provider)
        if payment.payment_type == PaymentType.RECURRING:
            raise PaymentsError("subscription payments cannot be refunded through the service; refund the invoice "
                                "at the provider (the refund then shows on the payment)", ErrorKind.FAILED_PRECONDITION)
        try:
            refund = await self._reserve(payment.id, cmd, provider.type)
        except DuplicateRefundKey:  # a concurrent request with the same request_id won
            async with self.db.read() as conn:
                existing = await RefundRepository(conn).find_by_request(payment.id, cmd.request_id)
            return await self._resume(payment, existing, cmd, provider)
        return await self._submit(payment.id, refund, provider, replayed=False)

    async def _reserve(self, payment_id: int, cmd: RefundCommand, provider: ProviderType) -> Refund:
        now = utcnow()
        async with self.db.transaction() as conn:
            payment = await PaymentRepository(conn).get(payment_id, for_update=True)
            if payment.status != PaymentStatus.PAID:
                raise PaymentsError(f"only paid payments can be refunded; this one is {payment.status.name}",
                                    ErrorKind.FAILED_PRECONDITION)
            amount = cmd.amount_cents or payment.refundable_cents
            if amount == 0:
                raise PaymentsError("nothing left to refund: refundable_cents is 0", ErrorKind.FAILED_PRECONDITION)
            repo = RefundRepository(conn)
            # The guard against refunding more than was paid: it applies only while
            # enough is left, whatever else ran since the payment was read.
            if not await repo.reserve(payment.id, amount, now):
                raise PaymentsError(f"amount_cents {amount} is more than refundable_cents {payment.refundable_cents}",
                                    ErrorKind.FAILED_PRECONDITION, field="amount_cents")
            refund = await repo.insert(payment_id=payment.id, provider=provider, amount_cents=amount,
                                       status=RefundStatus.PENDING, now=now, request_id=cmd.request_id,
                                       request_fingerprint=cmd.fingerprint(), reason=cmd.reason or None)
            await EventRepository(conn).add(
                payment_id=payment.id, event_type="refund_requested", old_status=payment.status,
                new_status=payment.status, now=now, message=f"refund #{refund.id} of {amount} requested",
            )
        return refund

    async def _resume(self, payment: Payment, existing: Refund, cmd: RefundCommand, provider: RefundingProvider) -> RefundResult:
        if existing.request_fingerprint != cmd.fingerprint():
            raise PaymentsError("request_id was already used for a refund of this payment with different parameters; "
                                "use a new request_id for a new refund", ErrorKind.IDEMPOTENCY_KEY_REUSED, field="request_id")
        if existing.error_code is not None:  # the provider refused it: the same answer again
            raise ProviderError(existing.failure_reason or "payment provider refused the refund", retryable=False,
                                kind=ErrorKind(existing.error_code))
        if existing.status == RefundStatus.PENDING and existing.provider_refund_id is None:
            return await self._submit(payment.id, existing, provider, replayed=True)  # asked before, answer not known
        async with self.db.read() as conn:
            current = await PaymentRepository(conn).get(payment.id)
        return RefundResult(current, existing, replayed=True)

    async def _submit(self, payment_id: int, refund: Refund, provider: RefundingProvider, *, replayed: bool) -> RefundResult:
        async with self.db.read() as conn:
            payment = await PaymentRepository(conn).get(payment_id)
        # The payment's callback hash, unique for ever, keeps keys apart across payments and databases.
        key = provider_idempotency_key(payment.caller_service, refund.request_id, f"refund:{payment.provider_callback_hash}")
        try:
            async with asyncio.timeout(self.settings.provider_timeout_seconds):
                snapshot = await provider.refund(payment, refund, key)
        except TimeoutError:
            raise ServiceUnavailableError("payment provider timed out; retry the refund with the same request_id") from None
        except ProviderError as exc:
            if exc.retryable:
                raise ServiceUnavailableError(f"{exc.message}; retry the refund with the same request_id",
                                              retry_after_seconds=exc.retry_after_seconds) from None
            await self._refused(payment.id, refund, exc)
            raise
        snapshot = replace(snapshot, refund_id=refund.id)
        return await self._record(payment.id, refund.id, snapshot, replayed)

    async def _record(self, payment_id: int, refund_id: int, snapshot: RefundSnapshot, replayed: bool) -> RefundResult:
        now = utcnow()
        async with self.db.transaction() as conn:
            payment = await PaymentRepository(conn).get(payment_id, for_update=True)
            change = await merge_refunds(conn, payment, payment.provider, [snapshot], now)
            if change.notes:
                payment = await apply_status_change(conn, payment, change.status_change(payment, "refund_created"), now)
            refund = await RefundRepository(conn).get(refund_id)
        log.info("refund_recorded", payment_id=payment_id, refund_id=refund_id, status=refund.status.name,
                 refunded_cents=payment.refunded_cents, refundable_cents=payment.refundable_cents)
        return RefundResult(payment, refund, replayed)

    async def _refused(self, payment_id: int, refund: Refund, exc: ProviderError) -> None:
        """The provider said no: the refund fails for good and its amount is released."""
        now = utcnow()
        async with self.db.transaction() as conn:
            payment = await PaymentRepository(conn).get(payment_id, for_update=True)
            repo = RefundRepository(conn)
            await repo.update(refund.id, dict(status=RefundStatus.FAILED, failure_reason=exc.message[:1024],
                                              error_code=exc.kind.value, updated_at=now))
            _, refundable = refund_totals(payment.amount_cents, await repo.list_for_payment(payment.id))
            change = StatusChange(None, "refund_rejected", values={"refundable_cents": refundable},
                                  message=f"refund #{refund.id} of {refund.amount_cents} refused by the provider: {exc.message}")
            await apply_status_change(conn, payment, change, now)
