"""Load: 50 concurrent scrapers for 30 s against an exporter holding 10,000 series.

Asserts no error and that polls went on meanwhile; reports scrape latency percentiles
(figures, not assertions: the CI machine is shared and noisy).
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import parse_exposition, sample
from tests.fakeneo import FakeNeo
from tests.processes import ENV, fake_api, metrics, start_exporter, wait_until, write_config

pytestmark = pytest.mark.e2e

SCRAPERS = 50
SECONDS = float(os.environ.get("NEO_LOAD_SECONDS", "30"))
MODELS = 43  # each model opens 5 statuses x 2 byok x 10 counters, + histograms: ~233 series


def polls(url: str) -> float:
    samples = metrics(url)
    return sum(
        sample(samples, "neo_exporter_polls_total", account="acme", kind=kind, result="success")
        for kind in ("incremental", "reconcile")
    )


def test_fifty_scrapers_for_thirty_seconds_get_every_scrape_and_polls_go_on(
    tmp_path: Path, figures: Any
) -> None:
    now = time.time()
    rows = FakeNeo(seed=31).generate(MODELS, now - 3600, now - 120, late_fraction=0.0)
    for i, row in enumerate(rows):
        row["model"] = f"model-{i:03d}"
    with fake_api("--seed", "31", "--streams", "0") as (_, fake_url):
        requests.post(f"{fake_url}/_fake/rows", json={"rows": rows}, timeout=10).raise_for_status()
        config = write_config(
            tmp_path / "config.yaml",
            fake_url,
            tmp_path / "state.db",
            metrics={"label_limits": {"model": 200}},
        )
        proc, url = start_exporter("--config.file", str(config), env=ENV)
        try:
            wait_until(
                lambda: requests.get(f"{url}/-/ready", timeout=5).status_code == 200, 30, "ready"
            )
            text = requests.get(f"{url}/metrics", timeout=10).text
            series = len(parse_exposition(text))
            assert series >= 10_000
            latencies: list[float] = []
            errors: list[str] = []
            lock = threading.Lock()
            start = threading.Barrier(SCRAPERS + 1)
            deadline = [0.0]

            def scraper() -> None:
                session = requests.Session()
                start.wait()
                mine: list[float] = []
                while time.monotonic() < deadline[0]:
                    began = time.monotonic()
                    try:
                        response = session.get(f"{url}/metrics", timeout=60)
                        ok = response.status_code == 200 and response.text.endswith("\n")
                        problem = None if ok else f"HTTP {response.status_code}"
                    except requests.RequestException as exc:
                        problem = type(exc).__name__
                    mine.append(time.monotonic() - began)
                    if problem is not None:
                        with lock:
                            errors.append(problem)
                with lock:
                    latencies.extend(mine)

            threads = [threading.Thread(target=scraper) for _ in range(SCRAPERS)]
            for thread in threads:
                thread.start()
            polls_before = polls(url)
            deadline[0] = time.monotonic() + SECONDS
            start.wait()
            for thread in threads:
                thread.join(SECONDS + 120)
            polls_after = polls(url)
        finally:
            assert proc.stop() == 0
    assert errors == []
    assert "Traceback" not in proc.output
    # Polls every 2 s went on under load (a generous bound: about SECONDS / 2 are due).
    assert polls_after - polls_before >= SECONDS / 2 / 3
    ordered = sorted(latencies)
    p50 = statistics.median(ordered)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    figures(
        f"load: {SCRAPERS} scrapers x {SECONDS:.0f}s, {series} series "
        f"({len(text) / 1e6:.1f} MB): {len(ordered)} scrapes ({len(ordered) / SECONDS:.1f}/s), "
        f"0 errors, latency p50 {p50:.2f}s p99 {p99:.2f}s max {ordered[-1]:.2f}s; "
        f"{polls_after - polls_before:.0f} polls done of ~{SECONDS / 2:.0f} due"
    )


def test_scrapes_of_an_unchanged_snapshot_reuse_its_body_until_the_snapshot_changes() -> None:
    import gzip

    from prometheus_client import CollectorRegistry, Counter
    from prometheus_client.openmetrics.exposition import generate_latest as openmetrics

    from exporter.collector import NeoCollector
    from exporter.server import Renders
    from exporter.snapshot import SnapshotStore

    store = SnapshotStore(("acme",), 60.0)
    live, per_snapshot, per_scrape = CollectorRegistry(), CollectorRegistry(), CollectorRegistry()
    per_snapshot.register(NeoCollector(store))
    scrapes = Counter("scrapes", "rendered at every scrape", registry=per_scrape)
    rendered: list[CollectorRegistry] = []

    def encoder(registry: CollectorRegistry) -> bytes:
        rendered.append(registry)
        return openmetrics(registry)

    renders = Renders(live, per_snapshot, store, per_scrape=per_scrape)
    kind = "application/openmetrics-text; version=1.0.0"
    bodies = []
    for step in range(4):
        scrapes.inc()
        gzipped = step % 2 == 1
        body = renders.get(encoder, kind, gzipped)
        bodies.append(gzip.decompress(body) if gzipped else body)
        assert f"scrapes_total {step + 1}.0\n".encode() in bodies[-1]
        assert bodies[-1].count(b"# EOF") == 1 and bodies[-1].endswith(b"# EOF\n")
    assert (renders.renders, rendered.count(per_snapshot), rendered.count(live)) == (1, 1, 1)
    assert rendered.count(per_scrape) == 4
    # The kept part is the same bytes, plain or through the gzip stream.
    kept = bodies[0].split(b"# HELP scrapes")[0]
    assert all(body.startswith(kept) for body in bodies)
    assert renders.get(encoder, "text/plain; version=0.0.4", False) != bodies[0]  # per format
    assert renders.renders == 2
    store.update("acme", lambda a: replace(a, seen_streams=7))
    body = gzip.decompress(renders.get(encoder, kind, True))
    assert b'neo_exporter_seen_streams{account="acme"} 7.0' in body
    assert body.endswith(b"# EOF\n")
    assert (renders.renders, rendered.count(per_snapshot)) == (3, 3)


def test_counters_render_again_only_when_an_accounts_counts_change() -> None:
    from prometheus_client import CollectorRegistry
    from prometheus_client.openmetrics.exposition import generate_latest as openmetrics
    from prometheus_client.openmetrics.parser import text_string_to_metric_families

    from exporter.collector import NeoCollector, Part
    from exporter.counting import CounterValue, Counts
    from exporter.server import Renders
    from exporter.snapshot import SnapshotStore

    store = SnapshotStore(("acme", "beta"), 60.0)
    live, per_snapshot, per_counts = CollectorRegistry(), CollectorRegistry(), CollectorRegistry()
    per_snapshot.register(NeoCollector(store, Part.STATUS))
    per_counts.register(NeoCollector(store, Part.COUNTS))
    rendered: list[CollectorRegistry] = []

    def encoder(registry: CollectorRegistry) -> bytes:
        rendered.append(registry)
        return openmetrics(registry)

    def render() -> dict[str, Any]:
        body = renders.get(encoder, "application/openmetrics-text", False).decode()
        return {f.name: f for f in text_string_to_metric_families(body)}  # one # EOF

    renders = Renders(live, per_snapshot, store, per_counts=per_counts)
    labels = ("gpt-5", "completed", "false")
    counts = Counts({("neo_credits_total", labels): CounterValue(1.5, 50.0)}, {})
    store.update("acme", lambda a: replace(a, counts=counts))
    assert render()["neo_credits"].samples[0].value == 1.5
    store.update(
        "acme", lambda a: replace(a, seen_streams=7, counts=counts)
    )  # a poll that counted nothing new
    families = render()
    assert families["neo_exporter_seen_streams"].samples[0].value == 7
    assert (rendered.count(per_counts), rendered.count(per_snapshot)) == (1, 2)
    beta = Counts({("neo_credits_total", labels): CounterValue(2.0, 50.0)}, {})
    store.update("beta", lambda a: replace(a, counts=beta))
    families = render()
    assert sorted(
        s.value for s in families["neo_credits"].samples if s.name.endswith("_total")
    ) == [
        1.5,
        2.0,
    ]
    assert rendered.count(per_counts) == 2


def test_the_exporters_own_counters_render_with_each_snapshot_and_the_process_at_each_scrape() -> (
    None
):
    from prometheus_client import CollectorRegistry, Counter
    from prometheus_client.openmetrics.exposition import generate_latest as openmetrics
    from prometheus_client.openmetrics.parser import text_string_to_metric_families

    from exporter.collector import NeoCollector
    from exporter.server import Renders
    from exporter.snapshot import SnapshotStore

    store = SnapshotStore(("acme",), 60.0)
    live, per_snapshot, per_scrape = CollectorRegistry(), CollectorRegistry(), CollectorRegistry()
    polls = Counter("polls", "polls", registry=live)
    cpu = Counter("cpu", "cpu", registry=per_scrape)
    per_snapshot.register(NeoCollector(store))

    renders = Renders(live, per_snapshot, store, per_scrape=per_scrape)
    kind = "application/openmetrics-text"

    def scrape() -> dict[str, Any]:
        body = renders.get(openmetrics, kind, False).decode()
        return {f.name: f for f in text_string_to_metric_families(body)}  # one # EOF

    for step in range(3):
        # A poll counts before it publishes: its counts show with the snapshot it publishes.
        polls.inc()
        store.update("acme", lambda a, n=step: replace(a, seen_streams=n))
        cpu.inc()
        families = scrape()
        assert families["polls"].samples[0].value == step + 1
        assert families["cpu"].samples[0].value == step + 1
        assert "neo_up" in families
    cpu.inc()
    families = scrape()
    assert families["cpu"].samples[0].value == 4  # current at every scrape
    assert families["polls"].samples[0].value == 3
