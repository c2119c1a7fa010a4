"""Teams and budgets against the fake's truth: team counters per team, budget spend per
period, with revisions, a glob matching a non-ASCII address, streams with no email, the
read back to a period older than the window, and the rollover at midnight UTC."""

from __future__ import annotations

import math
import random
import re
import signal
import threading
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from exporter.config import Config, TeamConfig, TeamsConfig, config_from_mapping
from exporter.history import HistoryOptions
from exporter.history import run as run_history
from exporter.models import format_timestamp
from exporter.state import Attribution, State
from tests.conftest import ManualClock, SampleKey, sample, scrape, select, truth_mismatches
from tests.fakeneo import FakeNeo, FakeNeoServer
from tests.fakeneo.truth import Truth
from tests.processes import (
    ENV,
    fake_api,
    metrics,
    start_exporter,
    truth_from_json,
    wait_until,
    write_config,
)
from tests.records import BOUNDS, LIMITS, record

DAY = 86400.0


def utc(*parts: int) -> float:
    return datetime(*parts, tzinfo=UTC).timestamp()  # type: ignore[misc]


T0 = utc(2026, 11, 17, 12)  # a Tuesday, mid-month: the month is longer than the window
MONTH_START, DAY_START, WEEK_START = utc(2026, 11, 1), utc(2026, 11, 17), utc(2026, 11, 16)

# Who creates tasks in the fake (weights), and the team each one's streams belong to, by
# hand: a glob matches a non-ASCII domain, a capitalised address matches without case, one
# address is in no team, and "" is a task whose rows carry no email at all (null).
EMAILS = (
    ("ana@example.com", 3.0),
    ("zoë@exämple.org", 2.0),
    ("Bo@Example.com", 2.0),
    ("carol@example.com", 2.0),
    ("", 1.0),
)
TEAM_OF: dict[str | None, str] = {
    "ana@example.com": "red",
    "zoë@exämple.org": "red",
    "Bo@Example.com": "blue",
    "carol@example.com": "unassigned",
    None: "unassigned",
}
TEAMS = {"red": ["ana@example.com", "*@exämple.org"], "blue": ["bo@example.com"]}
BUDGETS = [
    {"name": "acc-month", "account": "acme", "period": "month", "credits": 100000},
    {"name": "red-month", "account": "acme", "team": "red", "period": "month", "credits": 50},
    {"name": "blue-day", "account": "acme", "team": "blue", "period": "day", "credits": 10},
    {"name": "acc-week-usd", "account": "acme", "period": "week", "usd": 100},
]
TEAM_FIELDS = (
    ("neo_team_streams_total", "streams"),
    ("neo_team_credits_total", "credits"),
    ("neo_team_llm_cost_usd_total", "llm_cost"),
    ("neo_team_platform_cost_usd_total", "neo_cost"),
)


def config_of(url: str, state: str = ":memory:", **extra: Any) -> Config:
    return config_from_mapping(
        {
            "accounts": [{"name": "acme", "base_url": url, "token": "fake-admin-token"}],
            "polling": {
                "interval": "10m",
                "lookback": "1h",
                "window": "2d",
                "reconcile_interval": "1h",
            },
            "http": {"page_size": 100, "backoff_base": "10ms", "backoff_max": "50ms"},
            "state": {"path": state},
            "teams": TEAMS,
            "budgets": BUDGETS,
            **extra,
        },
        {},
    )


def by_team(truths: Mapping[str | None, Truth], field: str) -> dict[str, float]:
    """The truth's `field` summed per team, by the hand-made TEAM_OF."""
    sums: dict[str, list[float]] = {"red": [], "blue": [], "unassigned": []}
    for email, truth in truths.items():
        sums[TEAM_OF[email]].extend(getattr(truth, field).values())
    return {team: math.fsum(values) for team, values in sums.items()}


def team_mismatches(
    samples: Mapping[SampleKey, float], truths: Mapping[str | None, Truth]
) -> list[str]:
    problems = []
    for metric, field in TEAM_FIELDS:
        for team, want in by_team(truths, field).items():
            got = sample(samples, metric, account="acme", team=team)
            if not math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9):
                problems.append(f"{metric}{{team={team}}} {got} != truth {want}")
    return problems


