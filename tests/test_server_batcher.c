/* test_server_batcher.c - the server's queue and worker pool with a fake
 * forward function: packing by tokens, the wait deadline, an idle batcher
 * starting at once, one batch at a time per lane, oversize items,
 * queue limits, cancellation, draining on stop, many producers at once
 * (nothing lost, nothing run twice), and the idle call. */
#include "testutil.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "layerlens/batcher.h"

#define MAX_RECORDED 4096

typedef struct item {
    ll_batch_item base; /* first: the batcher hands back ll_batch_item * */
    int id;
    atomic_int cancel;
} item;

/* What the fake lane saw, in order. */
typedef struct recorder {
    pthread_mutex_t mu;
    int n_batches;
    int batch_size[MAX_RECORDED];
    int batch_tokens[MAX_RECORDED];
    int64_t first_run_us;
    int order[MAX_RECORDED]; /* ids in run order */
    int n_run;
    int runs_of[MAX_RECORDED]; /* id -> times run */
    int drops_of[MAX_RECORDED];
    int n_dropped;
    int worker_states;
    int64_t batch_start_us[MAX_RECORDED];
    useconds_t hold_us; /* each run lasts this long (a forward pass) */
    int n_idle;         /* worker_idle calls */
    void *run_state, *idle_state; /* the worker state each last saw */
} recorder;

static void rec_init(recorder *r) {
    memset(r, 0, sizeof *r);
    pthread_mutex_init(&r->mu, NULL);
}

static void fake_run(void *ctx, void *state, ll_batch_item **items, int n) {
    recorder *r = ctx;
    assert_non_null(state); /* every worker got its own state */
    pthread_mutex_lock(&r->mu);
    if (!r->first_run_us) r->first_run_us = ll_now_us();
    int tokens = 0;
    for (int i = 0; i < n; i++) {
        item *it = (item *)items[i];
        tokens += it->base.n_tok;
        r->runs_of[it->id]++;
        if (r->n_run < MAX_RECORDED) r->order[r->n_run] = it->id;
        r->n_run++;
    }
    if (r->n_batches < MAX_RECORDED) {
        r->batch_size[r->n_batches] = n;
        r->batch_tokens[r->n_batches] = tokens;
        r->batch_start_us[r->n_batches] = ll_now_us();
    }
    r->n_batches++;
    r->run_state = state;
    useconds_t hold = r->hold_us;
    pthread_mutex_unlock(&r->mu);
    if (hold) usleep(hold);
}

static void fake_drop(void *ctx, ll_batch_item *bi) {
    recorder *r = ctx;
    pthread_mutex_lock(&r->mu);
    r->drops_of[((item *)bi)->id]++;
    r->n_dropped++;
    pthread_mutex_unlock(&r->mu);
}

static void *state_init(void *ctx, int index) {
    recorder *r = ctx;
    pthread_mutex_lock(&r->mu);
    r->worker_states++;
    pthread_mutex_unlock(&r->mu);
    return malloc(16);
}

static void state_free(void *ctx, void *state) { free(state); }

static ll_batcher *make_idle(recorder *r, int workers, int max_tokens, int64_t wait_us,
                             int max_queue, int wait_when_idle) {
    ll_batcher_opts o = {.workers = workers, .max_batch_tokens = max_tokens,
                         .max_wait_us = wait_us, .max_queue = max_queue,
                         .wait_when_idle = wait_when_idle,
                         .worker_init = state_init, .worker_free = state_free,
                         .worker_ctx = r};
    ll_error err = {{0}};
    ll_batcher *b = ll_batcher_new(&o, &err);
    assert_non_null(b);
    assert_int_equal(ll_batcher_add_lane(b, fake_run, fake_drop, r, &err), 0);
    assert_int_equal(ll_batcher_start(b, &err), 0);
    return b;
}

/* The tests of the wait itself keep it even when the batcher is idle. */
static ll_batcher *make(recorder *r, int workers, int max_tokens, int64_t wait_us,
                        int max_queue) {
    return make_idle(r, workers, max_tokens, wait_us, max_queue, 1);
}

