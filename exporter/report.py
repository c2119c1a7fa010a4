"""The monthly report: a month's spend per team, member, model or task, checked against Neo.

`neo-exporter report` reads every stream of a calendar month (UTC, by `created_at`; the
current month up to now) through the same listing as the live reads: `from` and `to` pinned,
paging by what came back, and a read complete only when it holds the API's own `total` of the
span, the missing parts read again otherwise (`Listing` in client.py). Rows are kept by
`stream_id`, so a row that paging returns twice counts once (its latest version: a report
wants Neo's figures of now); of each stream only its time, its group and its three amounts are
kept, so that a month of 100k streams fits in a few tens of MB.

The check: per account, the streams held are compared with the listing's `total` (Neo's count
of the span) and their credits with `/usage/summary` over the same `from` and `to` (Neo's
books). The report agrees when the read was complete and both differ by at most the
account's `audit_drift_ratio` of Neo's figure; otherwise it says by how much and why.

The span is [the month's first millisecond, its last]: both of the API's bounds are taken as
inclusive (as the listing and the self-audit take them), and whole milliseconds are all that
`from` and `to` say. The summary is asked for the same span, so the check compares like with
like whichever way the API treats its bounds.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import math
import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from exporter.api import (
    STREAMS,
    STREAMS_PATH,
    SUMMARY,
    SUMMARY_PATH,
    UNAVAILABLE_STATUSES,
)
from exporter.client import ApiError, NeoClient, Stopped
from exporter.config import AccountConfig, Config, TeamsConfig
from exporter.models import (
    BodyError,
    RowError,
    StreamRecord,
    format_timestamp,
    parse_stream,
    parse_summary_credits,
)
from exporter.periods import month_bounds, parse_month

log = logging.getLogger(__name__)

# --by: the group's column names in the report.
GROUPS: dict[str, tuple[str, ...]] = {
    "team": ("team",),
    "member": ("email",),
    "model": ("model",),
    "task": ("task_id", "task_title"),
}
FORMATS = ("csv", "markdown", "json")
AMOUNTS = ("streams", "credits", "llm_cost_usd", "neo_cost_usd")
TEMP_SUFFIX = ".tmp"
MILLISECOND = 0.001
# Sums of floats in another order differ in their last bits: not a disagreement.
ABSOLUTE_TOLERANCE = 1e-6


class ReportError(Exception):
    """The report could not be made; the message is one line saying why (never a token)."""


class ReportUsageError(ReportError):
    """The options do not fit the configuration (exit status 2, like a config error)."""


@dataclass(frozen=True, slots=True)
class ReportOptions:
    month: str  # YYYY-MM
    by: str = "team"
    format: str = "csv"
    output: str | None = None  # None: stdout
    accounts: tuple[str, ...] = ()  # empty: every account of the config


@dataclass(frozen=True, slots=True)
class GroupRow:
    """One line of the report: a group's streams and money in one account."""

    account: str
    group: tuple[str, ...]  # the values of GROUPS[by], in order
    streams: int
    credits: float
    llm_cost: float
    neo_cost: float


