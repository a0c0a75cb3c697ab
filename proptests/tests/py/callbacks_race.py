import threading
import time


def race(native, path, writers, calls_before_cancel, pause, rounds):
    """Threads put while the main thread cancels; a call that starts after cancel() returned is a bug."""
    with native.connect(path) as conn:
        for rnd in range(rounds):
            cancelled = threading.Event()
            late = []
            calls = [0]

            def cb(ev):
                calls[0] += 1
                if cancelled.is_set():
                    late.append(ev.seq)
                if pause:
                    time.sleep(pause)  # widen the in-flight window (releases the GIL)
                if cancelled.is_set():
                    late.append(ev.seq)

            stop = threading.Event()
            errors = []

            def writer(w):
                i = 0
                try:
                    while not stop.is_set():
                        conn.put(b"w%d-%d" % (w, i % 17), b"x")
                        i += 1
                except BaseException as e:  # noqa: BLE001
                    errors.append(e)

            sub = conn.subscribe(cb)
            threads = [threading.Thread(target=writer, args=(w,)) for w in range(writers)]
            for t in threads:
                t.start()
            deadline = time.monotonic() + 10
            while calls[0] < calls_before_cancel and time.monotonic() < deadline:
                time.sleep(0.0005)
            sub.cancel()
            cancelled.set()
            # Keep the writers going a little: a late call would show up now.
            settle = time.monotonic() + 0.02
            while time.monotonic() < settle:
                time.sleep(0.001)
            stop.set()
            for t in threads:
                t.join(10)
            assert not errors, f"writer failed: {errors!r}"
            assert calls[0] >= min(calls_before_cancel, 1), "the callback never ran"
            assert late == [], f"round {rnd}: callback ran after cancel() returned (seq {late})"
