"""native's capsule consumer `_capsule_consumer` (pytests/bindings/capsule_consumer/), a C extension that
reaches libnative only through the function table `native` exports as a capsule. It implements a few of
native's functions (checksum, process) under the same names and parameters.

`load()` builds the module when it is missing or stale and imports it; tests/test_capsule.py uses the same
`load()`, so the two never hold different builds. `module` is None when it cannot be built here (no C
compiler), with the reason in SKIP_REASON.
"""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path
from types import ModuleType

import facade

BUILD_SCRIPT = Path(__file__).resolve().parent / "capsule_consumer" / "build.py"


def load() -> ModuleType:
    """The consumer module, built first if missing or older than its sources."""
    spec = importlib.util.spec_from_file_location("capsule_consumer_build", BUILD_SCRIPT)
    assert spec is not None and spec.loader is not None
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    return build.load()


module: ModuleType | None
SKIP_REASON: str | None
try:
    module, SKIP_REASON = load(), None
except (OSError, subprocess.CalledProcessError, ImportError) as e:
    module, SKIP_REASON = None, facade.unbuilt(f"capsule consumer not buildable here ({e}); python {BUILD_SCRIPT}")
