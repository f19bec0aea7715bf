# Shared by the SDK compatibility scripts (sourced, not run): `compat_run WARD DIR SUBST NAME` copies DIR to a
# temporary folder, applies the sed expression SUBST to its dapr.yaml, starts `ward run` on it, waits (bounded) for
# two checker apps to print their final `N passed, N failed` lines, prints the checks and a total, and returns
# non-zero on any failure or if the checkers did not finish. Stops the run and removes the folder on exit.
compat_run() {
  local ward="$1" dir="$2" subst="$3" name="$4"
  work="$(mktemp -d)"
  trap 'compat_cleanup' EXIT
  cp -r "$dir/." "$work/"
  sed -i "$subst" "$work/dapr.yaml"
  WARD_HOME="$work/home" "$ward" run -f "$work" > "$work/run.log" 2>&1 &
  run_pid=$!
  for _ in $(seq 1 600); do
    [ "$(grep -c ' passed, [0-9]* failed' "$work/run.log" || true)" -ge 2 ] && break
    kill -0 "$run_pid" 2>/dev/null || break
    sleep 0.2
  done
  grep -E "PASS|FAIL|passed, [0-9]+ failed|Traceback|Error" "$work/run.log" | sed 's/^== APP - [a-z-]* == //' || true
  local passed=0 failed=0 p f runs
  while read -r p f; do passed=$((passed + p)); failed=$((failed + f)); done < <(
    grep -oE '[0-9]+ passed, [0-9]+ failed' "$work/run.log" | sed -E 's/([0-9]+) passed, ([0-9]+) failed/\1 \2/')
  runs=$(grep -c ' passed, [0-9]* failed' "$work/run.log" || true)
  if [ "$runs" -lt 2 ]; then
    echo "the $name checks did not finish; ward run log:" >&2
    tail -40 "$work/run.log" >&2
    failed=$((failed + 1))
  fi
  echo "$passed passed, $failed failed"
  [ "$failed" -eq 0 ]
}

compat_cleanup() {
  [ -n "${run_pid:-}" ] && kill -TERM "$run_pid" 2>/dev/null && wait "$run_pid" 2>/dev/null
  [ -n "${work:-}" ] && rm -rf "$work"
}
