"""A custom Collector: the latest committed snapshot, converted into metric families.

`collect()` does no I/O and takes no lock held by a poll: it reads one immutable snapshot,
so concurrent scrapes never race and vanished label sets simply disappear.
Every business metric carries `account`. HELP names the API field behind each metric.
Each function's docstring shows lines of its exposition, verbatim (labels in the order the
client renders them) from the golden snapshot in tests/golden/, which tests/test_golden.py
checks.
"""

from __future__ import annotations

import enum
import platform
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import utils
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.core import Metric as Family
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from exporter import __version__
from exporter import catalogue as m
from exporter.api import ENDPOINTS
from exporter.catalogue import Metric
from exporter.counting import RECENT_WINDOWS, RecentSpend
from exporter.snapshot import Snapshot, SnapshotStore

# The client library's own formatting of `le` values (its annotation is missing).
_format_bound: Callable[[float], str] = utils.floatToGoString


def _counter(metric: Metric) -> CounterMetricFamily:
    return CounterMetricFamily(metric.name, metric.help, labels=list(metric.labels))


def _gauge(metric: Metric) -> GaugeMetricFamily:
    return GaugeMetricFamily(metric.name, metric.help, labels=list(metric.labels))


def _gauges(metrics: tuple[Metric, ...]) -> dict[Metric, GaugeMetricFamily]:
    return {metric: _gauge(metric) for metric in metrics}


def stream_counters(snapshot: Snapshot) -> Iterator[Family]:
    """Counters from each stream, and the per-agent and per-tool breakdowns.

    neo_credits_total{account="acme",byok="false",model="gpt-5",status="completed"} 12.5
    neo_credits_created{account="acme",byok="false",model="gpt-5",status="completed"} 1.76e+09
    neo_tool_calls_by_tool_total{account="acme",tool="nuclei"} 310.0
    neo_team_credits_total{account="acme",team="red"} 8.5
    neo_team_credits_total{account="acme",team="unassigned"} 4.6
    """
    families = {
        metric.name: _counter(metric)
        for metric in m.STREAM_COUNTERS + m.BREAKDOWNS + m.TEAM_COUNTERS
    }
    for account in snapshot.accounts:
        for (metric, labels), value in account.counts.counters.items():
            family = families.get(metric)
            if family is not None:
                family.add_metric([account.name, *labels], value.value, created=value.created)
    yield from families.values()


def histograms(snapshot: Snapshot) -> Iterator[Family]:
    """Histograms of tool call durations, stream durations and per-stream step latency.

    neo_stream_duration_seconds_bucket{account="acme",le="60.0",model="gpt-5"} 41.0
    neo_stream_duration_seconds_bucket{account="acme",le="+Inf",model="gpt-5"} 50.0
    neo_stream_duration_seconds_count{account="acme",model="gpt-5"} 50.0
    neo_stream_duration_seconds_sum{account="acme",model="gpt-5"} 2210.4
    neo_stream_duration_seconds_created{account="acme",model="gpt-5"} 1.76e+09
    """
    families = {
        metric.name: (metric, HistogramMetricFamily(metric.name, metric.help, labels=metric.labels))
        for metric in m.HISTOGRAMS
    }
    for account in snapshot.accounts:
        for (name, labels), value in account.counts.histograms.items():
            metric, family = families[name]
            buckets: list[tuple[str, float]] = []
            cumulative = 0
            for bound, count in zip(value.bounds, value.buckets, strict=False):
                cumulative += count
                buckets.append((_format_bound(bound), float(cumulative)))
            buckets.append(("+Inf", float(value.count)))
            label_values = [account.name, *labels]
            family.add_metric(label_values, buckets, value.sum)
            family.samples.append(
                Sample(
                    f"{metric.name}_created",
                    dict(zip(metric.labels, label_values, strict=True)),
                    value.created,
                )
            )
    yield from (family for _, family in families.values())


def window_gauges(snapshot: Snapshot) -> Iterator[Family]:
    """Gauges over the configured window: streams from the state, tasks from /usage/tasks.

    neo_window_streams{account="acme",status="completed"} 1843.0
    neo_window_tasks{account="acme",status="error"} 12.0
    neo_window_credits{account="acme"} 904.2
    """
    streams = _gauge(m.WINDOW_STREAMS)
    tasks = _gauge(m.WINDOW_TASKS)
    credits = _gauge(m.WINDOW_CREDITS)
    llm = _gauge(m.WINDOW_LLM_COST_USD)
    platform_fee = _gauge(m.WINDOW_PLATFORM_COST_USD)
    for account in snapshot.accounts:
        for status, count in sorted(account.window_streams.items()):
            streams.add_metric([account.name, status], count)
        if account.tasks is not None:
            for status, count in sorted(account.tasks.tasks_by_status.items()):
                tasks.add_metric([account.name, status], count)
            credits.add_metric([account.name], account.tasks.credits)
            llm.add_metric([account.name], account.tasks.llm_cost)
            platform_fee.add_metric([account.name], account.tasks.platform_cost)
    yield from (streams, tasks, credits, llm, platform_fee)


