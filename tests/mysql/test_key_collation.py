"""Keys compare byte for byte on every backend (issue 17, item 4). MariaDB's utf8mb4_bin
is PAD SPACE: "a" and "a " were one key there and two on SQLite, and a Stellar memo with
a trailing space credited the payment whose memo lacks it."""

from __future__ import annotations

import dataclasses

import pytest

from payments_svc import container as container_module
from payments_svc.auth.caller import Caller
from payments_svc.clock import utcnow
from payments_svc.db.engine import open_database
from payments_svc.domain.enums import PaymentStatus
from payments_svc.domain.refund import RefundStatus
from payments_svc.repository.payments import PaymentRepository
from payments_svc.repository.refunds import RefundRepository

from ..integration import test_stellar
from ..integration.test_payment_service import command
from ..integration.test_stellar import UNMATCHED, create, operations, reload, sync
from .backends import open_db

SHOP = Caller("shop")
chain, stellar = test_stellar.chain, test_stellar.stellar  # the fixtures: FakeHorizon, a Stellar container


@pytest.fixture(autouse=True)
def _containers_on_every_backend(monkeypatch):
    def opened(settings):
        if settings.database_url.startswith("postgresql"):
            return open_db(settings.database_url)
        return open_database(settings)

    monkeypatch.setattr(container_module, "open_database", opened)


async def test_request_ids_that_differ_in_a_trailing_space_are_two_keys(container):
    # The API trims request ids as the reference did; what is stored must compare exactly.
    first = (await container.service.create_payment(SHOP, command("a"))).payment
    values = {f.name: getattr(first, f.name) for f in dataclasses.fields(first) if f.name != "id"}
    values.update(request_id="a ", provider_callback_hash=first.provider_callback_hash + " ", amount_cents=2500)
    async with container.db.transaction() as conn:
        twin = await PaymentRepository(conn).insert(values)
        now = utcnow()
        refunds = RefundRepository(conn)
        kept = await refunds.insert(payment_id=first.id, provider=first.provider, amount_cents=100,
                                    status=RefundStatus.PENDING, now=now, request_id="r")
        spaced = await refunds.insert(payment_id=first.id, provider=first.provider, amount_cents=200,
                                      status=RefundStatus.PENDING, now=now, request_id="r ")
    async with container.db.read() as conn:
        payments = PaymentRepository(conn)
        assert (await payments.find_by_key("shop", "a")).id == first.id
        assert (await payments.find_by_key("shop", "a ")).id == twin.id
        assert (await payments.find_by_callback_hash(first.provider, first.provider_callback_hash)).id == first.id
        assert (await payments.find_by_callback_hash(first.provider, first.provider_callback_hash + " ")).id == twin.id
        assert (await RefundRepository(conn).find_by_request(first.id, "r")).id == kept.id
        assert (await RefundRepository(conn).find_by_request(first.id, "r ")).id == spaced.id
    replay = await container.service.create_payment(SHOP, command("a"))
    assert replay.replayed and replay.payment.id == first.id and replay.payment.amount_cents == 1500


async def test_a_stellar_memo_with_a_trailing_space_does_not_credit_the_payment(stellar, chain):
    payment = await create(stellar)
    memo = payment.provider_payment_id + " "
    await chain.pay(payment, "15", memo=memo)
    assert await sync(stellar) >= 1
    current = await reload(stellar, payment)
    assert (current.status, current.received_cents) == (PaymentStatus.PENDING, 0)
    [op] = await operations(stellar)
    assert (op.status, op.payment_id, op.memo, op.needs_attention) == (UNMATCHED, None, memo, True)
    assert op.error == f"no payment has the text memo {memo!r}"

    await chain.pay(payment, "15")  # the payment's own memo still credits it
    await sync(stellar)
    assert (await reload(stellar, payment)).status == PaymentStatus.PAID
