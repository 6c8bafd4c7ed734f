/* test_eval.c - the evaluation driver against the reference results of
 * fixtures/reference/eval-tiny.json (third-party model code + scipy), on the
 * tiny checkpoints and the benchmark files of ../shared/data/benchmarks.
 *
 * Tolerances are the file's own `suggested_tolerance` for the per-layer
 * results (1e-4 Spearman, 2e-4 ws353_sim/ws353_rel, 1e-5 ValNorm's Pearson,
 * 5e-6 self-similarities) and the fixtures README's for the per-item values
 * (cosines 2e-5, effect sizes 5e-5) and the sample states (1e-4); token ids
 * and the selfsim_words selection must match exactly.
 *
 * Besides: undefined statistics come back as null with a reason, a repeated
 * evaluation is answered from the cache without a forward pass, progress
 * and cancellation, thresholds, the paired bootstrap, custom data and the
 * request's validation. */
#include "testutil.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "layerlens/eval.h"

#define TOL_COSINE 2e-5
#define TOL_EFFECT 5e-5
#define TOL_STATE 1e-4

typedef struct fixture {
    ll_model *gpt2, *clip;
    ll_eval_local *local;
    ll_eval_cache *cache;
    ll_eval_env env;
    json_t *ref;
    char data_dir[4200];
} fixture;

static fixture F;

static int setup(void **state) {
    (void)state;
    return 0;
}

/* Loads the models and the reference once, on first use (tu_shared skips
 * when ../shared is missing, which a group setup cannot do). */
static fixture *fx(void) {
    if (F.ref) return &F;
    ll_error err = {{0}};
    snprintf(F.data_dir, sizeof F.data_dir, "%s", tu_path("data/benchmarks"));
    F.gpt2 = ll_model_load(tu_path("fixtures/models/gpt2-tiny"), &err);
    if (!F.gpt2) fail_msg("%s", err.msg);
    F.clip = ll_model_load(tu_path("fixtures/models/clip-tiny"), &err);
    if (!F.clip) fail_msg("%s", err.msg);
    F.local = ll_eval_local_new(2048, &err);
    F.cache = ll_eval_cache_new((size_t)256 << 20, &err);
    assert_non_null(F.local);
    assert_non_null(F.cache);
    F.env = (ll_eval_env){F.data_dir, F.gpt2, F.clip, ll_eval_local_embed, F.local, 0,
                          F.cache, NULL, NULL, NULL};
    F.ref = tu_load_json("fixtures/reference/eval-tiny.json");
    return &F;
}

static int teardown(void **state) {
    (void)state;
    ll_model_free(F.gpt2), ll_model_free(F.clip);
    ll_eval_local_free(F.local);
    ll_eval_cache_free(F.cache);
    json_decref(F.ref);
    return 0;
}

/* Runs a request given as JSON text; fails the test on any error. */
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

/* The request's error message, or fails when it is accepted. */
static void expect_refused(const char *body_text, const char *needle) {
    json_t *body = json_loads(body_text, 0, NULL);
    assert_non_null(body);
    ll_error err = {{0}};
    ll_eval_request *req = ll_eval_request_parse(body, &fx()->env, &err);
    json_decref(body);
    if (req) {
        ll_eval_request_free(req);
        fail_msg("accepted: %s", body_text);
    }
    if (!strstr(err.msg, needle)) fail_msg("error '%s' does not mention '%s'", err.msg, needle);
}

static json_t *model_result(json_t *res, const char *task, const char *model) {
    json_t *m = json_object_get(json_object_get(json_object_get(res, "results"), task), model);
    if (!m) fail_msg("no result for %s/%s", task, model);
    return m;
}

static double tolerance(const char *task) {
    json_t *t = json_object_get(json_object_get(json_object_get(fx()->ref, "suggested_tolerance"),
                                                "results_abs"), task);
    assert_true(json_is_number(t));
    return json_number_value(t);
}

