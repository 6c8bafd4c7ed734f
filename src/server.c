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

#include "layerlens/pool.h"
#include "layerlens/mkweights.h"

/* ======================= options ======================= */

enum { OPT_STR, OPT_INT, OPT_LONG, OPT_SIZE, OPT_FLAG, OPT_LIST, OPT_LOG_LEVEL, OPT_LOG_FORMAT,
       OPT_DTYPE };

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
    {"--batch-idle-wait", "LAYERLENS_BATCH_IDLE_WAIT", NULL, OPT_FLAG, OFF(batch_idle_wait), 0, 1,
     "wait --max-batch-wait-us even when no batch is running (default: start at once)"},
    {"--parallel-batches", "LAYERLENS_PARALLEL_BATCHES", NULL, OPT_FLAG, OFF(parallel_batches), 0, 1,
     "run several batches of one model at once before a full batch is queued "
     "(default: the running batch's worker takes them next, on every core)"},
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
     "benchmark data directory for /v1/evaluate (weights/download-benchmarks.sh fills it)"},
    {"--results-dir", "LAYERLENS_RESULTS_DIR", "DIR", OPT_STR, OFF(results_dir), 0, 0,
     "where finished evaluations are written, so a restart loses none"},
    {"--api-key", "LAYERLENS_API_KEY", "KEY", OPT_STR, OFF(api_key), 0, 0,
     "clients must send 'Authorization: Bearer KEY' to /v1/* and /evaluate"},
    {"--api-key-file", "LAYERLENS_API_KEY_FILE", "FILE", OPT_STR, OFF(api_key_file), 0, 0,
     "the API key from this file (read at start-up; a trailing newline is dropped)"},
    {"--metrics-public", "LAYERLENS_METRICS_PUBLIC", "[=0|1]", OPT_FLAG, OFF(metrics_public),
     0, 1, "/metrics needs no API key; 0: it needs the key like /v1/*"},
    {"--cors-origin", "LAYERLENS_CORS_ORIGIN", "ORIGIN", OPT_LIST, OFF(cors_origins), 0, 0,
     "browser origin allowed to call the API (repeat, or a comma list; * = any)"},
    {"--max-request-tokens", "LAYERLENS_MAX_REQUEST_TOKENS", "N", OPT_INT,
     OFF(max_request_tokens), 1, 1 << 30, "tokens of all inputs of one request (413 beyond)"},
    {"--max-connections-per-ip", "LAYERLENS_MAX_CONNECTIONS_PER_IP", "N", OPT_INT,
     OFF(max_connections_per_ip), 0, 100000,
     "open connections from one client address; 0 = no limit (behind a proxy)"},
    {"--eval-cache-mb", "LAYERLENS_EVAL_CACHE_MB", "N", OPT_INT, OFF(eval_cache_mb), 1, 1 << 20,
     "memory for cached evaluation embeddings, MiB (a repeated evaluation reuses them)"},
    {"--dtype", "LAYERLENS_DTYPE", "f32|bf16", OPT_DTYPE, OFF(dtype), 0, 0,
     "weights of the products: f32 (the reference) or bf16 (half the memory; states within ~1% of f32)"},
    {"--idle-timeout-s", "LAYERLENS_IDLE_TIMEOUT_S", "N", OPT_INT, OFF(idle_timeout_s), 1, 3600,
     "a connection that sends nothing for this long is closed"},
    {"--log-format", "LAYERLENS_LOG_FORMAT", "text|json", OPT_LOG_FORMAT, OFF(log_format), 0, 0,
     "log lines on stderr as text or as JSON lines"},
    {"--log-level", "LAYERLENS_LOG_LEVEL", "LEVEL", OPT_LOG_LEVEL, OFF(log_level), 0, 0,
     "error, warn, info (one line per request) or debug (also one per batch)"},
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
    o->metrics_public = 1;
    o->max_request_tokens = 65536;
    o->max_connections_per_ip = 0;
    o->idle_timeout_s = 30;
    o->eval_cache_mb = 128;
    o->dtype = LL_WEIGHTS_F32;
    o->log_format = LL_LOG_TEXT;
    o->log_level = LL_LOG_INFO;
}

