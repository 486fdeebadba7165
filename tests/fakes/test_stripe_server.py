"""The fake Stripe server, driven through the real `stripe` SDK's async client."""

from __future__ import annotations

import json
import time

import aiohttp
import pytest
import pytest_asyncio
import stripe
from aiohttp import web

from tests.fakes.stripe_server import FakeStripe, deliver, sign_event
from tests.fakes.stripe_spec import ParamError, coerce, decode_form

SUCCESS_URL = "https://shop.example/success"
CANCEL_URL = "https://shop.example/cancel"
WEBHOOK_SECRET = "whsec_test_secret"


@pytest_asyncio.fixture
async def fake():
    async with FakeStripe(secret_keys=("sk_test_fake", "sk_test_other")) as server:
        yield server


@pytest_asyncio.fixture
async def http_client():
    http_client = stripe.AIOHTTPClient()
    yield http_client
    await http_client.close_async()


def sdk(fake, http_client, api_key: str = "sk_test_fake", **options) -> stripe.StripeClient:
    """The SDK's client aimed at the fake; its *_async methods go through http_client."""
    return stripe.StripeClient(api_key, base_addresses={"api": fake.url}, http_client=http_client, **options)


@pytest.fixture
def client(fake, http_client):
    return sdk(fake, http_client)


async def make_price(client, *, recurring: bool = False, unit_amount: int = 2000, lookup_key: str | None = None):
    product = await client.v1.products.create_async(params={"name": "Pro plan"})
    params = {"product": product.id, "unit_amount": unit_amount, "currency": "usd"}
    if recurring:
        params["recurring"] = {"interval": "month"}
    if lookup_key:
        params["lookup_key"] = lookup_key
    return await client.v1.prices.create_async(params=params)


async def make_session(client, **params):
    base = {
        "mode": "payment",
        "success_url": SUCCESS_URL,
        "cancel_url": CANCEL_URL,
        "line_items": [
            {"price_data": {"currency": "usd", "unit_amount": 1500, "product_data": {"name": "Order 42"}}, "quantity": 2}
        ],
    }
    return await client.v1.checkout.sessions.create_async(params={**base, **params})


async def make_link(client, price_id: str, **params):
    return await client.v1.payment_links.create_async(params={"line_items": [{"price": price_id, "quantity": 1}], **params})


@pytest.mark.asyncio
async def test_product_price_and_checkout_session(fake, client):
    price = await make_price(client, lookup_key="pro_monthly_usd")
    assert price.id.startswith("price_") and price.product.startswith("prod_")
    found = await client.v1.prices.list_async(params={"lookup_keys": ["pro_monthly_usd"], "expand": ["data.product"]})
    assert [p.id for p in found.data] == [price.id]
    assert found.data[0].product.name == "Pro plan"

    session = await client.v1.checkout.sessions.create_async(
        params={
            "mode": "payment",
            "success_url": SUCCESS_URL,
            "cancel_url": CANCEL_URL,
            "line_items": [{"price": price.id, "quantity": 3}],
            "client_reference_id": "payment-42",
            "metadata": {"payment_id": "42"},
            "payment_intent_data": {"metadata": {"payment_id": "42"}},
            "expires_at": int(time.time()) + 3600,
        },
        options={"idempotency_key": "create-42"},
    )
    assert session.id.startswith("cs_test_")
    assert session.url == f"https://checkout.stripe.com/c/pay/{session.id}"
    assert (session.status, session.payment_status, session.mode) == ("open", "unpaid", "payment")
    assert (session.amount_total, session.currency, session.client_reference_id) == (6000, "usd", "payment-42")
    assert session.metadata.to_dict() == {"payment_id": "42"}
    assert session.payment_intent is None and session.payment_link is None

    fetched = await client.v1.checkout.sessions.retrieve_async(session.id, params={"expand": ["line_items"]})
    assert fetched.line_items.data[0].quantity == 3

    recorded = next(r for r in fake.requests if r.path == "/v1/checkout/sessions")
    assert recorded.params["line_items"] == [{"price": price.id, "quantity": 3}]  # typed per the spec
    assert recorded.idempotency_key == "create-42"
    assert recorded.stripe_version == stripe.api_version
    assert recorded.status == 200


