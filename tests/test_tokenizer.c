/* test_tokenizer.c - GPT-2 and CLIP tokenizers against the references.
 *
 * Expected ids come from ../shared/fixtures/reference (openai/gpt-2
 * encoder.py and openai/CLIP simple_tokenizer.py), expected cleaned texts
 * from Python's html.unescape / str.lower rules, and long words are checked
 * against a plain transcription of the reference bpe() loop written here. */
#include "testutil.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "layerlens/tokenizer.h"
#include "../src/text_clean.h"

#define GPT2_EOT 50256
#define CLIP_SOT 49406
#define CLIP_EOT 49407

/* ---- fixtures ----------------------------------------------------------- */

typedef struct ref_case {
    const char *text;
    size_t len;
    int32_t *ids;
    int nids;
} ref_case;

typedef struct ref_set {
    json_t *root;
    ref_case *c;
    int n;
} ref_set;

static ll_tokenizer *load_tok(ll_tok_kind kind) {
    const char *dir = kind == LL_TOK_GPT2 ? "fixtures/tokenizers/gpt2" : "fixtures/tokenizers/clip";
    char vocab[4300], merges[4300];
    snprintf(vocab, sizeof vocab, "%s/%s/vocab.json", tu_shared(), dir);
    snprintf(merges, sizeof merges, "%s/%s/merges.txt", tu_shared(), dir);
    ll_error err = {{0}};
    ll_tokenizer *t = ll_tokenizer_load(kind, vocab, merges, &err);
    if (!t) fail_msg("loading the %s tokenizer: %s", dir, err.msg);
    return t;
}

static ll_tokenizer *g_gpt2, *g_clip;

static ll_tokenizer *gpt2(void) {
    if (!g_gpt2) g_gpt2 = load_tok(LL_TOK_GPT2);
    return g_gpt2;
}

static ll_tokenizer *clip(void) {
    if (!g_clip) g_clip = load_tok(LL_TOK_CLIP);
    return g_clip;
}

static json_t *load_json_nul(const char *rel) {
    /* The GPT-2 strings include a NUL character ("\u0000"). */
    json_error_t je;
    const char *p = tu_path(rel);
    json_t *j = json_load_file(p, JSON_ALLOW_NUL, &je);
    if (!j) fail_msg("%s: %s (line %d)", p, je.text, je.line);
    return j;
}

static int32_t *json_ids(const json_t *arr, int *n) {
    *n = (int)json_array_size(arr);
    int32_t *ids = malloc(((size_t)*n + 1) * sizeof *ids);
    assert_non_null(ids);
    for (int i = 0; i < *n; i++) ids[i] = (int32_t)json_integer_value(json_array_get(arr, (size_t)i));
    return ids;
}

static void load_refs(const char *rel, const char *ids_key, ref_set *rs) {
    rs->root = load_json_nul(rel);
    rs->n = (int)json_array_size(rs->root);
    assert_true(rs->n > 0);
    rs->c = calloc((size_t)rs->n, sizeof *rs->c);
    assert_non_null(rs->c);
    for (int i = 0; i < rs->n; i++) {
        json_t *o = json_array_get(rs->root, (size_t)i);
        json_t *text = json_object_get(o, "text");
        assert_true(json_is_string(text));
        rs->c[i].text = json_string_value(text);
        rs->c[i].len = json_string_length(text);
        rs->c[i].ids = json_ids(json_object_get(o, ids_key), &rs->c[i].nids);
    }
}