/* Every layer's score of task/model against the reference variant. */
static double check_scores(json_t *res, const char *task, const char *model,
                           const char *variant) {
    json_t *mr = model_result(res, task, model);
    json_t *ref = json_object_get(json_object_get(json_object_get(json_object_get(
                                      fx()->ref, "tasks"), task), "results"), variant);
    json_t *layers = json_object_get(mr, "layers");
    assert_int_equal(json_array_size(layers), json_array_size(ref));
    assert_string_equal(json_string_value(json_object_get(mr, "variant")), variant);
    double tol = tolerance(task), worst = 0;
    for (size_t l = 0; l < json_array_size(ref); l++) {
        json_t *L = json_array_get(layers, l);
        assert_int_equal(json_integer_value(json_object_get(L, "layer")), (json_int_t)l);
        json_t *s = json_object_get(L, "score");
        if (!json_is_number(s)) fail_msg("%s/%s layer %zu: no score", task, model, l);
        double d = fabs(json_number_value(s) - json_number_value(json_array_get(ref, l)));
        if (d > worst) worst = d;
        if (d > tol)
            fail_msg("%s %s layer %zu: %.9f vs reference %.9f (|d| %.2e > %.0e)", task, variant,
                     l, json_number_value(s), json_number_value(json_array_get(ref, l)), d, tol);
        /* the interval holds the score */
        json_t *ci = json_object_get(L, "ci");
        if (json_is_array(ci)) {
            assert_true(json_number_value(json_array_get(ci, 0)) <= json_number_value(s));
            assert_true(json_number_value(json_array_get(ci, 1)) >= json_number_value(s));
        }
    }
    printf("  %-18s %-11s max |diff| %.2e (tol %.0e)\n", task, variant, worst, tol);
    return worst;
}

/* Per-item values ([layer][item]) against the reference's. */
static void check_items(json_t *res, const char *task, const char *model, const char *variant,
                        const char *ref_key, double tol) {
    json_t *got = json_object_get(model_result(res, task, model), "per_item");
    json_t *want = json_object_get(json_object_get(json_object_get(json_object_get(
                                       fx()->ref, "tasks"), task), ref_key), variant);
    assert_non_null(got);
    assert_non_null(want);
    assert_int_equal(json_array_size(got), json_array_size(want));
    double worst = 0;
    for (size_t l = 0; l < json_array_size(want); l++) {
        json_t *g = json_array_get(got, l), *w = json_array_get(want, l);
        assert_int_equal(json_array_size(g), json_array_size(w));
        for (size_t i = 0; i < json_array_size(w); i++) {
            json_t *gi = json_array_get(g, i);
            if (!json_is_number(gi)) fail_msg("%s %s: item %zu has no value", task, variant, i);
            double d = fabs(json_number_value(gi) - json_number_value(json_array_get(w, i)));
            if (d > worst) worst = d;
        }
    }
    printf("  %-18s %-11s %s max |diff| %.2e (tol %.0e)\n", task, variant, ref_key, worst, tol);
    if (worst > tol) fail_msg("%s %s %s: %.2e > %.0e", task, variant, ref_key, worst, tol);
}

static const char *const word_tasks[] = {"rg65", "ws353", "ws353_sim", "ws353_rel",
                                         "simlex999", "simverb3500"};

/* Item counts and the parse checks of the reference. */
static void check_counts(json_t *res, const char *task, const char *model) {
    json_t *t = json_object_get(json_object_get(fx()->ref, "tasks"), task);
    json_t *n = json_object_get(t, "n_pairs");
    if (!n) n = json_object_get(t, "n_words");
    if (!n) n = json_object_get(t, "n_sentences");
    if (!n) n = json_object_get(t, "n_vectors");
    json_t *mr = model_result(res, task, model);
    assert_int_equal(json_integer_value(json_object_get(mr, "n")), json_integer_value(n));
    assert_int_equal(json_integer_value(json_object_get(mr, "n_skipped")), 0);
    json_t *data = json_object_get(json_object_get(res, "data"), task);
    assert_int_equal(json_integer_value(json_object_get(data, "n")), json_integer_value(n));
    json_t *sha = json_object_get(json_object_get(json_object_get(fx()->ref, "data_files"),
                                                  task), "sha256");
    if (sha)
        assert_string_equal(json_string_value(json_object_get(data, "sha256")),
                            json_string_value(sha));
}

static void test_word_tasks_bos(void **state) {
    (void)state;
    json_t *res = run("{\"tasks\": [\"rg65\", \"ws353\", \"ws353_sim\", \"ws353_rel\", "
                      "\"simlex999\", \"simverb3500\", \"valnorm\"], \"details\": true, "
                      "\"bootstrap\": 0}");
    for (size_t i = 0; i < sizeof word_tasks / sizeof *word_tasks; i++) {
        check_scores(res, word_tasks[i], "clip", "clip");
        check_scores(res, word_tasks[i], "gpt2", "gpt2_bos");
        check_items(res, word_tasks[i], "clip", "clip", "per_pair_cosines", TOL_COSINE);
        check_items(res, word_tasks[i], "gpt2", "gpt2_bos", "per_pair_cosines", TOL_COSINE);
        check_counts(res, word_tasks[i], "clip");
        check_counts(res, word_tasks[i], "gpt2");
    }
    check_scores(res, "valnorm", "clip", "clip");
    check_scores(res, "valnorm", "gpt2", "gpt2_bos");
    check_items(res, "valnorm", "clip", "clip", "per_word_effect_sizes", TOL_EFFECT);
    check_items(res, "valnorm", "gpt2", "gpt2_bos", "per_word_effect_sizes", TOL_EFFECT);
    check_counts(res, "valnorm", "gpt2");
    json_decref(res);
}