@pytest.mark.asyncio
async def test_completing_a_payment_session_creates_intent_charge_and_event(fake, client):
    session = await make_session(client, metadata={"payment_id": "7"}, payment_intent_data={"metadata": {"payment_id": "7"}})
    (completed,) = fake.complete_session(session.id)

    assert completed["type"] == "checkout.session.completed"
    assert completed["object"] == "event" and completed["id"].startswith("evt_")
    assert completed["api_version"] == stripe.api_version and completed["livemode"] is False
    obj = completed["data"]["object"]
    assert (obj["status"], obj["payment_status"], obj["url"]) == ("complete", "paid", None)
    assert obj["metadata"] == {"payment_id": "7"}

    fetched = await client.v1.checkout.sessions.retrieve_async(session.id, params={"expand": ["payment_intent.latest_charge"]})
    intent = fetched.payment_intent
    assert intent.id.startswith("pi_") and intent.status == "succeeded" and intent.amount == 3000
    assert intent.metadata.to_dict() == {"payment_id": "7"}
    assert intent.latest_charge.id.startswith("ch_") and intent.latest_charge.payment_intent == intent.id
    assert (await client.v1.events.retrieve_async(completed["id"])).type == "checkout.session.completed"


@pytest.mark.asyncio
async def test_subscription_checkout_renewals_and_cancel(fake, client):
    price = await make_price(client, recurring=True)
    session = await client.v1.checkout.sessions.create_async(
        params={
            "mode": "subscription",
            "success_url": SUCCESS_URL,
            "line_items": [{"price": price.id, "quantity": 1}],
            "subscription_data": {"metadata": {"payment_id": "9"}},
        }
    )
    completed, paid = fake.complete_session(session.id)
    subscription_id = completed["data"]["object"]["subscription"]
    assert subscription_id.startswith("sub_") and completed["data"]["object"]["payment_intent"] is None
    assert paid["type"] == "invoice.paid"
    invoice = paid["data"]["object"]
    assert invoice["id"].startswith("in_") and invoice["subscription"] == subscription_id
    assert invoice["parent"]["subscription_details"] == {"metadata": {"payment_id": "9"}, "subscription": subscription_id}
    assert invoice["subscription_details"]["metadata"] == {"payment_id": "9"}
    assert (invoice["billing_reason"], invoice["status"], invoice["amount_paid"]) == ("subscription_create", "paid", 2000)

    subscription = await client.v1.subscriptions.retrieve_async(subscription_id)
    assert subscription.status == "active" and subscription.metadata.to_dict() == {"payment_id": "9"}

    (failed,) = fake.renew_subscription(subscription_id, succeeded=False)
    assert failed["type"] == "invoice.payment_failed" and failed["data"]["object"]["billing_reason"] == "subscription_cycle"
    assert fake.get(subscription_id)["status"] == "past_due"
    (renewed,) = fake.renew_subscription(subscription_id)
    assert renewed["type"] == "invoice.paid"
    fetched_invoice = await client.v1.invoices.retrieve_async(renewed["data"]["object"]["id"])
    assert fetched_invoice.status == "paid"

    canceled = await client.v1.subscriptions.cancel_async(
        subscription_id, params={"cancellation_details": {"comment": "customer asked"}}
    )
    assert canceled.status == "canceled" and canceled.cancellation_details.comment == "customer asked"
    assert fake.events[-1]["type"] == "customer.subscription.deleted"
    assert fake.requests[-1].method == "DELETE" and fake.requests[-1].params["cancellation_details"] == {
        "comment": "customer asked"
    }


@pytest.mark.asyncio
async def test_delayed_payment_then_result_and_dispute(fake, client):
    session = await make_session(client)
    (completed,) = fake.complete_session(session.id, paid=False)
    assert completed["data"]["object"]["payment_status"] == "unpaid"
    intent_id = completed["data"]["object"]["payment_intent"]
    assert fake.get(intent_id)["status"] == "processing"

    (succeeded,) = fake.async_payment_result(session.id, succeeded=True)
    assert succeeded["type"] == "checkout.session.async_payment_succeeded"
    assert succeeded["data"]["object"]["payment_status"] == "paid"
    with pytest.raises(ValueError):
        fake.async_payment_result(session.id, succeeded=False)

    (disputed,) = fake.create_dispute(payment_intent=intent_id)
    assert disputed["type"] == "charge.dispute.created"
    assert disputed["data"]["object"]["payment_intent"] == intent_id and disputed["data"]["object"]["id"].startswith("dp_")


