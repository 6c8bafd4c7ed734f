/* stats.c - cosine, correlations, self-similarity, bootstrap (see stats.h). */
#include "layerlens/stats.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- cosine ------------------------------------------------------------ */

double ll_cosine(const float *a, const float *b, int n) {
    /* Each float*float product is exact in double (24+24 < 53 bits), so the
     * three sums are the only rounding, and they run in the same order for
     * (a, b) and (b, a): the result is symmetric bit for bit.  For a == b the
     * three sums are equal and sqrt(aa*aa) == aa exactly in IEEE arithmetic,
     * so the cosine is exactly 1. */
    double dot = 0, aa = 0, bb = 0;
    for (int i = 0; i < n; i++) {
        double x = a[i], y = b[i];
        dot += x * y;
        aa += x * x;
        bb += y * y;
    }
    double den = sqrt(aa * bb);
    if (!(den > 0)) return 0; /* a zero vector: no direction */
    return dot / den;
}

double ll_norm(const float *a, int n) {
    double s = 0;
    for (int i = 0; i < n; i++) s += (double)a[i] * a[i];
    return sqrt(s);
}

/* ---- correlations -------------------------------------------------------- */

static void corr_undefined(ll_corr *c, int n, const char *reason) {
    memset(c, 0, sizeof *c);
    c->n = n;
    c->reason = reason;
}

static int all_finite(const double *x, int n) {
    for (int i = 0; i < n; i++)
        if (!isfinite(x[i])) return 0;
    return 1;
}

static int is_constant(const double *x, int n) {
    for (int i = 1; i < n; i++)
        if (x[i] != x[0]) return 0;
    return 1;
}

static double mean_of(const double *x, int n) {
    double s = 0;
    for (int i = 0; i < n; i++) s += x[i];
    return s / n;
}

void ll_corr_fisher_ci(ll_corr *c) {
    c->ci_defined = 0;
    c->ci_lo = c->ci_hi = 0;
    if (!c->defined) return; /* keeps the reason of the correlation */
    if (c->n <= 3) {
        c->reason = "the confidence interval needs more than 3 items";
        return;
    }
    c->ci_defined = 1;
    if (c->r >= 1 || c->r <= -1) { /* atanh is infinite: a point interval */
        c->ci_lo = c->ci_hi = c->r;
        return;
    }
    double z = atanh(c->r), se = 1.0 / sqrt((double)c->n - 3);
    c->ci_lo = tanh(z - LL_Z95 * se);
    c->ci_hi = tanh(z + LL_Z95 * se);
}

/* The correlation itself, without the input checks of the public functions:
 * sum of centered products over the square root of the product of the sums of
 * squares.  Written like the cosine so that x == y gives exactly 1 and
 * x == -y exactly -1 (scipy's dot of normalised vectors can miss by an ulp,
 * then clips; the two agree within a few 1e-16). */
static int pearson_core(const double *x, const double *y, int n, ll_corr *out) {
    double mx = mean_of(x, n), my = mean_of(y, n);
    double sxx = 0, syy = 0, sxy = 0;
    for (int i = 0; i < n; i++) {
        double dx = x[i] - mx, dy = y[i] - my;
        sxx += dx * dx;
        syy += dy * dy;
        sxy += dx * dy;
    }
    double den = sqrt(sxx * syy);
    if (!(den > 0) || !isfinite(den)) {
        corr_undefined(out, n, "the spread of the values is too small or too "
                               "large to represent");
        return 1;
    }
    double r = sxy / den;
    if (r > 1) r = 1;
    if (r < -1) r = -1;
    memset(out, 0, sizeof *out);
    out->n = n;
    out->defined = 1;
    out->r = r;
    ll_corr_fisher_ci(out);
    return 0;
}

/* Checks shared by both correlations; 1 (and *out filled) when undefined. */
static int corr_inputs_undefined(const double *x, const double *y, int n,
                                 ll_corr *out) {
    if (n < 3) {
        corr_undefined(out, n < 0 ? 0 : n, "fewer than 3 items");
        return 1;
    }
    if (!all_finite(x, n) || !all_finite(y, n)) {
        corr_undefined(out, n, "an input value is NaN or infinite");
        return 1;
    }
    if (is_constant(x, n)) {
        corr_undefined(out, n, "the first input is constant");
        return 1;
    }
    if (is_constant(y, n)) {
        corr_undefined(out, n, "the second input is constant");
        return 1;
    }
    return 0;
}

