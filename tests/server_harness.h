/* server_harness.h - helpers of the server tests: run `$BUILD/layerlens serve`
 * as a child process on a free loopback port, and talk HTTP/1.1 to it over
 * plain sockets (so a test controls every byte: partial bodies, bad bytes,
 * announced sizes, several requests in flight on separate connections).
 *
 * Header-only (static functions) because the Makefile links each test
 * program with testutil.c alone.
 *
 * The child is bound to the test: it gets SIGKILL if the test process dies
 * (PR_SET_PDEATHSIG), tests stop it in their teardown, and every socket read
 * has a timeout, so a broken server fails a test instead of hanging it. */
#ifndef LAYERLENS_SERVER_HARNESS_H
#define LAYERLENS_SERVER_HARNESS_H

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"

#define TH_IO_TIMEOUT_S 60
#define TH_FN static __attribute__((unused))

typedef struct th_server {
    pid_t pid;
    int port;
    char log_path[4300];
} th_server;

TH_FN double th_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

TH_FN void th_sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

TH_FN const char *th_binary(void) {
    static char path[4096];
    const char *b = getenv("BUILD");
    snprintf(path, sizeof path, "%s/layerlens", b && *b ? b : "build");
    return path;
}

/* The server's log (stdout + stderr) so far, malloc'd. */
TH_FN char *th_log(const th_server *s) {
    char *t = tu_read_file(s->log_path, NULL);
    return t ? t : strdup("");
}

TH_FN int th_log_has(const th_server *s, const char *needle) {
    char *t = th_log(s);
    int found = strstr(t, needle) != NULL;
    free(t);
    return found;
}

/* Forks `layerlens serve --port PORT ARGS...` with its output in the log. */
TH_FN void th_spawn(th_server *s, const char *const *args, int port) {
    memset(s, 0, sizeof *s);
    snprintf(s->log_path, sizeof s->log_path, "%s/server.log", tu_tmpdir());
    char port_s[16];
    snprintf(port_s, sizeof port_s, "%d", port);
    const char *argv[64];
    int n = 0;
    argv[n++] = th_binary();
    argv[n++] = "serve";
    argv[n++] = "--port";
    argv[n++] = port_s;
    for (int i = 0; args && args[i] && n < 62; i++) argv[n++] = args[i];
    argv[n] = NULL;
    pid_t parent = getpid();
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(127);
        int fd = open(s->log_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int null = open("/dev/null", O_RDONLY);
        if (fd < 0 || null < 0) _exit(127);
        dup2(null, 0);
        dup2(fd, 1);
        dup2(fd, 2);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    s->pid = pid;
}

/* Starts `layerlens serve --port 0 ARGS...` and waits for its "listening"
 * line (and for "ready" when wait_ready).  Fails the test on a timeout or an
 * early exit, showing the log. */
TH_FN void th_start(th_server *s, const char *const *args, int wait_ready) {
    th_spawn(s, args, 0);
    pid_t pid = s->pid;
    double end = th_now() + 60;
    const char *key = "listening on http://127.0.0.1:";
    while (th_now() < end) {
        char *log = th_log(s);
        char *p = strstr(log, key);
        if (p) s->port = atoi(p + strlen(key));
        int ready = !wait_ready || strstr(log, "layerlens: ready");
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            s->pid = 0;
            fail_msg("server exited early (status %d); log:\n%s", status, log);
        }
        free(log);
        if (s->port > 0 && ready) return;
        th_sleep_ms(10);
    }
    char *log = th_log(s);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    s->pid = 0;
    fail_msg("server did not start within 60 s; log:\n%s", log);
}

/* A loopback port that was free a moment ago (for a server whose log does
 * not say which port it took). */
TH_FN int th_free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) ||
        getsockname(fd, (struct sockaddr *)&a, &len))
        fail_msg("cannot find a free port: %s", strerror(errno));
    close(fd);
    return ntohs(a.sin_port);
}

/* Sends sig and waits up to timeout_s for the exit; returns the wait status
 * (-1 after having to SIGKILL it). */
TH_FN int th_stop(th_server *s, int sig, double timeout_s) {
    if (s->pid <= 0) return -1;
    kill(s->pid, sig);
    double end = th_now() + timeout_s;
    int status;
    while (th_now() < end) {
        if (waitpid(s->pid, &status, WNOHANG) == s->pid) {
            s->pid = 0;
            return status;
        }
        th_sleep_ms(5);
    }
    kill(s->pid, SIGKILL);
    waitpid(s->pid, NULL, 0);
    s->pid = 0;
    return -1;
}

/* Teardown: a clean SIGTERM exit is expected; anything else fails. */
TH_FN void th_stop_clean(th_server *s) {
    int st = th_stop(s, SIGTERM, 60);
    if (!(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0)) {
        char *log = th_log(s);
        fprintf(stderr, "server log:\n%s\n", log);
        free(log);
        fail_msg("server did not exit 0 after SIGTERM (wait status %d)", st);
    }
}

/* ---- HTTP/1.1 over a socket ---- */

typedef struct th_resp {
    int status;
    char *head; /* status line + headers */
    char *body;
    size_t len;
} th_resp;

TH_FN void th_resp_free(th_resp *r) {
    free(r->head);
    free(r->body);
    memset(r, 0, sizeof *r);
}

