"""native.checksum / native.process: the buffer protocol boundary (contiguity, writability, exports)."""

import array
import mmap
import os
import random
import sys

import native
import pytest
from _refs import (
    FNV_OFFSET,
    debug_counters_self_cost,
    fnv1a64,
    native_calls,
    process_ref,
    process_ref_fast,
    resize_race,
)

# ---------------------------------------------------------------- references are right


def test_reference_fnv_known_vectors():
    # published FNV-1a 64 test vectors: the reference itself is right
    assert fnv1a64(b"") == 0xCBF29CE484222325
    assert fnv1a64(b"a") == 0xAF63DC4C8601EC8C
    assert fnv1a64(b"foobar") == 0x85944171F73967E8


def test_reference_process_fast_matches_literal():
    rng = random.Random(7)
    for n in (0, 1, 3, 4, 5, 255, 256, 257, 1000, 3001):
        data = bytes(rng.getrandbits(8) for _ in range(n))
        for key, rounds in ((0, 1), (0xDEADBEEF, 1), (0x01020304, 3)):
            assert process_ref_fast(data, key, rounds) == process_ref(data, key, rounds)


# ---------------------------------------------------------------- checksum


@pytest.mark.parametrize("data", [b"", b"a", b"foobar", b"\x00" * 17, bytes(range(256)) * 3])
def test_checksum_bytes(data):
    r = native.checksum(data)
    assert type(r) is int
    assert r == fnv1a64(data)


def test_checksum_known_vectors():
    assert native.checksum(b"") == FNV_OFFSET
    assert native.checksum(b"a") == 0xAF63DC4C8601EC8C
    assert native.checksum(b"foobar") == 0x85944171F73967E8


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 63, 64, 65, 4095, 4096, 4097, 65535, 65536, 65537, (1 << 20) + 1])
def test_checksum_sizes(n):
    # covers both sides of any "large input: release the GIL" threshold
    data = os.urandom(n)
    assert native.checksum(data) == fnv1a64(data)


def test_checksum_bytearray_and_memoryviews():
    data = bytes(range(256)) * 5 + b"tail"
    ba = bytearray(data)
    ref = fnv1a64(data)
    assert native.checksum(ba) == ref
    assert native.checksum(memoryview(ba)) == ref
    assert native.checksum(memoryview(ba).toreadonly()) == ref
    assert native.checksum(memoryview(data)) == ref
    # contiguous slices: the buffer starts at an offset inside the exporter
    assert native.checksum(memoryview(data)[3:700]) == fnv1a64(data[3:700])
    assert native.checksum(memoryview(ba)[100:101]) == fnv1a64(data[100:101])
    assert native.checksum(memoryview(ba)[5:5]) == FNV_OFFSET


def test_checksum_multidimensional_c_contiguous():
    data = bytes(range(24))
    m2 = memoryview(bytearray(data)).cast("B", (4, 6))
    assert m2.ndim == 2 and m2.c_contiguous
    assert native.checksum(m2) == fnv1a64(data)
    m3 = memoryview(data).cast("B", (2, 3, 4))
    assert native.checksum(m3) == fnv1a64(data)
    # itemsize > 1, multi-dimensional: still the raw bytes
    mi = memoryview(bytearray(data)).cast("i").cast("B").cast("i", (2, 3))
    assert native.checksum(mi) == fnv1a64(data)


@pytest.mark.parametrize("typecode", list("bBhHiIlLqQfd"))
def test_checksum_array_raw_bytes(typecode):
    rng = random.Random(typecode)
    if typecode in "fd":
        values = [rng.uniform(-1e6, 1e6) for _ in range(37)]
    else:
        a = array.array(typecode)
        lo, hi = (
            (0, (1 << (8 * a.itemsize)) - 1)
            if typecode.isupper()
            else (-(1 << (8 * a.itemsize - 1)), (1 << (8 * a.itemsize - 1)) - 1)
        )
        values = [rng.randint(lo, hi) for _ in range(37)]
    arr = array.array(typecode, values)
    assert native.checksum(arr) == fnv1a64(arr.tobytes())
    assert native.checksum(memoryview(arr)) == fnv1a64(arr.tobytes())


def test_checksum_mmap_and_export_released():
    data = os.urandom(10000)
    m = mmap.mmap(-1, len(data))
    m.write(data)
    assert native.checksum(m) == fnv1a64(data)
    # the buffer export must be released after the call: close() fails with BufferError otherwise
    m.close()


def test_checksum_mmap_file_readonly(tmp_path):
    p = tmp_path / "f.bin"
    data = os.urandom(5000)
    p.write_bytes(data)
    with open(p, "rb") as f:
        m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        assert native.checksum(m) == fnv1a64(data)
        m.close()