int ll_pearson(const double *x, const double *y, int n, ll_corr *out) {
    if (corr_inputs_undefined(x, y, n, out)) return 1;
    return pearson_core(x, y, n, out);
}

typedef struct ranked {
    double v;
    int i;
} ranked;

static int ranked_cmp(const void *pa, const void *pb) {
    const ranked *a = pa, *b = pb;
    /* NaN sorts last, so the order stays total (qsort needs that) even for
     * inputs the callers were asked not to pass */
    int an = isnan(a->v), bn = isnan(b->v);
    if (an != bn) return an - bn;
    if (a->v < b->v) return -1;
    if (a->v > b->v) return 1;
    return (a->i > b->i) - (a->i < b->i); /* deterministic order of ties */
}

/* Ranks with a caller-provided scratch array of n entries. */
static void rank_with(const double *x, int n, double *ranks, ranked *tmp) {
    for (int i = 0; i < n; i++) tmp[i] = (ranked){x[i], i};
    qsort(tmp, (size_t)n, sizeof *tmp, ranked_cmp);
    for (int i = 0; i < n;) {
        int j = i + 1;
        while (j < n && tmp[j].v == tmp[i].v) j++;
        /* positions i..j-1 hold ranks i+1..j: their average, exact in double */
        double avg = 0.5 * ((double)i + 1 + (double)j);
        for (int k = i; k < j; k++) ranks[tmp[k].i] = avg;
        i = j;
    }
}

int ll_rank_average(const double *x, int n, double *ranks) {
    if (n <= 0) return 0;
    ranked *tmp = malloc((size_t)n * sizeof *tmp);
    if (!tmp) return -1;
    rank_with(x, n, ranks, tmp);
    free(tmp);
    return 0;
}

/* Spearman with scratch space: rx, ry of n doubles, tmp of n entries. */
static int spearman_with(const double *x, const double *y, int n, double *rx,
                         double *ry, ranked *tmp, ll_corr *out) {
    if (corr_inputs_undefined(x, y, n, out)) return 1;
    rank_with(x, n, rx, tmp);
    rank_with(y, n, ry, tmp);
    return pearson_core(rx, ry, n, out);
}

int ll_spearman(const double *x, const double *y, int n, ll_corr *out) {
    if (n < 3) return corr_inputs_undefined(x, y, n, out);
    double *r = malloc(2 * (size_t)n * sizeof *r);
    ranked *tmp = malloc((size_t)n * sizeof *tmp);
    int rc;
    if (!r || !tmp) {
        corr_undefined(out, n, "out of memory");
        rc = -1;
    } else {
        rc = spearman_with(x, y, n, r, r + n, tmp, out);
    }
    free(r);
    free(tmp);
    return rc;
}

/* ---- ValNorm effect size ------------------------------------------------- */

int ll_effect_size(const double *p, int np, const double *u, int nu,
                   double *out) {
    *out = 0;
    int n = np + nu;
    if (np < 1 || nu < 1 || n < 2) return 1;
    double sp = 0, su = 0;
    for (int i = 0; i < np; i++) sp += p[i];
    for (int i = 0; i < nu; i++) su += u[i];
    double mean = (sp + su) / n, ss = 0;
    for (int i = 0; i < np; i++) ss += (p[i] - mean) * (p[i] - mean);
    for (int i = 0; i < nu; i++) ss += (u[i] - mean) * (u[i] - mean);
    double sd = sqrt(ss / (n - 1));
    if (!(sd > 0) || !isfinite(sd)) return 1;
    double es = (sp / np - su / nu) / sd;
    if (!isfinite(es)) return 1;
    *out = es;
    return 0;
}

/* ---- self-similarity ----------------------------------------------------- */

