/* model.c - loading GPT-2 / CLIP text checkpoints and the forward pass.
 *
 * Both models are the same pre-LayerNorm causal transformer:
 *   x0 = tok_emb[ids] + pos_emb[0..T-1]
 *   per block:  x = x + proj(attn(ln1(x)));  x = x + fc2(act(fc1(ln2(x))))
 * and differ only in the activation (gelu_new / quick_gelu), in what follows
 * the last block (GPT-2: ln_f is part of hidden_states[L]; CLIP: the final
 * layer norm, the pooled end-token state and the projection are separate
 * outputs), and in the weight layout of their checkpoints.
 *
 * Weight layout: the four matrices of each block are packed once at load
 * into the panel layout of gemm.c (GPT-2's Conv1D weights from their [in, out]
 * layout, CLIP's nn.Linear weights from [out, in], with q, k and v side by side
 * as one [C][3C] matrix), so no product ever re-packs or transposes them.
 * The mapped originals are then released from memory with madvise: the
 * packed copies replace them (GPT-2 124M: 340 MB, CLIP's text tower: 151 MB),
 * and the embeddings, layer norms and biases stay zero-copy in the mapping. */
#include "layerlens/model.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "layerlens/gemm.h"
#include "layerlens/pool.h"
#include "layerlens/ops.h"
#include "layerlens/safetensors.h"

#include <cblas.h>

typedef struct ll_block {
    const float *ln1_w, *ln1_b;
    ll_packed qkv_w;              /* [C][3C] */
    const float *qkv_b;           /* [3C] */
    ll_packed proj_w;             /* [C][C] */
    const float *proj_b;          /* [C] */
    const float *ln2_w, *ln2_b;
    ll_packed fc1_w;              /* [C][F] */
    const float *fc1_b;           /* [F] */
    ll_packed fc2_w;              /* [F][C] */
    const float *fc2_b;           /* [C] */
} ll_block;

struct ll_model {
    char *dir;
    ll_config cfg;
    ll_st_file *st;
    ll_tokenizer *tok;
    const float *tok_emb; /* [V][C] */
    const float *pos_emb; /* [n_ctx][C] */
    ll_block blocks[LL_MAX_LAYERS];
    const float *lnf_w, *lnf_b; /* GPT-2 ln_f / CLIP final_layer_norm */
    ll_packed text_proj;        /* CLIP [C][P] (from nn.Linear's [P][C], no bias) */
    float *owned;               /* CLIP's q|k|v biases, 3C per block */
    size_t n_params;
    ll_weight_type dtype;       /* of the packed matrices (dtype.h) */
    size_t packed_params;       /* parameters in packed matrices */
};

/* ---------------------------------------------------------------- loading */

static char *path_join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

/* Looks up one float tensor of the expected shape, counting its parameters. */
static const float *want(ll_model *m, const char *prefix, const char *name,
                         int ndim, int64_t d0, int64_t d1, ll_error *err) {
    char full[256];
    snprintf(full, sizeof full, "%s%s", prefix, name);
    int64_t shape[2] = {d0, d1};
    const float *p = ll_st_get_f32(m->st, full, ndim, shape, err);
    if (p) m->n_params += (size_t)(ndim == 1 ? d0 : d0 * d1);
    return p;
}

/* Tells the kernel the mapped pages of a tensor we copied are not needed. */
static void release_mapped(const float *p, size_t n) {
    long page = sysconf(_SC_PAGESIZE);
    uintptr_t a = ((uintptr_t)p + page - 1) & ~(uintptr_t)(page - 1);
    uintptr_t e = ((uintptr_t)(p + n)) & ~(uintptr_t)(page - 1);
    if (e > a) madvise((void *)a, e - a, MADV_DONTNEED);
}

/* Packs W [K][N] (transposed: Wt [N][K] when t) and releases the mapped
 * original. */
static int pack(ll_model *m, ll_packed *p, const float *W, int K, int N, int t,
                ll_error *err) {
    if ((t ? ll_pack_weights_t(p, W, N, K, m->dtype) : ll_pack_weights(p, W, K, N, m->dtype)))
        return ll_errorf(err, "out of memory packing a %d x %d weight", K, N);
    release_mapped(W, (size_t)K * N);
    m->packed_params += (size_t)K * N;
    return 0;
}

