#!/usr/bin/env bash
# Runs every test program given on the command line and totals the cmocka
# results.  Prints one closing line "tests: N passed, N failed[, N skipped]"
# and exits non-zero if any test failed or any program crashed.
set -u
passed=0 failed=0 skipped=0 crashed=0
for t in "$@"; do
  echo "== $t"
  out=$("$t" 2>&1); rc=$?
  printf '%s\n' "$out"
  p=$(printf '%s\n' "$out" | sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' | tail -1)
  f=$(printf '%s\n' "$out" | sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' | tail -1)
  s=$(printf '%s\n' "$out" | sed -n 's/^\[  SKIPPED \] \([0-9]*\) test.*/\1/p' | tail -1)
  passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0})); skipped=$((skipped + ${s:-0}))
  if [ $rc -ne 0 ] && [ -z "$f" ]; then
    echo "!! $t exited with status $rc"; crashed=$((crashed + 1)); failed=$((failed + 1))
  fi
done
echo
echo "tests: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
