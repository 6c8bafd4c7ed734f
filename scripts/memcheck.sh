#!/usr/bin/env bash
# Runs unit test programs under valgrind memcheck; called by `make memcheck`
# with the test programs built in build-memcheck/ (baseline ISA: valgrind
# cannot decode AVX-512).  Any memory error or leak fails the program
# (--error-exitcode=1, --leak-check=full, definite and possible leaks
# counted as errors); prints one line per program and a closing total.
#
# Skipped: programs whose source (or a tests/ header it includes) starts
# other processes (the CLI and server integration tests: fork/exec/
# posix_spawn/popen/system, or testutil's tu_run_sh) - valgrind would only watch the parent, and they
# are covered by `make asan`.  Also skipped unless MEMCHECK_ALL=1: the
# programs in SLOW below, which run whole benchmark evaluations (seconds
# natively, well over 20 minutes under valgrind); `make asan` runs them.
#
# OPENBLAS_NUM_THREADS=1: OpenBLAS's thread pool keeps its threads and
# buffers until exit, which valgrind reports as "possibly lost" thread
# stacks and slows the run by one thread per core for no gain.  No
# suppression file is used.
#
# Kernels: valgrind presents an AVX2 CPU without AVX-512, so this build has
# no -march=native (gemm.c then runs its portable kernel).  OpenBLAS
# (attention, GPT-2's logits in test_model) is pinned to its AVX
# "Sandybridge" kernels: the Haswell ones it would pick take valgrind more
# than ten times as long to run (test_model: 14 s vs over 120 s under
# --tool=none).  MEMCHECK_CORETYPE overrides ("" = OpenBLAS's own choice).
set -u
cd "$(dirname "$0")/.."
export OPENBLAS_NUM_THREADS=1
coretype=${MEMCHECK_CORETYPE-Sandybridge}
if [ -n "$coretype" ]; then export OPENBLAS_CORETYPE=$coretype; fi
VALGRIND=${VALGRIND:-valgrind}
command -v "$VALGRIND" >/dev/null || { echo "memcheck: valgrind not found (make deps installs it)" >&2; exit 2; }
[ $# -gt 0 ] || { echo "usage: $0 TEST_PROGRAM..." >&2; exit 2; }

# name: why it is too slow for every run
SLOW="test_eval"

spawns() { # $1: a test source; 0 when it or a local header it includes starts processes
  local f inc
  for f in "$1" $(sed -n 's/^#include "\([^"]*\)".*/tests\/\1/p' "$1"); do
    [ -f "$f" ] || continue
    # testutil.h only declares tu_run_sh; the programs that call it are
    # caught by their own source
    [ "$f" = tests/testutil.h ] && continue
    grep -Eq '\b(fork|vfork|execv|execvp|execve|execl|execlp|posix_spawn|posix_spawnp|popen|system|tu_run_sh)[[:space:]]*\(' "$f" && return 0
  done
  return 1
}

logdir=$(dirname "$1")/memcheck-logs
mkdir -p "$logdir"
ran=0 failed=0 skipped=0
lines=()
for prog in "$@"; do
  name=$(basename "$prog")
  src=tests/$name.c
  if [ -f "$src" ] && spawns "$src"; then
    lines+=("$(printf '%-28s skipped (starts processes)' "$name")")
    skipped=$((skipped + 1))
    continue
  fi
  if [ "${MEMCHECK_ALL:-0}" != 1 ] && [[ " $SLOW " == *" $name "* ]]; then
    lines+=("$(printf '%-28s skipped (slow under valgrind; MEMCHECK_ALL=1 runs it)' "$name")")
    skipped=$((skipped + 1))
    continue
  fi
  log=$logdir/$name.log
  echo "== $name"
  start=$(date +%s)
  "$VALGRIND" --error-exitcode=1 --leak-check=full --show-leak-kinds=definite,indirect,possible \
    --errors-for-leak-kinds=definite,indirect,possible --track-fds=no --num-callers=30 \
    --log-file="$log" "$prog" >"$log.out" 2>&1
  rc=$?
  secs=$(( $(date +%s) - start ))
  ran=$((ran + 1))
  summary=$(grep -m1 'ERROR SUMMARY' "$log" | sed 's/^==[0-9]*== //')
  tests=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1 tests passed/p' "$log.out" | tail -1)
  if [ $rc -eq 0 ]; then
    lines+=("$(printf '%-28s clean   %4ss  %s; %s' "$name" "$secs" "${tests:-?}" "$summary")")
  else
    failed=$((failed + 1))
    lines+=("$(printf '%-28s FAILED  %4ss  exit %s; %s (see %s)' "$name" "$secs" "$rc" "$summary" "$log")")
    tail -n 30 "$log.out"
    grep -v '^--' "$log" | tail -n 60
  fi
done
echo
printf '%s\n' "${lines[@]}"
echo "memcheck: $ran programs run, $failed with errors, $skipped skipped"
[ $failed -eq 0 ]
