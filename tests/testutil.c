/* testutil.c - see testutil.h. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "layerlens/blas.h"

/* Test programs run the OpenBLAS kernels the server runs (blas.h): glibc
 * passes argc/argv to constructors, which run after OpenBLAS is loaded. */
__attribute__((constructor)) static void tu_select_kernels(int argc, char **argv) {
    (void)argc;
    ll_blas_select_kernels(argv);
}

const char *tu_shared(void) {
    static char dir[4096];
    const char *env = getenv("LAYERLENS_SHARED");
    snprintf(dir, sizeof dir, "%s", env && *env ? env : "../shared");
    char probe[4200];
    snprintf(probe, sizeof probe, "%s/fixtures/README.md", dir);
    struct stat st;
    if (stat(probe, &st) == 0) return dir;
    const char *ci = getenv("CI");
    if (ci && strcmp(ci, "true") == 0) {
        fail_msg("shared fixtures not found at '%s' (set LAYERLENS_SHARED); "
                 "under CI this is a failure", dir);
    }
    fprintf(stderr, "note: shared fixtures not found at '%s' "
                    "(set LAYERLENS_SHARED); skipping\n", dir);
    skip();
    return NULL;
}

const char *tu_path(const char *rel) {
    static char bufs[8][4200];
    static int next;
    char *b = bufs[next++ % 8];
    snprintf(b, sizeof bufs[0], "%s/%s", tu_shared(), rel);
    return b;
}

json_t *tu_load_json(const char *rel) {
    json_error_t je;
    const char *p = tu_path(rel);
    json_t *j = json_load_file(p, 0, &je);
    if (!j) fail_msg("%s: %s (line %d)", p, je.text, je.line);
    return j;
}

char *tu_read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    size_t r;
    while (buf && (r = fread(buf + n, 1, cap - n, f)) > 0) {
        n += r;
        if (n == cap) {
            char *nb = realloc(buf, 2 * cap + 1);
            if (!nb) { free(buf); buf = NULL; break; }
            buf = nb;
            cap *= 2;
        }
    }
    fclose(f);
    if (!buf) return NULL;
    buf[n] = 0;
    if (len) *len = n;
    return buf;
}

static int flatten(const json_t *j, double *out, size_t n, size_t *k) {
    if (json_is_array(j)) {
        size_t i;
        json_t *v;
        json_array_foreach(j, i, v) if (flatten(v, out, n, k)) return -1;
        return 0;
    }
    if (!json_is_number(j) || *k >= n) return -1;
    out[(*k)++] = json_number_value(j);
    return 0;
}

float *tu_rand_floats(size_t n, unsigned *seed, float scale) {
    float *p = malloc((n ? n : 1) * sizeof *p);
    assert_non_null(p);
    for (size_t i = 0; i < n; i++) {
        *seed = *seed * 1664525u + 1013904223u;
        p[i] = scale * ((float)(*seed >> 8) / 16777216.0f - 0.5f);
    }
    return p;
}

double tu_max_abs_diff(const float *got, const json_t *want, size_t n) {
    double *w = malloc((n ? n : 1) * sizeof *w);
    size_t k = 0;
    double worst = INFINITY;
    if (w && flatten(want, w, n, &k) == 0 && k == n) {
        worst = 0;
        for (size_t i = 0; i < n; i++) {
            double d = fabs((double)got[i] - w[i]);
            if (!(d <= worst)) worst = d; /* NaN propagates as NaN */
        }
    }
    free(w);
    return worst;
}

const char *tu_tmpdir(void) {
    static char dirs[4][4200];
    static int next;
    char *d = dirs[next++ % 4];
    const char *t = getenv("TMPDIR");
    snprintf(d, sizeof dirs[0], "%s/layerlens-test-XXXXXX", t && *t ? t : "/tmp");
    if (!mkdtemp(d)) fail_msg("mkdtemp failed");
    return d;
}

int tu_run_sh(const char *cmd, char **out, int merge) {
    size_t len = strlen(cmd) + 16;
    char *full = malloc(len);
    assert_non_null(full);
    snprintf(full, len, "%s%s", cmd, merge ? " 2>&1" : " 2>/dev/null");
    FILE *p = popen(full, "r");
    free(full);
    assert_non_null(p);
    size_t cap = 1 << 20, n = 0, r;
    char *buf = malloc(cap + 1);
    assert_non_null(buf);
    while ((r = fread(buf + n, 1, cap - n, p)) > 0) {
        n += r;
        if (n == cap) {
            buf = realloc(buf, (cap *= 2) + 1);
            assert_non_null(buf);
        }
    }
    buf[n] = 0;
    int st = pclose(p);
    *out = buf;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

const char *tu_bin(void) {
    static char path[4096];
    const char *build = getenv("BUILD");
    snprintf(path, sizeof path, "%s/layerlens", build && *build ? build : "build");
    return path;
}
