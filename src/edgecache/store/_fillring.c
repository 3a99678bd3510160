/* The fill ring's appending side: encodes a cache entry as its disk record straight into the
 * process's shared-memory fill ring (decision 0020, addendum of 2026-11-30 in 0017 and 0020; the
 * ring's format and publication rules are in fillring.py's theory of operation, the record's in
 * disk_layout.py's encode_entry, and fillring.PyAppender is the same thing in Python).
 *
 * Written in C because every miss with the disk tier pays for it on the event loop: in Python the
 * record's 14-field struct pack, its join, the copy into the ring, the CRC and the header words
 * cost the loop 3-4 us per miss measured in place (bench/miss_inprocess.py), most of it
 * interpreter overhead; here it is one call, the attribute reads, one copy and a CRC-32C.
 *
 * The record's check is CRC-32C, here on both sides: the appender seals with it and the fill
 * writer checks with `checked` (decision 0020, addendum of branch crc32c).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "../_crc32c.h"

/* Ring layout: must match fillring.py. */
#define HEADER_SIZE 256
#define MAGIC "ECFILL\x00\x02" /* fillring.MAGIC: its last byte is the format's version */
#define MAGIC_SIZE 8
#define CAPACITY_AT 8
#define HEAD_AT 16
#define APPENDED_AT 24
#define COMMITTED_AT 48
#define ASLEEP_AT 128 /* _COUNTERS (64) + 8 * len(COUNTERS) (7) + 8 */
#define REC_SIZE 12   /* payload length u32, CRC-32C u32, flags u8, 3 bytes of padding */
#define F_RESERVE 1   /* fillring.RESERVE_FLAG: the fill goes to its zone's reserve too */
#define ALIGN 16
#define WRAP 0xFFFFFFFFu

/* Record layout: must match disk_layout.py's REC ("<HqdddddddBHIHI"), then zone, key, tags
 * (NUL-joined), head, body. */
#define FIXED 79
#define F_MUST_REVALIDATE 1
#define F_NO_CACHE 2
#define F_AUTH_OK 4
#define F_LENGTH_KNOWN 8

typedef struct {
    PyObject_HEAD
    Py_buffer view;
    int has_view;
    unsigned char *header;
    unsigned char *data;
    uint64_t capacity;
    uint64_t mask;
    uint64_t head;
    uint64_t appended;
    uint64_t committed; /* the last value read: it only grows, so it is read again only when short */
} Appender;

static PyObject *struct_error;
static PyObject *s_zone, *s_key, *s_status, *s_head, *s_body, *s_tags, *s_stored_seq,
    *s_response_time, *s_initial_age, *s_freshness_lifetime, *s_swr, *s_sie, *s_must_revalidate,
    *s_no_cache, *s_auth_ok, *s_length_known, *s_stale_since;

/* Where one attribute of an entry lives: a __slots__ member (a dataclass with slots=True, as Entry
 * is) is read straight from the object at its offset, where PyObject_GetAttr looks the name up
 * in the type first (sixteen reads per fill, ~2.4k instructions: decision 0020's addendum of
 * branch missloop3). Learnt from the type of the entry read, and trusted while the type is that
 * one with the same version tag (CPython gives a type a new tag whenever it or a base changes, and
 * never reuses one within an interpreter: from 3.12 tags are per interpreter, and these caches are
 * the process's, so one interpreter appends, as in the node). Anything else is read through
 * PyObject_GetAttr, as before: no member descriptor, a type with its own getattro, an unset slot,
 * and a member getattr would not read at its offset as it stands (one of a type the object's is
 * not, which getattr refuses with TypeError; one audited on read; from 3.12 one with a relative
 * offset). */
typedef struct {
    PyObject **name;
    PyTypeObject *type; /* compared only, with `version`: not a reference */
    unsigned int version;
    Py_ssize_t offset; /* -1: not a slot of `type` */
} Slot;

