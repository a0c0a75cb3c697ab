"""`ffi-harness build-ext`: the fixture built instrumented into a fresh venv, and the refusals.

The build test creates one venv (from the interpreter running the tests) and builds
``fixtures/buggy_ext`` into it, with build isolation (setuptools comes from pip's cache or the index);
about 10 s. The refusals need neither a venv nor a compiler run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import venv
from pathlib import Path

import pytest
from ffi_harness import build_detect, build_flags
from ffi_harness.cli import main
from ffi_harness.sanitizers import inspect_module, sanitizer_env

FIXTURE = Path(__file__).parent / "fixtures" / "buggy_ext"


def write_project(root: Path, pyproject: str, files: dict[str, str] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text(pyproject)
    for name, text in (files or {}).items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def run_cli(*argv: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["build-ext", *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def fixture_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("venv")
    venv.EnvBuilder(with_pip=True, symlinks=True).create(root)
    return root


def test_builds_the_fixture_instrumented_into_a_venv(
    fixture_venv: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    log = tmp_path / "build.log"
    code, out, err = run_cli(str(FIXTURE), "--python", str(fixture_venv), "--log", str(log), capsys=capsys)
    assert code == 0, out + err
    assert "setuptools" in out and "[c]" in out
    assert "buggy.cpython-" in out  # the instrumentation table lists the installed .so
    assert "imported under ASan" in out
    assert log.is_file() and "clang" in log.read_text()

    python = str(fixture_venv / "bin" / "python")
    found = inspect_module("buggy", python)
    assert len(found) == 1
    assert found[0].asan and found[0].coverage and found[0].ubsan, found[0]
    # The env vars won over sysconfig's gcc: the extension is linked by clang, never against gcc's libasan.
    needed = subprocess.run(["readelf", "-d", str(found[0].path)], check=False, capture_output=True, text=True).stdout
    assert "libasan" not in needed
    # The project's build/ directory (an earlier plain build) was not reused: the .so has debug info.
    sections = subprocess.run(["readelf", "-S", str(found[0].path)], check=False, capture_output=True, text=True).stdout
    assert ".debug_info" in sections

    # It loads and runs under the sanitizer conditions, and ASan really watches it: the fixture's
    # out-of-bounds read (table_get(16), one past its 16 entries) is reported.
    env = sanitizer_env()
    ok = subprocess.run([python, "-c", "import buggy; assert buggy.add(2, 3) == 5"], check=False, env=env, cwd=tmp_path)
    assert ok.returncode == 0
    bad = subprocess.run(
        [python, "-c", "import buggy; buggy.table_get(16)"],
        check=False,
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert bad.returncode != 0
    assert "AddressSanitizer" in bad.stderr


def test_builds_an_sdist(fixture_venv: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    sdist = tmp_path / "buggy_ext-0.1.0.tar.gz"
    with tarfile.open(sdist, "w:gz") as tar:
        for name in ("setup.py", "pyproject.toml", "buggy.c"):
            tar.add(FIXTURE / name, arcname=f"buggy_ext-0.1.0/{name}")
    code, out, err = run_cli(str(sdist), "--python", str(fixture_venv / "bin" / "python"), capsys=capsys)
    assert code == 0, out + err
    assert "buggy_ext-0.1.0" in out


@pytest.mark.parametrize(
    ("backend", "named"),
    [
        ("mesonpy", "meson-python"),
        ("scikit_build_core.build", "scikit-build-core"),
        ("flit_core.buildapi", "flit"),
        ("poetry.core.masonry.api", "poetry-core"),
        ("pdm.backend", "pdm"),
        ("hatchling.build", "hatchling"),
    ],
)
def test_an_unsupported_build_system_is_refused_by_name(
    backend: str, named: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = write_project(tmp_path / "proj", f'[build-system]\nrequires = ["x"]\nbuild-backend = "{backend}"\n')
    code, _, err = run_cli(str(project), capsys=capsys)
    assert code == 2
    assert named in err and "unsupported build system" in err
    assert len(err.strip().splitlines()) == 1, err


def test_an_unknown_backend_is_refused_by_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    project = write_project(tmp_path / "proj", '[build-system]\nbuild-backend = "mybuild.api"\n')
    code, _, err = run_cli(str(project), capsys=capsys)
    assert code == 2 and "mybuild.api" in err


def test_a_nonexistent_src_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(str(tmp_path / "missing"), capsys=capsys)
    assert code == 2
    assert "no such file or directory" in err


def test_a_directory_that_is_not_a_project_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(str(tmp_path), capsys=capsys)
    assert code == 2 and "not a Python project" in err


def test_a_failed_build_exits_2_with_the_log_tail_and_its_path(
    fixture_venv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = write_project(
        tmp_path / "broken",
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "broken"\nversion = "0"\n',
        {
            "setup.py": 'from setuptools import Extension, setup\nsetup(ext_modules=[Extension("broken", ["broken.c"])])\n',
            "broken.c": "#error this extension does not compile\n",
        },
    )
    log = tmp_path / "broken.log"
    code, _, err = run_cli(str(project), "--python", str(fixture_venv), "--log", str(log), capsys=capsys)
    assert code == 2
    assert "this extension does not compile" in err  # the tail of the log
    assert str(log) in err


def test_detects_each_supported_kind(tmp_path: Path) -> None:
    setuptools = '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
    c = write_project(tmp_path / "c", setuptools, {"m.c": ""})
    assert build_detect.detect(c).kind == "c"
    cxx = write_project(tmp_path / "cxx", setuptools, {"src/m.cpp": ""})
    assert build_detect.detect(cxx).kind == "c++"
    cy = write_project(tmp_path / "cy", setuptools.replace('"setuptools"', '"setuptools", "Cython>=3"'), {"m.pyx": ""})
    assert build_detect.detect(cy).kind == "cython"
    rs = write_project(tmp_path / "rs", '[build-system]\nrequires = ["maturin>=1"]\nbuild-backend = "maturin"\n')
    system = build_detect.detect(rs)
    assert system.kind == "pyo3 (maturin)" and system.rust
    srs = write_project(
        tmp_path / "srs",
        setuptools.replace('"setuptools"', '"setuptools", "setuptools-rust"'),
        {"setup.py": "from setuptools_rust import RustExtension\n"},
    )
    assert build_detect.detect(srs).tool == "setuptools-rust"
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "setup.py").write_text("from setuptools import setup\n")
    (legacy / "m.c").write_text("")
    assert build_detect.detect(legacy).tool == "setuptools"
    pure = write_project(tmp_path / "pure", setuptools, {"pkg/__init__.py": ""})
    with pytest.raises(build_detect.UnsupportedBuildSystem, match="nothing native"):
        build_detect.detect(pure)


def test_rust_env_targets_explicitly_and_instruments(tmp_path: Path) -> None:
    system = build_detect.BuildSystem("maturin", "maturin", ["rust"])
    env = build_flags.build_env(system, "clang-19", base={"PATH": os.environ.get("PATH", "")}, bindir=tmp_path)
    assert env["RUSTC_BOOTSTRAP"] == "1"
    assert "-Zsanitizer=address" in env["RUSTFLAGS"] and "sanitizer-coverage-inline-8bit-counters" in env["RUSTFLAGS"]
    assert "--target x86_64-unknown-linux-gnu" in env["MATURIN_PEP517_ARGS"]
    assert env["CARGO_BUILD_TARGET"] == "x86_64-unknown-linux-gnu"
    assert "-fsanitize=address" in env["CFLAGS_x86_64_unknown_linux_gnu"]


def test_c_env_links_with_clang_for_cxx_too(tmp_path: Path) -> None:
    system = build_detect.BuildSystem("setuptools.build_meta", "setuptools", ["c", "c++"])
    env = build_flags.build_env(system, "clang-19", base={}, bindir=tmp_path)
    # Wrappers named like the compilers (they drop the project's strip flags), around clang and clang++.
    assert env["CC"] == str(tmp_path / "clang-19") and env["CXX"] == str(tmp_path / "clang++-19")
    assert env["LDSHARED"] == f"{env['CC']} -shared" and env["LDCXXSHARED"] == f"{env['CXX']} -shared"
    assert "clang++-19" in Path(env["CXX"]).read_text() and "--strip-all" in Path(env["CXX"]).read_text()
    for key in ("CFLAGS", "CXXFLAGS", "LDFLAGS"):
        assert "-fsanitize=address" in env[key] and "-fsanitize=fuzzer-no-link" in env[key]


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))
