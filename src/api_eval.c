/* api_eval.c - the evaluation endpoints of the server:
 *
 *   POST /v1/evaluate (and POST /evaluate)  synchronous: the result body
 *   POST /v1/evaluations                    202 + id + Location
 *   GET  /v1/evaluations/{id}               status, progress, result
 *   DELETE /v1/evaluations/{id}             cancel
 *   GET  /v1/benchmarks                     tasks, item counts, checksums
 *
 * Every evaluation is a job run by one runner thread, one job at a time (an
 * evaluation already packs its texts into full batches; two at once would
 * only share the same workers).  The runner drives ll_eval_run with an
 * embedding callback that queues the texts on the batcher's background lanes
 * (one per model), which workers serve only when no interactive request is
 * waiting: /v1/embeddings goes first, an evaluation waits at most for one
 * batch.  Vectors are cached per (model, method, text, layer) across jobs.
 *
 * A synchronous request is a suspended connection held by its job; the
 * runner answers it when the job ends.  It is not on the deadline list (an
 * evaluation of real models takes minutes), so shutdown answers it here:
 * eval_service_stop cancels every job before the HTTP side drains.
 *
 * Finished jobs stay in memory (the newest MAX_FINISHED) and, with
 * --results-dir, are written there as <id>.json when they end, which is
 * what GET falls back to: a restart or a dropped job loses nothing.
 *
 * Locks: svc->mu guards the job list and every job's mutable fields; it may
 * be held while taking srv->mu (suspending a connection), never the
 * reverse. */
#include "server_internal.h"

#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "layerlens/eval.h"

#define MAX_FINISHED 64      /* finished jobs kept in memory */
#define MAX_PENDING 32       /* queued + running jobs; more is 503 */

enum { ST_QUEUED, ST_RUNNING, ST_DONE, ST_FAILED, ST_CANCELLED };
static const char *const STATUS[] = {"queued", "running", "done", "failed", "cancelled"};

typedef struct eval_service eval_service;

typedef struct eval_job {
    struct eval_job *next;   /* the service's list, newest first */
    eval_service *svc;
    char id[33];
    int status;
    ll_eval_request *req;    /* freed when the job ends */
    json_t *request;         /* the body as given */
    json_t *result;          /* when done */
    char error[LL_ERROR_MAX];
    atomic_int cancel;
    long done, total;
    int64_t created_us, started_us, finished_us;
    time_t created_at, finished_at;
    ll_job *wait;            /* POST /v1/evaluate: the suspended request */
} eval_job;

struct eval_service {
    ll_server *srv;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    eval_job *jobs;
    int stop;
    pthread_t runner;
    int runner_started;
    ll_eval_cache *cache;
    json_t *benchmarks;      /* GET /v1/benchmarks, built on first use */
};

/* ======================= the background lanes ======================= */

/* One ll_eval_batch on its way through the batcher. */
typedef struct eval_batch {
    const ll_eval_batch *b;
    ll_forward_req req;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int left;
    int failed;
    char err[LL_ERROR_MAX];
} eval_batch;

typedef struct eval_seq {
    ll_batch_item item; /* first: the batcher's pointer is cast back */
    eval_batch *eb;
    int index;
} eval_seq;

static void seq_finished(eval_batch *eb, const char *error) {
    pthread_mutex_lock(&eb->mu);
    if (error && !eb->failed) {
        eb->failed = 1;
        snprintf(eb->err, sizeof eb->err, "%s", error);
    }
    if (--eb->left == 0) pthread_cond_broadcast(&eb->cv);
    pthread_mutex_unlock(&eb->mu);
}

/* Worker thread: one forward pass over evaluation sequences, each pooled
 * straight into its batch's output rows (distinct rows: no lock needed). */
