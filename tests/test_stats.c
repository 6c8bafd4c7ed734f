/* test_stats.c - the evaluation statistics: hand-worked cases, and the
 * per-layer results of eval-tiny.json recomputed from its stored per-item
 * values and the gold scores of our parsers. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "layerlens/benchmarks.h"
#include "layerlens/stats.h"

#define EPS 1e-15

/* ---- cosine ---------------------------------------------------------------- */

static void test_cosine_hand(void **state) {
    float a[] = {1, 2, 3}, b[] = {4, 5, 6};
    /* 32 / sqrt(14 * 77) */
    assert_true(fabs(ll_cosine(a, b, 3) - 0.9746318461970762) < EPS);
    float e1[] = {1, 0}, d[] = {1, 1};
    assert_true(fabs(ll_cosine(e1, d, 2) - sqrt(0.5)) < EPS);
    float e2[] = {0, 1};
    assert_true(ll_cosine(e1, e2, 2) == 0.0);
    assert_true(fabs(ll_norm(a, 3) - sqrt(14.0)) < EPS);
}

static void test_cosine_identical_and_opposite_exact(void **state) {
    ll_rng rng;
    ll_rng_seed(&rng, 7);
    float a[64], neg[64], copy[64];
    for (int trial = 0; trial < 200; trial++) {
        int n = 1 + (int)ll_rng_below(&rng, 64);
        for (int i = 0; i < n; i++) {
            /* values over many magnitudes, as hidden states have */
            double u = (double)(ll_rng_next(&rng) >> 11) / 9007199254740992.0;
            a[i] = (float)((u - 0.5) * pow(10, (int)ll_rng_below(&rng, 7) - 3));
            neg[i] = -a[i];
            copy[i] = a[i];
        }
        if (ll_norm(a, n) == 0) continue;
        assert_true(ll_cosine(a, copy, n) == 1.0);
        assert_true(ll_cosine(a, neg, n) == -1.0);
    }
}

static void test_cosine_symmetric(void **state) {
    ll_rng rng;
    ll_rng_seed(&rng, 11);
    float a[257], b[257];
    for (int trial = 0; trial < 200; trial++) {
        for (int i = 0; i < 257; i++) {
            a[i] = (float)((double)(ll_rng_next(&rng) >> 11) / 9007199254740992.0 - 0.5);
            b[i] = (float)((double)(ll_rng_next(&rng) >> 11) / 9007199254740992.0 - 0.3);
        }
        double ab = ll_cosine(a, b, 257), ba = ll_cosine(b, a, 257);
        assert_memory_equal(&ab, &ba, sizeof ab); /* bit-identical */
    }
}

static void test_cosine_zero_vector(void **state) {
    float z[] = {0, 0, 0}, a[] = {1, 2, 3};
    assert_true(ll_cosine(z, a, 3) == 0.0);
    assert_true(ll_cosine(a, z, 3) == 0.0);
    assert_true(ll_cosine(z, z, 3) == 0.0);
    assert_true(ll_cosine(a, a, 0) == 0.0);
}

/* ---- ranks and correlations -------------------------------------------------- */

static void check_ranks(const double *x, int n, const double *want) {
    double r[16];
    assert_int_equal(ll_rank_average(x, n, r), 0);
    for (int i = 0; i < n; i++) {
        if (r[i] != want[i]) fail_msg("rank %d: got %g, want %g", i, r[i], want[i]);
    }
}

static void test_ranks_ties_average(void **state) {
    check_ranks((double[]){10, 20, 20, 30}, 4, (double[]){1, 2.5, 2.5, 4});
    check_ranks((double[]){3, 1, 2}, 3, (double[]){3, 1, 2});
    check_ranks((double[]){5, 5, 5}, 3, (double[]){2, 2, 2});
    check_ranks((double[]){2, 1, 2, 3, 1, 2}, 6, (double[]){4, 1.5, 4, 6, 1.5, 4});
    /* -0.0 == 0.0: one tie, as in scipy */
    check_ranks((double[]){0.0, -1, -0.0}, 3, (double[]){2.5, 1, 2.5});
    /* NaN: last, never tied */
    check_ranks((double[]){NAN, 2, NAN, 1}, 4, (double[]){3, 2, 4, 1});
}

