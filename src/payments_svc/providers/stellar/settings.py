"""STELLAR_* settings. Parsed when the settings load, so a bad account id or asset
spec stops every command at start-up; load_settings turns the ValueError raised
here into a ConfigError."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from ...env_values import env_value

PUBLIC_NETWORK_PASSPHRASE = "Public Global Stellar Network ; September 2015"
NATIVE_CODE = "XLM"
MAX_PAGING_TOKEN = 2**63 - 1  # Horizon parses paging tokens as int64 and refuses anything larger
_ASSET_CODE = re.compile(r"^[A-Za-z0-9]{1,12}$")
_PAGING_TOKEN = re.compile(r"^[0-9]{1,19}$")  # ASCII digits only: str.isdigit() also takes "²" and "١"


@dataclass(frozen=True, slots=True)
class StellarAsset:
    code: str
    issuer: str | None  # None: the native asset, XLM

    @property
    def is_native(self) -> bool:
        return self.issuer is None

    def __str__(self) -> str:
        return f"{self.code}:{self.issuer or 'native'}"


@dataclass(frozen=True, slots=True)
class StellarSettings:
    horizon_url: str
    network_passphrase: str
    receiving_account: str
    assets: tuple[StellarAsset, ...]
    start_cursor: str = "0"  # where a database without a stored cursor starts: a paging token or "now"
    silence_timeout_seconds: float = 90.0
    backoff_min_seconds: float = 5.0
    backoff_max_seconds: float = 300.0
    stall_limit_seconds: float | None = None  # the watcher's liveness limit; None: derived (feed.stall_seconds)

    def asset(self, currency: str) -> StellarAsset | None:
        """The accepted asset a payment's currency names. Case-insensitive, because
        currencies are upper-cased on the way in while Stellar codes are case-sensitive."""
        wanted = currency.upper()
        return next((a for a in self.assets if a.code.upper() == wanted), None)


def _required(env: Mapping[str, str], name: str) -> str:
    value = env_value(env, name)
    if value is None:
        raise ValueError(f"{name} is required when STELLAR_RECEIVING_ACCOUNT is set")
    return value


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env_value(env, name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number of seconds, got {raw!r}") from None
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {raw!r}")
    return value


def parse_assets(raw: str, is_account_id) -> tuple[StellarAsset, ...]:
    """`CODE:ISSUER` entries separated by commas; `XLM:native` is the native asset."""
    assets: list[StellarAsset] = []
    for entry in raw.split(","):
        code, sep, issuer = (part.strip() for part in entry.partition(":"))
        if not sep or not _ASSET_CODE.match(code):
            raise ValueError(f"STELLAR_ASSETS: {entry.strip()!r} is not CODE:ISSUER (code 1-12 letters or digits) or XLM:native")
        if issuer == "native":
            if code != NATIVE_CODE:
                raise ValueError(f"STELLAR_ASSETS: only XLM is native, got {entry.strip()!r}")
            asset = StellarAsset(code, None)
        elif code.upper() == NATIVE_CODE:
            raise ValueError(f"STELLAR_ASSETS: XLM is the native asset, write XLM:native (got {entry.strip()!r})")
        elif not is_account_id(issuer):
            raise ValueError(f"STELLAR_ASSETS: the issuer of {code} is not a Stellar account id (G...): {issuer!r}")
        else:
            asset = StellarAsset(code, issuer)
        if any(a.code.upper() == code.upper() for a in assets):
            raise ValueError(f"STELLAR_ASSETS: {code} is listed twice; a payment's currency must name one asset")
        assets.append(asset)
    return tuple(assets)


def is_paging_token(text: str) -> bool:
    return bool(_PAGING_TOKEN.match(text)) and int(text) <= MAX_PAGING_TOKEN


def stellar_settings_from_env(env: Mapping[str, str]) -> StellarSettings | None:
    """None when STELLAR_RECEIVING_ACCOUNT is unset: the provider is disabled."""
    account = env_value(env, "STELLAR_RECEIVING_ACCOUNT")
    if account is None:
        return None
    from stellar_sdk import StrKey  # slow to import: only when Stellar is configured

    if not StrKey.is_valid_ed25519_public_key(account):
        raise ValueError(f"STELLAR_RECEIVING_ACCOUNT must be a Stellar account id (G..., 56 characters), got {account!r}")
    horizon_url = _required(env, "STELLAR_HORIZON_URL").rstrip("/")
    parts = urlsplit(horizon_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"STELLAR_HORIZON_URL must be an http or https URL, got {horizon_url!r}")
    start_cursor = env_value(env, "STELLAR_START_CURSOR") or "0"
    if start_cursor != "now" and not is_paging_token(start_cursor):
        raise ValueError(
            f"STELLAR_START_CURSOR must be a paging token (0 to {MAX_PAGING_TOKEN}) or now, got {start_cursor!r}"
        )
    settings = StellarSettings(
        horizon_url=horizon_url,
        network_passphrase=_required(env, "STELLAR_NETWORK_PASSPHRASE"),
        receiving_account=account,
        assets=parse_assets(_required(env, "STELLAR_ASSETS"), StrKey.is_valid_ed25519_public_key),
        start_cursor=start_cursor,
        silence_timeout_seconds=_seconds(env, "STELLAR_SILENCE_TIMEOUT_SECONDS", 90.0),
        backoff_min_seconds=_seconds(env, "STELLAR_BACKOFF_MIN_SECONDS", 5.0),
        backoff_max_seconds=_seconds(env, "STELLAR_BACKOFF_MAX_SECONDS", 300.0),
        stall_limit_seconds=_seconds(env, "STELLAR_WATCHER_STALL_SECONDS", 0.0) or None,
    )
    if settings.backoff_max_seconds < settings.backoff_min_seconds:
        raise ValueError("STELLAR_BACKOFF_MAX_SECONDS must be >= STELLAR_BACKOFF_MIN_SECONDS")
    return settings