static void test_word_tasks_plain(void **state) {
    (void)state;
    json_t *res = run("{\"tasks\": [\"rg65\", \"ws353\", \"ws353_sim\", \"ws353_rel\", "
                      "\"simlex999\", \"simverb3500\", \"valnorm\"], \"models\": [\"gpt2\"], "
                      "\"method\": {\"word\": \"plain\"}, \"details\": true, \"bootstrap\": 0}");
    for (size_t i = 0; i < sizeof word_tasks / sizeof *word_tasks; i++) {
        check_scores(res, word_tasks[i], "gpt2", "gpt2_plain");
        check_items(res, word_tasks[i], "gpt2", "gpt2_plain", "per_pair_cosines", TOL_COSINE);
    }
    check_scores(res, "valnorm", "gpt2", "gpt2_plain");
    check_items(res, "valnorm", "gpt2", "gpt2_plain", "per_word_effect_sizes", TOL_EFFECT);
    json_decref(res);
}

/* The selfsim_words token selection, exactly. */
static void check_selection(json_t *res, const char *model) {
    json_t *got = json_object_get(model_result(res, "selfsim_words", model), "selection");
    json_t *want = json_object_get(json_object_get(json_object_get(json_object_get(
                                       fx()->ref, "tasks"), "selfsim_words"), "selection"), model);
    assert_non_null(got);
    const char *keys[] = {"n_text_tokens", "token_index", "token_id"};
    for (int k = 0; k < 3; k++) {
        json_t *g = json_object_get(got, keys[k]), *w = json_object_get(want, keys[k]);
        assert_int_equal(json_array_size(g), json_array_size(w));
        for (size_t i = 0; i < json_array_size(w); i++)
            if (json_integer_value(json_array_get(g, i)) != json_integer_value(json_array_get(w, i)))
                fail_msg("selfsim_words %s %s[%zu]: %lld vs %lld", model, keys[k], i,
                         (long long)json_integer_value(json_array_get(g, i)),
                         (long long)json_integer_value(json_array_get(w, i)));
    }
}

static void test_sentence_tasks(void **state) {
    (void)state;
    json_t *res = run("{\"tasks\": [\"stsb\", \"selfsim_sentences\", \"selfsim_words\"], "
                      "\"method\": {\"selfsim_words\": \"reference\"}, "
                      "\"details\": true, \"bootstrap\": 0}");
    const char *tasks[] = {"stsb", "selfsim_sentences", "selfsim_words"};
    for (int i = 0; i < 3; i++) {
        check_scores(res, tasks[i], "clip", "clip");
        check_scores(res, tasks[i], "gpt2", "gpt2");
        check_counts(res, tasks[i], "clip");
        check_counts(res, tasks[i], "gpt2");
    }
    check_items(res, "stsb", "clip", "clip", "per_pair_cosines", TOL_COSINE);
    check_items(res, "stsb", "gpt2", "gpt2", "per_pair_cosines", TOL_COSINE);
    check_selection(res, "clip");
    check_selection(res, "gpt2");
    /* self-similarity: the lowest layer is the best, with a U-statistic interval */
    json_t *mr = model_result(res, "selfsim_words", "gpt2");
    assert_int_equal(json_integer_value(json_object_get(mr, "best_layer")), 0);
    assert_string_equal(json_string_value(json_object_get(mr, "metric")), "self_similarity");
    json_decref(res);
}

/* ---- samples: inputs and states of single texts -------------------------- */

static ll_eval_variant sample_variant(const char *task, const char *variant) {
    if (!strcmp(task, "selfsim_words")) return LL_EV_CWE;
    if (!strcmp(task, "stsb") || !strcmp(task, "selfsim_sentences")) return LL_EV_SENT_EOS;
    return strcmp(variant, "gpt2_plain") ? LL_EV_WORD_BOS : LL_EV_WORD_PLAIN;
}

