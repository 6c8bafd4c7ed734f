/* test_eval_methods.c - the evaluation's methods beyond the reference
 * results of test_eval.c, on the tiny checkpoints and ../shared's data:
 *
 *   - selfsim_words' sampled selection (the default): never position 0 nor a
 *     special token, the same tokens for every layer, reproducible for a
 *     seed and different for another, at most one token per distinct
 *     sentence, N honoured and capped by the pool, reported;
 *   - explicit (sentence, token index) items: validated per model;
 *   - custom pairs scored exactly like the built-in sets;
 *   - the "last" sentence method, CLIP's "final" and "projected" rows against
 *     the third-party states of fixtures/reference/clip-tiny.json;
 *   - the per-layer extras (mean norm, centered self-similarity) by hand.
 *
 * The pool size is counted here independently of the library (plain TAB
 * split of the three STS-B files, sort, count). */
#include "testutil.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "layerlens/eval.h"

#define TOL_STATE 1e-4 /* float32 states vs the reference (as test_eval.c) */

typedef struct fixture {
    ll_model *gpt2, *clip;
    ll_eval_local *local;
    ll_eval_cache *cache;
    ll_eval_env env;
    char data_dir[4200];
} fixture;

static fixture F;

static fixture *fx(void) {
    if (F.gpt2) return &F;
    ll_error err = {{0}};
    snprintf(F.data_dir, sizeof F.data_dir, "%s", tu_path("data/benchmarks"));
    F.gpt2 = ll_model_load(tu_path("fixtures/models/gpt2-tiny"), &err);
    if (!F.gpt2) fail_msg("%s", err.msg);
    F.clip = ll_model_load(tu_path("fixtures/models/clip-tiny"), &err);
    if (!F.clip) fail_msg("%s", err.msg);
    F.local = ll_eval_local_new(4096, &err);
    F.cache = ll_eval_cache_new((size_t)256 << 20, &err);
    assert_non_null(F.local);
    assert_non_null(F.cache);
    F.env = (ll_eval_env){F.data_dir, F.gpt2, F.clip, ll_eval_local_embed, F.local, 0,
                          F.cache, NULL, NULL, NULL};
    return &F;
}

static int teardown(void **state) {
    (void)state;
    ll_model_free(F.gpt2), ll_model_free(F.clip);
    ll_eval_local_free(F.local);
    ll_eval_cache_free(F.cache);
    return 0;
}

static json_t *run_env(const ll_eval_env *env, const char *body_text) {
    json_error_t je;
    json_t *body = json_loads(body_text, 0, &je);
    if (!body) fail_msg("bad test JSON: %s", je.text);
    ll_error err = {{0}};
    ll_eval_request *req = ll_eval_request_parse(body, env, &err);
    json_decref(body);
    if (!req) fail_msg("request refused: %s", err.msg);
    json_t *out = NULL;
    int rc = ll_eval_run(env, req, &out, &err);
    ll_eval_request_free(req);
    if (rc) fail_msg("evaluation failed (%d): %s", rc, err.msg);
    return out;
}

static json_t *run(const char *body_text) { return run_env(&fx()->env, body_text); }

/* The parser's error for a request it must refuse. */
static void expect_refused_env(const ll_eval_env *env, const char *body_text,
                               const char *needle) {
    json_t *body = json_loads(body_text, 0, NULL);
    assert_non_null(body);
    ll_error err = {{0}};
    ll_eval_request *req = ll_eval_request_parse(body, env, &err);
    json_decref(body);
    if (req) {
        ll_eval_request_free(req);
        fail_msg("accepted: %s", body_text);
    }
    if (!strstr(err.msg, needle)) fail_msg("error '%s' does not mention '%s'", err.msg, needle);
}

static void expect_refused(const char *body_text, const char *needle) {
    expect_refused_env(&fx()->env, body_text, needle);
}

static json_t *model_result(json_t *res, const char *task, const char *model) {
    json_t *m = json_object_get(json_object_get(json_object_get(res, "results"), task), model);
    if (!m) fail_msg("no result for %s/%s", task, model);
    return m;
}

static json_int_t jint(json_t *o, const char *key) {
    json_t *v = json_object_get(o, key);
    if (!json_is_integer(v)) fail_msg("'%s' is not an integer", key);
    return json_integer_value(v);
}

static double layer_score(json_t *mr, int layer) {
    size_t i;
    json_t *L;
    json_array_foreach(json_object_get(mr, "layers"), i, L)
        if (json_is_integer(json_object_get(L, "layer")) && jint(L, "layer") == layer) {
            json_t *s = json_object_get(L, "score");
            if (!json_is_number(s)) fail_msg("layer %d has no score", layer);
            return json_number_value(s);
        }
    fail_msg("no layer %d", layer);
    return NAN;
}

