/* Links: the memory tier's index bookkeeping of a put and of a removal (store/memory.py's
 * ``_link`` and ``_unlink``): the entries' dict, the key index's insert, the variant, zone and tag
 * indexes, each as the module rules of store/memory.py state them.
 *
 * Written in C because every fill pays it: in Python it was the largest function of a whole miss
 * (143 bytecodes, ~9k instructions a put with one tag), each dict and set step a bytecode dispatch
 * and an attribute load (decision 0002, addendum 9). The containers stay the Python objects the
 * tier's readers (purges, ``keys_for_*``) use; this object only holds references to them. What is
 * rare stays Python, called from here: the key index's first insert, its sublist split and
 * positional index (``_UntrackedKeys._expand``), its removal (``SortedList.remove``), and a tag's
 * shards (``_TagShards``).
 *
 * No object here can be part of a reference cycle (the containers hold strings, counts and entries,
 * never a Links), so the type is not a collector's object. The containers it fills are untracked as
 * store/untracked.py requires, except the zone and tag dicts (zone -> dict): they are as few as the
 * zones, so the collector's walk of them is small, and they were tracked in the Python as well.
 *
 * Keys, zones and tags must be exact str (``fields``): then no dict or set step below runs Python
 * (no user ``__hash__`` or ``__eq__``), so a container borrowed here cannot change under it except
 * through the calls back into Python named above, around which the C holds references.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

typedef struct {
    PyObject_HEAD
    PyObject *entries;        /* key -> Entry */
    PyObject *keys;           /* the _UntrackedKeys */
    PyObject *maxes;          /* its _maxes, _lists, _index: never rebound by SortedList */
    PyObject *lists;
    PyObject *index;
    PyObject *zones;          /* zone -> host range -> count */
    PyObject *zones_of_range; /* host range -> zones */
    PyObject *with_variants;  /* primary -> count */
    PyObject *tags;           /* zone -> tag -> str | set | shards */
    PyObject *shards;         /* the _TagShards class */
    Py_ssize_t shard_at;
    Py_ssize_t host_start;
    Py_UCS4 variant_sep;      /* entry.VARIANT_SEP */
} Links;

static PyObject *s_key, *s_zone, *s_tags, *s_load, *s_len, *s_expand, *s_add, *s_remove, *s_pop;

static void
untrack(PyObject *obj)
{
    if (PyObject_IS_GC(obj) && PyObject_GC_IsTracked(obj)) {
        PyObject_GC_UnTrack(obj);
    }
}

