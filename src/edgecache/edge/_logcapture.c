/* The access log's capture: packs one record per answered request into a batch buffer and copies
 * full batches into the process's shared-memory ring (decision 0017; the ring's format and
 * publication rules are in logring.py's theory of operation).
 *
 * Written in C because a fresh hit's whole budget for its log record is a few thousand machine
 * instructions (5% of a hit), and a Python-level function call with its argument handling takes a
 * good part of that alone. Here a hit costs one C call, two attribute reads, one clock read and a
 * memcpy of the bytes its request arrived in; no Python object is created.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "../_crc32c.h"

/* Ring file layout: must match logring.py. */
#define HEADER_SIZE 256
#define HEAD_AT 24
#define SEGMENTS 8
#define SEGMENTS_AT 72
#define BATCH_HEADER 24 /* crc u32, size u32, first seq u64, records u32, payload bytes u32 */
#define ALIGN 32
#define BATCH_RECORDS 64
#define MAX_BATCH (256 * 1024)
#define MAX_FIELD 4096
#define MAX_SHORT 255

/* Record layout (little-endian): must match logring.py. */
/* End first: a fresh hit's record but its first 8 bytes is the same for every repeat of the same
 * request and answer, which the formatter keys its remembered lines on. */
#define REC_FIXED 24 /* end i64, sent u64, size u16, kind u8, form u8, status 3 bytes, ip length u8 */
#define REC_SIZE_AT 16
#define REC_TIMES 17 /* start i64, head i64, cache length u8 (kind OTHER only) */
#define KIND_HIT 0
#define KIND_OTHER 1
#define FORM_RAW 0
#define FORM_VALUES 1
#define VALUES 6 /* method, target, version, host, referer, user-agent */
#define MAX_RECORD (REC_FIXED + REC_TIMES + 2 * MAX_SHORT + VALUES * (2 + MAX_FIELD))
#define BATCH_ROOM (MAX_BATCH - BATCH_HEADER - ALIGN)
_Static_assert(MAX_RECORD <= BATCH_ROOM, "a record always fits in an empty batch");
_Static_assert(MAX_RECORD <= 0xffff, "a record's size fits its u16");

typedef struct {
    PyObject_HEAD
    Py_buffer view;
    int has_view;
    unsigned char *ring; /* the data area, after the header */
    unsigned char *header;
    uint64_t capacity;
    uint64_t mask;
    uint64_t head;
    uint64_t seq;
    int64_t segment;
    int segment_shift;
    PyObject *on_batch;
    PyTypeObject *req_type; /* the request type the two offsets below are for (-1: by name) */
    Py_ssize_t raw_at;
    Py_ssize_t ip_at;
    unsigned char *batch;
    uint32_t used;
    uint32_t count;
} Capture;

static PyObject *s_raw, *s_client_ip, *s_method, *s_target, *s_http_version, *s_fields;

static inline void put16(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
}

static inline void put32(unsigned char *p, uint32_t v) {
    put16(p, v & 0xffff);
    put16(p + 2, v >> 16);
}

static inline void put64(unsigned char *p, uint64_t v) {
    put32(p, (uint32_t)v);
    put32(p + 4, (uint32_t)(v >> 32));
}

/* A header word a reader in another process polls: one aligned store (never seen half-written),
 * ordered after every store before it. */
static inline void publish64(unsigned char *p, uint64_t v) {
#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    __atomic_store_n((uint64_t *)p, v, __ATOMIC_RELEASE);
}

static inline int64_t now_ns(void) {
    struct timespec ts;
    /* The clock of Python's time.monotonic() on Linux, shared by every process of the machine. */
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}


/* A batch's header (its commit word) at `at`, after its payload: the CRC-32C covers the rest of
 * the header and the payload, so a reader that copies a batch still being written (or overwritten)
 * rejects it. */
static void commit(unsigned char *at, uint32_t size, uint64_t seq, uint32_t count,
                   const unsigned char *payload, uint32_t length) {
    unsigned char header[BATCH_HEADER];
    put32(header + 4, size);
    put64(header + 8, seq);
    put32(header + 16, count);
    put32(header + 20, length);
    put32(header, crc32c(crc32c(0, header + 4, BATCH_HEADER - 4), payload, length));
    __atomic_thread_fence(__ATOMIC_RELEASE);
    memcpy(at, header, BATCH_HEADER);
}

