#!/usr/bin/env bash
# Replica benchmark, run by hand (not part of CI's test gate): keygate's full-policy proxy
# path with replicas on PostgreSQL coordinated through Redis, against nginx and against
# the embedded (SQLite, one process) keygate, in one run with one load generator:
#
#   bench/proxy/replicas.sh [SECONDS] [CONNECTIONS]
#
# Needs PostgreSQL at 127.0.0.1:5432 (user postgres, trust auth, database `test`; override
# with PG_URL, a postgres:// URL without query) and Redis at 127.0.0.1:6379 (REDIS_URL).
# Every run makes its own schema (kgbench_…) and Redis key prefix (kgbench-…:) and removes
# both in its exit trap.
#
# Environment: WARMUP (s, default 2), RATE (req/s for the open-loop runs; default
# RATE_FRACTION × the slowest closed-loop rate), RATE_FRACTION (default 0.5), THREADS
# (generator threads, default 1), OPEN=0 (skip the open loop), BENCH_TMPDIR, BENCH_KEYGATE,
# CARGO_TARGET_DIR (as bench/proxy/run.sh).
#
# Rows (every keygate row is route `bench`: token, allow-list, scope, rate limit, key
# injection — the full policy — with a Bearer token and with a DPoP-bound token and a
# fresh ES256 proof per request):
#   1. nginx as a reverse proxy injecting the Authorization header, upstream keep-alive
#      (the floor, as in run.sh),
#   2. keygate, one process, SQLite, DPoP replay cache and rate limits in process (the
#      embedded baseline: run.sh's kg_full_bearer / kg_full_dpop),
#   3. keygate, one replica on PostgreSQL with [coordination] on Redis: every call runs the
#      GCRA Lua script on Redis (one round trip), every DPoP call also a SET NX for the
#      proof; measured directly (the other two replicas are up and idle),
#   3a. for the split of row 3's cost: one more keygate on the same PostgreSQL store with
#      the same configuration but without [coordination] (rate limit in process, DPoP
#      replay table in PostgreSQL): row 3a − row 2 is the store, row 3 − row 3a is Redis
#      (for Bearer; for DPoP 3a pays a PostgreSQL write per proof instead of Redis's SET NX),
#   4. three replicas on the same PostgreSQL + Redis behind nginx as a round-robin load
#      balancer with upstream keep-alive (keygate-loadgen takes one URL, so the balancer
#      spreads its connections). CPU per request is the three replicas' CPU summed; the
#      balancer's own CPU is not in it (about row 1's, which does the same proxying). On a
#      2-core machine three replicas, the balancer, Redis, PostgreSQL and the generator share
#      the same two cores: this row measures what coordination and the extra hop cost, not
#      scale-out.
# The replicas share one keygate.toml and master.key (from one `keygate init`), each with
# its own data_dir; public_url is the balancer's URL on every replica (the token issuer
# and what DPoP htu is checked against), so row 3's proofs name the balancer's URL too.
# Redis's own CPU per call is sampled from /proc around each closed-loop run and divided by
# the GCRA scripts Redis ran in that time (one per proxied call, warm-up included).
#
# DPoP proofs are signed ahead of each window and live 60 s: SECONDS + WARMUP <= 40.
set -euo pipefail

SECONDS_PER_RUN="${1:-10}"
CONNS="${2:-32}"
WARMUP="${WARMUP:-2}"
RATE="${RATE:-}"
RATE_FRACTION="${RATE_FRACTION:-0.5}"
THREADS="${THREADS:-1}"
OPEN="${OPEN:-1}"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
if python3 -c "import sys; sys.exit(0 if float('$SECONDS_PER_RUN') + float('$WARMUP') <= 40 else 1)"; then :; else
  echo "SECONDS + WARMUP must be at most 40 (DPoP proofs are signed ahead and live 60 s)" >&2
  exit 2
fi
WORK="$(mktemp -d "${BENCH_TMPDIR:-${TMPDIR:-/tmp}}/keygate-replicas-XXXXXX")"
# Ports apart from run.sh's (18181–18185), so both can run on one machine.
UPSTREAM_PORT=18281
NGINX_PORT=18282
SQLITE_PORT=18283
LB_PORT=18284
REPLICA_PORTS=(18285 18286 18287)
PGONLY_PORT=18288
PIDS=()

