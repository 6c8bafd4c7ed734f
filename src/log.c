/* log.c - the server's log lines: text or JSON, one write() per line (see
 * log.h). */
#include "layerlens/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#include <utf8proc.h>

static const char *const LEVEL_NAMES[] = {"error", "warn", "info", "debug"};

void ll_log_init(ll_log *lg, FILE *f, ll_log_level level, ll_log_format format) {
    lg->f = f ? f : stderr;
    lg->fd = fileno(lg->f); /* -1 for memory streams */
    lg->level = level;
    lg->format = format;
}

const char *ll_log_level_name(ll_log_level l) {
    return (unsigned)l < 4 ? LEVEL_NAMES[l] : "info";
}

int ll_log_level_parse(const char *s, ll_log_level *out, ll_error *err) {
    for (int i = 0; i < 4; i++)
        if (strcmp(s, LEVEL_NAMES[i]) == 0) return *out = (ll_log_level)i, 0;
    if (strcmp(s, "warning") == 0) return *out = LL_LOG_WARN, 0;
    return ll_errorf(err, "unknown log level '%s' (expected error, warn, info or debug)", s);
}

int ll_log_format_parse(const char *s, ll_log_format *out, ll_error *err) {
    if (strcmp(s, "text") == 0) return *out = LL_LOG_TEXT, 0;
    if (strcmp(s, "json") == 0) return *out = LL_LOG_JSON, 0;
    return ll_errorf(err, "unknown log format '%s' (expected text or json)", s);
}

/* ---- a bounded line buffer ---- */

typedef struct line {
    char *p;
    size_t n, cap;  /* cap keeps room for the final newline */
    int overflow;   /* something did not fit */
    size_t limit;   /* bytes of each string value taken at most */
} line;

static void put(line *l, const char *s, size_t n) {
    if (n > l->cap - l->n) {
        n = l->cap - l->n;
        l->overflow = 1;
    }
    memcpy(l->p + l->n, s, n);
    l->n += n;
}

static void puts_(line *l, const char *s) { put(l, s, strlen(s)); }

__attribute__((format(printf, 2, 3)))
static void putf(line *l, const char *fmt, ...) {
    char tmp[64];
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (k > 0) put(l, tmp, (size_t)k < sizeof tmp ? (size_t)k : sizeof tmp - 1);
}

/* Length of the valid UTF-8 sequence at s (1..4), or 0 when invalid. */
static int utf8_len(const unsigned char *s, size_t left) {
    utf8proc_int32_t cp;
    utf8proc_ssize_t n = utf8proc_iterate(s, (utf8proc_ssize_t)(left < 4 ? left : 4), &cp);
    return n > 0 ? (int)n : 0;
}

/* A JSON string: quotes, backslashes and control characters escaped,
 * invalid UTF-8 replaced by U+FFFD (a log line must parse). */
static void put_json_string(line *l, const char *s) {
    puts_(l, "\"");
    const unsigned char *p = (const unsigned char *)s;
    size_t len = strlen(s), left = len < l->limit ? len : l->limit;
    while (left) {
        unsigned char c = *p;
        int n = 1;
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            put(l, e, 2);
        } else if (c == '\n') {
            puts_(l, "\\n");
        } else if (c == '\t') {
            puts_(l, "\\t");
        } else if (c < 0x20 || c == 0x7F) {
            putf(l, "\\u%04x", c);
        } else if (c < 0x80) {
            put(l, (const char *)p, 1);
        } else if ((n = utf8_len(p, left)) > 0) {
            put(l, (const char *)p, (size_t)n);
        } else {
            puts_(l, "\\ufffd");
            n = 1;
        }
        p += n;
        left -= (size_t)n;
    }
    if (len > l->limit) puts_(l, "...");
    puts_(l, "\"");
}

/* A text value: as is, or in quotes (with \" and \\) when it holds a space,
 * a quote or an equals sign; control characters as \xNN either way, so one
 * event stays one line. */
static void put_text_value(line *l, const char *s) {
    int quote = !*s || strpbrk(s, " \"=") != NULL;
    if (quote) puts_(l, "\"");
    const unsigned char *end = (const unsigned char *)s + strnlen(s, l->limit);
    for (const unsigned char *p = (const unsigned char *)s; p < end; p++) {
        if (*p < 0x20 || *p == 0x7F) putf(l, "\\x%02x", *p);
        else if (quote && (*p == '"' || *p == '\\')) {
            char e[2] = {'\\', (char)*p};
            put(l, e, 2);
        } else put(l, (const char *)p, 1);
    }
    if (*end) puts_(l, "...");
    if (quote) puts_(l, "\"");
}

/* A message in text: control characters as \xNN (one event, one line). */
static void put_text_msg(line *l, const char *s) {
    const unsigned char *end = (const unsigned char *)s + strnlen(s, l->limit);
    for (const unsigned char *p = (const unsigned char *)s; p < end; p++) {
        if (*p < 0x20 || *p == 0x7F) putf(l, "\\x%02x", *p);
        else put(l, (const char *)p, 1);
    }
    if (*end) puts_(l, "...");
}