static void free_refs(ref_set *rs) {
    for (int i = 0; i < rs->n; i++) free(rs->c[i].ids);
    free(rs->c);
    json_decref(rs->root);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- reporting -------------------------------------------------------------- */

static void print_text(const char *s, size_t n) {
    fputc('"', stderr);
    for (size_t i = 0; i < n && i < 120; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') fprintf(stderr, "\\%c", c);
        else if (c < 0x20 || c == 0x7F) fprintf(stderr, "\\x%02x", c);
        else fputc(c, stderr);
    }
    fprintf(stderr, n > 120 ? "\"... (%zu bytes)" : "\"", n);
}

static void print_ids(const char *label, const int32_t *ids, int n) {
    fprintf(stderr, "    %-9s (%d):", label, n);
    for (int i = 0; i < n && i < 24; i++) fprintf(stderr, " %d", ids[i]);
    fprintf(stderr, n > 24 ? " ...\n" : "\n");
}

static int first_diff(const int32_t *a, int na, const int32_t *b, int nb) {
    int i = 0;
    while (i < na && i < nb && a[i] == b[i]) i++;
    return i == na && i == nb ? -1 : i;
}

/* Tokenizes every case and compares with the expected ids; prints the first
 * few mismatches with the token strings around the first difference. */
static int check_ids(ll_tokenizer *t, const ref_set *rs, const char *name) {
    int bad = 0;
    ll_tokens tok = {0};
    for (int i = 0; i < rs->n; i++) {
        const ref_case *c = &rs->c[i];
        ll_error err = {{0}};
        ll_tokens_clear(&tok);
        if (ll_tokenize(t, c->text, c->len, &tok, &err)) {
            if (bad++ < 5) fprintf(stderr, "%s case %d: error: %s\n", name, i, err.msg);
            continue;
        }
        int d = first_diff(tok.ids, tok.n, c->ids, c->nids);
        if (d < 0) continue;
        if (bad++ < 5) {
            fprintf(stderr, "%s case %d ", name, i);
            print_text(c->text, c->len);
            fprintf(stderr, ": first difference at token %d\n", d);
            print_ids("got", tok.ids, tok.n);
            print_ids("expected", c->ids, c->nids);
            const char *g = d < tok.n ? ll_token_str(t, tok.ids[d]) : "(end)";
            const char *w = d < c->nids ? ll_token_str(t, c->ids[d]) : "(end)";
            fprintf(stderr, "    token %d: got \"%s\", expected \"%s\"\n", d, g ? g : "?", w ? w : "?");
        }
    }
    ll_tokens_free(&tok);
    if (bad) fprintf(stderr, "%s: %d of %d cases differ\n", name, bad, rs->n);
    return bad;
}

/* ---- reference ids ------------------------------------------------------------ */

static void test_gpt2_reference(void **state) {
    ref_set rs;
    load_refs("fixtures/reference/tokenizer-gpt2.json", "ids", &rs);
    assert_int_equal(rs.n, 343);
    assert_int_equal(check_ids(gpt2(), &rs, "tokenizer-gpt2.json"), 0);
    free_refs(&rs);
}

static void test_clip_reference(void **state) {
    ref_set rs;
    load_refs("fixtures/reference/tokenizer-clip.json", "ids", &rs);
    assert_int_equal(rs.n, 294);
    assert_int_equal(check_ids(clip(), &rs, "tokenizer-clip.json"), 0);
    free_refs(&rs);
}

/* gpt2-tiny.json: token_ids = BPE(text) (+ 50256 when eot_appended). */
static void test_gpt2_model_inputs(void **state) {
    ref_set rs;
    load_refs("fixtures/reference/gpt2-tiny.json", "token_ids", &rs);
    int with_eot = 0;
    for (int i = 0; i < rs.n; i++) {
        json_t *o = json_array_get(rs.root, (size_t)i);
        if (json_is_true(json_object_get(o, "eot_appended"))) {
            ref_case *c = &rs.c[i];
            assert_true(c->nids >= 1);
            assert_int_equal(c->ids[c->nids - 1], GPT2_EOT);
            assert_int_equal(ll_tokenizer_eot(gpt2()), GPT2_EOT);
            c->nids--; /* compare the BPE part; the EOT is the caller's */
            with_eot++;
        }
    }
    assert_int_equal(rs.n, 96);
    assert_int_equal(with_eot, 26);
    assert_int_equal(check_ids(gpt2(), &rs, "gpt2-tiny.json"), 0);
    free_refs(&rs);
}

/* clip-tiny.json: token_ids = [SOT] + ids + [EOT] cut to 77 with the last id
 * forced to EOT; ll_tokenize does not truncate, so truncated cases compare
 * their first 76 ids and check that ours is longer. */
static void test_clip_model_inputs(void **state) {
    ref_set rs;
    load_refs("fixtures/reference/clip-tiny.json", "token_ids", &rs);
    assert_int_equal(rs.n, 70);
    int bad = 0, truncated = 0;
    ll_tokens tok = {0};
    for (int i = 0; i < rs.n; i++) {
        ref_case *c = &rs.c[i];
        int trunc = json_is_true(json_object_get(json_array_get(rs.root, (size_t)i), "truncated"));
        ll_error err = {{0}};
        ll_tokens_clear(&tok);
        assert_int_equal(ll_tokenize(clip(), c->text, c->len, &tok, &err), 0);
        int ok;
        if (trunc) {
            truncated++;
            ok = c->nids == 77 && c->ids[76] == CLIP_EOT && tok.n > 77 &&
                 first_diff(tok.ids, 76, c->ids, 76) < 0 && tok.ids[tok.n - 1] == CLIP_EOT;
        } else {
            ok = first_diff(tok.ids, tok.n, c->ids, c->nids) < 0;
        }
        if (!ok && bad++ < 5) {
            fprintf(stderr, "clip-tiny.json case %d ", i);
            print_text(c->text, c->len);
            fprintf(stderr, "%s\n", trunc ? " (truncated)" : "");
            print_ids("got", tok.ids, tok.n);
            print_ids("expected", c->ids, c->nids);
        }
    }
    ll_tokens_free(&tok);
    assert_int_equal(truncated, 1);
    assert_int_equal(bad, 0);
    free_refs(&rs);
}

/* ---- decoding and offsets ------------------------------------------------------- */

static void test_gpt2_decode_round_trip(void **state) {
    ref_set rs;
    load_refs("fixtures/reference/tokenizer-gpt2.json", "ids", &rs);
    ll_tokens tok = {0};
    for (int i = 0; i < rs.n; i++) {
        const ref_case *c = &rs.c[i];
        ll_error err = {{0}};
        ll_tokens_clear(&tok);
        assert_int_equal(ll_tokenize(gpt2(), c->text, c->len, &tok, &err), 0);
        /* decode of the reference ids and of ours both give the text back */
        char *buf = malloc(c->len + 1);
        assert_non_null(buf);
        long n = ll_decode(gpt2(), c->ids, c->nids, buf, c->len + 1, &err);
        assert_int_equal(n, (long)c->len);
        assert_memory_equal(buf, c->text, c->len);
        assert_int_equal(buf[c->len], 0);
        n = ll_decode(gpt2(), tok.ids, tok.n, buf, c->len + 1, &err);
        assert_int_equal(n, (long)c->len);
        assert_memory_equal(buf, c->text, c->len);
        /* snprintf-like: a short buffer gets a NUL-terminated prefix */
        if (c->len >= 2) {
            n = ll_decode(gpt2(), tok.ids, tok.n, buf, 2, &err);
            assert_int_equal(n, (long)c->len);
            assert_int_equal(buf[0], c->text[0]);
            assert_int_equal(buf[1], 0);
        }
        free(buf);
    }
    ll_error err = {{0}};
    int32_t bad_ids[] = {15496, 50257};
    char buf[64];
    assert_int_equal(ll_decode(gpt2(), bad_ids, 2, buf, sizeof buf, &err), -1);
    assert_non_null(strstr(err.msg, "50257"));
    int32_t eot = GPT2_EOT;
    assert_int_equal(ll_decode(gpt2(), &eot, 1, buf, sizeof buf, &err), 13);
    assert_string_equal(buf, "<|endoftext|>");
    assert_int_equal(ll_decode(gpt2(), NULL, 0, NULL, 0, &err), 0);
    ll_tokens_free(&tok);
    free_refs(&rs);
}

/* GPT-2 spans tile the input, and each token decodes to its span's bytes. */
static void test_gpt2_offsets(void **state) {
    ref_set rs;
    load_refs("fixtures/reference/tokenizer-gpt2.json", "ids", &rs);
    ll_tokens tok = {0};
    for (int i = 0; i < rs.n; i++) {
        const ref_case *c = &rs.c[i];
        ll_error err = {{0}};
        ll_tokens_clear(&tok);
        assert_int_equal(ll_tokenize(gpt2(), c->text, c->len, &tok, &err), 0);
        int32_t pos = 0;
        for (int k = 0; k < tok.n; k++) {
            assert_int_equal(tok.start[k], pos);
            assert_true(tok.end[k] > tok.start[k]);
            char buf[256];
            long n = ll_decode(gpt2(), &tok.ids[k], 1, buf, sizeof buf, &err);
            assert_int_equal(n, tok.end[k] - tok.start[k]);
            assert_memory_equal(buf, c->text + tok.start[k], (size_t)n);
            pos = tok.end[k];
        }
        assert_int_equal(pos, (int32_t)c->len);
    }
    ll_tokens_free(&tok);
    free_refs(&rs);
}

/* CLIP spans are in range, ordered, and the markers sit at 0 and len. */
static void test_clip_offsets(void **state) {
    ref_set rs;
    load_refs("fixtures/reference/tokenizer-clip.json", "ids", &rs);
    ll_tokens tok = {0};
    for (int i = 0; i < rs.n; i++) {
        const ref_case *c = &rs.c[i];
        ll_error err = {{0}};
        ll_tokens_clear(&tok);
        assert_int_equal(ll_tokenize(clip(), c->text, c->len, &tok, &err), 0);
        assert_true(tok.n >= 2);
        assert_int_equal(tok.start[0], 0);
        assert_int_equal(tok.end[0], 0);
        assert_int_equal(tok.start[tok.n - 1], (int32_t)c->len);
        assert_int_equal(tok.end[tok.n - 1], (int32_t)c->len);
        for (int k = 0; k < tok.n; k++) {
            assert_true(tok.start[k] >= 0 && tok.start[k] <= tok.end[k]);
            assert_true(tok.end[k] <= (int32_t)c->len);
            if (k > 0) {
                assert_true(tok.start[k] >= tok.start[k - 1]);
                assert_true(tok.end[k] >= tok.end[k - 1]);
            }
            if (k > 0 && k < tok.n - 1) assert_true(tok.end[k] > tok.start[k]);
        }
    }
    /* Spans point into the text as sent, through entities and case. */
    static const char text[] = "Tom &amp; JERRY";
    ll_error err = {{0}};
    ll_tokens_clear(&tok);
    assert_int_equal(ll_tokenize(clip(), text, strlen(text), &tok, &err), 0);
    assert_int_equal(tok.n, 5); /* SOT tom</w> &</w> jerry</w> EOT */
    assert_string_equal(ll_token_str(clip(), tok.ids[2]), "&</w>");
    assert_int_equal(tok.start[1], 0);
    assert_int_equal(tok.end[1], 3);
    assert_int_equal(tok.start[2], 4);
    assert_int_equal(tok.end[2], 9);
    assert_int_equal(tok.start[3], 10);
    assert_int_equal(tok.end[3], 15);
    ll_tokens_free(&tok);
    free_refs(&rs);
}

/* ---- errors and edge cases ------------------------------------------------------ */

static void test_invalid_utf8(void **state) {
    static const struct { const char *s; size_t n; } bad[] = {
        {"\xff", 1},
        {"abc\xe2\x82", 5},        /* truncated 3-byte sequence */
        {"\xc0\xaf", 2},           /* overlong '/' */
        {"x\xed\xa0\x80y", 5},     /* UTF-16 surrogate */
        {"\xf4\x90\x80\x80", 4},   /* above U+10FFFF */
        {"ok \x80 continuation", 17},
    };
    ll_tokenizer *toks[2] = {gpt2(), clip()};
    for (int t = 0; t < 2; t++) {
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
            ll_tokens tok = {0};
            ll_error err = {{0}};
            assert_int_equal(ll_tokens_push(&tok, 7, 0, 0), 0);
            assert_int_equal(ll_tokenize(toks[t], bad[i].s, bad[i].n, &tok, &err), -1);
            assert_non_null(strstr(err.msg, "UTF-8"));
            assert_int_equal(tok.n, 1); /* unchanged */
            assert_int_equal(tok.ids[0], 7);
            ll_tokens_free(&tok);
        }
    }
}

