"""Background polling of one account: what to read when, and handing results to the state.

Streams, every `polling.interval`: read `[min(now - lookback, watermark), now]`, the
watermark being the `to` of the last complete read (so a restart re-reads its downtime,
up to `polling.catch_up_limit`). Every `polling.reconcile_interval`, and on first start,
read the whole window `[now - window, now]` instead, to catch rows that appeared long
after their `created_at`. `to` is pinned for the whole read; rows are committed in
batches (ids and counter increments together), and the watermark moves only once the
read is complete, so a crash mid-read just means the next read starts earlier.

Tasks, every `polling.tasks_interval`: read the window and keep gauges.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from exporter.account_info import TopTasks
from exporter.client import ApiError, NeoClient, PageProgress, Stopped
from exporter.config import AccountConfig, PollingConfig
from exporter.instrumentation import ExporterMetrics
from exporter.models import (
    RowError,
    StreamRecord,
    TaskRecord,
    format_timestamp,
    parse_stream,
    parse_task,
)
from exporter.snapshot import EndpointHealth, ReadProgress, SnapshotStore
from exporter.state import WATERMARK_RECONCILE, WATERMARK_STREAMS, State, StateError

log = logging.getLogger(__name__)

STREAMS_PATH = "/api/v1/usage/streams"
TASKS_PATH = "/api/v1/usage/tasks"
BATCH_ROWS = 2000  # rows per transaction: bounded memory, few commits
PROGRESS_EVERY = 5.0  # seconds between progress log lines of a long read
LOGGED_SKIPS = 5  # per read; the rest are summed in one line


@dataclass(frozen=True, slots=True)
class ReadPlan:
    kind: str  # "incremental" | "reconcile"
    start: float
    end: float


def plan_streams_read(
    now: float, polling: PollingConfig, watermark: float | None, reconciled: float | None
) -> ReadPlan:
    """Decide the next streams read from the clock and the saved watermarks."""
    window_start = now - polling.window
    if reconciled is None or now - reconciled >= polling.reconcile_interval or watermark is None:
        return ReadPlan("reconcile", window_start, now)
    start = min(now - polling.lookback, watermark)
    start = max(start, now - polling.catch_up_limit, window_start)
    return ReadPlan("incremental", start, now)


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
    ) -> None:
        self.name = account.name
        self._top_tasks = top_tasks  # how many of the window's tasks to rank by credits
        self._task_emails = task_emails
        self._task_titles = task_titles
        self._polling = polling
        self._state = state
        self._client = client
        self._store = store
        self._metrics = metrics
        self._stop = stop
        self._clock = clock
        self._endpoints: dict[str, EndpointHealth] = {}
        # The streams and tasks reads publish from two threads: state is read and the
        # snapshot written under one lock, so an older count never overwrites a newer one.
        self._publishing = threading.RLock()

    # --- scheduling ----------------------------------------------------------------------

    def run(self) -> None:
        next_streams = next_tasks = self._clock()
        while not self._stop.is_set():
            now = self._clock()
            streams_due, tasks_due = now >= next_streams, now >= next_tasks
            if streams_due:
                next_streams = max(next_streams + self._polling.interval, now)
            if tasks_due:
                next_tasks = max(next_tasks + self._polling.tasks_interval, now)
            if streams_due and tasks_due:
                self.poll_both()
            elif streams_due:
                self.poll_streams()
            elif tasks_due:
                self.poll_tasks()
            self._store.update(self.name, first_poll_done=True)
            self._stop.wait(max(0.0, min(next_streams, next_tasks) - self._clock()))

    def poll_once(self) -> bool:
        """Read the whole window of streams and the tasks once; True if both succeeded."""
        ok = self.poll_both(force_reconcile=True)
        self._store.update(self.name, first_poll_done=True)
        return ok

    def poll_both(self, *, force_reconcile: bool = False) -> bool:
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
        streams_ok = self.poll_streams(force_reconcile=force_reconcile)
        helper.join()
        return streams_ok and tasks_ok == [True]

    # --- streams -------------------------------------------------------------------------

    def poll_streams(self, *, force_reconcile: bool = False) -> bool:
        now = self._clock()
        plan = plan_streams_read(
            now,
            self._polling,
            self._state.watermark(self.name, WATERMARK_STREAMS),
            None if force_reconcile else self._state.watermark(self.name, WATERMARK_RECONCILE),
        )
        started = time.monotonic()
        try:
            new, duplicates, changed = self._read_streams(plan)
        except Stopped:
            return False
        except ApiError as exc:
            self._failed("streams", plan.kind, exc)
            return False
        except StateError as exc:  # the state cannot be written: reported, not a traceback
            self._failed("streams", plan.kind, ApiError(str(exc)))
            return False
        except Exception as exc:  # a bug must not kill the thread: report it and go on
            log.exception("account=%s streams read failed unexpectedly", self.name)
            self._failed("streams", plan.kind, ApiError(f"internal error: {type(exc).__name__}"))
            return False
        duration = time.monotonic() - started
        self._succeeded("streams", plan.kind)
        log.info(
            "account=%s %s read of %s..%s: %d new, %d already counted, %d changed, %.2fs",
            self.name,
            plan.kind,
            format_timestamp(plan.start),
            format_timestamp(plan.end),
            new,
            duplicates,
            changed,
            duration,
        )
        self._publish(last_poll_duration=duration, progress=None, window=True)
        return True

    def _read_streams(self, plan: ReadPlan) -> tuple[int, int, int]:
        params = {
            "from": format_timestamp(plan.start),
            "to": format_timestamp(plan.end),  # pinned for every page of this read
            "sort": "created_at",
        }
        progress = ProgressLog(
            self.name, plan.kind, self._clock, lambda p: self._store.update(self.name, progress=p)
        )
        skips = _SkipLog(self.name, "streams", self._metrics)
        batch: list[StreamRecord] = []
        new = duplicates = changed = 0
        for page in self._client.pages(STREAMS_PATH, params, "streams", on_progress=progress):
            for row in page.rows:
                try:
                    record = parse_stream(row)
                except RowError as exc:
                    skips.add(row, exc)
                    continue
                for name in record.invalid_details:
                    self._metrics.invalid_details.labels(self.name, name).inc()
                batch.append(record)
            if len(batch) >= BATCH_ROWS:
                n, d, c = self._ingest(batch)
                new, duplicates, changed = new + n, duplicates + d, changed + c
                batch = []
        n, d, c = self._ingest(batch)
        skips.summarise()
        self._state.finish_read(
            self.name,
            to=plan.end,
            whole_window=plan.kind == "reconcile",
            prune_before=plan.end - self._polling.window - self._polling.lookback,
        )
        return new + n, duplicates + d, changed + c

    def _ingest(self, batch: list[StreamRecord]) -> tuple[int, int, int]:
        if not batch:
            return 0, 0, 0
        result = self._state.ingest(self.name, batch, self._clock())
        if result.changed_ids:
            log.warning(
                "account=%s %d stream(s) changed after they were counted (not recounted): %s",
                self.name,
                result.changed,
                ", ".join(result.changed_ids[:5]),
            )
        if result.before_horizon:
            log.warning(
                "account=%s %d row(s) older than the pruned part of the window were not counted",
                self.name,
                result.before_horizon,
            )
        if result.new or result.changed:
            self._publish()
        return result.new, result.duplicates, result.changed

    # --- tasks ---------------------------------------------------------------------------

    def poll_tasks(self) -> bool:
        now = self._clock()
        params = {
            "from": format_timestamp(now - self._polling.window),
            "to": format_timestamp(now),
        }
        skips = _SkipLog(self.name, "tasks", self._metrics)
        top = TopTasks(self._top_tasks, emails=self._task_emails, titles=self._task_titles)
        try:
            for page in self._client.pages(TASKS_PATH, params, "tasks"):
                tasks: list[TaskRecord] = []
                for row in page.rows:
                    try:
                        task = parse_task(row)
                    except RowError as exc:
                        skips.add(row, exc)
                        continue
                    tasks.append(task)
                    top.add(task, row)
                # Offset paging can repeat a task: the state keeps the read's distinct ids.
                self._state.add_read_tasks(self.name, tasks)
            window = self._state.tasks_read_totals(self.name)
        except Stopped:
            return False
        except ApiError as exc:
            self._failed("tasks", "tasks", exc)
            return False
        except StateError as exc:
            self._failed("tasks", "tasks", ApiError(str(exc)))
            return False
        except Exception as exc:  # a bug must not kill the thread: report it and go on
            log.exception("account=%s tasks read failed unexpectedly", self.name)
            self._failed("tasks", "tasks", ApiError(f"internal error: {type(exc).__name__}"))
            return False
        finally:
            self._state.discard_tasks_read(self.name)
        skips.summarise()
        self._succeeded("tasks", "tasks")
        self._publish(tasks=window, top_tasks=top.ranked())
        return True

    # --- health and publishing -----------------------------------------------------------

    def _succeeded(self, endpoint: str, kind: str) -> None:
        self._metrics.polls.labels(self.name, kind, "success").inc()
        with self._publishing:
            self._endpoints[endpoint] = EndpointHealth(True, self._clock(), None)
            self._publish()

    def _failed(self, endpoint: str, kind: str, exc: ApiError) -> None:
        self._metrics.polls.labels(self.name, kind, "failure").inc()
        log.error("account=%s %s read failed: %s", self.name, kind, exc)
        with self._publishing:
            previous = self._endpoints.get(endpoint, EndpointHealth())
            self._endpoints[endpoint] = EndpointHealth(False, previous.last_success, str(exc))
            self._publish(progress=None)

    def _publish(self, *, window: bool = False, **changes: object) -> None:
        """Put committed state into the snapshot; `window` also recounts window gauges."""
        with self._publishing:
            if window:
                since = self._clock() - self._polling.window
                changes["window_streams"] = self._state.window_streams(self.name, since)
                changes["seen_streams"] = self._state.seen_streams(self.name)
            self._store.update(
                self.name,
                state_bytes=self._state.size_bytes() if window else None,
                counts=self._state.counts(self.name),
                endpoints=dict(self._endpoints),
                watermark=self._state.watermark(self.name, WATERMARK_STREAMS),
                **changes,
            )


class _SkipLog:
    """Counts skipped rows and logs the first few of a read with their reasons."""

    def __init__(self, account: str, endpoint: str, metrics: ExporterMetrics) -> None:
        self._account = account
        self._endpoint = endpoint
        self._metrics = metrics
        self._count = 0

    def add(self, row: object, exc: RowError) -> None:
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
