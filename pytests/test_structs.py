"""Structs in both directions: native.Options (Python -> C, validated) and native.Stats (C -> Python)."""

import os
import stat
import threading
import time
import types

import native
import pytest
from _refs import UserMapping, debug_counters_self_cost, native_calls, wait_until

DEFAULTS = {"create": True, "sync": False, "max_key_size": 1024, "max_value_size": 1048576, "file_mode": 0o644}
STATS_FIELDS = (
    "keys",
    "puts",
    "gets",
    "deletes",
    "file_bytes",
    "events_delivered",
    "events_dropped",
    "events_pending",
    "subscriptions",
    "generation",
)


# ---------------------------------------------------------------- Options: values


def test_options_defaults():
    o = native.Options()
    assert o.create is True
    assert o.sync is False
    assert o.max_key_size == 1024
    assert o.max_value_size == 1048576
    assert o.file_mode == 0o644
    assert o.to_dict() == DEFAULTS


def test_options_fields_roundtrip():
    kw = {"create": False, "sync": True, "max_key_size": 7, "max_value_size": 2**30, "file_mode": 0o600}
    o = native.Options(**kw)
    assert o.to_dict() == kw
    for k, v in kw.items():
        got = getattr(o, k)
        assert got == v and type(got) is type(v)
    assert native.Options(**o.to_dict()) == o
    assert native.Options.from_mapping(kw) == o
    assert native.Options.from_mapping(o.to_dict()) == o


def test_options_to_dict_is_a_copy():
    o = native.Options()
    d = o.to_dict()
    d["create"] = False
    d["extra"] = 1
    assert o.create is True
    assert o.to_dict() == DEFAULTS


def test_options_from_mapping_partial_uses_defaults():
    o = native.Options.from_mapping({"sync": True})
    assert o == native.Options(sync=True)
    assert o.max_key_size == 1024
    assert native.Options.from_mapping({}) == native.Options()
    assert native.Options.from_mapping(UserMapping({"file_mode": 0o600})) == native.Options(file_mode=0o600)
    assert native.Options.from_mapping(types.MappingProxyType({"create": False})) == native.Options(create=False)


def test_options_equality():
    assert native.Options() == native.Options()
    assert not (native.Options() != native.Options())  # noqa: SIM202 - __ne__ itself is under test
    for k, v in {
        "create": False,
        "sync": True,
        "max_key_size": 1023,
        "max_value_size": 1048577,
        "file_mode": 0o600,
    }.items():
        assert native.Options(**{k: v}) != native.Options(), k
    assert native.Options() != 5
    assert native.Options() != "Options()"
    assert native.Options() != None


def test_options_repr():
    r = repr(native.Options(max_key_size=4321, max_value_size=98765))
    assert "Options" in r
    assert "4321" in r and "98765" in r
    assert repr(native.Options()) != r


def test_options_keyword_only():
    with pytest.raises(TypeError):
        native.Options(True)


def test_options_immutable():
    o = native.Options()
    for name, value in [
        ("create", False),
        ("sync", True),
        ("max_key_size", 5),
        ("file_mode", 0),
        ("max_value_size", 10),
        ("brand_new", 1),
    ]:
        with pytest.raises(AttributeError):
            setattr(o, name, value)
    with pytest.raises(AttributeError):
        del o.create
    assert o == native.Options()


# ---------------------------------------------------------------- Options: validation

