"""Every metric the exporter exposes, defined once: name, type, labels, HELP, unit, source.

The collector builds its families from here and the exporter's own counters
(`instrumentation`) theirs; the counting reads the label names of each series and the API
field that a revision of a stream counter names; docs/metrics.md's tables are generated
from here (`python docs/generate_metrics.py`). Adding a metric: docs/architecture.md.

Also here: the label values the exporter makes itself (`other`, revision directions).
"""

from __future__ import annotations

from dataclasses import dataclass

from exporter import api

COUNTER, GAUGE, HISTOGRAM = "counter", "gauge", "histogram"


@dataclass(frozen=True, slots=True, eq=False)  # eq=False: hashed by identity, as dict keys
class Metric:
    """One exported metric family."""

    name: str  # as exposed in the text format: a counter's ends in _total
    type: str  # COUNTER, GAUGE or HISTOGRAM
    labels: tuple[str, ...]  # in exposition order
    help: str  # HELP: names the API field behind a business metric
    unit: str  # for the docs
    source: str  # the API field, as the docs show it ("-": the exporter's own)
    meaning: str  # one line, for the docs' tables
    revised_as: str | None = None  # a stream counter: the API field its revisions are named by

    @property
    def series_labels(self) -> tuple[str, ...]:
        """The labels a stored series is keyed by: all but `account`, which the state
        keeps apart."""
        return tuple(label for label in self.labels if label != "account")


# Label values the exporter makes itself.
OTHER = "other"  # a value past its label's budget (metrics.label_limits)

DOCUMENTED_STATUSES = ("completed", "error", "failed", "aborted", "blocked")
BYOK_VALUES = ("true", "false")
# A revision: a value went up (added), down (kept), or a label changed (kept).
DIRECTION_UP, DIRECTION_DOWN, DIRECTION_CHANGED = "up", "down", "changed"

STREAM_LABELS = ("account", "model", "status", "byok")
_STREAMS_API = api.STREAMS_PATH
_TASKS_API = api.TASKS_PATH
_SUMMARY_API = api.SUMMARY_PATH
_USER_API = api.USER_PATH
_BILLING_API = api.CREDITS_PATH
_REFRESH = "Refreshed every poll, not at scrape time."
_SUMMARY_REFRESH = "Refreshed every poll of the summary (polling.summary_interval)."
_CAP_REFRESH = f"Refreshed every poll of {_USER_API} (polling.user_interval); absent with no cap."
_BILLING_REFRESH = "Refreshed every poll of the balance (polling.credits_interval)."

# --- stream counters

STREAMS = Metric(
    "neo_streams_total",
    COUNTER,
    STREAM_LABELS,
    (
        "Streams (task executions) that ended, each stream counted once (field stream_id of "
        f"{_STREAMS_API}). {_REFRESH}"
    ),
    unit="streams",
    source="`stream_id`",
    meaning="streams that ended",
)
CREDITS = Metric(
    "neo_credits_total",
    COUNTER,
    STREAM_LABELS,
    (
        f"Neo credits consumed, each stream counted once (field neo_credits of {_STREAMS_API}). "
        f"{_REFRESH}"
    ),
    unit="credits",
    source="`neo_credits`",
    meaning="Neo credits consumed",
    revised_as="neo_credits",
)
LLM_COST_USD = Metric(
    "neo_llm_cost_usd_total",
    COUNTER,
    STREAM_LABELS,
    (
        "LLM cost of BYOK runs in USD, each stream counted once (field llm_cost of "
        f"{_STREAMS_API}). {_REFRESH}"
    ),
    unit="USD",
    source="`llm_cost`",
    meaning="LLM cost of BYOK runs, paid to your own provider",
    revised_as="llm_cost",
)
PLATFORM_COST_USD = Metric(
    "neo_platform_cost_usd_total",
    COUNTER,
    STREAM_LABELS,
    (
        "Neo platform fee of BYOK runs in USD, each stream counted once (field neo_cost of "
        f"{_STREAMS_API}). {_REFRESH}"
    ),
    unit="USD",
    source="`neo_cost`",
    meaning="Neo's platform fee for BYOK runs",
    revised_as="neo_cost",
)
STEPS = Metric(
    "neo_steps_total",
    COUNTER,
    STREAM_LABELS,
    (
        f"Agent steps executed, each stream counted once (field step_count of {_STREAMS_API}). "
        f"{_REFRESH}"
    ),
    unit="steps",
    source="`step_count`",
    meaning="agent steps executed",
    revised_as="step_count",
)
TOOL_CALLS = Metric(
    "neo_tool_calls_total",
    COUNTER,
    STREAM_LABELS,
    f"Tool calls made, each stream counted once (field tool_calls of {_STREAMS_API}). {_REFRESH}",
    unit="calls",
    source="`tool_calls`",
    meaning="tool calls made",
    revised_as="tool_calls",
)
AGENT_TRIGGERS = Metric(
    "neo_agent_triggers_total",
    COUNTER,
    STREAM_LABELS,
    (
        f"Agent triggers, each stream counted once (field agent_triggers of {_STREAMS_API}). "
        f"{_REFRESH}"
    ),
    unit="triggers",
    source="`agent_triggers`",
    meaning="agent triggers",
    revised_as="agent_triggers",
)
LLM_TIME_SECONDS = Metric(
    "neo_llm_time_seconds_total",
    COUNTER,
    STREAM_LABELS,
    (
        f"LLM inference time, each stream counted once (field llm_time_ms of {_STREAMS_API}). "
        f"{_REFRESH}"
    ),
    unit="seconds",
    source="`llm_time_ms`",
    meaning="LLM inference time",
    revised_as="llm_time_ms",
)
TOOL_TIME_SECONDS = Metric(
    "neo_tool_time_seconds_total",
    COUNTER,
    STREAM_LABELS,
    (
        f"Tool execution time, each stream counted once (field tool_time_ms of {_STREAMS_API}). "
        f"{_REFRESH}"
    ),
    unit="seconds",
    source="`tool_time_ms`",
    meaning="tool execution time",
    revised_as="tool_time_ms",
)
EXECUTION_TIME_SECONDS = Metric(
    "neo_execution_time_seconds_total",
    COUNTER,
    STREAM_LABELS,
    (
        "Total execution time, each stream counted once (field total_execution_ms of "
        f"{_STREAMS_API}). {_REFRESH}"
    ),
    unit="seconds",
    source="`total_execution_ms`",
    meaning="total execution time",
    revised_as="total_execution_ms",
)
STEP_LATENCY_SECONDS = Metric(
    "neo_step_latency_seconds_total",
    COUNTER,
    STREAM_LABELS,
    (
        "Step latency summed over steps: each stream's average step latency times its steps, where "
        "both are given; divided by neo_step_latency_steps_total it is the mean latency of a step, "
        f"each stream counted once (field avg_step_latency_ms x step_count of {_STREAMS_API}). "
        f"{_REFRESH}"
    ),
    unit="seconds",
    source="`avg_step_latency_ms` × `step_count`",  # noqa: RUF001  # as the docs print it
    meaning="step latency summed over steps, for streams with both fields",
    revised_as="avg_step_latency_ms",
)
STEP_LATENCY_STEPS = Metric(
    "neo_step_latency_steps_total",
    COUNTER,
    STREAM_LABELS,
    (
        "Steps covered by neo_step_latency_seconds_total (streams with both a step count and an "
        f"average step latency), each stream counted once (field step_count of {_STREAMS_API}). "
        f"{_REFRESH}"
    ),
    unit="steps",
    source="`step_count`",
    meaning="the steps behind `neo_step_latency_seconds_total`",
)
STREAM_COUNTERS = (
    STREAMS,
    CREDITS,
    LLM_COST_USD,
    PLATFORM_COST_USD,
    STEPS,
    TOOL_CALLS,
    AGENT_TRIGGERS,
    LLM_TIME_SECONDS,
    TOOL_TIME_SECONDS,
    EXECUTION_TIME_SECONDS,
    STEP_LATENCY_SECONDS,
    STEP_LATENCY_STEPS,
)

