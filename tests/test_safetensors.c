/* test_safetensors.c - the .safetensors reader and writer.
 *
 * The fixture checkpoints are checked against facts stated in
 * fixtures/README.md (tensor counts, shapes, header lengths, the causal-mask
 * buffer, logit_scale = ln 100, position_ids = 0..76).  Corrupt files and the
 * F16/BF16 inputs are built byte by byte here, with expected values taken from
 * the IEEE 754 / bfloat16 definitions. */
#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <dirent.h>

#include "layerlens/safetensors.h"

#define GPT2_ST "fixtures/models/gpt2-tiny/model.safetensors"
#define CLIP_ST "fixtures/models/clip-tiny/model.safetensors"

/* ---------------------------------------------------------------- helpers */

static ll_st_file *open_ok(const char *path) {
    ll_error err = {{0}};
    ll_st_file *f = ll_st_open(path, &err);
    if (!f) fail_msg("ll_st_open(%s): %s", path, err.msg);
    return f;
}

static const ll_st_tensor *find_ok(const ll_st_file *f, const char *name) {
    const ll_st_tensor *t = ll_st_find(f, name);
    if (!t) fail_msg("tensor '%s' not found", name);
    return t;
}

static void assert_shape(const ll_st_tensor *t, int ndim, const int64_t *shape) {
    assert_int_equal(t->ndim, ndim);
    for (int i = 0; i < ndim; i++) assert_int_equal(t->shape[i], shape[i]);
}

static void assert_contains(const char *msg, const char *needle) {
    if (!strstr(msg, needle))
        fail_msg("error message \"%s\" lacks \"%s\"", msg, needle);
}

static void write_file(const char *path, const void *buf, size_t len) {
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(buf, 1, len, fp), len);
    assert_int_equal(fclose(fp), 0);
}

/* Little-endian u64 header length + header text + `data_len` bytes of data
 * (the data bytes, when given, else a counting pattern). */
static void write_st(const char *path, const char *header, const void *data,
                     size_t data_len) {
    size_t hlen = strlen(header);
    unsigned char *buf = malloc(8 + hlen + data_len + 1);
    assert_non_null(buf);
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
    memcpy(buf + 8, header, hlen);
    for (size_t i = 0; i < data_len; i++)
        buf[8 + hlen + i] = data ? ((const unsigned char *)data)[i]
                                 : (unsigned char)i;
    write_file(path, buf, 8 + hlen + data_len);
    free(buf);
}

static const char *tmp_path(const char *dir, const char *name) {
    static char bufs[4][4300];
    static int next;
    char *b = bufs[next++ % 4];
    snprintf(b, sizeof bufs[0], "%s/%s", dir, name);
    return b;
}

/* ll_st_open must fail, naming the file and the problem. */
static void expect_open_error(const char *path, const char *problem) {
    ll_error err = {{0}};
    ll_st_file *f = ll_st_open(path, &err);
    if (f) {
        ll_st_close(f);
        fail_msg("%s opened, expected an error containing \"%s\"", path, problem);
    }
    assert_contains(err.msg, path);
    assert_contains(err.msg, problem);
}

/* A header (with 16 data bytes) that must be rejected. */
static void expect_header_error(const char *dir, const char *header,
                                const char *problem) {
    const char *p = tmp_path(dir, "bad.safetensors");
    write_st(p, header, NULL, 16);
    expect_open_error(p, problem);
}

static uint64_t file_header_len(const char *path) {
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    unsigned char b[8];
    assert_int_equal(fread(b, 1, 8, fp), 8);
    fclose(fp);
    uint64_t n = 0;
    for (int i = 0; i < 8; i++) n |= (uint64_t)b[i] << (8 * i);
    return n;
}

static long file_size(const char *path) {
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fclose(fp);
    return n;
}

/* Every tensor is found by its own name, tensors are listed in file order,
 * and together they fill the data section exactly (the fixtures are packed
 * without gaps, README "safetensors details"). */
static void check_listing(const ll_st_file *f, const char *path,
                          uint64_t header_len) {
    size_t total = 0;
    const char *prev = NULL;
    for (size_t i = 0; i < ll_st_count(f); i++) {
        const ll_st_tensor *t = ll_st_at(f, i);
        assert_non_null(t);
        assert_ptr_equal(ll_st_find(f, t->name), t);
        if (prev) assert_true((const char *)t->data >= prev);
        prev = t->data;
        total += t->nbytes;
    }
    assert_null(ll_st_at(f, ll_st_count(f)));
    assert_int_equal(file_header_len(path), header_len);
    assert_int_equal(ll_st_file_size(f), (size_t)file_size(path));
    assert_int_equal(total, ll_st_file_size(f) - 8 - header_len);
}