def spent(samples: Mapping[SampleKey, float], budget: str, unit: str = "credits") -> float:
    return sample(samples, "neo_budget_spent", account="acme", budget=budget, unit=unit)


def budget_start(samples: Mapping[SampleKey, float], budget: str) -> float:
    return sample(
        samples, "neo_budget_period_start_timestamp_seconds", account="acme", budget=budget
    )


def budget_mismatches(
    samples: Mapping[SampleKey, float],
    month: Mapping[str | None, Truth],
    today: Mapping[str | None, Truth],
) -> list[str]:
    """acc-month, red-month and blue-day against the truth since their periods' starts."""
    wants = {
        "acc-month": sum(by_team(month, "credits").values()),
        "red-month": by_team(month, "credits")["red"],
        "blue-day": by_team(today, "credits")["blue"],
    }
    return [
        f"{name}: {spent(samples, name)} != truth {want}"
        for name, want in wants.items()
        if not math.isclose(spent(samples, name), want, rel_tol=1e-9, abs_tol=1e-9)
    ]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def neo(clock: ManualClock) -> FakeNeo:
    # Some streams are first listed lower, and revised three hours after they show up.
    return FakeNeo(seed=5, clock=clock, emails=EMAILS, revise=0.3, revise_after=3 * 3600.0)


@pytest.fixture
def fake(neo: FakeNeo) -> Iterator[FakeNeoServer]:
    with FakeNeoServer(neo) as server:
        yield server


def test_team_counters_and_budgets_equal_the_truth_from_the_period_start_with_revisions(
    neo: FakeNeo, fake: FakeNeoServer, make_exporter: Any, clock: ManualClock, figures: Any
) -> None:
    # 2,000 streams over 20 days: the month began 16.5 days ago, the window is 2 days.
    neo.generate(2000, T0 - 20 * DAY, T0, late_fraction=0.0)
    exporter = make_exporter(config_of(fake.url))
    poller = exporter.pollers[0]
    assert poller.poll_streams()
    revised_before = neo.truth(MONTH_START, clock())
    for _ in range(4 * 6):  # four hours of polls: the revisions land and are read
        clock.advance(600)
        assert poller.poll_streams()
    now = clock()
    samples = scrape(exporter.registry)
    # The revisions raised the books while the exporter ran.
    revised = neo.truth(MONTH_START, now)
    assert sum(revised.credits.values()) > sum(revised_before.credits.values())
    # The first read went back to the month's start, so every counter holds the month.
    assert truth_mismatches(samples, revised, "acme") == []
    month = neo.truth_by_email(MONTH_START, now)
    assert set(month) == set(TEAM_OF)  # every kind of address is there, no email too
    assert team_mismatches(samples, month) == []
    teams = by_team(month, "credits")
    assert all(value > 0 for value in teams.values())
    assert math.isclose(spent(samples, "acc-month"), sum(teams.values()), rel_tol=1e-9)
    assert math.isclose(spent(samples, "red-month"), teams["red"], rel_tol=1e-9)
    blue_today = by_team(neo.truth_by_email(DAY_START, now), "credits")["blue"]
    assert blue_today > 0
    assert math.isclose(spent(samples, "blue-day"), blue_today, rel_tol=1e-9)
    week_usd = sum(by_team(neo.truth_by_email(WEEK_START, now), "llm_cost").values())
    assert week_usd > 0
    assert math.isclose(spent(samples, "acc-week-usd", "usd"), week_usd, rel_tol=1e-9)
    for name, start, end in (
        ("acc-month", MONTH_START, utc(2026, 12, 1)),
        ("blue-day", DAY_START, DAY_START + DAY),
        ("acc-week-usd", WEEK_START, WEEK_START + 7 * DAY),
    ):
        assert sample(samples, "neo_budget_period_start_timestamp_seconds", account="acme",
                      budget=name) == start  # fmt: skip
        assert sample(samples, "neo_budget_period_end_timestamp_seconds", account="acme",
                      budget=name) == end  # fmt: skip
    assert sample(samples, "neo_budget_limit", account="acme", budget="red-month",
                  unit="credits") == 50  # fmt: skip
    # Rows of October were listed by the fake but are in no budget, nor in the counters.
    assert sum(neo.truth(None, MONTH_START - 1).streams.values()) > 0
    # No address is ever a label.
    assert not any("@" in value for _, labels in samples for _, value in labels)
    figures(
        "teams: 2000 streams, month read back 16.5 days past a 2-day window, 30% revised: "
        + ", ".join(f"{team} {value:.2f}" for team, value in sorted(teams.items()))
        + " credits equal the truth; red-month, blue-day, acc-month and acc-week-usd exact"
    )