static void test_spearman_monotone_and_reversed(void **state) {
    double x[] = {1, 2, 3, 4, 5}, sq[] = {1, 4, 9, 16, 25}, rev[] = {9, 7, 5, 3, 1};
    ll_corr c;
    assert_int_equal(ll_spearman(x, sq, 5, &c), 0);
    assert_true(c.defined && c.r == 1.0 && c.n == 5);
    assert_int_equal(ll_spearman(x, rev, 5, &c), 0);
    assert_true(c.defined && c.r == -1.0);
    /* Pearson of x and x^2 is not 1: 60 / sqrt(10 * 374) */
    assert_int_equal(ll_pearson(x, sq, 5, &c), 0);
    assert_true(fabs(c.r - 0.9811049102515929) < EPS);
}

static void test_spearman_ties(void **state) {
    /* ranks x = 1 2.5 2.5 4, y = 1 2 3 4: r = 4.5 / sqrt(4.5 * 5) = 3/sqrt(10) */
    double x[] = {1, 2, 2, 3}, y[] = {1, 2, 3, 4};
    ll_corr c;
    assert_int_equal(ll_spearman(x, y, 4, &c), 0);
    assert_true(fabs(c.r - 0.9486832980505138) < EPS);
    /* symmetric in its arguments */
    ll_corr d;
    assert_int_equal(ll_spearman(y, x, 4, &d), 0);
    assert_true(fabs(c.r - d.r) < EPS);
    /* invariant under any strictly increasing transform */
    double xt[] = {-5, 0.25, 0.25, 1e6};
    assert_int_equal(ll_spearman(xt, y, 4, &d), 0);
    assert_true(c.r == d.r);
}

static void test_corr_undefined(void **state) {
    double x[] = {1, 2, 3, 4}, k[] = {2, 2, 2, 2}, nan_in[] = {1, NAN, 3, 4};
    ll_corr c;
    assert_int_equal(ll_spearman(x, k, 4, &c), 1);
    assert_false(c.defined);
    assert_true(c.r == 0 && c.reason && strstr(c.reason, "constant"));
    assert_false(c.ci_defined);
    assert_int_equal(ll_pearson(k, x, 4, &c), 1);
    assert_true(c.reason && strstr(c.reason, "first input is constant"));
    assert_int_equal(ll_pearson(x, k, 4, &c), 1);
    assert_true(strstr(c.reason, "second input is constant"));
    assert_int_equal(ll_spearman(x, x, 2, &c), 1);
    assert_true(strstr(c.reason, "fewer than 3") && c.n == 2);
    assert_int_equal(ll_pearson(x, x, 0, &c), 1);
    assert_int_equal(ll_spearman(x, nan_in, 4, &c), 1);
    assert_true(strstr(c.reason, "NaN"));
    assert_false(isnan(c.r));
    /* n = 3 is the smallest defined correlation, but has no interval */
    assert_int_equal(ll_pearson(x, x, 3, &c), 0);
    assert_true(c.defined && c.r == 1.0 && !c.ci_defined && c.reason);
}

