/* test_log.c - the server's log lines (src/log.c): JSON lines that parse
 * whatever the message holds (quotes, control characters, invalid UTF-8, a
 * message far longer than a line), text lines that stay one line, levels,
 * and a stdio stream whose lines become log events. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "layerlens/log.h"
#include "testutil.h"

/* 2026-01-02T03:04:05.678Z */
#define TS_MS 1767323045678LL

static json_t *parse_line(const char *buf, size_t n) {
    assert_true(n > 0 && buf[n - 1] == '\n');
    assert_null(memchr(buf, '\n', n - 1)); /* one line */
    json_error_t je;
    json_t *j = json_loadb(buf, n - 1, 0, &je);
    if (!j) fail_msg("not JSON (%s): %.*s", je.text, (int)n, buf);
    return j;
}

static void test_json_fields(void **state) {
    char buf[LL_LOG_LINE_MAX];
    ll_log_field f[] = {LL_LOG_STR("method", "POST"), LL_LOG_STR("path", "/v1/\"x\"\\y"),
                        LL_LOG_INT("status", 200), LL_LOG_NUM("ms", 2.5),
                        LL_LOG_STR("none", NULL)};
    size_t n = ll_log_format_line(buf, sizeof buf, LL_LOG_JSON, LL_LOG_INFO, TS_MS, "request",
                                  f, 5);
    json_t *j = parse_line(buf, n);
    assert_string_equal(json_string_value(json_object_get(j, "ts")), "2026-01-02T03:04:05.678Z");
    assert_string_equal(json_string_value(json_object_get(j, "level")), "info");
    assert_string_equal(json_string_value(json_object_get(j, "msg")), "request");
    assert_string_equal(json_string_value(json_object_get(j, "method")), "POST");
    assert_string_equal(json_string_value(json_object_get(j, "path")), "/v1/\"x\"\\y");
    assert_int_equal(json_integer_value(json_object_get(j, "status")), 200);
    assert_true(json_real_value(json_object_get(j, "ms")) == 2.5);
    assert_true(json_is_null(json_object_get(j, "none")));
    json_decref(j);
}

/* Control characters escaped, valid UTF-8 kept, invalid bytes replaced:
 * the line parses and holds what can be held. */
static void test_json_hostile_message(void **state) {
    char buf[LL_LOG_LINE_MAX];
    const char *msg = "tab\there\nnew line \x01 caf\xc3\xa9 bad \xff\xc3( \xed\xa0\x80 end";
    size_t n = ll_log_format_line(buf, sizeof buf, LL_LOG_JSON, LL_LOG_WARN, TS_MS, msg, NULL, 0);
    json_t *j = parse_line(buf, n);
    const char *got = json_string_value(json_object_get(j, "msg"));
    assert_non_null(strstr(got, "tab\there\nnew line \x01 caf\xc3\xa9 bad "));
    assert_non_null(strstr(got, "\xef\xbf\xbd")); /* U+FFFD */
    assert_non_null(strstr(got, " end"));
    assert_string_equal(json_string_value(json_object_get(j, "level")), "warn");
    json_decref(j);
}

/* A message and a field far longer than a line: cut, marked, and still one
 * JSON line of at most LL_LOG_LINE_MAX bytes. */
static void test_long_lines_are_cut(void **state) {
    size_t big = 20000;
    char *msg = malloc(big + 1), *val = malloc(big + 1);
    for (size_t i = 0; i < big; i++) msg[i] = (char)('a' + i % 26), val[i] = i % 7 ? 'x' : '"';
    msg[big] = val[big] = 0;
    char buf[LL_LOG_LINE_MAX];
    ll_log_field f[] = {LL_LOG_STR("value", val), LL_LOG_INT("status", 413)};
    size_t n = ll_log_format_line(buf, sizeof buf, LL_LOG_JSON, LL_LOG_INFO, TS_MS, msg, f, 2);
    assert_true(n <= LL_LOG_LINE_MAX);
    json_t *j = parse_line(buf, n);
    const char *m = json_string_value(json_object_get(j, "msg"));
    assert_true(strlen(m) > 100 && strlen(m) < big);
    assert_int_equal(strncmp(m, msg, 100), 0);
    assert_non_null(strstr(m, "..."));
    assert_int_equal(json_integer_value(json_object_get(j, "status")), 413);
    json_decref(j);
    /* text too */
    n = ll_log_format_line(buf, sizeof buf, LL_LOG_TEXT, LL_LOG_INFO, TS_MS, msg, f, 2);
    assert_true(n <= LL_LOG_LINE_MAX && buf[n - 1] == '\n');
    assert_null(memchr(buf, '\n', n - 1));
    assert_non_null(strstr(buf, " status=413\n"));
    free(msg);
    free(val);
}

