/* eval_report.c - the reproduction report of `layerlens reproduce`:
 * results.json, report.md and one hand-written SVG plot per task (score by
 * layer, one polyline per model, the paper's published values beside).
 *
 * The SVG is plain SVG 1.1 text with no scripts, fonts or external
 * references, so it renders anywhere (browsers, GitHub, image viewers). */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "eval_internal.h"

/* ---- the paper's published values (Wolfe & Caliskan, ACL 2022) ---------- */

typedef enum pub_kind {
    PUB_SERIES,   /* one value per layer 0..n-1 */
    PUB_BEST,     /* the best layer's score */
    PUB_AT_MOST,  /* every layer at most v */
    PUB_AT_LEAST, /* every layer at least v */
    PUB_AT_LAYER, /* the value at one layer */
} pub_kind;

typedef struct published {
    const char *task, *model;
    pub_kind kind;
    const char *text; /* how the paper says it */
    int layer;        /* PUB_AT_LAYER */
    int n;
    double v[13];
} published;

/* Per-layer values belong to the 12-layer models of the paper: they are
 * drawn only when the evaluated model has 12 layers too. */
#define PAPER_LAYERS 12

static const published paper[] = {
    {"selfsim_words", "gpt2", PUB_SERIES, "GPT-2 layers 0..12", 0, 13,
     {.659, .737, .661, .629, .588, .573, .552, .551, .565, .588, .633, .770, .964}},
    {"selfsim_words", "clip", PUB_SERIES, "CLIP layers 0..4", 0, 5, {.159, .149, .127, .080, .057}},
    {"selfsim_words", "clip", PUB_AT_MOST, "CLIP below .25 at every layer", 0, 1, {.25}},
    {"rg65", "clip", PUB_BEST, "CLIP best .88", 0, 1, {.88}},
    {"stsb", "clip", PUB_BEST, "CLIP .73", 0, 1, {.73}},
    {"stsb", "gpt2", PUB_AT_MOST, "GPT-2 at most .45 at any layer", 0, 1, {.45}},
    {"selfsim_sentences", "clip", PUB_AT_LAYER, "CLIP .25 at layer 12 (decreasing with depth)",
     12, 1, {.25}},
    {"selfsim_sentences", "gpt2", PUB_AT_LEAST, "GPT-2 (EOS) at least .97 at every layer "
     "(increasing)", 0, 1, {.97}},
};

#define N_PAPER ((int)(sizeof paper / sizeof paper[0]))

/* ---- a growable string ------------------------------------------------------ */

typedef struct sbuf {
    char *s;
    size_t n, cap;
    int oom;
} sbuf;

__attribute__((format(printf, 2, 3)))
static void sb_printf(sbuf *b, const char *fmt, ...) {
    if (b->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(b->s ? b->s + b->n : NULL, b->s ? b->cap - b->n : 0, fmt, ap);
        va_end(ap);
        if (k < 0) {
            b->oom = 1;
            return;
        }
        if (b->s && b->n + (size_t)k < b->cap) {
            b->n += (size_t)k;
            return;
        }
        size_t cap = b->cap ? b->cap * 2 : 4096;
        while (cap < b->n + (size_t)k + 1) cap *= 2;
        char *s = realloc(b->s, cap);
        if (!s) {
            b->oom = 1;
            return;
        }
        b->s = s, b->cap = cap;
    }
}

/* Text with XML's five special characters escaped. */
static void sb_xml(sbuf *b, const char *s) {
    for (; s && *s; s++) {
        switch (*s) {
        case '<': sb_printf(b, "&lt;"); break;
        case '>': sb_printf(b, "&gt;"); break;
        case '&': sb_printf(b, "&amp;"); break;
        case '"': sb_printf(b, "&quot;"); break;
        case '\'': sb_printf(b, "&apos;"); break;
        default: sb_printf(b, "%c", *s);
        }
    }
}

