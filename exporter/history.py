"""History: the last N days of the counters as OpenMetrics, joined to the live exporter.

`neo-exporter history` reads every stream of the last `--days` through the same listing as
the live reads (pinned spans, paging by what came back, retries, and a read is complete
only when it holds the API's own `total`), and counts them into a *fresh* state through
`State.ingest`, in `created_at` order, a `--step` at a time. After each step it notes the
value of every counter and histogram: that is what the exporter would have shown at that
instant, had it been running. It writes those values as OpenMetrics with timestamps, for
`promtool tsdb create-blocks-from openmetrics`, and leaves the state as if the exporter's
first full read had just ended, so that an exporter started on it publishes at once.

The join (docs/history.md says it at length):

- Samples run from the history's start up to T_join, the last step at least
  `--head-margin` (3 hours) before now: Prometheus' head block covers about the last
  2 to 3 hours, and blocks backfilled into its range are not safe. Streams created after
  T_join are in the state's totals only: the exporter's first scrape shows them, so the
  rise across the join is exactly them, and no counter resets (totals only grow).
- Series are the live ones by construction: the same state decides labels (the label
  budget and its `other`), so the exporter, starting on that state, folds the same way.
- A stream is counted once: its id is in the state, so a live re-read skips it; a row that
  shows up in Neo after the history was read is new to the state, and the live exporter
  counts it when its lookback or its read of the window finds it.

Only a state with nothing counted for an account can take its history: an exporter that
has published counters already has them in Prometheus from its first read on, and a
history before them could not join without a reset or counting streams twice
(`HistoryRefused`, with what to do instead).

Atomic: the state is built in a temporary copy beside `state.path` and the output in
`PATH.tmp`; both are put in place (output first, then state) only once everything is
read and written. A failure leaves neither: promtool refuses a file without `# EOF`, and
the temporary output is removed anyway.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import math
import os
import re
import sqlite3
import threading
import time
from array import array
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import groupby
from typing import BinaryIO, cast

from prometheus_client import utils

from exporter import catalogue as m
from exporter.catalogue import Metric
from exporter.client import STREAMS_PATH, ApiError, NeoClient, PageProgress, Stopped
from exporter.config import AccountConfig, Config, format_duration
from exporter.counting import Counts, HistogramValue
from exporter.models import RowError, StreamRecord, format_timestamp, parse_stream
from exporter.poller import SLICE_ROWS
from exporter.state import (
    LOCK_SUFFIX,
    MEMORY,
    WATERMARK_RECONCILE,
    WATERMARK_STREAMS,
    State,
    StateError,
    StateLock,
    check_state_path,
    histogram_bounds,
    open_state,
)

log = logging.getLogger(__name__)

DEFAULT_DAYS = 30
DEFAULT_STEP = 300.0
DEFAULT_HEAD_MARGIN = 3 * 3600.0
# Prometheus' default lookback: an instant query finds a series only if it has a sample
# this recent, so samples further apart leave holes in every graph.
MAX_STEP = 300.0
PROGRESS_EVERY = 1.0  # seconds between progress lines
GZIP_LEVEL = 1  # the text repeats itself: level 1 already shrinks it 25 to 30 times
TEMP_SUFFIX = ".tmp"  # the output, until it is complete
STATE_TEMP_SUFFIX = ".history.tmp"  # the state copy being seeded, beside state.path
_SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")
# The exporter's counters and histograms that come from the streams: what the history holds.
# Its own counters (revisions, changed records) describe the exporter and start with it.
COUNTERS: tuple[Metric, ...] = m.STREAM_COUNTERS + m.BREAKDOWNS + m.TEAM_COUNTERS
_COUNTERS = frozenset(metric.name for metric in COUNTERS)
_HISTOGRAMS = frozenset(metric.name for metric in m.HISTOGRAMS)
_format_value: Callable[[float], str] = utils.floatToGoString


class HistoryError(Exception):
    """The history could not be made; the message is one line saying why (never a token)."""


class HistoryUsageError(HistoryError):
    """The options do not fit the configuration (exit status 2, like a config error)."""


class HistoryRefused(HistoryError):
    """The state already holds counters of an account: its history cannot join them."""


@dataclass(frozen=True, slots=True)
class HistoryOptions:
    output: str
    days: int = DEFAULT_DAYS
    step: float = DEFAULT_STEP
    head_margin: float = DEFAULT_HEAD_MARGIN
    accounts: tuple[str, ...] = ()  # empty: every account of the config
    # Accounts that already hold counters are left alone instead of refused (an init
    # container that runs at every pod start).
    if_fresh: bool = False
    # The labels Prometheus gives the exporter's series when it scrapes them (job, instance,
    # whatever relabelling adds): without them the history would be other series.
    target_labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class HistorySummary:
    accounts: tuple[str, ...]  # accounts whose history was written
    skipped: tuple[str, ...]  # accounts left alone (if_fresh: they already hold counters)
    start: float  # the first step
    join: float  # T_join, the last step written
    end: float  # the `to` of the read: the exporter reads on from here
    rows: int  # rows the pages held (a row read twice counts twice)
    pages: int
    streams: int  # streams counted into the state
    bad_rows: int  # rows without a usable id or time (not countable, as in live reads)
    series: int
    samples: int
    bytes: int
    seconds: float
    output: str
    state_path: str


@dataclass(frozen=True, slots=True)
class Span:
    """Where the history starts, where its samples stop (T_join) and what a step is."""

    start: float
    join: float
    step: float

    @property
    def steps(self) -> int:
        """Samples per series that runs over the whole history (start and join included)."""
        return round((self.join - self.start) / self.step) + 1

    def index(self, created: float) -> int:
        """The first step whose value includes a stream created at `created`; past T_join,
        `steps` (written nowhere: the exporter's first scrape shows it)."""
        k = math.ceil(round((created - self.start) / self.step, 9))
        return min(max(k, 0), self.steps)

    def at(self, k: int) -> int:
        return round(self.start + k * self.step)


def plan(now: float, options: HistoryOptions) -> Span:
    """The span of a history made at `now`: steps aligned on the epoch, as Grafana's are."""
    step = options.step
    join = math.floor((now - options.head_margin) / step) * step
    start = math.floor((now - options.days * 86400.0) / step) * step
    return Span(start, join, step)


def check_options(config: Config, options: HistoryOptions) -> tuple[AccountConfig, ...]:
    """The accounts to read; HistoryUsageError when the options cannot make a history."""
    problems = []
    if options.days < 1:
        problems.append(f"--days must be 1 or more, not {options.days}")
    if not (1 <= options.step <= MAX_STEP) or not float(options.step).is_integer():
        problems.append(
            f"--step must be whole seconds from 1s to {format_duration(MAX_STEP)}, not "
            f"{format_duration(options.step)} (Prometheus looks back 5 minutes for a sample: "
            "samples further apart leave holes in the graphs)"
        )
    if options.head_margin < 0:
        problems.append("--head-margin cannot be negative")
    elif options.days * 86400.0 <= options.head_margin:
        problems.append("--days must be longer than --head-margin")
    window = config.polling.window
    if options.days * 86400.0 < window:
        # The exporter re-reads its window: streams of it older than the history would be
        # new to the state and counted as live increase, a jump of past spend.
        problems.append(
            f"--days {options.days} is shorter than polling.window "
            f"{format_duration(window)}: the exporter re-reads its window, and streams older "
            f"than the history would be counted as new spend (use --days "
            f"{math.ceil(window / 86400)} or more)"
        )
    problems += _check_target_labels(options.target_labels)
    if config.state.path == MEMORY:
        problems.append(
            "state.path is :memory:; the history seeds the state file the exporter then runs on"
        )
    names = [account.name for account in config.accounts]
    unknown = [name for name in options.accounts if name not in names]
    if unknown:
        problems.append(f"--account {', '.join(unknown)}: not in the config ({', '.join(names)})")
    if os.path.isdir(options.output):
        problems.append(f"--output {options.output} is a directory (expected a file path)")
    if problems:
        raise HistoryUsageError("; ".join(problems))
    wanted = set(options.accounts)
    return tuple(a for a in config.accounts if not wanted or a.name in wanted)


_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
# The exporter's own label names: a target label of the same name would be renamed
# exported_<name> by Prometheus on the live side, so it cannot be given here.
_OWN_LABELS = frozenset(
    {"le", *(name for metric in (*COUNTERS, *m.HISTOGRAMS) for name in metric.labels)}
)


def _check_target_labels(labels: Sequence[tuple[str, str]]) -> list[str]:
    if not labels:
        return [
            "--label is needed: the labels Prometheus adds to the exporter's series when it "
            "scrapes them, such as --label job=neo-exporter --label instance=localhost:9636 "
            '(the labels of up{job="neo-exporter"}); without them the history would be '
            "other series than the live ones"
        ]
    problems = []
    names = [name for name, _ in labels]
    for name in names:
        if not _LABEL_NAME.fullmatch(name) or name.startswith("__"):
            problems.append(f"--label {name}: not a label name Prometheus keeps")
        elif name in _OWN_LABELS:
            problems.append(f"--label {name}: the exporter's own label, not a target label")
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        problems.append(f"--label {', '.join(duplicates)}: given more than once")
    return problems


# --- what each step held ---------------------------------------------------------------


@dataclass(slots=True)
class _Series:
    """One series' values at the steps where it changed (arrays: a few bytes a change).

    A counter has one value a step; a histogram `width` of them: its cumulative buckets,
    +Inf (the count) and the sum.
    """

    width: int
    steps: array[int] = field(default_factory=lambda: array("l"))
    values: array[float] = field(default_factory=lambda: array("d"))

    def note(self, k: int, row: Sequence[float]) -> None:
        if self.steps and self.steps[-1] == k:  # a step split across two reads
            del self.values[-self.width :]
        else:
            self.steps.append(k)
        self.values.extend(row)

    def first_used(self) -> int | None:
        """The index of the first change that is not zero (zero-filled series wait)."""
        for i in range(len(self.steps)):
            if any(self.values[i * self.width : (i + 1) * self.width]):
                return i
        return None


def _histogram_row(value: HistogramValue) -> list[float]:
    cumulative, row = 0, []
    for count in value.buckets[:-1]:
        cumulative += count
        row.append(float(cumulative))
    row.append(float(value.count))
    row.append(value.sum)
    return row


class _Recorder:
    """Notes, after each step was counted, the series that changed in it."""

    def __init__(self) -> None:
        self.series: dict[tuple[str, tuple[str, ...]], _Series] = {}
        self._last: Counts = Counts({}, {})

    def note(self, k: int, counts: Counts) -> None:
        last = self._last
        for key, value in counts.counters.items():
            # The state replaces a value it changes: the same object is the same value, and
            # only the others are compared.
            before = last.counters.get(key)
            if key[0] in _COUNTERS and before is not value and before != value:
                self._series(key, 1).note(k, (value.value,))
        for key, hist in counts.histograms.items():
            earlier = last.histograms.get(key)
            if key[0] in _HISTOGRAMS and earlier is not hist and earlier != hist:
                self._series(key, len(hist.bounds) + 2).note(k, _histogram_row(hist))
        self._last = counts

    def _series(self, key: tuple[str, tuple[str, ...]], width: int) -> _Series:
        series = self.series.get(key)
        if series is None:
            series = self.series[key] = _Series(width)
        return series


# --- progress --------------------------------------------------------------------------


class _Progress:
    """Rows read and counted against the API's totals, on stderr at most once a second.

    Each slice is read, then counted a step at a time (about as long again): the time left
    weighs both, so that it does not stall while a slice is counted.
    """

    def __init__(self, total_rows: int, monotonic: Callable[[], float]) -> None:
        self.total_rows = total_rows
        self._monotonic = monotonic
        self.started = monotonic()
        self._last = self.started
        self.rows = 0  # of finished reads
        self.pages = 0
        self.counted = 0  # rows counted into the state
        self._current = PageProgress(0, None, 0, None)
        self.account = ""

    def on_page(self, p: PageProgress) -> None:
        self._current = p
        self._tick()

    def on_counted(self, rows: int) -> None:
        self.counted += rows
        self._tick()

    def _tick(self) -> None:
        now = self._monotonic()
        if now - self._last >= PROGRESS_EVERY:
            self._last = now
            self.report(now)

    def read_done(self) -> None:
        self.rows += self._current.rows_done
        self.pages += self._current.pages_done
        self._current = PageProgress(0, None, 0, None)

    @property
    def rows_done(self) -> int:
        return self.rows + self._current.rows_done

    @property
    def pages_done(self) -> int:
        return self.pages + self._current.pages_done

    def report(self, now: float | None = None) -> None:
        now = self._monotonic() if now is None else now
        elapsed = now - self.started
        total = self.total_rows
        done = (min(self.rows_done, total) + min(self.counted, total)) / 2
        left = "?"
        if done and total:
            left = format_duration(round(max(0.0, elapsed * (total - done) / done)))
        log.info(
            "history: account=%s rows %d/%d read, %d counted, pages %d, %s elapsed, about %s left",
            self.account,
            self.rows_done,
            total,
            self.counted,
            self.pages_done,
            format_duration(round(elapsed)),
            left,
        )


# --- reading ---------------------------------------------------------------------------


@dataclass(slots=True)
class _Tally:
    streams: int = 0
    bad_rows: int = 0


class _Held:
    """The rows one slice has read so far, for the listing's completeness count."""

    def __init__(self, carried: Mapping[str, float]) -> None:
        self.carried = carried
        self.rows: dict[str, StreamRecord] = {}

    def count(self, first: float, last: float) -> int:
        """What the state would hold of [first, last]: this slice's rows and the last
        slice's at the shared bound (the live read counts the state itself)."""
        times = {**self.carried, **{sid: r.created_ts for sid, r in self.rows.items()}}
        return sum(1 for ts in times.values() if first <= ts <= last)


def _slices(span: Span, end: float, total: int | None) -> list[tuple[float, float]]:
    """Spans of about SLICE_ROWS rows (as a sweep reads), cut on steps, oldest first."""
    count = max(1, math.ceil((total or 0) / SLICE_ROWS))
    length = max(span.step, math.ceil((end - span.start) / count / span.step) * span.step)
    out, cursor = [], span.start
    while cursor < end:
        out.append((cursor, min(end, cursor + length)))
        cursor += length
    return out


def _read_account(
    account: str,
    client: NeoClient,
    state: State,
    span: Span,
    end: float,
    total: int | None,
    progress: _Progress,
    recorder: _Recorder,
    clock: Callable[[], float],
    stop: threading.Event,
) -> _Tally:
    """Read [span.start, end] slice by slice; count each slice into the state step by step.

    A slice is counted only once its read is complete: its rows are held until then (about
    SLICE_ROWS of them), sorted by `created_at` and counted a step at a time, so that the
    state's values after each step are those of that instant.
    """
    tally = _Tally()
    carried: dict[str, float] = {}  # the last slice's rows at its end: this one's start
    progress.account = account
    for first, last in _slices(span, end, total):
        held = _Held(carried)
        listing = client.listing(
            STREAMS_PATH,
            "streams",
            first,
            last,
            {"sort": "created_at"},
            on_progress=progress.on_page,
        )
        for page in listing.pages(held.count):
            if stop.is_set():  # a stop between pages, not only in a retry's wait
                raise Stopped
            for row in page.rows:
                try:
                    record = parse_stream(row)
                except RowError as exc:
                    tally.bad_rows += 1
                    if tally.bad_rows <= 5:
                        log.warning("history: account=%s skipped a row: %s", account, exc)
                    continue
                held.rows.setdefault(record.stream_id, record)  # the first version, as ingest
        progress.read_done()
        outcome = listing.outcome
        assert outcome is not None
        if not outcome.complete:
            raise HistoryError(
                f"account {account}: the read of {format_timestamp(listing.start)}.."
                f"{format_timestamp(listing.end)} is incomplete: the API counts "
                f"{outcome.reported} streams, {outcome.found} were read (after "
                f"{outcome.repair_requests} repair requests); nothing was written"
            )
        ordered = sorted(held.rows.values(), key=lambda r: (r.created_ts, r.stream_id))
        for k, group in groupby(ordered, key=lambda r: span.index(r.created_ts)):
            rows = list(group)
            result = state.ingest(account, rows, clock())
            tally.streams += result.new
            if k < span.steps:
                recorder.note(k, state.counts(account))
            progress.on_counted(len(rows))
        carried = {sid: r.created_ts for sid, r in held.rows.items() if r.created_ts >= listing.end}
    return tally


# --- writing ---------------------------------------------------------------------------


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: Sequence[str], values: Sequence[str]) -> str:
    return ",".join(f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True))


