/* http.c - the HTTP side of the server: libmicrohttpd setup, the routing
 * table, reading bodies within the size limit, JSON parsing, replies and
 * error bodies, queuing the response of a resumed connection, and the
 * deadline sweeper that answers 504 for suspended requests that ran out of
 * time (libmicrohttpd does not time out suspended connections), access
 * control (API key, CORS) and the request log.
 *
 * One request goes through on_request several times: once when its headers
 * are in (route, method, Content-Length checks), once per piece of body, once
 * when the body is complete (parse, dispatch to the handler), and - when the
 * handler suspended it for compute - once more after a worker resumed it. */
#include "server_internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <utf8proc.h>

#include "layerlens/json_out.h"

typedef struct route {
    const char *path;
    const char *method; /* GET routes also answer HEAD */
    int endpoint;
    int (*handler)(ll_request *r, json_t *body);
} route;

static const route ROUTES[] = {
    {"/healthz", "GET", EP_HEALTHZ, api_healthz},
    {"/readyz", "GET", EP_READYZ, api_readyz},
    {"/metrics", "GET", EP_METRICS, api_metrics},
    {"/v1/models", "GET", EP_MODELS, api_models},
    {"/v1/tokenize", "POST", EP_TOKENIZE, api_tokenize},
    {"/v1/embeddings", "POST", EP_EMBEDDINGS, api_embeddings},
    {"/v1/similarity", "POST", EP_SIMILARITY, api_similarity},
    {"/v1/self-similarity", "POST", EP_SELF_SIMILARITY, api_self_similarity},
    {"/v1/evaluate", "POST", EP_EVALUATE, api_evaluate},
    {"/evaluate", "POST", EP_EVALUATE, api_evaluate},
    {"/v1/evaluations", "POST", EP_EVALUATIONS, api_evaluations_create},
    {"/v1/benchmarks", "GET", EP_BENCHMARKS, api_benchmarks},
};
#define N_ROUTES ((int)(sizeof ROUTES / sizeof ROUTES[0]))

static const route *find_route(const char *url) {
    for (int i = 0; i < N_ROUTES; i++)
        if (strcmp(ROUTES[i].path, url) == 0) return &ROUTES[i];
    return NULL;
}

/* The methods of an API path, OPTIONS included (for Allow and CORS
 * preflights); NULL for a path that is not one. */
static const char *route_methods(const char *url) {
    if (eval_is_job_path(url)) return "GET, HEAD, DELETE, OPTIONS";
    const route *rt = find_route(url);
    if (!rt) return NULL;
    return strcmp(rt->method, "GET") == 0 ? "GET, HEAD, OPTIONS" : "POST, OPTIONS";
}

/* ---- responses ---- */

static const char *error_type(int status) {
    switch (status) {
    case 400: return "invalid_request_error";
    case 401: return "authentication_error";
    case 403: return "forbidden_error";
    case 404: return "not_found_error";
    case 405: return "method_not_allowed_error";
    case 409: return "conflict_error";
    case 413: return "request_too_large_error";
    case 422: return "unprocessable_input_error";
    case 503: return "service_unavailable_error";
    case 504: return "timeout_error";
    default: return "server_error";
    }
}

static struct MHD_Response *response_from(char *text, size_t len,
                                          const char *content_type) {
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(text);
        return NULL;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    return resp;
}

/* Floats are float32 values: 9 significant digits print each one so that
 * it reads back to the same float (json_out.c: the text json_dumps with
 * JSON_REAL_PRECISION(9) gives, several times faster). */
struct MHD_Response *make_json_response(json_t *body, int status) {
    if (!body) return NULL;
    size_t len;
    char *text = ll_json_dumps(body, &len);
    json_decref(body);
    if (!text) return NULL;
    struct MHD_Response *resp = response_from(text, len, "application/json");
    if (resp && status == 503) MHD_add_response_header(resp, "Retry-After", "1");
    return resp;
}

/* msg with every byte that is not part of valid UTF-8 replaced by '?':
 * messages quote what clients sent (cut to a length, maybe inside a
 * character), and a JSON string must be valid UTF-8. */
