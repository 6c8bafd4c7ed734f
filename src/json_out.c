/* json_out.c - compact JSON text with a fast real formatter (json_out.h).
 *
 * A real is printed as %.9g would print it, without snprintf: the value is
 * scaled by a power of ten to a 9-digit integer and the digits are placed by
 * hand.  The scaled product carries a relative error of about 1e-16, so the
 * digits are those of %.9g except when the value lies within ~1e-16 of a
 * half-way point between two 9-digit decimals; either neighbour is then
 * within 0.6 units of the 9th digit, and a float32 (spaced at least 6e-8
 * apart, i.e. > 5 units of the 9th digit) still reads back exactly.
 * tests/test_json_out.c checks both claims on millions of values. */
#include "layerlens/json_out.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- reals */

#define P10_MIN (-300)
#define P10_MAX 330
static double p10[P10_MAX - P10_MIN + 1];
static pthread_once_t p10_once = PTHREAD_ONCE_INIT;

static void p10_init(void) {
    char s[16];
    for (int k = P10_MIN; k <= P10_MAX; k++) {
        snprintf(s, sizeof s, "1e%d", k);
        p10[k - P10_MIN] = strtod(s, NULL); /* correctly rounded; inf beyond 1e308 */
    }
}

/* As jansson does after snprintf: no '+' and no leading zeros in exponents,
 * ".0" after an integral value. */
static size_t fmt_slow(char *buf, double v) {
    char tmp[40];
    snprintf(tmp, sizeof tmp, "%.9g", v);
    size_t o = 0;
    const char *e = strchr(tmp, 'e');
    if (!e) {
        o = strlen(tmp);
        memcpy(buf, tmp, o);
        if (!strchr(tmp, '.')) buf[o++] = '.', buf[o++] = '0';
    } else {
        memcpy(buf, tmp, (size_t)(e - tmp));
        o = (size_t)(e - tmp);
        buf[o++] = 'e';
        e++;
        if (*e == '+') e++;
        else if (*e == '-') buf[o++] = *e++;
        while (*e == '0' && e[1]) e++;
        while (*e) buf[o++] = *e++;
    }
    buf[o] = 0;
    return o;
}

/* the 9-digit integer round(a * 10^(8 - e)), with e adjusted so that it has
 * exactly 9 digits */
static long long scaled9(double a, int *e) {
    for (int tries = 0; tries < 3; tries++) {
        long long n = llrint(a * p10[8 - *e - P10_MIN]);
        if (n >= 1000000000LL) (*e)++;
        else if (n < 100000000LL) (*e)--;
        else return n;
    }
    return -1;
}

size_t ll_fmt_real(char *buf, double v) {
    pthread_once(&p10_once, p10_init);
    if (!isfinite(v)) {
        memcpy(buf, "null", 5);
        return 4;
    }
    double a = fabs(v);
    if (a == 0.0 || a < 1e-290 || a > 1e290) return fmt_slow(buf, v);
    /* the decimal exponent from the binary one (scaled9 corrects it by one
     * where the estimate is off); log10 took a third of the time */
    int e2;
    frexp(a, &e2);
    int e = (int)floor((e2 - 1) * 0.30102999566398120);
    long long n = scaled9(a, &e);
    if (n < 0) return fmt_slow(buf, v);
    char d[9];
    for (int i = 8; i >= 0; i--) d[i] = (char)('0' + n % 10), n /= 10;
    int nd = 9;
    while (nd > 1 && d[nd - 1] == '0') nd--;
    size_t o = 0;
    if (v < 0) buf[o++] = '-';
    if (e < -4 || e >= 9) { /* d.ddde[-]x */
        buf[o++] = d[0];
        if (nd > 1) {
            buf[o++] = '.';
            for (int i = 1; i < nd; i++) buf[o++] = d[i];
        }
        buf[o++] = 'e';
        int x = e;
        if (x < 0) buf[o++] = '-', x = -x;
        char t[4];
        int nt = 0;
        do t[nt++] = (char)('0' + x % 10), x /= 10; while (x);
        while (nt) buf[o++] = t[--nt];
    } else if (e >= 0) { /* ddd.ddd, at least one digit after the point */
        for (int i = 0; i <= e; i++) buf[o++] = i < nd ? d[i] : '0';
        buf[o++] = '.';
        if (nd > e + 1)
            for (int i = e + 1; i < nd; i++) buf[o++] = d[i];
        else
            buf[o++] = '0';
    } else { /* 0.000ddd */
        buf[o++] = '0', buf[o++] = '.';
        for (int i = 0; i < -e - 1; i++) buf[o++] = '0';
        for (int i = 0; i < nd; i++) buf[o++] = d[i];
    }
    buf[o] = 0;
    return o;
}

