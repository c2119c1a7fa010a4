"""The collector: snapshot to exposition, names, HELP, types, escaping, and the docs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om
from prometheus_client.parser import text_string_to_metric_families

from exporter import catalogue
from exporter.catalogue import COLLECTED as CATALOG
from exporter.collector import NeoCollector
from exporter.config import LabelLimits
from exporter.counting import STEP_LATENCY, STREAM_DURATION, TOOL_CALL_DURATION
from exporter.instrumentation import ExporterMetrics
from exporter.snapshot import EndpointHealth, SnapshotStore, TaskWindow
from exporter.state import State
from tests.conftest import parse_exposition, sample, select
from tests.records import BOUNDS, LIMITS, record


def build_registry(model: str = "gpt-5") -> tuple[CollectorRegistry, SnapshotStore]:
    state = State(":memory:", bounds=BOUNDS, limits=LabelLimits(50, 20, 100, 50))
    state.ingest("acme", [record("s1", model=model), record("s2", model=model)], now=1000.0)
    store = SnapshotStore(("acme",), 86400.0)
    store.update(
        "acme",
        lambda a: replace(
            a,
            counts=state.counts("acme"),
            window_streams={"completed": 2},
            tasks=TaskWindow({"completed": 1}, 0.2, 0.0, 0.0),
            endpoints={"streams": EndpointHealth(True, 1000.0, None)},
            seen_streams=2,
            watermark=1000.0,
            last_poll_duration=0.5,
        ),
        state_bytes=4096,
    )
    registry = CollectorRegistry()
    ExporterMetrics(registry, ("acme",))
    registry.register(NeoCollector(store))
    return registry, store


def test_counters_histograms_and_gauges_carry_committed_values() -> None:
    registry, _ = build_registry()
    samples = parse_exposition(generate_latest(registry).decode())
    labels = {"account": "acme", "model": "gpt-5", "status": "completed", "byok": "false"}
    assert sample(samples, "neo_streams_total", **labels) == 2
    assert sample(samples, "neo_credits_total", **labels) == 0.2
    assert sample(samples, "neo_credits_created", **labels) == 1000.0
    assert sample(samples, "neo_window_tasks", account="acme", status="completed") == 1
    assert sample(samples, "neo_up", account="acme", endpoint="streams") == 1
    assert sample(samples, "neo_up", account="acme", endpoint="tasks") == 0
    buckets = {
        "0.5": 2.0,
        "1.0": 2.0,
        "5.0": 2.0,
        "+Inf": 2.0,
    }
    for le, count in buckets.items():
        assert (
            sample(samples, f"{TOOL_CALL_DURATION}_bucket", account="acme", tool="nuclei", le=le)
            == count
        )
    assert sample(samples, f"{STREAM_DURATION}_sum", account="acme", model="gpt-5") == 40.0
    assert sample(samples, f"{STEP_LATENCY}_count", account="acme", model="gpt-5") == 2


HISTOGRAMS = (TOOL_CALL_DURATION, STREAM_DURATION, STEP_LATENCY)


def expositions_of(state: State) -> tuple[str, str]:
    """(Prometheus text, OpenMetrics) of a collector over the state's committed counts."""
    store = SnapshotStore(("acme",), 86400.0)
    store.update("acme", lambda a: replace(a, counts=state.counts("acme")))
    registry = CollectorRegistry()
    registry.register(NeoCollector(store))
    return generate_latest(registry).decode(), generate_openmetrics(registry).decode()


