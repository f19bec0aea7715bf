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

work="$(mktemp -d)"
cleanup() {
  [ -n "${run_pid:-}" ] && kill -TERM "$run_pid" 2>/dev/null && wait "$run_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
cp -r "$root/scripts/sdk-compat/." "$work/"
sed -i "s|\${PYTHON}|$python|g" "$work/dapr.yaml"
export WARD_HOME="$work/home"
"$ward" run -f "$work" > "$work/run.log" 2>&1 &
run_pid=$!

# Both checkers print a final "[mode] N passed, N failed" line; wait for them (bounded).
for _ in $(seq 1 600); do
  [ "$(grep -c ' passed, [0-9]* failed' "$work/run.log" || true)" -ge 2 ] && break
  kill -0 "$run_pid" 2>/dev/null || break
  sleep 0.2
done
grep -E "PASS|FAIL|passed, [0-9]+ failed|Traceback|Error" "$work/run.log" | sed 's/^== APP - [a-z-]* == //' || true
passed=0; failed=0
while read -r p f; do passed=$((passed + p)); failed=$((failed + f)); done < <(
  grep -oE '[0-9]+ passed, [0-9]+ failed' "$work/run.log" | sed -E 's/([0-9]+) passed, ([0-9]+) failed/\1 \2/')
runs=$(grep -c ' passed, [0-9]* failed' "$work/run.log" || true)
if [ "$runs" -lt 2 ]; then
  echo "the SDK checks did not finish; ward run log:" >&2
  tail -40 "$work/run.log" >&2
  failed=$((failed + 1))
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
