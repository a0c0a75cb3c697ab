"""Regression tests for the review of the reference wrapper (issue 16), one section per defect class:

1. no Python runs while a wrapper mutex is held (a GC callback re-entering the connection deadlocked);
2. after ``cancel()``/``close()`` returns, the callback is never called again, also while a close is
   deferred because another thread holds the handle (flush);
3. ``sync=True`` writes fsync with the GIL released;
4. keys stored under a larger ``max_key_size`` stay reachable from a connection with a smaller one;
5. (found later by the callbacks fuzz target) ``close()`` inside a callback racing ``cancel()`` of the
   same subscription on another thread does not deadlock.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator

import native
import pytest
from _refs import Ticker, wait_until

# ---- 1. Python never runs under a wrapper lock ----------------------------------------------------

# Each case closes (or half-closes) a connection, then makes a call that fails with InvalidStateError
# while a gc callback re-enters the same connection. gc.set_threshold(1) makes every GC-tracked
# allocation (the exception instance, its argument tuple) run a collection, and with it the callback.
# A deadlock is the failure, so each case runs in a subprocess with a timeout.
_REENTER = textwrap.dedent(
    """
    import gc, sys, threading, time
    import native

    op, touch, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    conn = native.connect(sys.argv[4])
    sub = conn.subscribe(lambda ev: None)
    conn.close()

    def touch_conn():
        if touch == "closed":
            conn.closed
        elif touch == "active":
            sub.active
        elif touch == "cancel":
            sub.cancel()  # locks the subscription map first
        else:
            repr(sub)

    if mode == "same-thread":
        # The callback re-enters the connection on the thread that holds the lock.
        def callback(phase, info):
            touch_conn()
    else:
        # The callback lets another thread run; that thread touches the connection while holding the
        # GIL, so it must never block on a lock whose owner waits for the GIL.
        stop = threading.Event()
        def spin():
            while not stop.is_set():
                touch_conn()
        other = threading.Thread(target=spin, daemon=True)
        other.start()
        def callback(phase, info):
            time.sleep(0)

    calls = {
        "put": lambda: conn.put(b"k", b"v"),
        "get": lambda: conn.get(b"k"),
        "delete": lambda: conn.delete(b"k"),
        "len": lambda: len(conn),
        "stats": lambda: conn.stats(),
        "items": lambda: conn.items(),
        "flush": lambda: conn.flush(),
        "subscribe": lambda: conn.subscribe(lambda ev: None),
    }
    gc.callbacks.append(callback)
    gc.set_threshold(1)
    try:
        # Other-thread mode switches threads on every collection: fewer rounds already hang on the bug.
        for _ in range(300 if mode == "same-thread" else 60):
            try:
                calls[op]()
            except native.InvalidStateError:
                pass
            else:
                raise SystemExit(f"{op} on a closed connection did not raise InvalidStateError")
    finally:
        gc.callbacks.remove(callback)
        gc.set_threshold(700)
    if mode != "same-thread":
        stop.set()
        other.join()
    print("ok")
    """
)

_OPS = ["put", "get", "delete", "len", "stats", "items", "flush", "subscribe"]


@pytest.mark.ffi_harness_no_repeat  # a child per case; nothing of this process to measure
@pytest.mark.parametrize("mode", ["same-thread", "other-thread"])
@pytest.mark.parametrize("op", _OPS)
def test_invalid_state_error_is_built_after_the_state_lock_is_released(op, mode, tmp_path):
    _run_reentry(op, "closed", mode, tmp_path)


@pytest.mark.ffi_harness_no_repeat  # a child per case; nothing of this process to measure
@pytest.mark.parametrize("touch", ["cancel", "active", "repr"])
def test_subscribe_on_closed_connection_builds_the_error_after_the_subscription_lock(touch, tmp_path):
    _run_reentry("subscribe", touch, "same-thread", tmp_path)


def _run_reentry(op: str, touch: str, mode: str, tmp_path) -> None:
    script = tmp_path / "reenter.py"
    script.write_text(_REENTER)
    try:
        proc = subprocess.run(
            [sys.executable, str(script), op, touch, mode, str(tmp_path / "s.db")],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{op} ({mode}, gc callback touching .{touch}): deadlock, the process hung for 20 s")
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stdout + proc.stderr


# ---- 2. no callback after cancel()/close() returned, during a deferred close ----------------------


class _DeferredClose:
    """A connection whose close is requested from a callback while another thread holds a pin
    (a slow flush), with a queue of pending events behind it."""

    def __init__(self, path: str, flush_delay) -> None:
        self.conn = native.connect(path)
        self.closed_in_callback = threading.Event()
        self.victim_calls: list[tuple[int, bool]] = []  # (seq, close() had returned before the call)
        flush_delay(1500)
        self.flusher = threading.Thread(target=self._flush)
        self.flusher.start()
        time.sleep(0.2)  # the flush holds its pin from now on, for 1.5 s

    def _flush(self) -> None:
        try:
            self.conn.flush()
        except native.InvalidStateError:
            pass

    def closer(self, ev: native.Event) -> None:
        if ev.seq == 1:
            self.conn.close()
            self.closed_in_callback.set()

    def victim(self, ev: native.Event) -> None:
        self.victim_calls.append((ev.seq, self.closed_in_callback.is_set()))
        time.sleep(0.02)  # keeps events queued behind this one

    def put_events(self, n: int) -> None:
        for i in range(n):
            try:
                self.conn.put(b"k%d" % i, b"v")
            except native.InvalidStateError:
                break  # the close came in between: no more events

    def finish(self) -> None:
        self.flusher.join(10)
        assert not self.flusher.is_alive()


@pytest.fixture
def deferred(store_path, flush_delay) -> Iterator[_DeferredClose]:
    d = _DeferredClose(store_path, flush_delay)
    try:
        yield d
    finally:
        d.finish()
        d.conn.close()


def test_no_callback_after_close_returned_inside_a_callback_while_a_flush_is_pinned(deferred):
    deferred.conn.subscribe(deferred.closer)
    deferred.conn.subscribe(deferred.victim)
    deferred.put_events(20)
    assert deferred.closed_in_callback.wait(5)
    deferred.finish()  # the pin drops, the deferred close completes
    assert wait_until(lambda: deferred.conn.closed)
    late = [seq for seq, after_close in deferred.victim_calls if after_close]
    assert late == [], f"callback called for events {late} after close() had returned"


def test_no_callback_after_cancel_returned_during_a_deferred_close(deferred):
    deferred.conn.subscribe(deferred.closer)
    victim = deferred.conn.subscribe(deferred.victim)
    deferred.put_events(20)
    assert deferred.closed_in_callback.wait(5)
    victim.cancel()
    n = len(deferred.victim_calls)
    assert not victim.active
    deferred.finish()
    time.sleep(0.1)
    late = [seq for seq, _ in deferred.victim_calls[n:]]
    assert late == [], f"callback called for events {late} after cancel() had returned"


# ---- 3. sync=True writes: fsync with the GIL released ---------------------------------------------

MIN_TICKS = 20


@pytest.mark.parametrize("op", ["put", "delete"])
def test_sync_write_releases_the_gil_during_fsync(op, store_path, flush_delay):
    conn = native.connect(store_path, options={"sync": True})
    try:
        conn.put(b"k", b"v")
        flush_delay(300)  # every fsync of libnative sleeps 300 ms first
        with Ticker() as ticker:
            t0 = time.monotonic()
            if op == "put":
                conn.put(b"k2", b"v2")
            else:
                conn.delete(b"k")
            t1 = time.monotonic()
        assert t1 - t0 >= 0.25, "the fsync delay knob had no effect on a sync write"
        inside = ticker.inside(t0, t1)
        assert len(inside) >= MIN_TICKS, f"sync {op}: other thread made {len(inside)} steps during fsync: GIL held"
    finally:
        flush_delay(0)
        conn.close()
    with native.connect(store_path) as again:
        assert dict(again.items()) == ({b"k": b"v", b"k2": b"v2"} if op == "put" else {})


@pytest.mark.parametrize("op", ["len", "get", "stats", "items"])
def test_reads_on_a_sync_connection_wait_for_another_threads_fsync_with_the_gil_released(op, store_path, flush_delay):
    # libnative holds the handle's lock across a sync write's fsync, so on a sync=True connection any
    # call may wait for another thread's fsync: that wait must not hold the GIL either.
    conn = native.connect(store_path, options={"sync": True})
    try:
        conn.put(b"k", b"v")
        flush_delay(1000)
        writer = threading.Thread(target=conn.put, args=(b"k2", b"v2"))
        writer.start()
        time.sleep(0.3)  # the writer is inside its fsync delay, holding libnative's handle lock
        calls = {
            "len": lambda: len(conn),
            "get": lambda: conn.get(b"k"),
            "stats": conn.stats,
            "items": lambda: list(conn.items()),
        }
        with Ticker() as ticker:
            t0 = time.monotonic()
            calls[op]()
            t1 = time.monotonic()
        writer.join(10)
        # A read that did not wait at all means the caller could not even start before the write was
        # over: the writer held the GIL through its fsync.
        assert t1 - t0 >= 0.15, f"{op} did not overlap the writer's fsync ({(t1 - t0) * 1000:.0f} ms): GIL held"
        inside = ticker.inside(t0, t1)
        assert len(inside) >= MIN_TICKS, f"{op}: other thread made {len(inside)} steps while {op} waited: GIL held"
    finally:
        flush_delay(0)
        conn.close()


def test_sync_write_on_a_closing_connection_is_invalid_state(store_path):
    conn = native.connect(store_path, options={"sync": True})
    conn.close()
    with pytest.raises(native.InvalidStateError):
        conn.put(b"k", b"v")
    with pytest.raises(native.InvalidStateError):
        conn.delete(b"k")


def test_sync_writes_from_threads_keep_the_store_consistent(store_path):
    with native.connect(store_path, options={"sync": True}) as conn:

        def writer(t: int) -> None:
            for i in range(20):
                conn.put(b"t%d-%d" % (t, i), b"%d" % i)
                if i % 3 == 0:
                    conn.delete(b"t%d-%d" % (t, i))

        threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        expected = {b"t%d-%d" % (t, i): b"%d" % i for t in range(4) for i in range(20) if i % 3}
        assert dict(conn.items()) == expected
    with native.connect(store_path) as again:
        assert dict(again.items()) == expected


# ---- 4. keys longer than the connection's max_key_size ---------------------------------------------
# Contract: a connection can reach every key its store holds. get/delete take keys up to the
# connection's max_key_size, so opening a store that holds a longer live key fails at connect with a
# ValueError naming the sizes (and leaks no handle, keeps no lock); a larger max_key_size opens it.


def test_a_store_with_a_key_over_the_limit_is_rejected_at_connect(store_path):
    long_key = b"L" * 2000
    with native.connect(store_path, options={"max_key_size": 4096}) as big:
        big.put(long_key, b"value")
        big.put(b"short", b"s")
    with pytest.raises(ValueError, match=r"key of 2000 bytes, over max_key_size=1024"):
        native.connect(store_path)  # default max_key_size=1024
    with pytest.raises(ValueError, match=r"key of 2000 bytes, over max_key_size=1999"):
        native.connect(store_path, options={"max_key_size": 1999}, timeout=0)  # the lock was released
    with native.connect(store_path, options={"max_key_size": 2000}, timeout=0) as exact:
        for key, value in exact.items():  # every key iteration yields is reachable
            assert exact.get(key) == value
        del exact[long_key]
    with native.connect(store_path, timeout=0) as small:  # only a live long key counts
        assert dict(small.items()) == {b"short": b"s"}


def test_every_key_items_yields_is_reachable(store_path):
    with native.connect(store_path, options={"max_key_size": 64}) as c:
        for n in (1, 8, 63, 64):
            c.put(b"k" * n, b"%d" % n)
    for limit in (64, 100, 65535):
        with native.connect(store_path, options={"max_key_size": limit}) as c:
            for key, value in c.items():
                assert c.get(key) == value and key in c
    for limit in (1, 8, 63):
        with pytest.raises(ValueError, match="max_key_size"):
            native.connect(store_path, options={"max_key_size": limit})


# ---- 6. one name per thing: the extension is the private submodule native._native ----------------


def test_the_extension_is_the_private_submodule_native_native():
    import importlib

    ext = importlib.import_module("native._native")
    assert ext.__file__ is not None and ext.__file__.endswith(".so")
    assert native.connect is ext.connect and native.Connection is ext.Connection
    assert native.__all__ == ext.__all__ and native.__version__ == ext.__version__
    assert all(hasattr(native, name) for name in native.__all__)
    # `from native import *` gives the public API only; the private names stay reachable by name.
    assert [n for n in native.__all__ if n.startswith("_")] == []
    assert all(hasattr(native, n) for n in ("_C_API", "_capi_live_tables", "_set_flush_delay_ms", "_shutdown"))
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("native.native")  # the old double name is gone
    # Public classes and exceptions keep the public module name.
    assert native.Connection.__module__ == "native" and native.Error.__module__ == "native"


# --- found by the callbacks fuzz target (its stuck watchdog, stop 20): close() inside a callback racing
# the same subscription's cancel() on another thread. cancel() pinned the handle just after close() had
# decided there was no pin to wait for; close() then waited for that pin while the pin's
# native_unsubscribe waited for the callback that was running close(). Before the fix this deadlocked
# within a few hundred rounds.
CANCEL_RACES_CLOSE = textwrap.dedent(
    """
    import os, sys, threading
    import native

    def one(path):
        conn = native.connect(path)
        entered = threading.Event()

        def callback(_event):
            entered.set()
            conn.close()

        sub = conn.subscribe(callback)
        writer = threading.Thread(target=lambda: conn.put(b"k", b"v"))
        writer.start()
        entered.wait(1)
        sub.__exit__(None, None, None)
        writer.join()
        conn.close()

    for i in range(2000):
        one(os.path.join(sys.argv[1], "race%d.db" % i))
    print("rounds done")
    """
)


def test_cancel_racing_close_inside_the_callback_does_not_deadlock(tmp_path):
    # In a child process: a deadlocked one cannot be unstuck, and would hang this one at exit.
    try:
        out = subprocess.run(
            [sys.executable, "-c", CANCEL_RACES_CLOSE, str(tmp_path)],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("deadlock: cancel() and close() inside the callback wait for each other (60 s)")
    assert out.returncode == 0 and "rounds done" in out.stdout, out.stderr[-2000:]
