/* eval_embed.c - from benchmark texts to vectors: the methods' model inputs,
 * pooling of forward-pass states, the in-process embedder, and
 * ll_eval_vectors (cache first, then the embedding callback in chunks). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "eval_internal.h"

/* ---- methods ------------------------------------------------------------ */

static int is_clip(const ll_model *m) {
    return ll_model_config(m)->arch == LL_ARCH_CLIP;
}

ll_eval_variant ll_eval_variant_for(const ll_model *m, ll_eval_variant v) {
    /* CLIP's tokenizer always adds its start and end tokens: one word method */
    if (is_clip(m) && v == LL_EV_WORD_PLAIN) return LL_EV_WORD_BOS;
    return v;
}

const char *ll_eval_variant_name(const ll_model *m, ll_eval_variant v) {
    static const char *const clip[] = {"clip", "clip", "clip", "clip_last", "clip_mean", "clip"};
    static const char *const gpt2[] = {"gpt2_bos", "gpt2_plain", "gpt2", "gpt2_last",
                                       "gpt2_mean", "gpt2"};
    return is_clip(m) ? clip[v] : gpt2[v];
}

int ll_eval_item_dim(const ll_model *m, int item) {
    const ll_config *cfg = ll_model_config(m);
    return item == LL_LAYER_PROJECTED ? cfg->proj_dim : cfg->width;
}

/* GPT-2's special tokens per method; CLIP ignores bos/eos and adds its own. */
static ll_encode_opts encode_opts(ll_eval_variant v) {
    int special = v == LL_EV_WORD_BOS || v == LL_EV_SENT_EOS;
    return (ll_encode_opts){special, special, 1};
}

/* Where the vector is, from the text's token range [b, e) of a T-token
 * input.  1 with a reason when the method has nothing to take. */
static int pick_rows(ll_eval_variant v, const ll_eval_text *t, int T, int b,
                     int e, ll_eval_pick *p, ll_error *err) {
    int n = e - b;
    p->n_text = n;
    p->token_index = -1;
    if (v == LL_EV_SENT_EOS) { /* the end token: last of the input */
        p->begin = T - 1, p->end = T;
        return 0;
    }
    if (n <= 0) {
        ll_errorf(err, "the text has no tokens of its own");
        return 1;
    }
    switch (v) {
    case LL_EV_SENT_MEAN:
        p->begin = b, p->end = e;
        return 0;
    case LL_EV_CWE: {
        long i = t->index;
        if (t->index_mode == LL_EV_INDEX_MOD) i = ((i % n) + n) % n;
        if (t->index_mode == LL_EV_INDEX_DRAW) {
            /* never model position 0 (GPT-2's first token, whose states are
             * an outlier at every layer) nor a special token: the text
             * tokens from position max(b, 1) on */
            int lo = b >= 1 ? 0 : 1;
            if (n - lo <= 0) {
                ll_errorf(err, "no token to draw: the text has %d token%s and position 0 "
                          "is never drawn", n, n == 1 ? "" : "s");
                return 1;
            }
            i = lo + (t->index < 0 ? 0 : t->index) % (n - lo);
        }
        if (i < 0 || i >= n) {
            ll_errorf(err, "token index %ld is out of range (the text has %d tokens)",
                      t->index, n);
            return 1;
        }
        p->token_index = (int)i;
        p->begin = b + (int)i, p->end = p->begin + 1;
        return 0;
    }
    default: /* word methods and "last": the last token of the text */
        p->begin = e - 1, p->end = e;
        return 0;
    }
}

/* Whether an input that fills the context was cut to it (rare: encode
 * again without truncation). */
static int was_cut(const ll_model *m, const ll_encode_opts *eo, const char *text) {
    ll_encode_opts strict = *eo;
    strict.truncate = 0;
    ll_tokens tk = {0};
    int rc = ll_model_encode(m, text, strlen(text), &strict, &tk, NULL, NULL, NULL);
    ll_tokens_free(&tk);
    return rc == LL_ETOOLONG;
}

