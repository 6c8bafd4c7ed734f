/* bpe.c - byte-level BPE: vocabulary, merges, the merge loop and its cache
 * (see bpe.h).
 *
 * Symbols are token ids throughout: every merge result of a Hugging Face
 * merges.txt is itself in vocab.json (checked at load), so a merge is one
 * lookup of the pair (left id, right id) -> (rank, merged id). */
#include "bpe.h"

#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The cache holds words up to this many bytes (longer ones are rare and
 * would mostly evict useful entries), and at most this many of them; when
 * it is full it is emptied and refills with what is in use now. */
#define CACHE_MAX_WORD 64
#define CACHE_MAX_ENTRIES 16384
#define CACHE_SLOTS (2 * CACHE_MAX_ENTRIES) /* power of two, load <= 1/2 */

/* Ids index arrays sized by the largest id: refuse absurd ones. */
#define MAX_VOCAB (1 << 24)

typedef struct merge_slot {
    uint64_t key; /* left id << 32 | right id; EMPTY_KEY when unused */
    int32_t rank;
    int32_t id;
} merge_slot;
#define EMPTY_KEY UINT64_MAX

typedef struct cache_entry {
    uint64_t hash;
    uint32_t klen, nids;
    int32_t *ids;
    char key[]; /* klen bytes, then the ids (aligned) */
} cache_entry;

typedef struct bpe_cache {
    pthread_rwlock_t lock;
    cache_entry **slots; /* CACHE_SLOTS */
    size_t n;
} bpe_cache;

struct ll_bpe {
    int vocab_size;
    char **strs;       /* [vocab_size] token strings (NULL for unused ids) */
    int32_t *str_slots; /* open-addressing string -> id, str_cap slots, -1 empty */
    size_t str_cap;
    merge_slot *merges; /* open addressing, merge_cap slots */
    size_t merge_cap;
    int32_t byte_id[256];     /* id of the one-byte token of each byte */
    int32_t byte_eow_id[256]; /* ... with the end-of-word suffix (CLIP) */
    int eow;                  /* 1 for CLIP */
    char *dec;                /* decoded bytes of all ids, back to back */
    uint32_t *dec_off;        /* [vocab_size + 1] offsets into dec */
    int32_t *span;            /* [vocab_size] see ll_bpe_span */
    bpe_cache *cache;         /* the only mutable part, behind its lock */
};

/* ---- small helpers -------------------------------------------------------- */

int ll_ids_push(ll_ids *a, int32_t id) {
    if (a->n == a->cap) {
        size_t cap = a->cap ? 2 * a->cap : 32;
        int32_t *v = realloc(a->v, cap * sizeof *v);
        if (!v) return -1;
        a->v = v;
        a->cap = cap;
    }
    a->v[a->n++] = id;
    return 0;
}

void ll_ids_free(ll_ids *a) {
    free(a->v);
    memset(a, 0, sizeof *a);
}

static uint64_t hash_bytes(const void *p, size_t n) { /* FNV-1a */
    const uint8_t *s = p;
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 1099511628211ULL;
    return h;
}

static uint64_t hash_u64(uint64_t x) { /* splitmix64 finaliser */
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static size_t pow2_at_least(size_t n) {
    size_t c = 16;
    while (c < n) c *= 2;
    return c;
}

static size_t utf8_put(uint32_t cp, char *out) {
    if (cp < 0x80) { out[0] = (char)cp; return 1; }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    out[0] = (char)(0xE0 | (cp >> 12)); /* bytes_to_unicode stays below 0x144 */
    out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[2] = (char)(0x80 | (cp & 0x3F));
    return 3;
}

/* GPT-2's bytes_to_unicode(): printable Latin-1 bytes map to themselves, the
 * other 68 bytes, in order, to U+0100, U+0101, ... so that every byte is a
 * visible character in vocab.json. */
static void bytes_to_unicode(uint32_t cs[256]) {
    uint32_t next = 256;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
        cs[b] = printable ? (uint32_t)b : next++;
    }
}

