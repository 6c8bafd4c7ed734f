/* log.h - the server's log: one line per event, as text or as JSON lines,
 * filtered by level.
 *
 *   text:  layerlens: listening on http://127.0.0.1:8080 (...)
 *          layerlens: warning: cannot write /results/x.json: ...
 *          layerlens: request method=POST path=/v1/embeddings status=200 ms=3.21 tokens=14 client=127.0.0.1
 *   json:  {"ts":"2025-06-01T12:00:00.123Z","level":"info","msg":"request","method":"POST",...}
 *
 * Every line goes out with one write() (one fputs under the stream's lock
 * for a stream without a descriptor), so lines from different threads never
 * interleave and a worker never waits for more than that call.  A line is
 * at most LL_LOG_LINE_MAX bytes; a longer message is cut.  Text lines carry
 * no time stamp (journald, Docker and Kubernetes add theirs); JSON lines do,
 * for log shippers that read the file. */
#ifndef LAYERLENS_LOG_H
#define LAYERLENS_LOG_H

#include <stdio.h>

#include "layerlens/error.h"

#define LL_LOG_LINE_MAX 4096

typedef enum { LL_LOG_ERROR, LL_LOG_WARN, LL_LOG_INFO, LL_LOG_DEBUG } ll_log_level;
typedef enum { LL_LOG_TEXT, LL_LOG_JSON } ll_log_format;

typedef struct ll_log {
    FILE *f;     /* destination */
    int fd;      /* its descriptor, or -1 (a memory stream): then fputs */
    ll_log_level level;   /* lines above this level are dropped */
    ll_log_format format;
} ll_log;

/* One field of an event.  Strings are escaped as needed (JSON) or quoted
 * when they hold spaces or quotes (text). */
typedef enum { LL_FIELD_STR, LL_FIELD_INT, LL_FIELD_NUM } ll_log_field_kind;
typedef struct ll_log_field {
    const char *key;
    ll_log_field_kind kind;
    const char *s;  /* LL_FIELD_STR (NULL prints as null / -) */
    long long i;    /* LL_FIELD_INT */
    double d;       /* LL_FIELD_NUM, printed with 3 decimals */
} ll_log_field;

#define LL_LOG_STR(k, v) ((ll_log_field){.key = (k), .kind = LL_FIELD_STR, .s = (v)})
#define LL_LOG_INT(k, v) ((ll_log_field){.key = (k), .kind = LL_FIELD_INT, .i = (v)})
#define LL_LOG_NUM(k, v) ((ll_log_field){.key = (k), .kind = LL_FIELD_NUM, .d = (v)})

void ll_log_init(ll_log *lg, FILE *f, ll_log_level level, ll_log_format format);

/* "error", "warn", "info", "debug" / "text", "json"; 0 or -1 with err. */
int ll_log_level_parse(const char *s, ll_log_level *out, ll_error *err);
int ll_log_format_parse(const char *s, ll_log_format *out, ll_error *err);
const char *ll_log_level_name(ll_log_level l);

static inline int ll_log_enabled(const ll_log *lg, ll_log_level l) {
    return l <= lg->level;
}

/* A message (printf format). */
void ll_logf(const ll_log *lg, ll_log_level l, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* A message with fields (the request lines). */
void ll_log_event(const ll_log *lg, ll_log_level l, const char *msg,
                  const ll_log_field *fields, int n_fields);

/* Formats one line (with its newline) into buf[cap] and returns its length:
 * what ll_log_event writes, without writing it.  ts_ms: the time stamp of
 * a JSON line, milliseconds since the epoch. */
size_t ll_log_format_line(char *buf, size_t cap, ll_log_format format, ll_log_level l,
                          long long ts_ms, const char *msg, const ll_log_field *fields,
                          int n_fields);

/* What a log stream needs between writes: the line so far.  Owned by the
 * caller (kept in the object that owns the stream, where leak checkers see
 * it), and alive until the stream is closed. */
typedef struct ll_log_sink {
    const ll_log *lg;
    ll_log_level level;
    char pending[LL_LOG_LINE_MAX];
    size_t n;
} ll_log_sink;

/* A stdio stream whose lines become log events at `level` (for code that
 * prints to a FILE *).  A leading "layerlens: " is dropped from each line.
 * Closing it with fclose flushes a last unterminated line.  NULL when the
 * stream cannot be made. */
FILE *ll_log_stream(ll_log_sink *sink, const ll_log *lg, ll_log_level level);

#endif