def _set(family: GaugeMetricFamily, labels: list[str], value: float | None) -> None:
    """A sample only when the API gave the value: absent is not zero."""
    if value is not None:
        family.add_metric(labels, value)


def summary_gauges(snapshot: Snapshot) -> Iterator[Family]:
    """Gauges from /usage/summary: the window's totals, credits, and per member if enabled.

    neo_account_window_credits{account="acme"} 904.2
    neo_account_available_credits{account="acme"} 22178.8
    neo_account_credits_expiry_timestamp_seconds{account="acme"} 1.7645472e+09
    neo_member_window_credits{account="acme",email="alice@example.com"} 231.5
    """
    families = _gauges(m.SUMMARY + m.MEMBERS)
    for account in snapshot.accounts:
        summary = account.info.summary
        if summary is None:
            continue
        name = [account.name]
        values = {
            m.ACCOUNT_WINDOW_CREDITS: summary.credits,
            m.ACCOUNT_WINDOW_BYOK_LLM_COST_USD: summary.byok_llm_cost,
            m.ACCOUNT_WINDOW_BYOK_PLATFORM_COST_USD: summary.byok_neo_cost,
            m.ACCOUNT_WINDOW_BYOK_STREAMS: summary.byok_streams,
            m.ACCOUNT_WINDOW_BYOK_TASKS: summary.byok_tasks,
            m.ACCOUNT_POST_RESET_CREDITS: summary.credits_since_reset,
            m.ACCOUNT_AVAILABLE_CREDITS: summary.available_credits,
            m.ACCOUNT_ISSUED_CREDITS: summary.issued_credits,
            m.ACCOUNT_CREDITS_EXPIRY_TIMESTAMP_SECONDS: summary.credits_expire_at,
            m.ACCOUNT_LAST_CREDIT_RESET_TIMESTAMP_SECONDS: summary.last_credit_reset,
        }
        for metric, value in values.items():
            _set(families[metric], name, value)
        for status, count in sorted(summary.tasks_by_status.items()):
            families[m.ACCOUNT_WINDOW_TASKS].add_metric([account.name, status], count)
        for member in summary.members:
            labels = [account.name, member.email]
            families[m.MEMBER_WINDOW_CREDITS].add_metric(labels, member.credits)
            families[m.MEMBER_WINDOW_TASKS].add_metric(labels, member.tasks)
    yield from families.values()


def cap_and_billing_gauges(snapshot: Snapshot) -> Iterator[Family]:
    """The spending cap (from /user) and the credit balance (from /billing/credits).

    neo_spending_cap_limit_usd{account="acme"} 500.0
    neo_spending_cap_used_ratio{account="acme"} 0.42
    neo_billing_available_credits{account="acme"} 22178.8
    """
    families = _gauges(m.CAP + m.BILLING)
    for account in snapshot.accounts:
        name = [account.name]
        cap = account.info.cap
        if cap is not None:
            families[m.SPENDING_CAP_LIMIT_USD].add_metric(name, cap.limit)
            families[m.SPENDING_CAP_USED_USD].add_metric(name, cap.used)
            families[m.SPENDING_CAP_REMAINING_USD].add_metric(name, cap.remaining)
            if cap.limit > 0:
                families[m.SPENDING_CAP_USED_RATIO].add_metric(name, cap.used / cap.limit)
        balance = account.info.credits
        if balance is not None:
            _set(families[m.BILLING_AVAILABLE_CREDITS], name, balance.available)
            _set(families[m.BILLING_ISSUED_CREDITS], name, balance.issued)
            _set(families[m.BILLING_USED_CREDITS], name, balance.used)
            _set(families[m.BILLING_CREDITS_EXPIRY_TIMESTAMP_SECONDS], name, balance.expires_at)
    yield from families.values()


def top_tasks(snapshot: Snapshot) -> Iterator[Family]:
    """The window's most expensive tasks by credits, one series per rank.

    neo_top_task_credits{account="acme",email="",rank="1",task_id="3f2c",task_title="Recon"} 41.2
    """
    family = _gauge(m.TOP_TASK_CREDITS)
    for account in snapshot.accounts:
        for task in account.top_tasks:
            family.add_metric(
                [account.name, str(task.rank), task.task_id, task.title, task.email], task.credits
            )
    yield family


