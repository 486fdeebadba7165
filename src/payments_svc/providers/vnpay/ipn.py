"""The IPN (VNPay's server-to-server GET to our IPN URL) and the return URL (the
customer's browser, sent back with the same parameters): vnp_* query parameters signed
with vnp_SecureHash. Only the IPN changes a payment; the return URL only shows a page."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl

from ...domain.enums import PaymentStatus
from ...domain.errors import CallbackAmountMismatchError, CallbackRejectedError
from ..base import ProviderEvent
from .codes import PAYMENT_RESPONSES, TRANSACTION_STATUSES, describe, payment_outcome
from .payment_url import AMOUNT_FACTOR, callback_hash_of
from .settings import VnpayCredentials
from .signing import has_valid_hash

EVENT_TYPE = "vnpay.ipn"
REQUIRED = ("vnp_TmnCode", "vnp_TxnRef", "vnp_Amount", "vnp_ResponseCode", "vnp_TransactionStatus")


def parse_query(raw: bytes) -> dict[str, str]:
    """The parameters of a raw query string (as sent: percent-encoded, '+' for spaces).
    Raises CallbackRejectedError for a malformed one or a repeated name."""
    try:
        pairs = parse_qsl(raw.decode("ascii"), keep_blank_values=True, strict_parsing=True, errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise CallbackRejectedError("the query string is not URL-encoded vnp_* parameters") from None
    params = dict(pairs)
    if len(params) != len(pairs):
        raise CallbackRejectedError("a parameter is repeated")
    return params


def verified(params: dict[str, str], credentials: VnpayCredentials) -> dict[str, str]:
    """params if VNPay signed them for this terminal. Raises CallbackRejectedError."""
    missing = [name for name in REQUIRED if not params.get(name)]
    if missing:
        raise CallbackRejectedError(f"not a VNPay IPN: {', '.join(missing)} missing")
    if params["vnp_TmnCode"] != credentials.tmn_code:
        raise CallbackRejectedError(f"vnp_TmnCode {params['vnp_TmnCode'][:16]!r} is not this service's VNPay terminal")
    if not has_valid_hash(credentials.hash_secret, params):
        raise CallbackRejectedError("invalid vnp_SecureHash")
    return params


def ipn_event(params: dict[str, str], credentials: VnpayCredentials) -> ProviderEvent:
    """A verified IPN's meaning. Raises CallbackRejectedError (CallbackAmountMismatchError
    for an amount that is no whole number of dong)."""
    verified(params, credentials)
    txn_ref, amount = params["vnp_TxnRef"], params["vnp_Amount"]
    if not amount.isdigit() or int(amount) % AMOUNT_FACTOR:
        raise CallbackAmountMismatchError(f"vnp_Amount {amount[:20]!r} is not a whole number of dong x 100")
    response, transaction = params["vnp_ResponseCode"], params["vnp_TransactionStatus"]
    transaction_no = params.get("vnp_TransactionNo", "")
    status = payment_outcome(response, transaction)
    details = [f"response {describe(PAYMENT_RESPONSES, response)}",
               f"transaction status {describe(TRANSACTION_STATUSES, transaction)}"]
    details += [f"{label} {params[name]}" for label, name in (
        ("VNPay transaction", "vnp_TransactionNo"), ("bank", "vnp_BankCode"), ("bank transaction", "vnp_BankTranNo"),
        ("card type", "vnp_CardType"), ("paid at (GMT+7)", "vnp_PayDate")) if params.get(name)]
    return ProviderEvent(
        # VNPay repeats an IPN it got no 00/02 answer to, unchanged: the same event.
        event_id=f"vnpay:{txn_ref}:{transaction_no}:{response}:{transaction}",
        event_type=EVENT_TYPE,
        status=status,
        provider_payment_id=txn_ref,
        callback_hash=callback_hash_of(txn_ref),
        object_ids=(txn_ref,),
        amount_cents=int(amount) // AMOUNT_FACTOR,
        failure_reason=f"VNPay: {PAYMENT_RESPONSES.get(response, 'payment failed')} (response code {response})"
        if status == PaymentStatus.FAILED else None,
        message="VNPay IPN: " + ", ".join(details),
        needs_attention=status == PaymentStatus.PROCESSING,  # held for fraud review: the merchant decides
    )


@dataclass(frozen=True, slots=True)
class ReturnVisit:
    """What the return URL's parameters say, for the page the customer sees."""

    genuine: bool  # signed by VNPay for this terminal
    succeeded: bool
    txn_ref: str
    reason: str


def read_return(params: dict[str, str], credentials: VnpayCredentials) -> ReturnVisit:
    try:
        verified(params, credentials)
    except CallbackRejectedError as exc:
        return ReturnVisit(False, False, params.get("vnp_TxnRef", ""), exc.reason)
    response, transaction = params["vnp_ResponseCode"], params["vnp_TransactionStatus"]
    succeeded = payment_outcome(response, transaction) == PaymentStatus.PAID
    return ReturnVisit(True, succeeded, params["vnp_TxnRef"], PAYMENT_RESPONSES.get(response, "the payment failed"))
