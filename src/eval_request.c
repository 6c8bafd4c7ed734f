/* eval_request.c - the evaluation request: JSON body -> validated
 * ll_eval_request (see eval.h for the fields).  Everything a client can get
 * wrong is found here, before any work starts, so the server can answer 400
 * at once and a job never fails on its input. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "eval_internal.h"
#include "layerlens/stats.h"

const char *const ll_eval_paper_tasks[] = {
    "rg65", "ws353", "ws353_sim", "ws353_rel", "simlex999", "simverb3500",
    "valnorm", "stsb", "selfsim_sentences", "selfsim_words", NULL,
};

void ll_eval_request_free(ll_eval_request *r) {
    if (!r) return;
    ll_bench_free(r->pairs);
    ll_bench_free(r->items);
    free(r->item_index);
    json_decref(r->thresholds);
    free(r);
}

int ll_eval_request_n_tasks(const ll_eval_request *r) { return r->n_tasks; }
const char *ll_eval_request_task(const ll_eval_request *r, int i) {
    return i >= 0 && i < r->n_tasks ? r->tasks[i]->name : NULL;
}

static int add_task(ll_eval_request *r, const char *name, ll_error *err) {
    const ll_task *t = ll_task_find(name);
    if (!t) {
        char list[512] = "";
        for (int i = 0; i < ll_task_count(); i++)
            snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? ", " : "",
                     ll_task_at(i)->name);
        return ll_errorf(err, "tasks: unknown task '%.64s' (known: %s, or \"paper\" / \"all\")",
                         name, list);
    }
    for (int i = 0; i < r->n_tasks; i++)
        if (r->tasks[i] == t) return 0; /* listed twice: run once */
    if (r->n_tasks >= LL_EVAL_MAX_TASKS) return ll_errorf(err, "tasks: too many tasks");
    r->tasks[r->n_tasks++] = t;
    return 0;
}

static int parse_tasks(ll_eval_request *r, const json_t *j, ll_error *err) {
    if (!j) return 0;
    if (json_is_string(j)) {
        const char *s = json_string_value(j);
        if (!strcmp(s, "paper")) {
            for (int i = 0; ll_eval_paper_tasks[i]; i++)
                if (add_task(r, ll_eval_paper_tasks[i], err)) return -1;
            return 0;
        }
        if (!strcmp(s, "all")) {
            for (int i = 0; i < ll_task_count(); i++)
                if (add_task(r, ll_task_at(i)->name, err)) return -1;
            return 0;
        }
        return add_task(r, s, err);
    }
    if (!json_is_array(j)) return ll_errorf(err, "tasks: expected a list of task names");
    size_t i;
    json_t *v;
    json_array_foreach(j, i, v) {
        if (!json_is_string(v)) return ll_errorf(err, "tasks[%zu]: expected a task name", i);
        if (add_task(r, json_string_value(v), err)) return -1;
    }
    return 0;
}

static int parse_models(ll_eval_request *r, const json_t *j, const ll_eval_env *env,
                        ll_error *err) {
    if (!j) {
        if (env->gpt2) r->models[r->n_models++] = env->gpt2;
        if (env->clip) r->models[r->n_models++] = env->clip;
        if (!r->n_models) return ll_errorf(err, "no model is loaded");
        return 0;
    }
    if (!json_is_array(j) || json_array_size(j) == 0)
        return ll_errorf(err, "models: expected a non-empty list such as [\"gpt2\", \"clip\"]");
    size_t i;
    json_t *v;
    json_array_foreach(j, i, v) {
        const char *s = json_string_value(v);
        const ll_model *m = NULL;
        if (s && !strcmp(s, "gpt2")) m = env->gpt2;
        else if (s && !strcmp(s, "clip")) m = env->clip;
        else return ll_errorf(err, "models[%zu]: unknown model (expected \"gpt2\" or \"clip\")", i);
        if (!m) return ll_errorf(err, "models[%zu]: model '%s' is not loaded", i, s);
        for (int k = 0; k < r->n_models; k++)
            if (r->models[k] == m) return ll_errorf(err, "models: '%s' is listed twice", s);
        r->models[r->n_models++] = m;
    }
    return 0;
}

/* One layer item for one model; "final"/"projected" exist only for CLIP and
 * are passed over for GPT-2, so one list serves both models. */