/* ---- the pool, counted independently ------------------------------------- */

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Distinct sentence1/sentence2 fields (6 and 7 of TAB-split lines, CR
 * before LF dropped) over the files; *out gets them sorted (free both). */
static int count_distinct(const char *dir, const char *const *files, int n_files, char ***out,
                          char **bufs) {
    char **all = NULL;
    int n = 0, cap = 0;
    for (int f = 0; f < n_files; f++) {
        char path[4400];
        snprintf(path, sizeof path, "%s/%s", dir, files[f]);
        char *text = bufs[f] = tu_read_file(path, NULL);
        assert_non_null(text);
        for (char *line = text, *next; line && *line; line = next) {
            next = strchr(line, '\n');
            if (next) *next++ = 0;
            size_t len = strlen(line);
            if (len && line[len - 1] == '\r') line[len - 1] = 0;
            char *field[7];
            int k = 0;
            for (char *p = line; k < 7 && p; k++) {
                field[k] = p;
                p = strchr(p, '\t');
                if (p) *p++ = 0;
            }
            if (k < 7) continue;
            for (int s = 5; s < 7; s++) {
                if (n == cap) all = realloc(all, (cap = cap ? 2 * cap : 1024) * sizeof *all);
                all[n++] = field[s];
            }
        }
    }
    qsort(all, n, sizeof *all, cmp_str);
    int u = 0;
    for (int i = 0; i < n; i++)
        if (u == 0 || strcmp(all[u - 1], all[i])) all[u++] = all[i];
    *out = all;
    return u;
}

static int in_sorted(char **set, int n, const char *s) {
    return bsearch(&s, set, n, sizeof *set, cmp_str) != NULL;
}

/* ---- sampled selfsim_words ---------------------------------------------------- */

/* The token rules of one model's selection (details): never position 0,
 * never a special token, the position of text token i, one token per
 * distinct sentence, every sentence from the pool; the ids are those of the
 * model's own tokenization.  Returns the sentences (borrowed). */
static json_t *check_selection_rules(json_t *mr, const ll_model *m, char **pool, int n_pool) {
    json_t *sel = json_object_get(mr, "selection");
    json_t *text = json_object_get(sel, "sentence"), *pos = json_object_get(sel, "position");
    json_t *idx = json_object_get(sel, "token_index"), *id = json_object_get(sel, "token_id");
    json_t *ntt = json_object_get(sel, "n_text_tokens");
    size_t n = json_array_size(text);
    assert_true(n > 0);
    assert_int_equal(json_array_size(pos), n);
    const ll_tokenizer *tok = ll_model_tokenizer(m);
    int clip = ll_model_config(m)->arch == LL_ARCH_CLIP;
    const char **sorted = malloc(n * sizeof *sorted);
    ll_tokens tk = {0};
    for (size_t i = 0; i < n; i++) {
        const char *s = json_string_value(json_array_get(text, i));
        sorted[i] = s;
        assert_true(in_sorted(pool, n_pool, s));
        if (json_is_null(json_array_get(pos, i))) continue; /* skipped: listed with a reason */
        json_int_t p = json_integer_value(json_array_get(pos, i));
        json_int_t ti = json_integer_value(json_array_get(idx, i));
        json_int_t tid = json_integer_value(json_array_get(id, i));
        if (p < 1) fail_msg("'%s': position %lld drawn", s, (long long)p);
        assert_true(tid != ll_tokenizer_bos(tok) && tid != ll_tokenizer_eot(tok));
        assert_int_equal(p, ti + (clip ? 1 : 0));
        assert_true(ti >= 0 && ti < json_integer_value(json_array_get(ntt, i)));
        /* the same token as an explicit item gives */
        ll_eval_text t = {s, (long)ti, LL_EV_INDEX_GIVEN};
        ll_eval_pick pk;
        ll_error err = {{0}};
        ll_tokens_clear(&tk);
        assert_int_equal(ll_eval_input_build(m, LL_EV_CWE, &t, &tk, &pk, &err), 0);
        assert_int_equal(pk.begin, p);
        assert_int_equal(tk.ids[pk.begin], tid);
    }
    ll_tokens_free(&tk);
    qsort(sorted, n, sizeof *sorted, cmp_str);
    for (size_t i = 1; i < n; i++)
        if (!strcmp(sorted[i - 1], sorted[i])) fail_msg("sentence drawn twice: '%s'", sorted[i]);
    free(sorted);
    return text;
}

