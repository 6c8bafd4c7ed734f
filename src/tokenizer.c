/* tokenizer.c - GPT-2 and CLIP tokenizers (see layerlens/tokenizer.h).
 *
 * Both split the text into pre-tokens with the reference's regular
 * expression (PCRE2 standing in for Python's `regex` module) and encode each
 * pre-token with byte-level BPE (bpe.c).  CLIP first cleans the text
 * (text_clean.c) and keeps a map from cleaned bytes back to input bytes. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "layerlens/tokenizer.h"

#include <pcre2.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "bpe.h"
#include "text_clean.h"

struct ll_tokenizer {
    ll_tok_kind kind;
    ll_bpe *bpe;
    pcre2_code *re;
    int32_t bos, eot;
};

/* Python's `regex` module, which both references use, takes \s to be the
 * Unicode White_Space property: \t \n \v \f \r, space, U+0085, U+00A0,
 * U+1680, U+2000..U+200A, U+2028, U+2029, U+202F, U+205F, U+3000 (and not the
 * separators 0x1C..0x1F, unlike str.isspace).  PCRE2's \s under PCRE2_UCP is
 * \p{Z} + \h + \v, which in addition has U+180E MONGOLIAN VOWEL SEPARATOR
 * (a format character since Unicode 6.3).  So the patterns spell the class
 * out (WS, kept equal to ll_py_is_whitespace) instead of using \s. */
#define WS "\\t\\n\\x0B\\f\\r\\x20\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}" \
           "\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}"

/* openai/gpt-2 src/encoder.py */
static const char GPT2_PATTERN[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^" WS "\\p{L}\\p{N}]+"
    "|[" WS "]+(?![^" WS "])|[" WS "]+";

/* openai/CLIP clip/simple_tokenizer.py, compiled with re.IGNORECASE.
 * One quirk of the regex module is reproduced: under IGNORECASE it matches
 * U+0345 COMBINING GREEK YPOGEGRAMMENI (whose case folding is a Greek iota)
 * with none of the alternatives, so findall drops it (checked against
 * regex 2026.5.9 over every code point; PCRE2 would put it in the last
 * class).  Hence the \x{345} in that class. */
static const char CLIP_PATTERN[] =
    "<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d"
    "|[\\p{L}]+|[\\p{N}]|[^" WS "\\x{345}\\p{L}\\p{N}]+";

static const char SOT_TEXT[] = "<|startoftext|>";
static const char EOT_TEXT[] = "<|endoftext|>";

/* ---- the token list ------------------------------------------------------ */

int ll_tokens_push(ll_tokens *out, int32_t id, int32_t start, int32_t end) {
    if (out->n == out->cap) {
        if (out->cap > INT32_MAX / 2) return -1;
        int cap = out->cap ? 2 * out->cap : 64;
        int32_t *ids = realloc(out->ids, (size_t)cap * sizeof *ids);
        if (!ids) return -1;
        out->ids = ids;
        int32_t *st = realloc(out->start, (size_t)cap * sizeof *st);
        if (!st) return -1;
        out->start = st;
        int32_t *en = realloc(out->end, (size_t)cap * sizeof *en);
        if (!en) return -1;
        out->end = en;
        out->cap = cap;
    }
    out->ids[out->n] = id;
    out->start[out->n] = start;
    out->end[out->n] = end;
    out->n++;
    return 0;
}

void ll_tokens_clear(ll_tokens *out) { out->n = 0; }

void ll_tokens_free(ll_tokens *out) {
    free(out->ids);
    free(out->start);
    free(out->end);
    memset(out, 0, sizeof *out);
}

/* ---- load ------------------------------------------------------------------- */

static pcre2_code *compile_pattern(const char *pattern, uint32_t flags, ll_error *err) {
    int ecode;
    PCRE2_SIZE eoff;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED,
                                   PCRE2_UTF | PCRE2_UCP | flags, &ecode, &eoff, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(ecode, msg, sizeof msg);
        ll_errorf(err, "pre-tokenizer pattern, offset %zu: %s", (size_t)eoff, (char *)msg);
        return NULL;
    }
    /* JIT is only a speed-up: without it pcre2_match interprets. */
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
    return re;
}

static int32_t special_id(const ll_bpe *b, const char *tok, const char *path, ll_error *err) {
    int32_t id = ll_bpe_id(b, tok, strlen(tok));
    if (id < 0) ll_errorf(err, "%s: no token \"%s\"", path, tok);
    return id;
}

