"""Dashboards and rules against a real Prometheus scraping the real exporter.

One fake Neo API, one exporter and one Prometheus (1 s scrape and rule evaluation, the
shipped rule files loaded as they are) serve every test of this module. Prometheus scrapes
from the exporter's first second, as after a fresh install against an account with a week of
history: no spend alert may fire while that week is read. Every query of every dashboard
panel and every rule must return data, so renaming a metric fails here; the spike alert must
go pending once the fake API injects expensive streams; the fake holds rows it never lists,
so the self-audit's alert must go pending too; and a screenshot of the spend rate during the
spike is saved under artifacts/ for a person to look at.
"""

from __future__ import annotations

import re
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import yaml

from tests.processes import (
    ROOT,
    Proc,
    fake_api,
    free_port,
    prometheus_graph_legend,
    require_tool,
    screenshot,
    start_exporter,
    wait_until,
)
from tests.processes import prometheus_query as instant
from tests.repo_files import RULE_FILES, dashboard_exprs, rule_groups, rules

pytestmark = pytest.mark.e2e

ACCOUNT = "acme"
ARTIFACTS = ROOT / "artifacts" / "e2e"
SPIKE_ALERT = "NeoCreditSpendSpike"
SPEND_RATE = "sum by (account) (rate(neo_credits_total[15s])) * 3600"
# What Grafana would put in place of its variables: the real account, the "All" regex for
# models, and windows that fit in the few seconds Prometheus has been running.
VARIABLES = {
    "$account": ACCOUNT,
    "$model": ".*",
    "$__rate_interval": "15s",
    "$__interval": "2s",
    "$__range": "5m",
}
# A week of history and live traffic at the same pace (60 streams an hour), so the recent
# rate stays close to the window's average until the spike; 2% of the streams are in Neo's
# books but never in its listings, for the self-audit to find.
FAKE_ARGS = (
    "--seed",
    "3",
    "--streams",
    "10080",
    "--history",
    "7d",
    "--live-rate",
    "60",
    "--hide",
    "0.02",
)
SPEND_ALERTS = ("NeoCreditSpendSpike", "NeoUsdSpendSpike", "NeoHourlyCreditSpendHigh",
                "NeoHourlyUsdSpendHigh")  # fmt: skip
AUDIT_ALERT = "NeoExporterAuditDrift"
# Recording rules with data only in the hour after the exporter read a backlog (a restart
# after downtime): none happens here; promtool's unit tests cover them.
AFTER_A_CATCH_UP = (
    "account:neo_exporter_last_catch_up:max1h",
    "account:neo_exporter_caught_up:within20m",
    "account:neo_exporter_caught_up:within65m",
)
SPIKE = {"count": 60, "multiplier": 50}
FAULTS = {"status": 503, "count": 3}


@dataclass
class Stack:
    fake_url: str
    exporter_url: str
    prometheus_url: str
    exporter: Proc


def substitute(expr: str) -> str:
    for name, value in sorted(VARIABLES.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace(name, value)
    assert "$" not in expr, f"unsubstituted variable in {expr}"
    return expr


def comparisons_as_bool(expr: str) -> str:
    """`a > b` filters series away unless the alert holds; `a > bool b` keeps them as 0/1.

    Only comparisons outside label matchers and strings are changed, so the result has data
    exactly when every operand has data, whether or not the alert would fire.
    """
    out: list[str] = []
    depth, quote, i = 0, "", 0
    while i < len(expr):
        char = expr[i]
        if quote:
            quote = "" if char == quote and expr[i - 1] != "\\" else quote
        elif char in "\"'":
            quote = char
        elif char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
        elif depth == 0 and (match := re.match(r"==|!=|>=|<=|>|<", expr[i:])):
            op = match.group(0)
            out.append(op if re.match(r"\s*bool\b", expr[i + len(op) :]) else f"{op} bool")
            i += len(op)
            continue
        out.append(char)
        i += 1
    return "".join(out)


def alert_states(prometheus_url: str, name: str) -> list[str]:
    response = requests.get(f"{prometheus_url}/api/v1/alerts", timeout=5)
    return [
        a["state"] for a in response.json()["data"]["alerts"] if a["labels"]["alertname"] == name
    ]


def write_exporter_config(path: Path, fake_url: str, state: Path) -> Path:
    config = {
        "accounts": [{"name": ACCOUNT, "base_url": fake_url, "token": "fake-admin-token"}],
        "polling": {
            "interval": "1s",
            "lookback": "1m",
            "window": "7d",
            "reconcile_interval": "1h",
            "tasks_interval": "1s",
            "summary_interval": "1s",
            "user_interval": "1s",
            "credits_interval": "1s",
        },
        # Per-member spend is off by default; on here, so that its panel has data.
        "metrics": {"members": {"enabled": True}},
        "http": {"backoff_base": "50ms", "backoff_max": "200ms"},
        "audit": {"interval": "2s"},
        "state": {"path": str(state)},
        # The fake's people: alice is red, bob blue, the rest unassigned; one budget of the
        # account and one of a team, for the teams and budgets panels and rules.
        "teams": {"red": ["alice@example.com", "*@exämple.org"], "blue": ["bob@example.com"]},
        "budgets": [
            {"name": "acc-month", "account": ACCOUNT, "period": "month", "credits": 100000},
            {
                "name": "red-month",
                "account": ACCOUNT,
                "team": "red",
                "period": "month",
                "credits": 50,
            },
        ],
    }
    path.write_text(yaml.safe_dump(config))
    return path


def write_prometheus_config(path: Path, exporter_url: str) -> Path:
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(p) for p in RULE_FILES],
        "scrape_configs": [
            {
                "job_name": "neo-exporter",  # the name NeoExporterDown matches
                "static_configs": [{"targets": [exporter_url.removeprefix("http://")]}],
            }
        ],
    }
    path.write_text(yaml.safe_dump(config))
    return path


