"""The Stellar provider against FakeHorizon, on SQLite and MariaDB: instructions on
create, crediting from the paged feed (reconcile) and from the stream (the
watcher), partial and over-payments, wrong assets and memos, account merges,
duplicates, restarts from the stored cursor, malformed records, payments after the
end, the watcher's reconnects, and the feed refused (another network, a cursor
beyond or before Horizon's history) until an operator acts."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import timedelta

import pytest
import sqlalchemy as sa
from stellar_sdk import Asset, IdMemo, Keypair, Network

from payments_svc import metrics
from payments_svc.api.payment_fields import payment_fields
from payments_svc.auth.caller import Caller
from payments_svc.clock import utcnow
from payments_svc.db.tables import callback_deliveries, payments, stellar_cursors, stellar_operations
from payments_svc.domain.enums import PaymentStatus, ProviderType, StellarOperationStatus
from payments_svc.domain.errors import ValidationError
from payments_svc.domain.payment import Payment
from payments_svc.gen import payments_pb2 as pb
from payments_svc.jobs.expire import PendingExpirer
from payments_svc.jobs.reconcile import Reconciler
from payments_svc.providers.stellar.feed import WatcherHealth, stall_seconds, watch
from payments_svc.providers.stellar.instructions import StellarInstructions
from payments_svc.providers.stellar.sync import FeedRefused, HorizonUnavailable, sync_stellar_payments
from payments_svc.repository.payments import PaymentRepository

from ..fakes.horizon_server import FakeHorizon
from ..support import wait_until
from .test_payment_service import command

SHOP = Caller("shop")
PASSPHRASE = Network.TESTNET_NETWORK_PASSPHRASE
ONE = 10**7  # stroops per unit
CREDITED, REFUND_DUE, UNMATCHED, MALFORMED = (StellarOperationStatus[n] for n in ("CREDITED", "REFUND_DUE", "UNMATCHED", "MALFORMED"))


@dataclass
class Chain:
    horizon: FakeHorizon
    issuer: Keypair
    usdc: Asset
    forged_usdc: Asset  # the same code from another issuer
    shop: Keypair  # the receiving account
    buyer: Keypair

    def open_accounts(self) -> None:
        """The shop (trusting both USDCs) and a buyer holding them, as on a fresh network."""
        self.horizon.create_account(self.shop, {self.usdc: "0", self.forged_usdc: "0"})
        self.horizon.create_account(self.buyer, {Asset.native(): "1000", self.usdc: "1000", self.forged_usdc: "1000"})

    def env(self, **extra: str) -> dict[str, str]:
        return {
            "STELLAR_HORIZON_URL": self.horizon.url, "STELLAR_NETWORK_PASSPHRASE": PASSPHRASE,
            "STELLAR_RECEIVING_ACCOUNT": self.shop.public_key,
            "STELLAR_ASSETS": f"USDC:{self.issuer.public_key},XLM:native",
            "STELLAR_SILENCE_TIMEOUT_SECONDS": "2", "STELLAR_BACKOFF_MIN_SECONDS": "0.05", "STELLAR_BACKOFF_MAX_SECONDS": "0.2",
            **extra,
        }

    async def pay(self, payment: Payment | None, amount: str, asset: Asset | None = None, memo="payment's") -> dict:
        """Pays the shop; the memo defaults to the payment's own."""
        if memo == "payment's":
            memo = payment.provider_payment_id
        return await self.horizon.pay(self.buyer, self.shop, amount, asset or self.usdc, memo)


@pytest.fixture
async def chain() -> AsyncIterator[Chain]:
    async with FakeHorizon(sse_retry_ms=50, keepalive_interval=0.2) as horizon:
        issuer, forger, shop, buyer = (Keypair.random() for _ in range(4))
        chain = Chain(horizon, issuer, Asset("USDC", issuer.public_key), Asset("USDC", forger.public_key), shop, buyer)
        chain.open_accounts()
        yield chain


@pytest.fixture
async def stellar(make_container, chain):
    container = await make_container(**chain.env())
    yield container
    await container.close()


async def create(container, amount_cents: int = 1500, currency: str = "USDC") -> Payment:
    cmd = command("req-" + uuid.uuid4().hex[:12], provider=int(ProviderType.STELLAR), currency=currency,
                  amount_cents=amount_cents, payment_method=2)
    return (await container.service.create_payment(SHOP, cmd)).payment


async def sync(container) -> int:
    return await sync_stellar_payments(container.db, container.settings)


async def reload(container, payment: Payment) -> Payment:
    async with container.db.read() as conn:
        return await PaymentRepository(conn).get(payment.id)


