/* test_gemm.c - the packed-weight product (src/gemm.c).
 *
 * Against a double-precision reference for shapes that cross every blocking
 * boundary of the kernel (8-row blocks, 32-column panels with a masked last
 * panel, 256-wide k chunks, 128-row chunks); bit-identical rows whatever the
 * number of rows or threads (the batch-invariance the model's tests rely
 * on), also when a thread takes over another's columns; the [out, in]
 * packing and the joining of column ranges. */
#include "testutil.h"

#include <math.h>
#include <stdint.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "layerlens/gemm.h"
#include "layerlens/pool.h"

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
                             {129, 96, 40}, {130, 520, 70}, {140, 1700, 40}, {300, 33, 65}};
    unsigned seed = 7;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int M = shapes[s][0], K = shapes[s][1], N = shapes[s][2];
        float *inp = tu_rand_floats((size_t)M * K, &seed, 2.0f);
        float *W = tu_rand_floats((size_t)K * N, &seed, 0.2f);
        float *bias = tu_rand_floats((size_t)N, &seed, 1.0f);
        float *out = tu_rand_floats((size_t)M * N, &seed, 9.0f);
        ll_packed p;
        assert_int_equal(ll_pack_weights(&p, W, K, N, LL_WEIGHTS_F32), 0);
        assert_true(ll_packed_bytes(&p) >= (size_t)K * N * sizeof(float));
        ll_gemm(out, inp, &p, bias, M);
        check_product(out, inp, W, bias, M, K, N);
        ll_gemm(out, inp, &p, NULL, M); /* no bias: the old contents must not leak in */
        check_product(out, inp, W, NULL, M, K, N);
        ll_packed_free(&p);
        free(inp), free(W), free(bias), free(out);
    }
}

/* A random product inp [M][K] @ W [K][N] + bias, W packed, and its result
 * on one thread (`want`). */
typedef struct product_case {
    int M, K, N;
    float *inp, *W, *bias, *want;
    ll_packed p;
} product_case;

static void case_new(product_case *c, ll_weight_type dtype, int M, int K, int N, unsigned seed,
                     float inp_scale) {
    *c = (product_case){.M = M, .K = K, .N = N};
    c->inp = tu_rand_floats((size_t)M * K, &seed, inp_scale);
    c->W = tu_rand_floats((size_t)K * N, &seed, 0.1f);
    c->bias = tu_rand_floats((size_t)N, &seed, 1.0f);
    c->want = malloc(sizeof(float) * M * N);
    assert_int_equal(ll_pack_weights(&c->p, c->W, K, N, dtype), 0);
    ll_pool_set_threads(1);
    assert_int_equal(ll_gemm(c->want, c->inp, &c->p, c->bias, M), 0);
}

static void case_free(product_case *c) {
    ll_packed_free(&c->p);
    free(c->inp), free(c->W), free(c->bias), free(c->want);
}

/* Row r of an M-row product equals the product of row r alone, bit for bit,
 * for every M; and two or three threads give the very same bits as one.
 * bf16: rows on both sides of BF16_DOT_ROWS (16) take different kernels,
 * which must agree too. */
static void rows_and_threads_invariant(ll_weight_type dtype, int K, int N, int M) {
    product_case c;
    case_new(&c, dtype, M, K, N, 11, 2.0f);
    const float *inp = c.inp, *bias = c.bias, *all = c.want;
    const ll_packed *p = &c.p;
    float *part = malloc(sizeof(float) * M * N);
    const int firsts[] = {0, 5, 63, 127, 130, 199};
    const int counts[] = {1, 2, 3, 8, 9, 16, 17, 31, 70};
    for (size_t i = 0; i < sizeof firsts / sizeof firsts[0]; i++)
        for (size_t j = 0; j < sizeof counts / sizeof counts[0]; j++) {
            int r0 = firsts[i], n = counts[j];
            if (r0 >= M) continue;
            if (r0 + n > M) n = M - r0;
            assert_int_equal(ll_gemm(part, inp + (long)r0 * K, p, bias, n), 0);
            assert_memory_equal(part, all + (long)r0 * N, sizeof(float) * n * N);
        }
    for (int t = 2; t <= 3; t++) {
        ll_pool_set_threads(t);
        assert_int_equal(ll_pool_threads(), t);
        memset(part, 0, sizeof(float) * M * N);
        assert_int_equal(ll_gemm(part, inp, p, bias, M), 0);
        assert_memory_equal(part, all, sizeof(float) * M * N);
    }
    ll_pool_set_threads(1);
    case_free(&c);
    free(part);
}

static void test_rows_and_threads_invariant(void **state) {
    (void)state;
    /* K = 1000: over 128 rows, k is cut into two chunks (gemm.c's KC) */
    rows_and_threads_invariant(LL_WEIGHTS_F32, 1000, 3 * 96 + 5, 200);
}

