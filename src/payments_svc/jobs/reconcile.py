"""`payments-svc reconcile`: finishes creates that crashed between their two phases,
asks the provider about open payments that have not changed for
PAYMENTS_RECONCILE_STALE_AFTER_MINUTES, and pages the Stellar feed.

Each provider's payments are a lane of their own (lanes.py), and the Stellar feed is
read alongside them: one provider's failure never holds up another's payments. In a
lane, crashed creates come first and all of them are finished in the run: a CREATED
payment is due the moment its create lease ends (its creator crashed or gave up), and
is finished with the same provider idempotency key, or failed if the provider rejects
it. Then one batch of stale payments, each checked on its own backoff
(PAYMENTS_RECONCILE_BACKOFF, default 5m, 1h, 1d, then daily, like Kill Bill's janitor),
so payments that never change or always fail cannot starve the rest. Statuses change
only through the service's transition path, which also queues the status callback.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

import structlog

from ..clock import utcnow
from ..domain.enums import PaymentStatus, ProviderType
from ..domain.errors import ProviderError, ServiceUnavailableError
from ..domain.payment import Payment
from ..providers.stellar.sync import FeedRefused, HorizonUnavailable, sync_stellar_payments
from ..repository.payment_jobs import ClaimedPayment, PaymentJobRepository
from ..resilience.breaker import CircuitOpenError
from ..service.payments import PaymentService
from .changes import change_to
from .lanes import add, by_provider
from .runner import BatchResult, ItemResult, claim_transaction, lease_seconds, run_items, settle

log = structlog.get_logger("payments.jobs.reconcile")

Claim = Callable[[PaymentJobRepository, datetime, datetime], Awaitable[list[ClaimedPayment]]]


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
        # One lane claims at a time: on MySQL a claim's scan briefly locks other providers'
        # rows too, which a concurrent claim would skip (SKIP LOCKED) and leave for a later run.
        self._claiming = asyncio.Lock()

    async def close(self) -> None:
        pass

    async def run_batch(self, stop: asyncio.Event) -> BatchResult:
        stellar_synced, result = await asyncio.gather(
            self._sync_stellar(), by_provider(self.name, lambda provider: self._reconcile_provider(provider, stop))
        )
        if not stellar_synced:
            result.failed += 1
        return result

    async def _reconcile_provider(self, provider: ProviderType, stop: asyncio.Event) -> BatchResult:
        result = await self._finish_unfinished_creates(provider, stop)
        if stop.is_set():
            return result
        s = self.settings
        claims, start_before = await self._claim(lambda repo, now, lease_until: repo.claim_for_reconcile(
            provider=provider, now=now, stale_before=now - timedelta(seconds=s.reconcile_stale_after_seconds),
            limit=self.batch_size, lease_until=lease_until,
        ))
        return add(result, await self._run(claims, start_before, stop))

    async def _finish_unfinished_creates(self, provider: ProviderType, stop: asyncio.Event) -> BatchResult:
        """Every due CREATED payment of the provider, a batch at a time until none is left.
        Each is tried once per run: one that fails is due again on its backoff."""
        result, tried = BatchResult(), set()
        while not stop.is_set():
            claims, start_before = await self._claim(lambda repo, now, lease_until: repo.claim_unfinished_creates(
                provider=provider, now=now, limit=self.batch_size, lease_until=lease_until,
            ))
            again = [c for c in claims if c.payment.id in tried]  # due again already: a backoff shorter than the run
            if again:
                await self._release(again)
            fresh = [c for c in claims if c.payment.id not in tried]
            if not fresh:
                break
            tried.update(c.payment.id for c in fresh)
            add(result, await self._run(fresh, start_before, stop))
        return result

    async def _claim(self, claim: Claim) -> tuple[list[ClaimedPayment], float]:
        """The claims, and the time.monotonic() after which none may start (its lease could end first)."""
        lease = lease_seconds(self.item_seconds, self.batch_size, self.settings.job_concurrency)
        async with self._claiming, claim_transaction(self.db) as conn:
            now, claimed_at = utcnow(), time.monotonic()
            claims = await claim(PaymentJobRepository(conn), now, now + timedelta(seconds=lease))
        return claims, claimed_at + lease - self.item_seconds

    async def _run(self, claims: list[ClaimedPayment], start_before: float, stop: asyncio.Event) -> BatchResult:
        async def handle(claim: ClaimedPayment) -> ItemResult:
            try:
                return await self._reconcile(claim.payment)
            finally:
                async with self.db.transaction() as conn:
                    await PaymentJobRepository(conn).schedule_next_reconcile(
                        claim, self.settings.reconcile_backoff_seconds, utcnow())

        outcomes = await run_items(claims, handle, concurrency=self.settings.job_concurrency, stop=stop,
                                   start_before=start_before)
        return await settle(outcomes, self._release)

    async def _release(self, unstarted: list[ClaimedPayment]) -> None:
        async with self.db.transaction() as conn:
            await PaymentJobRepository(conn).release(unstarted)

    async def _sync_stellar(self) -> bool:
        """Stellar payments are settled from the receiving account's feed, all at once:
        page it from the stored cursor. False (a failure of the run) when it cannot be read;
        the other providers' payments are reconciled all the same."""
        try:
            applied = await sync_stellar_payments(self.db, self.settings)
        except FeedRefused as exc:
            log.error("reconcile_stellar_refused", error=str(exc))
            return False
        except HorizonUnavailable as exc:
            log.warning("reconcile_stellar_failed", error=str(exc))
            return False
        except Exception as exc:  # e.g. the database: the lanes report it too
            log.error("reconcile_stellar_failed", error=f"{type(exc).__name__}: {exc}", exc_info=True)
            return False
        if applied:
            log.info("reconcile_stellar_synced", records=applied)
        return True

    async def _reconcile(self, payment: Payment) -> ItemResult:
        if payment.status == PaymentStatus.CREATED:
            return await self._finish_create(payment)
        if payment.provider_payment_id is None:
            return ItemResult.DONE  # no provider object to ask about
        try:
            provider = await self.service.providers.for_payment(payment)
            async with asyncio.timeout(self.settings.provider_timeout_seconds):
                reported = await provider.fetch_status(payment)
        except TimeoutError:
            log.warning("reconcile_failed", payment_id=payment.id, provider=payment.provider.code,
                        error="payment provider timed out")
            return ItemResult.FAILED
        except CircuitOpenError as exc:  # nothing was sent: left for a later run, the provider is not hammered
            log.info("reconcile_deferred", payment_id=payment.id, provider=payment.provider.code, reason=exc.message)
            return ItemResult.DEFERRED
        except ProviderError as exc:
            log.warning("reconcile_failed", payment_id=payment.id, provider=payment.provider.code, error=exc.message,
                        retryable=exc.retryable)
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
            finished = await self.service.call_provider_create(claimed, await self.service.providers.for_payment(payment))
        except ServiceUnavailableError as exc:  # retryable; the create lease was handed back
            log.warning("reconcile_create_failed", payment_id=payment.id, provider=payment.provider.code,
                        error=exc.message)
            return ItemResult.FAILED
        except ProviderError as exc:  # rejected for good: the service marked the payment FAILED
            log.info("reconcile_create_rejected", payment_id=payment.id, error=exc.message)
            return ItemResult.DONE
        log.info("reconcile_create_completed", payment_id=payment.id, status=finished.status.name)
        return ItemResult.DONE
