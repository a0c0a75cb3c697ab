"""native's capsule consumer `_capsule_consumer` (pytests/bindings/capsule_consumer/), a C extension that
reaches libnative only through the function table `native` exports as a capsule. It implements a few of
native's functions (checksum, process) under the same names and parameters.

`module` is None when it is not built (build it: python pytests/bindings/capsule_consumer/build.py), with
the reason in SKIP_REASON.
"""

from __future__ import annotations

import facade

module, SKIP_REASON = facade.import_built(
    "_capsule_consumer", "capsule consumer", "python pytests/bindings/capsule_consumer/build.py"
)
