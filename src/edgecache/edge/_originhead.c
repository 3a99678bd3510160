/* An origin response's head, read from its raw bytes (decision 0024 and its 2026-12-01 addendum).

Why in C: a fill's head step (httptools' on_header per field, the fill's field pass, encode_head)
made two strings and a tuple per field in Python; these functions read the same bytes once and make
only what the miss path uses. fields() and scan() read a head llhttp has already accepted, so its
shape is known: a status line, then lines "name:" OWS value CRLF (no obs-fold, no bare CR or LF,
names are tokens), then CRLF. response() reads a head llhttp has not seen, and validates it itself.
The value is what llhttp reports: leading SP/HTAB skipped, everything up to the CR kept. Any CR and
LF bytes before a status line are skipped, as llhttp's start state skips them (before the first head
and between an interim head and the next).

fields(buf, start) -> (end, [(name, value), ...]): the head beginning at ``start``, each field as
    httptools' on_header gives it (latin-1), and the offset just after it. A head of more than
    MAX_FIELDS fields (origin_conn.MAX_FIELDS), which its caller refuses, is read no further than its
    first MAX_FIELDS + 1 (end is then the offset after them): an origin's long head costs no more.
scan(buf, start) -> None | (end, nfields, field_bytes, content_length, chunked, (head, cache_control,
    cdn_cache_control, expires, vary, date, last_modified, age, etag, set_cookie, tag_fields)):
    what the connection's framing and a fill's storage decision read, and the stored head (fields
    shown to clients, "Name: value\r\n" each). None when the head is one the common path does not
    take (a Transfer-Encoding other than one "chunked", a Content-Length that is not 1 to 18 digits,
    a Connection field naming a field the fill reads, more than 16 other names (repeats count) or one
    of 64 bytes or more, over MAX_FIELDS fields, found once the count passes it): the caller then
    runs the Python path over fields().
Both raise ValueError when buf[start:] holds no complete head (a status line ending in LF, then lines
ending in CRLF, each with a colon, up to an empty one); they check no more than that.
response(read) -> None | (end, status, keep_alive, content_length, fill): the exchange's first read
    when it begins with a whole final head of a shape narrower than llhttp's (strict_head below),
    read without llhttp (origin_conn's rule 9); fill is scan()'s last item. None for anything else,
    which the caller then feeds to llhttp as before. Its checks must stay narrower than llhttp's, not
    try to match them: a head it takes is never shown to llhttp, so one that llhttp would refuse or
    read otherwise (another framing, another keep-alive) would reach a fill and the connection's reuse
    unchecked, while one it leaves to llhttp costs only llhttp's parse. Narrow rules are ones whose
    every head llhttp evidently accepts alike (tests/test_origin_fast.py holds each to its verdict). */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#include "_fieldline.h"

enum kind {
    K_SHOWN,
    K_HOP,
    K_CONNECTION,
    K_TE,
    K_TAG,
    K_AGE,
    K_CONTENT_LENGTH,
    K_CDN_CACHE_CONTROL,
    K_CACHE_CONTROL,
    K_DATE,
    K_LAST_MODIFIED,
    K_ETAG,
    K_EXPIRES,
    K_VARY,
    K_SET_COOKIE,
    K_NAMED, /* a field a Connection field names: not stored */
};

struct name_kind {
    const char *name;
    Py_ssize_t len;
    enum kind kind;
};

#define KIND(name, kind) {name, sizeof(name) - 1, kind}

/* httpcache.headers.HOP_BY_HOP, httpcache.tags.TAG_HEADERS and the fields the fill reads
   (fetch._KIND_BY_NAME); tests/test_originhead.py checks that the lists agree. */
