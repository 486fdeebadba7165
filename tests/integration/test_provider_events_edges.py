"""Provider events applied in this process (service/provider_events.py), through both
entrances, against a provider whose webhooks are whatever event a test registers: every
row an event writes (its callback log row, its payment event, the callback to the caller,
the objects it names, the refunds it merges), which path writes it (group commit or under
the row lock), the DUPLICATE and refusal answers with their logged rows, refunds fetched
from the provider, releasing a payment's provider object, and the validation messages."""

from __future__ import annotations

import asyncio
import dataclasses
import json

import pytest
import sqlalchemy as sa
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from payments_svc.auth.caller import Caller
from payments_svc.db.tables import callback_deliveries, payment_callbacks, payment_events, payments, provider_objects, refunds
from payments_svc.domain.enums import CallbackStatus, PaymentStatus, ProviderType
from payments_svc.domain.errors import (
    CallbackAmountMismatchError,
    CallbackRejectedError,
    NotFoundError,
    ProviderError,
    ServiceUnavailableError,
    ValidationError,
)
from payments_svc.domain.payment import CreatePaymentCommand, ProviderCallback
from payments_svc.domain.refund import RefundStatus
from payments_svc.providers.base import ProviderEvent, RefundSnapshot, provider_idempotency_key
from payments_svc.providers.registry import ProviderRegistry
from payments_svc.providers.sandbox.provider import SandboxProvider
from payments_svc.repository.payments import PaymentRepository
from payments_svc.service import provider_events
from payments_svc.service.provider_events import CallbackOutcome
from payments_svc.service.status_changes import ConcurrentUpdate

SHOP = Caller("shop")
SIGNATURE = "sig-default"
P, S = PaymentStatus, CallbackStatus


class EventSource(SandboxProvider):
    """The sandbox provider whose webhooks carry the events the test registered under their
    payloads; `signature` is the only one it accepts (its account's secret)."""

    def __init__(self, signature: str = SIGNATURE):
        super().__init__(public_base_url="http://127.0.0.1:1", webhook_secret="whsec_unused")
        self.signature = signature
        self.events: dict[bytes, ProviderEvent] = {}

    def parse_callback(self, payload: bytes, signature: str) -> ProviderEvent:
        if signature != self.signature:
            raise CallbackRejectedError("invalid signature")
        try:
            return self.events[payload]
        except KeyError:
            raise CallbackRejectedError("unknown payload") from None


class RefundLister(EventSource):
    """Also lists an object's refunds (as Stripe does for charge.refunded)."""

    def __init__(self):
        super().__init__()
        self.fetched: list[str | None] = []
        self.listed: dict[str, list[RefundSnapshot]] = {}
        self.error: Exception | None = None
        self.delay = 0.0

    async def fetch_refunds(self, object_id: str) -> list[RefundSnapshot]:
        self.fetched.append(object_id)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.error is not None:
            raise self.error
        return list(self.listed.get(object_id, []))


class Releaser(EventSource):
    """Also releases a payment's object once it ended (as a Stripe payment link)."""

    def __init__(self):
        super().__init__()
        self.released: list[tuple[int, PaymentStatus, str]] = []
        self.error: Exception | None = None
        self.delay = 0.0

    async def release(self, payment, idempotency_key: str) -> None:
        self.released.append((payment.id, payment.status, idempotency_key))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.error is not None:
            raise self.error


class Accounts:
    """Provider accounts (accounts/resolver.py's interface): account 7 has its own secret."""

    def __init__(self, provider: EventSource):
        self.provider_of_7 = provider

    async def account_of(self, caller_service, provider_type):
        return None

    async def provider(self, account_id, provider_type):
        if account_id != 7:
            raise NotFoundError("no such provider account")
        return self.provider_of_7

    async def close(self):
        pass


def _install(container, provider: EventSource, accounts: Accounts | None = None):
    container.service.providers = ProviderRegistry([provider], ProviderType.SANDBOX, accounts=accounts)
    return container.service


@pytest.fixture
def source():
    return EventSource()


@pytest.fixture
async def service(container, source):
    return _install(container, source)


