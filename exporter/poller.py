"""Polling one account: the streams reads, the tasks read and the self-audit.

Streams, every `polling.interval`: an incremental read of the lookback span, to catch rows
that appeared long after their `created_at`. When the last complete read is older than the
lookback (the exporter was down, or the API was), the read goes back to it instead (at most
`polling.catch_up_limit`): a catch-up.

Sweep, every `polling.reconcile_interval` and at first start: the whole window is read
again, in time slices from its oldest end. The slice reached is saved, so a read that fails
resumes where it stopped rather than from the start; a slice that fails three sweeps in a
row is skipped (and counted incomplete). Incremental reads keep running every interval
while a long sweep is under way.

Every read pins its span; rows are committed in batches (ids and counter increments
together), and a watermark moves only once its read is complete, so a crash mid-read just
means the next read starts earlier. A read is complete when the state holds as many of the
span's streams as the API counts (see `Listing`).

Catching up: the first sweep's counters are published only when it is complete (series
then appear at their full value, which `rate()` does not take as an increase), and the
time of every commit made while reading a backlog is published, so that the spend alerts
can leave out the jump a backlog makes in the counters.

Tasks, every `polling.tasks_interval`: read the window and keep gauges, published only from
a complete read.

Audit, every `audit.interval` (`SelfAudit`, audit.py): Neo's own count of streams
(`total` of the listing) and credits (`/usage/summary`) for the part of the window older
than the lookback, beside what the state counted for the same period.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace

from exporter.api import (
    SLICE_ROWS,
    STREAMS,
    STREAMS_PATH,
    TASKS,
    TASKS_PATH,
)
from exporter.audit import SelfAudit
from exporter.client import (
    ApiError,
    Listing,
    NeoClient,
    PageProgress,
    ReadOutcome,
    Stopped,
)
from exporter.config import AccountConfig, BudgetConfig, PollingConfig
from exporter.counting import RECENT_WINDOWS, Counts, RecentSpend, TopTasks
from exporter.instrumentation import ExporterMetrics
from exporter.models import (
    RowError,
    StreamRecord,
    TaskRecord,
    format_timestamp,
    parse_stream,
    parse_task,
    raw_digest,
    raw_stream_id,
    row_value,
)
from exporter.periods import period_bounds
from exporter.read_failure import read_error
from exporter.snapshot import (
    AccountChange,
    AccountSnapshot,
    AuditResult,
    BudgetValue,
    EndpointHealth,
    ReadProgress,
    SnapshotStore,
)
from exporter.state import (
    WATERMARK_RECONCILE,
    WATERMARK_STREAMS,
    WATERMARK_SWEEP_CURSOR,
    WATERMARK_SWEEP_TO,
    State,
    StateError,
)

log = logging.getLogger(__name__)

BATCH_ROWS = 2000  # rows per transaction: bounded memory, few commits
# Full reads of all accounts at once (see FullReads): two per core of a small machine.
FULL_READS_AT_ONCE = 4
# A read whose pages hold no counted row looks rows up before decoding them on every
# this many pages only (ingest finds those it missed).
PRECHECK_EVERY = 8
# Digests of the last incremental read's rows kept at most (about 100 bytes each).
REMEMBERED_ROWS = 100_000
PROGRESS_EVERY = 5.0  # seconds between progress log lines of a long read
LOGGED_SKIPS = 5  # per read; the rest are summed in one line
MAX_SKIPS_REMEMBERED = 10_000  # bad rows told apart within a read (memory stays bounded)
SLICE_FAILURES = 3  # sweeps in a row a slice may fail before it is skipped
HOURLY_CHART_SECONDS = 7 * 86400  # the status page charts spend per hour over at most this


@dataclass(frozen=True, slots=True)
class IncrementalSpan:
    start: float
    end: float
    catching_up: bool  # the last complete read is older than the lookback
    covers_gap: bool  # the span reaches back to that read (not cut by catch_up_limit)


def incremental_span(
    now: float, polling: PollingConfig, watermark: float | None
) -> IncrementalSpan:
    """The next incremental read: the lookback, or back to the watermark when that is older."""
    lookback_start = now - polling.lookback
    if watermark is None:
        return IncrementalSpan(lookback_start, now, False, True)
    floor = max(now - polling.catch_up_limit, now - polling.window)
    start = max(min(lookback_start, watermark), floor)
    return IncrementalSpan(start, now, watermark < lookback_start, watermark >= floor)


class ProgressLog:
    """Progress of one read: a log line every few seconds and the landing page's figures."""

    def __init__(
        self,
        account: str,
        kind: str,
        clock: Callable[[], float],
        publish: Callable[[ReadProgress | None], None],
    ) -> None:
        self._account = account
        self._kind = kind
        self._clock = clock
        self._publish = publish
        self._started = clock()
        self._last_log = self._started

    def __call__(self, p: PageProgress) -> None:
        now = self._clock()
        elapsed = now - self._started
        eta = None
        if p.rows_total and p.rows_done:
            eta = max(0.0, elapsed * (p.rows_total - p.rows_done) / p.rows_done)
        self._publish(
            ReadProgress(
                self._kind,
                self._started,
                p.pages_done,
                p.pages_total,
                p.rows_done,
                p.rows_total,
                eta,
            )
        )
        if now - self._last_log >= PROGRESS_EVERY:
            self._last_log = now
            log.info(
                "account=%s %s read: pages %d/%s, rows %d/%s, about %s left",
                self._account,
                self._kind,
                p.pages_done,
                p.pages_total if p.pages_total is not None else "?",
                p.rows_done,
                p.rows_total if p.rows_total is not None else "?",
                f"{eta:.0f}s" if eta is not None else "?",
            )


