"""Durable state in SQLite: seen streams, counter and histogram totals, watermarks.

Exactly-once rests on one invariant: a stream id enters the `streams` table in the same
transaction that adds its values to the counters. Whatever instant the process dies at,
the committed counters equal the sum over the committed seen set, and a re-read row is
recognised by its id. Metrics are built only from values that have been committed.

Each seen stream keeps what was counted for it (`counted`) and a fingerprint of the version
last seen. When Neo revises a counted stream, the increase of each value is added under the
labels it was first counted with, in the same transaction as its new fingerprint; a decrease
cannot be taken back from a counter, so it is counted by field instead (the stream keeps the
higher figure, and a later increase adds only what goes beyond it).

Counters and histograms are small (bounded by the label budget) and are cached in memory;
the seen set can hold millions of rows and lives only in SQLite.
"""

from __future__ import annotations

import bisect
import fcntl
import functools
import json
import logging
import math
import os
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Concatenate, ParamSpec, TypeVar

import msgspec

from exporter.models import MONEY_FIELDS, StreamRecord, TaskRecord

log = logging.getLogger(__name__)

SCHEMA_VERSION = 3
# A rowid table with a unique index: inserting a stream costs half what it did in a WITHOUT
# ROWID table keyed by its id, whose B-tree pages held few of these wide rows.
_STREAMS_TABLE = """
    CREATE TABLE IF NOT EXISTS {name} (
        account TEXT NOT NULL, stream_id TEXT NOT NULL, created_ts REAL NOT NULL,
        status TEXT NOT NULL, credits REAL NOT NULL, llm_cost REAL NOT NULL,
        neo_cost REAL NOT NULL, fingerprint TEXT NOT NULL, counted TEXT,
        UNIQUE (account, stream_id));
"""
# Covers the window gauge (count by status since a time), the completeness counts of a
# read and pruning by time, so none of them reads the table itself.
_STREAMS_INDEX = """
    CREATE INDEX IF NOT EXISTS streams_by_time_status ON streams (account, created_ts, status);
"""
OTHER = "other"
DOCUMENTED_STATUSES = ("completed", "error", "failed", "aborted", "blocked")
BYOK_VALUES = ("true", "false")

# Counters fed by every stream, labelled (model, status, byok), in the order of
# `_stream_amounts`; with the API field each one comes from (the `field` of a revision).
STREAM_COUNTERS: tuple[str, ...] = (
    "neo_streams_total",
    "neo_credits_total",
    "neo_llm_cost_usd_total",
    "neo_platform_cost_usd_total",
    "neo_steps_total",
    "neo_tool_calls_total",
    "neo_agent_triggers_total",
    "neo_llm_time_seconds_total",
    "neo_tool_time_seconds_total",
    "neo_execution_time_seconds_total",
    "neo_step_latency_seconds_total",
    "neo_step_latency_steps_total",
)
_AMOUNT_FIELDS: tuple[str | None, ...] = (
    None,  # a stream is one stream, whatever else changes
    "neo_credits",
    "llm_cost",
    "neo_cost",
    "step_count",
    "tool_calls",
    "agent_triggers",
    "llm_time_ms",
    "tool_time_ms",
    "total_execution_ms",
    "avg_step_latency_ms",
    None,  # the steps behind the latency sum: step_count's revision already says it
)
AGENT_TRIGGERS = "neo_agent_triggers_by_agent_total"  # (agent,)
TOOL_CALLS = "neo_tool_calls_by_tool_total"  # (tool,)
TOOL_TIME = "neo_tool_time_by_tool_seconds_total"  # (tool,)
CHANGED_RECORDS = "neo_exporter_changed_records_total"  # ()
REVISIONS = "neo_exporter_revisions_total"  # (field, direction)
REVISED_DOWN = "neo_exporter_revised_down_total"  # (field,)
TOOL_CALL_DURATION = "neo_tool_call_duration_seconds"  # histogram (tool,)
STREAM_DURATION = "neo_stream_duration_seconds"  # histogram (model,)
STEP_LATENCY = "neo_stream_step_latency_seconds"  # histogram (model,)
# Directions of a revision: a value went up (added), down (kept), or a label changed (kept).
UP, DOWN, CHANGED = "up", "down", "changed"

WATERMARK_STREAMS = "streams_to"  # `to` of the last complete streams read
WATERMARK_RECONCILE = "reconcile_to"  # `to` of the last complete read of the whole window
WATERMARK_HORIZON = "prune_horizon"  # rows created before this may have left the seen set
WATERMARK_SWEEP_TO = "sweep_to"  # `to` of a read of the whole window in progress
WATERMARK_SWEEP_CURSOR = "sweep_cursor"  # that read is complete from its start up to here

Key = tuple[str, tuple[str, ...]]  # (metric name, label values without `account`)


class StateError(RuntimeError):
    """The state file cannot be used; the message says how to recover."""


class StatePathError(StateError):
    """`state.path` cannot be used: its directory is missing, or it cannot be written."""

    def __init__(self, message: str, *, missing_directory: bool) -> None:
        super().__init__(message)
        self.missing_directory = missing_directory


class StateLockedError(StateError):
    """Another process holds the state file's lock."""


class StateWriteError(StateError):
    """A write to the state failed while running (full disk, read-only file system)."""


MEMORY = ":memory:"
LOCK_SUFFIX = ".lock"