/* ---- reading a task's result ---------------------------------------------- */

typedef struct series {
    const char *model;
    int n;
    int layer[LL_MAX_LAYERS + 1];
    double score[LL_MAX_LAYERS + 1], lo[LL_MAX_LAYERS + 1], hi[LL_MAX_LAYERS + 1];
    int has_ci[LL_MAX_LAYERS + 1];
    int max_layer;
} series;

/* The integer layers with a defined score (final/projected are rows of the
 * report's table, not points on the layer axis). */
static void read_series(const char *model, const json_t *mr, series *s) {
    memset(s, 0, sizeof *s);
    s->model = model;
    s->max_layer = -1;
    size_t i;
    json_t *L;
    json_array_foreach(json_object_get(mr, "layers"), i, L) {
        json_t *layer = json_object_get(L, "layer"), *score = json_object_get(L, "score");
        if (!json_is_integer(layer)) continue;
        int l = (int)json_integer_value(layer);
        if (l > s->max_layer) s->max_layer = l;
        if (!json_is_number(score) || s->n > LL_MAX_LAYERS) continue;
        s->layer[s->n] = l;
        s->score[s->n] = json_number_value(score);
        json_t *ci = json_object_get(L, "ci");
        s->has_ci[s->n] = json_is_array(ci);
        s->lo[s->n] = json_number_value(json_array_get(ci, 0));
        s->hi[s->n] = json_number_value(json_array_get(ci, 1));
        s->n++;
    }
}

static const char *model_color(const char *model) {
    return !strcmp(model, "clip") ? "#d95f02" : !strcmp(model, "gpt2") ? "#1b6fb3" : "#555555";
}

static const char *model_label(const char *model) {
    return !strcmp(model, "clip") ? "CLIP" : !strcmp(model, "gpt2") ? "GPT-2" : model;
}

/* Whether a published entry can be drawn against a model with max_layer. */
static int pub_drawable(const published *p, int max_layer) {
    if (p->kind == PUB_SERIES) return max_layer == PAPER_LAYERS;
    if (p->kind == PUB_AT_LAYER) return max_layer == PAPER_LAYERS;
    return 1;
}

/* ---- the SVG ---------------------------------------------------------------- */

#define W 760
#define H 420
#define ML 64  /* margins: left, right (legend), top, bottom */
#define MR 270
#define MT 44
#define MB 52

typedef struct frame {
    double x0, x1, y0, y1; /* data ranges */
} frame;

static double px(const frame *f, double x) {
    return ML + (x - f->x0) / (f->x1 - f->x0) * (W - ML - MR);
}
static double py(const frame *f, double y) {
    return H - MB - (y - f->y0) / (f->y1 - f->y0) * (H - MT - MB);
}

static double nice_step(double range) {
    double raw = range / 5, p = pow(10, floor(log10(raw))), m = raw / p;
    return (m < 1.5 ? 1 : m < 3 ? 2 : m < 7 ? 5 : 10) * p;
}

static void frame_fit(frame *f, const series *s, int ns, const char *task, int lower) {
    double lo = lower ? 0 : 0, hi = lower ? 1 : 0.1; /* correlations always show 0 */
    int maxl = 1;
    for (int k = 0; k < ns; k++) {
        if (s[k].max_layer > maxl) maxl = s[k].max_layer;
        for (int i = 0; i < s[k].n; i++) {
            double a = s[k].has_ci[i] ? s[k].lo[i] : s[k].score[i];
            double b = s[k].has_ci[i] ? s[k].hi[i] : s[k].score[i];
            if (a < lo) lo = a;
            if (b > hi) hi = b;
        }
    }
    for (int p = 0; p < N_PAPER; p++) {
        if (strcmp(paper[p].task, task)) continue;
        for (int i = 0; i < paper[p].n; i++) {
            if (paper[p].v[i] < lo) lo = paper[p].v[i];
            if (paper[p].v[i] > hi) hi = paper[p].v[i];
        }
    }
    double step = nice_step(hi - lo > 0 ? hi - lo : 1);
    f->y0 = floor(lo / step) * step;
    f->y1 = ceil(hi / step) * step;
    if (f->y1 <= f->y0) f->y1 = f->y0 + step;
    f->x0 = 0, f->x1 = maxl;
}

