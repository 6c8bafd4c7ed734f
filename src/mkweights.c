/* mkweights.c - random checkpoints of the real shapes (see mkweights.h).
 *
 * Initialisation follows Hugging Face's _init_weights (matrices and
 * embeddings N(0, 0.02), biases 0, LayerNorm weight 1 / bias 0), drawn from
 * a seeded splitmix64 + Box-Muller generator so a seed always gives the same
 * file on every machine. */
#include "layerlens/mkweights.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "layerlens/config.h"
#include "layerlens/safetensors.h"

static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* uniform in (0, 1] */
static double uniform(uint64_t *s) {
    return ((splitmix64(s) >> 11) + 1) * (1.0 / 9007199254740992.0);
}

static void fill_normal(float *p, size_t n, double std, uint64_t *s) {
    for (size_t i = 0; i < n; i += 2) {
        double r = sqrt(-2.0 * log(uniform(s))), th = 2 * M_PI * uniform(s);
        p[i] = (float)(std * r * cos(th));
        if (i + 1 < n) p[i + 1] = (float)(std * r * sin(th));
    }
}

static void fill_const(float *p, size_t n, float v) {
    for (size_t i = 0; i < n; i++) p[i] = v;
}

typedef struct tensor_list {
    ll_st_out *t;
    float **bufs;
    char **names;
    size_t n, cap;
} tensor_list;

typedef enum { INIT_NORMAL, INIT_ZERO, INIT_ONE } init_kind;

static int add(tensor_list *l, const char *name, int ndim, int64_t d0, int64_t d1,
               init_kind init, uint64_t *rng, ll_error *err) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 64;
        ll_st_out *t = realloc(l->t, cap * sizeof *t);
        if (t) l->t = t;
        float **b = realloc(l->bufs, cap * sizeof *b);
        if (b) l->bufs = b;
        char **nm = realloc(l->names, cap * sizeof *nm);
        if (nm) l->names = nm;
        if (!t || !b || !nm) return ll_errorf(err, "out of memory");
        l->cap = cap;
    }
    size_t count = (size_t)d0 * (size_t)(ndim == 2 ? d1 : 1);
    float *buf = malloc(count * sizeof(float));
    char *nm = strdup(name);
    if (!buf || !nm) {
        free(buf), free(nm);
        return ll_errorf(err, "out of memory for tensor %s", name);
    }
    if (init == INIT_NORMAL) fill_normal(buf, count, 0.02, rng);
    else fill_const(buf, count, init == INIT_ONE ? 1.0f : 0.0f);
    ll_st_out *o = &l->t[l->n];
    memset(o, 0, sizeof *o);
    o->name = nm, o->ndim = ndim, o->shape[0] = d0, o->shape[1] = d1, o->data = buf;
    l->bufs[l->n] = buf, l->names[l->n] = nm;
    l->n++;
    return 0;
}

static void list_free(tensor_list *l) {
    for (size_t i = 0; i < l->n; i++) free(l->bufs[i]), free(l->names[i]);
    free(l->t), free(l->bufs), free(l->names);
}

#define ADD(name, nd, a, b, init) \
    if (add(l, name, nd, a, b, init, rng, err)) return -1

static int gpt2_tensors(tensor_list *l, const ll_config *c, uint64_t *rng, ll_error *err) {
    long C = c->width, F = c->ffn;
    char n[128];
    ADD("wte.weight", 2, c->vocab, C, INIT_NORMAL);
    ADD("wpe.weight", 2, c->n_ctx, C, INIT_NORMAL);
    for (int i = 0; i < c->n_layer; i++) {
#define L(s) (snprintf(n, sizeof n, "h.%d.%s", i, s), n)
        ADD(L("ln_1.weight"), 1, C, 0, INIT_ONE);
        ADD(L("ln_1.bias"), 1, C, 0, INIT_ZERO);
        ADD(L("attn.c_attn.weight"), 2, C, 3 * C, INIT_NORMAL);
        ADD(L("attn.c_attn.bias"), 1, 3 * C, 0, INIT_ZERO);
        ADD(L("attn.c_proj.weight"), 2, C, C, INIT_NORMAL);
        ADD(L("attn.c_proj.bias"), 1, C, 0, INIT_ZERO);
        ADD(L("ln_2.weight"), 1, C, 0, INIT_ONE);
        ADD(L("ln_2.bias"), 1, C, 0, INIT_ZERO);
        ADD(L("mlp.c_fc.weight"), 2, C, F, INIT_NORMAL);
        ADD(L("mlp.c_fc.bias"), 1, F, 0, INIT_ZERO);
        ADD(L("mlp.c_proj.weight"), 2, F, C, INIT_NORMAL);
        ADD(L("mlp.c_proj.bias"), 1, C, 0, INIT_ZERO);
#undef L
    }
    ADD("ln_f.weight", 1, C, 0, INIT_ONE);
    ADD("ln_f.bias", 1, C, 0, INIT_ZERO);
    return 0;
}

