/* eval_cache.c - the embedding cache of the evaluation (eval.h): vectors per
 * (model, method, text, layer item) in a chained hash table with a
 * least-recently-used list, bounded in bytes, one mutex around everything.
 *
 * Entries are one vector each (not one per text) so that an evaluation of
 * other layers of the same texts finds what it can, and the byte budget
 * counts exactly what is held.  Lookups copy the vectors out under the lock:
 * a copy of a few KiB costs nothing next to a forward pass, and no entry is
 * ever referenced from outside, so eviction needs no reference counts. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eval_internal.h"

typedef struct centry {
    struct centry *hnext;        /* bucket chain */
    struct centry *prev, *next;  /* LRU list, most recent first */
    uint64_t hash;
    int item, dim;
    size_t keylen, bytes;
    char *key;
    float vec[];
} centry;

struct ll_eval_cache {
    pthread_mutex_t mu;
    centry **buckets;
    size_t n_buckets; /* power of two */
    centry *head, *tail;
    long entries, hits, misses, evictions;
    size_t bytes, max_bytes;
};

/* ---- keys ------------------------------------------------------------------- */

static int key_reserve(ev_key *k, size_t need) {
    if (need <= k->cap) return 0;
    size_t cap = k->cap ? k->cap : 256;
    while (cap < need) cap *= 2;
    char *b = realloc(k->buf, cap);
    if (!b) return -1;
    k->buf = b, k->cap = cap;
    return 0;
}

/* The model is named by what its vectors depend on: architecture, size and
 * the directory the weights came from. */
int ev_key_model(ev_key *k, const ll_model *m, ll_eval_variant v) {
    const ll_config *cfg = ll_model_config(m);
    const char *dir = ll_model_dir(m) ? ll_model_dir(m) : "";
    size_t need = strlen(dir) + 96;
    if (key_reserve(k, need)) return -1;
    int n = snprintf(k->buf, k->cap, "%s/%d/%d/%d/%s%c%d%c", ll_model_id(m), cfg->n_layer,
                     cfg->width, cfg->vocab, dir, 0, (int)v, 0);
    k->len = k->prefix = (size_t)n;
    return 0;
}

int ev_key_text(ev_key *k, const ll_eval_text *t) {
    size_t tl = strlen(t->text);
    if (key_reserve(k, k->prefix + tl + 48)) return -1;
    int n = 0;
    if (t->index || t->index_mode) /* only CWE texts carry a position */
        n = snprintf(k->buf + k->prefix, 48, "%ld/%d", t->index, t->index_mode);
    k->buf[k->prefix + n] = 0;
    memcpy(k->buf + k->prefix + n + 1, t->text, tl);
    k->len = k->prefix + n + 1 + tl;
    return 0;
}

void ev_key_free(ev_key *k) {
    free(k->buf);
    memset(k, 0, sizeof *k);
}

static uint64_t hash_key(const char *s, size_t n, int item) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    h ^= (uint64_t)(uint32_t)item * 0x9e3779b97f4a7c15ull;
    return h ^ (h >> 29);
}

/* ---- the table ------------------------------------------------------------ */

