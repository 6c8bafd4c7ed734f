/* llload.c - the HTTP load generator of `make bench` (libcurl, loopback only).
 *
 *   llload run   --url URL --bodies FILE [--clients N] [--requests N]
 *                [--max-seconds S] [--expect TEXT]
 *       POSTs the bodies (one JSON per line, taken in order and cycled until
 *       --requests were sent) from N client threads, each on its own
 *       keep-alive connection, and prints one JSON object: requests, errors,
 *       wall time, requests/s, latency percentiles, response bytes and the
 *       generator's own CPU time (it shares the cores with the server).
 *       Every reply must be 200 and contain TEXT (default "embedding").
 *   llload ready --url URL --since-ns NS [--timeout-s S]
 *       polls URL every millisecond until it answers 200 and prints the
 *       milliseconds since NS (CLOCK_REALTIME, as `date +%s%N` prints it).
 *
 * Bounded: at most --requests requests and --max-seconds of sending, and the
 * URL must be on the loopback interface (127.0.0.0/8, localhost, [::1]). */
#include <curl/curl.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static double mono_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void die(const char *msg, const char *arg) {
    fprintf(stderr, "llload: %s%s\n", msg, arg ? arg : "");
    exit(1);
}

/* Only loopback targets: this tool never sends traffic off the machine. */
static void require_loopback(const char *url) {
    const char *h = strstr(url, "://");
    h = h ? h + 3 : url;
    if (strncmp(h, "127.", 4) && strncmp(h, "localhost", 9) && strncmp(h, "[::1]", 5))
        die("refusing a non-loopback URL: ", url);
}

/* ------------------------------------------------------------ bodies */

typedef struct bodies {
    char **s;
    size_t *len;
    int n;
} bodies;

static bodies read_bodies(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) die("cannot open ", path);
    bodies b = {0};
    int cap = 0;
    char *line = NULL;
    size_t lcap = 0;
    ssize_t n;
    while ((n = getline(&line, &lcap, f)) > 0) {
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = 0;
        if (n == 0) continue;
        if (b.n == cap) {
            cap = cap ? 2 * cap : 1024;
            b.s = realloc(b.s, (size_t)cap * sizeof *b.s);
            b.len = realloc(b.len, (size_t)cap * sizeof *b.len);
        }
        b.s[b.n] = strdup(line);
        b.len[b.n++] = (size_t)n;
    }
    free(line);
    fclose(f);
    if (b.n == 0) die("no request bodies in ", path);
    return b;
}

/* ------------------------------------------------------------ run */

typedef struct load {
    const char *url, *expect;
    bodies b;
    long max_requests;
    double deadline;
    atomic_long next, errors, resp_bytes;
    double *lat; /* [max_requests], seconds; < 0 = not sent */
} load;

typedef struct reply {
    char *buf;
    size_t n, cap;
} reply;

static size_t on_data(char *p, size_t size, size_t nmemb, void *ud) {
    reply *r = ud;
    size_t n = size * nmemb;
    if (r->n + n + 1 > r->cap) {
        r->cap = (r->n + n + 1) * 2;
        r->buf = realloc(r->buf, r->cap);
    }
    memcpy(r->buf + r->n, p, n);
    r->n += n;
    r->buf[r->n] = 0;
    return n;
}

static void *client_main(void *p) {
    load *L = p;
    CURL *c = curl_easy_init();
    struct curl_slist *hdr = curl_slist_append(NULL, "Content-Type: application/json");
    reply r = {0};
    curl_easy_setopt(c, CURLOPT_URL, L->url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
    curl_easy_setopt(c, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 60L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    for (;;) {
        long i = atomic_fetch_add(&L->next, 1);
        if (i >= L->max_requests || mono_s() >= L->deadline) break;
        int k = (int)(i % L->b.n);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, L->b.s[k]);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)L->b.len[k]);
        r.n = 0;
        double t0 = mono_s();
        CURLcode rc = curl_easy_perform(c);
        L->lat[i] = mono_s() - t0;
        long status = 0;
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
        int ok = rc == CURLE_OK && status == 200 && r.buf && strstr(r.buf, L->expect);
        if (!ok && atomic_fetch_add(&L->errors, 1) == 0)
            fprintf(stderr, "llload: request %ld: %s, status %ld: %.300s\n", i,
                    curl_easy_strerror(rc), status, r.buf ? r.buf : "");
        atomic_fetch_add(&L->resp_bytes, (long)r.n);
    }
    free(r.buf);
    curl_slist_free_all(hdr);
    curl_easy_cleanup(c);
    return NULL;
}