/* ---------------------------------------------------------------- fixtures */

static void test_gpt2_fixture(void **state) {
    const char *path = tu_path(GPT2_ST);
    ll_st_file *f = open_ok(path);
    assert_int_equal(ll_st_count(f), 56);
    check_listing(f, path, 4808);

    const ll_st_tensor *wte = find_ok(f, "wte.weight");
    assert_int_equal(wte->dtype, LL_DT_F32);
    assert_string_equal(wte->dtype_name, "F32");
    assert_shape(wte, 2, (int64_t[]){50257, 64});
    assert_shape(find_ok(f, "h.3.mlp.c_fc.weight"), 2, (int64_t[]){64, 256});
    assert_shape(find_ok(f, "h.2.attn.c_attn.bias"), 1, (int64_t[]){192});
    assert_null(ll_st_find(f, "lm_head.weight")); /* tied, not stored */
    assert_null(ll_st_find(f, "wte.weigh"));      /* exact names only */
    assert_null(ll_st_find(f, "transformer.wte.weight"));

    /* h.0.attn.bias is the [1,1,1024,1024] lower-triangular 0/1 mask; F32
     * at an aligned offset comes back as a pointer into the mapping. */
    ll_error err = {{0}};
    const int64_t mshape[4] = {1, 1, 1024, 1024};
    const ll_st_tensor *mt = find_ok(f, "h.0.attn.bias");
    const float *mask = ll_st_get_f32(f, "h.0.attn.bias", 4, mshape, &err);
    assert_non_null(mask);
    assert_ptr_equal(mask, mt->data);
    long bad = 0;
    for (int i = 0; i < 1024; i++)
        for (int j = 0; j < 1024; j++)
            bad += mask[i * 1024 + j] != (j <= i ? 1.0f : 0.0f);
    assert_int_equal(bad, 0);

    /* LayerNorm weights are 1 + N(0, 0.1): mean of 64 near 1, all finite */
    const float *ln = ll_st_get_f32(f, "h.1.ln_2.weight", 1, (int64_t[]){64}, &err);
    assert_non_null(ln);
    double mean = 0;
    for (int i = 0; i < 64; i++) {
        assert_true(isfinite(ln[i]));
        mean += ln[i] / 64.0;
    }
    assert_true(fabs(mean - 1.0) < 0.1);

    ll_st_close(f);
}

static void test_clip_fixture(void **state) {
    const char *path = tu_path(CLIP_ST);
    ll_st_file *f = open_ok(path);
    assert_int_equal(ll_st_count(f), 75);
    check_listing(f, path, 8488);

    assert_shape(find_ok(f, "text_model.embeddings.token_embedding.weight"), 2,
                 (int64_t[]){49408, 64});
    assert_shape(find_ok(f, "vision_model.embeddings.patch_embedding.weight"),
                 4, (int64_t[]){32, 3, 4, 4});
    assert_shape(find_ok(f, "text_projection.weight"), 2, (int64_t[]){32, 64});

    /* 0-d logit_scale = ln(100) */
    const ll_st_tensor *ls = find_ok(f, "logit_scale");
    assert_int_equal(ls->ndim, 0);
    assert_int_equal(ls->nbytes, 4);
    ll_error err = {{0}};
    const float *v = ll_st_get_f32(f, "logit_scale", 0, NULL, &err);
    assert_non_null(v);
    assert_true(fabs((double)v[0] - log(100.0)) < 1e-6);

    /* position_ids: I64 [1, 77] = 0..76, and not readable as floats */
    const ll_st_tensor *pid = find_ok(f, "text_model.embeddings.position_ids");
    assert_int_equal(pid->dtype, LL_DT_I64);
    assert_string_equal(pid->dtype_name, "I64");
    assert_shape(pid, 2, (int64_t[]){1, 77});
    assert_int_equal(pid->nbytes, 77 * 8);
    for (int i = 0; i < 77; i++) {
        int64_t x;
        memcpy(&x, (const char *)pid->data + 8 * i, 8);
        assert_int_equal(x, i);
    }
    assert_null(ll_st_get_f32(f, "text_model.embeddings.position_ids", 2,
                              (int64_t[]){1, 77}, &err));
    assert_contains(err.msg, "text_model.embeddings.position_ids");
    assert_contains(err.msg, "I64");
    assert_contains(err.msg, path);

    ll_st_close(f);
}

