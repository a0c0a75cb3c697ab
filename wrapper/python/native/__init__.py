"""native: the reference PyO3 wrapper of libnative (see the ffi-harness README).

The extension module is the private submodule `native._native` (Rust, wrapper/src); this package only
re-exports it (`import native` is the public API), so the C sources can live in libnative/ without
maturin mistaking them for a Python package. Type checkers read __init__.pyi and _native.pyi.
"""

from ._native import *
from ._native import __all__, __doc__, __version__  # noqa: F401
