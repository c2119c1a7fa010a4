"""Generate the Grafana dashboards in grafana/dashboards/ from code.

    python grafana/generate.py          # rewrite the JSON files
    python grafana/generate.py --check  # exit 1 if a committed file differs from the code

The dashboards are built with grafana-foundation-sdk (pinned in the test extra), then given
stable panel ids and query refIds, and written with sorted keys so that diffs stay small.
Every panel and query uses the `$datasource` variable; there are no `__inputs`, so the files
can be provisioned as they are. Days and months are UTC, as in PromQL.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import bargauge, gauge, stat, table, timeseries
from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import prometheus as prom
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models import prometheus as prom_model

OUT = Path(__file__).resolve().parent / "dashboards"
DS = model.DataSourceRef(type_val="prometheus", uid="${datasource}")
TOP_N = 10

# Label selectors shared by the panels. Tool and agent breakdowns carry no `model` label.
ACC = 'account=~"$account"'
SEL = 'account=~"$account", model=~"$model"'
# One definition of a failed stream everywhere (rules, dashboards, docs): anything but
# completed and aborted, so that statuses Neo adds later count as failed until told apart.
FAILED = 'status!~"completed|aborted"'
# USD totals leave out rows known not to be BYOK: an LLM cost on those, if Neo ever reports
# one, is Neo's own and already billed in credits (see docs/metrics.md, units).
USD_SEL = SEL + ', byok!="false"'
CREDITS_PER_HOUR = "suffix: credits/h"
USD = "currencyUSD"

# Seconds left in the current UTC month, for the month projection.
MONTH_LEFT = "(days_in_month() * 86400 - (day_of_month() - 1) * 86400 - time() % 86400)"


def query(expr: str, legend: str = "__auto", *, instant: bool = False) -> prom.Dataquery:
    q = prom.Dataquery().expr(expr).legend_format(legend).datasource(DS)
    return q.instant() if instant else q.range()


def with_queries(panel: Any, *queries: prom.Dataquery) -> Any:
    for ref, q in zip("ABCDEFGH", queries, strict=False):
        panel = panel.with_target(q.ref_id(ref))
    return panel


def stat_panel(
    title: str,
    description: str,
    unit: str,
    *queries: prom.Dataquery,
    w: int = 6,
    h: int = 4,
    time_from: str | None = None,
    decimals: float | None = 2,
) -> stat.Panel:
    panel = (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DS)
        .unit(unit)
        .span(w)
        .height(h)
        .graph_mode(common.BigValueGraphMode.NONE)
        .color_mode(common.BigValueColorMode.NONE)
        .text_mode(common.BigValueTextMode.VALUE_AND_NAME)
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]))
    )
    if decimals is not None:
        panel = panel.decimals(decimals)
    if time_from:
        # "now/d" shows today so far, "now/M" this month so far, whatever range is picked.
        panel = panel.time_from(time_from)
    return with_queries(panel, *queries)


def legend() -> common_builders.VizLegendOptions:
    return (
        common_builders.VizLegendOptions()
        .display_mode(common.LegendDisplayMode.TABLE)
        .placement(common.LegendPlacement.BOTTOM)
        .show_legend(True)
        .calcs(["mean", "max", "lastNotNull"])
    )


def series_panel(
    title: str,
    description: str,
    unit: str,
    *queries: prom.Dataquery,
    w: int = 12,
    h: int = 8,
    stacked: bool = False,
) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DS)
        .unit(unit)
        .span(w)
        .height(h)
        .fill_opacity(10)
        .legend(legend())
        .tooltip(
            common_builders.VizTooltipOptions()
            .mode(common.TooltipDisplayMode.MULTI)
            .sort(common.SortOrder.DESCENDING)
        )
    )
    if stacked:
        panel = panel.stacking(common_builders.StackingConfig().mode(common.StackingMode.NORMAL))
    return with_queries(panel, *queries)


def bars_panel(
    title: str,
    description: str,
    unit: str,
    *queries: prom.Dataquery,
    w: int = 12,
    h: int = 8,
    time_from: str | None = None,
) -> bargauge.Panel:
    panel = (
        bargauge.Panel()
        .title(title)
        .description(description)
        .datasource(DS)
        .unit(unit)
        .span(w)
        .height(h)
        .orientation(common.VizOrientation.HORIZONTAL)
        .display_mode(common.BarGaugeDisplayMode.BASIC)
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]))
    )
    if time_from:
        panel = panel.time_from(time_from)
    return with_queries(panel, *queries)


def up_mapping() -> list[model.ValueMap]:
    return [
        model.ValueMap(
            options={
                "0": model.ValueMappingResult(text="DOWN", color="red"),
                "1": model.ValueMappingResult(text="UP", color="green"),
            }
        )
    ]


def datasource_variable() -> dash.DatasourceVariable:
    return dash.DatasourceVariable("datasource").label("Data source").type("prometheus")


def label_variable(name: str, label: str, source: str) -> dash.QueryVariable:
    return (
        dash.QueryVariable(name)
        .label(label)
        .datasource(DS)
        .query(
            {"qryType": 1, "query": source, "refId": "PrometheusVariableQueryEditor-VariableQuery"}
        )
        .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(model.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .current(model.VariableOption(selected=True, text="All", value="$__all"))
    )


# --- Neo spend overview ---------------------------------------------------------------------


def credits_expr(window: str, by: str = "byok") -> str:
    return f"sum by ({by}) (increase(neo_credits_total{{{SEL}}}[{window}]))"


def usd_queries(window: str) -> tuple[prom.Dataquery, prom.Dataquery]:
    return (
        query(
            f"sum by (byok) (increase(neo_llm_cost_usd_total{{{SEL}}}[{window}]))",
            "LLM cost, BYOK={{byok}}",
            instant=True,
        ),
        query(
            f"sum by (byok) (increase(neo_platform_cost_usd_total{{{SEL}}}[{window}]))",
            "Platform fee, BYOK={{byok}}",
            instant=True,
        ),
    )


def projected(metric: str) -> str:
    # Month so far (the panel's range is forced to "now/M") plus the rest of the month at
    # the pace of the last 24 hours.
    return (
        f"sum by (byok) (increase({metric}{{{SEL}}}[$__range]))"
        f" + sum by (byok) (rate({metric}{{{SEL}}}[1d])) * scalar{MONTH_LEFT}"
    )


def spend_row() -> Iterator[Builder[Any]]:
    yield dash.Row("Spend (credits and USD are different quantities: never add them)")
    byok = "BYOK={{byok}}"
    yield stat_panel(
        "Credits today",
        "Neo credits consumed since 00:00 UTC, by BYOK.",
        "none",
        query(credits_expr("$__range"), byok, instant=True),
        time_from="now/d",
    )
    yield stat_panel(
        "Credits in range",
        "Neo credits consumed in the dashboard's time range, by BYOK.",
        "none",
        query(credits_expr("$__range"), byok, instant=True),
    )
    yield stat_panel(
        "Credits projected this month",
        "Month so far (UTC) plus the rest of the month at the last 24 hours' pace.",
        "none",
        query(projected("neo_credits_total"), byok, instant=True),
        time_from="now/M",
    )
    yield stat_panel(
        "Failed share in range",
        "Streams that failed (any status but completed and aborted) over all streams that "
        "ended in the range.",
        "percentunit",
        query(
            f"sum(increase(neo_streams_total{{{SEL}, {FAILED}}}[$__range]))"
            f" / sum(increase(neo_streams_total{{{SEL}}}[$__range]))",
            "failed share",
            instant=True,
        ),
    )
    yield stat_panel(
        "USD today (BYOK)",
        "LLM cost paid to your provider and Neo's platform fee since 00:00 UTC, by BYOK.",
        USD,
        *usd_queries("$__range"),
        time_from="now/d",
    )
    yield stat_panel(
        "USD in range (BYOK)",
        "LLM cost and platform fee in the dashboard's time range, by BYOK.",
        USD,
        *usd_queries("$__range"),
    )
    yield stat_panel(
        "USD projected this month",
        "Month so far (UTC) plus the rest of the month at the last 24 hours' pace.",
        USD,
        query(projected("neo_llm_cost_usd_total"), "LLM cost, BYOK={{byok}}", instant=True),
        query(
            projected("neo_platform_cost_usd_total"),
            "Platform fee, BYOK={{byok}}",
            instant=True,
        ),
        time_from="now/M",
    )
    yield stat_panel(
        "Streams in range",
        "Streams (task executions) that ended in the range, by status.",
        "none",
        query(
            f"sum by (status) (increase(neo_streams_total{{{SEL}}}[$__range]))",
            "{{status}}",
            instant=True,
        ),
        decimals=0,
    )


def top_tasks_table(
    title: str, description: str, expr: str, columns: tuple[str, ...], *, w: int = 16
) -> table.Panel:
    """A table of ranked tasks, one row per series, the value shown as `credits`."""
    top = query(expr, "{{task_title}}", instant=True).format(prom_model.PromQueryFormat.TABLE)
    return with_queries(
        table.Panel()
        .title(title)
        .description(description)
        .datasource(DS)
        .unit("none")
        .span(w)
        .height(9)
        .with_transformation(
            model.DataTransformerConfig(
                id_val="organize",
                options={
                    "excludeByName": {"Time": True},
                    "indexByName": {name: index for index, name in enumerate(columns)},
                    "renameByName": {"Value": "credits"},
                },
            )
        )
        .sort_by([common_builders.TableSortByFieldState().display_name("credits").desc(True)]),
        top,
    )


def recent_row() -> Iterator[Builder[Any]]:
    """Where a spend alert's link lands: what was spent in the last 15 minutes and hour, by
    when the streams ended (as the alerts read it), and who spent it."""
    yield dash.Row("Right now: the last hour's spend and who spent it (what the spend alerts read)")
    yield stat_panel(
        "Credits in the last 15 minutes and hour",
        "Credits of the streams that ended in the last 15 minutes and in the last hour "
        "(neo_recent_credits, what the spend alerts compare with their thresholds).",
        "none",
        query(f"sum by (window) (neo_recent_credits{{{ACC}}})", "{{window}}", instant=True),
        w=4,
    )
    yield stat_panel(
        "USD in the last 15 minutes and hour (BYOK)",
        "LLM cost and platform fee of the BYOK streams that ended in the last 15 minutes and "
        "hour (neo_recent_cost_usd).",
        USD,
        query(f"sum by (window) (neo_recent_cost_usd{{{ACC}}})", "{{window}}", instant=True),
        w=4,
    )
    yield top_tasks_table(
        "Top tasks of the last hour by credits",
        "The tasks whose streams spent the most credits in the last hour, as the spend "
        "alerts name them (neo_recent_top_task_credits, 3 per account).",
        "max by (account, rank, task_id, task_title) "
        f'(neo_recent_top_task_credits{{{ACC}, window="1h"}})',
        ("account", "rank", "Value", "task_title", "task_id"),
    )
    yield bars_panel(
        "Top models of the last hour by credits",
        "The models that spent the most credits in the last hour (neo_recent_top_model_credits).",
        "none",
        query(
            f'sort_desc(sum by (model) (neo_recent_top_model_credits{{{ACC}, window="1h"}}))',
            "{{model}}",
            instant=True,
        ),
        w=12,
    )
    yield bars_panel(
        "Top members of the last hour by credits",
        "The members who spent the most credits in the last hour "
        "(neo_recent_top_member_credits). Empty unless metrics.members.enabled is set.",
        "none",
        query(
            f'sort_desc(sum by (email) (neo_recent_top_member_credits{{{ACC}, window="1h"}}))',
            "{{email}}",
            instant=True,
        ),
        w=12,
    )


def either(metric: str, fallback: str, how: str = "max") -> str:
    """The balance from /billing/credits, or from the usage summary where billing answers 404."""
    return f"({how} by (account) ({metric}{{{ACC}}}) or {how} by (account) ({fallback}{{{ACC}}}))"


def thresholds(*steps: tuple[float | None, str]) -> dash.ThresholdsConfig:
    return (
        dash.ThresholdsConfig()
        .mode(model.ThresholdsMode.ABSOLUTE)
        .steps([model.Threshold(value=value, color=color) for value, color in steps])
    )


def balance_row() -> Iterator[Builder[Any]]:
    yield dash.Row("Credits left, spending cap and culprits")
    available = either("neo_billing_available_credits", "neo_account_available_credits")
    yield stat_panel(
        "Credits left",
        "Neo credits available now (from /billing/credits, or the usage summary where the "
        "account has no billing endpoint).",
        "none",
        query(available, "{{account}}", instant=True),
        w=4,
    )
    yield stat_panel(
        "Credits last at the last 24h pace",
        "Credits left divided by the credit spend rate of the last 24 hours (selected models): "
        "when they would run out. Alert NeoCreditsRunningOut watches the last hour's pace.",
        "s",
        query(
            f"{available} / on (account) sum by (account) (rate(neo_credits_total{{{SEL}}}[1d]))",
            "{{account}}",
            instant=True,
        ),
        w=4,
        decimals=None,
    )
    yield stat_panel(
        "Credits expire in",
        "Time until the current credits expire (unused credits are lost then).",
        "s",
        query(
            either(
                "neo_billing_credits_expiry_timestamp_seconds",
                "neo_account_credits_expiry_timestamp_seconds",
                "min",
            )
            + " - time()",
            "{{account}}",
            instant=True,
        ),
        w=4,
        decimals=None,
    )
    yield stat_panel(
        "Credits used since the reset",
        "Neo credits used since the last credit reset.",
        "none",
        query(
            either("neo_billing_used_credits", "neo_account_post_reset_credits"),
            "{{account}}",
            instant=True,
        ),
        w=4,
    )
    yield with_queries(
        gauge.Panel()
        .title("Spending cap used")
        .description(
            "Share of the spending cap (USD, from /api/v1/user) used. Empty when no cap "
            "applies. Alerts at 80 % (NeoSpendingCapHigh) and 95 % (NeoSpendingCapCritical)."
        )
        .datasource(DS)
        .unit("percentunit")
        .min(0)
        .max(1)
        .span(4)
        .height(4)
        .thresholds(thresholds((None, "green"), (0.8, "orange"), (0.95, "red")))
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"])),
        query(
            f"max by (account) (neo_spending_cap_used_ratio{{{ACC}}})", "{{account}}", instant=True
        ),
    )
    yield stat_panel(
        "Spending cap left",
        "What is left of the spending cap, in USD (BYOK LLM cost and platform fee count "
        "against it).",
        USD,
        query(
            f"max by (account) (neo_spending_cap_remaining_usd{{{ACC}}})",
            "{{account}}",
            instant=True,
        ),
        w=4,
    )
    yield top_tasks_table(
        "Top tasks by credits in the window",
        "The most expensive tasks of the exporter's polling.window, in credits (from "
        "/usage/tasks; metrics.top_tasks of them per account). Look them up in Neo by id. "
        "The email column is filled only with metrics.members.enabled.",
        f"max by (account, rank, task_id, task_title, email) (neo_top_task_credits{{{ACC}}})",
        ("account", "rank", "Value", "task_title", "task_id", "email"),
    )
    yield bars_panel(
        "Credits by member in the window",
        "Credits of the exporter's polling.window per team member (the top "
        "metrics.members.limit, the rest as other). Empty unless metrics.members.enabled is "
        "set: emails are personal data.",
        "none",
        query(
            f"sort_desc(sum by (email) (neo_member_window_credits{{{ACC}}}))",
            "{{email}}",
            instant=True,
        ),
        w=8,
        h=9,
    )


def spend_over_time_row() -> Iterator[Builder[Any]]:
    yield dash.Row("Spend over time")
    yield series_panel(
        "Credit spend rate",
        "Credits per hour, by BYOK.",
        CREDITS_PER_HOUR,
        query(
            f"sum by (byok) (rate(neo_credits_total{{{SEL}}}[$__rate_interval])) * 3600",
            "BYOK={{byok}}",
        ),
    )
    yield series_panel(
        "USD spend rate (BYOK)",
        "USD per hour: LLM cost paid to your provider and Neo's platform fee.",
        USD,
        query(
            f"sum by (byok) (rate(neo_llm_cost_usd_total{{{SEL}}}[$__rate_interval])) * 3600",
            "LLM cost/h, BYOK={{byok}}",
        ),
        query(
            f"sum by (byok) (rate(neo_platform_cost_usd_total{{{SEL}}}[$__rate_interval])) * 3600",
            "Platform fee/h, BYOK={{byok}}",
        ),
    )
    yield series_panel(
        "Credit spend rate by model",
        "Credits per hour, by model.",
        CREDITS_PER_HOUR,
        query(
            f"sum by (model) (rate(neo_credits_total{{{SEL}}}[$__rate_interval])) * 3600",
            "{{model}}",
        ),
        stacked=True,
    )
    yield bars_panel(
        "Spend in range by model",
        "Credits and USD (LLM cost plus platform fee, both USD) per model in the range.",
        "none",
        query(
            f"sort_desc(sum by (model) (increase(neo_credits_total{{{SEL}}}[$__range])))",
            "{{model}} credits",
            instant=True,
        ),
        query(
            f"sort_desc(sum by (model) (increase(neo_llm_cost_usd_total{{{USD_SEL}}}[$__range]))"
            f" + sum by (model) (increase(neo_platform_cost_usd_total{{{USD_SEL}}}[$__range])))",
            "{{model}} USD",
            instant=True,
        ),
    )


def teams_row() -> Iterator[Builder[Any]]:
    # Teams and budgets come from the config (teams:, budgets:); see docs/budgets.md. Team
    # counters carry no model label: a stream counts for one team, whatever its model.
    yield dash.Row("Teams and budgets (config teams: and budgets:; no model label)")
    yield series_panel(
        "Credit spend rate by team",
        "Credits per hour, by the team of each stream's creator (unassigned: no team's "
        "address, or no email).",
        CREDITS_PER_HOUR,
        query(
            f"sum by (team) (rate(neo_team_credits_total{{{ACC}}}[$__rate_interval])) * 3600",
            "{{team}}",
        ),
        stacked=True,
    )
    yield series_panel(
        "USD spend rate by team (BYOK)",
        "LLM cost paid to your provider plus Neo's platform fee, per hour, by team.",
        USD,
        query(
            f"sum by (team) (rate(neo_team_llm_cost_usd_total{{{ACC}}}[$__rate_interval])"
            f" + rate(neo_team_platform_cost_usd_total{{{ACC}}}[$__rate_interval])) * 3600",
            "{{team}}",
        ),
        stacked=True,
    )
    yield series_panel(
        "Budget burn-down",
        "Each budget's spend in its current period (back to 0 when a period starts), the "
        "forecast for the period's end (spend so far plus the last 6 hours' pace times the "
        "time left) and the limit, in the budget's unit (credits or USD).",
        "none",
        query(f"max by (budget, unit) (neo_budget_spent{{{ACC}}})", "{{budget}} spent ({{unit}})"),
        query(
            f"max by (budget, unit) (account_budget:neo_budget_spent:forecast{{{ACC}}})",
            "{{budget}} forecast ({{unit}})",
        ),
        query(f"max by (budget, unit) (neo_budget_limit{{{ACC}}})", "{{budget}} limit ({{unit}})"),
        w=24,
    )
    yield bars_panel(
        "Budgets spent ratio",
        "Each budget's spend in its current period as a share of its limit.",
        "percentunit",
        query(
            f"sort_desc(max by (budget) (neo_budget_spent{{{ACC}}} / neo_budget_limit{{{ACC}}}))",
            "{{budget}}",
            instant=True,
        ),
        w=8,
    )
    yield bars_panel(
        "Credits month to date by team",
        "Credits since the 1st of the month (UTC), by team.",
        "none",
        query(
            f"sort_desc(sum by (team) (increase(neo_team_credits_total{{{ACC}}}[$__range])))",
            "{{team}}",
            instant=True,
        ),
        w=8,
        time_from="now/M",
    )
    yield bars_panel(
        "USD month to date by team (BYOK)",
        "LLM cost plus platform fee since the 1st of the month (UTC), by team.",
        USD,
        query(
            f"sort_desc(sum by (team) (increase(neo_team_llm_cost_usd_total{{{ACC}}}[$__range])"
            f" + increase(neo_team_platform_cost_usd_total{{{ACC}}}[$__range])))",
            "{{team}}",
            instant=True,
        ),
        w=8,
        time_from="now/M",
    )


def streams_row() -> Iterator[Builder[Any]]:
    yield dash.Row("Streams")
    yield series_panel(
        "Streams by status",
        "Streams that ended, per hour, by status.",
        "suffix: streams/h",
        query(
            f"sum by (status) (rate(neo_streams_total{{{SEL}}}[$__rate_interval])) * 3600",
            "{{status}}",
        ),
        stacked=True,
    )
    yield series_panel(
        "Failed share",
        "Share of streams that failed: any status but completed and aborted (error, failed, "
        "blocked, and statuses Neo adds later).",
        "percentunit",
        query(
            f"sum(rate(neo_streams_total{{{SEL}, {FAILED}}}[$__rate_interval]))"
            f" / sum(rate(neo_streams_total{{{SEL}}}[$__rate_interval]))",
            "failed share",
        ),
    )
    yield series_panel(
        "Mean step latency",
        "Mean latency of one agent step, per model: step latency summed over steps divided "
        "by the steps (streams without an average step latency are left out).",
        "s",
        query(
            f"sum by (model) (rate(neo_step_latency_seconds_total{{{SEL}}}[$__rate_interval]))"
            f" / sum by (model) (rate(neo_step_latency_steps_total{{{SEL}}}[$__rate_interval]))",
            "{{model}}",
        ),
    )
    for title, metric, what in (
        ("Stream duration", "neo_stream_duration_seconds", "Execution time of each stream"),
        (
            "Step latency",
            "neo_stream_step_latency_seconds",
            "Each stream's own average step latency (an average of averages)",
        ),
    ):
        yield series_panel(
            f"{title} percentiles",
            f"{what}: p50, p90 and p99 over all selected models.",
            "s",
            *(
                query(
                    f"histogram_quantile({q}, sum by (le) "
                    f"(rate({metric}_bucket{{{SEL}}}[$__rate_interval])))",
                    f"p{round(q * 100)}",
                )
                for q in (0.5, 0.9, 0.99)
            ),
        )


def tools_row() -> Iterator[Builder[Any]]:
    yield dash.Row(f"Tools and agents (top {TOP_N}; these have no model label)")
    yield bars_panel(
        f"Tool calls in range, top {TOP_N}",
        "Tool calls per tool in the range.",
        "none",
        query(
            f"topk({TOP_N}, sum by (tool) "
            f"(increase(neo_tool_calls_by_tool_total{{{ACC}}}[$__range])))",
            "{{tool}}",
            instant=True,
        ),
        w=8,
    )
    yield series_panel(
        f"Tool time by tool, top {TOP_N}",
        "Seconds of tool execution per second of wall time, per tool.",
        "s",
        query(
            f"topk({TOP_N}, sum by (tool) "
            f"(rate(neo_tool_time_by_tool_seconds_total{{{ACC}}}[$__rate_interval])))",
            "{{tool}}",
        ),
        w=8,
    )
    yield series_panel(
        f"Tool call p95 latency, top {TOP_N}",
        "95th percentile duration of single tool calls, per tool (slowest first).",
        "s",
        query(
            f"topk({TOP_N}, histogram_quantile(0.95, sum by (le, tool) "
            f"(rate(neo_tool_call_duration_seconds_bucket{{{ACC}}}[$__rate_interval]))))",
            "{{tool}}",
        ),
        w=8,
    )
    yield bars_panel(
        f"Agent triggers in range, top {TOP_N}",
        "Agent triggers per agent in the range.",
        "none",
        query(
            f"topk({TOP_N}, sum by (agent) "
            f"(increase(neo_agent_triggers_by_agent_total{{{ACC}}}[$__range])))",
            "{{agent}}",
            instant=True,
        ),
    )
    yield series_panel(
        "Tool calls and agent triggers",
        "Per hour, over the selected accounts and models.",
        "suffix: /h",
        query(f"sum(rate(neo_tool_calls_total{{{SEL}}}[$__rate_interval])) * 3600", "tool calls"),
        query(
            f"sum(rate(neo_agent_triggers_total{{{SEL}}}[$__rate_interval])) * 3600",
            "agent triggers",
        ),
        query(f"sum(rate(neo_steps_total{{{SEL}}}[$__rate_interval])) * 3600", "steps"),
    )


def window_row() -> Iterator[Builder[Any]]:
    yield dash.Row("Window gauges (the exporter's polling.window back from now)")
    yield stat_panel(
        "Window length",
        "The configured polling.window these gauges cover.",
        "dtdurations",
        query("max(neo_exporter_window_seconds)", "window", instant=True),
        w=4,
        decimals=None,
    )
    yield stat_panel(
        "Credits in window",
        "Credits of the tasks created within the window (from /usage/tasks).",
        "none",
        query(f"sum(neo_window_credits{{{ACC}}})", "credits", instant=True),
        w=4,
    )
    yield stat_panel(
        "USD in window",
        "LLM cost and platform fee of the tasks created within the window.",
        USD,
        query(f"sum(neo_window_llm_cost_usd{{{ACC}}})", "LLM cost", instant=True),
        query(f"sum(neo_window_platform_cost_usd{{{ACC}}})", "Platform fee", instant=True),
        w=4,
    )
    yield stat_panel(
        "Streams in window",
        "Counted streams created within the window, by status.",
        "none",
        query(f"sum by (status) (neo_window_streams{{{ACC}}})", "{{status}}", instant=True),
        decimals=0,
    )
    yield stat_panel(
        "Tasks in window",
        "Tasks created within the window, by status (from /usage/tasks).",
        "none",
        query(f"sum by (status) (neo_window_tasks{{{ACC}}})", "{{status}}", instant=True),
        decimals=0,
    )


def health_panels() -> Iterator[Builder[Any]]:
    """The exporter's health, shared by both dashboards."""
    yield stat_panel(
        "Neo API up",
        "1 if the last read of the endpoint succeeded.",
        "none",
        query(
            f"min by (account, endpoint) (neo_up{{{ACC}}})",
            "{{account}} {{endpoint}}",
            instant=True,
        ),
        decimals=None,
    ).mappings(up_mapping())
    yield stat_panel(
        "Last success age",
        "Seconds since the last successful read, per endpoint.",
        "s",
        query(
            "time() - max by (account, endpoint) "
            f"(neo_exporter_last_success_timestamp_seconds{{{ACC}}})",
            "{{account}} {{endpoint}}",
            instant=True,
        ),
        decimals=0,
    )
    yield series_panel(
        "API responses by code",
        "Requests to the Neo API per second by HTTP status; anything but 200 is an error "
        "(timeout and connection_error when no status came back).",
        "reqps",
        query(
            f"sum by (code) (rate(neo_exporter_api_requests_total{{{ACC}}}[$__rate_interval]))",
            "{{code}}",
        ),
        w=6,
    )
    yield series_panel(
        "Poll duration",
        "Wall time of the last successful streams read.",
        "s",
        query(
            f"max by (account) (neo_exporter_last_poll_duration_seconds{{{ACC}}})",
            "{{account}}",
        ),
        w=6,
    )


