"""VNPay end to end: a real `payments-svc serve` (SQLite and MariaDB) with the fake VNPay
as its gateway, driven over gRPC and HTTP. The customer pays on the fake's page and the
fake calls the server's IPN URL (GET /webhooks/vnpay) as VNPay does; what the server
answers VNPay, and what it changes, is checked for genuine, replayed and forged IPNs."""

from __future__ import annotations

import asyncio
import time
import uuid
from urllib.parse import parse_qsl, urlsplit

import aiohttp
import pytest

from tests.stripe.conftest import ApiError, db_rows, new_id

from ..support import cli

PENDING, PROCESSING, PAID, FAILED, CANCELED = 2, 3, 10, 20, 30
PROCESSED, REJECTED, DUPLICATE = 10, 20, 30


def vnd_fields(api, **overrides):
    # Over HTTP the provider goes by its name, as callers may send it.
    fields = dict(request_id=new_id("req"), caller_service="shop", resource_type="order", resource_id=new_id("order"),
                  amount_cents=150000, currency="vnd", payment_method=1, payment_type=1,
                  provider=3 if api.transport == "grpc" else "vnpay",
                  status_callback_url="https://shop.example/payments/cb", metadata={"cart": "42"})
    fields.update(overrides)
    return fields


async def vnd_payment(api, **overrides):
    return await api.create(**vnd_fields(api, **overrides))


def callbacks_of(deployment, payment) -> list[tuple]:
    return db_rows(deployment.database, "SELECT status, error FROM payment_callbacks WHERE provider = 'vnpay' AND "
                   "payload_json LIKE ? ORDER BY id", f"%vnp_TxnRef={payment['provider_payment_id']}%")


async def test_a_vnd_payment_is_paid_through_the_ipn_then_refunded(api, fake, deployment):
    payment = await vnd_payment(api)
    assert (payment["status"], payment["provider"], payment["currency"]) == (PENDING, 3, "VND")
    assert payment["provider_payment_id"] == uuid.UUID(payment["provider_callback_hash"]).hex
    assert payment["checkout_url"].startswith(fake.payment_url + "?")
    params = dict(parse_qsl(urlsplit(payment["checkout_url"]).query))
    assert params["vnp_Amount"] == "15000000" and params["vnp_ReturnUrl"] == deployment.server.http_url + "/vnpay/return"

    delivery = await fake.pay(payment["checkout_url"])
    assert (delivery.http_status, delivery.answer) == (200, {"RspCode": "00", "Message": "Confirm Success"})
    paid = await api.get(payment["id"])
    assert (paid["status"], paid["refundable_cents"], paid["callback_type"]) == (PAID, 150000, "payment.paid")
    assert "vnpay.ipn" in [e["event_type"] for e in await api.events(payment["id"])]

    after, refund = await api.refund(payment["id"], "refund-1", 50000)
    assert (refund["amount_cents"], after["refunded_cents"], after["refundable_cents"]) == (50000, 50000, 100000)
    again, same = await api.refund(payment["id"], "refund-1", 50000)  # a retry: the same refund, not another
    assert same["id"] == refund["id"] and again["refunded_cents"] == 50000
    final, rest = await api.refund(payment["id"], "refund-2")  # all that is left
    assert (rest["amount_cents"], final["refunded_cents"], final["refundable_cents"]) == (100000, 150000, 0)
    with pytest.raises(ApiError, match="nothing left to refund"):
        await api.refund(payment["id"], "refund-3")
    made = fake.transaction(payment["provider_payment_id"]).refunds
    assert [(r["type"], r["amount"]) for r in made] == [("03", 5000000), ("03", 10000000)]

    whole = await vnd_payment(api)
    await fake.pay(whole["checkout_url"])
    await api.refund(whole["id"], "refund-all")
    assert [r["type"] for r in fake.transaction(whole["provider_payment_id"]).refunds] == ["02"]
    assert (await api.get(whole["id"]))["refunded_cents"] == 150000


