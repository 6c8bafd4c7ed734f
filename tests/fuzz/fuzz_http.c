/* fuzz_http.c - arbitrary request bodies through the HTTP service, end to
 * end: a server (ll_server_new + ll_server_load, the tiny GPT-2 and CLIP
 * fixture models, one worker) runs in this process on a loopback port, and
 * each input is one POST to it over a keep-alive connection.
 *
 * Input: byte 0 picks the endpoint (mod the table below), the rest is the
 * body, sent as is with its Content-Length.
 *
 * The server has no entry point that takes a body without a connection
 * (the handlers reply through libmicrohttpd), hence the socket; the server
 * code still runs in this process, so ASan, UBSan and the coverage feedback
 * see all of it, including the worker threads.
 *
 * Checked per request: an answer arrives (no hang, no dropped connection),
 * its status is 200 (202 for a queued evaluation) or a documented 4xx / 503
 * (never another 5xx; a 503 carries Retry-After), and the body is a JSON
 * object; an error body is {"error": {"type", "code", "message", ...}} with
 * strings there.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <jansson.h>

#include "fuzzutil.h"
#include "layerlens/server.h"

static const char *const PATHS[] = {
    "/v1/tokenize", "/v1/embeddings", "/v1/similarity", "/v1/self-similarity",
    "/v1/evaluate", "/v1/evaluations",
};
#define N_PATHS (sizeof PATHS / sizeof PATHS[0])

static ll_server *srv;
static int port;
static int sock = -1;

static void stop_server(void) {
    if (sock >= 0) close(sock);
    ll_server_shutdown(srv);
    ll_server_free(srv);
}

static void model_dir(char *out, size_t cap, const char *name) {
    char rel[128];
    snprintf(rel, sizeof rel, "fixtures/models/%s/config.json", name);
    snprintf(out, cap, "%s", fuzz_shared_path(rel));
    *strrchr(out, '/') = 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    static char gpt2[4200], clip[4200];
    model_dir(gpt2, sizeof gpt2, "gpt2-tiny");
    model_dir(clip, sizeof clip, "clip-tiny");
    ll_server_opts o;
    ll_server_opts_default(&o);
    o.gpt2_dir = gpt2;
    o.clip_dir = clip;
    o.host = "127.0.0.1";
    o.port = 0;
    o.workers = 1;
    o.max_batch_wait_us = 0;
    o.max_body_bytes = 1 << 20;
    ll_error err = {{0}};
    FILE *log = fopen("/dev/null", "w");
    srv = ll_server_new(&o, log ? log : stderr, &err);
    FUZZ_CHECK(srv != NULL, "cannot start the server: %s", err.msg);
    FUZZ_CHECK(ll_server_load(srv, &err) == 0, "cannot load the models: %s", err.msg);
    port = ll_server_port(srv);
    atexit(stop_server);
    return 0;
}

static int connect_server(void) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    FUZZ_CHECK(fd >= 0, "socket: %s", strerror(errno));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    /* an answer later than this is a hang, not a slow request */
    struct timeval tv = {20, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    FUZZ_CHECK(connect(fd, (struct sockaddr *)&a, sizeof a) == 0, "connect: %s",
               strerror(errno));
    return fd;
}

static int send_all(int fd, const void *p, size_t n) {
    const char *c = p;
    while (n) {
        ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

typedef struct reply {
    int status;
    int close;      /* the server will close the connection */
    int retry_after;
    char *body;
    size_t len;
} reply;

/* Reads one response (status line, headers, Content-Length body).  -1 when
 * the connection ended before a whole response. */
static int read_reply(int fd, reply *out) {
    size_t cap = 1 << 16, n = 0, head = 0;
    char *buf = malloc(cap);
    FUZZ_CHECK(buf != NULL, "out of memory");
    long clen = -1;
    for (;;) {
        if (n == cap) {
            cap *= 2;
            buf = realloc(buf, cap);
            FUZZ_CHECK(buf != NULL, "out of memory");
        }
        if (!head) {
            char *e = memmem(buf, n, "\r\n\r\n", 4);
            if (e) {
                head = (size_t)(e - buf) + 4;
                buf[head - 2] = 0;
                if (sscanf(buf, "HTTP/1.%*d %d", &out->status) != 1) break;
                for (char *h = strstr(buf, "\r\n"); h && h < buf + head; h = strstr(h + 2, "\r\n")) {
                    if (strncasecmp(h + 2, "Content-Length:", 15) == 0) clen = atol(h + 17);
                    if (strncasecmp(h + 2, "Connection: close", 17) == 0) out->close = 1;
                    if (strncasecmp(h + 2, "Retry-After:", 12) == 0) out->retry_after = 1;
                }
                if (clen < 0) break; /* every answer of the service has one */
            }
        }
        if (head && n >= head + (size_t)clen) {
            out->body = malloc((size_t)clen + 1);
            FUZZ_CHECK(out->body != NULL, "out of memory");
            memcpy(out->body, buf + head, (size_t)clen);
            out->body[clen] = 0;
            out->len = (size_t)clen;
            free(buf);
            return 0;
        }
        ssize_t r = recv(fd, buf + n, cap - n, 0);
        if (r < 0 && errno == EINTR) continue;
        FUZZ_CHECK(!(r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)),
                   "no answer within 20 s");
        if (r <= 0) break;
        n += (size_t)r;
    }
    free(buf);
    return -1;
}

static void check_reply(const char *path, const reply *r) {
    int st = r->status;
    FUZZ_CHECK(st == 200 || st == 202 || st == 400 || st == 404 || st == 413 || st == 415 ||
                   st == 422 || st == 503,
               "%s answered %d: %.300s", path, st, r->body);
    FUZZ_CHECK(st != 503 || r->retry_after, "%s: 503 without Retry-After", path);
    json_error_t je;
    json_t *j = json_loadb(r->body, r->len, JSON_ALLOW_NUL, &je);
    FUZZ_CHECK(j && json_is_object(j), "%s %d: the body is not a JSON object (%s): "
               "%.300s", path, st, je.text, r->body);
    if (st >= 300) {
        json_t *e = json_object_get(j, "error");
        FUZZ_CHECK(json_is_object(e) &&
                       json_is_string(json_object_get(e, "type")) &&
                       json_is_string(json_object_get(e, "code")) &&
                       json_is_string(json_object_get(e, "message")),
                   "%s %d: not an error body: %.300s", path, st, r->body);
    }
    json_decref(j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    const char *path = PATHS[data[0] % N_PATHS];
    const uint8_t *body = data + 1;
    size_t len = size - 1;
    char head[256];
    int hn = snprintf(head, sizeof head,
                      "POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                      path, len);
    for (int attempt = 0;; attempt++) {
        if (sock < 0) sock = connect_server();
        reply r = {0};
        if (send_all(sock, head, (size_t)hn) == 0 && send_all(sock, body, len) == 0 &&
            read_reply(sock, &r) == 0) {
            check_reply(path, &r);
            free(r.body);
            if (r.close) {
                close(sock);
                sock = -1;
            }
            return 0;
        }
        /* a keep-alive connection the server had closed meanwhile: once more
         * on a fresh one; a second failure is the server's */
        close(sock);
        sock = -1;
        FUZZ_CHECK(attempt == 0, "%s: the connection ended without an answer", path);
    }
}