static void push_items(ll_batcher *b, item *its, int n) {
    ll_batch_item *ptrs[64];
    assert_true(n <= 64);
    for (int i = 0; i < n; i++) {
        its[i].base.cancelled = &its[i].cancel;
        ptrs[i] = &its[i].base;
    }
    assert_int_equal(ll_batcher_reserve(b, n), 0);
    ll_batcher_push(b, 0, ptrs, n);
}

static void wait_for_runs(recorder *r, int n, int64_t timeout_us) {
    int64_t end = ll_now_us() + timeout_us;
    for (;;) {
        pthread_mutex_lock(&r->mu);
        int done = r->n_run + r->n_dropped >= n;
        pthread_mutex_unlock(&r->mu);
        if (done || ll_now_us() > end) return;
        usleep(1000);
    }
}

/* 7 items of 3 tokens, limit 10: a full lane is due at once and is cut into
 * batches of 3 items (9 tokens; a 4th would make 12); the last one waits for
 * the deadline, which stop() cuts short. */
static void test_packs_by_tokens(void **state) {
    recorder r;
    rec_init(&r);
    ll_batcher *b = make(&r, 1, 10, 10 * 1000000, 64);
    item its[7] = {0};
    for (int i = 0; i < 7; i++) { its[i].id = i; its[i].base.n_tok = 3; }
    push_items(b, its, 7);
    wait_for_runs(&r, 6, 2000000);
    pthread_mutex_lock(&r.mu);
    assert_int_equal(r.n_batches, 2);
    assert_int_equal(r.batch_size[0], 3);
    assert_int_equal(r.batch_tokens[0], 9);
    assert_int_equal(r.batch_size[1], 3);
    pthread_mutex_unlock(&r.mu);
    assert_int_equal(ll_batcher_depth(b), 1); /* the 7th still waits */
    int64_t t0 = ll_now_us();
    ll_batcher_stop(b);
    assert_true(ll_now_us() - t0 < 2000000); /* did not wait the 10 s */
    assert_int_equal(r.n_batches, 3);
    assert_int_equal(r.batch_size[2], 1);
    for (int i = 0; i < 7; i++) {
        assert_int_equal(r.order[i], i); /* queue order kept */
        assert_int_equal(r.runs_of[i], 1);
    }
    assert_int_equal(r.worker_states, 1);
    assert_int_equal(ll_batcher_depth(b), 0);
    ll_batcher_free(b);
}

/* Below the token limit a batch runs once the oldest item waited max_wait. */
static void test_wait_deadline(void **state) {
    recorder r;
    rec_init(&r);
    ll_batcher *b = make(&r, 2, 1000, 30000, 64);
    item its[2] = {0};
    its[0].id = 0; its[0].base.n_tok = 2;
    its[1].id = 1; its[1].base.n_tok = 2;
    int64_t t0 = ll_now_us();
    push_items(b, its, 1);
    usleep(5000);
    push_items(b, its + 1, 1); /* joins the same batch: waits for item 0 only */
    wait_for_runs(&r, 2, 3000000);
    int64_t waited = r.first_run_us - t0;
    assert_true(waited >= 30000);
    assert_true(waited < 1000000);
    assert_int_equal(r.n_batches, 1);
    assert_int_equal(r.batch_size[0], 2);
    ll_batcher_free(b);
}

/* By default an idle batcher runs a lone item at once, however long the
 * wait; an item queued while another batch runs waits for company (here:
 * until that batch ends, which makes the batcher idle again), even with a
 * second worker free. */
static void test_idle_starts_at_once(void **state) {
    recorder r;
    rec_init(&r);
    r.hold_us = 300000;
    ll_batcher *b = make_idle(&r, 2, 1000, 10 * 1000000, 64, 0);
    item its[2] = {0};
    its[0].id = 0; its[0].base.n_tok = 2;
    its[1].id = 1; its[1].base.n_tok = 2;
    int64_t t0 = ll_now_us();
    push_items(b, its, 1);
    wait_for_runs(&r, 1, 3000000);
    pthread_mutex_lock(&r.mu);
    assert_int_equal(r.n_run, 1);
    assert_true(r.first_run_us - t0 < 100000); /* not the 10 s wait */
    pthread_mutex_unlock(&r.mu);
    push_items(b, its + 1, 1);
    wait_for_runs(&r, 2, 3000000);
    pthread_mutex_lock(&r.mu);
    assert_int_equal(r.n_batches, 2);
    int64_t second = r.batch_start_us[1] - r.batch_start_us[0];
    pthread_mutex_unlock(&r.mu);
    assert_true(second >= 250000);  /* not taken by the free worker at once */
    assert_true(second < 2000000);  /* but as soon as the first batch ended */
    ll_batcher_free(b);
}

