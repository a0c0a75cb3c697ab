"""Every benchmark case driven from Python bytecode: which callable, which arguments, which driver loop.

Each case gets its own driver compiled from source (`def run(n, f, ...): for _ in range(n): f(2, 3)`), so it
has its own code object and its own inline caches: one mechanism's specialisation never helps or hurts
another's. The bench binary (benches/ffi.rs) times `case.run(n)` with criterion's iter_custom and subtracts
the empty-loop baseline (`for _ in range(n): pass`): the same loop minus the call, so what remains is the
call itself (argument loading is a LOAD_CONST or LOAD_FAST, ~1 ns, and stays in).

Mechanisms: PyO3 (the real `native` wrapper, plus a tiny PyO3 module from the bench binary for the 0/1/5-
argument shapes), hand-written C-API (_capi_bench, METH_VARARGS and METH_FASTCALL), cffi API mode
(_bench_cffi, compiled) and ABI mode (ffi.dlopen), ctypes CDLL (releases the GIL around each call) and
PyDLL (keeps it), Cython (the real binding `_native_cython` of pytests/bindings/cython/, plus
`_cython_shapes` for 0/1/5 arguments), and pybind11 / nanobind (cpp_bench.cpp) when they are installed.
Bare C is timed from Rust.
"""

from __future__ import annotations

import ctypes
import functools
import importlib
import os
import sys
import tempfile
import threading
from ctypes import (
    CFUNCTYPE,
    POINTER,
    byref,
    c_char,
    c_int,
    c_int32,
    c_int64,
    c_long,
    c_size_t,
    c_uint32,
    c_uint64,
    c_void_p,
)
from dataclasses import dataclass, field
from typing import Any, Callable

import bench_cdef
from cffi import FFI

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Column labels shared with the Rust report (benches/src/report.rs).
ARGS = {0: "0 args", 1: "1 arg", 2: "2 args", 5: "5 args"}
SIZES = {"64 B": 64, "64 KiB": 64 * 1024, "1 MiB": 1024 * 1024}


@dataclass
class Case:
    group: str  # criterion group, e.g. "call_2_args"
    mechanism: str  # row of the report
    param: str  # column of the report ("2 args", "64 KiB", ...)
    run: Callable[[int], Any]
    nbytes: int = 0  # bytes processed per call (throughput groups)
    copies: int | None = None  # copies of the input the mechanism makes (buffer groups)
    note: str = ""
    keepalive: list = field(default_factory=list)


def driver(tag: str, call: str, **bound: Any) -> Callable[[int], Any]:
    """A fresh code object: `for _ in range(n): <call>` with `bound` as fast locals."""
    params = "".join(f", {k}" for k in bound)
    src = f"def run(n{params}):\n    for _ in range(n):\n        {call}\n"
    ns: dict[str, Any] = {}
    exec(compile(src, f"<driver {tag}>", "exec"), ns)  # noqa: S102 - the driver loop is our own source
    return functools.partial(ns["run"], **bound)


def baseline() -> Callable[[int], Any]:
    return driver("baseline", "pass")


# ---------------------------------------------------------------- ctypes


class NativeOptions(ctypes.Structure):
    _fields_ = [
        ("create", c_int32),
        ("sync", c_int32),
        ("max_key_size", c_uint32),
        ("max_value_size", c_uint32),
        ("file_mode", c_uint32),
    ]


CT_CALLBACK = CFUNCTYPE(None, c_void_p, c_void_p)  # (const native_event *, void *user_data)


