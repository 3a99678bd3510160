/* untrack(obj): take a container out of CPython's cyclic garbage collector (store/untracked.py says
 * why and which objects may be).
 *
 * Written in C because the memory tier calls it on every put (the entry, and the entries' dict,
 * which inserting an entry tracks again): through ctypes.pythonapi each call cost ~3k instructions
 * (argument conversion, a foreign call), this METH_O function ~0.26k (decision 0002, addendum 8).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static PyObject *
untrack(PyObject *Py_UNUSED(module), PyObject *obj)
{
    /* A non-GC object has no GC header to read: the collector never sees it anyway. */
    if (PyObject_IS_GC(obj) && PyObject_GC_IsTracked(obj)) {
        PyObject_GC_UnTrack(obj);
    }
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"untrack", untrack, METH_O,
     "untrack(obj, /)\n--\n\nTake obj out of the cyclic garbage collector's view (reference counting "
     "still frees it)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_untrack", "Untracking objects from the cyclic garbage collector.", -1, methods,
};

PyMODINIT_FUNC
PyInit__untrack(void)
{
    return PyModule_Create(&module);
}
