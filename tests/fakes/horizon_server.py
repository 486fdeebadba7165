"""A local, Horizon-compatible HTTP server for tests.

``FakeHorizon`` keeps a tiny in-memory ledger (accounts, transactions,
payment operations) and serves it with Horizon's JSON shapes, paging rules
and SSE framing, so code using stellar-sdk's ``ServerAsync`` +
``AiohttpClient`` can run against it unchanged.

Deliberate simplifications: every submitted transaction closes its own
ledger (so it is always transaction #1 of that ledger); only ``payment``,
``create_account`` and ``account_merge`` operations are applied; reserves,
trustline limits, multisig and ``result_meta_xdr`` are not modelled. Trustlines
exist only if seeded through ``create_account(..., balances={asset: ...})``.

Test controls inject what a real deployment can do to a client: rate limiting
(429 with ``Retry-After``), streams cut or refused, a network reset, a Horizon
that now serves another network or keeps only recent history, and pages that
repeat the record at their cursor (as some Horizon-compatible servers do).
"""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from functools import partial
from typing import Any

from aiohttp import ClientSession, web
from multidict import CIMultiDict
from stellar_sdk import (
    Account,
    AccountMerge,
    Asset,
    CreateAccount,
    HashMemo,
    IdMemo,
    Keypair,
    Memo,
    MuxedAccount,
    Network,
    NoneMemo,
    Payment,
    ReturnHashMemo,
    StrKey,
    TextMemo,
    TransactionBuilder,
    TransactionEnvelope,
)
from stellar_sdk import xdr as sx
from stellar_sdk.exceptions import BadSignatureError

__all__ = ["FakeHorizon", "HorizonSubmissionError", "LoggedRequest"]

STROOPS_PER_UNIT = 10**7
BASE_FEE = 100
BASE_RESERVE = 5_000_000
PROTOCOL_VERSION = 22
TOTAL_COINS = 100_000_000_000 * STROOPS_PER_UNIT
DEFAULT_LIMIT = 10
MAX_LIMIT = 200
MAX_CURSOR = 2**63 - 1  # Horizon parses cursors as int64
RATE_LIMIT_PER_HOUR = 3600  # Horizon's default quota per IP
DEFAULT_STARTING_BALANCE = "10000"
TRUSTLINE_LIMIT = "922337203685.4775807"
# XDR of an empty LedgerEntryChanges array; fee changes are not modelled.
EMPTY_FEE_META_XDR = "AAAAAA=="
ERR = "https://stellar.org/horizon-errors/"

_TX_CODES = {
    "tx_success": sx.TransactionResultCode.txSUCCESS,
    "tx_failed": sx.TransactionResultCode.txFAILED,
    "tx_too_early": sx.TransactionResultCode.txTOO_EARLY,
    "tx_too_late": sx.TransactionResultCode.txTOO_LATE,
    "tx_missing_operation": sx.TransactionResultCode.txMISSING_OPERATION,
    "tx_bad_seq": sx.TransactionResultCode.txBAD_SEQ,
    "tx_bad_auth": sx.TransactionResultCode.txBAD_AUTH,
    "tx_insufficient_balance": sx.TransactionResultCode.txINSUFFICIENT_BALANCE,
    "tx_no_source_account": sx.TransactionResultCode.txNO_ACCOUNT,
    "tx_insufficient_fee": sx.TransactionResultCode.txINSUFFICIENT_FEE,
    "tx_bad_auth_extra": sx.TransactionResultCode.txBAD_AUTH_EXTRA,
}
# Result codes that carry no inner (per-operation-type) result.
_OUTER_OP_CODES = {
    "op_bad_auth": sx.OperationResultCode.opBAD_AUTH,
    "op_no_source_account": sx.OperationResultCode.opNO_ACCOUNT,
    "op_not_supported": sx.OperationResultCode.opNOT_SUPPORTED,
}
_PAYMENT_CODES = {
    "op_success": sx.PaymentResultCode.PAYMENT_SUCCESS,
    "op_malformed": sx.PaymentResultCode.PAYMENT_MALFORMED,
    "op_underfunded": sx.PaymentResultCode.PAYMENT_UNDERFUNDED,
    "op_src_no_trust": sx.PaymentResultCode.PAYMENT_SRC_NO_TRUST,
    "op_no_destination": sx.PaymentResultCode.PAYMENT_NO_DESTINATION,
    "op_no_trust": sx.PaymentResultCode.PAYMENT_NO_TRUST,
}
_CREATE_ACCOUNT_CODES = {
    "op_success": sx.CreateAccountResultCode.CREATE_ACCOUNT_SUCCESS,
    "op_malformed": sx.CreateAccountResultCode.CREATE_ACCOUNT_MALFORMED,
    "op_underfunded": sx.CreateAccountResultCode.CREATE_ACCOUNT_UNDERFUNDED,
    "op_already_exists": sx.CreateAccountResultCode.CREATE_ACCOUNT_ALREADY_EXIST,
}
_ACCOUNT_MERGE_CODES = {
    "op_success": sx.AccountMergeResultCode.ACCOUNT_MERGE_SUCCESS,
    "op_malformed": sx.AccountMergeResultCode.ACCOUNT_MERGE_MALFORMED,
    "op_no_account": sx.AccountMergeResultCode.ACCOUNT_MERGE_NO_ACCOUNT,
    "op_has_sub_entries": sx.AccountMergeResultCode.ACCOUNT_MERGE_HAS_SUB_ENTRIES,
}
_TYPE_I = {CreateAccount: 0, Payment: 1, AccountMerge: 8}
_TYPE_NAME = {0: "create_account", 1: "payment", 8: "account_merge"}


