"""update_if_status and apply_status_change leave the caller's transaction open unless told
to end it: a refund's or a webhook's status change is followed by more writes in the same
transaction, and a failure after it must undo it too (on MySQL a stray COMMIT sent with the
change's statements would keep it)."""

from __future__ import annotations

import pytest

from payments_svc.auth.caller import Caller
from payments_svc.clock import utcnow
from payments_svc.domain.enums import PaymentStatus
from payments_svc.repository.events import INSERT_AFTER_UPDATE, EventRepository, event_row
from payments_svc.repository.payments import PaymentRepository
from payments_svc.service.status_changes import StatusChange, apply_status_change

from ..jobs.helpers import command

SHOP = Caller("shop")


class _Abandoned(Exception):
    """Raised inside the transaction so that it rolls back."""


async def _attention_and_events(container, payment_id: int) -> tuple[bool, list[str]]:
    async with container.db.read() as conn:
        payment = await PaymentRepository(conn).get(payment_id)
        events = await EventRepository(conn).list(payment_id, limit=100, after_id=0)
    return payment.attention_required, [e.event_type for e in events]


@pytest.mark.parametrize("with_event", [False, True], ids=["values alone", "values and their event"])
async def test_a_rolled_back_transaction_undoes_a_status_update_it_did_not_end(container, with_event):
    payment = (await container.service.create_payment(SHOP, command("rolled-back"))).payment
    before = await _attention_and_events(container, payment.id)
    now = utcnow()
    then = [(INSERT_AFTER_UPDATE, event_row(payment_id=payment.id, event_type="test_marked", old_status=payment.status,
                                            new_status=payment.status, now=now, needs_attention=True))]
    with pytest.raises(_Abandoned):
        async with container.db.transaction() as conn:
            applied = await PaymentRepository(conn).update_if_status(
                payment.id, PaymentStatus.PENDING, {"attention_required": True, "updated_at": now},
                then=then if with_event else ())
            assert applied
            raise _Abandoned()
    assert not before[0]
    assert await _attention_and_events(container, payment.id) == before


async def test_a_status_update_told_to_end_the_transaction_is_kept(container):
    payment = (await container.service.create_payment(SHOP, command("committed"))).payment
    now = utcnow()
    then = [(INSERT_AFTER_UPDATE, event_row(payment_id=payment.id, event_type="test_marked", old_status=payment.status,
                                            new_status=payment.status, now=now, needs_attention=True))]
    async with container.db.transaction() as conn:
        assert await PaymentRepository(conn).update_if_status(
            payment.id, PaymentStatus.PENDING, {"attention_required": True, "updated_at": now}, then=then, commit=True)
    attention, events = await _attention_and_events(container, payment.id)
    assert attention and events[-1] == "test_marked"


async def test_a_rolled_back_transaction_undoes_a_status_change_it_did_not_end(container):
    payment = (await container.service.create_payment(SHOP, command("change-rolled-back"))).payment
    before = await _attention_and_events(container, payment.id)
    with pytest.raises(_Abandoned):
        async with container.db.transaction() as conn:
            current = await PaymentRepository(conn).get(payment.id, for_update=True)
            changed = await apply_status_change(conn, current, StatusChange(PaymentStatus.PAID, "test_paid"), utcnow())
            assert changed.status == PaymentStatus.PAID
            raise _Abandoned()
    async with container.db.read() as conn:
        assert (await PaymentRepository(conn).get(payment.id)).status == PaymentStatus.PENDING
    assert await _attention_and_events(container, payment.id) == before
