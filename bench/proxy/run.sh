#!/usr/bin/env bash
# Side-by-side proxy benchmark, run by hand (not part of CI's test gate):
#
#   bench/proxy/run.sh [SECONDS] [CONNECTIONS]
#
# Environment: WARMUP (s, default 2), RATE (req/s for the latency runs; default
# RATE_FRACTION × the slowest closed-loop rate), RATE_FRACTION (default 0.5), THREADS
# (generator threads, default 1: the cheapest per request, so the generator takes the
# least CPU from the targets on a small machine), WRK=1 (also run `wrk -t2` on the rows it
# can drive, as a cross-check of the generator), BENCH_TMPDIR (where keygate's SQLite database lives;
# default $TMPDIR or /tmp), BENCH_KEYGATE (measure this keygate binary instead of building
# one: a "before" run from an earlier commit), CARGO_TARGET_DIR.
#
# In one run on one machine, with one load generator (bench/loadgen, `keygate-loadgen`)
# for every row, it measures:
#   1. the upstream directly (nginx answering a static 200),
#   2. nginx as a plain reverse proxy that injects an Authorization header, with upstream
#      keep-alive: the floor,
#      and the same hop on keygate's stack without keygate (`keygate-hyper-floor`, in
#      bench/loadgen: hyper's server and client on Tokio, one header set, nothing checked),
#      which says how much of the gap to nginx is the stack and how much keygate's work,
#   3. keygate's /proxy/ with the features added one at a time:
#      a. token verification: Bearer access token (signature cached, revocation checked
#         in the store), allow-list, key from the vault, header hygiene and injection; a
#         route without scopes or limits,
#      b. the same with a DPoP-bound token and a fresh DPoP proof (ES256) per request:
#         every RFC 9449 check and the replay cache (in process on SQLite),
#      c. full policy: b plus scope and rate limit,
#      d. full policy with a Bearer token (the row earlier versions of this script gave).
#   4. over TLS (HTTPS, HTTP/1.1 keep-alive), with a CA and a leaf certificate (EC P-256,
#      for 127.0.0.1) the script makes with openssl; TLS 1.3 is what both negotiate:
#      a. nginx terminating TLS and proxying with the header injected (the TLS floor,
#         `nginx_tls`: the same nginx process, a second server block),
#      b. keygate's full policy over its separate HTTPS listener ([tls] listen, the same
#         keygate process as row 3) with a DPoP token (`kg_tls_full_dpop`; the proofs
#         name keygate's public_url, which is what it checks htu against) and with a
#         Bearer token (`kg_tls_full_bearer`),
#      c. new-handshake rate (`nginx_tls_handshake`, `kg_tls_handshake`): every request
#         on a new TCP connection with a full TLS handshake (the generator keeps no
#         sessions: no resumption) and `Connection: close`, one small request each (nginx:
#         the proxied route; keygate: the full-policy route with a Bearer token, so each
#         handshake also pays for one full-policy request). Reported as handshakes/s, CPU
#         per handshake, and that CPU less the same request's cost on a kept-alive TLS
#         connection (rows 4a/4b Bearer): roughly what the handshake and connection cost.
# For each row: closed-loop requests/s at CONNECTIONS connections, CPU time per request
# of the proxy process (/proc/PID/stat at the edges of the measured window), and
# p50/p99 latency in an open loop at one fixed rate that every row can sustain (latency
# from each request's due time, so queueing is counted), with ratios to nginx (the TLS
# rows: to nginx over TLS). The handshake rows have no open-loop run: closed loop (their
# rate) and one connection at a time (the latency of connect + handshake + request).
# The generator's own CPU per handshake is reported too: its side of a handshake (key
# exchange, verifying the chain and the server's signature) costs about as much as the
# server's, so on a small machine it shares the cores with the target and may set the
# rate; CPU per handshake of the target is the figure to compare.
# A second table splits the whole machine's CPU per request in the closed loop (from
# /proc/stat over the same window, all cores): the proxy's, the generator's, the rest
# (the upstream, and the kernel's work not charged to either) and the share left idle.
# The generator, the upstream and the proxy share the cores, so what the rest spends per
# request bounds the proxy's rate as much as the proxy's own CPU does.
#
# "Pass-through" (keygate forwarding without checking a token) is not measured because
# keygate does not offer it: a route that injects the key for anyone would be the very
# leak keygate exists to prevent. Row 3a is the nearest: the least keygate does.
#
# DPoP proofs are signed ahead of each measured window (the generator reports how many,
# and how many it had to sign during the window); the server accepts a proof for 60 s
# after its iat, so WARMUP + SECONDS must stay within 40. The DPoP row over TLS signs
# its own proofs like the others.
set -euo pipefail

