/* fuzz_benchmarks.c - arbitrary bytes as the file of every registered task
 * (ll_bench_parse), then through what the server does with a parsed bench
 * (ll_bench_unique, ll_bench_gold, ll_bench_info_json) and through the
 * custom-items path (ll_bench_from_items) with the parsed items.
 *
 * Checked against benchmarks.h: line counting (LF split, final empty line
 * dropped, header skipped) recomputed here; every item has non-empty,
 * NUL-free, valid UTF-8 text without the delimiter or a line break, a finite
 * gold, a line number in range; every data line is either used or skipped
 * with a reason (except for the CWE sentence set, which drops repeats). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzzutil.h"
#include "layerlens/benchmarks.h"

/* Data lines of the file as benchmarks.h defines them. */
static int count_data_lines(const uint8_t *d, size_t n, int header) {
    int lines = 0;
    for (size_t i = 0; i < n; i++)
        if (d[i] == '\n') lines++;
    if (n && d[n - 1] != '\n') lines++; /* last line without LF */
    return lines > header ? lines - header : 0;
}

static void check_text(const ll_task *t, const char *s, int in_text) {
    FUZZ_CHECK(s && *s, "%s: empty text", t->name);
    size_t len = strlen(s);
    FUZZ_CHECK(fuzz_utf8_valid((const uint8_t *)s, len), "%s: invalid UTF-8",
               t->name);
    if (in_text) {
        FUZZ_CHECK(!memchr(s, t->delim, len), "%s: delimiter inside a field",
                   t->name);
        FUZZ_CHECK(!memchr(s, '\n', len), "%s: LF inside a field", t->name);
    }
}

static int inside(const ll_bench *b, const char *s, size_t text_len) {
    return s >= b->text && s < b->text + text_len;
}

static void check_items(const ll_task *t, const ll_bench *b, size_t len,
                        int n_lines) {
    int pair = ll_task_kind_is_pair(t->kind), gold = ll_task_kind_has_gold(t->kind);
    for (int i = 0; i < b->n; i++) {
        const ll_item *it = &b->items[i];
        check_text(t, it->a, 1);
        FUZZ_CHECK(inside(b, it->a, len + 1), "%s: item %d not in the text", t->name, i);
        FUZZ_CHECK(pair ? it->b != NULL : it->b == NULL, "%s: item %d b=%p",
                   t->name, i, (void *)it->b);
        if (it->b) {
            check_text(t, it->b, 1);
            FUZZ_CHECK(inside(b, it->b, len + 1), "%s: item %d b not in the text",
                       t->name, i);
        }
        FUZZ_CHECK(isfinite(it->gold) && (gold || it->gold == 0), "%s: gold %g",
                   t->name, it->gold);
        FUZZ_CHECK(it->line > t->header_lines &&
                       it->line <= t->header_lines + n_lines,
                   "%s: item line %d of %d", t->name, it->line, n_lines);
        if (i) FUZZ_CHECK(it->line >= b->items[i - 1].line, "%s: items out of "
                          "file order", t->name);
    }
    if (t->kind == LL_TASK_CWE)
        for (int i = 1; i < b->n; i++)
            for (int j = 0; j < i && b->n <= 200; j++)
                FUZZ_CHECK(strcmp(b->items[i].a, b->items[j].a) != 0,
                           "%s: repeated sentence in the CWE set", t->name);
}

static void check_skips(const ll_task *t, const ll_bench *b, int n_lines) {
    for (int i = 0; i < b->n_skipped; i++) {
        const ll_skip *s = &b->skipped[i];
        FUZZ_CHECK(s->line > t->header_lines && s->line <= t->header_lines + n_lines,
                   "%s: skip line %d", t->name, s->line);
        FUZZ_CHECK(i == 0 || s->line > b->skipped[i - 1].line,
                   "%s: skips out of order", t->name);
        size_t rl = strnlen(s->reason, sizeof s->reason);
        FUZZ_CHECK(rl > 0 && rl < sizeof s->reason, "%s: bad reason", t->name);
        FUZZ_CHECK(fuzz_utf8_valid((const uint8_t *)s->reason, rl),
                   "%s: reason is not UTF-8", t->name);
    }
}

