"""Account-level reads: the usage summary, the spending cap and the credit balance.

Three endpoints, each read on its own interval (`polling.summary_interval`, `user_interval`,
`credits_interval`) by one `AccountInfoPoller` per account, in a thread of its own:

- `/api/v1/usage/summary` over the window (`polling.window`), then again from the last
  credit reset, for the credits used since then;
- `/api/v1/user`, for its spending `cap` (absent, not zero, when the API returns none);
- `/api/v1/billing/credits`, the balance.

An endpoint that answers 403 (not an admin) or 404 (not on a plan) is logged once, shown as
unavailable on the landing page, and tried again only every
`polling.unavailable_retry_interval`; other failures are retried at the normal interval and
keep the last values.

Also here: `TopTasks`, the bounded ranking of the window's most expensive tasks that the
tasks read feeds (ids and titles as labels, so N series at most, never one per task).
Parsing is pure; only the poller does I/O.
"""

from __future__ import annotations

import heapq
import logging
import math
import threading
import time
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from exporter.client import ApiError, NeoClient, Stopped
from exporter.config import MetricsConfig, PollingConfig, format_duration
from exporter.instrumentation import ExporterMetrics
from exporter.models import (
    RowError,
    TaskRecord,
    clean_label,
    format_timestamp,
    parse_timestamp,
    row_value,
)
from exporter.snapshot import (
    ACCOUNT_ENDPOINTS,
    AccountInfo,
    CreditBalance,
    EndpointHealth,
    MemberSpend,
    SnapshotStore,
    SpendingCap,
    TopTask,
    UsageSummary,
)

log = logging.getLogger(__name__)

SUMMARY_PATH = "/api/v1/usage/summary"
USER_PATH = "/api/v1/user"
CREDITS_PATH = "/api/v1/billing/credits"
PATHS = {"summary": SUMMARY_PATH, "user": USER_PATH, "credits": CREDITS_PATH}
UNAVAILABLE_STATUSES = (403, 404)
OTHER = "other"
TITLE_MAX = 60  # characters of a task title kept in a label


class BodyError(ValueError):
    """A response body that does not have the documented shape."""


# --- parsing (pure) -------------------------------------------------------------------------


def _object(body: object, what: str) -> Mapping[str, Any]:
    if not isinstance(body, dict):
        raise BodyError(f"{what} should be a JSON object, got {type(body).__name__}")
    return body


def _number(obj: Mapping[str, Any], key: str, *, required: bool = False) -> float | None:
    """A finite number; None when absent, null or (for an optional field) malformed."""
    value = obj.get(key)
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    if required:
        raise BodyError(f"{key} should be a number, got {value!r:.40}")
    if value is not None:
        log.debug("ignoring %s: not a number (%.40r)", key, value)
    return None


def _count(obj: Mapping[str, Any], key: str) -> int | None:
    value = _number(obj, key)
    return None if value is None or value < 0 else int(value)


def _time(obj: Mapping[str, Any], key: str) -> float | None:
    value = obj.get(key)
    if value is None:
        return None
    try:
        return parse_timestamp(value, key)
    except RowError as exc:
        log.debug("ignoring %s: %s", key, exc.detail)
        return None


def fold(values: Mapping[str, float], limit: int) -> dict[str, float]:
    """The `limit` largest values by key, the rest summed under `other`."""
    ranked = sorted(values.items(), key=lambda kv: (-kv[1], kv[0]))
    kept = dict(ranked[:limit])
    rest = ranked[limit:]
    if rest:
        kept[OTHER] = kept.get(OTHER, 0.0) + math.fsum(v for _, v in rest)
    return kept


def _statuses(value: object, limit: int) -> dict[str, int]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BodyError(f"by_status should be an object, got {type(value).__name__}")
    counts: dict[str, float] = {}
    for status, count in value.items():
        if isinstance(status, str) and isinstance(count, int) and count >= 0:
            label = clean_label(status).lower()
            counts[label] = counts.get(label, 0) + count
    return {k: int(v) for k, v in fold(counts, limit).items()}