def check_state_path(path: str) -> None:
    """Raise StatePathError unless the state at `path` can be opened and written.

    Creates nothing: it runs before the listening socket is bound. SQLite writes `-wal` and
    `-shm` files beside the state, and the lock file lives there too, so the directory must
    be writable even when the file already exists.
    """
    if path == MEMORY:
        return
    full = os.path.abspath(path)  # as SQLite will open it: no ~ expansion
    directory = os.path.dirname(full)
    if not os.path.isdir(directory):
        what = "is not a directory" if os.path.exists(directory) else "does not exist"
        raise StatePathError(
            f"state.path: directory {directory} {what} (create it, or point state.path at an "
            "existing directory)",
            missing_directory=True,
        )
    user = f"this user (uid {os.geteuid()})"
    if os.path.isdir(full):
        raise StatePathError(
            f"state.path: {full} is a directory (expected a file path, like "
            f"{os.path.join(full, 'neo-exporter.db')})",
            missing_directory=False,
        )
    if os.path.exists(full) and not os.access(full, os.R_OK | os.W_OK):
        raise StatePathError(
            f"state.path: {full} is not writable by {user} (make it so, with chown or chmod, "
            "or point state.path at a copy the exporter may write)",
            missing_directory=False,
        )
    if not os.access(directory, os.W_OK | os.X_OK):
        raise StatePathError(
            f"state.path: directory {directory} is not writable by {user} (the exporter "
            f"creates {os.path.basename(full)}{LOCK_SUFFIX} and SQLite its -wal and -shm files "
            "there; make it writable, or point state.path at another directory)",
            missing_directory=False,
        )