static int cmp_double(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

static double percentile(const double *sorted, long n, double q) {
    long i = (long)ceil(q * (double)n) - 1;
    return sorted[i < 0 ? 0 : i >= n ? n - 1 : i];
}

static double cpu_seconds(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + 1e-6 * (double)ru.ru_utime.tv_usec +
           (double)ru.ru_stime.tv_sec + 1e-6 * (double)ru.ru_stime.tv_usec;
}

static int cmd_run(const char *url, const char *path, int clients, long requests,
                   double max_s, const char *expect) {
    load L = {.url = url, .expect = expect, .b = read_bodies(path)};
    if (clients < 1 || clients > 1024) die("bad --clients", NULL);
    L.max_requests = requests > 0 ? requests : L.b.n;
    L.lat = malloc((size_t)L.max_requests * sizeof *L.lat);
    for (long i = 0; i < L.max_requests; i++) L.lat[i] = -1;
    pthread_t *th = calloc((size_t)clients, sizeof *th);
    double cpu0 = cpu_seconds(), t0 = mono_s();
    L.deadline = t0 + max_s;
    for (int i = 0; i < clients; i++) pthread_create(&th[i], NULL, client_main, &L);
    for (int i = 0; i < clients; i++) pthread_join(th[i], NULL);
    double wall = mono_s() - t0, cpu = cpu_seconds() - cpu0;
    long sent = 0;
    for (long i = 0; i < L.max_requests; i++)
        if (L.lat[i] >= 0) L.lat[sent++] = L.lat[i];
    if (sent == 0) die("no request was sent", NULL);
    qsort(L.lat, (size_t)sent, sizeof *L.lat, cmp_double);
    long errors = atomic_load(&L.errors);
    printf("{\"requests\":%ld,\"errors\":%ld,\"clients\":%d,\"seconds\":%.4f,"
           "\"rps\":%.2f,\"p50_ms\":%.3f,\"p90_ms\":%.3f,\"p99_ms\":%.3f,\"max_ms\":%.3f,"
           "\"resp_bytes_mean\":%.0f,\"client_cpu_s\":%.3f,\"timed_out\":%s}\n",
           sent, errors, clients, wall, (double)sent / wall, 1e3 * percentile(L.lat, sent, 0.5),
           1e3 * percentile(L.lat, sent, 0.9), 1e3 * percentile(L.lat, sent, 0.99),
           1e3 * L.lat[sent - 1], (double)atomic_load(&L.resp_bytes) / (double)sent, cpu,
           sent < L.max_requests ? "true" : "false");
    free(th);
    free(L.lat);
    return errors ? 1 : 0;
}

/* ------------------------------------------------------------ ready */

static size_t discard(char *p, size_t size, size_t nmemb, void *ud) {
    return size * nmemb;
}

static int cmd_ready(const char *url, long long since_ns, double timeout_s) {
    CURL *c = curl_easy_init();
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 1000L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    double end = mono_s() + timeout_s;
    while (mono_s() < end) {
        long status = 0;
        if (curl_easy_perform(c) == CURLE_OK) {
            curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
            if (status == 200) {
                struct timespec ts;
                clock_gettime(CLOCK_REALTIME, &ts);
                long long ns = (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
                printf("%.1f\n", (double)(ns - since_ns) / 1e6);
                curl_easy_cleanup(c);
                return 0;
            }
        }
        usleep(1000);
    }
    curl_easy_cleanup(c);
    die("not ready in time: ", url);
    return 1;
}

int main(int argc, char **argv) {
    const char *url = NULL, *path = NULL, *expect = "embedding";
    int clients = 1;
    long requests = 0;
    double max_s = 120, timeout_s = 60;
    long long since = 0;
    if (argc < 2) die("usage: llload run|ready [options] (see llload.c)", NULL);
    for (int i = 2; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (!strcmp(k, "--url")) url = v;
        else if (!strcmp(k, "--bodies")) path = v;
        else if (!strcmp(k, "--clients")) clients = atoi(v);
        else if (!strcmp(k, "--requests")) requests = atol(v);
        else if (!strcmp(k, "--max-seconds")) max_s = atof(v);
        else if (!strcmp(k, "--expect")) expect = v;
        else if (!strcmp(k, "--since-ns")) since = atoll(v);
        else if (!strcmp(k, "--timeout-s")) timeout_s = atof(v);
        else die("unknown option ", k);
    }
    if (!url) die("--url is required", NULL);
    require_loopback(url);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    int rc;
    if (!strcmp(argv[1], "run")) {
        if (!path) die("--bodies is required", NULL);
        rc = cmd_run(url, path, clients, requests, max_s, expect);
    } else if (!strcmp(argv[1], "ready")) {
        rc = cmd_ready(url, since, timeout_s);
    } else {
        die("unknown command ", argv[1]);
        rc = 2;
    }
    curl_global_cleanup();
    return rc;
}