static void test_empty_and_specials(void **state) {
    ll_tokens tok = {0};
    ll_error err = {{0}};
    assert_int_equal(ll_tokenize(gpt2(), "", 0, &tok, &err), 0);
    assert_int_equal(tok.n, 0);
    assert_int_equal(ll_tokenize(gpt2(), NULL, 0, &tok, &err), 0);
    assert_int_equal(tok.n, 0);
    assert_int_equal(ll_tokenize(clip(), "", 0, &tok, &err), 0);
    assert_int_equal(tok.n, 2);
    assert_int_equal(tok.ids[0], CLIP_SOT);
    assert_int_equal(tok.ids[1], CLIP_EOT);
    /* appending: a second call adds after what is there */
    assert_int_equal(ll_tokenize(clip(), " \t", 2, &tok, &err), 0);
    assert_int_equal(tok.n, 4);
    assert_int_equal(tok.start[3], 2);

    assert_int_equal(ll_tokenizer_kind(gpt2()), LL_TOK_GPT2);
    assert_int_equal(ll_tokenizer_kind(clip()), LL_TOK_CLIP);
    assert_int_equal(ll_tokenizer_vocab_size(gpt2()), 50257);
    assert_int_equal(ll_tokenizer_vocab_size(clip()), 49408);
    assert_int_equal(ll_tokenizer_bos(gpt2()), GPT2_EOT);
    assert_int_equal(ll_tokenizer_eot(gpt2()), GPT2_EOT);
    assert_int_equal(ll_tokenizer_bos(clip()), CLIP_SOT);
    assert_int_equal(ll_tokenizer_eot(clip()), CLIP_EOT);
    assert_string_equal(ll_token_str(gpt2(), 262), "\xc4\xa0the"); /* "\u0120the" */
    assert_string_equal(ll_token_str(clip(), 49407), "<|endoftext|>");
    assert_null(ll_token_str(gpt2(), 50257));
    assert_null(ll_token_str(gpt2(), -1));
    ll_tokens_free(&tok);
}

