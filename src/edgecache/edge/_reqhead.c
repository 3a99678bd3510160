/* A client's request head, read from its raw bytes without llhttp (decision 0031).

Why in C: through httptools, every request costs a Python call per piece of its target, one per
field (on_header, with two bytes objects), then on_headers_complete and on_message_complete, each
deciding again what the head holds. A whole head of an ordinary shape at the start of a read is read
here in one pass into the Request the callbacks would have built.

HeadReader(request_type, max_line, max_count, max_bytes).read(data, start, client_ip) -> None or
    (end, request): the head at data[start:] when it is whole and of the narrow shape below, as a
    Request (http1.Request, its slots set as http1's callbacks set them), and the offset after it.
    None for anything else, which the caller then feeds to llhttp as before.

The shape: "GET " or "HEAD "; an origin-form target ("/" then RFC 3986's unreserved, sub-delims,
":", "@", "/", "?" and "%": no "#", no SP, no CTL, no other byte); " HTTP/1.1" CRLF; at most
MAX_LINES lines of a token, ":", SP/HTAB, a value of HTAB, SP, visible ASCII and obs-text, CRLF;
CRLF. Exactly one Host; at most one Connection, whose value is exactly "close" or "keep-alive" (any
case); no Content-Length, Transfer-Encoding, Expect, Upgrade or Proxy-Connection; within the
server's limits (the request line, the field count, the bytes of names and values counted as
on_header counts them). Its checks must stay narrower than llhttp's and the callbacks', not try to
match them: a head taken here is never shown to llhttp, so one they would refuse or read otherwise
would reach the handler unchecked, while one left to them costs only their parse. Every head taken
is one llhttp and the callbacks accept with the same method, target, fields, version and
keep-alive (tests/test_reqhead.py holds it to their verdict). */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <string.h>

#include "_fieldline.h"

/* Lines read on the C stack; a head with more is left to llhttp (the server's default limit is
   100 fields, a browser sends about 15). */
#define MAX_LINES 64

static unsigned char URLCHAR[256];

static void init_tables(void) {
    init_field_tables();
    for (int c = 0; c < 256; c++) {
        int alnum = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
        URLCHAR[c] = alnum || (c != 0 && strchr("-._~!$&'()*+,;=:@/?%", c) != NULL);
    }
}

enum kind {
    K_OTHER,
    K_HOST,
    K_CONNECTION,
    K_NOT_PLAIN, /* http1._NOT_PLAIN: Request.plain is False */
    K_REFUSED,   /* framing, Expect, Upgrade, Proxy-Connection: left to llhttp and the callbacks */
};

struct name_kind {
    const char *name;
    Py_ssize_t len;
    enum kind kind;
};

#define KIND(name, kind) {name, sizeof(name) - 1, kind}

/* http1._WATCHED, each as this reader treats it; tests/test_reqhead.py checks the lists agree. */
static const struct name_kind KINDS[] = {
    KIND("host", K_HOST),
    KIND("connection", K_CONNECTION),
    KIND("authorization", K_NOT_PLAIN),
    KIND("if-match", K_NOT_PLAIN),
    KIND("if-modified-since", K_NOT_PLAIN),
    KIND("if-none-match", K_NOT_PLAIN),
    KIND("if-range", K_NOT_PLAIN),
    KIND("if-unmodified-since", K_NOT_PLAIN),
    KIND("range", K_NOT_PLAIN),
    KIND("content-length", K_REFUSED),
    KIND("transfer-encoding", K_REFUSED),
    KIND("expect", K_REFUSED),
    KIND("upgrade", K_REFUSED),
    KIND("proxy-connection", K_REFUSED),
};

#define NKINDS (sizeof(KINDS) / sizeof(KINDS[0]))

static enum kind kind_of(const char *name, Py_ssize_t n) {
    /* The watched names are 4 to 19 bytes long; a name is compared only with those of its length. */
    if (n < 4 || n > 19)
        return K_OTHER;
    for (size_t i = 0; i < NKINDS; i++)
        if (KINDS[i].len == n && lower_eq(name, n, KINDS[i].name))
            return KINDS[i].kind;
    return K_OTHER;
}

