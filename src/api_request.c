/* api_request.c - reading and validating the request fields the endpoints
 * share (model, input, layers, pooling, bos/eos/truncate) and encoding texts
 * into token sequences.  Every failure replies with the documented status and
 * names the offending field in "param". */
#include "server_internal.h"

#include <stdlib.h>
#include <string.h>

/* Names (model, pooling, layers, formats) are compared as C strings, so one
 * holding U+0000 (allowed in JSON text, see http.c) never matches. */
int json_has_nul(const json_t *v) {
    return strlen(json_string_value(v)) != json_string_length(v);
}

int req_model(ll_request *r, json_t *body, ll_served_model **sm, const ll_model **m) {
    json_t *v = json_object_get(body, "model");
    if (!v) return reply_error(r, 400, "missing_field", "model", "'model' is required"), -1;
    if (!json_is_string(v))
        return reply_error(r, 400, "invalid_type", "model", "'model' must be a string"), -1;
    const char *id = json_string_value(v);
    ll_server *s = r->srv;
    if (json_has_nul(v))
        return reply_error(r, 404, "model_not_found", "model",
                           "no model name contains U+0000"), -1;
    for (int i = 0; i < s->n_models; i++) {
        if (strcmp(s->models[i].id, id) != 0) continue;
        ll_model *loaded = atomic_load(&s->models[i].model);
        if (!loaded)
            return reply_error(r, 503, "model_not_ready", "model",
                               "model '%s' is still loading", id), -1;
        *sm = &s->models[i];
        *m = loaded;
        return 0;
    }
    char known[64] = "";
    for (int i = 0; i < s->n_models; i++) {
        if (i) strcat(known, ", ");
        strcat(known, s->models[i].id);
    }
    return reply_error(r, 404, "model_not_found", "model",
                       "model '%.100s' is not served here (served: %s)", id,
                       s->n_models ? known : "none"), -1;
}

int req_count_ok(ll_request *r, int n, const char *param) {
    if (n > r->srv->opts.max_inputs)
        return reply_error(r, 413, "too_many_inputs", param,
                           "%d inputs in one request; the limit is %d", n,
                           r->srv->opts.max_inputs), -1;
    return 0;
}

int req_tokens_ok(ll_request *r, long tokens, const char *param) {
    r->tokens = tokens;
    if (tokens > r->srv->opts.max_request_tokens)
        return reply_error(r, 413, "too_many_tokens", param,
                           "the inputs have %ld tokens or more; the limit is %d tokens per "
                           "request (--max-request-tokens)", tokens,
                           r->srv->opts.max_request_tokens), -1;
    return 0;
}

int req_texts(ll_request *r, json_t *v, const char *param, json_t ***texts, int *n) {
    if (!v) return reply_error(r, 400, "missing_field", param, "'%s' is required", param), -1;
    if (json_is_string(v)) {
        *texts = malloc(sizeof **texts);
        if (!*texts) return reply_error(r, 500, "out_of_memory", NULL, "out of memory"), -1;
        (*texts)[0] = v;
        *n = 1;
        return 0;
    }
    if (!json_is_array(v))
        return reply_error(r, 400, "invalid_type", param,
                           "'%s' must be a string or an array of strings", param), -1;
    size_t len = json_array_size(v);
    if (len == 0)
        return reply_error(r, 400, "empty_input", param, "'%s' is an empty array", param), -1;
    if (req_count_ok(r, len > (size_t)1 << 30 ? 1 << 30 : (int)len, param)) return -1;
    *texts = malloc(sizeof **texts * len);
    if (!*texts) return reply_error(r, 500, "out_of_memory", NULL, "out of memory"), -1;
    for (size_t i = 0; i < len; i++) {
        json_t *t = json_array_get(v, i);
        if (!json_is_string(t)) {
            free(*texts);
            *texts = NULL;
            return reply_error(r, 400, "invalid_type", param,
                               "'%s'[%zu] must be a string", param, i), -1;
        }
        (*texts)[i] = t;
    }
    *n = (int)len;
    return 0;
}

int req_bool(ll_request *r, json_t *body, const char *name, int dflt, int *out) {
    json_t *v = json_object_get(body, name);
    if (!v || json_is_null(v)) {
        *out = dflt;
        return 0;
    }
    if (!json_is_boolean(v))
        return reply_error(r, 400, "invalid_type", name, "'%s' must be true or false", name), -1;
    *out = json_is_true(v);
    return 0;
}

int req_encode_opts(ll_request *r, json_t *body, ll_encode_opts *eo) {
    int truncate;
    if (req_bool(r, body, "bos", 0, &eo->bos) || req_bool(r, body, "eos", 0, &eo->eos) ||
        req_bool(r, body, "truncate", 1, &truncate))
        return -1;
    eo->truncate = truncate;
    return 0;
}