static void utf8_clean(char *dst, size_t cap, const char *msg) {
    size_t n = strlen(msg), o = 0;
    if (n >= cap) n = cap - 1;
    for (size_t i = 0; i < n;) {
        utf8proc_int32_t cp;
        utf8proc_ssize_t k = utf8proc_iterate((const utf8proc_uint8_t *)msg + i,
                                              (utf8proc_ssize_t)(n - i), &cp);
        if (k <= 0) {
            dst[o++] = '?';
            i++;
        } else {
            memcpy(dst + o, msg + i, (size_t)k);
            o += (size_t)k;
            i += (size_t)k;
        }
    }
    dst[o] = 0;
}

struct MHD_Response *make_error_response(int status, const char *code,
                                         const char *param, const char *msg) {
    char clean[LL_ERROR_MAX + 256];
    utf8_clean(clean, sizeof clean, msg);
    msg = clean;
    json_t *body = json_pack("{s:{s:s, s:s, s:s, s:o}}", "error", "type",
                             error_type(status), "code", code, "message", msg,
                             "param", param ? json_string(param) : json_null());
    return make_json_response(body, status);
}

int reply_json(ll_request *r, int status, json_t *body) {
    r->status = status;
    r->resp = make_json_response(body, status);
    return 0;
}

int reply_text(ll_request *r, int status, const char *content_type, char *text) {
    r->status = status;
    r->resp = text ? response_from(text, strlen(text), content_type) : NULL;
    return 0;
}

int reply_error(ll_request *r, int status, const char *code, const char *param,
                const char *fmt, ...) {
    char msg[LL_ERROR_MAX + 256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    r->status = status;
    r->resp = make_error_response(status, code, param, msg);
    return 0;
}

/* An API route also answers OPTIONS, so the Allow header of its 405 names
 * it (the handlers list the methods they serve). */
static void allow_options(struct MHD_Response *resp) {
    const char *allow = MHD_get_response_header(resp, MHD_HTTP_HEADER_ALLOW);
    if (!allow || strstr(allow, "OPTIONS")) return;
    char both[128];
    snprintf(both, sizeof both, "%s, OPTIONS", allow);
    char old[128];
    snprintf(old, sizeof old, "%s", allow);
    MHD_del_response_header(resp, MHD_HTTP_HEADER_ALLOW, old);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, both);
}

/* CORS: a response to an allowed origin says so; with an allow-list, every
 * response varies with the Origin header (caches must keep them apart). */
static void add_cors_headers(ll_request *r, struct MHD_Response *resp) {
    ll_server *s = r->srv;
    if (!s->n_cors && !s->cors_any) return;
    if (!s->cors_any) MHD_add_response_header(resp, MHD_HTTP_HEADER_VARY, "Origin");
    if (!r->origin) return;
    MHD_add_response_header(resp, "Access-Control-Allow-Origin", s->cors_any ? "*" : r->origin);
    MHD_add_response_header(resp, "Access-Control-Expose-Headers",
                            "Retry-After, Location, WWW-Authenticate");
}

/* Hands the prepared response to libmicrohttpd.  During shutdown it also
 * closes the connection, so keep-alive clients let go. */
