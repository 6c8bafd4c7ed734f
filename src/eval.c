/* eval.c - the evaluation driver (eval.h): loads the tasks' data, embeds
 * each distinct text once per model, scores every selected layer and builds
 * the result JSON.
 *
 * An evaluation runs in three steps so progress has a known total:
 *   plan    load every task's data and list its distinct texts (shared by
 *           the models); total = texts x models.
 *   embed   per task and model, ll_eval_vectors (cache, then callback).
 *   score   per layer: cosines -> Spearman, effect sizes -> Pearson, or
 *           self-similarity; extras; then the comparison between models
 *           and the thresholds.
 * Vectors live only while their task is scored; the per-item values stay
 * until both models of the task are done (for the paired bootstrap). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eval_internal.h"
#include "layerlens/stats.h"

#define MAX_SKIPPED_LISTED 50

json_t *ev_real_or_null(int defined, double x) {
    return defined && isfinite(x) ? json_real(x) : json_null();
}

/* ---- the plan: one task's texts ----------------------------------------- */

typedef struct ev_task {
    const char *name;       /* result key */
    ll_task_kind kind;
    ll_bench *bench;
    int owned;              /* bench loaded here (not the request's) */
    ll_eval_variant variant;
    int n_texts;
    ll_eval_text *texts;
    int *a_idx, *b_idx;     /* per item: text of a and b (-1: none) */
    int attr_idx[2 * LL_VALNORM_N]; /* valnorm: pleasant then unpleasant */
    /* CWE: how each item's token is named (index[i], or i when NULL) */
    const long *index;
    long *index_owned;
    int index_mode;
    json_t *selection;      /* CWE: the selection_method object of the result */
} ev_task;

static void task_free(ev_task *t) {
    if (t->owned) ll_bench_free(t->bench);
    free(t->texts), free(t->a_idx), free(t->b_idx), free(t->index_owned);
    json_decref(t->selection);
    memset(t, 0, sizeof *t);
}

static ll_eval_variant task_variant(const ll_eval_request *r, ll_task_kind k) {
    static const ll_eval_variant sent[] = {LL_EV_SENT_EOS, LL_EV_SENT_LAST, LL_EV_SENT_MEAN};
    switch (k) {
    case LL_TASK_WORD_PAIRS:
    case LL_TASK_VALNORM: return r->word == LL_WORD_PLAIN ? LL_EV_WORD_PLAIN : LL_EV_WORD_BOS;
    case LL_TASK_SENTENCE_PAIRS:
    case LL_TASK_SENTENCES: return sent[r->sentence];
    case LL_TASK_CWE: return LL_EV_CWE;
    }
    return LL_EV_WORD_BOS;
}

/* Index of text s among t->texts[0..n), appending it when new. */
static int text_index(ev_task *t, const char *s) {
    for (int i = 0; i < t->n_texts; i++)
        if (!strcmp(t->texts[i].text, s)) return i;
    t->texts[t->n_texts] = (ll_eval_text){s, 0, 0};
    return t->n_texts++;
}

/* Lists the distinct texts of a task (CWE: every item, it has a position). */
static int task_plan(ev_task *t, ll_error *err) {
    ll_bench *b = t->bench;
    int extra = t->kind == LL_TASK_VALNORM ? 2 * LL_VALNORM_N : 0;
    t->a_idx = malloc((size_t)b->n * sizeof(int));
    t->b_idx = malloc((size_t)b->n * sizeof(int));
    t->texts = malloc((size_t)(2 * b->n + extra) * sizeof *t->texts);
    if (!t->a_idx || !t->b_idx || !t->texts) return ll_errorf(err, "out of memory");
    if (t->kind == LL_TASK_CWE) {
        for (int i = 0; i < b->n; i++) {
            /* reference: sentence k's token k mod n; sampled: a draw;
             * custom: the given index */
            t->texts[i] = (ll_eval_text){b->items[i].a, t->index ? t->index[i] : i,
                                         t->index_mode};
            t->a_idx[i] = i, t->b_idx[i] = -1;
        }
        t->n_texts = b->n;
        return 0;
    }
    ll_textset ts;
    if (ll_bench_unique(b, &ts, err)) return -1;
    for (int i = 0; i < ts.n; i++) t->texts[i] = (ll_eval_text){ts.texts[i], 0, 0};
    t->n_texts = ts.n;
    memcpy(t->a_idx, ts.a_idx, (size_t)b->n * sizeof(int));
    memcpy(t->b_idx, ts.b_idx, (size_t)b->n * sizeof(int));
    ll_textset_free(&ts);
    if (t->kind == LL_TASK_VALNORM)
        for (int i = 0; i < LL_VALNORM_N; i++) {
            t->attr_idx[i] = text_index(t, ll_valnorm_pleasant[i]);
            t->attr_idx[LL_VALNORM_N + i] = text_index(t, ll_valnorm_unpleasant[i]);
        }
    return 0;
}