# --- breakdowns

AGENT_TRIGGERS_BY_AGENT = Metric(
    "neo_agent_triggers_by_agent_total",
    COUNTER,
    ("account", "agent"),
    f"Agent triggers by agent (field agent_breakdown of {_STREAMS_API}). {_REFRESH}",
    unit="triggers",
    source="`agent_breakdown`",
    meaning="agent triggers per agent",
)
TOOL_CALLS_BY_TOOL = Metric(
    "neo_tool_calls_by_tool_total",
    COUNTER,
    ("account", "tool"),
    f"Tool calls by tool (field tool_breakdown.*.calls of {_STREAMS_API}). {_REFRESH}",
    unit="calls",
    source="`tool_call_history`, else `tool_breakdown.*.calls`",
    meaning="tool calls per tool",
)
TOOL_TIME_BY_TOOL_SECONDS = Metric(
    "neo_tool_time_by_tool_seconds_total",
    COUNTER,
    ("account", "tool"),
    f"Tool time by tool (field tool_breakdown.*.duration_ms of {_STREAMS_API}). {_REFRESH}",
    unit="seconds",
    source="`tool_call_history[].duration_ms`, else `tool_breakdown.*.duration_ms`",
    meaning="tool time per tool",
)
BREAKDOWNS = (
    AGENT_TRIGGERS_BY_AGENT,
    TOOL_CALLS_BY_TOOL,
    TOOL_TIME_BY_TOOL_SECONDS,
)

# --- histograms

TOOL_CALL_DURATION_SECONDS = Metric(
    "neo_tool_call_duration_seconds",
    HISTOGRAM,
    ("account", "tool"),
    (
        "Duration of each tool call, one observation per entry (field "
        f"tool_call_history[].duration_ms of {_STREAMS_API}). {_REFRESH}"
    ),
    unit="seconds",
    source="`tool_call_history[].duration_ms`",
    meaning="duration of every tool call, observed once",
)
STREAM_DURATION_SECONDS = Metric(
    "neo_stream_duration_seconds",
    HISTOGRAM,
    ("account", "model"),
    f"Execution time of each stream (field total_execution_ms of {_STREAMS_API}). {_REFRESH}",
    unit="seconds",
    source="`total_execution_ms`",
    meaning="execution time per stream",
)
STREAM_STEP_LATENCY_SECONDS = Metric(
    "neo_stream_step_latency_seconds",
    HISTOGRAM,
    ("account", "model"),
    (
        "Average step latency of each stream: one observation per stream of its own average, nulls "
        f"skipped (field avg_step_latency_ms of {_STREAMS_API}). {_REFRESH}"
    ),
    unit="seconds",
    source="`avg_step_latency_ms`",
    meaning=(
        "each stream's own average step latency (an average of averages, not a per-step latency); "
        "nulls skipped"
    ),
)
HISTOGRAMS = (
    TOOL_CALL_DURATION_SECONDS,
    STREAM_DURATION_SECONDS,
    STREAM_STEP_LATENCY_SECONDS,
)

# --- window

WINDOW_STREAMS = Metric(
    "neo_window_streams",
    GAUGE,
    ("account", "status"),
    (
        "Streams created within the window (polling.window) that the exporter has counted, by "
        f"status (from its state, fed by {_STREAMS_API}). {_REFRESH}"
    ),
    unit="streams",
    source="state (from `/usage/streams`)",
    meaning="counted streams created within the window",
)
WINDOW_TASKS = Metric(
    "neo_window_tasks",
    GAUGE,
    ("account", "status"),
    f"Tasks created within the window, by status (field status of {_TASKS_API}). {_REFRESH}",
    unit="tasks",
    source="`/usage/tasks` `status`",
    meaning="tasks created within the window",
)
WINDOW_CREDITS = Metric(
    "neo_window_credits",
    GAUGE,
    ("account",),
    (
        f"Neo credits of the tasks created within the window (field neo_credits of {_TASKS_API}). "
        f"{_REFRESH}"
    ),
    unit="credits",
    source="`/usage/tasks` `neo_credits`",
    meaning="credits of the window's tasks",
)
WINDOW_LLM_COST_USD = Metric(
    "neo_window_llm_cost_usd",
    GAUGE,
    ("account",),
    (
        "BYOK LLM cost in USD of the tasks created within the window (field llm_cost of "
        f"{_TASKS_API}). {_REFRESH}"
    ),
    unit="USD",
    source="`/usage/tasks` `llm_cost`",
    meaning="BYOK LLM cost of the window's tasks",
)
WINDOW_PLATFORM_COST_USD = Metric(
    "neo_window_platform_cost_usd",
    GAUGE,
    ("account",),
    (
        "Neo platform fee in USD of the tasks created within the window (field neo_cost of "
        f"{_TASKS_API}). {_REFRESH}"
    ),
    unit="USD",
    source="`/usage/tasks` `neo_cost`",
    meaning="platform fee of the window's tasks",
)
WINDOW = (
    WINDOW_STREAMS,
    WINDOW_TASKS,
    WINDOW_CREDITS,
    WINDOW_LLM_COST_USD,
    WINDOW_PLATFORM_COST_USD,
)

