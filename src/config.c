/* config.c - model dimensions from a Hugging Face config.json (see config.h).
 *
 * GPT-2 keeps its keys at the top level; CLIP keeps the text tower's keys in
 * "text_config" (a CLIPConfig) or at the top level (a CLIPTextConfig).  Keys a
 * config leaves out take the defaults of the transformers config classes, as
 * Hugging Face itself does: the real openai/clip-vit-base-patch32 config.json
 * omits several text_config keys. */
#include "layerlens/config.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

/* Sizes beyond this are a corrupt config, not a model we could load. */
#define MAX_DIM (1 << 20)
/* Hidden states are selected with a 64-bit mask (layers 0..n_layer). */
#define MAX_LAYERS 63

/* The config keys of one architecture, for parsing and for error messages. */
typedef struct keyset {
    const char *width, *n_layer, *n_head, *ffn, *n_ctx, *vocab, *eps, *act;
} keyset;

static const keyset GPT2_KEYS = {
    "n_embd", "n_layer", "n_head", "n_inner", "n_positions", "vocab_size",
    "layer_norm_epsilon", "activation_function",
};
static const keyset CLIP_KEYS = {
    "hidden_size", "num_hidden_layers", "num_attention_heads",
    "intermediate_size", "max_position_embeddings", "vocab_size",
    "layer_norm_eps", "hidden_act",
};

/* transformers GPT2Config defaults (n_inner: None = 4 * n_embd). */
static const ll_config GPT2_DEFAULTS = {
    .arch = LL_ARCH_GPT2, .width = 768, .n_layer = 12, .n_head = 12,
    .ffn = 0, .n_ctx = 1024, .vocab = 50257, .proj_dim = 0, .ln_eps = 1e-5f,
    .act = LL_ACT_GELU_NEW,
};
/* transformers CLIPTextConfig defaults (projection_dim: CLIPConfig's). */
static const ll_config CLIP_DEFAULTS = {
    .arch = LL_ARCH_CLIP, .width = 512, .n_layer = 12, .n_head = 8,
    .ffn = 2048, .n_ctx = 77, .vocab = 49408, .proj_dim = 512, .ln_eps = 1e-5f,
    .act = LL_ACT_QUICK_GELU,
};

/* ---------------------------------------------------------------- reading */

static const char *json_kind(const json_t *v) {
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "object";
    case JSON_ARRAY: return "list";
    case JSON_STRING: return "string";
    case JSON_INTEGER: return "integer";
    case JSON_REAL: return "real number";
    case JSON_TRUE:
    case JSON_FALSE: return "boolean";
    case JSON_NULL: return "null";
    }
    return "value";
}

/* obj[key] as an int; `def` when absent.  `pre` ("" or "text_config.")
 * makes error messages name the key as it appears in the file.  Ranges are
 * checked later, in validate(). */
static int get_int(const json_t *obj, const char *pre, const char *key,
                   int def, int *out, ll_error *err) {
    const json_t *v = json_object_get(obj, key);
    if (!v) {
        *out = def;
        return 0;
    }
    if (!json_is_integer(v))
        return ll_errorf(err, "key '%s%s' must be an integer, not a %s", pre,
                         key, json_kind(v));
    json_int_t x = json_integer_value(v);
    if (x < INT_MIN || x > INT_MAX)
        return ll_errorf(err, "key '%s%s' = %" JSON_INTEGER_FORMAT " is out of "
                         "range", pre, key, x);
    *out = (int)x;
    return 0;
}

static int get_float(const json_t *obj, const char *pre, const char *key,
                     float def, float *out, ll_error *err) {
    const json_t *v = json_object_get(obj, key);
    if (!v) {
        *out = def;
        return 0;
    }
    if (!json_is_number(v))
        return ll_errorf(err, "key '%s%s' must be a number, not a %s", pre, key,
                         json_kind(v));
    *out = (float)json_number_value(v);
    return 0;
}

static int get_string(const json_t *obj, const char *pre, const char *key,
                      const char *def, const char **out, ll_error *err) {
    const json_t *v = json_object_get(obj, key);
    if (!v) {
        *out = def;
        return 0;
    }
    if (!json_is_string(v))
        return ll_errorf(err, "key '%s%s' must be a string, not a %s", pre, key,
                         json_kind(v));
    *out = json_string_value(v);
    return 0;
}

/* The activation by name.  "gelu_pytorch_tanh" is the same tanh
 * approximation as GPT-2's "gelu_new", under PyTorch's name. */
