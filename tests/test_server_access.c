/* test_server_access.c - access control, per-request limits and the request
 * log, end to end against the real binary (the tiny fixture checkpoints):
 * the API key from a file (401 bodies, a key given twice, an unreadable or
 * empty file), /metrics behind the key, CORS (allowed and other origins,
 * preflights answered or refused, "*"), --max-request-tokens (413 naming the limit),
 * --max-connections-per-ip, keep-alive with one request at a time per
 * connection, and the log lines in JSON and text. */
#include "server_harness.h"

static th_server SRV;

static int kill_server(void **state) {
    if (SRV.pid > 0) th_stop(&SRV, SIGKILL, 10);
    return 0;
}

/* Starts the server on both tiny models with more arguments. */
static void start(const char *const *extra, int wait_ready) {
    const char *args[40];
    int n = 0;
    args[n++] = "--gpt2";
    args[n++] = tu_path("fixtures/models/gpt2-tiny");
    args[n++] = "--clip";
    args[n++] = tu_path("fixtures/models/clip-tiny");
    for (int i = 0; extra && extra[i] && n < 38; i++) args[n++] = extra[i];
    args[n] = NULL;
    th_start(&SRV, args, wait_ready);
}

static void wait_ready(int port) {
    for (double end = th_now() + 60; th_now() < end; th_sleep_ms(10)) {
        th_resp r;
        if (th_request(port, "GET", "/readyz", NULL, 0, NULL, &r) == 0) {
            int st = r.status;
            th_resp_free(&r);
            if (st == 200) return;
        }
    }
    fail_msg("the server did not get ready");
}

/* Runs `layerlens serve ARGS` to its end (it must not start serving);
 * returns the exit status (-1 when it did not end in 30 s) and its output. */
static int run_serve(const char *const *args, char **out) {
    char path[4300];
    snprintf(path, sizeof path, "%s/out.txt", tu_tmpdir());
    const char *argv[32] = {th_binary(), "serve"};
    int n = 2;
    for (int i = 0; args[i] && n < 31; i++) argv[n++] = args[i];
    argv[n] = NULL;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(fd, 1);
        dup2(fd, 2);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    int status = -1;
    double end = th_now() + 30;
    while (th_now() < end && waitpid(pid, &status, WNOHANG) != pid) th_sleep_ms(5);
    if (th_now() >= end) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        status = -1;
    }
    *out = tu_read_file(path, NULL);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* The error body's code (the body must be the documented error object). */
static const char *error_code(const th_resp *r, char *buf, size_t cap) {
    json_t *j = th_body_json(r);
    json_t *e = json_object_get(j, "error");
    if (!json_is_string(json_object_get(e, "type")) || !json_is_string(json_object_get(e, "message")))
        fail_msg("not an error body: %.300s", r->body);
    snprintf(buf, cap, "%s", json_string_value(json_object_get(e, "code")));
    json_decref(j);
    return buf;
}

static int status_of(const char *method, const char *path, const char *body, const char *extra) {
    th_resp r;
    if (th_request(SRV.port, method, path, body, body ? strlen(body) : 0, extra, &r))
        fail_msg("%s %s: no response", method, path);
    int st = r.status;
    th_resp_free(&r);
    return st;
}

/* ---------------------------------------------------------------- API key */