# --- summary

ACCOUNT_WINDOW_CREDITS = Metric(
    "neo_account_window_credits",
    GAUGE,
    ("account",),
    (
        "Neo credits used within the window (polling.window), as the API sums them (field "
        f"total_neo_credits of {_SUMMARY_API}). {_SUMMARY_REFRESH}"
    ),
    unit="credits",
    source="`/usage/summary` `total_neo_credits`",
    meaning="credits used within `polling.window`, as Neo sums them",
)
ACCOUNT_WINDOW_TASKS = Metric(
    "neo_account_window_tasks",
    GAUGE,
    ("account", "status"),
    (
        f"Tasks created within the window, by status (field by_status of {_SUMMARY_API}). "
        f"{_SUMMARY_REFRESH}"
    ),
    unit="tasks",
    source="`/usage/summary` `by_status`",
    meaning=(
        "tasks within the window by status (`metrics.label_limits.status` values at most, the rest "
        "as `other`)"
    ),
)
ACCOUNT_WINDOW_BYOK_LLM_COST_USD = Metric(
    "neo_account_window_byok_llm_cost_usd",
    GAUGE,
    ("account",),
    (
        f"BYOK LLM cost in USD within the window (field byok.total_llm_cost of {_SUMMARY_API}). "
        f"{_SUMMARY_REFRESH}"
    ),
    unit="USD",
    source="`/usage/summary` `byok.total_llm_cost`",
    meaning="BYOK LLM cost within the window",
)
ACCOUNT_WINDOW_BYOK_PLATFORM_COST_USD = Metric(
    "neo_account_window_byok_platform_cost_usd",
    GAUGE,
    ("account",),
    (
        "Neo platform fee of BYOK runs in USD within the window (field byok.total_neo_cost of "
        f"{_SUMMARY_API}). {_SUMMARY_REFRESH}"
    ),
    unit="USD",
    source="`/usage/summary` `byok.total_neo_cost`",
    meaning="Neo's platform fee on BYOK runs within the window",
)
ACCOUNT_WINDOW_BYOK_STREAMS = Metric(
    "neo_account_window_byok_streams",
    GAUGE,
    ("account",),
    (
        f"BYOK streams within the window (field byok.total_streams of {_SUMMARY_API}). "
        f"{_SUMMARY_REFRESH}"
    ),
    unit="streams",
    source="`/usage/summary` `byok.total_streams`",
    meaning="BYOK streams within the window",
)
ACCOUNT_WINDOW_BYOK_TASKS = Metric(
    "neo_account_window_byok_tasks",
    GAUGE,
    ("account",),
    f"BYOK tasks within the window (field byok.total_tasks of {_SUMMARY_API}). {_SUMMARY_REFRESH}",
    unit="tasks",
    source="`/usage/summary` `byok.total_tasks`",
    meaning="BYOK tasks within the window",
)
ACCOUNT_POST_RESET_CREDITS = Metric(
    "neo_account_post_reset_credits",
    GAUGE,
    ("account",),
    (
        f"Neo credits used since the last credit reset (field total_neo_credits of {_SUMMARY_API} "
        f"from last_credit_reset to now). {_SUMMARY_REFRESH}"
    ),
    unit="credits",
    source="`/usage/summary` `total_neo_credits` from `last_credit_reset` to now",
    meaning="credits used since the last credit reset",
)
ACCOUNT_AVAILABLE_CREDITS = Metric(
    "neo_account_available_credits",
    GAUGE,
    ("account",),
    f"Neo credits left (field total_available_neo_credits of {_SUMMARY_API}). {_SUMMARY_REFRESH}",
    unit="credits",
    source="`/usage/summary` `total_available_neo_credits`",
    meaning="credits left",
)
ACCOUNT_ISSUED_CREDITS = Metric(
    "neo_account_issued_credits",
    GAUGE,
    ("account",),
    (
        f"Neo credits issued for the period (field total_issued_neo_credits of {_SUMMARY_API}). "
        f"{_SUMMARY_REFRESH}"
    ),
    unit="credits",
    source="`/usage/summary` `total_issued_neo_credits`",
    meaning="credits issued",
)
ACCOUNT_CREDITS_EXPIRY_TIMESTAMP_SECONDS = Metric(
    "neo_account_credits_expiry_timestamp_seconds",
    GAUGE,
    ("account",),
    (
        f"Unix time the credits expire (field neo_credits_expires_at of {_SUMMARY_API}). "
        f"{_SUMMARY_REFRESH}"
    ),
    unit="Unix seconds",
    source="`/usage/summary` `neo_credits_expires_at`",
    meaning="when the credits expire",
)
ACCOUNT_LAST_CREDIT_RESET_TIMESTAMP_SECONDS = Metric(
    "neo_account_last_credit_reset_timestamp_seconds",
    GAUGE,
    ("account",),
    (
        f"Unix time of the last credit reset (field last_credit_reset of {_SUMMARY_API}). "
        f"{_SUMMARY_REFRESH}"
    ),
    unit="Unix seconds",
    source="`/usage/summary` `last_credit_reset`",
    meaning="when the credits were last reset",
)
SUMMARY = (
    ACCOUNT_WINDOW_CREDITS,
    ACCOUNT_WINDOW_TASKS,
    ACCOUNT_WINDOW_BYOK_LLM_COST_USD,
    ACCOUNT_WINDOW_BYOK_PLATFORM_COST_USD,
    ACCOUNT_WINDOW_BYOK_STREAMS,
    ACCOUNT_WINDOW_BYOK_TASKS,
    ACCOUNT_POST_RESET_CREDITS,
    ACCOUNT_AVAILABLE_CREDITS,
    ACCOUNT_ISSUED_CREDITS,
    ACCOUNT_CREDITS_EXPIRY_TIMESTAMP_SECONDS,
    ACCOUNT_LAST_CREDIT_RESET_TIMESTAMP_SECONDS,
)

