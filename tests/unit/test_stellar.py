"""Stellar settings, amounts, memos, SEP-7 URIs, feed-record checks, the cursor's place
in Horizon's history, and the retry delay."""

from __future__ import annotations

import copy
import re
import time

import pytest
from stellar_sdk import Keypair

from payments_svc.config import ConfigError, load_settings
from payments_svc.domain.errors import CallbackRejectedError
from payments_svc.providers.stellar.feed import HorizonHistory, retry_after, retry_delay
from payments_svc.providers.stellar.instructions import (
    StellarInstructions,
    amount_to_stroops,
    cents_to_amount,
    payment_memo,
    stroops_to_amount,
)
from payments_svc.providers.stellar.provider import StellarProvider
from payments_svc.providers.stellar.records import MalformedRecord, parse_record
from payments_svc.providers.stellar.settings import StellarAsset
from payments_svc.providers.stellar.sync import FeedRefused, HorizonUnavailable

ACCOUNT = Keypair.random().public_key
ISSUER = Keypair.random().public_key
TESTNET = "Test SDF Network ; September 2015"


def stellar_env(**overrides: str) -> dict[str, str]:
    env = {
        "PAYMENTS_DATABASE_URL": "sqlite+aiosqlite:///:memory:",
        "STELLAR_RECEIVING_ACCOUNT": ACCOUNT,
        "STELLAR_HORIZON_URL": "https://horizon-testnet.stellar.org/",
        "STELLAR_NETWORK_PASSPHRASE": TESTNET,
        "STELLAR_ASSETS": f"USDC:{ISSUER}, XLM:native",
    }
    env.update(overrides)
    return {k: v for k, v in env.items() if v is not None}


def test_settings_parse_and_stellar_is_off_without_an_account():
    assert load_settings({"PAYMENTS_DATABASE_URL": "sqlite+aiosqlite:///:memory:"}).stellar is None
    s = load_settings(stellar_env(STELLAR_SILENCE_TIMEOUT_SECONDS="0.5", STELLAR_START_CURSOR="now")).stellar
    assert s.receiving_account == ACCOUNT and s.horizon_url == "https://horizon-testnet.stellar.org"
    assert s.assets == (StellarAsset("USDC", ISSUER), StellarAsset("XLM", None))
    assert s.asset("usdc") == StellarAsset("USDC", ISSUER) and s.asset("EUR") is None
    assert (s.silence_timeout_seconds, s.backoff_min_seconds, s.backoff_max_seconds, s.start_cursor) == (0.5, 5, 300, "now")


