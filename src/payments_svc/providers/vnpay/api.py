"""VNPay's server-to-server API: one URL, a JSON POST per command. `querydr` reads the
state of a payment's transaction (reconcile, cancel, expiry, before a refund); `refund`
returns money (vnp_TransactionType 02 in full, 03 in part). Requests and answers carry a
checksum over the command's fields, in the order VNPay documents them, joined by '|'.

Errors: VNPay unreachable, slow, answering other than HTTP 200 JSON, or refusing our
credentials (02, 97) is retryable (UNAVAILABLE); a request VNPay calls malformed (03) or a
transaction it will not act on (95) is FAILED_PRECONDITION. The hash secret never appears
in a message or a log.
"""

from __future__ import annotations

import hmac
import json
import uuid
from dataclasses import dataclass
from typing import Any

import aiohttp
import structlog

from ...clock import utcnow
from ...domain.errors import ErrorKind, ProviderError
from ...domain.payment import Payment
from .codes import API_RESPONSES, describe
from .payment_url import VERSION, txn_ref, vnp_amount
from .settings import VnpayCredentials
from .signing import HASH_FIELD, checksum, vnpay_time

log = structlog.get_logger("payments.vnpay")

QUERY_FIELDS = ("vnp_RequestId", "vnp_Version", "vnp_Command", "vnp_TmnCode", "vnp_TxnRef", "vnp_TransactionDate",
                "vnp_CreateDate", "vnp_IpAddr", "vnp_OrderInfo")
REFUND_FIELDS = ("vnp_RequestId", "vnp_Version", "vnp_Command", "vnp_TmnCode", "vnp_TransactionType", "vnp_TxnRef",
                 "vnp_Amount", "vnp_TransactionNo", "vnp_TransactionDate", "vnp_CreateBy", "vnp_CreateDate",
                 "vnp_IpAddr", "vnp_OrderInfo")
REFUND_ANSWER_FIELDS = ("vnp_ResponseId", "vnp_Command", "vnp_ResponseCode", "vnp_Message", "vnp_TmnCode",
                        "vnp_TxnRef", "vnp_Amount", "vnp_BankCode", "vnp_PayDate", "vnp_TransactionNo",
                        "vnp_TransactionType", "vnp_TransactionStatus", "vnp_OrderInfo")
QUERY_ANSWER_FIELDS = REFUND_ANSWER_FIELDS + ("vnp_PromotionCode", "vnp_PromotionAmount")
FULL_REFUND, PARTIAL_REFUND = "02", "03"
# vnp_IpAddr of an API call is the calling server's address, which VNPay records; behind
# NAT the service cannot know its public one.
SERVER_IP = "127.0.0.1"
CREATED_BY_MAX = 250


@dataclass(frozen=True, slots=True)
class Answer:
    """A verified answer of VNPay's API (every value a string, absent ones empty)."""

    command: str
    fields: dict[str, str]

    def __getitem__(self, name: str) -> str:
        return self.fields.get(name, "")

    @property
    def response_code(self) -> str:
        return self["vnp_ResponseCode"]

    @property
    def amount_cents(self) -> int | None:
        """vnp_Amount back in the payment's unit (whole dong); None if it is not a whole number of them."""
        raw = self["vnp_Amount"]
        return int(raw) // 100 if raw.isdigit() and int(raw) % 100 == 0 else None

    def error(self) -> ProviderError:
        """The ProviderError for an answer other than 00."""
        code = self.response_code
        text = f"VNPay refused the {self.command} request with code {describe(API_RESPONSES, code)}"
        if self["vnp_Message"]:
            text += f": {self['vnp_Message']}"
        if code in ("02", "97"):
            # Our configuration, not the caller's request: retryable once an operator fixes it.
            log.error("vnpay_credentials_rejected", command=self.command, response_code=code)
            return ProviderError(text, retryable=True)
        if code in ("03", "91", "95"):
            return ProviderError(text, retryable=False, kind=ErrorKind.FAILED_PRECONDITION)
        return ProviderError(text, retryable=True)  # 94 (a request in progress), 99, unknown codes