static void test_api_key_file(void **state) {
    tu_shared();
    char keyfile[4300];
    snprintf(keyfile, sizeof keyfile, "%s/key", tu_tmpdir());
    write_file(keyfile, "s3cret-key-1234\n"); /* the newline is not part of the key */
    const char *extra[] = {"--api-key-file", keyfile, NULL};
    start(extra, 1);
    const char *body = "{\"model\": \"gpt2\", \"input\": \"hello\"}";
    char code[64], h[128];

    th_resp r;
    assert_int_equal(th_request(SRV.port, "POST", "/v1/embeddings", body, strlen(body), NULL, &r), 0);
    assert_int_equal(r.status, 401);
    assert_string_equal(error_code(&r, code, sizeof code), "missing_api_key");
    assert_string_equal(th_header(&r, "WWW-Authenticate", h, sizeof h), "Bearer");
    json_t *j = th_body_json(&r);
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "error"), "type")),
                        "authentication_error");
    json_decref(j);
    th_resp_free(&r);

    /* wrong keys: another, a prefix, a longer one, the key with its newline */
    const char *wrong[] = {"Authorization: Bearer nope\r\n",
                           "Authorization: Bearer s3cret-key-123\r\n",
                           "Authorization: Bearer s3cret-key-12345\r\n",
                           "Authorization: Basic czNjcmV0LWtleS0xMjM0\r\n",
                           "Authorization: Bearer s3cret-key-1234\\n\r\n"};
    for (size_t i = 0; i < sizeof wrong / sizeof wrong[0]; i++) {
        assert_int_equal(th_request(SRV.port, "POST", "/v1/embeddings", body, strlen(body),
                                    wrong[i], &r), 0);
        if (r.status != 401) fail_msg("case %zu: status %d", i, r.status);
        assert_string_equal(error_code(&r, code, sizeof code), "invalid_api_key");
        th_resp_free(&r);
    }
    /* the key, with the scheme in any case */
    assert_int_equal(status_of("POST", "/v1/embeddings", body,
                               "Authorization: Bearer s3cret-key-1234\r\n"), 200);
    assert_int_equal(status_of("GET", "/v1/models", NULL,
                               "Authorization: bearer s3cret-key-1234\r\n"), 200);
    /* probes, metrics (public by default) and the page stay open */
    assert_int_equal(status_of("GET", "/healthz", NULL, NULL), 200);
    assert_int_equal(status_of("GET", "/readyz", NULL, NULL), 200);
    assert_int_equal(status_of("GET", "/metrics", NULL, NULL), 200);
    assert_int_equal(status_of("GET", "/", NULL, NULL), 200);
    assert_true(th_log_has(&SRV, "API key from"));
    th_stop_clean(&SRV);
}

static void test_metrics_behind_key(void **state) {
    tu_shared();
    setenv("LAYERLENS_API_KEY", "env-key", 1);
    const char *extra[] = {"--metrics-public=0", NULL};
    start(extra, 1);
    unsetenv("LAYERLENS_API_KEY");
    th_resp r;
    char code[64];
    assert_int_equal(th_request(SRV.port, "GET", "/metrics", NULL, 0, NULL, &r), 0);
    assert_int_equal(r.status, 401);
    assert_string_equal(error_code(&r, code, sizeof code), "missing_api_key");
    th_resp_free(&r);
    assert_int_equal(status_of("GET", "/metrics", NULL, "Authorization: Bearer env-key\r\n"), 200);
    assert_int_equal(status_of("GET", "/healthz", NULL, NULL), 200);
    th_stop_clean(&SRV);
}

/* Key options that must keep the server from starting, and which key wins
 * when a flag and a variable both give one. */
static void test_api_key_errors(void **state) {
    tu_shared();
    const char *dir = tu_tmpdir();
    char missing[4300], empty[4300], twolines[4300], good[4300];
    snprintf(missing, sizeof missing, "%s/no-such-key", dir);
    snprintf(empty, sizeof empty, "%s/empty", dir);
    snprintf(twolines, sizeof twolines, "%s/two", dir);
    snprintf(good, sizeof good, "%s/good", dir);
    write_file(empty, "\n");
    write_file(twolines, "abc\ndef\n");
    write_file(good, "file-key");
    const char *gpt2 = tu_path("fixtures/models/gpt2-tiny");
    char *out;

    const char *a1[] = {"--gpt2", gpt2, "--port", "0", "--api-key-file", missing, NULL};
    int st = run_serve(a1, &out);
    if (st != 1 || !strstr(out, missing) || !strstr(out, "cannot read"))
        fail_msg("unreadable key file: exit %d: %s", st, out);
    free(out);
    const char *a2[] = {"--gpt2", gpt2, "--port", "0", "--api-key-file", empty, NULL};
    st = run_serve(a2, &out);
    if (st != 1 || !strstr(out, "is empty")) fail_msg("empty key file: exit %d: %s", st, out);
    free(out);
    const char *a3[] = {"--gpt2", gpt2, "--port", "0", "--api-key-file", twolines, NULL};
    st = run_serve(a3, &out);
    if (st != 1 || !strstr(out, "control character")) fail_msg("two lines: exit %d: %s", st, out);
    free(out);
    const char *a4[] = {"--gpt2", gpt2, "--port", "0", "--api-key", "k", "--api-key-file", good, NULL};
    st = run_serve(a4, &out);
    if (st != 2 || !strstr(out, "one way")) fail_msg("both flags: exit %d: %s", st, out);
    free(out);

    /* a flag wins over a variable: the file's key, not the variable's */
    setenv("LAYERLENS_API_KEY", "env-key", 1);
    const char *extra[] = {"--api-key-file", good, NULL};
    start(extra, 1);
    unsetenv("LAYERLENS_API_KEY");
    assert_int_equal(status_of("GET", "/v1/models", NULL, "Authorization: Bearer env-key\r\n"), 401);
    assert_int_equal(status_of("GET", "/v1/models", NULL, "Authorization: Bearer file-key\r\n"), 200);
    th_stop_clean(&SRV);
}

