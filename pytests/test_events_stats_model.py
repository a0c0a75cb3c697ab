"""Events and stats against a model (issue 12.4): a seeded random run of operations on one connection with
a subscriber, and a model of what each operation must do. After the run, the subscriber's stream must be
exactly the model's (kind, seq, key, value) list -- no loss, no duplicate, seq 1, 2, 3... -- and every
`Stats` counter must equal the model's: a counter bumped on a refused call, an event sent for a refused
write, a dropped or repeated event, all show up here, whatever code path caused them.
"""

from __future__ import annotations

import os
import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from _refs import wait_until

native = pytest.importorskip("native")

KEYS = [b"a", b"b", b"c", b"dd", b"\x00", b"k" * 16]


class Model:
    """What libnative documents for each operation (see native.h: counters count successful operations;
    `gets` counts every lookup of a valid key, found or not; events are numbered while anyone listens)."""

    def __init__(self) -> None:
        self.items: dict[bytes, bytes] = {}
        self.puts = self.gets = self.deletes = 0
        self.events: list[tuple[str, int, bytes, bytes | None]] = []

    def put(self, key: bytes, value: bytes) -> None:
        self.items[key] = value
        self.puts += 1
        self.events.append(("PUT", len(self.events) + 1, key, value))

    def delete(self, key: bytes) -> bool:
        if key not in self.items:
            return False
        del self.items[key]
        self.deletes += 1
        self.events.append(("DELETE", len(self.events) + 1, key, None))
        return True

    def lookup(self, key: bytes) -> bytes | None:
        self.gets += 1
        return self.items.get(key)


def _run(conn: Any, model: Model, rng: random.Random, steps: int) -> None:
    for step in range(steps):
        op = rng.choice(["put", "put", "put", "delete", "get", "contains", "getitem", "len", "bad", "flush"])
        key = rng.choice(KEYS)
        where = f"step {step}: {op} {key!r}"
        if op == "put":
            value = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 12)))
            conn.put(key, value)
            model.put(key, value)
        elif op == "delete":
            if model.delete(key):
                conn.delete(key)
            else:
                with pytest.raises(KeyError):
                    conn.delete(key)
        elif op == "get":
            expected = model.lookup(key)
            if expected is None:
                with pytest.raises(KeyError):
                    conn.get(key)
            else:
                assert conn.get(key) == expected, where
        elif op == "contains":
            assert (key in conn) == (model.lookup(key) is not None), where
        elif op == "getitem":
            expected = model.lookup(key)
            if expected is None:
                with pytest.raises(KeyError):
                    conn[key]
            else:
                assert conn[key] == expected, where
        elif op == "len":
            assert len(conn) == len(model.items), where
        elif op == "bad":
            # Refused before anything happens: no counter moves, no event.
            bad = rng.choice(
                [("put", (b"", b"v"), ValueError), ("get", (b"",), ValueError), ("put", ("s", b"v"), TypeError)]
            )
            with pytest.raises(bad[2]):
                getattr(conn, bad[0])(*bad[1])
        else:
            conn.flush()


@pytest.mark.parametrize("seed", range(8))
def test_events_and_stats_follow_the_model(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    conn = native.connect(os.fspath(tmp_path / "model.db"))
    got: list[tuple[str, int, bytes, bytes | None]] = []
    lock = threading.Lock()

    def record(ev: Any) -> None:
        with lock:
            got.append((ev.kind.name, ev.seq, ev.key, ev.value))

    model = Model()
    sub = conn.subscribe(record)
    try:
        _run(conn, model, rng, steps=300)
        # Delivery is asynchronous (the notifier thread): wait for as many events as the model has. A lost
        # event leaves the stream short after the deadline; a duplicate makes it longer.
        wait_until(lambda: len(got) >= len(model.events))
        time.sleep(0.05)  # a duplicate would arrive now
        with lock:
            stream = list(got)
        assert [e[1] for e in stream] == list(range(1, len(stream) + 1)), "seq not 1, 2, 3... (loss or duplicate)"
        assert stream == model.events
        stats = conn.stats()
        expected = {
            "keys": len(model.items),
            "puts": model.puts,
            "gets": model.gets,
            "deletes": model.deletes,
            "events_delivered": len(model.events),
            "events_dropped": 0,
            "events_pending": 0,  # the 0.05 s above: the last callback has returned
            "subscriptions": 1,
            "generation": model.puts + model.deletes,
        }
        assert {k: getattr(stats, k) for k in expected} == expected
        assert dict(conn.items()) == model.items
    finally:
        sub.cancel()
        conn.close()
    assert conn.closed


def test_a_subscription_gets_the_events_made_after_it_and_no_older_one(tmp_path: Path) -> None:
    # native.h: a subscription sees the mutations made after it exists. The first subscriber holds the
    # notifier inside its first callback, so every later event is still queued when the next subscriber
    # joins: an event goes to the subscriptions that existed when it was made, not to those alive when
    # it is delivered.
    conn = native.connect(os.fspath(tmp_path / "late.db"))
    inside, release = threading.Event(), threading.Event()
    made: list[tuple[str, int, bytes, bytes | None]] = []
    streams: list[list[tuple[str, int, bytes, bytes | None]]] = []
    since: list[int] = []

    def hold(_ev: Any) -> None:
        inside.set()
        release.wait(10)

    def recorder(stream: list[tuple[str, int, bytes, bytes | None]]) -> Any:
        return lambda ev: stream.append((ev.kind.name, ev.seq, ev.key, ev.value))

    subs = [conn.subscribe(hold)]
    try:
        conn.put(b"first", b"0")
        made.append(("PUT", 1, b"first", b"0"))
        assert inside.wait(10), "the notifier never called the first subscriber"
        for i in range(4):
            since.append(len(made))
            streams.append([])
            subs.append(conn.subscribe(recorder(streams[-1])))
            key = b"k%d" % i
            conn.put(key, b"v%d" % i)
            made.append(("PUT", len(made) + 1, key, b"v%d" % i))
            if i % 2:
                conn.delete(key)
                made.append(("DELETE", len(made) + 1, key, None))
        assert conn.stats().events_pending == len(made), "the events were not queued behind the held one"
        release.set()
        wait_until(lambda: conn.stats().events_pending == 0)
        for i, stream in enumerate(streams):
            assert stream == made[since[i] :], f"subscriber #{i + 1} (joined after {since[i]} events)"
    finally:
        release.set()
        for sub in subs:
            sub.cancel()
        conn.close()