static void check_sample(const char *task, const char *variant, json_t *s) {
    fixture *f = fx();
    const ll_model *m = !strncmp(variant, "clip", 4) ? f->clip : f->gpt2;
    ll_eval_variant v = sample_variant(task, variant);
    json_t *k = json_object_get(s, "k");
    ll_eval_text t = {json_string_value(json_object_get(s, "text")),
                      k ? (long)json_integer_value(k) : 0, k != NULL};
    ll_tokens tk = {0};
    ll_eval_pick pick;
    ll_error err = {{0}};
    if (ll_eval_input_build(m, v, &t, &tk, &pick, &err)) fail_msg("%s: %s", t.text, err.msg);
    json_t *ids = json_object_get(s, "token_ids");
    assert_int_equal(tk.n, (int)json_array_size(ids));
    for (int i = 0; i < tk.n; i++)
        assert_int_equal(tk.ids[i], json_integer_value(json_array_get(ids, i)));
    assert_int_equal(pick.begin, json_integer_value(json_object_get(s, "position")));
    assert_int_equal(pick.end, pick.begin + 1);
    if (k) assert_int_equal(pick.token_index, json_integer_value(json_object_get(s, "token_index")));
    ll_tokens_free(&tk);

    /* the states through the driver's embedding path (no cache) */
    int L = ll_model_config(m)->n_layer, dim = ll_model_config(m)->width;
    ll_layer_sel sel = {2, {0, L}};
    float *out[2] = {malloc(dim * sizeof(float)), malloc(dim * sizeof(float))};
    unsigned char ok = 0;
    long done = 0;
    ll_eval_env env = f->env;
    env.cache = NULL;
    assert_int_equal(ll_eval_vectors(&env, m, v, &t, 1, &sel, out, NULL, &ok, NULL, &done, 1,
                                     &err), 0);
    assert_int_equal(ok, 1);
    assert_int_equal(done, 1);
    double d0 = tu_max_abs_diff(out[0], json_object_get(s, "layer_0"), dim);
    double dl = tu_max_abs_diff(out[1], json_object_get(s, "layer_last"), dim);
    if (d0 > TOL_STATE || dl > TOL_STATE)
        fail_msg("%s %s '%s': states off by %.2e / %.2e", task, variant, t.text, d0, dl);
    free(out[0]), free(out[1]);
}

static void test_samples(void **state) {
    (void)state;
    json_t *tasks = json_object_get(fx()->ref, "tasks");
    const char *task;
    json_t *t;
    int n = 0;
    json_object_foreach(tasks, task, t) {
        const char *variant;
        json_t *list;
        json_object_foreach(json_object_get(t, "samples"), variant, list) {
            size_t i;
            json_t *s;
            json_array_foreach(list, i, s) check_sample(task, variant, s), n++;
        }
    }
    printf("  %d samples: ids exact, states within %.0e\n", n, TOL_STATE);
    assert_true(n >= 100);
}

/* ---- undefined statistics ------------------------------------------------- */

static void test_undefined_is_null(void **state) {
    (void)state;
    /* n < 3 pairs: no correlation at any layer */
    json_t *res = run("{\"pairs\": [[\"cat\", \"dog\", 1], [\"sun\", \"moon\", 2]], "
                      "\"models\": [\"gpt2\"]}");
    json_t *mr = model_result(res, "custom_pairs", "gpt2");
    assert_true(json_is_null(json_object_get(mr, "best_layer")));
    json_t *L = json_array_get(json_object_get(mr, "layers"), 2);
    assert_true(json_is_null(json_object_get(L, "score")));
    assert_true(json_is_null(json_object_get(L, "ci")));
    assert_non_null(strstr(json_string_value(json_object_get(L, "reason")), "3"));
    json_decref(res);

    /* constant cosines: every pair is a word with itself (cosine exactly 1) */
    res = run("{\"pairs\": [[\"cat\", \"cat\", 1], [\"sun\", \"sun\", 2], [\"red\", \"red\", 3], "
              "[\"tree\", \"tree\", 4]], \"models\": [\"clip\"]}");
    mr = model_result(res, "custom_pairs", "clip");
    json_t *layers = json_object_get(mr, "layers");
    assert_int_equal(json_array_size(layers), 5);
    for (size_t l = 0; l < 5; l++) {
        L = json_array_get(layers, l);
        assert_true(json_is_null(json_object_get(L, "score")));
        assert_non_null(strstr(json_string_value(json_object_get(L, "reason")), "constant"));
        assert_int_equal(json_integer_value(json_object_get(L, "n")), 4);
    }
    /* no NaN anywhere: the text form parses back */
    char *text = json_dumps(res, 0);
    assert_non_null(text);
    assert_null(strstr(text, "nan"));
    free(text);
    json_decref(res);

    /* constant gold */
    res = run("{\"pairs\": [[\"cat\", \"dog\", 5], [\"sun\", \"moon\", 5], [\"red\", \"blue\", 5], "
              "[\"car\", \"tree\", 5]], \"models\": [\"gpt2\"], \"layers\": [1]}");
    L = json_array_get(json_object_get(model_result(res, "custom_pairs", "gpt2"), "layers"), 0);
    assert_true(json_is_null(json_object_get(L, "score")));
    assert_non_null(json_object_get(L, "reason"));
    json_decref(res);
}

