"""How fast `native` delivers a backlog of events to a trivial Python callback, per callback.

The notifier is a thread CPython did not create: what each delivery costs beyond the callback itself
is attaching to the interpreter. Puts are queued first (the main thread holds the GIL), then the main
thread waits in long sleeps so the notifier drains the queue alone. Prints wall-clock µs per callback
and the process's user/system CPU per callback (a thread state built and torn down per callback shows
as system time: an mmap/munmap pair each).

    .venv/bin/python benches/py/callback_drain.py [--events N]
    ci/asan-python benches/py/callback_drain.py   # the same against the ASan build
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time

import native

# libnative's NATIVE_EVENT_QUEUE_LIMIT: pending events beyond it are dropped (and counted).
QUEUE_LIMIT = 65536


def drain(events: int, path: str) -> tuple[float, float, float]:
    """(wall, user, sys) seconds per delivered callback for `events` queued puts."""
    conn = native.connect(path)
    calls = [0]

    def callback(_ev: native.Event) -> None:
        calls[0] += 1

    sub = conn.subscribe(callback)
    try:
        before = resource.getrusage(resource.RUSAGE_SELF)
        start = time.perf_counter()
        for i in range(events):
            conn.put(b"k%d" % (i % 4), b"v")
        deadline = start + 60
        while conn.stats().events_delivered < events and time.perf_counter() < deadline:
            time.sleep(0.01)
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_SELF)
        dropped = conn.stats().events_dropped
    finally:
        sub.cancel()
        conn.close()
    if dropped:
        sys.exit(
            f"callback_drain: libnative dropped {dropped} of {events} events (its queue is full past "
            f"{QUEUE_LIMIT:,} pending): a per-callback figure would not mean anything; use fewer --events"
        )
    if calls[0] != events:
        sys.exit(f"callback_drain: only {calls[0]} of {events} events delivered in 60 s")
    return wall / events, (after.ru_utime - before.ru_utime) / events, (after.ru_stime - before.ru_stime) / events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20000, help="puts queued per round (default 20000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; the best is reported (default 3)")
    args = parser.parse_args()
    if args.events < 1 or args.rounds < 1:
        parser.error("--events and --rounds must be at least 1")
    if args.events > QUEUE_LIMIT:
        parser.error(f"--events at most {QUEUE_LIMIT:,}: libnative drops events queued beyond that")
    with tempfile.TemporaryDirectory() as tmp:
        results = [drain(args.events, os.path.join(tmp, f"drain{r}.db")) for r in range(args.rounds)]
    wall, user, system = min(results)
    print(
        f"callback drain ({args.events} events, best of {args.rounds}): {wall * 1e6:.2f} µs per callback, "
        f"CPU user {user * 1e6:.2f} µs + system {system * 1e6:.2f} µs per callback"
    )


if __name__ == "__main__":
    main()
