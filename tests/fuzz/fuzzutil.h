/* fuzzutil.h - helpers shared by the libFuzzer targets in tests/fuzz/.
 *
 * Each fuzz_*.c is one target (LLVMFuzzerTestOneInput) built by `make fuzz`
 * with clang -fsanitize=fuzzer,address,undefined.  A target checks the
 * documented contract of what it calls, not only that nothing crashes:
 * a broken invariant is reported with FUZZ_CHECK, which prints the
 * condition and aborts so that libFuzzer saves the input as a crash. */
#ifndef LAYERLENS_FUZZUTIL_H
#define LAYERLENS_FUZZUTIL_H

#include <stddef.h>
#include <stdint.h>

#define FUZZ_CHECK(cond, ...)                                             \
    do {                                                                  \
        if (!(cond)) fuzz_fail(__FILE__, __LINE__, #cond, __VA_ARGS__);   \
    } while (0)

void fuzz_fail(const char *file, int line, const char *cond, const char *fmt,
               ...) __attribute__((noreturn, format(printf, 4, 5)));

/* The shared reference directory (LAYERLENS_SHARED, else ../shared from the
 * repository root, where `make fuzz` runs).  Exits with a message naming the
 * directory when `rel` cannot be found under it: a tokenizer target without
 * its vocabulary would fuzz nothing. */
const char *fuzz_shared_path(const char *rel);

/* An in-memory file (memfd) holding exactly data[0..len), reachable through
 * the returned path (/proc/self/fd/N) by code that wants a file name.  One
 * file per target, rewritten for each input. */
const char *fuzz_memfile(const uint8_t *data, size_t len);

/* 1 when s[0..len) is well-formed UTF-8 (no surrogates, no overlongs, at
 * most U+10FFFF); written here independently of the library's checks. */
int fuzz_utf8_valid(const uint8_t *s, size_t len);

#endif
