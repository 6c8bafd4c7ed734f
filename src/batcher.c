/* batcher.c - bounded per-model queues and the worker pool that packs them
 * into batches (see batcher.h for the policy).
 *
 * Everything mutable sits behind b->mu.  Workers sleep on b->cv; a push
 * wakes one, which either takes a batch or goes back to sleep until the
 * oldest item's wait is over.  A worker that took a batch and leaves items
 * behind wakes another, so several batches of one lane run in parallel when
 * there is a full batch's work (or always, with lane_parallel); batches of
 * different lanes (models) run in parallel whenever both have work. */
#include "layerlens/batcher.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct lane {
    ll_batch_run_fn run;
    ll_batch_drop_fn drop;
    void *ctx;
    ll_batch_item *head, *tail; /* FIFO */
    long tokens;                /* sum of n_tok over the queue */
    int background;             /* served only when the other lanes are empty */
    int running;                /* workers running a batch of this lane */
} lane;

struct ll_batcher {
    ll_batcher_opts opts;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    lane lanes[LL_BATCHER_MAX_LANES];
    int n_lanes;
    int depth;     /* reserved + queued items */
    int running;   /* workers running a batch */
    int stopping;  /* no new reservations; flush without waiting */
    int started, stopped;
    pthread_t *threads;
    int n_threads;
};

int64_t ll_now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

ll_batcher *ll_batcher_new(const ll_batcher_opts *opts, ll_error *err) {
    if (opts->workers < 1 || opts->max_batch_tokens < 1 ||
        opts->max_wait_us < 0 || opts->max_queue < 1) {
        ll_errorf(err, "batcher: workers, max batch tokens and max queue must "
                       "be at least 1 and the wait not negative");
        return NULL;
    }
    ll_batcher *b = calloc(1, sizeof *b);
    if (!b) {
        ll_errorf(err, "batcher: out of memory");
        return NULL;
    }
    b->opts = *opts;
    pthread_mutex_init(&b->mu, NULL);
    /* Timed waits measure the batch wait, so they must use the monotonic
     * clock like ll_now_us (wall-clock jumps must not stall batches). */
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&b->cv, &ca);
    pthread_condattr_destroy(&ca);
    return b;
}

int ll_batcher_add_lane(ll_batcher *b, ll_batch_run_fn run,
                        ll_batch_drop_fn drop, void *ctx, ll_error *err) {
    if (b->started || b->n_lanes == LL_BATCHER_MAX_LANES)
        return ll_errorf(err, "batcher: cannot add a lane now");
    lane *l = &b->lanes[b->n_lanes];
    memset(l, 0, sizeof *l);
    l->run = run;
    l->drop = drop;
    l->ctx = ctx;
    return b->n_lanes++;
}

void ll_batcher_lane_background(ll_batcher *b, int li) {
    pthread_mutex_lock(&b->mu);
    b->lanes[li].background = 1;
    pthread_mutex_unlock(&b->mu);
}

int ll_batcher_reserve(ll_batcher *b, int n) {
    pthread_mutex_lock(&b->mu);
    int ok = !b->stopping && n >= 0 && b->depth + n <= b->opts.max_queue;
    if (ok) b->depth += n;
    pthread_mutex_unlock(&b->mu);
    return ok ? 0 : -1;
}

void ll_batcher_unreserve(ll_batcher *b, int n) {
    pthread_mutex_lock(&b->mu);
    b->depth -= n;
    pthread_mutex_unlock(&b->mu);
}

void ll_batcher_push(ll_batcher *b, int li, ll_batch_item **items, int n) {
    int64_t now = ll_now_us();
    pthread_mutex_lock(&b->mu);
    lane *l = &b->lanes[li];
    for (int i = 0; i < n; i++) {
        ll_batch_item *it = items[i];
        it->next = NULL;
        it->enqueued_us = now;
        if (l->tail) l->tail->next = it; else l->head = it;
        l->tail = it;
        l->tokens += it->n_tok;
    }
    pthread_cond_signal(&b->cv);
    pthread_mutex_unlock(&b->mu);
}

int ll_batcher_depth(ll_batcher *b) {
    pthread_mutex_lock(&b->mu);
    int d = b->depth;
    pthread_mutex_unlock(&b->mu);
    return d;
}

/* ---- the worker loop (all helpers below run with b->mu held) ---- */

static ll_batch_item *lane_pop(lane *l) {
    ll_batch_item *it = l->head;
    l->head = it->next;
    if (!l->head) l->tail = NULL;
    l->tokens -= it->n_tok;
    it->next = NULL;
    return it;
}

static int is_cancelled(const ll_batch_item *it) {
    return it->cancelled && atomic_load_explicit(it->cancelled, memory_order_acquire);
}

/* The lane whose batch is due, preferring the one with the oldest item; -1
 * when none is.  *wake receives the earliest time a lane becomes due (or -1
 * when every lane is empty). */
static int due_lane(ll_batcher *b, int64_t now, int64_t *wake) {
    int best = -1;
    int64_t best_age = -1;
    *wake = -1;
    int foreground = 0; /* interactive work queued: background lanes wait */
    for (int i = 0; i < b->n_lanes; i++)
        foreground |= !b->lanes[i].background && b->lanes[i].head;
    for (int i = 0; i < b->n_lanes; i++) {
        lane *l = &b->lanes[i];
        if (!l->head || (l->background && foreground)) continue;
        /* the running batch's worker takes these next (batcher.h) */
        if (l->running > 0 && !b->opts.lane_parallel && !b->stopping &&
            l->tokens < b->opts.max_batch_tokens)
            continue;
        int64_t due_at = l->head->enqueued_us + b->opts.max_wait_us;
        int due = b->stopping || l->tokens >= b->opts.max_batch_tokens ||
                  now >= due_at || (b->running == 0 && !b->opts.wait_when_idle);
        if (due) {
            int64_t age = now - l->head->enqueued_us;
            if (age > best_age) { best = i; best_age = age; }
        } else if (*wake < 0 || due_at < *wake) {
            *wake = due_at;
        }
    }
    return best;
}