# --- members

MEMBER_WINDOW_CREDITS = Metric(
    "neo_member_window_credits",
    GAUGE,
    ("account", "email"),
    (
        "Neo credits used within the window per team member, the top metrics.members.limit members "
        f'and the rest as email="other" (field by_email of {_SUMMARY_API}; only with '
        f"metrics.members.enabled). {_SUMMARY_REFRESH}"
    ),
    unit="credits",
    source="`/usage/summary` `by_email[].neo_credits`",
    meaning="credits within the window per member (only with `metrics.members.enabled`)",
)
MEMBER_WINDOW_TASKS = Metric(
    "neo_member_window_tasks",
    GAUGE,
    ("account", "email"),
    (
        "Tasks created within the window per team member, grouped as for neo_member_window_credits "
        f"(field by_email of {_SUMMARY_API}; only with metrics.members.enabled). {_SUMMARY_REFRESH}"
    ),
    unit="tasks",
    source="`/usage/summary` `by_email[].tasks`",
    meaning="tasks within the window per member (only with `metrics.members.enabled`)",
)
MEMBERS = (
    MEMBER_WINDOW_CREDITS,
    MEMBER_WINDOW_TASKS,
)

# --- cap

SPENDING_CAP_LIMIT_USD = Metric(
    "neo_spending_cap_limit_usd",
    GAUGE,
    ("account",),
    f"Spending cap in USD (field cap.limit of {_USER_API}). {_CAP_REFRESH}",
    unit="USD",
    source="`/user` `cap.limit`",
    meaning="the spending cap",
)
SPENDING_CAP_USED_USD = Metric(
    "neo_spending_cap_used_usd",
    GAUGE,
    ("account",),
    f"Spend counted against the cap in USD (field cap.used of {_USER_API}). {_CAP_REFRESH}",
    unit="USD",
    source="`/user` `cap.used`",
    meaning="spend counted against the cap",
)
SPENDING_CAP_REMAINING_USD = Metric(
    "neo_spending_cap_remaining_usd",
    GAUGE,
    ("account",),
    f"What is left of the cap in USD (field cap.remaining of {_USER_API}). {_CAP_REFRESH}",
    unit="USD",
    source="`/user` `cap.remaining`",
    meaning="what is left of the cap",
)
SPENDING_CAP_USED_RATIO = Metric(
    "neo_spending_cap_used_ratio",
    GAUGE,
    ("account",),
    (
        f"Share of the cap used, 0 to 1 and above (fields cap.used / cap.limit of {_USER_API}; "
        f"absent when the limit is 0). {_CAP_REFRESH}"
    ),
    unit="ratio",
    source="`/user` `cap.used / cap.limit`",
    meaning="share of the cap used (above 1 when over it)",
)
CAP = (
    SPENDING_CAP_LIMIT_USD,
    SPENDING_CAP_USED_USD,
    SPENDING_CAP_REMAINING_USD,
    SPENDING_CAP_USED_RATIO,
)

# --- billing

BILLING_AVAILABLE_CREDITS = Metric(
    "neo_billing_available_credits",
    GAUGE,
    ("account",),
    f"Neo credits left (field available_credits of {_BILLING_API}). {_BILLING_REFRESH}",
    unit="credits",
    source="`/billing/credits` `available_credits`",
    meaning="credits left",
)
BILLING_ISSUED_CREDITS = Metric(
    "neo_billing_issued_credits",
    GAUGE,
    ("account",),
    f"Neo credits issued (field issued_credits of {_BILLING_API}). {_BILLING_REFRESH}",
    unit="credits",
    source="`/billing/credits` `issued_credits`",
    meaning="credits issued",
)
BILLING_USED_CREDITS = Metric(
    "neo_billing_used_credits",
    GAUGE,
    ("account",),
    f"Neo credits used (field used_credits of {_BILLING_API}). {_BILLING_REFRESH}",
    unit="credits",
    source="`/billing/credits` `used_credits`",
    meaning="credits used",
)
BILLING_CREDITS_EXPIRY_TIMESTAMP_SECONDS = Metric(
    "neo_billing_credits_expiry_timestamp_seconds",
    GAUGE,
    ("account",),
    f"Unix time the credits expire (field expires_at of {_BILLING_API}). {_BILLING_REFRESH}",
    unit="Unix seconds",
    source="`/billing/credits` `expires_at`",
    meaning="when the credits expire",
)
BILLING = (
    BILLING_AVAILABLE_CREDITS,
    BILLING_ISSUED_CREDITS,
    BILLING_USED_CREDITS,
    BILLING_CREDITS_EXPIRY_TIMESTAMP_SECONDS,
)

# --- top tasks

TOP_TASK_CREDITS = Metric(
    "neo_top_task_credits",
    GAUGE,
    ("account", "rank", "task_id", "task_title", "email"),
    (
        "Neo credits of the window's most expensive tasks, rank 1 the most; at most "
        "metrics.top_tasks series per account, the whole set replaced at each tasks read. "
        "task_title is truncated; email is empty unless metrics.members.enabled (field neo_credits "
        f"of {_TASKS_API}). Refreshed every poll of the tasks (polling.tasks_interval)."
    ),
    unit="credits",
    source="`/usage/tasks` `neo_credits`",
    meaning="the `metrics.top_tasks` tasks of the window with the most credits",
)
TOP_TASKS = (TOP_TASK_CREDITS,)

# --- recent spend, by when the streams ended (the spend alerts and their culprits)