def ctypes_lib(loader: type, native_so: str, shapes_so: str) -> tuple[Any, Any]:
    lib, shapes = loader(native_so), loader(shapes_so)
    sigs = {
        "native_add": (c_int, [c_long, c_long, POINTER(c_long)]),
        "native_checksum": (c_uint64, [c_void_p, c_size_t]),
        "native_options_default": (None, [POINTER(NativeOptions)]),
        "native_options_validate": (c_int, [POINTER(NativeOptions), c_void_p]),
        "native_connect": (
            c_int,
            [ctypes.c_char_p, c_void_p, c_int64, c_void_p, c_void_p, POINTER(c_void_p), c_void_p],
        ),
        "native_close": (None, [c_void_p]),
        "native_put": (c_int, [c_void_p, c_void_p, c_size_t, c_void_p, c_size_t, c_void_p]),
        "native_get": (c_int, [c_void_p, c_void_p, c_size_t, POINTER(c_void_p), POINTER(c_size_t), c_void_p]),
        "native_free": (None, [c_void_p]),
        "native_subscribe": (c_int, [c_void_p, CT_CALLBACK, c_void_p, POINTER(c_uint64), c_void_p]),
        "native_unsubscribe": (c_int, [c_void_p, c_uint64]),
    }
    for name, (res, args) in sigs.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = res, args
    for name, n in (("shapes_zero", 0), ("shapes_one", 1), ("shapes_five", 5)):
        fn = getattr(shapes, name)
        fn.restype, fn.argtypes = c_long, [c_long] * n
    return lib, shapes


def ctypes_add(lib: Any) -> Callable[[int, int], int]:
    """native.add's contract by hand (minus range checks: ctypes silently truncates an oversized int)."""
    native_add = lib.native_add

    def add(a: int, b: int) -> int:
        out = c_long()
        if native_add(a, b, byref(out)):
            raise OverflowError("add: result does not fit in a C long")
        return out.value

    return add


def ctypes_get(lib: Any, db: c_void_p) -> Callable[[bytes], bytes]:
    native_get, native_free, string_at = lib.native_get, lib.native_free, ctypes.string_at

    def get(key: bytes) -> bytes:
        val, vlen = c_void_p(), c_size_t()
        rc = native_get(db, key, len(key), byref(val), byref(vlen), None)
        if rc:
            raise KeyError(key) if rc == 1 else OSError(rc, "get")
        try:
            return string_at(val, vlen.value)
        finally:
            native_free(val)

    return get


def ctypes_options(lib: Any) -> Callable[[dict], NativeOptions]:
    default, validate = lib.native_options_default, lib.native_options_validate

    def from_mapping(d: dict) -> NativeOptions:
        o = NativeOptions()
        default(byref(o))
        for k, v in d.items():
            setattr(o, k, v)  # no range check: ctypes truncates, so C must validate
        if validate(byref(o), None):
            raise ValueError("invalid options")
        return o

    return from_mapping


# ---------------------------------------------------------------- cffi


def cffi_add(ffi: FFI, lib: Any) -> Callable[[int, int], int]:
    native_add, new = lib.native_add, ffi.new

    def add(a: int, b: int) -> int:
        out = new("long *")
        if native_add(a, b, out):
            raise OverflowError("add: result does not fit in a C long")
        return out[0]

    return add


def cffi_get(ffi: FFI, lib: Any, db: Any) -> Callable[[bytes], bytes]:
    native_get, native_free, new, unpack, cast, NULL = (
        lib.native_get,
        lib.native_free,
        ffi.new,
        ffi.unpack,
        ffi.cast,
        ffi.NULL,
    )

    def get(key: bytes) -> bytes:
        val, vlen = new("void **"), new("size_t *")
        rc = native_get(db, key, len(key), val, vlen, NULL)
        if rc:
            raise KeyError(key) if rc == 1 else OSError(rc, "get")
        try:
            return unpack(cast("char *", val[0]), vlen[0])
        finally:
            native_free(val[0])

    return get


def cffi_options(ffi: FFI, lib: Any) -> Callable[[dict], Any]:
    default, validate, new, NULL = lib.native_options_default, lib.native_options_validate, ffi.new, ffi.NULL

    def from_mapping(d: dict) -> Any:
        o = new("native_options *")
        default(o)
        for k, v in d.items():
            setattr(o, k, v)  # cffi range-checks each field (OverflowError)
        if validate(o, NULL):
            raise ValueError("invalid options")
        return o

    return from_mapping


