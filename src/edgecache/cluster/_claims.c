/* Atomic words in shared memory: the fill claims of a node's workers and their fills' outcomes
 * (cluster/fill_locks.py, decision 0028). Python has no compare-and-swap on a mapping; this module
 * gives one, with the loads and stores that pair with it, on a range of 64-bit words of a buffer
 * (the position board's mmap); and the keyed hash (SipHash-2-4) that makes a key's claim token,
 * which hashlib's BLAKE2b made in 0.55 us per miss.
 *
 * Every access is bounds-checked here: a SharedWords refuses a range that is not inside its buffer
 * or not 8-byte aligned, and every call an index outside the range, so no offset from Python can
 * reach memory outside the words it was given. The buffer is held (PyObject_GetBuffer) until
 * release(), so its mmap cannot be closed under it.
 *
 * Ordering: cas and clear are sequentially consistent; store is a release and load an acquire, so a
 * word stored before a claim is released by cas is seen by whoever sees the claim gone.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    PyObject_HEAD
    Py_buffer view;
    int has_view;
    uint64_t *words;
    Py_ssize_t count;
} SharedWords;

static int SharedWords_init(SharedWords *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"buffer", "offset", "count", NULL};
    PyObject *buffer;
    Py_ssize_t offset, count;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "Onn", kwlist, &buffer, &offset, &count))
        return -1;
    if (self->has_view) {
        PyErr_SetString(PyExc_ValueError, "SharedWords is already initialised");
        return -1;
    }
    if (PyObject_GetBuffer(buffer, &self->view, PyBUF_WRITABLE) < 0)
        return -1;
    self->has_view = 1;
    if (offset < 0 || count < 0 || offset % 8 != 0 || offset > self->view.len ||
        count > (self->view.len - offset) / 8) {
        PyErr_Format(PyExc_ValueError,
                     "%zd words at offset %zd do not fit a buffer of %zd bytes (8-aligned offset)",
                     count, offset, self->view.len);
        PyBuffer_Release(&self->view);
        self->has_view = 0;
        return -1;
    }
    self->words = (uint64_t *)((char *)self->view.buf + offset);
    if ((uintptr_t)self->words % 8 != 0) {
        PyErr_SetString(PyExc_ValueError, "the words are not 8-byte aligned in memory");
        PyBuffer_Release(&self->view);
        self->has_view = 0;
        return -1;
    }
    self->count = count;
    return 0;
}

/* The word at args[0], bounds-checked; NULL with an exception set when refused. */
static uint64_t *word_at(SharedWords *self, PyObject *const *args) {
    if (!self->has_view) {
        PyErr_SetString(PyExc_ValueError, "the shared words are released");
        return NULL;
    }
    Py_ssize_t index = PyLong_AsSsize_t(args[0]);
    if (index == -1 && PyErr_Occurred())
        return NULL;
    if (index < 0 || index >= self->count) {
        PyErr_Format(PyExc_IndexError, "word %zd is outside 0..%zd", index, self->count - 1);
        return NULL;
    }
    return &self->words[index];
}

static int value_of(PyObject *obj, uint64_t *out) {
    unsigned long long v = PyLong_AsUnsignedLongLong(obj);
    if (v == (unsigned long long)-1 && PyErr_Occurred())
        return -1;
    *out = (uint64_t)v;
    return 0;
}

PyDoc_STRVAR(cas_doc, "cas(index, expected, new)\n--\n\nSet word `index` to `new` if it holds "
                      "`expected`, atomically. Returns the value it held (`expected` when set).");

static PyObject *SharedWords_cas(SharedWords *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "cas(index, expected, new) takes 3 arguments");
        return NULL;
    }
    uint64_t *word = word_at(self, args);
    uint64_t expected, desired;
    if (word == NULL || value_of(args[1], &expected) < 0 || value_of(args[2], &desired) < 0)
        return NULL;
    __atomic_compare_exchange_n(word, &expected, desired, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    return PyLong_FromUnsignedLongLong(expected);
}

PyDoc_STRVAR(load_doc, "load(index)\n--\n\nWord `index` (an acquire load).");