/* ---- selfsim_words: the selections ------------------------------------- */

static uint64_t fnv1a64(const char *s) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
    return h;
}

typedef struct cwe_key {
    uint64_t key, draw;
    int idx; /* in the pool */
} cwe_key;

static int cmp_key(const void *a, const void *b) {
    const cwe_key *x = a, *y = b;
    if (x->key != y->key) return x->key < y->key ? -1 : 1;
    return (x->idx > y->idx) - (x->idx < y->idx);
}

static int cmp_idx(const void *a, const void *b) {
    const cwe_key *x = a, *y = b;
    return (x->idx > y->idx) - (x->idx < y->idx);
}

/* The sampled selection: each distinct STS-B sentence gets a key and a
 * token draw from splitmix64 over seed ^ FNV-1a(sentence); the n smallest
 * keys win (ties: pool order), kept in pool order.  Hashing the sentence
 * rather than shuffling positions makes a sentence's fate independent of
 * the rest of the pool: the same files, seed and n give the same tokens,
 * and a smaller n takes a subset of a larger one. */
static int cwe_sample(const ll_eval_env *env, const ll_eval_request *req, ev_task *t,
                      ll_error *err) {
    ll_bench *pool = ll_bench_load_stsb_pool(env->data_dir, err);
    if (!pool) return -1;
    int n_pool = pool->n, n = req->cwe_n < n_pool ? req->cwe_n : n_pool, rc = -1;
    cwe_key *keys = malloc((size_t)n_pool * sizeof *keys);
    int *idx = malloc((size_t)n * sizeof *idx);
    t->index_owned = malloc((size_t)n * sizeof *t->index_owned);
    if (!keys || !idx || !t->index_owned) {
        ll_errorf(err, "out of memory");
        goto done;
    }
    for (int i = 0; i < n_pool; i++) {
        uint64_t st = req->cwe_seed ^ fnv1a64(pool->items[i].a);
        keys[i].key = ll_splitmix64(&st);
        keys[i].draw = ll_splitmix64(&st);
        keys[i].idx = i;
    }
    qsort(keys, (size_t)n_pool, sizeof *keys, cmp_key);
    qsort(keys, (size_t)n, sizeof *keys, cmp_idx);
    for (int k = 0; k < n; k++) {
        idx[k] = keys[k].idx;
        t->index_owned[k] = (long)(keys[k].draw >> 1); /* >= 0 as a long */
    }
    if (!(t->bench = ll_bench_subset(pool, idx, n, err))) goto done;
    t->index = t->index_owned;
    t->index_mode = LL_EV_INDEX_DRAW;
    t->selection = json_pack("{s:s, s:b, s:i, s:i, s:i, s:b, s:I, s:s, s:s}", "name", "sampled",
                             "default", 1, "n_requested", req->cwe_n, "n_drawn", n,
                             "n_available", n_pool, "capped", req->cwe_n > n_pool, "seed",
                             (json_int_t)req->cwe_seed, "sentences",
                             "the distinct sentences of stsb/sts-train.csv, sts-dev.csv and "
                             "sts-test.csv, n drawn without replacement",
                             "token", "one per sentence, uniform over its text tokens at model "
                             "position >= 1 (position 0 and special tokens never drawn)");
    rc = 0;
done:
    ll_bench_free(pool);
    free(keys), free(idx);
    return rc;
}

/* The reference selection (the registry's selfsim_words file). */
static json_t *cwe_reference_json(const ll_bench *b) {
    return json_pack("{s:s, s:b, s:i, s:i, s:i, s:s, s:s}", "name", "reference", "default", 0,
                     "n_requested", b->task ? b->task->max_items : b->n, "n_drawn", b->n,
                     "n_available", b->n_available, "sentences",
                     "the first 2000 distinct sentences of stsb/sts-dev.csv (the fixture "
                     "reference's set)", "token", "sentence k with n text tokens: token k mod n");
}

static json_t *cwe_explicit_json(const ll_bench *b) {
    return json_pack("{s:s, s:b, s:i, s:s, s:s}", "name", "explicit", "default", 0, "n_drawn",
                     b->n, "sentences", "the request's items", "token",
                     "the given text token index");
}

/* ---- one model's run of one task ---------------------------------------- */

