"""The Pythonic face of libnative, written once and parameterised over a binding backend.

ctypes_native and cffi_native (ABI and API mode) each supply a small backend: how to make an out
parameter, pass it by reference, read it back, and pin a buffer. Everything else -- argument checks,
error translation, ownership of returned blocks (native_free), handle lifetime -- lives here, so the
three mechanisms differ only where the mechanisms themselves differ.

A compiled binding (the Cython module `_native_cython`) does all of that in its own code and only shares
the exception classes and `make_error` from here; `Compiled` gives it the same face for the tests.
"""

from __future__ import annotations

import builtins
import dataclasses
import importlib
import math
import operator
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

if TYPE_CHECKING:
    from typing_extensions import Self

REPO = Path(__file__).resolve().parents[2]

# Status codes of native.h (the cffi API build checks the cdef copy against the header).
OK, ENOTFOUND, EIO, ETIMEOUT, EPROTOCOL, ESTATE, EINVAL, ENOMEM, ECANCELLED, EDONE = range(10)
LONG_BITS = 64  # LP64 (Linux x86-64/aarch64), asserted by the backends against sizeof(long)
LONG_MIN, LONG_MAX = -(2 ** (LONG_BITS - 1)), 2 ** (LONG_BITS - 1) - 1
U32_MAX = 2**32 - 1
INT_MIN, INT_MAX = -(2**31), 2**31 - 1

STATS_FIELDS = (
    "keys",
    "puts",
    "gets",
    "deletes",
    "file_bytes",
    "events_delivered",
    "events_dropped",
    "events_pending",
    "subscriptions",
    "generation",
)
COUNTER_FIELDS = ("live_handles", "live_subscriptions", "live_blocks", "calls")


def lib_path() -> Path:
    """libnative.so: $NATIVE_LIB if set, else the `make -C libnative` output."""
    override = os.environ.get("NATIVE_LIB")
    return Path(override) if override else REPO / "libnative" / "build" / "libnative.so"


def unbuilt(reason: str) -> str:
    """The skip reason of a compiled binding that is not importable; an ImportError instead when
    $FFI_HARNESS_REQUIRE_BINDINGS=1 (set where the modules were built: CI's pytest step, the mutant
    detectors), so a missing build fails the run instead of silently skipping every test of a binding."""
    if os.environ.get("FFI_HARNESS_REQUIRE_BINDINGS") == "1":
        raise ImportError(f"{reason} (FFI_HARNESS_REQUIRE_BINDINGS=1: this run must test it)")
    return reason


def loadable_bindings() -> dict[str, Any]:
    """Every binding of libnative this interpreter can load, by name (every_binding.AVAILABLE), for a test
    outside pytests/bindings that runs `native` and the bindings side by side. Empty when libnative.so is not
    built or a binding's own dependency is missing (ci/gil-check's debug venv has no cffi: it runs pytests/
    without bindings/), unless $FFI_HARNESS_REQUIRE_BINDINGS=1 (see `unbuilt`)."""
    if not lib_path().exists():
        unbuilt(f"libnative.so is not built ({lib_path()})")
        return {}
    try:
        from every_binding import AVAILABLE  # here: it loads libnative, and cffi_native imports this module
    except ImportError as missing:
        unbuilt(f"the bindings of libnative do not import: {missing}")
        return {}
    return dict(AVAILABLE)


# Where the compiled bindings' build scripts put their modules (cffi_build.py, cython_build.py,
# capsule_consumer/build.py).
BUILD_DIR = Path(__file__).resolve().parent / "build"


def import_built(name: str, what: str, build: str) -> tuple[ModuleType | None, str | None]:
    """(the compiled module `name` from BUILD_DIR, None), or (None, the skip reason) when it is not built
    (see unbuilt); `build` is the command that builds it."""
    sys.path.insert(0, str(BUILD_DIR))
    try:
        return importlib.import_module(name), None
    except ImportError as e:
        return None, unbuilt(f"{what} not importable ({e}); build it: {build}")
    finally:
        sys.path.remove(str(BUILD_DIR))


# ---- exceptions (names of the PyO3 wrapper's; each keeps op, code name, errno and library message) ----


INT64_MAX = 2**63 - 1


