"""The monthly report: `neo-exporter report`, its groups, its formats and its check against Neo.

In process, against the fake API over loopback on a manual clock: each grouping (team, member,
model, task) equals the fake's truth for the month, streams of other months are left out at
the month's exact edges, non-ASCII emails and titles (and titles with commas, quotes and line
breaks) come out of the CSV as they went in, and rows the listing hides from Neo's books make
the check fail, saying why. Pure: the check's arithmetic, sorting, and each format's escaping.

End to end (`e2e`): the real CLI against the fake as a process: the report of the current
month by team equals the truth and exits 0; with 5% of the streams hidden from the listings
it exits 8 and says how many rows are missing. Bad options exit 2 with a clear message.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from exporter.cli import EXIT_CONFIG, EXIT_OK, EXIT_REPORT_MISMATCH, report_main
from exporter.config import Config, TeamsConfig, config_from_mapping
from exporter.models import format_timestamp
from exporter.periods import month_bounds
from exporter.report import (
    Check,
    GroupRow,
    Report,
    ReportOptions,
    month_span,
    sort_rows,
    to_csv,
    to_json,
    to_markdown,
)
from exporter.report import run as run_report
from tests.conftest import ManualClock
from tests.fakeneo import FakeNeo, FakeNeoServer, GroupTotals
from tests.processes import ROOT, fake_api

DAY = 86400.0
T0 = 1_795_000_000.0 + 123.456  # 2026-11-18T07:08:43.456Z
MONTH = "2026-11"
START, END = month_bounds(2026, 11)  # [2026-11-01, 2026-12-01)
ACCOUNT = "acme"
TEAMS = {
    "red": ["alice@example.com", "*@exämple.org"],
    "blue": ["bob@example.com", "CAROL@EXAMPLE.COM"],
}
# Who and what the generated streams have not: non-ASCII addresses and titles, no email,
# and titles a CSV must quote.
ODD_TITLES = (
    'Scan "prod", then report',
    "Two lines:\nfirst, second",
    "Prüfung der Anmeldung — 東京 ✓",
    "a | pipe and a back\\slash",
)
ODD_EMAILS = ("zoë@exämple.org", "jürgen@例え.jp", None, "Carol@Example.com")


def stream_row(
    stream_id: str,
    created: float,
    *,
    email: str | None,
    title: str,
    task_id: str,
    model: str = "gpt-5",
    credits: float = 1.25,
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "stream_id": stream_id,
        "task_id": task_id,
        "task_title": title,
        "created_at": format_timestamp(created),
        "model": model,
        "status": "completed",
        "is_byok": True,
        "neo_credits": credits,
        "llm_cost": credits / 10,
        "neo_cost": credits / 50,
        "step_count": 2,
        "tool_calls": 0,
        "agent_triggers": 0,
        "total_execution_ms": 1000,
    }
    if email is not None:
        row["email"] = email
    return row


def odd_rows(around: float) -> list[dict[str, Any]]:
    """A stream of each odd email, of each odd title (one task each), near `around`."""
    rows = []
    for i, email in enumerate(ODD_EMAILS):
        rows.append(
            stream_row(
                f"odd-email-{i}",
                around - 100 - i,
                email=email,
                title="Recon of ünïcode.example",
                task_id=f"task-email-{i}",
                credits=2.5 + i,
            )
        )
    for i, title in enumerate(ODD_TITLES):
        rows.append(
            stream_row(
                f"odd-title-{i}",
                around - 200 - i,
                email="alice@example.com",
                title=title,
                task_id=f"task-title-{i}",
                model="modèle-ß",
                credits=0.5 + i,
            )
        )
    return rows


# --- in process: the fake on a manual clock ----------------------------------------------------


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


def make_fake(clock: ManualClock, **switches: Any) -> FakeNeo:
    neo = FakeNeo(seed=29, clock=clock, **switches)
    # From three days before the month into it: October's streams must stay out.
    neo.populate(1200, START - 3 * DAY, T0 - 60, late_fraction=0.0)
    neo.add_rows(odd_rows(T0), visible_at=T0 - 50)
    # The month's edges: its first and last milliseconds are in, the next month's first not
    # (it lies in the future here, so the previous month's report shows the other side).
    neo.add_rows(
        [
            stream_row("edge-first", START, email=None, title="first", task_id="edge-1"),
            stream_row("edge-before", START - 0.001, email=None, title="before", task_id="edge-0"),
        ],
        visible_at=START + 1,
    )
    return neo


@pytest.fixture
def fake(clock: ManualClock) -> Iterator[FakeNeoServer]:
    with FakeNeoServer(make_fake(clock)) as server:
        yield server


def config_of(url: str, **extra: Any) -> Config:
    data: dict[str, Any] = {
        "accounts": [{"name": ACCOUNT, "base_url": url, "token": "fake-admin-token"}],
        "http": {"page_size": 50, "backoff_base": "10ms", "backoff_max": "50ms"},
        "teams": TEAMS,
        **extra,
    }
    return config_from_mapping(data, {})


def report_of(config: Config, clock: ManualClock, **options: Any) -> Report:
    return run_report(
        config, ReportOptions(**{"month": MONTH, **options}), stop=threading.Event(), clock=clock
    )


def parsed_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text, newline="")))


def by_team(truth: dict[str, GroupTotals], teams: TeamsConfig) -> dict[str, list[GroupTotals]]:
    out: dict[str, list[GroupTotals]] = defaultdict(list)
    for email, totals in truth.items():
        out[teams.team_of(email or None)].append(totals)
    return out


def expected_groups(neo: FakeNeo, by: str, teams: TeamsConfig, start: float, end: float) -> dict:
    """{group: (streams, credits, llm_cost, neo_cost)} from the fake's truth of [start, end]."""
    field = {"team": "email", "member": "email", "model": "model", "task": "task_id"}[by]
    truth = neo.truth_by(field, start, end, listed_only=True)
    if by != "team":
        return {k: (t.streams, t.credits, t.llm_cost, t.neo_cost) for k, t in truth.items()}
    return {
        team: (
            sum(t.streams for t in parts),
            math.fsum(t.credits for t in parts),
            math.fsum(t.llm_cost for t in parts),
            math.fsum(t.neo_cost for t in parts),
        )
        for team, parts in by_team(truth, teams).items()
    }