static const char *const stsb_files[] = {"stsb/sts-train.csv", "stsb/sts-dev.csv",
                                         "stsb/sts-test.csv"};

static void test_sampled_rules(void **state) {
    (void)state;
    fixture *f = fx();
    char **pool, *bufs[3];
    int n_pool = count_distinct(f->data_dir, stsb_files, 3, &pool, bufs);
    printf("  %d distinct STS-B sentences (train, dev, test)\n", n_pool);
    assert_int_equal(n_pool, LL_STSB_POOL_EXPECTED);
    json_t *res = run("{\"tasks\": [\"selfsim_words\"], \"method\": {\"selfsim_words_n\": 200}, "
                      "\"layers\": [0, 4], \"details\": true}");
    json_t *method = json_object_get(res, "method");
    assert_string_equal(json_string_value(json_object_get(method, "selfsim_words")), "sampled");
    assert_int_equal(jint(method, "selfsim_words_n"), 200);
    assert_int_equal(jint(method, "selfsim_words_seed"), LL_CWE_SEED);
    json_t *texts[2];
    const char *models[] = {"gpt2", "clip"};
    for (int k = 0; k < 2; k++) {
        json_t *mr = model_result(res, "selfsim_words", models[k]);
        json_t *sm = json_object_get(mr, "selection_method");
        assert_string_equal(json_string_value(json_object_get(sm, "name")), "sampled");
        assert_true(json_is_true(json_object_get(sm, "default")));
        assert_int_equal(jint(sm, "n_requested"), 200);
        assert_int_equal(jint(sm, "n_drawn"), 200);
        assert_int_equal(jint(sm, "n_available"), n_pool);
        assert_true(json_is_false(json_object_get(sm, "capped")));
        assert_int_equal(jint(sm, "seed"), LL_CWE_SEED);
        assert_int_equal(jint(mr, "n"), 200); /* N honoured: no STS-B sentence is skipped */
        assert_int_equal(jint(mr, "n_skipped"), 0);
        texts[k] = check_selection_rules(mr, k ? f->clip : f->gpt2, pool, n_pool);
        assert_int_equal(json_array_size(texts[k]), 200);
    }
    /* the same sentences for both models */
    assert_true(json_equal(texts[0], texts[1]));
    json_t *data = json_object_get(json_object_get(res, "data"), "selfsim_words");
    assert_int_equal(jint(data, "n"), 200);
    assert_int_equal(jint(data, "n_available"), n_pool);
    assert_int_equal(json_array_size(json_object_get(data, "files")), 3);
    json_decref(res);
    free(pool);
    for (int i = 0; i < 3; i++) free(bufs[i]);
}

/* The tokens do not depend on the layers asked for, and an explicit list of
 * the same (sentence, token index) pairs gives the same score at every
 * layer: one set of positions serves every layer. */
static void test_sampled_same_for_every_layer(void **state) {
    (void)state;
    const char *models[] = {"gpt2", "clip"};
    json_t *all = run("{\"tasks\": [\"selfsim_words\"], \"method\": {\"selfsim_words_n\": 120}, "
                      "\"details\": true}");
    json_t *two = run("{\"tasks\": [\"selfsim_words\"], \"method\": {\"selfsim_words_n\": 120}, "
                      "\"layers\": [2], \"details\": true}");
    for (int k = 0; k < 2; k++) {
        json_t *a = model_result(all, "selfsim_words", models[k]);
        json_t *b = model_result(two, "selfsim_words", models[k]);
        assert_true(json_equal(json_object_get(a, "selection"), json_object_get(b, "selection")));
        assert_true(fabs(layer_score(a, 2) - layer_score(b, 2)) < 1e-12);

        json_t *sel = json_object_get(a, "selection"), *items = json_array();
        size_t i;
        json_t *s;
        json_array_foreach(json_object_get(sel, "sentence"), i, s)
            json_array_append_new(items, json_pack("[O, O]", s, json_array_get(json_object_get(
                                                                  sel, "token_index"), i)));
        json_t *body = json_pack("{s:o, s:[s], s:b}", "items", items, "models", models[k],
                                 "details", 1);
        char *text = json_dumps(body, 0);
        json_t *ex = run(text);
        free(text);
        json_decref(body);
        json_t *e = model_result(ex, "custom_items", models[k]);
        assert_string_equal(json_string_value(json_object_get(json_object_get(e, "selection_method"),
                                                              "name")), "explicit");
        assert_true(json_equal(json_object_get(json_object_get(e, "selection"), "token_id"),
                               json_object_get(sel, "token_id")));
        double worst = 0;
        for (int l = 0; l <= 4; l++) {
            double d = fabs(layer_score(a, l) - layer_score(e, l));
            if (d > worst) worst = d;
        }
        printf("  %s: sampled vs the same tokens listed, max |diff| over layers %.1e\n",
               models[k], worst);
        assert_true(worst < 1e-12);
        json_decref(ex);
    }
    json_decref(all), json_decref(two);
}

