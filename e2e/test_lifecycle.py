"""Full lifecycles through every provider (see providers.py), over gRPC and over HTTP,
against the real server and workers: create → pay → the signed status callback at
the caller's receiver; decline; cancel; refund; reconcile finding what no webhook
said; expire."""

from __future__ import annotations

import asyncio

import pytest
from tests.jobs.helpers import verify_standard_webhook  # the spec-derived verifier, independent of the service

from .clients import (
    CANCELED,
    DELIVERY_SUCCESS,
    EXPIRED,
    FAILED,
    PAID,
    PENDING,
    ApiError,
    GrpcApi,
    HttpApi,
    eventually,
    new_id,
)
from .conftest import PENDING_TIMEOUT_SECONDS

CALLBACK_TIMEOUT = 15.0


async def status_of(api, payment_id: int, wanted: int, timeout: float = 15.0) -> dict:
    async def check():
        current = await api.get(payment_id)
        return current if current["status"] == wanted else None
    return await eventually(check, timeout, what=f"payment {payment_id} reaching status {wanted}")


async def delivered(api, payment_id: int, event_type: str) -> dict:
    """The payment once its latest callback (of event_type) is delivered."""
    async def check():
        current = await api.get(payment_id)
        d = current["callback_delivery"] or {}
        return current if d.get("event_type") == event_type and d.get("status") == DELIVERY_SUCCESS else None
    return await eventually(check, CALLBACK_TIMEOUT, what=f"{event_type} delivery of payment {payment_id} succeeding")


async def assert_callback(deployment, receiver, api, payment: dict, event_type: str, status: int) -> dict:
    """The caller received exactly one `event_type` callback for the payment (by
    webhook-id), signed per Standard Webhooks with its secret; returns the body."""
    current = await delivered(api, payment["id"], event_type)
    got = await receiver.wait_for(payment["id"], event_type, CALLBACK_TIMEOUT)
    same = receiver.for_payment(payment["id"], event_type)
    assert {r.webhook_id for r in same} == {current["callback_delivery"]["delivery_id"]}
    assert len(same) == 1, f"{event_type} arrived {len(same)} times"
    assert verify_standard_webhook(deployment.signing_secret, got.headers, got.body), got.headers
    assert got.headers["x-request-id"] == payment["request_id"]
    assert got.headers["content-type"].startswith("application/json")
    assert "x-api-key" not in got.headers  # the service never hands out its own key
    body = got.json
    assert body["type"] == event_type and body["payment"]["id"] == payment["id"]
    assert body["payment"]["status"] == status
    return body


async def test_create_pay_and_the_callback_arrives_signed(deployment, receiver, api, driver):
    fields = driver.fields(receiver.url(new_id("cb")))
    payment = await api.create(**fields)
    assert payment["status"] == PENDING and payment["provider"] == driver.provider and not payment["_replayed"]
    assert payment["provider_payment_id"] and payment["checkout_url"]
    again = await api.create_replayed(**fields)  # the same request again: the same payment
    assert again["id"] == payment["id"] and again["_replayed"]

    await driver.pay(api, payment)
    paid = await status_of(api, payment["id"], PAID)
    if driver.can_refund:
        assert paid["refundable_cents"] == fields["amount_cents"]
    body = await assert_callback(deployment, receiver, api, payment, "payment.paid", PAID)
    assert body["payment"]["request_id"] == fields["request_id"] and body["payment"]["amount_cents"] == 1500

    events = [e["event_type"] for e in await api.events(payment["id"])]
    assert "callback_dispatched" in events, events
    with pytest.raises(ApiError) as refused:  # paid is final
        await api.cancel(payment["id"], "too late")
    assert refused.value.code in (400, "INVALID_ARGUMENT")  # the reference's "invalid status"


