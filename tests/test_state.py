"""Durable state: each stream counted once, across reads and across restarts."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest

from exporter import catalogue
from exporter.catalogue import OTHER
from exporter.config import TeamConfig, TeamsConfig
from exporter.counting import STEP_LATENCY, STREAM_DURATION, TOOL_CALL_DURATION
from exporter.models import TaskRecord
from exporter.state import (
    SCHEMA_VERSION,
    Attribution,
    State,
    StateError,
    StateLockedError,
    StatePathError,
    StateWriteError,
    check_state_path,
)
from tests.records import BOUNDS, LIMITS, record

CHANGED_RECORDS = catalogue.CHANGED_RECORDS.name
REVISED_DOWN = catalogue.REVISED_DOWN.name
REVISIONS = catalogue.REVISIONS.name
TOOL_CALLS = catalogue.TOOL_CALLS_BY_TOOL.name


def open_state(path: Path | str = ":memory:", **kwargs: object) -> State:
    options: dict[str, object] = {"bounds": BOUNDS, "limits": LIMITS, **kwargs}
    return State(str(path), **options)  # type: ignore[arg-type]


def value(state: State, metric: str, labels: tuple[str, ...], account: str = "a") -> float:
    """A committed counter's value; a missing series fails the test rather than reading 0."""
    counters = state.counts(account).counters
    assert (metric, labels) in counters, f"no series {metric}{labels} in account {account}"
    return counters[(metric, labels)].value


LABELS = ("gpt-5", "completed", "false")


def test_new_streams_are_counted_and_rereads_are_not() -> None:
    state = open_state()
    first = state.ingest("a", [record(f"s{i}") for i in range(10)], now=2000.0)
    again = state.ingest("a", [record(f"s{i}") for i in range(12)], now=2001.0)
    assert (first.new, again.new, again.duplicates) == (10, 2, 10)
    assert value(state, "neo_streams_total", LABELS) == 12
    assert value(state, "neo_credits_total", LABELS) == pytest.approx(1.2)
    assert value(state, TOOL_CALLS, ("nuclei",)) == 12


def test_duplicates_within_one_batch_count_once() -> None:
    state = open_state()
    result = state.ingest("a", [record("s1"), record("s1"), record("s2")], now=2000.0)
    assert (result.new, result.duplicates) == (2, 1)
    assert value(state, "neo_streams_total", LABELS) == 2


def test_accounts_are_counted_apart() -> None:
    state = open_state()
    state.ingest("a", [record("s1")], now=2000.0)
    state.ingest("b", [record("s1")], now=2000.0)
    assert value(state, "neo_streams_total", LABELS, "a") == 1
    assert value(state, "neo_streams_total", LABELS, "b") == 1


def test_a_revised_stream_adds_its_increases_under_the_labels_first_counted() -> None:
    state = open_state()
    state.ingest("a", [record("s1")], now=2000.0)
    revised = record("s1", credits=0.25, steps=5, status="error", tool_calls=3)
    first = state.ingest("a", [revised], now=2001.0)
    again = state.ingest("a", [revised], now=2002.0)
    assert (first.changed, again.changed, again.duplicates) == (1, 0, 1)
    assert first.changed_ids == ["s1"]
    # Converged to the revised figures, still under status "completed".
    assert value(state, "neo_credits_total", LABELS) == pytest.approx(0.25)
    assert value(state, "neo_steps_total", LABELS) == 5
    assert value(state, "neo_tool_calls_total", LABELS) == 3
    assert value(state, "neo_streams_total", LABELS) == 1
    assert value(state, "neo_credits_total", ("gpt-5", "error", "false")) == 0.0
    assert value(state, CHANGED_RECORDS, ()) == 1
    assert value(state, REVISIONS, ("neo_credits", "up")) == 1
    assert value(state, REVISIONS, ("status", "changed")) == 1
    assert first.decreased_ids == ["s1"]  # the status change could not be applied


def test_one_batch_adds_its_new_streams_in_order_then_its_revisions_to_the_last_bit() -> None:
    # Float sums depend on their order. A total must come out as the streams' amounts added
    # one at a time, as they were listed, then the revisions' increases: these amounts give
    # a different last bit in every other order.
    state = open_state()
    state.ingest("a", [record("old", credits=1.8)], now=2000.0)
    batch = [record("s1", credits=1.1), record("s2", credits=0.1), record("s3", credits=2.6)]
    batch.append(record("old", credits=3.2))  # a revision: + (3.2 - 1.8)
    state.ingest("a", batch, now=2001.0)
    expected = 1.8
    for amount in (1.1, 0.1, 2.6, 3.2 - 1.8):
        expected += amount
    assert value(state, "neo_credits_total", LABELS) == expected
    assert value(state, catalogue.TEAM_CREDITS.name, ("unassigned",)) == expected


