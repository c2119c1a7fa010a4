"""The files this repository ships, read as the tests read them: rules, dashboards, the
metrics doc, the compose files and the Helm chart.

Helpers only, no tests: several test modules check the same files (the rules and dashboards
are also run on a real Prometheus by test_e2e_prometheus), so they read them through here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from tests.processes import ROOT

RULES_DIR = ROOT / "prometheus" / "rules"
RULE_FILES = sorted(RULES_DIR.glob("*.rules.yml"))
METRICS_DOC = ROOT / "docs" / "metrics.md"
DASHBOARD_DIR = ROOT / "grafana" / "dashboards"
DASHBOARD_FILES = sorted(DASHBOARD_DIR.glob("*.json"))
COMPOSE_DIR = ROOT / "deploy" / "compose"
COMPOSE_FILE = COMPOSE_DIR / "compose.yaml"
CHART = ROOT / "deploy" / "helm" / "neo-exporter"
ALERTMANAGER_DIR = ROOT / "deploy" / "alertmanager"
ALERTMANAGER_CONFIG = ALERTMANAGER_DIR / "alertmanager.yml"
ALERTMANAGER_TEMPLATES = ALERTMANAGER_DIR / "neo.tmpl"
# The oldest Kubernetes the chart is checked against, and the newest kubernetes-validate has.
KUBERNETES_VERSIONS = ("1.29.0", "latest")


# --- Prometheus rules and the metrics doc --------------------------------------------------


def rule_groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = []
    for path in RULE_FILES:
        groups.extend(yaml.safe_load(path.read_text())["groups"])
    return groups


def rules() -> list[dict[str, Any]]:
    return [rule for group in rule_groups() for rule in group["rules"]]


def documented_metrics() -> set[str]:
    """Metric names from the tables of docs/metrics.md, with the series of each histogram."""
    rows = re.findall(r"^\| `(neo_[a-z0-9_]+)` \| (\w+) \|", METRICS_DOC.read_text(), re.MULTILINE)
    names = {name for name, _ in rows}
    histograms = {name for name, kind in rows if kind == "histogram"}
    return names | {f"{n}_{suffix}" for n in histograms for suffix in ("bucket", "sum", "count")}


def metric_names(expr: str) -> set[str]:
    # Recorded series (account:neo_credits:rate15m) are rules' outputs, not exported metrics.
    return set(re.findall(r"(?<![\w:])(neo_[a-z0-9_]+)(?![\w:])", expr))


# --- Grafana dashboards --------------------------------------------------------------------


def load_dashboard(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # panels inside collapsed rows


def queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            yield panel["title"], target


def dashboard_exprs() -> list[tuple[str, str, str]]:
    """(dashboard file, panel title, expr) for every query; the e2e test runs them."""
    return [
        (path.name, title, target["expr"])
        for path in DASHBOARD_FILES
        for title, target in queries(load_dashboard(path))
    ]


# --- compose and the Helm chart ------------------------------------------------------------


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return data


def render(helm: ModuleType, values: dict[str, Any], chart: Path = CHART) -> list[dict[str, Any]]:
    """The chart's manifests as Helm's own engine renders them (helm-python-sdk)."""
    with helm.Chart.load(str(chart)) as loaded:
        rendered = loaded.render(values, name="neo-exporter", namespace="monitoring")
    return manifests_of(rendered)


def manifests_of(rendered: dict[str, str]) -> list[dict[str, Any]]:
    return [
        document
        for name in sorted(rendered)
        if not name.endswith(".txt")
        for document in yaml.safe_load_all(rendered[name])
        if document
    ]


def one(manifests: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [m for m in manifests if m["kind"] == kind]
    return found