/* The [out, in] layout (nn.Linear) and columns joined from several matrices
 * (CLIP's q, k, v) pack to exactly the same panels as the [in, out] matrix. */
static void test_transposed_and_joined(void **state) {
    (void)state;
    const int K = 70, N = 3 * 40;
    unsigned seed = 3;
    float *W = tu_rand_floats((size_t)K * N, &seed, 1.0f), *Wt = malloc(sizeof(float) * K * N);
    for (int k = 0; k < K; k++)
        for (int n = 0; n < N; n++) Wt[(long)n * K + k] = W[(long)k * N + n];
    ll_packed a, b, c;
    assert_int_equal(ll_pack_weights(&a, W, K, N, LL_WEIGHTS_F32), 0);
    assert_int_equal(ll_pack_weights_t(&b, Wt, N, K, LL_WEIGHTS_F32), 0);
    assert_int_equal(ll_packed_init(&c, K, N, LL_WEIGHTS_F32), 0);
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
    float *inp = tu_rand_floats((size_t)M * K, &seed, 1.0f);
    float *W = tu_rand_floats((size_t)K * N, &seed, 0.1f);
    float *bias = tu_rand_floats((size_t)N, &seed, 1.0f), *want = malloc(sizeof(float) * M * N);
    ll_packed p;
    assert_int_equal(ll_pack_weights(&p, W, K, N, LL_WEIGHTS_F32), 0);
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

/* A thread whose part of a product is done takes the rest of another
 * part's from its end (panels with few rows, chunks of rows with more).
 * The calling thread, which computes part 0, stalls in its first epilogue
 * call (as if preempted) until a helper has taken over some of its work
 * (when the machine delays it before it starts, the helpers take all of
 * it): every output is still the one-thread bits, every element passes
 * through the epilogue exactly once, and some of part 0's columns were
 * passed on another thread. */
typedef struct stall_epi {
    pthread_t caller;
    int *seen;           /* [M][N]: times through the epilogue */
    int N, caller_cols;  /* columns of the caller's part */
    int stalled, taken;  /* the caller stalled; its columns seen on a helper */
    pthread_mutex_t mu;
} stall_epi;

static void stall_fn(void *ctx, float *out, long ldo, int row0, int rows, int col0, int cols) {
    stall_epi *s = ctx;
    int on_caller = pthread_equal(pthread_self(), s->caller);
    pthread_mutex_lock(&s->mu);
    int stall = on_caller && !s->stalled;
    if (stall) s->stalled = 1;
    if (!on_caller && col0 < s->caller_cols) s->taken = 1;
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) {
            s->seen[(long)(row0 + r) * s->N + col0 + c]++;
            out[r * ldo + c] += 1.0f;
        }
    pthread_mutex_unlock(&s->mu);
    /* stalled until a helper has taken some of this thread's work (at most
     * 20 s: a test that fails, not one that hangs) */
    for (int ms = 0; stall && ms < 20000; ms++) {
        pthread_mutex_lock(&s->mu);
        int taken = s->taken;
        pthread_mutex_unlock(&s->mu);
        if (taken) break;
        nanosleep(&(struct timespec){0, 1000 * 1000}, NULL);
    }
}

static void taken_over(int M, int K) {
    const int N = 64 * 32 + 7; /* 65 panels, the last partial */
    product_case c;
    case_new(&c, LL_WEIGHTS_F32, M, K, N, 13, 1.0f);
    float *want = c.want, *got = malloc(sizeof(float) * M * N);
    for (long i = 0; i < (long)M * N; i++) want[i] += 1.0f; /* the epilogue adds 1 */
    for (int t = 2; t <= 4; t++) {
        stall_epi s = {pthread_self(), calloc((size_t)M * N, sizeof(int)), N,
                       (int)(65 / t) * 32, 0, 0, PTHREAD_MUTEX_INITIALIZER};
        ll_epilogue e = {stall_fn, &s};
        ll_pool_set_threads(t);
        assert_int_equal(ll_gemm_epi(got, c.inp, &c.p, c.bias, M, &e), 0);
        if (memcmp(got, want, sizeof(float) * M * N))
            fail_msg("M=%d K=%d, %d threads: not the one-thread result", M, K, t);
        for (long i = 0; i < (long)M * N; i++)
            if (s.seen[i] != 1)
                fail_msg("M=%d K=%d, %d threads: element %ld passed %d times", M, K, t, i,
                         s.seen[i]);
        if (!s.taken)
            fail_msg("M=%d K=%d, %d threads: no helper took the stalled thread's work", M, K, t);
        free(s.seen);
    }
    ll_pool_set_threads(1);
    case_free(&c);
    free(got);
}

static void test_taken_over(void **state) {
    (void)state;
    taken_over(24, 256);   /* few rows: panel by panel */
    taken_over(300, 1000); /* chunks of 128 rows, k in two chunks */
}

/* ------------------------------------------------------------- bf16 */

