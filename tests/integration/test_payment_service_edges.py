"""PaymentService's exact answers, in-process: every field of a created payment (and of the
row its first phase reserves), idempotent replays of failed and finished creates, the
create lease (claim, release), provider timeouts and errors on create and cancel with
their messages, cancel's reason, events, callbacks and audit entry, the events page's
bounds, listing filters and paging, and the status-change machinery under it
(change_status, write_grouped, apply_status_change, the payments repository)."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
from datetime import timedelta

import pytest
import sqlalchemy as sa

from payments_svc.auth.caller import Caller
from payments_svc.clock import utcnow
from payments_svc.db.tables import callback_deliveries, payment_events, payments
from payments_svc.domain.enums import PaymentMethod, PaymentStatus, PaymentType, ProviderType
from payments_svc.domain.errors import (
    ErrorKind,
    InvalidTransitionError,
    NotFoundError,
    PermissionDeniedError,
    ProviderError,
    ServiceUnavailableError,
    ValidationError,
)
from payments_svc.domain.payment import ListPaymentsQuery, ProviderCallback
from payments_svc.domain.refund import RefundCommand
from payments_svc.providers.base import CancelOutcome, provider_idempotency_key
from payments_svc.providers.registry import ProviderRegistry
from payments_svc.repository import payments as payments_repository
from payments_svc.repository.audit import AuditRepository
from payments_svc.repository.events import EventRepository
from payments_svc.repository.payments import MAX_ROW_ID, DuplicatePaymentKey, PaymentRepository
from payments_svc.resilience.breaker import Breaker, CircuitOpenError
from payments_svc.resilience.routing import Router, parse_rules
from payments_svc.resilience.store import LocalStore
from payments_svc.service import payments as payments_module
from payments_svc.service.status_changes import ConcurrentUpdate, StatusChange, apply_status_change, plan_transition

from ..conftest import ALL_BACKENDS, BACKENDS, fresh_database
from .test_payment_service import SHOP, ScriptedProvider, command, signed

# SQLite (and MariaDB under the mysql mark) by default: every test reruns for each mutant it
# reaches. The repository's per-dialect paths also run on PostgreSQL (ALL_BACKENDS below).
database = pytest.fixture(params=BACKENDS, name="database")(fresh_database)
every_backend = pytest.mark.parametrize("database", ALL_BACKENDS, indirect=True)

CALLBACK_BASE = "https://hooks.example/in/"  # a trailing slash: the service strips it


class Provider(ScriptedProvider):
    """ScriptedProvider that also records each call's payment and idempotency key, and can
    answer a create with another initial status, or a cancel with an error."""

    def __init__(self, provider_type: ProviderType = ProviderType.SANDBOX):
        super().__init__()
        self.type = provider_type
        self.created: list = []  # (payment, key) per create call
        self.cancels: list = []  # (payment, key) per cancel call
        self.initial_status = PaymentStatus.PENDING
        self.cancel_error: Exception | None = None
        self.cancel_gate: asyncio.Event | None = None
        self.refused_currency = ""  # validate refuses it, as a provider with its own currency rule does

    def validate(self, command):
        if command.currency == self.refused_currency:
            raise ValidationError(f"{self.type.code} takes no {command.currency}", field="currency")
        super().validate(command)

    async def create_checkout(self, payment, idempotency_key):
        self.created.append((payment, idempotency_key))
        checkout = await super().create_checkout(payment, idempotency_key)
        return dataclasses.replace(checkout, initial_status=self.initial_status)

    async def cancel(self, payment, idempotency_key):
        self.cancels.append((payment, idempotency_key))
        if self.cancel_gate is not None:
            await self.cancel_gate.wait()
        if self.cancel_error is not None:
            raise self.cancel_error
        return await super().cancel(payment, idempotency_key)


@pytest.fixture
async def svc(make_container):
    container = await make_container(PAYMENTS_PROVIDER_CALLBACK_BASE_URL=CALLBACK_BASE,
                                     PAYMENTS_CALLBACK_ALLOWED_HOSTS="shop.example")
    provider = Provider()
    container.service.providers = ProviderRegistry([provider], ProviderType.SANDBOX)
    container.service.provider = provider  # handle for the tests
    yield container.service
    await container.close()


def fast_timeout(service) -> None:
    service.settings = dataclasses.replace(service.settings, provider_timeout_seconds=0.05)


async def stored(service, payment_id: int):
    async with service.db.read() as conn:
        return await PaymentRepository(conn).get(payment_id)


async def set_row(service, payment_id: int, **values) -> None:
    async with service.db.transaction() as conn:
        await conn.execute(payments.update().where(payments.c.id == payment_id).values(**values))


async def events(service, payment_id: int):
    async with service.db.read() as conn:
        return await EventRepository(conn).list(payment_id, limit=500, after_id=0)


async def event_rows(service, payment_id: int):
    """The raw rows (payload_json is not part of a PaymentEvent)."""
    async with service.db.read() as conn:
        return (await conn.execute(sa.select(payment_events).where(payment_events.c.payment_id == payment_id)
                                   .order_by(payment_events.c.id))).all()


async def deliveries(service, payment_id: int) -> list[tuple[str, int]]:
    async with service.db.read() as conn:
        rows = await conn.execute(sa.select(callback_deliveries.c.event_type, callback_deliveries.c.payment_status)
                                  .where(callback_deliveries.c.payment_id == payment_id).order_by(callback_deliveries.c.id))
        return [(r[0], r[1]) for r in rows]


async def audit_entries(service):
    async with service.db.read() as conn:
        return await AuditRepository(conn).list()


async def cancel_while_creating(svc, request_id: str):
    """Starts a create that waits inside the provider call and cancels its reserved payment
    meanwhile: (the create's task, the reserved payment, the canceled payment). The test
    sets svc.provider.gate to let the create go on."""
    svc.provider.gate = asyncio.Event()
    task = asyncio.create_task(svc.create_payment(SHOP, command(request_id)))
    await asyncio.wait_for(svc.provider.create_entered.wait(), 10)
    [(reserved, _)] = svc.provider.created
    return task, reserved, await svc.cancel_payment(SHOP, reserved.id, "")


def approx_now(moment, before, after) -> bool:
    return before - timedelta(seconds=1) <= moment <= after + timedelta(seconds=1)


# ---- create ------------------------------------------------------------------------


@every_backend
async def test_a_created_payment_has_every_field_the_command_and_provider_gave_it(svc):
    cmd = command("full", customer_ref=" cust-9 ", currency=" eur ", success_url="https://shop.example/ok",
                  cancel_url="https://shop.example/back", metadata={"cart": "42", "ünï": "cødé"}, payment_method=2)
    before = utcnow()
    result = await svc.create_payment(SHOP, cmd)
    after = utcnow()
    p = result.payment
    assert (result.replayed, result.routing_rule) == (False, "")
    [(reserved, key)] = svc.provider.created
    hash_ = reserved.provider_callback_hash
    assert key == provider_idempotency_key("shop", "full", "create")
    assert p.provider_payment_id == "sbx_" + hashlib.sha256(key.encode()).hexdigest()[:24]
    expected = dict(
        id=reserved.id, request_id="full", caller_service="shop",
        request_fingerprint=cmd.normalized().fingerprint(ProviderType.SANDBOX), resource_type="order", resource_id="o-1",
        customer_ref="cust-9", amount_cents=1500, currency="EUR", status=PaymentStatus.PENDING,
        payment_method=PaymentMethod.PAYMENT_LINK, payment_type=PaymentType.ONE_TIME, provider=ProviderType.SANDBOX,
        recurring_interval=None, recurring_interval_count=None, provider_subscription_id=None,
        checkout_url=f"http://127.0.0.1:1/sandbox/checkout/{hash_}", provider_callback_hash=hash_,
        provider_callback_url=f"https://hooks.example/in/sandbox/{hash_}", status_callback_url="https://shop.example/cb",
        success_url="https://shop.example/ok", cancel_url="https://shop.example/back", refunded_cents=0,
        refundable_cents=1500, received_cents=0, metadata={"cart": "42", "ünï": "cødé"}, cancel_reason=None,
        failure_reason=None, create_error_code=None, attention_required=False, create_lease_until=None,
        provider_account_id=None,
    )
    for name, value in expected.items():
        assert getattr(p, name) == value, name
    assert len(hash_) == 36 and hash_.count("-") == 4  # a uuid4
    assert approx_now(p.created_at, before, after) and p.created_at <= p.updated_at <= after + timedelta(seconds=1)
    # The first phase's row: CREATED, leased for create_lease_seconds from its creation.
    assert reserved.status == PaymentStatus.CREATED and reserved.provider_payment_id is None
    assert reserved.checkout_url is None and reserved.updated_at == reserved.created_at == p.created_at
    assert reserved.create_lease_until == reserved.created_at + timedelta(seconds=60)
    assert reserved.provider_callback_url == p.provider_callback_url and reserved.customer_ref == "cust-9"
    row = await stored(svc, p.id)
    for name, value in expected.items():
        assert getattr(row, name) == value, name
    assert type(row.status) is PaymentStatus and type(row.provider) is ProviderType
    assert type(row.payment_method) is PaymentMethod and type(row.payment_type) is PaymentType
    assert row.attention_required is False
    [created, finished] = await events(svc, p.id)
    assert (created.event_type, created.old_status, created.new_status, created.message, created.needs_attention) == (
        "payment_created", None, PaymentStatus.CREATED, None, False)
    assert created.created_at == reserved.created_at
    assert (finished.event_type, finished.old_status, finished.new_status) == (
        "checkout_created", PaymentStatus.CREATED, PaymentStatus.PENDING)
    assert await deliveries(svc, p.id) == []  # a checkout is not announced


async def test_empty_optional_fields_are_stored_as_null_and_recurring_keeps_its_interval(svc):
    p = (await svc.create_payment(SHOP, command("opt"))).payment
    assert (p.customer_ref, p.success_url, p.cancel_url) == (None, None, None)
    row = await stored(svc, p.id)
    assert (row.customer_ref, row.success_url, row.cancel_url) == (None, None, None)
    r = (await svc.create_payment(SHOP, command("rec", payment_type=2, recurring_interval="week",
                                                 recurring_interval_count=3))).payment
    assert (r.payment_type, r.recurring_interval, r.recurring_interval_count) == (PaymentType.RECURRING, "week", 3)
    row = await stored(svc, r.id)
    assert (row.recurring_interval, row.recurring_interval_count) == ("week", 3)


async def test_a_create_for_another_caller_a_refused_destination_or_a_disabled_provider_is_refused(svc):
    with pytest.raises(PermissionDeniedError) as err:
        await svc.create_payment(SHOP, command(caller_service="billing"))
    assert (err.value.message, err.value.field) == ("this api key may not act for caller_service 'billing'", "caller_service")
    with pytest.raises(ValidationError) as err:
        await svc.create_payment(SHOP, command(status_callback_url="https://evil.example/cb"))
    assert (err.value.message, err.value.field) == (
        "status_callback_url host 'evil.example' is not allowed by PAYMENTS_CALLBACK_ALLOWED_HOSTS", "status_callback_url")
    with pytest.raises(ValidationError) as err:  # a known provider that is not enabled
        await svc.create_payment(SHOP, command(provider=int(ProviderType.STRIPE)))
    assert (err.value.message, err.value.field) == ("provider is not supported", "provider")
    assert svc.provider.created == []


async def test_the_chosen_providers_own_validation_decides(svc):
    svc.provider.refused_currency = "JPY"
    with pytest.raises(ValidationError) as err:
        await svc.create_payment(SHOP, command("jpy", currency="jpy"))
    assert (err.value.message, err.value.field) == ("sandbox takes no JPY", "currency")
    assert svc.provider.created == []


async def test_a_create_is_refused_before_any_row_while_the_providers_circuit_is_open(make_container):
    container = await make_container(PAYMENTS_BREAKER_FAILURE_THRESHOLD="1")
    service, provider = container.service, Provider()
    service.providers = ProviderRegistry([provider], ProviderType.SANDBOX, Breaker(
        LocalStore(), container.settings.resilience.breaker, timeout_seconds=container.settings.provider_timeout_seconds))
    provider.create_errors = [ProviderError("provider answered 503", retryable=True)]
    with pytest.raises(ServiceUnavailableError):
        await service.create_payment(SHOP, command("opens-it"))
    with pytest.raises(CircuitOpenError):
        await service.create_payment(SHOP, command("refused"))
    async with service.db.read() as conn:
        assert await PaymentRepository(conn).find_by_key("shop", "refused") is None
    assert len(provider.created) == 1
    await container.close()


async def test_the_callback_base_url_loses_only_its_trailing_slashes(make_container):
    # A path ending in a capital X: a strip of more than "/" would eat into it.
    container = await make_container(PAYMENTS_PROVIDER_CALLBACK_BASE_URL="https://hooks.example/X//")
    payment = (await container.service.create_payment(SHOP, command("base-url"))).payment
    assert payment.provider_callback_url == f"https://hooks.example/X/sandbox/{payment.provider_callback_hash}"
    await container.close()


async def test_a_replay_of_a_finished_create_returns_the_stored_payment(svc):
    first = (await svc.create_payment(SHOP, command("again"))).payment
    await svc.cancel_payment(SHOP, first.id, "gone")
    again = await svc.create_payment(SHOP, command("again"))
    assert again.replayed is True and again.payment == await stored(svc, first.id)
    assert again.payment.status == PaymentStatus.CANCELED and len(svc.provider.created) == 1


async def test_the_open_payments_quota_is_asked_for_the_callers_service_on_new_creates_only(svc):
    asked = []

    class Quotas:
        async def check_open_payments(self, caller_service):
            asked.append(caller_service)

    svc.quotas = Quotas()
    await svc.create_payment(SHOP, command("q"))
    await svc.create_payment(SHOP, command("q"))  # a replay
    assert asked == ["shop"]


async def test_a_key_taken_between_the_lookup_and_the_reserve_replays_the_winner(svc, monkeypatch):
    first = (await svc.create_payment(SHOP, command("late"))).payment
    find = PaymentRepository.find_by_key
    calls = []

    async def missed_once(self, caller_service, request_id):
        calls.append((caller_service, request_id))
        return None if len(calls) == 1 else await find(self, caller_service, request_id)

    monkeypatch.setattr(PaymentRepository, "find_by_key", missed_once)
    again = await svc.create_payment(SHOP, command("late"))
    assert calls == [("shop", "late"), ("shop", "late")]
    assert again.replayed is True and again.payment.id == first.id and len(svc.provider.created) == 1


async def test_a_routed_key_taken_between_the_lookup_and_the_reserve_replays_with_its_rule(svc, monkeypatch):
    stripe = Provider(ProviderType.STRIPE)
    svc.providers = ProviderRegistry([svc.provider, stripe], ProviderType.SANDBOX)
    svc.router = Router(parse_rules(json.dumps([{"name": "to-stripe", "providers": ["stripe"]}])))
    first = (await svc.create_payment(SHOP, command("routed-late"))).payment
    find = PaymentRepository.find_by_key
    lookups = []

    async def missed_once(self, caller_service, request_id):
        lookups.append(request_id)
        return None if len(lookups) == 1 else await find(self, caller_service, request_id)

    monkeypatch.setattr(PaymentRepository, "find_by_key", missed_once)
    again = await svc.create_payment(SHOP, command("routed-late"))
    assert lookups == ["routed-late", "routed-late"]  # the second lookup is the one after the taken key
    assert (again.replayed, again.payment.id, again.routing_rule) == (True, first.id, "to-stripe")
    assert len(stripe.created) == 1


async def test_a_reserve_refused_for_a_key_nobody_holds_asks_for_a_retry(svc, monkeypatch):
    async def nothing(self, caller_service, request_id):
        return None

    async def taken(creates):
        raise DuplicatePaymentKey()

    monkeypatch.setattr(PaymentRepository, "find_by_key", nothing)
    monkeypatch.setattr(svc.reserves, "submit", taken)
    with pytest.raises(ServiceUnavailableError) as err:
        await svc.create_payment(SHOP, command("hash-collision"))
    assert err.value.message == "could not reserve the payment; retry with the same request_id"
    assert err.value.__cause__ is None and err.value.__suppress_context__


async def test_a_rejected_create_fails_the_payment_and_its_replay_raises_the_same_error(svc):
    long = "card declined: " + "x" * 1100
    svc.provider.create_errors = [ProviderError(long, retryable=False, kind=ErrorKind.FAILED_PRECONDITION)]
    with pytest.raises(ProviderError) as err:
        await svc.create_payment(SHOP, command("rej"))
    assert err.value.message == long
    [(reserved, _)] = svc.provider.created
    row = await stored(svc, reserved.id)
    assert (row.status, row.failure_reason, row.create_error_code, row.create_lease_until) == (
        PaymentStatus.FAILED, long[:1024], "failed_precondition", None)
    assert [(e.event_type, e.old_status, e.new_status, e.message) for e in await events(svc, row.id)] == [
        ("payment_created", None, PaymentStatus.CREATED, None),
        ("provider_rejected", PaymentStatus.CREATED, PaymentStatus.FAILED, long[:1024])]
    assert await deliveries(svc, row.id) == []  # the caller was told in the response: no callback
    with pytest.raises(ProviderError) as again:
        await svc.create_payment(SHOP, command("rej"))
    assert (again.value.message, again.value.retryable, again.value.kind) == (
        long[:1024], False, ErrorKind.FAILED_PRECONDITION)
    await set_row(svc, row.id, failure_reason=None)
    with pytest.raises(ProviderError) as third:
        await svc.create_payment(SHOP, command("rej"))
    assert (third.value.message, third.value.retryable, third.value.kind) == (
        "payment provider rejected the payment", False, ErrorKind.FAILED_PRECONDITION)
    assert len(svc.provider.created) == 1


async def test_a_rejection_after_the_payment_was_canceled_leaves_it_canceled(svc):
    task, reserved, _ = await cancel_while_creating(svc, "late-rej")
    svc.provider.create_errors = [ProviderError("declined", retryable=False)]
    svc.provider.gate.set()
    with pytest.raises(ProviderError, match="declined"):
        await task
    row = await stored(svc, reserved.id)
    assert (row.status, row.failure_reason, row.create_error_code) == (PaymentStatus.CANCELED, None, None)
    assert [e.event_type for e in await events(svc, row.id)] == ["payment_created", "payment_canceled"]


async def test_a_provider_timeout_on_create_releases_the_lease_at_once(svc):
    fast_timeout(svc)
    svc.provider.gate = asyncio.Event()  # never set: the provider hangs
    before = utcnow()
    with pytest.raises(ServiceUnavailableError) as err:
        await svc.create_payment(SHOP, command("slow"))
    assert err.value.message == "payment provider timed out; retry with the same request_id"
    assert err.value.__cause__ is None and err.value.retry_after_seconds == 5
    [(reserved, _)] = svc.provider.created
    row = await stored(svc, reserved.id)
    assert row.status == PaymentStatus.CREATED and before <= row.create_lease_until <= utcnow()


async def test_a_retryable_provider_error_on_create_keeps_its_retry_hint_and_releases_the_lease(svc):
    error = ProviderError("provider busy", retryable=True)
    error.retry_after_seconds = 17
    svc.provider.create_errors = [error]
    before = utcnow()
    with pytest.raises(ServiceUnavailableError) as err:
        await svc.create_payment(SHOP, command("busy"))
    assert (err.value.message, err.value.retry_after_seconds) == ("provider busy; retry with the same request_id", 17)
    assert err.value.__cause__ is error
    [(reserved, _)] = svc.provider.created
    row = await stored(svc, reserved.id)
    assert row.status == PaymentStatus.CREATED and before <= row.create_lease_until <= utcnow()
    assert (row.failure_reason, row.create_error_code) == (None, None)


async def test_a_checkout_that_leaves_the_payment_created_is_recorded_under_the_lock(svc):
    svc.provider.initial_status = PaymentStatus.CREATED  # e.g. a payment the customer has not reached yet
    p = (await svc.create_payment(SHOP, command("same"))).payment
    [(reserved, _)] = svc.provider.created
    assert (p.status, p.create_lease_until) == (PaymentStatus.CREATED, None)
    assert p.provider_payment_id and p.checkout_url and p.updated_at >= reserved.updated_at
    row = await stored(svc, p.id)
    assert (row.status, row.provider_payment_id, row.checkout_url, row.create_lease_until) == (
        PaymentStatus.CREATED, p.provider_payment_id, p.checkout_url, None)
    assert [(e.event_type, e.old_status, e.new_status) for e in await events(svc, p.id)] == [
        ("payment_created", None, PaymentStatus.CREATED), ("checkout_created", PaymentStatus.CREATED, PaymentStatus.CREATED)]
    assert svc.provider.cancels == []


async def test_a_create_canceled_meanwhile_keeps_the_provider_ids_and_stops_the_object(svc):
    task, reserved, _ = await cancel_while_creating(svc, "ended")
    svc.provider.gate.set()
    p = (await task).payment
    row = await stored(svc, reserved.id)
    assert (row.status, row.provider_payment_id, row.checkout_url, row.create_lease_until) == (
        PaymentStatus.CANCELED, p.provider_payment_id, p.checkout_url, None)
    assert p.provider_payment_id.startswith("sbx_")
    [(canceled, key)] = svc.provider.cancels
    assert canceled.provider_payment_id == p.provider_payment_id
    assert key == provider_idempotency_key("shop", "ended", "cancel")
    last = (await events(svc, row.id))[-1]
    assert (last.event_type, last.old_status, last.new_status) == (
        "checkout_created_after_end", PaymentStatus.CANCELED, PaymentStatus.CANCELED)
    assert await deliveries(svc, row.id) == [("payment.canceled", PaymentStatus.CANCELED)]


# ---- the create lease --------------------------------------------------------------


async def test_an_unfinished_create_is_claimed_only_once_its_lease_ran_out(svc, monkeypatch):
    now = utcnow().replace(microsecond=0)
    monkeypatch.setattr(payments_module, "utcnow", lambda: now)
    p = (await svc.create_payment(SHOP, command("claim"))).payment
    await set_row(svc, p.id, status=int(PaymentStatus.CREATED), create_lease_until=now + timedelta(seconds=1))
    held = dataclasses.replace(p, status=PaymentStatus.CREATED, create_lease_until=now + timedelta(seconds=1),
                               updated_at=now - timedelta(days=1))
    assert await svc.claim_unfinished_create(held) is None  # still held
    assert (await stored(svc, p.id)).create_lease_until == now + timedelta(seconds=1)
    await set_row(svc, p.id, create_lease_until=now)
    ran_out = dataclasses.replace(held, create_lease_until=now)  # runs out at `now` itself
    claimed = await svc.claim_unfinished_create(ran_out)
    assert claimed == dataclasses.replace(ran_out, create_lease_until=now + timedelta(seconds=60), updated_at=now)
    row = await stored(svc, p.id)
    assert (row.create_lease_until, row.updated_at) == (now + timedelta(seconds=60), now)
    assert await svc.claim_unfinished_create(ran_out) is None  # its lease changed: someone holds it
    await set_row(svc, p.id, create_lease_until=None)
    never = dataclasses.replace(held, create_lease_until=None)
    claimed = await svc.claim_unfinished_create(never)
    assert (claimed.create_lease_until, claimed.updated_at) == (now + timedelta(seconds=60), now)
    assert (await stored(svc, p.id)).create_lease_until == now + timedelta(seconds=60)


# ---- reads -------------------------------------------------------------------------


async def test_get_refuses_a_bad_id_and_hides_what_the_caller_may_not_see(svc):
    p = (await svc.create_payment(SHOP, command("get"))).payment
    assert await svc.get_payment(SHOP, p.id) == await stored(svc, p.id)
    with pytest.raises(ValidationError) as err:
        await svc.get_payment(SHOP, 0)
    assert (err.value.message, err.value.field) == ("invalid payment id", "id")
    for caller, payment_id in ((SHOP, p.id + 1), (Caller("billing"), p.id)):
        with pytest.raises(NotFoundError) as missing:
            await svc.get_payment(caller, payment_id)
        assert missing.value.message == "payment not found"
    assert (await svc.get_payment(Caller("gw", frozenset({"shop"})), p.id)).id == p.id


async def test_get_checkout_finds_a_payment_by_its_providers_name_and_callback_hash(svc):
    p = (await svc.create_payment(SHOP, command("chk"))).payment
    assert await svc.get_checkout("sandbox", p.provider_callback_hash) == await stored(svc, p.id)
    assert (await svc.get_checkout(" 100 ", p.provider_callback_hash)).id == p.id
    with pytest.raises(NotFoundError):
        await svc.get_checkout("sandbox", "no-such-hash")
    with pytest.raises(ValidationError, match="provider is not supported"):
        await svc.get_checkout("stripe", p.provider_callback_hash)


async def _listing(svc):
    """Five payments of three caller services, two statuses and two resources."""
    made = {}
    for key, caller, resource_type, resource_id in (("a", "shop", "order", "o-1"), ("b", "billing", "order", "o-1"),
                                                    ("c", "shop", "invoice", "o-2"), ("d", "gw", "order", "o-2"),
                                                    ("e", "shop", "order", "o-2")):
        made[key] = (await svc.create_payment(Caller(caller), command(key, caller_service=caller,
                                                                      resource_type=resource_type,
                                                                      resource_id=resource_id))).payment
    await svc.cancel_payment(SHOP, made["c"].id, "")
    return made


async def test_list_applies_each_filter_the_callers_scope_and_paging(svc):
    await _listing(svc)
    gw = Caller("gw", frozenset({"shop"}))

    async def keys(caller=SHOP, **query):
        return "".join(p.request_id for p in await svc.list_payments(caller, ListPaymentsQuery(**query)))

    assert await keys() == "eca"  # its own, newest first
    assert await keys(gw) == "edca"  # its own and those it acts for
    assert await keys(Caller("ops", frozenset({"*"}))) == "edcba"
    assert await keys(gw, caller_service="shop") == "eca"
    assert await keys(gw, caller_service="gw") == "d"
    assert await keys(caller_service="shop") == "eca"
    assert await keys(request_id="c") == "c" and await keys(request_id="b") == ""
    assert await keys(resource_type="order") == "ea" and await keys(resource_id="o-2") == "ec"
    assert await keys(resource_type="order", resource_id="o-1") == "a"
    assert await keys(status=PaymentStatus.CANCELED) == "c" and await keys(status=PaymentStatus.PENDING) == "ea"
    assert await keys(provider=ProviderType.SANDBOX) == "eca" and await keys(provider=ProviderType.STRIPE) == ""
    assert await keys(limit=1) == "e" and await keys(limit=2, offset=1) == "ca" and await keys(offset=3) == ""
    assert await keys(limit=0) == "eca"  # 0: the default page
    with pytest.raises(PermissionDeniedError) as err:
        await svc.list_payments(gw, ListPaymentsQuery(caller_service="billing"))
    assert (err.value.message, err.value.field) == (
        "this api key may not read payments of caller_service 'billing'", "caller_service")


async def test_listed_payments_are_whole(svc):
    p = (await svc.create_payment(SHOP, command("whole", metadata={"k": "é"}))).payment
    [listed] = await svc.list_payments(SHOP, ListPaymentsQuery())
    assert listed == await stored(svc, p.id) and listed.metadata == {"k": "é"} and listed.attention_required is False


async def test_the_events_page_has_bounds_a_default_size_and_a_cursor(svc):
    p = (await svc.create_payment(SHOP, command("ev"))).payment
    async with svc.db.transaction() as conn:
        for i in range(99):
            await EventRepository(conn).add(payment_id=p.id, event_type=f"note_{i}", old_status=PaymentStatus.PENDING,
                                            new_status=PaymentStatus.PENDING, now=utcnow())
    every = await svc.list_payment_events(SHOP, p.id, limit=500, after_event_id=0)
    assert len(every) == 101 and [e.event_type for e in every[:2]] == ["payment_created", "checkout_created"]
    assert await svc.list_payment_events(SHOP, p.id, limit=0, after_event_id=0) == every[:100]
    assert await svc.list_payment_events(SHOP, p.id, limit=1, after_event_id=0) == every[:1]
    assert await svc.list_payment_events(SHOP, p.id, limit=2, after_event_id=every[0].id) == every[1:3]
    for limit in (-1, 501):
        with pytest.raises(ValidationError) as err:
            await svc.list_payment_events(SHOP, p.id, limit=limit, after_event_id=0)
        assert (err.value.message, err.value.field) == ("limit must be between 1 and 500", "limit")
    with pytest.raises(ValidationError) as err:
        await svc.list_payment_events(SHOP, p.id, limit=10, after_event_id=-1)
    assert (err.value.message, err.value.field) == ("after_event_id must be >= 0", "after_event_id")
    with pytest.raises(NotFoundError):
        await svc.list_payment_events(Caller("billing"), p.id, limit=10, after_event_id=0)


# ---- cancel ------------------------------------------------------------------------


async def test_a_cancel_records_its_reason_event_callback_and_audit_entry(svc):
    p = (await svc.create_payment(SHOP, command("cx"))).payment
    caller = Caller("shop", key_id="key-7")
    canceled = await svc.cancel_payment(caller, p.id, "  customer left  ")
    assert canceled == await stored(svc, p.id)
    assert (canceled.status, canceled.cancel_reason) == (PaymentStatus.CANCELED, "customer left")
    [(sent, key)] = svc.provider.cancels
    assert sent.id == p.id and key == provider_idempotency_key("shop", "cx", "cancel")
    last = (await events(svc, p.id))[-1]
    assert (last.event_type, last.old_status, last.new_status, last.message) == (
        "payment_canceled", PaymentStatus.PENDING, PaymentStatus.CANCELED, "customer left")
    assert await deliveries(svc, p.id) == [("payment.canceled", PaymentStatus.CANCELED)]
    [entry] = await audit_entries(svc)
    assert (entry.actor_service, entry.actor_key_id, entry.action, entry.target_type, entry.target_id, entry.detail) == (
        "shop", "key-7", "payment.canceled", "payment", str(p.id), "customer left")
    # Again: the same payment, nothing more recorded or sent.
    assert await svc.cancel_payment(caller, p.id, "other") == canceled
    assert len(svc.provider.cancels) == 1 and len(await audit_entries(svc)) == 1
    assert await deliveries(svc, p.id) == [("payment.canceled", PaymentStatus.CANCELED)]


async def test_a_cancel_without_a_reason_stores_none(svc):
    p = (await svc.create_payment(SHOP, command("cx0"))).payment
    canceled = await svc.cancel_payment(SHOP, p.id)
    assert canceled.cancel_reason is None and (await stored(svc, p.id)).cancel_reason is None
    assert (await events(svc, p.id))[-1].message is None
    [entry] = await audit_entries(svc)
    assert entry.detail == ""


async def test_a_cancel_before_the_provider_object_exists_asks_no_provider(svc):
    task, reserved, canceled = await cancel_while_creating(svc, "early")
    assert canceled.status == PaymentStatus.CANCELED and svc.provider.cancels == []
    svc.provider.gate.set()
    await task


@pytest.mark.parametrize("status", [PaymentStatus.PAID, PaymentStatus.FAILED, PaymentStatus.EXPIRED])
async def test_an_ended_payment_cannot_be_canceled(svc, status):
    p = (await svc.create_payment(SHOP, command("ended"))).payment
    await set_row(svc, p.id, status=int(status))
    with pytest.raises(InvalidTransitionError) as err:
        await svc.cancel_payment(SHOP, p.id)
    assert err.value.message == f"invalid status: {status.name.lower()} payments cannot be canceled"
    assert svc.provider.cancels == [] and await audit_entries(svc) == []


async def test_a_cancel_the_provider_answers_paid_marks_the_payment_paid(svc):
    p = (await svc.create_payment(SHOP, command("paid-at-provider"))).payment
    svc.provider.cancel_outcome = CancelOutcome.ALREADY_PAID
    with pytest.raises(InvalidTransitionError) as err:
        await svc.cancel_payment(SHOP, p.id, "late")
    assert err.value.message == "invalid status: paid payments cannot be canceled"
    assert (await stored(svc, p.id)).status == PaymentStatus.PAID
    last = (await events(svc, p.id))[-1]
    assert (last.event_type, last.old_status, last.new_status, last.message) == (
        "provider_reported_paid", PaymentStatus.PENDING, PaymentStatus.PAID,
        "provider reported the payment paid when asked to cancel")
    assert await deliveries(svc, p.id) == [("payment.paid", PaymentStatus.PAID)]
    assert await audit_entries(svc) == []


async def test_a_cancel_that_loses_to_paid_records_the_refusal(svc, monkeypatch):
    p = (await svc.create_payment(SHOP, command("lost"))).payment
    submit = svc.status_writes.submit

    async def paid_meanwhile(transition):
        monkeypatch.setattr(svc.status_writes, "submit", submit)
        await set_row(svc, p.id, status=int(PaymentStatus.PAID))
        return await submit(transition)

    monkeypatch.setattr(svc.status_writes, "submit", paid_meanwhile)
    with pytest.raises(InvalidTransitionError, match="invalid status: paid payments cannot be canceled"):
        await svc.cancel_payment(SHOP, p.id, "too late")
    last = (await events(svc, p.id))[-1]
    assert (last.event_type, last.old_status, last.new_status, last.message) == (
        "cancel_rejected", PaymentStatus.PAID, PaymentStatus.PAID, "cancel refused: payment is PAID")
    assert (await stored(svc, p.id)).cancel_reason is None and await audit_entries(svc) == []


async def test_a_cancel_that_finds_it_canceled_meanwhile_answers_the_canceled_payment(svc, monkeypatch):
    p = (await svc.create_payment(SHOP, command("twice"))).payment
    svc.provider.cancel_gate = asyncio.Event()
    first = asyncio.create_task(svc.cancel_payment(SHOP, p.id, "first"))
    while not svc.provider.cancels:
        await asyncio.sleep(0.001)
    second = asyncio.create_task(svc.cancel_payment(SHOP, p.id, "second"))
    while len(svc.provider.cancels) < 2:
        await asyncio.sleep(0.001)
    svc.provider.cancel_gate.set()
    results = await asyncio.gather(first, second)
    assert {r.cancel_reason for r in results} == {(await stored(svc, p.id)).cancel_reason}
    assert [e.event_type for e in await events(svc, p.id)].count("payment_canceled") == 1
    assert len(await deliveries(svc, p.id)) == 1


async def test_a_provider_timeout_on_cancel_asks_for_a_retry(svc):
    p = (await svc.create_payment(SHOP, command("cancel-slow"))).payment
    fast_timeout(svc)
    svc.provider.cancel_gate = asyncio.Event()  # never set
    with pytest.raises(ServiceUnavailableError) as err:
        await svc.cancel_payment(SHOP, p.id)
    assert (err.value.message, err.value.__cause__, err.value.retry_after_seconds) == (
        "payment provider timed out; retry the cancel", None, 5)
    assert (await stored(svc, p.id)).status == PaymentStatus.PENDING


async def test_provider_errors_on_cancel_are_retryable_or_passed_on(svc):
    p = (await svc.create_payment(SHOP, command("cancel-err"))).payment
    busy = ProviderError("provider busy", retryable=True)
    busy.retry_after_seconds = 17
    svc.provider.cancel_error = busy
    with pytest.raises(ServiceUnavailableError) as err:
        await svc.cancel_payment(SHOP, p.id)
    assert (err.value.message, err.value.retry_after_seconds, err.value.__cause__) == (
        "provider busy; retry the cancel", 17, None)
    assert err.value.__suppress_context__
    refused = ProviderError("object is locked", retryable=False)
    svc.provider.cancel_error = refused
    with pytest.raises(ProviderError) as err:
        await svc.cancel_payment(SHOP, p.id)
    assert err.value is refused
    assert (await stored(svc, p.id)).status == PaymentStatus.PENDING and await audit_entries(svc) == []


# ---- callbacks and refunds pass through ----------------------------------------------


async def test_callbacks_are_handed_on_with_every_argument(svc):
    seen = []

    async def handle(callback):
        seen.append(callback)
        return "outcome"

    async def handle_account(*args):
        seen.append(args)
        return "account outcome"

    svc.callbacks.handle, svc.callbacks.handle_account = handle, handle_account
    callback = ProviderCallback(request_id="r", provider="sandbox", callback_hash="h", signature="s", payload=b"{}")
    assert await svc.handle_provider_callback(callback) == "outcome"
    assert await svc.handle_account_callback("stripe", b"body", "sig", 7) == "account outcome"
    assert await svc.handle_account_callback("stripe", b"body", "sig") == "account outcome"
    assert seen == [callback, ("stripe", b"body", "sig", 7), ("stripe", b"body", "sig", None)]


async def test_a_refund_is_audited_once_with_its_amount_and_outcome(svc):
    p = (await svc.create_payment(SHOP, command("refund", currency="eur"))).payment
    await svc.handle_provider_callback(signed(svc.provider, p, "pay"))
    caller = Caller("shop", key_id="key-9")
    result = await svc.refund_payment(caller, RefundCommand(payment_id=p.id, request_id="rf-1", amount_cents=400, reason=""))
    assert result.replayed is False
    [entry] = await audit_entries(svc)
    assert (entry.actor_service, entry.actor_key_id, entry.action, entry.target_type, entry.target_id, entry.detail) == (
        "shop", "key-9", "payment.refunded", "payment", str(p.id), f"refund {result.refund.id}: 400 EUR succeeded")
    again = await svc.refund_payment(caller, RefundCommand(payment_id=p.id, request_id="rf-1", amount_cents=400, reason=""))
    assert again.replayed is True and len(await audit_entries(svc)) == 1
    with pytest.raises(ValidationError, match="invalid payment id"):
        await svc.refund_payment(caller, RefundCommand(payment_id=0, request_id="rf-2", amount_cents=1, reason=""))
    with pytest.raises(NotFoundError):
        await svc.refund_payment(Caller("billing"), RefundCommand(payment_id=p.id, request_id="rf-3", amount_cents=1,
                                                                  reason=""))


# ---- routing -------------------------------------------------------------------------


async def test_a_replay_names_the_rule_only_while_the_rule_still_lists_its_provider(svc):
    stripe = Provider(ProviderType.STRIPE)
    svc.providers = ProviderRegistry([svc.provider, stripe], ProviderType.SANDBOX)
    svc.router = Router(parse_rules(json.dumps([{"name": "to-stripe", "providers": ["stripe"]}])))
    first = await svc.create_payment(SHOP, command("routed"))
    assert (first.routing_rule, first.payment.provider) == ("to-stripe", ProviderType.STRIPE)
    assert first.payment.request_fingerprint == command("routed").normalized().fingerprint(ProviderType.STRIPE)
    assert svc.provider.created == [] and len(stripe.created) == 1
    [created, _] = await events(svc, first.payment.id)
    assert created.message == "routed to stripe by rule to-stripe"
    replay = await svc.create_payment(SHOP, command("routed"))
    assert (replay.replayed, replay.routing_rule) == (True, "to-stripe")
    await set_row(svc, first.payment.id, provider=int(ProviderType.SANDBOX))  # e.g. moved by a failover
    replay = await svc.create_payment(SHOP, command("routed"))
    assert (replay.replayed, replay.routing_rule, replay.payment.provider) == (True, "", ProviderType.SANDBOX)


# ---- change_status and write_grouped -----------------------------------------------


async def test_change_status_of_a_missing_payment_is_not_found(svc):
    with pytest.raises(NotFoundError):
        await svc.change_status(12345, lambda p: StatusChange(PaymentStatus.CANCELED, "x"))


async def test_change_status_with_nothing_to_change_returns_the_payment_as_stored(svc):
    p = (await svc.create_payment(SHOP, command("noop"))).payment
    assert await svc.change_status(p.id, lambda current: None) == await stored(svc, p.id)
    assert len(await events(svc, p.id)) == 2


async def test_change_status_records_an_event_only_change_under_the_lock(svc):
    p = (await svc.create_payment(SHOP, command("note"))).payment
    changed = await svc.change_status(p.id, lambda current: StatusChange(None, "note", values={"failure_reason": "why"},
                                                                          message="hello"))
    assert (changed.status, changed.failure_reason) == (PaymentStatus.PENDING, "why")
    assert changed == await stored(svc, p.id)
    last = (await events(svc, p.id))[-1]
    assert (last.event_type, last.old_status, last.new_status, last.message) == (
        "note", PaymentStatus.PENDING, PaymentStatus.PENDING, "hello")


async def test_change_status_decides_again_under_the_lock_and_may_then_change_nothing(svc, monkeypatch):
    p = (await svc.create_payment(SHOP, command("redecide"))).payment
    seen = []

    async def not_applied(payment, change, record=None):
        return None

    def decide(current):
        seen.append(current.status)
        return StatusChange(PaymentStatus.CANCELED, "x") if len(seen) == 1 else None

    monkeypatch.setattr(svc, "write_grouped", not_applied)
    assert await svc.change_status(p.id, decide) == await stored(svc, p.id)
    assert seen == [PaymentStatus.PENDING, PaymentStatus.PENDING]
    assert (await stored(svc, p.id)).status == PaymentStatus.PENDING


async def test_change_status_under_the_lock_applies_the_transition(svc, monkeypatch):
    p = (await svc.create_payment(SHOP, command("locked"))).payment

    async def not_applied(payment, change, record=None):
        return None

    monkeypatch.setattr(svc, "write_grouped", not_applied)
    changed = await svc.change_status(p.id, lambda current: StatusChange(PaymentStatus.CANCELED, "payment_canceled"))
    assert changed.status == PaymentStatus.CANCELED and changed == await stored(svc, p.id)
    assert await deliveries(svc, p.id) == [("payment.canceled", PaymentStatus.CANCELED)]


async def test_change_status_gives_up_after_five_concurrent_updates(svc, monkeypatch):
    p = (await svc.create_payment(SHOP, command("busy-row"))).payment
    attempts = []

    async def always_raced(conn, payment, change, now, *, last=False):
        attempts.append(last)
        raise ConcurrentUpdate()

    async def not_applied(payment, change, record=None):
        return None

    monkeypatch.setattr(payments_module, "apply_status_change", always_raced)
    monkeypatch.setattr(svc, "write_grouped", not_applied)
    with pytest.raises(ServiceUnavailableError) as err:
        await svc.change_status(p.id, lambda current: StatusChange(PaymentStatus.CANCELED, "x"))
    assert err.value.message == "payment is being updated concurrently; retry"
    assert attempts == [True] * 5


async def test_change_status_of_a_row_gone_under_the_lock_is_not_found(svc, monkeypatch):
    p = (await svc.create_payment(SHOP, command("gone"))).payment
    get = PaymentRepository.get

    async def gone_when_locked(self, payment_id, *, for_update=False):
        return None if for_update else await get(self, payment_id)

    async def not_applied(payment, change, record=None):
        return None

    monkeypatch.setattr(PaymentRepository, "get", gone_when_locked)
    monkeypatch.setattr(svc, "write_grouped", not_applied)
    with pytest.raises(NotFoundError):
        await svc.change_status(p.id, lambda current: StatusChange(PaymentStatus.CANCELED, "x"))


async def test_write_grouped_writes_an_allowed_transition_with_its_records(svc):
    p = (await svc.create_payment(SHOP, command("wg"))).payment
    stamps = []

    def record(now):
        stamps.append(now)
        return []

    before = utcnow()
    written = await svc.write_grouped(p, StatusChange(PaymentStatus.EXPIRED, "payment_expired"), record)
    [now] = stamps
    assert before <= now <= utcnow()
    assert written == dataclasses.replace(p, status=PaymentStatus.EXPIRED, updated_at=now)
    assert written == await stored(svc, p.id)
    assert await deliveries(svc, p.id) == [("payment.expired", PaymentStatus.EXPIRED)]
    # Not a transition (same status, or one the table forbids), or the row moved on: None, nothing written.
    assert await svc.write_grouped(written, StatusChange(None, "note"), record) is None
    assert await svc.write_grouped(written, StatusChange(PaymentStatus.CANCELED, "x"), record) is None
    assert await svc.write_grouped(p, StatusChange(PaymentStatus.CANCELED, "x"), record) is None  # stale: PENDING
    assert len(stamps) == 2 and (await stored(svc, p.id)).status == PaymentStatus.EXPIRED
    assert [e.event_type for e in await events(svc, p.id)][-1] == "payment_expired"


# ---- apply_status_change and plan_transition -------------------------------------------


async def _apply(svc, payment, change, now=None):
    async with svc.db.transaction() as conn:
        return await apply_status_change(conn, payment, change, now or utcnow())


async def test_paid_after_the_payment_ended_is_recorded_for_an_operator(svc):
    p = (await svc.create_payment(SHOP, command("late-paid"))).payment
    ended = await svc.cancel_payment(SHOP, p.id)
    now = utcnow()
    after = await _apply(svc, ended, StatusChange(PaymentStatus.PAID, "payment.succeeded", provider_event_id="evt_1",
                                                  payload='{"a":1}', values={"failure_reason": "x"}), now)
    assert after == dataclasses.replace(ended, attention_required=True, updated_at=now)
    assert after == await stored(svc, p.id) and after.failure_reason is None
    last = (await event_rows(svc, p.id))[-1]
    assert (last.event_type, last.old_status, last.new_status, last.provider_event_id, last.needs_attention,
            last.payload_json) == ("payment.succeeded", PaymentStatus.CANCELED, PaymentStatus.CANCELED, "evt_1", True,
                                   '{"a":1}')
    assert last.message == ("provider reports PAID but the payment is already CANCELED: money may have been taken, "
                            "refund or reconcile by hand")
    assert await deliveries(svc, p.id) == [("payment.canceled", PaymentStatus.CANCELED)]


async def test_a_forbidden_transition_is_recorded_and_changes_nothing(svc):
    p = (await svc.create_payment(SHOP, command("forbidden"))).payment
    await svc.handle_provider_callback(signed(svc.provider, p, "pay"))
    paid = await stored(svc, p.id)
    after = await _apply(svc, paid, StatusChange(PaymentStatus.FAILED, "payment.failed", provider_event_id="evt_2",
                                                 payload="{}", values={"failure_reason": "declined"}, message="m"))
    assert after == paid == await stored(svc, p.id)
    last = (await event_rows(svc, p.id))[-1]
    assert (last.event_type, last.old_status, last.new_status, last.provider_event_id, last.needs_attention,
            last.message, last.payload_json) == (
        "payment.failed", PaymentStatus.PAID, PaymentStatus.PAID, "evt_2", False,
        "ignored: PAID -> FAILED is not an allowed transition", "{}")


async def test_a_same_status_change_may_announce_with_the_default_or_its_own_callback_type(svc):
    p = (await svc.create_payment(SHOP, command("renew"))).payment
    await svc.handle_provider_callback(signed(svc.provider, p, "pay"))
    paid = await stored(svc, p.id)
    now = utcnow()
    after = await _apply(svc, paid, StatusChange(None, "renewed", announce=True, needs_attention=True, message="m",
                                                 provider_event_id="evt_3", payload="{}"), now)
    assert after == dataclasses.replace(paid, attention_required=True, updated_at=now) == await stored(svc, p.id)
    await _apply(svc, after, StatusChange(PaymentStatus.PAID, "renewal_failed", announce=True,
                                          callback_type="payment.renewal_failed"))
    await _apply(svc, after, StatusChange(None, "quiet"))  # no announce: no callback
    assert await deliveries(svc, p.id) == [("payment.paid", PaymentStatus.PAID), ("payment.paid", PaymentStatus.PAID),
                                           ("payment.renewal_failed", PaymentStatus.PAID)]
    rows = (await event_rows(svc, p.id))[-3:]
    assert [(r.event_type, r.old_status, r.new_status, r.needs_attention, r.message, r.provider_event_id, r.payload_json)
            for r in rows] == [("renewed", PaymentStatus.PAID, PaymentStatus.PAID, True, "m", "evt_3", "{}"),
                               ("renewal_failed", PaymentStatus.PAID, PaymentStatus.PAID, False, None, None, None),
                               ("quiet", PaymentStatus.PAID, PaymentStatus.PAID, False, None, None, None)]


async def test_a_same_status_change_on_a_row_changed_meanwhile_is_a_concurrent_update(svc):
    p = (await svc.create_payment(SHOP, command("stale"))).payment
    stale = dataclasses.replace(p, status=PaymentStatus.CREATED)
    with pytest.raises(ConcurrentUpdate):
        await _apply(svc, stale, StatusChange(None, "note", values={"failure_reason": "x"}))
    with pytest.raises(ConcurrentUpdate):
        await _apply(svc, stale, StatusChange(PaymentStatus.CANCELED, "payment_canceled"))
    assert [e.event_type for e in await events(svc, p.id)] == ["payment_created", "checkout_created"]
    # An event only, with no values: written whatever the row's status (nothing to update).
    assert await _apply(svc, stale, StatusChange(None, "note")) == stale


async def test_an_applied_transition_returns_the_payment_with_its_values(svc):
    p = (await svc.create_payment(SHOP, command("applied"))).payment
    now = utcnow()
    after = await _apply(svc, p, StatusChange(PaymentStatus.FAILED, "payment.failed", values={"failure_reason": "no"},
                                              needs_attention=True, provider_event_id="evt_4", payload="{}",
                                              message="declined", callback_type="payment.declined"), now)
    assert after == dataclasses.replace(p, status=PaymentStatus.FAILED, updated_at=now, failure_reason="no",
                                        attention_required=True) == await stored(svc, p.id)
    last = (await event_rows(svc, p.id))[-1]
    assert (last.event_type, last.old_status, last.new_status, last.provider_event_id, last.needs_attention,
            last.message, last.payload_json, last.created_at) == (
        "payment.failed", PaymentStatus.PENDING, PaymentStatus.FAILED, "evt_4", True, "declined", "{}", now)
    assert await deliveries(svc, p.id) == [("payment.declined", PaymentStatus.FAILED)]


def test_plan_transition_announces_terminal_statuses_unless_told_otherwise():
    payment = type("Payment", (), dict(id=1, caller_service="shop", status=PaymentStatus.PENDING))()  # what it reads
    now = utcnow()
    assert plan_transition(payment, StatusChange(PaymentStatus.PENDING, "x"), now) is None
    assert plan_transition(payment, StatusChange(None, "x"), now) is None
    assert plan_transition(payment, StatusChange(PaymentStatus.CREATED, "x"), now) is None
    processing = plan_transition(payment, StatusChange(PaymentStatus.PROCESSING, "x", values={"a": 1}), now)
    assert (processing.payment, processing.new_status, processing.values) == (
        payment, PaymentStatus.PROCESSING, {"status": PaymentStatus.PROCESSING, "updated_at": now, "a": 1})
    assert len(processing.record) == 1
    [(_, event)] = processing.record
    assert event == dict(payment_id=1, event_type="x", old_status=2, new_status=3, provider_event_id=None,
                         needs_attention=False, message=None, payload_json=None, created_at=now)
    announced = plan_transition(payment, StatusChange(PaymentStatus.PROCESSING, "x", announce=True), now)
    quiet = plan_transition(payment, StatusChange(PaymentStatus.PAID, "x", announce=False), now)
    paid = plan_transition(payment, StatusChange(PaymentStatus.PAID, "x"), now)
    assert (len(announced.record), len(quiet.record), len(paid.record)) == (2, 1, 2)
    callback = paid.record[1][1]
    assert (callback["payment_id"], callback["caller_service"], callback["event_type"], callback["payment_status"]) == (
        1, "shop", "payment.paid", PaymentStatus.PAID)
    assert announced.record[1][1]["event_type"] == "payment.processing"
    flagged = plan_transition(payment, StatusChange(PaymentStatus.PAID, "x", needs_attention=True), now)
    assert flagged.values["attention_required"] is True and flagged.record[0][1]["needs_attention"] is True
    assert "attention_required" not in paid.values


# ---- the payments repository -----------------------------------------------------------


@every_backend
async def test_a_payment_at_the_largest_row_id_is_read(svc):
    p = (await svc.create_payment(SHOP, command("max-id"))).payment
    async with svc.db.transaction() as conn:
        row = dict((await conn.execute(sa.select(payments).where(payments.c.id == p.id))).mappings().one())
        row.update(id=MAX_ROW_ID, request_id="max-id-2", provider_callback_hash="h-max")
        await conn.execute(payments.insert().values(**row))
    async with svc.db.read() as conn:
        repo = PaymentRepository(conn)
        assert (await repo.get(MAX_ROW_ID)).request_id == "max-id-2"
        found, delivery = await repo.get_with_latest_delivery(MAX_ROW_ID)
        assert (found.id, delivery) == (MAX_ROW_ID, None)
        assert await repo.get(MAX_ROW_ID + 1) is None and await repo.get_with_latest_delivery(MAX_ROW_ID + 1) is None
        assert await repo.get_with_latest_delivery(p.id + 1) is None
        assert (await repo.find_by_key("shop", "max-id")).id == p.id
        assert await repo.find_by_key("shop", "nope") is None and await repo.find_by_key("billing", "max-id") is None


@every_backend
async def test_insert_writes_a_row_and_refuses_a_taken_key(svc):
    p = (await svc.create_payment(SHOP, command("ins"))).payment
    values = {f.name: getattr(p, f.name) for f in dataclasses.fields(p) if f.name != "id"}
    values.update(request_id="ins-2", provider_callback_hash="h-ins-2", metadata={"é": "ü"})
    async with svc.db.transaction() as conn:
        inserted = await PaymentRepository(conn).insert(values)
    assert inserted == dataclasses.replace(p, id=inserted.id, request_id="ins-2", provider_callback_hash="h-ins-2",
                                           metadata={"é": "ü"})
    assert await stored(svc, inserted.id) == inserted
    async with svc.db.read() as conn:
        raw = (await conn.execute(sa.select(payments.c.metadata_json).where(payments.c.id == inserted.id))).scalar()
    assert raw == '{"é":"ü"}'
    with pytest.raises(DuplicatePaymentKey):
        async with svc.db.transaction() as conn:
            await PaymentRepository(conn).insert(dict(values, provider_callback_hash="h-ins-3"))


@every_backend
async def test_a_database_error_that_is_no_taken_key_is_passed_on(svc, monkeypatch):
    p = (await svc.create_payment(SHOP, command("ins-err"))).payment
    values = {f.name: getattr(p, f.name) for f in dataclasses.fields(p) if f.name != "id"}
    lost = ConnectionError("connection lost")

    async def broken(*args, **kwargs):
        raise lost

    monkeypatch.setattr(payments_repository.st, "insert", broken)
    monkeypatch.setattr(payments_repository.st, "fetch_all", broken)
    monkeypatch.setattr(payments_repository.st, "batch", broken)
    async with svc.db.transaction() as conn:
        with pytest.raises(ConnectionError) as err:
            await PaymentRepository(conn).insert(dict(values, request_id="ins-4", provider_callback_hash="h-ins-4"))
        assert err.value is lost
        with pytest.raises(ConnectionError) as err:
            await PaymentRepository(conn).reserve([(dict(values, request_id="ins-5", provider_callback_hash="h-5"), dict(
                event_type="payment_created", old_status=None, new_status=PaymentStatus.CREATED, now=utcnow()))])
        assert err.value is lost


@every_backend
async def test_update_if_status_writes_its_records_only_when_it_applies(svc):
    p = (await svc.create_payment(SHOP, command("upd"))).payment
    now = utcnow()
    t = plan_transition(p, StatusChange(PaymentStatus.PROCESSING, "processing"), now)
    async with svc.db.transaction() as conn:
        repo = PaymentRepository(conn)
        assert await repo.update_if_status(p.id, PaymentStatus.CREATED, t.values, then=t.record) is False
        assert await repo.update_if_status(p.id, PaymentStatus.PENDING, t.values, then=t.record) is True
        assert await repo.update_if_status(p.id, PaymentStatus.PENDING, {"failure_reason": "x"}, commit=True) is False
        assert await repo.update_if_status(p.id, PaymentStatus.PROCESSING, {"failure_reason": "x"}, commit=True) is True
        assert await repo.update_each_if_status([(p.id, PaymentStatus.PENDING, {"failure_reason": "y"}, []),
                                                 (p.id, PaymentStatus.PROCESSING, {"cancel_reason": "z"}, [])]) == [
            False, True]
    row = await stored(svc, p.id)
    assert (row.status, row.failure_reason, row.cancel_reason, row.updated_at) == (
        PaymentStatus.PROCESSING, "x", "z", now)
    assert [e.event_type for e in await events(svc, p.id)] == ["payment_created", "checkout_created", "processing"]