@dataclass(slots=True)
class _ReadCounts:
    """What one streams read did to the state."""

    new: int = 0
    duplicates: int = 0
    changed: int = 0


class FullReads:
    """The full reads (a sweep's slice, a tasks read) all accounts of the process may run
    at once. Each holds pages and a batch of rows in memory and keeps a core busy; with
    many accounts starting together, reading them a few at a time bounds the memory and
    leaves the incremental reads of the accounts already live a core (they never wait)."""

    def __init__(self, at_once: int = FULL_READS_AT_ONCE) -> None:
        self._slots = threading.BoundedSemaphore(at_once)

    @contextmanager
    def slot(self, stop: threading.Event) -> Iterator[None]:
        while not self._slots.acquire(timeout=0.5):
            if stop.is_set():
                raise Stopped
        try:
            yield
        finally:
            self._slots.release()


class AccountPoller:
    """Polls one account; `run()` loops until the stop event, `poll_once()` reads once."""

    def __init__(
        self,
        account: AccountConfig,
        polling: PollingConfig,
        state: State,
        client: NeoClient,
        store: SnapshotStore,
        metrics: ExporterMetrics,
        *,
        stop: threading.Event,
        clock: Callable[[], float] = time.time,
        top_tasks: int = 0,
        task_emails: bool = False,
        task_titles: bool = True,
        audit_interval: float = 0.0,
        full_reads: FullReads | None = None,
        budgets: tuple[BudgetConfig, ...] = (),
    ) -> None:
        self.name = account.name
        self._budgets = tuple(b for b in budgets if b.account == account.name)
        self._full_reads = full_reads or FullReads()
        self._top_tasks = top_tasks  # how many of the window's tasks to rank by credits
        self._task_emails = task_emails
        self._task_titles = task_titles
        self._polling = polling
        self._audit_interval = audit_interval
        self._audit = SelfAudit(account.name, client, state, polling, clock)
        self._state = state
        self._client = client
        self._store = store
        self._metrics = metrics
        self._stop = stop
        self._clock = clock
        self._endpoints: dict[str, EndpointHealth] = {}
        self._missing: dict[str, int] = {}
        # Digests of the rows the last incremental read found counted (see _read).
        self._recent: frozenset[str] = frozenset()
        # The streams and tasks reads publish from two threads: state is read and the
        # snapshot written under one lock, so an older count never overwrites a newer one.
        self._publishing = threading.RLock()
        # Counters are published once a whole window has been read (now or in an earlier
        # life); until then they would climb through days of history in minutes.
        self.live = state.watermark(self.name, WATERMARK_RECONCILE) is not None
        self._backlog = not self.live  # reading a backlog: counter increases are not current
        self._sweep_needed = False  # a catch-up could not reach its watermark: sweep now
        self._slice_failures = 0
        self._last_catch_up: float | None = None
        # The status page's hourly chart, and the commit and hour it was read at.
        self._chart: tuple[tuple[float, float], ...] = ()
        self._chart_counts: Counts | None = None
        self._chart_hour = -1
        self._settled = False  # a first result (data or a failure) has been published
        try:
            # Every team's counters exist at 0 before its first stream (else the first
            # stream's spend would not show in increase()); ingest adds them too.
            state.start_teams(self.name, clock())
        except StateError as exc:
            log.error("account=%s %s", self.name, exc)
        self._publish()

    # --- scheduling ----------------------------------------------------------------------

    def run(self) -> None:
        next_streams = next_tasks = next_audit = self._clock()
        while not self._stop.is_set():
            now = self._clock()
            streams_due, tasks_due = now >= next_streams, now >= next_tasks
            if streams_due:
                next_streams = max(next_streams + self._polling.interval, now)
            if tasks_due:
                next_tasks = max(next_tasks + self._polling.tasks_interval, now)
            if streams_due and tasks_due:
                self.poll_both(until=next_streams)
            elif streams_due:
                self.poll_streams(until=next_streams)
            elif tasks_due:
                self.poll_tasks()
            if self._audit_interval > 0 and self._clock() >= next_audit and self.live:
                self.audit()
                next_audit = self._clock() + self._audit_interval
            if self._settled:
                self._store.update(self.name, _first_poll_done)
            due = [next_streams, next_tasks]
            if self._audit_interval > 0:
                due.append(next_audit)
            self._stop.wait(max(0.0, min(due) - self._clock()))

    def poll_once(self) -> bool:
        """Read the whole window of streams and the tasks once; True if both succeeded."""
        ok = self.poll_both(force_reconcile=True)
        self._store.update(self.name, _first_poll_done)
        return ok

    def poll_both(self, *, force_reconcile: bool = False, until: float | None = None) -> bool:
        """The streams and tasks reads side by side; True if both succeeded.

        A first read is mostly waiting on pages: while the streams' rows are counted, the
        tasks' pages arrive. Both share the client's `http.concurrency` slots.
        """
        tasks_ok: list[bool] = []
        helper = threading.Thread(
            target=lambda: tasks_ok.append(self.poll_tasks()),
            name=f"neo-tasks-{self.name}",
            daemon=True,
        )
        helper.start()
        streams_ok = self.poll_streams(force_reconcile=force_reconcile, until=until)
        helper.join()
        return streams_ok and tasks_ok == [True]

    # --- streams -------------------------------------------------------------------------

    def poll_streams(self, *, force_reconcile: bool = False, until: float | None = None) -> bool:
        """The incremental read, then the sweep if one is due or under way (until `until`).

        When the incremental read fails the API is most likely down: the sweep waits. A
        read of the whole window that starts now (a first start, `--once`) reads the
        lookback as its last slice, so the incremental read is left out: each row is
        fetched once.
        """
        if force_reconcile or self._first_sweep_starts_now():
            ok = self._sweep(force=True, until=until)
        else:
            ok = self._incremental() and self._sweep(force=force_reconcile, until=until)
        self._publish(window=True)
        return ok

    def _first_sweep_starts_now(self) -> bool:
        """Nothing was ever read into the state: the first read is the window's."""
        state, name = self._state, self.name
        return not self.live and all(
            state.watermark(name, mark) is None
            for mark in (WATERMARK_STREAMS, WATERMARK_SWEEP_TO, WATERMARK_SWEEP_CURSOR)
        )

    def _incremental(self) -> bool:
        now = self._clock()
        span = incremental_span(
            now, self._polling, self._state.watermark(self.name, WATERMARK_STREAMS)
        )
        first_sweep_to = None if self.live else self._state.watermark(self.name, WATERMARK_SWEEP_TO)
        if first_sweep_to is not None and span.start < first_sweep_to:
            # The first sweep, still under way, reads everything up to its end: the
            # incremental read takes only what came after, so no row is fetched twice.
            span = replace(span, start=min(first_sweep_to, span.end))
        if span.catching_up:
            self._backlog = True
            # Older rows of the gap than the catch-up reaches are left to a sweep, now.
            self._sweep_needed = self._sweep_needed or not span.covers_gap
        self._set_catching_up()
        outcome = self._guarded("incremental", span.start, span.end)
        if outcome is None:
            return False
        if outcome.complete:
            self._state.save_marks(
                self.name,
                {WATERMARK_STREAMS: span.end},
                prune_before=min(
                    [
                        span.end - self._polling.window - self._polling.lookback,
                        *self._period_starts(span.end),
                    ]
                ),
            )
            if span.catching_up and not self._sweep_needed and self.live:
                self._backlog = False
        self._succeeded(STREAMS, "incremental")
        self._set_catching_up()
        return True

    def _sweep(self, *, force: bool, until: float | None) -> bool:
        """Read the window again, slice by slice from its oldest end; False if a slice failed."""
        state, name = self._state, self.name
        now = self._clock()
        sweep_to = state.watermark(name, WATERMARK_SWEEP_TO)
        cursor = state.watermark(name, WATERMARK_SWEEP_CURSOR)
        if sweep_to is None or cursor is None:
            reconciled = state.watermark(name, WATERMARK_RECONCILE)
            due = (
                force
                or self._sweep_needed
                or reconciled is None
                or now - reconciled >= self._polling.reconcile_interval
            )
            if not due:
                return True
            sweep_to, cursor = now, self._sweep_start(now)
            state.save_marks(name, {WATERMARK_SWEEP_TO: sweep_to, WATERMARK_SWEEP_CURSOR: cursor})
            self._sweep_needed = False
        self._set_catching_up()
        slice_length: float | None = None
        first = True
        while cursor < sweep_to:
            if self._stop.is_set():
                return False
            # A slice per poll at least, however long the other reads took: never starved.
            if not first and until is not None and self._clock() >= until:
                return True  # the incremental read is due: the sweep resumes after it
            first = False
            # Rows older than the window (or the budgets' periods) have left it while the
            # sweep was paused.
            cursor = max(cursor, self._sweep_start(self._clock()))
            end = sweep_to
            try:
                if slice_length is None:
                    slice_length = self._slice_length(cursor, sweep_to)
                end = min(sweep_to, cursor + slice_length)
                with self._full_reads.slot(self._stop):  # an incomplete slice is counted
                    self._after_slice(self._read("reconcile", cursor, end), end, sweep_to)
            except ApiError as exc:
                self._slice_failures += 1
                if self._slice_failures < SLICE_FAILURES:
                    return self._read_failed(STREAMS, "reconcile", exc)
                # Skipped rather than retried forever: later sweeps read it again.
                log.error(
                    "account=%s the sweep's slice %s..%s failed %d times; skipping it (%s)",
                    name,
                    format_timestamp(cursor),
                    format_timestamp(end),
                    self._slice_failures,
                    exc,
                )
                self._metrics.incomplete_reads.labels(name, STREAMS).inc()
            except Exception as exc:
                return self._read_failed(STREAMS, "reconcile", exc)
            self._slice_failures = 0
            cursor = end
            state.save_marks(name, {WATERMARK_SWEEP_CURSOR: cursor})
        state.save_marks(
            name,
            {WATERMARK_RECONCILE: sweep_to, WATERMARK_SWEEP_TO: None, WATERMARK_SWEEP_CURSOR: None},
        )
        if not self.live:
            self.live = True
            log.info("account=%s the whole window is read: counters are published", name)
        # After `live`: the counters go out with this publish, which also settles the first
        # poll, so /-/ready and the headline turn now, not one interval later.
        self._succeeded(STREAMS, "reconcile")
        self._backlog = False
        self._set_catching_up()
        return True

    def _period_starts(self, now: float) -> list[float]:
        """The start of each budget's current period (the state keeps their rows)."""
        return [period_bounds(budget.period, now)[0] for budget in self._budgets]

    def _sweep_start(self, now: float) -> float:
        """Where a read of the window starts: the window's oldest end, and, for the first
        whole read, the start of the budgets' current periods when that is older, so that
        neo_budget_spent is exact from the first publish (docs/budgets.md: read back)."""
        start = now - self._polling.window
        if self.live:
            return start
        return min([start, *self._period_starts(now)])

    def _budget_values(self, now: float, *, spent: bool) -> tuple[BudgetValue, ...]:
        """Each budget's period and, if `spent`, its spend over it, from the state: one
        indexed read of the period's rows per budget."""
        values = []
        for budget in self._budgets:
            start, end = period_bounds(budget.period, now)
            amount = None
            if spent:
                amount = self._state.spent(
                    self.name,
                    start,
                    end,
                    usd=budget.unit == "usd",
                    team=budget.team,
                    model=budget.model,
                )
            values.append(BudgetValue(budget.name, budget.unit, budget.limit, amount, start, end))
        return tuple(values)

    def _after_slice(self, outcome: ReadOutcome, end: float, sweep_to: float) -> None:
        if end >= sweep_to and outcome.complete:
            # The last slice is a complete read up to sweep_to, as an incremental read's
            # would be: the incremental reads go on from there.
            mark = self._state.watermark(self.name, WATERMARK_STREAMS)
            if mark is None or mark < sweep_to:
                self._state.save_marks(self.name, {WATERMARK_STREAMS: sweep_to})

    def _slice_length(self, start: float, end: float) -> float:
        """Slices of about SLICE_ROWS rows, from the API's count of the span's rows."""
        total = self._client.count(STREAMS_PATH, STREAMS, start, end, {"sort": "created_at"})
        slices = max(1, math.ceil((total or 0) / SLICE_ROWS))
        return (end - start) / slices

    def _guarded(self, kind: str, start: float, end: float) -> ReadOutcome | None:
        """A streams read whose failure is reported rather than raised (None)."""
        try:
            return self._read(kind, start, end)
        except Exception as exc:
            self._read_failed(STREAMS, kind, exc)
            return None

    def _read(self, kind: str, start: float, end: float) -> ReadOutcome:
        """One streams read of [start, end], counted into the state as pages arrive."""
        started = time.monotonic()
        progress = ProgressLog(
            self.name,
            kind,
            self._clock,
            lambda p: self._store.update(self.name, lambda a: replace(a, progress=p)),
        )
        listing = self._client.listing(
            STREAMS_PATH, STREAMS, start, end, {"sort": "created_at"}, on_progress=progress
        )
        skips = _SkipLog(self.name, STREAMS, self._metrics)
        tally = _ReadCounts()
        batch: list[StreamRecord] = []

        def flush() -> None:
            if batch:
                self._ingest(batch, tally)
                batch.clear()

        def found(first: float, last: float) -> int:
            flush()  # what the pages brought so far is in the state before it is counted
            return self._state.count_streams(self.name, first, last)

        known = _KnownRows(self._state, self.name, self._recent if kind == "incremental" else None)
        for page in listing.pages(found):
            for row, digest in known.unknown(page.rows, tally):
                try:
                    batch.append(parse_stream(row, digest or ""))
                except RowError as exc:
                    known.forget(digest)  # skipped again, and counted as such, at each read
                    skips.add(row, exc)
            if len(batch) >= BATCH_ROWS:
                flush()
        flush()
        if known.counted is not None:  # everything read is in the state now
            self._recent = frozenset(known.counted)
        elif tally.changed:
            # A row the last incremental read saw may have changed since: look at its bytes
            # again (a row changed back to what it was would otherwise pass as known).
            self._recent = frozenset()
        skips.summarise()
        outcome = listing.outcome
        assert outcome is not None
        self._note_outcome(STREAMS, kind, outcome, listing.start, listing.end)
        log.info(
            "account=%s %s read of %s..%s: %d new, %d already counted, %d revised, %.2fs",
            self.name,
            kind,
            format_timestamp(listing.start),
            format_timestamp(listing.end),
            tally.new,
            tally.duplicates,
            tally.changed,
            time.monotonic() - started,
        )
        took = time.monotonic() - started
        self._publish(lambda a: replace(a, last_poll_duration=took, progress=None))
        return outcome

    def _ingest(self, batch: list[StreamRecord], tally: _ReadCounts) -> None:
        result = self._state.ingest(self.name, batch, self._clock())
        tally.new += result.new
        tally.duplicates += result.duplicates
        tally.changed += result.changed
        for name, count in result.repairs.items():
            self._metrics.repaired_fields.labels(self.name, STREAMS, name).inc(count)
        if result.changed_ids:
            log.info(
                "account=%s %d counted stream(s) revised by the API, increases added: %s",
                self.name,
                result.changed,
                ", ".join(result.changed_ids[:5]),
            )
        if result.decreased_ids:
            log.warning(
                "account=%s %d counted stream(s) revised down or relabelled by the API; the "
                "counters keep the first figures (neo_exporter_revisions_total): %s",
                self.name,
                len(result.decreased_ids),
                ", ".join(result.decreased_ids[:5]),
            )
        if result.before_horizon:
            log.warning(
                "account=%s %d row(s) older than the pruned part of the window were not counted",
                self.name,
                result.before_horizon,
            )
        if result.new or result.changed:
            if self._backlog and self.live:
                self._last_catch_up = self._clock()
            self._publish()

    def _note_outcome(
        self, endpoint: str, kind: str, outcome: ReadOutcome, start: float, end: float
    ) -> None:
        missing = 0
        if outcome.reported is not None and outcome.found is not None:
            missing = max(0, outcome.reported - outcome.found)
        self._missing[endpoint] = missing
        if outcome.complete:
            return
        self._metrics.incomplete_reads.labels(self.name, endpoint).inc()
        log.warning(
            "account=%s %s read of %s..%s is incomplete: the API counts %s rows, %s are held "
            "(%d repair requests spent)",
            self.name,
            kind,
            format_timestamp(start),
            format_timestamp(end),
            outcome.reported,
            outcome.found,
            outcome.repair_requests,
        )

    # --- tasks ---------------------------------------------------------------------------

    def _read_tasks(
        self, listing: Listing, skips: _SkipLog, top: TopTasks, repairs: dict[str, int]
    ) -> None:
        """Every page of a tasks read into the state's scratch table and `top`."""

        def found(first: float, last: float) -> int:
            return self._state.count_read_tasks(self.name, first, last)

        for page in listing.pages(found):
            tasks: list[TaskRecord] = []
            for row in page.rows:
                try:
                    task = parse_task(row)
                except RowError as exc:
                    skips.add(row, exc)
                    continue
                tasks.append(task)
                top.add(task, row)
                for name in task.repairs:
                    repairs[name] = repairs.get(name, 0) + 1
            # Offset paging can repeat a task: the state keeps the read's distinct ids.
            self._state.add_read_tasks(self.name, tasks)

    def poll_tasks(self) -> bool:
        now = self._clock()
        skips = _SkipLog(self.name, TASKS, self._metrics)
        top = TopTasks(self._top_tasks, emails=self._task_emails, titles=self._task_titles)
        listing = self._client.listing(TASKS_PATH, TASKS, now - self._polling.window, now)
        repairs: dict[str, int] = {}
        try:
            with self._full_reads.slot(self._stop):
                self._read_tasks(listing, skips, top, repairs)
            window = self._state.tasks_read_totals(self.name)
        except Exception as exc:
            return self._read_failed(TASKS, TASKS, exc)
        finally:
            self._state.discard_tasks_read(self.name)
        skips.summarise()
        for name, count in repairs.items():
            self._metrics.repaired_fields.labels(self.name, TASKS, name).inc(count)
        outcome = listing.outcome
        assert outcome is not None
        self._note_outcome(TASKS, TASKS, outcome, listing.start, listing.end)
        self._succeeded(TASKS, TASKS)
        if outcome.complete:
            ranked = top.ranked()
            self._publish(lambda a: replace(a, tasks=window, top_tasks=ranked))
        else:
            self._publish()  # the gauges keep the last complete read's figures
        return True

    # --- audit ---------------------------------------------------------------------------

    def audit(self) -> AuditResult | None:
        """Run the self-audit now and publish its result (None: not run, or it failed)."""
        result = self._audit.run()
        if result is not None:
            self._publish(lambda a: replace(a, audit=result))
        return result

    # --- health and publishing -----------------------------------------------------------

    def _set_catching_up(self) -> None:
        backlog = self._backlog
        self._publish(lambda a: replace(a, catching_up=backlog))

    def _succeeded(self, endpoint: str, kind: str) -> None:
        self._metrics.polls.labels(self.name, kind, "success").inc()
        with self._publishing:
            self._endpoints[endpoint] = EndpointHealth(True, self._clock(), None)
            self._settled = self._settled or self.live
            self._publish()

    def _read_failed(self, endpoint: str, kind: str, exc: Exception) -> bool:
        """Report a read's failure (a stop is none); False, the read's result.

        The one place a read's exception is handled: a bug must not kill the thread.
        """
        error = read_error(exc, self.name, endpoint)
        if error is not None:
            self._failed(endpoint, kind, error)
        return False

    def _failed(self, endpoint: str, kind: str, error: str) -> None:
        self._metrics.polls.labels(self.name, kind, "failure").inc()
        log.error("account=%s %s read failed: %s", self.name, kind, error)
        with self._publishing:
            previous = self._endpoints.get(endpoint, EndpointHealth())
            self._endpoints[endpoint] = EndpointHealth(False, previous.last_success, error)
            self._settled = True
            self._publish(_progress_done)

    def _publish(self, change: AccountChange | None = None, *, window: bool = False) -> None:
        """Put committed state into the snapshot, then `change`; `window` also recounts the
        window gauges."""
        with self._publishing:
            endpoints, missing = dict(self._endpoints), dict(self._missing)
            watermark = self._state.watermark(self.name, WATERMARK_STREAMS)
            last_catch_up = self._last_catch_up
            in_window: tuple[dict[str, int], int] | None = None
            budgets: tuple[BudgetValue, ...] | None = None
            if window or not self._settled:
                # The limits and periods are known before any read: there from the start.
                budgets = self._budget_values(self._clock(), spent=self.live)
            if window:
                since = self._clock() - self._polling.window
                in_window = (
                    self._state.window_streams(self.name, since),
                    self._state.seen_streams(self.name),
                )
            counts = self._state.counts(self.name) if self.live else None
            recent: tuple[RecentSpend, ...] | None = None
            hourly: tuple[tuple[float, float], ...] | None = None
            if window and self.live:
                now = self._clock()
                recent = tuple(
                    self._state.recent_spend(self.name, now, label, seconds)
                    for label, seconds in RECENT_WINDOWS
                )
                # The status page's chart: a week at most keeps it a few KB. It reads a
                # week of rows, so it is read again only after a commit or when the hour
                # turns, not at every idle poll (the oldest bar may lag an hour behind).
                hour = math.floor(now / 3600)
                if counts is not self._chart_counts or hour != self._chart_hour:
                    chart = min(self._polling.window, HOURLY_CHART_SECONDS)
                    self._chart = self._state.hourly_spend(self.name, now - chart)
                    self._chart_counts, self._chart_hour = counts, hour
                hourly = self._chart

            def publish(a: AccountSnapshot) -> AccountSnapshot:
                a = replace(
                    a,
                    endpoints=endpoints,
                    watermark=watermark,
                    last_catch_up=last_catch_up,
                    missing_rows=missing,
                )
                if in_window is not None:
                    a = replace(a, window_streams=in_window[0], seen_streams=in_window[1])
                if counts is not None:
                    a = replace(a, counts=counts)
                if recent is not None:
                    a = replace(a, recent=recent)
                if hourly is not None:
                    a = replace(a, hourly=hourly)
                if budgets is not None:
                    a = replace(a, budgets=budgets)
                return a if change is None else change(a)

            size = self._state.size_bytes() if window else None
            self._store.update(self.name, publish, state_bytes=size)


