"""Reconcile and expire with Stripe failing and the sandbox fine, in-process on SQLite and
MariaDB against the Stripe test double: the Stripe payments fail (and the run says
so), the sandbox's are done in the same run, even when Stripe's payments alone would
fill the batch."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from payments_svc.auth.caller import Caller
from payments_svc.clock import utcnow
from payments_svc.db.tables import payments
from payments_svc.domain.enums import PaymentStatus, ProviderType
from payments_svc.jobs.expire import PendingExpirer
from payments_svc.jobs.reconcile import Reconciler

from ..fakes.stripe_server import FakeStripe
from .helpers import command

SHOP = Caller("shop")


@pytest.fixture
async def stripe():
    async with FakeStripe() as fake:
        yield fake


@pytest.fixture
async def service(make_container, stripe):
    container = await make_container(
        STRIPE_SECRET_KEY=stripe.secret_key, STRIPE_WEBHOOK_SECRET="whsec_lanes", STRIPE_API_BASE=stripe.url,
        PAYMENTS_SANDBOX_ENABLED="true", PAYMENTS_JOB_BATCH_SIZE="2", PAYMENTS_PENDING_TIMEOUT_SECONDS="600",
        PAYMENTS_RECONCILE_STALE_AFTER_SECONDS="60",
    )
    yield container.service
    await container.close()


async def created(service, provider: ProviderType, count: int, *, age_seconds: float) -> list:
    """`count` payments of `provider`, created and last changed `age_seconds` ago, the
    Stripe ones first (so older): the order the jobs used to take them in."""
    made = [(await service.create_payment(SHOP, command(f"{provider.code}-{i}", provider=int(provider)))).payment
            for i in range(count)]
    then = utcnow() - timedelta(seconds=age_seconds)
    async with service.db.transaction() as conn:
        await conn.execute(payments.update().where(payments.c.id.in_([p.id for p in made]))
                           .values(created_at=then, updated_at=then))
    return made


async def status(service, payment) -> PaymentStatus:
    return (await service.get_payment(SHOP, payment.id)).status


async def test_expiry_of_the_sandboxs_payments_goes_on_while_stripe_fails(service, stripe):
    at_stripe = await created(service, ProviderType.STRIPE, 2, age_seconds=3600)
    sandbox = await created(service, ProviderType.SANDBOX, 1, age_seconds=700)
    stripe.fail_next(100, status=503)  # Stripe is down: every expire call fails

    result = await PendingExpirer(service).run_batch(asyncio.Event())

    assert (result.claimed, result.done, result.failed) == (3, 1, 2)  # the run fails, and says for what
    assert await status(service, sandbox[0]) == PaymentStatus.EXPIRED
    assert [await status(service, p) for p in at_stripe] == [PaymentStatus.PENDING] * 2


async def test_reconcile_of_the_sandboxs_payments_goes_on_while_stripe_fails(service, stripe):
    at_stripe = await created(service, ProviderType.STRIPE, 2, age_seconds=3600)
    sandbox = await created(service, ProviderType.SANDBOX, 1, age_seconds=120)
    stripe.fail_next(100, status=503)

    result = await Reconciler(service).run_batch(asyncio.Event())

    assert (result.claimed, result.done, result.failed) == (3, 1, 2)
    async with service.db.read() as conn:
        attempts = dict((await conn.execute(
            payments.select().with_only_columns(payments.c.id, payments.c.reconcile_attempts))).all())
    assert attempts == {at_stripe[0].id: 1, at_stripe[1].id: 1, sandbox[0].id: 1}  # each checked once
