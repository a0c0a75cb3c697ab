"""`ffi-harness build-ext SRC`: build a package's native code instrumented and install it into an environment.

SRC is a source directory or an sdist (``.tar.gz``, ``.tgz``, ``.tar.bz2``, ``.zip``). The build system is
read from ``pyproject.toml`` (``build-backend``) and ``setup.py``; supported: setuptools C and C++
extensions, setuptools + Cython, setuptools-rust and maturin (PyO3). Everything else (meson-python,
scikit-build, flit, poetry-core, pdm, hatchling, ...) is refused by name, exit 2.

How a build is instrumented (see :mod:`ffi_harness.build_flags`): C/C++ with clang (ASan + UBSan +
``-fsanitize=fuzzer-no-link`` coverage), linked by clang for C++ too; Rust with ``-Zsanitizer=address``
and SanitizerCoverage passes through ``RUSTFLAGS`` and an explicit ``--target`` (build scripts and
proc-macros stay uninstrumented). The package is built into a wheel by ``pip wheel`` in a private copy of
the sources (stale ``build/`` objects from an earlier plain build are never reused), the wheel is
installed with ``--force-reinstall --no-deps`` and its dependencies afterwards, and then every installed
shared object is inspected (ELF: ASan, UBSan, coverage) and the extension modules are imported once under
:func:`ffi_harness.sanitizers.sanitizer_env` in a subprocess.

Exit codes: 0 built, installed, instrumented and importable; 2 usage error, unsupported build system,
failed build (the log's tail is printed, with the full log's path), or an installed module that is not
instrumented or does not import.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ffi_harness import build_flags, interpreter
from ffi_harness.build_detect import BuildSystem, UnsupportedBuildSystem, detect
from ffi_harness.cli import EXIT_CLEAN, UsageError
from ffi_harness.sanitizers import Instrumentation, inspect, sanitizer_env

SDIST_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".zip")
# Never copied into the private build tree: stale objects of an uninstrumented build would be reused
# (setuptools skips an extension whose output is newer than its sources), and they are large.
IGNORED_IN_COPY = ("build", "target", ".git", ".hg", ".tox", ".nox", ".venv", "venv", "__pycache__", "dist")
LOG_TAIL_LINES = 40


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", metavar="SRC", help="a source directory (with pyproject.toml or setup.py) or an sdist")
    parser.add_argument(
        "--python",
        metavar="PY",
        help="interpreter or venv directory to install into (default: the Python running ffi-harness)",
    )
    parser.add_argument(
        "--no-build-isolation",
        action="store_true",
        help="build with the target environment's own build dependencies (pip --no-build-isolation)",
    )
    parser.add_argument(
        "--keep-build-dir",
        action="store_true",
        help="keep the private build tree (unpacked sdist or copied sources, wheel, log) and print its path",
    )
    parser.add_argument(
        "--no-ubsan",
        action="store_true",
        help="C/C++: ASan and coverage only (for code that UBSan cannot build or that reports at import)",
    )
    parser.add_argument("--log", metavar="FILE", help="write the full build log here (default: a file in $TMPDIR)")
    parser.add_argument(
        "--no-import-check", action="store_true", help="skip importing the installed modules under ASan"
    )
    parser.add_argument(
        "--pip-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for `pip wheel` (repeatable), e.g. --pip-arg=--config-settings=KEY=VALUE",
    )


@dataclass
class Installed:
    """What the build put into the environment."""

    distribution: str
    version: str
    wheel: Path
    files: list[Instrumentation]
    modules: list[str]


def run(args: argparse.Namespace) -> int:
    python = resolve_python(args.python)
    src = Path(args.src).absolute()
    if not src.exists():
        raise UsageError(f"{args.src}: no such file or directory")
    if src.is_file() and not str(src).endswith(SDIST_SUFFIXES):
        raise UsageError(f"{args.src}: not a source directory nor an sdist ({', '.join(SDIST_SUFFIXES)})")

    clang = build_flags.require_clang()
    workdir = Path(tempfile.mkdtemp(prefix="ffi-harness-build-ext-"))
    log_path = Path(args.log).absolute() if args.log else Path(tempfile.gettempdir()) / f"{workdir.name}.log"
    keep = bool(args.keep_build_dir)
    try:
        project = prepare_sources(src, workdir)
        try:
            system = detect(project)
        except UnsupportedBuildSystem as e:
            raise UsageError(str(e)) from None
        env = build_flags.build_env(system, clang, ubsan=not args.no_ubsan, bindir=workdir / "bin")
        print(f"build-ext: {project.name}: {system.describe()}")
        print(f"build-ext: installing into {python}")
        for line in build_flags.describe_env(env, system):
            print(f"  {line}")
        started = time.monotonic()
        wheel = build_wheel(python, project, workdir / "wheel", env, args, log_path)
        installed = install_wheel(python, wheel, env, log_path)
        elapsed = time.monotonic() - started
        print(f"build-ext: built and installed {installed.distribution} {installed.version} in {elapsed:.1f} s")
        print(instrumentation_table(installed.files, site_root(python)))
        check_instrumentation(installed, system)
        if not args.no_import_check:
            import_check(python, installed.modules)
        print(f"build-ext: ok: {installed.distribution} {installed.version} ({system.kind}) is instrumented")
        print("build-ext: run it with: " + " ".join(f"{k}={v}" for k, v in runtime_env_hint().items()) + f" {python}")
        return EXIT_CLEAN
    except UsageError:
        keep = keep or log_path.exists()  # a failed build keeps its tree for inspection
        raise
    finally:
        if keep:
            print(f"build-ext: build tree kept at {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


# --- the environment ------------------------------------------------------------------------------


def resolve_python(arg: str | None) -> str:
    """The interpreter to install into (see interpreter.resolve_python); it must have pip."""
    found = interpreter.resolve_python(arg)
    probe = subprocess.run([found, "-m", "pip", "--version"], check=False, capture_output=True, text=True)
    if probe.returncode != 0:
        raise UsageError(f"--python {arg}: pip is not available in that environment ({found} -m pip failed)")
    return found


def site_root(python: str) -> Path | None:
    out = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['platlib'])"],
        check=False,
        capture_output=True,
        text=True,
    )
    return Path(out.stdout.strip()) if out.returncode == 0 else None


def runtime_env_hint() -> dict[str, str]:
    env = sanitizer_env({})
    return {k: env[k] for k in ("LD_PRELOAD", "PYTHONMALLOC") if k in env}


# --- sources --------------------------------------------------------------------------------------


def prepare_sources(src: Path, workdir: Path) -> Path:
    """A private, clean copy of the project under `workdir`: an sdist unpacked, or a directory copied
    without build output (``build/``, ``target/``, objects, egg-info)."""
    if src.is_file():
        unpack = workdir / "unpacked"
        try:
            shutil.unpack_archive(str(src), str(unpack))
        except (shutil.ReadError, ValueError, OSError) as e:
            raise UsageError(f"{src}: cannot unpack the sdist ({e})") from None
        entries = [p for p in unpack.iterdir() if not p.name.startswith(".")]
        return entries[0] if len(entries) == 1 and entries[0].is_dir() else unpack
    if not ((src / "pyproject.toml").is_file() or (src / "setup.py").is_file()):
        raise UsageError(f"{src}: neither pyproject.toml nor setup.py found: not a Python project")

    def ignore(directory: str, names: list[str]) -> set[str]:
        skipped = {
            n
            for n in names
            if n in IGNORED_IN_COPY or n.startswith(".venv") or n.endswith((".egg-info", ".o", ".so", ".pyd"))
        }
        return skipped

    # A crate inside a cargo workspace inherits from the workspace's Cargo.toml (`edition.workspace =
    # true`, shared dependencies) and its build script may reach sibling directories: copy the whole
    # workspace and build the project at its place inside the copy.
    root = cargo_workspace_root(src)
    top = root if root is not None else src
    dest = workdir / (top.resolve().name or "project")
    shutil.copytree(top, dest, ignore=ignore, symlinks=True)
    return dest / src.resolve().relative_to(top.resolve())


def cargo_workspace_root(src: Path) -> Path | None:
    """The nearest ancestor of a Rust project `src` whose Cargo.toml declares a [workspace], if any."""
    if not (src / "Cargo.toml").is_file():
        return None
    for parent in src.resolve().parents:
        manifest = parent / "Cargo.toml"
        if manifest.is_file() and re.search(r"^\[workspace\]", manifest.read_text(errors="replace"), re.MULTILINE):
            return parent
    return None


# --- building and installing ----------------------------------------------------------------------


def _run_logged(cmd: list[str], env: dict[str, str], cwd: Path, log_path: Path, title: str) -> int:
    with log_path.open("a") as log:
        log.write(f"\n=== {title}\n$ {' '.join(cmd)}\n")
        log.flush()
        proc = subprocess.run(cmd, check=False, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
        log.write(f"=== exit {proc.returncode}\n")
    return proc.returncode


def _fail(what: str, log_path: Path) -> UsageError:
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        lines = []
    tail = "\n".join("  | " + line for line in lines[-LOG_TAIL_LINES:])
    print(f"build-ext: {what}; last {min(len(lines), LOG_TAIL_LINES)} lines of the log:\n{tail}", file=sys.stderr)
    return UsageError(f"{what} (full log: {log_path})")


def build_wheel(
    python: str, project: Path, out: Path, env: dict[str, str], args: argparse.Namespace, log_path: Path
) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    cmd = [python, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir", "-v", "-w", str(out)]
    if args.no_build_isolation:
        cmd.append("--no-build-isolation")
    cmd += list(args.pip_arg)
    cmd.append(str(project))
    print(f"build-ext: building (log: {log_path})")
    if _run_logged(cmd, env, project, log_path, "pip wheel") != 0:
        hint = " (--no-build-isolation: the environment must already have the build requirements)"
        raise _fail("the build failed" + (hint if args.no_build_isolation else ""), log_path)
    wheels = sorted(out.glob("*.whl"))
    if len(wheels) != 1:
        raise _fail(f"expected one wheel, pip produced {len(wheels)}", log_path)
    return wheels[0]


def _dist_name_version(wheel: Path) -> tuple[str, str]:
    parts = wheel.name[: -len(".whl")].split("-")
    return parts[0], parts[1]


def install_wheel(python: str, wheel: Path, env: dict[str, str], log_path: Path) -> Installed:
    # The instrumented wheel replaces whatever was installed; its dependencies come afterwards (from the
    # index or the cache) without touching it again.
    steps = (
        ("install (the instrumented wheel)", ["install", "--force-reinstall", "--no-deps", str(wheel)]),
        ("install (its dependencies)", ["install", str(wheel)]),
    )
    for title, pip_args in steps:
        if _run_logged([python, "-m", "pip", *pip_args], env, wheel.parent, log_path, title) != 0:
            raise _fail(f"pip {title} failed", log_path)
    name, version = _dist_name_version(wheel)
    files, modules = installed_extensions(python, name)
    return Installed(name, version, wheel, [inspect(f) for f in files], modules)


_LISTING = r"""
import importlib.machinery, importlib.metadata, json, os, sys
dist = importlib.metadata.distribution(sys.argv[1])
suffixes = sorted(importlib.machinery.EXTENSION_SUFFIXES, key=len, reverse=True)
out = []
for f in dist.files or []:
    path = str(dist.locate_file(f))
    if not (path.endswith(".so") or ".so." in path):
        continue
    parts = f.parts
    name = parts[-1]
    module = None
    for s in suffixes:
        if name.endswith(s) and not any(p.endswith((".libs", ".data")) for p in parts[:-1]):
            module = ".".join([*parts[:-1], name[: -len(s)]])
            break
    out.append([os.path.realpath(path), module])