async def test_decline_fails_the_payment_and_tells_the_caller(deployment, receiver, api, driver):
    if not driver.can_decline:
        pytest.skip(f"{driver.name}: a buyer cannot decline (nothing is sent until they pay)")
    payment = await api.create(**driver.fields(receiver.url(new_id("cb"))))
    await driver.decline(api, payment)
    failed = await status_of(api, payment["id"], FAILED)
    assert failed["failure_reason"]
    await assert_callback(deployment, receiver, api, payment, "payment.failed", FAILED)


async def test_cancel_stops_the_payment_at_the_provider_and_tells_the_caller(deployment, receiver, api, driver):
    payment = await api.create(**driver.fields(receiver.url(new_id("cb"))))
    canceled = await api.cancel(payment["id"], "customer changed their mind")
    assert canceled["status"] == CANCELED and canceled["cancel_reason"] == "customer changed their mind"
    if driver.cancel_stops_payment:
        assert driver.stopped_at_provider(payment)
    else:
        # Nothing stops it at the provider: a customer who still pays is recorded on the
        # canceled payment for an operator (attention_required), and it stays CANCELED.
        await driver.pay(api, payment)
        flagged = await eventually(lambda: _flagged(api, payment["id"]), what="the late payment flagged for attention")
        assert flagged["status"] == CANCELED
    await assert_callback(deployment, receiver, api, payment, "payment.canceled", CANCELED)
    again = await api.cancel(payment["id"], "customer changed their mind")  # idempotent
    assert again["status"] == CANCELED


async def test_refund_in_part_then_in_full(deployment, receiver, api, driver):
    payment = await api.create(**driver.fields(receiver.url(new_id("cb"))))
    await driver.pay(api, payment)
    await status_of(api, payment["id"], PAID)
    if not driver.can_refund:
        with pytest.raises(ApiError) as refused:
            await api.refund(payment["id"], new_id("refund"), 500)
        assert refused.value.code in (400, "FAILED_PRECONDITION")
        assert "cannot be refunded" in refused.value.message
        return
    await delivered(api, payment["id"], "payment.paid")

    mark = driver.marker()
    after, refund = await api.refund(payment["id"], "refund-1", 500, "requested_by_customer")
    assert (refund["amount_cents"], after["refunded_cents"], after["refundable_cents"]) == (500, 500, 1000)
    await driver.after_refund(api, payment, mark)
    replay, same = await api.refund(payment["id"], "refund-1", 500, "requested_by_customer")
    assert same["id"] == refund["id"] and replay["refunded_cents"] == 500
    body = await assert_callback(deployment, receiver, api, payment, "payment.refunded", PAID)
    assert body["payment"]["refunded_cents"] in (500, 1500)  # built when sent

    mark = driver.marker()
    final, rest = await api.refund(payment["id"], "refund-2")  # 0: all that is left
    assert (rest["amount_cents"], final["refunded_cents"], final["refundable_cents"]) == (1000, 1500, 0)
    await driver.after_refund(api, payment, mark)
    with pytest.raises(ApiError, match="nothing left to refund"):
        await api.refund(payment["id"], "refund-3")
    await eventually(lambda: _true(len(receiver.for_payment(payment["id"], "payment.refunded")) >= 2), CALLBACK_TIMEOUT,
                     what="the second payment.refunded callback")
    refunds = receiver.for_payment(payment["id"], "payment.refunded")
    assert len({r.webhook_id for r in refunds}) == len(refunds) == 2  # one per change, each once
    assert all(verify_standard_webhook(deployment.signing_secret, r.headers, r.body) for r in refunds)
    current = await api.get(payment["id"])
    assert (current["status"], current["refunded_cents"], current["refundable_cents"]) == (PAID, 1500, 0)


