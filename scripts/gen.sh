#!/usr/bin/env bash
# Regenerate gen/python from protos/ with the pinned grpcio-tools and mypy-protobuf in .venv.
# The output is committed; tests/test_gen.py runs this into a temp dir and fails on any difference.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-"$root/gen/python"}
py=${PYTHON:-"$root/.venv/bin/python"}
rm -rf "$out/exportd/v1"
mkdir -p "$out"
"$py" -m grpc_tools.protoc \
  -I "$root/protos" \
  --plugin=protoc-gen-mypy="$root/.venv/bin/protoc-gen-mypy" \
  --plugin=protoc-gen-mypy_grpc="$root/.venv/bin/protoc-gen-mypy_grpc" \
  --python_out="$out" --mypy_out="$out" \
  --grpc_python_out="$out" --mypy_grpc_out="$out" \
  "$root"/protos/exportd/v1/*.proto
printf '"""Generated protobuf and gRPC modules of the exportd.v1 contract (make gen)."""\n' > "$out/exportd/v1/__init__.py"
: > "$out/exportd/v1/py.typed"
