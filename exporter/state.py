"""Durable state in SQLite: seen streams, counter and histogram totals, watermarks.

Exactly-once rests on one invariant: a stream id enters the `streams` table in the same
transaction that adds its values to the counters. Whatever instant the process dies at,
the committed counters equal the sum over the committed seen set, and a re-read row is
recognised by its id. Metrics are built only from values that have been committed.

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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Concatenate, ParamSpec, TypeVar

from exporter.models import StreamRecord, TaskRecord

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
OTHER = "other"
DOCUMENTED_STATUSES = ("completed", "error", "failed", "aborted", "blocked")
BYOK_VALUES = ("true", "false")

# Counters fed by every stream, labelled (model, status, byok).
STREAM_COUNTERS: tuple[tuple[str, Callable[[StreamRecord], float]], ...] = (
    ("neo_streams_total", lambda r: 1.0),
    ("neo_credits_total", lambda r: r.credits),
    ("neo_llm_cost_usd_total", lambda r: r.llm_cost),
    ("neo_platform_cost_usd_total", lambda r: r.neo_cost),
    ("neo_steps_total", lambda r: float(r.steps)),
    ("neo_tool_calls_total", lambda r: float(r.tool_calls)),
    ("neo_agent_triggers_total", lambda r: float(r.agent_triggers)),
    ("neo_llm_time_seconds_total", lambda r: r.llm_time),
    ("neo_tool_time_seconds_total", lambda r: r.tool_time),
    ("neo_execution_time_seconds_total", lambda r: r.execution_time or 0.0),
)
AGENT_TRIGGERS = "neo_agent_triggers_by_agent_total"  # (agent,)
TOOL_CALLS = "neo_tool_calls_by_tool_total"  # (tool,)
TOOL_TIME = "neo_tool_time_by_tool_seconds_total"  # (tool,)
CHANGED_RECORDS = "neo_exporter_changed_records_total"  # ()
TOOL_CALL_DURATION = "neo_tool_call_duration_seconds"  # histogram (tool,)
STREAM_DURATION = "neo_stream_duration_seconds"  # histogram (model,)
STEP_LATENCY = "neo_stream_step_latency_seconds"  # histogram (model,)

WATERMARK_STREAMS = "streams_to"  # `to` of the last complete streams read
WATERMARK_RECONCILE = "reconcile_to"  # `to` of the last complete read of the whole window
WATERMARK_HORIZON = "prune_horizon"  # rows created before this may have left the seen set

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
    changed: int = 0
    before_horizon: int = 0
    changed_ids: list[str] = field(default_factory=list)


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
            "task_id TEXT NOT NULL, status TEXT NOT NULL, credits REAL NOT NULL, "
            "llm_cost REAL NOT NULL, neo_cost REAL NOT NULL, PRIMARY KEY (account, task_id)) "
            "WITHOUT ROWID"
        )
        db.executescript(
            """
            CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
            CREATE TABLE IF NOT EXISTS streams (
                account TEXT NOT NULL, stream_id TEXT NOT NULL, created_ts REAL NOT NULL,
                status TEXT NOT NULL, credits REAL NOT NULL, llm_cost REAL NOT NULL,
                neo_cost REAL NOT NULL, fingerprint TEXT NOT NULL, changed_fingerprint TEXT,
                PRIMARY KEY (account, stream_id)) WITHOUT ROWID;
            -- Covers the window gauge (count by status since a time) and pruning by time, so
            -- neither reads the table itself; it replaces the narrower streams_by_time.
            DROP INDEX IF EXISTS streams_by_time;
            CREATE INDEX IF NOT EXISTS streams_by_time_status
                ON streams (account, created_ts, status);
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
        row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if row is None:
            db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        elif int(row[0]) != SCHEMA_VERSION:
            raise sqlite3.DatabaseError(
                f"schema version {row[0]}, this exporter reads version {SCHEMA_VERSION}"
            )

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
        rows = [(account, t.task_id, t.status, t.credits, t.llm_cost, t.neo_cost) for t in tasks]
        with self._lock:
            self._db.executemany("INSERT OR IGNORE INTO temp.task_read VALUES (?,?,?,?,?,?)", rows)

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
        with self._lock:
            acct = self._account(account)
            return Counts(dict(acct.counters), dict(acct.histograms))

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
        """Count the records not seen before, in one transaction with their ids."""
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
            new_rows: list[tuple[object, ...]] = []
            changed_rows: list[tuple[str, str, str]] = []
            for stream_id, record in batch.items():
                known = existing.get(stream_id)
                if known is None:
                    status = work.add(record)
                    new_rows.append(
                        (
                            account,
                            stream_id,
                            record.created_ts,
                            status,
                            record.credits,
                            record.llm_cost,
                            record.neo_cost,
                            record.fingerprint(),
                        )
                    )
                    continue
                fingerprint = record.fingerprint()
                if fingerprint in known:
                    result.duplicates += 1
                    continue
                # Counted once already: note the change (once per distinct new version).
                result.changed += 1
                result.changed_ids.append(stream_id)
                work.bump(CHANGED_RECORDS, (), 1.0)
                changed_rows.append((fingerprint, account, stream_id))
            result.new = len(new_rows)
            work.freeze()
            if new_rows or changed_rows:
                self._commit(account, acct, work, new_rows, changed_rows)
            return result

    def _existing(self, account: str, ids: Sequence[str]) -> dict[str, tuple[str, str | None]]:
        found: dict[str, tuple[str, str | None]] = {}
        step = 500  # well under SQLite's host-parameter limit
        for start in range(0, len(ids), step):
            chunk = ids[start : start + step]
            marks = ",".join("?" * len(chunk))
            for stream_id, fingerprint, changed in self._db.execute(
                "SELECT stream_id, fingerprint, changed_fingerprint FROM streams "  # noqa: S608
                f"WHERE account = ? AND stream_id IN ({marks})",
                (account, *chunk),
            ):
                found[stream_id] = (fingerprint, changed)
        return found

    @_writes(proves_writable=True)
    def _commit(
        self,
        account: str,
        acct: _Account,
        work: _Work,
        new_rows: list[tuple[object, ...]],
        changed_rows: list[tuple[str, str, str]],
    ) -> None:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(
                "INSERT INTO streams (account, stream_id, created_ts, status, credits, llm_cost, "
                "neo_cost, fingerprint) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                new_rows,
            )
            db.executemany(
                "UPDATE streams SET changed_fingerprint = ? WHERE account = ? AND stream_id = ?",
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
        for name, values in work.new_labels.items():
            acct.labels.setdefault(name, set()).update(values)

    @_writes(proves_writable=True)
    def finish_read(
        self, account: str, *, to: float, whole_window: bool, prune_before: float
    ) -> int:
        """Record a complete read up to `to` and drop seen rows older than `prune_before`.

        Returns the number of rows pruned.
        """
        with self._lock:
            acct = self._account(account)
            horizon = max(prune_before, acct.watermarks.get(WATERMARK_HORIZON, float("-inf")))
            marks = {WATERMARK_STREAMS: to, WATERMARK_HORIZON: horizon}
            if whole_window:
                marks[WATERMARK_RECONCILE] = to
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                leaving = self._older_by_status(account, horizon)
                pruned = db.execute(
                    "DELETE FROM streams WHERE account = ? AND created_ts < ?",
                    (account, horizon),
                ).rowcount
                db.executemany(
                    "INSERT INTO watermarks (account, kind, ts) VALUES (?, ?, ?) "
                    "ON CONFLICT (account, kind) DO UPDATE SET ts = excluded.ts",
                    [(account, kind, ts) for kind, ts in marks.items()],
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            acct.watermarks.update(marks)
            for status, count in leaving:
                acct.seen_by_status[status] -= count
            return int(pruned)


# Label names of each stored series, in order; `account` is added by the collector.
_LABEL_NAMES: dict[str, tuple[str, ...]] = {
    **{name: ("model", "status", "byok") for name, _ in STREAM_COUNTERS},
    AGENT_TRIGGERS: ("agent",),
    TOOL_CALLS: ("tool",),
    TOOL_TIME: ("tool",),
    CHANGED_RECORDS: (),
    TOOL_CALL_DURATION: ("tool",),
    STREAM_DURATION: ("model",),
    STEP_LATENCY: ("model",),
}


def label_names(metric: str) -> tuple[str, ...]:
    return _LABEL_NAMES[metric]


class _Hist:
    """A histogram being added to within one transaction (frozen at the end)."""

    __slots__ = ("bounds", "buckets", "count", "created", "sum")

    def __init__(self, value: HistogramValue) -> None:
        self.bounds = value.bounds
        self.buckets = list(value.buckets)
        self.sum = value.sum
        self.count = value.count
        self.created = value.created

    def observe(self, value: float) -> None:
        self.buckets[bisect.bisect_left(self.bounds, value)] += 1  # `le` is inclusive
        self.sum += value
        self.count += 1

    def frozen(self) -> HistogramValue:
        return HistogramValue(self.bounds, tuple(self.buckets), self.sum, self.count, self.created)


def _stream_amounts(r: StreamRecord) -> tuple[float, ...]:
    """What each of STREAM_COUNTERS adds for one stream, in the same order (the hot path)."""
    return (
        1.0,
        r.credits,
        r.llm_cost,
        r.neo_cost,
        float(r.steps),
        float(r.tool_calls),
        float(r.agent_triggers),
        r.llm_time,
        r.tool_time,
        r.execution_time or 0.0,
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
                    for metric, _ in STREAM_COUNTERS:
                        self.bump(metric, (value, status, byok), 0.0)
            for metric in (STREAM_DURATION, STEP_LATENCY):
                self._histogram(metric, (value,))
        elif name == "status":
            for model in self._values_of("model"):
                for byok in BYOK_VALUES:
                    for metric, _ in STREAM_COUNTERS:
                        self.bump(metric, (model, value, byok), 0.0)

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

    def add(self, record: StreamRecord) -> str:
        """Add one new stream's values; returns its folded status."""
        fold = self._fold
        model = fold("model", record.model)
        status = fold("status", record.status)
        labels = (model, status, record.byok)
        slots = self._stream_slots.get(labels)
        if slots is None:
            slots = [self._slot((metric, labels)) for metric, _ in STREAM_COUNTERS]
            self._stream_slots[labels] = slots
        for slot, amount in zip(slots, _stream_amounts(record), strict=True):
            slot[0] += amount
        for agent, count in record.agent_breakdown:
            self.bump(AGENT_TRIGGERS, (fold("agent", agent),), float(count))
        for tool, calls, seconds in record.tool_breakdown:
            tool_label = (fold("tool", tool),)
            self.bump(TOOL_CALLS, tool_label, float(calls))
            self.bump(TOOL_TIME, tool_label, seconds)
        for tool, seconds in record.tool_durations:
            self._histogram(TOOL_CALL_DURATION, (fold("tool", tool),)).observe(seconds)
        if record.execution_time is not None:
            self._histogram(STREAM_DURATION, (model,)).observe(record.execution_time)
        if record.step_latency is not None:
            self._histogram(STEP_LATENCY, (model,)).observe(record.step_latency)
        return status
