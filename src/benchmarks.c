/* benchmarks.c - task registry, strict benchmark parsers, custom items and
 * checksums (see benchmarks.h). */
#include "layerlens/benchmarks.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <utf8proc.h>

/* ---- the registry ---------------------------------------------------------- */

#define STSB_TEST "stsb/sts-test.csv"
#define STSB_DEV "stsb/sts-dev.csv"
#define STSB_TRAIN "stsb/sts-train.csv"

/* name, file, kind, delim, header, fields, a, b, gold, max, expected, text */
static const ll_task tasks[] = {
    {"rg65", "rg65.tsv", LL_TASK_WORD_PAIRS, '\t', 0, 3, 1, 2, 3, 0, 65,
     "Rubenstein & Goodenough (1965) word similarity"},
    {"ws353", "ws353.tsv", LL_TASK_WORD_PAIRS, '\t', 1, 3, 1, 2, 3, 0, 353,
     "WordSim-353, all 353 pairs (combined.tab)"},
    {"ws353_sim", "ws353_sim.tsv", LL_TASK_WORD_PAIRS, '\t', 0, 3, 1, 2, 3, 0, 203,
     "WordSim-353 similarity split (Agirre et al. 2009)"},
    {"ws353_rel", "ws353_rel.tsv", LL_TASK_WORD_PAIRS, '\t', 0, 3, 1, 2, 3, 0, 252,
     "WordSim-353 relatedness split (Agirre et al. 2009)"},
    {"simlex999", "simlex999.tsv", LL_TASK_WORD_PAIRS, '\t', 1, 10, 1, 2, 4, 0, 999,
     "SimLex-999 (Hill et al. 2015), gold = SimLex999 column"},
    {"simverb3500", "simverb3500.tsv", LL_TASK_WORD_PAIRS, '\t', 0, 5, 1, 2, 4, 0, 3500,
     "SimVerb-3500 (Gerz et al. 2016)"},
    {"valnorm", "bellezza_valence.csv", LL_TASK_VALNORM, ',', 1, 8, 2, 0, 5, 0, 399,
     "ValNorm on the Bellezza et al. (1986) pleasantness norms"},
    {"stsb", STSB_TEST, LL_TASK_SENTENCE_PAIRS, '\t', 0, 7, 6, 7, 5, 0, 1379,
     "STS Benchmark test split (SemEval-2017 Task 1)"},
    {"stsb_dev", STSB_DEV, LL_TASK_SENTENCE_PAIRS, '\t', 0, 7, 6, 7, 5, 0, 1500,
     "STS Benchmark dev split"},
    {"stsb_train", STSB_TRAIN, LL_TASK_SENTENCE_PAIRS, '\t', 0, 7, 6, 7, 5, 0, 5749,
     "STS Benchmark train split"},
    {"selfsim_sentences", STSB_TEST, LL_TASK_SENTENCES, '\t', 0, 7, 6, 0, 0, 0, 1379,
     "sentence self-similarity: sentence1 of STS-B test, duplicates kept"},
    {"selfsim_words", STSB_DEV, LL_TASK_CWE, '\t', 0, 7, 6, 7, 0, 2000, 2000,
     "contextual word self-similarity; this file: the reference selection (the first "
     "2000 distinct STS-B dev sentences); the default sampled selection draws from every "
     "STS-B split"},
};

#define N_TASKS ((int)(sizeof tasks / sizeof tasks[0]))

int ll_task_count(void) { return N_TASKS; }

const ll_task *ll_task_at(int i) { return i >= 0 && i < N_TASKS ? &tasks[i] : NULL; }

const ll_task *ll_task_find(const char *name) {
    for (int i = 0; name && i < N_TASKS; i++)
        if (strcmp(tasks[i].name, name) == 0) return &tasks[i];
    return NULL;
}

const char *ll_task_kind_name(ll_task_kind k) {
    switch (k) {
    case LL_TASK_WORD_PAIRS: return "word_pairs";
    case LL_TASK_SENTENCE_PAIRS: return "sentence_pairs";
    case LL_TASK_VALNORM: return "valnorm_words";
    case LL_TASK_SENTENCES: return "sentences";
    case LL_TASK_CWE: return "cwe_sentences";
    }
    return "?";
}

int ll_task_kind_is_pair(ll_task_kind k) {
    return k == LL_TASK_WORD_PAIRS || k == LL_TASK_SENTENCE_PAIRS;
}

