/* llbench.c - the engine side of `make bench` (no HTTP; see llload.c).
 *
 *   llbench prep    --gpt2 DIR --clip DIR --data DIR --out DIR [--words N] [--sentences N]
 *       picks the workload texts (distinct words of SimLex-999, SimVerb-3500
 *       and WordSim-353; STS-B test sentences), tokenizes them with the
 *       engine's own tokenizers and writes, per model and workload, the token
 *       ids (one sequence per line: what the peers run) and the HTTP request
 *       bodies (one JSON per line: what the load generator sends).
 *   llbench dump    --model DIR --ids FILE --count K --out FILE [--dtype D]
 *       every hidden state of the first K sequences, float32, so the peers
 *       can be checked against the engine before they are timed.
 *   llbench engine  --model DIR --ids FILE --tokens 256,512,... [--workers W]
 *                   [--threads T] [--seconds S] [--dtype D]
 *       workload 5: forward passes over packed batches of about that many
 *       tokens, and cblas_sgemm on the same GEMM shapes in the same run.
 *   llbench ops     --model DIR --tokens 256,2048 [--seqlen T] [--threads T] [--seconds S]
 *                   [--dtype D]
 *       the profile: each operation of one block (ops.h, the functions the
 *       forward pass calls) timed on its own over N packed tokens in
 *       sequences of T tokens, as a share of the block's time.
 *   llbench sgemm   --model DIR [--batch ROWS] [--workers W] [--threads T] [--seconds S]
 *       the bound alone: cblas_sgemm on the model's GEMM shapes at ROWS rows
 *       (default 256) for S seconds, with one layer's weights (hot in cache)
 *       and then the model's layers in turn.  bench.sh measures it next to
 *       each HTTP workload, so that the workload and its bound see the same
 *       machine.
 *   llbench corename
 *       the OpenBLAS kernel family in use (the PyTorch peer gets the same).
 *   llbench forward --model DIR --ids FILE --batch B [--workers W] [--threads T]
 *                   [--latency K] [--layers all|last] [--dtype D]
 *       the peers' in-process workloads for the engine itself: every sequence
 *       of the file in packed batches of B sequences (no padding), or with
 *       --latency K, K single-sequence passes and their latency percentiles.
 *   llbench deviation --model DIR --ids FILE --count K
 *       how far bf16 weights move the hidden states: the first K sequences
 *       with both weight formats, per layer max |bf16 - f32|, max |f32| and
 *       the RMS of the difference relative to the RMS of f32.
 *   llbench bf16native
 *       1 if bf16 products run on AVX512-BF16 here, 0 if on the portable
 *       code (correct, but too slow to be worth timing).
 *
 * --dtype f32|bf16 (default f32): the format of the weights in the products
 * with weights (dtype.h).  Every timing command prints one JSON object on
 * stdout, with the dtype it ran.
 *
 * FLOP accounting (per token, per block, C = width, F = MLP width, T = the
 * sequence's length): the four linear layers are 2 (C 3C + C C + C F + F C)
 * = 24 C^2 for F = 4C; attention q k^T and P v are 2 T C each (the full
 * T x T square is what OpenBLAS computes; the causal half is not skipped).
 * GPT-2 124M: 12 blocks x 24 x 768^2 = 169.9 MFLOP/token + 48 x 768 T;
 * CLIP text: 12 x 24 x 512^2 = 75.5 MFLOP/token + 48 x 512 T.
 * Embedding, layer norm, activations, residuals, GPT-2's ln_f and CLIP's
 * projection are left out (under 0.1%). */
#include <cblas.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "layerlens/blas.h"
#include "layerlens/model.h"
#include "layerlens/ops.h"
#include "layerlens/pool.h"

/* OpenBLAS's own thread control. */
void openblas_set_num_threads(int n);

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void die(const char *fmt, const char *arg) {
    fprintf(stderr, "llbench: ");
    fprintf(stderr, fmt, arg);
    fputc('\n', stderr);
    exit(1);
}

/* ------------------------------------------------------------ arguments */

typedef struct args {
    const char *gpt2, *clip, *data, *out, *model, *ids, *tokens, *layers;
    int words, sentences, count, workers, threads, batch, latency;
    double seconds;
    ll_weight_type dtype;
} args;

static void parse_args(args *a, int argc, char **argv) {
    *a = (args){.words = 1000, .sentences = 1000, .count = 4, .workers = 1,
                .threads = 1, .batch = 64, .seconds = 3.0, .layers = "all",
                .dtype = LL_WEIGHTS_F32};
    for (int i = 2; i < argc; i++) {
        const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) die("%s needs a value", k);
        i++;
        if (!strcmp(k, "--gpt2")) a->gpt2 = v;
        else if (!strcmp(k, "--clip")) a->clip = v;
        else if (!strcmp(k, "--data")) a->data = v;
        else if (!strcmp(k, "--out")) a->out = v;
        else if (!strcmp(k, "--model")) a->model = v;
        else if (!strcmp(k, "--ids")) a->ids = v;
        else if (!strcmp(k, "--tokens")) a->tokens = v;
        else if (!strcmp(k, "--layers")) a->layers = v;
        else if (!strcmp(k, "--words")) a->words = atoi(v);
        else if (!strcmp(k, "--sentences")) a->sentences = atoi(v);
        else if (!strcmp(k, "--count")) a->count = atoi(v);
        else if (!strcmp(k, "--workers")) a->workers = atoi(v);
        else if (!strcmp(k, "--threads")) a->threads = atoi(v);
        else if (!strcmp(k, "--batch") || !strcmp(k, "--seqlen")) a->batch = atoi(v);
        else if (!strcmp(k, "--latency")) a->latency = atoi(v);
        else if (!strcmp(k, "--seconds")) a->seconds = atof(v);
        else if (!strcmp(k, "--dtype")) {
            ll_error err = {{0}};
            if (ll_weight_type_parse(v, &a->dtype, &err)) die("--dtype: %s", err.msg);
        }
        else die("unknown option %s", k);
    }
    if (a->workers < 1 || a->threads < 1 || a->batch < 1) die("%s", "bad worker/thread/batch count");
}

static ll_model *load_model(const char *dir, ll_weight_type dtype) {
    if (!dir) die("%s", "--model DIR is required");
    ll_error err = {{0}};
    ll_model *m = ll_model_load_dtype(dir, dtype, &err);
    if (!m) die("%s", err.msg);
    return m;
}

