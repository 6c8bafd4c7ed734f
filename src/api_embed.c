/* api_embed.c - the endpoints that run the model: /v1/embeddings,
 * /v1/similarity and /v1/self-similarity.
 *
 * Each has three parts:
 *   handler  (HTTP thread)   validate, tokenize, build the job, submit it;
 *   collect  (worker thread) right after the forward pass, take what the
 *            response needs from one sequence's states (pooling goes
 *            through embed.h, exactly as on the command line);
 *   finish   (worker thread) once every sequence is in, build the JSON. */
#include "server_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "layerlens/stats.h"

/* A finite number, or null (json_real refuses NaN and infinity). */
static json_t *number_json(double v) {
    return isfinite(v) ? json_real(v) : json_null();
}

static json_t *usage_json(const ll_job *job) {
    return json_pack("{s:I, s:I}", "prompt_tokens", (json_int_t)job->n_tokens,
                     "total_tokens", (json_int_t)job->n_tokens);
}

/* Pooling last/mean needs tokens of the text itself (CLIP's projected
 * embedding does not: it is always taken at the end token). */
static int needs_text(const ll_layer_sel *sel, ll_pooling pooling) {
    if (pooling != LL_POOL_LAST && pooling != LL_POOL_MEAN) return 0;
    for (int k = 0; k < sel->n; k++)
        if (sel->items[k] != LL_LAYER_PROJECTED) return 1;
    return 0;
}

/* ======================= /v1/embeddings ======================= */

/* The common tail of the three handlers: wraps the parsed request data d
 * (owned by the job from here on) in a job of n sequences, asks the forward
 * pass for the selected layers, tokenizes the texts (named `param` in
 * errors), checks the pooling against them and queues the job.  Frees texts. */
static int submit_texts(ll_request *r, ll_served_model *sm, const ll_job_ops *ops,
                        void *d, int n, const ll_config *cfg, const ll_layer_sel *sel,
                        ll_pooling pooling, json_t **texts, const char *param,
                        const ll_encode_opts *eo) {
    ll_job *job = job_new(r, sm, ops, d, n);
    if (!job) {
        free(texts);
        return reply_error(r, 500, "out_of_memory", NULL, "out of memory");
    }
    ll_layer_sel_request(sel, cfg, &job->req);
    int bad = req_encode(r, job, texts, param, eo, needs_text(sel, pooling)) ||
              req_check_pooling(r, job, sel, pooling);
    free(texts);
    if (bad) {
        job_release(job);
        return 0;
    }
    return job_submit(r, job);
}

typedef struct embed_data {
    ll_layer_sel sel;
    ll_pooling pooling;
    int explicit_layers; /* "layers" given: data items carry layer entries */
    int normalize, return_tokens, base64;
    int n;
    json_t **results;    /* [n] layer entries, or the default embedding */
} embed_data;

/* Results still held (a job answered early, by a timeout) are released. */
static void embed_free(void *p) {
    embed_data *d = p;
    if (!d) return;
    for (int i = 0; d->results && i < d->n; i++) json_decref(d->results[i]);
    free(d->results);
    free(d);
}

/* OpenAI's encoding_format "base64": the little-endian float32 bytes. */
static json_t *base64_floats(const json_t *arr) {
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t n = json_array_size(arr), nb = n * 4;
    unsigned char *bytes = malloc(nb ? nb : 1);
    char *out = malloc(4 * ((nb + 2) / 3) + 1);
    json_t *res = NULL;
    if (bytes && out) {
        for (size_t i = 0; i < n; i++) {
            float f = (float)json_real_value(json_array_get(arr, i));
            memcpy(bytes + 4 * i, &f, 4); /* x86-64 and arm64 are little-endian */
        }
        size_t o = 0;
        for (size_t i = 0; i < nb; i += 3) {
            unsigned v = (unsigned)bytes[i] << 16;
            if (i + 1 < nb) v |= (unsigned)bytes[i + 1] << 8;
            if (i + 2 < nb) v |= bytes[i + 2];
            out[o++] = tab[(v >> 18) & 63];
            out[o++] = tab[(v >> 12) & 63];
            out[o++] = i + 1 < nb ? tab[(v >> 6) & 63] : '=';
            out[o++] = i + 2 < nb ? tab[v & 63] : '=';
        }
        out[o] = 0;
        res = json_string(out);
    }
    free(bytes);
    free(out);
    return res;
}