static void default_text(const opt_def *d, const ll_server_opts *o, char *buf, size_t n) {
    const char *p = (const char *)o + d->offset;
    switch (d->kind) {
    case OPT_STR: snprintf(buf, n, "%s", *(const char *const *)p ? *(const char *const *)p : "none"); break;
    case OPT_INT: snprintf(buf, n, "%d", *(const int *)p); break;
    case OPT_LONG: snprintf(buf, n, "%ld", *(const long *)p); break;
    case OPT_SIZE: snprintf(buf, n, "%zu", *(const size_t *)p); break;
    case OPT_LIST: snprintf(buf, n, "none"); break;
    case OPT_LOG_LEVEL: snprintf(buf, n, "%s", ll_log_level_name(*(const ll_log_level *)p)); break;
    case OPT_LOG_FORMAT:
        snprintf(buf, n, "%s", *(const ll_log_format *)p == LL_LOG_JSON ? "json" : "text");
        break;
    case OPT_DTYPE: snprintf(buf, n, "%s", ll_weight_type_name(*(const ll_weight_type *)p)); break;
    default: snprintf(buf, n, "%s", *(const int *)p ? "on" : "off"); break;
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
        /* a flag's optional value is written on to it: --metrics-public[=0|1] */
        snprintf(flag, sizeof flag, "%s%s%s", d->flag, d->arg && d->kind != OPT_FLAG ? " " : "",
                 d->arg ? d->arg : "");
        default_text(d, &o, dflt, sizeof dflt);
        fprintf(f, "  %-26s %s\n  %-26s [env %s, default %s]\n", flag, d->help, "", d->env, dflt);
    }
    fprintf(f, "\nCores: one worker per core by default; a forward pass running alone uses\n"
               "every core, concurrent passes share them.  SIGTERM/SIGINT\n"
               "stop accepting, answer every accepted request, and exit 0.  Give the API key\n"
               "by file or variable rather than --api-key: flags show in ps.\n");
}

/* One allowed origin as browsers send it: "*", or scheme://host[:port]
 * (no path, not even a trailing slash, or it would never match). */
static int origin_ok(const char *s, size_t n) {
    if (n == 1 && s[0] == '*') return 1;
    size_t k = strncmp(s, "http://", 7) == 0 ? 7 : strncmp(s, "https://", 8) == 0 ? 8 : 0;
    if (!k || n <= k) return 0;
    for (size_t i = k; i < n; i++)
        if (s[i] == '/' || s[i] <= ' ' || s[i] == 0x7F) return 0;
    return 1;
}

/* A --cors-origin value: a comma list of origins (spaces around commas
 * allowed). */
static int check_origins(const char *val, const char *from, ll_error *err) {
    for (const char *p = val;;) {
        while (*p == ' ') p++;
        size_t n = strcspn(p, ",");
        size_t m = n;
        while (m && p[m - 1] == ' ') m--;
        if (!origin_ok(p, m))
            return ll_errorf(err, "%s: '%.*s' is not an origin (expected *, or scheme://host[:port] "
                             "such as https://example.org, without a path)", from, (int)m, p);
        if (!p[n]) return 0;
        p += n + 1;
    }
}

