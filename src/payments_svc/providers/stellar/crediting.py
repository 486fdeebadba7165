"""Applying records of the receiving account's payments feed: in one transaction,
record what each payment to us was, change its payment through
apply_status_change, and move the stored cursor past it. The cursor moves by
compare-and-set, so concurrent readers (the watcher and reconcile) never apply a
record twice or move the cursor back; the unique operation id is the last guard.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from ... import metrics
from ...clock import utcnow
from ...db.engine import Database
from ...domain.enums import PaymentStatus, StellarOperationStatus
from ...domain.payment import Payment
from ...repository.stellar import (
    StellarCursorRepository,
    StellarOperationRepository,
    find_stellar_payment,
)
from ...service.status_changes import StatusChange, apply_status_change
from .instructions import STROOPS_PER_CENT, StellarInstructions, stroops_to_amount
from .records import FeedRecord, IncomingPayment
from .settings import StellarAsset

log = structlog.get_logger("payments.stellar")


class CursorMoved(Exception):
    """Another reader moved the cursor since it was read; continue from `stored`."""

    def __init__(self, stored: str | None):
        super().__init__(f"cursor moved to {stored}")
        self.stored = stored


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A record that could not be trusted, kept as it came for an operator."""

    record_json: str
    error: str


def record_json(raw: Any) -> str:
    # ASCII-escaped: whatever a hostile record holds (lone surrogates included) can be stored.
    return json.dumps(raw, separators=(",", ":"))


async def apply_records(
    db: Database,
    account: str,
    *,
    expected: str,
    paging_token: str,
    record: FeedRecord | None = None,
    raw: str = "",
    unreadable: tuple[Unreadable, ...] = (),
) -> None:
    """Applies `unreadable` records and then `record` (if any), and moves the cursor from
    `expected` to `paging_token`, all or nothing. Raises CursorMoved."""
    async with db.transaction() as conn:
        cursors = StellarCursorRepository(conn)
        stored = await cursors.get(account, for_update=True)
        if stored != expected:
            raise CursorMoved(stored)
        now = utcnow()
        operations = StellarOperationRepository(conn)
        for item in unreadable:
            await operations.add(status=StellarOperationStatus.MALFORMED, account=account, needs_attention=True,
                                 error=item.error[:1024], record_json=item.record_json, created_at=now)
            log.warning("stellar_record_malformed", account=account, after=expected, error=item.error)
        if record is not None and record.incoming is not None and not await operations.exists(record.operation_id):
            await _apply_payment(conn, account, record, record.incoming, raw, now)
        if not await cursors.advance(account, expected, paging_token, now):
            raise CursorMoved(None)  # unreachable while the row is locked; never advance blindly
    if record is not None and record.created_at is not None:
        metrics.WATCHER_LAG.set(max(0.0, (utcnow() - record.created_at).total_seconds()))


