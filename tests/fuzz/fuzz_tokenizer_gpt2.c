/* fuzz_tokenizer_gpt2.c - arbitrary bytes through the GPT-2 tokenizer.
 *
 * The tokenizer is loaded once from the shared fixtures
 * (tokenizers/gpt2/vocab.json + merges.txt).  Checked per input:
 *   - invalid UTF-8 is refused and leaves the token list as it was;
 *   - valid UTF-8 always tokenizes (GPT-2's pattern covers every character);
 *   - tokens are appended after what the list already held;
 *   - ids are in [0, vocab size); spans are non-empty, contiguous and cover
 *     [0, len) exactly (byte-level BPE loses no byte);
 *   - every token decodes to exactly the bytes of its span, and the whole
 *     decoding is the input (decode(encode(x)) == x). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzzutil.h"
#include "layerlens/tokenizer.h"

static ll_tokenizer *tok;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    ll_error err = {{0}};
    tok = ll_tokenizer_load(LL_TOK_GPT2,
                            fuzz_shared_path("fixtures/tokenizers/gpt2/vocab.json"),
                            fuzz_shared_path("fixtures/tokenizers/gpt2/merges.txt"),
                            &err);
    FUZZ_CHECK(tok != NULL, "cannot load the GPT-2 tokenizer: %s", err.msg);
    return 0;
}

/* A token already in the list, to see that tokenizing appends. */
#define MARK_ID 50256

static void check_tokens(const ll_tokens *t, const uint8_t *text, size_t len) {
    int vocab = ll_tokenizer_vocab_size(tok);
    int32_t pos = 0;
    for (int i = 1; i < t->n; i++) {
        FUZZ_CHECK(t->ids[i] >= 0 && t->ids[i] < vocab, "id %d at %d", t->ids[i], i);
        FUZZ_CHECK(t->start[i] == pos && t->end[i] > t->start[i],
                   "token %d spans [%d, %d), expected to start at %d", i,
                   t->start[i], t->end[i], pos);
        pos = t->end[i];
        FUZZ_CHECK((size_t)pos <= len, "token %d ends at %d of %zu", i, pos, len);
        char buf[256];
        ll_error err = {{0}};
        long n = ll_decode(tok, &t->ids[i], 1, buf, sizeof buf, &err);
        FUZZ_CHECK(n == t->end[i] - t->start[i] && (size_t)n < sizeof buf &&
                       memcmp(buf, text + t->start[i], (size_t)n) == 0,
                   "token %d (id %d) decodes to %ld bytes that are not its span "
                   "[%d, %d)", i, t->ids[i], n, t->start[i], t->end[i]);
    }
    FUZZ_CHECK((size_t)pos == len, "tokens cover %d of %zu bytes", pos, len);
}

static void check_round_trip(const ll_tokens *t, const uint8_t *text, size_t len) {
    ll_error err = {{0}};
    long need = ll_decode(tok, t->ids + 1, t->n - 1, NULL, 0, &err);
    FUZZ_CHECK(need == (long)len, "decoding needs %ld bytes, input has %zu: %s",
               need, len, err.msg);
    char *buf = malloc(len + 1);
    FUZZ_CHECK(buf != NULL, "out of memory");
    long got = ll_decode(tok, t->ids + 1, t->n - 1, buf, len + 1, &err);
    FUZZ_CHECK(got == (long)len && memcmp(buf, text, len) == 0 && buf[len] == 0,
               "decode(encode(x)) != x (%ld bytes)", got);
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ll_tokens t = {0};
    FUZZ_CHECK(ll_tokens_push(&t, MARK_ID, 7, 7) == 0, "out of memory");
    ll_error err = {{0}};
    int rc = ll_tokenize(tok, (const char *)data, size, &t, &err);
    int valid = fuzz_utf8_valid(data, size);
    if (!valid) {
        FUZZ_CHECK(rc == -1 && err.msg[0], "invalid UTF-8 accepted");
    } else {
        FUZZ_CHECK(rc == 0, "valid UTF-8 refused: %s", err.msg);
    }
    FUZZ_CHECK(t.n >= 1 && t.ids[0] == MARK_ID && t.start[0] == 7 && t.end[0] == 7,
               "the token already in the list was changed");
    if (rc == 0) {
        FUZZ_CHECK(size == 0 || t.n > 1, "no tokens for %zu bytes", size);
        check_tokens(&t, data, size);
        check_round_trip(&t, data, size);
    } else {
        FUZZ_CHECK(t.n == 1, "a failed call left %d tokens", t.n - 1);
    }
    ll_tokens_free(&t);
    return 0;
}