static void write_batch(Capture *self) {
    uint32_t length = self->used;
    uint32_t size = (BATCH_HEADER + length + ALIGN - 1) & ~(uint32_t)(ALIGN - 1);
    uint64_t pos = self->head;
    uint64_t off = pos & self->mask;
    if (off + size > self->capacity) {
        commit(self->ring + off, 0, self->seq, 0, NULL, 0);
        pos += self->capacity - off;
        off = 0;
    }
    int64_t segment = (int64_t)(pos >> self->segment_shift);
    if (segment != self->segment) {
        self->segment = segment;
        publish64(self->header + SEGMENTS_AT + (segment % SEGMENTS) * 8, pos);
    }
    memcpy(self->ring + off + BATCH_HEADER, self->batch, length);
    commit(self->ring + off, size, self->seq, self->count, self->batch, length);
    self->seq += self->count;
    self->head = pos + size;
    publish64(self->header + HEAD_AT, self->head);
    publish64(self->header + HEAD_AT + 8, self->seq);
    self->used = 0;
    self->count = 0;
}

/* Room for a record of `size` bytes in the batch, copying the batch into the ring first if full. */
static unsigned char *reserve(Capture *self, uint32_t size) {
    if (self->used + size > BATCH_ROOM)
        write_batch(self);
    return self->batch + self->used;
}

/* Count the record just written; a full batch goes to the ring, a batch's first record arms the
 * owner's timer (so a small batch is not kept long). */
static void appended(Capture *self, uint32_t size) {
    self->used += size;
    self->count += 1;
    if (self->count >= BATCH_RECORDS) {
        write_batch(self);
    } else if (self->count == 1 && self->on_batch != NULL && self->on_batch != Py_None) {
        PyObject *r = PyObject_CallNoArgs(self->on_batch);
        if (r == NULL)
            /* Not the answer's failure: the batch then waits until it is full or flushed. */
            PyErr_WriteUnraisable(self->on_batch);
        Py_XDECREF(r);
    }
}

/* A str value's bytes as received (the server decodes them as latin-1: one byte per character). */
static const char *text_bytes(PyObject *value, Py_ssize_t *len) {
    if (!PyUnicode_Check(value)) {
        *len = 0;
        return "";
    }
    if (PyUnicode_KIND(value) == PyUnicode_1BYTE_KIND) {
        *len = PyUnicode_GET_LENGTH(value);
        return (const char *)PyUnicode_1BYTE_DATA(value);
    }
    const char *utf8 = PyUnicode_AsUTF8AndSize(value, len);
    if (utf8 == NULL) {
        PyErr_Clear();
        *len = 0;
        return "";
    }
    return utf8;
}

static int name_is(PyObject *key, const char *name, Py_ssize_t len) {
    return PyUnicode_Check(key) && PyUnicode_KIND(key) == PyUnicode_1BYTE_KIND &&
           PyUnicode_GET_LENGTH(key) == len && memcmp(PyUnicode_1BYTE_DATA(key), name, len) == 0;
}

typedef struct {
    const char *data[VALUES];
    Py_ssize_t len[VALUES];
    PyObject *refs[4]; /* method, target, version, fields: held while the record is written */
} Values;

static void values_release(Values *v) {
    for (int i = 0; i < 4; i++)
        Py_XDECREF(v->refs[i]);
}

/* The request's method, target, version and the last of each of its Host, Referer and User-Agent
 * fields (repeated ones are not joined, as Request.headers would), each cut to MAX_FIELD bytes. */
static int values_of(PyObject *req, Values *v) {
    PyObject *names[4] = {s_method, s_target, s_http_version, s_fields};
    for (int i = 0; i < 4; i++)
        v->refs[i] = NULL;
    for (int i = 0; i < 4; i++) {
        v->refs[i] = PyObject_GetAttr(req, names[i]);
        if (v->refs[i] == NULL) {
            values_release(v);
            return -1;
        }
    }
    for (int i = 0; i < 3; i++)
        v->data[i] = text_bytes(v->refs[i], &v->len[i]);
    for (int i = 3; i < VALUES; i++) {
        v->data[i] = "";
        v->len[i] = 0;
    }
    PyObject *fields = v->refs[3];
    if (PyList_Check(fields)) {
        Py_ssize_t n = PyList_GET_SIZE(fields);
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *pair = PyList_GET_ITEM(fields, i);
            if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2)
                continue;
            PyObject *key = PyTuple_GET_ITEM(pair, 0), *value = PyTuple_GET_ITEM(pair, 1);
            if (!PyBytes_Check(value))
                continue;
            int slot = name_is(key, "host", 4)         ? 3
                       : name_is(key, "referer", 7)    ? 4
                       : name_is(key, "user-agent", 10) ? 5
                                                        : -1;
            if (slot >= 0) {
                v->data[slot] = PyBytes_AS_STRING(value);
                v->len[slot] = PyBytes_GET_SIZE(value);
            }
        }
    }
    for (int i = 0; i < VALUES; i++)
        if (v->len[i] > MAX_FIELD)
            v->len[i] = MAX_FIELD;
    return 0;
}

