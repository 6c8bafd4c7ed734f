/* test_eval_server.c - the evaluation endpoints end to end: a real server on
 * the tiny checkpoints (child process, loopback socket) answering
 * /v1/evaluate, /evaluate, /v1/evaluations and /v1/benchmarks.
 *
 * Checked: per-layer scores of a handful of tasks against
 * fixtures/reference/eval-tiny.json (the file's suggested tolerances; the
 * in-process tests cover every task and variant), thresholds -> "passed",
 * job progress advances, a concurrent /v1/embeddings request is answered
 * while a large evaluation runs, cancellation (running and queued), a
 * finished result survives a restart (--results-dir), and the errors.
 * Plus the batcher's background lanes, in-process: interactive items are
 * always taken first. */
#include "server_harness.h"

#include <pthread.h>

#include "layerlens/batcher.h"
#include "layerlens/benchmarks.h"

static th_server SRV;
static json_t *REF;
static char RESULTS[4200];

static int have_shared(void) {
    const char *env = getenv("LAYERLENS_SHARED");
    char probe[4200];
    struct stat st;
    snprintf(probe, sizeof probe, "%s/fixtures/README.md", env && *env ? env : "../shared");
    return stat(probe, &st) == 0;
}

static void start_server(void) {
    const char *args[] = {"--gpt2", tu_path("fixtures/models/gpt2-tiny"),
                          "--clip", tu_path("fixtures/models/clip-tiny"),
                          "--data", tu_path("data/benchmarks"), "--results-dir", RESULTS,
                          "--workers", "2", "--max-queue", "512", "--max-inputs", "64", NULL};
    th_start(&SRV, args, 1);
}

static int group_setup(void **state) {
    if (!have_shared()) return 0; /* each test then skips (or fails under CI) */
    snprintf(RESULTS, sizeof RESULTS, "%s/results", tu_tmpdir());
    start_server();
    REF = tu_load_json("fixtures/reference/eval-tiny.json");
    return 0;
}

static int group_teardown(void **state) {
    json_decref(REF);
    if (SRV.pid > 0) {
        int st = th_stop(&SRV, SIGTERM, 60);
        if (!(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0)) {
            char *log = th_log(&SRV);
            fprintf(stderr, "server did not exit 0 (status %d); log:\n%s\n", st, log);
            free(log);
            return -1;
        }
    }
    return 0;
}

static json_t *post_text(const char *path, const char *body, int *status) {
    json_t *req = json_loads(body, 0, NULL);
    if (!req) fail_msg("bad test JSON: %s", body);
    return th_post(SRV.port, path, req, status);
}

static json_t *post_ok(const char *path, const char *body) {
    int status;
    json_t *j = post_text(path, body, &status);
    if (status != 200) {
        char *t = j ? json_dumps(j, 0) : NULL;
        fail_msg("POST %s: status %d: %s", path, status, t ? t : "(no JSON)");
    }
    return j;
}

/* Every layer of results.TASK.MODEL against the reference variant. */
static void check_scores(json_t *res, const char *task, const char *model, const char *variant) {
    json_t *mr = json_object_get(json_object_get(json_object_get(res, "results"), task), model);
    json_t *ref = json_object_get(json_object_get(json_object_get(json_object_get(
                                      REF, "tasks"), task), "results"), variant);
    double tol = json_number_value(json_object_get(json_object_get(json_object_get(
                                       REF, "suggested_tolerance"), "results_abs"), task));
    assert_non_null(mr);
    assert_non_null(ref);
    assert_true(tol > 0);
    json_t *layers = json_object_get(mr, "layers");
    assert_int_equal(json_array_size(layers), json_array_size(ref));
    double worst = 0;
    for (size_t l = 0; l < json_array_size(ref); l++) {
        json_t *s = json_object_get(json_array_get(layers, l), "score");
        assert_true(json_is_number(s));
        double d = fabs(json_number_value(s) - json_number_value(json_array_get(ref, l)));
        if (d > worst) worst = d;
    }
    printf("  %-18s %-11s max |diff| %.2e (tol %.0e)\n", task, variant, worst, tol);
    if (worst > tol) fail_msg("%s %s: %.2e > %.0e", task, variant, worst, tol);
}

