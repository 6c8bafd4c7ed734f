/* server_work.c - compute jobs: from a validated request to queued
 * sequences, and from a packed forward pass back to responses.
 *
 *   job_submit (HTTP thread): reserve queue room (else 503 at once), suspend
 *     the connection, register the deadline, queue one item per sequence.
 *   work_run (worker thread): one ll_forward over every sequence of the
 *     batch - whatever requests they came from - then each sequence's
 *     states go to its job's collect function; the sequence that completes a
 *     job has its finish function build the response, and the connection is
 *     resumed.
 *   work_drop (worker thread): a sequence of a job already answered (timed
 *     out) is dropped without running. */
#include "server_internal.h"

#include <stdlib.h>
#include <string.h>

#include "layerlens/pool.h"

ll_job *job_new(ll_request *r, ll_served_model *sm, const ll_job_ops *ops,
                void *data, int n_seq) {
    ll_job *job = calloc(1, sizeof *job);
    ll_job_seq *seqs = calloc((size_t)(n_seq > 0 ? n_seq : 1), sizeof *seqs);
    if (!job || !seqs) {
        free(job);
        free(seqs);
        if (ops->free_data) ops->free_data(data);
        return NULL;
    }
    job->ops = ops;
    job->data = data;
    job->srv = r->srv;
    job->sm = sm;
    job->model = atomic_load(&sm->model);
    job->conn = r->conn;
    job->n_seq = n_seq;
    job->seqs = seqs;
    for (int i = 0; i < n_seq; i++) {
        seqs[i].job = job;
        seqs[i].index = i;
        seqs[i].item.cancelled = &job->cancelled;
    }
    atomic_init(&job->refs, 1);
    atomic_init(&job->state, JOB_RUNNING);
    atomic_init(&job->cancelled, 0);
    atomic_init(&job->left, n_seq);
    job->deadline_us = r->start_us + (int64_t)r->srv->opts.request_timeout_ms * 1000;
    return job;
}

void job_release(ll_job *job) {
    if (atomic_fetch_sub(&job->refs, 1) != 1) return;
    for (int i = 0; i < job->n_seq; i++) ll_tokens_free(&job->seqs[i].toks);
    free(job->seqs);
    if (job->resp) MHD_destroy_response(job->resp);
    if (job->ops->free_data) job->ops->free_data(job->data);
    free(job);
}

int job_submit(ll_request *r, ll_job *job) {
    ll_server *s = r->srv;
    if (ll_batcher_reserve(s->batcher, job->n_seq)) {
        job_release(job);
        return reply_error(r, 503, "queue_full", NULL,
                           "the server is busy (queue full); retry shortly");
    }
    pthread_mutex_lock(&s->mu);
    if (s->shut_down) {
        pthread_mutex_unlock(&s->mu);
        ll_batcher_unreserve(s->batcher, job->n_seq);
        job_release(job);
        return reply_error(r, 503, "shutting_down", NULL, "the server is shutting down");
    }
    /* Suspend before anyone can resume: from here a worker or the sweeper
     * may answer the job at any moment. */
    MHD_suspend_connection(r->conn);
    r->job = job;                      /* the request's reference */
    atomic_fetch_add(&job->refs, 1);   /* the queued work's reference */
    inflight_add(s, job);
    pthread_mutex_unlock(&s->mu);

    ll_batch_item **items = malloc(sizeof *items * (size_t)job->n_seq);
    if (!items) {
        /* Out of memory: the reservation goes back, the job fails now. */
        ll_batcher_unreserve(s->batcher, job->n_seq);
        atomic_store(&job->left, 0);
        job_fail(job, 500, "out_of_memory", "out of memory");
        job_release(job);
        return 0;
    }
    for (int i = 0; i < job->n_seq; i++) {
        job->seqs[i].item.n_tok = job->seqs[i].toks.n;
        items[i] = &job->seqs[i].item;
    }
    ll_batcher_push(s->batcher, job->sm->index, items, job->n_seq);
    free(items);
    return 0;
}

void job_answer(ll_job *job, int status, struct MHD_Response *resp) {
    ll_server *s = job->srv;
    pthread_mutex_lock(&s->mu);
    if (atomic_load(&job->state) != JOB_RUNNING) {
        /* Answered already (timeout or shutdown): this result is dropped. */
        pthread_mutex_unlock(&s->mu);
        if (resp) MHD_destroy_response(resp);
        return;
    }
    answer_locked(s, job, status, resp);
    pthread_mutex_unlock(&s->mu);
}

