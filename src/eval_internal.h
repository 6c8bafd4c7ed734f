/* eval_internal.h - what the evaluation's source files share (eval.h is the
 * public side): the cache's lookup/store and small helpers. */
#ifndef LAYERLENS_EVAL_INTERNAL_H
#define LAYERLENS_EVAL_INTERNAL_H

#include <stddef.h>

#include "layerlens/eval.h"

#define LL_EVAL_MAX_TASKS 32
#define LL_EVAL_MAX_CUSTOM 100000

struct ll_eval_request {
    int n_tasks;
    const ll_task *tasks[LL_EVAL_MAX_TASKS];
    int n_models;
    const ll_model *models[2];   /* in the order asked for */
    ll_layer_sel sel[2];         /* per model: integer layers, then final, projected */
    ll_word_method word;
    ll_sent_method sentence;
    ll_cwe_method cwe;           /* selfsim_words' selection */
    int cwe_n;                   /* sampled: sentences wanted */
    uint64_t cwe_seed;           /* sampled: the seed of both draws */
    ll_bench *pairs;             /* custom pairs, or NULL */
    ll_bench *items;             /* custom self-similarity items, or NULL */
    long *item_index;            /* [items->n] token indices (CWE items), or NULL */
    json_t *thresholds;          /* validated copy, or NULL */
    int bootstrap;               /* resamples; 0: no comparison */
    uint64_t seed;
    int details;
};

/* A cache key: the model, the method and the text (index/mode for CWE), one
 * byte string; the layer item is matched separately. */
typedef struct ev_key {
    char *buf;
    size_t len, cap;
    size_t prefix; /* bytes of model + method, reused for every text */
} ev_key;

int ev_key_model(ev_key *k, const ll_model *m, ll_eval_variant v);
int ev_key_text(ev_key *k, const ll_eval_text *t);
void ev_key_free(ev_key *k);

/* 1 when every item of sel is cached for key (copied into row `row` of
 * out[j]), else 0 (out may then be partly written). */
int ev_cache_get(ll_eval_cache *c, const ev_key *k, const ll_layer_sel *sel,
                 const int *dims, float *const *out, int row);
/* Stores (or refreshes) every item of row `row`. */
void ev_cache_put(ll_eval_cache *c, const ev_key *k, const ll_layer_sel *sel,
                  const int *dims, float *const *out, int row);

/* Milliseconds of a monotonic clock. */
double ev_now_ms(void);

/* JSON helpers: a number, or null when !defined. */
json_t *ev_real_or_null(int defined, double x);

#endif
