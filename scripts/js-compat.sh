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

work="$(mktemp -d)"
cleanup() {
  [ -n "${run_pid:-}" ] && kill -TERM "$run_pid" 2>/dev/null && wait "$run_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
cp -r "$root/scripts/js-compat/." "$work/"
sed -i "s|\${NODE}|$(command -v node)|g; s|\${NODE_PATH}|$sdk/node_modules|g" "$work/dapr.yaml"
export WARD_HOME="$work/home"
"$ward" run -f "$work" > "$work/run.log" 2>&1 &
run_pid=$!

for _ in $(seq 1 600); do
  [ "$(grep -c ' passed, [0-9]* failed' "$work/run.log" || true)" -ge 2 ] && break
  kill -0 "$run_pid" 2>/dev/null || break
  sleep 0.2
done
grep -E "PASS|FAIL|passed, [0-9]+ failed|Error" "$work/run.log" | sed 's/^== APP - [a-z-]* == //' || true
passed=0; failed=0
while read -r p f; do passed=$((passed + p)); failed=$((failed + f)); done < <(
  grep -oE '[0-9]+ passed, [0-9]+ failed' "$work/run.log" | sed -E 's/([0-9]+) passed, ([0-9]+) failed/\1 \2/')
runs=$(grep -c ' passed, [0-9]* failed' "$work/run.log" || true)
if [ "$runs" -lt 2 ]; then
  echo "the JS SDK checks did not finish; ward run log:" >&2
  tail -40 "$work/run.log" >&2
  failed=$((failed + 1))
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