static const struct name_kind KINDS[] = {
    KIND("connection", K_CONNECTION),
    KIND("keep-alive", K_HOP),
    KIND("proxy-connection", K_HOP),
    KIND("te", K_HOP),
    KIND("trailer", K_HOP),
    KIND("transfer-encoding", K_TE),
    KIND("upgrade", K_HOP),
    KIND("proxy-authenticate", K_HOP),
    KIND("proxy-authorization", K_HOP),
    KIND("cache-tag", K_TAG),
    KIND("surrogate-key", K_TAG),
    KIND("xkey", K_TAG),
    KIND("edge-cache-tag", K_TAG),
    KIND("age", K_AGE),
    KIND("content-length", K_CONTENT_LENGTH),
    KIND("cdn-cache-control", K_CDN_CACHE_CONTROL),
    KIND("cache-control", K_CACHE_CONTROL),
    KIND("date", K_DATE),
    KIND("last-modified", K_LAST_MODIFIED),
    KIND("etag", K_ETAG),
    KIND("expires", K_EXPIRES),
    KIND("vary", K_VARY),
    KIND("set-cookie", K_SET_COOKIE),
};

#define NKINDS (sizeof(KINDS) / sizeof(KINDS[0]))
#define MAX_NAMED 16
#define MAX_NAMED_LEN 64
#define MAX_FIELDS 256
#define MAX_HEAD (64 * 1024) /* origin_conn.MAX_HEAD: bytes of names and values in a head */
/* Lines kept on the C stack by scan; a head with more gets a PyMem block. */
#define STACK_LINES 64

#define LONGEST_KIND 19
/* KINDS' indexes by length (init_kinds): a name is compared only with the names of its length, and
   by its first byte before the rest. */
static unsigned char KINDS_OF_LEN[LONGEST_KIND + 1][NKINDS], NKINDS_OF_LEN[LONGEST_KIND + 1];

/* Each byte with ASCII letters lowered. */
static unsigned char LOWER[256];

