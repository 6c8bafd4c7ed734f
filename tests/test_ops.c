/* test_ops.c - the steps a pass splits over threads (src/ops.c, src/pool.c).
 *
 * ll_parallel runs every part exactly once, on as many threads as asked
 * for; layer norm, the activations, the residual add and the attention of a
 * packed batch give the very same bits on 1, 2 and 3 threads, and agree with
 * a double-precision reference; the products with the activation or the
 * residual sum inside give the bits of the two separate steps.  The
 * fixtures' tiny models are too small to be split at all, so the shapes
 * here are the real models' widths. */
#include "testutil.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "layerlens/ops.h"
#include "layerlens/pool.h"

static float *copy(const float *x, size_t n) {
    float *p = malloc(n * sizeof *p);
    assert_non_null(p);
    memcpy(p, x, n * sizeof *p);
    return p;
}

/* ------------------------------------------------------------ ll_parallel */

typedef struct count_ctx {
    atomic_int ran[8];
    atomic_int parts_seen;
    pthread_t caller;
    atomic_int off_caller; /* parts that ran on another thread */
} count_ctx;

static void count_part(void *ctx, int part, int parts) {
    count_ctx *c = ctx;
    atomic_fetch_add(&c->ran[part], 1);
    atomic_store(&c->parts_seen, parts);
    if (!pthread_equal(pthread_self(), c->caller)) atomic_fetch_add(&c->off_caller, 1);
}

static void test_parallel_parts(void **state) {
    (void)state;
    const int cases[][3] = {/* threads, max_parts, parts expected */
                            {1, 8, 1}, {2, 8, 2}, {3, 8, 3}, {3, 2, 2}, {2, 1, 1}, {4, 0, 1}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ll_pool_set_threads(cases[i][0]);
        assert_int_equal(ll_parallel_width(), cases[i][0]);
        count_ctx c = {.caller = pthread_self()};
        ll_parallel(count_part, &c, cases[i][1]);
        int want = cases[i][2];
        assert_int_equal(atomic_load(&c.parts_seen), want);
        for (int p = 0; p < 8; p++) assert_int_equal(atomic_load(&c.ran[p]), p < want);
        assert_int_equal(atomic_load(&c.off_caller), want - 1);
    }
    /* another pass running takes one thread away */
    ll_pool_set_threads(2);
    ll_pass_begin();
    assert_int_equal(ll_parallel_width(), 2);
    ll_pass_end();
    ll_pool_set_threads(1);
}

/* -------------------------------------------------------------- the steps */

enum { C = 768, F = 3072, NH = 12 };

/* Runs f on a copy of x with 1, 2 and 3 threads: all three copies must be
 * the same bits.  Returns the 1-thread result. */
typedef void (*step_fn)(float *x, const float *y, long n, int rows);
static float *same_on_threads(step_fn f, const float *x0, const float *y, long n, int rows) {
    float *r[3];
    for (int t = 1; t <= 3; t++) {
        ll_pool_set_threads(t);
        r[t - 1] = copy(x0, (size_t)n);
        f(r[t - 1], y, n, rows);
    }
    ll_pool_set_threads(1);
    for (int t = 2; t <= 3; t++) {
        if (memcmp(r[0], r[t - 1], (size_t)n * sizeof(float)))
            fail_msg("%d threads differ from 1 (n = %ld)", t, n);
        free(r[t - 1]);
    }
    return r[0];
}

static const float *g_w, *g_b;
static void ln_step(float *x, const float *y, long n, int rows) {
    layernorm_forward(x, x, g_w, g_b, rows, (int)(n / rows), 1e-5f);
}
static void gelu_step(float *x, const float *y, long n, int rows) { gelu_new_forward(x, n); }
static void qgelu_step(float *x, const float *y, long n, int rows) { quick_gelu_forward(x, n); }
static void res_step(float *x, const float *y, long n, int rows) { residual_forward(x, y, n); }