def _command(request_id: str) -> CreatePaymentCommand:
    return CreatePaymentCommand(
        request_id=request_id, caller_service="shop", resource_type="order", resource_id="o-1", customer_ref="",
        amount_cents=1500, currency="usd", payment_method=1, payment_type=1, provider=0,
        recurring_interval="", recurring_interval_count=0, status_callback_url="https://shop.example/cb",
        success_url="", cancel_url="", metadata={},
    )


async def _create(service, request_id: str = "p-1", **columns):
    payment = (await service.create_payment(SHOP, _command(request_id))).payment
    if columns:
        async with service.db.transaction() as conn:
            await conn.execute(payments.update().where(payments.c.id == payment.id).values(**columns))
    return await service.get_payment(SHOP, payment.id)


def _event(event_id: str, status: PaymentStatus | None = None, event_type: str = "payment.updated", **fields) -> ProviderEvent:
    return ProviderEvent(event_id=event_id, event_type=event_type, status=status, **fields)


def _register(provider: EventSource, event: ProviderEvent, payload: bytes | None = None) -> bytes:
    payload = json.dumps({"id": event.event_id}).encode() if payload is None else payload
    provider.events[payload] = event
    return payload


async def at_url(service, provider, payment, event, *, payload=None, signature=SIGNATURE, callback_hash=None):
    """At the payment's own URL (/webhooks/providers/sandbox/{hash})."""
    body = _register(provider, event, payload)
    return await service.handle_provider_callback(ProviderCallback(
        request_id="rq", provider="sandbox", signature=signature, payload=body,
        callback_hash=payment.provider_callback_hash if callback_hash is None else callback_hash))


async def at_account(service, provider, event, *, payload=None, signature=SIGNATURE, account_id=None):
    """At the account-level endpoint (/webhooks/sandbox, or /webhooks/sandbox/{account_id})."""
    body = _register(provider, event, payload)
    return await service.handle_account_callback("sandbox", body, signature, account_id)


async def _rows(service, query) -> list[tuple]:
    async with service.db.read() as conn:
        return [tuple(r) for r in await conn.execute(query)]


async def logged(service) -> list[tuple]:
    """payment_callbacks, oldest first."""
    c = payment_callbacks.c
    rows = await _rows(service, sa.select(c.payment_id, c.provider, c.callback_hash, c.provider_event_id, c.dedup_key,
                                          c.signature, c.payload_json, c.status, c.error).order_by(c.id))
    return [(*r[:7], S(r[7]), r[8]) for r in rows]


async def timeline(service, payment_id: int) -> list[tuple]:
    """payment_events after the payment's creation."""
    c = payment_events.c
    rows = await _rows(service, sa.select(c.event_type, c.old_status, c.new_status, c.provider_event_id,
                                          c.needs_attention, c.message, c.payload_json)
                       .where(c.payment_id == payment_id).order_by(c.id))
    return [(r[0], r[1] and P(r[1]), P(r[2]), r[3], bool(r[4]), r[5], r[6]) for r in rows
            if r[0] not in ("payment_created", "checkout_created")]


async def announced(service, payment_id: int) -> list[tuple[str, PaymentStatus]]:
    d = callback_deliveries.c
    rows = await _rows(service, sa.select(d.event_type, d.payment_status).where(d.payment_id == payment_id).order_by(d.id))
    return [(r[0], P(r[1])) for r in rows]


async def owned_objects(service) -> set[tuple[str, int]]:
    o = provider_objects.c
    return set(await _rows(service, sa.select(o.object_id, o.payment_id).where(o.provider == int(ProviderType.SANDBOX))))


async def ledger(service, payment_id: int) -> list[tuple]:
    r = refunds.c
    rows = await _rows(service, sa.select(r.provider_refund_id, r.amount_cents, r.status)
                       .where(r.payment_id == payment_id).order_by(r.id))
    return [(i, a, RefundStatus(s)) for i, a, s in rows]


def grouped_writes() -> float:
    """Status changes written by group commit so far (the payments_group_commit_size histogram)."""
    return REGISTRY.get_sample_value("payments_group_commit_size_count", {"kind": "status_change"}) or 0.0


def _applied_logs(logs) -> list[dict]:
    return [e for e in logs if e["event"] == "provider_callback_applied"]


# ---- the common event: a change of status, by group commit ----------------------------