/* ------------------------------------------------------------ texts */

typedef struct strlist {
    char **s;
    int n, cap;
} strlist;

static void strlist_push(strlist *l, const char *s, size_t len) {
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 256;
        l->s = realloc(l->s, (size_t)l->cap * sizeof *l->s);
        if (!l->s) die("%s", "out of memory");
    }
    l->s[l->n++] = strndup(s, len);
}

static int strlist_has(const strlist *l, const char *s) {
    for (int i = 0; i < l->n; i++)
        if (!strcmp(l->s[i], s)) return 1;
    return 0;
}

/* Field f (0-based) of a tab-separated line, as [*beg, *beg + return). */
static long tsv_field(const char *line, int f, const char **beg) {
    const char *p = line;
    for (int i = 0; i < f; i++) {
        p = strchr(p, '\t');
        if (!p) return -1;
        p++;
    }
    *beg = p;
    return (long)strcspn(p, "\t\r\n");
}

/* Appends the distinct words of columns 0 and 1 of a word-pair file, in
 * first-occurrence order, until the list holds max words. */
static void add_pair_words(strlist *words, const char *path, int header, int max) {
    FILE *f = fopen(path, "r");
    if (!f) die("cannot open %s", path);
    char line[4096];
    for (int ln = 0; words->n < max && fgets(line, sizeof line, f); ln++) {
        if (ln == 0 && header) continue;
        for (int col = 0; col < 2 && words->n < max; col++) {
            const char *b = NULL;
            long n = tsv_field(line, col, &b);
            if (n <= 0) continue;
            char w[256];
            snprintf(w, sizeof w, "%.*s", (int)n, b);
            if (!strlist_has(words, w)) strlist_push(words, w, strlen(w));
        }
    }
    fclose(f);
}

/* STS-B (sts-test.csv): sentence1 and sentence2 are fields 5 and 6. */
static void add_stsb(strlist *all, const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) die("cannot open %s", path);
    char line[8192];
    while (fgets(line, sizeof line, f)) {
        const char *b1 = NULL, *b2 = NULL;
        long n1 = tsv_field(line, 5, &b1), n2 = tsv_field(line, 6, &b2);
        if (n1 <= 0 || n2 <= 0) continue;
        strlist_push(all, b1, (size_t)n1);
        strlist_push(all, b2, (size_t)n2);
    }
    fclose(f);
}

/* ------------------------------------------------------------ prep */

typedef struct workload_out {
    const char *name;     /* words | sentences | stsb */
    const strlist *texts;
    int bodies;           /* write request bodies too */
} workload_out;

static FILE *open_out(const char *dir, const char *model, const char *name,
                      const char *ext) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s-%s.%s", dir, model, name, ext);
    FILE *f = fopen(path, "w");
    if (!f) die("cannot write %s", path);
    return f;
}

static void write_body(FILE *f, const char *model, const char *text, int gpt2,
                       int all_layers) {
    json_t *b = json_pack("{s:s, s:s}", "model", model, "input", text);
    /* GPT-2 gets <|endoftext|> on both sides, as in the papers this service
     * reproduces; CLIP always has its own start and end tokens. */
    if (gpt2) {
        json_object_set_new(b, "bos", json_true());
        json_object_set_new(b, "eos", json_true());
    }
    if (all_layers) json_object_set_new(b, "layers", json_string("all"));
    char *s = json_dumps(b, JSON_COMPACT);
    fprintf(f, "%s\n", s);
    free(s);
    json_decref(b);
}

/* One model's token ids (and request bodies) for one workload. */
static void prep_workload(const ll_model *m, const char *out, const workload_out *w) {
    const char *id = ll_model_id(m);
    int gpt2 = !strcmp(id, "gpt2");
    ll_encode_opts eo = {gpt2, gpt2, 1};
    FILE *fi = open_out(out, id, w->name, "ids");
    FILE *fb = w->bodies ? open_out(out, id, w->name, "jsonl") : NULL;
    FILE *fa = w->bodies ? open_out(out, id, w->name, "all.jsonl") : NULL;
    long total = 0;
    for (int i = 0; i < w->texts->n; i++) {
        const char *t = w->texts->s[i];
        ll_tokens tk = {0};
        ll_error err = {{0}};
        if (ll_model_encode(m, t, strlen(t), &eo, &tk, NULL, NULL, &err))
            die("tokenizing: %s", err.msg);
        for (int k = 0; k < tk.n; k++) fprintf(fi, k ? " %d" : "%d", tk.ids[k]);
        fputc('\n', fi);
        total += tk.n;
        ll_tokens_free(&tk);
        if (fb) write_body(fb, id, t, gpt2, 0);
        if (fa) write_body(fa, id, t, gpt2, 1);
    }
    fclose(fi);
    if (fb) fclose(fb), fclose(fa);
    fprintf(stderr, "llbench prep: %s %s: %d sequences, %ld tokens (%.2f per sequence)\n",
            id, w->name, w->texts->n, total, (double)total / w->texts->n);
}

static void write_texts(const char *dir, const char *name, const strlist *l) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s.txt", dir, name);
    FILE *f = fopen(path, "w");
    if (!f) die("cannot write %s", path);
    for (int i = 0; i < l->n; i++) fprintf(f, "%s\n", l->s[i]);
    fclose(f);
}

static int cmd_prep(const args *a) {
    if (!a->gpt2 || !a->clip || !a->data || !a->out)
        die("%s", "prep needs --gpt2 --clip --data --out");
    char p[1024];
    strlist words = {0}, stsb = {0}, sents = {0};
    snprintf(p, sizeof p, "%s/simlex999.tsv", a->data);
    add_pair_words(&words, p, 1, a->words);
    snprintf(p, sizeof p, "%s/simverb3500.tsv", a->data);
    add_pair_words(&words, p, 0, a->words);
    snprintf(p, sizeof p, "%s/ws353.tsv", a->data);
    add_pair_words(&words, p, 1, a->words);
    snprintf(p, sizeof p, "%s/stsb/sts-test.csv", a->data);
    add_stsb(&stsb, p);
    /* workload 2: the first distinct sentences of the test set */
    for (int i = 0; i < stsb.n && sents.n < a->sentences; i++)
        if (!strlist_has(&sents, stsb.s[i])) strlist_push(&sents, stsb.s[i], strlen(stsb.s[i]));
    if (words.n < a->words || sents.n < a->sentences)
        fprintf(stderr, "llbench prep: only %d words / %d sentences available\n", words.n, sents.n);
    write_texts(a->out, "words", &words);
    write_texts(a->out, "sentences", &sents);
    write_texts(a->out, "stsb", &stsb);
    const char *dirs[2] = {a->gpt2, a->clip};
    workload_out wl[3] = {{"words", &words, 1}, {"sentences", &sents, 1}, {"stsb", &stsb, 0}};
    for (int d = 0; d < 2; d++) {
        ll_model *m = load_model(dirs[d], LL_WEIGHTS_F32); /* tokenizers only */
        for (int w = 0; w < 3; w++) prep_workload(m, a->out, &wl[w]);
        ll_model_free(m);
    }
    return 0;
}

