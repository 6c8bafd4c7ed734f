/* gemm.c - products with weights packed at load time (see gemm.h).
 *
 * Blocking (AVX-512, one core):
 *   for each chunk of MC rows                 (the rows' chunk of inp: MC x KC floats)
 *     for each chunk of KC values of k
 *       for each panel of 32 columns          (a panel's chunk: KC x 32 floats, 96 KB, stays in L2)
 *         for each block of up to 8 rows      (8 x 32 accumulators = 16 zmm registers;
 *                                              the block's rows: 8 x KC floats, 24 KB, in L1)
 *           acc = (first chunk ? 0 : out); acc += inp[r][k] * panel[k] for k in chunk;
 *           out = (last chunk ? acc + bias : acc)
 * Up to FEW_ROWS rows k is one chunk, so each panel is read whole, in memory
 * order; with few rows (the common case: a batch of short requests) the
 * weights are read from memory exactly once per product, and the row blocks
 * after a panel's first fetch the next panel into L2 while they compute
 * (gemm_panels).  Splitting k into chunks does
 * not change any result: a float32 accumulator written to memory and read
 * back is the same float32.
 *
 * Threads (pool.h): the parts of a product are disjoint ranges of panels
 * (columns), and a thread done with its part takes over the rest of
 * another's from its end (gemm_shared); every element is still computed by
 * one thread in the same order, so the thread count changes no result
 * either. */
#include "layerlens/gemm.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "layerlens/pool.h"

#ifdef __AVX512F__
#include <immintrin.h>
#endif

