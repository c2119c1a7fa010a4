"""Budget periods in UTC calendar terms: a day, a week starting on Monday, a month.

Pure functions of a period name and a time, shared by the budgets and the monthly report.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

PERIODS = ("day", "week", "month")


def period_bounds(period: str, now: float) -> tuple[float, float]:
    """[start, end) of the `period` ("day", "week" or "month") that holds `now`, in Unix s."""
    moment = datetime.fromtimestamp(now, UTC)
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        start, end = day, day + timedelta(days=1)
    elif period == "week":
        start = day - timedelta(days=day.weekday())  # Monday is 0
        end = start + timedelta(days=7)
    elif period == "month":
        return month_bounds(moment.year, moment.month)
    else:
        raise ValueError(f"period is one of {', '.join(PERIODS)}, not {period!r}")
    return start.timestamp(), end.timestamp()


def month_bounds(year: int, month: int) -> tuple[float, float]:
    """[start, end) of a calendar month in UTC, in Unix seconds."""
    start = datetime(year, month, 1, tzinfo=UTC)
    end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
    return start.timestamp(), end.timestamp()


def parse_month(text: str) -> tuple[int, int]:
    """`YYYY-MM` as (year, month); ValueError naming the form otherwise."""
    try:
        moment = datetime.strptime(text.strip(), "%Y-%m")
    except ValueError:
        raise ValueError(f"expected a month as YYYY-MM (like 2026-11), got {text!r}") from None
    return moment.year, moment.month
