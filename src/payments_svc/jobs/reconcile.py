"""`payments-svc reconcile`: asks the provider about open payments (CREATED,
PENDING, PROCESSING) that have not changed for PAYMENTS_RECONCILE_STALE_AFTER_MINUTES.

Each payment is checked on its own backoff (PAYMENTS_RECONCILE_BACKOFF, default 5m,
1h, 1d, then daily, like Kill Bill's janitor), so payments that never change or
always fail cannot starve the rest. A CREATED payment is one whose create crashed
between its two phases: it is finished with the same provider idempotency key, or
failed if the provider rejects it. Statuses change only through the service's
transition path, which also queues the status callback.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import structlog

from ..clock import utcnow
from ..domain.enums import PaymentStatus
from ..domain.errors import ProviderError, ServiceUnavailableError
from ..domain.payment import Payment
from ..repository.payment_jobs import ClaimedPayment, PaymentJobRepository
from ..service.payments import PaymentService
from ..stellar.sync import HorizonUnavailable, sync_stellar_payments
from .changes import change_to
from .runner import BatchResult, ItemResult, claim_transaction, lease_seconds, run_items, settle

log = structlog.get_logger("payments.jobs.reconcile")


class Reconciler:
    name = "reconcile"

    def __init__(self, service: PaymentService):
        self.service = service
        self.db = service.db
        self.settings = service.settings
        self.batch_size = self.settings.job_batch_size
        # A CREATED payment may take a provider create and then a cancel (if it was
        # canceled meanwhile), each bounded by the provider timeout.
        self.item_seconds = 2 * self.settings.provider_timeout_seconds

    async def close(self) -> None:
        pass

    async def run_batch(self, stop: asyncio.Event) -> BatchResult:
        s = self.settings
        stellar_synced = await self._sync_stellar()
        lease = lease_seconds(self.item_seconds, self.batch_size, s.job_concurrency)
        now, claimed_at = utcnow(), time.monotonic()
        async with claim_transaction(self.db) as conn:
            claims = await PaymentJobRepository(conn).claim_for_reconcile(
                now=now, stale_before=now - timedelta(seconds=s.reconcile_stale_after_seconds),
                limit=self.batch_size, lease_until=now + timedelta(seconds=lease),
            )

        async def handle(claim: ClaimedPayment) -> ItemResult:
            try:
                return await self._reconcile(claim.payment)
            finally:
                async with self.db.transaction() as conn:
                    await PaymentJobRepository(conn).schedule_next_reconcile(claim, s.reconcile_backoff_seconds, utcnow())

        outcomes = await run_items(claims, handle, concurrency=s.job_concurrency, stop=stop,
                                   start_before=claimed_at + lease - self.item_seconds)
        result = await settle(outcomes, self._release)
        if not stellar_synced:
            result.failed += 1
        return result

    async def _release(self, unstarted: list[ClaimedPayment]) -> None:
        async with self.db.transaction() as conn:
            await PaymentJobRepository(conn).release(unstarted)

    async def _sync_stellar(self) -> bool:
        """Stellar payments are settled from the receiving account's feed, all at once:
        page it from the stored cursor. False (a failure of the run) when Horizon is away."""
        try:
            applied = await sync_stellar_payments(self.db, self.settings)
        except HorizonUnavailable as exc:
            log.warning("reconcile_stellar_failed", error=str(exc))
            return False
        if applied:
            log.info("reconcile_stellar_synced", records=applied)
        return True

    async def _reconcile(self, payment: Payment) -> ItemResult:
        if payment.status == PaymentStatus.CREATED:
            return await self._finish_create(payment)
        if payment.provider_payment_id is None:
            return ItemResult.DONE  # no provider object to ask about
        provider = self.service.providers.get(payment.provider)
        try:
            async with asyncio.timeout(self.settings.provider_timeout_seconds):
                reported = await provider.fetch_status(payment)
        except TimeoutError:
            log.warning("reconcile_failed", payment_id=payment.id, error="payment provider timed out")
            return ItemResult.FAILED
        except ProviderError as exc:
            log.warning("reconcile_failed", payment_id=payment.id, error=exc.message, retryable=exc.retryable)
            return ItemResult.FAILED
        if reported is None or reported == payment.status:
            return ItemResult.DONE
        updated = await self.service.change_status(
            payment.id, change_to(reported, "payment_reconciled", f"provider reports {reported.name}")
        )
        log.info("payment_reconciled", payment_id=payment.id, old_status=payment.status.name,
                 reported=reported.name, new_status=updated.status.name)
        return ItemResult.DONE

    async def _finish_create(self, payment: Payment) -> ItemResult:
        claimed = await self.service.claim_unfinished_create(payment)
        if claimed is None:
            return ItemResult.DEFERRED  # its creator, or a retry of the request, is still at it
        try:
            finished = await self.service.call_provider_create(claimed, self.service.providers.get(payment.provider))
        except ServiceUnavailableError as exc:  # retryable; the create lease was handed back
            log.warning("reconcile_create_failed", payment_id=payment.id, error=exc.message)
            return ItemResult.FAILED
        except ProviderError as exc:  # rejected for good: the service marked the payment FAILED
            log.info("reconcile_create_rejected", payment_id=payment.id, error=exc.message)
            return ItemResult.DONE
        log.info("reconcile_create_completed", payment_id=payment.id, status=finished.status.name)
        return ItemResult.DONE
