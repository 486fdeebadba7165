"""Bugs mutmut cannot plant, planted by hand (`make mutate` checks the tests catch each).

mutmut mutates inside functions only; these live in module-level tables and statements, or
need more than one token changed. Loaded as a pytest plugin (-p tests.mutation.planted) with
PLANTED_BUG set to one of BUGS; each replaces one public piece of behaviour with the bug."""

from __future__ import annotations

import functools
import os

import sqlalchemy as sa

from payments_svc.auth import keys
from payments_svc.auth.caller import Caller, parse_acts_for
from payments_svc.db import statements as st
from payments_svc.db.tables import api_keys, payments
from payments_svc.domain import transitions
from payments_svc.domain.enums import PaymentStatus
from payments_svc.repository import payments as payment_repository


async def _find_active_by_prefix(self, api_key: str) -> Caller | None:
    """Issue 18's first survivor: keys looked up by the 12-character prefix `keys list` shows."""
    row = (await self.conn.execute(sa.select(api_keys.c.service_name, api_keys.c.acts_for).where(
        api_keys.c.key_prefix == api_key[:12], api_keys.c.revoked_at.is_(None)))).first()
    return Caller(row.service_name, parse_acts_for(row.acts_for)) if row else None


def _update_statement_without_status(columns: frozenset[str]) -> st.Statement:
    """Issue 18's second survivor: the status-change UPDATE without its `status = expected`."""
    return st.Statement(payments.update().where(payments.c.id == sa.bindparam("where_id"))
                        .values({name: sa.bindparam(name, type_=payments.c[name].type) for name in columns}))


def _paid_can_be_canceled() -> None:
    """The transition table letting a paid payment be canceled (a terminal status reopened)."""
    table = dict(transitions.ALLOWED_TRANSITIONS)
    table[PaymentStatus.PAID] = frozenset({PaymentStatus.CANCELED})
    transitions.ALLOWED_TRANSITIONS = table


# bug -> (how to plant it, the tests that must then fail)
BUGS = {
    "key-by-prefix": (lambda: setattr(keys.ApiKeyRepository, "find_active", _find_active_by_prefix),
                      ["tests/integration/test_api_keys.py"]),
    "update-without-status": (lambda: setattr(payment_repository, "_update_if_status_statement",
                                              functools.cache(_update_statement_without_status)),
                              ["tests/integration/test_payment_service.py", "-k", "in_flight_wins"]),
    "paid-cancelable": (_paid_can_be_canceled, ["tests/unit/test_transitions.py"]),
}


def pytest_configure(config):
    bug = os.environ.get("PLANTED_BUG")
    if bug:
        BUGS[bug][0]()
