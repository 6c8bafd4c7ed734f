/* test_eval_cli.c - `layerlens eval` and `layerlens reproduce` as scripts
 * use them, on the tiny checkpoints: the JSON on stdout equals what the
 * driver computes in-process, thresholds decide the exit status, usage
 * errors exit 2; reproduce writes report.md, results.json (the driver's
 * results) and one well-formed SVG per task with one polyline per model.
 * Well-formedness is checked by xmllint (Debian libxml2-utils). */
#include "testutil.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "layerlens/eval.h"

/* The model and data flags of every command here. */
static const char *model_flags(void) {
    static char flags[8192];
    snprintf(flags, sizeof flags, "--gpt2 %s --clip %s --data %s",
             tu_path("fixtures/models/gpt2-tiny"), tu_path("fixtures/models/clip-tiny"),
             tu_path("data/benchmarks"));
    return flags;
}

/* Tiny models: one OpenBLAS thread (a pool would only spin). */
static int run_cli(const char *args, char **out, int merge) {
    char cmd[12288];
    snprintf(cmd, sizeof cmd, "OPENBLAS_NUM_THREADS=1 %s %s", tu_bin(), args);
    return tu_run_sh(cmd, out, merge);
}

static json_t *parse(const char *s) {
    json_error_t je;
    json_t *j = json_loads(s, 0, &je);
    if (!j) fail_msg("not JSON (%s): %.300s", je.text, s);
    return j;
}

/* The same request in-process, through the library. */
static json_t *driver(const char *body_text) {
    ll_error err = {{0}};
    ll_model *g = ll_model_load(tu_path("fixtures/models/gpt2-tiny"), &err);
    ll_model *c = ll_model_load(tu_path("fixtures/models/clip-tiny"), &err);
    assert_non_null(g);
    assert_non_null(c);
    ll_eval_local *local = ll_eval_local_new(0, &err);
    ll_eval_env env = {tu_path("data/benchmarks"), g, c, ll_eval_local_embed, local, 0, NULL,
                       NULL, NULL, NULL};
    json_t *body = parse(body_text), *out = NULL;
    ll_eval_request *req = ll_eval_request_parse(body, &env, &err);
    if (!req) fail_msg("%s", err.msg);
    if (ll_eval_run(&env, req, &out, &err)) fail_msg("%s", err.msg);
    ll_eval_request_free(req);
    json_decref(body);
    ll_eval_local_free(local);
    ll_model_free(g), ll_model_free(c);
    return out;
}

static void test_eval_json_and_thresholds(void **state) {
    (void)state;
    char args[12288], *out;
    snprintf(args, sizeof args, "eval %s --task rg65,valnorm --layers 0,2,4 --bootstrap 50 "
             "--threshold rg65:clip=0.05 --method word=plain", model_flags());
    assert_int_equal(run_cli(args, &out, 0), 0);
    json_t *j = parse(out);
    json_t *want = driver("{\"tasks\": [\"rg65\", \"valnorm\"], \"layers\": \"0,2,4\", "
                          "\"bootstrap\": 50, \"method\": {\"word\": \"plain\"}}");
    assert_true(json_equal(json_object_get(j, "results"), json_object_get(want, "results")));
    assert_true(json_equal(json_object_get(j, "comparisons"), json_object_get(want, "comparisons")));
    assert_true(json_is_true(json_object_get(j, "passed")));
    assert_string_equal(json_string_value(json_object_get(json_object_get(json_object_get(
                            json_object_get(j, "results"), "rg65"), "gpt2"), "variant")),
                        "gpt2_plain");
    json_decref(j), json_decref(want);
    free(out);

    /* a missed threshold: the JSON still comes, the exit status is 1 */
    snprintf(args, sizeof args, "eval %s --task rg65 --layers 1 --bootstrap 0 "
             "--threshold rg65:clip=0.9", model_flags());
    assert_int_equal(run_cli(args, &out, 0), 1);
    j = parse(out);
    assert_true(json_is_false(json_object_get(j, "passed")));
    json_decref(j);
    free(out);
}