/* Append one record. `raw` is the read the request's head began (NULL: write its values);
 * `times` is NULL for a fresh hit. */
static int append(Capture *self, int64_t end, const int64_t *times, const char *cache,
                  Py_ssize_t cache_len, uint64_t sent, const char *status, Py_ssize_t status_len,
                  PyObject *ip, PyObject *raw, Values *values) {
    Py_ssize_t ip_len;
    const char *ip_data = text_bytes(ip, &ip_len);
    if (ip_len > MAX_SHORT)
        ip_len = MAX_SHORT;
    if (cache_len > MAX_SHORT)
        cache_len = MAX_SHORT;
    uint32_t size = REC_FIXED + (uint32_t)ip_len;
    if (times != NULL)
        size += REC_TIMES + (uint32_t)cache_len;
    Py_ssize_t raw_len = 0;
    if (raw != NULL) {
        raw_len = PyBytes_GET_SIZE(raw);
        size += 2 + (uint32_t)raw_len;
    } else {
        for (int i = 0; i < VALUES; i++)
            size += 2 + (uint32_t)values->len[i];
    }
    /* Gathering the request may have run Python code (a property, a finalizer) that closed the
     * ring since the caller's check: nothing to write into then. */
    if (!self->has_view)
        return 0;
    unsigned char *p = reserve(self, size);
    put64(p, (uint64_t)end);
    put64(p + 8, sent);
    put16(p + 16, size);
    p[18] = times == NULL ? KIND_HIT : KIND_OTHER;
    p[19] = raw != NULL ? FORM_RAW : FORM_VALUES;
    p[20] = p[21] = p[22] = 0;
    memcpy(p + 20, status, status_len < 3 ? (size_t)status_len : 3);
    p[23] = (unsigned char)ip_len;
    p += REC_FIXED;
    if (times != NULL) {
        put64(p, (uint64_t)times[0]);
        put64(p + 8, (uint64_t)times[1]);
        p[16] = (unsigned char)cache_len;
        memcpy(p + REC_TIMES, cache, cache_len);
        p += REC_TIMES + cache_len;
    }
    memcpy(p, ip_data, ip_len);
    p += ip_len;
    if (raw != NULL) {
        put16(p, (uint32_t)raw_len);
        memcpy(p + 2, PyBytes_AS_STRING(raw), raw_len);
    } else {
        for (int i = 0; i < VALUES; i++) {
            put16(p, (uint32_t)values->len[i]);
            memcpy(p + 2, values->data[i], values->len[i]);
            p += 2 + values->len[i];
        }
    }
    appended(self, size);
    return 0;
}

/* Whether `raw` (the read a request's head began, or None) can stand for the request: it begins
 * with the request's method (not with the rest of a method split over two reads, nor with empty
 * lines), and is short enough to copy whole. A fresh hit is GET or HEAD, so its method is known
 * from the first byte's G or H without reading it. */
static int raw_usable(PyObject *req, PyObject *raw, int hit) {
    if (!PyBytes_Check(raw))
        return 0;
    Py_ssize_t len = PyBytes_GET_SIZE(raw);
    const char *data = PyBytes_AS_STRING(raw);
    if (len > MAX_FIELD || len == 0)
        return 0;
    if (hit)
        return data[0] == 'G' || data[0] == 'H';
    PyObject *method = PyObject_GetAttr(req, s_method);
    if (method == NULL)
        return -1;
    Py_ssize_t mlen;
    const char *m = text_bytes(method, &mlen);
    int ok = len > mlen && memcmp(data, m, mlen) == 0 && data[mlen] == ' ';
    Py_DECREF(method);
    return ok;
}