/* ------------------------------------------------------------ id files */

typedef struct seqfile {
    ll_seq *seqs;
    int n;
    long tokens;
} seqfile;

static seqfile read_ids(const char *path) {
    if (!path) die("%s", "--ids FILE is required");
    FILE *f = fopen(path, "r");
    if (!f) die("cannot open %s", path);
    seqfile sf = {0};
    int cap = 0;
    char *line = NULL;
    size_t lcap = 0;
    while (getline(&line, &lcap, f) > 0) {
        int32_t *ids = malloc(strlen(line) * sizeof *ids);
        int n = 0;
        for (char *p = line, *end; ; p = end) {
            long v = strtol(p, &end, 10);
            if (end == p) break;
            ids[n++] = (int32_t)v;
        }
        if (n == 0) die("empty sequence in %s", path);
        if (sf.n == cap) {
            cap = cap ? 2 * cap : 1024;
            sf.seqs = realloc(sf.seqs, (size_t)cap * sizeof *sf.seqs);
        }
        sf.seqs[sf.n++] = (ll_seq){ids, n};
        sf.tokens += n;
    }
    free(line);
    fclose(f);
    if (sf.n == 0) die("no sequences in %s", path);
    return sf;
}

/* ------------------------------------------------------------ FLOPs */

static double linear_flops(const ll_config *c, long tokens) {
    double C = c->width, F = c->ffn;
    return 2.0 * (double)tokens * c->n_layer * (3 * C * C + C * C + 2 * C * F);
}

static double attention_flops(const ll_config *c, const ll_seq *s, int n) {
    double f = 0;
    for (int i = 0; i < n; i++) f += 4.0 * (double)s[i].len * s[i].len * c->width;
    return f * c->n_layer;
}

/* ------------------------------------------------------------ dump */

static int cmd_dump(const args *a) {
    ll_model *m = load_model(a->model, a->dtype);
    seqfile sf = read_ids(a->ids);
    const ll_config *c = ll_model_config(m);
    FILE *f = fopen(a->out, "wb");
    if (!f) die("cannot write %s", a->out);
    ll_workspace *ws = ll_workspace_new();
    ll_forward_req req = {.layers = (2ull << c->n_layer) - 1,
                          .want_projected = c->arch == LL_ARCH_CLIP};
    int n = a->count < sf.n ? a->count : sf.n;
    for (int s = 0; s < n; s++) {
        ll_states st;
        ll_error err = {{0}};
        if (ll_forward(m, ws, &sf.seqs[s], 1, &req, &st, &err)) die("%s", err.msg);
        for (int l = 0; l <= c->n_layer; l++)
            fwrite(st.layer[l], sizeof(float), (size_t)st.n_tok * c->width, f);
        if (st.projected) fwrite(st.projected, sizeof(float), (size_t)c->proj_dim, f);
        ll_states_free(&st);
    }
    fclose(f);
    ll_workspace_free(ws);
    ll_model_free(m);
    return 0;
}

/* ------------------------------------------------------------ workers */

/* A batch: n consecutive sequences of the file. */
typedef struct batch {
    const ll_seq *seqs;
    int n;
    long tokens;
} batch;

/* Work shared by the worker threads: batches taken in order from a common
 * counter, cycling over the list, until `max_jobs` runs in all or, when
 * `per_worker` is set, that many runs by each worker. */
typedef struct pool {
    const ll_model *m;
    const batch *batches;
    int n_batches;
    ll_forward_req req;
    atomic_long next;
    long max_jobs;       /* total batch runs (when per_worker == 0) */
    long per_worker;     /* batch runs by each worker, or 0 */
    atomic_long done_tokens, done_jobs;
    double *lat;         /* per job latency (latency mode), [max_jobs] */
    int threads;         /* threads per product (ll_pool_set_threads) */
    atomic_int slot;     /* the next worker's index */
    ll_workspace *ws[64]; /* worker i's workspace, kept from one run to the next as a
                             server worker keeps its own (a warm-up grows them) */
} pool;

static void *worker_main(void *p_) {
    pool *p = p_;
    ll_pool_set_threads(p->threads);
    int i = atomic_fetch_add(&p->slot, 1);
    if (!p->ws[i] && !(p->ws[i] = ll_workspace_new())) die("%s", "out of memory");
    ll_workspace *ws = p->ws[i];
    for (long mine = 0; !p->per_worker || mine < p->per_worker; mine++) {
        long j = atomic_fetch_add(&p->next, 1);
        if (!p->per_worker && j >= p->max_jobs) break;
        const batch *b = &p->batches[j % p->n_batches];
        ll_states st;
        ll_error err = {{0}};
        double t0 = now_s();
        if (ll_forward(p->m, ws, b->seqs, b->n, &p->req, &st, &err)) die("%s", err.msg);
        if (p->lat) p->lat[j] = now_s() - t0;
        ll_states_free(&st);
        atomic_fetch_add(&p->done_tokens, b->tokens);
        atomic_fetch_add(&p->done_jobs, 1);
    }
    return NULL;
}

static void pool_free(pool *p) {
    for (int i = 0; i < 64; i++) ll_workspace_free(p->ws[i]), p->ws[i] = NULL;
}

/* Runs the pool on `workers` threads; returns the wall time. */
static double run_pool(pool *p, int workers) {
    pthread_t th[64];
    if (workers > 64) workers = 64;
    atomic_store(&p->next, 0);
    atomic_store(&p->done_tokens, 0);
    atomic_store(&p->done_jobs, 0);
    atomic_store(&p->slot, 0);
    double t0 = now_s();
    for (int w = 0; w < workers; w++) pthread_create(&th[w], NULL, worker_main, p);
    for (int w = 0; w < workers; w++) pthread_join(th[w], NULL);
    return now_s() - t0;
}

