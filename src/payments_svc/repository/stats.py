"""GetPaymentStats' one aggregate over a caller's payments in a created_at range.

Plan: the caller's range is a range scan of idx_payments_caller_created
(caller_service, created_at, status, currency, amount_cents, refunded_cents), which
covers every column the query reads: no table rows are touched (MariaDB EXPLAIN: type
range, key idx_payments_caller_created, Extra "Using where; Using index; Using
temporary; Using filesort" for the GROUP BY over the few status x currency groups). With a customer_ref,
idx_payments_caller_customer (caller_service, customer_ref, created_at) narrows the range
to that buyer's rows, then reads them. bench/stats.py measures it on 1,000,000 rows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from ..db.tables import payments
from ..domain.enums import PaymentStatus

p = payments.c


@dataclass(frozen=True, slots=True)
class StatusGroup:
    status: PaymentStatus
    currency: str
    count: int
    amount_cents: int
    refunded_cents: int


def stats_statement(caller_service: str, customer_ref: str, since: datetime, until: datetime) -> sa.Select:
    stmt = (sa.select(p.status, p.currency, sa.func.count(), sa.func.coalesce(sa.func.sum(p.amount_cents), 0),
                      sa.func.coalesce(sa.func.sum(p.refunded_cents), 0))
            .where(p.caller_service == caller_service, p.created_at >= since, p.created_at < until))
    if customer_ref:
        stmt = stmt.where(p.customer_ref == customer_ref)
    return stmt.group_by(p.status, p.currency).order_by(p.status, p.currency)


class StatsRepository:
    def __init__(self, conn: AsyncConnection):
        self.conn = conn

    async def by_status(self, caller_service: str, customer_ref: str, since: datetime, until: datetime) -> list[StatusGroup]:
        rows = await self.conn.execute(stats_statement(caller_service, customer_ref, since, until))
        return [StatusGroup(PaymentStatus(r[0]), r[1], int(r[2]), int(r[3]), int(r[4])) for r in rows]