async def test_a_status_change_is_group_committed_with_its_event_callback_and_dedup_rows(service, source):
    payment = await _create(service)
    # Not UTF-8: stored as decoded with replacement characters, not refused.
    payload = b'{"id": "evt_paid", "note": "\xff"}'
    event = _event("evt_paid", P.PAID, "payment.succeeded", provider_payment_id="pi_new",
                   provider_subscription_id="sub_new", failure_reason="only kept for a failure",
                   message="paid at the provider")
    before = grouped_writes()
    with capture_logs() as logs:
        outcome = await at_url(service, source, payment, event, payload=payload)
    assert outcome == CallbackOutcome(S.PROCESSED, P.PENDING)
    assert grouped_writes() == before + 1
    text = '{"id": "evt_paid", "note": "\ufffd"}'
    after = await service.get_payment(SHOP, payment.id)
    assert (after.status, after.provider_payment_id, after.provider_subscription_id, after.failure_reason,
            after.attention_required) == (P.PAID, "pi_new", "sub_new", None, False)
    assert await timeline(service, payment.id) == [
        ("payment.succeeded", P.PENDING, P.PAID, "evt_paid", False, "paid at the provider", text)]
    assert await announced(service, payment.id) == [("payment.paid", P.PAID)]
    assert await logged(service) == [
        (payment.id, "sandbox", payment.provider_callback_hash, "evt_paid", "evt_paid", SIGNATURE, text, S.PROCESSED, None)]
    assert _applied_logs(logs) == [dict(event="provider_callback_applied", log_level="info", payment_id=payment.id,
                                        event_type="payment.succeeded", old_status="PENDING", new_status="PAID")]


async def test_a_redelivered_event_is_answered_duplicate_and_logged_as_such(service, source):
    payment = await _create(service)
    event = _event("evt_1", P.PROCESSING, "payment.processing")
    assert (await at_url(service, source, payment, event)).status == S.PROCESSED
    with capture_logs() as logs:
        again = await at_url(service, source, payment, event)
    assert again == CallbackOutcome(S.DUPLICATE)
    assert _applied_logs(logs) == []
    body = json.dumps({"id": "evt_1"})
    assert (await logged(service))[1:] == [
        (payment.id, "sandbox", payment.provider_callback_hash, "evt_1", None, SIGNATURE, body, S.DUPLICATE,
         "event already processed")]
    assert len(await timeline(service, payment.id)) == 1
    assert (await service.get_payment(SHOP, payment.id)).status == P.PROCESSING


async def test_a_failure_keeps_its_reason_cut_to_1024_and_flags_the_payment(service, source):
    payment = await _create(service, provider_subscription_id="sub_kept")
    reason = "declined " + "x" * 1100
    # No event type: recorded as provider_callback; no subscription id: the payment's stays.
    event = _event("evt_failed", P.FAILED, "", failure_reason=reason, needs_attention=True)
    assert await at_url(service, source, payment, event) == CallbackOutcome(S.PROCESSED, P.PENDING)
    after = await service.get_payment(SHOP, payment.id)
    assert (after.status, after.failure_reason, after.provider_subscription_id, after.attention_required) == (
        P.FAILED, reason[:1024], "sub_kept", True)
    assert after.provider_payment_id == payment.provider_payment_id
    assert await timeline(service, payment.id) == [
        ("provider_callback", P.PENDING, P.FAILED, "evt_failed", True, None, json.dumps({"id": "evt_failed"}))]
    assert await announced(service, payment.id) == [("payment.failed", P.FAILED)]


async def test_the_event_amount_must_be_the_payments(service, source):
    payment = await _create(service)
    with pytest.raises(CallbackAmountMismatchError) as refused:
        await at_url(service, source, payment, _event("evt_short", P.PAID, amount_cents=999))
    reason = "the event reports an amount of 999, the payment is of 1500"
    assert refused.value.reason == reason
    assert await logged(service) == [(payment.id, "sandbox", payment.provider_callback_hash, "evt_short", None, SIGNATURE,
                                      json.dumps({"id": "evt_short"}), S.REJECTED, reason)]
    assert (await service.get_payment(SHOP, payment.id)).status == P.PENDING
    exact = await at_url(service, source, payment, _event("evt_exact", P.PAID, amount_cents=1500))
    assert exact == CallbackOutcome(S.PROCESSED, P.PENDING)


# ---- under the row lock: objects to record, refunds to merge ----------------------------