static void test_load_errors(void **state) {
    ll_error err = {{0}};
    char vocab[4300];
    snprintf(vocab, sizeof vocab, "%s/fixtures/tokenizers/gpt2/vocab.json", tu_shared());
    assert_null(ll_tokenizer_load(LL_TOK_GPT2, vocab, "/nonexistent/merges.txt", &err));
    assert_non_null(strstr(err.msg, "/nonexistent/merges.txt"));
    assert_null(ll_tokenizer_load(LL_TOK_GPT2, "/nonexistent/vocab.json", "/x", &err));
    assert_non_null(strstr(err.msg, "/nonexistent/vocab.json"));
    /* GPT-2 merges need GPT-2 tokens: with CLIP's vocabulary they fail. */
    char cvocab[4300], gmerges[4300];
    snprintf(cvocab, sizeof cvocab, "%s/fixtures/tokenizers/clip/vocab.json", tu_shared());
    snprintf(gmerges, sizeof gmerges, "%s/fixtures/tokenizers/gpt2/merges.txt", tu_shared());
    assert_null(ll_tokenizer_load(LL_TOK_CLIP, cvocab, gmerges, &err));
    assert_non_null(strstr(err.msg, "not in the vocabulary"));
}

/* Which characters count as whitespace, pinned on strings the fixtures lack.
 * Expected ids: openai/gpt-2 encoder.py and openai/CLIP simple_tokenizer.py
 * run on these strings with the fixtures' vocab/merges (regex 2026.5.9). */
