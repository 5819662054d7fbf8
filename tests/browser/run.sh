#!/usr/bin/env bash
# keygate's login page and operator console in a real browser: Debian's Chromium driven by Playwright
# (playwright-core: it never downloads a browser of its own), plus DPoP interop with
# `jose`. Installs what it needs, builds keygate, runs the suite with node's test runner.
#
#   tests/browser/run.sh            install if missing, build, test
#   tests/browser/run.sh --setup    install only (CI starts this early, in the background)
#
# Screenshots of every step: target/browser-tests/*.png
set -euo pipefail
cd "$(dirname "$0")"

if [ ! -x "${CHROMIUM_PATH:-/usr/bin/chromium}" ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "browser tests need Debian's chromium package: run 'apt-get install chromium' as root" >&2
    exit 1
  fi
  echo "installing Debian's chromium"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
if [ ! -d node_modules/playwright-core ] || [ ! -d node_modules/jose ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
[ "${1:-}" = "--setup" ] && exit 0

(cd ../.. && cargo build -q -p keygate)
"${CHROMIUM_PATH:-/usr/bin/chromium}" --version
npm test