typedef struct ev_run {
    const ll_model *m;
    const ll_layer_sel *sel;
    int dims[LL_MAX_LAYERS + 3];
    float *vec[LL_MAX_LAYERS + 3];   /* [n_texts][dim] per layer item */
    unsigned char *ok;               /* [n_texts] */
    char (*reason)[LL_EVAL_REASON_MAX];
    ll_eval_pick *picks;
    int n_items;
    double *val;                     /* [sel->n][n_items] per-item values */
    unsigned char *vok;              /* [sel->n][n_items] value defined */
    int best;                        /* index into sel of the best layer, -1 */
    double best_score;
} ev_run;

static int run_alloc(ev_run *r, const ev_task *t, ll_error *err) {
    int n = t->n_texts, bad = 0;
    for (int j = 0; j < r->sel->n; j++) {
        r->dims[j] = ll_eval_item_dim(r->m, r->sel->items[j]);
        bad |= !(r->vec[j] = malloc((size_t)(n ? n : 1) * r->dims[j] * sizeof(float)));
    }
    r->n_items = t->bench->n;
    size_t nv = (size_t)r->sel->n * r->n_items;
    r->ok = calloc(n ? n : 1, 1);
    r->reason = calloc(n ? n : 1, sizeof *r->reason);
    r->picks = calloc(n ? n : 1, sizeof *r->picks);
    r->val = calloc(nv ? nv : 1, sizeof *r->val);
    r->vok = calloc(nv ? nv : 1, 1);
    r->best = -1;
    if (bad || !r->ok || !r->reason || !r->picks || !r->val || !r->vok)
        return ll_errorf(err, "out of memory for the vectors of %d texts", n);
    return 0;
}

static void run_free_vectors(ev_run *r) {
    for (int j = 0; j < LL_MAX_LAYERS + 3; j++) free(r->vec[j]), r->vec[j] = NULL;
}

static void run_free(ev_run *r) {
    run_free_vectors(r);
    free(r->ok), free(r->reason), free(r->picks), free(r->val), free(r->vok);
    memset(r, 0, sizeof *r);
}

static const float *vrow(const ev_run *r, int j, int text) {
    return r->vec[j] + (size_t)text * r->dims[j];
}

/* ---- statistics per layer ---------------------------------------------- */

typedef struct ev_layer {
    int n;
    int defined;
    double score;
    int ci_defined;
    double ci_lo, ci_hi;
    const char *reason;
    ll_selfsim_result plain, centered; /* over the task's vectors */
} ev_layer;

/* Self-similarity of rows idx[0..n) of layer j with a 95% interval from the
 * U-statistic's first-order (Hoeffding) variance: mean pairwise cosine U =
 * mean of h_i = mean_{j != i} cos(x_i, x_j), Var(U) ~ 4 Var(h) / n.  Both
 * h_i = (u_i . S - |u_i|^2) / (n - 1) come from S = sum of unit vectors, so
 * it costs two O(n d) passes like the score itself. */
static int selfsim_idx(const ev_run *r, int j, const int *idx, int n, ev_layer *out,
                       ll_error *err) {
    int d = r->dims[j];
    ll_selfsim a, c;
    if (ll_selfsim_init(&a, d, NULL, err)) return -1;
    for (int i = 0; i < n; i++) ll_selfsim_add(&a, vrow(r, j, idx[i]));
    ll_selfsim_finish(&a, &out->plain);
    double *mean = malloc((size_t)d * sizeof *mean);
    if (!mean) {
        ll_selfsim_free(&a);
        return ll_errorf(err, "out of memory");
    }
    ll_selfsim_mean(&a, mean);
    int rc = ll_selfsim_init(&c, d, mean, err);
    free(mean);
    if (rc) {
        ll_selfsim_free(&a);
        return -1;
    }
    for (int i = 0; i < n; i++) ll_selfsim_add(&c, vrow(r, j, idx[i]));
    ll_selfsim_finish(&c, &out->centered);
    ll_selfsim_free(&c);
    out->ci_defined = 0;
    if (out->plain.defined && n >= 3) {
        double sum = 0, sum2 = 0;
        for (int i = 0; i < n; i++) {
            const float *x = vrow(r, j, idx[i]);
            double nn = 0, dot = 0;
            for (int k = 0; k < d; k++) nn += (double)x[k] * x[k], dot += x[k] * a.sum_unit[k];
            double h = nn > 0 ? (dot / sqrt(nn) - 1.0) / (n - 1) : 0;
            sum += h, sum2 += h * h;
        }
        double mh = sum / n, var = (sum2 - n * mh * mh) / (n - 1);
        double se = sqrt((var > 0 ? var : 0) * 4.0 / n);
        out->ci_lo = out->plain.self_similarity - LL_Z95 * se;
        out->ci_hi = out->plain.self_similarity + LL_Z95 * se;
        out->ci_defined = 1;
    }
    ll_selfsim_free(&a);
    return 0;
}

