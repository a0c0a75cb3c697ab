"""What an extension was built with, and the environment its sanitizers need at run time.

Shared by every subcommand: `build-ext` builds with clang's ASan/UBSan/coverage, `fuzz`, `repro` and
`test --asan` run an *uninstrumented* CPython, so clang's ASan runtime must be preloaded (first in the
library list), and every Python object must be a malloc block (`PYTHONMALLOC=malloc`) for an
over-decref to be an ASan heap-use-after-free rather than silent pymalloc reuse.

Inspection reads the ELF file itself (no import: importing an ASan-built extension into a process
without the runtime fails, and importing a buggy one may crash).
"""

from __future__ import annotations

import os
import platform
import shutil
import struct
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

CLANG_CANDIDATES = ("clang-19", "clang-20", "clang-18", "clang")

# The runtime's own defaults for a Python process: the interpreter's arenas look leaked at exit,
# sanitizer reports must abort (a finding), never continue with corrupted state, and freed blocks are
# filled with 0x55 (first 4 KiB), so a use after free by uninstrumented code (libc, the interpreter)
# sees garbage instead of the old bytes.
ASAN_OPTIONS = (
    "detect_leaks=0:abort_on_error=1:allocator_may_return_null=1:handle_abort=1:detect_odr_violation=0:symbolize=1"
    ":max_free_fill_size=4096"
)
UBSAN_OPTIONS = "print_stacktrace=1:halt_on_error=1"


@dataclass(frozen=True)
class Instrumentation:
    """Sanitizers and coverage found in one shared object."""

    path: Path
    asan: bool
    ubsan: bool
    coverage: bool  # SanitizerCoverage inline 8-bit counters (libFuzzer guidance)

    @property
    def any(self) -> bool:
        return self.asan or self.ubsan or self.coverage


def find_clang() -> str | None:
    """$FFI_HARNESS_CLANG, else the first clang on PATH (newest first)."""
    explicit = os.environ.get("FFI_HARNESS_CLANG")
    if explicit:
        return explicit
    for name in CLANG_CANDIDATES:
        if shutil.which(name):
            return name
    return None


@cache
def asan_runtime(clang: str | None = None) -> Path | None:
    """clang's shared ASan runtime (libclang_rt.asan-<arch>.so), or None if there is none."""
    clang = clang or find_clang()
    if clang is None:
        return None
    name = f"libclang_rt.asan-{platform.machine()}.so"
    try:
        out = subprocess.run([clang, f"-print-file-name={name}"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    path = Path(out.stdout.strip())
    return path if path.is_file() else None


def symbolizer(clang: str | None = None) -> str | None:
    """llvm-symbolizer matching clang's version, for readable ASan stacks."""
    clang = clang or find_clang() or ""
    suffix = clang[len("clang") :] if clang.startswith("clang") else ""
    for name in (f"llvm-symbolizer{suffix}", "llvm-symbolizer"):
        found = shutil.which(name)
        if found:
            return found
    return None


def sanitizer_env(base: Mapping[str, str] | None = None, *, asan: bool = True) -> dict[str, str]:
    """`base` (default: os.environ) plus what an ASan-instrumented extension needs in plain CPython."""
    env = dict(os.environ if base is None else base)
    env["PYTHONMALLOC"] = "malloc"
    env.setdefault("UBSAN_OPTIONS", UBSAN_OPTIONS)
    if asan:
        runtime = asan_runtime()
        if runtime is None:
            raise FileNotFoundError(
                "clang's ASan runtime was not found (apt-get install clang-19 libclang-rt-19-dev, "
                "or set FFI_HARNESS_CLANG)"
            )
        preload = [p for p in env.get("LD_PRELOAD", "").split(":") if p and p != str(runtime)]
        env["LD_PRELOAD"] = ":".join([str(runtime), *preload])  # ASan must come first
        env.setdefault("ASAN_OPTIONS", ASAN_OPTIONS)
        sym = symbolizer()
        if sym:
            env.setdefault("ASAN_SYMBOLIZER_PATH", sym)
    return env


def env_header(
    env: Mapping[str, str], keys: Iterable[str] = ("LD_PRELOAD", "PYTHONMALLOC", "ASAN_OPTIONS", "UBSAN_OPTIONS")
) -> str:
    """The `KEY=value ...` prefix of a shell command that recreates the sanitizer conditions."""
    return " ".join(f"{k}={env[k]}" for k in keys if env.get(k))


# --- ELF inspection -------------------------------------------------------------------------------


def inspect(path: str | os.PathLike[str]) -> Instrumentation:
    """Which sanitizers and coverage a shared object was compiled with (ELF64 little-endian only)."""
    p = Path(path)
    data = p.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return Instrumentation(p, False, False, False)
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    sections = []
    for i in range(shnum):
        off = shoff + i * shentsize
        name, kind, _flags, _addr, offset, size, link = struct.unpack_from("<IIQQQQI", data, off)
        sections.append((name, kind, offset, size, link))
    if not sections:
        return Instrumentation(p, False, False, False)
    strtab = sections[shstrndx]

    def sec_name(idx: int) -> str:
        start = strtab[2] + idx
        return data[start : data.index(b"\0", start)].decode(errors="replace")

    names = {sec_name(s[0]) for s in sections}
    symbols: set[str] = set()
    for _name, kind, offset, size, link in sections:
        if kind not in (2, 11):  # SHT_SYMTAB, SHT_DYNSYM
            continue
        str_off = sections[link][2]
        for j in range(size // 24):
            (st_name,) = struct.unpack_from("<I", data, offset + j * 24)
            if st_name:
                start = str_off + st_name
                symbols.add(data[start : data.index(b"\0", start)].decode(errors="replace"))
    asan = any(s.startswith("__asan_") for s in symbols)
    ubsan = any(s.startswith("__ubsan_handle_") for s in symbols)
    coverage = "__sancov_cntrs" in names
    return Instrumentation(p, asan, ubsan, coverage)


def extension_files(module: str, python: str) -> list[Path]:
    """Every shared object of `module` (its package directory, recursively), found without importing it."""
    code = (
        "import importlib.util, sys\n"
        "spec = importlib.util.find_spec(sys.argv[1].split('.')[0])\n"
        "if spec is None: raise SystemExit(3)\n"
        "print('\\n'.join(spec.submodule_search_locations or [spec.origin or '']))\n"
    )
    out = subprocess.run([python, "-c", code, module], check=False, capture_output=True, text=True)
    if out.returncode != 0:
        return []
    files: list[Path] = []
    for loc in filter(None, out.stdout.splitlines()):
        base = Path(loc)
        if base.is_dir():
            files.extend(sorted(base.rglob("*.so")))
            # maturin/auditwheel keep bundled libraries beside the package, e.g. pkg.libs/
            sibling = base.parent / f"{base.name}.libs"
            if sibling.is_dir():
                files.extend(sorted(sibling.glob("*.so*")))
        elif base.suffix == ".so":
            files.append(base)
    return files


def inspect_module(module: str, python: str) -> list[Instrumentation]:
    """Instrumentation of each shared object of `module` (an empty list for a pure-Python module)."""
    return [inspect(f) for f in extension_files(module, python)]
