"""The resilience settings (README, "Circuit breakers and quotas"; deployment.md lists them)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..env_values import env_value
from .routing import parse_rules


class SettingError(ValueError):
    """A malformed setting; the message names the variable (config.py makes it a ConfigError)."""


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    failure_threshold: int = 5  # consecutive failures that open the circuit
    failure_rate: float = 0.5  # or this share of failed calls in one window ...
    min_calls: int = 20  # ... once the window holds at least this many calls
    window_seconds: float = 60.0
    cooldown_seconds: float = 30.0  # open this long, then one probe call is let through


@dataclass(frozen=True, slots=True)
class Limits:
    """One caller's limits; 0 means unlimited. Rates are requests per second, bursts
    the bucket's size (how many may come at once after a quiet spell)."""

    create_rps: float = 0.0
    create_burst: int = 0
    read_rps: float = 0.0
    read_burst: int = 0
    max_open_payments: int = 0

    def bucket(self, rpc_class: str) -> tuple[float, int]:
        """(rate, burst) of one RPC class; a burst left at 0 is one second's worth."""
        rate, burst = (self.create_rps, self.create_burst) if rpc_class == "create" else (self.read_rps, self.read_burst)
        return rate, burst or max(1, math.ceil(rate))


@dataclass(frozen=True, slots=True)
class ResilienceSettings:
    redis_url: str | None = field(default=None, repr=False)  # None: every process keeps its own state
    redis_key_prefix: str = "payments-svc:"  # keeps environments sharing one Redis apart
    breaker: BreakerSettings = BreakerSettings()
    default_limits: Limits = Limits()
    limits_refresh_seconds: float = 5.0  # how soon `keys limits` reaches every process
    routing_rules: tuple = ()  # routing.Rule, in order (PAYMENTS_ROUTING_RULES)


def _number(env: dict[str, str], name: str, default: float, *, minimum: float, maximum: float | None = None,
            integer: bool = False) -> float:
    raw = env_value(env, name)
    if raw is None:
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        raise SettingError(f"{name} must be {'an integer' if integer else 'a number'}, got {raw!r}") from None
    if not math.isfinite(value) or value < minimum or (maximum is not None and value > maximum):
        bounds = f"between {minimum:g} and {maximum:g}" if maximum is not None else f">= {minimum:g}"
        raise SettingError(f"{name} must be {bounds}, got {raw}")
    return value


def resilience_settings_from_env(env: dict[str, str]) -> ResilienceSettings:
    redis_url = env_value(env, "PAYMENTS_REDIS_URL")
    if redis_url is not None and not redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise SettingError("PAYMENTS_REDIS_URL must be a redis://, rediss:// or unix:// URL")
    breaker = BreakerSettings(
        failure_threshold=int(_number(env, "PAYMENTS_BREAKER_FAILURE_THRESHOLD", 5, minimum=1, integer=True)),
        failure_rate=_number(env, "PAYMENTS_BREAKER_FAILURE_RATE", 0.5, minimum=0.01, maximum=1),
        min_calls=int(_number(env, "PAYMENTS_BREAKER_MIN_CALLS", 20, minimum=1, integer=True)),
        window_seconds=_number(env, "PAYMENTS_BREAKER_WINDOW_SECONDS", 60, minimum=1),
        cooldown_seconds=_number(env, "PAYMENTS_BREAKER_COOLDOWN_SECONDS", 30, minimum=0.1),
    )
    limits = Limits(
        create_rps=_number(env, "PAYMENTS_QUOTA_CREATE_RPS", 0, minimum=0),
        create_burst=int(_number(env, "PAYMENTS_QUOTA_CREATE_BURST", 0, minimum=0, integer=True)),
        read_rps=_number(env, "PAYMENTS_QUOTA_READ_RPS", 0, minimum=0),
        read_burst=int(_number(env, "PAYMENTS_QUOTA_READ_BURST", 0, minimum=0, integer=True)),
        max_open_payments=int(_number(env, "PAYMENTS_QUOTA_MAX_OPEN_PAYMENTS", 0, minimum=0, integer=True)),
    )
    return ResilienceSettings(
        redis_url=redis_url,
        redis_key_prefix=env_value(env, "PAYMENTS_REDIS_KEY_PREFIX") or "payments-svc:",
        breaker=breaker, default_limits=limits,
        limits_refresh_seconds=_number(env, "PAYMENTS_QUOTA_REFRESH_SECONDS", 5, minimum=0),
        routing_rules=parse_rules(env.get("PAYMENTS_ROUTING_RULES")),
    )
