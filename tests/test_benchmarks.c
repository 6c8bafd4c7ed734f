/* test_benchmarks.c - the task registry and the benchmark parsers: the parse
 * checks and checksums of eval-tiny.json on the real files, and malformed
 * input handled line by line. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "layerlens/benchmarks.h"

static json_t *g_ref; /* eval-tiny.json, loaded once, freed by the teardown */

static json_t *ref_root(void) {
    if (!g_ref) g_ref = tu_load_json("fixtures/reference/eval-tiny.json");
    return g_ref;
}

static json_t *ref_task(const char *name) {
    json_t *t = json_object_get(json_object_get(ref_root(), "tasks"), name);
    assert_non_null(t);
    return t;
}

static ll_bench *load(const char *name) {
    ll_error err;
    const ll_task *t = ll_task_find(name);
    assert_non_null(t);
    ll_bench *b = ll_bench_load(tu_path("data/benchmarks"), t, &err);
    if (!b) fail_msg("%s", err.msg);
    return b;
}

static int n_unique(const ll_bench *b) {
    ll_textset s;
    ll_error err;
    assert_int_equal(ll_bench_unique(b, &s, &err), 0);
    int n = s.n;
    /* every item maps back to its own texts */
    for (int i = 0; i < b->n; i++) {
        assert_string_equal(s.texts[s.a_idx[i]], b->items[i].a);
        if (b->items[i].b) assert_string_equal(s.texts[s.b_idx[i]], b->items[i].b);
        else assert_int_equal(s.b_idx[i], -1);
    }
    ll_textset_free(&s);
    return n;
}

static double gold_sum(const ll_bench *b) {
    double s = 0, c = 0; /* Neumaier: close to math.fsum */
    for (int i = 0; i < b->n; i++) {
        double x = b->items[i].gold, t = s + x;
        c += fabs(s) >= fabs(x) ? (s - t) + x : (x - t) + s;
        s = t;
    }
    return s + c;
}

static void assert_item(const ll_item *it, const char *a, const char *b, double gold) {
    assert_string_equal(it->a, a);
    if (b) assert_string_equal(it->b, b);
    else assert_null(it->b);
    if (it->gold != gold) fail_msg("gold %.17g, want %.17g", it->gold, gold);
}

/* ---- registry -------------------------------------------------------------- */

static void test_registry(void **state) {
    const char *names[] = {"rg65", "ws353", "ws353_sim", "ws353_rel", "simlex999",
                           "simverb3500", "valnorm", "stsb", "stsb_dev", "stsb_train",
                           "selfsim_sentences", "selfsim_words"};
    assert_int_equal(ll_task_count(), 12);
    for (int i = 0; i < 12; i++) {
        const ll_task *t = ll_task_find(names[i]);
        assert_non_null(t);
        assert_ptr_equal(t, ll_task_at(i));
        assert_true(t->n_expected > 0 && t->field_a > 0 && t->field_a <= t->n_fields);
    }
    assert_null(ll_task_find("rg66"));
    assert_null(ll_task_find(NULL));
    assert_null(ll_task_at(12));
    assert_string_equal(ll_task_kind_metric(ll_task_find("stsb")->kind), "spearman");
    assert_string_equal(ll_task_kind_metric(ll_task_find("valnorm")->kind), "pearson");
    assert_string_equal(ll_task_kind_metric(ll_task_find("selfsim_words")->kind),
                        "self_similarity");
}

static void test_valnorm_words(void **state) {
    json_t *t = ref_task("valnorm");
    json_t *p = json_object_get(t, "pleasant"), *u = json_object_get(t, "unpleasant");
    assert_int_equal((int)json_array_size(p), LL_VALNORM_N);
    assert_int_equal((int)json_array_size(u), LL_VALNORM_N);
    for (int i = 0; i < LL_VALNORM_N; i++) {
        assert_string_equal(ll_valnorm_pleasant[i], json_string_value(json_array_get(p, (size_t)i)));
        assert_string_equal(ll_valnorm_unpleasant[i], json_string_value(json_array_get(u, (size_t)i)));
    }
}

/* ---- the real files against the reference's parse checks ------------------- */