static int set_opt(ll_server_opts *o, const opt_def *d, const char *val, const char *from,
                   ll_error *err) {
    char *p = (char *)o + d->offset;
    if (d->kind == OPT_STR) {
        if (!*val) return ll_errorf(err, "%s: empty value", from);
        *(const char **)p = val;
        return 0;
    }
    if (d->kind == OPT_LIST) {
        if (check_origins(val, from, err)) return -1;
        if (o->n_cors_origins == LL_MAX_CORS_ARGS)
            return ll_errorf(err, "%s: at most %d times (use a comma list)", from, LL_MAX_CORS_ARGS);
        o->cors_origins[o->n_cors_origins++] = val;
        return 0;
    }
    if (d->kind == OPT_LOG_LEVEL || d->kind == OPT_LOG_FORMAT || d->kind == OPT_DTYPE) {
        ll_error e = {{0}};
        int rc = d->kind == OPT_LOG_LEVEL    ? ll_log_level_parse(val, (ll_log_level *)p, &e)
                 : d->kind == OPT_LOG_FORMAT ? ll_log_format_parse(val, (ll_log_format *)p, &e)
                                             : ll_weight_type_parse(val, (ll_weight_type *)p, &e);
        return rc ? ll_errorf(err, "%s: %s", from, e.msg) : 0;
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

/* The key and the key file are alternatives.  A flag wins over a variable,
 * so the one given by flag stays when the other came from the environment. */
static int settle_api_key(ll_server_opts *o, const char *env_key, const char *env_file,
                          ll_error *err) {
    if (!o->api_key || !o->api_key_file) return 0;
    int key_flag = o->api_key != env_key, file_flag = o->api_key_file != env_file;
    if (key_flag && !file_flag) o->api_key_file = NULL;
    else if (file_flag && !key_flag) o->api_key = NULL;
    else
        return ll_errorf(err, "give the API key one way: --api-key / LAYERLENS_API_KEY or "
                         "--api-key-file / LAYERLENS_API_KEY_FILE");
    return 0;
}

int ll_server_opts_parse(ll_server_opts *o, int argc, char **argv, int *help, ll_error *err) {
    *help = 0;
    for (int i = 0; i < N_OPTS; i++) {
        const char *v = getenv(OPTS[i].env);
        if (v && *v && set_opt(o, &OPTS[i], v, OPTS[i].env, err)) return -1;
    }
    const char *env_key = o->api_key, *env_file = o->api_key_file;
    int origins_from_flags = 0;
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
        /* repeated flags add up; the first one replaces the variable's list */
        if (d->kind == OPT_LIST && !origins_from_flags++) o->n_cors_origins = 0;
        if (set_opt(o, d, val, d->flag, err)) return -1;
    }
    if (!o->gpt2_dir && !o->clip_dir)
        return ll_errorf(err, "nothing to serve: give --gpt2 DIR and/or --clip DIR");
    if (o->max_inputs > o->max_queue)
        return ll_errorf(err, "--max-inputs (%d) must not exceed --max-queue (%d): such a "
                         "request could never be queued", o->max_inputs, o->max_queue);
    return settle_api_key(o, env_key, env_file, err);
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

/* Runs on each worker thread as it starts: the threads its passes may use
 * (pool.h, per thread; the cores less one per other pass running), and its
 * workspace. */
static void *worker_init(void *ctx, int index) {
    const ll_server *s = ctx;
    ll_pool_set_threads(s->pass_threads);
    return ll_workspace_new();
}
static void worker_free(void *ctx, void *state) { ll_workspace_free(state); }
/* An idle worker keeps its workspace's buffers (a pass's scratch) but gives
 * back the block of its last states (model.h): up to 81 MB for every layer
 * of a full GPT-2 batch, worth keeping only while batches keep coming. */
static void worker_idle(void *ctx, void *state) { ll_workspace_trim(state); }

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

/* The cores a pass may use (see server.h); each worker sets it for its
 * products in worker_init. */
static void size_threads(ll_server *s) {
    int cores = online_cores();
    if (s->opts.workers <= 0) s->opts.workers = cores;
    /* a pass alone may use every core; concurrent passes share them (pool.h) */
    s->pass_threads = cores;
    /* OpenBLAS only computes attention's small per-head products; its own
     * pool would spin between calls against pool.c's helper threads. */
    openblas_set_num_threads(1);
}

static int start_batcher(ll_server *s, ll_error *err) {
    ll_batcher_opts bo = {
        .workers = s->opts.workers, .max_batch_tokens = s->opts.max_batch_tokens,
        .max_wait_us = s->opts.max_batch_wait_us, .max_queue = s->opts.max_queue,
        .wait_when_idle = s->opts.batch_idle_wait, .lane_parallel = s->opts.parallel_batches,
        .worker_init = worker_init, .worker_free = worker_free, .worker_idle = worker_idle,
        .worker_ctx = s,
    };
    s->batcher = ll_batcher_new(&bo, err);
    if (!s->batcher) return -1;
    for (int i = 0; i < s->n_models; i++)
        if (ll_batcher_add_lane(s->batcher, work_run, work_drop, &s->models[i], err) < 0)
            return -1;
    if (eval_service_new(s, err)) return -1; /* api_eval.c: background lanes */
    return ll_batcher_start(s->batcher, err);
}

/* The key from --api-key-file: the file's text without trailing white space
 * (editors and `echo` add a newline); malloc'd, or NULL with err. */
static char *read_key_file(const char *path, ll_error *err) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        ll_errorf(err, "--api-key-file %s: cannot read it: %s", path, strerror(errno));
        return NULL;
    }
    enum { MAX_KEY = 4096 };
    char *key = malloc(MAX_KEY + 2);
    size_t n = key ? fread(key, 1, MAX_KEY + 1, f) : 0;
    int bad = !key || ferror(f);
    fclose(f);
    if (bad) {
        ll_errorf(err, "--api-key-file %s: cannot read it", path);
        free(key);
        return NULL;
    }
    if (n > MAX_KEY) {
        ll_errorf(err, "--api-key-file %s: larger than %d bytes; is it the key?", path, MAX_KEY);
        free(key);
        return NULL;
    }
    while (n && (key[n - 1] == '\n' || key[n - 1] == '\r' || key[n - 1] == ' ' ||
                 key[n - 1] == '\t'))
        n--;
    key[n] = 0;
    if (!n) {
        ll_errorf(err, "--api-key-file %s is empty", path);
        free(key);
        return NULL;
    }
    return key;
}

