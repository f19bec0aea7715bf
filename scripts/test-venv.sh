#!/usr/bin/env bash
# The Python environment the tests drive, created once and cached: the official Dapr Python SDK, the official MCP
# Python SDK (crates/cli/tests/mcp.rs, examples/mcp-agent), the SDK's gRPC app extension (scripts/sdk-compat) and `cryptography` (the provenance verifier in
# clients/python). Prints the interpreter's path. Tests find it as $WARD_TEST_PYTHON or
# ~/.cache/ward/sdk-venv/bin/python.
set -euo pipefail
venv="${WARD_SDK_VENV:-$HOME/.cache/ward/sdk-venv}"
# `dapr[grpc]`: since 1.19 the SDK's gRPC app (`dapr.ext.grpc.App`) ships in the core wheel as an extra, which
# adds `cloudevents` (checked below as a pin of its own).
pins=("dapr[grpc]==${DAPR_SDK_VERSION:-1.19.0}" "cloudevents" "mcp==2.3.0" "cryptography")
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
if ! "$venv/bin/python" - "${pins[@]}" <<'PY' 2>/dev/null; then
import sys
from importlib.metadata import version
for pin in sys.argv[1:]:
    name, _, wanted = pin.partition("==")
    have = version(name.split("[")[0])
    if wanted and have != wanted:
        sys.exit(1)
PY
  "$venv/bin/pip" install -q "${pins[@]}"
fi
echo "$venv/bin/python"
