#!/usr/bin/env bash
# Builds the keygate JVM SDK with plain javac and runs every JUnit 5 test (unit tests with a
# scripted transport, integration tests against a real keygate via sdk/testkit/fixture.mjs).
#
#   sdk/jvm/run.sh            install missing Debian packages, build, test
#   sdk/jvm/run.sh --setup    install the Debian packages only
#   sdk/jvm/run.sh --unit     build and run the unit tests only (no keygate, no node)
#   sdk/jvm/run.sh [--unit] --select-class dev.keygate.client.ClientTest   some tests only
#
# Needs: Debian's openjdk-17-jdk-headless, junit5, libgoogle-gson-java (installed if
# missing, as root), node (for the fixture) and the keygate binary: $KEYGATE_BIN, else
# $CARGO_TARGET_DIR/debug/keygate, else <repo>/target/debug/keygate.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
build="$here/build"
java_share=/usr/share/java
packages=(openjdk-17-jdk-headless junit5 libgoogle-gson-java)

setup() {
  local missing=()
  for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if ((${#missing[@]})); then
    echo "run.sh: installing ${missing[*]}" >&2
    local sudo=""
    [[ $(id -u) -eq 0 ]] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

mode=all
case "${1:-}" in
  --setup) setup; exit 0 ;;
  --unit) mode=unit; shift ;;
  "" | --select*) ;;
  *) echo "usage: $0 [--setup | --unit] [JUnit selectors, e.g. --select-class dev.keygate.client.ClientTest]" >&2; exit 64 ;;
esac
# Anything left selects tests for the JUnit console launcher instead of the whole suite.
selection=("$@")
if ((${#selection[@]} == 0)); then selection=(--scan-classpath "$build/test"); fi

setup

if [[ $mode == all ]]; then
  if [[ -n "${KEYGATE_BIN:-}" ]]; then bin="$KEYGATE_BIN"
  elif [[ -n "${CARGO_TARGET_DIR:-}" ]]; then bin="$CARGO_TARGET_DIR/debug/keygate"
  else bin="$repo/target/debug/keygate"; fi
  if [[ ! -x "$bin" ]]; then
    echo "run.sh: keygate binary not found at $bin; build it with 'cargo build -p keygate' or set KEYGATE_BIN" >&2
    exit 2
  fi
  export KEYGATE_BIN="$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")"
  command -v node >/dev/null || { echo "run.sh: node is required for the test fixture" >&2; exit 2; }
fi

deps="$java_share/gson.jar"
test_deps="$deps:$java_share/junit-platform-console-standalone.jar"
start=$(date +%s)

rm -rf "$build"
mkdir -p "$build/main" "$build/test"
# The portable core (Android-compatible) and the JVM-only transport. The Android sources
# under android/ need the Android SDK and are not compiled here.
find "$here/src/main/java" "$here/src/jvm/java" -name '*.java' > "$build/main.txt"
javac --release 17 -Xlint:all -Werror -encoding UTF-8 -d "$build/main" -cp "$deps" @"$build/main.txt"
find "$here/src/test/java" -name '*.java' > "$build/test.txt"
if [[ $mode == unit ]]; then sed -i '/\/it\//d' "$build/test.txt"; fi
javac --release 17 -Xlint:all -encoding UTF-8 -d "$build/test" -cp "$build/main:$test_deps" @"$build/test.txt"
echo "run.sh: compiled in $(( $(date +%s) - start )) s" >&2

set +e
(cd "$repo" && KEYGATE_REPO="$repo" java -cp "$build/main:$build/test:$test_deps" \
  org.junit.platform.console.ConsoleLauncher \
  --disable-banner --disable-ansi-colors --details=tree \
  "${selection[@]}" \
  --include-engine=junit-jupiter \
  --reports-dir="$build/test-reports") | tee "$build/junit.log"
status=${PIPESTATUS[0]}
set -e

ok=$(sed -n 's/^\[ *\([0-9]*\) tests successful *\]$/\1/p' "$build/junit.log")
failed=$(sed -n 's/^\[ *\([0-9]*\) tests failed *\]$/\1/p' "$build/junit.log")
echo "jvm-sdk: ${ok:-0} passed, ${failed:-0} failed"
echo "run.sh: total $(( $(date +%s) - start )) s" >&2
if [[ $status -ne 0 || -z "$ok" || "${failed:-1}" != 0 || "$ok" == 0 ]]; then
  exit 1
fi
