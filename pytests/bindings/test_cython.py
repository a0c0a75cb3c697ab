"""The Cython binding's own checklist rows, beyond what the differential tests compare: callbacks from the
notifier thread (ownership, GIL, errors, close from inside), GIL release around blocking calls, buffer
exports held for the whole call, signals in long loops, and the handle's use-after-close rules.

Needs `python pytests/bindings/cython_build.py` (skipped otherwise, like the cffi API cases).
"""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
import threading
import time
import weakref
from pathlib import Path
from typing import Any, Callable

import cython_native
import facade
import pytest

if cython_native.module is None:
    pytest.skip(cython_native.SKIP_REASON or "unavailable", allow_module_level=True)

cy: Any = cython_native.module
LEDGER = ("live_handles", "live_subscriptions", "live_blocks")


def wait_until(pred: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (r := pred()) and time.monotonic() < deadline:
        time.sleep(0.005)
    return r


def ledger() -> dict[str, int]:
    c = cy.debug_counters()
    return {k: c[k] for k in LEDGER}


@pytest.fixture(autouse=True)
def ledger_neutral() -> Any:
    """Native handles, subscriptions and blocks come back to where they were (teardown may be async)."""
    gc.collect()
    before = ledger()
    yield
    assert wait_until(lambda: gc.collect() is not None and ledger() == before), (before, ledger())


@pytest.fixture
def conn(tmp_path: Path) -> Any:
    c = cy.connect(tmp_path / "store.db")
    yield c
    c.close()


class Recorder:
    def __init__(self) -> None:
        self.events: list[Any] = []
        self.threads: set[int] = set()
        self.cond = threading.Condition()

    def __call__(self, ev: Any) -> None:
        with self.cond:
            self.events.append((ev.kind, ev.seq, ev.key, ev.value))
            self.threads.add(threading.get_ident())
            self.cond.notify_all()

    def wait(self, n: int) -> list[Any]:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.events) >= n, timeout=5), self.events
            return list(self.events)


def test_callbacks_run_on_the_notifier_thread_with_copied_data(conn: Any) -> None:
    rec = Recorder()
    sub = conn.subscribe(rec)
    assert sub.active
    conn.put(b"k", b"v1")
    conn.put(bytearray(b"k2"), b"")
    conn.delete(b"k")
    events = rec.wait(3)
    assert events == [
        (cy.EventKind.PUT, 1, b"k", b"v1"),
        (cy.EventKind.PUT, 2, b"k2", b""),
        (cy.EventKind.DELETE, 3, b"k", None),
    ]
    assert rec.threads and threading.get_ident() not in rec.threads
    sub.cancel()
    assert not sub.active
    conn.put(b"after", b"cancel")
    time.sleep(0.05)
    assert len(rec.events) == 3
    sub.cancel()  # idempotent


def test_the_binding_owns_the_callback_until_cancel(conn: Any) -> None:
    rec = Recorder()
    ref = weakref.ref(rec)
    sub = conn.subscribe(rec)
    events = rec.events
    del rec
    gc.collect()
    assert ref() is not None  # owned while registered, though the caller dropped it
    conn.put(b"a", b"1")
    assert wait_until(lambda: len(events) == 1)
    sub.cancel()
    gc.collect()
    assert ref() is None  # released once libnative can no longer call it


def test_close_releases_every_callback_and_no_call_follows(tmp_path: Path) -> None:
    c = cy.connect(tmp_path / "s.db")
    recs = [Recorder() for _ in range(3)]
    refs = [weakref.ref(r) for r in recs]
    subs = [c.subscribe(r) for r in recs]
    c.put(b"x", b"y")
    lists = [rec.wait(1) and rec.events for rec in recs]
    del recs
    c.close()
    gc.collect()
    assert all(r() is None for r in refs)
    assert [len(x) for x in lists] == [1, 1, 1]
    assert not any(s.active for s in subs)
    for s in subs:
        s.cancel()  # after close: a no-op, never a use of the closed handle


def test_a_reference_cycle_through_the_callback_is_collected_safely(tmp_path: Path) -> None:
    # conn -> (native user_data) callback -> conn: the collector must neither free the callback while
    # libnative can call it nor leak the handle.
    c = cy.connect(tmp_path / "cycle.db")
    seen: list[int] = []
    c.subscribe(lambda ev, c=c: seen.append(len(c)))
    c.put(b"k", b"v")
    assert wait_until(lambda: seen == [1])
    del c
    gc.collect()  # the fixture checks that the handle and the subscription are gone


def test_callback_exceptions_go_to_unraisablehook(conn: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: seen.append(u.exc_type))

    def boom(ev: Any) -> None:
        raise RuntimeError(f"callback {ev.seq} failed")

    rec = Recorder()
    conn.subscribe(boom)
    conn.subscribe(rec)
    conn.put(b"a", b"1")
    conn.put(b"b", b"2")
    rec.wait(2)  # delivery goes on after an exception
    assert wait_until(lambda: len(seen) == 2)
    assert seen == [RuntimeError, RuntimeError]


