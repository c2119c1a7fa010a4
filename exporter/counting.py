"""Counting: the values a stream adds, label folding, and the totals they add up to.

Pure and in memory: no I/O. `State` opens a `PendingChanges` per transaction, feeds it the
streams of a batch (new ones with `add`, revised ones with `revise`), writes what it froze,
and only then lets the account's `Totals` take it. Every metric name and label name comes from the
catalogue.

The label budget lives here (`PendingChanges._fold`): a label keeps at most
`metrics.label_limits` values per account; a value past it is counted as `other`, and a
value once kept or folded stays so for good (the state reloads the values in use).
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import reduce
from operator import add as _add
from operator import itemgetter

import msgspec

from exporter import catalogue as m
from exporter.catalogue import (
    BYOK_VALUES,
    DIRECTION_CHANGED,
    DIRECTION_DOWN,
    DIRECTION_UP,
    DOCUMENTED_STATUSES,
    OTHER,
)
from exporter.config import LabelLimits
from exporter.models import (
    MONEY_FIELDS,
    StreamRecord,
    TaskRecord,
    clean_label,
    clean_title,
    row_value,
)

Key = tuple[str, tuple[str, ...]]  # (metric name, label values without `account`)

# Names as the state keys series by; the stream counters in the order of `stream_amounts`.
STREAM_COUNTER_NAMES = tuple(metric.name for metric in m.STREAM_COUNTERS)
_REVISED_AS = tuple(metric.revised_as for metric in m.STREAM_COUNTERS)
_BY_AGENT = m.AGENT_TRIGGERS_BY_AGENT.name
_CALLS_BY_TOOL = m.TOOL_CALLS_BY_TOOL.name
_TIME_BY_TOOL = m.TOOL_TIME_BY_TOOL_SECONDS.name
_CHANGED = m.CHANGED_RECORDS.name
# The team counters, each with the index in `stream_amounts` of the amount it adds.
TEAM_COUNTERS = tuple(metric.name for metric in m.TEAM_COUNTERS)
_TEAM_AMOUNTS = tuple(
    (metric.name, m.STREAM_COUNTERS.index(source))
    for metric, source in (
        (m.TEAM_STREAMS, m.STREAMS),
        (m.TEAM_CREDITS, m.CREDITS),
        (m.TEAM_LLM_COST_USD, m.LLM_COST_USD),
        (m.TEAM_PLATFORM_COST_USD, m.PLATFORM_COST_USD),
    )
)
_REVISIONS = m.REVISIONS.name
_REVISED_DOWN = m.REVISED_DOWN.name
TOOL_CALL_DURATION = m.TOOL_CALL_DURATION_SECONDS.name
STREAM_DURATION = m.STREAM_DURATION_SECONDS.name
STEP_LATENCY = m.STREAM_STEP_LATENCY_SECONDS.name
# Label names of each stored series, in order (`account` is kept apart).
_LABEL_NAMES: dict[str, tuple[str, ...]] = {
    metric.name: metric.series_labels
    for metric in (
        *m.STREAM_COUNTERS,
        *m.BREAKDOWNS,
        *m.TEAM_COUNTERS,
        *m.HISTOGRAMS,
        m.CHANGED_RECORDS,
        m.REVISIONS,
        m.REVISED_DOWN,
    )
}
# What counts as a distinct label value against metrics.label_limits.
_BUDGETED = ("model", "status", "tool", "agent")


@dataclass(frozen=True, slots=True)
class CounterValue:
    value: float
    created: float


@dataclass(frozen=True, slots=True)
class HistogramValue:
    bounds: tuple[float, ...]
    buckets: tuple[int, ...]  # per bucket, not cumulative; the last one is +Inf
    sum: float
    count: int
    created: float


@dataclass(frozen=True, slots=True)
class Counts:
    """Committed counter and histogram values of one account (copies: safe to share)."""

    counters: Mapping[Key, CounterValue]
    histograms: Mapping[Key, HistogramValue]


@dataclass(frozen=True, slots=True)
class TaskWindow:
    """Sums over the distinct tasks of one tasks read (window gauges: tasks change)."""

    tasks_by_status: Mapping[str, int]
    credits: float
    llm_cost: float
    platform_cost: float


@dataclass(slots=True)
class Totals:
    """One account's committed counters and histograms, and the label values they use."""

    counters: dict[Key, CounterValue] = field(default_factory=dict)
    histograms: dict[Key, HistogramValue] = field(default_factory=dict)
    labels: dict[str, set[str]] = field(default_factory=dict)  # label -> values in use

    def note_labels(self, key: Key) -> None:
        """Mark the label values of a loaded series as in use."""
        metric, values = key
        for name, value in zip(_LABEL_NAMES.get(metric, ()), values, strict=True):
            self.labels.setdefault(name, set()).add(value)

    def take(self, pending: PendingChanges) -> None:
        """Adopt what a transaction's pending changes froze, once it has been committed."""
        self.counters.update(pending.counters)
        self.histograms.update(pending.histograms)
        for name, values in pending.new_labels.items():
            self.labels.setdefault(name, set()).update(values)