static void eval_lane_run(void *lane_ctx, void *worker_state, ll_batch_item **items, int n) {
    ll_served_model *sm = lane_ctx;
    ll_workspace *ws = worker_state;
    const ll_model *m = atomic_load(&sm->model);
    ll_seq *seqs = malloc(sizeof *seqs * (size_t)n);
    ll_forward_req req = {0};
    ll_error err = {{0}};
    int n_tok = 0, rc = -1;
    for (int i = 0; seqs && i < n; i++) {
        eval_seq *es = (eval_seq *)items[i];
        const ll_eval_input *in = &es->eb->b->inputs[es->index];
        seqs[i] = (ll_seq){in->ids, in->len};
        req.layers |= es->eb->req.layers;
        req.want_final |= es->eb->req.want_final;
        req.want_projected |= es->eb->req.want_projected;
        n_tok += in->len;
    }
    ll_states st = {0};
    if (!seqs) ll_errorf(&err, "out of memory");
    else if (!ws) ll_errorf(&err, "no workspace for this worker (out of memory)");
    else rc = ll_forward(m, ws, seqs, n, &req, &st, &err);
    if (rc == 0) ll_metrics_batch(sm->srv->metrics, sm->index, n, n_tok);
    for (int i = 0; i < n; i++) {
        eval_seq *es = (eval_seq *)items[i];
        const ll_eval_batch *b = es->eb->b;
        ll_error perr = {{0}};
        if (rc == 0 && ll_eval_pool(&st, i, &b->inputs[es->index], b->sel, b->out, es->index,
                                    &perr) == 0)
            seq_finished(es->eb, NULL);
        else
            seq_finished(es->eb, rc ? err.msg : perr.msg);
    }
    ll_states_free(&st);
    free(seqs);
}

static void eval_lane_drop(void *lane_ctx, ll_batch_item *item) {
    seq_finished(((eval_seq *)item)->eb, "the evaluation was cancelled");
}

static int lane_of(const ll_server *s, const ll_model *m) {
    for (int i = 0; i < s->n_models; i++)
        if (atomic_load(&s->models[i].model) == m) return s->n_models + i;
    return -1;
}

static void sleep_ms(int ms) {
    struct timespec ts = {0, ms * 1000000L};
    nanosleep(&ts, NULL);
}

/* The embedding callback of server evaluations: queue the inputs on the
 * model's background lane and wait for them.  A full queue is waited out
 * (interactive requests keep their room), in pieces of at most a quarter of
 * the queue. */
static int server_embed(void *ctx, const ll_eval_batch *b, ll_error *err) {
    eval_service *svc = ctx;
    ll_server *s = svc->srv;
    int lane = lane_of(s, b->model);
    if (lane < 0) return ll_errorf(err, "the model is not loaded");
    eval_seq *seqs = calloc((size_t)(b->n ? b->n : 1), sizeof *seqs);
    if (!seqs) return ll_errorf(err, "out of memory");
    eval_batch eb = {b, {0}, PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, b->n, 0, ""};
    ll_layer_sel_request(b->sel, ll_model_config(b->model), &eb.req);
    int piece = s->opts.max_queue / 4 > 0 ? s->opts.max_queue / 4 : 1, pushed = 0;
    int cancelled = 0;
    while (pushed < b->n) {
        int k = b->n - pushed < piece ? b->n - pushed : piece;
        if ((b->cancel && atomic_load(b->cancel)) || atomic_load(&s->stop)) {
            cancelled = 1;
            break;
        }
        if (ll_batcher_reserve(s->batcher, k)) { /* full: interactive work first */
            sleep_ms(2);
            continue;
        }
        ll_batch_item *items[256], **it = k <= 256 ? items : malloc(sizeof *it * (size_t)k);
        if (!it) {
            ll_batcher_unreserve(s->batcher, k);
            break;
        }
        for (int i = 0; i < k; i++) {
            eval_seq *es = &seqs[pushed + i];
            es->eb = &eb;
            es->index = pushed + i;
            es->item.n_tok = b->inputs[pushed + i].len;
            es->item.cancelled = b->cancel;
            it[i] = &es->item;
        }
        ll_batcher_push(s->batcher, lane, it, k);
        if (it != items) free(it);
        pushed += k;
    }
    pthread_mutex_lock(&eb.mu);
    eb.left -= b->n - pushed; /* never queued */
    while (eb.left > 0) pthread_cond_wait(&eb.cv, &eb.mu);
    pthread_mutex_unlock(&eb.mu);
    pthread_mutex_destroy(&eb.mu);
    pthread_cond_destroy(&eb.cv);
    free(seqs);
    if (cancelled || (b->cancel && atomic_load(b->cancel))) return LL_EVAL_CANCELLED;
    if (pushed < b->n) return ll_errorf(err, "out of memory");
    if (eb.failed) return ll_errorf(err, "%s", eb.err);
    return 0;
}

