"""Interpreter shutdown with live connections, subscriptions and threads still using them."""

import os
import subprocess
import sys
import textwrap
import time

import pytest

# Every test here runs its work in child processes (each exit is the thing under test): `ffi-harness test
# --leaks` has nothing of this process to measure, so repeating a test would only cost its children again.
pytestmark = pytest.mark.ffi_harness_no_repeat

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

# A notifier's release whose `threading.local` value's __del__ uses the notifier's OWN connection: it closes
# it, or cancels a subscription of it, while another thread's close() is joining that very notifier. Until
# the release counted as "inside a callback", that close or cancel waited for the native close, which waits
# for this thread to exit: a deadlock at runtime, and at exit the atexit hook then waited for it forever.
# argv[3] says what the __del__ does ("close" or "cancel"), argv[4] when ("runtime": the main thread waits
# for it, "exit": the main thread falls off the end into the atexit hook meanwhile).
RELEASE_USES_ITS_OWN_CONNECTION = textwrap.dedent("""
    import os, sys, threading, time
    import native

    d = os.path.dirname(sys.argv[1])
    what, when = sys.argv[3], sys.argv[4]
    a = native.connect(os.path.join(d, f"own-{what}-{when}-{sys.argv[2]}.db"))
    done = threading.Event()

    releasing = threading.Event()

    class UsesA:
        def __del__(self):
            releasing.set()
            time.sleep(0.2)   # a.close() on the closer thread is joining this notifier meanwhile
            if what == "close":
                a.close()
            else:
                keep.cancel()
            done.set()

    local = threading.local()
    seen = threading.Event()

    def on_a(ev):
        local.user = UsesA()   # kept in the notifier's thread state until the notifier exits
        seen.set()

    sub = a.subscribe(on_a)
    keep = a.subscribe(lambda ev: None)
    a.put(b"k", b"v")
    assert seen.wait(5)
    sub.cancel()
    closer = threading.Thread(target=a.close, daemon=True)
    closer.start()
    if when == "runtime":
        assert done.wait(10), "the release's __del__ never finished"
        closer.join(10)
        assert not closer.is_alive(), "close() never returned"
        keep.cancel()   # closed: a no-op
    else:
        assert releasing.wait(5)   # the release is in UsesA.__del__: fall off the end into the hook
""")

# Prepended to the scripts below that fork: the parent waits for its child's exit code, and a child still
# running after 10 s is killed and the script fails with `what`.
WAIT_FOR_CHILD = textwrap.dedent("""
    import os as _os, sys as _sys, time as _time

    def wait_for_child(pid, what):
        deadline = _time.monotonic() + 10
        while True:
            done, status = _os.waitpid(pid, _os.WNOHANG)
            if done:
                return _os.waitstatus_to_exitcode(status)
            if _time.monotonic() > deadline:
                _os.kill(pid, 9)
                _sys.exit(what)
            _time.sleep(0.02)
""")

# A fork while a notifier is releasing its thread state: the child inherits the fence's count of releases
# in progress but not the thread doing it, so its atexit hook waited forever for a release that never ends.
# The connection being closed keeps a subscription: the child's hook cancels it, and must not wait for the
# parent's close.
FORK_DURING_A_RELEASE = WAIT_FOR_CHILD + textwrap.dedent("""
    import os, sys, threading, time, warnings
    import native

    warnings.simplefilter("ignore", DeprecationWarning)   # 3.12+: fork() with threads running
    d = os.path.dirname(sys.argv[1])
    a = native.connect(os.path.join(d, f"fork-{sys.argv[2]}.db"))
    releasing = threading.Event()

    class Slow:
        def __del__(self):
            releasing.set()
            time.sleep(0.5)

    local = threading.local()
    seen = threading.Event()

    def on_a(ev):
        local.slow = Slow()
        seen.set()

    sub = a.subscribe(on_a)
    keep = a.subscribe(lambda ev: None)
    a.put(b"k", b"v")
    assert seen.wait(5)
    sub.cancel()
    threading.Thread(target=a.close, daemon=True).start()
    assert releasing.wait(5)
    pid = os.fork()
    if pid == 0:
        sys.exit(0)   # a normal exit: the atexit hook runs in the child
    code = wait_for_child(pid, "the forked child hung at exit")
    if code != 0:
        sys.exit(f"the forked child failed: {code}")
""")