/* ---- the cache ----------------------------------------------------------------- */

static void test_cache_answers_repeat(void **state) {
    (void)state;
    fixture *f = fx();
    ll_error err = {{0}};
    ll_eval_local *local = ll_eval_local_new(512, &err);
    ll_eval_cache *cache = ll_eval_cache_new((size_t)64 << 20, &err);
    ll_eval_env env = f->env;
    env.embed_ctx = local;
    env.cache = cache;
    const char *body = "{\"tasks\": [\"rg65\", \"stsb\"], \"layers\": [0, 2, 4], "
                       "\"bootstrap\": 0}";
    json_t *a = run_env(&env, body);
    long passes = ll_eval_local_forwards(local);
    assert_true(passes > 1); /* 512-token passes: stsb needs several */
    json_t *b = run_env(&env, body);
    assert_int_equal(ll_eval_local_forwards(local), passes); /* no forward pass at all */
    assert_int_equal(json_integer_value(json_object_get(json_object_get(b, "timing"),
                                                        "texts_embedded")), 0);
    assert_true(json_equal(json_object_get(a, "results"), json_object_get(b, "results")));
    /* the weight format the scores were computed with is recorded */
    json_t *gm = json_object_get(json_object_get(a, "models"), "gpt2");
    assert_string_equal(json_string_value(json_object_get(gm, "dtype")), "f32");
    assert_int_equal(json_integer_value(json_object_get(gm, "n_layer")), 4);
    /* a subset of the layers is answered from the same entries */
    json_decref(run_env(&env, "{\"tasks\": [\"rg65\"], \"layers\": [2]}"));
    assert_int_equal(ll_eval_local_forwards(local), passes);
    /* another method is another key */
    json_decref(run_env(&env, "{\"tasks\": [\"rg65\"], \"models\": [\"gpt2\"], "
                              "\"method\": {\"word\": \"plain\"}, \"layers\": [2]}"));
    assert_true(ll_eval_local_forwards(local) > passes);
    ll_eval_cache_info info;
    ll_eval_cache_info_get(cache, &info);
    assert_true(info.hits > 0);
    assert_true(info.bytes <= info.max_bytes);
    json_decref(a), json_decref(b);

    /* a tiny budget keeps the cache bounded (and results unchanged) */
    ll_eval_cache *small = ll_eval_cache_new(16 << 10, &err);
    env.cache = small;
    json_t *c = run_env(&env, "{\"tasks\": [\"rg65\"], \"layers\": [0, 2, 4]}");
    ll_eval_cache_info_get(small, &info);
    assert_true(info.bytes <= (16 << 10));
    assert_true(info.evictions > 0);
    json_t *d = run_env(&env, "{\"tasks\": [\"rg65\"], \"layers\": [0, 2, 4]}");
    assert_true(json_equal(json_object_get(c, "results"), json_object_get(d, "results")));
    json_decref(c), json_decref(d);
    ll_eval_cache_free(small);
    ll_eval_cache_free(cache);
    ll_eval_local_free(local);
}

/* ---- progress and cancellation ------------------------------------------- */

typedef struct prog {
    long last_done, total, calls;
    int monotonic;
    atomic_int *cancel;
    long cancel_at;
} prog;

static void on_progress(void *ctx, long done, long total) {
    prog *p = ctx;
    if (done < p->last_done || done > total) p->monotonic = 0;
    p->last_done = done, p->total = total, p->calls++;
    if (p->cancel && done >= p->cancel_at) atomic_store(p->cancel, 1);
}