def mismatches(rows: list[dict[str, str]], group_column: str, want: dict) -> list[str]:
    got = {
        row[group_column]: (
            int(row["streams"]),
            float(row["credits"]),
            float(row["llm_cost_usd"]),
            float(row["neo_cost_usd"]),
        )
        for row in rows
    }
    problems = [f"{k}: in the truth only {want[k]}" for k in want.keys() - got.keys()]
    problems += [f"{k}: in the report only {got[k]}" for k in got.keys() - want.keys()]
    for key in want.keys() & got.keys():
        if got[key][0] != want[key][0] or not all(
            math.isclose(g, w, rel_tol=1e-9, abs_tol=1e-8)
            for g, w in zip(got[key][1:], want[key][1:], strict=True)
        ):
            problems.append(f"{key}: report {got[key]}, truth {want[key]}")
    return problems


@pytest.mark.parametrize(
    ("by", "column"),
    [("team", "team"), ("member", "email"), ("model", "model"), ("task", "task_id")],
)
def test_each_grouping_equals_the_fakes_truth_for_the_month(
    by: str, column: str, fake: FakeNeoServer, clock: ManualClock
) -> None:
    config = config_of(fake.url)
    report = report_of(config, clock, by=by)
    span = (START, math.floor(T0 * 1000) / 1000)
    assert (report.start, report.end) == span
    rows = parsed_csv(to_csv(report))
    assert list(rows[0]) == ["account", *report.columns[1:]]
    assert {row["account"] for row in rows} == {ACCOUNT}
    want = expected_groups(fake.neo, by, config.teams, *span)
    assert len(want) >= 3
    assert mismatches(rows, column, want) == []
    # Credits descending: the order finance reads it in.
    credits = [float(row["credits"]) for row in rows]
    assert credits == sorted(credits, reverse=True)
    [check] = report.checks
    truth = fake.neo.truth(*span)
    assert check.streams == sum(truth.streams.values()) == check.neo_streams
    assert check.complete and check.agrees and check.reasons() == []
    assert check.neo_credits is not None
    assert math.isclose(check.neo_credits, math.fsum(truth.credits.values()), rel_tol=1e-12)