/* Self-similarity tasks: the score is the self-similarity of the item rows. */
static int score_selfsim(const ev_task *t, ev_run *r, int j, ev_layer *L, ll_error *err) {
    int *idx = malloc((size_t)(r->n_items ? r->n_items : 1) * sizeof *idx), n = 0;
    if (!idx) return ll_errorf(err, "out of memory");
    for (int i = 0; i < r->n_items; i++)
        if (r->ok[t->a_idx[i]]) idx[n++] = t->a_idx[i];
    int rc = selfsim_idx(r, j, idx, n, L, err);
    free(idx);
    L->n = n;
    L->defined = L->plain.defined;
    L->score = L->plain.self_similarity;
    L->reason = L->plain.reason;
    if (L->defined && !L->ci_defined) L->reason = "an interval needs at least 3 vectors";
    return rc;
}

/* Extras of the other tasks: over the distinct texts embedded. */
static int extras_texts(const ev_task *t, const ev_run *r, int j, ev_layer *L, ll_error *err) {
    int *idx = malloc((size_t)(t->n_texts ? t->n_texts : 1) * sizeof *idx), n = 0;
    if (!idx) return ll_errorf(err, "out of memory");
    for (int i = 0; i < t->n_texts; i++)
        if (r->ok[i]) idx[n++] = i;
    ev_layer tmp = {0};
    int rc = selfsim_idx(r, j, idx, n, &tmp, err);
    L->plain = tmp.plain, L->centered = tmp.centered;
    free(idx);
    return rc;
}

static void set_corr(ev_layer *L, const ll_corr *c) {
    L->n = c->n;
    L->defined = c->defined;
    L->score = c->r;
    L->ci_defined = c->ci_defined;
    L->ci_lo = c->ci_lo, L->ci_hi = c->ci_hi;
    L->reason = c->reason;
}

/* Pairs: cosine of each item's two vectors, Spearman against gold. */
static int score_pairs(const ev_task *t, ev_run *r, int j, ev_layer *L, ll_error *err) {
    double *x = malloc((size_t)(r->n_items ? r->n_items : 1) * sizeof *x);
    double *y = malloc((size_t)(r->n_items ? r->n_items : 1) * sizeof *y);
    if (!x || !y) {
        free(x), free(y);
        return ll_errorf(err, "out of memory");
    }
    int n = 0;
    double *val = r->val + (size_t)j * r->n_items;
    unsigned char *vok = r->vok + (size_t)j * r->n_items;
    for (int i = 0; i < r->n_items; i++) {
        int a = t->a_idx[i], b = t->b_idx[i];
        if (!r->ok[a] || !r->ok[b]) continue;
        val[i] = ll_cosine(vrow(r, j, a), vrow(r, j, b), r->dims[j]);
        vok[i] = 1;
        x[n] = val[i], y[n] = t->bench->items[i].gold, n++;
    }
    ll_corr c;
    int rc = ll_spearman(x, y, n, &c);
    free(x), free(y);
    if (rc < 0) return ll_errorf(err, "out of memory");
    set_corr(L, &c);
    return 0;
}

/* ValNorm: effect size of each word against the attribute sets, Pearson
 * against gold.  A word whose effect size is undefined (all its cosines
 * equal) is left out of that layer. */
static int score_valnorm(const ev_task *t, ev_run *r, int j, ev_layer *L, ll_error *err) {
    double *x = malloc((size_t)(r->n_items ? r->n_items : 1) * sizeof *x);
    double *y = malloc((size_t)(r->n_items ? r->n_items : 1) * sizeof *y);
    if (!x || !y) {
        free(x), free(y);
        return ll_errorf(err, "out of memory");
    }
    int n = 0, d = r->dims[j];
    double *val = r->val + (size_t)j * r->n_items;
    unsigned char *vok = r->vok + (size_t)j * r->n_items;
    for (int i = 0; i < r->n_items; i++) {
        int w = t->a_idx[i];
        if (!r->ok[w]) continue;
        double p[LL_VALNORM_N], u[LL_VALNORM_N];
        int np = 0, nu = 0;
        for (int k = 0; k < 2 * LL_VALNORM_N; k++) {
            int a = t->attr_idx[k];
            if (!r->ok[a]) continue;
            double c = ll_cosine(vrow(r, j, w), vrow(r, j, a), d);
            if (k < LL_VALNORM_N) p[np++] = c; else u[nu++] = c;
        }
        if (ll_effect_size(p, np, u, nu, &val[i])) continue;
        vok[i] = 1;
        x[n] = val[i], y[n] = t->bench->items[i].gold, n++;
    }
    ll_corr c;
    ll_pearson(x, y, n, &c);
    free(x), free(y);
    set_corr(L, &c);
    return 0;
}

