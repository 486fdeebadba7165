"""VerifyPayment's service, in-process on SQLite and MariaDB against the fake Stripe:
the provider's answer is applied through the transition table, the verification is
rate-limited per payment across processes (one table), and audited."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from payments_svc.auth.caller import Caller
from payments_svc.clock import utcnow
from payments_svc.db.tables import verify_claims
from payments_svc.domain.enums import PaymentStatus
from payments_svc.domain.errors import ErrorKind, NotFoundError, PaymentsError
from payments_svc.domain.payment import CreatePaymentCommand
from payments_svc.repository.audit import AuditRepository
from payments_svc.service.verify import VerifyService
from tests.fakes.stripe_server import FakeStripe

SHOP = Caller("shop", key_id="7")


@pytest.fixture(scope="module")
def fake():
    server = FakeStripe().start_in_thread()
    yield server
    server.stop_thread()


@pytest.fixture
async def service(make_container, fake):
    container = await make_container(STRIPE_SECRET_KEY=fake.secret_key, STRIPE_WEBHOOK_SECRET="whsec_verify_tests",
                                     STRIPE_API_BASE=fake.url, PAYMENTS_VERIFY_MIN_INTERVAL_SECONDS="30")
    yield container.service
    await container.close()


async def create(service, provider: int = 1):
    command = CreatePaymentCommand(
        request_id="req-" + uuid.uuid4().hex[:12], caller_service="shop", resource_type="order", resource_id="o-1",
        customer_ref="", amount_cents=2500, currency="eur", payment_method=1, payment_type=1, provider=provider,
        recurring_interval="", recurring_interval_count=0, status_callback_url="https://shop.example/cb",
        success_url="", cancel_url="", metadata={},
    )
    return (await service.create_payment(SHOP, command)).payment


async def test_verify_applies_what_stripe_reports_now(service, fake):
    payment = await create(service)
    fake.complete_session(payment.provider_payment_id)  # paid, and its webhook never came
    result = await VerifyService(service).verify(SHOP, payment.id)
    assert (result.payment.status, result.changed, result.old_status, result.provider_status) == (
        PaymentStatus.PAID, True, PaymentStatus.PENDING, "paid")
    events = await service.list_payment_events(SHOP, payment.id, limit=10, after_event_id=0)
    assert events[-1].event_type == "payment_verified" and events[-1].new_status == PaymentStatus.PAID
    async with service.db.read() as conn:
        [entry] = await AuditRepository(conn).list(action="payment.verified")
    assert (entry.actor_service, entry.actor_key_id, entry.target_type, entry.target_id) == ("shop", "7", "payment",
                                                                                              str(payment.id))
    assert "PENDING -> PAID" in entry.detail


async def test_an_open_session_changes_nothing(service):
    payment = await create(service)
    result = await VerifyService(service).verify(SHOP, payment.id)
    assert (result.payment.status, result.changed, result.provider_status) == (PaymentStatus.PENDING, False, "open")


async def test_verify_is_rate_limited_per_payment(service):
    first, second = await create(service), await create(service)
    verify = VerifyService(service)
    await verify.verify(SHOP, first.id)
    with pytest.raises(PaymentsError) as refused:
        await verify.verify(SHOP, first.id)
    assert refused.value.kind == ErrorKind.RESOURCE_EXHAUSTED and 1 <= refused.value.retry_after_seconds <= 30
    assert "verified less than 30 s ago" in refused.value.message
    await verify.verify(SHOP, second.id)  # another payment is not held up
    # Once the interval has passed, the payment may be verified again.
    async with service.db.transaction() as conn:
        await conn.execute(verify_claims.update().values(verified_at=utcnow() - timedelta(seconds=31)))
    await verify.verify(SHOP, first.id)


async def test_another_callers_payment_is_not_found_and_costs_no_claim(service):
    payment = await create(service)
    with pytest.raises(NotFoundError):
        await VerifyService(service).verify(Caller("other"), payment.id)
    await VerifyService(service).verify(SHOP, payment.id)  # not rate-limited by the refused attempt
