/* pool.c - helper threads for the parallel steps of a forward pass (pool.h).
 *
 * A small pool shared by the process: a step on a thread whose share is
 * n > 1 hands parts 1..n-1 to helpers and computes part 0 itself.  One step
 * uses the pool at a time; a step that finds it busy runs on its own thread.
 *
 * Hand-over: a forward pass is ~100 steps of 10 us to a few ms, so helpers
 * spin for a while (SPIN_NS) on the job counter before sleeping on the
 * condition variable; waking a sleeping thread cost ~17% of a single-word
 * CLIP pass.  Helpers only run (and spin) for steps that were given more
 * than one core: a pass running alone (width_now).
 *
 * Ownership: `cur` is written only by the thread holding `busy`, before it
 * bumps `gen`; helpers read it after seeing the new `gen` and report through
 * `pending`, and the holder waits for pending == 0 before releasing `busy`. */
#include "layerlens/pool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#define MAX_HELPERS (LL_POOL_MAX_THREADS - 1)
#define SPIN_NS 200000

typedef struct job {
    ll_part_fn fn;
    void *ctx;
    int parts;
} job;

static struct {
    pthread_mutex_t lock;   /* with wake: sleeping helpers */
    pthread_cond_t wake;
    pthread_mutex_t busy;   /* held by the step using the pool */
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
static atomic_int in_pass; /* forward passes running (ll_pass_begin) */

void ll_pool_set_threads(int n) {
    my_threads = n < 1 ? 1 : n > MAX_HELPERS + 1 ? MAX_HELPERS + 1 : n;
}
int ll_pool_threads(void) { return my_threads; }

/* Nested brackets on one thread count once (a server worker brackets its
 * whole batch, ll_forward its pass inside it). */
static _Thread_local int pass_depth;
void ll_pass_begin(void) {
    if (pass_depth++ == 0) atomic_fetch_add(&in_pass, 1);
}
void ll_pass_end(void) {
    if (--pass_depth == 0) atomic_fetch_sub(&in_pass, 1);
}

/* The thread's share less one for every other pass running now (so two
 * passes on two cores get one each, a pass alone gets both).  Decided per
 * step: when a second pass starts, the first gives its helper back at its
 * next step. */
int ll_parallel_width(void) {
    int n = my_threads;
    if (n > 1) {
        int others = atomic_load_explicit(&in_pass, memory_order_relaxed) - 1;
        if (others > 0) n = n - others < 1 ? 1 : n - others;
    }
    return n;
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
        if (id < j.parts) j.fn(j.ctx, id, j.parts);
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

void ll_parallel(ll_part_fn fn, void *ctx, int max_parts) {
    int n = ll_parallel_width();
    if (n > max_parts) n = max_parts;
    if (n <= 1 || pthread_mutex_trylock(&pool.busy) != 0) {
        fn(ctx, 0, 1);
        return;
    }
    int helpers, parts = pool_ensure(n, &helpers);
    if (parts <= 1) { /* no helper could be started */
        pthread_mutex_unlock(&pool.busy);
        fn(ctx, 0, 1);
        return;
    }
    pool.cur = (job){fn, ctx, parts};
    atomic_store_explicit(&pool.pending, helpers, memory_order_relaxed);
    atomic_fetch_add_explicit(&pool.gen, 1, memory_order_release);
    pthread_mutex_lock(&pool.lock); /* wakes the helpers that went to sleep */
    pthread_cond_broadcast(&pool.wake);
    pthread_mutex_unlock(&pool.lock);
    fn(ctx, 0, parts);
    /* the helpers' parts take about as long as this one: spin, then yield */
    for (int i = 0; atomic_load_explicit(&pool.pending, memory_order_acquire) > 0; i++) {
        cpu_relax();
        if (i > 4096) sched_yield();
    }
    pthread_mutex_unlock(&pool.busy);
}
