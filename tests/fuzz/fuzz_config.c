/* fuzz_config.c - arbitrary bytes as a config.json (ll_config_parse).
 *
 * A config that parses must satisfy what the model code relies on (the
 * ranges in config.h), and must survive a round trip: written with
 * ll_config_write and read back with ll_config_load it gives the same
 * dimensions. */
#include <stdint.h>
#include <string.h>

#include "fuzzutil.h"
#include "layerlens/config.h"

static void check_valid(const ll_config *c) {
    FUZZ_CHECK(c->arch == LL_ARCH_GPT2 || c->arch == LL_ARCH_CLIP, "arch %d",
               (int)c->arch);
    FUZZ_CHECK(c->width >= 1 && c->n_layer >= 1 && c->n_head >= 1 &&
                   c->ffn >= 1 && c->n_ctx >= 1 && c->vocab >= 1,
               "non-positive size: width %d layers %d heads %d ffn %d ctx %d "
               "vocab %d", c->width, c->n_layer, c->n_head, c->ffn, c->n_ctx,
               c->vocab);
    FUZZ_CHECK(c->width % c->n_head == 0, "width %d, heads %d", c->width,
               c->n_head);
    FUZZ_CHECK(c->ln_eps > 0 && c->ln_eps < 1, "ln_eps %g", (double)c->ln_eps);
    if (c->arch == LL_ARCH_GPT2) {
        FUZZ_CHECK(c->proj_dim == 0, "GPT-2 with projection_dim %d", c->proj_dim);
        FUZZ_CHECK(c->act == LL_ACT_GELU_NEW, "GPT-2 activation %d", (int)c->act);
    } else {
        FUZZ_CHECK(c->proj_dim >= 1, "CLIP projection_dim %d", c->proj_dim);
        FUZZ_CHECK(c->act == LL_ACT_QUICK_GELU, "CLIP activation %d", (int)c->act);
    }
}

static void check_round_trip(const ll_config *c) {
    const char *path = fuzz_memfile(NULL, 0);
    ll_error err = {{0}};
    FUZZ_CHECK(ll_config_write(path, c, &err) == 0, "write failed: %s", err.msg);
    ll_config back;
    memset(&back, 0xa5, sizeof back);
    FUZZ_CHECK(ll_config_load(path, &back, &err) == 0, "reload failed: %s",
               err.msg);
    FUZZ_CHECK(back.arch == c->arch && back.width == c->width &&
                   back.n_layer == c->n_layer && back.n_head == c->n_head &&
                   back.ffn == c->ffn && back.n_ctx == c->n_ctx &&
                   back.vocab == c->vocab && back.proj_dim == c->proj_dim &&
                   back.act == c->act,
               "round trip changed the dimensions (ffn %d -> %d, ctx %d -> %d)",
               c->ffn, back.ffn, c->n_ctx, back.n_ctx);
    FUZZ_CHECK(back.ln_eps == c->ln_eps, "round trip changed ln_eps %.9g -> %.9g",
               (double)c->ln_eps, (double)back.ln_eps);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ll_config cfg;
    ll_error err = {{0}};
    if (ll_config_parse((const char *)data, size, &cfg, &err) != 0) {
        FUZZ_CHECK(err.msg[0] != 0, "failure without a message");
        return 0;
    }
    check_valid(&cfg);
    check_round_trip(&cfg);
    return 0;
}
