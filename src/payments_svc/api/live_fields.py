"""The live-status and operator messages as wire fields (proto field names, enums as
numbers), shared by the gRPC messages and the HTTP JSON, as payment_fields is."""

from __future__ import annotations

from typing import Any

from ..clock import rfc3339
from ..repository.audit import AuditEntry
from ..service.dead_callbacks import DeliveryRecord
from ..service.stats import PaymentStats
from ..service.system_status import SystemStatus
from ..service.verify import VerifyResult
from ..service.watch import Update
from .payment_fields import delivery_fields, event_fields, payment_fields


def update_fields(update: Update) -> dict[str, Any]:
    fields: dict[str, Any] = {"final": update.final, "ended_reason": update.ended_reason,
                              "after_event_id": update.after_event_id}
    if update.payment is not None:
        fields["payment"] = payment_fields(update.payment)
    if update.event is not None:
        fields["event"] = event_fields(update.event)
    return fields


def verify_fields(result: VerifyResult) -> dict[str, Any]:
    return {"payment": payment_fields(result.payment), "provider_status": result.provider_status,
            "changed": result.changed, "old_status": int(result.old_status)}


def delivery_record_fields(record: DeliveryRecord) -> dict[str, Any]:
    d = record.delivery
    return {"id": d.id, "payment_id": d.payment_id, "caller_service": d.caller_service, "delivery": delivery_fields(d),
            "created_at": rfc3339(d.created_at), "updated_at": rfc3339(record.updated_at)}


def stats_fields(stats: PaymentStats) -> dict[str, Any]:
    return {
        "caller_service": stats.caller_service,
        "customer_ref": stats.customer_ref,
        "since": rfc3339(stats.since),
        "until": rfc3339(stats.until),
        "by_status": [{"status": int(g.status), "currency": g.currency, "count": g.count,
                       "amount_cents": g.amount_cents, "refunded_cents": g.refunded_cents} for g in stats.by_status],
        "created": stats.created,
        "paid": stats.paid,
        "conversion": stats.conversion,
        "refunded_cents_by_currency": stats.refunded_cents_by_currency,
    }


def status_fields(status: SystemStatus) -> dict[str, Any]:
    return {
        "workers": [{"name": w.name, "last_success_at": rfc3339(w.last_success_at),
                     "seconds_since_success": round(w.seconds_since_success, 3), "backlog": w.backlog,
                     "healthy": not w.problem, "problem": w.problem} for w in status.workers],
        "stellar_cursors": [{"account": c.account, "paging_token": c.paging_token, "cursor_ledger": c.cursor_ledger,
                             "latest_ledger": c.latest_ledger, "ledgers_behind": c.ledgers_behind,
                             "seconds_behind": c.seconds_behind, "problem": c.problem} for c in status.stellar_cursors],
        "dead_callbacks": status.dead_callbacks,
        "watchers": status.watchers,
    }


def audit_fields(entry: AuditEntry) -> dict[str, Any]:
    return {"id": entry.id, "occurred_at": rfc3339(entry.occurred_at), "actor_service": entry.actor_service,
            "actor_key_id": entry.actor_key_id, "action": entry.action, "target_type": entry.target_type,
            "target_id": entry.target_id, "request_id": entry.request_id, "detail": entry.detail}
