/* stats.h - the statistics of the evaluation: cosine similarity, Spearman and
 * Pearson correlation with 95% confidence intervals, self-similarity, the
 * ValNorm effect size and a paired bootstrap of two correlation scores.
 *
 * Everything is computed in float64 from float32 (vectors) or float64 (per
 * item scores) inputs, with the same definitions as scipy.stats 1.10:
 *
 *   cosine      dot(a, b) / sqrt(dot(a, a) * dot(b, b)), sums in double.
 *               Exactly 1 for element-wise identical vectors and bit-identical
 *               for (a, b) and (b, a): exact ties between items stay exact,
 *               which Spearman's average ranks depend on.
 *   pearson     scipy.stats.pearsonr(x, y)[0]
 *   spearman    scipy.stats.spearmanr(x, y)[0]: the Pearson correlation of the
 *               1-based ranks, ties sharing the average of their ranks.
 *   ci          95% interval by Fisher's z: z = atanh(r), se = 1/sqrt(n-3),
 *               [tanh(z - 1.959963984540054 se), tanh(z + 1.959963984540054 se)].
 *               For Spearman's rho the same formula is used (the usual large
 *               sample approximation; no Fieller or Bonett-Wright correction).
 *
 * Undefined results are values, never NaN: a correlation of fewer than 3
 * items, of a constant input or of an input holding NaN/infinity comes back
 * with defined = 0 and a reason sentence, so the JSON layer can write `null`
 * and the reason.
 *
 * Nothing here keeps global state; every function is thread-safe. */
#ifndef LAYERLENS_STATS_H
#define LAYERLENS_STATS_H

#include <stdint.h>

#include "layerlens/error.h"

/* ---- cosine ------------------------------------------------------------ */

/* Cosine similarity of two float vectors of length n, accumulated in double.
 * A zero vector (or n == 0) has no direction: the result is then 0, the value
 * that keeps means and self-similarities finite; callers that must flag it
 * check the norms (ll_norm) themselves.  Not clamped to [-1, 1]: like the
 * reference, nearly parallel vectors may give 1 +- 1 ulp. */
double ll_cosine(const float *a, const float *b, int n);
/* Euclidean norm of a float vector, accumulated in double. */
double ll_norm(const float *a, int n);

/* ---- correlations -------------------------------------------------------- */

/* 95% two-sided normal quantile used by every interval here. */
#define LL_Z95 1.959963984540054

typedef struct ll_corr {
    int n;              /* number of items */
    int defined;        /* 1 when r is a number */
    double r;           /* the correlation; 0 when !defined */
    int ci_defined;     /* 1 when [ci_lo, ci_hi] is a number (needs n > 3) */
    double ci_lo, ci_hi;
    const char *reason; /* static sentence when !defined or !ci_defined */
} ll_corr;

/* Both return 0 when out->r is defined, 1 when it is undefined (out->reason
 * says why), and -1 when memory ran out (ll_spearman only; out->reason says
 * so).  out is always fully written.  x and y are not modified. */
int ll_pearson(const double *x, const double *y, int n, ll_corr *out);
int ll_spearman(const double *x, const double *y, int n, ll_corr *out);

/* 1-based ranks of x[0..n) into ranks[0..n), ties sharing their average rank
 * (scipy.stats.rankdata(method="average")).  NaN does not belong in x
 * (the correlations refuse it); if present it ranks last, each NaN alone.
 * Returns -1 when memory ran out. */
int ll_rank_average(const double *x, int n, double *ranks);

/* Fisher-z interval of r over n items into out->ci_*; sets ci_defined (and a
 * reason when it is 0: n <= 3 or r not defined).  For r = +-1 the interval is
 * the single point [r, r].  Called by ll_pearson and ll_spearman. */
void ll_corr_fisher_ci(ll_corr *c);

/* ---- ValNorm effect size ------------------------------------------------- */

/* es = (mean(p) - mean(u)) / std(p and u together, ddof = 1), the WEAT
 * single-word effect size of ValNorm.  Returns 0 and *out, or 1 (undefined,
 * *out = 0) when fewer than 2 values in all, a group is empty or the
 * standard deviation is 0. */
int ll_effect_size(const double *p, int np, const double *u, int nu,
                   double *out);

/* ---- self-similarity ----------------------------------------------------- */

