/* metrics.c - counters and histograms of the server, and their Prometheus
 * text rendering (see metrics.h). */
#include "layerlens/metrics.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Status codes the server answers with; anything else is counted as "other"
 * (there should be none).  408: a body still arriving at the request
 * timeout; 499: the client hung up before its answer (neither is sent: the
 * connection is closed). */
static const int STATUSES[] = {200, 202, 204, 400, 401, 403, 404, 405, 408, 409, 413,
                               422, 499, 500, 503, 504};
#define N_STATUS ((int)(sizeof STATUSES / sizeof STATUSES[0]) + 1)

/* Latency buckets in seconds: from a cached tiny request to a long batch. */
static const double LATENCY_LE[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                    0.05,   0.1,   0.25,   0.5,   1,    2.5,
                                    5,      10,    30};
/* Batch sizes: sequences and tokens per forward pass. */
static const double SEQ_LE[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512};
static const double TOK_LE[] = {8, 16, 32, 64, 128, 256, 512, 1024, 2048,
                                4096, 8192, 16384};
#define NLEN(a) ((int)(sizeof a / sizeof a[0]))

typedef struct histogram {
    const double *le;
    int n_le;
    uint64_t *counts; /* [n_le + 1], not cumulative; last = +Inf */
    double sum;
    uint64_t count;
} histogram;

typedef struct model_stats {
    histogram seqs, toks;
    uint64_t tokens, dropped;
    double load_seconds;
    int loaded;
} model_stats;

struct ll_metrics {
    pthread_mutex_t mu;
    const char *const *endpoints;
    const char *const *models;
    int n_endpoints, n_models;
    uint64_t *requests;   /* [n_endpoints][N_STATUS] */
    histogram *latency;   /* [n_endpoints] */
    model_stats *mstats;  /* [n_models] */
};

static int hist_init(histogram *h, const double *le, int n_le) {
    h->le = le;
    h->n_le = n_le;
    h->counts = calloc((size_t)n_le + 1, sizeof *h->counts);
    return h->counts ? 0 : -1;
}

static void hist_observe(histogram *h, double v) {
    int i = 0;
    while (i < h->n_le && v > h->le[i]) i++;
    h->counts[i]++;
    h->sum += v;
    h->count++;
}

ll_metrics *ll_metrics_new(const char *const *endpoints, int n_endpoints,
                           const char *const *models, int n_models) {
    ll_metrics *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    pthread_mutex_init(&m->mu, NULL);
    m->endpoints = endpoints;
    m->models = models;
    m->n_endpoints = n_endpoints;
    m->n_models = n_models;
    m->requests = calloc((size_t)n_endpoints * N_STATUS, sizeof *m->requests);
    m->latency = calloc((size_t)n_endpoints, sizeof *m->latency);
    m->mstats = calloc((size_t)(n_models ? n_models : 1), sizeof *m->mstats);
    int bad = !m->requests || !m->latency || !m->mstats;
    for (int i = 0; !bad && i < n_endpoints; i++)
        bad = hist_init(&m->latency[i], LATENCY_LE, NLEN(LATENCY_LE));
    for (int i = 0; !bad && i < n_models; i++)
        bad = hist_init(&m->mstats[i].seqs, SEQ_LE, NLEN(SEQ_LE)) ||
              hist_init(&m->mstats[i].toks, TOK_LE, NLEN(TOK_LE));
    if (bad) {
        ll_metrics_free(m);
        return NULL;
    }
    return m;
}

void ll_metrics_free(ll_metrics *m) {
    if (!m) return;
    for (int i = 0; m->latency && i < m->n_endpoints; i++) free(m->latency[i].counts);
    for (int i = 0; m->mstats && i < m->n_models; i++) {
        free(m->mstats[i].seqs.counts);
        free(m->mstats[i].toks.counts);
    }
    free(m->requests);
    free(m->latency);
    free(m->mstats);
    pthread_mutex_destroy(&m->mu);
    free(m);
}

