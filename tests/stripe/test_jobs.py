"""The expire and reconcile jobs with the Stripe provider, in-process on SQLite and
MariaDB: expiry stops the Stripe object first, reconcile fetches Stripe's current
truth when webhooks were lost."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from payments_svc.auth.caller import Caller
from payments_svc.clock import utcnow
from payments_svc.db.tables import payments
from payments_svc.domain.enums import PaymentStatus
from payments_svc.domain.payment import CreatePaymentCommand
from payments_svc.jobs.expire import PendingExpirer
from payments_svc.jobs.reconcile import Reconciler

from .conftest import WEBHOOK_SECRET, new_id

SHOP = Caller("shop")


@pytest.fixture
async def service(make_container, fake):
    container = await make_container(
        STRIPE_SECRET_KEY=fake.secret_key, STRIPE_WEBHOOK_SECRET=WEBHOOK_SECRET, STRIPE_API_BASE=fake.url,
        PAYMENTS_SANDBOX_ENABLED="false", PAYMENTS_PENDING_TIMEOUT_SECONDS="600",
        PAYMENTS_RECONCILE_STALE_AFTER_SECONDS="60",
    )
    yield container.service
    await container.close()


async def create(service, payment_method: int = 1):
    command = CreatePaymentCommand(
        request_id=new_id("req"), caller_service="shop", resource_type="order", resource_id=new_id("o"), customer_ref="",
        amount_cents=2500, currency="eur", payment_method=payment_method, payment_type=1, provider=0,
        recurring_interval="", recurring_interval_count=0, status_callback_url="https://shop.example/cb",
        success_url="", cancel_url="", metadata={},
    )
    return (await service.create_payment(SHOP, command)).payment


async def age(service, payment_id: int, seconds: float) -> None:
    then = utcnow() - timedelta(seconds=seconds)
    async with service.db.transaction() as conn:
        await conn.execute(payments.update().where(payments.c.id == payment_id).values(created_at=then, updated_at=then))


async def status(service, payment_id: int) -> PaymentStatus:
    return (await service.get_payment(SHOP, payment_id)).status


async def test_expire_stops_the_stripe_object_first(service, fake):
    session = await create(service)
    link = await create(service, payment_method=2)
    paid_meanwhile = await create(service)
    fake.complete_session(paid_meanwhile.provider_payment_id)  # its webhook never came
    processing = await create(service)
    fake.complete_session(processing.provider_payment_id, paid=False)
    for payment in (session, link, paid_meanwhile, processing):
        await age(service, payment.id, 700)

    result = await PendingExpirer(service).run_batch(asyncio.Event())
    assert (result.claimed, result.done) == (4, 3)
    assert await status(service, session.id) == PaymentStatus.EXPIRED
    assert fake.get(session.provider_payment_id)["status"] == "expired"
    assert await status(service, link.id) == PaymentStatus.EXPIRED
    assert fake.get(link.provider_payment_id)["active"] is False
    assert await status(service, paid_meanwhile.id) == PaymentStatus.PAID
    # A delayed payment in flight is not expired under it; the next run asks again.
    assert await status(service, processing.id) == PaymentStatus.PENDING


async def test_reconcile_learns_what_lost_webhooks_said(service, fake):
    delayed = await create(service)
    fake.complete_session(delayed.provider_payment_id, paid=False)
    fake.async_payment_result(delayed.provider_payment_id, True)
    link = await create(service, payment_method=2)
    fake.pay_payment_link(link.provider_payment_id)
    failed = await create(service)
    fake.complete_session(failed.provider_payment_id, paid=False)
    fake.async_payment_result(failed.provider_payment_id, False)
    untouched = await create(service)
    for payment in (delayed, link, failed, untouched):
        await age(service, payment.id, 120)

    result = await Reconciler(service).run_batch(asyncio.Event())
    assert (result.claimed, result.done) == (4, 4)
    assert await status(service, delayed.id) == PaymentStatus.PAID
    assert await status(service, link.id) == PaymentStatus.PAID
    assert await status(service, failed.id) == PaymentStatus.FAILED
    assert await status(service, untouched.id) == PaymentStatus.PENDING
