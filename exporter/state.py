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

import contextlib
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

from exporter import catalogue as m
from exporter.config import UNASSIGNED_TEAM, Config, LabelLimits, TeamsConfig
from exporter.counting import (
    RECENT_TOP,
    Counted,
    CounterValue,
    Counts,
    Culprit,
    HistogramValue,
    PendingChanges,
    RecentSpend,
    TaskWindow,
    Totals,
    ranked,
)
from exporter.models import StreamRecord, TaskRecord

log = logging.getLogger(__name__)

SCHEMA_VERSION = 4
# A rowid table with a unique index: inserting a stream costs half what it did in a WITHOUT
# ROWID table keyed by its id, whose B-tree pages held few of these wide rows. Version 4
# added who and what spent each stream (for culprits, teams and budgets): its task and
# title, its model as sent, its team (fixed at first count), its member (only when member
# metrics are on) and when it ended.
_STREAMS_TABLE = """
    CREATE TABLE IF NOT EXISTS {name} (
        account TEXT NOT NULL, stream_id TEXT NOT NULL, created_ts REAL NOT NULL,
        status TEXT NOT NULL, credits REAL NOT NULL, llm_cost REAL NOT NULL,
        neo_cost REAL NOT NULL, fingerprint TEXT NOT NULL, counted TEXT,
        task_id TEXT, task_title TEXT, model TEXT, team TEXT, member TEXT, ended_ts REAL,
        UNIQUE (account, stream_id));
"""
_V3_COLUMNS = (
    "account, stream_id, created_ts, status, credits, llm_cost, neo_cost, fingerprint, counted"
)
_V4_COLUMNS = (
    ("task_id", "TEXT"),
    ("task_title", "TEXT"),
    ("model", "TEXT"),
    ("team", "TEXT"),
    ("member", "TEXT"),
    ("ended_ts", "REAL"),
)
# Covers the window gauge (count by status since a time), the completeness counts of a
# read and pruning by time, so none of them reads the table itself.
_STREAMS_INDEX = """
    CREATE INDEX IF NOT EXISTS streams_by_time_status ON streams (account, created_ts, status);
"""
# The spend that ended lately (spike culprits) is found without reading older rows.
_ENDED_INDEX = """
    CREATE INDEX IF NOT EXISTS streams_by_end ON streams (account, ended_ts);
"""
WATERMARK_STREAMS = "streams_to"  # `to` of the last complete streams read
WATERMARK_RECONCILE = "reconcile_to"  # `to` of the last complete read of the whole window
WATERMARK_HORIZON = "prune_horizon"  # rows created before this may have left the seen set
WATERMARK_SWEEP_TO = "sweep_to"  # `to` of a read of the whole window in progress
WATERMARK_SWEEP_CURSOR = "sweep_cursor"  # that read is complete from its start up to here


class StateError(RuntimeError):
    """The state file cannot be used; the message says how to recover."""


class StatePathError(StateError):
    """`state.path` cannot be used: its directory is missing, or it cannot be written."""

    def __init__(self, message: str, *, missing_directory: bool) -> None:
        super().__init__(message)
        self.missing_directory = missing_directory