static void check_unique(const ll_bench *b) {
    ll_textset ts;
    ll_error err = {{0}};
    FUZZ_CHECK(ll_bench_unique(b, &ts, &err) == 0, "unique: %s", err.msg);
    FUZZ_CHECK(ts.n >= 1 && ts.n <= 2 * b->n, "%d distinct of %d items", ts.n, b->n);
    for (int i = 0; i < b->n; i++) {
        FUZZ_CHECK(ts.a_idx[i] >= 0 && ts.a_idx[i] < ts.n &&
                       strcmp(ts.texts[ts.a_idx[i]], b->items[i].a) == 0,
                   "a_idx[%d] = %d", i, ts.a_idx[i]);
        if (b->items[i].b)
            FUZZ_CHECK(ts.b_idx[i] >= 0 && ts.b_idx[i] < ts.n &&
                           strcmp(ts.texts[ts.b_idx[i]], b->items[i].b) == 0,
                       "b_idx[%d] = %d", i, ts.b_idx[i]);
        else
            FUZZ_CHECK(ts.b_idx[i] == -1, "b_idx[%d] = %d", i, ts.b_idx[i]);
    }
    for (int i = 1; i < ts.n && ts.n <= 200; i++)
        for (int j = 0; j < i; j++)
            FUZZ_CHECK(strcmp(ts.texts[i], ts.texts[j]) != 0, "texts %d and %d "
                       "repeat", j, i);
    ll_textset_free(&ts);
}

static void check_info(const ll_bench *b) {
    json_t *o = ll_bench_info_json(b);
    FUZZ_CHECK(o != NULL, "no info JSON");
    FUZZ_CHECK(json_integer_value(json_object_get(o, "n")) == b->n, "info n");
    FUZZ_CHECK(json_array_size(json_object_get(o, "skipped")) == (size_t)b->n_skipped,
               "info lists %zu skips of %d",
               json_array_size(json_object_get(o, "skipped")), b->n_skipped);
    char *s = json_dumps(o, JSON_COMPACT);
    FUZZ_CHECK(s != NULL, "info JSON does not serialise");
    free(s);
    json_decref(o);
}

/* The parsed items are valid custom data: the copy must equal them. */
static void check_custom(const ll_bench *b) {
    ll_error err = {{0}};
    ll_bench *c = ll_bench_from_items(NULL, b->kind, b->items, b->n, &err);
    FUZZ_CHECK(c != NULL, "parsed items refused as custom data: %s", err.msg);
    FUZZ_CHECK(c->n == b->n, "custom n %d vs %d", c->n, b->n);
    for (int i = 0; i < b->n; i++) {
        FUZZ_CHECK(strcmp(c->items[i].a, b->items[i].a) == 0 &&
                       (!b->items[i].b || strcmp(c->items[i].b, b->items[i].b) == 0) &&
                       c->items[i].gold == b->items[i].gold,
                   "custom item %d differs", i);
    }
    ll_bench_free(c);
}

static void fuzz_task(const ll_task *t, const uint8_t *data, size_t size) {
    ll_error err = {{0}};
    ll_bench *b = ll_bench_parse(t, (const char *)data, size, &err);
    if (!b) {
        FUZZ_CHECK(err.msg[0] != 0, "%s: failure without a message", t->name);
        return;
    }
    int n_lines = count_data_lines(data, size, t->header_lines);
    FUZZ_CHECK(b->task == t && b->kind == t->kind, "%s: wrong task", t->name);
    FUZZ_CHECK(b->n_lines == n_lines, "%s: %d data lines counted, %d in the file",
               t->name, b->n_lines, n_lines);
    FUZZ_CHECK(b->n >= 1 && b->n <= b->n_available, "%s: n %d, available %d",
               t->name, b->n, b->n_available);
    FUZZ_CHECK(!t->max_items || b->n <= t->max_items, "%s: %d items over the cut",
               t->name, b->n);
    FUZZ_CHECK(b->n_skipped >= 0 && b->n_skipped <= n_lines, "%s: %d skips",
               t->name, b->n_skipped);
    FUZZ_CHECK(b->n_extra_fields >= 0 && b->n_extra_fields <= n_lines,
               "%s: %d extra-field lines", t->name, b->n_extra_fields);
    if (t->kind != LL_TASK_CWE)
        FUZZ_CHECK(b->n_available + b->n_skipped == n_lines, "%s: %d used + %d "
                   "skipped != %d lines", t->name, b->n_available, b->n_skipped,
                   n_lines);
    check_items(t, b, size, n_lines);
    check_skips(t, b, n_lines);
    check_unique(b);
    check_info(b);
    check_custom(b);
    double *gold = malloc((size_t)b->n * sizeof *gold);
    FUZZ_CHECK(gold != NULL, "out of memory");
    ll_bench_gold(b, gold);
    for (int i = 0; i < b->n; i++)
        FUZZ_CHECK(gold[i] == b->items[i].gold, "gold[%d]", i);
    free(gold);
    ll_bench_free(b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    for (int i = 0; i < ll_task_count(); i++) fuzz_task(ll_task_at(i), data, size);
    return 0;
}
