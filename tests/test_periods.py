"""Budget periods: UTC days, weeks from Monday, calendar months."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from exporter.periods import month_bounds, parse_month, period_bounds


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("period", "now", "start", "end"),
    [
        ("day", "2026-12-04T23:59:59", "2026-12-04T00:00:00", "2026-12-05T00:00:00"),
        ("day", "2026-12-05T00:00:00", "2026-12-05T00:00:00", "2026-12-06T00:00:00"),
        # 2026-12-04 is a Friday: its week began on Monday the 30th of November.
        ("week", "2026-12-04T12:00:00", "2026-11-30T00:00:00", "2026-12-07T00:00:00"),
        ("week", "2026-11-30T00:00:00", "2026-11-30T00:00:00", "2026-12-07T00:00:00"),
        ("week", "2026-12-06T23:59:59", "2026-11-30T00:00:00", "2026-12-07T00:00:00"),
        ("month", "2026-12-31T23:59:59", "2026-12-01T00:00:00", "2027-01-01T00:00:00"),
        ("month", "2028-02-29T08:00:00", "2028-02-01T00:00:00", "2028-03-01T00:00:00"),
    ],
)
def test_a_period_holds_now_and_runs_from_midnight_utc(
    period: str, now: str, start: str, end: str
) -> None:
    assert period_bounds(period, ts(now)) == (ts(start), ts(end))


def test_a_stream_at_one_second_to_midnight_belongs_to_the_old_day() -> None:
    old_day = period_bounds("day", ts("2026-12-04T23:59:59"))
    new_day = period_bounds("day", ts("2026-12-05T00:00:00"))
    assert old_day[1] == new_day[0]
    assert old_day[0] <= ts("2026-12-04T23:59:59") < old_day[1]


def test_months_and_their_names() -> None:
    assert month_bounds(2026, 12) == (ts("2026-12-01T00:00:00"), ts("2027-01-01T00:00:00"))
    assert parse_month("2026-11") == (2026, 11)
    with pytest.raises(ValueError, match="YYYY-MM"):
        parse_month("2026-13")
    with pytest.raises(ValueError, match="one of day, week, month"):
        period_bounds("year", 0.0)
