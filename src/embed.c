/* embed.c - layer selection, pooling and the JSON layer entries (embed.h). */
#include "layerlens/embed.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *const pool_names[] = {"none", "last", "eos", "mean"};

int ll_pooling_parse(const char *s, ll_pooling *out, ll_error *err) {
    for (int i = 0; i < 4; i++)
        if (s && strcmp(s, pool_names[i]) == 0) {
            *out = (ll_pooling)i;
            return 0;
        }
    return ll_errorf(err, "unknown pooling '%s' (expected none, last, eos or mean)",
                     s ? s : "");
}

const char *ll_pooling_name(ll_pooling p) { return pool_names[p]; }

int ll_layer_sel_add(ll_layer_sel *sel, int item, const ll_config *cfg,
                     ll_error *err) {
    if (item < LL_LAYER_PROJECTED || item > cfg->n_layer)
        return ll_errorf(err, "layer %d out of range (the model has layers 0..%d)",
                         item, cfg->n_layer);
    if (item < 0 && cfg->arch != LL_ARCH_CLIP)
        return ll_errorf(err, "layer '%s' exists only for clip",
                         item == LL_LAYER_FINAL ? "final" : "projected");
    for (int i = 0; i < sel->n; i++)
        if (sel->items[i] == item) {
            if (item >= 0) return ll_errorf(err, "layer %d is listed twice", item);
            return ll_errorf(err, "layer '%s' is listed twice",
                             item == LL_LAYER_FINAL ? "final" : "projected");
        }
    if (sel->n >= (int)(sizeof sel->items / sizeof sel->items[0]))
        return ll_errorf(err, "too many layers");
    sel->items[sel->n++] = item;
    return 0;
}

/* One item of a layer list: "all", "final", "projected" or a number. */
static int parse_item(ll_layer_sel *sel, const char *s, size_t n,
                      const ll_config *cfg, ll_error *err) {
    if (n == 3 && !memcmp(s, "all", 3)) {
        for (int l = 0; l <= cfg->n_layer; l++)
            if (ll_layer_sel_add(sel, l, cfg, err)) return -1;
        return 0;
    }
    if (n == 5 && !memcmp(s, "final", 5)) return ll_layer_sel_add(sel, LL_LAYER_FINAL, cfg, err);
    if (n == 9 && !memcmp(s, "projected", 9))
        return ll_layer_sel_add(sel, LL_LAYER_PROJECTED, cfg, err);
    int v = 0;
    if (n == 0 || n > 3) goto bad;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') goto bad;
        v = v * 10 + (s[i] - '0');
    }
    return ll_layer_sel_add(sel, v, cfg, err);
bad:
    return ll_errorf(err, "unknown layer '%.*s' (expected all, final, projected "
                     "or a number 0..%d)", (int)(n > 64 ? 64 : n), s, cfg->n_layer);
}

int ll_layer_sel_parse(ll_layer_sel *sel, const char *spec,
                       const ll_config *cfg, ll_error *err) {
    const char *p = spec;
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        if (parse_item(sel, p, n, cfg, err)) return -1;
        if (!comma) return 0;
        p = comma + 1;
    }
}

void ll_layer_sel_request(const ll_layer_sel *sel, const ll_config *cfg,
                          ll_forward_req *req) {
    memset(req, 0, sizeof *req);
    for (int i = 0; i < sel->n; i++) {
        int it = sel->items[i];
        if (it >= 0) req->layers |= 1ull << it;
        else if (it == LL_LAYER_FINAL) req->want_final = 1;
        else req->want_projected = 1;
    }
}

/* The rows of one layer item for sequence seq, NULL if not computed. */
static const float *item_rows(const ll_states *st, int seq, int item) {
    const float *base = item >= 0 ? st->layer[item] : st->final;
    return base ? base + (long)st->seq_start[seq] * st->width : NULL;
}

int ll_pool(const ll_states *st, int seq, int item, ll_pooling pooling,
            const ll_span *span, float *out, ll_error *err) {
    int C = st->width;
    if (item == LL_LAYER_PROJECTED) {
        if (!st->projected) return ll_errorf(err, "projected embedding not computed");
        memcpy(out, st->projected + (long)seq * st->proj_dim, st->proj_dim * sizeof(float));
        return 0;
    }
    const float *rows = item_rows(st, seq, item);
    if (!rows) return ll_errorf(err, "layer %d not computed", item);
    switch (pooling) {
    case LL_POOL_LAST:
        if (span->end <= span->begin)
            return ll_errorf(err, "pooling 'last' needs at least one token of text");
        memcpy(out, rows + (long)(span->end - 1) * C, C * sizeof(float));
        return 0;
    case LL_POOL_EOS:
        if (span->eos < 0)
            return ll_errorf(err, "pooling 'eos' needs an end-of-text token "
                             "(for gpt2, set eos)");
        memcpy(out, rows + (long)span->eos * C, C * sizeof(float));
        return 0;
    case LL_POOL_MEAN: {
        if (span->end <= span->begin)
            return ll_errorf(err, "pooling 'mean' needs at least one token of text");
        /* accumulate in double so the mean does not depend on the length */
        for (int c = 0; c < C; c++) {
            double acc = 0;
            for (int t = span->begin; t < span->end; t++) acc += rows[(long)t * C + c];
            out[c] = (float)(acc / (span->end - span->begin));
        }
        return 0;
    }
    case LL_POOL_NONE:
        break;
    }
    return ll_errorf(err, "pooling 'none' gives one vector per token, not one");
}