static void test_evaluate_matches_reference(void **state) {
    tu_shared();
    json_t *res = post_ok("/v1/evaluate", "{\"tasks\": [\"rg65\", \"valnorm\", \"stsb\", "
                          "\"selfsim_sentences\", \"selfsim_words\"], \"bootstrap\": 0, "
                          "\"method\": {\"selfsim_words\": \"reference\"}, "
                          "\"details\": true}");
    const char *tasks[] = {"rg65", "valnorm", "stsb", "selfsim_sentences", "selfsim_words"};
    for (int i = 0; i < 5; i++) {
        int words = i < 2;
        check_scores(res, tasks[i], "clip", "clip");
        check_scores(res, tasks[i], "gpt2", words ? "gpt2_bos" : "gpt2");
    }
    /* per-pair cosines survive the JSON transport (full precision) */
    json_t *got = json_object_get(json_object_get(json_object_get(json_object_get(res, "results"),
                                                                  "stsb"), "clip"), "per_item");
    json_t *want = json_object_get(json_object_get(json_object_get(json_object_get(REF, "tasks"),
                                                                   "stsb"), "per_pair_cosines"),
                                   "clip");
    double d = th_max_diff_json(got, want);
    printf("  stsb per-pair cosines over HTTP: max |diff| %.2e\n", d);
    assert_true(d <= 2e-5);
    assert_true(json_is_string(json_object_get(res, "id")));
    assert_true(json_is_number(json_object_get(res, "timing_ms")));
    json_decref(res);

    /* the plain path of CI scripts, another method */
    res = post_ok("/evaluate", "{\"tasks\": [\"ws353_sim\", \"simlex999\"], \"models\": "
                  "[\"gpt2\"], \"method\": {\"word\": \"plain\"}, \"bootstrap\": 0}");
    check_scores(res, "ws353_sim", "gpt2", "gpt2_plain");
    check_scores(res, "simlex999", "gpt2", "gpt2_plain");
    assert_null(json_object_get(json_object_get(json_object_get(res, "results"), "ws353_sim"),
                                "clip"));
    json_decref(res);
}

static void test_thresholds(void **state) {
    tu_shared();
    json_t *res = post_ok("/v1/evaluate", "{\"tasks\": [\"rg65\"], \"thresholds\": "
                          "{\"rg65\": {\"clip\": 0.8}}}");
    assert_true(json_is_false(json_object_get(res, "passed")));
    json_decref(res);
    res = post_ok("/evaluate", "{\"tasks\": [\"rg65\"], \"thresholds\": "
                  "{\"rg65\": {\"clip\": 0.1, \"gpt2\": 0.1}}}");
    assert_true(json_is_true(json_object_get(res, "passed")));
    assert_int_equal(json_array_size(json_object_get(res, "checks")), 2);
    json_decref(res);
}

static json_t *get_job(const char *location, int *status) {
    return th_get(SRV.port, location, status);
}

static const char *job_status(json_t *j) {
    return json_string_value(json_object_get(j, "status"));
}

static long job_done(json_t *j) {
    return (long)json_integer_value(json_object_get(json_object_get(j, "progress"), "done"));
}

/* POST /v1/evaluations: 202, the id and the Location header agree. */
static void create_job(const char *body, char *location, size_t cap) {
    th_resp r;
    assert_int_equal(th_request(SRV.port, "POST", "/v1/evaluations", body, strlen(body), NULL,
                                &r), 0);
    if (r.status != 202) fail_msg("POST /v1/evaluations: %d %s", r.status, r.body);
    char loc[256];
    assert_non_null(th_header(&r, "Location", loc, sizeof loc));
    json_t *j = th_body_json(&r);
    assert_non_null(j);
    char want[256];
    snprintf(want, sizeof want, "/v1/evaluations/%s", json_string_value(json_object_get(j, "id")));
    assert_string_equal(loc, want);
    assert_string_equal(json_string_value(json_object_get(j, "location")), want);
    const char *st = job_status(j);
    assert_true(!strcmp(st, "queued") || !strcmp(st, "running"));
    snprintf(location, cap, "%s", loc);
    json_decref(j);
    th_resp_free(&r);
}