def test_teams_take_non_ascii_globs_and_case_and_the_rest_is_unassigned(
    fake: FakeNeoServer, clock: ManualClock
) -> None:
    rows = parsed_csv(to_csv(report_of(config_of(fake.url), clock, by="team")))
    teams = {row["team"] for row in rows}
    assert teams == {"red", "blue", "unassigned"}
    truth = fake.neo.truth_by("email", START, T0)
    # zoë@exämple.org is red by its glob, Carol@Example.com blue without case; jürgen@例え.jp
    # and the stream with no email are unassigned, with the generated members of no team.
    teams_config = config_of(fake.url).teams
    assert teams_config.team_of("zoë@exämple.org") == "red"
    assert teams_config.team_of("Carol@Example.com") == "blue"
    assert {"zoë@exämple.org", "jürgen@例え.jp", ""} <= truth.keys()


def test_the_month_is_cut_at_its_first_and_last_millisecond(
    fake: FakeNeoServer, clock: ManualClock
) -> None:
    config = config_of(fake.url)
    november = report_of(config, clock, by="task")
    ids = {row.group[0] for row in november.rows}
    assert "edge-1" in ids and "edge-0" not in ids
    october = report_of(config, clock, by="task", month="2026-10")
    before = month_bounds(2026, 10)
    assert (october.start, october.end) == (before[0], before[1] - 0.001)
    ids_before = {row.group[0] for row in october.rows}
    assert "edge-0" in ids_before and "edge-1" not in ids_before
    want = expected_groups(fake.neo, "task", config.teams, october.start, october.end)
    assert mismatches(parsed_csv(to_csv(october)), "task_id", want) == []
    assert october.agrees and sum(r.streams for r in october.rows) > 100


def test_unicode_and_quoting_survive_the_csv_byte_for_byte(
    fake: FakeNeoServer, clock: ManualClock, tmp_path: Path
) -> None:
    config = config_of(fake.url)
    tasks = report_of(config, clock, by="task")
    data = to_csv(tasks).encode("utf-8")
    data.decode("utf-8", errors="strict")
    rows = parsed_csv(data.decode())
    titles = {row["task_id"]: row["task_title"] for row in rows}
    for i, title in enumerate(ODD_TITLES):
        assert titles[f"task-title-{i}"] == title
    assert titles["task-email-0"] == "Recon of ünïcode.example"
    members = parsed_csv(to_csv(report_of(config, clock, by="member")))
    emails = {row["email"] for row in members}
    assert {"zoë@exämple.org", "jürgen@例え.jp", "", "Carol@Example.com"} <= emails
    models = {row["model"] for row in parsed_csv(to_csv(report_of(config, clock, by="model")))}
    assert "modèle-ß" in models
    # The JSON holds the same text, unescaped.
    body = json.loads(to_json(tasks))
    assert {row["task_title"] for row in body["rows"]} >= set(ODD_TITLES)


