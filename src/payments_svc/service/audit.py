"""The audit trail: who (the key's service and id, or an operator at the command line)
did what, when and under which request id, for every action that changes state
outside the normal flow. Recorded after the action succeeded; read by ListAuditEntries
(admin keys) and `payments-svc audit list`."""

from __future__ import annotations

import getpass
import socket

import structlog

from ..auth.caller import Caller
from ..clock import utcnow
from ..db.engine import Database
from ..domain.errors import PermissionDeniedError, ValidationError
from ..repository.audit import AuditEntry, AuditRepository

log = structlog.get_logger("payments.audit")

MAX_PAGE = 500

# The actions recorded (AuditEntry.action).
KEY_CREATED = "key.created"
KEY_REVOKED = "key.revoked"
SIGNING_SECRET_ROTATED = "signing_secret.rotated"
CALLBACK_REPLAYED = "callback.replayed"
CALLBACKS_REQUEUED = "callbacks.requeued"
PAYMENT_REFUNDED = "payment.refunded"
PAYMENT_CANCELED = "payment.canceled"
PAYMENT_VERIFIED = "payment.verified"


def operator() -> Caller:
    """The actor of a command-line action: who ran it, where."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (a container's arbitrary uid)
        user = "unknown"
    return Caller("cli", key_id=f"{user}@{socket.gethostname()}"[:64])


def current_request_id() -> str:
    """The request id the adapters bound for this request's logs; empty outside a request."""
    return str(structlog.contextvars.get_contextvars().get("request_id", ""))


async def record(db: Database, actor: Caller, action: str, target_type: str, target_id: object, detail: str = "") -> None:
    """Appends one entry. A failure to record is logged, never undoes the action it records
    (the action has happened; the log line carries the same facts)."""
    try:
        async with db.transaction() as conn:
            await AuditRepository(conn).add(
                occurred_at=utcnow(), actor_service=actor.service_name, actor_key_id=actor.key_id, action=action,
                target_type=target_type, target_id=str(target_id), request_id=current_request_id(), detail=detail,
            )
    except Exception as exc:
        log.error("audit_record_failed", action=action, target_type=target_type, target_id=str(target_id),
                  actor=actor.service_name, key_id=actor.key_id, detail=detail, error=f"{type(exc).__name__}: {exc}")


async def list_entries(db: Database, caller: Caller, *, action: str = "", target_type: str = "", target_id: str = "",
                       before_id: int = 0, limit: int = 0) -> list[AuditEntry]:
    if not caller.is_admin:
        raise PermissionDeniedError("the audit trail is for operators: use a key that acts for every caller (--acts-for '*')")
    limit = limit or 100
    if not 1 <= limit <= MAX_PAGE:
        raise ValidationError(f"limit must be between 1 and {MAX_PAGE}", field="limit")
    if before_id < 0:
        raise ValidationError("before_id must be >= 0", field="before_id")
    async with db.read() as conn:
        return await AuditRepository(conn).list(action=action, target_type=target_type, target_id=target_id,
                                                before_id=before_id, limit=limit)
