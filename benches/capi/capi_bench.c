/*
 * _capi_bench: the hand-written CPython C-API extension of the benchmarks, the reference every other
 * mechanism is compared with. Each shape exists twice, METH_VARARGS (args tuple + PyArg_ParseTuple) and
 * METH_FASTCALL (a C array of arguments, checked by hand), with the same contract as native.add: range-
 * checked C longs (OverflowError, TypeError), libnative's status translated. Also: a zero-copy checksum
 * (buffer protocol, GIL released from 64 KiB like native.checksum) and callgrind client requests so
 * ci/bench-instructions can count instructions of one Python loop at a time.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "native.h"
#include "shapes.h"

#ifdef HAVE_CALLGRIND
#include <valgrind/callgrind.h>
#else
#define CALLGRIND_ZERO_STATS
#define CALLGRIND_DUMP_STATS_AT(s) ((void)(s))
#endif

/* Same policy as the PyO3 wrapper (buffers.rs DETACH_THRESHOLD). */
#define DETACH_THRESHOLD (64 * 1024)

static int long_arg(PyObject *obj, long *out) {
    long v = PyLong_AsLong(obj);
    if (v == -1 && PyErr_Occurred()) return -1;
    *out = v;
    return 0;
}

static int check_nargs(const char *name, Py_ssize_t nargs, Py_ssize_t want) {
    if (nargs == want) return 0;
    PyErr_Format(PyExc_TypeError, "%s() takes exactly %zd positional arguments (%zd given)", name, want, nargs);
    return -1;
}

static PyObject *add_result(int rc, long out) {
    if (rc != NATIVE_OK) {
        PyErr_SetString(PyExc_OverflowError, "add: result does not fit in a C long");
        return NULL;
    }
    return PyLong_FromLong(out);
}

/* ---- METH_FASTCALL ---- */

static PyObject *fast_zero(PyObject *m, PyObject *const *args, Py_ssize_t nargs) {
    (void)m; (void)args;
    if (check_nargs("fast_zero", nargs, 0)) return NULL;
    return PyLong_FromLong(shapes_zero());
}

static PyObject *fast_one(PyObject *m, PyObject *const *args, Py_ssize_t nargs) {
    (void)m;
    long a;
    if (check_nargs("fast_one", nargs, 1) || long_arg(args[0], &a)) return NULL;
    return PyLong_FromLong(shapes_one(a));
}

static PyObject *fast_add(PyObject *m, PyObject *const *args, Py_ssize_t nargs) {
    (void)m;
    long a, b, out = 0;
    if (check_nargs("fast_add", nargs, 2) || long_arg(args[0], &a) || long_arg(args[1], &b)) return NULL;
    int rc = native_add(a, b, &out); /* before reading out: argument evaluation order is unspecified */
    return add_result(rc, out);
}

static PyObject *fast_five(PyObject *m, PyObject *const *args, Py_ssize_t nargs) {
    (void)m;
    long v[5];
    if (check_nargs("fast_five", nargs, 5)) return NULL;
    for (int i = 0; i < 5; i++)
        if (long_arg(args[i], &v[i])) return NULL;
    return PyLong_FromLong(shapes_five(v[0], v[1], v[2], v[3], v[4]));
}

static PyObject *fast_checksum(PyObject *m, PyObject *const *args, Py_ssize_t nargs) {
    (void)m;
    Py_buffer view;
    uint64_t sum;
    if (check_nargs("fast_checksum", nargs, 1)) return NULL;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) != 0) return NULL; /* contiguous by request */
    if (view.len >= DETACH_THRESHOLD) {
        Py_BEGIN_ALLOW_THREADS
        sum = native_checksum(view.buf, (size_t)view.len);
        Py_END_ALLOW_THREADS
    } else {
        sum = native_checksum(view.buf, (size_t)view.len);
    }
    PyBuffer_Release(&view);
    return PyLong_FromUnsignedLongLong(sum);
}

/* ---- METH_VARARGS ---- */

static PyObject *var_zero(PyObject *m, PyObject *args) {
    (void)m;
    if (!PyArg_ParseTuple(args, ":var_zero")) return NULL;
    return PyLong_FromLong(shapes_zero());
}

static PyObject *var_one(PyObject *m, PyObject *args) {
    (void)m;
    long a;
    if (!PyArg_ParseTuple(args, "l:var_one", &a)) return NULL;
    return PyLong_FromLong(shapes_one(a));
}

static PyObject *var_add(PyObject *m, PyObject *args) {
    (void)m;
    long a, b, out = 0;
    if (!PyArg_ParseTuple(args, "ll:var_add", &a, &b)) return NULL;
    int rc = native_add(a, b, &out); /* before reading out: argument evaluation order is unspecified */
    return add_result(rc, out);
}

static PyObject *var_five(PyObject *m, PyObject *args) {
    (void)m;
    long a, b, c, d, e;
    if (!PyArg_ParseTuple(args, "lllll:var_five", &a, &b, &c, &d, &e)) return NULL;
    return PyLong_FromLong(shapes_five(a, b, c, d, e));
}

/* ---- callgrind regions (no-ops outside valgrind) ---- */

static PyObject *cg_zero(PyObject *m, PyObject *unused) {
    (void)m; (void)unused;
    CALLGRIND_ZERO_STATS;
    Py_RETURN_NONE;
}

static PyObject *cg_dump(PyObject *m, PyObject *name) {
    (void)m;
    const char *s = PyUnicode_AsUTF8(name);
    if (!s) return NULL;
    CALLGRIND_DUMP_STATS_AT(s);
    Py_RETURN_NONE;
}

static PyObject *has_callgrind(PyObject *m, PyObject *unused) {
    (void)m; (void)unused;
#ifdef HAVE_CALLGRIND
    Py_RETURN_TRUE;
#else
    Py_RETURN_FALSE;
#endif
}

#define FAST(name, doc) {#name, (PyCFunction)(void (*)(void))name, METH_FASTCALL, doc}
#define VAR(name, doc) {#name, (PyCFunction)name, METH_VARARGS, doc}

static PyMethodDef methods[] = {
    FAST(fast_zero, "shapes_zero() through METH_FASTCALL"),
    FAST(fast_one, "shapes_one(a) through METH_FASTCALL"),
    FAST(fast_add, "native_add(a, b) through METH_FASTCALL"),
    FAST(fast_five, "shapes_five(a, b, c, d, e) through METH_FASTCALL"),
    FAST(fast_checksum, "native_checksum(buffer) through METH_FASTCALL, zero copy"),
    VAR(var_zero, "shapes_zero() through METH_VARARGS"),
    VAR(var_one, "shapes_one(a) through METH_VARARGS"),
    VAR(var_add, "native_add(a, b) through METH_VARARGS"),
    VAR(var_five, "shapes_five(a, b, c, d, e) through METH_VARARGS"),
    {"cg_zero", cg_zero, METH_NOARGS, "CALLGRIND_ZERO_STATS"},
    {"cg_dump", cg_dump, METH_O, "CALLGRIND_DUMP_STATS_AT(name)"},
    {"has_callgrind", has_callgrind, METH_NOARGS, "built with valgrind/callgrind.h"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_capi_bench", "Hand-written C-API reference for the ffi-harness benchmarks.", -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__capi_bench(void) { return PyModule_Create(&module); }
