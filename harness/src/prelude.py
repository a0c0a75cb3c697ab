"""ffi_harness_prelude: the Python half of ffi-harness.

The Rust materialiser (`PyValue::materialise`) and every generated repro.py
build buffers, hostile objects and callables from THESE definitions: the
reproducer embeds this file verbatim, so it rebuilds exactly what the fuzzer
passed.  Stdlib only, deterministic, no I/O.
"""

import array as _array
import collections as _collections
import gc as _gc
import math as _math
import mmap as _mmap
import sys as _sys
import threading as _threading
import time as _time

# ---------------------------------------------------------------------------
# Re-entrancy hook: every Reenter(n) value calls __harness_reenter__(n).  The
# user wires it to something that pulls the rug from under the native code
# (close the connection, cancel the subscription, clear a cache, ...).


_reenter_hook = None


def set_reenter_hook(hook):
    """Install hook(n), called by every Reenter(n) object; None disables it."""
    global _reenter_hook
    _reenter_hook = hook


def __harness_reenter__(n):
    hook = _reenter_hook
    if hook is not None:
        return hook(n)
    return None


# ---------------------------------------------------------------------------
# Scalars and text.


class IntSub(int):
    """An int subclass: exact-type fast paths (PyLong_CheckExact) must not be the only path."""


class FloatSub(float):
    """A float subclass, for the same reason."""


def mk_str(codepoints):
    """Build a str from code points; the only way to get lone surrogates from Rust."""
    return "".join(map(chr, codepoints))


# ---------------------------------------------------------------------------
# Buffers.

MEMORYVIEW_FORMATS = "HId"


def mk_memoryview(kind, data, param=0):
    """A memoryview of `data` with the shape/strides/flags named by `kind`."""
    data = bytes(data)
    if kind == "writable":
        return memoryview(bytearray(data))
    if kind == "readonly":
        return memoryview(data)
    if kind == "strided":
        # Non-contiguous: positive step > 1.
        return memoryview(bytearray(data))[:: 2 + param % 3]
    if kind == "reversed":
        # Non-contiguous: negative stride, buf pointer at the END of the data.
        return memoryview(bytearray(data))[::-1]
    if kind == "matrix":
        # Two-dimensional C-contiguous view; cast() refuses zeros in the shape.
        cols = 1 + param % 8
        if len(data) < cols:
            data = data + bytes(cols - len(data))
        rows = len(data) // cols
        return memoryview(bytearray(data[: rows * cols])).cast("B", [rows, cols])
    if kind == "format":
        # Itemsize > 1 and a format other than "B".
        fmt = MEMORYVIEW_FORMATS[param % len(MEMORYVIEW_FORMATS)]
        size = {"H": 2, "I": 4, "d": 8}[fmt]
        if len(data) < size:
            data = data + bytes(size - len(data))
        n = len(data) // size
        return memoryview(bytearray(data[: n * size])).cast(fmt)
    if kind == "released":
        view = memoryview(bytearray(data))
        view.release()
        return view
    raise ValueError(f"unknown memoryview kind {kind!r}")


def mk_array(typecode, data):
    """array.array(typecode) filled from raw bytes (truncated to whole items)."""
    arr = _array.array(typecode)
    whole = len(data) - len(data) % arr.itemsize
    arr.frombytes(bytes(data[:whole]))
    return arr


def mk_mmap(data):
    """An anonymous mmap holding `data` (at least one byte: mmap refuses length 0)."""
    data = bytes(data) or b"\0"
    mapping = _mmap.mmap(-1, len(data))
    mapping.write(data)
    mapping.seek(0)
    return mapping


class RacedByteArray(bytearray):
    """A bytearray that another thread tries to resize while a call holds it (see `resized_during`).

    A binding must keep a buffer exported for as long as native code reads it. One that releases the
    export and then goes on reading with the GIL released (a detached checksum over a pointer it no
    longer pins) lets the resize free that memory under it: ASan reports a heap-use-after-free. Large
    (64 KiB to 256 KiB) so that a binding which detaches for long work does so on it.
    """

    __slots__ = ()