static int score_layer(const ev_task *t, ev_run *r, int j, ev_layer *L, ll_error *err) {
    memset(L, 0, sizeof *L);
    switch (t->kind) {
    case LL_TASK_WORD_PAIRS:
    case LL_TASK_SENTENCE_PAIRS:
        return score_pairs(t, r, j, L, err) || extras_texts(t, r, j, L, err) ? -1 : 0;
    case LL_TASK_VALNORM:
        return score_valnorm(t, r, j, L, err) || extras_texts(t, r, j, L, err) ? -1 : 0;
    case LL_TASK_SENTENCES:
    case LL_TASK_CWE:
        return score_selfsim(t, r, j, L, err);
    }
    return 0;
}

/* ---- JSON of one model's run ------------------------------------------- */

static json_t *layer_key(int item) {
    if (item >= 0) return json_integer(item);
    return json_string(item == LL_LAYER_FINAL ? "final" : "projected");
}

static json_t *layer_json(int item, const ev_layer *L) {
    json_t *o = json_object();
    json_object_set_new(o, "layer", layer_key(item));
    json_object_set_new(o, "score", ev_real_or_null(L->defined, L->score));
    json_object_set_new(o, "ci", L->defined && L->ci_defined
                                     ? json_pack("[f, f]", L->ci_lo, L->ci_hi) : json_null());
    json_object_set_new(o, "n", json_integer(L->n));
    if (L->reason && (!L->defined || !L->ci_defined))
        json_object_set_new(o, "reason", json_string(L->reason));
    json_object_set_new(o, "mean_norm", json_real(L->plain.mean_norm));
    json_object_set_new(o, "centered_self_similarity",
                        ev_real_or_null(L->centered.defined, L->centered.self_similarity));
    return o;
}

static int lower_is_better(ll_task_kind k) {
    return k == LL_TASK_SENTENCES || k == LL_TASK_CWE;
}

/* Items of the task this model could not use, with the reason. */
static json_t *skipped_json(const ev_task *t, const ev_run *r, int *n_skipped) {
    json_t *a = json_array();
    int n = 0;
    for (int i = 0; i < r->n_items; i++) {
        int ti[2] = {t->a_idx[i], t->b_idx[i]};
        for (int k = 0; k < 2; k++) {
            if (ti[k] < 0 || r->ok[ti[k]]) continue;
            if (n++ < MAX_SKIPPED_LISTED) {
                json_t *e = json_pack("{s:i, s:i, s:s, s:s}", "item", i, "line",
                                      t->bench->items[i].line, "text", t->texts[ti[k]].text,
                                      "reason", r->reason[ti[k]]);
                if (t->bench->item_file) /* lines of several files: say which */
                    json_object_set_new(e, "file", json_string(
                        t->bench->files[t->bench->item_file[i]].path));
                json_array_append_new(a, e);
            }
            break;
        }
    }
    for (int k = 0; t->kind == LL_TASK_VALNORM && k < 2 * LL_VALNORM_N; k++) {
        int ti = t->attr_idx[k];
        if (r->ok[ti]) continue;
        json_array_append_new(a, json_pack("{s:s, s:s, s:s}", "attribute",
                                           k < LL_VALNORM_N ? "pleasant" : "unpleasant",
                                           "text", t->texts[ti].text, "reason", r->reason[ti]));
    }
    *n_skipped = n;
    return a;
}

/* Per-item values (details): [layer][item], null where undefined. */
static json_t *per_item_json(const ev_run *r) {
    json_t *all = json_array();
    for (int j = 0; j < r->sel->n; j++) {
        json_t *row = json_array();
        for (int i = 0; i < r->n_items; i++) {
            size_t k = (size_t)j * r->n_items + i;
            json_array_append_new(row, ev_real_or_null(r->vok[k], r->val[k]));
        }
        json_array_append_new(all, row);
    }
    return all;
}

/* The CWE token selection (details): per sentence its text, n, i, the
 * model position of the token and its id. */
static json_t *selection_json(const ev_task *t, const ev_run *r) {
    json_t *n = json_array(), *idx = json_array(), *id = json_array(), *pos = json_array();
    json_t *text = json_array();
    for (int i = 0; i < t->n_texts; i++) {
        int ok = r->ok[i];
        json_array_append_new(text, json_string(t->texts[i].text));
        json_array_append_new(n, ok ? json_integer(r->picks[i].n_text) : json_null());
        json_array_append_new(idx, ok ? json_integer(r->picks[i].token_index) : json_null());
        json_array_append_new(pos, ok ? json_integer(r->picks[i].begin) : json_null());
        json_array_append_new(id, ok ? json_integer(r->picks[i].token_id) : json_null());
    }
    return json_pack("{s:o, s:o, s:o, s:o, s:o}", "sentence", text, "n_text_tokens", n,
                     "token_index", idx, "position", pos, "token_id", id);
}

