"""Stripe, through the official SDK's async client at the SDK's pinned API version.

hosted_card is a Checkout Session; payment_link is a Payment Link limited to one
completed session, on a Product and Price reused across payments of the same thing.
Every object carries our payment reference in its metadata (the session, its payment
intent or subscription, our refunds), so every later event finds its payment. Every
POST carries an Idempotency-Key derived from (caller_service, request_id, step), so a
retry after a crash or timeout never creates a second object.

Errors: 4xx become INVALID_ARGUMENT (a parameter of ours was wrong) or
FAILED_PRECONDITION (the object's state forbids it), with Stripe's message; 5xx, 429,
timeouts and connection failures are retryable (UNAVAILABLE), leaving the payment for
the caller's retry or reconcile. The secret key never appears in a message.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Awaitable
from datetime import UTC
from typing import Any, TypeVar

import stripe
import structlog

from ...domain.enums import PaymentMethod, PaymentStatus, PaymentType, ProviderType
from ...domain.errors import CallbackRejectedError, ErrorKind, ProviderError, ValidationError
from ...domain.payment import CreatePaymentCommand, Payment
from ...domain.refund import Refund
from ...domain.validation import METADATA_MAX_KEYS, check_iso_currency
from ..base import CancelOutcome, Checkout, ProviderEvent, RefundSnapshot, Verification
from .amounts import amount_problem, to_stripe
from .events import (
    META_CALLBACK_HASH,
    META_PAYMENT_ID,
    META_REFUND_ID,
    META_REQUEST_ID,
    PAID_SESSION,
    object_id,
    parse_event,
    refund_snapshot,
    session_status,
)
from .settings import StripeSettings

log = structlog.get_logger("payments.stripe")

T = TypeVar("T")

# Stripe accepts a session's expires_at 30 min to 24 h after its creation. Ours is
# created_at + the pending timeout (so a retried create sends the same value and
# replays), kept 5 minutes inside Stripe's bounds for clock skew and retries.
STRIPE_MIN_SESSION_SECONDS = 30 * 60
SESSION_MIN_SECONDS = STRIPE_MIN_SESSION_SECONDS + 5 * 60
SESSION_MAX_SECONDS = 24 * 3600 - 5 * 60
RESERVED_METADATA_KEYS = (META_PAYMENT_ID, META_REQUEST_ID, META_CALLBACK_HASH)
INACTIVE_LINK_MESSAGE = "This payment link is no longer active."
# A payment intent of a completed-but-unpaid session: what its status says of the payment.
INTENT_STATUSES = {
    "succeeded": PaymentStatus.PAID,
    "requires_payment_method": PaymentStatus.FAILED,  # the delayed payment failed
    "canceled": PaymentStatus.FAILED,
}


class StripeProvider:
    type = ProviderType.STRIPE

    def __init__(self, settings: StripeSettings, *, public_base_url: str, pending_timeout_seconds: float):
        self._settings = settings
        self._http = stripe.AIOHTTPClient(timeout=settings.http_timeout_seconds)
        self._client = stripe.StripeClient(
            settings.secret_key,
            base_addresses={"api": settings.api_base},
            http_client=self._http,
            max_network_retries=settings.max_network_retries,
        )
        self._return_url = public_base_url.rstrip("/") + "/stripe/return"
        self._session_seconds = min(max(pending_timeout_seconds, SESSION_MIN_SECONDS), SESSION_MAX_SECONDS)

    async def close(self) -> None:
        await self._http.close_async()

    def validate(self, command: CreatePaymentCommand) -> None:
        check_iso_currency(command)
        problem = amount_problem(command.amount_cents, command.currency)
        if problem:
            raise ValidationError(problem)
        keys = set(command.metadata) | set(RESERVED_METADATA_KEYS)
        if len(keys) > METADATA_MAX_KEYS:
            raise ValidationError(
                f"metadata must have at most {METADATA_MAX_KEYS - len(RESERVED_METADATA_KEYS)} keys with Stripe "
                f"(it keeps {', '.join(RESERVED_METADATA_KEYS)} for the payment's reference)",
                field="metadata",
            )

    # ---- create ---------------------------------------------------------------

    async def create_checkout(self, payment: Payment, idempotency_key: str) -> Checkout:
        if payment.payment_method == PaymentMethod.PAYMENT_LINK:
            return await self._create_link(payment, idempotency_key)
        if payment.payment_method == PaymentMethod.HOSTED_CARD:
            return await self._create_session(payment, idempotency_key)
        raise ProviderError("unsupported payment method for stripe", retryable=False)

    async def _create_session(self, payment: Payment, key: str) -> Checkout:
        reference = _reference(payment)
        recurring = payment.payment_type == PaymentType.RECURRING
        price_data: dict[str, Any] = {
            "currency": payment.currency.lower(),
            "unit_amount": to_stripe(payment.amount_cents, payment.currency),
            "product_data": {"name": _product_name(payment)},
        }
        if recurring:
            price_data["recurring"] = _recurring(payment)
        params: dict[str, Any] = {
            "mode": "subscription" if recurring else "payment",
            "line_items": [{"price_data": price_data, "quantity": 1}],
            "success_url": payment.success_url or f"{self._return_url}?state=success",
            "cancel_url": payment.cancel_url or f"{self._return_url}?state=cancel",
            "client_reference_id": str(payment.id),
            "metadata": {**payment.metadata, **reference},
            "expires_at": self._expires_at(payment),
            # Copied onto the payment intent or subscription, and so onto their charges,
            # invoices and events: how those events find the payment.
            ("subscription_data" if recurring else "payment_intent_data"): {"metadata": reference},
        }
        session = await self._call(self._client.v1.checkout.sessions.create_async(
            params=params, options={"idempotency_key": key}))
        return Checkout(provider_payment_id=session.id, checkout_url=session.url)

    def _expires_at(self, payment: Payment) -> int:
        expires_at = int(payment.created_at.replace(tzinfo=UTC).timestamp() + self._session_seconds)
        if expires_at < time.time() + STRIPE_MIN_SESSION_SECONDS + 60:
            # Only a create retried long after the payment was made gets here; its
            # pending timeout is about to end it anyway.
            raise ProviderError(
                "too late to open a Stripe Checkout Session for this payment: it would be open for less than "
                "Stripe's minimum of 30 minutes; create a new payment", retryable=False, kind=ErrorKind.FAILED_PRECONDITION,
            )
        return expires_at

    async def _create_link(self, payment: Payment, key: str) -> Checkout:
        reference = _reference(payment)
        recurring = payment.payment_type == PaymentType.RECURRING
        product = await self._product(payment, f"{key}-product")
        price = await self._price(payment, product, f"{key}-price")
        params: dict[str, Any] = {
            "line_items": [{"price": price, "quantity": 1}],
            "after_completion": {"type": "redirect", "redirect": {"url": payment.success_url or f"{self._return_url}?state=success"}},
            # One payment per link: Stripe deactivates it after one completed session.
            "restrictions": {"completed_sessions": {"limit": 1}},
            "inactive_message": INACTIVE_LINK_MESSAGE,
            "metadata": {**payment.metadata, **reference},
            ("subscription_data" if recurring else "payment_intent_data"): {"metadata": reference},
        }
        link = await self._call(self._client.v1.payment_links.create_async(
            params=params, options={"idempotency_key": f"{key}-link"}))
        return Checkout(provider_payment_id=link.id, checkout_url=link.url)

    async def _product(self, payment: Payment, key: str) -> str:
        """One Product per thing sold (caller, resource type and id), with an id we
        derive, so every payment for the same thing shares it."""
        identity = f"{payment.caller_service}\x00{payment.resource_type}\x00{payment.resource_id}"
        product_id = "psvc_" + hashlib.sha256(identity.encode()).hexdigest()[:24]
        if await self._call_unless(self._client.v1.products.retrieve_async(product_id), "resource_missing") is not None:
            return product_id
        params = {
            "id": product_id,
            "name": _product_name(payment),
            "metadata": {"caller_service": payment.caller_service, "resource_type": payment.resource_type,
                         "resource_id": payment.resource_id},
        }
        # resource_already_exists: another payment created it just now.
        await self._call_unless(self._client.v1.products.create_async(params=params, options={"idempotency_key": key}),
                                "resource_already_exists")
        return product_id

    async def _price(self, payment: Payment, product: str, key: str) -> str:
        """Prices never change, so one per (product, currency, amount, interval) is
        shared, found by a lookup key we derive."""
        recurring = payment.payment_type == PaymentType.RECURRING
        shape = f"{payment.recurring_interval}:{payment.recurring_interval_count}" if recurring else "once"
        lookup_key = f"psvc:{product}:{payment.currency.lower()}:{payment.amount_cents}:{shape}"
        found = await self._call(self._client.v1.prices.list_async(
            params={"lookup_keys": [lookup_key], "active": True, "limit": 1}))
        if found.data:
            return found.data[0].id
        params: dict[str, Any] = {
            "product": product,
            "currency": payment.currency.lower(),
            "unit_amount": to_stripe(payment.amount_cents, payment.currency),
            "lookup_key": lookup_key,
            # Two payments creating it at once: the later takes the key, both prices work.
            "transfer_lookup_key": True,
        }
        if recurring:
            params["recurring"] = _recurring(payment)
        price = await self._call(self._client.v1.prices.create_async(params=params, options={"idempotency_key": key}))
        return price.id

    # ---- cancel, expire, release ------------------------------------------------

    async def cancel(self, payment: Payment, idempotency_key: str) -> CancelOutcome:
        if payment.payment_method == PaymentMethod.PAYMENT_LINK:
            return await self._cancel_link(payment, idempotency_key)
        session = await self._session(payment.provider_payment_id)
        if session["status"] == "open":
            if await self._expire_session(session["id"], idempotency_key):
                return CancelOutcome.CANCELED
            session = await self._session(session["id"])  # it completed while we asked
        if session["status"] == "expired":
            return CancelOutcome.CANCELED
        return await self._stop_completed(session, payment)

    async def _cancel_link(self, payment: Payment, key: str) -> CancelOutcome:
        # Deactivate first: a session completed before that shows in the list below,
        # and none can start after it.
        await self._deactivate_link(payment.provider_payment_id, key)
        for session in await self._link_sessions(payment.provider_payment_id, "open"):
            await self._expire_session(session["id"], key)
        completed = await self._link_sessions(payment.provider_payment_id, "complete")
        if not completed:
            return CancelOutcome.CANCELED
        return await self._stop_completed(completed[0], payment)

    async def _stop_completed(self, session: dict[str, Any], payment: Payment) -> CancelOutcome:
        outcome = await self._completed_outcome(session)
        if outcome == PaymentStatus.PAID:
            return CancelOutcome.ALREADY_PAID
        if outcome == PaymentStatus.FAILED:
            return CancelOutcome.CANCELED  # its payment failed: nothing is left to pay
        subscription = object_id(session.get("subscription"))
        if subscription is None:
            raise ProviderError(
                "the customer completed checkout with a delayed payment method that Stripe is still processing; "
                "the payment cannot be canceled until Stripe reports the outcome",
                retryable=False, kind=ErrorKind.FAILED_PRECONDITION,
            )
        # A subscription whose first payment is in flight: ending it stops all billing.
        # Money that still arrives is recorded on the canceled payment for an operator.
        await self._cancel_subscription(subscription, payment)
        return CancelOutcome.CANCELED

    async def release(self, payment: Payment, idempotency_key: str) -> None:
        if payment.payment_method == PaymentMethod.PAYMENT_LINK and payment.provider_payment_id:
            await self._deactivate_link(payment.provider_payment_id, idempotency_key)

    async def _deactivate_link(self, link_id: str, key: str) -> None:
        await self._call(self._client.v1.payment_links.update_async(
            link_id, params={"active": False}, options={"idempotency_key": f"{key}-deactivate"}))

    async def _expire_session(self, session_id: str, key: str) -> bool:
        """False when the session was no longer open (completed or expired meanwhile)."""
        try:
            await self._call(self._client.v1.checkout.sessions.expire_async(
                session_id, options={"idempotency_key": f"{key}-expire-{session_id}"}))
        except ProviderError as exc:
            if exc.retryable:
                raise
            return False
        return True

    async def _cancel_subscription(self, subscription_id: str, payment: Payment) -> None:
        # DELETE takes no idempotency key; a repeat is refused as "already canceled".
        params = {"cancellation_details": {"comment": f"payment {payment.id} canceled through payments-svc"}}
        try:
            await self._call(self._client.v1.subscriptions.cancel_async(subscription_id, params=params))
        except ProviderError as exc:
            if exc.retryable:
                raise
            current = await self._call(self._client.v1.subscriptions.retrieve_async(subscription_id))
            if current.status not in ("canceled", "incomplete_expired"):
                raise

    # ---- the current truth (reconcile) -----------------------------------------

    async def fetch_status(self, payment: Payment) -> PaymentStatus | None:
        if payment.payment_method == PaymentMethod.PAYMENT_LINK:
            completed = await self._link_sessions(payment.provider_payment_id, "complete")
            return await self._completed_outcome(completed[0]) if completed else None
        session = await self._session(payment.provider_payment_id)
        reported = session_status(session)
        if reported == PaymentStatus.PENDING:
            return None  # still open: nothing new
        return reported if reported is not None else await self._completed_outcome(session)

    async def verify(self, payment: Payment) -> Verification:
        reported = await self.fetch_status(payment)  # the Checkout Session, or its invoice / payment intent
        return Verification(reported, reported.name.lower() if reported is not None else "open")

    async def _completed_outcome(self, session: dict[str, Any]) -> PaymentStatus:
        """PAID, FAILED or PROCESSING for a completed session: a delayed payment's
        outcome is on its payment intent (one-time) or first invoice (subscription)."""
        if session.get("payment_status") in PAID_SESSION:
            return PaymentStatus.PAID
        intent_id = object_id(session.get("payment_intent"))
        invoice_id = object_id(session.get("invoice"))
        if invoice_id is not None:
            invoice = _plain(await self._call(self._client.v1.invoices.retrieve_async(
                invoice_id, params={"expand": ["payments"]})))
            if invoice.get("status") == "paid":
                return PaymentStatus.PAID
            intent_id = _invoice_intent(invoice)
        if intent_id is None:
            return PaymentStatus.PROCESSING
        intent = await self._call(self._client.v1.payment_intents.retrieve_async(intent_id))
        return INTENT_STATUSES.get(intent.status, PaymentStatus.PROCESSING)

    async def _session(self, session_id: str | None) -> dict[str, Any]:
        if not session_id:
            raise ProviderError("the payment has no Stripe Checkout Session", retryable=False, kind=ErrorKind.FAILED_PRECONDITION)
        return _plain(await self._call(self._client.v1.checkout.sessions.retrieve_async(session_id)))

    async def _link_sessions(self, link_id: str | None, status: str) -> list[dict[str, Any]]:
        if not link_id:
            raise ProviderError("the payment has no Stripe Payment Link", retryable=False, kind=ErrorKind.FAILED_PRECONDITION)
        page = await self._call(self._client.v1.checkout.sessions.list_async(
            params={"payment_link": link_id, "status": status, "limit": 100}))
        return [_plain(s) async for s in page.auto_paging_iter()]

    # ---- refunds ------------------------------------------------------------------

    async def refund(self, payment: Payment, refund: Refund, idempotency_key: str) -> RefundSnapshot:
        problem = amount_problem(refund.amount_cents, payment.currency)
        if problem:
            raise ProviderError(problem, retryable=False, kind=ErrorKind.INVALID_ARGUMENT)
        params: dict[str, Any] = {
            "payment_intent": await self._paid_intent(payment),
            "amount": to_stripe(refund.amount_cents, payment.currency),
            "metadata": {META_PAYMENT_ID: str(payment.id), META_CALLBACK_HASH: payment.provider_callback_hash,
                         META_REFUND_ID: str(refund.id)},
        }
        if refund.reason:
            params["reason"] = refund.reason
        created = await self._call(self._client.v1.refunds.create_async(params=params, options={"idempotency_key": idempotency_key}))
        return refund_snapshot(_plain(created))

    async def fetch_refunds(self, object_id: str) -> list[RefundSnapshot]:
        page = await self._call(self._client.v1.refunds.list_async(params={"charge": object_id, "limit": 100}))
        return [refund_snapshot(_plain(r)) async for r in page.auto_paging_iter()]

    async def _paid_intent(self, payment: Payment) -> str:
        if payment.payment_method == PaymentMethod.PAYMENT_LINK:
            sessions = await self._link_sessions(payment.provider_payment_id, "complete")
        else:
            sessions = [await self._session(payment.provider_payment_id)]
        intent = next((object_id(s.get("payment_intent")) for s in sessions if s.get("payment_status") == "paid"), None)
        if intent is None:
            raise ProviderError("Stripe holds no paid payment for this payment", retryable=False, kind=ErrorKind.FAILED_PRECONDITION)
        return intent

    # ---- webhooks -----------------------------------------------------------------

    def parse_callback(self, payload: bytes, signature: str) -> ProviderEvent:
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            raise CallbackRejectedError("payload is not UTF-8") from None
        secret = next((s for s in self._settings.webhook_secrets if _signed_with(text, signature, s)), None)
        if secret is None:
            raise CallbackRejectedError(
                f"invalid stripe signature: no v1 signature matches {self._settings.webhook_secret_name}")
        try:
            stripe.WebhookSignature.verify_header(text, signature, secret, self._settings.signature_tolerance_seconds)
        except stripe.SignatureVerificationError:
            raise CallbackRejectedError(
                f"stripe signature timestamp is more than {self._settings.signature_tolerance_seconds} seconds old"
            ) from None
        try:
            event = json.loads(text)
        except ValueError:
            raise CallbackRejectedError("payload is not valid JSON") from None
        return parse_event(event)

    # ---- calls ----------------------------------------------------------------------

    async def _call(self, call: Awaitable[T]) -> T:
        try:
            return await call
        except stripe.StripeError as exc:
            raise _provider_error(exc, self._settings.secret_key_name) from None

    async def _call_unless(self, call: Awaitable[T], code: str) -> T | None:
        """None instead of Stripe's refusal with this error code."""
        try:
            return await call
        except stripe.InvalidRequestError as exc:
            if exc.code == code:
                return None
            raise _provider_error(exc, self._settings.secret_key_name) from None
        except stripe.StripeError as exc:
            raise _provider_error(exc, self._settings.secret_key_name) from None


