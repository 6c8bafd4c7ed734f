/* fuzz_tokenizer_clip.c - arbitrary bytes through the CLIP tokenizer.
 *
 * The tokenizer is loaded once from the shared fixtures
 * (tokenizers/clip/vocab.json + merges.txt).  Checked per input:
 *   - invalid UTF-8 is refused and leaves the token list as it was; valid
 *     UTF-8 always tokenizes;
 *   - the result is <|startoftext|> ... <|endoftext|> appended after what
 *     the list held, the markers with empty spans at 0 and at len;
 *   - ids are in [0, vocab size); spans lie within [0, len] with start <= end,
 *     and starts and ends never go backwards (tokens follow the text);
 *   - the cleaned text (ll_clip_clean) is valid UTF-8 with no ASCII upper
 *     case, whitespace only as single inner spaces (U+001C..U+001F, which
 *     the reference's regex \s leaves alone but str.strip() removes, only
 *     inside), and a non-decreasing
 *     map back into [0, len];
 *   - the tokens between the markers decode to the cleaned text, word by
 *     word: with spaces taken out both are the same bytes (U+0345, which
 *     the reference pattern drops, aside). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzzutil.h"
#include "layerlens/tokenizer.h"
#include "text_clean.h"

static ll_tokenizer *tok;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    ll_error err = {{0}};
    tok = ll_tokenizer_load(LL_TOK_CLIP,
                            fuzz_shared_path("fixtures/tokenizers/clip/vocab.json"),
                            fuzz_shared_path("fixtures/tokenizers/clip/merges.txt"),
                            &err);
    FUZZ_CHECK(tok != NULL, "cannot load the CLIP tokenizer: %s", err.msg);
    return 0;
}

#define MARK_ID 3

static void check_tokens(const ll_tokens *t, size_t len) {
    int vocab = ll_tokenizer_vocab_size(tok);
    FUZZ_CHECK(t->n >= 3, "%d tokens", t->n);
    FUZZ_CHECK(t->ids[1] == ll_tokenizer_bos(tok) && t->start[1] == 0 && t->end[1] == 0,
               "first token %d [%d, %d)", t->ids[1], t->start[1], t->end[1]);
    int last = t->n - 1;
    FUZZ_CHECK(t->ids[last] == ll_tokenizer_eot(tok) && (size_t)t->start[last] == len &&
                   (size_t)t->end[last] == len,
               "last token %d [%d, %d), len %zu", t->ids[last], t->start[last],
               t->end[last], len);
    for (int i = 1; i < t->n; i++) {
        FUZZ_CHECK(t->ids[i] >= 0 && t->ids[i] < vocab, "id %d at %d", t->ids[i], i);
        FUZZ_CHECK(t->start[i] >= 0 && t->start[i] <= t->end[i] &&
                       (size_t)t->end[i] <= len,
                   "token %d spans [%d, %d) of %zu", i, t->start[i], t->end[i], len);
        if (i > 1)
            FUZZ_CHECK(t->start[i] >= t->start[i - 1] && t->end[i] >= t->end[i - 1],
                       "token %d [%d, %d) before token %d [%d, %d)", i,
                       t->start[i], t->end[i], i - 1, t->start[i - 1], t->end[i - 1]);
    }
}

/* The regex module's \s (Unicode White_Space), which the reference's
 * whitespace_clean() collapses to one space ... */
static int is_ws_cp(uint32_t c) {
    return (c >= 9 && c <= 13) || c == 0x20 || c == 0x85 ||
           c == 0xa0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200a) ||
           c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f || c == 0x3000;
}

/* ... and what its str.strip() removes in addition, from the ends only. */
static int is_py_space_cp(uint32_t c) { return is_ws_cp(c) || (c >= 0x1c && c <= 0x1f); }

/* Next code point of valid UTF-8 at s[*i]. */
static uint32_t next_cp(const uint8_t *s, size_t *i) {
    uint8_t c = s[*i];
    int n = c < 0x80 ? 1 : c < 0xe0 ? 2 : c < 0xf0 ? 3 : 4;
    uint32_t cp = n == 1 ? c : c & (0x7f >> n);
    for (int k = 1; k < n; k++) cp = (cp << 6) | (s[*i + k] & 0x3f);
    *i += (size_t)n;
    return cp;
}

