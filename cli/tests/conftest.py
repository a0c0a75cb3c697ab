"""Shared fixtures of the CLI's fuzz/repro tests: the buggy_ext fixture built instrumented (clang ASan +
UBSan + libFuzzer coverage) and plain, each into a private directory put on PYTHONPATH by the tests
(never into the shared venv)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
from buggy_build import build_fixture

# The fixture package's own tests run only through `ffi-harness test` (they need it built and installed).
collect_ignore = ["fixtures"]

VENV_BIN = Path(sys.executable).parent
CLI = shutil.which("ffi-harness", path=str(VENV_BIN)) or "ffi-harness"


@pytest.fixture(scope="session")
def buggy_asan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("clang-19") is None:
        pytest.skip("clang-19 is needed for the instrumented build")
    return build_fixture(tmp_path_factory.mktemp("buggy-asan"), instrumented=True)


@pytest.fixture(scope="session")
def buggy_plain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_fixture(tmp_path_factory.mktemp("buggy-plain"), instrumented=False)


def cli_env(site: Path | None) -> dict[str, str]:
    env = dict(os.environ)
    if site is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH")]))
    return env