static void test_fisher_ci(void **state) {
    /* r = 0.5, n = 28: se = 1/5, tanh(atanh(0.5) -/+ 1.959963984540054/5) */
    ll_corr c = {.n = 28, .defined = 1, .r = 0.5};
    ll_corr_fisher_ci(&c);
    assert_true(c.ci_defined);
    assert_true(fabs(c.ci_lo - 0.15602836252908595) < 1e-14);
    assert_true(fabs(c.ci_hi - 0.7358184794439376) < 1e-14);
    /* symmetric for -r */
    ll_corr m = {.n = 28, .defined = 1, .r = -0.5};
    ll_corr_fisher_ci(&m);
    assert_true(fabs(m.ci_lo + c.ci_hi) < 1e-15 && fabs(m.ci_hi + c.ci_lo) < 1e-15);
    /* r = +-1: a point */
    ll_corr one = {.n = 10, .defined = 1, .r = 1};
    ll_corr_fisher_ci(&one);
    assert_true(one.ci_defined && one.ci_lo == 1 && one.ci_hi == 1);
    one.r = -1;
    ll_corr_fisher_ci(&one);
    assert_true(one.ci_lo == -1 && one.ci_hi == -1);
    /* n <= 3: none */
    ll_corr small = {.n = 3, .defined = 1, .r = 0.2};
    ll_corr_fisher_ci(&small);
    assert_false(small.ci_defined);
    /* through ll_spearman: the interval brackets rho */
    double x[] = {1, 2, 3, 4, 5, 6, 7, 8}, y[] = {2, 1, 4, 3, 6, 5, 8, 7};
    assert_int_equal(ll_spearman(x, y, 8, &c), 0);
    assert_true(c.ci_defined && c.ci_lo < c.r && c.r < c.ci_hi);
    /* rho = 1 - 6 * 8 / (8 * 63) = 0.9047619... */
    assert_true(fabs(c.r - (1 - 6.0 * 8 / (8 * 63))) < EPS);
}

/* ---- effect size ------------------------------------------------------------- */

static void test_effect_size(void **state) {
    /* p = 1 2 3, u = 0 0 0: (2 - 0) / sqrt(8 / 5) = sqrt(2.5) */
    double p[] = {1, 2, 3}, u[] = {0, 0, 0}, es;
    assert_int_equal(ll_effect_size(p, 3, u, 3, &es), 0);
    assert_true(fabs(es - 1.5811388300841898) < EPS);
    assert_int_equal(ll_effect_size(u, 3, p, 3, &es), 0);
    assert_true(fabs(es + 1.5811388300841898) < EPS);
    assert_int_equal(ll_effect_size(u, 3, u, 3, &es), 1); /* sd = 0 */
    assert_true(es == 0);
    assert_int_equal(ll_effect_size(p, 3, u, 0, &es), 1);
}

/* ---- self-similarity ------------------------------------------------------- */

static void test_selfsim_hand(void **state) {
    /* e1, e2, e1+e2: cosines 0, 1/sqrt2, 1/sqrt2 -> sqrt(2)/3; norms 1, 1, sqrt2.
     * Centered on (2/3, 2/3): (1/3,-2/3), (-2/3,1/3), (1/3,1/3) with cosines
     * -4/5, -1/sqrt10, -1/sqrt10. */
    float rows[] = {1, 0, 0, 1, 1, 1};
    ll_selfsim_result p, c;
    ll_error err;
    assert_int_equal(ll_selfsim_rows(rows, 3, 2, &p, &c, &err), 0);
    assert_true(p.defined && p.n == 3 && p.n_zero == 0);
    assert_true(fabs(p.self_similarity - 0.47140452079103173) < EPS);
    assert_true(fabs(p.mean_norm - 1.1380711874576983) < EPS);
    assert_true(c.defined);
    assert_true(fabs(c.self_similarity - -0.4774851773445586) < EPS);
    assert_true(fabs(c.mean_norm - p.mean_norm) < EPS); /* norms are uncentered */
}

