/* blas.h - choosing OpenBLAS's CPU kernels before any work is done.
 *
 * Debian's OpenBLAS (0.3.21) picks its kernels from the CPU model at load
 * time, and on CPUs newer than the library (e.g. virtual Xeons reporting a
 * generic model) it falls back to the SSE3 "Prescott" kernels - 5-20x slower
 * than the AVX-512 ones the CPU supports.  The only control is the
 * OPENBLAS_CORETYPE variable, read when the library is loaded, so the choice
 * has to be made before the process starts: ll_blas_select_kernels() sets it
 * from the CPU's real features and re-executes the program once.
 *
 * A user's own OPENBLAS_CORETYPE always wins (machines where a kernel is
 * known to misbehave set it on purpose). */
#ifndef LAYERLENS_BLAS_H
#define LAYERLENS_BLAS_H

/* If OpenBLAS runs generic kernels on a CPU with AVX-512 (or AVX2 + FMA) and
 * OPENBLAS_CORETYPE is unset, sets it and re-executes /proc/self/exe with
 * argv.  Returns only when no re-execution was needed (or it failed). */
void ll_blas_select_kernels(char **argv);

/* The kernel family OpenBLAS is using, e.g. "Cooperlake". */
const char *ll_blas_corename(void);

#endif