WRONG_TYPES = [
    ("create", 1),
    ("create", 0),
    ("create", "yes"),
    ("create", None),
    ("create", 1.0),
    ("sync", 0),
    ("sync", "no"),
    ("sync", None),
    ("max_key_size", True),
    ("max_key_size", 1.0),
    ("max_key_size", "10"),
    ("max_key_size", None),
    ("max_value_size", False),
    ("max_value_size", 2.0),
    ("max_value_size", b"1"),
    ("file_mode", True),
    ("file_mode", "644"),
    ("file_mode", 0.5),
    ("file_mode", None),
]
OUT_OF_RANGE = [
    ("max_key_size", 0),
    ("max_key_size", 65536),
    ("max_key_size", -1),
    ("max_key_size", 2**32),
    ("max_key_size", 2**32 + 1024),  # truncated to 32 bits this would be a valid 1024
    ("max_value_size", 0),
    ("max_value_size", 2**30 + 1),
    ("max_value_size", -5),
    ("max_value_size", 2**32 + 1),
    ("file_mode", -1),
    ("file_mode", 0o1000),
    ("file_mode", 0o4755),
    ("file_mode", 2**32 + 0o644),
]
HUGE = [("max_key_size", 2**64 + 1), ("max_value_size", 2**100), ("file_mode", -(2**70))]
IN_RANGE = [
    ("max_key_size", 1),
    ("max_key_size", 65535),
    ("max_value_size", 1),
    ("max_value_size", 2**30),
    ("file_mode", 0),
    ("file_mode", 0o777),
]


@pytest.mark.parametrize("field, value", WRONG_TYPES)
def test_options_wrong_type(field, value):
    with pytest.raises(TypeError):
        native.Options(**{field: value})
    with pytest.raises(TypeError):
        native.Options.from_mapping({field: value})


@pytest.mark.parametrize("field, value", OUT_OF_RANGE)
def test_options_out_of_range(field, value):
    with pytest.raises(ValueError):
        native.Options(**{field: value})
    with pytest.raises(ValueError):
        native.Options.from_mapping({field: value})


@pytest.mark.parametrize("field, value", HUGE)
def test_options_beyond_64_bits(field, value):
    with pytest.raises((ValueError, OverflowError)):
        native.Options(**{field: value})


@pytest.mark.parametrize("field, value", IN_RANGE)
def test_options_range_edges_accepted(field, value):
    assert getattr(native.Options(**{field: value}), field) == value


def test_options_unknown_key():
    with pytest.raises(TypeError):
        native.Options(bogus=1)
    with pytest.raises(TypeError):
        native.Options.from_mapping({"bogus": 1})
    with pytest.raises(TypeError):
        native.Options.from_mapping({"create": True, "max_keysize": 10})


@pytest.mark.parametrize("bad", [5, [("create", True)], "create", None, b"x", 1.5])
def test_options_from_mapping_requires_mapping(bad):
    with pytest.raises(TypeError):
        native.Options.from_mapping(bad)


def test_options_from_mapping_non_str_key():
    with pytest.raises(TypeError):
        native.Options.from_mapping({1: True})


# ---------------------------------------------------------------- Options through connect


@pytest.mark.parametrize(
    "opts",
    [
        None,
        native.Options(),
        DEFAULTS,
        {},
        {"sync": True},
        UserMapping({"max_key_size": 16}),
        types.MappingProxyType({"file_mode": 0o600}),
    ],
    ids=["None", "Options", "dict-full", "dict-empty", "dict-partial", "Mapping", "mappingproxy"],
)
def test_connect_accepts_options_forms(store_path, opts):
    with native.connect(store_path, options=opts) as c:
        c.put(b"k", b"v")
        assert c.get(b"k") == b"v"


@pytest.mark.parametrize(
    "opts, exc",
    [
        (5, TypeError),
        ([("create", True)], TypeError),
        ("create", TypeError),
        (object(), TypeError),
        ({"bogus": 1}, TypeError),
        ({"create": 1}, TypeError),
        ({"max_key_size": True}, TypeError),
        ({"max_key_size": "10"}, TypeError),
        ({"max_key_size": 0}, ValueError),
        ({"max_value_size": 2**30 + 1}, ValueError),
        ({"file_mode": 0o1777}, ValueError),
        ({"max_key_size": 2**32 + 8}, ValueError),
    ],
    ids=lambda x: repr(x)[:30],
)
def test_connect_bad_options_never_reach_c(store_path, opts, exc):
    cost = debug_counters_self_cost()
    c0 = native_calls()
    with pytest.raises(exc):
        native.connect(store_path, options=opts)
    assert native_calls() - c0 == cost
    assert not os.path.exists(store_path)