#define NR LL_GEMM_NR
#define MR 8    /* rows per register block */
#define KC 768  /* k per chunk: K <= 768 (every product but the MLP's second) is not cut.
                 * 256 (a panel's chunk in L1) measured 7-10% slower at 1,024-2,048 rows
                 * (CLIP's and GPT-2's shapes, one core): each extra chunk stores and
                 * reloads the partial sums of MC rows x N, up to 1.5 MB */
#define KC16 256 /* bf16 above BF16_DOT_ROWS rows: pairs of k per widened chunk x 2 */
#define MC 128  /* rows per chunk */
#define PREFETCH_K 64 /* weights are fetched this many k ahead (8 KB) */
#define FEW_ROWS 128 /* up to this many rows, k is not cut into chunks */
#define BF16_DOT_ROWS 16 /* bf16: up to this many rows, VDPBF16PS (see gemm_panels16_fma) */

/* The part of the next panel a kernel call fetches into L2 as it goes: one
 * k of that panel (two cache lines) every `every` iterations of its k loop,
 * `ks` of them from p on. */
typedef struct prefetch_slice {
    const char *p;
    int ks, every;
} prefetch_slice;

/* ---------------------------------------------------------------- packing */

static size_t panel_count(int N) { return (size_t)(N + NR - 1) / NR; }
static size_t pair_count(int K) { return (size_t)(K + 1) / 2; }

/* Round to nearest even, as VCVTNE2PS2BF16 does: subnormal inputs become
 * signed zeros, a NaN stays a (quiet) NaN. */
uint16_t ll_bf16_round(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    if ((u & 0x7f800000u) == 0) return (uint16_t)((u >> 16) & 0x8000u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static inline float bf16_value(uint16_t b) {
    uint32_t u = (uint32_t)b << 16;
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

static size_t packed_elems(int K, int N, ll_weight_type dtype) {
    return dtype == LL_WEIGHTS_BF16 ? panel_count(N) * pair_count(K) * NR * 2
                            : panel_count(N) * (size_t)K * NR;
}

int ll_packed_init(ll_packed *p, int K, int N, ll_weight_type dtype) {
    size_t bytes = packed_elems(K, N, dtype) * (dtype == LL_WEIGHTS_BF16 ? 2 : 4);
    void *mem = aligned_alloc(64, (bytes + 63) / 64 * 64);
    *p = (ll_packed){.K = K, .N = N, .dtype = dtype};
    if (!mem) return -1;
    memset(mem, 0, bytes);
    if (dtype == LL_WEIGHTS_BF16) p->panels16 = mem;
    else p->panels = mem;
    return 0;
}

/* The element W[k][n] of a float32 packed matrix. */
static inline float *at(const ll_packed *p, int k, int n) {
    return p->panels + (size_t)(n / NR) * p->K * NR + (size_t)k * NR + n % NR;
}

/* The element W[k][n] of a bfloat16 packed matrix (see gemm.h). */
static inline uint16_t *at16(const ll_packed *p, int k, int n) {
    return p->panels16 + (size_t)(n / NR) * pair_count(p->K) * NR * 2 +
           (size_t)(k / 2) * NR * 2 + (size_t)(n % NR) * 2 + (k & 1);
}

void ll_packed_set_t(ll_packed *p, int col0, const float *Wt, int n) {
    for (int j = 0; j < n; j++) {
        const float *src = Wt + (size_t)j * p->K;
        if (p->dtype == LL_WEIGHTS_BF16) {
            for (int k = 0; k < p->K; k++) *at16(p, k, col0 + j) = ll_bf16_round(src[k]);
            continue;
        }
        float *dst = at(p, 0, col0 + j);
        for (int k = 0; k < p->K; k++) dst[(size_t)k * NR] = src[k];
    }
}

int ll_pack_weights(ll_packed *p, const float *W, int K, int N, ll_weight_type dtype) {
    if (ll_packed_init(p, K, N, dtype)) return -1;
    for (size_t j = 0; j < panel_count(N); j++) {
        int n0 = (int)j * NR, w = N - n0 < NR ? N - n0 : NR;
        for (int k = 0; k < K; k++) {
            const float *src = W + (size_t)k * N + n0;
            if (dtype == LL_WEIGHTS_BF16)
                for (int c = 0; c < w; c++) *at16(p, k, n0 + c) = ll_bf16_round(src[c]);
            else
                memcpy(at(p, k, n0), src, (size_t)w * sizeof(float));
        }
    }
    return 0;
}

int ll_pack_weights_t(ll_packed *p, const float *Wt, int N, int K, ll_weight_type dtype) {
    if (ll_packed_init(p, K, N, dtype)) return -1;
    ll_packed_set_t(p, 0, Wt, N);
    return 0;
}

void ll_packed_free(ll_packed *p) {
    free(p->panels);
    free(p->panels16);
    p->panels = NULL;
    p->panels16 = NULL;
}

size_t ll_packed_bytes(const ll_packed *p) {
    if (!p->panels && !p->panels16) return 0;
    return packed_elems(p->K, p->N, p->dtype) * (p->dtype == LL_WEIGHTS_BF16 ? 2 : 4);
}

const char *ll_weight_type_name(ll_weight_type d) { return d == LL_WEIGHTS_BF16 ? "bf16" : "f32"; }

int ll_weight_type_parse(const char *s, ll_weight_type *out, ll_error *err) {
    if (!strcmp(s, "f32") || !strcmp(s, "float32")) *out = LL_WEIGHTS_F32;
    else if (!strcmp(s, "bf16") || !strcmp(s, "bfloat16")) *out = LL_WEIGHTS_BF16;
    else return ll_errorf(err, "unknown weight type '%s' (expected f32 or bf16)", s);
    return 0;
}

const char LL_BF16_SLOW_WARNING[] =
    "--dtype bf16: this build does not use AVX512-BF16 instructions (built without them, or "
    "the CPU lacks them), so the bf16 products run on portable code: the same results, many "
    "times slower than --dtype f32";

int ll_bf16_native(void) {
#ifdef __AVX512BF16__
    return 1;
#else
    return 0;
#endif
}

/* ---------------------------------------------------------------- kernels */

/* One block of mr rows x w (<= 32) columns over k in [k0, k0 + kn):
 *   acc = first ? 0 : out;  acc += a[r][k] * b[k][c] for each k in order;
 *   out = last ? acc + bias : acc
 * b points at the panel's row k0.  The bias is added after the sum, as BLAS
 * does with beta = 1 (a bias as the starting value would round every step
 * at the bias's magnitude). */
#ifdef __AVX512F__
/* The accumulators of a block of mr rows x w columns: 0 for the first
 * chunk of k, else the partial sums stored in out (masks m0, m1: the valid
 * columns of each half of the panel). */
static inline __attribute__((always_inline)) void
acc_start(__m512 *c0, __m512 *c1, __mmask16 *m0, __mmask16 *m1, const int mr, int w,
          const float *out, long ldo, int first) {
    *m0 = w >= 16 ? 0xffff : (__mmask16)((1u << w) - 1);
    *m1 = w >= 32 ? 0xffff : w <= 16 ? 0 : (__mmask16)((1u << (w - 16)) - 1);
#pragma GCC unroll 8
    for (int r = 0; r < mr; r++) {
        c0[r] = first ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(*m0, out + r * ldo);
        c1[r] = first ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(*m1, out + r * ldo + 16);
    }
}

/* Stores the accumulators, + bias after the last chunk of k. */
static inline __attribute__((always_inline)) void
acc_finish(__m512 *c0, __m512 *c1, __mmask16 m0, __mmask16 m1, const int mr, float *out,
           long ldo, const float *bias, int last) {
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

static inline __attribute__((always_inline)) void
kernel(const int mr, int w, int kn, const float *a, long lda, const float *b,
       float *out, long ldo, const float *bias, int first, int last, const prefetch_slice *pf) {
    __m512 c0[MR], c1[MR];
    __mmask16 m0, m1;
    const char *pl = pf ? pf->p : NULL;
    int every = pf ? pf->every : 0, left = pf ? pf->ks : 0, countdown = every;
    acc_start(c0, c1, &m0, &m1, mr, w, out, ldo, first);
    for (int k = 0; k < kn; k++) {
        __m512 b0 = _mm512_load_ps(b + (long)k * NR);
        __m512 b1 = _mm512_load_ps(b + (long)k * NR + 16);
        _mm_prefetch((const char *)(b + (long)(k + PREFETCH_K) * NR), _MM_HINT_T0);
        _mm_prefetch((const char *)(b + (long)(k + PREFETCH_K) * NR + 16), _MM_HINT_T0);
        if (left > 0 && --countdown == 0) { /* the next panel, into L2 */
            _mm_prefetch(pl, _MM_HINT_T1);
            _mm_prefetch(pl + 64, _MM_HINT_T1);
            pl += NR * sizeof(float), left--, countdown = every;
        }
#pragma GCC unroll 8
        for (int r = 0; r < mr; r++) {
            __m512 ar = _mm512_set1_ps(a[r * lda + k]);
            c0[r] = _mm512_fmadd_ps(ar, b0, c0[r]);
            c1[r] = _mm512_fmadd_ps(ar, b1, c1[r]);
        }
    }
    acc_finish(c0, c1, m0, m1, mr, out, ldo, bias, last);
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
                          int first, int last, const prefetch_slice *pf) {
    (void)pf;
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
 * and its accumulators live in registers.  Aligned to a cache line, so that
 * where the linker happens to put it does not move its loops against the
 * fetch boundaries when other code changes (an A/B of two builds otherwise
 * measures the placement too). */
__attribute__((aligned(64))) static void
block(int mr, int w, int kn, const float *a, long lda, const float *b, float *out, long ldo,
      const float *bias, int first, int last, const prefetch_slice *pf) {
    switch (mr) {
#define K_(n) case n: kernel(n, w, kn, a, lda, b, out, ldo, bias, first, last, pf); break;
        K_(1) K_(2) K_(3) K_(4) K_(5) K_(6) K_(7) K_(8)
#undef K_
    }
}

/* ------------------------------------------------------------ bf16 kernels */

/* The bf16 counterpart of kernel(): a holds the rows rounded to bfloat16
 * (a k-pair is one 32-bit word: a[r * lda + j] = rows' values 2j, 2j+1),
 * b the panel from pair j0 on, kn pairs.  Per pair and column, as
 * VDPBF16PS computes it: acc += a[2j+1] * w[2j+1]; acc += a[2j] * w[2j],
 * each product exact in float32, each sum rounded. */
#ifdef __AVX512BF16__
static inline __attribute__((always_inline)) void
kernel16(const int mr, int w, int kn, const uint32_t *a, long lda, const uint16_t *b,
         float *out, long ldo, const float *bias, int first, int last) {
    __m512 c0[MR], c1[MR];
    __mmask16 m0, m1;
    acc_start(c0, c1, &m0, &m1, mr, w, out, ldo, first);
    for (int j = 0; j < kn; j++) {
        __m512bh b0 = (__m512bh)_mm512_load_si512(b + (long)j * NR * 2);
        __m512bh b1 = (__m512bh)_mm512_load_si512(b + (long)j * NR * 2 + NR);
        _mm_prefetch((const char *)(b + (long)(j + PREFETCH_K) * NR * 2), _MM_HINT_T0);
        _mm_prefetch((const char *)(b + (long)(j + PREFETCH_K) * NR * 2 + NR), _MM_HINT_T0);
#pragma GCC unroll 8
        for (int r = 0; r < mr; r++) {
            __m512bh ar = (__m512bh)_mm512_set1_epi32((int)a[r * lda + j]);
            c0[r] = _mm512_dpbf16_ps(c0[r], ar, b0);
            c1[r] = _mm512_dpbf16_ps(c1[r], ar, b1);
        }
    }
    acc_finish(c0, c1, m0, m1, mr, out, ldo, bias, last);
}
#else
/* Portable: the same two rounded sums per pair, one column at a time. */
static inline void kernel16(const int mr, int w, int kn, const uint32_t *a, long lda,
                            const uint16_t *b, float *out, long ldo, const float *bias,
                            int first, int last) {
    for (int r = 0; r < mr; r++) {
        float acc[NR] = {0};
        if (!first) memcpy(acc, out + r * ldo, (size_t)w * sizeof(float));
        for (int j = 0; j < kn; j++) {
            uint32_t pair = a[r * lda + j];
            float x0 = bf16_value((uint16_t)(pair & 0xffffu));
            float x1 = bf16_value((uint16_t)(pair >> 16));
            const uint16_t *bj = b + (long)j * NR * 2;
            for (int c = 0; c < NR; c++) {
                acc[c] += x1 * bf16_value(bj[2 * c + 1]);
                acc[c] += x0 * bf16_value(bj[2 * c]);
            }
        }
        if (last && bias)
            for (int c = 0; c < w; c++) acc[c] += bias[c];
        memcpy(out + r * ldo, acc, (size_t)w * sizeof(float));
    }
}
#endif

static void block16(int mr, int w, int kn, const uint32_t *a, long lda, const uint16_t *b,
                    float *out, long ldo, const float *bias, int first, int last) {
    switch (mr) {
#define K_(n) case n: kernel16(n, w, kn, a, lda, b, out, ldo, bias, first, last); break;
        K_(1) K_(2) K_(3) K_(4) K_(5) K_(6) K_(7) K_(8)
#undef K_
    }
}

/* The epilogue on rows [r0, r0 + rn) x the columns of panels [p0, p1) of
 * out [.][N], once they are final: a chunk's rows, in L2, passed as one
 * region (a call per 8 x 32 block measured slower than the separate pass
 * it replaces: too little work between the calls). */
static void epilogue(const ll_epilogue *epi, float *out, int N, int r0, int rn, size_t p0,
                     size_t p1) {
    if (!epi) return;
    int n0 = (int)p0 * NR, n1 = (int)p1 * NR < N ? (int)p1 * NR : N;
    epi->fn(epi->ctx, out + (long)r0 * N + n0, N, r0, rn, n0, n1 - n0);
}

/* gemm_panels for bf16 weights and at most BF16_DOT_ROWS rows (one row
 * chunk, k never cut: each panel is read once, whole): a [M][lda] holds the
 * rows' k-pairs. */
static void gemm_panels16(float *out, const uint32_t *a, long lda, const ll_packed *W,
                          const float *bias, int M, size_t p0, size_t p1,
                          const ll_epilogue *epi) {
    int N = W->N, P2 = (int)pair_count(W->K);
    for (size_t p = p0; p < p1; p++) {
        int n0 = (int)p * NR, w = N - n0 < NR ? N - n0 : NR;
        const uint16_t *b = W->panels16 + p * (size_t)P2 * NR * 2;
        for (int r = 0; r < M; r += MR) {
            int mr = M - r < MR ? M - r : MR;
            block16(mr, w, P2, a + (long)r * lda, lda, b, out + (long)r * N + n0, N,
                    bias ? bias + n0 : NULL, 1, 1);
        }
    }
    epilogue(epi, out, N, 0, M, p0, p1);
}

/* kn pairs of a bf16 panel -> 2 kn rows of NR floats, each pair's odd
 * row first. */
static void widen_chunk(float *wide, const uint16_t *b, int kn) {
    for (int j = 0; j < kn; j++) {
        const uint16_t *bj = b + (long)j * NR * 2;
        float *odd = wide + (long)2 * j * NR, *even = odd + NR;
#ifdef __AVX512F__
        for (int h = 0; h < 2; h++) {
            __m512i v = _mm512_load_si512(bj + h * NR);
            _mm512_store_ps(odd + 16 * h, _mm512_castsi512_ps(
                _mm512_and_si512(v, _mm512_set1_epi32((int)0xffff0000u))));
            _mm512_store_ps(even + 16 * h, _mm512_castsi512_ps(_mm512_slli_epi32(v, 16)));
        }
#else
        for (int c = 0; c < NR; c++) {
            odd[c] = bf16_value(bj[2 * c + 1]);
            even[c] = bf16_value(bj[2 * c]);
        }
#endif
    }
}

/* More rows: VDPBF16PS does about 60% of the multiply-adds per cycle of
 * FMA here (78 vs 123 GFLOP/s on one core at 64 rows), so with few rows,
 * where the weights' bytes bound the time, it is 1.7-3x faster than
 * float32, and from ~32 rows on it is slower.  Above BF16_DOT_ROWS rows
 * the same sums are therefore computed with the float32 kernel.  A
 * product of two bfloat16 values is exact in float32, so fma(a, w, acc)
 * rounds once like each of VDPBF16PS's two sums: with each
 * pair's odd k first, the results are the same bits.  a [M][lda] holds the
 * rounded rows as floats, each pair swapped (round_rows_swapped); each
 * chunk of a panel is widened to floats, swapped the same way, and used by
 * every row block of the chunk. */
static void gemm_panels16_fma(float *out, const float *a, long lda, const ll_packed *W,
                              const float *bias, int M, size_t p0, size_t p1,
                              const ll_epilogue *epi) {
    int N = W->N, P2 = (int)pair_count(W->K), kc = KC16 / 2;
    float wide[KC16 * NR] __attribute__((aligned(64)));
    for (int r0 = 0; r0 < M; r0 += MC) {
        int rn = M - r0 < MC ? M - r0 : MC;
        for (int k0 = 0; k0 < P2; k0 += kc) {
            int kn = P2 - k0 < kc ? P2 - k0 : kc;
            for (size_t p = p0; p < p1; p++) {
                int n0 = (int)p * NR, w = N - n0 < NR ? N - n0 : NR;
                widen_chunk(wide, W->panels16 + (p * (size_t)P2 + (size_t)k0) * NR * 2, kn);
                for (int r = r0; r < r0 + rn; r += MR) {
                    int mr = r0 + rn - r < MR ? r0 + rn - r : MR;
                    block(mr, w, 2 * kn, a + (long)r * lda + 2 * k0, lda, wide,
                          out + (long)r * N + n0, N, bias ? bias + n0 : NULL, k0 == 0,
                          k0 + kn == P2, NULL);
                }
            }
        }
        epilogue(epi, out, N, r0, rn, p0, p1);
    }
}

/* rows [M][K] -> a [M][lda] k-pairs in bfloat16 (a zero after an odd K). */
static void round_rows(uint32_t *a, long lda, const float *inp, int M, int K) {
    for (int r = 0; r < M; r++) {
        const float *x = inp + (long)r * K;
        uint16_t *o = (uint16_t *)(a + (long)r * lda);
        int k = 0;
#ifdef __AVX512BF16__
        for (; k + 32 <= K; k += 32) {
            __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + k + 16), _mm512_loadu_ps(x + k));
            _mm512_storeu_si512(o + k, (__m512i)v);
        }
#endif
        for (; k < K; k++) o[k] = ll_bf16_round(x[k]);
        if (K & 1) o[K] = 0;
    }
}

/* rows [M][K] -> a [M][lda] floats rounded to bfloat16, each pair
 * swapped: a[2j] = x[2j+1], a[2j+1] = x[2j] (a zero for an odd K's
 * missing x[K]). */
static void round_rows_swapped(float *a, long lda, const float *inp, int M, int K) {
#ifdef __AVX512BF16__
    /* output float i of a 32-float block: pair i/2's odd value, then its even */
    const __m512i lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const __m512i hi = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30,
                                         15, 31);
#endif
    for (int r = 0; r < M; r++) {
        const float *x = inp + (long)r * K;
        float *o = a + (long)r * lda;
        int k0 = 0;
#ifdef __AVX512BF16__
        for (; k0 + 32 <= K; k0 += 32) {
            __m512i v = (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + k0 + 16),
                                                     _mm512_loadu_ps(x + k0));
            __m512i hi16 = _mm512_and_si512(v, _mm512_set1_epi32((int)0xffff0000u));
            __m512 odd = _mm512_castsi512_ps(hi16);
            __m512 even = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
            _mm512_storeu_ps(o + k0, _mm512_permutex2var_ps(odd, lo, even));
            _mm512_storeu_ps(o + k0 + 16, _mm512_permutex2var_ps(odd, hi, even));
        }
#endif
        for (int k = k0; k < K; k += 2) {
            o[k] = k + 1 < K ? bf16_value(ll_bf16_round(x[k + 1])) : 0.0f;
            o[k + 1] = bf16_value(ll_bf16_round(x[k]));
        }
    }
}

/* This thread's buffer for rounded rows, kept for the thread's life (a
 * key's destructor frees it when the thread ends). */
static pthread_key_t rows_key;
static pthread_once_t rows_once = PTHREAD_ONCE_INIT;
static _Thread_local struct {
    uint32_t *p;
    size_t cap;
} rows_buf;
static void rows_key_init(void) { (void)pthread_key_create(&rows_key, free); }

static uint32_t *rows_buffer(size_t n) {
    if (n > rows_buf.cap) {
        pthread_once(&rows_once, rows_key_init);
        free(rows_buf.p);
        rows_buf.p = aligned_alloc(64, (n * sizeof(uint32_t) + 63) / 64 * 64);
        rows_buf.cap = rows_buf.p ? n : 0;
        pthread_setspecific(rows_key, rows_buf.p);
    }
    return rows_buf.p;
}

/* Rows [r0, r0 + rn) x k [k0, k0 + kn) of panel p; with `next`, its row
 * blocks after the first fetch a slice each of panel p + 1 into L2 (`slice`
 * k rows, one every `every` k: see gemm_panels). */
static void panel_rows(float *out, const float *inp, const ll_packed *W, const float *bias,
                       int r0, int rn, int k0, int kn, size_t p, int next, int slice,
                       int every) {
    int K = W->K, N = W->N;
    int n0 = (int)p * NR, w = N - n0 < NR ? N - n0 : NR;
    const float *b = W->panels + p * (size_t)K * NR + (size_t)k0 * NR;
    const char *nb = next ? (const char *)(b + (size_t)K * NR) : NULL;
    for (int r = r0, i = 0; r < r0 + rn; r += MR, i++) {
        int mr = r0 + rn - r < MR ? r0 + rn - r : MR;
        prefetch_slice ps = {NULL, 0, 0};
        if (nb && i > 0 && (i - 1) * slice < kn) {
            int ks = kn - (i - 1) * slice;
            ps = (prefetch_slice){nb + (long)(i - 1) * slice * NR * sizeof(float),
                                  ks < slice ? ks : slice, every};
        }
        block(mr, w, kn, inp + (long)r * K + k0, K, b, out + (long)r * N + n0, N,
              bias ? bias + n0 : NULL, k0 == 0, k0 + kn == K, ps.p ? &ps : NULL);
    }
}

/* The prefetch slice of each row block after the first, for rn rows and kn
 * k (0: no prefetch), and how often a k loop issues one. */
static void slice_for(int rn, int kn, int *slice, int *every) {
    int blocks = (rn + MR - 1) / MR;
    *slice = blocks > 1 ? (kn + blocks - 2) / (blocks - 1) : 0;
    *every = *slice ? (kn / *slice > 0 ? kn / *slice : 1) : 0;
}

/* Rows [r0, r0 + MC) (or to M) of the product restricted to panels
 * [p0, p1), then the epilogue on them. */
static void gemm_chunk(float *out, const float *inp, const ll_packed *W, const float *bias,
                       int M, int r0, size_t p0, size_t p1, const ll_epilogue *epi) {
    int K = W->K, rn = M - r0 < MC ? M - r0 : MC;
    /* With few rows a panel is used by few row blocks: reading each panel
     * whole, in memory order, keeps the weights one sequential stream. */
    int kc = M <= FEW_ROWS ? K : KC;
    for (int k0 = 0; k0 < K; k0 += kc) {
        int kn = K - k0 < kc ? K - k0 : kc;
        /* In the first chunk of rows the weights come from memory: the
         * first row block of a panel's chunk waits for it, the others
         * find it in L2.  So the others fetch the next panel's chunk
         * into L2, a slice each, spread over their k loops: the
         * weights stream while the kernel computes.  Later chunks of
         * rows find the panels in L3 (fetching them ahead there was
         * 0.89-1.01x at 2,048 rows). */
        int slice = 0, every = 0;
        if (r0 == 0) slice_for(rn, kn, &slice, &every);
        for (size_t p = p0; p < p1; p++)
            panel_rows(out, inp, W, bias, r0, rn, k0, kn, p, p + 1 < p1, slice, every);
    }
    epilogue(epi, out, W->N, r0, rn, p0, p1);
}

/* The product restricted to panels [p0, p1). */
static void gemm_panels(float *out, const float *inp, const ll_packed *W,
                        const float *bias, int M, size_t p0, size_t p1, const ll_epilogue *epi) {
    for (int r0 = 0; r0 < M; r0 += MC) gemm_chunk(out, inp, W, bias, M, r0, p0, p1, epi);
}

/* ---------------------------------------------------------------- threads */

#define EPI_PANELS 4 /* few rows: the epilogue every 4 panels (128 columns) */

/* A part's units of work not yet taken (gemm_shared): its own thread takes
 * them from the front, a thread whose part is done from the back.  One word,
 * changed by compare-and-swap: taken from the front (low 32 bits) and from
 * the back (high 32 bits).  A cache line each, so that the owners' takes do
 * not contend. */
typedef struct part_taken {
    _Alignas(64) _Atomic uint64_t v;
} part_taken;

typedef struct gemm_job {
    float *out;
    const float *inp, *bias;
    const ll_packed *W;
    int M;
    const uint32_t *a16; /* bf16: the rounded rows, lda16 words apart
                            (floats when M > BF16_DOT_ROWS) */
    long lda16;
    const ll_epilogue *epi;
    part_taken taken[LL_POOL_MAX_THREADS]; /* float32 (gemm_shared): zero at the start;
                                              a step has at most that many parts */
} gemm_job;

/* Takes one unit of a part's units [p0, p1): from the front or the back.
 * Its index, or -1 when none is left. */
static long take_unit(part_taken *t, size_t p0, size_t p1, int back) {
    uint64_t v = atomic_load_explicit(&t->v, memory_order_relaxed);
    for (;;) {
        uint64_t front = v & 0xffffffffu, rear = v >> 32;
        if (p0 + front + rear >= p1) return -1;
        uint64_t nv = back ? v + ((uint64_t)1 << 32) : v + 1;
        if (atomic_compare_exchange_weak_explicit(&t->v, &v, nv, memory_order_relaxed,
                                                  memory_order_relaxed))
            return back ? (long)(p1 - 1 - rear) : (long)(p0 + front);
    }
}

/* float32 on several threads: part q's columns are panels [P q / parts,
 * P (q + 1) / parts), cut into units that its own thread computes in
 * order, and that a thread whose part is done takes from the end of the
 * others' (in the server a pass shares the two cores with the HTTP
 * threads: a thread preempted for one of those would otherwise make the
 * other wait at the end of every step; docs/benchmark.md has the
 * measurements).  Every output element is still
 * computed by one thread in the same order: no result changes.
 *   Few rows (one chunk of rows, k whole): a unit is one panel, all rows.
 * The owner fetches its next panel ahead as gemm_panels does, and the
 * epilogue runs every EPI_PANELS panels of a contiguous run.
 *   More rows: a unit is one chunk of MC rows of the part's panels
 * (gemm_chunk: each panel's chunks of k in order, on one thread). */
static void gemm_shared(gemm_job *j, int part, int parts) {
    size_t P = panel_count(j->W->N);
    int M = j->M, K = j->W->K, few = M <= FEW_ROWS, slice = 0, every = 0;
    if (few) slice_for(M, K, &slice, &every);
    size_t units = few ? 0 : (size_t)(M + MC - 1) / MC;
    for (int i = 0; i < parts; i++) {
        int q = (part + i) % parts, back = i > 0;
        size_t p0 = P * q / parts, p1 = P * (q + 1) / parts;
        if (p1 <= p0) continue; /* more threads than panels */
        if (!few) {
            for (long u; (u = take_unit(&j->taken[q], 0, units, back)) >= 0;)
                gemm_chunk(j->out, j->inp, j->W, j->bias, M, (int)u * MC, p0, p1, j->epi);
            continue;
        }
        long run0 = -1, run1 = -1; /* panels computed and not yet through the epilogue */
        for (long p; (p = take_unit(&j->taken[q], p0, p1, back)) >= 0;) {
            /* the owner fetches its next panel ahead; a taker from the back
             * does not know which one it gets next */
            panel_rows(j->out, j->inp, j->W, j->bias, 0, M, 0, K, (size_t)p,
                       !back && (size_t)p + 1 < p1, slice, every);
            /* a run is contiguous: with several takers from the back, the
             * panel next to a taker's last may have gone to another */
            if (run0 >= 0 && p != (back ? run0 - 1 : run1 + 1)) {
                epilogue(j->epi, j->out, j->W->N, 0, M, (size_t)run0, (size_t)run1 + 1);
                run0 = -1;
            }
            if (run0 < 0) run0 = run1 = p;
            else if (back) run0 = p;
            else run1 = p;
            if (run1 - run0 + 1 == EPI_PANELS) {
                epilogue(j->epi, j->out, j->W->N, 0, M, (size_t)run0, (size_t)run1 + 1);
                run0 = -1;
            }
        }
        if (run0 >= 0) epilogue(j->epi, j->out, j->W->N, 0, M, (size_t)run0, (size_t)run1 + 1);
    }
}

/* Part `part` of `parts`: a range of the panels (columns).  bf16 keeps the
 * fixed ranges (the takeover was measured with float32 only). */
static void gemm_part(void *ctx, int part, int parts) {
    gemm_job *j = ctx;
    if (j->W->dtype == LL_WEIGHTS_F32 && parts > 1) {
        gemm_shared(j, part, parts);
        return;
    }
    size_t P = panel_count(j->W->N);
    size_t p0 = P * part / parts, p1 = P * (part + 1) / parts;
    if (p1 <= p0) return;
    if (j->W->dtype == LL_WEIGHTS_BF16 && j->M > BF16_DOT_ROWS)
        gemm_panels16_fma(j->out, (const float *)j->a16, j->lda16, j->W, j->bias, j->M, p0, p1,
                          j->epi);
    else if (j->W->dtype == LL_WEIGHTS_BF16)
        gemm_panels16(j->out, j->a16, j->lda16, j->W, j->bias, j->M, p0, p1, j->epi);
    else
        gemm_panels(j->out, j->inp, j->W, j->bias, j->M, p0, p1, j->epi);
}

int ll_gemm(float *out, const float *inp, const ll_packed *W, const float *bias,
            int M) {
    return ll_gemm_epi(out, inp, W, bias, M, NULL);
}

int ll_gemm_epi(float *out, const float *inp, const ll_packed *W, const float *bias,
                int M, const ll_epilogue *epi) {
    if (M <= 0) return 0;
    gemm_job j = {out, inp, bias, W, M, NULL, 0, epi, {{0}}};
    if (W->dtype == LL_WEIGHTS_BF16) {
        /* rounded once, on this thread; the parts only read them.  Pairs
         * for VDPBF16PS, or swapped floats for the float32 kernel. */
        int fma = M > BF16_DOT_ROWS;
        j.lda16 = (long)pair_count(W->K) * (fma ? 2 : 1);
        uint32_t *a = rows_buffer((size_t)M * j.lda16);
        if (!a) return -1;
        if (fma) round_rows_swapped((float *)a, j.lda16, inp, M, W->K);
        else round_rows(a, j.lda16, inp, M, W->K);
        j.a16 = a;
    }
    ll_parallel(gemm_part, &j, (int)panel_count(W->N));
    return 0;
}
