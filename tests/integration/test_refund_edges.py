"""The refund ledger's edges, in-process with the sandbox provider (SQLite, PostgreSQL, MariaDB).

What a ledger change tells the caller (its callback type and timeline event); merging
provider snapshots (refunds made at the provider added, ours matched by the id the
provider carried back, another payment's skipped, stale snapshots ignored, every column
written); and RefundPayment's unhappy paths: a provider that cannot refund, subscription
payments, replays after everything was refunded or after losing the race for a request_id,
a refund still pending at the provider, refusals replayed with their kind and reason,
timeouts and outages with their retry hints, the provider's idempotency key, and the
timeline's rows and log line."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import datetime, timedelta
from types import SimpleNamespace

import pytest
import sqlalchemy as sa
from structlog.testing import capture_logs

from payments_svc.db.tables import callback_deliveries, payments
from payments_svc.domain.enums import PaymentStatus, PaymentType, ProviderType
from payments_svc.domain.errors import ErrorKind, PaymentsError, ProviderError, ServiceUnavailableError
from payments_svc.domain.refund import RefundCommand, RefundStatus
from payments_svc.providers.base import RefundSnapshot, provider_idempotency_key
from payments_svc.repository.events import EventRepository
from payments_svc.repository.payments import PaymentRepository
from payments_svc.repository.refunds import RefundRepository
from payments_svc.service import refunds as refunds_module
from payments_svc.service.refunds import LedgerChange, merge_refunds
from payments_svc.service.status_changes import StatusChange

from .test_refunds import SHOP, paid_payment

T0 = datetime(2026, 3, 1, 12, 0, 0)  # naive UTC, as the columns hold it
SANDBOX = ProviderType.SANDBOX


def at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.fixture
def clock(monkeypatch):
    """The refund service's clock: each read is one second after the previous (T0 + 1 s first),
    so every row written by a step carries that step's own moment."""
    reads = []

    def utcnow() -> datetime:
        reads.append(at(len(reads) + 1))
        return reads[-1]

    monkeypatch.setattr(refunds_module, "utcnow", utcnow)
    return reads


def rows(refunds) -> list[tuple]:
    return [(r.payment_id, r.request_id, r.amount_cents, r.reason, r.status, r.provider_refund_id, r.failure_reason,
             r.error_code, r.created_at, r.updated_at) for r in refunds]


async def ledger(container, payment_id: int) -> list:
    async with container.db.read() as conn:
        return await RefundRepository(conn).list_for_payment(payment_id)


async def events(container, payment_id: int) -> list[tuple]:
    async with container.db.read() as conn:
        found = await EventRepository(conn).list(payment_id, limit=100, after_id=0)
    return [(e.event_type, e.old_status, e.new_status, e.needs_attention, e.message, e.created_at) for e in found]


async def announced(container, payment_id: int) -> list[str]:
    d = callback_deliveries.c
    async with container.db.read() as conn:
        return [r[0] for r in await conn.execute(sa.select(d.event_type).where(d.payment_id == payment_id).order_by(d.id))]


async def balance(container, payment_id: int) -> tuple[int, int]:
    payment = await container.service.get_payment(SHOP, payment_id)
    return payment.refunded_cents, payment.refundable_cents


def refund_command(payment_id: int, request_id: str, amount_cents: int = 0, reason: str = "") -> RefundCommand:
    return RefundCommand(payment_id=payment_id, request_id=request_id, amount_cents=amount_cents, reason=reason)


class StubRefunds:
    """Stands in for the provider's refund call: records each call, then answers from `answer`."""

    def __init__(self, answer):
        self.answer = answer
        self.calls: list[tuple[int, int, int, str]] = []

    async def __call__(self, payment, refund, idempotency_key):
        self.calls.append((payment.id, payment.refundable_cents, refund.id, idempotency_key))
        return await self.answer(payment, refund)


def stub_refunds(container, payment, answer) -> StubRefunds:
    stub = StubRefunds(answer)
    container.service.providers.get(payment.provider).refund = stub
    return stub


# ---- LedgerChange ---------------------------------------------------------------------


