/* tokenizer.h - GPT-2 and CLIP byte-pair-encoding tokenizers.
 *
 * Loaded from a Hugging Face vocab.json + merges.txt.  Both produce exactly
 * the ids of the original implementations (openai/gpt-2 encoder.py and
 * openai/CLIP simple_tokenizer.py with ftfy as the identity).
 *
 * GPT-2: ll_tokenize returns the BPE ids of the text, no special tokens (a
 *   literal "<|endoftext|>" in the text is ordinary characters).  Callers add
 *   ll_tokenizer_eot() where they want it.
 * CLIP: ll_tokenize returns [<|startoftext|>] + ids + [<|endoftext|>], not
 *   truncated; the text is cleaned as the original does (HTML unescaped twice,
 *   whitespace collapsed and stripped, lower-cased).
 *
 * A tokenizer is immutable after load apart from an internal, locked BPE
 * cache, so one instance may be shared by any number of threads. */
#ifndef LAYERLENS_TOKENIZER_H
#define LAYERLENS_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "layerlens/error.h"

typedef enum ll_tok_kind { LL_TOK_GPT2, LL_TOK_CLIP } ll_tok_kind;

typedef struct ll_tokenizer ll_tokenizer;

/* A growable list of tokens with byte spans [start, end) into the input
 * text.  For CLIP a span covers the original bytes the token came from (HTML
 * entities and case changes are traced back); special tokens have empty spans
 * (start == end, at the start resp. the end of the text). */
typedef struct ll_tokens {
    int32_t *ids;
    int32_t *start;
    int32_t *end;
    int n, cap;
} ll_tokens;

ll_tokenizer *ll_tokenizer_load(ll_tok_kind kind, const char *vocab_path,
                                const char *merges_path, ll_error *err);
void ll_tokenizer_free(ll_tokenizer *t);

ll_tok_kind ll_tokenizer_kind(const ll_tokenizer *t);
int ll_tokenizer_vocab_size(const ll_tokenizer *t);
/* GPT-2: 50256 for both; CLIP: 49406 (start) and 49407 (end). */
int32_t ll_tokenizer_bos(const ll_tokenizer *t);
int32_t ll_tokenizer_eot(const ll_tokenizer *t);

/* Appends the tokens of text[0..len) to out (out must be zero-initialised or
 * previously used).  Invalid UTF-8 is an error.  On error out is unchanged. */
int ll_tokenize(const ll_tokenizer *t, const char *text, size_t len,
                ll_tokens *out, ll_error *err);
/* Appends one token with span [start, end); -1 when out of memory. */
int ll_tokens_push(ll_tokens *out, int32_t id, int32_t start, int32_t end);
void ll_tokens_clear(ll_tokens *out);
void ll_tokens_free(ll_tokens *out);

/* The token as stored in vocab.json (e.g. "\u0120the" for GPT-2, "the</w>"
 * for CLIP); NULL for an id out of range. */
const char *ll_token_str(const ll_tokenizer *t, int32_t id);
/* Decodes ids back to bytes (GPT-2: the exact original text).  Returns the
 * number of bytes the full decoding needs (like snprintf); writes at most
 * cap bytes, NUL-terminated when cap > 0.  -1 on an id out of range. */
long ll_decode(const ll_tokenizer *t, const int32_t *ids, int n, char *buf,
               size_t cap, ll_error *err);

/* The shared word -> ids cache: entries held now and the most it holds. */
void ll_tokenizer_cache_stats(const ll_tokenizer *t, size_t *entries,
                              size_t *max_entries);

#endif