static void init_kinds(void) {
    for (size_t i = 0; i < NKINDS; i++) {
        Py_ssize_t n = KINDS[i].len;
        KINDS_OF_LEN[n][NKINDS_OF_LEN[n]++] = (unsigned char)i;
    }
    for (int c = 0; c < 256; c++)
        LOWER[c] = (unsigned char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
}

static enum kind kind_of(const char *name, Py_ssize_t n) {
    if (n < 1 || n > LONGEST_KIND)
        return K_SHOWN;
    const unsigned char *a = (const unsigned char *)name;
    for (int j = 0; j < NKINDS_OF_LEN[n]; j++) {
        const struct name_kind *k = &KINDS[KINDS_OF_LEN[n][j]];
        /* The lengths are equal: a byte-for-byte comparison of the lowered name, first byte
           first (it tells most names of a length apart). */
        Py_ssize_t i = 0;
        while (i < n && LOWER[a[i]] == (unsigned char)k->name[i])
            i++;
        if (i == n)
            return k->kind;
    }
    return K_SHOWN;
}

/* What Python's str.strip() removes from a latin-1 string. */
static int is_space(unsigned char c) {
    return (c >= 9 && c <= 13) || (c >= 28 && c <= 32) || c == 0x85 || c == 0xa0;
}

/* The strings of the values an origin repeats from response to response (its Cache-Control, its
   Date within a second, a Last-Modified, the tag fields' names), each given again while the bytes
   are the same: one allocation less each, and the memos that read them downstream (the storage
   decision's, the tags', the Date's) find a string whose hash is already computed. */
enum cached { C_CACHE_CONTROL, C_VARY, C_DATE, C_LAST_MODIFIED, C_TAG_NAME, NCACHED = C_TAG_NAME + 4 };
static PyObject *CACHED[NCACHED];

static PyObject *latin1_cached(int slot, const char *s, Py_ssize_t n) {
    PyObject *last = CACHED[slot];
    if (last != NULL && PyUnicode_GET_LENGTH(last) == n && PyUnicode_KIND(last) == PyUnicode_1BYTE_KIND &&
        memcmp(PyUnicode_1BYTE_DATA(last), s, (size_t)n) == 0)
        return Py_NewRef(last);
    PyObject *str = PyUnicode_DecodeLatin1(s, n, NULL);
    if (str != NULL)
        Py_XSETREF(CACHED[slot], Py_NewRef(str));
    return str;
}

/* A tag field's slot among the cached names: the four tag names have four lengths. */
static int tag_slot(Py_ssize_t n) { return C_TAG_NAME + (n == 9 ? 0 : n == 13 ? 1 : n == 4 ? 2 : 3); }

struct line {
    const char *name;
    Py_ssize_t name_len;
    const char *value;
    Py_ssize_t value_len;
    enum kind kind; /* set by scan */
};

/* Splits the head at buf[start:] into lines; returns the count and sets *end, or -1 with an
   exception set when the bytes are not a complete head of llhttp's shape. At most ``cap`` lines are
   kept. Past MAX_FIELDS + 1 lines it stops: the count is then MAX_FIELDS + 1 and *end the offset
   after them. */
static Py_ssize_t split_head(const char *buf, Py_ssize_t len, Py_ssize_t start, struct line *lines,
                             Py_ssize_t cap, Py_ssize_t *end) {
    if (start < 0 || start > len)
        goto bad;
    const char *p = buf + start, *stop = buf + len;
    while (p < stop && (*p == '\r' || *p == '\n'))
        p++;
    const char *nl = memchr(p, '\n', (size_t)(stop - p));
    if (nl == NULL)
        goto bad;
    p = nl + 1;
    Py_ssize_t count = 0;
    for (;;) {
        nl = memchr(p, '\n', (size_t)(stop - p));
        if (nl == NULL || nl == p || nl[-1] != '\r')
            goto bad;
        if (nl - 1 == p) {
            *end = nl + 1 - buf;
            return count;
        }
        const char *colon = memchr(p, ':', (size_t)(nl - 1 - p));
        if (colon == NULL)
            goto bad;
        const char *v = colon + 1;
        while (v < nl - 1 && (*v == ' ' || *v == '\t'))
            v++;
        if (count < cap) {
            lines[count].name = p;
            lines[count].name_len = colon - p;
            lines[count].value = v;
            lines[count].value_len = nl - 1 - v;
        }
        count++;
        p = nl + 1;
        if (count > MAX_FIELDS) {
            *end = p - buf;
            return count;
        }
    }
bad:
    PyErr_SetString(PyExc_ValueError, "not a complete response head");
    return -1;
}

/* (name, value) of line ``l``, ``name`` already made (a new reference, taken; NULL: an error set). */
static PyObject *pair_of(PyObject *name, const struct line *l) {
    PyObject *value = name != NULL ? PyUnicode_DecodeLatin1(l->value, l->value_len, NULL) : NULL;
    PyObject *t = value != NULL ? PyTuple_New(2) : NULL;
    if (t == NULL) {
        Py_XDECREF(name);
        Py_XDECREF(value);
        return NULL;
    }
    PyTuple_SET_ITEM(t, 0, name);
    PyTuple_SET_ITEM(t, 1, value);
    return t;
}

static PyObject *field_tuple(const struct line *l) {
    return pair_of(PyUnicode_DecodeLatin1(l->name, l->name_len, NULL), l);
}

/* field_tuple for a tag field, its name from the cache. */
static PyObject *tag_tuple(const struct line *l) {
    return pair_of(latin1_cached(tag_slot(l->name_len), l->name, l->name_len), l);
}

static PyObject *head_fields(PyObject *self, PyObject *args) {
    Py_buffer view;
    Py_ssize_t start;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*n:fields", &view, &start))
        return NULL;
    PyObject *out = NULL, *list = NULL;
    Py_ssize_t end = 0;
    Py_ssize_t count = split_head(view.buf, view.len, start, NULL, 0, &end);
    if (count < 0)
        goto done;
    struct line *lines = PyMem_Malloc(sizeof(struct line) * (size_t)(count ? count : 1));
    if (lines == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    split_head(view.buf, view.len, start, lines, count, &end);
    list = PyList_New(count);
    if (list != NULL) {
        for (Py_ssize_t i = 0; i < count; i++) {
            PyObject *t = field_tuple(&lines[i]);
            if (t == NULL) {
                Py_CLEAR(list);
                break;
            }
            PyList_SET_ITEM(list, i, t);
        }
    }
    PyMem_Free(lines);
    if (list != NULL)
        out = Py_BuildValue("(nN)", end, list);
done:
    PyBuffer_Release(&view);
    return out;
}

/* Appends the latin-1 value of a line to a list made on demand; the list's first value from the
   slot's cache when ``slot`` is not negative. */
static int add_value(PyObject **list, const struct line *l, int slot) {
    int first = *list == NULL;
    if (first && (*list = PyList_New(0)) == NULL)
        return -1;
    PyObject *s = first && slot >= 0 ? latin1_cached(slot, l->value, l->value_len)
                                     : PyUnicode_DecodeLatin1(l->value, l->value_len, NULL);
    if (s == NULL)
        return -1;
    int r = PyList_Append(*list, s);
    Py_DECREF(s);
    return r;
}

static PyObject *or_empty(PyObject *list) { return list != NULL ? list : PyList_New(0); }

/* Whether a field of this kind is in the stored head. */
static int stored(enum kind k) {
    switch (k) {
    case K_SHOWN:
    case K_DATE:
    case K_CACHE_CONTROL:
    case K_LAST_MODIFIED:
    case K_ETAG:
    case K_EXPIRES:
    case K_VARY:
    case K_SET_COOKIE:
        return 1;
    default:
        return 0; /* hop-by-hop, Connection and what it names, tags, Age, Content-Length, CDN-CC */
    }
}

struct framing {
    Py_ssize_t field_bytes;
    unsigned long long length;
    int have_length, chunked;
};

static PyObject *scan_fill(struct line *lines, Py_ssize_t count, struct framing *f);

/* scan's result for a head's lines (see the module). */
static PyObject *scan_lines(struct line *lines, Py_ssize_t count, Py_ssize_t end) {
    struct framing f;
    PyObject *fill = scan_fill(lines, count, &f);
    if (fill == NULL || fill == Py_None)
        return fill;
    PyObject *length = f.have_length ? PyLong_FromUnsignedLongLong(f.length) : Py_NewRef(Py_None);
    if (length == NULL) {
        Py_DECREF(fill);
        return NULL;
    }
    return Py_BuildValue("(nnnNON)", end, count, f.field_bytes, length,
                         f.chunked ? Py_True : Py_False, fill);
}

static PyObject *head_scan(PyObject *self, PyObject *args) {
    Py_buffer view;
    Py_ssize_t start;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*n:scan", &view, &start))
        return NULL;
    PyObject *out = NULL;
    /* Most heads fit the stack's table (2.5 KiB; 3.5 KiB of stack with scan_lines' names, on the
       event loop's thread); a longer one is split again into a block. */
    struct line small[STACK_LINES];
    Py_ssize_t end = 0;
    Py_ssize_t count = split_head(view.buf, view.len, start, small, STACK_LINES, &end);
    if (count < 0)
        goto release;
    if (count > MAX_FIELDS) {
        out = Py_NewRef(Py_None); /* over the limit: the Python path refuses it */
        goto release;
    }
    if (count <= STACK_LINES) {
        out = scan_lines(small, count, end);
        goto release;
    }
    struct line *lines = PyMem_Malloc(sizeof(struct line) * (size_t)count);
    if (lines == NULL) {
        PyErr_NoMemory();
        goto release;
    }
    split_head(view.buf, view.len, start, lines, count, &end);
    out = scan_lines(lines, count, end);
    PyMem_Free(lines);
release:
    PyBuffer_Release(&view);
    return out;
}

/* What a fill reads of a head's lines (the ``fill`` of scan's result), with the framing in *f;
   Py_None (a new reference) for a head left to Python, NULL with an exception set on error. */
static PyObject *scan_fill(struct line *lines, Py_ssize_t count, struct framing *f) {
    /* First pass: kinds, framing, bytes, and the names Connection lists (RFC 9110 §7.6.1). */
    char named[MAX_NAMED][MAX_NAMED_LEN];
    Py_ssize_t named_len[MAX_NAMED];
    int nnamed = 0;
    Py_ssize_t field_bytes = 0;
    unsigned long long length = 0;
    int have_length = 0, chunked = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        struct line *l = &lines[i];
        enum kind k = l->kind = kind_of(l->name, l->name_len);
        field_bytes += l->name_len + l->value_len;
        if (k == K_TE) {
            const char *v = l->value, *e = l->value + l->value_len;
            while (v < e && is_space((unsigned char)*v))
                v++;
            while (e > v && is_space((unsigned char)e[-1]))
                e--;
            if (chunked || !lower_eq(v, e - v, "chunked"))
                return Py_NewRef(Py_None);
            chunked = 1;
        } else if (k == K_CONTENT_LENGTH) {
            const char *v = l->value, *e = l->value + l->value_len;
            while (v < e && is_space((unsigned char)*v))
                v++;
            while (e > v && is_space((unsigned char)e[-1]))
                e--;
            if (v == e || e - v > 18)
                return Py_NewRef(Py_None);
            length = 0;
            for (; v < e; v++) {
                if (*v < '0' || *v > '9')
                    return Py_NewRef(Py_None);
                length = length * 10 + (unsigned long long)(*v - '0');
            }
            have_length = 1;
        } else if (k == K_CONNECTION) {
            const char *v = l->value, *e = l->value + l->value_len;
            while (v <= e) {
                const char *comma = memchr(v, ',', (size_t)(e - v));
                const char *te = comma != NULL ? comma : e;
                const char *ts = v;
                while (ts < te && is_space((unsigned char)*ts))
                    ts++;
                while (te > ts && is_space((unsigned char)te[-1]))
                    te--;
                int ascii = 1;
                for (const char *c = ts; c < te; c++)
                    if ((unsigned char)*c >= 0x80)
                        ascii = 0;
                /* A token with a non-ASCII byte, or an empty one, names no field (names are
                   tokens): taken as a hop-by-hop name, which goes anyway. */
                enum kind tk = ts < te && ascii ? kind_of(ts, te - ts) : K_HOP;
                if (tk == K_SHOWN) {
                    if (nnamed == MAX_NAMED || te - ts >= MAX_NAMED_LEN)
                        return Py_NewRef(Py_None);
                    for (Py_ssize_t j = 0; j < te - ts; j++) {
                        char c = ts[j];
                        named[nnamed][j] = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
                    }
                    named[nnamed][te - ts] = '\0';
                    named_len[nnamed] = te - ts;
                    nnamed++;
                } else if (tk != K_HOP && tk != K_CONNECTION && tk != K_TE) {
                    /* It names a field the fill reads (Cache-Control, Date, a tag...): rare. */
                    return Py_NewRef(Py_None);
                }
                if (comma == NULL)
                    break;
                v = comma + 1;
            }
        }
    }

    /* The fields Connection names go, then the stored head's exact size: one bytes object. */
    Py_ssize_t head_size = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        struct line *l = &lines[i];
        if (nnamed && l->kind == K_SHOWN)
            for (int j = 0; j < nnamed; j++)
                if (named_len[j] == l->name_len && lower_eq(l->name, l->name_len, named[j])) {
                    l->kind = K_NAMED;
                    break;
                }
        if (stored(l->kind))
            head_size += l->name_len + l->value_len + 4;
    }

    /* Second pass: the stored head and what the storage decision reads. */
    PyObject *head = PyBytes_FromStringAndSize(NULL, head_size);
    if (head == NULL)
        return NULL;
    char *w = PyBytes_AS_STRING(head);
    PyObject *cc = NULL, *cdn = NULL, *expires = NULL, *vary = NULL, *tags = NULL;
    PyObject *date = NULL, *last_modified = NULL, *age = NULL;
    int etag = 0, set_cookie = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        const struct line *l = &lines[i];
        switch (l->kind) {
        case K_DATE:
            if (date == NULL && (date = latin1_cached(C_DATE, l->value, l->value_len)) == NULL)
                goto fail;
            break;
        case K_CACHE_CONTROL:
            if (add_value(&cc, l, C_CACHE_CONTROL) < 0)
                goto fail;
            break;
        case K_LAST_MODIFIED:
            if (last_modified == NULL &&
                (last_modified = latin1_cached(C_LAST_MODIFIED, l->value, l->value_len)) == NULL)
                goto fail;
            break;
        case K_ETAG:
            etag = 1;
            break;
        case K_TAG: {
            if (tags == NULL && (tags = PyList_New(0)) == NULL)
                goto fail;
            PyObject *t = tag_tuple(l);
            if (t == NULL || PyList_Append(tags, t) < 0) {
                Py_XDECREF(t);
                goto fail;
            }
            Py_DECREF(t);
            break;
        }
        case K_AGE:
            if (age == NULL && (age = PyUnicode_DecodeLatin1(l->value, l->value_len, NULL)) == NULL)
                goto fail;
            break;
        case K_EXPIRES:
            if (add_value(&expires, l, -1) < 0)
                goto fail;
            break;
        case K_VARY:
            if (add_value(&vary, l, C_VARY) < 0)
                goto fail;
            break;
        case K_SET_COOKIE:
            set_cookie = 1;
            break;
        case K_CDN_CACHE_CONTROL:
            if (add_value(&cdn, l, -1) < 0)
                goto fail;
            break;
        default:
            break;
        }
        if (stored(l->kind)) {
            memcpy(w, l->name, (size_t)l->name_len);
            w += l->name_len;
            *w++ = ':';
            *w++ = ' ';
            memcpy(w, l->value, (size_t)l->value_len);
            w += l->value_len;
            *w++ = '\r';
            *w++ = '\n';
        }
    }
    PyObject *fill = PyTuple_New(11);
    if (fill == NULL)
        goto fail;
    PyObject *items[11] = {head, or_empty(cc), or_empty(cdn), or_empty(expires), or_empty(vary),
                           date ? date : Py_NewRef(Py_None),
                           last_modified ? last_modified : Py_NewRef(Py_None),
                           age ? age : Py_NewRef(Py_None), Py_NewRef(etag ? Py_True : Py_False),
                           Py_NewRef(set_cookie ? Py_True : Py_False), or_empty(tags)};
    int failed = 0;
    for (int i = 0; i < 11; i++) {
        if (items[i] == NULL)
            failed = 1;
        PyTuple_SET_ITEM(fill, i, items[i]);
    }
    if (failed) {
        Py_DECREF(fill);
        return NULL;
    }
    f->field_bytes = field_bytes;
    f->length = length;
    f->have_length = have_length;
    f->chunked = chunked;
    return fill;
