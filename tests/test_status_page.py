"""The landing page's logic on hand-made snapshots: the headline, the cells, what it shows.

The same page on a real exporter, with screenshots, is in tests/test_operations.py.
"""

from __future__ import annotations

import dataclasses
import html
import re
import time
from dataclasses import replace

from prometheus_client import CollectorRegistry, generate_latest

from exporter import catalogue
from exporter.config import AlertThresholds, Config, config_from_mapping
from exporter.counting import CounterValue, Counts, TopTask, TopTasks
from exporter.instrumentation import ExporterMetrics
from exporter.models import CreditBalance, SpendingCap, parse_task
from exporter.snapshot import (
    AccountInfo,
    AuditResult,
    BudgetValue,
    EndpointHealth,
    SnapshotStore,
)
from exporter.state import StateHealth
from exporter.status_page import (
    Cell,
    PageContext,
    forecast,
    headline,
    landing_page,
    spend_chart,
    status_rows,
)
from tests.conftest import parse_exposition, sample

NOW = 1_800_000_000.0
STARTED = NOW - 3600
TOKEN = "tok-page-secret-77aa"
UP = EndpointHealth(True, NOW - 10, None)


def store(*names: str) -> SnapshotStore:
    made = SnapshotStore(names, 86400.0)
    for name in names:
        made.update(
            name,
            lambda a: replace(
                a,
                first_poll_done=True,
                endpoints={"streams": UP, "tasks": UP},
                info=AccountInfo(endpoints={e: UP for e in ("summary", "user", "credits")}),
            ),
        )
    return made


def config(*names: str, **account: object) -> Config:
    return config_from_mapping(
        {
            "accounts": [
                {"name": n, "base_url": f"https://{n}.example", "token": TOKEN, **account}
                for n in names
            ],
            "state": {"path": "/var/lib/neo/state.db"},
        },
        {},
    )


def test_every_read_up_is_healthy() -> None:
    level, text = headline(store("a", "b").get(), None, NOW, STARTED)
    assert (level, text) == ("healthy", "every read of 2 account(s) succeeded at its last try")


def test_a_failing_read_is_degraded_naming_the_account_the_endpoint_and_since_when() -> None:
    snapshots = store("a", "b")
    failing = EndpointHealth(False, NOW - 600, "tasks: gave up after 6 attempts (last: ...)")
    snapshots.update("b", lambda a: replace(a, endpoints={"streams": UP, "tasks": failing}))
    level, text = headline(snapshots.get(), None, NOW, STARTED)
    assert level == "degraded"
    assert text == (
        "1 read(s) of 1 of 2 account(s) failing: b: tasks (since 2027-01-15 07:50:00 UTC)"
    )


def test_every_streams_read_failing_is_down_and_a_read_that_never_worked_dates_from_the_start() -> (
    None
):
    snapshots = store("a")
    snapshots.update(
        "a",
        lambda a: replace(a, endpoints={"streams": EndpointHealth(False, None, "x"), "tasks": UP}),
    )
    level, text = headline(snapshots.get(), None, NOW, STARTED)
    assert level == "down"
    assert text.startswith("no account's usage can be read: a: streams (since 2027-01-15 07:00")


def test_every_read_failing_on_a_first_start_says_nothing_is_published_yet() -> None:
    down = {"streams": EndpointHealth(False, None, "x"), "tasks": UP}
    snapshots = store("a", "b")
    snapshots.update("a", lambda a: replace(a, endpoints=down))
    snapshots.update("b", lambda a: replace(a, endpoints=down))
    level, text = headline(snapshots.get(), None, NOW, STARTED)
    assert level == "down" and "last committed values" not in text
    assert text.endswith("Nothing is published yet: no account's counters were ever read")
    # Once an account's counters were published, they are what is served.
    counts = Counts({("neo_streams_total", ("m",)): CounterValue(1.0, NOW - 60)}, {})
    snapshots.update("a", lambda a: replace(a, counts=counts))
    level, text = headline(snapshots.get(), None, NOW, STARTED)
    assert text.endswith(
        "The last committed values of a are still served; nothing is published yet for the others"
    )


def test_a_state_that_cannot_be_written_is_down_whatever_the_reads_say() -> None:
    state = StateHealth("/s.db", False, "disk I/O error", NOW - 60)
    level, text = headline(store("a").get(), state, NOW, STARTED)
    assert level == "down"
    assert text.startswith("the state file cannot be written since 2027-01-15 07:59:00 UTC")
    assert "disk I/O error" in text


