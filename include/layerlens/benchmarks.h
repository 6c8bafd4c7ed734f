/* benchmarks.h - the evaluation data: the task registry, strict parsers of
 * the benchmark files, custom items from a request, and file checksums.
 *
 * A task names one file of the data directory (`layerlens serve --data DIR`)
 * and says how to read it.  The parsing rules are those of the reference
 * results (../shared/fixtures/README.md, "Evaluation reference"):
 *   - lines are split on LF only; a CR right before the LF is removed (also
 *     a CR ending a file without a final LF); a final empty line is dropped;
 *   - the header line, where the format has one, is skipped;
 *   - fields are split on the delimiter only: no quote handling (STS-B has
 *     stray '"'), no trimming; words and sentences are used as written;
 *   - a line needs the format's field count; more fields are ignored (STS-B's
 *     licence columns 8 and 9);
 *   - gold is the stated field read as a decimal number ([+-]digits[.digits]
 *     [e[+-]digits], no spaces), which must be finite.
 * A data line that breaks a rule (too few fields, bad number, empty text,
 * invalid UTF-8, a NUL byte) is skipped and recorded with its line number
 * and the reason; the task keeps going with the other lines.
 *
 * Items are kept in file order; repeated words, pairs and sentences are kept
 * (WS-353 lists money/cash twice), except for the CWE sentence sets, which
 * are by definition distinct sentences: the registry's selfsim_words entry
 * is the reference set (the first 2000 distinct sentences of STS-B dev), and
 * ll_bench_load_stsb_pool() gives the pool the sampled selection draws from
 * (every distinct sentence of the three STS-B splits).  ll_bench_unique()
 * gives the distinct texts of a bench so each is embedded once.
 *
 * A loaded ll_bench is immutable: share it between threads freely. */
#ifndef LAYERLENS_BENCHMARKS_H
#define LAYERLENS_BENCHMARKS_H

#include <stddef.h>

#include <jansson.h>

#include "layerlens/error.h"

typedef enum ll_task_kind {
    LL_TASK_WORD_PAIRS,     /* word1, word2, gold: Spearman of cosine vs gold */
    LL_TASK_SENTENCE_PAIRS, /* sentence1, sentence2, gold: Spearman */
    LL_TASK_VALNORM,        /* word, gold: Pearson of the effect size vs gold */
    LL_TASK_SENTENCES,      /* sentences: self-similarity of their vectors */
    LL_TASK_CWE,            /* sentences of the contextual-word token set */
} ll_task_kind;

/* "word_pairs" | "sentence_pairs" | "valnorm_words" | "sentences" | "cwe_sentences" */
const char *ll_task_kind_name(ll_task_kind k);
/* 1 for the kinds whose items are pairs (a and b), resp. carry a gold score. */
int ll_task_kind_is_pair(ll_task_kind k);
int ll_task_kind_has_gold(ll_task_kind k);
/* "spearman" | "pearson" | "self_similarity" */
const char *ll_task_kind_metric(ll_task_kind k);

typedef struct ll_task {
    const char *name;        /* "rg65", "stsb", ... */
    const char *file;        /* relative to the data directory */
    ll_task_kind kind;
    char delim;              /* '\t' or ',' */
    int header_lines;        /* lines skipped before the data */
    int n_fields;            /* fields a data line must have */
    int field_a, field_b;    /* 1-based; field_b 0 = single-text items */
    int field_gold;          /* 1-based; 0 = no gold */
    int max_items;           /* keep at most this many items (0 = all) */
    int n_expected;          /* items in the published data set */
    const char *description; /* one line for listings */
} ll_task;

/* The built-in tasks: rg65 ws353 ws353_sim ws353_rel simlex999 simverb3500
 * valnorm stsb stsb_dev stsb_train selfsim_sentences selfsim_words. */
int ll_task_count(void);
const ll_task *ll_task_at(int i);
const ll_task *ll_task_find(const char *name); /* NULL when unknown */

/* The attribute words of ValNorm (the WEAT pleasant/unpleasant sets). */
#define LL_VALNORM_N 25
extern const char *const ll_valnorm_pleasant[LL_VALNORM_N];
extern const char *const ll_valnorm_unpleasant[LL_VALNORM_N];

typedef struct ll_item {
    const char *a;   /* word1 / sentence1 / the word / the sentence */
    const char *b;   /* word2 / sentence2; NULL for single-text kinds */
    double gold;     /* 0 for kinds without gold */
    int line;        /* 1-based line of the file (custom data: index + 1) */
} ll_item;

#define LL_SKIP_REASON_MAX 120

typedef struct ll_skip {
    int line;                          /* 1-based line of the file */
    char reason[LL_SKIP_REASON_MAX];   /* e.g. "field 3 is not a number: \"x\"" */
} ll_skip;

