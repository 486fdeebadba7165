"""The service layer on SQLite and MariaDB: idempotency, two-phase create,
transitions, provider callbacks, scoping."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from datetime import timedelta

import pytest
import sqlalchemy as sa

from payments_svc.auth.caller import Caller
from payments_svc.clock import utcnow
from payments_svc.db.tables import callback_deliveries, payment_callbacks, payments
from payments_svc.domain.enums import CallbackStatus, PaymentStatus, ProviderType
from payments_svc.domain.errors import (
    CallbackRejectedError,
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
from payments_svc.domain.payment import CreatePaymentCommand, ListPaymentsQuery, ProviderCallback
from payments_svc.providers.base import CancelOutcome
from payments_svc.providers.registry import ProviderRegistry
from payments_svc.providers.sandbox.provider import SandboxProvider

SHOP = Caller("shop")


def command(request_id: str = "req-1", **overrides) -> CreatePaymentCommand:
    fields = dict(
        request_id=request_id, caller_service="shop", resource_type="order", resource_id="o-1", customer_ref="",
        amount_cents=1500, currency="usd", payment_method=1, payment_type=1, provider=0,
        recurring_interval="", recurring_interval_count=0, status_callback_url="https://shop.example/cb",
        success_url="", cancel_url="", metadata={"cart": "42"},
    )
    fields.update(overrides)
    return CreatePaymentCommand(**fields)


class ScriptedProvider(SandboxProvider):
    """The sandbox provider with a script: counts calls, can be slow, fail or report paid."""

    def __init__(self, **kwargs):
        super().__init__(public_base_url="http://127.0.0.1:1", webhook_secret="whsec_test")
        self.create_calls: list[str] = []
        self.cancel_calls = 0
        self.canceled_objects: list[str | None] = []
        self.delay = 0.0
        self.gate: asyncio.Event | None = None  # when set, creates wait for it (a provider call in flight)
        self.create_entered = asyncio.Event()
        self.create_errors: list[Exception] = []
        self.cancel_outcome = CancelOutcome.CANCELED

    async def create_checkout(self, payment, idempotency_key):
        self.create_calls.append(idempotency_key)
        self.create_entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.create_errors:
            raise self.create_errors.pop(0)
        return await super().create_checkout(payment, idempotency_key)

    async def cancel(self, payment, idempotency_key):
        self.cancel_calls += 1
        self.canceled_objects.append(payment.provider_payment_id)
        return self.cancel_outcome


@pytest.fixture
async def service(container):
    provider = ScriptedProvider()
    container.service.providers = ProviderRegistry([provider], ProviderType.SANDBOX)
    container.service.provider = provider  # handle for the tests
    return container.service


def signed(provider: SandboxProvider, payment, action: str) -> ProviderCallback:
    body, signature = provider.build_event(payment, action)
    return ProviderCallback(request_id="cb", provider="sandbox", callback_hash=payment.provider_callback_hash,
                            signature=signature, payload=body)


async def test_create_then_replay_returns_the_same_payment(service):
    first = await service.create_payment(SHOP, command())
    assert not first.replayed
    assert first.payment.status == PaymentStatus.PENDING
    assert first.payment.currency == "USD" and first.payment.refundable_cents == 1500
    again = await service.create_payment(SHOP, command())
    assert again.replayed and again.payment.id == first.payment.id
    assert len(service.provider.create_calls) == 1


async def test_same_key_with_other_parameters_is_refused(service):
    await service.create_payment(SHOP, command())
    with pytest.raises(IdempotencyKeyReusedError) as err:
        await service.create_payment(SHOP, command(amount_cents=1600))
    assert err.value.kind == ErrorKind.IDEMPOTENCY_KEY_REUSED


async def test_keys_are_per_caller_and_case_sensitive(service):
    a = await service.create_payment(SHOP, command("k"))
    b = await service.create_payment(Caller("other"), command("k", caller_service="other"))
    c = await service.create_payment(SHOP, command("K"))
    assert len({a.payment.id, b.payment.id, c.payment.id}) == 3


async def test_fifty_concurrent_identical_creates_make_one_payment_and_one_provider_call(service):
    service.provider.delay = 0.2
    results = await asyncio.gather(*(service.create_payment(SHOP, command("race")) for _ in range(50)), return_exceptions=True)
    payments_seen = {r.payment.id for r in results if not isinstance(r, Exception)}
    errors = [r for r in results if isinstance(r, Exception)]
    assert len(payments_seen) == 1
    assert all(isinstance(e, IdempotencyInProgressError) for e in errors), errors
    assert len(service.provider.create_calls) == 1
    async with service.db.read() as conn:
        count = (await conn.execute(sa.select(sa.func.count()).select_from(payments))).scalar()
    assert count == 1


async def test_retryable_provider_failure_leaves_a_row_the_retry_finishes(service):
    service.provider.create_errors = [ProviderError("provider is down", retryable=True)]
    with pytest.raises(ServiceUnavailableError):
        await service.create_payment(SHOP, command())
    async with service.db.read() as conn:
        row = (await conn.execute(sa.select(payments.c.status))).one()
    assert row.status == PaymentStatus.CREATED
    retried = await service.create_payment(SHOP, command())
    assert retried.payment.status == PaymentStatus.PENDING
    # Both calls carried the same idempotency key: the provider can never create two objects.
    assert len(set(service.provider.create_calls)) == 1 and len(service.provider.create_calls) == 2


async def test_provider_timeout_is_unavailable_and_releases_the_key(make_container):
    container = await make_container(PAYMENTS_PROVIDER_TIMEOUT_SECONDS="1")
    provider = ScriptedProvider()
    provider.delay = 2
    container.service.providers = ProviderRegistry([provider], ProviderType.SANDBOX)
    with pytest.raises(ServiceUnavailableError, match="timed out"):
        await container.service.create_payment(SHOP, command())
    provider.delay = 0
    assert (await container.service.create_payment(SHOP, command())).payment.status == PaymentStatus.PENDING
    await container.close()


async def test_provider_rejection_fails_the_payment_and_replays_the_error(service):
    service.provider.create_errors = [ProviderError("currency not supported", retryable=False)]
    with pytest.raises(ProviderError, match="currency not supported"):
        await service.create_payment(SHOP, command())
    with pytest.raises(ProviderError, match="currency not supported") as again:
        await service.create_payment(SHOP, command())
    assert again.value.kind == ErrorKind.INVALID_ARGUMENT
    assert len(service.provider.create_calls) == 1
    async with service.db.read() as conn:
        assert (await conn.execute(sa.select(payments.c.status))).scalar() == PaymentStatus.FAILED


async def test_crash_between_phases_is_finished_by_a_replay_after_the_lease(service):
    first = await service.create_payment(SHOP, command())
    # Make it look like a process died after phase 1: CREATED, lease held.
    async with service.db.transaction() as conn:
        await conn.execute(payments.update().values(status=int(PaymentStatus.CREATED), provider_payment_id=None,
                                                    checkout_url=None, create_lease_until=utcnow() + timedelta(minutes=5)))
    with pytest.raises(IdempotencyInProgressError):
        await service.create_payment(SHOP, command())
    async with service.db.transaction() as conn:
        await conn.execute(payments.update().values(create_lease_until=utcnow() - timedelta(seconds=1)))
    resumed = await service.create_payment(SHOP, command())
    assert resumed.replayed and resumed.payment.id == first.payment.id
    assert resumed.payment.status == PaymentStatus.PENDING and resumed.payment.checkout_url


async def test_validation_messages(service):
    cases = [
        (dict(request_id=" "), "request_id is required"),
        (dict(caller_service=""), "caller_service is required"),
        (dict(amount_cents=0), "amount_cents must be > 0"),
        (dict(currency="usdx"), "currency must be 3 letters"),
        (dict(currency="12$"), "currency must be 3 letters"),
        (dict(payment_method=3), "payment_method must be hosted_card or payment_link"),
        (dict(payment_type=0), "payment_type must be one_time or recurring"),
        (dict(provider=7), "provider is invalid"),
        (dict(status_callback_url=""), "status_callback_url is required"),
        (dict(status_callback_url="ftp://x/y"), "status_callback_url must be an absolute http or https URL"),
        (dict(payment_type=2, recurring_interval="fortnight", recurring_interval_count=1), "recurring_interval must be day, week, month, or year"),
        (dict(payment_type=2, recurring_interval="month", recurring_interval_count=0), "recurring_interval_count must be > 0"),
        (dict(resource_id="x" * 256), "resource_id must be at most 255 characters"),
        (dict(metadata={"k" * 41: "v"}), "must be at most 40 characters"),
        (dict(metadata={f"k{i}": "v" for i in range(51)}), "at most 50 keys"),
        (dict(amount_cents=10**15), "amount_cents must be <="),
    ]
    for overrides, message in cases:
        with pytest.raises(ValidationError, match=message.replace("$", r"\$")):
            await service.create_payment(SHOP, command(**overrides))
    assert service.provider.create_calls == []


async def test_recurring_interval_is_normalised_and_one_time_ignores_it(service):
    recurring = await service.create_payment(SHOP, command("r", payment_type=2, recurring_interval=" Month ", recurring_interval_count=1))
    assert recurring.payment.recurring_interval == "month"
    one_time = await service.create_payment(SHOP, command("o", recurring_interval="month", recurring_interval_count=3))
    assert one_time.payment.recurring_interval is None and one_time.payment.recurring_interval_count is None


async def test_caller_scoping(service):
    with pytest.raises(PermissionDeniedError):
        await service.create_payment(SHOP, command(caller_service="billing"))
    mine = (await service.create_payment(SHOP, command("a"))).payment
    theirs = (await service.create_payment(Caller("billing"), command("b", caller_service="billing"))).payment
    with pytest.raises(NotFoundError):
        await service.get_payment(SHOP, theirs.id)
    with pytest.raises(NotFoundError):
        await service.cancel_payment(SHOP, theirs.id)
    assert [p.id for p in await service.list_payments(SHOP, ListPaymentsQuery())] == [mine.id]
    with pytest.raises(PermissionDeniedError):
        await service.list_payments(SHOP, ListPaymentsQuery(caller_service="billing"))
    gateway = Caller("gateway", frozenset({"*"}))
    assert {p.id for p in await service.list_payments(gateway, ListPaymentsQuery())} == {mine.id, theirs.id}
    assert (await service.get_payment(gateway, theirs.id)).id == theirs.id


async def test_cancel_rules(service):
    payment = (await service.create_payment(SHOP, command())).payment
    canceled = await service.cancel_payment(SHOP, payment.id, "  customer left ")
    assert canceled.status == PaymentStatus.CANCELED and canceled.cancel_reason == "customer left"
    assert service.provider.cancel_calls == 1
    again = await service.cancel_payment(SHOP, payment.id)
    assert again.status == PaymentStatus.CANCELED
    async with service.db.read() as conn:
        deliveries = (await conn.execute(sa.select(sa.func.count()).select_from(callback_deliveries))).scalar()
    assert deliveries == 1  # a repeated cancel does not announce twice

    paid = (await service.create_payment(SHOP, command("p"))).payment
    await service.handle_provider_callback(signed(service.provider, paid, "pay"))
    with pytest.raises(InvalidTransitionError, match="invalid status: paid payments cannot be canceled"):
        await service.cancel_payment(SHOP, paid.id)


async def _create_held_at_the_provider(service, request_id: str):
    """Starts a create and returns (its task, the CREATED row) while the provider call is in flight."""
    service.provider.gate = asyncio.Event()
    service.provider.create_entered.clear()
    task = asyncio.create_task(service.create_payment(SHOP, command(request_id)))
    await asyncio.wait_for(service.provider.create_entered.wait(), 10)
    async with service.db.read() as conn:
        row = (await conn.execute(sa.select(payments.c.id, payments.c.status).where(payments.c.request_id == request_id))).one()
    assert row.status == PaymentStatus.CREATED
    return task, row.id


async def _events(service, payment_id: int) -> list[str]:
    return [e.event_type for e in await service.list_payment_events(SHOP, payment_id, limit=100, after_event_id=0)]


async def test_cancel_while_the_provider_create_is_in_flight_wins(service):
    # The finish of a create must not overwrite a cancel that landed meanwhile: the
    # provider's object is stopped there instead, and the payment stays CANCELED.
    task, payment_id = await _create_held_at_the_provider(service, "race-cancel")
    canceled = await service.cancel_payment(SHOP, payment_id, "changed mind")
    assert canceled.status == PaymentStatus.CANCELED
    service.provider.gate.set()
    created = (await task).payment
    assert created.status == PaymentStatus.CANCELED and created.provider_payment_id
    final = await service.get_payment(SHOP, payment_id)
    assert final.status == PaymentStatus.CANCELED and final.provider_payment_id == created.provider_payment_id
    assert service.provider.canceled_objects == [created.provider_payment_id]
    assert await _events(service, payment_id) == ["payment_created", "payment_canceled", "checkout_created_after_end"]
    # And it cannot be paid afterwards.
    await service.handle_provider_callback(signed(service.provider, final, "pay"))
    assert (await service.get_payment(SHOP, payment_id)).status == PaymentStatus.CANCELED


async def test_expiry_while_the_provider_create_is_in_flight_wins(service):
    from payments_svc.jobs.expire import PendingExpirer

    task, payment_id = await _create_held_at_the_provider(service, "race-expire")
    # The provider call outlived the create lease and the pending timeout: the expire job takes it.
    async with service.db.transaction() as conn:
        await conn.execute(payments.update().where(payments.c.id == payment_id).values(
            create_lease_until=utcnow() - timedelta(seconds=1), created_at=utcnow() - timedelta(days=1)))
    result = await PendingExpirer(service).run_batch(asyncio.Event())
    assert (await service.get_payment(SHOP, payment_id)).status == PaymentStatus.EXPIRED, result
    service.provider.gate.set()
    created = (await task).payment
    assert created.status == PaymentStatus.EXPIRED and created.provider_payment_id
    assert (await service.get_payment(SHOP, payment_id)).status == PaymentStatus.EXPIRED
    assert service.provider.canceled_objects == [created.provider_payment_id]
    assert await _events(service, payment_id) == ["payment_created", "payment_expired", "checkout_created_after_end"]


async def test_cancel_when_the_provider_says_paid_marks_paid(service):
    payment = (await service.create_payment(SHOP, command())).payment
    service.provider.cancel_outcome = CancelOutcome.ALREADY_PAID
    with pytest.raises(InvalidTransitionError, match="paid"):
        await service.cancel_payment(SHOP, payment.id)
    assert (await service.get_payment(SHOP, payment.id)).status == PaymentStatus.PAID


async def test_provider_callback_applies_each_event_once(service):
    payment = (await service.create_payment(SHOP, command())).payment
    callback = signed(service.provider, payment, "pay")
    await service.handle_provider_callback(callback)
    await service.handle_provider_callback(callback)  # the provider retried
    assert (await service.get_payment(SHOP, payment.id)).status == PaymentStatus.PAID
    events = await service.list_payment_events(SHOP, payment.id, limit=0, after_event_id=0)
    assert [e.event_type for e in events] == ["payment_created", "checkout_created", "payment.succeeded"]
    async with service.db.read() as conn:
        statuses = sorted((await conn.execute(sa.select(payment_callbacks.c.status))).scalars())
        announced = (await conn.execute(sa.select(callback_deliveries.c.event_type))).scalars().all()
    assert statuses == [CallbackStatus.PROCESSED, CallbackStatus.DUPLICATE]
    assert announced == ["payment.paid"]


async def test_late_events_never_regress_a_status(service):
    payment = (await service.create_payment(SHOP, command())).payment
    await service.handle_provider_callback(signed(service.provider, payment, "pay"))
    await service.handle_provider_callback(signed(service.provider, payment, "decline"))
    current = await service.get_payment(SHOP, payment.id)
    assert current.status == PaymentStatus.PAID and current.failure_reason is None
    events = await service.list_payment_events(SHOP, payment.id, limit=0, after_event_id=0)
    assert "not an allowed transition" in events[-1].message


async def test_paid_after_cancel_is_recorded_for_attention(service):
    payment = (await service.create_payment(SHOP, command())).payment
    await service.cancel_payment(SHOP, payment.id)
    await service.handle_provider_callback(signed(service.provider, payment, "pay"))
    current = await service.get_payment(SHOP, payment.id)
    assert current.status == PaymentStatus.CANCELED and current.attention_required
    events = await service.list_payment_events(SHOP, payment.id, limit=0, after_event_id=0)
    assert events[-1].needs_attention and events[-1].event_type == "payment.succeeded"


async def test_cancel_racing_paid_ends_valid_with_both_recorded(service):
    for i in range(10):
        payment = (await service.create_payment(SHOP, command(f"race-{i}"))).payment
        results = await asyncio.gather(
            service.cancel_payment(SHOP, payment.id),
            service.handle_provider_callback(signed(service.provider, payment, "pay")),
            return_exceptions=True,
        )
        current = await service.get_payment(SHOP, payment.id)
        events = {e.event_type: e for e in await service.list_payment_events(SHOP, payment.id, limit=0, after_event_id=0)}
        assert "payment.succeeded" in events
        if current.status == PaymentStatus.PAID:
            assert isinstance(results[0], InvalidTransitionError) and "payment_canceled" not in events
            # A cancel that read PENDING and lost the race records its attempt (cancel_rejected:
            # tests/integration/test_group_commit.py makes that order certain); one that already
            # read PAID is refused before deciding anything, like any cancel of a paid payment.
            # Which of the two happens here is up to the scheduler.
        else:
            assert current.status == PaymentStatus.CANCELED and current.attention_required
            assert "payment_canceled" in events and events["payment.succeeded"].needs_attention


async def test_rejected_and_unknown_callbacks_are_recorded(service):
    payment = (await service.create_payment(SHOP, command())).payment
    good = signed(service.provider, payment, "pay")
    with pytest.raises(CallbackRejectedError):
        await service.handle_provider_callback(dataclasses.replace(good, signature="t=1,v1=00"))
    with pytest.raises(NotFoundError):
        await service.handle_provider_callback(dataclasses.replace(good, callback_hash="no-such-hash"))
    with pytest.raises(ValidationError, match="provider is not supported"):
        await service.handle_provider_callback(dataclasses.replace(good, provider="paypal"))
    with pytest.raises(ValidationError, match="provider signature is required"):
        await service.handle_provider_callback(dataclasses.replace(good, signature=""))
    async with service.db.read() as conn:
        rows = (await conn.execute(sa.select(payment_callbacks.c.status, payment_callbacks.c.error))).all()
    assert [r.status for r in rows] == [CallbackStatus.REJECTED, CallbackStatus.REJECTED]
    assert rows[0].error.startswith("provider callback validation failed")
    assert rows[1].error == "payment not found for callback hash"


async def test_list_filters_and_bounds(service):
    for i in range(3):
        await service.create_payment(SHOP, command(f"l{i}", resource_id=f"o{i}"))
    listed = await service.list_payments(SHOP, ListPaymentsQuery(limit=2))
    assert [p.request_id for p in listed] == ["l2", "l1"]
    assert [p.request_id for p in await service.list_payments(SHOP, ListPaymentsQuery(resource_id="o0"))] == ["l0"]
    assert await service.list_payments(SHOP, ListPaymentsQuery(status=PaymentStatus.PAID)) == []
    with pytest.raises(ValidationError, match="limit must be between 1 and 500"):
        await service.list_payments(SHOP, ListPaymentsQuery(limit=501))
    with pytest.raises(ValidationError, match="offset must be >= 0"):
        await service.list_payments(SHOP, ListPaymentsQuery(offset=-1))


async def test_metadata_round_trips(service):
    payment = (await service.create_payment(SHOP, command(metadata={"ünï": "cødé", "a": ""}))).payment
    assert (await service.get_payment(SHOP, payment.id)).metadata == {"ünï": "cødé", "a": ""}
    async with service.db.read() as conn:
        stored = (await conn.execute(sa.select(payments.c.metadata_json))).scalar()
    assert json.loads(stored) == {"ünï": "cødé", "a": ""}