static int parse_act(ll_arch arch, const char *pre, const char *key,
                     const char *name, ll_act *act, ll_error *err) {
    if (arch == LL_ARCH_GPT2 && (strcmp(name, "gelu_new") == 0 ||
                                 strcmp(name, "gelu_pytorch_tanh") == 0)) {
        *act = LL_ACT_GELU_NEW;
        return 0;
    }
    if (arch == LL_ARCH_CLIP && strcmp(name, "quick_gelu") == 0) {
        *act = LL_ACT_QUICK_GELU;
        return 0;
    }
    return ll_errorf(err, "key '%s%s' is '%s', which is not supported (%s)",
                     pre, key, name, arch == LL_ARCH_GPT2
                     ? "expected gelu_new or gelu_pytorch_tanh"
                     : "expected quick_gelu");
}

static int check_dim(int v, const char *pre, const char *key, int max,
                     ll_error *err) {
    if (v < 1 || v > max)
        return ll_errorf(err, "key '%s%s' = %d is out of range (1 to %d)", pre,
                         key, v, max);
    return 0;
}

/* Everything the model code relies on, for parsed and for written configs. */
static int validate(const ll_config *c, const keyset *k, const char *pre,
                    ll_error *err) {
    if (check_dim(c->width, pre, k->width, MAX_DIM, err) ||
        check_dim(c->n_layer, pre, k->n_layer, MAX_LAYERS, err) ||
        check_dim(c->n_head, pre, k->n_head, MAX_DIM, err) ||
        check_dim(c->ffn, pre, k->ffn, 4 * MAX_DIM, err) ||
        check_dim(c->n_ctx, pre, k->n_ctx, MAX_DIM, err) ||
        check_dim(c->vocab, pre, k->vocab, MAX_DIM, err))
        return -1;
    if (c->width % c->n_head)
        return ll_errorf(err, "key '%s%s' = %d is not divisible by '%s%s' = %d",
                         pre, k->width, c->width, pre, k->n_head, c->n_head);
    if (!(c->ln_eps > 0 && c->ln_eps < 1))
        return ll_errorf(err, "key '%s%s' = %g must be > 0 and < 1", pre, k->eps,
                         (double)c->ln_eps);
    if (c->arch == LL_ARCH_CLIP &&
        check_dim(c->proj_dim, "", "projection_dim", MAX_DIM, err))
        return -1;
    if (c->act != (c->arch == LL_ARCH_GPT2 ? LL_ACT_GELU_NEW : LL_ACT_QUICK_GELU))
        return ll_errorf(err, "key '%s%s': wrong activation for this model",
                         pre, k->act);
    return 0;
}

/* The dimensions shared by both layouts, read from `o` (the whole config
 * for GPT-2, the text config for CLIP). */
static int read_common(const json_t *o, const keyset *k, const char *pre,
                       ll_config *c, ll_error *err) {
    const char *act = c->act == LL_ACT_GELU_NEW ? "gelu_new" : "quick_gelu";
    if (get_int(o, pre, k->width, c->width, &c->width, err) ||
        get_int(o, pre, k->n_layer, c->n_layer, &c->n_layer, err) ||
        get_int(o, pre, k->n_head, c->n_head, &c->n_head, err) ||
        get_int(o, pre, k->vocab, c->vocab, &c->vocab, err) ||
        get_float(o, pre, k->eps, c->ln_eps, &c->ln_eps, err) ||
        get_string(o, pre, k->act, act, &act, err) ||
        parse_act(c->arch, pre, k->act, act, &c->act, err))
        return -1;
    return 0;
}

static int read_gpt2(const json_t *root, ll_config *c, ll_error *err) {
    *c = GPT2_DEFAULTS;
    if (read_common(root, &GPT2_KEYS, "", c, err)) return -1;
    /* n_positions; older configs only have its alias n_ctx */
    int n_ctx;
    if (get_int(root, "", "n_ctx", c->n_ctx, &n_ctx, err) ||
        get_int(root, "", "n_positions", n_ctx, &c->n_ctx, err))
        return -1;
    /* n_inner: null or absent means 4 * n_embd */
    const json_t *inner = json_object_get(root, "n_inner");
    if (inner && !json_is_null(inner)) {
        if (get_int(root, "", "n_inner", 0, &c->ffn, err)) return -1;
    } else {
        c->ffn = c->width > 0 && c->width <= MAX_DIM ? 4 * c->width : 0;
    }
    return validate(c, &GPT2_KEYS, "", err);
}

/* `text` is the object holding the text tower's keys (NULL: all defaults),
 * `pre` how its keys are named in messages, `root` the whole config. */