ll_eval_cache *ll_eval_cache_new(size_t max_bytes, ll_error *err) {
    ll_eval_cache *c = calloc(1, sizeof *c);
    if (c) c->buckets = calloc(c->n_buckets = 1024, sizeof *c->buckets);
    if (!c || !c->buckets) {
        free(c);
        ll_errorf(err, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&c->mu, NULL);
    c->max_bytes = max_bytes;
    return c;
}

static void clear_locked(ll_eval_cache *c) {
    for (centry *e = c->head, *nx; e; e = nx) {
        nx = e->next;
        free(e->key);
        free(e);
    }
    memset(c->buckets, 0, c->n_buckets * sizeof *c->buckets);
    c->head = c->tail = NULL;
    c->entries = 0;
    c->bytes = 0;
}

void ll_eval_cache_clear(ll_eval_cache *c) {
    pthread_mutex_lock(&c->mu);
    clear_locked(c);
    pthread_mutex_unlock(&c->mu);
}

void ll_eval_cache_free(ll_eval_cache *c) {
    if (!c) return;
    clear_locked(c);
    free(c->buckets);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

void ll_eval_cache_info_get(ll_eval_cache *c, ll_eval_cache_info *out) {
    pthread_mutex_lock(&c->mu);
    *out = (ll_eval_cache_info){c->entries, c->bytes, c->max_bytes, c->hits, c->misses,
                                c->evictions};
    pthread_mutex_unlock(&c->mu);
}

static void lru_unlink(ll_eval_cache *c, centry *e) {
    if (e->prev) e->prev->next = e->next; else c->head = e->next;
    if (e->next) e->next->prev = e->prev; else c->tail = e->prev;
    e->prev = e->next = NULL;
}

static void lru_push_front(ll_eval_cache *c, centry *e) {
    e->prev = NULL;
    e->next = c->head;
    if (c->head) c->head->prev = e; else c->tail = e;
    c->head = e;
}

static centry **find_slot(ll_eval_cache *c, const char *key, size_t len, int item,
                          uint64_t h) {
    centry **p = &c->buckets[h & (c->n_buckets - 1)];
    for (; *p; p = &(*p)->hnext) {
        centry *e = *p;
        if (e->hash == h && e->item == item && e->keylen == len && !memcmp(e->key, key, len))
            return p;
    }
    return p;
}

static void remove_entry(ll_eval_cache *c, centry *e) {
    centry **p = find_slot(c, e->key, e->keylen, e->item, e->hash);
    if (*p == e) *p = e->hnext;
    lru_unlink(c, e);
    c->bytes -= e->bytes;
    c->entries--;
    free(e->key);
    free(e);
}

/* Doubles the bucket array when entries outnumber buckets (best effort: a
 * failed allocation only makes chains longer). */
static void maybe_grow(ll_eval_cache *c) {
    if ((size_t)c->entries < c->n_buckets) return;
    size_t nb = c->n_buckets * 2;
    centry **b = calloc(nb, sizeof *b);
    if (!b) return;
    for (size_t i = 0; i < c->n_buckets; i++)
        for (centry *e = c->buckets[i], *nx; e; e = nx) {
            nx = e->hnext;
            e->hnext = b[e->hash & (nb - 1)];
            b[e->hash & (nb - 1)] = e;
        }
    free(c->buckets);
    c->buckets = b, c->n_buckets = nb;
}

int ev_cache_get(ll_eval_cache *c, const ev_key *k, const ll_layer_sel *sel,
                 const int *dims, float *const *out, int row) {
    pthread_mutex_lock(&c->mu);
    int all = 1;
    for (int j = 0; j < sel->n && all; j++) {
        uint64_t h = hash_key(k->buf, k->len, sel->items[j]);
        centry *e = *find_slot(c, k->buf, k->len, sel->items[j], h);
        if (!e || e->dim != dims[j]) {
            all = 0;
            break;
        }
        memcpy(out[j] + (size_t)row * dims[j], e->vec, dims[j] * sizeof(float));
        lru_unlink(c, e);
        lru_push_front(c, e);
    }
    if (all) c->hits++; else c->misses++;
    pthread_mutex_unlock(&c->mu);
    return all;
}

void ev_cache_put(ll_eval_cache *c, const ev_key *k, const ll_layer_sel *sel,
                  const int *dims, float *const *out, int row) {
    pthread_mutex_lock(&c->mu);
    for (int j = 0; j < sel->n; j++) {
        size_t bytes = sizeof(centry) + k->len + dims[j] * sizeof(float);
        if (bytes > c->max_bytes) break; /* would not fit even alone */
        uint64_t h = hash_key(k->buf, k->len, sel->items[j]);
        centry **slot = find_slot(c, k->buf, k->len, sel->items[j], h);
        if (*slot) remove_entry(c, *slot);
        while (c->tail && c->bytes + bytes > c->max_bytes) {
            remove_entry(c, c->tail);
            c->evictions++;
        }
        centry *e = malloc(sizeof *e + dims[j] * sizeof(float));
        char *key = malloc(k->len);
        if (!e || !key) {
            free(e), free(key);
            break;
        }
        memcpy(key, k->buf, k->len);
        *e = (centry){NULL, NULL, NULL, h, sel->items[j], dims[j], k->len, bytes, key};
        memcpy(e->vec, out[j] + (size_t)row * dims[j], dims[j] * sizeof(float));
        maybe_grow(c);
        slot = find_slot(c, k->buf, k->len, sel->items[j], h);
        *slot = e;
        lru_push_front(c, e);
        c->bytes += bytes;
        c->entries++;
    }
    pthread_mutex_unlock(&c->mu);
}
