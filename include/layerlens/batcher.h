/* batcher.h - the bounded queue and worker pool behind the HTTP server.
 *
 * Requests are cut into sequences (one ll_batch_item each) and queued in a
 * "lane"; the server has one lane per model.  Worker threads take items from
 * a lane and hand them, as one batch, to the lane's run function - for the
 * server that is one packed forward pass.  A worker takes a batch from a lane
 * when either
 *   - the lane holds at least max_batch_tokens tokens, or
 *   - its oldest item has waited max_wait_us, or
 *   - no worker is running a batch (an idle service does not make a lone
 *     request wait for company that is not coming; under load, items pile up
 *     while the workers compute and each batch takes them all; off with
 *     wait_when_idle), or
 *   - the batcher is draining (shutdown: nothing waits any more).
 * except that, unless lane_parallel, a lane with a batch running and less
 * than max_batch_tokens queued waits for that batch to end: its worker then
 * takes them, and a pass running alone uses every core (pool.h), so the
 * weights are read once for all of them instead of once per worker.  (Two
 * workers on one lane each stream the whole model from memory for half the
 * rows on one core; measured with 32 clients sending single words: GPT-2
 * 250-300 words/s that way, 335-365 with one batch at a time.)
 * It then takes items in queue order while their tokens fit in
 * max_batch_tokens (always at least one, so a sequence longer than the limit
 * still runs, alone).  Many small requests thus share a forward pass, and a
 * request with many inputs may be spread over several.
 *
 * Back-pressure: at most max_queue items wait at any time (items in a running
 * batch no longer count).  Space is reserved before a request is accepted, so
 * a full queue is noticed up front and the caller can refuse at once (the
 * server answers 503).
 *
 * Cancellation: an item whose `cancelled` flag is set when a worker reaches
 * it is not run but handed to the lane's drop function (the server cancels the
 * items of a request that timed out).
 *
 * Thread ownership: a queued item belongs to the batcher; from the moment it
 * is passed to run or drop it belongs to the lane's code again.  Each worker
 * owns its worker state (the server's: one ll_workspace) for its lifetime.
 * One mutex guards the queues; run and drop are called without it held. */
#ifndef LAYERLENS_BATCHER_H
#define LAYERLENS_BATCHER_H

#include <stdatomic.h>
#include <stdint.h>

#include "layerlens/error.h"

#define LL_BATCHER_MAX_LANES 8

typedef struct ll_batch_item {
    struct ll_batch_item *next;  /* queue link (batcher's while queued) */
    int n_tok;                   /* cost of the item in tokens, >= 1 */
    const atomic_int *cancelled; /* nonzero: drop instead of run; may be NULL */
    int64_t enqueued_us;         /* set by ll_batcher_push (monotonic clock) */
} ll_batch_item;

/* Runs items[0..n) of one lane, in queue order, on a worker thread.  The
 * array is only valid during the call; the items themselves now belong to
 * the callee. */
typedef void (*ll_batch_run_fn)(void *lane_ctx, void *worker_state,
                                ll_batch_item **items, int n);
/* Receives a cancelled item that will not run (on a worker thread). */
typedef void (*ll_batch_drop_fn)(void *lane_ctx, ll_batch_item *item);

typedef struct ll_batcher_opts {
    int workers;          /* worker threads, >= 1 */
    int max_batch_tokens; /* >= 1 */
    int64_t max_wait_us;  /* >= 0; 0 = run whatever is queued at once;
                             not waited when every worker is idle, unless
                             wait_when_idle */
    int wait_when_idle;
    int lane_parallel;    /* several batches of one lane may run at once
                             before it holds max_batch_tokens */
    int max_queue;        /* waiting items, >= 1 */
    /* Per-worker state, created and destroyed on the worker's own thread
     * (either may be NULL). */
    void *(*worker_init)(void *ctx, int index);
    void (*worker_free)(void *ctx, void *state);
    /* Called on the worker's thread, without the lock, when it has run a
     * batch and finds nothing queued: the time to give back memory kept for
     * the next batch (may be NULL). */
    void (*worker_idle)(void *ctx, void *state);
    void *worker_ctx;
} ll_batcher_opts;

typedef struct ll_batcher ll_batcher;

ll_batcher *ll_batcher_new(const ll_batcher_opts *opts, ll_error *err);
/* Adds a lane before ll_batcher_start; returns its index (or -1 when there
 * are too many). */
int ll_batcher_add_lane(ll_batcher *b, ll_batch_run_fn run,
                        ll_batch_drop_fn drop, void *ctx, ll_error *err);
/* Marks a lane as background work (the evaluation's): a worker takes from it
 * only while every other lane is empty, so interactive requests go first and
 * background work waits at most for one batch already running. */
void ll_batcher_lane_background(ll_batcher *b, int lane);
int ll_batcher_start(ll_batcher *b, ll_error *err);

/* Reserves room for n items.  0 on success; -1 when the queue would exceed
 * max_queue or the batcher is stopping (nothing is reserved then). */
int ll_batcher_reserve(ll_batcher *b, int n);
/* Gives back a reservation that will not be pushed. */
void ll_batcher_unreserve(ll_batcher *b, int n);
/* Queues n items of one lane, using n reserved places (never fails). */
void ll_batcher_push(ll_batcher *b, int lane, ll_batch_item **items, int n);

/* Items reserved or waiting (not yet taken into a batch). */
int ll_batcher_depth(ll_batcher *b);

/* Stops taking reservations, runs everything already queued without waiting
 * for fuller batches, and joins the workers.  Idempotent. */
void ll_batcher_stop(ll_batcher *b);
/* Stops (if needed) and frees. */
void ll_batcher_free(ll_batcher *b);

/* Monotonic clock in microseconds (the batcher's time base). */
int64_t ll_now_us(void);

#endif
