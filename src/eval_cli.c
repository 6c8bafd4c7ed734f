/* eval_cli.c - the evaluation commands (no server needed):
 *
 *   layerlens eval --gpt2 DIR --clip DIR --task stsb [--task ...] ...
 *       the result JSON of POST /v1/evaluate on stdout; a progress bar on
 *       stderr when stderr is a terminal.  Exit 0, or 1 on failure or when a
 *       --threshold is missed, 2 on bad usage.
 *   layerlens reproduce --gpt2 DIR --clip DIR --data DIR --out DIR
 *       every task of the paper; writes report.md, results.json and one SVG
 *       plot per task.
 *
 * Both build a request body from their flags and go through the same
 * request parser and driver as the server, in-process (ll_eval_local). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "eval_internal.h"

static const char *usage_eval =
    "usage: layerlens eval [--gpt2 DIR] [--clip DIR] --task NAME [--task NAME ...] [OPTIONS]\n"
    "\n"
    "Scores every layer of the models on benchmark tasks and prints the result\n"
    "JSON (the body POST /v1/evaluate answers) on stdout.\n"
    "\n"
    "  --gpt2 DIR, --clip DIR  model directories (at least one)\n"
    "  --task NAME        rg65 ws353 ws353_sim ws353_rel simlex999 simverb3500 valnorm\n"
    "                     stsb stsb_dev stsb_train selfsim_sentences selfsim_words;\n"
    "                     \"paper\" = the paper's ten, \"all\"; repeatable or comma-separated\n"
    "  --data DIR         the benchmark files (default $LAYERLENS_DATA)\n"
    "  --layers SPEC      all (default) | 0,6,12 | final | projected (CLIP only)\n"
    "  --method M         word=bos|plain, sentence=eos|last|mean,\n"
    "                     selfsim_words=sampled|reference, selfsim_words_n=N,\n"
    "                     selfsim_words_seed=S (comma-separated; bos, plain, eos,\n"
    "                     last, mean, sampled, reference alone work too)\n"
    "  --pairs FILE       custom pairs: a TAB b TAB gold per line (task custom_pairs)\n"
    "  --items FILE       custom self-similarity items: one sentence per line, or\n"
    "                     sentence TAB token-index (task custom_items)\n"
    "  --threshold T:M=X  e.g. rg65:clip=0.8 (repeatable): adds \"passed\"; exit 1 when\n"
    "                     a best layer misses its threshold\n"
    "  --bootstrap N      resamples of the CLIP - GPT-2 comparison (default 1000, 0: off)\n"
    "  --seed N           bootstrap seed\n"
    "  --details          per-item values and the token selection in the result\n"
    "  --request FILE     the request body as JSON (- = stdin); flags add to it\n"
    "  --batch-tokens N   tokens per forward pass (default 2048)\n"
    "  --dtype T          weights of the products: f32 (default, the reference) or\n"
    "                     bf16 (half the weight memory; states within ~1% of f32)\n"
    "  --quiet            no progress bar\n";

static const char *usage_reproduce =
    "usage: layerlens reproduce --gpt2 DIR --clip DIR --data DIR --out DIR [OPTIONS]\n"
    "\n"
    "Runs every task of Wolfe & Caliskan (ACL 2022) on both models and writes\n"
    "OUT/report.md, OUT/results.json and OUT/<task>.svg (score by layer, GPT-2 vs\n"
    "CLIP, the paper's published values beside).\n"
    "\n"
    "  --layers SPEC      all (default) | 0,6,12 | final | projected\n"
    "  --extra-rows       add CLIP's final and projected outputs as rows\n"
    "  --method M         as for `layerlens eval`\n"
    "  --bootstrap N      resamples (default 1000); --seed N\n"
    "  --batch-tokens N   tokens per forward pass (default 2048)\n"
    "  --dtype T          f32 (default) | bf16, as for `layerlens eval`\n"
    "  --quiet            no progress bar\n";

enum { O_GPT2 = 1, O_CLIP, O_TASK, O_DATA, O_LAYERS, O_METHOD, O_PAIRS, O_ITEMS,
       O_THRESHOLD, O_BOOTSTRAP, O_SEED, O_DETAILS, O_REQUEST, O_BATCH, O_QUIET, O_OUT,
       O_EXTRA, O_DTYPE, O_HELP };

typedef struct cli {
    const char *gpt2, *clip, *data, *out, *request;
    int batch_tokens, quiet, extra_rows, help;
    ll_weight_type dtype;
    json_t *body; /* the request being built */
} cli;