SECONDS_PER_RUN="${1:-10}"
CONNS="${2:-32}"
WARMUP="${WARMUP:-2}"
RATE="${RATE:-}"
RATE_FRACTION="${RATE_FRACTION:-0.5}"
THREADS="${THREADS:-1}"
WRK="${WRK:-0}"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
if python3 -c "import sys; sys.exit(0 if float('$SECONDS_PER_RUN') + float('$WARMUP') <= 40 else 1)"; then :; else
  echo "SECONDS + WARMUP must be at most 40 (DPoP proofs are signed ahead and live 60 s)" >&2
  exit 2
fi
WORK="$(mktemp -d "${BENCH_TMPDIR:-${TMPDIR:-/tmp}}/keygate-bench-XXXXXX")"
UPSTREAM_PORT=18181
NGINX_PORT=18182
KEYGATE_PORT=18183
NGINX_TLS_PORT=18184
KEYGATE_TLS_PORT=18185
FLOOR_PORT=18186
PIDS=()


# shellcheck source=../lib/setup.sh
. "$ROOT/bench/lib/setup.sh"
trap bench_cleanup EXIT
# Debian's nginx-light has the ssl module (nginx -V: --with-http_ssl_module).
if [ "$WRK" = 1 ]; then bench_need nginx nginx-light openssl openssl wrk wrk; else bench_need nginx nginx-light openssl openssl; fi
nginx -V 2>&1 | grep -q -- --with-http_ssl_module || { echo "this nginx has no ssl module" >&2; exit 1; }
bench_build

# --- 1. the upstream: nginx answering 200 with a small JSON body ---------------------
mkdir -p "$WORK/proxy" "$WORK/results"
bench_upstream "$UPSTREAM_PORT"
NGINX="$(command -v nginx)"

# --- TLS: a CA and a leaf for 127.0.0.1 / localhost, EC P-256, made here ---------------
TLS="$WORK/tls"
mkdir -p "$TLS"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$TLS/ca.key" 2>/dev/null
openssl req -x509 -new -key "$TLS/ca.key" -sha256 -days 2 -subj "/CN=keygate bench CA" \
  -out "$TLS/ca.pem" 2>/dev/null
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$TLS/leaf.key" 2>/dev/null
openssl req -new -key "$TLS/leaf.key" -subj "/CN=127.0.0.1" -out "$TLS/leaf.csr" 2>/dev/null
printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost" "basicConstraints=critical,CA:FALSE" \
  "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" > "$TLS/leaf.ext"
openssl x509 -req -in "$TLS/leaf.csr" -CA "$TLS/ca.pem" -CAkey "$TLS/ca.key" -CAcreateserial \
  -days 2 -sha256 -extfile "$TLS/leaf.ext" -out "$TLS/leaf.pem" 2>/dev/null