def timeout_ms(timeout: object) -> int:
    """`timeout` seconds as libnative's int64 milliseconds, converted as the PyO3 wrapper does.

    None, infinity, or a wait too long for int64 milliseconds is -1 (wait forever): handing ctypes the
    bigger int would mask it to 64 bits silently, and 2**64 ms would become 0, "do not wait". A positive
    wait rounds up, never down to 0.
    """
    if timeout is None:
        return -1
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds or None, not {type(timeout).__name__}")
    ms = float(timeout) * 1000
    if math.isnan(ms) or ms < 0:
        raise ValueError("timeout must be a non-negative number of seconds")
    if ms >= INT64_MAX:
        return -1
    return math.ceil(ms)


class Error(Exception):
    op: str | None = None
    code: str | None = None
    message: str | None = None


class ConnectionError(Error, OSError):
    pass


class TimeoutError(Error, builtins.TimeoutError):
    pass


class ProtocolError(Error):
    pass


class InvalidStateError(Error):
    pass


class InvalidArgumentError(Error, ValueError):
    pass


class NotFoundError(Error, KeyError):
    pass


class OutOfMemoryError(Error, MemoryError):
    pass


class CancelledError(Error):
    pass


_ERROR_CLASSES = {
    EIO: ConnectionError,
    ETIMEOUT: TimeoutError,
    EPROTOCOL: ProtocolError,
    ESTATE: InvalidStateError,
    EINVAL: InvalidArgumentError,
    ENOTFOUND: NotFoundError,
    ENOMEM: OutOfMemoryError,
    ECANCELLED: CancelledError,
}


class ErrInfo(NamedTuple):
    code: int
    errno: int
    op: str
    message: str


def make_error(info: ErrInfo, code_name: str, filename: str | None = None, key: bytes | None = None) -> Error:
    cls = _ERROR_CLASSES.get(info.code, Error)
    if cls is ConnectionError and info.errno:
        exc: Error = cls(info.errno, os.strerror(info.errno), filename)  # OSError fills errno/strerror/filename
    elif cls is NotFoundError and key is not None:
        exc = cls(key)
    else:
        exc = cls(f"{info.op}: {info.message} ({code_name})")
    exc.op, exc.code, exc.message = info.op, code_name, info.message
    if not isinstance(exc, OSError) or exc.errno is None:
        exc.errno = info.errno or None  # type: ignore[attr-defined]
    return exc


@dataclasses.dataclass(frozen=True)
class Stats:
    keys: int
    puts: int
    gets: int
    deletes: int
    file_bytes: int
    events_delivered: int
    events_dropped: int
    events_pending: int
    subscriptions: int
    generation: int

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


# ---- what a backend provides ----


class Backend(Protocol):
    name: str
    lib: Any  # native_* callables with C signatures declared
    NULL: Any  # null data pointer
    NULL_FN: Any  # null native_cancel_fn
    copies: int  # buffers that had to be copied to reach C (see readable())

    def out(self, ctype: str) -> Any: ...  # "long", "size_t", "uint64", "ptr", "db", "native_error", ...
    def ref(self, obj: Any) -> Any: ...  # pass an out() object as a pointer argument
    def val(self, obj: Any) -> Any: ...  # scalar value or struct of an out() object
    def text(self, cstr: Any) -> str: ...  # char[] field or const char * result
    def bytes_at(self, ptr: Any, n: int) -> bytes: ...
    def readable(self, data: Any) -> Any: ...  # context manager -> (pointer, length); TypeError if not a buffer
    def writable(self, data: Any) -> Any: ...  # same, TypeError if read-only


def _in_c_range(x: Any, lo: int, hi: int, c_type: str) -> int:
    """The int a C parameter of `c_type` gets, or OverflowError: ctypes would silently truncate an
    out-of-range int (cffi and Cython refuse it), so every int crossing the facade is checked here."""
    v = operator.index(x)
    if not lo <= v <= hi:
        raise OverflowError(f"{v} does not fit in a C {c_type}")
    return v


def _long(x: Any) -> int:
    return _in_c_range(x, LONG_MIN, LONG_MAX, "long")