int ll_eval_input_build(const ll_model *m, ll_eval_variant v,
                        const ll_eval_text *t, ll_tokens *tk,
                        ll_eval_pick *pick, ll_error *err) {
    v = ll_eval_variant_for(m, v);
    ll_encode_opts eo = encode_opts(v);
    int first = tk->n, b = 0, e = 0;
    memset(pick, 0, sizeof *pick);
    if (ll_model_encode(m, t->text, strlen(t->text), &eo, tk, &b, &e, err)) {
        tk->n = first;
        return 1;
    }
    int T = tk->n - first;
    if (T <= 0) {
        ll_errorf(err, "the text gives no tokens");
        return 1;
    }
    pick->truncated = T == ll_model_config(m)->n_ctx && was_cut(m, &eo, t->text);
    if (pick_rows(v, t, T, b, e, pick, err)) {
        tk->n = first;
        return 1;
    }
    pick->token_id = tk->ids[first + pick->begin];
    return 0;
}

/* ---- pooling ------------------------------------------------------------ */

int ll_eval_pool(const ll_states *st, int s, const ll_eval_input *in,
                 const ll_layer_sel *sel, float *const *out, int row,
                 ll_error *err) {
    int C = st->width;
    for (int j = 0; j < sel->n; j++) {
        int item = sel->items[j];
        if (item == LL_LAYER_PROJECTED) {
            if (!st->projected) return ll_errorf(err, "projected embedding not computed");
            memcpy(out[j] + (size_t)row * st->proj_dim,
                   st->projected + (size_t)s * st->proj_dim, st->proj_dim * sizeof(float));
            continue;
        }
        const float *base = item >= 0 ? st->layer[item] : st->final;
        if (!base) return ll_errorf(err, "layer %d not computed", item);
        const float *rows = base + (size_t)st->seq_start[s] * C;
        float *dst = out[j] + (size_t)row * C;
        if (in->end - in->begin == 1) {
            memcpy(dst, rows + (size_t)in->begin * C, C * sizeof(float));
            continue;
        }
        for (int c = 0; c < C; c++) { /* mean in double: length-independent */
            double acc = 0;
            for (int t = in->begin; t < in->end; t++) acc += rows[(size_t)t * C + c];
            dst[c] = (float)(acc / (in->end - in->begin));
        }
    }
    return 0;
}

/* ---- in-process embedder -------------------------------------------------- */

struct ll_eval_local {
    ll_workspace *ws;
    int max_tokens;
    long forwards, tokens;
};

ll_eval_local *ll_eval_local_new(int max_batch_tokens, ll_error *err) {
    ll_eval_local *l = calloc(1, sizeof *l);
    if (l) l->ws = ll_workspace_new();
    if (!l || !l->ws) {
        free(l);
        ll_errorf(err, "out of memory");
        return NULL;
    }
    l->max_tokens = max_batch_tokens > 0 ? max_batch_tokens : LL_EVAL_CHUNK_TOKENS;
    return l;
}

void ll_eval_local_free(ll_eval_local *l) {
    if (!l) return;
    ll_workspace_free(l->ws);
    free(l);
}

long ll_eval_local_forwards(const ll_eval_local *l) { return l->forwards; }
long ll_eval_local_tokens(const ll_eval_local *l) { return l->tokens; }

/* One forward pass over inputs[i0..i1), pooled into rows i0..i1 of out. */
static int local_pass(ll_eval_local *l, const ll_eval_batch *b, int i0, int i1,
                      const ll_forward_req *req, ll_error *err) {
    int k = i1 - i0;
    ll_seq *seqs = calloc((size_t)(k > 0 ? k : 1), sizeof *seqs);
    if (!seqs) return ll_errorf(err, "out of memory");
    for (int i = 0; i < k; i++) seqs[i] = (ll_seq){b->inputs[i0 + i].ids, b->inputs[i0 + i].len};
    ll_states st = {0};
    int rc = ll_forward(b->model, l->ws, seqs, k, req, &st, err);
    for (int i = 0; rc == 0 && i < k; i++)
        rc = ll_eval_pool(&st, i, &b->inputs[i0 + i], b->sel, b->out, i0 + i, err);
    if (rc == 0) l->forwards++, l->tokens += st.n_tok;
    ll_states_free(&st);
    free(seqs);
    return rc;
}

