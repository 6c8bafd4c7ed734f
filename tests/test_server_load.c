/* test_server_load.c - the server under concurrency and in its life cycle:
 * 32 clients at once (every answer checked against the fixture references,
 * batches of several sequences seen in /metrics, no token run twice), a full
 * queue (503 + Retry-After at once), a timeout (504, the queued work
 * dropped), SIGTERM with requests in flight (all answered, exit 0), a client
 * that hangs up while its request waits (work dropped), slow and idle
 * clients (timed out, others unaffected), not ready while a model loads
 * (503), and start-up failures (exit codes). */
#include "server_harness.h"

#include <pthread.h>
#include <stdatomic.h>

static json_t *REF_GPT2, *REF_CLIP;

static int load_refs(void **state) {
    const char *env = getenv("LAYERLENS_SHARED");
    char probe[4200];
    struct stat st;
    snprintf(probe, sizeof probe, "%s/fixtures/README.md", env && *env ? env : "../shared");
    if (stat(probe, &st) != 0) return 0; /* tests skip (or fail under CI) */
    REF_GPT2 = tu_load_json("fixtures/reference/gpt2-tiny.json");
    REF_CLIP = tu_load_json("fixtures/reference/clip-tiny.json");
    return 0;
}

static int free_refs(void **state) {
    json_decref(REF_GPT2);
    json_decref(REF_CLIP);
    return 0;
}

/* Per-test server, stopped in the teardown even when the test failed. */
static th_server SRV;

static int kill_server(void **state) {
    if (SRV.pid > 0) th_stop(&SRV, SIGKILL, 10);
    return 0;
}

static void start_gpt2_clip(const char *const *extra, int with_clip) {
    const char *args[32];
    int n = 0;
    args[n++] = "--gpt2";
    args[n++] = tu_path("fixtures/models/gpt2-tiny");
    if (with_clip) {
        args[n++] = "--clip";
        args[n++] = tu_path("fixtures/models/clip-tiny");
    }
    for (int i = 0; extra && extra[i]; i++) args[n++] = extra[i];
    args[n] = NULL;
    th_start(&SRV, args, 1);
}

/* The reference vector of a word case at layer L: its last row (GPT-2
 * without <|endoftext|>: pooling last) or its end-token row (CLIP: pooling
 * eos). */
static json_t *ref_vector(json_t *c, int L) {
    json_t *rows = json_array_get(json_object_get(c, "layers"), L);
    return json_array_get(rows, json_array_size(rows) - 1);
}

static json_t *word_case(json_t *ref, int k) {
    /* the first 44 cases are words; GPT-2 lists each case once without
     * <|endoftext|> before the appended ones */
    return json_array_get(ref, (size_t)k % 44);
}

static double wait_metric(int port, const char *series, double want, double timeout_s) {
    double end = th_now() + timeout_s, v = -1;
    while (th_now() < end) {
        char *t = th_metrics_text(port);
        v = th_metric(t, series);
        free(t);
        if (v == want) break;
        th_sleep_ms(5);
    }
    return v;
}

/* ---------------------------------------------------------------- concurrency */

#define CLIENTS 32
#define REQUESTS 25

typedef struct client {
    int id, port;
    int ok, failed;
    long tokens; /* usage.prompt_tokens summed */
    char error[512];
} client;

static void client_fail(client *c, const char *fmt, const char *detail) {
    c->failed++;
    if (!c->error[0]) snprintf(c->error, sizeof c->error, fmt, detail);
}

/* Checks one response: every data item, in order, equals the reference of
 * the word it was asked for. */
static void check_embeddings(client *c, json_t *res, json_t **cases, int n, int layer) {
    json_t *data = json_object_get(res, "data");
    if ((int)json_array_size(data) != n) return client_fail(c, "wrong item count%s", "");
    for (int i = 0; i < n; i++) {
        json_t *item = json_array_get(data, i);
        if (json_integer_value(json_object_get(item, "index")) != i)
            return client_fail(c, "index out of order%s", "");
        json_t *emb = json_object_get(json_array_get(json_object_get(item, "layers"), 0), "embedding");
        if (th_max_diff_json(emb, ref_vector(cases[i], layer)) > 1e-4)
            return client_fail(c, "wrong numbers for '%s'",
                               json_string_value(json_object_get(cases[i], "text")));
    }
    c->tokens += (long)json_integer_value(json_object_get(json_object_get(res, "usage"),
                                                          "prompt_tokens"));
    c->ok++;
}