# `native` first imported by an atexit function: CPython does not run an atexit hook registered while the
# hooks run, so native's never runs, and the connection left open is closed during finalization. Its
# notifier's exit then must not release its thread state (finalization frees it, and taking the GIL there
# hung every run).
IMPORTED_FIRST_AT_EXIT = textwrap.dedent("""
    import atexit, sys, threading

    def late():
        import native
        a = native.connect(sys.argv[1])
        seen = threading.Event()
        local = threading.local()

        def on_a(ev):
            local.value = [ev.seq]
            seen.set()

        sub = a.subscribe(on_a)
        a.put(b"k", b"v")
        assert seen.wait(5)
        globals()["kept"] = (a, sub)   # still open when finalization begins

    atexit.register(late)
""")

# A child forked from a process with a subscribed connection, leaving by a normal exit (its atexit hook and
# finalization run): closing the inherited connection joined a notifier thread the child does not have, so
# every such child hung at exit. The child also opens and subscribes to a connection of its own; the
# parent's subscription still delivers after the child is gone.
FORK_WITH_A_SUBSCRIBED_CONNECTION = WAIT_FOR_CHILD + textwrap.dedent("""
    import os, sys, threading, time, warnings
    import native

    warnings.simplefilter("ignore", DeprecationWarning)   # 3.12+: fork() with threads running
    d = os.path.dirname(sys.argv[1])
    a = native.connect(os.path.join(d, f"parent-{sys.argv[2]}.db"))
    seen = []
    got = threading.Event()

    def on_a(ev):
        seen.append(ev.key)
        got.set()

    sub = a.subscribe(on_a)
    a.put(b"before", b"v")
    assert got.wait(5)
    pid = os.fork()
    if pid == 0:
        try:
            a.put(b"from-child", b"v")
        except native.InvalidStateError:
            pass
        else:
            sys.exit("the child wrote through its parent's connection")
        c = native.connect(os.path.join(d, f"child-{sys.argv[2]}.db"))
        mine = threading.Event()
        c.subscribe(lambda ev: mine.set())
        c.put(b"k", b"v")
        if not mine.wait(5):
            sys.exit("the child's own subscription never delivered")
        sys.exit(0)   # a normal exit, every connection still open
    code = wait_for_child(pid, "the forked child hung at exit")
    if code != 0:
        sys.exit(f"the child failed: {code}")
    got.clear()
    a.put(b"after", b"v")
    assert got.wait(5) and seen == [b"before", b"after"], seen
""")