def base_dashboard(title: str, uid: str, description: str, since: str) -> dash.Dashboard:
    """What both dashboards share: tags, UTC, refresh, and the datasource and account variables."""
    return (
        dash.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["neo", "neo-exporter"])
        .timezone("utc")
        .time(since, "now")
        .refresh("1m")
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .with_variable(datasource_variable())
        .with_variable(label_variable("account", "Account", "label_values(neo_up, account)"))
    )


def spend_overview() -> dash.Dashboard:
    builder = (
        base_dashboard(
            "Neo spend overview",
            "neo-spend-overview",
            "Spend, streams, tools and agents from neo-exporter, and its health.",
            "now-24h",
        )
        .with_variable(
            label_variable(
                "model",
                "Model",
                'label_values(neo_credits_total{account=~"$account"}, model)',
            )
        )
        .link(
            dash.DashboardLink("Exporter health")
            .type(model.DashboardLinkType.DASHBOARDS)
            .tags(["neo-exporter"])
            .as_dropdown(False)
            .include_vars(True)
            .keep_time(True)
        )
    )
    sections = (
        spend_row(),
        recent_row(),
        balance_row(),
        spend_over_time_row(),
        teams_row(),
        streams_row(),
        tools_row(),
        window_row(),
        [dash.Row("Exporter health"), *health_panels()],
    )
    return add_all(builder, sections)