static void test_progress_and_cancel(void **state) {
    (void)state;
    fixture *f = fx();
    ll_error err = {{0}};
    ll_eval_local *local = ll_eval_local_new(256, &err);
    prog p = {0, 0, 0, 1, NULL, 0};
    ll_eval_env env = f->env;
    env.embed_ctx = local;
    env.cache = NULL;
    env.chunk_tokens = 256;
    env.progress = on_progress, env.progress_ctx = &p;
    json_decref(run_env(&env, "{\"tasks\": [\"stsb\"], \"layers\": [4]}"));
    assert_true(p.monotonic);
    assert_true(p.calls > 5);
    assert_int_equal(p.last_done, p.total);
    long total = p.total, full = ll_eval_local_forwards(local);

    atomic_int cancel = 0;
    prog q = {0, 0, 0, 1, &cancel, total / 4};
    env.progress_ctx = &q;
    env.cancel = &cancel;
    json_t *body = json_loads("{\"tasks\": [\"stsb\"], \"layers\": [4]}", 0, NULL);
    ll_eval_request *req = ll_eval_request_parse(body, &env, &err);
    json_decref(body);
    assert_non_null(req);
    long before = ll_eval_local_forwards(local);
    json_t *out = NULL;
    assert_int_equal(ll_eval_run(&env, req, &out, &err), LL_EVAL_CANCELLED);
    assert_null(out);
    assert_true(q.last_done < total / 2); /* stopped soon after the flag */
    assert_true(ll_eval_local_forwards(local) - before < full / 2);
    ll_eval_request_free(req);
    ll_eval_local_free(local);
}

/* ---- thresholds, comparison, custom data, layers -------------------------- */

static void test_thresholds(void **state) {
    (void)state;
    json_t *res = run("{\"tasks\": [\"rg65\"], \"thresholds\": {\"rg65\": {\"clip\": 0.1}}}");
    double best = json_number_value(json_object_get(model_result(res, "rg65", "clip"),
                                                    "best_score"));
    /* the reference's best CLIP layer is layer 1, 0.12912 */
    assert_true(fabs(best - 0.12912108989241827) < 1e-4);
    assert_true(json_is_true(json_object_get(res, "passed")));
    json_decref(res);
    res = run("{\"tasks\": [\"rg65\"], \"thresholds\": {\"rg65\": {\"clip\": 0.8, \"gpt2\": 0}}}");
    assert_true(json_is_false(json_object_get(res, "passed")));
    json_t *checks = json_object_get(res, "checks");
    assert_int_equal(json_array_size(checks), 2);
    json_decref(res);
    /* self-similarity: passed when the best (lowest) is at most the threshold */
    res = run("{\"tasks\": [\"selfsim_words\"], \"models\": [\"clip\"], "
              "\"method\": {\"selfsim_words\": \"reference\"}, "
              "\"thresholds\": {\"selfsim_words\": {\"clip\": 0.05}}}");
    assert_true(json_is_true(json_object_get(res, "passed")));
    json_decref(res);
    res = run("{\"tasks\": [\"rg65\"]}");
    assert_null(json_object_get(res, "passed"));
    json_decref(res);
}

static void test_bootstrap_comparison(void **state) {
    (void)state;
    const char *body = "{\"tasks\": [\"rg65\", \"valnorm\", \"selfsim_words\"], "
                       "\"method\": {\"selfsim_words\": \"reference\"}, \"bootstrap\": 200}";
    json_t *a = run(body), *b = run(body);
    json_t *c = json_object_get(json_object_get(a, "comparisons"), "rg65");
    assert_non_null(c);
    assert_string_equal(json_string_value(json_object_get(c, "a")), "clip");
    assert_string_equal(json_string_value(json_object_get(c, "b")), "gpt2");
    double diff = json_number_value(json_object_get(c, "difference"));
    double sc = json_number_value(json_object_get(model_result(a, "rg65", "clip"), "best_score"));
    double sg = json_number_value(json_object_get(model_result(a, "rg65", "gpt2"), "best_score"));
    assert_true(fabs(diff - (sc - sg)) < 1e-12);
    assert_int_equal(json_integer_value(json_object_get(c, "n_resamples")), 200);
    json_t *ci = json_object_get(c, "ci");
    assert_true(json_number_value(json_array_get(ci, 0)) < json_number_value(json_array_get(ci, 1)));
    assert_non_null(json_object_get(json_object_get(a, "comparisons"), "valnorm"));
    /* no gold, no comparison */
    assert_null(json_object_get(json_object_get(a, "comparisons"), "selfsim_words"));
    /* a fixed seed: the same interval twice */
    assert_true(json_equal(json_object_get(a, "comparisons"), json_object_get(b, "comparisons")));
    json_decref(a), json_decref(b);
}

