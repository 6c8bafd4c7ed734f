/* ops.c - transformer operations (see ops.h for the math of each). */
#include "layerlens/ops.h"

#include "layerlens/pool.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

/* The activations, as x / (1 + exp(k (x + c x^3))):
 *   gelu_new:   0.5 x (1 + tanh(z)) = x sigmoid(2z) = x / (1 + exp(-2z)),
 *               z = sqrt(2/pi) (x + 0.044715 x^3)
 *   quick_gelu: x sigmoid(1.702 x) = x / (1 + exp(-1.702 x)) */
#define GELU_NEW_K (-2.0f * 0.7978845608028654f)
#define GELU_NEW_C 0.044715f
#define QUICK_GELU_K (-1.702f)

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
/* Sums in double, 8 lanes at a time in four independent chains (one chain
 * waited on each add's latency: 3% of a block, with the scalar output loop
 * below). */
static double row_sum(const float *x, int C) {
    __m512d a[4] = {_mm512_setzero_pd(), _mm512_setzero_pd(), _mm512_setzero_pd(),
                    _mm512_setzero_pd()};
    int c = 0;
    for (; c + 32 <= C; c += 32)
        for (int u = 0; u < 4; u++)
            a[u] = _mm512_add_pd(a[u], _mm512_cvtps_pd(_mm256_loadu_ps(x + c + 8 * u)));
    for (; c + 8 <= C; c += 8) a[0] = _mm512_add_pd(a[0], _mm512_cvtps_pd(_mm256_loadu_ps(x + c)));
    double s = _mm512_reduce_add_pd(_mm512_add_pd(_mm512_add_pd(a[0], a[1]),
                                                  _mm512_add_pd(a[2], a[3])));
    for (; c < C; c++) s += x[c];
    return s;
}

static double row_sq_dev(const float *x, int C, float mean) {
    __m512d a[4] = {_mm512_setzero_pd(), _mm512_setzero_pd(), _mm512_setzero_pd(),
                    _mm512_setzero_pd()};
    __m512d m = _mm512_set1_pd(mean);
    int c = 0;
    for (; c + 32 <= C; c += 32)
        for (int u = 0; u < 4; u++) {
            __m512d d = _mm512_sub_pd(_mm512_cvtps_pd(_mm256_loadu_ps(x + c + 8 * u)), m);
            a[u] = _mm512_fmadd_pd(d, d, a[u]);
        }
    for (; c + 8 <= C; c += 8) {
        __m512d d = _mm512_sub_pd(_mm512_cvtps_pd(_mm256_loadu_ps(x + c)), m);
        a[0] = _mm512_fmadd_pd(d, d, a[0]);
    }
    double s = _mm512_reduce_add_pd(_mm512_add_pd(_mm512_add_pd(a[0], a[1]),
                                                  _mm512_add_pd(a[2], a[3])));
    for (; c < C; c++) {
        double d = x[c] - mean;
        s += d * d;
    }
    return s;
}

/* o = (x - mean) * rstd * w + b, three roundings as written (no fused
 * multiply-add, like the scalar loop in a portable build) */
static void normalize_row(float *o, const float *x, const float *w, const float *b, int C,
                          float mean, float rstd) {
    __m512 vm = _mm512_set1_ps(mean), vr = _mm512_set1_ps(rstd);
    for (int c = 0; c < C; c += 16) {
        __mmask16 k = lanes(C - c);
        __m512 v = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + c), vm), vr);
        v = _mm512_add_ps(_mm512_mul_ps(v, _mm512_maskz_loadu_ps(k, w + c)),
                          _mm512_maskz_loadu_ps(k, b + c));
        _mm512_mask_storeu_ps(o + c, k, v);
    }
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

static void normalize_row(float *o, const float *x, const float *w, const float *b, int C,
                          float mean, float rstd) {
    for (int c = 0; c < C; c++) o[c] = (x[c] - mean) * rstd * w[c] + b[c];
}
#endif

static void layernorm_rows(float *out, const float *inp, const float *w,
                           const float *b, int n0, int n1, int C, float eps) {
    for (int n = n0; n < n1; n++) {
        const float *x = inp + (long)n * C;
        /* Two passes in double: the mean first, then the variance around
         * it, so rows with a large common offset lose no precision. */
        double sum = row_sum(x, C);
        float mean = (float)(sum / C);
        double sq = row_sq_dev(x, C, mean);
        float rstd = (float)(1.0 / sqrt(sq / C + eps));
        normalize_row(out + (long)n * C, x, w, b, C, mean, rstd);
    }
}