static enum MHD_Result queue_response(ll_request *r, struct MHD_Response *resp) {
    if (!resp) {
        /* Out of memory while building it: closing the connection is the
         * only answer left. */
        r->status = 500;
        return MHD_NO;
    }
    if (r->status == 405 && r->api_route) allow_options(resp);
    add_cors_headers(r, resp);
    if (atomic_load(&r->srv->draining))
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    enum MHD_Result ret = MHD_queue_response(r->conn, (unsigned)r->status, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* ---- reading a request ---- */

/* SHA-256 of a presented key, for the comparison below. */
static int key_digest(const char *key, size_t n, unsigned char out[32]) {
    unsigned len = 0;
    return EVP_Digest(key, n, out, &len, EVP_sha256(), NULL) == 1 && len == 32 ? 0 : -1;
}

/* With an API key, every API route (/v1/..., /evaluate) needs the header
 * "Authorization: Bearer KEY", and so does /metrics with --metrics-public=0;
 * the probes and the page stay open for orchestrators and browsers.  The
 * digests of the presented and the real key are compared with
 * CRYPTO_memcmp: the time taken does not depend on where they differ, nor
 * on the length of either.  0 after replying 401. */
static int authorized(ll_request *r, const char *url) {
    ll_server *s = r->srv;
    if (!s->has_key) return 1;
    int needs = strncmp(url, "/v1/", 4) == 0 || strcmp(url, "/evaluate") == 0 ||
                (strcmp(url, "/metrics") == 0 && !s->opts.metrics_public);
    if (!needs) return 1;
    const char *h = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND,
                                                MHD_HTTP_HEADER_AUTHORIZATION);
    if (h && strncasecmp(h, "Bearer ", 7) == 0) {
        const char *k = h + 7;
        while (*k == ' ') k++;
        unsigned char d[32];
        if (key_digest(k, strlen(k), d) == 0 && CRYPTO_memcmp(d, s->key_sha256, 32) == 0)
            return 1;
    }
    r->endpoint = EP_OTHER;
    reply_error(r, 401, h ? "invalid_api_key" : "missing_api_key", NULL,
                "this server needs an API key: send 'Authorization: Bearer KEY'");
    if (r->resp) MHD_add_response_header(r->resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    return 0;
}

/* OPTIONS on an API route: its methods, and for a CORS preflight from an
 * allowed origin what it may send (add_cors_headers adds the origin).  A
 * preflight from another origin is refused with 403, which says why in the
 * browser's network panel.  Preflights carry no credentials, so they are
 * answered before the key is checked. */
static int reply_options(ll_request *r, const char *methods) {
    const char *asked = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND,
                                                    "Access-Control-Request-Method");
    const char *origin = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Origin");
    if (asked && origin && !r->origin) {
        reply_error(r, 403, "origin_not_allowed", NULL,
                    "cross-origin calls from %.200s are not allowed here (the server's "
                    "--cors-origin list)", origin);
        if (r->resp) MHD_add_response_header(r->resp, MHD_HTTP_HEADER_ALLOW, methods);
        return 0;
    }
    r->status = 204;
    r->resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    if (!r->resp) return 0;
    MHD_add_response_header(r->resp, MHD_HTTP_HEADER_ALLOW, methods);
    if (r->origin) {
        MHD_add_response_header(r->resp, "Access-Control-Allow-Methods", methods);
        MHD_add_response_header(r->resp, "Access-Control-Allow-Headers",
                                "Authorization, Content-Type");
        MHD_add_response_header(r->resp, "Access-Control-Max-Age", "600");
    }
    return 0;
}

/* The Origin header when it is an allowed origin (the exact string a
 * browser sends: scheme://host[:port]). */
static const char *allowed_origin(ll_request *r) {
    ll_server *s = r->srv;
    if (!s->n_cors && !s->cors_any) return NULL;
    const char *o = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Origin");
    if (!o) return NULL;
    if (s->cors_any) return o;
    for (int i = 0; i < s->n_cors; i++)
        if (strcmp(s->cors[i], o) == 0) return o;
    return NULL;
}

/* The first call, headers only.  Returns 1 when a reply was made already. */
static int on_headers(ll_request *r, const char *url, const char *method) {
    /* The web page: "/" and "/web/..." are answered whole here (web.c). */
    if (web_is_path(url)) return api_web(r, url, method), 1;
    r->origin = allowed_origin(r);
    const char *methods = route_methods(url);
    r->api_route = methods != NULL;
    if (methods && strcmp(method, "OPTIONS") == 0) {
        const route *rt = find_route(url);
        r->endpoint = rt ? rt->endpoint : EP_EVALUATIONS;
        return reply_options(r, methods), 1;
    }
    if (!authorized(r, url)) return 1;
    /* /v1/evaluations/{id}: GET and DELETE, answered here (api_eval.c). */
    if (eval_is_job_path(url)) return api_evaluation_job(r, url, method), 1;
    const route *rt = find_route(url);
    if (!rt) {
        r->endpoint = EP_OTHER;
        return reply_error(r, 404, "route_not_found", NULL, "no route %s", r->path), 1;
    }
    r->endpoint = rt->endpoint;
    int is_get = strcmp(rt->method, "GET") == 0;
    int ok = strcmp(method, rt->method) == 0 || (is_get && strcmp(method, "HEAD") == 0);
    if (!ok) {
        reply_error(r, 405, "method_not_allowed", NULL,
                    "%s %s is not supported; use %s", method, url, rt->method);
        if (r->resp) MHD_add_response_header(r->resp, MHD_HTTP_HEADER_ALLOW,
                                             is_get ? "GET, HEAD" : rt->method);
        return 1;
    }
    /* Refuse an announced oversize body before reading any of it. */
    const char *cl = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND,
                                                 MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl) {
        char *end;
        errno = 0;
        unsigned long long n = strtoull(cl, &end, 10);
        if (errno || *end || n > r->srv->opts.max_body_bytes)
            return reply_error(r, 413, "body_too_large", NULL,
                               "the request body is larger than %zu bytes",
                               r->srv->opts.max_body_bytes), 1;
    }
    return 0;
}

