"""Type stubs for `native._native`, the extension of `native` (the reference PyO3 wrapper of libnative)."""

import builtins
import enum
import os
from collections.abc import Callable, Iterator, Mapping
from types import TracebackType
from typing import Any, Literal, final

from typing_extensions import Buffer, Self

__version__: str
# The runtime builds __all__ from the module's public names; listed here so `from ._native import *` in
# native/__init__.py re-exports the same names for type checkers (stubtest compares the two).
__all__ = [
    "Connection",
    "ConnectionError",
    "Error",
    "Event",
    "EventKind",
    "InvalidStateError",
    "ItemsIter",
    "Options",
    "ProtocolError",
    "Stats",
    "Subscription",
    "TimeoutError",
    "add",
    "add_fast",
    "checksum",
    "connect",
    "debug_counters",
    "process",
]

# ---- exceptions: every native error keeps op, code (NATIVE_* name), errno (or None) and message ----
class Error(Exception):
    op: str | None
    code: str | None
    message: str | None

class ConnectionError(Error, OSError): ...  # errno, strerror, filename set
class TimeoutError(Error, builtins.TimeoutError): ...
class ProtocolError(Error): ...
class InvalidStateError(Error): ...

# ---- plain functions ----
def add(a: int, b: int) -> int:
    """C long addition; OverflowError if an argument or the result does not fit in a C long."""

def add_fast(a: int, b: int, /) -> int:
    """Same contract as `add`, through a METH_FASTCALL entry point (benchmark hot path)."""

def checksum(data: Buffer) -> int:
    """64-bit FNV-1a of any C-contiguous bytes-like object; zero copy; GIL released for large inputs."""

def process(data: Buffer, *, key: int = 0, rounds: int = 1) -> None:
    """Transform a writable C-contiguous buffer in place; interruptible by signals (KeyboardInterrupt)."""

def connect(
    path: str | os.PathLike[str] | bytes | os.PathLike[bytes],
    *,
    options: Options | Mapping[str, Any] | None = None,
    timeout: float | None = None,
) -> Connection: ...
def debug_counters() -> dict[str, int]:
    """libnative's live_handles, live_subscriptions, live_blocks and calls (process-wide)."""

def _set_flush_delay_ms(ms: int) -> None:
    """Test knob: make every flush, and every write of a sync=True connection, sleep `ms` before fsync."""

def _shutdown() -> None:
    """atexit hook: cancel every subscription before the interpreter finalizes."""

# The versioned C API for other extension modules (a PyCapsule named "native._C_API").
_C_API: object

def _capi_live_tables() -> int:
    """Number of live C API tables (capsules not yet destroyed): normally 1."""

# ---- structs ----
@final
class Options:
    create: bool
    sync: bool
    max_key_size: int
    max_value_size: int
    file_mode: int
    def __new__(
        cls,
        *,
        create: bool = True,
        sync: bool = False,
        max_key_size: int = 1024,
        max_value_size: int = 1048576,
        file_mode: int = 0o644,
    ) -> Self: ...
    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> Options: ...
    def to_dict(self) -> dict[str, Any]: ...
    def __eq__(self, value: object, /) -> bool: ...

@final
class Stats:
    keys: int
    puts: int
    gets: int
    deletes: int
    file_bytes: int
    events_delivered: int
    events_dropped: int
    events_pending: int
    subscriptions: int
    generation: int
    def to_dict(self) -> dict[str, int]: ...
    def __eq__(self, value: object, /) -> bool: ...
    def __hash__(self) -> int: ...

@final
class EventKind(enum.Enum):
    PUT = 1
    DELETE = 2

@final
class Event:
    kind: EventKind
    seq: int
    key: bytes
    value: bytes | None

@final
class Subscription:
    @property
    def active(self) -> bool: ...
    def cancel(self) -> None: ...
    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]: ...

@final
class ItemsIter(Iterator[Any]):
    def __next__(self) -> Any: ...

@final
class Connection:
    @property
    def closed(self) -> bool: ...
    @property
    def path(self) -> str: ...
    def close(self) -> None: ...
    def put(self, key: Buffer, value: Buffer) -> None: ...
    def get(self, key: Buffer) -> bytes: ...
    def delete(self, key: Buffer) -> None: ...
    def __len__(self) -> int: ...
    def __contains__(self, key: Buffer, /) -> bool: ...
    def __getitem__(self, key: Buffer, /) -> bytes: ...
    def __setitem__(self, key: Buffer, value: Buffer, /) -> None: ...
    def __delitem__(self, key: Buffer, /) -> None: ...
    def items(self) -> Iterator[tuple[bytes, bytes]]: ...
    def keys(self) -> Iterator[bytes]: ...
    def __iter__(self) -> Iterator[bytes]: ...
    def flush(self) -> None: ...
    def stats(self) -> Stats: ...
    def subscribe(self, callback: Callable[[Event], object]) -> Subscription: ...
    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]: ...
