/* eval.h - per-layer benchmark scoring: the measurements of Wolfe & Caliskan
 * (ACL 2022) for every layer of GPT-2 and the CLIP text encoder.
 *
 * One driver serves the command line (`layerlens eval`, `layerlens
 * reproduce`) and the HTTP service (POST /v1/evaluate and the evaluation
 * jobs).  What differs between them is only how texts become vectors, so the
 * forward passes go through a callback (ll_eval_embed_fn): in-process it is
 * ll_eval_local_embed (packed forward passes on the caller's thread), in the
 * server the batcher at low priority.
 *
 * The pieces, in the order an evaluation uses them:
 *   request   ll_eval_request_parse: the JSON body of POST /v1/evaluate (the
 *             command line builds the same JSON from its flags).
 *   inputs    ll_eval_input_build: text -> model input ids and the rows whose
 *             states make the text's vector (the methods below).
 *   vectors   ll_eval_vectors: each distinct text once, cache first, the
 *             rest in chunks of about env->chunk_tokens tokens per callback.
 *   scores    Spearman / Pearson / self-similarity per layer (stats.h), with
 *             95% intervals, extras and a paired bootstrap between models.
 *   result    ll_eval_run: the result JSON (a contract, see below).
 *
 * Methods (the paper's; variant names as in the reference results):
 *   word      CLIP "clip": <|startoftext|> word <|endoftext|>, the last
 *             subtoken.  GPT-2 "gpt2_bos" (default): <|endoftext|> word
 *             <|endoftext|>, the last subtoken; "gpt2_plain": the word's
 *             tokens alone, the last one.  Words are used as written (no
 *             leading space; CLIP's tokenizer lower-cases).
 *   sentence  "eos" (default): CLIP its end token (input cut to 77 tokens,
 *             the end token kept); GPT-2 <|endoftext|> s <|endoftext|>, the
 *             final token.  "last": the last token of the text itself, and
 *             "mean": the mean over the text's own tokens; for GPT-2 both on
 *             the sentence alone (no special tokens), for CLIP on its usual
 *             input.  Variant names "gpt2", "gpt2_last", "gpt2_mean",
 *             "clip", "clip_last", "clip_mean".
 *   cwe       (selfsim_words) one token of a sentence, text token i of its
 *             n text tokens.  CLIP: the sentence input as for "eos", model
 *             position 1 + i; GPT-2: the sentence alone, position i.  Which
 *             sentences and which i (method.selfsim_words):
 *               "sampled" (default, the paper's): N sentences (default
 *               10,000) drawn without replacement from the distinct
 *               sentences of the three STS-B splits, one token each, drawn
 *               uniformly among the text tokens at model position >= 1, so
 *               position 0 and special tokens are never drawn.  Both draws
 *               come from the seed (default LL_CWE_SEED) and the sentence:
 *               splitmix64 of seed ^ FNV-1a(sentence) gives a key and then
 *               a draw r; the N smallest keys are taken (in pool order) and
 *               i = lo + r mod (n - lo), lo = the first text token at
 *               position >= 1.  Same sentences for both models.
 *               "reference": the selection of the fixture reference, the
 *               first 2000 distinct STS-B dev sentences, sentence k giving
 *               i = k mod n.
 *             An explicit (sentence, i) list is accepted too (items).
 *   Layer L is Hugging Face's hidden_states[L]; CLIP may add "final"
 *   (final_layer_norm, same position) and "projected" (the projection of
 *   the end token, whatever the method).
 *
 * Result (POST /v1/evaluate and `layerlens eval`; extra fields are allowed
 * by the contract):
 *   {"results": {TASK: {MODEL: {
 *        "metric": "spearman" | "pearson" | "self_similarity",
 *        "variant": "gpt2_bos", "n": N, "best_layer": L | null,
 *        "best_score": x | null,
 *        "layers": [{"layer": 0, "score": x | null, "ci": [lo, hi] | null,
 *                    "n": N, "reason"?: "...", "mean_norm": x,
 *                    "centered_self_similarity": x | null}, ...],
 *        "skipped": [{"item": i, "line": l, "file"?: f, "text": "...",
 *                     "reason": "..."}],
 *        "n_truncated": k,
 *        "selection_method"?: {"name": "sampled"|"reference"|"explicit",
 *            "default", "n_requested", "n_drawn", "n_available", "capped",
 *            "seed", "sentences", "token"}        (CWE tasks)
 *        "per_item"?: [[...] per layer], "selection"?: {...}   (details)
 *    }}},
 *    "comparisons": {TASK: {"a": "clip", "b": "gpt2", "layer_a", "layer_b",
 *        "difference", "ci": [lo, hi], "n", "n_resamples", "n_valid", "seed"}},
 *    "data": {TASK: {file, sha256, n, n_skipped, skipped: [...]}},
 *    "passed": true | false, "checks": [...]      (with thresholds)
 *    "method": {"word", "sentence", "selfsim_words", "selfsim_words_n"?,
 *               "selfsim_words_seed"?}            (as run, defaults filled)
 *    "timing_ms": total, "timing": {...}, "cache": {...}}
 * best_layer is the integer layer with the highest correlation, or for
 * self-similarity the lowest (the most isotropic); a threshold is met when
 * the best score is >= it (correlations) or <= it (self-similarity).
 * Undefined statistics are null with a "reason", never NaN.
 *
 * Thread safety: a request and an environment are read-only during
 * ll_eval_run; several runs may share one cache (it locks) but each needs
 * its own embedding context unless the callback is itself thread-safe. */