static int read_clip(const json_t *root, const json_t *text, const char *pre,
                     ll_config *c, ll_error *err) {
    *c = CLIP_DEFAULTS;
    if (read_common(text, &CLIP_KEYS, pre, c, err) ||
        get_int(text, pre, "intermediate_size", c->ffn, &c->ffn, err) ||
        get_int(text, pre, "max_position_embeddings", c->n_ctx, &c->n_ctx, err))
        return -1;
    /* CLIPConfig keeps projection_dim at the top level; the text config's own
     * copy is the fallback. */
    int proj;
    if (get_int(text, pre, "projection_dim", c->proj_dim, &proj, err) ||
        get_int(root, "", "projection_dim", proj, &c->proj_dim, err))
        return -1;
    return validate(c, &CLIP_KEYS, pre, err);
}

/* model_type, or when it is absent the first known `architectures` entry. */
static int model_type(const json_t *root, const char **type, ll_error *err) {
    const json_t *mt = json_object_get(root, "model_type");
    if (mt) {
        if (!json_is_string(mt))
            return ll_errorf(err, "key 'model_type' must be a string, not a %s",
                             json_kind(mt));
        *type = json_string_value(mt);
        return 0;
    }
    static const struct { const char *arch, *type; } known[] = {
        {"GPT2LMHeadModel", "gpt2"}, {"GPT2Model", "gpt2"},
        {"CLIPModel", "clip"}, {"CLIPTextModel", "clip_text_model"},
        {"CLIPTextModelWithProjection", "clip_text_model"},
    };
    const json_t *archs = json_object_get(root, "architectures");
    size_t i;
    const json_t *a;
    json_array_foreach(archs, i, a) {
        for (size_t j = 0; j < sizeof known / sizeof known[0]; j++) {
            if (json_is_string(a) && strcmp(json_string_value(a), known[j].arch) == 0) {
                *type = known[j].type;
                return 0;
            }
        }
    }
    return ll_errorf(err, "no 'model_type' and no known 'architectures' "
                     "(expected GPT-2 or CLIP)");
}

static int parse_root(const json_t *root, ll_config *cfg, ll_error *err) {
    if (!json_is_object(root))
        return ll_errorf(err, "config is a JSON %s, not an object",
                         json_kind(root));
    const char *type = "";
    if (model_type(root, &type, err)) return -1;
    if (strcmp(type, "gpt2") == 0) return read_gpt2(root, cfg, err);
    if (strcmp(type, "clip_text_model") == 0)
        return read_clip(root, root, "", cfg, err);
    if (strcmp(type, "clip") != 0)
        return ll_errorf(err, "unsupported model_type '%s' (expected gpt2, "
                         "clip or clip_text_model)", type);
    /* Older CLIPConfig files name it text_config_dict. */
    const char *key = "text_config";
    const json_t *text = json_object_get(root, key);
    if (!text || json_is_null(text)) {
        key = "text_config_dict";
        text = json_object_get(root, key);
    }
    if (text && json_is_null(text)) text = NULL; /* all defaults, as in HF */
    if (text && !json_is_object(text))
        return ll_errorf(err, "key '%s' must be an object, not a %s", key,
                         json_kind(text));
    char pre[32];
    snprintf(pre, sizeof pre, "%s.", key);
    return read_clip(root, text, pre, cfg, err);
}

int ll_config_parse(const char *json, size_t len, ll_config *cfg,
                    ll_error *err) {
    json_error_t je;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY,
                              &je);
    if (!root)
        return ll_errorf(err, "config is not valid JSON: %s (line %d, column "
                         "%d)", je.text, je.line, je.column);
    int rc = parse_root(root, cfg, err);
    json_decref(root);
    return rc;
}

int ll_config_load(const char *path, ll_config *cfg, ll_error *err) {
    json_error_t je;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY,
                                  &je);
    if (!root) {
        if (je.line < 0) /* could not read the file at all */
            return ll_errorf(err, "%s: %s", path, je.text);
        return ll_errorf(err, "%s: not valid JSON: %s (line %d, column %d)",
                         path, je.text, je.line, je.column);
    }
    int rc = parse_root(root, cfg, err);
    json_decref(root);
    if (rc) ll_error_prefix(err, "%s", path);
    return rc;
}

/* ---------------------------------------------------------------- writing */

/* The shortest decimal that reads back as the same float, as a double, so
 * that 1e-5f is written "1e-05" and not "9.99999975e-06". */
static double float_decimal(float x) {
    char buf[32];
    for (int p = 1; p <= 9; p++) {
        snprintf(buf, sizeof buf, "%.*g", p, (double)x);
        if (strtof(buf, NULL) == x) break;
    }
    return strtod(buf, NULL);
}

