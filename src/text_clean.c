/* text_clean.c - CLIP's text cleaning with an offset map (see text_clean.h).
 *
 * The cleaning is a pipeline of small passes, each reading one mapped text
 * and writing the next.  A byte that a pass copies keeps its span; bytes a
 * pass produces from several input bytes (an entity, a run of whitespace, a
 * lower-cased letter) get the union of their spans.  Spans therefore never
 * go backwards, and any range of output bytes maps to one range of input. */
#include "text_clean.h"

#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

void ll_mtext_free(ll_mtext *m) {
    free(m->s);
    free(m->beg);
    free(m->end);
    memset(m, 0, sizeof *m);
}

static int mt_reserve(ll_mtext *m, size_t extra) {
    if (m->n + extra <= m->cap) return 0;
    size_t cap = m->cap ? m->cap : 64;
    while (cap < m->n + extra) cap *= 2;
    char *s = realloc(m->s, cap + 1); /* +1: room for a terminating NUL */
    if (!s) return -1;
    m->s = s;
    int32_t *b = realloc(m->beg, cap * sizeof *b);
    if (!b) return -1;
    m->beg = b;
    int32_t *e = realloc(m->end, cap * sizeof *e);
    if (!e) return -1;
    m->end = e;
    m->cap = cap;
    return 0;
}

/* Appends n new bytes that all come from input span [beg, end). */
static int mt_push(ll_mtext *m, const char *bytes, size_t n, int32_t beg, int32_t end) {
    if (n == 0) return 0;
    if (mt_reserve(m, n)) return -1;
    memcpy(m->s + m->n, bytes, n);
    for (size_t i = 0; i < n; i++) {
        m->beg[m->n + i] = beg;
        m->end[m->n + i] = end;
    }
    m->n += n;
    return 0;
}

/* Appends in's bytes [i, j) with their own spans. */
static int mt_copy(ll_mtext *m, const ll_mtext *in, size_t i, size_t j) {
    if (j <= i) return 0;
    if (mt_reserve(m, j - i)) return -1;
    memcpy(m->s + m->n, in->s + i, j - i);
    memcpy(m->beg + m->n, in->beg + i, (j - i) * sizeof *m->beg);
    memcpy(m->end + m->n, in->end + i, (j - i) * sizeof *m->end);
    m->n += j - i;
    return 0;
}

/* The code point at s[i] of valid UTF-8; *len gets its byte length. */
static uint32_t cp_at(const char *s, size_t n, size_t i, size_t *len) {
    utf8proc_int32_t cp;
    utf8proc_ssize_t k = utf8proc_iterate((const utf8proc_uint8_t *)s + i,
                                          (utf8proc_ssize_t)(n - i), &cp);
    *len = k > 0 ? (size_t)k : 1; /* input is validated; never loop forever */
    return k > 0 ? (uint32_t)cp : 0xFFFD;
}

static size_t encode_cp(uint32_t cp, char out[4]) {
    return (size_t)utf8proc_encode_char((utf8proc_int32_t)cp, (utf8proc_uint8_t *)out);
}

/* ---- character classes ------------------------------------------------- */

int ll_py_is_whitespace(uint32_t cp) {
    switch (cp) {
    case 0x09: case 0x0A: case 0x0B: case 0x0C: case 0x0D: case 0x20:
    case 0x85: case 0xA0: case 0x1680: case 0x2028: case 0x2029:
    case 0x202F: case 0x205F: case 0x3000:
        return 1;
    default:
        return cp >= 0x2000 && cp <= 0x200A;
    }
}

int ll_py_isspace(uint32_t cp) {
    /* str.isspace() also counts the information separators 0x1C..0x1F
     * (bidirectional class B/S), which the regex module's \s does not. */
    return ll_py_is_whitespace(cp) || (cp >= 0x1C && cp <= 0x1F);
}

static int in_ranges(const ll_cp_range *r, int n, uint32_t cp) {
    int lo = 0, hi = n - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (cp < r[mid].lo) hi = mid - 1;
        else if (cp > r[mid].hi) lo = mid + 1;
        else return 1;
    }
    return 0;
}

static int is_cased(uint32_t cp) {
    return in_ranges(ll_cased_ranges, ll_cased_ranges_n, cp);
}

static int is_case_ignorable(uint32_t cp) {
    return in_ranges(ll_case_ignorable_ranges, ll_case_ignorable_ranges_n, cp);
}

/* ---- html.unescape ------------------------------------------------------ */

/* Python's html.unescape finds references with the (re module) pattern
 *   &(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)
 * and replaces each match as _replace_charref does; the helpers below follow
 * it case by case. */

static const char *entity_lookup(const char *name, size_t len) {
    int lo = 0, hi = ll_html_entities_n - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        const char *e = ll_html_entities[mid].name;
        size_t elen = strlen(e);
        int c = memcmp(name, e, len < elen ? len : elen);
        if (c == 0) c = len < elen ? -1 : len > elen ? 1 : 0;
        if (c == 0) return ll_html_entities[mid].value;
        if (c < 0) hi = mid - 1;
        else lo = mid + 1;
    }
    return NULL;
}

