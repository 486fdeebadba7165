"""VerifyPayment's edges, in-process against a scripted provider: what is applied, audited
and logged for each answer (a status, the same status, none, a change made meanwhile by a
webhook); the per-payment claim (its boundary, the wait it tells, other payments' claims
untouched); and each failure of the provider and of the Stellar feed, with its code,
message and retry hint."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta

import pytest
import sqlalchemy as sa

import payments_svc.service.verify as verify_module
from payments_svc.auth.caller import Caller
from payments_svc.clock import utcnow
from payments_svc.db.tables import payments, verify_claims
from payments_svc.domain.enums import PaymentStatus, ProviderType
from payments_svc.domain.errors import ErrorKind, PaymentsError, ProviderError, ServiceUnavailableError
from payments_svc.jobs.changes import change_to
from payments_svc.providers.base import Verification
from payments_svc.providers.registry import ProviderRegistry
from payments_svc.providers.sandbox.provider import SandboxProvider
from payments_svc.providers.stellar.sync import FeedRefused, HorizonUnavailable
from payments_svc.repository.audit import AuditRepository
from payments_svc.repository.verify_claims import VerifyClaimRepository
from payments_svc.service.verify import VerifyService

from ..jobs.helpers import command

SHOP = Caller("shop", key_id="k-9")
S = PaymentStatus


class ScriptedVerifier(SandboxProvider):
    """The sandbox provider whose verify answers from `answers` (a Verification, or an
    exception to raise), after `delay` seconds and after running `meanwhile` (a webhook
    landing while the provider is asked)."""

    def __init__(self):
        super().__init__(public_base_url="http://127.0.0.1:1", webhook_secret="whsec_test")
        self.answers: list[Verification | Exception] = []
        self.delay = 0.0
        self.meanwhile = None
        self.asked: list[int] = []

    async def verify(self, payment):
        self.asked.append(payment.id)
        if self.meanwhile is not None:
            await self.meanwhile()
        if self.delay:
            await asyncio.sleep(self.delay)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


class RecordingLog:
    def __init__(self):
        self.lines: list[tuple[str, dict]] = []

    def info(self, event, **fields):
        self.lines.append((event, fields))


@pytest.fixture
async def setup(make_container, monkeypatch):
    container = await make_container(PAYMENTS_VERIFY_MIN_INTERVAL_SECONDS="30")
    provider = ScriptedVerifier()
    container.service.providers = ProviderRegistry([provider], ProviderType.SANDBOX)
    log = RecordingLog()
    monkeypatch.setattr(verify_module, "log", log)
    yield container.service, provider, log
    await container.close()


async def create(service, request_id: str):
    return (await service.create_payment(SHOP, command(request_id))).payment


async def audit_entries(service) -> list:
    async with service.db.read() as conn:
        return await AuditRepository(conn).list(action="payment.verified")


async def claim_row(service, payment_id: int):
    async with service.db.read() as conn:
        return await VerifyClaimRepository(conn).last(payment_id)


async def set_claim(service, payment_id: int, verified_at) -> None:
    async with service.db.transaction() as conn:
        await conn.execute(verify_claims.update().where(verify_claims.c.payment_id == payment_id)
                           .values(verified_at=verified_at))


# ---- what is applied, audited and logged ----------------------------------------------------


async def test_a_reported_status_is_applied_audited_and_logged(setup):
    service, provider, log = setup
    payment = await create(service, "v-paid")
    provider.answers = [Verification(S.PAID, "succeeded")]
    before = utcnow()
    result = await VerifyService(service).verify(SHOP, payment.id)
    assert (result.payment.id, result.payment.status, result.provider_status, result.changed, result.old_status) == (
        payment.id, S.PAID, "succeeded", True, S.PENDING)
    assert provider.asked == [payment.id]
    events = await service.list_payment_events(SHOP, payment.id, limit=10, after_event_id=0)
    assert (events[-1].event_type, events[-1].old_status, events[-1].new_status, events[-1].message) == (
        "payment_verified", S.PENDING, S.PAID, "verify: provider reports PAID")
    [entry] = await audit_entries(service)
    assert (entry.actor_service, entry.actor_key_id, entry.target_type, entry.target_id, entry.detail) == (
        "shop", "k-9", "payment", str(payment.id), "provider reports succeeded; PENDING -> PAID")
    assert log.lines == [("payment_verified", dict(payment_id=payment.id, provider="sandbox", reported="succeeded",
                                                   old_status="PENDING", new_status="PAID"))]
    assert before <= await claim_row(service, payment.id) <= utcnow()  # the first verification's claim


async def test_the_same_status_changes_nothing_and_is_audited_as_unchanged(setup):
    service, provider, log = setup
    payment = await create(service, "v-same")
    provider.answers = [Verification(S.PENDING, "open")]
    result = await VerifyService(service).verify(SHOP, payment.id)
    assert (result.payment, result.provider_status, result.changed, result.old_status) == (
        await service.get_payment(SHOP, payment.id), "open", False, S.PENDING)
    events = await service.list_payment_events(SHOP, payment.id, limit=10, after_event_id=0)
    assert "payment_verified" not in [e.event_type for e in events]
    [entry] = await audit_entries(service)
    assert entry.detail == "provider reports open; unchanged (PENDING)"
    assert log.lines == [("payment_verified", dict(payment_id=payment.id, provider="sandbox", reported="open",
                                                   old_status="PENDING", new_status="PENDING"))]


async def test_a_change_made_meanwhile_is_what_verify_returns(setup):
    """The provider reports nothing to apply, but a webhook paid the payment while it was
    asked: the answer is the payment as stored now, not as read before."""
    service, provider, log = setup
    payment = await create(service, "v-meanwhile")

    async def webhook():
        await service.change_status(payment.id, change_to(S.PAID, "payment_paid", "webhook"))

    provider.meanwhile = webhook
    provider.answers = [Verification(None, "no news")]
    result = await VerifyService(service).verify(SHOP, payment.id)
    assert (result.payment.status, result.changed, result.old_status, result.provider_status) == (
        S.PAID, True, S.PENDING, "no news")
    [entry] = await audit_entries(service)
    assert entry.detail == "provider reports no news; PENDING -> PAID"
    assert log.lines[0][1]["new_status"] == "PAID"


async def test_a_payment_whose_create_has_not_finished_is_refused_before_any_claim(setup):
    service, provider, _ = setup
    payment = await create(service, "v-unfinished")
    async with service.db.transaction() as conn:
        await conn.execute(payments.update().where(payments.c.id == payment.id).values(provider_payment_id=None))
    with pytest.raises(PaymentsError) as refused:
        await VerifyService(service).verify(SHOP, payment.id)
    assert refused.value.kind == ErrorKind.FAILED_PRECONDITION
    assert refused.value.message == ("the payment has no provider object yet (its create has not finished): "
                                     "retry the create with the same request_id, or wait for reconcile")
    assert provider.asked == [] and await claim_row(service, payment.id) is None


# ---- the claim ---------------------------------------------------------------------------------


async def refused_wait(service, provider, payment_id: int) -> PaymentsError:
    provider.answers = [Verification(None, "unused")]
    with pytest.raises(PaymentsError) as refused:
        await VerifyService(service).verify(SHOP, payment_id)
    provider.answers = []
    return refused.value


async def test_a_refusal_tells_the_seconds_left_of_the_interval(setup):
    service, provider, _ = setup
    payment = await create(service, "v-wait")
    provider.answers = [Verification(None, "open")]
    await VerifyService(service).verify(SHOP, payment.id)
    await set_claim(service, payment.id, utcnow() - timedelta(seconds=10))
    refused = await refused_wait(service, provider, payment.id)
    assert (refused.kind, refused.retry_after_seconds) == (ErrorKind.RESOURCE_EXHAUSTED, 20)
    assert refused.message == "this payment was verified less than 30 s ago; retry in 20 s"
    assert provider.asked == [payment.id]  # the refused one never reached the provider
    # At most a second left: retry in 1 s (rounded up, never 0).
    last = utcnow() - timedelta(seconds=29)
    await set_claim(service, payment.id, last)
    refused = await refused_wait(service, provider, payment.id)
    assert refused.retry_after_seconds == 1 and refused.message.endswith("retry in 1 s")
    assert await claim_row(service, payment.id) == last  # a refusal leaves the claim as it was
    # Once the interval has passed the verification is claimed again, stamped now.
    await set_claim(service, payment.id, utcnow() - timedelta(seconds=30.5))
    provider.answers = [Verification(None, "open")]
    before = utcnow()
    await VerifyService(service).verify(SHOP, payment.id)
    assert before <= await claim_row(service, payment.id) <= utcnow()
    assert provider.asked == [payment.id, payment.id]


async def test_a_claim_gone_between_the_two_looks_is_retried_in_a_second(setup, monkeypatch):
    service, provider, _ = setup
    payment = await create(service, "v-gone")
    provider.answers = [Verification(None, "open")]
    await VerifyService(service).verify(SHOP, payment.id)

    async def no_row(self, payment_id):
        return None

    monkeypatch.setattr(VerifyClaimRepository, "last", no_row)
    refused = await refused_wait(service, provider, payment.id)
    assert (refused.kind, refused.retry_after_seconds) == (ErrorKind.RESOURCE_EXHAUSTED, 1)
    assert refused.message == "this payment was verified less than 30 s ago; retry in 1 s"


async def test_the_claim_repository_at_its_boundaries(setup):
    service, _, _ = setup
    first, second = await create(service, "v-c1"), await create(service, "v-c2")
    t0 = utcnow().replace(microsecond=0)
    t1 = t0 + timedelta(seconds=30)
    async with service.db.transaction() as conn:
        claims = VerifyClaimRepository(conn)
        assert await claims.last(first.id) is None
        assert await claims.insert(first.id, t0) is True
        assert await claims.insert(second.id, t0) is True
        assert await claims.insert(first.id, t1) is False  # one row per payment; the first stays
        assert (await claims.last(first.id), await claims.last(second.id)) == (t0, t0)
        # Taken when the last one was at or before not_after, and only that payment's.
        assert await claims.take(first.id, t1, t0 - timedelta(microseconds=1)) is False
        assert await claims.take(first.id, t1, t0) is True
        assert (await claims.last(first.id), await claims.last(second.id)) == (t1, t0)
        assert await claims.take(first.id, t1 + timedelta(seconds=1), t0) is False
    rows = await _all_claims(service)
    assert rows == {first.id: t1, second.id: t0}


async def _all_claims(service) -> dict:
    async with service.db.read() as conn:
        return dict((await conn.execute(sa.select(verify_claims.c.payment_id, verify_claims.c.verified_at))).all())


# ---- the provider's and the feed's failures ---------------------------------------------------


async def test_a_provider_that_does_not_answer_in_time_is_unavailable(setup):
    service, provider, log = setup
    service.settings = dataclasses.replace(service.settings, provider_timeout_seconds=0.05)
    payment = await create(service, "v-slow")
    provider.delay = 0.5
    provider.answers = [Verification(S.PAID, "paid")]
    with pytest.raises(ServiceUnavailableError) as refused:
        await VerifyService(service).verify(SHOP, payment.id)
    assert (refused.value.kind, refused.value.retry_after_seconds) == (ErrorKind.UNAVAILABLE, 5)
    assert refused.value.message == "payment provider timed out; retry the verification"
    assert (await service.get_payment(SHOP, payment.id)).status == S.PENDING
    assert await audit_entries(service) == [] and log.lines == []


async def test_a_retryable_provider_error_is_unavailable_and_another_passes_through(setup):
    service, provider, _ = setup
    first, second = await create(service, "v-e1"), await create(service, "v-e2")
    provider.answers = [ProviderError("stripe is down", retryable=True)]
    with pytest.raises(ServiceUnavailableError) as unavailable:
        await VerifyService(service).verify(SHOP, first.id)
    assert (unavailable.value.kind, unavailable.value.message) == (
        ErrorKind.UNAVAILABLE, "stripe is down; retry the verification")
    rejected = ProviderError("no such session", retryable=False)
    provider.answers = [rejected]
    with pytest.raises(ProviderError) as passed:
        await VerifyService(service).verify(SHOP, second.id)
    assert passed.value is rejected


async def test_a_feed_answer_reads_the_feed_and_reports_what_it_applied(setup, monkeypatch):
    service, provider, log = setup
    payment = await create(service, "v-feed")
    synced = []

    async def sync(db, settings):
        synced.append((db, settings))
        return 3

    monkeypatch.setattr(verify_module, "sync_stellar_payments", sync)
    provider.answers = [Verification(S.PAID, "pending on ledger", read_feed=True)]  # its status is not applied
    result = await VerifyService(service).verify(SHOP, payment.id)
    assert synced == [(service.db, service.settings)]
    assert (result.payment.status, result.changed, result.provider_status) == (
        S.PENDING, False, "pending on ledger: 3 new record(s) applied")
    [entry] = await audit_entries(service)
    assert entry.detail == "provider reports pending on ledger: 3 new record(s) applied; unchanged (PENDING)"


@pytest.mark.parametrize(("raised", "kind", "message", "retry_after"), [
    (HorizonUnavailable("HTTP 429", retry_after=2.2), ErrorKind.UNAVAILABLE,
     "Horizon unavailable (HTTP 429); retry the verification", 3),
    (HorizonUnavailable("connection refused"), ErrorKind.UNAVAILABLE,
     "Horizon unavailable (connection refused); retry the verification", 5),  # the default hint
    (FeedRefused("another network"), ErrorKind.FAILED_PRECONDITION, "the Stellar feed is refused: another network", None),
])
async def test_a_feed_that_cannot_be_read_fails_the_verification(setup, monkeypatch, raised, kind, message, retry_after):
    service, provider, _ = setup
    payment = await create(service, "v-feed-fails")

    async def sync(db, settings):
        raise raised

    monkeypatch.setattr(verify_module, "sync_stellar_payments", sync)
    provider.answers = [Verification(None, "pending", read_feed=True)]
    with pytest.raises(PaymentsError) as failed:
        await VerifyService(service).verify(SHOP, payment.id)
    assert (type(failed.value), failed.value.kind, failed.value.message, failed.value.retry_after_seconds) == (
        ServiceUnavailableError if kind == ErrorKind.UNAVAILABLE else PaymentsError, kind, message, retry_after)
    assert failed.value.__suppress_context__ and failed.value.__cause__ is None
