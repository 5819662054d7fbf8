#!/usr/bin/env bash
# Builds @keygate/client and runs all its tests: unit tests (fake fetch) and integration
# tests against a real `keygate serve` (started by sdk/testkit/fixture.mjs).
#
#   sdk/js/run.sh            install node modules if missing, build, type-check adapters, test
#   sdk/js/run.sh --setup    install node modules only
#
# The keygate binary: $KEYGATE_BIN, else $CARGO_TARGET_DIR/debug/keygate, else
# <repo>/target/debug/keygate. Only the npm registry is needed (for `npm ci`).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$here"

setup_only=false
for arg in "$@"; do
  case "$arg" in
    --setup) setup_only=true ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument: $arg" >&2; exit 64 ;;
  esac
done

command -v node >/dev/null || { echo "run.sh: node (20+) is required" >&2; exit 1; }
major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$major" -lt 20 ]; then
  echo "run.sh: node 20 or later is required (found $(node --version))" >&2
  exit 1
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "run.sh: installing node modules (npm ci)" >&2
  npm ci --no-audit --no-fund
fi
if $setup_only; then
  exit 0
fi

if [ -n "${KEYGATE_BIN:-}" ]; then
  bin="$KEYGATE_BIN"
elif [ -n "${CARGO_TARGET_DIR:-}" ]; then
  bin="$CARGO_TARGET_DIR/debug/keygate"
else
  bin="$repo/target/debug/keygate"
fi
if [ ! -x "$bin" ]; then
  echo "run.sh: keygate binary not found at $bin" >&2
  echo "run.sh: build it with 'cargo build -p keygate', or set KEYGATE_BIN to a prebuilt binary" >&2
  exit 2
fi
export KEYGATE_BIN="$bin"

echo "run.sh: building (tsc)" >&2
rm -rf dist
npx --no-install tsc -p tsconfig.json
echo "run.sh: type-checking the React Native / Expo adapters against their real types" >&2
npx --no-install tsc --noEmit -p tsconfig.adapters.json

echo "run.sh: running tests (keygate: $KEYGATE_BIN)" >&2
exec node --test --test-reporter=spec --test-concurrency=2 \
  test/unit/*.test.mjs test/integration/*.test.mjs