static void test_selfsim_zero_and_small(void **state) {
    /* e1, 0, e1: cosines 0, 1, 0 (zero vector -> 0, as ll_cosine) -> 1/3 */
    float rows[] = {1, 0, 0, 0, 1, 0};
    ll_selfsim_result p;
    ll_error err;
    assert_int_equal(ll_selfsim_rows(rows, 3, 2, &p, NULL, &err), 0);
    assert_true(p.n_zero == 1 && fabs(p.self_similarity - 1.0 / 3) < EPS);
    assert_int_equal(ll_selfsim_rows(rows, 1, 2, &p, NULL, &err), 0);
    assert_false(p.defined);
    assert_true(p.self_similarity == 0 && p.reason);
    ll_selfsim s;
    assert_int_equal(ll_selfsim_init(&s, 0, NULL, &err), -1);
    assert_true(strstr(err.msg, "dimension"));
}

/* The closed form against the definition (mean of the N(N-1)/2 pair
 * cosines), plain and centered, on pseudo-random vectors. */
static void test_selfsim_vs_pairwise(void **state) {
    enum { N = 60, D = 33 };
    float *x = malloc(sizeof(float) * N * D);
    ll_rng rng;
    ll_rng_seed(&rng, 3);
    for (int i = 0; i < N * D; i++)
        x[i] = (float)((double)(ll_rng_next(&rng) >> 11) / 9007199254740992.0 + 0.2 * (i % D == 0));

    ll_selfsim s;
    ll_error err;
    assert_int_equal(ll_selfsim_init(&s, D, NULL, &err), 0);
    double norm_sum = 0;
    for (int i = 0; i < N; i++) {
        ll_selfsim_add(&s, x + i * D);
        norm_sum += ll_norm(x + i * D, D);
    }
    ll_selfsim_result r;
    assert_int_equal(ll_selfsim_finish(&s, &r), 0);
    double mean[D];
    ll_selfsim_mean(&s, mean);
    ll_selfsim_free(&s);

    double pair = 0, cpair = 0;
    for (int i = 0; i < N; i++)
        for (int j = i + 1; j < N; j++) {
            pair += ll_cosine(x + i * D, x + j * D, D);
            double dot = 0, aa = 0, bb = 0;
            for (int k = 0; k < D; k++) {
                double a = x[i * D + k] - mean[k], b = x[j * D + k] - mean[k];
                dot += a * b, aa += a * a, bb += b * b;
            }
            cpair += dot / sqrt(aa * bb);
        }
    pair /= N * (N - 1) / 2.0;
    cpair /= N * (N - 1) / 2.0;
    assert_true(fabs(r.self_similarity - pair) < 1e-13);
    assert_true(fabs(r.mean_norm - norm_sum / N) < 1e-13);
    assert_true(pair > 0.5); /* the test data really is not centered */

    ll_selfsim_result p2, c2;
    assert_int_equal(ll_selfsim_rows(x, N, D, &p2, &c2, &err), 0);
    assert_true(p2.self_similarity == r.self_similarity);
    assert_true(fabs(c2.self_similarity - cpair) < 1e-13);
    /* centering: the sum of centered vectors is 0, so the mean cosine is
     * near -1/(N-1) for vectors of similar norms - and far from the plain one */
    assert_true(c2.self_similarity < 0.1);
    free(x);
}

/* ---- random numbers ------------------------------------------------------- */

static void test_rng_vectors(void **state) {
    /* splitmix64, seed 1234567: the published test sequence */
    uint64_t s = 1234567;
    const uint64_t sm[] = {6457827717110365317ull, 3203168211198807973ull,
                           9817491932198370423ull, 4593380528125082431ull,
                           16408922859458223821ull};
    for (int i = 0; i < 5; i++) assert_true(ll_splitmix64(&s) == sm[i]);
    /* xoshiro256** from the state {1, 2, 3, 4} (reference algorithm) */
    ll_rng r = {{1, 2, 3, 4}};
    const uint64_t xo[] = {11520ull, 0ull, 1509978240ull, 1215971899390074240ull};
    for (int i = 0; i < 4; i++) assert_true(ll_rng_next(&r) == xo[i]);
}