static void *client_main(void *p) {
    client *c = p;
    for (int r = 0; r < REQUESTS; r++) {
        int clip = (c->id + r) % 2;
        int n = 1 + (c->id * 7 + r) % 3, layer = (c->id + 3 * r) % 5;
        json_t *cases[3];
        json_t *texts = json_array();
        for (int i = 0; i < n; i++) {
            cases[i] = word_case(clip ? REF_CLIP : REF_GPT2, c->id * 31 + r * 7 + i * 13);
            /* a copy: jansson's reference counts are not for sharing
             * between threads */
            json_array_append_new(texts, json_string(json_string_value(json_object_get(cases[i], "text"))));
        }
        json_t *req = json_pack("{s:s, s:o, s:[i], s:s}", "model", clip ? "clip" : "gpt2",
                                "input", texts, "layers", layer, "pooling", clip ? "eos" : "last");
        char *body = json_dumps(req, JSON_COMPACT);
        json_decref(req);
        th_resp resp;
        int rc = th_request(c->port, "POST", "/v1/embeddings", body, strlen(body), NULL, &resp);
        free(body);
        if (rc) {
            client_fail(c, "no response%s", "");
            continue;
        }
        json_t *j = resp.status == 200 ? th_body_json(&resp) : NULL;
        if (!j) client_fail(c, "status/body: %.200s", resp.body);
        else check_embeddings(c, j, cases, n, layer);
        json_decref(j);
        th_resp_free(&resp);
    }
    return NULL;
}

static void test_concurrent_clients(void **state) {
    tu_shared();
    const char *extra[] = {"--workers", "2", "--max-batch-wait-us", "5000", NULL};
    start_gpt2_clip(extra, 1);
    client cl[CLIENTS];
    pthread_t th[CLIENTS];
    double t0 = th_now();
    for (int i = 0; i < CLIENTS; i++) {
        memset(&cl[i], 0, sizeof cl[i]);
        cl[i].id = i;
        cl[i].port = SRV.port;
        assert_int_equal(pthread_create(&th[i], NULL, client_main, &cl[i]), 0);
    }
    long tokens = 0;
    int ok = 0;
    for (int i = 0; i < CLIENTS; i++) {
        pthread_join(th[i], NULL);
        if (cl[i].failed) fail_msg("client %d: %d failed: %s", i, cl[i].failed, cl[i].error);
        ok += cl[i].ok;
        tokens += cl[i].tokens;
    }
    double secs = th_now() - t0;
    assert_int_equal(ok, CLIENTS * REQUESTS);

    char *t = th_metrics_text(SRV.port);
    double served = th_metric(t, "layerlens_requests_total{endpoint=\"/v1/embeddings\",status=\"200\"}");
    double run = th_metric(t, "layerlens_tokens_total{model=\"gpt2\"}") +
                 th_metric(t, "layerlens_tokens_total{model=\"clip\"}");
    double multi = 0, batches = 0;
    const char *models[] = {"gpt2", "clip"};
    for (int m = 0; m < 2; m++) {
        char s1[128], s2[128];
        snprintf(s1, sizeof s1, "layerlens_batch_sequences_count{model=\"%s\"}", models[m]);
        snprintf(s2, sizeof s2, "layerlens_batch_sequences_bucket{model=\"%s\",le=\"1\"}", models[m]);
        batches += th_metric(t, s1);
        multi += th_metric(t, s1) - th_metric(t, s2);
    }
    free(t);
    fprintf(stderr, "%d clients x %d requests in %.2f s; %.0f forward passes, %.0f of them "
            "with more than one sequence; %ld tokens asked, %.0f run\n",
            CLIENTS, REQUESTS, secs, batches, multi, tokens, run);
    assert_true(served == CLIENTS * REQUESTS); /* none lost, none counted twice */
    assert_true(run == (double)tokens);        /* no sequence run twice */
    assert_true(multi > 0);                    /* requests shared forward passes */
    th_stop_clean(&SRV);
}

