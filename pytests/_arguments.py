"""Argument values by parameter kind, shared by the conformance matrices (test_conformance.py for the
PyO3 wrapper, bindings/test_binding_conformance.py for every binding): each kind's wrong values with the
exceptions that document refusing them, each kind's accepted forms beyond the plain one, and the checks
that a call, refused or not, keeps nothing of what it was given.

The kinds: "Buffer", "int", "path", "seconds" (a timeout), "options", "callable".
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

try:  # CPython's own test exporter: the one stdlib way to make a buffer in Fortran order
    import _testbuffer
except ImportError:  # a build without the test modules
    _testbuffer = None

Refusal = tuple[str, Any, tuple[type[BaseException], ...]]


class Fresh:
    """A bad value made anew for each run of a test: the check after a refusal releases it."""

    def __init__(self, make: Callable[[], Any]) -> None:
        self.make = make


def made(value: Any) -> Any:
    return value.make() if isinstance(value, Fresh) else value


def assert_let_go(what: str, value: Any) -> None:
    """A refused call lets go of the buffer it took: our own view releases (BufferError while anything
    still holds an export of it) and the bytearray behind it can be resized again."""
    if isinstance(value, memoryview):
        base = value.obj
        try:
            value.release()
        except BufferError as e:
            raise AssertionError(f"refusing {what} kept an export of it: {e}") from None
        if isinstance(base, bytearray):
            try:
                base.append(0)
            except BufferError as e:
                raise AssertionError(f"refusing {what} kept an export of the bytearray behind it: {e}") from None


class IntSubclass(int):
    pass


class FloatSubclass(float):
    pass


class Indexable:
    """Not an int, but has __index__ (numpy integers, IntEnum-likes): each call makes a fresh int."""

    def __init__(self, value: int) -> None:
        self.text = str(value)

    def __index__(self) -> int:
        return int(self.text)


class FsPath:
    """os.PathLike with a bad __fspath__: it returns `value` (a fresh object each call), or raises if None."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __fspath__(self) -> Any:
        if self.value is None:
            raise RuntimeError("from __fspath__")
        if isinstance(self.value, int):
            return int(str(self.value))
        if isinstance(self.value, (str, bytes)):
            return self.value[:1] + self.value[1:]  # a new object each call, equal to the value
        return self.value


INT_FORMS: dict[str, Callable[[int], Any]] = {
    "an int": lambda v: int(str(v)),
    "an int subclass": IntSubclass,
    "an __index__ object": Indexable,
}


# The int forms a timeout or an Options field takes: ints, not every __index__ object (those are refused).
PLAIN_INT_FORMS = {form: make for form, make in INT_FORMS.items() if form != "an __index__ object"}


def _fortran_ordered() -> Any:
    """A writable 2x3 buffer of bytes 0..5, Fortran-contiguous (so not C-contiguous)."""
    assert _testbuffer is not None
    flags = _testbuffer.ND_FORTRAN | _testbuffer.ND_WRITABLE
    return _testbuffer.ndarray(list(range(6)), shape=[2, 3], format="B", flags=flags)


def _indirect() -> Any:
    """A writable 2x3 buffer of bytes 0..5 in the PIL style: suboffsets, rows reached through pointers."""
    assert _testbuffer is not None
    flags = _testbuffer.ND_PIL | _testbuffer.ND_WRITABLE
    return _testbuffer.ndarray(list(range(6)), shape=[2, 3], format="B", flags=flags)


def bad_values(kind: str) -> list[Refusal]:
    """(what, value, exceptions that document refusing it), for every kind of wrong value a parameter of
    this kind can get: other types, and values of its type out of range."""
    wrong_types: list[Refusal] = [
        ("None", None, (TypeError,)),
        ("int", 1, (TypeError,)),
        ("float", 1.5, (TypeError,)),
        ("str", "s", (TypeError,)),
        ("object()", object(), (TypeError,)),
        ("list", [1], (TypeError,)),
    ]
    allowed = {
        "Buffer": {"None": False},
        "callable": {},
        "int": {"int": True},
        "path": {"str": True},
        "options": {"None": True},
        "seconds": {"None": True, "int": True, "float": True},
    }[kind]
    out = [r for r in wrong_types if not allowed.get(r[0], False)]
    if kind == "Buffer":
        out.append(
            (
                "non-contiguous memoryview of a bytearray",
                Fresh(lambda: memoryview(bytearray(b"abcd"))[::2]),
                (TypeError, BufferError),
            )
        )
        if _testbuffer is not None:
            # Contiguous, but in Fortran order: a check for "any contiguous" ('A') instead of C order
            # passes it, and the native code then reads the bytes in memory order, not in logical order.
            out.append(("a Fortran-ordered 2-D buffer", Fresh(_fortran_ordered), (TypeError, BufferError)))
            # Rows reached through pointers (suboffsets): its memory starts with the row pointers, not the
            # bytes. Code that asks for an indirect export and checks only strides reads the pointers.
            out.append(("a PIL-style buffer with suboffsets", Fresh(_indirect), (TypeError, BufferError)))
    if kind == "int":
        # Every form an int argument takes (PyNumber_Index's inputs), each beyond 64 bits: a conversion
        # must refuse all of them and keep none of the ints it made on the way.
        for form, make in INT_FORMS.items():
            out.append((f"{form} over 64 bits", Fresh(lambda make=make: make(2**70)), (OverflowError, ValueError)))
            out.append((f"{form} under -2**64", Fresh(lambda make=make: make(-(2**66))), (OverflowError, ValueError)))
    if kind == "path":
        # os.PathLike objects whose __fspath__ gives no path: what it returned must not be kept.
        out.append(("an __fspath__ giving an int", Fresh(lambda: FsPath(int("12345678901234567890"))), (TypeError,)))
        out.append(("an __fspath__ that raises", Fresh(lambda: FsPath(None)), (TypeError, RuntimeError)))
    if kind == "options":
        out.append(("a mapping with an unknown field", {"bogus": 1}, (TypeError, ValueError)))
    if kind == "seconds":
        out.append(("a negative timeout", -1.0, (ValueError,)))
    return out