static void test_rng_below(void **state) {
    ll_rng r;
    ll_rng_seed(&r, 99);
    int count[7] = {0};
    for (int i = 0; i < 70000; i++) {
        uint64_t v = ll_rng_below(&r, 7);
        assert_true(v < 7);
        count[v]++;
    }
    /* 10000 expected each; 5 sigma is about 450 */
    for (int i = 0; i < 7; i++) assert_true(abs(count[i] - 10000) < 500);
    assert_true(ll_rng_below(&r, 1) == 0);
}

/* ---- paired bootstrap ---------------------------------------------------- */

static void make_scores(int n, double *gold, double *good, double *bad) {
    ll_rng r;
    ll_rng_seed(&r, 5);
    for (int i = 0; i < n; i++) {
        gold[i] = (double)(i % 17) + 0.5 * (i % 3);
        double e1 = (double)(ll_rng_next(&r) >> 11) / 9007199254740992.0;
        double e2 = (double)(ll_rng_next(&r) >> 11) / 9007199254740992.0;
        good[i] = gold[i] + 3 * e1;  /* strongly related to gold */
        bad[i] = gold[i] * 0.1 + 20 * e2; /* weakly related */
    }
}

static void test_bootstrap_properties(void **state) {
    enum { N = 200 };
    double gold[N], good[N], bad[N];
    make_scores(N, gold, good, bad);
    ll_bootstrap b1, b2, b3;
    ll_error err;
    assert_int_equal(ll_paired_bootstrap(LL_CORR_SPEARMAN, good, bad, gold, N, 0,
                                         LL_BOOTSTRAP_SEED, &b1, &err), 0);
    assert_int_equal(b1.n_resamples, LL_BOOTSTRAP_RESAMPLES);
    assert_int_equal(b1.n_valid, LL_BOOTSTRAP_RESAMPLES);
    ll_corr ca, cb;
    ll_spearman(good, gold, N, &ca);
    ll_spearman(bad, gold, N, &cb);
    assert_true(b1.observed == ca.r - cb.r);
    assert_true(b1.observed > 0.3);
    assert_true(b1.ci_lo > 0 && b1.ci_lo < b1.mean && b1.mean < b1.ci_hi);
    assert_true(fabs(b1.mean - b1.observed) < 0.05);
    /* same seed, same answer; another seed, another one */
    assert_int_equal(ll_paired_bootstrap(LL_CORR_SPEARMAN, good, bad, gold, N, 0,
                                         LL_BOOTSTRAP_SEED, &b2, &err), 0);
    assert_memory_equal(&b1, &b2, sizeof b1);
    assert_int_equal(ll_paired_bootstrap(LL_CORR_SPEARMAN, good, bad, gold, N, 0,
                                         1, &b3, &err), 0);
    assert_true(b3.ci_lo != b1.ci_lo);
    /* swapping the models negates everything */
    assert_int_equal(ll_paired_bootstrap(LL_CORR_SPEARMAN, bad, good, gold, N, 0,
                                         LL_BOOTSTRAP_SEED, &b3, &err), 0);
    assert_true(fabs(b3.mean + b1.mean) < 1e-12);
    assert_true(fabs(b3.ci_lo + b1.ci_hi) < 1e-12 && fabs(b3.ci_hi + b1.ci_lo) < 1e-12);
    /* a model against itself: every difference is exactly 0 */
    assert_int_equal(ll_paired_bootstrap(LL_CORR_PEARSON, good, good, gold, N, 50,
                                         LL_BOOTSTRAP_SEED, &b3, &err), 0);
    assert_true(b3.n_resamples == 50 && b3.mean == 0 && b3.ci_lo == 0 && b3.ci_hi == 0);
}

/* The documented procedure, step by step: per resample n draws of
 * ll_rng_below(n) from one generator seeded once, both correlations on the
 * drawn items, then numpy's linear percentiles of the sorted differences. */
