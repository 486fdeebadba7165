"""Stripe end to end: a real `payments-svc serve` (SQLite and MariaDB) talking to the
fake Stripe, driven over gRPC and over HTTP. Webhooks reach it as Stripe sends them
(HTTP: the account-level /webhooks/stripe) and as a gateway forwards them (gRPC:
HandleProviderCallback with the payment's callback hash). Every test works on its own
payments, so the module shares one server per backend."""

from __future__ import annotations

import json
import time

import pytest

from payments_svc.providers.base import provider_idempotency_key
from tests.fakes.stripe_server import sign_event

from .conftest import (
    CANCELED,
    EXPIRED,
    FAILED,
    OLD_WEBHOOK_SECRET,
    PAID,
    PAYMENT_LINK,
    PENDING,
    PROCESSING,
    WEBHOOK_SECRET,
    ApiError,
    GrpcApi,
    db_rows,
    new_id,
    payment_fields,
    subscription_fields,
)

REFUND_SUCCEEDED, REFUND_FAILED = 10, 20


def requests_of(fake, path_prefix: str, since: int = 0):
    return [r for r in fake.requests[since:] if r.path.startswith(path_prefix)]


def session_creates(fake, payment) -> list:
    """The POSTs that created the payment's Checkout Session (the fake serves both
    backends, whose payment ids overlap: matched by request_id)."""
    return [r for r in requests_of(fake, "/v1/checkout/sessions") if r.method == "POST"
            and (r.params.get("metadata") or {}).get("request_id") == payment["request_id"]]


async def deliver_all(api, events, payment) -> None:
    for event in events:
        await api.deliver(event, payment)


async def paid_payment(api, fake, **overrides):
    payment = await api.create(**payment_fields(**overrides))
    await deliver_all(api, fake.complete_session(payment["provider_payment_id"]), payment)
    return await api.get(payment["id"])


async def test_create_pay_then_refund_in_part_and_in_full(api, fake):
    fields = payment_fields(success_url="https://shop.example/thanks")
    payment = await api.create(**fields)
    assert payment["status"] == PENDING and payment["provider_payment_id"].startswith("cs_test_")
    assert payment["checkout_url"] == f"https://checkout.stripe.com/c/pay/{payment['provider_payment_id']}"

    (created,) = session_creates(fake, payment)
    assert created.params["client_reference_id"] == str(payment["id"])
    assert created.idempotency_key == provider_idempotency_key("shop", fields["request_id"], "create")
    reference = {"payment_id": str(payment["id"]), "request_id": fields["request_id"],
                 "callback_hash": payment["provider_callback_hash"]}
    assert created.params["metadata"] == {"cart": "42", **reference}
    assert created.params["payment_intent_data"] == {"metadata": reference}
    assert created.params["success_url"] == "https://shop.example/thanks"
    assert created.params["cancel_url"].endswith("/stripe/return?state=cancel")
    assert created.params["line_items"][0]["price_data"]["unit_amount"] == 1500
    assert 3500 <= created.params["expires_at"] - time.time() <= 3600  # the 60 minute pending timeout

    await deliver_all(api, fake.complete_session(payment["provider_payment_id"]), payment)
    paid = await api.get(payment["id"])
    assert (paid["status"], paid["refunded_cents"], paid["refundable_cents"]) == (PAID, 0, 1500)
    assert paid["callback_type"] == "payment.paid"

    refunds_before = len(requests_of(fake, "/v1/refunds"))
    after, refund = await api.refund(payment["id"], "refund-1", 500, "requested_by_customer")
    assert (refund["status"], refund["amount_cents"], refund["request_id"]) == (REFUND_SUCCEEDED, 500, "refund-1")
    assert refund["provider_refund_id"].startswith("re_")
    assert (after["refunded_cents"], after["refundable_cents"]) == (500, 1000)
    # Stripe's events about our own refund change nothing more.
    await deliver_all(api, fake.events[-2:], payment)
    again, same = await api.refund(payment["id"], "refund-1", 500, "requested_by_customer")
    assert same["id"] == refund["id"] and (again["refunded_cents"], again["refundable_cents"]) == (500, 1000)

    with pytest.raises(ApiError) as too_much:
        await api.refund(payment["id"], "refund-2", 1001)
    assert too_much.value.code in (400, "FAILED_PRECONDITION")
    assert "more than refundable_cents 1000" in too_much.value.message
    with pytest.raises(ApiError) as reused:
        await api.refund(payment["id"], "refund-1", 600)
    assert reused.value.code in (422, "FAILED_PRECONDITION")

    final, rest = await api.refund(payment["id"], "refund-3")  # 0: all that is left
    assert rest["amount_cents"] == 1000 and (final["refunded_cents"], final["refundable_cents"]) == (1500, 0)
    await deliver_all(api, fake.events[-2:], payment)
    with pytest.raises(ApiError, match="nothing left to refund"):
        await api.refund(payment["id"], "refund-4")

    refunded = await api.get(payment["id"])
    assert (refunded["status"], refunded["refunded_cents"], refunded["refundable_cents"]) == (PAID, 1500, 0)
    assert refunded["callback_type"] == "payment.refunded"
    posts = [r for r in requests_of(fake, "/v1/refunds")[refunds_before:] if r.method == "POST"]
    assert [r.params["amount"] for r in posts] == [500, 1000]  # the replay never reached Stripe twice
    assert all(r.idempotency_key for r in posts)