/* ---------------------------------------------------------------- CORS */

static void expect_no_cors(const th_resp *r, const char *what) {
    char h[256];
    if (th_header(r, "Access-Control-Allow-Origin", h, sizeof h))
        fail_msg("%s: unexpected Access-Control-Allow-Origin: %s", what, h);
    if (th_header(r, "Access-Control-Allow-Methods", h, sizeof h))
        fail_msg("%s: unexpected Access-Control-Allow-Methods: %s", what, h);
}

static void test_cors_allow_list(void **state) {
    tu_shared();
    const char *extra[] = {"--cors-origin", "https://app.example",
                           "--cors-origin", "http://localhost:3000, http://b.example:8080",
                           "--api-key", "k", NULL};
    start(extra, 1);
    th_resp r;
    char h[256];
    const char *auth = "Authorization: Bearer k\r\n";
    const char *allowed[] = {"https://app.example", "http://localhost:3000", "http://b.example:8080"};

    /* an allowed origin gets its own origin back, on success and on error
     * (a page must be able to read a 401), and Vary: Origin */
    for (int i = 0; i < 3; i++) {
        char extra_h[256];
        snprintf(extra_h, sizeof extra_h, "Origin: %s\r\n%s", allowed[i], auth);
        assert_int_equal(th_request(SRV.port, "GET", "/v1/models", NULL, 0, extra_h, &r), 0);
        assert_int_equal(r.status, 200);
        assert_string_equal(th_header(&r, "Access-Control-Allow-Origin", h, sizeof h), allowed[i]);
        assert_string_equal(th_header(&r, "Vary", h, sizeof h), "Origin");
        th_resp_free(&r);
    }
    assert_int_equal(th_request(SRV.port, "GET", "/v1/models", NULL, 0,
                                "Origin: https://app.example\r\n", &r), 0);
    assert_int_equal(r.status, 401);
    assert_string_equal(th_header(&r, "Access-Control-Allow-Origin", h, sizeof h),
                        "https://app.example");
    assert_non_null(strstr(th_header(&r, "Access-Control-Expose-Headers", h, sizeof h),
                           "WWW-Authenticate"));
    th_resp_free(&r);

    /* other origins (another scheme, port or host; a trailing slash) get no
     * CORS headers, but still Vary */
    const char *others[] = {"http://app.example", "https://app.example:444",
                            "https://evil.example", "https://app.example/", "null"};
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++) {
        char extra_h[256];
        snprintf(extra_h, sizeof extra_h, "Origin: %s\r\n%s", others[i], auth);
        assert_int_equal(th_request(SRV.port, "GET", "/v1/models", NULL, 0, extra_h, &r), 0);
        assert_int_equal(r.status, 200);
        expect_no_cors(&r, others[i]);
        assert_string_equal(th_header(&r, "Vary", h, sizeof h), "Origin");
        th_resp_free(&r);
    }

    /* a preflight: 204, no body, no key needed (browsers send none) */
    const char *pre = "Origin: http://localhost:3000\r\nAccess-Control-Request-Method: POST\r\n"
                      "Access-Control-Request-Headers: authorization, content-type\r\n";
    assert_int_equal(th_request(SRV.port, "OPTIONS", "/v1/embeddings", NULL, 0, pre, &r), 0);
    assert_int_equal(r.status, 204);
    assert_int_equal(r.len, 0);
    assert_string_equal(th_header(&r, "Access-Control-Allow-Origin", h, sizeof h),
                        "http://localhost:3000");
    assert_non_null(strstr(th_header(&r, "Access-Control-Allow-Methods", h, sizeof h), "POST"));
    th_header(&r, "Access-Control-Allow-Headers", h, sizeof h);
    assert_non_null(strstr(h, "Authorization"));
    assert_non_null(strstr(h, "Content-Type"));
    assert_true(atoi(th_header(&r, "Access-Control-Max-Age", h, sizeof h)) > 0);
    assert_string_equal(th_header(&r, "Allow", h, sizeof h), "POST, OPTIONS");
    th_resp_free(&r);
    /* on a GET route and an evaluation job */
    assert_int_equal(th_request(SRV.port, "OPTIONS", "/v1/models", NULL, 0, pre, &r), 0);
    assert_int_equal(r.status, 204);
    assert_non_null(strstr(th_header(&r, "Access-Control-Allow-Methods", h, sizeof h), "GET"));
    th_resp_free(&r);
    assert_int_equal(th_request(SRV.port, "OPTIONS", "/v1/evaluations/0123456789abcdef0123456789abcdef",
                                NULL, 0, pre, &r), 0);
    assert_int_equal(r.status, 204);
    assert_non_null(strstr(th_header(&r, "Access-Control-Allow-Methods", h, sizeof h), "DELETE"));
    th_resp_free(&r);
    /* a preflight from another origin: refused, without permission */
    assert_int_equal(th_request(SRV.port, "OPTIONS", "/v1/embeddings", NULL, 0,
                                "Origin: https://evil.example\r\nAccess-Control-Request-Method: POST\r\n",
                                &r), 0);
    assert_int_equal(r.status, 403);
    assert_string_equal(error_code(&r, h, sizeof h), "origin_not_allowed");
    expect_no_cors(&r, "preflight from another origin");
    th_resp_free(&r);
    /* a plain OPTIONS (no Origin) just lists the methods */
    assert_int_equal(th_request(SRV.port, "OPTIONS", "/v1/embeddings", NULL, 0, NULL, &r), 0);
    assert_int_equal(r.status, 204);
    assert_string_equal(th_header(&r, "Allow", h, sizeof h), "POST, OPTIONS");
    expect_no_cors(&r, "plain OPTIONS");
    th_resp_free(&r);
    /* OPTIONS of an unknown route is still 404; a 405 names OPTIONS */
    assert_int_equal(status_of("OPTIONS", "/nothing", NULL, pre), 404);
    assert_int_equal(th_request(SRV.port, "DELETE", "/v1/embeddings", NULL, 0, auth, &r), 0);
    assert_int_equal(r.status, 405);
    assert_string_equal(th_header(&r, "Allow", h, sizeof h), "POST, OPTIONS");
    th_resp_free(&r);
    th_stop_clean(&SRV);

    /* bad origins are refused at start-up (exit 2) */
    const char *bad[] = {"https://app.example/", "app.example", "ftp://x", "https://a b"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *args[] = {"--gpt2", tu_path("fixtures/models/gpt2-tiny"), "--port", "0",
                              "--cors-origin", bad[i], NULL};
        char *out;
        int st = run_serve(args, &out);
        if (st != 2 || !strstr(out, "not an origin")) fail_msg("'%s': exit %d: %s", bad[i], st, out);
        free(out);
    }
}

