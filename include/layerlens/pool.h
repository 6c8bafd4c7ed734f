/* pool.h - the cores a forward pass may use, and the helper threads that
 * run its parallel parts.
 *
 * A forward pass is a chain of steps (products with weights, attention,
 * layer norms, activations); each step that is worth splitting calls
 * ll_parallel with a function that computes one part of it.  The part a
 * thread computes never changes what is computed: every output element is
 * produced by one thread in a fixed order, so results do not depend on the
 * thread count.
 *
 * Sharing the cores: each thread has a share (ll_pool_set_threads, default
 * 1): the most threads its steps use, when no other forward pass is
 * running.  Each other pass running at the time of a step (between
 * ll_pass_begin and ll_pass_end, which ll_forward calls; a server worker
 * brackets its whole batch, responses included; nested brackets of a thread
 * count once) takes one away, down to 1.  So the server's workers each get
 * every core, a pass alone uses them all, and concurrent passes share them
 * without oversubscribing (except for the one step a pass is in when another
 * starts).
 *
 * One step uses the helpers at a time: a step that finds them busy runs all
 * its parts on its own thread (same results). */
#ifndef LAYERLENS_POOL_H
#define LAYERLENS_POOL_H

/* Computes part `part` of `parts` of a step. */
typedef void (*ll_part_fn)(void *ctx, int part, int parts);

/* Runs fn(ctx, p, parts) for p = 0 .. parts-1, parts = the smaller of
 * max_parts and ll_parallel_width(): part 0 on the calling thread, the
 * others on helpers.  When the helpers are busy with another step, or
 * parts would be 1, it runs fn(ctx, 0, 1) on the calling thread.  Returns
 * when every part is done. */
void ll_parallel(ll_part_fn fn, void *ctx, int max_parts);

/* The threads a step started now on this thread would use (>= 1). */
int ll_parallel_width(void);

/* The most threads one step may use (a thread's share is capped at it). */
#define LL_POOL_MAX_THREADS 16

/* This thread's share of the cores (default 1; at most LL_POOL_MAX_THREADS). */
void ll_pool_set_threads(int n);
int ll_pool_threads(void);

/* Brackets of a forward pass (see the top). */
void ll_pass_begin(void);
void ll_pass_end(void);

#endif