async def _apply_payment(conn: AsyncConnection, account: str, record: FeedRecord, incoming: IncomingPayment,
                         raw: str, now: datetime) -> None:
    operations = StellarOperationRepository(conn)
    row = dict(
        account=account, operation_id=record.operation_id, transaction_hash=record.transaction_hash,
        from_account=incoming.from_account, asset_code=incoming.asset.code, asset_issuer=incoming.asset.issuer,
        amount_stroops=incoming.stroops, memo_type=incoming.memo_type, memo=incoming.memo,
        record_json=raw, created_at=now,
    )
    # Only text memos are handed out; an id or hash memo that spells one is not it.
    payment = await find_stellar_payment(conn, incoming.memo) if incoming.memo_type == "text" else None
    if incoming.is_merge:
        await _record_merge(conn, record, incoming, payment, row, raw, now)
        return
    amount = f"{stroops_to_amount(incoming.stroops)} {incoming.asset.code}"
    if payment is None:
        error = "no memo" if incoming.memo is None else f"no payment has the {incoming.memo_type} memo {incoming.memo!r}"
        await operations.add(status=StellarOperationStatus.UNMATCHED, needs_attention=True, error=error, **row)
        log.warning("stellar_payment_unmatched", operation_id=record.operation_id, amount=amount, error=error)
        return

    wanted = _expected_asset(payment)
    if wanted != incoming.asset:
        error = f"paid in {incoming.asset}, the payment asks for {wanted or 'an unknown asset'}"
        await operations.add(status=StellarOperationStatus.UNMATCHED, payment_id=payment.id, needs_attention=True,
                             error=error, **row)
        await apply_status_change(conn, payment, StatusChange(
            None, "stellar_payment_wrong_asset", provider_event_id=record.operation_id, payload=raw,
            message=f"received {amount} in operation {record.operation_id}, not credited: {error}",
        ), now)
        log.warning("stellar_payment_wrong_asset", payment_id=payment.id, operation_id=record.operation_id, error=error)
        return

    received = await operations.received_stroops(payment.id) + incoming.stroops
    values = {"received_cents": received // STROOPS_PER_CENT}
    if payment.status.is_terminal:
        await operations.add(status=StellarOperationStatus.REFUND_DUE, payment_id=payment.id, needs_attention=True,
                             error=f"payment was already {payment.status.name}", **row)
        change = StatusChange(
            None, "stellar_payment_after_end", values, provider_event_id=record.operation_id, payload=raw,
            needs_attention=True,
            message=f"received {amount} in operation {record.operation_id} after the payment was "
                    f"{payment.status.name}: refund it",
        )
    else:
        owed = payment.amount_cents * STROOPS_PER_CENT
        progress = f"{stroops_to_amount(received)} of {stroops_to_amount(owed)} {incoming.asset.code}"
        overpaid = received - owed if received > owed else None
        await operations.add(status=StellarOperationStatus.CREDITED, payment_id=payment.id,
                             overpaid_stroops=overpaid, needs_attention=overpaid is not None, **row)
        if received >= owed:
            message = f"received {amount} in operation {record.operation_id}: paid, {progress}"
            if overpaid is not None:
                message += f"; overpaid by {stroops_to_amount(overpaid)} {incoming.asset.code}"
            change = StatusChange(PaymentStatus.PAID, "stellar_payment_received", values,
                                  provider_event_id=record.operation_id, payload=raw, message=message)
        else:
            change = StatusChange(
                None, "stellar_partial_payment", values, provider_event_id=record.operation_id, payload=raw,
                message=f"received {amount} in operation {record.operation_id}: {progress} so far",
            )
    updated = await apply_status_change(conn, payment, change, now)
    log.info("stellar_payment_applied", payment_id=payment.id, operation_id=record.operation_id, amount=amount,
             received_cents=values["received_cents"], old_status=payment.status.name, new_status=updated.status.name)


async def _record_merge(conn: AsyncConnection, record: FeedRecord, incoming: IncomingPayment, payment: Payment | None,
                        row: dict[str, Any], raw: str, now: datetime) -> None:
    """An account merged into the receiving account: lumens arrived, but Horizon's record
    does not say how many (the operation's effects do), so nothing is credited and a
    person decides, like for any money that matches no payment."""
    error = (f"account {incoming.from_account} was merged into the receiving account: its lumens (the amount is in "
             f"the operation's effects on Horizon) are not credited to any payment")
    await StellarOperationRepository(conn).add(status=StellarOperationStatus.UNMATCHED, needs_attention=True, error=error,
                                               payment_id=payment.id if payment else None, **row)
    log.warning("stellar_account_merged", operation_id=record.operation_id, from_account=incoming.from_account,
                payment_id=payment.id if payment else None, memo=incoming.memo)
    if payment is not None:
        await apply_status_change(conn, payment, StatusChange(
            None, "stellar_account_merged", provider_event_id=record.operation_id, payload=raw, needs_attention=True,
            message=f"account {incoming.from_account} was merged into the receiving account with this payment's memo "
                    f"in operation {record.operation_id}: its lumens are not credited; credit or refund them by hand",
        ), now)


def _expected_asset(payment: Payment) -> StellarAsset | None:
    """The asset the payment's instructions named (None if it has none: nothing matches)."""
    try:
        return StellarInstructions.from_sep7_uri(payment.checkout_url or "").asset
    except ValueError:
        return None