@pytest.mark.parametrize("overrides, message", [
    (dict(STELLAR_RECEIVING_ACCOUNT="GABC"), "STELLAR_RECEIVING_ACCOUNT must be a Stellar account id"),
    (dict(STELLAR_RECEIVING_ACCOUNT=Keypair.random().secret), "STELLAR_RECEIVING_ACCOUNT must be a Stellar account id"),
    (dict(STELLAR_HORIZON_URL=None), "STELLAR_HORIZON_URL is required"),
    (dict(STELLAR_HORIZON_URL="horizon.example"), "STELLAR_HORIZON_URL must be an http or https URL"),
    (dict(STELLAR_NETWORK_PASSPHRASE=None), "STELLAR_NETWORK_PASSPHRASE is required"),
    (dict(STELLAR_ASSETS=None), "STELLAR_ASSETS is required"),
    (dict(STELLAR_ASSETS="USDC"), "'USDC' is not CODE:ISSUER"),
    (dict(STELLAR_ASSETS="TOOLONGASSETCODE:native"), "is not CODE:ISSUER"),
    (dict(STELLAR_ASSETS="USDC:native"), "only XLM is native"),
    (dict(STELLAR_ASSETS=f"XLM:{ISSUER}"), "XLM is the native asset"),
    (dict(STELLAR_ASSETS="USDC:GNOTANISSUER"), "the issuer of USDC is not a Stellar account id"),
    (dict(STELLAR_ASSETS=f"USDC:{ISSUER},usdc:{ISSUER}"), "usdc is listed twice"),
    (dict(STELLAR_START_CURSOR="yesterday"), "STELLAR_START_CURSOR must be a paging token"),
    # Horizon parses cursors as int64: a larger one would be refused by Horizon on every request.
    (dict(STELLAR_START_CURSOR=str(2**63)),
     "STELLAR_START_CURSOR must be a paging token (0 to 9223372036854775807) or now, got '9223372036854775808'"),
    (dict(STELLAR_START_CURSOR="99999999999999999999"), "STELLAR_START_CURSOR must be a paging token"),
    (dict(STELLAR_START_CURSOR="١٢٣"), "STELLAR_START_CURSOR must be a paging token"),  # digits, but not ASCII
    (dict(STELLAR_START_CURSOR="-1"), "STELLAR_START_CURSOR must be a paging token"),
    (dict(STELLAR_SILENCE_TIMEOUT_SECONDS="0"), "STELLAR_SILENCE_TIMEOUT_SECONDS must be > 0"),
    (dict(STELLAR_BACKOFF_MIN_SECONDS="10", STELLAR_BACKOFF_MAX_SECONDS="5"), "STELLAR_BACKOFF_MAX_SECONDS must be >="),
])
def test_misconfiguration_is_a_config_error_naming_the_variable(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings(stellar_env(**overrides))


@pytest.mark.parametrize("text, stroops", [
    ("15.0000000", 150_000_000), ("0.0000001", 1), ("922337203685.4775807", 2**63 - 1), ("1e2", 1_000_000_000),
    ("12.5", 125_000_000),
])
def test_amounts_are_exact_integers(text, stroops):
    assert amount_to_stroops(text) == stroops


@pytest.mark.parametrize("text", [
    "0", "-1", "NaN", "Infinity", "0.00000001", "922337203685.4775808", "1e999999999", "1e-999999999", "abc", "",
    "1.000000000000000000000000000001",
])
def test_hostile_amounts_are_refused(text):
    with pytest.raises(ValueError):
        amount_to_stroops(text)


def test_amount_strings_and_memo():
    assert (cents_to_amount(1500), cents_to_amount(7), stroops_to_amount(150_000_001)) == ("15.00", "0.07", "15.0000001")
    memo = payment_memo(2**64 - 1, "5f0c9a6e-5a8d-4f7e-9a59-3c1b7c2c8a11")
    assert len(memo.encode()) == 28 and memo.startswith("18446744073709551615-")
    assert payment_memo(1, "a") != payment_memo(1, "b") and payment_memo(1, "a") == payment_memo(1, "a")


def test_sep7_uri_round_trip():
    usdc = StellarInstructions(ACCOUNT, StellarAsset("USDC", ISSUER), "15.00", "42-abcdef0")
    uri = usdc.sep7_uri(TESTNET)
    assert uri == (f"web+stellar:pay?destination={ACCOUNT}&amount=15.00&asset_code=USDC&asset_issuer={ISSUER}"
                   "&memo=42-abcdef0&memo_type=MEMO_TEXT&network_passphrase=Test%20SDF%20Network%20%3B%20September%202015")
    assert StellarInstructions.from_sep7_uri(uri) == usdc
    xlm = StellarInstructions(ACCOUNT, StellarAsset("XLM", None), "1.50", "7-0000000")
    public = xlm.sep7_uri("Public Global Stellar Network ; September 2015")
    assert "asset_code" not in public and "network_passphrase" not in public
    assert StellarInstructions.from_sep7_uri(public) == xlm
    assert xlm.fields() == {"destination": ACCOUNT, "asset_code": "XLM", "asset_issuer": "", "amount": "1.50",
                            "memo": "7-0000000", "memo_type": "MEMO_TEXT"}
    with pytest.raises(ValueError):
        StellarInstructions.from_sep7_uri("https://checkout.example/pay")


TX_HASH = "ab" * 32
TOKEN = (1234 << 32) | (1 << 12) | 1
RECORD = {
    "id": str(TOKEN), "paging_token": str(TOKEN), "transaction_successful": True, "type": "payment",
    "transaction_hash": TX_HASH, "asset_type": "credit_alphanum4", "asset_code": "USDC", "asset_issuer": ISSUER,
    "from": ISSUER, "to": ACCOUNT, "amount": "15.0000000",
    "transaction": {"hash": TX_HASH, "paging_token": str(TOKEN - 1), "memo_type": "text", "memo": "42-abcdef0"},
}


def variant(path: tuple[str, ...], value) -> dict:
    record = copy.deepcopy(RECORD)
    target = record
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return record


def test_a_payment_record_parses():
    record = parse_record(RECORD, ACCOUNT)
    assert (record.token, record.operation_id, record.transaction_hash) == (TOKEN, str(TOKEN), TX_HASH)
    incoming = record.incoming
    assert (incoming.asset, incoming.stroops, incoming.memo_type, incoming.memo) == (
        StellarAsset("USDC", ISSUER), 150_000_000, "text", "42-abcdef0")
    assert parse_record(variant(("to",), ISSUER), ACCOUNT).incoming is None  # not to us: only moves the cursor
    assert parse_record(variant(("type",), "create_account"), ACCOUNT).incoming is None
    assert parse_record(variant(("transaction", "memo_type"), "none"), ACCOUNT).incoming.memo is None


@pytest.mark.parametrize("path, value", [
    (("paging_token",), "not-a-number"), (("paging_token",), KeyError), (("id",), "1"),
    (("transaction",), KeyError), (("transaction", "hash"), "cd" * 32), (("transaction", "paging_token"), "5"),
    (("transaction_successful",), "yes"), (("amount",), "NaN"), (("amount",), 15), (("asset_type",), "pool_share"),
    (("asset_issuer",), "GBAD"), (("asset_code",), "US DC"), (("to",), KeyError), (("from",), "nobody"),
    (("transaction", "memo_type"), "weird"), (("transaction", "memo"), "x" * 65), (("transaction", "memo"), "\ud800"),
])
def test_hostile_records_are_malformed(path, value):
    with pytest.raises(MalformedRecord):
        parse_record(variant(path, value), ACCOUNT)
    for raw in ("just a string", [RECORD], None, 42):
        with pytest.raises(MalformedRecord):
            parse_record(raw, ACCOUNT)


def test_an_account_merge_into_the_account_is_incoming_money_without_an_amount():
    merge = {k: v for k, v in RECORD.items() if k not in ("asset_type", "asset_code", "asset_issuer", "from", "to", "amount")}
    merge |= {"type": "account_merge", "type_i": 8, "account": ISSUER, "into": ACCOUNT}
    incoming = parse_record(merge, ACCOUNT).incoming
    assert (incoming.from_account, incoming.asset, incoming.stroops, incoming.is_merge, incoming.memo) == (
        ISSUER, StellarAsset("XLM", None), None, True, "42-abcdef0")
    assert parse_record(merge | {"into": ISSUER, "account": ACCOUNT}, ACCOUNT).incoming is None  # our own account merged away
    assert parse_record(merge | {"transaction_successful": False}, ACCOUNT).incoming is None
    for bad in ({"account": "nobody"}, {"into": None}):
        with pytest.raises(MalformedRecord):
            parse_record(merge | bad, ACCOUNT)


def test_a_paging_token_beyond_int64_is_malformed():
    token = str(2**63)  # 19 digits, but Horizon (and its next links) could never page from it
    with pytest.raises(MalformedRecord, match="paging_token is not an operation id"):
        parse_record(variant(("paging_token",), token) | {"id": token}, ACCOUNT)


def token(ledger: int, operation: int = 1) -> str:
    return str(ledger << 32 | 1 << 12 | operation)


@pytest.mark.parametrize("cursor", ["0", token(1), token(900), token(1000), token(1060)])
def test_a_cursor_within_horizons_history_is_read(cursor):
    HorizonHistory(elder_ledger=1, latest_ledger=1000, core_ledger=1000).check_cursor(cursor)


def test_a_cursor_beyond_or_before_horizons_history_is_refused():
    history = HorizonHistory(elder_ledger=500, latest_ledger=1000, core_ledger=1002)
    with pytest.raises(FeedRefused, match=f"the stored cursor {token(1063)} is in ledger 1063, beyond Horizon's history"):
        history.check_cursor(token(1063))
    with pytest.raises(FeedRefused, match="Horizon keeps history only from ledger 500 on"):
        history.check_cursor(token(300))
    history.check_cursor(str((500 << 32) - 1))  # the last token before ledger 500: nothing in between
    history.check_cursor("0")  # from the start of whatever Horizon keeps
    with pytest.raises(FeedRefused, match="is not a paging token"):
        history.check_cursor(str(2**63))
    # Horizon's ingestion behind its own Stellar Core: it catches up by itself.
    catching_up = HorizonHistory(elder_ledger=1, latest_ledger=1000, core_ledger=5000)
    with pytest.raises(HorizonUnavailable, match="Horizon is still ingesting"):
        catching_up.check_cursor(token(4000))


def test_retry_after_is_honoured_within_the_longest_backoff():
    assert retry_delay(0.5, None, 300) == 0.5
    assert retry_delay(0.5, 7, 300) == 7  # Horizon's Retry-After when longer
    assert retry_delay(20, 7, 300) == 20
    assert retry_delay(0.5, 3600, 300) == 300
    assert retry_after({"Retry-After": "7"}) == 7 and retry_after({"retry-after": " 12 "}) == 12
    assert retry_after({}) is None and retry_after({"Retry-After": "soon"}) is None
    assert retry_after({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0  # a date in the past


def test_the_watchers_stall_limit_is_a_setting_or_derived():
    from payments_svc.providers.stellar.feed import WatcherHealth, stall_seconds

    derived = load_settings(stellar_env(STELLAR_SILENCE_TIMEOUT_SECONDS="10", STELLAR_BACKOFF_MAX_SECONDS="20")).stellar
    assert stall_seconds(derived) == 2 * (10 + 20) + 60
    chosen = load_settings(stellar_env(STELLAR_WATCHER_STALL_SECONDS="0.05")).stellar
    assert stall_seconds(chosen) == 0.05
    health = WatcherHealth(stall_seconds(chosen))
    assert health.problem() is None
    time.sleep(0.1)
    assert health.problem() == "the watcher has made no progress for 0 s"
    with pytest.raises(ConfigError, match="STELLAR_WATCHER_STALL_SECONDS must be > 0"):
        load_settings(stellar_env(STELLAR_WATCHER_STALL_SECONDS="0"))


def test_stellar_takes_no_webhooks_and_says_where_its_payments_come_from():
    provider = StellarProvider(load_settings(stellar_env()).stellar)
    with pytest.raises(CallbackRejectedError) as rejected:
        provider.parse_callback(b"{}", "t=1,v1=00")
    assert rejected.value.reason == "stellar payments are read from the ledger, not sent as webhooks"
