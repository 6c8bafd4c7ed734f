/* web.c - the web page: GET / and GET /web/<file>, answered from copies of
 * the files of web/ (HTML, JS, CSS) built into the binary, so the server is
 * still one file to deploy and the page always matches the API it calls.
 *
 * The files are embedded with the assembler's .incbin (GNU as and clang's
 * integrated assembler both have it): no generator, no generated source.
 * The path is relative to the directory the compiler runs in - the
 * repository root, where make runs - and the Makefile makes web.o depend on
 * every file in web/ so an edited page is rebuilt in. */
#include "server_internal.h"

#include <string.h>

/* Defines name[] .. name_end[] holding the bytes of file in .rodata. */
#define WEB_EMBED(name, file)                                             \
    __asm__(".pushsection .rodata\n"                                      \
            ".balign 16\n" #name ":\n"                                    \
            ".incbin \"" file "\"\n" #name "_end:\n"                      \
            ".byte 0\n"                                                   \
            ".popsection\n");                                             \
    extern const unsigned char name[], name##_end[]

WEB_EMBED(web_index_html, "web/index.html");
WEB_EMBED(web_app_js, "web/app.js");
WEB_EMBED(web_chart_js, "web/chart.js");
WEB_EMBED(web_style_css, "web/style.css");

typedef struct web_file {
    const char *url;
    const char *type;
    const unsigned char *begin, *end;
} web_file;

static const web_file FILES[] = {
    {"/", "text/html; charset=utf-8", web_index_html, web_index_html_end},
    {"/web/app.js", "text/javascript; charset=utf-8", web_app_js, web_app_js_end},
    {"/web/chart.js", "text/javascript; charset=utf-8", web_chart_js, web_chart_js_end},
    {"/web/style.css", "text/css; charset=utf-8", web_style_css, web_style_css_end},
};
#define N_FILES ((int)(sizeof FILES / sizeof FILES[0]))

/* The page loads nothing from anywhere but this server; the browser holds
 * it to that (and to no inline script or style). */
#define WEB_CSP "default-src 'self'; img-src 'self' data:; object-src 'none'; " \
                "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

int web_is_path(const char *url) {
    return strcmp(url, "/") == 0 || strncmp(url, "/web/", 5) == 0;
}

int api_web(ll_request *r, const char *url, const char *method) {
    r->endpoint = EP_OTHER;
    const web_file *f = NULL;
    for (int i = 0; i < N_FILES && !f; i++)
        if (strcmp(FILES[i].url, url) == 0) f = &FILES[i];
    if (!f) return reply_error(r, 404, "route_not_found", NULL, "no file %.200s", url);
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
        reply_error(r, 405, "method_not_allowed", NULL,
                    "%s %s is not supported; use GET", method, url);
        if (r->resp) MHD_add_response_header(r->resp, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
        return 0;
    }
    /* Static bytes: libmicrohttpd sends them without a copy. */
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        (size_t)(f->end - f->begin), (void *)f->begin, MHD_RESPMEM_PERSISTENT);
    if (!resp) return reply_error(r, 500, "out_of_memory", NULL, "out of memory");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, f->type);
    /* Revalidate on every load, so an upgraded server's page is never
     * mixed with a cached older script. */
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(resp, "Content-Security-Policy", WEB_CSP);
    r->status = 200;
    r->resp = resp;
    return 0;
}