CA="$TLS/ca.pem"

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
  # The same over TLS (HTTP/1.1, keep-alive; sessions are whatever nginx does by default,
  # the generator never resumes one).
  server {
    listen 127.0.0.1:$NGINX_TLS_PORT ssl;
    ssl_certificate $TLS/leaf.pem;
    ssl_certificate_key $TLS/leaf.key;
    ssl_protocols TLSv1.2 TLSv1.3;
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

# The same hop on hyper and Tokio, without keygate (built with the generator).
bench_floor "$FLOOR_PORT" "$UPSTREAM_PORT"

# --- 3. keygate --------------------------------------------------------------------------
# With a separate HTTPS listener beside the plain one ([tls] listen, set through the
# environment): one process serves the plain rows and the TLS rows.
bench_keygate "$KEYGATE_PORT" "$UPSTREAM_PORT" \
  KEYGATE_TLS__CERT="$TLS/leaf.pem" KEYGATE_TLS__KEY="$TLS/leaf.key" \
  KEYGATE_TLS__LISTEN="127.0.0.1:$KEYGATE_TLS_PORT"
for _ in $(seq 1 50); do
  curl -fsS --cacert "$CA" "https://127.0.0.1:$KEYGATE_TLS_PORT/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
BEARER="$("$LOADGEN" token --token-url "$TOKEN_URL" --client-id "$CLIENT_ID" --scope bench)"
# client_credentials with a DPoP proof: keygate binds the token (cnf.jkt) to the key,
# and the generator checks that it did.
DPOP_KEY="$WORK/dpop.key"
DPOP_TOKEN="$("$LOADGEN" token --token-url "$TOKEN_URL" --client-id "$CLIENT_ID" --scope bench --dpop-key "$DPOP_KEY")"

KG="http://127.0.0.1:$KEYGATE_PORT/proxy"
KG_TLS="https://127.0.0.1:$KEYGATE_TLS_PORT/proxy"
NGINX_TLS="https://127.0.0.1:$NGINX_TLS_PORT/proxy"
# Sanity: keygate forwards with the key injected, for each token kind.
for route in verify bench; do
  code="$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $BEARER" "$KG/$route/hello")"
  [ "$code" = 200 ] || { echo "keygate did not forward a Bearer call to $route (HTTP $code)"; cat "$WORK/keygate.log"; exit 1; }
  check="$(KEYGATE_LOADGEN_ACCESS_TOKEN="$DPOP_TOKEN" "$LOADGEN" run "$KG/$route/hello" --dpop-key "$DPOP_KEY" \
    -c 1 -d 0.3 -w 0 --proofs 1000 --json)"
  printf %s "$check" | python3 -c 'import json,sys; r=json.load(sys.stdin); sys.exit(0 if r["ok"] > 0 and not r["errors"] else 1)' \
    || { echo "keygate did not forward DPoP calls to $route: $check"; cat "$WORK/keygate.log"; exit 1; }
done
# A Bearer presentation of the DPoP-bound token must be refused (it is bound).
code="$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $DPOP_TOKEN" "$KG/verify/hello")"
[ "$code" = 401 ] || { echo "keygate accepted a DPoP-bound token as Bearer (HTTP $code)"; exit 1; }
# Sanity over TLS: both speak TLS 1.3 with the bench certificate (curl checks it against
# the CA) and forward; the generator does the same, with a DPoP proof naming keygate's
# public_url, and with a new connection per request.
for url in "$NGINX_TLS/bench/hello" "$KG_TLS/bench/hello"; do
  out="$(curl -s -o /dev/null -w '%{http_code} %{ssl_verify_result}' --cacert "$CA" --tlsv1.2 \
    -H "Authorization: Bearer $BEARER" -v "$url" 2>"$WORK/curl-tls.txt")"
  [ "$out" = "200 0" ] || { echo "no verified HTTPS 200 from $url ($out)"; cat "$WORK/curl-tls.txt"; exit 1; }
  grep -q "SSL connection using TLSv1.3" "$WORK/curl-tls.txt" \
    || { echo "$url did not negotiate TLS 1.3"; grep SSL "$WORK/curl-tls.txt"; exit 1; }
  check="$(KEYGATE_LOADGEN_ACCESS_TOKEN="$BEARER" "$LOADGEN" run "$url" --ca "$CA" --new-connection-per-request \
    -c 1 -d 0.3 -w 0 --json)"
  printf %s "$check" | python3 -c 'import json,sys; r=json.load(sys.stdin); sys.exit(0 if r["ok"] > 0 and not r["errors"] and r["tls"] else 1)' \
    || { echo "the generator could not make new TLS connections to $url: $check"; exit 1; }
done
check="$(KEYGATE_LOADGEN_ACCESS_TOKEN="$DPOP_TOKEN" "$LOADGEN" run "$KG_TLS/bench/hello" --ca "$CA" \
  --htu "$KG/bench/hello" --dpop-key "$DPOP_KEY" -c 1 -d 0.3 -w 0 --proofs 1000 --json)"