fail:
    Py_DECREF(head);
    Py_XDECREF(cc);
    Py_XDECREF(cdn);
    Py_XDECREF(expires);
    Py_XDECREF(vary);
    Py_XDECREF(tags);
    Py_XDECREF(date);
    Py_XDECREF(last_modified);
    Py_XDECREF(age);
    return NULL;
}

/* Whether buf[0:len] begins with a head the fast path may read without llhttp, by rules narrower
   than llhttp's: "HTTP/1.1 " and a status of 200 to 599 other than 204 and 304, SP, a reason
   phrase, CRLF; then at most STACK_LINES lines of a token, ":", OWS and a value, each ending in
   CRLF; then CRLF. Every head it takes llhttp accepts alike (tests/test_origin_fast.py); of the
   fields llhttp reads itself, exactly one Content-Length of 1 to 18 digits, Connection only as
   one "close" or "keep-alive", and no Transfer-Encoding, Upgrade or Proxy-Connection: the framing
   is then the Content-Length, and the connection stays open unless a Connection says close.
   Fills lines, *count, *status, *keep_alive and *end when it returns 1. */
static int strict_head(const char *buf, Py_ssize_t len, struct line *lines, Py_ssize_t *count,
                       int *status, int *keep_alive, Py_ssize_t *end) {
    const unsigned char *p = (const unsigned char *)buf, *stop = p + len;
    if (len < 13 || memcmp(p, "HTTP/1.1 ", 9) != 0 || p[9] < '2' || p[9] > '5' || p[10] < '0' ||
        p[10] > '9' || p[11] < '0' || p[11] > '9' || p[12] != ' ')
        return 0;
    int code = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
    if (code == 204 || code == 304)
        return 0;
    p += 13;
    while (p < stop && VCHAR[*p])
        p++;
    if (stop - p < 2 || p[0] != '\r' || p[1] != '\n')
        return 0;
    p += 2;
    Py_ssize_t n = 0;
    int close = 0, lengths = 0;
    for (;;) {
        const char *nm, *v;
        Py_ssize_t name_len, value_len;
        int got = next_field(&p, stop, &nm, &name_len, &v, &value_len);
        if (got < 0 || (got && n == STACK_LINES))
            return 0;
        if (!got)
            break;
        /* Upgrade is belt-and-braces: llhttp upgrades only on a 101 or with "Connection: upgrade",
           both refused already. Transfer-Encoding changes the framing, and llhttp reads
           Proxy-Connection as it reads Connection, which the keep-alive here does not follow. */
        if ((name_len == 7 && lower_eq(nm, 7, "upgrade")) ||
            (name_len == 16 && lower_eq(nm, 16, "proxy-connection")) ||
            (name_len == 17 && lower_eq(nm, 17, "transfer-encoding")))
            return 0;
        if (name_len == 10 && lower_eq(nm, 10, "connection")) {
            if (lower_eq(v, value_len, "close"))
                close = 1;
            else if (!lower_eq(v, value_len, "keep-alive"))
                return 0;
        } else if (name_len == 14 && lower_eq(nm, 14, "content-length")) {
            if (lengths++ || value_len < 1 || value_len > 18)
                return 0;
            for (Py_ssize_t i = 0; i < value_len; i++)
                if (v[i] < '0' || v[i] > '9')
                    return 0;
        }
        lines[n].name = nm;
        lines[n].name_len = name_len;
        lines[n].value = v;
        lines[n].value_len = value_len;
        n++;
    }
    if (lengths != 1)
        return 0;
    *count = n;
    *status = code;
    *keep_alive = !close;
    *end = (const char *)p - buf;
    return 1;
}