static void test_get_f32_errors(void **state) {
    const char *path = tu_path(GPT2_ST);
    ll_st_file *f = open_ok(path);
    ll_error err = {{0}};
    char want[5000];

    assert_null(ll_st_get_f32(f, "h.0.ln_1.weight", 1, (int64_t[]){768}, &err));
    snprintf(want, sizeof want, "tensor 'h.0.ln_1.weight' in %s has shape [64] "
             "but [768] was expected", path);
    assert_string_equal(err.msg, want);

    assert_null(ll_st_get_f32(f, "h.0.ln_1.weight", 2, (int64_t[]){1, 64}, &err));
    assert_contains(err.msg, "has shape [64] but [1, 64] was expected");

    assert_null(ll_st_get_f32(f, "wte.weight", 2, (int64_t[]){64, 50257}, &err));
    assert_contains(err.msg, "has shape [50257, 64] but [64, 50257]");

    assert_null(ll_st_get_f32(f, "h.4.ln_1.weight", 1, (int64_t[]){64}, &err));
    snprintf(want, sizeof want, "tensor 'h.4.ln_1.weight' is missing from %s", path);
    assert_string_equal(err.msg, want);

    assert_null(ll_st_get_f32(f, "h.0.ln_1.weight", -1, NULL, &err));
    assert_null(ll_st_get_f32(f, "h.0.ln_1.weight", LL_ST_MAX_DIMS + 1,
                              (int64_t[LL_ST_MAX_DIMS + 1]){0}, &err));
    ll_st_close(f);
}

/* ------------------------------------------------------------ bad files */

static void test_bad_files(void **state) {
    const char *dir = tu_tmpdir();
    const char *p = tmp_path(dir, "x.safetensors");

    write_file(p, "", 0);
    expect_open_error(p, "empty");

    write_file(p, "\x10\0\0\0\0", 5);
    expect_open_error(p, "too short (5 bytes)");

    expect_open_error(tmp_path(dir, "absent.safetensors"), "cannot open");
    expect_open_error(dir, "not a regular file");

    /* header length beyond the file, also a huge one */
    unsigned char big[10] = {0xe8, 0x03, 0, 0, 0, 0, 0, 0, '{', '}'};
    write_file(p, big, sizeof big);
    expect_open_error(p, "header length 1000 is larger than the rest of the file (2 bytes)");
    unsigned char huge[10] = {0, 0, 0, 0, 0, 0, 0, 0x80, '{', '}'};
    write_file(p, huge, sizeof huge);
    expect_open_error(p, "header length 9223372036854775808 is larger");

    /* A header length the file can hold but no real header has: a sparse
     * 200 MB file costs nothing on disk. */
    unsigned char absurd[8] = {0x00, 0xc2, 0xeb, 0x0b, 0, 0, 0, 0}; /* 200e6 */
    write_file(p, absurd, 8);
    int fd = open(p, O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, 8 + 200000000 + 16), 0);
    close(fd);
    expect_open_error(p, "header length 200000000 is absurd");
    unlink(p);
    rmdir(dir);
}

static void test_truncated_fixture(void **state) {
    /* the first 20 KB of the CLIP fixture: header intact, data cut short */
    const char *src = tu_path(CLIP_ST);
    const char *dir = tu_tmpdir();
    const char *p = tmp_path(dir, "cut.safetensors");
    FILE *in = fopen(src, "rb");
    assert_non_null(in);
    static char buf[20000];
    assert_int_equal(fread(buf, 1, sizeof buf, in), sizeof buf);
    fclose(in);
    write_file(p, buf, sizeof buf);
    expect_open_error(p, "reach beyond the end of the data section");
    expect_open_error(p, "truncated");
    unlink(p);
    rmdir(dir);
}