/* Where a type keeps attribute `name` in its instances, if it is a __slots__ member (-1 if not). */
static Py_ssize_t slot_offset(PyTypeObject *type, PyObject *name) {
    PyObject *descr = PyObject_GetAttr((PyObject *)type, name);
    if (descr == NULL) {
        PyErr_Clear();
        return -1;
    }
    Py_ssize_t at = -1;
    /* Only a slot of the type or of a base: another class's descriptor (assigned as an attribute)
     * would give an offset that is not this object's. */
    if (Py_IS_TYPE(descr, &PyMemberDescr_Type) && PyType_IsSubtype(type, PyDescr_TYPE(descr))) {
        PyMemberDef *member = ((PyMemberDescrObject *)descr)->d_member;
        if (member->type == T_OBJECT_EX)
            at = member->offset;
    }
    Py_DECREF(descr);
    return at;
}

/* `req.<name>`: read straight from its slot when its type is the one learnt (a generic attribute
 * lookup costs a hit about 150 instructions each, a slot read one). */
static PyObject *attribute(PyObject *req, Py_ssize_t at, PyObject *name) {
    if (at >= 0) {
        PyObject *value = *(PyObject **)((char *)req + at);
        if (value != NULL)
            return Py_NewRef(value);
    }
    return PyObject_GetAttr(req, name);
}

static int record_request(Capture *self, PyObject *req, int64_t end, const int64_t *times,
                          const char *cache, Py_ssize_t cache_len, uint64_t sent, const char *status,
                          Py_ssize_t status_len) {
    if (Py_TYPE(req) != self->req_type) {
        Py_XSETREF(self->req_type, (PyTypeObject *)Py_NewRef(Py_TYPE(req)));
        self->raw_at = slot_offset(self->req_type, s_raw);
        self->ip_at = slot_offset(self->req_type, s_client_ip);
    }
    PyObject *raw = attribute(req, self->raw_at, s_raw);
    if (raw == NULL)
        return -1;
    PyObject *ip = attribute(req, self->ip_at, s_client_ip);
    if (ip == NULL) {
        Py_DECREF(raw);
        return -1;
    }
    int rc;
    int usable = raw_usable(req, raw, times == NULL);
    if (usable < 0) {
        rc = -1;
    } else if (usable) {
        rc = append(self, end, times, cache, cache_len, sent, status, status_len, ip, raw, NULL);
    } else {
        Values values;
        rc = values_of(req, &values);
        if (rc == 0) {
            rc = append(self, end, times, cache, cache_len, sent, status, status_len, ip, NULL,
                        &values);
            values_release(&values);
        }
    }
    Py_DECREF(ip);
    Py_DECREF(raw);
    return rc;
}

PyDoc_STRVAR(hit_doc, "hit(req, data)\n--\n\n"
                      "Record a fresh hit answered at once with `data` (its whole response).");

