"""Builds the Python-side native pieces of the benchmarks into one directory (build.rs calls this with
$OUT_DIR/py; ci/bench-instructions with its own directory):

    libbenchshapes.so             capi/shapes.c, the 0/1/5-argument targets (for ctypes and cffi)
    _capi_bench<EXT_SUFFIX>       capi/capi_bench.c, the hand-written C-API extension
    _bench_cffi<EXT_SUFFIX>       the cffi API-mode (compiled) module, from bench_cdef.CDEF

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
    native_inc = native_dir.parent  # wrapper/native/build/libnative.so -> wrapper/native
    cflags = ["-O2", "-g", "-fPIC", "-Wall", "-Wextra", "-Werror", "-std=c11"]
    rpath = [f"-Wl,-rpath,{out}", f"-Wl,-rpath,{native_dir}"]

    shapes = out / "libbenchshapes.so"
    run(cc + cflags + ["-shared", "-Wl,-soname,libbenchshapes.so", str(CAPI / "shapes.c"), "-o", str(shapes)])

    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    defines = ["-DHAVE_CALLGRIND"] if Path("/usr/include/valgrind/callgrind.h").exists() else []
    run(cc + cflags + ["-Wno-cast-function-type", "-shared", *defines,
                       f"-I{sysconfig.get_paths()['include']}", f"-I{native_inc}", f"-I{CAPI}",
                       str(CAPI / "capi_bench.c"), "-o", str(out / f"_capi_bench{suffix}"),
                       f"-L{native_dir}", "-lnative", f"-L{out}", "-lbenchshapes", *rpath])

    sys.path.insert(0, str(HERE))
    from cffi import FFI

    import bench_cdef

    ffi = FFI()
    ffi.cdef(bench_cdef.CDEF + bench_cdef.API_EXTERNS)
    ffi.set_source("_bench_cffi", '#include "native.h"\n#include "shapes.h"\n',
                   include_dirs=[str(native_inc), str(CAPI)], libraries=["native", "benchshapes"],
                   library_dirs=[str(native_dir), str(out)], runtime_library_dirs=[str(native_dir), str(out)],
                   extra_compile_args=["-O2"])
    tmp = out / "cffi-tmp"
    built = Path(ffi.compile(tmpdir=str(tmp)))
    built.replace(out / built.name)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    main(Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve())
