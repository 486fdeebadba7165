"""FakeHorizon driven through the real stellar-sdk clients."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator
from decimal import Decimal
from typing import Any

import aiohttp
import pytest
from stellar_sdk import (
    Asset,
    HashMemo,
    IdMemo,
    Keypair,
    Network,
    Server,
    ServerAsync,
    TextMemo,
    TransactionBuilder,
)
from stellar_sdk import xdr as sx
from stellar_sdk.client.aiohttp_client import AiohttpClient
from stellar_sdk.exceptions import BadRequestError, NotFoundError, StreamClientError

from .horizon_server import FakeHorizon, HorizonSubmissionError

PASSPHRASE = Network.TESTNET_NETWORK_PASSPHRASE
ISSUER = Keypair.random()
USDC = Asset("USDC", ISSUER.public_key)


@pytest.fixture
async def fake() -> AsyncGenerator[FakeHorizon, None]:
    # Short retry/keep-alive so reconnect and keep-alive tests run in well under a second.
    async with FakeHorizon(sse_retry_ms=50, keepalive_interval=0.2) as horizon:
        yield horizon


@pytest.fixture
async def server(fake: FakeHorizon) -> AsyncGenerator[ServerAsync, None]:
    async with ServerAsync(horizon_url=fake.url, client=AiohttpClient()) as client:
        yield client


@pytest.fixture
def alice(fake: FakeHorizon) -> Keypair:
    keypair = Keypair.random()
    fake.create_account(keypair, {Asset.native(): "1000", USDC: "100"})
    return keypair


@pytest.fixture
def bob(fake: FakeHorizon) -> Keypair:
    keypair = Keypair.random()
    fake.create_account(keypair, {USDC: "0"})
    return keypair


async def take(stream: AsyncGenerator[dict[str, Any], None], count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
    """Read ``count`` records from an SDK stream, then close it."""

    async def read() -> list[dict[str, Any]]:
        return [await anext(stream) for _ in range(count)]

    try:
        return await asyncio.wait_for(read(), timeout)
    finally:
        await stream.aclose()


async def read_sse_blocks(resp: aiohttp.ClientResponse, count: int) -> list[str]:
    """Raw SSE blocks (the text between blank lines), comments included."""
    blocks: list[str] = []
    lines: list[str] = []
    while len(blocks) < count:
        line = (await resp.content.readline()).decode()
        if line == "\n":
            blocks.append("".join(lines))
            lines = []
        else:
            lines.append(line)
    return blocks


async def signed_payment(server: ServerAsync, source: Keypair, destination: str, amount: str, asset: Asset, memo=None):
    builder = TransactionBuilder(await server.load_account(source.public_key), PASSPHRASE, base_fee=100)
    builder.append_payment_op(destination, asset, amount).set_timeout(30)
    if memo is not None:
        builder.add_memo(memo)
    return builder.build()


@pytest.mark.asyncio
async def test_account_resource_matches_horizon_shape(fake: FakeHorizon, server: ServerAsync, alice: Keypair):
    account = await server.accounts().account_id(alice.public_key).call()

    assert account["id"] == account["account_id"] == alice.public_key
    creation_ledger = int(account["last_modified_ledger"])
    assert account["sequence"] == str(creation_ledger << 32)
    usdc, native = account["balances"]
    assert native == {
        "balance": "1000.0000000",
        "buying_liabilities": "0.0000000",
        "selling_liabilities": "0.0000000",
        "asset_type": "native",
    }
    assert usdc["asset_type"] == "credit_alphanum4"
    assert (usdc["asset_code"], usdc["asset_issuer"], usdc["balance"]) == ("USDC", ISSUER.public_key, "100.0000000")
    assert account["signers"] == [{"weight": 1, "key": alice.public_key, "type": "ed25519_public_key"}]
    assert account["_links"]["self"]["href"] == f"{fake.url}/accounts/{alice.public_key}"
    with pytest.raises(NotFoundError):
        await server.accounts().account_id(Keypair.random().public_key).call()


@pytest.mark.asyncio
async def test_submit_payment_built_with_transaction_builder(
    fake: FakeHorizon, server: ServerAsync, alice: Keypair, bob: Keypair
):
    sequence_before = (await server.load_account(alice.public_key)).sequence
    tx = await signed_payment(server, alice, bob.public_key, "10.5", Asset.native())
    tx.sign(alice)

    response = await server.submit_transaction(tx)

    assert response["successful"] is True
    assert response["hash"] == response["id"] == tx.hash_hex()
    assert response["envelope_xdr"] == tx.to_xdr()
    assert response["source_account_sequence"] == str(sequence_before + 1)
    assert response["fee_charged"] == "100"
    assert response["memo_type"] == "none" and "memo" not in response
    assert int(response["paging_token"]) == response["ledger"] << 32 | 1 << 12
    result = sx.TransactionResult.from_xdr(response["result_xdr"])
    assert result.result.code == sx.TransactionResultCode.txSUCCESS
    assert result.result.results[0].tr.payment_result.code == sx.PaymentResultCode.PAYMENT_SUCCESS
    assert (await server.load_account(alice.public_key)).sequence == sequence_before + 1
    assert fake.balance(bob.public_key) == Decimal("10010.5")
    assert fake.balance(alice.public_key) == Decimal("1000") - Decimal("10.5") - Decimal("0.00001")


@pytest.mark.asyncio
async def test_payments_paging_follows_next_links(fake: FakeHorizon, server: ServerAsync, alice: Keypair, bob: Keypair):
    for amount in ("1", "2", "3", "4", "5"):
        await fake.pay(alice, bob, amount)

    builder = server.payments().for_account(bob.public_key).cursor(0).limit(2)
    pages = [await builder.call()]
    while pages[-1]["_embedded"]["records"]:
        pages.append(await builder.next())

    records = [record for page in pages for record in page["_embedded"]["records"]]
    assert [len(page["_embedded"]["records"]) for page in pages] == [2, 2, 2, 0]
    assert records[0]["type"] == "create_account" and records[0]["type_i"] == 0
    assert records[0]["account"] == bob.public_key and records[0]["starting_balance"] == "10000.0000000"
    payments = records[1:]
    assert [p["amount"] for p in payments] == ["1.0000000", "2.0000000", "3.0000000", "4.0000000", "5.0000000"]
    for payment in payments:
        ledger = int(payment["paging_token"]) >> 32
        assert payment["paging_token"] == payment["id"] == str(ledger << 32 | 1 << 12 | 1)
        assert (payment["type"], payment["type_i"], payment["asset_type"]) == ("payment", 1, "native")
        assert (payment["from"], payment["to"], payment["source_account"]) == (alice.public_key, bob.public_key, alice.public_key)
        assert payment["transaction_successful"] is True
        assert payment["_links"]["transaction"]["href"] == f"{fake.url}/transactions/{payment['transaction_hash']}"
    links = pages[0]["_links"]
    base = f"{fake.url}/accounts/{bob.public_key}/payments"
    assert links["self"]["href"] == f"{base}?cursor=0&limit=2&order=asc"
    assert links["next"]["href"] == f"{base}?cursor={records[1]['paging_token']}&limit=2&order=asc"
    assert links["prev"]["href"] == f"{base}?cursor={records[0]['paging_token']}&limit=2&order=desc"

    # Like Horizon, Last-Event-ID wins over ?cursor (that is how SSE clients resume).
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}?cursor=0", headers={"Last-Event-ID": records[4]["paging_token"]}) as resp:
            resumed = (await resp.json(content_type=None))["_embedded"]["records"]
    assert [r["amount"] for r in resumed] == ["5.0000000"]

    newest = await server.payments().for_account(bob.public_key).order(desc=True).limit(1).call()
    assert newest["_embedded"]["records"][0]["amount"] == "5.0000000"
    default_page = await server.payments().for_account(bob.public_key).call()
    assert len(default_page["_embedded"]["records"]) == 6
    with pytest.raises(BadRequestError) as too_big:
        await server.payments().for_account(bob.public_key).limit(201).call()
    assert too_big.value.extras["invalid_field"] == "limit"


@pytest.mark.asyncio
async def test_memos_live_on_the_transaction(server: ServerAsync, alice: Keypair, bob: Keypair):
    memos = [TextMemo("order-42"), IdMemo(9_876_543_210), HashMemo(bytes(range(32)))]
    for memo in memos:
        tx = await signed_payment(server, alice, bob.public_key, "1", Asset.native(), memo)
        tx.sign(alice)
        await server.submit_transaction(tx)

    page = await server.payments().for_account(bob.public_key).cursor(0).join("transactions").call()
    payments = [r for r in page["_embedded"]["records"] if r["type"] == "payment"]
    assert "memo" not in payments[0]
    joined = [p["transaction"] for p in payments]
    assert [(t["memo_type"], t["memo"]) for t in joined] == [
        ("text", "order-42"),
        ("id", "9876543210"),
        ("hash", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="),
    ]
    assert joined[0]["memo_bytes"] == "b3JkZXItNDI="
    assert all(t["hash"] == p["transaction_hash"] for t, p in zip(joined, payments, strict=True))

    by_hash = await server.transactions().transaction(payments[1]["transaction_hash"]).call()
    assert (by_hash["memo_type"], by_hash["memo"], by_hash["successful"]) == ("id", "9876543210", True)
    assert by_hash["ledger"] == int(payments[1]["paging_token"]) >> 32
    assert by_hash == joined[1]


@pytest.mark.asyncio
async def test_issued_asset_payment(fake: FakeHorizon, server: ServerAsync, alice: Keypair, bob: Keypair):
    tx = await signed_payment(server, alice, bob.public_key, "25", USDC, TextMemo("usdc"))
    tx.sign(alice)
    await server.submit_transaction(tx)

    page = await server.payments().for_account(bob.public_key).order(desc=True).limit(1).call()
    record = page["_embedded"]["records"][0]
    assert {k: record[k] for k in ("asset_type", "asset_code", "asset_issuer", "amount")} == {
        "asset_type": "credit_alphanum4",
        "asset_code": "USDC",
        "asset_issuer": ISSUER.public_key,
        "amount": "25.0000000",
    }
    assert fake.balance(bob.public_key, USDC) == 25
    assert fake.balance(alice.public_key, USDC) == 75

    # Issuers mint without a trustline; twelve-character codes are credit_alphanum12.
    long_asset = Asset("LONGASSETCOD", ISSUER.public_key)
    fake.create_account(ISSUER)
    holder = Keypair.random()
    fake.create_account(holder, {long_asset: "0"})
    await fake.pay(ISSUER, holder, "7", long_asset)
    minted = (await server.payments().for_account(holder.public_key).order(desc=True).limit(1).call())["_embedded"]
    assert minted["records"][0]["asset_type"] == "credit_alphanum12"
    assert fake.balance(holder.public_key, long_asset) == 7


@pytest.mark.asyncio
async def test_bad_signature_is_rejected(fake: FakeHorizon, server: ServerAsync, alice: Keypair, bob: Keypair):
    tx = await signed_payment(server, alice, bob.public_key, "1", Asset.native())
    tx.sign(Keypair.random())

    with pytest.raises(BadRequestError) as rejected:
        await server.submit_transaction(tx)

    problem = rejected.value
    assert problem.status == 400
    assert problem.type == "https://stellar.org/horizon-errors/transaction_failed"
    assert problem.title == "Transaction Failed"
    assert problem.extras["result_codes"] == {"transaction": "tx_bad_auth"}
    assert problem.extras["envelope_xdr"] == tx.to_xdr()
    assert sx.TransactionResult.from_xdr(problem.extras["result_xdr"]).result.code == sx.TransactionResultCode.txBAD_AUTH
    assert (await server.load_account(alice.public_key)).sequence == tx.transaction.sequence - 1


@pytest.mark.asyncio
async def test_bad_sequence_and_resubmission(server: ServerAsync, alice: Keypair, bob: Keypair):
    tx = await signed_payment(server, alice, bob.public_key, "1", Asset.native())
    tx.sign(alice)
    first = await server.submit_transaction(tx)

    # Horizon answers a resubmitted, already-ingested envelope from history.
    assert await server.submit_transaction(tx) == first

    account = await server.load_account(alice.public_key)
    account.sequence -= 1
    stale_tx = (
        TransactionBuilder(account, PASSPHRASE, 100)
        .append_payment_op(bob.public_key, Asset.native(), "2")
        .set_timeout(30)
        .build()
    )
    stale_tx.sign(alice)
    with pytest.raises(BadRequestError) as rejected:
        await server.submit_transaction(stale_tx)
    assert rejected.value.extras["result_codes"] == {"transaction": "tx_bad_seq"}


@pytest.mark.asyncio
async def test_failed_operations_are_recorded_but_hidden_by_default(
    fake: FakeHorizon, server: ServerAsync, alice: Keypair, bob: Keypair
):
    with pytest.raises(HorizonSubmissionError) as failed:
        await fake.pay(alice, bob, "5000")
    assert failed.value.result_codes == {"transaction": "tx_failed", "operations": ["op_underfunded"]}
    with pytest.raises(HorizonSubmissionError) as missing:
        await fake.pay(alice, Keypair.random().public_key, "1")
    assert missing.value.result_codes["operations"] == ["op_no_destination"]

    visible = await server.payments().for_account(bob.public_key).call()
    assert [r["type"] for r in visible["_embedded"]["records"]] == ["create_account"]
    everything = await server.payments().for_account(bob.public_key).include_failed(True).call()
    failed_record = everything["_embedded"]["records"][-1]
    assert failed_record["transaction_successful"] is False and failed_record["amount"] == "5000.0000000"
    tx = await server.transactions().transaction(failed_record["transaction_hash"]).call()
    assert tx["successful"] is False
    # Like core, a failed transaction still consumes the sequence number and the fee.
    assert (await server.load_account(alice.public_key)).sequence == int(tx["source_account_sequence"]) + 1
    assert fake.balance(alice.public_key) == Decimal("999.99998")


@pytest.mark.asyncio
async def test_stream_delivers_new_payments(fake: FakeHorizon, server: ServerAsync, alice: Keypair, bob: Keypair):
    stream = server.payments().for_account(bob.public_key).cursor("now").stream()
    reader = asyncio.create_task(take(stream, 2))
    await fake.wait_for_streams()

    first = await fake.pay(alice, bob, "1.25", memo="a")
    second = await fake.pay(alice, bob, "2", USDC)

    records = await reader
    assert [r["transaction_hash"] for r in records] == [first["hash"], second["hash"]]
    assert [r["amount"] for r in records] == ["1.2500000", "2.0000000"]
    assert records[1]["asset_code"] == "USDC"


@pytest.mark.asyncio
async def test_stream_replays_from_cursor_and_resumes_after_drop(
    fake: FakeHorizon, server: ServerAsync, alice: Keypair, bob: Keypair
):
    for amount in ("1", "2", "3"):
        await fake.pay(alice, bob, amount)
    history = (await server.payments().for_account(bob.public_key).cursor(0).call())["_embedded"]["records"]
    stream = server.payments().for_account(bob.public_key).cursor(history[1]["paging_token"]).stream()

    backlog = [await asyncio.wait_for(anext(stream), 5) for _ in range(2)]
    assert [r["amount"] for r in backlog] == ["2.0000000", "3.0000000"]

    assert fake.drop_streams() == 1
    await fake.pay(alice, bob, "4")
    resumed = await take(stream, 1)

    assert resumed[0]["amount"] == "4.0000000"
    sse_requests = [r for r in fake.request_log if r.headers.get("Accept") == "text/event-stream"]
    assert len(sse_requests) == 2
    # The SDK's EventSource resumes with Last-Event-ID (and the SDK also rewrites ?cursor).
    assert sse_requests[0].query["cursor"] == history[1]["paging_token"]
    assert "Last-Event-ID" not in sse_requests[0].headers
    assert sse_requests[1].headers["Last-Event-ID"] == sse_requests[1].query["cursor"] == backlog[-1]["paging_token"]


@pytest.mark.asyncio
async def test_stream_reconnects_after_horizon_limit(fake: FakeHorizon, server: ServerAsync, alice: Keypair, bob: Keypair):
    for amount in ("1", "2", "3"):
        await fake.pay(alice, bob, amount)
    stream = server.payments().for_account(bob.public_key).cursor(0).limit(2).stream()

    records = await take(stream, 4)

    assert [r["type"] for r in records] == ["create_account", "payment", "payment", "payment"]
    assert len({r["paging_token"] for r in records}) == 4


@pytest.mark.asyncio
async def test_aborted_stream_surfaces_as_sdk_error(fake: FakeHorizon, server: ServerAsync, bob: Keypair):
    stream = server.payments().for_account(bob.public_key).cursor("now").stream()
    reader = asyncio.create_task(take(stream, 1))
    await fake.wait_for_streams()

    fake.drop_streams(abort=True)

    with pytest.raises(StreamClientError):
        await reader


@pytest.mark.asyncio
async def test_duplicate_and_injected_records_reach_the_stream(
    fake: FakeHorizon, server: ServerAsync, alice: Keypair, bob: Keypair
):
    stream = server.payments().for_account(bob.public_key).cursor("now").stream()
    reader = asyncio.create_task(take(stream, 3))
    await fake.wait_for_streams()

    fake.duplicate_next_stream_event()
    await fake.pay(alice, bob, "1")
    hostile = {"type": "payment", "amount": "NaN", "paging_token": "not-a-number", "to": bob.public_key}
    token = fake.inject_raw_record(bob.public_key, hostile)

    records = await reader
    assert records[0] == records[1] and records[0]["amount"] == "1.0000000"
    assert records[2] == hostile
    page = await server.payments().for_account(bob.public_key).order(desc=True).limit(1).call()
    assert page["_embedded"]["records"] == [hostile]
    assert page["_links"]["prev"]["href"].endswith(f"cursor={token}&limit=1&order=asc")


@pytest.mark.asyncio
async def test_raw_sse_framing_pause_and_keepalive(fake: FakeHorizon, alice: Keypair, bob: Keypair):
    url = f"{fake.url}/accounts/{bob.public_key}/payments?cursor=now"
    async with aiohttp.ClientSession() as session:
        async with session.get(url, headers={"Accept": "text/event-stream"}) as resp:
            assert resp.headers["Content-Type"] == "text/event-stream; charset=utf-8"
            assert await read_sse_blocks(resp, 2) == ['retry: 50\nevent: open\ndata: "hello"\n', ": keepalive\n"]

            fake.pause_streams()
            paid = await fake.pay(alice, bob, "3")
            token = fake.inject_raw_record(bob.public_key, "just a string")
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(resp.content.readline(), 0.5)

            fake.resume_streams()
            payment_block, raw_block = await read_sse_blocks(resp, 2)

    event_id, data = payment_block.splitlines()
    record = json.loads(data.removeprefix("data: "))
    assert event_id == f"id: {record['paging_token']}"
    assert record["transaction_hash"] == paid["hash"]
    assert raw_block == f'id: {token}\ndata: "just a string"\n'


@pytest.mark.asyncio
async def test_root_ledgers_and_request_log(fake: FakeHorizon, server: ServerAsync):
    root = await server.root().call()
    latest = await server.ledgers().order(desc=True).limit(1).call()

    assert root["network_passphrase"] == PASSPHRASE
    assert await server.fetch_base_fee() == 100
    ledger = latest["_embedded"]["records"][0]
    assert ledger["sequence"] == root["history_latest_ledger"]
    assert ledger["paging_token"] == str(ledger["sequence"] << 32)
    assert [(r.method, r.path) for r in fake.request_log][:2] == [("GET", "/"), ("GET", "/ledgers")]
    assert fake.request_log[1].query == {"order": "desc", "limit": "1"}


@pytest.mark.asyncio
async def test_account_merge_moves_every_lumen_and_is_in_both_payment_feeds(
    fake: FakeHorizon, server: ServerAsync, alice: Keypair
):
    leaving = Keypair.random()
    fake.create_account(leaving, {Asset.native(): "50"})
    before = fake.balance(alice.public_key)

    merged = await fake.merge_account(leaving, alice, memo="42-abcdef0")

    assert fake.balance(leaving.public_key) == 0 and fake.balance(alice.public_key) == before + Decimal("49.99999")
    with pytest.raises(NotFoundError):
        await server.accounts().account_id(leaving.public_key).call()
    result = sx.TransactionResult.from_xdr(merged["result_xdr"]).result.results[0].tr.account_merge_result
    assert (result.code, result.source_account_balance.int64) == (sx.AccountMergeResultCode.ACCOUNT_MERGE_SUCCESS, 499_999_900)
    for account in (alice, leaving):
        page = await server.payments().for_account(account.public_key).order(desc=True).limit(1).join("transactions").call()
        [record] = page["_embedded"]["records"]
        # Horizon's account_merge record names the two accounts; the amount is only in its effects.
        assert (record["type"], record["type_i"], record["account"], record["into"]) == (
            "account_merge", 8, leaving.public_key, alice.public_key)
        assert "amount" not in record and record["source_account"] == leaving.public_key
        assert (record["transaction"]["memo_type"], record["transaction"]["memo"]) == ("text", "42-abcdef0")
        assert record["transaction_hash"] == merged["hash"]

    holder = Keypair.random()
    fake.create_account(holder, {USDC: "1"})
    with pytest.raises(HorizonSubmissionError) as refused:
        await fake.merge_account(holder, alice)  # a trustline is a sub-entry: remove it first
    assert refused.value.result_codes == {"transaction": "tx_failed", "operations": ["op_has_sub_entries"]}


@pytest.mark.asyncio
async def test_rate_limited_requests_get_horizons_429(fake: FakeHorizon, server: ServerAsync, bob: Keypair):
    fake.rate_limit(count=2, retry_after=7)
    with pytest.raises(BadRequestError) as limited:
        await server.root().call()
    response = limited.value.args[0]
    assert (limited.value.status, limited.value.type, limited.value.title) == (
        429, "https://stellar.org/horizon-errors/rate_limit_exceeded", "Rate Limit Exceeded")
    assert (response.headers["Retry-After"], response.headers["X-RateLimit-Remaining"]) == ("7", "0")
    async with aiohttp.ClientSession() as session:  # a stream is refused the same way, before it opens
        url = f"{fake.url}/accounts/{bob.public_key}/payments"
        async with session.get(url, headers={"Accept": "text/event-stream"}) as resp:
            assert (resp.status, resp.headers["Retry-After"]) == (429, "7")
            assert resp.content_type == "application/problem+json"
    assert (await server.root().call())["network_passphrase"] == PASSPHRASE  # the quota is back


@pytest.mark.asyncio
async def test_cursors_beyond_int64_are_refused_and_beyond_history_give_empty_pages(
    fake: FakeHorizon, server: ServerAsync, bob: Keypair
):
    with pytest.raises(BadRequestError) as too_big:
        await server.payments().for_account(bob.public_key).cursor(str(2**63)).call()
    assert too_big.value.extras == {"invalid_field": "cursor", "reason": "Invalid cursor"}
    # Like Horizon: an ascending page from beyond the end of history is empty, not an error.
    beyond = (fake.latest_ledger + 1000) << 32
    page = await server.payments().for_account(bob.public_key).cursor(beyond).call()
    assert page["_embedded"]["records"] == [] and page["_links"]["next"]["href"].count(f"cursor={beyond}") == 1


@pytest.mark.asyncio
async def test_reset_switched_and_truncated_networks(fake: FakeHorizon, server: ServerAsync, alice: Keypair, bob: Keypair):
    await fake.pay(alice, bob, "1")
    fake.close_ledgers(10)
    await fake.pay(alice, bob, "2")
    second = fake.latest_ledger
    root = await server.root().call()
    assert root["history_elder_ledger"] == 1 and root["history_latest_ledger"] == root["core_latest_ledger"] == second

    fake.forget_history(before_ledger=second)
    page = await server.payments().for_account(bob.public_key).cursor(0).call()
    assert [r["amount"] for r in page["_embedded"]["records"]] == ["2.0000000"]  # from the oldest record kept
    assert (await server.root().call())["history_elder_ledger"] == second
    with pytest.raises(BadRequestError) as gone:
        await server.payments().for_account(bob.public_key).cursor(second << 32).order(desc=True).call()
    assert (gone.value.status, gone.value.type) == (410, "https://stellar.org/horizon-errors/before_history")

    fake.switch_network(Network.PUBLIC_NETWORK_PASSPHRASE)
    assert (await server.root().call())["network_passphrase"] == Network.PUBLIC_NETWORK_PASSPHRASE
    fake.switch_network(PASSPHRASE)

    fake.reset_network()
    root = await server.root().call()
    assert (root["history_elder_ledger"], root["history_latest_ledger"]) == (1, 1)
    with pytest.raises(NotFoundError):
        await server.accounts().account_id(bob.public_key).call()
    page = await server.payments().for_account(bob.public_key).cursor(second << 32).call()
    assert page["_embedded"]["records"] == []


@pytest.mark.asyncio
async def test_pages_may_repeat_the_record_at_their_cursor(fake: FakeHorizon, server: ServerAsync, alice: Keypair, bob: Keypair):
    for amount in ("1", "2"):
        await fake.pay(alice, bob, amount)
    first_page = await server.payments().for_account(bob.public_key).cursor(0).limit(2).call()
    cursor = first_page["_embedded"]["records"][-1]["paging_token"]

    fake.repeat_cursor_record()
    page = await server.payments().for_account(bob.public_key).cursor(cursor).call()
    assert [r["paging_token"] for r in page["_embedded"]["records"]][0] == cursor
    assert [r["amount"] for r in page["_embedded"]["records"]] == ["1.0000000", "2.0000000"]


@pytest.mark.asyncio
async def test_refused_streams_are_reset_while_pages_still_work(fake: FakeHorizon, server: ServerAsync, bob: Keypair):
    fake.refuse_streams()
    url = f"{fake.url}/accounts/{bob.public_key}/payments"
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ServerDisconnectedError):
            async with session.get(url, headers={"Accept": "text/event-stream"}):
                pass
        async with session.get(url) as resp:
            assert resp.status == 200
        fake.refuse_streams(False)
        async with session.get(url, headers={"Accept": "text/event-stream"}) as resp:
            assert resp.status == 200 and resp.content_type == "text/event-stream"


def test_thread_mode_serves_sync_clients():
    fake = FakeHorizon()
    url = fake.start_in_thread()
    try:
        payer, payee = Keypair.random(), Keypair.random()
        fake.create_account(payer)
        fake.create_account(payee)
        paid = fake.pay_sync(payer, payee, "3", memo=42)
        with pytest.raises(HorizonSubmissionError):
            fake.pay_sync(payee, payer, "1", memo=TextMemo("x"), asset=USDC)

        server = Server(url)
        try:
            records = server.payments().for_account(payee.public_key).order(desc=True).limit(1).call()
            tx = server.transactions().transaction(paid["hash"]).call()
        finally:
            server.close()
    finally:
        fake.stop_thread()

    assert records["_embedded"]["records"][0]["transaction_hash"] == paid["hash"]
    assert (tx["memo_type"], tx["memo"]) == ("id", "42")
