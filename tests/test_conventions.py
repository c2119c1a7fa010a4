"""What every exporter serves: the process's own metrics, a movable telemetry path, every
series the shipped rules and dashboards read, and `_created` samples only when wanted.

Real processes over loopback (the fake API and the exporter), as a user would run them.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import requests

from exporter.app import build
from exporter.config import config_from_mapping
from tests.conftest import ManualClock, parse_exposition, scrape
from tests.processes import ENV, fake_api, start_exporter, wait_until, write_config
from tests.repo_files import dashboard_exprs, metric_names, rules

PROCESS_METRICS = (
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_open_fds",
    "process_start_time_seconds",
)


def names_in(text: str) -> set[str]:
    return {name for name, _ in parse_exposition(text)}


@pytest.mark.e2e
def test_the_process_metrics_are_served_on_the_telemetry_path_the_flag_names(
    tmp_path: Path,
) -> None:
    with fake_api() as (_, api):
        config = write_config(tmp_path / "config.yaml", api, tmp_path / "state.db")
        proc, url = start_exporter(
            "--config.file", str(config), "--web.telemetry-path", "/neo/metrics", env=ENV
        )
        try:
            served = requests.get(f"{url}/neo/metrics", timeout=10)
            moved = requests.get(f"{url}/metrics", timeout=10)
            page = requests.get(f"{url}/", timeout=10).text
        finally:
            proc.stop()
    assert served.status_code == 200
    assert set(PROCESS_METRICS) <= names_in(served.text)
    assert "python_info" in names_in(served.text)
    assert moved.status_code == 404
    assert "/neo/metrics" in moved.text
    assert '<a href="/neo/metrics">Metrics</a>' in page


# What a rule or panel reads that a fresh exporter's first scrape cannot serve yet, and why.
# Everything else is there from the first scrape: timestamps at 0 (never), and the series
# whose labels and values the config gives (a budget's limit and period).
HELD_UNTIL_THE_FIRST_READ = {
    # Counted from the rows, published once the whole window is read (the quiet first
    # start): a series that appeared at 0 and then jumped would read as a burst of spend.
    "counted": {
        "neo_credits_total", "neo_llm_cost_usd_total", "neo_platform_cost_usd_total",
        "neo_streams_total", "neo_steps_total", "neo_agent_triggers_total",
        "neo_agent_triggers_by_agent_total", "neo_tool_calls_total",
        "neo_tool_calls_by_tool_total", "neo_tool_time_by_tool_seconds_total",
        "neo_step_latency_seconds_total", "neo_step_latency_steps_total",
        "neo_stream_duration_seconds_bucket", "neo_stream_step_latency_seconds_bucket",
        "neo_tool_call_duration_seconds_bucket", "neo_team_credits_total",
        "neo_team_llm_cost_usd_total", "neo_team_platform_cost_usd_total",
        "neo_exporter_revisions_total", "neo_budget_spent",
        # A culprit is a task, model or member that spent: none before a stream is counted.
        "neo_recent_top_task_credits", "neo_recent_top_model_credits",
        "neo_recent_top_member_credits",
    },
    # Neo's own figures: unknown until read, and a 0 would page (credits running out).
    "read from Neo": {
        "neo_account_available_credits", "neo_account_credits_expiry_timestamp_seconds",
        "neo_account_post_reset_credits", "neo_billing_available_credits",
        "neo_billing_credits_expiry_timestamp_seconds", "neo_billing_used_credits",
        "neo_spending_cap_remaining_usd", "neo_spending_cap_used_ratio",
        "neo_window_credits", "neo_window_llm_cost_usd", "neo_window_platform_cost_usd",
        "neo_window_streams", "neo_window_tasks", "neo_member_window_credits",
        "neo_top_task_credits",
    },
    # Facts about a read that has not happened: its HTTP status code, its duration, the
    # rows it missed, where it ended (a 0 watermark would make NeoExporterDataStale fire
    # during every long first read) and the audit of a period read whole.
    "measured by a read": {
        "neo_exporter_api_requests_total", "neo_exporter_last_poll_duration_seconds",
        "neo_exporter_read_missing_rows", "neo_exporter_watermark_timestamp_seconds",
        "neo_exporter_audit_credits_drift", "neo_exporter_audit_last_timestamp_seconds",
        "neo_exporter_audit_neo_credits", "neo_exporter_audit_neo_streams",
        "neo_exporter_audit_streams_missing",
    },
}  # fmt: skip


@pytest.mark.e2e
def test_every_metric_a_shipped_rule_or_panel_reads_is_served(tmp_path: Path) -> None:
    read = {name for rule in rules() for name in metric_names(rule["expr"])}
    read |= {name for _, _, expr in dashboard_exprs() for name in metric_names(expr)}
    assert "neo_exporter_last_catch_up_timestamp_seconds" in read  # the parse finds them
    held = set().union(*HELD_UNTIL_THE_FIRST_READ.values())
    # Slow enough that the first read cannot end before the first scrape.
    with fake_api("--latency-ms", "300") as (_, api):
        config = write_config(
            tmp_path / "config.yaml",
            api,
            tmp_path / "state.db",
            metrics={"members": {"enabled": True}},
            # The budget rules read the budget gauges: a config with a budget serves them.
            teams={"red": ["alice@example.com"]},
            budgets=[{"name": "acme-month", "account": "acme", "period": "month",
                      "credits": 1000}],
        )  # fmt: skip
        proc, url = start_exporter("--config.file", str(config), env=ENV)
        try:
            first = names_in(requests.get(f"{url}/metrics", timeout=10).text)
            wait_until(
                lambda: requests.get(f"{url}/-/ready", timeout=5).status_code == 200,
                60,
                "ready",
            )
            ready = names_in(requests.get(f"{url}/metrics", timeout=10).text)
        finally:
            proc.stop()
    # Timestamps are there before anything happened: 0 means never.
    assert {
        "neo_exporter_last_catch_up_timestamp_seconds",
        "neo_exporter_last_success_timestamp_seconds",
        "neo_budget_limit",
        "neo_budget_period_start_timestamp_seconds",
    } <= first
    # The first scrape lacks exactly what the list above says it lacks, and why.
    assert sorted(read - first) == sorted(held & read)
    assert held <= read  # no stale entry in the list
    assert sorted(read - ready) == []


@pytest.mark.parametrize("created", [True, False])
def test_created_series_serves_or_drops_the_created_samples(created: bool) -> None:
    config = config_from_mapping(
        {
            "accounts": [{"name": "acme", "base_url": "http://127.0.0.1:9", "token": "t"}],
            "metrics": {"created_series": created},
            "state": {"path": ":memory:"},
        },
        {},
    )
    stop = threading.Event()
    exporter = build(config, stop, ManualClock(1_795_000_000.0))
    try:
        served = {name for name, _ in scrape(exporter.registry)}
    finally:
        exporter.close()
    created_names = {name for name in served if name.endswith("_created")}
    expected = {"neo_exporter_polls_created", "neo_exporter_skipped_records_created"}
    if created:
        assert expected <= created_names
    else:
        assert created_names == set()
    assert "neo_exporter_polls_total" in served
    assert "process_cpu_seconds_total" in served