/* ---------------------------------------------------------------- writer */

typedef struct out {
    char *p;
    size_t n, cap;
    int oom;
} out;

static int reserve(out *o, size_t more) {
    if (o->oom) return -1;
    if (o->n + more + 1 <= o->cap) return 0;
    size_t cap = o->cap ? o->cap : 4096;
    while (cap < o->n + more + 1) cap *= 2;
    char *p = realloc(o->p, cap);
    if (!p) {
        o->oom = 1;
        return -1;
    }
    o->p = p, o->cap = cap;
    return 0;
}

static void put(out *o, const char *s, size_t n) {
    if (reserve(o, n)) return;
    memcpy(o->p + o->n, s, n);
    o->n += n;
}

static void put_string(out *o, const char *s, size_t n) {
    static const char hex[] = "0123456789ABCDEF"; /* as jansson writes them */
    if (reserve(o, n + 2)) return;
    o->p[o->n++] = '"';
    size_t run = 0; /* bytes copied as they are */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        put(o, s + run, i - run);
        run = i + 1;
        char esc[6] = {'\\', 0};
        size_t k = 2;
        switch (c) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\b': esc[1] = 'b'; break;
        case '\f': esc[1] = 'f'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        default:
            esc[1] = 'u', esc[2] = '0', esc[3] = '0', esc[4] = hex[c >> 4], esc[5] = hex[c & 15];
            k = 6;
        }
        put(o, esc, k);
    }
    put(o, s + run, n - run);
    put(o, "\"", 1);
}

static void put_value(out *o, const json_t *j, int depth) {
    char num[40];
    if (depth > 2048) { /* jansson refuses deeper trees too */
        o->oom = 1;
        return;
    }
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        const char *key;
        json_t *v;
        int first = 1;
        put(o, "{", 1);
        json_object_foreach((json_t *)j, key, v) {
            if (!first) put(o, ",", 1);
            first = 0;
            put_string(o, key, strlen(key));
            put(o, ":", 1);
            put_value(o, v, depth + 1);
        }
        put(o, "}", 1);
        break;
    }
    case JSON_ARRAY: {
        size_t n = json_array_size(j);
        put(o, "[", 1);
        for (size_t i = 0; i < n; i++) {
            if (i) put(o, ",", 1);
            put_value(o, json_array_get(j, i), depth + 1);
        }
        put(o, "]", 1);
        break;
    }
    case JSON_STRING:
        put_string(o, json_string_value(j), json_string_length(j));
        break;
    case JSON_INTEGER:
        put(o, num, (size_t)snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(j)));
        break;
    case JSON_REAL:
        put(o, num, ll_fmt_real(num, json_real_value(j)));
        break;
    case JSON_TRUE: put(o, "true", 4); break;
    case JSON_FALSE: put(o, "false", 5); break;
    case JSON_NULL: put(o, "null", 4); break;
    }
}

char *ll_json_dumps(const json_t *j, size_t *len) {
    out o = {0};
    if (!j) return NULL;
    put_value(&o, j, 0);
    if (o.oom || reserve(&o, 0)) {
        free(o.p);
        return NULL;
    }
    o.p[o.n] = 0;
    if (len) *len = o.n;
    return o.p;
}