TH_FN int th_connect(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    struct timeval tv = {TH_IO_TIMEOUT_S, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

TH_FN int th_send_all(int fd, const void *buf, size_t n) {
    const char *p = buf;
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Sends one request with Connection: close.  extra: more header lines, each
 * ending in \r\n (may be NULL).  A body gets a Content-Length. */
TH_FN int th_send_request(int fd, const char *method, const char *path, const char *body,
                           size_t len, const char *extra) {
    char head[2048];
    int n = snprintf(head, sizeof head,
                     "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n%s", method,
                     path, extra ? extra : "");
    if (body)
        n += snprintf(head + n, sizeof head - n,
                      "Content-Type: application/json\r\nContent-Length: %zu\r\n", len);
    n += snprintf(head + n, sizeof head - n, "\r\n");
    if (th_send_all(fd, head, (size_t)n)) return -1;
    return body && len ? th_send_all(fd, body, len) : 0;
}

/* Reads a whole response (the server closes after it). */
TH_FN int th_read_response(int fd, th_resp *r) {
    memset(r, 0, sizeof *r);
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    for (;;) {
        if (n == cap) {
            cap *= 2;
            buf = realloc(buf, cap + 1);
        }
        ssize_t k = recv(fd, buf + n, cap - n, 0);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) {
            free(buf);
            return -1; /* timeout or reset */
        }
        if (k == 0) break;
        n += (size_t)k;
    }
    buf[n] = 0;
    char *sep = strstr(buf, "\r\n\r\n");
    if (!sep || sscanf(buf, "HTTP/1.%*d %d", &r->status) != 1) {
        free(buf);
        return -1;
    }
    size_t hl = (size_t)(sep - buf);
    r->head = strndup(buf, hl);
    r->len = n - hl - 4;
    r->body = malloc(r->len + 1);
    memcpy(r->body, sep + 4, r->len);
    r->body[r->len] = 0;
    free(buf);
    return 0;
}

TH_FN int th_request(int port, const char *method, const char *path, const char *body,
                      size_t len, const char *extra, th_resp *r) {
    int fd = th_connect(port);
    if (fd < 0) return -1;
    int rc = th_send_request(fd, method, path, body, len, extra);
    if (rc == 0) rc = th_read_response(fd, r);
    close(fd);
    return rc;
}

/* Value of a header (case-insensitive name) into buf; NULL when absent. */
TH_FN const char *th_header(const th_resp *r, const char *name, char *buf, size_t cap) {
    size_t nl = strlen(name);
    for (const char *p = r->head; p && (p = strstr(p, "\r\n")); ) {
        p += 2;
        if (strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            const char *v = p + nl + 1;
            while (*v == ' ') v++;
            size_t k = strcspn(v, "\r\n");
            if (k >= cap) k = cap - 1;
            memcpy(buf, v, k);
            buf[k] = 0;
            return buf;
        }
    }
    return NULL;
}

TH_FN json_t *th_body_json(const th_resp *r) {
    json_error_t je;
    return json_loadb(r->body, r->len, JSON_ALLOW_NUL, &je);
}

/* POSTs a JSON value (stolen) and returns the parsed response (NULL when the
 * body is not JSON); *status receives the HTTP status. */
TH_FN json_t *th_post(int port, const char *path, json_t *req, int *status) {
    char *text = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    th_resp r;
    int rc = th_request(port, "POST", path, text, strlen(text), NULL, &r);
    free(text);
    if (rc) fail_msg("POST %s: no response", path);
    *status = r.status;
    json_t *j = th_body_json(&r);
    th_resp_free(&r);
    return j;
}

TH_FN json_t *th_get(int port, const char *path, int *status) {
    th_resp r;
    if (th_request(port, "GET", path, NULL, 0, NULL, &r)) fail_msg("GET %s: no response", path);
    *status = r.status;
    json_t *j = th_body_json(&r);
    th_resp_free(&r);
    return j;
}

/* The value of one Prometheus series ("name{labels}" exactly as printed),
 * or -1 when absent. */
TH_FN double th_metric(const char *text, const char *series) {
    size_t n = strlen(series);
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        if (strncmp(p, series, n) == 0 && p[n] == ' ') return atof(p + n + 1);
    }
    return -1;
}

TH_FN char *th_metrics_text(int port) {
    th_resp r;
    if (th_request(port, "GET", "/metrics", NULL, 0, NULL, &r) || r.status != 200)
        fail_msg("GET /metrics failed");
    char *t = r.body;
    r.body = NULL;
    th_resp_free(&r);
    return t;
}

/* ---- numbers ---- */

/* Cosine of two JSON number arrays, in double. */
TH_FN double th_cosine_json(const json_t *a, const json_t *b) {
    double ab = 0, aa = 0, bb = 0;
    size_t n = json_array_size(a);
    for (size_t i = 0; i < n; i++) {
        double x = json_number_value(json_array_get(a, i));
        double y = json_number_value(json_array_get(b, i));
        ab += x * y, aa += x * x, bb += y * y;
    }
    return ab / sqrt(aa * bb);
}

/* Max |a - b| over two JSON arrays of the same nested shape; +inf when the
 * shapes differ. */
TH_FN double th_max_diff_json(const json_t *a, const json_t *b) {
    if (json_is_number(a) && json_is_number(b))
        return fabs(json_number_value(a) - json_number_value(b));
    if (!json_is_array(a) || !json_is_array(b) || json_array_size(a) != json_array_size(b))
        return INFINITY;
    double worst = 0;
    for (size_t i = 0; i < json_array_size(a); i++) {
        double d = th_max_diff_json(json_array_get(a, i), json_array_get(b, i));
        if (!(d <= worst)) worst = d;
    }
    return worst;
}

#endif