/* The cleaned text as CLIP's tokenizer sees it; returns it without spaces
 * and U+0345 (malloc'd, length in *out_len). */
static char *check_clean(const uint8_t *text, size_t len, size_t *out_len) {
    ll_mtext m = {0};
    ll_error err = {{0}};
    FUZZ_CHECK(ll_clip_clean((const char *)text, len, &m, &err) == 0, "clean: %s",
               err.msg);
    FUZZ_CHECK(fuzz_utf8_valid((const uint8_t *)m.s, m.n), "cleaned text is not UTF-8");
    char *bare = malloc(m.n + 1);
    FUZZ_CHECK(bare != NULL, "out of memory");
    size_t k = 0;
    for (size_t i = 0; i < m.n;) {
        size_t at = i;
        uint32_t cp = next_cp((const uint8_t *)m.s, &i);
        FUZZ_CHECK(!(cp >= 'A' && cp <= 'Z'), "upper case '%c' after cleaning", (char)cp);
        FUZZ_CHECK(!((at == 0 || i == m.n) && is_py_space_cp(cp)),
                   "U+%04X at the %s of the cleaned text", cp, at ? "end" : "start");
        if (is_ws_cp(cp)) {
            FUZZ_CHECK(cp == ' ' && at > 0 && i < m.n && m.s[i] != ' ',
                       "whitespace U+%04X at %zu of %zu in the cleaned text", cp, at, m.n);
            continue;
        }
        if (cp == 0x345) continue;
        memcpy(bare + k, m.s + at, i - at);
        k += i - at;
    }
    for (size_t i = 0; i < m.n; i++) {
        FUZZ_CHECK(m.beg[i] >= 0 && m.beg[i] <= m.end[i] && (size_t)m.end[i] <= len,
                   "cleaned byte %zu maps to [%d, %d) of %zu", i, m.beg[i], m.end[i], len);
        if (i) FUZZ_CHECK(m.beg[i] >= m.beg[i - 1] && m.end[i] >= m.end[i - 1],
                          "cleaned byte %zu maps backwards", i);
    }
    ll_mtext_free(&m);
    *out_len = k;
    return bare;
}

static void check_decoding(const ll_tokens *t, const char *bare, size_t bare_len) {
    ll_error err = {{0}};
    int n = t->n - 3; /* without the list's first token and the markers */
    long need = ll_decode(tok, t->ids + 2, n, NULL, 0, &err);
    FUZZ_CHECK(need >= 0, "decode: %s", err.msg);
    char *buf = malloc((size_t)need + 1);
    FUZZ_CHECK(buf != NULL, "out of memory");
    FUZZ_CHECK(ll_decode(tok, t->ids + 2, n, buf, (size_t)need + 1, &err) == need,
               "decode length changed");
    size_t k = 0;
    for (long i = 0; i < need; i++)
        if (buf[i] != ' ') buf[k++] = buf[i];
    FUZZ_CHECK(k == bare_len && memcmp(buf, bare, k) == 0,
               "tokens decode to %zu non-space bytes, the cleaned text has %zu",
               k, bare_len);
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ll_tokens t = {0};
    FUZZ_CHECK(ll_tokens_push(&t, MARK_ID, 5, 9) == 0, "out of memory");
    ll_error err = {{0}};
    int rc = ll_tokenize(tok, (const char *)data, size, &t, &err);
    if (!fuzz_utf8_valid(data, size)) {
        FUZZ_CHECK(rc == -1 && err.msg[0], "invalid UTF-8 accepted");
    } else {
        FUZZ_CHECK(rc == 0, "valid UTF-8 refused: %s", err.msg);
    }
    FUZZ_CHECK(t.n >= 1 && t.ids[0] == MARK_ID && t.start[0] == 5 && t.end[0] == 9,
               "the token already in the list was changed");
    if (rc == 0) {
        check_tokens(&t, size);
        size_t bare_len;
        char *bare = check_clean(data, size, &bare_len);
        check_decoding(&t, bare, bare_len);
        free(bare);
    } else {
        FUZZ_CHECK(t.n == 1, "a failed call left %d tokens", t.n - 1);
    }
    ll_tokens_free(&t);
    return 0;
}
