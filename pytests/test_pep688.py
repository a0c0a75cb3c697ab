"""PEP 688 (Python 3.12+): classes written in Python export buffers through `__buffer__` and
`__release_buffer__`. Every API of `native` that takes a buffer gets well-behaved ones (same answer as
bytes) and hostile ones: `__buffer__` raising, returning something that is not a memoryview, returning a
view that is already released, a read-only view where a writable one is needed, and
`__release_buffer__` raising. Each call must give the answer or a documented exception (the hostile
object's own one included), never SystemError, never a crash, and the connection stays usable.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

native = pytest.importorskip("native")

pytestmark = pytest.mark.skipif(sys.version_info < (3, 12), reason="PEP 688 __buffer__ is Python 3.12+")


class Hostile(Exception):
    pass


class Exporter:
    """A well-behaved Python-level buffer exporter over its own bytearray."""

    def __init__(self, data: bytes) -> None:
        self.data = bytearray(data)
        self.exports = 0

    def __buffer__(self, flags: int) -> memoryview:
        self.exports += 1
        return memoryview(self.data)

    def __release_buffer__(self, view: memoryview) -> None:
        self.exports -= 1
        view.release()


class Raises:
    def __buffer__(self, flags: int) -> memoryview:
        raise Hostile("__buffer__ refuses")


class WrongType:
    def __buffer__(self, flags: int) -> Any:
        return b"not a memoryview"


class AlreadyReleased:
    def __buffer__(self, flags: int) -> memoryview:
        view = memoryview(bytearray(b"abcdef"))
        view.release()
        return view


class ReadOnly:
    def __buffer__(self, flags: int) -> memoryview:
        return memoryview(b"read-only bytes")


class ReleaseRaises(Exporter):
    def __release_buffer__(self, view: memoryview) -> None:
        view.release()
        raise Hostile("__release_buffer__ refuses")


HOSTILE: dict[str, Callable[[], Any]] = {
    "__buffer__ raises": Raises,
    "__buffer__ returns bytes": WrongType,
    "__buffer__ returns a released view": AlreadyReleased,
    "__buffer__ returns a read-only view": ReadOnly,
    "__release_buffer__ raises": lambda: ReleaseRaises(b"release"),
}
DOCUMENTED = (TypeError, ValueError, BufferError, Hostile)


@pytest.fixture
def conn(tmp_path: Path) -> Any:
    c = native.connect(os.fspath(tmp_path / "pep688.db"))
    c.put(b"k", b"v")
    yield c
    c.close()


CALLS: dict[str, Callable[[Any, Any], Any]] = {
    "checksum": lambda _c, b: native.checksum(b),
    "process": lambda _c, b: native.process(b, key=7),
    "put key": lambda c, b: c.put(b, b"v"),
    "put value": lambda c, b: c.put(b"k2", b),
    "get": lambda c, b: c.get(b),
    "delete": lambda c, b: c.delete(b),
    "in": lambda c, b: b in c,
}


@pytest.mark.parametrize("call", sorted(CALLS))
def test_a_well_behaved_exporter_is_a_buffer(conn: Any, call: str) -> None:
    exporter = Exporter(b"k")
    try:
        CALLS[call](conn, exporter)
    except KeyError:
        assert call in ("get", "delete")  # b"k" was deleted by nothing here; only k2 may be missing
    assert exporter.exports == 0, "the export was not released"
    if call == "checksum":
        assert native.checksum(Exporter(b"abc")) == native.checksum(b"abc")


@pytest.mark.parametrize("kind", sorted(HOSTILE))
@pytest.mark.parametrize("call", sorted(CALLS))
def test_hostile_exporters_get_a_documented_exception(conn: Any, call: str, kind: str, unraisable: Any) -> None:
    obj = HOSTILE[kind]()
    try:
        CALLS[call](conn, obj)
    except DOCUMENTED:
        pass
    except KeyError:
        assert call in ("get", "delete"), "KeyError from a call that does not look keys up"
    # The connection is still usable and unchanged by the refusal.
    assert conn.get(b"k") == b"v"


def test_process_refuses_a_read_only_export(conn: Any) -> None:
    with pytest.raises((TypeError, BufferError)):
        native.process(ReadOnly(), key=1)


def test_process_writes_through_a_python_exporter() -> None:
    exporter = Exporter(b"\x00" * 8)
    native.process(exporter, key=0x01020304)
    assert bytes(exporter.data) != b"\x00" * 8
    assert exporter.exports == 0