void job_fail(ll_job *job, int status, const char *code, const char *msg) {
    if (atomic_load(&job->state) != JOB_RUNNING) return;
    job_answer(job, status, make_error_response(status, code, NULL, msg));
}

/* One sequence of a job is done (run or dropped).  The last one finishes the
 * job - if nobody answered it meanwhile - and gives up the work reference. */
static void seq_done(ll_job_seq *js) {
    ll_job *job = js->job;
    if (atomic_fetch_sub(&job->left, 1) != 1) return;
    if (atomic_load(&job->state) == JOB_RUNNING) {
        ll_error err = {{0}};
        json_t *body = job->ops->finish(job, &err);
        if (body) job_answer(job, 200, make_json_response(body, 200));
        else job_fail(job, 500, "internal_error", err.msg);
    }
    job_release(job);
}

static void merge_req(ll_forward_req *into, const ll_forward_req *r) {
    into->layers |= r->layers;
    into->want_raw_last |= r->want_raw_last;
    into->want_final |= r->want_final;
    into->want_projected |= r->want_projected;
}

/* --log-level debug: one line per forward pass. */
static void log_batch(ll_served_model *sm, int n, int n_tok, double ms, const char *error) {
    const ll_log *lg = &sm->srv->logger;
    if (!ll_log_enabled(lg, LL_LOG_DEBUG)) return;
    ll_log_field f[5] = {LL_LOG_STR("model", sm->id), LL_LOG_INT("sequences", n),
                         LL_LOG_INT("tokens", n_tok), LL_LOG_NUM("ms", ms),
                         LL_LOG_STR("error", error)};
    ll_log_event(lg, LL_LOG_DEBUG, "batch", f, error ? 5 : 4);
}

void work_run(void *lane_ctx, void *worker_state, ll_batch_item **items, int n) {
    /* the whole run (pass, collect, responses) keeps a core busy: counted
     * as such, so that a pass of another worker does not lend it out */
    ll_pass_begin();
    ll_served_model *sm = lane_ctx;
    ll_workspace *ws = worker_state;
    const ll_model *m = atomic_load(&sm->model);
    ll_seq *seqs = malloc(sizeof *seqs * (size_t)n);
    ll_forward_req req = {0};
    int n_tok = 0;
    for (int i = 0; seqs && i < n; i++) {
        ll_job_seq *js = (ll_job_seq *)items[i];
        seqs[i] = (ll_seq){js->toks.ids, js->toks.n};
        merge_req(&req, &js->job->req);
        n_tok += js->toks.n;
    }
    /* One forward pass for the whole batch: the states of a sequence do not
     * depend on its neighbours (attention runs per sequence). */
    ll_states st = {0};
    ll_error err = {{0}};
    int rc = -1;
    int64_t t0 = ll_now_us();
    if (!seqs) ll_errorf(&err, "out of memory");
    else if (!ws) ll_errorf(&err, "no workspace for this worker (out of memory)");
    else rc = ll_forward(m, ws, seqs, n, &req, &st, &err);
    if (rc == 0) ll_metrics_batch(sm->srv->metrics, sm->index, n, n_tok);
    log_batch(sm, n, n_tok, (double)(ll_now_us() - t0) / 1e3, rc == 0 ? NULL : err.msg);

    for (int i = 0; i < n; i++) {
        ll_job_seq *js = (ll_job_seq *)items[i];
        ll_job *job = js->job;
        if (rc != 0) {
            job_fail(job, 500, "forward_failed", err.msg);
        } else if (!atomic_load(&job->cancelled)) {
            ll_error cerr = {{0}};
            if (job->ops->collect(job, js->index, &st, i, &cerr))
                job_fail(job, 400, "invalid_input", cerr.msg);
        }
        seq_done(js);
    }
    ll_states_free(&st);
    free(seqs);
    ll_pass_end();
}

void work_drop(void *lane_ctx, ll_batch_item *item) {
    ll_served_model *sm = lane_ctx;
    ll_metrics_dropped(sm->srv->metrics, sm->index, 1);
    seq_done((ll_job_seq *)item);
}