_RECENT = (
    "streams that ended within the trailing `window` (15m, 1h), counted by when they ended "
    "(created_at + total_execution_ms): a backlog Neo lists late, of streams that ended long "
    "ago, adds nothing; a long stream that ends now adds its whole cost"
)
_RECENT_RANKED = "ranks 1 to 3, the whole set replaced at each poll; empty groups left out"
_RECENT_FROM = "From the state's counted streams (fields {}). Refreshed every poll of the streams."
RECENT_CREDITS = Metric(
    "neo_recent_credits",
    GAUGE,
    ("account", "window"),
    f"Neo credits of the {_RECENT}. 0 until the first whole read of the window."
    + " "
    + _RECENT_FROM.format("neo_credits"),
    unit="credits",
    source="`neo_credits`",
    meaning="credits of the streams that ended within the last 15 minutes or hour",
)
RECENT_COST_USD = Metric(
    "neo_recent_cost_usd",
    GAUGE,
    ("account", "window"),
    f"BYOK USD (llm_cost + neo_cost) of the {_RECENT}. 0 until the first whole read."
    + " "
    + _RECENT_FROM.format("llm_cost + neo_cost"),
    unit="USD",
    source="`llm_cost` + `neo_cost`",
    meaning="BYOK USD of the streams that ended within the last 15 minutes or hour",
)
RECENT_TOP_TASK_CREDITS = Metric(
    "neo_recent_top_task_credits",
    GAUGE,
    ("account", "window", "rank", "task_id", "task_title"),
    f"Neo credits of the tasks that spent the most in the {_RECENT}; {_RECENT_RANKED}. "
    "task_title is empty when metrics.task_titles is false."
    + " "
    + _RECENT_FROM.format("neo_credits, task_id, task_title"),
    unit="credits",
    source="`neo_credits`, `task_id`, `task_title`",
    meaning="the spend alerts' culprits: the tasks behind the last 15 minutes' or hour's credits",
)
RECENT_TOP_TASK_COST_USD = Metric(
    "neo_recent_top_task_cost_usd",
    GAUGE,
    ("account", "window", "rank", "task_id", "task_title"),
    f"BYOK USD of the tasks that spent the most in the {_RECENT}; {_RECENT_RANKED}."
    + " "
    + _RECENT_FROM.format("llm_cost + neo_cost, task_id, task_title"),
    unit="USD",
    source="`llm_cost` + `neo_cost`, `task_id`, `task_title`",
    meaning="the USD spend alerts' culprits: the tasks behind the recent BYOK USD",
)
RECENT_TOP_MODEL_CREDITS = Metric(
    "neo_recent_top_model_credits",
    GAUGE,
    ("account", "window", "rank", "model"),
    f"Neo credits of the models that spent the most in the {_RECENT}; {_RECENT_RANKED}."
    + " "
    + _RECENT_FROM.format("neo_credits, model"),
    unit="credits",
    source="`neo_credits`, `model`",
    meaning="the models behind the last 15 minutes' or hour's credits",
)
RECENT_TOP_MODEL_COST_USD = Metric(
    "neo_recent_top_model_cost_usd",
    GAUGE,
    ("account", "window", "rank", "model"),
    f"BYOK USD of the models that spent the most in the {_RECENT}; {_RECENT_RANKED}."
    + " "
    + _RECENT_FROM.format("llm_cost + neo_cost, model"),
    unit="USD",
    source="`llm_cost` + `neo_cost`, `model`",
    meaning="the models behind the recent BYOK USD",
)
RECENT_TOP_MEMBER_CREDITS = Metric(
    "neo_recent_top_member_credits",
    GAUGE,
    ("account", "window", "rank", "email"),
    f"Neo credits of the members who spent the most in the {_RECENT}; {_RECENT_RANKED}. "
    "Only with metrics.members.enabled (emails are personal data)."
    + " "
    + _RECENT_FROM.format("neo_credits, email"),
    unit="credits",
    source="`neo_credits`, `email`",
    meaning="the members behind the last 15 minutes' or hour's credits (members enabled)",
)
RECENT_TOP_MEMBER_COST_USD = Metric(
    "neo_recent_top_member_cost_usd",
    GAUGE,
    ("account", "window", "rank", "email"),
    f"BYOK USD of the members who spent the most in the {_RECENT}; {_RECENT_RANKED}. "
    "Only with metrics.members.enabled." + " " + _RECENT_FROM.format("llm_cost + neo_cost, email"),
    unit="USD",
    source="`llm_cost` + `neo_cost`, `email`",
    meaning="the members behind the recent BYOK USD (members enabled)",
)
RECENT = (
    RECENT_CREDITS,
    RECENT_COST_USD,
    RECENT_TOP_TASK_CREDITS,
    RECENT_TOP_TASK_COST_USD,
    RECENT_TOP_MODEL_CREDITS,
    RECENT_TOP_MODEL_COST_USD,
    RECENT_TOP_MEMBER_CREDITS,
    RECENT_TOP_MEMBER_COST_USD,
)

# --- teams (counted per stream, like the stream counters)

TEAM_LABELS = ("account", "team")
TEAM_STREAMS = Metric(
    "neo_team_streams_total",
    COUNTER,
    TEAM_LABELS,
    (
        "Streams that ended, by the team of the stream's email (config teams:, first match; "
        f"unassigned otherwise), each stream counted once (field email of {_STREAMS_API}). "
        f"{_REFRESH}"
    ),
    unit="streams",
    source="`stream_id`, `email`",
    meaning="streams that ended, by team",
)
TEAM_CREDITS = Metric(
    "neo_team_credits_total",
    COUNTER,
    TEAM_LABELS,
    (
        "Neo credits consumed, by the team of the stream's email (config teams:), each stream "
        f"counted once; revisions add to the team first counted (field neo_credits of "
        f"{_STREAMS_API}). {_REFRESH}"
    ),
    unit="credits",
    source="`neo_credits`, `email`",
    meaning="Neo credits consumed, by team",
)
TEAM_LLM_COST_USD = Metric(
    "neo_team_llm_cost_usd_total",
    COUNTER,
    TEAM_LABELS,
    (
        "LLM cost of BYOK runs in USD, by the team of the stream's email (config teams:), each "
        f"stream counted once (field llm_cost of {_STREAMS_API}). {_REFRESH}"
    ),
    unit="USD",
    source="`llm_cost`, `email`",
    meaning="LLM cost of BYOK runs, by team",
)
TEAM_PLATFORM_COST_USD = Metric(
    "neo_team_platform_cost_usd_total",
    COUNTER,
    TEAM_LABELS,
    (
        "Neo platform fee of BYOK runs in USD, by the team of the stream's email (config "
        f"teams:), each stream counted once (field neo_cost of {_STREAMS_API}). {_REFRESH}"
    ),
    unit="USD",
    source="`neo_cost`, `email`",
    meaning="Neo's platform fee for BYOK runs, by team",
)
TEAM_COUNTERS = (TEAM_STREAMS, TEAM_CREDITS, TEAM_LLM_COST_USD, TEAM_PLATFORM_COST_USD)