static json_t *sentences_of(json_t *res, const char *model) {
    return json_object_get(json_object_get(model_result(res, "selfsim_words", model), "selection"),
                           "sentence");
}

static int n_common(json_t *a, json_t *b) {
    int n = 0;
    for (size_t i = 0; i < json_array_size(a); i++)
        for (size_t j = 0; j < json_array_size(b); j++)
            n += json_equal(json_array_get(a, i), json_array_get(b, j));
    return n;
}

static void test_sampled_seed(void **state) {
    (void)state;
    const char *body = "{\"tasks\": [\"selfsim_words\"], \"method\": {\"selfsim_words\": "
                       "\"sampled\", \"selfsim_words_n\": 200, \"selfsim_words_seed\": 7}, "
                       "\"layers\": [0, 3], \"details\": true}";
    json_t *a = run(body), *b = run(body);
    /* the same seed: the same selection and scores */
    assert_true(json_equal(json_object_get(a, "results"), json_object_get(b, "results")));
    json_t *c = run("{\"tasks\": [\"selfsim_words\"], \"method\": {\"selfsim_words_n\": 200, "
                    "\"selfsim_words_seed\": 8}, \"layers\": [0, 3], \"details\": true}");
    int common = n_common(sentences_of(a, "gpt2"), sentences_of(c, "gpt2"));
    printf("  seeds 7 and 8: %d of 200 sentences in common\n", common);
    assert_true(common < 100); /* two draws of 200 from ~15,000 share a few */
    assert_int_equal(jint(json_object_get(model_result(c, "selfsim_words", "clip"),
                                          "selection_method"), "seed"), 8);
    assert_true(layer_score(model_result(a, "selfsim_words", "clip"), 3) !=
                layer_score(model_result(c, "selfsim_words", "clip"), 3));
    /* a smaller n of the same seed takes a subset (keys of the sentences) */
    json_t *d = run("{\"tasks\": [\"selfsim_words\"], \"method\": {\"selfsim_words_n\": 50, "
                    "\"selfsim_words_seed\": 7}, \"layers\": [0], \"details\": true, "
                    "\"models\": [\"gpt2\"]}");
    assert_int_equal(n_common(sentences_of(d, "gpt2"), sentences_of(a, "gpt2")), 50);
    json_decref(a), json_decref(b), json_decref(c), json_decref(d);
}

/* The default N (10,000) on the real pool; layer 0 only keeps it cheap. */
static void test_sampled_default_n(void **state) {
    (void)state;
    json_t *res = run("{\"tasks\": [\"selfsim_words\"], \"models\": [\"clip\"], \"layers\": [0]}");
    json_t *mr = model_result(res, "selfsim_words", "clip");
    assert_int_equal(jint(mr, "n"), LL_CWE_DEFAULT_N);
    assert_int_equal(LL_CWE_DEFAULT_N, 10000);
    json_t *sm = json_object_get(mr, "selection_method");
    assert_int_equal(jint(sm, "n_requested"), 10000);
    assert_int_equal(jint(sm, "n_drawn"), 10000);
    assert_int_equal(jint(json_object_get(res, "timing"), "texts"), 10000);
    json_decref(res);
}

/* A small pool of our own: duplicates within and across the splits, a
 * one-token sentence.  N is capped by the distinct sentences and says so. */