def test_a_row_whose_bytes_changed_but_no_counted_value_is_not_a_revision() -> None:
    # Another field (a title, an update time) or a fingerprint of an older make-up.
    state = open_state()
    state.ingest("a", [record("s1")], now=2000.0)
    rewritten = record("s1", fingerprint="another version of the bytes")
    first = state.ingest("a", [rewritten], now=2001.0)
    again = state.ingest("a", [rewritten], now=2002.0)
    assert (first.changed, first.duplicates, again.duplicates) == (0, 0, 1)
    # Never created: nothing changed (the collector shows it as 0; the state has no series).
    assert (CHANGED_RECORDS, ()) not in state.counts("a").counters
    assert value(state, "neo_credits_total", LABELS) == pytest.approx(0.1)
    assert value(state, "neo_streams_total", LABELS) == 1


def test_a_decrease_is_counted_by_field_and_a_later_rise_adds_only_what_goes_beyond() -> None:
    state = open_state()
    state.ingest("a", [record("s1", credits=1.0)], now=2000.0)
    lowered = state.ingest("a", [record("s1", credits=0.75)], now=2001.0)
    assert lowered.decreased_ids == ["s1"]
    assert value(state, "neo_credits_total", LABELS) == 1.0
    assert value(state, REVISED_DOWN, ("neo_credits",)) == pytest.approx(0.25)
    assert value(state, REVISIONS, ("neo_credits", "down")) == 1
    state.ingest("a", [record("s1", credits=1.5)], now=2002.0)
    assert value(state, "neo_credits_total", LABELS) == pytest.approx(1.5)
    assert state.counted_in("a", 0.0, 5000.0) == (1, 1.5)  # what the audit compares


def test_a_revision_observes_new_tool_calls_and_adds_to_the_breakdowns() -> None:
    state = open_state()
    state.ingest("a", [record("s1")], now=2000.0)
    state.ingest(
        "a",
        [
            record(
                "s1",
                tool_durations=(("nuclei", 0.5), ("httpx", 2.0)),
                tool_usage=(("httpx", 1, 2.0), ("nuclei", 1, 0.5)),
                agent_breakdown=(("recon", 3),),
            )
        ],
        now=2001.0,
    )
    assert value(state, TOOL_CALLS, ("httpx",)) == 1
    assert value(state, TOOL_CALLS, ("nuclei",)) == 1
    assert value(state, "neo_agent_triggers_by_agent_total", ("recon",)) == 3
    hist = state.counts("a").histograms
    assert hist[(TOOL_CALL_DURATION, ("httpx",))].count == 1
    assert hist[(TOOL_CALL_DURATION, ("nuclei",))].count == 1
    # The stream's duration was observed once and is not observed again.
    assert hist[(STREAM_DURATION, ("gpt-5",))].count == 1


def test_step_latency_counters_cover_only_streams_with_both_steps_and_latency() -> None:
    state = open_state()
    state.ingest(
        "a",
        [
            record("s1", steps=4, step_latency=1.5),
            record("s2", steps=10, step_latency=None),
            record("s3", steps=None, step_latency=2.0),
        ],
        now=2000.0,
    )
    assert value(state, "neo_step_latency_seconds_total", LABELS) == 6.0
    assert value(state, "neo_step_latency_steps_total", LABELS) == 4.0
    assert value(state, "neo_steps_total", LABELS) == 14.0