static void test_whitespace_rules(void **state) {
    static const struct { int clip; const char *s; int32_t ids[8]; } cases[] = {
        /* U+180E is no longer White_Space (PCRE2's \s still has it), so
         * " \u180e" is one pre-token, not a space and a space */
        {0, " \xe1\xa0\x8ex", {28053, 254, 236, 87, -1}},
        {0, "a\xe1\xa0\x8e  b", {64, 157, 254, 236, 220, 275, -1}},
        /* 0x1C..0x1F: not \s for the regex module */
        {0, "a\x1c\x1d  b", {64, 216, 217, 220, 275, -1}},
        {0, "x\xc2\x85\xc2\x85 y", {87, 126, 227, 126, 227, 331, -1}},
        {0, "a\xe3\x80\x80\xe3\x80\x80 b\xe2\x80\xa9", {64, 5099, 222, 5099, 222, 275, 447, 102}},
        {0, " \xe2\x80\x8b \xef\xbb\xbf", {20126, 27332, 119, 123, -1}}, /* ZWSP, BOM: not spaces */
        {1, "a\xe1\xa0\x8e b", {49406, 320, 157, 254, 492, 321, 49407, -1}},
        /* ... but 0x1C..0x1F are stripped at the ends by str.strip() */
        {1, "a\x1c" "b \x1f", {49406, 320, 472, 321, 49407, -1}},
        {1, "\x1c a", {49406, 320, 49407, -1}},
        /* the regex module under IGNORECASE drops U+0345 */
        {1, "a\xcd\x85" "b \xcd\x85!", {49406, 320, 321, 256, 49407, -1}},
        {1, "x\xc2\x85\xc2\xa0y\xe2\x80\xaf", {49406, 343, 344, 49407, -1}},
    };
    ll_tokens tok = {0};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ll_tokenizer *t = cases[i].clip ? clip() : gpt2();
        int n = 0;
        while (n < 8 && cases[i].ids[n] >= 0) n++;
        ll_error err = {{0}};
        ll_tokens_clear(&tok);
        assert_int_equal(ll_tokenize(t, cases[i].s, strlen(cases[i].s), &tok, &err), 0);
        if (first_diff(tok.ids, tok.n, cases[i].ids, n) >= 0) {
            fprintf(stderr, "%s ", cases[i].clip ? "CLIP" : "GPT-2");
            print_text(cases[i].s, strlen(cases[i].s));
            fprintf(stderr, "\n");
            print_ids("got", tok.ids, tok.n);
            print_ids("expected", cases[i].ids, n);
            fail();
        }
    }
    ll_tokens_free(&tok);
}

/* ---- CLIP cleaning ------------------------------------------------------------------- */

/* Expected values follow Python's html.unescape (HTML5 rules), re.sub(r'\s+')
 * with the regex module, str.strip() and str.lower(). */
static void test_clip_clean(void **state) {
    static const struct { const char *in, *want; } cases[] = {
        {"&amp;amp;", "&"},
        {"&ampx", "&x"},                       /* legacy name without ';' */
        {"&notit;", "\xc2\xac" "it;"},          /* longest prefix "not" */
        {"&#x80;", "\xe2\x82\xac"},             /* windows-1252 remap */
        {"&#0;", "\xef\xbf\xbd"},
        {"a&#1;b", "ab"},                      /* dropped code point */
        {"a&#13;b", "a b"},                    /* \r, then whitespace */
        {"&#xD800;", "\xef\xbf\xbd"},
        {"&#99999999999;", "\xef\xbf\xbd"},
        {"&#65", "a"},
        {"&#X41;x", "ax"},
        {"&lt&gt", "<>"},
        {"& amp;", "& amp;"},
        {"&#;", "&#;"},
        {"&#x;", "&#x;"},
        {"&amp;#60;", "<"},
        {"&AElig;x", "\xc3\xa6x"},
        {"  a\xc2\xa0\xe2\x80\x83" "b\x1c c ", "a b\x1c c"},
        {"\x1c a \x1f", "a"},
        {"\x1c a \x1f" "b", "a \x1f" "b"},
        {"\xce\xa3\xce\x8a\xce\xa3\xce\xa5\xce\xa6\xce\x9f\xce\xa3", /* ΣΊΣΥΦΟΣ */
         "\xcf\x83\xce\xaf\xcf\x83\xcf\x85\xcf\x86\xce\xbf\xcf\x82"},
        {"\xc4\xb0stanbul", "i\xcc\x87stanbul"}, /* İ -> i + U+0307 */
        {"A\xce\xa3.", "a\xcf\x82."},
        {"\xce\xa3", "\xcf\x83"},
        {"A\xce\xa3" "B", "a\xcf\x83" "b"},
        {"A'\xce\xa3'", "a'\xcf\x82'"},         /* ' is case-ignorable */
        {"&Sigma;&Sigma;", "\xcf\x83\xcf\x82"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ll_mtext m = {0};
        ll_error err = {{0}};
        size_t n = strlen(cases[i].in);
        assert_int_equal(ll_clip_clean(cases[i].in, n, &m, &err), 0);
        if (m.n != strlen(cases[i].want) || memcmp(m.s, cases[i].want, m.n) != 0) {
            fprintf(stderr, "clean(");
            print_text(cases[i].in, n);
            fprintf(stderr, ") = ");
            print_text(m.s, m.n);
            fprintf(stderr, ", expected ");
            print_text(cases[i].want, strlen(cases[i].want));
            fprintf(stderr, "\n");
            fail();
        }
        for (size_t k = 0; k < m.n; k++) {
            assert_true(m.beg[k] >= 0 && m.beg[k] < m.end[k] && m.end[k] <= (int32_t)n);
            if (k) assert_true(m.beg[k] >= m.beg[k - 1] && m.end[k] >= m.end[k - 1]);
        }
        ll_mtext_free(&m);
    }
}

/* ---- long words against a plain transcription of the reference loop ---------- */

typedef struct merges_table {
    char **pairs; /* "A B", sorted */
    int32_t *rank;
    size_t n;
} merges_table;

static merges_table *g_mt_sort; /* qsort has no context argument */

static int cmp_idx(const void *a, const void *b) {
    return strcmp(g_mt_sort->pairs[*(const int32_t *)a], g_mt_sort->pairs[*(const int32_t *)b]);
}

static void load_merges_table(const char *path, merges_table *mt) {
    size_t len;
    char *data = tu_read_file(path, &len);
    assert_non_null(data);
    size_t cap = 65536, n = 0;
    char **lines = malloc(cap * sizeof *lines);
    int first = 1;
    for (char *line = strtok(data, "\n"); line; line = strtok(NULL, "\n")) {
        if (first) { first = 0; continue; } /* "#version: 0.2" */
        assert_true(n < cap);
        lines[n++] = strdup(line);
    }
    free(data);
    int32_t *idx = malloc(n * sizeof *idx);
    for (size_t i = 0; i < n; i++) idx[i] = (int32_t)i;
    g_mt_sort = &(merges_table){lines, NULL, n};
    qsort(idx, n, sizeof *idx, cmp_idx);
    mt->pairs = malloc(n * sizeof *mt->pairs);
    mt->rank = malloc(n * sizeof *mt->rank);
    for (size_t i = 0; i < n; i++) {
        mt->pairs[i] = lines[idx[i]];
        mt->rank[i] = idx[i];
    }
    mt->n = n;
    free(lines);
    free(idx);
}

static void free_merges_table(merges_table *mt) {
    for (size_t i = 0; i < mt->n; i++) free(mt->pairs[i]);
    free(mt->pairs);
    free(mt->rank);
}

static int32_t pair_rank(const merges_table *mt, const char *a, const char *b) {
    char key[512];
    snprintf(key, sizeof key, "%s %s", a, b);
    size_t lo = 0, hi = mt->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(key, mt->pairs[mid]);
        if (c == 0) return mt->rank[mid];
        if (c < 0) hi = mid;
        else lo = mid + 1;
    }
    return INT32_MAX;
}