/* ---------------------------------------------------------------- back-pressure */

static void test_queue_full_503(void **state) {
    tu_shared();
    const char *extra[] = {"--workers", "1", "--max-queue", "4", "--max-inputs", "4",
                           "--max-batch-wait-us", "1500000", "--batch-idle-wait", NULL};
    start_gpt2_clip(extra, 0);
    /* A fills the queue and waits there for company (1.5 s) */
    const char *a = "{\"model\": \"gpt2\", \"input\": [\"one\", \"two\", \"three\", \"four\"]}";
    int fa = th_connect(SRV.port);
    assert_true(fa >= 0);
    assert_int_equal(th_send_request(fa, "POST", "/v1/embeddings", a, strlen(a), NULL), 0);
    assert_true(wait_metric(SRV.port, "layerlens_queue_depth", 4, 10) == 4);
    /* B finds it full: 503 at once, with Retry-After */
    const char *b = "{\"model\": \"gpt2\", \"input\": \"five\"}";
    th_resp r;
    double t0 = th_now();
    assert_int_equal(th_request(SRV.port, "POST", "/v1/embeddings", b, strlen(b), NULL, &r), 0);
    double waited = th_now() - t0;
    assert_int_equal(r.status, 503);
    char ra[32];
    assert_non_null(th_header(&r, "Retry-After", ra, sizeof ra));
    assert_true(atoi(ra) >= 1);
    json_t *j = th_body_json(&r);
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "error"), "code")),
                        "queue_full");
    json_decref(j);
    th_resp_free(&r);
    assert_true(waited < 1.0); /* refused, not queued */
    /* A is answered in full */
    assert_int_equal(th_read_response(fa, &r), 0);
    close(fa);
    assert_int_equal(r.status, 200);
    j = th_body_json(&r);
    assert_int_equal(json_array_size(json_object_get(j, "data")), 4);
    json_decref(j);
    th_resp_free(&r);
    /* and the server takes work again */
    int status;
    json_decref(th_post(SRV.port, "/v1/embeddings",
                        json_pack("{s:s, s:s}", "model", "gpt2", "input", "six"), &status));
    assert_int_equal(status, 200);
    th_stop_clean(&SRV);
}

static void test_timeout_504(void **state) {
    tu_shared();
    const char *extra[] = {"--workers", "1", "--request-timeout-ms", "300",
                           "--max-batch-wait-us", "2000000", "--batch-idle-wait", NULL};
    start_gpt2_clip(extra, 0);
    th_resp r;
    const char *b = "{\"model\": \"gpt2\", \"input\": \"late\"}";
    double t0 = th_now();
    assert_int_equal(th_request(SRV.port, "POST", "/v1/embeddings", b, strlen(b), NULL, &r), 0);
    double waited = th_now() - t0;
    assert_int_equal(r.status, 504);
    json_t *j = th_body_json(&r);
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "error"), "code")),
                        "timeout");
    json_decref(j);
    th_resp_free(&r);
    assert_true(waited >= 0.25 && waited < 1.5);
    /* its sequence is dropped when the batch comes due, never run */
    assert_true(wait_metric(SRV.port, "layerlens_dropped_sequences_total{model=\"gpt2\"}", 1, 10) == 1);
    char *t = th_metrics_text(SRV.port);
    assert_true(th_metric(t, "layerlens_tokens_total{model=\"gpt2\"}") == 0);
    assert_true(th_metric(t, "layerlens_requests_total{endpoint=\"/v1/embeddings\",status=\"504\"}") == 1);
    free(t);
    th_stop_clean(&SRV);
}

/* ---------------------------------------------------------------- SIGTERM */

