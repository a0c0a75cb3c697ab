"""Builds the Python-side native pieces of the benchmarks into one directory (build.rs calls this with
$OUT_DIR/py; ci/bench-instructions with its own directory):

    libbenchshapes.so             capi/shapes.c, the 0/1/5-argument targets (for ctypes and cffi)
    _capi_bench<EXT_SUFFIX>       capi/capi_bench.c, the hand-written C-API extension
    _bench_cffi<EXT_SUFFIX>       the cffi API-mode (compiled) module, from bench_cdef.CDEF
    _native_cython<EXT_SUFFIX>    the Cython binding of libnative (pytests/bindings/cython/, its own build)
    _cython_shapes<EXT_SUFFIX>    _cython_shapes.pyx: the 0/1/5-argument shapes as Cython `def`s
    _pybind11_bench, _nanobind_bench   cpp_bench.cpp through pybind11 / nanobind, when those are installed

usage: python build_ext.py OUT_DIR LIBNATIVE_SO      (run with the venv python: its headers are used)
Everything links libnative.so and libbenchshapes.so with an rpath, so nothing needs LD_LIBRARY_PATH.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import sysconfig
from pathlib import Path

HERE = Path(__file__).resolve().parent
CAPI = HERE.parent / "capi"


def run(cmd: list[str]) -> None:
    print("+", shlex.join(cmd), file=sys.stderr)
    subprocess.run(cmd, check=True)


def main(out: Path, libnative: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    cc = shlex.split(os.environ.get("CC", "cc"))
    native_dir = libnative.parent
    native_inc = native_dir.parent  # libnative/build/libnative.so -> libnative
    cflags = ["-O2", "-g", "-fPIC", "-Wall", "-Wextra", "-Werror", "-std=c11"]
    rpath = [f"-Wl,-rpath,{out}", f"-Wl,-rpath,{native_dir}"]

    shapes = out / "libbenchshapes.so"
    run(cc + cflags + ["-shared", "-Wl,-soname,libbenchshapes.so", str(CAPI / "shapes.c"), "-o", str(shapes)])

    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    defines = ["-DHAVE_CALLGRIND"] if Path("/usr/include/valgrind/callgrind.h").exists() else []
    run(
        cc
        + cflags
        + [
            "-Wno-cast-function-type",
            "-shared",
            *defines,
            f"-I{sysconfig.get_paths()['include']}",
            f"-I{native_inc}",
            f"-I{CAPI}",
            str(CAPI / "capi_bench.c"),
            "-o",
            str(out / f"_capi_bench{suffix}"),
            f"-L{native_dir}",
            "-lnative",
            f"-L{out}",
            "-lbenchshapes",
            *rpath,
        ]
    )

    sys.path.insert(0, str(HERE))
    import bench_cdef
    from cffi import FFI

    ffi = FFI()
    ffi.cdef(bench_cdef.CDEF + bench_cdef.API_EXTERNS)
    ffi.set_source(
        "_bench_cffi",
        '#include "native.h"\n#include "shapes.h"\n',
        include_dirs=[str(native_inc), str(CAPI)],
        libraries=["native", "benchshapes"],
        library_dirs=[str(native_dir), str(out)],
        runtime_library_dirs=[str(native_dir), str(out)],
        extra_compile_args=["-O2"],
    )
    tmp = out / "cffi-tmp"
    built = Path(ffi.compile(tmpdir=str(tmp)))
    built.replace(out / built.name)

    build_cython(out, libnative, cc, rpath)
    build_cpp(out, libnative, rpath)


def stale(target: Path, *sources: Path) -> bool:
    return not target.exists() or target.stat().st_mtime < max(p.stat().st_mtime for p in sources)


def build_cython(out: Path, libnative: Path, cc: list[str], rpath: list[str]) -> None:
    """The real Cython binding (its build script, so tests and benches measure the same module), then the
    shapes module. cargo re-runs build.rs when these sources change (the rerun lines below)."""
    bindings = HERE.parents[1] / "pytests" / "bindings"
    sys.path.insert(0, str(bindings))
    import cython_build

    if os.environ.get("OUT_DIR"):  # run by build.rs: cargo reads these lines from our stdout
        for src in (
            bindings / "cython" / "_native_cython.pyx",
            bindings / "cython" / "libnative.pxd",
            bindings / "cython_build.py",
            HERE / "_cython_shapes.pyx",
            HERE / "cpp_bench.cpp",
        ):
            print(f"cargo:rerun-if-changed={src}")
    cython_build.build(out, libnative, quiet=False)
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    target, pyx = out / f"_cython_shapes{suffix}", HERE / "_cython_shapes.pyx"
    if stale(target, pyx):
        csrc = out / "_cython_shapes.c"
        run([sys.executable, "-m", "cython", "-3", str(pyx), "-o", str(csrc)])
        run(
            cc
            + cython_build.CFLAGS
            + [
                "-shared",
                f"-I{sysconfig.get_paths()['include']}",
                f"-I{CAPI}",
                str(csrc),
                "-o",
                str(target),
                f"-L{out}",
                "-lbenchshapes",
                *rpath,
            ]
        )


def build_cpp(out: Path, libnative: Path, rpath: list[str]) -> None:
    """pybind11 and nanobind modules from cpp_bench.cpp; a library that is not installed is skipped."""
    cxx = shlex.split(os.environ.get("CXX", "c++"))
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    common = [
        "-O2",
        "-g",
        "-fPIC",
        "-shared",
        "-std=c++17",
        "-fvisibility=hidden",
        "-Wall",
        "-Wextra",
        "-Werror",
        f"-I{sysconfig.get_paths()['include']}",
        f"-I{libnative.parent.parent}",
        f"-I{CAPI}",
    ]
    links = [f"-L{libnative.parent}", "-lnative", f"-L{out}", "-lbenchshapes", *rpath]
    src = HERE / "cpp_bench.cpp"
    try:
        import pybind11
    except ImportError:
        print("build_ext: pybind11 not installed, no pybind11 rows", file=sys.stderr)
    else:
        target = out / f"_pybind11_bench{suffix}"
        if stale(target, src):
            run(cxx + common + ["-DBENCH_PYBIND11", f"-I{pybind11.get_include()}", str(src), "-o", str(target), *links])
    try:
        import nanobind
    except ImportError:
        print("build_ext: nanobind not installed, no nanobind rows", file=sys.stderr)
        return
    target = out / f"_nanobind_bench{suffix}"
    if stale(target, src):
        nb_src = Path(nanobind.source_dir())
        nb_inc = [f"-I{nanobind.include_dir()}", f"-I{nb_src.parent / 'ext' / 'robin_map' / 'include'}", "-DNDEBUG"]
        # nanobind's runtime is compiled into the module from its "combined" source, with its own flags
        # (it type-puns, and is not ours to hold to -Werror); our source is.
        runtime = out / "nb_combined.o"
        run(
            cxx
            + [
                "-O2",
                "-fPIC",
                "-std=c++17",
                "-fvisibility=hidden",
                "-fno-strict-aliasing",
                "-c",
                f"-I{sysconfig.get_paths()['include']}",
                *nb_inc,
                str(nb_src / "nb_combined.cpp"),
                "-o",
                str(runtime),
            ]
        )
        run(cxx + common + ["-DBENCH_NANOBIND", *nb_inc, str(src), str(runtime), "-o", str(target), *links])


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    main(Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve())
