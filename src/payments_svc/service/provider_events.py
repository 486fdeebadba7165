"""Inbound provider webhooks, through two entrances: the reference's per-payment URL
(`/webhooks/providers/{provider}/{hash}`, the hash names the payment) and a provider's
account-level endpoint (`/webhooks/stripe`, `/webhooks/vnpay`), where the event names its
payment by the reference it carries in metadata or by the provider's ids of its objects.

Either way the webhook is verified (and its amount, where the provider reports one, is
the payment's), every delivery is recorded with its outcome, and
each event id is applied once: its dedup row, the status change (through the
transition table, so late or reordered events never regress), the refund ledger and
the callback to the caller commit together or not at all.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from ..clock import utcnow
from ..domain.enums import CallbackStatus, PaymentStatus
from ..domain.errors import (
    CallbackAmountMismatchError,
    CallbackRejectedError,
    NotFoundError,
    ProviderError,
    ServiceUnavailableError,
    ValidationError,
)
from ..domain.payment import Payment, ProviderCallback
from ..providers.base import (
    Provider,
    ProviderEvent,
    RefundListingProvider,
    RefundSnapshot,
    ReleasingProvider,
    provider_idempotency_key,
)
from ..repository.callbacks import CallbackLogRepository, DuplicateProviderEvent
from ..repository.payments import PaymentRepository
from ..repository.provider_objects import ProviderObjectRepository
from .part import ServicePart
from .refunds import LedgerChange, merge_refunds
from .status_changes import ConcurrentUpdate, StatusChange, apply_status_change

if TYPE_CHECKING:
    pass

log = structlog.get_logger("payments.provider_events")

MAX_APPLY_ATTEMPTS = 5


@dataclass(frozen=True, slots=True)
class CallbackOutcome:
    """What became of an accepted callback (VNPay's IPN answer depends on it)."""

    status: CallbackStatus  # PROCESSED, DUPLICATE or IGNORED
    previous_status: PaymentStatus | None = None  # the payment's status before it was applied (PROCESSED)


class ProviderCallbacks(ServicePart):
    """Part of PaymentService."""

    async def handle(self, callback: ProviderCallback) -> CallbackOutcome:
        """The per-payment URL. As the reference: an unknown hash with a bad signature is
        400, not 404. The payment is read first because its account's secret verifies
        the signature (an unknown hash: the default account's)."""
        for value, message, field in (
            (callback.request_id, "request_id is required", "request_id"),
            (callback.provider, "provider is required", "provider"),
            (callback.callback_hash, "callback hash is required", "callback_hash"),
            (callback.signature, "provider signature is required", "signature"),
            (callback.payload, "payload is required", "payload"),
        ):
            if not value.strip() if isinstance(value, str) else not value:
                raise ValidationError(message, field=field)
        provider = self.providers.by_name(callback.provider)
        record = dict(provider=provider.type.code, callback_hash=callback.callback_hash.strip(),
                      signature=callback.signature, payload=callback.payload.decode("utf-8", errors="replace"))
        async with self.db.read() as conn:
            payment = await PaymentRepository(conn).find_by_callback_hash(provider.type, record["callback_hash"])
        if payment is not None:
            provider = await self.providers.for_payment(payment)
        event = await self._parse(provider, callback.payload, callback.signature, record)
        async with self.db.read() as conn:
            owners = await ProviderObjectRepository(conn).payment_ids(provider.type, event.object_ids)
        if payment is None:
            await self._record(record, CallbackStatus.REJECTED, event, error="payment not found for callback hash")
            raise NotFoundError()
        if (event.callback_hash and event.callback_hash != payment.provider_callback_hash) or owners - {payment.id}:
            # Forwarded to the wrong payment's URL: applying it here would be wrong.
            await self._record(record, CallbackStatus.REJECTED, event, payment_id=payment.id,
                               error="the event is about another payment than the callback hash's")
            raise CallbackRejectedError("the event is about another payment")
        return await self._apply(provider, payment, event, record)

    async def handle_account(self, provider_name: str, payload: bytes, signature: str,
                             account_id: int | None = None) -> CallbackOutcome:
        """The provider's account-level endpoint: no hash, no API key; the signature with
        the account's secret is the only authentication (account_id None: the default
        account). Only the account's own payments are changed through it."""
        if not signature.strip():
            raise ValidationError("provider signature is required", field="signature")
        if not payload:
            raise ValidationError("payload is required", field="payload")
        provider = await self.providers.for_account(self.providers.by_name(provider_name).type, account_id)
        record = dict(provider=provider.type.code, callback_hash="", signature=signature,
                      payload=payload.decode("utf-8", errors="replace"))
        event = await self._parse(provider, payload, signature, record)
        try:
            payment = await self._route(provider, event)
            if payment is not None and payment.provider_account_id != account_id:
                raise CallbackRejectedError(f"the event is about payment {payment.id} of another provider account "
                                            "than this endpoint's")
        except CallbackRejectedError as exc:
            await self._record(record, CallbackStatus.REJECTED, event, error=exc.reason)
            raise
        if payment is None:
            if not event.handled:  # e.g. customer.created: nothing of ours, nothing to do
                await self._record(record, CallbackStatus.IGNORED, event, error=event.message)
                return CallbackOutcome(CallbackStatus.IGNORED)
            # Not acknowledged: the provider retries, and an event that arrived before
            # the object it names was recorded applies then.
            await self._record(record, CallbackStatus.REJECTED, event, error="no payment for the event's objects")
            raise NotFoundError()
        record["callback_hash"] = payment.provider_callback_hash
        return await self._apply(provider, payment, event, record)

    async def _parse(self, provider: Provider, payload: bytes, signature: str, record: dict) -> ProviderEvent:
        try:
            if not signature.isascii():  # every scheme's signatures are ASCII (and hmac compares no other text)
                raise CallbackRejectedError("signature is not ASCII")
            return provider.parse_callback(payload, signature)
        except CallbackRejectedError as exc:
            await self._record(record, CallbackStatus.REJECTED, None, error=f"provider callback validation failed: {exc.reason}")
            raise

    async def _route(self, provider: Provider, event: ProviderEvent) -> Payment | None:
        async with self.db.read() as conn:
            payments = PaymentRepository(conn)
            if event.callback_hash:
                payment = await payments.find_by_callback_hash(provider.type, event.callback_hash)
                if payment is not None:
                    return payment
            owners = await ProviderObjectRepository(conn).payment_ids(provider.type, event.object_ids)
            if len(owners) > 1:
                raise CallbackRejectedError(f"the event names objects of several payments: {sorted(owners)}")
            return await payments.get(owners.pop()) if owners else None

    async def _apply(self, provider: Provider, payment: Payment, event: ProviderEvent, record: dict) -> CallbackOutcome:
        if event.amount_cents is not None and event.amount_cents != payment.amount_cents:
            reason = f"the event reports an amount of {event.amount_cents}, the payment is of {payment.amount_cents}"
            await self._record(record, CallbackStatus.REJECTED, event, payment_id=payment.id, error=reason)
            raise CallbackAmountMismatchError(reason)
        snapshots = list(event.refunds)
        if event.refunds_of and isinstance(provider, RefundListingProvider):
            snapshots += await self._fetch_refunds(provider, payment, event, record)
        for _ in range(MAX_APPLY_ATTEMPTS):
            now = utcnow()
            try:
                async with self.db.transaction() as conn:
                    # The row lock first: taking it after the dedup row's foreign-key
                    # check (a shared lock on the payment) deadlocks with a cancel.
                    current = await PaymentRepository(conn).get(payment.id, for_update=True)
                    await CallbackLogRepository(conn).record(
                        **record, status=CallbackStatus.PROCESSED, now=now, payment_id=payment.id,
                        provider_event_id=event.event_id, dedup_key=event.event_id,
                    )
                    ledger = await merge_refunds(conn, current, provider.type, snapshots, now)
                    updated = await apply_status_change(conn, current, _event_change(event, current, record["payload"], ledger), now)
                    owned = [i for i in event.object_ids if i != current.provider_payment_id]
                    await ProviderObjectRepository(conn).register(provider.type, payment.id, owned, now)
            except DuplicateProviderEvent:
                await self._record(record, CallbackStatus.DUPLICATE, event, payment_id=payment.id, error="event already processed")
                return CallbackOutcome(CallbackStatus.DUPLICATE)
            except ConcurrentUpdate:
                continue
            log.info("provider_callback_applied", payment_id=payment.id, event_type=event.event_type,
                     old_status=current.status.name, new_status=updated.status.name)
            if updated.status.is_terminal and not current.status.is_terminal:
                await self._release(provider, updated)
            return CallbackOutcome(CallbackStatus.PROCESSED, current.status)
        raise ServiceUnavailableError("payment is being updated concurrently; the provider should retry")

    async def _fetch_refunds(self, provider: RefundListingProvider, payment: Payment, event: ProviderEvent,
                             record: dict) -> list[RefundSnapshot]:
        """The event says refunds changed without listing them: ask for the current ones."""
        try:
            async with asyncio.timeout(self.settings.provider_timeout_seconds):
                return await provider.fetch_refunds(event.refunds_of)
        except (TimeoutError, ProviderError) as exc:
            reason = exc.message if isinstance(exc, ProviderError) else "payment provider timed out"
            await self._record(record, CallbackStatus.REJECTED, event, payment_id=payment.id,
                               error=f"could not fetch the refunds of {event.refunds_of}: {reason}")
            raise ServiceUnavailableError(f"could not fetch the refunds from the provider ({reason}); the provider should retry") from None

    async def _release(self, provider: Provider, payment: Payment) -> None:
        """A payment just ended: stop its provider object taking another payment. Best
        effort: a Stripe payment link also stops itself after its one completed session."""
        if not isinstance(provider, ReleasingProvider):
            return
        key = provider_idempotency_key(payment.caller_service, payment.request_id, "release")
        try:
            async with asyncio.timeout(self.settings.provider_timeout_seconds):
                await provider.release(payment, key)
        except (TimeoutError, ProviderError) as exc:
            log.warning("provider_release_failed", payment_id=payment.id,
                        error=exc.message if isinstance(exc, ProviderError) else "payment provider timed out")

    async def _record(self, record: dict, status: CallbackStatus, event: ProviderEvent | None, *,
                      payment_id: int | None = None, error: str | None = None) -> None:
        async with self.db.transaction() as conn:
            await CallbackLogRepository(conn).record(
                **record, status=status, now=utcnow(), payment_id=payment_id,
                provider_event_id=event.event_id if event else None, error=error,
            )


def _event_change(event: ProviderEvent, current: Payment, payload: str, ledger: LedgerChange) -> StatusChange:
    values = {}
    if event.provider_payment_id:
        values["provider_payment_id"] = event.provider_payment_id
    if event.provider_subscription_id and event.provider_subscription_id != current.provider_subscription_id:
        values["provider_subscription_id"] = event.provider_subscription_id
    if event.failure_reason and event.status == PaymentStatus.FAILED:
        values["failure_reason"] = event.failure_reason[:1024]
    values.update(ledger.values)
    common = dict(provider_event_id=event.event_id, payload=payload, needs_attention=event.needs_attention,
                  message="; ".join(filter(None, [event.message, *ledger.notes])) or None)
    event_type = event.event_type or "provider_callback"
    if current.status == PaymentStatus.PAID and event.announce_if_paid:
        # A subscription's renewal, failed renewal or end: news for the caller, no status change.
        return StatusChange(None, event_type, values=values, announce=True, callback_type=event.announce_if_paid, **common)
    refund_callback = ledger.callback_type(current)
    if event.status is None and refund_callback is not None:
        return StatusChange(None, event_type, values=values, announce=True, callback_type=refund_callback, **common)
    return StatusChange(event.status, event_type, values=values, **common)
