"""Error translation: missing directory (errno), corruption, lock timeout, hierarchy and attributes."""

import builtins
import errno
import os
import subprocess
import sys
import threading
import time

import native
import pytest
from _refs import debug_counters_self_cost, native_calls


def assert_native_error(e, op, code):
    assert isinstance(e, native.Error)
    assert e.op == op
    assert e.code == code
    assert isinstance(e.message, str) and e.message.strip()


# ---------------------------------------------------------------- hierarchy


def test_hierarchy():
    assert issubclass(native.Error, Exception)
    assert native.Error is not Exception
    assert issubclass(native.ConnectionError, native.Error)
    assert issubclass(native.ConnectionError, OSError)
    assert issubclass(native.TimeoutError, native.Error)
    assert issubclass(native.TimeoutError, builtins.TimeoutError)
    assert issubclass(native.ProtocolError, native.Error)
    assert issubclass(native.InvalidStateError, native.Error)
    classes = {
        native.Error,
        native.ConnectionError,
        native.TimeoutError,
        native.ProtocolError,
        native.InvalidStateError,
    }
    assert len(classes) == 5
    assert not issubclass(native.ProtocolError, native.InvalidStateError)
    assert not issubclass(native.InvalidStateError, native.ProtocolError)
    for cls in classes:
        assert cls.__module__ == "native"


# ---------------------------------------------------------------- missing directory / missing file


def test_missing_directory_connection_error(tmp_path):
    path = str(tmp_path / "no" / "such" / "dir" / "store.db")
    with pytest.raises(native.ConnectionError) as ei:
        native.connect(path)
    e = ei.value
    assert isinstance(e, OSError)
    assert isinstance(e, native.Error)
    assert e.errno == errno.ENOENT
    assert e.filename == path
    assert e.strerror == os.strerror(errno.ENOENT)  # OSError convention; op/message carry the rest
    assert_native_error(e, "connect", "NATIVE_EIO")
    assert not os.path.exists(path)


class _FsPath:
    def __init__(self, value):
        self.value = value

    def __fspath__(self):
        return self.value


@pytest.mark.parametrize(
    "make",
    [
        lambda d: os.fsencode(d) + b"/x.db",
        lambda d: d + "/caf\udce9.db",  # an undecodable file name, as os.listdir gives it
        lambda d: _FsPath(os.fsencode(d) + b"/y.db"),
        lambda d: _FsPath(d + "/z.db"),
    ],
    ids=["bytes", "surrogate-str", "pathlike-bytes", "pathlike-str"],
)
def test_the_errors_filename_is_the_path_as_given(tmp_path, make):
    # OSError convention: `filename` is the path the caller passed (after os.fspath), bytes as bytes and
    # an undecodable name with its surrogates, not only a path that converts to a Rust String (red team
    # round 12: a bytes path, a surrogate and a bytes PathLike lost their filename, and str(e) its name).
    path = make(str(tmp_path / "no" / "such" / "dir"))
    with pytest.raises(native.ConnectionError) as ei:
        native.connect(path)
    assert ei.value.errno == errno.ENOENT
    assert ei.value.filename == os.fspath(path)
    assert repr(os.fspath(path)) in str(ei.value)


def test_missing_directory_caught_as_oserror(tmp_path):
    path = str(tmp_path / "missing" / "x.db")
    try:
        native.connect(path)
    except OSError as e:
        assert e.errno == errno.ENOENT
    else:
        pytest.fail("no exception")


def test_create_false_missing_file(tmp_path):
    path = str(tmp_path / "absent.db")
    with pytest.raises(native.ConnectionError) as ei:
        native.connect(path, options={"create": False})
    assert ei.value.errno == errno.ENOENT
    assert ei.value.filename == path
    assert_native_error(ei.value, "connect", "NATIVE_EIO")
    assert not os.path.exists(path)
    with pytest.raises(native.ConnectionError):
        native.connect(path, options=native.Options(create=False))


