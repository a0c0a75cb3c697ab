"""libnative through the Cython binding `_native_cython` (pytests/bindings/cython/), behind the facade's face.

`native` is None when the module is not built (build it: python pytests/bindings/cython_build.py), with the
reason in SKIP_REASON. The module imports `facade` for the shared exception classes.
"""

from __future__ import annotations

import facade

BUILD_DIR = facade.BUILD_DIR
module, SKIP_REASON = facade.import_built("_native_cython", "Cython module", "python pytests/bindings/cython_build.py")
native = facade.Compiled("cython", module) if module is not None else None