int ll_eval_local_embed(void *ctx, const ll_eval_batch *b, ll_error *err) {
    ll_eval_local *l = ctx;
    ll_forward_req req;
    ll_layer_sel_request(b->sel, ll_model_config(b->model), &req);
    for (int i = 0; i < b->n;) {
        if (b->cancel && atomic_load(b->cancel)) return LL_EVAL_CANCELLED;
        /* as many inputs as fit in max_tokens, at least one */
        int j = i, tokens = 0;
        while (j < b->n && (j == i || tokens + b->inputs[j].len <= l->max_tokens))
            tokens += b->inputs[j++].len;
        if (local_pass(l, b, i, j, &req, err)) return -1;
        i = j;
    }
    return 0;
}

/* ---- vectors of many texts ---------------------------------------------- */

double ev_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* The texts still to embed, as one chunk of inputs for the callback. */
typedef struct chunk {
    ll_tokens tk;
    ll_eval_input *inputs;
    int *rows;   /* text index of each input */
    size_t *off; /* start of each input's ids in tk (tk.ids may move) */
    int n, cap, tokens;
    float *out[LL_MAX_LAYERS + 3];
} chunk;

static int chunk_init(chunk *c, int cap, const ll_model *m, const ll_layer_sel *sel,
                      ll_error *err) {
    memset(c, 0, sizeof *c);
    c->cap = cap;
    c->inputs = malloc((size_t)cap * sizeof *c->inputs);
    c->rows = malloc((size_t)cap * sizeof *c->rows);
    c->off = malloc((size_t)cap * sizeof *c->off);
    int bad = !c->inputs || !c->rows || !c->off;
    for (int j = 0; j < sel->n && !bad; j++)
        bad = !(c->out[j] = malloc((size_t)cap * ll_eval_item_dim(m, sel->items[j]) *
                                   sizeof(float)));
    return bad ? ll_errorf(err, "out of memory for the evaluation's vectors") : 0;
}

static void chunk_free(chunk *c) {
    ll_tokens_free(&c->tk);
    free(c->inputs), free(c->rows), free(c->off);
    for (int j = 0; j < LL_MAX_LAYERS + 3; j++) free(c->out[j]);
}

/* Runs the chunk through the callback and hands each vector to its text's
 * rows in out (and to the cache). */
static int chunk_flush(chunk *c, const ll_eval_env *env, const ll_model *m,
                       const ll_layer_sel *sel, const int *dims, float *const *out,
                       ev_key *key, const ll_eval_text *texts, ll_error *err) {
    if (c->n == 0) return 0;
    for (int i = 0; i < c->n; i++) c->inputs[i].ids = c->tk.ids + c->off[i];
    ll_eval_batch b = {m, c->inputs, c->n, sel, c->out, env->cancel};
    int rc = env->embed(env->embed_ctx, &b, err);
    if (rc) return rc;
    for (int i = 0; i < c->n; i++) {
        int r = c->rows[i];
        for (int j = 0; j < sel->n; j++)
            memcpy(out[j] + (size_t)r * dims[j], c->out[j] + (size_t)i * dims[j],
                   dims[j] * sizeof(float));
        if (env->cache && ev_key_text(key, &texts[r]) == 0)
            ev_cache_put(env->cache, key, sel, dims, out, r);
    }
    c->n = 0, c->tokens = 0;
    ll_tokens_clear(&c->tk);
    return 0;
}

static void report(const ll_eval_env *env, long done, long total) {
    if (env->progress) env->progress(env->progress_ctx, done, total);
}

