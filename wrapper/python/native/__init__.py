"""native: the reference PyO3 wrapper of libnative (see the ffi-harness README).

The extension module is the private submodule `native._native` (Rust, wrapper/src); this package only
re-exports it (`import native` is the public API), so the C sources can live in libnative/ without
maturin mistaking them for a Python package. Type checkers read __init__.pyi and _native.pyi.
"""

from ._native import *

# Besides __all__, the dunders and the private names (not in __all__): the atexit hook, the C API
# capsule and its live-table count, a test knob.
from ._native import (  # noqa: F401
    _C_API,
    __all__,
    __doc__,
    __version__,
    _capi_live_tables,
    _set_flush_delay_ms,
    _shutdown,
)
