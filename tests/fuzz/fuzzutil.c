/* fuzzutil.c - see fuzzutil.h. */
#include "fuzzutil.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

void fuzz_fail(const char *file, int line, const char *cond, const char *fmt,
               ...) {
    fprintf(stderr, "\n%s:%d: invariant broken: %s\n  ", file, line, cond);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    abort();
}

const char *fuzz_shared_path(const char *rel) {
    static char paths[8][4200];
    static int next;
    const char *env = getenv("LAYERLENS_SHARED");
    const char *dir = env && *env ? env : "../shared";
    char *p = paths[next++ % 8];
    snprintf(p, sizeof paths[0], "%s/%s", dir, rel);
    struct stat st;
    if (stat(p, &st) != 0) {
        fprintf(stderr, "fuzz: cannot find %s (%s): the tokenizer targets "
                "need the shared fixtures; run from the repository root with "
                "../shared present or set LAYERLENS_SHARED\n", p,
                strerror(errno));
        exit(2);
    }
    return p;
}

const char *fuzz_memfile(const uint8_t *data, size_t len) {
    static int fd = -1;
    static char path[64];
    if (fd < 0) {
        fd = memfd_create("fuzz-input", MFD_CLOEXEC);
        if (fd < 0) {
            perror("fuzz: memfd_create");
            abort();
        }
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    }
    if (ftruncate(fd, 0) != 0) {
        perror("fuzz: ftruncate");
        abort();
    }
    for (size_t done = 0; done < len;) {
        ssize_t w = pwrite(fd, data + done, len - done, (off_t)done);
        if (w <= 0) {
            perror("fuzz: pwrite");
            abort();
        }
        done += (size_t)w;
    }
    return path;
}

int fuzz_utf8_valid(const uint8_t *s, size_t len) {
    size_t i = 0;
    while (i < len) {
        uint8_t c = s[i];
        size_t n;
        uint32_t cp, min;
        if (c < 0x80) { i++; continue; }
        else if ((c & 0xe0) == 0xc0) n = 2, cp = c & 0x1f, min = 0x80;
        else if ((c & 0xf0) == 0xe0) n = 3, cp = c & 0x0f, min = 0x800;
        else if ((c & 0xf8) == 0xf0) n = 4, cp = c & 0x07, min = 0x10000;
        else return 0;
        if (i + n > len) return 0;
        for (size_t k = 1; k < n; k++) {
            if ((s[i + k] & 0xc0) != 0x80) return 0;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        i += n;
    }
    return 1;
}