static void test_cors_any_and_none(void **state) {
    tu_shared();
    const char *extra[] = {"--cors-origin", "*", NULL};
    start(extra, 1);
    th_resp r;
    char h[256];
    assert_int_equal(th_request(SRV.port, "GET", "/healthz", NULL, 0,
                                "Origin: https://anywhere.example\r\n", &r), 0);
    assert_string_equal(th_header(&r, "Access-Control-Allow-Origin", h, sizeof h), "*");
    th_resp_free(&r);
    th_stop_clean(&SRV);

    /* without --cors-origin: no CORS headers, no Vary; preflights refused,
     * a plain OPTIONS says Allow */
    start(NULL, 1);
    assert_int_equal(th_request(SRV.port, "POST", "/v1/tokenize",
                                "{\"model\": \"gpt2\", \"input\": \"x\"}", 31,
                                "Origin: https://app.example\r\n", &r), 0);
    assert_int_equal(r.status, 200);
    expect_no_cors(&r, "no --cors-origin");
    assert_null(th_header(&r, "Vary", h, sizeof h));
    th_resp_free(&r);
    assert_int_equal(th_request(SRV.port, "OPTIONS", "/v1/similarity", NULL, 0,
                                "Origin: https://app.example\r\nAccess-Control-Request-Method: POST\r\n",
                                &r), 0);
    assert_int_equal(r.status, 403);
    expect_no_cors(&r, "preflight without --cors-origin");
    th_resp_free(&r);
    assert_int_equal(th_request(SRV.port, "OPTIONS", "/v1/similarity", NULL, 0, NULL, &r), 0);
    assert_int_equal(r.status, 204);
    assert_string_equal(th_header(&r, "Allow", h, sizeof h), "POST, OPTIONS");
    th_resp_free(&r);
    th_stop_clean(&SRV);
}

