/* ops.h - the operations a pre-LayerNorm transformer is built from, one
 * small function each, float32, row-major, shapes in the signatures.
 *
 * N = rows (tokens of all packed sequences), C = width, T = one sequence's
 * length, NH = heads, F = MLP width.  Products with weights go to gemm.c,
 * attention's per-sequence products to OpenBLAS.  Large steps are split
 * over the threads pool.h gives the calling thread (see ops.c); the split
 * never changes a result. */
#ifndef LAYERLENS_OPS_H
#define LAYERLENS_OPS_H

#include <stdint.h>

#include "layerlens/gemm.h"

/* x[n] += wpe[pos[n]]   (x holds the token rows: x: [N][C]) */
void position_add_forward(float *x, const int32_t *pos, const float *wpe, int N, int C);

/* out = (x - mean) / sqrt(var + eps) * w + b per row, biased variance.
 * out may equal inp. */
void layernorm_forward(float *out, const float *inp, const float *w,
                       const float *b, int N, int C, float eps);

/* out[N][OUT] = inp[N][IN] @ W[IN][OUT] + bias[OUT]   (bias may be NULL).
 * W is packed at load (gemm.h; IN = W->K, OUT = W->N).  Each output row
 * depends on its own input row only, computed in the same order whatever N
 * is, so a token's states never depend on the batch it is packed into.
 * 0, or -1 (out of memory: bf16 weights, see ll_gemm). */
int matmul_forward(float *out, const float *inp, const ll_packed *W,
                   const float *bias, int N);

/* Products whose outputs go straight into the next step: each tile of
 * the product is finished while still in L1 (gemm.h's epilogue) instead of
 * by a second pass over the whole matrix.  The same bits as the two calls
 * they stand for:
 *   matmul_gelu_new_forward    = matmul_forward(out, ...); gelu_new_forward(out, N * OUT)
 *   matmul_quick_gelu_forward  = matmul_forward(out, ...); quick_gelu_forward(out, N * OUT)
 *   matmul_residual_forward    = matmul_forward(y, ...);   residual_forward(x, y, N * OUT)
 * (y [N][OUT] receives the product, x [N][OUT] the sum). */
int matmul_gelu_new_forward(float *out, const float *inp, const ll_packed *W,
                            const float *bias, int N);
int matmul_quick_gelu_forward(float *out, const float *inp, const ll_packed *W,
                              const float *bias, int N);
int matmul_residual_forward(float *x, float *y, const float *inp, const ll_packed *W,
                            const float *bias, int N);

/* Causal multi-head self-attention of ONE sequence.
 * qkv: [T][3C] (q | k | v, head h = features [h*C/NH, (h+1)*C/NH) of each);
 * out: [T][C] heads concatenated; scratch: at least T*T floats.
 * out[i] = sum_{j<=i} softmax_j(q_i . k_j / sqrt(hd)) v_j, per head. */
void attention_forward(float *out, const float *qkv, float *scratch, int T,
                       int C, int NH);

/* Attention of every sequence of a packed batch: sequence s is rows
 * [seq_start[s], seq_start[s+1]) of qkv [N][3C] and out [N][C].  scratch:
 * slots x t_max^2 floats (t_max = the longest sequence); up to `slots`
 * threads (pool.h) each take a range of the (sequence, head) pairs. */
void attention_batch_forward(float *out, const float *qkv, float *scratch,
                             int slots, const int *seq_start, int n_seq, int C,
                             int NH);

/* GPT-2's gelu_new: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). */
void gelu_new_forward(float *x, long n);

/* CLIP's quick_gelu: x * sigmoid(1.702 x). */
void quick_gelu_forward(float *x, long n);

/* x += y  (n floats; x and y do not overlap) */
void residual_forward(float *x, const float *y, long n);

#endif
