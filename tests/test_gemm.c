/* test_gemm.c - the packed-weight product (src/gemm.c).
 *
 * Against a double-precision reference for shapes that cross every blocking
 * boundary of the kernel (8-row blocks, 32-column panels with a masked last
 * panel, 256-wide k chunks, 128-row chunks); bit-identical rows whatever the
 * number of rows or threads (the batch-invariance the model's tests rely
 * on); the [out, in] packing and the joining of column ranges. */
#include "testutil.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "layerlens/gemm.h"
#include "layerlens/pool.h"

static float *rnd(size_t n, unsigned *seed, float scale) {
    float *p = malloc(n * sizeof *p);
    assert_non_null(p);
    for (size_t i = 0; i < n; i++) {
        *seed = *seed * 1664525u + 1013904223u;
        p[i] = scale * ((float)(*seed >> 8) / 16777216.0f - 0.5f);
    }
    return p;
}

/* Checks out [M][N] against inp @ W + bias in double: the error of a float32
 * sum of K products is within K * 2^-24 * sum |a_k b_k| (plus the bias's
 * rounding); 4x that bound is the tolerance. */
static void check_product(const float *out, const float *inp, const float *W,
                          const float *bias, int M, int K, int N) {
    double worst = 0;
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            double ref = 0, mag = 0;
            for (int k = 0; k < K; k++) {
                double t = (double)inp[(long)m * K + k] * W[(long)k * N + n];
                ref += t, mag += fabs(t);
            }
            if (bias) ref += bias[n], mag += fabs(bias[n]);
            double tol = 4.0 * (K + 1) * 0x1p-24 * mag + 1e-30;
            double err = fabs(out[(long)m * N + n] - ref);
            if (err / tol > worst) worst = err / tol;
            if (err > tol)
                fail_msg("M=%d K=%d N=%d: out[%d][%d] = %.9g, reference %.9g (tolerance %.2g)",
                         M, K, N, m, n, out[(long)m * N + n], ref, tol);
        }
    (void)worst;
}

static void test_against_reference(void **state) {
    (void)state;
    /* {M, K, N}: single rows, partial row blocks, partial panels (N % 32),
     * k over several chunks with a partial one, more rows than a chunk */
    const int shapes[][3] = {{1, 1, 1},    {1, 64, 32},   {3, 64, 96},    {7, 100, 33},
                             {8, 257, 64}, {9, 513, 17},  {17, 300, 200}, {64, 64, 192},
                             {129, 96, 40}, {130, 520, 70}, {300, 33, 65}};
    unsigned seed = 7;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int M = shapes[s][0], K = shapes[s][1], N = shapes[s][2];
        float *inp = rnd((size_t)M * K, &seed, 2.0f), *W = rnd((size_t)K * N, &seed, 0.2f);
        float *bias = rnd((size_t)N, &seed, 1.0f), *out = rnd((size_t)M * N, &seed, 9.0f);
        ll_packed p;
        assert_int_equal(ll_pack_weights(&p, W, K, N), 0);
        assert_true(ll_packed_bytes(&p) >= (size_t)K * N * sizeof(float));
        ll_gemm(out, inp, &p, bias, M);
        check_product(out, inp, W, bias, M, K, N);
        ll_gemm(out, inp, &p, NULL, M); /* no bias: the old contents must not leak in */
        check_product(out, inp, W, NULL, M, K, N);
        ll_packed_free(&p);
        free(inp), free(W), free(bias), free(out);
    }
}

/* Row r of an M-row product equals the product of row r alone, bit for bit,
 * for every M; and two threads give the very same bits as one. */
