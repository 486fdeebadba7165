"""VNPAY_* settings: the one default VNPay account, read from the environment.

The account's credentials are one value (VnpayCredentials) handed to the provider, never
read from globals, so that other accounts (per caller) can hand it others. Parsed when the
settings load: an enabled but misconfigured VNPay stops every command at start-up with a
message naming the variable. The hash secret never appears in a message or a repr.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from ...env_values import env_value

# VNPay's sandbox (never a live default: a production terminal must name its URLs).
SANDBOX_PAYMENT_URL = "https://sandbox.vnpayment.vn/paymentv2/vpcpay.html"
SANDBOX_API_URL = "https://sandbox.vnpayment.vn/merchant_webapi/api/transaction"
TMN_CODE = re.compile(r"^[A-Za-z0-9]{8}$")  # vnp_TmnCode: Alphanumeric[8]


@dataclass(frozen=True, slots=True)
class VnpayCredentials:
    """One VNPay terminal (website) and where to reach VNPay for it."""

    tmn_code: str
    hash_secret: str = field(repr=False)
    payment_url: str = SANDBOX_PAYMENT_URL
    api_url: str = SANDBOX_API_URL


def _url(env: Mapping[str, str], name: str, default: str) -> str:
    url = env_value(env, name) or default
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ValueError(f"{name} must be an absolute http(s) URL without a query, got {url!r}")
    return url


def vnpay_credentials_from_env(env: Mapping[str, str]) -> VnpayCredentials | None:
    """None when VNPAY_TMN_CODE is unset (VNPay disabled)."""
    tmn_code = env_value(env, "VNPAY_TMN_CODE")
    hash_secret = env_value(env, "VNPAY_HASH_SECRET")
    if tmn_code is None:
        if hash_secret is not None:
            raise ValueError("VNPAY_HASH_SECRET is set but VNPAY_TMN_CODE is not: set both to enable VNPay")
        return None
    if not TMN_CODE.match(tmn_code):
        raise ValueError(f"VNPAY_TMN_CODE must be the 8 letters and digits of the terminal VNPay issued, got {tmn_code!r}")
    if hash_secret is None:
        raise ValueError("VNPAY_HASH_SECRET is required when VNPAY_TMN_CODE is set: the terminal's secret key "
                         "(vnp_HashSecret) from VNPay's merchant admin")
    return VnpayCredentials(
        tmn_code=tmn_code,
        hash_secret=hash_secret,
        payment_url=_url(env, "VNPAY_PAYMENT_URL", SANDBOX_PAYMENT_URL),
        api_url=_url(env, "VNPAY_API_URL", SANDBOX_API_URL),
    )