ll_tokenizer *ll_tokenizer_load(ll_tok_kind kind, const char *vocab_path,
                                const char *merges_path, ll_error *err) {
    if (kind != LL_TOK_GPT2 && kind != LL_TOK_CLIP) {
        ll_errorf(err, "unknown tokenizer kind %d", (int)kind);
        return NULL;
    }
    if (!vocab_path || !merges_path) {
        ll_errorf(err, "tokenizer: vocab.json and merges.txt paths are required");
        return NULL;
    }
    ll_tokenizer *t = calloc(1, sizeof *t);
    if (!t) {
        ll_errorf(err, "out of memory");
        return NULL;
    }
    t->kind = kind;
    int clip = kind == LL_TOK_CLIP;
    t->bpe = ll_bpe_load(vocab_path, merges_path, clip ? "</w>" : NULL, err);
    if (!t->bpe) goto fail;
    t->eot = special_id(t->bpe, EOT_TEXT, vocab_path, err);
    t->bos = clip ? special_id(t->bpe, SOT_TEXT, vocab_path, err) : t->eot;
    if (t->eot < 0 || t->bos < 0) goto fail;
    t->re = clip ? compile_pattern(CLIP_PATTERN, PCRE2_CASELESS, err)
                 : compile_pattern(GPT2_PATTERN, 0, err);
    if (!t->re) goto fail;
    return t;
fail:
    ll_tokenizer_free(t);
    return NULL;
}

void ll_tokenizer_free(ll_tokenizer *t) {
    if (!t) return;
    ll_bpe_free(t->bpe);
    pcre2_code_free(t->re);
    free(t);
}

ll_tok_kind ll_tokenizer_kind(const ll_tokenizer *t) { return t->kind; }
int ll_tokenizer_vocab_size(const ll_tokenizer *t) { return ll_bpe_vocab_size(t->bpe); }
int32_t ll_tokenizer_bos(const ll_tokenizer *t) { return t->bos; }
int32_t ll_tokenizer_eot(const ll_tokenizer *t) { return t->eot; }

const char *ll_token_str(const ll_tokenizer *t, int32_t id) { return ll_bpe_str(t->bpe, id); }

void ll_tokenizer_cache_stats(const ll_tokenizer *t, size_t *entries, size_t *max_entries) {
    ll_bpe_cache_stats(t->bpe, entries, max_entries);
}

/* ---- pre-tokenization ----------------------------------------------------------- */

/* Offset of the first byte that is not valid UTF-8 (overlong forms,
 * surrogates and code points above U+10FFFF included), or len. */
static size_t utf8_invalid_at(const char *s, size_t len) {
    size_t i = 0;
    while (i < len) {
        utf8proc_int32_t cp;
        utf8proc_ssize_t k = utf8proc_iterate((const utf8proc_uint8_t *)s + i,
                                              (utf8proc_ssize_t)(len - i), &cp);
        if (k <= 0) return i;
        i += (size_t)k;
    }
    return len;
}

/* Finds the next pre-token at or after *off, like re.findall does (unmatched
 * characters are skipped).  1 with [*ms, *me), 0 when there is none, -1 on a
 * matching error. */
static int next_match(const pcre2_code *re, pcre2_match_data *md, const char *s, size_t n,
                      size_t *off, size_t *ms, size_t *me, ll_error *err) {
    if (*off >= n) return 0;
    uint32_t opts = PCRE2_NO_UTF_CHECK; /* validated (or produced valid) by the caller */
    int rc = pcre2_match(re, (PCRE2_SPTR)s, n, *off, opts, md, NULL);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT) /* a huge run: the interpreter uses the heap */
        rc = pcre2_match(re, (PCRE2_SPTR)s, n, *off, opts | PCRE2_NO_JIT, md, NULL);
    if (rc == PCRE2_ERROR_NOMATCH) return 0;
    if (rc < 0) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(rc, msg, sizeof msg);
        return ll_errorf(err, "pre-tokenizer failed at byte %zu: %s", *off, (char *)msg);
    }
    const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
    if (ov[1] <= ov[0]) /* none of the patterns can match the empty string */
        return ll_errorf(err, "pre-tokenizer matched nothing at byte %zu", (size_t)ov[0]);
    *ms = ov[0];
    *me = ov[1];
    *off = ov[1];
    return 1;
}

/* ---- GPT-2 ---------------------------------------------------------------------- */

/* encoder.py: every pre-token is BPE-encoded; its tokens cover its bytes in
 * order, so each token's span is the next ll_bpe_span() bytes. */
static int gpt2_tokenize(const ll_tokenizer *t, const char *text, size_t len,
                         pcre2_match_data *md, ll_ids *ids, ll_tokens *out, ll_error *err) {
    size_t off = 0, ms, me;
    int rc;
    while ((rc = next_match(t->re, md, text, len, &off, &ms, &me, err)) == 1) {
        ids->n = 0;
        if (ll_bpe_encode(t->bpe, (const uint8_t *)text + ms, me - ms, ids))
            return ll_errorf(err, "out of memory");
        size_t pos = ms;
        for (size_t i = 0; i < ids->n; i++) {
            size_t span = (size_t)ll_bpe_span(t->bpe, ids->v[i]);
            if (ll_tokens_push(out, ids->v[i], (int32_t)pos, (int32_t)(pos + span)))
                return ll_errorf(err, "out of memory");
            pos += span;
        }
    }
    return rc;
}