def test_an_endpoint_the_token_may_not_read_is_not_a_failure() -> None:
    snapshots = store("a")
    forbidden = EndpointHealth(
        False, None, "unavailable (HTTP 403: the token is not a team admin's)"
    )
    info = AccountInfo(
        endpoints={"summary": forbidden, "user": UP, "credits": UP},
        unavailable_until={"summary": NOW + 1800},
    )
    snapshots.update("a", lambda a: replace(a, info=info))
    assert headline(snapshots.get(), None, NOW, STARTED)[0] == "healthy"
    page = landing_page(snapshots.get(), NOW)
    assert (
        '<td class="unavailable">UNAVAILABLE (HTTP 403: the token is not a team admin&#x27;s), '
        "next try in 30m</td>"
    ) in page


def test_before_the_first_read_ends_it_is_starting() -> None:
    snapshots = SnapshotStore(("a",), 60.0)
    assert headline(snapshots.get(), None, NOW, STARTED)[0] == "starting"


def test_the_page_shows_spend_top_tasks_state_and_configuration_without_a_secret() -> None:
    snapshots = store("acme")
    cap = SpendingCap(limit=500.0, used=450.0, remaining=50.0)
    snapshots.update(
        "acme",
        lambda a: replace(
            a,
            info=AccountInfo(
                cap=cap,
                credits=CreditBalance(available=1234.5, issued=None, used=None, expires_at=None),
                endpoints={e: UP for e in ("summary", "user", "credits")},
            ),
            top_tasks=(TopTask(1, "t-1", "Recon of app.example.com", "", 41.5),),
            watermark=NOW - 30,
        ),
    )
    context = PageContext(
        config(
            "acme", alert_thresholds={"spending_cap_warning_ratio": 0.5, "hourly_credits": 5000}
        ),
        lambda: StateHealth("/var/lib/neo/state.db"),
        STARTED,
    )
    page = landing_page(snapshots.get(), NOW, context)
    assert '<meta http-equiv="refresh" content="30">' in page
    # 90 % is above this account's warning threshold (50 %), below the critical one (95 %).
    assert '<td class="warn">90%: 450.00 of 500.00 USD, 50.00 left</td>' in page
    assert "<td>1,234.5 credits</td>" in page  # each number with its unit
    assert "#1 41.5 credits: Recon of app.example.com (task t-1)" in page
    assert "https://acme.example" in page and "/var/lib/neo/state.db" in page
    assert "hourly_credits 5000, spending_cap_warning_ratio 0.5" in page
    assert TOKEN not in page
    assert "docs/configuration.md" in page and "/-/ready" in page


def test_status_rows_are_where_per_account_lines_are_added() -> None:
    snapshots = store("a")
    snapshots.update(
        "a", lambda a: replace(a, watermark=NOW - 90, last_poll_duration=1.25, seen_streams=7)
    )
    rows = {label: cell.text for label, cell in status_rows(snapshots.account("a"), NOW)}
    assert rows == {
        "current read": "none (idle)",
        "data complete up to": "2027-01-15 07:58:30 UTC (1m30s ago)",
        "last streams read took": "1.25s",
        "stream ids held": "7",
        "self-audit": "not run yet (audit.interval; after the first read of the window)",
    }
    page = landing_page(snapshots.get(), NOW)
    for label, text in rows.items():
        assert f"<tr><th>{label}</th><td>{html.escape(text)}</td></tr>" in page


def test_catching_up_short_reads_and_the_audit_show_in_the_status_rows() -> None:
    snapshots = store("a")
    exact = AuditResult(NOW - 60, NOW - 86400.5, NOW - 3600.5, 120, 120, 15.5, 15.5)
    snapshots.update(
        "a",
        lambda a: replace(
            a, catching_up=True, missing_rows={"streams": 0, "tasks": 3}, audit=exact
        ),
    )
    cells = dict(status_rows(snapshots.account("a"), NOW))
    assert cells["catching up"].level == "pending"
    assert cells["last reads"] == Cell(
        "incomplete against the API's own total: tasks 3 rows short", "warn"
    )
    assert cells["self-audit"].level == ""
    assert cells["self-audit"].text.startswith(
        "exact: Neo 120 streams, counted 120; credits drift +0.0000 of 15.50"
    )
    short = AuditResult(NOW - 60, NOW - 86400.5, NOW - 3600.5, 120, 117, None, 15.0)
    snapshots.update("a", lambda a: replace(a, catching_up=False, audit=short))
    cells = dict(status_rows(snapshots.account("a"), NOW))
    assert "catching up" not in cells
    assert cells["self-audit"].level == "warn"
    assert cells["self-audit"].text.startswith(
        "3 streams missing: Neo 120 streams, counted 117; credits not compared"
    )