def _first_poll_done(a: AccountSnapshot) -> AccountSnapshot:
    return replace(a, first_poll_done=True)


def _progress_done(a: AccountSnapshot) -> AccountSnapshot:
    return replace(a, progress=None)


class _KnownRows:
    """Tells the rows of a read that need decoding from those already counted as they are.

    A row already counted with the same raw bytes is not decoded again: an idle poll
    re-reads the whole lookback, and decoding it was most of its cost. Rows the last
    incremental read counted (`remembered`, None for other reads) are known by their digest
    alone; others by the state's fingerprint of their id. A run of pages with no counted row
    (a backfill) is looked up on every PRECHECK_EVERY-th page only: ingest finds the rest.
    """

    def __init__(self, state: State, account: str, remembered: frozenset[str] | None) -> None:
        self._state = state
        self._account = account
        self._remembered = remembered or frozenset()
        # This read's digests of rows now counted: what the next incremental read remembers.
        self.counted: set[str] | None = None if remembered is None else set()
        self._unknown_pages = 0

    def unknown(
        self, rows: Sequence[object], tally: _ReadCounts
    ) -> list[tuple[object, str | None]]:
        """The rows to decode, with their digests (None for a row not in raw JSON)."""
        counted = self.counted
        rest: list[tuple[object, str | None]] = []
        for row in rows:
            digest = raw_digest(row)
            if digest is not None and digest in self._remembered:
                tally.duplicates += 1
            else:
                rest.append((row, digest))
            if digest is not None and counted is not None and len(counted) < REMEMBERED_ROWS:
                counted.add(digest)
        if self._unknown_pages % PRECHECK_EVERY:
            self._unknown_pages += 1
            return rest
        ids = [raw_stream_id(row) for row, _ in rest]
        seen = self._state.fingerprints(self._account, [i for i in ids if i is not None])
        self._unknown_pages = 0 if seen else 1
        todo = []
        for (row, digest), stream_id in zip(rest, ids, strict=True):
            if stream_id is not None and seen.get(stream_id) == digest:
                tally.duplicates += 1
            else:
                todo.append((row, digest))
        return todo

    def forget(self, digest: str | None) -> None:
        if digest is not None and self.counted is not None:
            self.counted.discard(digest)


