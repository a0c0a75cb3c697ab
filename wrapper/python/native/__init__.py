"""native: the reference PyO3 wrapper of libnative (see the ffi-harness README).

The extension module is `native.native` (Rust, wrapper/src); this package only re-exports it, so the
C sources can live in wrapper/native/ without maturin mistaking them for a Python package.
"""

from .native import *  # noqa: F403
from .native import __all__, __doc__, __version__  # noqa: F401