static void svg_axes(sbuf *b, const frame *f, const char *ylabel) {
    double step = nice_step(f->y1 - f->y0);
    sb_printf(b, "<g class=\"axes\" font-family=\"sans-serif\" font-size=\"12\" fill=\"#333\">\n");
    for (double y = f->y0; y <= f->y1 + step * 1e-6; y += step) {
        double yy = py(f, y);
        sb_printf(b, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"%s\" "
                  "stroke-width=\"1\"/>\n", ML, yy, W - MR, yy,
                  fabs(y) < step * 1e-6 ? "#999" : "#e6e6e6");
        sb_printf(b, "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%.2f</text>\n", ML - 6, yy + 4,
                  fabs(y) < step * 1e-6 ? 0.0 : y);
    }
    int every = f->x1 > 24 ? 4 : f->x1 > 12 ? 2 : 1;
    for (int x = 0; x <= (int)f->x1; x += every)
        sb_printf(b, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%d</text>\n", px(f, x),
                  H - MB + 18, x);
    sb_printf(b, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#333\"/>\n", ML, H - MB,
              W - MR, H - MB);
    sb_printf(b, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#333\"/>\n", ML, MT, ML,
              H - MB);
    sb_printf(b, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">layer (hidden_states index)</text>\n",
              (ML + W - MR) / 2, H - 14);
    sb_printf(b, "<text transform=\"translate(16 %d) rotate(-90)\" text-anchor=\"middle\">", (MT + H - MB) / 2);
    sb_xml(b, ylabel);
    sb_printf(b, "</text>\n</g>\n");
}

/* A model's 95% interval band, its polyline and point markers. */
static void svg_series(sbuf *b, const frame *f, const series *s) {
    const char *color = model_color(s->model);
    int band = 0;
    for (int i = 0; i < s->n; i++) band += s->has_ci[i];
    if (band == s->n && s->n > 1) {
        sb_printf(b, "<polygon class=\"ci\" data-model=\"%s\" fill=\"%s\" fill-opacity=\"0.15\" "
                  "stroke=\"none\" points=\"", s->model, color);
        for (int i = 0; i < s->n; i++) sb_printf(b, "%.1f,%.1f ", px(f, s->layer[i]), py(f, s->hi[i]));
        for (int i = s->n - 1; i >= 0; i--)
            sb_printf(b, "%.1f,%.1f ", px(f, s->layer[i]), py(f, s->lo[i]));
        sb_printf(b, "\"/>\n");
    }
    sb_printf(b, "<polyline class=\"model\" data-model=\"%s\" fill=\"none\" stroke=\"%s\" "
              "stroke-width=\"2.5\" points=\"", s->model, color);
    for (int i = 0; i < s->n; i++) sb_printf(b, "%.1f,%.1f ", px(f, s->layer[i]), py(f, s->score[i]));
    sb_printf(b, "\"/>\n");
    for (int i = 0; i < s->n; i++)
        sb_printf(b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3.5\" fill=\"%s\"><title>%s layer %d: "
                  "%.4f</title></circle>\n", px(f, s->layer[i]), py(f, s->score[i]), color,
                  model_label(s->model), s->layer[i], s->score[i]);
}

static const char *pub_dash(pub_kind k) {
    return k == PUB_AT_MOST || k == PUB_AT_LEAST ? "2 4" : k == PUB_BEST ? "8 4" : "5 4";
}

/* The paper's values: per-layer series as dashed segments with hollow
 * markers, single numbers as dashed horizontal lines. */
