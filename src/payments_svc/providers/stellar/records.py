"""Checking one record of Horizon's /accounts/{id}/payments feed (with
join=transactions). Anything not exactly Horizon-shaped is malformed: the caller
records it for attention instead of guessing, and never trusts its position.

The feed lists create_account, payment, both path payments and account_merge
operations that involve the account (and Soroban transfers, which only move the
cursor here). Money reaches the receiving account through a payment or path
payment `to` it, or an account merge `into` it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from stellar_sdk import StrKey

from .instructions import amount_to_stroops
from .settings import NATIVE_CODE, StellarAsset, is_paging_token

# Operation types that deliver an amount of an asset to `to`; for the two path
# payments `amount` is what the destination received.
PAYMENT_TYPES = frozenset({"payment", "path_payment_strict_receive", "path_payment_strict_send"})
MERGE_TYPE = "account_merge"  # moves all of an account's lumens `into` another; the record has no amount
MEMO_TYPES = frozenset({"none", "text", "id", "hash", "return"})
MAX_MEMO_LENGTH = 64  # base64 of a 32-byte hash is 44; a text memo is at most 28 bytes
_HASH = re.compile(r"^[0-9a-f]{64}$")
_ASSET_CODE = re.compile(r"^[A-Za-z0-9]{1,12}$")
_OPERATION_INDEX_BITS = 0xFFF  # a TOID: ledger << 32 | transaction order << 12 | operation index


class MalformedRecord(ValueError):
    """The record cannot be trusted; the message says why."""


@dataclass(frozen=True, slots=True)
class IncomingPayment:
    from_account: str
    asset: StellarAsset
    stroops: int | None  # None for an account merge: Horizon's record does not say how much arrived
    memo_type: str  # Horizon's spelling: none, text, id, hash, return
    memo: str | None

    @property
    def is_merge(self) -> bool:
        return self.stroops is None


@dataclass(frozen=True, slots=True)
class FeedRecord:
    token: int  # the paging token: the record's position in the feed
    operation_id: str
    transaction_hash: str
    incoming: IncomingPayment | None  # None: not a payment to the receiving account
    created_at: datetime | None = None  # when Horizon's ledger closed it (for the watcher-lag metric)


def _field(record: dict, name: str, kind: type) -> Any:
    value = record.get(name)
    if not isinstance(value, kind):
        raise MalformedRecord(f"{name} is missing or not a {kind.__name__}")
    return value


def parse_record(raw: Any, account: str) -> FeedRecord:
    """Raises MalformedRecord."""
    if not isinstance(raw, dict):
        raise MalformedRecord("record is not a JSON object")
    token_text = _field(raw, "paging_token", str)
    if not is_paging_token(token_text) or raw.get("id") != token_text:
        raise MalformedRecord("paging_token is not an operation id")
    token = int(token_text)
    tx_hash = _field(raw, "transaction_hash", str)
    transaction = _field(raw, "transaction", dict)
    tx_token = _field(transaction, "paging_token", str)
    # The operation's position must agree with its transaction's: a record can only
    # move the cursor to where its own transaction really is.
    if (
        not _HASH.match(tx_hash)
        or transaction.get("hash") != tx_hash
        or not is_paging_token(tx_token)
        or int(tx_token) != token & ~_OPERATION_INDEX_BITS
        or token & _OPERATION_INDEX_BITS == 0
    ):
        raise MalformedRecord("record does not agree with its transaction (hash or paging token)")
    successful = _field(raw, "transaction_successful", bool)
    kind = _field(raw, "type", str)
    record = FeedRecord(token, token_text, tx_hash, None, _created_at(raw))
    if not successful:
        return record
    if kind == MERGE_TYPE and _field(raw, "into", str) == account:
        merged = IncomingPayment(_account(raw, "account"), StellarAsset(NATIVE_CODE, None), None, *_memo(transaction))
        return FeedRecord(token, token_text, tx_hash, merged, record.created_at)
    if kind not in PAYMENT_TYPES or _field(raw, "to", str) != account:
        return record  # our own outgoing payment or merge, the account's creation...
    try:
        stroops = amount_to_stroops(_field(raw, "amount", str))
    except ValueError as exc:
        raise MalformedRecord(str(exc)) from None
    incoming = IncomingPayment(_account(raw, "from"), _asset(raw), stroops, *_memo(transaction))
    return FeedRecord(token, token_text, tx_hash, incoming, record.created_at)


def _account(raw: dict, name: str) -> str:
    value = _field(raw, name, str)
    if not StrKey.is_valid_ed25519_public_key(value):
        raise MalformedRecord(f"{name} is not an account id")
    return value


def _created_at(raw: dict) -> datetime | None:
    """Only feeds a metric: a missing or odd value is not a reason to refuse the record."""
    try:
        return datetime.strptime(raw.get("created_at", ""), "%Y-%m-%dT%H:%M:%SZ")
    except (TypeError, ValueError):
        return None


def _asset(raw: dict) -> StellarAsset:
    asset_type = _field(raw, "asset_type", str)
    if asset_type == "native":
        return StellarAsset(NATIVE_CODE, None)
    if asset_type not in ("credit_alphanum4", "credit_alphanum12"):
        raise MalformedRecord(f"unknown asset_type {asset_type[:32]!r}")
    code, issuer = _field(raw, "asset_code", str), _field(raw, "asset_issuer", str)
    if not _ASSET_CODE.match(code) or not StrKey.is_valid_ed25519_public_key(issuer):
        raise MalformedRecord("asset_code or asset_issuer is malformed")
    return StellarAsset(code, issuer)


def _memo(transaction: dict) -> tuple[str, str | None]:
    memo_type = _field(transaction, "memo_type", str)
    if memo_type not in MEMO_TYPES:
        raise MalformedRecord(f"unknown memo_type {memo_type[:32]!r}")
    if memo_type == "none":
        return memo_type, None
    memo = _field(transaction, "memo", str)
    if len(memo) > MAX_MEMO_LENGTH:
        raise MalformedRecord("memo is longer than any Stellar memo")
    try:
        memo.encode()
    except UnicodeEncodeError:  # a lone surrogate from a JSON escape: no database could store it
        raise MalformedRecord("memo is not valid text") from None
    return memo_type, memo
