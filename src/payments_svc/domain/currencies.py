"""Currency exponents: how many decimals a currency's minor unit has.

`amount_cents` is an amount in the currency's smallest unit per its ISO 4217 exponent:
cents for USD (1999 is 19.99), whole yen for JPY (1999 is 1,999), fils for KWD (1999 is
1.999). Stellar payments keep their own rule (hundredths of the asset, see
stellar/instructions.py).

Source: the minor unit column of ISO 4217's "List one: currency, fund and precious metal
codes", published by SIX Financial Information for the ISO 4217 maintenance agency.
Every active code not listed here has exponent 2; codes without a minor unit (precious
metals, XDR, testing codes) are not payment currencies and are left out. Any other three
letters (no ISO code) are read as two-decimal.
"""

from __future__ import annotations

DEFAULT_EXPONENT = 2

EXPONENTS: dict[str, int] = {
    # Zero-decimal: the amount is in whole units.
    "BIF": 0, "CLP": 0, "DJF": 0, "GNF": 0, "ISK": 0, "JPY": 0, "KMF": 0, "KRW": 0, "PYG": 0,
    "RWF": 0, "UGX": 0, "UYI": 0, "VND": 0, "VUV": 0, "XAF": 0, "XOF": 0, "XPF": 0,
    # Three-decimal.
    "BHD": 3, "IQD": 3, "JOD": 3, "KWD": 3, "LYD": 3, "OMR": 3, "TND": 3,
    # Four-decimal (units of account).
    "CLF": 4, "UYW": 4,
}


def exponent(currency: str) -> int:
    return EXPONENTS.get(currency.upper(), DEFAULT_EXPONENT)


def format_amount(amount: int, currency: str) -> str:
    """The amount in major units with thousands separators: 1234567 USD -> "12,345.67",
    123456 JPY -> "123,456", 1234 KWD -> "1.234"."""
    digits = exponent(currency)
    sign = "-" if amount < 0 else ""
    whole, fraction = divmod(abs(amount), 10**digits)
    return f"{sign}{whole:,}" + (f".{fraction:0{digits}d}" if digits else "")