static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void test_bootstrap_procedure(void **state) {
    enum { N = 12, R = 41 };
    double gold[N], a[N], b[N], ra[N], rb[N], rg[N], d[R];
    make_scores(N, gold, a, b);
    ll_rng rng;
    ll_rng_seed(&rng, 1234);
    int m = 0;
    for (int r = 0; r < R; r++) {
        for (int i = 0; i < N; i++) {
            int k = (int)ll_rng_below(&rng, N);
            ra[i] = a[k], rb[i] = b[k], rg[i] = gold[k];
        }
        ll_corr x, y;
        if (ll_pearson(ra, rg, N, &x) || ll_pearson(rb, rg, N, &y)) continue;
        d[m++] = x.r - y.r;
    }
    qsort(d, (size_t)m, sizeof *d, cmp_d);
    double pos = 0.025 * (m - 1);
    int lo = (int)pos;
    double want_lo = d[lo] + (pos - lo) * (d[lo + 1] - d[lo]);
    ll_bootstrap bs;
    ll_error err;
    assert_int_equal(ll_paired_bootstrap(LL_CORR_PEARSON, a, b, gold, N, R, 1234, &bs, &err), 0);
    assert_int_equal(bs.n_valid, m);
    assert_true(bs.ci_lo == want_lo);
}

static void test_bootstrap_errors(void **state) {
    double k[] = {1, 1, 1, 1}, x[] = {1, 2, 3, 4};
    ll_bootstrap b;
    ll_error err;
    assert_int_equal(ll_paired_bootstrap(LL_CORR_SPEARMAN, x, x, k, 4, 10, 1, &b, &err), -1);
    assert_true(strstr(err.msg, "undefined"));
    assert_int_equal(ll_paired_bootstrap(LL_CORR_SPEARMAN, x, x, x, 2, 10, 1, &b, &err), -1);
    assert_true(strstr(err.msg, "at least 3"));
}

/* ---- the reference: eval-tiny.json ------------------------------------------ */

static json_t *g_ref; /* loaded once, freed by the group teardown */

static json_t *eval_ref(void) {
    if (!g_ref) g_ref = tu_load_json("fixtures/reference/eval-tiny.json");
    return g_ref;
}

static ll_bench *load_task(const char *name) {
    ll_error err;
    const ll_task *t = ll_task_find(name);
    assert_non_null(t);
    ll_bench *b = ll_bench_load(tu_path("data/benchmarks"), t, &err);
    if (!b) fail_msg("%s", err.msg);
    return b;
}

static void json_doubles(const json_t *arr, double *out, int n) {
    assert_int_equal((int)json_array_size(arr), n);
    for (int i = 0; i < n; i++) out[i] = json_number_value(json_array_get(arr, (size_t)i));
}

/* For every variant and layer: corr(stored per-item values, our gold) against
 * the stored result. */
static double check_task(const char *task, const char *values_key, int pearson) {
    json_t *t = json_object_get(json_object_get(eval_ref(), "tasks"), task);
    assert_non_null(t);
    ll_bench *b = load_task(task);
    double *gold = malloc(sizeof(double) * b->n), *v = malloc(sizeof(double) * b->n);
    ll_bench_gold(b, gold);
    json_t *per = json_object_get(t, values_key), *res = json_object_get(t, "results");
    double worst = 0;
    const char *variant;
    json_t *layers;
    int checked = 0;
    json_object_foreach(per, variant, layers) {
        json_t *want = json_object_get(res, variant);
        assert_int_equal((int)json_array_size(layers), 5);
        for (size_t l = 0; l < 5; l++) {
            json_doubles(json_array_get(layers, l), v, b->n);
            ll_corr c;
            int rc = pearson ? ll_pearson(v, gold, b->n, &c) : ll_spearman(v, gold, b->n, &c);
            assert_int_equal(rc, 0);
            double d = fabs(c.r - json_number_value(json_array_get(want, l)));
            if (d > worst) worst = d;
            assert_true(c.ci_defined && c.ci_lo < c.r && c.r < c.ci_hi);
            checked++;
        }
    }
    assert_int_equal(checked, 15); /* 3 word variants, or 2 for stsb */
    print_message("%-12s %s worst |diff| %.3g over %d layer results\n", task,
                  pearson ? "pearson " : "spearman", worst, checked);
    free(gold);
    free(v);
    ll_bench_free(b);
    return worst;
}