/* encoder.py / simple_tokenizer.py bpe(): find the lowest-ranked pair,
 * merge all its occurrences left to right, repeat.  Symbols are strings;
 * the word is lower-case ASCII, which bytes_to_unicode leaves as it is. */
static char **naive_bpe(const merges_table *mt, const char *word, int eow, int *nout) {
    int n = (int)strlen(word);
    char **w = malloc((size_t)n * sizeof *w);
    for (int i = 0; i < n; i++) {
        w[i] = malloc(8);
        snprintf(w[i], 8, "%c%s", word[i], eow && i == n - 1 ? "</w>" : "");
    }
    for (;;) {
        int32_t best = INT32_MAX;
        int bi = -1;
        for (int i = 0; i + 1 < n; i++) {
            int32_t r = pair_rank(mt, w[i], w[i + 1]);
            if (r < best) { best = r; bi = i; }
        }
        if (bi < 0) break;
        char *first = strdup(w[bi]), *second = strdup(w[bi + 1]);
        int m = 0;
        for (int i = 0; i < n;) {
            if (i + 1 < n && strcmp(w[i], first) == 0 && strcmp(w[i + 1], second) == 0) {
                size_t l = strlen(w[i]) + strlen(w[i + 1]) + 1;
                char *j = malloc(l);
                snprintf(j, l, "%s%s", w[i], w[i + 1]);
                free(w[i]);
                free(w[i + 1]);
                w[m++] = j;
                i += 2;
            } else {
                w[m++] = w[i++];
            }
        }
        n = m;
        free(first);
        free(second);
        if (n == 1) break;
    }
    *nout = n;
    return w;
}

static void check_long_words(ll_tokenizer *t, const char *merges_rel, int clip_kind) {
    merges_table mt;
    load_merges_table(tu_path(merges_rel), &mt);
    static const char *alphabets[] = {"a", "ab", "abc", "etaoinshrdlu", "abcdefghijklmnopqrstuvwxyz"};
    uint64_t seed = 12345;
    ll_tokens tok = {0};
    for (size_t a = 0; a < sizeof alphabets / sizeof alphabets[0]; a++) {
        size_t na = strlen(alphabets[a]), len = 600 + 150 * a;
        char *word = malloc(len + 1);
        for (size_t i = 0; i < len; i++) {
            seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
            word[i] = alphabets[a][(seed >> 33) % na];
        }
        word[len] = 0;
        int nn;
        char **want = naive_bpe(&mt, word, clip_kind, &nn);
        ll_error err = {{0}};
        ll_tokens_clear(&tok);
        assert_int_equal(ll_tokenize(t, word, len, &tok, &err), 0);
        int off = clip_kind ? 1 : 0;
        int ok = tok.n == nn + 2 * off;
        for (int i = 0; ok && i < nn; i++) ok = strcmp(ll_token_str(t, tok.ids[off + i]), want[i]) == 0;
        if (!ok) fprintf(stderr, "long word over \"%s\" (%zu bytes): %d tokens, reference loop %d\n",
                         alphabets[a], len, tok.n - 2 * off, nn);
        for (int i = 0; i < nn; i++) free(want[i]);
        free(want);
        free(word);
        assert_true(ok);
    }
    ll_tokens_free(&tok);
    free_merges_table(&mt);
}

