"""API x state conformance, generated from the stub (native/_native.pyi), not written method by method.

Every public method and dunder of `Connection` the stub declares is called in every state a caller can
put a connection in -- open, closed, mid-iteration, right after each kind of refused call, from another
thread, inside a subscription callback -- and, in the open state, with every kind of bad argument in
each parameter. Each call must give exactly the documented outcome (a result, `KeyError` for a missing
key, `InvalidStateError` once closed, `TypeError` for a wrong type) and return within a bound: a call
that does not is reported as stuck with every thread's stack. A method added to the stub is covered
without touching this file; a method missing from the stub fails `test_the_stub_declares_every_method`.

The same holds for the rest of the stub: every public module function (its result of the declared type,
every parameter with every bad value, from another thread and inside a callback), every member of
`Subscription` in each of its states (whether events still arrive must agree with `active`), and every
iterator the connection hands out in each state (fresh, exhausted, after a write, after close, another
thread, inside a callback; a full pass gives exactly what the store holds). Under `ffi-harness test
--leaks` (how CI runs the pytests) every one of these calls is also a leak check.
"""

from __future__ import annotations

import ast
import faulthandler
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from _arguments import (
    accepted_values,
    assert_calls_keep_nothing,
    assert_let_go,
    assert_refusals_keep_nothing,
    bad_values,
    made,
)
from _refs import in_a_forked_child
from _stub import (
    STUB,
    function_call,
    good,
    kind,
    params,
    stub_functions,
    stub_methods,
    stub_properties,
    stub_returns,
)

native = pytest.importorskip("native")

BOUND_S = 5.0
# Outside the data API (their contract is their own, tested in test_handles.py): lifecycle and repr.
LIFECYCLE = {"close", "__enter__", "__exit__"}


METHODS = stub_methods("Connection")
DATA_METHODS = sorted(m for m in METHODS if m not in LIFECYCLE)


def _args(method: str) -> list[Any]:
    return [good(a, i) for i, a in enumerate(METHODS[method])]


