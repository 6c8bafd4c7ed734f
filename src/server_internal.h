/* server_internal.h - what the server's source files share: the server
 * object, one HTTP request, one compute job, and the reply helpers.
 *
 * Threads and what they own:
 *   main      options, ll_server_new/shutdown/free, signal wait.
 *   loader    loads the models (publishing each with an atomic store, after
 *             which an ll_model is read-only and shared by every thread),
 *             then hashes their files (published by `hash_state`).
 *   http      libmicrohttpd's polling threads (LL_HTTP_THREADS of them).
 *             Each ll_request belongs to the thread of its connection: it
 *             is created at the first callback and freed in the completion
 *             callback.  These threads parse, validate, tokenize, build a job
 *             and suspend the connection; they never run a forward pass.
 *   workers   (batcher.c) run packed forward passes, hand each sequence's
 *             states to its job (collect), and the worker that completes a
 *             job builds its response (finish) and resumes the connection.
 *             Each worker owns one ll_workspace, and with it the block of
 *             its last pass's states, which it gives back when it goes
 *             idle (worker_idle).
 *   helpers   (pool.c) compute parts of a step (a product's columns,
 *             attention's heads, layer norm's rows) for a pass that runs
 *             alone; they own nothing and touch only the step's buffers,
 *             between its start and its end.
 *   sweeper   answers jobs whose deadline passed with 504, and those whose
 *             client hung up while they were queued or running (499, never
 *             sent: their queued work is dropped).
 * A job is shared: refcounted (the request holds one reference, the queued
 * work another); its inputs are written before it is queued and read-only
 * after; each sequence's result slot is written by the one worker that runs
 * it.  A job is answered exactly once, under srv->mu: the thread that
 * finds it JOB_RUNNING there (the worker that finished it, the sweeper at its
 * deadline, or shutdown) sets `status`/`resp`, takes it off the in-flight
 * list and resumes the connection, all in one critical section. */
#ifndef LAYERLENS_SERVER_INTERNAL_H
#define LAYERLENS_SERVER_INTERNAL_H

#include <jansson.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>

#include "layerlens/batcher.h"
#include "layerlens/embed.h"
#include "layerlens/metrics.h"
#include "layerlens/model.h"
#include "layerlens/server.h"

#define LL_HTTP_THREADS 2
#define LL_MAX_MODELS 2

/* Endpoints, in the order of the routing table and the metrics labels. */
enum {
    EP_HEALTHZ, EP_READYZ, EP_METRICS, EP_MODELS, EP_TOKENIZE, EP_EMBEDDINGS,
    EP_SIMILARITY, EP_SELF_SIMILARITY, EP_EVALUATE, EP_EVALUATIONS, EP_BENCHMARKS,
    EP_OTHER, N_ENDPOINTS
};

/* ---- the server ---- */

typedef struct ll_served_file {
    const char *name; /* model.safetensors, config.json, ... */
    char *path;
    long long bytes;
    char sha256[65];
} ll_served_file;

#define LL_MODEL_FILES 4

enum { HASH_PENDING, HASH_RUNNING, HASH_DONE, HASH_FAILED };

typedef struct ll_served_model {
    int index;            /* batcher lane and metrics index */
    const char *id;       /* "gpt2" or "clip" */
    const char *dir;
    int demo;
    struct ll_server *srv;
    _Atomic(ll_model *) model; /* NULL until loaded */
    double load_seconds;
    ll_served_file files[LL_MODEL_FILES];
    atomic_int hash_state;
} ll_served_model;

typedef struct ll_job ll_job;

typedef struct ll_server {
    ll_server_opts opts;
    ll_log logger;          /* every line the server logs (read-only after start) */
    FILE *log;              /* a stream whose lines go to the logger as warnings,
                               for code that prints */
    ll_log_sink log_sink;   /* its line buffer */
    /* API key: its SHA-256, so that comparing a presented key takes the same
     * time whatever its length and content (see http.c). */
    int has_key;
    unsigned char key_sha256[32];
    /* CORS: the allowed origins (split from the option lists), or any. */
    char **cors;
    int n_cors;
    int cors_any;
    ll_served_model models[LL_MAX_MODELS];
    const char *model_ids[LL_MAX_MODELS]; /* metrics labels */
    int n_models;
    struct MHD_Daemon *daemon;
    int port;
    ll_batcher *batcher;
    ll_metrics *metrics;
    int pass_threads; /* threads of a pass running alone (pool.h) */
    struct eval_service *eval; /* api_eval.c: evaluation jobs */

    atomic_int ready;       /* every model loaded */
    atomic_int draining;    /* shutdown began: responses close connections */
    atomic_int in_progress; /* requests begun and not yet completed */
    atomic_int stop;        /* loader/hasher: give up */

    pthread_mutex_t mu;     /* guards the in-flight list and the sweeper */
    pthread_cond_t cv;
    ll_job *inflight_head, *inflight_tail; /* by deadline (= arrival) */
    int sweeper_stop;
    pthread_t sweeper;
    int sweeper_started;
    int shut_down;
} ll_server;