async def test_a_replayed_ipn_is_answered_02_and_changes_nothing(http, fake, deployment):
    payment = await vnd_payment(http)
    delivery = await fake.pay(payment["checkout_url"])
    assert delivery.rsp_code == "00"
    before = (await http.get(payment["id"]), await http.events(payment["id"]))
    replayed = await fake.send_ipn(delivery.params)  # VNPay calls again, e.g. our answer was lost
    assert replayed.answer == {"RspCode": "02", "Message": "Order already confirmed"}
    assert (await http.get(payment["id"]), await http.events(payment["id"])) == before
    assert [s for s, _ in callbacks_of(deployment, payment)] == [PROCESSED, DUPLICATE]
    deliveries = db_rows(deployment.database, "SELECT event_type FROM callback_deliveries WHERE payment_id = ?",
                         payment["id"])
    assert deliveries == [("payment.paid",)]  # the caller hears of it once


async def test_forged_and_wrong_ipns_are_refused_and_change_nothing(http, fake, deployment):
    payment = await vnd_payment(http)
    fake.open(payment["checkout_url"])
    genuine = fake.sign({
        "vnp_Amount": "15000000", "vnp_BankCode": "NCB", "vnp_OrderInfo": "x", "vnp_PayDate": "20260101120000",
        "vnp_ResponseCode": "00", "vnp_TmnCode": fake.tmn_code, "vnp_TransactionNo": "1", "vnp_TransactionStatus": "00",
        "vnp_TxnRef": payment["provider_payment_id"],
    })
    cases = [
        ({**genuine, "vnp_SecureHash": "ab" * 64}, "97", "invalid vnp_SecureHash"),
        ({**genuine, "vnp_Amount": "100"}, "97", "invalid vnp_SecureHash"),  # changed after VNPay signed it
        ({k: v for k, v in genuine.items() if k != "vnp_SecureHash"}, "97", None),  # unsigned
        (fake.sign({**genuine, "vnp_TmnCode": "OTHERTMN"}), "97", "not this service's VNPay terminal"),
        (fake.sign({**genuine, "vnp_Amount": "14000000"}), "04", "the event reports an amount of 140000"),
        (fake.sign({**genuine, "vnp_TxnRef": uuid.uuid4().hex}), "01", "no payment for the event's objects"),
        (fake.sign({**genuine, "vnp_TxnRef": "ORDER42"}), "01", "no payment for the event's objects"),
    ]
    for params, code, recorded in cases:
        delivery = await fake.send_ipn(params)
        assert (delivery.http_status, delivery.rsp_code) == (200, code), params
        if recorded:
            rows = db_rows(deployment.database, "SELECT status, error FROM payment_callbacks WHERE provider = 'vnpay' "
                           "ORDER BY id DESC LIMIT 1")
            assert rows[0][0] == REJECTED and recorded in rows[0][1]
    current = await http.get(payment["id"])
    assert (current["status"], current["attention_required"]) == (PENDING, False)
    assert [e["event_type"] for e in await http.events(payment["id"])] == ["payment_created", "checkout_created"]
    # Nothing was used up: the customer's real payment still goes through.
    assert (await fake.pay(payment["checkout_url"])).rsp_code == "00"
    assert (await http.get(payment["id"]))["status"] == PAID


async def test_an_ipn_url_without_parameters_is_answered_too(http, deployment):
    async with aiohttp.ClientSession() as session, session.get(deployment.server.http_url + "/webhooks/vnpay") as response:
        assert (response.status, await response.json()) == (200, {"RspCode": "97", "Message": "Invalid signature"})


async def test_a_customer_who_cancels_or_fails_at_vnpay_fails_the_payment(api, fake):
    canceled = await vnd_payment(api)
    assert (await fake.cancel(canceled["checkout_url"])).rsp_code == "00"
    current = await api.get(canceled["id"])
    assert (current["status"], current["failure_reason"]) == (
        FAILED, "VNPay: the customer canceled the payment (response code 24)")
    assert current["callback_type"] == "payment.failed"

    poor = await vnd_payment(api)
    await fake.fail(poor["checkout_url"], "51")
    assert (await api.get(poor["id"]))["failure_reason"] == "VNPay: the account's balance is insufficient (response code 51)"


async def test_a_payment_held_for_fraud_review_waits_for_the_merchant(api, fake):
    payment = await vnd_payment(api)
    await fake.fail(payment["checkout_url"], "07")
    current = await api.get(payment["id"])
    assert (current["status"], current["attention_required"]) == (PROCESSING, True)
    with pytest.raises(ApiError, match="suspected of fraud"):
        await api.cancel(payment["id"])