/* ---- vocabulary -------------------------------------------------------------- */

int32_t ll_bpe_id(const ll_bpe *b, const char *tok, size_t len) {
    size_t mask = b->str_cap - 1;
    for (size_t i = hash_bytes(tok, len) & mask;; i = (i + 1) & mask) {
        int32_t id = b->str_slots[i];
        if (id < 0) return -1;
        const char *s = b->strs[id];
        if (strnlen(s, len + 1) == len && memcmp(s, tok, len) == 0) return id;
    }
}

static void str_insert(ll_bpe *b, int32_t id) {
    size_t mask = b->str_cap - 1;
    size_t i = hash_bytes(b->strs[id], strlen(b->strs[id])) & mask;
    while (b->str_slots[i] >= 0) i = (i + 1) & mask;
    b->str_slots[i] = id;
}

static int load_vocab(ll_bpe *b, const char *path, ll_error *err) {
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    if (!root) return ll_errorf(err, "%s: line %d: %s", path, je.line, je.text);
    if (!json_is_object(root) || json_object_size(root) == 0) {
        json_decref(root);
        return ll_errorf(err, "%s: expected a non-empty JSON object token -> id", path);
    }
    const char *key;
    json_t *val;
    json_int_t max_id = -1;
    json_object_foreach(root, key, val) {
        json_int_t id = json_is_integer(val) ? json_integer_value(val) : -1;
        if (id < 0 || id >= MAX_VOCAB) {
            json_decref(root);
            return ll_errorf(err, "%s: token \"%s\" has no valid id", path, key);
        }
        if (id > max_id) max_id = id;
    }
    b->vocab_size = (int)max_id + 1;
    b->strs = calloc((size_t)b->vocab_size, sizeof *b->strs);
    b->str_cap = pow2_at_least(2 * json_object_size(root));
    b->str_slots = malloc(b->str_cap * sizeof *b->str_slots);
    if (!b->strs || !b->str_slots) {
        json_decref(root);
        return ll_errorf(err, "%s: out of memory", path);
    }
    memset(b->str_slots, 0xFF, b->str_cap * sizeof *b->str_slots);
    json_object_foreach(root, key, val) {
        json_int_t id = json_integer_value(val);
        if (b->strs[id]) {
            json_decref(root);
            return ll_errorf(err, "%s: id %lld is used by \"%s\" and \"%s\"", path,
                             (long long)id, b->strs[id], key);
        }
        if (!(b->strs[id] = strdup(key))) {
            json_decref(root);
            return ll_errorf(err, "%s: out of memory", path);
        }
        str_insert(b, (int32_t)id);
    }
    json_decref(root);
    return 0;
}

/* ---- merges -------------------------------------------------------------------- */