class Native:
    """Module-level API (add, checksum, process, connect) over one backend."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.name = backend.name
        self.lib = backend.lib

    def __repr__(self) -> str:
        return f"<libnative via {self.name}>"

    def status_name(self, code: int) -> str:
        return self.backend.text(self.lib.native_status_name(_in_c_range(code, INT_MIN, INT_MAX, "int")))

    def error(self, err: Any, **kw: Any) -> Error:
        e = self.backend.val(err)
        info = ErrInfo(e.code, e.sys_errno, self.backend.text(e.op), self.backend.text(e.message))
        return make_error(info, self.status_name(info.code), **kw)

    def add(self, a: int, b: int) -> int:
        a, b = _long(a), _long(b)  # ctypes would silently truncate an out-of-range int
        out = self.backend.out("long")
        if self.lib.native_add(a, b, self.backend.ref(out)) != OK:
            raise OverflowError(f"{a} + {b} does not fit in a C long")
        return self.backend.val(out)

    def checksum(self, data: Any) -> int:
        with self.backend.readable(data) as (p, n):
            return self.lib.native_checksum(p, n)

    def process(self, data: Any, *, key: int = 0, rounds: int = 1) -> None:
        key, rounds = operator.index(key), operator.index(rounds)
        if not 0 <= key <= U32_MAX:
            raise OverflowError(f"key {key} does not fit in 32 unsigned bits")
        if not 1 <= rounds <= U32_MAX:
            raise ValueError(f"rounds must be in 1..={U32_MAX}, got {rounds}")
        with self.backend.writable(data) as (p, n):
            rc = self.lib.native_process(p, n, key, rounds, self.backend.NULL_FN, self.backend.NULL)
        if rc != OK:
            raise make_error(ErrInfo(rc, 0, "process", "native_process failed"), self.status_name(rc))

    def connect(self, path: str | os.PathLike[str] | bytes, *, timeout: float | None = None) -> Connection:
        raw = os.fsencode(path)
        if b"\0" in raw:
            raise ValueError("embedded NUL in path")  # a char * would silently cut the path here
        b = self.backend
        out, err = b.out("db"), b.out("native_error")
        if self.lib.native_connect(raw, b.NULL, timeout_ms(timeout), b.NULL_FN, b.NULL, b.ref(out), b.ref(err)) != OK:
            raise self.error(err, filename=os.fsdecode(raw))
        return Connection(self, b.val(out), os.fsdecode(raw))

    def debug_counters(self) -> dict[str, int]:
        out = self.backend.out("native_debug_counters")
        self.lib.native_debug_counters_get(self.backend.ref(out))
        c = self.backend.val(out)
        return {f: int(getattr(c, f)) for f in COUNTER_FIELDS}

    def set_flush_delay_ms(self, ms: int) -> None:
        self.lib.native_debug_set_flush_delay_ms(_in_c_range(ms, 0, U32_MAX, "uint32_t"))


class CompiledBackend:
    """What the tests read of a backend, for a binding that is compiled code: it never copies a buffer."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.copies = 0


class Compiled:
    """A binding written as an extension module (Cython) that implements add/checksum/process/connect
    itself: the module's own functions, under the names the tests use (no Python layer in between)."""

    def __init__(self, name: str, module: Any) -> None:
        self.name, self.module, self.backend = name, module, CompiledBackend(name)
        self.add, self.checksum, self.process = module.add, module.checksum, module.process
        self.connect, self.debug_counters = module.connect, module.debug_counters
        self.status_name, self.set_flush_delay_ms = module.status_name, module.set_flush_delay_ms

    def __repr__(self) -> str:
        return f"<libnative via {self.name}>"


