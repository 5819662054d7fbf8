#!/usr/bin/env bash
# The runtime shape, measured (run by hand; not part of CI's test gate):
#
#   bench/proxy/runtime_shape.sh [SECONDS] [CONNECTIONS] [ROUNDS]      defaults: 8 32 3
#
# One keygate build, started twice side by side on one nginx upstream: `[http] runtime =
# "shared"` (connections as tasks of Tokio's work-stealing runtime, the default) and
# `"per_core"` (connections dealt round-robin to one single-threaded runtime per core, each
# on its own thread). Both sides run the full-policy route with
# a Bearer token, then with DPoP, in alternating rounds (bench/lib/ab.sh), and the
# report gives requests/s, keygate's CPU time per request and the ratio per_core/shared.
set -euo pipefail

SECONDS_PER_RUN="${1:-8}"
CONNS="${2:-32}"
ROUNDS="${3:-3}"
WARMUP="${WARMUP:-2}"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
WORK="$(mktemp -d "${BENCH_TMPDIR:-${TMPDIR:-/tmp}}/keygate-shape-XXXXXX")"
UPSTREAM_PORT=18231
PIDS=()

# shellcheck source=../lib/setup.sh
. "$ROOT/bench/lib/setup.sh"
trap bench_cleanup EXIT
bench_need nginx nginx-light
bench_build
bench_upstream "$UPSTREAM_PORT"

# shellcheck source=../lib/ab.sh
. "$ROOT/bench/lib/ab.sh"

ab_start_side shared 18233 "$KEYGATE" "$BENCH_MONITOR_ALERT_ONLY"
ab_start_side per_core 18234 "$KEYGATE" $'[http]\nruntime = "per_core"\n\n'"$BENCH_MONITOR_ALERT_ONLY"
ab_rounds shared per_core

echo
echo "runtime shape: full-policy route, ${SECONDS_PER_RUN}s per run (+${WARMUP}s warm-up), $CONNS connections, $ROUNDS rounds per side, $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ)"
ab_report shared "shared (work-stealing)" per_core "per_core (dealt)"
