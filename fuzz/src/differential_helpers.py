# Differential core for the `differential` fuzz target, shared verbatim by the fuzzer and repro.py:
# the same inputs through the PyO3 wrapper (add and add_fast), ctypes, cffi ABI and cffi API mode must
# give the same values, or exceptions of the same category.
import os

import cffi_native
import ctypes_native
import native

MECHANISMS = [("pyo3", native), ("ctypes", ctypes_native.native), ("cffi-abi", cffi_native.abi)]
if cffi_native.api is not None:
    MECHANISMS.append(("cffi-api", cffi_native.api))


def category(exc):
    for base in (KeyError, OverflowError, TypeError, ValueError, TimeoutError):
        if isinstance(exc, base):
            return base.__name__
    return type(exc).__name__


def outcome(fn, *args, **kwargs):
    try:
        return ("ok", fn(*args, **kwargs))
    except Exception as exc:  # noqa: BLE001 - the category is what must agree
        return ("raised", category(exc))


def _store(mech, path, ops):
    out = []
    conn = mech.connect(path, timeout=0)
    try:
        for op in ops:
            name, args = op[0], op[1:]
            if name == "items":
                out.append(outcome(lambda: sorted(conn.items())))
            elif name == "len":
                out.append(outcome(len, conn))
            else:
                out.append(outcome(getattr(conn, name), *args))
    finally:
        conn.close()
    return out


def run_calls(calls, tmpdir):
    """Returns a list of disagreements (empty: all mechanisms agree)."""
    problems = []
    for i, call in enumerate(calls):
        kind, args = call[0], call[1:]
        results = {}
        for name, mech in MECHANISMS:
            if kind == "add":
                results[name] = outcome(mech.add, *args)
                if name == "pyo3":
                    results["pyo3-fastcall"] = outcome(native.add_fast, *args)
            elif kind == "checksum":
                results[name] = outcome(mech.checksum, args[0])
            elif kind == "process":
                buf = bytearray(args[0])
                res = outcome(mech.process, buf, key=args[1], rounds=args[2])
                results[name] = (res, bytes(buf))
            elif kind == "store":
                path = os.path.join(tmpdir, f"{i}-{name}.db")
                results[name] = outcome(_store, mech, path, args[0])
        distinct = {repr(v) for v in results.values()}
        if len(distinct) > 1:
            problems.append(f"call #{i} {call!r}: " + "; ".join(f"{k}={v!r}" for k, v in results.items()))
    return problems