/* ---------------------------------------------------------------- limits */

/* The tokens of texts as the server counts them (/v1/tokenize). */
static int count_tokens(const char *model, const char *text) {
    int status;
    json_t *j = th_post(SRV.port, "/v1/tokenize",
                        json_pack("{s:s, s:s}", "model", model, "input", text), &status);
    assert_int_equal(status, 200);
    int n = (int)json_array_size(json_object_get(json_array_get(json_object_get(j, "inputs"), 0),
                                                 "token_ids"));
    json_decref(j);
    return n;
}

static void expect_413_tokens(json_t *req, const char *path, const char *param) {
    int status;
    json_t *j = th_post(SRV.port, path, req, &status);
    json_t *e = json_object_get(j, "error");
    if (status != 413) fail_msg("%s: status %d", path, status);
    assert_string_equal(json_string_value(json_object_get(e, "code")), "too_many_tokens");
    assert_string_equal(json_string_value(json_object_get(e, "type")), "request_too_large_error");
    assert_string_equal(json_string_value(json_object_get(e, "param")), param);
    const char *msg = json_string_value(json_object_get(e, "message"));
    if (!strstr(msg, "limit is 12 tokens") || !strstr(msg, "--max-request-tokens"))
        fail_msg("%s: the message does not name the limit: %s", path, msg);
    json_decref(j);
}

static void test_max_request_tokens(void **state) {
    tu_shared();
    const char *extra[] = {"--max-request-tokens", "12", NULL};
    start(extra, 1);
    /* "a photo of a cat" is 5 text tokens + CLIP's start and end = 7 */
    const char *text = "a photo of a cat";
    int n_clip = count_tokens("clip", text), n_gpt2 = count_tokens("gpt2", text);
    assert_int_equal(n_clip, 7);
    assert_int_equal(n_gpt2, 5);
    int status;
    /* 7 tokens fit, 14 do not */
    json_t *j = th_post(SRV.port, "/v1/embeddings",
                        json_pack("{s:s, s:s}", "model", "clip", "input", text), &status);
    assert_int_equal(status, 200);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "usage"), "prompt_tokens")), 7);
    json_decref(j);
    expect_413_tokens(json_pack("{s:s, s:[ss]}", "model", "clip", "input", text, text),
                      "/v1/embeddings", "input");
    /* gpt2: 2 x 5 = 10 fit, 3 x 5 = 15 do not */
    j = th_post(SRV.port, "/v1/embeddings",
                json_pack("{s:s, s:[ss]}", "model", "gpt2", "input", text, text), &status);
    assert_int_equal(status, 200);
    json_decref(j);
    expect_413_tokens(json_pack("{s:s, s:[sss]}", "model", "gpt2", "input", text, text, text),
                      "/v1/embeddings", "input");
    expect_413_tokens(json_pack("{s:s, s:[[ss]]}", "model", "clip", "pairs", text, text),
                      "/v1/similarity", "pairs");
    expect_413_tokens(json_pack("{s:s, s:[sss]}", "model", "gpt2", "input", text, text, text),
                      "/v1/self-similarity", "input");
    expect_413_tokens(json_pack("{s:s, s:[sss]}", "model", "gpt2", "input", text, text, text),
                      "/v1/tokenize", "input");
    /* nothing of the refused requests ran */
    char *t = th_metrics_text(SRV.port);
    assert_true(th_metric(t, "layerlens_tokens_total{model=\"gpt2\"}") == 10);
    assert_true(th_metric(t, "layerlens_requests_total{endpoint=\"/v1/embeddings\",status=\"413\"}") == 2);
    free(t);
    th_stop_clean(&SRV);
}

