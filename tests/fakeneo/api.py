"""FakeNeo: Neo's usage data and the API's behaviour under the switches, without HTTP."""

from __future__ import annotations

import bisect
import copy
import hashlib
import math
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from exporter.api import (
    CREDITS_PATH,
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    STREAMS_PATH,
    SUMMARY_PATH,
    TASKS_PATH,
    USER_PATH,
)
from exporter.demo import (
    BadRequest,
    People,
    Stream,
    credit_period,
    credits_body,
    cumulative,
    int_param,
    iso_us,
    names,
    parse_iso_us,
    time_param,
    to_us,
    user_body,
)
from tests.fakeneo.faults import INSERTED_PER_FAULT, Fault, Faults
from tests.fakeneo.quirks import (
    _REVISED_MONEY,
    TieTraffic,
    _odd_bits,
    _Quirks,
    _revisable,
    _shuffled_ties,
    team,
)
from tests.fakeneo.reading import _flag
from tests.fakeneo.requestlog import RequestLog, RequestRecord
from tests.fakeneo.rows import (
    _At,
    _attr,
    _cost,
    _costs,
    _created,
    _Entry,
    _Gen,
    _hidden,
    _matches,
    _Raw,
    _row,
    _stream_row,
    _summarize,
    _task_row,
)
from tests.fakeneo.truth import GroupTotals, Truth, _compute_groups, _compute_truth, _countable

V = TypeVar("V")


_MEMBER_EMAIL = "member@example.com"


_ADMIN_EMAIL = "admin@example.com"


_CACHE_SIZE = 8


class _Lru(Generic[V]):
    """A small least-recently-used cache for selections that paging asks for again and again."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[Hashable, V] = OrderedDict()

    def get(self, key: Hashable, compute: Callable[[], V]) -> V:
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        value = compute()
        self._items[key] = value
        if len(self._items) > self._size:
            self._items.popitem(last=False)
        return value

    def clear(self) -> None:
        self._items.clear()


@dataclass(frozen=True)
class _Selection:
    """A list request's filters, without its page: the key of the cached matching rows."""

    from_us: int | None = None
    to_us: int | None = None
    filters: tuple[tuple[str, str | bool], ...] = ()
    sort: str = "created_at"
    search: str | None = None


def _bool_param(query: Mapping[str, str], name: str) -> bool | None:
    text = query.get(name)
    if text is None:
        return None
    if text.lower() not in ("true", "false"):
        raise BadRequest(f"{name} must be true or false")
    return text.lower() == "true"


def _parse_list(query: Mapping[str, str], *, tasks: bool) -> tuple[_Selection, int, int]:
    """A list request's selection, limit and offset; empty parameters count as absent."""
    query = {k: v for k, v in query.items() if v != ""}
    limit = int_param(query, "limit", DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE)
    offset = int_param(query, "offset", 0, 0, None)
    names = ("task_id", "status", "model", "email") + (() if tasks else ("stream_id",))
    filters: list[tuple[str, str | bool]] = [(n, query[n]) for n in names if n in query]
    byok = _bool_param(query, "is_byok")
    if byok is not None:
        filters.append(("is_byok", byok))
    sort = "created_at" if tasks else query.get("sort", "created_at")
    if sort not in ("created_at", "cost"):
        raise BadRequest("sort must be created_at or cost")
    search = query.get("search", "").lower() or None if tasks else None
    selection = _Selection(
        time_param(query, "from"), time_param(query, "to"), tuple(filters), sort, search
    )
    return selection, limit, offset