static Slot a_zone = {&s_zone, NULL, 0, -1}, a_key = {&s_key, NULL, 0, -1},
            a_status = {&s_status, NULL, 0, -1}, a_head = {&s_head, NULL, 0, -1},
            a_body = {&s_body, NULL, 0, -1}, a_tags = {&s_tags, NULL, 0, -1},
            a_stored_seq = {&s_stored_seq, NULL, 0, -1},
            a_response_time = {&s_response_time, NULL, 0, -1},
            a_initial_age = {&s_initial_age, NULL, 0, -1},
            a_freshness_lifetime = {&s_freshness_lifetime, NULL, 0, -1},
            a_swr = {&s_swr, NULL, 0, -1}, a_sie = {&s_sie, NULL, 0, -1},
            a_must_revalidate = {&s_must_revalidate, NULL, 0, -1},
            a_no_cache = {&s_no_cache, NULL, 0, -1}, a_auth_ok = {&s_auth_ok, NULL, 0, -1},
            a_length_known = {&s_length_known, NULL, 0, -1},
            a_stale_since = {&s_stale_since, NULL, 0, -1};

/* Whether `tp` holds a version tag now: CPython drops it whenever the type or a base changes. From
 * 3.12 a tag of 0 says so (3.13 no longer keeps Py_TPFLAGS_VALID_VERSION_TAG up to date). */
static inline int has_version(PyTypeObject *tp) {
#if PY_VERSION_HEX >= 0x030C0000
    return tp->tp_version_tag != 0;
#else
    return PyType_HasFeature(tp, Py_TPFLAGS_VALID_VERSION_TAG);
#endif
}

#ifdef Py_RELATIVE_OFFSET
#define NOT_AT_OFFSET (PY_AUDIT_READ | Py_RELATIVE_OFFSET)
#else
#define NOT_AT_OFFSET PY_AUDIT_READ
#endif

/* The offset getattr reads `descr` at in an object of type `tp`, or -1 when it would not read it
 * from there alone (see Slot). */
static Py_ssize_t member_offset(PyTypeObject *tp, PyObject *descr) {
    if (descr == NULL || !Py_IS_TYPE(descr, &PyMemberDescr_Type))
        return -1;
    PyMemberDef *member = ((PyMemberDescrObject *)descr)->d_member;
    if (member->type != T_OBJECT_EX || (member->flags & NOT_AT_OFFSET) ||
        !PyType_IsSubtype(tp, PyDescr_TYPE(descr)))
        return -1;
    return member->offset;
}

/* The attribute `slot` names of `obj`, a new reference (NULL with an exception set). */
static PyObject *slot_get(PyObject *obj, Slot *slot) {
    PyTypeObject *tp = Py_TYPE(obj);
    if (tp != slot->type || tp->tp_version_tag != slot->version || !has_version(tp)) {
        slot->type = NULL;
        slot->offset = -1;
        if (tp->tp_getattro == PyObject_GenericGetAttr) {
            PyObject *descr = _PyType_Lookup(tp, *slot->name); /* borrowed; tags the type */
            if (has_version(tp)) {
                slot->offset = member_offset(tp, descr);
                slot->type = tp;
                slot->version = tp->tp_version_tag;
            }
        }
    }
    if (slot->offset >= 0) {
        PyObject *v = *(PyObject **)((char *)obj + slot->offset);
        if (v != NULL)
            return Py_NewRef(v);
    }
    return PyObject_GetAttr(obj, *slot->name);
}


