/* fuzz_safetensors.c - arbitrary bytes as a .safetensors file (ll_st_open).
 *
 * The first input byte chooses the framing:
 *   even: the rest is the whole file, as is;
 *   odd:  the rest is HEADER [NUL DATA]: the target writes the 8-byte
 *         little-endian header length itself, so that mutations of the JSON
 *         header are not wasted on a length prefix that no longer matches.
 * The file goes to a memfd (ll_st_open takes a path).
 *
 * When a file opens, every tensor the API hands out must be consistent:
 * unique names found again by ll_st_find, nbytes = elements x dtype size
 * (computed here independently), tensors inside the data section and not
 * overlapping, each pointing at the bytes its data_offsets name (the header
 * is read again here), and float tensors readable through ll_st_get_f32 with
 * values equal to an independent conversion of their bytes. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "fuzzutil.h"
#include "layerlens/safetensors.h"

/* Bits per element of each dtype name the format defines (written out here
 * rather than taken from the library, so that a wrong table there shows). */
static int dtype_bits(const char *name) {
    static const struct { const char *name; int bits; } table[] = {
        {"F64", 64}, {"I64", 64}, {"U64", 64}, {"C64", 64},
        {"F32", 32}, {"I32", 32}, {"U32", 32},
        {"F16", 16}, {"BF16", 16}, {"I16", 16}, {"U16", 16},
        {"I8", 8}, {"U8", 8}, {"BOOL", 8},
        {"F8_E5M2", 8}, {"F8_E4M3", 8}, {"F8_E8M0", 8},
        {"F6_E2M3", 6}, {"F6_E3M2", 6}, {"F4", 4},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if (strcmp(table[i].name, name) == 0) return table[i].bits;
    return -1;
}

/* binary16 -> float by arithmetic (the library does it with bit shifts). */
static float half_ref(uint16_t h) {
    int sign = h >> 15, exp = (h >> 10) & 31, mant = h & 1023;
    float v;
    if (exp == 31) v = mant ? NAN : INFINITY;
    else if (exp == 0) v = ldexpf((float)mant, -24);
    else v = ldexpf((float)(1024 + mant), exp - 25);
    return sign ? -v : v;
}

static float bf16_ref(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static int same_float(float a, float b) {
    if (isnan(a) || isnan(b)) return isnan(a) && isnan(b) && !signbit(a) == !signbit(b);
    return memcmp(&a, &b, 4) == 0;
}

static void check_values(ll_st_file *f, const ll_st_tensor *t) {
    ll_error err = {{0}};
    const float *v = ll_st_get_f32(f, t->name, t->ndim, t->shape, &err);
    int is_float = t->dtype == LL_DT_F32 || t->dtype == LL_DT_F16 ||
                   t->dtype == LL_DT_BF16;
    if (!is_float) {
        FUZZ_CHECK(!v && err.msg[0], "dtype %s returned as float", t->dtype_name);
        return;
    }
    FUZZ_CHECK(v != NULL, "float tensor '%s' not readable: %s", t->name, err.msg);
    FUZZ_CHECK((uintptr_t)v % _Alignof(float) == 0, "misaligned floats");
    const uint8_t *src = t->data;
    size_t elem = t->dtype == LL_DT_F32 ? 4 : 2, n = t->nbytes / elem;
    for (size_t i = 0; i < n; i++) {
        float want;
        if (t->dtype == LL_DT_F32) {
            memcpy(&want, src + 4 * i, 4);
        } else {
            uint16_t h;
            memcpy(&h, src + 2 * i, 2);
            want = t->dtype == LL_DT_F16 ? half_ref(h) : bf16_ref(h);
        }
        FUZZ_CHECK(same_float(v[i], want), "'%s'[%zu] = %a, expected %a",
                   t->name, i, (double)v[i], (double)want);
    }
    /* asking again hands out the same buffer */
    FUZZ_CHECK(ll_st_get_f32(f, t->name, t->ndim, t->shape, &err) == v,
               "second request for '%s' gave another buffer", t->name);
}

static void check_tensor(ll_st_file *f, const ll_st_tensor *t) {
    FUZZ_CHECK(t->name != NULL && t->dtype_name != NULL, "unnamed tensor");
    FUZZ_CHECK(strcmp(t->name, "__metadata__") != 0, "metadata listed as a tensor");
    FUZZ_CHECK(ll_st_find(f, t->name) == t, "'%s' not found by name", t->name);
    FUZZ_CHECK(t->ndim >= 0 && t->ndim <= LL_ST_MAX_DIMS, "ndim %d", t->ndim);
    int bits = dtype_bits(t->dtype_name);
    FUZZ_CHECK(bits > 0, "unknown dtype '%s' accepted", t->dtype_name);
    /* elements, with overflow treated as "cannot be in a file we could map" */
    unsigned __int128 numel = 1;
    for (int d = 0; d < t->ndim; d++) {
        FUZZ_CHECK(t->shape[d] >= 0, "'%s' shape[%d] = %lld", t->name, d,
                   (long long)t->shape[d]);
        numel *= (uint64_t)t->shape[d];
        if (numel > ((unsigned __int128)1 << 64)) numel = ((unsigned __int128)1 << 64) + 1;
    }
    unsigned __int128 nbits = numel * (unsigned)bits;
    FUZZ_CHECK(nbits % 8 == 0 && nbits / 8 == t->nbytes,
               "'%s': %s x %d dims holds %zu bytes", t->name, t->dtype_name,
               t->ndim, t->nbytes);
    FUZZ_CHECK(t->nbytes <= ll_st_file_size(f), "'%s' larger than the file",
               t->name);
    if (t->nbytes) {
        /* touch every byte so a pointer outside the mapping faults */
        const volatile uint8_t *p = t->data;
        uint8_t acc = 0;
        for (size_t i = 0; i < t->nbytes; i++) acc ^= p[i];
        (void)acc;
    }
    check_values(f, t);
}

/* Reads the header again here (jansson, as the format is JSON) and checks
 * that each tensor's pointer holds exactly the bytes its data_offsets name
 * in the file: a pointer a few bytes off would still be inside the mapping's
 * last page, where nothing faults. */
static void check_against_header(const ll_st_file *f, const uint8_t *file,
                                 size_t len, uint64_t hlen) {
    json_error_t je;
    json_t *root = json_loadb((const char *)file + 8, (size_t)hlen,
                              JSON_DECODE_ANY, &je);
    FUZZ_CHECK(json_is_object(root), "accepted header does not parse here: %s",
               je.text);
    size_t n = 0;
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        if (strcmp(key, "__metadata__") == 0) continue;
        n++;
        const ll_st_tensor *t = ll_st_find(f, key);
        FUZZ_CHECK(t != NULL, "header entry '%s' not listed", key);
        json_t *off = json_object_get(v, "data_offsets");
        json_int_t b = json_integer_value(json_array_get(off, 0));
        json_int_t e = json_integer_value(json_array_get(off, 1));
        FUZZ_CHECK(b >= 0 && e >= b && (uint64_t)(e - b) == t->nbytes &&
                       (uint64_t)e <= len - 8 - hlen,
                   "'%s': offsets [%lld, %lld] for %zu bytes in a %llu-byte "
                   "data section", key, (long long)b, (long long)e, t->nbytes,
                   (unsigned long long)(len - 8 - hlen));
        FUZZ_CHECK(memcmp(t->data, file + 8 + hlen + b, t->nbytes) == 0,
                   "'%s' does not point at its bytes", key);
    }
    FUZZ_CHECK(n == ll_st_count(f), "%zu tensors in the header, %zu listed", n,
               ll_st_count(f));
    json_decref(root);
}

typedef struct span { const uint8_t *b, *e; } span;

static int cmp_span(const void *x, const void *y) {
    const span *a = x, *b = y;
    return a->b < b->b ? -1 : a->b > b->b;
}

/* Non-empty tensors lie within one data section and share no byte. */
static void check_layout(const ll_st_file *f, uint64_t data_size) {
    size_t n = ll_st_count(f), k = 0;
    span *s = malloc((n ? n : 1) * sizeof *s);
    FUZZ_CHECK(s != NULL, "out of memory");
    for (size_t i = 0; i < n; i++) {
        const ll_st_tensor *t = ll_st_at(f, i);
        if (t->nbytes) s[k++] = (span){t->data, (const uint8_t *)t->data + t->nbytes};
    }
    qsort(s, k, sizeof *s, cmp_span);
    for (size_t i = 1; i < k; i++)
        FUZZ_CHECK(s[i].b >= s[i - 1].e, "tensors overlap");
    if (k) FUZZ_CHECK((uint64_t)(s[k - 1].e - s[0].b) <= data_size,
                      "tensors span %td bytes, data section has %llu",
                      s[k - 1].e - s[0].b, (unsigned long long)data_size);
    free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    uint8_t *file = NULL;
    size_t len;
    if (data[0] & 1) {
        const uint8_t *hdr = data + 1, *nul = memchr(hdr, 0, size - 1);
        size_t hlen = nul ? (size_t)(nul - hdr) : size - 1;
        size_t dlen = nul ? size - 1 - hlen - 1 : 0;
        len = 8 + hlen + dlen;
        file = malloc(len);
        if (!file) return 0;
        for (int i = 0; i < 8; i++) file[i] = (uint8_t)((uint64_t)hlen >> (8 * i));
        memcpy(file + 8, hdr, hlen);
        if (dlen) memcpy(file + 8 + hlen, nul + 1, dlen);
    } else {
        len = size - 1;
        file = malloc(len ? len : 1);
        if (!file) return 0;
        memcpy(file, data + 1, len);
    }

    ll_error err = {{0}};
    ll_st_file *f = ll_st_open(fuzz_memfile(file, len), &err);
    if (!f) {
        FUZZ_CHECK(err.msg[0] != 0, "failure without a message");
        free(file);
        return 0;
    }
    FUZZ_CHECK(len >= 8, "a %zu-byte file opened", len);
    FUZZ_CHECK(ll_st_file_size(f) == len, "file size %zu, wrote %zu",
               ll_st_file_size(f), len);
    uint64_t hlen = 0;
    for (int i = 0; i < 8; i++) hlen |= (uint64_t)file[i] << (8 * i);
    FUZZ_CHECK(hlen <= len - 8, "header length %llu beyond the file",
               (unsigned long long)hlen);
    for (size_t i = 0; i < ll_st_count(f); i++) check_tensor(f, ll_st_at(f, i));
    FUZZ_CHECK(ll_st_at(f, ll_st_count(f)) == NULL, "ll_st_at past the end");
    check_layout(f, len - 8 - hlen);
    check_against_header(f, file, len, hlen);
    ll_st_close(f);
    free(file);
    return 0;
}
