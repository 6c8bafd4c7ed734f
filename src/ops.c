/* ops.c - transformer operations (see ops.h for the math of each). */
#include "layerlens/ops.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

#ifdef __AVX512F__
#include <immintrin.h>
/* glibc's vectorised expf (libmvec), 16 lanes, < 4 ulp.  The activations and
 * the softmax are elementwise exponentials; done one libm call at a time
 * they took ~12% of a GPT-2 forward pass, 16 at a time about 0.4%. */
__m512 _ZGVeN16v_expf(__m512 x);

/* Mask of the first n (<= 16) lanes.  Tails go through the same vector code
 * with a mask, so a value's result never depends on its position. */
static inline __mmask16 lanes(long n) {
    return n >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << n) - 1);
}

/* x[i] = x[i] / (1 + exp(k * p(x[i]))) with p(x) = x + c x^3 */
static void x_sigmoid_forward(float *x, long n, float k, float c) {
    const __m512 vk = _mm512_set1_ps(k), vc = _mm512_set1_ps(c), one = _mm512_set1_ps(1.0f);
    for (long i = 0; i < n; i += 16) {
        __mmask16 m = lanes(n - i);
        __m512 v = _mm512_maskz_loadu_ps(m, x + i);
        __m512 p = _mm512_fmadd_ps(_mm512_mul_ps(vc, v), _mm512_mul_ps(v, v), v);
        __m512 e = _ZGVeN16v_expf(_mm512_mul_ps(vk, p));
        _mm512_mask_storeu_ps(x + i, m, _mm512_div_ps(v, _mm512_add_ps(one, e)));
    }
}
#else
static void x_sigmoid_forward(float *x, long n, float k, float c) {
    for (long i = 0; i < n; i++) {
        float v = x[i];
        x[i] = v / (1.0f + expf(k * (v + c * v * v * v)));
    }
}
#endif

void position_add_forward(float *x, const int32_t *pos, const float *wpe, int N, int C) {
    for (int n = 0; n < N; n++) {
        const float *p = wpe + (long)pos[n] * C;
        float *o = x + (long)n * C;
        for (int c = 0; c < C; c++) o[c] += p[c];
    }
}

#ifdef __AVX512F__
/* Sums in double, 8 lanes at a time (the scalar loops were 3% of a block). */
static double row_sum(const float *x, int C) {
    __m512d a = _mm512_setzero_pd();
    int c = 0;
    for (; c + 8 <= C; c += 8) a = _mm512_add_pd(a, _mm512_cvtps_pd(_mm256_loadu_ps(x + c)));
    double s = _mm512_reduce_add_pd(a);
    for (; c < C; c++) s += x[c];
    return s;
}

static double row_sq_dev(const float *x, int C, float mean) {
    __m512d a = _mm512_setzero_pd(), m = _mm512_set1_pd(mean);
    int c = 0;
    for (; c + 8 <= C; c += 8) {
        __m512d d = _mm512_sub_pd(_mm512_cvtps_pd(_mm256_loadu_ps(x + c)), m);
        a = _mm512_fmadd_pd(d, d, a);
    }
    double s = _mm512_reduce_add_pd(a);
    for (; c < C; c++) {
        double d = x[c] - mean;
        s += d * d;
    }
    return s;
}
#else
static double row_sum(const float *x, int C) {
    double s = 0;
    for (int c = 0; c < C; c++) s += x[c];
    return s;
}

static double row_sq_dev(const float *x, int C, float mean) {
    double s = 0;
    for (int c = 0; c < C; c++) {
        double d = x[c] - mean;
        s += d * d;
    }
    return s;
}
#endif

void layernorm_forward(float *out, const float *inp, const float *w,
                       const float *b, int N, int C, float eps) {
    for (int n = 0; n < N; n++) {
        const float *x = inp + (long)n * C;
        float *o = out + (long)n * C;
        /* Two passes in double: the mean first, then the variance around
         * it, so rows with a large common offset lose no precision. */
        double sum = row_sum(x, C);
        float mean = (float)(sum / C);
        double sq = row_sq_dev(x, C, mean);
        float rstd = (float)(1.0 / sqrt(sq / C + eps));
        for (int c = 0; c < C; c++) o[c] = (x[c] - mean) * rstd * w[c] + b[c];
    }
}

void matmul_forward(float *out, const float *inp, const ll_packed *W,
                    const float *bias, int N) {
    ll_gemm(out, inp, W, bias, N);
}

/* Row-wise softmax of the causal part (columns 0..i) of an [T][T] score
 * matrix; the masked part is set to 0 so it can enter the next GEMM. */
