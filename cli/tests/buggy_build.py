"""Building the buggy_ext fixture into a private directory (never into a venv): shared by the CLI tests'
fixtures (conftest.py) and cli/benches/peers.py, which fuzz the same build the same way."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "buggy_ext"


def build_fixture(dest: Path, instrumented: bool) -> Path:
    """pip-install the fixture into `dest`/site (clang ASan + UBSan + libFuzzer coverage when
    `instrumented`) and return that directory, for PYTHONPATH."""
    src = dest / "src"
    shutil.copytree(FIXTURE, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", "tests"))
    env = dict(os.environ)
    if instrumented:
        env.update(
            CC="clang-19",
            LDSHARED="clang-19 -shared",
            CFLAGS="-fsanitize=address,undefined,fuzzer-no-link -g -O1",
            LDFLAGS="-fsanitize=address,undefined",
        )
    target = dest / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-build-isolation", "--target", str(target), str(src)],
        env=env,
        check=True,
    )
    return target