static PyObject *Capture_hit(Capture *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyBytes_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "hit(req, data: bytes)");
        return NULL;
    }
    if (!self->has_view)
        Py_RETURN_NONE; /* a connection still answering while the node stops: nothing to keep */
    PyObject *data = args[1];
    Py_ssize_t len = PyBytes_GET_SIZE(data);
    Py_ssize_t status_len = len >= 12 ? 3 : len > 9 ? len - 9 : 0;
    const char *status = status_len > 0 ? PyBytes_AS_STRING(data) + 9 : "";
    if (record_request(self, args[0], now_ns(), NULL, NULL, 0, (uint64_t)len, status, status_len) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static int64_t seconds_ns(double t) { return (int64_t)(t * 1e9); }

PyDoc_STRVAR(add_doc,
             "add(req, end, start, head_at, cache, sent, status)\n--\n\n"
             "Record any other answer: monotonic times in seconds, the cache status and the "
             "status digits as sent.");

static PyObject *Capture_add(Capture *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 7 || !PyBytes_Check(args[4]) || !PyBytes_Check(args[6])) {
        PyErr_SetString(PyExc_TypeError,
                        "add(req, end: float, start: float, head_at: float, cache: bytes, "
                        "sent: int, status: bytes)");
        return NULL;
    }
    if (!self->has_view)
        Py_RETURN_NONE;
    double end = PyFloat_AsDouble(args[1]);
    double start = PyFloat_AsDouble(args[2]);
    double head_at = PyFloat_AsDouble(args[3]);
    unsigned long long sent = PyLong_AsUnsignedLongLong(args[5]);
    if (PyErr_Occurred())
        return NULL;
    int64_t times[2] = {seconds_ns(start), seconds_ns(head_at)};
    if (record_request(self, args[0], seconds_ns(end), times, PyBytes_AS_STRING(args[4]),
                       PyBytes_GET_SIZE(args[4]), sent, PyBytes_AS_STRING(args[6]),
                       PyBytes_GET_SIZE(args[6])) < 0)
        return NULL;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(flush_doc, "flush()\n--\n\nCopy the batch gathered so far into the ring.");

static PyObject *Capture_flush(Capture *self, PyObject *Py_UNUSED(ignored)) {
    if (self->has_view && self->count)
        write_batch(self);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(release_doc, "release()\n--\n\nLet go of the ring's memory (what is not flushed is "
                          "dropped), so that its mmap can be closed.");

static PyObject *Capture_release(Capture *self, PyObject *Py_UNUSED(ignored)) {
    if (self->has_view) {
        PyBuffer_Release(&self->view);
        self->has_view = 0;
        self->ring = self->header = NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *Capture_get_head(Capture *self, void *Py_UNUSED(closure)) {
    return PyLong_FromUnsignedLongLong(self->head);
}

static PyObject *Capture_get_seq(Capture *self, void *Py_UNUSED(closure)) {
    return PyLong_FromUnsignedLongLong(self->seq);
}

static PyObject *Capture_get_pending(Capture *self, void *Py_UNUSED(closure)) {
    return PyLong_FromUnsignedLong(self->count);
}

static int Capture_init(Capture *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"ring", "capacity", "on_batch", NULL};
    PyObject *ring, *on_batch;
    unsigned long long capacity;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OKO", kwlist, &ring, &capacity, &on_batch))
        return -1;
    if (self->has_view) {
        PyErr_SetString(PyExc_RuntimeError, "Capture is already initialised");
        return -1;
    }
    if (capacity & (capacity - 1) || capacity < 4 * (unsigned long long)MAX_BATCH) {
        PyErr_SetString(PyExc_ValueError, "capacity must be a power of two of at least 1 MiB");
        return -1;
    }
    if (on_batch != Py_None && !PyCallable_Check(on_batch)) {
        PyErr_SetString(PyExc_TypeError, "on_batch must be callable or None");
        return -1;
    }
    if (PyObject_GetBuffer(ring, &self->view, PyBUF_WRITABLE) < 0)
        return -1;
    if ((unsigned long long)self->view.len < HEADER_SIZE + capacity) {
        PyBuffer_Release(&self->view);
        PyErr_SetString(PyExc_ValueError, "the ring's memory is smaller than its capacity");
        return -1;
    }
    self->batch = PyMem_Malloc(MAX_BATCH);
    if (self->batch == NULL) {
        PyBuffer_Release(&self->view);
        PyErr_NoMemory();
        return -1;
    }
    self->has_view = 1;
    self->header = self->view.buf;
    self->ring = self->header + HEADER_SIZE;
    self->capacity = capacity;
    self->mask = capacity - 1;
    self->head = self->seq = 0;
    self->segment = -1;
    self->segment_shift = 0;
    while ((1ULL << (self->segment_shift + 1)) <= capacity / SEGMENTS)
        self->segment_shift++;
    Py_INCREF(on_batch);
    self->on_batch = on_batch;
    self->used = self->count = 0;
    self->raw_at = self->ip_at = -1;
    return 0;
}

static int Capture_traverse(Capture *self, visitproc visit, void *arg) {
    Py_VISIT(self->on_batch);
    Py_VISIT(self->req_type);
    return 0;
}

static int Capture_clear(Capture *self) {
    Py_CLEAR(self->on_batch);
    Py_CLEAR(self->req_type);
    return 0;
}

static void Capture_dealloc(Capture *self) {
    PyObject_GC_UnTrack(self);
    Capture_clear(self);
    if (self->has_view)
        PyBuffer_Release(&self->view);
    PyMem_Free(self->batch);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

PyDoc_STRVAR(checksum_doc, "checksum(data, crc=0, /)\n--\n\n"
                           "The CRC-32C of `data`, continuing `crc` (the check of a batch).");

static PyObject *checksum(PyObject *Py_UNUSED(module), PyObject *args) {
    Py_buffer data;
    unsigned int crc = 0;
    if (!PyArg_ParseTuple(args, "y*|I", &data, &crc))
        return NULL;
    uint32_t c = crc32c(crc, data.buf, (size_t)data.len);
    PyBuffer_Release(&data);
    return PyLong_FromUnsignedLong(c);
}

PyDoc_STRVAR(split_doc, "split(payload, count, /)\n--\n\n"
                        "A batch's payload as its `count` records (bytes each), or None if it does "
                        "not hold exactly that many whole records.");

static PyObject *split(PyObject *Py_UNUSED(module), PyObject *args) {
    Py_buffer payload;
    Py_ssize_t count;
    if (!PyArg_ParseTuple(args, "y*n", &payload, &count))
        return NULL;
    const unsigned char *p = payload.buf;
    Py_ssize_t length = payload.len, at = 0, i = 0;
    PyObject *records = count >= 0 && count <= length / REC_FIXED ? PyList_New(count) : NULL;
    if (records == NULL) {
        PyBuffer_Release(&payload);
        if (PyErr_Occurred())
            return NULL;
        Py_RETURN_NONE;
    }
    for (; i < count && at + REC_FIXED <= length; i++) {
        Py_ssize_t size = p[at + REC_SIZE_AT] | (Py_ssize_t)p[at + REC_SIZE_AT + 1] << 8;
        if (size < REC_FIXED || at + size > length)
            break;
        PyObject *record = PyBytes_FromStringAndSize((const char *)p + at, size);
        if (record == NULL) {
            Py_DECREF(records);
            PyBuffer_Release(&payload);
            return NULL;
        }
        PyList_SET_ITEM(records, i, record);
        at += size;
    }
    PyBuffer_Release(&payload);
    if (i < count || at != length) {
        Py_DECREF(records);
        Py_RETURN_NONE;
    }
    return records;
}

static PyMethodDef module_methods[] = {
    {"checksum", checksum, METH_VARARGS, checksum_doc},
    {"split", split, METH_VARARGS, split_doc},
    {NULL, NULL, 0, NULL},
};

static PyMethodDef Capture_methods[] = {
    {"hit", (PyCFunction)(void (*)(void))Capture_hit, METH_FASTCALL, hit_doc},
    {"add", (PyCFunction)(void (*)(void))Capture_add, METH_FASTCALL, add_doc},
    {"flush", (PyCFunction)Capture_flush, METH_NOARGS, flush_doc},
    {"release", (PyCFunction)Capture_release, METH_NOARGS, release_doc},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Capture_getset[] = {
    {"head", (getter)Capture_get_head, NULL, "Absolute byte position of the ring's next batch.", NULL},
    {"seq", (getter)Capture_get_seq, NULL, "Records copied into the ring so far.", NULL},
    {"pending", (getter)Capture_get_pending, NULL, "Records in the batch not copied yet.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject CaptureType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "edgecache.edge._logcapture.Capture",
    .tp_doc = PyDoc_STR("Capture(ring, capacity, on_batch): the writing side of one access-log "
                        "ring mapped at `ring` (header included)."),
    .tp_basicsize = sizeof(Capture),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Capture_init,
    .tp_dealloc = (destructor)Capture_dealloc,
    .tp_traverse = (traverseproc)Capture_traverse,
    .tp_clear = (inquiry)Capture_clear,
    .tp_methods = Capture_methods,
    .tp_getset = Capture_getset,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "edgecache.edge._logcapture",
    .m_doc = "The access log's record capture (decision 0017).",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC PyInit__logcapture(void) {
    crc_init();
    if (PyType_Ready(&CaptureType) < 0)
        return NULL;
    s_raw = PyUnicode_InternFromString("raw");
    s_client_ip = PyUnicode_InternFromString("client_ip");
    s_method = PyUnicode_InternFromString("method");
    s_target = PyUnicode_InternFromString("target");
    s_http_version = PyUnicode_InternFromString("http_version");
    s_fields = PyUnicode_InternFromString("_fields");
    if (!s_raw || !s_client_ip || !s_method || !s_target || !s_http_version || !s_fields)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddIntConstant(m, "MAX_BATCH", MAX_BATCH) < 0 ||
        PyModule_AddIntConstant(m, "MAX_FIELD", MAX_FIELD) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&CaptureType);
    if (PyModule_AddObject(m, "Capture", (PyObject *)&CaptureType) < 0) {
        Py_DECREF(&CaptureType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