# A callback that forks: the child's only thread is a copy of the notifier, inside the callback. When the
# callback returns there, the child's program ends (it used to go back into the copied notifier loop: it
# delivered the parent's queued events, then waited forever, or crashed on a callback the child had freed).
# argv[3]: what the child does in the callback: "return", "exit3" (sys.exit(3)), "exitmsg" (sys.exit with a
# message, which must reach the child's stderr as CPython's own exit writes it), "close" (closes the
# inherited connection, then returns), "raise", "interrupt" (KeyboardInterrupt: killed by SIGINT, as
# Python after Ctrl-C), "sigterm" (signals reach it: the notifier it copies blocks them all), "thread"
# (a non-daemon thread it starts is joined before it ends), or "unraisable" (the fork happens in
# sys.unraisablehook, reporting the callback's exception, not in the callback). The child's atexit functions
# run, its callbacks of the parent's events never do; the parent's subscription goes on delivering.
FORK_IN_A_CALLBACK = WAIT_FOR_CHILD + textwrap.dedent("""
    import atexit, os, signal, sys, threading, time, warnings
    import native

    warnings.simplefilter("ignore", DeprecationWarning)   # 3.12+: fork() with threads running
    what = sys.argv[3]
    d = os.path.dirname(sys.argv[1])
    marker = os.path.join(d, f"atexit-{what}-{sys.argv[2]}")
    output = os.path.join(d, f"stdout-{what}-{sys.argv[2]}")
    errput = os.path.join(d, f"stderr-{what}-{sys.argv[2]}")
    a = native.connect(os.path.join(d, f"fork-cb-{what}-{sys.argv[2]}.db"))
    forked = []
    seen = []
    got = threading.Event()
    parent = os.getpid()

    def in_the_child():
        # A block-buffered stdout (a file, as a service's log; PYTHONUNBUFFERED cannot change it): what the
        # child's atexit functions and threads print must reach it, so the streams are flushed last.
        sys.stdout = open(output, "w")
        if what == "thread":
            def late():
                time.sleep(0.3)
                open(marker, "w").close()
                print("the thread ran")
            threading.Thread(target=late).start()
            return
        atexit.register(lambda: (open(marker, "w").close(), print("atexit ran")))
        if what == "exit3":
            sys.exit(3)
        if what == "exitmsg":
            sys.stderr = open(errput, "w")
            sys.exit("fatal: no config")
        if what == "close":
            a.close()
        if what == "raise":
            raise RuntimeError("raised in the child")
        if what == "interrupt":
            raise KeyboardInterrupt
        if what == "sigterm":
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
            os._exit(9)   # SIGTERM never arrived

    def fork_here():
        pid = os.fork()
        if pid:
            forked.append(pid)
            return False
        return True

    def hook(unraisable):
        if unraisable.exc_type is RuntimeError and str(unraisable.exc_value) == "reported" and fork_here():
            in_the_child()

    sys.unraisablehook = hook

    def on_a(ev):
        if os.getpid() != parent:
            os._exit(8)   # the parent's events delivered in the child
        seen.append(ev.key)
        got.set()
        if ev.key != b"fork":
            return
        if what == "unraisable":
            raise RuntimeError("reported")
        if fork_here():
            in_the_child()

    sub = a.subscribe(on_a)
    a.put(b"fork", b"v")
    for i in range(20):
        a.put(b"queued%d" % i, b"v")   # queued for the notifier: the child must not deliver them
    deadline = time.monotonic() + 10
    while not forked and time.monotonic() < deadline:
        time.sleep(0.01)
    pid = forked[0]
    code = wait_for_child(pid, "the child forked in a callback never ended")
    want = {"return": 0, "exit3": 3, "exitmsg": 1, "close": 0, "raise": 1, "interrupt": -signal.SIGINT,
            "sigterm": -signal.SIGTERM, "thread": 0, "unraisable": 0}[what]
    if code != want:
        sys.exit(f"the child forked in a callback ended with {code}, not {want}")
    if what != "sigterm" and not os.path.exists(marker):
        sys.exit("the child's atexit functions (or its non-daemon thread) did not run")
    printed = "the thread ran" if what == "thread" else "atexit ran"
    if what != "sigterm" and printed not in open(output).read():
        sys.exit(f"the child's {printed!r} never reached its stdout: the streams were flushed too early")
    if what == "exitmsg" and "fatal: no config" not in open(errput).read():
        sys.exit("the child's sys.exit message never reached its stderr (CPython writes a non-int code there)")
    got.clear()
    a.put(b"after", b"v")
    assert got.wait(5), "the parent's subscription stopped delivering"
""")

# A C API pin (native._C_API's pin) taken in the parent while another parent thread's close() waits for it,
# then fork(): the child unpins its copy. That must not finish the close in the child (it ran native_close
# on the parent's handle, or hung joining a notifier the child does not have), and the table's put and count
# on the child's copy of the db are refused by libnative (a put would append to the parent's file).
# argv[3]: "sub" subscribes.
CAPSULE_PIN_ACROSS_FORK = WAIT_FOR_CHILD + textwrap.dedent("""
    import ctypes, os, sys, threading, time, warnings
    import native

    warnings.simplefilter("ignore", DeprecationWarning)
    d = os.path.dirname(sys.argv[1])
    conn = native.connect(os.path.join(d, f"pin-{sys.argv[3]}-{sys.argv[2]}.db"))
    if sys.argv[3] == "sub":
        got = threading.Event()
        sub = conn.subscribe(lambda ev: got.set())
        conn.put(b"k", b"v")
        assert got.wait(5)

    class CApi(ctypes.Structure):   # pytests/bindings/capsule_consumer/native_capi.h
        _fields_ = [("version", ctypes.c_uint32), ("size", ctypes.c_uint32),
                    ("checksum", ctypes.c_void_p), ("process", ctypes.c_void_p),
                    ("pin", ctypes.c_void_p), ("unpin", ctypes.c_void_p),
                    ("count", ctypes.c_void_p), ("put", ctypes.c_void_p)]

    get = ctypes.pythonapi.PyCapsule_GetPointer
    get.restype, get.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    api = CApi.from_address(get(native._C_API, b"native._C_API"))
    pin = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.py_object, ctypes.POINTER(ctypes.c_void_p))(api.pin)
    unpin = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(api.unpin)
    count = ctypes.CFUNCTYPE(ctypes.c_size_t, ctypes.c_void_p)(api.count)
    put = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t,
                           ctypes.c_char_p, ctypes.c_size_t)(api.put)
    NATIVE_ESTATE = 5
    db = ctypes.c_void_p()
    p = pin(conn, ctypes.byref(db))
    assert p
    closer = threading.Thread(target=conn.close, daemon=True)
    closer.start()   # waits for the pin
    time.sleep(0.2)
    before = native.debug_counters()["live_handles"]
    pid = os.fork()
    if pid == 0:
        if put(db, b"child", 5, b"v", 1) != NATIVE_ESTATE or count(db) != 0:
            os._exit(8)
        unpin(p)
        os._exit(0 if native.debug_counters()["live_handles"] == before else 7)
    code = wait_for_child(pid, "the child hung unpinning")
    if code == 8:
        sys.exit("the C API's put or count on the child's copy of a pinned db was not refused")
    if code != 0:
        sys.exit("the child's unpin closed its parent's handle")
    unpin(p)
    closer.join(5)
    assert not closer.is_alive() and conn.closed
""")

