#!/usr/bin/env bash
# Replays a synthetic trace through keygate-monitor (release build) and prints, per
# injected incident kind, caught/missed and detection latency in simulated seconds,
# false alarms per 10,000 benign user-hours and evaluation time per tick.
#
#   bench/monitor/run.sh                         # 5000 users, 6 h, seed 1, GeoIP on
#   bench/monitor/run.sh --seed 2 --no-geo       # any replay flags pass through
set -euo pipefail
cd "$(dirname "$0")/../.."
args=("$@")
if [ ${#args[@]} -eq 0 ]; then
    args=(--users 5000 --hours 6 --seed 1)
fi
exec cargo run --release -q -p keygate-monitor --features test-support --example replay -- "${args[@]}"