static inline uint64_t load64(const unsigned char *p) {
    uint64_t v = __atomic_load_n((const uint64_t *)p, __ATOMIC_ACQUIRE);
#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

/* A header word the fill writer polls: one aligned store, ordered after every store before it. */
static inline void publish64(unsigned char *p, uint64_t v) {
#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    __atomic_store_n((uint64_t *)p, v, __ATOMIC_RELEASE);
}

static inline void put16(unsigned char *p, uint16_t v) {
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
}

static inline void put32(unsigned char *p, uint32_t v) {
    put16(p, (uint16_t)v);
    put16(p + 2, (uint16_t)(v >> 16));
}

static inline void put64(unsigned char *p, uint64_t v) {
    put32(p, (uint32_t)v);
    put32(p + 4, (uint32_t)(v >> 32));
}

static inline void putd(unsigned char *p, double d) {
    uint64_t v;
    memcpy(&v, &d, 8);
    put64(p, v);
}

/* Where a record of `need` bytes (head included, aligned) goes: its offset in the data area, with
 * the wrap mark written when it would cross the end; -1 when the fill writer has not committed
 * enough for it. */
static int64_t reserve_room(Appender *self, uint64_t need) {
    uint64_t at = self->head & self->mask;
    uint64_t room = self->capacity - at;
    uint64_t wrap = need > room ? room : 0;
    if (self->head + wrap + need - self->committed > self->capacity) {
        self->committed = load64(self->header + COMMITTED_AT);
        if (self->head + wrap + need - self->committed > self->capacity)
            return -1;
    }
    if (wrap) {
        unsigned char *mark = self->data + at;
        put32(mark, WRAP);
        memset(mark + 4, 0, REC_SIZE - 4);
        self->head += wrap;
        at = 0;
    }
    return (int64_t)at;
}

/* Seal the record written at `at` (its head and CRC-32C) and publish it: the record count, then the
 * head, each one release store. Returns whether the fill writer sleeps: its wake is the caller's
 * (the event loop defers it until its answers are out: decision 0020's addendum on the wake). */
static int seal(Appender *self, uint64_t at, uint64_t size, uint64_t need, unsigned char flags) {
    unsigned char *rec = self->data + at;
    put32(rec, (uint32_t)size);
    put32(rec + 4, crc32c(0, rec + REC_SIZE, (size_t)size));
    rec[8] = flags;
    rec[9] = rec[10] = rec[11] = 0;
    self->head += need;
    self->appended += 1;
    publish64(self->header + APPENDED_AT, self->appended);
    publish64(self->header + HEAD_AT, self->head);
    /* Both sides store their word then read the other's; the fill writer's wait has a timeout for
     * the wake this may still miss on its side (fillring.py). */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    return load64(self->header + ASLEEP_AT) != 0;
}

static inline uint64_t aligned(uint64_t n) { return (REC_SIZE + n + ALIGN - 1) & ~(uint64_t)(ALIGN - 1); }

static int check_open(Appender *self) {
    if (!self->has_view) {
        PyErr_SetString(PyExc_ValueError, "the fill ring is released");
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(append_doc, "append(payload, flags, /)\n--\n\nAdd one record with its flags (a byte): "
                         "1 when added, 2 when added and the fill writer sleeps (the caller wakes "
                         "it), 0 when the ring has no room for it (nothing written).");

static PyObject *Appender_append(Appender *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "append(payload, flags) takes 2 arguments");
        return NULL;
    }
    if (check_open(self) < 0)
        return NULL;
    long flags = PyLong_AsLong(args[1]);
    if (flags == -1 && PyErr_Occurred())
        return NULL;
    if (flags < 0 || flags > 0xFF) {
        PyErr_SetString(PyExc_ValueError, "a record's flags are one byte");
        return NULL;
    }
    Py_buffer payload;
    if (PyObject_GetBuffer(args[0], &payload, PyBUF_SIMPLE) < 0)
        return NULL;
    uint64_t size = (uint64_t)payload.len;
    uint64_t need = aligned(size);
    int64_t at = size >= WRAP ? -1 : reserve_room(self, need);
    if (at < 0) {
        PyBuffer_Release(&payload);
        return PyLong_FromLong(0);
    }
    memcpy(self->data + at + REC_SIZE, payload.buf, size);
    int sleeping = seal(self, (uint64_t)at, size, need, (unsigned char)flags);
    PyBuffer_Release(&payload);
    return PyLong_FromLong(sleeping ? 2 : 1);
}

/* One attribute as a double (None: NaN, for stale_since). */
static int attr_double(PyObject *entry, Slot *name, double *out, int none_is_nan) {
    PyObject *v = slot_get(entry, name);
    if (v == NULL)
        return -1;
    if (none_is_nan && v == Py_None) {
        *out = NAN;
    } else {
        *out = PyFloat_AsDouble(v);
        if (*out == -1.0 && PyErr_Occurred()) {
            Py_DECREF(v);
            return -1;
        }
    }
    Py_DECREF(v);
    return 0;
}

static int attr_flag(PyObject *entry, Slot *name, int flag, int *flags) {
    PyObject *v = slot_get(entry, name);
    if (v == NULL)
        return -1;
    int t = PyObject_IsTrue(v);
    Py_DECREF(v);
    if (t < 0)
        return -1;
    if (t)
        *flags |= flag;
    return 0;
}

/* The parts of a record that are Python objects, each held as bytes until the record is written. */
typedef struct {
    PyObject *zone, *key, *tags, *head, *body; /* the latter two: the entry's own bytes */
    Py_buffer head_view, body_view;
    int views;
} Parts;

static void parts_release(Parts *p) {
    if (p->views > 0)
        PyBuffer_Release(&p->head_view);
    if (p->views > 1)
        PyBuffer_Release(&p->body_view);
    Py_XDECREF(p->zone);
    Py_XDECREF(p->key);
    Py_XDECREF(p->tags);
    Py_XDECREF(p->head);
    Py_XDECREF(p->body);
}

/* str.encode() of an attribute (with `errors`, as encode_entry does). */
static PyObject *attr_encoded(PyObject *entry, Slot *name, const char *errors) {
    PyObject *v = slot_get(entry, name);
    if (v == NULL)
        return NULL;
    if (!PyUnicode_Check(v)) {
        PyErr_Format(PyExc_TypeError, "%U must be a str", *name->name);
        Py_DECREF(v);
        return NULL;
    }
    PyObject *b = PyUnicode_AsEncodedString(v, "utf-8", errors);
    Py_DECREF(v);
    return b;
}

static PyObject *joined_tags(PyObject *entry) {
    PyObject *tags = slot_get(entry, &a_tags);
    if (tags == NULL)
        return NULL;
    PyObject *out;
    if (PyTuple_Check(tags) && PyTuple_GET_SIZE(tags) == 0) {
        out = PyBytes_FromStringAndSize(NULL, 0);
    } else {
        PyObject *sep = PyUnicode_FromOrdinal(0);
        PyObject *text = sep == NULL ? NULL : PyUnicode_Join(sep, tags);
        Py_XDECREF(sep);
        out = text == NULL ? NULL : PyUnicode_AsEncodedString(text, "utf-8", "strict");
        Py_XDECREF(text);
    }
    Py_DECREF(tags);
    return out;
}

PyDoc_STRVAR(append_entry_doc,
             "append_entry(entry, reserve, max_record, /)\n--\n\nAdd an entry's disk record "
             "(encode_entry's, with no reserve expiry): 1 when added, 2 when added and the fill "
             "writer sleeps (the caller wakes it: not done here), 0 when the ring has no room for "
             "it, -1 when the record is larger than max_record (nothing written).");

static PyObject *Appender_append_entry(Appender *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "append_entry(entry, reserve, max_record) takes 3 arguments");
        return NULL;
    }
    if (check_open(self) < 0)
        return NULL;
    PyObject *entry = args[0];
    int reserve = PyObject_IsTrue(args[1]);
    if (reserve < 0)
        return NULL;
    unsigned long long max_record = PyLong_AsUnsignedLongLong(args[2]);
    if (max_record == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;

    PyObject *result = NULL;
    Parts p = {0};
    long status;
    long long stored_seq;
    double times[7];
    int flags = 0;
    PyObject *v;

    if ((v = slot_get(entry, &a_status)) == NULL)
        goto done;
    status = PyLong_AsLong(v);
    Py_DECREF(v);
    if (status == -1 && PyErr_Occurred())
        goto done;
    if ((v = slot_get(entry, &a_stored_seq)) == NULL)
        goto done;
    stored_seq = PyLong_AsLongLong(v);
    Py_DECREF(v);
    if (stored_seq == -1 && PyErr_Occurred())
        goto done;
    if (attr_double(entry, &a_response_time, &times[0], 0) < 0 ||
        attr_double(entry, &a_initial_age, &times[1], 0) < 0 ||
        attr_double(entry, &a_freshness_lifetime, &times[2], 0) < 0 ||
        attr_double(entry, &a_swr, &times[3], 0) < 0 || attr_double(entry, &a_sie, &times[4], 0) < 0 ||
        attr_double(entry, &a_stale_since, &times[5], 1) < 0)
        goto done;
    times[6] = 0.0; /* reserve_expires: the writer sets the reserve copy's own */
    if (attr_flag(entry, &a_must_revalidate, F_MUST_REVALIDATE, &flags) < 0 ||
        attr_flag(entry, &a_no_cache, F_NO_CACHE, &flags) < 0 ||
        attr_flag(entry, &a_auth_ok, F_AUTH_OK, &flags) < 0 ||
        attr_flag(entry, &a_length_known, F_LENGTH_KNOWN, &flags) < 0)
        goto done;
    if ((p.zone = attr_encoded(entry, &a_zone, "strict")) == NULL ||
        (p.key = attr_encoded(entry, &a_key, "surrogatepass")) == NULL ||
        (p.tags = joined_tags(entry)) == NULL || (p.head = slot_get(entry, &a_head)) == NULL ||
        (p.body = slot_get(entry, &a_body)) == NULL)
        goto done;
    if (PyObject_GetBuffer(p.head, &p.head_view, PyBUF_SIMPLE) < 0)
        goto done;
    p.views = 1;
    if (PyObject_GetBuffer(p.body, &p.body_view, PyBUF_SIMPLE) < 0)
        goto done;
    p.views = 2;

    Py_ssize_t zlen = PyBytes_GET_SIZE(p.zone), klen = PyBytes_GET_SIZE(p.key),
               tlen = PyBytes_GET_SIZE(p.tags), hlen = p.head_view.len, blen = p.body_view.len;
    /* The ranges struct.pack enforces in encode_entry, refused with its exception type
     * (struct.error, another message). A field no C type holds (an int beyond 64 bits, a value
     * that is not a number) raised OverflowError or TypeError above, where encode_entry raises
     * struct.error: either way the entry is refused and nothing is written. */
    if (status < 0 || status > 0xFFFF || zlen > 0xFFFF || tlen > 0xFFFF ||
        (unsigned long long)klen > 0xFFFFFFFFull || (unsigned long long)hlen > 0xFFFFFFFFull) {
        PyErr_SetString(struct_error, "a field of the record is out of its range");
        goto done;
    }
    uint64_t size = FIXED + (uint64_t)zlen + (uint64_t)klen + (uint64_t)tlen + (uint64_t)hlen + (uint64_t)blen;
    if (size > max_record) {
        result = PyLong_FromLong(-1);
        goto done;
    }
    uint64_t need = aligned(size);
    int64_t at = reserve_room(self, need);
    if (at < 0) {
        result = PyLong_FromLong(0);
        goto done;
    }
    unsigned char *w = self->data + at + REC_SIZE;
    put16(w, (uint16_t)status);
    put64(w + 2, (uint64_t)stored_seq);
    for (int i = 0; i < 7; i++)
        putd(w + 10 + 8 * i, times[i]);
    w[66] = (unsigned char)flags;
    put16(w + 67, (uint16_t)zlen);
    put32(w + 69, (uint32_t)klen);
    put16(w + 73, (uint16_t)tlen);
    put32(w + 75, (uint32_t)hlen);
    w += FIXED;
    memcpy(w, PyBytes_AS_STRING(p.zone), (size_t)zlen);
    w += zlen;
    memcpy(w, PyBytes_AS_STRING(p.key), (size_t)klen);
    w += klen;
    memcpy(w, PyBytes_AS_STRING(p.tags), (size_t)tlen);
    w += tlen;
    memcpy(w, p.head_view.buf, (size_t)hlen);
    w += hlen;
    memcpy(w, p.body_view.buf, (size_t)blen);
    result = PyLong_FromLong(seal(self, (uint64_t)at, size, need, reserve ? F_RESERVE : 0) ? 2 : 1);
done:
    parts_release(&p);
    return result;
}

