/* main.c - the layerlens command line.
 *
 *   layerlens embed     per-layer states of texts, as JSON (no server)
 *   layerlens tokenize  token ids, strings and byte offsets, as JSON
 *   layerlens mkweights random checkpoints of the real shapes
 *   layerlens serve     the HTTP service (server.c)
 *
 * Each command parses its flags, calls the library, prints JSON on stdout and
 * errors on stderr, and exits 0 on success, 1 on a failure, 2 on bad usage. */
#include <cblas.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "layerlens/blas.h"
#include "layerlens/embed.h"
#include "layerlens/eval.h"
#include "layerlens/pool.h"
#include "layerlens/mkweights.h"
#include "layerlens/model.h"
#include "layerlens/server.h"

#define LAYERLENS_VERSION "0.1.0"

static const char *usage_top =
    "usage: layerlens COMMAND [OPTIONS]\n"
    "\n"
    "commands:\n"
    "  serve       run the HTTP service (layerlens serve --help)\n"
    "  embed       print per-layer hidden states of texts as JSON\n"
    "  tokenize    print token ids, token strings and byte offsets as JSON\n"
    "  mkweights   write a random checkpoint of the real shapes\n"
    "  eval        score every layer on benchmark tasks, as JSON (no server)\n"
    "  reproduce   run the paper's evaluation: report.md, results.json, SVG plots\n"
    "\n"
    "  layerlens --version | --help | COMMAND --help\n";

static const char *usage_embed =
    "usage: layerlens embed --model DIR [OPTIONS] [--] TEXT...\n"
    "\n"
    "  --model DIR        a model directory (model.safetensors, config.json,\n"
    "                     vocab.json, merges.txt) of GPT-2 or CLIP\n"
    "  --dtype T          weights of the products: f32 (default, the reference) or\n"
    "                     bf16 (half the weight memory; states within ~1% of f32)\n"
    "  --layers SPEC      all (default) | a list such as 0,5,12 | final | projected\n"
    "                     (final and projected: CLIP only)\n"
    "  --pooling P        none (default: every token) | last | eos | mean\n"
    "  --bos, --eos       GPT-2: add <|endoftext|> before / after the text\n"
    "  --normalize        scale every vector to unit length\n"
    "  --no-truncate      refuse inputs longer than the context instead of\n"
    "                     truncating them (CLIP 77 tokens, GPT-2 1024)\n";

static const char *usage_tokenize =
    "usage: layerlens tokenize --model DIR [--bos] [--eos] [--no-truncate] [--] TEXT...\n";

static const char *usage_mkweights =
    "usage: layerlens mkweights --like DIR --preset tiny|full --seed N --out DIR\n"
    "\n"
    "  Writes random weights (N(0, 0.02), LayerNorm 1/0) with the tensor names and\n"
    "  layout of the Hugging Face checkpoint whose architecture DIR holds, and\n"
    "  copies its tokenizer files.  full = GPT-2 124M or CLIP ViT-B/32 text sizes;\n"
    "  tiny = the dimensions of DIR's config.\n";

typedef struct cli_opts {
    const char *model, *layers, *pooling, *dtype;
    int bos, eos, normalize, no_truncate, help;
} cli_opts;

enum { OPT_MODEL = 1, OPT_LAYERS, OPT_POOLING, OPT_BOS, OPT_EOS, OPT_NORMALIZE,
       OPT_NO_TRUNCATE, OPT_DTYPE, OPT_HELP, OPT_LIKE, OPT_PRESET, OPT_SEED, OPT_OUT };

static const struct option text_options[] = {
    {"model", required_argument, 0, OPT_MODEL},
    {"layers", required_argument, 0, OPT_LAYERS},
    {"pooling", required_argument, 0, OPT_POOLING},
    {"bos", no_argument, 0, OPT_BOS},
    {"eos", no_argument, 0, OPT_EOS},
    {"normalize", no_argument, 0, OPT_NORMALIZE},
    {"no-truncate", no_argument, 0, OPT_NO_TRUNCATE},
    {"dtype", required_argument, 0, OPT_DTYPE},
    {"help", no_argument, 0, OPT_HELP},
    {0, 0, 0, 0},
};

/* Parses the flags shared by embed and tokenize; returns the index of the
 * first text, or -1 on a usage error. */
static int parse_text_opts(int argc, char **argv, cli_opts *o, int allow_embed) {
    int c;
    optind = 1;
    opterr = 1;
    while ((c = getopt_long(argc, argv, "+", text_options, NULL)) != -1) {
        switch (c) {
        case OPT_MODEL: o->model = optarg; break;
        case OPT_LAYERS: if (!allow_embed) return -1; o->layers = optarg; break;
        case OPT_POOLING: if (!allow_embed) return -1; o->pooling = optarg; break;
        case OPT_NORMALIZE: if (!allow_embed) return -1; o->normalize = 1; break;
        case OPT_DTYPE: if (!allow_embed) return -1; o->dtype = optarg; break;
        case OPT_BOS: o->bos = 1; break;
        case OPT_EOS: o->eos = 1; break;
        case OPT_NO_TRUNCATE: o->no_truncate = 1; break;
        case OPT_HELP: o->help = 1; return optind;
        default: return -1;
        }
    }
    return optind;
}

