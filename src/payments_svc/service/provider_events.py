"""Inbound provider webhooks, through two entrances: the reference's per-payment URL
(`/webhooks/providers/{provider}/{hash}`, the hash names the payment) and a provider's
account-level endpoint (`/webhooks/stripe`, `/webhooks/vnpay`), where the event names its
payment by the reference it carries in metadata or by the provider's ids of its objects.

Either way the webhook is verified (and its amount, where the provider reports one, is
the payment's), every delivery is recorded with its outcome, and
each event id is applied once: its dedup row, the status change (through the
transition table, so late or reordered events never regress), the refund ledger and
the callback to the caller commit together or not at all. The most common event, a
change of status with nothing else to merge or record, is written with other status
changes in one transaction (group commit); any other, under the payment's row lock.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

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
from ..repository import callbacks as callback_rows
from ..repository.callbacks import CallbackLogRepository, DuplicateProviderEvent
from ..repository.payments import PaymentRepository
from ..repository.provider_objects import ProviderObjectRepository
from .part import ServicePart
from .refunds import LedgerChange, merge_refunds
from .status_changes import ConcurrentUpdate, StatusChange, apply_status_change

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
            owners = await ProviderObjectRepository(conn).owners(provider.type, event.object_ids)
        if payment is None:
            await self._record(record, CallbackStatus.REJECTED, event, error="payment not found for callback hash")
            raise NotFoundError()
        if (event.callback_hash and event.callback_hash != payment.provider_callback_hash) or {
                owner for _, owner in owners} - {payment.id}:
            # Forwarded to the wrong payment's URL: applying it here would be wrong.
            await self._record(record, CallbackStatus.REJECTED, event, payment_id=payment.id,
                               error="the event is about another payment than the callback hash's")
            raise CallbackRejectedError("the event is about another payment")
        return await self._apply(provider, payment, event, record, {object_id for object_id, _ in owners})

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
            payment, known_objects = await self._route(provider, event)
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
        return await self._apply(provider, payment, event, record, known_objects)

    async def _parse(self, provider: Provider, payload: bytes, signature: str, record: dict) -> ProviderEvent:
        try:
            if not signature.isascii():  # every scheme's signatures are ASCII (and hmac compares no other text)
                raise CallbackRejectedError("signature is not ASCII")
            return provider.parse_callback(payload, signature)
        except CallbackRejectedError as exc:
            await self._record(record, CallbackStatus.REJECTED, None, error=f"provider callback validation failed: {exc.reason}")
            raise

    async def _route(self, provider: Provider, event: ProviderEvent) -> tuple[Payment | None, set[str]]:
        """The event's payment, and which of its objects are known to be that payment's."""
        async with self.db.read() as conn:
            payments = PaymentRepository(conn)
            if event.callback_hash:
                payment = await payments.find_by_callback_hash(provider.type, event.callback_hash)
                if payment is not None:
                    return payment, set()
            owners = await ProviderObjectRepository(conn).owners(provider.type, event.object_ids)
            payment_ids = {owner for _, owner in owners}
            if len(payment_ids) > 1:
                raise CallbackRejectedError(f"the event names objects of several payments: {sorted(payment_ids)}")
            known = {object_id for object_id, _ in owners}
            return (await payments.get(payment_ids.pop()) if payment_ids else None), known

    async def _apply(self, provider: Provider, payment: Payment, event: ProviderEvent, record: dict,
                     known_objects: set[str]) -> CallbackOutcome:
        """`known_objects`: the event's objects already recorded as this payment's."""
        if event.amount_cents is not None and event.amount_cents != payment.amount_cents:
            reason = f"the event reports an amount of {event.amount_cents}, the payment is of {payment.amount_cents}"
            await self._record(record, CallbackStatus.REJECTED, event, payment_id=payment.id, error=reason)
            raise CallbackAmountMismatchError(reason)
        snapshots = list(event.refunds)
        if event.refunds_of and isinstance(provider, RefundListingProvider):
            snapshots += await self._fetch_refunds(provider, payment, event, record)
        new_objects = [i for i in event.object_ids if i != payment.provider_payment_id and i not in known_objects]
        try:
            applied = None
            if not snapshots and not new_objects:
                applied = await self._apply_grouped(payment, event, record)
            if applied is None:
                applied = await self._apply_locked(provider, payment, event, snapshots, record)
        except DuplicateProviderEvent:
            await self._record(record, CallbackStatus.DUPLICATE, event, payment_id=payment.id, error="event already processed")
            return CallbackOutcome(CallbackStatus.DUPLICATE)
        before, after = applied
        log.info("provider_callback_applied", payment_id=payment.id, event_type=event.event_type,
                 old_status=before.status.name, new_status=after.status.name)
        if after.status.is_terminal and not before.status.is_terminal:
            await self._release(provider, after)
        return CallbackOutcome(CallbackStatus.PROCESSED, before.status)

    async def _apply_grouped(self, payment: Payment, event: ProviderEvent, record: dict) -> tuple[Payment, Payment] | None:
        """The most common event (a change of status the table allows, no refunds to merge,
        no provider object to record) as a status change written with others in one
        transaction (group commit), its dedup row with it. None when it is not such a
        change, or did not apply (the row changed since it was read): the locked path
        takes it. Raises DuplicateProviderEvent."""
        change = _event_change(event, payment, record["payload"], LedgerChange({}, []))

        def processed(now) -> list:
            return [(callback_rows.INSERT_AFTER_UPDATE, callback_rows.callback_row(
                **record, status=CallbackStatus.PROCESSED, now=now, payment_id=payment.id,
                provider_event_id=event.event_id, dedup_key=event.event_id))]

        updated = await self.service.write_grouped(payment, change, processed)
        return None if updated is None else (payment, updated)

    async def _apply_locked(self, provider: Provider, payment: Payment, event: ProviderEvent,
                            snapshots: list[RefundSnapshot], record: dict) -> tuple[Payment, Payment]:
        """Any event, under the payment's row lock: its dedup row, the refunds merged, the
        status change (or the event recorded) and its objects recorded. The payment before
        and after. Raises DuplicateProviderEvent."""
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
            except ConcurrentUpdate:
                continue
            return current, updated
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