printf %s "$check" | python3 -c 'import json,sys; r=json.load(sys.stdin); sys.exit(0 if r["ok"] > 0 and not r["errors"] else 1)' \
  || { echo "keygate did not forward DPoP calls over TLS: $check"; cat "$WORK/keygate.log"; exit 1; }

# --- measurement ---------------------------------------------------------------------------
HZ="$(getconf CLK_TCK)"
NGINX_PIDS=($(pgrep -f "nginx.*$WORK/proxy.conf" || true) $(pgrep -P "$(cat "$WORK/proxy.pid")" || true))
RESULTS="$WORK/results"

# name  url  token-kind(none|bearer|dpop)  cpu-pids…
ROWS=(
  "direct|http://127.0.0.1:$UPSTREAM_PORT/hello|none|"
  "nginx|http://127.0.0.1:$NGINX_PORT/proxy/bench/hello|none|${NGINX_PIDS[*]}"
  "hyper_floor|http://127.0.0.1:$FLOOR_PORT/proxy/bench/hello|none|$FLOOR_PID"
  "kg_token|$KG/verify/hello|bearer|$KEYGATE_PID"
  "kg_dpop|$KG/verify/hello|dpop|$KEYGATE_PID"
  "kg_full_dpop|$KG/bench/hello|dpop|$KEYGATE_PID"
  "kg_full_bearer|$KG/bench/hello|bearer|$KEYGATE_PID"
  "nginx_tls|$NGINX_TLS/bench/hello|none|${NGINX_PIDS[*]}"
  "kg_tls_full_dpop|$KG_TLS/bench/hello|dpop|$KEYGATE_PID"
  "kg_tls_full_bearer|$KG_TLS/bench/hello|bearer|$KEYGATE_PID"
)
# New TLS connection per request: closed loop and one at a time only.
HS_ROWS=(
  "nginx_tls_handshake|$NGINX_TLS/bench/hello|none|${NGINX_PIDS[*]}"
  "kg_tls_handshake|$KG_TLS/bench/hello|bearer|$KEYGATE_PID"
)