static int embed_collect(ll_job *job, int index, const ll_states *st, int s,
                         ll_error *err) {
    embed_data *d = job->data;
    json_t *entries = ll_layer_entries(st, s, &d->sel, d->pooling, &job->seqs[index].span,
                                       d->normalize, err);
    if (!entries) return -1;
    if (d->explicit_layers) {
        d->results[index] = entries;
        return 0;
    }
    /* The default embedding: the "embedding" of the single layer entry. */
    json_t *emb = json_object_get(json_array_get(entries, 0), "embedding");
    d->results[index] = d->base64 ? base64_floats(emb) : json_incref(emb);
    json_decref(entries);
    if (!d->results[index]) return ll_errorf(err, "out of memory");
    return 0;
}

static json_t *embed_finish(ll_job *job, ll_error *err) {
    embed_data *d = job->data;
    const ll_tokenizer *tok = ll_model_tokenizer(job->model);
    json_t *data = json_array();
    for (int i = 0; i < job->n_seq; i++) {
        json_t *item = json_pack("{s:s, s:i}", "object", "embedding", "index", i);
        json_object_set_new(item, d->explicit_layers ? "layers" : "embedding", d->results[i]);
        d->results[i] = NULL;
        if (d->return_tokens) {
            ll_job_seq *js = &job->seqs[i];
            json_t *ids = json_array();
            for (int t = 0; t < js->toks.n; t++) json_array_append_new(ids, json_integer(js->toks.ids[t]));
            json_object_set_new(item, "token_ids", ids);
            json_object_set_new(item, "tokens", ll_tokens_json(tok, js->toks.ids, js->toks.n));
        }
        json_array_append_new(data, item);
    }
    json_t *body = json_pack("{s:s, s:o, s:s, s:o}", "object", "list", "data", data,
                             "model", job->sm->id, "usage", usage_json(job));
    if (!body) ll_errorf(err, "out of memory");
    return body;
}

static const ll_job_ops EMBED_OPS = {embed_collect, embed_finish, embed_free};

static int encoding_base64(ll_request *r, json_t *body, int *base64) {
    json_t *v = json_object_get(body, "encoding_format");
    *base64 = 0;
    if (!v || json_is_null(v)) return 0;
    int plain = json_is_string(v) && !json_has_nul(v);
    if (plain && strcmp(json_string_value(v), "float") == 0) return 0;
    if (plain && strcmp(json_string_value(v), "base64") == 0) {
        *base64 = 1;
        return 0;
    }
    return reply_error(r, 400, "invalid_value", "encoding_format",
                       "'encoding_format' must be \"float\" or \"base64\""), -1;
}

int api_embeddings(ll_request *r, json_t *body) {
    ll_served_model *sm;
    const ll_model *m;
    json_t **texts = NULL;
    int n = 0;
    ll_encode_opts eo;
    embed_data d0 = {0};
    if (req_model(r, body, &sm, &m)) return 0;
    const ll_config *cfg = ll_model_config(m);
    if (req_layers(r, body, cfg, &d0.sel, &d0.explicit_layers) ||
        req_pooling(r, body, cfg, &d0.pooling) || req_encode_opts(r, body, &eo) ||
        req_bool(r, body, "normalize", 0, &d0.normalize) ||
        req_bool(r, body, "return_tokens", 0, &d0.return_tokens) ||
        encoding_base64(r, body, &d0.base64))
        return 0;
    if (!d0.explicit_layers && d0.pooling == LL_POOL_NONE)
        return reply_error(r, 400, "invalid_value", "pooling",
                           "pooling 'none' (one vector per token) needs 'layers'");
    if (d0.explicit_layers && d0.base64)
        return reply_error(r, 400, "invalid_value", "encoding_format",
                           "'encoding_format' \"base64\" applies to the default "
                           "embedding only, not to 'layers'");
    if (req_texts(r, json_object_get(body, "input"), "input", &texts, &n)) return 0;

    embed_data *d = malloc(sizeof *d);
    json_t **results = d ? calloc((size_t)n, sizeof *results) : NULL;
    if (!d || !results) {
        free(d);
        free(texts);
        return reply_error(r, 500, "out_of_memory", NULL, "out of memory");
    }
    *d = d0;
    d->results = results;
    d->n = n;
    return submit_texts(r, sm, &EMBED_OPS, d, n, cfg, &d->sel, d->pooling, texts, "input", &eo);
}