class StateLockedError(StateError):
    """Another process holds the state file's lock; the message ends with what to do."""

    ADVICE = (
        "run one exporter per state file. For a one-off read while it runs, use --once, which "
        "reads into a temporary state by default"
    )

    def __init__(self, path: str, who: str, advice: str = ADVICE) -> None:
        self.path, self.who = path, who
        super().__init__(
            f"state file {path!r} is in use by another neo-exporter ({who}; lock "
            f"{path}{LOCK_SUFFIX}): {advice}"
        )

    def advising(self, advice: str) -> StateLockedError:
        """The same refusal, with the advice that fits the command refused."""
        return StateLockedError(self.path, self.who, advice)


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
    if os.statvfs(directory).f_flag & os.ST_RDONLY:
        # chown or chmod cannot help here (a read-only root file system, a ro mount).
        raise StatePathError(
            f"state.path: {directory} is on a read-only file system: point state.path at a "
            "writable volume (a mounted one, in a container)",
            missing_directory=False,
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
            who = _holder(fd)
            os.close(fd)
            raise StateLockedError(path, who) from None
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


def _holder(fd: int) -> str:
    holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return f"pid {holder}" if holder.isdigit() else "a process"


def lock_holder(path: str) -> str | None:
    """Who holds the state's lock ("pid N"), or None when nobody does. Creates nothing."""
    if path == MEMORY:
        return None
    try:
        fd = os.open(path + LOCK_SUFFIX, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None  # no lock file: no exporter ever ran on it, or it cannot be looked at
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _holder(fd)
    finally:
        os.close(fd)  # releases the probe's shared lock with it
    return None


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


@dataclass(slots=True)
class IngestResult:
    new: int = 0
    duplicates: int = 0
    changed: int = 0  # counted before, now revised: increases added, the rest counted
    before_horizon: int = 0
    changed_ids: list[str] = field(default_factory=list)
    decreased_ids: list[str] = field(default_factory=list)  # revised down or relabelled
    repairs: Counter[str] = field(default_factory=Counter)  # of the rows counted or revised


@dataclass(slots=True)
class _Account(Totals):
    """An account's totals, with what the state keeps beside them."""

    watermarks: dict[str, float] = field(default_factory=dict)
    # Seen rows by folded status, kept with each commit: the window gauge then reads only
    # the rows older than the window (about one lookback), not the whole window, per poll.
    seen_by_status: dict[str, int] = field(default_factory=dict)
    # What counts() last returned, until the next commit: a poll that commits nothing
    # publishes the same object, so a scrape knows the counters are unchanged by identity.
    published: Counts | None = None


@dataclass(frozen=True)
class Attribution:
    """What the state keeps of who and what spent each stream, beside its money."""

    teams: TeamsConfig = field(default_factory=TeamsConfig)
    titles: bool = True  # metrics.task_titles: titles may name scan targets
    members: bool = False  # metrics.members.enabled: emails are personal data


class State:
    """One SQLite file (or `:memory:`) shared by all accounts; every write is serialised."""

    def __init__(
        self,
        path: str,
        *,
        bounds: Mapping[str, tuple[float, ...]],
        limits: LabelLimits,
        attribution: Attribution | None = None,
    ) -> None:
        self._bounds = dict(bounds)
        self._limits = limits
        self._attribution = attribution or Attribution()
        self._lock = threading.RLock()
        self._accounts: dict[str, _Account] = {}
        # Each series' label values as stored (its key's JSON), encoded once: every commit
        # writes back every series it touched, hundreds per backfill batch.
        self._labels_json: dict[tuple[str, ...], str] = {}
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
        if version not in (1, 2, 3, SCHEMA_VERSION):
            raise sqlite3.DatabaseError(
                f"schema version {version}, this exporter reads version {SCHEMA_VERSION}"
            )
        if version == SCHEMA_VERSION:
            db.execute(_STREAMS_TABLE.format(name="streams"))
            db.execute(_STREAMS_INDEX)
            db.execute(_ENDED_INDEX)
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
        counts as a revision (see `ingest`). Version 3 lacked who and what spent each stream:
        the columns are added, NULL for the rows counted before.
        """
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            if version == 3:
                # Who and what spent a stream counted before: unknown (NULL) for good.
                for column, kind in _V4_COLUMNS:
                    db.execute(f"ALTER TABLE streams ADD COLUMN {column} {kind}")
            else:
                counted = "NULL" if version == 1 else "counted"
                db.execute(_STREAMS_TABLE.format(name="streams_next"))
                db.execute(
                    f"INSERT INTO streams_next ({_V3_COLUMNS}) SELECT account, stream_id, "  # noqa: S608
                    "created_ts, status, credits, llm_cost, neo_cost, fingerprint, "
                    f"{counted} FROM streams ORDER BY account, created_ts"
                )
                db.execute("DROP TABLE streams")
                db.execute("ALTER TABLE streams_next RENAME TO streams")
                db.execute(_STREAMS_INDEX)
            db.execute(_ENDED_INDEX)
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
            acct.note_labels(key)
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
            acct.note_labels(key)
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

    def recent_spend(
        self, account: str, now: float, window: str, seconds: float, *, top: int = RECENT_TOP
    ) -> RecentSpend:
        """The spend of the account's streams that ended after now - seconds, with the tasks,
        models and members (kept only with member metrics on) that spent the most.

        A stream whose end is still ahead of `now` (its clock runs ahead of ours) counts as
        ending now: it is listed, so its spend has happened.
        """
        span = (account, now - seconds)
        where = "FROM streams WHERE account = ? AND ended_ts > ?"
        with self._lock:
            db = self._db
            credits, cost_usd = db.execute(
                f"SELECT COALESCE(SUM(credits), 0), COALESCE(SUM(llm_cost + neo_cost), 0) {where}",
                span,
            ).fetchone()
            tasks = db.execute(
                "SELECT COALESCE(task_id, ''), COALESCE(MAX(task_title), ''), SUM(credits), "
                f"SUM(llm_cost + neo_cost) {where} GROUP BY task_id",
                span,
            ).fetchall()
            models = db.execute(
                "SELECT COALESCE(model, ''), SUM(credits), SUM(llm_cost + neo_cost) "
                f"{where} GROUP BY model",
                span,
            ).fetchall()
            members = db.execute(
                "SELECT member, SUM(credits), SUM(llm_cost + neo_cost) "
                f"{where} AND member IS NOT NULL GROUP BY member",
                span,
            ).fetchall()
        task_ranks = ranked((Culprit((t, title), c, u) for t, title, c, u in tasks), top)
        model_ranks = ranked((Culprit((model,), c, u) for model, c, u in models), top)
        member_ranks = ranked((Culprit((email,), c, u) for email, c, u in members), top)
        return RecentSpend(
            window, seconds, credits, cost_usd, *task_ranks, *model_ranks, *member_ranks
        )

    def hourly_spend(self, account: str, since: float) -> tuple[tuple[float, float], ...]:
        """(hour start, credits) of the account's streams that ended after `since`, by the
        UTC hour they ended in (as the recent-spend gauges count them); hours with none are
        left out. One indexed range read (streams_by_end)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT CAST(ended_ts / 3600 AS INTEGER), SUM(credits) FROM streams "
                "WHERE account = ? AND ended_ts > ? GROUP BY 1 ORDER BY 1",
                (account, since),
            ).fetchall()
        return tuple((float(hour * 3600), float(credits)) for hour, credits in rows)

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

    def spent(
        self,
        account: str,
        start: float,
        end: float,
        *,
        usd: bool,
        team: str | None = None,
        model: str | None = None,
    ) -> float:
        """Credits (or, with `usd`, the BYOK LLM cost) of the streams created in [start, end),
        of `team` and `model` when given: a budget's spend, as counted (revisions included).

        One range read of the (account, created_ts) index per budget.
        """
        column = "llm_cost" if usd else "credits"
        where = ["account = ?", "created_ts >= ?", "created_ts < ?"]
        params: list[object] = [account, start, end]
        for name, value in (("team", team), ("model", model)):
            if value is not None:
                where.append(f"{name} = ?")
                params.append(value)
        with self._lock:
            row = self._db.execute(
                f"SELECT TOTAL({column}) FROM streams WHERE {' AND '.join(where)}",  # noqa: S608
                params,
            ).fetchone()
        return float(row[0])

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
            work = PendingChanges(acct, self._limits, self._bounds, now)
            if batch:
                work.start_revisions()
                work.start_teams(self._team_names())
            new_rows: list[tuple[object, ...]] = []
            revised: list[StreamRecord] = []
            who = self._attribution
            for stream_id, record in batch.items():
                known = existing.get(stream_id)
                if known is None:
                    team = who.teams.team_of(record.email)
                    status, amounts, counted_json = work.add(record, team)
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
                            record.task_id,
                            record.task_title if who.titles else None,
                            record.model,
                            team,
                            record.email if who.members else None,
                            record.ended_ts,
                        )
                    )
                    if record.repairs:  # rarely: Counter.update of nothing is not free
                        result.repairs.update(record.repairs)
                    continue
                if known == record.fingerprint:
                    result.duplicates += 1
                    continue
                revised.append(record)
            changed_rows = self._revise(account, work, revised, result)
            result.new = len(new_rows)
            work.freeze()
            if new_rows or changed_rows:
                self._commit(account, acct, work, new_rows, changed_rows)
            return result

    def _revise(
        self, account: str, work: PendingChanges, revised: list[StreamRecord], result: IngestResult
    ) -> list[tuple[object, ...]]:
        """Count the revisions of seen streams into `work`; their rows' new values."""
        changed_rows: list[tuple[object, ...]] = []
        stored_of = self._counted_of(account, [r.stream_id for r in revised])
        for record in revised:
            stream_id = record.stream_id
            stored, first_team = stored_of[stream_id]
            if stored is None:
                # A row of schema version 1: its counted values were not kept, so this
                # version becomes its baseline (see _migrate_from_1).
                counted, lowered = work.baseline(record), False
            else:
                before = Counted.loads(stored)
                # Increases go to the team it was first counted under, whatever the
                # config or the row's email say now.
                counted, lowered, events = work.revise(before, record, first_team)
                if events or counted != before:
                    result.changed += 1
                    result.changed_ids.append(stream_id)
                    if lowered:
                        result.decreased_ids.append(stream_id)
                    result.repairs.update(record.repairs)
                    work.count_changed()
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
        return changed_rows

    def _team_names(self) -> tuple[str, ...]:
        return (*self._attribution.teams.names, UNASSIGNED_TEAM)

    def start_teams(self, account: str, now: float) -> None:
        """Give `account` a team counter at 0 for every configured team (and `unassigned`)
        that has none yet: each known label set exists from the first publish, even before
        a stream of it was counted."""
        with self._lock:
            acct = self._account(account)
            work = PendingChanges(acct, self._limits, self._bounds, now)
            work.start_teams(self._team_names())
            work.freeze()
            if work.counters:
                self._commit(account, acct, work, [], [])

    def _existing(self, account: str, ids: Sequence[str]) -> dict[str, str]:
        """The fingerprints of the ids already seen (re-reads are mostly these)."""
        return dict(self._select(account, "fingerprint", ids))

    def _counted_of(
        self, account: str, ids: Sequence[str]
    ) -> dict[str, tuple[str | None, str | None]]:
        """What was counted for these seen ids, and the team they were counted under (only
        revised ones need it)."""
        return {
            stream_id: (counted, team)
            for stream_id, counted, team in self._select(account, "counted, team", ids)
        }

    def _select(self, account: str, columns: str, ids: Sequence[str]) -> list[tuple[Any, ...]]:
        """(stream_id, *columns) of the seen ones of `ids`."""
        rows: list[tuple[Any, ...]] = []
        step = 500  # well under SQLite's host-parameter limit
        for start in range(0, len(ids), step):
            chunk = ids[start : start + step]
            marks = ",".join("?" * len(chunk))
            rows += self._db.execute(
                f"SELECT stream_id, {columns} FROM streams "  # noqa: S608
                f"WHERE account = ? AND stream_id IN ({marks})",
                (account, *chunk),
            ).fetchall()
        return rows

    def _key_json(self, labels: tuple[str, ...]) -> str:
        text = self._labels_json.get(labels)
        if text is None:
            text = self._labels_json[labels] = json.dumps(labels)
        return text

    @_writes(proves_writable=True)
    def _commit(
        self,
        account: str,
        acct: _Account,
        work: PendingChanges,
        new_rows: list[tuple[object, ...]],
        changed_rows: list[tuple[object, ...]],
    ) -> None:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(
                "INSERT INTO streams (account, stream_id, created_ts, status, credits, llm_cost, "
                "neo_cost, fingerprint, counted, task_id, task_title, model, team, member, "
                "ended_ts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                    (account, metric, self._key_json(labels), value.value, value.created)
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
                        self._key_json(labels),
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
        acct.take(work)
        acct.published = None

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


def histogram_bounds(config: Config) -> dict[str, tuple[float, ...]]:
    """Each histogram's bucket bounds, by metric name, as the config sets them."""
    buckets = config.metrics.buckets
    return {
        m.TOOL_CALL_DURATION_SECONDS.name: buckets.tool_call_duration,
        m.STREAM_DURATION_SECONDS.name: buckets.stream_duration,
        m.STREAM_STEP_LATENCY_SECONDS.name: buckets.step_latency,
    }


def open_state(config: Config, path: str) -> State:
    """The state as the exporter opens it: its buckets, label budget and what it keeps of
    who spent each stream, from the config."""
    metrics = config.metrics
    return State(
        path,
        bounds=histogram_bounds(config),
        limits=metrics.label_limits,
        attribution=Attribution(config.teams, metrics.task_titles, metrics.members.enabled),
    )


# --- a state seeded aside ---------------------------------------------------------------------

SIDE_FILES = ("-wal", "-shm", "-journal")  # SQLite's files beside a database


def remove_state_files(path: str) -> None:
    """The database at `path`, its side files and its lock file, where they exist."""
    for suffix in ("", *SIDE_FILES, LOCK_SUFFIX):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path + suffix)


