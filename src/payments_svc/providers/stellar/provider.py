"""Stellar: the buyer sends a payment with the payment's memo to our receiving
account; `payments-svc stellar watch` (and reconcile) read the account's payments
from Horizon and credit them (see this package). Nothing is created on the
network: create only hands out instructions, and cancel has nothing to stop."""

from __future__ import annotations

from ...domain.enums import PaymentStatus, PaymentType, ProviderType
from ...domain.errors import CallbackRejectedError, ProviderError, ValidationError
from ...domain.payment import CreatePaymentCommand, Payment
from ..base import CancelOutcome, Checkout, ProviderEvent, Verification
from .instructions import StellarInstructions, cents_to_amount, payment_memo
from .settings import StellarSettings


class StellarProvider:
    type = ProviderType.STELLAR

    def __init__(self, settings: StellarSettings):
        self._settings = settings

    def validate(self, command: CreatePaymentCommand) -> None:
        if self._settings.asset(command.currency) is None:
            codes = ", ".join(a.code for a in self._settings.assets)
            raise ValidationError(f"currency must be a Stellar asset accepted here: {codes}", field="currency")
        if command.payment_type == PaymentType.RECURRING:
            raise ValidationError("recurring payments are not supported by the stellar provider", field="payment_type")

    async def create_checkout(self, payment: Payment, idempotency_key: str) -> Checkout:
        asset = self._settings.asset(payment.currency)
        if asset is None:  # STELLAR_ASSETS changed between the reservation and this call
            raise ProviderError(f"currency {payment.currency} is no longer accepted for Stellar payments", retryable=False)
        # Derived from the payment alone, so a retried create hands out the same memo.
        instructions = StellarInstructions(
            destination=self._settings.receiving_account,
            asset=asset,
            amount=cents_to_amount(payment.amount_cents),
            memo=payment_memo(payment.id, payment.provider_callback_hash),
        )
        return Checkout(
            provider_payment_id=instructions.memo,
            checkout_url=instructions.sep7_uri(self._settings.network_passphrase),
        )

    async def cancel(self, payment: Payment, idempotency_key: str) -> CancelOutcome:
        # Nothing on the network to stop; a payment arriving later is recorded for a refund.
        return CancelOutcome.CANCELED

    async def fetch_status(self, payment: Payment) -> PaymentStatus | None:
        return None  # payments are credited from the account's feed, which reconcile pages as a whole

    async def verify(self, payment: Payment) -> Verification:
        # The memo's payments are in the account's feed: the service pages it from the cursor.
        return Verification(None, "read from the account feed", read_feed=True)

    def parse_callback(self, payload: bytes, signature: str) -> ProviderEvent:
        raise CallbackRejectedError("stellar payments are read from the ledger, not sent as webhooks")