static void test_elementwise_steps(void **state) {
    (void)state;
    unsigned seed = 11;
    /* rows not a multiple of anything; n not a multiple of 16 for the
     * element-wise steps */
    const int rows = 203;
    const long n = (long)rows * C, nf = (long)rows * F - 5;
    float *x = tu_rand_floats((size_t)nf, &seed, 6.0f);
    float *y = tu_rand_floats((size_t)nf, &seed, 1.0f);
    float *w = tu_rand_floats(C, &seed, 2.0f), *b = tu_rand_floats(C, &seed, 1.0f);
    for (long i = 0; i < n; i += C) x[i] += 50.0f; /* rows with an offset */
    g_w = w, g_b = b;

    float *ln = same_on_threads(ln_step, x, NULL, n, rows);
    double worst = 0;
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (long)r * C;
        double mean = 0, var = 0;
        for (int c = 0; c < C; c++) mean += xr[c];
        mean /= C;
        for (int c = 0; c < C; c++) var += (xr[c] - mean) * (xr[c] - mean);
        var /= C;
        for (int c = 0; c < C; c++) {
            double ref = (xr[c] - mean) / sqrt(var + 1e-5) * w[c] + b[c];
            double e = fabs(ln[(long)r * C + c] - ref);
            if (e > worst) worst = e;
        }
    }
    if (worst > 1e-5) fail_msg("layer norm: max |diff| %.3g vs double reference", worst);
    free(ln);

    float *g = same_on_threads(gelu_step, x, NULL, nf, rows);
    float *q = same_on_threads(qgelu_step, x, NULL, nf, rows);
    for (long i = 0; i < nf; i++) {
        double v = x[i];
        double gr = 0.5 * v * (1.0 + tanh(0.7978845608028654 * (v + 0.044715 * v * v * v)));
        double qr = v / (1.0 + exp(-1.702 * v));
        if (fabs(g[i] - gr) > 1e-5 + 1e-5 * fabs(gr))
            fail_msg("gelu_new(%g) = %.9g, reference %.9g", v, g[i], gr);
        if (fabs(q[i] - qr) > 1e-5 + 1e-5 * fabs(qr))
            fail_msg("quick_gelu(%g) = %.9g, reference %.9g", v, q[i], qr);
    }
    free(g), free(q);

    float *s = same_on_threads(res_step, x, y, nf, rows);
    for (long i = 0; i < nf; i++)
        if (s[i] != x[i] + y[i]) fail_msg("residual at %ld", i);
    free(s);
    free(x), free(y), free(w), free(b);
}

/* A product with its activation or residual sum inside (ops.h) gives the
 * very bits of the product followed by the separate step: both weight
 * formats, both bf16 kernels (up to 16 rows and more), a partial panel,
 * k cut into chunks (K = 800 over 128 rows: the epilogue must see only
 * final sums), on 1, 2 and 3 threads. */
static void fused_same_as_separate(ll_weight_type dtype, int M, int K, int N, unsigned seed) {
    float *inp = tu_rand_floats((size_t)M * K, &seed, 2.0f);
    float *Wm = tu_rand_floats((size_t)K * N, &seed, 0.1f);
    float *bias = tu_rand_floats((size_t)N, &seed, 1.0f);
    float *x0 = tu_rand_floats((size_t)M * N, &seed, 3.0f);
    size_t n = (size_t)M * N, bytes = n * sizeof(float);
    float *want = malloc(bytes), *got = malloc(bytes), *xw = copy(x0, n), *y = malloc(bytes);
    assert_non_null(want), assert_non_null(got), assert_non_null(y);
    ll_packed W;
    assert_int_equal(ll_pack_weights(&W, Wm, K, N, dtype), 0);
    for (int act = 0; act < 2; act++) {
        assert_int_equal(matmul_forward(want, inp, &W, bias, M), 0);
        if (act == 0) gelu_new_forward(want, (long)n);
        else quick_gelu_forward(want, (long)n);
        for (int t = 1; t <= 3; t++) {
            ll_pool_set_threads(t);
            memset(got, 0, bytes);
            assert_int_equal(act == 0 ? matmul_gelu_new_forward(got, inp, &W, bias, M)
                                      : matmul_quick_gelu_forward(got, inp, &W, bias, M), 0);
            if (memcmp(got, want, bytes))
                fail_msg("%s %s M=%d K=%d N=%d, %d threads: fused activation differs",
                         ll_weight_type_name(dtype), act ? "quick_gelu" : "gelu_new", M, K, N, t);
        }
        ll_pool_set_threads(1);
    }
    assert_int_equal(matmul_forward(want, inp, &W, bias, M), 0);
    residual_forward(xw, want, (long)n);
    for (int t = 1; t <= 3; t++) {
        ll_pool_set_threads(t);
        float *x = copy(x0, n);
        assert_int_equal(matmul_residual_forward(x, y, inp, &W, bias, M), 0);
        if (memcmp(x, xw, bytes) || memcmp(y, want, bytes))
            fail_msg("%s M=%d K=%d N=%d, %d threads: fused residual differs",
                     ll_weight_type_name(dtype), M, K, N, t);
        free(x);
    }
    ll_pool_set_threads(1);
    ll_packed_free(&W);
    free(inp), free(Wm), free(bias), free(x0), free(want), free(got), free(xw), free(y);
}