/* Cuts the file into batches of about `tokens` tokens (sequences are never
 * split; a batch holds at least one). */
static batch *pack_by_tokens(const seqfile *sf, long tokens, int *n_out) {
    batch *b = calloc((size_t)sf->n, sizeof *b);
    int n = 0;
    for (int s = 0; s < sf->n; s++) {
        if (n == 0 || b[n - 1].tokens + sf->seqs[s].len > tokens)
            b[n++] = (batch){&sf->seqs[s], 0, 0};
        b[n - 1].n++;
        b[n - 1].tokens += sf->seqs[s].len;
    }
    /* the last batch is usually short: keep it only if it is the only one */
    if (n > 1 && b[n - 1].tokens < tokens * 3 / 4) n--;
    *n_out = n;
    return b;
}

static batch *pack_by_count(const seqfile *sf, int per, int *n_out) {
    int n = (sf->n + per - 1) / per;
    batch *b = calloc((size_t)n, sizeof *b);
    for (int i = 0; i < n; i++) {
        b[i].seqs = &sf->seqs[i * per];
        b[i].n = sf->n - i * per < per ? sf->n - i * per : per;
        for (int s = 0; s < b[i].n; s++) b[i].tokens += b[i].seqs[s].len;
    }
    *n_out = n;
    return b;
}

static uint64_t layer_mask(const ll_config *c, const char *spec) {
    if (!strcmp(spec, "last")) return 1ull << c->n_layer;
    return (2ull << c->n_layer) - 1;
}

/* ------------------------------------------------------------ sgemm */

/* cblas_sgemm on the four linear-layer shapes of the model at M rows
 * (beta = 1 like a product with a bias), each worker thread on its own
 * matrices, allocated and filled before anything is timed.
 *
 * Each set holds `layers` distinct sets of weights, as many as the model
 * has.  Cycled through like a forward pass does, the weights come from
 * memory as they do in the engine: the bound workload 5 is measured
 * against.  Using only the first ("hot"), they stay in the caches; both
 * are reported. */
typedef struct sgemm_set {
    int M, C, F, layers;
    float *A, *O, *W;
    int use_layers; /* of this run: layers, or 1 (hot) */
    double until;
    long reps;      /* products of all four shapes over use_layers */
} sgemm_set;

static void sgemm_shapes(const sgemm_set *g, int shapes[4][2]) {
    const int s[4][2] = {{g->C, 3 * g->C}, {g->C, g->C}, {g->C, g->F}, {g->F, g->C}}; /* {IN, OUT} */
    memcpy(shapes, s, sizeof s);
}

static void sgemm_set_init(sgemm_set *g, int M, int C, int F, int layers) {
    *g = (sgemm_set){.M = M, .C = C, .F = F, .layers = layers};
    int shapes[4][2];
    sgemm_shapes(g, shapes);
    size_t big = (size_t)M * (F > 3 * C ? F : 3 * C), per_layer = 0;
    for (int k = 0; k < 4; k++) per_layer += (size_t)shapes[k][0] * shapes[k][1];
    g->A = malloc(big * 4), g->O = calloc(big, 4), g->W = malloc(per_layer * (size_t)layers * 4);
    if (!g->A || !g->O || !g->W) die("%s", "out of memory");
    for (size_t i = 0; i < per_layer * (size_t)layers; i++) g->W[i] = 0.01f * (float)(i % 97);
    for (size_t i = 0; i < big; i++) g->A[i] = 0.02f * (float)(i % 89);
}

static void sgemm_set_free(sgemm_set *g) { free(g->A), free(g->O), free(g->W); }

static double sgemm_run(sgemm_set *sets, int workers, int threads, int use_layers,
                        double seconds, double *dt);

/* One set per worker at M rows of the model's shapes, warmed up (OpenBLAS's
 * buffers, the pages of A and O) before anything is timed. */
static void sgemm_sets_init(sgemm_set *sets, int workers, int threads, int M, const ll_config *c) {
    for (int w = 0; w < workers; w++) sgemm_set_init(&sets[w], M, c->width, c->ffn, c->n_layer);
    double dummy = 0;
    sgemm_run(sets, workers, threads, 1, 0, &dummy);
}

static void sgemm_sets_free(sgemm_set *sets, int workers) {
    for (int w = 0; w < workers; w++) sgemm_set_free(&sets[w]);
}

static double sgemm_rep_flops(const sgemm_set *g) {
    double C = g->C, F = g->F;
    return 2.0 * g->M * (C * 3 * C + C * C + 2.0 * C * F) * g->use_layers;
}

static void *sgemm_main(void *p) {
    sgemm_set *g = p;
    int shapes[4][2];
    sgemm_shapes(g, shapes);
    g->reps = 0;
    do {
        const float *w = g->W;
        for (int l = 0; l < g->use_layers; l++)
            for (int k = 0; k < 4; k++) {
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, g->M, shapes[k][1],
                            shapes[k][0], 1.0f, g->A, shapes[k][0], w, shapes[k][1], 1.0f, g->O,
                            shapes[k][1]);
                w += (size_t)shapes[k][0] * shapes[k][1];
            }
        g->reps++;
    } while (now_s() < g->until);
    return NULL;
}

/* Runs sets[0 .. workers) at once over `use_layers` of their layers for
 * about `seconds` (at least one round of products each, with `threads`
 * OpenBLAS threads per call); returns the FLOPs done and adds the wall
 * time to *dt. */
static double sgemm_run(sgemm_set *sets, int workers, int threads, int use_layers,
                        double seconds, double *dt) {
    pthread_t th[64];
    openblas_set_num_threads(threads);
    double t0 = now_s(), flops = 0;
    for (int w = 0; w < workers; w++) {
        sets[w].use_layers = use_layers;
        sets[w].until = t0 + seconds;
        pthread_create(&th[w], NULL, sgemm_main, &sets[w]);
    }
    for (int w = 0; w < workers; w++) {
        pthread_join(th[w], NULL);
        flops += sgemm_rep_flops(&sets[w]) * (double)sets[w].reps;
    }
    *dt += now_s() - t0;
    openblas_set_num_threads(1); /* as the server: the products with weights are gemm.c's */
    return flops;
}

/* ------------------------------------------------------------ engine */

