/* stress.c - load and fault scenarios against the real server on loopback
 * (`make stress`, `make stress-quick`; see docs/http-api.md "Load and fault
 * tests").
 *
 *   stress --binary build/layerlens [--asan-binary build-asan/layerlens] [--quick]
 *          [--only sustained,overload,idle,hostile,sigterm,disconnect,weights,results]
 *
 * Each scenario starts `layerlens serve` on the tiny fixture checkpoints of
 * ../shared (LAYERLENS_SHARED), drives it over plain sockets from threads of
 * this program, checks what it must, and stops the server with SIGTERM
 * (exit 0 expected).  Everything is bounded: every scenario runs for a fixed
 * time or count, every socket has a timeout, the servers die with this
 * process.  At the end a table: scenario, requests sent, answered (200),
 * documented 503s, failed, p50/p99 latency, server resident memory at the
 * start and end of the scenario, and the verdict; the exit status is 0 only
 * when every scenario passed.
 *
 * Scenarios:
 *   sustained   many keep-alive connections on /v1/embeddings and
 *               /v1/similarity for a fixed time; every answer checked; no
 *               failure but documented 503s; resident memory flat between the
 *               first and the last 10% of the run.
 *   overload    more clients than --max-queue allows: fast 503 with
 *               Retry-After, never a hang; a request right after is served.
 *   idle+slow   hundreds of idle connections and a body sent a byte a second
 *               do not slow other clients; the server closes them (idle
 *               timeout, request timeout).
 *   hostile     oversized, nested, huge, long, invalid UTF-8, NUL, wrong
 *               types, duplicate keys, NaN/Infinity: each its documented 4xx.
 *   sigterm     SIGTERM under load: every request the server took (its log
 *               says which) is answered, exit 0.
 *   disconnect  clients hanging up while queued or running: work dropped,
 *               no crash, memory flat; again on the ASan build (no error, no
 *               leak at exit).
 *   weights     missing / truncated / garbage model.safetensors: a message
 *               naming the file, exit status not 0.
 *   results     results directory gone unwritable: evaluations still
 *               answered, a warning logged. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ======================= settings ======================= */

typedef struct settings {
    int quick;
    const char *only;  /* comma list of scenarios, or NULL: all */
    const char *binary, *asan_binary;
    char shared[4096];
    char tmp[256];
    /* scaled by --quick */
    double sustained_s;
    int sustained_clients;
    double overload_s;
    int overload_clients;
    int idle_conns;
    int disconnects;
} settings;

static settings S;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "stress: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

/* ======================= results table ======================= */

#define MAX_ROWS 32

typedef struct row {
    char name[48];
    long sent, ok, s503, failed;
    double p50_ms, p99_ms;   /* < 0: not applicable */
    double rss0_mib, rss1_mib;
    int pass;
    char note[200];
} row;

static row ROWS[MAX_ROWS];
static int N_ROWS;

static row *add_row(const char *name) {
    if (N_ROWS == MAX_ROWS) die("too many rows");
    row *r = &ROWS[N_ROWS++];
    memset(r, 0, sizeof *r);
    snprintf(r->name, sizeof r->name, "%s", name);
    r->p50_ms = r->p99_ms = -1;
    r->rss0_mib = r->rss1_mib = -1;
    r->pass = 1;
    return r;
}

__attribute__((format(printf, 2, 3)))
static void note(row *r, const char *fmt, ...) {
    size_t n = strlen(r->note);
    if (n && n < sizeof r->note - 2) {
        r->note[n++] = ';';
        r->note[n++] = ' ';
        r->note[n] = 0;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->note + n, sizeof r->note - n, fmt, ap);
    va_end(ap);
}

/* A failed check: the row fails, and says why. */
__attribute__((format(printf, 3, 4)))
static void check(row *r, int ok, const char *fmt, ...) {
    if (ok) return;
    r->pass = 0;
    char buf[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    note(r, "FAIL: %s", buf);
    fprintf(stderr, "stress: %s: FAIL: %s\n", r->name, buf);
}

static void print_table(void) {
    printf("\n%-30s %7s %7s %6s %6s %9s %9s %17s  %s\n", "scenario", "sent", "answered",
           "503", "failed", "p50 ms", "p99 ms", "memory MiB", "result");
    for (int i = 0; i < N_ROWS; i++) {
        row *r = &ROWS[i];
        char p50[16] = "-", p99[16] = "-", mem[32] = "-";
        if (r->p50_ms >= 0) snprintf(p50, sizeof p50, "%.1f", r->p50_ms);
        if (r->p99_ms >= 0) snprintf(p99, sizeof p99, "%.1f", r->p99_ms);
        if (r->rss0_mib >= 0)
            snprintf(mem, sizeof mem, "%.1f -> %.1f", r->rss0_mib, r->rss1_mib);
        printf("%-30s %7ld %7ld %6ld %6ld %9s %9s %17s  %s%s%s\n", r->name, r->sent, r->ok,
               r->s503, r->failed, p50, p99, mem, r->pass ? "ok" : "FAILED",
               r->note[0] ? "  " : "", r->note);
    }
    printf("\n");
}

/* ======================= latencies ======================= */

typedef struct lat {
    pthread_mutex_t mu;
    double *v;
    long n, cap;
} lat;

static void lat_init(lat *l, long cap) {
    pthread_mutex_init(&l->mu, NULL);
    l->v = malloc(sizeof *l->v * (size_t)cap);
    l->n = 0;
    l->cap = l->v ? cap : 0;
}

static void lat_add(lat *l, double s) {
    pthread_mutex_lock(&l->mu);
    if (l->n < l->cap) l->v[l->n++] = s;
    pthread_mutex_unlock(&l->mu);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile in milliseconds; -1 without samples. */
static double lat_pct(lat *l, double p) {
    if (!l->n) return -1;
    qsort(l->v, (size_t)l->n, sizeof *l->v, cmp_double);
    long k = (long)ceil(p / 100.0 * (double)l->n) - 1;
    if (k < 0) k = 0;
    return l->v[k] * 1e3;
}

static void lat_free(lat *l) {
    free(l->v);
    pthread_mutex_destroy(&l->mu);
}

/* ======================= the server process ======================= */

typedef struct server {
    pid_t pid;
    int port;
    char log[512];
} server;

static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap + 1);
    size_t k;
    while (b && (k = fread(b + n, 1, cap - n, f)) > 0) {
        n += k;
        if (n == cap) {
            cap *= 2;
            char *nb = realloc(b, cap + 1);
            if (!nb) {
                free(b);
                b = NULL;
            }
            b = nb;
        }
    }
    fclose(f);
    if (!b) return NULL;
    b[n] = 0;
    if (len) *len = n;
    return b;
}

static const char *fixture(const char *name) {
    static char buf[8][4200];
    static int k;
    char *b = buf[k++ % 8];
    snprintf(b, 4200, "%s/fixtures/models/%s", S.shared, name);
    return b;
}

/* Forks `binary serve --port 0 --gpt2 .. --clip .. ARGS`; output into a log
 * file of its own. */
static void server_spawn(server *sv, const char *binary, const char *tag,
                         const char *const *args, int models) {
    memset(sv, 0, sizeof *sv);
    snprintf(sv->log, sizeof sv->log, "%s/%s.log", S.tmp, tag);
    const char *argv[64];
    int n = 0;
    argv[n++] = binary;
    argv[n++] = "serve";
    argv[n++] = "--port";
    argv[n++] = "0";
    if (models) {
        argv[n++] = "--gpt2";
        argv[n++] = fixture("gpt2-tiny");
        argv[n++] = "--clip";
        argv[n++] = fixture("clip-tiny");
    }
    for (int i = 0; args && args[i] && n < 62; i++) argv[n++] = args[i];
    argv[n] = NULL;
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) die("fork: %s", strerror(errno));
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(127);
        int fd = open(sv->log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int null = open("/dev/null", O_RDONLY);
        if (fd < 0 || null < 0) _exit(127);
        dup2(null, 0);
        dup2(fd, 1);
        dup2(fd, 2);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    sv->pid = pid;
}

