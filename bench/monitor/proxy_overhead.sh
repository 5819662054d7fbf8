#!/usr/bin/env bash
# What the monitor costs the proxy, run by hand (not part of CI's test gate):
#
#   bench/monitor/proxy_overhead.sh [SECONDS] [CONNECTIONS] [ROUNDS]   defaults: 8 32 3
#
# Two release keygates on SQLite proxy to one nginx upstream: one with `[monitor]
# enabled = false`, one with the monitor on and every default rule evaluating. In the
# second, `user-spike` and `user-ceiling` are replaced by alert-only copies: a benchmark
# client making 20,000 calls a second *is* a spike, and a throttle would turn the
# measurement into one of 429s; here the monitor watches, fires once per incident and
# records the alert, and the calls keep going through. Rounds alternate off/on for the
# full-policy route with a Bearer token, then with DPoP (a fresh ES256 proof per
# request), so drift in the machine's speed falls on both sides alike. For each side it
# prints closed-loop requests/s (median of the rounds) and keygate's CPU time per
# request, and the ratio on/off. Goal: on within 5% of off.
set -euo pipefail

SECONDS_PER_RUN="${1:-8}"
CONNS="${2:-32}"
ROUNDS="${3:-3}"
WARMUP="${WARMUP:-2}"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
WORK="$(mktemp -d "${BENCH_TMPDIR:-${TMPDIR:-/tmp}}/keygate-monbench-XXXXXX")"
UPSTREAM_PORT=18201
PIDS=()

# shellcheck source=../lib/setup.sh
. "$ROOT/bench/lib/setup.sh"
trap bench_cleanup EXIT
bench_need nginx nginx-light
bench_build
bench_upstream "$UPSTREAM_PORT"

# shellcheck source=../lib/ab.sh
. "$ROOT/bench/lib/ab.sh"

ab_start_side off 18203 "$KEYGATE" $'[monitor]\nenabled = false'
ab_start_side on 18204 "$KEYGATE" "$BENCH_MONITOR_ALERT_ONLY"
ab_rounds off on

# bench_keygate left KEYGATE_ADDR and KEYGATE_TOKEN pointing at the last side started (on).
ALERTS="$(curl -s -H "Authorization: Bearer $KEYGATE_TOKEN" "$KEYGATE_ADDR/admin/v1/alerts?all=true" \
  | python3 -c 'import json,sys; a=json.load(sys.stdin)["alerts"]; print(len(a), "(" + ", ".join(sorted({x["rule"] + ": " + x["action"] for x in a})) + ")")' 2>/dev/null || echo '?')"
echo
echo "monitor overhead: full-policy route, ${SECONDS_PER_RUN}s per run (+${WARMUP}s warm-up), $CONNS connections, $ROUNDS rounds per side, $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ)"
echo "monitor on: every default rule evaluating every 2 s; alerts it recorded during the run: $ALERTS"
ab_report off "monitor off" on "monitor on"