/* Appends a piece of body; -1 when it would pass the limit (a chunked body
 * has no Content-Length to refuse up front). */
static int append_body(ll_request *r, const char *data, size_t n) {
    size_t max = r->srv->opts.max_body_bytes;
    if (n > max - r->len) return -1;
    if (r->len + n > r->cap) {
        size_t cap = r->cap ? r->cap : 4096;
        while (cap < r->len + n) cap *= 2;
        if (cap > max) cap = max;
        char *b = realloc(r->body, cap);
        if (!b) return -1;
        r->body = b;
        r->cap = cap;
    }
    memcpy(r->body + r->len, data, n);
    r->len += n;
    return 0;
}

/* Parses the body as a JSON object; replies 400 and returns NULL on failure.
 * jansson rejects invalid UTF-8, NaN/Infinity and duplicate keys.  U+0000 is
 * valid JSON text and a valid byte for the tokenizers, so it is accepted:
 * texts travel with their length, and names compared as C strings refuse it
 * (json_has_nul). */
static json_t *parse_body(ll_request *r) {
    json_error_t je;
    json_t *j = json_loadb(r->body ? r->body : "", r->len,
                           JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &je);
    if (!j) {
        const char *code = "invalid_json";
        switch (json_error_code(&je)) {
        case json_error_invalid_utf8: code = "invalid_utf8"; break;
        case json_error_duplicate_key: code = "duplicate_key"; break;
        default: break;
        }
        reply_error(r, 400, code, NULL, "invalid JSON body (line %d, column %d): %s",
                    je.line, je.column, je.text);
        return NULL;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        reply_error(r, 400, "invalid_type", NULL, "the request body must be a JSON object");
        return NULL;
    }
    return j;
}

static enum MHD_Result dispatch(ll_request *r, const char *url) {
    const route *rt = find_route(url);
    json_t *body = NULL;
    if (strcmp(rt->method, "POST") == 0) body = parse_body(r);
    if (body || !r->resp) rt->handler(r, body);
    json_decref(body);
    if (r->resp) {
        struct MHD_Response *resp = r->resp;
        r->resp = NULL;
        return queue_response(r, resp);
    }
    if (r->job) return MHD_YES; /* suspended; a worker or the sweeper resumes it */
    r->status = 500;
    return MHD_NO;
}

/* A resumed connection: its job was answered (or its client is gone, and
 * the connection is closed without a word). */
static enum MHD_Result on_resumed(ll_request *r) {
    ll_job *job = r->job;
    r->status = job->status;
    if (job->status == LL_STATUS_CLIENT_GONE) return MHD_NO;
    struct MHD_Response *resp = job->resp;
    job->resp = NULL;
    return queue_response(r, resp);
}

/* The path for the log: bytes that are not printable ASCII (libmicrohttpd
 * has undone the client's %-escapes), spaces, quotes and '%' itself are
 * %-escaped again; cut at the buffer's size. */
static void log_path(char *out, size_t cap, const char *url) {
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)url; *p && o + 4 < cap; p++) {
        if (*p > ' ' && *p < 0x7F && *p != '%' && *p != '"' && *p != '\\') out[o++] = (char)*p;
        else o += (size_t)snprintf(out + o, cap - o, "%%%02X", *p);
    }
    out[o] = 0;
}

