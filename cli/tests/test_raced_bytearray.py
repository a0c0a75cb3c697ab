"""The prelude's RacedByteArray, which the runtime resizes from another thread for the whole of a call that
takes it: a callee that lets go of the buffer while it goes on with the GIL released sees the storage moved
under it (freed, under ASan: there every realloc moves the storage); one that holds it makes every resize
fail; and the race leaves the bytes and the reference count as they were."""

from __future__ import annotations

import ctypes
import sys
import time
from typing import Any

from ffi_harness import _engine

fh: Any = _engine.prelude()  # registered as ffi_harness_prelude, as in the engine


def _address(buf: bytearray) -> int:
    """Where `buf`'s storage is now (the ctypes view exports it only for this call)."""
    view = (ctypes.c_char * len(buf)).from_buffer(buf)
    try:
        return ctypes.addressof(view)
    finally:
        del view


def _lets_go_then_waits(buf: bytearray) -> int:
    """A detached call over a pointer it no longer pins: the resizes made while it waited."""
    _address(buf)
    done = fh.resizes_done()
    time.sleep(0.05)  # the GIL is released, as in a detached native loop
    return int(fh.resizes_done() - done)


def _holds_then_waits(buf: bytearray) -> tuple[bool, int]:
    """The same call holding the buffer: (whether the storage moved, the resizes made) while it waited."""
    with memoryview(buf):
        before, done = _address(buf), fh.resizes_done()
        time.sleep(0.05)
        return _address(buf) != before, int(fh.resizes_done() - done)


def test_a_raced_bytearray_is_large_and_built_the_same_way_each_time() -> None:
    a, b = fh.mk_raced_bytearray(7, 5), fh.mk_raced_bytearray(7, 5)
    assert type(a) is fh.RacedByteArray and isinstance(a, bytearray)
    assert len(a) == 65536 * 2 + 1 and a == b and set(a) == {7}
    assert len(fh.mk_raced_bytearray(0, 3)) == 65536 * 4


def test_a_callee_that_lets_go_of_the_buffer_has_it_resized_under_it() -> None:
    buf = fh.mk_raced_bytearray(0xAB, 2)
    contents, count = bytes(buf), sys.getrefcount(buf)
    with fh.resized_during([1, buf, "x"]):
        resized = _lets_go_then_waits(buf)
    assert resized > 0, "the resizer never resized the buffer nobody held during the call"
    assert bytes(buf) == contents and sys.getrefcount(buf) == count


def test_a_callee_that_holds_the_buffer_keeps_it_in_place() -> None:
    buf = fh.mk_raced_bytearray(0xCD, 1)
    contents, count = bytes(buf), sys.getrefcount(buf)
    with fh.resized_during([buf]):
        moved, resized = _holds_then_waits(buf)
    assert not moved and resized == 0
    assert bytes(buf) == contents and sys.getrefcount(buf) == count


def test_only_raced_bytearrays_are_resized() -> None:
    plain = bytearray(70000)
    with fh.resized_during([plain]):
        resized = _lets_go_then_waits(plain)
    assert resized == 0 and len(plain) == 70000