# shellcheck source=../lib/setup.sh
. "$ROOT/bench/lib/setup.sh"
# shellcheck source=../lib/replicas.sh
. "$ROOT/bench/lib/replicas.sh"
bench_cleanup_extra() { replicas_cleanup; }
trap bench_cleanup EXIT
replicas_prepare
bench_build

mkdir -p "$WORK/proxy" "$WORK/results"
bench_upstream "$UPSTREAM_PORT"
NGINX="$(command -v nginx)"

# --- nginx: the floor (header injection) ----------------------------------------------
cat > "$WORK/proxy.conf" <<EOF
worker_processes 2;
pid $WORK/proxy.pid;
error_log $WORK/proxy/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $WORK/proxy;
  proxy_temp_path $WORK/proxy;
  keepalive_requests 1000000;
  upstream api { server 127.0.0.1:$UPSTREAM_PORT; keepalive 64; }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location /proxy/bench/ {
      proxy_pass http://api/;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Authorization "Bearer sk-bench-key";
    }
  }
}
EOF
"$NGINX" -c "$WORK/proxy.conf" -p "$WORK/proxy"
KG_LB="http://127.0.0.1:$LB_PORT/proxy"

# --- 2. keygate embedded: SQLite, one process --------------------------------------------
BENCH_KEYGATE_DIR="$WORK/kg-sqlite" bench_keygate "$SQLITE_PORT" "$UPSTREAM_PORT"
SQLITE_PID="$KEYGATE_PID"
KG_SQ="http://127.0.0.1:$SQLITE_PORT/proxy"
DPOP_KEY="$WORK/dpop.key"
SQ_BEARER="$("$LOADGEN" token --token-url "$TOKEN_URL" --client-id "$CLIENT_ID" --scope bench)"
SQ_DPOP="$("$LOADGEN" token --token-url "$TOKEN_URL" --client-id "$CLIENT_ID" --scope bench --dpop-key "$DPOP_KEY")"
unset KEYGATE_ADDR KEYGATE_TOKEN KEYGATE_LOADGEN_CLIENT_SECRET

# --- 3./4. replicas on PostgreSQL + Redis ----------------------------------------------------
replicas_start "$LB_PORT" "$UPSTREAM_PORT" "${REPLICA_PORTS[@]}"
# 3a: the same store and configuration, no Redis.
replicas_serve "$PGONLY_PORT" "$WORK/kg-pgonly" KEYGATE_PUBLIC_URL="$LB_URL"
PGONLY_PID="$SERVED_PID"
REPLICA_PIDS+=("$PGONLY_PID")
replicas_wait_ready "$PGONLY_PORT"
# Tokens through the balancer: the token endpoint checks the proof's htu against public_url.
PG_BEARER="$("$LOADGEN" token --token-url "http://127.0.0.1:$LB_PORT/oauth2/token" --client-id "$CLIENT_ID" --scope bench)"
PG_DPOP="$("$LOADGEN" token --token-url "http://127.0.0.1:$LB_PORT/oauth2/token" --client-id "$CLIENT_ID" --scope bench --dpop-key "$DPOP_KEY")"
unset KEYGATE_ADDR KEYGATE_TOKEN KEYGATE_LOADGEN_CLIENT_SECRET

# Every replica serves both token kinds on the full-policy route (the routes were applied
# through replica 1; the others read them from the store), and the balancer reaches them all.
check() { # url token [loadgen args…]
  local url="$1" token="$2"; shift 2
  local r
  r="$(KEYGATE_LOADGEN_ACCESS_TOKEN="$token" "$LOADGEN" run "$url" -c 1 -d 0.3 -w 0 --json "$@")"
  printf %s "$r" | python3 -c 'import json,sys; r=json.load(sys.stdin); sys.exit(0 if r["ok"] > 0 and not r["errors"] else 1)' \
    || { echo "check failed for $url: $r" >&2; exit 1; }
}
for port in "${REPLICA_PORTS[@]}" "$PGONLY_PORT"; do
  check "http://127.0.0.1:$port/proxy/bench/hello" "$PG_BEARER"
  check "http://127.0.0.1:$port/proxy/bench/hello" "$PG_DPOP" --dpop-key "$DPOP_KEY" \
    --htu "$KG_LB/bench/hello" --proofs 1000
done
check "$KG_SQ/bench/hello" "$SQ_DPOP" --dpop-key "$DPOP_KEY" --proofs 1000
check "$KG_LB/bench/hello" "$PG_DPOP" --dpop-key "$DPOP_KEY" --proofs 1000
# A DPoP-bound token is refused as a Bearer token (so the DPoP rows are bound).
code="$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $PG_DPOP" "$KG_LB/bench/hello")"
[ "$code" = 401 ] || { echo "a DPoP-bound token used as Bearer got $code, expected 401" >&2; exit 1; }

