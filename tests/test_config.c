/* test_config.c - config.json parsing and writing.
 *
 * Expected dimensions come from fixtures/README.md (the tiny models) and from
 * the documented defaults of transformers' GPT2Config / CLIPTextConfig. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "layerlens/config.h"

static void assert_contains(const char *msg, const char *needle) {
    if (!strstr(msg, needle))
        fail_msg("error message \"%s\" lacks \"%s\"", msg, needle);
}

static ll_config parse_ok(const char *json) {
    ll_config c;
    ll_error err = {{0}};
    memset(&c, 0xab, sizeof c);
    if (ll_config_parse(json, strlen(json), &c, &err))
        fail_msg("parse failed: %s\n%s", err.msg, json);
    return c;
}

static void expect_error(const char *json, const char *problem) {
    ll_config c;
    ll_error err = {{0}};
    if (ll_config_parse(json, strlen(json), &c, &err) == 0)
        fail_msg("parsed, expected an error containing \"%s\":\n%s", problem, json);
    assert_contains(err.msg, problem);
}

static void assert_dims(const ll_config *c, int width, int n_layer, int n_head,
                        int ffn, int n_ctx, int vocab, int proj) {
    assert_int_equal(c->width, width);
    assert_int_equal(c->n_layer, n_layer);
    assert_int_equal(c->n_head, n_head);
    assert_int_equal(c->ffn, ffn);
    assert_int_equal(c->n_ctx, n_ctx);
    assert_int_equal(c->vocab, vocab);
    assert_int_equal(c->proj_dim, proj);
}

static void assert_same_config(const ll_config *a, const ll_config *b) {
    assert_int_equal(a->arch, b->arch);
    assert_dims(a, b->width, b->n_layer, b->n_head, b->ffn, b->n_ctx, b->vocab,
                b->proj_dim);
    assert_true(a->ln_eps == b->ln_eps);
    assert_int_equal(a->act, b->act);
}

/* ---------------------------------------------------------------- fixtures */

static void test_gpt2_fixture(void **state) {
    ll_config c;
    ll_error err = {{0}};
    const char *p = tu_path("fixtures/models/gpt2-tiny/config.json");
    if (ll_config_load(p, &c, &err)) fail_msg("%s", err.msg);
    assert_int_equal(c.arch, LL_ARCH_GPT2);
    /* n_inner is null there: 4 * 64 */
    assert_dims(&c, 64, 4, 4, 256, 1024, 50257, 0);
    assert_true(c.ln_eps == 1e-5f);
    assert_int_equal(c.act, LL_ACT_GELU_NEW);
}

static void test_clip_fixture(void **state) {
    ll_config c;
    ll_error err = {{0}};
    const char *p = tu_path("fixtures/models/clip-tiny/config.json");
    if (ll_config_load(p, &c, &err)) fail_msg("%s", err.msg);
    assert_int_equal(c.arch, LL_ARCH_CLIP);
    /* the text tower, not the stub vision_config (hidden 32, 1 head) */
    assert_dims(&c, 64, 4, 4, 256, 77, 49408, 32);
    assert_true(c.ln_eps == 1e-5f);
    assert_int_equal(c.act, LL_ACT_QUICK_GELU);
}

/* ------------------------------------------------------ defaults, variants */

static void test_gpt2_defaults(void **state) {
    /* openai-community/gpt2's config.json minus the size keys: the
     * GPT2Config defaults are GPT-2 124M */
    ll_config c = parse_ok(
        "{\"activation_function\": \"gelu_new\", \"architectures\": "
        "[\"GPT2LMHeadModel\"], \"attn_pdrop\": 0.1, \"bos_token_id\": 50256, "
        "\"model_type\": \"gpt2\", \"resid_pdrop\": 0.1, \"summary_type\": "
        "\"cls_index\", \"task_specific_params\": {\"text-generation\": "
        "{\"do_sample\": true, \"max_length\": 50}}}");
    assert_int_equal(c.arch, LL_ARCH_GPT2);
    assert_dims(&c, 768, 12, 12, 3072, 1024, 50257, 0);
    assert_true(c.ln_eps == 1e-5f);
    assert_int_equal(c.act, LL_ACT_GELU_NEW);

    /* n_ctx stands in for a missing n_positions; n_inner given explicitly;
     * PyTorch's name for the same tanh GELU */
    c = parse_ok("{\"model_type\": \"gpt2\", \"n_ctx\": 2048, \"n_embd\": 96, "
                 "\"n_head\": 3, \"n_inner\": 100, \"n_layer\": 63, "
                 "\"layer_norm_epsilon\": 1e-6, \"activation_function\": "
                 "\"gelu_pytorch_tanh\", \"vocab_size\": 1000}");
    assert_dims(&c, 96, 63, 3, 100, 2048, 1000, 0);
    assert_true(c.ln_eps == 1e-6f);
    assert_int_equal(c.act, LL_ACT_GELU_NEW);

    /* n_positions wins over n_ctx */
    c = parse_ok("{\"model_type\": \"gpt2\", \"n_ctx\": 2048, \"n_positions\": 512}");
    assert_int_equal(c.n_ctx, 512);

    /* no model_type: the architecture decides */
    c = parse_ok("{\"architectures\": [\"GPT2LMHeadModel\"], \"n_embd\": 64, "
                 "\"n_head\": 4}");
    assert_int_equal(c.arch, LL_ARCH_GPT2);
    assert_dims(&c, 64, 12, 4, 256, 1024, 50257, 0);
}