@pytest.mark.asyncio
async def test_idempotent_replay_mismatch_and_key_scope(fake, client, http_client):
    params = {"name": "Widget", "metadata": {"sku": "w-1"}}
    first = await client.v1.products.create_async(params=params, options={"idempotency_key": "key-1"})
    again = await client.v1.products.create_async(params=params, options={"idempotency_key": "key-1"})
    assert again.id == first.id
    assert again.last_response.headers["Idempotent-Replayed"] == "true"
    assert fake.requests[-1].replayed

    with pytest.raises(stripe.IdempotencyError) as mismatch:
        await client.v1.products.create_async(params={"name": "Gadget"}, options={"idempotency_key": "key-1"})
    assert mismatch.value.http_status == 400
    assert mismatch.value.json_body["error"]["type"] == "idempotency_error"

    other = await sdk(fake, http_client, "sk_test_other").v1.products.create_async(
        params=params, options={"idempotency_key": "key-1"}
    )
    assert other.id != first.id


@pytest.mark.asyncio
async def test_endpoint_errors_are_saved_under_the_idempotency_key(fake, client):
    session = await make_session(client)
    fake.expire_session(session.id)
    for _ in range(2):
        with pytest.raises(stripe.InvalidRequestError):
            await client.v1.checkout.sessions.expire_async(session.id, options={"idempotency_key": "expire-1"})
    assert [r.replayed for r in fake.requests[-2:]] == [False, True]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("extra", "param", "message"),
    [
        ({"colour": "red"}, "colour", "Received unknown parameter: colour"),
        ({"mode": "bogus"}, "mode", "Invalid mode: must be one of payment, setup, or subscription"),
        (
            {"line_items": [{"price_data": {"currency": "usd", "unit_amount": "ten"}}]},
            "line_items[0][price_data][unit_amount]",
            "Invalid integer: ten",
        ),
        (
            {"line_items": [{"price_data": {"currency": "usd", "unit_amount": 1, "colour": "x"}}]},
            "line_items[0][price_data][colour]",
            "unknown parameter",
        ),
        ({"mode": None}, "mode", "Missing required param: mode."),
        ({"expires_at": 1}, "expires_at", "between 30 minutes and 24 hours"),
    ],
)
async def test_params_are_checked_against_the_spec(fake, client, extra, param, message):
    with pytest.raises(stripe.InvalidRequestError) as rejected:
        await make_session(client, **extra)
    assert rejected.value.http_status == 400
    assert rejected.value.param == param
    assert message in rejected.value.user_message
    assert rejected.value.json_body["error"]["type"] == "invalid_request_error"


@pytest.mark.asyncio
async def test_mode_and_price_kind_must_agree(fake, client):
    recurring = await make_price(client, recurring=True)
    with pytest.raises(stripe.InvalidRequestError, match="recurring price"):
        await make_session(client, line_items=[{"price": recurring.id, "quantity": 1}])
    with pytest.raises(stripe.InvalidRequestError, match="No such price") as missing:
        await make_session(client, line_items=[{"price": "price_missing", "quantity": 1}])
    assert missing.value.code == "resource_missing"


@pytest.mark.asyncio
async def test_unknown_ids_paths_and_keys(fake, client, http_client):
    with pytest.raises(stripe.InvalidRequestError) as missing:
        await client.v1.checkout.sessions.retrieve_async("cs_test_nope")
    assert (missing.value.http_status, missing.value.code, missing.value.param) == (404, "resource_missing", "session")

    async with aiohttp.ClientSession() as http:
        headers = {"Authorization": f"Bearer {fake.secret_key}"}
        async with http.get(f"{fake.url}/v1/no_such_thing", headers=headers) as response:
            assert response.status == 404
            assert "Unrecognized request URL" in (await response.json())["error"]["message"]
        async with http.get(f"{fake.url}/v1/prices?expand[]=data.product&limit=0", headers=headers) as response:
            assert response.status == 400 and (await response.json())["error"]["param"] == "limit"

    with pytest.raises(stripe.AuthenticationError) as unauthenticated:
        await sdk(fake, http_client, "sk_test_wrong").v1.products.create_async(params={"name": "x"})
    assert unauthenticated.value.http_status == 401
    assert unauthenticated.value.json_body["error"]["type"] == "authentication_error"


