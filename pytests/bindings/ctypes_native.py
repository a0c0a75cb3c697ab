"""libnative through ctypes: CDLL with every signature declared by hand, plus the shared facade.

Buffers: a writable buffer is passed zero-copy through (c_char * n).from_buffer (which also pins it: a
bytearray cannot be resized while the export lives). `bytes` is passed zero-copy too (ctypes hands C a
pointer into the immutable object). Any other read-only buffer (memoryview of bytes, read-only mmap, ...)
cannot be exported writable, which from_buffer requires, so it is copied once with from_buffer_copy;
`backend.copies` counts those copies.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from contextlib import contextmanager
from ctypes import (
    CFUNCTYPE,
    POINTER,
    Structure,
    c_char,
    c_char_p,
    c_int,
    c_int32,
    c_int64,
    c_long,
    c_size_t,
    c_uint32,
    c_uint64,
    c_void_p,
)
from typing import Any

import facade
from facade import (  # noqa: F401
    CancelledError,
    Connection,
    ConnectionError,
    Error,
    InvalidArgumentError,
    InvalidStateError,
    NotFoundError,
    ProtocolError,
    Stats,
    TimeoutError,
)


class NativeError(Structure):
    _fields_ = [("code", c_int), ("sys_errno", c_int), ("op", c_char * 32), ("message", c_char * 256)]


class NativeOptions(Structure):
    _fields_ = [
        ("create", c_int32),
        ("sync", c_int32),
        ("max_key_size", c_uint32),
        ("max_value_size", c_uint32),
        ("file_mode", c_uint32),
    ]


class NativeStats(Structure):
    _fields_ = [(f, c_uint64) for f in facade.STATS_FIELDS[:8]] + [
        ("subscriptions", c_uint32),
        ("generation", c_uint32),
    ]


class NativeEvent(Structure):
    _fields_ = [
        ("kind", c_int),
        ("seq", c_uint64),
        ("key", c_void_p),
        ("klen", c_size_t),
        ("value", c_void_p),
        ("vlen", c_size_t),
    ]


class NativeDebugCounters(Structure):
    _fields_ = [(f, c_int64) for f in facade.COUNTER_FIELDS]


STRUCTS = {
    "native_error": NativeError,
    "native_options": NativeOptions,
    "native_stats": NativeStats,
    "native_event": NativeEvent,
    "native_debug_counters": NativeDebugCounters,
}

CANCEL_FN = CFUNCTYPE(c_int, c_void_p)
CALLBACK = CFUNCTYPE(None, POINTER(NativeEvent), c_void_p)
DB = c_void_p  # native_db * stays opaque: an address the facade never dereferences
ERR = POINTER(NativeError)

SIGNATURES: dict[str, tuple[Any, list[Any]]] = {
    "native_status_name": (c_char_p, [c_int]),
    "native_alloc": (c_void_p, [c_size_t]),
    "native_free": (None, [c_void_p]),
    "native_options_default": (None, [POINTER(NativeOptions)]),
    "native_options_validate": (c_int, [POINTER(NativeOptions), ERR]),
    "native_connect": (c_int, [c_char_p, POINTER(NativeOptions), c_int64, CANCEL_FN, c_void_p, POINTER(DB), ERR]),
    "native_close": (None, [DB]),
    "native_put": (c_int, [DB, c_void_p, c_size_t, c_void_p, c_size_t, ERR]),
    "native_get": (c_int, [DB, c_void_p, c_size_t, POINTER(c_void_p), POINTER(c_size_t), ERR]),
    "native_delete": (c_int, [DB, c_void_p, c_size_t, ERR]),
    "native_count": (c_size_t, [DB]),
    "native_flush": (c_int, [DB, ERR]),
    "native_stats_get": (c_int, [DB, POINTER(NativeStats)]),
    "native_last_error": (None, [DB, ERR]),
    "native_generation": (c_uint64, [DB]),
    "native_item_at": (
        c_int,
        [DB, c_size_t, c_uint64, POINTER(c_void_p), POINTER(c_size_t), POINTER(c_void_p), POINTER(c_size_t), ERR],
    ),
    "native_subscribe": (c_int, [DB, CALLBACK, c_void_p, POINTER(c_uint64), ERR]),
    "native_unsubscribe": (c_int, [DB, c_uint64]),
    "native_checksum": (c_uint64, [c_void_p, c_size_t]),
    "native_process": (c_int, [c_void_p, c_size_t, c_uint32, c_uint32, CANCEL_FN, c_void_p]),
    "native_add": (c_int, [c_long, c_long, POINTER(c_long)]),
    "native_debug_counters_get": (None, [POINTER(NativeDebugCounters)]),
    "native_debug_set_flush_delay_ms": (None, [c_uint32]),
}

SCALARS = {"long": c_long, "size_t": c_size_t, "uint64": c_uint64, "ptr": c_void_p, "db": DB}


def load(path: str) -> ctypes.CDLL:
    lib = ctypes.CDLL(path)  # CDLL (not PyDLL) releases the GIL around every call
    for name, (restype, argtypes) in SIGNATURES.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = restype, argtypes
    return lib


def _flat(data: Any) -> memoryview:
    mv = memoryview(data)  # TypeError for str and other non-buffers (c_void_p would take a str!)
    if not mv.c_contiguous:
        raise TypeError("buffer must be C-contiguous")
    return mv.cast("B") if mv.ndim != 1 or mv.format != "B" else mv


class CtypesBackend:
    name = "ctypes"
    NULL = None
    NULL_FN = CANCEL_FN()  # a NULL function pointer; ctypes rejects None for CFUNCTYPE arguments

    def __init__(self, lib: ctypes.CDLL) -> None:
        assert ctypes.sizeof(c_long) * 8 == facade.LONG_BITS
        self.lib = lib
        self.copies = 0

    def out(self, ctype: str) -> Any:
        return STRUCTS[ctype]() if ctype in STRUCTS else SCALARS[ctype]()

    ref = staticmethod(ctypes.byref)

    @staticmethod
    def val(obj: Any) -> Any:
        return obj if isinstance(obj, Structure) else obj.value

    @staticmethod
    def text(cstr: bytes | None) -> str:  # char[] fields and c_char_p results already arrive as bytes
        return (cstr or b"").decode("utf-8", "replace")

    @staticmethod
    def bytes_at(ptr: int | None, n: int) -> bytes:
        return ctypes.string_at(ptr, n) if n else b""

    @contextmanager
    def readable(self, data: Any) -> Iterator[tuple[Any, int]]:
        if type(data) is bytes:
            yield data, len(data)  # zero copy: c_void_p takes the address of the bytes' storage
            return
        mv = _flat(data)
        if mv.readonly:
            self.copies += 1
            arr = (c_char * mv.nbytes).from_buffer_copy(mv)
        else:
            arr = (c_char * mv.nbytes).from_buffer(mv)
        try:
            yield ctypes.addressof(arr), mv.nbytes  # an int: the caller cannot outlive-hold the export
        finally:
            del arr  # drops the export now, so a bytearray can be resized right after the call

    @contextmanager
    def writable(self, data: Any) -> Iterator[tuple[Any, int]]:
        mv = _flat(data)
        if mv.readonly:
            raise TypeError(f"a writable buffer is required, not read-only {type(data).__name__}")
        arr = (c_char * mv.nbytes).from_buffer(mv)
        try:
            yield ctypes.addressof(arr), mv.nbytes
        finally:
            del arr


backend = CtypesBackend(load(str(facade.lib_path())))
native = facade.Native(backend)
add, checksum, process, connect = native.add, native.checksum, native.process, native.connect
debug_counters = native.debug_counters