class StateLock:
    """An exclusive lock on `PATH.lock`, held until `release()` or the process's end.

    flock, not the file's existence, is the lock: it goes away with the process however it
    ends, so a crash leaves no stale lock. The file holds the holder's pid, for the message
    the next process gets.
    """

    def __init__(self, path: str) -> None:
        self.path = path + LOCK_SUFFIX
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            os.close(fd)
            who = f"pid {holder}" if holder.isdigit() else "a process"
            raise StateLockedError(
                f"state file {path!r} is in use by another neo-exporter ({who}; lock "
                f"{self.path}): run one exporter per state file. For a one-off read while it "
                "runs, use --once, which reads into a temporary state by default"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor releases the flock
            self._fd = None


@dataclass(frozen=True, slots=True)
class StateHealth:
    """Whether the state can be written, for the landing page and neo_exporter_state_writable."""

    path: str
    writable: bool = True
    error: str | None = None  # SQLite's reason of the last failed write
    since: float | None = None  # Unix time of the first failed write in a row


P = ParamSpec("P")
R = TypeVar("R")


def _writes(
    *, proves_writable: bool
) -> Callable[[Callable[Concatenate[State, P], R]], Callable[Concatenate[State, P], R]]:
    """Turn a failed write into StateWriteError, and note it (and recovery) in the health.

    `proves_writable`: a success writes the state file itself (temporary tables do not, so
    they cannot tell that it became writable again).
    """

    def decorate(method: Callable[Concatenate[State, P], R]) -> Callable[Concatenate[State, P], R]:
        @functools.wraps(method)
        def wrapper(self: State, /, *args: P.args, **kwargs: P.kwargs) -> R:
            try:
                result = method(self, *args, **kwargs)
            except sqlite3.OperationalError as exc:
                root: BaseException = exc
                # A ROLLBACK that fails after a failed COMMIT hides the reason: find it.
                while isinstance(root.__context__, sqlite3.Error):
                    root = root.__context__
                self._note_write(str(root))
                raise StateWriteError(
                    f"state file {self._path!r} cannot be written ({root}): nothing new is "
                    "counted until it can; the last committed values are still served"
                ) from exc
            if proves_writable:
                self._note_write(None)
            return result

        return wrapper

    return decorate


@dataclass(frozen=True, slots=True)
class CounterValue:
    value: float
    created: float


@dataclass(frozen=True, slots=True)
class HistogramValue:
    bounds: tuple[float, ...]
    buckets: tuple[int, ...]  # per bucket, not cumulative; the last one is +Inf
    sum: float
    count: int
    created: float

    def observe(self, value: float) -> HistogramValue:
        buckets = list(self.buckets)
        buckets[bisect.bisect_left(self.bounds, value)] += 1  # `le` is inclusive
        return HistogramValue(
            self.bounds, tuple(buckets), self.sum + value, self.count + 1, self.created
        )


@dataclass(frozen=True, slots=True)
class LabelLimitsView:
    model: int
    status: int
    tool: int
    agent: int


@dataclass(frozen=True, slots=True)
class Counts:
    """Committed counter and histogram values of one account (copies: safe to share)."""

    counters: Mapping[Key, CounterValue]
    histograms: Mapping[Key, HistogramValue]


@dataclass(slots=True)
class IngestResult:
    new: int = 0
    duplicates: int = 0
    changed: int = 0  # counted before, now revised: increases added, the rest counted
    before_horizon: int = 0
    changed_ids: list[str] = field(default_factory=list)
    decreased_ids: list[str] = field(default_factory=list)  # revised down or relabelled
    repairs: Counter[str] = field(default_factory=Counter)  # of the rows counted or revised


@dataclass(frozen=True, slots=True)
class TaskWindow:
    """Sums over the distinct tasks of one tasks read (window gauges: tasks change)."""

    tasks_by_status: Mapping[str, int]
    credits: float
    llm_cost: float
    platform_cost: float


@dataclass(slots=True)
class _Account:
    counters: dict[Key, CounterValue] = field(default_factory=dict)
    histograms: dict[Key, HistogramValue] = field(default_factory=dict)
    labels: dict[str, set[str]] = field(default_factory=dict)  # label -> values in use
    watermarks: dict[str, float] = field(default_factory=dict)
    # Seen rows by folded status, kept with each commit: the window gauge then reads only
    # the rows older than the window (about one lookback), not the whole window, per poll.
    seen_by_status: dict[str, int] = field(default_factory=dict)
    # What counts() last returned, until the next commit: a poll that commits nothing
    # publishes the same object, so a scrape knows the counters are unchanged by identity.
    published: Counts | None = None


class State:
    """One SQLite file (or `:memory:`) shared by all accounts; every write is serialised."""

    def __init__(
        self,
        path: str,
        *,
        bounds: Mapping[str, tuple[float, ...]],
        limits: LabelLimitsView,
    ) -> None:
        self._bounds = dict(bounds)
        self._limits = limits
        self._lock = threading.RLock()
        self._accounts: dict[str, _Account] = {}
        self._path = path
        self._health = StateHealth(path)
        # One writer per file: taken before SQLite opens it, released after it is closed.
        try:
            self._file_lock = None if path == MEMORY else StateLock(path)
        except OSError as exc:
            raise StateError(
                f"state file {path!r} cannot be used (its lock file {path}{LOCK_SUFFIX} cannot "
                f"be opened: {exc.strerror or type(exc).__name__})"
            ) from None
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._prepare()
            self._load()
        except BaseException as exc:
            if self._file_lock is not None:
                self._file_lock.release()
            if not isinstance(exc, sqlite3.DatabaseError):
                raise
            raise StateError(
                f"state file {path!r} cannot be used ({exc}). If it is damaged, stop the "
                "exporter, move the file aside and start again: the exporter re-reads the "
                "configured window and counters start over (Prometheus sees a counter reset)."
            ) from exc

    # --- set-up ------------------------------------------------------------------------

    def _prepare(self) -> None:
        db = self._db
        db.execute("PRAGMA journal_mode=WAL")
        # WAL + NORMAL survives a killed process (not a power cut) and avoids a sync per commit.
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=5000")
        # The tasks read's scratch rows spill to an unlinked temporary file past a small page
        # cache (SQLite picks TMPDIR, /tmp, or the working directory), never into memory.
        db.execute("PRAGMA temp_store=FILE")
        db.execute(
            "CREATE TEMP TABLE IF NOT EXISTS task_read (account TEXT NOT NULL, "
            "task_id TEXT NOT NULL, created_ts REAL NOT NULL, status TEXT NOT NULL, "
            "credits REAL NOT NULL, llm_cost REAL NOT NULL, neo_cost REAL NOT NULL, "
            "PRIMARY KEY (account, task_id)) WITHOUT ROWID"
        )
        db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        version = SCHEMA_VERSION if row is None else int(row[0])
        if version not in (1, 2, SCHEMA_VERSION):
            raise sqlite3.DatabaseError(
                f"schema version {version}, this exporter reads version {SCHEMA_VERSION}"
            )
        if version == SCHEMA_VERSION:
            db.execute(_STREAMS_TABLE.format(name="streams"))
            db.execute(_STREAMS_INDEX)
        db.executescript(
            """
            CREATE TABLE IF NOT EXISTS counters (
                account TEXT NOT NULL, metric TEXT NOT NULL, labels TEXT NOT NULL,
                value REAL NOT NULL, created REAL NOT NULL,
                PRIMARY KEY (account, metric, labels));
            CREATE TABLE IF NOT EXISTS histograms (
                account TEXT NOT NULL, metric TEXT NOT NULL, labels TEXT NOT NULL,
                bounds TEXT NOT NULL, buckets TEXT NOT NULL, sum REAL NOT NULL,
                count INTEGER NOT NULL, created REAL NOT NULL,
                PRIMARY KEY (account, metric, labels));
            CREATE TABLE IF NOT EXISTS watermarks (
                account TEXT NOT NULL, kind TEXT NOT NULL, ts REAL NOT NULL,
                PRIMARY KEY (account, kind));
            """
        )
        if row is None:
            db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        elif version < SCHEMA_VERSION:
            self._upgrade(version)

    def _upgrade(self, version: int) -> None:
        """Bring a state file of an older schema version to this one, in one transaction.

        Version 1 kept no `counted` values: its rows take their next version as a baseline.
        Version 2 kept the streams in a WITHOUT ROWID table, which costs twice as much CPU
        to insert into once each row holds its counted values (about 240 bytes).

        Older fingerprints were digests of the parsed values (version 1: of the first
        version); fingerprints are now digests of the row's raw bytes. So the first re-read
        of an older row finds a new fingerprint: a version 1 row adopts what it sees as its
        baseline, a version 2 row is compared with what was counted, and only a real change
        counts as a revision (see `ingest`).
        """
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            counted = "NULL" if version == 1 else "counted"
            db.execute(_STREAMS_TABLE.format(name="streams_next"))
            db.execute(
                "INSERT INTO streams_next SELECT account, stream_id, created_ts, status, "  # noqa: S608
                f"credits, llm_cost, neo_cost, fingerprint, {counted} FROM streams "
                "ORDER BY account, created_ts"
            )
            db.execute("DROP TABLE streams")
            db.execute("ALTER TABLE streams_next RENAME TO streams")
            db.execute(_STREAMS_INDEX)
            db.execute(
                "UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),)
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        log.info("state file upgraded from schema version %d to %d", version, SCHEMA_VERSION)

    def _load(self) -> None:
        for account, metric, labels, value, created in self._db.execute(
            "SELECT account, metric, labels, value, created FROM counters"
        ):
            key = (metric, tuple(json.loads(labels)))
            acct = self._account(account)
            acct.counters[key] = CounterValue(value, created)
            self._note_labels(acct, key)
        dropped: set[str] = set()
        for account, metric, labels, bounds, buckets, total, count, created in self._db.execute(
            "SELECT account, metric, labels, bounds, buckets, sum, count, created FROM histograms"
        ):
            stored = tuple(json.loads(bounds))
            if stored != self._bounds.get(metric):
                dropped.add(metric)
                continue
            key = (metric, tuple(json.loads(labels)))
            acct = self._account(account)
            acct.histograms[key] = HistogramValue(
                stored, tuple(json.loads(buckets)), total, count, created
            )
            self._note_labels(acct, key)
        for metric in sorted(dropped):
            # Old observations cannot be re-bucketed; the histogram starts over (a reset).
            log.warning("buckets of %s changed in the config: its histogram starts over", metric)
            self._db.execute("DELETE FROM histograms WHERE metric = ?", (metric,))
        for account, kind, ts in self._db.execute("SELECT account, kind, ts FROM watermarks"):
            self._account(account).watermarks[kind] = ts
        for account, status, count in self._db.execute(
            "SELECT account, status, COUNT(*) FROM streams GROUP BY account, status"
        ):
            self._account(account).seen_by_status[status] = count

    def _account(self, name: str) -> _Account:
        acct = self._accounts.get(name)
        if acct is None:
            acct = self._accounts[name] = _Account()
        return acct

    @staticmethod
    def _note_labels(acct: _Account, key: Key) -> None:
        metric, values = key
        names = _LABEL_NAMES.get(metric, ())
        for name, value in zip(names, values, strict=True):
            acct.labels.setdefault(name, set()).add(value)

    def close(self) -> None:
        with self._lock:
            self._db.close()
            if self._file_lock is not None:
                self._file_lock.release()

    def health(self) -> StateHealth:
        return self._health

    def _note_write(self, error: str | None) -> None:
        """Record a write's outcome; the health is replaced whole, so readers need no lock."""
        current = self._health
        if error is None:
            if not current.writable:
                log.info("state file %r can be written again", self._path)
                self._health = StateHealth(self._path)
        elif current.writable:
            self._health = StateHealth(self._path, False, error, time.time())
        else:
            self._health = StateHealth(self._path, False, error, current.since)

    # --- one tasks read ----------------------------------------------------------------
    # A tasks read may see a task twice (offset paging); its distinct ids are kept here,
    # not in a Python set, so memory does not grow with the window's tasks.

    @_writes(proves_writable=False)
    def add_read_tasks(self, account: str, tasks: Iterable[TaskRecord]) -> None:
        """Add tasks to the current read of `account`; a task already in it is ignored."""
        rows = [
            (account, t.task_id, t.created_ts, t.status, t.credits, t.llm_cost, t.neo_cost)
            for t in tasks
        ]
        with self._lock:
            self._db.executemany(
                "INSERT OR IGNORE INTO temp.task_read VALUES (?,?,?,?,?,?,?)", rows
            )

    def count_read_tasks(self, account: str, start: float, end: float) -> int:
        """Distinct tasks of the current read created in [start, end]."""
        with self._lock:
            row = self._db.execute(
                "SELECT COUNT(*) FROM temp.task_read "
                "WHERE account = ? AND created_ts >= ? AND created_ts <= ?",
                (account, start, end),
            ).fetchone()
        return int(row[0])

    def tasks_read_totals(self, account: str) -> TaskWindow:
        """Sums over the distinct tasks of the current read of `account`."""
        with self._lock:
            groups = self._db.execute(
                "SELECT status, COUNT(*), TOTAL(credits), TOTAL(llm_cost), TOTAL(neo_cost) "
                "FROM temp.task_read WHERE account = ? GROUP BY status ORDER BY status",
                (account,),
            ).fetchall()
        return TaskWindow(
            {status: count for status, count, *_ in groups},
            math.fsum(g[2] for g in groups),
            math.fsum(g[3] for g in groups),
            math.fsum(g[4] for g in groups),
        )

    def discard_tasks_read(self, account: str) -> None:
        """End the current read of `account`: the next one starts empty."""
        with self._lock:
            self._db.execute("DELETE FROM temp.task_read WHERE account = ?", (account,))

    # --- reads ---------------------------------------------------------------------------

    def counts(self, account: str) -> Counts:
        """The account's counters and histograms; the same object until the next commit."""
        with self._lock:
            acct = self._account(account)
            if acct.published is None:
                acct.published = Counts(dict(acct.counters), dict(acct.histograms))
            return acct.published

    def watermark(self, account: str, kind: str) -> float | None:
        with self._lock:
            return self._account(account).watermarks.get(kind)

    def window_streams(self, account: str, since: float) -> dict[str, int]:
        """Seen streams created at or after `since`, by (folded) status."""
        with self._lock:
            counts = dict(self._account(account).seen_by_status)
            for status, older in self._older_by_status(account, since):
                counts[status] -= older
        return {status: count for status, count in counts.items() if count > 0}

    def _older_by_status(self, account: str, before: float) -> list[tuple[str, int]]:
        return self._db.execute(
            "SELECT status, COUNT(*) FROM streams WHERE account = ? AND created_ts < ? "
            "GROUP BY status",
            (account, before),
        ).fetchall()

    def count_streams(self, account: str, start: float, end: float) -> int:
        """Seen streams created in [start, end] (what a complete read must have reached)."""
        with self._lock:
            row = self._db.execute(
                "SELECT COUNT(*) FROM streams "
                "WHERE account = ? AND created_ts >= ? AND created_ts <= ?",
                (account, start, end),
            ).fetchone()
        return int(row[0])

    def fingerprints(self, account: str, ids: Sequence[str]) -> dict[str, str]:
        """The fingerprints of those of `ids` already seen: a re-read row whose raw bytes
        are the same need not be decoded at all."""
        with self._lock:
            return self._existing(account, ids)

    def counted_in(self, account: str, start: float, end: float) -> tuple[int, float]:
        """Streams counted with a `created_at` in [start, end], and their credits as counted."""
        with self._lock:
            credits = [
                value
                for (value,) in self._db.execute(
                    "SELECT credits FROM streams "
                    "WHERE account = ? AND created_ts >= ? AND created_ts <= ?",
                    (account, start, end),
                )
            ]
        return len(credits), math.fsum(credits)

    def seen_streams(self, account: str) -> int:
        with self._lock:
            return sum(self._account(account).seen_by_status.values())

    def size_bytes(self) -> int:
        with self._lock:
            pages = self._db.execute("PRAGMA page_count").fetchone()[0]
            size = self._db.execute("PRAGMA page_size").fetchone()[0]
        return int(pages) * int(size)

    # --- writes --------------------------------------------------------------------------

    def ingest(self, account: str, records: Iterable[StreamRecord], now: float) -> IngestResult:
        """Count the records not seen before and the revisions of those seen, in one transaction."""
        with self._lock:
            acct = self._account(account)
            batch: dict[str, StreamRecord] = {}
            result = IngestResult()
            horizon = acct.watermarks.get(WATERMARK_HORIZON, float("-inf"))
            for record in records:
                if record.created_ts < horizon:
                    # It may have been counted and pruned since: counting it could count twice.
                    result.before_horizon += 1
                elif record.stream_id in batch:
                    result.duplicates += 1
                else:
                    batch[record.stream_id] = record
            existing = self._existing(account, list(batch))
            work = _Work(acct, self._limits, self._bounds, now)
            if batch and (REVISIONS, (MONEY_FIELDS[0], UP)) not in acct.counters:
                work.zero_revisions()
            new_rows: list[tuple[object, ...]] = []
            changed_rows: list[tuple[object, ...]] = []
            revised: list[StreamRecord] = []
            for stream_id, record in batch.items():
                known = existing.get(stream_id)
                if known is None:
                    status, amounts, counted_json = work.add(record)
                    new_rows.append(
                        (
                            account,
                            stream_id,
                            record.created_ts,
                            status,
                            amounts[1],
                            amounts[2],
                            amounts[3],
                            record.fingerprint,
                            counted_json,
                        )
                    )
                    result.repairs.update(record.repairs)
                    continue
                if known == record.fingerprint:
                    result.duplicates += 1
                    continue
                revised.append(record)
            stored_of = self._counted_of(account, [r.stream_id for r in revised])
            for record in revised:
                stream_id, stored = record.stream_id, stored_of[record.stream_id]
                if stored is None:
                    # A row of schema version 1: its counted values were not kept, so this
                    # version becomes its baseline (see _migrate_from_1).
                    counted, lowered = work.baseline(record), False
                else:
                    before = _Counted.loads(stored)
                    counted, lowered, events = work.revise(before, record)
                    if events or counted != before:
                        result.changed += 1
                        result.changed_ids.append(stream_id)
                        if lowered:
                            result.decreased_ids.append(stream_id)
                        result.repairs.update(record.repairs)
                        work.bump(CHANGED_RECORDS, (), 1.0)
                    # Else only what no metric reads changed (its bytes: another field, or
                    # a fingerprint of an older make-up): the new fingerprint is kept alone.
                changed_rows.append(
                    (
                        record.fingerprint,
                        counted.dumps(),
                        counted.amounts[1],
                        counted.amounts[2],
                        counted.amounts[3],
                        account,
                        stream_id,
                    )
                )
            result.new = len(new_rows)
            work.freeze()
            if new_rows or changed_rows:
                self._commit(account, acct, work, new_rows, changed_rows)
            return result

    def _existing(self, account: str, ids: Sequence[str]) -> dict[str, str]:
        """The fingerprints of the ids already seen (re-reads are mostly these)."""
        return dict(self._select(account, "fingerprint", ids))

    def _counted_of(self, account: str, ids: Sequence[str]) -> dict[str, str | None]:
        """What was counted for these seen ids (only revised ones need it)."""
        return dict(self._select(account, "counted", ids))

    def _select(self, account: str, column: str, ids: Sequence[str]) -> list[tuple[str, Any]]:
        rows: list[tuple[str, Any]] = []
        step = 500  # well under SQLite's host-parameter limit
        for start in range(0, len(ids), step):
            chunk = ids[start : start + step]
            marks = ",".join("?" * len(chunk))
            rows += self._db.execute(
                f"SELECT stream_id, {column} FROM streams "  # noqa: S608
                f"WHERE account = ? AND stream_id IN ({marks})",
                (account, *chunk),
            ).fetchall()
        return rows

    @_writes(proves_writable=True)
    def _commit(
        self,
        account: str,
        acct: _Account,
        work: _Work,
        new_rows: list[tuple[object, ...]],
        changed_rows: list[tuple[object, ...]],
    ) -> None:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(
                "INSERT INTO streams (account, stream_id, created_ts, status, credits, llm_cost, "
                "neo_cost, fingerprint, counted) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                new_rows,
            )
            # A revision's new fingerprint and counted values commit with its increments.
            db.executemany(
                "UPDATE streams SET fingerprint = ?, counted = ?, credits = ?, llm_cost = ?, "
                "neo_cost = ? WHERE account = ? AND stream_id = ?",
                changed_rows,
            )
            db.executemany(
                "INSERT INTO counters (account, metric, labels, value, created) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (account, metric, labels) "
                "DO UPDATE SET value = excluded.value",
                [
                    (account, metric, json.dumps(labels), value.value, value.created)
                    for (metric, labels), value in work.counters.items()
                ],
            )
            db.executemany(
                "INSERT INTO histograms (account, metric, labels, bounds, buckets, sum, count, "
                "created) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (account, metric, labels) "
                "DO UPDATE SET buckets = excluded.buckets, sum = excluded.sum, "
                "count = excluded.count",
                [
                    (
                        account,
                        metric,
                        json.dumps(labels),
                        json.dumps(value.bounds),
                        json.dumps(value.buckets),
                        value.sum,
                        value.count,
                        value.created,
                    )
                    for (metric, labels), value in work.histograms.items()
                ],
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        # Only now, with everything on disk, do the new values become visible.
        for row in new_rows:
            status = str(row[3])
            acct.seen_by_status[status] = acct.seen_by_status.get(status, 0) + 1
        acct.counters.update(work.counters)
        acct.histograms.update(work.histograms)
        acct.published = None
        for name, values in work.new_labels.items():
            acct.labels.setdefault(name, set()).update(values)

    @_writes(proves_writable=True)
    def save_marks(
        self,
        account: str,
        marks: Mapping[str, float | None],
        *,
        prune_before: float | None = None,
    ) -> int:
        """Set (or, with None, clear) watermarks; drop seen rows older than `prune_before`.

        Returns the number of rows pruned.
        """
        with self._lock:
            acct = self._account(account)
            settled = dict(marks)
            if prune_before is not None:
                settled[WATERMARK_HORIZON] = max(
                    prune_before, acct.watermarks.get(WATERMARK_HORIZON, float("-inf"))
                )
            horizon = settled.get(WATERMARK_HORIZON)
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                leaving: list[tuple[str, int]] = []
                pruned = 0
                if prune_before is not None and horizon is not None:
                    leaving = self._older_by_status(account, horizon)
                    pruned = db.execute(
                        "DELETE FROM streams WHERE account = ? AND created_ts < ?",
                        (account, horizon),
                    ).rowcount
                db.executemany(
                    "INSERT INTO watermarks (account, kind, ts) VALUES (?, ?, ?) "
                    "ON CONFLICT (account, kind) DO UPDATE SET ts = excluded.ts",
                    [(account, kind, ts) for kind, ts in settled.items() if ts is not None],
                )
                db.executemany(
                    "DELETE FROM watermarks WHERE account = ? AND kind = ?",
                    [(account, kind) for kind, ts in settled.items() if ts is None],
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            for kind, ts in settled.items():
                if ts is None:
                    acct.watermarks.pop(kind, None)
                else:
                    acct.watermarks[kind] = ts
            for status, count in leaving:
                acct.seen_by_status[status] -= count
            return int(pruned)


# Label names of each stored series, in order; `account` is added by the collector.
_LABEL_NAMES: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(STREAM_COUNTERS, ("model", "status", "byok")),
    AGENT_TRIGGERS: ("agent",),
    TOOL_CALLS: ("tool",),
    TOOL_TIME: ("tool",),
    CHANGED_RECORDS: (),
    REVISIONS: ("field", "direction"),
    REVISED_DOWN: ("field",),
    TOOL_CALL_DURATION: ("tool",),
    STREAM_DURATION: ("model",),
    STEP_LATENCY: ("model",),
}


class _Hist:
    """A histogram being added to within one transaction (frozen at the end).

    Observations wait in `pending`, in order, and are put in buckets once, at `frozen()`:
    a backfill observes about ten values per stream, and a call per value was a tenth of
    its cost. The sum is added up in the same order as one observation at a time.
    """

    __slots__ = ("pending", "value")

    def __init__(self, value: HistogramValue) -> None:
        self.value = value
        self.pending: list[float] = []

    def observe(self, value: float) -> None:
        self.pending.append(value)

    def frozen(self) -> HistogramValue:
        value = self.value
        bounds, buckets, total = value.bounds, list(value.buckets), value.sum
        where = bisect.bisect_left  # `le` is inclusive
        for observed in self.pending:
            buckets[where(bounds, observed)] += 1
            total += observed
        count = value.count + len(self.pending)
        return HistogramValue(bounds, tuple(buckets), total, count, value.created)


def _stream_amounts(r: StreamRecord) -> tuple[float, ...]:
    """What each of STREAM_COUNTERS adds for one stream, in the same order (the hot path).

    An absent value adds 0; the step latency sum and its steps only where both are present.
    """
    steps, latency = r.steps, r.step_latency
    both = steps is not None and latency is not None
    return (
        1.0,
        r.credits,
        r.llm_cost,
        r.neo_cost,
        float(steps or 0),
        float(r.tool_calls or 0),
        float(r.agent_triggers or 0),
        r.llm_time or 0.0,
        r.tool_time or 0.0,
        r.execution_time or 0.0,
        latency * steps if both else 0.0,  # type: ignore[operator]  # both checked above
        float(steps) if both else 0.0,  # type: ignore[arg-type]
    )


_COUNTED_JSON = msgspec.json.Encoder().encode


@dataclass(slots=True)
class _Counted:
    """What has been counted for one stream: stored as JSON in `streams.counted`.

    Labels are the (folded) ones it was first counted under; amounts follow STREAM_COUNTERS
    and only ever rise; breakdowns are by the API's names, folded when they are added to.
    """

    model: str
    status: str
    byok: str
    amounts: list[float]
    duration_observed: bool
    latency_observed: bool
    history: int  # tool_call_history entries observed
    agents: dict[str, int]
    tools: dict[str, list[float]]  # tool -> [calls, seconds]

    def dumps(self) -> bytes:
        return _COUNTED_JSON(
            [
                self.model,
                self.status,
                self.byok,
                self.amounts,
                int(self.duration_observed),
                int(self.latency_observed),
                self.history,
                self.agents,
                self.tools,
            ]
        )

    @classmethod
    def loads(cls, text: str | bytes) -> _Counted:
        model, status, byok, amounts, duration, latency, history, agents, tools = (
            msgspec.json.decode(text)
        )
        if not isinstance(tools, dict):  # as a new stream's values are first written
            tools = {tool: [calls, seconds] for tool, calls, seconds in tools}
        return cls(
            model,
            status,
            byok,
            list(amounts),
            bool(duration),
            bool(latency),
            history,
            dict(agents),
            tools,
        )


class _Work:
    """The pending changes of one transaction: new totals and newly used label values.

    Totals are added to in place (a list per series) and frozen once by `freeze()`: a
    backfill adds a few dozen values per stream, and a new immutable object for each was
    most of its cost. Each total is summed in the same order as before, so to the last bit.
    """

    def __init__(
        self,
        acct: _Account,
        limits: LabelLimitsView,
        bounds: Mapping[str, tuple[float, ...]],
        now: float,
    ) -> None:
        self._acct = acct
        self._limits = {
            "model": limits.model,
            "status": limits.status,
            "tool": limits.tool,
            "agent": limits.agent,
        }
        self._bounds = bounds
        self._now = now
        self._values: dict[Key, list[float]] = {}  # [value, created]
        self._hists: dict[Key, _Hist] = {}
        # Within one transaction a label value always folds the same way: remember it.
        self._folded: dict[tuple[str, str], str] = {}
        self._stream_slots: dict[tuple[str, ...], list[list[float]]] = {}
        # Per tool name as the API sends it: its calls and time totals and its durations.
        self._tool_slots: dict[str, tuple[list[float], list[float], list[float]]] = {}
        self.counters: dict[Key, CounterValue] = {}
        self.histograms: dict[Key, HistogramValue] = {}
        self.new_labels: dict[str, set[str]] = {}

    def freeze(self) -> None:
        """Turn the pending totals into `counters` and `histograms` (values to commit)."""
        self.counters = {k: CounterValue(v[0], v[1]) for k, v in self._values.items()}
        self.histograms = {k: h.frozen() for k, h in self._hists.items()}

    def _fold(self, name: str, value: str) -> str:
        """Keep a value if it is known or the label's budget has room; else `other`."""
        folded = self._folded.get((name, value))
        if folded is None:
            folded = self._folded[(name, value)] = self._fold_new(name, value)
        return folded

    def _fold_new(self, name: str, value: str) -> str:
        known = self._acct.labels.get(name, set())
        pending = self.new_labels.setdefault(name, set())
        if value in known or value in pending:
            return value
        if value != OTHER and len(known - {OTHER}) + len(pending - {OTHER}) >= self._limits[name]:
            value = OTHER
            if value in known or value in pending:
                return value
        pending.add(value)
        self._zero_fill(name, value)
        return value

    def _zero_fill(self, name: str, value: str) -> None:
        """Start the known label sets of a new model or status at 0, for `increase()`."""
        if name == "model":
            statuses = self._values_of("status") | set(DOCUMENTED_STATUSES)
            # Documented statuses are in use from now on, exactly as after a reload.
            self.new_labels.setdefault("status", set()).update(
                statuses - self._acct.labels.get("status", set())
            )
            for status in statuses:
                for byok in BYOK_VALUES:
                    for metric in STREAM_COUNTERS:
                        self.bump(metric, (value, status, byok), 0.0)
            for metric in (STREAM_DURATION, STEP_LATENCY):
                self._histogram(metric, (value,))
        elif name == "status":
            for model in self._values_of("model"):
                for byok in BYOK_VALUES:
                    for metric in STREAM_COUNTERS:
                        self.bump(metric, (model, value, byok), 0.0)

    def zero_revisions(self) -> None:
        """Start the revision counters of money and labels at 0, for `increase()` (alerts)."""
        for money in MONEY_FIELDS:
            for direction in (UP, DOWN):
                self.bump(REVISIONS, (money, direction), 0.0)
            self.bump(REVISED_DOWN, (money,), 0.0)
        for label in ("model", "status", "is_byok"):
            self.bump(REVISIONS, (label, CHANGED), 0.0)

    def _values_of(self, name: str) -> set[str]:
        return self._acct.labels.get(name, set()) | self.new_labels.get(name, set())

    def _slot(self, key: Key) -> list[float]:
        slot = self._values.get(key)
        if slot is None:
            current = self._acct.counters.get(key)
            slot = [0.0, self._now] if current is None else [current.value, current.created]
            self._values[key] = slot
        return slot

    def bump(self, metric: str, labels: tuple[str, ...], amount: float) -> None:
        self._slot((metric, labels))[0] += amount

    def _histogram(self, metric: str, labels: tuple[str, ...]) -> _Hist:
        key = (metric, labels)
        hist = self._hists.get(key)
        if hist is None:
            current = self._acct.histograms.get(key)
            if current is None:
                bounds = self._bounds[metric]
                current = HistogramValue(bounds, (0,) * (len(bounds) + 1), 0.0, 0, self._now)
            hist = self._hists[key] = _Hist(current)
        return hist

    def observe(self, metric: str, labels: tuple[str, ...], value: float) -> None:
        self._histogram(metric, labels).observe(value)

    def add(self, record: StreamRecord) -> tuple[str, tuple[float, ...], bytes]:
        """Add one new stream's values; returns its (folded) status, its amounts and what
        was counted for it as stored (`_Counted`'s JSON, written without building one)."""
        fold = self._fold
        model = fold("model", record.model)
        status = fold("status", record.status)
        labels = (model, status, record.byok)
        slots = self._stream_slots.get(labels)
        if slots is None:
            slots = [self._slot((metric, labels)) for metric in STREAM_COUNTERS]
            self._stream_slots[labels] = slots
        amounts = _stream_amounts(record)
        for slot, amount in zip(slots, amounts, strict=True):
            slot[0] += amount
        for agent, count in record.agent_breakdown:
            self.bump(AGENT_TRIGGERS, (fold("agent", agent),), float(count))
        tool_slots = self._tool_slots
        for tool, calls, seconds in record.tool_usage:
            found = tool_slots.get(tool) or self._tool(tool)
            found[0][0] += calls
            found[1][0] += seconds
        for tool, seconds in record.tool_durations:
            (tool_slots.get(tool) or self._tool(tool))[2].append(seconds)
        if record.execution_time is not None:
            self._histogram(STREAM_DURATION, (model,)).observe(record.execution_time)
        if record.step_latency is not None:
            self._histogram(STEP_LATENCY, (model,)).observe(record.step_latency)
        return (
            status,
            amounts,
            _COUNTED_JSON(
                (
                    model,
                    status,
                    record.byok,
                    amounts,
                    record.execution_time is not None,
                    record.step_latency is not None,
                    len(record.tool_durations),
                    record.agent_breakdown,  # pairs: read back as a dict
                    record.tool_usage,  # (tool, calls, seconds): read back as a dict
                )
            ),
        )

    def _tool(self, tool: str) -> tuple[list[float], list[float], list[float]]:
        label = (self._fold("tool", tool),)
        found = self._tool_slots[tool] = (
            self._slot((TOOL_CALLS, label)),
            self._slot((TOOL_TIME, label)),
            self._histogram(TOOL_CALL_DURATION, label).pending,
        )
        return found

    def baseline(self, record: StreamRecord) -> _Counted:
        """What `add` would have counted for this version, without adding anything."""
        labels = (self._fold("model", record.model), self._fold("status", record.status))
        return self._counted((*labels, record.byok), _stream_amounts(record), record)

    @staticmethod
    def _counted(
        labels: tuple[str, ...], amounts: Sequence[float], record: StreamRecord
    ) -> _Counted:
        return _Counted(
            labels[0],
            labels[1],
            labels[2],
            list(amounts),
            record.execution_time is not None,
            record.step_latency is not None,
            len(record.tool_durations),
            dict(record.agent_breakdown),
            {tool: [calls, seconds] for tool, calls, seconds in record.tool_usage},
        )

    def revise(self, old: _Counted, record: StreamRecord) -> tuple[_Counted, bool, int]:
        """Add what a revised stream gained; count what it lost or relabelled.

        Returns the new counted values, whether anything could not be applied (a value
        went down, or a label changed: counters keep the first figures and labels), and how
        many kinds of revision it had (0: nothing a metric reads changed).
        """
        labels = (old.model, old.status, old.byok)
        events: set[tuple[str, str]] = set()
        for field_name, before, after in (
            ("model", old.model, record.model),
            ("status", old.status, record.status),
            ("is_byok", old.byok, record.byok),
        ):
            name = field_name.removeprefix("is_")
            folded_away = before == OTHER and after not in self._values_of(name)
            if after != before and not folded_away:
                events.add((field_name, CHANGED))
        amounts = list(old.amounts)
        for index, now in enumerate(_stream_amounts(record)):
            delta = now - amounts[index]
            source = _AMOUNT_FIELDS[index]
            if delta > 0:
                self.bump(STREAM_COUNTERS[index], labels, delta)
                amounts[index] = now
                if source is not None:
                    events.add((source, UP))
            elif delta < 0 and source is not None:
                events.add((source, DOWN))
                self.bump(REVISED_DOWN, (source,), -delta)
        counted = _Counted(
            old.model,
            old.status,
            old.byok,
            amounts,
            old.duration_observed or record.execution_time is not None,
            old.latency_observed or record.step_latency is not None,
            max(old.history, len(record.tool_durations)),
            dict(old.agents),
            {tool: list(value) for tool, value in old.tools.items()},
        )
        # A timing observed once is not observed again: a histogram cannot move a sample.
        if not old.duration_observed and record.execution_time is not None:
            self.observe(STREAM_DURATION, (old.model,), record.execution_time)
        if not old.latency_observed and record.step_latency is not None:
            self.observe(STEP_LATENCY, (old.model,), record.step_latency)
        # Tool call history grows at its end: the entries past those observed are new.
        for tool, seconds in record.tool_durations[old.history :]:
            self.observe(TOOL_CALL_DURATION, (self._fold("tool", tool),), seconds)
        if len(record.tool_durations) < old.history:
            events.add(("tool_call_history", DOWN))
        for agent, count in record.agent_breakdown:
            gained = count - counted.agents.get(agent, 0)
            if gained > 0:
                self.bump(AGENT_TRIGGERS, (self._fold("agent", agent),), float(gained))
                counted.agents[agent] = count
                events.add(("agent_breakdown", UP))
        if any(count < old.agents.get(agent, 0) for agent, count in record.agent_breakdown) or (
            set(old.agents) - {agent for agent, _ in record.agent_breakdown}
        ):
            events.add(("agent_breakdown", DOWN))
        usage_field = "tool_call_history" if record.tool_durations else "tool_breakdown"
        for tool, calls, seconds in record.tool_usage:
            slot = counted.tools.setdefault(tool, [0, 0.0])
            label = (self._fold("tool", tool),)
            if calls > slot[0]:
                self.bump(TOOL_CALLS, label, calls - slot[0])
                slot[0] = calls
                events.add((usage_field, UP))
            elif calls < slot[0]:
                events.add((usage_field, DOWN))
            if seconds > slot[1]:
                self.bump(TOOL_TIME, label, seconds - slot[1])
                slot[1] = seconds
                events.add((usage_field, UP))
            elif seconds < slot[1]:
                events.add((usage_field, DOWN))
        for event in events:
            self.bump(REVISIONS, event, 1.0)
        kept = any(direction != UP for _, direction in events)
        return counted, kept, len(events)
