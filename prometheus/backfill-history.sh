#!/bin/sh
# Load a neo-exporter history into a Prometheus data directory, with recording rules
# backfilled over it (docs/history.md).
#
#   prometheus/backfill-history.sh HISTORY DATA_DIR [RULE_FILE...]
#
# HISTORY    what `neo-exporter history --output` wrote (.om, or .om.gz)
# DATA_DIR   Prometheus' --storage.tsdb.path, of a Prometheus running or not
# RULE_FILE  recording rules to compute over the history, for instance
#            prometheus/rules/neo-recording.rules.yml (alerting rules are skipped)
#
# Environment: PROMTOOL and PROMETHEUS (the binaries; default: from PATH), STAGING_PORT
# (default 9099): a throwaway Prometheus on 127.0.0.1 serves the history to promtool while
# it evaluates the rules. Everything is built in a directory inside DATA_DIR (so that the
# blocks move in with a rename) and moved in only once complete; a running Prometheus loads
# them within a minute. POSIX sh: it runs in the prom/prometheus image (busybox) too.
set -eu

usage() {
  echo "usage: $0 HISTORY DATA_DIR [RULE_FILE...]" >&2
  exit 2
}
[ "$#" -ge 2 ] || usage
history=$1
data=$2
shift 2
promtool=${PROMTOOL:-promtool}
prometheus=${PROMETHEUS:-prometheus}
port=${STAGING_PORT:-9099}

[ -f "$history" ] || { echo "backfill: no history file at $history" >&2; exit 1; }
for rules in "$@"; do
  [ -f "$rules" ] || { echo "backfill: no rule file at $rules" >&2; exit 1; }
done
mkdir -p "$data"
work=$(mktemp -d "$data/.neo-history.XXXXXX")
staging_pid=""
cleanup() {
  if [ -n "$staging_pid" ]; then
    kill "$staging_pid" 2>/dev/null || true
    wait "$staging_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

case "$history" in
  *.gz)
    # promtool maps the file into memory: it cannot read a pipe.
    gunzip -c "$history" >"$work/history.om"
    source=$work/history.om
    ;;
  *) source=$history ;;
esac

# Blocks as long as promtool makes them (486h): it parses the whole file once per block,
# and 2-hour blocks would mean 360 passes over a 30-day file.
"$promtool" tsdb create-blocks-from openmetrics --quiet --max-block-duration=720h \
  "$source" "$work/blocks"
rm -f "$work/history.om"

if [ "$#" -gt 0 ]; then
  # The span of the samples, from the blocks' own bounds (milliseconds; max is exclusive).
  span=$("$promtool" tsdb list "$work/blocks" | awk 'NR > 1 {
    if (min == "" || $2 < min) min = $2; if ($3 > max) max = $3 }
    END { if (min != "") printf "%d %d\n", min / 1000, (max - 1) / 1000 }')
  [ -n "$span" ] || { echo "backfill: the history holds no samples" >&2; exit 1; }
  start=${span% *}
  end=${span#* }
  printf 'scrape_configs: []\n' >"$work/staging.yml"
  # A long retention: the default 15 days would delete the older blocks at once.
  "$prometheus" --config.file="$work/staging.yml" --storage.tsdb.path="$work/blocks" \
    --storage.tsdb.retention.time=100y --web.listen-address="127.0.0.1:$port" \
    --log.level=info >"$work/staging.log" 2>&1 &
  staging_pid=$!
  tries=0
  # The port is asked only once the staging Prometheus says it holds it: whatever else
  # listens there must never answer for it (its rules would be evaluated on other data).
  until grep -q "Server is ready to receive web requests" "$work/staging.log" &&
    "$promtool" query instant "http://127.0.0.1:$port" 'vector(1)' >/dev/null 2>&1; do
    tries=$((tries + 1))
    if ! kill -0 "$staging_pid" 2>/dev/null &&
      grep -q "address already in use" "$work/staging.log"; then
      echo "backfill: port $port is already in use on 127.0.0.1; the staging Prometheus" \
        "needs a free one: set STAGING_PORT to another port" >&2
      exit 1
    fi
    if [ "$tries" -ge 60 ] || ! kill -0 "$staging_pid" 2>/dev/null; then
      echo "backfill: the staging Prometheus on 127.0.0.1:$port did not start:" >&2
      cat "$work/staging.log" >&2
      exit 1
    fi
    sleep 1
  done
  # Rules without an interval of their own are evaluated every 5 minutes, as often as the
  # history has samples: a minute would take five times longer for the same graphs, and
  # with 486-hour blocks would ask Prometheus for more than its 11,000 points a query.
  "$promtool" tsdb create-blocks-from rules --quiet --eval-interval=5m \
    --max-block-duration=720h --url="http://127.0.0.1:$port" --start="$start" \
    --end="$end" --output-dir="$work/rules" "$@" 2>"$work/rules.log" || {
    cat "$work/rules.log" >&2
    exit 1
  }
  if grep -q -e "importer error" -e "level=error" "$work/rules.log"; then
    # promtool reports a failed query and carries on: a hole would go unnoticed.
    grep -e "importer error" -e "level=error" "$work/rules.log" >&2
    exit 1
  fi
  kill "$staging_pid" 2>/dev/null || true
  wait "$staging_pid" || true
  staging_pid=""
fi

moved=0
for block in "$work"/blocks/* "$work"/rules/*; do
  [ -f "$block/meta.json" ] || continue
  mv "$block" "$data/"
  moved=$((moved + 1))
done
echo "backfill: $moved blocks moved into $data; a running Prometheus loads them within a minute"
echo "backfill: its --storage.tsdb.retention.time must cover the history, or they are deleted"
