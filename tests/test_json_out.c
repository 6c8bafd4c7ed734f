/* test_json_out.c - the response writer (src/json_out.c) against jansson.
 *
 * Reals: every float32 read back from the text is the same float (600,000
 * random bit patterns, 200,000 typical hidden-state values, edge cases); the text equals what
 * json_dumps(JSON_REAL_PRECISION(9)) writes for all but a few half-way
 * cases, whose digits differ by one unit in the 9th place.  Trees: the same
 * text as json_dumps for objects, arrays, escapes, UTF-8, integers. */
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "layerlens/json_out.h"

static int jansson_text(double v, char *buf, size_t cap) {
    json_t *a = json_pack("[f]", v);
    char *s = json_dumps(a, JSON_COMPACT | JSON_REAL_PRECISION(9));
    json_decref(a);
    size_t n = strlen(s) - 2; /* drop [ ] */
    assert_true(n < cap);
    memcpy(buf, s + 1, n);
    buf[n] = 0;
    free(s);
    return (int)n;
}

static float from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static void check_float(float f, long *differ) {
    char mine[40], theirs[40];
    size_t n = ll_fmt_real(mine, f);
    assert_int_equal(n, strlen(mine));
    float back = strtof(mine, NULL);
    if (memcmp(&back, &f, sizeof f) != 0 && !(f == 0 && back == 0))
        fail_msg("%.9g printed as %s reads back as %.9g", f, mine, back);
    jansson_text(f, theirs, sizeof theirs);
    if (strcmp(mine, theirs)) {
        (*differ)++;
        /* a half-way case: the same digits but the last, one unit apart */
        double a = strtod(mine, NULL), b = strtod(theirs, NULL);
        double unit = pow(10, floor(log10(fabs((double)f))) - 8);
        if (fabs(a - b) > 1.01 * unit)
            fail_msg("%.17g: %s, jansson %s", (double)f, mine, theirs);
    }
}

static void test_floats_round_trip(void **state) {
    (void)state;
    const float edge[] = {0.0f, -0.0f, 1.0f, -1.0f, 0.1f, 1e-5f, 1.5e-5f, 123.0f, 100.0f,
                          1234.5f, 0.001f, 1e9f, 1.5e9f, 999999999.0f, 3.4028235e38f,
                          1.17549435e-38f, 1.4e-45f, 9.99999944e-5f, 0.0001f, 99999.9922f};
    long differ = 0;
    for (size_t i = 0; i < sizeof edge / sizeof edge[0]; i++) check_float(edge[i], &differ);
    uint32_t s = 12345;
    long n = 0;
    for (long i = 0; i < 600000; i++) {
        s = s * 1664525u + 1013904223u;
        uint32_t u = s ^ (s >> 7) * 2654435761u;
        float f = from_bits(u);
        if (!isfinite(f)) continue;
        check_float(f, &differ);
        n++;
    }
    /* typical hidden-state values */
    for (long i = 0; i < 200000; i++) {
        s = s * 1664525u + 1013904223u;
        float f = ((float)(s >> 8) / 16777216.0f - 0.5f) * 8.0f;
        check_float(f, &differ);
        n++;
    }
    print_message("    %ld floats: all read back exactly; %ld texts differ from jansson's "
                  "(half-way cases, one unit in the 9th digit)\n", n, differ);
    assert_true(differ < n / 10000);
}

static void test_doubles_like_jansson(void **state) {
    (void)state;
    const double v[] = {0.5, 0.123456789123, 2.0 / 3.0, -1e-7, 12345678.9, 1e15, 6.02214076e23,
                        -9.87654321e-30, 1e-300, 1e300, 5e-324, 1.7976931348623157e308};
    char mine[40], theirs[40];
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        ll_fmt_real(mine, v[i]);
        jansson_text(v[i], theirs, sizeof theirs);
        assert_string_equal(mine, theirs);
    }
}

static void test_tree_like_jansson(void **state) {
    (void)state;
    json_t *t = json_pack(
        "{s:s, s:[{s:i, s:[f,f,f], s:o}], s:{s:I, s:I, s:b, s:b, s:n}, s:s, s:s, s:[], s:{}}",
        "object", "list", "data", "index", 0, "embedding", 0.25, -1.5e-6, 3.0, "tokens",
        json_pack("[s,s]", "caf\xc3\xa9", "\xe2\x82\xac"), "usage", "prompt_tokens",
        (json_int_t)-9223372036854775807LL - 1, "total", (json_int_t)42, "t", 1, "f", 0, "nothing",
        "escapes", "quote \" backslash \\ slash / tab \t nl \n cr \r bs \b ff \f ctl \x01\x1f del \x7f",
        "key with \"quotes\"", "v", "empty", "obj");
    assert_non_null(t);
    size_t len;
    char *mine = ll_json_dumps(t, &len);
    char *theirs = json_dumps(t, JSON_COMPACT | JSON_REAL_PRECISION(9));
    assert_non_null(mine);
    assert_int_equal(len, strlen(mine));
    assert_string_equal(mine, theirs);
    json_t *back = json_loads(mine, 0, NULL);
    assert_true(json_equal(back, t));
    json_decref(back);
    free(mine), free(theirs);
    json_decref(t);
    assert_null(ll_json_dumps(NULL, NULL));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_floats_round_trip),
        cmocka_unit_test(test_doubles_like_jansson),
        cmocka_unit_test(test_tree_like_jansson),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