static void test_clip_defaults(void **state) {
    /* a CLIPConfig whose text_config only carries token ids: everything
     * else is CLIPTextConfig's default (ViT-B/32's text tower) */
    ll_config c = parse_ok(
        "{\"architectures\": [\"CLIPModel\"], \"model_type\": \"clip\", "
        "\"projection_dim\": 512, \"text_config\": {\"bos_token_id\": 0, "
        "\"eos_token_id\": 2, \"model_type\": \"clip_text_model\"}, "
        "\"vision_config\": {\"hidden_size\": 768, \"num_attention_heads\": 12}}");
    assert_int_equal(c.arch, LL_ARCH_CLIP);
    assert_dims(&c, 512, 12, 8, 2048, 77, 49408, 512);
    assert_true(c.ln_eps == 1e-5f);
    assert_int_equal(c.act, LL_ACT_QUICK_GELU);

    /* projection_dim: the top level wins, the text config is the fallback,
     * 512 the default */
    c = parse_ok("{\"model_type\": \"clip\", \"projection_dim\": 48, "
                 "\"text_config\": {\"projection_dim\": 16}}");
    assert_int_equal(c.proj_dim, 48);
    c = parse_ok("{\"model_type\": \"clip\", \"text_config\": {\"projection_dim\": 16}}");
    assert_int_equal(c.proj_dim, 16);
    c = parse_ok("{\"model_type\": \"clip\"}");
    assert_dims(&c, 512, 12, 8, 2048, 77, 49408, 512);

    /* a CLIPTextConfig on its own */
    c = parse_ok("{\"model_type\": \"clip_text_model\", \"hidden_size\": 128, "
                 "\"num_attention_heads\": 2, \"num_hidden_layers\": 3, "
                 "\"intermediate_size\": 300, \"max_position_embeddings\": 40, "
                 "\"vocab_size\": 999, \"projection_dim\": 24, "
                 "\"layer_norm_eps\": 1e-6}");
    assert_int_equal(c.arch, LL_ARCH_CLIP);
    assert_dims(&c, 128, 3, 2, 300, 40, 999, 24);
    assert_true(c.ln_eps == 1e-6f);

    /* older files: text_config_dict, text_config null */
    c = parse_ok("{\"model_type\": \"clip\", \"text_config\": null, "
                 "\"text_config_dict\": {\"hidden_size\": 256, "
                 "\"num_attention_heads\": 4}}");
    assert_int_equal(c.width, 256);
    c = parse_ok("{\"architectures\": [\"CLIPTextModelWithProjection\"], "
                 "\"hidden_size\": 64, \"num_attention_heads\": 4}");
    assert_int_equal(c.arch, LL_ARCH_CLIP);
    assert_int_equal(c.width, 64);
}

/* ------------------------------------------------------------- bad input */

