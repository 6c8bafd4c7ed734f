/* test_cli.c - the command line as people and scripts use it: `embed` and
 * `tokenize` print the documented JSON with the reference numbers, errors
 * go to stderr with a non-zero exit, `mkweights` writes a checkpoint that
 * loads and runs. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "layerlens/model.h"

/* Runs the layerlens binary with the given arguments (a shell command
 * line tail); see tu_run_sh. */
static int run_cli(const char *args, char **out, int merge) {
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "%s %s", tu_bin(), args);
    return tu_run_sh(cmd, out, merge);
}

static json_t *parse(const char *s) {
    json_error_t je;
    json_t *j = json_loads(s, 0, &je);
    if (!j) fail_msg("not JSON (%s): %.200s", je.text, s);
    return j;
}

/* embed with all layers and no pooling reproduces the reference states of
 * a GPT-2 case with <|endoftext|> appended, and of a CLIP case. */
static void embed_matches(const char *model, const char *ref, int idx, const char *flags) {
    json_t *cases = tu_load_json(ref);
    json_t *c = json_array_get(cases, idx);
    const char *text = json_string_value(json_object_get(c, "text"));
    char args[4096], *out;
    /* the text goes through a single-quoted shell word */
    assert_null(strchr(text, '\''));
    snprintf(args, sizeof args, "embed --model %s --layers all %s -- '%s'",
             tu_path(model), flags, text);
    assert_int_equal(run_cli(args, &out, 0), 0);
    json_t *j = parse(out);
    json_t *in = json_array_get(json_object_get(j, "inputs"), 0);
    assert_true(json_equal(json_object_get(in, "token_ids"), json_object_get(c, "token_ids")));
    assert_string_equal(json_string_value(json_object_get(in, "text")), text);
    json_t *layers = json_object_get(in, "layers");
    json_t *want = json_object_get(c, "layers");
    assert_int_equal(json_array_size(layers), json_array_size(want));
    int T = (int)json_integer_value(json_object_get(c, "n_tokens"));
    for (size_t l = 0; l < json_array_size(want); l++) {
        json_t *e = json_array_get(layers, l);
        assert_int_equal(json_integer_value(json_object_get(e, "layer")), l);
        json_t *rows = json_object_get(e, "tokens");
        assert_int_equal(json_array_size(rows), T);
        size_t C = json_array_size(json_array_get(rows, 0));
        float *got = malloc(T * C * sizeof(float));
        for (int t = 0; t < T; t++)
            for (size_t k = 0; k < C; k++)
                got[t * C + k] = (float)json_number_value(json_array_get(json_array_get(rows, t), k));
        double d = tu_max_abs_diff(got, json_array_get(want, l), T * C);
        free(got);
        if (!(d <= 1e-4)) fail_msg("layer %zu differs by %g", l, d);
    }
    json_decref(j);
    json_decref(cases);
    free(out);
}

static void test_embed_gpt2(void **state) {
    /* case 70 onwards: sentences with <|endoftext|> appended */
    json_t *cases = tu_load_json("fixtures/reference/gpt2-tiny.json");
    int idx = -1;
    for (size_t i = 0; i < json_array_size(cases) && idx < 0; i++) {
        json_t *c = json_array_get(cases, i);
        if (json_is_true(json_object_get(c, "eot_appended")) &&
            !strchr(json_string_value(json_object_get(c, "text")), '\''))
            idx = (int)i;
    }
    json_decref(cases);
    assert_true(idx >= 0);
    embed_matches("fixtures/models/gpt2-tiny", "fixtures/reference/gpt2-tiny.json", idx, "--eos");
}

static void test_embed_clip(void **state) {
    embed_matches("fixtures/models/clip-tiny", "fixtures/reference/clip-tiny.json", 50, "");
}

/* Pooled forms: projected is CLIP's projected embedding; eos/last/mean pick
 * and average the right rows of the per-token output. */