/* ============ pooled vectors, shared by similarity and self-similarity ============ */

/* Offsets of each layer item's vector within one sequence's slot. */
static int item_offsets(const ll_layer_sel *sel, const ll_config *cfg, int *off) {
    int total = 0;
    for (int k = 0; k < sel->n; k++) {
        off[k] = total;
        total += item_dim(cfg, sel->items[k]);
    }
    return total;
}

static int check_one_vector(ll_request *r, ll_pooling pooling, const ll_layer_sel *sel,
                            const char *what) {
    int pooled = 0;
    for (int k = 0; k < sel->n; k++) pooled += sel->items[k] != LL_LAYER_PROJECTED;
    if (pooled && pooling == LL_POOL_NONE)
        return reply_error(r, 400, "invalid_value", "pooling",
                           "pooling 'none' gives one vector per token; %s needs one "
                           "vector per input (last, eos or mean)", what), -1;
    return 0;
}

/* ======================= /v1/similarity ======================= */

typedef struct sim_data {
    ll_layer_sel sel;
    ll_pooling pooling;
    int off[LL_MAX_LAYERS + 3];
    int stride;   /* floats per sequence */
    int n_pairs;
    int *pairs;   /* [n_pairs][2] sequence indices */
    float *vecs;  /* [n_seq][stride] */
} sim_data;

static void sim_free(void *p) {
    sim_data *d = p;
    if (!d) return;
    free(d->pairs);
    free(d->vecs);
    free(d);
}

static int sim_collect(ll_job *job, int index, const ll_states *st, int s, ll_error *err) {
    sim_data *d = job->data;
    float *slot = d->vecs + (size_t)index * d->stride;
    for (int k = 0; k < d->sel.n; k++)
        if (ll_pool(st, s, d->sel.items[k], d->pooling, &job->seqs[index].span,
                    slot + d->off[k], err))
            return -1;
    return 0;
}

static json_t *sim_finish(ll_job *job, ll_error *err) {
    sim_data *d = job->data;
    const ll_config *cfg = ll_model_config(job->model);
    json_t *data = json_array();
    for (int p = 0; p < d->n_pairs; p++) {
        const float *a = d->vecs + (size_t)d->pairs[2 * p] * d->stride;
        const float *b = d->vecs + (size_t)d->pairs[2 * p + 1] * d->stride;
        json_t *layers = json_array();
        for (int k = 0; k < d->sel.n; k++) {
            int item = d->sel.items[k], dim = item_dim(cfg, item);
            double c = ll_cosine(a + d->off[k], b + d->off[k], dim);
            json_array_append_new(layers, json_pack("{s:o, s:o}", "layer", layer_key_json(item),
                                                    "cosine", number_json(c)));
        }
        json_array_append_new(data, json_pack("{s:s, s:i, s:o}", "object", "similarity",
                                              "index", p, "layers", layers));
    }
    json_t *body = json_pack("{s:s, s:o, s:s, s:s, s:o}", "object", "list", "data", data,
                             "model", job->sm->id, "pooling", ll_pooling_name(d->pooling),
                             "usage", usage_json(job));
    if (!body) ll_errorf(err, "out of memory");
    return body;
}

static const ll_job_ops SIM_OPS = {sim_collect, sim_finish, sim_free};

/* "pairs": [[a, b], ...] or {"source": s, "targets": [t, ...]}.  Fills
 * texts (sequence order) and pairs (sequence indices). */