class VnpayApi:
    def __init__(self, credentials: VnpayCredentials, *, timeout_seconds: float):
        self._credentials = credentials
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def query(self, payment: Payment) -> Answer:
        """querydr of the payment's transaction. Answers 00 and 91 (VNPay has no such
        transaction: the customer never opened the payment URL) are returned."""
        body = {
            "vnp_RequestId": uuid.uuid4().hex,  # a read: any unique id will do
            "vnp_Version": VERSION,
            "vnp_Command": "querydr",
            "vnp_TmnCode": self._credentials.tmn_code,
            "vnp_TxnRef": txn_ref(payment),
            "vnp_OrderInfo": f"Query payment {payment.id}",
            "vnp_TransactionDate": vnpay_time(payment.created_at),  # the payment URL's vnp_CreateDate
            "vnp_CreateDate": vnpay_time(utcnow()),
            "vnp_IpAddr": SERVER_IP,
        }
        answer = await self._post(body, QUERY_FIELDS, QUERY_ANSWER_FIELDS)
        if answer.response_code not in ("00", "91"):
            raise answer.error()
        return answer

    async def refund(self, payment: Payment, *, request_id: str, amount_cents: int, transaction_no: str,
                     order_info: str) -> Answer:
        """Refunds amount_cents of the paid transaction: in full when it is the whole
        payment, else in part. request_id (vnp_RequestId) is the same on every retry of
        one refund, so VNPay refuses a repeat (94) instead of refunding twice."""
        body = {
            "vnp_RequestId": request_id,
            "vnp_Version": VERSION,
            "vnp_Command": "refund",
            "vnp_TmnCode": self._credentials.tmn_code,
            "vnp_TransactionType": FULL_REFUND if amount_cents == payment.amount_cents else PARTIAL_REFUND,
            "vnp_TxnRef": txn_ref(payment),
            "vnp_Amount": str(vnp_amount(amount_cents)),
            "vnp_OrderInfo": order_info,
            "vnp_TransactionNo": transaction_no,
            "vnp_TransactionDate": vnpay_time(payment.created_at),
            "vnp_CreateBy": payment.caller_service[:CREATED_BY_MAX],
            "vnp_CreateDate": vnpay_time(utcnow()),
            "vnp_IpAddr": SERVER_IP,
        }
        answer = await self._post(body, REFUND_FIELDS, REFUND_ANSWER_FIELDS)
        if answer.response_code != "00":
            raise answer.error()
        return answer

    async def _post(self, body: dict[str, str], signed: tuple[str, ...], answer_signed: tuple[str, ...]) -> Answer:
        secret = self._credentials.hash_secret
        body[HASH_FIELD] = checksum(secret, (body[name] for name in signed))
        command = body["vnp_Command"]
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        try:
            async with self._session.post(self._credentials.api_url, json=body) as response:
                text = await response.text()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("vnpay_unavailable", command=command, error=type(exc).__name__)
            raise ProviderError(f"VNPay is unavailable ({command}: {type(exc).__name__})", retryable=True) from None
        if status != 200:
            log.warning("vnpay_unavailable", command=command, http_status=status)
            raise ProviderError(f"VNPay is unavailable ({command}: HTTP {status})", retryable=True)
        fields = _fields(text)
        if fields is None:
            raise ProviderError(f"VNPay's {command} answer is not a JSON object", retryable=True)
        answer = Answer(command, fields)
        received = fields.get(HASH_FIELD, "").lower()
        if received or answer.response_code == "00":
            # Only an answer that verifies is believed; VNPay may leave errors unsigned.
            expected = checksum(secret, (fields.get(name, "") for name in answer_signed))
            if not hmac.compare_digest(received, expected):
                log.error("vnpay_answer_checksum_mismatch", command=command, response_code=answer.response_code)
                raise ProviderError(f"VNPay's {command} answer (code {describe(API_RESPONSES, answer.response_code)}) "
                                    "failed its checksum; check VNPAY_HASH_SECRET", retryable=True)
        if answer.response_code == "00" and (answer["vnp_TxnRef"] != body["vnp_TxnRef"]
                                             or answer["vnp_TmnCode"] != body["vnp_TmnCode"]):
            raise ProviderError(f"VNPay's {command} answer is about another transaction", retryable=True)
        return answer


def _fields(text: str) -> dict[str, str] | None:
    try:
        data: Any = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    return {str(k): "" if v is None else str(v) for k, v in data.items()}

