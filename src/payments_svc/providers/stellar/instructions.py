"""What a buyer needs to pay a Stellar payment: destination, asset, amount and memo,
as fields and as a SEP-7 `web+stellar:pay` URI (the payment's checkout_url).

The URI is stored as the checkout_url and is the record of what the buyer was asked
to pay; the watcher reads the expected asset back from it, so a later change of
STELLAR_ASSETS never changes what an existing payment accepts.

Amounts: a payment's amount_cents is in hundredths of the asset unit; Horizon
reports amounts with 7 decimals (stroops). Both are kept as integers.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from urllib.parse import parse_qsl, quote

from .settings import NATIVE_CODE, PUBLIC_NETWORK_PASSPHRASE, StellarAsset

STROOPS_PER_UNIT = 10**7
STROOPS_PER_CENT = 10**5
MAX_STROOPS = 2**63 - 1  # Horizon amounts are int64 stroops
MEMO_TYPE_TEXT = "MEMO_TEXT"
SEP7_PAY = "web+stellar:pay"


def cents_to_amount(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


def stroops_to_amount(stroops: int) -> str:
    units, fraction = divmod(stroops, STROOPS_PER_UNIT)
    return f"{units}.{fraction:07d}"


def amount_to_stroops(amount: str) -> int:
    """Horizon's decimal amount string as stroops; ValueError unless it is a positive
    amount with at most 7 decimals."""
    try:
        value = Decimal(amount)
    except (InvalidOperation, TypeError):
        raise ValueError(f"amount {amount!r} is not a decimal number") from None
    if not value.is_finite() or value <= 0:
        raise ValueError(f"amount {amount!r} is not a positive amount")
    # Integer arithmetic on the digits: exact, and bounded before any power of ten is
    # built, so a hostile exponent ("1e999999999") costs nothing.
    _, digits, exponent = value.as_tuple()
    coefficient, shift = int("".join(map(str, digits))), exponent + 7
    if shift >= 0 and len(digits) + shift <= 19:
        stroops = coefficient * 10**shift
    elif shift < 0 and -shift <= len(digits) and coefficient % 10**-shift == 0:
        stroops = coefficient // 10**-shift
    else:
        stroops = 0
    if not 0 < stroops <= MAX_STROOPS:
        raise ValueError(f"amount {amount!r} is not a Stellar amount (at most 7 decimals, within int64 stroops)")
    return stroops


def payment_memo(payment_id: int, callback_hash: str) -> str:
    """The payment's text memo: its id (which makes it unique) and 7 hex digits derived
    from its random callback hash, so that a mistyped memo, or another deployment's
    memo on a shared account, does not credit a payment. At most 20 + 1 + 7 = 28 bytes,
    the text memo limit."""
    check = hashlib.sha256(callback_hash.encode()).hexdigest()[:7]
    return f"{payment_id}-{check}"


@dataclass(frozen=True, slots=True)
class StellarInstructions:
    destination: str
    asset: StellarAsset
    amount: str
    memo: str
    memo_type: str = MEMO_TYPE_TEXT

    def sep7_uri(self, network_passphrase: str) -> str:
        params = [("destination", self.destination), ("amount", self.amount)]
        if not self.asset.is_native:  # SEP-7: no asset_code means native lumens
            params += [("asset_code", self.asset.code), ("asset_issuer", self.asset.issuer)]
        params += [("memo", self.memo), ("memo_type", self.memo_type)]
        if network_passphrase != PUBLIC_NETWORK_PASSPHRASE:  # SEP-7: only when not the public network
            params.append(("network_passphrase", network_passphrase))
        return SEP7_PAY + "?" + "&".join(f"{key}={quote(value, safe='')}" for key, value in params)

    @classmethod
    def from_sep7_uri(cls, uri: str) -> StellarInstructions:
        """The instructions of a URI made by sep7_uri; ValueError for anything else."""
        head, _, query = uri.partition("?")
        params = dict(parse_qsl(query, keep_blank_values=True))
        if head != SEP7_PAY or not {"destination", "amount", "memo", "memo_type"} <= params.keys():
            raise ValueError("not a SEP-7 pay URI made for a Stellar payment")
        code = params.get("asset_code")
        asset = StellarAsset(code, params.get("asset_issuer")) if code else StellarAsset(NATIVE_CODE, None)
        return cls(params["destination"], asset, params["amount"], params["memo"], params["memo_type"])

    def fields(self) -> dict[str, str]:
        """The StellarPaymentInstructions message's fields."""
        return {
            "destination": self.destination,
            "asset_code": self.asset.code,
            "asset_issuer": self.asset.issuer or "",
            "amount": self.amount,
            "memo": self.memo,
            "memo_type": self.memo_type,
        }
