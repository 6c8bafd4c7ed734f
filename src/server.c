/* server.c - `layerlens serve`: options (flags and LAYERLENS_* environment
 * variables), the server's life cycle, model loading and file hashing, and
 * signal handling.
 *
 * Start-up order: bind and start the HTTP threads first (so /healthz answers
 * and /readyz says 503 while loading), then load the models on a loader
 * thread, then hash their files in the background.  Shutdown order: stop
 * accepting, let every accepted request finish (workers and the deadline
 * sweeper keep running meanwhile), stop the HTTP daemon, then the workers,
 * then the sweeper. */
#include "server_internal.h"

#include <cblas.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "layerlens/mkweights.h"

/* ======================= options ======================= */

enum { OPT_STR, OPT_INT, OPT_LONG, OPT_SIZE, OPT_FLAG };

typedef struct opt_def {
    const char *flag, *env, *arg;
    int kind;
    size_t offset;
    long long min, max;
    const char *help;
} opt_def;

#define OFF(f) offsetof(ll_server_opts, f)
static const opt_def OPTS[] = {
    {"--gpt2", "LAYERLENS_GPT2", "DIR", OPT_STR, OFF(gpt2_dir), 0, 0,
     "GPT-2 model directory (model.safetensors, config.json, vocab.json, merges.txt)"},
    {"--clip", "LAYERLENS_CLIP", "DIR", OPT_STR, OFF(clip_dir), 0, 0,
     "CLIP model directory (same four files)"},
    {"--host", "LAYERLENS_HOST", "ADDR", OPT_STR, OFF(host), 0, 0,
     "numeric IPv4/IPv6 address to bind"},
    {"--port", "LAYERLENS_PORT", "N", OPT_INT, OFF(port), 0, 65535,
     "TCP port; 0 picks a free one (logged at start-up)"},
    {"--workers", "LAYERLENS_WORKERS", "N", OPT_INT, OFF(workers), 0, 256,
     "forward-pass worker threads; 0 = one per core"},
    {"--max-batch-tokens", "LAYERLENS_MAX_BATCH_TOKENS", "N", OPT_INT, OFF(max_batch_tokens),
     1, 1 << 20, "tokens packed into one forward pass"},
    {"--max-batch-wait-us", "LAYERLENS_MAX_BATCH_WAIT_US", "N", OPT_LONG,
     OFF(max_batch_wait_us), 0, 10000000,
     "longest a queued sequence waits for others to share its batch"},
    {"--max-queue", "LAYERLENS_MAX_QUEUE", "N", OPT_INT, OFF(max_queue), 1, 1 << 24,
     "sequences waiting at most; beyond, requests get 503 + Retry-After"},
    {"--max-inputs", "LAYERLENS_MAX_INPUTS", "N", OPT_INT, OFF(max_inputs), 1, 1 << 24,
     "sequences in one request at most (413 beyond); <= --max-queue"},
    {"--max-body-bytes", "LAYERLENS_MAX_BODY_BYTES", "N", OPT_SIZE, OFF(max_body_bytes),
     64, 1ll << 32, "largest request body (413 beyond, refused before reading it)"},
    {"--request-timeout-ms", "LAYERLENS_REQUEST_TIMEOUT_MS", "N", OPT_INT,
     OFF(request_timeout_ms), 1, 3600000, "queued + running longer gets 504"},
    {"--demo", "LAYERLENS_DEMO", NULL, OPT_FLAG, OFF(demo), 0, 1,
     "report the models as demo (random) weights in /v1/models"},
    {"--data", "LAYERLENS_DATA", "DIR", OPT_STR, OFF(data_dir), 0, 0,
     "benchmark data directory for /v1/evaluate (weights/download.sh fetches it)"},
    {"--results-dir", "LAYERLENS_RESULTS_DIR", "DIR", OPT_STR, OFF(results_dir), 0, 0,
     "where finished evaluations are written, so a restart loses none"},
    {"--api-key", "LAYERLENS_API_KEY", "KEY", OPT_STR, OFF(api_key), 0, 0,
     "clients must send 'Authorization: Bearer KEY' to /v1/* and /evaluate"},
};
#define N_OPTS ((int)(sizeof OPTS / sizeof OPTS[0]))

void ll_server_opts_default(ll_server_opts *o) {
    memset(o, 0, sizeof *o);
    o->host = "127.0.0.1";
    o->port = 8080;
    o->workers = 0;
    o->max_batch_tokens = 2048;
    o->max_batch_wait_us = 2000;
    o->max_queue = 4096;
    o->max_inputs = 2048;
    o->max_body_bytes = 8u << 20;
    o->request_timeout_ms = 30000;
}

