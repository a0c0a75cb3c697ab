"""Interpreter shutdown with live connections, subscriptions and threads still using them."""

import os
import subprocess
import sys
import textwrap
import time

FALL_OFF_END = textwrap.dedent("""
    import sys, threading, time
    import native

    conn = native.connect(sys.argv[1])
    seen = [0]

    def cb1(ev):
        seen[0] += 1

    class Cb2:
        def __call__(self, ev):
            bytes(ev.key) * 3
            if ev.value is not None:
                len(ev.value)

    sub1 = conn.subscribe(cb1)
    sub2 = conn.subscribe(Cb2())

    def daemon_writer():
        i = 0
        while True:
            try:
                conn.put(b"d%d" % (i % 100), b"x" * 100)
                conn.get(b"d%d" % (i % 100))
            except native.Error:
                return
            i += 1

    def few_puts():
        for i in range(50):
            conn.put(b"n%d" % i, b"y" * 10)

    threading.Thread(target=daemon_writer, daemon=True).start()
    t = threading.Thread(target=few_puts)
    t.start()
    time.sleep(0.02 + (int(sys.argv[2]) % 5) * 0.01)
    # ... and fall off the end of the script with everything still live
""")

SYS_EXIT_IN_CALLBACK = textwrap.dedent("""
    import sys, threading, time
    import native

    conn = native.connect(sys.argv[1])
    in_cb = threading.Event()

    def slow(ev):
        in_cb.set()
        time.sleep(0.3)          # still running when the main thread exits
        conn.get(ev.key)

    sub = conn.subscribe(slow)
    sub2 = conn.subscribe(lambda ev: None)
    def writer():
        for i in range(200):
            try:
                conn.put(b"k%d" % i, b"v")
            except native.Error:
                return
    threading.Thread(target=writer, daemon=True).start()
    conn.put(b"first", b"v")
    in_cb.wait(5)
    sys.exit(0)
""")

# Notifier threads exiting (each after running a callback, so each releases the thread state it kept)
# while the interpreter exits. Their exits and the atexit hook are ordered by a fence
# (wrapper/src/thread_state.rs) so that no notifier takes the GIL of a finalizing interpreter; that race's
# window is too narrow to hit from Python, so this churn checks the other side: the fence never hangs an
# exit (a hook that waited for it without releasing the GIL hung 12 of 40 runs). Open connections without
# subscriptions are dropped during finalization: closing them detaches, handing the GIL on.
NOTIFIERS_EXITING_AT_EXIT = textwrap.dedent("""
    import os, sys, threading, time
    import native

    d = os.path.dirname(sys.argv[1])
    kept = [native.connect(os.path.join(d, f"kept-{sys.argv[2]}-{i}.db")) for i in range(4)]

    def churn(n):
        i = 0
        while True:
            try:
                with native.connect(os.path.join(d, f"churn-{sys.argv[2]}-{n}-{i % 4}.db")) as c:
                    got = threading.Event()
                    sub = c.subscribe(lambda ev: got.set())
                    c.put(b"k", b"v")
                    got.wait(1)
                    sub.cancel()
            except native.Error:
                return
            i += 1

    for n in range(3):
        threading.Thread(target=churn, args=(n,), daemon=True).start()
    time.sleep(0.01 + (int(sys.argv[2]) % 10) * 0.003)
""")

# A notifier's release runs Python: here a `threading.local` value set in a callback, whose __del__ closes
# another connection (joining that connection's notifier) while the main thread is in the atexit hook. The
# second notifier's exit must not wait for the hook, which waits for the first (a read-write lock as the
# fence deadlocked here on every run).
RELEASE_CLOSES_ANOTHER_AT_EXIT = textwrap.dedent("""
    import os, sys, threading, time
    import native

    d = os.path.dirname(sys.argv[1])
    a = native.connect(os.path.join(d, f"a-{sys.argv[2]}.db"))
    b = native.connect(os.path.join(d, f"b-{sys.argv[2]}.db"))

    class ClosesB:
        def __del__(self):
            time.sleep(0.3)   # meanwhile the main thread falls off the end into the atexit hook
            b.close()

    local = threading.local()
    seen_a, seen_b = threading.Event(), threading.Event()

    def on_a(ev):
        local.closer = ClosesB()   # kept in notifier A's thread state until A exits
        seen_a.set()

    sub_a = a.subscribe(on_a)
    sub_b = b.subscribe(lambda ev: seen_b.set())
    a.put(b"k", b"v")
    b.put(b"k", b"v")
    assert seen_a.wait(5) and seen_b.wait(5)
    sub_a.cancel()
    sub_b.cancel()
    threading.Thread(target=a.close, daemon=True).start()
    time.sleep(0.1)   # A's release is in ClosesB.__del__ now
""")

BAD_MARKERS = ("Fatal Python error", "Segmentation", "Aborted", "core dumped", "panicked")


def _run_many(script, tmp_path, n, parallel=4, timeout=30):
    procs = []
    results = []
    pending = list(range(n))
    deadline = time.monotonic() + timeout
    while pending or procs:
        while pending and len(procs) < parallel:
            i = pending.pop(0)
            path = str(tmp_path / f"shutdown-{i}.db")
            p = subprocess.Popen(
                [sys.executable, "-X", "faulthandler", "-c", script, path, str(i)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            procs.append((i, p))
        i, p = procs.pop(0)
        left = max(0.1, deadline - time.monotonic())
        try:
            _out, err = p.communicate(timeout=left)
        except subprocess.TimeoutExpired:
            p.kill()
            _out, err = p.communicate()
            results.append((i, "hang", err))
            continue
        results.append((i, p.returncode, err))
    return results


def _check(results, n):
    assert len(results) == n
    failures = [(i, rc, err[-2000:]) for i, rc, err in results if rc != 0 or any(m in err for m in BAD_MARKERS)]
    assert failures == [], "\n\n".join(f"run {i}: exit {rc}\n{err}" for i, rc, err in failures)


def test_exit_by_falling_off_the_end_20_times(tmp_path):
    n = 20
    _check(_run_many(FALL_OFF_END, tmp_path, n, parallel=min(6, (os.cpu_count() or 2) * 2)), n)


def test_sys_exit_while_callback_running(tmp_path):
    n = 6
    _check(_run_many(SYS_EXIT_IN_CALLBACK, tmp_path, n, parallel=3), n)


def test_exit_while_notifier_threads_exit_40_times(tmp_path):
    n = 40
    _check(_run_many(NOTIFIERS_EXITING_AT_EXIT, tmp_path, n, parallel=min(6, (os.cpu_count() or 2) * 2)), n)


def test_exit_while_a_notifier_release_closes_another_connection(tmp_path):
    n = 3
    _check(_run_many(RELEASE_CLOSES_ANOTHER_AT_EXIT, tmp_path, n, parallel=3), n)


def test_store_usable_after_unclean_exit(tmp_path):
    # after the abrupt-but-normal exits above, the files they left behind are still valid stores
    import native

    results = _run_many(FALL_OFF_END, tmp_path, 2, parallel=2)
    _check(results, 2)
    for i in range(2):
        with native.connect(str(tmp_path / f"shutdown-{i}.db"), timeout=0) as c:
            keys = set(c.keys())
            assert {b"n%d" % j for j in range(50)} <= keys