static int bind_gpt2(ll_model *m, ll_error *err) {
    const ll_config *c = &m->cfg;
    long C = c->width, F = c->ffn;
    /* GPT2LMHeadModel checkpoints prefix everything with "transformer." */
    const char *pre = ll_st_find(m->st, "wte.weight") ? "" : "transformer.";
    if (!(m->tok_emb = want(m, pre, "wte.weight", 2, c->vocab, C, err))) return -1;
    if (!(m->pos_emb = want(m, pre, "wpe.weight", 2, c->n_ctx, C, err))) return -1;
    for (int l = 0; l < c->n_layer; l++) {
        ll_block *b = &m->blocks[l];
        char p[64];
        snprintf(p, sizeof p, "%sh.%d.", pre, l);
        const float *qkv, *proj, *fc1, *fc2;
        if (!(b->ln1_w = want(m, p, "ln_1.weight", 1, C, 0, err)) ||
            !(b->ln1_b = want(m, p, "ln_1.bias", 1, C, 0, err)) ||
            !(qkv = want(m, p, "attn.c_attn.weight", 2, C, 3 * C, err)) ||
            !(b->qkv_b = want(m, p, "attn.c_attn.bias", 1, 3 * C, 0, err)) ||
            !(proj = want(m, p, "attn.c_proj.weight", 2, C, C, err)) ||
            !(b->proj_b = want(m, p, "attn.c_proj.bias", 1, C, 0, err)) ||
            !(b->ln2_w = want(m, p, "ln_2.weight", 1, C, 0, err)) ||
            !(b->ln2_b = want(m, p, "ln_2.bias", 1, C, 0, err)) ||
            !(fc1 = want(m, p, "mlp.c_fc.weight", 2, C, F, err)) ||
            !(b->fc1_b = want(m, p, "mlp.c_fc.bias", 1, F, 0, err)) ||
            !(fc2 = want(m, p, "mlp.c_proj.weight", 2, F, C, err)) ||
            !(b->fc2_b = want(m, p, "mlp.c_proj.bias", 1, C, 0, err)))
            return -1;
        if (pack(m, &b->qkv_w, qkv, C, 3 * C, 0, err) || pack(m, &b->proj_w, proj, C, C, 0, err) ||
            pack(m, &b->fc1_w, fc1, C, F, 0, err) || pack(m, &b->fc2_w, fc2, F, C, 0, err))
            return -1;
    }
    if (!(m->lnf_w = want(m, pre, "ln_f.weight", 1, C, 0, err)) ||
        !(m->lnf_b = want(m, pre, "ln_f.bias", 1, C, 0, err)))
        return -1;
    return 0;
}