static void default_text(const opt_def *d, const ll_server_opts *o, char *buf, size_t n) {
    const char *p = (const char *)o + d->offset;
    switch (d->kind) {
    case OPT_STR: snprintf(buf, n, "%s", *(const char *const *)p ? *(const char *const *)p : "none"); break;
    case OPT_INT: snprintf(buf, n, "%d", *(const int *)p); break;
    case OPT_LONG: snprintf(buf, n, "%ld", *(const long *)p); break;
    case OPT_SIZE: snprintf(buf, n, "%zu", *(const size_t *)p); break;
    default: snprintf(buf, n, "off"); break;
    }
}

void ll_server_usage(FILE *f) {
    ll_server_opts o;
    ll_server_opts_default(&o);
    fprintf(f, "usage: layerlens serve [OPTIONS]\n\n"
               "Serves GPT-2 and/or the CLIP text encoder over HTTP (at least one of\n"
               "--gpt2 / --clip).  Every option can also be set by the environment\n"
               "variable shown; a flag wins over the variable.\n\n");
    for (int i = 0; i < N_OPTS; i++) {
        const opt_def *d = &OPTS[i];
        char flag[64], dflt[64];
        snprintf(flag, sizeof flag, "%s%s%s", d->flag, d->arg ? " " : "", d->arg ? d->arg : "");
        default_text(d, &o, dflt, sizeof dflt);
        fprintf(f, "  %-26s %s\n  %-26s [env %s, default %s]\n", flag, d->help, "", d->env, dflt);
    }
    fprintf(f, "\nCores: workers x OpenBLAS threads never exceeds the online cores; by default\n"
               "one worker per core with single-threaded OpenBLAS in each.  SIGTERM/SIGINT\n"
               "stop accepting, answer every accepted request, and exit 0.\n");
}

static int set_opt(ll_server_opts *o, const opt_def *d, const char *val, const char *from,
                   ll_error *err) {
    char *p = (char *)o + d->offset;
    if (d->kind == OPT_STR) {
        if (!*val) return ll_errorf(err, "%s: empty value", from);
        *(const char **)p = val;
        return 0;
    }
    if (d->kind == OPT_FLAG) {
        if (strcmp(val, "1") && strcmp(val, "0") && strcmp(val, "true") && strcmp(val, "false"))
            return ll_errorf(err, "%s: expected 1/0/true/false, got '%s'", from, val);
        *(int *)p = !strcmp(val, "1") || !strcmp(val, "true");
        return 0;
    }
    char *end;
    errno = 0;
    long long v = strtoll(val, &end, 10);
    if (errno || end == val || *end || v < d->min || v > d->max)
        return ll_errorf(err, "%s: expected an integer in %lld..%lld, got '%s'", from,
                         d->min, d->max, val);
    if (d->kind == OPT_INT) *(int *)p = (int)v;
    else if (d->kind == OPT_LONG) *(long *)p = (long)v;
    else *(size_t *)p = (size_t)v;
    return 0;
}

int ll_server_opts_parse(ll_server_opts *o, int argc, char **argv, int *help, ll_error *err) {
    *help = 0;
    for (int i = 0; i < N_OPTS; i++) {
        const char *v = getenv(OPTS[i].env);
        if (v && *v && set_opt(o, &OPTS[i], v, OPTS[i].env, err)) return -1;
    }
    for (int a = 1; a < argc; a++) {
        const char *arg = argv[a];
        if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) {
            *help = 1;
            return 0;
        }
        const opt_def *d = NULL;
        const char *val = NULL;
        for (int i = 0; i < N_OPTS && !d; i++) {
            size_t n = strlen(OPTS[i].flag);
            if (strncmp(arg, OPTS[i].flag, n) != 0) continue;
            if (arg[n] == 0) d = &OPTS[i];
            else if (arg[n] == '=') d = &OPTS[i], val = arg + n + 1;
        }
        if (!d) return ll_errorf(err, "unknown option '%s' (see layerlens serve --help)", arg);
        if (d->kind == OPT_FLAG && !val) val = "1";
        if (!val) {
            if (a + 1 >= argc) return ll_errorf(err, "%s needs a value", d->flag);
            val = argv[++a];
        }
        if (set_opt(o, d, val, d->flag, err)) return -1;
    }
    if (!o->gpt2_dir && !o->clip_dir)
        return ll_errorf(err, "nothing to serve: give --gpt2 DIR and/or --clip DIR");
    if (o->max_inputs > o->max_queue)
        return ll_errorf(err, "--max-inputs (%d) must not exceed --max-queue (%d): such a "
                         "request could never be queued", o->max_inputs, o->max_queue);
    return 0;
}