class FakeNeo:
    """Neo's usage data and the API's behaviour, without HTTP (see FakeNeoServer for that).

    Thread-safe: every method takes one lock. All "now" decisions use `clock`.

    The switches for what the docs leave open (see the module docstring; the defaults are the
    fake's guesses): `order`, `from_inclusive`, `to_inclusive`, `page_cap` (rows a page holds
    at most), `tie_seconds` (created_at at whole seconds, tasks in bursts, ties shuffled per
    request), `odd_fields` (share of streams with odd field forms), `revise` and
    `revise_after` (share of streams served lower first, and for how many seconds after they
    become visible), `hide` (share of streams in Neo's books but never listed), `emails`
    (who creates tasks, weighted; "" for no email). Which streams
    a share picks depends only on the seed and the stream's id.
    """

    def __init__(
        self,
        *,
        seed: int = 1,
        clock: Callable[[], float] = time.time,
        order: str = "desc",
        admin_tokens: Iterable[str] = ("fake-admin-token",),
        member_tokens: Iterable[str] = ("fake-member-token",),
        latency: float = 0.0,
        to_inclusive: bool = True,
        cap: float | None = 500.0,
        issued_credits: float = 25_000.0,
        members: int | None = None,
        billing: bool = True,
        from_inclusive: bool = True,
        page_cap: int | None = None,
        tie_seconds: bool = False,
        odd_fields: float = 0.0,
        revise: float = 0.0,
        revise_after: float = 5.0,
        hide: float = 0.0,
        emails: Sequence[tuple[str, float]] | None = None,
    ) -> None:
        if order not in ("asc", "desc"):
            raise ValueError(f"order must be asc or desc, not {order!r}")
        if page_cap is not None and page_cap < 1:
            raise ValueError(f"page_cap must be >= 1 or None, not {page_cap}")
        for name, share in (("odd_fields", odd_fields), ("revise", revise), ("hide", hide)):
            if not 0.0 <= share <= 1.0:
                raise ValueError(f"{name} is a share: 0 <= {name} <= 1, not {share}")
        if revise_after < 0:
            raise ValueError(f"revise_after must be >= 0, not {revise_after}")
        self._lock = threading.RLock()
        self._seed = seed
        self._clock = clock
        self._order = order
        self._to_inclusive = to_inclusive
        self._from_inclusive = from_inclusive
        self._page_cap = page_cap
        self._ties = tie_seconds
        self._odd_fields = odd_fields
        self._revise = revise
        self._revise_after_us = to_us(revise_after)
        self._hide = hide
        self._list_requests = 0  # seeds each list request's shuffle of ties
        self._admin = frozenset(admin_tokens)
        self._tokens = self._admin | frozenset(member_tokens)
        self._cap = cap
        self._issued = issued_credits
        # members: how many team members create tasks (None: the demo's eight).
        # emails: who creates tasks, as (address, weight); "" is a task with no email (null).
        people = team(members) if emails is None else People(names(emails), cumulative(emails))
        self._traffic = TieTraffic(seed, people, ties=tie_seconds)
        # billing=False: the account is on no plan, and /billing/credits answers 404.
        self._billing = billing
        self.latency = latency
        self._rows: list[_Entry] = []  # sorted by created_at; ties in insertion order
        self._visible: list[int] = []  # every row's visible_us, sorted
        self._revisions: list[int] = []  # when each revised row gets its final version, sorted
        self._version = 0
        self._cache: _Lru[Any] = _Lru(_CACHE_SIZE)
        self._faults = Faults()
        self._log = RequestLog()

    @property
    def order(self) -> str:
        return self._order

    @property
    def to_inclusive(self) -> bool:
        return self._to_inclusive

    def _at(self, now_us: int) -> _At:
        return _At(now_us, self._ties)

    def _now_at(self) -> _At:
        return self._at(to_us(self._clock()))

    # --- data -------------------------------------------------------------------------

    def generate(
        self,
        count: int,
        start: float,
        end: float,
        *,
        late_fraction: float = 0.1,
        max_late: float = 3600.0,
    ) -> list[dict[str, Any]]:
        """Add `count` realistic streams created in [start, end]; return them as Neo holds
        them now (hidden ones too; revised ones in their version of the moment).

        A stream becomes visible when its execution ends, which is by `end` except for
        `late_fraction` of them, which show up to `max_late` seconds after `end`.
        """
        with self._lock:
            at = self._now_at()
            streams = self._traffic.history(count, start, end, late_fraction, max_late)
            return [_stream_row(g, at) for g in self._insert(streams)]

    def populate(
        self,
        count: int,
        start: float,
        end: float,
        *,
        late_fraction: float = 0.1,
        max_late: float = 3600.0,
    ) -> int:
        """Like generate, for large counts: returns only how many rows were added."""
        with self._lock:
            streams = self._traffic.history(count, start, end, late_fraction, max_late)
            return len(self._insert(streams))

    def add_rows(
        self, rows: Iterable[Any], visible_at: float | None = None, *, in_truth: bool = True
    ) -> None:
        """Add rows served verbatim (any JSON value, malformed ones too), visible from visible_at.

        A row without a parseable created_at is filtered as if created at visible_at. Rows that
        are not well-formed never count in the truth; in_truth=False leaves out the others too.
        """
        with self._lock:
            visible_us = to_us(self._clock() if visible_at is None else visible_at)
            entries: list[_Entry] = []
            for row in rows:
                created = parse_iso_us(row.get("created_at")) if isinstance(row, dict) else None
                entries.append(
                    _Raw(
                        visible_us if created is None else created,
                        visible_us,
                        copy.deepcopy(row),
                        in_truth,
                    )
                )
            self._insert(entries)

    def replace_row(self, stream_id: str, **changes: Any) -> dict[str, Any]:
        """Change a served stream after the fact; returns the new row. KeyError if unknown.

        The row is frozen as it is served now, with the changes: a revised stream is not
        revised any more; a hidden one stays hidden.
        """
        with self._lock:
            index = next(
                (i for i, e in enumerate(self._rows) if _attr(e, "stream_id") == stream_id), None
            )
            if index is None:
                raise KeyError(stream_id)
            entry = self._rows[index]
            old = _row(entry, self._now_at())
            row = {**old, **changes}
            in_truth = entry.in_truth if isinstance(entry, _Raw) else True
            created = parse_iso_us(row.get("created_at"))
            created_us = entry.created_us if created is None else self._key_us(created)
            self._rows[index] = _Raw(
                created_us, entry.visible_us, row, in_truth, hidden=_hidden(entry)
            )
            if created_us != entry.created_us:
                self._rows.sort(key=_created)
            self._changed()
            return copy.deepcopy(row)

    def spike(
        self, count: int, *, multiplier: float = 20.0, at: float | None = None
    ) -> list[dict[str, Any]]:
        """Add `count` expensive streams created and visible at `at` (default now)."""
        with self._lock:
            at_ms = math.floor((self._clock() if at is None else at) * 1000)
            streams = self._insert(self._traffic.spike(count, at_ms, multiplier))
            now = self._now_at()
            return [_stream_row(g, now) for g in streams]

    def task_burst(
        self, count: int, *, seconds: float = 10.0, multiplier: float = 1.0
    ) -> list[dict[str, Any]]:
        """Add `count` streams of one new task that ended in the last `seconds`, each listed
        as it ended: a genuine spike of current spend. Returns the rows."""
        with self._lock:
            now_ms = math.floor(self._clock() * 1000)
            start_ms = now_ms - round(seconds * 1000)
            streams = self._insert(self._traffic.burst(count, start_ms, now_ms, multiplier))
            now = self._now_at()
            return [_stream_row(g, now) for g in streams]

    def dense_ties(self, per_second: int, seconds: int, *, at: float | None = None) -> int:
        """Add `per_second` single-stream tasks created and visible in each whole second of
        `seconds` from `at` (default: an hour ago): a burst of scans that cron starts at the
        same second. With tie_seconds, the ties of each second are shuffled per request.
        Returns how many streams were added."""
        if per_second < 1 or seconds < 1:
            raise ValueError("dense ties need per_second >= 1 and seconds >= 1")
        with self._lock:
            start = math.floor(self._clock() - 3600.0 if at is None else at)
            added = 0
            for second in range(seconds):
                streams = self._traffic.spike(per_second, (start + second) * 1000, 1.0)
                added += len(self._insert(streams))
            return added

    def start_live(
        self,
        rate_per_hour: float,
        history: float,
        history_count: int,
        *,
        late_fraction: float = 0.1,
        max_late: float = 3600.0,
        spike_every: float | None = 1800.0,
    ) -> None:
        """Generate history once, then new streams as the clock moves, at rate_per_hour.

        New traffic is generated per minute of clock time from a seed derived from the fake's
        seed and that minute, so it does not depend on when requests come. Every spike_every
        seconds (aligned to the epoch; None for never) a burst of expensive streams comes too.
        """
        with self._lock:
            now = self._clock()
            self._insert(
                self._traffic.history(history_count, now - history, now, late_fraction, max_late)
            )
            self._traffic.start_live(rate_per_hour, now, (late_fraction, max_late), spike_every)

    def set_cap(self, cap: float | None) -> None:
        """Change the user's spending cap in USD (None: no cap applies)."""
        with self._lock:
            self._cap = cap

    # --- faults and the log ------------------------------------------------------------

    def inject(self, kind: str, **options: Any) -> None:
        """Make the next `count` requests whose path starts with `path` fail as `kind`; the
        options are Faults.inject's (count=1, path=STREAMS_PATH, status, retry_after, delay)."""
        self._faults.inject(kind, **options)

    def clear_faults(self) -> None:
        self._faults.clear()

    def take_fault(self, path: str) -> Fault | None:
        """Use up one pending fault matching path, if any (the HTTP server calls this)."""
        return self._faults.take(path)

    @property
    def requests_log(self) -> list[RequestRecord]:
        return self._log.records()

    def log_request(self, record: RequestRecord) -> None:
        self._log.append(record)

    def clear_log(self) -> None:
        self._log.clear()

    # --- ground truth -------------------------------------------------------------------

    def truth(
        self,
        start: float | None = None,
        end: float | None = None,
        *,
        now: float | None = None,
        listed_only: bool = False,
    ) -> Truth:
        """Sums over the countable streams visible at `now` created in [start, end], as served
        at `now`: Neo's books, hidden streams included; with listed_only, only the streams
        the listings show. (With tie_seconds, created_at is the truncated time.)"""
        return _compute_truth(self._truth_rows(start, end, now, listed_only))

    def truth_by(
        self,
        field: str,
        start: float | None = None,
        end: float | None = None,
        *,
        now: float | None = None,
        listed_only: bool = False,
    ) -> dict[str, GroupTotals]:
        """The same streams as `truth`, their count and money summed per value of `field`
        (`email`, `model` or `task_id`; "" for a row without an email or task id)."""
        return _compute_groups(self._truth_rows(start, end, now, listed_only), field)

    def _truth_rows(
        self, start: float | None, end: float | None, now: float | None, listed_only: bool
    ) -> list[dict[str, Any]]:
        with self._lock:
            at = self._clock() if now is None else now
            self._advance_live(at)
            view = self._at(to_us(at))
            entries = [
                e
                for e in self._rows
                if e.visible_us <= view.now_us
                and (isinstance(e, _Gen) or e.in_truth)
                and not (listed_only and _hidden(e))
                and (start is None or e.created_us / 1_000_000 >= start)
                and (end is None or e.created_us / 1_000_000 <= end)
            ]
        # Entries never change (replace_row swaps in a new one), so this needs no lock.
        rows = (_row(e, view) for e in entries)
        return [row for row in rows if _countable(row)]

    def truth_by_email(
        self,
        start: float | None = None,
        end: float | None = None,
        *,
        now: float | None = None,
        listed_only: bool = False,
    ) -> dict[str | None, Truth]:
        """`truth()` of each creator's streams, by the row's `email` as served (None: no
        email, or not a string)."""
        groups: dict[str | None, list[dict[str, Any]]] = {}
        for row in self._truth_rows(start, end, now, listed_only):
            email = row.get("email")
            groups.setdefault(email if isinstance(email, str) else None, []).append(row)
        return {email: _compute_truth(rows) for email, rows in groups.items()}

    # --- requests -----------------------------------------------------------------------

    def handle(
        self,
        method: str,
        path: str,
        query: Mapping[str, str],
        token: str | None,
        *,
        fault: str | None = None,
    ) -> tuple[int, Any]:
        """Answer one API request: (status, JSON value). `fault` may be endless or wrong_total."""
        with self._lock:
            now = self._clock()
            self._advance_live(now)
            now_us = to_us(now)
            refusal = self._refusal(method, path, token)
            if refusal is not None:
                return refusal
            if path == USER_PATH:
                return 200, self._user(token in self._admin, now_us)
            if fault == "insert" and path == STREAMS_PATH:
                self._insert(self._traffic.history(INSERTED_PER_FAULT, now - 60.0, now, 0.0, 0.0))
            route = self._route(path)
            if route is None:
                return 404, {"error": "not found"}
            try:
                return route(now_us, query, fault)
            except BadRequest as exc:
                return 400, {"error": str(exc)}

    def _refusal(self, method: str, path: str, token: str | None) -> tuple[int, Any] | None:
        if token is None or token not in self._tokens:
            return 401, {"error": "unauthorized"}
        if method != "GET":
            return 405, {"error": f"{method} not allowed"}
        if path != USER_PATH and token not in self._admin:
            return 403, {"error": "forbidden: team members and viewers cannot read usage"}
        return None

    def _route(
        self, path: str
    ) -> Callable[[int, Mapping[str, str], str | None], tuple[int, Any]] | None:
        fixed = {
            STREAMS_PATH: self._list_streams,
            TASKS_PATH: self._list_tasks,
            SUMMARY_PATH: self._summary,
            CREDITS_PATH: self._credits,
        }
        if path in fixed:
            return fixed[path]
        prefix = TASKS_PATH + "/"
        if path.startswith(prefix) and "/" not in path[len(prefix) :] and path != prefix:
            task_id = path[len(prefix) :]
            return lambda now_us, query, fault: self._one_task(now_us, task_id)
        return None

    def _list_streams(
        self, now_us: int, query: Mapping[str, str], fault: str | None
    ) -> tuple[int, Any]:
        selection, limit, offset = _parse_list(query, tasks=False)
        # Revisions change costs, and so the order of sort=cost.
        revised = bisect.bisect_right(self._revisions, now_us)
        key = ("streams", self._version, self._visible_count(now_us), revised, selection)
        shown, hidden = self._cache.get(key, lambda: self._select_streams(now_us, selection))
        at = self._at(now_us)
        return 200, self._page(
            shown,
            limit,
            offset,
            fault,
            lambda entry: _row(entry, at),
            hidden=hidden,
            tie_key=_created if selection.sort == "created_at" else None,
        )

    def _list_tasks(
        self, now_us: int, query: Mapping[str, str], fault: str | None
    ) -> tuple[int, Any]:
        selection, limit, offset = _parse_list(query, tasks=True)
        key = ("tasks", self._version, self._visible_count(now_us), selection)
        matched = self._cache.get(key, lambda: self._select_tasks(now_us, selection))
        at = self._at(now_us)
        return 200, self._page(
            matched,
            limit,
            offset,
            fault,
            lambda task: self._task_of(task, at),
            tie_key=lambda task: task[1][0].created_us,
        )

    def _one_task(self, now_us: int, task_id: str) -> tuple[int, Any]:
        streams = self._task_index(now_us).get(task_id)
        if streams is None:
            return 404, {"error": "task not found"}
        return 200, self._task_of((task_id, streams), self._at(now_us))

    @staticmethod
    def _task_of(task: tuple[str, list[_Entry]], at: _At) -> dict[str, Any]:
        return _task_row(task[0], [_row(e, at) for e in task[1]])

    def _page(
        self,
        matched: Sequence[V],
        limit: int,
        offset: int,
        fault: str | None,
        render: Callable[[V], Any],
        *,
        hidden: int = 0,
        tie_key: Callable[[V], int] | None = None,
    ) -> dict[str, Any]:
        """One page of the shown rows `matched`; `total` counts `hidden` ones too.

        With page_cap, a page holds at most that many rows whatever `limit` asks; with
        tie_seconds (and a tie_key, the created_at sort), rows of equal key come in an order
        drawn afresh for this request.
        """
        self._list_requests += 1
        total = len(matched)
        if fault == "endless":  # past the end it starts over, and never says it is done
            offset = offset % total if total else 0
        size = limit if self._page_cap is None else min(limit, self._page_cap)
        start = max(0, offset - size // 2) if fault == "duplicates" else offset
        stop = offset + size
        items: Sequence[V]
        if self._ties and tie_key is not None:
            rng = random.Random(f"{self._seed}/order/{self._list_requests}")
            items = _shuffled_ties(matched, start, stop, tie_key, rng)
        else:
            items = matched[start:stop]
        data = [render(item) for item in items]
        books = total + hidden
        shown = books
        if fault == "wrong_total":
            shown = books * 10 + 1000
        elif fault == "short_total":
            shown = books // 2
        return {"data": data, "has_more": fault == "endless" or stop < total, "total": shown}

    def _summary(self, now_us: int, query: Mapping[str, str], fault: str | None) -> tuple[int, Any]:
        query = {k: v for k, v in query.items() if v != ""}
        group_by = query.get("group_by")
        if group_by not in (None, "day", "week", "month"):
            raise BadRequest("group_by must be day, week or month")
        window = self._window(now_us, time_param(query, "from"), time_param(query, "to"))
        at = self._at(now_us)
        rows = [
            (e.created_us, r) for e in window if isinstance(r := _row(e, at, detail=False), dict)
        ]
        reset_us, _ = credit_period(now_us)
        summary = _summarize(rows, group_by, reset_us)
        credits = self._credit_state(now_us)
        summary.update(
            last_credit_reset=iso_us(reset_us),
            total_available_neo_credits=credits["available_credits"],
            total_issued_neo_credits=credits["issued_credits"],
            neo_credits_expires_at=credits["expires_at"],
            neo_credits_is_expired=credits["is_expired"],
        )
        return 200, summary

    def _credits(self, now_us: int, query: Mapping[str, str], fault: str | None) -> tuple[int, Any]:
        if not self._billing:
            return 404, {"error": "no billing plan for this account"}
        return 200, self._credit_state(now_us)

    def _credit_state(self, now_us: int) -> dict[str, Any]:
        reset_us, _ = credit_period(now_us)
        used = math.fsum(_costs(e, now_us)[0] for e in self._window(now_us, reset_us, None))
        return credits_body(now_us, self._issued, used)

    def _user(self, admin: bool, now_us: int) -> dict[str, Any]:
        used = 0.0
        if self._cap is not None:
            reset_us, _ = credit_period(now_us)
            used = math.fsum(
                sum(_costs(e, now_us)[1:])
                for e in self._window(now_us, reset_us, None)
                if _flag(_attr(e, "is_byok")) is True
            )
        return user_body(_ADMIN_EMAIL if admin else _MEMBER_EMAIL, self._cap, used)

    # --- selections ---------------------------------------------------------------------

    def _visible_count(self, now_us: int) -> int:
        """How many rows are visible; with the data version it says which ones."""
        return bisect.bisect_right(self._visible, now_us)

    def _window(self, now_us: int, from_us: int | None, to_us: int | None) -> list[_Entry]:
        """Visible rows created in [from, to] (either exclusive if so configured), oldest
        first; hidden rows too."""
        if from_us is None:
            low = 0
        elif self._from_inclusive:
            low = bisect.bisect_left(self._rows, from_us, key=_created)
        else:
            low = bisect.bisect_right(self._rows, from_us, key=_created)
        if to_us is None:
            high = len(self._rows)
        elif self._to_inclusive:
            high = bisect.bisect_right(self._rows, to_us, key=_created)
        else:
            high = bisect.bisect_left(self._rows, to_us, key=_created)
        return [e for e in self._rows[low:high] if e.visible_us <= now_us]

    def _select_streams(self, now_us: int, selection: _Selection) -> tuple[list[_Entry], int]:
        """The shown streams that match, in the listing's order, and how many hidden ones do."""
        window = self._window(now_us, selection.from_us, selection.to_us)
        matched = [e for e in window if _matches(e, selection.filters)]
        shown = [e for e in matched if not _hidden(e)]
        hidden = len(matched) - len(shown)
        newest_first = self._order == "desc"
        if selection.sort == "cost":
            if newest_first:  # ties keep the created_at order of the same direction
                shown.reverse()
            return sorted(shown, key=lambda e: _cost(e, now_us), reverse=newest_first), hidden
        if newest_first:
            shown.reverse()
        return shown, hidden

    def _task_index(self, now_us: int) -> dict[str, list[_Entry]]:
        """Visible shown streams by task, tasks ordered by their first stream's created_at."""

        def build() -> dict[str, list[_Entry]]:
            tasks: dict[str, list[_Entry]] = {}
            for entry in self._rows:
                task_id = _attr(entry, "task_id")
                if entry.visible_us <= now_us and isinstance(task_id, str) and not _hidden(entry):
                    tasks.setdefault(task_id, []).append(entry)
            return tasks

        key = ("task-index", self._version, self._visible_count(now_us))
        index: dict[str, list[_Entry]] = self._cache.get(key, build)
        return index

    def _select_tasks(self, now_us: int, selection: _Selection) -> list[tuple[str, list[_Entry]]]:
        """Tasks whose first stream is in the span and that match the filters, in order.

        A task's status is its latest stream's; its other fields its first stream's.
        """
        on_last = tuple(f for f in selection.filters if f[0] == "status")
        on_first = tuple(f for f in selection.filters if f[0] != "status")
        low, high = selection.from_us, selection.to_us
        matched = []
        for task_id, streams in self._task_index(now_us).items():
            first = streams[0]
            created = first.created_us
            if (
                (low is not None and created < low)
                or (created == low and not self._from_inclusive)
                or (high is not None and created > high)
                or (created == high and not self._to_inclusive)
                or not _matches(first, on_first)
                or not _matches(streams[-1], on_last)
            ):
                continue
            if selection.search is not None:
                email = _attr(first, "email")
                if not any(
                    selection.search in text.lower()
                    for text in (task_id, email)
                    if isinstance(text, str)
                ):
                    continue
            matched.append((task_id, streams))
        if self._order == "desc":
            matched.reverse()
        return matched

    # --- storage ------------------------------------------------------------------------

    def _insert(self, entries: Iterable[Stream | _Raw]) -> list[_Entry]:
        """Store entries, as the switches have them; returns them in created_at order."""
        ordered = sorted(map(self._switched, entries), key=_created)
        if not ordered:
            return ordered
        append_only = not self._rows or ordered[0].created_us >= self._rows[-1].created_us
        self._rows.extend(ordered)
        if not append_only:
            self._rows.sort(key=_created)  # stable: equal created_at keeps insertion order
        self._visible.extend(e.visible_us for e in ordered)
        self._visible.sort()
        revisions = [
            e.quirks.revised_us
            for e in ordered
            if isinstance(e, _Gen) and e.quirks is not None and e.quirks.revised_us
        ]
        if revisions:
            self._revisions.extend(revisions)
            self._revisions.sort()
        self._changed()
        return ordered

    def _key_us(self, created_us: int) -> int:
        """The created time rows are filtered and sorted by: whole seconds with tie_seconds."""
        return created_us - created_us % 1_000_000 if self._ties else created_us

    def _switched(self, entry: Stream | _Raw) -> _Entry:
        """An entry as the switches have it: its time truncated with tie_seconds, and a
        generated stream's quirks (odd fields, revision, hidden) drawn from the seed."""
        if isinstance(entry, _Raw):
            return entry._replace(created_us=self._key_us(entry.created_us))
        # The stream's own time too: its tool calls' timestamps count from it.
        stream = entry._replace(created_us=self._key_us(entry.created_us))
        gen = _Gen(stream.created_us, stream.visible_us, stream)
        if self._odd_fields or self._revise or self._hide:
            gen = gen._replace(quirks=self._quirks_of(gen))
        return gen

    def _quirks_of(self, gen: _Gen) -> _Quirks | None:
        """Which of the shares pick this stream: independent draws from the seed and its id."""
        digest = hashlib.blake2b(f"{self._seed}/{gen.stream.stream_id}".encode(), digest_size=32)
        raw = digest.digest()
        draws = [int.from_bytes(raw[i : i + 8], "little") / 2**64 for i in range(0, 32, 8)]
        hidden = draws[0] < self._hide
        odd = _odd_bits(random.Random(raw)) if draws[1] < self._odd_fields else 0
        revised_us = 0
        if draws[2] < self._revise and _revisable(gen.stream):
            revised_us = gen.visible_us + self._revise_after_us
        if not (hidden or odd or revised_us):
            return None
        low, high = _REVISED_MONEY
        return _Quirks(odd, revised_us, low + (high - low) * draws[3], hidden)

    def _changed(self) -> None:
        self._version += 1
        self._cache.clear()

    def _advance_live(self, now: float) -> None:
        """Add the live traffic of every minute that has started by now."""
        self._insert(self._traffic.due(now))
