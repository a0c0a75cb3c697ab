"""native's C API capsule ("native._C_API"), used by a second extension module (pytests/bindings/
capsule_consumer/, built here if missing or stale) through PyCapsule_Import.

The contract under test (wrapper/src/capsule.rs, native_capi.h): the same results as native's own
functions; a wrong capsule name or version is a clear ImportError and never a crash; the capsule owns
its table and keeps the exporter alive for as long as a consumer holds it; a handle reached through the
capsule obeys the wrapper's rules (InvalidStateError after close, close waits for a pinned call).
"""

from __future__ import annotations

import array
import ctypes
import importlib.util
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from _arguments import (
    assert_refusals_keep_nothing,
    assert_singletons_kept,
    singleton_counts,
    singletons_are_mortal,
)

HERE = Path(__file__).resolve().parent
CONSUMER_DIR = HERE / "bindings" / "capsule_consumer"
CAPI_VERSION = 1


@pytest.fixture(scope="module")
def consumer() -> ModuleType:
    # build.py's load(), which bindings/capsule_native.py uses too: built if stale, then imported.
    spec = importlib.util.spec_from_file_location("capsule_consumer_build", CONSUMER_DIR / "build.py")
    assert spec is not None and spec.loader is not None
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    module: ModuleType = build.load()
    return module


@pytest.fixture(scope="module")
def native() -> ModuleType:
    import native

    if not hasattr(native, "_C_API"):
        pytest.skip(f"`native` resolved to {native!r}, which exports no C API capsule")
    return native


def run_script(body: str, consumer: ModuleType) -> subprocess.CompletedProcess[str]:
    """Runs `body` in a fresh interpreter with `native` and the consumer importable: a consumer bug may
    crash, and a crash must fail one test, not the suite."""
    where = Path(str(consumer.__file__)).parent
    script = f"import sys\nsys.path.insert(0, {str(where)!r})\n" + textwrap.dedent(body)
    return subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=60)


# ---------------------------------------------------------------- same results


@pytest.mark.parametrize("size", [0, 1, 7, 4096, 65536, 300_000])
def test_checksum_and_process_agree_with_native(native: Any, consumer: Any, size: int) -> None:
    data = bytes((i * 131 + 7) & 0xFF for i in range(size))
    for obj in (data, bytearray(data), memoryview(data), array.array("B", data)):
        assert consumer.checksum(obj) == native.checksum(obj)
    a, b = bytearray(data), bytearray(data)
    consumer.process(a, key=0xDEADBEEF, rounds=3)
    native.process(b, key=0xDEADBEEF, rounds=3)
    assert a == b
    with pytest.raises(TypeError):
        consumer.process(data)  # read-only: refused before C
    with pytest.raises(TypeError):
        consumer.checksum("text")