int ll_task_kind_has_gold(ll_task_kind k) {
    return ll_task_kind_is_pair(k) || k == LL_TASK_VALNORM;
}

const char *ll_task_kind_metric(ll_task_kind k) {
    if (ll_task_kind_is_pair(k)) return "spearman";
    if (k == LL_TASK_VALNORM) return "pearson";
    return "self_similarity";
}

/* The WEAT pleasant / unpleasant attribute words used by ValNorm, in the
 * order of the reference. */
const char *const ll_valnorm_pleasant[LL_VALNORM_N] = {
    "caress", "freedom", "health", "love", "peace", "cheer", "friend",
    "heaven", "loyal", "pleasure", "diamond", "gentle", "honest", "lucky",
    "rainbow", "diploma", "gift", "honor", "miracle", "sunrise", "family",
    "happy", "laughter", "paradise", "vacation",
};
const char *const ll_valnorm_unpleasant[LL_VALNORM_N] = {
    "abuse", "crash", "filth", "murder", "sickness", "accident", "death",
    "grief", "poison", "stink", "assault", "disaster", "hatred", "pollute",
    "tragedy", "divorce", "jail", "poverty", "ugly", "cancer", "kill",
    "rotten", "vomit", "agony", "prison",
};

/* ---- string set -------------------------------------------------------------- */

/* Open addressing over NUL-terminated strings owned elsewhere; maps a string
 * to the int it was first added with.  Used for the CWE sentence set and for
 * ll_bench_unique. */
typedef struct strset {
    const char **keys;
    int *vals;
    size_t cap, n;
} strset;

static uint64_t fnv1a(const char *s) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
    return h;
}

static int strset_init(strset *s, size_t cap) {
    s->cap = cap;
    s->n = 0;
    s->keys = calloc(cap, sizeof *s->keys);
    s->vals = calloc(cap, sizeof *s->vals);
    return s->keys && s->vals ? 0 : -1;
}

static void strset_free(strset *s) {
    free(s->keys);
    free(s->vals);
    memset(s, 0, sizeof *s);
}

/* Slot of key, or of the empty slot where it belongs. */
static size_t strset_slot(const strset *s, const char *key) {
    size_t i = fnv1a(key) & (s->cap - 1);
    while (s->keys[i] && strcmp(s->keys[i], key) != 0) i = (i + 1) & (s->cap - 1);
    return i;
}

static int strset_grow(strset *s) {
    strset bigger;
    if (strset_init(&bigger, s->cap * 2)) {
        strset_free(&bigger);
        return -1;
    }
    for (size_t i = 0; i < s->cap; i++) {
        if (!s->keys[i]) continue;
        size_t j = strset_slot(&bigger, s->keys[i]);
        bigger.keys[j] = s->keys[i];
        bigger.vals[j] = s->vals[i];
    }
    bigger.n = s->n;
    strset_free(s);
    *s = bigger;
    return 0;
}

/* Returns the value key already has, or adds it with val and returns -1;
 * -2 when out of memory. */
static int strset_add(strset *s, const char *key, int val) {
    size_t i = strset_slot(s, key);
    if (s->keys[i]) return s->vals[i];
    if (2 * (s->n + 1) > s->cap) {
        if (strset_grow(s)) return -2;
        i = strset_slot(s, key);
    }
    s->keys[i] = key;
    s->vals[i] = val;
    s->n++;
    return -1;
}

/* ---- field checks -------------------------------------------------------------- */

static int utf8_valid(const char *s) {
    const utf8proc_uint8_t *p = (const utf8proc_uint8_t *)s;
    utf8proc_ssize_t len = (utf8proc_ssize_t)strlen(s);
    while (len > 0) {
        utf8proc_int32_t cp;
        utf8proc_ssize_t k = utf8proc_iterate(p, len, &cp);
        if (k <= 0) return 0;
        p += k;
        len -= k;
    }
    return 1;
}

/* A decimal number as written in the data sets: [+-]digits[.digits][e[+-]
 * digits] (digits on at least one side of the point).  Checked before strtod
 * so that hex, "nan", "inf" and spaces are rejected; the value must be
 * finite. */