static void client_address(struct MHD_Connection *conn, char *out, size_t cap) {
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    snprintf(out, cap, "-");
    if (!ci || !ci->client_addr) return;
    const struct sockaddr *sa = ci->client_addr;
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, out, (socklen_t)cap);
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, out, (socklen_t)cap);
}

/* The request announces a body (a length other than 0, or chunks). */
static int has_body(struct MHD_Connection *conn) {
    const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                 MHD_HTTP_HEADER_CONTENT_LENGTH);
    const char *te = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                 MHD_HTTP_HEADER_TRANSFER_ENCODING);
    return te != NULL || (cl && strspn(cl, "0") != strlen(cl));
}

static ll_request *request_new(ll_server *s, struct MHD_Connection *conn, const char *url,
                               const char *method) {
    ll_request *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->srv = s;
    r->conn = conn;
    r->start_us = ll_now_us();
    r->endpoint = EP_OTHER;
    snprintf(r->method, sizeof r->method, "%s", method);
    log_path(r->path, sizeof r->path, url);
    client_address(conn, r->client, sizeof r->client);
    return r;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn,
                                  const char *url, const char *method,
                                  const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls) {
    ll_server *s = cls;
    ll_request *r = *con_cls;
    if (!r) {
        r = request_new(s, conn, url, method);
        if (!r) return MHD_NO;
        *con_cls = r;
        atomic_fetch_add(&s->in_progress, 1);
        int replied = on_headers(r, url, method);
        int body = has_body(conn);
        /* A reply made from the headers goes out at once when a body may
         * follow: the body is not read, and the connection closes after
         * the reply.  Without a body, the reply (or the handler) waits for
         * libmicrohttpd's next call, when the request is complete: a
         * response queued on the first call always closes the connection,
         * this keeps it open for the client's next request. */
        if (replied && body) {
            struct MHD_Response *resp = r->resp;
            r->resp = NULL;
            return queue_response(r, resp);
        }
        if (!replied && body && strcmp(method, "POST") != 0) return dispatch(r, url);
        return MHD_YES; /* wait for the body, or for the end of the request */
    }
    if (r->job) return on_resumed(r);
    if (*upload_size) {
        if (append_body(r, upload, *upload_size)) {
            /* Over the limit in a chunked body: libmicrohttpd cannot answer
             * in the middle of an upload, so the connection is closed. */
            r->status = 413;
            return MHD_NO;
        }
        /* A body still arriving at the request's deadline (a client sending
         * a byte now and then, which the idle timeout never catches): the
         * connection is closed, for the same reason. */
        if (ll_now_us() - r->start_us > (int64_t)s->opts.request_timeout_ms * 1000) {
            r->status = 408;
            return MHD_NO;
        }
        *upload_size = 0;
        return MHD_YES;
    }
    if (r->resp) { /* made from the headers (see above) */
        struct MHD_Response *resp = r->resp;
        r->resp = NULL;
        return queue_response(r, resp);
    }
    return dispatch(r, url);
}

static const char *termination_name(enum MHD_RequestTerminationCode toe) {
    switch (toe) {
    case MHD_REQUEST_TERMINATED_COMPLETED_OK: return NULL;
    case MHD_REQUEST_TERMINATED_TIMEOUT_REACHED: return "idle_timeout";
    case MHD_REQUEST_TERMINATED_DAEMON_SHUTDOWN: return "shutdown";
    case MHD_REQUEST_TERMINATED_READ_ERROR: return "read_error";
    case MHD_REQUEST_TERMINATED_CLIENT_ABORT: return "client_abort";
    default: return "connection_error";
    }
}

/* One line per request, at info: what was asked, what came of it.  A
 * request that ended without its response being sent whole says how. */