def recent_spend(snapshot: Snapshot) -> Iterator[Family]:
    """The spend of the streams that ended lately, by trailing window, and its culprits
    (0 for every window, with no culprit, until the first whole read of the window).

    neo_recent_credits{account="acme",window="15m"} 412.5
    neo_recent_cost_usd{account="acme",window="1h"} 20.0
    neo_recent_top_task_credits{account="acme",rank="1",task_id="3f2c",task_title="Recon",window="15m"} 380.0
    neo_recent_top_model_credits{account="acme",model="claude-sonnet-4-5",rank="1",window="15m"} 300.0
    neo_recent_top_member_credits{account="acme",email="ana@example.com",rank="1",window="15m"} 290.0
    """  # noqa: E501
    families = _gauges(m.RECENT)
    ranked = (
        (m.RECENT_TOP_TASK_CREDITS, "tasks_by_credits", "credits"),
        (m.RECENT_TOP_TASK_COST_USD, "tasks_by_usd", "cost_usd"),
        (m.RECENT_TOP_MODEL_CREDITS, "models_by_credits", "credits"),
        (m.RECENT_TOP_MODEL_COST_USD, "models_by_usd", "cost_usd"),
        (m.RECENT_TOP_MEMBER_CREDITS, "members_by_credits", "credits"),
        (m.RECENT_TOP_MEMBER_COST_USD, "members_by_usd", "cost_usd"),
    )
    for account in snapshot.accounts:
        spent = {r.window: r for r in account.recent}
        for window, seconds in RECENT_WINDOWS:
            recent = spent.get(window, RecentSpend(window, seconds))
            families[m.RECENT_CREDITS].add_metric([account.name, window], recent.credits)
            families[m.RECENT_COST_USD].add_metric([account.name, window], recent.cost_usd)
            for metric, culprits, unit in ranked:
                for rank, culprit in enumerate(getattr(recent, culprits), start=1):
                    labels = [account.name, window, str(rank), *culprit.key]
                    families[metric].add_metric(labels, getattr(culprit, unit))
    yield from families.values()


def budgets(snapshot: Snapshot) -> Iterator[Family]:
    """Each configured budget: its limit, what its current period has spent, the period.

    neo_budget_limit{account="acme",budget="acme-month",unit="credits"} 100000.0
    neo_budget_spent{account="acme",budget="acme-month",unit="credits"} 5210.35
    neo_budget_period_start_timestamp_seconds{account="acme",budget="acme-month"} 1.7645472e+09
    neo_budget_period_end_timestamp_seconds{account="acme",budget="acme-month"} 1.7672256e+09
    """
    families = _gauges(m.BUDGETS)
    for account in snapshot.accounts:
        for budget in account.budgets:
            with_unit = [account.name, budget.name, budget.unit]
            families[m.BUDGET_LIMIT].add_metric(with_unit, budget.limit)
            if budget.spent is not None:  # None: not counted yet (a quiet first start)
                families[m.BUDGET_SPENT].add_metric(with_unit, budget.spent)
            families[m.BUDGET_PERIOD_START_TIMESTAMP_SECONDS].add_metric(
                [account.name, budget.name], budget.start
            )
            families[m.BUDGET_PERIOD_END_TIMESTAMP_SECONDS].add_metric(
                [account.name, budget.name], budget.end
            )
    yield from families.values()


def health(snapshot: Snapshot) -> Iterator[Family]:
    """The exporter's view of each account: up, freshness, state, build.

    neo_up{account="acme",endpoint="streams"} 1.0
    neo_exporter_last_success_timestamp_seconds{account="acme",endpoint="streams"} 1.76e+09
    neo_exporter_last_catch_up_timestamp_seconds{account="acme"} 0.0
    neo_exporter_changed_records_total{account="acme"} 3.0
    neo_exporter_build_info{python_version="3.11.7",version="0.1.0"} 1.0
    """
    up = _gauge(m.UP)
    last_success = _gauge(m.LAST_SUCCESS_TIMESTAMP_SECONDS)
    duration = _gauge(m.LAST_POLL_DURATION_SECONDS)
    watermark = _gauge(m.WATERMARK_TIMESTAMP_SECONDS)
    seen = _gauge(m.SEEN_STREAMS)
    changed = _counter(m.CHANGED_RECORDS)
    catching_up = _gauge(m.CATCHING_UP)
    catch_up = _gauge(m.LAST_CATCH_UP_TIMESTAMP_SECONDS)
    missing = _gauge(m.READ_MISSING_ROWS)
    for account in snapshot.accounts:
        catching_up.add_metric([account.name], 1.0 if account.catching_up else 0.0)
        # 0: never (in this process); there from the first scrape, as the rules read it.
        catch_up.add_metric([account.name], account.last_catch_up or 0.0)
        for endpoint, rows in sorted(account.missing_rows.items()):
            missing.add_metric([account.name, endpoint], rows)
        for endpoint in ENDPOINTS:
            state = account.endpoints.get(endpoint) or account.info.endpoints.get(endpoint)
            up.add_metric([account.name, endpoint], 1.0 if state and state.up else 0.0)
            when = state.last_success if state else None
            last_success.add_metric([account.name, endpoint], when or 0.0)  # 0: never
        if account.last_poll_duration is not None:
            duration.add_metric([account.name], account.last_poll_duration)
        if account.watermark is not None:
            watermark.add_metric([account.name], account.watermark)
        seen.add_metric([account.name], account.seen_streams)
        counted = account.counts.counters.get((m.CHANGED_RECORDS.name, ()))
        changed.add_metric(
            [account.name],
            counted.value if counted else 0.0,
            created=counted.created if counted else None,
        )
    state_size = _gauge(m.STATE_SIZE_BYTES)
    state_size.add_metric([], snapshot.state_bytes)
    window = _gauge(m.WINDOW_SECONDS)
    window.add_metric([], snapshot.window_seconds)
    build = _gauge(m.BUILD_INFO)
    build.add_metric([__version__, platform.python_version()], 1.0)
    yield from (up, last_success, duration, watermark, seen, changed, catching_up, catch_up)
    yield from (missing, state_size, window, build)