/* ======================= jobs ======================= */

static void new_id(char out[33]) {
    unsigned char r[16];
    if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r) {
        /* no entropy source: time and address still make ids unique here */
        uint64_t t = (uint64_t)ll_now_us() ^ (uint64_t)(uintptr_t)out;
        for (int i = 0; i < 16; i++) r[i] = (unsigned char)(t >> (8 * (i % 8))) ^ (unsigned char)i;
    }
    for (int i = 0; i < 16; i++) snprintf(out + 2 * i, 3, "%02x", r[i]);
}

static int valid_id(const char *id) {
    if (strlen(id) != 32) return 0;
    for (const char *p = id; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'))) return 0;
    return 1;
}

static void iso_time(time_t t, char out[32]) {
    struct tm tm;
    strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&t, &tm));
}

static int finished(const eval_job *j) { return j->status >= ST_DONE; }

static void job_free(eval_job *j) {
    ll_eval_request_free(j->req);
    json_decref(j->request);
    json_decref(j->result);
    free(j);
}

/* The job as GET shows it (svc->mu held). */
static json_t *job_json(const eval_job *j) {
    char created[32], fin[32];
    iso_time(j->created_at, created);
    int64_t now = ll_now_us();
    int64_t elapsed = !j->started_us ? 0 : (finished(j) ? j->finished_us : now) - j->started_us;
    json_t *o = json_object();
    json_object_set_new(o, "id", json_string(j->id));
    json_object_set_new(o, "status", json_string(STATUS[j->status]));
    json_object_set_new(o, "created_at", json_string(created));
    if (finished(j)) {
        iso_time(j->finished_at, fin);
        json_object_set_new(o, "finished_at", json_string(fin));
    }
    json_object_set_new(o, "progress",
                        json_pack("{s:I, s:I, s:f}", "done", (json_int_t)j->done, "total",
                                  (json_int_t)j->total, "fraction",
                                  j->total > 0 ? (double)j->done / j->total
                                               : (j->status == ST_DONE ? 1.0 : 0.0)));
    json_object_set_new(o, "elapsed_ms", json_real((double)elapsed / 1e3));
    json_t *eta = json_null();
    if (j->status == ST_RUNNING && j->done > 0 && j->total > j->done)
        eta = json_real((double)elapsed / 1e3 * (double)(j->total - j->done) / (double)j->done);
    else if (j->status == ST_RUNNING && j->total > 0 && j->done >= j->total)
        eta = json_real(0);
    json_object_set_new(o, "estimated_remaining_ms", eta);
    if (atomic_load(&j->cancel) && !finished(j)) json_object_set_new(o, "cancel_requested", json_true());
    /* deep copies: a reply is dumped and freed on another thread, and
     * jansson's reference counts are not to be shared between threads */
    json_object_set_new(o, "request", json_deep_copy(j->request));
    if (j->status == ST_DONE) json_object_set_new(o, "result", json_deep_copy(j->result));
    if (j->status == ST_FAILED || j->status == ST_CANCELLED)
        json_object_set_new(o, "error", json_string(j->error));
    return o;
}

/* What remains to do once a job has ended, prepared under svc->mu (the job
 * may be dropped from memory as soon as the lock is released) and carried
 * out without it: write the record, answer the waiting request. */
typedef struct ending {
    char id[33];
    json_t *record;              /* for results_dir, or NULL */
    ll_job *wait;                /* the suspended request, or NULL */
    int http_status;
    struct MHD_Response *resp;
} ending;

