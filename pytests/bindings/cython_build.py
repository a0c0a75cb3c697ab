"""Builds the Cython binding `_native_cython` (pytests/bindings/cython/) into pytests/bindings/build/.

    python pytests/bindings/cython_build.py      (after `make -C libnative`)

cython translates the .pyx (its `cdef extern from "native.h"` declarations are in libnative.pxd), then
the C compiler builds it against the real native.h with -Wall -Wextra -Werror and links libnative.so with
an rpath to its directory (the same library ctypes and cffi load, so the native ledger is shared).
Honours $NATIVE_LIB like the rest; benches/py/build_ext.py calls build() for its own directory.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import sysconfig
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE / "cython"
BUILD_DIR = HERE / "build"
sys.path.insert(0, str(HERE))

import facade

# Cython's generated C is warning-clean under these except for two families it emits on purpose.
CFLAGS = [
    "-O2",
    "-g",
    "-fPIC",
    "-Wall",
    "-Wextra",
    "-Werror",
    "-Wno-unused-function",
    "-Wno-unused-parameter",
    "-fno-strict-aliasing",
]


def run(cmd: list[str], quiet: bool) -> None:
    if not quiet:
        print("+", shlex.join(cmd), file=sys.stderr)
    subprocess.run(cmd, check=True)


def build(out: Path = BUILD_DIR, lib: Path | None = None, quiet: bool = True) -> Path:
    lib = (lib or facade.lib_path()).resolve()
    if not lib.exists():
        raise SystemExit(f"{lib} missing: run `make -C libnative` first")
    out.mkdir(parents=True, exist_ok=True)
    pyx = SRC / "_native_cython.pyx"
    csrc = out / "_native_cython.c"
    target = out / f"_native_cython{sysconfig.get_config_var('EXT_SUFFIX')}"
    sources = [pyx, SRC / "libnative.pxd", lib, Path(__file__)]
    if target.exists() and target.stat().st_mtime >= max(p.stat().st_mtime for p in sources):
        return target
    run([sys.executable, "-m", "cython", "-3", "--fast-fail", "-I", str(SRC), str(pyx), "-o", str(csrc)], quiet)
    libname = "native" if lib.name == "libnative.so" else ":" + lib.name
    cc = shlex.split(os.environ.get("CC", "cc"))
    run(
        cc
        + CFLAGS
        + [
            "-shared",
            f"-I{sysconfig.get_paths()['include']}",
            f"-I{facade.REPO / 'libnative'}",
            str(csrc),
            "-o",
            str(target),
            f"-L{lib.parent}",
            f"-l{libname}",
            f"-Wl,-rpath,{lib.parent}",
        ],
        quiet,
    )
    return target


if __name__ == "__main__":
    print(build(quiet="-v" not in sys.argv))