static PyObject *head_response(PyObject *self, PyObject *buf) {
    (void)self;
    if (!PyBytes_Check(buf))
        Py_RETURN_NONE;
    struct line lines[STACK_LINES];
    Py_ssize_t count, end;
    int status, keep_alive;
    if (!strict_head(PyBytes_AS_STRING(buf), PyBytes_GET_SIZE(buf), lines, &count, &status,
                     &keep_alive, &end))
        Py_RETURN_NONE;
    struct framing f;
    PyObject *fill = scan_fill(lines, count, &f);
    if (fill == NULL || fill == Py_None)
        return fill;
    if (f.field_bytes > MAX_HEAD) {
        Py_DECREF(fill); /* the limit's error is the connection's to give */
        Py_RETURN_NONE;
    }
    PyObject *length = PyLong_FromUnsignedLongLong(f.length);
    PyObject *out = PyTuple_New(5);
    PyObject *items[5] = {PyLong_FromSsize_t(end), PyLong_FromLong(status),
                          Py_NewRef(keep_alive ? Py_True : Py_False), length, fill};
    int failed = out == NULL;
    for (int i = 0; i < 5; i++) {
        if (items[i] == NULL)
            failed = 1;
        if (out != NULL)
            PyTuple_SET_ITEM(out, i, items[i]);
        else
            Py_XDECREF(items[i]);
    }
    if (failed) {
        Py_XDECREF(out);
        return NULL;
    }
    return out;
}

static PyMethodDef methods[] = {
    {"fields", head_fields, METH_VARARGS, "fields(buf, start) -> (end, [(name, value), ...])"},
    {"scan", head_scan, METH_VARARGS, "scan(buf, start) -> what a fill reads, or None (see the module)"},
    {"response", head_response, METH_O, "response(read) -> a final head read without llhttp, or None"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "edgecache.edge._originhead",
    .m_doc = "An origin response's head from its raw bytes (decision 0024): fields() and scan() read a "
             "head llhttp has accepted; response() reads and validates, by rules narrower than "
             "llhttp's, a whole final head llhttp has not seen (origin_conn's rule 9).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__originhead(void) {
    init_kinds();
    init_field_tables();
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && (PyModule_AddIntConstant(m, "MAX_FIELDS", MAX_FIELDS) < 0 ||
                      PyModule_AddIntConstant(m, "MAX_HEAD", MAX_HEAD) < 0))
        Py_CLEAR(m);
    return m;
}
