"""Time in one place: UTC, naive in the database, RFC 3339 on the wire."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    """Now in UTC, without tzinfo (the database columns are naive UTC DATETIMEs)."""
    return datetime.now(UTC).replace(tzinfo=None)


def rfc3339(moment: datetime | None) -> str:
    """Whole seconds with a Z, as the reference sends them."""
    if moment is None:
        return ""
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