async def test_refund_rules(api, fake):
    unpaid = await api.create(**payment_fields())
    with pytest.raises(ApiError, match="only paid payments can be refunded"):
        await api.refund(unpaid["id"], "r-1")
    paid = await paid_payment(api, fake)
    with pytest.raises(ApiError) as bad_reason:
        await api.refund(paid["id"], "r-1", 100, "because")
    assert bad_reason.value.code in (400, "INVALID_ARGUMENT")
    with pytest.raises(ApiError) as missing:
        await api.refund(999_999_999, "r-1")
    assert missing.value.code in (404, "NOT_FOUND")

    # Refunded in the dashboard behind our back, its webhooks not here yet: Stripe
    # refuses ours. A refusal naming a parameter is INVALID_ARGUMENT, one about the
    # charge's state FAILED_PRECONDITION; both carry Stripe's message.
    intent = fake.get(paid["provider_payment_id"])["payment_intent"]
    fake.refund(payment_intent=intent, amount=1000)
    with pytest.raises(ApiError) as too_much:
        await api.refund(paid["id"], "r-2", 600)
    assert too_much.value.code in (400, "INVALID_ARGUMENT")
    assert "stripe: Refund amount ($6.00) is greater than unrefunded amount on charge ($5.00)" in too_much.value.message
    with pytest.raises(ApiError, match="greater than unrefunded amount"):  # the same answer on a retry
        await api.refund(paid["id"], "r-2", 600)
    fake.refund(payment_intent=intent)
    with pytest.raises(ApiError) as refunded:
        await api.refund(paid["id"], "r-3", 100)
    assert refunded.value.code in (400, "FAILED_PRECONDITION") and "has already been refunded" in refunded.value.message
    assert (await api.get(paid["id"]))["refundable_cents"] == 1500  # the reservations were released


@pytest.mark.parametrize("succeeded", [True, False])
async def test_delayed_payment_is_processing_until_stripe_settles_it(api, fake, succeeded):
    payment = await api.create(**payment_fields())
    await deliver_all(api, fake.complete_session(payment["provider_payment_id"], paid=False), payment)
    assert (await api.get(payment["id"]))["status"] == PROCESSING
    await deliver_all(api, fake.async_payment_result(payment["provider_payment_id"], succeeded), payment)
    settled = await api.get(payment["id"])
    assert settled["status"] == (PAID if succeeded else FAILED)
    if not succeeded:
        assert settled["failure_reason"] == "the delayed payment failed at Stripe"


