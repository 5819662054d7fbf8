#!/usr/bin/env bash
# Side-by-side secret-scanner benchmark, run by hand:
#
#   bench/scan/run.sh [CORPUS_DIR]
#
# Scans one corpus (default: the crate sources in the local cargo registry, copied so
# every tool reads the same bytes from the page cache, plus Debian's framework-res.apk
# when android-framework-res installs) with
#   keygate       (this repository, release build)
#   ripsecrets    (crates.io)
#   detect-secrets, CredSweeper (PyPI, in a private virtualenv)
#   ripgrep       searching the rules' keywords: the floor no scanner can beat
# and prints wall time, MB/s, findings and the ratio to keygate for each.
#
# Environment: BENCH_WORK (scratch dir, default /tmp/keygate-bench), BENCH_TIMEOUT
# (seconds per tool, default 1800), BENCH_SKIP (space-separated tool names to skip).
# Tools are installed on first use: ripgrep from Debian (or PyPI), ripsecrets with
# `cargo install`, the Python tools with pip. Findings are counted as each tool reports
# them (per match or per line); they are not comparable one to one, see the notes.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=${BENCH_WORK:-/tmp/keygate-bench}
TIMEOUT=${BENCH_TIMEOUT:-1800}
SKIP=" ${BENCH_SKIP:-} "
THREADS=$(nproc)
mkdir -p "$WORK/tools/bin" "$WORK/out"
export PATH="$WORK/tools/bin:$WORK/venv/bin:$PATH"

log() { printf '%s\n' "$*" >&2; }

# ---------------------------------------------------------------- corpus
SRC=${1:-}
if [ -z "$SRC" ]; then
    SRC=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/ 2>/dev/null | head -1)
fi
[ -d "$SRC" ] || { log "no corpus directory (pass one as the first argument)"; exit 2; }
CORPUS="$WORK/corpus"
if [ ! -d "$CORPUS" ] || [ "${BENCH_RECOPY:-0}" = 1 ]; then
    log "copying corpus from $SRC"
    rm -rf "$CORPUS"
    cp -r "$SRC" "$CORPUS"
fi
# A real APK from Debian's android-framework-res package, when it can be had.
APK=/usr/share/android-framework-res/framework-res.apk
if [ ! -f "$APK" ] && [ "${BENCH_NO_APT:-0}" != 1 ]; then
    (apt-get install -y -qq android-framework-res >/dev/null 2>&1) || log "no framework-res.apk; corpus without APKs"
fi
if [ -f "$APK" ] && [ ! -f "$CORPUS/apks/framework-res.apk" ]; then
    mkdir -p "$CORPUS/apks" && cp "$APK" "$CORPUS/apks/"
fi
BYTES=$(du -sb "$CORPUS" | cut -f1)
FILES=$(find "$CORPUS" -type f | wc -l)
MB=$(python3 -c "print(round($BYTES/1e6, 1))")
log "corpus: $CORPUS, $FILES files, $MB MB"

# ---------------------------------------------------------------- tools
log "building keygate (release)"
(cd "$ROOT/crates/keygate-scan" && cargo build --release --quiet --example keygate-scan)
KEYGATE=""
for t in "${CARGO_TARGET_DIR:-}" "$ROOT/crates/keygate-scan/target" "$ROOT/target"; do
    if [ -n "$t" ] && [ -x "$t/release/examples/keygate-scan" ]; then KEYGATE="$t/release/examples/keygate-scan"; break; fi
done
[ -n "$KEYGATE" ] || { log "keygate-scan example binary not found"; exit 2; }

if ! command -v rg >/dev/null; then
    log "installing ripgrep"
    (apt-get install -y -qq ripgrep >/dev/null 2>&1) || python3 -m pip install -q --target "$WORK/tools/py" ripgrep
    [ -x "$WORK/tools/py/bin/rg" ] && ln -sf "$WORK/tools/py/bin/rg" "$WORK/tools/bin/rg"
