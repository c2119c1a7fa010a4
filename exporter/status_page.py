"""The status page at `/`: a headline that tells the truth, then the details behind it.

Pure: it renders a snapshot (and the config, the state's health) into HTML; the server
answers `/` with it.
"""

from __future__ import annotations

import dataclasses
import html
import time
from collections.abc import Callable
from dataclasses import dataclass

from exporter import __version__
from exporter import catalogue as m
from exporter.api import ACCOUNT_ENDPOINTS, LISTINGS
from exporter.config import AlertThresholds, Config, format_duration
from exporter.snapshot import (
    AccountSnapshot,
    AuditResult,
    BudgetValue,
    EndpointHealth,
    Snapshot,
)
from exporter.state import StateHealth


@dataclass(frozen=True)
class PageContext:
    """What the landing page shows besides the snapshot: the config, the state, the start."""

    config: Config | None = None
    state: Callable[[], StateHealth] | None = None
    started: float | None = None  # Unix time the exporter started


REFRESH_SECONDS = 30
TOP_TASKS_SHOWN = 5
HOUR = 3600
CHART_MAX_SECONDS = 7 * 86400  # as the poller publishes `hourly`
CHART_WIDTH, CHART_HEIGHT, CHART_LEFT, CHART_BOTTOM = 720, 110, 8, 16
BUDGET_WIDTH = 240
UNITS = {"credits": "credits", "usd": "USD"}
DOCS = (
    ("configuration.md", "configuration, flags, exit codes"),
    ("metrics.md", "metrics reference"),
    ("dashboards.md", "dashboards, alerts and their runbooks"),
    ("reliability.md", "guarantees, failure modes, security"),
    ("deployment.md", "container, compose, Helm"),
)
STYLE = """body{font-family:sans-serif;margin:1.5em 2em;color:#222}
td,th{padding:.3em .7em;text-align:left;vertical-align:top}th{background:#eee}
table{border-collapse:collapse;margin-bottom:1em}tr{border-bottom:1px solid #ddd}
.headline{padding:.7em 1em;font-size:1.2em;border-radius:4px;margin:1em 0}
.healthy,.up{background:#dff5df}.degraded,.warn,.unavailable{background:#fff0c2}
.down{background:#f8d0d0;font-weight:bold}.starting,.pending{background:#e6eefa}
.down,.headline.down{color:#8a0000}ul.problems li{margin:.2em 0}
.muted{color:#666}code{background:#f4f4f4;padding:0 .2em}
svg text{font-size:11px;fill:#555}.bar{fill:#3a78c2}.spent{fill:#3a78c2}
.forecast{fill:#a9c6ea}.over{fill:#e8a0a0}.limit{stroke:#8a0000;stroke-width:2}
.budgets td,.budgets th{white-space:nowrap}"""


@dataclass(frozen=True, slots=True)
class Cell:
    """One cell of the page: its text and a CSS class saying how it is doing."""

    text: str
    level: str = ""  # up, down, unavailable, pending, warn, or ""


@dataclass(frozen=True, slots=True)
class Problem:
    """A read that is failing: which account and endpoint, since when, and why."""

    account: str
    endpoint: str
    since: float | None  # its last success; None if it never succeeded since the start
    error: str


def _with_endpoint(endpoint: str, error: str) -> str:
    return error if error.startswith(f"{endpoint}: ") else f"{endpoint}: {error}"