# --- measurement ---------------------------------------------------------------------------
HZ="$(getconf CLK_TCK)"
NGINX_PIDS=($(pgrep -f "nginx.*$WORK/proxy.conf" || true) $(pgrep -P "$(cat "$WORK/proxy.pid")" || true))
REDIS_PID="$(redis-cli -u "$REDIS_URL" info server | tr -d '\r' | awk -F: '$1 == "process_id" {print $2}')"
[ -r "/proc/$REDIS_PID/stat" ] || REDIS_PID=""
RESULTS="$WORK/results"
R1="http://127.0.0.1:${REPLICA_PORTS[0]}/proxy"
P1="http://127.0.0.1:$PGONLY_PORT/proxy"

# name  url  token-kind  cpu-pids  [htu]
ROWS=(
  "nginx|http://127.0.0.1:$NGINX_PORT/proxy/bench/hello|none|${NGINX_PIDS[*]}|"
  "sq_bearer|$KG_SQ/bench/hello|sq_bearer|$SQLITE_PID|"
  "sq_dpop|$KG_SQ/bench/hello|sq_dpop|$SQLITE_PID|"
  "r1_bearer|$R1/bench/hello|pg_bearer|${REPLICA_PIDS[0]}|"
  "r1_dpop|$R1/bench/hello|pg_dpop|${REPLICA_PIDS[0]}|$KG_LB/bench/hello"
  "p1_bearer|$P1/bench/hello|pg_bearer|$PGONLY_PID|"
  "p1_dpop|$P1/bench/hello|pg_dpop|$PGONLY_PID|$KG_LB/bench/hello"
  "r3_bearer|$KG_LB/bench/hello|pg_bearer|${REPLICA_PIDS[*]:0:3}|"
  "r3_dpop|$KG_LB/bench/hello|pg_dpop|${REPLICA_PIDS[*]:0:3}|"
)

# Redis's CPU ticks and the Lua scripts it has run (EVAL/EVALSHA calls): "ticks scripts".
redis_sample() {
  local ticks=0 scripts
  [ -n "$REDIS_PID" ] && ticks="$(awk '{sub(/.*\) /, ""); print $12 + $13}' "/proc/$REDIS_PID/stat")"
  scripts="$(redis-cli -u "$REDIS_URL" info commandstats | tr -d '\r' \
    | awk -F'[:=,]' '$1 == "cmdstat_eval" || $1 == "cmdstat_evalsha" {n += $3} END {print n + 0}')"
  echo "$ticks $scripts"
}

loadgen() { # phase name url kind pids htu [extra args…]
  local phase="$1" name="$2" url="$3" kind="$4" pids="$5" htu="$6"; shift 6
  local args=(run "$url" -c "${LG_CONNS:-$CONNS}" -d "${LG_SECONDS:-$SECONDS_PER_RUN}" -w "$WARMUP" -t "$THREADS"
    --clk-tck "$HZ" --label "$name" --json "$@")
  for p in $pids; do args+=(--cpu-pid "$p"); done
  local token=""
  case "$kind" in
    sq_bearer) token="$SQ_BEARER" ;;
    pg_bearer) token="$PG_BEARER" ;;
    sq_dpop) token="$SQ_DPOP"; args+=(--dpop-key "$DPOP_KEY") ;;
    pg_dpop) token="$PG_DPOP"; args+=(--dpop-key "$DPOP_KEY") ;;
  esac
  [ -n "$htu" ] && args+=(--htu "$htu")
  echo "  $phase: $name" >&2
  local before after
  before="$(redis_sample)"
  if [ -n "$token" ]; then
    KEYGATE_LOADGEN_ACCESS_TOKEN="$token" "$LOADGEN" "${args[@]}" > "$RESULTS/$phase-$name.json"
  else
    env -u KEYGATE_LOADGEN_ACCESS_TOKEN "$LOADGEN" "${args[@]}" > "$RESULTS/$phase-$name.json"
  fi
  after="$(redis_sample)"
  echo "$before $after" > "$RESULTS/$phase-$name.redis"
}

echo "closed loop: $CONNS connections, ${SECONDS_PER_RUN}s (+${WARMUP}s warm-up) per row" >&2
for row in "${ROWS[@]}"; do
  IFS='|' read -r name url kind pids htu <<<"$row"
  loadgen closed "$name" "$url" "$kind" "$pids" "$htu"