@dataclass(slots=True)
class _Written:
    series: int = 0
    samples: int = 0


def _write_counter(
    out: BinaryIO, name: str, labels: str, series: _Series, span: Span, written: _Written
) -> None:
    first = series.first_used()
    if first is None:
        return  # zero all along: the exporter's first scrape starts it at 0
    start_k = max(0, series.steps[first] - 1)  # a 0 just before, for increase()
    changes = dict(zip(series.steps, series.values, strict=True))
    prefix = f"{name}{{{labels}}} "
    value, text = 0.0, "0.0"
    lines = []
    for k in range(start_k, span.steps):
        changed = changes.get(k)
        if changed is not None and changed != value:
            value, text = changed, _format_value(changed)
        lines.append(f"{prefix}{text} {span.at(k)}\n")
    out.write("".join(lines).encode())
    written.series += 1
    written.samples += len(lines)


def _write_histogram(
    out: BinaryIO,
    doc: Metric,
    labels: str,
    bounds: Sequence[float],
    series: _Series,
    span: Span,
    written: _Written,
) -> None:
    first = series.first_used()
    if first is None:
        return
    start_k = max(0, series.steps[first] - 1)
    width = series.width
    rows = {k: series.values[i * width : (i + 1) * width] for i, k in enumerate(series.steps)}
    les = [_format_value(b) for b in bounds] + ["+Inf"]
    sep = "," if labels else ""
    prefixes = [f'{doc.name}_bucket{{{labels}{sep}le="{le}"}} ' for le in les]
    prefixes += [f"{doc.name}_count{{{labels}}} ", f"{doc.name}_sum{{{labels}}} "]
    # The count is the +Inf bucket: one more column than the row holds.
    columns = [*range(width - 1), width - 2, width - 1]
    texts = ["0.0"] * len(prefixes)
    lines: list[str] = []
    for k in range(start_k, span.steps):
        row = rows.get(k)
        if row is not None:
            texts = [_format_value(row[c]) for c in columns]
        ts = span.at(k)
        lines.extend(f"{p}{t} {ts}\n" for p, t in zip(prefixes, texts, strict=True))
    out.write("".join(lines).encode())
    written.series += 1
    written.samples += len(lines)


