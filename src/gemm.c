/* gemm.c - products with weights packed at load time (see gemm.h).
 *
 * Blocking (AVX-512, one core):
 *   for each chunk of MC rows                 (the rows' chunk of inp: MC x KC floats, in L2)
 *     for each chunk of KC values of k        (a panel's chunk: KC x 32 floats, 32 KB, stays in L1)
 *       for each panel of 32 columns
 *         for each block of up to 8 rows      (8 x 32 accumulators = 16 zmm registers)
 *           acc = (first chunk ? 0 : out); acc += inp[r][k] * panel[k] for k in chunk;
 *           out = (last chunk ? acc + bias : acc)
 * Up to FEW_ROWS rows k is one chunk, so each panel is read whole, in memory
 * order; with few rows (the common case: a batch of short requests) the
 * weights are read from memory exactly once per product.  Splitting k into chunks does
 * not change any result: a float32 accumulator written to memory and read
 * back is the same float32.
 *
 * Threads (pool.h): the parts of a product are disjoint ranges of panels
 * (columns); every element is still computed by one thread in the same
 * order, so the thread count changes no result either. */
#include "layerlens/gemm.h"

#include <stdlib.h>
#include <string.h>

#include "layerlens/pool.h"

#ifdef __AVX512F__
#include <immintrin.h>
#endif

#define NR LL_GEMM_NR
#define MR 8    /* rows per register block */
#define KC 256  /* k per chunk */
#define MC 128  /* rows per chunk */
#define PREFETCH_K 64 /* weights are fetched this many k ahead (8 KB) */
#define FEW_ROWS 128 /* up to this many rows, k is not cut into chunks */

/* ---------------------------------------------------------------- packing */

static size_t panel_count(int N) { return (size_t)(N + NR - 1) / NR; }

int ll_packed_init(ll_packed *p, int K, int N) {
    size_t n = panel_count(N) * (size_t)K * NR;
    p->K = K, p->N = N;
    p->panels = aligned_alloc(64, (n * sizeof(float) + 63) / 64 * 64);
    if (!p->panels) return -1;
    memset(p->panels, 0, n * sizeof(float));
    return 0;
}

/* The element W[k][n] of the packed matrix. */
static inline float *at(const ll_packed *p, int k, int n) {
    return p->panels + (size_t)(n / NR) * p->K * NR + (size_t)k * NR + n % NR;
}

void ll_packed_set_t(ll_packed *p, int col0, const float *Wt, int n) {
    for (int j = 0; j < n; j++) {
        const float *src = Wt + (size_t)j * p->K;
        float *dst = at(p, 0, col0 + j);
        for (int k = 0; k < p->K; k++) dst[(size_t)k * NR] = src[k];
    }
}

int ll_pack_weights(ll_packed *p, const float *W, int K, int N) {
    if (ll_packed_init(p, K, N)) return -1;
    for (size_t j = 0; j < panel_count(N); j++) {
        int n0 = (int)j * NR, w = N - n0 < NR ? N - n0 : NR;
        for (int k = 0; k < K; k++)
            memcpy(at(p, k, n0), W + (size_t)k * N + n0, (size_t)w * sizeof(float));
    }
    return 0;
}

int ll_pack_weights_t(ll_packed *p, const float *Wt, int N, int K) {
    if (ll_packed_init(p, K, N)) return -1;
    ll_packed_set_t(p, 0, Wt, N);
    return 0;
}

void ll_packed_free(ll_packed *p) {
    free(p->panels);
    p->panels = NULL;
}

size_t ll_packed_bytes(const ll_packed *p) {
    return p->panels ? panel_count(p->N) * (size_t)p->K * NR * sizeof(float) : 0;
}

/* ---------------------------------------------------------------- kernels */

/* One block of mr rows x w (<= 32) columns over k in [k0, k0 + kn):
 *   acc = first ? 0 : out;  acc += a[r][k] * b[k][c] for each k in order;
 *   out = last ? acc + bias : acc
 * b points at the panel's row k0.  The bias is added after the sum, as BLAS
 * does with beta = 1 (a bias as the starting value would round every step
 * at the bias's magnitude). */
