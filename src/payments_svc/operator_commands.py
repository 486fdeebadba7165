"""Operator commands of issue 15: `callbacks dead`, `callbacks requeue` (dead-letter
handling) and `audit list`. Like the other commands, only click is imported up front."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import click

from .cli_settings import command_settings, run_command

if TYPE_CHECKING:
    from .db.engine import Database


async def _on_database(settings, action):
    from .container import check_schema
    from .db.engine import open_database

    db = open_database(settings)
    try:
        await check_schema(db)
        return await action(db)
    finally:
        await db.close()


def _moment(option: str, raw: str | None):
    from .domain.errors import ValidationError
    from .domain.time_range import parse_moment

    try:
        return parse_moment(option, raw or "")
    except ValidationError as exc:
        raise click.BadParameter(exc.message, param_hint=option) from None


@click.command("dead")
@click.option("--caller", "caller_service", default="", help="Only this caller service's callbacks.")
@click.option("--since", help="Only those that died at or after this time (RFC 3339, or a date).")
@click.option("--limit", type=click.IntRange(1, 500), default=100, show_default=True)
def callbacks_dead(caller_service: str, since: str | None, limit: int) -> None:
    """List dead status callbacks (their retries exhausted), newest first, one JSON object a line."""
    settings = command_settings()
    since_at = _moment("--since", since)

    async def action(database: Database):
        from .api.live_fields import delivery_record_fields
        from .auth.caller import Caller
        from .domain.enums import DeliveryStatus
        from .service.dead_callbacks import list_deliveries

        everyone = Caller("cli", frozenset({"*"}))
        records = await list_deliveries(database, everyone, caller_service=caller_service.strip(),
                                        status=int(DeliveryStatus.FAILED), since=since_at, until=None, before_id=0,
                                        limit=limit)
        for record in records:
            click.echo(json.dumps(delivery_record_fields(record)))

    run_command(settings, _on_database(settings, action))


@click.command("requeue")
@click.option("--caller", "caller_service", required=True, help="The caller service whose endpoint works again.")
@click.option("--since", help="Only callbacks that died at or after this time (RFC 3339, or a date); default: all.")
def callbacks_requeue(caller_service: str, since: str | None) -> None:
    """Send a caller's dead status callbacks again, each as a new delivery (new webhook-id,
    a full retry budget); the dead ones become REQUEUED. Recorded in the audit trail."""
    settings = command_settings()
    since_at = _moment("--since", since)

    async def action(database: Database):
        from .service.audit import operator
        from .service.dead_callbacks import requeue

        return await requeue(database, operator(), caller_service.strip(), since=since_at)

    requeued = run_command(settings, _on_database(settings, action))
    for old_id, delivery_id in requeued:
        click.echo(f"{old_id}\t{delivery_id}")
    click.echo(f"requeued {len(requeued)} dead callback(s) of {caller_service.strip()}", err=True)


@click.group()
def audit() -> None:
    """The audit trail: who changed what outside the normal flow."""


@audit.command("list")
@click.option("--action", default="", help="e.g. key.created, payment.refunded, callbacks.requeued.")
@click.option("--target-type", default="", help="payment, caller_service, api_key, ...")
@click.option("--target-id", default="")
@click.option("--limit", type=click.IntRange(1, 500), default=100, show_default=True)
def audit_list(action: str, target_type: str, target_id: str, limit: int) -> None:
    """Newest first, one JSON object a line."""
    settings = command_settings()

    async def action_(database: Database):
        from .api.live_fields import audit_fields
        from .auth.caller import Caller
        from .service.audit import list_entries

        entries = await list_entries(database, Caller("cli", frozenset({"*"})), action=action.strip(),
                                     target_type=target_type.strip(), target_id=target_id.strip(), limit=limit)
        for entry in entries:
            click.echo(json.dumps(audit_fields(entry)))

    run_command(settings, _on_database(settings, action_))


async def record_operator_action(database: Database, action: str, target_type: str, target_id: object, detail: str = "") -> None:
    """For the key and signing-secret commands of cli.py."""
    from .service.audit import operator, record

    await record(database, operator(), action, target_type, target_id, detail)