static void test_custom_items_and_layers(void **state) {
    (void)state;
    /* explicit (sentence, token index) items = selfsim_words' first sentences */
    json_t *res = run("{\"items\": [[\"A man with a hard hat is dancing.\", 0], "
                      "[\"A man with a hard hat is dancing.\", 3], [\"A young child is riding a "
                      "horse.\", 1]], \"models\": [\"clip\"], \"details\": true, "
                      "\"layers\": [0, 4, \"final\", \"projected\"]}");
    json_t *mr = model_result(res, "custom_items", "clip");
    json_t *sel = json_object_get(mr, "selection");
    assert_int_equal(json_integer_value(json_array_get(json_object_get(sel, "token_index"), 1)), 3);
    assert_int_equal(json_integer_value(json_array_get(json_object_get(sel, "token_id"), 0)), 320);
    json_t *layers = json_object_get(mr, "layers");
    assert_int_equal(json_array_size(layers), 4);
    assert_string_equal(json_string_value(json_object_get(json_array_get(layers, 2), "layer")),
                        "final");
    assert_string_equal(json_string_value(json_object_get(json_array_get(layers, 3), "layer")),
                        "projected");
    /* best_layer counts integer layers only */
    json_int_t best = json_integer_value(json_object_get(mr, "best_layer"));
    assert_true(best == 0 || best == 4);
    json_decref(res);

    /* an index beyond the sentence is the client's error, naming the item
     * and the model (it used to skip the item) */
    expect_refused("{\"items\": [[\"a cat\", 0], [\"a dog\", 1], [\"a bird\", 7], "
                   "[\"a cow\", 0]], \"models\": [\"gpt2\"], \"layers\": \"0,4,final\"}",
                   "items[2] [\"a bird\", 7]: token index 7 is out of range");
    expect_refused("{\"items\": [[\"a cat\", 0], [\"a dog\", 1], [\"a bird\", 7], "
                   "[\"a cow\", 0]], \"models\": [\"gpt2\"]}", "for gpt2");
    res = run("{\"items\": [[\"a cat\", 0], [\"a dog\", 1], [\"a bird\", 1], [\"a cow\", 0]], "
              "\"models\": [\"gpt2\"], \"layers\": \"0,4,final\"}");
    mr = model_result(res, "custom_items", "gpt2");
    assert_int_equal(json_integer_value(json_object_get(mr, "n_skipped")), 0);
    assert_int_equal(json_integer_value(json_object_get(mr, "n")), 4);
    assert_int_equal(json_array_size(json_object_get(mr, "layers")), 2); /* final: CLIP only */
    assert_string_equal(json_string_value(json_object_get(json_object_get(mr, "selection_method"),
                                                          "name")), "explicit");
    json_decref(res);

    /* sentence pairs of custom data use the sentence method: cos(s, s) = 1 */
    res = run("{\"pairs\": [[\"a red car\", \"a red car\", 5], [\"the sun is hot\", \"a cold "
              "night\", 0], [\"a dog runs\", \"a dog is running\", 4], [\"rain\", \"a book\", 1]], "
              "\"details\": true, \"layers\": [3]}");
    mr = model_result(res, "custom_pairs", "gpt2");
    assert_string_equal(json_string_value(json_object_get(mr, "variant")), "gpt2");
    json_t *v = json_array_get(json_array_get(json_object_get(mr, "per_item"), 0), 0);
    assert_true(fabs(json_number_value(v) - 1.0) < 1e-12);
    json_decref(res);
}

