"""A local stand-in for VNPay (sandbox.vnpayment.vn), for tests.

`FakeVnpay` serves, on 127.0.0.1 (an ephemeral port), what the service uses of VNPay's
API version 2.1.0, per VNPay's public documentation (the PAY guide, "API querydr, refund"
and the code tables; see payments_svc/providers/vnpay/__init__.py for the addresses):

    GET  /paymentv2/vpcpay.html              the payment page: the payment URL is checked as
                                             VNPay checks it (parameters, formats, the terminal,
                                             vnp_SecureHash) and its transaction opened
    POST /paymentv2/customer/{txn}/{action}  the page's buttons (pay, cancel, fail): VNPay's IPN
                                             to the terminal's IPN URL, then a 303 to vnp_ReturnUrl
    POST /merchant_webapi/api/transaction    querydr and refund: checksum verified, answered signed

Its signing is written here from VNPay's documentation, apart from the service's code
(urlencode with quote_plus over the sorted parameters; '|'-joined checksums), so the two
agreeing is evidence, and a unit test pins both to a hand-computed HMAC.

Plain-Python controls play the customer and VNPay: `await fake.pay(checkout_url)`,
`cancel`, `fail(url, code)` send the IPN VNPay would send and return what the service
answered; `ipn_params`, `sign` and `send_ipn` craft IPNs (replays, tampering);
`fail_next_api` and `set_api_latency` make the API misbehave.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import hmac
import ipaddress
import itertools
import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qsl, quote_plus, urlencode, urlsplit

import aiohttp
from aiohttp import web

PAY_PATH = "/paymentv2/vpcpay.html"
API_PATH = "/merchant_webapi/api/transaction"
GMT7 = timezone(timedelta(hours=7))
PAY_REQUIRED = ("vnp_Version", "vnp_Command", "vnp_TmnCode", "vnp_Amount", "vnp_CurrCode", "vnp_TxnRef",
                "vnp_OrderInfo", "vnp_OrderType", "vnp_Locale", "vnp_ReturnUrl", "vnp_IpAddr", "vnp_CreateDate")
PAY_OPTIONAL = ("vnp_BankCode", "vnp_ExpireDate", "vnp_SecureHash")
QUERY_FIELDS = ("vnp_RequestId", "vnp_Version", "vnp_Command", "vnp_TmnCode", "vnp_TxnRef", "vnp_TransactionDate",
                "vnp_CreateDate", "vnp_IpAddr", "vnp_OrderInfo")
REFUND_FIELDS = ("vnp_RequestId", "vnp_Version", "vnp_Command", "vnp_TmnCode", "vnp_TransactionType", "vnp_TxnRef",
                 "vnp_Amount", "vnp_TransactionNo", "vnp_TransactionDate", "vnp_CreateBy", "vnp_CreateDate",
                 "vnp_IpAddr", "vnp_OrderInfo")
REFUND_ANSWER = ("vnp_ResponseId", "vnp_Command", "vnp_ResponseCode", "vnp_Message", "vnp_TmnCode", "vnp_TxnRef",
                 "vnp_Amount", "vnp_BankCode", "vnp_PayDate", "vnp_TransactionNo", "vnp_TransactionType",
                 "vnp_TransactionStatus", "vnp_OrderInfo")
QUERY_ANSWER = REFUND_ANSWER + ("vnp_PromotionCode", "vnp_PromotionAmount")
OPTIONAL_API_FIELDS = ("vnp_TransactionNo",)  # may be empty in a refund
DATE = re.compile(r"^\d{14}$")
ALNUM = re.compile(r"^[A-Za-z0-9]+$")


def vnpay_now() -> str:
    return datetime.now(GMT7).strftime("%Y%m%d%H%M%S")


def parse_vnpay_date(value: str) -> datetime | None:
    if not DATE.match(value):
        return None
    try:
        return datetime.strptime(value, "%Y%m%d%H%M%S").replace(tzinfo=GMT7)
    except ValueError:
        return None


def secure_hash(secret: str, params: dict[str, str]) -> str:
    """VNPay's vnp_SecureHash of a payment URL, an IPN or a return URL."""
    signed = sorted((k, v) for k, v in params.items() if k.startswith("vnp_") and k not in ("vnp_SecureHash", "vnp_SecureHashType"))
    return hmac.new(secret.encode(), urlencode(signed, quote_via=quote_plus).encode(), hashlib.sha512).hexdigest()


