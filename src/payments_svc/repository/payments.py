"""Reads and writes of the payments table."""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from ..db import statements as st
from ..db.tables import callback_deliveries, payment_events, payments
from ..domain.enums import PaymentMethod, PaymentStatus, PaymentType, ProviderType
from ..domain.payment import ListPaymentsQuery, Payment
from . import events
from .deliveries import DELIVERY_COLUMNS, CallbackDelivery, _to_delivery

MAX_ROW_ID = 2**63 - 1
_p = payments.c

# The columns a Payment is made of, in its fields' order. Reads select only these: the
# driver parses a column definition per selected column on every query, and the job
# bookkeeping columns (reconcile_*, job_lease_until) are not part of a Payment.
PAYMENT_COLUMNS = tuple(
    payments.c["metadata_json" if f.name == "metadata" else f.name] for f in dataclasses.fields(Payment)
)
_CONVERSIONS = {"status": PaymentStatus, "payment_method": PaymentMethod, "payment_type": PaymentType,
                "provider": ProviderType, "metadata": json.loads, "attention_required": bool}
_CONVERT_AT = tuple((i, _CONVERSIONS[f.name]) for i, f in enumerate(dataclasses.fields(Payment)) if f.name in _CONVERSIONS)

# Statements compiled once per dialect (db/statements.py), bound parameters only.
_payment_binds = {c.name: sa.bindparam(c.name, type_=c.type) for c in PAYMENT_COLUMNS if c.name != "id"}
_INSERT_CLAUSE = payments.insert().values(**_payment_binds)
_INSERT = st.Statement(_INSERT_CLAUSE.returning(_p.id), mysql=_INSERT_CLAUSE, sqlite=_INSERT_CLAUSE)
# A create's reserve: the payment and its payment_created event. MySQL: the event takes the
# payment's id with LAST_INSERT_ID() in the same batch; PostgreSQL: one statement, the
# event inserted from the payment INSERT's RETURNING (a data-modifying CTE).
_RESERVE_EVENT_MYSQL = st.Statement(
    payment_events.insert().values(payment_id=sa.func.last_insert_id(), **events.event_binds())
)
_new_payment = _INSERT_CLAUSE.returning(_p.id).cte("new_payment")
_RESERVE_POSTGRES = st.Statement(
    payment_events.insert()
    .from_select(["payment_id", *events.EVENT_VALUES],
                 sa.select(_new_payment.c.id, *events.event_binds("event_").values()))
    .returning(payment_events.c.payment_id)
)
_select_payment = sa.select(*PAYMENT_COLUMNS)
_GET_CLAUSE = _select_payment.where(_p.id == sa.bindparam("id"))
_GET = st.Statement(_GET_CLAUSE)
_GET_FOR_UPDATE = st.Statement(_GET_CLAUSE.with_for_update(), sqlite=_GET_CLAUSE)  # SQLite: the write lock is the file's
_FIND_BY_KEY = st.Statement(
    _select_payment.where(_p.caller_service == sa.bindparam("caller_service"), _p.request_id == sa.bindparam("request_id"))
)
_FIND_BY_CALLBACK_HASH = st.Statement(
    _select_payment.where(_p.provider == sa.bindparam("provider"), _p.provider_callback_hash == sa.bindparam("callback_hash"))
)
# GetPayment's payment and its latest callback delivery (if any) in one query.
_d = callback_deliveries.c
_GET_WITH_LATEST_DELIVERY = st.Statement(
    sa.select(*PAYMENT_COLUMNS, *DELIVERY_COLUMNS)
    .select_from(payments.outerjoin(callback_deliveries, _d.payment_id == _p.id))
    .where(_p.id == sa.bindparam("id"))
    .order_by(_d.id.desc())
    .limit(1)
)


# An UPDATE of one payment by id and status: on MySQL/MariaDB it reaches the row by the
# primary key only. Otherwise MariaDB may read it through idx_payments_status_updated and
# lock that index entry before the row, which deadlocks against a writer that holds the row
# (SELECT … FOR UPDATE) and then changes its status or updated_at (seen: a cancel racing a webhook).
UPDATE_PAYMENT = payments.update().with_hint("FORCE INDEX (PRIMARY)", dialect_name="mysql")


