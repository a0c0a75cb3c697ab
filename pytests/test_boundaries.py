"""Boundary sweep: every size, length, limit and option parameter reachable from Python, at and around each
boundary the contract documents, against a model of that contract (the Python half of libnative's C
`boundary_sweep` group in libnative/tests/test_native.c).

The boundaries are derived from the options actually in force: for a range lo..=hi of accepted values the
sweep tries 0, 1, lo-1, lo, lo+1, hi-1, hi, hi+1 (and, for an int option, the 32- and 64-bit extremes). An
accepted value must give the correct result, byte for byte (a value of exactly max_value_size bytes reads
back equal, a key of exactly max_key_size bytes is stored, found and deleted); a refused one must raise the
documented exception and leave the store as it was. After every step the store is compared with a model:
len(), every key's value, a full items() pass (each item once), stats' keys, generation and file_bytes.

The store sweep runs through `native` under several option sets (the smallest limits, small ones, the
defaults, the hard limits) and, with the defaults (their connect() takes no options), through every binding
of libnative the bindings suite builds (pytests/bindings/every_binding.py); checksum, process and the flush
delay run through each of them and through the capsule consumer, as test_binding_conformance.py selects them;
the store sweep also runs with its puts made through the capsule table (pin, put, unpin) by the consumer.
A value too costly to build (a 1 GiB value) is left out, never guessed; a 1 GiB + 1 refusal is offered as a
lazily mapped, untouched buffer.
"""

from __future__ import annotations

import builtins
import math
import mmap
import os
import re
import stat
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest
from _refs import debug_counters_self_cost, fnv1a64, native_calls, process_ref_fast

native = pytest.importorskip("native")

_BINDINGS = str(Path(__file__).resolve().parent / "bindings")
if _BINDINGS not in sys.path:
    sys.path.insert(0, _BINDINGS)

import facade  # after the sys.path insert above: it lives in pytests/bindings

AVAILABLE = facade.loadable_bindings()  # none loadable: `native` alone is swept
if AVAILABLE:
    import capsule_native

    CAPSULE: dict[str, Any] = {"capsule": capsule_native.module} if capsule_native.module else {}
else:
    CAPSULE = {}

IMPLS: dict[str, Any] = {"pyo3": native, **AVAILABLE}
FUNCTION_IMPLS: dict[str, Any] = {**IMPLS, **CAPSULE}

KEY_LIMIT = 65535  # NATIVE_MAX_KEY_LIMIT
VALUE_LIMIT = 1 << 30  # NATIVE_MAX_VALUE_LIMIT
DEFAULT_LIMITS = (1024, 1 << 20)
BUILD_CAP = 1 << 20  # largest buffer built for an accepted value
DETACH = 64 * 1024  # checksum/process release the GIL from this much work on: both sides of it are tried
OUT_OF_RANGE = (ValueError, OverflowError)  # an int out of a C type's range: either, both refuse before C
RECORD = 9 + 4  # store.c's record: type, klen, vlen, key, value, crc32
LIVE = ("live_handles", "live_blocks")  # a binding's own libnative ledger (conftest checks native's)


def boundaries(lo: int, hi: int) -> list[int]:
    """0, 1, lo-1, lo, lo+1, hi-1, hi, hi+1: the values worth trying for a length accepted in lo..=hi."""
    return sorted({v for v in (0, 1, lo - 1, lo, lo + 1, hi - 1, hi, hi + 1) if v >= 0})


def int_boundaries(lo: int, hi: int) -> list[int]:
    """For an int option: the length boundaries, negatives, and the 32- and 64-bit extremes."""
    extremes = (-(2**63) - 1, -(2**63), -1, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**63 - 1, 2**63, 2**64 - 1, 2**64)
    return sorted({*(lo - 1, lo, lo + 1, hi - 1, hi, hi + 1, 0, 1), *extremes})


def pattern(n: int, salt: int) -> bytes:
    """n bytes that differ with n and salt, so that keys of one length and values of one step are distinct."""
    return bytes((salt * 131 + n * 31 + i * 7 + 1) & 0xFF for i in range(n)) if n <= 4096 else _long_pattern(n, salt)