static int clip_tensors(tensor_list *l, const ll_config *c, uint64_t *rng, ll_error *err) {
    long C = c->width, F = c->ffn;
    char n[160];
    ADD("text_model.embeddings.token_embedding.weight", 2, c->vocab, C, INIT_NORMAL);
    ADD("text_model.embeddings.position_embedding.weight", 2, c->n_ctx, C, INIT_NORMAL);
    for (int i = 0; i < c->n_layer; i++) {
#define L(s) (snprintf(n, sizeof n, "text_model.encoder.layers.%d.%s", i, s), n)
        ADD(L("layer_norm1.weight"), 1, C, 0, INIT_ONE);
        ADD(L("layer_norm1.bias"), 1, C, 0, INIT_ZERO);
        static const char *const proj[] = {"q_proj", "k_proj", "v_proj", "out_proj"};
        for (int p = 0; p < 4; p++) {
            char w[64], b[64];
            snprintf(w, sizeof w, "self_attn.%s.weight", proj[p]);
            snprintf(b, sizeof b, "self_attn.%s.bias", proj[p]);
            ADD(L(w), 2, C, C, INIT_NORMAL);
            ADD(L(b), 1, C, 0, INIT_ZERO);
        }
        ADD(L("layer_norm2.weight"), 1, C, 0, INIT_ONE);
        ADD(L("layer_norm2.bias"), 1, C, 0, INIT_ZERO);
        ADD(L("mlp.fc1.weight"), 2, F, C, INIT_NORMAL);
        ADD(L("mlp.fc1.bias"), 1, F, 0, INIT_ZERO);
        ADD(L("mlp.fc2.weight"), 2, C, F, INIT_NORMAL);
        ADD(L("mlp.fc2.bias"), 1, C, 0, INIT_ZERO);
#undef L
    }
    ADD("text_model.final_layer_norm.weight", 1, C, 0, INIT_ONE);
    ADD("text_model.final_layer_norm.bias", 1, C, 0, INIT_ZERO);
    ADD("text_projection.weight", 2, c->proj_dim, C, INIT_NORMAL);
    return 0;
}
#undef ADD

static int copy_file(const char *from_dir, const char *to_dir, const char *name,
                     ll_error *err) {
    char src[4096], dst[4096], buf[1 << 16];
    snprintf(src, sizeof src, "%s/%s", from_dir, name);
    snprintf(dst, sizeof dst, "%s/%s", to_dir, name);
    FILE *in = fopen(src, "rb");
    if (!in) return ll_errorf(err, "%s: %s", src, strerror(errno));
    FILE *out = fopen(dst, "wb");
    if (!out) {
        fclose(in);
        return ll_errorf(err, "%s: %s", dst, strerror(errno));
    }
    size_t n;
    int rc = 0;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        if (fwrite(buf, 1, n, out) != n) {
            rc = ll_errorf(err, "%s: %s", dst, strerror(errno));
            break;
        }
    fclose(in);
    if (fclose(out) && !rc) rc = ll_errorf(err, "%s: %s", dst, strerror(errno));
    return rc;
}

static void full_size(ll_config *c) {
    if (c->arch == LL_ARCH_GPT2) {
        c->width = 768, c->n_layer = 12, c->n_head = 12, c->ffn = 3072;
        c->n_ctx = 1024, c->vocab = 50257;
    } else {
        c->width = 512, c->n_layer = 12, c->n_head = 8, c->ffn = 2048;
        c->n_ctx = 77, c->vocab = 49408, c->proj_dim = 512;
    }
    c->ln_eps = 1e-5f;
}

int ll_mkweights(const char *like_dir, ll_preset preset, uint64_t seed,
                 const char *out_dir, ll_error *err) {
    char path[4096];
    ll_config cfg;
    snprintf(path, sizeof path, "%s/config.json", like_dir);
    if (ll_config_load(path, &cfg, err)) return -1;
    if (preset == LL_PRESET_FULL) full_size(&cfg);
    if (mkdir(out_dir, 0755) && errno != EEXIST)
        return ll_errorf(err, "%s: %s", out_dir, strerror(errno));
    if (copy_file(like_dir, out_dir, "vocab.json", err) ||
        copy_file(like_dir, out_dir, "merges.txt", err))
        return -1;
    snprintf(path, sizeof path, "%s/config.json", out_dir);
    if (ll_config_write(path, &cfg, err)) return -1;
    tensor_list l = {0};
    uint64_t rng = seed;
    int rc = (cfg.arch == LL_ARCH_GPT2 ? gpt2_tensors : clip_tensors)(&l, &cfg, &rng, err);
    if (!rc) {
        snprintf(path, sizeof path, "%s/model.safetensors", out_dir);
        rc = ll_st_write(path, l.t, l.n, err);
    }
    list_free(&l);
    if (rc) return -1;
    snprintf(path, sizeof path, "%s/layerlens-demo.json", out_dir);
    FILE *f = fopen(path, "w");
    if (!f) return ll_errorf(err, "%s: %s", path, strerror(errno));
    fprintf(f, "{\"demo\": true, \"preset\": \"%s\", \"seed\": %llu, \"like\": \"%s\"}\n",
            preset == LL_PRESET_FULL ? "full" : "tiny", (unsigned long long)seed, like_dir);
    if (fclose(f)) return ll_errorf(err, "%s: %s", path, strerror(errno));
    return 0;
}

int ll_is_demo_dir(const char *dir) {
    char path[4096];
    snprintf(path, sizeof path, "%s/layerlens-demo.json", dir);
    return access(path, F_OK) == 0;
}
