/* gemm.h - out = inp @ W + bias with W packed once, at load time.
 *
 * Why not cblas_sgemm: every call of it copies ("packs") the weight matrix
 * into its own panel layout before multiplying.  With the few rows of a
 * batch of short requests that copy costs more than the arithmetic (profiled
 * on GPT-2: 35% of a forward pass at 32 rows, 69% at 8).  Weights never
 * change, so they are packed here once, and each product streams the packed
 * panels straight into an AVX-512 kernel.
 *
 * Numerics: every output element is bias + sum over k in increasing order,
 * one fused multiply-add per k, whatever the number of rows or threads.  A
 * token's states therefore never depend on the batch it is packed into.
 *
 * Layout: the columns of W [K][N] are cut into panels of LL_GEMM_NR; panel p
 * holds W[k][p*NR .. p*NR+NR) for k = 0..K-1, contiguously (the last panel is
 * zero-padded). */
#ifndef LAYERLENS_GEMM_H
#define LAYERLENS_GEMM_H

#include <stddef.h>
#include <stdint.h>

#include "layerlens/dtype.h"

#define LL_GEMM_NR 32

/* dtype LL_WEIGHTS_F32: panels holds ceil(N / NR) * K * NR floats.
 * dtype LL_WEIGHTS_BF16: panels16 holds ceil(N / NR) * ceil(K / 2) * NR * 2
 * bfloat16 values: in panel p, the k-pair j (rows 2j and 2j+1, the second
 * zero when K is odd) is NR pairs, one per column: W[2j][n], W[2j+1][n] -
 * the operand order of VDPBF16PS.  Either is 64-byte aligned. */
typedef struct ll_packed {
    int K, N;
    ll_weight_type dtype;
    float *panels;
    uint16_t *panels16;
} ll_packed;

/* Packs W [K][N] (row-major, the [in, out] layout).  0 or -1 (out of memory). */
int ll_pack_weights(ll_packed *p, const float *W, int K, int N, ll_weight_type dtype);

/* Packs the transpose of Wt [N][K] (nn.Linear's [out, in] layout). */
int ll_pack_weights_t(ll_packed *p, const float *Wt, int N, int K, ll_weight_type dtype);

/* An all-zero packed [K][N] matrix, and the columns [col0, col0 + n) of it
 * set from Wt [n][K] (for matrices joined from several checkpoint tensors). */
int ll_packed_init(ll_packed *p, int K, int N, ll_weight_type dtype);
void ll_packed_set_t(ll_packed *p, int col0, const float *Wt, int n);

void ll_packed_free(ll_packed *p);
size_t ll_packed_bytes(const ll_packed *p);

/* out[M][N] = inp[M][K] @ W + bias[N]  (bias may be NULL; rows contiguous).
 * Runs on the calling thread and the helpers pool.h gives it, each taking a
 * range of the panels.  With bf16 weights the rows of inp are rounded to
 * bfloat16 first, into a buffer of the calling thread (kept for its life):
 * -1 when that cannot be allocated, else 0. */
int ll_gemm(float *out, const float *inp, const ll_packed *W, const float *bias,
            int M);

/* What a product does to its outputs once they are final, one region at
 * a time while the region is still in the caches, rather than in a
 * separate pass that reads and writes the whole matrix from memory again
 * (an activation, a residual sum).  fn(ctx, out, ldo, row0, rows, col0,
 * cols): out points at element (row0, col0) of the product, rows apart by
 * ldo floats; a region is at most 128 rows x one thread's share of the
 * columns.  Regions are disjoint, each is passed once, on any of the
 * product's threads. */
typedef struct ll_epilogue {
    void (*fn)(void *ctx, float *out, long ldo, int row0, int rows, int col0, int cols);
    void *ctx;
} ll_epilogue;

/* ll_gemm, then epi (may be NULL) on every region of out. */
int ll_gemm_epi(float *out, const float *inp, const ll_packed *W, const float *bias,
                int M, const ll_epilogue *epi);

/* float32 -> bfloat16, rounded to nearest even (as VCVTNE2PS2BF16: NaN
 * stays NaN). */
uint16_t ll_bf16_round(float x);

#endif
