#!/usr/bin/env bash
# SoftHSM2 for keygate's PKCS#11 tests: installs it from Debian's packages when missing,
# makes a token directory of its own under target/softhsm (emptied each time), and
# initialises one token per test that needs one. SoftHSM2 only sees tokens that exist when
# a process loads it, so they are all made here, before any test starts.
#
#   eval "$(tests/hsm/softhsm.sh)"      # then: cargo test -p keygate-vault --test pkcs11
#
# Prints the environment the tests read; everything else goes to stderr.
set -euo pipefail
cd "$(dirname "$0")/../.."

module=/usr/lib/softhsm/libsofthsm2.so
if [ ! -e "$module" ] || ! command -v softhsm2-util >/dev/null 2>&1; then
  echo "installing softhsm2 from Debian's packages" >&2
  apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq softhsm2 >/dev/null
fi

root="${CARGO_TARGET_DIR:-$PWD/target}/softhsm"
rm -rf "$root"
mkdir -p "$root/tokens"
cat >"$root/softhsm2.conf" <<CONF
directories.tokendir = $root/tokens
objectstore.backend = file
log.level = ERROR
slots.removable = false
CONF
export SOFTHSM2_CONF="$root/softhsm2.conf"

pin="keygate-test-pin-$RANDOM$RANDOM"
so_pin="keygate-so-$RANDOM$RANDOM"
# One token per test, so tests in parallel never share one (and one removing its
# token harms no other).
for label in kg-vault kg-rekey kg-remove kg-swap kg-refuse kg-cli kg-cli-remove kg-bench; do
  softhsm2-util --init-token --free --label "$label" --pin "$pin" --so-pin "$so_pin" >/dev/null
done
echo "softhsm: tokens in $root/tokens" >&2

cat <<ENV
export SOFTHSM2_CONF='$SOFTHSM2_CONF'
export KEYGATE_TEST_PKCS11_MODULE='$module'
export KEYGATE_TEST_PKCS11_TOKENDIR='$root/tokens'
export KEYGATE_TEST_PKCS11_PIN='$pin'
export KEYGATE_TEST_PKCS11_SO_PIN='$so_pin'
export KEYGATE_TEST_PKCS11_WRONG_PIN='not-the-pin'
ENV