@pytest.mark.parametrize(("size", "rounds"), [(1024, 10_000), (5 << 20, 3)], ids=["1 KiB x 10000", "5 MiB x 3"])
def test_a_long_process_gives_the_same_bytes_as_native(native: Any, consumer: Any, size: int, rounds: int) -> None:
    # Long work runs in slices of rounds, with signals checked between them: the slices add up to the call.
    data = bytes(i * 131 + 7 & 0xFF for i in range(256)) * (size // 256)
    a, b = bytearray(data), bytearray(data)
    consumer.process(a, key=0xC0FFEE11, rounds=rounds)
    native.process(b, key=0xC0FFEE11, rounds=rounds)
    assert a == b


# A long process() as native's is: other threads run during it and Ctrl-C stops it, whether it is long by
# its length or by its rounds (the table's process has no cancel hook: the consumer slices the rounds).
LONG_PROCESS = """
import os, signal, threading, time
import _capsule_consumer as consumer
signal.signal(signal.SIGINT, signal.default_int_handler)
ticks = []
def tick():
    while len(ticks) < 10000:
        ticks.append(time.monotonic())
        time.sleep(0.005)
threading.Thread(target=tick, daemon=True).start()
threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
t0 = time.monotonic()
try:
    consumer.process(bytearray({size}), key=1, rounds={rounds})
    print("completed", time.monotonic() - t0, len(ticks))
except KeyboardInterrupt:
    print("interrupted", time.monotonic() - t0, len(ticks))
"""


@pytest.mark.ffi_harness_no_repeat  # a child per case; nothing of this process to measure
@pytest.mark.parametrize(
    ("size", "rounds"), [(4 << 20, 100_000), (1024, 2**32 - 1)], ids=["4 MiB x 100000", "1 KiB x 2^32-1"]
)
def test_a_long_process_lets_threads_run_and_stops_on_ctrl_c(consumer: Any, size: int, rounds: int) -> None:
    try:
        child = run_script(LONG_PROCESS.format(size=size, rounds=rounds), consumer)
    except subprocess.TimeoutExpired:
        pytest.fail(f"process over {size} bytes x {rounds} rounds was still running 60 s after Ctrl-C")
    assert child.returncode == 0, child.stderr
    word, seconds, ticks = child.stdout.split()
    assert word == "interrupted", f"process ran to its end ({seconds} s) through Ctrl-C"
    assert float(seconds) < 2.0, f"process took {seconds} s to give way to Ctrl-C sent at 0.3 s"
    assert int(ticks) >= 20, f"another thread ran {ticks} times during the call: the GIL was held"


# Every edge of uint32 for the key; the same for rounds except its largest valid value (2**32 - 1 rounds
# would run for minutes).
INT_EDGES = [
    *(("key", v) for v in (-1, 0, 1, 2**32 - 1, 2**32, 2**64 + 5, -(2**64))),
    *(("rounds", v) for v in (-1, 0, 1, 2**32, 2**64 + 5, 2**64 + 1, -(2**64))),
]


@pytest.mark.parametrize(("arg", "value"), INT_EDGES)
def test_an_integer_argument_gets_the_same_answer_as_native(native: Any, consumer: Any, arg: str, value: int) -> None:
    # A C consumer's format units can mask an int silently ("k": 2**64 + 5 becomes 5): whatever
    # native.process does with a value, result or exception type, the consumer must do too.
    def outcome(f: Any) -> Any:
        data = bytearray(b"abcdefgh")
        try:
            f(data, **{arg: value})
        except Exception as e:  # noqa: BLE001 - the kind of refusal is what is compared
            return type(e).__name__
        return bytes(data)

    assert outcome(consumer.process) == outcome(native.process)


# Values of the wrong type for a bytes-like parameter, each of which one C format unit or another accepts
# and converts ("s*" takes a str as its UTF-8 bytes, "O" takes anything).
NOT_BYTES = {"a str": "cl\u00e9", "an ASCII str": "key", "an int": 7, "None": None, "a list": [1]}


@pytest.mark.parametrize("what", sorted(NOT_BYTES))
@pytest.mark.parametrize("position", ["key", "value"])
def test_a_wrong_type_for_a_bytes_argument_gets_the_same_answer_as_native(
    native: Any, consumer: Any, store_path: str, position: str, what: str
) -> None:
    # The consumer's put must refuse what native's put refuses, with the same exception type, and store
    # nothing: a format unit that converts a str writes a key in some encoding the caller never chose.
    args = {"key": b"k", "value": b"v", position: NOT_BYTES[what]}

    def outcome(put: Any, conn: Any) -> Any:
        try:
            put(conn, args["key"], args["value"])
        except Exception as e:  # noqa: BLE001 - the kind of refusal is what is compared
            return type(e).__name__
        return "stored"

    with native.connect(store_path) as conn:
        expected = outcome(lambda c, k, v: c.put(k, v), conn)
        assert expected != "stored", f"native.put accepted {what} as the {position}"
        assert outcome(consumer.put, conn) == expected
        assert len(conn) == 0, sorted(conn.items())


def test_a_handle_through_the_capsule_is_the_same_store(native: Any, consumer: Any, store_path: str) -> None:
    with native.connect(store_path) as conn:
        conn.put(b"a", b"1")
        assert consumer.count(conn) == len(conn) == 1
        consumer.put(conn, b"b", b"2")
        assert conn.get(b"b") == b"2" and consumer.count(conn) == 2
    with native.connect(store_path) as again:
        assert sorted(again.items()) == [(b"a", b"1"), (b"b", b"2")]


@pytest.mark.skipif(not singletons_are_mortal(), reason="None is immortal here: the bug is harmless and invisible")
def test_what_returns_none_gives_the_caller_a_reference_to_it(native: Any, consumer: Any, store_path: str) -> None:
    # `return Py_None;` instead of Py_RETURN_NONE takes a reference from None on every call (fatal once
    # None's count reaches zero, before CPython 3.12).
    data = bytearray(64)
    with native.connect(store_path) as conn:
        for name, call in [
            ("process", lambda: consumer.process(data)),
            ("put", lambda: consumer.put(conn, b"k", b"v")),
        ]:
            assert call() is None
            before = singleton_counts()
            for _ in range(200):
                call()
            assert_singletons_kept(name, before, 200)


def test_the_version_is_the_exporters(native: Any, consumer: Any) -> None:
    assert consumer.api_version() == CAPI_VERSION
    assert consumer._import_api("native._C_API", CAPI_VERSION) == CAPI_VERSION


# ---------------------------------------------------------------- wrong name or version: ImportError


def test_a_wrong_version_is_an_import_error(native: Any, consumer: Any) -> None:
    with pytest.raises(ImportError, match=r"version 1 .* built for version 2"):
        consumer._import_api("native._C_API", CAPI_VERSION + 1)


@pytest.mark.parametrize("name", ["native._C_API_v2", "no_such_module_xyz._C_API", "native.__doc__"])
def test_a_missing_capsule_is_an_import_error(native: Any, consumer: Any, name: str) -> None:
    with pytest.raises(ImportError, match="native C API capsule"):
        consumer._import_api(name, CAPI_VERSION)


def test_a_capsule_of_another_name_is_refused(native: Any, consumer: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import datetime

    monkeypatch.setattr(native, "_C_API_OTHER", datetime.datetime_CAPI, raising=False)  # type: ignore[attr-defined]
    with pytest.raises(ImportError, match="name mismatch, found a capsule named datetime.datetime_CAPI"):
        consumer._import_api("native._C_API_OTHER", CAPI_VERSION)


# A capsule whose table looks right (version 1, full size) but whose name is not native's: only the
# name check stands between it and a call through its NULL function pointers.
_IMPOSTOR_NAME = b"impostor._C_API"
_IMPOSTOR_TABLE = (ctypes.c_uint32 * 16)(CAPI_VERSION, 56)


def test_a_plausible_table_under_another_name_is_refused(
    native: Any, consumer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    new = ctypes.pythonapi.PyCapsule_New
    new.restype, new.argtypes = ctypes.py_object, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
    impostor = new(ctypes.addressof(_IMPOSTOR_TABLE), _IMPOSTOR_NAME, None)
    monkeypatch.setattr(native, "_C_API_IMPOSTOR", impostor, raising=False)
    with pytest.raises(ImportError, match="name mismatch, found a capsule named impostor._C_API"):
        consumer._import_api("native._C_API_IMPOSTOR", CAPI_VERSION)


# ---------------------------------------------------------------- lifetimes


def test_the_consumer_keeps_the_capsule_and_its_table_alive(consumer: Any) -> None:
    # The exporter drops every reference it has to the capsule (the extension's and the package's
    # attribute); the consumer's must keep the table alive and usable.
    p = run_script(
        """
        import gc, sys
        import native, _capsule_consumer as consumer
        ext = next(m for name, m in list(sys.modules.items())
                   if name.startswith("native.") and hasattr(m, "_C_API"))
        live = native._capi_live_tables
        assert live() == 1, live()
        del native._C_API, ext._C_API
        gc.collect()
        print("live", live())
        print("checksum", consumer.checksum(b"abc") == native.checksum(b"abc"))
    """,
        consumer,
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["live", "1", "checksum", "True"], (p.stdout, p.stderr)


def test_the_capsule_is_freed_once_nobody_holds_it(consumer: Any) -> None:
    # The other half of the lifetime rule: no consumer, no exporter reference -> the table goes, and with
    # it the capsule's context, the reference to the extension module that register() took.
    p = run_script(
        """
        import gc, sys
        import native
        ext = next(m for name, m in list(sys.modules.items())
                   if name.startswith("native.") and hasattr(m, "_C_API"))
        live = native._capi_live_tables
        before = sys.getrefcount(ext)
        del native._C_API, ext._C_API
        gc.collect()
        print("live", live())
        print("module-references-released", before - sys.getrefcount(ext))
    """,
        consumer,
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["live", "0", "module-references-released", "1"], (p.stdout, p.stderr)


def test_use_after_close_through_the_capsule(native: Any, consumer: Any, store_path: str) -> None:
    conn = native.connect(store_path)
    conn.put(b"k", b"v")
    assert consumer.count(conn) == 1
    conn.close()
    with pytest.raises(native.InvalidStateError):
        consumer.count(conn)
    with pytest.raises(native.InvalidStateError):
        consumer.put(conn, b"k2", b"v2")
    with pytest.raises(TypeError):
        consumer.count(object())


# Every way the consumer's connection-taking functions refuse a connection, and what each refusal must
# let go of: the arguments (no reference kept) and any buffer export taken before the refusal.
BAD_CONNECTIONS = ["a closed connection", "object()", "None"]


@pytest.mark.parametrize("bad", BAD_CONNECTIONS)
@pytest.mark.parametrize("function", ["count", "put"])
def test_a_refused_connection_keeps_nothing_of_the_arguments(
    native: Any, consumer: Any, store_path: str, function: str, bad: str
) -> None:
    conn: Any = {"object()": object(), "None": None}.get(bad)
    if bad == "a closed connection":
        conn = native.connect(store_path)
        conn.close()
    key, value = bytearray(b"key"), bytearray(b"value")
    args = (conn,) if function == "count" else (conn, key, value)

    def call() -> Any:
        return getattr(consumer, function)(*args)

    counted = [a for a in args if a is not None]  # None's count moves with everything else
    refs = [sys.getrefcount(a) for a in counted]
    with pytest.raises((TypeError, native.InvalidStateError)):
        call()
    key.append(0)  # BufferError if the refusal kept an export of it
    value.append(0)
    assert [sys.getrefcount(a) for a in counted] == refs, f"{function}({bad}) kept a reference to an argument"
    assert_refusals_keep_nothing(f"{function}({bad})", call)


def test_close_waits_for_a_pinned_call(native: Any, consumer: Any, store_path: str) -> None:
    conn = native.connect(store_path)
    errors: list[BaseException] = []

    def slow_put() -> None:
        try:
            consumer.put(conn, b"late", b"value", 300)  # pinned, GIL released, 300 ms before the put
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    t = threading.Thread(target=slow_put)
    t.start()
    time.sleep(0.1)
    t0 = time.monotonic()
    conn.close()  # must not close the handle under the pinned put
    waited = time.monotonic() - t0
    t.join(5)
    assert not errors, errors
    assert waited > 0.1, waited
    with native.connect(store_path) as again:
        assert again.get(b"late") == b"value"
