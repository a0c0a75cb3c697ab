"""atheris (libFuzzer for Python) driving the same `native` operations as the cargo-fuzz targets, with
the same oracles written in Python: the baseline for ci/fuzz_compare.py's exec/s ratio.

Usage: python native_atheris.py <buffers|handles|structs|callbacks|errors> [libFuzzer flags]

callbacks and errors call the cargo-fuzz targets' own Python (fuzz/src/callbacks_helpers.py and
fuzz/src/errors_checks.py), so both sides run the same callbacks, cases and checks.
"""

import gc
import os
import shutil
import sys
import tempfile
import time

import atheris

# The same pure-Python references as the pytests and property tests.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "pytests"))
from _refs import Resizer
from _refs import fnv1a64 as ref_fnv
from _refs import process_ref as ref_process

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
with atheris.instrument_imports():
    import callbacks_helpers as cb
    import errors_checks
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


def fresh_store_path(prefix):
    """A store path no earlier input used."""
    _seq[0] += 1
    return os.path.join(TMP, f"{prefix}{_seq[0]}.db")


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


_resizer = []


def resize_race(fdp):
    """The cargo-fuzz target's ResizeRace: a detached call on a bytearray just over 64 KiB while one
    resident thread keeps resizing it. The result is checked against the same call on a private copy
    (a pure-Python reference over 64 KiB would cost this side more than the call)."""
    if not _resizer:
        _resizer.append(Resizer())
    base = bytes([fdp.ConsumeIntInRange(0, 255)]) * (65536 + fdp.ConsumeIntInRange(0, 255))
    if fdp.ConsumeBool():
        key, rounds = fdp.ConsumeIntInRange(0, 2**32 - 1), fdp.ConsumeIntInRange(1, 3)
        outcome, _, ba = _resizer[0].during(base, lambda b: native.process(b, key=key, rounds=rounds))
        want = bytearray(base + (b"\x55" if outcome.get("state") == "extra" else b""))
        native.process(want, key=key, rounds=rounds)
        assert ba == want
    else:
        outcome, result, ba = _resizer[0].during(base, native.checksum)
        original = base + (b"\x55" if outcome.get("state") == "extra" else b"")
        # No state: the resizer never ran into the export, so the call may have seen its extra byte.
        seen = {native.checksum(original)} | (
            {native.checksum(original + b"\x55")} if "state" not in outcome else set()
        )
        assert bytes(ba) == original and result in seen
    ba.append(1)
    ba.pop()


@atheris.instrument_func
def fuzz_buffers(data):
    fdp = atheris.FuzzedDataProvider(data)
    raced = False
    for _ in range(fdp.ConsumeIntInRange(0, 8)):
        kind = fdp.ConsumeIntInRange(0, 4)
        if kind == 4:
            if not raced:
                resize_race(fdp)
            raced = True
            continue
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
    path = fresh_store_path("h")
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
            path = fresh_store_path("s")
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


def wait_ledger(base, limit=5.0):
    """The ledger returns to `base` (a notifier may still be tearing a subscription down), as the cargo-fuzz
    targets' ledger check waits."""
    deadline = time.monotonic() + limit
    while ledger() != base and time.monotonic() < deadline:
        time.sleep(0.001)
    assert ledger() == base, f"ledger {ledger()} != {base}"


KINDS = ["record", "raise", "get", "put", "close", "cancel_self", "subscribe", "gc"]


def _on_conn(conn_ref, fn):
    if conn_ref[0] is None:
        return
    try:
        fn(conn_ref[0])
    except native.InvalidStateError:
        pass