def test_create_false_existing_file(tmp_path):
    path = str(tmp_path / "present.db")
    with native.connect(path) as c:
        c.put(b"k", b"v")
    with native.connect(path, options={"create": False}) as c:
        assert c.get(b"k") == b"v"


def test_path_is_a_directory(tmp_path):
    with pytest.raises(native.ConnectionError) as ei:
        native.connect(str(tmp_path))
    assert ei.value.errno in (errno.EISDIR, errno.EACCES, errno.EINVAL, errno.ENOTDIR)
    assert ei.value.errno != 0
    assert ei.value.filename == str(tmp_path)


# ---------------------------------------------------------------- lock timeout


def test_lock_timeout(store_path):
    with native.connect(store_path) as first:
        t0 = time.monotonic()
        with pytest.raises(native.TimeoutError) as ei:
            native.connect(store_path, timeout=0.2)
        elapsed = time.monotonic() - t0
        assert 0.15 <= elapsed < 2.0, elapsed
        e = ei.value
        assert isinstance(e, builtins.TimeoutError)
        assert isinstance(e, native.Error)
        assert_native_error(e, "connect", "NATIVE_ETIMEOUT")
        first.put(b"still", b"usable")
    with native.connect(store_path, timeout=0.2) as second:
        assert second.get(b"still") == b"usable"


def test_lock_timeout_zero_is_immediate(store_path):
    with native.connect(store_path):
        t0 = time.monotonic()
        with pytest.raises(native.TimeoutError):
            native.connect(store_path, timeout=0)
        with pytest.raises(native.TimeoutError):
            native.connect(store_path, timeout=0.0)
        assert time.monotonic() - t0 < 0.5


def test_lock_timeout_int_seconds(store_path):
    with native.connect(store_path):
        t0 = time.monotonic()
        with pytest.raises(native.TimeoutError):
            native.connect(store_path, timeout=1)
        assert 0.9 <= time.monotonic() - t0 < 3.0


def test_lock_released_by_other_thread_while_waiting(store_path):
    first = native.connect(store_path)
    result = {}

    def closer():
        time.sleep(0.3)
        first.close()

    t = threading.Thread(target=closer)
    t.start()
    t0 = time.monotonic()
    try:
        second = native.connect(store_path, timeout=5)
    finally:
        t.join(10)
    result["elapsed"] = time.monotonic() - t0
    second.close()
    assert 0.2 <= result["elapsed"] < 4.5


_HOLDER = r"""
import sys, time, native
c = native.connect(sys.argv[1])
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
c.close()
print("released", flush=True)
"""


def test_timeout_none_waits_for_lock_held_by_other_process(store_path):
    native.connect(store_path).close()
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, store_path, "0.6"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        t0 = time.monotonic()
        with pytest.raises(native.TimeoutError):
            native.connect(store_path, timeout=0.05)  # really locked across processes
        c = native.connect(store_path, timeout=None)
        elapsed = time.monotonic() - t0
        c.close()
        assert elapsed >= 0.3, f"timeout=None did not wait ({elapsed:.3f}s)"
        assert holder.wait(10) == 0
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


@pytest.mark.parametrize("timeout", [-1, -0.001, float("nan"), -float("inf")])
def test_timeout_invalid_value(store_path, timeout):
    cost = debug_counters_self_cost()
    c0 = native_calls()
    with pytest.raises(ValueError):
        native.connect(store_path, timeout=timeout)
    assert native_calls() - c0 == cost
    assert not os.path.exists(store_path)


@pytest.mark.parametrize("timeout", ["1", b"1", [1], object()])
def test_timeout_wrong_type(store_path, timeout):
    cost = debug_counters_self_cost()
    c0 = native_calls()
    with pytest.raises(TypeError):
        native.connect(store_path, timeout=timeout)
    assert native_calls() - c0 == cost
    assert not os.path.exists(store_path)


