// The same bench surface (0/1/2/5-argument calls, zero-copy checksum) through the next-best binding
// libraries, pybind11 and nanobind, from one source: BENCH_PYBIND11 or BENCH_NANOBIND picks the library.
// add() has native.add's contract: C long arguments (TypeError for a float, OverflowError when out of
// range, both done by the libraries' integer casters) and OverflowError when the sum does not fit.
// checksum() reads any C-contiguous buffer in place and releases the GIL from 64 KiB, like native.
#include <Python.h>

#include <cstdint>
#include <stdexcept>

#if defined(BENCH_PYBIND11)
#include <pybind11/pybind11.h>
namespace py = pybind11;
#define RAISE_PENDING_PYTHON_ERROR() throw py::error_already_set()
#elif defined(BENCH_NANOBIND)
#include <nanobind/nanobind.h>
namespace nb = nanobind;
#define RAISE_PENDING_PYTHON_ERROR() throw nb::python_error()
#else
#error "define BENCH_PYBIND11 or BENCH_NANOBIND"
#endif

#include "native.h"
extern "C" {
#include "shapes.h"
}

namespace {

long add(long a, long b)
{
    long out = 0;
    if (native_add(a, b, &out) != NATIVE_OK)
        throw std::overflow_error("add: result does not fit in a C long");
    return out;
}

long five(long a, long b, long c, long d, long e) { return shapes_five(a, b, c, d, e); }

// Buffers: a simple (C-contiguous) read-only export held for the whole call.
struct Export {
    Py_buffer view{};
    explicit Export(PyObject *obj)
    {
        if (PyObject_GetBuffer(obj, &view, PyBUF_SIMPLE) != 0)
            RAISE_PENDING_PYTHON_ERROR();  // the TypeError/BufferError CPython set
    }
    ~Export() { PyBuffer_Release(&view); }
    Export(const Export &) = delete;
    Export &operator=(const Export &) = delete;
};

}  // namespace

#if defined(BENCH_PYBIND11)
PYBIND11_MODULE(_pybind11_bench, m)
{
    m.doc() = "pybind11 bench shapes over libnative";
    m.def("zero", &shapes_zero);
    m.def("one", &shapes_one);
    m.def("add", &add);
    m.def("five", &five);
    m.def("checksum", [](py::handle data) {
        Export e(data.ptr());
        std::uint64_t h;
        if (e.view.len >= 64 * 1024) {
            py::gil_scoped_release nogil;
            h = native_checksum(e.view.buf, static_cast<size_t>(e.view.len));
        } else {
            h = native_checksum(e.view.buf, static_cast<size_t>(e.view.len));
        }
        return h;
    });
}

#else
NB_MODULE(_nanobind_bench, m)
{
    m.doc() = "nanobind bench shapes over libnative";
    m.def("zero", &shapes_zero);
    m.def("one", &shapes_one);
    m.def("add", &add);
    m.def("five", &five);
    m.def("checksum", [](nb::handle data) {
        Export e(data.ptr());
        std::uint64_t h;
        if (e.view.len >= 64 * 1024) {
            nb::gil_scoped_release nogil;
            h = native_checksum(e.view.buf, static_cast<size_t>(e.view.len));
        } else {
            h = native_checksum(e.view.buf, static_cast<size_t>(e.view.len));
        }
        return h;
    });
}
#endif