def test_rows_the_listing_hides_from_neos_books_fail_the_check_saying_why(
    clock: ManualClock,
) -> None:
    neo = make_fake(clock, hide=0.05)
    with FakeNeoServer(neo) as server:
        config = config_of(server.url)
        report = report_of(config, clock, by="team")
    span = (START, math.floor(T0 * 1000) / 1000)
    books, listed = neo.truth(*span), neo.truth(*span, listed_only=True)
    hidden = int(sum(books.streams.values()) - sum(listed.streams.values()))
    assert hidden > 20
    [check] = report.checks
    assert not check.complete and not report.agrees
    assert check.neo_streams == sum(books.streams.values())
    assert check.streams_missing == hidden
    [incomplete, drift] = check.reasons()
    assert incomplete.startswith(
        f"incomplete read: the listing gave {check.streams} of the {check.neo_streams} "
        f"streams Neo counts ({hidden} rows missing"
    )
    assert drift.startswith("credits drift:") and "more than audit_drift_ratio 0.50%" in drift
    # What was listed is still reported exactly: the check says what it leaves out.
    want = expected_groups(neo, "team", config.teams, *span)
    assert mismatches(parsed_csv(to_csv(report)), "team", want) == []


def test_ties_shuffled_across_pages_are_read_again_and_counted_once(clock: ManualClock) -> None:
    # Whole-second times whose ties come in a new order at every request: offset paging
    # misses some rows and repeats others, which the listing's repair and the ids mend.
    neo = make_fake(clock, tie_seconds=True)
    neo.dense_ties(12, 20, at=T0 - 7200)
    with FakeNeoServer(neo) as server:
        config = config_of(server.url, http={"page_size": 7, "backoff_base": "10ms"})
        report = report_of(config, clock, by="member")
    [check] = report.checks
    assert check.complete and check.agrees, check.reasons()
    span = (START, math.floor(T0 * 1000) / 1000)
    want = expected_groups(neo, "member", config.teams, *span)
    assert mismatches(parsed_csv(to_csv(report)), "email", want) == []
    assert check.streams == sum(neo.truth(*span).streams.values())


# --- pure: the check, the order and the formats -------------------------------------------------


def check(**changes: Any) -> Check:
    values: dict[str, Any] = {
        "account": ACCOUNT,
        "streams": 1000,
        "credits": 500.0,
        "neo_streams": 1000,
        "neo_credits": 500.0,
        "complete": True,
        "ratio": 0.005,
    }
    return Check(**{**values, **changes})


def test_the_check_tolerates_drift_up_to_the_accounts_ratio_and_no_more() -> None:
    assert check().agrees
    assert check(credits=502.4).agrees  # 0.48%
    [reason] = check(credits=503.0).reasons()  # 0.6%
    assert reason == (
        "credits drift: 503 in the report, 500 in Neo's summary, off by +3.000000 "
        "(0.60% of Neo's figure, more than audit_drift_ratio 0.50%)"
    )
    assert check(credits=503.0, ratio=0.01).agrees
    [reason] = check(streams=990).reasons()
    assert reason.startswith("streams drift: 990 in the report, 1000 in Neo's count, off by -10")
    assert check(streams=996).agrees
    # Nothing spent and nothing reported agree; something reported against nothing does not.
    assert check(streams=0, credits=0.0, neo_streams=0, neo_credits=0.0).agrees
    assert not check(credits=1.0, neo_credits=0.0).agrees
    [reason] = check(neo_credits=None, summary_problem="HTTP 404").reasons()
    assert reason == "Neo's summary could not be read (HTTP 404): credits unchecked"
    # An incomplete read fails even within the ratio.
    [reason] = check(streams=999, complete=False).reasons()
    assert "1 rows missing" in reason


def test_rows_sort_by_credits_descending_then_group() -> None:
    rows = [
        GroupRow("b", ("red",), 1, 5.0, 0, 0),
        GroupRow("a", ("blue",), 1, 5.0, 0, 0),
        GroupRow("a", ("red",), 1, 5.0, 0, 0),
        GroupRow("a", ("green",), 1, 9.0, 0, 0),
    ]
    assert [(r.group[0], r.account) for r in sort_rows(rows)] == [
        ("green", "a"), ("blue", "a"), ("red", "a"), ("red", "b"),
    ]  # fmt: skip