static void log_request(ll_server *s, const ll_request *r, double seconds,
                        enum MHD_RequestTerminationCode toe) {
    if (!ll_log_enabled(&s->logger, LL_LOG_INFO)) return;
    ll_log_field f[7] = {
        LL_LOG_STR("method", r->method), LL_LOG_STR("path", r->path),
        LL_LOG_INT("status", r->status), LL_LOG_NUM("ms", seconds * 1e3),
        LL_LOG_INT("tokens", r->tokens), LL_LOG_STR("client", r->client),
    };
    int n = 6;
    const char *how = termination_name(toe);
    if (how) f[n++] = LL_LOG_STR("error", how);
    ll_log_event(&s->logger, LL_LOG_INFO, "request", f, n);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    ll_server *s = cls;
    ll_request *r = *con_cls;
    if (!r) return;
    *con_cls = NULL;
    /* A resumed connection whose client is gone may be closed by
     * libmicrohttpd before on_resumed runs: the job's answer is the status. */
    if (!r->status && r->job && atomic_load(&r->job->state) == JOB_ANSWERED)
        r->status = r->job->status;
    double seconds = (double)(ll_now_us() - r->start_us) / 1e6;
    ll_metrics_request(s->metrics, r->endpoint, r->status, seconds);
    log_request(s, r, seconds, toe);
    if (r->resp) MHD_destroy_response(r->resp);
    if (r->job) job_release(r->job);
    free(r->body);
    free(r);
    atomic_fetch_sub(&s->in_progress, 1);
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap) {
    ll_server *s = cls;
    char line[1024];
    vsnprintf(line, sizeof line, fmt, ap);
    size_t n = strlen(line);
    while (n && line[n - 1] == '\n') line[--n] = 0;
    /* What a handler's MHD_NO causes (a client gone, a body too slow or too
     * large): the request line says it already. */
    int expected = strstr(line, "Application reported internal error") != NULL;
    ll_logf(&s->logger, expected ? LL_LOG_DEBUG : LL_LOG_WARN, "http: %s", line);
}

/* ---- start / stop ---- */

static int parse_host(const char *host, int port, struct sockaddr_storage *ss,
                      int *is_v6) {
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *v4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
        *is_v6 = 0;
        return 0;
    }
    if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
        *is_v6 = 1;
        return 0;
    }
    return -1;
}

int http_start(ll_server *s, ll_error *err) {
    struct sockaddr_storage addr;
    int v6;
    if (parse_host(s->opts.host, s->opts.port, &addr, &v6))
        return ll_errorf(err, "--host '%s' is not a numeric IPv4 or IPv6 address",
                         s->opts.host);
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL |
                     MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    if (v6) flags |= MHD_USE_IPv6;
    /* Idle connections go after --idle-timeout-s (a connection is idle
     * when it sends nothing: between keep-alive requests, or stalled in the
     * middle of one); suspended ones are the sweeper's.  libmicrohttpd serves
     * one request per connection at a time (it reads the next request of a
     * keep-alive connection only once the response to the current one is
     * sent), so a connection never has more than one request in flight. */
    s->daemon = MHD_start_daemon(
        flags, (uint16_t)s->opts.port, NULL, NULL, on_request, s,
        MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, s, /* first, to catch every message */
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned)LL_HTTP_THREADS,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)s->opts.idle_timeout_s,
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)s->opts.max_connections_per_ip,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)1000,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
        MHD_OPTION_END);
    if (!s->daemon)
        return ll_errorf(err, "cannot listen on %s port %d (in use, or not an address "
                         "of this machine?)", s->opts.host, s->opts.port);
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
    s->port = info ? info->port : s->opts.port;
    return 0;
}

void http_stop(ll_server *s) {
    if (!s->daemon) return;
    atomic_store(&s->draining, 1);
    MHD_socket fd = MHD_quiesce_daemon(s->daemon);
    if (fd != MHD_INVALID_SOCKET) close(fd);
    /* Every accepted request finishes: its job runs (the batcher stops
     * waiting for fuller batches only later, so give it the full timeout)
     * or the sweeper answers 504 at its deadline. */
    int64_t limit = ll_now_us() + (int64_t)s->opts.request_timeout_ms * 1000 + 5000000;
    while (atomic_load(&s->in_progress) > 0 && ll_now_us() < limit) usleep(2000);
    /* From here no job may suspend a connection (job_submit checks
     * shut_down under the lock), and none is left suspended: answer any
     * straggler so libmicrohttpd never stops with a suspended connection. */
    pthread_mutex_lock(&s->mu);
    s->shut_down = 1;
    while (s->inflight_head) {
        ll_job *job = s->inflight_head;
        answer_locked(s, job, 503, make_error_response(503, "shutting_down", NULL,
                                                       "the server is shutting down"));
    }
    pthread_mutex_unlock(&s->mu);
    MHD_stop_daemon(s->daemon);
    s->daemon = NULL;
}