async def test_subscription_renewals_are_announced_without_leaving_paid(api, fake):
    payment = await api.create(**subscription_fields())
    (created,) = session_creates(fake, payment)
    assert created.params["mode"] == "subscription"
    assert created.params["subscription_data"]["metadata"]["callback_hash"] == payment["provider_callback_hash"]
    assert created.params["line_items"][0]["price_data"]["recurring"] == {"interval": "month", "interval_count": 1}

    await deliver_all(api, fake.complete_session(payment["provider_payment_id"]), payment)  # completed, invoice.paid
    paid = await api.get(payment["id"])
    subscription = paid["provider_subscription_id"]
    assert paid["status"] == PAID and subscription.startswith("sub_")

    await deliver_all(api, fake.renew_subscription(subscription, succeeded=False), payment)
    failed_renewal = await api.get(payment["id"])
    assert (failed_renewal["status"], failed_renewal["callback_type"]) == (PAID, "payment.renewal_failed")
    await deliver_all(api, fake.renew_subscription(subscription), payment)
    renewed = await api.get(payment["id"])
    assert (renewed["status"], renewed["callback_type"]) == (PAID, "payment.renewed")
    await deliver_all(api, fake.cancel_subscription(subscription), payment)
    ended = await api.get(payment["id"])
    assert (ended["status"], ended["callback_type"]) == (PAID, "payment.subscription_canceled")

    types = [e["event_type"] for e in await api.events(payment["id"])]
    assert types[-5:] == ["checkout.session.completed", "invoice.paid", "invoice.payment_failed", "invoice.paid",
                          "customer.subscription.deleted"]
    assert all(e["new_status"] == PAID for e in (await api.events(payment["id"]))[-4:])


async def test_payment_link_is_paid_once_then_deactivated(api, fake):
    resource = new_id("plan")
    fields = payment_fields(payment_method=PAYMENT_LINK, resource_id=resource, success_url="https://shop.example/done")
    since = len(fake.requests)
    payment = await api.create(**fields)
    link_id = payment["provider_payment_id"]
    assert link_id.startswith("plink_") and payment["checkout_url"].startswith("https://buy.stripe.com/")
    link_request = next(r for r in requests_of(fake, "/v1/payment_links", since) if r.method == "POST")
    assert link_request.params["restrictions"] == {"completed_sessions": {"limit": 1}}
    assert link_request.params["after_completion"] == {"type": "redirect", "redirect": {"url": "https://shop.example/done"}}
    assert link_request.params["payment_intent_data"]["metadata"]["payment_id"] == str(payment["id"])
    key = provider_idempotency_key("shop", fields["request_id"], "create")
    assert {r.idempotency_key for r in fake.requests[since:] if r.method == "POST"} == {
        f"{key}-product", f"{key}-price", f"{key}-link"}

    await deliver_all(api, fake.pay_payment_link(link_id), payment)
    assert (await api.get(payment["id"]))["status"] == PAID
    assert fake.get(link_id)["active"] is False
    deactivations = [r for r in requests_of(fake, f"/v1/payment_links/{link_id}") if r.method == "POST"]
    assert deactivations and deactivations[0].params == {"active": False}  # released when it was paid
    with pytest.raises(ValueError, match="inactive"):
        fake.pay_payment_link(link_id)

    # The same thing sold again: its Product and Price are reused, not created again.
    since = len(fake.requests)
    await api.create(**payment_fields(payment_method=PAYMENT_LINK, resource_id=resource))
    posted = [r.path for r in fake.requests[since:] if r.method == "POST"]
    assert posted == ["/v1/payment_links"]
    assert link_request.params["line_items"] == next(
        r for r in fake.requests[since:] if r.path == "/v1/payment_links").params["line_items"]


