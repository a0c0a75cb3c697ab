"""Fixtures for the `native` suite: store paths, connections, the native-handle ledger, unraisable capture.

`native` is imported lazily so that pytests/bindings/ (another suite, ctypes/cffi, which shares this
directory tree) is not affected by these fixtures.
"""

from __future__ import annotations

import gc
import os
import sys

import pytest

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from _refs import ledger_snapshot, wait_until

_BINDINGS = os.path.join(_HERE, "bindings") + os.sep


def _ours(request) -> bool:
    return not str(request.node.path).startswith(_BINDINGS)


def ffi_harness_counters() -> dict[str, int]:
    """Native counters for `ffi-harness test --leaks` (its documented hook): each must not grow when a
    test is repeated. libnative's ledger, minus `calls` (monotonic by design)."""
    import native

    return {k: v for k, v in native.debug_counters().items() if k != "calls"}


@pytest.fixture(autouse=True)
def ledger(request):
    """Native handle ledger: after the test, closing everything and gc.collect(), libnative's live
    handles, subscriptions and allocator blocks must return to their values at test start.
    Polls with a deadline: teardown started from a callback finishes asynchronously."""
    if not _ours(request):
        yield None
        return
    gc.collect()
    start = ledger_snapshot()
    yield start

    def settled():
        gc.collect()
        return ledger_snapshot() == start

    if not wait_until(settled, timeout=5.0, interval=0.01):
        pytest.fail(f"native ledger leaked: at start {start}, after test {ledger_snapshot()}", pytrace=False)


@pytest.fixture
def store_path(tmp_path) -> str:
    return str(tmp_path / "store.db")


@pytest.fixture
def conn(store_path):
    import native

    c = native.connect(store_path)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def flush_delay():
    """Set libnative's flush delay for this test; always reset to 0 afterwards."""
    import native

    yield native._set_flush_delay_ms
    native._set_flush_delay_ms(0)


@pytest.fixture
def unraisable(monkeypatch):
    """Captures sys.unraisablehook calls (from any thread) as (exc_type, exc_value, err_msg, object)."""
    import threading

    seen = []
    lock = threading.Lock()

    def hook(args):
        with lock:
            seen.append((args.exc_type, args.exc_value, args.err_msg, args.object))

    monkeypatch.setattr(sys, "unraisablehook", hook)
    return seen


def pytest_configure(config: pytest.Config) -> None:
    # `ffi-harness test` registers it too; a plain `pytest pytests` run must know it as well.
    config.addinivalue_line("markers", "ffi_harness_no_repeat: not repeated by ffi-harness test --leaks")
