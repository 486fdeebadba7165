"""Currency exponents (ISO 4217) and how amounts in minor units read."""

from __future__ import annotations

import pytest

from payments_svc.domain.currencies import exponent, format_amount
from payments_svc.providers.stripe.amounts import amount_problem, from_stripe, to_stripe


@pytest.mark.parametrize("currency, digits", [
    ("USD", 2), ("usd", 2), ("EUR", 2), ("JPY", 0), ("krw", 0), ("VND", 0), ("ISK", 0), ("CLP", 0),
    ("KWD", 3), ("BHD", 3), ("TND", 3), ("CLF", 4), ("MGA", 2), ("XYZ", 2),
])
def test_exponent_is_iso_4217s_minor_unit(currency, digits):
    assert exponent(currency) == digits


@pytest.mark.parametrize("amount, currency, shown", [
    (123456, "JPY", "123,456"), (123456, "USD", "1,234.56"), (5, "USD", "0.05"), (1234, "KWD", "1.234"),
    (1_000_000_000, "KRW", "1,000,000,000"), (0, "EUR", "0.00"), (7, "CLF", "0.0007"), (-1999, "USD", "-19.99"),
])
def test_format_amount_uses_the_currencys_decimals(amount, currency, shown):
    assert format_amount(amount, currency) == shown


@pytest.mark.parametrize("amount, currency, at_stripe", [
    (1999, "usd", 1999), (123456, "jpy", 123456), (5120, "kwd", 5120), (500, "isk", 50000), (50000, "mga", 500),
])
def test_stripe_amounts_round_trip(amount, currency, at_stripe):
    assert amount_problem(amount, currency) is None
    assert to_stripe(amount, currency) == at_stripe and from_stripe(at_stripe, currency) == amount


@pytest.mark.parametrize("amount, currency, step", [(5125, "KWD", 10), (50050, "MGA", 100), (1, "OMR", 10)])
def test_amounts_stripe_cannot_take_are_named(amount, currency, step):
    assert amount_problem(amount, currency) == (
        f"amount_cents must be a multiple of {step} for {currency} with Stripe "
        f"(Stripe charges and refunds {currency} only in steps of {step} of its minor unit)")
