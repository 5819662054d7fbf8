# Three keygate replicas on one PostgreSQL schema and one Redis key prefix behind an nginx
# round-robin balancer (sourced after setup.sh, not run). Used by bench/proxy/replicas.sh
# and bench/soak/replicas.sh.
#
# The caller sets PG_URL and REDIS_URL (or takes the defaults below), calls
# replicas_prepare before building, replicas_start after bench_upstream, and calls
# replicas_cleanup from its bench_cleanup_extra. Every run makes its own schema
# (kgbench_…) and key prefix (kgbench-…:), which replicas_cleanup removes.

PG_URL="${PG_URL:-postgres://postgres@127.0.0.1:5432/test}"
REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
REPLICA_PIDS=()
SCHEMA_MADE=0

# Installs the clients, checks both services, and names the run's schema and prefix
# (SCHEMA, PREFIX).
replicas_prepare() {
  bench_need nginx nginx-light psql postgresql-client redis-cli redis-tools
  psql -q "$PG_URL" -c 'SELECT 1' >/dev/null || { echo "PostgreSQL not reachable at $PG_URL" >&2; exit 1; }
  [ "$(redis-cli -u "$REDIS_URL" ping 2>/dev/null)" = PONG ] || { echo "Redis not reachable at $REDIS_URL" >&2; exit 1; }
  local run_id
  run_id="$(basename "$WORK" | tr -dc 'a-zA-Z0-9' | tr 'A-Z' 'a-z')-$$"
  SCHEMA="kgbench_${run_id//-/_}"
  PREFIX="kgbench-$run_id"
}

# replicas_start LB_PORT UPSTREAM_PORT PORT1 PORT2 PORT3
# The first replica is set up by bench_keygate (init on PostgreSQL, the bench secret,
# routes and client; it sets KEYGATE_ADDR, KEYGATE_TOKEN, CLIENT_ID,
# KEYGATE_LOADGEN_CLIENT_SECRET); the other two run the same keygate.toml and master key,
# each with its own data_dir. public_url is the balancer's on every replica (the token
# issuer and what DPoP htu is checked against). Sets STORE_URL, REPLICA_ENV,
# REPLICA_PIDS, LB_URL (http://127.0.0.1:LB_PORT), LB_TOKEN_URL; the balancer's nginx
# writes $WORK/lb.pid.
replicas_start() {
  local lb_port="$1" upstream_port="$2"
  shift 2
  local ports=("$@")
  psql -q "$PG_URL" -c "CREATE SCHEMA $SCHEMA" >/dev/null
  SCHEMA_MADE=1
  STORE_URL="$PG_URL?options=-c%20search_path%3D$SCHEMA"
  LB_URL="http://127.0.0.1:$lb_port"
  LB_TOKEN_URL="$LB_URL/oauth2/token"
  REPLICA_ENV=(
    KEYGATE_COORDINATION__REDIS="$REDIS_URL"
    KEYGATE_COORDINATION__KEY_PREFIX="$PREFIX"
    KEYGATE_COORDINATION__REPLICAS=3
    KEYGATE_PUBLIC_URL="$LB_URL"
  )
  mkdir -p "$WORK/lb" "$WORK/kg-r1-data"
  BENCH_KEYGATE_DIR="$WORK/kg-pg" BENCH_KEYGATE_STORAGE_URL="$STORE_URL" \
    bench_keygate "${ports[0]}" "$upstream_port" "${REPLICA_ENV[@]}" KEYGATE_DATA_DIR="$WORK/kg-r1-data"
  REPLICA_PIDS+=("$KEYGATE_PID")
  grep -q '^url = "postgres' "$WORK/kg-pg/keygate.toml" || { echo "init did not write a postgres storage url" >&2; exit 1; }
  local i port
  for i in 1 2; do
    port="${ports[$i]}"
    mkdir -p "$WORK/kg-r$((i + 1))-data"
    replicas_serve "$port" "$WORK/kg-r$((i + 1))" "${REPLICA_ENV[@]}"
    REPLICA_PIDS+=("$SERVED_PID")
  done
  cat > "$WORK/lb.conf" <<CONF
worker_processes 2;
pid $WORK/lb.pid;
error_log $WORK/lb/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $WORK/lb;
  proxy_temp_path $WORK/lb;
  keepalive_requests 1000000;
  upstream replicas {
$(for p in "${ports[@]}"; do echo "    server 127.0.0.1:$p;"; done)
    keepalive 96;
  }
  server {
    listen 127.0.0.1:$lb_port;
    location / {
      proxy_pass http://replicas;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$http_host;
    }
  }
}
CONF
  "$(command -v nginx)" -c "$WORK/lb.conf" -p "$WORK/lb"
  for port in "${ports[@]}"; do replicas_wait_ready "$port"; done
}

# replicas_serve PORT DIR_STEM [NAME=VALUE]…: one more `keygate serve` on the first
# replica's keygate.toml, data in DIR_STEM-data, log in DIR_STEM.log. Sets SERVED_PID.
replicas_serve() {
  local port="$1" stem="$2"
  shift 2
  mkdir -p "$stem-data"
  env -u KEYGATE_LOADGEN_CLIENT_SECRET -u KEYGATE_LOADGEN_ACCESS_TOKEN -u KEYGATE_ADDR -u KEYGATE_TOKEN \
    KEYGATE_LOG=error KEYGATE_TOKENS__DPOP=optional KEYGATE_TOKENS__ACCESS_TTL=1h "$@" \
    KEYGATE_DATA_DIR="$stem-data" \
    "$KEYGATE" serve --config "$WORK/kg-pg/keygate.toml" --listen "127.0.0.1:$port" \
    >"$stem.log" 2>&1 &
  SERVED_PID=$!
  PIDS+=("$SERVED_PID")
}

# Waits until the keygate on PORT answers /readyz without "degraded"; exits otherwise.
replicas_wait_ready() {
  local port="$1" ready
  for _ in $(seq 1 100); do curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
  ready="$(curl -sS "http://127.0.0.1:$port/readyz" || true)"
  case "$ready" in *degraded*|"") echo "replica on $port not ready: $ready" >&2; exit 1 ;; esac
}

# For bench_cleanup_extra: stops the balancer, lets the replicas (sent SIGTERM by
# bench_cleanup) close their connections, drops the schema and deletes the prefix's keys.
replicas_cleanup() {
  [ -f "$WORK/lb.pid" ] && kill "$(cat "$WORK/lb.pid")" 2>/dev/null || true
  local p
  for p in "${REPLICA_PIDS[@]:-}"; do
    [ -n "$p" ] || continue
    for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  done
  if [ "$SCHEMA_MADE" = 1 ]; then
    psql -q "$PG_URL" -c "DROP SCHEMA IF EXISTS $SCHEMA CASCADE" >/dev/null 2>&1 \
      || echo "could not drop schema $SCHEMA" >&2
  fi
  redis-cli -u "$REDIS_URL" --scan --pattern "$PREFIX:*" 2>/dev/null \
    | xargs -r -n 100 redis-cli -u "$REDIS_URL" del >/dev/null 2>&1 || true
}