/* Workload 5.  The host's speed drifts by 10-25% from one few seconds to
 * the next, so the engine and its bound are not timed one after the other
 * but in turns: `rounds` of (passes for about seconds / rounds, sgemm on the
 * 12 layers' weights as long, sgemm hot half as long).  Each round's ratio
 * of the engine's rate to the 12-layer sgemm's is kept; their median is the
 * figure report.py shows first, since a slow spell of the host on one side
 * of one round moves the ratio of the totals (also reported) by several
 * per cent.
 *
 * In a round every worker runs the same number of passes, as many as fit
 * in its share of the time at the pace of a pass after the warm-up (at
 * least one).  A round that ran until a deadline instead let a worker start
 * one more pass just before it while the others stopped: at 2,048 tokens a
 * one-thread pass takes over a second, and the round's wall time then held
 * a second with a core idle, which no server worker with batches waiting
 * ever has.  The sgemm side does whole repetitions of equal size on every
 * worker. */
#define MAX_ROUNDS 64

/* qsort's order of doubles (the rounds' ratios, latencies) */
static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int cmd_engine(const args *a) {
    ll_model *m = load_model(a->model, a->dtype);
    const ll_config *c = ll_model_config(m);
    seqfile sf = read_ids(a->ids);
    openblas_set_num_threads(1); /* as the server: the products with weights are gemm.c's */
    int workers = a->workers < 1 ? 1 : a->workers > 64 ? 64 : a->workers;
    int rounds = a->seconds >= 3 ? (int)(a->seconds / 1.5 + 0.5) : 1;
    if (rounds > MAX_ROUNDS) rounds = MAX_ROUNDS;
    double seg = a->seconds / rounds;
    char *spec = strdup(a->tokens ? a->tokens : "256,512,1024,2048");
    json_t *rows = json_array();
    for (char *save = NULL, *tok = strtok_r(spec, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        long target = atol(tok);
        int nb;
        batch *b = pack_by_tokens(&sf, target, &nb);
        pool p = {.m = m, .batches = b, .n_batches = nb,
                  .req = {.layers = layer_mask(c, a->layers)}, .threads = a->threads};
        /* warm-up: one pass per worker grows the workspaces it keeps; a
         * second gives the pace the rounds' pass counts are set by */
        p.max_jobs = workers;
        run_pool(&p, workers);
        double pace = run_pool(&p, workers);
        p.per_worker = (long)(seg / pace + 0.5);
        if (p.per_worker < 1) p.per_worker = 1;
        long mean_tok = 0; /* the sgemm's rows: the batches' mean */
        for (int i = 0; i < nb; i++) mean_tok += b[i].tokens;
        mean_tok /= nb;
        sgemm_set sets[64];
        sgemm_sets_init(sets, workers, a->threads, (int)mean_tok, c);
        double lin = 0, att = 0, dt = 0, g_fl = 0, g_dt = 0, h_fl = 0, h_dt = 0;
        double ratios[MAX_ROUNDS];
        long jobs = 0, toks = 0;
        for (int r = 0; r < rounds; r++) {
            double t = run_pool(&p, workers), l = 0, at = 0;
            long n = atomic_load(&p.done_jobs);
            for (long j = 0; j < n; j++) { /* batches taken in order from the first, cycling */
                l += linear_flops(c, b[j % nb].tokens);
                at += attention_flops(c, b[j % nb].seqs, b[j % nb].n);
            }
            lin += l, att += at, dt += t, jobs += n, toks += atomic_load(&p.done_tokens);
            double gt = 0, gf = sgemm_run(sets, workers, a->threads, c->n_layer, seg, &gt);
            g_fl += gf, g_dt += gt;
            h_fl += sgemm_run(sets, workers, a->threads, 1, seg / 2, &h_dt);
            ratios[r] = ((l + at) / t) / (gf / gt);
        }
        json_t *rr = json_array();
        for (int r = 0; r < rounds; r++) json_array_append_new(rr, json_real(ratios[r]));
        qsort(ratios, (size_t)rounds, sizeof ratios[0], cmp_double);
        double rmin = ratios[0], rmax = ratios[rounds - 1],
               rmed = rounds % 2 ? ratios[rounds / 2]
                                 : (ratios[rounds / 2 - 1] + ratios[rounds / 2]) / 2;
        sgemm_sets_free(sets, workers);
        pool_free(&p);
        double gf = (lin + att) / dt / 1e9, gemm = g_fl / g_dt / 1e9, hot = h_fl / h_dt / 1e9;
        json_array_append_new(rows, json_pack(
            "{s:I, s:I, s:I, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:i, s:f, s:f, s:f, s:o}",
            "target_tokens", (json_int_t)target, "batch_tokens", (json_int_t)mean_tok,
            "passes", (json_int_t)jobs, "seconds", dt, "tokens_per_s", (double)toks / dt,
            "gflops", gf, "linear_gflops", lin / dt / 1e9, "sgemm_gflops", gemm,
            "sgemm_hot_gflops", hot, "attention_share", att / (lin + att), "rounds", rounds,
            "round_ratio_min", rmin, "round_ratio_max", rmax, "round_ratio_median", rmed,
            "round_ratios", rr));
        fprintf(stderr, "llbench engine %s: %ld tokens/pass, %ld passes in %d rounds: %.1f GFLOP/s "
                "(sgemm same shapes, the model's %d layers of weights %.1f: %.0f%%, rounds' "
                "median %.0f%%, %.0f-%.0f%%; one layer's, hot in cache %.1f: %.0f%%)\n",
                ll_model_id(m), mean_tok, jobs, rounds, gf, c->n_layer, gemm, 100 * gf / gemm,
                100 * rmed, 100 * rmin, 100 * rmax, hot, 100 * gf / hot);
        free(b);
    }
    free(spec);
    json_t *o = json_pack("{s:s, s:s, s:i, s:i, s:s, s:s, s:o}", "model", ll_model_id(m), "dtype",
                          ll_weight_type_name(a->dtype), "workers", workers, "threads",
                          a->threads, "layers", a->layers, "openblas", ll_blas_corename(), "rows", rows);
    char *s = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(6));
    puts(s);
    free(s);
    json_decref(o);
    ll_model_free(m);
    return 0;
}

