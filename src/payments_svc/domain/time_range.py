"""RFC 3339 bounds given by callers (stats, delivery listings, `--since`), as the naive
UTC datetimes the database holds."""

from __future__ import annotations

from datetime import UTC, datetime

from .errors import ValidationError


def parse_moment(field: str, raw: str) -> datetime | None:
    """None for an empty value; `2026-12-01T00:00:00Z`, an offset, or a date alone (midnight UTC)."""
    raw = raw.strip()
    if not raw:
        return None
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValidationError(f"{field} must be an RFC 3339 time such as 2026-12-01T00:00:00Z, got {raw[:64]!r}",
                              field=field) from None
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment


def check_order(since: datetime | None, until: datetime | None) -> None:
    if since is not None and until is not None and since >= until:
        raise ValidationError("since must be before until", field="since")