class _Hist:
    """A histogram being added to within one transaction (frozen at the end).

    Observations wait in `pending`, in order, and are put in buckets once, at `frozen()`:
    a backfill observes about ten values per stream, and a call per value was a tenth of
    its cost. The sum is added up in the same order as one observation at a time.
    """

    __slots__ = ("pending", "value")

    def __init__(self, value: HistogramValue) -> None:
        self.value = value
        self.pending: list[float] = []

    def observe(self, value: float) -> None:
        self.pending.append(value)

    def frozen(self) -> HistogramValue:
        value = self.value
        bounds, buckets, total = value.bounds, list(value.buckets), value.sum
        where = bisect.bisect_left  # `le` is inclusive
        for observed in self.pending:
            buckets[where(bounds, observed)] += 1
            total += observed
        count = value.count + len(self.pending)
        return HistogramValue(bounds, tuple(buckets), total, count, value.created)


def stream_amounts(r: StreamRecord) -> tuple[float, ...]:
    """What each of STREAM_COUNTER_NAMES adds for one stream, in the same order (the hot path).

    An absent value adds 0; the step latency sum and its steps only where both are present.
    """
    steps, latency = r.steps, r.step_latency
    if steps is not None and latency is not None:
        latency_sum, latency_steps = latency * steps, float(steps)
    else:
        latency_sum = latency_steps = 0.0
    return (
        1.0,
        r.credits,
        r.llm_cost,
        r.neo_cost,
        float(steps or 0),
        float(r.tool_calls or 0),
        float(r.agent_triggers or 0),
        r.llm_time or 0.0,
        r.tool_time or 0.0,
        r.execution_time or 0.0,
        latency_sum,
        latency_steps,
    )


_COUNTED_JSON = msgspec.json.Encoder().encode


@dataclass(slots=True)
class Counted:
    """What has been counted for one stream: stored as JSON in `streams.counted`.

    Labels are the (folded) ones it was first counted under; amounts follow
    STREAM_COUNTER_NAMES
    and only ever rise; breakdowns are by the API's names, folded when they are added to.
    """

    model: str
    status: str
    byok: str
    amounts: list[float]
    duration_observed: bool
    latency_observed: bool
    history: int  # tool_call_history entries observed
    agents: dict[str, int]
    tools: dict[str, list[float]]  # tool -> [calls, seconds]

    def dumps(self) -> bytes:
        return _COUNTED_JSON(
            [
                self.model,
                self.status,
                self.byok,
                self.amounts,
                int(self.duration_observed),
                int(self.latency_observed),
                self.history,
                self.agents,
                self.tools,
            ]
        )

    @classmethod
    def loads(cls, text: str | bytes) -> Counted:
        model, status, byok, amounts, duration, latency, history, agents, tools = (
            msgspec.json.decode(text)
        )
        if not isinstance(tools, dict):  # as a new stream's values are first written
            tools = {tool: [calls, seconds] for tool, calls, seconds in tools}
        return cls(
            model,
            status,
            byok,
            list(amounts),
            bool(duration),
            bool(latency),
            history,
            dict(agents),
            tools,
        )


