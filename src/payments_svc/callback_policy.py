"""Rules for outbound status callbacks that need no I/O: which hosts may receive
them, when a failed delivery is retried, and how a Retry-After header is read."""

from __future__ import annotations

import ipaddress
import random
import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

# Each retry waits about four times longer than the one before, up to the cap. With
# the defaults (base 5 min, cap 12 h, 10 attempts) the nominal gaps are 5m, 20m, 1h20m,
# 5h20m, then 12h: about 67 h in all, between the Svix (27.5 h) and Standard Webhooks
# (75 h) schedules.
BACKOFF_FACTOR = 4
_MAX_EXPONENT = 40  # keeps the float finite for absurd attempt counts
_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?")


def retry_delay(attempts_made: int, *, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Seconds to wait after the `attempts_made`-th failed attempt.

    Jittered over the upper half of the nominal gap ("equal jitter"): retries of many
    deliveries that failed together still spread out, and the schedule keeps a floor
    (half the nominal total, about 33 h by default) so that a receiver that is down for a
    day is still reached. Jitter from zero ("full jitter") could not promise that floor.
    """
    nominal = min(cap, base * BACKOFF_FACTOR ** min(max(attempts_made - 1, 0), _MAX_EXPONENT))
    return nominal / 2 + (rng or random).uniform(0, nominal / 2)


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """A Retry-After header (delay-seconds or an HTTP date) as seconds from `now`
    (naive UTC); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        return None  # HTTP dates are GMT; a zone-less date is not one
    return max(0.0, (moment.astimezone(UTC).replace(tzinfo=None) - now).total_seconds())


def parse_host_pattern(pattern: str) -> str:
    """Normalises one PAYMENTS_CALLBACK_ALLOWED_HOSTS entry: a host name or IP
    (`hooks.example.com`, `127.0.0.1`, `::1`) or `*.domain` for any host under domain."""
    pattern = pattern.strip().lower().rstrip(".")
    if pattern.startswith("[") and pattern.endswith("]"):
        pattern = pattern[1:-1]  # an IPv6 literal as written in URLs
    try:
        ipaddress.ip_address(pattern)
        return pattern
    except ValueError:
        pass
    name = pattern.removeprefix("*.")
    if not name or not all(label and _LABEL.fullmatch(label) for label in name.split(".")):
        raise ValueError(f"{pattern!r} is not a host name, an IP address or *.domain")
    return pattern


def host_allowed(host: str, patterns: tuple[str, ...]) -> bool:
    """Empty patterns allow any host; `*.example.com` matches hosts under example.com
    (not example.com itself)."""
    if not patterns:
        return True
    host = host.lower().rstrip(".")
    for pattern in patterns:
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]):
                return True
        elif host == pattern:
            return True
    return False


def callback_url_problem(url: str, patterns: tuple[str, ...]) -> str | None:
    """Why a status callback may not be sent to `url`, or None when it may."""
    try:
        host = urlsplit(url).hostname
    except ValueError:
        host = None
    if not host:
        return "status_callback_url has no host"
    if not host_allowed(host, patterns):
        return f"status_callback_url host {host!r} is not allowed by PAYMENTS_CALLBACK_ALLOWED_HOSTS"
    return None