static void svg_published(sbuf *b, const frame *f, const char *task, const series *s, int ns) {
    for (int p = 0; p < N_PAPER; p++) {
        const published *e = &paper[p];
        if (strcmp(e->task, task)) continue;
        int max_layer = -1;
        for (int k = 0; k < ns; k++)
            if (!strcmp(s[k].model, e->model)) max_layer = s[k].max_layer;
        if (max_layer < 0 || !pub_drawable(e, max_layer)) continue;
        const char *color = model_color(e->model);
        sb_printf(b, "<g class=\"published\" data-model=\"%s\" stroke=\"%s\" fill=\"none\">\n",
                  e->model, color);
        sb_printf(b, "<title>paper: ");
        sb_xml(b, e->text);
        sb_printf(b, "</title>\n");
        if (e->kind == PUB_SERIES) {
            for (int i = 0; i + 1 < e->n; i++)
                sb_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" "
                          "stroke-dasharray=\"5 4\" stroke-width=\"1.5\"/>\n", px(f, i),
                          py(f, e->v[i]), px(f, i + 1), py(f, e->v[i + 1]));
            for (int i = 0; i < e->n; i++)
                sb_printf(b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"7\" height=\"7\" fill=\"white\" "
                          "stroke-width=\"1.5\"/>\n", px(f, i) - 3.5, py(f, e->v[i]) - 3.5);
        } else if (e->kind == PUB_AT_LAYER) {
            sb_printf(b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"9\" height=\"9\" fill=\"white\" "
                      "stroke-width=\"2\"/>\n", px(f, e->layer) - 4.5, py(f, e->v[0]) - 4.5);
        } else {
            sb_printf(b, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke-dasharray=\"%s\" "
                      "stroke-width=\"1.5\"/>\n", ML, py(f, e->v[0]), W - MR, py(f, e->v[0]),
                      pub_dash(e->kind));
        }
        sb_printf(b, "</g>\n");
    }
}

static void svg_legend(sbuf *b, const char *task, const series *s, int ns) {
    int x = W - MR + 18, y = MT + 8;
    sb_printf(b, "<g class=\"legend\" font-family=\"sans-serif\" font-size=\"12\" fill=\"#333\">\n");
    for (int k = 0; k < ns; k++, y += 20) {
        sb_printf(b, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"%s\" "
                  "stroke-width=\"2.5\"/>\n", x, y, x + 24, y, model_color(s[k].model));
        sb_printf(b, "<text x=\"%d\" y=\"%d\">%s (this run)</text>\n", x + 30, y + 4,
                  model_label(s[k].model));
    }
    int any = 0;
    for (int p = 0; p < N_PAPER; p++) {
        if (strcmp(paper[p].task, task)) continue;
        int max_layer = -1;
        for (int k = 0; k < ns; k++)
            if (!strcmp(s[k].model, paper[p].model)) max_layer = s[k].max_layer;
        if (max_layer < 0) continue;
        if (!any++) {
            y += 6;
            sb_printf(b, "<text x=\"%d\" y=\"%d\" font-weight=\"bold\">paper (Wolfe &amp; "
                      "Caliskan 2022)</text>\n", x, y + 4);
            y += 18;
        }
        int drawn = pub_drawable(&paper[p], max_layer);
        if (drawn)
            sb_printf(b, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"%s\" "
                      "stroke-dasharray=\"%s\" stroke-width=\"1.5\"/>\n", x, y, x + 24, y,
                      model_color(paper[p].model), pub_dash(paper[p].kind));
        sb_printf(b, "<text x=\"%d\" y=\"%d\" font-size=\"11\">", x + 30, y + 4);
        sb_xml(b, paper[p].text);
        sb_printf(b, "</text>\n");
        if (!drawn) {
            y += 14;
            sb_printf(b, "<text x=\"%d\" y=\"%d\" font-size=\"10\" fill=\"#777\">(not drawn: "
                      "per layer of the 12-layer model)</text>\n", x + 30, y + 4);
        }
        y += 18;
    }
    sb_printf(b, "</g>\n");
}