def _signed_with(payload: str, header: str, secret: str) -> bool:
    try:
        return stripe.WebhookSignature.verify_header(payload, header, secret, tolerance=None)
    except stripe.SignatureVerificationError:
        return False


def _provider_error(exc: stripe.StripeError, secret_key_name: str) -> ProviderError:
    status = exc.http_status
    request = f" (Stripe request {exc.request_id})" if exc.request_id else ""
    if isinstance(exc, (stripe.AuthenticationError, stripe.PermissionError)):
        # Our credentials, not the caller's request: retryable once an operator fixes
        # them. Stripe's message would quote part of the key.
        log.error("stripe_credentials_rejected", http_status=status, request_id=exc.request_id)
        return ProviderError(f"Stripe rejected {secret_key_name}{request}", retryable=True)
    # 409: a request with the same idempotency key still in flight at Stripe.
    if isinstance(exc, (stripe.APIConnectionError, stripe.RateLimitError, stripe.APIError)) or not status or status >= 500 or status == 409:
        log.warning("stripe_unavailable", http_status=status, request_id=exc.request_id, error=exc.user_message)
        return ProviderError(f"Stripe is unavailable: {exc.user_message or type(exc).__name__}{request}", retryable=True)
    # A parameter Stripe names was wrong (our request as the caller shaped it), or the
    # object's state forbids the call.
    kind = ErrorKind.INVALID_ARGUMENT if status == 400 and getattr(exc, "param", None) else ErrorKind.FAILED_PRECONDITION
    return ProviderError(f"stripe: {exc.user_message}{request}", retryable=False, kind=kind)


def _plain(obj: Any) -> dict[str, Any]:
    return obj.to_dict()


def _reference(payment: Payment) -> dict[str, str]:
    return {META_PAYMENT_ID: str(payment.id), META_REQUEST_ID: payment.request_id,
            META_CALLBACK_HASH: payment.provider_callback_hash}


def _product_name(payment: Payment) -> str:
    return f"{payment.resource_type}-{payment.resource_id}"  # as the reference named it


def _recurring(payment: Payment) -> dict[str, Any]:
    return {"interval": payment.recurring_interval, "interval_count": payment.recurring_interval_count}


def _invoice_intent(invoice: dict[str, Any]) -> str | None:
    """The payment intent paying an invoice: a field until API 2025-03-31, then its payments list."""
    legacy = object_id(invoice.get("payment_intent"))
    if legacy is not None:
        return legacy
    for entry in (invoice.get("payments") or {}).get("data") or ():
        intent = object_id((entry.get("payment") or {}).get("payment_intent"))
        if intent is not None:
            return intent
    return None