class HorizonSubmissionError(Exception):
    """Raised by ``pay``/``create_account`` when the fake rejects a transaction."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status = status
        self.problem = problem
        self.result_codes = problem.get("extras", {}).get("result_codes", {})
        super().__init__(f"{status} {problem.get('title')}: {self.result_codes}")


@dataclass(frozen=True)
class LoggedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: CIMultiDict[str]  # case-insensitive, like HTTP
    at: float = field(default_factory=time.monotonic)  # when it arrived


class _Problem(Exception):
    def __init__(self, status: int, kind: str, title: str, detail: str, extras: dict | None = None):
        super().__init__(title)
        self.status = status
        self.body: dict[str, Any] = {"type": ERR + kind, "title": title, "status": status, "detail": detail}
        if extras is not None:
            self.body["extras"] = extras


def _not_found() -> _Problem:
    return _Problem(
        404,
        "not_found",
        "Resource Missing",
        "The resource at the url requested was not found.  This usually occurs for one of two "
        "reasons:  The url requested is not valid, or no data in our database could be found "
        "with the parameters provided.",
    )


def _bad_request(field_name: str, reason: str) -> _Problem:
    return _Problem(
        400,
        "bad_request",
        "Bad Request",
        "The request you sent was invalid in some way.",
        {"invalid_field": field_name, "reason": reason},
    )


def _rate_limited() -> _Problem:
    return _Problem(
        429,
        "rate_limit_exceeded",
        "Rate Limit Exceeded",
        "The rate limit for the requesting IP address is over its alloted limit.  The allowed limit and "
        "requests left per time period are communicated to clients via the http response headers "
        "'X-RateLimit-*' headers.",
    )


def _before_history() -> _Problem:
    return _Problem(
        410,
        "before_history",
        "Data Requested Is Before Recorded History",
        "This horizon instance is configured to only track a portion of the stellar network's latest "
        "history. This request is asking for results prior to the recorded history known to this "
        "horizon instance.",
    )


def _tx_failed(tx_hash: str, envelope_xdr: str, result_xdr: str, result_codes: dict) -> _Problem:
    return _Problem(
        400,
        "transaction_failed",
        "Transaction Failed",
        "The transaction failed when submitted to the stellar network. The `extras.result_codes` "
        "field on this response contains further details.  Descriptions of each code can be "
        "found at: https://developers.stellar.org/docs/data/apis/horizon/api-reference/errors/"
        "http-status-codes/horizon-specific/transaction-failed",
        {
            "envelope_xdr": envelope_xdr,
            "result_codes": result_codes,
            "result_xdr": result_xdr,
            "hash": tx_hash,
        },
    )


def _fmt_amount(stroops: int) -> str:
    units, frac = divmod(stroops, STROOPS_PER_UNIT)
    return f"{units}.{frac:07d}"


def _to_stroops(amount: str | Decimal | int) -> int:
    return int(Decimal(str(amount)) * STROOPS_PER_UNIT)


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _toid(ledger: int, tx_order: int = 0, op_index: int = 0) -> int:
    # Horizon's "total order id": the paging token of ledgers, transactions and operations.
    return (ledger << 32) | (tx_order << 12) | op_index


def _asset_fields(asset: Asset) -> dict[str, str]:
    fields = {"asset_type": asset.type}
    if not asset.is_native():
        fields |= {"asset_code": asset.code, "asset_issuer": asset.issuer}
    return fields


def _muxed_fields(prefix: str, account: MuxedAccount) -> dict[str, str]:
    if account.account_muxed_id is None:
        return {}
    return {f"{prefix}_muxed": account.account_muxed, f"{prefix}_muxed_id": str(account.account_muxed_id)}


def _memo_fields(memo: Memo) -> dict[str, str]:
    # Horizon renders hash memos base64-encoded and text memos both as text and raw bytes.
    if isinstance(memo, TextMemo):
        return {
            "memo_type": "text",
            "memo": memo.memo_text.decode("utf-8", "replace"),
            "memo_bytes": base64.b64encode(memo.memo_text).decode(),
        }
    if isinstance(memo, IdMemo):
        return {"memo_type": "id", "memo": str(memo.memo_id)}
    if isinstance(memo, HashMemo):
        return {"memo_type": "hash", "memo": base64.b64encode(memo.memo_hash).decode()}
    if isinstance(memo, ReturnHashMemo):
        return {"memo_type": "return", "memo": base64.b64encode(memo.memo_return).decode()}
    return {"memo_type": "none"}


def _result_xdr(fee: int, tx_code: str, ops: list, op_codes: list[str], merged: dict[int, int] | None = None) -> str:
    """`merged`: by operation index, the balance each successful account merge moved."""
    results = None
    if tx_code in ("tx_success", "tx_failed"):
        results = [_op_result(op, code, (merged or {}).get(i, 0)) for i, (op, code) in enumerate(zip(ops, op_codes, strict=True))]
    result = sx.TransactionResult(
        sx.Int64(fee),
        sx.TransactionResultResult(_TX_CODES[tx_code], results=results),
        sx.TransactionResultExt(0),
    )
    return result.to_xdr()


def _op_result(op: Any, code: str, merged_stroops: int) -> sx.OperationResult:
    if code in _OUTER_OP_CODES:
        return sx.OperationResult(_OUTER_OP_CODES[code])
    if isinstance(op, Payment):
        tr = sx.OperationResultTr(sx.OperationType.PAYMENT, payment_result=sx.PaymentResult(_PAYMENT_CODES[code]))
    elif isinstance(op, AccountMerge):
        balance = sx.Int64(merged_stroops) if code == "op_success" else None
        tr = sx.OperationResultTr(
            sx.OperationType.ACCOUNT_MERGE,
            account_merge_result=sx.AccountMergeResult(_ACCOUNT_MERGE_CODES[code], balance),
        )
    else:
        tr = sx.OperationResultTr(
            sx.OperationType.CREATE_ACCOUNT,
            create_account_result=sx.CreateAccountResult(_CREATE_ACCOUNT_CODES[code]),
        )
    return sx.OperationResult(sx.OperationResultCode.opINNER, tr)


@dataclass
class _Account:
    account_id: str
    sequence: int
    balances: dict[Asset, int]
    last_modified_ledger: int
    last_modified_time: int
    sequence_ledger: int | None = None
    sequence_time: int | None = None


@dataclass
class _Ledger:
    sequence: int
    hash: str
    prev_hash: str
    closed_at: int
    successful_tx: int = 0
    failed_tx: int = 0
    op_count: int = 0


@dataclass
class _Tx:
    hash: str
    ledger: int
    token: int
    closed_at: int
    source: MuxedAccount
    source_sequence: int
    fee_charged: int
    max_fee: int
    envelope_xdr: str
    result_xdr: str
    result_codes: dict[str, Any]
    envelope: TransactionEnvelope
    successful: bool
    participants: frozenset[str]


@dataclass
class _Op:
    token: int
    accounts: frozenset[str]
    # None marks a record injected verbatim by a test; ``body`` is then the whole record.
    tx: _Tx | None
    body: Any
    type_i: int = -1
    source: MuxedAccount | None = None


@dataclass(eq=False)
class _StreamConn:
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    drop: str | None = None  # None, "close" (clean end of response) or "abort" (TCP reset)


@dataclass(frozen=True)
class _PageQuery:
    cursor: str
    after: int | None
    limit: int
    order: str
    include_failed: bool
    join_transactions: bool


Feed = Callable[[_PageQuery], list[tuple[int, Callable[[], Any]]]]


class FakeHorizon:
    """In-memory Horizon. Start with ``async with FakeHorizon() as fake`` (same event loop
    as the test) or ``start_in_thread()`` (own loop in a daemon thread)."""

    def __init__(
        self,
        network_passphrase: str = Network.TESTNET_NETWORK_PASSPHRASE,
        *,
        sse_retry_ms: int = 1000,
        keepalive_interval: float = 5.0,
    ) -> None:
        self.network_passphrase = network_passphrase
        self.sse_retry_ms = sse_retry_ms
        self.keepalive_interval = keepalive_interval
        self.request_log: list[LoggedRequest] = []
        # Like the real network, the root account is derived from the passphrase.
        self.root_keypair = Keypair.from_raw_ed25519_seed(hashlib.sha256(network_passphrase.encode()).digest())

        # One lock for all ledger state: tests may mutate it from another thread.
        self._lock = threading.RLock()
        self._streams: set[_StreamConn] = set()
        self._paused = False
        self._duplicates_pending = 0
        self._rate_limited: list[int] = []  # Retry-After seconds of the next requests to refuse with 429
        self._streams_refused = False
        self._repeat_cursor_record = False
        self._genesis()

        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        if self._port is None:
            raise RuntimeError("FakeHorizon is not running")
        return f"http://127.0.0.1:{self._port}"

    async def start(self) -> None:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_get("/", self._root)
        app.router.add_get("/accounts/{account_id}", self._account)
        app.router.add_get("/accounts/{account_id}/payments", self._feed_handler(self._payment_feed))
        app.router.add_get("/accounts/{account_id}/transactions", self._feed_handler(self._tx_feed))
        app.router.add_get("/payments", self._feed_handler(self._payment_feed))
        app.router.add_get("/transactions", self._feed_handler(self._tx_feed))
        app.router.add_post("/transactions", self._submit_handler)
        app.router.add_get("/transactions/{tx_hash}", self._transaction)
        app.router.add_get("/ledgers", self._feed_handler(self._ledger_feed))
        self._loop = asyncio.get_running_loop()
        # handler_cancellation: a client hanging up ends its SSE handler at once, keeping
        # stream_count accurate for reconnect tests.
        self._runner = web.AppRunner(app, shutdown_timeout=2.0, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = site._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        # Open SSE responses would otherwise hold up the runner's graceful shutdown.
        self.drop_streams()
        if self._runner is not None:
            await self._runner.cleanup()
        self._runner = None
        self._port = None
        self._loop = None

    async def __aenter__(self) -> FakeHorizon:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def start_in_thread(self) -> str:
        """Serve from a daemon thread with its own loop (e.g. while service subprocesses
        run, or from sync tests). Returns ``url``."""
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start())
            except BaseException as exc:
                failure.append(exc)
                started.set()
                loop.close()
                return
            started.set()
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._thread = threading.Thread(target=run, name="fake-horizon", daemon=True)
        self._thread.start()
        started.wait()
        if failure:
            raise failure[0]
        return self.url

    def stop_thread(self) -> None:
        assert self._thread is not None and self._loop is not None, "start_in_thread() was not called"
        loop = self._loop
        asyncio.run_coroutine_threadsafe(self.stop(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(timeout=10)
        self._thread = None

    # ------------------------------------------------------------------ test controls

    def create_account(
        self,
        keypair: Keypair | str,
        balances: Mapping[Asset, str | Decimal | int] | None = None,
    ) -> str:
        """Fund a new account from the root account with a real CreateAccount transaction.

        ``balances`` maps assets to amounts; the native entry (default 10000 XLM) is the
        starting balance, every issued asset becomes a trustline holding that amount.
        Returns the account id.
        """
        account_id = keypair.public_key if isinstance(keypair, Keypair) else keypair
        balances = dict(balances or {})
        starting = balances.pop(Asset.native(), DEFAULT_STARTING_BALANCE)
        with self._lock:
            root = self._accounts[self.root_keypair.public_key]
            tx = (
                TransactionBuilder(Account(root.account_id, root.sequence), self.network_passphrase, BASE_FEE)
                .append_create_account_op(account_id, str(starting))
                .set_timeout(300)
                .build()
            )
            tx.sign(self.root_keypair)
            try:
                self._submit(tx.to_xdr())
            except _Problem as problem:
                raise HorizonSubmissionError(problem.status, problem.body) from None
            for asset, amount in balances.items():
                self._accounts[account_id].balances[asset] = _to_stroops(amount)
        return account_id

    def balance(self, account_id: str, asset: Asset | None = None) -> Decimal:
        """Current balance (0 when the account or trustline does not exist)."""
        with self._lock:
            account = self._accounts.get(account_id)
            stroops = account.balances.get(asset or Asset.native(), 0) if account else 0
        return Decimal(stroops) / STROOPS_PER_UNIT

    async def pay(
        self,
        from_keypair: Keypair,
        to_account: Keypair | str,
        amount: str | Decimal | int,
        asset: Asset | None = None,
        memo: Memo | str | int | None = None,
    ) -> dict[str, Any]:
        """Build, sign and POST a real payment transaction; returns Horizon's response.
        A ``str`` memo becomes a TextMemo, an ``int`` an IdMemo."""
        return await self._post_transaction(self._payment_xdr(from_keypair, to_account, amount, asset, memo))

    async def merge_account(
        self, from_keypair: Keypair, into: Keypair | str, memo: Memo | str | int | None = None
    ) -> dict[str, Any]:
        """Build, sign and POST a real account merge: every lumen of ``from_keypair``'s account
        moves ``into`` the other and the account is gone. Returns Horizon's response."""
        destination = into.public_key if isinstance(into, Keypair) else into
        return await self._post_transaction(
            self._signed_xdr(from_keypair, memo, lambda builder: builder.append_account_merge_op(destination))
        )

    async def _post_transaction(self, envelope: str) -> dict[str, Any]:
        async with ClientSession() as session:
            async with session.post(f"{self.url}/transactions", data={"tx": envelope}) as resp:
                body = await resp.json(content_type=None)
                status = resp.status
        if status != 200:
            raise HorizonSubmissionError(status, body)
        return body

    def pay_sync(
        self,
        from_keypair: Keypair,
        to_account: Keypair | str,
        amount: str | Decimal | int,
        asset: Asset | None = None,
        memo: Memo | str | int | None = None,
    ) -> dict[str, Any]:
        """Blocking ``pay`` for sync tests; only usable with ``start_in_thread()`` since it
        would otherwise block the loop that has to answer it."""
        envelope = self._payment_xdr(from_keypair, to_account, amount, asset, memo)
        request = urllib.request.Request(
            f"{self.url}/transactions", data=urllib.parse.urlencode({"tx": envelope}).encode(), method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            raise HorizonSubmissionError(exc.code, json.loads(exc.read())) from None

    def inject_raw_record(self, account_id: str, record: Any) -> str:
        """Append ``record`` verbatim (any JSON value) to ``account_id``'s payments feed, in a
        ledger of its own. Streams use the returned paging token as the SSE ``id`` since the
        record's own ``paging_token`` may be missing or hostile."""
        with self._lock:
            ledger = self._close_ledger()
            token = _toid(ledger.sequence, 1, 1)
            self._ops.append(_Op(token, frozenset({account_id}), None, record))
        self._notify()
        return str(token)

    def close_ledgers(self, count: int) -> None:
        """Time passes: ``count`` ledgers close with no transaction (the network closes one
        every 5 seconds or so, busy or not)."""
        with self._lock:
            for _ in range(count):
                self._close_ledger()

    def rate_limit(self, count: int = 1, retry_after: int = 1) -> None:
        """The next ``count`` requests (pages, streams, the root, submissions) are refused the
        way Horizon's rate limiter does: 429, a ``rate_limit_exceeded`` problem, and the
        ``X-Ratelimit-*`` and ``Retry-After`` (whole seconds) headers."""
        with self._lock:
            self._rate_limited.extend([retry_after] * count)

    def refuse_streams(self, refused: bool = True) -> None:
        """While set, every SSE request has its connection reset before any response, as a
        proxy that does not pass streams does; paging keeps working."""
        self._streams_refused = refused

    def repeat_cursor_record(self, enabled: bool = True) -> None:
        """Pages (not streams) include the record at their cursor as their first record, as
        some Horizon-compatible servers do (Horizon itself pages strictly after the cursor)."""
        self._repeat_cursor_record = enabled

    def switch_network(self, network_passphrase: str) -> None:
        """This URL now reaches a Horizon of another network (a moved DNS name or load
        balancer): the root reports that passphrase and transactions must be signed for it.
        The ledger is kept, for simplicity."""
        with self._lock:
            self.network_passphrase = network_passphrase

    def reset_network(self) -> None:
        """A network reset (the testnet's, quarterly): every account, transaction and
        operation is gone and ledgers start again at 1. Open streams end."""
        self.drop_streams()
        self._genesis()

    def forget_history(self, before_ledger: int) -> None:
        """This Horizon keeps history only from ``before_ledger`` on (limited retention, or a
        newer snapshot): older operations leave its feeds and ``history_elder_ledger`` says
        where history begins. Like Horizon, an ascending page from a cursor before that
        starts at the oldest record kept; a descending one answers 410 ``before_history``."""
        with self._lock:
            self._elder_ledger = before_ledger

    @property
    def latest_ledger(self) -> int:
        with self._lock:
            return self._ledgers[-1].sequence

    def duplicate_next_stream_event(self, count: int = 1) -> None:
        """The next ``count`` events written to any SSE stream are each sent twice."""
        with self._lock:
            self._duplicates_pending += count

    def drop_streams(self, *, abort: bool = False) -> int:
        """Cut every open SSE connection. By default the response ends cleanly (the SDK's
        EventSource reconnects by itself with ``Last-Event-ID``); ``abort=True`` resets the
        TCP connection (the SDK's ``stream()`` raises ``StreamClientError``)."""
        with self._lock:
            conns = list(self._streams)
        for conn in conns:
            conn.drop = "abort" if abort else "close"
        self._notify()
        return len(conns)

    def pause_streams(self) -> None:
        """Keep SSE connections open but send nothing (no events, no keep-alives)."""
        self._paused = True

    def resume_streams(self) -> None:
        """Deliver everything held back by ``pause_streams``."""
        self._paused = False
        self._notify()

    @property
    def stream_count(self) -> int:
        with self._lock:
            return len(self._streams)

    async def wait_for_streams(self, count: int = 1, timeout: float = 5.0) -> None:
        """Wait until at least ``count`` SSE connections are open."""
        deadline = time.monotonic() + timeout
        while self.stream_count < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.stream_count} of {count} SSE streams open")
            await asyncio.sleep(0.01)

    # ------------------------------------------------------------------ ledger model

    def _genesis(self) -> None:
        """A new network: ledger 1 and its root account holding every lumen."""
        with self._lock:
            self._accounts: dict[str, _Account] = {}
            self._ledgers: list[_Ledger] = []
            self._txs: list[_Tx] = []
            self._txs_by_hash: dict[str, _Tx] = {}
            self._ops: list[_Op] = []
            self._elder_ledger = 1  # the oldest ledger whose history this Horizon keeps
            genesis = self._close_ledger()
            self._accounts[self.root_keypair.public_key] = _Account(
                self.root_keypair.public_key, 0, {Asset.native(): TOTAL_COINS}, genesis.sequence, genesis.closed_at
            )

    def _close_ledger(self) -> _Ledger:
        prev = self._ledgers[-1] if self._ledgers else None
        sequence = prev.sequence + 1 if prev else 1
        prev_hash = prev.hash if prev else ""
        ledger = _Ledger(
            sequence,
            hashlib.sha256(f"{sequence}:{prev_hash}:{self.network_passphrase}".encode()).hexdigest(),
            prev_hash,
            int(time.time()),
        )
        self._ledgers.append(ledger)
        return ledger

    def _payment_xdr(
        self,
        from_keypair: Keypair,
        to_account: Keypair | str,
        amount: str | Decimal | int,
        asset: Asset | None,
        memo: Memo | str | int | None,
    ) -> str:
        destination = to_account.public_key if isinstance(to_account, Keypair) else to_account
        return self._signed_xdr(
            from_keypair, memo, lambda builder: builder.append_payment_op(destination, asset or Asset.native(), str(amount))
        )

    def _signed_xdr(
        self, from_keypair: Keypair, memo: Memo | str | int | None, add_operation: Callable[[TransactionBuilder], Any]
    ) -> str:
        """A transaction of ``from_keypair``'s account with one operation, signed for this network."""
        with self._lock:
            source = self._accounts.get(from_keypair.public_key)
            if source is None:
                raise ValueError(f"unknown source account {from_keypair.public_key}")
            sequence = source.sequence
        builder = TransactionBuilder(Account(from_keypair.public_key, sequence), self.network_passphrase, BASE_FEE)
        add_operation(builder)
        builder.set_timeout(300)
        if isinstance(memo, str):
            memo = TextMemo(memo)
        elif isinstance(memo, int):
            memo = IdMemo(memo)
        if memo is not None:
            builder.add_memo(memo)
        tx = builder.build()
        tx.sign(from_keypair)
        return tx.to_xdr()

    def _submit(self, envelope_xdr: str) -> _Tx:
        """Validate and apply a transaction the way core + Horizon would; raises ``_Problem``."""
        try:
            envelope = TransactionEnvelope.from_xdr(envelope_xdr, self.network_passphrase)
        except Exception:
            raise _Problem(
                400,
                "transaction_malformed",
                "Transaction Malformed",
                "Horizon could not decode the transaction envelope in this request. A transaction "
                "should be an XDR TransactionEnvelope struct encoded using base64.  The envelope read "
                "from this request is echoed in the `extras.envelope_xdr` field of this response for "
                "your convenience.",
                {"envelope_xdr": envelope_xdr},
            ) from None
        tx_hash = envelope.hash_hex()
        tx = envelope.transaction
        ops = tx.operations
        fee = BASE_FEE * max(len(ops), 1)

        with self._lock:
            known = self._txs_by_hash.get(tx_hash)
            if known is not None:
                # Horizon answers a resubmission from history instead of re-applying it.
                if known.successful:
                    return known
                raise _tx_failed(tx_hash, known.envelope_xdr, known.result_xdr, known.result_codes)

            def reject(tx_code: str, op_codes: list[str] | None = None) -> _Problem:
                codes: dict[str, Any] = {"transaction": tx_code}
                if op_codes:
                    codes["operations"] = op_codes
                return _tx_failed(tx_hash, envelope_xdr, _result_xdr(fee, tx_code, ops, op_codes or []), codes)

            now = int(time.time())
            bounds = tx.preconditions.time_bounds if tx.preconditions else None
            source_id = tx.source.account_id
            source = self._accounts.get(source_id)
            if not ops:
                raise reject("tx_missing_operation")
            if bounds and bounds.min_time and now < bounds.min_time:
                raise reject("tx_too_early")
            if bounds and bounds.max_time and now > bounds.max_time:
                raise reject("tx_too_late")
            if tx.fee < fee:
                raise reject("tx_insufficient_fee")
            if source is None:
                raise reject("tx_no_source_account")
            if tx.sequence != source.sequence + 1:
                raise reject("tx_bad_seq")
            used_signatures: set[int] = set()
            if not self._signed_by(envelope, source_id, used_signatures):
                raise reject("tx_bad_auth")
            if source.balances[Asset.native()] < fee:
                raise reject("tx_insufficient_balance")
            op_codes = [self._check_op(envelope, op, source_id, used_signatures) for op in ops]
            if any(code != "op_success" for code in op_codes):
                raise reject("tx_failed", op_codes)
            if len(used_signatures) < len(envelope.signatures):
                raise reject("tx_bad_auth_extra")

            # From here on the transaction makes it into a ledger: fee and sequence are
            # consumed even if an operation fails.
            ledger = self._close_ledger()
            source.balances[Asset.native()] -= fee
            source.sequence = tx.sequence
            source.sequence_ledger, source.sequence_time = ledger.sequence, ledger.closed_at
            source.last_modified_ledger, source.last_modified_time = ledger.sequence, ledger.closed_at
            working = copy.deepcopy(self._accounts)
            outcomes = [self._apply_op(working, op, source_id, ledger) for op in ops]
            op_codes = [code for code, _ in outcomes]
            merged = {i: amount for i, (_, amount) in enumerate(outcomes) if amount is not None}
            successful = all(code == "op_success" for code in op_codes)
            if successful:
                self._accounts = working
            tx_code = "tx_success" if successful else "tx_failed"
            result_codes: dict[str, Any] = {"transaction": tx_code}
            if not successful:
                result_codes["operations"] = op_codes

            token = _toid(ledger.sequence, 1)
            op_sources = [op.source or tx.source for op in ops]
            op_records = [self._op_record(op, op_source) for op, op_source in zip(ops, op_sources, strict=True)]
            applied = _Tx(
                hash=tx_hash,
                ledger=ledger.sequence,
                token=token,
                closed_at=ledger.closed_at,
                source=tx.source,
                source_sequence=tx.sequence,
                fee_charged=fee,
                max_fee=tx.fee,
                envelope_xdr=envelope_xdr,
                result_xdr=_result_xdr(fee, tx_code, ops, op_codes, merged),
                result_codes=result_codes,
                envelope=envelope,
                successful=successful,
                participants=frozenset({source_id}.union(*(accounts for accounts, _ in op_records))),
            )
            for index, (op, op_source, (accounts, body)) in enumerate(zip(ops, op_sources, op_records, strict=True), start=1):
                self._ops.append(_Op(token + index, accounts, applied, body, _TYPE_I[type(op)], op_source))
            self._txs.append(applied)
            self._txs_by_hash[tx_hash] = applied
            ledger.successful_tx, ledger.failed_tx = int(successful), int(not successful)
            ledger.op_count = len(ops)
        self._notify()
        if not successful:
            raise _tx_failed(tx_hash, envelope_xdr, applied.result_xdr, result_codes)
        return applied

    def _signed_by(self, envelope: TransactionEnvelope, account_id: str, used: set[int]) -> bool:
        keypair = Keypair.from_public_key(account_id)
        for index, signature in enumerate(envelope.signatures):
            if signature.signature_hint != keypair.signature_hint():
                continue
            try:
                keypair.verify(envelope.hash(), signature.signature)
            except BadSignatureError:
                continue
            used.add(index)
            return True
        return False

    def _check_op(self, envelope: TransactionEnvelope, op: Any, tx_source: str, used: set[int]) -> str:
        if type(op) not in _TYPE_I:
            return "op_not_supported"
        op_source = op.source.account_id if op.source else tx_source
        if op_source not in self._accounts:
            return "op_no_source_account"
        if op_source != tx_source and not self._signed_by(envelope, op_source, used):
            return "op_bad_auth"
        if isinstance(op, AccountMerge):
            return "op_malformed" if op.destination.account_id == op_source else "op_success"
        amount = op.amount if isinstance(op, Payment) else op.starting_balance
        if _to_stroops(amount) <= 0:
            return "op_malformed"
        return "op_success"

    def _apply_op(self, accounts: dict[str, _Account], op: Any, tx_source: str, ledger: _Ledger) -> tuple[str, int | None]:
        """The operation's result code and, for a successful account merge, the balance it moved."""
        source = accounts[op.source.account_id if op.source else tx_source]
        native = Asset.native()
        if isinstance(op, CreateAccount):
            amount = _to_stroops(op.starting_balance)
            if op.destination in accounts:
                return "op_already_exists", None
            if source.balances[native] < amount:
                return "op_underfunded", None
            source.balances[native] -= amount
            accounts[op.destination] = _Account(
                op.destination, ledger.sequence << 32, {native: amount}, ledger.sequence, ledger.closed_at
            )
            return "op_success", None
        if isinstance(op, AccountMerge):
            destination = accounts.get(op.destination.account_id)
            if destination is None:
                return "op_no_account", None
            if any(not asset.is_native() for asset in source.balances):
                return "op_has_sub_entries", None  # trustlines must be removed first
            amount = source.balances[native]
            destination.balances[native] += amount
            destination.last_modified_ledger, destination.last_modified_time = ledger.sequence, ledger.closed_at
            del accounts[source.account_id]
            return "op_success", amount
        return self._apply_payment(accounts, op, source, ledger), None

    @staticmethod
    def _apply_payment(accounts: dict[str, _Account], op: Payment, source: _Account, ledger: _Ledger) -> str:
        amount = _to_stroops(op.amount)
        destination = accounts.get(op.destination.account_id)
        if destination is None:
            return "op_no_destination"
        # Issuers mint and burn their own asset without holding a trustline.
        if op.asset.issuer != source.account_id:
            if op.asset not in source.balances:
                return "op_src_no_trust"
            if source.balances[op.asset] < amount:
                return "op_underfunded"
            source.balances[op.asset] -= amount
        if op.asset.issuer != destination.account_id:
            if op.asset not in destination.balances:
                return "op_no_trust"
            destination.balances[op.asset] += amount
        for account in (source, destination):
            account.last_modified_ledger, account.last_modified_time = ledger.sequence, ledger.closed_at
        return "op_success"

    @staticmethod
    def _op_record(op: Any, op_source: MuxedAccount) -> tuple[frozenset[str], dict[str, Any]]:
        """Accounts whose payments feed lists the operation, and its type-specific fields."""
        source = op_source.account_id
        if isinstance(op, CreateAccount):
            amount = _fmt_amount(_to_stroops(op.starting_balance))
            return frozenset({source, op.destination}), {"starting_balance": amount, "funder": source, "account": op.destination}
        if isinstance(op, AccountMerge):
            # Horizon's record names the two accounts only: the amount is in the operation's effects.
            into = op.destination
            body = {"account": source, **_muxed_fields("account", op_source), "into": into.account_id,
                    **_muxed_fields("into", into)}
            return frozenset({source, into.account_id}), body
        body = {
            **_asset_fields(op.asset),
            "from": source,
            **_muxed_fields("from", op_source),
            "to": op.destination.account_id,
            **_muxed_fields("to", op.destination),
            "amount": _fmt_amount(_to_stroops(op.amount)),
        }
        return frozenset({source, op.destination.account_id}), body

    # ------------------------------------------------------------------ streaming plumbing

    def _notify(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake_streams)

    def _wake_streams(self) -> None:
        with self._lock:
            conns = list(self._streams)
        for conn in conns:
            conn.wake.set()

    def _take_duplicate(self) -> bool:
        with self._lock:
            if self._duplicates_pending:
                self._duplicates_pending -= 1
                return True
            return False

    async def _stream(self, request: web.Request, query: _PageQuery, feed: Feed) -> web.StreamResponse:
        if self._streams_refused and request.transport is not None:
            request.transport.abort()
            return web.Response()  # never sent: the connection is gone
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
                "Connection": "keep-alive",
                "Access-Control-Allow-Origin": "*",
            }
        )
        await resp.prepare(request)
        conn = _StreamConn()
        with self._lock:
            self._streams.add(conn)
        cursor = query.after
        # Like Horizon, a stream ends after `limit` events with a "byebye" event; the
        # client reconnects (retry: 10) from Last-Event-ID.
        remaining = query.limit
        try:
            await resp.write(f'retry: {self.sse_retry_ms}\nevent: open\ndata: "hello"\n\n'.encode())
            while conn.drop is None:
                conn.wake.clear()
                if not self._paused:
                    with self._lock:
                        pending = [(t, r) for t, r in feed(query) if cursor is None or t > cursor][:remaining]
                        batch = [(token, render()) for token, render in pending]
                    for token, record in batch:
                        frame = f"id: {token}\ndata: {json.dumps(record)}\n\n".encode()
                        await resp.write(frame * 2 if self._take_duplicate() else frame)
                        cursor = token
                        remaining -= 1
                    if remaining == 0:
                        await resp.write(b'retry: 10\nevent: close\ndata: "byebye"\n\n')
                        return resp
                try:
                    await asyncio.wait_for(conn.wake.wait(), self.keepalive_interval)
                except TimeoutError:
                    if not self._paused:
                        await resp.write(b": keepalive\n\n")
            if conn.drop == "abort" and request.transport is not None:
                request.transport.abort()
        except ConnectionError:
            pass  # the client went away
        finally:
            with self._lock:
                self._streams.discard(conn)
        return resp

    # ------------------------------------------------------------------ HTTP layer

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Callable) -> web.StreamResponse:
        self.request_log.append(LoggedRequest(request.method, request.path, dict(request.query), request.headers.copy()))
        with self._lock:
            retry_after = self._rate_limited.pop(0) if self._rate_limited else None
        if retry_after is not None:
            response = self._json(_rate_limited().body, 429, "application/problem+json")
            response.headers.update({
                "X-Ratelimit-Limit": str(RATE_LIMIT_PER_HOUR), "X-Ratelimit-Remaining": "0",
                "X-Ratelimit-Reset": str(retry_after), "Retry-After": str(retry_after),
            })
            return response
        try:
            return await handler(request)
        except _Problem as problem:
            return self._json(problem.body, problem.status, "application/problem+json")
        except web.HTTPNotFound:
            problem = _not_found()
            return self._json(problem.body, problem.status, "application/problem+json")

    @staticmethod
    def _json(body: Any, status: int = 200, content_type: str = "application/hal+json") -> web.Response:
        return web.Response(text=json.dumps(body, indent=2), status=status, content_type=content_type, charset="utf-8")

    def _link(self, path: str, templated: bool = False) -> dict[str, Any]:
        link: dict[str, Any] = {"href": self.url + path}
        if templated:
            link["templated"] = True
        return link

    def _page_query(self, request: web.Request) -> _PageQuery:
        params = request.query
        # Horizon lets Last-Event-ID override the cursor, which is how SSE clients resume.
        cursor = request.headers.get("Last-Event-ID") or params.get("cursor", "")
        after: int | None = None
        if cursor == "now":
            with self._lock:
                after = _toid(self._ledgers[-1].sequence + 1) - 1
        elif cursor:
            try:
                after = int(cursor)
            except ValueError:
                raise _bad_request("cursor", "Invalid cursor") from None
            if after < 0:
                raise _bad_request("cursor", f"the cursor {after} is a negative number: ")
            if after > MAX_CURSOR:
                raise _bad_request("cursor", "Invalid cursor")
        raw_limit = params.get("limit", "")
        try:
            limit = int(raw_limit) if raw_limit else DEFAULT_LIMIT
        except ValueError:
            raise _bad_request("limit", "unparseable value") from None
        if limit <= 0:
            raise _bad_request("limit", "invalid limit: non-positive value provided")
        if limit > MAX_LIMIT:
            raise _bad_request("limit", f"invalid limit: value provided that is over limit max of {MAX_LIMIT}")
        order = params.get("order", "") or "asc"
        if order not in ("asc", "desc"):
            raise _bad_request("order", "order: invalid value")
        include_failed = params.get("include_failed", "")
        if include_failed not in ("", "true", "false"):
            raise _bad_request("include_failed", "unparseable value")
        join = params.get("join", "")
        if join not in ("", "transactions"):
            raise _bad_request("join", "Accepted values: transactions")
        return _PageQuery(cursor, after, limit, order, include_failed == "true", join == "transactions")

    def _account_param(self, request: web.Request) -> str | None:
        account_id = request.match_info.get("account_id")
        if account_id is not None and not StrKey.is_valid_ed25519_public_key(account_id):
            raise _bad_request("account_id", "Account ID must start with `G` and contain 56 alphanum characters")
        return account_id

    def _feed_handler(self, make_feed: Callable[[str | None], Feed]) -> Callable:
        async def handler(request: web.Request) -> web.StreamResponse:
            feed = self._kept_history(make_feed(self._account_param(request)))
            query = self._page_query(request)
            if "text/event-stream" in request.headers.get("Accept", ""):
                return await self._stream(request, query, feed)
            with self._lock:
                entries = feed(query)
                elder = _toid(self._elder_ledger)
            if query.order == "asc":
                # Horizon pages strictly after the cursor; the control makes it repeat the cursor's record.
                first = query.after + 1 if query.after is not None and not self._repeat_cursor_record else query.after
                selected = [e for e in entries if first is None or e[0] >= first]
            else:
                if query.after is not None and query.after <= elder:
                    raise _before_history()
                selected = [e for e in reversed(entries) if query.after is None or e[0] < query.after]
            with self._lock:
                records = [(token, render()) for token, render in selected[: query.limit]]
            return self._json(self._page(request, query, records))

        return handler

    def _kept_history(self, feed: Feed) -> Feed:
        """The feed without what is older than this Horizon's history (``forget_history``)."""

        def kept(query: _PageQuery) -> list[tuple[int, Callable[[], Any]]]:
            elder = _toid(self._elder_ledger)
            return [entry for entry in feed(query) if entry[0] >= elder]

        return kept

    def _page(self, request: web.Request, query: _PageQuery, records: list[tuple[int, Any]]) -> dict[str, Any]:
        def href(cursor: str, order: str) -> str:
            params = {k: v for k, v in request.query.items() if k not in ("cursor", "limit", "order")}
            params |= {"cursor": cursor, "limit": str(query.limit), "order": order}
            # Go's url.Values.Encode sorts keys; mirror it so hrefs match byte for byte.
            return f"{self.url}{request.path}?{urllib.parse.urlencode(sorted(params.items()))}"

        inverted = "desc" if query.order == "asc" else "asc"
        return {
            "_links": {
                "self": {"href": href(query.cursor, query.order)},
                "next": {"href": href(str(records[-1][0]) if records else query.cursor, query.order)},
                "prev": {"href": href(str(records[0][0]) if records else query.cursor, inverted)},
            },
            "_embedded": {"records": [record for _, record in records]},
        }

    def _payment_feed(self, account_id: str | None) -> Feed:
        def feed(query: _PageQuery) -> list[tuple[int, Callable[[], Any]]]:
            return [
                (op.token, partial(self._render_op, op, query.join_transactions))
                for op in self._ops
                if (account_id is None or account_id in op.accounts)
                and (op.tx is None or op.tx.successful or query.include_failed)
            ]

        return feed

    def _tx_feed(self, account_id: str | None) -> Feed:
        def feed(query: _PageQuery) -> list[tuple[int, Callable[[], Any]]]:
            return [
                (tx.token, partial(self._render_tx, tx))
                for tx in self._txs
                if (account_id is None or account_id in tx.participants) and (tx.successful or query.include_failed)
            ]

        return feed

    def _ledger_feed(self, _account_id: None) -> Feed:
        def feed(_query: _PageQuery) -> list[tuple[int, Callable[[], Any]]]:
            return [(_toid(ledger.sequence), partial(self._render_ledger, ledger)) for ledger in self._ledgers]

        return feed

    async def _root(self, _request: web.Request) -> web.Response:
        with self._lock:
            latest = self._ledgers[-1]
        return self._json(
            {
                "_links": {
                    "account": self._link("/accounts/{account_id}", True),
                    "account_transactions": self._link("/accounts/{account_id}/transactions{?cursor,limit,order}", True),
                    "ledgers": self._link("/ledgers{?cursor,limit,order}", True),
                    "payments": self._link("/payments{?cursor,limit,order}", True),
                    "self": self._link("/"),
                    "transaction": self._link("/transactions/{hash}", True),
                    "transactions": self._link("/transactions{?cursor,limit,order}", True),
                },
                "horizon_version": "fake-horizon",
                "core_version": "fake-core",
                "ingest_latest_ledger": latest.sequence,
                "history_latest_ledger": latest.sequence,
                "history_latest_ledger_closed_at": _iso(latest.closed_at),
                "history_elder_ledger": self._elder_ledger,
                "core_latest_ledger": latest.sequence,
                "network_passphrase": self.network_passphrase,
                "current_protocol_version": PROTOCOL_VERSION,
                "supported_protocol_version": PROTOCOL_VERSION,
                "core_supported_protocol_version": PROTOCOL_VERSION,
            }
        )

    async def _account(self, request: web.Request) -> web.Response:
        account_id = self._account_param(request)
        with self._lock:
            account = self._accounts.get(account_id)
            if account is None:
                raise _not_found()
            body = self._render_account(account)
        return self._json(body)

    async def _transaction(self, request: web.Request) -> web.Response:
        tx_hash = request.match_info["tx_hash"].lower()
        if len(tx_hash) != 64 or any(c not in "0123456789abcdef" for c in tx_hash):
            raise _bad_request("tx_id", "Transaction hash must be a hex-encoded, lowercase SHA-256 hash")
        with self._lock:
            tx = self._txs_by_hash.get(tx_hash)
            if tx is None:
                raise _not_found()
            body = self._render_tx(tx)
        return self._json(body)

    async def _submit_handler(self, request: web.Request) -> web.Response:
        form = await request.post()
        envelope_xdr = form.get("tx")
        if not isinstance(envelope_xdr, str) or not envelope_xdr:
            raise _bad_request("tx", "Missing parameter")
        tx = self._submit(envelope_xdr)
        with self._lock:
            body = self._render_tx(tx)
        return self._json(body)

    # ------------------------------------------------------------------ resource shapes

    def _render_account(self, account: _Account) -> dict[str, Any]:
        a = f"/accounts/{account.account_id}"
        balances: list[dict[str, Any]] = []
        for asset, stroops in account.balances.items():
            if asset.is_native():
                continue
            balances.append(
                {
                    "balance": _fmt_amount(stroops),
                    "limit": TRUSTLINE_LIMIT,
                    "buying_liabilities": "0.0000000",
                    "selling_liabilities": "0.0000000",
                    "last_modified_ledger": account.last_modified_ledger,
                    "is_authorized": True,
                    "is_authorized_to_maintain_liabilities": True,
                    **_asset_fields(asset),
                }
            )
        # Horizon lists the native balance last.
        balances.append(
            {
                "balance": _fmt_amount(account.balances.get(Asset.native(), 0)),
                "buying_liabilities": "0.0000000",
                "selling_liabilities": "0.0000000",
                "asset_type": "native",
            }
        )
        body: dict[str, Any] = {
            "_links": {
                "self": self._link(a),
                "transactions": self._link(a + "/transactions{?cursor,limit,order}", True),
                "operations": self._link(a + "/operations{?cursor,limit,order}", True),
                "payments": self._link(a + "/payments{?cursor,limit,order}", True),
                "effects": self._link(a + "/effects{?cursor,limit,order}", True),
                "offers": self._link(a + "/offers{?cursor,limit,order}", True),
                "trades": self._link(a + "/trades{?cursor,limit,order}", True),
                "data": self._link(a + "/data/{key}", True),
            },
            "id": account.account_id,
            "account_id": account.account_id,
            "sequence": str(account.sequence),
        }
        if account.sequence_ledger is not None:
            body |= {"sequence_ledger": account.sequence_ledger, "sequence_time": str(account.sequence_time)}
        return body | {
            "subentry_count": len(balances) - 1,
            "last_modified_ledger": account.last_modified_ledger,
            "last_modified_time": _iso(account.last_modified_time),
            "thresholds": {"low_threshold": 0, "med_threshold": 0, "high_threshold": 0},
            "flags": {"auth_required": False, "auth_revocable": False, "auth_immutable": False, "auth_clawback_enabled": False},
            "balances": balances,
            "signers": [{"weight": 1, "key": account.account_id, "type": "ed25519_public_key"}],
            "data": {},
            "num_sponsoring": 0,
            "num_sponsored": 0,
            "paging_token": account.account_id,
        }

    def _render_tx(self, tx: _Tx) -> dict[str, Any]:
        t = f"/transactions/{tx.hash}"
        memo = _memo_fields(tx.envelope.transaction.memo or NoneMemo())
        # Horizon's custom marshaller emits memo/memo_bytes before everything else.
        body: dict[str, Any] = {k: memo[k] for k in ("memo", "memo_bytes") if k in memo}
        body |= {
            "_links": {
                "self": self._link(t),
                "account": self._link(f"/accounts/{tx.source.account_id}"),
                "ledger": self._link(f"/ledgers/{tx.ledger}"),
                "operations": self._link(t + "/operations{?cursor,limit,order}", True),
                "effects": self._link(t + "/effects{?cursor,limit,order}", True),
                "precedes": self._link(f"/transactions?order=asc&cursor={tx.token}"),
                "succeeds": self._link(f"/transactions?order=desc&cursor={tx.token}"),
                "transaction": self._link(t),
            },
            "id": tx.hash,
            "paging_token": str(tx.token),
            "successful": tx.successful,
            "hash": tx.hash,
            "ledger": tx.ledger,
            "created_at": _iso(tx.closed_at),
            "source_account": tx.source.account_id,
            **_muxed_fields("account", tx.source),
            "source_account_sequence": str(tx.source_sequence),
            "fee_account": tx.source.account_id,
            "fee_charged": str(tx.fee_charged),
            "max_fee": str(tx.max_fee),
            "operation_count": len(tx.envelope.transaction.operations),
            "envelope_xdr": tx.envelope_xdr,
            "result_xdr": tx.result_xdr,
            "fee_meta_xdr": EMPTY_FEE_META_XDR,
            "memo_type": memo["memo_type"],
            "signatures": [base64.b64encode(s.signature).decode() for s in tx.envelope.signatures],
        }
        preconditions = tx.envelope.transaction.preconditions
        bounds = preconditions.time_bounds if preconditions else None
        if bounds:
            body["valid_after"] = _iso(bounds.min_time)
            timebounds = {"min_time": str(bounds.min_time)}
            if bounds.max_time:
                body["valid_before"] = _iso(bounds.max_time)
                timebounds["max_time"] = str(bounds.max_time)
            body["preconditions"] = {"timebounds": timebounds}
        return body

    def _render_op(self, op: _Op, join_transactions: bool) -> Any:
        if op.tx is None:
            return op.body
        o = f"/operations/{op.token}"
        body: dict[str, Any] = {
            "_links": {
                "self": self._link(o),
                "transaction": self._link(f"/transactions/{op.tx.hash}"),
                "effects": self._link(o + "/effects"),
                "succeeds": self._link(f"/effects?order=desc&cursor={op.token}"),
                "precedes": self._link(f"/effects?order=asc&cursor={op.token}"),
            },
            "id": str(op.token),
            "paging_token": str(op.token),
            "transaction_successful": op.tx.successful,
            "source_account": op.source.account_id,
            **_muxed_fields("source_account", op.source),
            "type": _TYPE_NAME[op.type_i],
            "type_i": op.type_i,
            "created_at": _iso(op.tx.closed_at),
            "transaction_hash": op.tx.hash,
        }
        if join_transactions:
            body["transaction"] = self._render_tx(op.tx)
        return body | op.body

    def _render_ledger(self, ledger: _Ledger) -> dict[str, Any]:
        path = f"/ledgers/{ledger.sequence}"
        body: dict[str, Any] = {
            "_links": {
                "self": self._link(path),
                "transactions": self._link(path + "/transactions{?cursor,limit,order}", True),
                "operations": self._link(path + "/operations{?cursor,limit,order}", True),
                "payments": self._link(path + "/payments{?cursor,limit,order}", True),
                "effects": self._link(path + "/effects{?cursor,limit,order}", True),
            },
            "id": ledger.hash,
            "paging_token": str(_toid(ledger.sequence)),
            "hash": ledger.hash,
        }
        if ledger.prev_hash:
            body["prev_hash"] = ledger.prev_hash
        return body | {
            "sequence": ledger.sequence,
            "successful_transaction_count": ledger.successful_tx,
            "failed_transaction_count": ledger.failed_tx,
            "operation_count": ledger.op_count,
            "tx_set_operation_count": ledger.op_count,
            "closed_at": _iso(ledger.closed_at),
            "total_coins": _fmt_amount(TOTAL_COINS),
            "fee_pool": "0.0000000",
            "base_fee_in_stroops": BASE_FEE,
            "base_reserve_in_stroops": BASE_RESERVE,
            "max_tx_set_size": 1000,
            "protocol_version": PROTOCOL_VERSION,
        }