static int bind_clip(ll_model *m, ll_error *err) {
    const float *proj;
    const ll_config *c = &m->cfg;
    long C = c->width, F = c->ffn;
    const char *pre = "text_model.";
    if (!(m->tok_emb = want(m, pre, "embeddings.token_embedding.weight", 2, c->vocab, C, err)) ||
        !(m->pos_emb = want(m, pre, "embeddings.position_embedding.weight", 2, c->n_ctx, C, err)))
        return -1;
    /* q, k and v go through one [C][3C] product; their biases are joined too */
    if (!(m->owned = malloc((size_t)c->n_layer * 3 * C * sizeof(float))))
        return ll_errorf(err, "out of memory");
    for (int l = 0; l < c->n_layer; l++) {
        ll_block *b = &m->blocks[l];
        char p[96];
        snprintf(p, sizeof p, "%sencoder.layers.%d.", pre, l);
        const float *qw, *kw, *vw, *ow, *f1, *f2, *qb, *kb, *vb;
        if (!(b->ln1_w = want(m, p, "layer_norm1.weight", 1, C, 0, err)) ||
            !(b->ln1_b = want(m, p, "layer_norm1.bias", 1, C, 0, err)) ||
            !(qw = want(m, p, "self_attn.q_proj.weight", 2, C, C, err)) ||
            !(kw = want(m, p, "self_attn.k_proj.weight", 2, C, C, err)) ||
            !(vw = want(m, p, "self_attn.v_proj.weight", 2, C, C, err)) ||
            !(qb = want(m, p, "self_attn.q_proj.bias", 1, C, 0, err)) ||
            !(kb = want(m, p, "self_attn.k_proj.bias", 1, C, 0, err)) ||
            !(vb = want(m, p, "self_attn.v_proj.bias", 1, C, 0, err)) ||
            !(ow = want(m, p, "self_attn.out_proj.weight", 2, C, C, err)) ||
            !(b->proj_b = want(m, p, "self_attn.out_proj.bias", 1, C, 0, err)) ||
            !(b->ln2_w = want(m, p, "layer_norm2.weight", 1, C, 0, err)) ||
            !(b->ln2_b = want(m, p, "layer_norm2.bias", 1, C, 0, err)) ||
            !(f1 = want(m, p, "mlp.fc1.weight", 2, F, C, err)) ||
            !(b->fc1_b = want(m, p, "mlp.fc1.bias", 1, F, 0, err)) ||
            !(f2 = want(m, p, "mlp.fc2.weight", 2, C, F, err)) ||
            !(b->fc2_b = want(m, p, "mlp.fc2.bias", 1, C, 0, err)))
            return -1;
        /* q, k and v ([out, in] each) become the column ranges 0, C and 2C
         * of one packed [C][3C] matrix */
        if (ll_packed_init(&b->qkv_w, C, 3 * C, m->dtype))
            return ll_errorf(err, "out of memory packing CLIP's attention weights");
        const float *qkv_parts[] = {qw, kw, vw};
        for (int i = 0; i < 3; i++) {
            ll_packed_set_t(&b->qkv_w, i * C, qkv_parts[i], C);
            release_mapped(qkv_parts[i], (size_t)(C * C));
        }
        m->packed_params += (size_t)(3 * C * C);
        if (pack(m, &b->proj_w, ow, C, C, 1, err) || pack(m, &b->fc1_w, f1, C, F, 1, err) ||
            pack(m, &b->fc2_w, f2, F, C, 1, err))
            return -1;
        float *qkvb = m->owned + (size_t)l * 3 * C;
        memcpy(qkvb, qb, C * sizeof(float));
        memcpy(qkvb + C, kb, C * sizeof(float));
        memcpy(qkvb + 2 * C, vb, C * sizeof(float));
        b->qkv_b = qkvb;
    }
    if (!(m->lnf_w = want(m, pre, "final_layer_norm.weight", 1, C, 0, err)) ||
        !(m->lnf_b = want(m, pre, "final_layer_norm.bias", 1, C, 0, err)) ||
        !(proj = want(m, "", "text_projection.weight", 2, c->proj_dim, C, err)) ||
        pack(m, &m->text_proj, proj, C, c->proj_dim, 1, err))
        return -1;
    return 0;
}

ll_model *ll_model_load(const char *dir, ll_error *err) {
    return ll_model_load_dtype(dir, LL_WEIGHTS_F32, err);
}

ll_model *ll_model_load_dtype(const char *dir, ll_weight_type dtype, ll_error *err) {
    ll_model *m = calloc(1, sizeof *m);
    char *cfg_path = path_join(dir, "config.json");
    char *st_path = path_join(dir, "model.safetensors");
    char *vocab = path_join(dir, "vocab.json");
    char *merges = path_join(dir, "merges.txt");
    int ok = 0;
    if (!m || !cfg_path || !st_path || !vocab || !merges) {
        ll_errorf(err, "out of memory");
        goto done;
    }
    m->dir = strdup(dir);
    m->dtype = dtype;
    if (ll_config_load(cfg_path, &m->cfg, err)) goto done;
    if (!(m->st = ll_st_open(st_path, err))) goto done;
    if ((m->cfg.arch == LL_ARCH_GPT2 ? bind_gpt2 : bind_clip)(m, err)) {
        ll_error_prefix(err, "%s", st_path);
        goto done;
    }
    m->tok = ll_tokenizer_load(m->cfg.arch == LL_ARCH_GPT2 ? LL_TOK_GPT2 : LL_TOK_CLIP,
                               vocab, merges, err);
    if (!m->tok) goto done;
    if (ll_tokenizer_vocab_size(m->tok) > m->cfg.vocab) {
        ll_errorf(err, "%s: the tokenizer has %d tokens but the model only %d embeddings",
                  dir, ll_tokenizer_vocab_size(m->tok), m->cfg.vocab);
        goto done;
    }
    ok = 1;
done:
    free(cfg_path), free(st_path), free(vocab), free(merges);
    if (!ok) {
        ll_model_free(m);
        return NULL;
    }
    return m;
}