async def events(container, payment: Payment):
    return await container.service.list_payment_events(SHOP, payment.id, limit=0, after_event_id=0)


async def operations(container) -> list:
    async with container.db.read() as conn:
        return (await conn.execute(sa.select(stellar_operations).order_by(stellar_operations.c.id))).all()


async def stored_cursor(container) -> str:
    async with container.db.read() as conn:
        return (await conn.execute(sa.select(stellar_cursors.c.paging_token))).scalar()


async def deliveries(container, payment: Payment) -> list[str]:
    async with container.db.read() as conn:
        stmt = sa.select(callback_deliveries.c.event_type).where(callback_deliveries.c.payment_id == payment.id)
        return list((await conn.execute(stmt)).scalars())


def status_is(container, payment: Payment, status: PaymentStatus):
    async def check():
        return (await reload(container, payment)).status == status
    return check


@asynccontextmanager
async def watching(container) -> AsyncIterator[WatcherHealth]:
    """The streaming watcher (`stellar watch --worker`) as a task of the test's loop; yields its health."""
    health = WatcherHealth(stall_seconds(container.settings.stellar))
    task = asyncio.create_task(watch(container.db, container.settings.stellar, health))
    try:
        yield health
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task


def sse_requests(horizon: FakeHorizon) -> list:
    return [r for r in horizon.request_log if r.headers.get("Accept") == "text/event-stream"]


def page_requests(horizon: FakeHorizon) -> list:
    return [r for r in horizon.request_log if r.path.endswith("/payments") and r.headers.get("Accept") != "text/event-stream"]


async def test_create_hands_out_instructions_and_a_sep7_uri(stellar, chain):
    payment = await create(stellar)
    assert payment.status == PaymentStatus.PENDING and payment.currency == "USDC"
    memo = payment.provider_payment_id
    assert memo.startswith(f"{payment.id}-") and len(memo.encode()) <= 28
    issuer, shop = chain.issuer.public_key, chain.shop.public_key
    assert payment.checkout_url == (
        f"web+stellar:pay?destination={shop}&amount=15.00&asset_code=USDC&asset_issuer={issuer}&memo={memo}"
        "&memo_type=MEMO_TEXT&network_passphrase=Test%20SDF%20Network%20%3B%20September%202015")
    fields = payment_fields(payment)
    assert fields["stellar_instructions"] == {"destination": shop, "asset_code": "USDC", "asset_issuer": issuer,
                                              "amount": "15.00", "memo": memo, "memo_type": "MEMO_TEXT"}
    assert fields["received_cents"] == 0
    assert pb.Payment(**fields).stellar_instructions.asset_issuer == issuer

    xlm = await create(stellar, amount_cents=250, currency="xlm")
    instructions = StellarInstructions.from_sep7_uri(xlm.checkout_url)
    assert (xlm.currency, instructions.asset.is_native, instructions.amount) == ("XLM", True, "2.50")
    assert "asset_code" not in xlm.checkout_url

    with pytest.raises(ValidationError, match="currency must be a Stellar asset accepted here: USDC, XLM"):
        await create(stellar, currency="EUR")
    with pytest.raises(ValidationError, match="recurring payments are not supported by the stellar provider"):
        await stellar.service.create_payment(SHOP, command(
            "recurring", provider=int(ProviderType.STELLAR), currency="USDC", payment_type=2,
            recurring_interval="month", recurring_interval_count=1))
    # Other providers keep the three-letter rule.
    with pytest.raises(ValidationError, match="currency must be 3 letters"):
        await stellar.service.create_payment(SHOP, command("sandbox", currency="USDC"))


async def test_exact_payment_is_paid_by_paging(stellar, chain):
    payment = await create(stellar)
    paid = await chain.pay(payment, "15")

    assert await sync(stellar) >= 1
    current = await reload(stellar, payment)
    assert (current.status, current.received_cents, current.attention_required) == (PaymentStatus.PAID, 1500, False)
    [op] = await operations(stellar)
    assert (op.status, op.payment_id, op.amount_stroops, op.transaction_hash) == (CREDITED, payment.id, 15 * ONE, paid["hash"])
    assert (op.memo_type, op.memo, op.asset_code, op.asset_issuer, op.needs_attention) == (
        "text", payment.provider_payment_id, "USDC", chain.issuer.public_key, False)
    last = (await events(stellar, payment))[-1]
    assert (last.event_type, last.old_status, last.new_status, last.provider_event_id) == (
        "stellar_payment_received", PaymentStatus.PENDING, PaymentStatus.PAID, op.operation_id)
    assert last.message == f"received 15.0000000 USDC in operation {op.operation_id}: paid, 15.0000000 of 15.0000000 USDC"
    assert await deliveries(stellar, payment) == ["payment.paid"]
    assert await stored_cursor(stellar) == op.operation_id

    assert await sync(stellar) == 0  # caught up: nothing applied twice
    assert len(await operations(stellar)) == 1 and len(await deliveries(stellar, payment)) == 1