# --- budgets (config budgets:, from the state's streams of the current period)

_BUDGET_REFRESH = "Refreshed every poll of the streams."
BUDGET_LIMIT = Metric(
    "neo_budget_limit",
    GAUGE,
    ("account", "budget", "unit"),
    (
        "The budget's limit for its period (config field budgets[].credits or budgets[].usd). "
        f"{_BUDGET_REFRESH}"
    ),
    unit="credits or USD",
    source="config",
    meaning="the budget's limit (`budgets[].credits` or `.usd`); `unit` is `credits` or `usd`",
)
BUDGET_SPENT = Metric(
    "neo_budget_spent",
    GAUGE,
    ("account", "budget", "unit"),
    (
        "Spend of the streams created in the budget's current period (from "
        "neo_budget_period_start_timestamp_seconds), of its team and model if scoped: credits "
        f"(field neo_credits) or BYOK USD (field llm_cost) of {_STREAMS_API}, revisions "
        f"included; 0 again when a period starts. {_BUDGET_REFRESH}"
    ),
    unit="credits or USD",
    source="`neo_credits` or `llm_cost`, by `created_at`",
    meaning=(
        "spend of the streams created in the current period (of the budget's team and model), "
        "revisions included; starts again from 0 with each period"
    ),
)
BUDGET_PERIOD_START_TIMESTAMP_SECONDS = Metric(
    "neo_budget_period_start_timestamp_seconds",
    GAUGE,
    ("account", "budget"),
    (
        "Unix time at which the budget's current period began (config field budgets[].period: "
        f"UTC day, week from Monday, month). {_BUDGET_REFRESH}"
    ),
    unit="Unix seconds",
    source="config",
    meaning="start of the budget's current period (00:00 UTC of a day, a Monday, a 1st)",
)
BUDGET_PERIOD_END_TIMESTAMP_SECONDS = Metric(
    "neo_budget_period_end_timestamp_seconds",
    GAUGE,
    ("account", "budget"),
    (
        "Unix time at which the budget's current period ends, the next one's start (config "
        f"field budgets[].period). {_BUDGET_REFRESH}"
    ),
    unit="Unix seconds",
    source="config",
    meaning="end of the budget's current period (the next one's start)",
)
BUDGETS = (
    BUDGET_LIMIT,
    BUDGET_SPENT,
    BUDGET_PERIOD_START_TIMESTAMP_SECONDS,
    BUDGET_PERIOD_END_TIMESTAMP_SECONDS,
)

# --- health