# --- Exporter health ------------------------------------------------------------------------


def exporter_health() -> dash.Dashboard:
    builder = base_dashboard(
        "Neo exporter health",
        "neo-exporter-health",
        "Is neo-exporter reading the Neo API, how fresh is its data, and its state.",
        "now-6h",
    )
    freshness = [
        dash.Row("Reads and freshness"),
        *health_panels(),
        series_panel(
            "Data lag",
            "How far behind the data is: now minus the end of the last complete streams "
            "read. Alert NeoExporterDataStale fires above its threshold.",
            "s",
            query(
                f"time() - max by (account) (neo_exporter_watermark_timestamp_seconds{{{ACC}}})",
                "{{account}}",
            ),
            w=8,
        ),
        series_panel(
            "Polls by kind and result",
            "Reads per second by kind (incremental, reconcile, tasks) and result.",
            "reqps",
            query(
                "sum by (kind, result) "
                f"(rate(neo_exporter_polls_total{{{ACC}}}[$__rate_interval]))",
                "{{kind}} {{result}}",
            ),
            w=8,
        ),
        series_panel(
            "Retries by reason",
            "Retried requests per second by reason (429, 5xx, timeout, connection_error, "
            "invalid_body).",
            "reqps",
            query(
                "sum by (endpoint, reason) "
                f"(rate(neo_exporter_api_retries_total{{{ACC}}}[$__rate_interval]))",
                "{{endpoint}} {{reason}}",
            ),
            w=8,
        ),
    ]
    data = [
        dash.Row("Data quality and state"),
        series_panel(
            "Revised by Neo",
            "Values of counted streams that Neo revised, per interval, by field: up (added), "
            "down (kept: counters cannot go down), changed (a label: the first is kept).",
            "none",
            query(
                "sum by (field, direction) "
                f"(increase(neo_exporter_revisions_total{{{ACC}}}[$__rate_interval]))",
                "{{field}} {{direction}}",
            ),
            w=8,
        ),
        series_panel(
            "Skipped rows and repaired fields",
            "Rows not counted (no usable id or time: alert NeoExporterRowsSkipped) and fields "
            "of counted rows read as absent or unknown, per interval.",
            "none",
            query(
                "sum by (endpoint, reason) "
                f"(increase(neo_exporter_skipped_records_total{{{ACC}}}[$__rate_interval]))",
                "skipped {{endpoint}} {{reason}}",
            ),
            query(
                "sum by (endpoint, field) "
                f"(increase(neo_exporter_repaired_fields_total{{{ACC}}}[$__rate_interval]))",
                "repaired {{endpoint}} {{field}}",
            ),
            w=8,
        ),
        series_panel(
            "Incomplete reads",
            "Rows the last read of each listing missed against Neo's own total (0 when "
            "complete), and reads that ended incomplete per interval.",
            "none",
            query(
                f"max by (account, endpoint) (neo_exporter_read_missing_rows{{{ACC}}})",
                "missing rows {{account}} {{endpoint}}",
            ),
            query(
                "sum by (account, endpoint) "
                f"(increase(neo_exporter_incomplete_reads_total{{{ACC}}}[$__rate_interval]))",
                "incomplete reads {{account}} {{endpoint}}",
            ),
            w=8,
        ),
        series_panel(
            "State size",
            "Size of the SQLite state, and the stream ids it keeps for deduplication.",
            "bytes",
            query("max by (instance) (neo_exporter_state_size_bytes)", "{{instance}} bytes"),
            query(
                f"sum by (account) (neo_exporter_seen_streams{{{ACC}}})",
                "{{account}} seen streams",
            ),
            w=24,
        ).override_by_regexp(
            ".*seen streams", [model.DynamicConfigValue(id_val="unit", value="none")]
        ),
        stat_panel(
            "Build",
            "Exporter and Python versions of each running exporter.",
            "none",
            query(
                "max by (instance, version, python_version) (neo_exporter_build_info)",
                "{{instance}} {{version}} (Python {{python_version}})",
                instant=True,
            ),
            w=24,
            h=3,
            decimals=None,
        ),
    ]
    audit = [
        dash.Row("Self-audit against Neo's own totals"),
        stat_panel(
            "Streams missing",
            "Neo's count of streams created in the last audited period (the window less the "
            "lookback) minus the exporter's. 0 is exact; alert NeoExporterAuditDrift.",
            "none",
            query(
                f"max by (account) (neo_exporter_audit_streams_missing{{{ACC}}})",
                "{{account}}",
                instant=True,
            ),
            decimals=0,
        ),
        stat_panel(
            "Credits drift",
            "Neo's credits for the audited period (usage summary) minus the exporter's.",
            "none",
            query(
                f"max by (account) (neo_exporter_audit_credits_drift{{{ACC}}})",
                "{{account}}",
                instant=True,
            ),
        ),
        stat_panel(
            "Credits drift ratio",
            "Credits drift as a share of Neo's credits for the period; the alert's tolerance "
            "is 0.5%.",
            "percentunit",
            query(
                f"max by (account) (neo_exporter_audit_credits_drift{{{ACC}}})"
                f" / max by (account) (neo_exporter_audit_neo_credits{{{ACC}}} > 0)",
                "{{account}}",
                instant=True,
            ),
            decimals=3,
        ),
        stat_panel(
            "Last audit age",
            "Seconds since the last self-audit (audit.interval), and 1 while a backlog is "
            "being read (first start, after downtime or an API outage).",
            "s",
            query(
                f"time() - max by (account) (neo_exporter_audit_last_timestamp_seconds{{{ACC}}})",
                "{{account}} audit age",
                instant=True,
            ),
            query(
                f"max by (account) (neo_exporter_catching_up{{{ACC}}})",
                "{{account}} catching up",
                instant=True,
            ),
            decimals=0,
        ).override_by_regexp(
            ".*catching up", [model.DynamicConfigValue(id_val="unit", value="none")]
        ),
        series_panel(
            "Audit over time",
            "Streams missing and credits drift at each audit.",
            "none",
            query(
                f"max by (account) (neo_exporter_audit_streams_missing{{{ACC}}})",
                "{{account}} streams missing",
            ),
            query(
                f"max by (account) (neo_exporter_audit_credits_drift{{{ACC}}})",
                "{{account}} credits drift",
            ),
            w=24,
        ),
    ]
    return add_all(builder, (freshness, data, audit))


def add_all(builder: dash.Dashboard, sections: Any) -> dash.Dashboard:
    for section in sections:
        for item in section:
            builder = (
                builder.with_row(item) if isinstance(item, dash.Row) else builder.with_panel(item)
            )
    return builder


DASHBOARDS = {
    "neo-spend-overview.json": spend_overview,
    "neo-exporter-health.json": exporter_health,
}


def render(builder: dash.Dashboard) -> str:
    data: dict[str, Any] = json.loads(json.dumps(builder.build(), cls=JSONEncoder))
    # Stable ids in layout order: Grafana links and alerts refer to panels by id.
    for number, panel in enumerate(data["panels"], start=1):
        panel["id"] = number
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a file is out of date")
    args = parser.parse_args(argv)
    stale = []
    for name, build in DASHBOARDS.items():
        path = OUT / name
        text = render(build())
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            OUT.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        print(
            f"out of date: {', '.join(stale)}; run: python grafana/generate.py",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
