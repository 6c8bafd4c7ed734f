/* bpe.h - the byte-level byte-pair-encoding model behind both tokenizers.
 *
 * A vocabulary (token string <-> id, from a Hugging Face vocab.json), the
 * ranked merges (merges.txt), GPT-2's bytes_to_unicode mapping and a bounded,
 * locked cache of encoded words.  Given the bytes of one pre-token it returns
 * the same ids as the `bpe()` method of openai/gpt-2 encoder.py, or, with an
 * end-of-word suffix ("</w>", appended to the last symbol), of openai/CLIP
 * simple_tokenizer.py.
 *
 * Internal to the tokenizer (not part of the public headers). */
#ifndef LAYERLENS_BPE_H
#define LAYERLENS_BPE_H

#include <stddef.h>
#include <stdint.h>

#include "layerlens/error.h"

typedef struct ll_bpe ll_bpe;

/* A growable array of token ids. */
typedef struct ll_ids {
    int32_t *v;
    size_t n, cap;
} ll_ids;

int ll_ids_push(ll_ids *a, int32_t id);
void ll_ids_free(ll_ids *a);

/* eow: NULL for GPT-2, "</w>" for CLIP. */
ll_bpe *ll_bpe_load(const char *vocab_path, const char *merges_path,
                    const char *eow, ll_error *err);
void ll_bpe_free(ll_bpe *b);

/* One past the largest id in vocab.json. */
int ll_bpe_vocab_size(const ll_bpe *b);
/* The id of a token string, -1 if it is not in the vocabulary. */
int32_t ll_bpe_id(const ll_bpe *b, const char *tok, size_t len);
/* The token string of id, NULL when there is none. */
const char *ll_bpe_str(const ll_bpe *b, int32_t id);
/* The bytes id stands for (bytes_to_unicode undone; an end-of-word suffix
 * becomes a space), *len their count.  NULL when id is not a token. */
const char *ll_bpe_bytes(const ll_bpe *b, int32_t id, size_t *len);
/* How many input bytes id covers: its bytes without the end-of-word space. */
int ll_bpe_span(const ll_bpe *b, int32_t id);

/* Appends the ids of the pre-token word[0..n) (raw bytes, n >= 1) to out.
 * Thread-safe.  -1 only when out of memory. */
int ll_bpe_encode(const ll_bpe *b, const uint8_t *word, size_t n, ll_ids *out);

/* Cache statistics (for tests): entries currently held and the bound. */
void ll_bpe_cache_stats(const ll_bpe *b, size_t *entries, size_t *max_entries);

#endif