static int log_has(const server *sv, const char *needle) {
    char *t = read_file(sv->log, NULL);
    int has = t && strstr(t, needle);
    free(t);
    return has;
}

static int http_status(int port, const char *method, const char *path, const char *body,
                       const char *headers);

/* Waits for the port in the log, then for /readyz 200.  0, or -1 when the
 * server exited or took longer than 60 s. */
static int server_wait_ready(server *sv) {
    const char *key = "listening on http://127.0.0.1:";
    for (double end = now_s() + 60; now_s() < end; sleep_ms(20)) {
        if (waitpid(sv->pid, NULL, WNOHANG) == sv->pid) {
            sv->pid = 0;
            return -1;
        }
        if (!sv->port) {
            char *t = read_file(sv->log, NULL);
            char *p = t ? strstr(t, key) : NULL;
            if (p) sv->port = atoi(p + strlen(key));
            free(t);
        }
        if (sv->port && http_status(sv->port, "GET", "/readyz", NULL, NULL) == 200) return 0;
    }
    return -1;
}

static void server_start(server *sv, const char *binary, const char *tag,
                         const char *const *args) {
    server_spawn(sv, binary, tag, args, 1);
    if (server_wait_ready(sv)) {
        char *t = read_file(sv->log, NULL);
        die("the %s server did not start; its log:\n%s", tag, t ? t : "");
    }
}

/* SIGTERM (or another signal), then the exit status: the exit code, 128 +
 * the signal that killed it, or -1 when it had to be killed after
 * timeout_s. */
static int server_stop(server *sv, int sig, double timeout_s) {
    if (sv->pid <= 0) return -1;
    kill(sv->pid, sig);
    int st;
    for (double end = now_s() + timeout_s; now_s() < end; sleep_ms(5)) {
        if (waitpid(sv->pid, &st, WNOHANG) == sv->pid) {
            sv->pid = 0;
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        }
    }
    kill(sv->pid, SIGKILL);
    waitpid(sv->pid, NULL, 0);
    sv->pid = 0;
    return -1;
}

/* Resident memory of a process in MiB (VmRSS), -1 when unknown. */
static double rss_mib(pid_t pid) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    char *t = read_file(path, NULL);
    char *p = t ? strstr(t, "VmRSS:") : NULL;
    double v = p ? atof(p + 6) / 1024.0 : -1;
    free(t);
    return v;
}

/* Samples the server's resident memory every 100 ms while a load runs. */
typedef struct rss_sampler {
    pid_t pid;
    atomic_int stop;
    double v[20000];
    int n;
    pthread_t th;
} rss_sampler;

static void *sampler_main(void *p) {
    rss_sampler *s = p;
    while (!atomic_load(&s->stop) && s->n < 20000) {
        double m = rss_mib(s->pid);
        if (m > 0) s->v[s->n++] = m;
        sleep_ms(100);
    }
    return NULL;
}

static void sampler_start(rss_sampler *s, pid_t pid) {
    s->pid = pid;
    s->n = 0;
    atomic_store(&s->stop, 0);
    pthread_create(&s->th, NULL, sampler_main, s);
}

/* Stops sampling; the means of the first and last 10% of the samples. */
static void sampler_stop(rss_sampler *s, double *first, double *last) {
    atomic_store(&s->stop, 1);
    pthread_join(s->th, NULL);
    *first = *last = -1;
    if (s->n < 2) return;
    int k = s->n / 10 > 0 ? s->n / 10 : 1;
    double a = 0, b = 0;
    for (int i = 0; i < k; i++) a += s->v[i], b += s->v[s->n - 1 - i];
    *first = a / k;
    *last = b / k;
}

/* ======================= HTTP over sockets ======================= */

static int tcp_connect(int port, double timeout_s) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    struct timeval tv = {(time_t)timeout_s, (suseconds_t)((timeout_s - (time_t)timeout_s) * 1e6)};
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

static int send_request(int fd, const char *method, const char *path, const char *body,
                        size_t len, const char *headers, int keep_alive) {
    char head[1024];
    int n = snprintf(head, sizeof head, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%s%s", method, path,
                     keep_alive ? "" : "Connection: close\r\n", headers ? headers : "");
    if (body)
        n += snprintf(head + n, sizeof head - n,
                      "Content-Type: application/json\r\nContent-Length: %zu\r\n", len);
    n += snprintf(head + n, sizeof head - n, "\r\n");
    if (send_all(fd, head, (size_t)n)) return -1;
    return body && len ? send_all(fd, body, len) : 0;
}

typedef struct resp {
    int status;
    int retry_after;
    int close;
    int timed_out;  /* no answer within the socket's timeout */
    char *body;
    size_t len;
} resp;

enum { READ_OK = 0, READ_NOTHING = -1, READ_PARTIAL = -2 };

/* One response (headers, Content-Length body).  READ_NOTHING when the
 * connection ended (or timed out) before any byte, READ_PARTIAL after some. */
static int read_response(int fd, resp *out) {
    memset(out, 0, sizeof *out);
    size_t cap = 1 << 14, n = 0, head = 0;
    long clen = -1;
    char *buf = malloc(cap + 1);
    if (!buf) return READ_PARTIAL;
    for (;;) {
        if (head && n >= head + (size_t)clen) break;
        if (n == cap) {
            cap *= 2;
            char *nb = realloc(buf, cap + 1);
            if (!nb) break;
            buf = nb;
        }
        ssize_t k = recv(fd, buf + n, cap - n, 0);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) {
            out->timed_out = k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
            free(buf);
            return n ? READ_PARTIAL : READ_NOTHING;
        }
        n += (size_t)k;
        if (!head) {
            buf[n] = 0;
            char *e = strstr(buf, "\r\n\r\n");
            if (!e) continue;
            head = (size_t)(e - buf) + 4;
            if (sscanf(buf, "HTTP/1.%*d %d", &out->status) != 1) break;
            for (char *h = strstr(buf, "\r\n"); h && h < e; h = strstr(h + 2, "\r\n")) {
                if (strncasecmp(h + 2, "Content-Length:", 15) == 0) clen = atol(h + 17);
                if (strncasecmp(h + 2, "Connection: close", 17) == 0) out->close = 1;
                if (strncasecmp(h + 2, "Retry-After:", 12) == 0) out->retry_after = 1;
            }
            if (clen < 0) clen = 0;
        }
    }
    if (!head || n < head + (size_t)clen) {
        free(buf);
        return READ_PARTIAL;
    }
    out->len = (size_t)clen;
    out->body = malloc(out->len + 1);
    if (out->body) {
        memcpy(out->body, buf + head, out->len);
        out->body[out->len] = 0;
    }
    free(buf);
    return READ_OK;
}

/* A whole exchange on a new connection; the status, or -1. */
static int http_exchange(int port, const char *method, const char *path, const char *body,
                         size_t len, const char *headers, resp *r, double timeout_s) {
    int fd = tcp_connect(port, timeout_s);
    if (fd < 0) return -1;
    int rc = send_request(fd, method, path, body, len, headers, 0);
    if (rc == 0) rc = read_response(fd, r) == READ_OK ? 0 : -1;
    close(fd);
    return rc ? -1 : r->status;
}

static int http_status(int port, const char *method, const char *path, const char *body,
                       const char *headers) {
    resp r;
    int st = http_exchange(port, method, path, body, body ? strlen(body) : 0, headers, &r, 10);
    if (st >= 0) free(r.body);
    return st;
}

