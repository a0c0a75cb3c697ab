"""close() from every state a connection can be in, against one list of postconditions.

Each state below leaves a connection as a user could (data written and not flushed, an iterator half way,
a subscription idle or with a backlog of events its slow callback is still working through, a call in
flight on another thread, refused and invalidated calls behind it, a write the OS refused, another connect
that timed out on its lock, or the close made from inside its own callback). Whatever the state, once close() returns (inside a
callback: once the callback has returned):

- it returned (within a bound) and a second close() is a no-op;
- `closed` is true and the native ledger is back where it was before connect: no handle, subscription or
  block of this connection is left;
- the store's lock is free (a connect with timeout=0 succeeds), no descriptor of the store is open, and the
  store holds exactly what the model says was put (a write the OS refused part-way may have committed or
  not, never anything else);
- no callback starts after it, every subscription is inactive, and every callback object is released;
- a call that was in flight on another thread finished, without an error, before close() returned.

Run through `native` and through every binding of libnative the bindings suite builds (a state that
needs what a binding lacks, such as subscribe, is skipped for it).
"""

from __future__ import annotations

import errno
import gc
import os
import resource
import signal
import sys
import threading
import time
import weakref
from pathlib import Path
from typing import Any, Callable

import pytest

native = pytest.importorskip("native")

_BINDINGS = str(Path(__file__).resolve().parent / "bindings")
if _BINDINGS not in sys.path:
    sys.path.insert(0, _BINDINGS)

import facade  # after the sys.path insert above: it lives in pytests/bindings

AVAILABLE = facade.loadable_bindings()  # none loadable: `native` alone

IMPLS: dict[str, Any] = {"pyo3": native, **AVAILABLE}
CLOSE_BOUND = 15.0  # seconds close() may take: the slowest state waits for a 0.3 s flush and a backlog
FLUSH_DELAY_MS = 300
LEDGER = ("live_handles", "live_subscriptions", "live_blocks")


class Scene:
    """A connection in some state, what the store must hold, and what ran around it."""

    def __init__(self, impl: Any, path: Path) -> None:
        self.impl = impl
        self.path = path
        self.conn = impl.connect(path)
        self.closes_itself: threading.Event | None = None  # set once a callback's own close() returned
        self.starts_at_close = -1  # callbacks started when close() returned
        self.model: dict[bytes, bytes] = {}
        self.maybe: dict[bytes, bytes] = {}  # writes that failed: committed whole or not at all
        self.kept: list[Any] = []  # iterators, subscriptions: alive across close()
        self.callbacks: list[weakref.ref[Any]] = []
        self.callback_starts: list[float] = []
        self.threads: list[threading.Thread] = []
        self.thread_errors: list[BaseException] = []
        self.thread_ends: list[float] = []

    def put(self, key: bytes, value: bytes) -> None:
        self.conn.put(key, value)
        self.model[key] = value

    def subscribe(self, seconds_per_event: float) -> None:
        starts = self.callback_starts

        class Callback:
            def __call__(self, _event: Any) -> None:
                starts.append(time.monotonic())
                time.sleep(seconds_per_event)

        cb = Callback()
        self.callbacks.append(weakref.ref(cb))
        self.kept.append(self.conn.subscribe(cb))

    def in_flight(self, call: Callable[[], Any]) -> None:
        def run() -> None:
            try:
                call()
            except BaseException as e:  # noqa: BLE001 - reported by the postconditions
                self.thread_errors.append(e)
            finally:
                self.thread_ends.append(time.monotonic())

        t = threading.Thread(target=run)
        t.start()
        self.threads.append(t)


def _store_descriptors(path: Path) -> int:
    """How many of this process's descriptors are open on the store file."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == str(path):
                count += 1
        except OSError:  # closed meanwhile (listdir's own descriptor among them)
            pass
    return count


def _wait_until(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _set_flush_delay(impl: Any, ms: int) -> None:
    (native._set_flush_delay_ms if impl is native else impl.set_flush_delay_ms)(ms)


def _fresh(_s: Scene) -> None:
    pass


def _with_data(s: Scene) -> None:
    for i in range(50):
        s.put(b"k%d" % i, b"v%d" % i * (i + 1))
    s.conn.delete(b"k7")
    del s.model[b"k7"]


def _mid_iteration(s: Scene) -> None:
    _with_data(s)
    it = iter(s.conn.items())
    next(it)
    s.kept.append(it)


def _invalidated_iteration(s: Scene) -> None:
    _mid_iteration(s)
    s.put(b"after", b"the iterator")  # the iterator is now invalid; it stays referenced


def _after_refusals(s: Scene) -> None:
    s.put(b"k", b"v")
    for refused in (lambda: s.conn.get(b"missing"), lambda: s.conn.put(None, b"v"), lambda: s.conn.delete(b"no")):
        with pytest.raises(Exception):  # noqa: B017 - any refusal; its kind is judged elsewhere
            refused()


def _subscribed(s: Scene) -> None:
    s.subscribe(0.0)
    s.put(b"k", b"v")


def _subscribed_with_backlog(s: Scene) -> None:
    s.subscribe(0.01)
    s.subscribe(0.0)
    for i in range(40):
        s.put(b"e%d" % i, b"v")


def _call_in_flight(s: Scene) -> None:
    s.put(b"k", b"v")
    _set_flush_delay(s.impl, FLUSH_DELAY_MS)
    s.in_flight(s.conn.flush)
    time.sleep(FLUSH_DELAY_MS / 3000)  # the flush is inside native code, waiting


def _after_a_write_the_os_refused(s: Scene) -> None:
    """A put the OS refuses part-way (a file size limit: EFBIG, as a full disk gives ENOSPC): its error path
    runs with the store's file written short, and must leave nothing that close() then waits for or leaks."""
    s.put(b"k", b"v")
    value = b"x" * 10_000
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of death by SIGXFSZ
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (s.path.stat().st_size, limit[1]))
    try:
        with pytest.raises(Exception) as refused:  # any class: the errno is judged below
            s.conn.put(b"refused", value)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limit)
        signal.signal(signal.SIGXFSZ, handler)
    assert getattr(refused.value, "errno", None) == errno.EFBIG, repr(refused.value)
    s.maybe[b"refused"] = value
    s.put(b"after", b"the refusal")