static void test_word_tasks(void **state) {
    const char *names[] = {"rg65", "ws353", "ws353_sim", "ws353_rel", "simlex999",
                           "simverb3500"};
    for (int k = 0; k < 6; k++) {
        json_t *t = ref_task(names[k]);
        ll_bench *b = load(names[k]);
        int n = (int)json_integer_value(json_object_get(t, "n_pairs"));
        assert_int_equal(b->n, n);
        assert_int_equal(b->task->n_expected, n);
        assert_int_equal(b->n_skipped, 0);
        assert_int_equal(b->n_lines, n);
        assert_int_equal(n_unique(b),
                         (int)json_integer_value(json_object_get(t, "n_unique_words")));
        double want = json_number_value(json_object_get(t, "gold_sum"));
        assert_true(fabs(gold_sum(b) - want) < 1e-9);
        json_t *first = json_object_get(t, "first_pair"), *last = json_object_get(t, "last_pair");
        assert_item(&b->items[0], json_string_value(json_array_get(first, 0)),
                    json_string_value(json_array_get(first, 1)),
                    json_number_value(json_array_get(first, 2)));
        assert_item(&b->items[b->n - 1], json_string_value(json_array_get(last, 0)),
                    json_string_value(json_array_get(last, 1)),
                    json_number_value(json_array_get(last, 2)));
        print_message("%-12s n %d, %d words, gold sum %.10g\n", names[k], b->n,
                      n_unique(b), gold_sum(b));
        ll_bench_free(b);
    }
}

static void test_ws353_duplicates_kept(void **state) {
    tu_shared();
    ll_bench *b = load("ws353");
    int money = 0, tiger = 0;
    for (int i = 0; i < b->n; i++) {
        money += !strcmp(b->items[i].a, "money") && !strcmp(b->items[i].b, "cash");
        tiger += !strcmp(b->items[i].a, "tiger") && !strcmp(b->items[i].b, "tiger");
    }
    assert_int_equal(money, 2);
    assert_int_equal(tiger, 1);
    assert_int_equal(b->items[0].line, 2); /* line 1 is the header */
    ll_bench_free(b);
}

static void test_valnorm_file(void **state) {
    json_t *t = ref_task("valnorm");
    ll_bench *b = load("valnorm");
    assert_int_equal(b->n, (int)json_integer_value(json_object_get(t, "n_words")));
    assert_int_equal(b->n_skipped, 0);
    assert_true(fabs(gold_sum(b) - json_number_value(json_object_get(t, "gold_sum"))) < 1e-9);
    json_t *first = json_object_get(t, "first_word"), *last = json_object_get(t, "last_word");
    assert_item(&b->items[0], json_string_value(json_array_get(first, 0)), NULL,
                json_number_value(json_array_get(first, 1)));
    assert_item(&b->items[b->n - 1], json_string_value(json_array_get(last, 0)), NULL,
                json_number_value(json_array_get(last, 1)));
    assert_int_equal(n_unique(b), b->n);
    ll_bench_free(b);
}

static void test_stsb_files(void **state) {
    json_t *t = ref_task("stsb");
    ll_bench *b = load("stsb");
    assert_int_equal(b->n, (int)json_integer_value(json_object_get(t, "n_pairs")));
    assert_int_equal(b->n, 1379);
    assert_int_equal(b->n_skipped, 0);
    assert_int_equal(b->n_extra_fields, 284); /* SOURCES.md: 9-field lines */
    assert_true(fabs(gold_sum(b) - json_number_value(json_object_get(t, "gold_sum"))) < 1e-9);
    json_t *first = json_object_get(t, "first_pair"), *last = json_object_get(t, "last_pair");
    assert_item(&b->items[0], json_string_value(json_array_get(first, 1)),
                json_string_value(json_array_get(first, 2)),
                json_number_value(json_array_get(first, 0)));
    assert_item(&b->items[b->n - 1], json_string_value(json_array_get(last, 1)),
                json_string_value(json_array_get(last, 2)),
                json_number_value(json_array_get(last, 0)));
    ll_bench_free(b);

    /* dev and train: counts of SOURCES.md */
    b = load("stsb_dev");
    assert_int_equal(b->n, 1500);
    assert_int_equal(b->n_skipped, 0);
    assert_int_equal(b->n_extra_fields, 22);
    ll_bench_free(b);
    b = load("stsb_train");
    assert_int_equal(b->n, 5749);
    assert_int_equal(b->n_skipped, 0);
    assert_int_equal(b->n_extra_fields, 197);
    /* line 5720 keeps its backslash (Nigeria\'s), as the official file */
    assert_int_equal(b->items[5719].line, 5720);
    assert_true(strstr(b->items[5719].a, "Nigeria\\'s") || strstr(b->items[5719].b, "Nigeria\\'s"));
    ll_bench_free(b);
}