async def test_an_event_naming_new_objects_is_applied_under_the_row_lock_and_records_them(service, source, monkeypatch):
    payment = await _create(service)
    reads = []
    real_get = PaymentRepository.get

    async def get(self, payment_id, **kwargs):
        reads.append(kwargs)
        return await real_get(self, payment_id, **kwargs)

    monkeypatch.setattr(PaymentRepository, "get", get)
    event = _event("evt_charge", P.PAID, "charge.succeeded", object_ids=("ch_1", payment.provider_payment_id),
                   message="charged")
    before = grouped_writes()
    with capture_logs() as logs:
        outcome = await at_url(service, source, payment, event)
    assert outcome == CallbackOutcome(S.PROCESSED, P.PENDING)
    assert grouped_writes() == before  # not group-committed: objects to record
    assert {"for_update": True} in reads  # the payment read under its row lock
    assert await owned_objects(service) == {("ch_1", payment.id)}  # the payment's own object is not repeated
    body = json.dumps({"id": "evt_charge"})
    assert await timeline(service, payment.id) == [("charge.succeeded", P.PENDING, P.PAID, "evt_charge", False, "charged", body)]
    assert await logged(service) == [(payment.id, "sandbox", payment.provider_callback_hash, "evt_charge", "evt_charge",
                                      SIGNATURE, body, S.PROCESSED, None)]
    assert _applied_logs(logs) == [dict(event="provider_callback_applied", log_level="info", payment_id=payment.id,
                                        event_type="charge.succeeded", old_status="PENDING", new_status="PAID")]


async def test_an_event_naming_only_known_objects_is_group_committed(service, source):
    payment = await _create(service)
    await at_url(service, source, payment, _event("evt_a", None, object_ids=("ch_1",)))
    assert await owned_objects(service) == {("ch_1", payment.id)}
    before = grouped_writes()
    # The payment's own object and one recorded before: nothing to record.
    event = _event("evt_b", P.PAID, object_ids=("ch_1", payment.provider_payment_id))
    assert await at_account(service, source, event) == CallbackOutcome(S.PROCESSED, P.PENDING)
    assert grouped_writes() == before + 1
    assert (await service.get_payment(SHOP, payment.id)).status == P.PAID


async def test_a_locked_apply_retries_a_concurrent_update_and_gives_up_after_five(service, source, monkeypatch):
    payment = await _create(service)
    real = provider_events.apply_status_change
    calls = []

    async def racing(conn, current, change, now):
        calls.append(current.status)
        if len(calls) <= failures:
            raise ConcurrentUpdate()
        return await real(conn, current, change, now)

    monkeypatch.setattr(provider_events, "apply_status_change", racing)
    failures = 5
    with pytest.raises(ServiceUnavailableError) as busy:
        await at_url(service, source, payment, _event("evt_busy", P.PAID, object_ids=("ch_busy",)))
    assert busy.value.message == "payment is being updated concurrently; the provider should retry"
    assert len(calls) == 5
    assert await logged(service) == [] and await owned_objects(service) == set()  # each attempt rolled back

    calls.clear()
    failures = 1
    outcome = await at_url(service, source, payment, _event("evt_busy", P.PAID, object_ids=("ch_busy",)))
    assert outcome == CallbackOutcome(S.PROCESSED, P.PENDING) and len(calls) == 2
    assert [(r[3], r[7]) for r in await logged(service)] == [("evt_busy", S.PROCESSED)]


async def test_a_paid_status_with_a_refund_is_merged_under_the_lock(service, source):
    payment = await _create(service)
    before = grouped_writes()
    event = _event("evt_both", P.PAID, "charge.refunded", provider_payment_id="pi_both",
                   refunds=(RefundSnapshot("re_1", 500, RefundStatus.SUCCEEDED),))
    assert await at_url(service, source, payment, event) == CallbackOutcome(S.PROCESSED, P.PENDING)
    assert grouped_writes() == before
    after = await service.get_payment(SHOP, payment.id)
    assert (after.status, after.refunded_cents, after.refundable_cents, after.provider_payment_id) == (
        P.PAID, 500, 1000, "pi_both")
    assert await ledger(service, payment.id) == [("re_1", 500, RefundStatus.SUCCEEDED)]
    assert await timeline(service, payment.id) == [
        ("charge.refunded", P.PENDING, P.PAID, "evt_both", False, "refund re_1 of 500 made at the provider: SUCCEEDED",
         json.dumps({"id": "evt_both"}))]


