"""Our amounts (minor units per ISO 4217, domain/currencies.py) to Stripe's and back.

Stripe's `amount` / `unit_amount` is the same minor unit for almost every currency
(https://docs.stripe.com/currencies, "Zero-decimal", "Three-decimal" and "Special
cases"). The exceptions:
  * ISK is zero-decimal in ISO 4217 but two-decimal at Stripe, in whole krónur only:
    500 ISK is 50000 at Stripe.
  * MGA is two-decimal in ISO 4217 but zero-decimal at Stripe: 500.00 MGA (50000) is
    500 at Stripe, and fractions of an ariary cannot be charged.
  * Three-decimal currencies are charged in tens of the minor unit only: 5.120 KWD
    (5120) is fine, 5.124 is refused.
"""

from __future__ import annotations

from ...domain.currencies import exponent

# Currencies whose Stripe exponent differs from ISO 4217's.
STRIPE_EXPONENTS = {"ISK": 2, "MGA": 0}
THREE_DECIMAL_STEP = 10


def stripe_exponent(currency: str) -> int:
    return STRIPE_EXPONENTS.get(currency.upper(), exponent(currency))


def amount_step(currency: str) -> int:
    """The smallest multiple of our minor unit that Stripe can charge or refund."""
    shift = exponent(currency) - stripe_exponent(currency)
    if shift > 0:
        return 10**shift
    return THREE_DECIMAL_STEP if stripe_exponent(currency) == 3 else 1


def amount_problem(amount: int, currency: str) -> str | None:
    """Why Stripe cannot take this amount (a message for the caller), else None."""
    step = amount_step(currency)
    if amount % step == 0:
        return None
    return (f"amount_cents must be a multiple of {step} for {currency.upper()} with Stripe "
            f"(Stripe charges and refunds {currency.upper()} only in steps of {step} of its minor unit)")


def to_stripe(amount: int, currency: str) -> int:
    """Stripe's amount for ours; the amount must have passed amount_problem."""
    shift = stripe_exponent(currency) - exponent(currency)
    return amount * 10**shift if shift >= 0 else amount // 10**-shift


def from_stripe(amount: int, currency: str) -> int:
    """Our amount for Stripe's (an ISK amount in fractions of a króna is rounded down)."""
    shift = exponent(currency) - stripe_exponent(currency)
    return amount * 10**shift if shift >= 0 else amount // 10**-shift
