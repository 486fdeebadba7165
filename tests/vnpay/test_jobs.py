"""The expire and reconcile jobs with VNPay, in-process on SQLite and MariaDB. VNPay has
no cancel: the payment URL stops working at vnp_ExpireDate (the pending timeout), and
expiry ends the payment here once querydr says it was not paid; a payment that was paid
(its IPN lost) becomes PAID instead. The fake sends no IPN here (no IPN URL)."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from payments_svc.auth.caller import Caller
from payments_svc.domain.enums import PaymentStatus
from payments_svc.domain.payment import CreatePaymentCommand
from payments_svc.jobs.expire import PendingExpirer
from payments_svc.jobs.reconcile import Reconciler
from tests.fakes.vnpay_server import FakeVnpay, PageError

from ..support import wait_until

SHOP = Caller("shop")
PENDING_TIMEOUT_SECONDS = 3


@pytest.fixture
async def fake():
    async with FakeVnpay() as server:
        yield server


@pytest.fixture
async def service(make_container, fake):
    container = await make_container(
        **fake.env(), PAYMENTS_SANDBOX_ENABLED="false", PAYMENTS_PENDING_TIMEOUT_SECONDS=str(PENDING_TIMEOUT_SECONDS),
        PAYMENTS_RECONCILE_STALE_AFTER_SECONDS="0.1", PAYMENTS_RECONCILE_BACKOFF="100ms",
    )
    yield container.service
    await container.close()


async def create(service):
    command = CreatePaymentCommand(
        request_id=f"req-{uuid.uuid4().hex}", caller_service="shop",
        resource_type="order", resource_id="o-1", customer_ref="", amount_cents=250000, currency="VND",
        payment_method=1, payment_type=1, provider=3, recurring_interval="", recurring_interval_count=0,
        status_callback_url="https://shop.example/cb", success_url="", cancel_url="", metadata={},
    )
    return (await service.create_payment(SHOP, command)).payment


async def status(service, payment_id: int) -> PaymentStatus:
    return (await service.get_payment(SHOP, payment_id)).status


async def test_expiry_asks_vnpay_then_ends_or_settles_the_payment(service, fake):
    never_opened = await create(service)
    abandoned = await create(service)
    fake.open(abandoned.checkout_url)  # the customer looked, and left
    paid = await create(service)
    await fake.pay(paid.checkout_url)  # paid; its IPN never came
    expirer, stop = PendingExpirer(service), asyncio.Event()

    async def expired_all() -> bool:
        await expirer.run_batch(stop)
        return all([await status(service, p.id) != PaymentStatus.PENDING for p in (never_opened, abandoned, paid)])

    assert (await expirer.run_batch(stop)).claimed == 0  # not before the pending timeout
    await wait_until(expired_all, timeout=PENDING_TIMEOUT_SECONDS + 15, interval=0.2)
    assert await status(service, never_opened.id) == PaymentStatus.EXPIRED
    assert await status(service, abandoned.id) == PaymentStatus.EXPIRED
    assert await status(service, paid.id) == PaymentStatus.PAID
    # And VNPay no longer takes a payment on the expired URL.
    with pytest.raises(PageError, match="expired"):
        fake.open(never_opened.checkout_url)
    late = await fake.pay(abandoned.checkout_url)
    assert late.params["vnp_ResponseCode"] == "11"  # VNPay ended it as timed out


async def test_expiry_waits_while_vnpay_holds_a_payment_for_review(service, fake):
    held = await create(service)
    await fake.fail(held.checkout_url, "07")
    expirer, stop = PendingExpirer(service), asyncio.Event()

    async def deferred() -> bool:
        result = await expirer.run_batch(stop)
        return result.deferred == 1

    await wait_until(deferred, timeout=PENDING_TIMEOUT_SECONDS + 15, interval=0.2)
    assert await status(service, held.id) == PaymentStatus.PENDING


async def test_reconcile_settles_what_vnpay_reports(service, fake):
    paid, failed, open_ = await create(service), await create(service), await create(service)
    await fake.pay(paid.checkout_url)
    await fake.cancel(failed.checkout_url)
    fake.open(open_.checkout_url)
    reconciler, stop = Reconciler(service), asyncio.Event()

    async def settled() -> bool:
        await reconciler.run_batch(stop)
        return await status(service, paid.id) == PaymentStatus.PAID and \
            await status(service, failed.id) == PaymentStatus.FAILED

    await wait_until(settled, timeout=10, interval=0.2)
    assert await status(service, open_.id) == PaymentStatus.PENDING  # not completed at VNPay: nothing new
    fake.fail_next_api(100, status=503)  # VNPay is down: a failed check changes nothing

    async def failed_once() -> bool:
        return (await reconciler.run_batch(stop)).failed > 0

    await wait_until(failed_once, timeout=10, interval=0.2)
    assert await status(service, open_.id) == PaymentStatus.PENDING