def api_checksum(secret: str, values: list[str]) -> str:
    return hmac.new(secret.encode(), "|".join(values).encode(), hashlib.sha512).hexdigest()


class PageError(Exception):
    """The payment page refuses the URL; VNPay shows the code on its error page."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code


@dataclass
class Transaction:
    txn_ref: str
    tmn_code: str
    amount: int  # vnp_Amount: dong x 100
    order_info: str
    return_url: str
    create_date: str
    expire_date: str
    bank_code: str
    status: str = "01"  # vnp_TransactionStatus: not completed
    response_code: str = ""
    transaction_no: str = "0"
    pay_date: str = ""
    transaction_type: str = "01"  # 01 payment; 02 / 03 once refunded in full / in part
    refunds: list[dict[str, Any]] = field(default_factory=list)
    ipns: list[IpnDelivery] = field(default_factory=list)

    @property
    def refunded(self) -> int:
        return sum(r["amount"] for r in self.refunds)


@dataclass
class IpnDelivery:
    """One IPN the fake sent, and the service's answer."""

    params: dict[str, str]
    http_status: int | None  # None: the IPN URL could not be reached
    answer: dict[str, Any] | None
    return_url: str = ""  # where the customer's browser was sent next

    @property
    def rsp_code(self) -> str | None:
        return (self.answer or {}).get("RspCode")


@dataclass
class _Fault:
    remaining: int
    status: int
    after_processing: bool  # the request takes effect, its answer is lost
    command: str | None  # only requests of this vnp_Command


