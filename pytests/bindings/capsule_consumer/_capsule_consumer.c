/*
 * _capsule_consumer: a second extension module that uses native's C API through its capsule, the way
 * numpy's or datetime's C APIs are consumed (checklist: capsules). It imports the table once at module
 * init with PyCapsule_Import, refuses a wrong capsule name or version with a clear ImportError, keeps
 * the capsule in its module state (so the table and the exporter outlive every use), and reaches a
 * native.Connection's handle only through pin()/unpin().
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <unistd.h>

#include "native_capi.h"

typedef struct {
    PyObject *capsule;       /* strong reference: keeps the table and the exporting module alive */
    const native_capi *api;  /* owned by `capsule` */
} consumer_state;

static consumer_state *state_of(PyObject *module) { return (consumer_state *)PyModule_GetState(module); }

/* Makes the pending error an ImportError naming the capsule, with the original error as __cause__. */
static void import_error(const char *name, const char *what)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (value != NULL && tb != NULL)
        PyException_SetTraceback(value, tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    PyErr_Format(PyExc_ImportError, "native C API capsule %s: %s", name, what);
    if (value != NULL) {
        PyObject *t2, *v2, *tb2;
        PyErr_Fetch(&t2, &v2, &tb2);
        PyErr_NormalizeException(&t2, &v2, &tb2);
        PyException_SetCause(v2, value); /* steals value */
        PyErr_Restore(t2, v2, tb2);
    }
}

/*
 * The capsule object behind `name` ("pkg.mod.attr"), a new reference, or NULL with an exception.
 * Used after PyCapsule_Import to hold the same object, and to say what was found on a mismatch.
 */
static PyObject *lookup(const char *name)
{
    const char *dot = strrchr(name, '.');
    if (dot == NULL) {
        PyErr_SetString(PyExc_ValueError, "capsule name has no module part");
        return NULL;
    }
    PyObject *modname = PyUnicode_FromStringAndSize(name, dot - name);
    if (modname == NULL)
        return NULL;
    PyObject *mod = PyImport_Import(modname);
    Py_DECREF(modname);
    if (mod == NULL)
        return NULL;
    PyObject *obj = PyObject_GetAttrString(mod, dot + 1);
    Py_DECREF(mod);
    return obj;
}

/*
 * Imports the table published as `name`, checks it is the version this module was built for, and
 * returns a new reference to its capsule (the table in *api_out); NULL with ImportError otherwise.
 */
static PyObject *import_capi(const char *name, unsigned int version, const native_capi **api_out)
{
    const native_capi *api = (const native_capi *)PyCapsule_Import(name, 0);
    if (api == NULL) {
        /* Say why: a capsule of another name (never trust its pointer), or nothing there at all. */
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        PyObject *found = lookup(name);
        if (found != NULL && PyCapsule_CheckExact(found)) {
            const char *found_name = PyCapsule_GetName(found);
            Py_DECREF(found);
            Py_XDECREF(type);
            Py_XDECREF(value);
            Py_XDECREF(tb);
            PyErr_Format(PyExc_ImportError, "native C API capsule %s: name mismatch, found a capsule named %s",
                         name, found_name != NULL ? found_name : "(NULL)");
            return NULL;
        }
        Py_XDECREF(found);
        PyErr_Clear();
        PyErr_Restore(type, value, tb);
        import_error(name, "not found or not a capsule of that name");
        return NULL;
    }
    if (api->version != version || api->size < sizeof(native_capi)) {
        PyErr_Format(PyExc_ImportError,
                     "native C API capsule %s: version %u (table of %u bytes), this module was built for "
                     "version %u (%zu bytes)", name, api->version, api->size, version, sizeof(native_capi));
        return NULL;
    }
    /* Lifetime: hold the capsule itself, not only its pointer. */
    PyObject *capsule = lookup(name);
    if (capsule == NULL || PyCapsule_GetPointer(capsule, name) != api) {
        Py_XDECREF(capsule);
        PyErr_Clear();
        PyErr_Format(PyExc_ImportError, "native C API capsule %s changed while being imported", name);
        return NULL;
    }
    *api_out = api;
    return capsule;
}

/* ---- functions ---- */

static PyObject *api_version(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromUnsignedLong(state_of(module)->api->version);
}

/* An int argument as uint32_t, range-checked: the "k" and "I" format units mask silently (2**64 + 5 would
 * become 5, -1 would become 0xffffffff), where native.process raises OverflowError. */
