/* test_server_api.c - the HTTP API end to end: one real server (the tiny
 * fixture checkpoints of ../shared) started as a child process, every
 * endpoint called over a loopback socket, the numbers compared with the
 * fixture references (computed by third-party implementations), and every
 * documented error status provoked. */
#include "server_harness.h"

#include "layerlens/dtype.h"

static th_server SRV;
static json_t *REF_GPT2, *REF_CLIP;

static int have_shared(void) {
    const char *env = getenv("LAYERLENS_SHARED");
    char probe[4200];
    struct stat st;
    snprintf(probe, sizeof probe, "%s/fixtures/README.md", env && *env ? env : "../shared");
    return stat(probe, &st) == 0;
}

static int group_setup(void **state) {
    if (!have_shared()) return 0; /* each test then skips (or fails under CI) */
    const char *args[] = {"--gpt2", tu_path("fixtures/models/gpt2-tiny"),
                          "--clip", tu_path("fixtures/models/clip-tiny"),
                          "--workers", "2", "--max-inputs", "64", "--max-queue", "256",
                          "--max-body-bytes", "65536", NULL};
    th_start(&SRV, args, 1);
    REF_GPT2 = tu_load_json("fixtures/reference/gpt2-tiny.json");
    REF_CLIP = tu_load_json("fixtures/reference/clip-tiny.json");
    return 0;
}

static int group_teardown(void **state) {
    json_decref(REF_GPT2);
    json_decref(REF_CLIP);
    if (SRV.pid > 0) {
        int st = th_stop(&SRV, SIGTERM, 60);
        if (!(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0)) {
            char *log = th_log(&SRV);
            fprintf(stderr, "server did not exit 0 (status %d); log:\n%s\n", st, log);
            free(log);
            return -1;
        }
    }
    return 0;
}

static json_t *post_ok(const char *path, json_t *req) {
    int status;
    json_t *j = th_post(SRV.port, path, req, &status);
    if (status != 200) {
        char *t = j ? json_dumps(j, 0) : NULL;
        fail_msg("POST %s: status %d: %s", path, status, t ? t : "(no JSON)");
    }
    assert_non_null(j);
    return j;
}

/* ---------------------------------------------------------------- basics */