async def test_cancel_acts_at_stripe_first(api, fake):
    session_payment = await api.create(**payment_fields())
    canceled = await api.cancel(session_payment["id"], "changed my mind")
    assert (canceled["status"], canceled["cancel_reason"]) == (CANCELED, "changed my mind")
    assert fake.get(session_payment["provider_payment_id"])["status"] == "expired"
    # Stripe's checkout.session.expired that follows changes nothing.
    await deliver_all(api, [fake.events[-1]], session_payment)
    assert (await api.get(session_payment["id"]))["status"] == CANCELED

    link_payment = await api.create(**payment_fields(payment_method=PAYMENT_LINK))
    assert (await api.cancel(link_payment["id"]))["status"] == CANCELED
    assert fake.get(link_payment["provider_payment_id"])["active"] is False

    # Paid at Stripe, its webhook not here yet: the payment becomes PAID, the cancel fails.
    paid_meanwhile = await api.create(**payment_fields())
    fake.complete_session(paid_meanwhile["provider_payment_id"])
    with pytest.raises(ApiError) as refused:
        await api.cancel(paid_meanwhile["id"])
    assert refused.value.code in (400, "INVALID_ARGUMENT")
    assert refused.value.message == "invalid status: paid payments cannot be canceled"
    assert (await api.get(paid_meanwhile["id"]))["status"] == PAID

    # A delayed payment in flight cannot be stopped.
    processing = await api.create(**payment_fields())
    fake.complete_session(processing["provider_payment_id"], paid=False)
    with pytest.raises(ApiError) as in_flight:
        await api.cancel(processing["id"])
    assert in_flight.value.code in (400, "FAILED_PRECONDITION")
    assert "still processing" in in_flight.value.message


async def test_the_same_event_twice_is_applied_once(api, fake, http, deployment):
    payment = await api.create(**payment_fields())
    (completed,) = fake.complete_session(payment["provider_payment_id"])
    await api.deliver(completed, payment)
    await api.deliver(completed, payment)  # Stripe retried
    await http.deliver(completed, payment)  # and through the other entrance
    assert (await api.get(payment["id"]))["status"] == PAID
    rows = db_rows(deployment.database, "SELECT status FROM payment_callbacks WHERE provider_event_id = ? ORDER BY id",
                   completed["id"])
    assert [r[0] for r in rows] == [10, 30, 30]  # PROCESSED, then DUPLICATE twice
    deliveries = db_rows(deployment.database, "SELECT event_type FROM callback_deliveries WHERE payment_id = ?", payment["id"])
    assert deliveries == [("payment.paid",)]


async def test_events_out_of_order_never_regress(api, fake):
    payment = await api.create(**payment_fields())
    completed = fake.complete_session(payment["provider_payment_id"], paid=False)
    succeeded = fake.async_payment_result(payment["provider_payment_id"], True)
    await deliver_all(api, succeeded, payment)
    await deliver_all(api, completed, payment)  # the older event, late
    current = await api.get(payment["id"])
    assert current["status"] == PAID
    late = (await api.events(payment["id"]))[-1]
    assert late["event_type"] == "checkout.session.completed" and "not an allowed transition" in late["message"]

    # A failure reported after the success: still PAID.
    failed = await api.create(**payment_fields())
    fake.complete_session(failed["provider_payment_id"], paid=False)
    (failure,) = fake.async_payment_result(failed["provider_payment_id"], False)
    success = dict(failure, id=new_id("evt"), type="checkout.session.async_payment_succeeded")
    await api.deliver(success, failed)
    await api.deliver(failure, failed)
    assert (await api.get(failed["id"]))["status"] == PAID


# (currency, our amount_cents, Stripe's unit_amount, a part to refund): amounts are minor units
# per ISO 4217 and equal Stripe's, except for ISK (two-decimal at Stripe) and MGA (zero-decimal there).
AMOUNTS = [
    ("usd", 1999, 1999, 999),
    ("jpy", 123456, 123456, 23456),
    ("kwd", 5120, 5120, 2560),
    ("isk", 500, 50000, 200),
    ("mga", 50000, 500, 20000),
]


