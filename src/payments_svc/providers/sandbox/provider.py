"""A provider for development and tests. Its checkout page (served by the HTTP
shim) has Pay and Decline buttons that send a signed webhook through the same
path as a real provider's, so everything after the provider is exercised."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import uuid

from ...domain.enums import PaymentStatus, ProviderType
from ...domain.errors import CallbackRejectedError
from ...domain.payment import CreatePaymentCommand, Payment
from ...domain.refund import Refund, RefundStatus
from ...domain.validation import check_iso_currency
from ..base import CancelOutcome, Checkout, ProviderEvent, RefundSnapshot, Verification

SIGNATURE_TOLERANCE_SECONDS = 300
OUTCOMES = {"pay": ("payment.succeeded", PaymentStatus.PAID), "decline": ("payment.failed", PaymentStatus.FAILED)}


def sign(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """Stripe's scheme: t=<unix>,v1=<hex HMAC-SHA256 of "t.payload">."""
    ts = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{ts}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={ts},v1={mac}"


def verify(payload: bytes, header: str, secret: str, tolerance: int = SIGNATURE_TOLERANCE_SECONDS) -> None:
    timestamp, candidates = None, []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            timestamp = value
        elif key == "v1":
            candidates.append(value)
    if timestamp is None or not timestamp.isdigit() or not candidates:
        raise CallbackRejectedError("malformed signature header")
    if abs(time.time() - int(timestamp)) > tolerance:
        raise CallbackRejectedError("signature timestamp outside the tolerance")
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256).hexdigest()
    if not any(hmac.compare_digest(expected, c) for c in candidates):
        raise CallbackRejectedError("invalid signature")


class SandboxProvider:
    type = ProviderType.SANDBOX

    def __init__(self, *, public_base_url: str, webhook_secret: str, delay_ms: int = 0):
        self._base = public_base_url.rstrip("/")
        self._secret = webhook_secret
        self._delay = delay_ms / 1000

    def validate(self, command: CreatePaymentCommand) -> None:
        check_iso_currency(command)

    async def create_checkout(self, payment: Payment, idempotency_key: str) -> Checkout:
        if self._delay:
            await asyncio.sleep(self._delay)  # stands in for a slow provider (benchmarks)
        # Derived from the idempotency key, as a real provider's replay would return the same object.
        object_id = "sbx_" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:24]
        return Checkout(
            provider_payment_id=object_id,
            checkout_url=f"{self._base}/sandbox/checkout/{payment.provider_callback_hash}",
        )

    async def cancel(self, payment: Payment, idempotency_key: str) -> CancelOutcome:
        return CancelOutcome.CANCELED  # nothing at the sandbox can be paid once we stop showing the page

    async def fetch_status(self, payment: Payment) -> PaymentStatus | None:
        return None  # the sandbox keeps no state: its outcomes exist only as the webhooks its page sends

    async def verify(self, payment: Payment) -> Verification:
        # Its only state is the payment's own: what its page's webhooks made it.
        return Verification(payment.status, payment.status.name.lower())

    async def refund(self, payment: Payment, refund: Refund, idempotency_key: str) -> RefundSnapshot:
        # No money moves here: the refund succeeds at once, under an id a retry gets again.
        refund_id = "sbx_re_" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:24]
        return RefundSnapshot(refund_id, refund.amount_cents, RefundStatus.SUCCEEDED, refund_id=refund.id)

    def build_event(self, payment: Payment, action: str) -> tuple[bytes, str]:
        """The webhook the sandbox sends when the customer presses a button: (body, signature)."""
        event_type, _ = OUTCOMES[action]
        body = json.dumps(
            {
                "id": "evt_sbx_" + uuid.uuid4().hex,
                "type": event_type,
                "created": int(time.time()),
                "data": {"object": {"id": payment.provider_payment_id, "amount": payment.amount_cents}},
            }
        ).encode()
        return body, sign(body, self._secret)

    def parse_callback(self, payload: bytes, signature: str) -> ProviderEvent:
        verify(payload, signature, self._secret)
        try:
            event = json.loads(payload)
            event_id, event_type = event["id"], event["type"]
            object_id = event["data"]["object"]["id"]
        except (ValueError, KeyError, TypeError):
            raise CallbackRejectedError("payload is not a sandbox event") from None
        status = {t: s for t, s in OUTCOMES.values()}.get(event_type)
        return ProviderEvent(
            event_id=str(event_id),
            event_type=str(event_type),
            status=status,
            provider_payment_id=str(object_id) if object_id else None,
            failure_reason="declined at the sandbox checkout" if status == PaymentStatus.FAILED else None,
        )
