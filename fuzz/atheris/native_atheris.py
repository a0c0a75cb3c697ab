"""atheris (libFuzzer for Python) driving the same `native` operations as the cargo-fuzz targets, with
the same oracles written in Python: the baseline for ci/fuzz_compare.py's exec/s ratio.

Usage: python native_atheris.py <buffers|handles|structs> [libFuzzer flags]
"""

import gc
import os
import sys
import tempfile

import atheris

# The same pure-Python references as the pytests and property tests.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "pytests"))
from _refs import fnv1a64 as ref_fnv
from _refs import process_ref as ref_process

with atheris.instrument_imports():
    import native

ALLOWED = (
    TypeError,
    ValueError,
    OverflowError,
    BufferError,
    KeyError,
    native.InvalidStateError,
    native.ConnectionError,
    native.TimeoutError,
)
TMP = tempfile.mkdtemp(prefix="native-atheris-")
_seq = [0]


def ledger():
    c = native.debug_counters()
    return c["live_handles"], c["live_subscriptions"], c["live_blocks"]


@atheris.instrument_func
def checked(fn, *args, **kwargs):
    """Refcount neutrality of the arguments + allowed exceptions only (as ffi-harness check_call)."""
    # Only fresh heap objects have meaningful deltas (as in ffi-harness): small ints, None and bools
    # are shared, and a result equal to an argument is the same cached object.
    tracked = [a for a in list(args) + list(kwargs.values()) if not isinstance(a, (int, type(None)))]
    before = [sys.getrefcount(a) for a in tracked]
    result = None
    try:
        result = fn(*args, **kwargs)
    except SystemError:
        raise
    except ALLOWED:
        pass  # the exception (and the frames its traceback holds) is gone after this block
    after = [sys.getrefcount(a) for a in tracked]
    if after != before:
        raise AssertionError(f"refcount delta {before} -> {after}")
    return result


@atheris.instrument_func
def fuzz_buffers(data):
    fdp = atheris.FuzzedDataProvider(data)
    for _ in range(fdp.ConsumeIntInRange(0, 8)):
        kind = fdp.ConsumeIntInRange(0, 3)
        payload = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 96))
        if kind == 0:
            assert checked(native.checksum, payload) == ref_fnv(payload)
        elif kind == 1:
            buf = bytearray(payload)
            key, rounds = fdp.ConsumeIntInRange(0, 2**32 - 1), fdp.ConsumeIntInRange(1, 3)
            checked(native.process, buf, key=key, rounds=rounds)
            assert bytes(buf) == ref_process(payload, key, rounds)
            buf.append(0)  # the export was released
        elif kind == 2:
            checked(native.checksum, memoryview(bytearray(payload))[::2])
        else:
            a, b = fdp.ConsumeInt(9), fdp.ConsumeInt(9)
            r1 = checked(native.add, a, b)
            r2 = checked(native.add_fast, a, b)
            assert r1 == r2


@atheris.instrument_func
def fuzz_handles(data):
    fdp = atheris.FuzzedDataProvider(data)
    base = ledger()
    _seq[0] += 1
    path = os.path.join(TMP, f"{_seq[0]}.db")
    conn = native.connect(path)
    model = {}
    for _ in range(fdp.ConsumeIntInRange(0, 32)):
        op = fdp.ConsumeIntInRange(0, 7)
        key = b"k" + bytes([97 + fdp.ConsumeIntInRange(0, 5)])
        if op == 0:
            value = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 16))
            if checked(conn.put, key, value) is None and not conn.closed:
                model[key] = value
        elif op == 1 and not conn.closed:
            try:
                assert conn.get(key) == model[key]
            except KeyError:
                assert key not in model
        elif op == 2 and not conn.closed:
            try:
                conn.delete(key)
                del model[key]
            except KeyError:
                assert key not in model
        elif op == 3 and not conn.closed:
            assert len(conn) == len(model)
        elif op == 4 and not conn.closed:
            assert dict(conn.items()) == model
        elif op == 5:
            conn.close()
        elif op == 6:
            checked(conn.stats)
        else:
            gc.collect()
    conn.close()
    conn = native.connect(path)
    assert dict(conn.items()) == model
    conn.close()
    os.unlink(path)
    assert ledger() == base


FIELDS = ["create", "sync", "max_key_size", "max_value_size", "file_mode", "bogus"]


@atheris.instrument_func
def fuzz_structs(data):
    # The same calls as the cargo-fuzz `structs` target: kwargs, mappings, connect(options=...), with the
    # same checks: round trip, no native call on rejection, refcounts, ledger.
    fdp = atheris.FuzzedDataProvider(data)
    base = ledger()
    for _ in range(fdp.ConsumeIntInRange(0, 8)):
        d = {}
        for _ in range(fdp.ConsumeIntInRange(0, 6)):
            name = FIELDS[fdp.ConsumeIntInRange(0, len(FIELDS) - 1)]
            pick = fdp.ConsumeIntInRange(0, 3)
            d[name] = [fdp.ConsumeBool(), fdp.ConsumeInt(5), fdp.ConsumeUnicode(4), None][pick]
        how = fdp.ConsumeIntInRange(0, 2)
        calls = native.debug_counters()["calls"]
        if how == 2:
            _seq[0] += 1
            path = os.path.join(TMP, f"s{_seq[0]}.db")
            conn = checked(native.connect, path, options=d)
            if conn is not None:
                conn.close()
                os.unlink(path)
            continue
        opts = checked(native.Options.from_mapping, d) if how == 0 else checked(lambda: native.Options(**d))
        if opts is None:
            assert native.debug_counters()["calls"] == calls, "rejected input reached C"
        else:
            assert native.Options.from_mapping(opts.to_dict()) == opts == native.Options(**opts.to_dict())
            for k, v in d.items():
                assert getattr(opts, k) == v
    assert ledger() == base


TARGETS = {"buffers": fuzz_buffers, "handles": fuzz_handles, "structs": fuzz_structs}

if __name__ == "__main__":
    target = TARGETS[sys.argv.pop(1)]
    atheris.Setup(sys.argv, target)
    atheris.Fuzz()
