"""The refunds ledger."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from ..db.engine import conflict_scope
from ..db.tables import payments, refunds
from ..domain.enums import PaymentStatus, ProviderType
from ..domain.refund import Refund, RefundStatus
from .payments import UPDATE_PAYMENT


class DuplicateRefundKey(Exception):
    """The payment already has a refund with this request_id."""


def _to_refund(row: Any) -> Refund:
    m = row._mapping
    return Refund(
        id=m["id"],
        payment_id=m["payment_id"],
        request_id=m["request_id"],
        request_fingerprint=m["request_fingerprint"],
        amount_cents=m["amount_cents"],
        reason=m["reason"],
        status=RefundStatus(m["status"]),
        provider_refund_id=m["provider_refund_id"],
        failure_reason=m["failure_reason"],
        error_code=m["error_code"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
    )


class RefundRepository:
    def __init__(self, conn: AsyncConnection):
        self.conn = conn

    async def insert(self, *, payment_id: int, provider: ProviderType, amount_cents: int, status: RefundStatus,
                     now: datetime, request_id: str | None = None, request_fingerprint: str | None = None,
                     reason: str | None = None, provider_refund_id: str | None = None,
                     failure_reason: str | None = None) -> Refund:
        values = dict(payment_id=payment_id, request_id=request_id, request_fingerprint=request_fingerprint,
                      amount_cents=amount_cents, reason=reason, status=int(status), provider=int(provider),
                      provider_refund_id=provider_refund_id, failure_reason=failure_reason, error_code=None,
                      created_at=now, updated_at=now)
        try:
            async with conflict_scope(self.conn):
                result = await self.conn.execute(refunds.insert().values(**values))
        except IntegrityError as exc:
            raise DuplicateRefundKey() from exc
        values.update(id=result.inserted_primary_key[0], status=status)
        del values["provider"]  # the payment's
        return Refund(**values)

    async def get(self, refund_id: int) -> Refund | None:
        row = (await self.conn.execute(sa.select(refunds).where(refunds.c.id == refund_id))).first()
        return _to_refund(row) if row else None

    async def find_by_request(self, payment_id: int, request_id: str) -> Refund | None:
        stmt = sa.select(refunds).where(refunds.c.payment_id == payment_id, refunds.c.request_id == request_id)
        row = (await self.conn.execute(stmt)).first()
        return _to_refund(row) if row else None

    async def find_by_provider_id(self, provider: ProviderType, provider_refund_id: str) -> Refund | None:
        stmt = sa.select(refunds).where(refunds.c.provider == int(provider), refunds.c.provider_refund_id == provider_refund_id)
        row = (await self.conn.execute(stmt)).first()
        return _to_refund(row) if row else None

    async def list_for_payment(self, payment_id: int) -> list[Refund]:
        stmt = sa.select(refunds).where(refunds.c.payment_id == payment_id).order_by(refunds.c.id)
        return [_to_refund(row) for row in await self.conn.execute(stmt)]

    async def reserve(self, payment_id: int, amount_cents: int, now: datetime) -> bool:
        """Takes amount_cents off a paid payment's refundable_cents, only if that much is
        left: the one guard that no refunds together exceed what was paid."""
        stmt = (
            UPDATE_PAYMENT
            .where(payments.c.id == payment_id, payments.c.status == int(PaymentStatus.PAID),
                   payments.c.refundable_cents >= amount_cents)
            .values(refundable_cents=payments.c.refundable_cents - amount_cents, updated_at=now)
        )
        return (await self.conn.execute(stmt)).rowcount == 1

    async def update(self, refund_id: int, values: dict[str, Any]) -> None:
        values = {k: int(v) if isinstance(v, RefundStatus) else v for k, v in values.items()}
        await self.conn.execute(refunds.update().where(refunds.c.id == refund_id).values(**values))