static void idle_record(void *ctx, void *state) {
    recorder *r = ctx;
    pthread_mutex_lock(&r->mu);
    r->n_idle++;
    r->idle_state = state;
    pthread_mutex_unlock(&r->mu);
}

static int idle_calls(recorder *r) {
    pthread_mutex_lock(&r->mu);
    int n = r->n_idle;
    pthread_mutex_unlock(&r->mu);
    return n;
}

/* idle_calls once it reaches n, or after 3 s (slow sanitizer runs). */
static int idle_calls_reach(recorder *r, int n) {
    int64_t end = ll_now_us() + 3000000;
    while (idle_calls(r) < n && ll_now_us() < end) usleep(1000);
    return idle_calls(r);
}

/* worker_idle runs once after each busy period that ends with nothing
 * queued, with the state of the worker that ran it: not before any batch,
 * not between two batches when the second was already queued, not again
 * while the worker stays idle. */
static void test_idle_call(void **state) {
    recorder r;
    rec_init(&r);
    r.hold_us = 200000;
    ll_batcher_opts o = {.workers = 1, .max_batch_tokens = 4, .max_wait_us = 0,
                         .max_queue = 64, .worker_init = state_init, .worker_free = state_free,
                         .worker_idle = idle_record, .worker_ctx = &r};
    ll_error err = {{0}};
    ll_batcher *b = ll_batcher_new(&o, &err);
    assert_non_null(b);
    assert_int_equal(ll_batcher_add_lane(b, fake_run, fake_drop, &r, &err), 0);
    assert_int_equal(ll_batcher_start(b, &err), 0);
    usleep(50000);
    assert_int_equal(idle_calls(&r), 0);

    item its[3] = {0};
    its[0].id = 0; its[0].base.n_tok = 4;
    its[1].id = 1; its[1].base.n_tok = 4;
    its[2].id = 2; its[2].base.n_tok = 4;
    push_items(b, its, 2); /* two batches: the second is queued when the first ends */
    wait_for_runs(&r, 2, 3000000); /* the second batch started: 200 ms to go */
    usleep(100000);
    assert_int_equal(idle_calls(&r), 0);
    assert_int_equal(idle_calls_reach(&r, 1), 1);
    pthread_mutex_lock(&r.mu);
    assert_int_equal(r.n_batches, 2);
    assert_non_null(r.idle_state);
    assert_ptr_equal(r.idle_state, r.run_state);
    pthread_mutex_unlock(&r.mu);
    usleep(100000);
    assert_int_equal(idle_calls(&r), 1);

    push_items(b, its + 2, 1);
    wait_for_runs(&r, 3, 3000000);
    assert_int_equal(idle_calls_reach(&r, 2), 2);
    ll_batcher_free(b);
}

/* Pushes one item of n_tok tokens into lane li. */
static void push_one(ll_batcher *b, int li, item *it, int id, int n_tok) {
    it->id = id;
    it->base.n_tok = n_tok;
    it->base.cancelled = &it->cancel;
    ll_batch_item *p = &it->base;
    assert_int_equal(ll_batcher_reserve(b, 1), 0);
    ll_batcher_push(b, li, &p, 1);
}

/* Start of batch i minus start of batch 0, once i + 1 batches ran. */
static int64_t batch_gap(recorder *r, int i) {
    wait_for_runs(r, i + 1, 3000000);
    pthread_mutex_lock(&r->mu);
    assert_true(r->n_batches > i);
    int64_t gap = r->batch_start_us[i] - r->batch_start_us[0];
    pthread_mutex_unlock(&r->mu);
    return gap;
}