#define INFLIGHT 16

typedef struct waiter {
    int port, k;
    atomic_int *sent;
    int status;
    double answered_at;
    int correct;
} waiter;

static void *waiter_main(void *p) {
    waiter *w = p;
    json_t *c = word_case(REF_GPT2, 5 + w->k);
    json_t *req = json_pack("{s:s, s:s, s:[i], s:s}", "model", "gpt2", "input",
                            json_string_value(json_object_get(c, "text")), "layers", 3,
                            "pooling", "last");
    char *body = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    int fd = th_connect(w->port);
    if (fd >= 0 && th_send_request(fd, "POST", "/v1/embeddings", body, strlen(body), NULL) == 0) {
        atomic_fetch_add(w->sent, 1);
        th_resp r;
        if (th_read_response(fd, &r) == 0) {
            w->answered_at = th_now();
            w->status = r.status;
            json_t *j = th_body_json(&r);
            json_t *emb = json_object_get(json_array_get(json_object_get(
                json_array_get(json_object_get(j, "data"), 0), "layers"), 0), "embedding");
            w->correct = emb && th_max_diff_json(emb, ref_vector(c, 3)) <= 1e-4;
            json_decref(j);
            th_resp_free(&r);
        }
    } else {
        atomic_fetch_add(w->sent, 1);
    }
    if (fd >= 0) close(fd);
    free(body);
    return NULL;
}

static void test_sigterm_in_flight(void **state) {
    tu_shared();
    /* batches wait 1 s for company, so the requests are still queued when
     * the signal comes */
    const char *extra[] = {"--workers", "2", "--max-batch-wait-us", "1000000", "--batch-idle-wait", NULL};
    start_gpt2_clip(extra, 0);
    atomic_int sent = 0;
    waiter w[INFLIGHT];
    pthread_t th[INFLIGHT];
    for (int i = 0; i < INFLIGHT; i++) {
        w[i] = (waiter){.port = SRV.port, .k = i, .sent = &sent};
        pthread_create(&th[i], NULL, waiter_main, &w[i]);
    }
    while (atomic_load(&sent) < INFLIGHT) th_sleep_ms(1);
    assert_true(wait_metric(SRV.port, "layerlens_queue_depth", INFLIGHT, 10) == INFLIGHT);
    pid_t pid = SRV.pid;
    double t_sig = th_now();
    kill(pid, SIGTERM);
    /* quiesced: new connections are refused while the old ones finish */
    int refused = 0;
    for (int tries = 0; tries < 100 && !refused; tries++) {
        th_sleep_ms(5);
        int fd = th_connect(SRV.port);
        if (fd < 0) refused = 1;
        else close(fd);
    }
    int status = -1;
    double end = th_now() + 60;
    while (th_now() < end && waitpid(pid, &status, WNOHANG) != pid) th_sleep_ms(5);
    SRV.pid = 0;
    for (int i = 0; i < INFLIGHT; i++) pthread_join(th[i], NULL);
    if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
        char *log = th_log(&SRV);
        fail_msg("exit status %d after SIGTERM; log:\n%s", status, log);
    }
    for (int i = 0; i < INFLIGHT; i++) {
        assert_int_equal(w[i].status, 200);
        assert_true(w[i].correct);
        assert_true(w[i].answered_at > t_sig); /* it was in flight at the signal */
    }
    assert_true(refused);
    assert_true(th_log_has(&SRV, "SIGTERM"));
}

/* ---------------------------------------------------------------- clients that go */

/* A client that closes its connection while its request is queued: the
 * request is answered 499 (logged and counted, never sent) within the check
 * interval, and its sequences are dropped unrun when their batch comes due. */