class PendingChanges:
    """The pending changes of one transaction: new totals and newly used label values.

    Totals are added to in place (a list per series) and frozen once by `freeze()`: a
    backfill adds a few dozen values per stream, and a new immutable object for each was
    most of its cost. A new stream's amounts wait, in order, with the others of its label
    set and of its team, and are added to their totals column by column once (`_settle`).
    Each total is summed in the same order as before, so to the last bit.
    """

    def __init__(
        self,
        totals: Totals,
        limits: LabelLimits,
        bounds: Mapping[str, tuple[float, ...]],
        now: float,
    ) -> None:
        self._totals = totals
        self._limits = {name: int(getattr(limits, name)) for name in _BUDGETED}
        self._bounds = bounds
        self._now = now
        self._values: dict[Key, list[float]] = {}  # [value, created]
        self._hists: dict[Key, _Hist] = {}
        # Within one transaction a label value always folds the same way: remember it.
        self._folded: dict[tuple[str, str], str] = {}
        # The amounts of the new streams not yet added to their totals, in order.
        self._stream_waiting: dict[tuple[str, ...], list[tuple[float, ...]]] = {}
        self._team_waiting: dict[str, list[tuple[float, ...]]] = {}
        self._agent_slots: dict[str, list[float]] = {}
        # Per tool name as the API sends it: its calls and time totals and its durations.
        self._tool_slots: dict[str, tuple[list[float], list[float], list[float]]] = {}
        self.counters: dict[Key, CounterValue] = {}
        self.histograms: dict[Key, HistogramValue] = {}
        self.new_labels: dict[str, set[str]] = {}

    def freeze(self) -> None:
        """Turn the pending totals into `counters` and `histograms` (values to commit)."""
        self._settle()
        self.counters = {k: CounterValue(v[0], v[1]) for k, v in self._values.items()}
        self.histograms = {k: h.frozen() for k, h in self._hists.items()}

    def _settle(self) -> None:
        """Add the waiting amounts of new streams to their totals, each column in order."""
        for labels, rows in self._stream_waiting.items():
            columns = zip(*rows, strict=True)
            for metric, column in zip(STREAM_COUNTER_NAMES, columns, strict=True):
                slot = self._slot((metric, labels))
                slot[0] = reduce(_add, column, slot[0])
        for team, rows in self._team_waiting.items():
            for metric, index in _TEAM_AMOUNTS:
                slot = self._slot((metric, (team,)))
                slot[0] = reduce(_add, map(itemgetter(index), rows), slot[0])
        self._stream_waiting.clear()
        self._team_waiting.clear()

    def _fold(self, name: str, value: str) -> str:
        """Keep a value if it is known or the label's budget has room; else `other`."""
        folded = self._folded.get((name, value))
        if folded is None:
            folded = self._folded[(name, value)] = self._fold_new(name, value)
        return folded

    def _fold_new(self, name: str, value: str) -> str:
        known = self._totals.labels.get(name, set())
        pending = self.new_labels.setdefault(name, set())
        if value in known or value in pending:
            return value
        if value != OTHER and len(known - {OTHER}) + len(pending - {OTHER}) >= self._limits[name]:
            value = OTHER
            if value in known or value in pending:
                return value
        pending.add(value)
        self._zero_fill(name, value)
        return value

    def _zero_fill(self, name: str, value: str) -> None:
        """Start the known label sets of a new model or status at 0, for `increase()`."""
        if name == "model":
            statuses = self._values_of("status") | set(DOCUMENTED_STATUSES)
            # Documented statuses are in use from now on, exactly as after a reload.
            self.new_labels.setdefault("status", set()).update(
                statuses - self._totals.labels.get("status", set())
            )
            for status in statuses:
                for byok in BYOK_VALUES:
                    for metric in STREAM_COUNTER_NAMES:
                        self.bump(metric, (value, status, byok), 0.0)
            for metric in (STREAM_DURATION, STEP_LATENCY):
                self._histogram(metric, (value,))
        elif name == "status":
            for model in self._values_of("model"):
                for byok in BYOK_VALUES:
                    for metric in STREAM_COUNTER_NAMES:
                        self.bump(metric, (model, value, byok), 0.0)

    def start_revisions(self) -> None:
        """Start the revision counters of money and labels at 0 once, for `increase()`."""
        if (_REVISIONS, (MONEY_FIELDS[0], DIRECTION_UP)) in self._totals.counters:
            return
        for money in MONEY_FIELDS:
            for direction in (DIRECTION_UP, DIRECTION_DOWN):
                self.bump(_REVISIONS, (money, direction), 0.0)
            self.bump(_REVISED_DOWN, (money,), 0.0)
        for label in ("model", "status", "is_byok"):
            self.bump(_REVISIONS, (label, DIRECTION_CHANGED), 0.0)

    def start_teams(self, teams: Sequence[str]) -> None:
        """Start the team counters of the configured teams (and `unassigned`) at 0, for
        `increase()`: each known label set exists from the first publish."""
        for team in teams:
            for metric in TEAM_COUNTERS:
                if (metric, (team,)) not in self._totals.counters:
                    self.bump(metric, (team,), 0.0)

    def count_changed(self) -> None:
        """One more counted stream that the API revised."""
        self.bump(_CHANGED, (), 1.0)

    def _values_of(self, name: str) -> set[str]:
        return self._totals.labels.get(name, set()) | self.new_labels.get(name, set())

    def _slot(self, key: Key) -> list[float]:
        slot = self._values.get(key)
        if slot is None:
            current = self._totals.counters.get(key)
            slot = [0.0, self._now] if current is None else [current.value, current.created]
            self._values[key] = slot
        return slot

    def bump(self, metric: str, labels: tuple[str, ...], amount: float) -> None:
        self._slot((metric, labels))[0] += amount

    def _histogram(self, metric: str, labels: tuple[str, ...]) -> _Hist:
        key = (metric, labels)
        hist = self._hists.get(key)
        if hist is None:
            current = self._totals.histograms.get(key)
            if current is None:
                bounds = self._bounds[metric]
                current = HistogramValue(bounds, (0,) * (len(bounds) + 1), 0.0, 0, self._now)
            hist = self._hists[key] = _Hist(current)
        return hist

    def observe(self, metric: str, labels: tuple[str, ...], value: float) -> None:
        self._histogram(metric, labels).observe(value)

    def add(self, record: StreamRecord, team: str) -> tuple[str, tuple[float, ...], bytes]:
        """Add one new stream's values, to its team's counters too; returns its (folded)
        status, its amounts and what was counted for it as stored (`Counted`'s JSON,
        written without building one)."""
        fold_label = self._fold
        model = fold_label("model", record.model)
        status = fold_label("status", record.status)
        labels = (model, status, record.byok)
        amounts = stream_amounts(record)
        self._stream_waiting.setdefault(labels, []).append(amounts)
        self._team_waiting.setdefault(team, []).append(amounts)
        agent_slots = self._agent_slots
        for agent, count in record.agent_breakdown:
            slot = agent_slots.get(agent)
            if slot is None:
                slot = agent_slots[agent] = self._slot((_BY_AGENT, (fold_label("agent", agent),)))
            slot[0] += float(count)
        tool_slots = self._tool_slots
        for tool, calls, seconds in record.tool_usage:
            found = tool_slots.get(tool) or self._tool(tool)
            found[0][0] += calls
            found[1][0] += seconds
        for tool, seconds in record.tool_durations:
            (tool_slots.get(tool) or self._tool(tool))[2].append(seconds)
        if record.execution_time is not None:
            self._histogram(STREAM_DURATION, (model,)).observe(record.execution_time)
        if record.step_latency is not None:
            self._histogram(STEP_LATENCY, (model,)).observe(record.step_latency)
        return (
            status,
            amounts,
            _COUNTED_JSON(
                (
                    model,
                    status,
                    record.byok,
                    amounts,
                    record.execution_time is not None,
                    record.step_latency is not None,
                    len(record.tool_durations),
                    record.agent_breakdown,  # pairs: read back as a dict
                    record.tool_usage,  # (tool, calls, seconds): read back as a dict
                )
            ),
        )

    def _tool(self, tool: str) -> tuple[list[float], list[float], list[float]]:
        label = (self._fold("tool", tool),)
        found = self._tool_slots[tool] = (
            self._slot((_CALLS_BY_TOOL, label)),
            self._slot((_TIME_BY_TOOL, label)),
            self._histogram(TOOL_CALL_DURATION, label).pending,
        )
        return found

    def baseline(self, record: StreamRecord) -> Counted:
        """What `add` would have counted for this version, without adding anything."""
        labels = (self._fold("model", record.model), self._fold("status", record.status))
        return self._counted((*labels, record.byok), stream_amounts(record), record)

    @staticmethod
    def _counted(
        labels: tuple[str, ...], amounts: Sequence[float], record: StreamRecord
    ) -> Counted:
        return Counted(
            labels[0],
            labels[1],
            labels[2],
            list(amounts),
            record.execution_time is not None,
            record.step_latency is not None,
            len(record.tool_durations),
            dict(record.agent_breakdown),
            {tool: [calls, seconds] for tool, calls, seconds in record.tool_usage},
        )

    def _gain(self, labels: tuple[str, ...], team: str | None, index: int, delta: float) -> None:
        """A revision's increase of stream amount `index`: to its stream counter under the
        first labels, and to the team's counter of it."""
        self._settle()  # in order: after the new streams of this batch waiting to be added
        self.bump(STREAM_COUNTER_NAMES[index], labels, delta)
        if team is not None:
            for metric, team_index in _TEAM_AMOUNTS:
                if team_index == index:
                    self.bump(metric, (team,), delta)

    def revise(
        self, old: Counted, record: StreamRecord, team: str | None
    ) -> tuple[Counted, bool, int]:
        """Add what a revised stream gained; count what it lost or relabelled.

        What it gained goes to `team`, the team it was first counted under (None: counted
        before the state kept teams, so its team counters never held it: nothing is added).

        Returns the new counted values, whether anything could not be applied (a value
        went down, or a label changed: counters keep the first figures and labels), and how
        many kinds of revision it had (0: nothing a metric reads changed).
        """
        labels = (old.model, old.status, old.byok)
        events: set[tuple[str, str]] = set()
        for field_name, before, after in (
            ("model", old.model, record.model),
            ("status", old.status, record.status),
            ("is_byok", old.byok, record.byok),
        ):
            name = field_name.removeprefix("is_")
            folded_away = before == OTHER and after not in self._values_of(name)
            if after != before and not folded_away:
                events.add((field_name, DIRECTION_CHANGED))
        amounts = list(old.amounts)
        for index, now in enumerate(stream_amounts(record)):
            delta = now - amounts[index]
            source = _REVISED_AS[index]
            if delta > 0:
                self._gain(labels, team, index, delta)
                amounts[index] = now
                if source is not None:
                    events.add((source, DIRECTION_UP))
            elif delta < 0 and source is not None:
                events.add((source, DIRECTION_DOWN))
                self.bump(_REVISED_DOWN, (source,), -delta)
        counted = Counted(
            old.model,
            old.status,
            old.byok,
            amounts,
            old.duration_observed or record.execution_time is not None,
            old.latency_observed or record.step_latency is not None,
            max(old.history, len(record.tool_durations)),
            dict(old.agents),
            {tool: list(value) for tool, value in old.tools.items()},
        )
        # A timing observed once is not observed again: a histogram cannot move a sample.
        if not old.duration_observed and record.execution_time is not None:
            self.observe(STREAM_DURATION, (old.model,), record.execution_time)
        if not old.latency_observed and record.step_latency is not None:
            self.observe(STEP_LATENCY, (old.model,), record.step_latency)
        # Tool call history grows at its end: the entries past those observed are new.
        for tool, seconds in record.tool_durations[old.history :]:
            self.observe(TOOL_CALL_DURATION, (self._fold("tool", tool),), seconds)
        if len(record.tool_durations) < old.history:
            events.add(("tool_call_history", DIRECTION_DOWN))
        for agent, count in record.agent_breakdown:
            gained = count - counted.agents.get(agent, 0)
            if gained > 0:
                self.bump(_BY_AGENT, (self._fold("agent", agent),), float(gained))
                counted.agents[agent] = count
                events.add(("agent_breakdown", DIRECTION_UP))
        if any(count < old.agents.get(agent, 0) for agent, count in record.agent_breakdown) or (
            set(old.agents) - {agent for agent, _ in record.agent_breakdown}
        ):
            events.add(("agent_breakdown", DIRECTION_DOWN))
        usage_field = "tool_call_history" if record.tool_durations else "tool_breakdown"
        for tool, calls, seconds in record.tool_usage:
            slot = counted.tools.setdefault(tool, [0, 0.0])
            label = (self._fold("tool", tool),)
            if calls > slot[0]:
                self.bump(_CALLS_BY_TOOL, label, calls - slot[0])
                slot[0] = calls
                events.add((usage_field, DIRECTION_UP))
            elif calls < slot[0]:
                events.add((usage_field, DIRECTION_DOWN))
            if seconds > slot[1]:
                self.bump(_TIME_BY_TOOL, label, seconds - slot[1])
                slot[1] = seconds
                events.add((usage_field, DIRECTION_UP))
            elif seconds < slot[1]:
                events.add((usage_field, DIRECTION_DOWN))
        for event in events:
            self.bump(_REVISIONS, event, 1.0)
        kept = any(direction != DIRECTION_UP for _, direction in events)
        return counted, kept, len(events)