static void causal_softmax(float *s, int T) {
    for (int i = 0; i < T; i++) {
        float *row = s + (long)i * T;
        float max = row[0];
        for (int j = 1; j <= i; j++)
            if (row[j] > max) max = row[j];
#ifdef __AVX512F__
        __m512 vmax = _mm512_set1_ps(max), vsum = _mm512_setzero_ps();
        for (int j = 0; j <= i; j += 16) {
            __mmask16 m = lanes(i + 1 - j);
            __m512 e = _ZGVeN16v_expf(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, row + j), vmax));
            e = _mm512_maskz_mov_ps(m, e);
            _mm512_mask_storeu_ps(row + j, m, e);
            vsum = _mm512_add_ps(vsum, e);
        }
        float sum = _mm512_reduce_add_ps(vsum);
#else
        float sum = 0;
        for (int j = 0; j <= i; j++) {
            row[j] = expf(row[j] - max);
            sum += row[j];
        }
#endif
        float inv = 1.0f / sum;
        for (int j = 0; j <= i; j++) row[j] *= inv;
        for (int j = i + 1; j < T; j++) row[j] = 0.0f;
    }
}

/* Short sequences (single words, short phrases) are the common case: there
 * the two GEMM calls per head cost more in call overhead than in
 * arithmetic, so attention is computed directly.  The choice depends on T
 * only, so a sequence gets the same numbers whatever batch it is in. */
#define ATTENTION_DIRECT_MAX_T 32

#ifdef __AVX512F__
/* 16 lanes at a time (a masked tail), then the lanes summed: a head's dot
 * products and weighted sums were scalar loops, 7% of a block's time at
 * STS-B's sentence lengths although attention is 0.3% of its FLOPs. */
static float dot(const float *a, const float *b, int n) {
    __m512 acc = _mm512_setzero_ps();
    for (int i = 0; i < n; i += 16) {
        __mmask16 m = lanes(n - i);
        acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), acc);
    }
    return _mm512_reduce_add_ps(acc);
}

/* o[d] += p * v[d] */
static void axpy(float *o, float p, const float *v, int n) {
    __m512 vp = _mm512_set1_ps(p);
    for (int i = 0; i < n; i += 16) {
        __mmask16 m = lanes(n - i);
        __m512 r = _mm512_fmadd_ps(vp, _mm512_maskz_loadu_ps(m, v + i), _mm512_maskz_loadu_ps(m, o + i));
        _mm512_mask_storeu_ps(o + i, m, r);
    }
}
#else
static float dot(const float *a, const float *b, int n) {
    float acc = 0.0f;
    for (int i = 0; i < n; i++) acc += a[i] * b[i];
    return acc;
}

static void axpy(float *o, float p, const float *v, int n) {
    for (int i = 0; i < n; i++) o[i] += p * v[i];
}
#endif

static void attention_direct(float *out, const float *qkv, float *scratch, int T,
                             int C, int NH) {
    int hd = C / NH, ld = 3 * C;
    float scale = 1.0f / sqrtf((float)hd);
    for (int h = 0; h < NH; h++) {
        for (int i = 0; i < T; i++) {
            const float *q = qkv + (long)i * ld + h * hd;
            float *row = scratch + (long)i * T;
            for (int j = 0; j <= i; j++)
                row[j] = scale * dot(q, qkv + (long)j * ld + C + h * hd, hd);
        }
        causal_softmax(scratch, T);
        for (int i = 0; i < T; i++) {
            float *o = out + (long)i * C + h * hd;
            const float *p = scratch + (long)i * T;
            for (int d = 0; d < hd; d++) o[d] = 0.0f;
            for (int j = 0; j <= i; j++) axpy(o, p[j], qkv + (long)j * ld + 2 * C + h * hd, hd);
        }
    }
}

void attention_forward(float *out, const float *qkv, float *scratch, int T,
                       int C, int NH) {
    if (T <= ATTENTION_DIRECT_MAX_T) {
        attention_direct(out, qkv, scratch, T, C, NH);
        return;
    }
    int hd = C / NH, ld = 3 * C;
    float scale = 1.0f / sqrtf((float)hd);
    for (int h = 0; h < NH; h++) {
        const float *q = qkv + h * hd;
        const float *k = qkv + C + h * hd;
        const float *v = qkv + 2 * C + h * hd;
        /* scores[T][T] = scale * q_h k_h^T (strided views into qkv) */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hd, scale,
                    q, ld, k, ld, 0.0f, scratch, T);
        causal_softmax(scratch, T);
        /* out_h[T][hd] = P v_h, written into the head's columns of out */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hd, T, 1.0f,
                    scratch, T, v, ld, 0.0f, out + h * hd, C);
    }
}

/* 0.5 x (1 + tanh(z)) = x sigmoid(2z) = x / (1 + exp(-2z)),
 * z = sqrt(2/pi) (x + 0.044715 x^3) */
void gelu_new_forward(float *x, long n) {
    x_sigmoid_forward(x, n, -2.0f * 0.7978845608028654f, 0.044715f);
}

/* x sigmoid(1.702 x) = x / (1 + exp(-1.702 x)) */
void quick_gelu_forward(float *x, long n) { x_sigmoid_forward(x, n, -1.702f, 0.0f); }

void residual_forward(float *x, const float *y, long n) {
    for (long i = 0; i < n; i++) x[i] += y[i];
}