static void test_bad_headers(void **state) {
    const char *dir = tu_tmpdir();
    expect_header_error(dir, "{\"a\": {\"dtype\": \"F32\"", "header is not valid JSON");
    expect_header_error(dir, "", "header is not valid JSON");
    expect_header_error(dir, "[1, 2]", "header is a JSON list, not an object");
    expect_header_error(dir, "\"F32\"", "header is a JSON string, not an object");
    expect_header_error(dir, "{\"a\": 5}", "tensor 'a': entry must be an object, not a integer");
    expect_header_error(dir, "{\"a\": [0, 4]}", "tensor 'a': entry must be an object, not a list");
    /* field by field */
    expect_header_error(dir, "{\"w\": {\"shape\": [2], \"data_offsets\": [0, 8]}}",
                        "tensor 'w': no \"dtype\"");
    expect_header_error(dir, "{\"w\": {\"dtype\": 32, \"shape\": [2], \"data_offsets\": [0, 8]}}",
                        "dtype must be a string, not a integer");
    expect_header_error(dir, "{\"w\": {\"dtype\": \"F33\", \"shape\": [2], \"data_offsets\": [0, 8]}}",
                        "tensor 'w': unknown dtype 'F33'");
    expect_header_error(dir, "{\"w\": {\"dtype\": \"f32\", \"shape\": [2], \"data_offsets\": [0, 8]}}",
                        "unknown dtype 'f32'");
    expect_header_error(dir, "{\"w\": {\"dtype\": \"F32\", \"data_offsets\": [0, 8]}}",
                        "tensor 'w': no \"shape\"");
    expect_header_error(dir, "{\"w\": {\"dtype\": \"F32\", \"shape\": [-2], \"data_offsets\": [0, 8]}}",
                        "shape[0] must be a non-negative integer, got a negative integer");
    expect_header_error(dir, "{\"w\": {\"dtype\": \"F32\", \"shape\": [1, 2.0], \"data_offsets\": [0, 8]}}",
                        "shape[1] must be a non-negative integer, got a real number");
    expect_header_error(dir, "{\"w\": {\"dtype\": \"F32\", \"shape\": [\"2\"], \"data_offsets\": [0, 8]}}",
                        "shape[0] must be a non-negative integer, got a string");
    expect_header_error(dir, "{\"w\": {\"dtype\": \"F32\", \"shape\": 2, \"data_offsets\": [0, 8]}}",
                        "shape must be a list of non-negative integers, not a integer");
    expect_header_error(dir, "{\"w\": {\"dtype\": \"F32\", \"shape\": [1,1,1,1,1,1,1,1,2], \"data_offsets\": [0, 8]}}",
                        "shape has 9 dimensions");
    expect_header_error(dir, "{\"w\": {\"dtype\": \"F32\", \"shape\": [4611686018427387904, 4], \"data_offsets\": [0, 8]}}",
                        "shape overflows");
    expect_header_error(dir, "{\"w\": {\"dtype\": \"F32\", \"shape\": [4611686018427387904], \"data_offsets\": [0, 8]}}",
                        "shape overflows");
    expect_header_error(dir, "{\"w\": {\"dtype\": \"F32\", \"shape\": [2]}}",
                        "tensor 'w': no \"data_offsets\"");
    expect_header_error(dir, "{\"w\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [8]}}",
                        "data_offsets must be [begin, end]");
    expect_header_error(dir, "{\"w\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8, 16]}}",
                        "data_offsets must be [begin, end]");
    expect_header_error(dir, "{\"w\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [-8, 0]}}",
                        "data_offsets must be [begin, end]");
    expect_header_error(dir, "{\"w\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0.0, 8]}}",
                        "data_offsets must be [begin, end]");
    expect_header_error(dir, "{\"w\": {\"dtype\": \"F32\", \"shape\": [0], \"data_offsets\": [8, 0]}}",
                        "data_offsets [8, 0] have begin > end");
    /* offsets vs dtype x shape, and vs the 16-byte data section */
    expect_header_error(dir, "{\"w\": {\"dtype\": \"F32\", \"shape\": [3], \"data_offsets\": [0, 8]}}",
                        "tensor 'w': data_offsets [0, 8] hold 8 bytes but dtype F32 x shape [3] needs 12");
    expect_header_error(dir, "{\"w\": {\"dtype\": \"BF16\", \"shape\": [2, 2], \"data_offsets\": [0, 16]}}",
                        "hold 16 bytes but dtype BF16 x shape [2, 2] needs 8");
    expect_header_error(dir, "{\"w\": {\"dtype\": \"F32\", \"shape\": [], \"data_offsets\": [0, 0]}}",
                        "hold 0 bytes but dtype F32 x shape [] needs 4");
    expect_header_error(dir, "{\"w\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [12, 20]}}",
                        "tensor 'w': data_offsets [12, 20] reach beyond the end of the data section (16 bytes");
    expect_header_error(dir, "{\"w\": {\"dtype\": \"F4\", \"shape\": [3], \"data_offsets\": [0, 1]}}",
                        "3 F4 elements are not a whole number of bytes");
    /* overlapping tensors, listed in either order */
    expect_header_error(dir, "{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]},"
                             " \"b\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [4, 12]}}",
                        "tensors 'a' [0, 8) and 'b' [4, 12) overlap");
    expect_header_error(dir, "{\"b\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [8, 12]},"
                             " \"a\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 16]}}",
                        "tensors 'a' [0, 16) and 'b' [8, 12) overlap");
    expect_header_error(dir, "{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]},"
                             " \"b\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}}",
                        "overlap");
    /* duplicate names (JSON would silently keep the last one) */
    expect_header_error(dir, "{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]},"
                             " \"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [8, 16]}}",
                        "duplicate object key");
    /* names must be valid UTF-8 */
    expect_header_error(dir, "{\"\xff\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}}",
                        "header is not valid JSON");
    unlink(tmp_path(dir, "bad.safetensors"));
    rmdir(dir);
}