# ---------------------------------------------------------------- cases


class Sides:
    """Every loaded mechanism, plus the resources (store files, subscriptions) to tear down at the end."""

    def __init__(self, native_so: str, build_dir: str, pyo3_shapes: Any) -> None:
        import _bench_cffi
        import _capi_bench
        import native

        self.native, self.capi, self.shapes = native, _capi_bench, pyo3_shapes
        self.api_ffi, self.api = _bench_cffi.ffi, _bench_cffi.lib
        self.abi_ffi = FFI()
        self.abi_ffi.cdef(bench_cdef.CDEF)
        shapes_so = os.path.join(build_dir, "libbenchshapes.so")
        self.abi = self.abi_ffi.dlopen(native_so)
        self.abi_shapes = self.abi_ffi.dlopen(shapes_so)
        self.ct, self.ct_shapes = ctypes_lib(ctypes.CDLL, native_so, shapes_so)
        self.pyd, self.pyd_shapes = ctypes_lib(ctypes.PyDLL, native_so, shapes_so)
        self.cython, self.cython_shapes = cython_modules()
        self.cpp = {
            label: m
            for label, name in (("pybind11", "_pybind11_bench"), ("nanobind", "_nanobind_bench"))
            if (m := optional_module(name)) is not None
        }
        self.tmp = tempfile.TemporaryDirectory(prefix="ffi-bench-")
        self.closers: list[Callable[[], Any]] = []
        self.cases: list[Case] = []

    def path(self, name: str) -> str:
        return os.path.join(self.tmp.name, name)

    def close(self) -> None:
        for c in reversed(self.closers):  # closing a store stops its notifier: no callback after this
            c()
        self.closers.clear()
        self.cases.clear()
        self.tmp.cleanup()


