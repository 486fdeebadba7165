"""The audit trail in-process, exact values: who a command-line operator is, the request
id an entry carries, every column an entry is recorded with (cut to the column sizes), a
failure to record logged and never raised, and the listing's filters, order, page size
and refusals (ListAuditEntries and `audit list` read it through list_entries)."""

from __future__ import annotations

import getpass
import socket
from contextlib import asynccontextmanager
from datetime import datetime
from types import SimpleNamespace

import pytest
import structlog

from payments_svc.auth.caller import Caller
from payments_svc.db.tables import audit_log
from payments_svc.domain.errors import PermissionDeniedError, ValidationError
from payments_svc.repository.audit import AuditEntry, AuditRepository
from payments_svc.service import audit

SHOP = Caller("shop", key_id="7")
ADMIN = Caller("ops", frozenset({"*"}), key_id="1")
AT = datetime(2026, 5, 6, 7, 8, 9, 654321)
NOT_FOR_YOU = "the audit trail is for operators: use a key that acts for every caller (--acts-for '*')"


@pytest.fixture(autouse=True)
def no_request_bound():
    """No request id left bound by another test (record reads structlog's contextvars)."""
    structlog.contextvars.clear_contextvars()
    yield
    structlog.contextvars.clear_contextvars()


@pytest.fixture
def logged(monkeypatch):
    calls = []
    monkeypatch.setattr(audit, "log", SimpleNamespace(error=lambda event, **fields: calls.append((event, fields))))
    return calls


async def entries(db, **filters) -> list[AuditEntry]:
    async with db.read() as conn:
        return await AuditRepository(conn).list(**filters)


async def add(db, action: str, target_type: str, target_id: str, **columns) -> AuditEntry:
    values = dict(occurred_at=AT, actor_service="shop", actor_key_id="7", action=action, target_type=target_type,
                  target_id=target_id, request_id="req-1", detail="")
    values.update(columns)
    async with db.transaction() as conn:
        await AuditRepository(conn).add(**values)
    [entry] = await entries(db, limit=1)
    assert entry == AuditEntry(entry.id, **values)
    return entry


@pytest.fixture
async def trail(container):
    """Six entries, oldest first."""
    db = container.db
    return [
        await add(db, "key.created", "api_key", "1"),
        await add(db, "payment.canceled", "payment", "42"),
        await add(db, "payment.refunded", "payment", "42"),
        await add(db, "payment.canceled", "payment", "43"),
        await add(db, "callback.replayed", "payment", "42"),
        await add(db, "key.revoked", "api_key", "42"),
    ]


# --- the actor and the request id ----------------------------------------------------------


def test_a_command_line_operator_is_the_user_at_this_host(monkeypatch):
    monkeypatch.setattr(getpass, "getuser", lambda: "alice")
    monkeypatch.setattr(socket, "gethostname", lambda: "build-7")
    assert audit.operator() == Caller("cli", frozenset(), key_id="alice@build-7")
    monkeypatch.setattr(getpass, "getuser", lambda: "u" * 70)
    assert audit.operator() == Caller("cli", key_id="u" * 64)  # the column holds 64


@pytest.mark.parametrize("error", [KeyError("uid 1234"), OSError("no login")])
def test_an_operator_without_a_user_name_is_unknown(monkeypatch, error):
    def getuser():
        raise error

    monkeypatch.setattr(getpass, "getuser", getuser)
    monkeypatch.setattr(socket, "gethostname", lambda: "build-7")
    assert audit.operator() == Caller("cli", key_id="unknown@build-7")


def test_the_request_id_is_the_one_bound_for_the_requests_logs():
    assert audit.current_request_id() == ""
    with structlog.contextvars.bound_contextvars(request_id="req-9"):
        assert audit.current_request_id() == "req-9"
    with structlog.contextvars.bound_contextvars(request_id=5):
        assert audit.current_request_id() == "5"


# --- record ----------------------------------------------------------------------------------


async def test_record_writes_who_did_what_when_and_under_which_request(container, monkeypatch, logged):
    monkeypatch.setattr(audit, "utcnow", lambda: AT)
    db = container.db
    with structlog.contextvars.bound_contextvars(request_id="req-9"):
        await audit.record(db, SHOP, audit.PAYMENT_CANCELED, "payment", 42, "customer left")
    await audit.record(db, Caller("cli", key_id="alice@build-7"), audit.KEY_CREATED, "api_key", 3)
    newest, oldest = await entries(db)
    assert oldest == AuditEntry(oldest.id, AT, "shop", "7", "payment.canceled", "payment", "42", "req-9", "customer left")
    assert newest == AuditEntry(newest.id, AT, "cli", "alice@build-7", "key.created", "api_key", "3", "", "")
    assert newest.id > oldest.id
    assert logged == []