/* bisect.bisect_right over a list of str. */
static int
bisect_right(PyObject *list, PyObject *x, Py_ssize_t *at)
{
    Py_ssize_t lo = 0, hi = PyList_GET_SIZE(list);
    while (lo < hi) {
        Py_ssize_t mid = (lo + hi) / 2;
        int c = PyUnicode_Compare(x, PyList_GET_ITEM(list, mid));
        if (c == -1 && PyErr_Occurred()) {
            return -1;
        }
        if (c < 0) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    *at = lo;
    return 0;
}

/* counts[name] += delta, the slot dropped at zero, the count before in *before; -1 on error. A
 * decrement of a missing slot is a KeyError, as ``counts[name] -= 1`` was in the Python, and a count
 * that would go below zero an error too: either means the index lost track, and storing it would
 * only move the failure to a later put. */
static int
count(PyObject *counts, PyObject *name, Py_ssize_t delta, Py_ssize_t *before)
{
    PyObject *n = PyDict_GetItemWithError(counts, name);
    *before = 0;
    if (n != NULL) {
        *before = PyLong_AsSsize_t(n);
        if (*before == -1 && PyErr_Occurred()) {
            return -1;
        }
    } else if (PyErr_Occurred()) {
        return -1;
    } else if (delta < 0) {
        PyErr_SetObject(PyExc_KeyError, name);
        return -1;
    }
    if (*before + delta < 0) {
        PyErr_Format(PyExc_ValueError, "the count of %R would go below zero", name);
        return -1;
    }
    if (*before + delta == 0) {
        return PyDict_DelItem(counts, name);
    }
    PyObject *after = PyLong_FromSsize_t(*before + delta);
    if (after == NULL) {
        return -1;
    }
    int r = PyDict_SetItem(counts, name, after);
    Py_DECREF(after);
    return r;
}

/* The key index's add: SortedList.add's common case, inline (_UntrackedKeys.add says what it reads). */
static int
keys_add(Links *self, PyObject *key)
{
    Py_ssize_t n = PyList_GET_SIZE(self->maxes);
    if (n == 0) {
        PyObject *r = PyObject_CallMethodOneArg(self->keys, s_add, key);
        Py_XDECREF(r);
        return r == NULL ? -1 : 0;
    }
    Py_ssize_t pos;
    if (bisect_right(self->maxes, key, &pos) < 0) {
        return -1;
    }
    PyObject *sub;
    if (pos == n) {
        pos -= 1;
        sub = PyList_GET_ITEM(self->lists, pos);
        if (PyList_Append(sub, key) < 0) {
            return -1;
        }
        PyObject *old = PyList_GET_ITEM(self->maxes, pos);
        Py_INCREF(key);
        PyList_SET_ITEM(self->maxes, pos, key);
        Py_DECREF(old);
    } else {
        sub = PyList_GET_ITEM(self->lists, pos);
        Py_ssize_t i;
        if (bisect_right(sub, key, &i) < 0 || PyList_Insert(sub, i, key) < 0) {
            return -1;
        }
    }
    PyObject *load = PyObject_GetAttr(self->keys, s_load);
    if (load == NULL) {
        return -1;
    }
    Py_ssize_t half = PyLong_AsSsize_t(load);
    Py_DECREF(load);
    if (half == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (PyList_GET_SIZE(sub) > half << 1 || PyList_GET_SIZE(self->index) > 0) {
        PyObject *at = PyLong_FromSsize_t(pos);
        if (at == NULL) {
            return -1;
        }
        PyObject *r = PyObject_CallMethodOneArg(self->keys, s_expand, at);
        Py_DECREF(at);
        if (r == NULL) {
            return -1;
        }
        Py_DECREF(r);
    }
    PyObject *len = PyObject_GetAttr(self->keys, s_len);
    if (len == NULL) {
        return -1;
    }
    PyObject *one = PyLong_FromLong(1);
    PyObject *more = one == NULL ? NULL : PyNumber_Add(len, one);
    Py_DECREF(len);
    Py_XDECREF(one);
    if (more == NULL) {
        return -1;
    }
    int r = PyObject_SetAttr(self->keys, s_len, more);
    Py_DECREF(more);
    return r;
}

/* ``scheme://host/`` of a well-formed key, else the key itself: in any case a prefix of it. */
static PyObject *
host_range(Links *self, PyObject *key)
{
    Py_ssize_t len = PyUnicode_GET_LENGTH(key);
    Py_ssize_t slash = len > self->host_start ? PyUnicode_FindChar(key, '/', self->host_start, len, 1) : -1;
    if (slash == -2) {
        return NULL;
    }
    if (slash < 0) {
        Py_INCREF(key);
        return key;
    }
    return PyUnicode_Substring(key, 0, slash + 1);
}

/* The primary key of a key with a variant part (new reference), Py_None without one (borrowed). */
static PyObject *
primary_of(Links *self, PyObject *key)
{
    Py_ssize_t sep = PyUnicode_FindChar(key, self->variant_sep, 0, PyUnicode_GET_LENGTH(key), 1);
    if (sep == -2) {
        return NULL;
    }
    if (sep < 0) {
        return Py_None;
    }
    return PyUnicode_Substring(key, 0, sep);
}

/* Zone, key and tags of an entry (new references), checked before any change: a wrong type then
 * fails with the tier untouched, and an exact str runs no Python when hashed or compared. */
static int
fields(Links *self, PyObject *entry, PyObject **key, PyObject **zone, PyObject **tags)
{
    if (self->entries == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Links.__init__ was not called");
        return -1;
    }
    *key = PyObject_GetAttr(entry, s_key);
    *zone = *key == NULL ? NULL : PyObject_GetAttr(entry, s_zone);
    *tags = *zone == NULL ? NULL : PyObject_GetAttr(entry, s_tags);
    if (*tags == NULL) {
        Py_XDECREF(*key);
        Py_XDECREF(*zone);
        return -1;
    }
    int ok = PyUnicode_CheckExact(*key) && PyUnicode_CheckExact(*zone) && PyTuple_Check(*tags);
    for (Py_ssize_t i = 0; ok && i < PyTuple_GET_SIZE(*tags); i++) {
        ok = PyUnicode_CheckExact(PyTuple_GET_ITEM(*tags, i));
    }
    if (!ok) {
        PyErr_SetString(PyExc_TypeError, "an entry's key and zone are a str and its tags a tuple of str");
        Py_DECREF(*key);
        Py_DECREF(*zone);
        Py_DECREF(*tags);
        return -1;
    }
    return 0;
}

/* The dict at d[name], made (empty) when there is none; borrowed. */
static PyObject *
dict_at(PyObject *d, PyObject *name)
{
    PyObject *inner = PyDict_GetItemWithError(d, name);
    if (inner != NULL || PyErr_Occurred()) {
        return inner;
    }
    inner = PyDict_New();
    if (inner == NULL) {
        return NULL;
    }
    int r = PyDict_SetItem(d, name, inner);
    Py_DECREF(inner);
    return r < 0 ? NULL : inner;
}

/* The caller holds a reference to by_tag: the calls into Python here could drop the tier's. */
static int
link_tag(Links *self, PyObject *by_tag, PyObject *tag, PyObject *key)
{
    PyObject *keys = PyDict_GetItemWithError(by_tag, tag);
    if (keys == NULL) {
        return PyErr_Occurred() ? -1 : PyDict_SetItem(by_tag, tag, key);
    }
    if (PyUnicode_Check(keys)) {
        PyObject *pair = PySet_New(NULL);
        if (pair == NULL) {
            return -1;
        }
        if (PySet_Add(pair, keys) < 0 || PySet_Add(pair, key) < 0 || PyDict_SetItem(by_tag, tag, pair) < 0) {
            Py_DECREF(pair);
            return -1;
        }
        untrack(pair);
        Py_DECREF(pair);
        untrack(by_tag);
        return 0;
    }
    if (!PySet_CheckExact(keys)) {
        Py_INCREF(keys);
        PyObject *r = PyObject_CallMethodOneArg(keys, s_add, key);
        Py_DECREF(keys);
        Py_XDECREF(r);
        return r == NULL ? -1 : 0;
    }
    if (PySet_Add(keys, key) < 0) {
        return -1;
    }
    if (PySet_GET_SIZE(keys) >= self->shard_at) {
        Py_INCREF(keys);
        PyObject *sharded = PyObject_CallOneArg(self->shards, keys);
        Py_DECREF(keys);
        if (sharded == NULL) {
            return -1;
        }
        int r = PyDict_SetItem(by_tag, tag, sharded);
        Py_DECREF(sharded);
        untrack(by_tag);
        return r;
    }
    return 0;
}

static PyObject *
links_link(Links *self, PyObject *entry)
{
    PyObject *key, *zone, *tags;
    if (fields(self, entry, &key, &zone, &tags) < 0) {
        return NULL;
    }
    PyObject *primary = NULL, *range = NULL, *result = NULL;
    Py_ssize_t before;
    untrack(entry);
    if (PyDict_SetItem(self->entries, key, entry) < 0) {
        goto done;
    }
    untrack(self->entries); /* inserting an object the collector may track re-tracks the dict */
    if (keys_add(self, key) < 0) {
        goto done;
    }
    primary = primary_of(self, key);
    if (primary == NULL || (primary != Py_None && count(self->with_variants, primary, 1, &before) < 0)) {
        goto done;
    }
    PyObject *ranges = dict_at(self->zones, zone);
    range = ranges == NULL ? NULL : host_range(self, key);
    if (range == NULL || count(ranges, range, 1, &before) < 0
        || (before == 0 && count(self->zones_of_range, range, 1, &before) < 0)) {
        goto done;
    }
    Py_ssize_t ntags = PyTuple_GET_SIZE(tags);
    if (ntags) {
        PyObject *by_tag = dict_at(self->tags, zone);
        if (by_tag == NULL) {
            goto done;
        }
        Py_INCREF(by_tag);
        int ok = 0;
        for (Py_ssize_t i = 0; i < ntags && ok == 0; i++) {
            ok = link_tag(self, by_tag, PyTuple_GET_ITEM(tags, i), key);
        }
        Py_DECREF(by_tag);
        if (ok < 0) {
            goto done;
        }
    }
    result = Py_None;
    Py_INCREF(result);
done:
    Py_XDECREF(range);
    if (primary != Py_None) {
        Py_XDECREF(primary);
    }
    Py_DECREF(key);
    Py_DECREF(zone);
    Py_DECREF(tags);
    return result;
}

static int
unlink_tag(PyObject *by_tag, PyObject *tag, PyObject *key)
{
    PyObject *keys = PyDict_GetItemWithError(by_tag, tag);
    if (keys == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_SetObject(PyExc_KeyError, tag);
        }
        return -1;
    }
    if (PyUnicode_Check(keys)) {
        return PyDict_DelItem(by_tag, tag);
    }
    Py_ssize_t left;
    Py_INCREF(keys);
    if (PySet_CheckExact(keys)) {
        int found = PySet_Discard(keys, key);
        if (found == 0) {
            PyErr_SetObject(PyExc_KeyError, key);
        }
        left = found == 1 ? PySet_GET_SIZE(keys) : -1;
    } else {
        PyObject *r = PyObject_CallMethodOneArg(keys, s_remove, key);
        Py_XDECREF(r);
        left = r == NULL ? -1 : PyObject_Length(keys);
    }
    int ok = left >= 0 ? 0 : -1;
    if (left == 1) {
        PyObject *last = PyObject_CallMethodNoArgs(keys, s_pop);
        ok = last == NULL ? -1 : PyDict_SetItem(by_tag, tag, last);
        Py_XDECREF(last);
    }
    Py_DECREF(keys);
    return ok;
}

static PyObject *
links_unlink(Links *self, PyObject *entry)
{
    PyObject *key, *zone, *tags;
    if (fields(self, entry, &key, &zone, &tags) < 0) {
        return NULL;
    }
    PyObject *primary = NULL, *range = NULL, *result = NULL;
    Py_ssize_t before;
    if (PyDict_DelItem(self->entries, key) < 0) {
        goto done;
    }
    PyObject *gone = PyObject_CallMethodOneArg(self->keys, s_remove, key);
    if (gone == NULL) {
        goto done;
    }
    Py_DECREF(gone);
    primary = primary_of(self, key);
    if (primary == NULL || (primary != Py_None && count(self->with_variants, primary, -1, &before) < 0)) {
        goto done;
    }
    PyObject *ranges = PyDict_GetItemWithError(self->zones, zone);
    if (ranges == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_SetObject(PyExc_KeyError, zone);
        }
        goto done;
    }
    range = host_range(self, key);
    if (range == NULL) {
        goto done;
    }
    if (count(ranges, range, -1, &before) < 0) {
        goto done;
    }
    if (before == 1) {
        if (PyDict_GET_SIZE(ranges) == 0 && PyDict_DelItem(self->zones, zone) < 0) {
            goto done;
        }
        if (count(self->zones_of_range, range, -1, &before) < 0) {
            goto done;
        }
    }
    Py_ssize_t ntags = PyTuple_GET_SIZE(tags);
    if (ntags) {
        PyObject *by_tag = PyDict_GetItemWithError(self->tags, zone);
        if (by_tag == NULL) {
            if (!PyErr_Occurred()) {
                PyErr_SetObject(PyExc_KeyError, zone);
            }
            goto done;
        }
        Py_INCREF(by_tag);
        int ok = 0;
        for (Py_ssize_t i = 0; i < ntags && ok == 0; i++) {
            ok = unlink_tag(by_tag, PyTuple_GET_ITEM(tags, i), key);
        }
        if (ok == 0 && PyDict_GET_SIZE(by_tag) == 0) {
            ok = PyDict_DelItem(self->tags, zone);
        }
        Py_DECREF(by_tag);
        if (ok < 0) {
            goto done;
        }
    }
    result = Py_None;
    Py_INCREF(result);
done:
    Py_XDECREF(range);
    if (primary != Py_None) {
        Py_XDECREF(primary);
    }
    Py_DECREF(key);
    Py_DECREF(zone);
    Py_DECREF(tags);
    return result;
}