static int layer_item(ll_layer_sel *sel, const ll_model *m, const char *s, size_t n,
                      ll_error *err) {
    const ll_config *cfg = ll_model_config(m);
    int clip = cfg->arch == LL_ARCH_CLIP;
    if ((n == 5 && !memcmp(s, "final", 5)) || (n == 9 && !memcmp(s, "projected", 9))) {
        if (!clip) return 0;
        return ll_layer_sel_add(sel, n == 5 ? LL_LAYER_FINAL : LL_LAYER_PROJECTED, cfg, err);
    }
    if (n == 3 && !memcmp(s, "all", 3)) {
        for (int l = 0; l <= cfg->n_layer; l++)
            if (ll_layer_sel_add(sel, l, cfg, err)) return -1;
        return 0;
    }
    int v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9' || i >= 3) {
            return ll_errorf(err, "unknown layer '%.*s' (expected all, final, projected or "
                             "a number 0..%d)", (int)(n > 32 ? 32 : n), s, cfg->n_layer);
        }
        v = v * 10 + (s[i] - '0');
    }
    if (n == 0) return ll_errorf(err, "empty layer name");
    return ll_layer_sel_add(sel, v, cfg, err);
}

static int cmp_item(const void *a, const void *b) {
    /* integer layers ascending, then final, then projected */
    int x = *(const int *)a, y = *(const int *)b;
    int kx = x >= 0 ? x : 1000 - x, ky = y >= 0 ? y : 1000 - y;
    return (kx > ky) - (kx < ky);
}

static int parse_layers_for(ll_layer_sel *sel, const ll_model *m, const json_t *j,
                            ll_error *err) {
    memset(sel, 0, sizeof *sel);
    if (!j) {
        if (layer_item(sel, m, "all", 3, err)) return -1;
    } else if (json_is_string(j)) {
        const char *p = json_string_value(j);
        for (;;) {
            const char *comma = strchr(p, ',');
            size_t n = comma ? (size_t)(comma - p) : strlen(p);
            if (layer_item(sel, m, p, n, err)) return -1;
            if (!comma) break;
            p = comma + 1;
        }
    } else if (json_is_array(j)) {
        size_t i;
        json_t *v;
        json_array_foreach(j, i, v) {
            char buf[32];
            if (json_is_integer(v)) {
                json_int_t x = json_integer_value(v);
                if (x < 0 || x > LL_MAX_LAYERS)
                    return ll_errorf(err, "layers[%zu]: layer %lld out of range", i, (long long)x);
                snprintf(buf, sizeof buf, "%d", (int)x);
            } else if (json_is_string(v)) {
                snprintf(buf, sizeof buf, "%s", json_string_value(v));
            } else {
                return ll_errorf(err, "layers[%zu]: expected a layer number or name", i);
            }
            if (layer_item(sel, m, buf, strlen(buf), err)) return ll_error_prefix(err, "layers");
        }
    } else {
        return ll_errorf(err, "layers: expected \"all\", a list or a comma-separated string");
    }
    qsort(sel->items, sel->n, sizeof sel->items[0], cmp_item);
    int ints = 0;
    for (int i = 0; i < sel->n; i++) ints += sel->items[i] >= 0;
    if (!ints) return ll_errorf(err, "layers: no layer of %s selected", ll_model_id(m));
    return 0;
}

/* A non-negative integer method option no larger than max. */
static int method_int(const json_t *v, const char *key, json_int_t min, json_int_t max,
                      json_int_t *out, ll_error *err) {
    if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max)
        return ll_errorf(err, "method.%s: expected an integer %lld..%lld", key, (long long)min,
                         (long long)max);
    *out = json_integer_value(v);
    return 0;
}