def optional_module(name: str) -> Any:
    """A module build_ext.py may have skipped (its library not installed): None then, and no rows."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def cython_modules() -> tuple[Any, Any]:
    """The real Cython binding (it raises the shared exception classes of pytests/bindings/facade.py)
    and the shapes module; both built by build_ext.py."""
    bindings = os.path.join(REPO, "pytests", "bindings")
    if bindings not in sys.path:
        sys.path.append(bindings)
    return optional_module("_native_cython"), optional_module("_cython_shapes")


def call_cases(s: Sides) -> list[Case]:
    out: list[Case] = []
    lit = {0: "", 1: "2", 2: "2, 3", 5: "1, 2, 3, 4, 5"}

    def add(mech: str, nargs: int, f: Any, extra: str = "", note: str = "", **bound: Any) -> None:
        args = ", ".join(a for a in (lit[nargs], extra) if a)
        if nargs == 2 and not extra and f(2, 3) != 5:
            # A fast wrong answer is not a measurement (the C-API add once returned 0 for everything).
            raise SystemExit(f"{mech}: f(2, 3) = {f(2, 3)!r}, not 5")
        out.append(
            Case(
                f"call_{ARGS[nargs].replace(' ', '_')}",
                mech,
                ARGS[nargs],
                driver(f"{mech} {nargs}", f"f({args})", f=f, **bound),
                note=note,
            )
        )

    py = s.shapes
    for n, f in ((0, py.zero), (1, py.one), (5, py.five)):
        add("PyO3 #[pyfunction]", n, f)
    add(
        "PyO3 #[pyfunction]", 2, s.native.add, note="2 args: the real native.add; 0/1/5: the bench's own #[pyfunction]s"
    )
    add("PyO3 ffi METH_FASTCALL (native.add_fast)", 2, s.native.add_fast)
    c = s.capi
    for n, name in ((0, "zero"), (1, "one"), (2, "add"), (5, "five")):
        add("C-API METH_FASTCALL", n, getattr(c, f"fast_{name}"))
        add("C-API METH_VARARGS", n, getattr(c, f"var_{name}"))
    for mech, ffi, lib, shapes in (("cffi API", s.api_ffi, s.api, s.api), ("cffi ABI", s.abi_ffi, s.abi, s.abi_shapes)):
        for n, name in ((0, "zero"), (1, "one"), (5, "five")):
            add(mech, n, getattr(shapes, f"shapes_{name}"))
        add(mech, 2, lib.native_add, extra="out", out=ffi.new("long *"), note="raw call, out-param preallocated")
        add(f"{mech}, add() wrapper", 2, cffi_add(ffi, lib), note="same contract as native.add")
    for mech, lib, shapes in (("ctypes CDLL", s.ct, s.ct_shapes), ("ctypes PyDLL (GIL kept)", s.pyd, s.pyd_shapes)):
        for n, name in ((0, "zero"), (1, "one"), (5, "five")):
            add(mech, n, getattr(shapes, f"shapes_{name}"))
        add(mech, 2, lib.native_add, extra="out", out=byref(c_long()), note="raw call, out-param preallocated")
    add("ctypes CDLL, add() wrapper", 2, ctypes_add(s.ct), note="contract of native.add minus range checks")
    if s.cython is not None and s.cython_shapes is not None:
        for n, f in ((0, s.cython_shapes.zero), (1, s.cython_shapes.one), (5, s.cython_shapes.five)):
            add("Cython def", n, f)
        add("Cython def", 2, s.cython.add, note="2 args: the real Cython binding's add; 0/1/5: _cython_shapes")
    for label, m in s.cpp.items():
        for n, name in ((0, "zero"), (1, "one"), (2, "add"), (5, "five")):
            add(label, n, getattr(m, name), note="m.def of a C++ function; same contract as native.add")
    return out


def checksum_cases(s: Sides) -> list[Case]:
    out: list[Case] = []
    for label, size in SIZES.items():
        data = bytes((i * 7 + 3) & 0xFF for i in range(size))
        mutable = bytearray(data)

        def add(mech: str, call: str, copies: int, note: str = "", **bound: Any) -> None:
            out.append(
                Case(
                    f"checksum_{label.replace(' ', '')}",
                    mech,
                    label,
                    driver(f"{mech} {label}", call, **bound),
                    nbytes=size,
                    copies=copies,
                    note=note,
                )
            )

        add("PyO3 native.checksum", "f(data)", 0, "buffer protocol", f=s.native.checksum, data=data)
        if s.cython is not None:
            add("Cython checksum", "f(data)", 0, "typed memoryview", f=s.cython.checksum, data=data)
        for mech, m in s.cpp.items():
            add(f"{mech} checksum", "f(data)", 0, "PyObject_GetBuffer", f=m.checksum, data=data)
        add("C-API METH_FASTCALL", "f(data)", 0, "buffer protocol", f=s.capi.fast_checksum, data=data)
        add(
            "cffi API, ffi.from_buffer",
            "f(from_buffer(data), len(data))",
            0,
            f=s.api.native_checksum,
            from_buffer=s.api_ffi.from_buffer,
            data=data,
        )
        add(
            "cffi ABI, ffi.from_buffer",
            "f(from_buffer(data), len(data))",
            0,
            f=s.abi.native_checksum,
            from_buffer=s.abi_ffi.from_buffer,
            data=data,
        )
        add("cffi ABI, bytes as void *", "f(data, len(data))", 0, f=s.abi.native_checksum, data=data)
        add(
            "cffi ABI, ffi.new('char[]', data)",
            "f(new('char[]', data), len(data))",
            1,
            f=s.abi.native_checksum,
            new=s.abi_ffi.new,
            data=data,
        )
        add("ctypes CDLL, bytes as c_void_p", "f(data, len(data))", 0, f=s.ct.native_checksum, data=data)
        add(
            "ctypes CDLL, from_buffer(bytearray)",
            "f((c_char * len(buf)).from_buffer(buf), len(buf))",
            0,
            "writable buffers only",
            f=s.ct.native_checksum,
            c_char=c_char,
            buf=mutable,
        )
        add(
            "ctypes CDLL, from_buffer_copy(bytes)",
            "f((c_char * len(data)).from_buffer_copy(data), len(data))",
            1,
            "what a read-only non-bytes buffer forces",
            f=s.ct.native_checksum,
            c_char=c_char,
            data=data,
        )
    return out


def handle_cases(s: Sides) -> list[Case]:
    """conn.get on a 16-byte value, and the put -> notifier thread -> Python callback round trip."""
    out: list[Case] = []
    key, val = b"key", b"v" * 16
    native = s.native

    # --- get
    conn = native.connect(s.path("pyo3-get.db"))
    conn.put(key, val)
    s.closers.append(conn.close)
    out.append(Case("handle_get", "PyO3 Connection.get", "get", driver("pyo3 get", "f(key)", f=conn.get, key=key)))
    if s.cython is not None:
        cy_conn = s.cython.connect(s.path("cython-get.db"))
        cy_conn.put(key, val)
        s.closers.append(cy_conn.close)
        out.append(
            Case("handle_get", "Cython Connection.get", "get", driver("cython get", "f(key)", f=cy_conn.get, key=key))
        )
    for mech, ffi, lib in (("cffi API", s.api_ffi, s.api), ("cffi ABI", s.abi_ffi, s.abi)):
        db = cffi_connect(s, ffi, lib, f"{mech}-get.db")
        lib.native_put(db, key, len(key), val, len(val), ffi.NULL)
        out.append(
            Case(
                "handle_get",
                f"{mech}, get() wrapper",
                "get",
                driver(f"{mech} get", "f(key)", f=cffi_get(ffi, lib, db), key=key),
            )
        )
    db = ctypes_connect(s, s.ct, "ctypes-get.db")
    s.ct.native_put(db, key, len(key), val, len(val), None)
    out.append(
        Case(
            "handle_get",
            "ctypes CDLL, get() wrapper",
            "get",
            driver("ctypes get", "f(key)", f=ctypes_get(s.ct, db), key=key),
        )
    )

    # --- callback round trip: put, then block until the callback (on the notifier thread) releases a lock
    def lock_pair() -> tuple[Any, Any]:
        lock = threading.Lock()
        lock.acquire()
        return lock, lock.release

    def bound(args: tuple) -> tuple[str, dict]:
        names = [f"a{i}" for i in range(len(args))]
        return f"put({', '.join(names)})", dict(zip(names, args))

    def roundtrip(mech: str, put: Callable, put_args: tuple, wake_cb_keepalive: Any, lock: Any) -> None:
        call, kw = bound(put_args)
        out.append(
            Case(
                "callback",
                mech,
                "put → callback",
                driver(f"{mech} cb", f"{call}\n        acquire()", put=put, acquire=lock.acquire, **kw),
                note="",
                keepalive=[wake_cb_keepalive],
            )
        )

    def put_only(mech: str, put: Callable, put_args: tuple) -> None:
        call, kw = bound(put_args)
        out.append(Case("callback", mech, "put alone", driver(f"{mech} put", call, put=put, **kw), note=""))

    conn = native.connect(s.path("pyo3-put.db"))
    s.closers.append(conn.close)
    put_only("PyO3", conn.put, (key, val))
    conn = native.connect(s.path("pyo3-cb.db"))
    lock, release = lock_pair()
    sub = conn.subscribe(lambda ev, release=release: release())
    s.closers.append(conn.close)
    roundtrip("PyO3", conn.put, (key, val), sub, lock)

    if s.cython is not None:
        cy_conn = s.cython.connect(s.path("cython-put.db"))
        s.closers.append(cy_conn.close)
        put_only("Cython", cy_conn.put, (key, val))
        cy_conn = s.cython.connect(s.path("cython-cb.db"))
        lock, release = lock_pair()
        cy_sub = cy_conn.subscribe(lambda ev, release=release: release())
        s.closers.append(cy_conn.close)
        roundtrip("Cython", cy_conn.put, (key, val), cy_sub, lock)

    for mech, ffi, lib in (("cffi API", s.api_ffi, s.api), ("cffi ABI", s.abi_ffi, s.abi)):
        db = cffi_connect(s, ffi, lib, f"{mech}-put.db")
        put_only(mech, lib.native_put, (db, key, len(key), val, len(val), ffi.NULL))
        db = cffi_connect(s, ffi, lib, f"{mech}-cb.db")
        lock, release = lock_pair()
        if mech == "cffi API":

            @ffi.def_extern(name="bench_on_event")
            def on_event(ev: Any, user: Any, release: Any = release) -> None:
                release()

            cb: Any = lib.bench_on_event
        else:
            cb = ffi.callback("void(const native_event *, void *)", lambda ev, user, release=release: release())
        sub_id = ffi.new("uint64_t *")
        assert lib.native_subscribe(db, cb, ffi.NULL, sub_id, ffi.NULL) == 0
        roundtrip(mech, lib.native_put, (db, key, len(key), val, len(val), ffi.NULL), cb, lock)

    db = ctypes_connect(s, s.ct, "ctypes-put.db")
    put_only("ctypes CDLL", s.ct.native_put, (db, key, len(key), val, len(val), None))
    db = ctypes_connect(s, s.ct, "ctypes-cb.db")
    lock, release = lock_pair()
    ccb = CT_CALLBACK(lambda ev, user, release=release: release())
    sub_id = c_uint64()
    assert s.ct.native_subscribe(db, ccb, None, byref(sub_id), None) == 0
    roundtrip("ctypes CDLL", s.ct.native_put, (db, key, len(key), val, len(val), None), ccb, lock)
    return out


def cffi_connect(s: Sides, ffi: FFI, lib: Any, name: str) -> Any:
    pdb = ffi.new("native_db **")
    rc = lib.native_connect(s.path(name).encode(), ffi.NULL, 0, ffi.NULL, ffi.NULL, pdb, ffi.NULL)
    assert rc == 0, rc
    db = pdb[0]
    s.closers.append(lambda: lib.native_close(db))
    return db


def ctypes_connect(s: Sides, lib: Any, name: str) -> c_void_p:
    db = c_void_p()
    rc = lib.native_connect(s.path(name).encode(), None, 0, None, None, byref(db), None)
    assert rc == 0, rc
    s.closers.append(lambda: lib.native_close(db))
    return db


def struct_cases(s: Sides) -> list[Case]:
    d = {"create": True, "sync": False, "max_key_size": 256, "max_value_size": 65536, "file_mode": 0o600}
    g, p = "struct_options", "from dict"
    return [
        Case(
            g,
            "PyO3 Options.from_mapping",
            p,
            driver("pyo3 opts", "f(d)", f=s.native.Options.from_mapping, d=d),
            note="validated in Rust",
        ),
        Case(
            g,
            "cffi API, by hand",
            p,
            driver("api opts", "f(d)", f=cffi_options(s.api_ffi, s.api), d=d),
            note="ffi.new + setattr + native_options_validate",
        ),
        Case(
            g,
            "cffi ABI, by hand",
            p,
            driver("abi opts", "f(d)", f=cffi_options(s.abi_ffi, s.abi), d=d),
            note="ffi.new + setattr + native_options_validate",
        ),
        Case(
            g,
            "ctypes, by hand",
            p,
            driver("ctypes opts", "f(d)", f=ctypes_options(s.ct), d=d),
            note="Structure + setattr + native_options_validate",
        ),
    ]


def all_cases(native_so: str, build_dir: str, pyo3_shapes: Any) -> tuple[Sides, list[Case]]:
    s = Sides(native_so, build_dir, pyo3_shapes)
    cases = call_cases(s) + checksum_cases(s) + handle_cases(s) + struct_cases(s)
    s.cases = cases  # owns every Case's keepalive (C-callable callbacks!) for as long as Sides lives
    for c in cases:  # every case must work before anything is timed
        c.run(3)
    return s, cases