/* The API key's digest (see http.c), from --api-key or --api-key-file.  A
 * key must fit in one header line. */
static int setup_api_key(ll_server *s, ll_error *err) {
    const ll_server_opts *o = &s->opts;
    if (!o->api_key && !o->api_key_file) return 0;
    char *owned = o->api_key_file ? read_key_file(o->api_key_file, err) : NULL;
    if (o->api_key_file && !owned) return -1;
    const char *key = owned ? owned : o->api_key;
    int rc = 0;
    for (const unsigned char *p = (const unsigned char *)key; *p && !rc; p++)
        if (*p < 0x20 || *p == 0x7F)
            rc = ll_errorf(err, "the API key%s%s holds a control character (a line break?); it "
                           "could not be sent in an Authorization header",
                           owned ? " in " : "", owned ? o->api_key_file : "");
    unsigned len = 0;
    if (!rc && (EVP_Digest(key, strlen(key), s->key_sha256, &len, EVP_sha256(), NULL) != 1 ||
                len != 32))
        rc = ll_errorf(err, "cannot hash the API key");
    s->has_key = rc == 0;
    /* the key itself is not kept: only its digest is needed */
    if (owned) {
        OPENSSL_cleanse(owned, strlen(owned));
        free(owned);
    }
    return rc;
}

/* The allowed origins, one string each, from the option values (comma
 * lists, checked by the option parser). */
static int setup_cors(ll_server *s) {
    int cap = 0;
    for (int i = 0; i < s->opts.n_cors_origins; i++)
        for (const char *p = s->opts.cors_origins[i]; p; p = strchr(p, ','), p = p ? p + 1 : p)
            cap++;
    if (!cap) return 0;
    s->cors = calloc((size_t)cap, sizeof *s->cors);
    if (!s->cors) return -1;
    for (int i = 0; i < s->opts.n_cors_origins; i++) {
        for (const char *p = s->opts.cors_origins[i];;) {
            while (*p == ' ') p++;
            size_t n = strcspn(p, ","), m = n;
            while (m && p[m - 1] == ' ') m--;
            if (m == 1 && *p == '*') s->cors_any = 1;
            else if (!(s->cors[s->n_cors++] = strndup(p, m))) return -1;
            if (!p[n]) break;
            p += n + 1;
        }
    }
    return 0;
}

/* How the server is protected, said once at start-up. */
static void log_access(ll_server *s) {
    const ll_server_opts *o = &s->opts;
    char origins[512] = "";
    size_t n = 0;
    if (s->cors_any) n += (size_t)snprintf(origins, sizeof origins, "*");
    for (int i = 0; i < s->n_cors && n < sizeof origins; i++)
        n += (size_t)snprintf(origins + n, sizeof origins - n, "%s%s", n ? ", " : "", s->cors[i]);
    char per_ip[32] = "no limit";
    if (o->max_connections_per_ip) snprintf(per_ip, sizeof per_ip, "%d", o->max_connections_per_ip);
    ll_logf(&s->logger, LL_LOG_INFO, "access: API key %s%s; CORS origins: %s; per request at "
            "most %d inputs, %d tokens, %zu body bytes; connections per address: %s; idle "
            "timeout %d s",
            s->has_key ? (o->api_key_file ? "from " : "from --api-key / LAYERLENS_API_KEY") : "none",
            s->has_key && o->api_key_file ? o->api_key_file : "",
            n ? origins : "none", o->max_inputs, o->max_request_tokens, o->max_body_bytes, per_ip,
            o->idle_timeout_s);
    if (s->has_key && o->metrics_public)
        ll_logf(&s->logger, LL_LOG_INFO, "access: /metrics answers without the key "
                "(--metrics-public=0 to require it)");
    if (geteuid() == 0)
        ll_logf(&s->logger, LL_LOG_WARN, "running as root; the server needs no privileges "
                "(see docs/http-api.md, running as a non-root user)");
}