int ll_selfsim_init(ll_selfsim *s, int dim, const double *center,
                    ll_error *err) {
    memset(s, 0, sizeof *s);
    if (dim <= 0) return ll_errorf(err, "self-similarity: dimension %d is not positive", dim);
    s->dim = dim;
    s->sum_unit = calloc((size_t)dim, sizeof(double));
    s->sum_raw = calloc((size_t)dim, sizeof(double));
    s->scratch = calloc((size_t)dim, sizeof(double));
    if (center) s->center = malloc((size_t)dim * sizeof(double));
    if (!s->sum_unit || !s->sum_raw || !s->scratch || (center && !s->center)) {
        ll_selfsim_free(s);
        return ll_errorf(err, "self-similarity: out of memory for %d dimensions", dim);
    }
    if (center) memcpy(s->center, center, (size_t)dim * sizeof(double));
    return 0;
}

void ll_selfsim_add(ll_selfsim *s, const float *row) {
    int d = s->dim;
    double *v = s->scratch, nn = 0, raw = 0;
    for (int k = 0; k < d; k++) {
        double x = row[k];
        s->sum_raw[k] += x;
        raw += x * x;
        v[k] = s->center ? x - s->center[k] : x;
        nn += v[k] * v[k];
    }
    s->n++;
    s->sum_norm += sqrt(raw);
    if (!(nn > 0)) { /* u = 0: cosine 0 with every other vector */
        s->n_zero++;
        return;
    }
    double inv = 1.0 / sqrt(nn);
    for (int k = 0; k < d; k++) s->sum_unit[k] += v[k] * inv;
}

int ll_selfsim_finish(const ll_selfsim *s, ll_selfsim_result *out) {
    memset(out, 0, sizeof *out);
    out->n = s->n;
    out->n_zero = s->n_zero;
    if (s->n > 0) out->mean_norm = s->sum_norm / (double)s->n;
    if (s->n < 2) {
        out->reason = "self-similarity needs at least 2 vectors";
        return 1;
    }
    double ss = 0;
    for (int k = 0; k < s->dim; k++) ss += s->sum_unit[k] * s->sum_unit[k];
    double n = (double)s->n, units = (double)(s->n - s->n_zero);
    out->defined = 1;
    out->self_similarity = (ss - units) / (n * (n - 1));
    return 0;
}

void ll_selfsim_mean(const ll_selfsim *s, double *mean) {
    for (int k = 0; k < s->dim; k++)
        mean[k] = s->n > 0 ? s->sum_raw[k] / (double)s->n : 0;
}

void ll_selfsim_free(ll_selfsim *s) {
    free(s->sum_unit);
    free(s->sum_raw);
    free(s->center);
    free(s->scratch);
    memset(s, 0, sizeof *s);
}

int ll_selfsim_rows(const float *rows, int n, int dim, ll_selfsim_result *plain,
                    ll_selfsim_result *centered, ll_error *err) {
    ll_selfsim a, b;
    if (ll_selfsim_init(&a, dim, NULL, err)) return -1;
    for (int i = 0; i < n; i++) ll_selfsim_add(&a, rows + (size_t)i * dim);
    if (plain) ll_selfsim_finish(&a, plain);
    if (centered) {
        double *mean = malloc((size_t)dim * sizeof *mean);
        if (!mean) {
            ll_selfsim_free(&a);
            return ll_errorf(err, "self-similarity: out of memory");
        }
        ll_selfsim_mean(&a, mean);
        int rc = ll_selfsim_init(&b, dim, mean, err);
        free(mean);
        if (rc) {
            ll_selfsim_free(&a);
            return -1;
        }
        for (int i = 0; i < n; i++) ll_selfsim_add(&b, rows + (size_t)i * dim);
        ll_selfsim_finish(&b, centered);
        ll_selfsim_free(&b);
    }
    ll_selfsim_free(&a);
    return 0;
}

/* ---- random numbers ---------------------------------------------------- */