def _long_pattern(n: int, salt: int) -> bytes:
    block = bytes((salt * 131 + n * 31 + i * 7 + 1) & 0xFF for i in range(256))
    return (block * (n // 256 + 1))[:n]


def sized(n: int, salt: int) -> Any:
    """A buffer of n bytes: built when small enough, else an untouched anonymous mapping (for refusals only)."""
    if n <= BUILD_CAP + 1:
        return pattern(n, salt)
    return mmap.mmap(-1, n)


# ---------------------------------------------------------------- the model


@dataclass
class Model:
    """What the store must hold: its items, the generation (mutations since connect) and the log's size."""

    items: dict[bytes, bytes]
    generation: int
    file_bytes: int

    def put(self, key: bytes, value: bytes) -> None:
        self.items[key] = value
        self.generation += 1
        self.file_bytes += RECORD + len(key) + len(value)

    def delete(self, key: bytes) -> None:
        del self.items[key]
        self.generation += 1
        self.file_bytes += RECORD + len(key)


def differences(conn: Any, model: Model) -> list[str]:
    """How the store differs from the model (empty when it does not)."""
    out = []
    if len(conn) != len(model.items):
        out.append(f"len {len(conn)}, model {len(model.items)}")
    pairs = list(conn.items())
    if len(pairs) != len(model.items) or dict(pairs) != model.items:
        out.append(f"items() gives {len(pairs)} items, {len(dict(pairs))} distinct, not the model's {len(model.items)}")
    for key, value in model.items.items():
        try:
            got = conn.get(key)
        except Exception as e:  # noqa: BLE001 - any outcome but the value is a difference
            out.append(f"get of a key of {len(key)} bytes raised {type(e).__name__}: {e}")
            continue
        if got != value:
            out.append(f"get of a key of {len(key)} bytes: {len(got)} bytes, model {len(value)} (or other bytes)")
    s = conn.stats()
    want = (len(model.items), model.generation & 0xFFFFFFFF, model.file_bytes)
    if (s.keys, s.generation, s.file_bytes) != want:
        out.append(f"stats keys, generation, file_bytes = {(s.keys, s.generation, s.file_bytes)}, model {want}")
    return out


def resync(conn: Any) -> Model:
    """The model rebuilt from the store, after a difference was reported (so it is not reported again)."""
    s = conn.stats()
    return Model(dict(conn.items()), s.generation, s.file_bytes)


# ---------------------------------------------------------------- the store sweep


@dataclass(frozen=True)
class Step:
    """One call of the sweep: `op` with a key or value of `n` bytes, accepted or refused by the contract."""

    op: str  # "put key", "put value", "get key", "delete key"
    n: int
    accepted: bool

    def __str__(self) -> str:
        return f"{self.op} of {self.n} bytes ({'accepted' if self.accepted else 'refused'})"


def store_table(max_key: int, max_value: int) -> list[Step]:
    """The sweep's table for these limits: keys are accepted in 1..=max_key_size, values in 0..=max_value_size."""
    steps = []
    for op in ("put key", "get key", "delete key"):
        steps += [Step(op, n, 1 <= n <= max_key) for n in boundaries(1, max_key)]
    steps += [Step("put value", n, n <= max_value) for n in boundaries(0, max_value)]
    # Too costly to build: an accepted value over BUILD_CAP (a refusal is an untouched mapping).
    return [s for s in steps if not (s.accepted and s.n > BUILD_CAP)]


def run_step(conn: Any, model: Model, step: Step, salt: int, max_value: int) -> str | None:
    """Runs one step against the store and the model; the wrong outcome, if any."""
    key = b"V" if step.op == "put value" else sized(step.n, salt)
    if step.accepted and step.op in ("get key", "delete key"):
        # get and delete of a key the store holds: put it first (a valid put, part of the model too)
        value = pattern(min(3, max_value), salt)
        try:
            conn.put(key, value)
        except Exception as e:  # noqa: BLE001
            return f"the valid put before it raised {type(e).__name__}: {e}"
        model.put(key, value)
    try:
        if step.op == "put key":
            value = b"v"
            conn.put(key, value)
        elif step.op == "put value":
            value = sized(step.n, salt)
            conn.put(key, value)
        elif step.op == "get key":
            got = conn.get(key)
            if got != model.items.get(bytes(key)):
                return f"get returned {len(got)} bytes, model {len(model.items.get(bytes(key), b''))} (or other bytes)"
        else:
            conn.delete(key)
    except ValueError as e:
        if step.accepted:
            return f"refused with ValueError: {e}"
        return None
    except Exception as e:  # noqa: BLE001 - every other outcome is wrong for a key or value length
        return f"raised {type(e).__name__}: {e}"
    if not step.accepted:
        return "accepted, want ValueError"
    if step.op in ("put key", "put value"):
        model.put(bytes(key), bytes(value))
    elif step.op == "delete key":
        model.delete(bytes(key))
    return None


def sweep_store(conn: Any, max_key: int, max_value: int) -> tuple[int, list[str]]:
    """The whole table on one connection: (steps run, wrong outcomes and differences from the model)."""
    s = conn.stats()
    model = Model({}, s.generation, s.file_bytes)
    problems = differences(conn, model)
    # two keys to begin with, of 1 and max_key_size bytes, each with a value of min(3, max_value_size) bytes
    for n, salt in ((1, 7), (max_key, 8)):
        key, value = pattern(n, salt), pattern(min(3, max_value), salt)
        try:
            conn.put(key, value)
        except Exception as e:  # noqa: BLE001 - a valid put refused is one more wrong outcome
            problems.append(f"seeding a key of {n} bytes and a value of {len(value)}: {type(e).__name__}: {e}")
            continue
        model.put(key, value)
    steps = store_table(max_key, max_value)
    for i, step in enumerate(steps):
        wrong = run_step(conn, model, step, i, max_value)
        if wrong is not None:
            problems.append(f"{step}: {wrong}")
        diff = differences(conn, model)
        if diff:
            problems += [f"after {step}: {d}" for d in diff]
            model = resync(conn)
    return len(steps), problems


LIMITS = [(1, 1), (8, 64), DEFAULT_LIMITS, (KEY_LIMIT, VALUE_LIMIT)]


@pytest.mark.parametrize("limits", LIMITS, ids=lambda lim: f"max_key_size={lim[0]},max_value_size={lim[1]}")
def test_store_boundaries_native(tmp_path: Path, limits: tuple[int, int]) -> None:
    max_key, max_value = limits
    path = tmp_path / "store.db"
    options = native.Options(max_key_size=max_key, max_value_size=max_value)
    with native.connect(path, options=options) as conn:
        n, problems = sweep_store(conn, max_key, max_value)
        model = resync(conn)
    assert not problems, f"{len(problems)} of {n} steps went wrong:\n" + "\n".join(problems)
    # the records written at the boundaries replay to the same store
    with native.connect(path, options=options) as conn:
        assert dict(conn.items()) == model.items
        assert conn.stats().file_bytes == model.file_bytes


@pytest.mark.parametrize("name", sorted(AVAILABLE))
def test_store_boundaries_binding(tmp_path: Path, name: str) -> None:
    impl = AVAILABLE[name]
    before = impl.debug_counters()
    with impl.connect(tmp_path / "store.db") as conn:  # the bindings' connect takes the default options
        n, problems = sweep_store(conn, *DEFAULT_LIMITS)
    assert not problems, f"{len(problems)} of {n} steps went wrong:\n" + "\n".join(problems)
    after = impl.debug_counters()
    assert [after[k] for k in LIVE] == [before[k] for k in LIVE], "a handle or a native_alloc block outlived the sweep"


class _PutsThroughTheCapsule:
    """native's connection with its puts made by another extension through the capsule table (pin, put with
    the GIL released, unpin: the consumer's `put`), every other call native's own."""

    def __init__(self, conn: Any, capsule: Any) -> None:
        self._conn = conn
        self._capsule = capsule

    def put(self, key: Any, value: Any) -> None:
        self._capsule.put(self._conn, key, value)

    def __len__(self) -> int:
        return len(self._conn)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


@pytest.mark.skipif(not CAPSULE, reason="the capsule consumer module is not built (pytests/bindings/capsule_consumer)")
@pytest.mark.parametrize(
    "limits", [(8, 64), DEFAULT_LIMITS], ids=lambda lim: f"max_key_size={lim[0]},max_value_size={lim[1]}"
)
def test_store_boundaries_capsule_put(tmp_path: Path, limits: tuple[int, int]) -> None:
    """The capsule table's pin/put/unpin at every key and value length boundary: what another C extension
    puts through it is refused (the consumer's ValueError) or stored byte for byte, as native's own put."""
    max_key, max_value = limits
    before = native.debug_counters()
    options = native.Options(max_key_size=max_key, max_value_size=max_value)
    with native.connect(tmp_path / "store.db", options=options) as conn:
        n, problems = sweep_store(_PutsThroughTheCapsule(conn, CAPSULE["capsule"]), max_key, max_value)
    assert not problems, f"{len(problems)} of {n} steps went wrong:\n" + "\n".join(problems)
    after = native.debug_counters()
    assert [after[k] for k in LIVE] == [before[k] for k in LIVE], "a handle or a native_alloc block outlived the sweep"


def test_reopen_with_max_key_size_around_the_longest_stored_key(tmp_path: Path) -> None:
    """connect refuses (ValueError) a max_key_size under the longest live key, accepts it from that length on."""
    path = tmp_path / "store.db"
    longest = 8
    with native.connect(path, options={"max_key_size": longest}) as conn:
        conn.put(pattern(longest, 1), b"x")
        conn.put(b"k", b"y")
    want = {pattern(longest, 1): b"x", b"k": b"y"}
    for v in boundaries(longest, KEY_LIMIT):
        if not 1 <= v <= KEY_LIMIT:
            continue  # refused by Options itself: swept by test_option_boundaries
        if v < longest:
            with pytest.raises(ValueError):
                native.connect(path, options={"max_key_size": v})
        else:
            with native.connect(path, options={"max_key_size": v}) as conn:
                assert dict(conn.items()) == want, v


# ---------------------------------------------------------------- options


OPTION_RANGES = {"max_key_size": (1, KEY_LIMIT), "max_value_size": (1, VALUE_LIMIT), "file_mode": (0, 0o777)}
OPTION_CASES = [(field, v) for field, (lo, hi) in OPTION_RANGES.items() for v in int_boundaries(lo, hi)]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.parametrize("field, value", OPTION_CASES, ids=[f"{f}={v}" for f, v in OPTION_CASES])
def test_option_boundaries(tmp_path: Path, field: str, value: int) -> None:
    """In range: Options keeps the value and connect creates the store with it (file_mode: the file's mode,
    less the umask). Out of range: ValueError or OverflowError, before any native call, and no file."""
    lo, hi = OPTION_RANGES[field]
    path = tmp_path / "store.db"
    if lo <= value <= hi:
        assert getattr(native.Options(**{field: value}), field) == value
        with native.connect(path, options={field: value}) as conn:
            assert len(conn) == 0
        if field == "file_mode":
            assert stat.S_IMODE(os.stat(path).st_mode) == value & ~_umask()
        return
    cost = debug_counters_self_cost()
    c0 = native_calls()
    with pytest.raises(OUT_OF_RANGE):
        native.Options(**{field: value})
    with pytest.raises(OUT_OF_RANGE):
        native.connect(path, options={field: value})
    assert native_calls() - c0 == 2 * cost  # refused before C: only the two debug_counters() reads
    assert not path.exists()


# ---------------------------------------------------------------- buffer kernels and knobs


LENGTHS = sorted({*boundaries(0, 4), 2, 7, 8, 255, 256, 257, DETACH - 1, DETACH, DETACH + 1})


@pytest.mark.parametrize("name", sorted(n for n, m in FUNCTION_IMPLS.items() if hasattr(m, "checksum")))
def test_checksum_lengths(name: str) -> None:
    checksum = FUNCTION_IMPLS[name].checksum
    wrong = [n for n in LENGTHS if checksum(pattern(n, 3)) != fnv1a64(pattern(n, 3))]
    assert checksum(b"") == 0xCBF29CE484222325
    assert not wrong, f"checksum differs from FNV-1a at lengths {wrong}"


ROUNDS = [0, 1, 2, 255, 256, 257, 2**32 - 1, 2**32, -1]
KEYS = [-1, 0, 1, 0xFF, 0x100, 0xFFFF, 0x10000, 2**32 - 2, 2**32 - 1, 2**32]


@pytest.mark.parametrize("name", sorted(n for n, m in FUNCTION_IMPLS.items() if hasattr(m, "process")))
def test_process_boundaries(name: str) -> None:
    """Lengths (around the GIL-release threshold too), rounds in 1..=2**32-1 and key in 0..=2**32-1 against
    the reference transform; a refused rounds or key raises before C and leaves the buffer as it was."""
    process: Callable[..., None] = FUNCTION_IMPLS[name].process
    wrong = []
    for n in LENGTHS:
        buf = bytearray(pattern(n, 5))
        process(buf, key=0xDEADBEEF, rounds=2)
        if bytes(buf) != process_ref_fast(pattern(n, 5), 0xDEADBEEF, 2):
            wrong.append(f"len={n}")
    for rounds in ROUNDS:
        if rounds > 2**16 and rounds <= 2**32 - 1:
            continue  # accepted but too costly (2**32 - 1 rounds)
        buf = bytearray(pattern(16, 6))
        try:
            process(buf, key=0x01020304, rounds=rounds)
        except OUT_OF_RANGE:
            if 1 <= rounds <= 2**32 - 1 or bytes(buf) != pattern(16, 6):
                wrong.append(f"rounds={rounds}: refused or buffer changed")
            continue
        if not 1 <= rounds <= 2**32 - 1 or bytes(buf) != process_ref_fast(pattern(16, 6), 0x01020304, rounds):
            wrong.append(f"rounds={rounds}: accepted" if rounds < 1 or rounds >= 2**32 else f"rounds={rounds}")
    for key in KEYS:
        buf = bytearray(pattern(300, 7))
        try:
            process(buf, key=key, rounds=1)
        except OUT_OF_RANGE:
            if 0 <= key <= 2**32 - 1 or bytes(buf) != pattern(300, 7):
                wrong.append(f"key={key}: refused or buffer changed")
            continue
        if not 0 <= key <= 2**32 - 1 or bytes(buf) != process_ref_fast(pattern(300, 7), key, 1):
            wrong.append(f"key={key}: accepted" if not 0 <= key < 2**32 else f"key={key}")
    assert not wrong, wrong


def _flush_delay_setter(impl: Any) -> Callable[[int], None]:
    return native._set_flush_delay_ms if impl is native else impl.set_flush_delay_ms


@pytest.fixture
def reset_flush_delays() -> Iterator[None]:
    yield
    for impl in IMPLS.values():
        _flush_delay_setter(impl)(0)


@pytest.mark.parametrize("name", sorted(IMPLS))
def test_flush_delay_boundaries(tmp_path: Path, name: str, reset_flush_delays: None) -> None:
    """The test knob takes 0..=2**32-1 ms: a flush then takes at least that long; outside it, an error and the
    delay in force is unchanged (0 here). (The ctypes binding once wrapped -1 to 49.7 days, 2**32 to 0.)"""
    impl = IMPLS[name]
    set_delay = _flush_delay_setter(impl)
    with impl.connect(tmp_path / "store.db") as conn:
        for ms in (0, 1, 2, 25):
            set_delay(ms)
            t0 = time.perf_counter()
            conn.flush()
            assert time.perf_counter() - t0 >= ms / 1000, ms
        set_delay(0)
        for ms in (-1, 2**32, 2**64):
            with pytest.raises(OUT_OF_RANGE):
                set_delay(ms)
            t0 = time.perf_counter()
            conn.flush()
            waited = time.perf_counter() - t0
            assert waited < 1.0, f"flush waited {waited:.3f} s after a refused delay of {ms} ms"


# ---------------------------------------------------------------- connect's timeout


@pytest.mark.parametrize("name", sorted(IMPLS))
def test_timeout_boundaries(tmp_path: Path, name: str) -> None:
    """With the store locked: timeout 0 gives up at once, a short one after at least that long (TimeoutError);
    a negative or NaN one is a ValueError. (None, inf and the huge ones wait forever: the C sweep covers them.)"""
    impl = IMPLS[name]
    path = tmp_path / "store.db"
    with impl.connect(path):
        for timeout in (0, 0.0, 0.001, 0.002, 1e-9):
            t0 = time.perf_counter()
            with pytest.raises(builtins.TimeoutError):
                impl.connect(path, timeout=timeout)
            assert time.perf_counter() - t0 >= timeout
        for timeout in (-1e-9, -1, -(2**63), math.nan, -math.inf):
            with pytest.raises(ValueError):
                impl.connect(path, timeout=timeout)


def test_huge_timeout_waits_for_the_lock(tmp_path: Path) -> None:
    """A timeout too long for int64 milliseconds waits (as None does) rather than wrapping to "do not wait"."""
    path = tmp_path / "store.db"
    for timeout in (2**63 / 1000, 1e300, math.inf):
        holder = native.connect(path)
        threading.Timer(0.05, holder.close).start()
        t0 = time.perf_counter()
        with native.connect(path, timeout=timeout):
            pass
        assert time.perf_counter() - t0 >= 0.04, timeout


# ---------------------------------------------------------------- status_name's int


@pytest.mark.parametrize("name", sorted(AVAILABLE))
def test_status_name_boundaries(name: str) -> None:
    """native_status_name takes a C int: every binding that exposes it names the codes in range as cffi does
    and refuses the ones beyond it (ctypes once wrapped 2**32 + 1 to 1, NATIVE_ENOTFOUND)."""
    impl = AVAILABLE[name]
    header = (facade.REPO / "libnative" / "native.h").read_text()
    names = {int(v): f"NATIVE_{n}" for n, v in re.findall(r"^\s*NATIVE_(E[A-Z]+|OK) = (\d+)", header, re.MULTILINE)}
    assert len(names) >= 10, names  # the model comes from the header's enum
    for code in (-(2**31), -1, *range(max(names) + 2), 2**31 - 1):
        assert impl.status_name(code) == names.get(code, "NATIVE_UNKNOWN"), code
    for code in (-(2**31) - 1, 2**31, 2**32, 2**32 + 1, 2**64, -(2**64)):
        with pytest.raises(OUT_OF_RANGE):
            impl.status_name(code)