def test_the_callback_type_follows_the_direction_refunded_cents_moved():
    payment = SimpleNamespace(refunded_cents=400)
    assert LedgerChange({"refunded_cents": 401}, ["n"]).callback_type(payment) == "payment.refunded"
    assert LedgerChange({"refunded_cents": 399}, ["n"]).callback_type(payment) == "payment.refund_reversed"
    assert LedgerChange({"refunded_cents": 400}, ["n"]).callback_type(payment) is None
    assert LedgerChange({"refundable_cents": 0}, ["n"]).callback_type(payment) is None  # only what was paid back counts


def test_the_status_change_records_the_notes_and_announces_only_a_change_of_refunded_cents():
    values = {"refunded_cents": 500, "refundable_cents": 1000}
    change = LedgerChange(values, ["refund #1 (re_1) of 500: SUCCEEDED", "refund #2 (re_2) of 100: PENDING"])
    recorded = change.status_change(SimpleNamespace(refunded_cents=0), "refund_created")
    assert recorded == StatusChange(None, "refund_created", values=values,
                                    message="refund #1 (re_1) of 500: SUCCEEDED; refund #2 (re_2) of 100: PENDING",
                                    announce=True, callback_type="payment.refunded")
    assert recorded.values is not values  # a copy: applying the change must not alter the ledger's

    quiet = LedgerChange({"refundable_cents": 1400}, ["refund re_3 of 100 made at the provider: PENDING"])
    assert quiet.status_change(SimpleNamespace(refunded_cents=0), "provider_event") == StatusChange(
        None, "provider_event", values={"refundable_cents": 1400}, message="refund re_3 of 100 made at the provider: PENDING",
        announce=False, callback_type=None)
    assert LedgerChange({}, []).status_change(SimpleNamespace(refunded_cents=0), "refund_created") == StatusChange(
        None, "refund_created", values={}, message=None, announce=False, callback_type=None)


# ---- merge_refunds --------------------------------------------------------------------


async def merge(container, payment_id: int, snapshots: list[RefundSnapshot], now: datetime) -> LedgerChange:
    async with container.db.transaction() as conn:
        payment = await PaymentRepository(conn).get(payment_id, for_update=True)
        return await merge_refunds(conn, payment, SANDBOX, snapshots, now)


async def insert(container, payment_id: int, amount_cents: int, status: RefundStatus, **columns):
    async with container.db.transaction() as conn:
        return await RefundRepository(conn).insert(payment_id=payment_id, provider=SANDBOX, amount_cents=amount_cents,
                                                   status=status, now=T0, **columns)


async def test_refunds_made_at_the_provider_are_added_with_every_column_and_all_snapshots_are_merged(container):
    payment = await paid_payment(container.service)
    change = await merge(container, payment.id, [
        RefundSnapshot("re_dash_1", 300, RefundStatus.SUCCEEDED),
        RefundSnapshot("re_dash_2", 200, RefundStatus.FAILED, failure_reason="expired_or_canceled_card"),
        RefundSnapshot("re_dash_3", 100, RefundStatus.PENDING),
    ], at(5))
    assert change == LedgerChange({"refunded_cents": 300, "refundable_cents": 1100}, [
        "refund re_dash_1 of 300 made at the provider: SUCCEEDED",
        "refund re_dash_2 of 200 made at the provider: FAILED",
        "refund re_dash_3 of 100 made at the provider: PENDING",
    ])
    assert rows(await ledger(container, payment.id)) == [
        (payment.id, None, 300, None, RefundStatus.SUCCEEDED, "re_dash_1", None, None, at(5), at(5)),
        (payment.id, None, 200, None, RefundStatus.FAILED, "re_dash_2", "expired_or_canceled_card", None, at(5), at(5)),
        (payment.id, None, 100, None, RefundStatus.PENDING, "re_dash_3", None, None, at(5), at(5)),
    ]
    # Only what differs from the payment's columns is set: a pending refund at the provider holds money only.
    other = await paid_payment(container.service, "req-2")
    assert await merge(container, other.id, [RefundSnapshot("re_dash_4", 250, RefundStatus.PENDING)], at(6)) == LedgerChange(
        {"refundable_cents": 1250}, ["refund re_dash_4 of 250 made at the provider: PENDING"])


