"""The RFC 3339 bounds callers give (stats, delivery listings, `--since`): parsed to the
naive UTC datetimes the database holds, and refused with the field named."""

from __future__ import annotations

import time
from datetime import datetime

import pytest

from payments_svc.domain.errors import ErrorKind, ValidationError
from payments_svc.domain.time_range import check_order, parse_moment


@pytest.mark.parametrize("raw", ["", "   ", "\t\n"])
def test_an_empty_value_is_no_bound(raw):
    assert parse_moment("since", raw) is None


@pytest.mark.parametrize(("raw", "expected"), [
    ("2026-12-01T00:00:00Z", datetime(2026, 12, 1)),
    ("2026-12-01t10:20:30z", datetime(2026, 12, 1, 10, 20, 30)),  # lower-case t and z are RFC 3339 too
    ("  2026-12-01T10:20:30Z  ", datetime(2026, 12, 1, 10, 20, 30)),  # surrounding blanks are dropped
    ("2026-12-01T10:20:30.250Z", datetime(2026, 12, 1, 10, 20, 30, 250_000)),
    ("2026-12-01T10:20:30+02:00", datetime(2026, 12, 1, 8, 20, 30)),  # converted to UTC
    ("2026-12-01T01:00:00+05:30", datetime(2026, 11, 30, 19, 30)),  # across midnight
    ("2026-12-01T22:00:00-03:00", datetime(2026, 12, 2, 1, 0)),
    ("2026-12-01", datetime(2026, 12, 1)),  # a date alone: midnight UTC
    ("2026-12-01Z", datetime(2026, 12, 1)),  # with a Z too (which fromisoformat alone refuses)
    ("2026-12-01z", datetime(2026, 12, 1)),
    ("2026-12-01T10:20:30", datetime(2026, 12, 1, 10, 20, 30)),  # no offset: taken as UTC
])
def test_a_moment_is_naive_utc(raw, expected):
    moment = parse_moment("since", raw)
    assert moment == expected
    assert moment.tzinfo is None


def test_a_moment_with_an_offset_has_its_tzinfo_dropped():
    # Compared with the database's naive columns: an aware datetime would raise there.
    assert parse_moment("until", "2026-12-01T00:00:00+00:00").tzinfo is None


@pytest.mark.parametrize("raw", ["yesterday", "2026-13-01", "2026-12-01T25:00:00Z", "12/01/2026"])
def test_an_unreadable_moment_is_refused_with_its_field(raw):
    with pytest.raises(ValidationError) as info:
        parse_moment("until", raw)
    assert info.value.field == "until"
    assert info.value.kind == ErrorKind.INVALID_ARGUMENT
    assert info.value.message == f"until must be an RFC 3339 time such as 2026-12-01T00:00:00Z, got {raw!r}"
    assert info.value.__suppress_context__  # `from None`: the ValueError is not chained


def test_the_refusal_quotes_at_most_64_characters_of_the_value():
    raw = "x" * 100
    with pytest.raises(ValidationError) as info:
        parse_moment("since", "  " + raw + "  ")
    assert info.value.message == f"since must be an RFC 3339 time such as 2026-12-01T00:00:00Z, got {'x' * 64!r}"
    assert info.value.field == "since"


def test_the_refusal_quotes_the_value_as_stripped():
    with pytest.raises(ValidationError) as info:
        parse_moment("since", " soon ")
    assert info.value.message.endswith(", got 'soon'")


SINCE, UNTIL = datetime(2026, 1, 1), datetime(2026, 1, 2)


@pytest.mark.parametrize(("since", "until"), [
    (None, None), (SINCE, None), (None, UNTIL), (SINCE, UNTIL),
    (datetime(2026, 1, 1, 23, 59, 59, 999_999), UNTIL),  # a microsecond before is before
])
def test_bounds_in_order_or_open_are_accepted(since, until):
    assert check_order(since, until) is None


@pytest.mark.parametrize(("since", "until"), [(UNTIL, SINCE), (UNTIL, UNTIL)])
def test_since_at_or_after_until_is_refused(since, until):
    with pytest.raises(ValidationError) as info:
        check_order(since, until)
    assert (info.value.message, info.value.field, info.value.kind) == (
        "since must be before until", "since", ErrorKind.INVALID_ARGUMENT)


@pytest.fixture
def tokyo_local_time(monkeypatch):
    """The process's local time zone set far from UTC: the conversion must not depend on it."""
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.parametrize(("raw", "expected"), [
    ("2026-12-01T10:20:30+02:00", datetime(2026, 12, 1, 8, 20, 30)),
    ("2026-12-01T10:20:30", datetime(2026, 12, 1, 10, 20, 30)),  # no offset: UTC, not local time
    ("2026-12-01", datetime(2026, 12, 1)),
])
def test_the_conversion_ignores_the_local_time_zone(tokyo_local_time, raw, expected):
    assert parse_moment("since", raw) == expected