static void test_client_gone_drops_work(void **state) {
    tu_shared();
    const char *extra[] = {"--workers", "1", "--max-batch-wait-us", "1500000", "--batch-idle-wait", NULL};
    start_gpt2_clip(extra, 0);
    const char *a = "{\"model\": \"gpt2\", \"input\": [\"one\", \"two\", \"three\"]}";
    int fd = th_connect(SRV.port);
    assert_true(fd >= 0);
    assert_int_equal(th_send_request(fd, "POST", "/v1/embeddings", a, strlen(a), NULL), 0);
    assert_true(wait_metric(SRV.port, "layerlens_queue_depth", 3, 10) == 3);
    double t0 = th_now();
    close(fd);
    const char *gone = "layerlens_requests_total{endpoint=\"/v1/embeddings\",status=\"499\"}";
    assert_true(wait_metric(SRV.port, gone, 1, 10) == 1);
    double noticed = th_now() - t0;
    assert_true(wait_metric(SRV.port, "layerlens_dropped_sequences_total{model=\"gpt2\"}", 3, 10) == 3);
    char *t = th_metrics_text(SRV.port);
    assert_true(th_metric(t, "layerlens_tokens_total{model=\"gpt2\"}") == 0);
    assert_true(th_metric(t, "layerlens_queue_depth") == 0);
    free(t);
    fprintf(stderr, "client gone noticed after %.3f s\n", noticed);
    assert_true(noticed < 1.0); /* before the batch was due: 1.5 s */
    /* the server goes on */
    int status;
    json_decref(th_post(SRV.port, "/v1/embeddings",
                        json_pack("{s:s, s:s}", "model", "gpt2", "input", "four"), &status));
    assert_int_equal(status, 200);
    th_stop_clean(&SRV);
    assert_true(th_log_has(&SRV, "path=/v1/embeddings status=499"));
}

