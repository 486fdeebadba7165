"""The sandbox provider's own answers, in-process: with PAYMENTS_SANDBOX_DELAY_MS it still
creates the checkout (after the delay: it stands in for a slow provider), and VerifyPayment
on a sandbox payment reports the payment's own status, the only state the sandbox has."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib

from payments_svc.auth.caller import Caller
from payments_svc.domain.enums import PaymentStatus, ProviderType
from payments_svc.domain.payment import ProviderCallback
from payments_svc.providers.base import Verification, provider_idempotency_key
from payments_svc.service.verify import VerifyService

from ..jobs.helpers import command

SHOP = Caller("shop")
BASE_URL = "https://pay.example"


async def test_a_slow_sandbox_creates_the_checkout_after_its_delay(make_container):
    container = await make_container(PAYMENTS_SANDBOX_DELAY_MS="200", PAYMENTS_PUBLIC_BASE_URL=BASE_URL)
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        result = await container.service.create_payment(SHOP, command("slow-sandbox"))
        waited = loop.time() - started
    finally:
        await container.close()
    payment = result.payment
    key = provider_idempotency_key("shop", "slow-sandbox", "create")
    assert (payment.status, payment.provider, payment.provider_payment_id, payment.checkout_url) == (
        PaymentStatus.PENDING, ProviderType.SANDBOX, "sbx_" + hashlib.sha256(key.encode()).hexdigest()[:24],
        f"{BASE_URL}/sandbox/checkout/{payment.provider_callback_hash}")
    assert waited >= 0.15  # a lower bound only (the delay is 0.2 s): a loaded machine only adds to it


async def test_the_sandbox_verifies_a_payment_as_its_own_status(container):
    """Verify reports each status the payment has, as the status to apply and in lower case for the caller."""
    payment = (await container.service.create_payment(SHOP, command("verify-each"))).payment
    sandbox = container.service.providers.get(ProviderType.SANDBOX)
    for status in PaymentStatus:
        answer = await sandbox.verify(dataclasses.replace(payment, status=status))
        assert answer == Verification(status, status.name.lower(), read_feed=False), status


async def test_verify_payment_on_the_sandbox_reports_pending_paid_and_canceled_and_changes_nothing(container):
    service = container.service
    sandbox = service.providers.get(ProviderType.SANDBOX)
    pending = (await service.create_payment(SHOP, command("v-pending"))).payment
    paid = (await service.create_payment(SHOP, command("v-paid"))).payment
    body, signature = sandbox.build_event(paid, "pay")
    await service.handle_provider_callback(ProviderCallback("rq", "sandbox", paid.provider_callback_hash, signature, body))
    canceled = (await service.create_payment(SHOP, command("v-canceled"))).payment
    await service.cancel_payment(SHOP, canceled.id)

    answers = [await VerifyService(service).verify(SHOP, p.id) for p in (pending, paid, canceled)]
    assert [(r.payment.id, r.payment.status, r.provider_status, r.changed, r.old_status) for r in answers] == [
        (pending.id, PaymentStatus.PENDING, "pending", False, PaymentStatus.PENDING),
        (paid.id, PaymentStatus.PAID, "paid", False, PaymentStatus.PAID),
        (canceled.id, PaymentStatus.CANCELED, "canceled", False, PaymentStatus.CANCELED),
    ]