void ll_model_free(ll_model *m) {
    if (!m) return;
    ll_tokenizer_free(m->tok);
    ll_st_close(m->st);
    for (int l = 0; l < LL_MAX_LAYERS; l++) {
        ll_block *b = &m->blocks[l];
        ll_packed_free(&b->qkv_w), ll_packed_free(&b->proj_w);
        ll_packed_free(&b->fc1_w), ll_packed_free(&b->fc2_w);
    }
    ll_packed_free(&m->text_proj);
    free(m->owned);
    free(m->dir);
    free(m);
}

const ll_config *ll_model_config(const ll_model *m) { return &m->cfg; }
const ll_tokenizer *ll_model_tokenizer(const ll_model *m) { return m->tok; }
const char *ll_model_id(const ll_model *m) {
    return m->cfg.arch == LL_ARCH_GPT2 ? "gpt2" : "clip";
}
const char *ll_model_dir(const ll_model *m) { return m->dir; }
size_t ll_model_param_count(const ll_model *m) { return m->n_params; }
size_t ll_model_weight_bytes(const ll_model *m) {
    /* the text model's parameters: float32, except the packed matrices in
     * their dtype (they replace the mapped originals, released after
     * packing) */
    size_t packed = m->packed_params * (m->dtype == LL_WEIGHTS_BF16 ? 2 : 4);
    return (m->n_params - m->packed_params) * sizeof(float) + packed;
}
ll_weight_type ll_model_dtype(const ll_model *m) { return m->dtype; }

/* ---------------------------------------------------------------- encoding */

int ll_model_encode(const ll_model *m, const char *text, size_t len,
                    const ll_encode_opts *opts, ll_tokens *out,
                    int *text_begin, int *text_end, ll_error *err) {
    ll_encode_opts o = opts ? *opts : (ll_encode_opts){0, 0, 1};
    int n_ctx = m->cfg.n_ctx, first = out->n;
    int32_t eot = ll_tokenizer_eot(m->tok);
    if (m->cfg.arch == LL_ARCH_GPT2 && o.bos &&
        ll_tokens_push(out, eot, 0, 0))
        return ll_errorf(err, "out of memory");
    if (ll_tokenize(m->tok, text, len, out, err)) return -1;
    int is_clip = m->cfg.arch == LL_ARCH_CLIP;
    if (!is_clip && o.eos && ll_tokens_push(out, eot, (int32_t)len, (int32_t)len))
        return ll_errorf(err, "out of memory");
    int n = out->n - first;
    /* the text's own tokens: CLIP always has one special token on each side */
    int begin = (is_clip || o.bos) ? 1 : 0;
    int end = n - ((is_clip || o.eos) ? 1 : 0);
    if (n > n_ctx) {
        if (!o.truncate) {
            ll_errorf(err, "the input has %d tokens but %s's context is %d tokens "
                      "(truncation is off)", n, ll_model_id(m), n_ctx);
            out->n = first;
            return LL_ETOOLONG;
        }
        out->n = first + n_ctx;
        n = n_ctx;
        /* CLIP keeps its end token last, as tokenize(truncate=True) does;
         * GPT-2 keeps a requested trailing <|endoftext|> likewise. */
        if (is_clip || o.eos) {
            int last = first + n_ctx - 1;
            out->ids[last] = eot;
            out->start[last] = out->end[last] = (int32_t)len;
            end = n - 1;
        } else {
            end = n;
        }
    }
    if (text_begin) *text_begin = begin;
    if (text_end) *text_end = end < begin ? begin : end;
    return 0;
}

/* ---------------------------------------------------------------- forward */

/* Capacities are counted in elements, not tokens: a worker's workspace serves
 * every model of the server, and the same number of tokens needs more room
 * for a wider model (GPT-2's 768 x 3072 after CLIP's 512 x 2048). */
struct ll_workspace {
    size_t cap_tok;    /* ids, pos: tokens */
    size_t cap_rows;   /* x, ln, att: floats (N * C); qkv holds 3 * cap_rows */
    size_t cap_wide;   /* fc: floats (N * max(F, C)) */
    size_t cap_scores; /* scores: floats (slots * T * T) */
    int slots;         /* score matrices: one per thread of this thread's share */
    float *x, *ln, *qkv, *att, *fc; /* [N][C] [N][C] [N][3C] [N][C] [N][max(F,C)] */
    int32_t *ids, *pos;
    float *scores;
    void *spare;        /* the block of the last states freed (model.h) */
    size_t spare_bytes;
};

