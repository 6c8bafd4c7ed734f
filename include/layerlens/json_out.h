/* json_out.h - writing JSON responses fast.
 *
 * jansson's json_dumps prints every real with snprintf("%.9g") (plus a
 * locale fix-up); an all-layers response of one word is 13 x 768 reals, and
 * that printing took more CPU than the forward pass it reported on.  These
 * functions write the same text: compact JSON, object members in insertion
 * order, reals with 9 significant digits (every float32 reads back to the
 * same float; doubles are rounded to 9 digits as before), an integral real
 * with ".0", exponents as jansson writes them ("1e-5", "1.5e20"). */
#ifndef LAYERLENS_JSON_OUT_H
#define LAYERLENS_JSON_OUT_H

#include <stddef.h>
#include <jansson.h>

/* Writes v (finite) with 9 significant digits into buf (>= 32 bytes), NUL
 * terminated; returns the length. */
size_t ll_fmt_real(char *buf, double v);

/* The compact JSON text of j (malloc'd, NUL-terminated; NULL when out of
 * memory).  *len (if not NULL) receives its length. */
char *ll_json_dumps(const json_t *j, size_t *len);

#endif
