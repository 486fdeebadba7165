"""Dead callbacks (dead-letter visibility): status callbacks that exhausted their
retries are listed per caller, counted in metrics, and sent again in bulk once the
caller has fixed its endpoint (one by one: ReplayCallback)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from .. import metrics
from ..auth.caller import Caller
from ..clock import utcnow
from ..db.engine import Database
from ..domain.enums import DeliveryStatus
from ..domain.errors import PermissionDeniedError, ValidationError
from ..domain.time_range import check_order
from ..repository.dead_callbacks import DeadCallbackRepository
from ..repository.deliveries import CallbackDelivery
from . import audit

MAX_PAGE = 500
MAX_REQUEUE = 10_000  # per command run: a larger backlog is requeued by running it again


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    delivery: CallbackDelivery
    updated_at: datetime


async def list_deliveries(db: Database, caller: Caller, *, caller_service: str, status: int, since: datetime | None,
                          until: datetime | None, before_id: int, limit: int) -> list[DeliveryRecord]:
    """A caller's key sees its own deliveries (and those of the services it acts for)."""
    if caller_service:
        if not caller.may_act_for(caller_service):
            raise PermissionDeniedError(f"this api key may not read callbacks of caller_service {caller_service!r}",
                                        field="caller_service")
        callers: frozenset[str] | None = frozenset({caller_service})
    else:
        callers = caller.visible_callers()
    if status and status not in DeliveryStatus._value2member_map_:
        raise ValidationError("invalid status", field="status")
    limit = limit or 100
    if not 1 <= limit <= MAX_PAGE:
        raise ValidationError(f"limit must be between 1 and {MAX_PAGE}", field="limit")
    check_order(since, until)
    async with db.read() as conn:
        rows = await DeadCallbackRepository(conn).list(
            callers=callers, status=DeliveryStatus(status) if status else None, since=since, until=until,
            before_id=before_id, limit=limit)
    return [DeliveryRecord(delivery, updated_at) for delivery, updated_at in rows]


async def requeue(db: Database, actor: Caller, caller_service: str, *, since: datetime | None) -> list[tuple[int, str]]:
    """Sends a caller's dead callbacks again (`payments-svc callbacks requeue`)."""
    if not caller_service:
        raise ValidationError("the caller service is required", field="caller")
    async with db.transaction() as conn:
        requeued = await DeadCallbackRepository(conn).requeue(caller_service, since=since, now=utcnow(), limit=MAX_REQUEUE)
    if requeued:
        await audit.record(db, actor, audit.CALLBACKS_REQUEUED, "caller_service", caller_service,
                           f"{len(requeued)} dead callback(s) requeued" + (f" (died since {since:%Y-%m-%dT%H:%M:%SZ})"
                                                                           if since else ""))
    await refresh_dead_metric(db)
    return requeued


async def refresh_dead_metric(db: Database) -> int:
    async with db.read() as conn:
        dead = await DeadCallbackRepository(conn).count_dead()
    metrics.DEAD_CALLBACKS.set(dead)
    return dead