/* One lane, two workers, batches of 400 ms, a 50 ms wait: an item that
 * comes while its lane's batch runs waits for that batch's end (its worker
 * takes it, with every core), unless the lane already holds a full batch or
 * lane_parallel is set; another lane's item runs beside it at once. */
static void test_one_batch_per_lane(void **state) {
    for (int parallel = 0; parallel <= 1; parallel++) {
        recorder r, r2;
        rec_init(&r), rec_init(&r2);
        r.hold_us = r2.hold_us = 400000;
        ll_batcher_opts o = {.workers = 2, .max_batch_tokens = 10, .max_wait_us = 50000,
                             .max_queue = 64, .lane_parallel = parallel,
                             .worker_init = state_init, .worker_free = state_free,
                             .worker_ctx = &r};
        ll_error err = {{0}};
        ll_batcher *b = ll_batcher_new(&o, &err);
        assert_non_null(b);
        assert_int_equal(ll_batcher_add_lane(b, fake_run, fake_drop, &r, &err), 0);
        assert_int_equal(ll_batcher_add_lane(b, fake_run, fake_drop, &r2, &err), 1);
        assert_int_equal(ll_batcher_start(b, &err), 0);
        item its[4] = {0};
        push_one(b, 0, &its[0], 0, 2);
        usleep(20000);
        push_one(b, 0, &its[1], 1, 2);
        int64_t gap = batch_gap(&r, 1);
        if (parallel) assert_true(gap < 300000); /* after the 50 ms wait */
        else assert_true(gap >= 350000);          /* after the first batch */
        wait_for_runs(&r, 2, 3000000);
        usleep(450000); /* both batches over */

        /* a full batch does not wait */
        rec_init(&r);
        r.hold_us = 400000;
        push_one(b, 0, &its[2], 2, 2);
        usleep(20000);
        push_one(b, 0, &its[3], 3, 10);
        assert_true(batch_gap(&r, 1) < 300000);
        wait_for_runs(&r, 2, 3000000);
        usleep(450000);

        /* another lane runs beside it at once */
        rec_init(&r);
        r.hold_us = 400000;
        item a = {0}, c = {0};
        push_one(b, 0, &a, 0, 2);
        usleep(20000);
        int64_t t = ll_now_us();
        push_one(b, 1, &c, 1, 2);
        wait_for_runs(&r2, 1, 3000000);
        pthread_mutex_lock(&r2.mu);
        assert_true(r2.first_run_us - t < 100000);
        pthread_mutex_unlock(&r2.mu);
        ll_batcher_free(b);
    }
}

/* A sequence longer than the limit still runs, alone. */
static void test_oversize_item(void **state) {
    recorder r;
    rec_init(&r);
    ll_batcher *b = make(&r, 1, 10, 0, 64);
    item its[3] = {0};
    its[0].id = 0; its[0].base.n_tok = 50;
    its[1].id = 1; its[1].base.n_tok = 4;
    its[2].id = 2; its[2].base.n_tok = 4;
    push_items(b, its, 3);
    wait_for_runs(&r, 3, 2000000);
    ll_batcher_stop(b);
    assert_int_equal(r.n_run, 3);
    assert_int_equal(r.batch_size[0], 1);
    assert_int_equal(r.batch_tokens[0], 50);
    assert_int_equal(r.batch_size[1], 2);
    ll_batcher_free(b);
}

static void test_queue_limit(void **state) {
    recorder r;
    rec_init(&r);
    ll_batcher *b = make(&r, 1, 10, 10 * 1000000, 4);
    assert_int_equal(ll_batcher_reserve(b, 3), 0);
    assert_int_equal(ll_batcher_reserve(b, 2), -1); /* 5 > 4: refused whole */
    assert_int_equal(ll_batcher_depth(b), 3);
    assert_int_equal(ll_batcher_reserve(b, 1), 0);
    assert_int_equal(ll_batcher_reserve(b, 1), -1);
    ll_batcher_unreserve(b, 4);
    assert_int_equal(ll_batcher_depth(b), 0);
    assert_int_equal(ll_batcher_reserve(b, 5), -1); /* more than the queue */
    ll_batcher_stop(b);
    assert_int_equal(ll_batcher_reserve(b, 1), -1); /* stopping: refused */
    ll_batcher_free(b);
}

