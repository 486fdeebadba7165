"""RefundPayment's edges that need a second writer, in-process: a request that lost the race
for its request_id to a refund the provider has not answered yet asks the provider itself
(with the same key), and a provider's refusal releases its amount under the payment's row
lock, so that a refund reserved meanwhile by another request keeps its reservation
(PostgreSQL and MariaDB: SQLite has one writer at a time)."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa

from payments_svc.domain.errors import ErrorKind, ProviderError, ServiceUnavailableError
from payments_svc.domain.refund import RefundStatus
from payments_svc.providers.base import RefundSnapshot, provider_idempotency_key
from payments_svc.repository.refunds import RefundRepository

from ..conftest import on_server_databases
from .test_refund_edges import balance, ledger, refund_command, stub_refunds
from .test_refunds import SHOP, paid_payment


async def test_a_request_that_lost_the_race_to_an_unanswered_refund_asks_the_provider_with_the_same_key(
        container, monkeypatch):
    """The winner's provider call ended in an outage (refund PENDING, no provider id): the loser
    asks the provider again, as the caller's own retry would, and records its answer."""
    service = container.service
    payment = await paid_payment(service)

    async def busy(payment, refund):
        raise ProviderError("sandbox is busy", retryable=True, kind=ErrorKind.ABORTED)

    stub = stub_refunds(container, payment, busy)
    with pytest.raises(ServiceUnavailableError):
        await service.refund_payment(SHOP, refund_command(payment.id, "r-1", 400))
    (held,) = await ledger(container, payment.id)
    assert (held.status, held.provider_refund_id) == (RefundStatus.PENDING, None)

    async def succeed(payment, refund):
        return RefundSnapshot("re_after_race", refund.amount_cents, RefundStatus.SUCCEEDED, refund_id=refund.id)

    stub.answer = succeed
    real_find, lookups = RefundRepository.find_by_request, []

    async def find_by_request(self, payment_id, request_id):
        lookups.append(request_id)
        if len(lookups) == 1:
            return None  # looked before the winner's reservation committed
        return await real_find(self, payment_id, request_id)

    monkeypatch.setattr(RefundRepository, "find_by_request", find_by_request)
    result = await service.refund_payment(SHOP, refund_command(payment.id, "r-1", 400))
    assert lookups == ["r-1", "r-1"]  # the second after its own reservation met the winner's key
    assert (result.replayed, result.refund.id, result.refund.status, result.refund.provider_refund_id) == (
        True, held.id, RefundStatus.SUCCEEDED, "re_after_race")
    assert (result.payment.refunded_cents, result.payment.refundable_cents) == (400, 1100)
    key = provider_idempotency_key("shop", "r-1", f"refund:{payment.provider_callback_hash}")
    assert [(refund_id, k) for _, _, refund_id, k in stub.calls] == [(held.id, key), (held.id, key)]
    assert [(r.id, r.status) for r in await ledger(container, payment.id)] == [(held.id, RefundStatus.SUCCEEDED)]


async def lock_waits(db) -> int:
    """Sessions of this test's database waiting for a row lock."""
    if db.dialect == "postgresql":
        query = ("SELECT count(*) FROM pg_stat_activity "
                 "WHERE datname = current_database() AND wait_event_type = 'Lock'")
    else:
        query = ("SELECT count(*) FROM information_schema.INNODB_TRX t "
                 "JOIN information_schema.PROCESSLIST p ON p.ID = t.trx_mysql_thread_id "
                 "WHERE t.trx_state = 'LOCK WAIT' AND p.DB = DATABASE()")
    async with db.read() as conn:
        return (await conn.execute(sa.text(query))).scalar_one()


@on_server_databases
async def test_a_refusal_releases_its_amount_without_undoing_a_refund_reserved_meanwhile(container, monkeypatch):
    """Refund A is refused while refund B's reservation is being written: A's release waits for
    B's transaction (the payment's row lock) and counts B's amount as held, so refundable_cents
    never lets the payment be refunded beyond what was paid."""
    service = container.service
    payment = await paid_payment(service)  # 1500 paid
    a_asked, a_answer = asyncio.Event(), asyncio.Event()
    b_asked, b_answer = asyncio.Event(), asyncio.Event()

    async def answer(payment, refund):
        if refund.request_id == "r-a":
            a_asked.set()
            await a_answer.wait()
            raise ProviderError("charge is disputed", retryable=False, kind=ErrorKind.FAILED_PRECONDITION)
        b_asked.set()
        await b_answer.wait()
        return RefundSnapshot("re_b", refund.amount_cents, RefundStatus.SUCCEEDED, refund_id=refund.id)

    stub_refunds(container, payment, answer)
    real_insert = RefundRepository.insert
    b_reserved, b_commit = asyncio.Event(), asyncio.Event()

    async def insert(self, **values):
        refund = await real_insert(self, **values)
        if values.get("request_id") == "r-b":  # B's reservation written, its transaction still open
            b_reserved.set()
            await b_commit.wait()
        return refund

    monkeypatch.setattr(RefundRepository, "insert", insert)
    a = asyncio.create_task(service.refund_payment(SHOP, refund_command(payment.id, "r-a", 400)))
    await asyncio.wait_for(a_asked.wait(), 30)
    b = asyncio.create_task(service.refund_payment(SHOP, refund_command(payment.id, "r-b", 300)))
    await asyncio.wait_for(b_reserved.wait(), 30)
    a_answer.set()  # A's refusal is recorded while B's transaction holds the payment's row
    async with asyncio.timeout(60):
        while await lock_waits(service.db) == 0:
            await asyncio.sleep(0.2)  # MariaDB refreshes INNODB_TRX only when last read over 0.1 s ago
    b_commit.set()
    with pytest.raises(ProviderError):
        await asyncio.wait_for(a, 60)
    await asyncio.wait_for(b_asked.wait(), 30)
    # B is at the provider: its 300 stay held, A's 400 are free again.
    assert await balance(container, payment.id) == (0, 1200)
    b_answer.set()
    done = await asyncio.wait_for(b, 60)
    assert (done.refund.status, done.payment.refunded_cents, done.payment.refundable_cents) == (
        RefundStatus.SUCCEEDED, 300, 1200)
    assert sorted((r.request_id, r.status) for r in await ledger(container, payment.id)) == [
        ("r-a", RefundStatus.FAILED), ("r-b", RefundStatus.SUCCEEDED)]

