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

#define LL_GEMM_NR 32

typedef struct ll_packed {
    int K, N;
    float *panels; /* ceil(N / NR) * K * NR floats, 64-byte aligned */
} ll_packed;

/* Packs W [K][N] (row-major, the [in, out] layout).  0 or -1 (out of memory). */
int ll_pack_weights(ll_packed *p, const float *W, int K, int N);

/* Packs the transpose of Wt [N][K] (nn.Linear's [out, in] layout). */
int ll_pack_weights_t(ll_packed *p, const float *Wt, int N, int K);

/* An all-zero packed [K][N] matrix, and the columns [col0, col0 + n) of it
 * set from Wt [n][K] (for matrices joined from several checkpoint tensors). */
int ll_packed_init(ll_packed *p, int K, int N);
void ll_packed_set_t(ll_packed *p, int col0, const float *Wt, int n);

void ll_packed_free(ll_packed *p);
size_t ll_packed_bytes(const ll_packed *p);

/* out[M][N] = inp[M][K] @ W + bias[N]  (bias may be NULL; rows contiguous).
 * Runs on the calling thread and the helpers pool.h gives it, each taking a
 * range of the panels. */
void ll_gemm(float *out, const float *inp, const ll_packed *W, const float *bias,
             int M);

#endif