@dataclass(frozen=True, slots=True)
class Check:
    """One account's month against Neo's own figures for the same span."""

    account: str
    streams: int  # streams the report holds
    credits: float
    neo_streams: int | None  # the listing's `total` (None: the API sent none)
    neo_credits: float | None  # /usage/summary's total_neo_credits (None: not readable)
    complete: bool  # the listing held the API's total after its repairs
    ratio: float  # the account's audit_drift_ratio
    bad_rows: int = 0  # rows without a usable id or time (in Neo's count, not countable)
    summary_problem: str | None = None  # why neo_credits is None

    @property
    def streams_missing(self) -> int | None:
        return None if self.neo_streams is None else self.neo_streams - self.streams

    @property
    def credits_drift(self) -> float | None:
        return None if self.neo_credits is None else self.credits - self.neo_credits

    def reasons(self) -> list[str]:
        """Why the report does not agree with Neo; empty when it does."""
        out = []
        missing = self.streams_missing
        if not self.complete:
            bad = f", {self.bad_rows} of them without a usable id or time" if self.bad_rows else ""
            out.append(
                f"incomplete read: the listing gave {self.streams} of the "
                f"{self.neo_streams} streams Neo counts ({missing} rows missing{bad}, after "
                "reading the missing parts again)"
            )
        if (
            self.complete
            and missing is not None
            and abs(missing) > _allowed(self.ratio, self.neo_streams or 0)
        ):
            assert self.neo_streams is not None
            out.append(
                f"streams drift: {self.streams} in the report, {self.neo_streams} in Neo's count, "
                f"off by {-missing:+d} ({_share(missing, self.neo_streams)}, more than "
                f"audit_drift_ratio {_percent(self.ratio)})"
            )
        drift = self.credits_drift
        if drift is None:
            why = self.summary_problem
            out.append(f"Neo's summary could not be read ({why}): credits unchecked")
        else:
            assert self.neo_credits is not None
            if abs(drift) > _allowed(self.ratio, self.neo_credits):
                out.append(
                    f"credits drift: {_number(self.credits)} in the report, "
                    f"{_number(self.neo_credits)} in Neo's summary, off by {drift:+.6f} "
                    f"({_share(drift, self.neo_credits)}, more than audit_drift_ratio "
                    f"{_percent(self.ratio)})"
                )
        return out

    @property
    def agrees(self) -> bool:
        return not self.reasons()


def _allowed(ratio: float, neo: float) -> float:
    return ratio * abs(neo) + ABSOLUTE_TOLERANCE


def _share(difference: float, of: float) -> str:
    return "all of it" if not of else f"{abs(difference) / abs(of):.2%} of Neo's figure"


def _percent(ratio: float) -> str:
    return f"{ratio:.2%}"


@dataclass(frozen=True, slots=True)
class Report:
    month: str
    by: str
    start: float  # the span read, both bounds included
    end: float
    rows: tuple[GroupRow, ...]  # sorted: credits descending, then group, then account
    checks: tuple[Check, ...]

    @property
    def columns(self) -> tuple[str, ...]:
        return ("account", *GROUPS[self.by], *AMOUNTS)

    @property
    def agrees(self) -> bool:
        return all(check.agrees for check in self.checks)


# --- options -----------------------------------------------------------------------------


def month_span(month: str, now: float) -> tuple[float, float]:
    """[first, last] millisecond of `month` (YYYY-MM) to read; the current month up to now.

    ValueError for a month not in the form, or one that has not started."""
    year, number = parse_month(month)
    start, end = month_bounds(year, number)
    if start > now:
        raise ValueError(f"{month} has not started yet (it is {_month_of(now)} now)")
    last = min(end - MILLISECOND, math.floor(now * 1000) / 1000)
    return start, last


