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
 * Threads: helpers of the calling thread take disjoint ranges of panels
 * (columns); every element is still computed by one thread in the same
 * order, so the thread count changes no result either. */
#include "layerlens/gemm.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

/* A small pool shared by the process: a product on a thread whose share is
 * n > 1 hands panel ranges to up to n - 1 helpers.  One product uses the
 * pool at a time; a product that finds it busy runs on its own thread (same
 * results, see the top of the file).
 *
 * Hand-over: a forward pass is ~50 products separated by short element-wise
 * steps, so helpers spin for a while (SPIN_NS) on the job counter before
 * sleeping on the condition variable; waking a sleeping thread cost ~17% of
 * a single-word CLIP pass.  Helpers only run (and spin) for a product that
 * was given more than one core: a pass running alone (threads_now). */
#define MAX_HELPERS 15
#define SPIN_NS 200000

typedef struct job {
    float *out;
    const float *inp, *bias;
    const ll_packed *W;
    int M, parts;
} job;

static struct {
    pthread_mutex_t lock;   /* with wake: sleeping helpers */
    pthread_cond_t wake;
    pthread_mutex_t busy;   /* held by the product using the pool */
    pthread_mutex_t grow;   /* starting helpers */
    int started;            /* helper threads running (under grow) */
    pthread_t threads[MAX_HELPERS];
    atomic_int quit;        /* set at exit: helpers return */
    atomic_ulong gen;       /* bumped for each job, after cur is written */
    atomic_int pending;     /* helpers yet to finish with the current job */
    job cur;                /* written by the busy holder before gen++ */
} pool = {.lock = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER,
          .busy = PTHREAD_MUTEX_INITIALIZER, .grow = PTHREAD_MUTEX_INITIALIZER};

static _Thread_local int my_threads = 1;
static atomic_int in_pass; /* forward passes running (ll_gemm_pass_begin) */

void ll_gemm_set_threads(int n) {
    my_threads = n < 1 ? 1 : n > MAX_HELPERS + 1 ? MAX_HELPERS + 1 : n;
}
int ll_gemm_threads(void) { return my_threads; }

/* Nested brackets on one thread count once (a server worker brackets its
 * whole batch, ll_forward its pass inside it). */
static _Thread_local int pass_depth;
void ll_gemm_pass_begin(void) {
    if (pass_depth++ == 0) atomic_fetch_add(&in_pass, 1);
}
void ll_gemm_pass_end(void) {
    if (--pass_depth == 0) atomic_fetch_sub(&in_pass, 1);
}

/* This product's threads: the thread's share less one for every other pass
 * running now (so two passes on two cores get one each, a pass alone gets
 * both).  Decided per product: when a second pass starts, the first gives
 * its helper back at its next product. */
static int threads_now(void) {
    int n = my_threads;
    if (n > 1) {
        int others = atomic_load_explicit(&in_pass, memory_order_relaxed) - 1;
        if (others > 0) n = n - others < 1 ? 1 : n - others;
    }
    return n;
}

static void job_part(const job *j, int part) {
    size_t P = panel_count(j->W->N);
    size_t p0 = P * part / j->parts, p1 = P * (part + 1) / j->parts;
    if (p1 > p0) gemm_panels(j->out, j->inp, j->W, j->bias, j->M, p0, p1);
}

static long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000L + t.tv_nsec;
}

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* Waits until the job counter differs from seen; returns the new value. */
static unsigned long wait_job(unsigned long seen) {
    long until = now_ns() + SPIN_NS;
    for (int i = 0;; i++) {
        unsigned long g = atomic_load_explicit(&pool.gen, memory_order_acquire);
        if (g != seen) return g;
        cpu_relax();
        if ((i & 255) == 255 && now_ns() > until) break;
    }
    pthread_mutex_lock(&pool.lock);
    unsigned long g;
    while ((g = atomic_load_explicit(&pool.gen, memory_order_acquire)) == seen)
        pthread_cond_wait(&pool.wake, &pool.lock);
    pthread_mutex_unlock(&pool.lock);
    return g;
}

typedef struct helper_arg {
    int id;             /* 1..MAX_HELPERS */
    unsigned long seen; /* the job counter when it was started */
} helper_arg;

static void *helper_main(void *arg) {
    helper_arg *a = arg;
    int id = a->id;
    unsigned long seen = a->seen;
    free(a);
    for (;;) {
        seen = wait_job(seen);
        if (atomic_load(&pool.quit)) return NULL;
        job j = pool.cur;
        /* every helper reports, needed or not: cur may be rewritten only
         * once all have read it */
        if (id < j.parts) job_part(&j, id);
        atomic_fetch_sub_explicit(&pool.pending, 1, memory_order_release);
    }
    return NULL;
}

/* At exit: the helpers are woken, return and are joined, so that nothing
 * of theirs is left behind (leak checkers see their thread stacks). */
static void pool_stop(void) {
    pthread_mutex_lock(&pool.grow);
    atomic_store(&pool.quit, 1);
    atomic_fetch_add(&pool.gen, 1);
    pthread_mutex_lock(&pool.lock);
    pthread_cond_broadcast(&pool.wake);
    pthread_mutex_unlock(&pool.lock);
    for (int i = 0; i < pool.started; i++) pthread_join(pool.threads[i], NULL);
    pool.started = 0;
    pthread_mutex_unlock(&pool.grow);
}

/* Starts helpers up to n - 1; returns how many parts a job may have and
 * sets *helpers to the number of helper threads. */
static int pool_ensure(int n, int *helpers) {
    pthread_mutex_lock(&pool.grow);
    while (pool.started < n - 1) {
        /* a new helper waits for the next job, not the one before it */
        helper_arg *a = malloc(sizeof *a);
        if (!a) break;
        *a = (helper_arg){pool.started + 1, atomic_load(&pool.gen)};
        if (pool.started == 0 && atexit(pool_stop)) {
            free(a);
            break;
        }
        if (pthread_create(&pool.threads[pool.started], NULL, helper_main, a)) {
            free(a);
            break;
        }
        pool.started++;
    }
    int parts = pool.started + 1 < n ? pool.started + 1 : n;
    *helpers = pool.started;
    pthread_mutex_unlock(&pool.grow);
    return parts;
}

void ll_gemm(float *out, const float *inp, const ll_packed *W, const float *bias,
             int M) {
    size_t P = panel_count(W->N);
    int n = threads_now();
    if (n > (int)P) n = (int)P;
    if (M <= 0) return;
    if (n <= 1 || pthread_mutex_trylock(&pool.busy) != 0) {
        gemm_panels(out, inp, W, bias, M, 0, P);
        return;
    }
    int helpers, parts = pool_ensure(n, &helpers);
    job j = {out, inp, bias, W, M, parts};
    pool.cur = j;
    atomic_store_explicit(&pool.pending, helpers, memory_order_relaxed);
    atomic_fetch_add_explicit(&pool.gen, 1, memory_order_release);
    pthread_mutex_lock(&pool.lock); /* wakes the helpers that went to sleep */
    pthread_cond_broadcast(&pool.wake);
    pthread_mutex_unlock(&pool.lock);
    job_part(&j, 0);
    /* the helpers' parts take about as long as this one: spin, then yield */
    for (int i = 0; atomic_load_explicit(&pool.pending, memory_order_acquire) > 0; i++) {
        cpu_relax();
        if (i > 4096) sched_yield();
    }
    pthread_mutex_unlock(&pool.busy);
}