class FakeVnpay:
    def __init__(self, tmn_code: str = "FAKETMN1", hash_secret: str = "FAKEVNPAYSECRETFORTESTS0123456789",
                 ipn_url: str = ""):
        self.tmn_code = tmn_code
        self.hash_secret = hash_secret
        self.ipn_url = ipn_url  # the terminal's IPN URL, as registered with VNPay
        self.api_requests: list[dict[str, Any]] = []
        self.page_errors: list[str] = []
        self._transactions: dict[str, Transaction] = {}
        self._request_ids: set[str] = set()
        self._numbers = itertools.count(14000000)
        self._faults: list[_Fault] = []
        self._latency = 0.0
        self._lock = threading.Lock()
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- lifecycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self._port is None:
            raise RuntimeError("FakeVnpay is not started")
        return f"http://127.0.0.1:{self._port}"

    @property
    def payment_url(self) -> str:
        return self.url + PAY_PATH

    @property
    def api_url(self) -> str:
        return self.url + API_PATH

    def env(self) -> dict[str, str]:
        """The service's settings for this fake."""
        return {"VNPAY_TMN_CODE": self.tmn_code, "VNPAY_HASH_SECRET": self.hash_secret,
                "VNPAY_PAYMENT_URL": self.payment_url, "VNPAY_API_URL": self.api_url}

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get(PAY_PATH, self._page)
        app.router.add_post("/paymentv2/customer/{txn_ref}/{action}", self._button)
        app.router.add_post(API_PATH, self._api)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self._port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = self._port = None

    async def __aenter__(self) -> FakeVnpay:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def start_in_thread(self) -> FakeVnpay:
        """Serves from a background thread with its own event loop; returns self."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="FakeVnpay", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.start(), self._loop).result(timeout=30)
        return self

    def stop_thread(self) -> None:
        if self._loop is None or self._thread is None:
            return
        asyncio.run_coroutine_threadsafe(self.stop(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()
        self._loop = self._thread = None

    # --- controls: the customer ------------------------------------------------------------

    def open(self, checkout_url: str) -> Transaction:
        """The customer opens the payment URL. Raises PageError as VNPay's page would refuse it."""
        query = urlsplit(checkout_url).query
        with self._lock:
            return copy.deepcopy(self._open(dict(parse_qsl(query, keep_blank_values=True))))

    async def pay(self, checkout_url: str) -> IpnDelivery:
        return await self._finish(self.open(checkout_url).txn_ref, "00", "00")

    async def cancel(self, checkout_url: str) -> IpnDelivery:
        """The customer presses Cancel on VNPay's page (response code 24)."""
        return await self._finish(self.open(checkout_url).txn_ref, "24", "02")

    async def fail(self, checkout_url: str, code: str = "51") -> IpnDelivery:
        """The payment fails with vnp_ResponseCode `code` (51: insufficient balance; 07:
        money taken, held as suspected fraud)."""
        return await self._finish(self.open(checkout_url).txn_ref, code, "07" if code == "07" else "02")

    # --- controls: VNPay -------------------------------------------------------------------

    def transaction(self, txn_ref: str) -> Transaction:
        with self._lock:
            return copy.deepcopy(self._transactions[txn_ref])

    def ipn_params(self, txn_ref: str) -> dict[str, str]:
        """The signed parameters of the transaction's last IPN (to replay or tamper with)."""
        with self._lock:
            return dict(self._transactions[txn_ref].ipns[-1].params)

    def sign(self, params: dict[str, str]) -> dict[str, str]:
        """params with a fresh vnp_SecureHash, as VNPay signs."""
        unsigned = {k: v for k, v in params.items() if k != "vnp_SecureHash"}
        return {**unsigned, "vnp_SecureHash": secure_hash(self.hash_secret, unsigned)}

    async def send_ipn(self, params: dict[str, str]) -> IpnDelivery:
        """GETs the IPN URL with params, as VNPay calls it."""
        url = f"{self.ipn_url}?{urlencode(params, quote_via=quote_plus)}"
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session, \
                    session.get(url) as response:
                text = await response.text()
                status = response.status
        except aiohttp.ClientError:
            return IpnDelivery(dict(params), None, None)
        try:
            answer = json.loads(text)
        except ValueError:
            answer = {"unparsed": text}
        return IpnDelivery(dict(params), status, answer)

    def fail_next_api(self, n: int = 1, status: int = 503, *, after_processing: bool = False,
                      command: str | None = None) -> None:
        """The next n API requests (of `command`, querydr or refund) answer `status`: before
        VNPay acts on them, or (after_processing) after, as an answer lost on the way back."""
        with self._lock:
            self._faults.append(_Fault(n, status, after_processing, command))

    def set_api_latency(self, seconds: float) -> None:
        self._latency = seconds

    # --- the payment page --------------------------------------------------------------------

    def _open(self, params: dict[str, str]) -> Transaction:
        missing = [name for name in PAY_REQUIRED if not params.get(name)]
        if missing:
            raise PageError("03", f"missing {', '.join(missing)}")
        unknown = sorted(set(params) - set(PAY_REQUIRED) - set(PAY_OPTIONAL))
        if unknown:
            raise PageError("03", f"unknown parameters {', '.join(unknown)}")
        if params["vnp_TmnCode"] != self.tmn_code:
            raise PageError("02", "invalid merchant (vnp_TmnCode)")
        if not hmac.compare_digest(params.get("vnp_SecureHash", "").lower(), secure_hash(self.hash_secret, params)):
            raise PageError("70", "invalid signature")
        if params["vnp_Version"] != "2.1.0" or params["vnp_Command"] != "pay" or params["vnp_CurrCode"] != "VND":
            raise PageError("03", "vnp_Version 2.1.0, vnp_Command pay and vnp_CurrCode VND are required")
        amount = params["vnp_Amount"]
        if not (amount.isdigit() and len(amount) <= 12 and int(amount) > 0 and int(amount) % 100 == 0):
            raise PageError("03", "vnp_Amount must be the amount x 100, at most 12 digits")
        if not (ALNUM.match(params["vnp_TxnRef"]) and len(params["vnp_TxnRef"]) <= 100):
            raise PageError("03", "vnp_TxnRef must be 1 to 100 letters and digits")
        if len(params["vnp_OrderInfo"]) > 255 or not re.fullmatch(r"[A-Za-z0-9 ]+", params["vnp_OrderInfo"]):
            raise PageError("03", "vnp_OrderInfo must be Vietnamese without diacritics, no special characters")
        if params["vnp_Locale"] not in ("vn", "en"):
            raise PageError("03", "vnp_Locale must be vn or en")
        if urlsplit(params["vnp_ReturnUrl"]).scheme not in ("http", "https"):
            raise PageError("03", "vnp_ReturnUrl must be an http(s) URL")
        try:
            ipaddress.ip_address(params["vnp_IpAddr"])
        except ValueError:
            raise PageError("03", "vnp_IpAddr must be an IP address") from None
        if "vnp_BankCode" in params and not re.fullmatch(r"[A-Za-z0-9]{3,20}", params["vnp_BankCode"]):
            raise PageError("03", "invalid vnp_BankCode")
        created = parse_vnpay_date(params["vnp_CreateDate"])
        expires = parse_vnpay_date(params.get("vnp_ExpireDate", "")) if "vnp_ExpireDate" in params else None
        if created is None or ("vnp_ExpireDate" in params and (expires is None or expires <= created)):
            raise PageError("03", "vnp_CreateDate / vnp_ExpireDate must be yyyyMMddHHmmss (GMT+7), expiry after creation")
        expires = expires or created + timedelta(minutes=15)  # VNPay's default payment window
        existing = self._transactions.get(params["vnp_TxnRef"])
        if existing is not None:
            # One vnp_TxnRef is one attempt: the same URL may be reopened until it completes.
            if existing.status != "01" or existing.amount != int(amount) or existing.create_date != params["vnp_CreateDate"]:
                raise PageError("01", "transaction already exists")
            return existing
        if datetime.now(UTC) > expires:
            raise PageError("11", "the payment window has expired")
        transaction = Transaction(
            txn_ref=params["vnp_TxnRef"], tmn_code=params["vnp_TmnCode"], amount=int(amount),
            order_info=params["vnp_OrderInfo"], return_url=params["vnp_ReturnUrl"], create_date=params["vnp_CreateDate"],
            expire_date=expires.strftime("%Y%m%d%H%M%S"), bank_code=params.get("vnp_BankCode", "NCB"),
        )
        self._transactions[transaction.txn_ref] = transaction
        return transaction

    async def _finish(self, txn_ref: str, response_code: str, status: str) -> IpnDelivery:
        """The transaction's outcome, and the IPN about it."""
        with self._lock:
            transaction = self._transactions[txn_ref]
            if transaction.status != "01":
                raise PageError("01", "transaction already completed")
            if datetime.now(GMT7) > parse_vnpay_date(transaction.expire_date):
                response_code, status = "11", "02"  # too late: VNPay ends it as timed out
            transaction.response_code, transaction.status = response_code, status
            transaction.transaction_no = "0" if response_code == "24" else str(next(self._numbers))
            transaction.pay_date = vnpay_now()
            params = {
                "vnp_Amount": str(transaction.amount),
                "vnp_BankCode": transaction.bank_code,
                "vnp_OrderInfo": transaction.order_info,
                "vnp_PayDate": transaction.pay_date,
                "vnp_ResponseCode": response_code,
                "vnp_TmnCode": transaction.tmn_code,
                "vnp_TransactionNo": transaction.transaction_no,
                "vnp_TransactionStatus": status,
                "vnp_TxnRef": txn_ref,
            }
            if response_code != "24":
                params.update(vnp_BankTranNo=f"VNP{transaction.transaction_no}", vnp_CardType="ATM")
            signed = self.sign(params)
        delivery = await self.send_ipn(signed)
        delivery.return_url = f"{transaction.return_url}?{urlencode(signed, quote_via=quote_plus)}"
        with self._lock:
            self._transactions[txn_ref].ipns.append(delivery)
        return delivery

    async def _page(self, request: web.Request) -> web.Response:
        try:
            with self._lock:
                transaction = self._open(dict(parse_qsl(request.rel_url.raw_query_string, keep_blank_values=True)))
        except PageError as exc:
            self.page_errors.append(str(exc))
            return web.Response(status=400, text=f"VNPay error {exc}")
        buttons = "".join(f'<form method="post" action="/paymentv2/customer/{transaction.txn_ref}/{a}">'
                          f'<button>{a}</button></form>' for a in ("pay", "cancel", "fail"))
        return web.Response(content_type="text/html", text=f"<h1>{transaction.amount // 100} VND</h1>{buttons}")

    async def _button(self, request: web.Request) -> web.Response:
        txn_ref, action = request.match_info["txn_ref"], request.match_info["action"]
        outcome = {"pay": ("00", "00"), "cancel": ("24", "02"), "fail": ("51", "02")}.get(action)
        if outcome is None or txn_ref not in self._transactions:
            return web.Response(status=404, text="no such transaction or action")
        try:
            delivery = await self._finish(txn_ref, *outcome)
        except PageError as exc:
            return web.Response(status=400, text=f"VNPay error {exc}")
        raise web.HTTPSeeOther(delivery.return_url)

    # --- the merchant API --------------------------------------------------------------------

    async def _api(self, request: web.Request) -> web.Response:
        if self._latency:
            await asyncio.sleep(self._latency)
        try:
            body = json.loads(await request.text())
        except ValueError:
            body = None
        fault = self._take_fault(body.get("vnp_Command") if isinstance(body, dict) else None)
        if fault is not None and not fault.after_processing:
            return web.Response(status=fault.status, text="Service Unavailable")
        with self._lock:
            self.api_requests.append(copy.deepcopy(body))
            answer = self._command(body) if isinstance(body, dict) else self._error({}, "03", "body is not a JSON object")
        if fault is not None:
            return web.Response(status=fault.status, text="Service Unavailable")
        return web.json_response(answer)

    def _take_fault(self, command: str | None) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.command not in (None, command):
                    continue
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    def _command(self, body: dict[str, Any]) -> dict[str, str]:
        command = body.get("vnp_Command")
        fields = {"querydr": QUERY_FIELDS, "refund": REFUND_FIELDS}.get(command)
        if fields is None:
            return self._error(body, "03", "unknown vnp_Command")
        if not all(isinstance(body.get(name, ""), str) for name in (*fields, "vnp_SecureHash")):
            return self._error(body, "03", "every value is a string")
        missing = [name for name in fields if not body.get(name) and name not in OPTIONAL_API_FIELDS]
        if missing:
            return self._error(body, "03", f"missing {', '.join(missing)}")
        if body["vnp_TmnCode"] != self.tmn_code:
            return self._error(body, "02", "invalid merchant")
        expected = api_checksum(self.hash_secret, [body.get(name, "") for name in fields])
        if not hmac.compare_digest(body.get("vnp_SecureHash", "").lower(), expected):
            return self._error(body, "97", "invalid checksum")
        if body["vnp_Version"] != "2.1.0" or not (ALNUM.match(body["vnp_RequestId"]) and len(body["vnp_RequestId"]) <= 32):
            return self._error(body, "03", "vnp_Version 2.1.0 and an alphanumeric vnp_RequestId of at most 32 are required")
        if parse_vnpay_date(body["vnp_CreateDate"]) is None or parse_vnpay_date(body["vnp_TransactionDate"]) is None:
            return self._error(body, "03", "dates are yyyyMMddHHmmss")
        try:
            ipaddress.ip_address(body["vnp_IpAddr"])
        except ValueError:
            return self._error(body, "03", "vnp_IpAddr must be an IP address")
        if body["vnp_RequestId"] in self._request_ids:
            return self._error(body, "94", "duplicate request")
        self._request_ids.add(body["vnp_RequestId"])
        transaction = self._transactions.get(body["vnp_TxnRef"])
        if transaction is None or transaction.create_date != body["vnp_TransactionDate"]:
            return self._error(body, "91", "transaction not found")
        if command == "querydr":
            return self._answer(QUERY_ANSWER, transaction, "00", "QueryDR Success", vnp_Command="querydr",
                                vnp_PromotionCode="", vnp_PromotionAmount="")
        return self._refund(body, transaction)

    def _refund(self, body: dict[str, str], transaction: Transaction) -> dict[str, str]:
        kind, amount = body["vnp_TransactionType"], body["vnp_Amount"]
        if kind not in ("02", "03") or not amount.isdigit() or int(amount) <= 0:
            return self._error(body, "03", "vnp_TransactionType 02 or 03 and a positive vnp_Amount are required")
        if transaction.status not in ("00", "05", "06") or transaction.response_code != "00":
            return self._error(body, "95", "the transaction did not succeed")
        if body["vnp_TransactionNo"] and body["vnp_TransactionNo"] != transaction.transaction_no:
            return self._error(body, "91", "no such transaction to refund")
        left = transaction.amount - transaction.refunded
        if int(amount) > left or (kind == "02" and (transaction.refunds or int(amount) != transaction.amount)):
            return self._error(body, "03", f"invalid refund amount: {left} refundable, a full refund is of the whole amount")
        refund_no = str(next(self._numbers))
        transaction.refunds.append({"request_id": body["vnp_RequestId"], "type": kind, "amount": int(amount),
                                    "transaction_no": refund_no, "created_by": body["vnp_CreateBy"]})
        transaction.transaction_type, transaction.status = kind, "05"  # VNPay is processing the refund
        return self._answer(REFUND_ANSWER, transaction, "00", "Refund success", vnp_Command="refund",
                            vnp_Amount=amount, vnp_TransactionNo=refund_no, vnp_PayDate=vnpay_now())

    def _answer(self, signed: tuple[str, ...], transaction: Transaction, code: str, message: str,
                **overrides: str) -> dict[str, str]:
        fields = {
            "vnp_ResponseId": uuid.uuid4().hex, "vnp_ResponseCode": code, "vnp_Message": message,
            "vnp_TmnCode": transaction.tmn_code, "vnp_TxnRef": transaction.txn_ref,
            "vnp_Amount": str(transaction.amount), "vnp_BankCode": transaction.bank_code,
            "vnp_PayDate": transaction.pay_date, "vnp_TransactionNo": transaction.transaction_no,
            "vnp_TransactionType": transaction.transaction_type, "vnp_TransactionStatus": transaction.status,
            "vnp_OrderInfo": transaction.order_info, **overrides,
        }
        fields["vnp_SecureHash"] = api_checksum(self.hash_secret, [fields[name] for name in signed])
        return fields

    def _error(self, body: dict[str, Any], code: str, message: str) -> dict[str, str]:
        """An error answer to a request, signed as VNPay signs its answers."""
        fields = {"vnp_ResponseId": uuid.uuid4().hex, "vnp_Command": str(body.get("vnp_Command", "")),
                  "vnp_ResponseCode": code, "vnp_Message": message, "vnp_TmnCode": self.tmn_code,
                  "vnp_TxnRef": str(body.get("vnp_TxnRef", ""))}
        signed = QUERY_ANSWER if fields["vnp_Command"] == "querydr" else REFUND_ANSWER
        fields["vnp_SecureHash"] = api_checksum(self.hash_secret, [fields.get(name, "") for name in signed])
        return fields