async def test_a_cancel_asks_vnpay_and_a_later_payment_is_flagged(api, fake):
    payment = await vnd_payment(api)
    fake.open(payment["checkout_url"])
    canceled = await api.cancel(payment["id"], "customer changed their mind")
    assert canceled["status"] == CANCELED
    # VNPay cannot cancel its payment URL: a customer still on the page may pay.
    late = await fake.pay(payment["checkout_url"])
    assert late.answer == {"RspCode": "02", "Message": "Order already confirmed"}
    current = await api.get(payment["id"])
    assert (current["status"], current["attention_required"]) == (CANCELED, True)
    assert any(e["needs_attention"] for e in await api.events(payment["id"]))

    paid = await vnd_payment(api)
    fake.ipn_url, ipn_url = "http://127.0.0.1:9/lost", fake.ipn_url  # the IPN never arrives
    try:
        await fake.pay(paid["checkout_url"])
    finally:
        fake.ipn_url = ipn_url
    with pytest.raises(ApiError, match="paid payments cannot be canceled"):
        await api.cancel(paid["id"])
    assert (await api.get(paid["id"]))["status"] == PAID  # querydr said so


async def test_the_return_page_shows_the_result_and_changes_nothing(http, fake, deployment):
    payment = await vnd_payment(http, success_url="https://shop.example/thanks", cancel_url="https://shop.example/cart")
    fake.ipn_url, ipn_url = "http://127.0.0.1:9/lost", fake.ipn_url  # only the browser comes back
    try:
        paid = await fake.pay(payment["checkout_url"])
        plain = await vnd_payment(http)
        failed = await fake.cancel(plain["checkout_url"])
    finally:
        fake.ipn_url = ipn_url
    async with aiohttp.ClientSession() as browser:
        async with browser.get(paid.return_url, allow_redirects=False) as page:
            assert (page.status, page.headers["Location"]) == (303, "https://shop.example/thanks")
        async with browser.get(failed.return_url) as page:
            assert page.status == 200 and "the customer canceled the payment" in await page.text()
        forged = paid.return_url.replace("vnp_ResponseCode=00", "vnp_ResponseCode=24")
        async with browser.get(forged, allow_redirects=False) as page:
            assert page.status == 400 and "not reached from VNPay" in await page.text()
    for p in (payment, plain):
        assert (await http.get(p["id"]))["status"] == PENDING  # only the IPN, or reconcile, changes it


async def test_reconcile_asks_vnpay_when_the_ipn_was_lost(http, fake, deployment):
    payment = await vnd_payment(http)
    fake.ipn_url, ipn_url = "http://127.0.0.1:9/lost", fake.ipn_url
    try:
        await fake.pay(payment["checkout_url"])
    finally:
        fake.ipn_url = ipn_url
    assert (await http.get(payment["id"]))["status"] == PENDING
    deadline = time.monotonic() + 30
    while (await http.get(payment["id"]))["status"] != PAID:  # stale after 0.2 s: the next run finds it
        assert time.monotonic() < deadline, "reconcile did not settle the payment"
        await asyncio.to_thread(cli, deployment.server.env, "reconcile")
    assert "payment_reconciled" in [e["event_type"] for e in await http.events(payment["id"])]


@pytest.mark.parametrize("provider", ["vnpay", "PROVIDER_TYPE_VNPAY", 3])
async def test_vnpay_is_named_like_every_provider(http, provider):
    payment = await http.create(**vnd_fields(http, provider=provider))
    assert payment["provider"] == 3
    status, listed = await http.request("GET", "/payments?provider=vnpay&caller_service=shop&limit=500")
    assert status == 200 and payment["id"] in [p["id"] for p in listed["payments"]]


async def test_what_vnpay_refuses_is_a_clear_400(http):
    for overrides, message in (({"currency": "usd"}, "currency must be VND with the vnpay provider"),
                               ({"payment_method": 2}, "payment_method must be hosted_card"),
                               ({"metadata": {"vnp_Locale": "de"}}, "metadata vnp_Locale must be one of vn, en")):
        status, answer = await http.request("POST", "/payments", vnd_fields(http, **overrides))
        assert status == 400 and answer["error"].startswith(message)


def test_the_hash_secret_is_never_logged(deployment, fake):
    assert fake.hash_secret not in deployment.server.logs()
