/* error.h - errors as values.
 *
 * Every fallible function in layerlens takes an `ll_error *` as its last
 * argument and returns -1 (or NULL) on failure after writing one complete,
 * human-readable sentence into it.  Nothing deep inside the library prints or
 * exits: the caller decides (the CLI prints and exits non-zero, the server
 * turns it into an HTTP error body). */
#ifndef LAYERLENS_ERROR_H
#define LAYERLENS_ERROR_H

#include <stddef.h>

#define LL_ERROR_MAX 512

typedef struct ll_error {
    char msg[LL_ERROR_MAX];
} ll_error;

/* Formats into err (which may be NULL) and returns -1, so that
 * `return ll_errorf(err, "...")` reads naturally. */
int ll_errorf(ll_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Prefixes an existing message, e.g. with the name of the file being read. */
int ll_error_prefix(ll_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