# ---- events that change no status -------------------------------------------------------


async def _paid(service, provider, request_id="p-1", **columns):
    payment = await _create(service, request_id, **columns)
    await at_url(service, provider, payment, _event(f"evt_paid_{request_id}", P.PAID))
    return await service.get_payment(SHOP, payment.id)


async def test_a_refund_reported_without_a_status_is_merged_and_announced(service, source):
    payment = await _paid(service, source)
    event = _event("evt_refund", None, "charge.refund.updated", needs_attention=True, message="refund made",
                   refunds=(RefundSnapshot("re_a", 300, RefundStatus.SUCCEEDED),
                            RefundSnapshot("re_b", 200, RefundStatus.PENDING)))
    assert await at_url(service, source, payment, event) == CallbackOutcome(S.PROCESSED, P.PAID)
    after = await service.get_payment(SHOP, payment.id)
    assert (after.status, after.refunded_cents, after.refundable_cents, after.attention_required) == (P.PAID, 300, 1000, True)
    assert await announced(service, payment.id) == [("payment.paid", P.PAID), ("payment.refunded", P.PAID)]
    message = ("refund made; refund re_a of 300 made at the provider: SUCCEEDED; "
               "refund re_b of 200 made at the provider: PENDING")
    assert (await timeline(service, payment.id))[1:] == [
        ("charge.refund.updated", P.PAID, P.PAID, "evt_refund", True, message, json.dumps({"id": "evt_refund"}))]


async def test_an_event_with_no_status_and_no_refund_change_is_recorded_without_a_callback(service, source):
    payment = await _paid(service, source)
    event = _event("evt_dispute", None, "charge.dispute.created", needs_attention=True, message="disputed")
    assert await at_url(service, source, payment, event) == CallbackOutcome(S.PROCESSED, P.PAID)
    assert await announced(service, payment.id) == [("payment.paid", P.PAID)]
    assert (await timeline(service, payment.id))[1:] == [
        ("charge.dispute.created", P.PAID, P.PAID, "evt_dispute", True, "disputed", json.dumps({"id": "evt_dispute"}))]
    assert (await service.get_payment(SHOP, payment.id)).attention_required is True


async def test_a_renewal_of_a_paid_payment_is_announced_with_its_type_and_keeps_its_values(service, source):
    payment = await _paid(service, source)
    event = _event("evt_renewed", P.PAID, "invoice.paid", announce_if_paid="payment.renewed",
                   provider_subscription_id="sub_2", message="renewed", needs_attention=True)
    assert await at_url(service, source, payment, event) == CallbackOutcome(S.PROCESSED, P.PAID)
    after = await service.get_payment(SHOP, payment.id)
    assert (after.status, after.provider_subscription_id) == (P.PAID, "sub_2")
    assert await announced(service, payment.id) == [("payment.paid", P.PAID), ("payment.renewed", P.PAID)]
    assert (await timeline(service, payment.id))[1:] == [
        ("invoice.paid", P.PAID, P.PAID, "evt_renewed", True, "renewed", json.dumps({"id": "evt_renewed"}))]


async def test_an_announce_if_paid_event_for_an_unpaid_payment_is_a_plain_status_change(service, source):
    payment = await _create(service)
    event = _event("evt_first", P.PAID, "invoice.paid", announce_if_paid="payment.renewed")
    assert await at_url(service, source, payment, event) == CallbackOutcome(S.PROCESSED, P.PENDING)
    assert (await service.get_payment(SHOP, payment.id)).status == P.PAID
    assert await announced(service, payment.id) == [("payment.paid", P.PAID)]


# ---- refunds fetched from the provider ------------------------------------------------------


@pytest.fixture
async def lister(container):
    provider = RefundLister()
    _install(container, provider)
    return provider