def _after_a_connect_timed_out(s: Scene) -> None:
    s.put(b"k", b"v")
    with pytest.raises(Exception) as refused:
        s.impl.connect(s.path, timeout=0)
    assert isinstance(refused.value, TimeoutError), repr(refused.value)


def _close_from_its_own_callback(s: Scene) -> None:
    """The close happens inside the connection's own callback (it returns at once there; the native close
    completes once the callback has returned)."""
    returned = threading.Event()

    def close_inside(_event: Any) -> None:
        s.callback_starts.append(time.monotonic())
        if not returned.is_set():
            s.conn.close()
            s.starts_at_close = len(s.callback_starts)
            returned.set()

    s.callbacks.append(weakref.ref(close_inside))
    s.kept.append(s.conn.subscribe(close_inside))
    for i in range(5):  # the first event's callback closes: the four queued behind it must never be delivered
        s.put(b"k%d" % i, b"v")
    s.closes_itself = returned


STATES: dict[str, tuple[Callable[[Scene], None], bool]] = {  # name -> (set-up, needs subscribe)
    "fresh": (_fresh, False),
    "unflushed data": (_with_data, False),
    "mid-iteration": (_mid_iteration, False),
    "an invalidated iterator": (_invalidated_iteration, False),
    "after refusals": (_after_refusals, False),
    "after a write the OS refused": (_after_a_write_the_os_refused, False),
    "an idle subscription": (_subscribed, True),
    "a backlog of events for a slow callback": (_subscribed_with_backlog, True),
    "a flush in flight on another thread": (_call_in_flight, False),
    "after another connect timed out on its lock": (_after_a_connect_timed_out, False),
    "closed from inside its own callback": (_close_from_its_own_callback, True),
}


@pytest.mark.parametrize("state", list(STATES))
@pytest.mark.parametrize("name", sorted(IMPLS))
def test_close_postconditions(tmp_path: Path, name: str, state: str) -> None:
    impl = IMPLS[name]
    set_up, needs_subscribe = STATES[state]
    path = tmp_path / "store.db"
    gc.collect()
    before = impl.debug_counters()
    descriptors_before = _store_descriptors(path)
    scene = Scene(impl, path)
    if needs_subscribe and not hasattr(scene.conn, "subscribe"):
        scene.conn.close()
        pytest.skip(f"{name} has no subscribe")
    try:
        set_up(scene)
        if scene.closes_itself is not None:
            assert scene.closes_itself.wait(CLOSE_BOUND), f"close() in a callback did not return within {CLOSE_BOUND} s"
            # The native close completes once the callback has returned, on the notifier's side.
            _wait_until(lambda: impl.debug_counters()["live_handles"] == before["live_handles"], CLOSE_BOUND)
        else:
            closer = threading.Thread(target=scene.conn.close)
            closer.start()
            closer.join(CLOSE_BOUND)
            assert not closer.is_alive(), f"close() did not return within {CLOSE_BOUND} s"
            scene.starts_at_close = len(scene.callback_starts)
        closed_at = time.monotonic()
    finally:
        _set_flush_delay(impl, 0)

    assert scene.conn.closed, "closed is false after close() returned"
    assert scene.conn.close() is None  # a second close is a no-op
    for t in scene.threads:
        t.join(CLOSE_BOUND)
        assert not t.is_alive(), "a call in flight never returned"
    assert not scene.thread_errors, f"a call in flight when close() came failed: {scene.thread_errors!r}"
    # A call's end is stamped once its thread has the GIL back, and so is close()'s: either may win that race
    # (CI saw the flush's stamp land after close()'s on 3.9). A close() that did not wait would return about
    # two thirds of the flush delay before the flush ends, so a third of it tells the two apart.
    slack = FLUSH_DELAY_MS / 3000
    late_ends = [round(end - closed_at, 3) for end in scene.thread_ends if end > closed_at + slack]
    assert not late_ends, f"close() returned before the call in flight did (by {late_ends} s)"

    for sub in scene.kept:
        if hasattr(sub, "active"):
            assert not sub.active, "a subscription is still active after close()"
    time.sleep(0.05)  # a delivery that close() failed to stop would start about now
    late = scene.callback_starts[scene.starts_at_close :]
    assert not late, f"{len(late)} callback(s) started after close() had returned"

    with impl.connect(path, timeout=0) as again:  # the lock is free at once
        held = dict(again.items())
        assert held in (scene.model, {**scene.model, **scene.maybe}), (
            "the store does not hold what was put before close()"
        )

    scene.kept.clear()
    gc.collect()
    assert all(ref() is None for ref in scene.callbacks), "close() kept a callback object alive"
    after = impl.debug_counters()
    left = {k: after[k] - before[k] for k in LEDGER if after[k] != before[k]}
    assert not left, f"the native ledger moved across connect/close: {left}"
    assert _store_descriptors(path) == descriptors_before, "a descriptor of the store is still open after close()"
