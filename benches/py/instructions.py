"""Instructions per call under callgrind: the low-noise cross-check of the wall-clock benchmarks, and the
CI gate run by ci/bench-instructions.

    valgrind --tool=callgrind --callgrind-out-file=DIR/cg.out python instructions.py run PYDIR N
    python instructions.py report DIR N [--json FILE]
    python instructions.py breakdown DIR N     (Markdown: where native.add's extra instructions go)

`run` times nothing: for each mechanism it warms its own driver loop up (past the specialising
interpreter's warm-up), zeroes callgrind's counters (_capi_bench.cg_zero), runs N calls, and dumps the
counters under the mechanism's name (_capi_bench.cg_dump), so each dump holds exactly one loop. `report`
subtracts the empty loop's dump and divides by N. Gate: native.add_fast <= 1.15x and native.add <= 4x the
hand-written METH_FASTCALL add; exit status 1 otherwise.

Besides the gated 2-argument rows: Cython (the real binding's add and checksum, _cython_shapes for 0/1/5
arguments), pybind11 and nanobind (cpp_bench.cpp, when built) at 0/1/2/5 arguments and checksum of 64
bytes, each compared with the hand-written METH_FASTCALL call of the same shape.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
EMPTY = "empty loop"
FASTCALL = "C-API METH_FASTCALL add"
# (mechanism, limit as a multiple of FASTCALL or None)
GATES = {"PyO3 native.add_fast": 1.15, "PyO3 native.add (#[pyfunction])": 4.0}


# Call shapes: (call in the driver loop, expected result). checksum reads 64 bytes of `data` in place.
DATA = bytes(range(64))
SHAPES = {
    "0 args": ("f()", 0),
    "1 arg": ("f(2)", 2),
    "2 args": ("f(2, 3)", 5),
    "5 args": ("f(1, 2, 3, 4, 5)", 15),
    "checksum 64 B": ("f(data)", 0x8368214F77995EE5),
}
FUNCS = {"0 args": "zero", "1 arg": "one", "2 args": "add", "5 args": "five", "checksum 64 B": "checksum"}


def fastcall_ref(shape: str) -> str:
    return FASTCALL if shape == "2 args" else f"C-API METH_FASTCALL {shape}"


def optional(name: str) -> object | None:
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def cases() -> dict[str, tuple[object, str]]:
    """name -> (callable, shape), gated rows first; optional mechanisms when built."""
    import _capi_bench as capi
    import native

    out: dict[str, tuple[object, str]] = {
        "PyO3 native.add (#[pyfunction])": (native.add, "2 args"),
        "PyO3 native.add_fast": (native.add_fast, "2 args"),
        FASTCALL: (capi.fast_add, "2 args"),
        "C-API METH_VARARGS add": (capi.var_add, "2 args"),
    }
    for shape in ("0 args", "1 arg", "5 args", "checksum 64 B"):
        out[fastcall_ref(shape)] = (getattr(capi, f"fast_{FUNCS[shape]}"), shape)
    out["PyO3 native.checksum, checksum 64 B"] = (native.checksum, "checksum 64 B")
    sys.path.append(str(HERE.parents[1] / "pytests" / "bindings"))  # facade, for the Cython binding
    cy, cy_shapes = optional("_native_cython"), optional("_cython_shapes")
    if cy is not None and cy_shapes is not None:
        for shape, fn in FUNCS.items():
            out[f"Cython def, {shape}"] = (getattr(cy if fn in ("add", "checksum") else cy_shapes, fn), shape)
    for label, mod in (("pybind11", "_pybind11_bench"), ("nanobind", "_nanobind_bench")):
        m = optional(mod)
        if m is not None:
            for shape, fn in FUNCS.items():
                out[f"{label}, {shape}"] = (getattr(m, fn), shape)
    return out


def mechanisms() -> dict[str, object]:
    return {name: f for name, (f, _) in cases().items()}


def run(pydir: str, n: int) -> None:
    sys.path[:0] = [pydir, str(HERE)]
    import _capi_bench as capi
    from mechanisms import driver

    if not capi.has_callgrind():
        raise SystemExit("_capi_bench was built without valgrind/callgrind.h: counts would be meaningless")
    loops = {EMPTY: driver("empty", "pass")}
    for name, (f, shape) in cases().items():
        # A fast wrong answer is not a result: every mechanism must compute the same value before it is
        # counted (the C-API reference once returned 0, reading its out-param before the call wrote it).
        call, want = SHAPES[shape]
        loops[name] = driver(name, call, f=f, data=DATA)
        got = eval(call, {"f": f, "data": DATA})  # our own call string
        if got != want:
            raise SystemExit(f"{name}: {call} returned {got!r}, not {want!r}; refusing to count it")
    for name, loop in loops.items():
        loop(2000)  # specialise CALL and friends before counting
        capi.cg_zero()
        loop(n)
        capi.cg_dump(name)


def totals(outdir: Path) -> dict[str, int]:
    """Trigger name -> total Ir of that dump."""
    found: dict[str, int] = {}
    for f in sorted(outdir.glob("cg.out*")):
        text = f.read_text(errors="replace")
        trig = re.search(r"^desc: Trigger: Client Request: (.*)$", text, re.MULTILINE)
        tot = re.search(r"^(?:summary|totals): (\d+)", text, re.MULTILINE)
        if trig and tot:
            found[trig.group(1).strip()] = int(tot.group(1))
    return found


def report(outdir: Path, n: int, json_out: str | None) -> int:
    t = totals(outdir)
    # Which mechanisms exist (and their arity) is decided by what `run` could import: ci/bench-instructions
    # builds the modules into OUTDIR/py.
    sys.path[:0] = [str(outdir / "py"), str(HERE)]
    missing = [k for k in [EMPTY, *mechanisms_names()] if k not in t]
    if missing:
        raise SystemExit(f"no callgrind dump for {missing} in {outdir}")
    per = {k: (v - t[EMPTY]) / n for k, v in t.items() if k != EMPTY}
    shape_of = {name: shape for name, (_, shape) in cases().items()}
    print(f"instructions per call (callgrind, N={n}, empty loop {t[EMPTY] / n:.1f} Ir/iteration subtracted;")
    print("x FASTCALL: against the hand-written METH_FASTCALL call of the same shape)")
    print(f"{'mechanism':44} {'Ir/call':>9} {'x FASTCALL':>11}  gate")
    failed = False
    for k in mechanisms_names():
        limit = GATES.get(k)
        ratio = per[k] / per[fastcall_ref(shape_of[k])]
        verdict = ""
        if limit is not None:
            ok = ratio <= limit
            failed |= not ok
            verdict = f"<= {limit:.2f}x {'ok' if ok else 'FAIL'}"
        print(f"{k:44} {per[k]:9.1f} {ratio:10.2f}x  {verdict}")
    if json_out:
        Path(json_out).write_text(
            json.dumps({"calls": n, "ir_per_call": per, "empty_loop_ir": t[EMPTY] / n}, indent=2) + "\n"
        )
    if failed:
        print("bench-instructions: FAIL (a PyO3 entry point costs more instructions than its gate allows)")
        return 1
    print("bench-instructions: ok")
    return 0


# (category, test on (file, function)), first match wins; used by `breakdown`.
CATEGORIES = [
    (
        "argument extraction (extract_arguments_fastcall, i64 extract, copying the argument slots)",
        lambda f, fn: (
            "extract_argument" in f
            or "extract_argument" in fn
            or "FromPyObject" in fn
            or fn.startswith("PyLong_AsLong")
            or "memcpy" in fn
        ),
    ),
    (
        "reference pool (deferred-decref check on entry)",
        lambda f, fn: "ReferencePool" in fn or "drop_deferred" in fn or ("AttachGuard::assume" in fn and "atomic" in f),
    ),
    (
        "GIL/attach count (thread-local ATTACH_COUNT; __tls_get_addr from a cdylib)",
        lambda f, fn: "__tls_get_addr" in fn or "AttachGuard" in fn or "internal/state.rs" in f,
    ),
    (
        "panic catching (catch_unwind landing pad, PanicTrap)",
        lambda f, fn: "panicking.rs" in f or "panic.rs" in f or "maybe_dangling" in f or "panic" in fn.lower(),
    ),
    (
        "trampoline frame (fastcall_cfunction_with_keywords, trampoline, error restore)",
        lambda f, fn: "trampoline" in f or "trampoline" in fn,
    ),
    (
        "result conversion (i64 -> PyLong, Result wrapping)",
        lambda f, fn: (
            fn.startswith("PyLong_FromLong")
            or "into_pyobject" in fn.lower()
            or "IntoPyObject" in fn
            or "conversion" in f
            or "result.rs" in f
        ),
    ),
    (
        "function body (native_add; the reference fast_add with its inlined checks)",
        lambda f, fn: f.endswith(("lib.rs", "compute.c", "capi_bench.c")) or fn in ("native_add", "fast_add"),
    ),
    ("interpreter (CALL specialisation for the callable's flags)", lambda f, fn: "_PyEval_EvalFrameDefault" in fn),
    ("PyO3 glue inlined into __pyfunction_add (Bound, pymethods)", lambda f, fn: "pyo3" in f),
]


def self_costs(dump: Path) -> dict[tuple[str, str], int]:
    """(file, function) -> exclusive Ir, from callgrind_annotate."""
    import subprocess

    text = subprocess.run(
        ["callgrind_annotate", "--auto=no", "--inclusive=no", "--threshold=100", str(dump)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    out: dict[tuple[str, str], int] = {}
    for line in text.splitlines():
        m = re.match(r"^\s*([\d,]+) \(\s*[\d.]+%\)\s+(.*?)(?: \[[^\]]*\])?$", line)
        if not m:
            continue
        loc = re.match(r"^(.*?):(?!:)(.*)$", m.group(2))
        if not loc:
            continue
        f, fn = loc.group(1), loc.group(2)
        f = re.sub(r"^.*/(pyo3-[\d.]+/|Python-[\d.]+/|library/)", r"\1", f)
        if (
            "main" in fn.lower()
            or "libc_start" in fn
            or fn.startswith("0x")
            or "pythonrun.c" in f
            or "PyEval_EvalCode" in fn
        ):
            continue  # callers outside the counted region, reported with the whole region's cost
        out[(f, fn)] = out.get((f, fn), 0) + int(m.group(1).replace(",", ""))
    return out


def breakdown(outdir: Path, n: int) -> str:
    dumps = {}
    for f in sorted(outdir.glob("cg.out.*")):
        trig = re.search(r"^desc: Trigger: Client Request: (.*)$", f.read_text(errors="replace"), re.MULTILINE)
        if trig:
            dumps[trig.group(1).strip()] = f
    pyo3, ref = self_costs(dumps["PyO3 native.add (#[pyfunction])"]), self_costs(dumps[FASTCALL])
    keys = set(pyo3) | set(ref)
    cats: dict[str, float] = {}
    rows = []
    for k in keys:
        d = (pyo3.get(k, 0) - ref.get(k, 0)) / n
        if abs(d) < 0.5:
            continue
        cat = next((c for c, test in CATEGORIES if test(*k)), "other")
        cats[cat] = cats.get(cat, 0) + d
        rows.append((d, cat, k))
    t = totals(outdir)
    total = (t["PyO3 native.add (#[pyfunction])"] - t[FASTCALL]) / n
    lines = [
        (
            f"Extra instructions per call of `native.add` over the hand-written METH_FASTCALL add "
            f"(callgrind, N={n}): **{total:+.0f} Ir/call**\n"
        ),
        "| category | Ir/call |",
        "|---|---:|",
    ]
    for cat, v in sorted(cats.items(), key=lambda kv: -kv[1]):
        lines.append(f"| {cat} | {v:+.0f} |")
    lines += ["", "| function (file) | category | Ir/call |", "|---|---|---:|"]
    for d, cat, (f, fn) in sorted(rows, key=lambda r: -abs(r[0])):
        lines.append(f"| `{fn}` ({f}) | {cat} | {d:+.1f} |")
    return "\n".join(lines) + "\n"


def mechanisms_names() -> list[str]:
    return list(cases())


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "run":
        run(sys.argv[2], int(sys.argv[3]))
    elif len(sys.argv) >= 4 and sys.argv[1] == "breakdown":
        print(breakdown(Path(sys.argv[2]), int(sys.argv[3])))
    elif len(sys.argv) >= 4 and sys.argv[1] == "report":
        js = sys.argv[sys.argv.index("--json") + 1] if "--json" in sys.argv else None
        sys.exit(report(Path(sys.argv[2]), int(sys.argv[3]), js))
    else:
        raise SystemExit(__doc__)