static PyObject *SharedWords_load(SharedWords *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 1) {
        PyErr_SetString(PyExc_TypeError, "load(index) takes 1 argument");
        return NULL;
    }
    uint64_t *word = word_at(self, args);
    if (word == NULL)
        return NULL;
    return PyLong_FromUnsignedLongLong(__atomic_load_n(word, __ATOMIC_ACQUIRE));
}

PyDoc_STRVAR(store_doc, "store(index, value)\n--\n\nSet word `index` to `value` (a release store).");

static PyObject *SharedWords_store(SharedWords *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "store(index, value) takes 2 arguments");
        return NULL;
    }
    uint64_t *word = word_at(self, args);
    uint64_t value;
    if (word == NULL || value_of(args[1], &value) < 0)
        return NULL;
    __atomic_store_n(word, value, __ATOMIC_RELEASE);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(clear_doc, "clear(mask, value)\n--\n\nSet to 0 every non-zero word whose bits under "
                        "`mask` equal `value`, each by compare-and-swap (a word changed meanwhile "
                        "is left as it is). Returns how many were cleared.");

static PyObject *SharedWords_clear(SharedWords *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "clear(mask, value) takes 2 arguments");
        return NULL;
    }
    if (!self->has_view) {
        PyErr_SetString(PyExc_ValueError, "the shared words are released");
        return NULL;
    }
    uint64_t mask, value;
    if (value_of(args[0], &mask) < 0 || value_of(args[1], &value) < 0)
        return NULL;
    Py_ssize_t cleared = 0;
    for (Py_ssize_t i = 0; i < self->count; i++) {
        uint64_t seen = __atomic_load_n(&self->words[i], __ATOMIC_ACQUIRE);
        if (seen != 0 && (seen & mask) == value &&
            __atomic_compare_exchange_n(&self->words[i], &seen, 0, 0, __ATOMIC_SEQ_CST,
                                        __ATOMIC_SEQ_CST))
            cleared++;
    }
    return PyLong_FromSsize_t(cleared);
}

PyDoc_STRVAR(release_doc, "release()\n--\n\nLet go of the buffer (so that its mmap can be closed); "
                          "every later call raises ValueError.");

static PyObject *SharedWords_release(SharedWords *self, PyObject *Py_UNUSED(ignored)) {
    if (self->has_view) {
        PyBuffer_Release(&self->view);
        self->has_view = 0;
    }
    self->words = NULL;
    self->count = 0;
    Py_RETURN_NONE;
}

static PyObject *SharedWords_count(SharedWords *self, void *Py_UNUSED(closure)) {
    return PyLong_FromSsize_t(self->count);
}