/* Cancelled items are handed to drop and never run; the others run. */
static void test_cancelled_dropped(void **state) {
    recorder r;
    rec_init(&r);
    ll_batcher *b = make(&r, 1, 100, 50000, 64);
    item its[6] = {0};
    for (int i = 0; i < 6; i++) { its[i].id = i; its[i].base.n_tok = 1; }
    push_items(b, its, 6);
    atomic_store(&its[1].cancel, 1);
    atomic_store(&its[4].cancel, 1);
    wait_for_runs(&r, 6, 3000000);
    ll_batcher_stop(b);
    assert_int_equal(r.n_run, 4);
    assert_int_equal(r.n_dropped, 2);
    assert_int_equal(r.drops_of[1], 1);
    assert_int_equal(r.drops_of[4], 1);
    assert_int_equal(r.runs_of[1], 0);
    assert_int_equal(r.runs_of[4], 0);
    assert_int_equal(r.batch_size[0], 4); /* dropped items took no room */
    ll_batcher_free(b);
}

/* ---- many producers ---- */

#define PRODUCERS 8
#define PER_PRODUCER 400

typedef struct producer {
    ll_batcher *b;
    item *its;
    int refused;
} producer;

static void *produce(void *p) {
    producer *pr = p;
    for (int i = 0; i < PER_PRODUCER; i++) {
        ll_batch_item *bi = &pr->its[i].base;
        while (ll_batcher_reserve(pr->b, 1) != 0) { /* back-pressure: retry */
            pr->refused++;
            usleep(200);
        }
        ll_batcher_push(pr->b, 0, &bi, 1);
        if (i % 50 == 0) usleep(500);
    }
    return NULL;
}

static void test_many_producers(void **state) {
    recorder r;
    rec_init(&r);
    ll_batcher *b = make(&r, 2, 16, 2000, 64);
    static item its[PRODUCERS * PER_PRODUCER];
    memset(its, 0, sizeof its);
    producer pr[PRODUCERS];
    pthread_t th[PRODUCERS];
    for (int i = 0; i < PRODUCERS * PER_PRODUCER; i++) {
        its[i].id = i;
        its[i].base.n_tok = 1 + (i * 7919) % 5;
    }
    for (int p = 0; p < PRODUCERS; p++) {
        pr[p] = (producer){b, its + p * PER_PRODUCER, 0};
        pthread_create(&th[p], NULL, produce, &pr[p]);
    }
    for (int p = 0; p < PRODUCERS; p++) pthread_join(th[p], NULL);
    ll_batcher_stop(b);
    assert_int_equal(r.n_run, PRODUCERS * PER_PRODUCER);
    for (int i = 0; i < PRODUCERS * PER_PRODUCER; i++)
        assert_int_equal(r.runs_of[i], 1); /* nothing lost, nothing twice */
    int multi = 0;
    for (int i = 0; i < r.n_batches && i < MAX_RECORDED; i++) {
        if (r.batch_size[i] > 1) {
            multi++;
            assert_true(r.batch_tokens[i] <= 16);
        }
    }
    assert_true(multi > 0);
    assert_int_equal(r.worker_states, 2);
    assert_int_equal(ll_batcher_depth(b), 0);
    ll_batcher_free(b);
}

static void test_bad_options(void **state) {
    ll_error err = {{0}};
    ll_batcher_opts o = {.workers = 0, .max_batch_tokens = 1, .max_queue = 1};
    assert_null(ll_batcher_new(&o, &err));
    assert_true(strlen(err.msg) > 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_packs_by_tokens),
        cmocka_unit_test(test_wait_deadline),
        cmocka_unit_test(test_idle_starts_at_once),
        cmocka_unit_test(test_one_batch_per_lane),
        cmocka_unit_test(test_oversize_item),
        cmocka_unit_test(test_queue_limit),
        cmocka_unit_test(test_cancelled_dropped),
        cmocka_unit_test(test_many_producers),
        cmocka_unit_test(test_bad_options),
        cmocka_unit_test(test_idle_call),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