PyDoc_STRVAR(release_doc, "release()\n--\n\nLet go of the ring's memory (so that its mmap can "
                          "close); an append after it raises ValueError.");

static PyObject *Appender_release(Appender *self, PyObject *Py_UNUSED(ignored)) {
    if (self->has_view) {
        self->has_view = 0;
        PyBuffer_Release(&self->view);
    }
    Py_RETURN_NONE;
}

static int Appender_init(Appender *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"ring", NULL};
    PyObject *ring;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O", kwlist, &ring))
        return -1;
    if (self->has_view) {
        PyErr_SetString(PyExc_RuntimeError, "Appender is already initialised");
        return -1;
    }
    if (PyObject_GetBuffer(ring, &self->view, PyBUF_WRITABLE) < 0)
        return -1;
    unsigned char *header = self->view.buf;
    /* Aligned first: the header words are read and written with 8-byte atomics. */
    uint64_t capacity =
        self->view.len >= HEADER_SIZE && !((uintptr_t)header & 7) ? load64(header + CAPACITY_AT) : 0;
    if (capacity == 0 || capacity & (capacity - 1) || (uint64_t)self->view.len < HEADER_SIZE + capacity) {
        PyBuffer_Release(&self->view);
        PyErr_SetString(PyExc_ValueError, "not a fill ring's memory");
        return -1;
    }
    /* A ring of another format (another CRC, other fields) is refused, not appended to: its fill
     * writer would find no record matching its check (or misread one). */
    if (memcmp(header, MAGIC, MAGIC_SIZE) != 0) {
        int version = header[MAGIC_SIZE - 1];
        int ring = memcmp(header, MAGIC, MAGIC_SIZE - 1) == 0;
        PyBuffer_Release(&self->view);
        if (ring)
            PyErr_Format(PyExc_ValueError,
                         "a fill ring of format version %d, where this appender writes version %d",
                         version, (unsigned char)MAGIC[MAGIC_SIZE - 1]);
        else
            PyErr_SetString(PyExc_ValueError, "not a fill ring's memory");
        return -1;
    }
    self->has_view = 1;
    self->header = header;
    self->data = header + HEADER_SIZE;
    self->capacity = capacity;
    self->mask = capacity - 1;
    self->head = load64(header + HEAD_AT);
    self->appended = load64(header + APPENDED_AT);
    self->committed = load64(header + COMMITTED_AT);
    return 0;
}

