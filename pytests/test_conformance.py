"""API x state conformance, generated from the stub (native/_native.pyi), not written method by method.

Every public method and dunder of `Connection` the stub declares is called in every state a caller can
put a connection in -- open, closed, mid-iteration, right after each kind of refused call, from another
thread, inside a subscription callback -- and, in the open state, with every kind of bad argument in
each parameter. Each call must give exactly the documented outcome (a result, `KeyError` for a missing
key, `InvalidStateError` once closed, `TypeError` for a wrong type) and return within a bound: a call
that does not is reported as stuck with every thread's stack. A method added to the stub is covered
without touching this file; a method missing from the stub fails `test_the_stub_declares_every_method`.
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

native = pytest.importorskip("native")

STUB = Path(native.__file__).with_name("_native.pyi")
BOUND_S = 5.0
# Outside the data API (their contract is their own, tested in test_handles.py): lifecycle and repr.
LIFECYCLE = {"close", "__enter__", "__exit__"}


def _stub_methods(cls: str) -> dict[str, list[str]]:
    """`{method: [annotation of each parameter after self]}` for the stub's class `cls` (no properties)."""
    tree = ast.parse(STUB.read_text())
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == cls:
            out = {}
            for f in node.body:
                if not isinstance(f, ast.FunctionDef):
                    continue
                if any(isinstance(d, ast.Name) and d.id == "property" for d in f.decorator_list):
                    continue
                params = [*f.args.posonlyargs, *f.args.args][1:]
                out[f.name] = [ast.unparse(p.annotation) if p.annotation else "Any" for p in params]
            return out
    raise AssertionError(f"no class {cls} in {STUB}")


METHODS = _stub_methods("Connection")
DATA_METHODS = sorted(m for m in METHODS if m not in LIFECYCLE)


def _good(annotation: str, position: int) -> Any:
    if annotation == "Buffer":
        return b"k" if position == 0 else b"v"
    if annotation.startswith("Callable"):
        return lambda _event: None
    raise AssertionError(f"no good value for a parameter annotated {annotation!r}: teach _good")


def _bad(annotation: str) -> list[tuple[str, Any, tuple[type[BaseException], ...]]]:
    """(what, value, exceptions that document refusing it)."""
    common: list[tuple[str, Any, tuple[type[BaseException], ...]]] = [
        ("None", None, (TypeError,)),
        ("int", 1, (TypeError,)),
        ("float", 1.5, (TypeError,)),
        ("object()", object(), (TypeError,)),
        ("list", [1], (TypeError,)),
    ]
    if annotation == "Buffer":
        return [
            *common,
            ("str", "k", (TypeError,)),
            ("non-contiguous memoryview", memoryview(b"abcd")[::2], (TypeError, BufferError)),
        ]
    if annotation.startswith("Callable"):
        return [*common, ("str", "f", (TypeError,))]
    raise AssertionError(f"no bad values for a parameter annotated {annotation!r}: teach _bad")


def _args(method: str) -> list[Any]:
    return [_good(a, i) for i, a in enumerate(METHODS[method])]


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


@pytest.mark.parametrize("method", [m for m in DATA_METHODS if m != "subscribe"])
def test_inside_a_callback(conn: Any, method: str) -> None:
    outcome: dict[str, Any] = {}
    done = threading.Event()

    def callback(_event: Any) -> None:
        if done.is_set():
            return
        try:
            outcome["result"] = _call(conn, method)()
        except BaseException as e:  # noqa: BLE001 - judged below
            outcome["error"] = e
        done.set()

    sub = conn.subscribe(callback)
    try:
        conn.put(b"trigger", b"t")
        _bounded(f"flush to deliver the event ({method} in the callback)", conn.flush)
        assert done.wait(BOUND_S), f"STUCK: the callback calling {method} did not finish within {BOUND_S} s"
    finally:
        sub.cancel()
    _open_outcome(method, outcome.get("error"))


BAD_CASES = [
    (method, position, what, value, expected)
    for method in DATA_METHODS
    for position, annotation in enumerate(METHODS[method])
    for what, value, expected in _bad(annotation)
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
    args[position] = value
    _result, error = _bounded(f"{method} with {what} as argument {position}", _call(conn, method, args))
    assert isinstance(error, expected), f"{method} with {what} as argument {position}: {error!r} (result {_result!r})"
    # The refusal left the connection usable and unchanged.
    assert conn.get(b"k") == b"v"
    assert len(conn) == 2
