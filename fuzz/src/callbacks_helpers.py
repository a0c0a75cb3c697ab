# Callback zoo for the `callbacks` fuzz target, shared verbatim by the fuzzer (exec'd once into a
# module) and by every repro.py it writes, so both run exactly the same callbacks.
import gc
import os
import sys
import threading
import time
import weakref

import native

UNRAISABLE = []

# The keys only the main thread's puts and deletes use (writers use w0..w3, re-entrant puts "reenter"): the
# events for them are checked against the log of those mutations (conn_ref[1]).
MAIN_KEYS = frozenset({b"ka", b"kb", b"kc", b"kd"})

# Native ids of the threads that delivered a callback (the handles' notifier threads): `finish` waits
# until each has exited, so every call a notifier could still make has been made before it looks.
NOTIFIER_TIDS = set()


def _record_unraisable(args):
    UNRAISABLE.append((args.exc_type, str(args.exc_value)))


sys.unraisablehook = _record_unraisable


_THIS_THREAD = threading.local()


def _native_id():
    """threading.get_native_id(), asked once per thread: it is a gettid system call, and a notifier thread
    keeps its Python thread state (and so this local) for its whole life."""
    try:
        return _THIS_THREAD.tid
    except AttributeError:
        _THIS_THREAD.tid = threading.get_native_id()
        return _THIS_THREAD.tid


class CallbackRaised(Exception):
    """Raised by 'raise' callbacks on purpose."""


class Recorder:
    """A callback object: counts calls, notices calls after its cancel returned, and re-enters."""

    def __init__(self, box, kind, conn_ref, boxes):
        self.box = box  # shared with the harness: survives the recorder, so it can be read afterwards
        self.kind = kind
        self.conn_ref = conn_ref
        self.boxes = boxes  # every callback's box so far: a close() from here ends them all

    def __call__(self, ev):
        box = self.box
        if box["cancelled"]:
            box["late"] += 1
        box["calls"] += 1
        NOTIFIER_TIDS.add(_native_id())
        if isinstance(ev, native.Event):
            # One notifier delivers a handle's events in the order they were made: seq only grows.
            if ev.seq <= box["last_seq"]:
                box["disordered"] += 1
            box["last_seq"] = ev.seq
            if ev.key in MAIN_KEYS:
                box["seen"].append((ev.kind.value, ev.key, ev.value))
        self._react(box, ev)

    def _react(self, box, ev):
        if not isinstance(ev, native.Event) or not isinstance(ev.key, bytes):
            box["bad_event"] += 1
        kind, conn = self.kind, self.conn_ref[0]
        if kind == "raise":
            raise CallbackRaised("callback raised on purpose")
        if conn is None:
            return
        if kind == "get":
            conn.get(ev.key)
        elif kind == "put" and ev.key != b"reenter":
            conn.put(b"reenter", b"x")
        elif kind == "close":
            conn.close()
            # close() has returned: no callback of this connection may run any more, not even for the
            # events queued behind this one, and a close deferred by a pinned call is no exception.
            # (Older connections' boxes are marked already: they were closed or dropped.)
            for b in self.boxes:
                b["cancelled"] = True
        elif kind == "cancel_self" and box.get("sub") is not None:
            box["sub"].cancel()
            box["cancelled"] = True  # from inside its own call, too: never called again
        elif kind == "subscribe":
            # A subscription made and cancelled from inside a callback: a call after its cancel()
            # returned counts against this box.
            nested_cancelled = []

            def nested(_ev):
                if nested_cancelled:
                    box["late"] += 1

            conn.subscribe(nested).cancel()
            nested_cancelled.append(True)
        elif kind == "gc":
            gc.collect()
        return


def new_box(log):
    # `log` and `since`: the connection's log of main-thread mutations, and how much of it was made
    # before this subscription existed (none of that may reach it).
    return {
        "calls": 0,
        "late": 0,
        "cancelled": False,
        "bad_event": 0,
        "sub": None,
        "ref": None,
        "last_seq": 0,
        "disordered": 0,
        "seen": [],
        "log": log,
        "since": len(log),
    }


def subscribe(conn_ref, kind, boxes, weakrefs):
    box = new_box(conn_ref[1])
    rec = Recorder(box, kind, conn_ref, boxes)
    box["ref"] = weakref.ref(rec)
    weakrefs.append(box["ref"])
    sub = conn_ref[0].subscribe(rec)
    box["sub"] = sub
    boxes.append(box)
    return sub


def check_released(box, problems, limit=2.0):
    """Once cancel() has returned, the wrapper must let go of the callback: its weakref dies. Polled with
    gc.collect and bounded, as a notifier thread may still be unwinding from its last call."""
    ref = box["ref"]
    deadline = time.monotonic() + limit
    while ref() is not None:
        if time.monotonic() >= deadline:
            problems.append(f"a callback is still alive {limit} s after its cancel() returned: the wrapper kept it")
            return
        gc.collect()
        time.sleep(0.0005)


def put(conn_ref, key, value):
    """A put from the main thread, logged once it returned: the mutations each subscription must see."""
    conn_ref[0].put(key, value)
    conn_ref[1].append((native.EventKind.PUT.value, key, value))


def delete(conn_ref, key):
    """A delete from the main thread (KeyError if absent: nothing happened, nothing logged)."""
    conn_ref[0].delete(key)
    conn_ref[1].append((native.EventKind.DELETE.value, key, None))