async def test_our_refund_is_matched_by_the_id_the_provider_carried_back(container):
    payment = await paid_payment(container.service)
    ours = await insert(container, payment.id, 400, RefundStatus.PENDING, request_id="r-1", reason="duplicate")
    async with container.db.transaction() as conn:
        assert await RefundRepository(conn).reserve(payment.id, 400, T0)
    change = await merge(container, payment.id, [RefundSnapshot("re_1", 400, RefundStatus.SUCCEEDED, refund_id=ours.id)], at(7))
    assert change == LedgerChange({"refunded_cents": 400}, [f"refund #{ours.id} (re_1) of 400: SUCCEEDED"])
    assert rows(await ledger(container, payment.id)) == [
        (payment.id, "r-1", 400, "duplicate", RefundStatus.SUCCEEDED, "re_1", None, None, T0, at(7))]


async def test_a_carried_back_id_of_another_payment_unknown_or_already_matched_adds_a_refund(container):
    payment = await paid_payment(container.service)
    other = await paid_payment(container.service, "req-2")
    theirs = await insert(container, other.id, 100, RefundStatus.PENDING, request_id="r-theirs")
    matched = await insert(container, payment.id, 200, RefundStatus.SUCCEEDED, request_id="r-1", provider_refund_id="re_a")
    change = await merge(container, payment.id, [
        RefundSnapshot("re_b", 50, RefundStatus.SUCCEEDED, refund_id=theirs.id),
        RefundSnapshot("re_c", 60, RefundStatus.SUCCEEDED, refund_id=matched.id + 1000),
        RefundSnapshot("re_d", 70, RefundStatus.SUCCEEDED, refund_id=matched.id),
    ], at(3))
    assert change == LedgerChange({"refunded_cents": 380, "refundable_cents": 1120}, [
        "refund re_b of 50 made at the provider: SUCCEEDED",
        "refund re_c of 60 made at the provider: SUCCEEDED",
        "refund re_d of 70 made at the provider: SUCCEEDED",
    ])
    assert [(r.request_id, r.provider_refund_id, r.amount_cents) for r in await ledger(container, payment.id)] == [
        ("r-1", "re_a", 200), (None, "re_b", 50), (None, "re_c", 60), (None, "re_d", 70)]
    assert rows(await ledger(container, other.id)) == [
        (other.id, "r-theirs", 100, None, RefundStatus.PENDING, None, None, None, T0, T0)]


async def test_a_refund_found_by_its_provider_id_is_that_refund_whatever_id_is_carried_back(container):
    payment = await paid_payment(container.service)
    found = await insert(container, payment.id, 300, RefundStatus.PENDING, request_id="r-1", provider_refund_id="re_a")
    waiting = await insert(container, payment.id, 200, RefundStatus.PENDING, request_id="r-2")
    change = await merge(container, payment.id, [RefundSnapshot("re_a", 300, RefundStatus.SUCCEEDED, refund_id=waiting.id)],
                         at(2))
    assert change.notes == [f"refund #{found.id} (re_a) of 300: SUCCEEDED"]
    assert [(r.id, r.status, r.provider_refund_id) for r in await ledger(container, payment.id)] == [
        (found.id, RefundStatus.SUCCEEDED, "re_a"), (waiting.id, RefundStatus.PENDING, None)]


async def test_another_payments_refund_is_skipped_and_the_rest_merged(container):
    payment = await paid_payment(container.service)
    other = await paid_payment(container.service, "req-2")
    await insert(container, other.id, 100, RefundStatus.SUCCEEDED, provider_refund_id="re_other")
    change = await merge(container, payment.id, [RefundSnapshot("re_other", 100, RefundStatus.FAILED, "lost"),
                                                 RefundSnapshot("re_mine", 40, RefundStatus.SUCCEEDED)], at(4))
    assert change == LedgerChange({"refunded_cents": 40, "refundable_cents": 1460},
                                  ["refund re_mine of 40 made at the provider: SUCCEEDED"])
    assert rows(await ledger(container, other.id)) == [
        (other.id, None, 100, None, RefundStatus.SUCCEEDED, "re_other", None, None, T0, T0)]