static int parse_gold(const char *s, double *out) {
    const char *p = s;
    if (*p == '+' || *p == '-') p++;
    int digits = 0;
    while (*p >= '0' && *p <= '9') p++, digits++;
    if (*p == '.') {
        p++;
        while (*p >= '0' && *p <= '9') p++, digits++;
    }
    if (!digits) return -1;
    if (*p == 'e' || *p == 'E') {
        p++;
        if (*p == '+' || *p == '-') p++;
        if (!(*p >= '0' && *p <= '9')) return -1;
        while (*p >= '0' && *p <= '9') p++;
    }
    if (*p) return -1;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (*end || !isfinite(v)) return -1; /* e.g. a locale with a decimal comma */
    *out = v;
    return 0;
}

/* A printable, ASCII-only excerpt of a bad field for a skip reason (bytes
 * outside printable ASCII become '?', so the reason is always valid JSON
 * text). */
static void excerpt(const char *s, char *out, size_t cap) {
    size_t i = 0;
    for (; s[i] && i + 4 < cap && i < 32; i++)
        out[i] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
    if (s[i] && i + 4 <= cap) out[i++] = '.', out[i++] = '.', out[i++] = '.';
    out[i] = 0;
}

static char *copy_into(char **dst, const char *s);

/* ---- parsing ---------------------------------------------------------------------- */

#define MAX_FIELDS 16 /* only the first n_fields (at most 10) are looked at */

typedef struct parser {
    const ll_task *t;
    ll_bench *b;
    int cap_items, cap_skips;
    strset seen; /* CWE: sentences already taken */
} parser;

static int add_skip(parser *ps, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int add_skip(parser *ps, int line, const char *fmt, ...) {
    ll_bench *b = ps->b;
    if (b->n_skipped == ps->cap_skips) {
        int cap = ps->cap_skips ? 2 * ps->cap_skips : 16;
        ll_skip *s = realloc(b->skipped, (size_t)cap * sizeof *s);
        if (!s) return -1;
        b->skipped = s;
        ps->cap_skips = cap;
    }
    ll_skip *s = &b->skipped[b->n_skipped++];
    s->line = line;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->reason, sizeof s->reason, fmt, ap);
    va_end(ap);
    return 0;
}

static int add_item(parser *ps, const char *a, const char *b, double gold, int line) {
    ll_bench *bench = ps->b;
    bench->n_available++;
    if (ps->t->max_items && bench->n >= ps->t->max_items) return 0;
    if (bench->n == ps->cap_items) {
        int cap = ps->cap_items ? 2 * ps->cap_items : 256;
        ll_item *it = realloc(bench->items, (size_t)cap * sizeof *it);
        if (!it) return -1;
        bench->items = it;
        ps->cap_items = cap;
    }
    bench->items[bench->n++] = (ll_item){a, b, gold, line};
    return 0;
}

/* Checks one text field; 0 when usable, else a skip is recorded and 1. */
static int check_text(parser *ps, int line, int field, const char *s) {
    char ex[48];
    if (!*s) return add_skip(ps, line, "field %d is empty", field) ? -1 : 1;
    if (!utf8_valid(s)) {
        excerpt(s, ex, sizeof ex);
        return add_skip(ps, line, "field %d is not valid UTF-8: \"%s\"", field, ex) ? -1 : 1;
    }
    return 0;
}

/* The CWE set: each field's sentence once, in first-occurrence order. */
static int add_unique(parser *ps, const char *s, int line) {
    int r = strset_add(&ps->seen, s, line);
    if (r == -2) return -1;
    return r == -1 ? add_item(ps, s, NULL, 0, line) : 0;
}

/* One data line, NUL-terminated in place at p[len]; -1 only when out of
 * memory. */
static int parse_line(parser *ps, char *p, size_t len, int line) {
    const ll_task *t = ps->t;
    if (len == 0) return add_skip(ps, line, "empty line");
    if (memchr(p, 0, len)) return add_skip(ps, line, "the line contains a NUL byte");

    char *f[MAX_FIELDS];
    int nf = 0;
    for (char *q = p;;) {
        if (nf < MAX_FIELDS) f[nf] = q;
        nf++;
        char *d = strchr(q, t->delim);
        if (!d) break;
        *d = 0;
        q = d + 1;
    }
    if (nf < t->n_fields)
        return add_skip(ps, line, "%d field%s, %d expected (split on %s)", nf,
                        nf == 1 ? "" : "s", t->n_fields,
                        t->delim == '\t' ? "TAB" : "','");
    if (nf > t->n_fields) ps->b->n_extra_fields++;

    const char *a = f[t->field_a - 1], *b = t->field_b ? f[t->field_b - 1] : NULL;
    int rc;
    if ((rc = check_text(ps, line, t->field_a, a))) return rc < 0 ? -1 : 0;
    if (b && (rc = check_text(ps, line, t->field_b, b))) return rc < 0 ? -1 : 0;
    double gold = 0;
    if (t->field_gold && parse_gold(f[t->field_gold - 1], &gold)) {
        char ex[48];
        excerpt(f[t->field_gold - 1], ex, sizeof ex);
        return add_skip(ps, line, "field %d is not a finite decimal number: \"%s\"",
                        t->field_gold, ex);
    }
    if (t->kind == LL_TASK_CWE) {
        if (add_unique(ps, a, line)) return -1;
        return b ? add_unique(ps, b, line) : 0;
    }
    return add_item(ps, a, b, gold, line);
}