/* As in openai-community/gpt2's config.json (GPT2Config). */
static json_t *gpt2_json(const ll_config *c) {
    int eot = c->vocab - 1; /* <|endoftext|> is GPT-2's last id */
    return json_pack(
        "{s:s, s:[s], s:f, s:i, s:f, s:i, s:f, s:f, s:s, s:i, s:i, s:i, s:o,"
        " s:i, s:i, s:f, s:n, s:f, s:b, s:s, s:b, s:s, s:i}",
        "activation_function", "gelu_new",
        "architectures", "GPT2LMHeadModel",
        "attn_pdrop", 0.1,
        "bos_token_id", eot,
        "embd_pdrop", 0.1,
        "eos_token_id", eot,
        "initializer_range", 0.02,
        "layer_norm_epsilon", float_decimal(c->ln_eps),
        "model_type", "gpt2",
        "n_ctx", c->n_ctx,
        "n_embd", c->width,
        "n_head", c->n_head,
        "n_inner", c->ffn == 4 * c->width ? json_null() : json_integer(c->ffn),
        "n_layer", c->n_layer,
        "n_positions", c->n_ctx,
        "resid_pdrop", 0.1,
        "summary_activation",
        "summary_first_dropout", 0.1,
        "summary_proj_to_labels", 1,
        "summary_type", "cls_index",
        "summary_use_proj", 1,
        "torch_dtype", "float32",
        "vocab_size", c->vocab);
}

/* As in openai/clip-vit-base-patch32's config.json (CLIPConfig), with a
 * minimal vision_config: layerlens only has the text tower.  The end token
 * is the largest id (49407 in CLIP's vocabulary), so both HF's eos-based
 * pooling and CLIP's argmax pooling pick the same position. */
static json_t *clip_json(const ll_config *c) {
    json_t *text = json_pack(
        "{s:f, s:i, s:f, s:i, s:s, s:i, s:f, s:f, s:i, s:f, s:i, s:s, s:i, s:i,"
        " s:i, s:i, s:i}",
        "attention_dropout", 0.0,
        "bos_token_id", c->vocab - 2,
        "dropout", 0.0,
        "eos_token_id", c->vocab - 1,
        "hidden_act", "quick_gelu",
        "hidden_size", c->width,
        "initializer_factor", 1.0,
        "initializer_range", 0.02,
        "intermediate_size", c->ffn,
        "layer_norm_eps", float_decimal(c->ln_eps),
        "max_position_embeddings", c->n_ctx,
        "model_type", "clip_text_model",
        "num_attention_heads", c->n_head,
        "num_hidden_layers", c->n_layer,
        "pad_token_id", 1,
        "projection_dim", c->proj_dim,
        "vocab_size", c->vocab);
    json_t *vision = json_pack(
        "{s:s, s:i, s:i, s:i, s:f, s:s, s:i, s:i, s:i, s:i, s:i}",
        "hidden_act", "quick_gelu", "hidden_size", 32, "image_size", 32,
        "intermediate_size", 128, "layer_norm_eps", 1e-5,
        "model_type", "clip_vision_model", "num_attention_heads", 1,
        "num_channels", 3, "num_hidden_layers", 0, "patch_size", 4,
        "projection_dim", c->proj_dim);
    return json_pack("{s:[s], s:f, s:f, s:s, s:i, s:o, s:s, s:o}",
                     "architectures", "CLIPModel",
                     "initializer_factor", 1.0,
                     "logit_scale_init_value", 2.6592,
                     "model_type", "clip",
                     "projection_dim", c->proj_dim,
                     "text_config", text,
                     "torch_dtype", "float32",
                     "vision_config", vision);
}

int ll_config_write(const char *path, const ll_config *cfg, ll_error *err) {
    int gpt2 = cfg->arch == LL_ARCH_GPT2;
    if (validate(cfg, gpt2 ? &GPT2_KEYS : &CLIP_KEYS, gpt2 ? "" : "text_config.",
                 err))
        return ll_error_prefix(err, "cannot write %s", path);
    json_t *root = gpt2 ? gpt2_json(cfg) : clip_json(cfg);
    /* HF writes sorted keys with a 2-space indent; 9 significant digits are
     * enough for every float we write. */
    char *text = root ? json_dumps(root, JSON_INDENT(2) | JSON_SORT_KEYS |
                                             JSON_REAL_PRECISION(9))
                      : NULL;
    json_decref(root);
    if (!text) return ll_errorf(err, "cannot write %s: out of memory", path);
    FILE *f = fopen(path, "w");
    int rc = 0;
    if (!f) {
        rc = ll_errorf(err, "cannot create %s: %s", path, strerror(errno));
    } else {
        int bad = fputs(text, f) < 0 || fputc('\n', f) == EOF;
        bad |= fclose(f) != 0;
        if (bad) rc = ll_errorf(err, "cannot write %s: %s", path, strerror(errno));
    }
    free(text);
    return rc;
}
