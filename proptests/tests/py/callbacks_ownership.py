import gc
import sys
import time

sys.unraisablehook = lambda args: None  # callbacks that raise on purpose: keep the output quiet


class Recorder:
    def __init__(self):
        self.seen = 0

    def __call__(self, ev):
        self.seen += 1


def dead_within(ref, timeout=2.0):
    deadline = time.monotonic() + timeout
    while True:
        gc.collect()
        if ref() is None:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)


def delivered_within(conn, n, timeout=5.0):
    deadline = time.monotonic() + timeout
    while conn.stats().events_delivered < n:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)
    return True