@pytest.mark.asyncio
async def test_expire_only_open_sessions(fake, client):
    session = await make_session(client)
    expired = await client.v1.checkout.sessions.expire_async(session.id, options={"idempotency_key": "exp-1"})
    assert (expired.status, expired.url) == ("expired", None)
    event = fake.events[-1]
    assert event["type"] == "checkout.session.expired"
    assert event["request"]["idempotency_key"] == "exp-1" and event["request"]["id"].startswith("req_")

    with pytest.raises(stripe.InvalidRequestError, match='status of "expired"'):
        await client.v1.checkout.sessions.expire_async(session.id)
    with pytest.raises(ValueError):
        fake.complete_session(session.id)


@pytest.mark.asyncio
async def test_payment_link_with_restrictions(fake, client):
    price = await make_price(client, unit_amount=5000)
    link = await make_link(
        client,
        price.id,
        metadata={"payment_id": "11"},
        payment_intent_data={"metadata": {"payment_id": "11"}},
        restrictions={"completed_sessions": {"limit": 1}},
        inactive_message="This link was already paid.",
        after_completion={"type": "redirect", "redirect": {"url": SUCCESS_URL}},
    )
    assert link.id.startswith("plink_") and link.active and link.url.startswith("https://buy.stripe.com/test_")
    assert link.restrictions.completed_sessions.limit == 1
    recorded = fake.requests[-1]
    assert recorded.params["restrictions"] == {"completed_sessions": {"limit": 1}}

    (completed,) = fake.pay_payment_link(link.id)
    session = completed["data"]["object"]
    assert session["payment_link"] == link.id and session["metadata"] == {"payment_id": "11"}
    assert session["amount_total"] == 5000
    assert fake.get(session["payment_intent"])["metadata"] == {"payment_id": "11"}

    fetched = await client.v1.payment_links.retrieve_async(link.id)
    assert not fetched.active and fetched.restrictions.completed_sessions.count == 1  # the limit deactivated it
    with pytest.raises(ValueError, match="inactive"):
        fake.pay_payment_link(link.id)

    with pytest.raises(stripe.InvalidRequestError) as bad_limit:
        await make_link(client, price.id, restrictions={"completed_sessions": {"limit": "one"}})
    assert bad_limit.value.param == "restrictions[completed_sessions][limit]"


@pytest.mark.asyncio
async def test_deactivating_a_payment_link(fake, client):
    link = await make_link(client, (await make_price(client)).id, metadata={"a": "1", "b": "2"})
    updated = await client.v1.payment_links.update_async(
        link.id, params={"active": False, "metadata": {"a": ""}, "inactive_message": "Canceled."}
    )
    assert not updated.active and updated.metadata.to_dict() == {"b": "2"} and updated.inactive_message == "Canceled."


@pytest.mark.asyncio
async def test_sessions_listed_by_payment_link_with_paging(fake, client):
    price = await make_price(client)
    link = await make_link(client, price.id)
    await make_session(client)  # not from the link
    paid = [fake.pay_payment_link(link.id)[0]["data"]["object"]["id"] for _ in range(5)]
    newest_first = paid[::-1]

    page = await client.v1.checkout.sessions.list_async(params={"payment_link": link.id, "limit": 2})
    assert [s.id for s in page.data] == newest_first[:2] and page.has_more
    following = await client.v1.checkout.sessions.list_async(
        params={"payment_link": link.id, "limit": 2, "starting_after": page.data[-1].id}
    )
    assert [s.id for s in following.data] == newest_first[2:4]

    every = [s.id async for s in page.auto_paging_iter()]
    assert every == newest_first
    completed = await client.v1.checkout.sessions.list_async(params={"status": "complete", "limit": 100})
    assert {s.id for s in completed.data} == set(paid)