class _SkipLog:
    """Counts skipped rows and logs the first few of a read with their reasons.

    A row fetched again within the read (the pages of a repair overlap) counts once.
    """

    def __init__(self, account: str, endpoint: str, metrics: ExporterMetrics) -> None:
        self._account = account
        self._endpoint = endpoint
        self._metrics = metrics
        self._count = 0
        self._seen: set[int] = set()

    def add(self, row: object, exc: RowError) -> None:
        row = row_value(row)  # skipped rows are few: decoding them again costs nothing
        key = hash(repr(row))
        if key in self._seen:
            return
        if len(self._seen) < MAX_SKIPS_REMEMBERED:
            self._seen.add(key)
        self._count += 1
        self._metrics.skipped_records.labels(self._account, self._endpoint, exc.reason).inc()
        if self._count <= LOGGED_SKIPS:
            row_id = row.get("stream_id") or row.get("task_id") if isinstance(row, dict) else None
            log.warning(
                "account=%s skipped a %s row (id %.64r): %s",
                self._account,
                self._endpoint,
                row_id,
                exc,
            )

    def summarise(self) -> None:
        if self._count > LOGGED_SKIPS:
            log.warning(
                "account=%s skipped %d %s rows in this read (%d more than shown)",
                self._account,
                self._count,
                self._endpoint,
                self._count - LOGGED_SKIPS,
            )