static void test_long_words_match_reference_loop(void **state) {
    check_long_words(gpt2(), "fixtures/tokenizers/gpt2/merges.txt", 0);
    check_long_words(clip(), "fixtures/tokenizers/clip/merges.txt", 1);
}

/* A 10 kB word and a 1 MB whitespace run must stay fast (timed, reported,
 * not asserted) and decode back exactly. */
static void test_huge_inputs(void **state) {
    size_t len = 10000;
    char *word = malloc(len);
    uint64_t seed = 7;
    for (size_t i = 0; i < len; i++) {
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        word[i] = (char)('a' + (seed >> 33) % 26);
    }
    ll_tokens tok = {0};
    ll_error err = {{0}};
    double t0 = now_s();
    assert_int_equal(ll_tokenize(gpt2(), word, len, &tok, &err), 0);
    double t1 = now_s();
    char *buf = malloc(len + 1);
    assert_int_equal(ll_decode(gpt2(), tok.ids, tok.n, buf, len + 1, &err), (long)len);
    assert_memory_equal(buf, word, len);
    fprintf(stderr, "    10000-byte word: %d GPT-2 tokens in %.2f ms\n", tok.n, 1e3 * (t1 - t0));
    ll_tokens_clear(&tok);
    t0 = now_s();
    assert_int_equal(ll_tokenize(clip(), word, len, &tok, &err), 0);
    t1 = now_s();
    assert_int_equal(tok.end[tok.n - 2], (int32_t)len);
    fprintf(stderr, "    10000-byte word: %d CLIP tokens in %.2f ms\n", tok.n, 1e3 * (t1 - t0));
    free(buf);
    free(word);

    size_t big = 1 << 20;
    char *ws = malloc(big);
    for (size_t i = 0; i < big; i++) ws[i] = i % 3 ? ' ' : '\n';
    ws[big - 1] = 'x';
    ll_tokens_clear(&tok);
    t0 = now_s();
    assert_int_equal(ll_tokenize(gpt2(), ws, big, &tok, &err), 0);
    t1 = now_s();
    assert_int_equal(tok.end[tok.n - 1], (int32_t)big);
    buf = malloc(big + 1);
    assert_int_equal(ll_decode(gpt2(), tok.ids, tok.n, buf, big + 1, &err), (long)big);
    assert_memory_equal(buf, ws, big);
    fprintf(stderr, "    1 MiB whitespace: %d GPT-2 tokens in %.2f ms\n", tok.n, 1e3 * (t1 - t0));
    ll_tokens_clear(&tok);
    t0 = now_s();
    assert_int_equal(ll_tokenize(clip(), ws, big, &tok, &err), 0);
    t1 = now_s();
    assert_int_equal(tok.n, 3); /* SOT x</w> EOT */
    assert_int_equal(tok.start[1], (int32_t)big - 1);
    fprintf(stderr, "    1 MiB whitespace: CLIP in %.2f ms\n", 1e3 * (t1 - t0));
    free(buf);
    free(ws);
    ll_tokens_free(&tok);
}

/* ---- threads, cache, timing ------------------------------------------------------------ */

typedef struct thread_job {
    ll_tokenizer *t;
    const ref_set *rs;
    int seed, passes, mismatches, errors;
} thread_job;

static void *thread_main(void *arg) {
    thread_job *j = arg;
    ll_tokens tok = {0};
    for (int p = 0; p < j->passes; p++) {
        for (int i = 0; i < j->rs->n; i++) {
            /* each thread walks the cases in its own order */
            int k = (i * 7 + p * 13 + j->seed * 31) % j->rs->n;
            const ref_case *c = &j->rs->c[k];
            ll_error err = {{0}};
            ll_tokens_clear(&tok);
            if (ll_tokenize(j->t, c->text, c->len, &tok, &err)) j->errors++;
            else if (first_diff(tok.ids, tok.n, c->ids, c->nids) >= 0) j->mismatches++;
        }
    }
    ll_tokens_free(&tok);
    return NULL;
}

static void run_threads(ll_tok_kind kind, const char *rel) {
    ref_set rs;
    load_refs(rel, "ids", &rs);
    ll_tokenizer *t = load_tok(kind); /* a cold cache, filled concurrently */
    enum { NT = 4 };
    pthread_t th[NT];
    thread_job jobs[NT];
    for (int i = 0; i < NT; i++) {
        jobs[i] = (thread_job){t, &rs, i, 3, 0, 0};
        assert_int_equal(pthread_create(&th[i], NULL, thread_main, &jobs[i]), 0);
    }
    for (int i = 0; i < NT; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(jobs[i].errors, 0);
        assert_int_equal(jobs[i].mismatches, 0);
    }
    size_t entries, max_entries;
    ll_tokenizer_cache_stats(t, &entries, &max_entries);
    assert_true(entries > 0 && entries <= max_entries);
    ll_tokenizer_free(t);
    free_refs(&rs);
}

