/* test_model_workspace.c - one ll_workspace serving models of different
 * widths, as each server worker's does (one workspace per worker, shared by
 * the GPT-2 and CLIP lanes).
 *
 * The workspace grows to the largest batch it has seen and never shrinks.
 * Its buffers hold N x width floats, so a batch of a wider model must grow
 * them even when a narrower model already ran a batch of as many tokens
 * (full-size GPT-2 after CLIP: 768 x 3072 after 512 x 2048; the server died
 * of heap corruption when it did not).  A wider copy of the tiny GPT-2
 * (width 128, MLP 512, written by ll_mkweights) runs after the tiny one
 * (64, 256) on the same workspace, and its states must be bit-identical to
 * those computed on a fresh workspace: same kernels, same shapes, same
 * inputs, so the tolerance is 0 (under ASan the overflow itself is
 * reported). */
#include "testutil.h"

#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "layerlens/mkweights.h"
#include "layerlens/model.h"

#define N_SEQ 4
#define SEQ_LEN 16 /* 64 tokens: a multiple of 8, so no padding hides room */

/* A gpt2-tiny with n_embd = width, built under the temporary directory tmp. */
static ll_model *wide_gpt2(int width, const char *like) {
    char dir[4400], path[4500];
    json_t *cfg = tu_load_json("fixtures/models/gpt2-tiny/config.json");
    json_object_set_new(cfg, "n_embd", json_integer(width));
    snprintf(path, sizeof path, "%s/config.json", like);
    assert_int_equal(json_dump_file(cfg, path, 0), 0);
    json_decref(cfg);
    const char *tok_files[] = {"vocab.json", "merges.txt"};
    for (int i = 0; i < 2; i++) {
        char rel[256];
        snprintf(rel, sizeof rel, "fixtures/models/gpt2-tiny/%s", tok_files[i]);
        snprintf(path, sizeof path, "%s/%s", like, tok_files[i]);
        char *target = realpath(tu_path(rel), NULL); /* the link lives elsewhere */
        assert_non_null(target);
        assert_int_equal(symlink(target, path), 0);
        free(target);
    }
    snprintf(dir, sizeof dir, "%s/out", like);
    ll_error err = {{0}};
    if (ll_mkweights(like, LL_PRESET_TINY, 11, dir, &err)) fail_msg("%s", err.msg);
    ll_model *m = ll_model_load(dir, &err);
    if (!m) fail_msg("%s", err.msg);
    assert_int_equal(ll_model_config(m)->width, width);
    return m;
}

static ll_forward_req every_layer(const ll_model *m) {
    ll_forward_req req = {0};
    req.layers = (2ull << ll_model_config(m)->n_layer) - 1;
    req.want_raw_last = 1;
    return req;
}

static void forward_ok(const ll_model *m, ll_workspace *ws, const ll_seq *seqs,
                       ll_states *out) {
    ll_forward_req req = every_layer(m);
    ll_error err = {{0}};
    if (ll_forward(m, ws, seqs, N_SEQ, &req, out, &err)) fail_msg("%s", err.msg);
}

static void test_wider_model_after_narrower(void **state) {
    (void)state;
    tu_shared();
    char tmp[4300];
    snprintf(tmp, sizeof tmp, "%s", tu_tmpdir());
    ll_error err = {{0}};
    ll_model *narrow = ll_model_load(tu_path("fixtures/models/gpt2-tiny"), &err);
    if (!narrow) fail_msg("%s", err.msg);
    ll_model *wide = wide_gpt2(128, tmp);
    assert_true(ll_model_config(narrow)->width < ll_model_config(wide)->width);
    assert_true(ll_model_config(narrow)->ffn < ll_model_config(wide)->ffn);

    int32_t ids[N_SEQ][SEQ_LEN];
    ll_seq seqs[N_SEQ];
    for (int s = 0; s < N_SEQ; s++) {
        for (int t = 0; t < SEQ_LEN; t++) ids[s][t] = (int32_t)(101 + 37 * s + 13 * t);
        seqs[s] = (ll_seq){ids[s], SEQ_LEN};
    }

    /* the reference: the wide model on a workspace of its own */
    ll_workspace *fresh = ll_workspace_new();
    ll_states want;
    forward_ok(wide, fresh, seqs, &want);

    /* the narrow model grows the shared workspace to 64 tokens first */
    ll_workspace *shared = ll_workspace_new();
    ll_states st;
    forward_ok(narrow, shared, seqs, &st);
    ll_states_free(&st);
    ll_states got;
    forward_ok(wide, shared, seqs, &got);

    size_t n = (size_t)want.n_tok * (size_t)want.width;
    assert_int_equal(got.n_tok, N_SEQ * SEQ_LEN);
    assert_int_equal(got.width, 128);
    for (int l = 0; l <= ll_model_config(wide)->n_layer; l++)
        assert_memory_equal(got.layer[l], want.layer[l], n * sizeof(float));
    assert_memory_equal(got.raw_last, want.raw_last, n * sizeof(float));

    /* and back: the narrow model on the grown workspace, same as fresh */
    ll_states again, fresh_narrow;
    ll_workspace *fresh2 = ll_workspace_new();
    forward_ok(narrow, shared, seqs, &again);
    forward_ok(narrow, fresh2, seqs, &fresh_narrow);
    size_t nn = (size_t)again.n_tok * (size_t)again.width;
    assert_memory_equal(again.raw_last, fresh_narrow.raw_last, nn * sizeof(float));

    ll_states_free(&want), ll_states_free(&got);
    ll_states_free(&again), ll_states_free(&fresh_narrow);
    ll_workspace_free(fresh), ll_workspace_free(fresh2), ll_workspace_free(shared);
    ll_model_free(narrow), ll_model_free(wide);
    char cmd[4400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    assert_int_equal(system(cmd), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wider_model_after_narrower),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
