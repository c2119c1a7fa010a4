"""The metric catalogue: each name defined once, the docs' tables made from it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from exporter import catalogue
from exporter.counting import STREAM_COUNTER_NAMES, stream_amounts
from exporter.models import StreamRecord

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "exporter"


def test_each_metric_name_is_written_once_in_the_package_in_the_catalogue() -> None:
    sources = {path.name: path.read_text() for path in PACKAGE.glob("*.py")}
    for metric in catalogue.ALL:
        found = [
            file
            for file, text in sources.items()
            for _ in re.finditer(rf"[\"']{re.escape(metric.name)}[\"']", text)
        ]
        assert found == ["catalogue.py"], f"{metric.name} is written in {found}"


def test_metric_names_are_unique_and_counters_end_in_total() -> None:
    names = [metric.name for metric in catalogue.ALL]
    assert len(names) == len(set(names))
    for metric in catalogue.ALL:
        assert metric.name.endswith("_total") == (metric.type == catalogue.COUNTER), metric.name


def test_the_metrics_doc_tables_are_generated_from_the_catalogue() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "generate_metrics.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_each_stream_counter_gets_one_amount_per_stream_and_names_its_revised_field() -> None:
    record = StreamRecord("s1", 0.0, "gpt-5", "completed", "false", 1.0, 0.0, 0.0, 3, 2, 1,
                          1.0, 2.0, 3.0, 0.5, (), (), ())  # fmt: skip
    assert len(stream_amounts(record)) == len(STREAM_COUNTER_NAMES)
    # A stream is one stream; the steps behind the latency sum are revised as step_count.
    unnamed = [m.name for m in catalogue.STREAM_COUNTERS if m.revised_as is None]
    assert unnamed == ["neo_streams_total", "neo_step_latency_steps_total"]