static void test_embed_pooling(void **state) {
    json_t *cases = tu_load_json("fixtures/reference/clip-tiny.json");
    json_t *c = json_array_get(cases, 50);
    const char *text = json_string_value(json_object_get(c, "text"));
    char args[4096], *out;
    snprintf(args, sizeof args, "embed --model %s --layers 4,final,projected --pooling eos -- '%s'",
             tu_path("fixtures/models/clip-tiny"), text);
    assert_int_equal(run_cli(args, &out, 0), 0);
    json_t *j = parse(out);
    json_t *layers = json_object_get(json_array_get(json_object_get(j, "inputs"), 0), "layers");
    assert_int_equal(json_array_size(layers), 3);
    json_t *fin = json_array_get(layers, 1), *proj = json_array_get(layers, 2);
    assert_string_equal(json_string_value(json_object_get(fin, "layer")), "final");
    assert_string_equal(json_string_value(json_object_get(proj, "layer")), "projected");
    json_t *pooled = json_object_get(c, "pooled"), *projected = json_object_get(c, "projected");
    json_t *e = json_object_get(fin, "embedding");
    for (size_t k = 0; k < json_array_size(pooled); k++)
        assert_true(fabs(json_number_value(json_array_get(e, k)) -
                         json_number_value(json_array_get(pooled, k))) <= 1e-4);
    e = json_object_get(proj, "embedding");
    assert_int_equal(json_array_size(e), json_array_size(projected));
    for (size_t k = 0; k < json_array_size(projected); k++)
        assert_true(fabs(json_number_value(json_array_get(e, k)) -
                         json_number_value(json_array_get(projected, k))) <= 1e-4);
    json_decref(j);
    free(out);

    /* mean over the text's own tokens (positions 1..T-2) of layer 2 */
    snprintf(args, sizeof args, "embed --model %s --layers 2 --pooling mean -- '%s'",
             tu_path("fixtures/models/clip-tiny"), text);
    assert_int_equal(run_cli(args, &out, 0), 0);
    j = parse(out);
    e = json_object_get(json_array_get(json_object_get(json_array_get(json_object_get(j, "inputs"), 0),
                                                       "layers"), 0), "embedding");
    json_t *rows = json_array_get(json_object_get(c, "layers"), 2);
    size_t T = json_array_size(rows), C = json_array_size(json_array_get(rows, 0));
    for (size_t k = 0; k < C; k++) {
        double acc = 0;
        for (size_t t = 1; t + 1 < T; t++) acc += json_number_value(json_array_get(json_array_get(rows, t), k));
        assert_true(fabs(json_number_value(json_array_get(e, k)) - acc / (T - 2)) <= 1e-4);
    }
    json_decref(j);
    free(out);
    json_decref(cases);
}

/* --dtype bf16: every layer of a CLIP case within 5e-2 of the reference
 * states; layer 0 (no product with weights) as exact as with f32, the
 * others visibly rounded. */
static void test_embed_dtype(void **state) {
    json_t *cases = tu_load_json("fixtures/reference/clip-tiny.json");
    json_t *c = json_array_get(cases, 50);
    const char *text = json_string_value(json_object_get(c, "text"));
    assert_null(strchr(text, '\''));
    char args[4096], *out;
    snprintf(args, sizeof args, "embed --model %s --dtype bf16 --layers all -- '%s'",
             tu_path("fixtures/models/clip-tiny"), text);
    assert_int_equal(run_cli(args, &out, 0), 0);
    json_t *j = parse(out);
    json_t *layers = json_object_get(json_array_get(json_object_get(j, "inputs"), 0), "layers");
    json_t *want = json_object_get(c, "layers");
    assert_int_equal(json_array_size(layers), json_array_size(want));
    double worst = 0;
    for (size_t l = 0; l < json_array_size(want); l++) {
        json_t *rows = json_object_get(json_array_get(layers, l), "tokens");
        size_t T = json_array_size(rows), C = json_array_size(json_array_get(rows, 0));
        float *got = malloc(T * C * sizeof(float));
        for (size_t t = 0; t < T; t++)
            for (size_t k = 0; k < C; k++)
                got[t * C + k] = (float)json_number_value(json_array_get(json_array_get(rows, t), k));
        double d = tu_max_abs_diff(got, json_array_get(want, l), T * C);
        free(got);
        if (l == 0) assert_true(d <= 1e-4);
        else if (!(d <= worst)) worst = d;
    }
    fprintf(stderr, "clip-tiny, embed --dtype bf16: layers 1-%zu within %.3g of the reference\n",
            json_array_size(want) - 1, worst);
    assert_true(worst > 1e-4 && worst <= 5e-2);
    json_decref(j);
    json_decref(cases);
    free(out);
}

