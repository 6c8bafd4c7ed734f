/* text_clean.h - CLIP's text cleaning, with a map back to the input bytes.
 *
 * openai/CLIP simple_tokenizer.py (ftfy.fix_text taken as the identity)
 * cleans a text as
 *     whitespace_clean(basic_clean(text)).lower()
 * i.e. html.unescape twice, strip(), every run of whitespace -> one space,
 * strip(), then Python's full str.lower().  ll_clip_clean reproduces that
 * byte for byte, and remembers for every output byte which span of the input
 * it came from, so that token offsets can point into the text the user sent.
 *
 * Internal to the tokenizer (not part of the public headers). */
#ifndef LAYERLENS_TEXT_CLEAN_H
#define LAYERLENS_TEXT_CLEAN_H

#include <stddef.h>
#include <stdint.h>

#include "layerlens/error.h"

/* A byte string whose byte i came from input bytes [beg[i], end[i]). */
typedef struct ll_mtext {
    char *s;
    int32_t *beg, *end;
    size_t n, cap;
} ll_mtext;

void ll_mtext_free(ll_mtext *m);

/* Cleans text[0..len) (valid UTF-8, len <= INT32_MAX) into out (zeroed or
 * freed before).  The result is valid UTF-8 and out->beg/end are
 * non-decreasing.  -1 only when out of memory. */
int ll_clip_clean(const char *text, size_t len, ll_mtext *out, ll_error *err);

/* Python's character classes, as used by the tokenizers' patterns. */
int ll_py_is_whitespace(uint32_t cp); /* regex module's \s (Unicode White_Space) */
int ll_py_isspace(uint32_t cp);       /* str.isspace / str.strip(): \s + 0x1C..0x1F */

/* ---- generated tables (src/tokenizer_tables.c) ------------------------- */

typedef struct ll_html_entity { const char *name, *value; } ll_html_entity;
typedef struct ll_html_charref { uint32_t num; const char *value; } ll_html_charref;
typedef struct ll_cp_range { uint32_t lo, hi; } ll_cp_range;

extern const ll_html_entity ll_html_entities[];   /* sorted by strcmp(name) */
extern const int ll_html_entities_n;
extern const ll_html_charref ll_html_invalid_charrefs[]; /* sorted by num */
extern const int ll_html_invalid_charrefs_n;
extern const uint32_t ll_html_invalid_codepoints[];      /* sorted */
extern const int ll_html_invalid_codepoints_n;
extern const ll_cp_range ll_cased_ranges[];              /* sorted, disjoint */
extern const int ll_cased_ranges_n;
extern const ll_cp_range ll_case_ignorable_ranges[];
extern const int ll_case_ignorable_ranges_n;

#endif