/* The response of a synchronous request: the result, full precision. */
static struct MHD_Response *text_response(json_t *body /* stolen */) {
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    if (!text) return NULL;
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(text);
        return NULL;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    return resp;
}

/* svc->mu held; the job has just reached a final status. */
static void ending_prepare(eval_service *svc, eval_job *j, ending *e) {
    memset(e, 0, sizeof *e);
    memcpy(e->id, j->id, sizeof e->id);
    if (svc->srv->opts.results_dir) e->record = job_json(j);
    e->wait = j->wait;
    j->wait = NULL;
    if (!e->wait) return;
    if (j->status == ST_DONE) {
        json_t *body = json_deep_copy(j->result);
        json_object_set_new(body, "id", json_string(j->id));
        e->http_status = 200;
        e->resp = text_response(body);
    } else {
        e->http_status = j->status == ST_CANCELLED ? 503 : 500;
        e->resp = make_error_response(e->http_status, j->status == ST_CANCELLED
                                      ? "cancelled" : "evaluation_failed", NULL, j->error);
    }
}

/* Writes the record to results_dir/<id>.json atomically (a reader never
 * sees half a file), then answers the waiting request. */
static void ending_finish(eval_service *svc, ending *e) {
    const char *dir = svc->srv->opts.results_dir;
    if (e->record && dir) {
        char path[4096], tmp[4200];
        snprintf(path, sizeof path, "%s/%s.json", dir, e->id);
        snprintf(tmp, sizeof tmp, "%s.tmp", path);
        if (json_dump_file(e->record, tmp, JSON_COMPACT) != 0 || rename(tmp, path) != 0) {
            fprintf(svc->srv->log, "layerlens: cannot write %s: %s\n", path, strerror(errno));
            fflush(svc->srv->log);
            unlink(tmp);
        }
    }
    json_decref(e->record);
    if (e->wait) {
        job_answer(e->wait, e->http_status, e->resp);
        job_release(e->wait);
    }
}

/* Keeps the newest MAX_FINISHED finished jobs in memory (svc->mu held). */
static void trim_finished(eval_service *svc) {
    int kept = 0;
    for (eval_job **p = &svc->jobs; *p;) {
        eval_job *j = *p;
        if (finished(j) && ++kept > MAX_FINISHED) {
            *p = j->next;
            job_free(j);
        } else {
            p = &j->next;
        }
    }
}

static void on_progress(void *ctx, long done, long total) {
    eval_job *j = ctx;
    pthread_mutex_lock(&j->svc->mu);
    j->done = done, j->total = total;
    pthread_mutex_unlock(&j->svc->mu);
}

static ll_eval_env make_env(eval_service *svc) {
    ll_server *s = svc->srv;
    ll_eval_env env = {s->opts.data_dir, NULL, NULL, server_embed, svc,
                       s->opts.max_batch_tokens, svc->cache, NULL, NULL, NULL};
    for (int i = 0; i < s->n_models; i++) {
        ll_model *m = atomic_load(&s->models[i].model);
        if (!strcmp(s->models[i].id, "gpt2")) env.gpt2 = m;
        else env.clip = m;
    }
    return env;
}

/* Runner thread: one job from start to end. */
static void run_job(eval_service *svc, eval_job *j) {
    ll_eval_env env = make_env(svc);
    env.progress = on_progress, env.progress_ctx = j, env.cancel = &j->cancel;
    json_t *out = NULL;
    ll_error err = {{0}};
    int rc = ll_eval_run(&env, j->req, &out, &err);
    /* an evaluation frees hundreds of MiB of working vectors at its end:
     * give them back to the system rather than keep them in malloc's pools */
    malloc_trim(0);
    pthread_mutex_lock(&svc->mu);
    j->status = rc == 0 ? ST_DONE : rc == LL_EVAL_CANCELLED ? ST_CANCELLED : ST_FAILED;
    j->result = out;
    snprintf(j->error, sizeof j->error, "%s", rc ? err.msg : "");
    j->finished_us = ll_now_us();
    j->finished_at = time(NULL);
    ll_eval_request_free(j->req);
    j->req = NULL;
    ending e;
    ending_prepare(svc, j, &e);
    pthread_mutex_unlock(&svc->mu);
    ending_finish(svc, &e);
}