@atheris.instrument_func
def fuzz_callbacks(data):
    # The ops of the cargo-fuzz `callbacks` target (fuzz/src/callbacks.rs) over the same helpers.
    fdp = atheris.FuzzedDataProvider(data)
    base = ledger()
    path = fresh_store_path("cb")
    conn_ref = [native.connect(path), []]  # the connection, and the helpers' log of its mutations
    subs, boxes, weakrefs, threads, errors = [], [], [], [], []
    for _ in range(fdp.ConsumeIntInRange(0, 32)):
        op, i = fdp.ConsumeIntInRange(0, 12), fdp.ConsumeIntInRange(0, 255)
        if op == 0:
            kind = KINDS[i % len(KINDS)]
            _on_conn(conn_ref, lambda _c, k=kind: subs.append(cb.subscribe(conn_ref, k, boxes, weakrefs)))
        elif op in (1, 2, 3) and subs and subs[i % len(subs)] is not None:
            sub = subs[i % len(subs)]
            if op == 3:
                sub.__exit__(None, None, None)
            else:
                for _ in range(op):
                    sub.cancel()
            boxes[i % len(subs)]["cancelled"] = True
        elif op == 4:
            value = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 16))
            _on_conn(conn_ref, lambda _c: cb.put(conn_ref, b"k" + bytes([97 + i % 4]), value))
        elif op == 5:
            try:
                _on_conn(conn_ref, lambda _c: cb.delete(conn_ref, b"k" + bytes([97 + i % 4])))
            except KeyError:
                pass
        elif op == 6:
            _on_conn(conn_ref, lambda _c: threads.append(cb.writer(conn_ref, i % 64 + 1, errors)))
        elif op == 7:
            _on_conn(conn_ref, lambda _c: cb.settle(conn_ref))
        elif op == 8:

            def close(c):
                c.close()
                for b in boxes:
                    b["cancelled"] = True

            _on_conn(conn_ref, close)
        elif op == 9 and subs:
            subs[i % len(subs)] = None
        elif op in (10, 11):
            if conn_ref[0] is not None:
                conn_ref[0] = None
                for t in threads:
                    t.join()
                gc.collect()
                for b in boxes:
                    b["cancelled"] = True
            if op == 11:
                conn_ref[0:2] = [native.connect(path), []]
        elif op == 12:
            gc.collect()
    problems = cb.finish(conn_ref, subs, boxes, weakrefs, threads, errors)
    assert not problems, problems
    wait_ledger(base)
    os.unlink(path)


PATH_KINDS = ["missing_directory", "is_directory", "nul_byte", "empty", "as_bytes"]


def _value(fdp):
    """A small hostile value (the cargo-fuzz target draws from ffi-harness's richer PyValue)."""
    return [None, fdp.ConsumeInt(9), fdp.ConsumeRegularFloat(), fdp.ConsumeUnicode(8), fdp.ConsumeBytes(8)][
        fdp.ConsumeIntInRange(0, 4)
    ]


@atheris.instrument_func
def fuzz_errors(data):
    # The cases of the cargo-fuzz `errors` target: the same `case_*` functions with data from the fuzzer.
    fdp = atheris.FuzzedDataProvider(data)
    base = ledger()
    errors_checks._TMP = tmp = tempfile.mkdtemp(dir=TMP)
    for _ in range(fdp.ConsumeIntInRange(0, 6)):
        case = fdp.ConsumeIntInRange(0, 2)
        try:
            if case == 0:
                kind = fdp.ConsumeIntInRange(0, len(PATH_KINDS))
                if kind == len(PATH_KINDS):
                    errors_checks.case_path("hostile", _value(fdp))
                else:
                    errors_checks.case_path(PATH_KINDS[kind])
            elif case == 1:
                records = []
                for _ in range(fdp.ConsumeIntInRange(0, 8)):
                    k = fdp.ConsumeIntInRange(0, 255)
                    records.append((b"k" * (1 + k % 4) + bytes([k]), fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 32))))
                damage = []
                for _ in range(fdp.ConsumeIntInRange(0, 4)):
                    how, offset = fdp.ConsumeIntInRange(0, 3), fdp.ConsumeIntInRange(0, 65535)
                    damage.append(
                        [
                            ("flip", offset, fdp.ConsumeIntInRange(0, 255)),
                            ("truncate", offset),
                            ("append", fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 16))),
                            ("overwrite", offset, fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 16))),
                        ][how]
                    )
                limit = fdp.ConsumeIntInRange(0, 8)  # 0: reopen with the default max_key_size
                errors_checks.case_corrupt(records, damage, *([limit] if limit else []))
            else:
                pick = fdp.ConsumeIntInRange(0, 4)
                timeout = [0, fdp.ConsumeIntInRange(0, 19) / 1000.0, -1.0, float("nan"), None][pick]
                errors_checks.case_locked(_value(fdp) if pick == 4 else timeout)
        except (
            native.ConnectionError,
            native.ProtocolError,
            native.TimeoutError,
            TypeError,
            ValueError,
            OverflowError,
        ):
            pass
    shutil.rmtree(tmp)
    wait_ledger(base)


TARGETS = {
    "buffers": fuzz_buffers,
    "handles": fuzz_handles,
    "structs": fuzz_structs,
    "callbacks": fuzz_callbacks,
    "errors": fuzz_errors,
}

if __name__ == "__main__":
    target = TARGETS[sys.argv.pop(1)]
    atheris.Setup(sys.argv, target)
    atheris.Fuzz()
