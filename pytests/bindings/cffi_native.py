"""libnative through cffi, in both modes, behind the shared facade.

`abi`: ffi.dlopen at import, declarations taken on trust from cdefs.CDEF (a wrong one crashes, as ctypes).
`api`: the compiled out-of-line module `_native_cffi` (python pytests/bindings/cffi_build.py), whose build
checked the same declarations against native.h; None when not built, with the reason in API_SKIP_REASON.
Buffers: ffi.from_buffer exports any C-contiguous buffer, read-only ones included, so nothing is ever
copied on the way in (`backend.copies` stays 0); the `with` form releases the export right after the call.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import cdefs
import facade
from cffi import FFI
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

CTYPES = {
    "long": "long *",
    "size_t": "size_t *",
    "uint64": "uint64_t *",
    "ptr": "void **",
    "db": "native_db **",
    "native_error": "native_error *",
    "native_options": "native_options *",
    "native_stats": "native_stats *",
    "native_debug_counters": "native_debug_counters *",
}


class CffiBackend:
    def __init__(self, ffi: FFI, lib: Any, name: str) -> None:
        assert ffi.sizeof("long") * 8 == facade.LONG_BITS
        self.ffi, self.lib, self.name = ffi, lib, name
        self.NULL = self.NULL_FN = ffi.NULL
        self.copies = 0  # never incremented: from_buffer does not copy

    def out(self, ctype: str) -> Any:
        return self.ffi.new(CTYPES[ctype])  # zero-initialised, owned by the returned cdata

    @staticmethod
    def ref(obj: Any) -> Any:
        return obj  # ffi.new already returned a pointer

    def val(self, obj: Any) -> Any:
        return obj if self.ffi.typeof(obj).item.kind == "struct" else obj[0]

    def text(self, cstr: Any) -> str:
        return self.ffi.string(cstr).decode("utf-8", "replace")

    def bytes_at(self, ptr: Any, n: int) -> bytes:
        return self.ffi.unpack(self.ffi.cast("char *", ptr), n) if n else b""

    @contextmanager
    def _export(self, data: Any, writable: bool) -> Iterator[tuple[Any, int]]:
        try:
            buf = self.ffi.from_buffer("char[]", data, require_writable=writable)
        except BufferError as e:  # read-only or non-contiguous: a type problem for the caller
            raise TypeError(str(e)) from None
        with buf:
            yield buf, len(buf)

    def readable(self, data: Any) -> Any:
        return self._export(data, False)

    def writable(self, data: Any) -> Any:
        return self._export(data, True)


def _abi() -> facade.Native:
    ffi = FFI()
    ffi.cdef(cdefs.CDEF)
    return facade.Native(CffiBackend(ffi, ffi.dlopen(str(facade.lib_path())), "cffi-abi"))


def _api() -> tuple[facade.Native | None, str | None]:
    module, reason = facade.import_built("_native_cffi", "cffi API module", "python pytests/bindings/cffi_build.py")
    if module is None:
        return None, reason
    return facade.Native(CffiBackend(module.ffi, module.lib, "cffi-api")), None


abi = _abi()
api, API_SKIP_REASON = _api()
