"""The Grafana dashboards: generated from grafana/generate.py, provisioning-ready, well formed.

No Grafana server runs here; the e2e test runs every query on a real Prometheus instead.
"""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
from typing import Any

import pytest

from tests.processes import ROOT
from tests.repo_files import (
    DASHBOARD_DIR,
    DASHBOARD_FILES,
    dashboard_exprs,
    documented_metrics,
    load_dashboard,
    metric_names,
    panels,
    queries,
)

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# Range selectors allowed in panels: Grafana's own, and the fixed day of the projection.
RANGES = {"$__range", "$__rate_interval", "1d"}
# Exporter-wide gauges without an account label.
UNLABELLED = {
    "neo_exporter_window_seconds",
    "neo_exporter_state_size_bytes",
    "neo_exporter_build_info",
}


@pytest.fixture(params=DASHBOARD_FILES, ids=lambda p: p.stem)
def dashboard(request: pytest.FixtureRequest) -> dict[str, Any]:
    return load_dashboard(request.param)


def test_committed_dashboards_match_the_generator() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "grafana" / "generate.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_both_dashboards_are_shipped_with_stable_uids() -> None:
    uids = {load_dashboard(path)["uid"] for path in DASHBOARD_FILES}
    assert uids == {"neo-spend-overview", "neo-exporter-health"}


def test_dashboard_is_provisioning_ready(dashboard: dict[str, Any]) -> None:
    # No __inputs/__requires (those are for the import UI) and no numeric id, which would
    # clash with the database's ids when provisioned.
    assert not {"__inputs", "__requires", "id"} & dashboard.keys()
    assert re.fullmatch(r"[a-z0-9-]{1,40}", dashboard["uid"])
    assert dashboard["title"]


def test_datasource_variable_is_used_everywhere(dashboard: dict[str, Any]) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name, variable in variables.items():
        if variable["type"] == "query":
            assert variable["datasource"] == DATASOURCE, name
    for panel in panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], f"{panel['title']} has no query"
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]
    assert "DS_" not in json.dumps(dashboard), "no import-time datasource placeholders"


def test_spend_overview_filters_by_account_and_model() -> None:
    overview = load_dashboard(DASHBOARD_DIR / "neo-spend-overview.json")
    names = [v["name"] for v in overview["templating"]["list"]]
    assert names == ["datasource", "account", "model"]
    for title, target in queries(overview):
        if metric_names(target["expr"]) <= UNLABELLED:
            continue
        assert 'account=~"$account"' in target["expr"], title
        if "by_tool" in target["expr"] or "by_agent" in target["expr"]:
            continue  # the breakdowns have no model label
        if re.search(r"neo_(credits|llm_cost|platform_cost|streams|stream_)", target["expr"]):
            assert 'model=~"$model"' in target["expr"], title


def test_panel_ids_are_unique(dashboard: dict[str, Any]) -> None:
    ids = [panel["id"] for panel in panels(dashboard)]
    assert len(ids) == len(set(ids))
    assert all(isinstance(i, int) and i > 0 for i in ids)


def test_panels_stay_in_the_grid_and_do_not_overlap(dashboard: dict[str, Any]) -> None:
    boxes = []
    for panel in dashboard["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["y"] >= 0 and pos["w"] > 0 and pos["h"] > 0
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        boxes.append((panel["title"], pos))
    for (a_title, a), (b_title, b) in itertools.combinations(boxes, 2):
        apart = (
            a["x"] + a["w"] <= b["x"]
            or b["x"] + b["w"] <= a["x"]
            or a["y"] + a["h"] <= b["y"]
            or b["y"] + b["h"] <= a["y"]
        )
        assert apart, f"{a_title!r} overlaps {b_title!r}"


def test_every_panel_has_a_title_description_and_unit(dashboard: dict[str, Any]) -> None:
    titles = [p["title"] for p in panels(dashboard)]
    assert len(titles) == len(set(titles)), "titles are unique within a dashboard"
    for panel in panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["description"], panel["title"]
        assert panel["fieldConfig"]["defaults"]["unit"], panel["title"]


def test_money_panels_use_currency_units_and_ratios_use_percent(
    dashboard: dict[str, Any],
) -> None:
    for panel in panels(dashboard):
        if panel["type"] == "row":
            continue
        exprs = " ".join(t["expr"] for t in panel["targets"])
        unit = panel["fieldConfig"]["defaults"]["unit"]
        if "_usd" in exprs and "neo_credits" not in exprs:
            assert unit == "currencyUSD", panel["title"]
        if re.search(r"\bratio\b", panel["title"].lower()):
            assert unit == "percentunit", panel["title"]
        if "_seconds" in exprs and "neo_exporter_" not in exprs and "_usd" not in exprs:
            assert unit == "s", panel["title"]


def test_queries_have_ref_ids_legends_and_grafana_ranges(dashboard: dict[str, Any]) -> None:
    for panel in panels(dashboard):
        targets = panel.get("targets", [])
        ref_ids = [t["refId"] for t in targets]
        assert len(ref_ids) == len(set(ref_ids)) and all(ref_ids), panel["title"]
        for target in targets:
            assert target["legendFormat"], panel["title"]
            ranges = set(re.findall(r"\[([^\]]+)\]", target["expr"]))
            assert ranges <= RANGES, f"{panel['title']}: {ranges - RANGES}"
            # A counter is only ever read through rate() or increase().
            for name in metric_names(target["expr"]):
                if name.endswith(("_total", "_bucket")):
                    assert re.search(rf"(rate|increase)\({name}\{{", target["expr"]), name


def test_queries_only_use_documented_metric_names() -> None:
    known = documented_metrics()
    for name, title, expr in dashboard_exprs():
        assert metric_names(expr) <= known, f"{name} / {title}: {metric_names(expr) - known}"


def test_overview_has_the_sections_the_issue_asks_for() -> None:
    overview = load_dashboard(DASHBOARD_DIR / "neo-spend-overview.json")
    titles = " | ".join(p["title"] for p in panels(overview))
    for wanted in (
        "Credits today",
        "Credits in range",
        "Credits in the last 15 minutes and hour",
        "Top tasks of the last hour by credits",
        "Credits projected this month",
        "USD today",
        "USD projected this month",
        "Credit spend rate",
        "by model",
        "Streams by status",
        "Failed share",
        "Mean step latency",
        "Stream duration percentiles",
        "Step latency percentiles",
        "Tool calls in range",
        "Tool call p95 latency",
        "Agent triggers in range",
        "Credits in window",
        "Credit spend rate by team",
        "Budget burn-down",
        "month to date by team",
        "Neo API up",
        "Last success age",
        "API responses by code",
        "Poll duration",
    ):
        assert wanted in titles, wanted
    health = " | ".join(
        p["title"] for p in panels(load_dashboard(DASHBOARD_DIR / "neo-exporter-health.json"))
    )
    for wanted in (
        "Data lag",
        "Retries by reason",
        "Revised by Neo",
        "State size",
        "Streams missing",
    ):
        assert wanted in health, wanted