async def test_overpayment_is_paid_and_recorded(stellar, chain):
    payment = await create(stellar)
    await chain.pay(payment, "20")
    await sync(stellar)

    current = await reload(stellar, payment)
    assert (current.status, current.received_cents) == (PaymentStatus.PAID, 2000)
    [op] = await operations(stellar)
    assert (op.status, op.overpaid_stroops, op.needs_attention) == (CREDITED, 5 * ONE, True)
    assert (await events(stellar, payment))[-1].message.endswith("; overpaid by 5.0000000 USDC")


async def test_underpayment_stays_pending_until_a_top_up(stellar, chain):
    payment = await create(stellar)
    await chain.pay(payment, "10")
    await sync(stellar)

    current = await reload(stellar, payment)
    assert (current.status, current.received_cents) == (PaymentStatus.PENDING, 1000)
    partial = (await events(stellar, payment))[-1]
    assert (partial.event_type, partial.new_status) == ("stellar_partial_payment", PaymentStatus.PENDING)
    assert partial.message.endswith(": 10.0000000 of 15.0000000 USDC so far")
    assert await deliveries(stellar, payment) == []  # no status callback for a partial payment

    await chain.pay(payment, "5.0000001")
    await sync(stellar)
    current = await reload(stellar, payment)
    assert (current.status, current.received_cents) == (PaymentStatus.PAID, 1500)
    first, second = await operations(stellar)
    assert (first.status, first.overpaid_stroops, second.status, second.overpaid_stroops) == (CREDITED, None, CREDITED, 1)
    assert await deliveries(stellar, payment) == ["payment.paid"]


async def test_wrong_asset_issuer_is_not_credited(stellar, chain):
    payment = await create(stellar)
    await chain.pay(payment, "15", chain.forged_usdc)
    await sync(stellar)

    current = await reload(stellar, payment)
    assert (current.status, current.received_cents) == (PaymentStatus.PENDING, 0)
    [op] = await operations(stellar)
    assert (op.status, op.payment_id, op.needs_attention) == (UNMATCHED, payment.id, True)
    assert op.error == f"paid in USDC:{chain.forged_usdc.issuer}, the payment asks for USDC:{chain.issuer.public_key}"
    assert (await events(stellar, payment))[-1].event_type == "stellar_payment_wrong_asset"

    await chain.pay(payment, "15")  # the real asset still pays it, and only it counts
    await sync(stellar)
    current = await reload(stellar, payment)
    assert (current.status, current.received_cents) == (PaymentStatus.PAID, 1500)


async def test_wrong_or_missing_memo_is_recorded_unmatched(stellar, chain):
    payment = await create(stellar)
    memo = payment.provider_payment_id
    await chain.pay(payment, "15", memo="nope")
    await chain.pay(payment, "15", memo=None)
    await chain.pay(payment, "15", memo=IdMemo(payment.id))  # an id memo is not the text memo handed out
    await chain.pay(payment, "15", memo=memo.split("-")[0] + "-0000000")  # the right id, the wrong check digits
    await sync(stellar)

    assert (await reload(stellar, payment)).status == PaymentStatus.PENDING
    ops = await operations(stellar)
    assert [(o.status, o.payment_id, o.needs_attention) for o in ops] == [(UNMATCHED, None, True)] * 4
    assert [o.error for o in ops] == [
        "no payment has the text memo 'nope'", "no memo", f"no payment has the id memo '{payment.id}'",
        f"no payment has the text memo '{memo.split('-')[0]}-0000000'",
    ]


async def test_stream_pays_and_an_operation_seen_by_stream_and_paging_applies_once(stellar, chain):
    first, second, third = [await create(stellar) for _ in range(3)]
    async with watching(stellar):
        await chain.horizon.wait_for_streams()
        chain.horizon.duplicate_next_stream_event()  # the stream delivers it twice
        await chain.pay(first, "15")
        await wait_until(status_is(stellar, first, PaymentStatus.PAID))

        # Paging (reconcile) applies the next one while the stream holds it back; then the stream delivers it too.
        chain.horizon.pause_streams()
        await chain.pay(second, "15")
        assert await sync(stellar) == 1
        pages = len(page_requests(chain.horizon))
        chain.horizon.resume_streams()
        await chain.pay(third, "15")
        await wait_until(status_is(stellar, third, PaymentStatus.PAID))

    # All of it over the one stream: no reconnect, and no paging after the resume.
    assert len(sse_requests(chain.horizon)) == 1 and len(page_requests(chain.horizon)) == pages
    ops = await operations(stellar)
    assert [(o.payment_id, o.status) for o in ops] == [(first.id, CREDITED), (second.id, CREDITED), (third.id, CREDITED)]
    for payment in (first, second, third):
        assert (await reload(stellar, payment)).received_cents == 1500
        assert [e.event_type for e in await events(stellar, payment)].count("stellar_payment_received") == 1
        assert await deliveries(stellar, payment) == ["payment.paid"]