@pytest.mark.parametrize("currency, amount, unit_amount, part", AMOUNTS, ids=[a[0] for a in AMOUNTS])
async def test_amounts_reach_stripe_in_its_units_and_come_back_in_ours(api, fake, currency, amount, unit_amount, part):
    payment = await paid_payment(api, fake, currency=currency, amount_cents=amount)
    (created,) = session_creates(fake, payment)
    assert created.params["line_items"][0]["price_data"]["unit_amount"] == unit_amount
    assert (payment["status"], payment["amount_cents"], payment["refundable_cents"]) == (PAID, amount, amount)

    since = len(fake.requests)
    after, refund = await api.refund(payment["id"], new_id("refund"), part)
    (sent,) = [r for r in requests_of(fake, "/v1/refunds", since) if r.method == "POST"]
    assert sent.params["amount"] == part * unit_amount // amount
    assert (refund["amount_cents"], after["refunded_cents"], after["refundable_cents"]) == (part, part, amount - part)

    # The rest refunded in the dashboard: Stripe's amounts come back in ours.
    intent = fake.get(payment["provider_payment_id"])["payment_intent"]
    for event in reversed(fake.refund(payment_intent=intent)):
        await api.deliver(event, payment)
    final = await api.get(payment["id"])
    assert (final["refunded_cents"], final["refundable_cents"]) == (amount, 0)