def _month_of(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m")


def check_options(
    config: Config, options: ReportOptions, now: float
) -> tuple[tuple[AccountConfig, ...], tuple[float, float]]:
    """The accounts and the span to read; ReportUsageError naming every problem otherwise."""
    problems = []
    span = (0.0, 0.0)
    try:
        span = month_span(options.month, now)
    except ValueError as exc:
        problems.append(f"--month {exc}")
    if options.by not in GROUPS:
        problems.append(f"--by must be one of {', '.join(GROUPS)}, not {options.by!r}")
    if options.format not in FORMATS:
        problems.append(f"--format must be one of {', '.join(FORMATS)}, not {options.format!r}")
    names = [account.name for account in config.accounts]
    unknown = [name for name in options.accounts if name not in names]
    if unknown:
        problems.append(f"--account {', '.join(unknown)}: not in the config ({', '.join(names)})")
    if options.output is not None and os.path.isdir(options.output):
        problems.append(f"--output {options.output} is a directory (expected a file path)")
    if problems:
        raise ReportUsageError("; ".join(problems))
    wanted = set(options.accounts)
    return tuple(a for a in config.accounts if not wanted or a.name in wanted), span


# --- grouping ----------------------------------------------------------------------------


@dataclass(slots=True)
class MonthStream:
    """What the report keeps of a stream: its time, its group and its money."""

    created_ts: float
    group: tuple[str, ...]
    credits: float
    llm_cost: float
    neo_cost: float


class Grouper:
    """A stream's group under --by; the same tuple object for every stream of a group."""

    def __init__(self, by: str, teams: TeamsConfig) -> None:
        if by not in GROUPS:
            raise ValueError(f"by is one of {', '.join(GROUPS)}, not {by!r}")
        self.by = by
        self._teams = teams
        self._groups: dict[tuple[str, ...], tuple[str, ...]] = {}
        # A task's title: that of its earliest stream that has one.
        self._titles: dict[str, tuple[float, str]] = {}

    def group_of(self, record: StreamRecord) -> tuple[str, ...]:
        if self.by == "team":
            key: tuple[str, ...] = (self._teams.team_of(record.email),)
        elif self.by == "member":
            key = (record.email or "",)
        elif self.by == "model":
            key = (record.model,)
        else:
            task = record.task_id or ""
            if record.task_title:
                known = self._titles.get(task)
                if known is None or record.created_ts < known[0]:
                    self._titles[task] = (record.created_ts, record.task_title)
            key = (task,)
        return self._groups.setdefault(key, key)

    def columns_of(self, group: tuple[str, ...]) -> tuple[str, ...]:
        """The group's values as the report writes them (a task gains its title)."""
        if self.by == "task":
            known = self._titles.get(group[0])
            return (group[0], "" if known is None else known[1])
        return group


def group_rows(
    account: str, streams: Sequence[MonthStream], grouper: Grouper
) -> tuple[list[GroupRow], tuple[int, float, float, float]]:
    """One row per group, and the account's totals; sums by math.fsum (order-free)."""
    money: dict[tuple[str, ...], list[list[float]]] = defaultdict(lambda: [[], [], []])
    for stream in streams:
        sums = money[stream.group]
        sums[0].append(stream.credits)
        sums[1].append(stream.llm_cost)
        sums[2].append(stream.neo_cost)
    rows = [
        GroupRow(
            account,
            grouper.columns_of(group),
            len(sums[0]),
            math.fsum(sums[0]),
            math.fsum(sums[1]),
            math.fsum(sums[2]),
        )
        for group, sums in money.items()
    ]
    totals = (
        len(streams),
        math.fsum(s.credits for s in streams),
        math.fsum(s.llm_cost for s in streams),
        math.fsum(s.neo_cost for s in streams),
    )
    return rows, totals


def sort_rows(rows: Sequence[GroupRow]) -> tuple[GroupRow, ...]:
    """Credits descending, then the group's values, then the account."""
    return tuple(sorted(rows, key=lambda r: (-round(r.credits, 9), r.group, r.account)))


# --- reading -----------------------------------------------------------------------------


class _Held:
    """The streams of one account's read, by stream_id, for the listing's completeness count."""

    def __init__(self) -> None:
        self.streams: dict[str, MonthStream] = {}
        self.bad_rows = 0

    def count(self, first: float, last: float) -> int:
        return sum(1 for s in self.streams.values() if first <= s.created_ts <= last)


def _read_account(
    account: AccountConfig,
    client: NeoClient,
    start: float,
    end: float,
    grouper: Grouper,
    stop: threading.Event,
) -> tuple[_Held, int | None, bool]:
    """Every stream of [start, end]: what was held, Neo's count, whether it was complete."""
    held = _Held()
    listing = client.listing(STREAMS_PATH, STREAMS, start, end, {"sort": "created_at"})
    for page in listing.pages(held.count):
        if stop.is_set():
            raise Stopped
        for row in page.rows:
            try:
                record = parse_stream(row)
            except RowError as exc:
                held.bad_rows += 1
                if held.bad_rows <= 5:
                    log.warning("report: account=%s skipped a row: %s", account.name, exc)
                continue
            if not start <= record.created_ts <= end:
                continue  # outside the span asked for: another month's
            # The latest version read: a repair's re-read may hold Neo's later revision.
            held.streams[record.stream_id] = MonthStream(
                record.created_ts,
                grouper.group_of(record),
                record.credits,
                record.llm_cost,
                record.neo_cost,
            )
    outcome = listing.outcome
    assert outcome is not None
    return held, outcome.reported, outcome.complete


def _neo_credits(client: NeoClient, start: float, end: float) -> tuple[float | None, str | None]:
    """Neo's summary credits over [start, end]; (None, why) when it cannot be read."""
    period = {"from": format_timestamp(start), "to": format_timestamp(end)}
    try:
        return parse_summary_credits(client.get_json(SUMMARY_PATH, period, SUMMARY)), None
    except ApiError as exc:
        if exc.status in UNAVAILABLE_STATUSES:
            return None, f"HTTP {exc.status}"
        raise
    except BodyError as exc:
        return None, f"not usable: {exc}"


def run(
    config: Config,
    options: ReportOptions,
    *,
    stop: threading.Event,
    clock: Callable[[], float] = time.time,
) -> Report:
    """Read the month of each account, group it and check it against Neo.

    Raises ReportUsageError, or ReportError when an account cannot be read."""
    accounts, (start, end) = check_options(config, options, clock())
    rows: list[GroupRow] = []
    checks: list[Check] = []
    for account in accounts:
        grouper = Grouper(options.by, config.teams)
        client = NeoClient(account, config.http, wait=stop.wait)
        try:
            log.info(
                "report: account=%s reading the streams of %s..%s",
                account.name,
                format_timestamp(start),
                format_timestamp(end),
            )
            held, neo_streams, complete = _read_account(account, client, start, end, grouper, stop)
            neo_credits, problem = _neo_credits(client, start, end)
        except Stopped:
            raise ReportError("stopped before the end; nothing was written") from None
        except ApiError as exc:
            raise ReportError(f"account {account.name}: {exc}; nothing was written") from None
        finally:
            client.close()
        streams = list(held.streams.values())
        account_rows, (count, credits, _, _) = group_rows(account.name, streams, grouper)
        rows += account_rows
        checks.append(
            Check(
                account.name,
                count,
                credits,
                neo_streams,
                neo_credits,
                complete,
                account.alert_thresholds.audit_drift_ratio,
                held.bad_rows,
                problem,
            )
        )
    return Report(options.month, options.by, start, end, sort_rows(rows), tuple(checks))


# --- formats -----------------------------------------------------------------------------


def _number(value: float) -> str:
    """Money as a plain decimal (no exponent), to 9 places, without trailing zeros."""
    text = f"{round(value, 9):.9f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _cells(row: GroupRow) -> list[str]:
    return [
        row.account,
        *row.group,
        str(row.streams),
        _number(row.credits),
        _number(row.llm_cost),
        _number(row.neo_cost),
    ]


def to_csv(report: Report) -> str:
    """RFC 4180: a header, then a line per group; fields quoted where they need it."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(report.columns)
    writer.writerows(_cells(row) for row in report.rows)
    return out.getvalue()


def _markdown_cell(text: str) -> str:
    # A pipe ends a cell and a line break ends the row: neither may stay as it is.
    text = text.replace("\\", "\\\\").replace("|", "\\|")
    return " ".join(text.split()) if any(c in text for c in "\r\n") else text


def to_markdown(report: Report) -> str:
    columns = report.columns
    numeric = len(AMOUNTS)
    lines = [
        f"Neo usage of {report.month} by {report.by} "
        f"({format_timestamp(report.start)} to {format_timestamp(report.end)})",
        "",
        "| " + " | ".join(columns) + " |",
        "|"
        + "|".join("---" for _ in columns[:-numeric])
        + "|"
        + "|".join("--:" for _ in AMOUNTS)
        + "|",
    ]
    for row in report.rows:
        lines.append("| " + " | ".join(_markdown_cell(c) for c in _cells(row)) + " |")
    return "\n".join(lines) + "\n"


def to_json(report: Report) -> str:
    """The rows as objects, each account's totals, and the check against Neo."""
    group_columns = GROUPS[report.by]
    rows = [
        {
            "account": row.account,
            **dict(zip(group_columns, row.group, strict=True)),
            "streams": row.streams,
            "credits": row.credits,
            "llm_cost_usd": row.llm_cost,
            "neo_cost_usd": row.neo_cost,
        }
        for row in report.rows
    ]
    totals: dict[str, dict[str, Any]] = {}
    for row in report.rows:
        total = totals.setdefault(
            row.account, {"streams": 0, "credits": [], "llm_cost_usd": [], "neo_cost_usd": []}
        )
        total["streams"] += row.streams
        total["credits"].append(row.credits)
        total["llm_cost_usd"].append(row.llm_cost)
        total["neo_cost_usd"].append(row.neo_cost)
    body: dict[str, Any] = {
        "month": report.month,
        "by": report.by,
        "from": format_timestamp(report.start),
        "to": format_timestamp(report.end),
        "rows": rows,
        "totals": [
            {
                "account": check.account,
                "streams": totals.get(check.account, {}).get("streams", 0),
                **{
                    key: math.fsum(totals.get(check.account, {}).get(key, []))
                    for key in ("credits", "llm_cost_usd", "neo_cost_usd")
                },
            }
            for check in report.checks
        ],
        "check": [
            {
                "account": check.account,
                "streams": check.streams,
                "neo_streams": check.neo_streams,
                "credits": check.credits,
                "neo_credits": check.neo_credits,
                "complete": check.complete,
                "audit_drift_ratio": check.ratio,
                "agrees": check.agrees,
                "reasons": check.reasons(),
            }
            for check in report.checks
        ],
        "agrees": report.agrees,
    }
    return json.dumps(body, ensure_ascii=False, indent=2) + "\n"


RENDER: dict[str, Callable[[Report], str]] = {
    "csv": to_csv,
    "markdown": to_markdown,
    "json": to_json,
}


def render(report: Report, fmt: str) -> str:
    return RENDER[fmt](report)


def write_atomically(path: str, text: str) -> None:
    """`text` as UTF-8 at `path`, whole or not at all (a temporary file beside it, renamed)."""
    temporary = path + TEMP_SUFFIX
    try:
        with open(temporary, "w", encoding="utf-8", newline="") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except OSError as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise ReportError(f"cannot write the report {path}: {exc.strerror or exc}") from None


def describe_checks(report: Report) -> Iterator[str]:
    """Each account's figures beside Neo's, then whether they agree and, if not, why."""
    for check in report.checks:
        neo_streams = "?" if check.neo_streams is None else str(check.neo_streams)
        neo_credits = "?" if check.neo_credits is None else _number(check.neo_credits)
        yield (
            f"report: account={check.account} {report.month}: the report holds "
            f"{check.streams} streams and {_number(check.credits)} credits; Neo counts "
            f"{neo_streams} streams and its summary {neo_credits} credits"
        )
        reasons = check.reasons()
        if reasons:
            yield (
                f"report: account={check.account} does NOT agree with Neo (within "
                f"audit_drift_ratio {_percent(check.ratio)}): " + "; ".join(reasons)
            )
        else:
            yield (
                f"report: account={check.account} agrees with Neo within audit_drift_ratio "
                f"{_percent(check.ratio)}"
            )