#ifndef LAYERLENS_EVAL_H
#define LAYERLENS_EVAL_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "layerlens/benchmarks.h"
#include "layerlens/embed.h"
#include "layerlens/error.h"
#include "layerlens/model.h"

/* Returned by ll_eval_run / ll_eval_vectors when the cancel flag was set. */
#define LL_EVAL_CANCELLED (-3)

/* Tokens per embedding call unless the environment says otherwise. */
#define LL_EVAL_CHUNK_TOKENS 2048

/* ---- methods ---------------------------------------------------------- */

typedef enum ll_eval_variant {
    LL_EV_WORD_BOS,   /* the default word method (CLIP has only this one) */
    LL_EV_WORD_PLAIN, /* GPT-2: the word's tokens alone */
    LL_EV_SENT_EOS,
    LL_EV_SENT_LAST,
    LL_EV_SENT_MEAN,
    LL_EV_CWE,
} ll_eval_variant;

typedef enum ll_word_method { LL_WORD_BOS, LL_WORD_PLAIN } ll_word_method;
typedef enum ll_sent_method { LL_SENT_EOS, LL_SENT_LAST, LL_SENT_MEAN } ll_sent_method;

/* What a variant means for a given model: CLIP's word methods are one. */
ll_eval_variant ll_eval_variant_for(const ll_model *m, ll_eval_variant v);
/* "clip", "gpt2_bos", "gpt2_plain", "gpt2", "gpt2_last", ... */
const char *ll_eval_variant_name(const ll_model *m, ll_eval_variant v);

/* How an LL_EV_CWE text's index names its token. */
typedef enum ll_eval_index {
    LL_EV_INDEX_GIVEN = 0, /* the text token index itself (explicit items) */
    LL_EV_INDEX_MOD = 1,   /* taken modulo the text tokens (reference: k mod n) */
    LL_EV_INDEX_DRAW = 2,  /* a draw r >= 0: i = lo + r mod (n - lo), lo the
                              first text token at model position >= 1 */
} ll_eval_index;

/* One text to embed.  index: LL_EV_CWE only, the token wanted (index_mode
 * says how; other variants ignore both). */
typedef struct ll_eval_text {
    const char *text;
    long index;
    int index_mode; /* ll_eval_index */
} ll_eval_text;

/* selfsim_words' selections (method.selfsim_words). */
typedef enum ll_cwe_method { LL_CWE_SAMPLED, LL_CWE_REFERENCE } ll_cwe_method;
#define LL_CWE_DEFAULT_N 10000
#define LL_CWE_SEED 20220522u /* fixed, so the sampled selection is reproducible */

/* What building a text's input found out. */
typedef struct ll_eval_pick {
    int begin, end;    /* the vector is the mean of rows [begin, end) */
    int n_text;        /* tokens of the text itself */
    int token_id;      /* id at row begin */
    int token_index;   /* CWE: i, the index among the text tokens; else -1 */
    int truncated;     /* the input was cut to the context */
} ll_eval_pick;

