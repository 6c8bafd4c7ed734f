/* error.c - formatting of ll_error values (see error.h). */
#include "layerlens/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int ll_errorf(ll_error *err, const char *fmt, ...) {
    if (!err) return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    return -1;
}

int ll_error_prefix(ll_error *err, const char *fmt, ...) {
    if (!err) return -1;
    char prefix[LL_ERROR_MAX], old[LL_ERROR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof old);
    snprintf(err->msg, sizeof err->msg, "%s: %s", prefix, old);
    return -1;
}