static void test_sentence_variants(void **state) {
    (void)state;
    /* last/mean: a one-token sentence has the same vector either way */
    json_t *a = run("{\"pairs\": [[\"hello world\", \"hello\", 1], [\"good day\", \"day\", 2], "
                    "[\"one more\", \"more\", 3], [\"x y\", \"y\", 4]], \"models\": [\"gpt2\"], "
                    "\"method\": {\"sentence\": \"last\"}, \"details\": true, \"layers\": [0]}");
    json_t *mr = model_result(a, "custom_pairs", "gpt2");
    assert_string_equal(json_string_value(json_object_get(mr, "variant")), "gpt2_last");
    json_decref(a);
    a = run("{\"items\": [\"hello world\", \"good day\", \"one more\"], \"method\": "
            "{\"sentence\": \"mean\"}, \"layers\": [0]}");
    assert_string_equal(json_string_value(json_object_get(model_result(a, "custom_items", "clip"),
                                                          "variant")), "clip_mean");
    json_decref(a);
    /* mean pooling of GPT-2 layer 0 by hand: wte + wpe averaged */
    fixture *f = fx();
    ll_eval_text t = {"hello world", 0, 0};
    ll_tokens tk = {0};
    ll_eval_pick pk;
    ll_error err = {{0}};
    assert_int_equal(ll_eval_input_build(f->gpt2, LL_EV_SENT_MEAN, &t, &tk, &pk, &err), 0);
    assert_int_equal(pk.begin, 0);
    assert_int_equal(pk.end, tk.n);
    assert_int_equal(tk.n, 2);
    ll_forward_req req = {1, 0, 0, 0};
    ll_states st = {0};
    ll_workspace *ws = ll_workspace_new();
    ll_seq seq = {tk.ids, tk.n};
    assert_int_equal(ll_forward(f->gpt2, ws, &seq, 1, &req, &st, &err), 0);
    int C = st.width;
    float *v = malloc(C * sizeof(float));
    ll_layer_sel sel = {1, {0}};
    long done = 0;
    unsigned char ok;
    ll_eval_env env = f->env;
    env.cache = NULL;
    assert_int_equal(ll_eval_vectors(&env, f->gpt2, LL_EV_SENT_MEAN, &t, 1, &sel, &v, NULL, &ok,
                                     NULL, &done, 1, &err), 0);
    for (int c = 0; c < C; c++)
        assert_true(fabs(v[c] - 0.5 * ((double)st.layer[0][c] + st.layer[0][C + c])) < 1e-6);
    free(v);
    ll_states_free(&st);
    ll_workspace_free(ws);
    ll_tokens_free(&tk);
}

static void test_request_errors(void **state) {
    (void)state;
    expect_refused("{\"tasks\": [\"rg66\"]}", "unknown task 'rg66'");
    expect_refused("{\"tasks\": [\"rg65\"], \"models\": [\"bert\"]}", "unknown model");
    expect_refused("{\"tasks\": [\"rg65\"], \"layers\": [5]}", "out of range");
    expect_refused("{\"tasks\": [\"rg65\"], \"layers\": \"0,x\"}", "unknown layer 'x'");
    expect_refused("{\"tasks\": [\"rg65\"], \"method\": {\"word\": \"eos\"}}", "method.word");
    expect_refused("{\"tasks\": [\"rg65\"], \"method\": {\"sentence\": \"cls\"}}", "method.sentence");
    expect_refused("{\"tasks\": [\"rg65\"], \"bogus\": 1}", "unknown field 'bogus'");
    expect_refused("{}", "nothing to evaluate");
    expect_refused("{\"pairs\": [[\"a\", \"b\"]]}", "pairs[0]");
    expect_refused("{\"pairs\": [[\"a\", \"\", 1]]}", "pairs");
    expect_refused("{\"items\": [[\"a b\", -1]]}", "items[0]");
    expect_refused("{\"tasks\": [\"rg65\"], \"thresholds\": {\"stsb\": {\"clip\": 0.5}}}",
                   "not evaluated");
    expect_refused("{\"tasks\": [\"rg65\"], \"thresholds\": {\"rg65\": {\"clip\": \"high\"}}}",
                   "expected a number");
    /* no data directory: only custom data */
    fixture *f = fx();
    ll_eval_env env = f->env;
    env.data_dir = NULL;
    json_t *body = json_loads("{\"tasks\": [\"rg65\"]}", 0, NULL);
    ll_error err = {{0}};
    assert_null(ll_eval_request_parse(body, &env, &err));
    assert_non_null(strstr(err.msg, "--data"));
    json_decref(body);
    /* a model that is not loaded */
    env = f->env;
    env.gpt2 = NULL;
    body = json_loads("{\"tasks\": [\"rg65\"], \"models\": [\"gpt2\"]}", 0, NULL);
    assert_null(ll_eval_request_parse(body, &env, &err));
    assert_non_null(strstr(err.msg, "not loaded"));
    json_decref(body);
}

int main(void) {
    /* tiny models: OpenBLAS's thread pool would only spin */
    openblas_set_num_threads(1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_word_tasks_bos),
        cmocka_unit_test(test_word_tasks_plain),
        cmocka_unit_test(test_sentence_tasks),
        cmocka_unit_test(test_samples),
        cmocka_unit_test(test_undefined_is_null),
        cmocka_unit_test(test_cache_answers_repeat),
        cmocka_unit_test(test_progress_and_cancel),
        cmocka_unit_test(test_thresholds),
        cmocka_unit_test(test_bootstrap_comparison),
        cmocka_unit_test(test_custom_items_and_layers),
        cmocka_unit_test(test_sentence_variants),
        cmocka_unit_test(test_request_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
