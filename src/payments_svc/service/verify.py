"""VerifyPayment: asks the payment's provider for the truth now (Stripe: the Checkout
Session, its invoice or payment intent; VNPay: querydr; Stellar: the account feed paged
from the cursor; sandbox: its state) and applies it through the transition table, as
reconcile would. At most once per PAYMENTS_VERIFY_MIN_INTERVAL_SECONDS per payment,
across every process, so that it cannot be used to hammer a provider."""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from datetime import timedelta

import structlog

from ..auth.caller import Caller
from ..clock import utcnow
from ..domain.enums import PaymentStatus
from ..domain.errors import ErrorKind, PaymentsError, ProviderError, ServiceUnavailableError
from ..domain.payment import Payment
from ..jobs.changes import change_to
from ..providers.base import Verification
from ..providers.stellar.sync import FeedRefused, HorizonUnavailable, sync_stellar_payments
from ..repository.payments import PaymentRepository
from ..repository.verify_claims import VerifyClaimRepository
from . import audit
from .payments import PaymentService

log = structlog.get_logger("payments.verify")


@dataclass(frozen=True, slots=True)
class VerifyResult:
    payment: Payment
    provider_status: str
    changed: bool
    old_status: PaymentStatus


class VerifyService:
    def __init__(self, service: PaymentService):
        self.service = service

    async def verify(self, caller: Caller, payment_id: int) -> VerifyResult:
        payment = await self.service.get_payment(caller, payment_id)
        if payment.provider_payment_id is None:
            raise PaymentsError("the payment has no provider object yet (its create has not finished): "
                                "retry the create with the same request_id, or wait for reconcile",
                                ErrorKind.FAILED_PRECONDITION)
        await self._claim(payment.id)
        verification = await self._ask(payment)
        if verification.status is not None and verification.status != payment.status:
            updated = await self.service.change_status(
                payment.id, change_to(verification.status, "payment_verified",
                                      f"verify: provider reports {verification.status.name}"))
        else:
            async with self.service.db.read() as conn:
                updated = await PaymentRepository(conn).get(payment.id) or payment
        changed = updated.status != payment.status
        await audit.record(self.service.db, caller, audit.PAYMENT_VERIFIED, "payment", payment.id,
                           f"provider reports {verification.provider_status}; "
                           f"{payment.status.name} -> {updated.status.name}" if changed else
                           f"provider reports {verification.provider_status}; unchanged ({updated.status.name})")
        log.info("payment_verified", payment_id=payment.id, provider=payment.provider.code,
                 reported=verification.provider_status, old_status=payment.status.name, new_status=updated.status.name)
        return VerifyResult(updated, verification.provider_status, changed, payment.status)

    async def _claim(self, payment_id: int) -> None:
        interval = self.service.settings.verify_min_interval_seconds
        now = utcnow()
        async with self.service.db.transaction() as conn:
            if await VerifyClaimRepository(conn).insert(payment_id, now):
                return
        async with self.service.db.transaction() as conn:
            claims = VerifyClaimRepository(conn)
            if await claims.take(payment_id, now, now - timedelta(seconds=interval)):
                return
            last = await claims.last(payment_id)
        wait = max(1, math.ceil(interval - (now - last).total_seconds())) if last is not None else 1
        raise PaymentsError(f"this payment was verified less than {interval:g} s ago; retry in {wait} s",
                            ErrorKind.RESOURCE_EXHAUSTED, retry_after_seconds=wait)

    async def _ask(self, payment: Payment) -> Verification:
        settings = self.service.settings
        provider = await self.service.providers.for_payment(payment)  # the account it was created with
        try:
            async with asyncio.timeout(settings.provider_timeout_seconds):
                verification = await provider.verify(payment)
        except TimeoutError:
            raise ServiceUnavailableError("payment provider timed out; retry the verification") from None
        except ProviderError as exc:
            if exc.retryable:
                raise ServiceUnavailableError(f"{exc.message}; retry the verification") from None
            raise
        if not verification.read_feed:
            return verification
        try:
            applied = await sync_stellar_payments(self.service.db, settings)
        except HorizonUnavailable as exc:
            raise ServiceUnavailableError(f"Horizon unavailable ({exc}); retry the verification",
                                          retry_after_seconds=math.ceil(exc.retry_after) if exc.retry_after else None) from None
        except FeedRefused as exc:
            raise PaymentsError(f"the Stellar feed is refused: {exc}", ErrorKind.FAILED_PRECONDITION) from None
        return Verification(None, f"{verification.provider_status}: {applied} new record(s) applied")
