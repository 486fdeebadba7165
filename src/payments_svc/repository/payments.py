"""Reads and writes of the payments table."""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from ..db.tables import callback_deliveries, payments
from ..domain.enums import PaymentMethod, PaymentStatus, PaymentType, ProviderType
from ..domain.payment import ListPaymentsQuery, Payment
from .deliveries import DELIVERY_COLUMNS, CallbackDelivery, _to_delivery

MAX_ROW_ID = 2**63 - 1
_INSERT = payments.insert()  # built once: only the parameters change per payment

# The columns a Payment is made of, in its fields' order. Reads select only these: the
# driver parses a column definition per selected column on every query, and the job
# bookkeeping columns (reconcile_*, job_lease_until) are not part of a Payment.
PAYMENT_COLUMNS = tuple(
    payments.c["metadata_json" if f.name == "metadata" else f.name] for f in dataclasses.fields(Payment)
)
_CONVERSIONS = {"status": PaymentStatus, "payment_method": PaymentMethod, "payment_type": PaymentType,
                "provider": ProviderType, "metadata": json.loads, "attention_required": bool}
_CONVERT_AT = tuple((i, _CONVERSIONS[f.name]) for i, f in enumerate(dataclasses.fields(Payment)) if f.name in _CONVERSIONS)

# Statements built once (bound parameters only): no statement construction and no cache
# key computed per query.
_GET = sa.select(*PAYMENT_COLUMNS).where(payments.c.id == sa.bindparam("id"))
_GET_FOR_UPDATE = _GET.with_for_update()
_FIND_BY_KEY = sa.select(*PAYMENT_COLUMNS).where(
    payments.c.caller_service == sa.bindparam("caller_service"), payments.c.request_id == sa.bindparam("request_id")
)
# The SET clause comes from the parameters' column names (the bind names of the WHERE clause
# are not column names).
_UPDATE_IF_STATUS = payments.update().where(
    payments.c.id == sa.bindparam("where_id"), payments.c.status == sa.bindparam("where_status")
)
# GetPayment's payment and its latest callback delivery (if any) in one query.
_d = callback_deliveries.c
_GET_WITH_LATEST_DELIVERY = (
    sa.select(*PAYMENT_COLUMNS, *DELIVERY_COLUMNS)
    .select_from(payments.outerjoin(callback_deliveries, _d.payment_id == payments.c.id))
    .where(payments.c.id == sa.bindparam("id"))
    .order_by(_d.id.desc())
    .limit(1)
)


@functools.cache
def _list_statement(filters: frozenset[str]) -> sa.Select:
    """ListPayments' statement for one set of filters, built once per set (bound parameters)."""
    stmt = sa.select(*PAYMENT_COLUMNS)
    if "callers" in filters:
        stmt = stmt.where(payments.c.caller_service.in_(sa.bindparam("callers", expanding=True)))
    for name in ("request_id", "caller_service", "resource_type", "resource_id", "status", "provider"):
        if name in filters:
            stmt = stmt.where(payments.c[name] == sa.bindparam(name))
    return stmt.order_by(payments.c.id.desc()).limit(sa.bindparam("limit")).offset(sa.bindparam("offset"))


class DuplicatePaymentKey(Exception):
    """The (caller_service, request_id) key, or the callback hash, is taken."""


def _to_payment(row: Sequence[Any]) -> Payment:
    """The Payment in a row that starts with PAYMENT_COLUMNS (by position: cheaper than by name)."""
    values = list(row[: len(PAYMENT_COLUMNS)])
    for i, convert in _CONVERT_AT:
        values[i] = convert(values[i])
    return Payment(*values)


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
        stmt = _GET_FOR_UPDATE if for_update and self.conn.dialect.name != "sqlite" else _GET
        row = (await self.conn.execute(stmt, {"id": payment_id})).first()
        return _to_payment(row) if row else None

    async def get_with_latest_delivery(self, payment_id: int) -> tuple[Payment, CallbackDelivery | None] | None:
        """The payment and its latest callback delivery, in one round trip."""
        if payment_id > MAX_ROW_ID:
            return None
        row = (await self.conn.execute(_GET_WITH_LATEST_DELIVERY, {"id": payment_id})).first()
        if row is None:
            return None
        delivery = row[len(PAYMENT_COLUMNS):]
        return _to_payment(row), _to_delivery(delivery) if delivery[0] is not None else None

    async def find_by_key(self, caller_service: str, request_id: str) -> Payment | None:
        params = {"caller_service": caller_service, "request_id": request_id}
        row = (await self.conn.execute(_FIND_BY_KEY, params)).first()
        return _to_payment(row) if row else None

    async def find_by_callback_hash(self, provider: ProviderType, callback_hash: str) -> Payment | None:
        stmt = sa.select(*PAYMENT_COLUMNS).where(
            payments.c.provider == int(provider), payments.c.provider_callback_hash == callback_hash
        )
        row = (await self.conn.execute(stmt)).first()
        return _to_payment(row) if row else None

    async def list(self, query: ListPaymentsQuery, callers: Iterable[str] | None) -> list[Payment]:
        """`callers` limits the result to those caller services; None means any."""
        params: dict[str, Any] = {"limit": query.limit, "offset": query.offset}
        if callers is not None:
            params["callers"] = list(callers)
        for name in ("request_id", "caller_service", "resource_type", "resource_id"):
            if getattr(query, name):
                params[name] = getattr(query, name)
        for name in ("status", "provider"):
            if getattr(query, name) is not None:
                params[name] = int(getattr(query, name))
        return [_to_payment(row) for row in await self.conn.execute(_list_statement(frozenset(params)), params)]

    async def update_if_status(self, payment_id: int, expected: PaymentStatus, values: dict[str, Any]) -> bool:
        """The conditional UPDATE every status change goes through: it applies only if
        the row still has the status the caller decided on."""
        params = _column_values(values)
        params.update(where_id=payment_id, where_status=int(expected))
        return (await self.conn.execute(_UPDATE_IF_STATUS, params)).rowcount == 1

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