def test_a_revision_and_its_fingerprint_survive_a_restart_together(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    state = open_state(path)
    state.ingest("a", [record("s1")], now=2000.0)
    state.ingest("a", [record("s1", credits=0.4)], now=2001.0)
    state.close()
    reopened = open_state(path)
    assert value(reopened, "neo_credits_total", LABELS) == pytest.approx(0.4)
    again = reopened.ingest("a", [record("s1", credits=0.4)], now=3000.0)
    assert (again.changed, again.duplicates) == (0, 1)
    reopened.ingest("a", [record("s1", credits=0.5)], now=3001.0)
    assert value(reopened, "neo_credits_total", LABELS) == pytest.approx(0.5)


def test_a_version_1_state_is_upgraded_and_its_rows_take_their_next_version_as_baseline(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    state = open_state(path)
    state.ingest("a", [record("s1")], now=2000.0)
    state.close()
    with sqlite3.connect(str(path)) as db:  # back to the table version 1 wrote
        db.execute("ALTER TABLE streams DROP COLUMN counted")
        db.execute("ALTER TABLE streams ADD COLUMN changed_fingerprint TEXT")
        db.execute("UPDATE streams SET fingerprint = 'v1'")
        db.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    upgraded = open_state(path)
    result = upgraded.ingest("a", [record("s1", credits=0.3)], now=3000.0)
    assert (result.new, result.changed) == (0, 0)
    assert value(upgraded, "neo_credits_total", LABELS) == pytest.approx(0.1)
    upgraded.ingest("a", [record("s1", credits=0.5)], now=3001.0)
    assert value(upgraded, "neo_credits_total", LABELS) == pytest.approx(0.3)


V4_COLUMNS = ("task_id", "task_title", "model", "team", "member", "ended_ts")


def who_spent(path: Path, stream_id: str) -> tuple[object, ...]:
    with sqlite3.connect(str(path)) as db:
        row = db.execute(
            f"SELECT {', '.join(V4_COLUMNS)} FROM streams WHERE stream_id = ?",
            (stream_id,),
        ).fetchone()
    assert row is not None, f"no stream {stream_id} in the state"
    return tuple(row)


def test_each_stream_keeps_its_task_title_model_team_and_end_but_emails_only_if_asked(
    tmp_path: Path,
) -> None:
    teams = TeamsConfig((TeamConfig("red", ("*@exämple.org",)),))
    spent = {"task_id": "t-1", "task_title": "Scan ünïcode.example", "email": "Zoë@Exämple.org"}
    for members, titles in ((False, True), (True, False)):
        path = tmp_path / f"{members}-{titles}.db"
        state = open_state(path, attribution=Attribution(teams, titles=titles, members=members))
        state.ingest("a", [record("s1", **spent), record("s2")], now=2000.0)
        # A revision keeps the team the stream was first counted under.
        state.ingest("a", [record("s1", credits=0.4, **{**spent, "email": "bo@x.com"})], 2001.0)
        state.close()
        title = "Scan ünïcode.example" if titles else None
        member = "Zoë@Exämple.org" if members else None
        assert who_spent(path, "s1") == ("t-1", title, "gpt-5", "red", member, 1020.0)
        assert who_spent(path, "s2") == (None, None, "gpt-5", "unassigned", None, 1020.0)


def test_a_version_3_state_is_upgraded_and_its_streams_spent_by_no_one_known(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    state = open_state(path)
    state.ingest("a", [record("s1"), record("s2", credits=0.5)], now=2000.0)
    before = state.counts("a")
    state.close()
    with sqlite3.connect(str(path)) as db:  # back to the table version 3 wrote
        db.execute("DROP INDEX streams_by_end")
        for column in V4_COLUMNS:
            db.execute(f"ALTER TABLE streams DROP COLUMN {column}")
        db.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    upgraded = open_state(path)
    assert upgraded.counts("a") == before
    same = upgraded.ingest("a", [record("s1"), record("s2", credits=0.5), record("s3")], 3000.0)
    assert (same.new, same.changed, same.duplicates) == (1, 0, 2)
    upgraded.close()
    assert who_spent(path, "s1") == (None,) * len(V4_COLUMNS)
    assert who_spent(path, "s3")[2:4] == ("gpt-5", "unassigned")
    with sqlite3.connect(str(path)) as db:
        version = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    assert version == (str(SCHEMA_VERSION),)


def test_a_version_2_state_is_upgraded_and_a_row_with_a_new_fingerprint_is_not_revised(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    state = open_state(path)
    state.ingest("a", [record("s1"), record("s2", credits=0.5)], now=2000.0)
    state.save_marks("a", {"streams_to": 2000.0})
    before = state.counts("a")
    state.close()
    with sqlite3.connect(str(path)) as db:  # back to the table version 2 wrote
        db.execute("ALTER TABLE streams RENAME TO streams_old")
        db.execute("DROP INDEX streams_by_time_status")
        db.execute("DROP INDEX streams_by_end")
        db.execute(
            "CREATE TABLE streams (account TEXT NOT NULL, stream_id TEXT NOT NULL, "
            "created_ts REAL NOT NULL, status TEXT NOT NULL, credits REAL NOT NULL, "
            "llm_cost REAL NOT NULL, neo_cost REAL NOT NULL, fingerprint TEXT NOT NULL, "
            "counted TEXT, PRIMARY KEY (account, stream_id)) WITHOUT ROWID"
        )
        db.execute(
            "INSERT INTO streams SELECT account, stream_id, created_ts, status, credits, "
            "llm_cost, neo_cost, fingerprint, counted FROM streams_old"
        )
        db.execute("DROP TABLE streams_old")
        db.execute("CREATE INDEX streams_by_time_status ON streams (account, created_ts, status)")
        db.execute("UPDATE streams SET fingerprint = 'a digest of the parsed values'")
        db.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    upgraded = open_state(path)
    assert upgraded.counts("a") == before
    assert upgraded.watermark("a", "streams_to") == 2000.0
    same = upgraded.ingest("a", [record("s1"), record("s2", credits=0.5)], now=3000.0)
    assert (same.new, same.changed) == (0, 0)
    raised = upgraded.ingest("a", [record("s2", credits=0.75)], now=3001.0)
    assert raised.changed == 1
    assert value(upgraded, "neo_credits_total", LABELS) == pytest.approx(0.85)
    with sqlite3.connect(str(path)) as db:
        version = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        sql = db.execute("SELECT sql FROM sqlite_master WHERE name = 'streams'").fetchone()
    assert version == (str(SCHEMA_VERSION),)
    assert "WITHOUT ROWID" not in sql[0]


def test_counters_and_seen_ids_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    state = open_state(path)
    state.ingest("a", [record("s1"), record("s2", model="claude")], now=2000.0)
    state.save_marks("a", {"streams_to": 2000.0}, prune_before=0.0)
    before = state.counts("a")
    state.close()

    reopened = open_state(path)
    assert reopened.counts("a") == before
    assert reopened.watermark("a", "streams_to") == 2000.0
    result = reopened.ingest("a", [record("s1"), record("s3")], now=3000.0)
    assert (result.new, result.duplicates) == (1, 1)
    assert value(reopened, "neo_streams_total", LABELS) == 2
    # Created times are kept: Prometheus sees the same series, not a reset.
    created = reopened.counts("a").counters[("neo_streams_total", LABELS)].created
    assert created == before.counters[("neo_streams_total", LABELS)].created == 2000.0


def test_histograms_observe_each_value_once_with_inclusive_upper_bounds() -> None:
    state = open_state()
    state.ingest(
        "a",
        [
            record("s1", tool_durations=(("nuclei", 0.5), ("nuclei", 0.75), ("httpx", 9.0))),
            record("s2", execution_time=None, step_latency=None, tool_durations=()),
        ],
        now=2000.0,
    )
    hist = state.counts("a").histograms
    nuclei = hist[(TOOL_CALL_DURATION, ("nuclei",))]
    assert nuclei.buckets == (1, 1, 0, 0)  # 0.5 falls in le="0.5"
    assert (nuclei.count, nuclei.sum) == (2, 1.25)
    assert hist[(TOOL_CALL_DURATION, ("httpx",))].buckets == (0, 0, 0, 1)
    # s2 has no execution time and a null step latency: not observed.
    assert hist[(STREAM_DURATION, ("gpt-5",))].count == 1
    assert hist[(STEP_LATENCY, ("gpt-5",))].count == 1


def test_label_values_beyond_the_budget_fold_into_other() -> None:
    state = open_state(limits=replace(LIMITS, model=2, tool=1))
    models = ["m1", "m2", "m3", "m4"]
    state.ingest("a", [record(f"s{i}", model=m) for i, m in enumerate(models)], now=2000.0)
    seen = {
        labels[0]
        for (metric, labels) in state.counts("a").counters
        if metric == "neo_streams_total"
    }
    assert seen == {"m1", "m2", OTHER}
    assert value(state, "neo_streams_total", (OTHER, "completed", "false")) == 2
    total = sum(
        v.value for (m, _), v in state.counts("a").counters.items() if m == "neo_credits_total"
    )
    assert total == pytest.approx(0.4)  # folding never loses money


def test_folding_decisions_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    limits = replace(LIMITS, model=1)
    state = open_state(path, limits=limits)
    state.ingest("a", [record("s1", model="m1"), record("s2", model="m2")], now=2000.0)
    state.close()
    reopened = open_state(path, limits=limits)
    reopened.ingest("a", [record("s3", model="m3"), record("s4", model="m1")], now=3000.0)
    assert value(reopened, "neo_streams_total", ("m1", "completed", "false")) == 2
    assert value(reopened, "neo_streams_total", (OTHER, "completed", "false")) == 2


def test_known_label_sets_start_at_zero() -> None:
    state = open_state()
    state.ingest("a", [record("s1", status="error")], now=2000.0)
    counters = state.counts("a").counters
    # Every documented status and both byok values exist for the new model, at zero.
    for status in ("completed", "failed", "aborted", "blocked"):
        for byok in ("true", "false"):
            assert counters[("neo_credits_total", ("gpt-5", status, byok))].value == 0
    assert counters[("neo_credits_total", ("gpt-5", "error", "false"))].value == 0.1
    # A later new status gets zero series for the models already known.
    state.ingest("a", [record("s2", model="claude", status="weird")], now=2001.0)
    assert ("neo_streams_total", ("gpt-5", "weird", "true")) in state.counts("a").counters


def test_rows_before_the_prune_horizon_are_not_counted() -> None:
    state = open_state()
    state.ingest("a", [record("old", created_ts=100.0), record("new", created_ts=900.0)], now=1000)
    assert state.save_marks("a", {"streams_to": 1000.0}, prune_before=500.0) == 1
    assert state.seen_streams("a") == 1
    # "old" left the seen set: seeing it again must not count it a second time.
    result = state.ingest("a", [record("old", created_ts=100.0)], now=1001.0)
    assert (result.new, result.before_horizon) == (0, 1)
    assert value(state, "neo_streams_total", LABELS) == 2


def test_window_streams_count_by_status_since_a_time() -> None:
    state = open_state()
    state.ingest(
        "a",
        [
            record("s1", created_ts=100.0),
            record("s2", created_ts=200.0, status="error"),
            record("s3", created_ts=300.0),
        ],
        now=400.0,
    )
    assert state.window_streams("a", since=150.0) == {"error": 1, "completed": 1}


def window_in_table(path: Path, account: str, since: float) -> dict[str, int]:
    """The window gauge computed straight from the file, as the ground truth."""
    with sqlite3.connect(str(path)) as db:
        rows = db.execute(
            "SELECT status, COUNT(*) FROM streams WHERE account = ? AND created_ts >= ? "
            "GROUP BY status",
            (account, since),
        ).fetchall()
    return dict(rows)


def test_window_streams_match_the_table_through_prunes_and_restarts(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    state = open_state(path)
    statuses = ("completed", "error", "failed")
    state.ingest(
        "a",
        [record(f"s{i}", created_ts=100.0 * i, status=statuses[i % 3]) for i in range(1, 40)],
        now=5000.0,
    )
    state.ingest("b", [record("other", created_ts=100.0)], now=5000.0)
    checkpoints = (0.0, 450.0, 1000.0, 3900.0, 9999.0)
    for since in checkpoints:
        assert state.window_streams("a", since) == window_in_table(path, "a", since)
    assert state.save_marks("a", {"streams_to": 5000.0}, prune_before=1050.0) == 10
    for since in checkpoints:
        assert state.window_streams("a", since) == window_in_table(path, "a", since)
    assert state.seen_streams("a") == 29
    assert state.seen_streams("b") == 1
    state.close()
    reopened = open_state(path)
    for since in checkpoints:
        assert reopened.window_streams("a", since) == window_in_table(path, "a", since)
    assert reopened.seen_streams("a") == 29


def test_a_commit_failing_midway_changes_nothing_in_memory_or_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    state = open_state(path)
    state.ingest("a", [record("s1")], now=2000.0)
    before = state.counts("a")
    # Make the counters write fail after the stream ids were written in the same transaction.
    saboteur = sqlite3.connect(str(path))
    saboteur.execute(
        "CREATE TRIGGER boom BEFORE UPDATE ON counters BEGIN SELECT RAISE(ABORT, 'boom'); END"
    )
    saboteur.commit()
    with pytest.raises(sqlite3.IntegrityError, match="boom"):
        state.ingest("a", [record("s2")], now=2001.0)
    assert state.counts("a") == before
    assert state.seen_streams("a") == 1  # s2's id was rolled back with its increments
    saboteur.execute("DROP TRIGGER boom")
    saboteur.commit()
    saboteur.close()
    assert state.ingest("a", [record("s2")], now=2002.0).new == 1
    assert value(state, "neo_streams_total", LABELS) == 2


def test_changed_histogram_buckets_restart_only_that_histogram(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    state = open_state(path)
    state.ingest("a", [record("s1")], now=2000.0)
    state.close()
    reopened = open_state(path, bounds={**BOUNDS, STREAM_DURATION: (5.0, 50.0)})
    hist = reopened.counts("a").histograms
    assert (STREAM_DURATION, ("gpt-5",)) not in hist
    assert (TOOL_CALL_DURATION, ("nuclei",)) in hist
    assert value(reopened, "neo_streams_total", LABELS) == 1


def test_a_file_that_is_not_a_database_gives_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StateError, match="move the file aside"):
        open_state(path)


def task(task_id: str, status: str = "completed", credits: float = 1.0) -> TaskRecord:
    return TaskRecord(task_id, 1000.0, status, credits, credits / 10, credits / 100, 1)


def test_a_tasks_read_sums_each_distinct_task_once_and_then_starts_over() -> None:
    state = open_state()
    state.add_read_tasks("a", [task("t1"), task("t2", "error", 2.5)])
    state.add_read_tasks("a", [task("t2", "error", 2.5), task("t3")])  # t2 repeated by paging
    state.add_read_tasks("b", [task("t1", credits=7.0)])
    totals = state.tasks_read_totals("a")
    assert dict(totals.tasks_by_status) == {"completed": 2, "error": 1}
    assert totals.credits == pytest.approx(4.5)
    assert totals.llm_cost == pytest.approx(0.45)
    assert totals.platform_cost == pytest.approx(0.045)
    state.discard_tasks_read("a")
    assert dict(state.tasks_read_totals("a").tasks_by_status) == {}  # the next read: empty
    assert state.tasks_read_totals("b").credits == pytest.approx(7.0)  # accounts apart


def test_a_discarded_tasks_read_leaves_nothing_behind() -> None:
    state = open_state()
    state.add_read_tasks("a", [task("t1"), task("t2")])
    state.discard_tasks_read("a")
    state.add_read_tasks("a", [task("t3", credits=2.0)])
    totals = state.tasks_read_totals("a")
    assert dict(totals.tasks_by_status) == {"completed": 1}
    assert totals.credits == pytest.approx(2.0)


# --- one writer, a path checked early, writes that fail --------------------------------------


def test_a_second_state_on_the_same_file_is_refused_naming_the_holder_until_the_first_closes(
    tmp_path: Path,
) -> None:
    import os

    path = tmp_path / "state.db"
    first = open_state(path)
    assert (tmp_path / "state.db.lock").read_text() == f"{os.getpid()}\n"
    with pytest.raises(StateLockedError) as caught:
        open_state(path)
    assert str(caught.value).startswith(
        f"state file '{path}' is in use by another neo-exporter (pid {os.getpid()}; "
        f"lock {path}.lock)"
    )
    first.close()
    open_state(path).close()  # released with the first; the lock file stays, unlocked
    open_state(":memory:").close()
    assert (tmp_path / "state.db.lock").exists()


def test_the_state_path_check_names_a_missing_directory_and_a_directory_given_as_the_file(
    tmp_path: Path,
) -> None:
    check_state_path(":memory:")
    check_state_path(str(tmp_path / "new.db"))  # a new file in a writable directory
    with pytest.raises(StatePathError) as missing:
        check_state_path(str(tmp_path / "nope" / "state.db"))
    assert missing.value.missing_directory
    assert str(missing.value).startswith(f"state.path: directory {tmp_path / 'nope'} does not")
    with pytest.raises(StatePathError) as directory:
        check_state_path(str(tmp_path))
    assert not directory.value.missing_directory
    assert "is a directory (expected a file path" in str(directory.value)
    assert list(tmp_path.iterdir()) == []  # the check creates nothing


def test_a_write_that_fails_is_reported_in_the_health_and_the_next_success_clears_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    state = open_state(path)
    assert state.health().writable
    saboteur = sqlite3.connect(str(path))
    saboteur.execute("BEGIN EXCLUSIVE")  # another writer holds the file: SQLite is "locked"
    state._db.execute("PRAGMA busy_timeout=0")  # fail at once rather than in 5 s
    with pytest.raises(StateWriteError, match=r"cannot be written \(database is locked\)"):
        state.ingest("a", [record("s1")], now=2000.0)
    health = state.health()
    assert not health.writable and health.error == "database is locked"
    assert health.since is not None
    assert state.seen_streams("a") == 0
    saboteur.rollback()
    saboteur.close()
    assert state.ingest("a", [record("s1")], now=2001.0).new == 1
    assert state.health().writable and state.health().error is None