static const char *metric_label(const char *metric) {
    if (!metric) return "score";
    if (!strcmp(metric, "spearman")) return "Spearman rho";
    if (!strcmp(metric, "pearson")) return "Pearson r";
    return "self-similarity (mean pairwise cosine)";
}

char *ll_eval_svg(const char *task, const json_t *task_result, ll_error *err) {
    series s[2];
    int ns = 0;
    const char *model, *metric = NULL;
    json_t *mr;
    json_object_foreach((json_t *)task_result, model, mr) {
        if (ns == 2) break;
        read_series(model, mr, &s[ns++]);
        metric = json_string_value(json_object_get(mr, "metric"));
    }
    /* GPT-2 first, then CLIP: the same colors and order in every plot */
    if (ns == 2 && !strcmp(s[0].model, "clip")) {
        series t = s[0];
        s[0] = s[1], s[1] = t;
    }
    int lower = metric && !strcmp(metric, "self_similarity");
    frame f;
    frame_fit(&f, s, ns, task, lower);
    sbuf b = {0};
    sb_printf(&b, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    sb_printf(&b, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
              "viewBox=\"0 0 %d %d\">\n<title>", W, H, W, H);
    sb_xml(&b, task);
    sb_printf(&b, ": %s by layer</title>\n", metric_label(metric));
    sb_printf(&b, "<rect x=\"0\" y=\"0\" width=\"%d\" height=\"%d\" fill=\"white\"/>\n", W, H);
    sb_printf(&b, "<text x=\"%d\" y=\"26\" font-family=\"sans-serif\" font-size=\"16\" "
              "font-weight=\"bold\" fill=\"#222\">", ML);
    sb_xml(&b, task);
    sb_printf(&b, " - %s by layer (band: 95%% CI)</text>\n", metric_label(metric));
    svg_axes(&b, &f, metric_label(metric));
    svg_published(&b, &f, task, s, ns);
    for (int k = 0; k < ns; k++) svg_series(&b, &f, &s[k]);
    svg_legend(&b, task, s, ns);
    sb_printf(&b, "</svg>\n");
    if (b.oom) {
        free(b.s);
        ll_errorf(err, "out of memory writing the plot of %s", task);
        return NULL;
    }
    return b.s;
}

/* ---- report.md --------------------------------------------------------------- */

static void md_score(sbuf *b, const json_t *v) {
    if (json_is_number(v)) sb_printf(b, "%.4f", json_number_value(v));
    else sb_printf(b, "-");
}

static void md_ci(sbuf *b, const json_t *ci) {
    if (json_is_array(ci))
        sb_printf(b, "[%.3f, %.3f]", json_number_value(json_array_get(ci, 0)),
                  json_number_value(json_array_get(ci, 1)));
    else
        sb_printf(b, "-");
}

static void md_layer_key(sbuf *b, const json_t *layer) {
    if (json_is_integer(layer)) sb_printf(b, "%lld", (long long)json_integer_value(layer));
    else sb_printf(b, "%s", json_string_value(layer) ? json_string_value(layer) : "?");
}

static void md_paper(sbuf *b, const char *task) {
    int any = 0;
    for (int p = 0; p < N_PAPER; p++) {
        if (strcmp(paper[p].task, task)) continue;
        sb_printf(b, "%s%s", any++ ? "; " : "", paper[p].text);
        if (paper[p].kind == PUB_SERIES) {
            sb_printf(b, ":");
            for (int i = 0; i < paper[p].n; i++) sb_printf(b, " %.3f", paper[p].v[i]);
        }
    }
    if (!any) sb_printf(b, "-");
}

/* The per-layer table of one task: a row per layer, two columns per model. */
static void md_task_table(sbuf *b, const json_t *tr) {
    const char *models[2];
    const json_t *mrs[2];
    int nm = 0;
    const char *model;
    json_t *mr;
    json_object_foreach((json_t *)tr, model, mr) if (nm < 2) models[nm] = model, mrs[nm++] = mr;
    sb_printf(b, "| layer |");
    for (int k = 0; k < nm; k++) sb_printf(b, " %s | 95%% CI |", model_label(models[k]));
    sb_printf(b, "\n| ---: |");
    for (int k = 0; k < nm; k++) sb_printf(b, " ---: | :---: |");
    sb_printf(b, "\n");
    /* rows follow the first model's layers; the other's are looked up */
    size_t rows = 0;
    for (int k = 0; k < nm; k++) {
        size_t n = json_array_size(json_object_get(mrs[k], "layers"));
        if (n > rows) rows = n;
    }
    for (size_t i = 0; i < rows; i++) {
        json_t *key = NULL;
        for (int k = 0; k < nm && !key; k++)
            key = json_object_get(json_array_get(json_object_get(mrs[k], "layers"), i), "layer");
        sb_printf(b, "| ");
        md_layer_key(b, key);
        sb_printf(b, " |");
        for (int k = 0; k < nm; k++) {
            json_t *L = NULL, *e;
            size_t j;
            json_array_foreach(json_object_get(mrs[k], "layers"), j, e)
                if (json_equal(json_object_get(e, "layer"), key)) L = e;
            sb_printf(b, " ");
            md_score(b, json_object_get(L, "score"));
            sb_printf(b, " | ");
            md_ci(b, json_object_get(L, "ci"));
            sb_printf(b, " |");
        }
        sb_printf(b, "\n");
    }
}

static void md_header(sbuf *b, const json_t *result, const char *gpt2_dir,
                      const char *clip_dir, const char *data_dir) {
    char when[64];
    time_t now = time(NULL);
    struct tm tm;
    strftime(when, sizeof when, "%Y-%m-%d %H:%M UTC", gmtime_r(&now, &tm));
    sb_printf(b, "# Per-layer semantics of GPT-2 and CLIP: reproduction report\n\n");
    sb_printf(b, "Measurements of Wolfe & Caliskan (ACL 2022), *Contrastive Visual Semantic "
              "Pretraining Magnifies the Semantics of Natural Language Representations*, "
              "computed by `layerlens reproduce` on %s.\n\n", when);
    sb_printf(b, "## Models\n\n| model | directory | layers | width |\n| --- | --- | ---: | ---: |\n");
    const char *model;
    json_t *m;
    json_object_foreach(json_object_get(result, "models"), model, m) {
        const char *dir = !strcmp(model, "gpt2") ? gpt2_dir : clip_dir;
        sb_printf(b, "| %s | `%s` | %lld | %lld |\n", model_label(model), dir ? dir : "-",
                  (long long)json_integer_value(json_object_get(m, "n_layer")),
                  (long long)json_integer_value(json_object_get(m, "width")));
    }
    sb_printf(b, "\n## Data (`%s`)\n\n| task | file | items | lines skipped | sha256 |\n"
              "| --- | --- | ---: | ---: | --- |\n", data_dir ? data_dir : "-");
    const char *task;
    json_t *d;
    json_object_foreach(json_object_get(result, "data"), task, d) {
        const char *file = json_string_value(json_object_get(d, "file"));
        const char *sha = json_string_value(json_object_get(d, "sha256"));
        json_t *files = json_object_get(d, "files");
        if (json_array_size(files) > 0) { /* the sampled selfsim_words: one row per file */
            size_t i;
            json_t *f;
            json_array_foreach(files, i, f)
                sb_printf(b, "| %s | %s | | %lld | `%s` |\n", i ? "" : task,
                          json_string_value(json_object_get(f, "file")),
                          (long long)json_integer_value(json_object_get(f, "n_skipped")),
                          json_string_value(json_object_get(f, "sha256")));
            sb_printf(b, "| | sentences drawn of %lld distinct | %lld | | |\n",
                      (long long)json_integer_value(json_object_get(d, "n_available")),
                      (long long)json_integer_value(json_object_get(d, "n")));
            continue;
        }
        sb_printf(b, "| %s | %s | %lld | %lld | `%s` |\n", task, file ? file : "(request)",
                  (long long)json_integer_value(json_object_get(d, "n")),
                  (long long)json_integer_value(json_object_get(d, "n_skipped")), sha ? sha : "-");
    }
}

static void md_summary(sbuf *b, const json_t *result) {
    sb_printf(b, "\n## Summary\n\nBest layer = highest correlation; for self-similarity the "
              "lowest (most isotropic) layer.\n\n| task | metric | GPT-2 best (layer) | "
              "CLIP best (layer) | CLIP - GPT-2 [95%% CI] | paper |\n| --- | --- | ---: | ---: | "
              "---: | --- |\n");
    const char *task;
    json_t *tr;
    json_object_foreach(json_object_get(result, "results"), task, tr) {
        json_t *any = json_object_iter_value(json_object_iter(tr));
        sb_printf(b, "| [%s](#%s) | %s |", task, task,
                  json_string_value(json_object_get(any, "metric")));
        const char *models[] = {"gpt2", "clip"};
        for (int k = 0; k < 2; k++) {
            json_t *mr = json_object_get(tr, models[k]);
            sb_printf(b, " ");
            md_score(b, json_object_get(mr, "best_score"));
            if (json_is_integer(json_object_get(mr, "best_layer")))
                sb_printf(b, " (%lld)", (long long)json_integer_value(json_object_get(mr, "best_layer")));
            sb_printf(b, " |");
        }
        json_t *c = json_object_get(json_object_get(result, "comparisons"), task);
        sb_printf(b, " ");
        if (c && json_is_number(json_object_get(c, "difference"))) {
            md_score(b, json_object_get(c, "difference"));
            sb_printf(b, " ");
            md_ci(b, json_object_get(c, "ci"));
        } else {
            sb_printf(b, "-");
        }
        sb_printf(b, " | ");
        md_paper(b, task);
        sb_printf(b, " |\n");
    }
}

static void md_tasks(sbuf *b, const json_t *result) {
    const char *task;
    json_t *tr;
    json_object_foreach(json_object_get(result, "results"), task, tr) {
        sb_printf(b, "\n## %s\n\n![%s](%s.svg)\n\n", task, task, task);
        md_task_table(b, tr);
        sb_printf(b, "\nMethod:");
        const char *model;
        json_t *mr;
        json_object_foreach(tr, model, mr) {
            sb_printf(b, " %s `%s`, n = %lld", model_label(model),
                      json_string_value(json_object_get(mr, "variant")),
                      (long long)json_integer_value(json_object_get(mr, "n")));
            long long sk = json_integer_value(json_object_get(mr, "n_skipped"));
            if (sk) sb_printf(b, " (%lld skipped)", sk);
            sb_printf(b, ";");
        }
        json_t *first = json_object_iter_value(json_object_iter(tr));
        sb_printf(b, " interval: %s.", json_string_value(json_object_get(first, "ci_method")));
        json_t *sm = json_object_get(first, "selection_method");
        if (sm) {
            sb_printf(b, " Token selection `%s`: %s; %s",
                      json_string_value(json_object_get(sm, "name")),
                      json_string_value(json_object_get(sm, "sentences")),
                      json_string_value(json_object_get(sm, "token")));
            if (json_is_integer(json_object_get(sm, "seed")))
                sb_printf(b, "; seed %lld", (long long)json_integer_value(json_object_get(sm, "seed")));
            sb_printf(b, ".");
        }
        sb_printf(b, "\n\nPaper: ");
        md_paper(b, task);
        sb_printf(b, "\n");
    }
}

static void md_notes(sbuf *b, const json_t *result) {
    sb_printf(b, "\n## Notes\n\n"
              "- Layer L is Hugging Face's `hidden_states[L]`: layer 0 is the embedding sum, "
              "GPT-2's top layer includes `ln_f`, CLIP's does not.\n"
              "- Word vectors: the last subtoken of the word encoded alone (GPT-2 between "
              "`<|endoftext|>` tokens, CLIP between its start and end tokens). Sentence "
              "vectors: the end-of-text token.\n"
              "- Intervals: Fisher z for correlations; for self-similarity a normal "
              "approximation of the U-statistic. CLIP - GPT-2: paired bootstrap of the "
              "difference of the best layers over the same items.\n"
              "- With random or tiny checkpoints the numbers are of no meaning; the "
              "published values apply to the real GPT-2 (124M) and CLIP ViT-B/32 weights "
              "(`weights/download.sh`).\n"
              "- Full numbers, per-layer extras (mean vector norm, self-similarity after "
              "subtracting the mean vector) and skipped items: `results.json`.\n");
    sb_printf(b, "- Time: %.1f s.\n", json_number_value(json_object_get(result, "timing_ms")) / 1e3);
}

/* ---- writing the files ---------------------------------------------------------- */

static int write_file(const char *dir, const char *name, const char *text, size_t len,
                      ll_error *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) return ll_errorf(err, "cannot write %s: %s", path, strerror(errno));
    size_t w = fwrite(text, 1, len, f);
    if (fclose(f) != 0 || w != len) return ll_errorf(err, "cannot write %s: %s", path, strerror(errno));
    return 0;
}