static eval_job *oldest_queued(eval_service *svc) {
    eval_job *found = NULL;
    for (eval_job *j = svc->jobs; j; j = j->next)
        if (j->status == ST_QUEUED) found = j;
    return found;
}

static void *runner_main(void *p) {
    eval_service *svc = p;
    pthread_mutex_lock(&svc->mu);
    for (;;) {
        eval_job *j;
        while (!svc->stop && !(j = oldest_queued(svc))) pthread_cond_wait(&svc->cv, &svc->mu);
        if (svc->stop) break;
        j->status = ST_RUNNING;
        j->started_us = ll_now_us();
        pthread_mutex_unlock(&svc->mu);
        run_job(svc, j);
        pthread_mutex_lock(&svc->mu);
        trim_finished(svc);
    }
    pthread_mutex_unlock(&svc->mu);
    return NULL;
}

/* ======================= life cycle ======================= */

static int make_dir(const char *dir, ll_error *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s", dir);
    for (char *p = path + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(path, 0755) != 0 && errno != EEXIST)
            return ll_errorf(err, "--results-dir: cannot create %s: %s", path, strerror(errno));
        *p = '/';
    }
    if (mkdir(path, 0755) != 0 && errno != EEXIST)
        return ll_errorf(err, "--results-dir: cannot create %s: %s", path, strerror(errno));
    if (access(path, W_OK) != 0)
        return ll_errorf(err, "--results-dir: %s is not writable", path);
    return 0;
}

int eval_service_new(ll_server *s, ll_error *err) {
    if (s->opts.results_dir && make_dir(s->opts.results_dir, err)) return -1;
    eval_service *svc = calloc(1, sizeof *svc);
    if (!svc) return ll_errorf(err, "out of memory");
    svc->srv = s;
    pthread_mutex_init(&svc->mu, NULL);
    pthread_cond_init(&svc->cv, NULL);
    s->eval = svc;
    if (!(svc->cache = ll_eval_cache_new((size_t)s->opts.eval_cache_mb << 20, err))) return -1;
    /* lanes n_models .. 2 n_models - 1: model i's background lane */
    for (int i = 0; i < s->n_models; i++) {
        int lane = ll_batcher_add_lane(s->batcher, eval_lane_run, eval_lane_drop,
                                       &s->models[i], err);
        if (lane != s->n_models + i) return lane < 0 ? -1 : ll_errorf(err, "batcher lanes");
        ll_batcher_lane_background(s->batcher, lane);
    }
    int rc = pthread_create(&svc->runner, NULL, runner_main, svc);
    if (rc) return ll_errorf(err, "cannot start the evaluation thread: %s", strerror(rc));
    svc->runner_started = 1;
    return 0;
}

void eval_service_stop(ll_server *s) {
    eval_service *svc = s->eval;
    if (!svc) return;
    pthread_mutex_lock(&svc->mu);
    int was = svc->stop;
    svc->stop = 1;
    for (eval_job *j = svc->jobs; j; j = j->next) atomic_store(&j->cancel, 1);
    pthread_cond_broadcast(&svc->cv);
    pthread_mutex_unlock(&svc->mu);
    if (was) return;
    if (svc->runner_started) pthread_join(svc->runner, NULL); /* the running job ends */
    svc->runner_started = 0;
    /* jobs that never ran end as cancelled, their requests answered */
    for (;;) {
        pthread_mutex_lock(&svc->mu);
        eval_job *j = svc->jobs;
        while (j && finished(j)) j = j->next;
        if (!j) {
            pthread_mutex_unlock(&svc->mu);
            break;
        }
        j->status = ST_CANCELLED;
        snprintf(j->error, sizeof j->error, "the server shut down before the evaluation ran");
        j->finished_us = ll_now_us();
        j->finished_at = time(NULL);
        ending e;
        ending_prepare(svc, j, &e);
        pthread_mutex_unlock(&svc->mu);
        ending_finish(svc, &e);
    }
}