/* --max-connections-per-ip: the connection past the limit is closed at
 * once; when one closes, there is room again. */
static void test_connections_per_ip(void **state) {
    tu_shared();
    const char *extra[] = {"--max-connections-per-ip", "2", NULL};
    start(extra, 1);
    int a = th_connect(SRV.port), b = th_connect(SRV.port);
    assert_true(a >= 0 && b >= 0);
    th_sleep_ms(100); /* both accepted */
    th_resp r;
    int rc = th_request(SRV.port, "GET", "/healthz", NULL, 0, NULL, &r);
    if (rc == 0) {
        int st = r.status;
        th_resp_free(&r);
        fail_msg("a third connection was served (status %d)", st);
    }
    /* the two open ones are served */
    assert_int_equal(th_send_request(a, "GET", "/healthz", NULL, 0, NULL), 0);
    assert_int_equal(th_read_response(a, &r), 0);
    assert_int_equal(r.status, 200);
    th_resp_free(&r);
    close(a);
    close(b);
    int ok = 0;
    for (double end = th_now() + 5; th_now() < end && !ok; th_sleep_ms(20)) {
        if (th_request(SRV.port, "GET", "/healthz", NULL, 0, NULL, &r) == 0) {
            ok = r.status == 200;
            th_resp_free(&r);
        }
    }
    assert_true(ok);
    th_stop_clean(&SRV);
}

/* ---------------------------------------------------------------- keep-alive */

/* Reads one response by its Content-Length from a connection that stays
 * open; 0 or -1. */
static int read_one(int fd, th_resp *r) {
    memset(r, 0, sizeof *r);
    char buf[1 << 16];
    size_t n = 0;
    for (;;) {
        char *e = n ? memmem(buf, n, "\r\n\r\n", 4) : NULL;
        if (e) {
            size_t head = (size_t)(e - buf) + 4;
            char *cl = strcasestr(buf, "\r\nContent-Length:");
            size_t len = cl && cl < e ? (size_t)atol(cl + 17) : 0;
            if (n >= head + len) {
                if (sscanf(buf, "HTTP/1.%*d %d", &r->status) != 1) return -1;
                r->head = strndup(buf, head - 4);
                r->body = strndup(buf + head, len);
                r->len = len;
                return 0;
            }
        }
        ssize_t k = recv(fd, buf + n, 1, 0); /* byte by byte: never past this response */
        if (k <= 0 || ++n == sizeof buf) return -1;
    }
}

/* One connection carries many requests, GET and OPTIONS included, one at a
 * time: two requests written back to back are answered in order. */