/* Takes up to max_batch_tokens worth of live items from lane l into out[];
 * cancelled items met on the way go to dropped[].  Both arrays hold at most
 * max_queue entries, the most a lane can contain. */
static void take_batch(ll_batcher *b, lane *l, ll_batch_item **out, int *n_out,
                       ll_batch_item **dropped, int *n_dropped) {
    long tokens = 0;
    *n_out = *n_dropped = 0;
    while (l->head) {
        if (is_cancelled(l->head)) {
            dropped[(*n_dropped)++] = lane_pop(l);
            continue;
        }
        if (*n_out > 0 && tokens + l->head->n_tok > b->opts.max_batch_tokens)
            break;
        tokens += l->head->n_tok;
        out[(*n_out)++] = lane_pop(l);
    }
    b->depth -= *n_out + *n_dropped;
}

static int any_queued(ll_batcher *b) {
    for (int i = 0; i < b->n_lanes; i++)
        if (b->lanes[i].head) return 1;
    return 0;
}

static void timed_wait(ll_batcher *b, int64_t wake_us) {
    struct timespec ts = { .tv_sec = wake_us / 1000000,
                           .tv_nsec = (long)(wake_us % 1000000) * 1000 };
    pthread_cond_timedwait(&b->cv, &b->mu, &ts);
}

typedef struct worker_arg {
    ll_batcher *b;
    int index;
} worker_arg;

static void *worker_main(void *p) {
    worker_arg *wa = p;
    ll_batcher *b = wa->b;
    int index = wa->index;
    free(wa);
    void *state = b->opts.worker_init ? b->opts.worker_init(b->opts.worker_ctx, index)
                                      : NULL;
    int cap = b->opts.max_queue;
    ll_batch_item **batch = malloc(sizeof *batch * cap);
    ll_batch_item **dropped = malloc(sizeof *dropped * cap);

    int ran = 0; /* a batch since the last idle call */
    pthread_mutex_lock(&b->mu);
    for (;;) {
        int64_t wake;
        int li = due_lane(b, ll_now_us(), &wake);
        if (li < 0) {
            if (b->stopping && !any_queued(b)) break;
            if (wake < 0 && ran && b->opts.worker_idle) {
                ran = 0;
                pthread_mutex_unlock(&b->mu);
                b->opts.worker_idle(b->opts.worker_ctx, state);
                pthread_mutex_lock(&b->mu);
                continue; /* something may have come meanwhile */
            }
            if (wake < 0) pthread_cond_wait(&b->cv, &b->mu);
            else timed_wait(b, wake);
            continue;
        }
        lane *l = &b->lanes[li];
        int n = 0, nd = 0;
        take_batch(b, l, batch, &n, dropped, &nd);
        if (n > 0) b->running++, l->running++;
        if (any_queued(b)) pthread_cond_signal(&b->cv); /* more work: wake a peer */
        pthread_mutex_unlock(&b->mu);
        for (int i = 0; i < nd; i++)
            if (l->drop) l->drop(l->ctx, dropped[i]);
        if (n > 0) l->run(l->ctx, state, batch, n), ran = 1;
        pthread_mutex_lock(&b->mu);
        if (n > 0) b->running--, l->running--;
    }
    /* Let the other workers see the end condition too. */
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);

    free(batch);
    free(dropped);
    if (b->opts.worker_free) b->opts.worker_free(b->opts.worker_ctx, state);
    return NULL;
}

int ll_batcher_start(ll_batcher *b, ll_error *err) {
    if (b->started) return ll_errorf(err, "batcher: already started");
    b->threads = calloc((size_t)b->opts.workers, sizeof *b->threads);
    if (!b->threads) return ll_errorf(err, "batcher: out of memory");
    b->started = 1;
    for (int i = 0; i < b->opts.workers; i++) {
        worker_arg *wa = malloc(sizeof *wa);
        if (!wa) return ll_errorf(err, "batcher: out of memory");
        wa->b = b;
        wa->index = i;
        int rc = pthread_create(&b->threads[i], NULL, worker_main, wa);
        if (rc != 0) {
            free(wa);
            return ll_errorf(err, "batcher: cannot start worker %d: %s", i, strerror(rc));
        }
        b->n_threads++;
    }
    return 0;
}

void ll_batcher_stop(ll_batcher *b) {
    pthread_mutex_lock(&b->mu);
    if (b->stopped) {
        pthread_mutex_unlock(&b->mu);
        return;
    }
    b->stopping = 1;
    b->stopped = 1;
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
    for (int i = 0; i < b->n_threads; i++) pthread_join(b->threads[i], NULL);
    /* Without workers (never started) queued items are still handed back. */
    pthread_mutex_lock(&b->mu);
    for (int i = 0; i < b->n_lanes; i++) {
        lane *l = &b->lanes[i];
        while (l->head) {
            ll_batch_item *it = lane_pop(l);
            b->depth--;
            pthread_mutex_unlock(&b->mu);
            if (l->drop) l->drop(l->ctx, it);
            pthread_mutex_lock(&b->mu);
        }
    }
    pthread_mutex_unlock(&b->mu);
}

void ll_batcher_free(ll_batcher *b) {
    if (!b) return;
    ll_batcher_stop(b);
    free(b->threads);
    pthread_cond_destroy(&b->cv);
    pthread_mutex_destroy(&b->mu);
    free(b);
}
