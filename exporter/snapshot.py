"""Immutable snapshots of committed state, handed from the pollers to the collector.

A poller builds a new `AccountSnapshot` after each commit and swaps it into the
`SnapshotStore`; a scrape takes the current `Snapshot` and never waits for a poll.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from exporter.counting import Counts, RecentSpend, TaskWindow, TopTask
from exporter.models import CreditBalance, SpendingCap, UsageSummary


@dataclass(frozen=True, slots=True)
class EndpointHealth:
    up: bool | None = None  # None until the first request of that endpoint ends
    last_success: float | None = None
    last_error: str | None = None  # safe to show: holds no secret


@dataclass(frozen=True, slots=True)
class ReadProgress:
    """A long read in progress (first start, catch-up, reconcile)."""

    kind: str
    started: float
    pages_done: int
    pages_total: int | None
    rows_done: int
    rows_total: int | None
    eta_seconds: float | None


@dataclass(frozen=True, slots=True)
class AuditResult:
    """Neo's own totals for a closed period beside what the exporter counted for it.

    `neo_*` is None when Neo did not say (no `total` in the listing; summary unavailable).
    """

    at: float
    start: float
    end: float
    neo_streams: int | None
    counted_streams: int
    neo_credits: float | None
    counted_credits: float

    @property
    def streams_missing(self) -> int | None:
        return None if self.neo_streams is None else self.neo_streams - self.counted_streams

    @property
    def credits_drift(self) -> float | None:
        return None if self.neo_credits is None else self.neo_credits - self.counted_credits


@dataclass(frozen=True, slots=True)
class BudgetValue:
    """One budget's figures for its current period (config budgets:)."""

    name: str
    unit: str  # "credits" | "usd"
    limit: float
    # Of the streams created in [start, now], as counted; None until the counters are
    # published (a quiet first start): a 0 that jumped would read as a burst of spend.
    spent: float | None
    start: float  # the current period's [start, end), Unix seconds
    end: float


# Account-level endpoints, each read on its own interval (see exporter.account_info).


@dataclass(frozen=True, slots=True)
class AccountInfo:
    """What the account-level endpoints (summary, user, credits) said last."""

    summary: UsageSummary | None = None
    cap: SpendingCap | None = None  # None before the first read, and when no cap applies
    credits: CreditBalance | None = None
    endpoints: Mapping[str, EndpointHealth] = field(default_factory=dict)
    # Endpoints that answered 403/404, with when they are tried again.
    unavailable_until: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AccountSnapshot:
    name: str
    counts: Counts = field(default_factory=lambda: Counts({}, {}))
    window_streams: Mapping[str, int] = field(default_factory=dict)
    tasks: TaskWindow | None = None
    endpoints: Mapping[str, EndpointHealth] = field(default_factory=dict)
    last_poll_duration: float | None = None
    seen_streams: int = 0
    watermark: float | None = None
    progress: ReadProgress | None = None
    first_poll_done: bool = False
    info: AccountInfo = field(default_factory=AccountInfo)
    top_tasks: tuple[TopTask, ...] = ()
    # A backlog is being read (first start, after downtime or an API outage), and when the
    # last read of one committed something; counter increases then are not current spend.
    catching_up: bool = False
    last_catch_up: float | None = None
    # Rows the last read of each list endpoint missed against the API's own count (0: none).
    missing_rows: Mapping[str, int] = field(default_factory=dict)
    audit: AuditResult | None = None
    # The spend of the streams that ended lately, by trailing window (empty until live).
    recent: tuple[RecentSpend, ...] = ()
    # Published once the account is live (its first whole read is complete).
    budgets: tuple[BudgetValue, ...] = ()
    # (hour start, credits) of the streams that ended in each UTC hour of the last
    # min(window, 7 days), hours with none left out; for the status page's chart.
    hourly: tuple[tuple[float, float], ...] = ()


@dataclass(frozen=True, slots=True)
class Snapshot:
    accounts: tuple[AccountSnapshot, ...] = ()
    state_bytes: int = 0
    window_seconds: float = 0.0

    @property
    def ready(self) -> bool:
        return all(account.first_poll_done for account in self.accounts)


AccountChange = Callable[[AccountSnapshot], AccountSnapshot]


class SnapshotStore:
    """Holds the latest snapshot; an account's part is replaced atomically."""

    def __init__(self, accounts: tuple[str, ...], window_seconds: float) -> None:
        self._lock = threading.Lock()
        self._snapshot = Snapshot(
            accounts=tuple(AccountSnapshot(name) for name in accounts),
            window_seconds=window_seconds,
        )

    def get(self) -> Snapshot:
        with self._lock:
            return self._snapshot

    def account(self, name: str) -> AccountSnapshot:
        with self._lock:
            return next(a for a in self._snapshot.accounts if a.name == name)

    def update(
        self,
        name: str,
        change: AccountChange,
        *,
        state_bytes: int | None = None,
    ) -> None:
        """Replace one account's snapshot by `change` of it (and the state size if given).

        `change` is usually `lambda a: replace(a, field=value)`: mypy checks the fields.
        """
        with self._lock:
            snap = self._snapshot
            accounts = tuple(change(a) if a.name == name else a for a in snap.accounts)
            self._snapshot = replace(
                snap,
                accounts=accounts,
                state_bytes=snap.state_bytes if state_bytes is None else state_bytes,
            )