/* One element of a "layers" array: an integer or a name/number string. */
static int add_layer_item(ll_request *r, ll_layer_sel *sel, json_t *v,
                          const ll_config *cfg) {
    ll_error err = {{0}};
    if (json_is_integer(v)) {
        json_int_t L = json_integer_value(v);
        if (L < 0 || L > cfg->n_layer)
            return reply_error(r, 400, "unknown_layer", "layers",
                               "layer %lld out of range (the model has layers 0..%d)",
                               (long long)L, cfg->n_layer), -1;
        if (ll_layer_sel_add(sel, (int)L, cfg, &err))
            return reply_error(r, 400, "unknown_layer", "layers", "%s", err.msg), -1;
        return 0;
    }
    if (json_is_string(v)) {
        if (json_has_nul(v))
            return reply_error(r, 400, "unknown_layer", "layers",
                               "layer names never contain U+0000"), -1;
        if (ll_layer_sel_parse(sel, json_string_value(v), cfg, &err))
            return reply_error(r, 400, "unknown_layer", "layers", "%s", err.msg), -1;
        return 0;
    }
    return reply_error(r, 400, "invalid_type", "layers",
                       "'layers' items must be integers or the strings \"all\", "
                       "\"final\", \"projected\""), -1;
}

int req_layers(ll_request *r, json_t *body, const ll_config *cfg, ll_layer_sel *sel,
               int *explicit_layers) {
    memset(sel, 0, sizeof *sel);
    json_t *v = json_object_get(body, "layers");
    *explicit_layers = v && !json_is_null(v);
    if (!*explicit_layers) {
        sel->n = 1;
        sel->items[0] = cfg->arch == LL_ARCH_CLIP ? LL_LAYER_PROJECTED : cfg->n_layer;
        return 0;
    }
    if (json_is_array(v)) {
        if (json_array_size(v) == 0)
            return reply_error(r, 400, "unknown_layer", "layers", "'layers' is an empty array"), -1;
        size_t i;
        json_t *it;
        json_array_foreach(v, i, it) if (add_layer_item(r, sel, it, cfg)) return -1;
        return 0;
    }
    return add_layer_item(r, sel, v, cfg);
}

int req_pooling(ll_request *r, json_t *body, const ll_config *cfg, ll_pooling *out) {
    json_t *v = json_object_get(body, "pooling");
    if (!v || json_is_null(v)) {
        *out = cfg->arch == LL_ARCH_CLIP ? LL_POOL_EOS : LL_POOL_LAST;
        return 0;
    }
    ll_error err = {{0}};
    if (!json_is_string(v))
        return reply_error(r, 400, "invalid_type", "pooling",
                           "'pooling' must be one of \"none\", \"last\", \"eos\", \"mean\""), -1;
    if (json_has_nul(v))
        return reply_error(r, 400, "unknown_pooling", "pooling",
                           "pooling names never contain U+0000"), -1;
    if (ll_pooling_parse(json_string_value(v), out, &err))
        return reply_error(r, 400, "unknown_pooling", "pooling", "%s", err.msg), -1;
    return 0;
}

int req_encode(ll_request *r, ll_job *job, json_t **texts, const char *param,
               const ll_encode_opts *eo, int need_text) {
    const ll_model *m = job->model;
    int32_t eot = ll_tokenizer_eot(ll_model_tokenizer(m));
    for (int i = 0; i < job->n_seq; i++) {
        ll_job_seq *js = &job->seqs[i];
        ll_error err = {{0}};
        int b = 0, e = 0;
        const char *text = json_string_value(texts[i]);
        size_t len = json_string_length(texts[i]);
        int rc = ll_model_encode(m, text, len, eo, &js->toks, &b, &e, &err);
        if (rc == LL_ETOOLONG)
            return reply_error(r, 422, "input_too_long", param, "input %d: %s", i, err.msg), -1;
        if (rc)
            return reply_error(r, 400, "invalid_input", param, "input %d: %s", i, err.msg), -1;
        if (js->toks.n == 0)
            return reply_error(r, 400, "empty_input", param,
                               "input %d has no tokens (for gpt2, an empty text needs "
                               "bos or eos)", i), -1;
        if (need_text && e <= b)
            return reply_error(r, 400, "empty_input", param,
                               "input %d has no text tokens to pool", i), -1;
        if (req_tokens_ok(r, job->n_tokens + js->toks.n, param)) return -1;
        js->span.begin = b;
        js->span.end = e;
        /* The end-of-text token, as the command line finds it: the last
         * token when it is <|endoftext|> and not part of the text. */
        js->span.eos = (js->toks.ids[js->toks.n - 1] == eot && e < js->toks.n)
                           ? js->toks.n - 1 : -1;
        job->n_tokens += js->toks.n;
    }
    return 0;
}

int req_check_pooling(ll_request *r, ll_job *job, const ll_layer_sel *sel,
                      ll_pooling pooling) {
    int pooled_layers = 0;
    for (int i = 0; i < sel->n; i++) pooled_layers += sel->items[i] != LL_LAYER_PROJECTED;
    if (!pooled_layers || pooling != LL_POOL_EOS) return 0;
    for (int i = 0; i < job->n_seq; i++)
        if (job->seqs[i].span.eos < 0)
            return reply_error(r, 400, "invalid_value", "pooling",
                               "pooling 'eos' needs an end-of-text token (for gpt2, "
                               "set \"eos\": true)"), -1;
    return 0;
}

json_t *layer_key_json(int item) {
    if (item >= 0) return json_integer(item);
    return json_string(item == LL_LAYER_FINAL ? "final" : "projected");
}

int item_dim(const ll_config *cfg, int item) {
    return item == LL_LAYER_PROJECTED ? cfg->proj_dim : cfg->width;
}

json_t *floats_json(const float *v, int n) {
    json_t *a = json_array();
    for (int i = 0; a && i < n; i++)
        if (json_array_append_new(a, json_real(v[i]))) {
            json_decref(a);
            return NULL;
        }
    return a;
}