static ll_bench *bench_new(const char *name, ll_task_kind kind) {
    ll_bench *b = calloc(1, sizeof *b);
    if (!b) return NULL;
    snprintf(b->name, sizeof b->name, "%s", name ? name : "custom");
    b->kind = kind;
    return b;
}

void ll_bench_free(ll_bench *b) {
    if (!b) return;
    free(b->items);
    free(b->item_file);
    free(b->skipped);
    free(b->text);
    free(b);
}

/* Walks the lines of b->text[0..len) (LF split, CR before LF dropped, no
 * final empty line) and parses each data line. */
static int parse_lines(parser *ps, size_t len) {
    char *p = ps->b->text, *end = p + len;
    int line = 0;
    while (p < end) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        char *e = nl ? nl : end, *next = nl ? nl + 1 : end;
        line++;
        if (e > p && e[-1] == '\r') e--;
        *e = 0; /* at the CR, the LF, or text[len] */
        if (line > ps->t->header_lines) {
            ps->b->n_lines++;
            if (parse_line(ps, p, (size_t)(e - p), line)) return -1;
        }
        p = next;
    }
    return 0;
}

ll_bench *ll_bench_parse(const ll_task *t, const char *data, size_t len,
                         ll_error *err) {
    if (!t) {
        ll_errorf(err, "no task given");
        return NULL;
    }
    if (len == 0) {
        ll_errorf(err, "%s: the file is empty", t->name);
        return NULL;
    }
    ll_bench *b = bench_new(t->name, t->kind);
    parser ps = {.t = t, .b = b};
    if (!b || !(b->text = malloc(len + 1)) ||
        (t->kind == LL_TASK_CWE && strset_init(&ps.seen, 4096)))
        goto oom;
    b->task = t;
    memcpy(b->text, data, len);
    b->text[len] = 0;
    if (parse_lines(&ps, len)) goto oom;
    strset_free(&ps.seen);
    if (b->n == 0) {
        if (b->n_skipped > 0)
            ll_errorf(err, "%s: no usable items: all %d data lines were skipped "
                           "(line %d: %s)", t->name, b->n_lines,
                      b->skipped[0].line, b->skipped[0].reason);
        else
            ll_errorf(err, "%s: no data lines after %d header line%s", t->name,
                      t->header_lines, t->header_lines == 1 ? "" : "s");
        ll_bench_free(b);
        return NULL;
    }
    return b;
oom:
    strset_free(&ps.seen);
    ll_bench_free(b);
    ll_errorf(err, "%s: out of memory while parsing %zu bytes", t->name, len);
    return NULL;
}

static char *read_whole_file(const char *path, size_t *len, ll_error *err) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        ll_errorf(err, "cannot open %s: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap) break;
        char *nb = realloc(buf, 2 * cap);
        if (!nb) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = nb;
        cap *= 2;
    }
    int bad = ferror(f);
    fclose(f);
    if (!buf || bad) {
        free(buf);
        ll_errorf(err, "cannot read %s: %s", path, bad ? "read error" : "out of memory");
        return NULL;
    }
    *len = n;
    return buf;
}