def test_every_team_and_budget_has_its_series_at_zero_before_any_stream(
    neo: FakeNeo, fake: FakeNeoServer, make_exporter: Any
) -> None:
    exporter = make_exporter(config_of(fake.url))
    assert exporter.pollers[0].poll_streams()
    samples = scrape(exporter.registry)
    for metric, _ in TEAM_FIELDS:
        assert select(samples, metric) == {
            frozenset({("account", "acme"), ("team", team)}): 0.0
            for team in ("blue", "red", "unassigned")
        }
    for budget in BUDGETS:
        unit = "usd" if "usd" in budget else "credits"
        assert spent(samples, str(budget["name"]), unit) == 0.0


def test_a_day_budget_starts_again_at_midnight_utc_and_a_late_row_stays_in_its_day(
    fake: FakeNeoServer, neo: FakeNeo, make_exporter: Any, clock: ManualClock
) -> None:
    midnight = utc(2026, 11, 18)
    clock.now = midnight - 60
    neo.generate(40, midnight - 3600, midnight - 120, late_fraction=0.0)
    exporter = make_exporter(config_of(fake.url))
    poller = exporter.pollers[0]
    assert poller.poll_streams()
    before = scrape(exporter.registry)
    blue_today = by_team(neo.truth_by_email(midnight - DAY, midnight), "credits")["blue"]
    assert blue_today > 0
    assert math.isclose(spent(before, "blue-day"), blue_today, rel_tol=1e-9)
    # Created a second before midnight, listed only after it: the old day's.
    late = {
        "stream_id": "late-one",
        "task_id": "late-task",
        "email": "bo@example.com",
        "created_at": format_timestamp(midnight - 1),
        "model": "gpt-5",
        "status": "completed",
        "is_byok": False,
        "neo_credits": 7.0,
        "llm_cost": 0.0,
        "neo_cost": 0.0,
    }
    neo.add_rows([late], visible_at=midnight + 20)
    clock.now = midnight + 30
    assert poller.poll_streams()
    after = scrape(exporter.registry)
    assert spent(after, "blue-day") == 0.0  # a new day: nothing of it spent yet
    start = sample(after, "neo_budget_period_start_timestamp_seconds", account="acme",
                   budget="blue-day")  # fmt: skip
    assert start == midnight
    # ... and counted once, for its team.
    blue = {"account": "acme", "team": "blue"}
    assert sample(after, "neo_team_credits_total", **blue) == pytest.approx(
        sample(before, "neo_team_credits_total", **blue) + 7
    )
    neo.add_rows([{**late, "stream_id": "new-day", "created_at": format_timestamp(midnight + 25),
                   "neo_credits": 2.5}], visible_at=midnight + 40)  # fmt: skip
    clock.now = midnight + 90
    assert poller.poll_streams()
    assert spent(scrape(exporter.registry), "blue-day") == 2.5


def test_a_revision_adds_to_the_team_the_stream_was_first_counted_under(tmp_path: Path) -> None:
    path = str(tmp_path / "state.db")
    red = TeamsConfig((TeamConfig("red", ("ana@example.com",)),))
    state = State(path, bounds=BOUNDS, limits=LIMITS, attribution=Attribution(red))
    state.ingest("acme", [record("s1", email="ana@example.com", credits=1.0)], 2000.0)
    state.close()
    # The config moved ana to blue since: the revision still goes to red.
    blue = TeamsConfig((TeamConfig("blue", ("ana@example.com",)), TeamConfig("red", ("x",))))
    state = State(path, bounds=BOUNDS, limits=LIMITS, attribution=Attribution(blue))
    state.ingest("acme", [record("s1", email="ana@example.com", credits=3.5)], 3000.0)
    counters = state.counts("acme").counters
    assert counters[("neo_team_credits_total", ("red",))].value == 3.5
    assert counters[("neo_team_credits_total", ("blue",))].value == 0.0
    assert counters[("neo_team_streams_total", ("red",))].value == 1.0
    assert counters[("neo_credits_total", ("gpt-5", "completed", "false"))].value == 3.5
    assert state.spent("acme", 0.0, 5000.0, usd=False, team="red") == 3.5
    state.close()