static int
links_init(Links *self, PyObject *args, PyObject *Py_UNUSED(kwds))
{
    PyObject *entries, *keys, *zones, *zones_of_range, *with_variants, *tags, *shards;
    Py_ssize_t shard_at, host_start;
    int variant_sep;
    if (!PyArg_ParseTuple(args, "O!OO!O!O!O!OnnC:Links", &PyDict_Type, &entries, &keys, &PyDict_Type, &zones,
                          &PyDict_Type, &zones_of_range, &PyDict_Type, &with_variants, &PyDict_Type, &tags,
                          &shards, &shard_at, &host_start, &variant_sep)) {
        return -1;
    }
    PyObject *maxes = PyObject_GetAttrString(keys, "_maxes");
    PyObject *lists = maxes == NULL ? NULL : PyObject_GetAttrString(keys, "_lists");
    PyObject *index = lists == NULL ? NULL : PyObject_GetAttrString(keys, "_index");
    if (index == NULL || !PyList_CheckExact(maxes) || !PyList_CheckExact(lists) || !PyList_CheckExact(index)) {
        if (index != NULL) {
            PyErr_SetString(PyExc_TypeError, "keys must be a SortedList");
        }
        Py_XDECREF(maxes);
        Py_XDECREF(lists);
        Py_XDECREF(index);
        return -1;
    }
    Py_XSETREF(self->maxes, maxes);
    Py_XSETREF(self->lists, lists);
    Py_XSETREF(self->index, index);
    Py_INCREF(entries);
    Py_XSETREF(self->entries, entries);
    Py_INCREF(keys);
    Py_XSETREF(self->keys, keys);
    Py_INCREF(zones);
    Py_XSETREF(self->zones, zones);
    Py_INCREF(zones_of_range);
    Py_XSETREF(self->zones_of_range, zones_of_range);
    Py_INCREF(with_variants);
    Py_XSETREF(self->with_variants, with_variants);
    Py_INCREF(tags);
    Py_XSETREF(self->tags, tags);
    Py_INCREF(shards);
    Py_XSETREF(self->shards, shards);
    self->shard_at = shard_at;
    self->host_start = host_start;
    self->variant_sep = (Py_UCS4)variant_sep;
    return 0;
}