static void test_health_and_ready(void **state) {
    tu_shared();
    int status;
    json_t *j = th_get(SRV.port, "/healthz", &status);
    assert_int_equal(status, 200);
    assert_string_equal(json_string_value(json_object_get(j, "status")), "ok");
    json_decref(j);
    j = th_get(SRV.port, "/readyz", &status);
    assert_int_equal(status, 200);
    assert_int_equal(json_array_size(json_object_get(j, "models")), 2);
    json_decref(j);
    /* HEAD: the headers of GET, no body */
    th_resp r;
    assert_int_equal(th_request(SRV.port, "HEAD", "/healthz", NULL, 0, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.len, 0);
    th_resp_free(&r);
}

/* Dimensions against the fixture configs; sha256 against the fixture's own
 * record of its files (reference/eval-tiny.json). */
static void test_models(void **state) {
    tu_shared();
    json_t *eval = tu_load_json("fixtures/reference/eval-tiny.json");
    json_t *gcfg = tu_load_json("fixtures/models/gpt2-tiny/config.json");
    json_t *ccfg = tu_load_json("fixtures/models/clip-tiny/config.json");
    json_t *ctext = json_object_get(ccfg, "text_config");
    json_t *j = NULL;
    int status;
    /* hashing runs in the background: wait for it */
    for (int tries = 0; tries < 500; tries++) {
        json_decref(j);
        j = th_get(SRV.port, "/v1/models", &status);
        assert_int_equal(status, 200);
        json_t *d = json_object_get(j, "data");
        int done = 1;
        for (size_t i = 0; i < json_array_size(d); i++)
            done &= !strcmp(json_string_value(json_object_get(json_array_get(d, i),
                                                              "sha256_status")), "done");
        if (done) break;
        th_sleep_ms(20);
    }
    json_t *data = json_object_get(j, "data");
    assert_int_equal(json_array_size(data), 2);
    for (size_t i = 0; i < 2; i++) {
        json_t *m = json_array_get(data, i);
        const char *id = json_string_value(json_object_get(m, "id"));
        int is_gpt2 = !strcmp(id, "gpt2");
        assert_true(is_gpt2 || !strcmp(id, "clip"));
        assert_true(json_is_true(json_object_get(m, "ready")));
        assert_true(json_is_false(json_object_get(m, "demo")));
        /* no --dtype: the float32 reference */
        assert_string_equal(json_string_value(json_object_get(m, "dtype")), "f32");
        json_int_t layers = json_integer_value(json_object_get(m, "layers"));
        json_int_t width = json_integer_value(json_object_get(m, "width"));
        json_int_t heads = json_integer_value(json_object_get(m, "heads"));
        json_int_t vocab = json_integer_value(json_object_get(m, "vocabulary"));
        json_int_t ctx = json_integer_value(json_object_get(m, "context_length"));
        if (is_gpt2) {
            assert_int_equal(layers, json_integer_value(json_object_get(gcfg, "n_layer")));
            assert_int_equal(width, json_integer_value(json_object_get(gcfg, "n_embd")));
            assert_int_equal(heads, json_integer_value(json_object_get(gcfg, "n_head")));
            assert_int_equal(vocab, json_integer_value(json_object_get(gcfg, "vocab_size")));
            assert_int_equal(ctx, json_integer_value(json_object_get(gcfg, "n_positions")));
            assert_true(json_is_null(json_object_get(m, "projection_dim")));
        } else {
            assert_int_equal(layers, json_integer_value(json_object_get(ctext, "num_hidden_layers")));
            assert_int_equal(width, json_integer_value(json_object_get(ctext, "hidden_size")));
            assert_int_equal(heads, json_integer_value(json_object_get(ctext, "num_attention_heads")));
            assert_int_equal(vocab, json_integer_value(json_object_get(ctext, "vocab_size")));
            assert_int_equal(ctx, json_integer_value(json_object_get(ctext, "max_position_embeddings")));
            assert_int_equal(json_integer_value(json_object_get(m, "projection_dim")),
                             json_integer_value(json_object_get(ccfg, "projection_dim")));
        }
        json_t *ref = json_object_get(json_object_get(eval, "models"), id);
        json_t *files = json_object_get(m, "files");
        assert_int_equal(json_array_size(files), 4);
        int checked = 0;
        for (size_t f = 0; f < 4; f++) {
            json_t *file = json_array_get(files, f);
            const char *name = json_string_value(json_object_get(file, "name"));
            const char *sha = json_string_value(json_object_get(file, "sha256"));
            assert_non_null(sha);
            assert_int_equal(strlen(sha), 64);
            const char *want = NULL;
            if (!strcmp(name, "model.safetensors"))
                want = json_string_value(json_object_get(ref, "model_safetensors_sha256"));
            if (!strcmp(name, "config.json"))
                want = json_string_value(json_object_get(ref, "config_json_sha256"));
            if (want) {
                assert_string_equal(sha, want);
                checked++;
            }
        }
        assert_int_equal(checked, 2);
    }
    json_decref(j);
    json_decref(eval);
    json_decref(gcfg);
    json_decref(ccfg);
}

/* ---------------------------------------------------------------- tokenize */

static void tokenize_reference(const char *model, const char *ref_path, int clip) {
    /* a few reference texts hold U+0000, which the API accepts too */
    json_error_t je;
    json_t *ref = json_load_file(tu_path(ref_path), JSON_ALLOW_NUL, &je);
    if (!ref) fail_msg("%s: %s", ref_path, je.text);
    json_t *texts = json_array();
    json_t *want = json_array();
    json_t *too_long = json_array();
    size_t i;
    json_t *c;
    json_array_foreach(ref, i, c) {
        json_t *ids = json_object_get(c, "ids");
        /* the references are untruncated; CLIP's longer ones must be refused
         * with truncation off */
        if (clip && json_array_size(ids) > 77) {
            json_array_append(too_long, json_object_get(c, "text"));
            continue;
        }
        json_array_append(texts, json_object_get(c, "text"));
        json_array_append(want, ids);
    }
    size_t n = json_array_size(texts), checked = 0;
    for (size_t start = 0; start < n; start += 64) {
        json_t *chunk = json_array();
        for (size_t k = start; k < n && k < start + 64; k++)
            json_array_append(chunk, json_array_get(texts, k));
        json_t *res = post_ok("/v1/tokenize", json_pack("{s:s, s:O, s:b}", "model", model,
                                                        "input", chunk, "truncate", 0));
        assert_string_equal(json_string_value(json_object_get(res, "model")), model);
        json_t *inputs = json_object_get(res, "inputs");
        assert_int_equal(json_array_size(inputs), json_array_size(chunk));
        for (size_t k = 0; k < json_array_size(inputs); k++) {
            json_t *in = json_array_get(inputs, k);
            json_t *ids = json_object_get(in, "token_ids");
            if (!json_equal(ids, json_array_get(want, start + k)))
                fail_msg("%s: token ids differ for %s", model,
                         json_string_value(json_array_get(texts, start + k)));
            assert_true(json_equal(json_object_get(in, "text"), json_array_get(chunk, k)));
            json_t *offs = json_object_get(in, "offsets");
            json_t *toks = json_object_get(in, "tokens");
            assert_int_equal(json_array_size(offs), json_array_size(ids));
            assert_int_equal(json_array_size(toks), json_array_size(ids));
            size_t tlen = json_string_length(json_object_get(in, "text"));
            for (size_t t = 0; t < json_array_size(offs); t++) {
                json_int_t b = json_integer_value(json_array_get(json_array_get(offs, t), 0));
                json_int_t e = json_integer_value(json_array_get(json_array_get(offs, t), 1));
                assert_true(0 <= b && b <= e && (size_t)e <= tlen);
            }
            checked++;
        }
        json_decref(res);
        json_decref(chunk);
    }
    assert_int_equal(checked, n);
    json_array_foreach(too_long, i, c) {
        int status;
        json_t *e = th_post(SRV.port, "/v1/tokenize",
                            json_pack("{s:s, s:O, s:b}", "model", model, "input", c,
                                      "truncate", 0), &status);
        assert_int_equal(status, 422);
        json_decref(e);
        /* truncated (the default): 77 ids ending with the end token */
        json_t *res = post_ok("/v1/tokenize", json_pack("{s:s, s:O}", "model", model, "input", c));
        json_t *ids = json_object_get(json_array_get(json_object_get(res, "inputs"), 0), "token_ids");
        assert_int_equal(json_array_size(ids), 77);
        assert_int_equal(json_integer_value(json_array_get(ids, 76)), 49407);
        json_decref(res);
    }
    if (clip) assert_true(json_array_size(too_long) > 0);
    json_decref(texts);
    json_decref(want);
    json_decref(too_long);
    json_decref(ref);
}

static void test_tokenize(void **state) {
    tu_shared();
    tokenize_reference("gpt2", "fixtures/reference/tokenizer-gpt2.json", 0);
    tokenize_reference("clip", "fixtures/reference/tokenizer-clip.json", 1);
    /* bos/eos add GPT-2's <|endoftext|> with empty spans */
    json_t *res = post_ok("/v1/tokenize", json_pack("{s:s, s:s, s:b, s:b}", "model", "gpt2",
                                                    "input", "hello", "bos", 1, "eos", 1));
    json_t *in = json_array_get(json_object_get(res, "inputs"), 0);
    json_t *ids = json_object_get(in, "token_ids");
    assert_int_equal(json_array_size(ids), 3);
    assert_int_equal(json_integer_value(json_array_get(ids, 0)), 50256);
    assert_int_equal(json_integer_value(json_array_get(ids, 2)), 50256);
    json_decref(res);
}

/* ---------------------------------------------------------------- embeddings */

/* Every case of a reference file through /v1/embeddings with all layers and
 * pooling none, in requests of up to `chunk` inputs.  Returns the largest
 * absolute difference seen. */
static double embed_reference_gpt2(int chunk) {
    double worst = 0;
    size_t n = json_array_size(REF_GPT2), compared = 0;
    for (int eot = 0; eot <= 1; eot++) {
        json_t *cases = json_array();
        for (size_t i = 0; i < n; i++) {
            json_t *c = json_array_get(REF_GPT2, i);
            if (json_is_true(json_object_get(c, "eot_appended")) == eot)
                json_array_append(cases, c);
        }
        for (size_t s = 0; s < json_array_size(cases); s += chunk) {
            json_t *texts = json_array();
            for (size_t k = s; k < json_array_size(cases) && k < s + chunk; k++)
                json_array_append(texts, json_object_get(json_array_get(cases, k), "text"));
            json_t *res = post_ok("/v1/embeddings",
                                  json_pack("{s:s, s:o, s:s, s:s, s:b, s:b}", "model", "gpt2",
                                            "input", texts, "layers", "all", "pooling", "none",
                                            "eos", eot, "return_tokens", 1));
            json_t *data = json_object_get(res, "data");
            for (size_t k = 0; k < json_array_size(data); k++) {
                json_t *item = json_array_get(data, k);
                json_t *c = json_array_get(cases, s + k);
                assert_int_equal(json_integer_value(json_object_get(item, "index")), k);
                assert_true(json_equal(json_object_get(item, "token_ids"),
                                       json_object_get(c, "token_ids")));
                json_t *layers = json_object_get(item, "layers");
                json_t *want = json_object_get(c, "layers");
                assert_int_equal(json_array_size(layers), json_array_size(want));
                for (size_t L = 0; L < json_array_size(layers); L++) {
                    json_t *e = json_array_get(layers, L);
                    assert_int_equal(json_integer_value(json_object_get(e, "layer")), L);
                    double d = th_max_diff_json(json_object_get(e, "tokens"),
                                                json_array_get(want, L));
                    if (!(d <= worst)) worst = d;
                }
                compared++;
            }
            json_decref(res);
        }
        json_decref(cases);
    }
    assert_int_equal(compared, n);
    return worst;
}

static void test_embeddings_gpt2_reference(void **state) {
    tu_shared();
    double worst = embed_reference_gpt2(32);
    fprintf(stderr, "gpt2-tiny: %zu cases, every layer, max |diff| = %.3g\n",
            json_array_size(REF_GPT2), worst);
    assert_true(worst <= 1e-4);
}

static void test_embeddings_clip_reference(void **state) {
    tu_shared();
    double worst = 0;
    size_t n = json_array_size(REF_CLIP);
    for (size_t s = 0; s < n; s += 24) {
        json_t *texts = json_array();
        for (size_t k = s; k < n && k < s + 24; k++)
            json_array_append(texts, json_object_get(json_array_get(REF_CLIP, k), "text"));
        json_t *res = post_ok("/v1/embeddings",
                              json_pack("{s:s, s:o, s:[sss], s:s, s:b}", "model", "clip",
                                        "input", texts, "layers", "all", "final", "projected",
                                        "pooling", "none", "return_tokens", 1));
        json_t *data = json_object_get(res, "data");
        for (size_t k = 0; k < json_array_size(data); k++) {
            json_t *c = json_array_get(REF_CLIP, s + k);
            json_t *item = json_array_get(data, k);
            assert_true(json_equal(json_object_get(item, "token_ids"),
                                   json_object_get(c, "token_ids")));
            json_t *layers = json_object_get(item, "layers");
            assert_int_equal(json_array_size(layers), 7);
            for (size_t L = 0; L < 5; L++) {
                json_t *e = json_array_get(layers, L);
                assert_int_equal(json_integer_value(json_object_get(e, "layer")), L);
                double d = th_max_diff_json(json_object_get(e, "tokens"),
                                            json_array_get(json_object_get(c, "layers"), L));
                if (!(d <= worst)) worst = d;
            }
            json_t *fin = json_array_get(layers, 5), *proj = json_array_get(layers, 6);
            assert_string_equal(json_string_value(json_object_get(fin, "layer")), "final");
            assert_string_equal(json_string_value(json_object_get(proj, "layer")), "projected");
            double d1 = th_max_diff_json(json_object_get(fin, "tokens"), json_object_get(c, "final_ln"));
            double d2 = th_max_diff_json(json_object_get(proj, "embedding"),
                                         json_object_get(c, "projected"));
            if (!(d1 <= worst)) worst = d1;
            if (!(d2 <= worst)) worst = d2;
        }
        json_decref(res);
    }
    fprintf(stderr, "clip-tiny: %zu cases, every layer + final + projected, max |diff| = %.3g\n",
            n, worst);
    assert_true(worst <= 1e-4);
}

/* The OpenAI-compatible default: CLIP's projected embedding, GPT-2's last
 * token of the final layer; usage counts the tokens. */
static void test_embeddings_default(void **state) {
    tu_shared();
    json_t *c = json_array_get(REF_CLIP, 30);
    json_t *res = post_ok("/v1/embeddings", json_pack("{s:s, s:O}", "model", "clip", "input",
                                                      json_object_get(c, "text")));
    assert_string_equal(json_string_value(json_object_get(res, "object")), "list");
    assert_string_equal(json_string_value(json_object_get(res, "model")), "clip");
    json_t *item = json_array_get(json_object_get(res, "data"), 0);
    assert_string_equal(json_string_value(json_object_get(item, "object")), "embedding");
    assert_int_equal(json_integer_value(json_object_get(item, "index")), 0);
    assert_true(th_max_diff_json(json_object_get(item, "embedding"),
                                 json_object_get(c, "projected")) <= 1e-4);
    json_t *usage = json_object_get(res, "usage");
    assert_int_equal(json_integer_value(json_object_get(usage, "prompt_tokens")),
                     json_integer_value(json_object_get(c, "n_tokens")));
    assert_int_equal(json_integer_value(json_object_get(usage, "total_tokens")),
                     json_integer_value(json_object_get(c, "n_tokens")));
    json_decref(res);

    json_t *g = json_array_get(REF_GPT2, 50); /* a sentence without <|endoftext|> */
    assert_true(json_is_false(json_object_get(g, "eot_appended")));
    res = post_ok("/v1/embeddings", json_pack("{s:s, s:[O]}", "model", "gpt2", "input",
                                              json_object_get(g, "text")));
    item = json_array_get(json_object_get(res, "data"), 0);
    json_t *last_layer = json_array_get(json_object_get(g, "layers"), 4);
    json_t *last_row = json_array_get(last_layer, json_array_size(last_layer) - 1);
    assert_true(th_max_diff_json(json_object_get(item, "embedding"), last_row) <= 1e-4);
    json_decref(res);

    /* encoding_format base64: the same float32 values, little-endian */
    res = post_ok("/v1/embeddings", json_pack("{s:s, s:O, s:s}", "model", "clip", "input",
                                              json_object_get(c, "text"), "encoding_format",
                                              "base64"));
    const char *b64 = json_string_value(json_object_get(
        json_array_get(json_object_get(res, "data"), 0), "embedding"));
    assert_non_null(b64);
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    unsigned char bytes[256];
    size_t nb = 0, len = strlen(b64);
    for (size_t i = 0; i + 3 < len && nb + 3 <= sizeof bytes; i += 4) {
        unsigned v = 0;
        int pad = 0;
        for (int k = 0; k < 4; k++) {
            char ch = b64[i + k];
            v <<= 6;
            if (ch == '=') pad++;
            else v |= (unsigned)(strchr(tab, ch) - tab);
        }
        bytes[nb++] = v >> 16;
        if (pad < 2) bytes[nb++] = (v >> 8) & 255;
        if (pad < 1) bytes[nb++] = v & 255;
    }
    json_t *proj = json_object_get(c, "projected");
    assert_int_equal(nb, 4 * json_array_size(proj));
    for (size_t i = 0; i < json_array_size(proj); i++) {
        float f;
        memcpy(&f, bytes + 4 * i, 4);
        assert_true(fabs(f - json_number_value(json_array_get(proj, i))) <= 1e-4);
    }
    json_decref(res);
}

/* Pooling, normalize and return_tokens against vectors taken from the
 * reference states in the test itself. */
static void test_embeddings_pooling(void **state) {
    tu_shared();
    json_t *g = NULL;
    size_t i;
    json_t *c;
    json_array_foreach(REF_GPT2, i, c) /* a sentence with <|endoftext|> appended */
        if (json_is_true(json_object_get(c, "eot_appended")) &&
            json_integer_value(json_object_get(c, "n_tokens")) > 5) { g = c; break; }
    assert_non_null(g);
    json_t *L2 = json_array_get(json_object_get(g, "layers"), 2);
    size_t T = json_array_size(L2), C = json_array_size(json_array_get(L2, 0));
    /* mean over the text's tokens (not the appended end token) */
    double mean[64] = {0};
    for (size_t t = 0; t + 1 < T; t++)
        for (size_t k = 0; k < C; k++) mean[k] += json_number_value(json_array_get(json_array_get(L2, t), k));
    json_t *res = post_ok("/v1/embeddings",
                          json_pack("{s:s, s:O, s:[i], s:s, s:b}", "model", "gpt2", "input",
                                    json_object_get(g, "text"), "layers", 2, "pooling", "mean",
                                    "eos", 1));
    json_t *emb = json_object_get(json_array_get(json_object_get(
        json_array_get(json_object_get(res, "data"), 0), "layers"), 0), "embedding");
    assert_int_equal(json_array_size(emb), C);
    for (size_t k = 0; k < C; k++)
        assert_true(fabs(json_number_value(json_array_get(emb, k)) - mean[k] / (T - 1)) <= 1e-4);
    json_decref(res);

    /* eos = the appended end token (the last row); last = the row before it;
     * normalize = unit length */
    res = post_ok("/v1/embeddings",
                  json_pack("{s:s, s:O, s:[i], s:s, s:b, s:b}", "model", "gpt2", "input",
                            json_object_get(g, "text"), "layers", 2, "pooling", "eos", "eos", 1,
                            "normalize", 1));
    emb = json_object_get(json_array_get(json_object_get(
        json_array_get(json_object_get(res, "data"), 0), "layers"), 0), "embedding");
    json_t *row = json_array_get(L2, T - 1);
    double nrm = 0, dot = 0, rr = 0;
    for (size_t k = 0; k < C; k++) {
        double x = json_number_value(json_array_get(emb, k));
        double y = json_number_value(json_array_get(row, k));
        nrm += x * x, dot += x * y, rr += y * y;
    }
    assert_true(fabs(sqrt(nrm) - 1) <= 1e-5);
    assert_true(fabs(dot / sqrt(rr) - 1) <= 1e-5); /* same direction as the row */
    json_decref(res);

    res = post_ok("/v1/embeddings",
                  json_pack("{s:s, s:O, s:[i], s:s, s:b}", "model", "gpt2", "input",
                            json_object_get(g, "text"), "layers", 2, "pooling", "last", "eos", 1));
    emb = json_object_get(json_array_get(json_object_get(
        json_array_get(json_object_get(res, "data"), 0), "layers"), 0), "embedding");
    assert_true(th_max_diff_json(emb, json_array_get(L2, T - 2)) <= 1e-4);
    json_decref(res);

    /* CLIP "final" pooled at eos is the reference pooled state */
    json_t *cc = json_array_get(REF_CLIP, 60);
    res = post_ok("/v1/embeddings",
                  json_pack("{s:s, s:O, s:s, s:s}", "model", "clip", "input",
                            json_object_get(cc, "text"), "layers", "final", "pooling", "eos"));
    emb = json_object_get(json_array_get(json_object_get(
        json_array_get(json_object_get(res, "data"), 0), "layers"), 0), "embedding");
    assert_true(th_max_diff_json(emb, json_object_get(cc, "pooled")) <= 1e-4);
    json_decref(res);
}

/* Batching changes no number: the same inputs one per request and all in
 * one request agree to 1e-6. */
static void test_batching_invariance(void **state) {
    tu_shared();
    json_t *texts = json_array();
    for (size_t i = 44; i < json_array_size(REF_CLIP) && json_array_size(texts) < 20; i++)
        json_array_append(texts, json_object_get(json_array_get(REF_CLIP, i), "text"));
    const char *models[] = {"gpt2", "clip"};
    for (int mi = 0; mi < 2; mi++) {
        json_t *all = post_ok("/v1/embeddings",
                              json_pack("{s:s, s:O, s:s, s:s}", "model", models[mi], "input",
                                        texts, "layers", "all", "pooling", "none"));
        double worst = 0;
        for (size_t k = 0; k < json_array_size(texts); k++) {
            json_t *one = post_ok("/v1/embeddings",
                                  json_pack("{s:s, s:O, s:s, s:s}", "model", models[mi],
                                            "input", json_array_get(texts, k), "layers", "all",
                                            "pooling", "none"));
            json_t *a = json_object_get(json_array_get(json_object_get(one, "data"), 0), "layers");
            json_t *b = json_object_get(json_array_get(json_object_get(all, "data"), k), "layers");
            assert_int_equal(json_array_size(a), 5);
            assert_int_equal(json_array_size(b), 5);
            for (size_t L = 0; L < 5; L++) {
                double d = th_max_diff_json(json_object_get(json_array_get(a, L), "tokens"),
                                            json_object_get(json_array_get(b, L), "tokens"));
                if (!(d <= worst)) worst = d;
            }
            json_decref(one);
        }
        fprintf(stderr, "%s: one by one vs %zu in one batch: max |diff| = %.3g\n",
                models[mi], json_array_size(texts), worst);
        assert_true(worst <= 1e-6);
        json_decref(all);
    }
    json_decref(texts);
}

/* ---------------------------------------------------------------- --dtype bf16 */

/* A second server, with bf16 weights; stopped in the teardown even when the
 * test failed. */
static th_server BF16;

static int stop_bf16(void **state) {
    if (BF16.pid > 0) th_stop(&BF16, SIGKILL, 10);
    return 0;
}

/* The same requests on the f32 server and on one started with --dtype bf16:
 * /v1/models says bf16, layer 0 (embeddings, no product with weights) is
 * identical, and the later layers differ by bf16's rounding only: at most
 * 5e-2, where the states of two tokens of one text lie at least ten times
 * further apart. */
static void test_dtype_bf16(void **state) {
    tu_shared();
    const char *args[] = {"--gpt2", tu_path("fixtures/models/gpt2-tiny"),
                          "--clip", tu_path("fixtures/models/clip-tiny"),
                          "--workers", "2", "--dtype", "bf16", NULL};
    th_start(&BF16, args, 1);
    int status;
    json_t *j = th_get(BF16.port, "/v1/models", &status);
    assert_int_equal(status, 200);
    json_t *data = json_object_get(j, "data");
    assert_int_equal(json_array_size(data), 2);
    for (size_t i = 0; i < 2; i++)
        assert_string_equal(json_string_value(json_object_get(json_array_get(data, i), "dtype")),
                            "bf16");
    json_decref(j);
    assert_true(th_log_has(&BF16, "of bf16 weights"));
    /* warned about only where the portable code would compute it (the
     * server is this build's binary) */
    assert_int_equal(th_log_has(&BF16, "many times slower"), !ll_bf16_native());

    json_t *texts = json_array();
    for (size_t i = 44; i < json_array_size(REF_CLIP) && json_array_size(texts) < 8; i++)
        json_array_append(texts, json_object_get(json_array_get(REF_CLIP, i), "text"));
    const char *models[] = {"gpt2", "clip"};
    for (int mi = 0; mi < 2; mi++) {
        json_t *req = json_pack("{s:s, s:O, s:s, s:s}", "model", models[mi], "input", texts,
                                "layers", "all", "pooling", "none");
        json_t *f32 = post_ok("/v1/embeddings", json_incref(req));
        json_t *bf16 = th_post(BF16.port, "/v1/embeddings", req, &status);
        assert_int_equal(status, 200);
        double layer0 = 0, worst = 0, between = 0;
        for (size_t k = 0; k < json_array_size(texts); k++) {
            json_t *a = json_object_get(json_array_get(json_object_get(f32, "data"), k), "layers");
            json_t *b = json_object_get(json_array_get(json_object_get(bf16, "data"), k), "layers");
            assert_int_equal(json_array_size(a), 5);
            assert_int_equal(json_array_size(b), 5);
            for (size_t L = 0; L < 5; L++) {
                json_t *ta = json_object_get(json_array_get(a, L), "tokens");
                json_t *tb = json_object_get(json_array_get(b, L), "tokens");
                double d = th_max_diff_json(ta, tb);
                if (L == 0) layer0 = d > layer0 ? d : layer0;
                else if (!(d <= worst)) worst = d;
                /* how far apart the states of a text's first and last
                 * tokens lie, the scale the tolerance is measured against */
                double apart = th_max_diff_json(json_array_get(ta, 0),
                                                json_array_get(ta, json_array_size(ta) - 1));
                if (L > 0 && apart > between) between = apart;
            }
        }
        fprintf(stderr, "%s: bf16 vs f32, layers 1-4: max |diff| = %.3g (layer 0: %.3g; first "
                "vs last token: up to %.3g)\n", models[mi], worst, layer0, between);
        assert_true(layer0 <= 1e-6);
        assert_true(worst > 1e-5);  /* the products did run in bf16 */
        assert_true(worst <= 5e-2);
        assert_true(between >= 10 * 5e-2);
        json_decref(f32);
        json_decref(bf16);
    }
    json_decref(texts);
    th_stop_clean(&BF16);
}

/* ---------------------------------------------------------------- similarity */

static json_t *ref_last_row(json_t *c, int layer) {
    json_t *L = json_array_get(json_object_get(c, "layers"), layer);
    return json_array_get(L, json_array_size(L) - 1);
}

static void test_similarity(void **state) {
    tu_shared();
    /* words without <|endoftext|>: pooling last = their last row */
    json_t *w[6];
    for (int i = 0; i < 6; i++) w[i] = json_array_get(REF_GPT2, 3 * i + 1);
    json_t *pairs = json_array();
    for (int i = 0; i < 3; i++)
        json_array_append_new(pairs, json_pack("[OO]", json_object_get(w[2 * i], "text"),
                                               json_object_get(w[2 * i + 1], "text")));
    json_t *res = post_ok("/v1/similarity",
                          json_pack("{s:s, s:o, s:[ii], s:s}", "model", "gpt2", "pairs", pairs,
                                    "layers", 1, 4, "pooling", "last"));
    json_t *data = json_object_get(res, "data");
    assert_int_equal(json_array_size(data), 3);
    for (int i = 0; i < 3; i++) {
        json_t *layers = json_object_get(json_array_get(data, i), "layers");
        assert_int_equal(json_array_size(layers), 2);
        for (int k = 0; k < 2; k++) {
            int L = k ? 4 : 1;
            json_t *e = json_array_get(layers, k);
            assert_int_equal(json_integer_value(json_object_get(e, "layer")), L);
            double want = th_cosine_json(ref_last_row(w[2 * i], L), ref_last_row(w[2 * i + 1], L));
            assert_true(fabs(json_number_value(json_object_get(e, "cosine")) - want) <= 1e-4);
        }
    }
    json_decref(res);

    /* source/targets: cosine of the source with each target; the same numbers
     * as the pairs form */
    json_t *targets = json_array();
    for (int i = 1; i < 6; i++) json_array_append(targets, json_object_get(w[i], "text"));
    res = post_ok("/v1/similarity",
                  json_pack("{s:s, s:{s:O, s:o}}", "model", "gpt2", "pairs", "source",
                            json_object_get(w[0], "text"), "targets", targets));
    data = json_object_get(res, "data");
    assert_int_equal(json_array_size(data), 5);
    for (int i = 0; i < 5; i++) {
        json_t *e = json_array_get(json_object_get(json_array_get(data, i), "layers"), 0);
        assert_int_equal(json_integer_value(json_object_get(e, "layer")), 4); /* default: final */
        double want = th_cosine_json(ref_last_row(w[0], 4), ref_last_row(w[i + 1], 4));
        assert_true(fabs(json_number_value(json_object_get(e, "cosine")) - want) <= 1e-4);
    }
    json_decref(res);

    /* CLIP default: projected embeddings */
    json_t *a = json_array_get(REF_CLIP, 2), *b = json_array_get(REF_CLIP, 9);
    res = post_ok("/v1/similarity", json_pack("{s:s, s:[[OO]]}", "model", "clip", "pairs",
                                              json_object_get(a, "text"), json_object_get(b, "text")));
    json_t *e = json_array_get(json_object_get(json_array_get(json_object_get(res, "data"), 0),
                                               "layers"), 0);
    assert_string_equal(json_string_value(json_object_get(e, "layer")), "projected");
    double want = th_cosine_json(json_object_get(a, "projected"), json_object_get(b, "projected"));
    assert_true(fabs(json_number_value(json_object_get(e, "cosine")) - want) <= 1e-4);
    json_decref(res);
}

/* Mean pairwise cosine (over i < j) computed naively here from the reference
 * states, against the server's O(n d) formula. */
static void test_self_similarity(void **state) {
    tu_shared();
    enum { N = 12 };
    json_t *w[N];
    json_t *texts = json_array();
    for (int i = 0; i < N; i++) {
        w[i] = json_array_get(REF_GPT2, 3 * i + 1);
        json_array_append(texts, json_object_get(w[i], "text"));
    }
    json_t *res = post_ok("/v1/self-similarity",
                          json_pack("{s:s, s:o, s:s, s:s}", "model", "gpt2", "input", texts,
                                    "layers", "all", "pooling", "last"));
    assert_int_equal(json_integer_value(json_object_get(res, "n")), N);
    json_t *layers = json_object_get(res, "layers");
    assert_int_equal(json_array_size(layers), 5);
    for (int L = 0; L <= 4; L++) {
        double sum = 0, norms = 0;
        for (int i = 0; i < N; i++) {
            json_t *ri = ref_last_row(w[i], L);
            double nn = 0;
            for (size_t k = 0; k < json_array_size(ri); k++) {
                double x = json_number_value(json_array_get(ri, k));
                nn += x * x;
            }
            norms += sqrt(nn);
            for (int j = i + 1; j < N; j++) sum += th_cosine_json(ri, ref_last_row(w[j], L));
        }
        double want = sum / (N * (N - 1) / 2.0);
        json_t *e = json_array_get(layers, L);
        assert_int_equal(json_integer_value(json_object_get(e, "layer")), L);
        double got = json_number_value(json_object_get(e, "self_similarity"));
        if (fabs(got - want) > 1e-5) fail_msg("layer %d: self-similarity %.9g, want %.9g", L, got, want);
        assert_true(fabs(json_number_value(json_object_get(e, "mean_norm")) - norms / N) <= 1e-4);
    }
    json_decref(res);
}

/* ---------------------------------------------------------------- errors */

typedef struct bad_case {
    const char *method, *path, *body;
    size_t len; /* 0: strlen(body) */
    int status;
    const char *code;
} bad_case;

#define B(s) s, sizeof(s) - 1

static void check_error_body(const th_resp *r, int status, const char *code, const char *what) {
    json_t *j = th_body_json(r);
    if (r->status != status || !j)
        fail_msg("%s: status %d (want %d), body %.300s", what, r->status, status, r->body);
    json_t *e = json_object_get(j, "error");
    json_t *param = json_object_get(e, "param");
    if (!json_is_string(json_object_get(e, "type")) || !json_is_string(json_object_get(e, "code")) ||
        !json_is_string(json_object_get(e, "message")) ||
        json_string_length(json_object_get(e, "message")) == 0 ||
        !(json_is_string(param) || json_is_null(param)) || json_object_size(e) != 4)
        fail_msg("%s: malformed error body %.300s", what, r->body);
    if (code && strcmp(json_string_value(json_object_get(e, "code")), code) != 0)
        fail_msg("%s: code %s, want %s", what, json_string_value(json_object_get(e, "code")), code);
    json_decref(j);
}

static void test_errors(void **state) {
    tu_shared();
    static const bad_case cases[] = {
        {"POST", "/v1/embeddings", B("{\"model\": \"gpt2\", \"input\": "), 400, "invalid_json"},
        {"POST", "/v1/embeddings", B(""), 400, "invalid_json"},
        {"POST", "/v1/embeddings", B("[1, 2]"), 400, "invalid_type"},
        {"POST", "/v1/embeddings", B("{\"model\": 5, \"input\": \"a\"}"), 400, "invalid_type"},
        {"POST", "/v1/embeddings", B("{\"input\": \"a\"}"), 400, "missing_field"},
        {"POST", "/v1/embeddings", B("{\"model\": \"gpt2\"}"), 400, "missing_field"},
        {"POST", "/v1/embeddings", B("{\"model\": \"gpt2\", \"input\": 5}"), 400, "invalid_type"},
        {"POST", "/v1/embeddings", B("{\"model\": \"gpt2\", \"input\": [\"a\", 1]}"), 400, "invalid_type"},
        {"POST", "/v1/embeddings", B("{\"model\": \"gpt2\", \"input\": \"a\xff\"}"), 400, "invalid_utf8"},
        {"POST", "/v1/embeddings", B("{\"model\": \"gpt2\", \"input\": \"\xc3\x28\"}"), 400, "invalid_utf8"},
        {"POST", "/v1/embeddings", B("{\"model\": \"gpt2\\u0000x\", \"input\": \"a\"}"), 404, "model_not_found"},
        {"POST", "/v1/embeddings", B("{\"model\": \"gpt2\", \"input\": \"a\", \"pooling\": \"last\\u0000\"}"), 400, "unknown_pooling"},
        {"POST", "/v1/embeddings", B("{\"model\": \"gpt2\", \"input\": \"a\", \"layers\": \"2\\u0000\"}"), 400, "unknown_layer"},
        {"POST", "/v1/embeddings", B("{\"model\": \"gpt2\", \"input\": \"a\", \"encoding_format\": \"float\\u0000\"}"), 400, "invalid_value"},
        {"POST", "/v1/embeddings", B("{\"model\": \"gpt2\", \"input\": \"a\", \"input\": \"b\"}"), 400, "duplicate_key"},
        {"POST", "/v1/embeddings", B("{\"model\": \"gpt2\", \"input\": NaN}"), 400, "invalid_json"},
        {"POST", "/v1/embeddings", B("{\"model\": \"gpt2\", \"input\": []}"), 400, "empty_input"},
        {"POST", "/v1/embeddings", B("{\"model\": \"gpt2\", \"input\": \"\"}"), 400, "empty_input"},
        {"POST", "/v1/embeddings", B("{\"model\": \"gpt2\", \"input\": \"a\", \"pooling\": \"max\"}"), 400, "unknown_pooling"},
        {"POST", "/v1/embeddings", B("{\"model\": \"gpt2\", \"input\": \"a\", \"pooling\": 3}"), 400, "invalid_type"},
        {"POST", "/v1/embeddings", B("{\"model\": \"gpt2\", \"input\": \"a\", \"layers\": [99]}"), 400, "unknown_layer"},
        {"POST", "/v1/embeddings", B("{\"model\": \"gpt2\", \"input\": \"a\", \"layers\": [-1]}"), 400, "unknown_layer"},
        {"POST", "/v1/embeddings", B("{\"model\": \"gpt2\", \"input\": \"a\", \"layers\": \"top\"}"), 400, "unknown_layer"},
        {"POST", "/v1/embeddings", B("{\"model\": \"gpt2\", \"input\": \"a\", \"layers\": \"final\"}"), 400, "unknown_layer"},
        {"POST", "/v1/embeddings", B("{\"model\": \"gpt2\", \"input\": \"a\", \"layers\": [1, 1]}"), 400, "unknown_layer"},
        {"POST", "/v1/embeddings", B("{\"model\": \"gpt2\", \"input\": \"a\", \"layers\": [1.5]}"), 400, "invalid_type"},
        {"POST", "/v1/embeddings", B("{\"model\": \"gpt2\", \"input\": \"a\", \"pooling\": \"eos\", \"layers\": [1]}"), 400, "invalid_value"},
        {"POST", "/v1/embeddings", B("{\"model\": \"gpt2\", \"input\": \"a\", \"pooling\": \"none\"}"), 400, "invalid_value"},
        {"POST", "/v1/embeddings", B("{\"model\": \"gpt2\", \"input\": \"a\", \"bos\": \"yes\"}"), 400, "invalid_type"},
        {"POST", "/v1/embeddings", B("{\"model\": \"gpt2\", \"input\": \"a\", \"encoding_format\": \"hex\"}"), 400, "invalid_value"},
        {"POST", "/v1/similarity", B("{\"model\": \"gpt2\", \"pairs\": [[\"a\"]]}"), 400, "invalid_type"},
        {"POST", "/v1/similarity", B("{\"model\": \"gpt2\", \"pairs\": []}"), 400, "empty_input"},
        {"POST", "/v1/similarity", B("{\"model\": \"gpt2\", \"pairs\": {\"source\": \"a\"}}"), 400, "invalid_type"},
        {"POST", "/v1/similarity", B("{\"model\": \"gpt2\", \"pairs\": [[\"a\", \"b\"]], \"pooling\": \"none\"}"), 400, "invalid_value"},
        {"POST", "/v1/self-similarity", B("{\"model\": \"gpt2\", \"input\": [\"a\"]}"), 400, "invalid_value"},
        {"POST", "/v1/tokenize", B("{\"model\": \"gpt2\", \"input\": [null]}"), 400, "invalid_type"},
        {"POST", "/v1/embeddings", B("{\"model\": \"gpt3\", \"input\": \"a\"}"), 404, "model_not_found"},
        {"POST", "/v1/tokenize", B("{\"model\": \"bert\", \"input\": \"a\"}"), 404, "model_not_found"},
        {"GET", "/v1/nothing", NULL, 0, 404, "route_not_found"},
        /* messages quoting what was sent stay valid UTF-8: a path byte that
         * is not, a model name cut inside a character */
        {"GET", "/v1/nothing%FF", NULL, 0, 404, "route_not_found"},
        {"POST", "/v1/embeddings", B("{\"model\": \"a\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9"
                                     "\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9"
                                     "\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9"
                                     "\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9"
                                     "\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\", \"input\": \"a\"}"),
         404, "model_not_found"},
        {"POST", "/v2/embeddings", B("{}"), 404, "route_not_found"},
        {"GET", "/v1/embeddings", NULL, 0, 405, "method_not_allowed"},
        {"DELETE", "/v1/models", NULL, 0, 405, "method_not_allowed"},
        {"POST", "/healthz", B("{}"), 405, "method_not_allowed"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const bad_case *c = &cases[i];
        th_resp r;
        char what[200];
        snprintf(what, sizeof what, "case %zu: %s %s %.60s", i, c->method, c->path,
                 c->body ? c->body : "");
        if (th_request(SRV.port, c->method, c->path, c->body, c->len, NULL, &r))
            fail_msg("%s: no response", what);
        check_error_body(&r, c->status, c->code, what);
        char allow[64];
        if (c->status == 405) assert_non_null(th_header(&r, "Allow", allow, sizeof allow));
        th_resp_free(&r);
    }
    /* the server is still healthy after all of that */
    int status;
    json_decref(th_get(SRV.port, "/healthz", &status));
    assert_int_equal(status, 200);
}

static void test_error_413_and_422(void **state) {
    tu_shared();
    /* An announced body over --max-body-bytes is refused before it is sent. */
    int fd = th_connect(SRV.port);
    assert_true(fd >= 0);
    const char *head = "POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                       "Content-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n";
    double t0 = th_now();
    assert_int_equal(th_send_all(fd, head, strlen(head)), 0);
    th_resp r;
    assert_int_equal(th_read_response(fd, &r), 0);
    close(fd);
    assert_true(th_now() - t0 < 10);
    check_error_body(&r, 413, "body_too_large", "1 GB Content-Length");
    th_resp_free(&r);

    /* A chunked body (no Content-Length) past the limit: the connection is
     * closed, the server lives on. */
    fd = th_connect(SRV.port);
    assert_true(fd >= 0);
    const char *chead = "POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                        "Transfer-Encoding: chunked\r\n\r\n";
    th_send_all(fd, chead, strlen(chead));
    char chunk[8200];
    memset(chunk, ' ', sizeof chunk);
    int n = snprintf(chunk, 16, "2000\r\n");
    chunk[n + 8192] = '\r';
    chunk[n + 8193] = '\n';
    for (int i = 0; i < 12; i++)
        if (th_send_all(fd, chunk, (size_t)n + 8194)) break;
    char buf[256];
    ssize_t got = recv(fd, buf, sizeof buf, 0); /* closed (0 or reset), or a 413 */
    assert_true(got <= 0 || strstr(buf, " 413 ") != NULL);
    close(fd);
    int status;
    json_decref(th_get(SRV.port, "/healthz", &status));
    assert_int_equal(status, 200);

    /* Too many inputs (--max-inputs 64). */
    json_t *many = json_array();
    for (int i = 0; i < 65; i++) json_array_append_new(many, json_string("a"));
    json_t *j = th_post(SRV.port, "/v1/embeddings",
                        json_pack("{s:s, s:o}", "model", "gpt2", "input", many), &status);
    assert_int_equal(status, 413);
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "error"), "code")),
                        "too_many_inputs");
    json_decref(j);

    /* Longer than the context with truncation off: 422; with it on, cut. */
    char text[4000] = "";
    for (int i = 0; i < 1100; i++) strcat(text, " a");
    j = th_post(SRV.port, "/v1/embeddings",
                json_pack("{s:s, s:s, s:b}", "model", "gpt2", "input", text, "truncate", 0), &status);
    assert_int_equal(status, 422);
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "error"), "code")),
                        "input_too_long");
    json_decref(j);
    j = post_ok("/v1/embeddings", json_pack("{s:s, s:s, s:b}", "model", "gpt2", "input", text,
                                            "return_tokens", 1));
    assert_int_equal(json_array_size(json_object_get(json_array_get(json_object_get(j, "data"), 0),
                                                     "token_ids")), 1024);
    json_decref(j);
    j = th_post(SRV.port, "/v1/similarity",
                json_pack("{s:s, s:[[ss]], s:b}", "model", "clip", "pairs", "a", text,
                          "truncate", 0), &status);
    assert_int_equal(status, 422);
    json_decref(j);
}

