"""The VNPay provider: VND payments through VNPay's payment URL.

Create builds and signs the payment URL (no call to VNPay). The outcome arrives as the
IPN at GET /webhooks/vnpay (api/http/vnpay_routes.py); reconcile, cancel and expiry ask
querydr; refunds use the refund command. VNPay has no way to cancel a payment URL: it
stops working at its vnp_ExpireDate, the payment's pending timeout. So cancel and expiry
end the payment here once querydr says it was not paid, and a payment a customer still
completes on an open URL after a cancel arrives by IPN and is recorded on the canceled
payment with attention_required (refund it).
"""

from __future__ import annotations

import hashlib
from datetime import timedelta

from ...clock import utcnow
from ...domain.enums import PaymentMethod, PaymentStatus, PaymentType, ProviderType
from ...domain.errors import CallbackRejectedError, ErrorKind, ProviderError, ValidationError
from ...domain.payment import CreatePaymentCommand, Payment
from ...domain.refund import Refund, RefundStatus
from ..base import CancelOutcome, Checkout, ProviderEvent, RefundSnapshot, Verification
from .api import Answer, VnpayApi
from .codes import REFUND_TRANSACTION_TYPES, SUSPECTED_FRAUD, TRANSACTION_STATUSES, describe, queried_outcome
from .ipn import ReturnVisit, ipn_event, parse_query, read_return
from .payment_url import CURRENCY, MAX_VNP_AMOUNT, check_options, payment_url, txn_ref, vnp_amount
from .settings import VnpayCredentials
from .signing import HASH_FIELD

# A create finished this late (reconcile taking over a crashed one) would hand out a URL
# the customer has no time to use: at least this much of its life, or half of it, must be left.
MIN_URL_LIFETIME = timedelta(minutes=5)
RETURN_PATH = "/vnpay/return"


class VnpayProvider:
    type = ProviderType.VNPAY

    def __init__(self, credentials: VnpayCredentials, *, public_base_url: str, pending_timeout_seconds: float,
                 timeout_seconds: float):
        self._credentials = credentials
        self._api = VnpayApi(credentials, timeout_seconds=timeout_seconds)
        self._return_url = public_base_url.rstrip("/") + RETURN_PATH
        self._url_lifetime = timedelta(seconds=pending_timeout_seconds)

    async def close(self) -> None:
        await self._api.close()

    def validate(self, command: CreatePaymentCommand) -> None:
        if command.currency != CURRENCY:
            raise ValidationError("currency must be VND with the vnpay provider")
        if vnp_amount(command.amount_cents) > MAX_VNP_AMOUNT:
            raise ValidationError(f"amount_cents must be <= {MAX_VNP_AMOUNT // 100} (whole dong) with the vnpay provider")
        if command.payment_method != PaymentMethod.HOSTED_CARD:
            raise ValidationError("payment_method must be hosted_card with the vnpay provider (VNPay's payment page)")
        if command.payment_type == PaymentType.RECURRING:
            raise ValidationError("recurring payments are not supported by the vnpay provider")
        check_options(command.metadata)

    async def create_checkout(self, payment: Payment, idempotency_key: str) -> Checkout:
        expires_at = payment.created_at + self._url_lifetime
        left = expires_at - utcnow()
        if left < min(MIN_URL_LIFETIME, self._url_lifetime / 2):
            raise ProviderError(
                f"too late to hand out a VNPay payment URL for this payment: it expires in {max(left.total_seconds(), 0):.0f} "
                "seconds (the pending timeout after its creation); create a new payment",
                retryable=False, kind=ErrorKind.FAILED_PRECONDITION,
            )
        url = payment_url(payment, self._credentials, return_url=self._return_url, expires_at=expires_at)
        return Checkout(provider_payment_id=txn_ref(payment), checkout_url=url)

    async def fetch_status(self, payment: Payment) -> PaymentStatus | None:
        return self._outcome(payment, await self._api.query(payment))

    async def verify(self, payment: Payment) -> Verification:
        reported = await self.fetch_status(payment)  # querydr
        return Verification(reported, reported.name.lower() if reported is not None else "no outcome yet")

    async def cancel(self, payment: Payment, idempotency_key: str) -> CancelOutcome:
        outcome = self._outcome(payment, await self._api.query(payment))
        if outcome == PaymentStatus.PAID:
            return CancelOutcome.ALREADY_PAID
        if outcome == PaymentStatus.PROCESSING:
            raise ProviderError(
                f"VNPay holds this payment as {TRANSACTION_STATUSES[SUSPECTED_FRAUD]}: the money was taken; confirm "
                "or reject it in VNPay's merchant admin, and the payment follows (IPN or reconcile)",
                retryable=False, kind=ErrorKind.FAILED_PRECONDITION,
            )
        return CancelOutcome.CANCELED

    async def refund(self, payment: Payment, refund: Refund, idempotency_key: str) -> RefundSnapshot:
        paid = await self._api.query(payment)
        if self._outcome(payment, paid) != PaymentStatus.PAID:
            raise ProviderError(
                f"VNPay holds no paid transaction for this payment (transaction status "
                f"{describe(TRANSACTION_STATUSES, paid['vnp_TransactionStatus'] or 'none')})",
                retryable=False, kind=ErrorKind.FAILED_PRECONDITION,
            )
        request_id = hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]  # vnp_RequestId: at most 32
        await self._api.refund(payment, request_id=request_id, amount_cents=refund.amount_cents,
                               transaction_no=paid["vnp_TransactionNo"],
                               order_info=" ".join(filter(None, [f"Refund {refund.id} of payment {payment.id}",
                                                                 (refund.reason or "").replace("_", " ")])))
        # VNPay accepted it and returns the money through the bank; it sends no later
        # notice of a refund, so accepted is as final as the service learns.
        return RefundSnapshot(request_id, refund.amount_cents, RefundStatus.SUCCEEDED, refund_id=refund.id)

    def parse_callback(self, payload: bytes, signature: str) -> ProviderEvent:
        """payload: the IPN's raw query string; signature: its vnp_SecureHash (also inside
        the payload, where it is checked)."""
        params = parse_query(payload)
        if signature and signature.lower() != params.get(HASH_FIELD, "").lower():
            raise CallbackRejectedError("the signature given is not the query's vnp_SecureHash")
        return ipn_event(params, self._credentials)

    def read_return(self, raw_query: bytes) -> ReturnVisit:
        """What the customer's return from VNPay's page says (for the page shown; it changes nothing)."""
        try:
            params = parse_query(raw_query)
        except CallbackRejectedError as exc:
            return ReturnVisit(False, False, "", exc.reason)
        return read_return(params, self._credentials)

    def _outcome(self, payment: Payment, answer: Answer) -> PaymentStatus | None:
        """What a querydr answer says of the payment; None when VNPay knows no transaction."""
        if answer.response_code == "91":
            return None
        refunded = answer["vnp_TransactionType"] in REFUND_TRANSACTION_TYPES  # its amount may be the refund's
        if not refunded and answer.amount_cents != payment.amount_cents:
            raise ProviderError(
                f"VNPay reports an amount of {answer['vnp_Amount']} (dong x 100) for this payment of "
                f"{payment.amount_cents} dong", retryable=False, kind=ErrorKind.FAILED_PRECONDITION,
            )
        return queried_outcome(answer["vnp_TransactionStatus"], answer["vnp_TransactionType"])
