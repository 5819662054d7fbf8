#!/usr/bin/env bash
# Memory soak of the proxy, run by hand (not part of CI's test gate):
#
#   bench/soak/run.sh [MINUTES] [RATE]        defaults: 10 minutes at 2,000 req/s
#
# Does keygate's resident memory stay flat under sustained load, and does it come back
# down when the load stops? One release keygate on SQLite proxies to an nginx upstream
# for MINUTES, in rounds of 30 s that alternate Bearer and DPoP traffic on the
# full-policy route, each round with a fresh access token (and for DPoP a fresh device
# key and one proof per request), so token issuance, the replay cache, the verified-token
# cache, usage sums and the limiter all see new keys all along. VmRSS of the keygate
# process is sampled every 5 s, then for IDLE seconds (default 60) after the load.
#
# It prints the samples, the peak RSS of each round (each round starts with a fresh token
# and key, so RSS saws within a round), RSS after set-up, at the end of the load and after
# the idle period, and the least-squares slope of the per-round peaks over the second
# half of the load (MiB per minute), where caches should have reached their bounds.
set -euo pipefail

MINUTES="${1:-10}"
RATE="${2:-2000}"
IDLE="${IDLE:-60}"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
WORK="$(mktemp -d "${BENCH_TMPDIR:-${TMPDIR:-/tmp}}/keygate-soak-XXXXXX")"
UPSTREAM_PORT=18191
KEYGATE_PORT=18193
PIDS=()

# shellcheck source=../lib/setup.sh
. "$ROOT/bench/lib/setup.sh"
trap bench_cleanup EXIT
bench_need nginx nginx-light
bench_build
bench_upstream "$UPSTREAM_PORT"
bench_keygate "$KEYGATE_PORT" "$UPSTREAM_PORT"
URL="http://127.0.0.1:$KEYGATE_PORT/proxy/bench/hello"

SAMPLES="$WORK/rss.csv"
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$KEYGATE_PID/status"; }
sampler() { # every 5 s: seconds since start, phase, VmRSS in KiB
  local t0 phase
  t0="$(date +%s)"
  while kill -0 "$KEYGATE_PID" 2>/dev/null; do
    phase="$(cat "$WORK/phase")"
    echo "$(( $(date +%s) - t0 + 1 )),$phase,$(rss_kib)" >> "$SAMPLES"
    sleep 5
  done
}
# The set-up sample is taken here, before any load, so the sampler's race with the first
# round cannot mislabel it.
echo "0,setup,$(rss_kib)" > "$SAMPLES"
echo load0 > "$WORK/phase"
sampler &
PIDS+=($!)

ROUNDS=$(( MINUTES * 2 ))
echo "soak: $MINUTES min at $RATE req/s (rounds of 30 s, Bearer and DPoP alternating), then ${IDLE}s idle" >&2
errors=0
requests=0
for round in $(seq 1 "$ROUNDS"); do
  echo "load$round" > "$WORK/phase"
  if [ $(( round % 2 )) -eq 1 ]; then
    kind=bearer
    token="$("$LOADGEN" token --token-url "$TOKEN_URL" --client-id "$CLIENT_ID" --scope bench)"
    dpop=()
  else
    kind=dpop
    key="$WORK/dpop-$round.key"
    token="$("$LOADGEN" token --token-url "$TOKEN_URL" --client-id "$CLIENT_ID" --scope bench --dpop-key "$key")"
    dpop=(--dpop-key "$key")
  fi
  # 28 s of load (1 s warm-up + 27 s window); the rest of the round is token set-up.
  out="$(KEYGATE_LOADGEN_ACCESS_TOKEN="$token" "$LOADGEN" run "$URL" -c 16 -w 1 -d 27 \
    --rate "$RATE" "${dpop[@]}" --json)"
  read -r ok errs < <(printf %s "$out" | python3 -c \
    'import json,sys; r=json.load(sys.stdin); print(r["ok"], sum(r["errors"].values()))')
  requests=$(( requests + ok ))
  errors=$(( errors + errs ))
  printf '  round %2d/%d %-6s %6d ok %4d errors  RSS %6d KiB\n' "$round" "$ROUNDS" "$kind" "$ok" "$errs" "$(rss_kib)" >&2
  rm -f "$WORK/dpop-$round.key"
done
echo idle > "$WORK/phase"
sleep "$IDLE"

echo
echo "memory soak: $MINUTES min at $RATE req/s then ${IDLE}s idle, $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ)"
echo "requests answered 2xx: $requests; errors: $errors"
python3 - "$SAMPLES" <<'PY'
import csv, sys
rows = [(int(t), p, int(k)) for t, p, k in csv.reader(open(sys.argv[1]))]
mib = lambda k: k / 1024
print("samples (s, phase, RSS MiB):", " ".join(f"{t}:{p}:{mib(k):.1f}" for t, p, k in rows))
load = [(t, p, k) for t, p, k in rows if p.startswith("load")]
idle = [k for t, p, k in rows if p == "idle"]
if not load:
    sys.exit("no samples under load")
# Each round starts with a fresh token (and DPoP key), so RSS saws up and down within a
# round; its peak per round is what would keep rising if something grew without bound.
peaks = {}
for t, p, k in load:
    r = int(p[4:])
    if r > 0:
        peaks[r] = max(peaks.get(r, 0), k)
rounds = sorted(peaks)
print("peak RSS per round (MiB):", " ".join(f"{mib(peaks[r]):.1f}" for r in rounds))
half = rounds[len(rounds) // 2:]
slope = 0.0
if len(half) >= 2:
    mr = sum(half) / len(half)
    mk = sum(peaks[r] for r in half) / len(half)
    var = sum((r - mr) ** 2 for r in half)
    slope = sum((r - mr) * (peaks[r] - mk) for r in half) / var  # KiB per round (30 s)
per_min = slope * 2 / 1024
print(f"RSS after set-up           {mib(rows[0][2]):7.1f} MiB")
print(f"peak RSS, first round      {mib(peaks[rounds[0]]):7.1f} MiB")
print(f"peak RSS, whole load       {mib(max(peaks.values())):7.1f} MiB")
print(f"RSS at the end of the load {mib(load[-1][2]):7.1f} MiB")
if idle:
    print(f"RSS after idle             {mib(idle[-1]):7.1f} MiB")
print(f"slope of the per-round peak over the second half of the load: {per_min:+.3f} MiB/min "
      f"({'flat' if abs(per_min) < 0.25 else 'NOT flat'} by the |slope| < 0.25 MiB/min rule)")
PY