static void normalize_vec(float *v, int n) {
    double ss = 0;
    for (int i = 0; i < n; i++) ss += (double)v[i] * v[i];
    if (ss > 0) {
        float inv = (float)(1.0 / sqrt(ss));
        for (int i = 0; i < n; i++) v[i] *= inv;
    }
}

static json_t *vec_json(const float *v, int n) {
    json_t *a = json_array();
    for (int i = 0; a && i < n; i++)
        if (json_array_append_new(a, json_real(v[i]))) {
            json_decref(a);
            return NULL;
        }
    return a;
}

static json_t *layer_key(int item) {
    if (item >= 0) return json_integer(item);
    return json_string(item == LL_LAYER_FINAL ? "final" : "projected");
}

json_t *ll_layer_entries(const ll_states *st, int seq, const ll_layer_sel *sel,
                         ll_pooling pooling, const ll_span *span,
                         int normalize, ll_error *err) {
    int C = st->width;
    int cap = C > st->proj_dim ? C : st->proj_dim;
    float *buf = malloc(cap * sizeof(float));
    json_t *arr = json_array();
    if (!buf || !arr) goto oom;
    for (int i = 0; i < sel->n; i++) {
        int item = sel->items[i];
        json_t *e = json_object();
        if (!e || json_array_append_new(arr, e) ||
            json_object_set_new(e, "layer", layer_key(item)))
            goto oom;
        if (pooling == LL_POOL_NONE && item != LL_LAYER_PROJECTED) {
            const float *rows = item_rows(st, seq, item);
            if (!rows) {
                ll_errorf(err, "layer %d not computed", item);
                goto fail;
            }
            int T = st->seq_start[seq + 1] - st->seq_start[seq];
            json_t *toks = json_array();
            if (!toks || json_object_set_new(e, "tokens", toks)) goto oom;
            for (int t = 0; t < T; t++) {
                memcpy(buf, rows + (long)t * C, C * sizeof(float));
                if (normalize) normalize_vec(buf, C);
                if (json_array_append_new(toks, vec_json(buf, C))) goto oom;
            }
            continue;
        }
        if (ll_pool(st, seq, item, pooling, span, buf, err)) goto fail;
        int n = item == LL_LAYER_PROJECTED ? st->proj_dim : C;
        if (normalize) normalize_vec(buf, n);
        if (json_object_set_new(e, "embedding", vec_json(buf, n))) goto oom;
    }
    free(buf);
    return arr;
oom:
    ll_errorf(err, "out of memory");
fail:
    free(buf);
    json_decref(arr);
    return NULL;
}

json_t *ll_tokens_json(const ll_tokenizer *t, const int32_t *ids, int n) {
    json_t *a = json_array();
    for (int i = 0; a && i < n; i++) {
        const char *s = ll_token_str(t, ids[i]);
        if (json_array_append_new(a, json_string(s ? s : ""))) {
            json_decref(a);
            return NULL;
        }
    }
    return a;
}

json_t *ll_input_tokens_json(const ll_tokenizer *t, const char *text,
                             size_t len, const ll_tokens *tk) {
    json_t *o = json_object(), *ids = json_array(), *offs = json_array();
    json_t *strs = ll_tokens_json(t, tk->ids, tk->n);
    if (!o || !ids || !offs || !strs) goto fail;
    for (int i = 0; i < tk->n; i++) {
        if (json_array_append_new(ids, json_integer(tk->ids[i])) ||
            json_array_append_new(offs, json_pack("[ii]", tk->start[i], tk->end[i])))
            goto fail;
    }
    if (json_object_set_new(o, "text", json_stringn(text, len)) ||
        json_object_set_new(o, "token_ids", ids) ||
        json_object_set_new(o, "tokens", strs) ||
        json_object_set_new(o, "offsets", offs))
        goto fail_owned;
    return o;
fail:
    json_decref(ids), json_decref(offs), json_decref(strs);
fail_owned:
    json_decref(o);
    return NULL;
}
