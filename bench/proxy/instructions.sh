#!/usr/bin/env bash
# Instructions keygate executes per proxied call, run by hand (not part of CI's test gate):
#
#   bench/proxy/instructions.sh [SECONDS]        default: 10
#
# Wall-clock rates on a small shared machine move by 20% from one hour to the next; an
# instruction count does not (valgrind's callgrind counts instructions, not time, so the
# same binary and load give the same count whatever else the machine is doing). This starts
# the nginx upstream and a keygate under `valgrind --tool=callgrind` (instrumentation off
# until the warm-up is over), drives the full-policy route with a Bearer token and then
# with DPoP (a fresh ES256 proof per request) over 4 connections, and prints for each row
# the instructions per call and the functions with the most instructions of their own.
# First the same for `keygate-hyper-floor` (bench/loadgen: the same hop on hyper and Tokio
# with one header set and nothing checked), so the difference is what keygate's own work
# costs.
#
# Read the counts with two caveats: under valgrind, CPU feature detection sees no SHA
# extensions, so SHA-256 runs in software and is overcounted (the real binary uses the
# SHA instructions), and ring's P-256 code takes its generic path instead of the ADX one.
# Compare rows of the same script on two builds (BENCH_KEYGATE=path measures another
# binary), not these counts against wall-clock profiles. keygate's background work (the
# once-a-second usage and budget flushes to the store) is counted too, spread over the
# calls of the window: on a busy machine, with fewer calls under valgrind, it weighs more
# per call (a run beside a CI build: 482 calls, 117,174 per call, against 4,762 calls and
# 105,070 on a quiet machine), so compare runs with similar call counts.
#
# Environment: WARMUP (s, default 2), TOP (functions listed, default 15), BENCH_KEYGATE,
# BENCH_TMPDIR, CARGO_TARGET_DIR, KEEP (a directory: each row's callgrind output is copied
# there as ROW.callgrind, for `callgrind_annotate --tree=caller` and the like).
set -euo pipefail

SECONDS_PER_RUN="${1:-10}"
WARMUP="${WARMUP:-2}"
TOP="${TOP:-15}"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
WORK="$(mktemp -d "${BENCH_TMPDIR:-${TMPDIR:-/tmp}}/keygate-instr-XXXXXX")"
UPSTREAM_PORT=18291
KEYGATE_PORT=18293
FLOOR_PORT=18296
PIDS=()

# shellcheck source=../lib/setup.sh
. "$ROOT/bench/lib/setup.sh"
trap bench_cleanup EXIT
bench_need nginx nginx-light valgrind valgrind
bench_build
REAL_KEYGATE="$KEYGATE"
# `keygate serve` under callgrind; every other keygate command as it is.
cat > "$WORK/keygate-under-callgrind" <<WRAP
#!/usr/bin/env bash
if [ "\$1" = serve ]; then
  exec valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$WORK/callgrind.%p" "$REAL_KEYGATE" "\$@"
fi
exec "$REAL_KEYGATE" "\$@"
WRAP
chmod +x "$WORK/keygate-under-callgrind"
KEYGATE="$WORK/keygate-under-callgrind"
bench_upstream "$UPSTREAM_PORT"
# bench_keygate waits 10 s for /readyz; under valgrind the start takes longer.
bench_keygate "$KEYGATE_PORT" "$UPSTREAM_PORT" || true
for _ in $(seq 1 300); do curl -fsS "http://127.0.0.1:$KEYGATE_PORT/readyz" >/dev/null 2>&1 && break; sleep 0.2; done
BEARER="$("$LOADGEN" token --token-url "$TOKEN_URL" --client-id "$CLIENT_ID" --scope bench)"
DPOP_KEY="$WORK/dpop.key"
DPOP_TOKEN="$("$LOADGEN" token --token-url "$TOKEN_URL" --client-id "$CLIENT_ID" --scope bench --dpop-key "$DPOP_KEY")"
URL="http://127.0.0.1:$KEYGATE_PORT/proxy/bench/hello"
# Under callgrind too; the start takes longer there.
FLOOR_WAIT=60 bench_floor "$FLOOR_PORT" "$UPSTREAM_PORT" \
  valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$WORK/callgrind.%p"
FLOOR_URL="http://127.0.0.1:$FLOOR_PORT/proxy/bench/hello"