static int parse_pairs(ll_request *r, json_t *v, json_t ***texts, int *n_seq,
                       int **pairs, int *n_pairs) {
    if (!v) return reply_error(r, 400, "missing_field", "pairs", "'pairs' is required"), -1;
    if (json_is_object(v)) {
        json_t *src = json_object_get(v, "source");
        json_t *tg = json_object_get(v, "targets");
        if (!json_is_string(src))
            return reply_error(r, 400, "invalid_type", "pairs.source",
                               "'pairs.source' must be a string"), -1;
        if (!json_is_array(tg) || json_array_size(tg) == 0)
            return reply_error(r, 400, json_is_array(tg) ? "empty_input" : "invalid_type",
                               "pairs.targets",
                               "'pairs.targets' must be a non-empty array of strings"), -1;
        size_t nt = json_array_size(tg);
        if (req_count_ok(r, nt + 1 > (size_t)1 << 30 ? 1 << 30 : (int)nt + 1, "pairs")) return -1;
        *texts = malloc(sizeof **texts * (nt + 1));
        *pairs = malloc(sizeof **pairs * 2 * nt);
        if (!*texts || !*pairs) return reply_error(r, 500, "out_of_memory", NULL, "out of memory"), -1;
        (*texts)[0] = src;
        for (size_t i = 0; i < nt; i++) {
            json_t *t = json_array_get(tg, i);
            if (!json_is_string(t))
                return reply_error(r, 400, "invalid_type", "pairs.targets",
                                   "'pairs.targets'[%zu] must be a string", i), -1;
            (*texts)[i + 1] = t;
            (*pairs)[2 * i] = 0;
            (*pairs)[2 * i + 1] = (int)i + 1;
        }
        *n_seq = (int)nt + 1;
        *n_pairs = (int)nt;
        return 0;
    }
    if (!json_is_array(v))
        return reply_error(r, 400, "invalid_type", "pairs",
                           "'pairs' must be an array of [text, text] pairs or an "
                           "object {\"source\", \"targets\"}"), -1;
    size_t np = json_array_size(v);
    if (np == 0) return reply_error(r, 400, "empty_input", "pairs", "'pairs' is an empty array"), -1;
    if (req_count_ok(r, np > (size_t)1 << 29 ? 1 << 30 : 2 * (int)np, "pairs")) return -1;
    *texts = malloc(sizeof **texts * 2 * np);
    *pairs = malloc(sizeof **pairs * 2 * np);
    if (!*texts || !*pairs) return reply_error(r, 500, "out_of_memory", NULL, "out of memory"), -1;
    for (size_t i = 0; i < np; i++) {
        json_t *p = json_array_get(v, i);
        json_t *a = json_array_get(p, 0), *b = json_array_get(p, 1);
        if (!json_is_array(p) || json_array_size(p) != 2 || !json_is_string(a) ||
            !json_is_string(b))
            return reply_error(r, 400, "invalid_type", "pairs",
                               "'pairs'[%zu] must be an array of two strings", i), -1;
        (*texts)[2 * i] = a;
        (*texts)[2 * i + 1] = b;
        (*pairs)[2 * i] = 2 * (int)i;
        (*pairs)[2 * i + 1] = 2 * (int)i + 1;
    }
    *n_seq = 2 * (int)np;
    *n_pairs = (int)np;
    return 0;
}

int api_similarity(ll_request *r, json_t *body) {
    ll_served_model *sm;
    const ll_model *m;
    ll_encode_opts eo;
    ll_layer_sel sel;
    ll_pooling pooling;
    int explicit_layers;
    if (req_model(r, body, &sm, &m)) return 0;
    const ll_config *cfg = ll_model_config(m);
    if (req_layers(r, body, cfg, &sel, &explicit_layers) ||
        req_pooling(r, body, cfg, &pooling) || req_encode_opts(r, body, &eo) ||
        check_one_vector(r, pooling, &sel, "similarity"))
        return 0;
    json_t **texts = NULL;
    int *pairs = NULL, n_seq = 0, n_pairs = 0;
    if (parse_pairs(r, json_object_get(body, "pairs"), &texts, &n_seq, &pairs, &n_pairs)) {
        free(texts);
        free(pairs);
        return 0;
    }
    sim_data *d = calloc(1, sizeof *d);
    if (d) {
        d->sel = sel;
        d->pooling = pooling;
        d->stride = item_offsets(&sel, cfg, d->off);
        d->n_pairs = n_pairs;
        d->pairs = pairs;
        d->vecs = malloc(sizeof *d->vecs * (size_t)n_seq * d->stride);
        pairs = NULL;
    }
    if (!d || !d->vecs) {
        sim_free(d);
        free(texts);
        free(pairs);
        return reply_error(r, 500, "out_of_memory", NULL, "out of memory");
    }
    return submit_texts(r, sm, &SIM_OPS, d, n_seq, cfg, &sel, pooling, texts, "pairs", &eo);
}

/* ===================== /v1/self-similarity ===================== */