def test_task_titles_switched_off_keep_the_id_and_drop_the_title() -> None:
    row = {
        "task_id": "t-9",
        "created_at": "2026-11-18T00:00:00Z",
        "model": "m",
        "status": "completed",
        "neo_credits": 3.0,
        "task_title": "Pentest of customer-x.example",
    }
    with_titles, without = TopTasks(3, emails=False), TopTasks(3, emails=False, titles=False)
    for top in (with_titles, without):
        top.add(parse_task(row), row)
    assert with_titles.ranked()[0].title == "Pentest of customer-x.example"
    assert without.ranked()[0].title == "" and without.ranked()[0].task_id == "t-9"


def test_alert_thresholds_are_exported_per_account_from_the_config() -> None:
    loaded = config_from_mapping(
        {
            "accounts": [
                {"name": "big", "token": TOKEN, "alert_thresholds": {"hourly_credits": 20000}},
                {"name": "small", "token": TOKEN},
            ],
            "alerts": {"thresholds": {"hourly_credits": 500, "data_lag_seconds": "1h"}},
        },
        {},
    )
    registry = CollectorRegistry()
    ExporterMetrics(
        registry, ("big", "small"), {a.name: a.alert_thresholds for a in loaded.accounts}
    )
    samples = parse_exposition(generate_latest(registry).decode())

    def threshold(account: str, name: str) -> float:
        return sample(samples, "neo_alert_threshold", account=account, threshold=name)

    assert threshold("big", "hourly_credits") == 20000
    assert threshold("small", "hourly_credits") == 500
    assert threshold("big", "data_lag_seconds") == threshold("small", "data_lag_seconds") == 3600
    assert threshold("small", "spend_spike_factor") == AlertThresholds().spend_spike_factor == 5
    names = {dict(k)["threshold"] for (n, k) in samples if n == "neo_alert_threshold"}
    assert names == {f.name for f in dataclasses.fields(AlertThresholds)}
    assert not re.search(TOKEN, generate_latest(registry).decode())


HOUR = 3600.0
THIS_HOUR = NOW // HOUR * HOUR
# Credits per hour start: two quiet hours in between (gaps), one hour of zero-credit streams.
HOURLY = (
    (THIS_HOUR - 5 * HOUR, 12.5),
    (THIS_HOUR - 4 * HOUR, 0.0),
    (THIS_HOUR - HOUR, 40.25),
    (THIS_HOUR, 3.0),
)
BUDGETS = (
    # Half way through a 10-day period, 30 of 100 credits spent: 60 forecast.
    BudgetValue("acc-month", "credits", 100.0, 30.0, NOW - 5 * 86400, NOW + 5 * 86400),
    # A quarter through, 9 of 20 USD spent: 36 forecast, over the limit.
    BudgetValue("red-usd", "usd", 20.0, 9.0, NOW - 86400, NOW + 3 * 86400),
)
TEAMS = {
    (catalogue.TEAM_STREAMS.name, ("red",)): 7.0,
    (catalogue.TEAM_CREDITS.name, ("red",)): 55.5,
    (catalogue.TEAM_LLM_COST_USD.name, ("red",)): 1.25,
    (catalogue.TEAM_STREAMS.name, ("unassigned",)): 2.0,
    (catalogue.TEAM_CREDITS.name, ("unassigned",)): 0.75,
    (catalogue.TEAM_LLM_COST_USD.name, ("unassigned",)): 0.0,
}


def spending_store() -> SnapshotStore:
    snapshots = store("acc", "quiet")
    counts = Counts({key: CounterValue(value, STARTED) for key, value in TEAMS.items()}, {})
    snapshots.update("acc", lambda a: replace(a, hourly=HOURLY, budgets=BUDGETS, counts=counts))
    return snapshots


def section(page: str, account: str) -> str:
    """The account's part of the spend-per-hour section."""
    part = page.split(">Spend per hour, budgets and teams</h2>", 1)[1].split("<h2>", 1)[0]
    return part.split(f"<h3>{account}</h3>", 1)[1].split("<h3>", 1)[0]


def test_the_hourly_chart_is_inline_svg_with_a_bar_per_hour_that_spent() -> None:
    page = landing_page(spending_store().get(), NOW)
    chart = section(page, "acc")
    assert chart.count("<svg") >= 1 and "<script" not in page.lower()
    assert not re.search(r"(?:src|href)=\"https?:", page), "an external asset"
    bars = re.findall(r"<rect [^>]*><title>([^<]*)</title></rect>", chart)
    spent = [(start, credits) for start, credits in HOURLY if credits > 0]
    assert len(bars) == len(spent)
    for (start, credits), title in zip(spent, bars, strict=True):
        hour = time.strftime("%Y-%m-%d %H:00", time.gmtime(start))
        assert title == f"{hour} UTC: {credits:,.1f} credits"
    assert f"max {max(c for _, c in HOURLY):,.1f} credits/hour" in chart
    # The axis runs over the whole window (a day here), ending at the current hour.
    first = time.strftime("%Y-%m-%d %H:00", time.gmtime(THIS_HOUR - 23 * HOUR))
    assert f">{first}</text>" in chart
    assert f">{time.strftime('%Y-%m-%d %H:00', time.gmtime(THIS_HOUR))} UTC</text>" in chart
    assert len(chart.split("<table")[0]) < 4000, "the chart should stay a few KB"


