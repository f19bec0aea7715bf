#!/usr/bin/env bash
# The Python environment the tests drive, created once and cached: the official Dapr Python SDK, the official MCP
# Python SDK (crates/cli/tests/mcp.rs, examples/mcp-agent) and `cryptography` (the provenance verifier in
# clients/python). Prints the interpreter's path. Tests find it as $WARD_TEST_PYTHON or
# ~/.cache/ward/sdk-venv/bin/python.
set -euo pipefail
venv="${WARD_SDK_VENV:-$HOME/.cache/ward/sdk-venv}"
pins=("dapr==${DAPR_SDK_VERSION:-1.19.0}" "mcp==2.3.0" "cryptography")
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
if ! "$venv/bin/python" - "${pins[@]}" <<'PY' 2>/dev/null; then
import sys
from importlib.metadata import version
for pin in sys.argv[1:]:
    name, _, wanted = pin.partition("==")
    have = version(name)
    if wanted and have != wanted:
        sys.exit(1)
PY
  "$venv/bin/pip" install -q "${pins[@]}"
fi
echo "$venv/bin/python"