static void test_metrics(void **state) {
    tu_shared();
    th_resp r;
    assert_int_equal(th_request(SRV.port, "GET", "/metrics", NULL, 0, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    char ct[128];
    assert_non_null(th_header(&r, "Content-Type", ct, sizeof ct));
    assert_non_null(strstr(ct, "text/plain"));
    const char *t = r.body;
    assert_true(th_metric(t, "layerlens_requests_total{endpoint=\"/v1/embeddings\",status=\"200\"}") > 10);
    assert_true(th_metric(t, "layerlens_requests_total{endpoint=\"/v1/embeddings\",status=\"400\"}") > 5);
    assert_true(th_metric(t, "layerlens_requests_total{endpoint=\"other\",status=\"404\"}") >= 2);
    assert_true(th_metric(t, "layerlens_request_duration_seconds_count{endpoint=\"/v1/embeddings\"}") > 10);
    assert_true(th_metric(t, "layerlens_request_duration_seconds_bucket{endpoint=\"/v1/embeddings\",le=\"+Inf\"}") > 10);
    assert_true(th_metric(t, "layerlens_batch_sequences_count{model=\"gpt2\"}") > 0);
    assert_true(th_metric(t, "layerlens_batch_tokens_sum{model=\"clip\"}") > 0);
    assert_true(th_metric(t, "layerlens_tokens_total{model=\"gpt2\"}") > 0);
    assert_true(th_metric(t, "layerlens_model_load_seconds{model=\"gpt2\"}") > 0);
    assert_true(th_metric(t, "layerlens_model_loaded{model=\"clip\"}") == 1);
    assert_true(th_metric(t, "layerlens_queue_depth") == 0);
    assert_true(th_metric(t, "process_resident_memory_bytes") > 1e6);
    /* histogram buckets are cumulative */
    double prev = 0;
    const char *les[] = {"1", "2", "4", "8", "16", "32", "64", "128", "256", "512", "+Inf"};
    for (int i = 0; i < 11; i++) {
        char series[128];
        snprintf(series, sizeof series, "layerlens_batch_sequences_bucket{model=\"gpt2\",le=\"%s\"}", les[i]);
        double v = th_metric(t, series);
        assert_true(v >= prev);
        prev = v;
    }
    assert_true(prev == th_metric(t, "layerlens_batch_sequences_count{model=\"gpt2\"}"));
    th_resp_free(&r);
}

int main(void) {
    alarm(900); /* a hung test must not hang the suite (the child dies with us) */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_health_and_ready),
        cmocka_unit_test(test_models),
        cmocka_unit_test(test_tokenize),
        cmocka_unit_test(test_embeddings_gpt2_reference),
        cmocka_unit_test(test_embeddings_clip_reference),
        cmocka_unit_test(test_embeddings_default),
        cmocka_unit_test(test_embeddings_pooling),
        cmocka_unit_test(test_batching_invariance),
        cmocka_unit_test_teardown(test_dtype_bf16, stop_bf16),
        cmocka_unit_test(test_similarity),
        cmocka_unit_test(test_self_similarity),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_error_413_and_422),
        cmocka_unit_test(test_metrics),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