static void test_keep_alive_one_at_a_time(void **state) {
    tu_shared();
    start(NULL, 1);
    int fd = th_connect(SRV.port);
    assert_true(fd >= 0);
    const char *reqs[] = {
        "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        "OPTIONS /v1/embeddings HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n",
        "POST /v1/tokenize HTTP/1.1\r\nHost: x\r\nContent-Length: 31\r\n\r\n"
        "{\"model\": \"gpt2\", \"input\": \"x\"}",
    };
    const int want[] = {200, 204, 404, 200};
    char h[64];
    for (int i = 0; i < 4; i++) {
        th_resp r;
        assert_int_equal(th_send_all(fd, reqs[i], strlen(reqs[i])), 0);
        assert_int_equal(read_one(fd, &r), 0);
        assert_int_equal(r.status, want[i]);
        if (th_header(&r, "Connection", h, sizeof h)) fail_msg("request %d: Connection: %s", i, h);
        th_resp_free(&r);
    }
    /* pipelined: both written at once, answered one after the other */
    char two[256];
    snprintf(two, sizeof two, "%s%s", reqs[3], reqs[0]);
    assert_int_equal(th_send_all(fd, two, strlen(two)), 0);
    th_resp a, b;
    assert_int_equal(read_one(fd, &a), 0);
    assert_int_equal(read_one(fd, &b), 0);
    assert_non_null(strstr(a.body, "token_ids"));
    assert_non_null(strstr(b.body, "\"ok\""));
    th_resp_free(&a);
    th_resp_free(&b);
    close(fd);
    th_stop_clean(&SRV);
}

/* ---------------------------------------------------------------- logs */

/* The request lines of a JSON log, after checking that every line of it is
 * a JSON object with ts, level and msg. */
static json_t *json_log_requests(const char *log) {
    json_t *reqs = json_array();
    int lines = 0;
    for (const char *p = log; *p;) {
        const char *e = strchr(p, '\n');
        if (!e) fail_msg("a log line without its newline: %s", p);
        json_error_t je;
        json_t *j = json_loadb(p, (size_t)(e - p), 0, &je);
        if (!json_is_object(j)) fail_msg("not a JSON line (%s): %.*s", je.text, (int)(e - p), p);
        if (!json_is_string(json_object_get(j, "ts")) || !json_is_string(json_object_get(j, "level")) ||
            !json_is_string(json_object_get(j, "msg")))
            fail_msg("a JSON line without ts/level/msg: %.*s", (int)(e - p), p);
        if (!strcmp(json_string_value(json_object_get(j, "msg")), "request"))
            json_array_append(reqs, j);
        json_decref(j);
        lines++;
        p = e + 1;
    }
    assert_true(lines > (int)json_array_size(reqs)); /* start-up lines too */
    return reqs;
}

static json_t *find_request(json_t *reqs, const char *method, const char *path) {
    size_t i;
    json_t *j;
    json_array_foreach(reqs, i, j) {
        if (!strcmp(json_string_value(json_object_get(j, "method")), method) &&
            !strcmp(json_string_value(json_object_get(j, "path")), path))
            return j;
    }
    fail_msg("no log line for %s %s", method, path);
    return NULL;
}

static void test_json_log(void **state) {
    tu_shared();
    const char *extra[] = {"--log-format", "json", NULL};
    start(extra, 0);
    wait_ready(SRV.port);
    int status;
    json_t *j = th_post(SRV.port, "/v1/embeddings",
                        json_pack("{s:s, s:[ss]}", "model", "gpt2", "input", "the cat", "sat"),
                        &status);
    assert_int_equal(status, 200);
    json_int_t tokens = json_integer_value(json_object_get(json_object_get(j, "usage"), "prompt_tokens"));
    json_decref(j);
    json_decref(th_get(SRV.port, "/healthz", &status));
    json_decref(th_post(SRV.port, "/v1/embeddings",
                        json_pack("{s:s, s:s}", "model", "bert", "input", "x"), &status));
    assert_int_equal(status, 404);
    /* a path with a quote, a space and a byte that is not ASCII */
    th_resp r;
    assert_int_equal(th_request(SRV.port, "GET", "/no%22such%20route%FF", NULL, 0, NULL, &r), 0);
    assert_int_equal(r.status, 404);
    th_resp_free(&r);
    int st = th_stop(&SRV, SIGTERM, 60);
    assert_true(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0);

    char *log = th_log(&SRV);
    json_t *reqs = json_log_requests(log);
    free(log);
    /* the 4 requests above, the readiness polls, nothing else */
    size_t i;
    json_array_foreach(reqs, i, j) {
        const char *keys[] = {"method", "path", "status", "ms", "tokens", "client"};
        for (int k = 0; k < 6; k++)
            if (!json_object_get(j, keys[k])) fail_msg("request line without %s", keys[k]);
        assert_string_equal(json_string_value(json_object_get(j, "client")), "127.0.0.1");
        assert_string_equal(json_string_value(json_object_get(j, "level")), "info");
        assert_true(json_number_value(json_object_get(j, "ms")) >= 0);
    }
    json_t *emb = find_request(reqs, "POST", "/v1/embeddings");
    assert_int_equal(json_integer_value(json_object_get(emb, "status")), 200);
    assert_int_equal(json_integer_value(json_object_get(emb, "tokens")), tokens);
    assert_true(json_real_value(json_object_get(emb, "ms")) > 0);
    assert_int_equal(json_integer_value(json_object_get(find_request(reqs, "GET", "/healthz"),
                                                        "status")), 200);
    assert_int_equal(json_integer_value(json_object_get(find_request(reqs, "GET",
                                                                     "/no%22such%20route%FF"),
                                                        "status")), 404);
    int embeddings = 0;
    json_array_foreach(reqs, i, j) embeddings += !strcmp(json_string_value(json_object_get(j, "path")),
                                                         "/v1/embeddings");
    assert_int_equal(embeddings, 2);
    json_decref(reqs);
}

