"""Compiler and linker environment for an instrumented build (`build-ext`).

C and C++ (setuptools, Cython's generated code, a crate's ``cc`` build): clang compiles and links. The
link must be clang's for C++ too: a g++ link pulls gcc's libasan, and two ASan runtimes in one process
abort at start. setuptools reads ``CC``/``CXX``/``LDSHARED``/``LDCXXSHARED`` from the environment in
preference to sysconfig's, and appends ``CFLAGS``/``CXXFLAGS``/``LDFLAGS`` after sysconfig's (so ``-O1``
wins over the interpreter's ``-O3``). A shared object never links the sanitizer runtime: it comes from
the preloaded ``libclang_rt.asan`` at run time (:func:`ffi_harness.sanitizers.sanitizer_env`).

UBSan: ``-fsanitize=undefined`` minus ``function`` (Cython and hand-written C-API code call through
casted ``PyCFunction`` pointers by design; the check reports every such call) and, for C++, minus
``vptr`` (it needs RTTI in code that often disables it). ``--no-ubsan`` drops it entirely.

Rust (maturin, setuptools-rust): ``-Zsanitizer=address`` and SanitizerCoverage (inline 8-bit counters, PC
table, compare tracing: what libFuzzer reads) through ``RUSTFLAGS`` on stable with ``RUSTC_BOOTSTRAP=1``,
and an explicit ``--target`` so build scripts and proc-macros (host code) are not sanitized.
"""

from __future__ import annotations

import os
import platform
import shlex
import shutil
from collections.abc import Mapping
from pathlib import Path

from ffi_harness.build_detect import BuildSystem
from ffi_harness.cli import UsageError
from ffi_harness.sanitizers import asan_runtime, find_clang

# Recoverable: UBSAN_OPTIONS=halt_on_error=1 (sanitizers.UBSAN_OPTIONS, set for `test`, `repro` and
# every replay) makes a report fatal, while the fuzz engine runs with halt_on_error=0 and reports each
# source location once without ending its run (engine_main._with_ubsan_scan).
UBSAN = "-fsanitize=undefined -fno-sanitize=function"
UBSAN_CXX_EXTRA = "-fno-sanitize=vptr"
COMMON_C = "-fsanitize=address -fsanitize=fuzzer-no-link -fno-omit-frame-pointer -g -O1"
RUSTFLAGS = (
    "-Zsanitizer=address -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 "
    "-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table "
    "-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cforce-frame-pointers=yes -Cdebug-assertions"
)
# Variables of the caller's environment that would silently override ours.
CLEARED = ("CARGO_ENCODED_RUSTFLAGS", "CARGO_BUILD_RUSTFLAGS", "CPPFLAGS", "_PYTHON_SYSCONFIGDATA_NAME")


def rust_target() -> str:
    machine = platform.machine()
    return f"{'x86_64' if machine in ('x86_64', 'AMD64') else machine}-unknown-linux-gnu"


def require_clang() -> str:
    clang = find_clang()
    if clang is None:
        raise UsageError("clang not found (apt-get install clang-19 libclang-rt-19-dev, or set FFI_HARNESS_CLANG)")
    if asan_runtime(clang) is None:
        raise UsageError(f"{clang} has no ASan runtime (apt-get install libclang-rt-19-dev)")
    return clang


def clangxx(clang: str) -> str:
    """clang++ of the same version as `clang` (clang-19 -> clang++-19)."""
    name = os.path.basename(clang)
    candidate = os.path.join(os.path.dirname(clang), name.replace("clang", "clang++", 1))
    if shutil.which(candidate):
        return candidate
    return shutil.which("clang++") or candidate


def c_flags(ubsan: bool, cxx: bool) -> str:
    flags = COMMON_C
    if ubsan:
        flags = f"{flags} {UBSAN}" + (f" {UBSAN_CXX_EXTRA}" if cxx else "")
    return flags


_WRAPPER = """#!/bin/sh
# ffi-harness build-ext: {compiler} minus the project's strip flags (sanitizer reports and crash
# de-duplication need the symbols and line tables).
for a do
  shift
  case "$a" in
    -s|-Wl,-s|-Wl,--strip-all|-Wl,-S|-Wl,--strip-debug) ;;
    *) set -- "$@" "$a" ;;
  esac
done
exec {compiler} "$@"
"""


def compiler_wrappers(bindir: Path, clang: str, cxx: str) -> tuple[str, str]:
    """Wrappers named like clang and clang++ (build scripts look at the name) that drop strip flags.

    setuptools links C++ with CXX, not LDCXXSHARED, so CC and CXX are wrapped, not only the linkers.
    """
    bindir.mkdir(parents=True, exist_ok=True)
    paths = []
    for compiler in (clang, cxx):
        real = shutil.which(compiler) or compiler
        path = bindir / os.path.basename(compiler)
        path.write_text(_WRAPPER.format(compiler=shlex.quote(real)))
        path.chmod(0o755)
        paths.append(str(path))
    return paths[0], paths[1]


def build_env(
    system: BuildSystem,
    clang: str,
    *,
    ubsan: bool = True,
    base: Mapping[str, str] | None = None,
    bindir: Path | None = None,
) -> dict[str, str]:
    """The environment for `pip wheel` of a project built with `system` (link wrappers go in `bindir`)."""
    env = dict(os.environ if base is None else base)
    for key in CLEARED:
        env.pop(key, None)
    real_cc, real_cxx = clang, clangxx(clang)
    cc, cxx = compiler_wrappers(bindir, real_cc, real_cxx) if bindir else (real_cc, real_cxx)
    cflags = c_flags(ubsan, cxx=False)
    cxxflags = c_flags(ubsan, cxx=True)
    env.update(
        CC=cc,
        CXX=cxx,
        LDSHARED=f"{cc} -shared",
        LDCXXSHARED=f"{cxx} -shared",
        CFLAGS=cflags,
        CXXFLAGS=cxxflags,
        LDFLAGS=cxxflags,  # clang ignores -fno-sanitize=vptr at link time; the same sanitizer set either way
    )
    if system.rust:
        target = rust_target()
        env["RUSTC_BOOTSTRAP"] = "1"
        env["RUSTFLAGS"] = RUSTFLAGS
        env["CARGO_BUILD_TARGET"] = target  # setuptools-rust and cargo read it
        if system.tool == "maturin":
            prior = env.get("MATURIN_PEP517_ARGS", "")
            env["MATURIN_PEP517_ARGS"] = f"{prior} --target {target}".strip()
        # cc-rs reads the target-specific names first (setuptools-rust's C extensions read CFLAGS).
        triple = target.replace("-", "_")
        env[f"CFLAGS_{triple}"] = cflags
        env[f"CXXFLAGS_{triple}"] = cxxflags
        env[f"CC_{triple}"] = real_cc
        env[f"CXX_{triple}"] = real_cxx
    return env


def describe_env(env: Mapping[str, str], system: BuildSystem) -> list[str]:
    keys = ["CC", "CXX", "LDSHARED", "LDCXXSHARED", "CFLAGS", "CXXFLAGS", "LDFLAGS"]
    if system.rust:
        keys = ["RUSTFLAGS", "CARGO_BUILD_TARGET", "MATURIN_PEP517_ARGS", "CC", "CFLAGS", *keys[1:]]
        triple = rust_target().replace("-", "_")
        keys = [k if k != "CFLAGS" else f"CFLAGS_{triple}" for k in keys]
    seen: list[str] = []
    out = []
    for k in keys:
        if k in env and k not in seen:
            seen.append(k)
            out.append(f"{k}={env[k]}")
    return out