static void test_selfsim_sets(void **state) {
    json_t *t = ref_task("selfsim_sentences");
    ll_bench *b = load("selfsim_sentences");
    assert_int_equal(b->n, (int)json_integer_value(json_object_get(t, "n_sentences")));
    assert_int_equal(n_unique(b), (int)json_integer_value(json_object_get(t, "n_unique_sentences")));
    assert_null(b->items[0].b);
    ll_bench *s = load("stsb");
    for (int i = 0; i < b->n; i++) assert_string_equal(b->items[i].a, s->items[i].a);
    ll_bench_free(s);
    ll_bench_free(b);

    t = ref_task("selfsim_words");
    json_t *want = json_object_get(t, "sentences");
    b = load("selfsim_words");
    assert_int_equal(b->n, (int)json_integer_value(json_object_get(t, "n_vectors")));
    assert_int_equal((int)json_array_size(want), b->n);
    assert_int_equal(b->n_available,
                     (int)json_integer_value(json_object_get(t, "stsb_dev_unique_sentences")));
    for (int i = 0; i < b->n; i++)
        assert_string_equal(b->items[i].a, json_string_value(json_array_get(want, (size_t)i)));
    assert_int_equal(n_unique(b), b->n);
    ll_bench_free(b);
}

static void test_checksums(void **state) {
    json_t *files = json_object_get(ref_root(), "data_files");
    struct { const char *task, *key; } map[] = {
        {"rg65", "rg65"}, {"ws353", "ws353"}, {"ws353_sim", "ws353_sim"},
        {"ws353_rel", "ws353_rel"}, {"simlex999", "simlex999"},
        {"simverb3500", "simverb3500"}, {"valnorm", "bellezza"},
        {"stsb", "stsb_test"}, {"stsb_dev", "stsb_dev"},
        {"selfsim_sentences", "stsb_test"}, {"selfsim_words", "stsb_dev"},
    };
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
        json_t *f = json_object_get(files, map[i].key);
        assert_non_null(f);
        ll_bench *b = load(map[i].task);
        assert_string_equal(b->sha256, json_string_value(json_object_get(f, "sha256")));
        /* the registry's file is the reference's path */
        char path[256];
        snprintf(path, sizeof path, "data/benchmarks/%s", b->task->file);
        assert_string_equal(path, json_string_value(json_object_get(f, "path")));
        ll_bench_free(b);
    }
    /* sts-train.csv is not in eval-tiny.json; its sha256 is in SOURCES.md */
    ll_bench *b = load("stsb_train");
    assert_string_equal(b->sha256, "0f71910b59aa1ad973c5897f0791f3b0965a92b8f82b1a95f3eea9f4162fda82");
    assert_int_equal((int)b->bytes, 901177);
    ll_bench_free(b);
}

static void test_sha256_vectors(void **state) {
    char hex[65];
    ll_error err;
    /* FIPS 180-2 examples */
    assert_int_equal(ll_sha256_hex("", 0, hex, &err), 0);
    assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    assert_int_equal(ll_sha256_hex("abc", 3, hex, &err), 0);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

static void test_info_json(void **state) {
    ll_bench *b = load("stsb");
    json_t *j = ll_bench_info_json(b);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "task")), "stsb");
    assert_string_equal(json_string_value(json_object_get(j, "kind")), "sentence_pairs");
    assert_string_equal(json_string_value(json_object_get(j, "metric")), "spearman");
    assert_string_equal(json_string_value(json_object_get(j, "file")), "stsb/sts-test.csv");
    assert_int_equal(json_integer_value(json_object_get(j, "n")), 1379);
    assert_int_equal(json_integer_value(json_object_get(j, "n_expected")), 1379);
    assert_int_equal(json_array_size(json_object_get(j, "skipped")), 0);
    assert_int_equal(strlen(json_string_value(json_object_get(j, "sha256"))), 64);
    json_decref(j);
    ll_bench_free(b);
}

static void test_load_missing(void **state) {
    ll_error err;
    const char *dir = tu_tmpdir();
    assert_null(ll_bench_load(dir, ll_task_find("rg65"), &err));
    assert_non_null(strstr(err.msg, "rg65.tsv"));
    assert_null(ll_bench_load(dir, NULL, &err));
    rmdir(dir);
}