def test_options_max_sizes_enforced(store_path):
    with native.connect(store_path, options=native.Options(max_key_size=3, max_value_size=5)) as c:
        c.put(b"abc", b"12345")
        with pytest.raises(ValueError):
            c.put(b"abcd", b"1")
        with pytest.raises(ValueError):
            c.put(b"a", b"123456")
        assert dict(c.items()) == {b"abc": b"12345"}


def test_options_file_mode_applied(tmp_path):
    old = os.umask(0o022)
    try:
        for mode in (0o600, 0o640):
            p = str(tmp_path / f"mode{mode:o}.db")
            with native.connect(p, options={"file_mode": mode}) as c:
                c.put(b"k", b"v")
            assert stat.S_IMODE(os.stat(p).st_mode) == mode
        p = str(tmp_path / "default.db")
        native.connect(p).close()
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o644
    finally:
        os.umask(old)


def test_options_sync_true_works(store_path):
    with native.connect(store_path, options={"sync": True}) as c:
        for i in range(20):
            c.put(b"k%d" % i, b"v")
        c.delete(b"k0")
    with native.connect(store_path) as c:
        assert len(c) == 19


@pytest.mark.parametrize("create", [True, False])
@pytest.mark.parametrize("sync", [True, False])
def test_create_and_sync_each_reach_c_as_given(tmp_path, flush_delay, create, sync):
    # Both are int32 flags side by side in native_options: one filled from the other is invisible to
    # every check of the Python object. What C does with them is not: create decides whether a missing
    # file is made, and sync whether each write fsyncs, which the flush-delay knob makes take >= 0.4 s.
    missing = str(tmp_path / "missing.db")
    if create:
        native.connect(missing, options=native.Options(create=True, sync=sync)).close()
    else:
        with pytest.raises(native.ConnectionError):
            native.connect(missing, options=native.Options(create=False, sync=sync))
        assert not os.path.exists(missing)
    path = str(tmp_path / "store.db")
    native.connect(path).close()
    with native.connect(path, options=native.Options(create=create, sync=sync)) as c:
        flush_delay(400)
        t0 = time.monotonic()
        c.put(b"k", b"v")
        took = time.monotonic() - t0
        flush_delay(0)
    # A sleep is a sound lower bound; a plain put taking 0.4 s would need a stall far beyond this machine's.
    assert (took >= 0.4) == sync, f"sync={sync}: a put took {took:.3f} s"


# ---------------------------------------------------------------- Stats


def test_stats_fresh(conn):
    s = conn.stats()
    assert isinstance(s, native.Stats)
    for f in STATS_FIELDS:
        assert type(getattr(s, f)) is int, f
    assert (s.keys, s.puts, s.gets, s.deletes) == (0, 0, 0, 0)
    assert (s.events_delivered, s.events_dropped, s.events_pending, s.subscriptions) == (0, 0, 0, 0)
    assert s.file_bytes >= 0


def test_stats_counts(conn, store_path):
    conn.put(b"a", b"1")
    conn.put(b"b", b"2")
    conn.put(b"a", b"3")
    conn.get(b"a")
    with pytest.raises(KeyError):
        conn.get(b"zz")
    conn.delete(b"b")
    with pytest.raises(KeyError):
        conn.delete(b"b")  # not a successful delete
    conn.flush()
    s = conn.stats()
    assert s.keys == 1
    assert s.puts == 3
    assert s.gets == 2
    assert s.deletes == 1
    assert s.file_bytes == os.path.getsize(store_path) > 0
    assert s.to_dict() == {f: getattr(s, f) for f in STATS_FIELDS}


def test_stats_per_connection_counters(store_path):
    with native.connect(store_path) as c:
        for i in range(5):
            c.put(b"k%d" % i, b"v")
    with native.connect(store_path) as c:
        s = c.stats()
        assert s.keys == 5  # persisted
        assert s.puts == 0  # "since connect"
        assert s.file_bytes == os.path.getsize(store_path)