void eval_service_free(ll_server *s) {
    eval_service *svc = s->eval;
    if (!svc) return;
    eval_service_stop(s);
    for (eval_job *j = svc->jobs, *nx; j; j = nx) {
        nx = j->next;
        job_free(j);
    }
    ll_eval_cache_free(svc->cache);
    json_decref(svc->benchmarks);
    pthread_cond_destroy(&svc->cv);
    pthread_mutex_destroy(&svc->mu);
    free(svc);
    s->eval = NULL;
}

/* ======================= handlers ======================= */

static int reply_full(ll_request *r, int status, json_t *body /* stolen */) {
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    if (!text) return reply_error(r, 500, "out_of_memory", NULL, "out of memory");
    return reply_text(r, status, "application/json", text);
}

/* Validates the body into a new queued job (replies and returns NULL on
 * error).  Models must be loaded: the request is checked against them. */
static eval_job *job_from_body(ll_request *r, json_t *body) {
    ll_server *s = r->srv;
    if (!s->eval) {
        reply_error(r, 503, "not_ready", NULL, "evaluations are not available");
        return NULL;
    }
    if (!atomic_load(&s->ready)) {
        reply_error(r, 503, "not_ready", NULL, "the models are still loading");
        return NULL;
    }
    ll_eval_env env = make_env(s->eval);
    ll_error err = {{0}};
    ll_eval_request *req = ll_eval_request_parse(body, &env, &err);
    if (!req) {
        reply_error(r, 400, "invalid_request", NULL, "%s", err.msg);
        return NULL;
    }
    eval_job *j = calloc(1, sizeof *j);
    if (!j) {
        ll_eval_request_free(req);
        reply_error(r, 500, "out_of_memory", NULL, "out of memory");
        return NULL;
    }
    new_id(j->id);
    j->svc = s->eval;
    j->req = req;
    j->request = json_deep_copy(body); /* the body is freed by the HTTP thread */
    atomic_init(&j->cancel, 0);
    j->created_us = ll_now_us();
    j->created_at = time(NULL);
    return j;
}

static int pending_jobs(eval_service *svc) {
    int n = 0;
    for (eval_job *j = svc->jobs; j; j = j->next) n += !finished(j);
    return n;
}

/* Adds the job to the queue (svc->mu held); 0, or -1 after replying 503. */
static int enqueue_locked(ll_request *r, eval_service *svc, eval_job *j) {
    if (svc->stop) return reply_error(r, 503, "shutting_down", NULL,
                                      "the server is shutting down"), -1;
    if (pending_jobs(svc) >= MAX_PENDING)
        return reply_error(r, 503, "queue_full", NULL,
                           "%d evaluations are queued or running; retry later", MAX_PENDING), -1;
    j->next = svc->jobs;
    svc->jobs = j;
    pthread_cond_broadcast(&svc->cv);
    return 0;
}

/* An empty job: only a suspended connection, answered by the runner. */
static const ll_job_ops WAIT_OPS = {NULL, NULL, NULL};

int api_evaluate(ll_request *r, json_t *body) {
    eval_job *j = job_from_body(r, body);
    if (!j) return 0;
    eval_service *svc = r->srv->eval;
    ll_server *s = r->srv;
    ll_job *wait = job_new(r, &s->models[0], &WAIT_OPS, NULL, 0);
    if (!wait) {
        job_free(j);
        return reply_error(r, 500, "out_of_memory", NULL, "out of memory");
    }
    pthread_mutex_lock(&svc->mu);
    if (enqueue_locked(r, svc, j)) {
        pthread_mutex_unlock(&svc->mu);
        job_release(wait);
        job_free(j);
        return 0;
    }
    /* Suspend before the runner can answer: it needs svc->mu to take the
     * job, which is held until the connection is suspended. */
    pthread_mutex_lock(&s->mu);
    int down = s->shut_down;
    if (!down) {
        MHD_suspend_connection(r->conn);
        r->job = wait;                   /* the request's reference */
        atomic_fetch_add(&wait->refs, 1); /* the job's reference */
        j->wait = wait;
    }
    pthread_mutex_unlock(&s->mu);
    if (down) {
        j->status = ST_CANCELLED;
        j->finished_us = ll_now_us(), j->finished_at = time(NULL);
        snprintf(j->error, sizeof j->error, "the server is shutting down");
        pthread_mutex_unlock(&svc->mu);
        job_release(wait);
        return reply_error(r, 503, "shutting_down", NULL, "the server is shutting down");
    }
    pthread_mutex_unlock(&svc->mu);
    return 0;
}