static int parse_method(ll_eval_request *r, const json_t *j, ll_error *err) {
    r->word = LL_WORD_BOS, r->sentence = LL_SENT_EOS;
    r->cwe = LL_CWE_SAMPLED, r->cwe_n = LL_CWE_DEFAULT_N, r->cwe_seed = LL_CWE_SEED;
    if (!j) return 0;
    if (!json_is_object(j))
        return ll_errorf(err, "method: expected {\"word\": \"bos\"|\"plain\", "
                         "\"sentence\": \"eos\"|\"last\"|\"mean\", "
                         "\"selfsim_words\": \"sampled\"|\"reference\"}");
    const char *key;
    json_t *v;
    int sampled_only = 0;
    json_object_foreach((json_t *)j, key, v) {
        const char *s = json_string_value(v);
        json_int_t x;
        if (!strcmp(key, "word")) {
            if (s && !strcmp(s, "bos")) r->word = LL_WORD_BOS;
            else if (s && !strcmp(s, "plain")) r->word = LL_WORD_PLAIN;
            else return ll_errorf(err, "method.word: expected \"bos\" or \"plain\"");
        } else if (!strcmp(key, "sentence")) {
            if (s && !strcmp(s, "eos")) r->sentence = LL_SENT_EOS;
            else if (s && !strcmp(s, "last")) r->sentence = LL_SENT_LAST;
            else if (s && !strcmp(s, "mean")) r->sentence = LL_SENT_MEAN;
            else return ll_errorf(err, "method.sentence: expected \"eos\", \"last\" or \"mean\"");
        } else if (!strcmp(key, "selfsim_words")) {
            if (s && !strcmp(s, "sampled")) r->cwe = LL_CWE_SAMPLED;
            else if (s && !strcmp(s, "reference")) r->cwe = LL_CWE_REFERENCE;
            else return ll_errorf(err, "method.selfsim_words: expected \"sampled\" or "
                                  "\"reference\"");
        } else if (!strcmp(key, "selfsim_words_n")) {
            if (method_int(v, key, 1, LL_EVAL_MAX_CUSTOM, &x, err)) return -1;
            r->cwe_n = (int)x, sampled_only = 1;
        } else if (!strcmp(key, "selfsim_words_seed")) {
            if (method_int(v, key, 0, INT64_MAX, &x, err)) return -1;
            r->cwe_seed = (uint64_t)x, sampled_only = 1;
        } else {
            return ll_errorf(err, "method: unknown key '%.64s' (word, sentence, selfsim_words, "
                             "selfsim_words_n, selfsim_words_seed)", key);
        }
    }
    /* the reference selection is fixed: a size or seed would be ignored */
    if (sampled_only && r->cwe != LL_CWE_SAMPLED)
        return ll_errorf(err, "method: selfsim_words_n and selfsim_words_seed apply to the "
                         "sampled selection only (method.selfsim_words is \"reference\")");
    return 0;
}

static int has_space(const char *s) {
    for (; *s; s++)
        if (*s == ' ' || *s == '\t' || *s == '\n') return 1;
    return 0;
}

static int parse_pairs(ll_eval_request *r, const json_t *j, const json_t *type,
                       ll_error *err) {
    if (!j) return 0;
    if (!json_is_array(j) || json_array_size(j) == 0)
        return ll_errorf(err, "pairs: expected a non-empty list of [a, b, gold]");
    size_t n = json_array_size(j), i;
    if (n > LL_EVAL_MAX_CUSTOM) return ll_errorf(err, "pairs: at most %d pairs", LL_EVAL_MAX_CUSTOM);
    ll_item *items = calloc(n, sizeof *items);
    if (!items) return ll_errorf(err, "out of memory");
    int spaces = 0;
    json_t *v;
    json_array_foreach(j, i, v) {
        json_t *a = json_array_get(v, 0), *b = json_array_get(v, 1), *g = json_array_get(v, 2);
        if (!json_is_array(v) || json_array_size(v) != 3 || !json_is_string(a) ||
            !json_is_string(b) || !json_is_number(g)) {
            free(items);
            return ll_errorf(err, "pairs[%zu]: expected [text, text, number]", i);
        }
        items[i] = (ll_item){json_string_value(a), json_string_value(b), json_number_value(g),
                             (int)i + 1};
        spaces |= has_space(items[i].a) || has_space(items[i].b);
    }
    ll_task_kind kind = spaces ? LL_TASK_SENTENCE_PAIRS : LL_TASK_WORD_PAIRS;
    if (type) {
        const char *s = json_string_value(type);
        if (s && !strcmp(s, "words")) kind = LL_TASK_WORD_PAIRS;
        else if (s && !strcmp(s, "sentences")) kind = LL_TASK_SENTENCE_PAIRS;
        else {
            free(items);
            return ll_errorf(err, "pairs_type: expected \"words\" or \"sentences\"");
        }
    }
    r->pairs = ll_bench_from_items("custom_pairs", kind, items, (int)n, err);
    free(items);
    return r->pairs ? 0 : ll_error_prefix(err, "pairs");
}