async def test_reconcile_finds_a_payment_no_webhook_announced(deployment, receiver, http):
    """Paid at Stripe, its webhook lost: the reconcile worker asks Stripe and settles it."""
    driver = deployment.drivers.get("stripe")
    if driver is None:
        pytest.skip(f"stripe: {deployment.skipped.get('stripe')}")
    payment = await http.create(**driver.fields(receiver.url(new_id("cb"))))
    driver.fake.complete_session(payment["provider_payment_id"])  # the events are never delivered
    paid = await status_of(http, payment["id"], PAID, timeout=20)
    assert "payment_reconciled" in [e["event_type"] for e in await http.events(paid["id"])]
    await assert_callback(deployment, receiver, http, payment, "payment.paid", PAID)


async def test_reconcile_asks_vnpay_when_its_ipn_was_lost(deployment, receiver, http):
    """Paid at VNPay, its IPN never delivered: the reconcile worker asks querydr and settles it."""
    driver = deployment.drivers.get("vnpay")
    if driver is None:
        pytest.skip(f"vnpay: {deployment.skipped.get('vnpay')}")
    payment = await http.create(**driver.fields(receiver.url(new_id("cb"))))
    driver.fake.ipn_url, ipn_url = "http://127.0.0.1:9/lost", driver.fake.ipn_url
    try:
        assert (await driver.fake.pay(payment["checkout_url"])).answer is None
    finally:
        driver.fake.ipn_url = ipn_url
    paid = await status_of(http, payment["id"], PAID, timeout=20)
    assert "payment_reconciled" in [e["event_type"] for e in await http.events(paid["id"])]
    await assert_callback(deployment, receiver, http, payment, "payment.paid", PAID)


async def test_unpaid_payments_expire_at_every_provider(deployment, receiver):
    """One payment per provider (alternating transports), left unpaid: the expire worker
    stops each at its provider and marks it EXPIRED, and the caller hears of it."""
    server = deployment.stack.server
    apis = [GrpcApi(server.grpc_target, deployment.api_key), HttpApi(server.http_url, deployment.api_key)]
    try:
        created = []
        for i, driver in enumerate(deployment.drivers.values()):
            api = apis[i % 2]
            created.append((driver, api, await api.create(**driver.fields(receiver.url(new_id("cb"))))))
        await asyncio.sleep(PENDING_TIMEOUT_SECONDS / 2)
        for _, api, payment in created:  # not before its time
            assert (await api.get(payment["id"]))["status"] == PENDING
        for driver, api, payment in created:
            await status_of(api, payment["id"], EXPIRED, timeout=PENDING_TIMEOUT_SECONDS + 10)
            assert driver.stopped_at_provider(payment), driver.name
            await assert_callback(deployment, receiver, api, payment, "payment.expired", EXPIRED)
            assert "payment_expired" in [e["event_type"] for e in await api.events(payment["id"])]
    finally:
        for api in apis:
            await api.close()


async def test_a_rotated_signing_secret_signs_alongside_the_old_one(deployment, receiver, http):
    """`keys signing-secret --rotate`: until the grace period ends both secrets sign, so
    a caller verifying with either accepts the callback; without --rotate it shows the
    current secret again."""
    old = deployment.signing_secret
    assert deployment.cli("keys", "signing-secret", "--service", "e2e-shop").strip() == old
    new = deployment.cli("keys", "signing-secret", "--service", "e2e-shop", "--rotate", "--grace-hours", "1").strip()
    assert new.startswith("whsec_") and new != old
    driver = deployment.drivers["sandbox"]
    payment = await http.create(**driver.fields(receiver.url(new_id("cb"))))
    await driver.pay(http, payment)
    got = await receiver.wait_for(payment["id"], "payment.paid", CALLBACK_TIMEOUT)
    assert len(got.headers["webhook-signature"].split(" ")) == 2
    assert verify_standard_webhook(old, got.headers, got.body) and verify_standard_webhook(new, got.headers, got.body)


async def _true(value):
    return value


async def _flagged(api, payment_id: int) -> dict | None:
    current = await api.get(payment_id)
    return current if current["attention_required"] else None
