# Shared set-up for the scripts under bench/ (sourced, not run): Debian packages, the
# release build, an nginx upstream answering a static 200, and a keygate with the bench
# secret, routes and a confidential client. Each function documents what it sets.
#
# The caller sets ROOT (the repository), WORK (a scratch directory it removes) and the
# PIDS array (processes its exit trap kills).

# The exit trap of every bench script (`trap bench_cleanup EXIT`): on failure the tail of
# each keygate log, then the processes in PIDS, the nginx upstream and any nginx proxy
# (their pid files in WORK) are stopped and WORK is removed. A script with more to undo
# defines bench_cleanup_extra, which runs before WORK goes.
bench_cleanup() {
  local status=$?
  if [ "$status" != 0 ]; then
    for log in "$WORK"/kg-*.log "$WORK"/keygate.log; do [ -f "$log" ] && { echo "--- $log"; tail -n 5 "$log"; }; done
  fi
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  for pidfile in "$WORK/upstream.pid" "$WORK/proxy.pid"; do
    [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
  done
  if declare -F bench_cleanup_extra >/dev/null; then bench_cleanup_extra; fi
  rm -rf "$WORK"
}

# Installs the named Debian packages when the command they provide is missing:
# bench_need CMD PACKAGE [CMD PACKAGE]…
bench_need() {
  local missing=()
  while [ "$#" -ge 2 ]; do
    command -v "$1" >/dev/null 2>&1 || missing+=("$2")
    shift 2
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing ${missing[*]} from Debian's packages" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

# Builds keygate and keygate-loadgen (release); sets KEYGATE and LOADGEN. With
# BENCH_KEYGATE=PATH, that keygate binary is measured instead (e.g. one built from an
# earlier commit, for a before/after of a whole script); only the generator is built.
# (Not KEYGATE_*: keygate reads those variables as its configuration.)
bench_build() {
  local bin="${CARGO_TARGET_DIR:-$ROOT/target}/release"
  if [ -n "${BENCH_KEYGATE:-}" ]; then
    echo "building keygate-loadgen (release); keygate is $BENCH_KEYGATE" >&2
    (cd "$ROOT" && cargo build --release -q -p keygate-loadgen)
    KEYGATE="$BENCH_KEYGATE"
  else
    echo "building keygate and keygate-loadgen (release)" >&2
    (cd "$ROOT" && cargo build --release -q -p keygate -p keygate-loadgen)
    KEYGATE="$bin/keygate"
  fi
  LOADGEN="$bin/keygate-loadgen"
}

# keygate-hyper-floor (bench/loadgen: the same hop on hyper and Tokio with the bench
# header set and nothing checked) on 127.0.0.1:PORT in front of the upstream, started
# through the command given after the ports if any (e.g. valgrind); sets FLOOR_PID and
# fails unless /proxy/bench/hello answers 200 within FLOOR_WAIT seconds (default 5).
# bench_floor PORT UPSTREAM_PORT [WRAPPER…]
bench_floor() {
  local port="$1" upstream_port="$2"; shift 2
  "$@" "$(dirname "$LOADGEN")/keygate-hyper-floor" --listen "127.0.0.1:$port" \
    --upstream "127.0.0.1:$upstream_port" --prefix /proxy/bench \
    --header "authorization: Bearer sk-bench-key" 2>"$WORK/floor.log" &
  FLOOR_PID=$!
  PIDS+=("$FLOOR_PID")
  local url="http://127.0.0.1:$port/proxy/bench/hello" code="" i
  for ((i = 0; i < ${FLOOR_WAIT:-5} * 10; i++)); do
    code="$(curl -s -o /dev/null -w '%{http_code}' "$url" 2>/dev/null || true)"
    [ "$code" = 200 ] && return 0
    sleep 0.1
  done
  echo "the hyper floor did not forward (HTTP $code)" >&2
  cat "$WORK/floor.log" >&2
  return 1
}

# nginx answering 200 with a small JSON body on 127.0.0.1:PORT; its pid file is
# $WORK/upstream.pid. bench_upstream PORT
bench_upstream() {
  mkdir -p "$WORK/upstream"
  cat > "$WORK/upstream.conf" <<CONF
worker_processes 1;
pid $WORK/upstream.pid;
error_log $WORK/upstream/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $WORK/upstream;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$1;
    location / { default_type application/json; return 200 '{"ok":true}'; }
  }
}
CONF
  "$(command -v nginx)" -c "$WORK/upstream.conf" -p "$WORK/upstream"
}

