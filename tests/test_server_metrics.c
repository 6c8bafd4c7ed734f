/* test_server_metrics.c - the server's counters and histograms and their
 * Prometheus text: known observations in, exact series out (cumulative
 * buckets, sums, counts, labels), and concurrent updates lose nothing. */
#include "testutil.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "layerlens/metrics.h"

static const char *const EPS[] = {"/a", "/b"};
static const char *const MODELS[] = {"gpt2", "clip"};

/* The value of one series, -1 when absent. */
static double series(const char *text, const char *name) {
    size_t n = strlen(name);
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
        if (strncmp(p, name, n) == 0 && p[n] == ' ') return atof(p + n + 1);
    return -1;
}

static void test_render(void **state) {
    ll_metrics *m = ll_metrics_new(EPS, 2, MODELS, 2);
    assert_non_null(m);
    ll_metrics_request(m, 0, 200, 0.003);
    ll_metrics_request(m, 0, 200, 0.2);
    ll_metrics_request(m, 0, 404, 0.0001);
    ll_metrics_request(m, 1, 418, 1.0); /* not an answer the server gives: "other" */
    ll_metrics_batch(m, 0, 1, 5);
    ll_metrics_batch(m, 0, 3, 40);
    ll_metrics_batch(m, 1, 600, 20000);
    ll_metrics_dropped(m, 1, 2);
    ll_metrics_model_loaded(m, 0, 1.25);
    char *t = ll_metrics_render(m, 7);
    assert_non_null(t);

    assert_true(series(t, "layerlens_requests_total{endpoint=\"/a\",status=\"200\"}") == 2);
    assert_true(series(t, "layerlens_requests_total{endpoint=\"/a\",status=\"404\"}") == 1);
    assert_true(series(t, "layerlens_requests_total{endpoint=\"/b\",status=\"other\"}") == 1);
    assert_true(series(t, "layerlens_requests_total{endpoint=\"/b\",status=\"200\"}") == -1);
    /* 0.0001 <= 0.0005; 0.003 <= 0.005; 0.2 <= 0.25: cumulative counts */
    assert_true(series(t, "layerlens_request_duration_seconds_bucket{endpoint=\"/a\",le=\"0.0005\"}") == 1);
    assert_true(series(t, "layerlens_request_duration_seconds_bucket{endpoint=\"/a\",le=\"0.0025\"}") == 1);
    assert_true(series(t, "layerlens_request_duration_seconds_bucket{endpoint=\"/a\",le=\"0.005\"}") == 2);
    assert_true(series(t, "layerlens_request_duration_seconds_bucket{endpoint=\"/a\",le=\"0.1\"}") == 2);
    assert_true(series(t, "layerlens_request_duration_seconds_bucket{endpoint=\"/a\",le=\"0.25\"}") == 3);
    assert_true(series(t, "layerlens_request_duration_seconds_bucket{endpoint=\"/a\",le=\"+Inf\"}") == 3);
    assert_true(series(t, "layerlens_request_duration_seconds_count{endpoint=\"/a\"}") == 3);
    assert_true(fabs(series(t, "layerlens_request_duration_seconds_sum{endpoint=\"/a\"}") - 0.2031) < 1e-9);
    /* batches: gpt2 had 1 and 3 sequences, 5 and 40 tokens */
    assert_true(series(t, "layerlens_batch_sequences_bucket{model=\"gpt2\",le=\"1\"}") == 1);
    assert_true(series(t, "layerlens_batch_sequences_bucket{model=\"gpt2\",le=\"2\"}") == 1);
    assert_true(series(t, "layerlens_batch_sequences_bucket{model=\"gpt2\",le=\"4\"}") == 2);
    assert_true(series(t, "layerlens_batch_sequences_sum{model=\"gpt2\"}") == 4);
    assert_true(series(t, "layerlens_batch_tokens_bucket{model=\"gpt2\",le=\"32\"}") == 1);
    assert_true(series(t, "layerlens_batch_tokens_bucket{model=\"gpt2\",le=\"64\"}") == 2);
    assert_true(series(t, "layerlens_tokens_total{model=\"gpt2\"}") == 45);
    /* clip's 600-sequence batch is beyond the last bound: only in +Inf */
    assert_true(series(t, "layerlens_batch_sequences_bucket{model=\"clip\",le=\"512\"}") == 0);
    assert_true(series(t, "layerlens_batch_sequences_bucket{model=\"clip\",le=\"+Inf\"}") == 1);
    assert_true(series(t, "layerlens_dropped_sequences_total{model=\"clip\"}") == 2);
    assert_true(series(t, "layerlens_model_loaded{model=\"gpt2\"}") == 1);
    assert_true(series(t, "layerlens_model_loaded{model=\"clip\"}") == 0);
    assert_true(series(t, "layerlens_model_load_seconds{model=\"gpt2\"}") == 1.25);
    assert_true(series(t, "layerlens_model_load_seconds{model=\"clip\"}") == -1);
    assert_true(series(t, "layerlens_queue_depth") == 7);
    assert_true(series(t, "process_resident_memory_bytes") > 0);
    /* every metric has its HELP and TYPE lines */
    assert_non_null(strstr(t, "# TYPE layerlens_request_duration_seconds histogram\n"));
    assert_non_null(strstr(t, "# TYPE layerlens_tokens_total counter\n"));
    assert_non_null(strstr(t, "# TYPE layerlens_queue_depth gauge\n"));
    free(t);
    ll_metrics_free(m);
}

/* Out-of-range indices are ignored, not written anywhere. */
static void test_bad_indices(void **state) {
    ll_metrics *m = ll_metrics_new(EPS, 2, MODELS, 2);
    ll_metrics_request(m, 2, 200, 1);
    ll_metrics_request(m, -1, 200, 1);
    ll_metrics_batch(m, 5, 1, 1);
    ll_metrics_dropped(m, -3, 1);
    ll_metrics_model_loaded(m, 2, 1);
    char *t = ll_metrics_render(m, 0);
    assert_null(strstr(t, "layerlens_requests_total{"));
    assert_true(series(t, "layerlens_tokens_total{model=\"gpt2\"}") == 0);
    free(t);
    ll_metrics_free(m);
}

#define THREADS 8
#define PER 5000

static void *hammer(void *p) {
    ll_metrics *m = p;
    for (int i = 0; i < PER; i++) {
        ll_metrics_request(m, i % 2, 200, 0.001);
        ll_metrics_batch(m, i % 2, 2, 3);
    }
    return NULL;
}

static void test_concurrent_updates(void **state) {
    ll_metrics *m = ll_metrics_new(EPS, 2, MODELS, 2);
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++) pthread_create(&th[i], NULL, hammer, m);
    for (int i = 0; i < THREADS; i++) pthread_join(th[i], NULL);
    char *t = ll_metrics_render(m, 0);
    double total = series(t, "layerlens_requests_total{endpoint=\"/a\",status=\"200\"}") +
                   series(t, "layerlens_requests_total{endpoint=\"/b\",status=\"200\"}");
    assert_true(total == THREADS * PER);
    assert_true(series(t, "layerlens_tokens_total{model=\"gpt2\"}") +
                series(t, "layerlens_tokens_total{model=\"clip\"}") == 3.0 * THREADS * PER);
    free(t);
    ll_metrics_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_render),
        cmocka_unit_test(test_bad_indices),
        cmocka_unit_test(test_concurrent_updates),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
