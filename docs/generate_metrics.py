"""Regenerate the metric tables of docs/metrics.md from exporter/catalogue.py.

    python docs/generate_metrics.py          # rewrite docs/metrics.md
    python docs/generate_metrics.py --check  # exit 1 if it is out of date

Only the tables are generated; the prose around them is written by hand. Each table is the
first one after its section's heading (catalogue.DOC_TABLES).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from exporter.catalogue import DOC_TABLES, Metric

DOC = Path(__file__).resolve().parent / "metrics.md"
HEADER = ("| metric | type | labels | unit | source field | meaning |", "|---|---|---|---|---|---|")


def row(metric: Metric) -> str:
    labels = ", ".join(metric.labels) or "-"
    return (
        f"| `{metric.name}` | {metric.type} | {labels} | {metric.unit} | {metric.source} | "
        f"{metric.meaning} |"
    )


def render(text: str) -> str:
    """`text` with each section's table replaced by the catalogue's."""
    lines = text.splitlines()
    for heading, metrics in DOC_TABLES:
        start = lines.index(f"## {heading}")
        top = lines.index(HEADER[0], start)
        end = top
        while end < len(lines) and lines[end].startswith("|"):
            end += 1
        lines[top:end] = [*HEADER, *(row(metric) for metric in metrics)]
    return "\n".join(lines) + "\n"


def main() -> int:
    current = DOC.read_text()
    fresh = render(current)
    if "--check" in sys.argv[1:]:
        if fresh != current:
            print(f"{DOC} is out of date: run python docs/generate_metrics.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(fresh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