int api_evaluations_create(ll_request *r, json_t *body) {
    eval_job *j = job_from_body(r, body);
    if (!j) return 0;
    eval_service *svc = r->srv->eval;
    pthread_mutex_lock(&svc->mu);
    if (enqueue_locked(r, svc, j)) {
        pthread_mutex_unlock(&svc->mu);
        job_free(j);
        return 0;
    }
    json_t *o = job_json(j);
    pthread_mutex_unlock(&svc->mu);
    char location[64];
    snprintf(location, sizeof location, "/v1/evaluations/%s", j->id);
    json_object_set_new(o, "location", json_string(location));
    reply_full(r, 202, o);
    if (r->resp) MHD_add_response_header(r->resp, MHD_HTTP_HEADER_LOCATION, location);
    return 0;
}

#define JOB_PREFIX "/v1/evaluations/"

int eval_is_job_path(const char *url) {
    return strncmp(url, JOB_PREFIX, strlen(JOB_PREFIX)) == 0;
}

static eval_job *find_job(eval_service *svc, const char *id) {
    for (eval_job *j = svc->jobs; j; j = j->next)
        if (!strcmp(j->id, id)) return j;
    return NULL;
}

/* A job no longer in memory (dropped, or from before a restart), from the
 * results directory, as it was written when it ended. */
static int reply_saved(ll_request *r, const char *id) {
    const char *dir = r->srv->opts.results_dir;
    if (dir) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s.json", dir, id);
        json_error_t je;
        json_t *o = json_load_file(path, 0, &je);
        if (o) return reply_full(r, 200, o);
    }
    return reply_error(r, 404, "evaluation_not_found", NULL, "no evaluation %s", id);
}

int api_evaluation_job(ll_request *r, const char *url, const char *method) {
    r->endpoint = EP_EVALUATIONS;
    const char *id = url + strlen(JOB_PREFIX);
    int get = !strcmp(method, "GET") || !strcmp(method, "HEAD"), del = !strcmp(method, "DELETE");
    if (!get && !del) {
        reply_error(r, 405, "method_not_allowed", NULL,
                    "%s %s is not supported; use GET or DELETE", method, url);
        if (r->resp) MHD_add_response_header(r->resp, MHD_HTTP_HEADER_ALLOW, "GET, HEAD, DELETE");
        return 0;
    }
    if (!valid_id(id))
        return reply_error(r, 404, "evaluation_not_found", NULL, "no evaluation %.64s", id);
    eval_service *svc = r->srv->eval;
    if (!svc) return reply_error(r, 404, "evaluation_not_found", NULL, "no evaluation %s", id);
    pthread_mutex_lock(&svc->mu);
    eval_job *j = find_job(svc, id);
    if (!j) {
        pthread_mutex_unlock(&svc->mu);
        return reply_saved(r, id);
    }
    int status = 200, ended = 0;
    ending e;
    if (del) {
        if (finished(j) && j->status != ST_CANCELLED) {
            pthread_mutex_unlock(&svc->mu);
            return reply_error(r, 409, "evaluation_finished", NULL,
                               "evaluation %s has already finished (%s)", id, STATUS[j->status]);
        }
        atomic_store(&j->cancel, 1);
        if (j->status == ST_QUEUED) { /* never started: cancelled now */
            j->status = ST_CANCELLED;
            snprintf(j->error, sizeof j->error, "cancelled before it ran");
            j->finished_us = ll_now_us(), j->finished_at = time(NULL);
            ending_prepare(svc, j, &e);
            ended = 1;
        } else if (j->status == ST_RUNNING) {
            status = 202; /* the runner stops before its next batch */
        }
    }
    json_t *o = job_json(j);
    pthread_mutex_unlock(&svc->mu);
    if (ended) ending_finish(svc, &e);
    return reply_full(r, status, o);
}

