"""The sandbox checkout page over plain HTTP: what it shows (amounts in the currency's
decimals, escaped caller strings), where its buttons send the customer, and that a
checkout whose payment ended sends nothing more. The browser test clicks the same page."""

from __future__ import annotations

import html
import re

import pytest

from .conftest import CANCELED, FAILED, PAID, PENDING


def amount_shown(page: str) -> str:
    found = re.search(r'id="amount">([^<]*)<span class="currency">([^<]*)</span>', page)
    assert found, page
    return f"{found.group(1)}{found.group(2)}"


@pytest.mark.parametrize("amount, currency, shown", [
    (123456, "usd", "1,234.56 USD"), (123456, "jpy", "123,456 JPY"), (5000, "krw", "5,000 KRW"),
    (1234, "kwd", "1.234 KWD"), (7, "eur", "0.07 EUR"),
])
def test_the_amount_is_shown_in_the_currencys_decimals(shop, amount, currency, shown):
    page = shop.page(shop.create(amount_cents=amount, currency=currency))
    assert page.status == 200 and page.headers["content-type"].startswith("text/html")
    assert amount_shown(page.text) == shown


def test_the_page_names_the_merchant_and_what_is_paid_for_and_escapes_them(shop):
    nasty = '"><script>alert(1)</script>'
    payment = shop.create(resource_type="<b>plan</b>", resource_id=nasty,
                          success_url="https://shop.example/thanks?a=\"x\"&b=<y>")
    page = shop.page(payment).text
    assert '<p class="merchant" id="merchant">shop</p>' in page
    assert f'<p class="item" id="item">{html.escape("<b>plan</b> " + nasty)}</p>' in page
    assert "<script>" not in page and "<b>plan" not in page

    assert shop.press(payment, "pay").status == 303
    page = shop.page(payment).text
    assert 'href="https://shop.example/thanks?a=&quot;x&quot;&amp;b=&lt;y&gt;"' in page


def test_the_page_is_self_contained_and_cannot_be_framed(shop):
    page = shop.page(shop.create())
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page.text
    # Nothing is fetched: no scripts, no external styles or images; the icon is inline.
    assert re.findall(r'(?:src|href)="([^"]*)"', page.text) == [page.text.split('rel="icon" href="')[1].split('"')[0]]
    assert 'rel="icon" href="data:image/svg+xml,' in page.text
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert (page.headers["x-frame-options"], page.headers["referrer-policy"]) == ("DENY", "no-referrer")
    assert page.headers["cache-control"] == "no-store"


def test_pay_goes_to_success_url_and_decline_to_cancel_url(shop):
    urls = dict(success_url="https://shop.example/thanks", cancel_url="https://shop.example/cart")
    paid, declined = shop.create(**urls), shop.create(**urls)
    reply = shop.press(paid, "pay")
    assert (reply.status, reply.headers["location"]) == (303, "https://shop.example/thanks")
    reply = shop.press(declined, "decline")
    assert (reply.status, reply.headers["location"]) == (303, "https://shop.example/cart")
    assert (shop.get(paid["id"])["status"], shop.get(declined["id"])["status"]) == (PAID, FAILED)


def test_a_paid_payment_is_never_sent_to_cancel_url(shop):
    payment = shop.create(cancel_url="https://shop.example/cart")
    page_path = f"/sandbox/checkout/{payment['provider_callback_hash']}"
    reply = shop.press(payment, "pay")
    assert (reply.status, reply.headers["location"]) == (303, page_path)

    page = shop.page(payment).text
    assert 'id="outcome" role="status">Payment received. shop has been told.</p>' in page
    assert '<a class="back" id="back" href="https://shop.example/">&larr; Back to shop.example</a>' in page
    assert "/cart" not in page and 'id="pay"' not in page

    # Decline pressed in a stale tab: nothing is sent, the customer stays on the receipt.
    events = shop.events(payment["id"])
    reply = shop.press(payment, "decline")
    assert (reply.status, reply.headers["location"]) == (303, page_path)
    assert shop.get(payment["id"])["status"] == PAID and shop.events(payment["id"]) == events


def test_without_any_url_the_page_confirms_and_says_what_to_do(shop):
    payment = shop.create()
    assert shop.press(payment, "decline").headers["location"] == f"/sandbox/checkout/{payment['provider_callback_hash']}"
    page = shop.page(payment).text
    assert "Payment declined. Nothing was charged." in page and "You can close this page." in page
    assert shop.press(payment, "pay").status == 303  # a second button: nothing is sent
    assert shop.get(payment["id"])["status"] == FAILED


def test_an_ended_checkout_cannot_be_paid(shop):
    payment = shop.create(success_url="https://shop.example/thanks")
    assert shop.request("POST", f"/payments/{payment['id']}/cancel", {"reason": "changed mind"}).status == 200
    reply = shop.press(payment, "pay")
    assert (reply.status, reply.headers["location"]) == (303, f"/sandbox/checkout/{payment['provider_callback_hash']}")
    after = shop.get(payment["id"])
    assert (after["status"], after["attention_required"]) == (CANCELED, False)
    assert "This checkout is closed: the payment was canceled." in shop.page(payment).text


def test_unknown_checkouts_actions_and_the_favicon_probe(shop):
    payment = shop.create()
    assert shop.request("GET", "/sandbox/checkout/nope", api=False).status == 404
    assert shop.press(payment, "refund").status == 404
    assert shop.get(payment["id"])["status"] == PENDING
    # A browser asking for /favicon.ico (on a page without an icon of its own) gets a plain 404.
    assert shop.request("GET", "/favicon.ico", api=False).status == 404