@pytest.mark.asyncio
async def test_refunds_cannot_exceed_the_remaining_amount(fake, client):
    session = await make_session(client)  # 2 x 1500
    (completed,) = fake.complete_session(session.id)
    intent_id = completed["data"]["object"]["payment_intent"]

    refund = await client.v1.refunds.create_async(
        params={"payment_intent": intent_id, "amount": 2000, "reason": "requested_by_customer"}
    )
    assert refund.id.startswith("re_") and refund.status == "succeeded" and refund.payment_intent == intent_id
    created, refunded = fake.events[-2:]
    assert created["type"] == "refund.created"
    assert refunded["type"] == "charge.refunded" and refunded["data"]["object"]["payment_intent"] == intent_id
    assert refunded["data"]["previous_attributes"] == {"amount_refunded": 0, "refunded": False}

    with pytest.raises(stripe.InvalidRequestError, match=r"greater than unrefunded amount on charge \(\$10.00\)") as too_much:
        await client.v1.refunds.create_async(params={"payment_intent": intent_id, "amount": 1001})
    assert too_much.value.param == "amount"

    fake.refund(payment_intent=intent_id)  # the rest, from the dashboard
    assert fake.get(refunded["data"]["object"]["id"])["refunded"] is True
    assert (await client.v1.refunds.retrieve_async(refund.id)).amount == 2000

    (updated,) = fake.fail_refund(refund.id)
    assert updated["type"] == "refund.updated" and updated["data"]["object"]["status"] == "failed"

    charge_id = refunded["data"]["object"]["id"]
    listed = await client.v1.refunds.list_async(params={"charge": charge_id})
    assert [(r.amount, r.status) for r in listed.data] == [(1000, "succeeded"), (2000, "failed")]  # newest first
    assert [r.id for r in (await client.v1.refunds.list_async(params={"payment_intent": intent_id})).data][1] == refund.id


async def test_amounts_follow_stripes_currency_rules(fake, client):
    product = await client.v1.products.create_async(params={"name": "Pro plan"})
    for currency, amount, code in (("isk", 50050, "invalid_charge_amount_no_decimal_compatible"),
                                   ("kwd", 5125, "invalid_charge_amount")):
        with pytest.raises(stripe.InvalidRequestError) as refused:
            await client.v1.prices.create_async(params={"product": product.id, "unit_amount": amount, "currency": currency})
        assert (refused.value.code, refused.value.param) == (code, "unit_amount")
    session = await make_session(client, line_items=[{"quantity": 1, "price_data": {
        "currency": "jpy", "unit_amount": 1234, "product_data": {"name": "Tea"}}}])
    (completed,) = fake.complete_session(session.id)
    intent_id = completed["data"]["object"]["payment_intent"]
    with pytest.raises(stripe.InvalidRequestError, match=r"greater than charge amount \(1,234 JPY\)"):
        await client.v1.refunds.create_async(params={"payment_intent": intent_id, "amount": 1235})


@pytest.mark.asyncio
async def test_injected_failures(fake, client, http_client):
    fake.fail_next(1, status=500)
    retrying = sdk(fake, http_client, max_network_retries=2)  # StripeClient does not retry by default
    product = await retrying.v1.products.create_async(params={"name": "Retried"})
    attempts = fake.requests[-2:]
    assert [r.status for r in attempts] == [500, 200]
    assert attempts[0].idempotency_key == attempts[1].idempotency_key
    assert product.id.startswith("prod_")

    fake.fail_next(1, status=429)
    with pytest.raises(stripe.RateLimitError):
        await retrying.v1.products.create_async(params={"name": "Limited"})  # 429 is not retried

    fake.fail_next(5, status=503, path_prefix="/v1/refunds")
    assert (await client.v1.products.create_async(params={"name": "Unaffected"})).name == "Unaffected"
    with pytest.raises(stripe.APIError) as unavailable:
        await client.v1.refunds.create_async(params={"payment_intent": "pi_x"})
    assert unavailable.value.http_status == 503