static const char *ci_method(ll_task_kind k) {
    return lower_is_better(k) ? "normal approximation of the U-statistic (Hoeffding variance)"
                              : "Fisher z";
}

static int run_json(const ev_task *t, ev_run *r, int details, json_t **out, ll_error *err) {
    json_t *layers = json_array();
    int lower = lower_is_better(t->kind), n_used = 0;
    for (int j = 0; j < r->sel->n; j++) {
        ev_layer L;
        if (score_layer(t, r, j, &L, err)) {
            json_decref(layers);
            return -1;
        }
        json_array_append_new(layers, layer_json(r->sel->items[j], &L));
        if (L.n > n_used) n_used = L.n;
        if (r->sel->items[j] < 0 || !L.defined) continue;
        if (r->best < 0 || (lower ? L.score < r->best_score : L.score > r->best_score))
            r->best = j, r->best_score = L.score;
    }
    int n_trunc = 0, n_skipped = 0;
    for (int i = 0; i < t->n_texts; i++) n_trunc += r->ok[i] && r->picks[i].truncated;
    json_t *o = json_object();
    json_object_set_new(o, "metric", json_string(ll_task_kind_metric(t->kind)));
    json_object_set_new(o, "variant", json_string(ll_eval_variant_name(r->m, t->variant)));
    json_object_set_new(o, "n", json_integer(n_used));
    json_object_set_new(o, "best_layer",
                        r->best >= 0 ? json_integer(r->sel->items[r->best]) : json_null());
    json_object_set_new(o, "best_score", ev_real_or_null(r->best >= 0, r->best_score));
    json_object_set_new(o, "ci_method", json_string(ci_method(t->kind)));
    json_object_set_new(o, "layers", layers);
    json_t *sk = skipped_json(t, r, &n_skipped);
    json_object_set_new(o, "n_skipped", json_integer(n_skipped));
    json_object_set_new(o, "skipped", sk);
    json_object_set_new(o, "n_texts", json_integer(t->n_texts));
    json_object_set_new(o, "n_truncated", json_integer(n_trunc));
    if (t->selection) json_object_set(o, "selection_method", t->selection);
    if (details && !lower) json_object_set_new(o, "per_item", per_item_json(r));
    if (details && t->kind == LL_TASK_CWE) json_object_set_new(o, "selection", selection_json(t, r));
    *out = o;
    return 0;
}

/* ---- the comparison of two models ------------------------------------- */

/* Paired bootstrap of clip - gpt2 at their best layers, over the items both
 * scored there.  NULL (no entry) when it does not apply. */
static json_t *compare_json(const ev_task *t, const ev_run *a, const ev_run *b,
                            const ll_eval_request *req) {
    if (!ll_task_kind_has_gold(t->kind) || req->bootstrap <= 0 || a->best < 0 || b->best < 0)
        return NULL;
    int n = t->bench->n, k = 0;
    double *x = malloc((size_t)n * sizeof *x), *y = malloc((size_t)n * sizeof *y);
    double *g = malloc((size_t)n * sizeof *g);
    json_t *o = NULL;
    if (!x || !y || !g) goto done;
    const double *va = a->val + (size_t)a->best * n, *vb = b->val + (size_t)b->best * n;
    const unsigned char *oa = a->vok + (size_t)a->best * n, *ob = b->vok + (size_t)b->best * n;
    for (int i = 0; i < n; i++)
        if (oa[i] && ob[i]) x[k] = va[i], y[k] = vb[i], g[k] = t->bench->items[i].gold, k++;
    ll_corr_kind kind = t->kind == LL_TASK_VALNORM ? LL_CORR_PEARSON : LL_CORR_SPEARMAN;
    ll_bootstrap bs;
    ll_error err = {{0}};
    o = json_pack("{s:s, s:s, s:o, s:o, s:i, s:I}", "a", ll_model_id(a->m), "b",
                  ll_model_id(b->m), "layer_a", json_integer(a->sel->items[a->best]),
                  "layer_b", json_integer(b->sel->items[b->best]), "n", k, "seed",
                  (json_int_t)req->seed);
    if (ll_paired_bootstrap(kind, x, y, g, k, req->bootstrap, req->seed, &bs, &err)) {
        json_object_set_new(o, "difference", json_null());
        json_object_set_new(o, "ci", json_null());
        json_object_set_new(o, "reason", json_string(err.msg));
        goto done;
    }
    json_object_set_new(o, "difference", json_real(bs.observed));
    json_object_set_new(o, "ci", json_pack("[f, f]", bs.ci_lo, bs.ci_hi));
    json_object_set_new(o, "mean", json_real(bs.mean));
    json_object_set_new(o, "n_resamples", json_integer(bs.n_resamples));
    json_object_set_new(o, "n_valid", json_integer(bs.n_valid));
done:
    free(x), free(y), free(g);
    return o;
}

