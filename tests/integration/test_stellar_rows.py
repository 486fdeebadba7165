"""The Stellar tables through their repository, in-process and without Horizon, on SQLite,
PostgreSQL (and MariaDB): a receiving account's cursor is created once, read back and
moved only from where it was read (compare and set, this account only); an operation row
is stored as given and a second one for its operation id refused; what a payment received
is the sum of its credited and refund-due operations only; a memo finds the Stellar
payment that has it and no other. On the server databases the cursor and the payment are
read FOR UPDATE when asked, and only then (SQLite has no row locks)."""

from __future__ import annotations

from datetime import datetime

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from payments_svc.db.tables import payments, stellar_cursors, stellar_operations
from payments_svc.domain.enums import PaymentMethod, PaymentStatus, PaymentType, ProviderType, StellarOperationStatus
from payments_svc.repository.payments import PaymentRepository
from payments_svc.repository.stellar import (
    StellarCursorRepository,
    StellarOperationRepository,
    find_stellar_payment,
)

from ..conftest import on_server_databases

SHOP = "GSHOP" + "A" * 51  # 56 characters, as a Stellar account id
OTHER = "GOTHER" + "B" * 50
T0 = datetime(2024, 5, 1, 12, 0, 0, 123456)
T1 = datetime(2024, 5, 1, 12, 5, 30, 654321)
CREDITED, REFUND_DUE, UNMATCHED, MALFORMED = (
    StellarOperationStatus.CREDITED, StellarOperationStatus.REFUND_DUE,
    StellarOperationStatus.UNMATCHED, StellarOperationStatus.MALFORMED,
)


async def _cursor_rows(db) -> list[tuple]:
    async with db.read() as conn:
        rows = await conn.execute(sa.select(stellar_cursors).order_by(stellar_cursors.c.account))
        return [tuple(r) for r in rows]


async def _insert_payment(db, n: int, provider: ProviderType, memo: str | None):
    values = dict(
        request_id=f"req-{n}", caller_service="shop", request_fingerprint=f"{n:064d}", resource_type="order",
        resource_id=f"o-{n}", customer_ref=None, amount_cents=1500 + n, currency="usd",
        status=PaymentStatus.PENDING, payment_method=PaymentMethod.HOSTED_CARD, payment_type=PaymentType.ONE_TIME,
        provider=provider, recurring_interval=None, recurring_interval_count=None, provider_payment_id=memo,
        provider_subscription_id=None, checkout_url=f"web+stellar:pay?destination={SHOP}&memo={memo}",
        provider_callback_hash=f"hash-{n}", provider_callback_url=f"https://svc.example/cb/{n}",
        status_callback_url="https://shop.example/cb", success_url=None, cancel_url=None, refunded_cents=0,
        refundable_cents=0, received_cents=7, metadata={"cart": str(n)}, cancel_reason=None, failure_reason=None,
        create_error_code=None, attention_required=False, create_lease_until=None, created_at=T0, updated_at=T1,
        provider_account_id=None,
    )
    async with db.transaction() as conn:
        return await PaymentRepository(conn).insert(values)


def _operation(operation_id: str | None, **values):
    row = dict(
        account=SHOP, operation_id=operation_id, transaction_hash=None if operation_id is None else "f" * 64,
        from_account=OTHER, asset_code="USDC", asset_issuer=OTHER, amount_stroops=None, memo_type="text",
        memo="m", record_json=f'{{"id":"{operation_id}"}}', created_at=T0,
    )
    row.update(values)
    return row


async def _locked_elsewhere(db, table: sa.Table, where) -> bool:
    """Whether another transaction finds the row locked (FOR UPDATE NOWAIT fails at once)."""
    async with db.engine.connect() as other, other.begin():
        try:
            await other.execute(sa.select(table).where(where).with_for_update(nowait=True))
        except sa.exc.DBAPIError:
            return True
        return False


# SQLite locks the whole file: it has no row locks, and FOR UPDATE is not rendered there.


# --- stellar_cursors --------------------------------------------------------------------