/* The bound of the HTTP workloads, measured on its own (see the header). */
static int cmd_sgemm(const args *a) {
    if (!a->model) die("%s", "--model DIR is required");
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", a->model);
    ll_config c;
    ll_error err = {{0}};
    if (ll_config_load(path, &c, &err)) die("%s", err.msg);
    openblas_set_num_threads(1);
    int workers = a->workers < 1 ? 1 : a->workers > 64 ? 64 : a->workers;
    sgemm_set sets[64];
    sgemm_sets_init(sets, workers, a->threads, a->batch, &c);
    double h_dt = 0, g_dt = 0;
    double h_fl = sgemm_run(sets, workers, a->threads, 1, a->seconds * 2 / 3, &h_dt);
    double g_fl = sgemm_run(sets, workers, a->threads, c.n_layer, a->seconds / 3, &g_dt);
    sgemm_sets_free(sets, workers);
    printf("{\"rows\":%d,\"workers\":%d,\"threads\":%d,\"seconds\":%.3f,"
           "\"sgemm_hot_gflops\":%.3f,\"sgemm_gflops\":%.3f}\n",
           a->batch, workers, a->threads, h_dt + g_dt, h_fl / h_dt / 1e9, g_fl / g_dt / 1e9);
    return 0;
}

/* ------------------------------------------------------------ forward */

static double percentile(const double *sorted, long n, double q) {
    long i = (long)ceil(q * (double)n) - 1;
    if (i < 0) i = 0;
    if (i >= n) i = n - 1;
    return sorted[i];
}

static int cmd_forward(const args *a) {
    ll_model *m = load_model(a->model, a->dtype);
    const ll_config *c = ll_model_config(m);
    seqfile sf = read_ids(a->ids);
    openblas_set_num_threads(1); /* as the server: the products with weights are gemm.c's */
    int nb, per = a->latency ? 1 : a->batch;
    batch *b = pack_by_count(&sf, per, &nb);
    pool p = {.m = m, .batches = b, .n_batches = nb,
              .req = {.layers = layer_mask(c, a->layers),
                      .want_projected = c->arch == LL_ARCH_CLIP},
              .threads = a->threads};
    p.max_jobs = a->workers < nb ? a->workers : nb; /* warm-up */
    run_pool(&p, a->workers);
    json_t *o = json_pack("{s:s, s:s, s:i, s:i, s:s, s:s}", "model", ll_model_id(m), "dtype",
                          ll_weight_type_name(a->dtype), "workers", a->workers, "threads",
                          a->threads, "layers", a->layers, "openblas", ll_blas_corename());
    if (a->latency) {
        p.max_jobs = a->latency;
        p.lat = calloc((size_t)a->latency, sizeof *p.lat);
        double dt = run_pool(&p, 1);
        qsort(p.lat, (size_t)a->latency, sizeof *p.lat, cmp_double);
        json_object_set_new(o, "calls", json_integer(a->latency));
        json_object_set_new(o, "seconds", json_real(dt));
        json_object_set_new(o, "p50_ms", json_real(1e3 * percentile(p.lat, a->latency, 0.50)));
        json_object_set_new(o, "p99_ms", json_real(1e3 * percentile(p.lat, a->latency, 0.99)));
        free(p.lat);
    } else {
        p.max_jobs = nb;
        double dt = run_pool(&p, a->workers);
        json_object_set_new(o, "sequences", json_integer(sf.n));
        json_object_set_new(o, "tokens", json_integer(sf.tokens));
        json_object_set_new(o, "batch", json_integer(per));
        json_object_set_new(o, "seconds", json_real(dt));
        json_object_set_new(o, "seqs_per_s", json_real(sf.n / dt));
        json_object_set_new(o, "gflops", json_real((linear_flops(c, sf.tokens) +
                                                    attention_flops(c, sf.seqs, sf.n)) / dt / 1e9));
    }
    char *s = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(6));
    puts(s);
    free(s);
    json_decref(o);
    pool_free(&p);
    free(b);
    ll_model_free(m);
    return 0;
}

/* ------------------------------------------------------------ flops */

/* Prints the FLOP accounting of a model on an ids file (for the report). */
static int cmd_flops(const args *a) {
    ll_model *m = load_model(a->model, LL_WEIGHTS_F32); /* shapes only */
    const ll_config *c = ll_model_config(m);
    seqfile sf = read_ids(a->ids);
    double lin = linear_flops(c, sf.tokens), att = attention_flops(c, sf.seqs, sf.n);
    long tmax = 0;
    double padded = 0; /* tokens after padding each group of --batch to its longest */
    for (int s = 0; s < sf.n; s++) {
        if (s % a->batch == 0) {
            long mx = 0;
            for (int k = s; k < sf.n && k < s + a->batch; k++)
                if (sf.seqs[k].len > mx) mx = sf.seqs[k].len;
            int cnt = sf.n - s < a->batch ? sf.n - s : a->batch;
            padded += (double)mx * cnt;
        }
        if (sf.seqs[s].len > tmax) tmax = sf.seqs[s].len;
    }
    printf("{\"model\":\"%s\",\"sequences\":%d,\"tokens\":%ld,\"max_len\":%ld,"
           "\"linear_flops\":%.6g,\"attention_flops\":%.6g,\"flops_per_token\":%.6g,"
           "\"padded_tokens\":%.0f}\n",
           ll_model_id(m), sf.n, sf.tokens, tmax, lin, att, (lin + att) / (double)sf.tokens,
           padded);
    ll_model_free(m);
    return 0;
}

/* ------------------------------------------------------------ ops */

/* One block's operations, in the order block_forward runs them. */
enum { OP_LN1, OP_QKV, OP_ATTN, OP_PROJ, OP_LN2, OP_FC1, OP_FC2, OP_COPY, OP_FC1_ALONE,
       OP_RES, OP_ACT, N_OPS, N_BLOCK_OPS = OP_FC1_ALONE };
/* The block's steps (the first N_BLOCK_OPS, whose times add up to the
 * block's), then fc1 without its activation, and the residual sum and the
 * activation as passes of their own: what doing them inside the products
 * saves */
static const char *const op_names[N_OPS] = {
    "layernorm 1", "matmul qkv [C x 3C]", "attention (per sequence)",
    "matmul proj [C x C] + residual", "layernorm 2", "matmul fc1 [C x F] + activation",
    "matmul fc2 [F x C] + residual", "copy of the layer's output",
    "(matmul fc1 [C x F] alone)", "(residual as a separate pass)",
    "(activation as a separate pass)"};

static float *rand_floats(size_t n, float scale, unsigned *seed) {
    float *p = malloc(n * sizeof *p);
    if (!p) die("%s", "out of memory");
    for (size_t i = 0; i < n; i++) {
        *seed = *seed * 1664525u + 1013904223u;
        p[i] = scale * ((float)(*seed >> 8) / 16777216.0f - 0.5f);
    }
    return p;
}