/* ---- CLIP ------------------------------------------------------------------------- */

/* Pushes a token covering cleaned bytes [a, b), mapped back to the input. */
static int clip_push(ll_tokens *out, int32_t id, const ll_mtext *m, size_t a, size_t b) {
    int32_t start = m->beg[a], end = b > a ? m->end[b - 1] : m->beg[a];
    return ll_tokens_push(out, id, start, end);
}

static int is_text(const char *s, size_t n, const char *lit) {
    return n == strlen(lit) && memcmp(s, lit, n) == 0;
}

/* simple_tokenizer.py encode(), wrapped in <|startoftext|> ... <|endoftext|>.
 * A pre-token that is literally one of those two markers (the pattern lists
 * them first, and the reference's BPE cache is seeded with them) is that
 * special token; every other one is BPE-encoded with "</w>" on its end. */
static int clip_tokenize(const ll_tokenizer *t, const char *text, size_t len,
                         pcre2_match_data *md, ll_ids *ids, ll_tokens *out, ll_error *err) {
    ll_mtext m = {0};
    if (ll_clip_clean(text, len, &m, err)) return -1;
    int rc = ll_tokens_push(out, t->bos, 0, 0);
    size_t off = 0, ms, me;
    while (rc == 0 && (rc = next_match(t->re, md, m.s, m.n, &off, &ms, &me, err)) == 1) {
        rc = 0;
        if (is_text(m.s + ms, me - ms, SOT_TEXT) || is_text(m.s + ms, me - ms, EOT_TEXT)) {
            int32_t id = m.s[ms + 2] == 's' ? t->bos : t->eot;
            if (clip_push(out, id, &m, ms, me)) rc = ll_errorf(err, "out of memory");
            continue;
        }
        ids->n = 0;
        if (ll_bpe_encode(t->bpe, (const uint8_t *)m.s + ms, me - ms, ids)) {
            rc = ll_errorf(err, "out of memory");
            break;
        }
        size_t pos = ms;
        for (size_t i = 0; i < ids->n && rc == 0; i++) {
            size_t span = (size_t)ll_bpe_span(t->bpe, ids->v[i]);
            if (clip_push(out, ids->v[i], &m, pos, pos + span)) rc = ll_errorf(err, "out of memory");
            pos += span;
        }
    }
    if (rc == 0 && ll_tokens_push(out, t->eot, (int32_t)len, (int32_t)len))
        rc = ll_errorf(err, "out of memory");
    ll_mtext_free(&m);
    return rc;
}

/* ---- entry points ------------------------------------------------------------------- */

int ll_tokenize(const ll_tokenizer *t, const char *text, size_t len,
                ll_tokens *out, ll_error *err) {
    if (!text && len) return ll_errorf(err, "no text given");
    if (len > INT32_MAX) return ll_errorf(err, "text of %zu bytes is too long", len);
    if (len == 0) text = "";
    size_t bad = utf8_invalid_at(text, len);
    if (bad < len)
        return ll_errorf(err, "text is not valid UTF-8 (byte 0x%02X at offset %zu)",
                         (unsigned char)text[bad], bad);
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(t->re, NULL);
    if (!md) return ll_errorf(err, "out of memory");
    ll_ids ids = {0};
    int n0 = out->n;
    int rc = t->kind == LL_TOK_CLIP ? clip_tokenize(t, text, len, md, &ids, out, err)
                                    : gpt2_tokenize(t, text, len, md, &ids, out, err);
    if (rc) out->n = n0; /* leave out as it was */
    ll_ids_free(&ids);
    pcre2_match_data_free(md);
    return rc < 0 ? -1 : 0;
}

long ll_decode(const ll_tokenizer *t, const int32_t *ids, int n, char *buf,
               size_t cap, ll_error *err) {
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        size_t len;
        const char *bytes = ll_bpe_bytes(t->bpe, ids[i], &len);
        if (!bytes)
            return ll_errorf(err, "token id %d at position %d is not in the vocabulary (size %d)",
                             (int)ids[i], i, ll_bpe_vocab_size(t->bpe));
        if (total < cap) memcpy(buf + total, bytes, len < cap - total ? len : cap - total);
        total += len;
    }
    if (cap > 0) buf[total < cap ? total : cap - 1] = 0;
    return (long)total;
}
