"""Type stubs for `native`: the names of its private extension `native._native`, re-exported."""

from ._native import *
from ._native import __all__ as __all__
from ._native import __version__ as __version__
