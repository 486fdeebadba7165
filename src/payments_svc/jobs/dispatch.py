"""`payments-svc callbacks dispatch`: delivers the status callback outbox.

A batch claims due rows with a lease (one short transaction), POSTs them outside any
transaction with bounded concurrency, then records each outcome only if the lease is
still its own. A dispatcher that dies mid-batch loses nothing: its rows are due again
when the lease ends, with the same delivery id (the webhook-id receivers dedupe on).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
import time
import uuid
from datetime import timedelta

import aiohttp
import structlog
from aiohttp.abc import AbstractResolver, ResolveResult

from .. import metrics
from ..api.payment_fields import payment_fields
from ..callback_policy import CallbackDestinations, retry_after_seconds, retry_delay
from ..clock import rfc3339, utcnow
from ..config import Settings
from ..db.engine import Database
from ..domain.enums import DeliveryStatus
from ..domain.payment import Payment
from ..repository.deliveries import CallbackDelivery, DeliveryRepository, Outcome
from ..repository.events import EventRepository
from ..repository.payments import PaymentRepository
from ..repository.signing_secrets import current_signing_secrets
from ..service.callbacks import refresh_outbox_metrics
from ..webhooks_signing import signature_header
from .runner import BatchResult, ItemResult, claim_transaction, lease_seconds, run_items, settle

log = structlog.get_logger("payments.jobs.dispatch")

USER_AGENT = "payments-svc-webhooks/1"


class DestinationRefused(Exception):
    """The callback host resolved to an address the destination policy refuses. Not an
    OSError, so that aiohttp lets it through as it is rather than as a connection error."""


class PolicyResolver(AbstractResolver):
    """Resolves callback hosts and checks every address against the destination policy
    before aiohttp may connect to any: a name that points at (or is re-pointed to) an
    internal address is refused on each new connection, not just when the URL was
    accepted. IP literals never reach a resolver; `url_problem` has checked them."""

    def __init__(self, destinations: CallbackDestinations):
        self._destinations = destinations
        self._resolver = aiohttp.DefaultResolver()

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        addresses = await self._resolver.resolve(host, port, family)
        for address in addresses:
            ip = ipaddress.ip_address(address["host"].partition("%")[0])
            problem = self._destinations.address_problem(host, ip)
            if problem is not None:
                raise DestinationRefused(problem)
        return addresses

    async def close(self) -> None:
        await self._resolver.close()


class CallbackDispatcher:
    name = "callbacks_dispatch"

    def __init__(self, db: Database, settings: Settings):
        self.db = db
        self.settings = settings
        self.batch_size = settings.job_batch_size
        self.destinations = settings.callback_destinations
        self._http: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.settings.callback_http_timeout_seconds),
                connector=aiohttp.TCPConnector(limit=self.settings.job_concurrency,
                                               resolver=PolicyResolver(self.destinations)),
                cookie_jar=aiohttp.DummyCookieJar(),  # one receiver's cookies must not reach another
                headers={"User-Agent": USER_AGENT},
            )
        return self._http

    async def run_batch(self, stop: asyncio.Event) -> BatchResult:
        s = self.settings
        if s.metrics_port:
            await refresh_outbox_metrics(self.db)  # the backlog gauges, for this worker's /metrics
        lease = lease_seconds(s.callback_http_timeout_seconds, self.batch_size, s.job_concurrency)
        owner = uuid.uuid4().hex
        now, claimed_at = utcnow(), time.monotonic()
        async with claim_transaction(self.db) as conn:
            deliveries = await DeliveryRepository(conn).claim_due(
                now=now, limit=self.batch_size, owner=owner, lease_until=now + timedelta(seconds=lease)
            )
        if not deliveries:
            return BatchResult()
        async with self.db.read() as conn:
            payments = {d.payment_id: await PaymentRepository(conn).get(d.payment_id) for d in deliveries}
        secrets = await current_signing_secrets(
            self.db, (d.caller_service for d in deliveries), configured=s.callback_signing_secrets, now=now
        )
        for service, current in secrets.items():
            if current[0].created_now:
                log.info("signing_secret_created", caller_service=service,
                         hint=f"payments-svc keys signing-secret --service {service} shows it")

        async def handle(delivery: CallbackDelivery) -> ItemResult:
            payment = payments[delivery.payment_id]
            outcome = await self._attempt(delivery, payment, [k.secret for k in secrets[delivery.caller_service]])
            await self._record(delivery, payment, owner, outcome)
            return ItemResult.DONE if outcome.status == DeliveryStatus.SUCCESS else ItemResult.FAILED

        async def release(unstarted: list[CallbackDelivery]) -> None:
            async with self.db.transaction() as conn:
                await DeliveryRepository(conn).release([d.id for d in unstarted], owner)

        outcomes = await run_items(
            deliveries, handle, concurrency=s.job_concurrency, stop=stop,
            start_before=claimed_at + lease - s.callback_http_timeout_seconds,
        )
        return await settle(outcomes, release)

    async def _attempt(self, delivery: CallbackDelivery, payment: Payment, secrets: list[str]) -> Outcome:
        s = self.settings
        url = payment.status_callback_url
        problem = self.destinations.url_problem(url)
        if problem is not None:
            return self._refused(problem)
        body = json.dumps(
            {"type": delivery.event_type, "payment": payment_fields(payment)}, ensure_ascii=False, separators=(",", ":")
        ).encode()
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "X-Request-ID": payment.request_id,
            "webhook-id": delivery.delivery_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature_header(secrets, delivery.delivery_id, timestamp, body),
        }
        started = time.monotonic()
        status_code, retry_after, error = None, None, None
        try:
            # Redirects are not followed: the policy checked the host that may receive
            # the payload, and a 3xx could point anywhere.
            async with self._session().post(url, data=body, headers=headers, allow_redirects=False) as response:
                status_code = response.status
                retry_after = response.headers.get("Retry-After")
        except DestinationRefused as exc:
            return self._refused(str(exc))
        except TimeoutError:
            error = f"callback request timed out after {s.callback_http_timeout_seconds:g}s"
        except (aiohttp.ClientError, OSError) as exc:
            error = f"callback request failed: {type(exc).__name__}: {exc}"
        latency_ms = round((time.monotonic() - started) * 1000)
        if status_code is not None and 200 <= status_code < 300:
            return Outcome(DeliveryStatus.SUCCESS, utcnow(), status_code, latency_ms, None, None)
        if status_code == 410:
            error = "callback endpoint returned status=410 (Gone): not retried"
            return Outcome(DeliveryStatus.FAILED, utcnow(), status_code, latency_ms, error, None)
        if status_code is not None:
            error = f"callback endpoint returned status={status_code}"
            if 300 <= status_code < 400:
                error += " (redirects are not followed)"
        return self._failed_attempt(delivery, status_code, latency_ms, error, retry_after)

    @staticmethod
    def _refused(problem: str) -> Outcome:
        """The destination policy refuses the URL: failed for good, nothing sent."""
        return Outcome(DeliveryStatus.FAILED, utcnow(), None, 0, f"{problem}; not retried", None)

    def _failed_attempt(
        self, delivery: CallbackDelivery, status_code: int | None, latency_ms: int, error: str, retry_after: str | None
    ) -> Outcome:
        """A retryable failure: due again after the backoff (or later, if the receiver
        asked with Retry-After), unless that was the last attempt."""
        s = self.settings
        now = utcnow()
        attempt = delivery.attempts + 1
        if attempt >= s.callback_max_attempts:
            return Outcome(DeliveryStatus.FAILED, now, status_code, latency_ms, f"{error}; gave up after {attempt} attempts", None)
        delay = retry_delay(attempt, base=s.callback_retry_interval_seconds, cap=s.callback_retry_max_interval_seconds)
        asked = retry_after_seconds(retry_after, now)
        if asked is not None:
            delay = max(delay, min(asked, s.callback_retry_max_interval_seconds))
        return Outcome(DeliveryStatus.PENDING, now, status_code, latency_ms, error, now + timedelta(seconds=delay))

    async def _record(self, delivery: CallbackDelivery, payment: Payment, owner: str, outcome: Outcome) -> None:
        """The outcome, the attempt log row and the payment's timeline event, together."""
        attempt = delivery.attempts + 1
        if outcome.status == DeliveryStatus.SUCCESS:
            event_type, detail = "callback_dispatched", f"status={outcome.status_code}"
        else:
            event_type = "callback_dispatch_failed"
            detail = outcome.error or ""
            if outcome.next_attempt_at is not None:
                detail += f"; next attempt at {rfc3339(outcome.next_attempt_at)}"
        message = f"{delivery.delivery_id} attempt {attempt}: {detail} ({outcome.latency_ms} ms)"
        async with self.db.transaction() as conn:
            recorded = await DeliveryRepository(conn).record(delivery, owner, outcome)
            if recorded:
                await EventRepository(conn).add(
                    payment_id=payment.id, event_type=event_type, old_status=payment.status,
                    new_status=payment.status, now=outcome.attempted_at, message=message,
                )
        if recorded:
            metrics.DELIVERY_ATTEMPTS.labels(
                "success" if outcome.status == DeliveryStatus.SUCCESS
                else "retry" if outcome.status == DeliveryStatus.PENDING else "failed"
            ).inc()
        if not recorded:
            log.warning("callback_lease_lost", delivery_id=delivery.delivery_id, attempt=attempt,
                        outcome=outcome.status.name, message="another dispatcher took over this delivery")
        elif outcome.status == DeliveryStatus.SUCCESS:
            log.info("callback_delivered", delivery_id=delivery.delivery_id, payment_id=payment.id, attempt=attempt,
                     status_code=outcome.status_code, latency_ms=outcome.latency_ms)
        else:
            log.warning("callback_attempt_failed", delivery_id=delivery.delivery_id, payment_id=payment.id,
                        attempt=attempt, status_code=outcome.status_code, error=outcome.error,
                        next_attempt_at=rfc3339(outcome.next_attempt_at) if outcome.next_attempt_at else None)
