"""VNPay's checksums: HMAC-SHA512 with the terminal's hash secret, as lower-case hex.

Two shapes, per VNPay's 2.1.0 documentation (see the package docstring):

* The payment URL, the IPN and the return URL carry `vnp_SecureHash` over their other
  vnp_* parameters (vnp_SecureHash and vnp_SecureHashType excluded), sorted by name, each
  `name=value` with the value URL-encoded as VNPay's Python sample does
  (urllib.parse.quote_plus: a space is '+', '/' and ':' are %2F and %3A), joined by '&'.
  The payment URL's query is exactly that string plus `&vnp_SecureHash=...`.
* The querydr and refund API (requests and answers) carry `vnp_SecureHash` over a fixed
  list of field values joined by '|' (the field order is each command's: api.py).

Times are yyyyMMddHHmmss in GMT+7 (Vietnam has no daylight saving time).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta, timezone
from urllib.parse import quote_plus

HASH_FIELD = "vnp_SecureHash"
UNSIGNED_FIELDS = (HASH_FIELD, "vnp_SecureHashType")  # the latter only in versions before 2.1.0
GMT7 = timezone(timedelta(hours=7))
TIME_FORMAT = "%Y%m%d%H%M%S"


def hmac_sha512(secret: str, data: str) -> str:
    return hmac.new(secret.encode("utf-8"), data.encode("utf-8"), hashlib.sha512).hexdigest()


def hash_data(params: Mapping[str, str]) -> str:
    """The string a payment URL's, an IPN's or a return URL's vnp_SecureHash signs."""
    return "&".join(f"{name}={quote_plus(value)}" for name, value in sorted(params.items())
                    if name.startswith("vnp_") and name not in UNSIGNED_FIELDS)


def signed_query(secret: str, params: Mapping[str, str]) -> str:
    """A payment URL's query: the signed parameters, then their vnp_SecureHash."""
    data = hash_data(params)
    return f"{data}&{HASH_FIELD}={hmac_sha512(secret, data)}"


def has_valid_hash(secret: str, params: Mapping[str, str]) -> bool:
    """Whether params carry the vnp_SecureHash of their other vnp_* parameters (any hex case)."""
    received = params.get(HASH_FIELD, "").lower()
    return bool(received) and hmac.compare_digest(received, hmac_sha512(secret, hash_data(params)))


def checksum(secret: str, values: Iterable[object]) -> str:
    """The querydr / refund checksum: the values in the command's order, joined by '|'
    (an absent value is the empty string)."""
    return hmac_sha512(secret, "|".join("" if v is None else str(v) for v in values))


def vnpay_time(moment: datetime) -> str:
    """A naive UTC datetime (as the database keeps them) as VNPay's GMT+7 yyyyMMddHHmmss."""
    return moment.replace(tzinfo=UTC).astimezone(GMT7).strftime(TIME_FORMAT)