def _utc(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


def _ago(now: float, ts: float) -> str:
    return format_duration(round(max(0.0, now - ts))) + " ago"


def _endpoints(account: AccountSnapshot) -> dict[str, EndpointHealth | None]:
    both = {e: account.endpoints.get(e) for e in LISTINGS}
    return both | {e: account.info.endpoints.get(e) for e in ACCOUNT_ENDPOINTS}


def problems(snapshot: Snapshot) -> list[Problem]:
    """Every failing read; an endpoint the token may not read (403/404) is not failing."""
    found = []
    for account in snapshot.accounts:
        for endpoint, health in _endpoints(account).items():
            if endpoint in account.info.unavailable_until:
                continue
            if health is not None and health.up is False:
                found.append(
                    Problem(account.name, endpoint, health.last_success, health.last_error or "")
                )
    return found


def headline(
    snapshot: Snapshot, state: StateHealth | None, now: float, started: float | None
) -> tuple[str, str]:
    """(level, sentence): healthy, degraded, down or starting, and what it rests on."""
    failing = problems(snapshot)

    def since(problem: Problem) -> str:
        ts = problem.since if problem.since is not None else started
        return "since the start" if ts is None else f"since {_utc(ts)}"

    def listing(items: list[Problem]) -> str:
        """`a: streams, tasks (since T1); b: credits (since T2)`: endpoints grouped by since."""
        by_account: dict[str, dict[str, list[str]]] = {}
        for item in items:
            by_account.setdefault(item.account, {}).setdefault(since(item), []).append(
                item.endpoint
            )
        return "; ".join(
            f"{name}: "
            + ", ".join(f"{', '.join(names)} ({when})" for when, names in groups.items())
            for name, groups in by_account.items()
        )

    if state is not None and not state.writable:
        when = f" since {_utc(state.since)}" if state.since is not None else ""
        return "down", (
            f"the state file cannot be written{when} ({state.error}): nothing new is counted; "
            "the last committed values are still served"
        )
    accounts = snapshot.accounts
    streams_down = [p for p in failing if p.endpoint == "streams"]
    if accounts and len(streams_down) == len(accounts):
        # An account that was never live (a first start) has no values to fall back on.
        published = [a.name for a in accounts if a.counts.counters or a.recent]
        if not published:
            served = "Nothing is published yet: no account's counters were ever read"
        elif len(published) < len(accounts):
            served = (
                f"The last committed values of {', '.join(published)} are still served; "
                "nothing is published yet for the others"
            )
        else:
            served = "The last committed values are still served"
        return "down", f"no account's usage can be read: {listing(failing)}. {served}"
    if failing:
        names = {p.account for p in failing}
        return "degraded", (
            f"{len(failing)} read(s) of {len(names)} of {len(accounts)} account(s) failing: "
            f"{listing(failing)}"
        )
    if not snapshot.ready:
        waiting = [a.name for a in accounts if not a.first_poll_done]
        return "starting", f"the first read of {', '.join(waiting)} is not done yet"
    return "healthy", f"every read of {len(accounts)} account(s) succeeded at its last try"


def _endpoint_cell(
    endpoint: str, account: AccountSnapshot, now: float, started: float | None
) -> Cell:
    health = _endpoints(account)[endpoint]
    retry = account.info.unavailable_until.get(endpoint)
    if retry is not None:
        reason = health.last_error if health and health.last_error else ""
        reason = reason.removeprefix("unavailable").strip()  # "(HTTP 403: ...)"
        left = format_duration(round(max(0.0, retry - now)))
        return Cell(f"UNAVAILABLE {reason}, next try in {left}".replace("  ", " "), "unavailable")
    if health is None or health.up is None:
        return Cell("not read yet", "pending")
    if health.up:
        when = "" if health.last_success is None else f", {_ago(now, health.last_success)}"
        return Cell(f"up{when}", "up")
    ts = health.last_success if health.last_success is not None else started
    when = "" if ts is None else f" since {_utc(ts)} ({_ago(now, ts)})"
    # The column names the endpoint already; most errors start with it.
    error = (health.last_error or "").removeprefix(f"{endpoint}: ")
    return Cell(f"DOWN{when}: {error}", "down")


def status_rows(account: AccountSnapshot, now: float) -> list[tuple[str, Cell]]:
    """The account's reading and counting, one (label, cell) per row of its status table.

    Add a row here for any new per-account state worth a glance: the page renders whatever
    this returns.
    """
    rows: list[tuple[str, Cell]] = []
    if account.catching_up:
        rows.append(
            (
                "catching up",
                Cell(
                    "reading a backlog (first start, after downtime or an API outage); "
                    "counters are published when the window has been read",
                    "pending",
                ),
            )
        )
    progress = account.progress
    if progress is None:
        rows.append(("current read", Cell("none (idle)")))
    else:
        eta = "?" if progress.eta_seconds is None else f"{progress.eta_seconds:.0f}s"
        rows.append(
            (
                "current read",
                Cell(
                    f"{progress.kind}: pages {progress.pages_done}/{progress.pages_total or '?'}, "
                    f"rows {progress.rows_done}/{progress.rows_total or '?'}, about {eta} left",
                    "pending",
                ),
            )
        )
    if account.watermark is None:
        rows.append(("data complete up to", Cell("no complete streams read yet", "pending")))
    else:
        rows.append(
            (
                "data complete up to",
                Cell(f"{_utc(account.watermark)} ({_ago(now, account.watermark)})"),
            )
        )
    if account.last_poll_duration is not None:
        rows.append(("last streams read took", Cell(f"{account.last_poll_duration:.2f}s")))
    rows.append(("stream ids held", Cell(str(account.seen_streams))))
    short = {e: n for e, n in sorted(account.missing_rows.items()) if n > 0}
    if short:
        text = ", ".join(f"{endpoint} {rows} rows short" for endpoint, rows in short.items())
        rows.append(("last reads", Cell(f"incomplete against the API's own total: {text}", "warn")))
    rows.append(("self-audit", _audit_cell(account.audit, now)))
    return rows


def _audit_cell(result: AuditResult | None, now: float) -> Cell:
    """Neo's own totals beside the exporter's, for the last audited period."""
    if result is None:
        return Cell("not run yet (audit.interval; after the first read of the window)")
    missing, drift = result.streams_missing, result.credits_drift
    streams = "?" if result.neo_streams is None else f"{result.neo_streams:,}"
    parts = [f"Neo {streams} streams, counted {result.counted_streams:,}"]
    if result.neo_credits is None:
        parts.append("credits not compared (summary unavailable)")
    else:
        parts.append(f"credits drift {drift:+,.4f} of {result.neo_credits:,.2f}")
    exact = not missing and (drift is None or abs(drift) < 1e-6)
    verdict = "exact" if exact else f"{missing if missing is not None else '?'} streams missing"
    text = (
        f"{verdict}: {'; '.join(parts)} "
        f"({_utc(result.start)} to {_utc(result.end)}, {_ago(now, result.at)})"
    )
    return Cell(text, "" if exact else "warn")


def _spend_cells(account: AccountSnapshot, config: Config | None) -> list[Cell]:
    info = account.info
    if account.tasks is not None:
        window = Cell(f"{account.tasks.credits:,.1f} credits")
    elif info.summary is not None:
        window = Cell(f"{info.summary.credits:,.1f} credits (usage summary)")
    else:
        window = Cell("not read yet", "pending")
    cap = info.cap
    if cap is None:
        cap_cell = Cell("no cap (or not read yet)")
    else:
        ratio = cap.used / cap.limit if cap.limit > 0 else 0.0
        levels = _thresholds_of(account.name, config)
        level = ""
        if levels is not None and ratio > levels.spending_cap_critical_ratio:
            level = "down"
        elif levels is not None and ratio > levels.spending_cap_warning_ratio:
            level = "warn"
        cap_cell = Cell(
            f"{ratio:.0%}: {cap.used:,.2f} of {cap.limit:,.2f} USD, {cap.remaining:,.2f} left",
            level,
        )
    left = info.credits.available if info.credits is not None else None
    if left is None and info.summary is not None:
        left = info.summary.available_credits
    left_cell = Cell("unknown" if left is None else f"{left:,.1f} credits")
    tops = []
    for task in account.top_tasks[:TOP_TASKS_SHOWN]:
        title = f" {task.title}" if task.title else ""
        tops.append(f"#{task.rank} {task.credits:,.1f} credits:{title} (task {task.task_id})")
    top_cell = Cell("\n".join(tops) if tops else "none yet")
    return [window, cap_cell, left_cell, top_cell]


def _hour(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:00", time.gmtime(ts))


def spend_chart(account: AccountSnapshot, now: float, window_seconds: float) -> str:
    """Credits per UTC hour (of the streams that ended in it) as an inline SVG bar chart.

    One rect per hour with spend, each with a <title> for hover text; hours without spend are
    gaps. No script, no external asset: the page works offline and under a strict CSP.
    """
    span = min(window_seconds, CHART_MAX_SECONDS) if window_seconds > 0 else CHART_MAX_SECONDS
    last = int(now // HOUR)
    first = int((now - span) // HOUR) + 1
    by_hour: dict[int, float] = {}
    for start, credits in account.hourly:
        # A stream whose end is ahead of our clock has happened: it goes in the current hour.
        hour = min(int(start // HOUR), last)
        if hour >= first:
            by_hour[hour] = by_hour.get(hour, 0.0) + credits
    by_hour = {hour: credits for hour, credits in by_hour.items() if credits > 0}
    if not by_hour:
        return '<p class="muted">no spend yet in the last ' + format_duration(round(span)) + "</p>"
    top = max(by_hour.values())
    hours = last - first + 1
    step = (CHART_WIDTH - CHART_LEFT) / hours
    plot = CHART_HEIGHT - CHART_BOTTOM - 14  # room for the max label above
    width = f"{max(step - 1, 1):.1f}"
    bars = []
    for hour, credits in sorted(by_hour.items()):
        tall = max(1.0, plot * credits / top)
        x = CHART_LEFT + (hour - first) * step
        y = CHART_HEIGHT - CHART_BOTTOM - tall
        tip = f"{_hour(hour * HOUR)} UTC: {credits:,.1f} credits"
        bars.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{width}" height="{tall:.1f}">'
            f"<title>{html.escape(tip)}</title></rect>"
        )
    base = CHART_HEIGHT - CHART_BOTTOM
    label = f"max {top:,.1f} credits/hour"
    return (
        f'<svg class="chart" width="{CHART_WIDTH}" height="{CHART_HEIGHT}" role="img" '
        f'aria-label="credits per hour of {html.escape(account.name)}">'
        f'<text x="{CHART_LEFT}" y="10">{html.escape(label)}</text>'
        f'<line x1="{CHART_LEFT}" y1="{base}" x2="{CHART_WIDTH}" y2="{base}" stroke="#999"/>'
        + '<g class="bar">'
        + "".join(bars)
        + "</g>"
        + f'<text x="{CHART_LEFT}" y="{CHART_HEIGHT - 3}">{_hour(first * HOUR)}</text>'
        f'<text x="{CHART_WIDTH}" y="{CHART_HEIGHT - 3}" text-anchor="end">'
        f"{_hour(last * HOUR)} UTC</text></svg>"
    )


def forecast(spent: float, budget: BudgetValue, now: float) -> float:
    """The spend at the period's end at the period's average pace so far (the recording
    rule uses the last 6 h's rate instead: docs/budgets.md)."""
    elapsed = min(now, budget.end) - budget.start
    remaining = budget.end - max(now, budget.start)
    if elapsed <= 0 or remaining <= 0:
        return spent
    return spent + spent / elapsed * remaining


def budget_row(budget: BudgetValue, now: float) -> str:
    """One budget: a bar of spent (dark) and forecast (light) against the limit (red line),
    and the numbers with their unit."""
    unit = UNITS.get(budget.unit, budget.unit)
    period = f"{_utc(budget.start)[:10]} to {_utc(budget.end)[:10]}"
    if budget.spent is None:  # the first read is not complete yet
        return (
            f"<tr><th>{html.escape(budget.name)}</th><td>not counted yet</td><td></td><td></td>"
            f"<td>{budget.limit:,.2f} {html.escape(unit)}</td><td>{period}</td></tr>"
        )
    spent = budget.spent
    ahead = forecast(spent, budget, now)
    scale = max(budget.limit, ahead, spent) or 1.0

    def width(value: float) -> float:
        return BUDGET_WIDTH * value / scale

    limit_x = width(budget.limit)
    over = ahead > budget.limit
    level = "down" if spent >= budget.limit else "warn" if over else ""
    bar = (
        f'<svg width="{BUDGET_WIDTH + 2}" height="18" role="img" '
        f'aria-label="{html.escape(budget.name)}">'
        f'<rect x="0" y="3" width="{BUDGET_WIDTH}" height="12" fill="#eee"/>'
        f'<rect class="forecast" x="0" y="3" width="{width(min(ahead, budget.limit)):.1f}" '
        'height="12"/>'
        + (
            f'<rect class="over" x="{limit_x:.1f}" y="3" '
            f'width="{width(ahead - budget.limit):.1f}" height="12"/>'
            if over
            else ""
        )
        + f'<rect class="spent" x="0" y="3" width="{width(spent):.1f}" height="12"/>'
        f'<line class="limit" x1="{limit_x:.1f}" y1="0" x2="{limit_x:.1f}" y2="18"/></svg>'
    )
    cells = (
        f"{spent:,.2f} {unit}",
        f"{ahead:,.2f} {unit}",
        f"{budget.limit:,.2f} {unit}",
        period,
    )
    klass = f' class="{level}"' if level else ""
    return (
        f"<tr><th>{html.escape(budget.name)}</th><td>{bar}</td>"
        + "".join(f"<td{klass if i < 2 else ''}>{html.escape(c)}</td>" for i, c in enumerate(cells))
        + "</tr>"
    )


def budget_table(account: AccountSnapshot, now: float) -> str:
    if not account.budgets:
        return ""
    rows = "".join(budget_row(budget, now) for budget in account.budgets)
    return (
        '<table class="budgets"><tr><th>budget</th><th>spent, forecast, limit</th>'
        "<th>spent</th>"
        "<th>forecast at period end</th><th>limit</th><th>period (UTC)</th></tr>"
        f"{rows}</table>"
        '<p class="muted">Forecast: spent + (spent &divide; elapsed) &times; remaining, the '
        "period's average pace so far. The NeoBudgetForecastOverrun alert's recording rule "
        "uses the last 6 hours' rate instead (docs/budgets.md).</p>"
    )


TEAM_COLUMNS = (
    (m.TEAM_STREAMS.name, "streams", "{:,.0f}"),
    (m.TEAM_CREDITS.name, "credits", "{:,.1f}"),
    (m.TEAM_LLM_COST_USD.name, "BYOK LLM cost", "{:,.2f} USD"),
)


def team_table(account: AccountSnapshot) -> str:
    """Team totals since the counters began, from the account's team counters."""
    teams: dict[str, dict[str, float]] = {}
    names = {name for name, _, _ in TEAM_COLUMNS}
    for (metric, labels), value in account.counts.counters.items():
        if metric in names and labels:
            teams.setdefault(labels[0], {})[metric] = value.value
    if not teams:
        return ""
    head = "".join(f"<th>{title}</th>" for _, title, _ in TEAM_COLUMNS)
    rows = "".join(
        f"<tr><th>{html.escape(team)}</th>"
        + "".join(f"<td>{fmt.format(values.get(name, 0.0))}</td>" for name, _, fmt in TEAM_COLUMNS)
        + "</tr>"
        for team, values in sorted(teams.items())
    )
    return f"<table><tr><th>team</th>{head}</tr>{rows}</table>"


def spend_section(account: AccountSnapshot, now: float, window_seconds: float) -> str:
    """The account's chart of credits per hour, its budgets and its teams."""
    return (
        f"<h3>{html.escape(account.name)}</h3>"
        + spend_chart(account, now, window_seconds)
        + budget_table(account, now)
        + team_table(account)
    )


def _thresholds_of(name: str, config: Config | None) -> AlertThresholds | None:
    if config is None:
        return None
    return next((a.alert_thresholds for a in config.accounts if a.name == name), None)


def _td(cell: Cell) -> str:
    level = f' class="{cell.level}"' if cell.level else ""
    text = "<br>".join(html.escape(line) for line in cell.text.split("\n"))
    return f"<td{level}>{text}</td>"


def _config_rows(config: Config, state_path: str) -> list[tuple[str, str]]:
    p, h, m, w = config.polling, config.http, config.metrics, config.web
    d = format_duration
    return [
        ("version", __version__),
        ("listen address", w.listen_address),
        ("state", state_path),
        (
            "polling",
            f"interval {d(p.interval)}, lookback {d(p.lookback)}, window {d(p.window)}, "
            f"reconcile every {d(p.reconcile_interval)}, tasks every {d(p.tasks_interval)}, "
            f"catch-up limit {d(p.catch_up_limit)}",
        ),
        (
            "account-level reads",
            f"summary every {d(p.summary_interval)}, user every {d(p.user_interval)}, credits "
            f"every {d(p.credits_interval)}; 403/404 retried every "
            f"{d(p.unavailable_retry_interval)}",
        ),
        (
            "http",
            f"connect timeout {d(h.connect_timeout)}, read timeout {d(h.read_timeout)}, "
            f"{h.max_retries} retries per request, {h.retry_budget} per read, "
            f"concurrency {h.concurrency}, pages of {h.page_size}",
        ),
        (
            "metrics",
            f"top tasks {m.top_tasks}, task titles {'on' if m.task_titles else 'off'}, "
            f"per-member spend {'on' if m.members.enabled else 'off'}",
        ),
        (
            "web",
            f"request head timeout {d(w.read_header_timeout)}, "
            f"{w.max_connections} connections at once",
        ),
    ]


def _threshold_text(values: AlertThresholds) -> str:
    default = AlertThresholds()
    changed = [
        f"{item.name} {getattr(values, item.name):g}"
        for item in dataclasses.fields(values)
        if getattr(values, item.name) != getattr(default, item.name)
    ]
    return ", ".join(changed) if changed else "defaults"


def landing_page(snapshot: Snapshot, now: float, page: PageContext | None = None) -> str:
    """The status page: a headline that tells the truth, then the details behind it."""
    page = page or PageContext()
    config = page.config
    metrics = html.escape(config.web.telemetry_path if config else "/metrics")
    state = page.state() if page.state is not None else None
    level, sentence = headline(snapshot, state, now, page.started)
    failing = problems(snapshot)
    problem_items = "".join(
        f"<li><b>{html.escape(p.account)}</b>: {html.escape(_with_endpoint(p.endpoint, p.error))}"
        "</li>"
        for p in failing
    )
    problem_list = f'<ul class="problems">{problem_items}</ul>' if problem_items else ""

    health_rows = "\n".join(
        "<tr><th>"
        + html.escape(account.name)
        + "</th>"
        + "".join(
            _td(_endpoint_cell(endpoint, account, now, page.started))
            for endpoint in (*LISTINGS, *ACCOUNT_ENDPOINTS)
        )
        + "</tr>"
        for account in snapshot.accounts
    )
    spend_rows = "\n".join(
        "<tr><th>"
        + html.escape(account.name)
        + "</th>"
        + "".join(_td(cell) for cell in _spend_cells(account, config))
        + "</tr>"
        for account in snapshot.accounts
    )
    charts = "\n".join(
        spend_section(account, now, snapshot.window_seconds) for account in snapshot.accounts
    )
    status_sections = "\n".join(
        f"<h3>{html.escape(account.name)}</h3><table>"
        + "".join(
            f"<tr><th>{html.escape(label)}</th>{_td(cell)}</tr>"
            for label, cell in status_rows(account, now)
        )
        + "</table>"
        for account in snapshot.accounts
    )
    if state is None:
        state_cell = Cell("")
    elif state.writable:
        state_cell = Cell(f"{state.path} (writable, {snapshot.state_bytes:,} bytes)", "up")
    else:
        since = "" if state.since is None else f" since {_utc(state.since)}"
        state_cell = Cell(f"{state.path} CANNOT BE WRITTEN{since}: {state.error}", "down")
    config_html = ""
    if config is not None:
        rows = _config_rows(config, state.path if state is not None else config.state.path)
        accounts = "".join(
            f"<tr><th>{html.escape(a.name)}</th><td>{html.escape(a.base_url)}</td>"
            f"<td>{html.escape(a.auth_header)}</td>"
            f"<td>{html.escape(_threshold_text(a.alert_thresholds))}</td></tr>"
            for a in config.accounts
        )
        config_html = (
            "<h2>Configuration</h2><table>"
            + "".join(
                f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows
            )
            + "</table><table><tr><th>account</th><th>API</th><th>auth header</th>"
            + f"<th>alert thresholds</th></tr>{accounts}</table>"
        )
    base = config.web.docs_url if config is not None else ""
    docs = "".join(
        f'<li><a href="{html.escape(base)}/{name}">docs/{name}</a>: {html.escape(what)}</li>'
        if base
        else f"<li><code>docs/{name}</code>: {html.escape(what)}</li>"
        for name, what in DOCS
    )
    where = (
        f"Published at {html.escape(base)}:"
        if base
        else "In the neo-exporter repository (set <code>web.docs_url</code> to link them here):"
    )
    started = "" if page.started is None else f", started {_utc(page.started)}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="{REFRESH_SECONDS}">
<title>neo-exporter: {level}</title>
<style>{STYLE}</style></head>
<body><h1>neo-exporter {html.escape(__version__)}</h1>
<div class="headline {level}" id="headline"><strong>{level.capitalize()}</strong>:
{html.escape(sentence)}.</div>
{problem_list}
<p><a href="{metrics}">Metrics</a> &middot; <a href="/-/healthy">healthy</a> &middot;
<a href="/-/ready">ready</a> <span class="muted">(ready means ready to serve: every
account's first read has ended, whether or not it succeeded; this page and
<code>neo_up</code> say whether the API works)</span>. Shown at {_utc(now)}{started};
refreshes every {REFRESH_SECONDS}s.</p>
<h2>Reads</h2>
<table><tr><th>account</th><th>streams</th><th>tasks</th><th>summary</th><th>user</th>
<th>credits</th></tr>
{health_rows}
</table>
<h2>Spend</h2>
<table><tr><th>account</th><th>credits in the window</th><th>spending cap used</th>
<th>credits left</th><th>top tasks by credits</th></tr>
{spend_rows}
</table>
<h2 id="spend-per-hour">Spend per hour, budgets and teams</h2>
<p class="muted">Credits of the streams that ended in each UTC hour (hover a bar for its
figure); team totals since the counters began.</p>
{charts}
<h2>Accounts</h2>
{status_sections}
<h2>State</h2>
<table><tr><th>state file</th>{_td(state_cell)}</tr></table>
{config_html}
<h2>Documentation</h2>
<p>{where}</p><ul>{docs}</ul>
</body></html>
"""