/* Things a valid file may contain. */
static void test_valid_variants(void **state) {
    const char *dir = tu_tmpdir();
    const char *p = tmp_path(dir, "ok.safetensors");
    /* keys not in offset order, metadata, a 0-d tensor, an empty tensor
     * sitting inside another one, a dtype we do not use, an unknown field
     * and a space-padded header */
    float vals[4] = {1.5f, -2.0f, 3.25f, 1e-3f};
    unsigned char data[32] = {0};
    memcpy(data, vals, sizeof vals);
    write_st(p, "{\"z\": {\"dtype\": \"F64\", \"shape\": [2], \"data_offsets\": [16, 32]},"
                " \"__metadata__\": {\"format\": \"pt\", \"note\": \"x\"},"
                " \"empty\": {\"dtype\": \"F32\", \"shape\": [3, 0], \"data_offsets\": [4, 4]},"
                " \"s\": {\"dtype\": \"F32\", \"shape\": [], \"data_offsets\": [12, 16]},"
                " \"a\": {\"dtype\": \"F32\", \"shape\": [1, 3], \"data_offsets\": [0, 12], \"extra\": 1}}     ",
             data, sizeof data);
    ll_st_file *f = open_ok(p);
    assert_int_equal(ll_st_count(f), 4);
    assert_null(ll_st_find(f, "__metadata__"));
    /* listed in file order */
    assert_string_equal(ll_st_at(f, 0)->name, "a");
    assert_string_equal(ll_st_at(f, 3)->name, "z");
    const ll_st_tensor *z = find_ok(f, "z");
    assert_int_equal(z->dtype, LL_DT_OTHER);
    assert_string_equal(z->dtype_name, "F64");
    assert_int_equal(z->nbytes, 16);

    ll_error err = {{0}};
    const float *a = ll_st_get_f32(f, "a", 2, (int64_t[]){1, 3}, &err);
    assert_non_null(a);
    assert_true(a[0] == 1.5f && a[1] == -2.0f && a[2] == 3.25f);
    const float *s = ll_st_get_f32(f, "s", 0, NULL, &err);
    assert_non_null(s);
    assert_true(s[0] == 1e-3f);
    assert_non_null(ll_st_get_f32(f, "empty", 2, (int64_t[]){3, 0}, &err));
    assert_int_equal(find_ok(f, "empty")->nbytes, 0);
    assert_null(ll_st_get_f32(f, "z", 1, (int64_t[]){2}, &err));
    assert_contains(err.msg, "has dtype F64");
    ll_st_close(f);

    /* an empty header object is a valid, empty file */
    write_st(p, "{}", NULL, 0);
    f = open_ok(p);
    assert_int_equal(ll_st_count(f), 0);
    assert_null(ll_st_find(f, "a"));
    assert_null(ll_st_at(f, 0));
    ll_st_close(f);

    /* sub-byte dtypes count bits: 4 F4 values are 2 bytes */
    write_st(p, "{\"q\": {\"dtype\": \"F4\", \"shape\": [4], \"data_offsets\": [0, 2]}}",
             NULL, 2);
    f = open_ok(p);
    assert_int_equal(find_ok(f, "q")->nbytes, 2);
    ll_st_close(f);
    unlink(p);
    rmdir(dir);
}

/* A header of odd length puts the data at an address that is not 4-byte
 * aligned: the floats must then be copied, once. */
static void test_unaligned_f32(void **state) {
    const char *dir = tu_tmpdir();
    const char *p = tmp_path(dir, "odd.safetensors");
    float vals[3] = {0.1f, -7.0f, 12345.5f};
    write_st(p, "{\"v\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12]}}  ",
             vals, sizeof vals); /* header: 57 bytes, data at offset 65 */
    ll_st_file *f = open_ok(p);
    const ll_st_tensor *t = find_ok(f, "v");
    assert_int_not_equal((uintptr_t)t->data % 4, 0);
    ll_error err = {{0}};
    const float *v = ll_st_get_f32(f, "v", 1, (int64_t[]){3}, &err);
    assert_non_null(v);
    assert_ptr_not_equal(v, t->data);
    assert_int_equal((uintptr_t)v % 4, 0);
    assert_memory_equal(v, vals, sizeof vals);
    assert_ptr_equal(ll_st_get_f32(f, "v", 1, (int64_t[]){3}, &err), v);
    ll_st_close(f);
    unlink(p);
    rmdir(dir);
}

