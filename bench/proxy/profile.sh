#!/usr/bin/env bash
# Where keygate's proxy spends its CPU, run by hand (not part of CI's test gate):
#
#   bench/proxy/profile.sh [SECONDS] [CONNECTIONS]        defaults: 8 32
#
# Starts the nginx upstream and a keygate as bench/proxy/run.sh does, drives the
# full-policy route with a Bearer token and then with DPoP (a fresh ES256 proof per
# request) in a closed loop, and samples keygate with `perf record` while the generator
# runs (no call graphs: the release build has no frame pointers, and a flat profile of
# self time is what the groups below need). For each row it prints the top symbols by
# self time and the share of a few groups (Tokio's scheduler, hyper, the kernel's network
# path, allocation, signature verification, …), so a change can be read as "time moved
# from here to there".
#
# Environment: WARMUP (s, default 2), PERF_FREQ (samples/s, default 1999), TOP (symbols
# listed, default 25), BENCH_KEYGATE (profile this binary instead of building one),
# PERF_KEEP=DIR (keep the perf.data files there), PERF_RECORD_ARGS (e.g. "-g" with a
# keygate built with frame pointers: RUSTFLAGS="-C force-frame-pointers=yes"
# CARGO_PROFILE_RELEASE_DEBUG=line-tables-only, in a target directory of its own),
# BENCH_TMPDIR, CARGO_TARGET_DIR.
set -euo pipefail

SECONDS_PER_RUN="${1:-8}"
CONNS="${2:-32}"
WARMUP="${WARMUP:-2}"
PERF_FREQ="${PERF_FREQ:-1999}"
TOP="${TOP:-25}"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
WORK="$(mktemp -d "${BENCH_TMPDIR:-${TMPDIR:-/tmp}}/keygate-profile-XXXXXX")"
UPSTREAM_PORT=18191
KEYGATE_PORT=18193
PIDS=()

# shellcheck source=../lib/setup.sh
. "$ROOT/bench/lib/setup.sh"
trap bench_cleanup EXIT
bench_need nginx nginx-light perf linux-perf
bench_build
bench_upstream "$UPSTREAM_PORT"
bench_keygate "$KEYGATE_PORT" "$UPSTREAM_PORT"
BEARER="$("$LOADGEN" token --token-url "$TOKEN_URL" --client-id "$CLIENT_ID" --scope bench)"
DPOP_KEY="$WORK/dpop.key"
DPOP_TOKEN="$("$LOADGEN" token --token-url "$TOKEN_URL" --client-id "$CLIENT_ID" --scope bench --dpop-key "$DPOP_KEY")"
URL="http://127.0.0.1:$KEYGATE_PORT/proxy/bench/hello"

profile() { # name token [loadgen args…]
  local name="$1" token="$2"; shift 2
  local data="$WORK/perf-$name.data"
  KEYGATE_LOADGEN_ACCESS_TOKEN="$token" "$LOADGEN" run "$URL" -c "$CONNS" \
    -d "$SECONDS_PER_RUN" -w "$WARMUP" --cpu-pid "$KEYGATE_PID" --clk-tck "$(getconf CLK_TCK)" \
    --label "$name" --json "$@" > "$WORK/$name.json" &
  local gen=$!
  # Sampled for as long as the generator runs: keygate is idle while the generator signs
  # its DPoP proofs ahead (which takes longer than the warm-up on a slow machine, so a
  # fixed delay missed the measured window), and the warm-up is the same load as the
  # measured window.
  # shellcheck disable=SC2086
  perf record -q -F "$PERF_FREQ" ${PERF_RECORD_ARGS:-} -p "$KEYGATE_PID" -o "$data" 2>/dev/null &
  local rec=$!
  wait "$gen"
  kill -INT "$rec" 2>/dev/null || true
  wait "$rec" || true
  local rps cpu
  rps="$(python3 -c 'import json,sys; print("%.0f" % json.load(open(sys.argv[1]))["rps"])' "$WORK/$name.json")"
  cpu="$(python3 -c 'import json,sys; v=json.load(open(sys.argv[1]))["cpu_us_per_req"]; print("-" if v is None else f"{v:.1f}")' "$WORK/$name.json")"
  echo
  echo "=== full policy, $name: $rps req/s, $cpu µs CPU per request (keygate), $CONNS connections"
  perf report -i "$data" --no-children --sort symbol --stdio --percent-limit 0 2>/dev/null \
    | python3 "$ROOT/bench/proxy/perf_groups.py" "$TOP"
  if [ -n "${PERF_KEEP:-}" ]; then mkdir -p "$PERF_KEEP" && cp "$data" "$PERF_KEEP/"; fi
}

echo "profiling keygate $("$KEYGATE" --version 2>/dev/null || true) on $(nproc) cores, ${SECONDS_PER_RUN}s per row at $PERF_FREQ Hz" >&2
profile bearer "$BEARER"
profile dpop "$DPOP_TOKEN" --dpop-key "$DPOP_KEY"
