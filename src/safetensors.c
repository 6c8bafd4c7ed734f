/* safetensors.c - read (mmap) and write .safetensors files (see safetensors.h).
 *
 * Reading: the whole file is mapped read-only, the JSON header is parsed and
 * every entry validated against the data section before anything is handed
 * out, so later code can trust shapes, sizes and pointers.  Tensors are kept
 * in file order (for listing) plus an index sorted by name (for bsearch).
 * Overlapping tensors are rejected; gaps between tensors are tolerated, since
 * nothing ever reads them.
 *
 * Writing: header first, then each tensor straight from the caller's buffer
 * (a full-size GPT-2 is ~500 MB; no staging copy). */
#include "layerlens/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* The data section is little-endian; handing out F32 data as a pointer into
 * the mapping is only correct on a little-endian host. */
#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c assumes a little-endian host"
#endif

/* The reference implementation rejects headers above 100 MB; a real header is
 * a few tens of KB, so a larger length means a corrupt or foreign file. */
#define MAX_HEADER_BYTES 100000000ull

/* Converted buffers are aligned for SIMD/BLAS. */
#define F32_ALIGN 64

/* ------------------------------------------------------------------ dtypes */

typedef struct dtype_info {
    const char *name;
    ll_dtype dtype;
    int bits; /* per element; sub-byte types exist (F4, F6_*) */
} dtype_info;

/* Every dtype the format defines.  Only the first four are usable here; the
 * others are still validated (their sizes must add up) and listed. */
static const dtype_info DTYPES[] = {
    {"F32", LL_DT_F32, 32},       {"F16", LL_DT_F16, 16},
    {"BF16", LL_DT_BF16, 16},     {"I64", LL_DT_I64, 64},
    {"F64", LL_DT_OTHER, 64},     {"U64", LL_DT_OTHER, 64},
    {"C64", LL_DT_OTHER, 64},     {"I32", LL_DT_OTHER, 32},
    {"U32", LL_DT_OTHER, 32},     {"I16", LL_DT_OTHER, 16},
    {"U16", LL_DT_OTHER, 16},     {"I8", LL_DT_OTHER, 8},
    {"U8", LL_DT_OTHER, 8},       {"BOOL", LL_DT_OTHER, 8},
    {"F8_E5M2", LL_DT_OTHER, 8},  {"F8_E4M3", LL_DT_OTHER, 8},
    {"F8_E8M0", LL_DT_OTHER, 8},  {"F6_E2M3", LL_DT_OTHER, 6},
    {"F6_E3M2", LL_DT_OTHER, 6},  {"F4", LL_DT_OTHER, 4},
};

static const dtype_info *dtype_lookup(const char *name) {
    for (size_t i = 0; i < sizeof DTYPES / sizeof DTYPES[0]; i++)
        if (strcmp(DTYPES[i].name, name) == 0) return &DTYPES[i];
    return NULL;
}

/* ------------------------------------------------------------------ types */

/* One tensor.  `t` comes first so that &entry->t is what the API hands out. */
typedef struct entry {
    ll_st_tensor t;
    uint64_t begin, end; /* data_offsets, relative to the data section */
    float *f32;          /* owned float32 values (F16/BF16/unaligned F32),
                            made on first request; guarded by file->lock */
} entry;

struct ll_st_file {
    char *path;
    const uint8_t *map;
    size_t size;
    const uint8_t *data; /* start of the data section */
    uint64_t data_size;
    entry *e;            /* in file order (by data offset) */
    size_t n;
    entry **by_name;     /* sorted by name */
    pthread_mutex_t lock;
    int fd;              /* kept open for ll_st_read_f32 */
};

/* ---------------------------------------------------------------- helpers */

static const char *json_kind(const json_t *v) {
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "object";
    case JSON_ARRAY: return "list";
    case JSON_STRING: return "string";
    case JSON_INTEGER: return "integer";
    case JSON_REAL: return "real number";
    case JSON_TRUE:
    case JSON_FALSE: return "boolean";
    case JSON_NULL: return "null";
    }
    return "value";
}

