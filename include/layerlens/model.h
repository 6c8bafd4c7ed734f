/* model.h - a loaded model (GPT-2 or the CLIP text encoder) and its forward
 * pass over a packed batch.
 *
 * A model directory holds the four files of a Hugging Face repository:
 * model.safetensors, config.json, vocab.json, merges.txt.  The weights stay
 * memory-mapped and read-only; a loaded ll_model is never modified, so any
 * number of threads may run ll_forward on it at once, each with its own
 * ll_workspace.
 *
 * Layer numbering follows Hugging Face's hidden_states: layer 0 is the
 * embedding sum, layer i the output of block i; GPT-2's last layer has ln_f
 * applied, CLIP's does not (its final layer norm is the separate `final`
 * output). */
#ifndef LAYERLENS_MODEL_H
#define LAYERLENS_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "layerlens/config.h"
#include "layerlens/dtype.h"
#include "layerlens/error.h"
#include "layerlens/tokenizer.h"

#define LL_MAX_LAYERS 63 /* layers are selected by a 64-bit mask */

/* Returned (besides -1) by ll_model_encode when the input is longer than the
 * context and truncation was refused. */
#define LL_ETOOLONG (-2)

typedef struct ll_model ll_model;

ll_model *ll_model_load(const char *dir, ll_error *err); /* float32 weights */
/* The products with weights in the given format (dtype.h). */
ll_model *ll_model_load_dtype(const char *dir, ll_weight_type dtype, ll_error *err);
void ll_model_free(ll_model *m);
ll_weight_type ll_model_dtype(const ll_model *m);

const ll_config *ll_model_config(const ll_model *m);
const ll_tokenizer *ll_model_tokenizer(const ll_model *m);
/* "gpt2" or "clip". */
const char *ll_model_id(const ll_model *m);
const char *ll_model_dir(const ll_model *m);
/* Parameters actually used by the text model, and the bytes the process holds
 * for them (mapped float32 weights + any converted/transposed copies). */
size_t ll_model_param_count(const ll_model *m);
size_t ll_model_weight_bytes(const ll_model *m);

/* ---- text -> model input ---- */

typedef struct ll_encode_opts {
    int bos;      /* GPT-2: prepend <|endoftext|> (CLIP always has its own) */
    int eos;      /* GPT-2: append <|endoftext|> */
    int truncate; /* cut to the context (CLIP keeps its end token last);
                     when 0, a too long input returns LL_ETOOLONG */
} ll_encode_opts;

/* Tokenizes text and adds the model's special tokens.  *text_begin and
 * *text_end (either may be NULL) receive the range [begin, end) of the
 * positions that belong to the text itself (no special tokens). */
int ll_model_encode(const ll_model *m, const char *text, size_t len,
                    const ll_encode_opts *opts, ll_tokens *out,
                    int *text_begin, int *text_end, ll_error *err);

/* ---- forward pass ---- */

typedef struct ll_seq {
    const int32_t *ids;
    int len;
} ll_seq;

typedef struct ll_forward_req {
    uint64_t layers;    /* bit L set: keep hidden_states[L], 0 <= L <= n_layer */
    int want_raw_last;  /* GPT-2: output of the last block before ln_f */
    int want_final;     /* CLIP: final_layer_norm of every position */
    int want_projected; /* CLIP: pooled (final-normed state at the first
                           end token, argmax id) and its projection */
} ll_forward_req;

typedef struct ll_workspace ll_workspace;

/* Output of one forward pass.  All sequences are packed one after the other:
 * rows seq_start[s] .. seq_start[s+1]-1 belong to sequence s.  Every array
 * lives in one block of memory, freed by ll_states_free. */
typedef struct ll_states {
    int n_seq, n_tok, width, proj_dim, n_layer;
    int *seq_start;                 /* [n_seq + 1] */
    float *layer[LL_MAX_LAYERS + 1]; /* [n_tok][width], NULL unless asked */
    float *raw_last;                /* GPT-2 [n_tok][width] */
    float *final;                   /* CLIP  [n_tok][width] */
    float *pooled;                  /* CLIP  [n_seq][width] */
    float *projected;               /* CLIP  [n_seq][proj_dim] */
    /* private: the block and the workspace it goes back to when freed */
    void *block;
    size_t block_bytes;
    ll_workspace *owner;
} ll_states;

/* Scratch memory of one thread; grows to the largest batch seen and is
 * reused, so steady-state forward passes allocate nothing per token.  One
 * workspace may serve models of different widths in turn (a server worker
 * runs GPT-2 and CLIP batches).
 *
 * It also keeps the block of the last states freed (ll_states_free) for the
 * next pass: a pass's outputs (all 13 layers of 2,048 GPT-2 tokens are 81
 * MB) then land in memory already mapped, instead of pages the kernel must
 * fault in and zero on every pass, which cost about a tenth of a large
 * pass on two threads.  So states must be freed on the workspace's thread
 * and before the workspace; ll_workspace_trim gives the block back to the
 * system (a server worker calls it when it goes idle). */
ll_workspace *ll_workspace_new(void);
void ll_workspace_trim(ll_workspace *ws);
void ll_workspace_free(ll_workspace *ws);

/* Runs the model on n_seq sequences packed into one [sum of lengths x width]
 * matrix: every linear layer is one GEMM over all tokens, attention runs per
 * sequence.  Ids must be < vocab and lengths in 1..n_ctx. */
int ll_forward(const ll_model *m, ll_workspace *ws, const ll_seq *seqs,
               int n_seq, const ll_forward_req *req, ll_states *out,
               ll_error *err);
void ll_states_free(ll_states *s);

/* GPT-2 only: logits = row @ wte^T for one final-layer (ln_f) state row.
 * logits has vocab entries. */
void ll_gpt2_logits(const ll_model *m, const float *row, float *logits);

#endif
