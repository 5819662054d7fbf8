#!/usr/bin/env bash
# Soak of three replicas, run by hand (not part of CI's test gate):
#
#   bench/soak/replicas.sh [MINUTES] [RATE]        defaults: 10 minutes at 600 req/s
#
# Three release keygates on one PostgreSQL schema and one Redis key prefix behind an nginx
# round-robin balancer (bench/lib/replicas.sh), proxying to an nginx upstream for MINUTES
# of mixed traffic, all through the balancer:
#   - the full-policy route at RATE req/s, in rounds of 30 s alternating a Bearer token and
#     a DPoP-bound token with a fresh device key and one ES256 proof per request (so the
#     Redis limiter runs on every call and the Redis replay cache on every DPoP call);
#   - once a second, beside it: a new token, a proxied call with it, its revocation
#     (announced to the other replicas), a call that must now be refused (401), and an
#     admin read;
#   - the monitor as bench_keygate configures it (user rules alert only) and with the
#     per-address refusals rule alert only too, since the side traffic's revoked-token
#     check is a refusal a second from one address (which the default rule would, rightly,
#     throttle after a minute), sharing its intervals over Redis.
# VmRSS of each replica is sampled every 5 s, then for IDLE seconds (default 60) after the
# load. It prints RSS per replica after set-up, at the end of the load and after the idle
# period, the slope of each replica's per-round peak over the second half of the load,
# and every 5xx (there should be none) and unexpected status of the side traffic.
#
# Needs PostgreSQL at 127.0.0.1:5432 (PG_URL) and Redis at 127.0.0.1:6379 (REDIS_URL), as
# bench/proxy/replicas.sh.
set -euo pipefail

MINUTES="${1:-10}"
RATE="${2:-600}"
IDLE="${IDLE:-60}"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
WORK="$(mktemp -d "${BENCH_TMPDIR:-${TMPDIR:-/tmp}}/keygate-soak-replicas-XXXXXX")"
UPSTREAM_PORT=18391
LB_PORT=18392
REPLICA_PORTS=(18393 18394 18395)
PIDS=()

# shellcheck source=../lib/setup.sh
. "$ROOT/bench/lib/setup.sh"
# shellcheck source=../lib/replicas.sh
. "$ROOT/bench/lib/replicas.sh"
bench_cleanup_extra() { replicas_cleanup; }
trap bench_cleanup EXIT
replicas_prepare
BENCH_KEYGATE_APPEND="$BENCH_MONITOR_ALERT_ONLY"$'\n\n[[monitor.rules]]\nname = "ip-refusals"\nkind = "refusals"\nscope = "ip"\nactions = ["alert"]'
bench_build
bench_upstream "$UPSTREAM_PORT"
replicas_start "$LB_PORT" "$UPSTREAM_PORT" "${REPLICA_PORTS[@]}"
ADMIN_TOKEN="$KEYGATE_TOKEN"
CLIENT_SECRET="$KEYGATE_LOADGEN_CLIENT_SECRET"
unset KEYGATE_ADDR KEYGATE_TOKEN
URL="$LB_URL/proxy/bench/hello"

SAMPLES="$WORK/rss.csv"
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
rss_all() { local out="" p; for p in "${REPLICA_PIDS[@]}"; do out="$out,$(rss_kib "$p")"; done; echo "${out#,}"; }
sampler() { # every 5 s: seconds since start, phase, VmRSS of each replica in KiB
  local t0 phase
  t0="$(date +%s)"
  while [ -f "$WORK/phase" ]; do
    phase="$(cat "$WORK/phase" 2>/dev/null || echo done)"
    echo "$(( $(date +%s) - t0 + 1 )),$phase,$(rss_all)" >> "$SAMPLES"
    sleep 5
  done
}

# The side traffic: one line per step, "step status".
SIDE="$WORK/side.log"
side_traffic() {
  local token status
  while [ -f "$WORK/side.on" ]; do
    token="$(curl -sS -u "$CLIENT_ID:$CLIENT_SECRET" -d grant_type=client_credentials -d scope=bench \
      -w '\n%{http_code}' "$LB_TOKEN_URL" 2>/dev/null || echo 000)"
    status="${token##*$'\n'}"
    echo "token $status" >> "$SIDE"
    if [ "$status" = 200 ]; then
      token="$(printf %s "${token%$'\n'*}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')"
      echo "call $(curl -sS -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" "$URL" || echo 000)" >> "$SIDE"
      echo "revoke $(curl -sS -o /dev/null -w '%{http_code}' -u "$CLIENT_ID:$CLIENT_SECRET" \
        -d "token=$token" "$LB_URL/oauth2/revoke" || echo 000)" >> "$SIDE"
      sleep 0.2
      echo "revoked-call $(curl -sS -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" "$URL" || echo 000)" >> "$SIDE"
    fi
    echo "admin $(curl -sS -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $ADMIN_TOKEN" \
      "$LB_URL/admin/v1/routes" || echo 000)" >> "$SIDE"
    sleep 1
  done
}

echo "0,setup,$(rss_all)" > "$SAMPLES"
echo load0 > "$WORK/phase"
sampler &
PIDS+=($!)
touch "$WORK/side.on"
side_traffic &
PIDS+=($!)