int matmul_forward(float *out, const float *inp, const ll_packed *W,
                   const float *bias, int N) {
    return ll_gemm(out, inp, W, bias, N);
}

/* Row-wise softmax of the causal part (columns 0..i) of an [T][T] score
 * matrix; the masked part is set to 0 so it can enter the next GEMM. */
#ifdef __AVX512F__
static void causal_softmax(float *s, int T) {
    for (int i = 0; i < T; i++) {
        float *row = s + (long)i * T;
        /* 16 lanes at a time, masked to the causal part, then zeros */
        __m512 vmax = _mm512_set1_ps(row[0]), vsum = _mm512_setzero_ps();
        for (int j = 0; j <= i; j += 16) {
            __mmask16 m = lanes(i + 1 - j);
            vmax = _mm512_mask_max_ps(vmax, m, vmax, _mm512_maskz_loadu_ps(m, row + j));
        }
        vmax = _mm512_set1_ps(_mm512_reduce_max_ps(vmax));
        for (int j = 0; j <= i; j += 16) {
            __mmask16 m = lanes(i + 1 - j);
            __m512 e = _ZGVeN16v_expf(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, row + j), vmax));
            e = _mm512_maskz_mov_ps(m, e);
            _mm512_mask_storeu_ps(row + j, m, e);
            vsum = _mm512_add_ps(vsum, e);
        }
        __m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(vsum));
        for (int j = 0; j < T; j += 16) {
            __mmask16 m = lanes(T - j), keep = lanes(i + 1 - j < 0 ? 0 : i + 1 - j);
            _mm512_mask_storeu_ps(row + j, m,
                                  _mm512_maskz_mul_ps(keep, _mm512_maskz_loadu_ps(keep, row + j), inv));
        }
    }
}
#else
static void causal_softmax(float *s, int T) {
    for (int i = 0; i < T; i++) {
        float *row = s + (long)i * T;
        float max = row[0];
        for (int j = 1; j <= i; j++)
            if (row[j] > max) max = row[j];
        float sum = 0;
        for (int j = 0; j <= i; j++) {
            row[j] = expf(row[j] - max);
            sum += row[j];
        }
        float inv = 1.0f / sum;
        for (int j = 0; j <= i; j++) row[j] *= inv;
        for (int j = i + 1; j < T; j++) row[j] = 0.0f;
    }
}
#endif

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

/* o[d] = sum_j p[j] v[j ld + d] for j < n (in increasing j, one FMA
 * each), 64 features at a time in four independent sums held in registers
 * (an o[] += p v[] per j waited on its own store and load) */
static void weighted_sum(float *o, const float *p, int n, const float *v, long ld, int hd) {
    for (int d = 0; d < hd; d += 64) {
        __mmask16 m0 = lanes(hd - d), m1 = lanes(hd - d - 16 < 0 ? 0 : hd - d - 16);
        __mmask16 m2 = lanes(hd - d - 32 < 0 ? 0 : hd - d - 32);
        __mmask16 m3 = lanes(hd - d - 48 < 0 ? 0 : hd - d - 48);
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int j = 0; j < n; j++) {
            const float *vj = v + (long)j * ld + d;
            __m512 pj = _mm512_set1_ps(p[j]);
            a0 = _mm512_fmadd_ps(pj, _mm512_maskz_loadu_ps(m0, vj), a0);
            a1 = _mm512_fmadd_ps(pj, _mm512_maskz_loadu_ps(m1, vj + 16), a1);
            a2 = _mm512_fmadd_ps(pj, _mm512_maskz_loadu_ps(m2, vj + 32), a2);
            a3 = _mm512_fmadd_ps(pj, _mm512_maskz_loadu_ps(m3, vj + 48), a3);
        }
        _mm512_mask_storeu_ps(o + d, m0, a0);
        _mm512_mask_storeu_ps(o + d + 16, m1, a1);
        _mm512_mask_storeu_ps(o + d + 32, m2, a2);
        _mm512_mask_storeu_ps(o + d + 48, m3, a3);
    }
}
#else
static float dot(const float *a, const float *b, int n) {
    float acc = 0.0f;
    for (int i = 0; i < n; i++) acc += a[i] * b[i];
    return acc;
}