def copy_state(source: str, target: str) -> None:
    """A consistent copy of `source` (its WAL included) at `target`, by SQLite's backup."""
    try:
        src = sqlite3.connect(source)
        try:
            dst = sqlite3.connect(target)
            try:
                src.backup(dst)
            finally:
                dst.close()
        finally:
            src.close()  # the last connection: SQLite folds the WAL in and removes it
    except sqlite3.Error as exc:
        raise StateError(f"state file {source!r} cannot be read ({exc})") from None


class StagedState:
    """A copy of the state file, seeded beside it and put in its place whole, or removed.

    Holds the state's lock from its creation to `release`: an exporter started meanwhile on
    the same state is refused, and so is a second seeding while an exporter runs.
    """

    def __init__(self, path: str, suffix: str) -> None:
        self.path = path
        self.temp = path + suffix
        check_state_path(path)
        try:
            self._lock = StateLock(path)
        except OSError as exc:
            raise StateError(
                f"state file {path!r} cannot be used (its lock file "
                f"{path}{LOCK_SUFFIX} cannot be opened: "
                f"{exc.strerror or type(exc).__name__})"
            ) from None
        self.state: State | None = None

    def open(self, config: Config) -> State:
        """A copy of the state (or a new one) to seed; the real file is not touched."""
        remove_state_files(self.temp)  # left by a run that was killed
        if os.path.exists(self.path):
            copy_state(self.path, self.temp)
        self.state = open_state(config, self.temp)
        return self.state

    def close_state(self) -> None:
        if self.state is not None:
            self.state.close()
            self.state = None

    def side_file_in_use(self) -> str | None:
        """Clear the real file's side files before the copy replaces it; the first one in use.

        The old file's WAL was folded in when its copy was taken; a non-empty one now would
        be another process's, and would not belong to the new file.
        """
        for suffix in SIDE_FILES:
            side = self.path + suffix
            if os.path.exists(side) and os.path.getsize(side) > 0 and suffix != "-shm":
                return side
            with contextlib.suppress(FileNotFoundError):
                os.unlink(side)
        return None

    def place(self) -> None:
        """Put the copy in place of the real file (OSError if it cannot be)."""
        os.replace(self.temp, self.path)

    def discard(self) -> None:
        """Remove the copy, if it was not put in place."""
        remove_state_files(self.temp)

    def release(self) -> None:
        """Close the copy, remove its lock file and release the real file's lock."""
        self.close_state()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.temp + LOCK_SUFFIX)
        self._lock.release()
