/* testutil.h - shared helpers of the test programs (cmocka based).
 *
 * Tests that need ../shared (fixture checkpoints, references, benchmark data)
 * find it through tu_shared(): LAYERLENS_SHARED, else ../shared relative to
 * the repository root (the working directory of `make test`).  When it is
 * missing the test skips with a message - except under CI=true, where a
 * missing ../shared fails the test. */
#ifndef LAYERLENS_TESTUTIL_H
#define LAYERLENS_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>

/* Returns the shared directory, or calls skip()/fail() (and does not return)
 * when it cannot be found. */
const char *tu_shared(void);
/* tu_shared() + "/" + rel, in a static rotating buffer (valid for 8 calls). */
const char *tu_path(const char *rel);
/* Loads a JSON file under shared/ (fails the test on a parse error). */
json_t *tu_load_json(const char *rel);
/* Reads a whole file into a malloc'd NUL-terminated buffer (NULL on error). */
char *tu_read_file(const char *path, size_t *len);
/* Maximum absolute difference between a float array and a JSON array of
 * numbers of the same length (nested [T][C] lists are flattened row-major).
 * Returns +inf on a shape mismatch. */
double tu_max_abs_diff(const float *got, const json_t *want, size_t n);
/* n pseudo-random floats in [-scale/2, scale/2) from *seed (a linear
 * congruential generator: the same seed gives the same numbers everywhere);
 * malloc'd, the test fails when out of memory. */
float *tu_rand_floats(size_t n, unsigned *seed, float scale);
/* Runs a shell command, captures its stdout (and stderr when merge is set)
 * into *out (malloc'd, NUL-terminated) and returns its exit status (-1 when
 * it did not exit normally). */
int tu_run_sh(const char *cmd, char **out, int merge);
/* The layerlens binary under test: $BUILD/layerlens (BUILD defaults to
 * "build"; `make asan` sets build-asan). */
const char *tu_bin(void);
/* A fresh temporary directory (mkdtemp under $TMPDIR or /tmp). */
const char *tu_tmpdir(void);

#endif