def test_a_bar_is_taller_the_more_its_hour_spent() -> None:
    heights = {
        title: float(height)
        for height, title in re.findall(
            r'height="([\d.]+)"><title>([^<]*)</title>',
            spend_chart(spending_store().account("acc"), NOW, 86400.0),
        )
    }
    by_credits = sorted(heights, key=lambda t: float(t.rsplit(": ", 1)[1].split()[0]))
    assert [heights[t] for t in by_credits] == sorted(heights.values())
    assert len(set(heights.values())) == len(heights)


def test_an_account_with_no_spend_yet_says_so_instead_of_an_empty_chart() -> None:
    quiet = section(landing_page(spending_store().get(), NOW), "quiet")
    assert "no spend yet in the last 1d" in quiet and "<svg" not in quiet
    # Spend older than the chart's span is not shown either.
    snapshots = store("old")
    snapshots.update("old", lambda a: replace(a, hourly=((THIS_HOUR - 30 * HOUR, 5.0),)))
    assert "no spend yet" in spend_chart(snapshots.account("old"), NOW, 86400.0)


def test_each_budget_shows_spent_forecast_and_limit_with_its_unit() -> None:
    part = section(landing_page(spending_store().get(), NOW), "acc")
    for budget in BUDGETS:
        unit = {"credits": "credits", "usd": "USD"}[budget.unit]
        row = part.split(f"<th>{budget.name}</th>", 1)[1].split("</tr>", 1)[0]
        assert budget.spent is not None
        elapsed, remaining = NOW - budget.start, budget.end - NOW
        ahead = budget.spent + budget.spent / elapsed * remaining
        assert forecast(budget.spent, budget, NOW) == ahead
        for value in (budget.spent, ahead, budget.limit):
            assert f"{value:,.2f} {unit}" in row
        assert row.count("<svg") == 1
    assert "average pace so far" in part and "last 6 hours" in part
    # The forecast over its limit is flagged; the one under it is not.
    over = part.split("<th>red-usd</th>", 1)[1].split("</tr>", 1)[0]
    under = part.split("<th>acc-month</th>", 1)[1].split("</tr>", 1)[0]
    assert 'class="warn"' in over and 'class="over"' in over
    assert 'class="warn"' not in under and 'class="over"' not in under


def test_a_budget_spent_to_its_limit_is_shown_as_exceeded() -> None:
    budget = BudgetValue("tight", "credits", 10.0, 10.0, NOW - 3600, NOW + 3600)
    snapshots = store("acc")
    snapshots.update("acc", lambda a: replace(a, budgets=(budget,)))
    row = section(landing_page(snapshots.get(), NOW), "acc").split("<th>tight</th>", 1)[1]
    assert '<td class="down">10.00 credits</td>' in row
    # Before the period starts elapsed time is nil: the forecast is what was spent.
    ahead = BudgetValue("next", "usd", 10.0, 0.0, NOW + 60, NOW + 3600)
    assert forecast(0.0, ahead, NOW) == 0.0


def test_a_budget_not_counted_yet_shows_its_limit_and_period_but_no_spend() -> None:
    budget = BudgetValue("fresh", "usd", 250.0, None, NOW - 3600, NOW + 3600)
    snapshots = store("acc")
    snapshots.update("acc", lambda a: replace(a, budgets=(budget,)))
    row = section(landing_page(snapshots.get(), NOW), "acc").split("<th>fresh</th>", 1)[1]
    row = row.split("</tr>", 1)[0]
    assert "not counted yet" in row and "250.00 USD" in row
    assert "<svg" not in row and ">0.00 USD" not in row


def test_team_totals_come_from_the_team_counters() -> None:
    part = section(landing_page(spending_store().get(), NOW), "acc")
    for team in ("red", "unassigned"):
        row = part.split(f"<tr><th>{team}</th>", 1)[1].split("</tr>", 1)[0]
        cells = re.findall(r"<td>([^<]*)</td>", row)
        assert cells == [
            f"{TEAMS[(catalogue.TEAM_STREAMS.name, (team,))]:,.0f}",
            f"{TEAMS[(catalogue.TEAM_CREDITS.name, (team,))]:,.1f}",
            f"{TEAMS[(catalogue.TEAM_LLM_COST_USD.name, (team,))]:,.2f} USD",
        ]
    assert "<th>team</th>" not in section(landing_page(spending_store().get(), NOW), "quiet")
