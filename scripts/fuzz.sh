#!/usr/bin/env bash
# Runs each libFuzzer target given on the command line for FUZZ_SECONDS
# (default 60) and prints one line per target: executions, corpus size,
# result.  Called by `make fuzz` from the repository root.
#
# The committed seeds (tests/fuzz/corpus/<target>/) are only read; what a
# run discovers goes to $FUZZ_BUILD/corpus/<target>/, which later runs start
# from.  A crash, leak, timeout or broken invariant leaves the input in
# $FUZZ_BUILD/artifacts/<target>/ and makes the script exit non-zero;
# reproduce with `$FUZZ_BUILD/fuzz/<target> <that file>`.
set -u
cd "$(dirname "$0")/.."
seconds=${FUZZ_SECONDS:-60}
build=${FUZZ_BUILD:-build-fuzz}
# ASan's leak check runs at exit of each run; UBSan findings are fatal
# (the targets are built with -fno-sanitize-recover).
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:symbolize=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

[ $# -gt 0 ] || { echo "usage: $0 FUZZ_TARGET..." >&2; exit 2; }

failed=0
summary=()
for bin in "$@"; do
  name=$(basename "$bin")
  seeds=tests/fuzz/corpus/$name
  work=$build/corpus/$name
  art=$build/artifacts/$name
  log=$build/logs/$name.log
  mkdir -p "$work" "$art" "$(dirname "$log")"
  args=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048
        -print_final_stats=1 -artifact_prefix="$art/")
  [ -f "tests/fuzz/$name.dict" ] && args+=(-dict="tests/fuzz/$name.dict")
  dirs=("$work")
  [ -d "$seeds" ] && dirs+=("$seeds")
  echo "== $name: ${seconds}s"
  "$bin" "${args[@]}" "${dirs[@]}" >"$log" 2>&1
  rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  corpus=$(find "$work" -type f | wc -l)
  if [ $rc -eq 0 ]; then
    result=ok
  else
    result="FAILED (exit $rc, see $log)"
    failed=$((failed + 1))
    grep -m1 -E 'ERROR: |invariant broken|runtime error|deadly signal' "$log" || true
    tail -n 40 "$log"
    ls "$art"
  fi
  summary+=("$(printf '%-26s %12s execs  %6s corpus  %s' "$name" "${execs:-?}" "$corpus" "$result")")
done
echo
printf '%s\n' "${summary[@]}"
echo "fuzz: $failed of $# targets failed"
[ $failed -eq 0 ]