async def test_refunds_only_move_forward(container):
    payment = await paid_payment(container.service)
    done = await insert(container, payment.id, 300, RefundStatus.SUCCEEDED, request_id="r-1", provider_refund_id="re_a")
    waiting = await insert(container, payment.id, 200, RefundStatus.PENDING, request_id="r-2")
    change = await merge(container, payment.id, [
        RefundSnapshot("re_a", 300, RefundStatus.PENDING),  # stale: older than what we know
        RefundSnapshot("re_a", 300, RefundStatus.SUCCEEDED, failure_reason="replayed"),  # already known
        RefundSnapshot("re_b", 200, RefundStatus.PENDING, refund_id=waiting.id),  # the same status, first matched
    ], at(2))
    assert change == LedgerChange({"refunded_cents": 300, "refundable_cents": 1000}, [
        f"refund #{waiting.id} (re_b) of 200: PENDING"])
    assert rows(await ledger(container, payment.id)) == [
        (payment.id, "r-1", 300, None, RefundStatus.SUCCEEDED, "re_a", None, None, T0, T0),
        (payment.id, "r-2", 200, None, RefundStatus.PENDING, "re_b", None, None, T0, at(2)),
    ]
    assert await merge(container, payment.id, [RefundSnapshot("re_b", 200, RefundStatus.PENDING)], at(3)) == LedgerChange({}, [])
    assert await merge(container, payment.id, [], at(3)) == LedgerChange({}, [])

    returned = await merge(container, payment.id, [
        RefundSnapshot("re_a", 300, RefundStatus.FAILED, failure_reason="charge_for_pending_refund_disputed"),
        RefundSnapshot("re_b", 200, RefundStatus.SUCCEEDED),
    ], at(4))
    assert returned == LedgerChange({"refunded_cents": 200, "refundable_cents": 1300}, [
        f"refund #{done.id} (re_a) of 300: FAILED (charge_for_pending_refund_disputed)",
        f"refund #{waiting.id} (re_b) of 200: SUCCEEDED",
    ])
    assert rows(await ledger(container, payment.id)) == [
        (payment.id, "r-1", 300, None, RefundStatus.FAILED, "re_a", "charge_for_pending_refund_disputed", None, T0, at(4)),
        (payment.id, "r-2", 200, None, RefundStatus.SUCCEEDED, "re_b", None, None, T0, at(4)),
    ]


# ---- RefundPayment ----------------------------------------------------------------------


async def test_a_refund_is_recorded_on_the_timeline_announced_and_logged(container, clock):
    payment = await paid_payment(container.service)
    with capture_logs() as logs:
        result = await container.service.refund_payment(SHOP, refund_command(payment.id, "r-1", 400))
    refund = result.refund
    assert (result.replayed, result.payment.refunded_cents, result.payment.refundable_cents) == (False, 400, 1100)
    key = provider_idempotency_key("shop", "r-1", f"refund:{payment.provider_callback_hash}")
    provider_id = "sbx_re_" + __import__("hashlib").sha256(key.encode()).hexdigest()[:24]
    assert rows([refund]) == [(payment.id, "r-1", 400, None, RefundStatus.SUCCEEDED, provider_id, None, None, at(1), at(2))]
    assert refund.request_fingerprint == refund_command(payment.id, "r-1", 400).fingerprint()
    assert (await events(container, payment.id))[-2:] == [
        ("refund_requested", PaymentStatus.PAID, PaymentStatus.PAID, False, f"refund #{refund.id} of 400 requested", at(1)),
        ("refund_created", PaymentStatus.PAID, PaymentStatus.PAID, False,
         f"refund #{refund.id} ({provider_id}) of 400: SUCCEEDED", at(2)),
    ]
    assert await announced(container, payment.id) == ["payment.paid", "payment.refunded"]
    recorded = [entry for entry in logs if entry["event"] == "refund_recorded"]
    assert recorded == [{"event": "refund_recorded", "log_level": "info", "payment_id": payment.id, "refund_id": refund.id,
                         "status": "SUCCEEDED", "refunded_cents": 400, "refundable_cents": 1100}]


