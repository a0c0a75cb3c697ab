"""Pure-Python references and small helpers shared by the `native` tests (not a test module)."""

from __future__ import annotations

import collections.abc
import ctypes
import gc
import os
import threading
import time
import warnings
from typing import Any, Callable

MASK64 = (1 << 64) - 1
FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3

LONG_BITS = ctypes.sizeof(ctypes.c_long) * 8
LONG_MAX = (1 << (LONG_BITS - 1)) - 1
LONG_MIN = -(1 << (LONG_BITS - 1))

LEDGER_KEYS = ("live_handles", "live_subscriptions", "live_blocks")


def fnv1a64(data) -> int:
    """64-bit FNV-1a over the raw bytes of `data` (the reference for native.checksum)."""
    h = FNV_OFFSET
    for b in bytes(data):
        h = ((h ^ b) * FNV_PRIME) & MASK64
    return h


def process_ref(data, key: int = 0, rounds: int = 1) -> bytes:
    """Literal transcription of the process() contract (slow: for small inputs)."""
    k = key.to_bytes(4, "little")
    b = bytearray(data)
    for _ in range(rounds):
        for i in range(len(b)):
            b[i] = ((b[i] ^ k[i % 4]) + (i & 0xFF)) & 0xFF
    return bytes(b)


def process_ref_fast(data, key: int = 0, rounds: int = 1) -> bytes:
    """Same transform, vectorised: byte i only depends on i mod 256 (i & 0xff and i % 4)."""
    k = key.to_bytes(4, "little")
    tables = [bytes(((x ^ k[r % 4]) + r) & 0xFF for x in range(256)) for r in range(256)]
    b = bytearray(data)
    for _ in range(rounds):
        for r in range(min(256, len(b))):
            b[r::256] = b[r::256].translate(tables[r])
    return bytes(b)


def wait_until(pred, timeout: float = 5.0, interval: float = 0.005):
    """Poll `pred` until it returns a truthy value or `timeout` seconds pass; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        r = pred()
        if r or time.monotonic() >= deadline:
            return r
        time.sleep(interval)


def ledger_snapshot() -> dict:
    import native

    c = native.debug_counters()
    return {k: c[k] for k in LEDGER_KEYS}


def native_calls() -> int:
    import native

    return native.debug_counters()["calls"]


def debug_counters_self_cost() -> int:
    """How much one debug_counters() call bumps `calls` itself (0 or 1, measured, stable)."""
    samples = []
    for _ in range(5):
        a = native_calls()
        b = native_calls()
        samples.append(b - a)
    return min(samples)


class Recorder:
    """A thread-safe callable that records every event it is called with (and on which thread)."""

    def __init__(self, action=None):
        self.events = []
        self.threads = []
        self.cond = threading.Condition()
        self.action = action

    def __call__(self, ev):
        with self.cond:
            self.events.append(ev)
            self.threads.append(threading.get_ident())
            self.cond.notify_all()
        if self.action is not None:
            self.action(ev)

    def wait_count(self, n: int, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.events) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(left)
            return True

    def wait_for(self, pred, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not any(pred(e) for e in self.events):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(left)
            return True

    def __len__(self):
        with self.cond:
            return len(self.events)


class Ticker:
    """A Python thread that records timestamps while it can get the GIL (to prove GIL release)."""

    def __init__(self, period: float = 0.0005):
        self.period = period
        self.stamps: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.stamps.append(time.monotonic())
            time.sleep(self.period)

    def __enter__(self):
        self._thread.start()
        # make sure it is really running before the measured call starts
        deadline = time.monotonic() + 5
        while not self.stamps and time.monotonic() < deadline:
            time.sleep(0.001)
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(10)

    def inside(self, t0: float, t1: float) -> list[float]:
        return [t for t in list(self.stamps) if t0 < t < t1]


def collect():
    for _ in range(3):
        gc.collect()


class UserMapping(collections.abc.Mapping):
    """A Mapping that is not a dict (read only through the Mapping protocol)."""

    def __init__(self, d):
        self._d = dict(d)

    def __getitem__(self, k):
        return self._d[k]

    def __iter__(self):
        return iter(self._d)

    def __len__(self):
        return len(self._d)


def _resize_until(ba, done, outcome):
    """Append a byte to `ba` and pop it again until a resize fails with BufferError ("state" becomes
    "plain", or "extra" if the pop failed, so a call saw the extra byte) or `done` is set."""
    attempts = 0
    while not done.is_set():
        attempts += 1
        try:
            ba.append(0x55)
        except BufferError:
            outcome["state"] = "plain"
            break
        try:
            ba.pop()
        except BufferError:
            outcome["state"] = "extra"
            break
    outcome["attempts"] = attempts


def resize_during(base, call):
    """Run `call(ba)` on `bytearray(base)` while a new thread tries to resize it (`_resize_until`).
    Returns (outcome, result, ba); asserts nothing about contention: a short call may end before the
    resizer runs."""
    ba = bytearray(base)
    outcome = {}
    go = threading.Event()
    done = threading.Event()

    def resizer():
        go.wait()
        _resize_until(ba, done, outcome)

    t = threading.Thread(target=resizer)
    t.start()
    go.set()
    try:
        result = call(ba)
    finally:
        done.set()
        t.join(30)
    assert not t.is_alive()
    return outcome, result, ba


class Resizer:
    """`resize_during` with one resizing thread for many calls (a daemon that waits between them):
    starting a thread per call would cost more than the call (the fuzzer's use)."""

    def __init__(self):
        self._job = None
        self._start = threading.Event()
        self._finished = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            self._start.wait()
            self._start.clear()
            _resize_until(*self._job)
            self._finished.set()

    def during(self, base, call):
        ba, done, outcome = bytearray(base), threading.Event(), {}
        self._job = (ba, done, outcome)
        self._finished.clear()
        self._start.set()
        try:
            result = call(ba)
        finally:
            done.set()
            assert self._finished.wait(30), "the resizing thread did not stop"
        return outcome, result, ba


def resize_race(base, call, expect_fn):
    """Run `call(ba)` on `bytearray(base)` while another thread tries to resize it (`resize_during`).

    `expect_fn(ba, original, result)` gets the bytes the call saw. Returns the outcome (the state and
    the resize attempts); asserts the export was held for the whole call and released after it."""
    outcome, result, ba = resize_during(base, call)
    assert "state" in outcome, (
        f"no BufferError in the resizing thread after {outcome.get('attempts')} attempts: the export was "
        "not held during the call (or the GIL was never released)"
    )
    original = bytes(base) + (b"\x55" if outcome["state"] == "extra" else b"")
    expect_fn(ba, original, result)
    # after the call the bytearray can be resized again
    ba.append(1)
    ba.pop()
    return outcome


def in_a_forked_child(call: Callable[[], Any], bound_s: float) -> str:
    """Run `call` in a forked child of this process; what it did, as text ("ok", "ExcType: message" or
    "STUCK" after bound_s). The child leaves with os._exit: it never runs pytest's cleanup."""
    r, w = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork() with threads running
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(r)
            try:
                call()
                out = "ok"
            except BaseException as e:  # noqa: BLE001 - reported to the parent
                out = f"{type(e).__name__}: {e}"
            os.write(w, out.encode(errors="replace")[:4000])
        finally:
            os._exit(0)
    os.close(w)
    deadline = time.monotonic() + bound_s
    while os.waitpid(pid, os.WNOHANG) == (0, 0):
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            os.close(r)
            return "STUCK"
        time.sleep(0.005)
    with os.fdopen(r, "rb") as f:
        return f.read().decode()