async def test_concurrent_stream_and_paging_apply_each_operation_once(stellar, chain):
    payments = [await create(stellar) for _ in range(8)]
    async with watching(stellar):
        await chain.horizon.wait_for_streams()
        chain.horizon.duplicate_next_stream_event(len(payments))

        async def page_repeatedly():
            for _ in range(10):
                await sync(stellar)

        async def pay_all():
            for payment in payments:
                await chain.pay(payment, "15")

        await asyncio.gather(page_repeatedly(), pay_all())
        for payment in payments:
            await wait_until(status_is(stellar, payment, PaymentStatus.PAID))

    assert sorted(o.payment_id for o in await operations(stellar)) == sorted(p.id for p in payments)
    for payment in payments:
        assert await deliveries(stellar, payment) == ["payment.paid"]


async def test_restart_resumes_from_the_stored_cursor(stellar, chain):
    before, during, partly = [await create(stellar) for _ in range(3)]
    async with watching(stellar):
        await chain.pay(before, "15")
        await wait_until(status_is(stellar, before, PaymentStatus.PAID))
    cursor = await stored_cursor(stellar)
    pages_before = len(page_requests(chain.horizon))
    # The first watcher may have stopped before opening its stream (the payment can land while it pages).
    streams_before = len(sse_requests(chain.horizon))

    # While the watcher is down: payments arrive, and nothing moves the cursor.
    await chain.pay(during, "15")
    await chain.pay(partly, "10")
    await chain.pay(partly, "5")
    stray = await chain.pay(None, "1", memo="someone else's")
    assert await stored_cursor(stellar) == cursor

    async with watching(stellar):
        await wait_until(lambda: _cursor_is(stellar, str(int(stray["paging_token"]) + 1)))  # its one operation
        await wait_until(lambda: _has_streams(chain.horizon, streams_before + 1))
    assert (await reload(stellar, during)).status == (await reload(stellar, partly)).status == PaymentStatus.PAID

    # The restarted watcher paged from exactly the stored cursor, then streamed from where paging ended.
    pages = page_requests(chain.horizon)[pages_before:]
    assert pages[0].query["cursor"] == cursor and pages[0].query["limit"] == "200"
    assert pages[0].query["join"] == "transactions"
    ops = await operations(stellar)
    assert [o.status for o in ops] == [CREDITED, CREDITED, CREDITED, CREDITED, UNMATCHED]
    assert sse_requests(chain.horizon)[-1].query["cursor"] == ops[-1].operation_id


async def test_malformed_records_are_kept_and_passed_over(stellar, chain):
    payment = await create(stellar)
    shop = chain.shop.public_key
    await chain.pay(payment, "5")
    paid = await chain.pay(payment, "1")
    hostile = [
        {"type": "payment", "amount": "NaN", "paging_token": "not-a-number", "to": shop},
        "just a string",
        # Looks like a payment to us but claims a position far ahead, for its own transaction.
        {"id": "99999999999999999", "paging_token": "99999999999999999", "type": "payment", "to": shop,
         "transaction_successful": True, "transaction_hash": paid["hash"], "amount": "1000000.0000000",
         "asset_type": "native", "from": chain.buyer.public_key,
         "transaction": {"hash": paid["hash"], "paging_token": paid["paging_token"], "memo_type": "text",
                         "memo": payment.provider_payment_id}},
    ]
    for record in hostile:
        chain.horizon.inject_raw_record(shop, record)
    await chain.pay(payment, "9")
    await sync(stellar)

    current = await reload(stellar, payment)
    assert (current.status, current.received_cents) == (PaymentStatus.PAID, 1500)
    ops = await operations(stellar)
    assert [o.status for o in ops] == [CREDITED, CREDITED, MALFORMED, MALFORMED, MALFORMED, CREDITED]
    malformed = [o for o in ops if o.status == MALFORMED]
    assert [json.loads(o.record_json) for o in malformed] == hostile
    assert all(o.needs_attention and o.operation_id is None for o in malformed)
    assert malformed[0].error == "paging_token is not an operation id"
    assert malformed[1].error == "record is not a JSON object"
    assert malformed[2].error == "record does not agree with its transaction (hash or paging token)"

    # A malformed record last in the feed: the cursor still moves past it, to its true position.
    token = chain.horizon.inject_raw_record(shop, {"type": "payment", "amount": "1e999999999"})
    await sync(stellar)
    assert await stored_cursor(stellar) == token
    assert await sync(stellar) == 0
    assert len(await operations(stellar)) == 7