/* "[1, 77]" (or "[]" for a scalar) into buf. */
static const char *shape_str(char *buf, size_t cap, int ndim,
                             const int64_t *shape) {
    size_t k = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < ndim && k < cap; i++)
        k += (size_t)snprintf(buf + k, cap - k, "%s%" PRId64, i ? ", " : "",
                              shape[i]);
    if (k < cap) snprintf(buf + k, cap - k, "]");
    return buf;
}

/* Error about one header entry: "FILE: tensor 'NAME': <problem>". */
__attribute__((format(printf, 4, 5)))
static int entry_error(ll_error *err, const char *path, const char *name,
                       const char *fmt, ...) {
    char what[LL_ERROR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return ll_errorf(err, "%s: tensor '%s': %s", path, name, what);
}

/* A JSON integer >= 0, or -1. */
static int64_t json_nonneg(const json_t *v) {
    if (!json_is_integer(v)) return -1;
    json_int_t x = json_integer_value(v);
    return x < 0 ? -1 : (int64_t)x;
}

/* ------------------------------------------------------------------ open */

static int map_file(ll_st_file *f, ll_error *err) {
    int fd = open(f->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return ll_errorf(err, "%s: cannot open: %s", f->path, strerror(errno));
    struct stat st;
    int rc = -1;
    if (fstat(fd, &st) != 0)
        ll_errorf(err, "%s: cannot stat: %s", f->path, strerror(errno));
    else if (!S_ISREG(st.st_mode))
        ll_errorf(err, "%s: not a regular file", f->path);
    else if (st.st_size == 0)
        ll_errorf(err, "%s: file is empty, not a safetensors file", f->path);
    else if (st.st_size < 8)
        ll_errorf(err, "%s: file is too short (%lld bytes) to hold the 8-byte "
                  "header length", f->path, (long long)st.st_size);
    else if ((uint64_t)st.st_size > SIZE_MAX)
        ll_errorf(err, "%s: file too large to map", f->path);
    else {
        void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            ll_errorf(err, "%s: cannot mmap: %s", f->path, strerror(errno));
        } else {
            f->map = p;
            f->size = (size_t)st.st_size;
            rc = 0;
        }
    }
    if (rc == 0) f->fd = fd; /* for ll_st_read_f32 */
    else close(fd);
    return rc;
}

static int parse_dtype(const char *path, const char *name, const json_t *v,
                       entry *e, int *bits, ll_error *err) {
    if (!v) return entry_error(err, path, name, "no \"dtype\"");
    if (!json_is_string(v))
        return entry_error(err, path, name, "dtype must be a string, not a %s",
                           json_kind(v));
    const dtype_info *d = dtype_lookup(json_string_value(v));
    if (!d)
        return entry_error(err, path, name, "unknown dtype '%s'",
                           json_string_value(v));
    e->t.dtype = d->dtype;
    e->t.dtype_name = d->name;
    *bits = d->bits;
    return 0;
}

static int parse_shape(const char *path, const char *name, const json_t *v,
                       entry *e, ll_error *err) {
    if (!v) return entry_error(err, path, name, "no \"shape\"");
    if (!json_is_array(v))
        return entry_error(err, path, name, "shape must be a list of "
                           "non-negative integers, not a %s", json_kind(v));
    size_t nd = json_array_size(v);
    if (nd > LL_ST_MAX_DIMS)
        return entry_error(err, path, name, "shape has %zu dimensions, more "
                           "than the %d supported", nd, LL_ST_MAX_DIMS);
    for (size_t i = 0; i < nd; i++) {
        const json_t *d = json_array_get(v, i);
        int64_t x = json_nonneg(d);
        if (x < 0)
            return entry_error(err, path, name, "shape[%zu] must be a "
                               "non-negative integer, got %s%s", i,
                               json_is_integer(d) ? "a negative " : "a ",
                               json_kind(d));
        e->t.shape[i] = x;
    }
    e->t.ndim = (int)nd;
    return 0;
}

static int parse_offsets(const char *path, const char *name, const json_t *v,
                         entry *e, ll_error *err) {
    if (!v) return entry_error(err, path, name, "no \"data_offsets\"");
    int64_t b = -1, en = -1;
    if (json_is_array(v) && json_array_size(v) == 2) {
        b = json_nonneg(json_array_get(v, 0));
        en = json_nonneg(json_array_get(v, 1));
    }
    if (b < 0 || en < 0)
        return entry_error(err, path, name, "data_offsets must be [begin, end] "
                           "with two non-negative integers");
    if (b > en)
        return entry_error(err, path, name, "data_offsets [%" PRId64 ", %"
                           PRId64 "] have begin > end", b, en);
    e->begin = (uint64_t)b;
    e->end = (uint64_t)en;
    return 0;
}

/* Bytes that `bits`-bit elements of this shape take; -1 (with the error set)
 * on overflow or a sub-byte total that is not a whole number of bytes. */
static int expected_bytes(const char *path, const char *name, const entry *e,
                          int bits, uint64_t *out, ll_error *err) {
    uint64_t numel = 1;
    int zero = 0;
    for (int i = 0; i < e->t.ndim; i++) zero |= e->t.shape[i] == 0;
    for (int i = 0; i < e->t.ndim && !zero; i++) {
        uint64_t d = (uint64_t)e->t.shape[i];
        if (numel > UINT64_MAX / d)
            return entry_error(err, path, name, "shape overflows 64 bits");
        numel *= d;
    }
    if (zero) numel = 0;
    if (numel > UINT64_MAX / (uint64_t)bits)
        return entry_error(err, path, name, "shape overflows 64 bits");
    uint64_t nbits = numel * (uint64_t)bits;
    if (nbits % 8)
        return entry_error(err, path, name, "%" PRIu64 " %s elements are not "
                           "a whole number of bytes", numel, e->t.dtype_name);
    *out = nbits / 8;
    return 0;
}

static int parse_entry(ll_st_file *f, const char *name, const json_t *v,
                       entry *e, ll_error *err) {
    if (!json_is_object(v))
        return entry_error(err, f->path, name, "entry must be an object, not "
                           "a %s", json_kind(v));
    int bits = 0;
    uint64_t want = 0;
    if (parse_dtype(f->path, name, json_object_get(v, "dtype"), e, &bits, err) ||
        parse_shape(f->path, name, json_object_get(v, "shape"), e, err) ||
        parse_offsets(f->path, name, json_object_get(v, "data_offsets"), e, err) ||
        expected_bytes(f->path, name, e, bits, &want, err))
        return -1;
    char sh[256];
    if (e->end - e->begin != want)
        return entry_error(err, f->path, name, "data_offsets [%" PRIu64 ", %"
                           PRIu64 "] hold %" PRIu64 " bytes but dtype %s x "
                           "shape %s needs %" PRIu64, e->begin, e->end,
                           e->end - e->begin, e->t.dtype_name,
                           shape_str(sh, sizeof sh, e->t.ndim, e->t.shape), want);
    if (e->end > f->data_size)
        return entry_error(err, f->path, name, "data_offsets [%" PRIu64 ", %"
                           PRIu64 "] reach beyond the end of the data section "
                           "(%" PRIu64 " bytes; is the file truncated?)",
                           e->begin, e->end, f->data_size);
    e->t.nbytes = (size_t)want;
    return 0;
}

static int cmp_offset(const void *a, const void *b) {
    const entry *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

static int cmp_name(const void *a, const void *b) {
    return strcmp((*(entry *const *)a)->t.name, (*(entry *const *)b)->t.name);
}

static int cmp_name_key(const void *key, const void *elem) {
    return strcmp(key, (*(entry *const *)elem)->t.name);
}

/* Sorts by offset and rejects tensors that share bytes (empty tensors occupy
 * nothing and can sit anywhere). */
static int check_overlaps(ll_st_file *f, ll_error *err) {
    qsort(f->e, f->n, sizeof *f->e, cmp_offset);
    const entry *last = NULL; /* the non-empty tensor reaching furthest */
    for (size_t i = 0; i < f->n; i++) {
        const entry *e = &f->e[i];
        if (e->begin == e->end) continue;
        if (last && e->begin < last->end)
            return ll_errorf(err, "%s: tensors '%s' [%" PRIu64 ", %" PRIu64
                             ") and '%s' [%" PRIu64 ", %" PRIu64 ") overlap",
                             f->path, last->t.name, last->begin, last->end,
                             e->t.name, e->begin, e->end);
        if (!last || e->end > last->end) last = e;
    }
    return 0;
}

static int parse_header(ll_st_file *f, ll_error *err) {
    uint64_t hlen = 0;
    for (int i = 0; i < 8; i++) hlen |= (uint64_t)f->map[i] << (8 * i);
    uint64_t rest = (uint64_t)f->size - 8;
    if (hlen > rest)
        return ll_errorf(err, "%s: header length %" PRIu64 " is larger than "
                         "the rest of the file (%" PRIu64 " bytes): truncated "
                         "or not a safetensors file", f->path, hlen, rest);
    if (hlen > MAX_HEADER_BYTES)
        return ll_errorf(err, "%s: header length %" PRIu64 " is absurd (over "
                         "%llu bytes): corrupt or not a safetensors file",
                         f->path, hlen, MAX_HEADER_BYTES);
    f->data = f->map + 8 + hlen;
    f->data_size = rest - hlen;

    json_error_t je;
    json_t *root = json_loadb((const char *)f->map + 8, (size_t)hlen,
                              JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &je);
    if (!root)
        return ll_errorf(err, "%s: header is not valid JSON: %s (at byte %d "
                         "of the header)", f->path, je.text, je.position);
    int rc = -1;
    if (!json_is_object(root)) {
        ll_errorf(err, "%s: header is a JSON %s, not an object", f->path,
                  json_kind(root));
        goto done;
    }
    size_t cap = json_object_size(root);
    f->e = calloc(cap ? cap : 1, sizeof *f->e);
    f->by_name = calloc(cap ? cap : 1, sizeof *f->by_name);
    if (!f->e || !f->by_name) {
        ll_errorf(err, "%s: out of memory", f->path);
        goto done;
    }
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        if (strcmp(key, "__metadata__") == 0) continue; /* free-form strings */
        entry *e = &f->e[f->n++];
        if (!(e->t.name = strdup(key))) {
            ll_errorf(err, "%s: out of memory", f->path);
            goto done;
        }
        if (parse_entry(f, key, v, e, err)) goto done;
    }
    if (check_overlaps(f, err)) goto done;
    for (size_t i = 0; i < f->n; i++) {
        f->e[i].t.data = f->data + f->e[i].begin;
        f->by_name[i] = &f->e[i];
    }
    qsort(f->by_name, f->n, sizeof *f->by_name, cmp_name);
    rc = 0;
done:
    json_decref(root);
    return rc;
}

ll_st_file *ll_st_open(const char *path, ll_error *err) {
    ll_st_file *f = calloc(1, sizeof *f);
    if (!f) {
        ll_errorf(err, "%s: out of memory", path);
        return NULL;
    }
    pthread_mutex_init(&f->lock, NULL);
    f->fd = -1;
    if (!(f->path = strdup(path))) {
        ll_errorf(err, "%s: out of memory", path);
        ll_st_close(f);
        return NULL;
    }
    if (map_file(f, err) || parse_header(f, err)) {
        ll_st_close(f);
        return NULL;
    }
    return f;
}

void ll_st_close(ll_st_file *f) {
    if (!f) return;
    for (size_t i = 0; i < f->n; i++) {
        free(f->e[i].t.name);
        free(f->e[i].f32);
    }
    free(f->e);
    free(f->by_name);
    if (f->map) munmap((void *)f->map, f->size);
    if (f->fd >= 0) close(f->fd);
    pthread_mutex_destroy(&f->lock);
    free(f->path);
    free(f);
}

/* ---------------------------------------------------------------- lookup */

size_t ll_st_count(const ll_st_file *f) { return f->n; }

const ll_st_tensor *ll_st_at(const ll_st_file *f, size_t i) {
    return i < f->n ? &f->e[i].t : NULL;
}

static entry *find_entry(const ll_st_file *f, const char *name) {
    entry **p = bsearch(name, f->by_name, f->n, sizeof *f->by_name,
                        cmp_name_key);
    return p ? *p : NULL;
}

const ll_st_tensor *ll_st_find(const ll_st_file *f, const char *name) {
    entry *e = find_entry(f, name);
    return e ? &e->t : NULL;
}

size_t ll_st_file_size(const ll_st_file *f) { return f->size; }

/* ------------------------------------------------------- float conversion */

/* IEEE 754 binary16 -> binary32, exact for every input (including
 * subnormals, infinities and NaN payloads). */
static float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
    uint32_t bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (mant << 13);
    } else if (exp != 0) {
        bits = sign | ((exp + (127 - 15)) << 23) | (mant << 13);
    } else {
        /* zero or subnormal: mant * 2^-24 is exact in float32 */
        float v = (float)mant * 0x1p-24f;
        memcpy(&bits, &v, sizeof bits);
        bits |= sign;
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* bfloat16 is the upper half of a float32. */
static float bf16_to_float(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* A freshly allocated float32 copy of e's values (NULL when out of memory).
 * Source bytes may be unaligned, hence memcpy for every element. */
static float *to_f32(const entry *e) {
    size_t elem = e->t.dtype == LL_DT_F32 ? 4 : 2;
    size_t n = e->t.nbytes / elem;
    size_t bytes = (n * sizeof(float) + F32_ALIGN - 1) / F32_ALIGN * F32_ALIGN;
    float *out = aligned_alloc(F32_ALIGN, bytes ? bytes : F32_ALIGN);
    if (!out) return NULL;
    const uint8_t *src = e->t.data;
    if (e->t.dtype == LL_DT_F32) {
        memcpy(out, src, e->t.nbytes);
        return out;
    }
    for (size_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, src + 2 * i, 2);
        out[i] = e->t.dtype == LL_DT_F16 ? half_to_float(h) : bf16_to_float(h);
    }
    return out;
}

/* The owned float32 copy of e, made once; the lock makes concurrent first
 * requests safe (and cheap afterwards: loading happens at start-up). */
static const float *owned_f32(ll_st_file *f, entry *e, ll_error *err) {
    pthread_mutex_lock(&f->lock);
    if (!e->f32) e->f32 = to_f32(e);
    const float *p = e->f32;
    pthread_mutex_unlock(&f->lock);
    if (!p)
        ll_errorf(err, "%s: out of memory converting tensor '%s' to float32",
                  f->path, e->t.name);
    return p;
}

static int same_shape(const ll_st_tensor *t, int ndim, const int64_t *shape) {
    if (t->ndim != ndim) return 0;
    for (int i = 0; i < ndim; i++)
        if (t->shape[i] != shape[i]) return 0;
    return 1;
}

const float *ll_st_get_f32(ll_st_file *f, const char *name, int ndim,
                           const int64_t *shape, ll_error *err) {
    if (ndim < 0 || ndim > LL_ST_MAX_DIMS || (ndim > 0 && !shape)) {
        ll_errorf(err, "tensor '%s' in %s: invalid expected shape (%d "
                  "dimensions)", name, f->path, ndim);
        return NULL;
    }
    entry *e = find_entry(f, name);
    if (!e) {
        ll_errorf(err, "tensor '%s' is missing from %s", name, f->path);
        return NULL;
    }
    if (!same_shape(&e->t, ndim, shape)) {
        char got[256], want[256];
        ll_errorf(err, "tensor '%s' in %s has shape %s but %s was expected",
                  name, f->path, shape_str(got, sizeof got, e->t.ndim, e->t.shape),
                  shape_str(want, sizeof want, ndim, shape));
        return NULL;
    }
    switch (e->t.dtype) {
    case LL_DT_F32:
        if ((uintptr_t)e->t.data % _Alignof(float) == 0) return e->t.data;
        return owned_f32(f, e, err);
    case LL_DT_F16:
    case LL_DT_BF16:
        return owned_f32(f, e, err);
    default:
        ll_errorf(err, "tensor '%s' in %s has dtype %s, but float values "
                  "(F32, F16 or BF16) were expected", name, f->path,
                  e->t.dtype_name);
        return NULL;
    }
}

/* ----------------------------------------------------------------- write */

static int write_all(int fd, const char *name, const void *buf, size_t len,
                     ll_error *err) {
    const uint8_t *p = buf;
    while (len > 0) {
        /* Linux transfers at most ~2 GiB per call; ask for 1 GiB at a time */
        size_t chunk = len < ((size_t)1 << 30) ? len : (size_t)1 << 30;
        ssize_t w = write(fd, p, chunk);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) return ll_errorf(err, "cannot write %s: %s", name, strerror(errno));
        if (w == 0) return ll_errorf(err, "cannot write %s: no progress", name);
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

/* Bytes of one output tensor, checking the description. */
static int out_bytes(const char *name, const ll_st_out *t, uint64_t *out,
                     ll_error *err) {
    if (!t->name)
        return ll_errorf(err, "cannot write %s: a tensor has no name", name);
    if (strcmp(t->name, "__metadata__") == 0)
        return ll_errorf(err, "cannot write %s: '__metadata__' is reserved",
                         name);
    if (t->ndim < 0 || t->ndim > LL_ST_MAX_DIMS)
        return ll_errorf(err, "cannot write %s: tensor '%s' has %d dimensions",
                         name, t->name, t->ndim);
    uint64_t n = 4;
    for (int i = 0; i < t->ndim; i++) {
        if (t->shape[i] < 0)
            return ll_errorf(err, "cannot write %s: tensor '%s' has a negative "
                             "dimension", name, t->name);
        if (t->shape[i] && n > (uint64_t)INT64_MAX / (uint64_t)t->shape[i])
            return ll_errorf(err, "cannot write %s: tensor '%s' is too large",
                             name, t->name);
        n *= (uint64_t)t->shape[i];
    }
    if (n && !t->data)
        return ll_errorf(err, "cannot write %s: tensor '%s' has no data", name,
                         t->name);
    *out = n;
    return 0;
}

static json_t *json_shape(const ll_st_out *t) {
    json_t *a = json_array();
    for (int i = 0; a && i < t->ndim; i++)
        json_array_append_new(a, json_integer(t->shape[i]));
    return a;
}

/* The compact JSON header, space-padded to a multiple of 8 bytes so that the
 * data section starts 8-byte aligned. */
static char *make_header(const char *name, const ll_st_out *ts, size_t n,
                         size_t *len, ll_error *err) {
    json_t *root = json_object(), *meta = json_object();
    char *text = NULL;
    if (!root || !meta || json_object_set_new(root, "__metadata__", meta)) {
        if (!root) json_decref(meta);
        ll_errorf(err, "cannot write %s: out of memory", name);
        goto done;
    }
    json_object_set_new(meta, "format", json_string("pt"));
    uint64_t off = 0, nb;
    for (size_t i = 0; i < n; i++) {
        if (out_bytes(name, &ts[i], &nb, err)) goto done;
        if (json_object_get(root, ts[i].name)) {
            ll_errorf(err, "cannot write %s: tensor name '%s' appears twice",
                      name, ts[i].name);
            goto done;
        }
        json_t *e = json_pack("{s:s, s:o, s:[I, I]}", "dtype", "F32",
                              "shape", json_shape(&ts[i]), "data_offsets",
                              (json_int_t)off, (json_int_t)(off + nb));
        if (!e || json_object_set_new(root, ts[i].name, e)) {
            ll_errorf(err, "cannot write %s: cannot encode tensor '%s' (name "
                      "not UTF-8, or out of memory)", name, ts[i].name);
            goto done;
        }
        off += nb;
    }
    text = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!text) {
        ll_errorf(err, "cannot write %s: out of memory", name);
        goto done;
    }
    size_t k = strlen(text), padded = (k + 7) / 8 * 8;
    char *p = realloc(text, padded + 1);
    if (!p) {
        free(text);
        text = NULL;
        ll_errorf(err, "cannot write %s: out of memory", name);
        goto done;
    }
    text = p;
    memset(text + k, ' ', padded - k);
    text[padded] = 0;
    *len = padded;
done:
    json_decref(root);
    return text;
}

int ll_st_write_fd(int fd, const char *name, const ll_st_out *ts, size_t n,
                   ll_error *err) {
    size_t hlen;
    char *hdr = make_header(name, ts, n, &hlen, err);
    if (!hdr) return -1;
    uint8_t len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (uint8_t)((uint64_t)hlen >> (8 * i));
    int rc = write_all(fd, name, len8, sizeof len8, err) ||
             write_all(fd, name, hdr, hlen, err);
    free(hdr);
    for (size_t i = 0; i < n && !rc; i++) {
        uint64_t nb = 0;
        out_bytes(name, &ts[i], &nb, err); /* already checked */
        rc = write_all(fd, name, ts[i].data, (size_t)nb, err);
    }
    return rc ? -1 : 0;
}

int ll_st_write(const char *path, const ll_st_out *ts, size_t n,
                ll_error *err) {
    size_t plen = strlen(path);
    char *tmp = malloc(plen + sizeof ".tmp-XXXXXX");
    if (!tmp) return ll_errorf(err, "cannot write %s: out of memory", path);
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp-XXXXXX", sizeof ".tmp-XXXXXX");
    int fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0) {
        ll_errorf(err, "cannot create %s: %s", tmp, strerror(errno));
        free(tmp);
        return -1;
    }
    int rc = 0;
    if (fchmod(fd, 0644) != 0)
        rc = ll_errorf(err, "cannot write %s: %s", path, strerror(errno));
    if (!rc) rc = ll_st_write_fd(fd, path, ts, n, err);
    if (close(fd) != 0 && !rc)
        rc = ll_errorf(err, "cannot write %s: %s", path, strerror(errno));
    if (!rc && rename(tmp, path) != 0)
        rc = ll_errorf(err, "cannot rename %s to %s: %s", tmp, path,
                       strerror(errno));
    if (rc) unlink(tmp);
    free(tmp);
    return rc;
}

int ll_st_read_f32(const ll_st_file *f, const float *p, float *dst, size_t n) {
    const uint8_t *b = (const uint8_t *)p;
    size_t bytes = n * sizeof(float);
    if (f->fd < 0 || b < f->map || b > f->map + f->size || bytes > (size_t)(f->map + f->size - b)) {
        memcpy(dst, p, bytes); /* not in the mapping: a converted copy */
        return 0;
    }
    off_t off = (off_t)(b - f->map);
    for (size_t done = 0; done < bytes;) {
        ssize_t r = pread(f->fd, (char *)dst + done, bytes - done, off + (off_t)done);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            if (r == 0) errno = EIO; /* the file shrank */
            return -1;
        }
        done += (size_t)r;
    }
    return 0;
}
