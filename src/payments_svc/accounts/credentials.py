"""What a provider account holds, per provider: which secrets it needs, what is checked
before they are stored, and the decrypted form handed to the provider. Only Stripe and
VNPay take accounts: the sandbox has no credentials and Stellar's receiving account is
the service's own."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ..domain.enums import ProviderType
from ..providers.stripe.settings import DEFAULT_API_BASE
from ..providers.vnpay.settings import SANDBOX_API_URL, SANDBOX_PAYMENT_URL, TMN_CODE

ACCOUNT_PROVIDERS = (ProviderType.STRIPE, ProviderType.VNPAY)


class CredentialsError(ValueError):
    """An account's credentials or settings are malformed; the message says which (never the value)."""


@dataclass(frozen=True, slots=True)
class AccountCredentials:
    """A provider account, decrypted: what the provider is built from."""

    id: int
    caller_service: str
    provider: ProviderType
    settings: dict[str, Any]
    secret_key: str = field(repr=False)
    webhook_secrets: tuple[str, ...] = field(repr=False, default=())


def split_secrets(text: str) -> tuple[str, ...]:
    """Several secrets in one file or value: comma- or line-separated (a Stripe endpoint's
    old and new signing secret while it is rolled)."""
    return tuple(s.strip() for s in text.replace("\n", ",").split(",") if s.strip())


def check_secrets(provider: ProviderType, secret_key: str | None, webhook_secrets: tuple[str, ...] | None) -> None:
    """The values given for an add or a rotation (None: not given)."""
    if provider == ProviderType.STRIPE:
        if secret_key is not None:
            if secret_key.startswith("pk_"):
                raise CredentialsError("the secret key file holds a publishable key (pk_...); use the secret key "
                                       "(sk_...) or a restricted key (rk_...)")
            if not secret_key.startswith(("sk_", "rk_")):
                raise CredentialsError("the secret key must be a Stripe secret key (sk_...) or restricted key (rk_...)")
        if webhook_secrets is not None:
            if not webhook_secrets:
                raise CredentialsError("Stripe needs the webhook endpoint's signing secret (whsec_...)")
            for position, secret in enumerate(webhook_secrets, 1):
                if not secret.startswith("whsec_"):
                    raise CredentialsError(f"webhook secret #{position} does not start with whsec_")
    elif provider == ProviderType.VNPAY:
        if webhook_secrets:
            raise CredentialsError("VNPay signs its IPNs with the hash secret: give no webhook secret")
        if secret_key is not None and not secret_key:
            raise CredentialsError("VNPay needs the terminal's hash secret (vnp_HashSecret)")


def account_settings(provider: ProviderType, *, api_base: str | None, tmn_code: str | None,
                     payment_url: str | None) -> dict[str, Any]:
    """The account's settings that are not secret, checked."""
    if provider == ProviderType.STRIPE:
        if tmn_code or payment_url:
            raise CredentialsError("--tmn-code and --payment-url are VNPay's")
        return {"api_base": _url("--api-base", api_base or DEFAULT_API_BASE).rstrip("/")}
    if provider == ProviderType.VNPAY:
        if tmn_code is None or not TMN_CODE.match(tmn_code):
            raise CredentialsError("--tmn-code must be the 8 letters and digits of the terminal VNPay issued")
        return {"tmn_code": tmn_code, "payment_url": _url("--payment-url", payment_url or SANDBOX_PAYMENT_URL),
                "api_url": _url("--api-base", api_base or SANDBOX_API_URL)}
    raise CredentialsError(f"{provider.code} takes no provider accounts (only {', '.join(p.code for p in ACCOUNT_PROVIDERS)})")


def _url(option: str, url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise CredentialsError(f"{option} must be an absolute http(s) URL without a query, got {url!r}")
    return url