def write_openmetrics(
    out: BinaryIO,
    recorders: Mapping[str, _Recorder],
    bounds: Mapping[str, Sequence[float]],
    span: Span,
    target_labels: Sequence[tuple[str, str]] = (),
) -> _Written:
    """Every family once, its series one after the other, each in time order; `# EOF`.

    No `_created` samples: promtool would store them as series of their own, which the live
    exporter's `_created` (the time the state first counted the series) would not continue.
    """
    written = _Written()
    target = "".join(f',{name}="{_escape(value)}"' for name, value in target_labels)
    for doc in COUNTERS:
        family = doc.name.removesuffix("_total")
        out.write(f"# HELP {family} {_escape(doc.help)}\n# TYPE {family} counter\n".encode())
        for account, recorder in recorders.items():
            for (metric, values), series in sorted(recorder.series.items()):
                if metric == doc.name:
                    labels = _labels(doc.labels, (account, *values)) + target
                    _write_counter(out, doc.name, labels, series, span, written)
    for doc in m.HISTOGRAMS:
        out.write(f"# HELP {doc.name} {_escape(doc.help)}\n# TYPE {doc.name} histogram\n".encode())
        for account, recorder in recorders.items():
            for (metric, values), series in sorted(recorder.series.items()):
                if metric == doc.name:
                    labels = _labels(doc.labels, (account, *values)) + target
                    _write_histogram(out, doc, labels, bounds[doc.name], series, span, written)
    out.write(b"# EOF\n")
    return written