/* Runs one operation of the block (the same calls block_forward makes). */
typedef struct block_bufs {
    float *x, *ln, *qkv, *att, *fc, *copy, *scores, *act, *act_src;
    float *w_qkv, *w_proj, *w_fc1, *w_fc2, *b, *g;
    ll_packed p_qkv, p_proj, p_fc1, p_fc2; /* the w_ matrices, packed as at load */
} block_bufs;

static void run_op(const ll_config *c, block_bufs *k, int op, int N, int T) {
    int C = c->width, F = c->ffn;
    switch (op) {
    case OP_LN1: case OP_LN2: layernorm_forward(k->ln, k->x, k->g, k->b, N, C, c->ln_eps); break;
    case OP_QKV: matmul_forward(k->qkv, k->ln, &k->p_qkv, k->b, N); break;
    case OP_ATTN:
        for (int r = 0; r + T <= N; r += T)
            attention_forward(k->att + (long)r * C, k->qkv + (long)r * 3 * C, k->scores, T, C, c->n_head);
        break;
    case OP_PROJ: matmul_residual_forward(k->copy, k->ln, k->att, &k->p_proj, k->b, N); break;
    case OP_FC1:
        if (c->act == LL_ACT_GELU_NEW) matmul_gelu_new_forward(k->fc, k->ln, &k->p_fc1, k->b, N);
        else matmul_quick_gelu_forward(k->fc, k->ln, &k->p_fc1, k->b, N);
        break;
    case OP_FC2: matmul_residual_forward(k->copy, k->ln, k->fc, &k->p_fc2, k->b, N); break;
    case OP_COPY: memcpy(k->copy, k->x, (size_t)N * C * 4); break;
    case OP_FC1_ALONE: matmul_forward(k->act, k->ln, &k->p_fc1, k->b, N); break;
    case OP_RES: residual_forward(k->copy, k->x, (long)N * C); break;
    case OP_ACT:
        if (c->act == LL_ACT_GELU_NEW) gelu_new_forward(k->act, (long)N * F);
        else quick_gelu_forward(k->act, (long)N * F);
        break;
    }
}

/* Times every operation of one block on N tokens (sequences of T tokens).
 * The block runs again and again for about `seconds`, each operation timed
 * on its own, so a change of machine load hits every operation alike;
 * per_call receives the mean seconds per call. */
static void time_block_ops(const ll_config *c, int N, int T, double seconds, ll_weight_type dtype,
                           double *per_call) {
    long C = c->width, F = c->ffn;
    unsigned seed = 1;
    block_bufs k = {
        .x = rand_floats((size_t)N * C, 1.0f, &seed), .ln = rand_floats((size_t)N * C, 1.0f, &seed),
        .qkv = rand_floats((size_t)N * 3 * C, 1.0f, &seed), .att = rand_floats((size_t)N * C, 1.0f, &seed),
        .fc = rand_floats((size_t)N * F, 1.0f, &seed), .copy = rand_floats((size_t)N * C, 1.0f, &seed),
        .scores = rand_floats((size_t)T * T, 1.0f, &seed), .act_src = rand_floats((size_t)N * F, 4.0f, &seed),
        .act = rand_floats((size_t)N * F, 1.0f, &seed),
        .w_qkv = rand_floats((size_t)C * 3 * C, 0.04f, &seed), .w_proj = rand_floats((size_t)C * C, 0.04f, &seed),
        .w_fc1 = rand_floats((size_t)C * F, 0.04f, &seed), .w_fc2 = rand_floats((size_t)F * C, 0.04f, &seed),
        .b = rand_floats((size_t)(F > 3 * C ? F : 3 * C), 0.1f, &seed), .g = rand_floats((size_t)C, 0.1f, &seed)};
    if (ll_pack_weights(&k.p_qkv, k.w_qkv, (int)C, (int)(3 * C), dtype) ||
        ll_pack_weights(&k.p_proj, k.w_proj, (int)C, (int)C, dtype) ||
        ll_pack_weights(&k.p_fc1, k.w_fc1, (int)C, (int)F, dtype) ||
        ll_pack_weights(&k.p_fc2, k.w_fc2, (int)F, (int)C, dtype))
        die("%s", "out of memory");
    long reps = 0;
    double t_end = 0;
    for (long rep = -1; rep < 2 || now_s() < t_end; rep++) { /* rep -1: warm-up */
        if (rep == 0) t_end = now_s() + seconds;
        for (int op = 0; op < N_OPS; op++) {
            if (op == OP_ACT) memcpy(k.act, k.act_src, (size_t)N * F * 4); /* same inputs each time */
            double t1 = now_s();
            run_op(c, &k, op, N, T);
            if (rep >= 0) per_call[op] += now_s() - t1;
        }
        if (rep >= 0) reps++;
    }
    for (int op = 0; op < N_OPS; op++) per_call[op] /= (double)reps;
    float *all[] = {k.x, k.ln, k.qkv, k.att, k.fc, k.copy, k.scores, k.act, k.act_src,
                    k.w_qkv, k.w_proj, k.w_fc1, k.w_fc2, k.b, k.g};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) free(all[i]);
    ll_packed_free(&k.p_qkv), ll_packed_free(&k.p_proj);
    ll_packed_free(&k.p_fc1), ll_packed_free(&k.p_fc2);
}

