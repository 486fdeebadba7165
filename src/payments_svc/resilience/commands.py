"""`payments-svc keys limits` (quotas per caller service). Imported by cli.py: nothing
heavy at module level."""

from __future__ import annotations

import dataclasses

import click

from ..cli_settings import command_settings, run_command

LIMIT_OPTIONS = (
    ("create_rps", "--create-rps", click.FloatRange(min=0), "create-class requests per second (0: unlimited)"),
    ("create_burst", "--create-burst", click.IntRange(min=0), "create-class requests at once after a quiet spell"),
    ("read_rps", "--read-rps", click.FloatRange(min=0), "read-class requests per second (0: unlimited)"),
    ("read_burst", "--read-burst", click.IntRange(min=0), "read-class requests at once after a quiet spell"),
    ("max_open_payments", "--max-open-payments", click.IntRange(min=0),
     "open (CREATED or PENDING) payments the service may have at once (0: unlimited)"),
)


def _describe(limits) -> str:
    def bucket(rpc_class: str) -> str:
        rate, burst = limits.bucket(rpc_class)
        return f"{rpc_class}=unlimited" if not rate else f"{rpc_class}={rate:g}/s burst {burst}"

    cap = limits.max_open_payments or "unlimited"
    return f"{bucket('create')}\t{bucket('read')}\topen-payments={cap}"


def _limit_options(command):
    for column, flag, kind, text in reversed(LIMIT_OPTIONS):
        command = click.option(flag, column, type=kind, default=None, help=text)(command)
    return command


@click.command("limits")
@click.option("--service", "service_name", default=None, help="The caller service (the API key's service).")
@_limit_options
@click.option("--reset", is_flag=True, help="Drop the service's own limits: the configured default applies again.")
def keys_limits(service_name: str | None, reset: bool, **values: float | int | None) -> None:
    """Show or set a caller service's quotas (429 / RESOURCE_EXHAUSTED over them).

    Without options: every service's limits and the configured default (PAYMENTS_QUOTA_*).
    Options given change only those limits; every server applies them within
    PAYMENTS_QUOTA_REFRESH_SECONDS. Create class: CreatePayment, CancelPayment,
    RefundPayment, ReplayCallback (POSTs); read class: the rest but Health and webhooks."""
    changes = {k: v for k, v in values.items() if v is not None}
    if service_name is not None:
        service_name = service_name.strip()
        if not service_name or len(service_name) > 128:
            raise click.BadParameter("must be 1..128 characters", param_hint="--service")
    if (changes or reset) and service_name is None:
        raise click.UsageError("--service is required to set or reset limits")
    if changes and reset:
        raise click.UsageError("--reset drops every limit of the service; give it alone")
    settings = command_settings()
    from ..cli import _with_database
    from ..repository.caller_limits import CallerLimitsRepository

    default = settings.resilience.default_limits

    async def action(database):
        if changes or reset:
            async with database.transaction() as conn:
                repo = CallerLimitsRepository(conn)
                if reset:
                    await repo.delete(service_name)
                else:
                    await repo.set(service_name, changes)
        async with database.read() as conn:
            return await CallerLimitsRepository(conn).all()

    rows = run_command(settings, _with_database(settings, action))
    own = {r.service_name: r for r in rows}
    if service_name is not None:
        row = own.get(service_name)
        limits = dataclasses.replace(default, **row.values) if row else default
        origin = "its own limits" if row else "the configured default"
        click.echo(f"{service_name}\t{_describe(limits)}\t({origin})")
        return
    click.echo(f"(default)\t{_describe(default)}")
    for row in rows:
        click.echo(f"{row.service_name}\t{_describe(dataclasses.replace(default, **row.values))}")


@click.group()
def providers() -> None:
    """How creates are routed to the providers."""


@providers.command("routes")
def providers_routes() -> None:
    """List the routing rules (PAYMENTS_ROUTING_RULES) in the order they are tried.

    A create naming no provider goes by the first rule that matches, to its first provider
    whose circuit is closed; with no rule matching, to the default provider."""
    settings = command_settings()
    from ..config import ConfigError
    from ..container import build_providers

    try:
        registry = build_providers(settings)  # checks the rules against the enabled providers
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    for rule in settings.resilience.routing_rules:
        click.echo(rule.describe())
    click.echo(f"(otherwise)\t(any)\t-> {registry.default.code} (the default provider)")