/* Polls until the job's status is one of the final ones. */
static json_t *wait_final(const char *location, double timeout_s) {
    double end = th_now() + timeout_s;
    while (th_now() < end) {
        int status;
        json_t *j = get_job(location, &status);
        assert_int_equal(status, 200);
        const char *st = job_status(j);
        if (strcmp(st, "queued") && strcmp(st, "running")) return j;
        json_decref(j);
        th_sleep_ms(20);
    }
    fail_msg("%s did not finish within %.0f s", location, timeout_s);
    return NULL;
}

/* A large evaluation runs; /v1/embeddings is answered meanwhile; progress
 * advances; a queued job and then the running one are cancelled. */
static void test_concurrency_progress_cancel(void **state) {
    tu_shared();
    char big[256], queued[256];
    /* ~21,000 texts: long enough to still run after the checks below, even
     * on a fast machine; it is cancelled long before its end */
    create_job("{\"tasks\": [\"stsb_train\"], \"method\": {\"sentence\": \"last\"}, "
               "\"bootstrap\": 0}", big, sizeof big);
    /* wait until it is running with some progress */
    double end = th_now() + 60;
    long first = 0, total = 0;
    while (th_now() < end) {
        int status;
        json_t *j = get_job(big, &status);
        first = job_done(j);
        total = (long)json_integer_value(json_object_get(json_object_get(j, "progress"), "total"));
        int running = !strcmp(job_status(j), "running");
        json_decref(j);
        if (running && first > 0) break;
        th_sleep_ms(5);
    }
    assert_true(first > 0);
    assert_true(total > first);
    /* an interactive request goes first */
    double t0 = th_now();
    json_t *e = post_ok("/v1/embeddings", "{\"model\": \"gpt2\", \"input\": \"hello world\"}");
    double latency = th_now() - t0;
    json_decref(e);
    int status;
    json_t *j = get_job(big, &status);
    printf("  embeddings answered in %.3f s while the evaluation ran (%ld/%ld texts)\n", latency,
           job_done(j), total);
    assert_string_equal(job_status(j), "running");
    assert_true(latency < 5.0);
    json_decref(j);
    /* progress advances */
    long later = first;
    end = th_now() + 30;
    while (later == first && th_now() < end) {
        th_sleep_ms(20);
        j = get_job(big, &status);
        later = job_done(j);
        assert_string_equal(job_status(j), "running");
        json_t *eta = json_object_get(j, "estimated_remaining_ms");
        assert_true(json_is_number(eta));
        json_decref(j);
    }
    assert_true(later > first);

    /* a second job waits in the queue; DELETE cancels it at once */
    create_job("{\"tasks\": [\"rg65\"], \"bootstrap\": 0}", queued, sizeof queued);
    th_resp r;
    assert_int_equal(th_request(SRV.port, "DELETE", queued, NULL, 0, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    j = th_body_json(&r);
    assert_string_equal(job_status(j), "cancelled");
    json_decref(j);
    th_resp_free(&r);

    /* the running one stops at its next batch */
    assert_int_equal(th_request(SRV.port, "DELETE", big, NULL, 0, NULL, &r), 0);
    assert_int_equal(r.status, 202);
    th_resp_free(&r);
    j = wait_final(big, 60);
    assert_string_equal(job_status(j), "cancelled");
    assert_true(job_done(j) < total);
    assert_non_null(json_object_get(j, "error"));
    assert_null(json_object_get(j, "result"));
    json_decref(j);
    /* a cancelled job stays cancelled; a second DELETE is harmless */
    assert_int_equal(th_request(SRV.port, "DELETE", big, NULL, 0, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    th_resp_free(&r);
}

/* A finished job keeps its result across a restart of the server. */
static void test_result_survives_restart(void **state) {
    tu_shared();
    char loc[256];
    create_job("{\"tasks\": [\"rg65\", \"selfsim_words\"], \"bootstrap\": 50, "
               "\"method\": {\"selfsim_words\": \"reference\"}}", loc, sizeof loc);
    json_t *j = wait_final(loc, 120);
    assert_string_equal(job_status(j), "done");
    json_t *res = json_object_get(j, "result");
    check_scores(res, "rg65", "clip", "clip");
    check_scores(res, "selfsim_words", "gpt2", "gpt2");
    assert_int_equal(job_done(j), json_integer_value(json_object_get(json_object_get(j, "progress"),
                                                                     "total")));
    assert_non_null(json_object_get(json_object_get(res, "comparisons"), "rg65"));
    /* a finished job cannot be cancelled */
    th_resp r;
    assert_int_equal(th_request(SRV.port, "DELETE", loc, NULL, 0, NULL, &r), 0);
    assert_int_equal(r.status, 409);
    th_resp_free(&r);

    int st = th_stop(&SRV, SIGTERM, 60);
    assert_true(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0);
    start_server();
    int status;
    json_t *again = get_job(loc, &status);
    assert_int_equal(status, 200);
    assert_string_equal(job_status(again), "done");
    assert_true(json_equal(json_object_get(again, "result"), res));
    json_decref(again);
    json_decref(j);
}

static void test_benchmarks(void **state) {
    tu_shared();
    int status;
    json_t *b = th_get(SRV.port, "/v1/benchmarks", &status);
    assert_int_equal(status, 200);
    json_t *tasks = json_object_get(b, "tasks");
    assert_int_equal(json_array_size(tasks), 12);
    assert_int_equal(json_array_size(json_object_get(b, "paper_tasks")), 10);
    size_t i;
    json_t *t;
    int seen = 0;
    json_array_foreach(tasks, i, t) {
        const char *name = json_string_value(json_object_get(t, "task"));
        assert_true(json_is_true(json_object_get(t, "available")));
        assert_int_equal(json_integer_value(json_object_get(t, "n")),
                         json_integer_value(json_object_get(t, "n_expected")));
        /* the reference names each file by its path under data/benchmarks */
        const char *key;
        json_t *ref;
        json_object_foreach(json_object_get(REF, "data_files"), key, ref) {
            const char *path = json_string_value(json_object_get(ref, "path"));
            if (strcmp(path + strlen("data/benchmarks/"),
                       json_string_value(json_object_get(t, "file"))))
                continue;
            assert_string_equal(json_string_value(json_object_get(t, "sha256")),
                                json_string_value(json_object_get(ref, "sha256")));
            seen++;
        }
        assert_non_null(name);
    }
    assert_int_equal(seen, 11); /* stsb_train has no reference checksum */
    /* selfsim_words also describes the pool of its default, sampled
     * selection: the three STS-B files with their checksums */
    json_array_foreach(tasks, i, t) {
        json_t *sp = json_object_get(t, "sampled");
        if (strcmp(json_string_value(json_object_get(t, "task")), "selfsim_words")) {
            assert_null(sp);
            continue;
        }
        assert_true(json_is_true(json_object_get(sp, "available")));
        assert_int_equal(json_integer_value(json_object_get(sp, "n_default")), 10000);
        assert_int_equal(json_integer_value(json_object_get(sp, "n_available")),
                         LL_STSB_POOL_EXPECTED);
        json_t *files = json_object_get(sp, "files");
        assert_int_equal(json_array_size(files), 3);
        const char *keys[] = {NULL, "stsb_dev", "stsb_test"};
        for (int k = 1; k < 3; k++)
            assert_string_equal(json_string_value(json_object_get(json_array_get(files, k),
                                                                  "sha256")),
                                json_string_value(json_object_get(json_object_get(
                                    json_object_get(REF, "data_files"), keys[k]), "sha256")));
        /* sts-train.csv: the checksum SOURCES.md gives */
        assert_string_equal(json_string_value(json_object_get(json_array_get(files, 0), "sha256")),
                            "0f71910b59aa1ad973c5897f0791f3b0965a92b8f82b1a95f3eea9f4162fda82");
    }
    json_t *methods = json_object_get(json_object_get(b, "methods"), "selfsim_words");
    assert_int_equal(json_array_size(methods), 2);
    json_decref(b);
}

static void test_errors(void **state) {
    tu_shared();
    int status;
    json_t *j = post_text("/v1/evaluate", "{\"tasks\": [\"nope\"]}", &status);
    assert_int_equal(status, 400);
    assert_non_null(strstr(json_string_value(json_object_get(json_object_get(j, "error"),
                                                             "message")), "unknown task"));
    json_decref(j);
    j = post_text("/v1/evaluations", "{\"tasks\": [\"rg65\"], \"layers\": [9]}", &status);
    assert_int_equal(status, 400);
    json_decref(j);
    j = th_get(SRV.port, "/v1/evaluations/0123456789abcdef0123456789abcdef", &status);
    assert_int_equal(status, 404);
    json_decref(j);
    j = th_get(SRV.port, "/v1/evaluations/../../etc/passwd", &status);
    assert_int_equal(status, 404);
    json_decref(j);
    th_resp r;
    assert_int_equal(th_request(SRV.port, "PUT", "/v1/evaluations/0123456789abcdef0123456789abcdef",
                                NULL, 0, NULL, &r), 0);
    assert_int_equal(r.status, 405);
    th_resp_free(&r);
    j = th_get(SRV.port, "/v1/evaluate", &status);
    assert_int_equal(status, 405);
    json_decref(j);
    /* an explicit token index out of range: 400 naming the item, for jobs too */
    const char *paths[] = {"/v1/evaluate", "/v1/evaluations"};
    for (int k = 0; k < 2; k++) {
        j = post_text(paths[k], "{\"items\": [[\"a cat\", 1], [\"a dog\", 5]]}", &status);
        assert_int_equal(status, 400);
        const char *msg = json_string_value(json_object_get(json_object_get(j, "error"),
                                                            "message"));
        assert_non_null(strstr(msg, "items[1]"));
        assert_non_null(strstr(msg, "out of range"));
        json_decref(j);
    }
    j = post_text("/v1/evaluate", "{\"tasks\": [\"selfsim_words\"], \"method\": "
                  "{\"selfsim_words\": \"reference\", \"selfsim_words_seed\": 3}}", &status);
    assert_int_equal(status, 400);
    json_decref(j);
}

/* ---- the batcher's background lanes, in-process ---------------------- */

typedef struct order_log {
    pthread_mutex_t mu;
    char seen[64];
    int n;
} order_log;

typedef struct lane_ctx {
    order_log *lg;
    char tag;
} lane_ctx;

static void log_run(void *ctx, void *ws, ll_batch_item **items, int n) {
    lane_ctx *lc = ctx;
    pthread_mutex_lock(&lc->lg->mu);
    for (int i = 0; i < n && lc->lg->n < 63; i++) lc->lg->seen[lc->lg->n++] = lc->tag;
    pthread_mutex_unlock(&lc->lg->mu);
}

static void test_batcher_background_lane(void **state) {
    (void)state;
    order_log lg = {PTHREAD_MUTEX_INITIALIZER, "", 0};
    lane_ctx fg = {&lg, 'f'}, bg = {&lg, 'b'};
    ll_batcher_opts o = {.workers = 1, .max_batch_tokens = 1, .max_wait_us = 0,
                         .max_queue = 64};
    ll_error err = {{0}};
    ll_batcher *b = ll_batcher_new(&o, &err);
    assert_non_null(b);
    int lf = ll_batcher_add_lane(b, log_run, NULL, &fg, &err);
    int lb = ll_batcher_add_lane(b, log_run, NULL, &bg, &err);
    ll_batcher_lane_background(b, lb);
    /* background work queued first, interactive work after it */
    ll_batch_item items[8] = {{0}};
    ll_batch_item *p[8];
    for (int i = 0; i < 8; i++) items[i].n_tok = 1, p[i] = &items[i];
    assert_int_equal(ll_batcher_reserve(b, 8), 0);
    ll_batcher_push(b, lb, p, 4);
    ll_batcher_push(b, lf, p + 4, 4);
    assert_int_equal(ll_batcher_start(b, &err), 0);
    ll_batcher_stop(b);
    lg.seen[lg.n] = 0;
    assert_string_equal(lg.seen, "ffffbbbb");
    ll_batcher_free(b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_batcher_background_lane),
        cmocka_unit_test(test_evaluate_matches_reference),
        cmocka_unit_test(test_thresholds),
        cmocka_unit_test(test_benchmarks),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_concurrency_progress_cancel),
        cmocka_unit_test(test_result_survives_restart),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