async def test_the_provider_is_asked_with_the_payments_own_key_and_its_answer_is_our_refund(container):
    payment = await paid_payment(container.service)

    async def answer(payment, refund):  # as a provider that does not carry our refund's id back
        return RefundSnapshot("re_remote", refund.amount_cents, RefundStatus.SUCCEEDED)

    stub = stub_refunds(container, payment, answer)
    result = await container.service.refund_payment(SHOP, refund_command(payment.id, "r-1", 400))
    key = provider_idempotency_key("shop", "r-1", f"refund:{payment.provider_callback_hash}")
    assert stub.calls == [(payment.id, 1100, result.refund.id, key)]  # the payment as reserved
    assert [(r.id, r.status, r.provider_refund_id) for r in await ledger(container, payment.id)] == [
        (result.refund.id, RefundStatus.SUCCEEDED, "re_remote")]
    assert (result.refund.status, result.refund.provider_refund_id) == (RefundStatus.SUCCEEDED, "re_remote")
    assert (result.payment.refunded_cents, result.payment.refundable_cents) == (400, 1100)


async def test_a_replay_after_everything_was_refunded_returns_the_refund_and_the_current_payment(container):
    service = container.service
    payment = await paid_payment(service)
    first = await service.refund_payment(SHOP, refund_command(payment.id, "r-1", 400))
    rest = await service.refund_payment(SHOP, refund_command(payment.id, "r-all"))
    assert (rest.refund.amount_cents, rest.payment.refunded_cents, rest.payment.refundable_cents) == (1100, 1500, 0)
    again = await service.refund_payment(SHOP, refund_command(payment.id, "r-all"))
    assert (again.replayed, again.refund.id, again.refund.amount_cents) == (True, rest.refund.id, 1100)
    old = await service.refund_payment(SHOP, refund_command(payment.id, "r-1", 400))
    assert (old.replayed, old.refund, old.payment.refunded_cents, old.payment.refundable_cents) == (
        True, first.refund, 1500, 0)  # the refund as stored, the payment as it is now
    assert len(await ledger(container, payment.id)) == 2
    with pytest.raises(PaymentsError) as reused:
        await service.refund_payment(SHOP, refund_command(payment.id, "r-1", 400, "duplicate"))  # the reason differs
    assert (reused.value.kind, reused.value.field, reused.value.message) == (
        ErrorKind.IDEMPOTENCY_KEY_REUSED, "request_id",
        "request_id was already used for a refund of this payment with different parameters; "
        "use a new request_id for a new refund")


async def test_a_request_that_lost_the_race_for_its_request_id_answers_with_the_winners_refund(container, monkeypatch):
    service = container.service
    payment = await paid_payment(service)
    first = await service.refund_payment(SHOP, refund_command(payment.id, "r-1", 400))
    real_find = RefundRepository.find_by_request
    lookups = []

    async def find_by_request(self, payment_id, request_id):
        lookups.append((payment_id, request_id))
        if len(lookups) == 1:
            return None  # the concurrent winner had not committed yet when this request looked
        return await real_find(self, payment_id, request_id)

    monkeypatch.setattr(RefundRepository, "find_by_request", find_by_request)
    again = await service.refund_payment(SHOP, refund_command(payment.id, "r-1", 400))
    assert lookups == [(payment.id, "r-1"), (payment.id, "r-1")]
    assert (again.replayed, again.refund, again.payment.refunded_cents, again.payment.refundable_cents) == (
        True, first.refund, 400, 1100)  # its own reservation undone with the duplicate insert
    assert len(await ledger(container, payment.id)) == 1