static void Appender_dealloc(Appender *self) {
    if (self->has_view)
        PyBuffer_Release(&self->view);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Appender_get_head(Appender *self, void *Py_UNUSED(closure)) {
    return PyLong_FromUnsignedLongLong(self->head);
}

static PyObject *Appender_get_appended(Appender *self, void *Py_UNUSED(closure)) {
    return PyLong_FromUnsignedLongLong(self->appended);
}

PyDoc_STRVAR(crc32c_doc, "crc32c(data, /)\n--\n\nThe CRC-32C of `data` (a bytes-like object), by "
                         "the CPU's instruction where it has one (HARDWARE), as a record is sealed.");

static PyObject *crc_of(PyObject *const *args, Py_ssize_t nargs, uint32_t (*crc)(uint32_t, const unsigned char *, size_t)) {
    if (nargs != 1) {
        PyErr_SetString(PyExc_TypeError, "takes 1 argument (data)");
        return NULL;
    }
    Py_buffer data;
    if (PyObject_GetBuffer(args[0], &data, PyBUF_SIMPLE) < 0)
        return NULL;
    uint32_t c = crc(0, data.buf, (size_t)data.len);
    PyBuffer_Release(&data);
    return PyLong_FromUnsignedLong(c);
}

static PyObject *crc32c_py(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs) {
    return crc_of(args, nargs, crc32c);
}

PyDoc_STRVAR(crc32c_portable_doc, "crc32c_portable(data, /)\n--\n\nThe CRC-32C of `data` by tables "
                                  "alone: what crc32c computes on a CPU without the instruction.");

static PyObject *crc32c_portable(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs) {
    return crc_of(args, nargs, crc_tables);
}

PyDoc_STRVAR(checked_doc,
             "checked(ring, start, size, crc, /)\n--\n\nThe `size` bytes at `start` of `ring` (a "
             "buffer: the fill ring's map), copied, when their CRC-32C is `crc`; else None (a "
             "record not all written yet, or damaged; also one that would end past the buffer).");

/* The fill writer's check of a record: the CRC over the ring's bytes in place, then the one copy
 * the record needs anyway (LMDB stores it), so the reader makes no copy that it might discard. */
static PyObject *checked(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "checked(ring, start, size, crc) takes 4 arguments");
        return NULL;
    }
    Py_ssize_t start = PyLong_AsSsize_t(args[1]);
    if (start == -1 && PyErr_Occurred())
        return NULL;
    Py_ssize_t size = PyLong_AsSsize_t(args[2]);
    if (size == -1 && PyErr_Occurred())
        return NULL;
    unsigned long crc = PyLong_AsUnsignedLong(args[3]);
    if (crc == (unsigned long)-1 && PyErr_Occurred())
        return NULL;
    Py_buffer ring;
    if (PyObject_GetBuffer(args[0], &ring, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *out;
    if (start < 0 || size < 0 || start > ring.len || size > ring.len - start ||
        crc32c(0, (const unsigned char *)ring.buf + start, (size_t)size) != crc) {
        out = Py_NewRef(Py_None);
    } else {
        out = PyBytes_FromStringAndSize((const char *)ring.buf + start, size);
    }
    PyBuffer_Release(&ring);
    return out;
}

static PyMethodDef module_methods[] = {
    {"crc32c", (PyCFunction)(void (*)(void))crc32c_py, METH_FASTCALL, crc32c_doc},
    {"crc32c_portable", (PyCFunction)(void (*)(void))crc32c_portable, METH_FASTCALL, crc32c_portable_doc},
    {"checked", (PyCFunction)(void (*)(void))checked, METH_FASTCALL, checked_doc},
    {NULL, NULL, 0, NULL},
};

static PyMethodDef Appender_methods[] = {
    {"append", (PyCFunction)(void (*)(void))Appender_append, METH_FASTCALL, append_doc},
    {"append_entry", (PyCFunction)(void (*)(void))Appender_append_entry, METH_FASTCALL, append_entry_doc},
    {"release", (PyCFunction)Appender_release, METH_NOARGS, release_doc},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Appender_getset[] = {
    {"head", (getter)Appender_get_head, NULL, "The position after the last record appended.", NULL},
    {"appended", (getter)Appender_get_appended, NULL, "Records appended so far.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject AppenderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "edgecache.store._fillring.Appender",
    .tp_doc = PyDoc_STR("Appender(ring): the appending side of the fill ring mapped at `ring` "
                        "(header included)."),
    .tp_basicsize = sizeof(Appender),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Appender_init,
    .tp_dealloc = (destructor)Appender_dealloc,
    .tp_methods = Appender_methods,
    .tp_getset = Appender_getset,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "edgecache.store._fillring",
    .m_doc = "The fill ring's appending side and its record check (decision 0020).",
    .m_size = -1,
    .m_methods = module_methods,
};

static int intern(PyObject **slot, const char *name) {
    *slot = PyUnicode_InternFromString(name);
    return *slot == NULL ? -1 : 0;
}

PyMODINIT_FUNC PyInit__fillring(void) {
    crc_init();
    if (PyType_Ready(&AppenderType) < 0)
        return NULL;
    if (intern(&s_zone, "zone") < 0 || intern(&s_key, "key") < 0 || intern(&s_status, "status") < 0 ||
        intern(&s_head, "head") < 0 || intern(&s_body, "body") < 0 || intern(&s_tags, "tags") < 0 ||
        intern(&s_stored_seq, "stored_seq") < 0 || intern(&s_response_time, "response_time") < 0 ||
        intern(&s_initial_age, "initial_age") < 0 ||
        intern(&s_freshness_lifetime, "freshness_lifetime") < 0 ||
        intern(&s_swr, "stale_while_revalidate") < 0 || intern(&s_sie, "stale_if_error") < 0 ||
        intern(&s_must_revalidate, "must_revalidate") < 0 || intern(&s_no_cache, "no_cache") < 0 ||
        intern(&s_auth_ok, "auth_ok") < 0 || intern(&s_length_known, "length_known") < 0 ||
        intern(&s_stale_since, "stale_since") < 0)
        return NULL;
    PyObject *st = PyImport_ImportModule("struct");
    if (st == NULL)
        return NULL;
    struct_error = PyObject_GetAttrString(st, "error");
    Py_DECREF(st);
    if (struct_error == NULL)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&AppenderType);
    if (PyModule_AddObject(m, "Appender", (PyObject *)&AppenderType) < 0) {
        Py_DECREF(&AppenderType);
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddObjectRef(m, "HARDWARE", crc32c == crc_tables ? Py_False : Py_True) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