static void test_rows_and_threads_invariant(void **state) {
    (void)state;
    const int K = 600, N = 3 * 96 + 5, M = 200;
    unsigned seed = 11;
    float *inp = rnd((size_t)M * K, &seed, 2.0f), *W = rnd((size_t)K * N, &seed, 0.1f);
    float *bias = rnd((size_t)N, &seed, 1.0f);
    float *all = malloc(sizeof(float) * M * N), *part = malloc(sizeof(float) * M * N);
    ll_packed p;
    assert_int_equal(ll_pack_weights(&p, W, K, N), 0);
    ll_pool_set_threads(1);
    ll_gemm(all, inp, &p, bias, M);
    const int firsts[] = {0, 5, 63, 127, 130, 199};
    const int counts[] = {1, 2, 3, 8, 9, 31, 70};
    for (size_t i = 0; i < sizeof firsts / sizeof firsts[0]; i++)
        for (size_t j = 0; j < sizeof counts / sizeof counts[0]; j++) {
            int r0 = firsts[i], n = counts[j];
            if (r0 + n > M) n = M - r0;
            ll_gemm(part, inp + (long)r0 * K, &p, bias, n);
            assert_memory_equal(part, all + (long)r0 * N, sizeof(float) * n * N);
        }
    for (int t = 2; t <= 3; t++) {
        ll_pool_set_threads(t);
        assert_int_equal(ll_pool_threads(), t);
        memset(part, 0, sizeof(float) * M * N);
        ll_gemm(part, inp, &p, bias, M);
        assert_memory_equal(part, all, sizeof(float) * M * N);
    }
    ll_pool_set_threads(1);
    ll_packed_free(&p);
    free(inp), free(W), free(bias), free(all), free(part);
}

/* The [out, in] layout (nn.Linear) and columns joined from several matrices
 * (CLIP's q, k, v) pack to exactly the same panels as the [in, out] matrix. */
static void test_transposed_and_joined(void **state) {
    (void)state;
    const int K = 70, N = 3 * 40;
    unsigned seed = 3;
    float *W = rnd((size_t)K * N, &seed, 1.0f), *Wt = malloc(sizeof(float) * K * N);
    for (int k = 0; k < K; k++)
        for (int n = 0; n < N; n++) Wt[(long)n * K + k] = W[(long)k * N + n];
    ll_packed a, b, c;
    assert_int_equal(ll_pack_weights(&a, W, K, N), 0);
    assert_int_equal(ll_pack_weights_t(&b, Wt, N, K), 0);
    assert_int_equal(ll_packed_init(&c, K, N), 0);
    for (int part = 2; part >= 0; part--) /* any order */
        ll_packed_set_t(&c, part * 40, Wt + (long)part * 40 * K, 40);
    assert_int_equal(ll_packed_bytes(&a), ll_packed_bytes(&b));
    assert_memory_equal(a.panels, b.panels, ll_packed_bytes(&a));
    assert_memory_equal(a.panels, c.panels, ll_packed_bytes(&a));
    ll_packed_free(&a), ll_packed_free(&b), ll_packed_free(&c);
    assert_null(a.panels);
    assert_int_equal(ll_packed_bytes(&a), 0);
    free(W), free(Wt);
}

/* Products on several threads at once, each asking for 2 threads: the
 * shared helper pool serves one of them at a time and the others run on
 * their own thread; every result must still be the single-thread one. */
typedef struct conc {
    const ll_packed *p;
    const float *inp, *bias, *want;
    int M, N, bad;
} conc;

static void *conc_main(void *arg) {
    conc *c = arg;
    ll_pool_set_threads(2);
    float *out = malloc(sizeof(float) * c->M * c->N);
    for (int i = 0; i < 40; i++) {
        ll_gemm(out, c->inp, c->p, c->bias, c->M);
        if (memcmp(out, c->want, sizeof(float) * c->M * c->N)) c->bad++;
    }
    free(out);
    return NULL;
}

static void test_concurrent_callers(void **state) {
    (void)state;
    const int K = 256, N = 320, M = 24;
    unsigned seed = 5;
    float *inp = rnd((size_t)M * K, &seed, 1.0f), *W = rnd((size_t)K * N, &seed, 0.1f);
    float *bias = rnd((size_t)N, &seed, 1.0f), *want = malloc(sizeof(float) * M * N);
    ll_packed p;
    assert_int_equal(ll_pack_weights(&p, W, K, N), 0);
    ll_pool_set_threads(1);
    ll_gemm(want, inp, &p, bias, M);
    pthread_t th[4];
    conc c[4];
    for (int i = 0; i < 4; i++) {
        c[i] = (conc){&p, inp, bias, want, M, N, 0};
        assert_int_equal(pthread_create(&th[i], NULL, conc_main, &c[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(c[i].bad, 0);
    }
    ll_packed_free(&p);
    free(inp), free(W), free(bias), free(want);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_against_reference),
        cmocka_unit_test(test_rows_and_threads_invariant),
        cmocka_unit_test(test_transposed_and_joined),
        cmocka_unit_test(test_concurrent_callers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