/* ---- building the request from flags ---------------------------------- */

static int add_tasks(json_t *body, const char *spec, ll_error *err) {
    json_t *tasks = json_object_get(body, "tasks");
    if (json_is_string(tasks)) { /* "paper"/"all" from a request file: keep, add */
        json_t *list = json_array();
        json_array_append(list, tasks);
        json_object_set_new(body, "tasks", list);
        tasks = list;
    }
    if (!tasks) json_object_set_new(body, "tasks", tasks = json_array());
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", spec);
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (!strcmp(t, "paper")) {
            for (int i = 0; ll_eval_paper_tasks[i]; i++)
                json_array_append_new(tasks, json_string(ll_eval_paper_tasks[i]));
        } else if (!strcmp(t, "all")) {
            for (int i = 0; i < ll_task_count(); i++)
                json_array_append_new(tasks, json_string(ll_task_at(i)->name));
        } else {
            json_array_append_new(tasks, json_string(t));
        }
    }
    (void)err;
    return 0;
}

static int add_method(json_t *body, const char *spec, ll_error *err) {
    json_t *m = json_object_get(body, "method");
    if (!m) json_object_set_new(body, "method", m = json_object());
    char buf[256];
    snprintf(buf, sizeof buf, "%s", spec);
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(t, '=');
        const char *key, *val = eq ? eq + 1 : t;
        if (eq) *eq = 0, key = t;
        else if (!strcmp(t, "bos") || !strcmp(t, "plain")) key = "word";
        else if (!strcmp(t, "eos") || !strcmp(t, "last") || !strcmp(t, "mean")) key = "sentence";
        else if (!strcmp(t, "sampled") || !strcmp(t, "reference")) key = "selfsim_words";
        else return ll_errorf(err, "--method: unknown method '%s'", t);
        /* selfsim_words_n=500, selfsim_words_seed=7: numbers in the JSON */
        char *end;
        long long x = strtoll(val, &end, 10);
        if (*val >= '0' && *val <= '9' && !*end) json_object_set_new(m, key, json_integer(x));
        else json_object_set_new(m, key, json_string(val));
    }
    return 0;
}

/* TASK:MODEL=VALUE */
static int add_threshold(json_t *body, const char *spec, ll_error *err) {
    char buf[256];
    snprintf(buf, sizeof buf, "%s", spec);
    char *colon = strchr(buf, ':'), *eq = strchr(buf, '='), *end;
    if (!colon || !eq || eq < colon)
        return ll_errorf(err, "--threshold: expected TASK:MODEL=VALUE, got '%s'", spec);
    *colon = *eq = 0;
    double v = strtod(eq + 1, &end);
    if (!eq[1] || *end) return ll_errorf(err, "--threshold: '%s' is not a number", eq + 1);
    json_t *th = json_object_get(body, "thresholds");
    if (!th) json_object_set_new(body, "thresholds", th = json_object());
    json_t *per = json_object_get(th, buf);
    if (!per) json_object_set_new(th, buf, per = json_object());
    json_object_set_new(per, colon + 1, json_real(v));
    return 0;
}

/* The lines of a text file without their LF / CRLF; NULL on error. */
static char **read_lines(const char *path, int *n, ll_error *err) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        ll_errorf(err, "cannot read %s", path);
        return NULL;
    }
    char **lines = NULL, *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int k = 0, size = 0;
    while ((len = getline(&line, &cap, f)) >= 0) {
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = 0;
        if (len == 0) continue;
        if (k == size) {
            size = size ? 2 * size : 64;
            char **nl = realloc(lines, size * sizeof *nl);
            if (!nl) break;
            lines = nl;
        }
        lines[k++] = strdup(line);
    }
    free(line);
    fclose(f);
    *n = k;
    return lines ? lines : calloc(1, sizeof *lines);
}