async def test_a_refund_the_provider_leaves_pending_is_not_asked_again_on_replay(container, clock):
    payment = await paid_payment(container.service)

    async def pending(payment, refund):
        return RefundSnapshot("re_pending", refund.amount_cents, RefundStatus.PENDING, refund_id=refund.id)

    stub = stub_refunds(container, payment, pending)
    first = await container.service.refund_payment(SHOP, refund_command(payment.id, "r-1", 400))
    assert (first.replayed, first.refund.status, first.refund.provider_refund_id) == (False, RefundStatus.PENDING, "re_pending")
    assert (first.payment.refunded_cents, first.payment.refundable_cents) == (0, 1100)
    assert (await events(container, payment.id))[-1] == (
        "refund_created", PaymentStatus.PAID, PaymentStatus.PAID, False, f"refund #{first.refund.id} (re_pending) of 400: PENDING",
        at(2))
    assert await announced(container, payment.id) == ["payment.paid"]  # nothing paid back yet
    again = await container.service.refund_payment(SHOP, refund_command(payment.id, "r-1", 400))
    assert (again.replayed, again.refund.status, len(stub.calls)) == (True, RefundStatus.PENDING, 1)


async def test_a_refused_refund_fails_for_good_and_its_replay_raises_the_same_kind_and_reason(container, clock):
    service = container.service
    payment = await paid_payment(service)
    refusal = ProviderError("charge is disputed", retryable=False, kind=ErrorKind.FAILED_PRECONDITION)

    async def refuse(payment, refund):
        raise refusal

    stub = stub_refunds(container, payment, refuse)
    with pytest.raises(ProviderError) as first:
        await service.refund_payment(SHOP, refund_command(payment.id, "r-1", 300))
    assert first.value is refusal
    (refund,) = await ledger(container, payment.id)
    assert rows([refund]) == [(payment.id, "r-1", 300, None, RefundStatus.FAILED, None, "charge is disputed",
                               "failed_precondition", at(1), at(2))]
    assert await balance(container, payment.id) == (0, 1500)
    assert (await events(container, payment.id))[-1] == (
        "refund_rejected", PaymentStatus.PAID, PaymentStatus.PAID, False,
        f"refund #{refund.id} of 300 refused by the provider: charge is disputed", at(2))
    with pytest.raises(ProviderError) as again:
        await service.refund_payment(SHOP, refund_command(payment.id, "r-1", 300))
    assert (again.value.message, again.value.kind, again.value.retryable) == (
        "charge is disputed", ErrorKind.FAILED_PRECONDITION, False)
    assert len(stub.calls) == 1


async def test_a_refusal_without_a_reason_is_replayed_with_a_generic_one(container):
    payment = await paid_payment(container.service)

    async def refuse(payment, refund):
        raise ProviderError("", retryable=False, kind=ErrorKind.PERMISSION_DENIED)

    stub_refunds(container, payment, refuse)
    with pytest.raises(ProviderError):
        await container.service.refund_payment(SHOP, refund_command(payment.id, "r-1", 300))
    with pytest.raises(ProviderError) as again:
        await container.service.refund_payment(SHOP, refund_command(payment.id, "r-1", 300))
    assert (again.value.message, again.value.kind, again.value.retryable) == (
        "payment provider refused the refund", ErrorKind.PERMISSION_DENIED, False)


async def test_an_outage_keeps_the_reservation_with_the_providers_retry_hint_and_the_retry_finishes(container):
    service = container.service
    payment = await paid_payment(service)

    async def busy(payment, refund):
        raise ProviderError("sandbox is busy", retryable=True, kind=ErrorKind.ABORTED)  # retry after 1 s

    stub = stub_refunds(container, payment, busy)
    with pytest.raises(ServiceUnavailableError) as unavailable:
        await service.refund_payment(SHOP, refund_command(payment.id, "r-1", 400))
    assert (unavailable.value.kind, unavailable.value.message, unavailable.value.retry_after_seconds) == (
        ErrorKind.UNAVAILABLE, "sandbox is busy; retry the refund with the same request_id", 1)
    assert await balance(container, payment.id) == (0, 1100)
    (held,) = await ledger(container, payment.id)
    assert (held.status, held.provider_refund_id, held.error_code) == (RefundStatus.PENDING, None, None)

    async def succeed(payment, refund):
        return RefundSnapshot("re_late", refund.amount_cents, RefundStatus.SUCCEEDED, refund_id=refund.id)

    stub.answer = succeed
    retried = await service.refund_payment(SHOP, refund_command(payment.id, "r-1", 400))
    assert (retried.replayed, retried.refund.id, retried.refund.status) == (True, held.id, RefundStatus.SUCCEEDED)
    assert (retried.payment.refunded_cents, retried.payment.refundable_cents) == (400, 1100)
    assert len({key for *_, key in stub.calls}) == 1 and len(stub.calls) == 2  # asked again with the same key