SINGLETONS = (None, True, False)


def singletons_are_mortal() -> bool:
    """False from CPython 3.12, where None, True and False are immortal: their counts never move."""
    before = sys.getrefcount(None)
    held = [None] * 64
    return sys.getrefcount(None) - before == len(held)


def singleton_counts() -> list[int]:
    return [sys.getrefcount(s) for s in SINGLETONS]


def assert_singletons_kept(what: str, before: list[int], n: int) -> None:
    """After n calls, None, True and False hold at least the references they held before: C that returns
    one without its own reference (`return Py_None;`) or releases a borrowed one takes one per call, and
    the interpreter aborts once the count reaches zero. (Before CPython 3.12; from 3.12 they are immortal,
    their counts never move, and the bug is harmless.)"""
    lost = {repr(s): b - a for s, b, a in zip(SINGLETONS, before, singleton_counts()) if b - a >= n // 2}
    assert not lost, f"{what}: references taken from singletons in {n} calls: {lost} (an over-decref)"


def assert_refusals_keep_nothing(what: str, call: Callable[[], Any], n: int = 200) -> None:
    """The same refused call, n times on this thread: an object kept per refusal (an int made from
    __index__, an exception's args) shows as n more allocated blocks; noise is a handful. No singleton
    loses a reference on the way (assert_singletons_kept)."""
    if not hasattr(sys, "getallocatedblocks"):
        return
    for _ in range(3):  # warm caches (interned strings, type caches) before counting
        with pytest.raises(Exception):  # noqa: B017 - judged above; here only what stays behind
            call()
    before, singletons = sys.getallocatedblocks(), singleton_counts()
    for _ in range(n):
        try:
            call()
        except Exception:  # noqa: BLE001, S110 - the refusal itself was judged above
            pass
    grown = sys.getallocatedblocks() - before
    assert grown < n // 2, f"{what}: {grown} more allocated blocks after {n} refusals (one kept per call?)"
    assert_singletons_kept(what, singletons, n)


def accepted_values(kind: str) -> list[tuple[str, Callable[[Path], Any]]]:
    """(form, make) for every form of a good value a parameter of this kind accepts beyond the plain
    one: each int form of an int too big for CPython's small-int cache, each spelling of a path (`make`
    gets the store path to spell)."""
    if kind == "int":
        return [(form, lambda _path, make=make: make(1000)) for form, make in INT_FORMS.items()]
    if kind == "seconds":
        return [
            ("a float", lambda _path: float("1.5")),
            ("a float subclass", lambda _path: FloatSubclass("1.5")),
            *((f"{form} (seconds)", lambda _path, make=make: make(1000)) for form, make in PLAIN_INT_FORMS.items()),
        ]
    if kind == "options":
        # Int fields of a mapping: Options.from_mapping converts each one.
        return [
            (f"a mapping with {form}s", lambda _path, make=make: {"max_key_size": make(1000), "file_mode": make(420)})
            for form, make in PLAIN_INT_FORMS.items()
        ]
    if kind == "path":
        return [
            ("a str", os.fspath),
            ("bytes", os.fsencode),
            ("a pathlib.Path", Path),
            ("an __fspath__ object", lambda path: FsPath(os.fspath(path))),
        ]
    return []


def assert_calls_keep_nothing(what: str, once: Callable[[], Any], held: list[Any], n: int = 200) -> None:
    """The same good call, n times: an int a conversion made from __index__ (or the str __fspath__ gave)
    and kept on the way to C shows as n more allocated blocks, a reference kept to an object in `held`
    (the argument, each value of a mapping argument) as n more references to it, and one taken from None
    (a `return Py_None;`) as n fewer references to None."""
    for _ in range(3):  # warm caches (interned strings, type caches) before counting
        once()
    refs, blocks, singletons = [sys.getrefcount(x) for x in held], sys.getallocatedblocks(), singleton_counts()
    for _ in range(n):
        once()
    grown = sys.getallocatedblocks() - blocks
    kept = [after - before for before, after in zip(refs, [sys.getrefcount(x) for x in held])]
    assert not any(kept), f"{what}: references kept to {held!r}: {kept}"
    assert grown < n // 2, f"{what}: {grown} more allocated blocks after {n} calls (one kept per call?)"
    assert_singletons_kept(what, singletons, n)