static void free_lines(char **l, int n) {
    for (int i = 0; i < n; i++) free(l[i]);
    free(l);
}

static int add_pairs(json_t *body, const char *path, ll_error *err) {
    int n;
    char **lines = read_lines(path, &n, err);
    if (!lines) return -1;
    json_t *pairs = json_array();
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        char *a = lines[i], *b = strchr(a, '\t'), *g = b ? strchr(b + 1, '\t') : NULL, *end;
        if (!g) {
            rc = ll_errorf(err, "%s line %d: expected a TAB b TAB gold", path, i + 1);
            break;
        }
        *b++ = 0, *g++ = 0;
        double gold = strtod(g, &end);
        if (end == g) rc = ll_errorf(err, "%s line %d: gold '%s' is not a number", path, i + 1, g);
        else json_array_append_new(pairs, json_pack("[s, s, f]", a, b, gold));
    }
    free_lines(lines, n);
    if (rc) {
        json_decref(pairs);
        return -1;
    }
    json_object_set_new(body, "pairs", pairs);
    return 0;
}

static int add_items(json_t *body, const char *path, ll_error *err) {
    int n;
    char **lines = read_lines(path, &n, err);
    if (!lines) return -1;
    json_t *items = json_array();
    for (int i = 0; i < n; i++) {
        char *tab = strchr(lines[i], '\t'), *end;
        if (tab) {
            *tab = 0;
            long idx = strtol(tab + 1, &end, 10);
            json_array_append_new(items, *end || end == tab + 1
                                             ? json_pack("[s, s]", lines[i], tab + 1)
                                             : json_pack("[s, i]", lines[i], (int)idx));
        } else {
            json_array_append_new(items, json_string(lines[i]));
        }
    }
    free_lines(lines, n);
    json_object_set_new(body, "items", items);
    return 0;
}

static int parse_int(const char *s, int *out) {
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < 0 || v > 1000000000) return -1;
    *out = (int)v;
    return 0;
}

/* Parses the flags of both commands into c; 2 on a usage error. */
static int parse_flags(int argc, char **argv, cli *c, int reproduce, ll_error *err) {
    static const struct option opts[] = {
        {"gpt2", required_argument, 0, O_GPT2}, {"clip", required_argument, 0, O_CLIP},
        {"task", required_argument, 0, O_TASK}, {"data", required_argument, 0, O_DATA},
        {"layers", required_argument, 0, O_LAYERS}, {"method", required_argument, 0, O_METHOD},
        {"pairs", required_argument, 0, O_PAIRS}, {"items", required_argument, 0, O_ITEMS},
        {"threshold", required_argument, 0, O_THRESHOLD},
        {"bootstrap", required_argument, 0, O_BOOTSTRAP}, {"seed", required_argument, 0, O_SEED},
        {"details", no_argument, 0, O_DETAILS}, {"request", required_argument, 0, O_REQUEST},
        {"batch-tokens", required_argument, 0, O_BATCH}, {"quiet", no_argument, 0, O_QUIET},
        {"out", required_argument, 0, O_OUT}, {"extra-rows", no_argument, 0, O_EXTRA},
        {"dtype", required_argument, 0, O_DTYPE},
        {"help", no_argument, 0, O_HELP}, {0, 0, 0, 0},
    };
    int ch, v;
    optind = 1;
    opterr = 1;
    while ((ch = getopt_long(argc, argv, "+", opts, NULL)) != -1) {
        int eval_only = ch == O_TASK || ch == O_PAIRS || ch == O_ITEMS || ch == O_THRESHOLD ||
                        ch == O_DETAILS || ch == O_REQUEST;
        if ((reproduce && eval_only) || (!reproduce && (ch == O_OUT || ch == O_EXTRA)))
            return ll_errorf(err, "option not accepted by this command"), 2;
        switch (ch) {
        case O_GPT2: c->gpt2 = optarg; break;
        case O_CLIP: c->clip = optarg; break;
        case O_DATA: c->data = optarg; break;
        case O_OUT: c->out = optarg; break;
        case O_REQUEST: c->request = optarg; break;
        case O_QUIET: c->quiet = 1; break;
        case O_EXTRA: c->extra_rows = 1; break;
        case O_HELP: c->help = 1; return 0;
        case O_DETAILS: json_object_set_new(c->body, "details", json_true()); break;
        case O_LAYERS: json_object_set_new(c->body, "layers", json_string(optarg)); break;
        case O_TASK: if (add_tasks(c->body, optarg, err)) return 2; break;
        case O_METHOD: if (add_method(c->body, optarg, err)) return 2; break;
        case O_THRESHOLD: if (add_threshold(c->body, optarg, err)) return 2; break;
        case O_PAIRS: if (add_pairs(c->body, optarg, err)) return 1; break;
        case O_ITEMS: if (add_items(c->body, optarg, err)) return 1; break;
        case O_DTYPE:
            if (ll_weight_type_parse(optarg, &c->dtype, err))
                return ll_error_prefix(err, "--dtype"), 2;
            break;
        case O_BATCH:
            if (parse_int(optarg, &c->batch_tokens) || c->batch_tokens < 1)
                return ll_errorf(err, "--batch-tokens: expected a positive number"), 2;
            break;
        case O_BOOTSTRAP:
        case O_SEED:
            if (parse_int(optarg, &v))
                return ll_errorf(err, "--%s: expected a non-negative number",
                                 ch == O_SEED ? "seed" : "bootstrap"), 2;
            json_object_set_new(c->body, ch == O_SEED ? "seed" : "bootstrap", json_integer(v));
            break;
        default: return ll_errorf(err, "bad option"), 2;
        }
    }
    if (optind != argc) return ll_errorf(err, "unexpected argument '%s'", argv[optind]), 2;
    if (!c->gpt2 && !c->clip) return ll_errorf(err, "give --gpt2 DIR and/or --clip DIR"), 2;
    if (reproduce && (!c->gpt2 || !c->clip || !c->data || !c->out))
        return ll_errorf(err, "reproduce needs --gpt2, --clip, --data and --out"), 2;
    if (!c->data) c->data = getenv("LAYERLENS_DATA");
    return 0;
}

