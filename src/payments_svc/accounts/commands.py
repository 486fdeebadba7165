"""`payments-svc accounts`: provider accounts per caller service.

Secrets are read from files (or stdin, as `-`), never from the command line, where
they would stay in the shell history and show in the process list. Nothing here prints a
secret."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..cli_settings import command_settings, run_command


def _read_secret(path: str | None, option: str) -> str | None:
    if path is None:
        return None
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise click.BadParameter(f"cannot read {path}: {exc.strerror}", param_hint=option) from None
    if not text.strip():
        raise click.BadParameter(f"{'stdin' if path == '-' else path} is empty", param_hint=option)
    return text.strip()


def _run(action, settings=None, audit=None):
    """Runs `action(store)` on the migrated database; a credentials or keys problem is one line.
    `audit(result)`: the audit entry (action, target type, target id, detail) of a change, or None."""
    settings = settings or command_settings()
    from ..cli import _with_database
    from ..operator_commands import record_operator_action
    from .credentials import CredentialsError
    from .encryption import UndecryptableError
    from .store import AccountKeysMissing, AccountStore

    async def with_store(database):
        result = await action(AccountStore(database, settings.encryption_keys))
        entry = audit(result) if audit is not None else None
        if entry is not None:
            await record_operator_action(database, *entry)
        return result

    try:
        return run_command(settings, _with_database(settings, with_store))
    except (CredentialsError, AccountKeysMissing, UndecryptableError) as exc:
        raise click.ClickException(str(exc)) from None


@click.group()
def accounts() -> None:
    """Caller services' own provider accounts.

    A caller service's own Stripe or VNPay credentials, stored encrypted with
    PAYMENTS_ENCRYPTION_KEYS. Changes reach running processes within
    PAYMENTS_ACCOUNT_CACHE_SECONDS."""


@accounts.command("add")
@click.option("--caller", "caller_service", required=True, help="The caller service whose payments use the account.")
@click.option("--provider", type=click.Choice(["stripe", "vnpay"]), required=True)
@click.option("--secret-key-file", required=True, metavar="PATH",
              help="File (or - for stdin) holding the Stripe secret key (sk_/rk_) or the VNPay hash secret.")
@click.option("--webhook-secret-file", metavar="PATH",
              help="Stripe: file (or -) holding the webhook endpoint's signing secret(s), whsec_..., one per line "
                   "while it is rolled.")
@click.option("--tmn-code", help="VNPay: the terminal code (vnp_TmnCode).")
@click.option("--api-base", help="Stripe: the API base URL (default https://api.stripe.com); VNPay: the API URL "
                                 "(default VNPay's sandbox).")
@click.option("--payment-url", help="VNPay: the payment page URL (default VNPay's sandbox).")
def accounts_add(caller_service: str, provider: str, secret_key_file: str, webhook_secret_file: str | None,
                 tmn_code: str | None, api_base: str | None, payment_url: str | None) -> None:
    """Add an account; from now on (within the cache TTL) the caller's new payments at
    this provider use it. Prints its id, and the Stripe webhook URL to register."""
    from ..domain.enums import ProviderType
    from .credentials import account_settings, split_secrets

    caller_service = caller_service.strip()
    if not caller_service or len(caller_service) > 128:
        raise click.BadParameter("must be 1..128 characters", param_hint="--caller")
    if secret_key_file == "-" and webhook_secret_file == "-":
        raise click.UsageError("only one of the secret files can be stdin")
    provider_type = ProviderType[provider.upper()]
    settings = command_settings()
    secret_key = _read_secret(secret_key_file, "--secret-key-file")
    webhook = _read_secret(webhook_secret_file, "--webhook-secret-file")

    async def action(store):
        options = account_settings(provider_type, api_base=api_base, tmn_code=tmn_code, payment_url=payment_url)
        return await store.add(caller_service, provider_type, options, secret_key, split_secrets(webhook or ""))

    def audit(result):
        added, replaced = result
        return ("provider_account.added", "provider_account", added, f"{provider} for caller service {caller_service}"
                + (f"; replaces account {replaced} for new payments" if replaced is not None else ""))

    account_id, replaced = _run(action, settings, audit)
    click.echo(f"added provider account {account_id}: {provider} for caller service {caller_service}")
    if replaced is not None:
        click.echo(f"it replaces account {replaced} for the caller's new payments; account {replaced} keeps serving "
                   "the payments made with it until you disable it", err=True)
    click.echo(f"register this webhook URL at {'Stripe' if provider == 'stripe' else 'VNPay (IPN URL)'}: "
               f"{settings.public_base_url}/webhooks/{provider}/{account_id}")


@accounts.command("list")
def accounts_list() -> None:
    """List accounts (never their secrets)."""

    async def action(store):
        return await store.summaries()

    for a in _run(action):
        settings = " ".join(f"{k}={v}" for k, v in sorted(a.settings.items()))
        webhook = f"\twebhook-secrets={a.webhook_secrets}" if a.provider.code == "stripe" else ""
        click.echo(f"{a.id}\t{a.caller_service}\t{a.provider.code}\t{'enabled' if a.enabled else 'disabled'}\t"
                   f"{settings}\tencrypted-with={','.join(a.key_ids)}{webhook}")


@accounts.command("disable")
@click.argument("account_id", type=int)
def accounts_disable(account_id: int) -> None:
    """Stop using an account: the caller's new payments go to its other enabled account
    at the provider, else the default account; operations and webhooks of the payments
    made with it are refused. Takes effect within PAYMENTS_ACCOUNT_CACHE_SECONDS."""

    async def action(store):
        return await store.disable(account_id)

    if not _run(action, audit=lambda disabled: ("provider_account.disabled", "provider_account", account_id, "")
                if disabled else None):
        raise click.ClickException(f"no enabled provider account with id {account_id}")
    click.echo(f"disabled provider account {account_id}")


@accounts.command("rotate-secret")
@click.argument("account_id", type=int)
@click.option("--secret-key-file", metavar="PATH", help="File (or -) holding the new secret key / hash secret.")
@click.option("--webhook-secret-file", metavar="PATH",
              help="Stripe: file (or -) holding the signing secret(s) to accept from now on, one per line "
                   "(the old and the new one while Stripe rolls the endpoint's secret).")
def accounts_rotate_secret(account_id: int, secret_key_file: str | None, webhook_secret_file: str | None) -> None:
    """Replace an account's secret key and/or webhook secrets (within the cache TTL)."""
    from .credentials import split_secrets

    if secret_key_file == "-" and webhook_secret_file == "-":
        raise click.UsageError("only one of the secret files can be stdin")
    secret_key = _read_secret(secret_key_file, "--secret-key-file")
    webhook = _read_secret(webhook_secret_file, "--webhook-secret-file")

    async def action(store):
        return await store.rotate(account_id, secret_key, split_secrets(webhook) if webhook is not None else None)

    changed = " and ".join(n for n, v in (("secret key", secret_key), ("webhook secrets", webhook)) if v is not None)
    row = _run(action, audit=lambda rotated: ("provider_account.rotated", "provider_account", rotated.id,
                                              f"replaced the {changed}"))
    click.echo(f"replaced the {changed} of provider account {row.id} ({row.provider.code}, {row.caller_service})")


@accounts.command("reencrypt")
def accounts_reencrypt() -> None:
    """Re-encrypt every account's secrets with the first key of PAYMENTS_ENCRYPTION_KEYS,
    after putting a new key first. Then the old key can be removed from the variable."""

    async def action(store):
        return await store.reencrypt(), store.keys("").current

    def audit(result):
        (moved, _), current = result
        return ("provider_accounts.reencrypted", "provider_account", "*", f"{moved} re-encrypted with key {current}")

    (moved, kept), current = _run(action, audit=audit)
    click.echo(f"re-encrypted {moved} provider account(s) with key {current}; {kept} already were")
