"""Set the base URL of every alert's runbook_url, once, in the rule files and their tests.

The alerts link to their runbook sections in docs/dashboards.md as `BASE/dashboards.md#name`.
The files ship with a placeholder base, which no receiver can open; point it at wherever
this repository's docs/ folder is published for you (a Git host's view of it, a wiki):

    python prometheus/set_runbook_base.py https://git.example.com/ops/neo-exporter/-/blob/main/docs
    python prometheus/set_runbook_base.py --show       # print the base in use

It rewrites prometheus/rules/*.rules.yml and prometheus/tests/*.test.yml in place (so that
`promtool test rules` still passes), and can be run again with another base. The Helm chart
does the same at render time with `prometheusRule.runbookBaseUrl`. Standard library only.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

PLACEHOLDER = "https://neo-exporter.invalid/docs"  # what the repository ships with
HERE = Path(__file__).resolve().parent
RUNBOOK = re.compile(r"""(runbook_url:\s*"?)([^"\s#]+)(/dashboards\.md#)""")


def files(root: Path = HERE) -> list[Path]:
    return sorted([*root.glob("rules/*.rules.yml"), *root.glob("tests/*.test.yml")])


def bases(paths: Sequence[Path]) -> set[str]:
    """Every base used by a runbook_url in these files."""
    return {m.group(2) for path in paths for m in RUNBOOK.finditer(path.read_text())}


def set_base(paths: Sequence[Path], base: str) -> int:
    """Rewrite every runbook_url to `base`; returns how many were changed."""
    changed = 0
    for path in paths:
        text = path.read_text()
        new, count = RUNBOOK.subn(lambda m: f"{m.group(1)}{base}{m.group(3)}", text)
        if new != text:
            path.write_text(new)
            changed += count
    return changed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", nargs="?", help="absolute http(s) URL of the docs/ folder")
    parser.add_argument("--show", action="store_true", help="print the base in use and exit")
    args = parser.parse_args(argv)
    paths = files()
    if args.show or not args.base:
        print("\n".join(sorted(bases(paths))))
        return 0
    base = args.base.rstrip("/")
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.netloc or re.search(r'[\s"#]', base):
        print(f"not an absolute http(s) URL without spaces, quotes or #: {base!r}", file=sys.stderr)
        return 2
    count = set_base(paths, base)
    print(f"{count} runbook_url(s) now start with {base}/dashboards.md#")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
