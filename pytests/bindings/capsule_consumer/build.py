"""Builds `_capsule_consumer` (the C consumer of native's capsule) into pytests/bindings/build/.

    python pytests/bindings/capsule_consumer/build.py

`load()` is how tests get the module: it rebuilds a stale one before importing it, so every importer
of one process gets the same, current module (the first import of a name wins for the whole process).

Only headers are needed (Python.h, native.h for the handle type, native_capi.h): the module never links
libnative; every native call goes through the function pointers of the capsule's table. Compiled with
-Wall -Wextra -Werror; skipped when the module is newer than its sources.
"""

from __future__ import annotations

import importlib
import os
import shlex
import subprocess
import sys
import sysconfig
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
BUILD_DIR = HERE.parent / "build"
CFLAGS = ["-O2", "-g", "-fPIC", "-std=c11", "-Wall", "-Wextra", "-Werror", "-fno-strict-aliasing"]


def build(out: Path = BUILD_DIR, quiet: bool = True) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"_capsule_consumer{sysconfig.get_config_var('EXT_SUFFIX')}"
    sources = [HERE / "_capsule_consumer.c", HERE / "native_capi.h", REPO / "libnative" / "native.h", Path(__file__)]
    if target.exists() and target.stat().st_mtime >= max(p.stat().st_mtime for p in sources):
        return target
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
    cmd = (
        shlex.split(os.environ.get("CC", "cc"))
        + CFLAGS
        + [
            "-shared",
            f"-I{sysconfig.get_paths()['include']}",
            f"-I{REPO / 'libnative'}",
            f"-I{HERE}",
            str(HERE / "_capsule_consumer.c"),
            "-o",
            str(partial),
        ]
    )
    if not quiet:
        print("+", shlex.join(cmd), file=sys.stderr)
    subprocess.run(cmd, check=True)
    # Renamed into place: test workers that find the module stale at once each build their own copy,
    # and none imports a half-written one.
    os.replace(partial, target)
    return target


def load(out: Path = BUILD_DIR) -> ModuleType:
    """`_capsule_consumer`, built first if missing or older than its sources."""
    built = build(out)
    # The import system may have cached the directory's listing from before the module existed.
    importlib.invalidate_caches()
    sys.path.insert(0, str(built.parent))
    try:
        module = importlib.import_module("_capsule_consumer")
    finally:
        sys.path.remove(str(built.parent))
    if Path(str(module.__file__)).resolve() != built.resolve():
        raise ImportError(f"_capsule_consumer was imported from {module.__file__}, not from the build {built}")
    return module


if __name__ == "__main__":
    print(build(quiet="-v" not in sys.argv))
