/* The field lines of a head that the data plane's fast readers take without llhttp: an origin's
 * response head (_originhead.c, decision 0024) and a client's request head (_reqhead.c, decision
 * 0031). A line is a token, ":", optional SP or HTAB, a value of HTAB, SP, visible ASCII and
 * obs-text, and CRLF; the section ends at an empty line. Narrower than llhttp (no obs-fold, bare CR
 * or LF, whitespace before the colon, NUL or other control bytes): a head with any other line is
 * left to llhttp, which decides. Static, so each module that includes it has its own copy and
 * calls init_field_tables() at import. */
#ifndef EDGECACHE_FIELDLINE_H
#define EDGECACHE_FIELDLINE_H

#include <Python.h>
#include <stdint.h>
#include <string.h>

/* Bytes of a name (RFC 9110's tchar) and of a value or reason phrase. */
static unsigned char TCHAR[256], VCHAR[256];

static void init_field_tables(void) {
    for (int c = 0; c < 256; c++) {
        TCHAR[c] = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                   (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
        VCHAR[c] = c == '\t' || (c >= 0x20 && c != 0x7f);
    }
}

/* Whether the n bytes at a, ASCII letters lowered, are the NUL-terminated `lower`. */
static int lower_eq(const char *a, Py_ssize_t n, const char *lower) {
    for (Py_ssize_t i = 0; i < n; i++) {
        if (lower[i] == '\0')
            return 0; /* a is longer; a NUL in a must not match the terminator */
        unsigned char c = (unsigned char)a[i];
        if (c >= 'A' && c <= 'Z')
            c += 32;
        if (c != (unsigned char)lower[i])
            return 0;
    }
    return lower[n] == '\0';
}

/* The line at *pp, before `stop`: 1 for a field (its name and value, the value's trailing
 * whitespace kept as llhttp keeps it; *pp past its CRLF), 0 for the empty line that ends the head
 * (*pp past it), -1 for a line of another shape or a head not whole before `stop`. */
static int next_field(const unsigned char **pp, const unsigned char *stop, const char **name,
                      Py_ssize_t *name_len, const char **value, Py_ssize_t *value_len) {
    const unsigned char *p = *pp;
    if (p == stop)
        return -1;
    if (*p == '\r') {
        if (stop - p < 2 || p[1] != '\n')
            return -1;
        *pp = p + 2;
        return 0;
    }
    const unsigned char *n = p;
    while (p < stop && TCHAR[*p])
        p++;
    if (p == n || p == stop || *p != ':')
        return -1;
    *name = (const char *)n;
    *name_len = p - n;
    p++;
    while (p < stop && (*p == ' ' || *p == '\t'))
        p++;
    const unsigned char *v = p;
    /* Eight bytes at a time while none is below SP or is DEL (values are mostly plain ASCII; HTAB
       and the CR that ends the line stop the word loop, and the byte loop decides them). */
    while (stop - p >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        uint64_t del = w ^ 0x7f7f7f7f7f7f7f7fULL;
        if (((w - 0x2020202020202020ULL) & ~w & 0x8080808080808080ULL) |
            ((del - 0x0101010101010101ULL) & ~del & 0x8080808080808080ULL))
            break;
        p += 8;
    }
    while (p < stop && VCHAR[*p])
        p++;
    if (stop - p < 2 || p[0] != '\r' || p[1] != '\n')
        return -1;
    *value = (const char *)v;
    *value_len = p - v;
    *pp = p + 2;
    return 1;
}

#endif
