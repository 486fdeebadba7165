"""The payment URL: where the customer pays (the payment's checkout_url). Built and
signed here with no call to VNPay; VNPay learns of the payment when the customer opens it.

Amounts: a payment's amount_cents is in the currency's smallest unit per ISO 4217 (as
Stripe's unit_amount). VND's exponent is 0, so for VND amount_cents is whole dong, and
VNPay's vnp_Amount, dong x 100, is amount_cents x 100.
"""

from __future__ import annotations

import ipaddress
import re
import uuid
from datetime import datetime

from ...domain.errors import ValidationError
from ...domain.payment import Payment
from .settings import VnpayCredentials
from .signing import signed_query, vnpay_time

VERSION = "2.1.0"
CURRENCY = "VND"
AMOUNT_FACTOR = 100  # vnp_Amount = dong x 100
MAX_VNP_AMOUNT = 10**12 - 1  # vnp_Amount: Numeric[1,12]
ORDER_TYPE = "other"  # VNPay's goods category for anything not listed
LOCALES = ("vn", "en")
# vnp_IpAddr is the customer's address; the service, called by a shop's backend, does not
# know it unless the caller passes it. VNPay's own examples send this one.
UNKNOWN_IP = "127.0.0.1"
# What a caller may pass in a payment's metadata for VNPay, under VNPay's own names.
META_BANK_CODE = "vnp_BankCode"  # e.g. VNPAYQR, VNBANK, INTCARD: skips VNPay's method choice
META_LOCALE = "vnp_Locale"  # vn (default) or en
META_IP_ADDR = "vnp_IpAddr"  # the customer's IP address
BANK_CODE = re.compile(r"^[A-Za-z0-9]{3,20}$")
ORDER_INFO_MAX = 255
# vnp_OrderInfo must be Vietnamese without diacritics and without special characters:
# letters, digits and spaces only (they encode alike in every VNPay sample's encoder).
_NOT_ORDER_INFO = re.compile(r"[^A-Za-z0-9]+")


def txn_ref(payment: Payment) -> str:
    """vnp_TxnRef: the payment's callback hash without dashes, unique for ever (VNPay
    requires it unique within a day), so the IPN names its payment directly."""
    return uuid.UUID(payment.provider_callback_hash).hex


def callback_hash_of(txn_ref_value: str) -> str | None:
    """The callback hash a vnp_TxnRef of ours names; None for any other reference."""
    if not re.fullmatch(r"[0-9a-f]{32}", txn_ref_value):
        return None
    return str(uuid.UUID(txn_ref_value))


def vnp_amount(amount_cents: int) -> int:
    return amount_cents * AMOUNT_FACTOR


def check_options(metadata: dict[str, str]) -> None:
    """The VNPay options a caller may set in metadata. Raises ValidationError."""
    bank_code = metadata.get(META_BANK_CODE)
    if bank_code is not None and not BANK_CODE.match(bank_code):
        raise ValidationError(f"metadata {META_BANK_CODE} must be a VNPay bank code of 3 to 20 letters and digits, "
                              "e.g. VNPAYQR, VNBANK or INTCARD")
    locale = metadata.get(META_LOCALE)
    if locale is not None and locale not in LOCALES:
        raise ValidationError(f"metadata {META_LOCALE} must be one of {', '.join(LOCALES)}")
    ip_addr = metadata.get(META_IP_ADDR)
    if ip_addr is not None:
        try:
            ipaddress.ip_address(ip_addr)
        except ValueError:
            raise ValidationError(f"metadata {META_IP_ADDR} must be the customer's IPv4 or IPv6 address") from None


def order_info(payment: Payment) -> str:
    text = _NOT_ORDER_INFO.sub(" ", f"Payment {payment.id} {payment.resource_type} {payment.resource_id}")
    return " ".join(text.split())[:ORDER_INFO_MAX].strip()


def payment_url(payment: Payment, credentials: VnpayCredentials, *, return_url: str, expires_at: datetime) -> str:
    """The signed URL (vnp_Command=pay). vnp_CreateDate is the payment's creation and
    vnp_ExpireDate `expires_at` (naive UTC), so a retried create builds the same URL."""
    params = {
        "vnp_Version": VERSION,
        "vnp_Command": "pay",
        "vnp_TmnCode": credentials.tmn_code,
        "vnp_Amount": str(vnp_amount(payment.amount_cents)),
        "vnp_CurrCode": CURRENCY,
        "vnp_TxnRef": txn_ref(payment),
        "vnp_OrderInfo": order_info(payment),
        "vnp_OrderType": ORDER_TYPE,
        "vnp_Locale": payment.metadata.get(META_LOCALE, "vn"),
        "vnp_ReturnUrl": return_url,
        "vnp_IpAddr": payment.metadata.get(META_IP_ADDR, UNKNOWN_IP),
        "vnp_CreateDate": vnpay_time(payment.created_at),
        "vnp_ExpireDate": vnpay_time(expires_at),
    }
    if payment.metadata.get(META_BANK_CODE):
        params["vnp_BankCode"] = payment.metadata[META_BANK_CODE]
    return f"{credentials.payment_url}?{signed_query(credentials.hash_secret, params)}"
