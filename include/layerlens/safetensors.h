/* safetensors.h - read (mmap) and write Hugging Face .safetensors files.
 *
 * Format: 8-byte little-endian u64 header length N, N bytes of UTF-8 JSON
 * ({"__metadata__": {...}, NAME: {"dtype", "shape", "data_offsets": [b, e]}}),
 * then the data section; offsets are relative to its start.
 *
 * The file is mapped read-only and never copied: float32 tensors are returned
 * as pointers into the mapping.  F16/BF16 tensors are converted to float32
 * once, on first request, into buffers owned by the ll_st_file.  Every field
 * of the header is validated at open time. */
#ifndef LAYERLENS_SAFETENSORS_H
#define LAYERLENS_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "layerlens/error.h"

#define LL_ST_MAX_DIMS 8

typedef enum ll_dtype {
    LL_DT_F32,
    LL_DT_F16,
    LL_DT_BF16,
    LL_DT_I64,
    LL_DT_OTHER, /* a valid safetensors dtype we cannot use (F64, I32, U8,
                    BOOL, F8_*, ...): listed and validated, never converted */
} ll_dtype;

typedef struct ll_st_tensor {
    char *name;
    ll_dtype dtype;
    const char *dtype_name; /* as in the header: "F32", "F64", ... (static) */
    int ndim;
    int64_t shape[LL_ST_MAX_DIMS];
    const void *data;  /* into the mapping */
    size_t nbytes;
} ll_st_tensor;

typedef struct ll_st_file ll_st_file;

/* Maps and validates `path`.  Errors name the file and the problem. */
ll_st_file *ll_st_open(const char *path, ll_error *err);
void ll_st_close(ll_st_file *f);

size_t ll_st_count(const ll_st_file *f);
const ll_st_tensor *ll_st_at(const ll_st_file *f, size_t i);
/* Exact-name lookup; NULL when absent. */
const ll_st_tensor *ll_st_find(const ll_st_file *f, const char *name);
/* Total size of the mapping in bytes. */
size_t ll_st_file_size(const ll_st_file *f);

/* Looks up `name` (exact), checks it has exactly the given shape and a float
 * dtype, and returns its values as float32 (zero-copy for aligned F32).
 * A missing tensor, another shape or a non-float dtype is an error that names
 * the tensor, what was expected and what was found. */
const float *ll_st_get_f32(ll_st_file *f, const char *name, int ndim,
                           const int64_t *shape, ll_error *err);

/* Copies n floats starting at p (a pointer ll_st_get_f32 returned, or into
 * it) to dst.  Values in the mapping are read with pread, so that touching a
 * few rows of a large table does not map its neighbours into the process
 * (the kernel maps up to 64 KB around every page fault of a file mapping).
 * 0, or -1 with errno set. */
int ll_st_read_f32(const ll_st_file *f, const float *p, float *dst, size_t n);

/* Writes float32 tensors as a .safetensors file (used by `mkweights`).  The
 * header is padded with spaces so the data section is 8-byte aligned. */
typedef struct ll_st_out {
    const char *name;
    int ndim;
    int64_t shape[LL_ST_MAX_DIMS];
    const float *data;
} ll_st_out;
int ll_st_write(const char *path, const ll_st_out *tensors, size_t n,
                ll_error *err);
/* The same into an open file descriptor (written from its current position;
 * `name` is only used in error messages).  ll_st_write writes through this to
 * a temporary file that is renamed into place once complete, so a failed or
 * interrupted write never leaves a plausible-looking checkpoint behind. */
int ll_st_write_fd(int fd, const char *name, const ll_st_out *tensors,
                   size_t n, ll_error *err);

#endif