ll_workspace *ll_workspace_new(void) { return calloc(1, sizeof(ll_workspace)); }

void ll_workspace_trim(ll_workspace *ws) {
    if (!ws) return;
    free(ws->spare);
    ws->spare = NULL, ws->spare_bytes = 0;
}

void ll_workspace_free(ll_workspace *ws) {
    if (!ws) return;
    ll_workspace_trim(ws);
    free(ws->x), free(ws->ln), free(ws->qkv), free(ws->att), free(ws->fc);
    free(ws->ids), free(ws->pos), free(ws->scores);
    free(ws);
}

static int grow(void **p, size_t bytes) {
    void *q = realloc(*p, bytes);
    if (!q) return -1;
    *p = q;
    return 0;
}

/* Grows the buffers to N tokens of width C / MLP width F and to a T x T score
 * matrix per thread the pass may use (pool.h); never shrinks, so a worker's
 * steady state allocates nothing.  Each buffer is checked against its own
 * size in elements, whatever model grew it last. */
static int workspace_reserve(ll_workspace *ws, size_t N, size_t C, size_t F,
                             size_t T) {
    size_t rows = N * C, wide = N * (F > C ? F : C);
    if (rows > ws->cap_rows) {
        if (grow((void **)&ws->x, rows * 4) || grow((void **)&ws->ln, rows * 4) ||
            grow((void **)&ws->qkv, rows * 3 * 4) || grow((void **)&ws->att, rows * 4))
            return -1;
        ws->cap_rows = rows;
    }
    if (wide > ws->cap_wide) {
        if (grow((void **)&ws->fc, wide * 4)) return -1;
        ws->cap_wide = wide;
    }
    if (N > ws->cap_tok) {
        if (grow((void **)&ws->ids, N * 4) || grow((void **)&ws->pos, N * 4)) return -1;
        ws->cap_tok = N;
    }
    ws->slots = ll_pool_threads();
    if (ws->slots * T * T > ws->cap_scores) {
        if (grow((void **)&ws->scores, ws->slots * T * T * 4)) return -1;
        ws->cap_scores = ws->slots * T * T;
    }
    return 0;
}

/* The block goes back to its workspace for the next pass, unless the
 * workspace already holds one (two states alive at once): then the smaller
 * of the two is freed. */
void ll_states_free(ll_states *s) {
    if (!s) return;
    ll_workspace *ws = s->owner;
    if (ws && s->block) {
        if (ws->spare && ws->spare_bytes >= s->block_bytes) {
            free(s->block);
        } else {
            free(ws->spare);
            ws->spare = s->block, ws->spare_bytes = s->block_bytes;
        }
    } else {
        free(s->block);
    }
    memset(s, 0, sizeof *s);
}

/* Room for n floats (or ints) in a states block, rounded up to a cache line
 * so that every array starts on one. */
static size_t block_part(size_t n) { return (n * sizeof(float) + 63) / 64 * 64; }

/* Lays out every output the request asks for in one block, taken from the
 * workspace's spare when it is large enough.  0, or -1 without memory. */
static int states_alloc(ll_workspace *ws, ll_states *out, const ll_config *c,
                        const ll_forward_req *req, int n_seq, size_t N) {
    int is_gpt2 = c->arch == LL_ARCH_GPT2;
    size_t NC = N * (size_t)c->width, bytes = block_part((size_t)n_seq + 1);
    for (int l = 0; l <= c->n_layer; l++)
        if (req->layers >> l & 1) bytes += block_part(NC);
    int raw = is_gpt2 && req->want_raw_last, fin = !is_gpt2 && req->want_final;
    int proj = !is_gpt2 && req->want_projected;
    bytes += (raw ? block_part(NC) : 0) + (fin ? block_part(NC) : 0);
    if (proj)
        bytes += block_part((size_t)n_seq * c->width) + block_part((size_t)n_seq * c->proj_dim);
    char *p;
    if (ws->spare && ws->spare_bytes >= bytes) {
        p = ws->spare;
        bytes = ws->spare_bytes;
        ws->spare = NULL, ws->spare_bytes = 0;
    } else {
        ll_workspace_trim(ws); /* too small: one block at a time is enough */
        if (!(p = aligned_alloc(64, bytes))) return -1;
    }
    out->block = p, out->block_bytes = bytes, out->owner = ws;
    out->seq_start = (int *)p;
    p += block_part((size_t)n_seq + 1);
    for (int l = 0; l <= c->n_layer; l++)
        if (req->layers >> l & 1) out->layer[l] = (float *)p, p += block_part(NC);
    if (raw) out->raw_last = (float *)p, p += block_part(NC);
    if (fin) out->final = (float *)p, p += block_part(NC);
    if (proj) {
        out->pooled = (float *)p, p += block_part((size_t)n_seq * c->width);
        out->projected = (float *)p;
    }
    return 0;
}