async def test_malformed_record_on_the_stream(stellar, chain):
    payment = await create(stellar)
    async with watching(stellar):
        await chain.horizon.wait_for_streams()
        token = chain.horizon.inject_raw_record(chain.shop.public_key, {"type": "payment", "paging_token": None})
        await wait_until(lambda: _cursor_is(stellar, token))
        await chain.pay(payment, "15")
        await wait_until(status_is(stellar, payment, PaymentStatus.PAID))
    assert [o.status for o in await operations(stellar)] == [MALFORMED, CREDITED]


async def _cursor_is(container, token: str) -> bool:
    return await stored_cursor(container) == token


@pytest.mark.parametrize("end", ["expired", "canceled", "paid"])
async def test_payment_after_the_end_is_recorded_for_refund(make_container, chain, end):
    container = await make_container(**chain.env(PAYMENTS_PENDING_TIMEOUT_SECONDS="0.05"))
    try:
        payment = await create(container)
        if end == "expired":
            await asyncio.sleep(0.1)
            await PendingExpirer(container.service).run_batch(asyncio.Event())
        elif end == "canceled":
            await container.service.cancel_payment(SHOP, payment.id, "out of stock")
        else:
            await chain.pay(payment, "15")
            await sync(container)
        ended = (await reload(container, payment)).status
        assert ended == {"expired": PaymentStatus.EXPIRED, "canceled": PaymentStatus.CANCELED, "paid": PaymentStatus.PAID}[end]
        announced = await deliveries(container, payment)

        await chain.pay(payment, "15")
        await sync(container)

        current = await reload(container, payment)
        assert current.status == ended and current.attention_required
        assert current.received_cents == (3000 if end == "paid" else 1500)
        last = (await events(container, payment))[-1]
        assert (last.event_type, last.new_status, last.needs_attention) == ("stellar_payment_after_end", ended, True)
        assert last.message.endswith(f"after the payment was {ended.name}: refund it")
        op = (await operations(container))[-1]
        assert (op.status, op.payment_id, op.needs_attention, op.error) == (
            REFUND_DUE, payment.id, True, f"payment was already {ended.name}")
        assert await deliveries(container, payment) == announced  # no second status callback
    finally:
        await container.close()


async def test_silent_stream_is_replaced_and_resumes_from_the_cursor(make_container, chain):
    container = await make_container(**chain.env(STELLAR_SILENCE_TIMEOUT_SECONDS="0.5"))
    try:
        payment = await create(container)
        async with watching(container):
            await chain.horizon.wait_for_streams()
            chain.horizon.pause_streams()  # open, but nothing comes: no events, no keep-alives
            await chain.pay(payment, "15")
            await wait_until(status_is(container, payment, PaymentStatus.PAID), timeout=5)  # paged after the silence
            await wait_until(lambda: _has_streams(chain.horizon, 2))  # and streaming again
            chain.horizon.resume_streams()
    finally:
        await container.close()


async def test_broken_stream_reconnects(stellar, chain):
    payment = await create(stellar)
    async with watching(stellar):
        await chain.horizon.wait_for_streams()
        chain.horizon.drop_streams(abort=True)
        await wait_until(lambda: _has_streams(chain.horizon, 2))
        await chain.horizon.wait_for_streams()
        await chain.pay(payment, "15")
        await wait_until(status_is(stellar, payment, PaymentStatus.PAID))


async def _has_streams(horizon: FakeHorizon, count: int) -> bool:
    return len(sse_requests(horizon)) >= count


async def test_reconcile_job_pages_the_feed(stellar, chain):
    payment = await create(stellar)
    await chain.pay(payment, "15")
    result = await Reconciler(stellar.service).run_batch(asyncio.Event())
    assert result.failed == 0
    assert (await reload(stellar, payment)).status == PaymentStatus.PAID