static float bf16_f(uint16_t b) {
    uint32_t u = (uint32_t)b << 16;
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

/* Rounding to nearest even, ties, NaN, subnormals, overflow. */
static void test_bf16_round(void **state) {
    (void)state;
    assert_int_equal(ll_bf16_round(1.0f), 0x3f80);
    assert_int_equal(ll_bf16_round(-2.0f), 0xc000);
    assert_int_equal(ll_bf16_round(1.0f + 0x1p-8f), 0x3f80);              /* tie: to even */
    assert_int_equal(ll_bf16_round(1.0f + 0x1p-7f + 0x1p-8f), 0x3f82);    /* tie: to even */
    assert_int_equal(ll_bf16_round(1.0f + 0x1p-8f + 0x1p-20f), 0x3f81);   /* above the tie */
    assert_int_equal(ll_bf16_round(0x1p-130f), 0x0000);                   /* subnormal */
    assert_int_equal(ll_bf16_round(-0x1p-130f), 0x8000);
    assert_int_equal(ll_bf16_round(3.4e38f), 0x7f80);                     /* -> inf */
    assert_true(isnan(bf16_f(ll_bf16_round(NAN))));
    assert_true(isinf(bf16_f(ll_bf16_round(INFINITY))));
}

/* The bf16 product equals, bit for bit, a plain loop that does what
 * VDPBF16PS specifies: per k-pair, acc += a[2j+1] w[2j+1], then
 * acc += a[2j] w[2j], on values rounded to bfloat16; then + bias. */
static void check_bf16(const float *out, const float *inp, const float *W, const float *bias,
                       int M, int K, int N) {
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            float acc = 0;
            for (int k = 0; k < K; k += 2) {
                if (k + 1 < K)
                    acc += bf16_f(ll_bf16_round(inp[(long)m * K + k + 1])) *
                           bf16_f(ll_bf16_round(W[(long)(k + 1) * N + n]));
                acc += bf16_f(ll_bf16_round(inp[(long)m * K + k])) *
                       bf16_f(ll_bf16_round(W[(long)k * N + n]));
            }
            if (bias) acc += bias[n];
            if (out[(long)m * N + n] != acc)
                fail_msg("bf16 M=%d K=%d N=%d: out[%d][%d] = %.9g, expected %.9g", M, K, N, m, n,
                         out[(long)m * N + n], acc);
        }
}

static void test_bf16_product(void **state) {
    (void)state;
    /* odd K (a zero-padded last pair), partial panels, k chunks (M > 128) */
    const int shapes[][3] = {{1, 1, 1}, {1, 64, 32}, {3, 65, 96}, {7, 100, 33},
                             {9, 513, 17}, {64, 768, 64}, {130, 520, 70}, {200, 301, 40}};
    unsigned seed = 21;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int M = shapes[s][0], K = shapes[s][1], N = shapes[s][2];
        float *inp = tu_rand_floats((size_t)M * K, &seed, 2.0f);
        float *W = tu_rand_floats((size_t)K * N, &seed, 0.2f);
        float *Wt = malloc(sizeof(float) * K * N);
        for (int k = 0; k < K; k++)
            for (int n = 0; n < N; n++) Wt[(long)n * K + k] = W[(long)k * N + n];
        float *bias = tu_rand_floats((size_t)N, &seed, 1.0f);
        float *out = tu_rand_floats((size_t)M * N, &seed, 9.0f);
        ll_packed p, q, f;
        assert_int_equal(ll_pack_weights(&p, W, K, N, LL_WEIGHTS_BF16), 0);
        assert_int_equal(ll_pack_weights_t(&q, Wt, N, K, LL_WEIGHTS_BF16), 0);
        assert_int_equal(ll_pack_weights(&f, W, K, N, LL_WEIGHTS_F32), 0);
        /* half the bytes of float32 (up to K's padding to a pair) */
        assert_int_equal(ll_packed_bytes(&p) * 2 * K, ll_packed_bytes(&f) * (K + (K & 1)));
        assert_int_equal(ll_gemm(out, inp, &p, bias, M), 0);
        check_bf16(out, inp, W, bias, M, K, N);
        assert_int_equal(ll_gemm(out, inp, &q, NULL, M), 0);
        check_bf16(out, inp, W, NULL, M, K, N);
        ll_packed_free(&p), ll_packed_free(&q), ll_packed_free(&f);
        free(inp), free(W), free(Wt), free(bias), free(out);
    }
}

static void test_bf16_invariant(void **state) {
    (void)state;
    rows_and_threads_invariant(LL_WEIGHTS_BF16, 301, 2 * 96 + 7, 170);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_against_reference),
        cmocka_unit_test(test_rows_and_threads_invariant),
        cmocka_unit_test(test_transposed_and_joined),
        cmocka_unit_test(test_concurrent_callers),
        cmocka_unit_test(test_taken_over),
        cmocka_unit_test(test_bf16_round),
        cmocka_unit_test(test_bf16_product),
        cmocka_unit_test(test_bf16_invariant),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