/* ------------------------------------------------------------ F16, BF16 */

/* IEEE 754 binary16 bit patterns and their exact values. */
static const struct {
    uint16_t bits;
    float value;
} F16_CASES[] = {
    {0x3c00, 1.0f},
    {0xc100, -2.5f},
    {0x3800, 0.5f},
    {0x7bff, 65504.0f},                 /* largest finite */
    {0x0400, 0x1p-14f},                 /* smallest normal */
    {0x0001, 0x1p-24f},                 /* smallest subnormal */
    {0x03ff, 1023 * 0x1p-24f},          /* largest subnormal */
    {0x8200, -0x1p-15f},                /* negative subnormal (512 * 2^-24) */
    {0x3555, 0x1.554p-2f},              /* 0.333251953125 */
    {0x0000, 0.0f},
    {0x7c00, INFINITY},
    {0xfc00, -INFINITY},
};

/* bfloat16 = the upper 16 bits of a float32 */
static const struct {
    uint16_t bits;
    float value;
} BF16_CASES[] = {
    {0x3f80, 1.0f},
    {0xc020, -2.5f},
    {0x4049, 3.140625f},                /* pi truncated */
    {0x477f, 65280.0f},
    {0x7f7f, 0x1.fep127f},              /* largest finite */
    {0x0080, 0x1p-126f},                /* smallest normal */
    {0x0001, 0x1p-133f},                /* smallest subnormal */
    {0x7f80, INFINITY},
    {0xff80, -INFINITY},
};

#define NF16 (sizeof F16_CASES / sizeof F16_CASES[0])
#define NBF16 (sizeof BF16_CASES / sizeof BF16_CASES[0])

/* A file with tensor "h" (F16: the cases + -0 + NaN) and "b" (BF16: the
 * cases + NaN), little-endian. */
static const char *write_half_file(const char *dir) {
    unsigned char data[64] = {0};
    size_t k = 0;
    for (size_t i = 0; i < NF16; i++) {
        data[k++] = F16_CASES[i].bits & 0xff;
        data[k++] = F16_CASES[i].bits >> 8;
    }
    data[k++] = 0x00, data[k++] = 0x80; /* -0 */
    data[k++] = 0x00, data[k++] = 0x7e; /* NaN */
    size_t boff = k;
    for (size_t i = 0; i < NBF16; i++) {
        data[k++] = BF16_CASES[i].bits & 0xff;
        data[k++] = BF16_CASES[i].bits >> 8;
    }
    data[k++] = 0xc0, data[k++] = 0x7f; /* NaN */
    char header[512];
    snprintf(header, sizeof header,
             "{\"h\":{\"dtype\":\"F16\",\"shape\":[%zu],\"data_offsets\":[0,%zu]},"
             "\"b\":{\"dtype\":\"BF16\",\"shape\":[%zu],\"data_offsets\":[%zu,%zu]}}",
             NF16 + 2, boff, NBF16 + 1, boff, k);
    const char *p = tmp_path(dir, "half.safetensors");
    write_st(p, header, data, k);
    return p;
}

static void test_f16_bf16(void **state) {
    const char *dir = tu_tmpdir();
    const char *p = write_half_file(dir);
    ll_st_file *f = open_ok(p);
    ll_error err = {{0}};

    assert_int_equal(find_ok(f, "h")->dtype, LL_DT_F16);
    const float *h = ll_st_get_f32(f, "h", 1, (int64_t[]){NF16 + 2}, &err);
    assert_non_null(h);
    for (size_t i = 0; i < NF16; i++)
        if (h[i] != F16_CASES[i].value)
            fail_msg("F16 0x%04x -> %a, expected %a", F16_CASES[i].bits,
                     (double)h[i], (double)F16_CASES[i].value);
    assert_true(h[NF16] == 0.0f && signbit(h[NF16]));
    assert_true(isnan(h[NF16 + 1]));
    /* converted once: the second request returns the same buffer */
    assert_ptr_equal(ll_st_get_f32(f, "h", 1, (int64_t[]){NF16 + 2}, &err), h);
    assert_int_equal((uintptr_t)h % 64, 0);

    assert_int_equal(find_ok(f, "b")->dtype, LL_DT_BF16);
    const float *b = ll_st_get_f32(f, "b", 1, (int64_t[]){NBF16 + 1}, &err);
    assert_non_null(b);
    for (size_t i = 0; i < NBF16; i++)
        if (b[i] != BF16_CASES[i].value)
            fail_msg("BF16 0x%04x -> %a, expected %a", BF16_CASES[i].bits,
                     (double)b[i], (double)BF16_CASES[i].value);
    assert_true(isnan(b[NBF16]));

    assert_null(ll_st_get_f32(f, "b", 1, (int64_t[]){NBF16}, &err));
    assert_contains(err.msg, "has shape [10] but [9] was expected");
    ll_st_close(f);
    unlink(p);
    rmdir(dir);
}