/* 1 once the server has closed fd (EOF or reset), 0 while it is open. */
static int closed_by_server(int fd) {
    char c;
    ssize_t n = recv(fd, &c, 1, MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
}

/* An idle connection is closed after --idle-timeout-s; a body sent a byte
 * at a time is cut off at the request timeout (408 in the metrics); a
 * normal client is served meanwhile as fast as ever. */
static void test_slow_and_idle_clients(void **state) {
    tu_shared();
    const char *extra[] = {"--idle-timeout-s", "1", "--request-timeout-ms", "1500", NULL};
    start_gpt2_clip(extra, 0);
    int idle = th_connect(SRV.port), slow = th_connect(SRV.port);
    assert_true(idle >= 0 && slow >= 0);
    const char *head = "POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                       "Content-Length: 60\r\n\r\n";
    double t0 = th_now();
    assert_int_equal(th_send_all(slow, head, strlen(head)), 0);
    double idle_closed = -1, slow_closed = -1, served = -1;
    for (int i = 0; i < 60 && (idle_closed < 0 || slow_closed < 0); i++) {
        th_sleep_ms(200);
        if (slow_closed < 0) {
            if (closed_by_server(slow) || send(slow, "{", 1, MSG_NOSIGNAL) != 1)
                slow_closed = th_now() - t0;
        }
        if (idle_closed < 0 && closed_by_server(idle)) idle_closed = th_now() - t0;
        if (i == 3) { /* a normal request while both are open */
            double t1 = th_now();
            int status;
            json_decref(th_post(SRV.port, "/v1/embeddings",
                                json_pack("{s:s, s:s}", "model", "gpt2", "input", "x"), &status));
            assert_int_equal(status, 200);
            served = th_now() - t1;
        }
    }
    close(idle);
    close(slow);
    fprintf(stderr, "idle connection closed after %.2f s, slow body after %.2f s; a normal "
            "request meanwhile took %.3f s\n", idle_closed, slow_closed, served);
    assert_true(idle_closed >= 0.9 && idle_closed < 4);
    assert_true(slow_closed >= 1.4 && slow_closed < 4); /* 60 bytes would take 12 s */
    assert_true(served >= 0 && served < 1.0);
    char *t = th_metrics_text(SRV.port);
    assert_true(th_metric(t, "layerlens_requests_total{endpoint=\"/v1/embeddings\",status=\"408\"}") == 1);
    free(t);
    th_stop_clean(&SRV);
}

/* ---------------------------------------------------------------- readiness */

/* A model whose config.json is a FIFO stays "loading" until the test writes
 * the file into it: meanwhile /healthz is 200, /readyz and the model 503. */
static void test_not_ready_while_loading(void **state) {
    tu_shared();
    const char *dir = tu_tmpdir();
    char src[4200], link[4400], fifo[4400];
    const char *files[] = {"model.safetensors", "vocab.json", "merges.txt"};
    for (int i = 0; i < 3; i++) {
        snprintf(link, sizeof link, "%s/%s", dir, files[i]);
        assert_non_null(realpath(tu_path("fixtures/models/gpt2-tiny"), src));
        strcat(src, "/");
        strcat(src, files[i]);
        assert_int_equal(symlink(src, link), 0);
    }
    snprintf(fifo, sizeof fifo, "%s/config.json", dir);
    assert_int_equal(mkfifo(fifo, 0600), 0);
    const char *args[] = {"--gpt2", dir, NULL};
    th_start(&SRV, args, 0);

    int status;
    json_t *j = th_get(SRV.port, "/healthz", &status);
    assert_int_equal(status, 200);
    json_decref(j);
    th_resp r;
    assert_int_equal(th_request(SRV.port, "GET", "/readyz", NULL, 0, NULL, &r), 0);
    assert_int_equal(r.status, 503);
    th_resp_free(&r);
    j = th_post(SRV.port, "/v1/embeddings", json_pack("{s:s, s:s}", "model", "gpt2", "input", "x"),
                &status);
    assert_int_equal(status, 503);
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "error"), "code")),
                        "model_not_ready");
    json_decref(j);
    j = th_get(SRV.port, "/v1/models", &status);
    assert_true(json_is_false(json_object_get(json_array_get(json_object_get(j, "data"), 0), "ready")));
    json_decref(j);

    size_t len;
    char *cfg = tu_read_file(tu_path("fixtures/models/gpt2-tiny/config.json"), &len);
    assert_non_null(cfg);
    int fd = open(fifo, O_WRONLY);
    assert_true(fd >= 0);
    for (size_t off = 0; off < len;) {
        ssize_t w = write(fd, cfg + off, len - off);
        assert_true(w > 0);
        off += (size_t)w;
    }
    close(fd);
    free(cfg);
    int ready = 0;
    for (double end = th_now() + 30; th_now() < end && !ready; th_sleep_ms(10)) {
        assert_int_equal(th_request(SRV.port, "GET", "/readyz", NULL, 0, NULL, &r), 0);
        ready = r.status == 200;
        th_resp_free(&r);
    }
    assert_true(ready);
    j = th_post(SRV.port, "/v1/embeddings", json_pack("{s:s, s:s}", "model", "gpt2", "input", "x"),
                &status);
    assert_int_equal(status, 200);
    json_decref(j);
    th_stop_clean(&SRV);
}

/* ---------------------------------------------------------------- start-up */

/* Runs `layerlens serve ARGS` to completion; returns the wait status and
 * the output (malloc'd). */
static int run_serve(const char *const *args, char **out) {
    char path[4300];
    snprintf(path, sizeof path, "%s/out.txt", tu_tmpdir());
    const char *argv[32] = {th_binary(), "serve"};
    int n = 2;
    for (int i = 0; args[i]; i++) argv[n++] = args[i];
    argv[n] = NULL;
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(fd, 1);
        dup2(fd, 2);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    int status = -1;
    double end = th_now() + 60;
    while (th_now() < end && waitpid(pid, &status, WNOHANG) != pid) th_sleep_ms(5);
    if (th_now() >= end) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
    }
    *out = tu_read_file(path, NULL);
    return status;
}