/* ---- malformed input, on a small in-memory format ------------------------------ */

/* word1 TAB word2 TAB gold, no header, like rg65 */
static const ll_task tiny = {"tiny", "tiny.tsv", LL_TASK_WORD_PAIRS, '\t', 0, 3, 1, 2, 3, 0, 0, "test"};

static ll_bench *parse(const ll_task *t, const char *s, size_t len) {
    ll_error err;
    ll_bench *b = ll_bench_parse(t, s, len, &err);
    if (!b) fail_msg("%s", err.msg);
    return b;
}

static void assert_skip(const ll_bench *b, int i, int line, const char *reason_part) {
    assert_true(i < b->n_skipped);
    assert_int_equal(b->skipped[i].line, line);
    if (!strstr(b->skipped[i].reason, reason_part))
        fail_msg("skip %d: reason \"%s\" lacks \"%s\"", i, b->skipped[i].reason, reason_part);
}

static void test_line_endings(void **state) {
    /* CRLF, and no final newline */
    const char crlf[] = "a\tb\t1.5\r\nc\td\t2\r\ne\tf\t3";
    ll_bench *b = parse(&tiny, crlf, sizeof crlf - 1);
    assert_int_equal(b->n, 3);
    assert_int_equal(b->n_skipped, 0);
    assert_item(&b->items[0], "a", "b", 1.5);
    assert_item(&b->items[1], "c", "d", 2);
    assert_item(&b->items[2], "e", "f", 3);
    assert_int_equal(b->items[2].line, 3);
    ll_bench_free(b);
    /* final newline: no extra line; a CR only before LF (and at the end) */
    const char lf[] = "a\tb\t1\nc\rx\td\t2\n";
    b = parse(&tiny, lf, sizeof lf - 1);
    assert_int_equal(b->n, 2);
    assert_int_equal(b->n_lines, 2);
    assert_string_equal(b->items[1].a, "c\rx");
    ll_bench_free(b);
    const char cr_end[] = "a\tb\t1\r";
    b = parse(&tiny, cr_end, sizeof cr_end - 1);
    assert_int_equal(b->n, 1);
    assert_item(&b->items[0], "a", "b", 1);
    ll_bench_free(b);
    /* an empty line before the end is a data line, skipped with a reason */
    const char blank[] = "a\tb\t1\n\nc\td\t2\n";
    b = parse(&tiny, blank, sizeof blank - 1);
    assert_int_equal(b->n, 2);
    assert_int_equal(b->n_skipped, 1);
    assert_skip(b, 0, 2, "empty line");
    ll_bench_free(b);
}

static void test_fields_kept_verbatim(void **state) {
    /* no trimming, no quote handling, extra fields ignored */
    const char s[] = " a \t\"b\t2.5\textra\n\"x y\"\tz,w\t-0.5\n";
    ll_bench *b = parse(&tiny, s, sizeof s - 1);
    assert_int_equal(b->n, 2);
    assert_item(&b->items[0], " a ", "\"b", 2.5);
    assert_item(&b->items[1], "\"x y\"", "z,w", -0.5);
    assert_int_equal(b->n_extra_fields, 1);
    ll_bench_free(b);
}

