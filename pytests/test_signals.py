"""Signals during long native work: Ctrl-C interrupts process() quickly; handlers run; no corruption.

Each scenario runs in a subprocess with a hard timeout: a wrapper that never checks signals would
otherwise hang the suite for minutes (4 MiB x 100000 rounds is hundreds of GB of work)."""

import subprocess
import sys
import textwrap

import pytest

PREAMBLE = textwrap.dedent("""
    import os, signal, sys, threading, time
    import native
    # A shell's background job starts with SIGINT ignored, and Python then installs no handler:
    # install the default one so the tests do not depend on how their runner was started.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    def report(**kw):
        print(" ".join(f"{k}={v}" for k, v in kw.items()), flush=True)
""")


def run(script, timeout=30):
    try:
        p = subprocess.run(
            [sys.executable, "-c", PREAMBLE + textwrap.dedent(script)],
            check=False,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"subprocess hung for {timeout}s (signal never handled?)\nstdout: {e.stdout}\nstderr: {e.stderr}")
    assert "Fatal Python error" not in p.stderr, p.stderr
    out = {}
    for line in p.stdout.splitlines():
        for part in line.split():
            k, _, v = part.partition("=")
            out[k] = v
    return p, out


def test_sigint_from_thread_interrupts_process():
    p, out = run("""
        buf = bytearray(4 << 20)
        sent = {}
        def fire():
            time.sleep(0.3)
            sent["t"] = time.monotonic()
            os.kill(os.getpid(), signal.SIGINT)
        threading.Thread(target=fire, daemon=True).start()
        t0 = time.monotonic()
        try:
            native.process(buf, key=1, rounds=100000)
        except KeyboardInterrupt:
            t1 = time.monotonic()
            buf.append(0)  # the export was released on the error path
            report(result="interrupted", latency=t1 - sent["t"], total=t1 - t0)
        else:
            report(result="completed", total=time.monotonic() - t0)
    """)
    assert p.returncode == 0, p.stderr
    assert out.get("result") == "interrupted", (p.stdout, p.stderr)
    assert float(out["latency"]) < 1.0, out


def test_sigint_from_setitimer_interrupts_process():
    # SIGALRM -> raise KeyboardInterrupt from the handler, as Ctrl-C does
    p, out = run("""
        def h(signum, frame):
            raise KeyboardInterrupt
        signal.signal(signal.SIGALRM, h)
        buf = bytearray(4 << 20)
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        t0 = time.monotonic()
        try:
            native.process(buf, key=7, rounds=100000)
        except KeyboardInterrupt:
            report(result="interrupted", latency=time.monotonic() - t0 - 0.3)
        else:
            report(result="completed")
    """)
    assert p.returncode == 0, p.stderr
    assert out.get("result") == "interrupted", (p.stdout, p.stderr)
    assert float(out["latency"]) < 1.0, out


def test_real_sigint_default_handler_exit():
    # without a try/except, Ctrl-C ends the program with the usual KeyboardInterrupt traceback
    p, _ = run("""
        threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
        native.process(bytearray(4 << 20), rounds=100000)
        print("not reached")
    """)
    assert "not reached" not in p.stdout
    assert "KeyboardInterrupt" in p.stderr
    assert p.returncode != 0


def test_handler_exception_propagates_from_process():
    p, out = run("""
        class Stop(Exception):
            pass
        def h(signum, frame):
            raise Stop("alarm")
        signal.signal(signal.SIGALRM, h)
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        try:
            native.process(bytearray(4 << 20), rounds=100000)
        except Stop as e:
            report(result="stop", msg=str(e))
        else:
            report(result="completed")
    """)
    assert p.returncode == 0, p.stderr
    assert out.get("result") == "stop" and out.get("msg") == "alarm", (p.stdout, p.stderr)


def test_non_raising_handler_does_not_abort_process():
    # a handler that returns normally runs, and the call completes with the exact result
    p, out = run("""
        hits = [0]
        def h(signum, frame):
            hits[0] += 1
        signal.signal(signal.SIGALRM, h)
        size, key, rounds = 4 << 20, 0x01020304, 60
        buf = bytearray(size)
        signal.setitimer(signal.ITIMER_REAL, 0.01, 0.01)
        t0 = time.monotonic()
        native.process(buf, key=key, rounds=rounds)
        t1 = time.monotonic()
        signal.setitimer(signal.ITIMER_REAL, 0)
        k = key.to_bytes(4, "little")
        blk = bytearray(256)
        for _ in range(rounds):
            for i in range(256):
                blk[i] = ((blk[i] ^ k[i % 4]) + i) & 0xff
        ok = buf == bytes(blk) * (size // 256)
        report(result="completed", ok=ok, hits=hits[0], secs=t1 - t0)
    """)
    assert p.returncode == 0, p.stderr
    assert out.get("result") == "completed", (p.stdout, p.stderr)
    assert out["ok"] == "True", out
    if float(out["secs"]) >= 0.1:
        assert int(out["hits"]) >= 1, out