def _bounded(what: str, call: Callable[[], Any]) -> tuple[Any, BaseException | None]:
    """Run `call` on a worker thread; a call that has not returned after BOUND_S fails the test with
    every thread's stack (the worker is left behind: a stuck native call cannot be cancelled)."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["result"] = call()
        except BaseException as e:  # noqa: BLE001 - every outcome is judged by the caller
            box["error"] = e

    t = threading.Thread(target=run, name=f"conformance {what}", daemon=True)
    t.start()
    t.join(BOUND_S)
    if t.is_alive():
        try:
            faulthandler.dump_traceback(file=sys.__stderr__, all_threads=True)
        except (OSError, ValueError, AttributeError):  # no usable stderr fd: the failure still names the call
            pass
        pytest.fail(f"STUCK: {what} did not return within {BOUND_S} s (every thread's stack is on stderr)")
    return box.get("result"), box.get("error")


def _open_outcome(method: str, error: BaseException | None) -> None:
    """What a call with good arguments on an open connection holding b'k' may do."""
    if error is None:
        return
    # A missing key (a state before the call deleted it) is documented; nothing else is.
    if isinstance(error, KeyError) and method in ("get", "delete", "__getitem__", "__delitem__"):
        return
    raise AssertionError(f"{method}{tuple(_args(method))} raised {type(error).__name__}: {error}") from error


@pytest.fixture
def conn(tmp_path: Path) -> Any:
    c = native.connect(os.fspath(tmp_path / "conformance.db"))
    c.put(b"k", b"v")
    c.put(b"k2", b"v2")
    yield c
    c.close()


def _call(conn: Any, method: str, args: list[Any] | None = None) -> Callable[[], Any]:
    bound = getattr(conn, method)
    return lambda: bound(*(_args(method) if args is None else args))


def test_the_stub_declares_every_method() -> None:
    runtime = {n for n in dir(native.Connection) if not n.startswith("_") or n in METHODS}
    public = {n for n in runtime if not n.startswith("_")}
    properties = {n for n in public if isinstance(getattr(native.Connection, n), property)} | {"closed", "path"}
    assert public - properties <= set(METHODS), f"not in {STUB.name}: {sorted(public - properties - set(METHODS))}"
    assert len(DATA_METHODS) >= 14, DATA_METHODS  # the generator found the API, not an empty class


@pytest.mark.parametrize("method", DATA_METHODS)
def test_open(conn: Any, method: str) -> None:
    _result, error = _bounded(f"{method} (open)", _call(conn, method))
    _open_outcome(method, error)


@pytest.mark.parametrize("method", DATA_METHODS)
def test_closed(conn: Any, method: str) -> None:
    conn.close()
    _result, error = _bounded(f"{method} (closed)", _call(conn, method))
    assert isinstance(error, native.InvalidStateError), f"{method} after close(): {error!r} (result {_result!r})"
    assert conn.closed


@pytest.mark.parametrize("method", DATA_METHODS)
def test_mid_iteration(conn: Any, method: str) -> None:
    it = conn.items()
    next(it)
    _result, error = _bounded(f"{method} (an items() iterator half consumed)", _call(conn, method))
    _open_outcome(method, error)
    # The iterator still answers with a pair, the end, or the documented refusal of a changed store.
    _result, error = _bounded("next(items) after " + method, lambda: next(it, None))
    assert error is None or isinstance(error, (native.InvalidStateError, RuntimeError)), repr(error)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
@pytest.mark.parametrize("method", DATA_METHODS)
def test_in_a_forked_child(conn: Any, method: str) -> None:
    # The connection, with a subscription (a notifier thread the child does not have), belongs to the
    # parent: in the child every data call is refused, closed reads True, close() returns, and a new
    # connection works; the parent's connection is untouched by all of it.
    events: list[Any] = []
    sub = conn.subscribe(events.append)
    conn.put(b"k3", b"v3")

    def in_child() -> None:
        handles = native.debug_counters()["live_handles"]  # libnative's ledger, this process's copy
        assert conn.closed, "an inherited connection reads as open"
        try:
            _call(conn, method)()
        except native.InvalidStateError as e:
            assert "fork" in str(e), str(e)
        else:
            raise AssertionError(f"{method} on a connection inherited across fork() was not refused")
        sub.cancel()
        conn.close()
        fresh = native.connect(conn.path + f".child-{os.getpid()}")
        fresh.put(b"x", b"y")
        assert fresh.get(b"x") == b"y"
        fresh.close()
        assert native.debug_counters()["live_handles"] == handles, "the child closed its parent's handle"

    assert in_a_forked_child(in_child, BOUND_S) == "ok"
    _result, error = _bounded(f"{method} (in the parent, after a child used its copy)", _call(conn, method))
    _open_outcome(method, error)
    assert not conn.closed and sub.active


REFUSALS: dict[str, tuple[type[BaseException], Callable[[Any], Any]]] = {
    "get of a missing key": (KeyError, lambda c: c.get(b"missing")),
    "put of None": (TypeError, lambda c: c.put(None, b"v")),
    "a key over max_key_size": (ValueError, lambda c: c.put(b"x" * 100_000, b"v")),
    "an empty key": (ValueError, lambda c: c.put(b"", b"v")),
}


@pytest.mark.parametrize("refusal", sorted(REFUSALS))
@pytest.mark.parametrize("method", DATA_METHODS)
def test_after_an_error(conn: Any, method: str, refusal: str) -> None:
    expected, refused = REFUSALS[refusal]
    with pytest.raises(expected):
        refused(conn)
    _result, error = _bounded(f"{method} (right after {refusal})", _call(conn, method))
    _open_outcome(method, error)


@pytest.mark.parametrize("method", DATA_METHODS)
def test_from_another_thread(conn: Any, method: str) -> None:
    # _bounded already calls from a worker thread; here the connection was made on this one.
    _result, error = _bounded(f"{method} (another thread)", _call(conn, method))
    _open_outcome(method, error)


def _in_a_callback(conn: Any, what: str, call: Callable[[], Any]) -> tuple[Any, BaseException | None]:
    """Run `call` once inside a subscription callback (on libnative's notifier thread, triggered by a put,
    which also makes any open iterator stale) and return its result and exception; bounded."""
    outcome: dict[str, Any] = {}
    done = threading.Event()

    def callback(_event: Any) -> None:
        if done.is_set():
            return
        try:
            outcome["result"] = call()
        except BaseException as e:  # noqa: BLE001 - judged by the caller
            outcome["error"] = e
        done.set()

    with conn.subscribe(callback):
        conn.put(b"trigger", b"t")
        _bounded(f"flush to deliver the event ({what} in the callback)", conn.flush)
        assert done.wait(BOUND_S), f"STUCK: the callback calling {what} did not finish within {BOUND_S} s"
    return outcome.get("result"), outcome.get("error")


@pytest.mark.parametrize("method", [m for m in DATA_METHODS if m != "subscribe"])
def test_inside_a_callback(conn: Any, method: str) -> None:
    _result, error = _in_a_callback(conn, method, _call(conn, method))
    _open_outcome(method, error)


BAD_CASES = [
    (method, position, what, value, expected)
    for method in DATA_METHODS
    for position, annotation in enumerate(METHODS[method])
    for what, value, expected in bad_values(kind(annotation))
]


@pytest.mark.parametrize(
    ("method", "position", "what", "value", "expected"),
    BAD_CASES,
    ids=[f"{m}-arg{p}-{w}" for m, p, w, _v, _e in BAD_CASES],
)
def test_bad_argument(
    conn: Any, method: str, position: int, what: str, value: Any, expected: tuple[type[BaseException], ...]
) -> None:
    args = _args(method)
    args[position] = value = made(value)
    _result, error = _bounded(f"{method} with {what} as argument {position}", _call(conn, method, args))
    assert isinstance(error, expected), f"{method} with {what} as argument {position}: {error!r} (result {_result!r})"
    assert_let_go(what, value)
    assert_refusals_keep_nothing(f"{method} with {what} as argument {position}", _call(conn, method, args))
    # The refusal left the connection usable and unchanged.
    assert conn.get(b"k") == b"v"
    assert len(conn) == 2


# --- module functions -------------------------------------------------------------------------------


FUNCTIONS = stub_functions()
# What each declared return annotation means at run time.
RETURNS: dict[str, type] = {"int": int, "None": type(None), "Connection": native.Connection, "dict[str, int]": dict}


def _function_call(name: str, tmp_path: Path, override: tuple[str, Any] | None = None) -> Callable[[], Any]:
    return function_call(native, name, tmp_path / f"{name}.db", override)


def _function_outcome(name: str, result: Any, error: BaseException | None) -> None:
    assert error is None, f"{name} with good arguments raised {type(error).__name__}: {error}"
    returns = ast.unparse(FUNCTIONS[name].returns) if FUNCTIONS[name].returns else "Any"
    assert returns in RETURNS, f"{name} returns {returns!r}: teach RETURNS what that is at run time"
    assert isinstance(result, RETURNS[returns]), f"{name} returned {result!r}, declared {returns}"
    if isinstance(result, native.Connection):
        result.close()


def test_the_stub_declares_every_function() -> None:
    public = {n for n in dir(native) if not n.startswith("_") and callable(getattr(native, n))}
    classes = {n for n in public if isinstance(getattr(native, n), type)}
    assert public - classes <= set(FUNCTIONS), f"not in {STUB.name}: {sorted(public - classes - set(FUNCTIONS))}"
    assert len(FUNCTIONS) >= 6, sorted(FUNCTIONS)


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
@pytest.mark.parametrize("where", ["this thread", "another thread", "a callback"])
def test_function(conn: Any, tmp_path: Path, name: str, where: str) -> None:
    call = _function_call(name, tmp_path)
    if where == "a callback":
        result, error = _in_a_callback(conn, name, call)
    elif where == "another thread":
        result, error = _bounded(f"{name} (another thread)", call)
    else:
        result, error = call(), None
    _function_outcome(name, result, error)


FUNCTION_BAD_CASES = [
    (name, pname, what, value, expected)
    for name, f in sorted(FUNCTIONS.items())
    for pname, annotation, _kw, _default in params(f)
    for what, value, expected in bad_values(kind(annotation))
]


@pytest.mark.parametrize(
    ("name", "pname", "what", "value", "expected"),
    FUNCTION_BAD_CASES,
    ids=[f"{n}-{p}-{w}" for n, p, w, _v, _e in FUNCTION_BAD_CASES],
)
def test_function_bad_argument(
    tmp_path: Path, name: str, pname: str, what: str, value: Any, expected: tuple[type[BaseException], ...]
) -> None:
    value = made(value)
    result, error = _bounded(f"{name} with {what} as {pname}", _function_call(name, tmp_path, (pname, value)))
    if isinstance(result, native.Connection):
        result.close()
    assert isinstance(error, expected), f"{name}({pname}={what}): {error!r} (result {result!r})"
    assert_let_go(what, value)
    assert_refusals_keep_nothing(f"{name}({pname}={what})", _function_call(name, tmp_path, (pname, value)))
    # A refused call changes nothing: the same call with good values promptly gives a good answer.
    result, error = _bounded(f"{name} right after refusing {what} as {pname}", _function_call(name, tmp_path))
    _function_outcome(name, result, error)


ACCEPTED_CASES = [
    (name, pname, form, make)
    for name, f in sorted(FUNCTIONS.items())
    for pname, annotation, _kw, _default in params(f)
    for form, make in accepted_values(kind(annotation))
]


@pytest.mark.parametrize(
    ("name", "pname", "form", "make"),
    ACCEPTED_CASES,
    ids=[f"{n}-{p}-{f}" for n, p, f, _m in ACCEPTED_CASES],
)
def test_function_accepted_argument_keeps_nothing(
    tmp_path: Path, name: str, pname: str, form: str, make: Callable[[Path], Any]
) -> None:
    """Every accepted form of each parameter, 200 calls: nothing of it kept (the refusal paths have their
    own check, assert_refusals_keep_nothing)."""
    if not hasattr(sys, "getallocatedblocks"):
        pytest.skip("needs sys.getallocatedblocks")
    value = make(tmp_path / f"{name}.db")
    call = _function_call(name, tmp_path, (pname, value))

    def once() -> None:
        result = call()
        if isinstance(result, native.Connection):
            result.close()

    # The argument, and for a mapping each value in it (the mapping's own count cannot see those).
    held = [value, *(value.values() if isinstance(value, dict) else ())]
    assert_calls_keep_nothing(f"{name}({pname}={form})", once, held)


# --- Subscription -----------------------------------------------------------------------------------

SUB_METHODS = stub_methods("Subscription")
SUB_MEMBERS = sorted([*SUB_METHODS, *stub_properties("Subscription")])
# Where the subscription is when the member is used, and whether it is still active there.
SUB_STATES = {
    "active": True,
    "cancelled": False,
    "connection closed": False,
    "another thread": True,
    "its own callback": True,
}


def _deliver(conn: Any, key: bytes) -> None:
    """Put `key` and return once every subscription made before this call has been offered its event:
    delivery is asynchronous, in subscription order, so a sentinel subscribed last that has seen the
    event proves the notifier got past the others."""
    seen = threading.Event()
    with conn.subscribe(lambda e: seen.set() if e.key == key else None):
        conn.put(key, b"x")
        assert seen.wait(BOUND_S), f"STUCK: the event for {key!r} was not delivered within {BOUND_S} s"


def _use(sub: Any, member: str) -> Any:
    if member in SUB_METHODS:
        args = [None] * len(SUB_METHODS[member])  # __exit__(None, None, None): a clean exit
        return getattr(sub, member)(*args)
    return getattr(sub, member)


def _sub_outcome(sub: Any, member: str, active_before: bool, result: Any) -> bool:
    """The documented result of `member`; whether the subscription is active afterwards."""
    if member == "active":
        assert result is active_before, f"active is {result!r}, expected {active_before}"
        return active_before
    if member == "__enter__":
        assert result is sub, f"__enter__ returned {result!r}, not the subscription"
        return active_before
    if member == "__exit__":
        assert not result, f"__exit__ returned {result!r}: it would swallow the with-block's exception"
    else:
        assert result is None, f"{member} returned {result!r}"
    return False  # cancel and __exit__ end it, in every state (idempotent)


@pytest.mark.parametrize("state", sorted(SUB_STATES))
@pytest.mark.parametrize("member", SUB_MEMBERS)
def test_subscription(conn: Any, member: str, state: str) -> None:
    calls: list[Any] = []
    inside: dict[str, Any] = {}
    done = threading.Event()

    def callback(event: Any) -> None:
        calls.append(event)
        if state == "its own callback" and not done.is_set():
            try:
                inside["result"] = _use(sub, member)
            except BaseException as e:  # noqa: BLE001 - judged below
                inside["error"] = e
            done.set()

    sub = conn.subscribe(callback)
    if state == "cancelled":
        sub.cancel()
    elif state == "connection closed":
        conn.close()
    if state == "its own callback":
        conn.put(b"trigger", b"t")
        assert done.wait(BOUND_S), f"STUCK: {member} in its own callback did not finish within {BOUND_S} s"
        result, error = inside.get("result"), inside.get("error")
    elif state == "another thread":
        result, error = _bounded(f"Subscription.{member} (another thread)", lambda: _use(sub, member))
    else:
        result, error = _bounded(f"Subscription.{member} ({state})", lambda: _use(sub, member))
    assert error is None, f"Subscription.{member} ({state}) raised {type(error).__name__}: {error}"
    active = _sub_outcome(sub, member, SUB_STATES[state], result)
    assert sub.active is active, f"after {member} ({state}) active is {sub.active}, expected {active}"
    # `active` must agree with what the subscription does: events arrive exactly while it is active.
    if not conn.closed:
        before = len(calls)
        _deliver(conn, b"after")
        delivered = any(e.key == b"after" for e in calls[before:])
        assert delivered is active, f"after {member} ({state}): active={active} but delivered={delivered}"
    sub.cancel()


# --- iterators --------------------------------------------------------------------------------------

ITERATORS = {m: r for m, r in stub_returns("Connection").items() if r.startswith("Iterator[")}
ITER_STATES = [
    "fresh",
    "exhausted",
    "after a put",
    "after a delete",
    "connection closed",
    "another thread",
    "a callback",
]
STORE = {b"k": b"v", b"k2": b"v2"}  # what the `conn` fixture holds


def _item_shape(method: str, item: Any) -> None:
    if ITERATORS[method] == "Iterator[tuple[bytes, bytes]]":
        assert isinstance(item, tuple) and len(item) == 2, f"{method}() gave {item!r}"
        assert STORE.get(item[0]) == item[1], f"{method}() gave {item!r}, not a stored pair"
    else:
        assert ITERATORS[method] == "Iterator[bytes]", f"{method} returns {ITERATORS[method]}: teach _item_shape"
        assert item in STORE, f"{method}() gave {item!r}, not a stored key"


def test_the_stub_declares_the_iterators() -> None:
    assert {"items", "keys", "__iter__"} <= set(ITERATORS), sorted(ITERATORS)
    assert set(stub_methods("ItemsIter")) == {"__next__"}


@pytest.mark.parametrize("method", sorted(ITERATORS))
def test_iterator_gives_the_store(conn: Any, method: str) -> None:
    got = list(getattr(conn, method)())
    want = list(STORE.items()) if ITERATORS[method].startswith("Iterator[tuple") else list(STORE)
    assert sorted(got) == sorted(want), f"{method}(): {got!r}"


@pytest.mark.parametrize("state", ITER_STATES)
@pytest.mark.parametrize("method", sorted(ITERATORS))
def test_iterator(conn: Any, method: str, state: str) -> None:
    it = getattr(conn, method)()
    if state == "exhausted":
        assert len(list(it)) == len(STORE)
    elif state == "after a put":
        conn.put(b"k3", b"v3")
    elif state == "after a delete":
        conn.delete(b"k2")
    elif state == "connection closed":
        conn.close()
    if state == "a callback":  # the put that triggers the callback has made the iterator stale
        result, error = _in_a_callback(conn, f"next({method}())", lambda: next(it))
        assert isinstance(error, native.InvalidStateError), f"next() after a write, in a callback: {error!r}"
        return
    result, error = _bounded(f"next({method}()) ({state})", lambda: next(it))
    if state in ("fresh", "another thread"):
        assert error is None, f"next({method}()) ({state}) raised {error!r}"
        _item_shape(method, result)
    elif state == "exhausted":
        assert isinstance(error, StopIteration), f"next() of an exhausted {method}(): {error!r} ({result!r})"
        assert next(it, "end") == "end", "an exhausted iterator started again"
    else:
        assert isinstance(error, native.InvalidStateError), f"next({method}()) {state}: {error!r} ({result!r})"
        # The refusal is lasting, and the connection itself is unaffected by its stale iterator.
        assert isinstance(_bounded("next again", lambda: next(it))[1], native.InvalidStateError)
        if not conn.closed:
            assert conn.get(b"k") == b"v"