/* ---- thresholds ----------------------------------------------------------- */

static void check_thresholds(const ll_eval_request *req, json_t *result) {
    if (!req->thresholds) return;
    json_t *checks = json_array(), *results = json_object_get(result, "results");
    int passed = 1;
    const char *task, *model;
    json_t *per, *x;
    json_object_foreach(req->thresholds, task, per) {
        json_object_foreach(per, model, x) {
            json_t *mr = json_object_get(json_object_get(results, task), model);
            json_t *best = json_object_get(mr, "best_score");
            const char *metric = json_string_value(json_object_get(mr, "metric"));
            int lower = metric && !strcmp(metric, "self_similarity");
            double thr = json_number_value(x);
            int ok = json_is_number(best) &&
                     (lower ? json_number_value(best) <= thr : json_number_value(best) >= thr);
            json_t *c = json_pack("{s:s, s:s, s:f, s:s, s:O, s:O, s:b}", "task", task, "model",
                                  model, "threshold", thr, "rule", lower ? "best <= threshold"
                                  : "best >= threshold", "best_layer",
                                  mr ? json_object_get(mr, "best_layer") : json_null(),
                                  "best_score", best ? best : json_null(), "passed", ok);
            if (!json_is_number(best))
                json_object_set_new(c, "reason", json_string("no layer has a defined score"));
            json_array_append_new(checks, c);
            passed &= ok;
        }
    }
    json_object_set_new(result, "passed", json_boolean(passed));
    json_object_set_new(result, "checks", checks);
}

/* ---- running ----------------------------------------------------------- */

/* Counts what reaches the embedding callback (for "timing"). */
typedef struct ev_counter {
    ll_eval_embed_fn fn;
    void *ctx;
    long calls, texts, tokens;
    double ms;
} ev_counter;

static int counting_embed(void *ctx, const ll_eval_batch *b, ll_error *err) {
    ev_counter *c = ctx;
    double t0 = ev_now_ms();
    int rc = c->fn(c->ctx, b, err);
    c->ms += ev_now_ms() - t0;
    c->calls++;
    c->texts += b->n;
    for (int i = 0; i < b->n; i++) c->tokens += b->inputs[i].len;
    return rc;
}

static int load_tasks(const ll_eval_env *env, const ll_eval_request *req, ev_task *tasks,
                      int *n_tasks, ll_error *err) {
    int n = 0;
    for (int i = 0; i < req->n_tasks; i++) {
        ev_task *t = &tasks[n++];
        t->name = req->tasks[i]->name;
        t->kind = req->tasks[i]->kind;
        t->owned = 1;
        *n_tasks = n;
        if (t->kind == LL_TASK_CWE && req->cwe == LL_CWE_SAMPLED) {
            if (cwe_sample(env, req, t, err)) return -1;
        } else {
            if (!(t->bench = ll_bench_load(env->data_dir, req->tasks[i], err))) return -1;
            if (t->kind == LL_TASK_CWE) {
                t->index_mode = LL_EV_INDEX_MOD;
                t->selection = cwe_reference_json(t->bench);
            }
        }
        t->variant = task_variant(req, t->kind);
        if (task_plan(t, err)) return -1;
    }
    ll_bench *custom[2] = {req->pairs, req->items};
    for (int c = 0; c < 2; c++) {
        if (!custom[c]) continue;
        ev_task *t = &tasks[n++];
        *n_tasks = n;
        t->name = c == 0 ? "custom_pairs" : "custom_items";
        t->bench = custom[c]; /* the request's: not owned */
        t->kind = custom[c]->kind;
        t->variant = task_variant(req, t->kind);
        if (t->kind == LL_TASK_CWE) {
            t->index = req->item_index;
            t->index_mode = LL_EV_INDEX_GIVEN;
            t->selection = cwe_explicit_json(t->bench);
        }
        if (task_plan(t, err)) return -1;
    }
    *n_tasks = n;
    return 0;
}