BAD_MARKERS = ("Fatal Python error", "Segmentation", "Aborted", "core dumped", "panicked")


def _run_many(script, tmp_path, n, parallel=4, timeout=30, extra=()):
    procs = []
    results = []
    pending = list(range(n))
    deadline = time.monotonic() + timeout
    while pending or procs:
        while pending and len(procs) < parallel:
            i = pending.pop(0)
            path = str(tmp_path / f"shutdown-{i}.db")
            p = subprocess.Popen(
                [sys.executable, "-X", "faulthandler", "-c", script, path, str(i), *extra],
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


@pytest.mark.parametrize("when", ["runtime", "exit"])
@pytest.mark.parametrize("what", ["close", "cancel"])
def test_a_notifier_release_that_uses_its_own_connection(tmp_path, what, when):
    n = 2
    script = RELEASE_USES_ITS_OWN_CONNECTION
    results = _run_many(script, tmp_path, n, parallel=2, timeout=20, extra=[what, when])
    _check(results, n)


def test_a_child_forked_during_a_notifier_release_exits(tmp_path):
    n = 2
    _check(_run_many(FORK_DURING_A_RELEASE, tmp_path, n, parallel=2, timeout=20), n)


def test_a_child_forked_with_a_subscribed_connection_exits(tmp_path):
    n = 2
    _check(_run_many(FORK_WITH_A_SUBSCRIBED_CONNECTION, tmp_path, n, parallel=2, timeout=20), n)


@pytest.mark.parametrize(
    "what", ["return", "exit3", "exitmsg", "close", "raise", "interrupt", "sigterm", "thread", "unraisable"]
)
def test_a_child_forked_in_a_callback_ends_when_the_callback_returns(tmp_path, what):
    n = 2
    _check(_run_many(FORK_IN_A_CALLBACK, tmp_path, n, parallel=2, timeout=20, extra=[what]), n)


@pytest.mark.parametrize("subscribed", ["sub", "nosub"])
def test_a_c_api_pin_carried_across_fork_is_the_parents(tmp_path, subscribed):
    n = 2
    _check(_run_many(CAPSULE_PIN_ACROSS_FORK, tmp_path, n, parallel=2, timeout=20, extra=[subscribed]), n)


def test_native_first_imported_by_an_atexit_function(tmp_path):
    n = 2
    _check(_run_many(IMPORTED_FIRST_AT_EXIT, tmp_path, n, parallel=2, timeout=20), n)


def test_store_usable_after_unclean_exit(tmp_path):
    # after the abrupt-but-normal exits above, the files they left behind are still valid stores
    import native

    results = _run_many(FALL_OFF_END, tmp_path, 2, parallel=2)
    _check(results, 2)
    for i in range(2):
        with native.connect(str(tmp_path / f"shutdown-{i}.db"), timeout=0) as c:
            keys = set(c.keys())
            assert {b"n%d" % j for j in range(50)} <= keys
