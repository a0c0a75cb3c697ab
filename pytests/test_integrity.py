"""Integrity against a model: a damaged store either refuses to open or gives back exactly what was
committed.

A small store is written through `native` while a dict models what each committed operation leaves
behind. Then the file is damaged in every way a single event can damage it — every byte offset flipped
(one bit, and all bits) and the file cut at every length — and reopened each time. The only acceptable
outcomes are `native.ProtocolError` (with op and code), or a store whose whole content equals the
model. Different bytes, missing or resurrected keys, any other exception, or a crash are failures. This
is the oracle that sees a checksum that is no longer checked, a record length trusted blindly, or a
log cut at a record boundary passing for a shorter history.

The same judge holds for writes the OS refuses part-way (a full disk, a file size limit): every
operation either reports success and survives a reopen, or raises and leaves no trace.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
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


# Damage a single event cannot make, but a crafted or doubly damaged file can: an extreme value written
# over any 2, 4 or 8 bytes. A length field read as all ones, or as just below 2^width minus the file's
# size, is where a length sum computed too narrow wraps past its bounds check, and the read that
# follows goes far past the mapping: a signal, not an exception. So the reopenings run in a child,
# which says which case it starts before each, and its death names the case.
EXTREME_VALUES_CHILD = """
import json, sys
import native
path = sys.argv[1]
for line in sys.stdin:
    how, data = json.loads(line)
    with open(path, "wb") as f:
        f.write(bytes.fromhex(data))
    print(json.dumps(["start", how]), flush=True)
    try:
        with native.connect(path, timeout=0) as c:
            got = {k.hex(): v.hex() for k, v in c.items()}
        print(json.dumps(["content", got]), flush=True)
    except native.ProtocolError as e:
        print(json.dumps(["refused", e.op, e.code]), flush=True)
    except Exception as e:
        print(json.dumps(["error", f"{type(e).__name__}: {e}"]), flush=True)
"""


def _extremes(original: bytes) -> Iterator[tuple[str, bytes]]:
    for width in (2, 4, 8):
        top = 1 << (8 * width)
        for value in (top - 1, top >> 1, (top >> 1) - 1, top - len(original)):
            for off in range(len(original) - width + 1):
                data = original[:off] + value.to_bytes(width, "little") + original[off + width :]
                if data != original:
                    yield f"{width} bytes at {off} = {value:#x}", data


@pytest.mark.ffi_harness_no_repeat  # one child making 1,780 reopenings; its leaks are not this process's
def test_an_extreme_value_in_any_field_is_refused_or_harmless(tmp_path: Path) -> None:
    path = str(tmp_path / "store.db")
    model = _write(path)
    original = Path(path).read_bytes()
    cases = list(_extremes(original))
    child = subprocess.run(
        [sys.executable, "-c", EXTREME_VALUES_CHILD, path],
        input="".join(json.dumps([how, data.hex()]) + "\n" for how, data in cases),
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    failures, started, judged = [], None, 0
    for line in child.stdout.splitlines():
        kind, *rest = json.loads(line)
        if kind == "start":
            started = rest[0]
            continue
        judged += 1
        if kind == "refused" and rest != ["connect", "NATIVE_EPROTOCOL"]:
            failures.append(f"{started}: ProtocolError with op, code = {rest}")
        elif kind == "content" and {bytes.fromhex(k): bytes.fromhex(v) for k, v in rest[0].items()} != model:
            failures.append(f"{started}: reopened with {rest[0]!r}, committed {model!r}")
        elif kind == "error":
            failures.append(f"{started}: {rest[0]}")
    if child.returncode != 0:
        died = signal.Signals(-child.returncode).name if child.returncode < 0 else f"exit {child.returncode}"
        failures.insert(0, f"{started}: the process died ({died}): {child.stderr[-2000:]}")
    elif judged != len(cases):
        failures.insert(0, f"the child judged {judged} of {len(cases)} cases: {child.stderr[-2000:]}")
    assert not failures, f"{len(failures)} stores with an extreme value went wrong; first ones:\n" + "\n".join(
        failures[:8]
    )


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


# Writes refused part-way: under RLIMIT_FSIZE a write that crosses the limit is cut short (a short
# pwrite) and the next one fails with EFBIG, as on a full disk. The child runs a fixed workload and
# reports which operations said they succeeded; the parent's model applies exactly those.
FILE_SIZE_LIMITED = """
import json, resource, signal, sys
import native
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of death, as a full disk gives ENOSPC
path, limit, ops = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
with native.connect(path) as c:
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    report, seen, diverged = [], dict(c.items()), None
    for key, size in ops:
        key = key.encode()
        try:
            if size < 0:
                c.delete(key)
                seen.pop(key)
            else:
                c.put(key, bytes([size % 251]) * size)
                seen[key] = bytes([size % 251]) * size
            report.append(["ok"])
        except native.Error as e:
            report.append([type(e).__name__, getattr(e, "errno", None)])
        if dict(c.items()) != seen:
            diverged = f"after {key!r}: the open store differs from what its calls reported"
            break
print(json.dumps({"outcomes": report, "diverged": diverged}))
"""
LIMITED_OPS = [["a", 10], ["b", 40], ["a", 90], ["c", 3], ["alpha", -1], ["d", 200], ["e", 1], ["a", 17]]


@pytest.mark.ffi_harness_no_repeat  # 36 child processes; their leaks are not this process's to measure
def test_a_write_cut_short_by_a_full_disk_either_commits_or_has_no_effect(tmp_path: Path) -> None:
    first = str(tmp_path / "first.db")
    _write(first)
    size = os.path.getsize(first)
    failures, refused = [], 0
    for extra in range(0, 460, 13):  # the limit falls at every part of the workload's records
        path = str(tmp_path / f"limit{extra}.db")
        Path(path).write_bytes(Path(first).read_bytes())
        model = _content(path)
        child = subprocess.run(
            [sys.executable, "-c", FILE_SIZE_LIMITED, path, str(size + extra), json.dumps(LIMITED_OPS)],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert child.returncode == 0, child.stderr
        told = json.loads(child.stdout)
        if told["diverged"]:
            failures.append(f"limit +{extra}: {told['diverged']}")
            continue
        report = told["outcomes"]
        assert len(report) == len(LIMITED_OPS), report
        for (key, n), outcome in zip(LIMITED_OPS, report):
            if outcome == ["ok"]:
                if n < 0:
                    del model[key.encode()]
                else:
                    model[key.encode()] = bytes([n % 251]) * n
            elif outcome[1] != errno.EFBIG:
                failures.append(f"limit +{extra}: {key} refused with {outcome}, not EFBIG")
            else:
                refused += 1
        # Nothing was damaged, only refused: unlike _judge's damaged files, refusing to open is a failure
        # here. The store must reopen with exactly the model, and take writes again once there is room.
        try:
            got = _content(path)
            if got != model:
                failures.append(f"limit +{extra} ({report}): reopened with {got!r}, committed {model!r}")
                continue
            with native.connect(path) as c:
                c.put(b"room", b"again")
            model[b"room"] = b"again"
            if _content(path) != model:
                failures.append(f"limit +{extra}: a write after the refusals did not stick")
        except native.Error as e:
            failures.append(f"limit +{extra} ({report}): the store no longer opens: {e!r}")
    assert refused > 0, "the file size limit never refused a write: the test exercised nothing"
    assert not failures, f"{len(failures)} workloads went wrong; first ones:\n" + "\n".join(failures[:8])
