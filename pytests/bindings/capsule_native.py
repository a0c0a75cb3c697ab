"""native's capsule consumer `_capsule_consumer` (pytests/bindings/capsule_consumer/), a C extension that
reaches libnative only through the function table `native` exports as a capsule. It implements a few of
native's functions (checksum, process) under the same names and parameters.

`module` is None when it is not built (build it: python pytests/bindings/capsule_consumer/build.py), with
the reason in SKIP_REASON.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType

import facade

BUILD_DIR = Path(__file__).resolve().parent / "build"


def _load() -> tuple[ModuleType | None, str | None]:
    sys.path.insert(0, str(BUILD_DIR))
    try:
        import _capsule_consumer
    except ImportError as e:
        return None, facade.unbuilt(
            f"capsule consumer not importable ({e}); build it: python pytests/bindings/capsule_consumer/build.py"
        )
    finally:
        sys.path.remove(str(BUILD_DIR))
    return _capsule_consumer, None


module, SKIP_REASON = _load()
