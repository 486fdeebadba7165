"""STRIPE_* settings, with the reference's variable names. Parsed when the settings
load, so a Stripe that is enabled but misconfigured stops `serve` at start-up with a
message naming the variable (load_settings turns the ValueError into a ConfigError).
Secret values never appear in a message or a repr."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from ...env_values import env_value

DEFAULT_API_BASE = "https://api.stripe.com"


@dataclass(frozen=True, slots=True)
class StripeSettings:
    secret_key: str = field(repr=False)
    webhook_secrets: tuple[str, ...] = field(repr=False)  # several while a secret is rotated
    api_base: str = DEFAULT_API_BASE
    signature_tolerance_seconds: int = 300
    http_timeout_seconds: float = 10.0
    max_network_retries: int = 2  # safe: every POST carries an idempotency key
    account_id: int | None = None  # a caller's provider account; None: the environment's (default) account

    @property
    def secret_key_name(self) -> str:
        """How messages name the secret key (never its value)."""
        return "the service's STRIPE_SECRET_KEY" if self.account_id is None else f"the secret key of provider account {self.account_id}"

    @property
    def webhook_secret_name(self) -> str:
        return "a STRIPE_WEBHOOK_SECRET" if self.account_id is None else \
            f"a webhook secret of provider account {self.account_id}"


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env_value(env, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return value


def stripe_settings_from_env(env: Mapping[str, str]) -> StripeSettings | None:
    """None when STRIPE_SECRET_KEY is unset (Stripe disabled)."""
    secret_key = env_value(env, "STRIPE_SECRET_KEY")
    raw_secrets = env_value(env, "STRIPE_WEBHOOK_SECRET")
    if secret_key is None:
        if raw_secrets is not None:
            raise ValueError("STRIPE_WEBHOOK_SECRET is set but STRIPE_SECRET_KEY is not: set both to enable Stripe")
        return None
    if secret_key.startswith("pk_"):
        raise ValueError("STRIPE_SECRET_KEY holds a publishable key (pk_...); use the secret key (sk_...) or a restricted key (rk_...)")
    if not secret_key.startswith(("sk_", "rk_")):
        raise ValueError("STRIPE_SECRET_KEY must be a Stripe secret key (sk_...) or restricted key (rk_...)")
    if raw_secrets is None:
        raise ValueError(
            "STRIPE_WEBHOOK_SECRET is required when STRIPE_SECRET_KEY is set: the signing secret (whsec_...) "
            "of the webhook endpoint; several, comma-separated, while rotating"
        )
    webhook_secrets = tuple(s.strip() for s in raw_secrets.split(",") if s.strip())
    for position, secret in enumerate(webhook_secrets, 1):
        if not secret.startswith("whsec_"):
            raise ValueError(f"STRIPE_WEBHOOK_SECRET: secret #{position} does not start with whsec_")
    api_base = (env_value(env, "STRIPE_API_BASE") or DEFAULT_API_BASE).rstrip("/")
    parts = urlsplit(api_base)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"STRIPE_API_BASE must be an absolute http(s) URL, got {api_base!r}")
    return StripeSettings(
        secret_key=secret_key,
        webhook_secrets=webhook_secrets,
        api_base=api_base,
        signature_tolerance_seconds=_positive_int(env, "STRIPE_SIGNATURE_TOLERANCE_SECONDS", 300),
        http_timeout_seconds=float(_positive_int(env, "STRIPE_HTTP_TIMEOUT_SECONDS", 10)),
    )