/* ---- one HTTP request (owned by its connection's HTTP thread) ---- */

/* A request whose client hung up before its answer (nginx's code): logged
 * and counted, never sent. */
#define LL_STATUS_CLIENT_GONE 499

typedef struct ll_request {
    ll_server *srv;
    struct MHD_Connection *conn;
    int endpoint;
    int api_route;              /* a route of the API (CORS preflight, Allow) */
    int64_t start_us;
    char method[16];            /* for the request log */
    char path[208];             /* percent-escaped where not printable ASCII */
    char client[64];            /* numeric address */
    long tokens;                /* tokens of the inputs, once encoded */
    const char *origin;         /* the Origin header when it is allowed */
    char *body;
    size_t len, cap;
    int status;                 /* of the response queued, for metrics */
    struct MHD_Response *resp;  /* an immediate reply, once made */
    ll_job *job;                /* the compute job while suspended/after */
} ll_request;

/* Immediate replies (on the HTTP thread).  Each returns 0 so handlers can
 * `return reply_...(...)`. */
int reply_json(ll_request *r, int status, json_t *body /* stolen */);
int reply_text(ll_request *r, int status, const char *content_type,
               char *text /* malloc'd, stolen */);
/* {"error": {"type", "code", "message", "param"}}; param may be NULL. */
__attribute__((format(printf, 5, 6)))
int reply_error(ll_request *r, int status, const char *code,
                const char *param, const char *fmt, ...);

/* The response for a job: body JSON or an error (on any thread). */
struct MHD_Response *make_json_response(json_t *body /* stolen */, int status);
struct MHD_Response *make_error_response(int status, const char *code,
                                         const char *param, const char *msg);

/* ---- compute jobs ---- */

/* One sequence of a job: what a worker runs (the batch item comes first so
 * the batcher's pointers can be cast back). */
typedef struct ll_job_seq {
    ll_batch_item item;
    ll_job *job;
    int index;    /* within the job */
    ll_tokens toks;
    ll_span span;
} ll_job_seq;

typedef struct ll_job_ops {
    /* Worker thread, right after the forward pass: take what the endpoint
     * needs from the states of batch sequence s, which is the job's
     * sequence `index`.  0, or -1 with err (the request fails). */
    int (*collect)(ll_job *job, int index, const ll_states *st, int s,
                   ll_error *err);
    /* Worker thread, once every sequence is collected: the response body
     * (NULL with err on failure). */
    json_t *(*finish)(ll_job *job, ll_error *err);
    void (*free_data)(void *data);
} ll_job_ops;

enum { JOB_RUNNING, JOB_ANSWERED };

struct ll_job {
    const ll_job_ops *ops;
    void *data;             /* the endpoint's */
    ll_server *srv;
    ll_served_model *sm;
    const ll_model *model;
    struct MHD_Connection *conn;
    ll_forward_req req;     /* what the forward pass must keep */
    int n_seq;
    ll_job_seq *seqs;
    long n_tokens;

    atomic_int refs;
    atomic_int state;       /* JOB_RUNNING until answered */
    atomic_int cancelled;   /* set when answered early: queued work dropped */
    atomic_int left;        /* sequences not yet run or dropped */
    int64_t deadline_us;
    ll_job *prev, *next;    /* in-flight list (srv->mu) */
    int in_list;

    int status;                 /* written by the answering thread only */
    struct MHD_Response *resp;
};

/* server_work.c */
ll_job *job_new(ll_request *r, ll_served_model *sm, const ll_job_ops *ops,
                void *data, int n_seq);
void job_release(ll_job *job);
/* Queues the job's sequences and suspends the connection; on a full queue
 * replies 503 instead.  Consumes the caller's reference either way. */
int job_submit(ll_request *r, ll_job *job);
/* Answers a job once (later calls are ignored), then resumes its
 * connection.  resp may be NULL (out of memory: 500). */