async def test_refunds_of_an_object_are_fetched_and_merged_with_those_the_event_lists(container, lister):
    service = container.service
    payment = await _paid(service, lister)
    assert lister.fetched == []  # an event naming no object whose refunds changed fetches nothing
    lister.listed["ch_1"] = [RefundSnapshot("re_fetched", 200, RefundStatus.SUCCEEDED)]
    event = _event("evt_refunded", None, "charge.refunded", refunds_of="ch_1",
                   refunds=(RefundSnapshot("re_listed", 300, RefundStatus.SUCCEEDED),))
    assert await at_url(service, lister, payment, event) == CallbackOutcome(S.PROCESSED, P.PAID)
    assert lister.fetched == ["ch_1"]
    assert await ledger(service, payment.id) == [("re_listed", 300, RefundStatus.SUCCEEDED),
                                                 ("re_fetched", 200, RefundStatus.SUCCEEDED)]
    after = await service.get_payment(SHOP, payment.id)
    assert (after.refunded_cents, after.refundable_cents) == (500, 1000)
    assert await announced(service, payment.id) == [("payment.paid", P.PAID), ("payment.refunded", P.PAID)]


async def test_a_refund_listing_the_provider_refuses_is_rejected_for_a_retry(container, lister):
    service = container.service
    payment = await _paid(service, lister)
    lister.error = ProviderError("stripe: rate limited", retryable=True)
    event = _event("evt_list", None, "charge.refunded", refunds_of="ch_9")
    with pytest.raises(ServiceUnavailableError) as unavailable:
        await at_url(service, lister, payment, event)
    assert unavailable.value.message == "could not fetch the refunds from the provider (stripe: rate limited); the provider should retry"
    assert (await logged(service))[1:] == [
        (payment.id, "sandbox", payment.provider_callback_hash, "evt_list", None, SIGNATURE, json.dumps({"id": "evt_list"}),
         S.REJECTED, "could not fetch the refunds of ch_9: stripe: rate limited")]
    lister.error = None  # the provider's retry applies it
    assert await at_url(service, lister, payment, event) == CallbackOutcome(S.PROCESSED, P.PAID)


async def test_a_refund_listing_that_times_out_is_rejected_for_a_retry(container, lister):
    service = container.service
    service.settings = dataclasses.replace(service.settings, provider_timeout_seconds=0.05)
    payment = await _paid(service, lister)
    lister.delay = 0.5
    with pytest.raises(ServiceUnavailableError) as unavailable:
        await at_url(service, lister, payment, _event("evt_slow", None, refunds_of="ch_slow"))
    assert unavailable.value.message == ("could not fetch the refunds from the provider (payment provider timed out); "
                                         "the provider should retry")
    assert [(r[0], r[3], r[7], r[8]) for r in (await logged(service))[1:]] == [
        (payment.id, "evt_slow", S.REJECTED, "could not fetch the refunds of ch_slow: payment provider timed out")]


# ---- releasing the provider object of a payment that ended --------------------------------


@pytest.fixture
async def releaser(container):
    provider = Releaser()
    _install(container, provider)
    return provider


async def test_a_payment_that_ends_has_its_provider_object_released_once(container, releaser):
    service = container.service
    payment = await _create(service)
    await at_url(service, releaser, payment, _event("evt_processing", P.PROCESSING))
    assert releaser.released == []  # not ended yet
    await at_url(service, releaser, payment, _event("evt_paid", P.PAID))
    key = provider_idempotency_key("shop", "p-1", "release")
    assert releaser.released == [(payment.id, P.PAID, key)]
    await at_url(service, releaser, payment, _event("evt_dispute", None, needs_attention=True))
    assert releaser.released == [(payment.id, P.PAID, key)]  # it had ended before


async def test_a_failed_release_is_logged_and_the_event_still_applies(container, releaser):
    service = container.service
    payment = await _create(service)
    releaser.error = ProviderError("link already deactivated", retryable=False)
    with capture_logs() as logs:
        outcome = await at_url(service, releaser, payment, _event("evt_paid", P.PAID))
    assert outcome == CallbackOutcome(S.PROCESSED, P.PENDING)
    assert [e for e in logs if e["log_level"] == "warning"] == [
        dict(event="provider_release_failed", log_level="warning", payment_id=payment.id, error="link already deactivated")]


async def test_a_release_that_times_out_is_logged_and_the_event_still_applies(container, releaser):
    service = container.service
    service.settings = dataclasses.replace(service.settings, provider_timeout_seconds=0.05)
    payment = await _create(service)
    releaser.delay = 0.5
    with capture_logs() as logs:
        outcome = await at_url(service, releaser, payment, _event("evt_failed", P.FAILED))
    assert outcome == CallbackOutcome(S.PROCESSED, P.PENDING)
    assert [e for e in logs if e["log_level"] == "warning"] == [
        dict(event="provider_release_failed", log_level="warning", payment_id=payment.id, error="payment provider timed out")]