/* Mean pairwise cosine of N vectors over the N(N-1)/2 pairs i < j, computed
 * in O(N d) as (|sum_i u_i|^2 - N) / (N (N-1)) with unit vectors u_i in
 * double.  A zero vector has u = 0 (cosine 0 with everything, as ll_cosine),
 * which makes the formula (|sum u|^2 - (N - n_zero)) / (N (N-1)).
 *
 * An accumulator, so the caller can stream rows:
 *   ll_selfsim s;
 *   ll_selfsim_init(&s, d, NULL, err);      // or a mean vector, see below
 *   for each row: ll_selfsim_add(&s, row);
 *   ll_selfsim_finish(&s, &res);
 *   ll_selfsim_free(&s);
 *
 * The mean-centered self-similarity (the cosines of x_i - mean) needs the
 * mean first, so it is a second pass: ll_selfsim_mean() of the first
 * accumulator gives the mean vector, and an accumulator initialised with it
 * subtracts it from every row it is given.  ll_selfsim_rows() does both
 * passes over rows held in memory. */
typedef struct ll_selfsim {
    int dim;
    long n;            /* rows added */
    long n_zero;       /* rows whose (centered) norm was 0 */
    double sum_norm;   /* sum of the (uncentered) row norms */
    double *sum_unit;  /* [dim] sum of u_i */
    double *sum_raw;   /* [dim] sum of the rows, for the mean vector */
    double *center;    /* [dim] subtracted before normalising, or NULL */
    double *scratch;   /* [dim] the current centered row */
} ll_selfsim;

typedef struct ll_selfsim_result {
    long n;                 /* vectors */
    long n_zero;            /* zero vectors among them (after centering) */
    int defined;            /* needs n >= 2 */
    double self_similarity; /* mean pairwise cosine, 0 when !defined */
    double mean_norm;       /* mean of |x_i| (uncentered), 0 when n == 0 */
    const char *reason;     /* when !defined */
} ll_selfsim_result;

/* center: NULL, or dim doubles copied into the accumulator. */
int ll_selfsim_init(ll_selfsim *s, int dim, const double *center, ll_error *err);
void ll_selfsim_add(ll_selfsim *s, const float *row);
/* Returns 0 (defined) or 1 (undefined: fewer than 2 rows). */
int ll_selfsim_finish(const ll_selfsim *s, ll_selfsim_result *out);
/* The mean of the rows added so far into mean[dim] (zeros when none). */
void ll_selfsim_mean(const ll_selfsim *s, double *mean);
void ll_selfsim_free(ll_selfsim *s);

/* Both passes over rows[n][dim] (row-major): plain into *plain, centered on
 * the rows' mean into *centered (either may be NULL). */
int ll_selfsim_rows(const float *rows, int n, int dim, ll_selfsim_result *plain,
                    ll_selfsim_result *centered, ll_error *err);

/* ---- random numbers ---------------------------------------------------- */

/* xoshiro256** seeded through splitmix64: small, fast, and the same stream on
 * every platform, so seeded results reproduce anywhere. */
typedef struct ll_rng {
    uint64_t s[4];
} ll_rng;

void ll_rng_seed(ll_rng *r, uint64_t seed);
uint64_t ll_rng_next(ll_rng *r);
/* Uniform integer in [0, bound) without modulo bias; bound > 0. */
uint64_t ll_rng_below(ll_rng *r, uint64_t bound);
/* One step of splitmix64 (advances *state); exposed for its test vectors. */
uint64_t ll_splitmix64(uint64_t *state);

/* ---- paired bootstrap ---------------------------------------------------- */

typedef enum ll_corr_kind { LL_CORR_SPEARMAN, LL_CORR_PEARSON } ll_corr_kind;

#define LL_BOOTSTRAP_RESAMPLES 1000
#define LL_BOOTSTRAP_SEED 20220522u /* fixed so reports are reproducible */

typedef struct ll_bootstrap {
    int n;            /* items */
    int n_resamples;  /* resamples drawn */
    int n_valid;      /* resamples where both correlations were defined */
    double observed;  /* corr(a, gold) - corr(b, gold) on all items */
    double mean;      /* mean of the valid resampled differences */
    double ci_lo;     /* 2.5th and 97.5th percentiles of those differences, */
    double ci_hi;     /* linear interpolation (numpy's default) */
} ll_bootstrap;

/* Paired bootstrap of corr(a, gold) - corr(b, gold) over the same n items
 * (a and b: the two models' per-item scores, e.g. cosines at their best
 * layers).  Each resample draws n item indices with replacement and applies
 * them to a, b and gold alike.  Resamples in which either correlation is
 * undefined (e.g. all drawn golds equal) are left out and counted.  Fails
 * when the correlations on all items are undefined or no resample is valid.
 * n_resamples <= 0 means LL_BOOTSTRAP_RESAMPLES. */
int ll_paired_bootstrap(ll_corr_kind kind, const double *a, const double *b,
                        const double *gold, int n, int n_resamples,
                        uint64_t seed, ll_bootstrap *out, ll_error *err);

#endif
