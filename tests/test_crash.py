"""Crash consistency of the state file: SIGKILL anywhere, mid-transaction included.

A child process ingests a fixed run of streams into a real SQLite file and is killed at
random instants; after every kill the file must hold counters that equal the sum over the
committed seen set (the exactly-once invariant), never less than before, and a last run to
completion must end with every stream counted exactly once. The exporter-level version of
this (a real exporter process killed during a backfill) is in test_process.py.
"""

from __future__ import annotations

import math
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.processes import ROOT
from tests.records import numbered_stream, open_default_state

pytestmark = pytest.mark.e2e  # child processes, killed at random

TOTAL, BATCH = 30_000, 1000
KILLS = 24


def spawn_child(state: Path, version: int = 1) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.crash_child",
            str(state),
            str(TOTAL),
            str(BATCH),
            str(version),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )


def committed(state: Path) -> tuple[float, float, int, float]:
    """(counter streams, counter credits, seen rows, seen credits) as a restart sees them."""
    reopened = open_default_state(str(state))
    try:
        counts = reopened.counts("acme")
        streams = sum(v.value for (m, _), v in counts.counters.items() if m == "neo_streams_total")
        credits = sum(v.value for (m, _), v in counts.counters.items() if m == "neo_credits_total")
    finally:
        reopened.close()
    with sqlite3.connect(state) as db:
        rows, seen_credits = db.execute("SELECT COUNT(*), TOTAL(credits) FROM streams").fetchone()
    return streams, credits, int(rows), float(seen_credits)


def assert_every_stream_counted_once(state: Path) -> None:
    streams, credits, rows, _ = committed(state)
    assert streams == rows == TOTAL
    want = math.fsum(numbered_stream(n).credits for n in range(TOTAL))
    assert math.isclose(credits, want, rel_tol=1e-9)


def run_and_kill(state: Path, version: int, rng: random.Random, aim_at_a_write: bool) -> list[str]:
    """Start a child, SIGKILL it at a random instant; the lines it printed after READY.

    Aimed at a write, the kill lands a few ms after a transaction begins.
    """
    child = spawn_child(state, version)
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "READY"
    seen: list[str] = []
    if aim_at_a_write:
        while (line := child.stdout.readline().strip()) not in ("BEGIN", "DONE", ""):
            seen.append(line)
        seen.append(line)
        time.sleep(rng.uniform(0.0, 0.02))
    else:
        time.sleep(rng.uniform(0.0, 0.3))
    child.send_signal(signal.SIGKILL)
    rest = seen + child.stdout.read().split()
    child.wait(10)
    return rest


def test_sigkill_at_random_instants_keeps_counters_equal_to_the_committed_seen_set(
    tmp_path: Path, figures: Any
) -> None:
    rng = random.Random(4242)
    files = 1
    state = tmp_path / f"state-{files}.db"
    kills = mid_transaction = 0
    previous = (0.0, 0.0)
    while kills < KILLS:
        rest = run_and_kill(state, 1, rng, aim_at_a_write=bool(kills % 2))
        if "DONE" in rest:
            # A fast machine finished the run between kills: check it, go on with a new file.
            assert_every_stream_counted_once(state)
            files += 1
            state, previous = tmp_path / f"state-{files}.db", (0.0, 0.0)
            continue
        kills += 1
        mid_transaction += bool(rest) and rest[-1] == "BEGIN"
        streams, credits, rows, seen_credits = committed(state)
        assert streams == rows  # each committed id counted once, none without its id
        assert math.isclose(credits, seen_credits, rel_tol=1e-9, abs_tol=1e-9)
        assert (streams, credits) >= previous  # never goes down across a crash
        previous = (streams, credits)
    # A last run to the end: every stream exactly once.
    child = spawn_child(state)
    assert child.wait(60) == 0
    assert_every_stream_counted_once(state)
    assert kills == KILLS
    assert mid_transaction >= 1  # the kills did land inside transactions
    figures(
        f"crash state: {kills} SIGKILLs over {files} file(s), {mid_transaction} inside a "
        "transaction; "
        f"counters equalled the committed seen set after each, final {TOTAL} streams exact"
    )


REVISION_KILLS = 8


def test_sigkill_while_revisions_commit_keeps_counters_equal_to_the_counted_values(
    tmp_path: Path, figures: Any
) -> None:
    # Every stream counted at its first version; then Neo revises them all upwards and a
    # process applying the revisions is killed at random instants, mid-transaction too.
    rng = random.Random(4343)
    state = tmp_path / "state.db"
    assert spawn_child(state, version=1).wait(120) == 0
    previous = committed(state)
    kills = mid_transaction = 0
    while kills < REVISION_KILLS:
        rest = run_and_kill(state, 2, rng, aim_at_a_write=bool(kills % 2))
        if "DONE" in rest:
            break  # a fast machine applied every revision between kills
        kills += 1
        mid_transaction += bool(rest) and rest[-1] == "BEGIN"
        streams, credits, rows, seen_credits = committed(state)
        # The revised totals and the revised per-stream values committed together or not at all.
        assert streams == rows == TOTAL
        assert math.isclose(credits, seen_credits, rel_tol=1e-9, abs_tol=1e-9)
        assert credits >= previous[1] - 1e-9
        previous = (streams, credits, rows, seen_credits)
    assert spawn_child(state, version=2).wait(120) == 0
    streams, credits, rows, _ = committed(state)
    assert streams == rows == TOTAL
    want = math.fsum(numbered_stream(n, 2).credits for n in range(TOTAL))
    assert math.isclose(credits, want, rel_tol=1e-9)
    figures(
        f"crash revisions: {kills} SIGKILLs while {TOTAL} revisions committed, "
        f"{mid_transaction} inside a transaction; counters equalled the counted values after "
        "each, final credits exact at Neo's revised figures"
    )