class Connection:
    """Owns one native_db handle; close() is idempotent, waits for calls in flight, and the finaliser closes
    a forgotten one."""

    def __init__(self, native: Native, handle: Any, path: str) -> None:
        self._n, self._b, self._lib = native, native.backend, native.lib
        # ctypes and cffi release the GIL for every foreign call, so another thread's close() can come while
        # a call is in C: each call pins the handle (_pinned), and close() waits for the pins to drain.
        self._state = threading.Condition()  # guards _h, _pins and _freed
        self._pins = 0
        self._freed = False
        self._h = handle
        self.path = path

    @property
    def closed(self) -> bool:
        return self._h is None

    def _handle(self, op: str) -> Any:
        if self._h is None:
            raise make_error(ErrInfo(ESTATE, 0, op, "connection is closed"), "NATIVE_ESTATE")
        return self._h

    @contextmanager
    def _pinned(self, op: str) -> Iterator[Any]:
        """The handle, kept open for the block (one native call): InvalidStateError once closed."""
        with self._state:
            h = self._handle(op)
            self._pins += 1
        try:
            yield h
        finally:
            with self._state:
                self._pins -= 1
                if not self._pins:
                    self._state.notify_all()

    def close(self) -> None:
        with self._state:
            h, self._h = self._h, None  # cleared first: no call starts now, native_close runs exactly once
            if h is None:
                # Closed, or another thread's close() is under way: return once the handle is freed.
                while not self._freed:
                    self._state.wait()
                return
            while self._pins:  # calls in C on another thread finish with the handle first
                self._state.wait()
        self._lib.native_close(h)
        with self._state:
            self._freed = True
            self._state.notify_all()

    def __del__(self) -> None:
        if getattr(self, "_h", None) is not None:
            self.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Connection {self.path!r} via {self._n.name}{' closed' if self.closed else ''}>"

    def put(self, key: Any, value: Any) -> None:
        b = self._b
        err = b.out("native_error")
        with b.readable(key) as (k, kn), b.readable(value) as (v, vn), self._pinned("put") as h:
            if self._lib.native_put(h, k, kn, v, vn, b.ref(err)) != OK:
                raise self._n.error(err)

    def get(self, key: Any) -> bytes:
        b = self._b
        val, vlen, err = b.out("ptr"), b.out("size_t"), b.out("native_error")
        with b.readable(key) as (k, kn), self._pinned("get") as h:
            if self._lib.native_get(h, k, kn, b.ref(val), b.ref(vlen), b.ref(err)) != OK:
                raise self._n.error(err, key=bytes(key))
        return self._take(b.val(val), b.val(vlen))

    def _take(self, ptr: Any, n: int) -> bytes:
        """Copies a native_alloc block into bytes and frees it with the matching allocator."""
        try:
            return self._b.bytes_at(ptr, n)
        finally:
            self._lib.native_free(ptr)

    def delete(self, key: Any) -> None:
        b = self._b
        err = b.out("native_error")
        with b.readable(key) as (k, kn), self._pinned("delete") as h:
            if self._lib.native_delete(h, k, kn, b.ref(err)) != OK:
                raise self._n.error(err, key=bytes(key))

    def __len__(self) -> int:
        with self._pinned("len") as h:
            n = self._lib.native_count(h)
        if n == 0:  # also what a handle inherited across fork() reads: native_stats_get tells them apart
            self._native_stats("len")
        return n

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        # The snapshot is taken here, when the iterator is made (as the PyO3 wrapper does), not at its
        # first next(): a write between the two must make it stale, and a closed handle refuses now.
        with self._pinned("items") as h:
            return self._items_of(self._lib.native_generation(h))

    def _items_of(self, generation: int) -> Iterator[tuple[bytes, bytes]]:
        b = self._b
        i = 0
        while True:
            k, kl, v, vl, err = b.out("ptr"), b.out("size_t"), b.out("ptr"), b.out("size_t"), b.out("native_error")
            with self._pinned("items") as h:  # per step: a close() between steps must not wait for the caller
                rc = self._lib.native_item_at(h, i, generation, b.ref(k), b.ref(kl), b.ref(v), b.ref(vl), b.ref(err))
            if rc == EDONE:
                return
            if rc != OK:
                raise self._n.error(err)
            key = self._take(b.val(k), b.val(kl))
            yield key, self._take(b.val(v), b.val(vl))
            i += 1

    def flush(self) -> None:
        err = self._b.out("native_error")
        with self._pinned("flush") as h:
            if self._lib.native_flush(h, self._b.ref(err)) != OK:
                raise self._n.error(err)

    def _native_stats(self, op: str) -> Any:
        out, last = self._b.out("native_stats"), self._b.out("native_error")
        with self._pinned(op) as h:
            rc = self._lib.native_stats_get(h, self._b.ref(out))
            if rc != OK:  # native_stats_get has no error out-parameter: the handle's last error says why
                self._lib.native_last_error(h, self._b.ref(last))
        if rc != OK:
            message = self._b.text(self._b.val(last).message)
            raise make_error(ErrInfo(rc, 0, op, message), self._n.status_name(rc))
        return self._b.val(out)

    def stats(self) -> Stats:
        s = self._native_stats("stats")
        return Stats(**{f: int(getattr(s, f)) for f in STATS_FIELDS})