def om_histogram_created(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The `_created` samples that OpenMetrics carries inside each histogram family."""
    found = {}
    for family in parse_om(text):
        if family.type == "histogram":
            for s in family.samples:
                if s.name == f"{family.name}_created":
                    found[(family.name, frozenset(s.labels.items()))] = s.value
    return found


def test_each_histogram_series_is_created_when_its_label_set_was_first_counted(
    tmp_path: Path,
) -> None:
    # The collector writes a histogram's `_created` sample by hand (prometheus_client's
    # HistogramMetricFamily has no `created`): it is the ingest time at which the state
    # first counted that label set, kept when later streams are observed and across restarts.
    state = State(str(tmp_path / "state.db"), bounds=BOUNDS, limits=LIMITS)
    state.ingest("acme", [record("s1"), record("s2")], now=1000.0)
    httpx = {"tool_durations": (("httpx", 2.0),), "tool_usage": (("httpx", 1, 2.0),)}
    state.ingest("acme", [record("s3"), record("s4", model="claude-x", **httpx)], now=5000.0)
    want = {
        (STREAM_DURATION, ("model", "gpt-5")): 1000.0,  # observed again at 5000: kept
        (STREAM_DURATION, ("model", "claude-x")): 5000.0,
        (STEP_LATENCY, ("model", "gpt-5")): 1000.0,
        (STEP_LATENCY, ("model", "claude-x")): 5000.0,
        (TOOL_CALL_DURATION, ("tool", "nuclei")): 1000.0,
        (TOOL_CALL_DURATION, ("tool", "httpx")): 5000.0,
    }
    first = expositions_of(state)
    state.close()
    reopened = State(str(tmp_path / "state.db"), bounds=BOUNDS, limits=LIMITS)
    try:
        after_restart = expositions_of(reopened)
    finally:
        reopened.close()
    for text, openmetrics in (first, after_restart):
        samples = parse_exposition(text)
        for (metric, (label, value)), created in want.items():
            labels: Mapping[str, str] = {"account": "acme", label: value}
            assert sample(samples, f"{metric}_created", **labels) == created
            assert sample(samples, f"{metric}_count", **labels) >= 1
        for metric in HISTOGRAMS:  # one `_created` per series, no more, no fewer
            assert set(select(samples, f"{metric}_created")) == set(
                select(samples, f"{metric}_count")
            ), metric
        # OpenMetrics carries the same values as part of each histogram.
        assert om_histogram_created(openmetrics) == {
            (metric, frozenset({("account", "acme"), pair})): created
            for (metric, pair), created in want.items()
        }


def test_every_family_has_help_and_the_documented_type() -> None:
    registry, _ = build_registry()
    families = {
        f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())
    }
    for doc in CATALOG:
        name = doc.name.removesuffix("_total")
        assert name in families, doc.name
        assert families[name].type == doc.type, doc.name
        assert families[name].documentation, doc.name


def test_help_names_the_api_field_behind_each_business_metric() -> None:
    for doc in CATALOG:
        if doc.name.startswith("neo_") and not doc.name.startswith(("neo_exporter", "neo_up")):
            assert "field" in doc.help or "state" in doc.help, doc.name
            assert "Refreshed every poll" in doc.help, doc.name


def test_label_values_with_quotes_backslashes_newlines_and_unicode_round_trip() -> None:
    nasty = 'we"ird\\model\nname \u00e9\u6f22 ' + "x" * 50
    registry, _ = build_registry(model=nasty)
    text = generate_latest(registry).decode()
    samples = parse_exposition(text)
    labels = {"account": "acme", "model": nasty, "status": "completed", "byok": "false"}
    assert sample(samples, "neo_streams_total", **labels) == 2
    om = list(parse_om(generate_openmetrics(registry).decode()))
    assert any(
        s.labels.get("model") == nasty for f in om for s in f.samples if f.name == "neo_streams"
    )


def test_a_scrape_reflects_a_new_snapshot_without_touching_the_old_one() -> None:
    registry, store = build_registry()
    before = store.get()
    store.update("acme", lambda a: replace(a, window_streams={"completed": 5}))
    samples = parse_exposition(generate_latest(registry).decode())
    assert sample(samples, "neo_window_streams", account="acme", status="completed") == 5
    assert dict(before.accounts[0].window_streams) == {"completed": 2}


def test_the_exporter_emits_exactly_the_catalogues_metrics() -> None:
    """The catalogue is what docs/metrics.md is generated from (tests/test_catalogue.py)."""
    registry, _ = build_registry()
    families = text_string_to_metric_families(generate_latest(registry).decode())
    exported = {
        family.name + "_total" if family.type == "counter" else family.name
        for family in families
        if not family.name.endswith("_created")
    }
    assert exported == {metric.name for metric in catalogue.ALL}