struct line {
    const char *name;
    Py_ssize_t name_len;
    const char *value;
    Py_ssize_t value_len;
};

/* The Request's slots set here, in the order their offsets are kept: all but ``raw``, which
   on_message_complete's Request does not have either until the access log sets it. */
enum slot { S_METHOD, S_TARGET, S_BODY, S_VERSION, S_KEEP_ALIVE, S_CLIENT_IP, S_HOST, S_PLAIN,
            S_FIELDS, S_HEADERS, NSLOTS };
static const char *const SLOT_NAMES[NSLOTS] = {
    "method", "target", "body", "http_version", "keep_alive", "client_ip", "host", "plain",
    "_fields", "_headers"};

typedef struct {
    PyObject_HEAD
    PyTypeObject *type;
    Py_ssize_t at[NSLOTS];
    Py_ssize_t max_line, max_count, max_bytes;
    PyObject *last_host; /* the Host of the last request read (a str), kept for the next */
} HeadReader;

static PyObject *s_get, *s_head, *s_version, *s_empty;

static int reader_init(HeadReader *self, PyObject *args, PyObject *kwds) {
    /* Everything is read into locals and kept only once the whole type checks out: a second
       __init__ that failed half-way would otherwise leave another type's offsets next to the
       type read() allocates (a write past the Request, found in review). */
    PyTypeObject *type;
    Py_ssize_t at_of[NSLOTS], max_line, max_count, max_bytes;
    if (kwds != NULL && PyDict_GET_SIZE(kwds)) {
        PyErr_SetString(PyExc_TypeError, "HeadReader takes no keyword arguments");
        return -1;
    }
    if (!PyArg_ParseTuple(args, "O!nnn:HeadReader", &PyType_Type, &type, &max_line, &max_count,
                          &max_bytes))
        return -1;
    for (int i = 0; i < NSLOTS; i++) {
        PyObject *descr = PyObject_GetAttrString((PyObject *)type, SLOT_NAMES[i]);
        Py_ssize_t at = -1;
        if (descr == NULL) {
            PyErr_Clear();
        } else {
            if (Py_IS_TYPE(descr, &PyMemberDescr_Type) && PyDescr_TYPE(descr) == type) {
                PyMemberDef *member = ((PyMemberDescrObject *)descr)->d_member;
                if (member->type == T_OBJECT_EX)
                    at = member->offset;
            }
            Py_DECREF(descr);
        }
        if (at < 0) {
            PyErr_Format(PyExc_TypeError, "%s is not a slot of the request type", SLOT_NAMES[i]);
            return -1;
        }
        at_of[i] = at;
    }
    memcpy(self->at, at_of, sizeof at_of);
    self->max_line = max_line;
    self->max_count = max_count;
    self->max_bytes = max_bytes;
    Py_XSETREF(self->type, (PyTypeObject *)Py_NewRef(type));
    return 0;
}

static void reader_dealloc(HeadReader *self) {
    Py_XDECREF(self->type);
    Py_XDECREF(self->last_host);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* A field's name as on_header's caller records it: lower case (a token is ASCII). */
static PyObject *lower_name(const char *name, Py_ssize_t n) {
    PyObject *s = PyUnicode_New(n, 127);
    if (s == NULL)
        return NULL;
    Py_UCS1 *w = PyUnicode_1BYTE_DATA(s);
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        w[i] = (c >= 'A' && c <= 'Z') ? (Py_UCS1)(c + 32) : c;
    }
    return s;
}

/* Host as the callbacks record it: the value without trailing SP/HTAB, latin-1; the last one's str
   again when the bytes are the same (one client, or a few hosts, per server as a rule). */
