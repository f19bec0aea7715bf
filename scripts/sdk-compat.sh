#!/usr/bin/env bash
# SDK compatibility: the official Dapr Python SDK (pip install dapr) against ward, unchanged.
# Creates a venv (cached under ~/.cache/ward), starts `ward run` with an echo app and two checker apps (one with
# DAPR_API_TOKEN, one without), waits for both, and prints a final `N passed, N failed` line.
# Usage: scripts/sdk-compat.sh [path/to/ward]   (default: builds and uses the debug binary)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
ward="${1:-}"
if [ -z "$ward" ]; then
  (cd "$root" && cargo build -q -p ward)
  ward="$target/debug/ward"
fi
# The pinned SDKs (scripts/test-venv.sh: dapr, dapr-ext-grpc, …), in a venv cached under ~/.cache/ward.
python="$("$root/scripts/test-venv.sh")"

# shellcheck source=compat-run.sh
. "$root/scripts/compat-run.sh"
compat_run "$ward" "$root/scripts/sdk-compat" "s|\${PYTHON}|$python|g" "Python SDK"