# keygate on 127.0.0.1:PORT in $BENCH_KEYGATE_DIR (default $WORK/keygate), DPoP optional
# and hour-long access tokens (BENCH_KEYGATE_APPEND, if set, is appended to its
# keygate.toml before it starts),
# with secret `bench`, routes `verify` (token only) and `bench` (full policy) to
# 127.0.0.1:UPSTREAM_PORT, and a confidential client. Sets KEYGATE_PID, KEYGATE_ADDR,
# KEYGATE_TOKEN, CLIENT_ID, KEYGATE_LOADGEN_CLIENT_SECRET and TOKEN_URL; extra
# environment for `keygate serve` may be passed as NAME=VALUE arguments.
# The monitor as deployed, except that its user rules only alert: a benchmark client making
# thousands of calls a second is a spike by definition, and a throttle would turn the
# measurement into one of 429s. bench_keygate appends it unless BENCH_KEYGATE_APPEND is set.
BENCH_MONITOR_ALERT_ONLY=$'[monitor]\ninterval = "2s"\n\n[[monitor.rules]]\nname = "user-spike"\nkind = "spike"\nscope = "user"\nwindow = "15s"\nfactor = 10.0\nmin_calls = 12\nactions = ["alert"]\n\n[[monitor.rules]]\nname = "user-ceiling"\nkind = "ceiling"\nscope = "user"\ncalls_per_minute = 300\nactions = ["alert"]'

# With BENCH_KEYGATE_STORAGE_URL set (postgres://…), `keygate init` sets up that store
# instead of SQLite in the directory.
# bench_keygate PORT UPSTREAM_PORT [NAME=VALUE]…
bench_keygate() {
  local port="$1" upstream_port="$2"
  shift 2
  local init admin_token client
  local dir="${BENCH_KEYGATE_DIR:-$WORK/keygate}"
  local storage=()
  [ -n "${BENCH_KEYGATE_STORAGE_URL:-}" ] && storage=(--storage-url "$BENCH_KEYGATE_STORAGE_URL")
  init="$("$KEYGATE" init --dir "$dir" --listen "127.0.0.1:$port" "${storage[@]}" --format json)"
  admin_token="$(printf %s "$init" | python3 -c 'import json,sys; print(json.load(sys.stdin)["admin_token"])')"
  printf '\n%s\n' "${BENCH_KEYGATE_APPEND-$BENCH_MONITOR_ALERT_ONLY}" >> "$dir/keygate.toml"
  # DPoP "optional" lets the confidential client's Bearer token through; a DPoP-bound
  # token is then checked exactly as when DPoP is required.
  # The generator's variables start with KEYGATE_ too; keygate would read them as config.
  env -u KEYGATE_LOADGEN_CLIENT_SECRET -u KEYGATE_LOADGEN_ACCESS_TOKEN \
    KEYGATE_LOG=error KEYGATE_TOKENS__DPOP=optional KEYGATE_TOKENS__ACCESS_TTL=1h "$@" \
    "$KEYGATE" serve --config "$dir/keygate.toml" >"$dir.log" 2>&1 &
  KEYGATE_PID=$!
  PIDS+=("$KEYGATE_PID")
  for _ in $(seq 1 100); do curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
  export KEYGATE_ADDR="http://127.0.0.1:$port" KEYGATE_TOKEN="$admin_token"
  printf %s "sk-bench-key" | "$KEYGATE" secret put bench --stdin >/dev/null
  cat > "$WORK/routes.toml" <<CONF
# Token verification only: no scopes, no limits (allow-list and injection are part of
# every route).
[routes.verify]
upstream = "http://127.0.0.1:$upstream_port"
secret   = "bench"
inject   = { header = "Authorization", value = "Bearer {secret}" }
allow    = ["GET /hello"]

# Full policy.
[routes.bench]
upstream = "http://127.0.0.1:$upstream_port"
secret   = "bench"
inject   = { header = "Authorization", value = "Bearer {secret}" }
allow    = ["GET /hello"]
scopes   = ["bench"]
limits   = { rate = "1000000/sec", burst = 1000000, per = "client" }
CONF
  "$KEYGATE" route apply "$WORK/routes.toml" >/dev/null
  client="$("$KEYGATE" client add bench-backend --confidential --scopes bench --format json)"
  CLIENT_ID="$(printf %s "$client" | python3 -c 'import json,sys; print(json.load(sys.stdin)["client_id"])')"
  KEYGATE_LOADGEN_CLIENT_SECRET="$(printf %s "$client" | python3 -c 'import json,sys; print(json.load(sys.stdin)["client_secret"])')"
  export KEYGATE_LOADGEN_CLIENT_SECRET
  TOKEN_URL="http://127.0.0.1:$port/oauth2/token"
}
