"""Integrity against a model: a damaged store either refuses to open or gives back exactly what was
committed.

A small store is written through `native` while a dict models what each committed operation leaves
behind. Then the file is damaged in every way a single event can damage it — every byte offset flipped
(one bit, and all bits) and the file cut at every length — and reopened each time. The only acceptable
outcomes are `native.ProtocolError` (with op and code), or a store whose whole content equals the
model. Different bytes, missing or resurrected keys, any other exception, or a crash are failures. This
is the oracle that sees a checksum that is no longer checked, a record length trusted blindly, or a
log cut at a record boundary passing for a shorter history.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import native
import pytest

# A history with overwrites and deletes: cutting the log after any prefix of it would give a state
# that differs from the committed one (an older value back, a deleted key resurrected, a key missing).
HISTORY: list[tuple[str, bytes, bytes | None]] = [
    ("put", b"alpha", b"1"),
    ("put", b"beta", b"two"),
    ("put", b"alpha", b"one again"),
    ("delete", b"beta", None),
    ("put", b"gamma", b"\x00\xff" * 5),
    ("put", b"beta", b"back"),
]


def _write(path: str) -> dict[bytes, bytes]:
    model: dict[bytes, bytes] = {}
    with native.connect(path) as c:
        for op, key, value in HISTORY:
            if op == "put":
                assert value is not None
                c.put(key, value)
                model[key] = value
            else:
                c.delete(key)
                del model[key]
    return model


def _content(path: str) -> dict[bytes, bytes]:
    with native.connect(path, timeout=0) as c:
        return dict(c.items())


def _damaged(original: bytes) -> Iterator[tuple[str, bytes]]:
    # From 1 byte: an empty file is a new store by definition (connect creates one), nothing to detect.
    for cut in range(1, len(original)):
        yield f"cut to {cut} bytes", original[:cut]
    for off in range(len(original)):
        for mask in (0x01, 0xFF):
            data = bytearray(original)
            data[off] ^= mask
            yield f"byte {off} ^ {mask:#04x}", bytes(data)


def _judge(path: str, model: dict[bytes, bytes], how: str) -> str | None:
    try:
        got = _content(path)
    except native.ProtocolError as e:
        if e.op != "connect" or e.code != "NATIVE_EPROTOCOL":
            return f"{how}: ProtocolError with op={e.op!r} code={e.code!r}"
        return None
    except Exception as e:  # noqa: BLE001 - any other outcome is the finding
        return f"{how}: {type(e).__name__}: {e}"
    if got != model:
        return f"{how}: reopened with {got!r}, committed {model!r}"
    return None


@pytest.mark.ffi_harness_no_repeat  # ~1000 reopenings already; repeating them measures nothing new
def test_every_single_damage_is_refused_or_harmless(tmp_path: Path) -> None:
    path = str(tmp_path / "store.db")
    model = _write(path)
    original = Path(path).read_bytes()
    assert _content(path) == model  # the undamaged store is the model
    failures = []
    for how, data in _damaged(original):
        Path(path).write_bytes(data)
        failure = _judge(path, model, how)
        if failure is not None:
            failures.append(failure)
    assert not failures, f"{len(failures)} damaged stores reopened wrong; first ones:\n" + "\n".join(failures[:8])


def test_an_uncommitted_tail_is_not_part_of_the_store(tmp_path: Path) -> None:
    # Bytes after the committed end (an append torn by a crash) are not committed data: the store
    # reopens with exactly the committed content, and the next write goes where the tail was.
    path = str(tmp_path / "store.db")
    model = _write(path)
    with open(path, "ab") as f:
        f.write(b"\x01\x03\x00\x00\x00\x01\x00\x00\x00abcX")  # a record cut before its checksum
    assert _content(path) == model
    with native.connect(path) as c:
        c.put(b"delta", b"4")
    model[b"delta"] = b"4"
    assert _content(path) == model
    assert os.path.getsize(path) > 0