@pytest.mark.asyncio
async def test_latency(fake, client):
    fake.set_latency(0.3)
    started = time.monotonic()
    await client.v1.products.create_async(params={"name": "Slow"})
    assert time.monotonic() - started >= 0.3


def test_signatures_are_accepted_by_the_sdk():
    payload = json.dumps({"id": "evt_1", "object": "event", "type": "checkout.session.completed", "data": {"object": {}}})
    header = sign_event(payload.encode(), WEBHOOK_SECRET)
    event = stripe.Webhook.construct_event(payload, header, WEBHOOK_SECRET)
    assert event.type == "checkout.session.completed"

    tampered = payload.replace("completed", "expired")
    for args in (
        (tampered, header, WEBHOOK_SECRET),
        (payload, header, "whsec_other"),
        (payload, sign_event(payload, WEBHOOK_SECRET, timestamp=int(time.time()) - 3600), WEBHOOK_SECRET),
    ):
        with pytest.raises(stripe.SignatureVerificationError):
            stripe.Webhook.construct_event(*args)


@pytest.mark.asyncio
async def test_deliver_posts_signed_events(fake, client):
    received = []

    async def webhook(request: web.Request) -> web.Response:
        payload = await request.read()
        try:
            event = stripe.Webhook.construct_event(payload, request.headers.get("Stripe-Signature"), WEBHOOK_SECRET)
        except stripe.SignatureVerificationError:
            return web.Response(status=400, text="bad signature")
        received.append(event)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/webhooks/stripe", webhook)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/webhooks/stripe"
    try:
        session = await make_session(client)
        (event,) = fake.complete_session(session.id)
        assert await deliver(event, url, WEBHOOK_SECRET) == (200, "ok")
        assert received[0].data.object.id == session.id
        status, _ = await deliver(event, url, WEBHOOK_SECRET, headers={"Stripe-Signature": "t=1,v1=00"})
        assert status == 400
    finally:
        await runner.cleanup()


def test_runs_in_a_thread_for_sync_tests():
    fake = FakeStripe().start_in_thread()
    try:
        client = stripe.StripeClient(fake.secret_key, base_addresses={"api": fake.url})  # the SDK's sync client
        product = client.v1.products.create(params={"name": "Sync"})
        assert fake.get(product.id)["name"] == "Sync"
        session = client.v1.checkout.sessions.create(
            params={
                "mode": "payment",
                "success_url": SUCCESS_URL,
                "line_items": [{"price_data": {"currency": "eur", "unit_amount": 100, "product": product.id}, "quantity": 1}],
            }
        )
        (event,) = fake.complete_session(session.id)
        assert event["data"]["object"]["currency"] == "eur"
    finally:
        fake.stop_thread()
    with FakeStripe() as again:  # the same, as a context manager
        assert stripe.StripeClient(again.secret_key, base_addresses={"api": again.url}).v1.prices.list().data == []


def test_form_decoding():
    decoded = decode_form(
        [
            ("expand[]", "a"),
            ("expand[]", "b"),
            ("metadata[0]", "zero"),
            ("line_items[1][quantity]", "2"),
            ("line_items[0][quantity]", "1"),
        ]
    )
    assert decoded == {
        "expand": ["a", "b"],
        "metadata": {"0": "zero"},
        "line_items": {"1": {"quantity": "2"}, "0": {"quantity": "1"}},
    }
    schema = {
        "type": "object",
        "properties": {
            "line_items": {"type": "array", "items": {"type": "object", "properties": {"quantity": {"type": "integer"}}}},
            "metadata": {
                "anyOf": [{"type": "object", "additionalProperties": {"type": "string"}}, {"type": "string", "enum": [""]}]
            },
            "expand": {"type": "array", "items": {"type": "string"}},
        },
    }
    assert coerce(schema, decoded) == {
        "expand": ["a", "b"],
        "metadata": {"0": "zero"},
        "line_items": [{"quantity": 1}, {"quantity": 2}],
    }
    assert coerce(schema, {"metadata": ""}) == {"metadata": ""}
    with pytest.raises(ParamError, match="Invalid object"):
        coerce(schema, {"metadata": "not-empty"})
    with pytest.raises(ParamError, match="Invalid hash"):
        decode_form([("metadata", "x"), ("metadata[a]", "y")])