# --- the window's most expensive tasks ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class TopTask:
    """One of the window's most expensive tasks; `email` is "" unless members are enabled."""

    rank: int
    task_id: str
    title: str
    email: str
    credits: float


@dataclass(frozen=True, slots=True)
class _Candidate:
    credits: float
    task_id: str
    title: object  # as the API sent it; cleaned only for the winners
    email: str

    def __lt__(self, other: _Candidate) -> bool:
        # The heap's smallest is the first to drop: fewer credits, then the larger id.
        return (self.credits, other.task_id) < (other.credits, self.task_id)


class TopTasks:
    """The `count` tasks with the most credits in one tasks read; memory stays `count` rows."""

    def __init__(self, count: int, *, emails: bool, titles: bool = True) -> None:
        self._count = count
        self._emails = emails
        self._titles = titles  # metrics.task_titles: off, no title is kept at all
        self._heap: list[_Candidate] = []
        self._ids: set[str] = set()  # of the heap's tasks: a task repeated by paging once

    def add(self, task: TaskRecord, row: object) -> None:
        """One parsed task and its row (for the title, and the email if members are enabled)."""
        if self._count <= 0 or task.credits <= 0:  # BYOK and free tasks cost no credits
            return
        if len(self._heap) >= self._count and task.credits < self._heap[0].credits:
            return  # the usual case once the heap is full: nothing to build
        if task.task_id in self._ids:
            return
        row = row_value(row)  # a few rows reach this point: decode them again
        fields = row if isinstance(row, dict) else {}
        email = fields.get("email") if self._emails else None
        candidate = _Candidate(
            task.credits,
            task.task_id,
            fields.get("task_title") if self._titles else None,
            clean_label(email) if isinstance(email, str) else "",
        )
        if len(self._heap) < self._count:
            heapq.heappush(self._heap, candidate)
            self._ids.add(task.task_id)
        elif self._heap[0] < candidate:
            self._ids.discard(heapq.heapreplace(self._heap, candidate).task_id)
            self._ids.add(task.task_id)

    def ranked(self) -> tuple[TopTask, ...]:
        best = sorted(self._heap, key=lambda c: (-c.credits, c.task_id))
        return tuple(
            TopTask(rank, c.task_id, clean_title(c.title), c.email, c.credits)
            for rank, c in enumerate(best, start=1)
        )