static int print_json(json_t *j) {
    int rc = json_dumpf(j, stdout, JSON_COMPACT | JSON_REAL_PRECISION(9) | JSON_ENSURE_ASCII);
    fputc('\n', stdout);
    json_decref(j);
    return rc ? 1 : 0;
}

static ll_model *load_or_die(const char *dir, ll_weight_type dtype) {
    ll_error err = {{0}};
    ll_model *m = ll_model_load_dtype(dir, dtype, &err);
    if (!m) fprintf(stderr, "layerlens: %s\n", err.msg);
    return m;
}

/* Encodes every text; on failure prints the error and returns -1. */
static int encode_all(const ll_model *m, char **texts, int n, const cli_opts *o,
                      ll_tokens *tk, ll_span *spans) {
    ll_encode_opts eo = {o->bos, o->eos, !o->no_truncate};
    int32_t eot = ll_tokenizer_eot(ll_model_tokenizer(m));
    for (int i = 0; i < n; i++) {
        ll_error err = {{0}};
        int b, e;
        if (ll_model_encode(m, texts[i], strlen(texts[i]), &eo, &tk[i], &b, &e, &err)) {
            fprintf(stderr, "layerlens: input %d: %s\n", i, err.msg);
            return -1;
        }
        spans[i].begin = b, spans[i].end = e;
        spans[i].eos = (tk[i].n > 0 && tk[i].ids[tk[i].n - 1] == eot && e < tk[i].n)
                           ? tk[i].n - 1 : -1;
    }
    return 0;
}

static int cmd_tokenize(int argc, char **argv) {
    cli_opts o = {0};
    int first = parse_text_opts(argc, argv, &o, 0);
    if (o.help) return fputs(usage_tokenize, stdout), 0;
    if (first < 0 || !o.model) return fputs(usage_tokenize, stderr), 2;
    ll_model *m = load_or_die(o.model, LL_WEIGHTS_F32); /* tokenizing uses no weights */
    if (!m) return 1;
    int n = argc - first, rc = 1;
    ll_tokens *tk = calloc(n ? n : 1, sizeof *tk);
    ll_span *spans = calloc(n ? n : 1, sizeof *spans);
    if (tk && spans && encode_all(m, argv + first, n, &o, tk, spans) == 0) {
        json_t *inputs = json_array();
        for (int i = 0; i < n; i++)
            json_array_append_new(inputs, ll_input_tokens_json(ll_model_tokenizer(m),
                                  argv[first + i], strlen(argv[first + i]), &tk[i]));
        rc = print_json(json_pack("{s:s, s:o}", "model", ll_model_id(m), "inputs", inputs));
    }
    for (int i = 0; tk && i < n; i++) ll_tokens_free(&tk[i]);
    free(tk), free(spans);
    ll_model_free(m);
    return rc;
}

