#!/usr/bin/env bash
# Before and after, run by hand (not part of CI's test gate):
#
#   bench/proxy/compare.sh BASE_REV [SECONDS] [CONNECTIONS] [ROUNDS]   defaults: 8 32 3
#
# Builds keygate (release) at BASE_REV, in a temporary worktree with a target directory of
# its own (COMPARE_BASE_TARGET, default target/compare-base: cargo hashes workspace members
# by their path inside the workspace, so two checkouts must not share one), and from the
# working tree, then runs both side by side on one nginx
# upstream: full-policy route with a Bearer token, then with DPoP (a fresh ES256 proof per
# request), alternating rounds so drift in the machine's speed falls on both sides alike.
# Prints closed-loop requests/s (median of the rounds), keygate's CPU time per request,
# and the ratio head/base. KEYGATE_BASE_BIN=path uses an already built base binary (built
# from BASE_REV) instead of building it again.
set -euo pipefail

BASE_REV="${1:?usage: bench/proxy/compare.sh BASE_REV [SECONDS] [CONNECTIONS] [ROUNDS]}"
SECONDS_PER_RUN="${2:-8}"
CONNS="${3:-32}"
ROUNDS="${4:-3}"
WARMUP="${WARMUP:-2}"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
WORK="$(mktemp -d "${BENCH_TMPDIR:-${TMPDIR:-/tmp}}/keygate-compare-XXXXXX")"
UPSTREAM_PORT=18221
PIDS=()
bench_cleanup_extra() {
  git -C "$ROOT" worktree remove --force "$WORK/base-src" 2>/dev/null || true
}

# shellcheck source=../lib/setup.sh
. "$ROOT/bench/lib/setup.sh"
trap bench_cleanup EXIT
bench_need nginx nginx-light
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
BASE_NAME="$(git -C "$ROOT" rev-parse --short "$BASE_REV")"
if [ -n "${KEYGATE_BASE_BIN:-}" ]; then
  cp "$KEYGATE_BASE_BIN" "$WORK/keygate-base"
  # keygate reads every KEYGATE_* variable as configuration.
  unset KEYGATE_BASE_BIN
else
  echo "building keygate at $BASE_NAME (release)" >&2
  git -C "$ROOT" worktree add --detach -q "$WORK/base-src" "$BASE_REV"
  BASE_TARGET="${COMPARE_BASE_TARGET:-$TARGET/compare-base}"
  (cd "$WORK/base-src" && CARGO_TARGET_DIR="$BASE_TARGET" cargo build --release -q -p keygate)
  cp "$BASE_TARGET/release/keygate" "$WORK/keygate-base"
fi
bench_build
cp "$KEYGATE" "$WORK/keygate-head"
bench_upstream "$UPSTREAM_PORT"

# shellcheck source=../lib/ab.sh
. "$ROOT/bench/lib/ab.sh"
ab_start_side base 18223 "$WORK/keygate-base"
ab_start_side head 18224 "$WORK/keygate-head"
ab_rounds base head

echo
echo "proxy before/after: base $BASE_NAME, head $(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet HEAD -- crates || echo '+changes'), ${SECONDS_PER_RUN}s per run (+${WARMUP}s warm-up), $CONNS connections, $ROUNDS rounds per side, $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ)"
ab_report base "base $BASE_NAME" head "head"