async def test_a_failure_to_record_is_logged_with_the_same_facts_and_never_raised(logged):
    class DatabaseAway:
        @asynccontextmanager
        async def transaction(self):
            raise RuntimeError("db down")
            yield

    await audit.record(DatabaseAway(), SHOP, audit.PAYMENT_REFUNDED, "payment", 42, "400 refunded")
    assert logged == [("audit_record_failed", dict(action="payment.refunded", target_type="payment", target_id="42",
                                                   actor="shop", key_id="7", detail="400 refunded",
                                                   error="RuntimeError: db down"))]


# --- AuditRepository ---------------------------------------------------------------------------


async def test_an_entry_keeps_every_column_cut_to_the_columns_size(container):
    db = container.db
    async with db.transaction() as conn:
        await AuditRepository(conn).add(
            occurred_at=AT, actor_service="s" * 130, actor_key_id="k" * 70, action="payment.verified",
            target_type="payment", target_id="i" * 300, request_id="r" * 300, detail="d" * 1100)
    [entry] = await entries(db)
    assert entry == AuditEntry(entry.id, AT, "s" * 128, "k" * 64, "payment.verified", "payment", "i" * 255, "r" * 255,
                               "d" * 1024)
    async with db.read() as conn:
        assert AuditRepository(conn).conn is conn
        assert (await conn.execute(audit_log.select())).all() == [
            (entry.id, AT, "s" * 128, "k" * 64, "payment.verified", "payment", "i" * 255, "r" * 255, "d" * 1024)]


async def test_the_trail_is_listed_newest_first_by_action_target_and_before_an_id(container, trail):
    db = container.db
    e1, e2, e3, e4, e5, e6 = trail
    assert [e.id for e in trail] == sorted({e.id for e in trail})
    assert await entries(db) == [e6, e5, e4, e3, e2, e1]
    assert await entries(db, action="payment.canceled") == [e4, e2]
    assert await entries(db, target_type="payment") == [e5, e4, e3, e2]
    assert await entries(db, target_id="42") == [e6, e5, e3, e2]
    assert await entries(db, target_type="payment", target_id="42") == [e5, e3, e2]
    assert await entries(db, before_id=e5.id) == [e4, e3, e2, e1]
    assert await entries(db, action="payment.canceled", before_id=e4.id) == [e2]
    assert await entries(db, limit=2) == [e6, e5]


async def test_a_page_holds_100_entries_unless_asked_for_up_to_500(container):
    db = container.db
    async with db.transaction() as conn:
        await conn.execute(audit_log.insert(), [
            dict(occurred_at=AT, actor_service="cli", actor_key_id="alice@build-7", action="key.created",
                 target_type="api_key", target_id=str(i), request_id="", detail="") for i in range(101)])
    everything = await entries(db, limit=500)
    assert [e.target_id for e in everything] == [str(i) for i in reversed(range(101))]
    assert await entries(db) == everything[:100]
    assert await audit.list_entries(db, ADMIN) == everything[:100]
    assert await audit.list_entries(db, ADMIN, limit=500) == everything
    assert await audit.list_entries(db, ADMIN, limit=1) == everything[:1]


# --- list_entries ---------------------------------------------------------------------------------


async def test_list_entries_passes_each_filter_on(container, trail):
    db = container.db
    e1, e2, e3, e4, e5, e6 = trail
    assert await audit.list_entries(db, ADMIN) == [e6, e5, e4, e3, e2, e1]
    assert await audit.list_entries(db, ADMIN, action="payment.canceled") == [e4, e2]
    assert await audit.list_entries(db, ADMIN, target_type="payment") == [e5, e4, e3, e2]
    assert await audit.list_entries(db, ADMIN, target_id="42") == [e6, e5, e3, e2]
    assert await audit.list_entries(db, ADMIN, before_id=e5.id) == [e4, e3, e2, e1]
    assert await audit.list_entries(db, ADMIN, before_id=0, limit=2) == [e6, e5]


async def test_list_entries_is_for_admin_keys_and_checks_its_page(container, trail):
    db = container.db
    for caller in (SHOP, Caller("gateway", frozenset({"shop", "other"}))):
        with pytest.raises(PermissionDeniedError) as refused:
            await audit.list_entries(db, caller)
        assert refused.value.message == NOT_FOR_YOU
    for limit in (501, -1):
        with pytest.raises(ValidationError) as refused:
            await audit.list_entries(db, ADMIN, limit=limit)
        assert (refused.value.message, refused.value.field) == ("limit must be between 1 and 500", "limit")
    with pytest.raises(ValidationError) as refused:
        await audit.list_entries(db, ADMIN, before_id=-1)
    assert (refused.value.message, refused.value.field) == ("before_id must be >= 0", "before_id")