static int status_index(int status) {
    for (int i = 0; i < N_STATUS - 1; i++)
        if (STATUSES[i] == status) return i;
    return N_STATUS - 1;
}

void ll_metrics_request(ll_metrics *m, int endpoint, int status, double seconds) {
    if (endpoint < 0 || endpoint >= m->n_endpoints) return;
    pthread_mutex_lock(&m->mu);
    m->requests[endpoint * N_STATUS + status_index(status)]++;
    hist_observe(&m->latency[endpoint], seconds);
    pthread_mutex_unlock(&m->mu);
}

void ll_metrics_batch(ll_metrics *m, int model, int n_seq, int n_tok) {
    if (model < 0 || model >= m->n_models) return;
    pthread_mutex_lock(&m->mu);
    model_stats *s = &m->mstats[model];
    hist_observe(&s->seqs, n_seq);
    hist_observe(&s->toks, n_tok);
    s->tokens += (uint64_t)n_tok;
    pthread_mutex_unlock(&m->mu);
}

void ll_metrics_dropped(ll_metrics *m, int model, int n) {
    if (model < 0 || model >= m->n_models) return;
    pthread_mutex_lock(&m->mu);
    m->mstats[model].dropped += (uint64_t)n;
    pthread_mutex_unlock(&m->mu);
}

void ll_metrics_model_loaded(ll_metrics *m, int model, double seconds) {
    if (model < 0 || model >= m->n_models) return;
    pthread_mutex_lock(&m->mu);
    m->mstats[model].load_seconds = seconds;
    m->mstats[model].loaded = 1;
    pthread_mutex_unlock(&m->mu);
}

size_t ll_resident_bytes(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f) return 0;
    unsigned long size = 0, resident = 0;
    int ok = fscanf(f, "%lu %lu", &size, &resident) == 2;
    fclose(f);
    return ok ? (size_t)resident * (size_t)sysconf(_SC_PAGESIZE) : 0;
}

/* ---- rendering: a growable string ---- */

typedef struct sbuf {
    char *s;
    size_t len, cap;
    int oom;
} sbuf;

__attribute__((format(printf, 2, 3)))
static void sb_printf(sbuf *b, const char *fmt, ...) {
    if (b->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->s + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) { b->oom = 1; return; }
        if (b->len + (size_t)n < b->cap) { b->len += (size_t)n; return; }
        size_t cap = 2 * b->cap + (size_t)n;
        char *s = realloc(b->s, cap);
        if (!s) { b->oom = 1; return; }
        b->s = s;
        b->cap = cap;
    }
}

static void render_hist(sbuf *b, const char *name, const char *label,
                        const char *value, const histogram *h) {
    uint64_t cum = 0;
    for (int i = 0; i < h->n_le; i++) {
        cum += h->counts[i];
        sb_printf(b, "%s_bucket{%s=\"%s\",le=\"%g\"} %llu\n", name, label, value,
                  h->le[i], (unsigned long long)cum);
    }
    cum += h->counts[h->n_le];
    sb_printf(b, "%s_bucket{%s=\"%s\",le=\"+Inf\"} %llu\n", name, label, value,
              (unsigned long long)cum);
    sb_printf(b, "%s_sum{%s=\"%s\"} %.9g\n", name, label, value, h->sum);
    sb_printf(b, "%s_count{%s=\"%s\"} %llu\n", name, label, value,
              (unsigned long long)h->count);
}