static void
links_dealloc(Links *self)
{
    Py_XDECREF(self->entries);
    Py_XDECREF(self->keys);
    Py_XDECREF(self->maxes);
    Py_XDECREF(self->lists);
    Py_XDECREF(self->index);
    Py_XDECREF(self->zones);
    Py_XDECREF(self->zones_of_range);
    Py_XDECREF(self->with_variants);
    Py_XDECREF(self->tags);
    Py_XDECREF(self->shards);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef links_methods[] = {
    {"link", (PyCFunction)links_link, METH_O,
     "link(entry, /)\n--\n\nAdd entry to the entries' dict and every index (it is not stored yet)."},
    {"unlink", (PyCFunction)links_unlink, METH_O,
     "unlink(entry, /)\n--\n\nRemove entry from the entries' dict and every index (it is stored)."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject LinksType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "edgecache.store._links.Links",
    .tp_basicsize = sizeof(Links),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The memory tier's index bookkeeping of a put and a removal, over the tier's containers.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)links_init,
    .tp_dealloc = (destructor)links_dealloc,
    .tp_methods = links_methods,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_links",
    .m_doc = "The memory tier's index bookkeeping (store/memory.py).",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__links(void)
{
    const char *names[] = {"key", "zone", "tags", "_load", "_len", "_expand", "add", "remove", "pop"};
    PyObject **slots[] = {&s_key, &s_zone, &s_tags, &s_load, &s_len, &s_expand, &s_add, &s_remove, &s_pop};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        *slots[i] = PyUnicode_InternFromString(names[i]);
        if (*slots[i] == NULL) {
            return NULL;
        }
    }
    if (PyType_Ready(&LinksType) < 0) {
        return NULL;
    }
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) {
        return NULL;
    }
    Py_INCREF(&LinksType);
    if (PyModule_AddObject(m, "Links", (PyObject *)&LinksType) < 0) {
        Py_DECREF(&LinksType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