static void test_reference_word_tasks(void **state) {
    tu_shared();
    const char *names[] = {"rg65", "ws353", "ws353_sim", "ws353_rel", "simlex999",
                           "simverb3500"};
    double worst = 0;
    for (int i = 0; i < 6; i++) {
        double w = check_task(names[i], "per_pair_cosines", 0);
        if (w > worst) worst = w;
    }
    assert_true(worst < 1e-12);
}

static void test_reference_valnorm(void **state) {
    tu_shared();
    assert_true(check_task("valnorm", "per_word_effect_sizes", 1) < 1e-12);
}

static void test_reference_stsb(void **state) {
    tu_shared();
    json_t *t = json_object_get(json_object_get(eval_ref(), "tasks"), "stsb");
    ll_bench *b = load_task("stsb");
    double *gold = malloc(sizeof(double) * b->n), *v = malloc(sizeof(double) * b->n);
    ll_bench_gold(b, gold);
    double worst = 0;
    const char *variants[] = {"clip", "gpt2"};
    int ones0 = 0;
    for (int k = 0; k < 2; k++) {
        json_t *layers = json_object_get(json_object_get(t, "per_pair_cosines"), variants[k]);
        json_t *want = json_object_get(json_object_get(t, "results"), variants[k]);
        for (size_t l = 0; l < 5; l++) {
            json_doubles(json_array_get(layers, l), v, b->n);
            if (l == 0)
                for (int i = 0; i < b->n; i++) ones0 += v[i] == 1.0;
            ll_corr c;
            assert_int_equal(ll_spearman(v, gold, b->n, &c), 0);
            double d = fabs(c.r - json_number_value(json_array_get(want, l)));
            if (d > worst) worst = d;
        }
    }
    /* the exact ties the reference keeps: 272 CLIP + 273 GPT-2 pairs at 1 */
    assert_int_equal(ones0, 272 + 273);
    print_message("stsb         spearman worst |diff| %.3g over 10 layer results\n", worst);
    assert_true(worst < 1e-12);
    free(gold);
    free(v);
    ll_bench_free(b);
}

static int teardown(void **state) {
    json_decref(g_ref);
    g_ref = NULL;
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cosine_hand),
        cmocka_unit_test(test_cosine_identical_and_opposite_exact),
        cmocka_unit_test(test_cosine_symmetric),
        cmocka_unit_test(test_cosine_zero_vector),
        cmocka_unit_test(test_ranks_ties_average),
        cmocka_unit_test(test_spearman_monotone_and_reversed),
        cmocka_unit_test(test_spearman_ties),
        cmocka_unit_test(test_corr_undefined),
        cmocka_unit_test(test_fisher_ci),
        cmocka_unit_test(test_effect_size),
        cmocka_unit_test(test_selfsim_hand),
        cmocka_unit_test(test_selfsim_zero_and_small),
        cmocka_unit_test(test_selfsim_vs_pairwise),
        cmocka_unit_test(test_rng_vectors),
        cmocka_unit_test(test_rng_below),
        cmocka_unit_test(test_bootstrap_properties),
        cmocka_unit_test(test_bootstrap_procedure),
        cmocka_unit_test(test_bootstrap_errors),
        cmocka_unit_test(test_reference_word_tasks),
        cmocka_unit_test(test_reference_valnorm),
        cmocka_unit_test(test_reference_stsb),
    };
    return cmocka_run_group_tests(tests, NULL, teardown);
}