# --- the staged state ------------------------------------------------------------------


def _remove_sqlite(path: str) -> None:
    for suffix in ("", *_SQLITE_SIDE_FILES, LOCK_SUFFIX):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path + suffix)


def _copy_state(source: str, target: str) -> None:
    """A consistent copy of `source` (its WAL included) at `target`, by SQLite's backup."""
    src = sqlite3.connect(source)
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)
        finally:
            dst.close()
    finally:
        src.close()  # the last connection: SQLite folds the WAL in and removes it


def _counted_since(state: State, account: str) -> str | None:
    """Why the state's counters of `account` cannot take a history; None if it has none."""
    counts = state.counts(account)
    marks = {kind: state.watermark(account, kind) for kind in (WATERMARK_RECONCILE,)}
    if not counts.counters and not counts.histograms and not state.seen_streams(account):
        return None
    created = min(
        [v.created for v in counts.counters.values()]
        + [v.created for v in counts.histograms.values()],
        default=None,
    )
    since = "" if created is None else f" since {format_timestamp(created)}"
    if marks[WATERMARK_RECONCILE] is None:
        return (
            f"account {account} has a first read under way in the state{since} (nothing "
            "published yet): stop the exporter, move the state file aside and run history again"
        )
    return (
        f"account {account} already has counters in the state{since}, and Prometheus has them "
        "from the exporter's first read on: a history before them cannot join without a "
        "counter reset or counting streams twice. To start over with history: stop the "
        "exporter, delete the account's series in Prometheus, move the state file aside, run "
        "history, start the exporter (docs/history.md, 'An exporter already running')"
    )


