"""libnative through the Cython binding `_native_cython` (pytests/bindings/cython/), behind the facade's face.

`native` is None when the module is not built (build it: python pytests/bindings/cython_build.py), with the
reason in SKIP_REASON. The module imports `facade` for the shared exception classes.
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
        import _native_cython
    except ImportError as e:
        return None, facade.unbuilt(
            f"Cython module not importable ({e}); build it: python pytests/bindings/cython_build.py"
        )
    finally:
        sys.path.remove(str(BUILD_DIR))
    return _native_cython, None


module, SKIP_REASON = _load()
native = facade.Compiled("cython", module) if module is not None else None