void job_answer(ll_job *job, int status, struct MHD_Response *resp);
void job_fail(ll_job *job, int status, const char *code, const char *msg);
/* The batcher's run and drop functions for a model lane. */
void work_run(void *lane_ctx, void *worker_state, ll_batch_item **items, int n);
void work_drop(void *lane_ctx, ll_batch_item *item);

/* http.c */
int http_start(ll_server *s, ll_error *err);
/* Stops accepting; returns once in-flight requests are answered or the
 * time limit passes; then stops the daemon. */
void http_stop(ll_server *s);
void inflight_add(ll_server *s, ll_job *job);
void inflight_remove(ll_server *s, ll_job *job);
/* With s->mu held: marks a running job answered, takes it off the list and
 * resumes its connection. */
void answer_locked(ll_server *s, ll_job *job, int status, struct MHD_Response *resp);
int sweeper_start(ll_server *s, ll_error *err);
void sweeper_stop(ll_server *s);

/* api_*.c: the handlers.  Each gets the parsed body (NULL for GET) and
 * replies or submits a job. */
int api_healthz(ll_request *r, json_t *body);
int api_readyz(ll_request *r, json_t *body);
int api_metrics(ll_request *r, json_t *body);
int api_models(ll_request *r, json_t *body);
int api_tokenize(ll_request *r, json_t *body);
int api_embeddings(ll_request *r, json_t *body);
int api_similarity(ll_request *r, json_t *body);
int api_self_similarity(ll_request *r, json_t *body);
/* web.c: the page at "/" and its files under "/web/" (GET and HEAD). */
int web_is_path(const char *url);
int api_web(ll_request *r, const char *url, const char *method);

/* api_eval.c: evaluations.  eval_service_new adds the background batcher
 * lanes (before the batcher starts) and the job runner; eval_service_stop
 * cancels every evaluation and answers the requests waiting for one. */
int eval_service_new(ll_server *s, ll_error *err);
void eval_service_stop(ll_server *s);
void eval_service_free(ll_server *s);
int api_evaluate(ll_request *r, json_t *body);
int api_evaluations_create(ll_request *r, json_t *body);
int api_benchmarks(ll_request *r, json_t *body);
/* /v1/evaluations/{id}: GET (status, progress, result) and DELETE (cancel). */
int eval_is_job_path(const char *url);
int api_evaluation_job(ll_request *r, const char *url, const char *method);

/* api_request.c: request fields shared by the endpoints.  Each returns 0,
 * or replies with the right error and returns -1. */
int req_model(ll_request *r, json_t *body, ll_served_model **sm,
              const ll_model **m);
/* "input": a string or a non-empty array of strings. */
int req_texts(ll_request *r, json_t *v, const char *param,
              json_t ***texts, int *n);
int req_bool(ll_request *r, json_t *body, const char *name, int dflt, int *out);
/* "layers" and "pooling" with the endpoint defaults: without layers, GPT-2's
 * final layer / CLIP's projected embedding; pooling last (GPT-2) / eos
 * (CLIP).  *explicit_layers tells whether layers was given. */
int req_layers(ll_request *r, json_t *body, const ll_config *cfg,
               ll_layer_sel *sel, int *explicit_layers);
int req_pooling(ll_request *r, json_t *body, const ll_config *cfg,
                ll_pooling *out);
/* Encodes texts[i] into job->seqs[i] (400 / 422 on failure).  need_text:
 * every input must have text tokens (pooling last/mean). */
int req_encode(ll_request *r, ll_job *job, json_t **texts, const char *param,
               const ll_encode_opts *eo, int need_text);
/* Encoding options from bos / eos / truncate. */
int req_encode_opts(ll_request *r, json_t *body, ll_encode_opts *eo);
/* Checks that the pooling can be applied to every sequence (eos needs an end
 * token).  */
int req_check_pooling(ll_request *r, ll_job *job, const ll_layer_sel *sel,
                      ll_pooling pooling);
int req_count_ok(ll_request *r, int n, const char *param);
/* 0, or -1 after replying 413 when a request's tokens so far pass
 * --max-request-tokens (checked as inputs are encoded, so a huge request
 * stops early). */
int req_tokens_ok(ll_request *r, long tokens, const char *param);
/* 1 when a JSON string holds U+0000. */
int json_has_nul(const json_t *v);

/* Layer key of an item: integer or "final"/"projected". */
json_t *layer_key_json(int item);
/* Dimension of a layer item's vectors. */
int item_dim(const ll_config *cfg, int item);
/* Float array (float32 values printed so they round-trip). */
json_t *floats_json(const float *v, int n);

#endif