static void test_threads_share_cache(void **state) {
    run_threads(LL_TOK_GPT2, "fixtures/reference/tokenizer-gpt2.json");
    run_threads(LL_TOK_CLIP, "fixtures/reference/tokenizer-clip.json");
}

/* More distinct words than the cache holds: it stays bounded and correct. */
static void test_cache_bound(void **state) {
    ll_tokenizer *t = gpt2();
    size_t entries, max_entries;
    ll_tokenizer_cache_stats(t, &entries, &max_entries);
    size_t nwords = max_entries + max_entries / 2;
    size_t cap = nwords * 8 + 16, len = 0;
    char *text = malloc(cap);
    for (size_t i = 0; i < nwords; i++) {
        size_t x = i;
        text[len++] = ' ';
        for (int k = 0; k < 5; k++, x /= 26) text[len++] = (char)('a' + x % 26);
    }
    ll_tokens tok = {0};
    ll_error err = {{0}};
    assert_int_equal(ll_tokenize(t, text, len, &tok, &err), 0);
    ll_tokenizer_cache_stats(t, &entries, &max_entries);
    assert_true(entries <= max_entries);
    /* the first words again, after their entries were evicted */
    ll_tokens again = {0};
    assert_int_equal(ll_tokenize(t, text, 600, &again, &err), 0);
    assert_true(again.n <= tok.n);
    assert_int_equal(first_diff(again.ids, again.n, tok.ids, again.n), -1);
    char *buf = malloc(len + 1);
    assert_int_equal(ll_decode(t, tok.ids, tok.n, buf, len + 1, &err), (long)len);
    assert_memory_equal(buf, text, len);
    free(buf);
    free(text);
    ll_tokens_free(&tok);
    ll_tokens_free(&again);
}

static void time_set(ll_tokenizer *t, const char *rel, const char *name) {
    ref_set rs;
    load_refs(rel, "ids", &rs);
    ll_tokens tok = {0};
    size_t bytes = 0;
    double best_cold = 0, warm = 0;
    for (int rep = 0; rep < 3; rep++) {
        double t0 = now_s();
        for (int i = 0; i < rs.n; i++) {
            ll_error err = {{0}};
            ll_tokens_clear(&tok);
            assert_int_equal(ll_tokenize(t, rs.c[i].text, rs.c[i].len, &tok, &err), 0);
            if (rep == 0) bytes += rs.c[i].len;
        }
        double dt = now_s() - t0;
        if (rep == 0) best_cold = dt;
        else warm = rep == 1 || dt < warm ? dt : warm;
    }
    fprintf(stderr, "    %s: %d strings, %zu bytes: %.2f ms first pass, %.2f ms with a warm cache\n",
            name, rs.n, bytes, 1e3 * best_cold, 1e3 * warm);
    ll_tokens_free(&tok);
    free_refs(&rs);
}

static void test_timing(void **state) {
    double t0 = now_s();
    ll_tokenizer *g = load_tok(LL_TOK_GPT2);
    double t1 = now_s();
    ll_tokenizer *c = load_tok(LL_TOK_CLIP);
    double t2 = now_s();
    fprintf(stderr, "    load: GPT-2 %.1f ms, CLIP %.1f ms\n", 1e3 * (t1 - t0), 1e3 * (t2 - t1));
    time_set(g, "fixtures/reference/tokenizer-gpt2.json", "GPT-2");
    time_set(c, "fixtures/reference/tokenizer-clip.json", "CLIP");
    ll_tokenizer_free(g);
    ll_tokenizer_free(c);
}

static int teardown(void **state) {
    ll_tokenizer_free(g_gpt2);
    ll_tokenizer_free(g_clip);
    g_gpt2 = g_clip = NULL;
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gpt2_reference),
        cmocka_unit_test(test_clip_reference),
        cmocka_unit_test(test_gpt2_model_inputs),
        cmocka_unit_test(test_clip_model_inputs),
        cmocka_unit_test(test_gpt2_decode_round_trip),
        cmocka_unit_test(test_gpt2_offsets),
        cmocka_unit_test(test_clip_offsets),
        cmocka_unit_test(test_invalid_utf8),
        cmocka_unit_test(test_empty_and_specials),
        cmocka_unit_test(test_load_errors),
        cmocka_unit_test(test_whitespace_rules),
        cmocka_unit_test(test_clip_clean),
        cmocka_unit_test(test_long_words_match_reference_loop),
        cmocka_unit_test(test_huge_inputs),
        cmocka_unit_test(test_threads_share_cache),
        cmocka_unit_test(test_cache_bound),
        cmocka_unit_test(test_timing),
    };
    return cmocka_run_group_tests(tests, NULL, teardown);
}