static void test_bad_lines_skipped(void **state) {
    const char s[] =
        "ok\tpair\t1\n"          /* 1 */
        "two\tfields\n"          /* 2 too few fields */
        "x\ty\tabc\n"            /* 3 not a number */
        "x\ty\t 1.5\n"           /* 4 leading space: no trimming */
        "x\ty\tnan\n"            /* 5 */
        "x\ty\t1e999\n"          /* 6 overflows to infinity */
        "x\ty\t0x10\n"           /* 7 hex */
        "x\ty\t\n"               /* 8 empty gold */
        "\ty\t1\n"               /* 9 empty word */
        "x\t\xff\xfe\t1\n"       /* 10 invalid UTF-8 */
        "x\ty\t.\n"              /* 11 */
        "good\tone\t+2E-1\n"     /* 12 */
        "more\tnumbers\t3.\n"    /* 13 */
        "last\tone\t.25\n";      /* 14 */
    ll_bench *b = parse(&tiny, s, sizeof s - 1);
    assert_int_equal(b->n_lines, 14);
    assert_int_equal(b->n, 4);
    assert_item(&b->items[0], "ok", "pair", 1);
    assert_item(&b->items[1], "good", "one", 0.2);
    assert_item(&b->items[2], "more", "numbers", 3);
    assert_item(&b->items[3], "last", "one", 0.25);
    assert_int_equal(b->items[3].line, 14);
    assert_int_equal(b->n_skipped, 10);
    assert_skip(b, 0, 2, "2 fields, 3 expected");
    assert_skip(b, 1, 3, "field 3 is not a finite decimal number: \"abc\"");
    assert_skip(b, 2, 4, "\" 1.5\"");
    assert_skip(b, 3, 5, "not a finite decimal number");
    assert_skip(b, 4, 6, "not a finite decimal number");
    assert_skip(b, 5, 7, "not a finite decimal number");
    assert_skip(b, 6, 8, "not a finite decimal number: \"\"");
    assert_skip(b, 7, 9, "field 1 is empty");
    assert_skip(b, 8, 10, "field 2 is not valid UTF-8");
    assert_skip(b, 9, 11, "not a finite decimal number");
    /* the reasons reach the JSON listing */
    json_t *j = ll_bench_info_json(b);
    assert_non_null(j);
    assert_int_equal(json_integer_value(json_object_get(j, "n_skipped")), 10);
    json_t *first = json_array_get(json_object_get(j, "skipped"), 0);
    assert_int_equal(json_integer_value(json_object_get(first, "line")), 2);
    assert_null(json_object_get(j, "sha256")); /* not from a file */
    json_decref(j);
    ll_bench_free(b);
}

static void test_nul_byte_and_header(void **state) {
    const char s[] = "a\tb\t1\nc\0d\te\t2\nf\tg\t3\n";
    ll_bench *b = parse(&tiny, s, sizeof s - 1);
    assert_int_equal(b->n, 2);
    assert_skip(b, 0, 2, "NUL byte");
    ll_bench_free(b);
    /* a header line is skipped by rule, not reported */
    ll_task hdr = tiny;
    hdr.header_lines = 1;
    const char h[] = "Word 1\tWord 2\tScore\r\nx\ty\t4\r\n";
    b = parse(&hdr, h, sizeof h - 1);
    assert_int_equal(b->n, 1);
    assert_int_equal(b->n_skipped, 0);
    assert_int_equal(b->items[0].line, 2);
    ll_bench_free(b);
}

static void test_unusable_inputs_are_errors(void **state) {
    ll_error err;
    assert_null(ll_bench_parse(&tiny, "", 0, &err));
    assert_non_null(strstr(err.msg, "empty"));
    const char bad[] = "a\tb\n\nc\td\tx\n";
    assert_null(ll_bench_parse(&tiny, bad, sizeof bad - 1, &err));
    assert_non_null(strstr(err.msg, "no usable items"));
    assert_non_null(strstr(err.msg, "line 1: 2 fields"));
    ll_task hdr = tiny;
    hdr.header_lines = 1;
    assert_null(ll_bench_parse(&hdr, "header only\n", 12, &err));
    assert_non_null(strstr(err.msg, "no data lines"));
}

static void test_cwe_unique_and_cap(void **state) {
    /* sentence1 then sentence2 of each line, first occurrence only, capped */
    ll_task t = {"cwe", "x", LL_TASK_CWE, '\t', 0, 2, 1, 2, 0, 3, 3, "test"};
    const char s[] = "A\tB\nB\tC\nA\tA\nbad\nD\tE\n";
    ll_bench *b = parse(&t, s, sizeof s - 1);
    assert_int_equal(b->n, 3);
    assert_int_equal(b->n_available, 5); /* A B C D E */
    assert_item(&b->items[0], "A", NULL, 0);
    assert_item(&b->items[1], "B", NULL, 0);
    assert_item(&b->items[2], "C", NULL, 0);
    assert_int_equal(b->items[2].line, 2);
    assert_skip(b, 0, 4, "1 field, 2 expected");
    ll_bench_free(b);
}

/* ---- custom items -------------------------------------------------------------- */

