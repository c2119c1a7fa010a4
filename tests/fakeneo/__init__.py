"""A fake of ProjectDiscovery Neo's usage API, with faults and a truth oracle: tests, benchmarks.

`FakeNeo` (api.py) holds seeded, realistic usage data (exporter.demo's generator) and answers
the API's requests; `FakeNeoServer` (server.py) serves it over HTTP on loopback, with the
/_fake/ control plane (control.py); `python -m tests.fakeneo` (cli.py) runs it as a process.
It serves `/api/v1/usage/streams`, `/api/v1/usage/tasks[/{task_id}]`, `/api/v1/usage/summary`,
`/api/v1/user` and `/api/v1/billing/credits` as described in docs/neo-api/usage-openapi.yaml,
injects faults (error statuses, resets, timeouts, slow or truncated bodies, bad JSON, endless
paging, wrong totals; faults.py), logs requests (requestlog.py), and computes the ground truth
(`FakeNeo.truth`, truth.py) straight from the rows it serves, so that tests can compare the
exporter's metrics with it. Standard library only.

What the public docs leave open, the fake's default, and the switch (constructor argument /
command-line flag; quirks.py) that makes it behave otherwise, so that tests can exercise both sides:
- How many rows a page holds. Default: what `limit` asks. `page_cap=N` / `--page-cap N`: at
  most N rows a page whatever `limit` asks; `has_more` stays true while rows remain past
  `offset` + the rows served, and `total` is unchanged.
- The direction of `sort=created_at`. Default `order="desc"` (newest first); `order="asc"` /
  `--order asc`: oldest first, on streams and tasks alike. `sort=cost` goes the same way
  (dearest first with desc).
- The order of rows with equal `created_at`, and its precision. Default: milliseconds, and
  equal times keep their insertion order. `tie_seconds=True` / `--ties`: `created_at` is kept
  and served at whole seconds (truncated; `...T11:06:40Z`), the `from`/`to` filters, the
  sorting and the truth's time filters use that truncated time, generated tasks start in
  bursts that share a second, and every list request returns the rows of equal `created_at`
  (streams sorted by created_at, and tasks by their first stream's) in a fresh random order,
  so that naive offset
  paging misses and repeats rows across page boundaries. The shuffle's RNG is seeded from the
  seed and a count of list requests, so a run is reproducible. `dense_ties(rate, seconds)` /
  `--dense-ties RATE --dense-seconds 40` adds a burst of single-stream tasks, RATE created in
  each second (scans cron starts at the same second), an hour ago.
- Whether `from` and `to` are inclusive. Default: both are. `from_inclusive=False` /
  `--from-exclusive` and `to_inclusive=False` / `--to-exclusive` make either exclusive.
- Which fields can be null or come in other forms than the docs' example. Default: the
  example's types, with only `avg_step_latency_ms` and `error_message` ever null.
  `odd_fields=share` / `--odd-fields share`: that share of generated streams (picked from the
  seed) come with some of the forms in ODD_KINDS (null `model`, `status`, `step_count`,
  `tool_calls`, `agent_triggers`; `is_byok` as "true"/"false" or null; counts, timings and
  money as numeric strings; -1 for an unmeasured timing; `tool_breakdown` entries with other
  inner keys; no `tool_call_history`). Money always keeps its true value. Task rows built
  from such streams carry the oddities over (model, is_byok and status come from the
  streams; their sums come as strings when a summed stream's did).
- The inner keys of `tool_breakdown` values: `{"calls", "duration_ms"}`, except in odd rows
  (above). `tool_call_history[].timestamp` is epoch milliseconds (no switch: nothing in the
  exporter reads it).
- Whether a row changes after it was first listed. Default: never (unless a test calls
  `replace_row`). `revise=share` / `--revise share` with `revise_after=seconds` /
  `--revise-after 5s`: that share of generated streams (picked from the seed, among those
  with a tool call and two steps) is first served with lower `neo_credits`, `llm_cost`,
  `neo_cost`, `step_count`, `tool_calls` (one tool call less, in `tool_call_history`,
  `tool_breakdown` and `tool_time_ms` alike), then from `revise_after` seconds after it became
  visible with its final, higher figures. Its model, status, is_byok, created_at, stream_id
  and other timings never change. Every endpoint and the truth serve the version of the moment.
- Whether the listings show everything Neo counts. Default: they do. `hide=share` /
  `--hide share`: that share of generated streams (picked from the seed) is never in any
  listing's `data` (a task's sums leave them out; a task whose streams are all hidden is not
  listed) but counts in the streams listing's `total` (pages are filled and `has_more` set
  from the shown rows; the tasks listing's `total` counts listed tasks) and in
  `/usage/summary`, `/billing/credits` and the spending cap. `truth()` is Neo's books and
  includes them; `truth(listed_only=True)` (`/_fake/truth?listed_only=1`) is what the
  listings show. `truth_by(field)` (`/_fake/truth/groups?by=email|model|task_id`, same
  `from`, `to` and `listed_only`) sums the same streams' count and money per member, model
  or task, for the monthly report.
- Who creates tasks. Default: the demo's eight people (`members=N` / `--members N`: N of them).
  `emails=[(address, weight), ...]` / `--emails ADDR=WEIGHT,...`: those addresses, any
  Unicode; an empty address is a task whose rows carry `"email": null`. `truth_by_email()`
  (`/_fake/truth/by_email`) is the truth of each address's streams apart (teams, budgets).
- When a row shows up: only once its execution has ended (`created_at + total_execution_ms`),
  and `late_fraction` / `--late-fraction` of them up to `max_late` / `--max-late` later.
- A task's `created_at` and `model` are its first stream's, its `status` its latest
  stream's; the tasks endpoint's partial-match filter is named `search` (no switch).
- The status set: `blocked` (newer docs) is served by default; any other value can be served
  with `add_rows` (no switch).
- Error bodies are `{"error": "..."}`; no `Retry-After` unless a fault sets one; a team
  member's token gets 403 on usage and billing; an account on no plan (`billing=False` /
  `--no-billing`) gets 404 on `/billing/credits`; the token is taken from `Authorization:
  Bearer` or `X-Api-Key` alike (no switch).
- Credits reset on the first day of each month (UTC) and expire at the next reset; the
  spending cap's `used` is the BYOK spend (`llm_cost + neo_cost`, USD) since the last reset;
  `/usage/summary` filters `from`/`to` on `created_at` as the listings do (no switch).

The truth follows the repair rules an exact exporter applies (reading.py, `_compute_truth`): a row
counts when it has a `stream_id` and a parsable `created_at` and its money fields are absent,
null, or non-negative numbers (numeric strings read as numbers); a `model` or `status` that is
not a non-empty string is `unknown` (status lower-cased); `is_byok` is true/false from a
boolean or a "true"/"false" string and `unknown` otherwise; a count or timing that is null,
negative or not a number is absent for that field only (adds nothing; a histogram gets no
observation); per-tool calls and times come from `tool_call_history` where a row has a
non-empty one, else from the `tool_breakdown` entries that have `calls` and `duration_ms`.
"""

from exporter.api import STREAMS_PATH
from tests.fakeneo.api import FakeNeo
from tests.fakeneo.faults import FAULT_KINDS, INSERTED_PER_FAULT, Fault
from tests.fakeneo.quirks import ODD_KINDS
from tests.fakeneo.requestlog import RequestRecord
from tests.fakeneo.server import FakeNeoServer
from tests.fakeneo.truth import GroupTotals, Truth

__all__ = [
    "FAULT_KINDS",
    "INSERTED_PER_FAULT",
    "ODD_KINDS",
    "STREAMS_PATH",
    "FakeNeo",
    "FakeNeoServer",
    "Fault",
    "GroupTotals",
    "RequestRecord",
    "Truth",
]
