/* api_info.c - the endpoints answered on the HTTP thread without a forward
 * pass: /healthz, /readyz, /metrics, /v1/models and /v1/tokenize. */
#include "server_internal.h"

#include <stdlib.h>
#include <string.h>

int api_healthz(ll_request *r, json_t *body) {
    return reply_json(r, 200, json_pack("{s:s}", "status", "ok"));
}

int api_readyz(ll_request *r, json_t *body) {
    ll_server *s = r->srv;
    if (atomic_load(&s->ready)) {
        json_t *models = json_array();
        for (int i = 0; i < s->n_models; i++)
            json_array_append_new(models, json_string(s->models[i].id));
        return reply_json(r, 200, json_pack("{s:s, s:o}", "status", "ready", "models", models));
    }
    char loading[64] = "";
    for (int i = 0; i < s->n_models; i++) {
        if (atomic_load(&s->models[i].model)) continue;
        if (*loading) strcat(loading, ", ");
        strcat(loading, s->models[i].id);
    }
    return reply_error(r, 503, "not_ready", NULL, "still loading: %s",
                       *loading ? loading : "(finishing)");
}

int api_metrics(ll_request *r, json_t *body) {
    char *text = ll_metrics_render(r->srv->metrics, ll_batcher_depth(r->srv->batcher));
    if (!text) return reply_error(r, 500, "out_of_memory", NULL, "out of memory");
    return reply_text(r, 200, "text/plain; version=0.0.4; charset=utf-8", text);
}

static const char *hash_status(int st) {
    switch (st) {
    case HASH_DONE: return "done";
    case HASH_RUNNING: return "computing";
    case HASH_FAILED: return "failed";
    default: return "pending";
    }
}

/* The source files and their sha256.  Hashing 500 MB takes seconds, so it
 * runs in the background after loading; until it is done, sha256 is null and
 * sha256_status says why. */
static json_t *files_json(ll_served_model *sm) {
    int st = atomic_load(&sm->hash_state);
    json_t *files = json_array();
    for (int i = 0; i < LL_MODEL_FILES; i++) {
        ll_served_file *f = &sm->files[i];
        json_t *sha = st == HASH_DONE && f->sha256[0] ? json_string(f->sha256) : json_null();
        json_array_append_new(files, json_pack("{s:s, s:s, s:I, s:o}", "name", f->name,
                                               "path", f->path ? f->path : "",
                                               "bytes", (json_int_t)f->bytes, "sha256", sha));
    }
    return files;
}

static json_t *model_json(ll_served_model *sm) {
    ll_model *m = atomic_load(&sm->model);
    /* The weight format is the server's option, known before the model is
     * loaded; once it is, the model's own says what its products use. */
    ll_weight_type dtype = m ? ll_model_dtype(m) : sm->srv->opts.dtype;
    json_t *o = json_pack("{s:s, s:s, s:s, s:b, s:b, s:s, s:s}", "id", sm->id, "object", "model",
                          "owned_by", "layerlens", "ready", m != NULL, "demo", sm->demo,
                          "directory", sm->dir, "dtype", ll_weight_type_name(dtype));
    if (!o || !m) return o;
    const ll_config *c = ll_model_config(m);
    json_object_set_new(o, "architecture",
                        json_string(c->arch == LL_ARCH_CLIP ? "clip_text" : "gpt2"));
    json_object_set_new(o, "layers", json_integer(c->n_layer));
    json_object_set_new(o, "width", json_integer(c->width));
    json_object_set_new(o, "heads", json_integer(c->n_head));
    json_object_set_new(o, "vocabulary", json_integer(c->vocab));
    json_object_set_new(o, "context_length", json_integer(c->n_ctx));
    json_object_set_new(o, "projection_dim",
                        c->proj_dim ? json_integer(c->proj_dim) : json_null());
    json_object_set_new(o, "parameters", json_integer((json_int_t)ll_model_param_count(m)));
    json_object_set_new(o, "load_seconds", json_real(sm->load_seconds));
    json_object_set_new(o, "files", files_json(sm));
    json_object_set_new(o, "sha256_status", json_string(hash_status(atomic_load(&sm->hash_state))));
    return o;
}

int api_models(ll_request *r, json_t *body) {
    ll_server *s = r->srv;
    json_t *data = json_array();
    for (int i = 0; i < s->n_models; i++)
        json_array_append_new(data, model_json(&s->models[i]));
    return reply_json(r, 200, json_pack("{s:s, s:o}", "object", "list", "data", data));
}

/* Tokenizing is cheap and runs here, on the HTTP thread. */
int api_tokenize(ll_request *r, json_t *body) {
    ll_served_model *sm;
    const ll_model *m;
    json_t **texts = NULL;
    int n = 0;
    ll_encode_opts eo;
    if (req_model(r, body, &sm, &m) || req_encode_opts(r, body, &eo) ||
        req_texts(r, json_object_get(body, "input"), "input", &texts, &n))
        return 0;
    json_t *inputs = json_array();
    ll_tokens tk = {0};
    long total = 0;
    for (int i = 0; i < n; i++) {
        const char *text = json_string_value(texts[i]);
        size_t len = json_string_length(texts[i]);
        ll_error err = {{0}};
        ll_tokens_clear(&tk);
        int rc = ll_model_encode(m, text, len, &eo, &tk, NULL, NULL, &err);
        if (rc) {
            if (rc == LL_ETOOLONG)
                reply_error(r, 422, "input_too_long", "input", "input %d: %s", i, err.msg);
            else
                reply_error(r, 400, "invalid_input", "input", "input %d: %s", i, err.msg);
            goto done;
        }
        total += tk.n;
        if (req_tokens_ok(r, total, "input")) goto done;
        json_array_append_new(inputs, ll_input_tokens_json(ll_model_tokenizer(m), text, len, &tk));
    }
    reply_json(r, 200, json_pack("{s:s, s:O}", "model", sm->id, "inputs", inputs));
done:
    ll_tokens_free(&tk);
    json_decref(inputs);
    free(texts);
    return 0;
}