static void render_requests(sbuf *b, const ll_metrics *m) {
    sb_printf(b, "# HELP layerlens_requests_total HTTP requests by endpoint and status.\n"
                 "# TYPE layerlens_requests_total counter\n");
    for (int e = 0; e < m->n_endpoints; e++)
        for (int s = 0; s < N_STATUS; s++) {
            uint64_t c = m->requests[e * N_STATUS + s];
            if (!c) continue;
            char st[16];
            if (s < N_STATUS - 1) snprintf(st, sizeof st, "%d", STATUSES[s]);
            else snprintf(st, sizeof st, "other");
            sb_printf(b, "layerlens_requests_total{endpoint=\"%s\",status=\"%s\"} %llu\n",
                      m->endpoints[e], st, (unsigned long long)c);
        }
    sb_printf(b, "# HELP layerlens_request_duration_seconds Time from a request's "
                 "headers to its response, by endpoint.\n"
                 "# TYPE layerlens_request_duration_seconds histogram\n");
    for (int e = 0; e < m->n_endpoints; e++)
        render_hist(b, "layerlens_request_duration_seconds", "endpoint",
                    m->endpoints[e], &m->latency[e]);
}

static void render_models(sbuf *b, const ll_metrics *m) {
    sb_printf(b, "# HELP layerlens_batch_sequences Sequences per forward pass.\n"
                 "# TYPE layerlens_batch_sequences histogram\n");
    for (int i = 0; i < m->n_models; i++)
        render_hist(b, "layerlens_batch_sequences", "model", m->models[i],
                    &m->mstats[i].seqs);
    sb_printf(b, "# HELP layerlens_batch_tokens Tokens per forward pass.\n"
                 "# TYPE layerlens_batch_tokens histogram\n");
    for (int i = 0; i < m->n_models; i++)
        render_hist(b, "layerlens_batch_tokens", "model", m->models[i],
                    &m->mstats[i].toks);
    sb_printf(b, "# HELP layerlens_tokens_total Tokens run through the model.\n"
                 "# TYPE layerlens_tokens_total counter\n");
    for (int i = 0; i < m->n_models; i++)
        sb_printf(b, "layerlens_tokens_total{model=\"%s\"} %llu\n", m->models[i],
                  (unsigned long long)m->mstats[i].tokens);
    sb_printf(b, "# HELP layerlens_dropped_sequences_total Queued sequences dropped "
                 "unrun because their request timed out or its client left.\n"
                 "# TYPE layerlens_dropped_sequences_total counter\n");
    for (int i = 0; i < m->n_models; i++)
        sb_printf(b, "layerlens_dropped_sequences_total{model=\"%s\"} %llu\n",
                  m->models[i], (unsigned long long)m->mstats[i].dropped);
    sb_printf(b, "# HELP layerlens_model_loaded 1 once the model is loaded.\n"
                 "# TYPE layerlens_model_loaded gauge\n");
    for (int i = 0; i < m->n_models; i++)
        sb_printf(b, "layerlens_model_loaded{model=\"%s\"} %d\n", m->models[i],
                  m->mstats[i].loaded);
    sb_printf(b, "# HELP layerlens_model_load_seconds Time taken to load the model.\n"
                 "# TYPE layerlens_model_load_seconds gauge\n");
    for (int i = 0; i < m->n_models; i++)
        if (m->mstats[i].loaded)
            sb_printf(b, "layerlens_model_load_seconds{model=\"%s\"} %.6f\n",
                      m->models[i], m->mstats[i].load_seconds);
}

char *ll_metrics_render(ll_metrics *m, long queue_depth) {
    sbuf b = {0};
    b.cap = 8192;
    b.s = malloc(b.cap);
    if (!b.s) return NULL;
    b.s[0] = 0;
    pthread_mutex_lock(&m->mu);
    render_requests(&b, m);
    render_models(&b, m);
    pthread_mutex_unlock(&m->mu);
    sb_printf(&b, "# HELP layerlens_queue_depth Sequences waiting for a forward pass.\n"
                  "# TYPE layerlens_queue_depth gauge\n"
                  "layerlens_queue_depth %ld\n", queue_depth);
    sb_printf(&b, "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
                  "# TYPE process_resident_memory_bytes gauge\n"
                  "process_resident_memory_bytes %zu\n", ll_resident_bytes());
    if (b.oom) {
        free(b.s);
        return NULL;
    }
    return b.s;
}