/* Builds the model input of one text (appended to *tk, which may hold
 * nothing yet) and where its vector is.  Returns 0, or 1 when the text
 * cannot be embedded by this method (no text tokens, token index out of
 * range, invalid text), with the reason in err: the item is then skipped. */
int ll_eval_input_build(const ll_model *m, ll_eval_variant v,
                        const ll_eval_text *t, ll_tokens *tk,
                        ll_eval_pick *pick, ll_error *err);

/* Width of one vector of layer item `item` (LL_LAYER_PROJECTED: proj_dim). */
int ll_eval_item_dim(const ll_model *m, int item);

/* ---- the embedding callback ------------------------------------------- */

typedef struct ll_eval_input {
    const int32_t *ids;
    int len;
    int begin, end; /* mean of rows [begin, end); one row when end = begin + 1 */
} ll_eval_input;

typedef struct ll_eval_batch {
    const ll_model *model;
    const ll_eval_input *inputs;
    int n;
    const ll_layer_sel *sel;  /* layer items wanted */
    float *const *out;        /* out[j]: [n][ll_eval_item_dim(sel->items[j])] */
    const atomic_int *cancel; /* may be NULL */
} ll_eval_batch;

/* Fills b->out.  0, -1 with err, or LL_EVAL_CANCELLED. */
typedef int (*ll_eval_embed_fn)(void *ctx, const ll_eval_batch *b,
                                ll_error *err);

/* Writes the vectors of input `in` (batch sequence s of st) for every item
 * of sel into row `row` of out: what every callback does after its forward
 * pass.  Means are accumulated in double. */
int ll_eval_pool(const ll_states *st, int s, const ll_eval_input *in,
                 const ll_layer_sel *sel, float *const *out, int row,
                 ll_error *err);

/* In-process embedding: packed forward passes of at most max_batch_tokens
 * tokens (0: LL_EVAL_CHUNK_TOKENS) on the calling thread.  Not
 * thread-safe (one workspace). */
typedef struct ll_eval_local ll_eval_local;
ll_eval_local *ll_eval_local_new(int max_batch_tokens, ll_error *err);
void ll_eval_local_free(ll_eval_local *l);
int ll_eval_local_embed(void *ctx, const ll_eval_batch *b, ll_error *err);
/* Forward passes and tokens run so far. */
long ll_eval_local_forwards(const ll_eval_local *l);
long ll_eval_local_tokens(const ll_eval_local *l);

/* ---- the embedding cache ---------------------------------------------- */

/* Vectors of benchmark texts per (model, method, text, layer item), so a
 * repeated evaluation (or a task sharing texts with another: stsb and
 * selfsim_sentences, the word lists) runs no forward pass.  Bounded by
 * max_bytes (least recently used entries go first); thread-safe.  Models
 * are told apart by architecture, size and directory, so the cache must be
 * cleared if a directory's weights change while it lives. */
typedef struct ll_eval_cache ll_eval_cache;

typedef struct ll_eval_cache_info {
    long entries;          /* (text, layer item) vectors held */
    size_t bytes, max_bytes;
    long hits, misses;     /* texts found complete / not */
    long evictions;
} ll_eval_cache_info;

ll_eval_cache *ll_eval_cache_new(size_t max_bytes, ll_error *err);
void ll_eval_cache_free(ll_eval_cache *c);
void ll_eval_cache_clear(ll_eval_cache *c);
void ll_eval_cache_info_get(ll_eval_cache *c, ll_eval_cache_info *out);

/* ---- running an evaluation -------------------------------------------- */

/* Called after every chunk of texts (done <= total, both in texts). */
typedef void (*ll_eval_progress_fn)(void *ctx, long done, long total);

typedef struct ll_eval_env {
    const char *data_dir;        /* benchmark files; NULL: custom data only */
    const ll_model *gpt2, *clip; /* either may be NULL */
    ll_eval_embed_fn embed;
    void *embed_ctx;
    int chunk_tokens;            /* tokens per embed call; 0: default */
    ll_eval_cache *cache;        /* NULL: nothing is cached */
    ll_eval_progress_fn progress;
    void *progress_ctx;
    const atomic_int *cancel;    /* nonzero: stop before the next chunk */
} ll_eval_env;