def test_the_history_writes_the_team_counters_up_to_its_join(
    neo: FakeNeo, fake: FakeNeoServer, clock: ManualClock, tmp_path: Path
) -> None:
    neo.generate(600, T0 - 2 * DAY, T0 - 60, late_fraction=0.0)
    output = tmp_path / "history.om"
    config = config_of(fake.url, str(tmp_path / "state.db"))
    summary = run_history(
        config,
        HistoryOptions(str(output), days=2, target_labels=(("job", "neo"),)),
        stop=threading.Event(),
        clock=clock,
    )
    last: dict[str, float] = {}
    pattern = re.compile(
        r'^neo_team_credits_total\{account="acme",team="([^"]+)",job="neo"\} (\S+) \d+$'
    )
    for line in output.read_text().splitlines():
        if match := pattern.match(line):
            last[match[1]] = float(match[2])
    want = by_team(neo.truth_by_email(summary.start, summary.join), "credits")
    assert set(last) == set(want)
    for team, value in want.items():
        assert math.isclose(last[team], value, rel_tol=1e-9), team


# --- a real exporter killed with SIGKILL, against the fake API in its own process --------


def _truth_by_email(fake_url: str, start: float) -> dict[str | None, Any]:
    """The fake process's truth_by_email since `start` (keyed as conftest expects)."""
    data = requests.get(
        f"{fake_url}/_fake/truth/by_email", params={"from": str(start)}, timeout=10
    ).json()
    return {email: truth_from_json(truth) for email, truth in data}


@pytest.mark.e2e
def test_team_counters_and_budgets_stay_exact_across_sigkill_restarts(
    tmp_path: Path, figures: Any
) -> None:
    rng = random.Random(2020)
    emails = ",".join(f"{address}={weight}" for address, weight in EMAILS)
    # The last minute's streams are revised 20 s after they show up: while the exporter
    # is killed and restarted, and after.
    with fake_api(
        "--seed", "21", "--streams", "2000", "--history", "60s", "--late-fraction", "0",
        "--latency-ms", "10", "--revise", "0.3", "--revise-after", "20s", f"--emails={emails}",
    ) as (_, fake_url):  # fmt: skip
        revised_by = time.time() + 25
        state = tmp_path / "state.db"
        config = write_config(
            tmp_path / "config.yaml", fake_url, state, teams=TEAMS, budgets=BUDGETS
        )
        kills = 0
        for _ in range(6):
            proc, url = start_exporter("--config.file", str(config), env=ENV)
            time.sleep(rng.uniform(0.3, 1.5))
            proc.popen.send_signal(signal.SIGKILL)
            proc.popen.wait(10)
            kills += 1
        proc, url = start_exporter("--config.file", str(config), env=ENV)
        try:

            def exact() -> tuple[dict[SampleKey, float], dict[str, float]] | None:
                if time.time() < revised_by:
                    return None  # revisions still to come
                samples = metrics(url)
                month = _truth_by_email(fake_url, budget_start(samples, "acc-month"))
                today = _truth_by_email(fake_url, budget_start(samples, "blue-day"))
                if team_mismatches(samples, month) or budget_mismatches(samples, month, today):
                    return None
                return samples, by_team(month, "credits")

            samples, teams = wait_until(exact, 90, "team counters and budgets equal the truth")
            streams = sum(sample(samples, "neo_team_streams_total", account="acme", team=team)
                          for team in teams)  # fmt: skip
            # Some were counted at their first figures, then revised up.
            revised = sample(samples, "neo_exporter_changed_records_total", account="acme")
        finally:
            assert proc.stop() == 0
    assert streams == 2000 and all(value > 0 for value in teams.values())
    assert revised > 0
    figures(
        f"teams under SIGKILL: {kills} kills, 2000 streams, {revised:.0f} revised after counting: "
        + ", ".join(f"{team} {value:.2f}" for team, value in sorted(teams.items()))
        + " credits and both month budgets equal the truth"
    )
