#!/usr/bin/env bash
# Regenerate the Go and TypeScript SDK stubs (client/go/gen, client/typescript/src/gen) from
# protos/ with buf.gen.yaml and local, pinned plugins. The output is committed;
# scripts/check_contract.sh regenerates into a temp dir and fails on any difference.
#
#   scripts/gen_sdks.sh            regenerate in place
#   scripts/gen_sdks.sh OUT_DIR    generate under OUT_DIR (same relative layout) instead
#   scripts/gen_sdks.sh --tools-only   only install the pinned buf and plugins
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

# Pinned plugin versions. protoc-gen-go matches the google.golang.org/protobuf runtime in
# client/go/go.mod; protoc-gen-es is pinned in client/typescript/package.json.
PROTOC_GEN_GO_VERSION=v1.36.12
PROTOC_GEN_GO_GRPC_VERSION=v1.6.1
BUF_VERSION=1.75.0

tools="$root/.tools"
buf="$tools/node_modules/.bin/buf"
if [[ ! -x "$buf" ]] || [[ "$("$buf" --version)" != "$BUF_VERSION" ]]; then
  npm install --prefix "$tools" --no-audit --no-fund --save-exact "@bufbuild/buf@$BUF_VERSION" >/dev/null
fi

# A plugin binary is reinstalled when missing or when its recorded version differs from the pin.
install_go_plugin() { # name package version
  local bin="$tools/bin/$1" stamp="$tools/bin/.$1.version"
  if [[ ! -x "$bin" ]] || [[ "$(cat "$stamp" 2>/dev/null)" != "$3" ]]; then
    GOBIN="$tools/bin" GOFLAGS=-mod=mod go install "$2@$3"
    echo "$3" > "$stamp"
  fi
}
mkdir -p "$tools/bin"
install_go_plugin protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go "$PROTOC_GEN_GO_VERSION"
install_go_plugin protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc "$PROTOC_GEN_GO_GRPC_VERSION"

if [[ ! -x client/typescript/node_modules/.bin/protoc-gen-es ]]; then
  (cd client/typescript && npm ci --no-audit --no-fund >/dev/null)
fi

if [[ "${1:-}" == "--tools-only" ]]; then
  exit 0
elif [[ $# -ge 1 ]]; then
  "$buf" generate --template buf.gen.yaml -o "$1"
else
  "$buf" generate --template buf.gen.yaml
fi