/* The value of one series in /metrics, or -1. */
static double metric(int port, const char *series) {
    resp r;
    if (http_exchange(port, "GET", "/metrics", NULL, 0, NULL, &r, 10) != 200) return -1;
    double v = -1;
    size_t n = strlen(series);
    for (const char *p = r.body; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
        if (strncmp(p, series, n) == 0 && p[n] == ' ') v = atof(p + n + 1);
    free(r.body);
    return v;
}

/* ======================= request bodies ======================= */

static const char *const TEXTS[] = {
    "cat", "dog", "a photo of a cat", "the stock market fell sharply today",
    "She plays the violin in an orchestra.", "coast", "shore", "forest", "tree",
    "The quick brown fox jumps over the lazy dog.", "bank", "river bank",
    "An old man is reading a newspaper on a bench.", "hello world", "engine",
};
#define N_TEXTS ((int)(sizeof TEXTS / sizeof TEXTS[0]))

typedef struct rng { uint64_t s; } rng;

static uint32_t rnd(rng *g) {
    g->s = g->s * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(g->s >> 33);
}

/* A request body for endpoint 0 (/v1/embeddings) or 1 (/v1/similarity), and
 * how many items its answer must hold. */
static char *make_body(rng *g, int endpoint, int *items) {
    const char *model = rnd(g) % 2 ? "clip" : "gpt2";
    json_t *req = json_pack("{s:s}", "model", model);
    int n = 1 + (int)(rnd(g) % 4);
    *items = n;
    if (endpoint == 0) {
        json_t *in = json_array();
        for (int i = 0; i < n; i++) json_array_append_new(in, json_string(TEXTS[rnd(g) % N_TEXTS]));
        json_object_set_new(req, "input", in);
        switch (rnd(g) % 3) {
        case 0: json_object_set_new(req, "layers", json_string("all")); break;
        case 1: json_object_set_new(req, "layers", json_pack("[i,i]", 0, 2)); break;
        default: break;
        }
    } else {
        json_t *pairs = json_array();
        for (int i = 0; i < n; i++)
            json_array_append_new(pairs, json_pack("[s,s]", TEXTS[rnd(g) % N_TEXTS],
                                                   TEXTS[rnd(g) % N_TEXTS]));
        json_object_set_new(req, "pairs", pairs);
        if (rnd(g) % 2) json_object_set_new(req, "layers", json_string("all"));
    }
    char *text = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    return text;
}

/* A 200 body holds `items` data entries. */
static int body_ok(const resp *r, int items) {
    json_error_t je;
    json_t *j = r->body ? json_loadb(r->body, r->len, 0, &je) : NULL;
    int ok = j && (int)json_array_size(json_object_get(j, "data")) == items;
    json_decref(j);
    return ok;
}

/* ======================= a load of clients ======================= */

typedef struct load {
    int port;
    int clients;
    int keep_alive;
    int endpoints;          /* 1: embeddings only; 2: both, by client parity */
    int fixed_inputs;       /* >0: every embeddings request has this many inputs */
    double until;           /* monotonic deadline */
    atomic_int *stop;       /* or an external stop, may be NULL */
    int allow_refused;      /* connection refused/reset without a byte: counted, not failed */
    int allow_shutdown_503; /* 503 shutting_down counts as answered */
    /* results, per endpoint */
    atomic_long sent[2], ok[2], s503[2], failed[2], refused[2];
    lat lat[2];
    lat lat503;
    pthread_mutex_t mu;
    char first_failure[200];
} load;

typedef struct client_arg {
    load *L;
    int id;
} client_arg;

static void load_fail(load *L, int ep, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void load_fail(load *L, int ep, const char *fmt, ...) {
    atomic_fetch_add(&L->failed[ep], 1);
    pthread_mutex_lock(&L->mu);
    if (!L->first_failure[0]) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(L->first_failure, sizeof L->first_failure, fmt, ap);
        va_end(ap);
    }
    pthread_mutex_unlock(&L->mu);
}

static int load_done(load *L) {
    return now_s() >= L->until || (L->stop && atomic_load(L->stop));
}

static char *fixed_body(rng *g, int n) {
    json_t *in = json_array();
    for (int i = 0; i < n; i++) json_array_append_new(in, json_string(TEXTS[rnd(g) % N_TEXTS]));
    json_t *req = json_pack("{s:s, s:o}", "model", "gpt2", "input", in);
    char *text = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    return text;
}

static void *client_main(void *p) {
    client_arg *a = p;
    load *L = a->L;
    rng g = {0x9E3779B97F4A7C15ull * (uint64_t)(a->id + 1)};
    int ep = L->endpoints == 2 ? a->id % 2 : 0;
    const char *path = ep ? "/v1/similarity" : "/v1/embeddings";
    int fd = -1;
    while (!load_done(L)) {
        int items = L->fixed_inputs;
        char *body = L->fixed_inputs ? fixed_body(&g, L->fixed_inputs) : make_body(&g, ep, &items);
        if (fd < 0) fd = tcp_connect(L->port, 30);
        if (fd < 0) {
            free(body);
            if (L->allow_refused) {
                atomic_fetch_add(&L->refused[ep], 1);
                sleep_ms(5);
                continue;
            }
            load_fail(L, ep, "connect: %s", strerror(errno));
            sleep_ms(50);
            continue;
        }
        double t0 = now_s();
        int rc = send_request(fd, "POST", path, body, strlen(body), NULL, L->keep_alive);
        free(body);
        resp r;
        int got = rc == 0 ? read_response(fd, &r) : READ_NOTHING;
        double dt = now_s() - t0;
        if (rc == 0) atomic_fetch_add(&L->sent[ep], 1);
        if (got == READ_OK) {
            if (r.status == 200 && body_ok(&r, items)) {
                atomic_fetch_add(&L->ok[ep], 1);
                lat_add(&L->lat[ep], dt);
            } else if (r.status == 503 && r.retry_after &&
                       (strstr(r.body ? r.body : "", "queue_full") ||
                        (L->allow_shutdown_503 && strstr(r.body ? r.body : "", "shutting_down")))) {
                atomic_fetch_add(&L->s503[ep], 1);
                lat_add(&L->lat503, dt);
            } else {
                load_fail(L, ep, "status %d: %.120s", r.status, r.body ? r.body : "");
            }
            if (r.close || !L->keep_alive) {
                close(fd);
                fd = -1;
            }
            free(r.body);
        } else {
            close(fd);
            fd = -1;
            if (got == READ_NOTHING && L->allow_refused) {
                if (rc == 0) atomic_fetch_sub(&L->sent[ep], 1); /* never taken */
                atomic_fetch_add(&L->refused[ep], 1);
            } else {
                load_fail(L, ep, "%s after %.2f s", got == READ_NOTHING ? "no answer" :
                          "a partial answer", dt);
            }
        }
    }
    if (fd >= 0) close(fd);
    return NULL;
}

static void load_init(load *L, int port, int clients, double seconds) {
    memset(L, 0, sizeof *L);
    L->port = port;
    L->clients = clients;
    L->keep_alive = 1;
    L->endpoints = 1;
    L->until = now_s() + seconds;
    for (int e = 0; e < 2; e++) lat_init(&L->lat[e], 4000000);
    lat_init(&L->lat503, 4000000);
    pthread_mutex_init(&L->mu, NULL);
}

static void load_run(load *L) {
    pthread_t *th = calloc((size_t)L->clients, sizeof *th);
    client_arg *args = calloc((size_t)L->clients, sizeof *args);
    if (!th || !args) die("out of memory");
    for (int i = 0; i < L->clients; i++) {
        args[i] = (client_arg){L, i};
        if (pthread_create(&th[i], NULL, client_main, &args[i])) die("pthread_create");
    }
    for (int i = 0; i < L->clients; i++) pthread_join(th[i], NULL);
    free(th);
    free(args);
}

static void *load_thread(void *p) {
    load_run(p);
    return NULL;
}

static void load_free(load *L) {
    for (int e = 0; e < 2; e++) lat_free(&L->lat[e]);
    lat_free(&L->lat503);
    pthread_mutex_destroy(&L->mu);
}

/* Copies endpoint ep's counts into a row (ep -1: both). */
static void load_row(load *L, int ep, row *r) {
    for (int e = 0; e < 2; e++) {
        if (ep >= 0 && e != ep) continue;
        r->sent += atomic_load(&L->sent[e]);
        r->ok += atomic_load(&L->ok[e]);
        r->s503 += atomic_load(&L->s503[e]);
        r->failed += atomic_load(&L->failed[e]);
    }
    if (ep >= 0) {
        r->p50_ms = lat_pct(&L->lat[ep], 50);
        r->p99_ms = lat_pct(&L->lat[ep], 99);
    }
    if (r->failed) note(r, "first failure: %s", L->first_failure);
}

/* ======================= scenarios ======================= */

static void scenario_sustained(void) {
    fprintf(stderr, "stress: sustained load, %d connections for %.0f s ...\n",
            S.sustained_clients, S.sustained_s);
    server sv;
    const char *args[] = {"--workers", "2", NULL};
    server_start(&sv, S.binary, "sustained", args);
    /* warm-up: the first requests grow the heap and the workspaces to their
     * working size; memory is compared from the end of it */
    load W;
    load_init(&W, sv.port, S.sustained_clients, 2.0);
    W.endpoints = 2;
    load_run(&W);
    load_free(&W);

    rss_sampler *rs = calloc(1, sizeof *rs);
    sampler_start(rs, sv.pid);
    load L;
    load_init(&L, sv.port, S.sustained_clients, S.sustained_s);
    L.endpoints = 2;
    double t0 = now_s();
    load_run(&L);
    double secs = now_s() - t0;
    double first, last;
    sampler_stop(rs, &first, &last);
    free(rs);

    const char *names[2] = {"sustained /v1/embeddings", "sustained /v1/similarity"};
    row *rows[2];
    for (int e = 0; e < 2; e++) {
        row *r = rows[e] = add_row(names[e]);
        load_row(&L, e, r);
        r->rss0_mib = first;
        r->rss1_mib = last;
        check(r, r->failed == 0, "%ld failed", r->failed);
        check(r, r->ok > 0, "nothing answered");
        note(r, "%.0f req/s", (double)r->ok / secs);
    }
    /* flat: the last 10% within 10% (+ 4 MiB of allocator slack) of the first */
    int flat = last <= first * 1.10 + 4.0;
    check(rows[0], flat, "memory grew from %.1f to %.1f MiB", first, last);
    if (flat) note(rows[0], "memory flat (first/last 10%% of %.0f s)", secs);
    int st = server_stop(&sv, SIGTERM, 60);
    check(rows[1], st == 0, "exit status %d after SIGTERM", st);
    load_free(&L);
}

static void scenario_overload(void) {
    fprintf(stderr, "stress: overload, %d clients on a 16-sequence queue for %.0f s ...\n",
            S.overload_clients, S.overload_s);
    server sv;
    /* one worker, a queue of 16 sequences whose batches wait 20 ms for
     * company: far fewer places than clients */
    const char *args[] = {"--workers", "1", "--max-queue", "16", "--max-inputs", "8",
                          "--max-batch-wait-us", "20000", "--batch-idle-wait", NULL};
    server_start(&sv, S.binary, "overload", args);
    double rss0 = rss_mib(sv.pid);
    load L;
    load_init(&L, sv.port, S.overload_clients, S.overload_s);
    L.fixed_inputs = 8;
    load_run(&L);
    /* recovery: the next request, right after the load, is served */
    double t0 = now_s();
    char body[] = "{\"model\": \"gpt2\", \"input\": [\"after\", \"the\", \"storm\"]}";
    resp r;
    int st = http_exchange(sv.port, "POST", "/v1/embeddings", body, strlen(body), NULL, &r, 30);
    double recover_ms = (now_s() - t0) * 1e3;
    int recovered = st == 200 && body_ok(&r, 3);
    if (st >= 0) free(r.body);

    row *w = add_row("overload (queue 16)");
    load_row(&L, 0, w);
    double p99_503 = lat_pct(&L.lat503, 99);
    w->p50_ms = lat_pct(&L.lat503, 50);
    w->p99_ms = p99_503;
    w->rss0_mib = rss0;
    w->rss1_mib = rss_mib(sv.pid);
    note(w, "p50/p99 of the 503s; 200s: p50 %.1f ms", lat_pct(&L.lat[0], 50));
    check(w, w->failed == 0, "%ld failed (a hang or an undocumented answer)", w->failed);
    check(w, w->s503 > 0, "no 503: the queue never filled");
    check(w, w->ok > 0, "nothing served");
    check(w, p99_503 >= 0 && p99_503 < 250, "503 p99 %.1f ms, not fast", p99_503);
    check(w, recovered && recover_ms < 1000, "the request after the load: status %d in %.0f ms",
          st, recover_ms);
    note(w, "next request after the load: 200 in %.1f ms", recover_ms);
    int ex = server_stop(&sv, SIGTERM, 60);
    check(w, ex == 0, "exit status %d after SIGTERM", ex);
    load_free(&L);
}

/* The slow client: headers announcing 100 bytes, then one byte a second;
 * how long until the server closed the connection. */
typedef struct slow_arg {
    int port;
    double closed_after; /* -1: still open at the end */
    int bytes;
} slow_arg;

static int closed_by_peer(int fd) {
    char c;
    ssize_t n = recv(fd, &c, 1, MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

static void *slow_main(void *p) {
    slow_arg *a = p;
    a->closed_after = -1;
    int fd = tcp_connect(a->port, 5);
    if (fd < 0) return NULL;
    const char *head = "POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                       "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n";
    double t0 = now_s();
    if (send_all(fd, head, strlen(head)) == 0) {
        for (int i = 0; i < 30; i++) {
            sleep_ms(1000);
            if (closed_by_peer(fd) || send(fd, " ", 1, MSG_NOSIGNAL) != 1) {
                a->closed_after = now_s() - t0;
                break;
            }
            a->bytes++;
        }
    }
    close(fd);
    return NULL;
}

static void scenario_idle_slow(void) {
    fprintf(stderr, "stress: %d idle connections and a slow body beside normal clients ...\n",
            S.idle_conns);
    server sv;
    const char *args[] = {"--idle-timeout-s", "4", "--request-timeout-ms", "6000", NULL};
    server_start(&sv, S.binary, "idle-slow", args);
    double rss0 = rss_mib(sv.pid);
    int *idle = malloc(sizeof *idle * (size_t)S.idle_conns);
    double *closed_at = malloc(sizeof *closed_at * (size_t)S.idle_conns);
    if (!idle || !closed_at) die("out of memory");
    int opened = 0;
    double t0 = now_s();
    for (int i = 0; i < S.idle_conns; i++) {
        idle[i] = tcp_connect(sv.port, 5);
        closed_at[i] = -1;
        opened += idle[i] >= 0;
    }
    slow_arg sa = {.port = sv.port};
    pthread_t slow_th;
    pthread_create(&slow_th, NULL, slow_main, &sa);
    /* normal clients while the idle ones and the slow one hold their
     * connections (fewer than the idle timeout, so all overlap) */
    load L;
    load_init(&L, sv.port, 8, 3.5);
    load_run(&L);
    /* then the server closes the idle connections by itself */
    int closed = 0;
    for (double end = t0 + 12; now_s() < end && closed < opened; sleep_ms(100)) {
        for (int i = 0; i < S.idle_conns; i++) {
            if (idle[i] < 0 || closed_at[i] >= 0) continue;
            if (closed_by_peer(idle[i])) {
                closed_at[i] = now_s() - t0;
                closed++;
            }
        }
    }
    double last_close = 0;
    for (int i = 0; i < S.idle_conns; i++) {
        if (closed_at[i] > last_close) last_close = closed_at[i];
        if (idle[i] >= 0) close(idle[i]);
    }
    pthread_join(slow_th, NULL);
    double rss1 = rss_mib(sv.pid);

    row *n = add_row("idle+slow: normal clients");
    load_row(&L, 0, n);
    n->rss0_mib = rss0;
    n->rss1_mib = rss1;
    check(n, n->failed == 0, "%ld failed", n->failed);
    check(n, n->p99_ms >= 0 && n->p99_ms < 1000, "p99 %.0f ms beside idle clients", n->p99_ms);
    row *i = add_row("idle+slow: idle connections");
    i->sent = opened;
    i->ok = closed;
    note(i, "answered = closed by the server (idle timeout 4 s), the last after %.1f s",
         last_close);
    check(i, opened == S.idle_conns, "only %d of %d connections opened", opened, S.idle_conns);
    check(i, closed == opened, "%d of %d still open after 12 s", opened - closed, opened);
    row *s = add_row("idle+slow: 1 byte/s body");
    s->sent = 1;
    s->ok = sa.closed_after > 0;
    note(s, "closed by the server after %.1f s, %d of 100 bytes sent (request timeout 6 s)",
         sa.closed_after, sa.bytes);
    check(s, sa.closed_after >= 5 && sa.closed_after < 10, "closed after %.1f s",
          sa.closed_after);
    int ex = server_stop(&sv, SIGTERM, 60);
    check(s, ex == 0, "exit status %d after SIGTERM", ex);
    free(idle);
    free(closed_at);
    load_free(&L);
}

/* ---- hostile bodies ---- */

typedef struct hostile {
    const char *name;
    const char *path; /* NULL: /v1/embeddings */
    char *body;       /* malloc'd */
    size_t len;
    const char *headers;  /* extra headers (the Content-Length is ours unless raw) */
    int raw;          /* body is the whole request, sent as is */
    int want;         /* expected status; 0: the connection is closed */
    const char *code; /* expected error code, or NULL */
} hostile;

static char *dup_str(const char *s, size_t *len) {
    *len = strlen(s);
    return strdup(s);
}

static char *repeat_body(const char *pre, const char *unit, long times, const char *post,
                         size_t *len) {
    size_t pl = strlen(pre), ul = strlen(unit), ql = strlen(post);
    size_t n = pl + ul * (size_t)times + ql;
    char *b = malloc(n + 1);
    if (!b) die("out of memory");
    memcpy(b, pre, pl);
    for (long i = 0; i < times; i++) memcpy(b + pl + ul * (size_t)i, unit, ul);
    memcpy(b + pl + ul * (size_t)times, post, ql);
    b[n] = 0;
    *len = n;
    return b;
}

static int hostile_cases(hostile *c) {
    int n = 0;
#define CASE(nm, b, st, cd) c[n] = (hostile){.name = nm, .want = st, .code = cd}; \
    c[n].body = dup_str(b, &c[n].len); n++
    /* announced oversize: answered from the headers, the body never sent */
    c[n] = (hostile){.name = "Content-Length 1 GB, no body sent", .raw = 1, .want = 413,
                     .code = "body_too_large"};
    c[n].body = dup_str("POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                        "Content-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n",
                        &c[n].len);
    n++;
    /* chunked oversize: no length to refuse up front, the connection is cut */
    {
        /* 9 MiB in 8 KiB chunks, past the default 8 MiB limit */
        enum { CHUNKS = 1152 };
        char *big = malloc((size_t)CHUNKS * 8200 + 512);
        if (!big) die("out of memory");
        size_t o = (size_t)sprintf(big, "POST /v1/embeddings HTTP/1.1\r\nHost: x\r\n"
                                        "Connection: close\r\nTransfer-Encoding: chunked\r\n\r\n");
        for (int k = 0; k < CHUNKS; k++) {
            o += (size_t)sprintf(big + o, "2000\r\n");
            memset(big + o, ' ', 8192);
            o += 8192;
            o += (size_t)sprintf(big + o, "\r\n");
        }
        c[n] = (hostile){.name = "chunked 9 MiB (no Content-Length)", .body = big, .len = o,
                         .raw = 1, .want = 0};
        n++;
    }
    c[n] = (hostile){.name = "nested arrays, depth 100000", .want = 400, .code = "invalid_json"};
    {
        size_t l1;
        char *open = repeat_body("{\"model\": \"gpt2\", \"input\": ", "[", 100000, "", &l1);
        size_t l2;
        char *close_ = repeat_body("", "]", 100000, "}", &l2);
        c[n].body = malloc(l1 + l2 + 1);
        memcpy(c[n].body, open, l1);
        memcpy(c[n].body + l1, close_, l2 + 1);
        c[n].len = l1 + l2;
        free(open);
        free(close_);
    }
    n++;
    c[n] = (hostile){.name = "nested objects, depth 50000", .want = 400, .code = "invalid_json"};
    {
        size_t l1, l2;
        char *open = repeat_body("{\"model\": \"gpt2\", \"input\": \"x\", \"a\": ", "{\"a\": ",
                                 50000, "", &l1);
        char *close_ = repeat_body("1", "}", 50001, "", &l2);
        c[n].body = malloc(l1 + l2 + 1);
        memcpy(c[n].body, open, l1);
        memcpy(c[n].body + l1, close_, l2 + 1);
        c[n].len = l1 + l2;
        free(open);
        free(close_);
    }
    n++;
    c[n] = (hostile){.name = "array of 200000 inputs", .want = 413, .code = "too_many_inputs"};
    c[n].body = repeat_body("{\"model\": \"gpt2\", \"input\": [\"a\"", ",\"a\"", 199999, "]}",
                            &c[n].len);
    n++;
    c[n] = (hostile){.name = "array of 200000 numbers", .want = 413, .code = "too_many_inputs"};
    c[n].body = repeat_body("{\"model\": \"gpt2\", \"input\": [1", ",1", 199999, "]}", &c[n].len);
    n++;
    c[n] = (hostile){.name = "1 MiB string, truncate off", .want = 422, .code = "input_too_long"};
    c[n].body = repeat_body("{\"model\": \"gpt2\", \"truncate\": false, \"input\": \"", "word ",
                            209715, "\"}", &c[n].len);
    n++;
    c[n] = (hostile){.name = "1 MiB string (truncated: 200)", .want = 200};
    c[n].body = repeat_body("{\"model\": \"clip\", \"input\": \"", "word ", 209715, "\"}",
                            &c[n].len);
    n++;
    c[n] = (hostile){.name = "9 MiB string (over the body limit)", .want = 413,
                     .code = "body_too_large"};
    c[n].body = repeat_body("{\"model\": \"gpt2\", \"input\": \"", "aaaaaaaaaa", 943718, "\"}",
                            &c[n].len);
    n++;
    CASE("invalid UTF-8", "{\"model\": \"gpt2\", \"input\": \"caf\xc3\x28 \xff\xfe\"}", 400,
         "invalid_utf8");
    CASE("overlong UTF-8 (C0 AF)", "{\"model\": \"gpt2\", \"input\": \"a\xc0\xaf\"}", 400,
         "invalid_utf8");
    CASE("UTF-8 surrogate (ED A0 80)", "{\"model\": \"gpt2\", \"input\": \"a\xed\xa0\x80\"}", 400,
         "invalid_utf8");
    c[n] = (hostile){.name = "raw NUL byte in a string", .want = 400, .code = "invalid_json"};
    {
        static const char nul[] = "{\"model\": \"gpt2\", \"input\": \"a\0b\"}";
        c[n].body = malloc(sizeof nul);
        memcpy(c[n].body, nul, sizeof nul);
        c[n].len = sizeof nul - 1;
    }
    n++;
    CASE("\\u0000 in the model name", "{\"model\": \"gpt2\\u0000\", \"input\": \"a\"}", 404,
         "model_not_found");
    CASE("\\u0000 in a text (allowed)", "{\"model\": \"gpt2\", \"input\": \"a\\u0000b\"}", 200,
         NULL);
    CASE("number for the model", "{\"model\": 2, \"input\": \"a\"}", 400, "invalid_type");
    CASE("numbers for the inputs", "{\"model\": \"gpt2\", \"input\": [1, 2]}", 400,
         "invalid_type");
    CASE("object for the input", "{\"model\": \"gpt2\", \"input\": {\"a\": 1}}", 400,
         "invalid_type");
    CASE("string for a pair", "{\"model\": \"gpt2\", \"pairs\": [\"a\"]}", 400, "invalid_type");
    c[n - 1].path = "/v1/similarity";
    CASE("number in a pair", "{\"model\": \"gpt2\", \"pairs\": [[\"a\", 1]]}", 400,
         "invalid_type");
    c[n - 1].path = "/v1/similarity";
    CASE("duplicate key", "{\"model\": \"gpt2\", \"input\": \"a\", \"model\": \"clip\"}", 400,
         "duplicate_key");
    CASE("NaN", "{\"model\": \"gpt2\", \"input\": \"a\", \"x\": NaN}", 400, "invalid_json");
    CASE("Infinity", "{\"model\": \"gpt2\", \"input\": \"a\", \"x\": Infinity}", 400,
         "invalid_json");
    CASE("-Infinity", "{\"model\": \"gpt2\", \"input\": \"a\", \"x\": -Infinity}", 400,
         "invalid_json");
    CASE("1e999", "{\"model\": \"gpt2\", \"input\": \"a\", \"x\": 1e999}", 400, "invalid_json");
    CASE("layers 1e300", "{\"model\": \"gpt2\", \"input\": \"a\", \"layers\": [1e300]}", 400,
         "invalid_type");
    CASE("layers 2^63", "{\"model\": \"gpt2\", \"input\": \"a\", \"layers\": [9223372036854775808]}",
         400, "invalid_json");
    CASE("empty body", "", 400, "invalid_json");
    CASE("truncated JSON", "{\"model\": \"gpt2\", \"inp", 400, "invalid_json");
    CASE("top-level array", "[\"gpt2\", \"a\"]", 400, "invalid_type");
    CASE("top-level null", "null", 400, "invalid_json");
    CASE("trailing garbage", "{\"model\": \"gpt2\", \"input\": \"a\"} x", 400, "invalid_json");
    CASE("BOM before the JSON", "\xef\xbb\xbf{\"model\": \"gpt2\", \"input\": \"a\"}", 400,
         "invalid_json");
#undef CASE
    return n;
}

/* Sends one case on a new connection; the status, 0 when the connection
 * was closed without an answer, -1 on a timeout (a hang). */
static int hostile_send(int port, hostile *h, char *code, size_t cap, double *secs) {
    code[0] = 0;
    *secs = 0;
    int fd = tcp_connect(port, 20);
    if (fd < 0) return -1;
    double t0 = now_s();
    int rc = h->raw ? send_all(fd, h->body, h->len)
                    : send_request(fd, "POST", h->path ? h->path : "/v1/embeddings", h->body,
                                   h->len, h->headers, 0);
    /* a server that answers before reading everything may reset the rest:
     * the answer is read either way */
    (void)rc;
    resp r;
    int got = read_response(fd, &r);
    *secs = now_s() - t0;
    close(fd);
    if (got != READ_OK) return r.timed_out ? -1 : 0;
    json_error_t je;
    json_t *j = r.body ? json_loadb(r.body, r.len, 0, &je) : NULL;
    const char *c = json_string_value(json_object_get(json_object_get(j, "error"), "code"));
    snprintf(code, cap, "%s", c ? c : "");
    json_decref(j);
    free(r.body);
    return r.status;
}

/* rounds > 4 also checks that memory stops growing: the first rounds grow
 * the heap to the largest bodies (9 MiB) in the allocator arena of each
 * HTTP thread that happens to read one (measured: flat from the third or
 * fourth round on); from round 5 to the end it must not grow.  On the ASan
 * build, LeakSanitizer checks for leaks at the exit. */
static void scenario_hostile(const char *binary, const char *tag, const char *name, int rounds) {
    fprintf(stderr, "stress: hostile bodies (%s) ...\n", tag);
    server sv;
    if (strstr(tag, "asan")) setenv("ASAN_OPTIONS", "detect_leaks=1:halt_on_error=1", 1);
    server_start(&sv, binary, tag, NULL);
    unsetenv("ASAN_OPTIONS");
    double rss0 = rss_mib(sv.pid);
    hostile c[64];
    int n = hostile_cases(c);
    row *r = add_row(name);
    lat L;
    lat_init(&L, 4000);
    double rss_settled = -1;
    for (int round = 0; round < rounds; round++) {
        if (round == 4) rss_settled = rss_mib(sv.pid);
        for (int i = 0; i < n; i++) {
            char code[64];
            double secs;
            int st = hostile_send(sv.port, &c[i], code, sizeof code, &secs);
            r->sent++;
            lat_add(&L, secs);
            int ok = st == c[i].want && (!c[i].code || !strcmp(code, c[i].code));
            if (ok) r->ok++;
            else {
                r->failed++;
                check(r, 0, "%s: got %d %s, want %d %s", c[i].name, st, code, c[i].want,
                      c[i].code ? c[i].code : "");
            }
            if (round == 0)
                fprintf(stderr, "stress:   %-36s -> %d %s (%.1f ms)\n", c[i].name, st, code,
                        secs * 1e3);
        }
    }
    r->p50_ms = lat_pct(&L, 50);
    r->p99_ms = lat_pct(&L, 99);
    r->rss0_mib = rss0;
    r->rss1_mib = rss_mib(sv.pid);
    note(r, "%d kinds x %d; 'answered' = the documented status and code", n, rounds);
    if (rss_settled > 0) {
        check(r, r->rss1_mib <= rss_settled * 1.10 + 4.0, "memory grew after round 4: "
              "%.1f -> %.1f MiB", rss_settled, r->rss1_mib);
        note(r, "after round 4: %.1f MiB", rss_settled);
    }
    int healthy = http_status(sv.port, "GET", "/healthz", NULL, NULL) == 200;
    check(r, healthy, "not healthy afterwards");
    int ex = server_stop(&sv, SIGTERM, 120);
    check(r, ex == 0, "exit status %d after SIGTERM", ex);
    int clean = !log_has(&sv, "ERROR: AddressSanitizer") && !log_has(&sv, "ERROR: LeakSanitizer") &&
                !log_has(&sv, "runtime error");
    check(r, clean, "sanitizer report in %s", sv.log);
    for (int i = 0; i < n; i++) free(c[i].body);
    lat_free(&L);
}

/* ---- SIGTERM under load ---- */

/* Request lines of /v1/embeddings in a JSON log, and how many of them did
 * not end with an answer sent whole. */
static void count_logged(const server *sv, long *logged, long *unanswered) {
    *logged = *unanswered = 0;
    char *t = read_file(sv->log, NULL);
    for (char *p = t; p && *p;) {
        char *e = strchr(p, '\n');
        if (!e) break;
        *e = 0;
        json_error_t je;
        json_t *j = json_loads(p, 0, &je);
        const char *msg = json_string_value(json_object_get(j, "msg"));
        const char *path = json_string_value(json_object_get(j, "path"));
        if (msg && path && !strcmp(msg, "request") && !strcmp(path, "/v1/embeddings")) {
            (*logged)++;
            if (json_object_get(j, "error")) (*unanswered)++;
        }
        json_decref(j);
        p = e + 1;
    }
    free(t);
}

static void scenario_sigterm(void) {
    fprintf(stderr, "stress: SIGTERM under load ...\n");
    server sv;
    const char *args[] = {"--log-format", "json", "--max-batch-wait-us", "50000", NULL};
    server_start(&sv, S.binary, "sigterm", args);
    double rss0 = rss_mib(sv.pid);
    atomic_int stop = 0;
    load L;
    load_init(&L, sv.port, 32, 60);
    L.stop = &stop;
    L.keep_alive = 0;  /* one request per connection: taken or refused, nothing between */
    L.allow_refused = 1;
    L.allow_shutdown_503 = 1;
    pthread_t th;
    /* the load runs on its own thread while this one sends the signal */
    pthread_create(&th, NULL, load_thread, &L);
    sleep_ms(1500);
    double t_sig = now_s();
    double rss1 = rss_mib(sv.pid);
    kill(sv.pid, SIGTERM);
    int st = -1, status;
    for (double end = now_s() + 60; now_s() < end; sleep_ms(5)) {
        if (waitpid(sv.pid, &status, WNOHANG) == sv.pid) {
            st = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
            sv.pid = 0;
            break;
        }
    }
    double exit_s = now_s() - t_sig;
    if (sv.pid > 0) {
        kill(sv.pid, SIGKILL);
        waitpid(sv.pid, NULL, 0);
    }
    atomic_store(&stop, 1);
    pthread_join(th, NULL);
    long logged, unanswered;
    count_logged(&sv, &logged, &unanswered);

    row *r = add_row("SIGTERM under load");
    load_row(&L, 0, r);
    r->rss0_mib = rss0;
    r->rss1_mib = rss1;
    long answered = r->ok + r->s503;
    note(r, "exit %d %.2f s after the signal; %ld refused after it (not taken); the log has "
         "%ld requests", st, exit_s, atomic_load(&L.refused[0]), logged);
    check(r, st == 0, "exit status %d", st);
    check(r, r->failed == 0, "%ld taken and not answered", r->failed);
    check(r, unanswered == 0, "%ld logged requests ended without their answer", unanswered);
    check(r, logged == answered, "the server took %ld requests, the clients got %ld answers",
          logged, answered);
    load_free(&L);
}

/* ---- clients that hang up ---- */

typedef struct quitter_arg {
    int port, k, n;
    atomic_long *sent;
} quitter_arg;

/* Sends a request and hangs up 0-300 ms later: while it is queued (batches
 * wait 200 ms) or running. */
static void *quitter_main(void *p) {
    quitter_arg *a = p;
    rng g = {(uint64_t)a->k * 7919u + 1};
    for (int i = 0; i < a->n; i++) {
        int fd = tcp_connect(a->port, 10);
        if (fd < 0) continue;
        char *body = fixed_body(&g, 1 + (int)(rnd(&g) % 4));
        if (send_request(fd, "POST", "/v1/embeddings", body, strlen(body), NULL, 1) == 0)
            atomic_fetch_add(a->sent, 1);
        free(body);
        sleep_ms((int)(rnd(&g) % 300));
        close(fd);
    }
    return NULL;
}

static void scenario_disconnect(const char *binary, const char *tag, const char *name) {
    fprintf(stderr, "stress: clients hanging up (%s) ...\n", tag);
    server sv;
    /* batches wait 200 ms for company even on an idle server, so that
     * work is still queued when its client hangs up */
    const char *args[] = {"--workers", "2", "--max-batch-wait-us", "200000", "--batch-idle-wait",
                          NULL};
    if (strstr(tag, "asan")) setenv("ASAN_OPTIONS", "detect_leaks=1:halt_on_error=1", 1);
    server_start(&sv, binary, tag, args);
    unsetenv("ASAN_OPTIONS");
    double rss0 = rss_mib(sv.pid);
    enum { QUITTERS = 16 };
    atomic_long sent = 0;
    quitter_arg qa[QUITTERS];
    pthread_t qt[QUITTERS];
    int per = S.disconnects / QUITTERS;
    for (int i = 0; i < QUITTERS; i++) {
        qa[i] = (quitter_arg){sv.port, i, per, &sent};
        pthread_create(&qt[i], NULL, quitter_main, &qa[i]);
    }
    /* normal clients beside them are all served */
    load L;
    load_init(&L, sv.port, 4, 3.0);
    load_run(&L);
    for (int i = 0; i < QUITTERS; i++) pthread_join(qt[i], NULL);
    sleep_ms(800); /* the last batches come due */
    double gone = metric(sv.port, "layerlens_requests_total{endpoint=\"/v1/embeddings\",status=\"499\"}");
    double dropped = metric(sv.port, "layerlens_dropped_sequences_total{model=\"gpt2\"}");
    double depth = metric(sv.port, "layerlens_queue_depth");
    double other = metric(sv.port, "layerlens_requests_total{endpoint=\"/v1/embeddings\",status=\"other\"}");
    double rss1 = rss_mib(sv.pid);
    int healthy = http_status(sv.port, "GET", "/healthz", NULL, NULL) == 200;
    int ex = server_stop(&sv, SIGTERM, 120);
    int asan_clean = !log_has(&sv, "ERROR: AddressSanitizer") &&
                     !log_has(&sv, "ERROR: LeakSanitizer") && !log_has(&sv, "runtime error");

    row *r = add_row(name);
    load_row(&L, 0, r);
    r->sent += atomic_load(&sent);
    r->rss0_mib = rss0;
    r->rss1_mib = rss1;
    note(r, "%ld hung up: %.0f noticed while waiting (499), %.0f sequences dropped unrun; "
         "p50/p99 of the 4 clients beside them", (long)atomic_load(&sent), gone, dropped);
    check(r, r->failed == 0, "%ld of the normal requests failed", r->failed);
    check(r, gone > 0 && dropped > 0, "no work dropped (499: %.0f, dropped: %.0f)", gone, dropped);
    check(r, depth == 0, "queue depth %.0f at the end", depth);
    check(r, other <= 0, "%.0f requests counted without a status", other);
    check(r, healthy, "not healthy afterwards");
    check(r, ex == 0, "exit status %d after SIGTERM", ex);
    check(r, asan_clean, "sanitizer report in %s", sv.log);
    load_free(&L);
}

/* ---- weights that cannot be loaded ---- */

static void link_into(const char *dir, const char *model, const char *file) {
    char src[4400], dst[4400];
    snprintf(src, sizeof src, "%s/%s", fixture(model), file);
    char real[4400];
    if (!realpath(src, real)) die("%s: %s", src, strerror(errno));
    snprintf(dst, sizeof dst, "%s/%s", dir, file);
    if (symlink(real, dst)) die("symlink %s: %s", dst, strerror(errno));
}

static void scenario_weights(void) {
    fprintf(stderr, "stress: weights that cannot be loaded ...\n");
    const char *kinds[3] = {"missing", "truncated", "garbage"};
    for (int k = 0; k < 3; k++) {
        char dir[512];
        snprintf(dir, sizeof dir, "%s/weights-%s", S.tmp, kinds[k]);
        mkdir(dir, 0755);
        link_into(dir, "gpt2-tiny", "config.json");
        link_into(dir, "gpt2-tiny", "vocab.json");
        link_into(dir, "gpt2-tiny", "merges.txt");
        char st_path[600];
        snprintf(st_path, sizeof st_path, "%s/model.safetensors", dir);
        if (k == 1) { /* the first 64 KiB of the real file */
            char src[4400];
            snprintf(src, sizeof src, "%s/model.safetensors", fixture("gpt2-tiny"));
            size_t len;
            char *all = read_file(src, &len);
            FILE *f = fopen(st_path, "wb");
            if (!all || !f) die("cannot copy %s", src);
            fwrite(all, 1, len < 65536 ? len / 2 : 65536, f);
            fclose(f);
            free(all);
        } else if (k == 2) { /* a header length far past the file */
            FILE *f = fopen(st_path, "wb");
            if (!f) die("cannot write %s", st_path);
            unsigned char hdr[8] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x00};
            fwrite(hdr, 1, 8, f);
            fputs("{\"not\": \"a safetensors header\"", f);
            fclose(f);
        }
        char name[64];
        snprintf(name, sizeof name, "weights %s", kinds[k]);
        row *r = add_row(name);
        server sv;
        const char *args[] = {"--gpt2", dir, NULL};
        double t0 = now_s();
        server_spawn(&sv, S.binary, name + 8, args, 0);
        int st = -1, status;
        for (double end = now_s() + 30; now_s() < end; sleep_ms(10)) {
            if (waitpid(sv.pid, &status, WNOHANG) == sv.pid) {
                st = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
                sv.pid = 0;
                break;
            }
        }
        if (sv.pid > 0) server_stop(&sv, SIGKILL, 5);
        double secs = now_s() - t0;
        char *log = read_file(sv.log, NULL);
        char *msg = log ? strstr(log, "error: ") : NULL;
        char first[120] = "";
        if (msg) snprintf(first, sizeof first, "%.*s", (int)strcspn(msg + 7, "\n"), msg + 7);
        r->sent = 1;
        r->ok = st > 0 && st < 128;
        note(r, "exit %d in %.2f s: %s", st, secs, first);
        check(r, st > 0 && st < 128, "exit status %d (want an error exit, no crash)", st);
        check(r, msg && strstr(msg, "model.safetensors"), "the message does not name the file");
        free(log);
    }
}

/* ---- results directory gone unwritable ---- */

static void scenario_results(void) {
    fprintf(stderr, "stress: results directory unwritable ...\n");
    char dir[512], moved[600];
    snprintf(dir, sizeof dir, "%s/results", S.tmp);
    snprintf(moved, sizeof moved, "%s/results.moved", S.tmp);
    server sv;
    const char *args[] = {"--results-dir", dir, NULL};
    server_start(&sv, S.binary, "results", args);
    double rss0 = rss_mib(sv.pid);
    /* the directory goes away and a file takes its name: every write into
     * it fails (ENOTDIR), even for root */
    if (rename(dir, moved)) die("rename %s: %s", dir, strerror(errno));
    FILE *f = fopen(dir, "w");
    if (!f) die("cannot create %s", dir);
    fclose(f);
    row *r = add_row("results dir unwritable");
    const char *body = "{\"models\": [\"gpt2\"], \"items\": [\"a cat\", \"the dog\", \"my car\"], "
                       "\"bootstrap\": 0}";
    resp rr;
    int st = http_exchange(sv.port, "POST", "/v1/evaluate", body, strlen(body), NULL, &rr, 60);
    r->sent++;
    if (st == 200) r->ok++;
    else r->failed++;
    if (st >= 0) free(rr.body);
    check(r, st == 200, "POST /v1/evaluate: %d", st);
    /* a job: accepted, then done, and still readable */
    st = http_exchange(sv.port, "POST", "/v1/evaluations", body, strlen(body), NULL, &rr, 60);
    r->sent++;
    char id[64] = "";
    if (st == 202) {
        json_error_t je;
        json_t *j = json_loadb(rr.body, rr.len, 0, &je);
        const char *v = json_string_value(json_object_get(j, "id"));
        snprintf(id, sizeof id, "%s", v ? v : "");
        json_decref(j);
    }
    if (st >= 0) free(rr.body);
    char status[32] = "";
    for (double end = now_s() + 60; id[0] && now_s() < end; sleep_ms(50)) {
        char path[128];
        snprintf(path, sizeof path, "/v1/evaluations/%s", id);
        int gs = http_exchange(sv.port, "GET", path, NULL, 0, NULL, &rr, 10);
        if (gs == 200) {
            json_error_t je;
            json_t *j = json_loadb(rr.body, rr.len, 0, &je);
            const char *v = json_string_value(json_object_get(j, "status"));
            snprintf(status, sizeof status, "%s", v ? v : "");
            json_decref(j);
        }
        if (gs >= 0) free(rr.body);
        if (!strcmp(status, "done") || !strcmp(status, "failed")) break;
    }
    if (!strcmp(status, "done")) r->ok++;
    else r->failed++;
    check(r, !strcmp(status, "done"), "the job ended '%s'", status);
    sleep_ms(200);
    int warned = log_has(&sv, "cannot write");
    check(r, warned, "no warning in the log");
    if (warned) note(r, "both answered; the log warns 'cannot write ...'");
    r->rss0_mib = rss0;
    r->rss1_mib = rss_mib(sv.pid);
    int ex = server_stop(&sv, SIGTERM, 60);
    check(r, ex == 0, "exit status %d after SIGTERM", ex);
    unlink(dir);
    rename(moved, dir);
}

/* ======================= main ======================= */

static int find_shared(void) {
    const char *env = getenv("LAYERLENS_SHARED");
    snprintf(S.shared, sizeof S.shared, "%s", env && *env ? env : "../shared");
    char probe[4300];
    snprintf(probe, sizeof probe, "%s/fixtures/models/gpt2-tiny/model.safetensors", S.shared);
    struct stat st;
    return stat(probe, &st) == 0;
}

static int wanted(const char *name) {
    if (!S.only) return 1;
    size_t n = strlen(name);
    for (const char *p = S.only; *p;) {
        size_t k = strcspn(p, ",");
        if (k == n && strncmp(p, name, n) == 0) return 1;
        p += k + (p[k] == ',');
    }
    return 0;
}

static void remove_tree(const char *dir) {
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "stress: could not remove %s\n", dir);
}

int main(int argc, char **argv) {
    const char *q = getenv("STRESS_QUICK");
    S.quick = q && *q && strcmp(q, "0") != 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick")) S.quick = 1;
        else if (!strcmp(argv[i], "--binary") && i + 1 < argc) S.binary = argv[++i];
        else if (!strcmp(argv[i], "--asan-binary") && i + 1 < argc) S.asan_binary = argv[++i];
        else if (!strcmp(argv[i], "--only") && i + 1 < argc) S.only = argv[++i];
        else die("usage: stress --binary PATH [--asan-binary PATH] [--quick] [--only LIST]");
    }
    if (!S.binary) die("usage: stress --binary PATH [--asan-binary PATH] [--quick] [--only LIST]");
    if (!find_shared()) {
        const char *ci = getenv("CI");
        if (ci && !strcmp(ci, "true"))
            die("the fixtures are missing (%s/fixtures; set LAYERLENS_SHARED); required under "
                "CI=true", S.shared);
        printf("stress: skipped - the fixture checkpoints are missing (%s/fixtures; set "
               "LAYERLENS_SHARED)\n", S.shared);
        return 0;
    }
    signal(SIGPIPE, SIG_IGN);
    /* hundreds of sockets at once */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max < 8192 ? rl.rlim_max : 8192;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    snprintf(S.tmp, sizeof S.tmp, "%s/layerlens-stress-XXXXXX",
             getenv("TMPDIR") && *getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(S.tmp)) die("mkdtemp: %s", strerror(errno));
    S.sustained_s = S.quick ? 20 : 120;
    S.sustained_clients = S.quick ? 32 : 64;
    S.overload_s = S.quick ? 6 : 20;
    S.overload_clients = S.quick ? 48 : 96;
    S.idle_conns = 300;
    S.disconnects = S.quick ? 160 : 640;
    double t0 = now_s();
    fprintf(stderr, "stress: %s run, servers' logs in %s\n", S.quick ? "quick" : "full", S.tmp);

    if (wanted("sustained")) scenario_sustained();
    if (wanted("overload")) scenario_overload();
    if (wanted("idle")) scenario_idle_slow();
    if (wanted("hostile")) {
        scenario_hostile(S.binary, "hostile", "hostile bodies", S.quick ? 1 : 10);
        if (S.asan_binary)
            scenario_hostile(S.asan_binary, "hostile-asan", "hostile bodies (ASan)", 1);
    }
    if (wanted("sigterm")) scenario_sigterm();
    if (wanted("disconnect")) {
        scenario_disconnect(S.binary, "disconnect", "clients hanging up");
        if (S.asan_binary)
            scenario_disconnect(S.asan_binary, "disconnect-asan", "clients hanging up (ASan)");
    }
    if (wanted("weights")) scenario_weights();
    if (wanted("results")) scenario_results();

    print_table();
    int failed = 0;
    for (int i = 0; i < N_ROWS; i++) failed += !ROWS[i].pass;
    printf("stress: %s in %.0f s (%d scenario rows, %d failed)\n", failed ? "FAILED" : "passed",
           now_s() - t0, N_ROWS, failed);
    if (!failed) remove_tree(S.tmp);
    else printf("stress: the servers' logs are in %s\n", S.tmp);
    return failed ? 1 : 0;
}