def _members(value: object, limit: int) -> tuple[MemberSpend, ...]:
    """`by_email`: the `limit` biggest spenders, the rest summed as `other`."""
    credits: dict[str, list[float]] = {}
    tasks: dict[str, int] = {}
    for item in value if isinstance(value, list) else ():
        if not isinstance(item, dict) or not isinstance(item.get("email"), str):
            continue
        email = clean_label(item["email"])
        credits.setdefault(email, []).append(_number(item, "neo_credits") or 0.0)
        tasks[email] = tasks.get(email, 0) + (_count(item, "tasks") or 0)
    totals = {email: math.fsum(values) for email, values in credits.items()}
    ranked = sorted(totals, key=lambda email: (-totals[email], email))
    kept = [MemberSpend(email, totals[email], tasks[email]) for email in ranked[:limit]]
    rest = ranked[limit:]
    if rest:
        kept.append(
            MemberSpend(OTHER, math.fsum(totals[e] for e in rest), sum(tasks[e] for e in rest))
        )
    return tuple(kept)


def parse_summary(
    body: object, *, status_limit: int, members_limit: int | None = None
) -> UsageSummary:
    """`/usage/summary`; `by_email` is read only when members_limit is given."""
    obj = _object(body, "summary")
    credits = _number(obj, "total_neo_credits", required=True)
    assert credits is not None
    byok = obj.get("byok")
    if not isinstance(byok, dict):
        byok = {}
    return UsageSummary(
        credits=credits,
        tasks_by_status=_statuses(obj.get("by_status"), status_limit),
        byok_llm_cost=_number(byok, "total_llm_cost"),
        byok_neo_cost=_number(byok, "total_neo_cost"),
        byok_streams=_count(byok, "total_streams"),
        byok_tasks=_count(byok, "total_tasks"),
        available_credits=_number(obj, "total_available_neo_credits"),
        issued_credits=_number(obj, "total_issued_neo_credits"),
        credits_expire_at=_time(obj, "neo_credits_expires_at"),
        last_credit_reset=_time(obj, "last_credit_reset"),
        members=() if members_limit is None else _members(obj.get("by_email"), members_limit),
    )


def parse_summary_credits(body: object) -> float:
    """`total_neo_credits` of a `/usage/summary` body (the self-audit's one figure)."""
    credits = _number(_object(body, "summary"), "total_neo_credits", required=True)
    assert credits is not None
    return credits


def parse_cap(body: object) -> SpendingCap | None:
    """The `cap` of `/user`: None when there is none (null or absent)."""
    cap = _object(body, "user").get("cap")
    if cap is None:
        return None
    cap = _object(cap, "cap")
    limit = _number(cap, "limit", required=True)
    used = _number(cap, "used", required=True)
    assert limit is not None and used is not None
    remaining = _number(cap, "remaining")
    return SpendingCap(limit, used, max(0.0, limit - used) if remaining is None else remaining)


def parse_credits(body: object) -> CreditBalance:
    obj = _object(body, "credits")
    balance = CreditBalance(
        available=_number(obj, "available_credits"),
        issued=_number(obj, "issued_credits"),
        used=_number(obj, "used_credits"),
        expires_at=_time(obj, "expires_at"),
    )
    if balance.available is None and balance.issued is None and balance.used is None:
        raise BodyError("none of available_credits, issued_credits, used_credits is a number")
    return balance


def clean_title(value: object) -> str:
    """A task title fit for a label: control characters gone, spaces collapsed, truncated."""
    if not isinstance(value, str):
        return ""
    text = "".join(" " if unicodedata.category(c).startswith("C") else c for c in value)
    text = " ".join(text.split())
    return text if len(text) <= TITLE_MAX else text[: TITLE_MAX - 1] + "\u2026"


# --- top tasks --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Candidate:
    credits: float
    task_id: str
    title: object  # as the API sent it; cleaned only for the winners
    email: str

    def __lt__(self, other: _Candidate) -> bool:
        # The heap's smallest is the first to drop: fewer credits, then the larger id.
        return (self.credits, other.task_id) < (other.credits, self.task_id)