static int cmd_ops(const args *a) {
    if (!a->model) die("%s", "--model DIR is required");
    ll_config c;
    ll_error err = {{0}};
    char path[1024];
    snprintf(path, sizeof path, "%s/config.json", a->model);
    if (ll_config_load(path, &c, &err)) die("%s", err.msg);
    openblas_set_num_threads(1); /* as the server: the products with weights are gemm.c's */
    ll_pool_set_threads(a->threads);
    int T = a->batch > 0 && a->batch != 64 ? a->batch : 14; /* --seqlen, default: STS-B's mean */
    json_t *rows = json_array();
    char *spec = strdup(a->tokens ? a->tokens : "256,2048");
    for (char *save = NULL, *tok = strtok_r(spec, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        int N = atoi(tok) / T * T;
        if (N < T) N = T;
        double per[N_OPS] = {0}, total = 0;
        time_block_ops(&c, N, T, a->seconds, a->dtype, per);
        for (int op = 0; op < N_BLOCK_OPS; op++) total += per[op];
        json_t *ops = json_array();
        double C = c.width, F = c.ffn;
        const double gemm_flops[N_OPS] = {[OP_QKV] = 2 * C * 3 * C, [OP_PROJ] = 2 * C * C,
                                          [OP_FC1] = 2 * C * F, [OP_FC2] = 2 * F * C,
                                          [OP_FC1_ALONE] = 2 * C * F};
        for (int op = 0; op < N_OPS; op++) {
            json_t *o = json_pack("{s:s, s:b, s:f, s:f, s:f}", "op", op_names[op], "in_block",
                                  op < N_BLOCK_OPS, "us", 1e6 * per[op], "share", per[op] / total,
                                  "ns_per_token", 1e9 * per[op] / N);
            if (gemm_flops[op] > 0)
                json_object_set_new(o, "gflops", json_real(gemm_flops[op] * N / per[op] / 1e9));
            json_array_append_new(ops, o);
        }
        json_array_append_new(rows, json_pack("{s:i, s:i, s:f, s:o}", "tokens", N, "seqlen", T,
                                              "block_us", 1e6 * total, "ops", ops));
        fprintf(stderr, "llbench ops: %d tokens: block %.0f us\n", N, 1e6 * total);
    }
    free(spec);
    json_t *o = json_pack("{s:s, s:s, s:i, s:s, s:o}", "model", c.arch == LL_ARCH_GPT2 ? "gpt2" : "clip",
                          "dtype", ll_weight_type_name(a->dtype), "threads", a->threads, "openblas",
                          ll_blas_corename(), "rows", rows);
    char *str = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(6));
    puts(str);
    free(str);
    json_decref(o);
    return 0;
}

/* ------------------------------------------------------------ deviation */

/* Differences between two sets of values, summed over the sequences. */
typedef struct dev {
    double max_diff, max_ref, sq_diff, sq_ref;
} dev;

static void dev_add(dev *d, const float *x, const float *ref, long n) {
    for (long i = 0; i < n; i++) {
        double e = fabs((double)x[i] - ref[i]), r = fabs((double)ref[i]);
        if (e > d->max_diff) d->max_diff = e;
        if (r > d->max_ref) d->max_ref = r;
        d->sq_diff += e * e;
        d->sq_ref += r * r;
    }
}

static json_t *dev_json(const dev *d) {
    return json_pack("{s:f, s:f, s:f}", "max_abs_diff", d->max_diff, "max_abs_f32", d->max_ref,
                     "rel_rms", d->sq_ref > 0 ? sqrt(d->sq_diff / d->sq_ref) : 0.0);
}

/* bf16 against f32 on the same sequences, one at a time (so the states of
 * every layer of a long file never have to be held at once). */
static int cmd_deviation(const args *a) {
    ll_model *mf = load_model(a->model, LL_WEIGHTS_F32), *mb = load_model(a->model, LL_WEIGHTS_BF16);
    const ll_config *c = ll_model_config(mf);
    seqfile sf = read_ids(a->ids);
    ll_workspace *ws = ll_workspace_new();
    ll_forward_req req = {.layers = (2ull << c->n_layer) - 1,
                          .want_projected = c->arch == LL_ARCH_CLIP};
    dev layer[LL_MAX_LAYERS + 1] = {{0}}, proj = {0};
    int n = a->count < sf.n ? a->count : sf.n;
    long tokens = 0;
    for (int s = 0; s < n; s++) {
        ll_states f, b;
        ll_error err = {{0}};
        if (ll_forward(mf, ws, &sf.seqs[s], 1, &req, &f, &err) ||
            ll_forward(mb, ws, &sf.seqs[s], 1, &req, &b, &err))
            die("%s", err.msg);
        for (int l = 0; l <= c->n_layer; l++)
            dev_add(&layer[l], b.layer[l], f.layer[l], (long)f.n_tok * c->width);
        if (f.projected) dev_add(&proj, b.projected, f.projected, c->proj_dim);
        tokens += f.n_tok;
        ll_states_free(&f), ll_states_free(&b);
    }
    json_t *layers = json_array();
    for (int l = 0; l <= c->n_layer; l++) json_array_append_new(layers, dev_json(&layer[l]));
    json_t *o = json_pack("{s:s, s:s, s:i, s:i, s:I, s:o}", "model", ll_model_id(mf), "dtype",
                          "bf16", "bf16_native", ll_bf16_native(), "sequences", n, "tokens",
                          (json_int_t)tokens, "layers", layers);
    if (c->arch == LL_ARCH_CLIP) json_object_set_new(o, "projected", dev_json(&proj));
    char *str = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(6));
    puts(str);
    free(str);
    json_decref(o);
    ll_workspace_free(ws);
    ll_model_free(mf), ll_model_free(mb);
    return 0;
}

/* Prints the OpenBLAS kernel family in use (for the report and the peers). */
static int cmd_corename(void) {
    puts(ll_blas_corename());
    return 0;
}

/* Prints 1 if bf16 products use AVX512-BF16 here, 0 if not (bench.sh then
 * skips the bf16 timings). */
static int cmd_bf16native(void) {
    printf("%d\n", ll_bf16_native());
    return 0;
}

int main(int argc, char **argv) {
    /* the same OpenBLAS kernels as `layerlens serve` (may re-execute) */
    ll_blas_select_kernels(argv);
    if (argc < 2) {
        fprintf(stderr, "usage: llbench prep|dump|engine|forward|flops|ops|deviation|sgemm|corename|bf16native "
                "[options] (see llbench.c)\n");
        return 2;
    }
    args a;
    parse_args(&a, argc, argv);
    const char *cmd = argv[1];
    if (!strcmp(cmd, "prep")) return cmd_prep(&a);
    if (!strcmp(cmd, "dump")) return cmd_dump(&a);
    if (!strcmp(cmd, "engine")) return cmd_engine(&a);
    if (!strcmp(cmd, "forward")) return cmd_forward(&a);
    if (!strcmp(cmd, "flops")) return cmd_flops(&a);
    if (!strcmp(cmd, "corename")) return cmd_corename();
    if (!strcmp(cmd, "sgemm")) return cmd_sgemm(&a);
    if (!strcmp(cmd, "ops")) return cmd_ops(&a);
    if (!strcmp(cmd, "deviation")) return cmd_deviation(&a);
    if (!strcmp(cmd, "bf16native")) return cmd_bf16native();
    fprintf(stderr, "llbench: unknown command %s\n", cmd);
    return 2;
}
