"""A plain PaymentRepository.get takes no row lock: while a writer holds a payment
(SELECT … FOR UPDATE in an open transaction, as a webhook, cancel or refund does), reads of
that payment (GetPayment, a refund's replay) answer at once with its committed state, and
only a get(for_update=True) waits for the writer. On the server databases only: SQLite has
no row locks (FOR UPDATE is not rendered; its write lock is the file's)."""

from __future__ import annotations

import asyncio

from payments_svc.auth.caller import Caller
from payments_svc.domain.enums import PaymentStatus
from payments_svc.repository.payments import PaymentRepository

from ..conftest import on_server_databases
from ..jobs.helpers import command

SHOP = Caller("shop")
# Far longer than any read takes on a loaded machine: a read that waits this long waits for the lock.
PATIENCE = 10.0



@on_server_databases
async def test_a_plain_get_does_not_wait_for_a_payment_another_transaction_holds(container):
    db = container.db
    payment = (await container.service.create_payment(SHOP, command("locked"))).payment
    order: list[str] = []

    async def locking_get():
        async with db.transaction() as conn:
            got = await PaymentRepository(conn).get(payment.id, for_update=True)
        order.append("locker got it")
        return got

    waiter = None
    try:
        async with db.transaction() as holder:
            held = await PaymentRepository(holder).get(payment.id, for_update=True)
            assert held.status == PaymentStatus.PENDING
            waiter = asyncio.create_task(locking_get())

            async with db.read() as conn:
                read = await asyncio.wait_for(PaymentRepository(conn).get(payment.id), PATIENCE)
            assert (read.id, read.status, read.provider_payment_id) == (payment.id, PaymentStatus.PENDING,
                                                                        payment.provider_payment_id)
            async with db.transaction() as conn:  # a plain get inside another writer's transaction
                in_transaction = await asyncio.wait_for(PaymentRepository(conn).get(payment.id), PATIENCE)
            assert in_transaction == read

            assert not waiter.done()  # the locking get waits for the holder...
            order.append("holder commits")
        assert (await asyncio.wait_for(waiter, PATIENCE)).id == payment.id
        assert order == ["holder commits", "locker got it"]  # ...and gets the row only after its commit
    finally:
        if waiter is not None:  # a failed run: do not leave the locker behind
            waiter.cancel()
            await asyncio.gather(waiter, return_exceptions=True)
