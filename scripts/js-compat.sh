#!/usr/bin/env bash
# SDK compatibility: the official Dapr JavaScript SDK (npm @dapr/dapr, pinned in scripts/js-compat/package.json)
# against ward, unchanged: DaprServer receiving invocations and pub/sub events, DaprClient over HTTP (with
# the run file's DAPR_API_TOKEN) and gRPC (with the token `ward run` generates). Installs the SDK under ~/.cache/ward/js-sdk, starts `ward run`, waits for
# both checkers and prints a final `N passed, N failed` line.
# Usage: scripts/js-compat.sh [path/to/ward]   (default: builds and uses the debug binary)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
ward="${1:-}"
if [ -z "$ward" ]; then
  (cd "$root" && cargo build -q -p ward)
  ward="$target/debug/ward"
fi
command -v node >/dev/null 2>&1 || { echo "node is required (the machine's Node.js 20)" >&2; exit 1; }
sdk="${WARD_JS_SDK:-$HOME/.cache/ward/js-sdk}"
mkdir -p "$sdk"
if ! cmp -s "$root/scripts/js-compat/package.json" "$sdk/package.json" || [ ! -d "$sdk/node_modules/@dapr/dapr" ]; then
  cp "$root/scripts/js-compat/package.json" "$sdk/package.json"
  (cd "$sdk" && npm install --no-audit --no-fund --silent >/dev/null)
fi

# shellcheck source=compat-run.sh
. "$root/scripts/compat-run.sh"
compat_run "$ward" "$root/scripts/js-compat" "s|\${NODE}|$(command -v node)|g; s|\${NODE_PATH}|$sdk/node_modules|g" "JS SDK"
