#!/usr/bin/env bash
# Regenerates the Python protobuf/gRPC modules from proto/*.proto.
# Usage: scripts/gen_proto.sh [OUT_DIR]   (default: src/payments_svc/gen)
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$here/src/payments_svc/gen}"
python="${PYTHON:-python}"
mkdir -p "$out"
"$python" -m grpc_tools.protoc -I "$here/proto" \
  --python_out="$out" --grpc_python_out="$out" --pyi_out="$out" \
  "$here"/proto/*.proto
# protoc emits top-level imports ("import payments_pb2"); make them package-relative.
sed -i -E 's/^import ([a-z_]+_pb2) as /from . import \1 as /' "$out"/*_pb2_grpc.py
touch "$out/__init__.py"