/* An explicit (sentence, token index) list must name a token of every
 * model asked for: the items are tokenized here so a bad index is the
 * client's error (400), named, rather than an item quietly left out. */
static int check_item_tokens(const ll_eval_request *r, ll_error *err) {
    ll_tokens tk = {0};
    int rc = 0;
    for (int k = 0; k < r->n_models && rc == 0; k++) {
        for (int i = 0; i < r->items->n && rc == 0; i++) {
            ll_eval_text t = {r->items->items[i].a, r->item_index[i], LL_EV_INDEX_GIVEN};
            ll_eval_pick pick;
            ll_error e = {{0}};
            ll_tokens_clear(&tk);
            if (ll_eval_input_build(r->models[k], LL_EV_CWE, &t, &tk, &pick, &e))
                rc = ll_errorf(err, "items[%d] [\"%.48s%s\", %ld]: %s for %s", i, t.text,
                               strlen(t.text) > 48 ? "..." : "", t.index, e.msg,
                               ll_model_id(r->models[k]));
        }
    }
    ll_tokens_free(&tk);
    return rc;
}

static int parse_items(ll_eval_request *r, const json_t *j, ll_error *err) {
    if (!j) return 0;
    if (!json_is_array(j) || json_array_size(j) == 0)
        return ll_errorf(err, "items: expected a non-empty list of sentences or "
                         "[sentence, token index]");
    size_t n = json_array_size(j), i;
    if (n > LL_EVAL_MAX_CUSTOM) return ll_errorf(err, "items: at most %d items", LL_EVAL_MAX_CUSTOM);
    int indexed = json_is_array(json_array_get(j, 0));
    ll_item *items = calloc(n, sizeof *items);
    if (indexed) r->item_index = calloc(n, sizeof *r->item_index);
    if (!items || (indexed && !r->item_index)) {
        free(items);
        return ll_errorf(err, "out of memory");
    }
    json_t *v;
    json_array_foreach(j, i, v) {
        const char *s = NULL;
        if (indexed) {
            json_t *idx = json_array_get(v, 1);
            s = json_string_value(json_array_get(v, 0));
            if (!json_is_array(v) || json_array_size(v) != 2 || !s || !json_is_integer(idx) ||
                json_integer_value(idx) < 0 || json_integer_value(idx) > INT32_MAX) {
                free(items);
                return ll_errorf(err, "items[%zu]: expected [sentence, token index >= 0] "
                                 "like the first item", i);
            }
            r->item_index[i] = (long)json_integer_value(idx);
        } else if (!(s = json_string_value(v))) {
            free(items);
            return ll_errorf(err, "items[%zu]: expected a sentence like the first item", i);
        }
        items[i] = (ll_item){s, NULL, 0, (int)i + 1};
    }
    r->items = ll_bench_from_items("custom_items", indexed ? LL_TASK_CWE : LL_TASK_SENTENCES,
                                   items, (int)n, err);
    free(items);
    if (!r->items) return ll_error_prefix(err, "items");
    return indexed ? check_item_tokens(r, err) : 0;
}

/* Thresholds must name tasks and models of this request, with numbers. */
static int parse_thresholds(ll_eval_request *r, const json_t *j, ll_error *err) {
    if (!j) return 0;
    if (!json_is_object(j)) return ll_errorf(err, "thresholds: expected {TASK: {MODEL: number}}");
    const char *task, *model;
    json_t *per, *x;
    json_object_foreach((json_t *)j, task, per) {
        int known = (r->pairs && !strcmp(task, "custom_pairs")) ||
                    (r->items && !strcmp(task, "custom_items"));
        for (int i = 0; i < r->n_tasks && !known; i++) known = !strcmp(r->tasks[i]->name, task);
        if (!known) return ll_errorf(err, "thresholds: task '%.64s' is not evaluated", task);
        if (!json_is_object(per))
            return ll_errorf(err, "thresholds.%.64s: expected {MODEL: number}", task);
        json_object_foreach(per, model, x) {
            int have = 0;
            for (int k = 0; k < r->n_models; k++) have |= !strcmp(ll_model_id(r->models[k]), model);
            if (!have)
                return ll_errorf(err, "thresholds.%.64s: model '%.32s' is not evaluated", task, model);
            if (!json_is_number(x))
                return ll_errorf(err, "thresholds.%.64s.%.32s: expected a number", task, model);
        }
    }
    r->thresholds = json_deep_copy(j);
    return r->thresholds ? 0 : ll_errorf(err, "out of memory");
}

