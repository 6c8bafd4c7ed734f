/* server.h - the layerlens HTTP service: GPT-2 and the CLIP text encoder
 * kept in memory, answering over HTTP with batched forward passes.
 *
 *   layerlens serve [--gpt2 DIR] [--clip DIR] [--host ADDR] [--port N] ...
 *
 * (`layerlens serve --help` lists every option with its environment variable
 * and default; api/openapi.yaml and docs/http-api.md describe the endpoints.)
 *
 * The data path of one request, and where each step lives:
 *   HTTP request -> JSON parse          src/http.c        (libmicrohttpd thread)
 *   validate -> tokenize -> job         src/api_*.c       (libmicrohttpd thread)
 *   job -> batch queue, suspend         src/server_work.c (libmicrohttpd thread)
 *   queue -> packed batch               src/batcher.c     (worker thread)
 *   forward pass -> pooling / metrics   src/server_work.c + the endpoint's
 *                                       collect function in src/api_*.c
 *   last sequence -> JSON response,     src/api_*.c finish, src/http.c
 *   resume the connection               (worker thread)
 *   deadlines -> 504                    src/http.c        (sweeper thread)
 *   options, loading, lifecycle         src/server.c      (main + loader)
 *
 * Cores: one worker per core by default.  A forward pass running alone
 * uses every core (pool.c's helper threads split its steps), and each
 * other pass running takes one away, so under load every worker computes
 * on its own core and a lone request still gets them all (pool.h).
 * OpenBLAS, used for attention only, runs single-threaded.  The
 * libmicrohttpd threads only parse and tokenize and are not counted. */
#ifndef LAYERLENS_SERVER_H
#define LAYERLENS_SERVER_H

#include <stddef.h>
#include <stdio.h>

#include "layerlens/dtype.h"
#include "layerlens/error.h"
#include "layerlens/log.h"

#define LL_MAX_CORS_ARGS 16

typedef struct ll_server_opts {
    const char *gpt2_dir;     /* NULL: no GPT-2 */
    const char *clip_dir;     /* NULL: no CLIP */
    const char *host;         /* numeric IPv4 or IPv6 address to bind */
    int port;                 /* 0: any free port (logged) */
    int workers;              /* 0: one per online core */
    int max_batch_tokens;     /* tokens per forward pass */
    long max_batch_wait_us;   /* longest wait of a queued sequence for company */
    int batch_idle_wait;      /* wait even when no batch runs (batcher.h) */
    int parallel_batches;     /* batches of one model on several workers (batcher.h) */
    int max_queue;            /* sequences waiting; more is answered 503 */
    int max_inputs;           /* sequences per request; more is answered 413 */
    size_t max_body_bytes;    /* larger bodies are answered 413 */
    int request_timeout_ms;   /* queued/running longer is answered 504 */
    int demo;                 /* report every model as demo (random weights) */
    const char *data_dir;     /* benchmark files for /v1/evaluate; NULL: none */
    const char *results_dir;  /* finished evaluations on disk; NULL: memory only */
    const char *api_key;      /* required as "Authorization: Bearer KEY" on the
                                 API routes; NULL: no key */
    const char *api_key_file; /* the key from this file (read by ll_server_new,
                                 trailing newline dropped); not with api_key */
    int metrics_public;       /* /metrics needs no key even when there is one */
    /* Origins allowed to call from a browser (CORS): each entry one origin
     * ("https://example.org"), a comma list of them, or "*". */
    const char *cors_origins[LL_MAX_CORS_ARGS];
    int n_cors_origins;
    int max_request_tokens;   /* tokens of all inputs of one request; more: 413 */
    int max_connections_per_ip; /* open connections from one address; 0: any */
    int idle_timeout_s;       /* a connection silent this long is closed */
    int eval_cache_mb;        /* evaluation embedding cache budget, MiB */
    ll_weight_type dtype;     /* the weights of both models' products (dtype.h) */
    ll_log_format log_format;
    ll_log_level log_level;   /* request lines are info */
} ll_server_opts;

/* The defaults (the values `--help` prints). */
void ll_server_opts_default(ll_server_opts *o);
/* Overrides from LAYERLENS_* environment variables, then from argv
 * (argv[0] is the command name).  *help is set when --help was given.
 * Pointers in o point into argv or the environment. */
int ll_server_opts_parse(ll_server_opts *o, int argc, char **argv, int *help,
                         ll_error *err);
/* The --help text with the current defaults. */
void ll_server_usage(FILE *f);

typedef struct ll_server ll_server;

/* Binds the socket and starts the HTTP threads, the workers and the deadline
 * sweeper.  Models are not loaded yet: /healthz answers, /readyz says 503.
 * log receives the server's log lines (stderr for the command), formatted
 * and filtered as opts->log_format / log_level say.  Fails (with err) when
 * the API key file cannot be read or holds no usable key. */
ll_server *ll_server_new(const ll_server_opts *opts, FILE *log, ll_error *err);
/* The bound port (useful with port 0). */
int ll_server_port(const ll_server *s);
/* Loads every configured model (blocking; logs one line per model) and
 * marks the server ready once all are in. */
int ll_server_load(ll_server *s, ll_error *err);
/* Computes the sha256 of every model's source files for /v1/models
 * (blocking, seconds for real checkpoints; stops early on shutdown). */
void ll_server_hash_files(ll_server *s);
/* Graceful stop: no new connections, every accepted request answered (or
 * timed out), then the threads are joined.  Idempotent. */
void ll_server_shutdown(ll_server *s);
void ll_server_free(ll_server *s);

/* `layerlens serve`: argv[0] = "serve".  Runs until SIGTERM/SIGINT, then
 * shuts down gracefully; returns the process exit code (0 after a clean
 * shutdown, 1 when a model fails to load or the port cannot be bound, 2 on
 * bad options). */
int ll_serve_main(int argc, char **argv);

#endif
