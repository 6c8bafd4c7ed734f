/* embed.h - from forward-pass states to the vectors users ask for: layer
 * selection, pooling, and the JSON "layer entries" shared by the command line
 * (`layerlens embed`) and the HTTP API (/v1/embeddings and friends).
 *
 * Layer entries (a contract):
 *   pooling none:  {"layer": L, "tokens": [[...], ...]}   one row per token
 *   otherwise:     {"layer": L, "embedding": [...]}
 *   L is an integer 0..n_layer, or "final" (CLIP's final-layer-normed states,
 *   pooled like the others) or "projected" (always the single projected
 *   embedding of CLIP's end token, whatever the pooling). */
#ifndef LAYERLENS_EMBED_H
#define LAYERLENS_EMBED_H

#include <jansson.h>

#include "layerlens/model.h"

typedef enum ll_pooling {
    LL_POOL_NONE, /* every token */
    LL_POOL_LAST, /* the last token of the text itself (never a special one) */
    LL_POOL_EOS,  /* the end-of-text token (GPT-2: needs eos) */
    LL_POOL_MEAN, /* mean over the text's own tokens */
} ll_pooling;

/* Layer items beyond the integer layers. */
#define LL_LAYER_FINAL (-1)
#define LL_LAYER_PROJECTED (-2)

typedef struct ll_layer_sel {
    int n;
    int items[LL_MAX_LAYERS + 3]; /* 0..n_layer, LL_LAYER_FINAL, LL_LAYER_PROJECTED */
} ll_layer_sel;

/* "none" | "last" | "eos" | "mean". */
int ll_pooling_parse(const char *s, ll_pooling *out, ll_error *err);
const char *ll_pooling_name(ll_pooling p);

/* Adds one item to sel from a string: "all" (every integer layer), "final",
 * "projected", an integer, or a comma-separated list of these.  Errors name
 * the offending item (unknown name, out of range, "final"/"projected" on
 * GPT-2, duplicate). */
int ll_layer_sel_parse(ll_layer_sel *sel, const char *spec,
                       const ll_config *cfg, ll_error *err);
/* The same for one integer layer. */
int ll_layer_sel_add(ll_layer_sel *sel, int item, const ll_config *cfg,
                     ll_error *err);
/* What the forward pass must keep for this selection. */
void ll_layer_sel_request(const ll_layer_sel *sel, const ll_config *cfg,
                          ll_forward_req *req);

/* Where the text's own tokens are in one sequence (from ll_model_encode),
 * and where its end token is (-1 when it has none). */
typedef struct ll_span {
    int begin, end; /* [begin, end) */
    int eos;
} ll_span;

/* Writes the pooled vector of sequence `seq` for one layer item into out
 * (width floats, proj_dim for "projected").  Fails with a clear message when
 * the pooling has nothing to pool (e.g. eos without an end token, an empty
 * text with last/mean). */
int ll_pool(const ll_states *st, int seq, int item, ll_pooling pooling,
            const ll_span *span, float *out, ll_error *err);

/* Builds the JSON layer entries of one sequence.  normalize: scale each
 * vector to unit length. */
json_t *ll_layer_entries(const ll_states *st, int seq, const ll_layer_sel *sel,
                         ll_pooling pooling, const ll_span *span,
                         int normalize, ll_error *err);

/* Token strings of ids as a JSON array (vocab.json spelling). */
json_t *ll_tokens_json(const ll_tokenizer *t, const int32_t *ids, int n);

#endif

#ifndef LAYERLENS_EMBED_H_TOKENS
#define LAYERLENS_EMBED_H_TOKENS
/* The token description of one input, shared by `layerlens tokenize` and
 * POST /v1/tokenize: {"text", "token_ids", "tokens", "offsets": [[s, e], ...]}
 * (byte offsets into text; special tokens have empty spans). */
json_t *ll_input_tokens_json(const ll_tokenizer *t, const char *text,
                             size_t len, const ll_tokens *tk);
#endif
