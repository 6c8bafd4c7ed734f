/* dtype.h - the number format of the weights in the products with weights.
 *
 * LL_WEIGHTS_F32: the checkpoint's float32, the reference.  LL_WEIGHTS_BF16: weights and
 * the products' inputs rounded to bfloat16 (8 significant bits), products
 * summed in float32 (AVX512-BF16's VDPBF16PS): half the memory and half the
 * bytes read per pass, at a deviation from float32 that tests/test_model.c
 * measures per layer.  Everything else (embeddings, layer norms, attention,
 * activations, the states returned) stays float32. */
#ifndef LAYERLENS_DTYPE_H
#define LAYERLENS_DTYPE_H

#include "layerlens/error.h"

typedef enum ll_weight_type { LL_WEIGHTS_F32 = 0, LL_WEIGHTS_BF16 = 1 } ll_weight_type;

/* "f32" or "bf16". */
const char *ll_weight_type_name(ll_weight_type d);
/* Parses "f32" / "float32" / "bf16" / "bfloat16": 0, or -1 with a message
 * in err naming the value (as ll_log_level_parse). */
int ll_weight_type_parse(const char *s, ll_weight_type *out, ll_error *err);
/* 1 when this build computes bf16 products with the CPU's AVX512-BF16
 * instructions (and this CPU has them); 0 when it uses the portable code,
 * which gives the same results many times slower. */
int ll_bf16_native(void);
/* What to warn about when bf16 is asked for and ll_bf16_native() is 0. */
extern const char LL_BF16_SLOW_WARNING[];

#endif