def test_checksum_releases_bytearray_export():
    ba = bytearray(b"x" * 1000)
    native.checksum(ba)
    ba.extend(b"more")  # BufferError if the export leaked
    big = bytearray(1 << 20)
    native.checksum(big)
    del big[10:]  # resize after a large (GIL-released) call, too


@pytest.mark.parametrize(
    "bad",
    ["abc", "", 5, None, [1, 2, 3], 1.5, {"a": 1}, object()],
    ids=["str", "empty-str", "int", "None", "list", "float", "dict", "object"],
)
def test_checksum_type_errors(bad):
    with pytest.raises(TypeError):
        native.checksum(bad)


@pytest.mark.parametrize(
    "view",
    [
        lambda b: memoryview(b)[::2],
        lambda b: memoryview(b)[::-1],
        lambda b: memoryview(b)[1::3],
        lambda b: memoryview(b)[::-1][1:],
    ],
    ids=["step2", "reversed", "step3", "reversed-sliced"],
)
def test_checksum_non_contiguous_type_error(view):
    b = bytes(range(64))
    with pytest.raises(TypeError):
        native.checksum(view(b))


def test_checksum_released_memoryview_value_error():
    m = memoryview(b"abc")
    m.release()
    with pytest.raises(ValueError):
        native.checksum(m)


def test_checksum_refcount_neutral():
    data = bytes(bytearray(b"refcount" * 10))
    ba = bytearray(data)
    mv = memoryview(ba)
    before = [sys.getrefcount(x) for x in (data, ba, mv)]
    for _ in range(50):
        native.checksum(data)
        native.checksum(ba)
        native.checksum(mv)
    assert [sys.getrefcount(x) for x in (data, ba, mv)] == before
    mv.release()
    ba.append(1)


def test_checksum_bad_input_never_reaches_c():
    cost = debug_counters_self_cost()
    for bad in ("str", 3, None, memoryview(b"abcdef")[::2]):
        c0 = native_calls()
        with pytest.raises(TypeError):
            native.checksum(bad)
        assert native_calls() - c0 == cost, f"a native call happened for {bad!r}"
    # positive control: a valid call does bump the counter
    c0 = native_calls()
    native.checksum(b"ok")
    assert native_calls() - c0 > cost


# ---------------------------------------------------------------- process


@pytest.mark.parametrize("key", [0, 1, 0xFF, 0x01020304, 0xDEADBEEF, 2**32 - 1])
@pytest.mark.parametrize("rounds", [1, 2, 5])
def test_process_bytearray(key, rounds):
    data = os.urandom(777)
    ba = bytearray(data)
    assert native.process(ba, key=key, rounds=rounds) is None
    assert bytes(ba) == process_ref(data, key, rounds)


def test_process_defaults_key0_rounds1():
    data = os.urandom(600)
    ba = bytearray(data)
    native.process(ba)
    assert bytes(ba) == process_ref(data, 0, 1)


@pytest.mark.parametrize("n", [0, 1, 3, 4, 5, 255, 256, 257, 65536 + 3, (1 << 20) + 5])
def test_process_sizes(n):
    data = os.urandom(n)
    ba = bytearray(data)
    native.process(ba, key=0xA5C3F00D, rounds=2)
    assert bytes(ba) == process_ref_fast(data, 0xA5C3F00D, 2)


def test_process_memoryview_slice_in_place_only():
    data = os.urandom(1000)
    ba = bytearray(data)
    native.process(memoryview(ba)[100:300], key=7)
    # the slice is transformed as a buffer of its own (index restarts at 0), the rest is untouched
    assert bytes(ba[:100]) == data[:100]
    assert bytes(ba[100:300]) == process_ref(data[100:300], 7)
    assert bytes(ba[300:]) == data[300:]


def test_process_multidimensional_and_array():
    data = os.urandom(96)
    ba = bytearray(data)
    native.process(memoryview(ba).cast("B", (8, 12)), key=99)
    assert bytes(ba) == process_ref(data, 99)

    arr = array.array("I", range(1000, 1100))
    raw = arr.tobytes()
    native.process(arr, key=0x11223344, rounds=3)
    assert arr.tobytes() == process_ref(raw, 0x11223344, 3)

    arr_d = array.array("d", [1.5, -2.25, 3.0])
    raw = arr_d.tobytes()
    native.process(memoryview(arr_d), key=5)
    assert arr_d.tobytes() == process_ref(raw, 5)


def test_process_mmap_writable_and_export_released():
    data = os.urandom(8192)
    m = mmap.mmap(-1, len(data))
    m.write(data)
    native.process(m, key=42, rounds=2)
    assert m[:] == process_ref_fast(data, 42, 2)
    m.close()