def _delivery_problems(i, box, drained):
    """What subscription #i received against the log of main-thread mutations: those made after it
    subscribed, in order, never one made before; all of them when `drained` (every event was delivered
    and it was never cancelled)."""
    problems = []
    if box["disordered"]:
        problems.append(f"subscription #{i}: {box['disordered']} event(s) out of order or repeated (seq did not grow)")
    made, seen = box["log"][box["since"] :], box["seen"]
    rest = iter(made)
    if not all(any(ev == m for m in rest) for ev in seen):  # seen must be a subsequence of made
        early = [ev for ev in seen if ev not in made]
        problems.append(
            f"subscription #{i}: got {seen!r}, not a subsequence of the mutations made after it subscribed "
            f"{made!r}" + (f" (made before it subscribed, or never: {early!r})" if early else "")
        )
    elif drained and not box["cancelled"] and seen != made:
        problems.append(f"subscription #{i}: got {seen!r} of the mutations made after it subscribed {made!r}")
    return problems


def writer(conn_ref, n, errors):
    # The connection the writer is started on, taken now: the input may drop conn_ref's connection
    # before the thread first runs (the soak found `None.put` that way after 22,160 inputs).
    conn = conn_ref[0]

    def run():
        if conn is None:
            return
        for i in range(n):
            try:
                conn.put(b"w%d" % (i % 4), b"v%d" % i)
            except native.InvalidStateError:
                return
            except BaseException as e:  # noqa: BLE001 - anything else is a finding, reported by the harness
                errors.append(repr(e))
                return

    t = threading.Thread(target=run)
    t.start()
    return t


def settle(conn_ref, limit=0.02):
    """Wait (bounded) until the notifier is idle: events are asynchronous. Idle is exact: libnative's
    events_pending counts queued events and the one whose callbacks are running, so 0 means every
    callback of every event so far has returned (and a callback's own put, made before it returned, is
    counted). True when it saw that, with no event dropped (the queue's limit)."""
    conn = conn_ref[0]
    deadline = time.monotonic() + limit
    while True:
        try:
            stats = conn.stats()
        except native.InvalidStateError:
            return False  # closed (perhaps by a callback): nothing can be delivered any more
        if stats.events_pending == 0:
            return stats.events_dropped == 0
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.00002)


def _wait_notifiers_gone(limit):
    """Wait (bounded) until every thread that delivered a callback has exited; False if one is still
    running at the deadline. Every connection is closed and released by now: close joins its notifier,
    or (closed from inside a callback) the notifier tears itself down and exits."""
    start = time.monotonic()
    collected = start
    while True:
        alive = {t for t in NOTIFIER_TIDS if os.path.exists(f"/proc/self/task/{t}")}
        if not alive:
            NOTIFIER_TIDS.clear()
            return True
        now = time.monotonic()
        if now - start >= limit:
            NOTIFIER_TIDS.clear()
            return False
        if now - collected >= 0.1:
            gc.collect()  # a connection only a reference cycle still holds is closed when it is freed
            collected = now
        time.sleep(0.0002)


def finish(conn_ref, subs, boxes, weakrefs, threads, errors):
    """End of an input: join writers, close and release everything, wait until every notifier thread
    is gone, then check no late call and that callbacks were released."""
    for t in threads:
        t.join()
    drained = False
    if conn_ref[0] is not None:
        # Let queued events be delivered before closing (close discards them): without this, whether a
        # callback ran at all depends on timing, and a repro.py would not replay what the fuzzer saw.
        drained = settle(conn_ref, limit=0.2)
        conn_ref[0].close()
    # Which subscriptions were live until here (the others were cancelled or closed on the way), and
    # so must have had every mutation made since they subscribed.
    live = [not b["cancelled"] and b["log"] is conn_ref[1] for b in boxes]
    for b in boxes:
        b["cancelled"] = True
        b["sub"] = None
    conn_ref[0] = None
    subs.clear()
    problems = list(errors)
    deadline = time.monotonic() + 2.0
    while any(w() is not None for w in weakrefs) and time.monotonic() < deadline:
        gc.collect()
        if any(w() is not None for w in weakrefs):
            time.sleep(0.0005)
    # A late call can come until its notifier has exited: waiting for that (not a fixed pause) means
    # every late call is counted below, and costs nothing when close joined the notifier.
    if not _wait_notifiers_gone(2.0):
        problems.append("a notifier thread still runs 2 s after every connection was closed and released")
    for i, b in enumerate(boxes):
        if b["late"]:
            problems.append(f"subscription #{i}: {b['late']} call(s) after cancel/close returned")
        if b["bad_event"]:
            problems.append(f"subscription #{i}: {b['bad_event']} malformed event(s)")
        problems += _delivery_problems(i, {**b, "cancelled": not live[i]}, drained)
    alive = sum(w() is not None for w in weakrefs)
    if alive:
        problems.append(f"{alive} callback object(s) still alive after close + gc: the wrapper leaked them")
    bad = [(t, m) for t, m in UNRAISABLE if t is SystemError or t.__name__ == "PanicException"]
    UNRAISABLE.clear()
    if bad:
        problems.append(f"callbacks raised undocumented errors: {bad}")
    return problems