def exporter_ready(url: str) -> bool:
    text = requests.get(f"{url}/metrics", timeout=5).text
    return (
        f'neo_up{{account="{ACCOUNT}",endpoint="streams"}} 1.0' in text
        and f'neo_up{{account="{ACCOUNT}",endpoint="tasks"}} 1.0' in text
        and "neo_credits_total{" in text
        and "neo_window_credits{" in text
        and "neo_spending_cap_used_ratio{" in text
        and "neo_billing_available_credits{" in text
        and "neo_member_window_credits{" in text
        and "neo_top_task_credits{" in text
        and "neo_exporter_audit_credits_drift{" in text
    )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    prometheus = require_tool("prometheus")
    tmp = tmp_path_factory.mktemp("e2e-prometheus")
    with fake_api(*FAKE_ARGS, "--latency-ms", "0") as (_, fake_url):
        config = write_exporter_config(tmp / "exporter.yaml", fake_url, tmp / "state.db")
        log = (tmp / "prometheus.log").open("w")
        server: subprocess.Popen[bytes] | None = None
        exporter: Proc | None = None
        try:
            # A fresh install: Prometheus scrapes the exporter from its first second on,
            # while it reads the week of history.
            port = free_port()
            exporter_port = free_port()
            exporter_url = f"http://127.0.0.1:{exporter_port}"
            prometheus_config = write_prometheus_config(tmp / "prometheus.yml", exporter_url)
            server = subprocess.Popen(
                [
                    prometheus,
                    f"--config.file={prometheus_config}",
                    f"--storage.tsdb.path={tmp / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            prometheus_url = f"http://127.0.0.1:{port}"
            exporter, _ = start_exporter(
                "--config.file", str(config), "--web.listen-address", f"127.0.0.1:{exporter_port}"
            )
            wait_until(
                lambda: instant(prometheus_url, "neo_up"), 30, "the first scrape of the exporter"
            )
            wait_until(lambda: exporter_ready(exporter_url), 60, "the exporter's first reads")
            yield Stack(fake_url, exporter_url, prometheus_url, exporter)
        finally:
            if server is not None:
                server.terminate()
                server.wait(10)
            log.close()
            if exporter is not None:
                exporter.stop()


@pytest.fixture(scope="module")
def with_faults(stack: Stack) -> Stack:
    """Some API errors, so that the retry and error-code series exist as they would in life."""
    requests.post(f"{stack.fake_url}/_fake/faults", json=FAULTS, timeout=5).raise_for_status()
    wait_until(
        lambda: instant(stack.prometheus_url, "sum(neo_exporter_api_retries_total) > 0"),
        20,
        "retries to reach Prometheus",
    )
    return stack


@pytest.fixture(scope="module")
def spiked(stack: Stack) -> Stack:
    """The spike, injected once the rates have a few seconds of data and no alert is pending."""
    wait_until(
        lambda: (
            all(r["value"][1] != "NaN" for r in instant(stack.prometheus_url, SPEND_RATE))
            and instant(stack.prometheus_url, "account:neo_credits:rate_window")
        ),
        20,
        "a spend rate and its baseline",
    )
    time.sleep(3)  # a few more samples of the calm rate, for the screenshot
    assert alert_states(stack.prometheus_url, SPIKE_ALERT) == [], "fired before the spike"
    requests.post(f"{stack.fake_url}/_fake/spike", json=SPIKE, timeout=5).raise_for_status()
    return stack


def test_a_fresh_install_reading_a_week_of_history_fires_no_spend_alert(stack: Stack) -> None:
    # The counters appear once the week is read, at their full value: a rate sees no jump.
    # Ten more seconds of rule evaluations after that, no spend alert was ever pending.
    time.sleep(10)
    names = "|".join(SPEND_ALERTS)
    seen = instant(stack.prometheus_url, f'max_over_time(ALERTS{{alertname=~"{names}"}}[1h])')
    assert seen == [], f"spend alerts during the first reads: {seen}"
    # The week was read: the counters hold days of spend, scraped from the first second on.
    credits = instant(stack.prometheus_url, "sum(neo_credits_total)")
    assert float(credits[0]["value"][1]) > 100
    scrapes = instant(stack.prometheus_url, 'count_over_time(up{job="neo-exporter"}[1h])')
    assert float(scrapes[0]["value"][1]) >= 10


def test_spike_alert_goes_pending_when_the_fake_api_injects_a_spike(spiked: Stack) -> None:
    # The shipped rule, unchanged: it needs 5 minutes to fire, so in a short test the honest
    # claim is that its condition became true (pending, or firing).
    states = wait_until(
        lambda: alert_states(spiked.prometheus_url, SPIKE_ALERT), 30, f"{SPIKE_ALERT} pending"
    )
    assert set(states) <= {"pending", "firing"}
    ratio = instant(
        spiked.prometheus_url, "account:neo_credits:rate15m / account:neo_credits:rate_window"
    )
    assert float(ratio[0]["value"][1]) > 5


def test_every_dashboard_query_returns_data(with_faults: Stack) -> None:
    empty = []
    for dashboard, title, expr in dashboard_exprs():
        if not instant(with_faults.prometheus_url, substitute(expr)):
            empty.append(f"{dashboard} / {title}: {expr}")
    assert not empty, "queries without data:\n" + "\n".join(empty)


def test_every_recording_rule_returns_data_and_is_recorded(stack: Stack) -> None:
    empty = []
    for group in rule_groups():
        # A group evaluated every few minutes (the daily sums) may not have run yet in a
        # short test; its expressions must still return data, and promtool's unit tests
        # cover what it records.
        recorded_by_now = "interval" not in group
        for rule in group["rules"]:
            if "record" not in rule or rule["record"] in AFTER_A_CATCH_UP:
                continue
            if not instant(stack.prometheus_url, rule["expr"]):
                empty.append(f"expr of {rule['record']}")
            if recorded_by_now and not wait_for_series(stack.prometheus_url, rule["record"]):
                empty.append(f"series {rule['record']}")
    assert not empty, "\n".join(empty)


def wait_for_series(prometheus_url: str, name: str, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not instant(prometheus_url, name):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


def test_every_alert_expression_has_data_for_all_its_operands(stack: Stack) -> None:
    empty = []
    for rule in rules():
        if "alert" in rule and not instant(stack.prometheus_url, comparisons_as_bool(rule["expr"])):
            empty.append(f"{rule['alert']}: {comparisons_as_bool(rule['expr'])}")
    assert not empty, "\n".join(empty)


def test_the_audit_alert_goes_pending_when_neo_holds_rows_it_never_lists(stack: Stack) -> None:
    # 2% of the streams are never listed: the exporter counts what it can read, and its
    # audit says by how much that falls short of Neo's own totals.
    missing = instant(stack.prometheus_url, "neo_exporter_audit_streams_missing")
    neo = instant(stack.prometheus_url, "neo_exporter_audit_neo_streams")
    assert float(missing[0]["value"][1]) > 0.005 * float(neo[0]["value"][1])
    states = wait_until(
        lambda: alert_states(stack.prometheus_url, AUDIT_ALERT), 30, f"{AUDIT_ALERT} pending"
    )
    assert set(states) <= {"pending", "firing"}


def test_comparisons_as_bool_leaves_label_matchers_alone() -> None:
    expr = 'sum(x{a!="b", c=~"d"}) > 0 and on (a) y == bool 1 unless z <= scalar(w)'
    assert comparisons_as_bool(expr) == (
        'sum(x{a!="b", c=~"d"}) > bool 0 and on (a) y == bool 1 unless z <= bool scalar(w)'
    )


def test_screenshot_of_the_spend_rate_during_the_spike(spiked: Stack) -> None:
    chromium = require_tool("chromium")
    wait_until(
        lambda: alert_states(spiked.prometheus_url, SPIKE_ALERT), 30, "the spike in Prometheus"
    )
    time.sleep(2)  # a couple of samples after the jump
    query = urllib.parse.urlencode(
        {"g0.expr": SPEND_RATE, "g0.tab": "0", "g0.range_input": "1m", "g0.stacked": "0"}
    )
    dom = screenshot(
        chromium,
        f"{spiked.prometheus_url}/graph?{query}",
        ARTIFACTS / "spend-rate-spike.png",
        settle_ms=10_000,  # the page's own queries finish before the picture is taken
    )
    # The page drew the account's spend rate, the one series the query gives, and no error.
    assert prometheus_graph_legend(dom) == [{"account": ACCOUNT}]
