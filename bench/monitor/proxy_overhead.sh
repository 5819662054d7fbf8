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
cleanup() {
  local status=$?
  if [ "$status" != 0 ]; then
    for log in "$WORK"/kg-*.log; do [ -f "$log" ] && { echo "--- $log"; tail -n 5 "$log"; }; done
  fi
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  [ -f "$WORK/upstream.pid" ] && kill "$(cat "$WORK/upstream.pid")" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# shellcheck source=../lib/setup.sh
. "$ROOT/bench/lib/setup.sh"
bench_need nginx nginx-light
bench_build
bench_upstream "$UPSTREAM_PORT"

HZ="$(getconf CLK_TCK)"
RESULTS="$WORK/results"
mkdir -p "$RESULTS"

# side  port  [monitor] section
start_side() {
  local side="$1" port="$2"
  BENCH_KEYGATE_DIR="$WORK/kg-$side" BENCH_KEYGATE_APPEND="$3" \
    bench_keygate "$port" "$UPSTREAM_PORT"
  local pid="$KEYGATE_PID"
  local bearer dpop_key="$WORK/dpop-$side.key" dpop
  bearer="$("$LOADGEN" token --token-url "$TOKEN_URL" --client-id "$CLIENT_ID" --scope bench)"
  dpop="$("$LOADGEN" token --token-url "$TOKEN_URL" --client-id "$CLIENT_ID" --scope bench --dpop-key "$dpop_key")"
  printf '%s\n' "$pid" "http://127.0.0.1:$port/proxy/bench/hello" "$bearer" "$dpop" "$dpop_key" > "$WORK/side-$side"
  local code
  code="$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $bearer" "http://127.0.0.1:$port/proxy/bench/hello")"
  [ "$code" = 200 ] || { echo "keygate ($side) did not forward (HTTP $code)"; cat "$WORK/kg-$side.log"; exit 1; }
}

start_side off 18203 $'[monitor]\nenabled = false'
start_side on 18204 $'[monitor]\ninterval = "2s"\n\n[[monitor.rules]]\nname = "user-spike"\nkind = "spike"\nscope = "user"\nwindow = "15s"\nfactor = 10.0\nmin_calls = 12\nactions = ["alert"]\n\n[[monitor.rules]]\nname = "user-ceiling"\nkind = "ceiling"\nscope = "user"\ncalls_per_minute = 300\nactions = ["alert"]'

run() { # side kind round
  local side="$1" kind="$2" round="$3" pid url bearer dpop key
  { read -r pid; read -r url; read -r bearer; read -r dpop; read -r key; } < "$WORK/side-$side"
  local args=(run "$url" -c "$CONNS" -d "$SECONDS_PER_RUN" -w "$WARMUP" -t 1 --clk-tck "$HZ"
    --label "$side-$kind" --json --cpu-pid "$pid")
  echo "  round $round: $kind, monitor $side" >&2
  if [ "$kind" = dpop ]; then
    KEYGATE_LOADGEN_ACCESS_TOKEN="$dpop" "$LOADGEN" "${args[@]}" --dpop-key "$key" > "$RESULTS/$kind-$side-$round.json"
  else
    KEYGATE_LOADGEN_ACCESS_TOKEN="$bearer" "$LOADGEN" "${args[@]}" > "$RESULTS/$kind-$side-$round.json"
  fi
}

for kind in bearer dpop; do
  for round in $(seq 1 "$ROUNDS"); do
    # Alternate which side goes first, so neither always follows the other.
    if [ $((round % 2)) = 1 ]; then run off "$kind" "$round"; run on "$kind" "$round"
    else run on "$kind" "$round"; run off "$kind" "$round"; fi
  done
done

# bench_keygate left KEYGATE_ADDR and KEYGATE_TOKEN pointing at the last side started (on).
ALERTS="$(curl -s -H "Authorization: Bearer $KEYGATE_TOKEN" "$KEYGATE_ADDR/admin/v1/alerts?all=true" \
  | python3 -c 'import json,sys; a=json.load(sys.stdin)["alerts"]; print(len(a), "(" + ", ".join(sorted({x["rule"] + ": " + x["action"] for x in a})) + ")")' 2>/dev/null || echo '?')"
echo
echo "monitor overhead: full-policy route, ${SECONDS_PER_RUN}s per run (+${WARMUP}s warm-up), $CONNS connections, $ROUNDS rounds per side, $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ)"
echo "monitor on: every default rule evaluating every 2 s; alerts it recorded during the run: $ALERTS"
python3 - "$RESULTS" "$ROUNDS" <<'PY'
import json, statistics, sys
res, rounds = sys.argv[1], int(sys.argv[2])
def load(kind, side):
    return [json.load(open(f"{res}/{kind}-{side}-{r}.json")) for r in range(1, rounds + 1)]
print(f"{'row':<22} {'monitor off':>24} {'monitor on':>24} {'on/off':>8}")
for kind, label in (("bearer", "full policy, Bearer"), ("dpop", "full policy, DPoP")):
    cells, rps = [], {}
    for side in ("off", "on"):
        runs = load(kind, side)
        r = statistics.median(x["rps"] for x in runs)
        cpu = statistics.median(x.get("cpu_us_per_req") or 0.0 for x in runs)
        errors = sum(sum((x.get("errors") or {}).values()) if isinstance(x.get("errors"), dict) else (x.get("errors") or 0) for x in runs)
        rps[side] = r
        cells.append(f"{r:>10,.0f} req/s {cpu:>6.1f} µs" + (f" ({errors} err)" if errors else ""))
    print(f"{label:<22} {cells[0]:>24} {cells[1]:>24} {rps['on'] / rps['off']:>8.3f}")
    for side in ("off", "on"):
        print(f"  {side:>3} rounds: " + ", ".join(f"{x['rps']:,.0f}" for x in load(kind, side)))
PY