def revisions(snapshot: Snapshot) -> Iterator[Family]:
    """What the API revised after the exporter had counted it (durable, from the state).

    neo_exporter_revisions_total{account="acme",direction="up",field="neo_credits"} 12.0
    neo_exporter_revised_down_total{account="acme",field="neo_credits"} 0.35
    """
    families = {metric.name: _counter(metric) for metric in (m.REVISIONS, m.REVISED_DOWN)}
    for account in snapshot.accounts:
        for (metric, labels), value in sorted(account.counts.counters.items()):
            family = families.get(metric)
            if family is not None:
                family.add_metric([account.name, *labels], value.value, created=value.created)
    yield from families.values()


def audit(snapshot: Snapshot) -> Iterator[Family]:
    """The self-audit: Neo's own totals for a closed period beside the exporter's.

    neo_exporter_audit_streams_missing{account="acme"} 0.0
    neo_exporter_audit_credits_drift{account="acme"} 0.0
    neo_exporter_audit_neo_credits{account="acme"} 5210.35
    neo_exporter_audit_last_timestamp_seconds{account="acme"} 1.76e+09
    """
    families = _gauges(m.AUDIT)
    for account in snapshot.accounts:
        result = account.audit
        if result is None:
            continue
        labels = [account.name]
        _set(families[m.AUDIT_STREAMS_MISSING], labels, result.streams_missing)
        _set(families[m.AUDIT_CREDITS_DRIFT], labels, result.credits_drift)
        _set(families[m.AUDIT_NEO_STREAMS], labels, result.neo_streams)
        _set(families[m.AUDIT_NEO_CREDITS], labels, result.neo_credits)
        families[m.AUDIT_LAST_TIMESTAMP_SECONDS].add_metric(labels, result.at)
    yield from families.values()


class Part(enum.Enum):
    """Which of the collector's families a `NeoCollector` emits.

    COUNTS is the counters and histograms (most of the series; they change only when a poll
    commits rows), STATUS the rest, BOTH both: the server renders the two parts apart, so
    that a poll that counts nothing new does not make the next scrape render them all.
    """

    COUNTS = enum.auto()
    STATUS = enum.auto()
    BOTH = enum.auto()


class NeoCollector(Collector):
    """Registered on the exporter's own registry; reads the store at each scrape."""

    def __init__(self, store: SnapshotStore, part: Part = Part.BOTH) -> None:
        self._store = store
        self._part = part

    def collect(self) -> Iterable[Family]:
        snapshot = self._store.get()
        if self._part is not Part.STATUS:
            yield from stream_counters(snapshot)
            yield from histograms(snapshot)
            yield from revisions(snapshot)
        if self._part is Part.COUNTS:
            return
        yield from window_gauges(snapshot)
        yield from summary_gauges(snapshot)
        yield from cap_and_billing_gauges(snapshot)
        yield from top_tasks(snapshot)
        yield from recent_spend(snapshot)
        yield from budgets(snapshot)
        yield from health(snapshot)
        yield from audit(snapshot)


class WithoutCreated(Collector):
    """Another collector's families without their `_created` samples (metrics.created_series
    false), as client_python's disable_created_metrics does for its own metric objects.

    Prometheus stores each `_created` sample as a series of its own: a counter or histogram
    series and its creation time, about 40% of what the exporter's families make.
    """

    def __init__(self, inner: Collector) -> None:
        self._inner = inner

    def collect(self) -> Iterable[Family]:
        for family in self._inner.collect():
            created = family.name + "_created"
            if any(sample.name == created for sample in family.samples):
                family.samples = [s for s in family.samples if s.name != created]
            yield family