async def test_a_provider_that_does_not_answer_in_time_leaves_the_refund_reserved(container):
    service = container.service
    payment = await paid_payment(service)
    service.settings = dataclasses.replace(service.settings, provider_timeout_seconds=0.05)

    async def slow(payment, refund):
        await asyncio.sleep(1)  # past the timeout
        return RefundSnapshot("re_slow", refund.amount_cents, RefundStatus.SUCCEEDED, refund_id=refund.id)

    stub_refunds(container, payment, slow)
    with pytest.raises(ServiceUnavailableError) as unavailable:
        await service.refund_payment(SHOP, refund_command(payment.id, "r-1", 400))
    assert (unavailable.value.kind, unavailable.value.message, unavailable.value.retry_after_seconds) == (
        ErrorKind.UNAVAILABLE, "payment provider timed out; retry the refund with the same request_id", 5)
    assert await balance(container, payment.id) == (0, 1100)
    assert [r.status for r in await ledger(container, payment.id)] == [RefundStatus.PENDING]


async def test_a_provider_that_cannot_refund_is_refused_before_anything_is_reserved(container, monkeypatch):
    payment = await paid_payment(container.service)

    async def for_payment(payment):
        return SimpleNamespace(type=ProviderType.STELLAR)  # no refund method: not a RefundingProvider

    monkeypatch.setattr(container.service.providers, "for_payment", for_payment)
    with pytest.raises(PaymentsError) as refused:
        await container.service.refund_payment(SHOP, refund_command(payment.id, "r-1", 400))
    assert (refused.value.kind, refused.value.message) == (
        ErrorKind.FAILED_PRECONDITION, "stellar payments cannot be refunded through the service")
    assert await ledger(container, payment.id) == []


async def test_a_subscription_payment_is_refused_with_where_to_refund_it(container):
    payment = await paid_payment(container.service)
    async with container.db.transaction() as conn:
        await conn.execute(sa.update(payments).where(payments.c.id == payment.id)
                           .values(payment_type=int(PaymentType.RECURRING)))
    with pytest.raises(PaymentsError) as refused:
        await container.service.refund_payment(SHOP, refund_command(payment.id, "r-1", 400))
    assert (refused.value.kind, refused.value.message) == (
        ErrorKind.FAILED_PRECONDITION,
        "subscription payments cannot be refunded through the service; refund the invoice at the provider "
        "(the refund then shows on the payment)")
    assert await ledger(container, payment.id) == []
    assert await balance(container, payment.id) == (0, 1500)


async def test_amounts_at_the_edges_of_what_is_refundable(container):
    service = container.service
    payment = await paid_payment(service)
    cent = await service.refund_payment(SHOP, refund_command(payment.id, "r-cent", 1, "requested_by_customer"))
    assert (cent.refund.amount_cents, cent.refund.reason, cent.payment.refunded_cents, cent.payment.refundable_cents) == (
        1, "requested_by_customer", 1, 1499)
    with pytest.raises(PaymentsError) as too_much:
        await service.refund_payment(SHOP, refund_command(payment.id, "r-more", 1500))
    assert (too_much.value.kind, too_much.value.field, too_much.value.message) == (
        ErrorKind.FAILED_PRECONDITION, "amount_cents", "amount_cents 1500 is more than refundable_cents 1499")
    rest = await service.refund_payment(SHOP, refund_command(payment.id, "r-rest", 1499))
    assert (rest.payment.refunded_cents, rest.payment.refundable_cents) == (1500, 0)
    with pytest.raises(PaymentsError) as nothing:
        await service.refund_payment(SHOP, refund_command(payment.id, "r-none"))
    assert (nothing.value.kind, nothing.value.field, nothing.value.message) == (
        ErrorKind.FAILED_PRECONDITION, None, "nothing left to refund: refundable_cents is 0")
    assert [r.request_id for r in await ledger(container, payment.id)] == ["r-cent", "r-rest"]