fi
if ! command -v ripsecrets >/dev/null && [[ $SKIP != *" ripsecrets "* ]]; then
    log "installing ripsecrets (cargo install)"
    cargo install --quiet --root "$WORK/tools" ripsecrets || log "ripsecrets install failed"
fi
if [[ $SKIP != *" detect-secrets "* || $SKIP != *" credsweeper "* ]] && [ ! -x "$WORK/venv/bin/python" ]; then
    log "installing detect-secrets and credsweeper (pip)"
    python3 -m venv "$WORK/venv"
    "$WORK/venv/bin/pip" install -q detect-secrets credsweeper || log "pip install failed"
fi

# Keywords of every built-in rule, for the ripgrep floor.
KEYWORDS="$WORK/keywords.txt"
python3 - "$ROOT/crates/keygate-scan/rules" > "$KEYWORDS" <<'EOF'
import glob, sys, tomllib
kw = set()
for f in glob.glob(sys.argv[1] + "/*.toml"):
    for r in tomllib.load(open(f, "rb")).get("rules", []):
        kw.update(k.lower() for k in r["keywords"])
print("\n".join(sorted(kw)))
EOF

# Warm the page cache so the first tool is not penalised.
find "$CORPUS" -type f -exec cat {} + > /dev/null 2>&1 || true

# ---------------------------------------------------------------- runs
RESULTS="$WORK/results.tsv"
: > "$RESULTS"

run() { # name, count-command, command…
    local name=$1 count=$2; shift 2
    if [[ $SKIP == *" $name "* ]]; then log "skip $name"; return; fi
    if ! command -v "$1" >/dev/null 2>&1; then log "skip $name: $1 not installed"; return; fi
    log "running $name"
    local out="$WORK/out/$name.out" start end rc=0
    start=$(date +%s.%N)
    timeout "$TIMEOUT" "$@" > "$out" 2> "$WORK/out/$name.err" || rc=$?
    end=$(date +%s.%N)
    if [ "$rc" = 124 ]; then log "$name timed out after $TIMEOUT s"; fi
    local secs findings
    secs=$(python3 -c "print(f'{$end-$start:.2f}')")
    findings=$(bash -c "$count" < "$out" 2>/dev/null || echo "?")
    printf '%s\t%s\t%s\t%s\n' "$name" "$secs" "$findings" "$rc" >> "$RESULTS"
}

run keygate "jq '.findings | length'" \
    "$KEYGATE" scan "$CORPUS" --format json --no-progress
run ripgrep-floor "awk -F: '{s += \$NF} END {print s+0}'" \
    rg --no-messages -i -F -c -f "$KEYWORDS" "$CORPUS"
run ripsecrets "wc -l" \
    ripsecrets "$CORPUS"
run credsweeper "jq 'length'" \
    bash -c "credsweeper --path '$CORPUS' --jobs $THREADS --save-json '$WORK/out/credsweeper.json' >/dev/null && cat '$WORK/out/credsweeper.json'"
run detect-secrets "jq '[.results[] | length] | add // 0'" \
    bash -c "cd '$CORPUS' && detect-secrets scan --all-files ."

# ---------------------------------------------------------------- report
python3 - "$RESULTS" "$BYTES" "$FILES" <<'EOF'
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
nbytes, files = int(sys.argv[2]), int(sys.argv[3])
kg = next((float(r[1]) for r in rows if r[0] == "keygate"), None)
print(f"corpus: {files} files, {nbytes/1e6:.1f} MB")
print(f"{'tool':<16}{'seconds':>9}{'MB/s':>9}{'findings':>10}{'time vs keygate':>17}  note")
for name, secs, findings, rc in rows:
    s = float(secs)
    rate = nbytes / 1e6 / s if s > 0 else 0
    ratio = f"{s / kg:.2f}x" if kg else "-"
    note = "timed out" if rc == "124" else ("" if rc in ("0", "1") else f"exit {rc}")
    print(f"{name:<16}{s:>9.2f}{rate:>9.1f}{findings:>10}{ratio:>17}  {note}")
EOF
log "raw outputs in $WORK/out"
