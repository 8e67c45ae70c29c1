#!/usr/bin/env bash
# Contract hygiene, run by `make test`:
#   buf lint (STANDARD), buf format (no diff), buf breaking (FILE) against the released contract
#   gen/contract/exportd-v1.binpb, and the committed Go/TypeScript stubs equal a fresh generation.
# Release a new contract with `scripts/check_contract.sh --release` (rewrites the baseline image).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
buf="$root/.tools/node_modules/.bin/buf"
baseline=gen/contract/exportd-v1.binpb

if [[ ! -x "$buf" ]]; then
  "$root/scripts/gen_sdks.sh" --tools-only
fi

if [[ "${1:-}" == "--release" ]]; then
  "$buf" build -o "$baseline"
  echo "wrote $baseline"
  exit 0
fi

"$buf" lint
"$buf" format -d --exit-code
"$buf" breaking --against "$baseline"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$root/scripts/gen_sdks.sh" "$tmp"
status=0
for dir in client/go/gen client/typescript/src/gen; do
  if ! diff -ru "$dir" "$tmp/$dir"; then
    echo "check_contract: $dir differs from a fresh generation; run scripts/gen_sdks.sh and commit" >&2
    status=1
  fi
done
[[ $status -eq 0 ]] && echo "contract: lint, format, breaking and generated SDK stubs OK"
exit $status