UP = Metric(
    "neo_up",
    GAUGE,
    ("account", "endpoint"),
    "1 if the last read of this Neo API endpoint succeeded, else 0.",
    unit="1/0",
    source="-",
    meaning=(
        "1 if the last read of that endpoint (`streams`, `tasks`, `summary`, `user`, `credits`) "
        "succeeded"
    ),
)
LAST_SUCCESS_TIMESTAMP_SECONDS = Metric(
    "neo_exporter_last_success_timestamp_seconds",
    GAUGE,
    ("account", "endpoint"),
    "Unix time of the last successful read of this endpoint (0: none yet).",
    unit="Unix seconds",
    source="-",
    meaning="time of the last successful read; 0 before the first",
)
LAST_POLL_DURATION_SECONDS = Metric(
    "neo_exporter_last_poll_duration_seconds",
    GAUGE,
    ("account",),
    "Wall time of the last successful streams read.",
    unit="seconds",
    source="-",
    meaning="wall time of the last successful streams read",
)
WATERMARK_TIMESTAMP_SECONDS = Metric(
    "neo_exporter_watermark_timestamp_seconds",
    GAUGE,
    ("account",),
    "The `to` of the last complete streams read: rows created before it have been read.",
    unit="Unix seconds",
    source="-",
    meaning="`to` of the last complete streams read; `time() - this` is the data lag",
)
SEEN_STREAMS = Metric(
    "neo_exporter_seen_streams",
    GAUGE,
    ("account",),
    "Stream ids held in the state for deduplication (the window plus the lookback).",
    unit="streams",
    source="-",
    meaning="stream ids kept for deduplication",
)
CHANGED_RECORDS = Metric(
    "neo_exporter_changed_records_total",
    COUNTER,
    ("account",),
    (
        "Streams the API revised after they were counted: increases are added under the labels "
        "first counted; see neo_exporter_revisions_total for what changed."
    ),
    unit="rows",
    source="-",
    meaning=(
        "counted streams the API revised later (increases added under the first labels); durable"
    ),
)
REVISIONS = Metric(
    "neo_exporter_revisions_total",
    COUNTER,
    ("account", "field", "direction"),
    (
        "Values of counted streams that the API revised, by API field: direction up (the increase "
        "was added), down (kept: a counter cannot go down) or changed (a label value: the first "
        "one is kept)."
    ),
    unit="values",
    source="-",
    meaning=(
        "revised values by API field: `up` (added), `down` (kept: a counter cannot go down), "
        "`changed` (a label: the first is kept); durable"
    ),
)
REVISED_DOWN = Metric(
    "neo_exporter_revised_down_total",
    COUNTER,
    ("account", "field"),
    (
        "How much the API lowered counted values, by API field, in the unit of the matching "
        "counter (credits, USD, seconds, counts): the counters stay this much above Neo."
    ),
    unit="the field's unit",
    source="-",
    meaning=(
        "how much the API lowered counted values: the counters stay this much above Neo; durable"
    ),
)
CATCHING_UP = Metric(
    "neo_exporter_catching_up",
    GAUGE,
    ("account",),
    "1 while the exporter reads a backlog (first start, after downtime or an API outage), else 0.",
    unit="1/0",
    source="-",
    meaning="1 while a backlog is read (first start, after downtime, after an API outage)",
)
LAST_CATCH_UP_TIMESTAMP_SECONDS = Metric(
    "neo_exporter_last_catch_up_timestamp_seconds",
    GAUGE,
    ("account",),
    (
        "Unix time of the last commit that read a backlog into counters already published: counter "
        "increases up to then hold past spend (the spend alerts read neo_recent_*, by when the "
        "spend happened, instead) (0: none yet)."
    ),
    unit="Unix seconds",
    source="-",
    meaning=(
        "last commit of a backlog into already published counters; the spend alerts leave the hour "
        "after it out; 0 while there was none in this process"
    ),
)
READ_MISSING_ROWS = Metric(
    "neo_exporter_read_missing_rows",
    GAUGE,
    ("account", "endpoint"),
    (
        "Rows the last read of this list endpoint did not get, against the API's own total for the "
        "span (0 for a complete read)."
    ),
    unit="rows",
    source="-",
    meaning=(
        "rows the last read of `streams` or `tasks` did not get against the API's own `total` (0: "
        "complete)"
    ),
)
AUDIT_STREAMS_MISSING = Metric(
    "neo_exporter_audit_streams_missing",
    GAUGE,
    ("account",),
    (
        f"Self-audit: streams Neo counts (total of {_STREAMS_API}) minus streams the exporter "
        "counted, created in the last audited period (the window less the lookback)."
    ),
    unit="streams",
    source="`/usage/streams` `total`",
    meaning="Neo's count of streams in the audited period minus the exporter's",
)
AUDIT_CREDITS_DRIFT = Metric(
    "neo_exporter_audit_credits_drift",
    GAUGE,
    ("account",),
    (
        f"Self-audit: Neo credits by Neo (total_neo_credits of {_SUMMARY_API}) minus the credits "
        "the exporter counted, for the last audited period; absent when the summary cannot be read."
    ),
    unit="credits",
    source="`/usage/summary` `total_neo_credits`",
    meaning=(
        "Neo's credits for the audited period minus the exporter's (absent if the summary cannot "
        "be read)"
    ),
)
AUDIT_NEO_STREAMS = Metric(
    "neo_exporter_audit_neo_streams",
    GAUGE,
    ("account",),
    "Self-audit: streams Neo counts in the last audited period.",
    unit="streams",
    source="`/usage/streams` `total`",
    meaning="Neo's count of streams in the audited period",
)
AUDIT_NEO_CREDITS = Metric(
    "neo_exporter_audit_neo_credits",
    GAUGE,
    ("account",),
    "Self-audit: Neo credits by Neo's summary for the last audited period.",
    unit="credits",
    source="`/usage/summary` `total_neo_credits`",
    meaning="Neo's credits for the audited period",
)
AUDIT_LAST_TIMESTAMP_SECONDS = Metric(
    "neo_exporter_audit_last_timestamp_seconds",
    GAUGE,
    ("account",),
    "Unix time of the last self-audit (audit.interval).",
    unit="Unix seconds",
    source="-",
    meaning="time of the last self-audit",
)
STATE_SIZE_BYTES = Metric(
    "neo_exporter_state_size_bytes",
    GAUGE,
    (),
    "Size of the SQLite state.",
    unit="bytes",
    source="-",
    meaning="size of the SQLite state",
)
WINDOW_SECONDS = Metric(
    "neo_exporter_window_seconds",
    GAUGE,
    (),
    "The configured polling.window, over which the neo_window_* gauges are computed.",
    unit="seconds",
    source="-",
    meaning="the configured `polling.window`",
)
BUILD_INFO = Metric(
    "neo_exporter_build_info",
    GAUGE,
    ("version", "python_version"),
    "Always 1; labels carry the exporter and Python versions.",
    unit="-",
    source="-",
    meaning="always 1",
)
AUDIT = (
    AUDIT_STREAMS_MISSING,
    AUDIT_CREDITS_DRIFT,
    AUDIT_NEO_STREAMS,
    AUDIT_NEO_CREDITS,
    AUDIT_LAST_TIMESTAMP_SECONDS,
)
HEALTH = (
    UP,
    LAST_SUCCESS_TIMESTAMP_SECONDS,
    LAST_POLL_DURATION_SECONDS,
    WATERMARK_TIMESTAMP_SECONDS,
    SEEN_STREAMS,
    CHANGED_RECORDS,
    REVISIONS,
    REVISED_DOWN,
    CATCHING_UP,
    LAST_CATCH_UP_TIMESTAMP_SECONDS,
    READ_MISSING_ROWS,
    *AUDIT,
    STATE_SIZE_BYTES,
    WINDOW_SECONDS,
    BUILD_INFO,
)

# --- process

