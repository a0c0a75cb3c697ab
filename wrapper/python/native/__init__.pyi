"""Type stubs for `native`: the names of its private extension `native._native`, re-exported."""

from ._native import *
from ._native import _C_API as _C_API
from ._native import __all__ as __all__
from ._native import __version__ as __version__
from ._native import _capi_live_tables as _capi_live_tables
from ._native import _set_flush_delay_ms as _set_flush_delay_ms
from ._native import _shutdown as _shutdown