uint64_t ll_splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void ll_rng_seed(ll_rng *r, uint64_t seed) {
    /* splitmix64 never yields four zero words, xoshiro's one bad state. */
    for (int i = 0; i < 4; i++) r->s[i] = ll_splitmix64(&seed);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t ll_rng_next(ll_rng *r) {
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

uint64_t ll_rng_below(ll_rng *r, uint64_t bound) {
    /* Reject the top partial block of 2^64 so every residue is equally
     * likely (the loop almost never runs twice). */
    uint64_t limit = UINT64_MAX - UINT64_MAX % bound;
    uint64_t x;
    do x = ll_rng_next(r);
    while (x >= limit);
    return x % bound;
}

/* ---- paired bootstrap ---------------------------------------------------- */

typedef struct corr_work {
    double *rx, *ry; /* ranks */
    ranked *tmp;
} corr_work;

static int corr_of(ll_corr_kind kind, const double *x, const double *y, int n,
                   corr_work *w, double *r) {
    ll_corr c;
    int rc = kind == LL_CORR_SPEARMAN ? spearman_with(x, y, n, w->rx, w->ry, w->tmp, &c)
                                      : ll_pearson(x, y, n, &c);
    *r = c.r;
    return rc;
}

static int cmp_double(const void *pa, const void *pb) {
    double a = *(const double *)pa, b = *(const double *)pb;
    return (a > b) - (a < b);
}

/* numpy.percentile's default (linear) on sorted v[0..m). */
static double percentile_sorted(const double *v, int m, double q) {
    double pos = q * (m - 1);
    int lo = (int)floor(pos);
    if (lo >= m - 1) return v[m - 1];
    double f = pos - lo;
    return v[lo] + f * (v[lo + 1] - v[lo]);
}

int ll_paired_bootstrap(ll_corr_kind kind, const double *a, const double *b,
                        const double *gold, int n, int n_resamples,
                        uint64_t seed, ll_bootstrap *out, ll_error *err) {
    memset(out, 0, sizeof *out);
    if (n_resamples <= 0) n_resamples = LL_BOOTSTRAP_RESAMPLES;
    out->n = n;
    out->n_resamples = n_resamples;
    if (n < 3) return ll_errorf(err, "bootstrap: %d items, at least 3 are needed", n);

    /* one block: 3 resampled columns, 2 rank columns, then the differences */
    double *buf = malloc((5 * (size_t)n + (size_t)n_resamples) * sizeof *buf);
    ranked *tmp = malloc((size_t)n * sizeof *tmp);
    if (!buf || !tmp) {
        free(buf);
        free(tmp);
        return ll_errorf(err, "bootstrap: out of memory for %d items", n);
    }
    double *ra = buf, *rb = ra + n, *rg = rb + n, *diff = buf + 5 * (size_t)n;
    corr_work w = {rg + n, rg + 2 * (size_t)n, tmp};
    int rc = 0;

    double sa, sb;
    if (corr_of(kind, a, gold, n, &w, &sa) || corr_of(kind, b, gold, n, &w, &sb)) {
        rc = ll_errorf(err, "bootstrap: a correlation on all %d items is undefined", n);
        goto done;
    }
    out->observed = sa - sb;

    ll_rng rng;
    ll_rng_seed(&rng, seed);
    int m = 0;
    double sum = 0;
    for (int r = 0; r < n_resamples; r++) {
        for (int i = 0; i < n; i++) {
            int k = (int)ll_rng_below(&rng, (uint64_t)n);
            ra[i] = a[k];
            rb[i] = b[k];
            rg[i] = gold[k];
        }
        if (corr_of(kind, ra, rg, n, &w, &sa) || corr_of(kind, rb, rg, n, &w, &sb))
            continue;
        diff[m++] = sa - sb;
        sum += sa - sb;
    }
    out->n_valid = m;
    if (m == 0) {
        rc = ll_errorf(err, "bootstrap: none of the %d resamples gave defined "
                            "correlations", n_resamples);
        goto done;
    }
    out->mean = sum / m;
    qsort(diff, (size_t)m, sizeof *diff, cmp_double);
    out->ci_lo = percentile_sorted(diff, m, 0.025);
    out->ci_hi = percentile_sorted(diff, m, 0.975);
done:
    free(buf);
    free(tmp);
    return rc;
}
