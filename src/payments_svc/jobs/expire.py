"""`payments-svc expire pending`: ends payments still open (CREATED, PENDING,
PROCESSING) PAYMENTS_PENDING_TIMEOUT_MINUTES after they were created.

The provider's object is expired first, so that nothing can be paid after we say
EXPIRED; if the provider answers that it was paid, the payment becomes PAID instead.
Stellar payments cannot be stopped on the network: when some are due, the receiving
account's feed is read up to now first, so that one paid in time is credited, not
expired; while the feed cannot be read, Stellar payments are not expired. Either way the change goes through
the transition table, which queues the callback. Each provider's payments are a lane of
their own (lanes.py): one provider's failure never holds up another's payments.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import structlog

from ..clock import utcnow
from ..domain.enums import PaymentStatus, ProviderType
from ..domain.errors import ErrorKind, ProviderError
from ..domain.payment import Payment
from ..providers.base import CancelOutcome, provider_idempotency_key
from ..providers.stellar.sync import FeedRefused, HorizonUnavailable, sync_stellar_payments
from ..repository.payment_jobs import ClaimedPayment, PaymentJobRepository
from ..resilience.breaker import CircuitOpenError
from ..service.payments import PaymentService
from .changes import change_to
from .lanes import by_provider
from .runner import BatchResult, ItemResult, claim_transaction, lease_seconds, run_items, settle

log = structlog.get_logger("payments.jobs.expire")


class PendingExpirer:
    name = "expire_pending"

    def __init__(self, service: PaymentService):
        self.service = service
        self.db = service.db
        self.settings = service.settings
        self.batch_size = self.settings.job_batch_size
        self.item_seconds = self.settings.provider_timeout_seconds + 5  # the provider call, then the status change
        # One lane claims at a time: on MySQL a claim's scan briefly locks other providers'
        # rows too, which a concurrent claim would skip (SKIP LOCKED) and leave for a later run.
        self._claiming = asyncio.Lock()

    async def close(self) -> None:
        pass

    async def run_batch(self, stop: asyncio.Event) -> BatchResult:
        return await by_provider(self.name, lambda provider: self._expire_provider(provider, stop))

    async def _expire_provider(self, provider: ProviderType, stop: asyncio.Event) -> BatchResult:
        s = self.settings
        lease = lease_seconds(self.item_seconds, self.batch_size, s.job_concurrency)
        async with self._claiming, claim_transaction(self.db) as conn:
            now, claimed_at = utcnow(), time.monotonic()
            claims = await PaymentJobRepository(conn).claim_for_expiry(
                provider=provider, now=now, created_before=now - timedelta(seconds=s.pending_timeout_seconds),
                limit=self.batch_size, lease_until=now + timedelta(seconds=lease),
            )
        # A payment that could not be expired keeps its lease: it is tried again once
        # the lease ends (shorter than the run interval with the defaults).
        if provider == ProviderType.STELLAR and claims and not await self._stellar_feed_read():
            return BatchResult(claimed=len(claims), failed=len(claims))
        outcomes = await run_items(claims, lambda claim: self._expire(claim.payment), concurrency=s.job_concurrency,
                                   stop=stop, start_before=claimed_at + lease - self.item_seconds)
        return await settle(outcomes, self._release)

    async def _stellar_feed_read(self) -> bool:
        """Pages the Stellar feed up to now; False (Stellar payments wait, the run fails)
        when it cannot be read."""
        try:
            await sync_stellar_payments(self.db, self.settings)
        except FeedRefused as exc:
            log.error("expire_stellar_refused", error=str(exc))
            return False
        except HorizonUnavailable as exc:
            log.warning("expire_stellar_failed", error=str(exc))
            return False
        return True

    async def _release(self, unstarted: list[ClaimedPayment]) -> None:
        async with self.db.transaction() as conn:
            await PaymentJobRepository(conn).release(unstarted)

    async def _expire(self, payment: Payment) -> ItemResult:
        timeout_message = f"still {payment.status.name} {self.settings.pending_timeout_seconds / 60:g} minutes after creation"
        if payment.status == PaymentStatus.CREATED:
            if await self.service.claim_unfinished_create(payment) is None:
                return ItemResult.DEFERRED  # a create is still running; it finishes or fails first
            # A create answers with the checkout only after storing the provider's object,
            # so no one was handed a way to pay a CREATED payment: nothing to stop at the provider.
            await self.service.change_status(payment.id, change_to(
                PaymentStatus.EXPIRED, "payment_expired", f"{timeout_message}; the create never finished",
                values={"create_lease_until": None},
            ))
            log.info("payment_expired", payment_id=payment.id, old_status=payment.status.name)
            return ItemResult.DONE

        if payment.provider_payment_id is not None:
            key = provider_idempotency_key(payment.caller_service, payment.request_id, "expire")
            try:
                provider = await self.service.providers.for_payment(payment)
                async with asyncio.timeout(self.settings.provider_timeout_seconds):
                    outcome = await provider.cancel(payment, key)
            except TimeoutError:
                log.warning("expire_failed", payment_id=payment.id, provider=payment.provider.code,
                            error="payment provider timed out")
                return ItemResult.FAILED
            except CircuitOpenError as exc:  # nothing was sent: left for a later run, the provider is not hammered
                log.info("expire_deferred", payment_id=payment.id, provider=payment.provider.code, reason=exc.message)
                return ItemResult.DEFERRED
            except ProviderError as exc:
                if exc.kind == ErrorKind.FAILED_PRECONDITION:
                    # Not stoppable yet (e.g. a delayed payment method still settling): its
                    # outcome will come as a webhook or through reconcile; asked again later.
                    log.info("expire_deferred", payment_id=payment.id, reason=exc.message)
                    return ItemResult.DEFERRED
                log.warning("expire_failed", payment_id=payment.id, provider=payment.provider.code, error=exc.message,
                            retryable=exc.retryable)
                return ItemResult.FAILED
            if outcome == CancelOutcome.ALREADY_PAID:
                updated = await self.service.change_status(payment.id, change_to(
                    PaymentStatus.PAID, "provider_reported_paid", "provider reported the payment paid when asked to expire it"
                ))
                log.info("payment_paid_at_expiry", payment_id=payment.id, status=updated.status.name)
                return ItemResult.DONE

        updated = await self.service.change_status(
            payment.id, change_to(PaymentStatus.EXPIRED, "payment_expired", timeout_message)
        )
        log.info("payment_expired", payment_id=payment.id, old_status=payment.status.name, status=updated.status.name)
        return ItemResult.DONE