# ---- the payment row's lock -------------------------------------------------------------------
# Each step that reads the payment to write it back takes the row's lock first. Two concurrent
# steps of the same payment are held at the point where each has read the payment (until both
# are there, or briefly): with the lock the second never gets there before the first commits.


class Meeting:
    """Holds each arriving task until `expected` tasks arrived, or `patience` seconds passed."""

    def __init__(self, expected: int = 2, patience: float = 0.2):
        self.expected, self.patience, self.arrived = expected, patience, 0
        self.everyone = asyncio.Event()

    async def meet(self) -> None:
        self.arrived += 1
        if self.arrived >= self.expected:
            self.everyone.set()
        try:
            await asyncio.wait_for(self.everyone.wait(), self.patience)
        except TimeoutError:
            pass  # the other task is waiting for our lock: go on alone

    def before(self, method):
        async def held(*args, **kwargs):
            await self.meet()
            return await method(*args, **kwargs)

        return held


def provider_meeting(container, payment, answer) -> None:
    """Both refunds reach the provider (no lock held there) before either is answered, so
    that both record their answers at the same time."""
    asked = Meeting(patience=5)

    async def met(payment, refund):
        await asked.meet()
        return await answer(payment, refund)

    stub_refunds(container, payment, met)


async def test_concurrent_refunds_of_everything_reserve_once_and_the_other_finds_nothing_left(container, monkeypatch):
    service = container.service
    payment = await paid_payment(service)
    monkeypatch.setattr(RefundRepository, "reserve", Meeting().before(RefundRepository.reserve))
    results = await asyncio.gather(*(service.refund_payment(SHOP, refund_command(payment.id, f"r-{i}")) for i in range(2)),
                                   return_exceptions=True)
    refunded = [r for r in results if not isinstance(r, Exception)]
    refused = [(r.kind, r.message) for r in results if isinstance(r, Exception)]
    assert [r.refund.amount_cents for r in refunded] == [1500]
    assert refused == [(ErrorKind.FAILED_PRECONDITION, "nothing left to refund: refundable_cents is 0")]


async def succeed_at_once(payment, refund):
    return RefundSnapshot(f"re_{refund.request_id}", refund.amount_cents, RefundStatus.SUCCEEDED, refund_id=refund.id)


async def test_concurrent_refunds_each_count_in_the_payments_totals(container, monkeypatch):
    service = container.service
    payment = await paid_payment(service)
    provider_meeting(container, payment, succeed_at_once)
    monkeypatch.setattr(RefundRepository, "find_by_provider_id", Meeting().before(RefundRepository.find_by_provider_id))
    await asyncio.gather(service.refund_payment(SHOP, refund_command(payment.id, "r-a", 400)),
                         service.refund_payment(SHOP, refund_command(payment.id, "r-b", 300)))
    assert await balance(container, payment.id) == (700, 800)
    assert await announced(container, payment.id) == ["payment.paid", "payment.refunded", "payment.refunded"]


async def test_concurrent_refusals_each_release_their_amount(container, monkeypatch):
    service = container.service
    payment = await paid_payment(service)

    async def refuse(payment, refund):
        raise ProviderError("charge is disputed", retryable=False, kind=ErrorKind.FAILED_PRECONDITION)

    provider_meeting(container, payment, refuse)
    monkeypatch.setattr(RefundRepository, "update", Meeting().before(RefundRepository.update))
    results = await asyncio.gather(service.refund_payment(SHOP, refund_command(payment.id, "r-a", 400)),
                                   service.refund_payment(SHOP, refund_command(payment.id, "r-b", 300)),
                                   return_exceptions=True)
    assert [type(r) for r in results] == [ProviderError, ProviderError]
    assert await balance(container, payment.id) == (0, 1500)
    assert [r.status for r in await ledger(container, payment.id)] == [RefundStatus.FAILED] * 2