done

if [ "$OPEN" = 1 ]; then
  if [ -z "$RATE" ]; then
    RATE="$(python3 - "$RESULTS" "$RATE_FRACTION" <<'PY'
import glob, json, math, sys
rps = [json.load(open(f))["rps"] for f in glob.glob(sys.argv[1] + "/closed-*.json")]
r = max(1.0, min(rps) * float(sys.argv[2]))
p = 10 ** max(0, int(math.log10(r)) - 1)
print(int(r // p * p))
PY
)"
    RATE_NOTE="${RATE_FRACTION} × the slowest closed-loop row"
  else
    RATE_NOTE="set by RATE"
  fi
  echo "open loop: $RATE req/s over $CONNS connections, ${SECONDS_PER_RUN}s (+${WARMUP}s warm-up) per row" >&2
  for row in "${ROWS[@]}"; do
    IFS='|' read -r name url kind pids htu <<<"$row"
    loadgen open "$name" "$url" "$kind" "$pids" "$htu" --rate "$RATE"
  done
fi

SERIAL_SECONDS=5
echo "one connection: ${SERIAL_SECONDS}s (+${WARMUP}s warm-up) per row" >&2
for row in "${ROWS[@]}"; do
  IFS='|' read -r name url kind pids htu <<<"$row"
  LG_CONNS=1 LG_SECONDS="$SERIAL_SECONDS" loadgen serial "$name" "$url" "$kind" "$pids" "$htu"
done

# Does any other client use this Redis meanwhile? (Its scripts would skew Redis CPU/call.)
LOAD="$(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "replica benchmark: ${SECONDS_PER_RUN}s per run (+${WARMUP}s warm-up), $CONNS connections, keygate-loadgen -t$THREADS, $(nproc) cores, load average at the end $LOAD, $(date -u +%Y-%m-%dT%H:%MZ)"
echo "keygate: route bench (full policy: token, allow-list, scope, rate limit, injection); [tokens] dpop = optional; DPoP rows with DPoP-bound tokens and a fresh ES256 proof per request"
echo "  embedded: SQLite, replay cache and rate limit in process; replicas: PostgreSQL ($(psql -tA "$PG_URL" -c 'SHOW server_version' | cut -d' ' -f1), schema $SCHEMA), Redis $(redis-cli -u "$REDIS_URL" info server | tr -d '\r' | awk -F: '$1 == "redis_version" {print $2}') coordination (GCRA per call, SET NX per proof)"
if [ "$OPEN" = 1 ]; then
  echo "latency: open loop at $RATE req/s ($RATE_NOTE), from each request's due time; one connection: closed loop, ${SERIAL_SECONDS}s"
fi
python3 - "$RESULTS" "$HZ" "$OPEN" <<'PY'
import json, os, sys
res, hz, has_open = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
def load(phase, name):
    with open(f"{res}/{phase}-{name}.json") as f:
        return json.load(f)
def redis_cpu(phase, name):
    """Redis CPU µs per GCRA script run (one per proxied call) over the loadgen run."""
    p = f"{res}/{phase}-{name}.redis"
    t0, s0, t1, s1 = (int(x) for x in open(p).read().split())
    scripts = s1 - s0
    if scripts <= 0 or t1 == t0 == 0:
        return None
    return (t1 - t0) * 1e6 / hz / scripts
names = ["nginx", "sq_bearer", "sq_dpop", "r1_bearer", "r1_dpop", "p1_bearer", "p1_dpop", "r3_bearer", "r3_dpop"]
labels = {
    "nginx": "1. nginx, header injection (floor)",
    "sq_bearer": "2. keygate embedded (SQLite), Bearer",
    "sq_dpop": "2. keygate embedded (SQLite), DPoP",
    "r1_bearer": "3. 1 replica, PG + Redis, Bearer",
    "r1_dpop": "3. 1 replica, PG + Redis, DPoP",
    "p1_bearer": "3a. 1 process, PG, no Redis, Bearer",
    "p1_dpop": "3a. 1 process, PG, no Redis, DPoP",
    "r3_bearer": "4. 3 replicas behind nginx LB, Bearer",
    "r3_dpop": "4. 3 replicas behind nginx LB, DPoP",
}
closed = {n: load("closed", n) for n in names}
opened = {n: load("open", n) for n in names} if has_open else {}
serial = {n: load("serial", n) for n in names}
ng = closed["nginx"]
def us(v):
    return "-" if v is None else (f"{v / 1000:.2f} ms" if v >= 1000 else f"{v:.0f} µs")
def f1(v):
    return "-" if v is None else f"{v:.1f}"
head = (f"{'target':<39} {'req/s':>8} {'vs nginx':>8} {'CPU µs/req':>10} {'vs nginx':>8} {'Redis µs':>8} | "
        + (f"{'open p50':>8} {'p99':>9} | " if has_open else "")
        + f"{'1-conn p50':>10} {'p99':>9} | {'errors':>6}")
print(head)
print("-" * len(head))
for n in names:
    c, s = closed[n], serial[n]
    cpu = c["cpu_us_per_req"]
    ratio = "-" if cpu is None or not ng["cpu_us_per_req"] else f"{cpu / ng['cpu_us_per_req']:.2f}x"
    rc = redis_cpu("closed", n) if n[:2] in ("r1", "r3") else None
    errs = sum(c["errors"].values()) + sum(s["errors"].values())
    line = f"{labels[n]:<39} {c['rps']:>8.0f} {c['rps'] / ng['rps']:>7.2f}x {f1(cpu):>10} {ratio:>8} {f1(rc):>8} | "
    if has_open:
        o = opened[n]
        errs += sum(o["errors"].values())
        line += f"{us(o['p50_us']):>8} {us(o['p99_us']):>9} | "
    line += f"{us(s['p50_us']):>10} {us(s['p99_us']):>9} | {errs:>6}"
    print(line)
print("  CPU µs/req: the measured process(es) only — nginx: its workers; rows 2/3/3a: the one keygate;")
print("  row 4: the three replicas summed (not the balancer, whose work is about row 1's; not Redis or PostgreSQL).")
print("  Redis µs: redis-server's CPU per GCRA script it ran (one per proxied call, warm-up included), closed loop.")
print("  Row 4 on 2 cores: three replicas, the balancer, Redis, PostgreSQL and the generator share the")
print("  same two cores — it measures the cost of coordination and the extra hop, not scale-out.")
print()
def diff(a, b, key, src):
    x, y = src[a].get(key), src[b].get(key)
    return None if x is None or y is None else x - y
print("cost of Redis per call (row 3 minus row 2, same route, same token kind; PostgreSQL store vs SQLite included):")
for kind in ("bearer", "dpop"):
    r1, sq = f"r1_{kind}", f"sq_{kind}"
    dc = diff(r1, sq, "cpu_us_per_req", closed)
    ds = diff(r1, sq, "p50_us", serial)
    parts = [f"CPU {'-' if dc is None else f'{dc:+.1f}'} µs/request",
             f"p50 one connection {'-' if ds is None else f'{ds:+.0f}'} µs"]
    if has_open:
        do = diff(r1, sq, "p50_us", opened)
        parts.append(f"p50 open loop {'-' if do is None else f'{do:+.0f}'} µs")
    rc = redis_cpu("closed", r1)
    parts.append(f"plus Redis's own {f1(rc)} µs CPU/call")
    rps = closed[r1]["rps"] / closed[sq]["rps"]
    parts.append(f"req/s {rps:.2f}x")
    print(f"  {kind:<6}: " + ", ".join(parts))
print("split (row 3a: same PostgreSQL store, no Redis; for DPoP 3a writes each proof to PostgreSQL instead):")
for kind in ("bearer", "dpop"):
    r1, p1, sq = f"r1_{kind}", f"p1_{kind}", f"sq_{kind}"
    def part(a, b):
        dc, ds = diff(a, b, "cpu_us_per_req", closed), diff(a, b, "p50_us", serial)
        return (f"CPU {'-' if dc is None else f'{dc:+.1f}'} µs/request, "
                f"p50 one connection {'-' if ds is None else f'{ds:+.0f}'} µs")
    print(f"  {kind:<6}: store (3a − 2): {part(p1, sq)}; Redis (3 − 3a): {part(r1, p1)}")
print()
for n in names:
    for phase, src in (("closed", closed), ("open", opened), ("serial", serial)):
        if n not in src:
            continue
        r = src[n]
        if r["errors"]:
            print(f"errors, {labels[n]}, {phase}: {r['errors']}")
        d = r.get("dpop")
        if d and d["signed_inline"]:
            print(f"DPoP proofs, {labels[n]}, {phase}: {d['signed_inline']} signed during the window "
                  f"(signing competed with the server)")
PY