/* ---- the progress bar ----------------------------------------------------- */

typedef struct bar {
    double start_ms, last_ms;
    int shown;
} bar;

static void bar_update(void *ctx, long done, long total) {
    bar *b = ctx;
    double now = ev_now_ms();
    if (done < total && now - b->last_ms < 100) return; /* ~10 updates a second */
    b->last_ms = now;
    int width = 30, fill = total > 0 ? (int)(width * (double)done / total) : width;
    double secs = (now - b->start_ms) / 1e3;
    double eta = done > 0 && done < total ? secs * (total - done) / done : 0;
    fprintf(stderr, "\r[%.*s%*s] %3d%% %ld/%ld texts %.1fs", fill,
            "##############################", width - fill, "",
            total > 0 ? (int)(100.0 * done / total) : 100, done, total, secs);
    if (eta > 0) fprintf(stderr, " (~%.0fs left)  ", eta);
    else fprintf(stderr, "              ");
    b->shown = 1;
}

/* ---- running ----------------------------------------------------------------- */

static ll_model *load_model(const char *dir, ll_weight_type dtype) {
    ll_error err = {{0}};
    ll_model *m = ll_model_load_dtype(dir, dtype, &err);
    if (!m) fprintf(stderr, "layerlens: %s\n", err.msg);
    return m;
}

static json_t *load_request(const char *path, ll_error *err) {
    json_error_t je;
    json_t *j = !strcmp(path, "-") ? json_loadf(stdin, 0, &je) : json_load_file(path, 0, &je);
    if (!j) ll_errorf(err, "--request %s: %s (line %d)", path, je.text, je.line);
    else if (!json_is_object(j)) {
        json_decref(j);
        j = NULL;
        ll_errorf(err, "--request %s: expected a JSON object", path);
    }
    return j;
}