/* ---- in-flight jobs and their deadlines ---- */

/* Both with s->mu held.  Jobs are appended in arrival order and all have the
 * same timeout, so the list is ordered by deadline. */
void inflight_add(ll_server *s, ll_job *job) {
    job->prev = s->inflight_tail;
    job->next = NULL;
    if (s->inflight_tail) s->inflight_tail->next = job;
    else s->inflight_head = job;
    s->inflight_tail = job;
    job->in_list = 1;
    pthread_cond_signal(&s->cv);
}

void inflight_remove(ll_server *s, ll_job *job) {
    if (!job->in_list) return;
    if (job->prev) job->prev->next = job->next;
    else s->inflight_head = job->next;
    if (job->next) job->next->prev = job->prev;
    else s->inflight_tail = job->prev;
    job->prev = job->next = NULL;
    job->in_list = 0;
}

/* Answers a job still in the list (s->mu held): every job in the list is
 * JOB_RUNNING, because answering and leaving the list happen together under
 * the lock - which is also why no connection is resumed after http_stop
 * has emptied the list. */
void answer_locked(ll_server *s, ll_job *job, int status, struct MHD_Response *resp) {
    atomic_store(&job->state, JOB_ANSWERED);
    atomic_store(&job->cancelled, 1);
    job->status = status;
    job->resp = resp;
    inflight_remove(s, job);
    MHD_resume_connection(job->conn);
}

/* How often suspended connections are checked for clients that hung up. */
#define GONE_CHECK_US 200000

/* 1 when the client of a suspended connection has closed it or reset it.
 * Suspended, the socket is not watched by libmicrohttpd, and it stays open
 * (and its descriptor ours to peek at) until the job leaves the in-flight
 * list, which needs s->mu, held here.  A client that half-closes after
 * sending its request counts as gone, as in nginx. */
static int client_gone(ll_job *job) {
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(job->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci) return 0;
    char c;
    ssize_t n = recv(ci->connect_fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

/* s->mu held: answers (and so cancels) the jobs whose clients are gone; their
 * queued sequences are dropped unrun. */
static void drop_abandoned(ll_server *s) {
    for (ll_job *job = s->inflight_head, *next; job; job = next) {
        next = job->next;
        if (client_gone(job)) answer_locked(s, job, LL_STATUS_CLIENT_GONE, NULL);
    }
}

static void *sweeper_main(void *p) {
    ll_server *s = p;
    int64_t next_check = 0;
    pthread_mutex_lock(&s->mu);
    while (!s->sweeper_stop) {
        int64_t now = ll_now_us();
        while (s->inflight_head && s->inflight_head->deadline_us <= now) {
            answer_locked(s, s->inflight_head, 504,
                          make_error_response(504, "timeout", NULL, "the request took "
                                              "longer than the request timeout"));
        }
        if (now >= next_check) {
            drop_abandoned(s);
            next_check = now + GONE_CHECK_US;
        }
        if (s->inflight_head) {
            int64_t wake = s->inflight_head->deadline_us;
            if (wake > next_check) wake = next_check;
            struct timespec ts = {.tv_sec = wake / 1000000,
                                  .tv_nsec = (long)(wake % 1000000) * 1000};
            pthread_cond_timedwait(&s->cv, &s->mu, &ts);
        } else {
            pthread_cond_wait(&s->cv, &s->mu);
        }
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

int sweeper_start(ll_server *s, ll_error *err) {
    int rc = pthread_create(&s->sweeper, NULL, sweeper_main, s);
    if (rc) return ll_errorf(err, "cannot start the deadline thread: %s", strerror(rc));
    s->sweeper_started = 1;
    return 0;
}

void sweeper_stop(ll_server *s) {
    if (!s->sweeper_started) return;
    pthread_mutex_lock(&s->mu);
    s->sweeper_stop = 1;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->sweeper, NULL);
    s->sweeper_started = 0;
}