static int u32_arg(PyObject *obj, const char *what, uint32_t *out)
{
    PyObject *index = PyNumber_Index(obj);
    if (index == NULL)
        return -1;
    unsigned long long v = PyLong_AsUnsignedLongLong(index); /* OverflowError if negative or over 64 bits */
    Py_DECREF(index);
    if (v == (unsigned long long)-1 && PyErr_Occurred())
        return -1;
    if (v > UINT32_MAX) {
        PyErr_Format(PyExc_OverflowError, "%s must fit in 32 unsigned bits", what);
        return -1;
    }
    *out = (uint32_t)v;
    return 0;
}

/* _import_api(name, version): the import check of module init with other inputs (tests). */
static PyObject *import_api(PyObject *Py_UNUSED(module), PyObject *args)
{
    const char *name;
    PyObject *version_obj;
    uint32_t version;
    if (!PyArg_ParseTuple(args, "sO", &name, &version_obj) || u32_arg(version_obj, "version", &version) < 0)
        return NULL;
    const native_capi *api = NULL;
    PyObject *capsule = import_capi(name, version, &api);
    if (capsule == NULL)
        return NULL;
    Py_DECREF(capsule);
    return PyLong_FromUnsignedLong(api->version);
}

static PyObject *checksum(PyObject *module, PyObject *obj)
{
    Py_buffer view;
    if (PyObject_GetBuffer(obj, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    uint64_t h;
    /* GIL: released for big buffers; the export stays held until PyBuffer_Release. */
    if (view.len >= 64 * 1024) {
        Py_BEGIN_ALLOW_THREADS
        h = state_of(module)->api->checksum(view.buf, (size_t)view.len);
        Py_END_ALLOW_THREADS
    } else {
        h = state_of(module)->api->checksum(view.buf, (size_t)view.len);
    }
    PyBuffer_Release(&view);
    return PyLong_FromUnsignedLongLong(h);
}

/* A long process() (length x rounds, as native judges it: a small buffer over many rounds is as long as a
 * big one) runs without the GIL. The table's process has no cancel hook, so the rounds go in slices of
 * about PROCESS_SLICE_BYTES of work, with the GIL taken back between slices to run signal handlers: Ctrl-C
 * stops it. Rounds compose (each is one in-place pass), so the slices give the same bytes. One round over a
 * buffer bigger than a slice is the finest step there is. Returns a NATIVE_* status, or -1 with an
 * exception set when a signal handler raised. */
#define PROCESS_DETACH_BYTES ((size_t)64 * 1024)
#define PROCESS_SLICE_BYTES ((size_t)4 << 20)

static int process_interruptibly(const native_capi *api, Py_buffer *view, uint32_t key, uint32_t rounds)
{
    size_t len = (size_t)view->len;
    if (len == 0 || (rounds <= SIZE_MAX / len && len * rounds < PROCESS_DETACH_BYTES))
        return api->process(view->buf, len, key, rounds);
    uint32_t per_slice = len >= PROCESS_SLICE_BYTES ? 1 : (uint32_t)(PROCESS_SLICE_BYTES / len);
    int rc = NATIVE_OK;
    for (uint32_t done = 0; rc == NATIVE_OK && done < rounds;) {
        uint32_t n = rounds - done < per_slice ? rounds - done : per_slice;
        /* GIL: released; the writable export (w*) stays held until PyBuffer_Release, so no resize. */
        Py_BEGIN_ALLOW_THREADS
        rc = api->process(view->buf, len, key, n);
        Py_END_ALLOW_THREADS
        done += n;
        if (rc == NATIVE_OK && done < rounds && PyErr_CheckSignals() < 0)
            return -1;
    }
    return rc;
}

static PyObject *process(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"data", "key", "rounds", NULL};
    Py_buffer view;
    PyObject *key_obj = NULL, *rounds_obj = NULL;
    uint32_t key = 0, rounds = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "w*|OO", kwlist, &view, &key_obj, &rounds_obj))
        return NULL;
    if ((key_obj != NULL && u32_arg(key_obj, "key", &key) < 0) ||
        (rounds_obj != NULL && u32_arg(rounds_obj, "rounds", &rounds) < 0)) {
        PyBuffer_Release(&view);
        return NULL;
    }
    if (rounds < 1) {
        PyBuffer_Release(&view);
        return PyErr_Format(PyExc_ValueError, "rounds must be >= 1");
    }
    int rc = process_interruptibly(state_of(module)->api, &view, key, rounds);
    PyBuffer_Release(&view);
    if (rc == -1)
        return NULL; /* a signal handler raised (KeyboardInterrupt) */
    if (rc != NATIVE_OK)
        return PyErr_Format(PyExc_ValueError, "process: native status %d", rc);
    Py_RETURN_NONE;
}

