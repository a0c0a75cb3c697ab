"""Every binding of libnative the bindings suite tests, by name (None where one is not built, with the reason
in SKIP_REASONS). Import it only once libnative is built: the ctypes and cffi bindings load it on import."""

from __future__ import annotations

from typing import Any

import cffi_native
import ctypes_native
import cython_native

MECHANISMS: dict[str, Any] = {
    "ctypes": ctypes_native.native,
    "cffi-abi": cffi_native.abi,
    "cffi-api": cffi_native.api,
    "cython": cython_native.native,
}
SKIP_REASONS = {"cffi-api": cffi_native.API_SKIP_REASON, "cython": cython_native.SKIP_REASON}
AVAILABLE = {name: m for name, m in MECHANISMS.items() if m is not None}