/* ======================= life cycle ======================= */

static const char *const ENDPOINT_NAMES[N_ENDPOINTS] = {
    "/healthz", "/readyz", "/metrics", "/v1/models", "/v1/tokenize", "/v1/embeddings",
    "/v1/similarity", "/v1/self-similarity", "/v1/evaluate", "/v1/evaluations",
    "/v1/benchmarks", "other",
};

static const char *const FILE_NAMES[LL_MODEL_FILES] = {
    "model.safetensors", "config.json", "vocab.json", "merges.txt",
};

static void *worker_init(void *ctx, int index) { return ll_workspace_new(); }
static void worker_free(void *ctx, void *state) { ll_workspace_free(state); }

static int online_cores(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

static int add_model(ll_server *s, const char *id, const char *dir) {
    ll_served_model *sm = &s->models[s->n_models];
    sm->index = s->n_models++;
    sm->id = id;
    sm->dir = dir;
    sm->srv = s;
    sm->demo = s->opts.demo || ll_is_demo_dir(dir);
    atomic_init(&sm->model, NULL);
    atomic_init(&sm->hash_state, HASH_PENDING);
    for (int f = 0; f < LL_MODEL_FILES; f++) {
        sm->files[f].name = FILE_NAMES[f];
        size_t n = strlen(dir) + strlen(FILE_NAMES[f]) + 2;
        sm->files[f].path = malloc(n);
        if (!sm->files[f].path) return -1;
        snprintf(sm->files[f].path, n, "%s/%s", dir, FILE_NAMES[f]);
    }
    return 0;
}

/* Workers x OpenBLAS threads <= cores (see server.h). */
static void size_threads(ll_server *s) {
    int cores = online_cores();
    if (s->opts.workers <= 0) s->opts.workers = cores;
    s->blas_threads = cores / s->opts.workers;
    if (s->blas_threads < 1) s->blas_threads = 1;
    openblas_set_num_threads(s->blas_threads);
}

static int start_batcher(ll_server *s, ll_error *err) {
    ll_batcher_opts bo = {
        .workers = s->opts.workers, .max_batch_tokens = s->opts.max_batch_tokens,
        .max_wait_us = s->opts.max_batch_wait_us, .max_queue = s->opts.max_queue,
        .worker_init = worker_init, .worker_free = worker_free, .worker_ctx = s,
    };
    s->batcher = ll_batcher_new(&bo, err);
    if (!s->batcher) return -1;
    for (int i = 0; i < s->n_models; i++)
        if (ll_batcher_add_lane(s->batcher, work_run, work_drop, &s->models[i], err) < 0)
            return -1;
    if (eval_service_new(s, err)) return -1; /* api_eval.c: background lanes */
    return ll_batcher_start(s->batcher, err);
}

ll_server *ll_server_new(const ll_server_opts *opts, FILE *log, ll_error *err) {
    ll_server *s = calloc(1, sizeof *s);
    if (!s) {
        ll_errorf(err, "out of memory");
        return NULL;
    }
    s->opts = *opts;
    s->log = log ? log : stderr;
    pthread_mutex_init(&s->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* deadlines use ll_now_us */
    pthread_cond_init(&s->cv, &ca);
    pthread_condattr_destroy(&ca);

    if ((opts->gpt2_dir && add_model(s, "gpt2", opts->gpt2_dir)) ||
        (opts->clip_dir && add_model(s, "clip", opts->clip_dir))) {
        ll_errorf(err, "out of memory");
        goto fail;
    }
    for (int i = 0; i < s->n_models; i++) s->model_ids[i] = s->models[i].id;
    s->metrics = ll_metrics_new(ENDPOINT_NAMES, N_ENDPOINTS, s->model_ids, s->n_models);
    if (!s->metrics) {
        ll_errorf(err, "out of memory");
        goto fail;
    }
    size_threads(s);
    if (start_batcher(s, err) || sweeper_start(s, err) || http_start(s, err)) goto fail;
    fprintf(s->log, "layerlens: listening on http://%s%s%s:%d (%d workers x %d OpenBLAS "
            "threads, %d cores; max batch %d tokens / %ld us)\n",
            strchr(s->opts.host, ':') ? "[" : "", s->opts.host,
            strchr(s->opts.host, ':') ? "]" : "", s->port, s->opts.workers, s->blas_threads,
            online_cores(), s->opts.max_batch_tokens, s->opts.max_batch_wait_us);
    fflush(s->log);
    return s;
fail:
    ll_server_free(s);
    return NULL;
}

int ll_server_port(const ll_server *s) { return s->port; }

static double mib(double bytes) { return bytes / (1024.0 * 1024.0); }

static int load_one(ll_server *s, ll_served_model *sm, ll_error *err) {
    int64_t t0 = ll_now_us();
    ll_model *m = ll_model_load(sm->dir, err);
    if (!m) return ll_error_prefix(err, "cannot load the %s model", sm->id);
    if (strcmp(ll_model_id(m), sm->id) != 0) {
        ll_errorf(err, "--%s %s holds a %s model, not %s", sm->id, sm->dir, ll_model_id(m),
                  sm->id);
        ll_model_free(m);
        return -1;
    }
    sm->load_seconds = (double)(ll_now_us() - t0) / 1e6;
    for (int f = 0; f < LL_MODEL_FILES; f++) {
        struct stat st;
        sm->files[f].bytes = stat(sm->files[f].path, &st) == 0 ? (long long)st.st_size : -1;
    }
    const ll_config *c = ll_model_config(m);
    fprintf(s->log, "layerlens: model %s: %s, %d layers x %d wide, %.1fM parameters, "
            "%.1f MiB of weights, process resident %.1f MiB, loaded in %.3f s%s\n",
            sm->id, sm->files[0].path, c->n_layer, c->width,
            (double)ll_model_param_count(m) / 1e6, mib((double)ll_model_weight_bytes(m)),
            mib((double)ll_resident_bytes()), sm->load_seconds,
            sm->demo ? " (demo: random weights)" : "");
    fflush(s->log);
    ll_metrics_model_loaded(s->metrics, sm->index, sm->load_seconds);
    /* Publish: from here on the model is read-only and shared. */
    atomic_store(&sm->model, m);
    return 0;
}

int ll_server_load(ll_server *s, ll_error *err) {
    for (int i = 0; i < s->n_models; i++) {
        if (atomic_load(&s->stop)) return ll_errorf(err, "stopped while loading");
        if (load_one(s, &s->models[i], err)) return -1;
    }
    atomic_store(&s->ready, 1);
    fprintf(s->log, "layerlens: ready\n");
    fflush(s->log);
    return 0;
}

/* sha256 of one file, streamed; -1 on a read error or when asked to stop. */
static int sha256_file(ll_server *s, const char *path, char hex[65]) {
    struct stat st;
    /* Regular files only: opening a FIFO or device could block forever. */
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) return -1;
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned char *buf = malloc(1 << 20);
    int ok = ctx && buf && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1;
    size_t n;
    while (ok && (n = fread(buf, 1, 1 << 20, f)) > 0) {
        ok = EVP_DigestUpdate(ctx, buf, n) == 1 && !atomic_load(&s->stop);
    }
    ok = ok && !ferror(f);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned len = 0;
    if (ok) ok = EVP_DigestFinal_ex(ctx, md, &len) == 1 && len == 32;
    for (unsigned i = 0; ok && i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", md[i]);
    free(buf);
    EVP_MD_CTX_free(ctx);
    fclose(f);
    return ok ? 0 : -1;
}

void ll_server_hash_files(ll_server *s) {
    for (int i = 0; i < s->n_models; i++) {
        ll_served_model *sm = &s->models[i];
        atomic_store(&sm->hash_state, HASH_RUNNING);
        int ok = 1;
        for (int f = 0; f < LL_MODEL_FILES && ok; f++)
            ok = sha256_file(s, sm->files[f].path, sm->files[f].sha256) == 0;
        /* The hex strings are published by the release store of the state. */
        atomic_store(&sm->hash_state, ok ? HASH_DONE : HASH_FAILED);
    }
}

void ll_server_shutdown(ll_server *s) {
    if (!s) return;
    atomic_store(&s->stop, 1);
    eval_service_stop(s); /* cancels evaluations, answers their waiting requests */
    http_stop(s);
    if (s->batcher) ll_batcher_stop(s->batcher);
    sweeper_stop(s);
}

void ll_server_free(ll_server *s) {
    if (!s) return;
    ll_server_shutdown(s);
    ll_batcher_free(s->batcher);
    eval_service_free(s);
    ll_metrics_free(s->metrics);
    for (int i = 0; i < s->n_models; i++) {
        ll_model_free(atomic_load(&s->models[i].model));
        for (int f = 0; f < LL_MODEL_FILES; f++) free(s->models[i].files[f].path);
    }
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

/* ======================= layerlens serve ======================= */

/* The write end of the pipe that wakes the main thread.  Signal handlers
 * can reach nothing else, so this one descriptor is process state, set once
 * before the handlers are installed.  A handler is used rather than sigwait
 * because threads created before main (OpenBLAS's pool) do not block the
 * signals, and a process-directed SIGTERM may be delivered to any of them. */
static int wake_fd = -1;

static void on_signal(int sig) {
    int saved = errno;
    unsigned char c = (unsigned char)sig;
    ssize_t w = write(wake_fd, &c, 1);
    (void)w;
    errno = saved;
}

typedef struct loader {
    ll_server *srv;
    int wake;   /* write end of the wake pipe */
    int failed;
} loader;

#define WAKE_LOAD_FAILED 0 /* not a signal number */

/* Loads the models, then hashes their files.  A failure wakes the main
 * thread, which shuts down and exits 1. */
static void *loader_main(void *p) {
    loader *ld = p;
    ll_error err = {{0}};
    if (ll_server_load(ld->srv, &err)) {
        if (!atomic_load(&ld->srv->stop)) {
            fprintf(ld->srv->log, "layerlens: %s\n", err.msg);
            fflush(ld->srv->log);
            ld->failed = 1;
            unsigned char c = WAKE_LOAD_FAILED;
            ssize_t w = write(ld->wake, &c, 1);
            (void)w;
        }
        return NULL;
    }
    ll_server_hash_files(ld->srv);
    return NULL;
}

static int install_signals(int pipefd[2]) {
    if (pipe2(pipefd, O_CLOEXEC) != 0) return -1;
    wake_fd = pipefd[1];
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    /* No SA_RESTART: the main thread's read() of the wake pipe returns
     * EINTR, so the handler runs even where it is deferred until a call
     * returns (as under ThreadSanitizer). */
    sa.sa_flags = 0;
    signal(SIGPIPE, SIG_IGN);
    return sigaction(SIGTERM, &sa, NULL) || sigaction(SIGINT, &sa, NULL) ? -1 : 0;
}

int ll_serve_main(int argc, char **argv) {
    ll_server_opts opts;
    ll_server_opts_default(&opts);
    ll_error err = {{0}};
    int help;
    if (ll_server_opts_parse(&opts, argc, argv, &help, &err)) {
        fprintf(stderr, "layerlens serve: %s\n", err.msg);
        return 2;
    }
    if (help) {
        ll_server_usage(stdout);
        return 0;
    }
    int pipefd[2];
    if (install_signals(pipefd)) {
        fprintf(stderr, "layerlens serve: cannot set up signal handling: %s\n", strerror(errno));
        return 1;
    }
    /* The threads started from here (HTTP, workers, sweeper, loader) block
     * the signals, so they interrupt nothing there; this thread takes them. */
    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, &old);
    ll_server *s = ll_server_new(&opts, stderr, &err);
    loader ld = {s, pipefd[1], 0};
    pthread_t th;
    int have_loader = s && pthread_create(&th, NULL, loader_main, &ld) == 0;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (!s) {
        fprintf(stderr, "layerlens serve: %s\n", err.msg);
        return 1;
    }
    if (!have_loader) fprintf(stderr, "layerlens serve: cannot start the loader thread\n");
    unsigned char c = WAKE_LOAD_FAILED;
    while (have_loader) {
        ssize_t r = read(pipefd[0], &c, 1);
        if (r == 1 || (r < 0 && errno != EINTR)) break;
    }
    if (c == SIGTERM || c == SIGINT)
        fprintf(stderr, "layerlens: %s: finishing accepted requests, then exiting\n",
                c == SIGTERM ? "SIGTERM" : "SIGINT");
    ll_server_shutdown(s);
    if (have_loader) pthread_join(th, NULL);
    int failed = ld.failed || !have_loader;
    ll_server_free(s);
    fprintf(stderr, "layerlens: stopped\n");
    return failed ? 1 : 0;
}