# ---------------------------------------------------------------- corruption


def _make_store(path, n=12):
    with native.connect(path) as c:
        for i in range(n):
            c.put(b"key-%04d" % i, bytes([65 + i % 26]) * 200)
        c.flush()
    size = os.path.getsize(path)
    assert size > n * 200
    return size


@pytest.mark.parametrize("where", [0.5, 0.35, 0.8])
def test_flipped_byte_in_record_protocol_error(store_path, where):
    size = _make_store(store_path)
    with open(store_path, "r+b") as f:
        pos = int(size * where)
        f.seek(pos)
        b = f.read(1)
        f.seek(pos)
        f.write(bytes([b[0] ^ 0x5A]))
    with pytest.raises(native.ProtocolError) as ei:
        native.connect(store_path)
    assert_native_error(ei.value, "connect", "NATIVE_EPROTOCOL")


def test_garbage_magic_protocol_error(store_path):
    _make_store(store_path)
    with open(store_path, "r+b") as f:
        f.write(b"GARBAGE!")
    with pytest.raises(native.ProtocolError) as ei:
        native.connect(store_path)
    assert_native_error(ei.value, "connect", "NATIVE_EPROTOCOL")


def test_not_a_store_file_protocol_error(store_path):
    with open(store_path, "wb") as f:
        f.write(b"this is not a native store file, just some text\n" * 20)
    with pytest.raises(native.ProtocolError):
        native.connect(store_path)


@pytest.mark.parametrize("cut", [5, 100])
def test_truncated_record_protocol_error(store_path, cut):
    size = _make_store(store_path)
    os.truncate(store_path, size - cut)
    with pytest.raises(native.ProtocolError) as ei:
        native.connect(store_path)
    assert_native_error(ei.value, "connect", "NATIVE_EPROTOCOL")


def test_protocol_error_releases_lock_and_handle(store_path):
    _make_store(store_path)
    with open(store_path, "r+b") as f:
        f.write(b"GARBAGE!")
    for _ in range(3):
        with pytest.raises(native.ProtocolError):
            native.connect(store_path, timeout=0)  # a leaked lock would turn this into TimeoutError


# ---------------------------------------------------------------- attributes on every error kind


def test_error_attributes_all_kinds(store_path, tmp_path):
    collected = []
    try:
        native.connect(str(tmp_path / "nodir" / "x.db"))
    except native.Error as e:
        collected.append(e)
    with native.connect(store_path) as c:
        try:
            native.connect(store_path, timeout=0)
        except native.Error as e:
            collected.append(e)
        c.put(b"a", b"1")
        c.put(b"b", b"2")
        it = c.items()
        next(it)
        c.put(b"c", b"3")
        try:
            next(it)
        except native.Error as e:
            collected.append(e)
    try:
        c.put(b"x", b"y")
    except native.Error as e:
        collected.append(e)
    assert [type(e) for e in collected] == [
        native.ConnectionError,
        native.TimeoutError,
        native.InvalidStateError,
        native.InvalidStateError,
    ]
    for e in collected:
        assert isinstance(e.op, str) and e.op
        assert isinstance(e.code, str) and e.code.startswith("NATIVE_")
        assert isinstance(e.message, str) and e.message
        assert str(e)  # printable
        assert repr(e)


def test_undecodable_bytes_path_opens_and_closes_without_leaking_the_handle(tmp_path, monkeypatch):
    # Found by the `errors` fuzz target: the path's display text failed to convert *after*
    # native_connect succeeded, and the early return leaked the native handle and its lock.
    monkeypatch.chdir(tmp_path)
    before = native.debug_counters()["live_handles"]
    conn = native.connect(b"\xffm")
    assert isinstance(conn.path, str)
    conn.close()
    assert native.debug_counters()["live_handles"] == before
    native.connect(b"\xffm", timeout=0).close()  # the lock was released too
