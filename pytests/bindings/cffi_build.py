"""Builds the cffi API-mode module `_native_cffi` into pytests/bindings/build/.

    python pytests/bindings/cffi_build.py      (after `make -C libnative`)

Out-of-line API mode: the C compiler checks cdefs.CDEF against the real native.h and links libnative.so
with an rpath to its directory, so the module needs no LD_LIBRARY_PATH. Honours $NATIVE_LIB like the rest.
"""

from __future__ import annotations

import sys
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
BUILD_DIR = HERE / "build"
sys.path.insert(0, str(HERE))

import cdefs
import facade


def make_ffi() -> FFI:
    lib = facade.lib_path().resolve()
    # -lnative finds libnative.so; any other file name is linked by exact name (GNU ld's -l:name).
    libname = "native" if lib.name == "libnative.so" else ":" + lib.name
    ffi = FFI()
    ffi.cdef(cdefs.CDEF)
    ffi.set_source(
        "_native_cffi",
        '#include "native.h"',
        libraries=[libname],
        library_dirs=[str(lib.parent)],
        include_dirs=[str(facade.REPO / "libnative")],
        runtime_library_dirs=[str(lib.parent)],
    )
    return ffi


def build(verbose: bool = False) -> str:
    if not facade.lib_path().exists():
        raise SystemExit(f"{facade.lib_path()} missing: run `make -C libnative` first")
    BUILD_DIR.mkdir(exist_ok=True)
    return make_ffi().compile(tmpdir=str(BUILD_DIR), verbose=verbose)


if __name__ == "__main__":
    print(build(verbose="-v" in sys.argv))
