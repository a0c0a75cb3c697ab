"""Which build system a Python project uses, and which native languages it compiles (for `build-ext`).

Read from ``pyproject.toml``'s ``[build-system]`` (``build-backend``, ``requires``, an in-tree
``backend-path`` wrapper), ``setup.py``/``setup.cfg`` and the source files present. Nothing is executed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SUPPORTED = "setuptools (C, C++, Cython), setuptools-rust and maturin (PyO3)"

# build-backend (module part) -> the name of the tool a user knows, for backends build-ext refuses.
UNSUPPORTED_BACKENDS: dict[str, str] = {
    "mesonpy": "meson-python",
    "scikit_build_core.build": "scikit-build-core (CMake)",
    "scikit_build_core.setuptools.build_meta": "scikit-build-core (CMake)",
    "flit_core.buildapi": "flit",
    "flit.buildapi": "flit",
    "poetry.core.masonry.api": "poetry-core",
    "poetry.masonry.api": "poetry",
    "pdm.backend": "pdm-backend",
    "pdm.pep517.api": "pdm-pep517",
    "hatchling.build": "hatchling",
    "sipbuild.api": "sip",
    "enscons.api": "enscons",
    "pymsbuild": "pymsbuild",
    "whey": "whey",
    "py_build_cmake.build": "py-build-cmake",
    "mesonpep517.buildapi": "mesonpep517",
    "cmeel.build": "cmeel (CMake)",
    "uv_build": "uv_build",
}

C_SUFFIXES = (".c",)
CXX_SUFFIXES = (".cpp", ".cc", ".cxx", ".c++", ".C")
SKIPPED_DIRS = {".git", "build", "target", "docs", "doc", "tests", "test", "benchmarks", "examples", ".tox", "venv"}


class UnsupportedBuildSystem(Exception):
    """The project uses a build system build-ext cannot instrument; the message names it."""


@dataclass
class BuildSystem:
    backend: str  # the build-backend string, or "setuptools (setup.py)" for a legacy project
    tool: str  # "setuptools", "setuptools-rust" or "maturin"
    languages: list[str] = field(default_factory=list)  # subset of c, c++, cython, rust

    @property
    def kind(self) -> str:
        """One word for tables: c, c++, cython, pyo3 (maturin), setuptools-rust."""
        if self.tool == "maturin":
            return "pyo3 (maturin)"
        if self.tool == "setuptools-rust":
            return "rust (setuptools-rust)"
        if "cython" in self.languages:
            return "cython"
        if "c++" in self.languages:
            return "c++"
        return "c"

    @property
    def rust(self) -> bool:
        return "rust" in self.languages

    def describe(self) -> str:
        langs = ", ".join(self.languages) or "no native sources seen"
        return f"{self.tool} via {self.backend} [{langs}]"


def _load_toml(path: Path) -> dict[str, Any]:
    text = path.read_text(errors="replace")
    try:
        import tomllib  # type: ignore[import-not-found,unused-ignore]

        return dict(tomllib.loads(text))
    except ImportError:
        pass
    except ValueError as e:  # tomllib.TOMLDecodeError: the project's problem, said plainly
        raise UnsupportedBuildSystem(f"{path}: cannot parse ({e})") from None
    try:
        import tomli  # type: ignore[import-not-found,unused-ignore]

        return dict(tomli.loads(text))
    except ImportError:
        pass
    # Python < 3.11 without tomli: the two keys we need, read with a pattern.
    section = re.search(r"^\[build-system\](.*?)(?=^\[|\Z)", text, re.DOTALL | re.MULTILINE)
    result: dict[str, Any] = {}
    if section:
        body = section.group(1)
        bs: dict[str, Any] = {}
        m = re.search(r"^build-backend\s*=\s*[\"']([^\"']+)[\"']", body, re.MULTILINE)
        if m:
            bs["build-backend"] = m.group(1)
        m = re.search(r"^requires\s*=\s*\[(.*?)\]", body, re.DOTALL | re.MULTILINE)
        if m:
            bs["requires"] = re.findall(r"[\"']([^\"']+)[\"']", m.group(1))
        m = re.search(r"^backend-path\s*=\s*\[(.*?)\]", body, re.DOTALL | re.MULTILINE)
        if m:
            bs["backend-path"] = re.findall(r"[\"']([^\"']+)[\"']", m.group(1))
        result["build-system"] = bs
    if re.search(r"^\[tool\.maturin\]", text, re.MULTILINE):
        result.setdefault("tool", {})["maturin"] = {}
    return result


def _requirement_names(requires: list[str]) -> set[str]:
    names = set()
    for r in requires:
        m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", r)
        if m:
            names.add(m.group(1).lower().replace("_", "-"))
    return names


def _source_files(root: Path, limit: int = 20000) -> list[Path]:
    found: list[Path] = []
    stack = [root]
    while stack and len(found) < limit:
        d = stack.pop()
        try:
            entries = list(d.iterdir())
        except OSError:
            continue
        for e in entries:
            if e.is_dir():
                if e.name not in SKIPPED_DIRS and not e.name.startswith("."):
                    stack.append(e)
            else:
                found.append(e)
    return found


def _in_tree_backend_text(root: Path, backend: str, paths: list[str]) -> str:
    module = backend.split(":")[0]
    rel = Path(*module.split("."))
    texts = []
    for base in paths:
        for cand in (root / base / rel.with_suffix(".py"), root / base / rel):
            if cand.is_file():
                texts.append(cand.read_text(errors="replace"))
            elif cand.is_dir():
                texts += [p.read_text(errors="replace") for p in sorted(cand.glob("*.py"))]
    return "\n".join(texts)


def detect(root: Path) -> BuildSystem:
    """The build system of the project at `root`; UnsupportedBuildSystem names anything else."""
    pyproject = root / "pyproject.toml"
    setup_py = root / "setup.py"
    setup_cfg = root / "setup.cfg"
    data = _load_toml(pyproject) if pyproject.is_file() else {}
    bs = data.get("build-system", {}) if isinstance(data.get("build-system"), dict) else {}
    backend = str(bs.get("build-backend") or "")
    requires = _requirement_names([str(r) for r in bs.get("requires", []) or []])
    setup_text = setup_py.read_text(errors="replace") if setup_py.is_file() else ""
    setup_text += "\n" + (setup_cfg.read_text(errors="replace") if setup_cfg.is_file() else "")

    module = backend.split(":")[0]
    if module in UNSUPPORTED_BACKENDS:
        raise UnsupportedBuildSystem(
            f"unsupported build system: {UNSUPPORTED_BACKENDS[module]} (build-backend = {backend!r}); "
            f"build-ext handles {SUPPORTED}"
        )
    if not backend:
        if not setup_py.is_file():
            raise UnsupportedBuildSystem(
                f"{root}: no build-backend in pyproject.toml and no setup.py: cannot tell how to build it"
            )
        backend = "setuptools.build_meta:__legacy__ (setup.py)"
        module = "setuptools.build_meta"
    if (
        re.search(r"^\s*(from\s+skbuild\s+import|import\s+skbuild)", setup_text, re.MULTILINE)
        or "scikit-build" in requires
    ):
        raise UnsupportedBuildSystem(
            f"unsupported build system: scikit-build (CMake) via {backend}; build-ext handles {SUPPORTED}"
        )

    tool: str | None = None
    if module == "maturin" or module.startswith("maturin."):
        tool = "maturin"
    elif module.startswith("setuptools"):
        tool = "setuptools"
    else:
        # An in-tree wrapper (backend-path): judge by what it wraps.
        wrapped = _in_tree_backend_text(root, backend, [str(p) for p in bs.get("backend-path", []) or []])
        if "maturin" in wrapped:
            tool = "maturin"
        elif "setuptools" in wrapped:
            tool = "setuptools"
        else:
            raise UnsupportedBuildSystem(
                f"unsupported build system: build-backend = {backend!r} (not one of {SUPPORTED})"
            )
        backend = f"{backend} (in-tree wrapper of {tool})"

    files = _source_files(root)
    suffixes = {f.suffix for f in files}
    languages: list[str] = []
    if tool == "maturin":
        languages.append("rust")
        if ".c" in suffixes or any(s in suffixes for s in CXX_SUFFIXES):
            languages.append("c")  # a crate with a cc build script
        return BuildSystem(backend, tool, languages)

    if "setuptools-rust" in requires or re.search(r"\bRustExtension\b|setuptools_rust", setup_text):
        tool = "setuptools-rust"
        languages.append("rust")
    if ".c" in suffixes:
        languages.append("c")
    if any(s in suffixes for s in CXX_SUFFIXES) or re.search(r"language\s*=\s*[\"']c\+\+", setup_text):
        languages.append("c++")
    if (
        ".pyx" in suffixes
        or "cython" in requires
        or re.search(
            r"\bcythonize\b|Cython",
            setup_text
            + _in_tree_backend_text(root, backend.split(" ")[0], [str(p) for p in bs.get("backend-path", []) or []]),
        )
    ):
        languages.append("cython")
    if not languages:
        raise UnsupportedBuildSystem(
            f"{root.name}: {tool} project with no C, C++, Cython or Rust sources: nothing native to instrument"
        )
    return BuildSystem(backend, tool, languages)
