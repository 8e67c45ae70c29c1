#!/usr/bin/env bash
# Runs the conformance scenarios (tests/conformance/scenarios.json) from the Go and TypeScript
# clients against real servers started once here: "default" and "one_slot" (see the scenario
# file). Set EXPORTD_TARGET / EXPORTD_TARGET_ONE_SLOT to use running servers instead.
# Installs missing dependencies first (Go modules, npm ci).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bin=${EXPORTD_BIN:-"$root/.venv/bin/exportd"}
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do
    kill -INT "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

# start_server NAME [FLAGS...]: sets $address to the server's host:port once it listens.
start_server() {
  local name=$1 line pid
  shift
  mkdir -p "$work/$name"
  "$bin" serve --host 127.0.0.1 --port 0 --data-dir "$work/$name/data" "$@" \
    >"$work/$name/stdout" 2>"$work/$name/stderr" &
  pid=$!
  pids+=("$pid")
  for _ in $(seq 300); do
    if line=$(grep -o 'listening on [^ ]*' "$work/$name/stdout" 2>/dev/null); then
      address=${line#listening on }
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "test_sdks: server $name did not start:" >&2
  cat "$work/$name/stderr" >&2
  return 1
}

address=
if [[ -z "${EXPORTD_TARGET:-}" ]]; then
  start_server default
  EXPORTD_TARGET=$address
fi
if [[ -z "${EXPORTD_TARGET_ONE_SLOT:-}" ]]; then
  start_server one_slot --max-concurrent 1 --max-queue 0
  EXPORTD_TARGET_ONE_SLOT=$address
fi
export EXPORTD_TARGET EXPORTD_TARGET_ONE_SLOT
echo "test_sdks: servers at $EXPORTD_TARGET (default) and $EXPORTD_TARGET_ONE_SLOT (one_slot)"

status=0
echo "== Go: client/go"
(cd client/go && go vet ./... && go test -count=1 ./...) || status=1

echo "== TypeScript: client/typescript"
(
  cd client/typescript
  if [[ ! -d node_modules ]] || [[ package-lock.json -nt node_modules/.package-lock.json ]]; then
    npm ci --no-audit --no-fund
  fi
  npm test
) || status=1

if [[ $status -ne 0 ]]; then
  for name in default one_slot; do
    [[ -f "$work/$name/stderr" ]] && { echo "--- server $name log" >&2; tail -n 50 "$work/$name/stderr" >&2; }
  done
fi
exit $status