static void test_tokenize(void **state) {
    char args[4096], *out;
    snprintf(args, sizeof args, "tokenize --model %s --bos --eos -- 'Hello world' '-dash'",
             tu_path("fixtures/models/gpt2-tiny"));
    assert_int_equal(run_cli(args, &out, 0), 0);
    json_t *j = parse(out);
    assert_string_equal(json_string_value(json_object_get(j, "model")), "gpt2");
    json_t *in = json_array_get(json_object_get(j, "inputs"), 0);
    json_t *want = json_pack("[iiii]", 50256, 15496, 995, 50256);
    assert_true(json_equal(json_object_get(in, "token_ids"), want));
    json_decref(want);
    want = json_pack("[[ii][ii][ii][ii]]", 0, 0, 0, 5, 5, 11, 11, 11);
    assert_true(json_equal(json_object_get(in, "offsets"), want));
    json_decref(want);
    assert_string_equal(json_string_value(json_array_get(json_object_get(in, "tokens"), 2)),
                        "\xc4\xa0world");
    in = json_array_get(json_object_get(j, "inputs"), 1);
    assert_string_equal(json_string_value(json_object_get(in, "text")), "-dash");
    json_decref(j);
    free(out);
}

static void test_errors(void **state) {
    char args[4096], *out;
    /* a missing model directory: one clear line, exit 1 */
    assert_int_equal(run_cli("embed --model /nonexistent/model -- hi", &out, 1), 1);
    assert_non_null(strstr(out, "/nonexistent/model"));
    free(out);
    /* unknown layer, pooling, flag: usage errors, exit 2 */
    snprintf(args, sizeof args, "embed --model %s --layers 9 -- hi", tu_path("fixtures/models/gpt2-tiny"));
    assert_int_equal(run_cli(args, &out, 1), 2);
    assert_non_null(strstr(out, "layer 9"));
    free(out);
    snprintf(args, sizeof args, "embed --model %s --layers final -- hi", tu_path("fixtures/models/gpt2-tiny"));
    assert_int_equal(run_cli(args, &out, 1), 2);
    assert_non_null(strstr(out, "clip"));
    free(out);
    assert_int_equal(run_cli("embed --model x --pooling max -- hi", &out, 1), 2);
    assert_non_null(strstr(out, "max"));
    free(out);
    assert_int_equal(run_cli("frobnicate", &out, 1), 2);
    free(out);
    /* an unknown weight type, for embed and the evaluation commands alike */
    assert_int_equal(run_cli("embed --model x --dtype f16 -- hi", &out, 1), 2);
    assert_non_null(strstr(out, "--dtype: unknown weight type 'f16' (expected f32 or bf16)"));
    free(out);
    assert_int_equal(run_cli("eval --gpt2 x --task rg65 --dtype f16", &out, 1), 2);
    assert_non_null(strstr(out, "--dtype: unknown weight type 'f16'"));
    free(out);
    assert_int_equal(run_cli("reproduce --gpt2 x --clip x --data x --out x --dtype f16", &out, 1), 2);
    assert_non_null(strstr(out, "--dtype"));
    free(out);
    /* too long with --no-truncate */
    snprintf(args, sizeof args, "tokenize --model %s --no-truncate -- \"$(yes word | head -100 | tr '\\n' ' ')\"",
             tu_path("fixtures/models/clip-tiny"));
    assert_int_equal(run_cli(args, &out, 1), 1);
    assert_non_null(strstr(out, "77"));
    free(out);
    /* invalid UTF-8 */
    snprintf(args, sizeof args, "tokenize --model %s -- \"$(printf 'a\\377b')\"",
             tu_path("fixtures/models/gpt2-tiny"));
    assert_int_equal(run_cli(args, &out, 1), 1);
    assert_non_null(strstr(out, "UTF-8"));
    free(out);
}

/* A corrupted checkpoint, config or tokenizer file stops the program with
 * one message naming the file and the problem, and exit status 1. */