/* Queues one text's input (its tokens in one) into the chunk, flushing the
 * chunk first when the text would overflow it. */
static int chunk_add(chunk *c, const ll_tokens *one, const ll_eval_pick *pk, int row,
                     int chunk_tokens, const ll_eval_env *env, const ll_model *m,
                     const ll_layer_sel *sel, const int *dims, float *const *out,
                     ev_key *key, const ll_eval_text *texts, long *done, long total,
                     ll_error *err) {
    if (c->n == c->cap || (c->n > 0 && c->tokens + one->n > chunk_tokens)) {
        int queued = c->n;
        int rc = chunk_flush(c, env, m, sel, dims, out, key, texts, err);
        if (rc) return rc;
        *done += queued;
        report(env, *done, total);
    }
    c->off[c->n] = (size_t)c->tk.n;
    for (int t = 0; t < one->n; t++)
        if (ll_tokens_push(&c->tk, one->ids[t], 0, 0)) return ll_errorf(err, "out of memory");
    c->inputs[c->n] = (ll_eval_input){NULL, one->n, pk->begin, pk->end};
    c->rows[c->n++] = row;
    c->tokens += one->n;
    return 0;
}

int ll_eval_vectors(const ll_eval_env *env, const ll_model *m,
                    ll_eval_variant v, const ll_eval_text *texts, int n,
                    const ll_layer_sel *sel, float *const *out,
                    ll_eval_pick *picks, unsigned char *ok,
                    char (*reasons)[LL_EVAL_REASON_MAX], long *done,
                    long total, ll_error *err) {
    v = ll_eval_variant_for(m, v);
    int dims[LL_MAX_LAYERS + 3];
    for (int j = 0; j < sel->n; j++) dims[j] = ll_eval_item_dim(m, sel->items[j]);
    int chunk_tokens = env->chunk_tokens > 0 ? env->chunk_tokens : LL_EVAL_CHUNK_TOKENS;
    ev_key key = {0};
    ll_tokens one = {0};
    chunk c;
    int rc = chunk_init(&c, 256, m, sel, err);
    if (rc == 0 && ev_key_model(&key, m, v)) rc = ll_errorf(err, "out of memory");
    for (int i = 0; rc == 0 && i < n; i++) {
        if (env->cancel && atomic_load(env->cancel)) {
            rc = LL_EVAL_CANCELLED;
            break;
        }
        ll_eval_pick pk;
        ll_error e = {{0}};
        ll_tokens_clear(&one);
        ok[i] = 0;
        if (reasons) reasons[i][0] = 0;
        /* built even for a cached text: the pick (CWE: k mod n) needs it */
        int r = ll_eval_input_build(m, v, &texts[i], &one, &pk, &e);
        if (picks) picks[i] = pk;
        if (r) { /* this text is skipped, the rest goes on */
            if (reasons) snprintf(reasons[i], LL_EVAL_REASON_MAX, "%s", e.msg);
            ++*done;
            continue;
        }
        ok[i] = 1;
        if (env->cache && ev_key_text(&key, &texts[i]) == 0 &&
            ev_cache_get(env->cache, &key, sel, dims, out, i)) {
            ++*done;
            continue;
        }
        rc = chunk_add(&c, &one, &pk, i, chunk_tokens, env, m, sel, dims, out, &key,
                       texts, done, total, err);
    }
    if (rc == 0 && c.n > 0 && env->cancel && atomic_load(env->cancel)) rc = LL_EVAL_CANCELLED;
    if (rc == 0 && c.n > 0) {
        int queued = c.n;
        rc = chunk_flush(&c, env, m, sel, dims, out, &key, texts, err);
        if (rc == 0) *done += queued;
    }
    if (rc == 0) report(env, *done, total);
    chunk_free(&c);
    ll_tokens_free(&one);
    ev_key_free(&key);
    if (rc == LL_EVAL_CANCELLED) ll_errorf(err, "the evaluation was cancelled");
    return rc;
}