print(json.dumps(out))
"""


def installed_extensions(python: str, distribution: str) -> tuple[list[Path], list[str]]:
    """The shared objects a distribution installed, and the importable extension modules among them."""
    import json

    proc = subprocess.run([python, "-c", _LISTING, distribution], check=False, capture_output=True, text=True)
    if proc.returncode != 0:
        raise UsageError(f"cannot list the files of {distribution} in {python}: {proc.stderr.strip()[-300:]}")
    rows: list[list[str | None]] = json.loads(proc.stdout)
    files = [Path(str(r[0])) for r in rows]
    modules = [str(r[1]) for r in rows if r[1]]
    return files, modules


# --- verification ---------------------------------------------------------------------------------


def _yes(flag: bool) -> str:
    return "yes" if flag else "NO"


def instrumentation_table(files: list[Instrumentation], root: Path | None) -> str:
    rows = []
    for f in files:
        try:
            shown = str(f.path.relative_to(root)) if root else str(f.path)
        except ValueError:
            shown = str(f.path)
        rows.append((shown, _yes(f.asan), "yes" if f.ubsan else "no", _yes(f.coverage)))
    if not rows:
        return "  (no shared object installed)"
    header = ("shared object", "ASan", "UBSan", "coverage")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    lines = ["  " + "  ".join(h.ljust(w) for h, w in zip(header, widths))]
    lines.append("  " + "  ".join("-" * w for w in widths))
    lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


def check_instrumentation(installed: Installed, system: BuildSystem) -> None:
    if not installed.files:
        raise UsageError(
            f"{installed.distribution} installed no shared object: nothing native to instrument "
            f"(built as {system.describe()})"
        )
    bad = [f for f in installed.files if not (f.asan and f.coverage)]
    if bad:
        names = ", ".join(f.path.name for f in bad)
        raise UsageError(
            f"not instrumented (no ASan or no coverage): {names}; the build did not use the sanitizer flags "
            "(a hard-coded compiler or a prebuilt object in the sources?)"
        )


_IMPORT = r"""
import importlib, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
    print("imported", name)
"""


def import_check(python: str, modules: list[str]) -> None:
    if not modules:
        return
    env = sanitizer_env()
    # Run outside any source tree so the installed copy is the one imported.
    proc = subprocess.run(
        [python, "-c", _IMPORT, *modules],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        cwd=tempfile.gettempdir(),
        timeout=300,
    )
    if proc.returncode != 0:
        tail = "\n".join("  | " + line for line in (proc.stdout + proc.stderr).splitlines()[-30:])
        print(f"build-ext: import under ASan failed:\n{tail}", file=sys.stderr)
        raise UsageError(
            f"the installed modules do not import under ASan ({', '.join(modules)}), exit {proc.returncode}"
        )
    print(f"build-ext: imported under ASan (PYTHONMALLOC=malloc, LD_PRELOAD=libclang_rt.asan): {', '.join(modules)}")