static void test_bad_configs(void **state) {
    expect_error("{\"model_type\": \"gpt2\", \"n_embd\": 64", "config is not valid JSON");
    expect_error("", "config is not valid JSON");
    expect_error("[{\"model_type\": \"gpt2\"}]", "config is a JSON list, not an object");
    expect_error("{\"model_type\": \"gpt2\", \"n_head\": 4, \"n_head\": 8}", "duplicate");
    /* wrong JSON types name the key */
    expect_error("{\"model_type\": \"gpt2\", \"n_embd\": \"768\"}",
                 "key 'n_embd' must be an integer, not a string");
    expect_error("{\"model_type\": \"gpt2\", \"n_layer\": 12.0}",
                 "key 'n_layer' must be an integer, not a real number");
    expect_error("{\"model_type\": \"gpt2\", \"n_head\": null}",
                 "key 'n_head' must be an integer, not a null");
    expect_error("{\"model_type\": \"gpt2\", \"n_inner\": \"3072\"}",
                 "key 'n_inner' must be an integer, not a string");
    expect_error("{\"model_type\": \"gpt2\", \"layer_norm_epsilon\": \"1e-5\"}",
                 "key 'layer_norm_epsilon' must be a number, not a string");
    expect_error("{\"model_type\": \"gpt2\", \"activation_function\": 1}",
                 "key 'activation_function' must be a string, not a integer");
    expect_error("{\"model_type\": 2}", "key 'model_type' must be a string");
    expect_error("{\"model_type\": \"clip\", \"text_config\": \"x\"}",
                 "key 'text_config' must be an object, not a string");
    expect_error("{\"model_type\": \"clip\", \"text_config\": {\"hidden_size\": 1.5}}",
                 "key 'text_config.hidden_size' must be an integer, not a real number");
    expect_error("{\"model_type\": \"clip\", \"projection_dim\": [512]}",
                 "key 'projection_dim' must be an integer, not a list");
    /* values */
    expect_error("{\"model_type\": \"gpt2\", \"n_head\": 0}",
                 "key 'n_head' = 0 is out of range");
    expect_error("{\"model_type\": \"gpt2\", \"n_embd\": -64}",
                 "key 'n_embd' = -64 is out of range");
    expect_error("{\"model_type\": \"gpt2\", \"vocab_size\": 1000000000000}",
                 "key 'vocab_size' = 1000000000000 is out of range");
    expect_error("{\"model_type\": \"gpt2\", \"n_positions\": 2000000}",
                 "key 'n_positions' = 2000000 is out of range");
    expect_error("{\"model_type\": \"gpt2\", \"n_layer\": 64}",
                 "key 'n_layer' = 64 is out of range (1 to 63)");
    expect_error("{\"model_type\": \"gpt2\", \"n_embd\": 100, \"n_head\": 12}",
                 "key 'n_embd' = 100 is not divisible by 'n_head' = 12");
    expect_error("{\"model_type\": \"clip\", \"text_config\": {\"hidden_size\": 100}}",
                 "key 'text_config.hidden_size' = 100 is not divisible by "
                 "'text_config.num_attention_heads' = 8");
    expect_error("{\"model_type\": \"gpt2\", \"layer_norm_epsilon\": 0}",
                 "key 'layer_norm_epsilon' = 0 must be > 0");
    expect_error("{\"model_type\": \"clip\", \"text_config\": {\"layer_norm_eps\": -1e-5}}",
                 "key 'text_config.layer_norm_eps'");
    expect_error("{\"model_type\": \"clip\", \"projection_dim\": 0}",
                 "key 'projection_dim' = 0 is out of range");
    /* model and activation */
    expect_error("{\"model_type\": \"bert\"}", "unsupported model_type 'bert'");
    expect_error("{\"architectures\": [\"BertModel\"]}", "no 'model_type'");
    expect_error("{}", "no 'model_type'");
    expect_error("{\"model_type\": \"gpt2\", \"activation_function\": \"gelu\"}",
                 "key 'activation_function' is 'gelu', which is not supported");
    expect_error("{\"model_type\": \"gpt2\", \"activation_function\": \"quick_gelu\"}",
                 "expected gelu_new or gelu_pytorch_tanh");
    expect_error("{\"model_type\": \"clip\", \"text_config\": {\"hidden_act\": \"gelu\"}}",
                 "key 'text_config.hidden_act' is 'gelu', which is not supported "
                 "(expected quick_gelu)");
}

static void test_load_errors(void **state) {
    const char *dir = tu_tmpdir();
    char p[4300];
    ll_config c;
    ll_error err = {{0}};
    snprintf(p, sizeof p, "%s/config.json", dir);
    assert_int_equal(ll_config_load(p, &c, &err), -1);
    assert_contains(err.msg, p);

    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs("{\"model_type\": \"gpt2\", \"n_head\": 5}", f);
    fclose(f);
    assert_int_equal(ll_config_load(p, &c, &err), -1);
    assert_contains(err.msg, p);
    assert_contains(err.msg, "key 'n_embd' = 768 is not divisible by 'n_head' = 5");

    f = fopen(p, "w");
    assert_non_null(f);
    fputs("{\"model_type\": \"gpt2\",\n \"n_head\": }", f);
    fclose(f);
    assert_int_equal(ll_config_load(p, &c, &err), -1);
    assert_contains(err.msg, p);
    assert_contains(err.msg, "not valid JSON");
    assert_contains(err.msg, "line 2");
    unlink(p);
    rmdir(dir);
}