async def test_horizon_unreachable_or_on_another_network(make_container, chain):
    wrong = await make_container(**chain.env(STELLAR_NETWORK_PASSPHRASE="Public Global Stellar Network ; September 2015"))
    with pytest.raises(FeedRefused, match="serves the network 'Test SDF Network ; September 2015'"):
        await sync(wrong)
    await wrong.close()
    gone = await make_container(**chain.env(STELLAR_HORIZON_URL="http://127.0.0.1:9"))
    with pytest.raises(HorizonUnavailable):
        await sync(gone)
    assert (await Reconciler(gone.service).run_batch(asyncio.Event())).failed == 1
    await gone.close()


async def test_start_cursor_now_skips_the_accounts_history(make_container, chain):
    await chain.pay(None, "1", memo="history")
    container = await make_container(**chain.env(STELLAR_START_CURSOR="now"))
    try:
        assert await sync(container) == 0
        payment = await create(container)
        await chain.pay(payment, "15")
        await sync(container)
        assert (await reload(container, payment)).status == PaymentStatus.PAID
        assert [o.status for o in await operations(container)] == [CREDITED]
    finally:
        await container.close()


# ---- the feed refused, Horizon's faults, account merges ----------------------------------

PUBLIC = Network.PUBLIC_NETWORK_PASSPHRASE


async def delete_cursor(container) -> None:
    """The runbook's fix for a cursor Horizon's history no longer holds: forget it, so
    that reading starts over at STELLAR_START_CURSOR."""
    async with container.db.transaction() as conn:
        await conn.execute(stellar_cursors.delete())


def refused_gauge() -> float | None:
    return metrics.REGISTRY.get_sample_value("payments_stellar_feed_refused")


def root_requests(horizon: FakeHorizon) -> int:
    return sum(1 for r in horizon.request_log if r.path == "/")


async def months_pass(chain: Chain) -> None:
    """Ledgers go by (500 here; the real testnet closes about 1.5 million between resets),
    and the receiving account gets a payment there: that is where the cursor will be."""
    chain.horizon.close_ledgers(500)
    await chain.pay(None, "1", memo="before the reset")


def reset_testnet(chain: Chain) -> None:
    """The testnet's quarterly reset: ledgers start again at 1, far below the stored
    cursor; the accounts are opened again (friendbot)."""
    chain.horizon.reset_network()
    chain.open_accounts()


async def test_a_cursor_beyond_horizons_history_is_refused_until_the_operator_resets_it(stellar, chain):
    payment = await create(stellar)
    await months_pass(chain)
    await sync(stellar)
    cursor = await stored_cursor(stellar)
    reset_testnet(chain)
    await chain.pay(payment, "15")  # on the new network; Horizon answers an empty page from the old cursor

    with pytest.raises(FeedRefused, match=rf"the stored cursor {cursor} is in ledger \d+, beyond Horizon's history, "
                                          r"which ends at ledger \d+ \(its Stellar Core is at \d+\): a network reset"):
        await sync(stellar)
    assert await stored_cursor(stellar) == cursor and (await reload(stellar, payment)).status == PaymentStatus.PENDING
    result = await Reconciler(stellar.service).run_batch(asyncio.Event())
    assert result.failed == 1  # reconcile's Stellar part fails the run

    await delete_cursor(stellar)
    assert await sync(stellar) >= 1
    assert (await reload(stellar, payment)).status == PaymentStatus.PAID


async def test_a_cursor_before_horizons_history_is_refused(stellar, chain):
    payment = await create(stellar)
    await chain.pay(None, "1", memo="read")
    await sync(stellar)
    cursor = await stored_cursor(stellar)
    await chain.pay(payment, "15")  # while nobody reads ...
    chain.horizon.close_ledgers(100)
    chain.horizon.forget_history(before_ledger=chain.horizon.latest_ledger)  # ... it leaves Horizon's history

    with pytest.raises(FeedRefused, match=f"Horizon keeps history only from ledger {chain.horizon.latest_ledger} on, "
                                          f"after the stored cursor {cursor}"):
        await sync(stellar)
    assert await stored_cursor(stellar) == cursor


async def test_the_watcher_refuses_the_feed_reports_unhealthy_and_recovers_once_fixed(make_container, chain):
    container = await make_container(**chain.env(STELLAR_BACKOFF_MAX_SECONDS="0.3"))
    try:
        payment = await create(container)
        async with watching(container) as health:
            await chain.horizon.wait_for_streams()
            await months_pass(chain)
            await wait_until(lambda: _cursor_moved_past_ledger(container, 500))
            assert health.problem() is None and refused_gauge() == 0

            reset_testnet(chain)
            await chain.pay(payment, "15")
            await wait_until(lambda: _refused(health))
            assert "beyond Horizon's history" in health.problem() and refused_gauge() == 1
            checks = root_requests(chain.horizon)
            await wait_until(lambda: _at_least(root_requests(chain.horizon), checks + 1))  # re-checked, still refused
            assert (await reload(container, payment)).status == PaymentStatus.PENDING

            await delete_cursor(container)
            await wait_until(status_is(container, payment, PaymentStatus.PAID))
            await wait_until(lambda: _healthy(health))
            assert refused_gauge() == 0
    finally:
        await container.close()