/* ---- GET /v1/benchmarks ---- */

/* selfsim_words lists the file of its reference selection like every task;
 * the default, sampled selection reads the pool of every distinct STS-B
 * sentence, described here: its files, size and checksums. */
static json_t *sampled_pool_json(const char *data_dir) {
    json_t *o = json_pack("{s:i, s:I}", "n_default", LL_CWE_DEFAULT_N, "seed_default",
                          (json_int_t)LL_CWE_SEED);
    ll_error err = {{0}};
    ll_bench *pool = data_dir ? ll_bench_load_stsb_pool(data_dir, &err) : NULL;
    json_t *info = pool ? ll_bench_info_json(pool) : NULL;
    if (info) {
        json_object_set(o, "n_available", json_object_get(info, "n"));
        json_object_set(o, "files", json_object_get(info, "files"));
        json_object_set_new(o, "available", json_true());
    } else {
        json_object_set_new(o, "available", json_false());
        json_object_set_new(o, "reason", json_string(data_dir ? err.msg
                            : "no data directory configured (--data DIR)"));
    }
    json_decref(info);
    ll_bench_free(pool);
    return o;
}

static json_t *benchmarks_json(const char *data_dir) {
    json_t *tasks = json_array(), *paper = json_array();
    for (int i = 0; i < ll_task_count(); i++) {
        const ll_task *t = ll_task_at(i);
        json_t *e = json_pack("{s:s, s:s, s:s, s:s, s:s, s:i}", "task", t->name, "kind",
                              ll_task_kind_name(t->kind), "metric",
                              ll_task_kind_metric(t->kind), "description", t->description,
                              "file", t->file, "n_expected", t->n_expected);
        ll_error err = {{0}};
        ll_bench *b = data_dir ? ll_bench_load(data_dir, t, &err) : NULL;
        json_t *info = b ? ll_bench_info_json(b) : NULL;
        if (info) {
            json_object_update(e, info);
            json_object_set_new(e, "available", json_true());
        } else {
            json_object_set_new(e, "available", json_false());
            json_object_set_new(e, "reason", json_string(data_dir ? err.msg
                                : "no data directory configured (--data DIR)"));
        }
        json_decref(info);
        ll_bench_free(b);
        if (t->kind == LL_TASK_CWE) json_object_set_new(e, "sampled", sampled_pool_json(data_dir));
        json_array_append_new(tasks, e);
    }
    for (int i = 0; ll_eval_paper_tasks[i]; i++)
        json_array_append_new(paper, json_string(ll_eval_paper_tasks[i]));
    return json_pack("{s:o, s:o, s:o, s:{s:[s, s], s:[s, s, s], s:[s, s]}}", "data_dir",
                     data_dir ? json_string(data_dir) : json_null(), "paper_tasks", paper,
                     "tasks", tasks, "methods", "word", "bos", "plain", "sentence", "eos",
                     "last", "mean", "selfsim_words", "sampled", "reference");
}

int api_benchmarks(ll_request *r, json_t *body) {
    eval_service *svc = r->srv->eval;
    if (!svc) return reply_error(r, 503, "not_ready", NULL, "evaluations are not available");
    pthread_mutex_lock(&svc->mu);
    if (!svc->benchmarks) svc->benchmarks = benchmarks_json(r->srv->opts.data_dir);
    json_t *o = json_deep_copy(svc->benchmarks);
    pthread_mutex_unlock(&svc->mu);
    if (!o) return reply_error(r, 500, "out_of_memory", NULL, "out of memory");
    return reply_full(r, 200, o);
}
