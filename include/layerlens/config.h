/* config.h - the model dimensions read from a Hugging Face config.json.
 *
 * GPT-2 (model_type "gpt2"): n_embd, n_layer, n_head, n_positions, vocab_size,
 * layer_norm_epsilon, activation_function, n_inner (null = 4 * n_embd).
 * CLIP (model_type "clip" with text_config, or "clip_text_model"): hidden_size,
 * intermediate_size, num_attention_heads, num_hidden_layers,
 * max_position_embeddings, vocab_size, layer_norm_eps, hidden_act, and the
 * top-level projection_dim.  Nothing is hard-coded: the tiny test checkpoints
 * and the real models go through the same code.  Keys a config.json leaves
 * out take the defaults of transformers' GPT2Config / CLIPTextConfig, as
 * Hugging Face does (the real openai/clip-vit-base-patch32 config omits some).
 * Errors name the offending key ("text_config.hidden_size"). */
#ifndef LAYERLENS_CONFIG_H
#define LAYERLENS_CONFIG_H

#include "layerlens/error.h"

typedef enum ll_arch { LL_ARCH_GPT2, LL_ARCH_CLIP } ll_arch;
typedef enum ll_act { LL_ACT_GELU_NEW, LL_ACT_QUICK_GELU } ll_act;

typedef struct ll_config {
    ll_arch arch;
    int width;      /* C: n_embd / hidden_size */
    int n_layer;
    int n_head;     /* width % n_head == 0 */
    int ffn;        /* MLP inner width */
    int n_ctx;      /* n_positions / max_position_embeddings */
    int vocab;
    int proj_dim;   /* CLIP projection_dim; 0 for GPT-2 */
    float ln_eps;
    ll_act act;
} ll_config;

/* Parses and validates (positive sizes, divisibility, known activation). */
int ll_config_load(const char *path, ll_config *cfg, ll_error *err);
/* The same from a JSON text (for tests and fuzzing). */
int ll_config_parse(const char *json, size_t len, ll_config *cfg, ll_error *err);

/* Writes a config.json of the same layout as the Hugging Face repositories
 * (used by `mkweights`). */
int ll_config_write(const char *path, const ll_config *cfg, ll_error *err);

#endif