static void SharedWords_dealloc(SharedWords *self) {
    if (self->has_view)
        PyBuffer_Release(&self->view);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef SharedWords_methods[] = {
    {"cas", (PyCFunction)(void (*)(void))SharedWords_cas, METH_FASTCALL, cas_doc},
    {"load", (PyCFunction)(void (*)(void))SharedWords_load, METH_FASTCALL, load_doc},
    {"store", (PyCFunction)(void (*)(void))SharedWords_store, METH_FASTCALL, store_doc},
    {"clear", (PyCFunction)(void (*)(void))SharedWords_clear, METH_FASTCALL, clear_doc},
    {"release", (PyCFunction)SharedWords_release, METH_NOARGS, release_doc},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef SharedWords_getset[] = {
    {"count", (getter)SharedWords_count, NULL, "How many words (0 once released).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject SharedWordsType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "edgecache.cluster._claims.SharedWords",
    .tp_doc = PyDoc_STR("SharedWords(buffer, offset, count): `count` 64-bit words of a writable "
                        "buffer from byte `offset`, read and written atomically."),
    .tp_basicsize = sizeof(SharedWords),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)SharedWords_init,
    .tp_dealloc = (destructor)SharedWords_dealloc,
    .tp_methods = SharedWords_methods,
    .tp_getset = SharedWords_getset,
};

/* SipHash-2-4 (Aumasson and Bernstein), the reference algorithm: a keyed hash, so that a client
 * who does not know the node's key cannot choose URLs whose tokens collide with another's. */
#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                                                   \
    do {                                                                                           \
        v0 += v1; v1 = ROTL(v1, 13); v1 ^= v0; v0 = ROTL(v0, 32);                                  \
        v2 += v3; v3 = ROTL(v3, 16); v3 ^= v2;                                                     \
        v0 += v3; v3 = ROTL(v3, 21); v3 ^= v0;                                                     \
        v2 += v1; v1 = ROTL(v1, 17); v1 ^= v2; v2 = ROTL(v2, 32);                                  \
    } while (0)

static uint64_t siphash24(const unsigned char *in, size_t len, uint64_t k0, uint64_t k1) {
    uint64_t v0 = 0x736f6d6570736575ULL ^ k0, v1 = 0x646f72616e646f6dULL ^ k1,
             v2 = 0x6c7967656e657261ULL ^ k0, v3 = 0x7465646279746573ULL ^ k1;
    const unsigned char *end = in + len - (len % 8);
    uint64_t b = ((uint64_t)len) << 56, m;
    for (; in != end; in += 8) {
        memcpy(&m, in, 8); /* little-endian hosts only (x86-64, arm64): checked at import */
        v3 ^= m;
        SIPROUND;
        SIPROUND;
        v0 ^= m;
    }
    switch (len & 7) {
    case 7: b |= ((uint64_t)in[6]) << 48; /* fall through */
    case 6: b |= ((uint64_t)in[5]) << 40; /* fall through */
    case 5: b |= ((uint64_t)in[4]) << 32; /* fall through */
    case 4: b |= ((uint64_t)in[3]) << 24; /* fall through */
    case 3: b |= ((uint64_t)in[2]) << 16; /* fall through */
    case 2: b |= ((uint64_t)in[1]) << 8;  /* fall through */
    case 1: b |= ((uint64_t)in[0]); break;
    case 0: break;
    }
    v3 ^= b;
    SIPROUND;
    SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

PyDoc_STRVAR(siphash_doc, "siphash(data, k0, k1)\n--\n\nSipHash-2-4 of `data` (a str, as UTF-8, "
                          "or bytes) under the 128-bit key (k0, k1), as an unsigned 64-bit int.");

static PyObject *claims_siphash(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "siphash(data, k0, k1) takes 3 arguments");
        return NULL;
    }
    const char *data;
    Py_ssize_t len;
    if (PyUnicode_Check(args[0])) {
        /* An ASCII str is its own UTF-8; a non-ASCII one gets a UTF-8 copy cached in the str for
         * its lifetime (a key's string, alive for one request: acceptable, and no copy per call). */
        data = PyUnicode_AsUTF8AndSize(args[0], &len);
        if (data == NULL)
            return NULL;
    } else if (PyBytes_Check(args[0])) {
        data = PyBytes_AS_STRING(args[0]);
        len = PyBytes_GET_SIZE(args[0]);
    } else {
        PyErr_SetString(PyExc_TypeError, "siphash() hashes a str or bytes");
        return NULL;
    }
    uint64_t k0, k1;
    if (value_of(args[1], &k0) < 0 || value_of(args[2], &k1) < 0)
        return NULL;
    return PyLong_FromUnsignedLongLong(siphash24((const unsigned char *)data, (size_t)len, k0, k1));
}

static PyMethodDef module_methods[] = {
    {"siphash", (PyCFunction)(void (*)(void))claims_siphash, METH_FASTCALL, siphash_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "edgecache.cluster._claims",
    .m_doc = "Atomic 64-bit words in shared memory, and the keyed hash of the fill claims "
             "(decision 0028).",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC PyInit__claims(void) {
#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
    PyErr_SetString(PyExc_ImportError, "edgecache.cluster._claims reads words little-endian");
    return NULL;
#endif
    if (PyType_Ready(&SharedWordsType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&SharedWordsType);
    if (PyModule_AddObject(m, "SharedWords", (PyObject *)&SharedWordsType) < 0) {
        Py_DECREF(&SharedWordsType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