ROUNDS=$(( MINUTES * 2 ))
echo "soak: 3 replicas, $MINUTES min at $RATE req/s (rounds of 30 s, Bearer and DPoP alternating) plus side traffic, then ${IDLE}s idle" >&2
: > "$WORK/rounds.log"
for round in $(seq 1 "$ROUNDS"); do
  echo "load$round" > "$WORK/phase"
  if [ $(( round % 2 )) -eq 1 ]; then
    kind=bearer
    token="$("$LOADGEN" token --token-url "$LB_TOKEN_URL" --client-id "$CLIENT_ID" --scope bench)"
    dpop=()
  else
    kind=dpop
    key="$WORK/dpop-$round.key"
    token="$("$LOADGEN" token --token-url "$LB_TOKEN_URL" --client-id "$CLIENT_ID" --scope bench --dpop-key "$key")"
    dpop=(--dpop-key "$key")
  fi
  out="$(KEYGATE_LOADGEN_ACCESS_TOKEN="$token" "$LOADGEN" run "$URL" -c 16 -w 1 -d 27 \
    --rate "$RATE" "${dpop[@]}" --json)"
  read -r ok errs detail < <(printf %s "$out" | python3 -c \
    'import json,sys; r=json.load(sys.stdin); e=r["errors"]; print(r["ok"], sum(e.values()), json.dumps(e, separators=(",", ":")))')
  echo "$round $kind $ok $errs $detail" >> "$WORK/rounds.log"
  printf '  round %2d/%d %-6s %6d ok %4d errors %s  RSS KiB %s\n' "$round" "$ROUNDS" "$kind" "$ok" "$errs" \
    "$([ "$errs" = 0 ] || echo "$detail")" "$(rss_all)" >&2
  rm -f "$WORK/dpop-$round.key"
done
rm -f "$WORK/side.on"
echo idle > "$WORK/phase"
sleep "$IDLE"
rm -f "$WORK/phase"

echo
echo "replica soak: 3 replicas (PostgreSQL $(psql -tA "$PG_URL" -c 'SHOW server_version' | cut -d' ' -f1) + Redis $(redis-cli -u "$REDIS_URL" info server | tr -d '\r' | awk -F: '$1 == "redis_version" {print $2}')) behind nginx, $MINUTES min at $RATE req/s then ${IDLE}s idle, $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ)"
python3 - "$SAMPLES" "$WORK/rounds.log" "$SIDE" <<'PY'
import collections, csv, json, sys
rows = [(int(r[0]), r[1], [int(x) for x in r[2:]]) for r in csv.reader(open(sys.argv[1]))]
rounds = [l.split(maxsplit=4) for l in open(sys.argv[2]) if l.strip()]
ok = sum(int(r[2]) for r in rounds)
errors = collections.Counter()
for r in rounds:
    errors.update(json.loads(r[4]))
five = sum(v for k, v in errors.items() if k.startswith("5"))
print(f"proxied calls answered 2xx: {ok}; errors: {dict(errors) or 'none'}; 5xx: {five}")
side = collections.Counter(tuple(l.split()) for l in open(sys.argv[3]) if l.strip())
expected = {"token": "200", "call": "200", "revoke": "200", "revoked-call": "401", "admin": "200"}
steps = collections.Counter()
unexpected = collections.Counter()
side_five = 0
for (step, status), n in side.items():
    steps[step] += n
    if status != expected.get(step):
        unexpected[f"{step} {status}"] += n
    if status.startswith("5"):
        side_five += n
print("side traffic: " + ", ".join(f"{s} {steps[s]}" for s in expected)
      + f"; unexpected: {dict(unexpected) or 'none'}; 5xx: {side_five}")
mib = lambda k: k / 1024
load = [(t, p, ks) for t, p, ks in rows if p.startswith("load")]
idle = [ks for t, p, ks in rows if p == "idle"]
if not load:
    sys.exit("no samples under load")
n = len(rows[0][2])
for i in range(n):
    peaks = {}
    for t, p, ks in load:
        r = int(p[4:])
        if r > 0:
            peaks[r] = max(peaks.get(r, 0), ks[i])
    rs = sorted(peaks)
    half = rs[len(rs) // 2:]
    slope = 0.0
    if len(half) >= 2:
        mr = sum(half) / len(half)
        mk = sum(peaks[r] for r in half) / len(half)
        var = sum((r - mr) ** 2 for r in half)
        slope = sum((r - mr) * (peaks[r] - mk) for r in half) / var * 2 / 1024  # MiB/min
    end_idle = f"{mib(idle[-1][i]):.1f}" if idle else "-"
    print(f"replica {i + 1}: peak RSS per round (MiB): " + " ".join(f"{mib(peaks[r]):.1f}" for r in rs))
    print(f"replica {i + 1}: RSS after set-up {mib(rows[0][2][i]):.1f} MiB, peak of round 1 {mib(peaks[rs[0]]):.1f}, "
          f"peak under load {mib(max(peaks.values())):.1f}, end of load {mib(load[-1][2][i]):.1f}, after idle {end_idle} MiB; "
          f"per-round peak slope over the second half {slope:+.3f} MiB/min "
          f"({'flat' if abs(slope) < 0.25 else 'NOT flat'} by |slope| < 0.25)")
PY