static const char *const known_keys[] = {
    "tasks", "models", "layers", "method", "pairs", "pairs_type", "items", "thresholds",
    "bootstrap", "seed", "details", NULL,
};

static int check_keys(const json_t *body, ll_error *err) {
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)body, key, v) {
        int ok = 0;
        for (int i = 0; known_keys[i] && !ok; i++) ok = !strcmp(known_keys[i], key);
        if (!ok) return ll_errorf(err, "unknown field '%.64s'", key);
    }
    return 0;
}

/* Every task file must be there now, so a job cannot fail on a missing
 * file later. */
static int check_files(const ll_eval_request *r, const ll_eval_env *env, ll_error *err) {
    if (r->n_tasks == 0) return 0;
    if (!env->data_dir)
        return ll_errorf(err, "no benchmark data directory is configured (--data DIR); "
                         "only custom pairs/items can be evaluated");
    for (int i = 0; i < r->n_tasks; i++) {
        const ll_task *t = r->tasks[i];
        /* sampled selfsim_words reads the three STS-B splits instead */
        int pool = t->kind == LL_TASK_CWE && r->cwe == LL_CWE_SAMPLED;
        for (int f = 0; f < (pool ? LL_BENCH_MAX_FILES : 1); f++) {
            char path[4096];
            struct stat st;
            snprintf(path, sizeof path, "%s/%s", env->data_dir,
                     pool ? ll_stsb_pool_files[f] : t->file);
            if (stat(path, &st) != 0)
                return ll_errorf(err, "task %s: data file %s is missing%s", t->name, path,
                                 pool ? " (the sampled selection reads every STS-B split; "
                                 "method.selfsim_words \"reference\" needs sts-dev.csv only)"
                                 : "");
        }
    }
    return 0;
}

static int parse_options(ll_eval_request *r, const json_t *body, ll_error *err) {
    json_t *b = json_object_get(body, "bootstrap"), *s = json_object_get(body, "seed");
    json_t *d = json_object_get(body, "details");
    r->bootstrap = LL_BOOTSTRAP_RESAMPLES;
    r->seed = LL_BOOTSTRAP_SEED;
    if (b) {
        if (!json_is_integer(b) || json_integer_value(b) < 0 || json_integer_value(b) > 100000)
            return ll_errorf(err, "bootstrap: expected a number of resamples 0..100000");
        r->bootstrap = (int)json_integer_value(b);
    }
    if (s) {
        if (!json_is_integer(s) || json_integer_value(s) < 0)
            return ll_errorf(err, "seed: expected a non-negative integer");
        r->seed = (uint64_t)json_integer_value(s);
    }
    if (d) {
        if (!json_is_boolean(d)) return ll_errorf(err, "details: expected true or false");
        r->details = json_is_true(d);
    }
    return 0;
}

ll_eval_request *ll_eval_request_parse(const json_t *body, const ll_eval_env *env,
                                       ll_error *err) {
    if (!json_is_object(body)) {
        ll_errorf(err, "the request body must be a JSON object");
        return NULL;
    }
    ll_eval_request *r = calloc(1, sizeof *r);
    if (!r) {
        ll_errorf(err, "out of memory");
        return NULL;
    }
    if (check_keys(body, err) || parse_tasks(r, json_object_get(body, "tasks"), err) ||
        parse_models(r, json_object_get(body, "models"), env, err) ||
        parse_method(r, json_object_get(body, "method"), err) ||
        parse_pairs(r, json_object_get(body, "pairs"), json_object_get(body, "pairs_type"), err) ||
        parse_items(r, json_object_get(body, "items"), err) || parse_options(r, body, err))
        goto fail;
    for (int k = 0; k < r->n_models; k++)
        if (parse_layers_for(&r->sel[k], r->models[k], json_object_get(body, "layers"), err))
            goto fail;
    if (r->n_tasks == 0 && !r->pairs && !r->items) {
        ll_errorf(err, "nothing to evaluate: give tasks (e.g. [\"rg65\"] or \"paper\"), "
                  "pairs or items");
        goto fail;
    }
    if (parse_thresholds(r, json_object_get(body, "thresholds"), err) ||
        check_files(r, env, err))
        goto fail;
    return r;
fail:
    ll_eval_request_free(r);
    return NULL;
}