/* Embeds texts[0..n) with one model and method: out[j] receives [n][dim]
 * for layer item sel->items[j]; picks[i] (may be NULL) describes text i and
 * ok[i] says whether it could be embedded (else reasons[i], 128 bytes
 * each, says why; reasons may be NULL).  *done is advanced per text and
 * progress reported against total (the caller's overall count). */
#define LL_EVAL_REASON_MAX 128
int ll_eval_vectors(const ll_eval_env *env, const ll_model *m,
                    ll_eval_variant v, const ll_eval_text *texts, int n,
                    const ll_layer_sel *sel, float *const *out,
                    ll_eval_pick *picks, unsigned char *ok,
                    char (*reasons)[LL_EVAL_REASON_MAX], long *done,
                    long total, ll_error *err);

/* A parsed, validated request.  Fields (JSON):
 *   tasks      ["rg65", ...] | "paper" | "all"; the paper's tasks are
 *              rg65 ws353 ws353_sim ws353_rel simlex999 simverb3500
 *              valnorm stsb selfsim_sentences selfsim_words
 *   models     ["gpt2", "clip"] (default: every model the env has)
 *   layers     "all" (default) | [0, 3, "final"] | "0,3,final"
 *   method     {"word": "bos"|"plain", "sentence": "eos"|"last"|"mean",
 *               "selfsim_words": "sampled"|"reference",
 *               "selfsim_words_n": N (sampled; default 10000, capped by the
 *               pool), "selfsim_words_seed": S (sampled; default LL_CWE_SEED)}
 *   pairs      [[a, b, gold], ...] custom pairs ("words" when no text has a
 *              space, else "sentences"; pairs_type overrides), task key
 *              "custom_pairs" (or `name`)
 *   items      ["sentence", ...] sentence self-similarity, or
 *              [["sentence", i], ...] token self-similarity, i the text token
 *              (checked against every model: out of range is an error naming
 *              the item); task "custom_items"
 *   thresholds {TASK: {MODEL: x}}
 *   bootstrap  resamples (default 1000; 0 turns the comparison off)
 *   seed       bootstrap seed (default LL_BOOTSTRAP_SEED)
 *   details    true: per-item values and the CWE selection in the result */
typedef struct ll_eval_request ll_eval_request;

/* Errors are the client's (a 400): unknown task, model not loaded, bad
 * layer, bad method, malformed custom data (an explicit token index out of
 * range included: the items are tokenized here), no data directory or a
 * missing data file. */
ll_eval_request *ll_eval_request_parse(const json_t *body,
                                       const ll_eval_env *env, ll_error *err);
void ll_eval_request_free(ll_eval_request *r);
/* The tasks of the request, for listings (custom data not included). */
int ll_eval_request_n_tasks(const ll_eval_request *r);
const char *ll_eval_request_task(const ll_eval_request *r, int i);

/* Runs the evaluation: 0 with *out set, -1 with err, or LL_EVAL_CANCELLED. */
int ll_eval_run(const ll_eval_env *env, const ll_eval_request *req,
                json_t **out, ll_error *err);

/* The paper's task list (NULL-terminated). */
extern const char *const ll_eval_paper_tasks[];

/* ---- reports ------------------------------------------------------------ */

/* Writes report.md, results.json and one <task>.svg per task of result into
 * out_dir (created if missing).  models: "gpt2"/"clip" -> its directory, for
 * the report's header (either may be NULL). */
int ll_eval_report_write(const json_t *result, const char *out_dir,
                         const char *gpt2_dir, const char *clip_dir,
                         const char *data_dir, ll_error *err);
/* The SVG plot of one task's results (malloc'd text), score by layer, one
 * polyline per model, the paper's published values beside where known. */
char *ll_eval_svg(const char *task, const json_t *task_result, ll_error *err);

/* ---- the commands (argv[0] is the command name) ----------------------- */

int ll_eval_main(int argc, char **argv);
int ll_reproduce_main(int argc, char **argv);

#endif