static int cmd_embed(int argc, char **argv) {
    cli_opts o = {0};
    int first = parse_text_opts(argc, argv, &o, 1);
    if (o.help) return fputs(usage_embed, stdout), 0;
    if (first < 0 || !o.model) return fputs(usage_embed, stderr), 2;
    ll_error err = {{0}};
    ll_pooling pooling = LL_POOL_NONE;
    if (o.pooling && ll_pooling_parse(o.pooling, &pooling, &err)) {
        fprintf(stderr, "layerlens: %s\n", err.msg);
        return 2;
    }
    ll_weight_type dtype = LL_WEIGHTS_F32;
    if (o.dtype && ll_weight_type_parse(o.dtype, &dtype, &err)) {
        fprintf(stderr, "layerlens: --dtype: %s\n", err.msg);
        return 2;
    }
    if (dtype == LL_WEIGHTS_BF16 && !ll_bf16_native())
        fprintf(stderr, "layerlens: warning: %s\n", LL_BF16_SLOW_WARNING);
    ll_model *m = load_or_die(o.model, dtype);
    if (!m) return 1;
    const ll_config *cfg = ll_model_config(m);
    ll_layer_sel sel = {0};
    if (ll_layer_sel_parse(&sel, o.layers ? o.layers : "all", cfg, &err)) {
        fprintf(stderr, "layerlens: %s\n", err.msg);
        ll_model_free(m);
        return 2;
    }
    int n = argc - first, rc = 1;
    ll_tokens *tk = calloc(n ? n : 1, sizeof *tk);
    ll_span *spans = calloc(n ? n : 1, sizeof *spans);
    ll_seq *seqs = calloc(n ? n : 1, sizeof *seqs);
    ll_workspace *ws = ll_workspace_new();
    ll_states st = {0};
    json_t *inputs = json_array();
    if (!tk || !spans || !seqs || !ws || !inputs) goto done;
    if (encode_all(m, argv + first, n, &o, tk, spans)) goto done;
    for (int i = 0; i < n; i++) {
        if (tk[i].n == 0) {
            fprintf(stderr, "layerlens: input %d has no tokens (for gpt2, an empty text "
                            "needs --bos or --eos)\n", i);
            goto done;
        }
        seqs[i] = (ll_seq){tk[i].ids, tk[i].n};
    }
    ll_forward_req req;
    ll_layer_sel_request(&sel, cfg, &req);
    if (n > 0 && ll_forward(m, ws, seqs, n, &req, &st, &err)) {
        fprintf(stderr, "layerlens: %s\n", err.msg);
        goto done;
    }
    for (int i = 0; i < n; i++) {
        json_t *layers = ll_layer_entries(&st, i, &sel, pooling, &spans[i], o.normalize, &err);
        if (!layers) {
            fprintf(stderr, "layerlens: input %d: %s\n", i, err.msg);
            goto done;
        }
        json_array_append_new(inputs, json_pack("{s:s, s:o, s:o, s:o}", "text", argv[first + i],
                              "token_ids", json_pack("[]"), "tokens",
                              ll_tokens_json(ll_model_tokenizer(m), tk[i].ids, tk[i].n),
                              "layers", layers));
        json_t *ids = json_object_get(json_array_get(inputs, i), "token_ids");
        for (int t = 0; t < tk[i].n; t++) json_array_append_new(ids, json_integer(tk[i].ids[t]));
    }
    rc = print_json(json_pack("{s:s, s:O}", "model", ll_model_id(m), "inputs", inputs));
done:
    json_decref(inputs);
    ll_states_free(&st);
    ll_workspace_free(ws);
    for (int i = 0; tk && i < n; i++) ll_tokens_free(&tk[i]);
    free(tk), free(spans), free(seqs);
    ll_model_free(m);
    return rc;
}

static int cmd_mkweights(int argc, char **argv) {
    static const struct option opts[] = {
        {"like", required_argument, 0, OPT_LIKE},
        {"preset", required_argument, 0, OPT_PRESET},
        {"seed", required_argument, 0, OPT_SEED},
        {"out", required_argument, 0, OPT_OUT},
        {"help", no_argument, 0, OPT_HELP},
        {0, 0, 0, 0},
    };
    const char *like = NULL, *preset = NULL, *out = NULL;
    unsigned long long seed = 0;
    int c, have_seed = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, "+", opts, NULL)) != -1) {
        switch (c) {
        case OPT_LIKE: like = optarg; break;
        case OPT_PRESET: preset = optarg; break;
        case OPT_OUT: out = optarg; break;
        case OPT_SEED: {
            char *end;
            seed = strtoull(optarg, &end, 10);
            if (*end || !*optarg) return fputs(usage_mkweights, stderr), 2;
            have_seed = 1;
            break;
        }
        case OPT_HELP: return fputs(usage_mkweights, stdout), 0;
        default: return fputs(usage_mkweights, stderr), 2;
        }
    }
    if (!like || !preset || !out || !have_seed || optind != argc ||
        (strcmp(preset, "tiny") && strcmp(preset, "full")))
        return fputs(usage_mkweights, stderr), 2;
    ll_error err = {{0}};
    ll_preset p = strcmp(preset, "full") == 0 ? LL_PRESET_FULL : LL_PRESET_TINY;
    if (ll_mkweights(like, p, seed, out, &err)) {
        fprintf(stderr, "layerlens: %s\n", err.msg);
        return 1;
    }
    return 0;
}

int main(int argc, char **argv) {
    ll_blas_select_kernels(argv);
    /* the command-line tools run their forward passes on this thread: let
     * its products use every core, as OpenBLAS's own threads would */
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    ll_pool_set_threads(cores > 0 ? (int)cores : 1);
    openblas_set_num_threads(1); /* attention only; its pool would spin */
    if (argc < 2) return fputs(usage_top, stderr), 2;
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help"))
        return fputs(usage_top, stdout), 0;
    if (!strcmp(cmd, "--version")) return puts("layerlens " LAYERLENS_VERSION), 0;
    if (!strcmp(cmd, "embed")) return cmd_embed(argc - 1, argv + 1);
    if (!strcmp(cmd, "tokenize")) return cmd_tokenize(argc - 1, argv + 1);
    if (!strcmp(cmd, "mkweights")) return cmd_mkweights(argc - 1, argv + 1);
    if (!strcmp(cmd, "serve")) return ll_serve_main(argc - 1, argv + 1);
    if (!strcmp(cmd, "eval")) return ll_eval_main(argc - 1, argv + 1);
    if (!strcmp(cmd, "reproduce")) return ll_reproduce_main(argc - 1, argv + 1);
    fprintf(stderr, "layerlens: unknown command '%s'\n\n%s", cmd, usage_top);
    return 2;
}
