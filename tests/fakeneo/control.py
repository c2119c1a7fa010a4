"""The /_fake/ control plane: faults, rows, spikes, the truth and the request log over HTTP."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from exporter.demo import parse_iso_us
from tests.fakeneo.reading import _dict

if TYPE_CHECKING:
    from tests.fakeneo.api import FakeNeo


def _time_arg(text: str | None) -> float | None:
    """A control endpoint's time: epoch seconds or ISO 8601."""
    if not text:
        return None
    with contextlib.suppress(ValueError):
        return float(text)
    parsed = parse_iso_us(text)
    if parsed is None:
        raise ValueError(f"not a time: {text!r}")
    return parsed / 1_000_000


_FAULT_ARGS = frozenset({"kind", "count", "path", "status", "retry_after", "delay"})


def _control(
    neo: FakeNeo, method: str, path: str, query: Mapping[str, str], body: Any
) -> tuple[int, Any]:
    """The /_fake/ endpoints, for tests that run the fake in another process."""

    def faults() -> Any:
        if not isinstance(body, dict) or not set(body) <= _FAULT_ARGS:
            raise ValueError(f"a JSON object with some of {sorted(_FAULT_ARGS)}")
        args = dict(body)
        neo.inject(str(args.pop("kind", "status")), **args)
        return {"ok": True}

    def spike() -> Any:
        spec = _dict(body)
        rows = neo.spike(
            int(spec.get("count", 10)),
            multiplier=float(spec.get("multiplier", 20.0)),
            at=_time_arg(str(spec["at"])) if spec.get("at") is not None else None,
        )
        return {"added": len(rows), "stream_ids": [r["stream_id"] for r in rows]}

    def populate() -> Any:
        spec = _dict(body)
        added = neo.populate(
            int(spec.get("count", 100)),
            float(spec["start"]),
            float(spec["end"]),
            late_fraction=float(spec.get("late_fraction", 0.0)),
        )
        return {"added": added}

    def burst() -> Any:
        spec = _dict(body)
        rows = neo.task_burst(
            int(spec.get("count", 100)),
            seconds=float(spec.get("seconds", 10.0)),
            multiplier=float(spec.get("multiplier", 1.0)),
        )
        return {"added": len(rows), "task_id": rows[0]["task_id"] if rows else None}

    def rows() -> Any:
        items = body if isinstance(body, list) else _dict(body).get("rows")
        if not isinstance(items, list):
            raise ValueError("a JSON list of rows, or {'rows': [...], 'visible_at', 'in_truth'}")
        spec = _dict(body)
        visible_at = spec.get("visible_at")
        neo.add_rows(
            items,
            None if visible_at is None else float(visible_at),
            in_truth=bool(spec.get("in_truth", True)),
        )
        return {"added": len(items)}

    def clear_faults() -> Any:
        neo.clear_faults()
        return {"ok": True}

    def clear_log() -> Any:
        neo.clear_log()
        return {"ok": True}

    routes: dict[tuple[str, str], Callable[[], Any]] = {
        ("POST", "/_fake/faults"): faults,
        ("DELETE", "/_fake/faults"): clear_faults,
        ("POST", "/_fake/spike"): spike,
        # History added now: streams created (and ended) in [start, end], listed at once.
        ("POST", "/_fake/populate"): populate,
        ("POST", "/_fake/burst"): burst,
        ("POST", "/_fake/rows"): rows,
        ("GET", "/_fake/truth"): lambda: neo.truth(
            _time_arg(query.get("from")),
            _time_arg(query.get("to")),
            listed_only=query.get("listed_only", "").lower() in ("1", "true", "yes"),
        ).to_json(),
        ("GET", "/_fake/truth/groups"): lambda: {
            key: totals.to_json()
            for key, totals in neo.truth_by(
                query.get("by", ""),
                _time_arg(query.get("from")),
                _time_arg(query.get("to")),
                listed_only=query.get("listed_only", "").lower() in ("1", "true", "yes"),
            ).items()
        },
        # [[email or null, truth], ...]: each creator's streams apart (teams, budgets).
        ("GET", "/_fake/truth/by_email"): lambda: [
            [email, truth.to_json()]
            for email, truth in neo.truth_by_email(
                _time_arg(query.get("from")),
                _time_arg(query.get("to")),
                listed_only=query.get("listed_only", "").lower() in ("1", "true", "yes"),
            ).items()
        ],
        ("GET", "/_fake/requests"): lambda: [r.to_json() for r in neo.requests_log],
        ("DELETE", "/_fake/requests"): clear_log,
    }
    action = routes.get((method, path))
    if action is None:
        return 404, {"error": "not found"}
    try:
        return 200, action()
    except (ValueError, TypeError, KeyError) as exc:
        return 400, {"error": str(exc)}