# ---- the account endpoint: routing ------------------------------------------------------------


async def test_an_account_event_finds_its_payment_by_the_callback_hash_it_carries(service, source):
    payment = await _create(service)
    # Found by its hash, its objects are not looked up: its own object is still nothing new to record.
    event = _event("evt_hash", P.PAID, callback_hash=payment.provider_callback_hash,
                   object_ids=(payment.provider_payment_id,))
    before = grouped_writes()
    assert await at_account(service, source, event) == CallbackOutcome(S.PROCESSED, P.PENDING)
    assert grouped_writes() == before + 1
    assert [(r[0], r[2], r[7]) for r in await logged(service)] == [(payment.id, payment.provider_callback_hash, S.PROCESSED)]
    assert await owned_objects(service) == set()


async def test_an_account_event_with_an_unknown_hash_is_routed_by_its_objects(service, source):
    payment = await _create(service)
    event = _event("evt_objects", P.PAID, callback_hash="not-a-hash", object_ids=(payment.provider_payment_id,))
    assert await at_account(service, source, event) == CallbackOutcome(S.PROCESSED, P.PENDING)


async def test_an_account_event_naming_objects_of_two_payments_is_refused(service, source):
    first, second = await _create(service, "p-1"), await _create(service, "p-2")
    event = _event("evt_two", P.PAID, object_ids=(first.provider_payment_id, second.provider_payment_id))
    payload = b"\xfe two"
    with pytest.raises(CallbackRejectedError) as refused:
        await at_account(service, source, event, payload=payload)
    reason = f"the event names objects of several payments: {sorted([first.id, second.id])}"
    assert refused.value.reason == reason
    assert await logged(service) == [(None, "sandbox", "", "evt_two", None, SIGNATURE, "\ufffd two", S.REJECTED, reason)]
    assert [(await service.get_payment(SHOP, p.id)).status for p in (first, second)] == [P.PENDING, P.PENDING]


async def test_an_account_event_about_nothing_of_ours_is_ignored_or_refused(service, source):
    ignored = _event("evt_customer", None, "customer.created", handled=False, message="not acted on")
    assert await at_account(service, source, ignored) == CallbackOutcome(S.IGNORED)
    with pytest.raises(NotFoundError):
        await at_account(service, source, _event("evt_stranger", P.PAID, object_ids=("pi_stranger",)))
    assert await logged(service) == [
        (None, "sandbox", "", "evt_customer", None, SIGNATURE, json.dumps({"id": "evt_customer"}), S.IGNORED, "not acted on"),
        (None, "sandbox", "", "evt_stranger", None, SIGNATURE, json.dumps({"id": "evt_stranger"}), S.REJECTED,
         "no payment for the event's objects")]


async def test_the_account_endpoint_requires_a_signature_and_a_payload(service, source):
    for payload, signature, message, field in (
        (b"{}", "", "provider signature is required", "signature"),
        (b"{}", " \t", "provider signature is required", "signature"),
        (b"", SIGNATURE, "payload is required", "payload"),
    ):
        with pytest.raises(ValidationError) as invalid:
            await service.handle_account_callback("sandbox", payload, signature)
        assert (invalid.value.message, invalid.value.field) == (message, field)
    assert await logged(service) == []


async def test_a_bad_or_non_ascii_signature_at_the_account_endpoint_is_rejected_and_logged(service, source):
    event = _event("evt_x", P.PAID)
    for signature, reason in (("sig-wrong", "invalid signature"), ("sig-défaut", "signature is not ASCII")):
        with pytest.raises(CallbackRejectedError) as refused:
            await at_account(service, source, event, signature=signature)
        assert refused.value.reason == reason
    body = json.dumps({"id": "evt_x"})
    assert await logged(service) == [
        (None, "sandbox", "", None, None, "sig-wrong", body, S.REJECTED, "provider callback validation failed: invalid signature"),
        (None, "sandbox", "", None, None, "sig-défaut", body, S.REJECTED,
         "provider callback validation failed: signature is not ASCII")]