async def test_a_cursor_is_created_once_per_account_and_read_back_per_account(container):
    db = container.db
    async with db.transaction() as conn:
        cursors = StellarCursorRepository(conn)
        assert await cursors.get(SHOP) is None  # none yet
        assert await cursors.create(SHOP, "100", T0) is True
        assert await cursors.create(OTHER, "200", T1) is True
        # Another process made it first: refused, and the transaction goes on (PostgreSQL's savepoint).
        assert await cursors.create(SHOP, "999", T1) is False
        assert await cursors.get(SHOP) == "100"
        assert await cursors.get(OTHER) == "200"
        assert await cursors.get("G" + "C" * 55) is None
    assert await _cursor_rows(db) == sorted([(SHOP, "100", T0), (OTHER, "200", T1)])


async def test_a_lone_cursor_is_not_read_for_another_account(container):
    async with container.db.transaction() as conn:
        cursors = StellarCursorRepository(conn)
        assert await cursors.create(SHOP, "100", T0) is True
        assert await cursors.get(OTHER) is None
        assert await cursors.get(OTHER, for_update=True) is None
        assert await cursors.get(SHOP, for_update=True) == "100"


async def test_a_cursor_moves_only_from_where_it_was_read_and_only_for_its_account(container):
    db = container.db
    async with db.transaction() as conn:
        cursors = StellarCursorRepository(conn)
        # Both accounts at the same token: the move must touch the named account's row only.
        assert await cursors.create(SHOP, "100", T0) is True
        assert await cursors.create(OTHER, "100", T0) is True
    async with db.transaction() as conn:
        cursors = StellarCursorRepository(conn)
        assert await cursors.advance(SHOP, "99", "300", T1) is False  # moved since it was read
        assert await cursors.advance("G" + "C" * 55, "100", "300", T1) is False  # no such account
    assert await _cursor_rows(db) == sorted([(SHOP, "100", T0), (OTHER, "100", T0)])
    async with db.transaction() as conn:
        cursors = StellarCursorRepository(conn)
        assert await cursors.advance(SHOP, "100", "300", T1) is True
        assert await cursors.get(SHOP) == "300"
        assert await cursors.advance(SHOP, "100", "400", T1) is False  # no longer where it was
    assert await _cursor_rows(db) == sorted([(SHOP, "300", T1), (OTHER, "100", T0)])


@on_server_databases
async def test_reading_a_cursor_for_update_locks_its_row_and_a_plain_read_does_not(container):
    db = container.db
    async with db.transaction() as conn:
        await StellarCursorRepository(conn).create(SHOP, "100", T0)
    async with db.transaction() as conn:
        assert await StellarCursorRepository(conn).get(SHOP) == "100"
        assert await _locked_elsewhere(db, stellar_cursors, stellar_cursors.c.account == SHOP) is False
    async with db.transaction() as conn:
        assert await StellarCursorRepository(conn).get(SHOP, for_update=False) == "100"
        assert await _locked_elsewhere(db, stellar_cursors, stellar_cursors.c.account == SHOP) is False
    async with db.transaction() as conn:
        assert await StellarCursorRepository(conn).get(SHOP, for_update=True) == "100"
        assert await _locked_elsewhere(db, stellar_cursors, stellar_cursors.c.account == SHOP) is True


# --- stellar_operations -----------------------------------------------------------------


async def test_an_operation_is_stored_as_given_and_found_by_its_operation_id(container):
    db = container.db
    payment = await _insert_payment(db, 1, ProviderType.STELLAR, "memo-1")
    async with db.transaction() as conn:
        operations = StellarOperationRepository(conn)
        assert await operations.exists("1001") is False
        await operations.add(status=CREDITED, **_operation("1001", payment_id=payment.id, amount_stroops=15 * 10**9,
                                                            overpaid_stroops=3, needs_attention=True, error="why"))
        assert await operations.exists("1001") is True
        assert await operations.exists("1002") is False  # only the one operation id
        await operations.add(status=MALFORMED, **_operation(None, record_json="{bad"))
        assert await operations.exists("1002") is False
    async with db.read() as conn:
        rows = (await conn.execute(sa.select(stellar_operations).order_by(stellar_operations.c.id))).mappings().all()
    assert [{k: v for k, v in r.items() if k != "id"} for r in rows] == [
        dict(account=SHOP, operation_id="1001", transaction_hash="f" * 64, payment_id=payment.id, status=10,
             from_account=OTHER, asset_code="USDC", asset_issuer=OTHER, amount_stroops=15 * 10**9,
             overpaid_stroops=3, memo_type="text", memo="m", needs_attention=True, error="why",
             record_json='{"id":"1001"}', created_at=T0),
        dict(account=SHOP, operation_id=None, transaction_hash=None, payment_id=None, status=40,
             from_account=OTHER, asset_code="USDC", asset_issuer=OTHER, amount_stroops=None,
             overpaid_stroops=None, memo_type="text", memo="m", needs_attention=False, error=None,
             record_json="{bad", created_at=T0),
    ]


