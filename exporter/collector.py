"""A custom Collector: the latest committed snapshot, converted into metric families.

`collect()` does no I/O and takes no lock held by a poll: it reads one immutable snapshot,
so concurrent scrapes never race and vanished label sets simply disappear.
Every business metric carries `account`. HELP names the API field behind each metric.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from prometheus_client import utils
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from exporter import __version__
from exporter.snapshot import ACCOUNT_ENDPOINTS, Snapshot, SnapshotStore
from exporter.state import (
    AGENT_TRIGGERS,
    CHANGED_RECORDS,
    REVISED_DOWN,
    REVISIONS,
    STEP_LATENCY,
    STREAM_DURATION,
    TOOL_CALL_DURATION,
    TOOL_CALLS,
    TOOL_TIME,
)

# The client library's own formatting of `le` values (its annotation is missing).
_format_bound: Callable[[float], str] = utils.floatToGoString
REFRESH = "Refreshed every poll, not at scrape time."
STREAM_SOURCE = "/api/v1/usage/streams"


@dataclass(frozen=True, slots=True)
class MetricDoc:
    """One exported metric: its name as exposed, type, labels and HELP (source field)."""

    name: str
    type: str
    labels: tuple[str, ...]
    help: str


def _stream_counter(name: str, what: str, field: str) -> MetricDoc:
    return MetricDoc(
        name,
        "counter",
        ("account", "model", "status", "byok"),
        f"{what}, each stream counted once (field {field} of {STREAM_SOURCE}). {REFRESH}",
    )


STREAM_COUNTER_DOCS = (
    _stream_counter("neo_streams_total", "Streams (task executions) that ended", "stream_id"),
    _stream_counter("neo_credits_total", "Neo credits consumed", "neo_credits"),
    _stream_counter("neo_llm_cost_usd_total", "LLM cost of BYOK runs in USD", "llm_cost"),
    _stream_counter(
        "neo_platform_cost_usd_total", "Neo platform fee of BYOK runs in USD", "neo_cost"
    ),
    _stream_counter("neo_steps_total", "Agent steps executed", "step_count"),
    _stream_counter("neo_tool_calls_total", "Tool calls made", "tool_calls"),
    _stream_counter("neo_agent_triggers_total", "Agent triggers", "agent_triggers"),
    _stream_counter("neo_llm_time_seconds_total", "LLM inference time", "llm_time_ms"),
    _stream_counter("neo_tool_time_seconds_total", "Tool execution time", "tool_time_ms"),
    _stream_counter(
        "neo_execution_time_seconds_total", "Total execution time", "total_execution_ms"
    ),
    _stream_counter(
        "neo_step_latency_seconds_total",
        "Step latency summed over steps: each stream's average step latency times its steps, "
        "where both are given; divided by neo_step_latency_steps_total it is the mean latency "
        "of a step",
        "avg_step_latency_ms x step_count",
    ),
    _stream_counter(
        "neo_step_latency_steps_total",
        "Steps covered by neo_step_latency_seconds_total (streams with both a step count and "
        "an average step latency)",
        "step_count",
    ),
)

BREAKDOWN_DOCS = (
    MetricDoc(
        AGENT_TRIGGERS,
        "counter",
        ("account", "agent"),
        f"Agent triggers by agent (field agent_breakdown of {STREAM_SOURCE}). {REFRESH}",
    ),
    MetricDoc(
        TOOL_CALLS,
        "counter",
        ("account", "tool"),
        f"Tool calls by tool (field tool_breakdown.*.calls of {STREAM_SOURCE}). {REFRESH}",
    ),
    MetricDoc(
        TOOL_TIME,
        "counter",
        ("account", "tool"),
        f"Tool time by tool (field tool_breakdown.*.duration_ms of {STREAM_SOURCE}). {REFRESH}",
    ),
)

HISTOGRAM_DOCS = (
    MetricDoc(
        TOOL_CALL_DURATION,
        "histogram",
        ("account", "tool"),
        "Duration of each tool call, one observation per entry "
        f"(field tool_call_history[].duration_ms of {STREAM_SOURCE}). {REFRESH}",
    ),
    MetricDoc(
        STREAM_DURATION,
        "histogram",
        ("account", "model"),
        f"Execution time of each stream (field total_execution_ms of {STREAM_SOURCE}). {REFRESH}",
    ),
    MetricDoc(
        STEP_LATENCY,
        "histogram",
        ("account", "model"),
        "Average step latency of each stream: one observation per stream of its own "
        f"average, nulls skipped (field avg_step_latency_ms of {STREAM_SOURCE}). {REFRESH}",
    ),
)

WINDOW_DOCS = (
    MetricDoc(
        "neo_window_streams",
        "gauge",
        ("account", "status"),
        "Streams created within the window (polling.window) that the exporter has counted, "
        f"by status (from its state, fed by {STREAM_SOURCE}). {REFRESH}",
    ),
    MetricDoc(
        "neo_window_tasks",
        "gauge",
        ("account", "status"),
        "Tasks created within the window, by status (field status of /api/v1/usage/tasks). "
        f"{REFRESH}",
    ),
    MetricDoc(
        "neo_window_credits",
        "gauge",
        ("account",),
        f"Neo credits of the tasks created within the window (field neo_credits of "
        f"/api/v1/usage/tasks). {REFRESH}",
    ),
    MetricDoc(
        "neo_window_llm_cost_usd",
        "gauge",
        ("account",),
        f"BYOK LLM cost in USD of the tasks created within the window (field llm_cost of "
        f"/api/v1/usage/tasks). {REFRESH}",
    ),
    MetricDoc(
        "neo_window_platform_cost_usd",
        "gauge",
        ("account",),
        f"Neo platform fee in USD of the tasks created within the window (field neo_cost of "
        f"/api/v1/usage/tasks). {REFRESH}",
    ),
)

SUMMARY_SOURCE = "/api/v1/usage/summary"
SUMMARY_REFRESH = "Refreshed every poll of the summary (polling.summary_interval)."


def _summary_gauge(name: str, labels: tuple[str, ...], what: str) -> MetricDoc:
    return MetricDoc(name, "gauge", ("account", *labels), f"{what} {SUMMARY_REFRESH}")


SUMMARY_DOCS = (
    _summary_gauge(
        "neo_account_window_credits",
        (),
        f"Neo credits used within the window (polling.window), as the API sums them "
        f"(field total_neo_credits of {SUMMARY_SOURCE}).",
    ),
    _summary_gauge(
        "neo_account_window_tasks",
        ("status",),
        f"Tasks created within the window, by status (field by_status of {SUMMARY_SOURCE}).",
    ),
    _summary_gauge(
        "neo_account_window_byok_llm_cost_usd",
        (),
        f"BYOK LLM cost in USD within the window (field byok.total_llm_cost of {SUMMARY_SOURCE}).",
    ),
    _summary_gauge(
        "neo_account_window_byok_platform_cost_usd",
        (),
        f"Neo platform fee of BYOK runs in USD within the window (field byok.total_neo_cost "
        f"of {SUMMARY_SOURCE}).",
    ),
    _summary_gauge(
        "neo_account_window_byok_streams",
        (),
        f"BYOK streams within the window (field byok.total_streams of {SUMMARY_SOURCE}).",
    ),
    _summary_gauge(
        "neo_account_window_byok_tasks",
        (),
        f"BYOK tasks within the window (field byok.total_tasks of {SUMMARY_SOURCE}).",
    ),
    _summary_gauge(
        "neo_account_post_reset_credits",
        (),
        f"Neo credits used since the last credit reset (field total_neo_credits of "
        f"{SUMMARY_SOURCE} from last_credit_reset to now).",
    ),
    _summary_gauge(
        "neo_account_available_credits",
        (),
        f"Neo credits left (field total_available_neo_credits of {SUMMARY_SOURCE}).",
    ),
    _summary_gauge(
        "neo_account_issued_credits",
        (),
        f"Neo credits issued for the period (field total_issued_neo_credits of {SUMMARY_SOURCE}).",
    ),
    _summary_gauge(
        "neo_account_credits_expiry_timestamp_seconds",
        (),
        f"Unix time the credits expire (field neo_credits_expires_at of {SUMMARY_SOURCE}).",
    ),
    _summary_gauge(
        "neo_account_last_credit_reset_timestamp_seconds",
        (),
        f"Unix time of the last credit reset (field last_credit_reset of {SUMMARY_SOURCE}).",
    ),
)

MEMBER_DOCS = (
    _summary_gauge(
        "neo_member_window_credits",
        ("email",),
        "Neo credits used within the window per team member, the top metrics.members.limit "
        f'members and the rest as email="other" (field by_email of {SUMMARY_SOURCE}; '
        "only with metrics.members.enabled).",
    ),
    _summary_gauge(
        "neo_member_window_tasks",
        ("email",),
        "Tasks created within the window per team member, grouped as for "
        f"neo_member_window_credits (field by_email of {SUMMARY_SOURCE}; only with "
        "metrics.members.enabled).",
    ),
)

CAP_REFRESH = "Refreshed every poll of /api/v1/user (polling.user_interval); absent with no cap."
CAP_DOCS = tuple(
    MetricDoc(name, "gauge", ("account",), f"{what} {CAP_REFRESH}")
    for name, what in (
        ("neo_spending_cap_limit_usd", "Spending cap in USD (field cap.limit of /api/v1/user)."),
        (
            "neo_spending_cap_used_usd",
            "Spend counted against the cap in USD (field cap.used of /api/v1/user).",
        ),
        (
            "neo_spending_cap_remaining_usd",
            "What is left of the cap in USD (field cap.remaining of /api/v1/user).",
        ),
        (
            "neo_spending_cap_used_ratio",
            "Share of the cap used, 0 to 1 and above (fields cap.used / cap.limit of "
            "/api/v1/user; absent when the limit is 0).",
        ),
    )
)

BILLING_SOURCE = "/api/v1/billing/credits"
BILLING_REFRESH = "Refreshed every poll of the balance (polling.credits_interval)."
BILLING_DOCS = tuple(
    MetricDoc(name, "gauge", ("account",), f"{what} {BILLING_REFRESH}")
    for name, what in (
        (
            "neo_billing_available_credits",
            f"Neo credits left (field available_credits of {BILLING_SOURCE}).",
        ),
        (
            "neo_billing_issued_credits",
            f"Neo credits issued (field issued_credits of {BILLING_SOURCE}).",
        ),
        (
            "neo_billing_used_credits",
            f"Neo credits used (field used_credits of {BILLING_SOURCE}).",
        ),
        (
            "neo_billing_credits_expiry_timestamp_seconds",
            f"Unix time the credits expire (field expires_at of {BILLING_SOURCE}).",
        ),
    )
)

TOP_TASK_DOCS = (
    MetricDoc(
        "neo_top_task_credits",
        "gauge",
        ("account", "rank", "task_id", "task_title", "email"),
        "Neo credits of the window's most expensive tasks, rank 1 the most; at most "
        "metrics.top_tasks series per account, the whole set replaced at each tasks read. "
        "task_title is truncated; email is empty unless metrics.members.enabled (field "
        "neo_credits of /api/v1/usage/tasks). Refreshed every poll of the tasks "
        "(polling.tasks_interval).",
    ),
)

HEALTH_DOCS = (
    MetricDoc(
        "neo_up",
        "gauge",
        ("account", "endpoint"),
        "1 if the last read of this Neo API endpoint succeeded, else 0.",
    ),
    MetricDoc(
        "neo_exporter_last_success_timestamp_seconds",
        "gauge",
        ("account", "endpoint"),
        "Unix time of the last successful read of this endpoint.",
    ),
    MetricDoc(
        "neo_exporter_last_poll_duration_seconds",
        "gauge",
        ("account",),
        "Wall time of the last successful streams read.",
    ),
    MetricDoc(
        "neo_exporter_watermark_timestamp_seconds",
        "gauge",
        ("account",),
        "The `to` of the last complete streams read: rows created before it have been read.",
    ),
    MetricDoc(
        "neo_exporter_seen_streams",
        "gauge",
        ("account",),
        "Stream ids held in the state for deduplication (the window plus the lookback).",
    ),
    MetricDoc(
        CHANGED_RECORDS,
        "counter",
        ("account",),
        "Streams the API revised after they were counted: increases are added under the "
        "labels first counted; see neo_exporter_revisions_total for what changed.",
    ),
    MetricDoc(
        REVISIONS,
        "counter",
        ("account", "field", "direction"),
        "Values of counted streams that the API revised, by API field: direction up (the "
        "increase was added), down (kept: a counter cannot go down) or changed (a label "
        "value: the first one is kept).",
    ),
    MetricDoc(
        REVISED_DOWN,
        "counter",
        ("account", "field"),
        "How much the API lowered counted values, by API field, in the unit of the matching "
        "counter (credits, USD, seconds, counts): the counters stay this much above Neo.",
    ),
    MetricDoc(
        "neo_exporter_catching_up",
        "gauge",
        ("account",),
        "1 while the exporter reads a backlog (first start, after downtime or an API "
        "outage), else 0.",
    ),
    MetricDoc(
        "neo_exporter_last_catch_up_timestamp_seconds",
        "gauge",
        ("account",),
        "Unix time of the last commit that read a backlog into counters already published: "
        "counter increases up to then hold past spend, which the spend alerts leave out.",
    ),
    MetricDoc(
        "neo_exporter_read_missing_rows",
        "gauge",
        ("account", "endpoint"),
        "Rows the last read of this list endpoint did not get, against the API's own total "
        "for the span (0 for a complete read).",
    ),
    MetricDoc(
        "neo_exporter_audit_streams_missing",
        "gauge",
        ("account",),
        "Self-audit: streams Neo counts (total of /api/v1/usage/streams) minus streams the "
        "exporter counted, created in the last audited period (the window less the lookback).",
    ),
    MetricDoc(
        "neo_exporter_audit_credits_drift",
        "gauge",
        ("account",),
        "Self-audit: Neo credits by Neo (total_neo_credits of /api/v1/usage/summary) minus "
        "the credits the exporter counted, for the last audited period; absent when the "
        "summary cannot be read.",
    ),
    MetricDoc(
        "neo_exporter_audit_neo_streams",
        "gauge",
        ("account",),
        "Self-audit: streams Neo counts in the last audited period.",
    ),
    MetricDoc(
        "neo_exporter_audit_neo_credits",
        "gauge",
        ("account",),
        "Self-audit: Neo credits by Neo's summary for the last audited period.",
    ),
    MetricDoc(
        "neo_exporter_audit_last_timestamp_seconds",
        "gauge",
        ("account",),
        "Unix time of the last self-audit (audit.interval).",
    ),
    MetricDoc(
        "neo_exporter_state_size_bytes",
        "gauge",
        (),
        "Size of the SQLite state.",
    ),
    MetricDoc(
        "neo_exporter_window_seconds",
        "gauge",
        (),
        "The configured polling.window, over which the neo_window_* gauges are computed.",
    ),
    MetricDoc(
        "neo_exporter_build_info",
        "gauge",
        ("version", "python_version"),
        "Always 1; labels carry the exporter and Python versions.",
    ),
)

CATALOG: tuple[MetricDoc, ...] = (
    STREAM_COUNTER_DOCS
    + BREAKDOWN_DOCS
    + HISTOGRAM_DOCS
    + WINDOW_DOCS
    + SUMMARY_DOCS
    + MEMBER_DOCS
    + CAP_DOCS
    + BILLING_DOCS
    + TOP_TASK_DOCS
    + HEALTH_DOCS
)
_DOCS = {doc.name: doc for doc in CATALOG}


def _counter(name: str) -> CounterMetricFamily:
    doc = _DOCS[name]
    return CounterMetricFamily(name, doc.help, labels=list(doc.labels))


def _gauge(name: str) -> GaugeMetricFamily:
    doc = _DOCS[name]
    return GaugeMetricFamily(name, doc.help, labels=list(doc.labels))


def stream_counters(snapshot: Snapshot) -> Iterator[Metric]:
    """Counters from each stream, and the per-agent and per-tool breakdowns.

    neo_credits_total{account="acme",model="gpt-5",status="completed",byok="false"} 12.5
    neo_credits_created{account="acme",model="gpt-5",status="completed",byok="false"} 1.76e+09
    neo_tool_calls_by_tool_total{account="acme",tool="nuclei"} 310.0
    """
    families = {doc.name: _counter(doc.name) for doc in STREAM_COUNTER_DOCS + BREAKDOWN_DOCS}
    for account in snapshot.accounts:
        for (metric, labels), value in account.counts.counters.items():
            family = families.get(metric)
            if family is not None:
                family.add_metric([account.name, *labels], value.value, created=value.created)
    yield from families.values()


def histograms(snapshot: Snapshot) -> Iterator[Metric]:
    """Histograms of tool call durations, stream durations and per-stream step latency.

    neo_stream_duration_seconds_bucket{account="acme",model="gpt-5",le="60.0"} 41.0
    neo_stream_duration_seconds_bucket{account="acme",model="gpt-5",le="+Inf"} 50.0
    neo_stream_duration_seconds_count{account="acme",model="gpt-5"} 50.0
    neo_stream_duration_seconds_sum{account="acme",model="gpt-5"} 2210.4
    """
    families = {
        doc.name: HistogramMetricFamily(doc.name, doc.help, labels=list(doc.labels))
        for doc in HISTOGRAM_DOCS
    }
    for account in snapshot.accounts:
        for (metric, labels), value in account.counts.histograms.items():
            family = families[metric]
            doc = _DOCS[metric]
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
                    f"{doc.name}_created",
                    dict(zip(doc.labels, label_values, strict=True)),
                    value.created,
                )
            )
    yield from families.values()


def window_gauges(snapshot: Snapshot) -> Iterator[Metric]:
    """Gauges over the configured window: streams from the state, tasks from /usage/tasks.

    neo_window_streams{account="acme",status="completed"} 1843.0
    neo_window_tasks{account="acme",status="error"} 12.0
    neo_window_credits{account="acme"} 904.2
    """
    streams = _gauge("neo_window_streams")
    tasks = _gauge("neo_window_tasks")
    credits = _gauge("neo_window_credits")
    llm = _gauge("neo_window_llm_cost_usd")
    platform_fee = _gauge("neo_window_platform_cost_usd")
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


def summary_gauges(snapshot: Snapshot) -> Iterator[Metric]:
    """Gauges from /usage/summary: the window's totals, credits, and per member if enabled.

    neo_account_window_credits{account="acme"} 904.2
    neo_account_available_credits{account="acme"} 22178.8
    neo_account_credits_expiry_timestamp_seconds{account="acme"} 1.7645472e+09
    neo_member_window_credits{account="acme",email="alice@example.com"} 231.5
    """
    families = {doc.name: _gauge(doc.name) for doc in SUMMARY_DOCS + MEMBER_DOCS}
    for account in snapshot.accounts:
        summary = account.info.summary
        if summary is None:
            continue
        name = [account.name]
        values = {
            "neo_account_window_credits": summary.credits,
            "neo_account_window_byok_llm_cost_usd": summary.byok_llm_cost,
            "neo_account_window_byok_platform_cost_usd": summary.byok_neo_cost,
            "neo_account_window_byok_streams": summary.byok_streams,
            "neo_account_window_byok_tasks": summary.byok_tasks,
            "neo_account_post_reset_credits": summary.credits_since_reset,
            "neo_account_available_credits": summary.available_credits,
            "neo_account_issued_credits": summary.issued_credits,
            "neo_account_credits_expiry_timestamp_seconds": summary.credits_expire_at,
            "neo_account_last_credit_reset_timestamp_seconds": summary.last_credit_reset,
        }
        for metric, value in values.items():
            _set(families[metric], name, value)
        for status, count in sorted(summary.tasks_by_status.items()):
            families["neo_account_window_tasks"].add_metric([account.name, status], count)
        for member in summary.members:
            labels = [account.name, member.email]
            families["neo_member_window_credits"].add_metric(labels, member.credits)
            families["neo_member_window_tasks"].add_metric(labels, member.tasks)
    yield from families.values()


def cap_and_billing_gauges(snapshot: Snapshot) -> Iterator[Metric]:
    """The spending cap (from /user) and the credit balance (from /billing/credits).

    neo_spending_cap_limit_usd{account="acme"} 500.0
    neo_spending_cap_used_ratio{account="acme"} 0.42
    neo_billing_available_credits{account="acme"} 22178.8
    """
    families = {doc.name: _gauge(doc.name) for doc in CAP_DOCS + BILLING_DOCS}
    for account in snapshot.accounts:
        name = [account.name]
        cap = account.info.cap
        if cap is not None:
            families["neo_spending_cap_limit_usd"].add_metric(name, cap.limit)
            families["neo_spending_cap_used_usd"].add_metric(name, cap.used)
            families["neo_spending_cap_remaining_usd"].add_metric(name, cap.remaining)
            if cap.limit > 0:
                families["neo_spending_cap_used_ratio"].add_metric(name, cap.used / cap.limit)
        balance = account.info.credits
        if balance is not None:
            _set(families["neo_billing_available_credits"], name, balance.available)
            _set(families["neo_billing_issued_credits"], name, balance.issued)
            _set(families["neo_billing_used_credits"], name, balance.used)
            _set(families["neo_billing_credits_expiry_timestamp_seconds"], name, balance.expires_at)
    yield from families.values()


def top_tasks(snapshot: Snapshot) -> Iterator[Metric]:
    """The window's most expensive tasks by credits, one series per rank.

    neo_top_task_credits{account="acme",rank="1",task_id="3f2c",task_title="Recon",email=""} 41.2
    """
    family = _gauge("neo_top_task_credits")
    for account in snapshot.accounts:
        for task in account.top_tasks:
            family.add_metric(
                [account.name, str(task.rank), task.task_id, task.title, task.email], task.credits
            )
    yield family


def health(snapshot: Snapshot) -> Iterator[Metric]:
    """The exporter's view of each account: up, freshness, state, build.

    neo_up{account="acme",endpoint="streams"} 1.0
    neo_exporter_last_success_timestamp_seconds{account="acme",endpoint="streams"} 1.76e+09
    neo_exporter_changed_records_total{account="acme"} 0.0
    neo_exporter_build_info{python_version="3.11.7",version="0.1.0"} 1.0
    """
    up = _gauge("neo_up")
    last_success = _gauge("neo_exporter_last_success_timestamp_seconds")
    duration = _gauge("neo_exporter_last_poll_duration_seconds")
    watermark = _gauge("neo_exporter_watermark_timestamp_seconds")
    seen = _gauge("neo_exporter_seen_streams")
    changed = _counter(CHANGED_RECORDS)
    catching_up = _gauge("neo_exporter_catching_up")
    catch_up = _gauge("neo_exporter_last_catch_up_timestamp_seconds")
    missing = _gauge("neo_exporter_read_missing_rows")
    for account in snapshot.accounts:
        catching_up.add_metric([account.name], 1.0 if account.catching_up else 0.0)
        _set(catch_up, [account.name], account.last_catch_up)
        for endpoint, rows in sorted(account.missing_rows.items()):
            missing.add_metric([account.name, endpoint], rows)
        for endpoint in ("streams", "tasks", *ACCOUNT_ENDPOINTS):
            state = account.endpoints.get(endpoint) or account.info.endpoints.get(endpoint)
            up.add_metric([account.name, endpoint], 1.0 if state and state.up else 0.0)
            if state and state.last_success is not None:
                last_success.add_metric([account.name, endpoint], state.last_success)
        if account.last_poll_duration is not None:
            duration.add_metric([account.name], account.last_poll_duration)
        if account.watermark is not None:
            watermark.add_metric([account.name], account.watermark)
        seen.add_metric([account.name], account.seen_streams)
        counted = account.counts.counters.get((CHANGED_RECORDS, ()))
        changed.add_metric(
            [account.name],
            counted.value if counted else 0.0,
            created=counted.created if counted else None,
        )
    state_size = _gauge("neo_exporter_state_size_bytes")
    state_size.add_metric([], snapshot.state_bytes)
    window = _gauge("neo_exporter_window_seconds")
    window.add_metric([], snapshot.window_seconds)
    build = _gauge("neo_exporter_build_info")
    build.add_metric([__version__, platform.python_version()], 1.0)
    yield from (up, last_success, duration, watermark, seen, changed, catching_up, catch_up)
    yield from (missing, state_size, window, build)


def revisions(snapshot: Snapshot) -> Iterator[Metric]:
    """What the API revised after the exporter had counted it (durable, from the state).

    neo_exporter_revisions_total{account="acme",field="neo_credits",direction="up"} 12.0
    neo_exporter_revised_down_total{account="acme",field="neo_credits"} 0.35
    """
    families = {name: _counter(name) for name in (REVISIONS, REVISED_DOWN)}
    for account in snapshot.accounts:
        for (metric, labels), value in sorted(account.counts.counters.items()):
            family = families.get(metric)
            if family is not None:
                family.add_metric([account.name, *labels], value.value, created=value.created)
    yield from families.values()


def audit(snapshot: Snapshot) -> Iterator[Metric]:
    """The self-audit: Neo's own totals for a closed period beside the exporter's.

    neo_exporter_audit_streams_missing{account="acme"} 0.0
    neo_exporter_audit_credits_drift{account="acme"} 0.0
    neo_exporter_audit_neo_credits{account="acme"} 5210.35
    neo_exporter_audit_last_timestamp_seconds{account="acme"} 1.76e+09
    """
    names = (
        "neo_exporter_audit_streams_missing",
        "neo_exporter_audit_credits_drift",
        "neo_exporter_audit_neo_streams",
        "neo_exporter_audit_neo_credits",
        "neo_exporter_audit_last_timestamp_seconds",
    )
    families = {name: _gauge(name) for name in names}
    for account in snapshot.accounts:
        result = account.audit
        if result is None:
            continue
        labels = [account.name]
        _set(families[names[0]], labels, result.streams_missing)
        _set(families[names[1]], labels, result.credits_drift)
        _set(families[names[2]], labels, result.neo_streams)
        _set(families[names[3]], labels, result.neo_credits)
        families[names[4]].add_metric(labels, result.at)
    yield from families.values()


COUNTS, STATUS, ALL = "counts", "status", "all"


class NeoCollector(Collector):
    """Registered on the exporter's own registry; reads the store at each scrape.

    `part` COUNTS is the counters and histograms (most of the series; they change only when
    a poll commits rows), STATUS the rest, ALL both: the server renders the two parts apart,
    so that a poll that counts nothing new does not make the next scrape render them all.
    """

    def __init__(self, store: SnapshotStore, part: str = ALL) -> None:
        self._store = store
        self._part = part

    def collect(self) -> Iterable[Metric]:
        snapshot = self._store.get()
        if self._part != STATUS:
            yield from stream_counters(snapshot)
            yield from histograms(snapshot)
            yield from revisions(snapshot)
        if self._part == COUNTS:
            return
        yield from window_gauges(snapshot)
        yield from summary_gauges(snapshot)
        yield from cap_and_billing_gauges(snapshot)
        yield from top_tasks(snapshot)
        yield from health(snapshot)
        yield from audit(snapshot)
