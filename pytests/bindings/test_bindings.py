"""ctypes, cffi ABI, cffi API and Cython bindings of libnative: same inputs, same answers, same ledger.

Needs `make -C libnative`; the cffi API cases also need `python pytests/bindings/cffi_build.py`, the
Cython ones `python pytests/bindings/cython_build.py`.
The differential test against the PyO3 wrapper runs when `import native` works.
"""

from __future__ import annotations

import array
import builtins
import ctypes
import errno
import importlib.util
import math
import mmap
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any, Callable

import facade
import pytest
from _refs import in_a_forked_child

if not facade.lib_path().exists():
    pytest.skip(f"{facade.lib_path()} not built: run `make -C libnative`", allow_module_level=True)

import cdefs
import cffi_native
import ctypes_native
from every_binding import AVAILABLE, MECHANISMS, SKIP_REASONS


@pytest.fixture(params=list(MECHANISMS))
def nat(request: pytest.FixtureRequest) -> facade.Native:
    m = MECHANISMS[request.param]
    if m is None:
        pytest.skip(SKIP_REASONS.get(request.param) or "unavailable")
    return m


@pytest.fixture(autouse=True)
def ledger_neutral() -> Any:
    """Every test leaves libnative's live handles, subscriptions and blocks where it found them."""
    before = ctypes_native.debug_counters()
    yield
    after = ctypes_native.debug_counters()
    for key in ("live_handles", "live_subscriptions", "live_blocks"):
        assert after[key] == before[key], key


def ref_process(data: bytes, key: int, rounds: int) -> bytes:
    k = key.to_bytes(4, "little")
    b = bytearray(data)
    for _ in range(rounds):
        for i in range(len(b)):
            b[i] = ((b[i] ^ k[i % 4]) + (i & 0xFF)) & 0xFF
    return bytes(b)