static void test_from_items(void **state) {
    char w[] = "cat";
    ll_item in[] = {{w, "dog", 7.5, 0}, {"sun", "moon", 3, 0}, {"x", "y", -1, 0}};
    ll_error err;
    ll_bench *b = ll_bench_from_items("mine", LL_TASK_WORD_PAIRS, in, 3, &err);
    assert_non_null(b);
    w[0] = 'b'; /* the bench holds its own copies */
    assert_string_equal(b->name, "mine");
    assert_null(b->task);
    assert_int_equal(b->n, 3);
    assert_item(&b->items[0], "cat", "dog", 7.5);
    assert_item(&b->items[2], "x", "y", -1);
    assert_int_equal(b->items[1].line, 2);
    assert_int_equal(n_unique(b), 6);
    json_t *j = ll_bench_info_json(b);
    assert_string_equal(json_string_value(json_object_get(j, "kind")), "word_pairs");
    assert_null(json_object_get(j, "file"));
    json_decref(j);
    ll_bench_free(b);

    /* single texts: b and gold ignored */
    ll_item sent[] = {{"One.", "ignored", 99, 0}, {"Two.", NULL, NAN, 0}};
    b = ll_bench_from_items(NULL, LL_TASK_SENTENCES, sent, 2, &err);
    assert_non_null(b);
    assert_string_equal(b->name, "custom");
    assert_item(&b->items[0], "One.", NULL, 0);
    assert_item(&b->items[1], "Two.", NULL, 0);
    ll_bench_free(b);

    ll_item words[] = {{"good", NULL, 4.5, 0}, {"bad", NULL, 1.5, 0}};
    b = ll_bench_from_items("v", LL_TASK_VALNORM, words, 2, &err);
    assert_non_null(b);
    assert_item(&b->items[1], "bad", NULL, 1.5);
    ll_bench_free(b);
}

static void test_from_items_errors(void **state) {
    ll_error err;
    ll_item nob[] = {{"a", "b", 1, 0}, {"c", NULL, 1, 0}};
    assert_null(ll_bench_from_items(NULL, LL_TASK_WORD_PAIRS, nob, 2, &err));
    assert_string_equal(err.msg, "item 1: text b is missing");
    ll_item empty[] = {{"", "b", 1, 0}};
    assert_null(ll_bench_from_items(NULL, LL_TASK_SENTENCE_PAIRS, empty, 1, &err));
    assert_string_equal(err.msg, "item 0: text a is empty");
    ll_item nan_gold[] = {{"a", "b", 1, 0}, {"a", "b", 2, 0}, {"a", "b", NAN, 0}};
    assert_null(ll_bench_from_items(NULL, LL_TASK_WORD_PAIRS, nan_gold, 3, &err));
    assert_string_equal(err.msg, "item 2: gold is not a finite number");
    ll_item inf_gold[] = {{"a", NULL, INFINITY, 0}};
    assert_null(ll_bench_from_items(NULL, LL_TASK_VALNORM, inf_gold, 1, &err));
    ll_item utf[] = {{"caf\xc3", NULL, 0, 0}};
    assert_null(ll_bench_from_items(NULL, LL_TASK_SENTENCES, utf, 1, &err));
    assert_string_equal(err.msg, "item 0: text a is not valid UTF-8");
    assert_null(ll_bench_from_items(NULL, LL_TASK_SENTENCES, utf, 0, &err));
    assert_string_equal(err.msg, "no items given");
}

static int teardown(void **state) {
    json_decref(g_ref);
    g_ref = NULL;
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_registry),
        cmocka_unit_test(test_valnorm_words),
        cmocka_unit_test(test_word_tasks),
        cmocka_unit_test(test_ws353_duplicates_kept),
        cmocka_unit_test(test_valnorm_file),
        cmocka_unit_test(test_stsb_files),
        cmocka_unit_test(test_selfsim_sets),
        cmocka_unit_test(test_checksums),
        cmocka_unit_test(test_sha256_vectors),
        cmocka_unit_test(test_info_json),
        cmocka_unit_test(test_load_missing),
        cmocka_unit_test(test_line_endings),
        cmocka_unit_test(test_fields_kept_verbatim),
        cmocka_unit_test(test_bad_lines_skipped),
        cmocka_unit_test(test_nul_byte_and_header),
        cmocka_unit_test(test_unusable_inputs_are_errors),
        cmocka_unit_test(test_cwe_unique_and_cap),
        cmocka_unit_test(test_from_items),
        cmocka_unit_test(test_from_items_errors),
    };
    return cmocka_run_group_tests(tests, NULL, teardown);
}