def tiny_report(by: str = "task") -> Report:
    group = ("t-1", 'A "quoted", | piped\ntitle — ✓') if by == "task" else ("red",)
    rows = (GroupRow(ACCOUNT, group, 3, 12.5, 0.000012, 1e-9),)
    agreeing = check(streams=3, credits=12.5, neo_streams=3, neo_credits=12.5)
    return Report(MONTH, by, START, END - 0.001, rows, (agreeing,))


def test_csv_quotes_what_needs_it_and_writes_money_without_exponents() -> None:
    text = to_csv(tiny_report())
    assert text.startswith(
        "account,task_id,task_title,streams,credits,llm_cost_usd,neo_cost_usd\r\n"
    )
    assert '"A ""quoted"", | piped\ntitle — ✓"' in text
    [row] = parsed_csv(text)
    assert row["task_title"] == 'A "quoted", | piped\ntitle — ✓'
    assert (row["credits"], row["llm_cost_usd"], row["neo_cost_usd"]) == (
        "12.5",
        "0.000012",
        "0.000000001",
    )


def test_markdown_escapes_pipes_and_line_breaks_in_cells() -> None:
    lines = to_markdown(tiny_report()).splitlines()
    assert (
        lines[2]
        == "| account | task_id | task_title | streams | credits | llm_cost_usd | neo_cost_usd |"
    )
    assert lines[3] == "|---|---|---|--:|--:|--:|--:|"
    assert (
        lines[4]
        == '| acme | t-1 | A "quoted", \\| piped title — ✓ | 3 | 12.5 | 0.000012 | 0.000000001 |'
    )


def test_json_holds_the_rows_the_totals_and_the_check() -> None:
    body = json.loads(to_json(tiny_report("team")))
    assert body["rows"] == [
        {
            "account": ACCOUNT, "team": "red", "streams": 3, "credits": 12.5,
            "llm_cost_usd": 0.000012, "neo_cost_usd": 1e-9,
        }
    ]  # fmt: skip
    assert body["totals"] == [
        {"account": ACCOUNT, "streams": 3, "credits": 12.5, "llm_cost_usd": 0.000012,
         "neo_cost_usd": 1e-9}
    ]  # fmt: skip
    assert body["check"][0]["agrees"] and body["agrees"]
    assert (body["month"], body["by"], body["from"]) == (MONTH, "team", "2026-11-01T00:00:00.000Z")


def test_a_month_is_read_up_to_now_and_one_not_begun_is_refused() -> None:
    assert month_span("2026-11", T0) == (START, math.floor(T0 * 1000) / 1000)
    assert month_span("2026-10", T0)[1] == START - 0.001
    with pytest.raises(ValueError, match="2026-12 has not started yet"):
        month_span("2026-12", T0)


# --- the command line -----------------------------------------------------------------------------


def write_config(path: Path, url: str, token: str = "${NEO_TEST_TOKEN}") -> Path:
    """A config file on the fake at `url`; the token from the environment by default."""
    config = {
        "accounts": [{"name": ACCOUNT, "base_url": url, "token": token}],
        "http": {"page_size": 50, "backoff_base": "10ms", "backoff_max": "50ms"},
        "teams": TEAMS,
    }
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--month", "2026/11"], "argument --month: expected a month as YYYY-MM (like 2026-11), "
         "got '2026/11'"),
        (["--month", "2026-13"], "argument --month: expected a month as YYYY-MM"),
        (["--month", "2026-11", "--by", "user"], "argument --by: invalid choice: 'user' (choose "
         "from 'team', 'member', 'model', 'task')"),
        (["--month", "2026-11", "--format", "xlsx"], "argument --format: invalid choice: 'xlsx'"),
        ([], "the following arguments are required: --month"),
    ],
)  # fmt: skip
def test_bad_options_exit_2_saying_which(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path / "config.yaml", "http://127.0.0.1:9", "t0ken")
    with pytest.raises(SystemExit) as exited:
        report_main(["--config.file", str(config), *args], threading.Event())
    assert exited.value.code == EXIT_CONFIG
    assert message in capsys.readouterr().err