# --- recent spend: by when the streams ended, for the spend alerts and their culprits -----

# The trailing windows of the spend alerts: a spike's 15 minutes, the hourly spend's hour.
RECENT_WINDOWS: tuple[tuple[str, float], ...] = (("15m", 900.0), ("1h", 3600.0))
RECENT_TOP = 3  # culprits named per window: tasks, models and members, by credits and by USD


@dataclass(frozen=True, slots=True)
class Culprit:
    """A task (task_id, title), a model (model,) or a member (email,) behind recent spend."""

    key: tuple[str, ...]
    credits: float
    cost_usd: float


@dataclass(frozen=True, slots=True)
class RecentSpend:
    """The spend of the streams that ended within a trailing window, counted by when they
    ended rather than by when they were read: a backlog listed late (streams that ended
    long ago) adds nothing here, while a long stream that ends now adds its whole cost.

    Each culprit tuple is ranked by credits (`*_by_credits`) or by BYOK USD (`*_by_usd`),
    at most RECENT_TOP long, without groups that spent nothing in that unit.
    """

    window: str
    seconds: float
    credits: float = 0.0
    cost_usd: float = 0.0
    tasks_by_credits: tuple[Culprit, ...] = ()
    tasks_by_usd: tuple[Culprit, ...] = ()
    models_by_credits: tuple[Culprit, ...] = ()
    models_by_usd: tuple[Culprit, ...] = ()
    members_by_credits: tuple[Culprit, ...] = ()
    members_by_usd: tuple[Culprit, ...] = ()


def ranked(groups: Iterable[Culprit], top: int = RECENT_TOP) -> tuple[tuple[Culprit, ...], ...]:
    """The `top` groups by credits, then by USD; ties by key, so that ranks are stable."""
    items = list(groups)
    by_credits = sorted((g for g in items if g.credits > 0), key=lambda g: (-g.credits, g.key))
    by_usd = sorted((g for g in items if g.cost_usd > 0), key=lambda g: (-g.cost_usd, g.key))
    return tuple(by_credits[:top]), tuple(by_usd[:top])