count() { # name url pid token [loadgen args…]
  local name="$1" url="$2" pid="$3" token="$4"; shift 4
  KEYGATE_LOADGEN_ACCESS_TOKEN="$token" "$LOADGEN" run "$url" -c 4 -d "$WARMUP" -w 0 "$@" --json >/dev/null
  callgrind_control --zero "$pid" >/dev/null 2>&1
  callgrind_control --instr=on "$pid" >/dev/null 2>&1
  KEYGATE_LOADGEN_ACCESS_TOKEN="$token" "$LOADGEN" run "$url" -c 4 -d "$SECONDS_PER_RUN" -w 0 "$@" \
    --json > "$WORK/$name.json"
  callgrind_control --instr=off "$pid" >/dev/null 2>&1
  rm -f "$WORK"/callgrind."$pid".*
  callgrind_control --dump="$name" "$pid" >/dev/null 2>&1
  sleep 1
  local out calls
  out="$(ls -t "$WORK"/callgrind."$pid".* | head -n 1)"
  calls="$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); assert not r["errors"], r["errors"]; print(r["ok"])' "$WORK/$name.json")"
  callgrind_annotate "$out" 2>/dev/null > "$WORK/$name.txt"
  callgrind_annotate --threshold=100 "$out" 2>/dev/null > "$WORK/$name.all.txt"
  echo "$calls" > "$WORK/$name.calls"
  if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP" && cp "$out" "$KEEP/$name.callgrind"; fi
  python3 - "$WORK/$name.txt" "$calls" "$name" "$TOP" <<'PY'
import re, sys
text, calls, name, top = open(sys.argv[1]).read(), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
total = int(re.search(r"^([\d,]+) \(100\.0%\)\s+PROGRAM TOTALS", text, re.M).group(1).replace(",", ""))
what = "hyper floor, nothing checked" if name == "floor" else f"full policy, {name}"
proc = "keygate-hyper-floor" if name == "floor" else "keygate"
print(f"\n=== {what}: {calls} calls, {total / calls:,.0f} instructions per call ({proc} process)")
rows = [r for r in re.findall(r"^\s*([\d,]+) \(\s*[\d.]+%\)\s+(\S+)", text, re.M) if r[1] != "PROGRAM"]
for count, where in rows[:top]:
    fn = where.split(":", 1)[-1][:90]
    print(f"  {int(count.replace(',', '')) / calls:>10,.0f}  {fn}")
PY
}

echo "instructions per call: keygate $("$REAL_KEYGATE" --version 2>/dev/null || true), ${SECONDS_PER_RUN}s per row, 4 connections, under callgrind" >&2
count floor "$FLOOR_URL" "$FLOOR_PID" "$BEARER"
count bearer "$URL" "$KEYGATE_PID" "$BEARER"
# Where keygate's Bearer call spends instructions the floor does not: self instructions
# per call, grouped by where the function comes from.
python3 - "$WORK" "$ROOT/bench/proxy" <<'PY'
import re, sys
work = sys.argv[1]
sys.path.insert(0, sys.argv[2])
from perf_groups import group_of  # profile.sh's groups, so the two read alike
def groups(name):
    calls = int(open(f"{work}/{name}.calls").read())
    text = open(f"{work}/{name}.all.txt").read()
    out = {}
    for count, where in re.findall(r"^\s*([\d,]+) \(\s*[\d.]+%\)\s+(\S.*)$", text, re.M):
        if "PROGRAM TOTALS" in where:
            continue
        # "file:function [object]": the function's name alone.
        fn = where.split(" [")[0].split(":", 1)[-1]
        g = group_of(fn)
        out[g] = out.get(g, 0) + int(count.replace(",", "")) / calls
    return out
floor, kg = groups("floor"), groups("bearer")
print("\n=== instructions per call by group (profile.sh's groups): floor against keygate's Bearer call")
print("  (SHA-256 runs in software under valgrind: the signature group is overcounted)")
print(f"  {'group':<46}{'floor':>9}{'keygate':>9}{'added':>9}")
for g in sorted(set(floor) | set(kg), key=lambda g: -(kg.get(g, 0) - floor.get(g, 0))):
    a, b = floor.get(g, 0), kg.get(g, 0)
    print(f"  {g:<46}{a:>9,.0f}{b:>9,.0f}{b - a:>+9,.0f}")
print(f"  {'total':<46}{sum(floor.values()):>9,.0f}{sum(kg.values()):>9,.0f}{sum(kg.values()) - sum(floor.values()):>+9,.0f}")
PY
count dpop "$URL" "$KEYGATE_PID" "$DPOP_TOKEN" --dpop-key "$DPOP_KEY" --proofs 20000
