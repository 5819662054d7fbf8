#!/usr/bin/env bash
# The vault's throughput with a file master key and with a PKCS#11 one (SoftHSM2), both in
# one run. Usage: bench/vault/run.sh [seconds per provider, default 5]
set -euo pipefail
cd "$(dirname "$0")/../.."
eval "$(tests/hsm/softhsm.sh)"
BENCH_SECONDS="${1:-5}" cargo bench -q -p keygate-vault --bench providers