ll_bench *ll_bench_load(const char *data_dir, const ll_task *t, ll_error *err) {
    if (!t) {
        ll_errorf(err, "no task given");
        return NULL;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", data_dir ? data_dir : ".", t->file);
    size_t len;
    char *data = read_whole_file(path, &len, err);
    if (!data) return NULL;
    char sha[65];
    ll_bench *b = NULL;
    if (ll_sha256_hex(data, len, sha, err) == 0) b = ll_bench_parse(t, data, len, err);
    free(data);
    if (!b) {
        ll_error_prefix(err, "%s", path);
        return NULL;
    }
    memcpy(b->sha256, sha, sizeof sha);
    b->bytes = len;
    b->n_files = 1;
    b->files[0] = (ll_bench_file){t->file, len, "", b->n_lines, b->n_skipped};
    memcpy(b->files[0].sha256, sha, sizeof sha);
    return b;
}

/* ---- the STS-B sentence pool ----------------------------------------------------- */

const char *const ll_stsb_pool_files[LL_BENCH_MAX_FILES] = {STSB_TRAIN, STSB_DEV, STSB_TEST};

/* Each split read as the selfsim_words file is (distinct within the file),
 * then merged; max_items 0: every sentence. */
static const ll_task pool_parts[LL_BENCH_MAX_FILES] = {
    {"selfsim_words", STSB_TRAIN, LL_TASK_CWE, '\t', 0, 7, 6, 7, 0, 0, 0, "STS-B train sentences"},
    {"selfsim_words", STSB_DEV, LL_TASK_CWE, '\t', 0, 7, 6, 7, 0, 0, 0, "STS-B dev sentences"},
    {"selfsim_words", STSB_TEST, LL_TASK_CWE, '\t', 0, 7, 6, 7, 0, 0, 0, "STS-B test sentences"},
};

static const ll_task pool_task = {
    "selfsim_words", STSB_TRAIN ", " STSB_DEV ", " STSB_TEST, LL_TASK_CWE, '\t', 0, 7, 6, 7,
    0, 0, LL_STSB_POOL_EXPECTED,
    "contextual word self-similarity: the distinct sentences of the three STS-B splits"};

/* Appends the skips of one part to the pool, each reason prefixed with its
 * file (line numbers alone would be ambiguous). */
static int pool_add_skips(ll_bench *pool, const ll_bench *part, int *cap) {
    for (int i = 0; i < part->n_skipped; i++) {
        if (pool->n_skipped == *cap) {
            int nc = *cap ? 2 * *cap : 16;
            ll_skip *s = realloc(pool->skipped, (size_t)nc * sizeof *s);
            if (!s) return -1;
            pool->skipped = s, *cap = nc;
        }
        ll_skip *s = &pool->skipped[pool->n_skipped++];
        s->line = part->skipped[i].line;
        snprintf(s->reason, sizeof s->reason, "%s: %s", part->task->file,
                 part->skipped[i].reason);
    }
    return 0;
}

/* Merges the parts: each sentence once, in part order; strings copied. */
static ll_bench *pool_merge(ll_bench *const *part, ll_error *err) {
    size_t bytes = 0;
    int total = 0, cap_skips = 0;
    for (int p = 0; p < LL_BENCH_MAX_FILES; p++) {
        total += part[p]->n;
        for (int i = 0; i < part[p]->n; i++) bytes += strlen(part[p]->items[i].a) + 1;
    }
    ll_bench *b = bench_new("selfsim_words", LL_TASK_CWE);
    strset seen = {0};
    if (!b || !(b->text = malloc(bytes)) || !(b->items = malloc((size_t)total * sizeof *b->items)) ||
        !(b->item_file = malloc((size_t)total * sizeof *b->item_file)) ||
        strset_init(&seen, 1 << 15))
        goto oom;
    b->task = &pool_task;
    char *dst = b->text;
    for (int p = 0; p < LL_BENCH_MAX_FILES; p++) {
        const ll_bench *pt = part[p];
        for (int i = 0; i < pt->n; i++) {
            int r = strset_add(&seen, pt->items[i].a, b->n);
            if (r == -2) goto oom;
            if (r != -1) continue; /* seen in an earlier split */
            b->item_file[b->n] = p;
            b->items[b->n++] = (ll_item){copy_into(&dst, pt->items[i].a), NULL, 0,
                                         pt->items[i].line};
        }
        if (pool_add_skips(b, pt, &cap_skips)) goto oom;
        b->files[p] = pt->files[0];
        b->n_lines += pt->n_lines;
        b->bytes += pt->bytes;
        b->n_extra_fields += pt->n_extra_fields;
    }
    b->n_files = LL_BENCH_MAX_FILES;
    b->n_available = b->n;
    strset_free(&seen);
    return b;
oom:
    strset_free(&seen);
    ll_bench_free(b);
    ll_errorf(err, "selfsim_words: out of memory merging the STS-B sentences");
    return NULL;
}

ll_bench *ll_bench_load_stsb_pool(const char *data_dir, ll_error *err) {
    ll_bench *part[LL_BENCH_MAX_FILES] = {0}, *pool = NULL;
    int p = 0;
    for (; p < LL_BENCH_MAX_FILES; p++)
        if (!(part[p] = ll_bench_load(data_dir, &pool_parts[p], err))) break;
    if (p == LL_BENCH_MAX_FILES) pool = pool_merge(part, err);
    for (int i = 0; i < LL_BENCH_MAX_FILES; i++) ll_bench_free(part[i]);
    return pool;
}

ll_bench *ll_bench_subset(const ll_bench *b, const int *idx, int n, ll_error *err) {
    if (n <= 0) {
        ll_errorf(err, "%s: an empty subset", b->name);
        return NULL;
    }
    size_t bytes = 0;
    for (int k = 0; k < n; k++) {
        const ll_item *it = &b->items[idx[k]];
        bytes += strlen(it->a) + 1 + (it->b ? strlen(it->b) + 1 : 0);
    }
    ll_bench *s = bench_new(b->name, b->kind);
    if (!s || !(s->text = malloc(bytes)) || !(s->items = malloc((size_t)n * sizeof *s->items)) ||
        (b->item_file && !(s->item_file = malloc((size_t)n * sizeof *s->item_file))) ||
        (b->n_skipped &&
         !(s->skipped = malloc((size_t)b->n_skipped * sizeof *s->skipped)))) {
        ll_bench_free(s);
        ll_errorf(err, "%s: out of memory for %d items", b->name, n);
        return NULL;
    }
    char *dst = s->text;
    for (int k = 0; k < n; k++) {
        const ll_item *it = &b->items[idx[k]];
        s->items[k] = *it;
        s->items[k].a = copy_into(&dst, it->a);
        s->items[k].b = it->b ? copy_into(&dst, it->b) : NULL;
        if (s->item_file) s->item_file[k] = b->item_file[idx[k]];
    }
    if (b->n_skipped) memcpy(s->skipped, b->skipped, (size_t)b->n_skipped * sizeof *s->skipped);
    s->task = b->task;
    s->n = n;
    s->n_lines = b->n_lines;
    s->n_skipped = b->n_skipped;
    s->n_available = b->n;
    s->n_extra_fields = b->n_extra_fields;
    s->bytes = b->bytes;
    memcpy(s->sha256, b->sha256, sizeof s->sha256);
    s->n_files = b->n_files;
    memcpy(s->files, b->files, sizeof s->files);
    return s;
}

/* ---- custom items ------------------------------------------------------------- */

static int check_custom(const ll_item *it, int i, ll_task_kind kind, ll_error *err) {
    const char *what[2] = {"a", "b"};
    const char *s[2] = {it->a, it->b};
    int nt = ll_task_kind_is_pair(kind) ? 2 : 1;
    for (int k = 0; k < nt; k++) {
        if (!s[k]) return ll_errorf(err, "item %d: text %s is missing", i, what[k]);
        if (!*s[k]) return ll_errorf(err, "item %d: text %s is empty", i, what[k]);
        if (!utf8_valid(s[k]))
            return ll_errorf(err, "item %d: text %s is not valid UTF-8", i, what[k]);
    }
    if (ll_task_kind_has_gold(kind) && !isfinite(it->gold))
        return ll_errorf(err, "item %d: gold is not a finite number", i);
    return 0;
}

static char *copy_into(char **dst, const char *s) {
    size_t n = strlen(s) + 1;
    char *out = memcpy(*dst, s, n);
    *dst += n;
    return out;
}

ll_bench *ll_bench_from_items(const char *name, ll_task_kind kind,
                              const ll_item *items, int n, ll_error *err) {
    if (n <= 0 || !items) {
        ll_errorf(err, "no items given");
        return NULL;
    }
    int pair = ll_task_kind_is_pair(kind), gold = ll_task_kind_has_gold(kind);
    size_t bytes = 0;
    for (int i = 0; i < n; i++) {
        if (check_custom(&items[i], i, kind, err)) return NULL;
        bytes += strlen(items[i].a) + 1 + (pair ? strlen(items[i].b) + 1 : 0);
    }
    ll_bench *b = bench_new(name, kind);
    if (!b || !(b->text = malloc(bytes)) ||
        !(b->items = malloc((size_t)n * sizeof *b->items))) {
        ll_bench_free(b);
        ll_errorf(err, "out of memory for %d items", n);
        return NULL;
    }
    char *dst = b->text;
    for (int i = 0; i < n; i++) {
        ll_item *it = &b->items[i];
        it->a = copy_into(&dst, items[i].a);
        it->b = pair ? copy_into(&dst, items[i].b) : NULL;
        it->gold = gold ? items[i].gold : 0;
        it->line = i + 1;
    }
    b->n = b->n_lines = b->n_available = n;
    return b;
}

/* ---- derived views ------------------------------------------------------------- */

int ll_bench_unique(const ll_bench *b, ll_textset *out, ll_error *err) {
    memset(out, 0, sizeof *out);
    strset seen;
    size_t max = 2 * (size_t)b->n;
    out->texts = malloc(max * sizeof *out->texts);
    out->a_idx = malloc((size_t)b->n * sizeof(int));
    out->b_idx = malloc((size_t)b->n * sizeof(int));
    if (strset_init(&seen, 1024) || !out->texts || !out->a_idx || !out->b_idx)
        goto oom;
    for (int i = 0; i < b->n; i++) {
        const char *s[2] = {b->items[i].a, b->items[i].b};
        int *idx[2] = {&out->a_idx[i], &out->b_idx[i]};
        *idx[1] = -1;
        for (int k = 0; k < 2 && s[k]; k++) {
            int r = strset_add(&seen, s[k], out->n);
            if (r == -2) goto oom;
            if (r == -1) {
                *idx[k] = out->n;
                out->texts[out->n++] = s[k];
            } else {
                *idx[k] = r;
            }
        }
    }
    strset_free(&seen);
    return 0;
oom:
    strset_free(&seen);
    ll_textset_free(out);
    return ll_errorf(err, "%s: out of memory listing distinct texts", b->name);
}

void ll_textset_free(ll_textset *s) {
    free(s->texts);
    free(s->a_idx);
    free(s->b_idx);
    memset(s, 0, sizeof *s);
}

void ll_bench_gold(const ll_bench *b, double *out) {
    for (int i = 0; i < b->n; i++) out[i] = b->items[i].gold;
}

json_t *ll_bench_info_json(const ll_bench *b) {
    json_t *skipped = json_array();
    for (int i = 0; skipped && i < b->n_skipped; i++)
        json_array_append_new(skipped, json_pack("{s:i, s:s}", "line", b->skipped[i].line,
                                                 "reason", b->skipped[i].reason));
    json_t *o = json_pack("{s:s, s:s, s:s, s:i, s:i, s:i, s:o*}", "task", b->name,
                          "kind", ll_task_kind_name(b->kind),
                          "metric", ll_task_kind_metric(b->kind), "n", b->n,
                          "n_lines", b->n_lines, "n_skipped", b->n_skipped,
                          "skipped", skipped);
    if (o && b->task) {
        json_object_set_new(o, "file", json_string(b->task->file));
        json_object_set_new(o, "n_expected", json_integer(b->task->n_expected));
        json_object_set_new(o, "n_available", json_integer(b->n_available));
        json_object_set_new(o, "bytes", json_integer((json_int_t)b->bytes));
        if (b->sha256[0]) json_object_set_new(o, "sha256", json_string(b->sha256));
    }
    if (o && b->n_files > 1) {
        json_t *files = json_array();
        for (int i = 0; i < b->n_files; i++) {
            const ll_bench_file *f = &b->files[i];
            json_array_append_new(files, json_pack("{s:s, s:I, s:s, s:i, s:i}", "file", f->path,
                                                   "bytes", (json_int_t)f->bytes, "sha256",
                                                   f->sha256, "n_lines", f->n_lines,
                                                   "n_skipped", f->n_skipped));
        }
        json_object_set_new(o, "files", files);
    }
    return o;
}

/* ---- checksums ------------------------------------------------------------------- */

int ll_sha256_hex(const void *data, size_t len, char out[65], ll_error *err) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    out[0] = 0;
    if (!EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL) || mdlen != 32)
        return ll_errorf(err, "sha256: the digest failed");
    static const char hex[] = "0123456789abcdef";
    for (unsigned i = 0; i < 32; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[64] = 0;
    return 0;
}