async def test_an_accounts_endpoint_verifies_with_its_secret_and_takes_only_its_payments(container):
    default, own = EventSource(), EventSource("sig-account-7")
    service = _install(container, default, Accounts(own))
    mine = await _create(service, "p-7", provider_account_id=7)
    theirs = await _create(service, "p-default")
    # Account 7's secret verifies at account 7's endpoint and at its payment's own URL ...
    event = _event("evt_7", P.PROCESSING, callback_hash=mine.provider_callback_hash)
    assert await at_account(service, own, event, signature="sig-account-7", account_id=7) == CallbackOutcome(
        S.PROCESSED, P.PENDING)
    assert await at_url(service, own, mine, _event("evt_7b", P.PAID), signature="sig-account-7") == CallbackOutcome(
        S.PROCESSED, P.PROCESSING)
    # ... not at the default account's endpoint.
    with pytest.raises(CallbackRejectedError, match="callback rejected") as refused:
        await at_account(service, default, _event("evt_7c", P.PAID), signature="sig-account-7")
    assert refused.value.reason == "invalid signature"
    # A payment of another account is not changed through account 7's endpoint.
    other = _event("evt_other", P.PAID, callback_hash=theirs.provider_callback_hash)
    with pytest.raises(CallbackRejectedError) as foreign:
        await at_account(service, own, other, signature="sig-account-7", account_id=7)
    reason = f"the event is about payment {theirs.id} of another provider account than this endpoint's"
    assert foreign.value.reason == reason
    assert (await logged(service))[-1] == (None, "sandbox", "", "evt_other", None, "sig-account-7",
                                           json.dumps({"id": "evt_other"}), S.REJECTED, reason)
    assert (await service.get_payment(SHOP, theirs.id)).status == P.PENDING


# ---- the per-payment URL ---------------------------------------------------------------------------


async def test_the_payment_url_requires_each_field(service, source):
    good = dict(request_id="rq", provider="sandbox", callback_hash="h", signature=SIGNATURE, payload=b"{}")
    for field, value, message in (
        ("request_id", "", "request_id is required"),
        ("request_id", "  ", "request_id is required"),
        ("provider", "", "provider is required"),
        ("callback_hash", " ", "callback hash is required"),
        ("signature", "", "provider signature is required"),
        ("payload", b"", "payload is required"),
    ):
        with pytest.raises(ValidationError) as invalid:
            await service.handle_provider_callback(ProviderCallback(**{**good, field: value}))
        assert (invalid.value.message, invalid.value.field) == (message, field)


async def test_a_blank_payload_is_passed_to_the_provider_to_judge(service, source):
    payment = await _create(service)
    outcome = await at_url(service, source, payment, _event("evt_blank", P.PAID), payload=b"  \n")
    assert outcome == CallbackOutcome(S.PROCESSED, P.PENDING)
    assert (await logged(service))[0][6] == "  \n"


async def test_an_unknown_callback_hash_is_not_found_and_logged_with_the_event(service, source):
    payment = await _create(service)
    with pytest.raises(NotFoundError):
        await at_url(service, source, payment, _event("evt_lost", P.PAID), callback_hash=" unknown-hash ")
    assert await logged(service) == [(None, "sandbox", "unknown-hash", "evt_lost", None, SIGNATURE,
                                      json.dumps({"id": "evt_lost"}), S.REJECTED, "payment not found for callback hash")]


async def test_an_event_carrying_another_payments_hash_is_refused_at_this_url(service, source):
    mine, other = await _create(service, "p-1"), await _create(service, "p-2")
    event = _event("evt_misrouted", P.PAID, callback_hash=other.provider_callback_hash)
    with pytest.raises(CallbackRejectedError) as refused:
        await at_url(service, source, mine, event)
    assert refused.value.reason == "the event is about another payment"
    assert await logged(service) == [(mine.id, "sandbox", mine.provider_callback_hash, "evt_misrouted", None, SIGNATURE,
                                      json.dumps({"id": "evt_misrouted"}), S.REJECTED,
                                      "the event is about another payment than the callback hash's")]
    assert [(await service.get_payment(SHOP, p.id)).status for p in (mine, other)] == [P.PENDING, P.PENDING]
    # Its own hash is fine at its own URL.
    same = _event("evt_own", P.PAID, callback_hash=mine.provider_callback_hash)
    assert await at_url(service, source, mine, same) == CallbackOutcome(S.PROCESSED, P.PENDING)