static void weighted_sum(float *o, const float *p, int n, const float *v, long ld, int hd) {
    for (int d = 0; d < hd; d++) o[d] = 0.0f;
    for (int j = 0; j < n; j++)
        for (int d = 0; d < hd; d++) o[d] += p[j] * v[(long)j * ld + d];
}
#endif

/* Head h of one sequence: out[:, h*hd..] from qkv; scratch: T*T floats. */
static void attention_head(float *out, const float *qkv, float *scratch, int T,
                           int C, int NH, int h) {
    int hd = C / NH, ld = 3 * C;
    float scale = 1.0f / sqrtf((float)hd);
    if (T <= ATTENTION_DIRECT_MAX_T) {
        for (int i = 0; i < T; i++) {
            const float *q = qkv + (long)i * ld + h * hd;
            float *row = scratch + (long)i * T;
            for (int j = 0; j <= i; j++)
                row[j] = scale * dot(q, qkv + (long)j * ld + C + h * hd, hd);
        }
        causal_softmax(scratch, T);
        for (int i = 0; i < T; i++)
            weighted_sum(out + (long)i * C + h * hd, scratch + (long)i * T, i + 1,
                         qkv + 2 * C + h * hd, ld, hd);
        return;
    }
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

void attention_forward(float *out, const float *qkv, float *scratch, int T,
                       int C, int NH) {
    for (int h = 0; h < NH; h++) attention_head(out, qkv, scratch, T, C, NH, h);
}

/* ---------------------------------------------------------- parallel steps
 *
 * A pass alone splits its large steps over the pool's threads (pool.h):
 * layer norm by rows, the element-wise steps by ranges of 16 floats,
 * attention by (sequence, head).  Each element is computed by the same code
 * whatever the split, so the split changes no result.  A part gets at least
 * PART_MIN floats (attention: ATT_PART_MIN multiply-adds): below that the
 * hand-over to a helper (~1 us) costs more than it saves. */
#define PART_MIN 16384L
#define ATT_PART_MIN 262144L

static int parts_for(long work) {
    long p = work / PART_MIN;
    return p < 1 ? 1 : p > 64 ? 64 : (int)p;
}

/* [lo, hi) of n floats: part p of parts, cut at multiples of 16. */
static void part_range(long n, int p, int parts, long *lo, long *hi) {
    long blocks = (n + 15) / 16;
    *lo = blocks * p / parts * 16;
    *hi = blocks * (p + 1) / parts * 16;
    if (*lo > n) *lo = n;
    if (*hi > n) *hi = n;
}

typedef struct layernorm_ctx {
    float *out;
    const float *inp, *w, *b;
    int N, C;
    float eps;
} layernorm_ctx;

static void layernorm_part(void *ctx, int p, int parts) {
    const layernorm_ctx *l = ctx;
    layernorm_rows(l->out, l->inp, l->w, l->b, (int)((long)l->N * p / parts),
                   (int)((long)l->N * (p + 1) / parts), l->C, l->eps);
}

void layernorm_forward(float *out, const float *inp, const float *w,
                       const float *b, int N, int C, float eps) {
    layernorm_ctx l = {out, inp, w, b, N, C, eps};
    int parts = parts_for((long)N * C);
    ll_parallel(layernorm_part, &l, parts < N ? parts : N > 0 ? N : 1);
}

typedef struct sigmoid_ctx {
    float *x;
    long n;
    float k, c;
} sigmoid_ctx;

static void sigmoid_part(void *ctx, int p, int parts) {
    const sigmoid_ctx *a = ctx;
    long lo, hi;
    part_range(a->n, p, parts, &lo, &hi);
    x_sigmoid_forward(a->x + lo, hi - lo, a->k, a->c);
}

static void x_sigmoid_parallel(float *x, long n, float k, float c) {
    sigmoid_ctx a = {x, n, k, c};
    ll_parallel(sigmoid_part, &a, parts_for(n));
}

/* x[i] += y[i] */
static void add_row(float *restrict x, const float *restrict y, long n) {
    for (long i = 0; i < n; i++) x[i] += y[i];
}

typedef struct residual_ctx {
    float *x;
    const float *y;
    long n;
} residual_ctx;

static void residual_part(void *ctx, int p, int parts) {
    const residual_ctx *r = ctx;
    long lo, hi;
    part_range(r->n, p, parts, &lo, &hi);
    add_row(r->x + lo, r->y + lo, hi - lo);
}

typedef struct attention_ctx {
    float *out, *scratch;
    const float *qkv;
    const int *seq_start;
    int n_seq, C, NH;
    long slot;  /* floats of scratch per part */
    long total; /* the work of all heads (att_work) */
} attention_ctx;

/* A head's work, in multiply-adds: q k^T and P v over T x T x hd. */
static long att_work(int T, int hd) { return 2L * T * T * hd + T; }

/* Part p takes the (sequence, head) pairs whose work, counted in order,
 * starts in its share [total p / parts, total (p+1) / parts). */
static void attention_part(void *ctx, int p, int parts) {
    const attention_ctx *a = ctx;
    int hd = a->C / a->NH;
    long lo = a->total * p / parts, hi = a->total * (p + 1) / parts, at = 0;
    float *scratch = a->scratch + a->slot * p;
    for (int s = 0; s < a->n_seq && at < hi; s++) {
        int r = a->seq_start[s], T = a->seq_start[s + 1] - r;
        long w = att_work(T, hd);
        for (int h = 0; h < a->NH; h++, at += w)
            if (at >= lo && at < hi)
                attention_head(a->out + (long)r * a->C, a->qkv + (long)r * 3 * a->C,
                               scratch, T, a->C, a->NH, h);
    }
}

void attention_batch_forward(float *out, const float *qkv, float *scratch,
                             int slots, const int *seq_start, int n_seq, int C,
                             int NH) {
    long total = 0;
    int t_max = 0;
    for (int s = 0; s < n_seq; s++) {
        int T = seq_start[s + 1] - seq_start[s];
        total += NH * att_work(T, C / NH);
        if (T > t_max) t_max = T;
    }
    attention_ctx a = {out, scratch, qkv, seq_start, n_seq, C, NH,
                       (long)t_max * t_max, total};
    long parts = total / ATT_PART_MIN;
    if (parts > slots) parts = slots;
    ll_parallel(attention_part, &a, parts < 1 ? 1 : (int)parts);
}

void gelu_new_forward(float *x, long n) { x_sigmoid_parallel(x, n, GELU_NEW_K, GELU_NEW_C); }

void quick_gelu_forward(float *x, long n) { x_sigmoid_parallel(x, n, QUICK_GELU_K, 0.0f); }

void residual_forward(float *x, const float *y, long n) {
    residual_ctx r = {x, y, n};
    ll_parallel(residual_part, &r, parts_for(n));
}

/* ------------------------------------------------- products with an epilogue */

/* The activation on a region of the product: row by row, through the
 * same vector code as gelu_new_forward / quick_gelu_forward (a value's
 * result never depends on where it sits). */
static void sigmoid_region(void *ctx, float *out, long ldo, int row0, int rows, int col0,
                           int cols) {
    const float *kc = ctx; /* {k, c} */
    for (int r = 0; r < rows; r++) x_sigmoid_forward(out + r * ldo, cols, kc[0], kc[1]);
}

static void residual_region(void *ctx, float *out, long ldo, int row0, int rows, int col0,
                            int cols) {
    float *x = (float *)ctx + row0 * ldo + col0; /* x has out's shape */
    for (int r = 0; r < rows; r++) add_row(x + r * ldo, out + r * ldo, cols);
}

static int matmul_sigmoid_forward(float *out, const float *inp, const ll_packed *W,
                                  const float *bias, int N, float k, float c) {
    float kc[2] = {k, c};
    ll_epilogue e = {sigmoid_region, kc};
    return ll_gemm_epi(out, inp, W, bias, N, &e);
}

int matmul_gelu_new_forward(float *out, const float *inp, const ll_packed *W,
                            const float *bias, int N) {
    return matmul_sigmoid_forward(out, inp, W, bias, N, GELU_NEW_K, GELU_NEW_C);
}

int matmul_quick_gelu_forward(float *out, const float *inp, const ll_packed *W,
                              const float *bias, int N) {
    return matmul_sigmoid_forward(out, inp, W, bias, N, QUICK_GELU_K, 0.0f);
}

int matmul_residual_forward(float *x, float *y, const float *inp, const ll_packed *W,
                            const float *bias, int N) {
    ll_epilogue e = {residual_region, x};
    return ll_gemm_epi(y, inp, W, bias, N, &e);
}