static void test_text_lines(void **state) {
    char buf[LL_LOG_LINE_MAX];
    ll_log_field f[] = {LL_LOG_STR("path", "/v1/embeddings"), LL_LOG_STR("note", "two words"),
                        LL_LOG_STR("q", "say \"hi\""), LL_LOG_STR("empty", ""),
                        LL_LOG_INT("status", 200), LL_LOG_NUM("ms", 1.25)};
    size_t n = ll_log_format_line(buf, sizeof buf, LL_LOG_TEXT, LL_LOG_INFO, TS_MS, "request",
                                  f, 6);
    buf[n] = 0;
    assert_string_equal(buf, "layerlens: request path=/v1/embeddings note=\"two words\" "
                             "q=\"say \\\"hi\\\"\" empty=\"\" status=200 ms=1.250\n");
    n = ll_log_format_line(buf, sizeof buf, LL_LOG_TEXT, LL_LOG_ERROR, TS_MS, "bad\nthing",
                           NULL, 0);
    buf[n] = 0;
    assert_string_equal(buf, "layerlens: error: bad\\x0athing\n");
    n = ll_log_format_line(buf, sizeof buf, LL_LOG_TEXT, LL_LOG_WARN, TS_MS, "careful", NULL, 0);
    buf[n] = 0;
    assert_string_equal(buf, "layerlens: warning: careful\n");
}

static void test_parse_names(void **state) {
    ll_log_level l;
    ll_log_format f;
    ll_error err = {{0}};
    assert_int_equal(ll_log_level_parse("debug", &l, &err), 0);
    assert_int_equal(l, LL_LOG_DEBUG);
    assert_int_equal(ll_log_level_parse("warning", &l, &err), 0);
    assert_int_equal(l, LL_LOG_WARN);
    assert_int_equal(ll_log_level_parse("loud", &l, &err), -1);
    assert_non_null(strstr(err.msg, "loud"));
    assert_int_equal(ll_log_format_parse("json", &f, &err), 0);
    assert_int_equal(f, LL_LOG_JSON);
    assert_int_equal(ll_log_format_parse("xml", &f, &err), -1);
}

/* Levels filter; a stream's lines become events at its level. */
static void test_levels_and_stream(void **state) {
    char path[4300];
    snprintf(path, sizeof path, "%s/log.txt", tu_tmpdir());
    FILE *out = fopen(path, "w+");
    assert_non_null(out);
    ll_log lg;
    ll_log_init(&lg, out, LL_LOG_WARN, LL_LOG_JSON);
    ll_logf(&lg, LL_LOG_INFO, "dropped %d", 1);
    ll_logf(&lg, LL_LOG_ERROR, "kept %d", 2);
    ll_log_sink sink;
    FILE *s = ll_log_stream(&sink, &lg, LL_LOG_WARN);
    assert_non_null(s);
    fprintf(s, "layerlens: cannot write %s: %s\n", "/x/y.json", "Not a directory");
    fprintf(s, "a line in ");
    fprintf(s, "two writes\nand one without a newline");
    fclose(s);
    fclose(out);
    char *t = tu_read_file(path, NULL);
    assert_non_null(t);
    const char *want[] = {"kept 2", "cannot write /x/y.json: Not a directory",
                          "a line in two writes", "and one without a newline"};
    const char *levels[] = {"error", "warn", "warn", "warn"};
    int k = 0;
    for (char *p = t; *p; k++) {
        char *e = strchr(p, '\n');
        assert_non_null(e);
        json_t *j = parse_line(p, (size_t)(e - p) + 1);
        assert_true(k < 4);
        assert_string_equal(json_string_value(json_object_get(j, "msg")), want[k]);
        assert_string_equal(json_string_value(json_object_get(j, "level")), levels[k]);
        json_decref(j);
        p = e + 1;
    }
    assert_int_equal(k, 4);
    free(t);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_fields),
        cmocka_unit_test(test_json_hostile_message),
        cmocka_unit_test(test_long_lines_are_cut),
        cmocka_unit_test(test_text_lines),
        cmocka_unit_test(test_parse_names),
        cmocka_unit_test(test_levels_and_stream),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