/* One file a bench was read from. */
#define LL_BENCH_MAX_FILES 3
typedef struct ll_bench_file {
    const char *path;       /* relative to the data directory */
    size_t bytes;
    char sha256[65];
    int n_lines, n_skipped;
} ll_bench_file;

typedef struct ll_bench {
    char name[64];          /* the task's name, or the custom data's */
    const ll_task *task;    /* registry entry; NULL for custom data */
    ll_task_kind kind;
    int n;                  /* items used */
    ll_item *items;         /* [n] */
    int n_lines;            /* data lines seen (header not counted) */
    int n_skipped;
    ll_skip *skipped;       /* [n_skipped], in line order */
    int n_available;        /* items before the max_items cut (CWE: 2910 unique
                               STS-B dev sentences); n elsewhere */
    int n_extra_fields;     /* lines with more fields than used */
    size_t bytes;           /* size of the file (0 for custom data) */
    char sha256[65];        /* hex digest of the file ("" for custom data and
                               for data of several files: see files[]) */
    int n_files;            /* files read: 0 custom data, 1, or 3 (the pool) */
    ll_bench_file files[LL_BENCH_MAX_FILES];
    int *item_file;         /* [n] index into files[] of each item's line;
                               NULL unless n_files > 1 */
    char *text;             /* owns every string the items point to */
} ll_bench;

/* Parses data[0..len) as task t (the file's text in memory).  Errors (not
 * skips): an empty input, no usable item at all, out of memory. */
ll_bench *ll_bench_parse(const ll_task *t, const char *data, size_t len,
                         ll_error *err);
/* Reads data_dir/t->file, checksums and parses it; errors name the file. */
ll_bench *ll_bench_load(const char *data_dir, const ll_task *t, ll_error *err);
/* The pool of selfsim_words' sampled selection: every distinct sentence of
 * the three STS-B splits, read in the order train, dev, test, sentence1
 * then sentence2 of each line, each sentence once (its first occurrence).
 * Each file is parsed like the selfsim_words file (TAB, 7 fields, the two
 * sentence fields checked); a skipped line's reason names its file.  Items
 * carry their line, item_file[] their file (0 train, 1 dev, 2 test); the bench's
 * task is a pseudo-task named "selfsim_words" (not in the registry) whose
 * file lists the three paths.  15487 sentences for the published files. */
#define LL_STSB_POOL_EXPECTED 15487
ll_bench *ll_bench_load_stsb_pool(const char *data_dir, ll_error *err);
/* The three STS-B files of the pool, relative to the data directory. */
extern const char *const ll_stsb_pool_files[LL_BENCH_MAX_FILES];

/* A new bench of the items idx[0..n) of b (in that order), strings copied,
 * lines, item files, files and checksums kept; n_available becomes b->n (what the
 * subset was taken from).  Indices must be valid and n >= 1. */
ll_bench *ll_bench_subset(const ll_bench *b, const int *idx, int n, ll_error *err);

/* Custom data of a request: copies the items (strings included).  Every
 * item must have a non-empty, valid UTF-8 `a`; `b` too for pair kinds, and a
 * finite gold for kinds with gold; the error names the first bad item
 * ("item 3: gold is not a finite number").  name may be NULL ("custom"). */
ll_bench *ll_bench_from_items(const char *name, ll_task_kind kind,
                              const ll_item *items, int n, ll_error *err);
void ll_bench_free(ll_bench *b);

/* The distinct texts of a bench in first-occurrence order (a then b of each
 * item) and, per item, the index of its a and b (-1 when no b): what an
 * evaluation embeds once and looks up per item. */
typedef struct ll_textset {
    int n;               /* distinct texts */
    const char **texts;  /* [n], pointing into the bench */
    int *a_idx, *b_idx;  /* [bench->n] */
} ll_textset;

int ll_bench_unique(const ll_bench *b, ll_textset *out, ll_error *err);
void ll_textset_free(ll_textset *s);

/* The gold scores as one array (the y of the correlation): out[0..b->n). */
void ll_bench_gold(const ll_bench *b, double *out);

/* {"task", "kind", "metric", "file", "n", "n_expected", "n_lines",
 *  "n_skipped", "skipped": [{"line", "reason"}], "bytes", "sha256"} for
 * GET /v1/benchmarks (file/n_expected/bytes/sha256 only for files; data of
 * several files adds "files": [{"file", "bytes", "sha256", "n_lines",
 * "n_skipped"}] and has no single sha256).  NULL when out of memory. */
json_t *ll_bench_info_json(const ll_bench *b);

/* Lower-case hex SHA-256 of data[0..len) (OpenSSL libcrypto). */
int ll_sha256_hex(const void *data, size_t len, char out[65], ll_error *err);

#endif