static void test_eval_request_file_and_custom(void **state) {
    (void)state;
    const char *dir = tu_tmpdir();
    char path[4096], pairs[4096], args[16384], *out;
    snprintf(path, sizeof path, "%s/req.json", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("{\"tasks\": [\"selfsim_words\"], \"models\": [\"clip\"], \"layers\": [0, 4], "
          "\"method\": {\"selfsim_words\": \"reference\"}}", f);
    fclose(f);
    snprintf(pairs, sizeof pairs, "%s/pairs.tsv", dir);
    f = fopen(pairs, "w");
    fputs("cat\tdog\t8\nsun\tmoon\t6.5\r\ncar\ttree\t1\nred\tblue\t5\n", f);
    fclose(f);
    /* the file gives tasks/models/layers, the flags add custom pairs */
    snprintf(args, sizeof args, "eval %s --request %s --pairs %s --details", model_flags(), path,
             pairs);
    assert_int_equal(run_cli(args, &out, 0), 0);
    json_t *j = parse(out), *res = json_object_get(j, "results");
    assert_non_null(json_object_get(json_object_get(res, "selfsim_words"), "clip"));
    assert_null(json_object_get(json_object_get(res, "selfsim_words"), "gpt2"));
    json_t *cp = json_object_get(json_object_get(res, "custom_pairs"), "clip");
    assert_int_equal(json_integer_value(json_object_get(cp, "n")), 4);
    assert_int_equal(json_array_size(json_object_get(cp, "layers")), 2);
    json_decref(j);
    free(out);
    /* stdin as the request; stderr stays quiet when it is not a terminal */
    snprintf(args, sizeof args, "echo '{\"pairs\": [[\"a\", \"b\", 1], [\"c\", \"d\", 2], "
             "[\"e\", \"f\", 3]], \"layers\": [0]}' | OPENBLAS_NUM_THREADS=1 %s eval %s --request -", tu_bin(),
             model_flags());
    assert_int_equal(tu_run_sh(args, &out, 1), 0);
    assert_true(out[0] == '{'); /* no progress bar text before the JSON */
    j = parse(out);
    json_decref(j);
    free(out);
}

static void test_eval_usage_errors(void **state) {
    (void)state;
    char args[12288], *out;
    assert_int_equal(run_cli("eval --task rg65", &out, 1), 2);
    assert_non_null(strstr(out, "--gpt2"));
    free(out);
    snprintf(args, sizeof args, "eval %s --task rg66", model_flags());
    assert_int_equal(run_cli(args, &out, 1), 2);
    assert_non_null(strstr(out, "unknown task 'rg66'"));
    free(out);
    snprintf(args, sizeof args, "eval %s --task rg65 --threshold rg65clip", model_flags());
    assert_int_equal(run_cli(args, &out, 1), 2);
    assert_non_null(strstr(out, "TASK:MODEL=VALUE"));
    free(out);
    snprintf(args, sizeof args, "eval %s --task rg65 --method cls", model_flags());
    assert_int_equal(run_cli(args, &out, 1), 2);
    free(out);
    assert_int_equal(run_cli("eval --gpt2 /nonexistent --task rg65", &out, 1), 1);
    free(out);
    assert_int_equal(run_cli("eval --help", &out, 0), 0);
    assert_non_null(strstr(out, "--threshold"));
    free(out);
    assert_int_equal(run_cli("reproduce --gpt2 x", &out, 1), 2);
    free(out);
    assert_int_equal(run_cli("--help", &out, 0), 0);
    assert_non_null(strstr(out, "reproduce"));
    free(out);
}

/* Counts occurrences of needle in s. */
static int count(const char *s, const char *needle) {
    int n = 0;
    for (const char *p = s; (p = strstr(p, needle)); p += strlen(needle)) n++;
    return n;
}

static void check_svg(const char *dir, const char *task) {
    char path[4096], cmd[8192], *out;
    snprintf(path, sizeof path, "%s/%s.svg", dir, task);
    snprintf(cmd, sizeof cmd, "xmllint --noout '%s'", path);
    if (tu_run_sh(cmd, &out, 1) != 0) fail_msg("%s is not well-formed XML: %s", path, out);
    free(out);
    char *svg = tu_read_file(path, NULL);
    assert_non_null(svg);
    assert_non_null(strstr(svg, "<svg xmlns=\"http://www.w3.org/2000/svg\""));
    assert_int_equal(count(svg, "<polyline"), 2);
    assert_int_equal(count(svg, "<polyline class=\"model\" data-model=\"gpt2\""), 1);
    assert_int_equal(count(svg, "<polyline class=\"model\" data-model=\"clip\""), 1);
    /* five layers, one marker each per model */
    assert_true(count(svg, "<circle") == 10);
    free(svg);
}

static void test_reproduce(void **state) {
    (void)state;
    const char *dir = tu_tmpdir();
    char out_dir[4096], args[12288], *out;
    snprintf(out_dir, sizeof out_dir, "%s/report", dir);
    snprintf(args, sizeof args, "reproduce %s --out %s --bootstrap 100", model_flags(), out_dir);
    if (run_cli(args, &out, 1) != 0) fail_msg("reproduce failed: %s", out);
    free(out);
    char path[4200];
    snprintf(path, sizeof path, "%s/results.json", out_dir);
    json_error_t je;
    json_t *res = json_load_file(path, 0, &je);
    if (!res) fail_msg("results.json: %s", je.text);
    json_t *want = driver("{\"tasks\": \"paper\", \"bootstrap\": 100}");
    assert_true(json_equal(json_object_get(res, "results"), json_object_get(want, "results")));
    assert_true(json_equal(json_object_get(res, "comparisons"), json_object_get(want, "comparisons")));
    /* every paper task has its plot and its section in the report */
    snprintf(path, sizeof path, "%s/report.md", out_dir);
    char *md = tu_read_file(path, NULL);
    assert_non_null(md);
    for (int i = 0; ll_eval_paper_tasks[i]; i++) {
        const char *t = ll_eval_paper_tasks[i];
        assert_non_null(json_object_get(json_object_get(res, "results"), t));
        check_svg(out_dir, t);
        char needle[128];
        snprintf(needle, sizeof needle, "![%s](%s.svg)", t, t);
        assert_non_null(strstr(md, needle));
    }
    /* the paper's numbers are quoted beside ours */
    assert_non_null(strstr(md, "CLIP best .88"));
    assert_non_null(strstr(md, "0.659 0.737"));
    /* the reproduction draws selfsim_words' tokens as the paper does, and
     * says so with the seed and the three STS-B files it drew from */
    json_t *method = json_object_get(res, "method");
    assert_string_equal(json_string_value(json_object_get(method, "selfsim_words")), "sampled");
    assert_int_equal(json_integer_value(json_object_get(method, "selfsim_words_n")), 10000);
    assert_non_null(strstr(md, "Token selection `sampled`"));
    assert_non_null(strstr(md, "seed 20220522"));
    assert_non_null(strstr(md, "| stsb/sts-train.csv |"));
    free(md);
    json_decref(res), json_decref(want);
}

/* With a 12-layer result the paper's per-layer values are drawn too. */
static void test_svg_published_series(void **state) {
    (void)state;
    json_t *task = json_object();
    const char *models[] = {"gpt2", "clip"};
    for (int k = 0; k < 2; k++) {
        json_t *layers = json_array();
        for (int l = 0; l <= 12; l++)
            json_array_append_new(layers, json_pack("{s:i, s:f, s:[f, f]}", "layer", l, "score",
                                                    0.1 + 0.05 * l + 0.01 * k, "ci",
                                                    0.05 * l, 0.2 + 0.05 * l));
        json_array_append_new(layers, json_pack("{s:s, s:n, s:n}", "layer", "final", "score",
                                                "ci"));
        json_object_set_new(task, models[k], json_pack("{s:s, s:o}", "metric",
                                                       "self_similarity", "layers", layers));
    }
    ll_error err = {{0}};
    char *svg = ll_eval_svg("selfsim_words", task, &err);
    assert_non_null(svg);
    assert_int_equal(count(svg, "<polyline"), 2);
    assert_int_equal(count(svg, "<circle"), 26);        /* 13 layers x 2 models */
    assert_int_equal(count(svg, "<rect x="), 1 + 13 + 5); /* background, GPT-2 13, CLIP 5 */
    assert_int_equal(count(svg, "<polygon class=\"ci\""), 2);
    assert_null(strstr(svg, "not drawn"));
    const char *dir = tu_tmpdir();
    char path[4096], cmd[8192], *out;
    snprintf(path, sizeof path, "%s/s.svg", dir);
    FILE *f = fopen(path, "w");
    fputs(svg, f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "xmllint --noout '%s'", path);
    assert_int_equal(tu_run_sh(cmd, &out, 1), 0);
    free(out);
    free(svg);
    json_decref(task);
}

/* ---- weights/download-benchmarks.sh (never downloads here) ---------------- */

typedef struct manifest_row {
    char dest[128], repo[128], commit[64], path[256], sha[80];
} manifest_row;

/* The script's FILES table: dest|repo|commit|path|sha256 lines. */
static int read_manifest(const char *script, manifest_row *rows, int cap) {
    const char *p = strstr(script, "\nFILES='\n");
    assert_non_null(p);
    p += strlen("\nFILES='\n");
    int n = 0;
    while (*p && *p != '\'' && n < cap) {
        const char *nl = strchr(p, '\n');
        assert_non_null(nl);
        char line[1024];
        snprintf(line, sizeof line, "%.*s", (int)(nl - p), p);
        manifest_row *r = &rows[n++];
        char *f[5], *save = NULL;
        f[0] = strtok_r(line, "|", &save);
        for (int k = 1; k < 5; k++) f[k] = strtok_r(NULL, "|", &save);
        for (int k = 0; k < 5; k++) assert_non_null(f[k]);
        snprintf(r->dest, sizeof r->dest, "%s", f[0]);
        snprintf(r->repo, sizeof r->repo, "%s", f[1]);
        snprintf(r->commit, sizeof r->commit, "%s", f[2]);
        snprintf(r->path, sizeof r->path, "%s", f[3]);
        snprintf(r->sha, sizeof r->sha, "%s", f[4]);
        p = nl + 1;
    }
    return n;
}

static void test_download_benchmarks_script(void **state) {
    (void)state;
    const char *script = "weights/download-benchmarks.sh";
    char cmd[16384], *out;
    snprintf(cmd, sizeof cmd, "bash -n %s", script);
    if (tu_run_sh(cmd, &out, 1) != 0) fail_msg("bash -n: %s", out);
    free(out);

    /* the table names every data file of ../shared with the source and
     * checksum that SOURCES.md and eval-tiny.json give for it */
    char *text = tu_read_file(script, NULL), *sources = tu_read_file(
        tu_path("data/benchmarks/SOURCES.md"), NULL);
    assert_non_null(text);
    assert_non_null(sources);
    manifest_row rows[32];
    int n = read_manifest(text, rows, 32);
    json_t *ref = tu_load_json("fixtures/reference/eval-tiny.json");
    int n_ref = 0;
    for (int i = 0; i < n; i++) {
        manifest_row *r = &rows[i];
        char path[4400], *fname = strrchr(r->path, '/');
        assert_non_null(strstr(sources, r->repo));
        assert_non_null(strstr(sources, r->commit));
        assert_non_null(strstr(sources, fname + 1));
        assert_non_null(strstr(sources, r->sha));
        snprintf(path, sizeof path, "%s/%s", tu_path("data/benchmarks"), r->dest);
        size_t len;
        char *data = tu_read_file(path, &len), sha[65];
        if (!data) fail_msg("%s: not in ../shared/data/benchmarks", r->dest);
        ll_error err = {{0}};
        assert_int_equal(ll_sha256_hex(data, len, sha, &err), 0);
        free(data);
        if (strcmp(sha, r->sha)) fail_msg("%s: sha256 %s, the script says %s", r->dest, sha, r->sha);
        const char *key;
        json_t *f;
        snprintf(path, sizeof path, "data/benchmarks/%s", r->dest);
        json_object_foreach(json_object_get(ref, "data_files"), key, f)
            if (!strcmp(json_string_value(json_object_get(f, "path")), path)) {
                assert_string_equal(json_string_value(json_object_get(f, "sha256")), r->sha);
                n_ref++;
            }
    }
    printf("  %d files in the script, %d of them in eval-tiny.json data_files\n", n, n_ref);
    assert_int_equal(n_ref, (int)json_object_size(json_object_get(ref, "data_files")));
    json_decref(ref);
    free(sources);
    snprintf(cmd, sizeof cmd, "cd %s && find . -type f ! -name SOURCES.md | wc -l",
             tu_path("data/benchmarks"));
    assert_int_equal(tu_run_sh(cmd, &out, 0), 0);
    assert_int_equal(atoi(out), n);
    free(out);

    /* --check verifies a directory without the network */
    snprintf(cmd, sizeof cmd, "%s --check %s", script, tu_path("data/benchmarks"));
    assert_int_equal(tu_run_sh(cmd, &out, 1), 0);
    assert_non_null(strstr(out, "all benchmark files verified"));
    free(out);

    /* the download path against a local mirror of OWNER/REPO/COMMIT/PATH
     * (copies in a temporary directory), then a corrupted file */
    const char *tmp = tu_tmpdir();
    for (int i = 0; i < n; i++) {
        manifest_row *r = &rows[i];
        snprintf(cmd, sizeof cmd, "d='%s/mirror/%s/%s/%s' && mkdir -p \"$(dirname \"$d\")\" && "
                 "cp '%s/%s' \"$d\"", tmp, r->repo, r->commit, r->path,
                 tu_path("data/benchmarks"), r->dest);
        assert_int_equal(tu_run_sh(cmd, &out, 1), 0);
        free(out);
    }
    snprintf(cmd, sizeof cmd, "LAYERLENS_BENCH_BASE=file://%s/mirror %s %s/data", tmp, script, tmp);
    if (tu_run_sh(cmd, &out, 1) != 0) fail_msg("download from the mirror: %s", out);
    free(out);
    snprintf(cmd, sizeof cmd, "printf x >> %s/data/rg65.tsv && %s --check %s/data", tmp, script,
             tmp);
    assert_int_equal(tu_run_sh(cmd, &out, 1), 1);
    assert_non_null(strstr(out, "rg65.tsv has sha256"));
    free(out);

    /* unreachable: one clear message, the files to fetch by hand, nothing
     * half-written */
    snprintf(cmd, sizeof cmd, "LAYERLENS_BENCH_BASE=http://127.0.0.1:9 %s %s/offline", script,
             tmp);
    assert_int_equal(tu_run_sh(cmd, &out, 1), 1);
    assert_non_null(strstr(out, "offline?"));
    assert_non_null(strstr(out, "not fetched:"));
    assert_non_null(strstr(out, "--check"));
    free(out);
    snprintf(cmd, sizeof cmd, "find %s/offline -type f | wc -l", tmp);
    assert_int_equal(tu_run_sh(cmd, &out, 0), 0);
    assert_int_equal(atoi(out), 0);
    free(out);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    assert_int_equal(tu_run_sh(cmd, &out, 1), 0);
    free(out);
    free(text);
}

int main(void) {
    openblas_set_num_threads(1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_eval_json_and_thresholds),
        cmocka_unit_test(test_eval_request_file_and_custom),
        cmocka_unit_test(test_eval_usage_errors),
        cmocka_unit_test(test_reproduce),
        cmocka_unit_test(test_svg_published_series),
        cmocka_unit_test(test_download_benchmarks_script),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
