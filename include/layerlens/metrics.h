/* metrics.h - the server's counters and histograms, rendered in the
 * Prometheus text exposition format (version 0.0.4) for GET /metrics.
 *
 * What is measured:
 *   layerlens_requests_total{endpoint,status}            counter
 *   layerlens_request_duration_seconds{endpoint}         histogram
 *   layerlens_queue_depth                                 gauge (sequences)
 *   layerlens_batch_sequences{model}                      histogram
 *   layerlens_batch_tokens{model}                         histogram
 *   layerlens_tokens_total{model}                         counter
 *   layerlens_dropped_sequences_total{model}              counter (timed out)
 *   layerlens_model_load_seconds{model}                   gauge
 *   layerlens_model_loaded{model}                         gauge (0/1)
 *   process_resident_memory_bytes                         gauge
 *
 * Endpoints and models are fixed name lists given at creation, so an update
 * is an index, never a string lookup.  One mutex guards everything: updates
 * happen once per request or batch, far too rarely to contend. */
#ifndef LAYERLENS_METRICS_H
#define LAYERLENS_METRICS_H

#include <stddef.h>

typedef struct ll_metrics ll_metrics;

/* The name arrays must outlive the metrics object (string literals). */
ll_metrics *ll_metrics_new(const char *const *endpoints, int n_endpoints,
                           const char *const *models, int n_models);
void ll_metrics_free(ll_metrics *m);

/* One finished HTTP request (endpoint index, status code, seconds). */
void ll_metrics_request(ll_metrics *m, int endpoint, int status, double seconds);
/* One forward pass of a model over n_seq sequences, n_tok tokens. */
void ll_metrics_batch(ll_metrics *m, int model, int n_seq, int n_tok);
/* n sequences of a model dropped unrun (their request timed out). */
void ll_metrics_dropped(ll_metrics *m, int model, int n);
void ll_metrics_model_loaded(ll_metrics *m, int model, double seconds);

/* The whole exposition text (malloc'd, NUL-terminated; NULL when out of
 * memory).  queue_depth is sampled by the caller. */
char *ll_metrics_render(ll_metrics *m, long queue_depth);

/* Resident set size of this process in bytes (0 when unknown). */
size_t ll_resident_bytes(void);

#endif