static int make_dir(const char *dir, ll_error *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s", dir);
    for (char *p = path + 1; *p; p++) { /* mkdir -p */
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(path, 0755) != 0 && errno != EEXIST)
            return ll_errorf(err, "cannot create %s: %s", path, strerror(errno));
        *p = '/';
    }
    if (mkdir(path, 0755) != 0 && errno != EEXIST)
        return ll_errorf(err, "cannot create %s: %s", path, strerror(errno));
    return 0;
}

/* A task name is a file name here: only the registry's characters. */
static int safe_name(const char *s) {
    if (!*s) return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_')) return 0;
    return 1;
}

int ll_eval_report_write(const json_t *result, const char *out_dir, const char *gpt2_dir,
                         const char *clip_dir, const char *data_dir, ll_error *err) {
    if (make_dir(out_dir, err)) return -1;
    char *js = json_dumps(result, JSON_INDENT(2) | JSON_ENSURE_ASCII);
    if (!js) return ll_errorf(err, "out of memory");
    size_t n = strlen(js);
    char *withnl = realloc(js, n + 2);
    if (!withnl) {
        free(js);
        return ll_errorf(err, "out of memory");
    }
    withnl[n] = '\n', withnl[n + 1] = 0;
    int rc = write_file(out_dir, "results.json", withnl, n + 1, err);
    free(withnl);
    const char *task;
    json_t *tr;
    json_object_foreach(json_object_get(result, "results"), task, tr) {
        if (rc || !safe_name(task)) continue;
        char *svg = ll_eval_svg(task, tr, err), name[128];
        if (!svg) return -1;
        snprintf(name, sizeof name, "%s.svg", task);
        rc = write_file(out_dir, name, svg, strlen(svg), err);
        free(svg);
    }
    if (rc) return -1;
    sbuf b = {0};
    md_header(&b, result, gpt2_dir, clip_dir, data_dir);
    md_summary(&b, result);
    md_tasks(&b, result);
    md_notes(&b, result);
    if (b.oom) {
        free(b.s);
        return ll_errorf(err, "out of memory writing the report");
    }
    rc = write_file(out_dir, "report.md", b.s, b.n, err);
    free(b.s);
    return rc;
}