/* One pre-LN block on the packed rows: x = x + attn(ln1(x)); x = x + mlp(ln2(x)).
 * 0, or -1 when a bf16 product cannot get memory for its rounded rows. */
static int block_forward(const ll_model *m, const ll_block *b, ll_workspace *ws,
                         const int *seq_start, int n_seq, int N) {
    const ll_config *c = &m->cfg;
    int C = c->width;
    /* the activation and the residual sums are done inside the products
     * (ops.h: the same bits as separate steps, without a pass over memory) */
    layernorm_forward(ws->ln, ws->x, b->ln1_w, b->ln1_b, N, C, c->ln_eps);
    if (matmul_forward(ws->qkv, ws->ln, &b->qkv_w, b->qkv_b, N)) return -1;
    attention_batch_forward(ws->att, ws->qkv, ws->scores, ws->slots, seq_start, n_seq,
                            C, c->n_head);
    if (matmul_residual_forward(ws->x, ws->ln, ws->att, &b->proj_w, b->proj_b, N)) return -1;
    layernorm_forward(ws->ln, ws->x, b->ln2_w, b->ln2_b, N, C, c->ln_eps);
    if (c->act == LL_ACT_GELU_NEW
            ? matmul_gelu_new_forward(ws->fc, ws->ln, &b->fc1_w, b->fc1_b, N)
            : matmul_quick_gelu_forward(ws->fc, ws->ln, &b->fc1_w, b->fc1_b, N))
        return -1;
    if (matmul_residual_forward(ws->x, ws->ln, ws->fc, &b->fc2_w, b->fc2_b, N)) return -1;
    return 0;
}

static int check_batch(const ll_model *m, const ll_seq *seqs, int n_seq,
                       const ll_forward_req *req, long *n_tok, int *t_max,
                       ll_error *err) {
    const ll_config *c = &m->cfg;
    if (n_seq < 1) return ll_errorf(err, "empty batch");
    if (c->n_layer < 63 && (req->layers >> (c->n_layer + 1)))
        return ll_errorf(err, "layer out of range (the model has layers 0..%d)",
                         c->n_layer);
    long N = 0;
    int tmax = 0;
    for (int s = 0; s < n_seq; s++) {
        if (seqs[s].len < 1 || seqs[s].len > c->n_ctx)
            return ll_errorf(err, "sequence %d has %d tokens; %s takes 1..%d",
                             s, seqs[s].len, ll_model_id(m), c->n_ctx);
        for (int t = 0; t < seqs[s].len; t++)
            if (seqs[s].ids[t] < 0 || seqs[s].ids[t] >= c->vocab)
                return ll_errorf(err, "token id %d out of range 0..%d",
                                 seqs[s].ids[t], c->vocab - 1);
        N += seqs[s].len;
        if (seqs[s].len > tmax) tmax = seqs[s].len;
    }
    if (N > INT_MAX / (4 * (c->ffn > c->width ? c->ffn : c->width)))
        return ll_errorf(err, "batch too large (%ld tokens)", N);
    *n_tok = N, *t_max = tmax;
    return 0;
}

/* The last block whose output the request needs (0 = embeddings only). */
static int blocks_needed(const ll_config *c, const ll_forward_req *req) {
    if (req->want_raw_last || req->want_final || req->want_projected)
        return c->n_layer;
    int need = 0;
    for (int l = 0; l <= c->n_layer; l++)
        if (req->layers >> l & 1) need = l;
    return need;
}

/* CLIP pools at the first end-of-text token, i.e. argmax of the ids (the end
 * token has the largest id), exactly as the original encode_text does. */
static int argmax_id(const int32_t *ids, int T) {
    int best = 0;
    for (int t = 1; t < T; t++)
        if (ids[t] > ids[best]) best = t;
    return best;
}

