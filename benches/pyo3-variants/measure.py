"""Instructions per call of the pyo3_variants functions under callgrind (the method of
ci/bench-instructions / benches/py/instructions.py: each callable in its own compiled driver loop,
warmed up, counters zeroed, N calls, dumped under its name; the empty loop's dump is subtracted).

    valgrind --tool=callgrind --callgrind-out-file=DIR/cg.out python measure.py run PKGDIR CAPIDIR N
    python measure.py report OUTROOT N BUILD... [--full]   Markdown table over the builds' dumps
                                                    (--full: every variant of every build)
    python measure.py diff DUMP_A DUMP_B N           per-function exclusive Ir/call, B - A

PKGDIR holds one build of pyo3_variants (an unzipped wheel), CAPIDIR the benches' C-API extension
(_capi_bench, from benches/py/build_ext.py): its METH_FASTCALL fast_add is measured in every run as
the reference, and its cg_zero/cg_dump are the callgrind client requests.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCH_PY = HERE.parent / "py"
sys.path.insert(0, str(BENCH_PY))

EMPTY = "empty loop"
FASTCALL = "C-API METH_FASTCALL fast_add"
NATIVE = "native.add (installed wrapper, cross-check)"
BASELINE = "add"
# pyo3_variants function -> description for the table
VARIANTS = {
    "add": "baseline `fn add(a: c_long, b: c_long) -> PyResult<c_long>`",
    "add_posonly": "positional-only `#[pyo3(signature = (a, b, /))]`",
    "add_ret_bound": "returns `PyResult<Bound<PyAny>>` built with `PyLong_FromLong`",
    "add_ret_py": "returns `PyResult<Py<PyAny>>` built with `PyLong_FromLong`",
    "add_any": "args `&Bound<PyAny>` + `PyLong_AsLong` by hand",
    "add_lean": "positional-only + `&Bound<PyAny>` args + hand-built `Bound` result",
    "add_varargs": "`#[pyo3(signature = (*args))]`, `&Bound<PyTuple>`",
    "add_kwargs": "`#[pyo3(signature = (a, b, **kwargs))]` (METH_VARARGS)",
}


def check(name: str, f) -> None:
    """The shared contract, outside the counted region."""
    got = f(2, 3)
    if name == FASTCALL and got == 0:
        # benches/capi/capi_bench.c: `add_result(native_add(a, b, &out), out)` reads `out` before the
        # call (unspecified argument order; GCC goes right to left), so fast_add/var_add return 0. The
        # instruction count is unaffected (0 and 5 both come from CPython's small-int cache).
        print(
            "warning: C-API fast_add(2, 3) returned 0 (argument-order bug in benches/capi/capi_bench.c)",
            file=sys.stderr,
        )
    else:
        assert got == 5, (name, got)
    for args, exc in (
        ((2**63 - 1, 1), OverflowError),
        ((2**63, 0), OverflowError),
        ((1.5, 2), TypeError),
        (("1", 2), TypeError),
        ((1,), TypeError),
    ):
        try:
            f(*args)
        except exc:
            pass
        else:
            raise AssertionError(f"{name}{args} did not raise {exc.__name__}")


def run(pkgdir: str, capidir: str, n: int) -> None:
    sys.path[:0] = [pkgdir, capidir]
    import _capi_bench as capi
    import pyo3_variants as pv
    from mechanisms import driver

    if not capi.has_callgrind():
        raise SystemExit("_capi_bench was built without valgrind/callgrind.h: counts would be meaningless")
    if not pv.__file__.startswith(pkgdir):
        raise SystemExit(f"pyo3_variants imported from {pv.__file__}, not from {pkgdir}")
    print(f"pyo3_variants from {pv.__file__} (build knobs: {pv.build_info() or 'none'})", file=sys.stderr)
    funcs = {FASTCALL: capi.fast_add}
    funcs.update({name: getattr(pv, name) for name in VARIANTS})
    try:
        import native  # the wrapper installed in the venv: its `add` should match our baseline `add`

        funcs[NATIVE] = native.add
    except ImportError:
        pass
    for name, f in funcs.items():
        check(name, f)
    loops = {EMPTY: driver("empty", "pass")}
    for name, f in funcs.items():
        loops[name] = driver(name, "f(2, 3)", f=f)
    for name, loop in loops.items():
        loop(2000)  # specialise CALL and friends before counting
        capi.cg_zero()
        loop(n)
        capi.cg_dump(name)


def per_call(outdir: Path, n: int) -> dict[str, float]:
    from instructions import totals

    t = totals(outdir)
    if EMPTY not in t or FASTCALL not in t:
        raise SystemExit(f"no callgrind dumps in {outdir}")
    return {k: (v - t[EMPTY]) / n for k, v in t.items() if k != EMPTY}


BUILDS = {
    "base": "release, as `native`",
    "norefpool": "`--cfg pyo3_disable_reference_pool`",
    "cgu1": "`codegen-units = 1`",
    "lto-thin": '`lto = "thin"`',
    "lto": '`lto = "fat"`, `codegen-units = 1`',
    "norefpool-lto": "reference pool off + fat LTO, 1 CGU",
    "abi3": "`pyo3/abi3-py311`",
}
# rows shown for builds other than the first in the condensed table
KNOB_ROWS = ["add", "add_lean", "add_varargs"]


def report(root: Path, n: int, builds: list[str], full: bool = False) -> str:
    res = {b: per_call(root / b, n) for b in builds}
    first = builds[0]
    base = res[first][BASELINE]
    refs = sorted({round(r[FASTCALL], 1) for r in res.values()})
    base_excess = base - res[first][FASTCALL]
    lines = [
        (
            f"callgrind, N={n} calls per row, empty loop subtracted; × C-API = ÷ the METH_FASTCALL `fast_add` "
            f"measured in the same valgrind run ({', '.join(f'{x:.1f}' for x in refs)} Ir/call); "
            f"Δ = excess over that run's `fast_add` minus the excess of `add` in build `{first}` "
            f"({base_excess:+.1f} Ir/call), so a per-process offset common to all loops cancels\n"
        ),
        "| build | variant | Ir/call | × METH_FASTCALL C-API | Δ vs baseline `#[pyfunction]` |",
        "|---|---|---:|---:|---:|",
    ]
    for b in builds:
        r = res[b]
        ref = r[FASTCALL]
        names = list(VARIANTS) if (full or b == first) else KNOB_ROWS
        rows = [(k, f"`{k}`: {VARIANTS[k]}") for k in names if k in r]
        if b == first:
            rows.insert(0, (FASTCALL, "C-API METH_FASTCALL `fast_add` (reference)"))
            if NATIVE in r:
                rows.append((NATIVE, "`native.add` from .venv (cross-check of the baseline)"))
        for k, desc in rows:
            delta = "–" if k == FASTCALL else f"{(r[k] - ref) - base_excess:+.1f}"
            lines.append(f"| {b}: {BUILDS.get(b, b)} | {desc} | {r[k]:.1f} | {r[k] / ref:.2f}× | {delta} |")
    return "\n".join(lines) + "\n"


def dumps(outdir: Path) -> dict[str, Path]:
    found = {}
    for f in sorted(outdir.glob("cg.out.*")):
        trig = re.search(r"^desc: Trigger: Client Request: (.*)$", f.read_text(errors="replace"), re.MULTILINE)
        if trig:
            found[trig.group(1).strip()] = f
    return found


def diff(a: Path, b: Path, n: int, limit: int = 25) -> str:
    from instructions import self_costs

    def norm(costs: dict[tuple[str, str], int]) -> dict[tuple[str, str], int]:
        # The same PyO3 glue monomorphised per function (`__pyfunction_add_any`, `add_any::MakeDef`):
        # fold the names so that only real differences remain.
        out: dict[tuple[str, str], int] = {}
        for (f, fn), v in costs.items():
            fn = re.sub(r"pyo3_variants::(__pyfunction_)?add\w*", r"pyo3_variants::\1<variant>", fn)
            out[(f, fn)] = out.get((f, fn), 0) + v
        return out

    ca, cb = norm(self_costs(a)), norm(self_costs(b))
    rows = []
    for k in set(ca) | set(cb):
        d = (cb.get(k, 0) - ca.get(k, 0)) / n
        if abs(d) >= 0.5:
            rows.append((d, k))
    rows.sort(key=lambda r: -abs(r[0]))

    def label(p: Path) -> str:
        trig = re.search(r"^desc: Trigger: Client Request: (.*)$", p.read_text(errors="replace"), re.MULTILINE)
        return f"{p.parent.name}/{trig.group(1).strip() if trig else p.name}"

    out = [f"exclusive Ir/call, {label(b)} − {label(a)}: total {sum(d for d, _ in rows):+.1f}"]
    out += [f"{d:+7.1f}  {fn}  ({f})" for d, (f, fn) in rows[:limit]]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "run" and len(sys.argv) == 5:
        run(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif cmd == "report" and len(sys.argv) >= 5:
        full = "--full" in sys.argv
        args = [a for a in sys.argv[2:] if a != "--full"]
        print(report(Path(args[0]), int(args[1]), args[2:], full), end="")
    elif cmd == "diff" and len(sys.argv) == 5:
        print(diff(Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])), end="")
    else:
        raise SystemExit(__doc__)