ALERT_THRESHOLD = Metric(
    "neo_alert_threshold",
    GAUGE,
    ("account", "threshold"),
    (
        "What the shipped alerts compare each account against (alerts.thresholds and "
        "accounts[].alert_thresholds of the config); ratios are shares, _seconds in seconds."
    ),
    unit="per threshold",
    source="config",
    meaning=(
        "the account's alert thresholds (`alerts.thresholds`, `accounts[].alert_thresholds`), "
        "which the shipped alerts compare against; `threshold` is one of the names in "
        "[configuration](configuration.md#alerts); ratios are shares, `_seconds` in seconds"
    ),
)
API_REQUESTS = Metric(
    "neo_exporter_api_requests_total",
    COUNTER,
    ("account", "endpoint", "code"),
    (
        "Requests made to the Neo API, by endpoint and HTTP status code; when no status came back: "
        "dns_error, connection_refused, tls_error, timeout or connection_error."
    ),
    unit="requests",
    source="-",
    meaning=(
        "requests to the API by HTTP status; when none came back, by cause: `dns_error` (the host "
        "name did not resolve), `connection_refused`, `tls_error` (certificate not verified, "
        "handshake failed), `timeout` (connect or read), `connection_error` (anything else: reset, "
        "truncated body, proxy)"
    ),
)
API_RETRIES = Metric(
    "neo_exporter_api_retries_total",
    COUNTER,
    ("account", "endpoint", "reason"),
    (
        "Requests to the Neo API that were retried, by reason (429, 5xx, timeout, dns_error, "
        "connection_refused, tls_error, connection_error, invalid_body)."
    ),
    unit="requests",
    source="-",
    meaning=(
        "retried requests by reason (`429`, `5xx`, `timeout`, `dns_error`, `connection_refused`, "
        "`tls_error`, `connection_error`, `invalid_body`)"
    ),
)
STATE_WRITABLE = Metric(
    "neo_exporter_state_writable",
    GAUGE,
    (),
    (
        "1 while the state file can be written, 0 after a write to it failed (nothing new is "
        "counted then; the last committed values are still served) until one succeeds."
    ),
    unit="1/0",
    source="-",
    meaning=(
        "0 after a write to the state file failed (full disk, read-only file system): nothing new "
        "is counted and the last committed values are served, until a write succeeds again"
    ),
)
SKIPPED_RECORDS = Metric(
    "neo_exporter_skipped_records_total",
    COUNTER,
    ("account", "endpoint", "reason"),
    (
        "Rows returned by the API that could not be counted, by reason; a row that stays bad is "
        "counted again at every read that returns it."
    ),
    unit="rows",
    source="-",
    meaning=(
        "rows that could not be counted, per read (`not_an_object`, `missing_field`, `wrong_type`, "
        "`bad_value`, `bad_timestamp`)"
    ),
)
REPAIRED_FIELDS = Metric(
    "neo_exporter_repaired_fields_total",
    COUNTER,
    ("account", "endpoint", "field"),
    (
        "Fields of counted rows that were null, malformed, negative or sent as strings, read as "
        "absent, `unknown` or the number in the string; the row itself was counted. Streams: once "
        "per stream counted or revised; tasks: per read."
    ),
    unit="rows",
    source="-",
    meaning=(
        "fields of counted rows read as absent, `unknown` or the number in a string (see [repaired "
        "fields](#counters-from-streams)); streams once per stream counted or revised, tasks per "
        "read"
    ),
)
INCOMPLETE_READS = Metric(
    "neo_exporter_incomplete_reads_total",
    COUNTER,
    ("account", "endpoint"),
    (
        "Reads that ended holding fewer rows than the API's own total for their span, after "
        "reading the missing parts again within the read's budget."
    ),
    unit="reads",
    source="-",
    meaning=(
        "reads that ended with fewer rows than the API's `total` for their span, after looking for "
        "the missing ones"
    ),
)
POLLS = Metric(
    "neo_exporter_polls_total",
    COUNTER,
    ("account", "kind", "result"),
    (
        "Reads of the Neo API by kind (incremental lookback, reconcile of the whole window, tasks, "
        "summary, user, credits) and result (success, failure, and unavailable: a 403 or 404 of an "
        "account-level endpoint)."
    ),
    unit="reads",
    source="-",
    meaning=(
        "reads by kind (`incremental`, `reconcile`, `tasks`, `summary`, `user`, `credits`) and "
        "result (`success`, `failure`; `unavailable` for a 403/404 of `summary`, `user` or "
        "`credits`)"
    ),
)
PROCESS = (
    ALERT_THRESHOLD,
    API_REQUESTS,
    API_RETRIES,
    STATE_WRITABLE,
    SKIPPED_RECORDS,
    REPAIRED_FIELDS,
    INCOMPLETE_READS,
    POLLS,
)

# --- the process, from prometheus_client's own collectors (ProcessCollector on Linux,
# PlatformCollector, GCCollector): named here for the docs, defined by the library.

_CLIENT = "prometheus_client"
STANDARD = (
    Metric(
        "process_cpu_seconds_total",
        COUNTER,
        (),
        "Total user and system CPU time spent in seconds.",
        unit="seconds",
        source=_CLIENT,
        meaning="CPU time of the exporter's process",
    ),
    Metric(
        "process_resident_memory_bytes",
        GAUGE,
        (),
        "Resident memory size in bytes.",
        unit="bytes",
        source=_CLIENT,
        meaning="resident memory (RSS)",
    ),
    Metric(
        "process_virtual_memory_bytes",
        GAUGE,
        (),
        "Virtual memory size in bytes.",
        unit="bytes",
        source=_CLIENT,
        meaning="virtual memory",
    ),
    Metric(
        "process_open_fds",
        GAUGE,
        (),
        "Number of open file descriptors.",
        unit="descriptors",
        source=_CLIENT,
        meaning="open files and sockets",
    ),
    Metric(
        "process_max_fds",
        GAUGE,
        (),
        "Maximum number of open file descriptors.",
        unit="descriptors",
        source=_CLIENT,
        meaning="the limit of open files (`ulimit -n`)",
    ),
    Metric(
        "process_start_time_seconds",
        GAUGE,
        (),
        "Start time of the process since unix epoch in seconds.",
        unit="Unix seconds",
        source=_CLIENT,
        meaning="when the process started",
    ),
    Metric(
        "python_info",
        GAUGE,
        ("implementation", "major", "minor", "patchlevel", "version"),
        "Python platform information",
        unit="-",
        source=_CLIENT,
        meaning="always 1: the Python running the exporter",
    ),
    Metric(
        "python_gc_objects_collected_total",
        COUNTER,
        ("generation",),
        "Objects collected during gc",
        unit="objects",
        source=_CLIENT,
        meaning="objects the garbage collector freed",
    ),
    Metric(
        "python_gc_objects_uncollectable_total",
        COUNTER,
        ("generation",),
        "Uncollectable objects found during GC",
        unit="objects",
        source=_CLIENT,
        meaning="objects it could not free",
    ),
    Metric(
        "python_gc_collections_total",
        COUNTER,
        ("generation",),
        "Number of times this generation was collected",
        unit="collections",
        source=_CLIENT,
        meaning="collections by generation",
    ),
)
"""What every Prometheus client serves about its process, read at each scrape."""


COLLECTED: tuple[Metric, ...] = (
    STREAM_COUNTERS
    + BREAKDOWNS
    + HISTOGRAMS
    + WINDOW
    + SUMMARY
    + MEMBERS
    + CAP
    + BILLING
    + TOP_TASKS
    + RECENT
    + TEAM_COUNTERS
    + BUDGETS
    + HEALTH
)
"""What the collector emits, from the snapshot."""
ALL: tuple[Metric, ...] = COLLECTED + PROCESS

# The tables of docs/metrics.md, in order: (section heading, its metrics).
DOC_TABLES: tuple[tuple[str, tuple[Metric, ...]], ...] = (
    ("Counters from streams", STREAM_COUNTERS),
    ("Breakdowns", BREAKDOWNS),
    ("Histograms", HISTOGRAMS),
    ("Window gauges", WINDOW),
    ("Account: summary, spending cap, credit balance", SUMMARY + CAP + BILLING),
    ("Culprits: top tasks and per-member spend", TOP_TASKS + MEMBERS),
    ("Recent spend, by when it happened: the spend alerts and their culprits", RECENT),
    ("Teams and budgets", TEAM_COUNTERS + BUDGETS),
    ("Exporter health", HEALTH + PROCESS),
    ("The process", STANDARD),
)