/* Loads the models, runs the request; 0 with *out, else the exit code. */
static int run_cli(cli *c, json_t **out) {
    ll_error err = {{0}};
    ll_model *gpt2 = NULL, *clip = NULL;
    ll_eval_local *local = NULL;
    ll_eval_cache *cache = NULL;
    ll_eval_request *req = NULL;
    int rc = 1;
    if (c->dtype == LL_WEIGHTS_BF16 && !ll_bf16_native())
        fprintf(stderr, "layerlens: warning: %s\n", LL_BF16_SLOW_WARNING);
    if ((c->gpt2 && !(gpt2 = load_model(c->gpt2, c->dtype))) ||
        (c->clip && !(clip = load_model(c->clip, c->dtype))))
        goto done;
    /* one in-process embedder: single-threaded OpenBLAS would waste the
     * other cores, so leave OpenBLAS's own threading in place */
    if (!(local = ll_eval_local_new(c->batch_tokens, &err)) ||
        !(cache = ll_eval_cache_new((size_t)1 << 30, &err))) {
        fprintf(stderr, "layerlens: %s\n", err.msg);
        goto done;
    }
    bar b = {ev_now_ms(), 0, 0};
    int show = !c->quiet && isatty(STDERR_FILENO);
    ll_eval_env env = {c->data, gpt2, clip, ll_eval_local_embed, local, c->batch_tokens, cache,
                       show ? bar_update : NULL, &b, NULL};
    if (!(req = ll_eval_request_parse(c->body, &env, &err))) {
        fprintf(stderr, "layerlens: %s\n", err.msg);
        rc = 2;
        goto done;
    }
    int r = ll_eval_run(&env, req, out, &err);
    if (b.shown) fputc('\n', stderr);
    if (r) {
        fprintf(stderr, "layerlens: %s\n", err.msg);
        goto done;
    }
    rc = 0;
done:
    ll_eval_request_free(req);
    ll_eval_cache_free(cache);
    ll_eval_local_free(local);
    ll_model_free(gpt2), ll_model_free(clip);
    return rc;
}

int ll_eval_main(int argc, char **argv) {
    cli c = {0};
    ll_error err = {{0}};
    c.body = json_object();
    int rc = parse_flags(argc, argv, &c, 0, &err);
    if (c.help) {
        json_decref(c.body);
        return fputs(usage_eval, stdout), 0;
    }
    if (rc == 0 && c.request) {
        json_t *file = load_request(c.request, &err);
        if (!file) rc = 1;
        else {
            /* flags add to (and override) the file's fields */
            json_object_update(file, c.body);
            json_decref(c.body);
            c.body = file;
        }
    }
    if (rc) {
        fprintf(stderr, "layerlens: %s\n%s", err.msg, rc == 2 ? usage_eval : "");
        json_decref(c.body);
        return rc;
    }
    json_t *out = NULL;
    rc = run_cli(&c, &out);
    json_decref(c.body);
    if (rc) return rc;
    if (json_dumpf(out, stdout, JSON_INDENT(2) | JSON_ENSURE_ASCII) || fputc('\n', stdout) == EOF)
        rc = 1;
    if (json_is_false(json_object_get(out, "passed"))) rc = 1;
    json_decref(out);
    return rc;
}

int ll_reproduce_main(int argc, char **argv) {
    cli c = {0};
    ll_error err = {{0}};
    c.body = json_pack("{s:s}", "tasks", "paper");
    int rc = parse_flags(argc, argv, &c, 1, &err);
    if (c.help) {
        json_decref(c.body);
        return fputs(usage_reproduce, stdout), 0;
    }
    if (rc) {
        fprintf(stderr, "layerlens: %s\n%s", err.msg, usage_reproduce);
        json_decref(c.body);
        return rc;
    }
    if (c.extra_rows) {
        const char *layers = json_string_value(json_object_get(c.body, "layers"));
        char spec[512];
        snprintf(spec, sizeof spec, "%s,final,projected", layers ? layers : "all");
        json_object_set_new(c.body, "layers", json_string(spec));
    }
    json_t *out = NULL;
    rc = run_cli(&c, &out);
    json_decref(c.body);
    if (rc) return rc;
    if (ll_eval_report_write(out, c.out, c.gpt2, c.clip, c.data, &err)) {
        fprintf(stderr, "layerlens: %s\n", err.msg);
        rc = 1;
    } else {
        printf("%s/report.md\n", c.out);
    }
    json_decref(out);
    return rc;
}