class TopTasks:
    """The `count` tasks with the most credits in one tasks read; memory stays `count` rows."""

    def __init__(self, count: int, *, emails: bool, titles: bool = True) -> None:
        self._count = count
        self._emails = emails
        self._titles = titles  # metrics.task_titles: off, no title is kept at all
        self._heap: list[_Candidate] = []
        self._ids: set[str] = set()  # of the heap's tasks: a task repeated by paging once

    def add(self, task: TaskRecord, row: object) -> None:
        """One parsed task and its row (for the title, and the email if members are enabled)."""
        if self._count <= 0 or task.credits <= 0:  # BYOK and free tasks cost no credits
            return
        if len(self._heap) >= self._count and task.credits < self._heap[0].credits:
            return  # the usual case once the heap is full: nothing to build
        if task.task_id in self._ids:
            return
        row = row_value(row)  # a few rows reach this point: decode them again
        fields = row if isinstance(row, dict) else {}
        email = fields.get("email") if self._emails else None
        candidate = _Candidate(
            task.credits,
            task.task_id,
            fields.get("task_title") if self._titles else None,
            clean_label(email) if isinstance(email, str) else "",
        )
        if len(self._heap) < self._count:
            heapq.heappush(self._heap, candidate)
            self._ids.add(task.task_id)
        elif self._heap[0] < candidate:
            self._ids.discard(heapq.heapreplace(self._heap, candidate).task_id)
            self._ids.add(task.task_id)

    def ranked(self) -> tuple[TopTask, ...]:
        best = sorted(self._heap, key=lambda c: (-c.credits, c.task_id))
        return tuple(
            TopTask(rank, c.task_id, clean_title(c.title), c.email, c.credits)
            for rank, c in enumerate(best, start=1)
        )


# --- polling ----------------------------------------------------------------------------------

SUCCESS, UNAVAILABLE, FAILURE, STOPPED = "success", "unavailable", "failure", "stopped"


