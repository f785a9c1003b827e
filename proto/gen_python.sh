#!/usr/bin/env bash
# Generates Python message and gRPC stubs for every proto under proto/ into OUT_DIR, laid out as
# packages (OUT_DIR/dtm/v1/dtm_service_pb2_grpc.py, ...), so `sys.path.insert(0, OUT_DIR)` then
# `from dtm.v1 import dtm_service_pb2` works.
#
# Prefers the system protoc with grpc_python_plugin: Debian's python3-grpc-tools (1.14) bundles a
# protoc too old for proto3 `optional` fields (protoc 3.15+). Falls back to
# `python3 -m grpc_tools.protoc` where no system plugin exists (e.g. a pip-installed grpcio-tools).
set -euo pipefail

if [[ $# -ne 1 ]]; then
  echo "usage: $0 OUT_DIR" >&2
  exit 2
fi
out_dir=$(mkdir -p "$1" && cd "$1" && pwd)
proto_dir=$(cd "$(dirname "$0")" && pwd)

# The health proto is generated as grpc_health/v1/health_pb2.py, the module path of the official
# grpcio-health-checking package: generated as grpc/health/v1 it would shadow grpcio's own `grpc`.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$proto_dir/dtm" "$work/"
mkdir -p "$work/grpc_health/v1"
cp "$proto_dir/grpc/health/v1/health.proto" "$work/grpc_health/v1/"
cd "$work"
mapfile -t protos < <(find dtm grpc_health -name '*.proto' | sort)

plugin=$(command -v grpc_python_plugin || true)
if command -v protoc >/dev/null && [[ -n $plugin ]]; then
  protoc -I . --python_out="$out_dir" --pyi_out="$out_dir" --grpc_python_out="$out_dir" \
    --plugin=protoc-gen-grpc_python="$plugin" "${protos[@]}"
else
  "${PYTHON:-python3}" -m grpc_tools.protoc -I . --python_out="$out_dir" --grpc_python_out="$out_dir" \
    "${protos[@]}"
fi

# protoc writes no __init__.py; namespace packages would do on Python 3, but explicit ones keep
# tools such as mypy and pytest from guessing.
for d in dtm dtm/v1 grpc_health grpc_health/v1; do
  [[ -e $out_dir/$d/__init__.py ]] || : >"$out_dir/$d/__init__.py"
done