static void test_text_log_and_levels(void **state) {
    tu_shared();
    start(NULL, 1);
    int status;
    json_decref(th_post(SRV.port, "/v1/tokenize",
                        json_pack("{s:s, s:s}", "model", "clip", "input", "a cat"), &status));
    assert_int_equal(status, 200);
    th_stop_clean(&SRV);
    /* "a cat": CLIP's start, 2 words, end = 4 tokens */
    assert_true(th_log_has(&SRV, "layerlens: request method=POST path=/v1/tokenize status=200 ms="));
    assert_true(th_log_has(&SRV, " tokens=4 client=127.0.0.1\n"));
    assert_true(th_log_has(&SRV, "layerlens: listening on http://127.0.0.1:"));

    /* warn: no request lines, no start-up lines (so no port in the log: the
     * test picks one); debug: batch lines too */
    const char *warn[] = {"--gpt2", tu_path("fixtures/models/gpt2-tiny"), "--log-level", "warn", NULL};
    int port = th_free_port();
    th_spawn(&SRV, warn, port);
    SRV.port = port;
    wait_ready(SRV.port);
    th_stop_clean(&SRV);
    assert_false(th_log_has(&SRV, "request method="));
    assert_false(th_log_has(&SRV, "layerlens: ready"));
    const char *debug[] = {"--log-level", "debug", NULL};
    start(debug, 1);
    json_decref(th_post(SRV.port, "/v1/embeddings",
                        json_pack("{s:s, s:s}", "model", "gpt2", "input", "a cat"), &status));
    assert_int_equal(status, 200);
    th_stop_clean(&SRV);
    assert_true(th_log_has(&SRV, "layerlens: debug: batch model=gpt2 sequences=1 tokens=2 ms="));
    assert_true(th_log_has(&SRV, "request method=POST path=/v1/embeddings status=200"));
    char *out;
    const char *bad[] = {"--gpt2", "x", "--log-level", "loud", NULL};
    assert_int_equal(run_serve(bad, &out), 2);
    assert_non_null(strstr(out, "unknown log level"));
    free(out);
}

int main(void) {
    alarm(900); /* a hung test must not hang the suite (the child dies with us) */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_api_key_file, kill_server),
        cmocka_unit_test_teardown(test_metrics_behind_key, kill_server),
        cmocka_unit_test_teardown(test_api_key_errors, kill_server),
        cmocka_unit_test_teardown(test_cors_allow_list, kill_server),
        cmocka_unit_test_teardown(test_cors_any_and_none, kill_server),
        cmocka_unit_test_teardown(test_max_request_tokens, kill_server),
        cmocka_unit_test_teardown(test_connections_per_ip, kill_server),
        cmocka_unit_test_teardown(test_keep_alive_one_at_a_time, kill_server),
        cmocka_unit_test_teardown(test_json_log, kill_server),
        cmocka_unit_test_teardown(test_text_log_and_levels, kill_server),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
