#!/usr/bin/env bash
# Side-by-side proxy benchmark, run by hand (not part of CI):
#
#   bench/proxy/run.sh [SECONDS] [CONNECTIONS]
#
# In one run on one machine it measures, with wrk at a fixed number of connections:
#   1. the upstream directly (nginx answering a static 200),
#   2. nginx as a plain reverse proxy that injects an Authorization header, with upstream
#      keep-alive: the floor,
#   3. keygate's /proxy/ route with the full policy a Bearer token gets: access-token
#      verification (signature cached), revocation check in the store, allow-list, scope,
#      rate limit, key from the vault, header hygiene and injection.
# and prints requests/s, p50/p99 latency, CPU time per request of the proxy process, and
# the ratios to nginx.
#
# Not covered here: DPoP-checked calls (wrk cannot sign a fresh proof per request; see the
# criterion figures of `cargo bench -p keygate-auth`), and latency under a fixed request
# rate (wrk measures at fixed concurrency).
set -euo pipefail

SECONDS_PER_RUN="${1:-10}"
CONNS="${2:-32}"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
WORK="$(mktemp -d -t keygate-bench-XXXXXX)"
UPSTREAM_PORT=18181
NGINX_PORT=18182
KEYGATE_PORT=18183
PIDS=()

cleanup() {
  for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$WORK/upstream.pid" ] && kill "$(cat "$WORK/upstream.pid")" 2>/dev/null || true
  [ -f "$WORK/proxy.pid" ] && kill "$(cat "$WORK/proxy.pid")" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

need() { command -v "$1" >/dev/null 2>&1; }
if ! need nginx || ! need wrk; then
  echo "installing nginx and wrk from Debian's packages" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light wrk >/dev/null
fi
NGINX="$(command -v nginx)"

echo "building keygate (release)" >&2
(cd "$ROOT" && cargo build --release -q -p keygate)
KEYGATE="${CARGO_TARGET_DIR:-$ROOT/target}/release/keygate"

# --- 1. the upstream: nginx answering 200 with a small JSON body ---------------------
mkdir -p "$WORK/upstream" "$WORK/proxy"
cat > "$WORK/upstream.conf" <<EOF
worker_processes 1;
pid $WORK/upstream.pid;
error_log $WORK/upstream/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $WORK/upstream;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$UPSTREAM_PORT;
    location / { default_type application/json; return 200 '{"ok":true}'; }
  }
}
EOF
"$NGINX" -c "$WORK/upstream.conf" -p "$WORK/upstream"

# --- 2. the floor: nginx proxying with a header injected and upstream keep-alive -------
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

# --- 3. keygate --------------------------------------------------------------------------
INIT="$("$KEYGATE" init --dir "$WORK/keygate" --listen "127.0.0.1:$KEYGATE_PORT" --format json)"
ADMIN_TOKEN="$(printf %s "$INIT" | python3 -c 'import json,sys; print(json.load(sys.stdin)["admin_token"])')"
KEYGATE_LOG=error KEYGATE_TOKENS__DPOP=optional KEYGATE_TOKENS__ACCESS_TTL=1h \
  "$KEYGATE" serve --config "$WORK/keygate/keygate.toml" >"$WORK/keygate.log" 2>&1 &
KEYGATE_PID=$!
PIDS+=("$KEYGATE_PID")
for _ in $(seq 1 100); do curl -fsS "http://127.0.0.1:$KEYGATE_PORT/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
export KEYGATE_ADDR="http://127.0.0.1:$KEYGATE_PORT" KEYGATE_TOKEN="$ADMIN_TOKEN"
printf %s "sk-bench-key" | "$KEYGATE" secret put bench --stdin >/dev/null
cat > "$WORK/routes.toml" <<EOF
[routes.bench]
upstream = "http://127.0.0.1:$UPSTREAM_PORT"
secret   = "bench"
inject   = { header = "Authorization", value = "Bearer {secret}" }
allow    = ["GET /hello"]
scopes   = ["bench"]
limits   = { rate = "1000000/sec", burst = 1000000, per = "client" }
EOF
"$KEYGATE" route apply "$WORK/routes.toml" >/dev/null
CLIENT="$("$KEYGATE" client add bench-backend --confidential --scopes bench --format json)"
CLIENT_ID="$(printf %s "$CLIENT" | python3 -c 'import json,sys; print(json.load(sys.stdin)["client_id"])')"
CLIENT_SECRET="$(printf %s "$CLIENT" | python3 -c 'import json,sys; print(json.load(sys.stdin)["client_secret"])')"
ACCESS="$(curl -fsS -u "$CLIENT_ID:$CLIENT_SECRET" -d grant_type=client_credentials -d scope=bench \
  "http://127.0.0.1:$KEYGATE_PORT/oauth2/token" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')"