typedef struct race {
    ll_st_file *f;
    const float *got;
} race;

static void *race_get(void *arg) {
    race *r = arg;
    ll_error err;
    r->got = ll_st_get_f32(r->f, "b", 1, (int64_t[]){NBF16 + 1}, &err);
    return NULL;
}

/* Threads asking for the same unconverted tensor all get one buffer. */
static void test_concurrent_conversion(void **state) {
    const char *dir = tu_tmpdir();
    const char *p = write_half_file(dir);
    for (int round = 0; round < 20; round++) {
        ll_st_file *f = open_ok(p);
        race r[4];
        pthread_t th[4];
        for (int i = 0; i < 4; i++) {
            r[i] = (race){f, NULL};
            assert_int_equal(pthread_create(&th[i], NULL, race_get, &r[i]), 0);
        }
        for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
        for (int i = 0; i < 4; i++) {
            assert_non_null(r[i].got);
            assert_ptr_equal(r[i].got, r[0].got);
        }
        assert_true(r[0].got[0] == 1.0f);
        ll_st_close(f);
    }
    unlink(p);
    rmdir(dir);
}

/* ----------------------------------------------------------------- write */

static int count_dir_entries(const char *dir) {
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)))
        n += strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0;
    closedir(d);
    return n;
}

static void test_write_roundtrip(void **state) {
    const char *dir = tu_tmpdir();
    const char *p = tmp_path(dir, "rt.safetensors");
    float a[6] = {1, 2, 3, 4, 5, 6}, s = -0.75f, b[7];
    for (int i = 0; i < 7; i++) b[i] = (float)i * 0.5f - 1.0f;
    ll_st_out out[4] = {
        {.name = "layer.a", .ndim = 2, .shape = {2, 3}, .data = a},
        {.name = "scalar", .ndim = 0, .data = &s},
        {.name = "nothing", .ndim = 2, .shape = {0, 5}, .data = NULL},
        {.name = "b", .ndim = 1, .shape = {7}, .data = b},
    };
    ll_error err = {{0}};
    if (ll_st_write(p, out, 4, &err)) fail_msg("%s", err.msg);
    assert_int_equal(count_dir_entries(dir), 1); /* no temporary left */

    uint64_t hlen = file_header_len(p);
    assert_int_equal(hlen % 8, 0);
    assert_int_equal(file_size(p), 8 + (long)hlen + 4 * (6 + 1 + 7));

    /* the header itself: compact JSON, metadata first, spaces as padding */
    size_t len;
    char *raw = tu_read_file(p, &len);
    assert_non_null(raw);
    const char *head = "{\"__metadata__\":{\"format\":\"pt\"},";
    assert_memory_equal(raw + 8, head, strlen(head));
    assert_true(raw[8 + hlen - 1] == ' ' || raw[8 + hlen - 1] == '}');
    json_error_t je;
    json_t *h = json_loadb(raw + 8, hlen, 0, &je);
    assert_non_null(h);
    assert_string_equal(json_string_value(json_object_get(
        json_object_get(h, "__metadata__"), "format")), "pt");
    json_t *bo = json_object_get(json_object_get(h, "b"), "data_offsets");
    assert_int_equal(json_integer_value(json_array_get(bo, 0)), 28);
    assert_int_equal(json_integer_value(json_array_get(bo, 1)), 56);
    json_decref(h);
    free(raw);

    ll_st_file *f = open_ok(p);
    assert_int_equal(ll_st_count(f), 4);
    assert_int_equal((uintptr_t)ll_st_at(f, 0)->data % 8, 0);
    const float *ga = ll_st_get_f32(f, "layer.a", 2, (int64_t[]){2, 3}, &err);
    assert_non_null(ga);
    assert_memory_equal(ga, a, sizeof a);
    const float *gs = ll_st_get_f32(f, "scalar", 0, NULL, &err);
    assert_non_null(gs);
    assert_true(*gs == s);
    assert_non_null(ll_st_get_f32(f, "nothing", 2, (int64_t[]){0, 5}, &err));
    const float *gb = ll_st_get_f32(f, "b", 1, (int64_t[]){7}, &err);
    assert_non_null(gb);
    assert_memory_equal(gb, b, sizeof b);
    ll_st_close(f);

    /* overwriting an existing file replaces it */
    if (ll_st_write(p, out + 3, 1, &err)) fail_msg("%s", err.msg);
    f = open_ok(p);
    assert_int_equal(ll_st_count(f), 1);
    ll_st_close(f);
    unlink(p);
    rmdir(dir);
}