def test_stats_generation_bumps(conn):
    g0 = conn.stats().generation
    conn.put(b"a", b"1")
    g1 = conn.stats().generation
    assert g1 == (g0 + 1) & 0xFFFFFFFF
    conn.put(b"a", b"2")
    conn.delete(b"a")
    g3 = conn.stats().generation
    assert g3 == (g0 + 3) & 0xFFFFFFFF
    with pytest.raises(KeyError):
        conn.delete(b"a")
    with pytest.raises(ValueError):
        conn.put(b"", b"x")
    with pytest.raises(KeyError):
        conn.get(b"nothing")
    assert conn.stats().generation == g3


def test_stats_subscriptions_and_events(conn):
    got = []
    s1 = conn.subscribe(got.append)
    s2 = conn.subscribe(lambda ev: None)
    assert conn.stats().subscriptions == 2
    for i in range(10):
        conn.put(b"k%d" % i, b"v")
    assert wait_until(lambda: conn.stats().events_delivered == 20, 5), conn.stats()
    assert len(got) == 10
    assert conn.stats().events_dropped == 0
    s2.cancel()
    assert conn.stats().subscriptions == 1
    s1.cancel()
    assert conn.stats().subscriptions == 0


def test_stats_events_pending_counts_the_event_in_delivery(conn):
    # events_pending is 0 only once every callback of every queued event has returned: the exact "idle"
    # signal a test needs instead of waiting for the delivered count to hold still.
    entered, release = threading.Event(), threading.Event()
    calls = []

    def blocking(ev):
        entered.set()
        release.wait(5)
        calls.append(ev.key)

    sub = conn.subscribe(blocking)
    try:
        for i in range(3):
            conn.put(b"k%d" % i, b"v")
        assert entered.wait(5)
        s = conn.stats()
        assert (s.events_pending, s.events_delivered) == (3, 0), s  # one in its callback, two queued
        release.set()
        assert wait_until(lambda: conn.stats().events_pending == 0, 5), conn.stats()
        assert conn.stats().events_delivered == 3 and len(calls) == 3
    finally:
        release.set()
        sub.cancel()
    conn.put(b"nobody-listens", b"v")
    assert conn.stats().events_pending == 0


def test_stats_readonly(conn):
    s = conn.stats()
    for f in STATS_FIELDS:
        with pytest.raises(AttributeError):
            setattr(s, f, 123)
    with pytest.raises(AttributeError):
        s.brand_new = 1


def test_stats_eq_hash_repr(conn):
    conn.put(b"x", b"y")
    a = conn.stats()
    b = conn.stats()
    assert a == b
    assert hash(a) == hash(b)
    conn.put(b"z", b"w")
    c = conn.stats()
    assert c != a
    assert a != 5 and a != a.to_dict()
    r = repr(c)
    assert "Stats" in r
    for f in STATS_FIELDS:
        assert f in r, f
    d = c.to_dict()
    assert set(d) == set(STATS_FIELDS)
    d["keys"] = 999
    assert c.keys == 2


def test_stats_object_outlives_connection(store_path):
    c = native.connect(store_path)
    c.put(b"k", b"v")
    s = c.stats()
    c.close()
    del c
    assert s.puts == 1 and s.keys == 1  # a plain Python copy, not a view into the handle


# ---------------------------------------------------------------- Event / EventKind


def test_event_kind_members():
    assert native.EventKind.PUT != native.EventKind.DELETE
    assert native.EventKind.PUT == native.EventKind.PUT


def test_event_fields_from_callback(conn):
    got = []
    with conn.subscribe(got.append):
        conn.put(b"key", b"val")
        conn.delete(b"key")
        assert wait_until(lambda: len(got) == 2, 5)
    put, delete = got
    assert isinstance(put, native.Event)
    assert put.kind == native.EventKind.PUT
    assert type(put.key) is bytes and put.key == b"key"
    assert type(put.value) is bytes and put.value == b"val"
    assert type(put.seq) is int
    assert delete.kind == native.EventKind.DELETE
    assert delete.key == b"key"
    assert delete.value is None
    assert delete.seq == put.seq + 1
    with pytest.raises(AttributeError):
        put.key = b"other"