def test_close_from_inside_a_callback(tmp_path: Path) -> None:
    c = cy.connect(tmp_path / "inside.db")
    calls: list[int] = []
    done = threading.Event()

    def close_me(ev: Any) -> None:
        calls.append(ev.seq)
        c.close()  # returns at once on the notifier thread; teardown finishes after this returns
        done.set()

    c.subscribe(close_me)
    c.put(b"a", b"1")
    assert done.wait(5)
    assert c.closed
    with pytest.raises(facade.InvalidStateError):
        c.put(b"b", b"2")
    time.sleep(0.05)
    assert calls == [1]


def test_cancel_from_inside_its_own_callback(conn: Any) -> None:
    calls: list[int] = []
    holder: dict[str, Any] = {}

    def once(ev: Any) -> None:
        calls.append(ev.seq)
        holder["sub"].cancel()  # does not wait for itself

    holder["sub"] = conn.subscribe(once)
    conn.put(b"a", b"1")
    conn.put(b"b", b"2")
    conn.flush()
    time.sleep(0.1)
    assert calls == [1]


def test_flush_releases_the_gil_and_close_waits_for_it(tmp_path: Path) -> None:
    c = cy.connect(tmp_path / "flush.db")
    c.put(b"k", b"v")
    ticks = 0
    stop = threading.Event()

    def spin() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1

    cy.set_flush_delay_ms(300)
    try:
        flusher = threading.Thread(target=c.flush)
        spinner = threading.Thread(target=spin)
        spinner.start()
        flusher.start()
        time.sleep(0.1)
        t0 = time.monotonic()
        before = ticks
        c.close()  # must wait for the pinned flush, never close the handle under it
        waited = time.monotonic() - t0
        flusher.join(5)
        stop.set()
        spinner.join(5)
    finally:
        cy.set_flush_delay_ms(0)
    assert waited > 0.1, waited
    assert ticks > before  # other Python threads ran while flush slept in C
    with pytest.raises(facade.InvalidStateError):
        c.flush()


def test_the_buffer_export_is_held_for_the_whole_call() -> None:
    buf = bytearray(8 << 20)
    errors: list[BaseException] = []
    started = threading.Event()

    def resize() -> None:
        started.wait(5)
        time.sleep(0.01)
        try:
            buf.extend(b"x")
        except BufferError as e:
            errors.append(e)

    t = threading.Thread(target=resize)
    t.start()
    started.set()
    cy.process(buf, key=7, rounds=20)  # GIL released: the other thread runs, but cannot resize
    t.join(5)
    assert errors, "bytearray resized while C was writing into it"
    buf.extend(b"x")  # released afterwards


@pytest.mark.parametrize("op", ["put", "get", "delete", "len", "items", "flush", "stats", "subscribe"])
def test_use_after_close_is_invalid_state(tmp_path: Path, op: str) -> None:
    c = cy.connect(tmp_path / "closed.db")
    c.put(b"k", b"v")
    c.close()
    c.close()
    calls = cy.debug_counters()["calls"]
    call = {
        "put": lambda: c.put(b"k", b"v"),
        "get": lambda: c.get(b"k"),
        "delete": lambda: c.delete(b"k"),
        "len": lambda: len(c),
        "items": lambda: list(c.items()),
        "flush": c.flush,
        "stats": c.stats,
        "subscribe": lambda: c.subscribe(print),
    }[op]
    with pytest.raises(facade.InvalidStateError) as exc:
        call()
    assert exc.value.code == "NATIVE_ESTATE"
    assert cy.debug_counters()["calls"] == calls  # refused before C


def test_integer_arguments_are_never_truncated() -> None:
    # Cython's own `long` parameter conversion would take 1.5 as 1; the binding accepts integers only.
    for bad in (1.5, "1", None):
        with pytest.raises(TypeError):
            cy.add(bad, 1)
    with pytest.raises(TypeError):
        cy.process(bytearray(4), key=1.0)


def test_sigint_interrupts_a_long_process() -> None:
    script = textwrap.dedent(f"""
        import os, signal, sys, threading, time
        sys.path[:0] = [{str(Path(__file__).parent)!r}, {str(cython_native.BUILD_DIR)!r}]
        import _native_cython as cy
        signal.signal(signal.SIGINT, signal.default_int_handler)
        buf = bytearray(4 << 20)
        threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
        t0 = time.monotonic()
        try:
            cy.process(buf, key=1, rounds=100000)
        except KeyboardInterrupt:
            buf.append(0)
            print("interrupted", time.monotonic() - t0)
        else:
            print("completed")
    """)
    p = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    word, *rest = p.stdout.split()
    assert word == "interrupted", p.stdout
    assert float(rest[0]) < 2.0