/* The fixture read and written back gives the same tensors. */
static void test_write_fixture_copy(void **state) {
    ll_st_file *src = open_ok(tu_path(GPT2_ST));
    size_t n = ll_st_count(src);
    ll_st_out *out = calloc(n, sizeof *out);
    assert_non_null(out);
    ll_error err = {{0}};
    for (size_t i = 0; i < n; i++) {
        const ll_st_tensor *t = ll_st_at(src, i);
        out[n - 1 - i] = (ll_st_out){.name = t->name, .ndim = t->ndim};
        memcpy(out[n - 1 - i].shape, t->shape, sizeof t->shape);
        out[n - 1 - i].data = ll_st_get_f32(src, t->name, t->ndim, t->shape, &err);
        assert_non_null(out[n - 1 - i].data);
    }
    const char *dir = tu_tmpdir();
    const char *p = tmp_path(dir, "copy.safetensors");
    if (ll_st_write(p, out, n, &err)) fail_msg("%s", err.msg);
    ll_st_file *cp = open_ok(p);
    assert_int_equal(ll_st_count(cp), n);
    for (size_t i = 0; i < n; i++) {
        const ll_st_tensor *a = ll_st_at(src, i), *b = find_ok(cp, a->name);
        assert_int_equal(a->ndim, b->ndim);
        assert_memory_equal(a->shape, b->shape, sizeof a->shape);
        assert_int_equal(a->nbytes, b->nbytes);
        assert_memory_equal(a->data, b->data, a->nbytes);
    }
    ll_st_close(cp);
    ll_st_close(src);
    free(out);
    unlink(p);
    rmdir(dir);
}

static void test_write_errors(void **state) {
    const char *dir = tu_tmpdir();
    float x[2] = {1, 2};
    ll_error err = {{0}};
    ll_st_out dup[2] = {
        {.name = "w", .ndim = 1, .shape = {2}, .data = x},
        {.name = "w", .ndim = 1, .shape = {1}, .data = x},
    };
    const char *p = tmp_path(dir, "w.safetensors");
    assert_int_equal(ll_st_write(p, dup, 2, &err), -1);
    assert_contains(err.msg, "tensor name 'w' appears twice");
    assert_contains(err.msg, p);
    assert_int_equal(count_dir_entries(dir), 0); /* nothing left behind */

    ll_st_out neg = {.name = "n", .ndim = 2, .shape = {2, -1}, .data = x};
    assert_int_equal(ll_st_write(p, &neg, 1, &err), -1);
    assert_contains(err.msg, "negative dimension");
    ll_st_out nodata = {.name = "n", .ndim = 1, .shape = {2}, .data = NULL};
    assert_int_equal(ll_st_write(p, &nodata, 1, &err), -1);
    assert_contains(err.msg, "has no data");
    ll_st_out meta = {.name = "__metadata__", .ndim = 1, .shape = {2}, .data = x};
    assert_int_equal(ll_st_write(p, &meta, 1, &err), -1);
    assert_contains(err.msg, "reserved");
    assert_int_equal(count_dir_entries(dir), 0);

    /* a directory that does not exist */
    const char *q = tmp_path(dir, "no/such/dir/w.safetensors");
    assert_int_equal(ll_st_write(q, dup, 1, &err), -1);
    assert_contains(err.msg, "cannot create");
    assert_contains(err.msg, "No such file or directory");

    /* a full disk: /dev/full fails every write with ENOSPC */
    int fd = open("/dev/full", O_WRONLY);
    if (fd >= 0) {
        assert_int_equal(ll_st_write_fd(fd, "full.safetensors", dup, 1, &err), -1);
        assert_contains(err.msg, "cannot write full.safetensors");
        assert_contains(err.msg, strerror(ENOSPC));
        close(fd);
    }
    rmdir(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gpt2_fixture),
        cmocka_unit_test(test_clip_fixture),
        cmocka_unit_test(test_get_f32_errors),
        cmocka_unit_test(test_bad_files),
        cmocka_unit_test(test_truncated_fixture),
        cmocka_unit_test(test_bad_headers),
        cmocka_unit_test(test_valid_variants),
        cmocka_unit_test(test_unaligned_f32),
        cmocka_unit_test(test_f16_bf16),
        cmocka_unit_test(test_concurrent_conversion),
        cmocka_unit_test(test_write_roundtrip),
        cmocka_unit_test(test_write_fixture_copy),
        cmocka_unit_test(test_write_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