ll_server *ll_server_new(const ll_server_opts *opts, FILE *log, ll_error *err) {
    ll_server *s = calloc(1, sizeof *s);
    if (!s) {
        ll_errorf(err, "out of memory");
        return NULL;
    }
    s->opts = *opts;
    ll_log_init(&s->logger, log, opts->log_level, opts->log_format);
    /* What other parts print to s->log becomes a warning line. */
    s->log = ll_log_stream(&s->log_sink, &s->logger, LL_LOG_WARN);
    if (!s->log) s->log = s->logger.f;
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
    if (setup_api_key(s, err)) goto fail;
    if (setup_cors(s)) {
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
    ll_logf(&s->logger, LL_LOG_INFO, "listening on http://%s%s%s:%d (%d workers sharing %d "
            "cores; max batch %d tokens / %ld us)",
            strchr(s->opts.host, ':') ? "[" : "", s->opts.host,
            strchr(s->opts.host, ':') ? "]" : "", s->port, s->opts.workers, s->pass_threads, s->opts.max_batch_tokens, s->opts.max_batch_wait_us);
    log_access(s);
    /* Serving still works, but a pass takes many times longer than with f32,
     * which an operator choosing bf16 for speed would not expect. */
    if (s->opts.dtype == LL_WEIGHTS_BF16 && !ll_bf16_native())
        ll_logf(&s->logger, LL_LOG_WARN, "%s", LL_BF16_SLOW_WARNING);
    return s;
fail:
    ll_server_free(s);
    return NULL;
}

int ll_server_port(const ll_server *s) { return s->port; }

static double mib(double bytes) { return bytes / (1024.0 * 1024.0); }

static int load_one(ll_server *s, ll_served_model *sm, ll_error *err) {
    int64_t t0 = ll_now_us();
    ll_model *m = ll_model_load_dtype(sm->dir, s->opts.dtype, err);
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
    ll_logf(&s->logger, LL_LOG_INFO, "model %s: %s, %d layers x %d wide, %.1fM parameters, "
            "%.1f MiB of %s weights, process resident %.1f MiB, loaded in %.3f s%s",
            sm->id, sm->files[0].path, c->n_layer, c->width,
            (double)ll_model_param_count(m) / 1e6, mib((double)ll_model_weight_bytes(m)),
            ll_weight_type_name(ll_model_dtype(m)),
            mib((double)ll_resident_bytes()), sm->load_seconds,
            sm->demo ? " (demo: random weights)" : "");
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
    ll_logf(&s->logger, LL_LOG_INFO, "ready");
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
    for (int i = 0; i < s->n_cors; i++) free(s->cors[i]);
    free(s->cors);
    if (s->log && s->log != s->logger.f) fclose(s->log);
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
            ll_logf(&ld->srv->logger, LL_LOG_ERROR, "%s", err.msg);
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
    /* The lines of this function, outside the server's lifetime, in the
     * server's format (option errors above come before there is one). */
    ll_log lg;
    ll_log_init(&lg, stderr, opts.log_level, opts.log_format);
    int pipefd[2];
    if (install_signals(pipefd)) {
        ll_logf(&lg, LL_LOG_ERROR, "cannot set up signal handling: %s", strerror(errno));
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
        ll_logf(&lg, LL_LOG_ERROR, "%s", err.msg);
        return 1;
    }
    if (!have_loader) ll_logf(&lg, LL_LOG_ERROR, "cannot start the loader thread");
    unsigned char c = WAKE_LOAD_FAILED;
    while (have_loader) {
        ssize_t r = read(pipefd[0], &c, 1);
        if (r == 1 || (r < 0 && errno != EINTR)) break;
    }
    if (c == SIGTERM || c == SIGINT)
        ll_logf(&lg, LL_LOG_INFO, "%s: finishing accepted requests, then exiting",
                c == SIGTERM ? "SIGTERM" : "SIGINT");
    ll_server_shutdown(s);
    if (have_loader) pthread_join(th, NULL);
    int failed = ld.failed || !have_loader;
    ll_server_free(s);
    ll_logf(&lg, LL_LOG_INFO, "stopped");
    return failed ? 1 : 0;
}