static void test_fused_products(void **state) {
    (void)state;
    const int shapes[][3] = {{1, 64, 40}, {9, 200, 103}, {16, 130, 64}, {17, 200, 103},
                             {203, 800, 3 * 32 + 7}};
    for (int d = 0; d < 2; d++)
        for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
            fused_same_as_separate(d ? LL_WEIGHTS_BF16 : LL_WEIGHTS_F32, shapes[i][0],
                                   shapes[i][1], shapes[i][2], 100 + (unsigned)i);
}

/* Attention of one head of one sequence in double. */
static void attention_ref(double *out, const float *qkv, int T, int h) {
    int hd = C / NH, ld = 3 * C;
    double *p = malloc(sizeof(double) * T);
    for (int i = 0; i < T; i++) {
        double max = -INFINITY, sum = 0;
        for (int j = 0; j <= i; j++) {
            double d = 0;
            for (int k = 0; k < hd; k++)
                d += (double)qkv[(long)i * ld + h * hd + k] * qkv[(long)j * ld + C + h * hd + k];
            p[j] = d / sqrt(hd);
            if (p[j] > max) max = p[j];
        }
        for (int j = 0; j <= i; j++) sum += p[j] = exp(p[j] - max);
        for (int k = 0; k < hd; k++) {
            double o = 0;
            for (int j = 0; j <= i; j++) o += p[j] / sum * qkv[(long)j * ld + 2 * C + h * hd + k];
            out[(long)i * hd + k] = o;
        }
    }
    free(p);
}

static void test_attention_batch(void **state) {
    (void)state;
    /* lengths on both sides of the direct / OpenBLAS switch (32) */
    const int lens[] = {1, 3, 40, 7, 33, 32, 90, 2, 17, 64, 5, 31};
    const int n_seq = sizeof lens / sizeof lens[0];
    int seq_start[sizeof lens / sizeof lens[0] + 1] = {0}, t_max = 0;
    for (int s = 0; s < n_seq; s++) {
        seq_start[s + 1] = seq_start[s] + lens[s];
        if (lens[s] > t_max) t_max = lens[s];
    }
    int N = seq_start[n_seq];
    unsigned seed = 3;
    float *qkv = tu_rand_floats((size_t)N * 3 * C, &seed, 4.0f);
    float *scratch = malloc(sizeof(float) * 3 * t_max * t_max);
    float *one = malloc(sizeof(float) * N * C), *got = malloc(sizeof(float) * N * C);
    /* one sequence at a time, the single-sequence operation */
    for (int s = 0; s < n_seq; s++)
        attention_forward(one + (long)seq_start[s] * C, qkv + (long)seq_start[s] * 3 * C,
                          scratch, lens[s], C, NH);
    for (int t = 1; t <= 3; t++) {
        ll_pool_set_threads(t);
        memset(got, 0xff, sizeof(float) * N * C);
        attention_batch_forward(got, qkv, scratch, t, seq_start, n_seq, C, NH);
        if (memcmp(got, one, sizeof(float) * N * C))
            fail_msg("attention of the batch on %d threads differs from one by one", t);
    }
    ll_pool_set_threads(1);
    double worst = 0, *ref = malloc(sizeof(double) * t_max * (C / NH));
    for (int s = 0; s < n_seq; s++)
        for (int h = 0; h < NH; h++) {
            attention_ref(ref, qkv + (long)seq_start[s] * 3 * C, lens[s], h);
            for (int i = 0; i < lens[s]; i++)
                for (int k = 0; k < C / NH; k++) {
                    double e = fabs(one[(long)(seq_start[s] + i) * C + h * (C / NH) + k] -
                                    ref[(long)i * (C / NH) + k]);
                    if (e > worst) worst = e;
                }
        }
    if (worst > 1e-5) fail_msg("attention: max |diff| %.3g vs double reference", worst);
    free(ref), free(qkv), free(scratch), free(one), free(got);
}

/* OpenBLAS's own threads: as in the server, attention's products run on
 * the calling thread (the pool above is what splits the work). */
void openblas_set_num_threads(int n);

int main(void) {
    openblas_set_num_threads(1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parallel_parts),
        cmocka_unit_test(test_elementwise_steps),
        cmocka_unit_test(test_attention_batch),
        cmocka_unit_test(test_fused_products),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
