/* blas.c - OpenBLAS kernel selection (see blas.h). */
#include "layerlens/blas.h"

#include <cblas.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char *ll_blas_corename(void) { return openblas_get_corename(); }

/* The best kernel family the CPU supports, or NULL for "leave it". */
static const char *wanted_core(void) {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
        return __builtin_cpu_supports("avx512bf16") ? "Cooperlake" : "SkylakeX";
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
    return NULL;
}

/* Kernels that are older than anything a current x86-64 server offers. */
static int is_generic(const char *core) {
    static const char *const generic[] = {"Prescott", "Core2", "Penryn", "Dunnington",
                                          "Nehalem", "Atom", "Katmai", "Coppermine",
                                          "Northwood", "Banias", "Unknown"};
    for (size_t i = 0; i < sizeof generic / sizeof generic[0]; i++)
        if (core && strcasecmp(core, generic[i]) == 0) return 1;
    return !core;
}

void ll_blas_select_kernels(char **argv) {
    if (getenv("OPENBLAS_CORETYPE") || getenv("LAYERLENS_BLAS_REEXEC")) return;
    const char *want = wanted_core();
    if (!want || !is_generic(openblas_get_corename()) || !argv || !argv[0]) return;
    setenv("OPENBLAS_CORETYPE", want, 1);
    setenv("LAYERLENS_BLAS_REEXEC", "1", 1); /* never loop */
    execv("/proc/self/exe", argv);
    /* exec failed: carry on with the generic kernels */
    unsetenv("OPENBLAS_CORETYPE");
}