static int forward_pass(const ll_model *m, ll_workspace *ws, const ll_seq *seqs,
                        int n_seq, const ll_forward_req *req, ll_states *out,
                        ll_error *err) {
    const ll_config *c = &m->cfg;
    int C = c->width, is_gpt2 = c->arch == LL_ARCH_GPT2, tmax = 0, fail = 0;
    long N = 0;
    memset(out, 0, sizeof *out);
    if (check_batch(m, seqs, n_seq, req, &N, &tmax, err)) return -1;
    if (workspace_reserve(ws, N, C, c->ffn, tmax))
        return ll_errorf(err, "out of memory for a batch of %ld tokens", N);
    out->n_seq = n_seq, out->n_tok = (int)N, out->width = C;
    out->proj_dim = c->proj_dim, out->n_layer = c->n_layer;
    if (states_alloc(ws, out, c, req, n_seq, (size_t)N))
        return ll_errorf(err, "out of memory for the states of %ld tokens", N);
    out->seq_start[0] = 0;
    for (int s = 0, r = 0; s < n_seq; s++) {
        for (int t = 0; t < seqs[s].len; t++, r++) {
            ws->ids[r] = seqs[s].ids[t];
            ws->pos[r] = t;
        }
        out->seq_start[s + 1] = r;
    }
    size_t NC = (size_t)N * C;
    /* x[n] = tok_emb[ids[n]] + pos_emb[pos[n]]; the token rows are read, not
     * touched through the mapping (see ll_st_read_f32: a benchmark's
     * vocabulary otherwise drew most of both tables, 190 MiB, into memory) */
    for (long n = 0; n < N; n++)
        if (ll_st_read_f32(m->st, m->tok_emb + (long)ws->ids[n] * C, ws->x + n * C, (size_t)C)) {
            ll_states_free(out);
            return ll_errorf(err, "%s: cannot read the token embeddings: %s", m->dir,
                             strerror(errno));
        }
    position_add_forward(ws->x, ws->pos, m->pos_emb, (int)N, C);
    int last = blocks_needed(c, req);
    for (int l = 0; l <= last && !fail; l++) {
        if (l > 0 && block_forward(m, &m->blocks[l - 1], ws, out->seq_start, n_seq, (int)N)) {
            fail = 1;
            break;
        }
        if (!(req->layers >> l & 1)) continue;
        if (is_gpt2 && l == c->n_layer) {
            /* GPT-2's hidden_states[L] is ln_f of the last block's output */
            layernorm_forward(out->layer[l], ws->x, m->lnf_w, m->lnf_b, (int)N, C, c->ln_eps);
        } else {
            memcpy(out->layer[l], ws->x, NC * sizeof(float));
        }
    }
    if (!fail && out->raw_last) memcpy(out->raw_last, ws->x, NC * sizeof(float));
    if (!fail && out->final)
        layernorm_forward(out->final, ws->x, m->lnf_w, m->lnf_b, (int)N, C, c->ln_eps);
    if (!fail && out->projected) {
        for (int s = 0; s < n_seq && !fail; s++) {
            int r = out->seq_start[s] + argmax_id(seqs[s].ids, seqs[s].len);
            float *pooled = out->pooled + (long)s * C;
            layernorm_forward(pooled, ws->x + (long)r * C, m->lnf_w, m->lnf_b, 1, C,
                              c->ln_eps);
            /* projected[P] = pooled[C] @ text_projection^T */
            if (ll_gemm(out->projected + (long)s * c->proj_dim, pooled, &m->text_proj, NULL, 1))
                fail = 1;
        }
    }
    if (fail) {
        ll_states_free(out);
        return ll_errorf(err, "out of memory for a pass over %ld tokens", N);
    }
    return 0;
}

int ll_forward(const ll_model *m, ll_workspace *ws, const ll_seq *seqs,
               int n_seq, const ll_forward_req *req, ll_states *out,
               ll_error *err) {
    /* counted as running, so that concurrent passes share the cores (pool.h) */
    ll_pass_begin();
    int rc = forward_pass(m, ws, seqs, n_seq, req, out, err);
    ll_pass_end();
    return rc;
}

void ll_gpt2_logits(const ll_model *m, const float *row, float *logits) {
    /* logits[V] = wte[V][C] @ row[C]  (the tied language-model head) */
    cblas_sgemv(CblasRowMajor, CblasNoTrans, m->cfg.vocab, m->cfg.width, 1.0f,
                m->tok_emb, m->cfg.width, row, 1, 0.0f, logits, 1);
}