/* The mean pairwise cosine over i < j, exactly, in O(n d): from the sum of
 * the unit vectors, |sum u|^2 = n + 2 sum_{i<j} cos(i, j) (stats.h).  The
 * accumulators are shared by the workers running this job's sequences, so
 * they are behind a mutex. */
typedef struct selfsim_data {
    ll_layer_sel sel;
    ll_pooling pooling;
    int max_dim;
    pthread_mutex_t mu;
    ll_selfsim acc[LL_MAX_LAYERS + 3];
    int n_acc;
} selfsim_data;

static void selfsim_free(void *p) {
    selfsim_data *d = p;
    if (!d) return;
    for (int k = 0; k < d->n_acc; k++) ll_selfsim_free(&d->acc[k]);
    pthread_mutex_destroy(&d->mu);
    free(d);
}

static int selfsim_collect(ll_job *job, int index, const ll_states *st, int s,
                           ll_error *err) {
    selfsim_data *d = job->data;
    float *buf = malloc(sizeof *buf * (size_t)d->max_dim);
    if (!buf) return ll_errorf(err, "out of memory");
    for (int k = 0; k < d->sel.n; k++) {
        if (ll_pool(st, s, d->sel.items[k], d->pooling, &job->seqs[index].span, buf, err)) {
            free(buf);
            return -1;
        }
        pthread_mutex_lock(&d->mu);
        ll_selfsim_add(&d->acc[k], buf);
        pthread_mutex_unlock(&d->mu);
    }
    free(buf);
    return 0;
}

static json_t *selfsim_finish(ll_job *job, ll_error *err) {
    selfsim_data *d = job->data;
    json_t *layers = json_array();
    for (int k = 0; k < d->sel.n; k++) {
        ll_selfsim_result res;
        ll_selfsim_finish(&d->acc[k], &res);
        json_array_append_new(layers, json_pack("{s:o, s:o, s:o}", "layer",
                                                layer_key_json(d->sel.items[k]),
                                                "self_similarity",
                                                res.defined ? number_json(res.self_similarity)
                                                            : json_null(),
                                                "mean_norm", number_json(res.mean_norm)));
    }
    json_t *body = json_pack("{s:s, s:s, s:s, s:i, s:o, s:o}", "object", "self_similarity",
                             "model", job->sm->id, "pooling", ll_pooling_name(d->pooling),
                             "n", job->n_seq, "layers", layers, "usage", usage_json(job));
    if (!body) ll_errorf(err, "out of memory");
    return body;
}

static const ll_job_ops SELFSIM_OPS = {selfsim_collect, selfsim_finish, selfsim_free};

int api_self_similarity(ll_request *r, json_t *body) {
    ll_served_model *sm;
    const ll_model *m;
    ll_encode_opts eo;
    ll_layer_sel sel;
    ll_pooling pooling;
    int explicit_layers, n = 0;
    json_t **texts = NULL;
    if (req_model(r, body, &sm, &m)) return 0;
    const ll_config *cfg = ll_model_config(m);
    if (req_layers(r, body, cfg, &sel, &explicit_layers) ||
        req_pooling(r, body, cfg, &pooling) || req_encode_opts(r, body, &eo) ||
        check_one_vector(r, pooling, &sel, "self-similarity") ||
        req_texts(r, json_object_get(body, "input"), "input", &texts, &n))
        return 0;
    if (n < 2) {
        free(texts);
        return reply_error(r, 400, "invalid_value", "input",
                           "self-similarity needs at least 2 inputs (it averages over pairs)");
    }
    selfsim_data *d = calloc(1, sizeof *d);
    if (!d) {
        free(texts);
        return reply_error(r, 500, "out_of_memory", NULL, "out of memory");
    }
    d->sel = sel;
    d->pooling = pooling;
    pthread_mutex_init(&d->mu, NULL);
    int ok = 1;
    for (int k = 0; k < sel.n && ok; k++) {
        int dim = item_dim(cfg, sel.items[k]);
        if (dim > d->max_dim) d->max_dim = dim;
        ok = ll_selfsim_init(&d->acc[k], dim, NULL, NULL) == 0;
        if (ok) d->n_acc++;
    }
    if (!ok) {
        selfsim_free(d);
        free(texts);
        return reply_error(r, 500, "out_of_memory", NULL, "out of memory");
    }
    return submit_texts(r, sm, &SELFSIM_OPS, d, n, cfg, &sel, pooling, texts, "input", &eo);
}