def test_an_unknown_account_and_a_month_to_come_exit_2_together(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path / "config.yaml", "http://127.0.0.1:9", "t0ken")
    code = report_main(
        ["--config.file", str(config), "--month", "2999-01", "--account", "nope"],
        threading.Event(),
    )
    assert code == EXIT_CONFIG
    err = capsys.readouterr().err
    assert "neo-exporter report: --month 2999-01 has not started yet" in err
    assert "--account nope: not in the config (acme)" in err
    assert "Traceback" not in err


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "NEO_API_TOKEN"}
    return subprocess.run(
        [sys.executable, "-m", "exporter", "report", *args],
        cwd=ROOT,
        env={**env, "NEO_TEST_TOKEN": "fake-admin-token"},
        capture_output=True,
        timeout=120,
        check=False,
    )


def current_month() -> tuple[str, float]:
    now = time.time()
    return time.strftime("%Y-%m", time.gmtime(now)), now


def process_truth(url: str, field: str, start: float) -> dict[str, GroupTotals]:
    body = requests.get(
        f"{url}/_fake/truth/groups", params={"by": field, "from": str(start)}, timeout=10
    ).json()
    return {k: GroupTotals(**v) for k, v in body.items()}


@pytest.mark.e2e
def test_the_command_writes_the_current_month_by_team_equal_to_the_truth(tmp_path: Path) -> None:
    with fake_api("--streams", "2000", "--history", "2d", "--late-fraction", "0") as (_, url):
        month, now = current_month()
        rows = odd_rows(now - 1)
        requests.post(f"{url}/_fake/rows", json={"rows": rows}, timeout=10).raise_for_status()
        config = write_config(tmp_path / "config.yaml", url)
        output = tmp_path / "report.csv"
        result = cli("--config.file", str(config), "--month", month, "--output", str(output))
        start = month_bounds(*map(int, month.split("-")))[0]
        truth = process_truth(url, "email", start)
    err = result.stderr.decode()
    assert result.returncode == EXIT_OK, err
    assert result.stdout == b""
    data = output.read_bytes()
    report = parsed_csv(data.decode("utf-8"))
    teams = config_of(url).teams
    want = {
        team: (
            sum(t.streams for t in parts),
            math.fsum(t.credits for t in parts),
            math.fsum(t.llm_cost for t in parts),
            math.fsum(t.neo_cost for t in parts),
        )
        for team, parts in by_team(truth, teams).items()
    }
    assert mismatches(report, "team", want) == []
    streams = sum(t.streams for t in truth.values())
    assert f"the report holds {streams} streams" in err
    assert f"Neo counts {streams} streams" in err
    assert "account=acme agrees with Neo within audit_drift_ratio 0.50%" in err
    assert not (tmp_path / "report.csv.tmp").exists()


@pytest.mark.e2e
def test_the_command_exits_8_when_the_listing_misses_rows_neo_counts(tmp_path: Path) -> None:
    args = ("--streams", "2000", "--history", "2d", "--late-fraction", "0", "--hide", "0.05")
    with fake_api(*args) as (_, url):
        month, _ = current_month()
        config = write_config(tmp_path / "config.yaml", url)
        result = cli("--config.file", str(config), "--month", month, "--format", "json")
    err = result.stderr.decode()
    assert result.returncode == EXIT_REPORT_MISMATCH, err
    assert "account=acme does NOT agree with Neo (within audit_drift_ratio 0.50%)" in err
    assert "incomplete read: the listing gave " in err and " rows missing" in err
    assert "credits drift:" in err
    assert "does not agree with Neo's books; exit status 8" in err
    body = json.loads(result.stdout)
    [verdict] = body["check"]
    assert not verdict["complete"] and not body["agrees"]
    assert verdict["neo_streams"] - verdict["streams"] >= 50  # about 5% of 2000