def fnv1a(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for byte in data:
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


# ---------------------------------------------------------------- plain functions


def test_add(nat: facade.Native) -> None:
    assert nat.add(2, 3) == 5
    assert nat.add(True, -7) == -6
    assert nat.add(facade.LONG_MAX, 0) == facade.LONG_MAX
    assert nat.add(facade.LONG_MIN, facade.LONG_MAX) == -1
    with pytest.raises(OverflowError):
        nat.add(facade.LONG_MAX, 1)
    with pytest.raises(OverflowError):
        nat.add(facade.LONG_MIN, -1)
    with pytest.raises(TypeError):
        nat.add(1.5, 1)


def test_out_of_range_argument_never_reaches_c(nat: facade.Native) -> None:
    # ctypes alone would pass 2**64 + 1 to C as 1 (c_long conversion masks silently).
    calls = nat.debug_counters()["calls"]
    with pytest.raises(OverflowError):
        nat.add(2**64 + 1, 1)
    with pytest.raises(OverflowError):
        nat.process(bytearray(4), key=2**32)
    assert nat.debug_counters()["calls"] == calls


@pytest.mark.parametrize(
    "data, expected", [(b"", 0xCBF29CE484222325), (b"a", 0xAF63DC4C8601EC8C), (b"foobar", 0x85944171F73967E8)]
)
def test_checksum_vectors(nat: facade.Native, data: bytes, expected: int) -> None:
    assert nat.checksum(data) == expected


def test_checksum_buffer_kinds_and_copies(nat: facade.Native, tmp_path: Path) -> None:
    payload = bytes(range(256)) * 5
    want = fnv1a(payload)
    copies = nat.backend.copies
    zero_copy = [payload, bytearray(payload), memoryview(bytearray(payload)), array.array("B", payload)]
    for obj in zero_copy:
        assert nat.checksum(obj) == want
    assert nat.backend.copies == copies
    f = tmp_path / "blob"
    f.write_bytes(payload)
    with f.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as ro_map:
        read_only = [memoryview(payload), ro_map]
        for obj in read_only:
            assert nat.checksum(obj) == want
    # Only ctypes must copy a read-only non-bytes buffer (from_buffer needs a writable export).
    assert nat.backend.copies == copies + (len(read_only) if nat.name == "ctypes" else 0)
    assert nat.checksum(array.array("i", [1, 2, 3])) == fnv1a(array.array("i", [1, 2, 3]).tobytes())


@pytest.mark.parametrize("bad", ["text", 12, memoryview(b"abcdef")[::2], None])
def test_checksum_rejects_non_buffers(nat: facade.Native, bad: Any) -> None:
    with pytest.raises(TypeError):
        nat.checksum(bad)


def test_process(nat: facade.Native) -> None:
    rng = random.Random(7)
    data = bytes(rng.randrange(256) for _ in range(3000))
    buf = bytearray(data)
    nat.process(buf, key=0xDEADBEEF, rounds=3)
    assert bytes(buf) == ref_process(data, 0xDEADBEEF, 3)
    buf.extend(b"more")  # the export was released: resizing works again
    arr = array.array("I", [1, 2, 3])
    nat.process(arr, key=1)
    assert arr.tobytes() == ref_process(array.array("I", [1, 2, 3]).tobytes(), 1, 1)
    with pytest.raises(TypeError):
        nat.process(b"read-only")
    with pytest.raises(TypeError):
        nat.process(memoryview(bytearray(8))[::2])
    with pytest.raises(ValueError):
        nat.process(bytearray(4), rounds=0)
    with pytest.raises(OverflowError):
        nat.process(bytearray(4), key=-1)


# ---------------------------------------------------------------- store


def test_store_round_trip(nat: facade.Native, tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    with nat.connect(path) as conn:
        assert len(conn) == 0
        conn.put(b"a", b"1")
        conn.put(bytearray(b"b"), memoryview(b"2"))
        conn.put(b"empty", b"")
        conn.put(b"a", b"1bis")
        assert conn.get(b"a") == b"1bis" and conn.get(b"empty") == b""
        with pytest.raises(KeyError) as exc:
            conn.get(b"missing")
        assert exc.value.op == "get" and exc.value.code == "NATIVE_ENOTFOUND"
        conn.delete(b"b")
        with pytest.raises(KeyError):
            conn.delete(b"b")
        assert len(conn) == 2
        assert sorted(conn.items()) == [(b"a", b"1bis"), (b"empty", b"")]
        with pytest.raises(ValueError):
            conn.put(b"", b"empty key")
        with pytest.raises(TypeError):
            conn.put("str key", b"v")
        conn.flush()
        s = conn.stats()
        assert (s.keys, s.puts, s.gets, s.deletes, s.generation) == (2, 4, 3, 1, 5)
        assert s.file_bytes == path.stat().st_size
        order = list(conn.items())
    assert conn.closed
    conn.close()  # idempotent
    with pytest.raises(facade.InvalidStateError):
        conn.get(b"a")
    with nat.connect(str(path)) as again:  # replayed from disk, same order
        assert list(again.items()) == order


def test_mutation_during_iteration(nat: facade.Native, tmp_path: Path) -> None:
    with nat.connect(tmp_path / "it.db") as conn:
        for i in range(5):
            conn.put(b"k%d" % i, b"v")
        it = conn.items()
        next(it)
        conn.put(b"new", b"v")
        with pytest.raises(facade.InvalidStateError):
            next(it)


def test_an_iterator_is_a_snapshot_from_when_it_was_made(impl: Any, tmp_path: Path) -> None:
    # A write between making an iterator and its first next() makes it stale, in every mechanism (a
    # generator that read the generation at its first next() would yield the new store instead).
    with impl.connect(tmp_path / "snap.db") as conn:
        conn.put(b"a", b"1")
        it = conn.items()
        conn.put(b"b", b"2")
        with pytest.raises(Exception) as exc:  # the class tree differs per mechanism
            next(it)
        assert type(exc.value).__name__ == "InvalidStateError", repr(exc.value)
    with pytest.raises(Exception) as exc:
        conn.items()  # closed: refused when the iterator is asked for, not at its first next()
    assert type(exc.value).__name__ == "InvalidStateError", repr(exc.value)


# Every write an iterator can outlive, each made with the cursor at every position a loop can stand at:
# before its first next(), between two items, and after the last item but before the StopIteration.
_WRITES: dict[str, Callable[[Any], None]] = {
    "put of a new key": lambda conn: conn.put(b"new", b"x"),
    "put over a stored key": lambda conn: conn.put(b"k1", b"v1"),  # same value: still a write
    "delete of one key": lambda conn: conn.delete(b"k0"),
    "delete of every key": lambda conn: [conn.delete(b"k%d" % i) for i in range(3)],
}


@pytest.mark.parametrize("write", list(_WRITES))
def test_any_write_at_any_cursor_position_makes_the_iterator_stale(impl: Any, write: str, tmp_path: Path) -> None:
    # As a dict's: a write made after an iterator began makes its next next() raise, wherever the cursor
    # stands -- also when it stands at or past the store's new end (every item read, or deletes that shrank
    # the store below it), where "stale" and "finished" are both true and stale must win.
    for read in range(4):
        with impl.connect(tmp_path / f"stale-{read}.db") as conn:
            for i in range(3):
                conn.put(b"k%d" % i, b"v%d" % i)
            it = conn.items()
            for _ in range(read):
                next(it)
            _WRITES[write](conn)
            with pytest.raises(Exception) as exc:  # the class tree differs per mechanism
                next(it)
            assert type(exc.value).__name__ == "InvalidStateError", (
                f"{read} item(s) read, then a {write}: next() gave {exc.value!r}"
            )


# What a finished iterator can still meet: a write, or the close of its connection.
_AFTER_THE_END: dict[str, Callable[[Any], None]] = {
    "put of a new key": lambda conn: conn.put(b"new", b"x"),
    "delete of one key": lambda conn: conn.delete(b"k0"),
    "close": lambda conn: conn.close(),
}


@pytest.mark.parametrize("after", list(_AFTER_THE_END))
def test_an_exhausted_iterator_stays_exhausted(impl: Any, after: str, tmp_path: Path) -> None:
    # The other half of the test above: once next() has raised StopIteration the iterator is finished for
    # good, as a dict's is, and a later write or close() has nothing left to make stale. Every test above
    # writes before the StopIteration; one that asks C again after it (mutant 112: the PyO3 iterator no
    # longer latches NATIVE_EDONE) passed them all, yet raised InvalidStateError from a drained iterator
    # (a zip() or chain() that calls next() on it once more) as soon as the store had changed.
    with impl.connect(tmp_path / "done.db") as conn:
        for i in range(3):
            conn.put(b"k%d" % i, b"v%d" % i)
        # items() in every mechanism; keys() and iter(conn) where the mechanism has them (the PyO3 wrapper).
        makers = [conn.items] + [getattr(conn, m) for m in ("keys", "__iter__") if hasattr(conn, m)]
        iterators = [iter(make()) for make in makers]
        for it in iterators:
            assert len(list(it)) == 3
        _AFTER_THE_END[after](conn)
        for make, it in zip(makers, iterators):
            try:
                got = next(it)
            except StopIteration:
                continue
            except Exception as e:  # noqa: BLE001 - which exception is the point
                pytest.fail(f"{make.__name__}(): exhausted, then a {after}: next() raised {e!r}")
            pytest.fail(f"{make.__name__}(): exhausted, then a {after}: next() gave {got!r}")


def _abandon_early(conn: Any) -> None:
    """Every way a loop over items() can stop before the end."""
    next(iter(conn.items()))
    for _ in conn.items():
        break
    with pytest.raises(ZeroDivisionError):
        for _ in conn.items():
            1 / 0  # noqa: B018 - the body raises mid-iteration
    assert any(True for _ in conn.items())
    list(zip(range(1), conn.items()))


def test_an_iteration_stopped_early_frees_what_it_was_given(impl: Any, tmp_path: Path) -> None:
    # Each item is two native_alloc blocks the binding must free whether or not the loop goes on:
    # a generator closed at its yield runs no code after that yield.
    with impl.connect(tmp_path / "early.db") as conn:
        for i in range(4):
            conn.put(b"k%d" % i, b"v%d" % i)
        before = impl.debug_counters()["live_blocks"]
        _abandon_early(conn)
        assert impl.debug_counters()["live_blocks"] == before


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_handle_in_a_forked_child(nat: facade.Native, tmp_path: Path) -> None:
    # libnative's own rule, whatever the binding: a handle belongs to the process that opened it. Before
    # it, a child's put appended to the parent's file at the child's copy of its end, which the parent
    # then wrote over.
    path = tmp_path / "forked.db"
    conn = nat.connect(path)
    conn.put(b"parent", b"1")

    def in_child() -> None:
        for name, call in {
            "put": lambda: conn.put(b"child", b"2"),
            "get": lambda: conn.get(b"parent"),
            "delete": lambda: conn.delete(b"parent"),
            "flush": conn.flush,
            "stats": conn.stats,
            "len": lambda: len(conn),  # libnative's count reads 0 here: the binding must not return it
            "items": lambda: list(conn.items()),
        }.items():
            with pytest.raises(facade.InvalidStateError, match="fork") as exc:
                call()
            assert exc.value.code == "NATIVE_ESTATE", (name, exc.value.code)
        conn.close()  # lets go of the parent's handle: no lock taken, nothing joined or written
        with nat.connect(tmp_path / f"child-{os.getpid()}.db") as own:
            own.put(b"child", b"2")
            assert own.get(b"child") == b"2"

    assert in_a_forked_child(in_child, 10.0) == "ok"
    conn.put(b"after", b"3")
    conn.close()
    with nat.connect(path) as again:
        assert sorted(again.items()) == [(b"after", b"3"), (b"parent", b"1")]


def test_connect_missing_directory(nat: facade.Native, tmp_path: Path) -> None:
    path = tmp_path / "no" / "such.db"
    with pytest.raises(facade.ConnectionError) as exc:
        nat.connect(path)
    e = exc.value
    assert isinstance(e, OSError) and isinstance(e, facade.Error)
    assert (e.errno, e.filename, e.op, e.code) == (errno.ENOENT, str(path), "connect", "NATIVE_EIO")
    assert e.message == "open failed: No such file or directory"


def test_lock_timeout(nat: facade.Native, tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    with nat.connect(path):
        with pytest.raises(facade.TimeoutError) as exc:
            nat.connect(path, timeout=0.03)
        assert isinstance(exc.value, builtins.TimeoutError) and exc.value.code == "NATIVE_ETIMEOUT"
    nat.connect(path, timeout=0).close()


@pytest.fixture(params=[*MECHANISMS, "pyo3"])
def impl(request: pytest.FixtureRequest) -> Any:
    """Every binding of libnative, the PyO3 wrapper included (the timeout conversion lives in each)."""
    if request.param == "pyo3":
        return pytest.importorskip("native")
    m = MECHANISMS[request.param]
    if m is None:
        pytest.skip(SKIP_REASONS.get(request.param) or "unavailable")
    return m


def gave_up_after_ms(e: BaseException) -> int:
    found = re.search(r"gave up after (\d+) ms", str(e))
    assert found, str(e)
    return int(found.group(1))


@contextmanager
def lock_held_elsewhere(path: Path, seconds: float) -> Iterator[subprocess.Popen[str]]:
    """Another process holds the store's lock for `seconds`, then exits: a binding that waits longer than
    asked (forever, say) gets the store instead of hanging the test."""
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, str(path), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        yield holder
    finally:
        holder.kill()
        holder.wait()


LOCK_HOLDER = """
import fcntl, sys, time
f = open(sys.argv[1], "rb")
fcntl.flock(f, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
"""


@pytest.mark.parametrize("timeout", [0, 0.0, 0.0004, 0.0015, 0.0201])
def test_a_timeout_waits_at_least_as_long_as_asked(impl: Any, tmp_path: Path, timeout: float) -> None:
    # libnative reports how long it waited; a conversion that rounds down (0.0004 s to 0 ms is "do not
    # wait") reports less than asked. The report, not a clock here, is the measure: it cannot be flaky.
    # 0 means "try once": one that waits (for ever, say) gets the store once the holder exits, and fails.
    path = tmp_path / "locked.db"
    impl.connect(path).close()
    with lock_held_elsewhere(path, 5.0), pytest.raises(builtins.TimeoutError) as exc:
        impl.connect(path, timeout=timeout).close()
    assert gave_up_after_ms(exc.value) >= math.ceil(timeout * 1000)


# A blocking call of a binding run in a child, Ctrl-C sent 0.3 s in: the child reports how it ended.
INTERRUPTED_CHILD = """
import os, signal, sys, threading, time
sys.path[:0] = [{here!r}, {pytests!r}]
signal.signal(signal.SIGINT, signal.default_int_handler)
if {name!r} == "pyo3":
    import native as m
else:
    from every_binding import MECHANISMS
    m = MECHANISMS[{name!r}]
buf = bytearray(4 << 20)
small = bytearray(1024)
calls = {{
    "process": lambda: m.process(buf, key=1, rounds=100000),
    # As long a call through rounds instead of length (hours, uninterrupted): the same rules hold.
    "process, a small buffer over many rounds": lambda: m.process(small, key=1, rounds=2**32 - 1),
    "connect waiting for the lock": lambda: m.connect({path!r}, timeout=None).close(),
}}
threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
t0 = time.monotonic()
try:
    calls[{call!r}]()
except KeyboardInterrupt:
    print("interrupted", time.monotonic() - t0)
else:
    print("completed", time.monotonic() - t0)
"""
# ctypes and cffi pass no cancel hook: one written in Python loses the handler's KeyboardInterrupt, which
# CPython raises as the hook's frame starts, before any try block in it (measured: ctypes printed it as
# ignored and process() ran to the end).
NO_SIGNAL_HOOK = {"ctypes", "cffi-abi", "cffi-api"}


@pytest.mark.ffi_harness_no_repeat  # a child per case; nothing of this process to measure
@pytest.mark.parametrize(
    "call", ["process", "process, a small buffer over many rounds", "connect waiting for the lock"]
)
def test_ctrl_c_interrupts_every_blocking_call(impl: Any, tmp_path: Path, call: str) -> None:
    name = getattr(impl, "name", "pyo3")
    if name in NO_SIGNAL_HOOK:
        pytest.skip(f"{name} passes no signal hook to libnative (see NO_SIGNAL_HOOK)")
    path = tmp_path / "locked.db"
    impl.connect(path).close()
    script = INTERRUPTED_CHILD.format(
        here=str(Path(__file__).parent), pytests=str(Path(__file__).parents[1]), name=name, path=str(path), call=call
    )
    with lock_held_elsewhere(path, 10.0):  # a connect that ignores Ctrl-C gets the store after 10 s
        try:
            child = subprocess.run(
                [sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=30
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"{name}: {call} was still running 30 s after Ctrl-C")
    assert child.returncode == 0, child.stderr
    word, seconds = child.stdout.split()
    assert word == "interrupted", f"{name}: {call} ran to its end ({seconds} s) through Ctrl-C"
    assert float(seconds) < 2.0, f"{name}: {call} took {seconds} s to give way to Ctrl-C sent at 0.3 s"


@pytest.mark.ffi_harness_no_repeat  # a 1 s wait per binding; repeating it measures no new leak
def test_waiting_for_the_lock_costs_little_cpu(impl: Any, tmp_path: Path) -> None:
    # A connect() waiting for a lock another process holds must sleep between its tries. A poll that naps
    # microseconds, not milliseconds, gives every answer right and burns a core's share of the wait; across
    # a 1 s wait the sleeping kind spends a few ms of CPU in this process, well under the bound.
    path = tmp_path / "locked.db"
    impl.connect(path).close()
    with lock_held_elsewhere(path, 5.0), pytest.raises(builtins.TimeoutError) as exc:
        before = time.process_time()
        try:
            impl.connect(path, timeout=1.0).close()
        finally:
            spent = time.process_time() - before
    waited = gave_up_after_ms(exc.value) / 1000
    assert waited >= 1.0
    assert spent < 0.05 * waited, f"waiting {waited:.3f} s for the lock cost {spent:.3f} s of CPU"


# Waits at the edges of every integer width a binding could narrow them to: 2**31 ms is int32's sign bit,
# 2**32 ms masks to 0 ("do not wait") in 32 bits, 2**64 ms and beyond mask to anything in 64 bits.
LONG_TIMEOUTS = [2**31 / 1000, 2**32 / 1000, 2**64 / 1000, 1e300, math.inf]


@pytest.mark.parametrize("timeout", LONG_TIMEOUTS, ids=["2^31ms", "2^32ms", "2^64ms", "1e300s", "inf"])
def test_a_long_timeout_waits_for_the_lock(impl: Any, tmp_path: Path, timeout: float) -> None:
    path = tmp_path / "locked.db"
    impl.connect(path).close()
    with lock_held_elsewhere(path, 0.1) as holder, impl.connect(path, timeout=timeout) as conn:
        assert holder.wait(timeout=10) == 0
        conn.put(b"k", b"v")


@pytest.mark.parametrize("timeout", [-1, -0.001, math.nan, -math.inf, "1", True, False, [1]], ids=repr)
def test_a_bad_timeout_is_refused_alike(tmp_path: Path, timeout: Any) -> None:
    impls = dict(AVAILABLE)
    native = pytest.importorskip("native")
    impls["pyo3"] = native
    kinds = {
        name: outcome(lambda m=m: m.connect(tmp_path / "t.db", timeout=timeout).close()) for name, m in impls.items()
    }
    assert set(kinds.values()) == {
        ("raise", "TypeError" if isinstance(timeout, (str, bool, list)) else "ValueError")
    }, kinds


def test_every_ctypes_signature_matches_the_cdefs() -> None:
    """ctypes converts by what it is told (a c_int for an int64_t masks silently): check each declared
    width, signedness and pointee against cdefs.CDEF, which test_the_cdefs_match_the_header pins to native.h."""
    ffi = cffi_native.abi.backend.ffi
    declared = cdef_functions()
    assert set(ctypes_native.SIGNATURES) == set(declared)
    for name, (restype, argtypes) in ctypes_native.SIGNATURES.items():
        fn = declared[name]
        got = [ctypes_shape(restype)] + [ctypes_shape(a) for a in argtypes]
        want = [cffi_shape(ffi, fn.result)] + [cffi_shape(ffi, a) for a in fn.args]
        assert got == want, name


def cdef_functions() -> dict[str, Any]:
    """The function types cdefs.CDEF declares, by name (cffi's ABI-mode lib also holds its constants)."""
    ffi, lib = cffi_native.abi.backend.ffi, cffi_native.abi.backend.lib
    found = {}
    for name in dir(lib):
        value = getattr(lib, name)
        if isinstance(value, ffi.CData) and ffi.typeof(value).kind == "function":
            found[name] = ffi.typeof(value)
    return found


def ctypes_shape(t: Any) -> tuple[Any, ...]:
    """What a ctypes type passes: an integer's width and sign, or a pointer and what it points at."""
    if t is None:
        return ("void",)
    if t in (ctypes.c_void_p, ctypes.c_char_p):
        return ("pointer", "data")
    if issubclass(t, ctypes._CFuncPtr):
        return ("function",)
    if issubclass(t, ctypes._Pointer):
        structs = {struct: cname for cname, struct in ctypes_native.STRUCTS.items()}
        p = t._type_
        if p in structs:
            return ("pointer", structs[p])
        if p in (ctypes.c_void_p, ctypes.c_char_p) or issubclass(p, ctypes._Pointer):
            return ("pointer", "pointer")
        return ("pointer", ctypes_shape(p))
    return ("int", ctypes.sizeof(t), t(-1).value < 0)


def cffi_shape(ffi: Any, t: Any) -> tuple[Any, ...]:
    """The same for a cffi type; a struct only the header knows (native_db) is opaque data."""
    if t.kind in ("void", "function"):
        return (t.kind,)
    if t.kind == "pointer":
        p = t.item
        if p.kind == "struct":
            name = p.cname.removeprefix("struct ")
            return ("pointer", name if name in ctypes_native.STRUCTS else "data")
        if p.kind == "void" or p.cname == "char":
            return ("pointer", "data")
        if p.kind in ("pointer", "function"):
            return ("pointer", "pointer")
        return ("pointer", cffi_shape(ffi, p))
    return ("int", ffi.sizeof(t), int(ffi.cast(t, -1)) < 0)


def test_the_cdefs_match_the_header(tmp_path: Path) -> None:
    """The C compiler checks every prototype in cdefs.CDEF against native.h: redeclaring a function with
    any other type (a narrower integer, a lost const) is a "conflicting types" error."""
    lines = ['#include "native.h"']
    for name in sorted(cdef_functions()):
        found = re.search(r"[^;{}]*\b" + name + r"\s*\([^;]*\);", cdefs.CDEF)
        assert found, name
        lines.append("\n".join(x for x in found.group(0).splitlines() if not x.lstrip().startswith("#")))
    source = tmp_path / "cdefs_check.c"
    source.write_text("\n".join(lines) + "\n")
    cc = os.environ.get("CC", "cc")
    include = facade.REPO / "libnative"
    done = subprocess.run(
        [cc, "-fsyntax-only", "-Wall", "-Werror", f"-I{include}", str(source)],
        check=False,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    "name", [b"plain.db", "caf\u00e9.db".encode(), "\u65e5\u672c.db".encode(), b"\xff\xfe-not-utf8.db", b"a b;c'.db"]
)
@pytest.mark.parametrize("form", ["str", "bytes", "pathlib"])
def test_a_path_reaches_the_file_system_byte_for_byte(impl: Any, tmp_path: Path, name: bytes, form: str) -> None:
    # The OS sees bytes: every form of the same path (str with surrogateescape for non-UTF-8 bytes,
    # bytes, a PathLike) must name the same file, byte for byte, and `path` gives it back decoded.
    raw = os.fsencode(tmp_path) + b"/" + name
    arg: Any = {"str": os.fsdecode(raw), "bytes": raw, "pathlib": Path(os.fsdecode(raw))}[form]
    with impl.connect(arg) as conn:
        conn.put(b"k", name)
        opened = conn.path
    assert opened == os.fsdecode(raw)
    assert os.listdir(os.fsencode(tmp_path)) == [name]
    with impl.connect(opened) as again:
        assert again.get(b"k") == name


@pytest.mark.parametrize("form", ["str", "bytes", "pathlib"])
def test_a_path_with_a_nul_is_refused_in_every_form(impl: Any, tmp_path: Path, form: str) -> None:
    # C takes the path as a char *, which ends at the first NUL: "user.db\0.tmp" would open user.db, a file
    # the caller never named. Every form of such a path is refused before C sees it, and no file appears.
    raw = os.fsencode(tmp_path) + b"/user.db\0.tmp"
    arg: Any = {"str": os.fsdecode(raw), "bytes": raw, "pathlib": Path(os.fsdecode(raw))}[form]
    with pytest.raises(ValueError):
        impl.connect(arg)
    assert os.listdir(tmp_path) == []


@contextmanager
def another_callback_running(impl: Any, tmp_path: Path) -> Iterator[None]:
    """While the block runs, a callback of another connection of the same binding is running on that
    connection's notifier thread (what a binding counts per thread, "inside a callback", must stay there)."""
    other = impl.connect(tmp_path / "other.db")
    inside, release = threading.Event(), threading.Event()

    def on_event(_event: Any) -> None:
        inside.set()
        release.wait(10)

    sub = other.subscribe(on_event)
    try:
        other.put(b"wake", b"v")
        assert inside.wait(5), "the other connection's callback never ran"
        yield
    finally:
        release.set()
        sub.cancel()
        other.close()


@pytest.mark.parametrize("meanwhile", ["nothing else", "another connection's callback running"])
def test_close_waits_for_a_call_in_flight(impl: Any, tmp_path: Path, meanwhile: str) -> None:
    # native_close must not race another call on the handle (native.h): a flush() held in C for 300 ms on
    # one thread, close() from another returns only after that flush has finished with the handle, and
    # the flush succeeds. Returning at once would free the native_db under the flush. The same holds while
    # some other callback runs on another thread: only a close *inside* a callback may defer.
    set_flush_delay_ms = getattr(impl, "set_flush_delay_ms", None) or impl._set_flush_delay_ms
    background: AbstractContextManager[None] = nullcontext()
    if meanwhile != "nothing else":
        with impl.connect(tmp_path / "probe.db") as probe:
            if not hasattr(probe, "subscribe"):
                pytest.skip("the ctypes/cffi facade has no subscriptions")
        background = another_callback_running(impl, tmp_path)
    with background:
        _close_waits_for_a_call_in_flight(impl, tmp_path, set_flush_delay_ms)


def _close_waits_for_a_call_in_flight(impl: Any, tmp_path: Path, set_flush_delay_ms: Any) -> None:
    conn = impl.connect(tmp_path / "in-flight.db")
    conn.put(b"k", b"v")
    outcome: list[str] = []

    def flush() -> None:
        try:
            conn.flush()
            outcome.append("ok")
        except Exception as e:  # noqa: BLE001 - reported below
            outcome.append(repr(e))

    set_flush_delay_ms(300)
    try:
        t = threading.Thread(target=flush)
        t.start()
        time.sleep(0.1)  # the flush is in C, sleeping before it writes
        t0 = time.monotonic()
        conn.close()
        waited = time.monotonic() - t0
        t.join(10)
    finally:
        set_flush_delay_ms(0)
    assert outcome == ["ok"], f"the flush close() raced: {outcome}"
    # About 0.2 s of the flush's delay was left; the thread's own return after the pin is let go is not
    # ordered against close()'s, so the wait is what is measured.
    assert waited >= 0.1, f"close() returned after {waited:.3f} s, while the flush was still in C"


def test_two_threads_closing_one_connection_close_it_once(impl: Any, tmp_path: Path) -> None:
    # close() is idempotent from one thread; from two at once it must still run native_close once. A check
    # of the handle, then the native call (which releases the GIL), then clearing it lets both threads
    # through: libnative would free one native_db twice. libnative's own ledger must come back exactly.
    live = ctypes_native.debug_counters()["live_handles"]
    for _ in range(100):
        conn = impl.connect(tmp_path / "closed-twice.db")
        barrier = threading.Barrier(2)

        def close(conn: Any = conn, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            conn.close()

        threads = [threading.Thread(target=close) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert conn.closed
        assert ctypes_native.debug_counters()["live_handles"] == live


@pytest.mark.parametrize("exc", [KeyError, RuntimeError, KeyboardInterrupt])
def test_a_with_block_never_swallows_an_exception(impl: Any, tmp_path: Path, exc: type[BaseException]) -> None:
    # __exit__ returning a true value tells Python the exception was handled: the block's error would vanish
    # and the code after it would run as if the block had succeeded. Every context manager a binding hands
    # out (the connection, a subscription) must let the exception through, and still close.
    with pytest.raises(exc), impl.connect(tmp_path / "with.db") as conn:
        raise exc("from inside the with block")
    assert conn.closed
    with impl.connect(tmp_path / "with.db") as conn:
        if not hasattr(conn, "subscribe"):
            return  # the ctypes/cffi facade has no subscriptions
        with pytest.raises(exc), conn.subscribe(lambda _event: None):
            raise exc("from inside the subscription's with block")


def test_no_call_changes_the_callers_signal_mask(impl: Any, tmp_path: Path) -> None:
    # A thread that blocks signals on purpose (to sigwait() for them, or to keep them off a worker) must
    # keep its mask across every call, the first subscribe (which starts the notifier thread) included.
    if not hasattr(signal, "pthread_sigmask"):
        pytest.skip("no pthread_sigmask")
    blocked = {signal.SIGUSR1, signal.SIGUSR2}
    seen: dict[str, set[Any]] = {}

    def worker() -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])

        def after(what: str) -> None:
            now = signal.pthread_sigmask(signal.SIG_BLOCK, [])
            if now != mask:
                seen[what] = now ^ mask

        conn = impl.connect(tmp_path / "mask.db")
        after("connect")
        subscribes = hasattr(conn, "subscribe")  # the ctypes/cffi facade has no subscriptions
        sub = conn.subscribe(lambda _event: None) if subscribes else None
        after("the first subscribe")
        conn.put(b"k", b"v")
        after("put")
        if sub is not None:
            conn.subscribe(lambda _event: None).cancel()
            after("a second subscribe and its cancel")
            sub.cancel()
            after("cancel")
        conn.close()
        after("close")

    errors: list[BaseException] = []

    def guarded() -> None:
        try:
            worker()
        except BaseException as e:  # noqa: BLE001 - reported by the test below
            errors.append(e)

    t = threading.Thread(target=guarded)
    t.start()
    t.join(30)
    assert not t.is_alive() and not errors, errors
    assert not seen, f"signals whose blocking a call changed: {seen}"


# The C locale without UTF-8 mode: the file-system encoding is ASCII (with surrogateescape), as on a
# server started with LANG=C, so "file names are UTF-8" is no longer true of str paths.
ASCII_LOCALE = {"LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}


def test_a_str_path_follows_the_file_system_encoding(impl: Any, tmp_path: Path) -> None:
    """Under an ASCII file-system encoding a str path means what os.fsencode makes of it: a non-ASCII
    character cannot be encoded (UnicodeEncodeError, and no file is made), and `path` decodes the opened
    bytes the same way. test_paths_under_an_ascii_locale runs this in a child with that encoding."""
    if sys.getfilesystemencoding() != "ascii":
        pytest.skip("needs an ASCII file-system encoding: test_paths_under_an_ascii_locale runs it")
    directory = os.fsdecode(os.fsencode(tmp_path))
    with pytest.raises(UnicodeEncodeError):
        os.fsencode(directory + "/caf\u00e9.db")
    with pytest.raises(UnicodeEncodeError):
        impl.connect(directory + "/caf\u00e9.db")
    assert os.listdir(os.fsencode(tmp_path)) == []
    raw = os.fsencode(tmp_path) + "/caf\u00e9.db".encode()
    with impl.connect(raw) as conn:
        assert conn.path == os.fsdecode(raw)  # 'caf\udcc3\udca9.db', not 'café.db'
    assert os.listdir(os.fsencode(tmp_path)) == [b"caf\xc3\xa9.db"]


def test_paths_under_an_ascii_locale() -> None:
    """Every binding's paths, run again in an interpreter whose file-system encoding is ASCII: a binding
    that encodes or decodes paths as UTF-8 itself agrees with os.fsencode only under a UTF-8 locale."""
    env = {**os.environ, **ASCII_LOCALE, "PYTHONIOENCODING": "utf-8"}
    probe = [sys.executable, "-c", "import sys; print(sys.getfilesystemencoding())"]
    encoding = subprocess.run(probe, env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert encoding == "ascii", f"LC_ALL=C PYTHONUTF8=0 PYTHONCOERCECLOCALE=0 gave {encoding!r}"
    selected = "path_reaches_the_file_system or str_path_follows_the_file_system_encoding"
    child = [sys.executable, "-m", "pytest", __file__, "-q", "-rA", "-p", "no:cacheprovider", "-k", selected]
    done = subprocess.run(child, env=env, capture_output=True, text=True, errors="replace", timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    passed = set(
        re.findall(r"^PASSED \S+::test_a_str_path_follows_the_file_system_encoding\[(\S+)\]", done.stdout, re.MULTILINE)
    )
    expected = set(AVAILABLE) | ({"pyo3"} if importlib.util.find_spec("native") else set())
    assert expected and passed == expected, f"passed under the ASCII locale: {sorted(passed)}\n{done.stdout[-3000:]}"


def test_corrupt_file(nat: facade.Native, tmp_path: Path) -> None:
    path = tmp_path / "bad.db"
    with nat.connect(path) as conn:
        conn.put(b"key", b"value")
    raw = bytearray(path.read_bytes())
    raw[-6] ^= 0xFF
    path.write_bytes(raw)
    with pytest.raises(facade.ProtocolError, match="checksum at offset 20"):
        nat.connect(path)


def test_struct_layouts_match_the_header() -> None:
    """ctypes declarations are unchecked; the cffi API build knows the real layout (pyo3-ffi-check idea)."""
    if cffi_native.api is None:
        pytest.skip(cffi_native.API_SKIP_REASON)
    ffi = cffi_native.api.backend.ffi
    for cname, struct in ctypes_native.STRUCTS.items():
        assert ctypes.sizeof(struct) == ffi.sizeof(cname), cname
        for field, *_ in struct._fields_:
            assert getattr(struct, field).offset == ffi.offsetof(cname, field), (cname, field)


# ---------------------------------------------------------------- differential


def outcome(fn: Callable[[], Any]) -> tuple[str, Any]:
    """A result, or the kind of exception, comparable across wrappers with different class trees."""
    try:
        return "ok", fn()
    except Exception as e:  # noqa: BLE001 - the point is to compare whatever happens
        for kind in (KeyError, OverflowError, TypeError, ValueError, MemoryError):
            if isinstance(e, kind):
                return "raise", kind.__name__
        return "raise", type(e).__name__


def differential(impls: dict[str, Any], tmp_path: Path, seed: int = 20240611) -> None:
    rng = random.Random(seed)

    def agree(what: str, fn: Callable[[str, Any], Any]) -> Any:
        """fn(name, module) on every implementation; all outcomes must be equal."""
        results = {name: outcome(lambda: fn(name, impl)) for name, impl in impls.items()}
        assert len(set(map(repr, results.values()))) == 1, (what, results)
        return next(iter(results.values()))

    edges = [
        0,
        1,
        -1,
        2,
        facade.LONG_MAX,
        facade.LONG_MIN,
        facade.LONG_MAX - 1,
        facade.LONG_MIN + 1,
        2**31,
        -(2**31),
        2**32,
        2**63,
        -(2**63) - 1,
    ]
    for _ in range(300):
        a = rng.choice(edges) if rng.random() < 0.5 else rng.randint(facade.LONG_MIN, facade.LONG_MAX)
        b = rng.choice(edges) if rng.random() < 0.5 else rng.randint(-1000, 1000)
        agree(f"add({a}, {b})", lambda _, m: m.add(a, b))

    for size in [0, 1, 7, 8, 63, 64, 1000, 65536, 300_000] + [rng.randrange(5000) for _ in range(40)]:
        data = rng.randbytes(size)
        assert agree(f"checksum({size} bytes)", lambda _, m: m.checksum(data)) == ("ok", fnv1a(data))

    for _ in range(60):
        data = rng.randbytes(rng.randrange(2000))
        key, rounds = rng.randrange(2**32), rng.randint(1, 3)

        def run(_: str, m: Any) -> bytes:
            buf = bytearray(data)
            m.process(buf, key=key, rounds=rounds)
            return bytes(buf)

        assert agree("process", run) == ("ok", ref_process(data, key, rounds))

    conns = {}
    for name, impl in impls.items():
        (tmp_path / name).mkdir()
        conns[name] = impl.connect(str(tmp_path / name / "store.db"), timeout=1.0)
    model: dict[bytes, bytes] = {}
    keys = [b"k%d" % i for i in range(25)] + [b"\x00bin\xff", b"x" * 1024]
    try:
        for step in range(400):
            op, key = rng.choice(["put", "put", "get", "delete", "len"]), rng.choice(keys)
            if op == "put":
                value = rng.randbytes(rng.choice([0, 1, 10, 100, 5000]))
                res = agree(f"step {step} put", lambda n, _: conns[n].put(key, value))
                model[key] = value
            elif op == "get":
                res = agree(f"step {step} get", lambda n, _: conns[n].get(key))
                assert res == (("ok", model[key]) if key in model else ("raise", "KeyError"))
            elif op == "delete":
                res = agree(f"step {step} delete", lambda n, _: conns[n].delete(key))
                assert (res[0] == "ok") == (model.pop(key, None) is not None)
            else:
                assert agree(f"step {step} len", lambda n, _: len(conns[n])) == ("ok", len(model))
        assert agree("items", lambda n, _: sorted(conns[n].items())) == ("ok", sorted(model.items()))
    finally:
        for c in conns.values():
            c.close()


def test_mechanisms_agree(tmp_path: Path) -> None:
    differential(AVAILABLE, tmp_path)


def test_differential_with_pyo3(tmp_path: Path) -> None:
    native = pytest.importorskip("native")
    if not hasattr(native, "connect"):
        pytest.skip(f"`native` resolved to {native!r}, not the PyO3 wrapper")
    differential({"pyo3": native, **AVAILABLE}, tmp_path)