@functools.cache  # built on first use, like the other builders (mutation testing sees only calls after import)
def _claim_lease_statement(seen_lease: bool) -> st.Statement:
    lease = _p.create_lease_until
    return st.Statement(
        UPDATE_PAYMENT
        .where(
            _p.id == sa.bindparam("where_id"),
            _p.status == int(PaymentStatus.CREATED),
            lease == sa.bindparam("seen_lease_until") if seen_lease else lease.is_(None),
            sa.or_(lease.is_(None), lease <= sa.bindparam("now")),
        )
        .values(create_lease_until=sa.bindparam("lease_until"), updated_at=sa.bindparam("now"))
    )


@functools.cache
def _update_if_status_statement(columns: frozenset[str]) -> st.Statement:
    """The conditional status UPDATE setting `columns`, built once per set of columns."""
    return st.Statement(
        UPDATE_PAYMENT
        .where(_p.id == sa.bindparam("where_id"), _p.status == sa.bindparam("where_status"))
        .values({name: sa.bindparam(name, type_=_p[name].type) for name in columns})
    )


@functools.cache
def _list_statement(filters: frozenset[str], callers: int) -> st.Statement:
    """ListPayments' statement for one set of filters (and number of callers), built once."""
    stmt = _select_payment
    if "callers" in filters:
        stmt = stmt.where(_p.caller_service.in_([sa.bindparam(f"caller_{i}") for i in range(callers)]))
    for name in ("request_id", "caller_service", "resource_type", "resource_id", "status", "provider"):
        if name in filters:
            stmt = stmt.where(_p[name] == sa.bindparam(name))
    return st.Statement(stmt.order_by(_p.id.desc()).limit(sa.bindparam("limit")).offset(sa.bindparam("offset")))


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
        try:
            payment_id = await st.insert(self.conn, _INSERT, _column_values(values))
        except Exception as exc:
            if st.is_integrity_error(exc):
                raise DuplicatePaymentKey() from exc
            raise
        return Payment(id=payment_id, **values)

    async def reserve(self, creates: Sequence[tuple[dict[str, Any], dict[str, Any]]]) -> list[Payment]:
        """Creates' first transaction, the whole of it: for each create its new row
        (values as `insert`) and its first event (events.event_row's arguments, without
        payment_id). All or nothing: one taken key raises DuplicatePaymentKey and writes
        nothing. On MySQL the transaction's COMMIT goes with them (one round trip):
        nothing may follow."""
        rows = [(_column_values(values), events.event_row(payment_id=None, **event)) for values, event in creates]
        dialect = self.conn.dialect.name
        try:
            if dialect == "mysql":
                steps = [step for row, event_row in rows for step in ((_INSERT, row), (_RESERVE_EVENT_MYSQL, event_row))]
                _, ids = await st.batch(self.conn, steps, commit=True)
                payment_ids = ids[::2]
            elif dialect == "postgresql":
                payment_ids = []
                for row, event_row in rows:
                    row.update(("event_" + name, event_row[name]) for name in events.EVENT_VALUES)
                    [(payment_id,)] = await st.fetch_all(self.conn, _RESERVE_POSTGRES, row)
                    payment_ids.append(payment_id)
            else:
                payment_ids = []
                for row, event_row in rows:
                    event_row["payment_id"] = await st.insert(self.conn, _INSERT, row)
                    await st.execute(self.conn, events.INSERT, event_row)
                    payment_ids.append(event_row["payment_id"])
        except Exception as exc:
            if st.is_integrity_error(exc):
                raise DuplicatePaymentKey() from exc
            raise
        return [Payment(id=payment_id, **values) for payment_id, (values, _) in zip(payment_ids, creates, strict=True)]

    async def get(self, payment_id: int, *, for_update: bool = False) -> Payment | None:
        if payment_id > MAX_ROW_ID:
            return None  # a valid uint64 no row can have (and SQLite could not even bind)
        row = await st.fetch_one(self.conn, _GET_FOR_UPDATE if for_update else _GET, {"id": payment_id})
        return _to_payment(row) if row else None

    async def get_with_latest_delivery(self, payment_id: int) -> tuple[Payment, CallbackDelivery | None] | None:
        """The payment and its latest callback delivery, in one round trip."""
        if payment_id > MAX_ROW_ID:
            return None
        row = await st.fetch_one(self.conn, _GET_WITH_LATEST_DELIVERY, {"id": payment_id})
        if row is None:
            return None
        delivery = row[len(PAYMENT_COLUMNS):]
        return _to_payment(row), _to_delivery(delivery) if delivery[0] is not None else None

    async def find_by_key(self, caller_service: str, request_id: str) -> Payment | None:
        row = await st.fetch_one(self.conn, _FIND_BY_KEY, {"caller_service": caller_service, "request_id": request_id})
        return _to_payment(row) if row else None

    async def find_by_callback_hash(self, provider: ProviderType, callback_hash: str) -> Payment | None:
        row = await st.fetch_one(self.conn, _FIND_BY_CALLBACK_HASH, {"provider": int(provider), "callback_hash": callback_hash})
        return _to_payment(row) if row else None

    async def list(self, query: ListPaymentsQuery, callers: Iterable[str] | None) -> list[Payment]:
        """`callers` limits the result to those caller services; None means any."""
        params: dict[str, Any] = {"limit": query.limit, "offset": query.offset}
        filters = set()
        if callers is not None:
            callers = list(callers)
            filters.add("callers")
            params.update((f"caller_{i}", caller) for i, caller in enumerate(callers))
        for name in ("request_id", "caller_service", "resource_type", "resource_id"):
            if getattr(query, name):
                params[name] = getattr(query, name)
                filters.add(name)
        for name in ("status", "provider"):
            if getattr(query, name) is not None:
                params[name] = int(getattr(query, name))
                filters.add(name)
        stmt = _list_statement(frozenset(filters), len(callers) if callers is not None else 0)
        return [_to_payment(row) for row in await st.fetch_all(self.conn, stmt, params)]

    async def update_if_status(self, payment_id: int, expected: PaymentStatus, values: dict[str, Any], *,
                               then: Sequence[tuple[st.Statement, dict[str, Any]]] = (), commit: bool = False) -> bool:
        """The conditional UPDATE every status change goes through: it applies only if
        the row still has the status the caller decided on. `then`: the rows that record
        it (their INSERT_AFTER_UPDATE statements), written only if it applied, in the same
        round trip on MySQL; `commit`: the transaction ends with them (statements.batch)."""
        chain = _update_chain(payment_id, expected, values, then)
        if len(chain) == 1 and not commit:
            return await st.execute(self.conn, *chain[0]) == 1
        counts, _ = await st.batch(self.conn, chain, commit=commit)
        return counts[0] == 1

    async def update_each_if_status(
        self, updates: Sequence[tuple[int, PaymentStatus, dict[str, Any], Sequence[tuple[st.Statement, dict[str, Any]]]]]
    ) -> list[bool]:
        """Several update_if_status (payment id, expected status, values, then) that each
        apply or not on their own, and end the transaction: on MySQL all of them and the
        COMMIT in one round trip. Whether each applied."""
        chains = [_update_chain(*update) for update in updates]
        if self.conn.dialect.name != "mysql":
            return [(await st.batch(self.conn, chain))[0][0] == 1 for chain in chains]
        counts, _ = await st.batch(self.conn, [step for chain in chains for step in chain], commit=True)
        applied, at = [], 0
        for chain in chains:
            applied.append(counts[at] == 1)
            at += len(chain)
        return applied

    async def claim_create_lease(
        self, payment_id: int, seen_lease_until: datetime | None, now: datetime, lease_until: datetime
    ) -> bool:
        """Takes over an unfinished create whose lease ran out; only one claimer wins."""
        params = {"where_id": payment_id, "seen_lease_until": seen_lease_until, "now": now, "lease_until": lease_until}
        return await st.execute(self.conn, _claim_lease_statement(seen_lease_until is not None), params) == 1


def _update_chain(payment_id: int, expected: PaymentStatus, values: dict[str, Any],
                  then: Sequence[tuple[st.Statement, dict[str, Any]]]) -> list[tuple[st.Statement, dict[str, Any]]]:
    """update_if_status's conditional UPDATE followed by the rows that record it."""
    params = _column_values(values)
    stmt = _update_if_status_statement(frozenset(params))
    params.update(where_id=payment_id, where_status=int(expected))
    return [(stmt, params), *then]


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