static merge_slot *merge_find(const ll_bpe *b, int32_t left, int32_t right) {
    uint64_t key = (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
    size_t mask = b->merge_cap - 1;
    for (size_t i = hash_u64(key) & mask;; i = (i + 1) & mask) {
        merge_slot *s = &b->merges[i];
        if (s->key == key || s->key == EMPTY_KEY) return s;
    }
}

/* One line "A B" of merges.txt with the given rank.  As in the reference
 * (a Python dict built from the list), a repeated pair keeps its last rank. */
static int add_merge(ll_bpe *b, const char *line, size_t len, int32_t rank,
                     const char *path, size_t lineno, ll_error *err) {
    const char *sp = memchr(line, ' ', len);
    size_t la = sp ? (size_t)(sp - line) : len, lb = sp ? len - la - 1 : 0;
    if (!sp || la == 0 || lb == 0 || memchr(sp + 1, ' ', lb))
        return ll_errorf(err, "%s:%zu: expected two tokens separated by one space", path, lineno);
    char joined[1024];
    if (la + lb >= sizeof joined)
        return ll_errorf(err, "%s:%zu: merge too long", path, lineno);
    memcpy(joined, line, la);
    memcpy(joined + la, sp + 1, lb);
    joined[la + lb] = 0;
    int32_t a = ll_bpe_id(b, line, la), c = ll_bpe_id(b, sp + 1, lb);
    int32_t ab = ll_bpe_id(b, joined, la + lb);
    if (a < 0 || c < 0 || ab < 0)
        return ll_errorf(err, "%s:%zu: merge \"%.*s\" uses or makes a token that is not "
                         "in the vocabulary", path, lineno, (int)len, line);
    merge_slot *s = merge_find(b, a, c);
    s->key = (uint64_t)(uint32_t)a << 32 | (uint32_t)c;
    s->rank = rank;
    s->id = ab;
    return 0;
}

static int load_merges(ll_bpe *b, const char *path, ll_error *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return ll_errorf(err, "%s: cannot open", path);
    char *line = NULL;
    size_t cap = 0, lineno = 0, nlines = 0;
    ssize_t len;
    while (getline(&line, &cap, f) >= 0) nlines++;
    b->merge_cap = pow2_at_least(2 * nlines + 2);
    b->merges = malloc(b->merge_cap * sizeof *b->merges);
    if (!b->merges) {
        free(line);
        fclose(f);
        return ll_errorf(err, "%s: out of memory", path);
    }
    for (size_t i = 0; i < b->merge_cap; i++) b->merges[i].key = EMPTY_KEY;
    rewind(f);
    int32_t rank = 0;
    int rc = 0;
    while (rc == 0 && (len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) len--;
        if (lineno == 1 && strncmp(line, "#version", 8) == 0) continue;
        if (len == 0) continue; /* the trailing empty line */
        rc = add_merge(b, line, (size_t)len, rank++, path, lineno, err);
    }
    free(line);
    fclose(f);
    if (rc == 0 && rank == 0) rc = ll_errorf(err, "%s: no merges", path);
    return rc;
}

/* ---- byte mapping and decoding tables ------------------------------------------ */

static int build_byte_tables(ll_bpe *b, const char *eow, ll_error *err) {
    uint32_t cs[256];
    bytes_to_unicode(cs);
    size_t eowlen = eow ? strlen(eow) : 0;
    for (int i = 0; i < 256; i++) {
        char tok[16];
        size_t n = utf8_put(cs[i], tok);
        b->byte_id[i] = ll_bpe_id(b, tok, n);
        memcpy(tok + n, eow ? eow : "", eowlen);
        b->byte_eow_id[i] = eow ? ll_bpe_id(b, tok, n + eowlen) : b->byte_id[i];
        if (b->byte_id[i] < 0 || b->byte_eow_id[i] < 0)
            return ll_errorf(err, "the vocabulary has no token for byte 0x%02X", i);
    }
    return 0;
}

/* Undoes bytes_to_unicode for every token (and turns the end-of-word suffix
 * into a space, as CLIP's decode does), so decoding is one copy per id. */
static int build_decode_table(ll_bpe *b, const char *eow, ll_error *err) {
    uint32_t cs[256];
    int16_t inv[512];
    bytes_to_unicode(cs);
    memset(inv, 0xFF, sizeof inv);
    for (int i = 0; i < 256; i++) inv[cs[i]] = (int16_t)i;
    size_t total = 0, eowlen = eow ? strlen(eow) : 0;
    for (int id = 0; id < b->vocab_size; id++) total += b->strs[id] ? strlen(b->strs[id]) : 0;
    b->dec = malloc(total + 1);
    b->dec_off = malloc(((size_t)b->vocab_size + 1) * sizeof *b->dec_off);
    b->span = malloc((size_t)b->vocab_size * sizeof *b->span);
    if (!b->dec || !b->dec_off || !b->span) return ll_errorf(err, "out of memory");
    size_t o = 0;
    for (int id = 0; id < b->vocab_size; id++) {
        b->dec_off[id] = (uint32_t)o;
        const unsigned char *s = (const unsigned char *)b->strs[id];
        size_t n = s ? strlen((const char *)s) : 0, i = 0;
        int has_eow = eow && n >= eowlen && memcmp(s + n - eowlen, eow, eowlen) == 0;
        if (has_eow) n -= eowlen;
        while (i < n) {
            /* 1..3-byte characters are all the byte alphabet needs; anything
             * else (a special token's text) is copied as it is. */
            uint32_t cp = s[i];
            size_t k = 1;
            if ((s[i] & 0xE0) == 0xC0 && i + 1 < n) {
                cp = (uint32_t)(s[i] & 0x1F) << 6 | (s[i + 1] & 0x3F);
                k = 2;
            }
            if (cp < 512 && inv[cp] >= 0 && (k == 2 || s[i] < 0x80)) {
                b->dec[o++] = (char)inv[cp];
            } else {
                memcpy(b->dec + o, s + i, k);
                o += k;
            }
            i += k;
        }
        b->span[id] = (int32_t)(o - b->dec_off[id]);
        if (has_eow) b->dec[o++] = ' ';
    }
    b->dec_off[b->vocab_size] = (uint32_t)o;
    return 0;
}

/* ---- load / free ---------------------------------------------------------------------- */

static bpe_cache *cache_new(void) {
    bpe_cache *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->slots = calloc(CACHE_SLOTS, sizeof *c->slots);
    if (!c->slots || pthread_rwlock_init(&c->lock, NULL) != 0) {
        free(c->slots);
        free(c);
        return NULL;
    }
    return c;
}

static void cache_clear(bpe_cache *c) {
    for (size_t i = 0; i < CACHE_SLOTS; i++) {
        free(c->slots[i]);
        c->slots[i] = NULL;
    }
    c->n = 0;
}

static void cache_free(bpe_cache *c) {
    if (!c) return;
    cache_clear(c);
    pthread_rwlock_destroy(&c->lock);
    free(c->slots);
    free(c);
}

ll_bpe *ll_bpe_load(const char *vocab_path, const char *merges_path,
                    const char *eow, ll_error *err) {
    ll_bpe *b = calloc(1, sizeof *b);
    if (!b) {
        ll_errorf(err, "out of memory");
        return NULL;
    }
    b->eow = eow != NULL;
    if (load_vocab(b, vocab_path, err) || load_merges(b, merges_path, err) ||
        build_byte_tables(b, eow, err) || build_decode_table(b, eow, err)) {
        ll_bpe_free(b);
        return NULL;
    }
    if (!(b->cache = cache_new())) {
        ll_bpe_free(b);
        ll_errorf(err, "out of memory");
        return NULL;
    }
    return b;
}

void ll_bpe_free(ll_bpe *b) {
    if (!b) return;
    for (int i = 0; b->strs && i < b->vocab_size; i++) free(b->strs[i]);
    free(b->strs);
    free(b->str_slots);
    free(b->merges);
    free(b->dec);
    free(b->dec_off);
    free(b->span);
    cache_free(b->cache);
    free(b);
}

int ll_bpe_vocab_size(const ll_bpe *b) { return b->vocab_size; }

const char *ll_bpe_str(const ll_bpe *b, int32_t id) {
    return id >= 0 && id < b->vocab_size ? b->strs[id] : NULL;
}

const char *ll_bpe_bytes(const ll_bpe *b, int32_t id, size_t *len) {
    if (id < 0 || id >= b->vocab_size || !b->strs[id]) return NULL;
    *len = b->dec_off[id + 1] - b->dec_off[id];
    return b->dec + b->dec_off[id];
}

int ll_bpe_span(const ll_bpe *b, int32_t id) {
    return id >= 0 && id < b->vocab_size ? b->span[id] : 0;
}

/* ---- the merge loop ------------------------------------------------------------------ */

/* A min-heap of (rank << 32 | position): the lowest rank first and, among
 * equal ranks (= the same pair), the leftmost occurrence first. */
typedef struct heap {
    uint64_t *v;
    size_t n;
} heap;

static void heap_push(heap *h, uint64_t x) {
    size_t i = h->n++;
    while (i > 0 && h->v[(i - 1) / 2] > x) {
        h->v[i] = h->v[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h->v[i] = x;
}

static uint64_t heap_pop(heap *h) {
    uint64_t top = h->v[0], x = h->v[--h->n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->n) break;
        if (c + 1 < h->n && h->v[c + 1] < h->v[c]) c++;
        if (h->v[c] >= x) break;
        h->v[i] = h->v[c];
        i = c;
    }
    if (h->n) h->v[i] = x;
    return top;
}

/* Pushes the pair starting at symbol pos, if it is a merge. */
static void push_pair(const ll_bpe *b, heap *h, const int32_t *id, const int32_t *next, int32_t pos) {
    if (pos < 0 || id[pos] < 0 || next[pos] < 0) return;
    const merge_slot *m = merge_find(b, id[pos], id[next[pos]]);
    if (m->key != EMPTY_KEY) heap_push(h, (uint64_t)(uint32_t)m->rank << 32 | (uint32_t)pos);
}

/* The reference loop: take the pair of lowest rank among the current
 * symbols, merge all its occurrences from left to right (non-overlapping),
 * repeat until no pair is a merge.  Done here in O(n log n) with a linked
 * list of symbols and a heap of candidate pairs checked lazily: an entry is
 * stale when its symbols were merged since, which shows as its pair no
 * longer having its rank.  Pairs created while merging rank r are pushed
 * only after every occurrence of r is done, exactly like the reference's
 * rounds (with any merges file, not only ones trained in rank order).
 * id/next/prev have n entries, hv 3n, pend 2n. */
static void merge_word(const ll_bpe *b, int32_t *id, int32_t *next, int32_t *prev, size_t n,
                       uint64_t *hv, int32_t *pend) {
    heap h = {hv, 0};
    for (size_t i = 0; i < n; i++) {
        next[i] = i + 1 < n ? (int32_t)i + 1 : -1;
        prev[i] = (int32_t)i - 1;
    }
    for (size_t i = 0; i + 1 < n; i++) push_pair(b, &h, id, next, (int32_t)i);
    while (h.n > 0) {
        uint32_t rank = (uint32_t)(h.v[0] >> 32);
        size_t npend = 0;
        while (h.n > 0 && (uint32_t)(h.v[0] >> 32) == rank) {
            int32_t pos = (int32_t)(uint32_t)heap_pop(&h);
            int32_t nx = next[pos];
            if (id[pos] < 0 || nx < 0) continue;
            const merge_slot *m = merge_find(b, id[pos], id[nx]);
            if (m->key == EMPTY_KEY || (uint32_t)m->rank != rank) continue; /* stale */
            id[pos] = m->id;
            id[nx] = -1;
            next[pos] = next[nx];
            if (next[nx] >= 0) prev[next[nx]] = pos;
            pend[npend++] = prev[pos];
            pend[npend++] = pos;
        }
        for (size_t i = 0; i < npend; i++) push_pair(b, &h, id, next, pend[i]);
    }
}

/* ---- the cache ---------------------------------------------------------------------- */

static cache_entry **cache_slot(bpe_cache *c, uint64_t hash, const uint8_t *w, size_t n) {
    size_t mask = CACHE_SLOTS - 1;
    for (size_t i = hash & mask;; i = (i + 1) & mask) {
        cache_entry *e = c->slots[i];
        if (!e || (e->hash == hash && e->klen == n && memcmp(e->key, w, n) == 0))
            return &c->slots[i];
    }
}

/* Appends the cached ids of w to out: 1 if found, 0 if not, -1 on OOM. */
static int cache_get(bpe_cache *c, uint64_t hash, const uint8_t *w, size_t n, ll_ids *out) {
    int rc = 0;
    pthread_rwlock_rdlock(&c->lock);
    cache_entry *e = *cache_slot(c, hash, w, n);
    if (e) {
        rc = 1;
        for (uint32_t i = 0; i < e->nids && rc == 1; i++)
            if (ll_ids_push(out, e->ids[i])) rc = -1;
    }
    pthread_rwlock_unlock(&c->lock);
    return rc;
}

/* Best effort: a failed allocation just leaves the word uncached. */
static void cache_put(bpe_cache *c, uint64_t hash, const uint8_t *w, size_t n,
                      const int32_t *ids, size_t nids) {
    size_t key_space = (n + sizeof(int32_t) - 1) / sizeof(int32_t) * sizeof(int32_t);
    cache_entry *e = malloc(sizeof *e + key_space + nids * sizeof *ids);
    if (!e) return;
    e->hash = hash;
    e->klen = (uint32_t)n;
    e->nids = (uint32_t)nids;
    memcpy(e->key, w, n);
    e->ids = (int32_t *)(void *)(e->key + key_space);
    memcpy(e->ids, ids, nids * sizeof *ids);
    pthread_rwlock_wrlock(&c->lock);
    if (c->n >= CACHE_MAX_ENTRIES) cache_clear(c);
    cache_entry **slot = cache_slot(c, hash, w, n);
    if (*slot) { /* another thread was first */
        free(e);
    } else {
        *slot = e;
        c->n++;
    }
    pthread_rwlock_unlock(&c->lock);
}

void ll_bpe_cache_stats(const ll_bpe *b, size_t *entries, size_t *max_entries) {
    pthread_rwlock_rdlock(&b->cache->lock);
    *entries = b->cache->n;
    pthread_rwlock_unlock(&b->cache->lock);
    *max_entries = CACHE_MAX_ENTRIES;
}

/* ---- encoding one word ------------------------------------------------------------ */

int ll_bpe_encode(const ll_bpe *b, const uint8_t *word, size_t n, ll_ids *out) {
    uint64_t hash = 0;
    int cacheable = n <= CACHE_MAX_WORD;
    if (cacheable) {
        hash = hash_bytes(word, n);
        int rc = cache_get(b->cache, hash, word, n, out);
        if (rc) return rc < 0 ? -1 : 0;
    }
    /* Short words (nearly all) work on the stack. */
    enum { SMALL = 64 };
    int32_t s_id[SMALL], s_next[SMALL], s_prev[SMALL], s_pend[2 * SMALL];
    uint64_t s_heap[3 * SMALL];
    int32_t *id = s_id, *next = s_next, *prev = s_prev, *pend = s_pend;
    uint64_t *hv = s_heap;
    void *block = NULL;
    if (n > SMALL) {
        block = malloc(n * (5 * sizeof(int32_t) + 3 * sizeof(uint64_t)));
        if (!block) return -1;
        hv = block;
        id = (int32_t *)(hv + 3 * n);
        next = id + n;
        prev = next + n;
        pend = prev + n;
    }
    for (size_t i = 0; i < n; i++) id[i] = b->byte_id[word[i]];
    id[n - 1] = b->byte_eow_id[word[n - 1]];
    merge_word(b, id, next, prev, n, hv, pend);

    size_t start = out->n;
    int rc = 0;
    for (int32_t i = 0; i >= 0 && rc == 0; i = next[i]) rc = ll_ids_push(out, id[i]);
    if (rc == 0 && cacheable) cache_put(b->cache, hash, word, n, out->v + start, out->n - start);
    free(block);
    return rc;
}