def _fsync_directory(path: str) -> None:
    fd = os.open(os.path.dirname(os.path.abspath(path)) or ".", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- the whole run ---------------------------------------------------------------------


class _Staging:
    """The output and the state, written aside and put in place together, or not at all.

    Holds the state's lock from the start to the end: an exporter started meanwhile on the
    same state is refused, and so is a history while an exporter runs.
    """

    def __init__(self, config: Config, output: str) -> None:
        self.output = output
        self.state_path = config.state.path
        self.output_tmp = output + TEMP_SUFFIX
        self.state_tmp = self.state_path + STATE_TEMP_SUFFIX
        check_state_path(self.state_path)
        try:
            self._lock = StateLock(self.state_path)
        except OSError as exc:
            raise StateError(
                f"state file {self.state_path!r} cannot be used (its lock file "
                f"{self.state_path}{LOCK_SUFFIX} cannot be opened: "
                f"{exc.strerror or type(exc).__name__})"
            ) from None
        self._placed = False
        self._raw: BinaryIO | None = None
        self.state: State | None = None
        try:
            # Opened first: an output that cannot be written fails before the long read.
            self._raw = open(self.output_tmp, "wb")  # noqa: SIM115  # closed in close()
        except OSError as exc:
            self._lock.release()
            raise HistoryError(
                f"cannot write the history file {output}: {exc.strerror or exc} ({self.output_tmp})"
            ) from None

    def open_state(self, config: Config) -> State:
        """A copy of the state (or a new one) to seed; the real file is not touched."""
        _remove_sqlite(self.state_tmp)  # left by a run that was killed
        if os.path.exists(self.state_path):
            try:
                _copy_state(self.state_path, self.state_tmp)
            except sqlite3.Error as exc:
                raise StateError(f"state file {self.state_path!r} cannot be read ({exc})") from None
        self.state = open_state(config, self.state_tmp)
        return self.state

    def finish(self, write: Callable[[BinaryIO], None]) -> int:
        """Write the output with `write`, then put output and state in place; its size.

        A name ending in .gz is written compressed (a 30-day file shrinks 25 to 30 times);
        promtool needs it uncompressed.
        """
        assert self._raw is not None and self.state is not None
        try:
            if self.output.endswith(".gz"):
                # No name and no time in the header: the same history, the same bytes.
                with gzip.GzipFile("", "wb", GZIP_LEVEL, self._raw, mtime=0) as packed:
                    write(cast(BinaryIO, packed))
            else:
                write(self._raw)
            self._raw.flush()
            os.fsync(self._raw.fileno())
            size = self._raw.tell()
            self._raw.close()
        except OSError as exc:
            raise HistoryError(
                f"cannot write the history file {self.output}: {exc.strerror or exc}; "
                "nothing was written"
            ) from None
        self.state.close()
        self.state = None
        _place(self.output_tmp, self.output, self.state_tmp, self.state_path)
        self._placed = True
        return size

    def close(self) -> None:
        """Remove whatever was not put in place; release the lock."""
        if self.state is not None:
            self.state.close()
        if self._raw is not None and not self._raw.closed:
            self._raw.close()
        if not self._placed:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.output_tmp)
            _remove_sqlite(self.state_tmp)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.state_tmp + LOCK_SUFFIX)
        self._lock.release()