static PyObject *host_of(HeadReader *self, const char *v, Py_ssize_t n) {
    while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t'))
        n--;
    PyObject *last = self->last_host;
    if (last != NULL && PyUnicode_GET_LENGTH(last) == n && PyUnicode_KIND(last) == PyUnicode_1BYTE_KIND &&
        memcmp(PyUnicode_1BYTE_DATA(last), v, (size_t)n) == 0)
        return Py_NewRef(last);
    PyObject *host = PyUnicode_DecodeLatin1(v, n, NULL);
    if (host != NULL)
        Py_XSETREF(self->last_host, Py_NewRef(host));
    return host;
}

/* Whether data[start:len] begins with a head of the shape; fills the lines and the rest then. */
static int narrow_head(const HeadReader *self, const char *buf, Py_ssize_t len, Py_ssize_t start,
                       PyObject **method, const char **target, Py_ssize_t *target_len,
                       struct line *lines, Py_ssize_t *count, Py_ssize_t *host, int *plain,
                       int *close, Py_ssize_t *end) {
    const unsigned char *p = (const unsigned char *)buf + start, *stop = (const unsigned char *)buf + len;
    Py_ssize_t method_len;
    if (stop - p >= 4 && memcmp(p, "GET ", 4) == 0) {
        *method = s_get;
        method_len = 3;
    } else if (stop - p >= 5 && memcmp(p, "HEAD ", 5) == 0) {
        *method = s_head;
        method_len = 4;
    } else {
        return 0;
    }
    p += method_len + 1;
    const unsigned char *t = p;
    if (p == stop || *p != '/')
        return 0;
    while (p < stop && URLCHAR[*p])
        p++;
    if (method_len + 1 + (p - t) > self->max_line || stop - p < 11 || memcmp(p, " HTTP/1.1\r\n", 11) != 0)
        return 0;
    *target = (const char *)t;
    *target_len = p - t;
    p += 11;
    Py_ssize_t n = 0, bytes = 0;
    int connections = 0;
    *host = -1;
    *plain = 1;
    *close = 0;
    for (;;) {
        const char *nm, *v;
        Py_ssize_t name_len, value_len;
        int got = next_field(&p, stop, &nm, &name_len, &v, &value_len);
        if (got < 0 || (got && n == MAX_LINES))
            return 0;
        if (!got)
            break;
        /* on_header's count: over either limit the callbacks answer 431. */
        bytes += name_len + value_len + 4;
        if (n + 1 > self->max_count || bytes > self->max_bytes)
            return 0;
        switch (kind_of(nm, name_len)) {
        case K_HOST:
            if (*host >= 0)
                return 0;
            *host = n;
            break;
        case K_CONNECTION:
            if (connections++)
                return 0;
            if (lower_eq(v, value_len, "close"))
                *close = 1;
            else if (!lower_eq(v, value_len, "keep-alive"))
                return 0;
            break;
        case K_NOT_PLAIN:
            *plain = 0;
            break;
        case K_REFUSED:
            return 0;
        case K_OTHER:
            break;
        }
        lines[n].name = nm;
        lines[n].name_len = name_len;
        lines[n].value = v;
        lines[n].value_len = value_len;
        n++;
    }
    if (*host < 0)
        return 0;
    *count = n;
    *end = (const char *)p - buf;
    return 1;
}

#define SET(slot, value) (*(PyObject **)((char *)req + self->at[slot]) = (value))