async def test_the_network_is_checked_on_every_reconnect(make_container, chain):
    container = await make_container(**chain.env(STELLAR_BACKOFF_MAX_SECONDS="0.3"))
    try:
        payment = await create(container)
        async with watching(container) as health:
            await chain.horizon.wait_for_streams()
            chain.horizon.switch_network(PUBLIC)  # the URL now reaches another network's Horizon
            chain.horizon.drop_streams()
            await wait_until(lambda: _refused(health))
            assert "serves the network 'Public Global Stellar Network ; September 2015'" in health.problem()

            await chain.pay(payment, "15")  # a payment on the other network must not count
            checks = root_requests(chain.horizon)
            await wait_until(lambda: _at_least(root_requests(chain.horizon), checks + 1))
            assert (await reload(container, payment)).status == PaymentStatus.PENDING and await operations(container) == []

            chain.horizon.switch_network(PASSPHRASE)  # our network's Horizon again: reading resumes by itself
            await wait_until(status_is(container, payment, PaymentStatus.PAID))
            assert health.problem() is None
    finally:
        await container.close()


async def test_a_page_repeating_the_record_at_its_cursor_is_not_an_alert(stellar, chain):
    first, second = await create(stellar), await create(stellar)
    await chain.pay(first, "15")
    await sync(stellar)
    chain.horizon.repeat_cursor_record()  # from now on every page starts with the record at its cursor

    assert await sync(stellar) == 0  # a page of nothing but that record: caught up
    await chain.pay(second, "15")
    assert await sync(stellar) == 1
    assert (await reload(stellar, second)).status == PaymentStatus.PAID
    assert [(o.status, o.needs_attention) for o in await operations(stellar)] == [(CREDITED, False), (CREDITED, False)]


async def test_retry_after_of_a_429_is_honoured_within_the_longest_backoff(make_container, chain):
    container = await make_container(**chain.env(STELLAR_BACKOFF_MIN_SECONDS="0.05", STELLAR_BACKOFF_MAX_SECONDS="1.5"))
    try:
        async with watching(container):
            await chain.horizon.wait_for_streams()
            for retry_after in (1, 3600):
                chain.horizon.rate_limit(retry_after=retry_after)
                before = len(chain.horizon.request_log)
                chain.horizon.drop_streams(abort=True)  # the watcher reconnects at once: its root request is refused
                await wait_until(lambda floor=before + 2: _at_least(len(chain.horizon.request_log), floor), timeout=20)
                limited, retried = chain.horizon.request_log[before:before + 2]
                assert limited.path == retried.path == "/"
                if retry_after == 1:
                    assert retried.at - limited.at >= 1.0  # not the 0.05 s backoff
                await chain.horizon.wait_for_streams(timeout=20)
    finally:
        await container.close()


async def test_money_merged_into_the_account_is_recorded_for_attention(stellar, chain):
    payment = await create(stellar)
    with_memo, without = Keypair.random(), Keypair.random()
    chain.horizon.create_account(with_memo, {Asset.native(): "40"})
    chain.horizon.create_account(without, {Asset.native(): "5"})
    merged = await chain.horizon.merge_account(with_memo, chain.shop, memo=payment.provider_payment_id)
    await chain.horizon.merge_account(without, chain.shop)
    await sync(stellar)

    first, second = await operations(stellar)
    assert (first.status, first.payment_id, first.needs_attention, first.from_account, first.transaction_hash) == (
        UNMATCHED, payment.id, True, with_memo.public_key, merged["hash"])
    assert (first.asset_code, first.asset_issuer, first.amount_stroops, first.memo) == (
        "XLM", None, None, payment.provider_payment_id)
    assert first.error.startswith(f"account {with_memo.public_key} was merged into the receiving account")
    assert (second.status, second.payment_id, second.needs_attention, second.memo_type) == (UNMATCHED, None, True, "none")
    current = await reload(stellar, payment)
    assert (current.status, current.received_cents, current.attention_required) == (PaymentStatus.PENDING, 0, True)
    last = (await events(stellar, payment))[-1]
    assert (last.event_type, last.needs_attention, last.provider_event_id) == ("stellar_account_merged", True, first.operation_id)