static void test_bad_model_dirs(void **state) {
    const char *dir = tu_tmpdir();
    const char *src = tu_path("fixtures/models/gpt2-tiny");
    struct { const char *file, *damage, *expect; } cases[] = {
        {"model.safetensors", "truncate -s 1000", "model.safetensors"},
        {"model.safetensors", "truncate -s 0", "model.safetensors"},
        {"config.json", "printf '{\"model_type\": \"gpt2\", \"n_embd\": 32, \"n_head\": 4, \"n_layer\": 4}' >", "model.safetensors"},
        {"config.json", "printf 'not json' >", "config.json"},
        {"vocab.json", "printf '[1,2]' >", "vocab.json"},
        {"merges.txt", "printf '#version: 0.2\\nnot-a-token x\\n' >", "merges.txt"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char cmd[8192], args[4200], *out;
        snprintf(cmd, sizeof cmd, "rm -rf %s/m && mkdir %s/m && cp %s/* %s/m/ && chmod u+w %s/m/* && %s %s/m/%s",
                 dir, dir, src, dir, dir, cases[i].damage, dir, cases[i].file);
        assert_int_equal(system(cmd), 0);
        snprintf(args, sizeof args, "embed --model %s/m -- hello", dir);
        int rc = run_cli(args, &out, 1);
        if (rc != 1 || !strstr(out, cases[i].expect))
            fail_msg("case %zu (%s): exit %d, output: %.300s", i, cases[i].file, rc, out);
        /* one line, no crash report */
        assert_non_null(strchr(out, '\n'));
        assert_null(strchr(strchr(out, '\n') + 1, '\n'));
        free(out);
    }
    char cmd[4300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

/* mkweights writes a loadable checkpoint of the --like architecture. */
static void test_mkweights(void **state) {
    const char *models[] = {"fixtures/models/gpt2-tiny", "fixtures/models/clip-tiny"};
    for (int i = 0; i < 2; i++) {
        const char *dir = tu_tmpdir();
        char args[4096], *out, outdir[4200];
        snprintf(outdir, sizeof outdir, "%s/m", dir);
        snprintf(args, sizeof args, "mkweights --like %s --preset tiny --seed 7 --out %s",
                 tu_path(models[i]), outdir);
        assert_int_equal(run_cli(args, &out, 1), 0);
        free(out);
        ll_error err = {{0}};
        ll_model *m = ll_model_load(outdir, &err);
        if (!m) fail_msg("%s", err.msg);
        assert_int_equal(ll_model_config(m)->width, 64);
        int32_t ids[] = {ll_tokenizer_bos(ll_model_tokenizer(m)), 100, 200,
                         ll_tokenizer_eot(ll_model_tokenizer(m))};
        ll_seq seq = {ids, 4};
        ll_forward_req req = {.layers = (2u << ll_model_config(m)->n_layer) - 1};
        ll_states st;
        ll_workspace *ws = ll_workspace_new();
        assert_int_equal(ll_forward(m, ws, &seq, 1, &req, &st, &err), 0);
        for (int k = 0; k < 4 * 64; k++) assert_true(isfinite(st.layer[4][k]));
        ll_states_free(&st);
        ll_workspace_free(ws);
        ll_model_free(m);
        /* the same seed gives the same bytes */
        char again[4200], cmp[9000];
        snprintf(again, sizeof again, "%s/m2", dir);
        snprintf(args, sizeof args, "mkweights --like %s --preset tiny --seed 7 --out %s",
                 tu_path(models[i]), again);
        assert_int_equal(run_cli(args, &out, 1), 0);
        free(out);
        snprintf(cmp, sizeof cmp, "cmp -s %s/model.safetensors %s/model.safetensors", outdir, again);
        assert_int_equal(system(cmp), 0);
        snprintf(cmp, sizeof cmp, "rm -rf %s", dir);
        assert_int_equal(system(cmp), 0);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_embed_gpt2),
        cmocka_unit_test(test_embed_clip),
        cmocka_unit_test(test_embed_pooling),
        cmocka_unit_test(test_embed_dtype),
        cmocka_unit_test(test_tokenize),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_bad_model_dirs),
        cmocka_unit_test(test_mkweights),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
