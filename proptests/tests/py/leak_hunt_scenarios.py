import array
import gc
import mmap
import os
import sys

import native

sys.unraisablehook = lambda args: None


class Callback:
    def __init__(self):
        self.n = 0

    def __call__(self, ev):
        self.n += 1


def connection(path):
    with native.connect(path) as conn:
        for i in range(20):
            conn.put(b"key%d" % i, b"value%d" % i * 3)
        for i in range(20):
            conn.get(b"key%d" % i)
        assert len(list(conn.items())) == 20 and len(list(conn.keys())) == 20
        _ = b"key3" in conn
        conn.delete(b"key3")
        conn.stats()
        conn.flush()
        cb = Callback()
        sub = conn.subscribe(cb)
        with conn.subscribe(lambda ev: None):
            conn.put(b"k", b"v")
        conn.put(b"k2", b"v")
        sub.cancel()
        sub.cancel()
        conn.subscribe(Callback())  # left to close()
    os.remove(path)
    # dropped without close, with a subscription whose callback references the connection (cycle)
    conn = native.connect(path)
    cycle = Callback()
    cycle.conn = conn
    conn.subscribe(cycle)
    conn.put(b"x", b"y")
    del conn, cycle
    gc.collect()
    os.remove(path)
    # dropped without close and outside any cycle: dealloc alone closes it (gc's clear does not run)
    conn = native.connect(path)
    conn.put(b"x", b"y")
    del conn
    os.remove(path)


def buffers(path):
    ba = bytearray(b"abcdefgh" * 64)
    native.checksum(b"bytes" * 10)
    native.checksum(ba)
    native.checksum(memoryview(ba).cast("B", [16, 32]))
    native.checksum(array.array("d", [1.0, 2.0, 3.0]))
    m = mmap.mmap(-1, 4096)
    native.checksum(m)
    native.process(m, key=3)
    m.close()
    native.process(ba, key=0xDEADBEEF, rounds=2)
    native.process(memoryview(ba)[8:], key=1)
    native.process(bytearray(70000), key=5)  # over the GIL-release threshold
    native.checksum(bytes(70000))


def options(path):
    native.Options()
    o = native.Options.from_mapping({"create": True, "sync": False, "max_key_size": 16})
    o.to_dict()
    _ = native.Options(**o.to_dict()) == o
    repr(o)
    with native.connect(path, options={"max_key_size": 8, "max_value_size": 64}) as conn:
        conn.put(b"k", b"v")
    os.remove(path)


def errors(path):
    bad = [
        lambda: native.checksum("str"),
        lambda: native.checksum(memoryview(b"abcdef")[::2]),
        lambda: native.process(b"read-only"),
        lambda: native.process(bytearray(3), rounds=0),
        lambda: native.process(bytearray(3), key=-1),
        lambda: native.add(2**63, 1),
        lambda: native.add(2**62, 2**62),
        lambda: native.Options(max_key_size=0),
        lambda: native.Options(create=1),
        lambda: native.Options.from_mapping({"bogus": 1}),
        lambda: native.Options.from_mapping({"file_mode": 2**70}),
        lambda: native.connect(path, options={"max_key_size": "8"}),
        lambda: native.connect(path + "/missing/dir/x.db"),
        lambda: native.connect(path, timeout="soon"),
    ]
    for call in bad:
        try:
            call()
        except (TypeError, ValueError, OverflowError, native.Error):
            pass
        else:
            raise AssertionError("an error path did not raise")
    with native.connect(path) as conn:
        for call in (
            lambda: conn.get(b"absent"),
            lambda: conn.delete(b"absent"),
            lambda: conn.put(b"", b"v"),
            lambda: conn.put("str", b"v"),
        ):
            try:
                call()
            except (KeyError, ValueError, TypeError):
                pass
        conn.put(b"a", b"1")
        it = conn.items()
        conn.put(b"b", b"2")
        try:
            next(it)
        except native.InvalidStateError:
            pass
    try:
        conn.put(b"a", b"1")
    except native.InvalidStateError:
        pass
    # A refusal for the connection's state keeps nothing of a good argument either (mutant 114: a refused
    # subscribe kept its callback, a fresh lambda here on every run).
    try:
        conn.subscribe(lambda ev: None)
    except native.InvalidStateError:
        pass
    os.remove(path)