@pytest.mark.parametrize("currency, amount, step", [("kwd", 5125, 10), ("mga", 50050, 100)])
async def test_amounts_stripe_cannot_charge_are_refused_before_stripe_is_asked(api, fake, currency, amount, step):
    since = len(fake.requests)
    with pytest.raises(ApiError) as refused:
        await api.create(**payment_fields(currency=currency, amount_cents=amount))
    assert refused.value.code in (400, "INVALID_ARGUMENT")
    assert f"amount_cents must be a multiple of {step} for {currency.upper()} with Stripe" in refused.value.message
    assert requests_of(fake, "/v1/", since) == []

    payment = await paid_payment(api, fake, currency=currency, amount_cents=amount - amount % step)
    with pytest.raises(ApiError, match=f"multiple of {step}") as refused:
        await api.refund(payment["id"], new_id("refund"), step // 2)
    assert refused.value.code in (400, "INVALID_ARGUMENT")
    assert (await api.get(payment["id"]))["refundable_cents"] == amount - amount % step  # released


async def test_refunds_and_disputes_made_at_stripe(api, fake):
    payment = await paid_payment(api, fake)
    intent = fake.get(payment["provider_payment_id"])["payment_intent"]
    refund_created, charge_refunded = fake.refund(payment_intent=intent, amount=400)
    await api.deliver(charge_refunded, payment)  # the charge first: its refunds are fetched from Stripe
    current = await api.get(payment["id"])
    assert (current["refunded_cents"], current["refundable_cents"]) == (400, 1100)
    await api.deliver(refund_created, payment)  # then the refund itself: nothing new
    assert (await api.get(payment["id"]))["refunded_cents"] == 400

    (returned,) = fake.fail_refund(refund_created["data"]["object"]["id"])
    await api.deliver(returned, payment)
    reversed_ = await api.get(payment["id"])
    assert (reversed_["refunded_cents"], reversed_["refundable_cents"]) == (0, 1500)
    assert reversed_["callback_type"] == "payment.refund_reversed"
    await api.deliver(refund_created, payment)  # a stale snapshot never revives it
    assert (await api.get(payment["id"]))["refunded_cents"] == 0

    (dispute,) = fake.create_dispute(payment_intent=intent)
    await api.deliver(dispute, payment)
    disputed = await api.get(payment["id"])
    assert disputed["status"] == PAID and disputed["attention_required"] is True
    assert (await api.events(payment["id"]))[-1]["needs_attention"] is True


async def test_stripe_outage_leaves_the_create_to_a_retry(api, fake):
    fields = payment_fields()
    since = len(fake.requests)
    fake.fail_next(3, 503, "/v1/checkout/sessions")  # the SDK's two retries fail too
    with pytest.raises(ApiError) as unavailable:
        await api.create(**fields)
    assert unavailable.value.code in (503, "UNAVAILABLE")
    assert "Stripe is unavailable" in unavailable.value.message
    payment = await api.create(**fields)  # the caller's retry: same request_id, one Stripe session
    assert payment["status"] == PENDING
    assert [r.status for r in requests_of(fake, "/v1/checkout/sessions", since)] == [503, 503, 503, 200]
    assert len(session_creates(fake, payment)) == 1


async def test_unknown_event_types_are_acknowledged_and_recorded(api, fake, http, deployment):
    payment = await paid_payment(api, fake)
    about_it = {"id": new_id("evt"), "object": "event", "type": "payment_intent.created",
                "data": {"object": {"id": "pi_x", "object": "payment_intent",
                                    "metadata": {"callback_hash": payment["provider_callback_hash"]}}}}
    await api.deliver(about_it, payment)
    assert (await api.events(payment["id"]))[-1]["event_type"] == "payment_intent.created"
    unrelated = {"id": new_id("evt"), "object": "event", "type": "customer.created",
                 "data": {"object": {"id": "cus_x", "object": "customer"}}}
    await http.deliver(unrelated, payment)
    rows = db_rows(deployment.database, "SELECT status, payment_id FROM payment_callbacks WHERE provider_event_id = ?",
                   unrelated["id"])
    assert rows == [(40, None)]  # IGNORED


# ---- rejected webhooks --------------------------------------------------------


def _callback_rows(deployment, marker: str) -> list[tuple]:
    return db_rows(deployment.database, "SELECT status, error FROM payment_callbacks WHERE payload_json LIKE ? ORDER BY id",
                   f"%{marker}%")


async def _post(http, path: str, payload: bytes, signature: str | None, *, api_headers: bool) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers["Stripe-Signature"] = signature
    if not api_headers:
        async with http._session.post(http.base + path, data=payload, headers=headers) as response:
            return response.status, await response.json(content_type=None)
    return await http.request("POST", path, payload, headers)


@pytest.mark.parametrize("route", ["account", "per_payment"])
async def test_rejected_webhooks_get_the_reference_codes_and_are_recorded(http, fake, deployment, route):
    payment = await http.create(**payment_fields())
    (event,) = fake.expire_session(payment["provider_payment_id"])
    path = "/webhooks/stripe" if route == "account" else f"/webhooks/providers/stripe/{payment['provider_callback_hash']}"
    per_payment = route == "per_payment"

    def body(marker: str) -> bytes:
        return json.dumps(dict(event, id=marker)).encode()

    cases = {
        "bad_signature": (lambda p: sign_event(p, "whsec_someone_else"), 400, "callback rejected", "no v1 signature matches"),
        "stale": (lambda p: sign_event(p, OLD_WEBHOOK_SECRET, int(time.time()) - 301), 400, "callback rejected", "seconds old"),
    }
    for name, (signer, status, error, recorded) in cases.items():
        marker = new_id(f"evt_{name}")
        payload = body(marker)
        answer = await _post(http, path, payload, signer(payload), api_headers=per_payment)
        assert answer == (status, {"error": error, "code": "invalid_argument"}), name
        assert [(s, e and recorded in e) for s, e in _callback_rows(deployment, marker)] == [(20, True)], name

    malformed = b'{"id": "evt_malformed_' + new_id("m").encode() + b'", "type": '
    answer = await _post(http, path, malformed, sign_event(malformed, WEBHOOK_SECRET), api_headers=per_payment)
    assert answer == (400, {"error": "callback rejected", "code": "invalid_argument"})
    assert [s for s, _ in _callback_rows(deployment, "evt_malformed_")][-1:] == [20]

    # Unknown payment: a Checkout Session that is not ours (account route), or an unknown hash.
    marker = new_id("evt_unknown")
    foreign = dict(event, id=marker, data={"object": dict(event["data"]["object"], id="cs_test_foreign", metadata={})})
    payload = json.dumps(foreign).encode()
    unknown_path = path if route == "account" else "/webhooks/providers/stripe/no-such-hash"
    answer = await _post(http, unknown_path, payload, sign_event(payload, WEBHOOK_SECRET), api_headers=per_payment)
    assert answer == (404, {"error": "payment not found", "code": "not_found"})
    assert [s for s, _ in _callback_rows(deployment, marker)] == [20]

    # The valid one is applied; the rotated-out secret still verifies.
    payload = body(new_id("evt_ok"))
    answer = await _post(http, path, payload, sign_event(payload, OLD_WEBHOOK_SECRET), api_headers=per_payment)
    assert answer == (200, {"message": "Provider callback processed"})
    assert (await http.get(payment["id"]))["status"] == EXPIRED


async def test_rejected_webhooks_over_grpc(deployment, fake):
    api = GrpcApi(deployment)
    try:
        payment = await api.create(**payment_fields())
        (event,) = fake.expire_session(payment["provider_payment_id"])
        payload = json.dumps(event).encode()
        with pytest.raises(ApiError) as bad:
            await api.deliver(payload, payment, signature=sign_event(payload, "whsec_someone_else"))
        assert (bad.value.code, bad.value.message) == ("INVALID_ARGUMENT", "callback rejected")
        with pytest.raises(ApiError) as stale:
            await api.deliver(payload, payment, signature=sign_event(payload, WEBHOOK_SECRET, int(time.time()) - 600))
        assert (stale.value.code, stale.value.message) == ("INVALID_ARGUMENT", "callback rejected")
        with pytest.raises(ApiError) as unknown:
            await api.deliver(payload, dict(payment, provider_callback_hash="no-such-hash"))
        assert (unknown.value.code, unknown.value.message) == ("NOT_FOUND", "payment not found")
        with pytest.raises(ApiError) as malformed:
            await api.deliver(b"{not json", payment)
        assert malformed.value.code == "INVALID_ARGUMENT"
        other = await api.create(**payment_fields())
        with pytest.raises(ApiError) as misrouted:  # an event about one payment sent to another's hash
            await api.deliver(payload, other)
        assert misrouted.value.code == "INVALID_ARGUMENT"
        assert [s for s, _ in _callback_rows(deployment, event["id"])] == [20, 20, 20, 20]
        await api.deliver(payload, payment)
        assert (await api.get(payment["id"]))["status"] == EXPIRED
    finally:
        await api.close()


async def test_per_payment_route_takes_the_reference_forms(http, fake):
    forms = ["Stripe-Signature", "X-Provider-Signature", "wrapper"]
    for form in forms:
        payment = await http.create(**payment_fields())
        (event,) = fake.complete_session(payment["provider_payment_id"])
        payload = json.dumps(event).encode()
        signature = sign_event(payload, WEBHOOK_SECRET)
        path = f"/webhooks/providers/stripe/{payment['provider_callback_hash']}"
        if form == "wrapper":
            answer = await http.request("POST", path, {"payload": payload.decode(), "signature": signature})
        else:
            answer = await http.request("POST", path, payload, {"Content-Type": "application/json", form: signature})
        assert answer == (200, {"message": "Provider callback processed"}), form
        assert (await http.get(payment["id"]))["status"] == PAID, form


async def test_account_webhook_needs_no_api_key_but_other_routes_do(http):
    async with http._session.post(http.base + "/webhooks/stripe", data=b"{}") as response:
        assert response.status == 400
        assert await response.json() == {"error": "provider signature is required", "code": "invalid_argument",
                                         "field": "signature"}
    async with http._session.get(http.base + "/stripe/return?state=cancel") as response:
        assert response.status == 200 and "nothing was charged" in await response.text()
    async with http._session.post(http.base + "/payments/1/refund", json={}) as response:
        assert response.status == 400 and (await response.json())["error"] == "x-request-id header is required"


def test_the_secret_key_is_never_logged(deployment, fake):
    logs = deployment.server.logs()
    assert "stripe_unavailable" in logs  # the outage test ran on this server and was logged
    assert fake.secret_key not in logs and WEBHOOK_SECRET not in logs