/* ----------------------------------------------------------------- write */

static void roundtrip(const ll_config *c, const char *path) {
    ll_error err = {{0}};
    ll_config back;
    if (ll_config_write(path, c, &err)) fail_msg("%s", err.msg);
    if (ll_config_load(path, &back, &err)) fail_msg("%s", err.msg);
    assert_same_config(&back, c);
}

static void test_write(void **state) {
    const char *dir = tu_tmpdir();
    char p[4300];
    snprintf(p, sizeof p, "%s/config.json", dir);
    ll_error err = {{0}};

    /* the fixture configs survive a write + read */
    ll_config g, k;
    if (ll_config_load(tu_path("fixtures/models/gpt2-tiny/config.json"), &g, &err) ||
        ll_config_load(tu_path("fixtures/models/clip-tiny/config.json"), &k, &err))
        fail_msg("%s", err.msg);
    roundtrip(&g, p);

    /* the HF layout: n_inner null when it is 4 * n_embd, tied token ids,
     * the epsilon as its shortest decimal */
    json_error_t je;
    json_t *j = json_load_file(p, 0, &je);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "model_type")), "gpt2");
    assert_string_equal(json_string_value(json_object_get(j, "activation_function")),
                        "gelu_new");
    assert_true(json_is_null(json_object_get(j, "n_inner")));
    assert_int_equal(json_integer_value(json_object_get(j, "n_embd")), 64);
    assert_int_equal(json_integer_value(json_object_get(j, "n_positions")), 1024);
    assert_int_equal(json_integer_value(json_object_get(j, "eos_token_id")), 50256);
    assert_true(json_real_value(json_object_get(j, "layer_norm_epsilon")) == 1e-5);
    assert_string_equal(json_string_value(json_array_get(
        json_object_get(j, "architectures"), 0)), "GPT2LMHeadModel");
    json_decref(j);
    char *text = tu_read_file(p, NULL);
    assert_non_null(text);
    assert_contains(text, "\"layer_norm_epsilon\": 1e-5,");
    assert_contains(text, "\n  \"n_embd\": 64,\n");
    free(text);

    roundtrip(&k, p);
    j = json_load_file(p, 0, &je);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "model_type")), "clip");
    assert_int_equal(json_integer_value(json_object_get(j, "projection_dim")), 32);
    json_t *tc = json_object_get(j, "text_config");
    assert_int_equal(json_integer_value(json_object_get(tc, "hidden_size")), 64);
    assert_int_equal(json_integer_value(json_object_get(tc, "eos_token_id")), 49407);
    assert_string_equal(json_string_value(json_object_get(tc, "hidden_act")), "quick_gelu");
    assert_true(json_is_object(json_object_get(j, "vision_config")));
    json_decref(j);

    /* sizes of the real models, an explicit n_inner, an odd epsilon */
    ll_config big = {LL_ARCH_GPT2, 768, 12, 12, 3072, 1024, 50257, 0, 1e-5f,
                     LL_ACT_GELU_NEW};
    roundtrip(&big, p);
    big.ffn = 1000;
    big.ln_eps = 3.3e-7f;
    roundtrip(&big, p);
    ll_config vit = {LL_ARCH_CLIP, 512, 12, 8, 2048, 77, 49408, 512, 1e-5f,
                     LL_ACT_QUICK_GELU};
    roundtrip(&vit, p);

    /* invalid configs are not written */
    ll_config bad = vit;
    bad.n_head = 7;
    assert_int_equal(ll_config_write(p, &bad, &err), -1);
    assert_contains(err.msg, "cannot write");
    assert_contains(err.msg, "not divisible");
    bad = big;
    bad.act = LL_ACT_QUICK_GELU;
    assert_int_equal(ll_config_write(p, &bad, &err), -1);

    char q[4400];
    snprintf(q, sizeof q, "%s/missing/config.json", dir);
    assert_int_equal(ll_config_write(q, &vit, &err), -1);
    assert_contains(err.msg, q);
    unlink(p);
    rmdir(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gpt2_fixture),
        cmocka_unit_test(test_clip_fixture),
        cmocka_unit_test(test_gpt2_defaults),
        cmocka_unit_test(test_clip_defaults),
        cmocka_unit_test(test_bad_configs),
        cmocka_unit_test(test_load_errors),
        cmocka_unit_test(test_write),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