loadgen() { # phase name url kind pids [extra args…]
  local phase="$1" name="$2" url="$3" kind="$4" pids="$5"; shift 5
  local args=(run "$url" -c "${LG_CONNS:-$CONNS}" -d "${LG_SECONDS:-$SECONDS_PER_RUN}" -w "$WARMUP" -t "$THREADS"
    --clk-tck "$HZ" --label "$name" --json "$@")
  for p in $pids; do args+=(--cpu-pid "$p"); done
  case "$url" in https://*) args+=(--ca "$CA") ;; esac
  local token=""
  case "$kind" in
    bearer) token="$BEARER" ;;
    dpop)
      token="$DPOP_TOKEN"; args+=(--dpop-key "$DPOP_KEY")
      # keygate checks htu against its public_url (the plain address) on every listener.
      case "$url" in "$KG_TLS"/*) args+=(--htu "$KG${url#"$KG_TLS"}") ;; esac
      ;;
  esac
  echo "  $phase: $name" >&2
  if [ -n "$token" ]; then
    KEYGATE_LOADGEN_ACCESS_TOKEN="$token" "$LOADGEN" "${args[@]}" > "$RESULTS/$phase-$name.json"
  else
    env -u KEYGATE_LOADGEN_ACCESS_TOKEN "$LOADGEN" "${args[@]}" > "$RESULTS/$phase-$name.json"
  fi
}

echo "closed loop: $CONNS connections, ${SECONDS_PER_RUN}s (+${WARMUP}s warm-up) per row" >&2
for row in "${ROWS[@]}"; do
  IFS='|' read -r name url kind pids <<<"$row"
  loadgen closed "$name" "$url" "$kind" "$pids"
  if [ "$WRK" = 1 ] && [ "$kind" != dpop ]; then
    hdr=()
    [ "$kind" = bearer ] && hdr=(-H "Authorization: Bearer $BEARER")
    wrk -t2 -c"$CONNS" -d"${SECONDS_PER_RUN}s" "${hdr[@]}" "$url" \
      | awk '/^Requests\/sec/ {print $2}' > "$RESULTS/wrk-$name.txt" || true
  fi
done
echo "new TLS connection per request: $CONNS at a time, ${SECONDS_PER_RUN}s (+${WARMUP}s warm-up) per row" >&2
for row in "${HS_ROWS[@]}"; do
  IFS='|' read -r name url kind pids <<<"$row"
  loadgen handshake "$name" "$url" "$kind" "$pids" --new-connection-per-request
done

if [ -z "$RATE" ]; then
  RATE="$(python3 - "$RESULTS" "$RATE_FRACTION" <<'PY'
import glob, json, math, sys
rps = [json.load(open(f))["rps"] for f in glob.glob(sys.argv[1] + "/closed-*.json")]
r = max(1.0, min(rps) * float(sys.argv[2]))
# Round down to two significant digits so the rate reads as a choice, not noise.
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
  IFS='|' read -r name url kind pids <<<"$row"
  loadgen open "$name" "$url" "$kind" "$pids" --rate "$RATE"
done

# One connection, closed loop: each request's round trip with nothing queued before it.
SERIAL_SECONDS=5
echo "one connection: ${SERIAL_SECONDS}s (+${WARMUP}s warm-up) per row" >&2
for row in "${ROWS[@]}"; do
  IFS='|' read -r name url kind pids <<<"$row"
  LG_CONNS=1 LG_SECONDS="$SERIAL_SECONDS" loadgen serial "$name" "$url" "$kind" "$pids"
done
for row in "${HS_ROWS[@]}"; do
  IFS='|' read -r name url kind pids <<<"$row"
  LG_CONNS=1 LG_SECONDS="$SERIAL_SECONDS" loadgen serial "$name" "$url" "$kind" "$pids" --new-connection-per-request
done

FSTYPE="$(df --output=fstype "$WORK/keygate" 2>/dev/null | tail -n 1 || echo '?')"
echo
echo "proxy benchmark: ${SECONDS_PER_RUN}s per run (+${WARMUP}s warm-up), $CONNS connections, keygate-loadgen -t$THREADS, $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ)"
echo "keygate: SQLite store on $FSTYPE ($WORK), DPoP replay cache in process (embedded mode)"
echo "latency: open loop at $RATE req/s ($RATE_NOTE), measured from each request's due time"
echo "TLS: EC P-256 leaf (no intermediate), generator without session resumption; $(openssl version | cut -d' ' -f1-2) under nginx, rustls (ring) in keygate"
python3 - "$RESULTS" "$WRK" <<'PY'
import json, os, sys
res, wrk = sys.argv[1], sys.argv[2] == "1"
def load(phase, name):
    with open(f"{res}/{phase}-{name}.json") as f:
        return json.load(f)
names = ["direct", "nginx", "hyper_floor", "kg_token", "kg_dpop", "kg_full_dpop", "kg_full_bearer"]
tls_names = ["nginx_tls", "kg_tls_full_dpop", "kg_tls_full_bearer"]
hs_names = ["nginx_tls_handshake", "kg_tls_handshake"]
# The keep-alive row whose request each TLS row repeats (its cost without TLS) and the
# kept-alive TLS row each handshake row repeats (its cost without the new connection).
plain_of = {"nginx_tls": "nginx", "kg_tls_full_dpop": "kg_full_dpop", "kg_tls_full_bearer": "kg_full_bearer"}
keepalive_of = {"nginx_tls_handshake": "nginx_tls", "kg_tls_handshake": "kg_tls_full_bearer"}
labels = {
    "direct": "upstream directly",
    "nginx": "nginx, header injection (floor)",
    "hyper_floor": "hyper+Tokio, header injection (no kg)",
    "kg_token": "keygate: token verification (Bearer)",
    "kg_dpop": "keygate: + DPoP proof per request",
    "kg_full_dpop": "keygate: + scope + rate limit (full)",
    "kg_full_bearer": "keygate: full policy, Bearer token",
    "nginx_tls": "nginx, TLS, header injection (floor)",
    "kg_tls_full_dpop": "keygate, TLS: full policy, DPoP",
    "kg_tls_full_bearer": "keygate, TLS: full policy, Bearer",
    "nginx_tls_handshake": "nginx: new TLS conn. + proxied request",
    "kg_tls_handshake": "keygate: new TLS conn. + full, Bearer",
}
closed = {n: load("closed", n) for n in names + tls_names}
opened = {n: load("open", n) for n in names + tls_names}
ng_c, ng_o = closed["nginx"], opened["nginx"]
def us(v):
    return "-" if v is None else (f"{v / 1000:.2f} ms" if v >= 1000 else f"{v:.0f} µs")
head = f"{'target':<38} {'req/s':>9} {'vs nginx':>8} {'CPU µs/req':>10} {'vs nginx':>8} | {'p50':>8} {'p99':>9} {'p50 vs nginx':>12} | {'errors':>6}"
if wrk:
    head += f" | {'wrk req/s':>9}"
print(head)
print("-" * len(head))
for n in names:
    c, o = closed[n], opened[n]
    cpu = c["cpu_us_per_req"]
    cpu_ratio = "-" if cpu is None or not ng_c["cpu_us_per_req"] else f"{cpu / ng_c['cpu_us_per_req']:.2f}x"
    added = o["p50_us"] - ng_o["p50_us"]
    errs = sum(c["errors"].values()) + sum(o["errors"].values())
    line = (f"{labels[n]:<38} {c['rps']:>9.0f} {c['rps'] / ng_c['rps']:>7.2f}x "
            f"{'-' if cpu is None else f'{cpu:.1f}':>10} {cpu_ratio:>8} | "
            f"{us(o['p50_us']):>8} {us(o['p99_us']):>9} {('+' if added >= 0 else '') + us(added) if n != 'nginx' else '':>12} | {errs:>6}")
    if wrk:
        p = f"{res}/wrk-{n}.txt"
        w = open(p).read().strip() if os.path.exists(p) else ""
        line += f" | {w or '-':>9}"
    print(line)

# Where the whole machine's CPU went in the closed loop: the generator, the upstream and the
# proxy share its cores, so a proxy's rate is bounded by what all of them spend per request.
print()
print("the whole machine's CPU per request in the closed loop (all cores; rest: the upstream and the kernel's work outside the two):")
head_m = f"{'target':<38} {'machine µs/req':>14} {'proxy':>7} {'generator':>9} {'rest':>7} {'idle':>6}"
print(head_m)
print("-" * len(head_m))
for n in ["direct", "nginx", "hyper_floor", "kg_full_bearer", "kg_full_dpop"]:
    c = closed[n]
    m, g = c.get("machine_cpu_us_per_req"), c.get("generator_cpu_us_per_req")
    if m is None or g is None:
        continue
    p = c["cpu_us_per_req"] or 0.0
    idle = c.get("machine_idle_share")
    print(f"{labels[n]:<38} {m:>14.1f} {p:>7.1f} {g:>9.1f} {m - p - g:>7.1f} "
          f"{'-' if idle is None else f'{idle * 100:.0f}%':>6}")

# Over TLS: the same columns, against nginx terminating TLS.
ngt_c, ngt_o = closed["nginx_tls"], opened["nginx_tls"]
hs = {n: load("handshake", n) for n in hs_names}
print()
print("over TLS (HTTPS, HTTP/1.1 keep-alive; the floor is nginx terminating TLS and proxying):")
head_t = (f"{'target':<38} {'req/s':>9} {'vs nginx':>8} {'CPU µs/req':>10} {'vs nginx':>8} {'TLS +CPU':>8} | "
          f"{'p50':>8} {'p99':>9} {'p50 vs nginx':>12} | {'errors':>6}")
if wrk:
    head_t += f" | {'wrk req/s':>9}"
print(head_t)
print("-" * len(head_t))
for n in tls_names:
    c, o = closed[n], opened[n]
    cpu = c["cpu_us_per_req"]
    cpu_ratio = "-" if cpu is None or not ngt_c["cpu_us_per_req"] else f"{cpu / ngt_c['cpu_us_per_req']:.2f}x"
    plain_cpu = closed[plain_of[n]]["cpu_us_per_req"]
    tls_extra = "-" if cpu is None or plain_cpu is None else f"{cpu - plain_cpu:+.1f}"
    added = o["p50_us"] - ngt_o["p50_us"]
    errs = sum(c["errors"].values()) + sum(o["errors"].values())
    line = (f"{labels[n]:<38} {c['rps']:>9.0f} {c['rps'] / ngt_c['rps']:>7.2f}x "
            f"{'-' if cpu is None else f'{cpu:.1f}':>10} {cpu_ratio:>8} {tls_extra:>8} | "
            f"{us(o['p50_us']):>8} {us(o['p99_us']):>9} {('+' if added >= 0 else '') + us(added) if n != 'nginx_tls' else '':>12} | {errs:>6}")
    if wrk:
        p = f"{res}/wrk-{n}.txt"
        w = open(p).read().strip() if os.path.exists(p) else ""
        line += f" | {w or '-':>9}"
    print(line)
print("  (vs nginx: to nginx over TLS; TLS +CPU: CPU µs/req over the same row without TLS)")
tls_seen = sorted({f"{r['tls']['version']} {r['tls']['cipher_suite']} {r['tls']['kx_group']}"
                   for r in list(closed.values()) + list(hs.values()) if r.get("tls")})
print(f"  negotiated: {', '.join(tls_seen) or '?'}")

# New connections: one full handshake per request.
ngh = hs["nginx_tls_handshake"]
print()
print("new connection per request (TCP + full TLS handshake, no resumption, one small request, "
      "Connection: close; closed loop):")
head_h = (f"{'target':<38} {'handshakes/s':>12} {'vs nginx':>8} {'CPU µs/hs':>9} {'vs nginx':>8} "
          f"{'w/o request':>11} | {'gen. CPU µs/hs':>14} | {'errors':>6}")
print(head_h)
print("-" * len(head_h))
for n in hs_names:
    h = hs[n]
    cpu = h["cpu_us_per_req"]
    cpu_ratio = "-" if cpu is None or not ngh["cpu_us_per_req"] else f"{cpu / ngh['cpu_us_per_req']:.2f}x"
    ka_cpu = closed[keepalive_of[n]]["cpu_us_per_req"]
    bare = "-" if cpu is None or ka_cpu is None else f"{cpu - ka_cpu:.1f}"
    gen = h.get("generator_cpu_us_per_req")
    print(f"{labels[n]:<38} {h['rps']:>12.0f} {h['rps'] / ngh['rps']:>7.2f}x "
          f"{'-' if cpu is None else f'{cpu:.1f}':>9} {cpu_ratio:>8} {bare:>11} | "
          f"{'-' if gen is None else f'{gen:.1f}':>14} | {sum(h['errors'].values()):>6}")
print("  (w/o request: CPU per handshake less the same request's CPU on a kept-alive TLS connection,")
print("   about what the connection and handshake cost; gen.: the generator's own CPU per handshake,")
print("   when it is near 1e6 / handshakes/s the generator, not the server, set the rate)")

serial = {n: load("serial", n) for n in names + tls_names + hs_names}
ng_s = serial["nginx"]
print()
print("one connection, closed loop (a request's round trip with nothing queued before it;")
print("TLS rows against nginx over TLS, handshake rows: connect + handshake + request, one at a time):")
for group, floor in ((names, "nginx"), (tls_names, "nginx_tls"), (hs_names, "nginx_tls_handshake")):
    fl = serial[floor]
    for n in group:
        s = serial[n]
        added_s = s["p50_us"] - fl["p50_us"]
        print(f"  {labels[n]:<38} p50 {us(s['p50_us']):>8}  p99 {us(s['p99_us']):>9}  "
              f"{('vs ' + floor + ' ' + ('+' if added_s >= 0 else '') + us(added_s)) if n != floor else ''}")
        if s["errors"]:
            print(f"    errors, one connection: {s['errors']}")
print()
for n in names + tls_names:
    for phase, r in (("closed", closed[n]), ("open", opened[n])):
        if r["errors"]:
            print(f"errors, {labels[n]}, {phase} loop: {r['errors']}")
        d = r.get("dpop")
        if d:
            warn = "" if d["signed_inline"] == 0 else "  <- signing competed with the server"
            print(f"DPoP proofs, {labels[n]}, {phase} loop: {d['presigned']} signed ahead in {d['signing_s']:.1f} s, "
                  f"{d['signed_inline']} signed during the window, oldest {d['max_proof_age_s']:.0f} s old when sent{warn}")
for n in hs_names:
    if hs[n]["errors"]:
        print(f"errors, {labels[n]}, closed loop: {hs[n]['errors']}")
lags = ", ".join(f"{n} {us(opened[n]['send_lag_p99_us'])}" for n in names + tls_names if opened[n].get("send_lag_p99_us") is not None)
print(f"generator send lag p99 in the open loop (its timer; not charged to the targets): {lags}")
print()
def verdict(ok):
    return "met" if ok else "NOT MET"
added = opened["kg_full_dpop"]["p50_us"] - ng_o["p50_us"]
dpop = closed["kg_dpop"]["rps"]
print("goals (issue 10):")
full_b = closed["kg_full_bearer"]["rps"] / ng_c["rps"]
print(f"  full policy (Bearer) >= 0.7x nginx req/s:  {full_b:.2f}x  {verdict(full_b >= 0.7)}")
if wrk:
    def wrk_rps(n):
        p = f"{res}/wrk-{n}.txt"
        try:
            return float(open(p).read().strip())
        except (OSError, ValueError):
            return None
    kb, ng = wrk_rps("kg_full_bearer"), wrk_rps("nginx")
    if kb and ng:
        print(f"    by wrk:                                  {kb / ng:.2f}x  {verdict(kb / ng >= 0.7)}")
added_b = opened["kg_full_bearer"]["p50_us"] - ng_o["p50_us"]
print(f"  <= 50 us added at p50 (full, Bearer):      {'+' if added_b >= 0 else ''}{added_b} us  {verdict(added_b <= 50)}")
added_sb = serial["kg_full_bearer"]["p50_us"] - ng_s["p50_us"]
print(f"    with one connection (no queueing):       {'+' if added_sb >= 0 else ''}{added_sb} us  {verdict(added_sb <= 50)}")
print(f"  (full, DPoP, for reference:                {'+' if added >= 0 else ''}{added} us)")
full_d = closed["kg_full_dpop"]["rps"]
print(f"  DPoP full policy >= 15,000 req/s:          {full_d:.0f} req/s  {verdict(full_d >= 15000)} "
      f"(token + DPoP without scope/limit: {dpop:.0f} req/s)")
hf_c, hf_o, hf_s = closed["hyper_floor"], opened["hyper_floor"], serial["hyper_floor"]
fb_c = closed["kg_full_bearer"]
print(f"  the stack's floor (hyper + Tokio, nothing checked) vs nginx:  {hf_c['rps'] / ng_c['rps']:.2f}x req/s; "
      f"keygate full policy (Bearer) vs that floor: {fb_c['rps'] / hf_c['rps']:.2f}x req/s, "
      + (f"{fb_c['cpu_us_per_req'] - hf_c['cpu_us_per_req']:+.1f} µs CPU/req, " if fb_c['cpu_us_per_req'] and hf_c['cpu_us_per_req'] else "")
      + f"p50 {'+' if opened['kg_full_bearer']['p50_us'] >= hf_o['p50_us'] else ''}{opened['kg_full_bearer']['p50_us'] - hf_o['p50_us']} µs open loop, "
      f"{'+' if serial['kg_full_bearer']['p50_us'] >= hf_s['p50_us'] else ''}{serial['kg_full_bearer']['p50_us'] - hf_s['p50_us']} µs one connection")
print(f"  pass-through: not offered (keygate never forwards without a token); token verification only: "
      f"{closed['kg_token']['rps'] / ng_c['rps']:.2f}x")
print("TLS (for reference, no goal set): full policy over HTTPS vs nginx over HTTPS: "
      f"DPoP {closed['kg_tls_full_dpop']['rps'] / ngt_c['rps']:.2f}x, "
      f"Bearer {closed['kg_tls_full_bearer']['rps'] / ngt_c['rps']:.2f}x; "
      f"new handshakes {hs['kg_tls_handshake']['rps'] / ngh['rps']:.2f}x")
PY