static PyObject *count(PyObject *module, PyObject *conn)
{
    const native_capi *api = state_of(module)->api;
    native_db *db;
    native_capi_pin *pin = api->pin(conn, &db);
    if (pin == NULL)
        return NULL; /* TypeError, or InvalidStateError after close */
    size_t n = api->count(db);
    api->unpin(pin); /* db is not used past this line */
    return PyLong_FromSize_t(n);
}

/* put(conn, key, value, delay_ms=0): pins, releases the GIL, sleeps delay_ms, puts, unpins. */
static PyObject *put(PyObject *module, PyObject *args)
{
    const native_capi *api = state_of(module)->api;
    PyObject *conn;
    Py_buffer key, value;
    PyObject *delay_obj = NULL;
    uint32_t delay_ms = 0;
    if (!PyArg_ParseTuple(args, "Oy*y*|O", &conn, &key, &value, &delay_obj))
        return NULL;
    if (delay_obj != NULL && u32_arg(delay_obj, "delay_ms", &delay_ms) < 0) {
        PyBuffer_Release(&key);
        PyBuffer_Release(&value);
        return NULL;
    }
    native_db *db;
    native_capi_pin *pin = api->pin(conn, &db);
    if (pin == NULL) {
        PyBuffer_Release(&key);
        PyBuffer_Release(&value);
        return NULL;
    }
    int rc;
    Py_BEGIN_ALLOW_THREADS
    if (delay_ms)
        usleep(delay_ms * 1000u);
    rc = api->put(db, key.buf, (size_t)key.len, value.buf, (size_t)value.len);
    api->unpin(pin);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&key);
    PyBuffer_Release(&value);
    if (rc != NATIVE_OK)
        return PyErr_Format(PyExc_ValueError, "put: native status %d", rc);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"api_version", api_version, METH_NOARGS, "Version of the imported C API table."},
    {"_import_api", import_api, METH_VARARGS, "_import_api(name, version): import check, ImportError on failure."},
    /* The text signatures ("name($module, ...)\n--\n\n") make inspect.signature work, as for a Python
     * function: the bindings' conformance matrix matches parameters by name. */
    {"checksum", checksum, METH_O, "checksum($module, data, /)\n--\n\nnative's checksum through the capsule."},
    {"process", (PyCFunction)(void (*)(void))process, METH_VARARGS | METH_KEYWORDS,
     "process($module, /, data, key=0, rounds=1)\n--\n\nnative's process through the capsule."},
    {"count", count, METH_O, "len(conn) through pin/count/unpin."},
    {"put", put, METH_VARARGS, "put(conn, key, value, delay_ms=0): pinned put with the GIL released."},
    {NULL, NULL, 0, NULL},
};

static int exec_module(PyObject *module)
{
    consumer_state *st = state_of(module);
    st->capsule = import_capi(NATIVE_CAPI_NAME, NATIVE_CAPI_VERSION, &st->api);
    return st->capsule == NULL ? -1 : 0;
}

static int traverse(PyObject *module, visitproc visit, void *arg)
{
    consumer_state *st = state_of(module);
    Py_VISIT(st->capsule);
    return 0;
}

static int clear(PyObject *module)
{
    consumer_state *st = state_of(module);
    Py_CLEAR(st->capsule);
    st->api = NULL;
    return 0;
}

static void free_module(void *module) { clear((PyObject *)module); }

static PyModuleDef_Slot slots[] = {
    {Py_mod_exec, exec_module},
    {0, NULL},
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_capsule_consumer",
    .m_doc = "Consumer of native's C API capsule (tests of the capsule mechanism).",
    .m_size = sizeof(consumer_state),
    .m_methods = methods,
    .m_slots = slots,
    .m_traverse = traverse,
    .m_clear = clear,
    .m_free = free_module,
};

PyMODINIT_FUNC PyInit__capsule_consumer(void) { return PyModuleDef_Init(&moduledef); }
