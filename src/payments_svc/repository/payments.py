"""Reads and writes of the payments table."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from ..db.tables import payments
from ..domain.enums import PaymentMethod, PaymentStatus, PaymentType, ProviderType
from ..domain.payment import ListPaymentsQuery, Payment

MAX_ROW_ID = 2**63 - 1
_INSERT = payments.insert()  # built once: only the parameters change per payment


class DuplicatePaymentKey(Exception):
    """The (caller_service, request_id) key, or the callback hash, is taken."""


def _to_payment(row: Any) -> Payment:
    m = row._mapping
    return Payment(
        id=m["id"],
        request_id=m["request_id"],
        caller_service=m["caller_service"],
        request_fingerprint=m["request_fingerprint"],
        resource_type=m["resource_type"],
        resource_id=m["resource_id"],
        customer_ref=m["customer_ref"],
        amount_cents=m["amount_cents"],
        currency=m["currency"],
        status=PaymentStatus(m["status"]),
        payment_method=PaymentMethod(m["payment_method"]),
        payment_type=PaymentType(m["payment_type"]),
        provider=ProviderType(m["provider"]),
        recurring_interval=m["recurring_interval"],
        recurring_interval_count=m["recurring_interval_count"],
        provider_payment_id=m["provider_payment_id"],
        provider_subscription_id=m["provider_subscription_id"],
        checkout_url=m["checkout_url"],
        provider_callback_hash=m["provider_callback_hash"],
        provider_callback_url=m["provider_callback_url"],
        status_callback_url=m["status_callback_url"],
        success_url=m["success_url"],
        cancel_url=m["cancel_url"],
        refunded_cents=m["refunded_cents"],
        refundable_cents=m["refundable_cents"],
        received_cents=m["received_cents"],
        metadata=json.loads(m["metadata_json"]),
        cancel_reason=m["cancel_reason"],
        failure_reason=m["failure_reason"],
        create_error_code=m["create_error_code"],
        attention_required=bool(m["attention_required"]),
        create_lease_until=m["create_lease_until"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
    )


class PaymentRepository:
    def __init__(self, conn: AsyncConnection):
        self.conn = conn

    async def insert(self, values: dict[str, Any]) -> Payment:
        """Inserts a new row (values use Payment field names, metadata as a dict)."""
        row = dict(values)
        row["metadata_json"] = json.dumps(row.pop("metadata"), ensure_ascii=False, separators=(",", ":"))
        try:
            result = await self.conn.execute(_INSERT, row)
        except IntegrityError as exc:
            raise DuplicatePaymentKey() from exc
        payment_id = result.inserted_primary_key[0]
        return _to_payment_from_values(payment_id, values)

    async def get(self, payment_id: int, *, for_update: bool = False) -> Payment | None:
        if payment_id > MAX_ROW_ID:
            return None  # a valid uint64 no row can have (and SQLite could not even bind)
        stmt = sa.select(payments).where(payments.c.id == payment_id)
        if for_update and self.conn.dialect.name == "mysql":
            stmt = stmt.with_for_update()
        row = (await self.conn.execute(stmt)).first()
        return _to_payment(row) if row else None

    async def find_by_key(self, caller_service: str, request_id: str) -> Payment | None:
        stmt = sa.select(payments).where(
            payments.c.caller_service == caller_service, payments.c.request_id == request_id
        )
        row = (await self.conn.execute(stmt)).first()
        return _to_payment(row) if row else None

    async def find_by_callback_hash(self, provider: ProviderType, callback_hash: str) -> Payment | None:
        stmt = sa.select(payments).where(
            payments.c.provider == int(provider), payments.c.provider_callback_hash == callback_hash
        )
        row = (await self.conn.execute(stmt)).first()
        return _to_payment(row) if row else None

    async def list(self, query: ListPaymentsQuery, callers: Iterable[str] | None) -> list[Payment]:
        """`callers` limits the result to those caller services; None means any."""
        stmt = sa.select(payments)
        if callers is not None:
            stmt = stmt.where(payments.c.caller_service.in_(list(callers)))
        for name in ("request_id", "caller_service", "resource_type", "resource_id"):
            value = getattr(query, name)
            if value:
                stmt = stmt.where(payments.c[name] == value)
        if query.status is not None:
            stmt = stmt.where(payments.c.status == int(query.status))
        if query.provider is not None:
            stmt = stmt.where(payments.c.provider == int(query.provider))
        stmt = stmt.order_by(payments.c.id.desc()).limit(query.limit).offset(query.offset)
        return [_to_payment(row) for row in await self.conn.execute(stmt)]

    async def update_if_status(self, payment_id: int, expected: PaymentStatus, values: dict[str, Any]) -> bool:
        """The conditional UPDATE every status change goes through: it applies only if
        the row still has the status the caller decided on."""
        stmt = (
            payments.update()
            .where(payments.c.id == payment_id, payments.c.status == int(expected))
            .values(**_column_values(values))
        )
        return (await self.conn.execute(stmt)).rowcount == 1

    async def claim_create_lease(
        self, payment_id: int, seen_lease_until: datetime | None, now: datetime, lease_until: datetime
    ) -> bool:
        """Takes over an unfinished create whose lease ran out; only one claimer wins."""
        lease = payments.c.create_lease_until
        stmt = (
            payments.update()
            .where(
                payments.c.id == payment_id,
                payments.c.status == int(PaymentStatus.CREATED),
                lease.is_(None) if seen_lease_until is None else lease == seen_lease_until,
                sa.or_(lease.is_(None), lease <= now),
            )
            .values(create_lease_until=lease_until, updated_at=now)
        )
        return (await self.conn.execute(stmt)).rowcount == 1


def _column_values(values: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in values.items():
        if key == "metadata":
            out["metadata_json"] = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        elif isinstance(value, (PaymentStatus, PaymentMethod, PaymentType, ProviderType)):
            out[key] = int(value)
        else:
            out[key] = value
    return out


def _to_payment_from_values(payment_id: int, values: dict[str, Any]) -> Payment:
    return Payment(id=payment_id, **values)
