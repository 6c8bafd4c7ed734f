/* ops.h - the operations a pre-LayerNorm transformer is built from, one
 * small function each, float32, row-major, shapes in the signatures.
 *
 * N = rows (tokens of all packed sequences), C = width, T = one sequence's
 * length, NH = heads, F = MLP width.  Matrix products go to OpenBLAS. */
#ifndef LAYERLENS_OPS_H
#define LAYERLENS_OPS_H

#include <stdint.h>

/* out[n] = wte[ids[n]] + wpe[pos[n]]   (out: [N][C]) */
void embedding_forward(float *out, const int32_t *ids, const int32_t *pos,
                       const float *wte, const float *wpe, int N, int C);

/* out = (x - mean) / sqrt(var + eps) * w + b per row, biased variance.
 * out may equal inp. */
void layernorm_forward(float *out, const float *inp, const float *w,
                       const float *b, int N, int C, float eps);

/* Batch invariance: OpenBLAS computes the last M % 8 rows of a GEMM with
 * narrower kernels whose rounding differs from the full 8/16-row kernels,
 * so the same token would get (slightly) different states depending on its
 * place in a packed batch.  Every GEMM over token rows therefore runs on a
 * multiple of 8 rows; buffers of N rows must have room for
 * gemm_rows(N) rows.  (Measured: all multiples of 8 give bit-identical rows
 * for every shape of both models; at small N the GEMM is bound by reading
 * the weights, so the padding rows cost next to nothing.) */
#define LL_GEMM_ROW_ALIGN 8
static inline long gemm_rows(long N) {
    return (N + LL_GEMM_ROW_ALIGN - 1) / LL_GEMM_ROW_ALIGN * LL_GEMM_ROW_ALIGN;
}

/* out[N][OUT] = inp[N][IN] @ W[IN][OUT] + bias[OUT]   (bias may be NULL).
 * W is in the [in, out] layout (GPT-2's Conv1D; CLIP's are transposed to it
 * at load, see model.c).  inp and out hold gemm_rows(N) rows; the padding
 * rows of inp are zeroed here and those of out receive bias only. */
void matmul_forward(float *out, float *inp, const float *W,
                    const float *bias, int N, int IN, int OUT);

/* Causal multi-head self-attention of ONE sequence.
 * qkv: [T][3C] (q | k | v, head h = features [h*C/NH, (h+1)*C/NH) of each);
 * out: [T][C] heads concatenated; scratch: at least T*T floats.
 * out[i] = sum_{j<=i} softmax_j(q_i . k_j / sqrt(hd)) v_j, per head. */
void attention_forward(float *out, const float *qkv, float *scratch, int T,
                       int C, int NH);

/* GPT-2's gelu_new: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). */
void gelu_new_forward(float *x, long n);

/* CLIP's quick_gelu: x * sigmoid(1.702 x). */
void quick_gelu_forward(float *x, long n);

/* x += y  (n floats) */
void residual_forward(float *x, const float *y, long n);

#endif