/* The replacement of &#num; as UTF-8 into buf; returns its length. */
static size_t numeric_charref(uint32_t num, char buf[8]) {
    for (int i = 0; i < ll_html_invalid_charrefs_n; i++) {
        if (ll_html_invalid_charrefs[i].num == num) {
            const char *v = ll_html_invalid_charrefs[i].value;
            size_t n = strlen(v);
            memcpy(buf, v, n);
            return n;
        }
    }
    if ((num >= 0xD800 && num <= 0xDFFF) || num > 0x10FFFF) return encode_cp(0xFFFD, buf);
    int lo = 0, hi = ll_html_invalid_codepoints_n - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (num < ll_html_invalid_codepoints[mid]) hi = mid - 1;
        else if (num > ll_html_invalid_codepoints[mid]) lo = mid + 1;
        else return 0; /* dropped */
    }
    return encode_cp(num, buf);
}

static int digit_value(char c, int hex) {
    if (c >= '0' && c <= '9') return c - '0';
    if (hex && c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (hex && c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Tries a numeric reference at in->s[a] == '&', in->s[a+1] == '#'.  Returns
 * the number of bytes consumed, 0 if the pattern does not match, -1 on OOM. */
static long unescape_numeric(const ll_mtext *in, size_t a, ll_mtext *out) {
    const char *s = in->s;
    size_t n = in->n, q = a + 2;
    int hex = 0;
    if (q < n && (s[q] == 'x' || s[q] == 'X') && q + 1 < n && digit_value(s[q + 1], 1) >= 0) {
        hex = 1;
        q++;
    } else if (q >= n || digit_value(s[q], 0) < 0) {
        return 0;
    }
    /* Python's int() is unbounded; everything above 0x10FFFF behaves alike. */
    uint32_t num = 0;
    int d;
    while (q < n && (d = digit_value(s[q], hex)) >= 0) {
        uint64_t v = (uint64_t)num * (hex ? 16 : 10) + (uint64_t)d;
        num = v > 0x110000 ? 0x110000 : (uint32_t)v;
        q++;
    }
    if (q < n && s[q] == ';') q++;
    char buf[8];
    size_t blen = numeric_charref(num, buf);
    if (mt_push(out, buf, blen, in->beg[a], in->end[q - 1])) return -1;
    return (long)(q - a);
}

/* Tries a named reference at in->s[a] == '&' (same contract). */
static long unescape_named(const ll_mtext *in, size_t a, ll_mtext *out) {
    const char *s = in->s;
    size_t n = in->n, p = a + 1, q = p;
    size_t bnd[34]; /* byte offset after k code points of the name */
    int ncp = 0;
    bnd[0] = p;
    while (q < n && ncp < 32) {
        size_t len;
        uint32_t cp = cp_at(s, n, q, &len);
        if (cp == '\t' || cp == '\n' || cp == '\f' || cp == ' ' || cp == '<' ||
            cp == '&' || cp == '#' || cp == ';')
            break;
        q += len;
        bnd[++ncp] = q;
    }
    if (ncp == 0) return 0;
    if (q < n && s[q] == ';') bnd[++ncp] = ++q;

    const char *v = entity_lookup(s + p, q - p);
    if (v) {
        if (mt_push(out, v, strlen(v), in->beg[a], in->end[q - 1])) return -1;
        return (long)(q - a);
    }
    /* The longest prefix (at least 2 characters) that is a name without
     * ';' (only the legacy names like "amp", "lt" exist in that form). */
    for (int x = ncp - 1; x >= 2; x--) {
        v = entity_lookup(s + p, bnd[x] - p);
        if (v) {
            if (mt_push(out, v, strlen(v), in->beg[a], in->end[bnd[x] - 1]) ||
                mt_copy(out, in, bnd[x], q))
                return -1;
            return (long)(q - a);
        }
    }
    if (mt_copy(out, in, a, q)) return -1;
    return (long)(q - a);
}

static int html_unescape(const ll_mtext *in, ll_mtext *out) {
    size_t i = 0;
    while (i < in->n) {
        const char *amp = memchr(in->s + i, '&', in->n - i);
        size_t a = amp ? (size_t)(amp - in->s) : in->n;
        if (mt_copy(out, in, i, a)) return -1;
        if (a == in->n) break;
        long used = (a + 1 < in->n && in->s[a + 1] == '#') ? unescape_numeric(in, a, out)
                                                            : unescape_named(in, a, out);
        if (used < 0) return -1;
        if (used == 0) { /* no reference here: keep the '&' */
            if (mt_copy(out, in, a, a + 1)) return -1;
            used = 1;
        }
        i = a + (size_t)used;
    }
    return 0;
}

/* ---- whitespace ----------------------------------------------------------- */

/* str.strip(): drops str.isspace() characters at both ends. */
static int strip(const ll_mtext *in, ll_mtext *out) {
    size_t i = 0, j = in->n, len;
    while (i < j && ll_py_isspace(cp_at(in->s, in->n, i, &len))) i += len;
    while (j > i) {
        size_t k = j - 1;
        while (k > i && ((unsigned char)in->s[k] & 0xC0) == 0x80) k--;
        if (!ll_py_isspace(cp_at(in->s, in->n, k, &len))) break;
        j = k;
    }
    return mt_copy(out, in, i, j);
}

/* re.sub(r'\s+', ' ', text) with the regex module's \s. */
static int collapse_whitespace(const ll_mtext *in, ll_mtext *out) {
    size_t i = 0, len;
    while (i < in->n) {
        uint32_t cp = cp_at(in->s, in->n, i, &len);
        if (!ll_py_is_whitespace(cp)) {
            if (mt_copy(out, in, i, i + len)) return -1;
            i += len;
            continue;
        }
        size_t j = i + len;
        while (j < in->n && ll_py_is_whitespace(cp_at(in->s, in->n, j, &len))) j += len;
        if (mt_push(out, " ", 1, in->beg[i], in->end[j - 1])) return -1;
        i = j;
    }
    return 0;
}

/* ---- str.lower() ------------------------------------------------------------ */

/* CPython's handle_capital_sigma: U+03A3 lowers to the final form U+03C2
 * when it follows a cased letter and is not followed by one, skipping
 * case-ignorable characters in both directions. */
static int is_final_sigma(const uint32_t *cps, size_t n, size_t i) {
    size_t j = i;
    while (j > 0 && is_case_ignorable(cps[j - 1])) j--;
    if (j == 0 || !is_cased(cps[j - 1])) return 0;
    for (j = i + 1; j < n && is_case_ignorable(cps[j]); j++) {}
    return j == n || !is_cased(cps[j]);
}

/* Python's str.lower() uses the full lowercase mapping: the simple mapping
 * (utf8proc_tolower) for every character except U+0130, whose lowercase is
 * two characters ("i" + U+0307 COMBINING DOT ABOVE, the only unconditional
 * multi-character lowercase in SpecialCasing.txt), and U+03A3, which needs
 * the final-sigma context above.  A changed character's bytes all map to the
 * span of the character they came from. */
static int lower(const ll_mtext *in, ll_mtext *out) {
    size_t ncp = 0, len;
    uint32_t *cps = malloc((in->n ? in->n : 1) * sizeof *cps);
    size_t *pos = malloc((in->n + 1) * sizeof *pos);
    if (!cps || !pos) goto oom;
    for (size_t i = 0; i < in->n; i += len) {
        pos[ncp] = i;
        cps[ncp++] = cp_at(in->s, in->n, i, &len);
    }
    pos[ncp] = in->n;
    for (size_t k = 0; k < ncp; k++) {
        uint32_t cp = cps[k], lc;
        size_t a = pos[k], b = pos[k + 1];
        char buf[8];
        size_t blen;
        if (cp == 0x130) {
            memcpy(buf, "i\xCC\x87", 3);
            blen = 3;
        } else {
            lc = cp == 0x3A3 ? (is_final_sigma(cps, ncp, k) ? 0x3C2 : 0x3C3)
                             : (uint32_t)utf8proc_tolower((utf8proc_int32_t)cp);
            if (lc == cp) {
                if (mt_copy(out, in, a, b)) goto oom;
                continue;
            }
            blen = encode_cp(lc, buf);
        }
        if (mt_push(out, buf, blen, in->beg[a], in->end[b - 1])) goto oom;
    }
    free(cps);
    free(pos);
    return 0;
oom:
    free(cps);
    free(pos);
    return -1;
}

/* ---- the pipeline -------------------------------------------------------- */

typedef int (*mt_pass)(const ll_mtext *in, ll_mtext *out);

int ll_clip_clean(const char *text, size_t len, ll_mtext *out, ll_error *err) {
    /* basic_clean: html.unescape(html.unescape(text)).strip()
     * whitespace_clean: re.sub(r'\s+', ' ', text).strip()
     * then .lower() */
    static const mt_pass passes[] = {html_unescape, html_unescape, strip,
                                     collapse_whitespace, strip, lower};
    ll_mtext cur = {0}, next = {0};
    if (mt_reserve(&cur, len + 1)) goto oom;
    memcpy(cur.s, text, len);
    for (size_t i = 0; i < len; i++) {
        cur.beg[i] = (int32_t)i;
        cur.end[i] = (int32_t)i + 1;
    }
    cur.n = len;
    for (size_t p = 0; p < sizeof passes / sizeof passes[0]; p++) {
        next.n = 0;
        if (passes[p](&cur, &next)) goto oom;
        ll_mtext t = cur;
        cur = next;
        next = t;
    }
    ll_mtext_free(&next);
    if (!cur.s && mt_reserve(&cur, 1)) goto oom; /* nothing was ever written */
    cur.s[cur.n] = 0;
    *out = cur;
    return 0;
oom:
    ll_mtext_free(&cur);
    ll_mtext_free(&next);
    return ll_errorf(err, "out of memory while cleaning a text of %zu bytes", len);
}