static PyObject *reader_read(HeadReader *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "read(data, start, client_ip)");
        return NULL;
    }
    PyObject *data = args[0], *client_ip = args[2];
    if (!PyBytes_Check(data) || self->type == NULL)
        Py_RETURN_NONE;
    Py_ssize_t start = PyLong_AsSsize_t(args[1]);
    if (start == -1 && PyErr_Occurred())
        return NULL;
    Py_ssize_t len = PyBytes_GET_SIZE(data);
    if (start < 0 || start > len) {
        PyErr_SetString(PyExc_ValueError, "start is outside the data");
        return NULL;
    }
    const char *buf = PyBytes_AS_STRING(data);
    struct line lines[MAX_LINES];
    PyObject *method;
    const char *target;
    Py_ssize_t target_len, count, host_line, end;
    int plain, close;
    if (!narrow_head(self, buf, len, start, &method, &target, &target_len, lines, &count, &host_line,
                     &plain, &close, &end))
        Py_RETURN_NONE;

    PyObject *fields = PyList_New(count);
    if (fields == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < count; i++) {
        const struct line *l = &lines[i];
        PyObject *name = lower_name(l->name, l->name_len);
        PyObject *value = name != NULL ? PyBytes_FromStringAndSize(l->value, l->value_len) : NULL;
        PyObject *field = value != NULL ? PyTuple_New(2) : NULL;
        if (field == NULL) {
            Py_XDECREF(name);
            Py_XDECREF(value);
            Py_DECREF(fields);
            return NULL;
        }
        PyTuple_SET_ITEM(field, 0, name);
        PyTuple_SET_ITEM(field, 1, value);
        PyList_SET_ITEM(fields, i, field);
    }
    PyObject *target_str = PyUnicode_DecodeLatin1(target, target_len, NULL);
    PyObject *host = target_str != NULL
                         ? host_of(self, lines[host_line].value, lines[host_line].value_len)
                         : NULL;
    PyObject *req = host != NULL ? self->type->tp_alloc(self->type, 0) : NULL;
    PyObject *at = req != NULL ? PyLong_FromSsize_t(end) : NULL;
    PyObject *out = at != NULL ? PyTuple_New(2) : NULL;
    if (out == NULL) {
        Py_XDECREF(at);
        Py_XDECREF(req);
        Py_XDECREF(host);
        Py_XDECREF(target_str);
        Py_DECREF(fields);
        return NULL;
    }
    SET(S_METHOD, Py_NewRef(method));
    SET(S_TARGET, target_str);
    SET(S_BODY, Py_NewRef(s_empty));
    SET(S_VERSION, Py_NewRef(s_version));
    SET(S_KEEP_ALIVE, Py_NewRef(close ? Py_False : Py_True));
    SET(S_CLIENT_IP, Py_NewRef(client_ip));
    SET(S_HOST, host);
    SET(S_PLAIN, Py_NewRef(plain ? Py_True : Py_False));
    SET(S_FIELDS, fields);
    SET(S_HEADERS, Py_NewRef(Py_None));
    PyTuple_SET_ITEM(out, 0, at);
    PyTuple_SET_ITEM(out, 1, req);
    return out;
}

static PyMethodDef reader_methods[] = {
    {"read", (PyCFunction)(void (*)(void))reader_read, METH_FASTCALL,
     "read(data, start, client_ip) -> (end, request) for a whole head of the narrow shape at "
     "data[start:], else None"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject HeadReaderType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "edgecache.edge._reqhead.HeadReader",
    .tp_basicsize = sizeof(HeadReader),
    .tp_dealloc = (destructor)reader_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Reads a server's ordinary request heads without llhttp (decision 0031).",
    .tp_methods = reader_methods,
    .tp_init = (initproc)reader_init,
    .tp_new = PyType_GenericNew,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "edgecache.edge._reqhead",
    .m_doc = "A client's request head of an ordinary shape, read without llhttp (decision 0031).",
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__reqhead(void) {
    init_tables();
    if (PyType_Ready(&HeadReaderType) < 0)
        return NULL;
    if (s_get == NULL) {
        s_get = PyUnicode_InternFromString("GET");
        s_head = PyUnicode_InternFromString("HEAD");
        s_version = PyUnicode_InternFromString("1.1");
        s_empty = PyBytes_FromStringAndSize(NULL, 0);
        if (s_get == NULL || s_head == NULL || s_version == NULL || s_empty == NULL)
            return NULL;
    }
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "HeadReader", (PyObject *)&HeadReaderType) < 0 ||
        PyModule_AddIntConstant(m, "MAX_LINES", MAX_LINES) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