async def test_a_second_row_for_one_operation_id_is_refused(container):
    db = container.db
    async with db.transaction() as conn:
        await StellarOperationRepository(conn).add(status=UNMATCHED, **_operation("2001"))
    with pytest.raises(IntegrityError):
        async with db.transaction() as conn:
            await StellarOperationRepository(conn).add(status=CREDITED, **_operation("2001", memo="other"))
    async with db.read() as conn:
        rows = (await conn.execute(sa.select(stellar_operations.c.status, stellar_operations.c.memo))).all()
        assert await StellarOperationRepository(conn).exists("2001") is True
    assert [tuple(r) for r in rows] == [(30, "m")]


async def test_a_payment_received_the_sum_of_its_credited_and_refund_due_operations_only(container):
    db = container.db
    paid = await _insert_payment(db, 1, ProviderType.STELLAR, "memo-1")
    other = await _insert_payment(db, 2, ProviderType.STELLAR, "memo-2")
    bare = await _insert_payment(db, 3, ProviderType.STELLAR, "memo-3")
    big = 3 * 10**12  # beyond 32 bits: the column and the sum are 64-bit
    async with db.transaction() as conn:
        operations = StellarOperationRepository(conn)
        for i, (status, payment, stroops) in enumerate([
            (CREDITED, paid, big), (REFUND_DUE, paid, 5), (CREDITED, paid, 20),
            (UNMATCHED, paid, 700), (MALFORMED, paid, 11_000),  # not the payment's money
            (CREDITED, other, 130_000), (CREDITED, None, 1_900_000),
        ]):
            await operations.add(status=status, **_operation(f"30{i}", amount_stroops=stroops,
                                                              payment_id=payment.id if payment else None))
        assert await operations.received_stroops(paid.id) == big + 25
        assert await operations.received_stroops(other.id) == 130_000
        assert await operations.received_stroops(bare.id) == 0  # no operation: nothing, not NULL
        assert await operations.received_stroops(2**62) == 0


async def test_a_payment_with_only_unmatched_operations_received_nothing(container):
    db = container.db
    payment = await _insert_payment(db, 1, ProviderType.STELLAR, "memo-1")
    async with db.transaction() as conn:
        operations = StellarOperationRepository(conn)
        await operations.add(status=UNMATCHED, **_operation("401", amount_stroops=9, payment_id=payment.id))
        assert await operations.received_stroops(payment.id) == 0


# --- find_stellar_payment -----------------------------------------------------------------


async def test_a_memo_finds_the_stellar_payment_that_has_it(container):
    db = container.db
    first = await _insert_payment(db, 1, ProviderType.STELLAR, "memo-1")
    second = await _insert_payment(db, 2, ProviderType.STELLAR, "memo-2")
    async with db.transaction() as conn:
        assert await find_stellar_payment(conn, "memo-2") == second
        assert await find_stellar_payment(conn, "memo-1") == first
        assert await find_stellar_payment(conn, "memo-3") is None
        assert await find_stellar_payment(conn, "MEMO-1") is None  # memos are compared exactly


async def test_a_memo_of_another_provider_s_payment_finds_nothing(container):
    db = container.db
    await _insert_payment(db, 1, ProviderType.STRIPE, "shared")
    await _insert_payment(db, 2, ProviderType.SANDBOX, "shared")
    async with db.transaction() as conn:
        assert await find_stellar_payment(conn, "shared") is None
    stellar = await _insert_payment(db, 3, ProviderType.STELLAR, "shared")
    async with db.transaction() as conn:
        found = await find_stellar_payment(conn, "shared")
    assert found == stellar and (found.provider, found.amount_cents) == (ProviderType.STELLAR, 1503)


@on_server_databases
async def test_finding_a_stellar_payment_locks_its_row(container):
    db = container.db
    payment = await _insert_payment(db, 1, ProviderType.STELLAR, "memo-1")
    async with db.transaction() as conn:
        assert await find_stellar_payment(conn, "memo-1") == payment
        assert await _locked_elsewhere(db, payments, payments.c.id == payment.id) is True