def _fresh_accounts(
    state: State, accounts: Sequence[AccountConfig], options: HistoryOptions, state_path: str
) -> tuple[list[AccountConfig], list[str]]:
    fresh, skipped = [], []
    for account in accounts:
        reason = _counted_since(state, account.name)
        if reason is None:
            fresh.append(account)
        elif options.if_fresh:
            log.info("history: account %s already holds counters: left alone", account.name)
            skipped.append(account.name)
        else:
            raise HistoryRefused(f"{reason} (state file {state_path})")
    return fresh, skipped


def _precheck(config: Config, accounts: Sequence[AccountConfig], options: HistoryOptions) -> bool:
    """Whether any account can take a history; HistoryRefused if one cannot (and no
    --if-fresh). The state is opened as the exporter opens it (its lock included)."""
    check_state_path(config.state.path)
    if not os.path.exists(config.state.path):
        return True
    state = open_state(config, config.state.path)
    try:
        fresh, _ = _fresh_accounts(state, accounts, options, config.state.path)
    finally:
        state.close()
    return bool(fresh)


def run(
    config: Config,
    options: HistoryOptions,
    *,
    stop: threading.Event,
    clock: Callable[[], float] = time.time,
    monotonic: Callable[[], float] = time.monotonic,
) -> HistorySummary:
    """Read, count, write; put the output and the seeded state in place together.

    Raises HistoryUsageError, HistoryRefused or HistoryError (and the state's own
    StatePathError / StateLockedError / StateError) with nothing left behind.
    """
    started = monotonic()
    accounts = check_options(config, options)
    now = clock()
    span = plan(now, options)
    end = math.floor(now * 1000) / 1000  # the read's `to`, as the listing pins it
    summary = HistorySummary(
        (), (), span.start, span.join, end, 0, 0, 0, 0, 0, 0, 0, 0.0, options.output,
        config.state.path,
    )  # fmt: skip
    # Refused or nothing to do: said before anything is created or copied (an init
    # container asks at every pod start, and a big state takes a while to copy).
    if not _precheck(config, accounts, options):
        every = tuple(a.name for a in accounts)
        return replace(summary, skipped=every, seconds=monotonic() - started)
    staging = _Staging(config, options.output)
    clients: list[NeoClient] = []
    try:
        state = staging.open_state(config)
        # Again on the copy: an exporter may have counted between the two looks.
        fresh, left_alone = _fresh_accounts(state, accounts, options, staging.state_path)
        summary = replace(summary, skipped=tuple(left_alone))
        if not fresh:
            return replace(summary, seconds=monotonic() - started)
        clients += [NeoClient(account, config.http, wait=stop.wait) for account in fresh]
        # The totals first: the progress's denominator, and an unreachable API or a wrong
        # token fails here, before anything is read.
        totals = [_count(c, a.name, span, end) for c, a in zip(clients, fresh, strict=True)]
        progress = _Progress(sum(t or 0 for t in totals), monotonic)
        log.info(
            "history: reading %d streams of %s (%s..%s), a sample every %s up to %s",
            progress.total_rows,
            ", ".join(a.name for a in fresh),
            format_timestamp(span.start),
            format_timestamp(end),
            format_duration(span.step),
            format_timestamp(span.join),
        )
        recorders: dict[str, _Recorder] = {}
        tally = _Tally()
        for client, account, total in zip(clients, fresh, totals, strict=True):
            recorder = recorders[account.name] = _Recorder()
            try:
                done = _read_account(
                    account.name, client, state, span, end, total, progress, recorder, clock, stop
                )
            except ApiError as exc:
                raise HistoryError(f"account {account.name}: {exc}; nothing was written") from None
            tally.streams += done.streams
            tally.bad_rows += done.bad_rows
            # As if the exporter's first read of the window had ended now: it publishes at
            # once and reads on from `end`.
            state.save_marks(account.name, {WATERMARK_STREAMS: end, WATERMARK_RECONCILE: end})
        progress.report()
        bounds = histogram_bounds(config)
        written = _Written()

        def write(out: BinaryIO) -> None:
            nonlocal written
            written = write_openmetrics(out, recorders, bounds, span, options.target_labels)

        size = staging.finish(write)
        return replace(
            summary,
            accounts=tuple(a.name for a in fresh),
            rows=progress.rows_done,
            pages=progress.pages_done,
            streams=tally.streams,
            bad_rows=tally.bad_rows,
            series=written.series,
            samples=written.samples,
            bytes=size,
            seconds=monotonic() - started,
        )
    except Stopped:
        raise HistoryError("stopped before the end; nothing was written") from None
    finally:
        for client in clients:
            client.close()
        staging.close()