def mk_raced_bytearray(fill, size_class):
    """A RacedByteArray of `fill` repeated: 64 KiB times 1 to 4, plus 0 to 63 bytes, by `size_class`."""
    return RacedByteArray(bytes([fill]) * (65536 * (1 + size_class % 4) + size_class // 4))


class _Resizer:
    """The one thread (started on first use) that resizes the buffers of the current call."""

    def __init__(self):
        self._cv = _threading.Condition()
        self._targets = []  # what to resize; empty between calls
        self._busy = False  # a pass over the targets is under way (it holds references to them)
        self._thread = None
        self.resized = 0  # resizes that went through (the buffer was not exported at that moment)

    def arm(self, targets):
        with self._cv:
            if self._thread is None:
                self._thread = _threading.Thread(target=self._run, name="ffi-harness-resizer", daemon=True)
                self._thread.start()
            self._targets = list(targets)
            self._cv.notify_all()

    def disarm(self):
        """Stop, and return once the thread holds no reference to any target (refcount oracles follow)."""
        with self._cv:
            self._targets = []
            while self._busy:
                self._cv.wait()

    def _run(self):
        while True:
            with self._cv:
                while not self._targets:
                    self._cv.wait()
                targets = self._targets
                self._busy = True
            for buf in targets:
                self.resized += _resize_and_restore(buf)
            del targets, buf
            with self._cv:
                self._busy = False
                self._cv.notify_all()
            # A pause between passes: the caller's thread takes the GIL back at once when its call
            # returns, and a long call that holds its buffer does not keep a core busy with retries.
            _time.sleep(0.0001)


def _resize_and_restore(buf):
    """Resize `buf` (grow by a byte, shrink to half, grow back: each a realloc, which moves the storage
    under ASan) and restore its contents: 1 if it did, 0 if `buf` is exported. An export that begins
    half-way (the caller's thread may take the GIL between two steps) ends the pass early."""
    try:
        buf.append(0)
    except (BufferError, MemoryError):  # exported: the binding holds it, as it should
        return 0
    try:
        half = len(buf) // 2
        tail = buf[half:]
        del buf[half:]
        buf += tail
        del buf[-1]
    except (BufferError, MemoryError):
        pass
    return 1


_RESIZER = _Resizer()


def resizes_done():
    """How many times the resizer thread has resized a RacedByteArray so far (its buffer not exported)."""
    return _RESIZER.resized


class resized_during:
    """`with resized_during(values): call(...)`: every RacedByteArray among `values` is resized by another
    thread, over and over, until the block ends (a no-op when there is none)."""

    def __init__(self, values):
        self._targets = [v for v in values if type(v) is RacedByteArray]

    def __enter__(self):
        if self._targets:
            _RESIZER.arm(self._targets)
        return self

    def __exit__(self, *exc):
        if self._targets:
            _RESIZER.disarm()
            self._targets = []
        return False


# ---------------------------------------------------------------------------
# Hostile objects: one class per protocol, so each object speaks exactly one
# protocol, and misbehaves in the way its `mode` names:
#   "raise"        the dunder raises HostileError
#   "wrong_type"   the dunder returns an object of the wrong type
#   "out_of_range" the dunder returns the right type with a hostile value
#   "reenter"      the dunder calls __harness_reenter__(n) first, then behaves
#   "behave"       the dunder behaves (control case)


class HostileError(Exception):
    """Raised on purpose by hostile objects."""


class HostileBaseError(BaseException):
    """Raised on purpose; NOT an Exception, so `except Exception` does not catch it."""


# The answers ledger. Every object a hostile dunder hands to the code under test that exists for that
# answer alone (a fresh int, float, str or memoryview; not a small int or a one-character str, which
# CPython shares) is recorded here. Once the call that asked for it has returned, nothing but this ledger
# may hold it, whichever way the conversion went: success, a refused value, an exception on the way.
# `answers_kept()` (the oracle `check_call` runs) reads and empties it. Bounded, so code that never
# asks does not grow it.
_answers = _collections.deque(maxlen=256)


def _handed_out(value):
    """`value`, made fresh for this answer and recorded when it can be (see the answers ledger)."""
    kind = type(value)
    if kind is int and not -5 <= value <= 256:
        value = int(str(value))
    elif kind is float:
        value = float(repr(value))
    elif kind is str and len(value) > 1:
        value = value[:1] + value[1:]
    elif kind is not memoryview and kind is not NotBool:
        return value
    _answers.append(value)
    return value


def forget_answers():
    """Empty the answers ledger (answers handed out before the call being judged)."""
    _answers.clear()


def take_answers():
    """The answers handed out since the ledger was last emptied, as a new list; empties the ledger."""
    answers = list(_answers)
    _answers.clear()
    return answers


def answers_kept():
    """What still holds a reference to an answer handed out since the ledger was last emptied, besides
    the ledger itself: one line per answer, with the number of references beyond it (negative: one was
    released that the code under test never owned). Empties the ledger; a collection runs first when
    anything seems held, since a cycle may hold an answer briefly."""
    if not _answers:
        return []
    answers = take_answers()
    for attempt in range(2):
        kept = []
        for answer in answers:
            # Ours: `answers`, the loop variable and getrefcount's own argument.
            extra = _sys.getrefcount(answer) - 3
            if extra:
                kept.append(f"{type(answer).__name__} answer {answer!r:.60}: {extra:+d} reference(s)")
        if not kept or attempt:
            return kept
        _gc.collect()
    return kept


class _Misbehaving:
    __slots__ = ("mode", "n")

    def __init__(self, mode="raise", n=0):
        self.mode = mode
        self.n = n

    def __repr__(self):
        return f"{type(self).__name__}({self.mode!r}, {self.n})"

    def _answer(self, dunder, good, wrong_type, out_of_range):
        mode = self.mode
        if mode == "raise":
            raise HostileError(f"{type(self).__name__}.{dunder} raised on purpose")
        if mode == "wrong_type":
            return _handed_out(wrong_type)
        if mode == "out_of_range":
            return _handed_out(out_of_range)
        if mode == "reenter":
            __harness_reenter__(self.n)
        return _handed_out(good)


class Indexable:
    """Not an int, but has __index__ (numpy integers, IntEnum-likes): answers `value`, as a fresh int on
    each call (recorded in the answers ledger when it is not one of CPython's shared small ints)."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def __repr__(self):
        return f"Indexable({self.value})"

    def __index__(self):
        return _handed_out(self.value)


class BadIndex(_Misbehaving):
    __slots__ = ()

    def __index__(self):
        return self._answer("__index__", 257, "257", 2**100)


class BadInt(_Misbehaving):
    __slots__ = ()

    def __int__(self):
        return self._answer("__int__", 7, 7.5, 2**100)


class BadFloat(_Misbehaving):
    __slots__ = ()

    def __float__(self):
        return self._answer("__float__", 1.5, "1.5", _math.nan)


class BadLen(_Misbehaving):
    __slots__ = ()

    def __len__(self):
        return self._answer("__len__", 3, "3", -1)


class BadBuffer(_Misbehaving):
    """__buffer__ is honoured from Python 3.12; on 3.11 this is just not a buffer."""

    __slots__ = ()

    def __buffer__(self, flags):
        return self._answer("__buffer__", memoryview(b"abc"), "abc", memoryview(b""))


class BadHash(_Misbehaving):
    __slots__ = ()

    def __hash__(self):
        # -1 is the C-level error marker: Python maps it to -2, C code may not.
        if self.mode == "wrong_type":
            # Not recorded in the answers ledger: the code under test never receives it. CPython's own
            # slot (slot_tp_hash) refuses it, and leaks it before the fix of python/cpython#140406 (every
            # pyenv interpreter here, 3.9-3.13): a leak of the interpreter's, not of the code under test.
            return "42"  # noqa: PLE0309 - the wrong type, on purpose
        return self._answer("__hash__", 42, "42", -1)


class NotBool:
    """Returned by BadEq("wrong_type"): its truth value raises."""

    def __bool__(self):
        raise HostileError("NotBool.__bool__ raised on purpose")


class BadEq(_Misbehaving):
    __slots__ = ()
    __hash__ = _Misbehaving.__hash__

    def __eq__(self, other):
        return self._answer("__eq__", self is other, NotBool(), True)


class BadFspath(_Misbehaving):
    __slots__ = ()

    def __fspath__(self):
        return self._answer(
            "__fspath__",
            "/nonexistent/ffi-harness",
            42,
            "/nonexistent/ffi\0harness",
        )


class BadBool(_Misbehaving):
    __slots__ = ()

    def __bool__(self):
        return self._answer("__bool__", True, "yes", 1)


class DelRunsCode:
    """An object whose finaliser runs code when the last reference goes:
    "gc" runs gc.collect(), "raise" raises (reported via sys.unraisablehook),
    "reenter" calls __harness_reenter__(n)."""

    __slots__ = ("mode", "n")

    def __init__(self, mode="gc", n=0):
        self.mode = mode
        self.n = n

    def __repr__(self):
        return f"DelRunsCode({self.mode!r}, {self.n})"

    def __del__(self):
        if self.mode == "gc":
            _gc.collect()
        elif self.mode == "raise":
            raise HostileError("DelRunsCode.__del__ raised on purpose")
        elif self.mode == "reenter":
            __harness_reenter__(self.n)


# The hook in place before this module: whatever it was (the default, or a target's recorder).
_unraisable_before = getattr(_sys, "unraisablehook", None)  # 3.8+


def _quiet_deliberate_unraisable(args):
    """sys.unraisablehook: a DelRunsCode("raise") raises from __del__ on purpose, thousands of times a
    second under a fuzzer, and the default hook prints each with its traceback and source line (opening
    this file every time: a tenth of a plain `buffers` execution). Only that exception is dropped;
    anything else raised where it cannot propagate goes to the hook that was there before."""
    if args.exc_type is HostileError and args.object is DelRunsCode.__del__:
        return
    _unraisable_before(args)


if _unraisable_before is not None:
    _sys.unraisablehook = _quiet_deliberate_unraisable


def mk_self_referential_list():
    """A list that contains itself: naive recursive converters never return."""
    cycle = []
    cycle.append(cycle)
    return cycle


# ---------------------------------------------------------------------------
# Callables.

_RAISE_KINDS = {
    "hostile_error": HostileError,
    "keyboard_interrupt": KeyboardInterrupt,
    "base_exception": HostileBaseError,
    "memory_error": MemoryError,
}


def mk_raiser(kind):
    exc_type = _RAISE_KINDS[kind]

    def raiser(*args, **kwargs):
        _receive(args, kwargs)
        raise exc_type(f"callable raised {exc_type.__name__} on purpose")

    return raiser


# Off unless a runner turns it on (`ffi-harness fuzz` and its repros do): what a returner hands back is
# then made fresh for that call and recorded in the answers ledger, like a hostile dunder's answer. The
# code under test owns what a callback returned and must release it once done with it (a result kept
# "for later" and never decref'd leaks once per call, which no argument's count shows).
_record_callable_results = False


def record_callable_results(on=True):
    global _record_callable_results
    _record_callable_results = bool(on)


def _callable_result(value):
    """`value` made fresh for one call of a returner, and recorded (see the answers ledger)."""
    kind = type(value)
    if kind is list:
        fresh = list(value)
    elif kind is dict:
        fresh = dict(value)
    elif kind is tuple and value:
        fresh = (*value,)  # a new tuple (tuple(value) and value[:] give back the same one)
    elif kind is bytes and len(value) > 1:
        fresh = value[:1] + value[1:]
    elif kind is bytearray:
        fresh = bytearray(value)
    else:
        return _handed_out(value)
    _answers.append(fresh)
    return fresh


def _returned(value):
    """What a returner hands back: `value`, or a fresh recorded copy while results are recorded."""
    return _callable_result(value) if _record_callable_results else value


# What the code under test passed to a callable argument, while callable results are recorded: objects it
# made for the call (a record, a key; the items of an args tuple it built). Once the program is over and
# nothing live holds them, none may still be held: an args tuple never released (`PyTuple_Pack` without a
# `Py_DECREF`) keeps its items. Only objects with few references are recorded: a type, a module or an
# interned name is everybody's, and its count says nothing.
_received = _collections.deque(maxlen=256)
_RECEIVED_MAX_REFS = 8


def _receive(args, kwargs):
    if not _record_callable_results:
        return
    for value in (*args, *kwargs.values()):
        kind = type(value)
        if value is None or kind is bool or (kind is int and -5 <= value <= 256):
            continue
        if kind in (str, bytes, tuple) and len(value) <= 1:
            continue  # CPython's shared empty and one-character objects
        if _sys.getrefcount(value) <= _RECEIVED_MAX_REFS:
            _received.append(value)


def take_received():
    """What callable arguments received since the last call, as a new list; empties that ledger."""
    received = list(_received)
    _received.clear()
    return received


def mk_returner(value):
    def returner(*args, **kwargs):
        _receive(args, kwargs)
        return _returned(value)

    return returner


def mk_returner_then_raiser(value, n):
    """Returns `value` (as mk_returner does) for its first `n` calls, then raises HostileError."""
    calls = [0]

    def returner_then_raiser(*args, **kwargs):
        _receive(args, kwargs)
        calls[0] += 1
        if calls[0] > n:
            raise HostileError(f"callable raised HostileError on purpose after {n} result(s)")
        return _returned(value)

    return returner_then_raiser


def mk_reenterer(n):
    def reenterer(*args, **kwargs):
        _receive(args, kwargs)
        return __harness_reenter__(n)

    return reenterer


def mk_no_arguments():
    """A callable that accepts no arguments: calling it with any raises TypeError."""

    def no_arguments():
        return None

    return no_arguments


# ---------------------------------------------------------------------------
# Structural comparison, for round-trip tests and differential checks.


def same(a, b, _seen=None):
    """True if a and b were built the same way: equal types and contents, where
    nan equals nan, -0.0 differs from 0.0, buffers compare by layout and content,
    hostile objects by class and mode, and closures by their captured values."""
    if _seen is None:
        _seen = set()
    ta = type(a)
    if ta is not type(b):
        return False
    if isinstance(a, (list, tuple, dict)):
        # Containers may be cyclic; the pair stays alive in the callers' frames,
        # so ids cannot be reused while it is in `_seen`.
        key = (id(a), id(b))
        if key in _seen:
            return True
        _seen.add(key)
    if isinstance(a, float):
        if _math.isnan(a):
            return _math.isnan(b)
        return a == b and _math.copysign(1.0, a) == _math.copysign(1.0, b)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y, _seen) for x, y in zip(a, b))
    if isinstance(a, dict):
        ia, ib = list(a.items()), list(b.items())
        return len(ia) == len(ib) and all(
            same(ka, kb, _seen) and same(va, vb, _seen) for (ka, va), (kb, vb) in zip(ia, ib)
        )
    if isinstance(a, memoryview):
        try:
            _ = a.nbytes
        except ValueError:
            try:
                _ = b.nbytes
            except ValueError:
                return True
            return False
        return (a.format, a.shape, a.strides, a.readonly) == (b.format, b.shape, b.strides, b.readonly) and same(
            a.tolist(), b.tolist(), _seen
        )
    if isinstance(a, _array.array):
        return a.typecode == b.typecode and same(a.tolist(), b.tolist(), _seen)
    if isinstance(a, _mmap.mmap):
        return a[:] == b[:]
    if isinstance(a, Indexable):
        return same(a.value, b.value, _seen)
    if isinstance(a, (_Misbehaving, DelRunsCode)):
        return (a.mode, a.n) == (b.mode, b.n)
    if callable(a) and hasattr(a, "__code__"):
        ca, cb = a.__closure__ or (), b.__closure__ or ()
        return (
            a.__qualname__ == b.__qualname__
            and len(ca) == len(cb)
            and all(same(x.cell_contents, y.cell_contents, _seen) for x, y in zip(ca, cb))
        )
    return a == b
