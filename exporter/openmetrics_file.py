"""The counters' past as OpenMetrics with timestamps, for `promtool tsdb create-blocks-from`.

`history` counts streams into a state a step at a time; a `Recorder` notes, after each
step, the series that changed, and `write_openmetrics` writes every family once, its series
one after the other, a sample at every step from a series' first use up to T_join.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO

from prometheus_client import utils

from exporter import catalogue as m
from exporter.catalogue import Metric
from exporter.counting import Counts, HistogramValue

# The exporter's counters and histograms that come from the streams: what the history holds.
# Its own counters (revisions, changed records) describe the exporter and start with it.
COUNTERS: tuple[Metric, ...] = (
    m.STREAM_COUNTERS + m.BREAKDOWNS + m.TEAM_COUNTERS
)  # what history writes
_COUNTERS = frozenset(metric.name for metric in COUNTERS)
_HISTOGRAMS = frozenset(metric.name for metric in m.HISTOGRAMS)
_format_value: Callable[[float], str] = utils.floatToGoString


@dataclass(frozen=True, slots=True)
class Span:
    """Where the history starts, where its samples stop (T_join) and what a step is."""

    start: float
    join: float
    step: float

    @property
    def steps(self) -> int:
        """Samples per series that runs over the whole history (start and join included)."""
        return round((self.join - self.start) / self.step) + 1

    def index(self, created: float) -> int:
        """The first step whose value includes a stream created at `created`; past T_join,
        `steps` (written nowhere: the exporter's first scrape shows it)."""
        k = math.ceil(round((created - self.start) / self.step, 9))
        return min(max(k, 0), self.steps)

    def at(self, k: int) -> int:
        return round(self.start + k * self.step)


# --- what each step held ---------------------------------------------------------------


@dataclass(slots=True)
class _Series:
    """One series' values at the steps where it changed (arrays: a few bytes a change).

    A counter has one value a step; a histogram `width` of them: its cumulative buckets,
    +Inf (the count) and the sum.
    """

    width: int
    steps: array[int] = field(default_factory=lambda: array("l"))
    values: array[float] = field(default_factory=lambda: array("d"))

    def note(self, k: int, row: Sequence[float]) -> None:
        if self.steps and self.steps[-1] == k:  # a step split across two reads
            del self.values[-self.width :]
        else:
            self.steps.append(k)
        self.values.extend(row)

    def first_used(self) -> int | None:
        """The index of the first change that is not zero (zero-filled series wait)."""
        for i in range(len(self.steps)):
            if any(self.values[i * self.width : (i + 1) * self.width]):
                return i
        return None


def _histogram_row(value: HistogramValue) -> list[float]:
    cumulative, row = 0, []
    for count in value.buckets[:-1]:
        cumulative += count
        row.append(float(cumulative))
    row.append(float(value.count))
    row.append(value.sum)
    return row


class Recorder:
    """Notes, after each step was counted, the series that changed in it."""

    def __init__(self) -> None:
        self.series: dict[tuple[str, tuple[str, ...]], _Series] = {}
        self._last: Counts = Counts({}, {})

    def note(self, k: int, counts: Counts) -> None:
        last = self._last
        for key, value in counts.counters.items():
            # The state replaces a value it changes: the same object is the same value, and
            # only the others are compared.
            before = last.counters.get(key)
            if key[0] in _COUNTERS and before is not value and before != value:
                self._series(key, 1).note(k, (value.value,))
        for key, hist in counts.histograms.items():
            earlier = last.histograms.get(key)
            if key[0] in _HISTOGRAMS and earlier is not hist and earlier != hist:
                self._series(key, len(hist.bounds) + 2).note(k, _histogram_row(hist))
        self._last = counts

    def _series(self, key: tuple[str, tuple[str, ...]], width: int) -> _Series:
        series = self.series.get(key)
        if series is None:
            series = self.series[key] = _Series(width)
        return series


# --- writing ---------------------------------------------------------------------------


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: Sequence[str], values: Sequence[str]) -> str:
    return ",".join(f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True))


@dataclass(slots=True)
class Written:
    series: int = 0
    samples: int = 0


def _write_counter(
    out: BinaryIO, name: str, labels: str, series: _Series, span: Span, written: Written
) -> None:
    first = series.first_used()
    if first is None:
        return  # zero all along: the exporter's first scrape starts it at 0
    start_k = max(0, series.steps[first] - 1)  # a 0 just before, for increase()
    changes = dict(zip(series.steps, series.values, strict=True))
    prefix = f"{name}{{{labels}}} "
    value, text = 0.0, "0.0"
    lines = []
    for k in range(start_k, span.steps):
        changed = changes.get(k)
        if changed is not None and changed != value:
            value, text = changed, _format_value(changed)
        lines.append(f"{prefix}{text} {span.at(k)}\n")
    out.write("".join(lines).encode())
    written.series += 1
    written.samples += len(lines)


def _write_histogram(
    out: BinaryIO,
    doc: Metric,
    labels: str,
    bounds: Sequence[float],
    series: _Series,
    span: Span,
    written: Written,
) -> None:
    first = series.first_used()
    if first is None:
        return
    start_k = max(0, series.steps[first] - 1)
    width = series.width
    rows = {k: series.values[i * width : (i + 1) * width] for i, k in enumerate(series.steps)}
    les = [_format_value(b) for b in bounds] + ["+Inf"]
    sep = "," if labels else ""
    prefixes = [f'{doc.name}_bucket{{{labels}{sep}le="{le}"}} ' for le in les]
    prefixes += [f"{doc.name}_count{{{labels}}} ", f"{doc.name}_sum{{{labels}}} "]
    # The count is the +Inf bucket: one more column than the row holds.
    columns = [*range(width - 1), width - 2, width - 1]
    texts = ["0.0"] * len(prefixes)
    lines: list[str] = []
    for k in range(start_k, span.steps):
        row = rows.get(k)
        if row is not None:
            texts = [_format_value(row[c]) for c in columns]
        ts = span.at(k)
        lines.extend(f"{p}{t} {ts}\n" for p, t in zip(prefixes, texts, strict=True))
    out.write("".join(lines).encode())
    written.series += 1
    written.samples += len(lines)


def write_openmetrics(
    out: BinaryIO,
    recorders: Mapping[str, Recorder],
    bounds: Mapping[str, Sequence[float]],
    span: Span,
    target_labels: Sequence[tuple[str, str]] = (),
) -> Written:
    """Every family once, its series one after the other, each in time order; `# EOF`.

    No `_created` samples: promtool would store them as series of their own, which the live
    exporter's `_created` (the time the state first counted the series) would not continue.
    """
    written = Written()
    target = "".join(f',{name}="{_escape(value)}"' for name, value in target_labels)
    for doc in COUNTERS:
        family = doc.name.removesuffix("_total")
        out.write(f"# HELP {family} {_escape(doc.help)}\n# TYPE {family} counter\n".encode())
        for account, recorder in recorders.items():
            for (metric, values), series in sorted(recorder.series.items()):
                if metric == doc.name:
                    labels = _labels(doc.labels, (account, *values)) + target
                    _write_counter(out, doc.name, labels, series, span, written)
    for doc in m.HISTOGRAMS:
        out.write(f"# HELP {doc.name} {_escape(doc.help)}\n# TYPE {doc.name} histogram\n".encode())
        for account, recorder in recorders.items():
            for (metric, values), series in sorted(recorder.series.items()):
                if metric == doc.name:
                    labels = _labels(doc.labels, (account, *values)) + target
                    _write_histogram(out, doc, labels, bounds[doc.name], series, span, written)
    out.write(b"# EOF\n")
    return written