/* Embeds and scores one task for every model; adds its results. */
static int run_task(const ll_eval_env *env, const ll_eval_request *req, ev_task *t,
                    long *done, long total, json_t *results, json_t *comparisons,
                    ll_error *err) {
    ev_run runs[2] = {{0}};
    json_t *per_model = json_object();
    int rc = 0;
    for (int k = 0; k < req->n_models && rc == 0; k++) {
        ev_run *r = &runs[k];
        r->m = req->models[k];
        r->sel = &req->sel[k];
        if ((rc = run_alloc(r, t, err))) break;
        rc = ll_eval_vectors(env, r->m, t->variant, t->texts, t->n_texts, r->sel, r->vec,
                             r->picks, r->ok, r->reason, done, total, err);
        if (rc) break;
        json_t *mj;
        if ((rc = run_json(t, r, req->details, &mj, err))) break;
        json_object_set_new(per_model, ll_model_id(r->m), mj);
        run_free_vectors(r);
    }
    if (rc == 0) {
        json_object_set_new(results, t->name, json_incref(per_model));
        /* clip - gpt2 when both ran: the paper's question */
        if (req->n_models == 2) {
            int ic = ll_model_config(runs[0].m)->arch == LL_ARCH_CLIP ? 0 : 1;
            json_t *c = compare_json(t, &runs[ic], &runs[1 - ic], req);
            if (c) json_object_set_new(comparisons, t->name, c);
        }
    }
    json_decref(per_model);
    run_free(&runs[0]), run_free(&runs[1]);
    return rc;
}

/* The methods as run, defaults filled in. */
static json_t *method_json(const ll_eval_request *req) {
    static const char *const sent[] = {"eos", "last", "mean"};
    json_t *o = json_pack("{s:s, s:s, s:s}", "word", req->word == LL_WORD_PLAIN ? "plain" : "bos",
                          "sentence", sent[req->sentence], "selfsim_words",
                          req->cwe == LL_CWE_SAMPLED ? "sampled" : "reference");
    if (req->cwe == LL_CWE_SAMPLED) {
        json_object_set_new(o, "selfsim_words_n", json_integer(req->cwe_n));
        json_object_set_new(o, "selfsim_words_seed", json_integer((json_int_t)req->cwe_seed));
    }
    return o;
}

static json_t *data_json(const ev_task *tasks, int n) {
    json_t *o = json_object();
    for (int i = 0; i < n; i++) {
        json_t *info = ll_bench_info_json(tasks[i].bench);
        if (info) json_object_set_new(o, tasks[i].name, info);
    }
    return o;
}

int ll_eval_run(const ll_eval_env *env_in, const ll_eval_request *req, json_t **out,
                ll_error *err) {
    double t0 = ev_now_ms();
    ev_counter counter = {env_in->embed, env_in->embed_ctx, 0, 0, 0, 0};
    ll_eval_env env = *env_in;
    env.embed = counting_embed, env.embed_ctx = &counter;
    ev_task tasks[LL_EVAL_MAX_TASKS + 2];
    memset(tasks, 0, sizeof tasks);
    int n_tasks = 0, rc = -1;
    json_t *result = NULL, *results = json_object(), *comparisons = json_object();
    *out = NULL;
    if (load_tasks(&env, req, tasks, &n_tasks, err)) goto done;
    long total = 0, done = 0;
    for (int i = 0; i < n_tasks; i++) total += (long)tasks[i].n_texts * req->n_models;
    if (env.progress) env.progress(env.progress_ctx, 0, total);
    double t_plan = ev_now_ms();
    for (int i = 0; i < n_tasks; i++)
        if ((rc = run_task(&env, req, &tasks[i], &done, total, results, comparisons, err)))
            goto done;
    double t_end = ev_now_ms();
    result = json_object();
    json_object_set_new(result, "results", results), results = NULL;
    json_object_set_new(result, "comparisons", comparisons), comparisons = NULL;
    json_object_set_new(result, "data", data_json(tasks, n_tasks));
    check_thresholds(req, result);
    json_t *models = json_object();
    for (int k = 0; k < req->n_models; k++) {
        const ll_config *cfg = ll_model_config(req->models[k]);
        /* the weight format changes the scores (bf16: see docs/http-api.md) */
        json_object_set_new(models, ll_model_id(req->models[k]),
                            json_pack("{s:i, s:i, s:s}", "n_layer", cfg->n_layer, "width",
                                      cfg->width, "dtype",
                                      ll_weight_type_name(ll_model_dtype(req->models[k]))));
    }
    json_object_set_new(result, "models", models);
    json_object_set_new(result, "method", method_json(req));
    json_object_set_new(result, "timing_ms", json_real(t_end - t0));
    json_object_set_new(result, "timing",
                        json_pack("{s:f, s:f, s:f, s:I, s:I, s:I, s:I}", "load_ms", t_plan - t0,
                                  "embed_ms", counter.ms, "score_ms",
                                  t_end - t_plan - counter.ms, "texts", (json_int_t)total,
                                  "texts_embedded", (json_int_t)counter.texts, "tokens_embedded",
                                  (json_int_t)counter.tokens, "embed_calls",
                                  (json_int_t)counter.calls));
    *out = result;
    rc = 0;
done:
    for (int i = 0; i < n_tasks; i++) task_free(&tasks[i]);
    json_decref(results), json_decref(comparisons);
    return rc;
}