static void test_startup_and_options(void **state) {
    tu_shared();
    char *out;
    const char *help[] = {"--help", NULL};
    int st = run_serve(help, &out);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    assert_non_null(strstr(out, "--max-batch-tokens"));
    assert_non_null(strstr(out, "LAYERLENS_PORT"));
    assert_non_null(strstr(out, "default 8080"));
    assert_non_null(strstr(out, "default 127.0.0.1"));
    assert_non_null(strstr(out, "--dtype f32|bf16"));
    assert_non_null(strstr(out, "LAYERLENS_DTYPE, default f32"));
    free(out);

    const char *missing[] = {"--gpt2", "/nonexistent/gpt2", "--port", "0", NULL};
    st = run_serve(missing, &out);
    if (!(WIFEXITED(st) && WEXITSTATUS(st) == 1)) fail_msg("status %d: %s", st, out);
    assert_non_null(strstr(out, "/nonexistent/gpt2"));
    free(out);

    const char *wrong_kind[] = {"--clip", tu_path("fixtures/models/gpt2-tiny"), "--port", "0", NULL};
    st = run_serve(wrong_kind, &out);
    if (!(WIFEXITED(st) && WEXITSTATUS(st) == 1)) fail_msg("status %d: %s", st, out);
    assert_non_null(strstr(out, "holds a gpt2 model"));
    free(out);

    const char *bad[][4] = {{"--port", "70000", NULL}, {"--workers", "x", NULL},
                            {"--frobnicate", NULL}, {"--port", "0", NULL} /* no model */,
                            {"--gpt2", "d", "--max-inputs=100000", NULL}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        st = run_serve(bad[i], &out);
        if (!(WIFEXITED(st) && WEXITSTATUS(st) == 2)) fail_msg("case %zu: status %d: %s", i, st, out);
        free(out);
    }

    /* an unknown weight type: refused before anything starts, naming the
     * option (or its variable) and what it accepts */
    const char *bad_dtype[] = {"--gpt2", tu_path("fixtures/models/gpt2-tiny"), "--port", "0",
                               "--dtype", "x", NULL};
    st = run_serve(bad_dtype, &out);
    if (!(WIFEXITED(st) && WEXITSTATUS(st) == 2)) fail_msg("status %d: %s", st, out);
    assert_non_null(strstr(out, "--dtype: unknown weight type 'x' (expected f32 or bf16)"));
    assert_null(strstr(out, "listening"));
    free(out);
    const char *env_dtype[] = {"--gpt2", tu_path("fixtures/models/gpt2-tiny"), "--port", "0", NULL};
    setenv("LAYERLENS_DTYPE", "half", 1);
    st = run_serve(env_dtype, &out);
    unsetenv("LAYERLENS_DTYPE");
    if (!(WIFEXITED(st) && WEXITSTATUS(st) == 2)) fail_msg("status %d: %s", st, out);
    assert_non_null(strstr(out, "LAYERLENS_DTYPE: unknown weight type 'half'"));
    free(out);

    /* options from the environment (a flag would win over them) */
    setenv("LAYERLENS_MAX_INPUTS", "2", 1);
    setenv("LAYERLENS_HOST", "127.0.0.1", 1);
    start_gpt2_clip(NULL, 0);
    unsetenv("LAYERLENS_MAX_INPUTS");
    unsetenv("LAYERLENS_HOST");
    int status;
    json_t *j = th_post(SRV.port, "/v1/embeddings",
                        json_pack("{s:s, s:[sss]}", "model", "gpt2", "input", "a", "b", "c"), &status);
    assert_int_equal(status, 413);
    json_decref(j);
    th_stop_clean(&SRV);
}

int main(void) {
    alarm(900); /* a hung test must not hang the suite (the child dies with us) */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_concurrent_clients, kill_server),
        cmocka_unit_test_teardown(test_queue_full_503, kill_server),
        cmocka_unit_test_teardown(test_timeout_504, kill_server),
        cmocka_unit_test_teardown(test_sigterm_in_flight, kill_server),
        cmocka_unit_test_teardown(test_client_gone_drops_work, kill_server),
        cmocka_unit_test_teardown(test_slow_and_idle_clients, kill_server),
        cmocka_unit_test_teardown(test_not_ready_while_loading, kill_server),
        cmocka_unit_test_teardown(test_startup_and_options, kill_server),
    };
    return cmocka_run_group_tests(tests, load_refs, free_refs);
}
