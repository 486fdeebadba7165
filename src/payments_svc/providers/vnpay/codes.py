"""VNPay's code tables ("Bảng mã lỗi") and what each code means for a payment."""

from __future__ import annotations

from ...domain.enums import PaymentStatus

# vnp_ResponseCode of a payment (IPN, return URL).
PAYMENT_RESPONSES = {
    "00": "the payment succeeded",
    "07": "money was taken but the transaction is suspected of fraud; confirm or reject it in VNPay's merchant admin",
    "09": "the card or account is not registered for internet banking",
    "10": "the customer failed to verify the card or account more than 3 times",
    "11": "the payment window expired",
    "12": "the card or account is locked",
    "13": "the customer entered a wrong one-time password",
    "24": "the customer canceled the payment",
    "51": "the account's balance is insufficient",
    "65": "the account exceeded its daily limit",
    "75": "the paying bank is under maintenance",
    "79": "the customer entered a wrong payment password too many times",
    "99": "other error",
}

# vnp_TransactionStatus (IPN, return URL, querydr, refund).
TRANSACTION_STATUSES = {
    "00": "paid",
    "01": "not completed",
    "02": "failed",
    "04": "reversed: the customer's bank debited the money but the transaction failed at VNPay, which returns it",
    "05": "VNPay is processing a refund",
    "06": "VNPay sent the refund to the bank",
    "07": "suspected of fraud",
    "09": "refund rejected",
}
PAID_STATUSES = ("00", "05", "06", "09")  # paid, then (some of it) refunded or a refund tried
REFUND_TRANSACTION_TYPES = ("02", "03")  # querydr's vnp_TransactionType: full, partial refund

# vnp_ResponseCode of the querydr and refund API.
API_RESPONSES = {
    "00": "request succeeded",
    "02": "invalid merchant: VNPay does not know VNPAY_TMN_CODE",
    "03": "the request's data is malformed",
    "91": "transaction not found",
    "94": "duplicate request: a refund of this transaction is already being processed",
    "95": "the transaction did not succeed at VNPay, which refuses to refund it",
    "97": "invalid checksum: VNPAY_HASH_SECRET is not the terminal's secret",
    "99": "other error",
}
SUSPECTED_FRAUD = "07"
NOT_COMPLETED = "01"


def describe(table: dict[str, str], code: str) -> str:
    return f"{code} ({table.get(code, 'unknown code')})"


def payment_outcome(response_code: str, transaction_status: str) -> PaymentStatus | None:
    """What an IPN says of its payment: PAID only when both codes are 00; PROCESSING when
    VNPay holds it as suspected fraud (money taken, the merchant decides); None while not
    completed; FAILED otherwise (a vnp_TxnRef is one attempt: it cannot be paid again)."""
    if response_code == "00" and transaction_status == "00":
        return PaymentStatus.PAID
    if SUSPECTED_FRAUD in (response_code, transaction_status):
        return PaymentStatus.PROCESSING
    if transaction_status == NOT_COMPLETED:
        return None
    return PaymentStatus.FAILED


def queried_outcome(transaction_status: str, transaction_type: str) -> PaymentStatus | None:
    """What querydr's answer about an existing transaction says of its payment."""
    if transaction_status in PAID_STATUSES or transaction_type in REFUND_TRANSACTION_TYPES:
        return PaymentStatus.PAID
    if transaction_status == SUSPECTED_FRAUD:
        return PaymentStatus.PROCESSING
    if transaction_status == NOT_COMPLETED:
        return None
    return PaymentStatus.FAILED
