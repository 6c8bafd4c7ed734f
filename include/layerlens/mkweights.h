/* mkweights.h - random-initialised checkpoints of the real shapes.
 *
 * Writes a model directory laid out like the Hugging Face repositories
 * (model.safetensors, config.json, vocab.json, merges.txt) with the tensor
 * names of openai-community/gpt2 or openai/clip-vit-base-patch32 (text
 * tower), so full-size speed tests and the offline demo run through exactly
 * the loading code the real weights use.  The architecture and tokenizer
 * files come from an existing model directory (--like).  A marker file
 * `layerlens-demo.json` records that the weights are random. */
#ifndef LAYERLENS_MKWEIGHTS_H
#define LAYERLENS_MKWEIGHTS_H

#include <stdint.h>

#include "layerlens/error.h"

typedef enum ll_preset {
    LL_PRESET_TINY, /* the dimensions of the --like directory's config */
    LL_PRESET_FULL, /* GPT-2 124M, or CLIP ViT-B/32's text tower */
} ll_preset;

int ll_mkweights(const char *like_dir, ll_preset preset, uint64_t seed,
                 const char *out_dir, ll_error *err);

/* 1 when dir holds a checkpoint written by ll_mkweights. */
int ll_is_demo_dir(const char *dir);

#endif
