#!/usr/bin/env bash
# TLS scan: starts keygate with a certificate made here (a throw-away CA and a leaf for
# localhost), scans it with sslyze (from PyPI, in its own virtualenv) and fails on any
# finding rated medium or worse (see evaluate.py for the list). `--setup` only installs
# sslyze. The keygate binary: $KEYGATE, or target/debug/keygate (built by `cargo test`).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${SSLYZE_VENV:-$root/target/sslyze-venv}"

setup() {
  if ! command -v openssl >/dev/null || ! command -v curl >/dev/null; then
    apt-get update -qq && apt-get install -y -qq openssl curl >/dev/null
  fi
  if [ ! -x "$venv/bin/sslyze" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check 'sslyze>=6,<7'
  fi
  "$venv/bin/sslyze" --help >/dev/null
}

if [ "${1:-}" = "--setup" ]; then
  setup
  echo "sslyze ready in $venv"
  exit 0
fi
setup

keygate="${KEYGATE:-$root/target/debug/keygate}"
[ -x "$keygate" ] || { echo "tls scan: $keygate is missing (run cargo build -p keygate first)"; exit 1; }
work="$(mktemp -d)"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
env -u KEYGATE_TOKEN "$keygate" init --dir "$work" --listen "127.0.0.1:$port" --format json >/dev/null
cd "$work"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem \
  -days 30 -subj "/CN=keygate scan CA" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key -out server.csr \
  -subj "/CN=localhost" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' > ext.cnf
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem \
  -days 30 -extfile ext.cnf 2>/dev/null
cat server.pem ca.pem > chain.pem
printf '\n[tls]\ncert = "chain.pem"\nkey = "server.key"\n' >> keygate.toml

env -u KEYGATE_TOKEN KEYGATE_LOG=warn "$keygate" serve --config keygate.toml >serve.log 2>&1 &
server_pid=$!
for _ in $(seq 1 100); do
  curl -sf --cacert ca.pem "https://localhost:$port/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -sf --cacert ca.pem "https://localhost:$port/healthz" >/dev/null || { cat serve.log; echo "tls scan: keygate did not come up over HTTPS"; exit 1; }

"$venv/bin/sslyze" --mozilla_config=intermediate --certinfo_ca_file ca.pem \
  --heartbleed --openssl_ccs --robot --reneg --compression --fallback --http_headers \
  --json_out scan.json "localhost:$port" > sslyze.txt 2>&1 || true
python3 "$here/evaluate.py" scan.json sslyze.txt