#ifdef __AVX512F__
static inline __attribute__((always_inline)) void
kernel(const int mr, int w, int kn, const float *a, long lda, const float *b,
       float *out, long ldo, const float *bias, int first, int last) {
    __m512 c0[MR], c1[MR];
    __mmask16 m0 = w >= 16 ? 0xffff : (__mmask16)((1u << w) - 1);
    __mmask16 m1 = w >= 32 ? 0xffff : w <= 16 ? 0 : (__mmask16)((1u << (w - 16)) - 1);
#pragma GCC unroll 8
    for (int r = 0; r < mr; r++) {
        c0[r] = first ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(m0, out + r * ldo);
        c1[r] = first ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(m1, out + r * ldo + 16);
    }
    for (int k = 0; k < kn; k++) {
        __m512 b0 = _mm512_load_ps(b + (long)k * NR);
        __m512 b1 = _mm512_load_ps(b + (long)k * NR + 16);
        _mm_prefetch((const char *)(b + (long)(k + PREFETCH_K) * NR), _MM_HINT_T0);
        _mm_prefetch((const char *)(b + (long)(k + PREFETCH_K) * NR + 16), _MM_HINT_T0);
#pragma GCC unroll 8
        for (int r = 0; r < mr; r++) {
            __m512 ar = _mm512_set1_ps(a[r * lda + k]);
            c0[r] = _mm512_fmadd_ps(ar, b0, c0[r]);
            c1[r] = _mm512_fmadd_ps(ar, b1, c1[r]);
        }
    }
    if (last && bias) {
        __m512 bb0 = _mm512_maskz_loadu_ps(m0, bias), bb1 = _mm512_maskz_loadu_ps(m1, bias + 16);
#pragma GCC unroll 8
        for (int r = 0; r < mr; r++) {
            c0[r] = _mm512_add_ps(c0[r], bb0);
            c1[r] = _mm512_add_ps(c1[r], bb1);
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < mr; r++) {
        _mm512_mask_storeu_ps(out + r * ldo, m0, c0[r]);
        _mm512_mask_storeu_ps(out + r * ldo + 16, m1, c1[r]);
    }
}
#else
/* Portable version (builds without AVX-512, e.g. the valgrind build): the
 * same order of operations per element, in GCC's generic 4-lane vectors
 * (SSE2 everywhere on x86-64; plain scalar loops ran 100x slower under
 * valgrind).  A multiply and an add: without FMA hardware fmaf is a slow
 * library call. */
typedef float v4f __attribute__((vector_size(16)));

static inline void kernel(const int mr, int w, int kn, const float *a, long lda,
                          const float *b, float *out, long ldo, const float *bias,
                          int first, int last) {
    for (int r = 0; r < mr; r++) {
        v4f acc[NR / 4];
        float tmp[NR] = {0};
        if (!first) memcpy(tmp, out + r * ldo, (size_t)w * sizeof(float));
        memcpy(acc, tmp, sizeof acc);
        for (int k = 0; k < kn; k++) {
            float x = a[r * lda + k];
            v4f xv = {x, x, x, x};
            const v4f *bk = (const v4f *)(b + (long)k * NR); /* panels: 64-byte aligned */
            for (int c = 0; c < NR / 4; c++) acc[c] += xv * bk[c];
        }
        memcpy(tmp, acc, sizeof acc);
        if (last && bias)
            for (int c = 0; c < w; c++) tmp[c] += bias[c];
        memcpy(out + r * ldo, tmp, (size_t)w * sizeof(float));
    }
}
#endif

/* mr is a constant in each case, so each kernel's loops unroll completely
 * and its accumulators live in registers. */
static void block(int mr, int w, int kn, const float *a, long lda, const float *b,
                  float *out, long ldo, const float *bias, int first, int last) {
    switch (mr) {
#define K_(n) case n: kernel(n, w, kn, a, lda, b, out, ldo, bias, first, last); break;
        K_(1) K_(2) K_(3) K_(4) K_(5) K_(6) K_(7) K_(8)
#undef K_
    }
}

/* The product restricted to panels [p0, p1). */
static void gemm_panels(float *out, const float *inp, const ll_packed *W,
                        const float *bias, int M, size_t p0, size_t p1) {
    int K = W->K, N = W->N;
    /* With few rows a panel is used by few row blocks: reading each panel
     * whole, in memory order, keeps the weights one sequential stream. */
    int kc = M <= FEW_ROWS ? K : KC;
    for (int r0 = 0; r0 < M; r0 += MC) {
        int rn = M - r0 < MC ? M - r0 : MC;
        for (int k0 = 0; k0 < K; k0 += kc) {
            int kn = K - k0 < kc ? K - k0 : kc;
            for (size_t p = p0; p < p1; p++) {
                int n0 = (int)p * NR, w = N - n0 < NR ? N - n0 : NR;
                const float *b = W->panels + p * (size_t)K * NR + (size_t)k0 * NR;
                for (int r = r0; r < r0 + rn; r += MR) {
                    int mr = r0 + rn - r < MR ? r0 + rn - r : MR;
                    block(mr, w, kn, inp + (long)r * K + k0, K, b, out + (long)r * N + n0, N,
                          bias ? bias + n0 : NULL, k0 == 0, k0 + kn == K);
                }
            }
        }
    }
}

/* ---------------------------------------------------------------- threads */

typedef struct gemm_job {
    float *out;
    const float *inp, *bias;
    const ll_packed *W;
    int M;
} gemm_job;

/* Part `part` of `parts`: a range of the panels (columns). */
static void gemm_part(void *ctx, int part, int parts) {
    const gemm_job *j = ctx;
    size_t P = panel_count(j->W->N);
    size_t p0 = P * part / parts, p1 = P * (part + 1) / parts;
    if (p1 > p0) gemm_panels(j->out, j->inp, j->W, j->bias, j->M, p0, p1);
}

void ll_gemm(float *out, const float *inp, const ll_packed *W, const float *bias,
             int M) {
    if (M <= 0) return;
    gemm_job j = {out, inp, bias, W, M};
    ll_parallel(gemm_part, &j, (int)panel_count(W->N));
}