static void write_file(const char *dir, const char *name, const char *text) {
    char path[4400];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void remove_file(const char *dir, const char *name) {
    char path[4400];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    unlink(path);
}

static void test_sampled_small_pool(void **state) {
    (void)state;
    fixture *f = fx();
    const char *dir = tu_tmpdir();
    char stsb[4400];
    snprintf(stsb, sizeof stsb, "%s/stsb", dir);
    assert_int_equal(mkdir(stsb, 0755), 0);
    write_file(dir, "stsb/sts-train.csv",
               "g\tf\t2012\t1\t5.0\tA man is playing a flute.\tA man plays the flute.\n"
               "g\tf\t2012\t2\t1.0\tA man is playing a flute.\tA cat sleeps on a mat.\r\n"
               "g\tf\t2012\t3\t2.0\tHi\tA dog runs in the park.\n");
    write_file(dir, "stsb/sts-dev.csv",
               "g\tf\t2013\t1\t3.0\tA dog runs in the park.\tThe sun is shining today.\n"
               "bad line without tabs\n");
    write_file(dir, "stsb/sts-test.csv",
               "g\tf\t2014\t1\t4.0\tA man plays the flute.\tTwo birds sing on a branch.\t"
               "extra\tfields\n");
    ll_eval_env env = f->env;
    env.data_dir = dir;
    env.cache = NULL;
    json_t *res = run_env(&env, "{\"tasks\": [\"selfsim_words\"], \"details\": true, "
                                "\"layers\": [0, 4]}");
    /* distinct: flute x2, cat, Hi, dog, sun, birds = 7 */
    char **pool, *bufs[3];
    int n_pool = count_distinct(dir, stsb_files, 3, &pool, bufs);
    assert_int_equal(n_pool, 7);
    for (int k = 0; k < 2; k++) {
        const char *model = k ? "clip" : "gpt2";
        json_t *mr = model_result(res, "selfsim_words", model);
        json_t *sm = json_object_get(mr, "selection_method");
        assert_int_equal(jint(sm, "n_requested"), 10000);
        assert_int_equal(jint(sm, "n_drawn"), 7);
        assert_int_equal(jint(sm, "n_available"), 7);
        assert_true(json_is_true(json_object_get(sm, "capped")));
        json_t *texts = check_selection_rules(mr, k ? f->clip : f->gpt2, pool, n_pool);
        assert_int_equal(json_array_size(texts), 7); /* each distinct sentence once */
        if (k == 0) {
            /* "Hi" is one GPT-2 token, at position 0: nothing to draw */
            assert_int_equal(jint(mr, "n"), 6);
            assert_int_equal(jint(mr, "n_skipped"), 1);
            json_t *s = json_array_get(json_object_get(mr, "skipped"), 0);
            assert_string_equal(json_string_value(json_object_get(s, "text")), "Hi");
            assert_string_equal(json_string_value(json_object_get(s, "file")),
                                "stsb/sts-train.csv");
            assert_int_equal(jint(s, "line"), 3);
            assert_non_null(strstr(json_string_value(json_object_get(s, "reason")),
                                   "position 0 is never drawn"));
        } else {
            assert_int_equal(jint(mr, "n"), 7); /* CLIP: "hi" sits at position 1 */
        }
    }
    json_t *data = json_object_get(json_object_get(res, "data"), "selfsim_words");
    assert_int_equal(jint(data, "n_skipped"), 1); /* the line without tabs */
    assert_non_null(strstr(json_string_value(json_object_get(json_array_get(
                               json_object_get(data, "skipped"), 0), "reason")),
                           "stsb/sts-dev.csv"));
    json_decref(res);
    free(pool);
    for (int i = 0; i < 3; i++) free(bufs[i]);

    /* the reference selection needs sts-dev only; sampled every split */
    remove_file(dir, "stsb/sts-train.csv");
    expect_refused_env(&env, "{\"tasks\": [\"selfsim_words\"]}", "sts-train.csv is missing");
    res = run_env(&env, "{\"tasks\": [\"selfsim_words\"], \"method\": {\"selfsim_words\": "
                        "\"reference\"}, \"layers\": [0]}");
    json_t *sm = json_object_get(model_result(res, "selfsim_words", "gpt2"), "selection_method");
    assert_string_equal(json_string_value(json_object_get(sm, "name")), "reference");
    assert_true(json_is_false(json_object_get(sm, "default")));
    json_decref(res);
    remove_file(dir, "stsb/sts-dev.csv");
    remove_file(dir, "stsb/sts-test.csv");
    rmdir(stsb);
    rmdir(dir);
}

static void test_method_errors(void **state) {
    (void)state;
    expect_refused("{\"tasks\": [\"selfsim_words\"], \"method\": {\"selfsim_words\": \"random\"}}",
                   "method.selfsim_words");
    expect_refused("{\"tasks\": [\"selfsim_words\"], \"method\": {\"selfsim_words_n\": 0}}",
                   "method.selfsim_words_n");
    expect_refused("{\"tasks\": [\"selfsim_words\"], \"method\": {\"selfsim_words_seed\": -1}}",
                   "method.selfsim_words_seed");
    expect_refused("{\"tasks\": [\"selfsim_words\"], \"method\": {\"selfsim_words\": "
                   "\"reference\", \"selfsim_words_n\": 500}}", "sampled selection only");
    /* explicit items: every model's tokens are checked, the item named */
    fixture *f = fx();
    ll_tokens tk = {0};
    ll_eval_text t = {"A young child is riding a horse.", 0, LL_EV_INDEX_GIVEN};
    ll_eval_pick pk;
    ll_error err = {{0}};
    assert_int_equal(ll_eval_input_build(f->clip, LL_EV_CWE, &t, &tk, &pk, &err), 0);
    int n_clip = pk.n_text;
    ll_tokens_free(&tk);
    char body[512];
    snprintf(body, sizeof body, "{\"items\": [[\"a cat\", 0], [\"%s\", %d]], \"models\": "
             "[\"clip\"]}", t.text, n_clip);
    expect_refused(body, "items[1]");
    expect_refused(body, "out of range");
    snprintf(body, sizeof body, "{\"items\": [[\"a cat\", 0], [\"%s\", %d], [\"a dog\", 1]], "
             "\"models\": [\"clip\"], \"layers\": [0]}", t.text, n_clip - 1);
    json_t *res = run(body);
    assert_int_equal(jint(model_result(res, "custom_items", "clip"), "n"), 3);
    json_decref(res);
    expect_refused("{\"items\": [[\"a cat\", 0], [\"a dog\", -2]]}", "items[1]");
    expect_refused("{\"items\": [[\"a cat\", 0], \"a dog\"]}", "items[1]");
}

/* ---- custom pairs are scored like the built-in sets ------------------------- */

/* RG65's pairs given as custom pairs: the same cosines and scores as the
 * task, exactly; the first STS-B pairs as custom sentence pairs: the
 * reference's per-pair cosines (third-party code, 2e-5 as in test_eval.c). */
static void test_custom_pairs_like_builtin(void **state) {
    (void)state;
    fixture *f = fx();
    ll_error err = {{0}};
    ll_bench *b = ll_bench_load(f->data_dir, ll_task_find("rg65"), &err);
    assert_non_null(b);
    json_t *pairs = json_array();
    for (int i = 0; i < b->n; i++)
        json_array_append_new(pairs, json_pack("[s, s, f]", b->items[i].a, b->items[i].b,
                                               b->items[i].gold));
    ll_bench_free(b);
    json_t *body = json_pack("{s:[s], s:o, s:s, s:i, s:b}", "tasks", "rg65", "pairs", pairs,
                             "pairs_type", "words", "bootstrap", 0, "details", 1);
    char *text = json_dumps(body, 0);
    json_t *res = run(text);
    free(text);
    json_decref(body);
    const char *models[] = {"gpt2", "clip"};
    for (int k = 0; k < 2; k++) {
        json_t *a = model_result(res, "rg65", models[k]);
        json_t *c = model_result(res, "custom_pairs", models[k]);
        assert_int_equal(jint(a, "n"), jint(c, "n"));
        assert_true(json_equal(json_object_get(a, "variant"), json_object_get(c, "variant")));
        assert_true(json_equal(json_object_get(a, "per_item"), json_object_get(c, "per_item")));
        for (int l = 0; l <= 4; l++) assert_true(layer_score(a, l) == layer_score(c, l));
    }
    json_decref(res);

    enum { N = 150 };
    b = ll_bench_load(f->data_dir, ll_task_find("stsb"), &err);
    assert_non_null(b);
    pairs = json_array();
    for (int i = 0; i < N; i++)
        json_array_append_new(pairs, json_pack("[s, s, f]", b->items[i].a, b->items[i].b,
                                               b->items[i].gold));
    ll_bench_free(b);
    body = json_pack("{s:o, s:b}", "pairs", pairs, "details", 1);
    text = json_dumps(body, 0);
    res = run(text);
    free(text);
    json_decref(body);
    json_t *ref = tu_load_json("fixtures/reference/eval-tiny.json");
    json_t *per = json_object_get(json_object_get(json_object_get(ref, "tasks"), "stsb"),
                                  "per_pair_cosines");
    for (int k = 0; k < 2; k++) {
        json_t *c = model_result(res, "custom_pairs", models[k]);
        assert_string_equal(json_string_value(json_object_get(c, "variant")), models[k]);
        json_t *got = json_object_get(c, "per_item"), *want = json_object_get(per, models[k]);
        double worst = 0;
        for (int l = 0; l <= 4; l++)
            for (int i = 0; i < N; i++) {
                double d = fabs(json_number_value(json_array_get(json_array_get(got, l), i)) -
                                json_number_value(json_array_get(json_array_get(want, l), i)));
                worst = d > worst ? d : worst;
            }
        printf("  %d STS-B pairs as custom pairs, %s: cosines within %.1e of the reference\n",
               N, models[k], worst);
        assert_true(worst <= 2e-5);
    }
    json_decref(ref);
    json_decref(res);
}

/* ---- sentence "last", CLIP's final and projected rows ------------------------ */

static void test_last_and_extra_rows(void **state) {
    (void)state;
    fixture *f = fx();
    json_t *ref = tu_load_json("fixtures/reference/clip-tiny.json");
    const ll_config *cfg = ll_model_config(f->clip);
    int W = cfg->width, P = cfg->proj_dim, L = cfg->n_layer;
    ll_layer_sel sel = {3, {L, LL_LAYER_FINAL, LL_LAYER_PROJECTED}};
    float *out[3] = {malloc(W * sizeof(float)), malloc(W * sizeof(float)),
                     malloc(P * sizeof(float))};
    float *mean[3] = {malloc(W * sizeof(float)), malloc(W * sizeof(float)),
                      malloc(P * sizeof(float))};
    ll_eval_env env = f->env;
    env.cache = NULL;
    double worst = 0;
    size_t i;
    json_t *c;
    json_array_foreach(ref, i, c) {
        ll_eval_text t = {json_string_value(json_object_get(c, "text")), 0, 0};
        ll_tokens tk = {0};
        ll_eval_pick pk;
        ll_error err = {{0}};
        assert_int_equal(ll_eval_input_build(f->clip, LL_EV_SENT_EOS, &t, &tk, &pk, &err), 0);
        json_t *ids = json_object_get(c, "token_ids");
        assert_int_equal(tk.n, (int)json_array_size(ids));
        for (int k = 0; k < tk.n; k++)
            assert_int_equal(tk.ids[k], json_integer_value(json_array_get(ids, k)));
        int eos = (int)jint(c, "eos_index");
        assert_int_equal(pk.begin, eos);
        ll_tokens_free(&tk);
        unsigned char ok = 0;
        long done = 0;
        assert_int_equal(ll_eval_vectors(&env, f->clip, LL_EV_SENT_EOS, &t, 1, &sel, out, NULL,
                                         &ok, NULL, &done, 1, &err), 0);
        assert_int_equal(ok, 1);
        double d[3];
        d[0] = tu_max_abs_diff(out[0], json_array_get(json_array_get(json_object_get(c, "layers"),
                                                                     L), eos), W);
        d[1] = tu_max_abs_diff(out[1], json_object_get(c, "pooled"), W);
        d[2] = tu_max_abs_diff(out[2], json_object_get(c, "projected"), P);
        for (int k = 0; k < 3; k++) worst = d[k] > worst ? d[k] : worst;
        if (d[0] > TOL_STATE || d[1] > TOL_STATE || d[2] > TOL_STATE)
            fail_msg("'%s': layer %d / final / projected off by %.1e %.1e %.1e", t.text, L, d[0],
                     d[1], d[2]);
        /* "mean": the final row is the mean of final_ln over the text's own
         * tokens; projected stays the end token's */
        if (eos < 2) continue;
        assert_int_equal(ll_eval_vectors(&env, f->clip, LL_EV_SENT_MEAN, &t, 1, &sel, mean, NULL,
                                         &ok, NULL, &done, 2, &err), 0);
        json_t *fl = json_object_get(c, "final_ln");
        double dm = 0;
        for (int w = 0; w < W; w++) {
            double acc = 0;
            for (int p = 1; p < eos; p++)
                acc += json_number_value(json_array_get(json_array_get(fl, p), w));
            dm = fmax(dm, fabs(mean[1][w] - acc / (eos - 1)));
        }
        assert_true(dm <= TOL_STATE);
        assert_true(tu_max_abs_diff(mean[2], json_object_get(c, "projected"), P) <= TOL_STATE);
    }
    printf("  %zu CLIP inputs: layer %d, final and projected rows within %.1e\n",
           json_array_size(ref), L, worst);
    for (int k = 0; k < 3; k++) free(out[k]), free(mean[k]);
    json_decref(ref);

    /* "last" is the text's last token: GPT-2 the sentence alone (= the plain
     * word input), CLIP the token before its end token (= its word input) */
    const char *texts[] = {"a man is playing a guitar", "two dogs run"};
    for (int m = 0; m < 2; m++) {
        const ll_model *model = m ? f->clip : f->gpt2;
        int C = ll_model_config(model)->width, top = ll_model_config(model)->n_layer;
        ll_layer_sel s1 = {2, {0, top}};
        float *a[2] = {malloc(2 * C * sizeof(float)), malloc(2 * C * sizeof(float))};
        float *b[2] = {malloc(2 * C * sizeof(float)), malloc(2 * C * sizeof(float))};
        ll_eval_text tt[2] = {{texts[0], 0, 0}, {texts[1], 0, 0}};
        unsigned char ok[2];
        long done = 0;
        ll_error err = {{0}};
        assert_int_equal(ll_eval_vectors(&env, model, LL_EV_SENT_LAST, tt, 2, &s1, a, NULL, ok,
                                         NULL, &done, 4, &err), 0);
        assert_int_equal(ll_eval_vectors(&env, model, LL_EV_WORD_PLAIN, tt, 2, &s1, b, NULL, ok,
                                         NULL, &done, 4, &err), 0);
        for (int j = 0; j < 2; j++) assert_memory_equal(a[j], b[j], 2 * C * sizeof(float));
        for (int j = 0; j < 2; j++) free(a[j]), free(b[j]);
    }
}

/* ---- extras per layer ---------------------------------------------------------- */

static void test_extras_by_hand(void **state) {
    (void)state;
    fixture *f = fx();
    const char *s[] = {"a cat sits", "the dog barks loudly", "my car is red", "rain again",
                       "two birds"};
    json_t *res = run("{\"items\": [\"a cat sits\", \"the dog barks loudly\", \"my car is red\", "
                      "\"rain again\", \"two birds\"], \"models\": [\"gpt2\"], "
                      "\"layers\": [1, 3]}");
    json_t *mr = model_result(res, "custom_items", "gpt2");
    int C = ll_model_config(f->gpt2)->width;
    ll_layer_sel sel = {2, {1, 3}};
    float *v[2] = {malloc(5 * C * sizeof(float)), malloc(5 * C * sizeof(float))};
    ll_eval_text t[5];
    for (int i = 0; i < 5; i++) t[i] = (ll_eval_text){s[i], 0, 0};
    unsigned char ok[5];
    long done = 0;
    ll_error err = {{0}};
    ll_eval_env env = f->env;
    env.cache = NULL;
    assert_int_equal(ll_eval_vectors(&env, f->gpt2, LL_EV_SENT_EOS, t, 5, &sel, v, NULL, ok,
                                     NULL, &done, 5, &err), 0);
    for (int j = 0; j < 2; j++) {
        double norm = 0, mu[4096] = {0};
        assert_true(C <= 4096);
        for (int i = 0; i < 5; i++) {
            double nn = 0;
            for (int c = 0; c < C; c++) nn += (double)v[j][i * C + c] * v[j][i * C + c];
            norm += sqrt(nn) / 5;
            for (int c = 0; c < C; c++) mu[c] += v[j][i * C + c] / 5.0;
        }
        double sum = 0, csum = 0;
        for (int a = 0; a < 5; a++)
            for (int b = a + 1; b < 5; b++) {
                double d = 0, na = 0, nb = 0, cd = 0, cna = 0, cnb = 0;
                for (int c = 0; c < C; c++) {
                    double x = v[j][a * C + c], y = v[j][b * C + c];
                    d += x * y, na += x * x, nb += y * y;
                    cd += (x - mu[c]) * (y - mu[c]);
                    cna += (x - mu[c]) * (x - mu[c]), cnb += (y - mu[c]) * (y - mu[c]);
                }
                sum += d / sqrt(na * nb), csum += cd / sqrt(cna * cnb);
            }
        json_t *L = json_array_get(json_object_get(mr, "layers"), j);
        assert_true(fabs(json_number_value(json_object_get(L, "score")) - sum / 10) < 1e-9);
        assert_true(fabs(json_number_value(json_object_get(L, "mean_norm")) - norm) < 1e-6 * norm);
        assert_true(fabs(json_number_value(json_object_get(L, "centered_self_similarity")) -
                         csum / 10) < 1e-9);
    }
    free(v[0]), free(v[1]);
    json_decref(res);
}

int main(void) {
    openblas_set_num_threads(1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sampled_rules),
        cmocka_unit_test(test_sampled_same_for_every_layer),
        cmocka_unit_test(test_sampled_seed),
        cmocka_unit_test(test_sampled_default_n),
        cmocka_unit_test(test_sampled_small_pool),
        cmocka_unit_test(test_method_errors),
        cmocka_unit_test(test_custom_pairs_like_builtin),
        cmocka_unit_test(test_last_and_extra_rows),
        cmocka_unit_test(test_extras_by_hand),
    };
    return cmocka_run_group_tests(tests, NULL, teardown);
}