# Sanity: keygate forwards with the key injected.
code="$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $ACCESS" "http://127.0.0.1:$KEYGATE_PORT/proxy/bench/hello")"
[ "$code" = 200 ] || { echo "keygate did not forward (HTTP $code)"; cat "$WORK/keygate.log"; exit 1; }

# --- measurement ---------------------------------------------------------------------------
ticks() { # utime+stime of the given pids, in clock ticks
  local t=0
  for p in "$@"; do
    [ -r "/proc/$p/stat" ] || continue
    t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo "$t"
}
HZ="$(getconf CLK_TCK)"

run() { # name url cpu-pids…
  local name="$1" url="$2"; shift 2
  local header=()
  [ "$name" = keygate ] && header=(-H "Authorization: Bearer $ACCESS")
  wrk -t2 -c"$CONNS" -d2s "${header[@]}" "$url" >/dev/null 2>&1 # warm-up
  local before after out
  before="$(ticks "$@")"
  out="$(wrk -t2 -c"$CONNS" -d"${SECONDS_PER_RUN}s" --latency "${header[@]}" "$url")"
  after="$(ticks "$@")"
  local rps p50 p99 reqs
  rps="$(awk '/^Requests\/sec/ {print $2}' <<<"$out")"
  reqs="$(awk '/requests in/ {print $1}' <<<"$out")"
  p50="$(awk '$1=="50%" {print $2}' <<<"$out")"
  p99="$(awk '$1=="99%" {print $2}' <<<"$out")"
  local errors
  errors="$(awk '/Non-2xx/ {print $5}' <<<"$out")"
  local cpu_us="-"
  if [ "$#" -gt 0 ] && [ "${reqs:-0}" -gt 0 ]; then
    cpu_us="$(python3 -c "print(round(($after - $before) / $HZ * 1e6 / $reqs, 1))")"
  fi
  printf '%s %s %s %s %s %s\n' "$name" "$rps" "$p50" "$p99" "$cpu_us" "${errors:-0}"
}

NGINX_PIDS=($(pgrep -f "nginx.*$WORK/proxy.conf" || true) $(pgrep -P "$(cat "$WORK/proxy.pid")" || true))
RESULTS="$WORK/results"
{
  run direct "http://127.0.0.1:$UPSTREAM_PORT/hello"
  run nginx "http://127.0.0.1:$NGINX_PORT/proxy/bench/hello" "${NGINX_PIDS[@]}"
  run keygate "http://127.0.0.1:$KEYGATE_PORT/proxy/bench/hello" "$KEYGATE_PID"
} > "$RESULTS"

echo
echo "proxy benchmark: ${SECONDS_PER_RUN}s per run, $CONNS connections, wrk -t2, $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ)"
python3 - "$RESULTS" <<'PY'
import sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
by = {r[0]: r for r in rows}
nginx_rps = float(by["nginx"][1])
print(f"{'target':<34} {'req/s':>10} {'vs nginx':>9} {'p50':>9} {'p99':>9} {'CPU µs/req':>11} {'non-2xx':>8}")
labels = {
    "direct": "upstream directly",
    "nginx": "nginx, header injection (floor)",
    "keygate": "keygate, full policy (Bearer)",
}
for name in ["direct", "nginx", "keygate"]:
    r = by[name]
    print(f"{labels[name]:<34} {float(r[1]):>10.0f} {float(r[1]) / nginx_rps:>8.2f}x {r[2]:>9} {r[3]:>9} {r[4]:>11} {r[5]:>8}")
PY