class AccountInfoPoller:
    """Reads one account's summary, user and credits endpoints, each on its own interval."""

    def __init__(
        self,
        account_name: str,
        polling: PollingConfig,
        metrics_config: MetricsConfig,
        client: NeoClient,
        store: SnapshotStore,
        metrics: ExporterMetrics,
        *,
        stop: threading.Event,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = account_name
        self._intervals = {
            "summary": polling.summary_interval,
            "user": polling.user_interval,
            "credits": polling.credits_interval,
        }
        self._retry_unavailable = polling.unavailable_retry_interval
        self._window = polling.window
        self._status_limit = metrics_config.label_limits.status
        members = metrics_config.members
        self._members_limit = members.limit if members.enabled else None
        self._client = client
        self._store = store
        self._metrics = metrics
        self._stop = stop
        self._clock = clock
        self._due = dict.fromkeys(ACCOUNT_ENDPOINTS, -math.inf)  # everything is due at start
        self._info = AccountInfo()
        self._readers: dict[str, Callable[[float], dict[str, Any]]] = {
            "summary": self._read_summary,
            "user": self._read_user,
            "credits": self._read_credits,
        }

    def run(self) -> None:
        while not self._stop.is_set():
            self.poll_due()
            self._stop.wait(max(0.0, self.next_due() - self._clock()))

    def next_due(self) -> float:
        return min(self._due.values())

    def poll_due(self) -> dict[str, str]:
        """Read every endpoint whose time has come; returns each one's result."""
        results = {}
        for endpoint in ACCOUNT_ENDPOINTS:
            if self._stop.is_set():
                break
            if self._clock() >= self._due[endpoint]:
                results[endpoint] = self.poll(endpoint)
        return results

    def poll_once(self) -> bool:
        """Read every endpoint now; True unless one failed (unavailable is not a failure)."""
        results = [self.poll(endpoint) for endpoint in ACCOUNT_ENDPOINTS]
        return all(result in (SUCCESS, UNAVAILABLE) for result in results)

    def poll(self, endpoint: str) -> str:
        now = self._clock()
        try:
            changes = self._readers[endpoint](now)
        except Stopped:
            return STOPPED
        except ApiError as exc:
            if exc.status in UNAVAILABLE_STATUSES:
                return self._unavailable(endpoint, exc.status, now)
            return self._failed(endpoint, str(exc), now)
        except BodyError as exc:
            return self._failed(endpoint, f"{endpoint}: invalid response body: {exc}", now)
        except Exception as exc:  # a bug must not kill the thread: report it and go on
            log.exception("account=%s %s read failed unexpectedly", self.name, endpoint)
            return self._failed(endpoint, f"internal error: {type(exc).__name__}", now)
        self._due[endpoint] = now + self._intervals[endpoint]
        if endpoint in self._info.unavailable_until:
            log.info("account=%s %s is available again", self.name, PATHS[endpoint])
        self._update(
            endpoint,
            SUCCESS,
            EndpointHealth(True, now, None),
            available=True,
            **changes,
        )
        return SUCCESS

    # --- the three reads -----------------------------------------------------------------

    def _read_summary(self, now: float) -> dict[str, Any]:
        body = self._client.get_json(
            SUMMARY_PATH,
            {"from": format_timestamp(now - self._window), "to": format_timestamp(now)},
            "summary",
        )
        summary = parse_summary(
            body, status_limit=self._status_limit, members_limit=self._members_limit
        )
        reset = summary.last_credit_reset
        if reset is not None and reset <= now:
            # Credits used since the reset: the summary's total over [reset, now].
            since = self._client.get_json(
                SUMMARY_PATH,
                {"from": format_timestamp(reset), "to": format_timestamp(now)},
                "summary",
            )
            summary = replace(summary, credits_since_reset=parse_summary_credits(since))
        return {"summary": summary}

    def _read_user(self, now: float) -> dict[str, Any]:
        return {"cap": parse_cap(self._client.get_json(USER_PATH, {}, "user"))}

    def _read_credits(self, now: float) -> dict[str, Any]:
        return {"credits": parse_credits(self._client.get_json(CREDITS_PATH, {}, "credits"))}

    # --- outcomes ------------------------------------------------------------------------

    def _unavailable(self, endpoint: str, status: int | None, now: float) -> str:
        retry = now + self._retry_unavailable
        self._due[endpoint] = retry
        reason = f"HTTP {status}: " + (
            "the token is not a team admin's" if status == 403 else "no plan includes it"
        )
        # Logged once when it becomes unavailable, not at every rare retry.
        level = logging.DEBUG if endpoint in self._info.unavailable_until else logging.WARNING
        log.log(
            level,
            "account=%s %s is unavailable to this token (%s); trying again every %s",
            self.name,
            PATHS[endpoint],
            reason,
            format_duration(self._retry_unavailable),
        )
        # What the endpoint said before no longer holds for this token.
        cleared = {
            "summary": {"summary": None},
            "user": {"cap": None},
            "credits": {"credits": None},
        }
        previous = self._info.endpoints.get(endpoint, EndpointHealth())
        health = EndpointHealth(False, previous.last_success, f"unavailable ({reason})")
        self._update(
            endpoint, UNAVAILABLE, health, available=False, retry=retry, **cleared[endpoint]
        )
        return UNAVAILABLE

    def _failed(self, endpoint: str, message: str, now: float) -> str:
        self._due[endpoint] = now + self._intervals[endpoint]
        log.error("account=%s %s read failed: %s", self.name, endpoint, message)
        previous = self._info.endpoints.get(endpoint, EndpointHealth())
        health = EndpointHealth(False, previous.last_success, message)
        self._update(endpoint, FAILURE, health, available=None)
        return FAILURE

    def _update(
        self,
        endpoint: str,
        result: str,
        health: EndpointHealth,
        *,
        available: bool | None,
        retry: float | None = None,
        **changes: Any,
    ) -> None:
        """Record the result and publish; `available` None leaves availability as it was."""
        self._metrics.polls.labels(self.name, endpoint, result).inc()
        unavailable = dict(self._info.unavailable_until)
        if available is True:
            unavailable.pop(endpoint, None)
        elif available is False and retry is not None:
            unavailable[endpoint] = retry
        self._info = replace(
            self._info,
            endpoints={**self._info.endpoints, endpoint: health},
            unavailable_until=unavailable,
            **changes,
        )
        self._store.update(self.name, info=self._info)
