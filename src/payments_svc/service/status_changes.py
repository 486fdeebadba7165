"""Applying a status change: the transition table, a conditional UPDATE, the event
row and the outbox row, all in the caller's transaction."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from .. import metrics
from ..db.statements import Statement, is_integrity_error
from ..domain.enums import PaymentStatus
from ..domain.payment import Payment
from ..domain.transitions import can_transition, is_paid_after_end
from ..repository import events as event_rows
from ..repository import outbox
from ..repository.callbacks import DuplicateProviderEvent
from ..repository.events import EventRepository
from ..repository.outbox import OutboxRepository
from ..repository.payments import PaymentRepository


@dataclass(slots=True)
class StatusChange:
    new_status: PaymentStatus | None  # None: record the event, keep the status
    event_type: str
    values: dict[str, Any] = field(default_factory=dict)  # other columns set with the status
    provider_event_id: str | None = None
    payload: str | None = None
    message: str | None = None
    announce: bool | None = None  # queue a status callback; default: when the new status is terminal
    needs_attention: bool = False  # flag the event and the payment for an operator (e.g. money to return)
    # The callback's type when one is announced; default payment.<status>. With no status
    # change (a renewal, a refund), only `announce=True` queues one.
    callback_type: str | None = None


class ConcurrentUpdate(Exception):
    """The row's status changed since it was read; re-read and decide again."""


@dataclass(slots=True)
class Transition:
    """A change of status the transition table allows, as what writes it: the conditional
    UPDATE's values and the rows that record it (event, callback), written only if it applies."""

    payment: Payment
    new_status: PaymentStatus
    values: dict[str, Any]
    record: list[tuple[Statement, dict[str, Any]]]

    def applied(self) -> Payment:
        """The payment after its UPDATE applied."""
        # Counted at the UPDATE: a rollback after it (a lost connection) would over-count by one, rarely.
        metrics.STATUS_TRANSITIONS.labels(self.payment.status.name, self.new_status.name).inc()
        return dataclasses.replace(self.payment, **self.values)


def plan_transition(payment: Payment, change: StatusChange, now: datetime) -> Transition | None:
    """The change as a Transition; None when it changes no status or the table forbids it
    (apply_status_change records those instead)."""
    old = payment.status
    new = old if change.new_status is None else change.new_status
    if old == new or not can_transition(old, new):
        return None
    values = {"status": new, "updated_at": now, **change.values}
    if change.needs_attention:
        values["attention_required"] = True
    record = [(event_rows.INSERT_AFTER_UPDATE, event_rows.event_row(
        payment_id=payment.id,
        event_type=change.event_type,
        old_status=old,
        new_status=new,
        now=now,
        provider_event_id=change.provider_event_id,
        needs_attention=change.needs_attention,
        message=change.message,
        payload=change.payload,
    ))]
    if new.is_terminal if change.announce is None else change.announce:
        record.append((outbox.INSERT_AFTER_UPDATE, outbox.delivery_row(
            payment_id=payment.id, caller_service=payment.caller_service,
            event_type=change.callback_type or "payment." + new.name.lower(), payment_status=new, now=now,
        )))
    return Transition(payment, new, values, record)


async def write_transitions(conn: AsyncConnection, transitions: list[Transition]) -> list[bool]:
    """Several transitions, each applying or not on its own, ending the transaction (MySQL:
    one round trip with its COMMIT); whether each applied (the caller then calls `applied()`).
    Written in payment id order: two such transactions then lock their rows in the same
    order and cannot deadlock. Raises DuplicateProviderEvent when a webhook's event in
    them was applied before (nothing is written)."""
    order = sorted(range(len(transitions)), key=lambda i: transitions[i].payment.id)
    try:
        written = await PaymentRepository(conn).update_each_if_status(
            [(t.payment.id, t.payment.status, t.values, t.record) for t in (transitions[i] for i in order)])
    except Exception as exc:
        if is_integrity_error(exc):  # the one unique key a transition's rows can meet: a webhook's dedup row
            raise DuplicateProviderEvent() from exc
        raise
    applied = [False] * len(transitions)
    for i, was_applied in zip(order, written, strict=True):
        applied[i] = was_applied
    return applied


async def apply_status_change(conn: AsyncConnection, payment: Payment, change: StatusChange, now: datetime, *,
                              last: bool = False) -> Payment:
    """Returns the payment as it is after the change (unchanged when the table forbids
    the change, which is recorded instead). Raises ConcurrentUpdate. `last`: nothing
    follows in the transaction, which may then end with the change's statements (on
    MySQL, in the same round trip)."""
    transition = plan_transition(payment, change, now)
    if transition is not None:
        if not await PaymentRepository(conn).update_if_status(payment.id, payment.status, transition.values,
                                                              then=transition.record, commit=last):
            raise ConcurrentUpdate()
        return transition.applied()

    old = payment.status
    new = old if change.new_status is None else change.new_status
    repo, events = PaymentRepository(conn), EventRepository(conn)
    # No status change, or one the table forbids: recorded as an event; the status stays.
    paid_after_end = is_paid_after_end(old, new)
    attention = paid_after_end or change.needs_attention
    # A refused change must not leave its side values behind (a late failure's
    # reason on a paid payment); only a same-status event updates other columns.
    values = dict(change.values) if old == new else {}
    if attention:
        values["attention_required"] = True
    if values:
        values["updated_at"] = now
        if not await repo.update_if_status(payment.id, old, values):
            raise ConcurrentUpdate()
    if old == new:
        message = change.message
    elif paid_after_end:
        message = f"provider reports {new.name} but the payment is already {old.name}: money may have been taken, refund or reconcile by hand"
    else:
        message = f"ignored: {old.name} -> {new.name} is not an allowed transition"
    await events.add(
        payment_id=payment.id,
        event_type=change.event_type,
        old_status=old,
        new_status=old,
        now=now,
        provider_event_id=change.provider_event_id,
        needs_attention=attention,
        message=message,
        payload=change.payload,
    )
    if old == new and change.announce:
        await _announce(conn, payment, old, change, now)
    return dataclasses.replace(payment, **values) if values else payment


async def _announce(conn: AsyncConnection, payment: Payment, status: PaymentStatus, change: StatusChange, now: datetime) -> None:
    await OutboxRepository(conn).enqueue(
        payment_id=payment.id,
        caller_service=payment.caller_service,
        event_type=change.callback_type or "payment." + status.name.lower(),
        payment_status=status,
        now=now,
    )