async def test_a_stellar_configuration_error_holds_up_only_stellar_payments(make_container, chain):
    container = await make_container(**chain.env(STELLAR_NETWORK_PASSPHRASE=PUBLIC, PAYMENTS_PENDING_TIMEOUT_SECONDS="600",
                                                 PAYMENTS_SANDBOX_ENABLED="true"))
    try:
        stellar_payment = await create(container)
        crashed = (await container.service.create_payment(SHOP, command("crashed", provider=int(ProviderType.SANDBOX)))).payment
        pending = (await container.service.create_payment(SHOP, command("old", provider=int(ProviderType.SANDBOX)))).payment
        async with container.db.transaction() as conn:
            long_ago = utcnow() - timedelta(minutes=30)
            await conn.execute(payments.update().where(payments.c.id == crashed.id).values(
                status=int(PaymentStatus.CREATED), provider_payment_id=None, checkout_url=None,
                create_lease_until=utcnow() - timedelta(seconds=1)))
            await conn.execute(payments.update().where(payments.c.id.in_([pending.id, stellar_payment.id]))
                               .values(created_at=long_ago, updated_at=long_ago))

        reconciled = await Reconciler(container.service).run_batch(asyncio.Event())
        assert reconciled.failed == 1 and reconciled.done >= 2  # the feed refused; the sandbox's payments done
        assert (await reload(container, crashed)).status == PaymentStatus.PENDING

        expired = await PendingExpirer(container.service).run_batch(asyncio.Event())
        assert expired.failed == 1
        assert (await reload(container, pending)).status == PaymentStatus.EXPIRED
        # Its money may be on the ledger already: not expired while the feed cannot be read.
        assert (await reload(container, stellar_payment)).status == PaymentStatus.PENDING
    finally:
        await container.close()


async def test_expiry_reads_the_feed_first_so_a_payment_paid_in_time_is_paid(make_container, chain):
    container = await make_container(**chain.env(PAYMENTS_PENDING_TIMEOUT_SECONDS="0.5"))
    try:
        paid_in_time, unpaid = await create(container), await create(container)
        await chain.pay(paid_in_time, "15")  # no watcher running, reconcile not yet due
        await wait_until(lambda: _older_than(container, unpaid, 0.5))
        await PendingExpirer(container.service).run_batch(asyncio.Event())
        assert (await reload(container, paid_in_time)).status == PaymentStatus.PAID
        assert (await reload(container, unpaid)).status == PaymentStatus.EXPIRED
        assert [o.status for o in await operations(container)] == [CREDITED]
    finally:
        await container.close()


async def _older_than(container, payment: Payment, seconds: float) -> bool:
    return (utcnow() - (await reload(container, payment)).created_at).total_seconds() > seconds


async def _cursor_moved_past_ledger(container, ledger: int) -> bool:
    cursor = await stored_cursor(container)
    return cursor is not None and int(cursor) >> 32 > ledger


async def _refused(health: WatcherHealth) -> bool:
    return health.refused is not None


async def _healthy(health: WatcherHealth) -> bool:
    return health.problem() is None


async def _at_least(value: int, floor: int) -> bool:
    return value >= floor


async def test_verify_pages_the_account_feed_for_the_payments_memo(make_container, chain):
    from payments_svc.domain.errors import ServiceUnavailableError
    from payments_svc.service.verify import VerifyService

    container = await make_container(**chain.env(PAYMENTS_VERIFY_MIN_INTERVAL_SECONDS="0.01"))
    try:
        payment = await create(container)
        nothing = await VerifyService(container.service).verify(SHOP, payment.id)
        assert (nothing.changed, nothing.payment.status) == (False, PaymentStatus.PENDING)
        assert nothing.provider_status.startswith("read from the account feed: ")  # the account's own opening

        await chain.pay(payment, "15")
        paid = await VerifyService(container.service).verify(SHOP, payment.id)
        assert (paid.changed, paid.old_status, paid.payment.status) == (True, PaymentStatus.PENDING, PaymentStatus.PAID)
        assert paid.provider_status == "read from the account feed: 1 new record(s) applied"  # the payment only
        [op] = await operations(container)
        assert (op.status, op.payment_id) == (CREDITED, payment.id)
    finally:
        await container.close()

    gone = await make_container(**chain.env(STELLAR_HORIZON_URL="http://127.0.0.1:9", PAYMENTS_VERIFY_MIN_INTERVAL_SECONDS="0.01"))
    try:
        with pytest.raises(ServiceUnavailableError, match="Horizon unavailable .*; retry the verification"):
            await VerifyService(gone.service).verify(SHOP, payment.id)
    finally:
        await gone.close()
