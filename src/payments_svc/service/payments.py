"""PaymentService: create (two-phase, idempotent), get, list, cancel, provider
callbacks and the event timeline. Every status change goes through
status_changes.apply_status_change inside one transaction."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog

from ..auth.caller import Caller
from ..clock import utcnow
from ..config import Settings
from ..db.engine import Database
from ..db.statements import Statement
from ..domain.enums import PaymentStatus, PaymentType
from ..domain.errors import (
    ErrorKind,
    IdempotencyInProgressError,
    IdempotencyKeyReusedError,
    InvalidTransitionError,
    NotFoundError,
    PermissionDeniedError,
    ProviderError,
    ServiceUnavailableError,
    ValidationError,
)
from ..domain.payment import CreatePaymentCommand, ListPaymentsQuery, Payment, PaymentEvent, ProviderCallback
from ..domain.refund import RefundCommand
from ..domain.transitions import can_transition
from ..domain.validation import (
    check_iso_currency,
    validate_cancel_reason,
    validate_create,
    validate_list,
    validate_payment_id,
)
from ..providers.base import CancelOutcome, Checkout, Provider, provider_idempotency_key
from ..providers.registry import ProviderRegistry
from ..repository.callbacks import DuplicateProviderEvent
from ..repository.events import EventRepository
from ..repository.payments import DuplicatePaymentKey, PaymentRepository
from ..resilience.failover import create_with_failover, first_available
from ..resilience.guard import ensure_available
from ..resilience.quotas import Quotas
from ..resilience.routing import Router, Rule
from . import audit
from .group_commit import GroupCommit
from .provider_events import CallbackOutcome, ProviderCallbacks
from .refunds import RefundResult, RefundService, validate_refund
from .status_changes import ConcurrentUpdate, StatusChange, apply_status_change, plan_transition, write_transitions

log = structlog.get_logger("payments.service")

MAX_CHANGE_ATTEMPTS = 5
MAX_EVENTS_PAGE = 500


@dataclass(frozen=True, slots=True)
class CreateResult:
    payment: Payment
    replayed: bool
    routing_rule: str = ""  # the routing rule that chose the payment's provider, if one did


class PaymentService:
    def __init__(self, db: Database, providers: ProviderRegistry, settings: Settings, quotas: Quotas | None = None):
        self.db = db
        self.providers = providers
        self.settings = settings
        self.quotas = quotas
        self.router = Router(settings.resilience.routing_rules)
        # Group commit (group_commit.py) of creates' reserves, and of status changes: creates'
        # finishes, cancels, expiries, reconcile's outcomes, with their events and callbacks.
        self.reserves = GroupCommit(db, "reserve", lambda conn, creates: PaymentRepository(conn).reserve(creates),
                                    max_group=settings.group_commit_max, alone_after=DuplicatePaymentKey)
        self.status_writes = GroupCommit(db, "status_change", write_transitions, max_group=settings.group_commit_max,
                                         alone_after=DuplicateProviderEvent)
        self.callbacks = ProviderCallbacks(self)
        self.refunds = RefundService(self)

    # ---- create -------------------------------------------------------------

    async def create_payment(self, caller: Caller, command: CreatePaymentCommand) -> CreateResult:
        cmd = command.normalized()
        rule = self.router.route(cmd)  # provider 0 and a routing rule matches: its providers, in order
        candidates = [self.providers.get(t) for t in rule.providers] if rule else []
        chosen = candidates[0] if rule else self.providers.find(cmd.provider)  # None: validation says why
        validate_create(cmd, max_amount_cents=self.settings.max_amount_cents,
                        provider_checks=chosen.validate if chosen else check_iso_currency)
        problem = self.settings.callback_destinations.url_problem(cmd.status_callback_url)
        if problem is not None:
            raise ValidationError(problem, field="status_callback_url")
        if not caller.may_act_for(cmd.caller_service):
            raise PermissionDeniedError(f"this api key may not act for caller_service {cmd.caller_service!r}", field="caller_service")
        provider = chosen if rule else self.providers.resolve(cmd.provider)
        fingerprint = cmd.fingerprint(provider.type)  # a rule's first choice: the same whatever failover does

        async with self.db.read() as conn:
            existing = await PaymentRepository(conn).find_by_key(cmd.caller_service, cmd.request_id)
        if existing is not None:
            return _routed(await self._resume(existing, fingerprint), rule)

        if self.quotas is not None:
            await self.quotas.check_open_payments(cmd.caller_service)
        later, routed = [], None
        if rule:  # each candidate with the caller's own account there, if it has one
            candidates = [await self.providers.for_caller(cmd.caller_service, c) for c in candidates]
            provider, later, skipped = await first_available(candidates)
            routed = f"routed to {provider.type.code} by rule {rule.name}" + (
                f" ({', '.join(skipped)} skipped: circuit open)" if skipped else "")
        else:
            provider = await self.providers.for_caller(cmd.caller_service, provider)
            await ensure_available(provider)
        # Phase 1: reserve the key. The unique index decides between concurrent duplicates.
        now = utcnow()
        values = self._new_payment(cmd, provider, fingerprint, now)
        try:
            payment = await self.reserves.submit((values, dict(
                event_type="payment_created", old_status=None, new_status=PaymentStatus.CREATED, now=now, message=routed,
            )))
        except DuplicatePaymentKey:
            async with self.db.read() as conn:
                existing = await PaymentRepository(conn).find_by_key(cmd.caller_service, cmd.request_id)
            if existing is None:  # the callback hash collided, not the key: practically impossible
                raise ServiceUnavailableError("could not reserve the payment; retry with the same request_id") from None
            return _routed(await self._resume(existing, fingerprint), rule)
        # Phase 2, outside any transaction.
        return _routed(CreateResult(await create_with_failover(self, payment, provider, later), replayed=False), rule)

    def _new_payment(self, cmd: CreatePaymentCommand, provider: Provider, fingerprint: str, now) -> dict:
        callback_hash = str(uuid.uuid4())
        recurring = cmd.payment_type == PaymentType.RECURRING
        return dict(
            request_id=cmd.request_id,
            caller_service=cmd.caller_service,
            request_fingerprint=fingerprint,
            resource_type=cmd.resource_type,
            resource_id=cmd.resource_id,
            customer_ref=cmd.customer_ref or None,
            amount_cents=cmd.amount_cents,
            currency=cmd.currency,
            status=PaymentStatus.CREATED,
            payment_method=cmd.payment_method,
            payment_type=cmd.payment_type,
            provider=provider.type,
            provider_account_id=provider.account_id,
            recurring_interval=cmd.recurring_interval if recurring else None,
            recurring_interval_count=cmd.recurring_interval_count if recurring else None,
            provider_payment_id=None,
            provider_subscription_id=None,
            checkout_url=None,
            provider_callback_hash=callback_hash,
            provider_callback_url=f"{self.settings.callback_base_url.rstrip('/')}/{provider.type.code}/{callback_hash}",
            status_callback_url=cmd.status_callback_url,
            success_url=cmd.success_url or None,
            cancel_url=cmd.cancel_url or None,
            refunded_cents=0,
            refundable_cents=cmd.amount_cents,
            received_cents=0,
            metadata=cmd.metadata,
            cancel_reason=None,
            failure_reason=None,
            create_error_code=None,
            attention_required=False,
            create_lease_until=now + timedelta(seconds=self.settings.create_lease_seconds),
            created_at=now,
            updated_at=now,
        )

    async def _resume(self, existing: Payment, fingerprint: str) -> CreateResult:
        """A request whose key is taken: replay, refuse, or finish a create that a
        crash or a provider outage left half done."""
        if existing.request_fingerprint != fingerprint:
            raise IdempotencyKeyReusedError()
        if existing.status != PaymentStatus.CREATED:
            if existing.create_error_code:
                raise ProviderError(existing.failure_reason or "payment provider rejected the payment",
                                    retryable=False, kind=ErrorKind(existing.create_error_code))
            return CreateResult(existing, replayed=True)
        payment = await self.claim_unfinished_create(existing)
        if payment is None:
            raise IdempotencyInProgressError()
        return CreateResult(await self.call_provider_create(payment, await self.providers.for_payment(payment)), replayed=True)

    async def claim_unfinished_create(self, payment: Payment) -> Payment | None:
        """Takes over a CREATED payment whose create lease ran out (its creator crashed
        or gave up); None while another request still holds it."""
        now = utcnow()
        if payment.create_lease_until is not None and payment.create_lease_until > now:
            return None
        lease_until = now + timedelta(seconds=self.settings.create_lease_seconds)
        async with self.db.transaction() as conn:
            claimed = await PaymentRepository(conn).claim_create_lease(payment.id, payment.create_lease_until, now, lease_until)
        if not claimed:
            return None
        return dataclasses.replace(payment, create_lease_until=lease_until, updated_at=now)

    async def call_provider_create(self, payment: Payment, provider: Provider) -> Payment:
        key = provider_idempotency_key(payment.caller_service, payment.request_id, "create")
        try:
            async with asyncio.timeout(self.settings.provider_timeout_seconds):
                checkout = await provider.create_checkout(payment, key)
        except TimeoutError:
            await self._release_create_lease(payment)
            raise ServiceUnavailableError("payment provider timed out; retry with the same request_id") from None
        except ProviderError as exc:
            if exc.retryable:
                await self._release_create_lease(payment)
                raise ServiceUnavailableError(f"{exc.message}; retry with the same request_id",
                                              retry_after_seconds=exc.retry_after_seconds) from exc  # failover reads it
            await self._fail_create(payment, exc)
            raise
        return await self._finish_create(payment, provider, checkout)

    async def _finish_create(self, payment: Payment, provider: Provider, checkout: Checkout) -> Payment:
        values = dict(
            provider_payment_id=checkout.provider_payment_id,
            provider_subscription_id=checkout.provider_subscription_id,
            checkout_url=checkout.checkout_url,
            create_lease_until=None,
        )
        change = StatusChange(checkout.initial_status, "checkout_created", values=values, announce=False)
        # The common case: the row is still the CREATED one we hold.
        written = await self.write_grouped(payment, change)
        if written is not None:
            return written

        def decide(current: Payment) -> StatusChange | None:
            if current.status != PaymentStatus.CREATED:
                return None  # ended while the provider was called (canceled): handled below
            return change

        current = await self.change_status(payment.id, decide)
        if current.status.is_terminal and current.provider_payment_id is None:
            # Canceled while we were creating: keep the provider ids, and stop the object at the provider.
            current = await self.change_status(
                payment.id, lambda p: StatusChange(p.status, "checkout_created_after_end", values=values)
            )
            await self._cancel_at_provider(current, provider)
        return current

    async def _fail_create(self, payment: Payment, exc: ProviderError) -> None:
        values = dict(failure_reason=exc.message[:1024], create_error_code=exc.kind.value, create_lease_until=None)
        await self.change_status(
            payment.id,
            lambda p: StatusChange(PaymentStatus.FAILED, "provider_rejected", values=values, message=exc.message, announce=False)
            if p.status == PaymentStatus.CREATED else None,
        )

    async def _release_create_lease(self, payment: Payment) -> None:
        """After a retryable provider failure: let the caller's retry (or reconcile) continue at once."""
        async with self.db.transaction() as conn:
            await PaymentRepository(conn).update_if_status(
                payment.id, PaymentStatus.CREATED, {"create_lease_until": utcnow()}
            )

    # ---- read ---------------------------------------------------------------

    async def get_payment(self, caller: Caller, payment_id: int) -> Payment:
        validate_payment_id(payment_id)
        async with self.db.read() as conn:
            payment = await PaymentRepository(conn).get(payment_id)
        return visible_to(caller, payment)

    async def list_payments(self, caller: Caller, query: ListPaymentsQuery) -> list[Payment]:
        query = validate_list(query)
        if query.caller_service:
            if not caller.may_act_for(query.caller_service):
                raise PermissionDeniedError(f"this api key may not read payments of caller_service {query.caller_service!r}",
                                            field="caller_service")
            visible = None
        else:
            visible = caller.visible_callers()
        async with self.db.read() as conn:
            return await PaymentRepository(conn).list(query, visible)

    async def list_payment_events(self, caller: Caller, payment_id: int, *, limit: int, after_event_id: int) -> list[PaymentEvent]:
        if limit == 0:
            limit = 100
        if not 1 <= limit <= MAX_EVENTS_PAGE:
            raise ValidationError("limit must be between 1 and 500", field="limit")
        if after_event_id < 0:
            raise ValidationError("after_event_id must be >= 0", field="after_event_id")
        await self.get_payment(caller, payment_id)
        async with self.db.read() as conn:
            return await EventRepository(conn).list(payment_id, limit=limit, after_id=after_event_id)

    async def get_checkout(self, provider_name: str, callback_hash: str) -> Payment:
        """For a provider's hosted page (the sandbox): the payment behind a callback hash."""
        provider = self.providers.by_name(provider_name)
        async with self.db.read() as conn:
            payment = await PaymentRepository(conn).find_by_callback_hash(provider.type, callback_hash)
        if payment is None:
            raise NotFoundError()
        return payment

    # ---- cancel -------------------------------------------------------------

    async def cancel_payment(self, caller: Caller, payment_id: int, reason: str = "") -> Payment:
        reason = validate_cancel_reason(reason)
        payment = await self.get_payment(caller, payment_id)
        if payment.status == PaymentStatus.CANCELED:
            return payment  # cancel is idempotent: no second callback
        _check_cancelable(payment)
        if payment.provider_payment_id is not None:
            outcome = await self._cancel_at_provider(payment, await self.providers.for_payment(payment))
            if outcome == CancelOutcome.ALREADY_PAID:
                await self.change_status(
                    payment.id,
                    lambda p: StatusChange(PaymentStatus.PAID, "provider_reported_paid", message="provider reported the payment paid when asked to cancel"),
                )
                raise InvalidTransitionError("invalid status: paid payments cannot be canceled")

        def decide(current: Payment) -> StatusChange | None:
            if current.status == PaymentStatus.CANCELED:
                return None
            if not can_transition(current.status, PaymentStatus.CANCELED):
                # Lost a race (e.g. the provider's "paid" came first): record the attempt.
                return StatusChange(None, "cancel_rejected", message=f"cancel refused: payment is {current.status.name}")
            return StatusChange(PaymentStatus.CANCELED, "payment_canceled", values={"cancel_reason": reason or None}, message=reason or None)

        result = await self.change_status(payment.id, decide)
        if result.status != PaymentStatus.CANCELED:
            _check_cancelable(result)  # raises: it ended otherwise meanwhile
        await audit.record(self.db, caller, audit.PAYMENT_CANCELED, "payment", payment.id, reason)
        return result

    async def _cancel_at_provider(self, payment: Payment, provider: Provider) -> CancelOutcome:
        key = provider_idempotency_key(payment.caller_service, payment.request_id, "cancel")
        try:
            async with asyncio.timeout(self.settings.provider_timeout_seconds):
                return await provider.cancel(payment, key)
        except TimeoutError:
            raise ServiceUnavailableError("payment provider timed out; retry the cancel") from None
        except ProviderError as exc:
            if exc.retryable:
                raise ServiceUnavailableError(f"{exc.message}; retry the cancel",
                                              retry_after_seconds=exc.retry_after_seconds) from None
            raise

    # ---- provider callbacks ------------------------------------------------

    async def handle_provider_callback(self, callback: ProviderCallback) -> CallbackOutcome:
        """A webhook at the per-payment URL (provider_events.py)."""
        return await self.callbacks.handle(callback)

    async def handle_account_callback(self, provider_name: str, payload: bytes, signature: str,
                                      account_id: int | None = None) -> CallbackOutcome:
        """A webhook at a provider's account-level endpoint, e.g. Stripe's /webhooks/stripe
        (the default account) or /webhooks/stripe/{account_id}."""
        return await self.callbacks.handle_account(provider_name, payload, signature, account_id)

    # ---- refunds ------------------------------------------------------------

    async def refund_payment(self, caller: Caller, command: RefundCommand) -> RefundResult:
        validate_payment_id(command.payment_id)
        validate_refund(command)
        payment = await self.get_payment(caller, command.payment_id)
        result = await self.refunds.refund(payment, command)
        if not result.replayed:
            await audit.record(self.db, caller, audit.PAYMENT_REFUNDED, "payment", payment.id,
                               f"refund {result.refund.id}: {result.refund.amount_cents} {payment.currency} "
                               f"{result.refund.status.name.lower()}")
        return result

    # ---- shared -------------------------------------------------------------

    async def change_status(self, payment_id: int, decide: Callable[[Payment], StatusChange | None]) -> Payment:
        """Reads the payment, asks `decide` for a change and applies it. A change of status
        the table allows is written with other concurrent ones (write_grouped). If another
        writer changed the status in between, or the change only records an event, it is
        applied under the row's lock, re-read and decided again as often as needed."""
        async with self.db.read() as conn:
            payment = await PaymentRepository(conn).get(payment_id)
        if payment is None:
            raise NotFoundError()
        change = decide(payment)
        if change is None:
            return payment
        written = await self.write_grouped(payment, change)
        if written is not None:
            return written
        for _ in range(MAX_CHANGE_ATTEMPTS):
            async with self.db.transaction() as conn:
                payment = await PaymentRepository(conn).get(payment_id, for_update=True)
                if payment is None:
                    raise NotFoundError()
                change = decide(payment)
                if change is None:
                    return payment
                try:
                    return await apply_status_change(conn, payment, change, utcnow(), last=True)
                except ConcurrentUpdate:
                    pass
        raise ServiceUnavailableError("payment is being updated concurrently; retry")

    async def write_grouped(self, payment: Payment, change: StatusChange,
                             record: Callable[[datetime], list[tuple[Statement, dict]]] | None = None) -> Payment | None:
        """The change as a transition from the status `payment` has, written in one
        transaction with other concurrent status changes (group commit): a conditional UPDATE
        that applies only if the row still has that status. `record(now)`: more rows that
        record it, written with it (INSERT_AFTER_UPDATE statements). None when it did not
        apply, or the change is not a transition the table allows: the caller then takes
        the row lock."""
        now = utcnow()
        transition = plan_transition(payment, change, now)
        if transition is None:
            return None
        if record is not None:
            transition.record += record(now)
        if await self.status_writes.submit(transition):
            return transition.applied()
        return None


def _routed(result: CreateResult, rule: Rule | None) -> CreateResult:
    """The result naming the rule that routed it (a replay too, while the rules still route it so)."""
    if rule is None or result.payment.provider not in rule.providers:
        return result
    return dataclasses.replace(result, routing_rule=rule.name)


def visible_to(caller: Caller, payment: Payment | None) -> Payment:
    """The payment if this caller may see it."""
    if payment is None or not caller.may_act_for(payment.caller_service):
        raise NotFoundError()  # another caller's payment is as good as absent
    return payment


def _check_cancelable(payment: Payment) -> None:
    if not can_transition(payment.status, PaymentStatus.CANCELED):
        raise InvalidTransitionError(f"invalid status: {payment.status.name.lower()} payments cannot be canceled")
