# Shared by the A/B benchmarks (bench/proxy/compare.sh, bench/monitor/proxy_overhead.sh):
# two keygates side by side on one nginx upstream, measured in alternating rounds so drift
# in the machine's speed falls on both sides alike. Source after bench/lib/setup.sh, with
# WORK, UPSTREAM_PORT, LOADGEN, CONNS, SECONDS_PER_RUN, WARMUP and ROUNDS set.

AB_RESULTS="$WORK/results"
mkdir -p "$AB_RESULTS"

# ab_start_side SIDE PORT BINARY [CONFIG TO APPEND]
# Starts keygate BINARY as SIDE with a full-policy route, and mints its Bearer and DPoP
# tokens. Without CONFIG the monitor watches and alerts only ($BENCH_MONITOR_ALERT_ONLY).
ab_start_side() {
  local side="$1" port="$2"
  KEYGATE="$3" BENCH_KEYGATE_DIR="$WORK/kg-$side" BENCH_KEYGATE_APPEND="${4-$BENCH_MONITOR_ALERT_ONLY}" \
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

# ab_run SIDE KIND ROUND: one closed-loop run (KIND bearer or dpop) into the results.
ab_run() {
  local side="$1" kind="$2" round="$3" pid url bearer dpop key
  { read -r pid; read -r url; read -r bearer; read -r dpop; read -r key; } < "$WORK/side-$side"
  local args=(run "$url" -c "$CONNS" -d "$SECONDS_PER_RUN" -w "$WARMUP" -t 1 --clk-tck "$(getconf CLK_TCK)"
    --label "$side-$kind" --json --cpu-pid "$pid")
  echo "  round $round: $kind, $side" >&2
  if [ "$kind" = dpop ]; then
    KEYGATE_LOADGEN_ACCESS_TOKEN="$dpop" "$LOADGEN" "${args[@]}" --dpop-key "$key" > "$AB_RESULTS/$kind-$side-$round.json"
  else
    KEYGATE_LOADGEN_ACCESS_TOKEN="$bearer" "$LOADGEN" "${args[@]}" > "$AB_RESULTS/$kind-$side-$round.json"
  fi
}

# ab_rounds SIDE_A SIDE_B: ROUNDS rounds of each kind, alternating which side goes first.
ab_rounds() {
  local kind round
  for kind in bearer dpop; do
    for round in $(seq 1 "$ROUNDS"); do
      if [ $((round % 2)) = 1 ]; then ab_run "$1" "$kind" "$round"; ab_run "$2" "$kind" "$round"
      else ab_run "$2" "$kind" "$round"; ab_run "$1" "$kind" "$round"; fi
    done
  done
}

# ab_report SIDE_A LABEL_A SIDE_B LABEL_B: medians of the rounds and the ratio B/A.
ab_report() {
  python3 - "$AB_RESULTS" "$ROUNDS" "$@" <<'PY'
import json, statistics, sys
res, rounds, a, label_a, b, label_b = sys.argv[1], int(sys.argv[2]), *sys.argv[3:7]
def load(kind, side):
    return [json.load(open(f"{res}/{kind}-{side}-{r}.json")) for r in range(1, rounds + 1)]
def errors(x):
    e = x.get("errors") or 0
    return sum(e.values()) if isinstance(e, dict) else e
print(f"{'row':<22} {label_a:>26} {label_b:>26} {'ratio':>7}")
for kind, label in (("bearer", "full policy, Bearer"), ("dpop", "full policy, DPoP")):
    cells, rps = [], {}
    for side in (a, b):
        runs = load(kind, side)
        r = statistics.median(x["rps"] for x in runs)
        cpu = statistics.median(x.get("cpu_us_per_req") or 0.0 for x in runs)
        n = sum(errors(x) for x in runs)
        rps[side] = r
        cells.append(f"{r:>10,.0f} req/s {cpu:>6.1f} µs" + (f" ({n} err)" if n else ""))
    print(f"{label:<22} {cells[0]:>26} {cells[1]:>26} {rps[b] / rps[a]:>7.3f}")
    for side in (a, b):
        print(f"  {side:>6} rounds: " + ", ".join(f"{x['rps']:,.0f}" for x in load(kind, side)))
print(f"(req/s: median of {rounds} closed-loop rounds; µs: keygate's CPU time per request; ratio: {label_b} / {label_a})")
PY
}