def _count(client: NeoClient, account: str, span: Span, end: float) -> int | None:
    try:
        return client.count(STREAMS_PATH, "streams", span.start, end, {"sort": "created_at"})
    except ApiError as exc:
        raise HistoryError(f"account {account}: {exc}; nothing was written") from None


def _place(output_tmp: str, output: str, state_tmp: str, state_path: str) -> None:
    """Output first, then the state; if the state cannot be put in place, no output either."""
    for suffix in _SQLITE_SIDE_FILES:
        side = state_path + suffix
        # The old file's WAL was folded in when its copy was taken; a non-empty one now
        # would be another process's, and would not belong to the new file.
        if os.path.exists(side) and os.path.getsize(side) > 0 and suffix != "-shm":
            raise HistoryError(
                f"{side} appeared while the history was made: is another process writing "
                "the state? nothing was written"
            )
        with contextlib.suppress(FileNotFoundError):
            os.unlink(side)
    try:
        os.replace(output_tmp, output)
    except OSError as exc:
        raise HistoryError(
            f"cannot write the history file {output}: {exc.strerror or exc}; nothing was written"
        ) from None
    try:
        os.replace(state_tmp, state_path)
    except OSError as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(output)
        raise HistoryError(
            f"cannot put the seeded state in place at {state_path}: {exc.strerror or exc}; "
            "nothing was written"
        ) from None
    _fsync_directory(output)
    _fsync_directory(state_path)


def describe(summary: HistorySummary) -> Iterator[str]:
    """The summary, and what to do next, as log lines."""
    if not summary.accounts:
        yield (
            f"history: nothing to do: every account already holds counters in "
            f"{summary.state_path} ({', '.join(summary.skipped)})"
        )
        return
    yield (
        f"history: done in {summary.seconds:.1f}s: {summary.rows} rows in {summary.pages} "
        f"pages, {summary.streams} streams counted, {summary.series} series, "
        f"{summary.samples} samples, {summary.bytes} bytes written to {summary.output}"
        + (f"; {summary.bad_rows} rows without a usable id or time" if summary.bad_rows else "")
    )
    yield (
        f"history: samples from {format_timestamp(summary.start)} to "
        f"{format_timestamp(summary.join)}; the state {summary.state_path} holds every stream "
        f"up to {format_timestamp(summary.end)}: start the exporter on it, and load the file "
        "with promtool tsdb create-blocks-from openmetrics (docs/history.md)"
    )