static void put_value(line *l, ll_log_format format, const ll_log_field *f) {
    switch (f->kind) {
    case LL_FIELD_INT: putf(l, "%lld", f->i); break;
    case LL_FIELD_NUM: putf(l, "%.3f", f->d); break;
    default:
        if (!f->s) puts_(l, format == LL_LOG_JSON ? "null" : "-");
        else if (format == LL_LOG_JSON) put_json_string(l, f->s);
        else put_text_value(l, f->s);
    }
}

static void put_timestamp(line *l, long long ts_ms) {
    time_t t = (time_t)(ts_ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    char buf[40];
    size_t k = strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
    put(l, buf, k);
    putf(l, ".%03dZ", (int)(ts_ms % 1000));
}

/* One attempt at a line, every string value cut to `limit` bytes. */
static void format_into(line *l, ll_log_format format, ll_log_level lvl, long long ts_ms,
                        const char *msg, const ll_log_field *fields, int n_fields) {
    if (format == LL_LOG_JSON) {
        puts_(l, "{\"ts\":\"");
        put_timestamp(l, ts_ms);
        puts_(l, "\",\"level\":\"");
        puts_(l, ll_log_level_name(lvl));
        puts_(l, "\",\"msg\":");
        put_json_string(l, msg);
        for (int i = 0; i < n_fields; i++) {
            size_t limit = l->limit; /* keys are never cut */
            l->limit = (size_t)-1;
            puts_(l, ",");
            put_json_string(l, fields[i].key);
            puts_(l, ":");
            l->limit = limit;
            put_value(l, format, &fields[i]);
        }
        puts_(l, "}");
    } else {
        puts_(l, "layerlens: ");
        if (lvl == LL_LOG_ERROR) puts_(l, "error: ");
        else if (lvl == LL_LOG_WARN) puts_(l, "warning: ");
        else if (lvl == LL_LOG_DEBUG) puts_(l, "debug: ");
        put_text_msg(l, msg);
        for (int i = 0; i < n_fields; i++) {
            puts_(l, " ");
            puts_(l, fields[i].key);
            puts_(l, "=");
            put_value(l, format, &fields[i]);
        }
    }
}

size_t ll_log_format_line(char *buf, size_t cap, ll_log_format format, ll_log_level lvl,
                          long long ts_ms, const char *msg, const ll_log_field *fields,
                          int n_fields) {
    if (cap < 2) return 0;
    /* A line that does not fit is made again with its strings cut shorter,
     * so that even a cut JSON line parses. */
    line l = {buf, 0, cap - 1, 0, (size_t)-1};
    for (;;) {
        format_into(&l, format, lvl, ts_ms, msg, fields, n_fields);
        if (!l.overflow || l.limit == 0) break;
        l.limit = l.limit == (size_t)-1 ? cap / 2 : l.limit / 2;
        l.n = 0;
        l.overflow = 0;
    }
    buf[l.n++] = '\n'; /* the room kept */
    return l.n;
}

static long long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* One line out.  A pipe or terminal takes a write of up to PIPE_BUF (4096)
 * bytes whole; a partial write to a file is finished by the loop. */
static void emit(const ll_log *lg, const char *buf, size_t n) {
    if (lg->fd < 0) {
        flockfile(lg->f);
        fwrite(buf, 1, n, lg->f);
        fflush(lg->f);
        funlockfile(lg->f);
        return;
    }
    while (n) {
        ssize_t w = write(lg->fd, buf, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return; /* nowhere to report it */
        buf += w;
        n -= (size_t)w;
    }
}

void ll_log_event(const ll_log *lg, ll_log_level lvl, const char *msg,
                  const ll_log_field *fields, int n_fields) {
    if (!ll_log_enabled(lg, lvl)) return;
    char buf[LL_LOG_LINE_MAX];
    size_t n = ll_log_format_line(buf, sizeof buf, lg->format, lvl, now_ms(), msg, fields,
                                  n_fields);
    emit(lg, buf, n);
}

void ll_logf(const ll_log *lg, ll_log_level lvl, const char *fmt, ...) {
    if (!ll_log_enabled(lg, lvl)) return;
    char msg[LL_LOG_LINE_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    ll_log_event(lg, lvl, msg, NULL, 0);
}

/* ---- a FILE * that logs its lines ---- */

static void sink_line(ll_log_sink *c) {
    c->pending[c->n] = 0;
    const char *msg = c->pending;
    if (strncmp(msg, "layerlens: ", 11) == 0) msg += 11;
    if (*msg) ll_log_event(c->lg, c->level, msg, NULL, 0);
    c->n = 0;
}

/* Called under the stream's lock, so the sink needs none. */
static ssize_t sink_write(void *p, const char *buf, size_t size) {
    ll_log_sink *c = p;
    for (size_t i = 0; i < size; i++) {
        if (buf[i] == '\n') sink_line(c);
        else if (c->n < sizeof c->pending - 1) c->pending[c->n++] = buf[i];
    }
    return (ssize_t)size;
}

static int sink_close(void *p) {
    ll_log_sink *c = p;
    if (c->n) sink_line(c);
    return 0;
}

FILE *ll_log_stream(ll_log_sink *sink, const ll_log *lg, ll_log_level level) {
    sink->lg = lg;
    sink->level = level;
    sink->n = 0;
    cookie_io_functions_t io = {.write = sink_write, .close = sink_close};
    FILE *f = fopencookie(sink, "w", io);
    if (f) setvbuf(f, NULL, _IOLBF, 0);
    return f;
}