def test_process_read_only_type_error(tmp_path):
    data = b"read only data!!" * 4
    for ro in (data, memoryview(data), memoryview(bytearray(data)).toreadonly()):
        with pytest.raises(TypeError):
            native.process(ro)
    assert data == b"read only data!!" * 4
    p = tmp_path / "ro.bin"
    p.write_bytes(data)
    with open(p, "rb") as f:
        m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        with pytest.raises(TypeError):
            native.process(m)
        m.close()


def test_process_non_contiguous_type_error_and_untouched():
    data = bytes(range(64))
    ba = bytearray(data)
    for v in (memoryview(ba)[::2], memoryview(ba)[::-1], memoryview(ba)[1::5]):
        with pytest.raises(TypeError):
            native.process(v, key=123)
    assert bytes(ba) == data


@pytest.mark.parametrize("bad", ["abc", 5, None, [1, 2], 1.0, object()])
def test_process_type_errors(bad):
    with pytest.raises(TypeError):
        native.process(bad)


def test_process_released_memoryview_value_error():
    m = memoryview(bytearray(b"abc"))
    m.release()
    with pytest.raises(ValueError):
        native.process(m)


@pytest.mark.parametrize("key", [2**32, 2**32 + 1, 2**64, -1, -(2**40)])
def test_process_key_out_of_range(key):
    ba = bytearray(b"unchanged")
    with pytest.raises(OverflowError):
        native.process(ba, key=key)
    assert ba == b"unchanged"


@pytest.mark.parametrize("key", [1.0, "1", b"1", None, [1]])
def test_process_key_wrong_type(key):
    ba = bytearray(b"unchanged")
    with pytest.raises(TypeError):
        native.process(ba, key=key)
    assert ba == b"unchanged"


def test_process_rounds_validation():
    ba = bytearray(b"unchanged")
    with pytest.raises(ValueError):
        native.process(ba, rounds=0)
    for r in (-1, -(2**33), 2**32, 2**64):
        with pytest.raises(OverflowError):
            native.process(ba, rounds=r)
    for r in (1.0, "2", None):
        with pytest.raises(TypeError):
            native.process(ba, rounds=r)
    assert ba == b"unchanged"


def test_process_key_and_rounds_keyword_only():
    ba = bytearray(b"abc")
    with pytest.raises(TypeError):
        native.process(ba, 5)
    with pytest.raises(TypeError):
        native.process(ba, 5, 1)
    with pytest.raises(TypeError):
        native.process(ba, colour=1)
    assert ba == b"abc"


def test_process_bad_input_never_reaches_c():
    cost = debug_counters_self_cost()
    ba = bytearray(b"x" * 32)
    bad_calls = [
        lambda: native.process(b"bytes"),
        lambda: native.process(memoryview(ba)[::2]),
        lambda: native.process(ba, key=-1),
        lambda: native.process(ba, key=2**32),
        lambda: native.process(ba, rounds=0),
        lambda: native.process(ba, key="k"),
    ]
    for call in bad_calls:
        c0 = native_calls()
        with pytest.raises((TypeError, ValueError, OverflowError)):
            call()
        assert native_calls() - c0 == cost
    assert ba == b"x" * 32


def test_process_refcount_neutral_and_export_released():
    ba = bytearray(os.urandom(300))
    key = int("3000000000")
    rb, rk = sys.getrefcount(ba), sys.getrefcount(key)
    for _ in range(20):
        native.process(ba, key=key)
    assert (sys.getrefcount(ba), sys.getrefcount(key)) == (rb, rk)
    ba.extend(b"12345")  # export released
    big = bytearray(4 << 20)
    native.process(big, rounds=1)
    big.extend(b"x")


# ---------------------------------------------------------------- export held for the whole call


def test_process_resize_from_other_thread_raises_buffererror():
    size = 32 << 20
    key = 0x5A5A1234

    def expect(ba, original, _):
        assert len(ba) == len(original)
        blk = process_ref(bytes(256), key, 3)
        full, rest = divmod(size, 256)
        assert rest == 0
        assert bytes(ba[:size]) == blk * full
        if len(original) > size:  # the extra byte (index size, i & 0xff == 0) was transformed as well
            assert bytes(ba[size:]) == process_ref(b"\x55" + bytes(255), key, 3)[:1]

    resize_race(bytes(size), lambda b: native.process(b, key=key, rounds=3), expect)


def test_checksum_resize_from_other_thread_raises_buffererror():
    size = 128 << 20

    def expect(ba, original, result):
        assert bytes(ba) == original  # never modified
        assert result == native.checksum(bytes(original))

    resize_race(bytes(size), native.checksum, expect)
