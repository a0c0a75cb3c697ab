"""Every binding against the PyO3 wrapper, generated from native's stub (pytests/_stub.py), not written
method by method.

Each module function and Connection member a binding shares with `native` (same name, and for a
parameter the same name in the binding's signature) is called in each state a caller can put a
connection in -- open, closed, mid-iteration, right after refused calls, from another thread -- with good
arguments and with every bad value of each parameter (`_arguments.bad_values`, by the parameter's kind
in the stub). Each binding must answer as `native` does on the same store: an equal result, or an
exception of the same kind (compared through the classes both exception trees name alike, so
`facade.NotFoundError` and a plain `KeyError` agree). In the open state a refused call must also let go
of a buffer it was given and keep nothing over 200 repeats, and every accepted form of a function's
argument (an int subclass, an `__index__` object, each spelling of a path) must keep nothing either.

Two differences are allowed, as neither is a defect: a value out of range may be ValueError in one and
OverflowError in another (both refuse it before C), and a closed connection given a bad argument may
report the argument or the closed state, whichever it checks first.
"""

from __future__ import annotations

import inspect
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import facade
import pytest
from _arguments import (
    accepted_values,
    assert_calls_keep_nothing,
    assert_let_go,
    assert_refusals_keep_nothing,
    bad_values,
    made,
)
from _stub import function_call, good, kind, params, stub_functions, stub_methods, stub_properties, stub_returns

if not facade.lib_path().exists():
    pytest.skip(f"{facade.lib_path()} not built: run `make -C libnative`", allow_module_level=True)

import capsule_native
from every_binding import AVAILABLE

native = pytest.importorskip("native")

IMPLS: dict[str, Any] = {"pyo3": native, **AVAILABLE}
# The capsule consumer implements some of native's functions (checksum, process), under the same names.
FUNCTION_IMPLS: dict[str, Any] = {**IMPLS, **({"capsule": capsule_native.module} if capsule_native.module else {})}
STORE = {b"k": b"v", b"k2": b"v2"}
# Names both exception trees use for the same refusal; the first one in an exception's MRO is its kind.
KINDS = ["InvalidStateError", "ProtocolError", "TimeoutError", "KeyError", "TypeError", "BufferError", "MemoryError"]
OUT_OF_RANGE = (ValueError, OverflowError)


def _signature(fn: Any) -> list[str]:
    return list(inspect.signature(fn).parameters)


def _connection_with_the_store(impl: Any, path: Path) -> Any:
    conn = impl.connect(path)
    for key, value in STORE.items():
        conn.put(key, value)
    return conn


def _shared_members() -> tuple[list[str], list[str]]:
    """The Connection methods (but the lifecycle dunders) and properties every binding has, as native's
    stub declares them."""
    with tempfile.TemporaryDirectory() as tmp:
        conns = [impl.connect(Path(tmp) / f"{name}.db") for name, impl in AVAILABLE.items()]
        try:
            methods = [
                m
                for m in sorted(stub_methods("Connection"))
                if m not in ("__enter__", "__exit__") and all(hasattr(c, m) for c in conns)
            ]
            props = [p for p in stub_properties("Connection") if all(hasattr(c, p) for c in conns)]
        finally:
            for c in conns:
                c.close()
    return methods, props


METHODS, PROPERTIES = _shared_members()
ITERATORS = {m for m, r in stub_returns("Connection").items() if r.startswith("Iterator[")}


def _impls_with(name: str) -> dict[str, Any]:
    return {n: m for n, m in FUNCTION_IMPLS.items() if hasattr(m, name)}


# The stub's functions native shares with at least one binding.
FUNCTIONS = sorted(n for n in stub_functions() if len(_impls_with(n)) > 1)


def _shared_params(name: str) -> list[tuple[str, str]]:
    """(parameter, annotation) of the stub function `name` that every binding having it has too."""
    return [
        (pname, annotation)
        for pname, annotation, _kw, _default in params(stub_functions()[name])
        if all(pname in _signature(getattr(m, name)) for n, m in _impls_with(name).items() if n != "pyo3")
    ]


def _kind_of(error: type[BaseException]) -> str:
    for cls in error.__mro__:
        if cls.__name__ in KINDS:
            return cls.__name__
        if cls in OUT_OF_RANGE:
            return "ValueError or OverflowError"
    return error.__name__


def _agree(reference: tuple[Any, ...], got: tuple[Any, ...], documented: tuple[type[BaseException], ...]) -> bool:
    """Equal outcomes, or two refusals both among the documented ones for the value (a non-contiguous
    buffer may be a TypeError or a BufferError: native's contract allows either)."""
    kinds = {_kind_of(t) for t in documented}
    return got == reference or (got[0] == reference[0] == "raise" and {got[1], reference[1]} <= kinds)


def _plain(result: Any) -> Any:
    """A result comparable across bindings: values as they are, any other object by 'an object' (a
    Connection, a Stats: each binding has its own class)."""
    if result is None or isinstance(result, (bytes, int, str, list, tuple)):
        return result
    return "an object"


def _error_detail(e: BaseException) -> tuple[Any, ...]:
    """What a libnative error carries beyond its class (its status code, errno, the operation, the message
    libnative wrote), all of which must match native's: a binding that reports the wrong errno or op for
    the same failure is wrong even with the right class. Argument refusals carry none of these."""
    if not hasattr(e, "code"):
        return ()
    return tuple(getattr(e, a, None) for a in ("code", "errno", "op", "message"))


def _outcome(call: Callable[[], Any], thread: bool = False) -> tuple[Any, ...]:
    box: dict[str, tuple[Any, ...]] = {}

    def run() -> None:
        try:
            box["outcome"] = ("ok", _plain(call()))
        except Exception as e:  # noqa: BLE001 - whatever happens is compared
            box["outcome"] = ("raise", _kind_of(type(e)), *_error_detail(e))

    if thread:
        t = threading.Thread(target=run)
        t.start()
        t.join(30)
        assert not t.is_alive(), "STUCK: the call from another thread did not return within 30 s"
    else:
        run()
    return box["outcome"]


# --- Connection members, in every state ---------------------------------------------------------------


def _mid_iteration(conn: Any) -> Any:
    it = iter(conn.items())
    next(it)
    return it  # kept alive by the caller for the call


def _after_refusals(conn: Any) -> None:
    for refused in (lambda: conn.get(b"missing"), lambda: conn.put(None, b"v"), lambda: conn.delete(b"missing")):
        try:
            refused()
        except Exception:  # noqa: BLE001, S110 - the refusal's own outcome is judged elsewhere
            pass


STATES: dict[str, Callable[[Any], Any]] = {
    "open": lambda _conn: None,
    "closed": lambda conn: conn.close(),
    "mid-iteration": _mid_iteration,
    "after refusals": _after_refusals,
    "another thread": lambda _conn: None,
}


def _member_call(conn: Any, member: str, args: list[Any]) -> Callable[[], Any]:
    if member in PROPERTIES:
        return lambda: getattr(conn, member)
    method = getattr(conn, member)
    if member in ITERATORS:
        return lambda: list(method(*args))  # the whole pass: an iterator may refuse only when stepped
    return lambda: method(*args)


MEMBERS = [*METHODS, *PROPERTIES]
MEMBER_CASES = [(state, member, -1, "good", None, ()) for state in STATES for member in MEMBERS] + [
    (state, member, position, what, value, expected)
    for state in STATES
    for member in METHODS
    for position, annotation in enumerate(stub_methods("Connection")[member])
    for what, value, expected in bad_values(kind(annotation))
]


@pytest.mark.parametrize(
    ("state", "member", "position", "what", "value", "expected"),
    MEMBER_CASES,
    ids=[f"{s}-{m}-arg{p}-{w}" if p >= 0 else f"{s}-{m}" for s, m, p, w, _v, _e in MEMBER_CASES],
)
def test_member_answers_as_native(
    tmp_path: Path,
    state: str,
    member: str,
    position: int,
    what: str,
    value: Any,
    expected: tuple[type[BaseException], ...],
) -> None:
    annotations = [] if member in PROPERTIES else stub_methods("Connection")[member]
    outcomes = {}
    for name, impl in IMPLS.items():
        path = tmp_path / "store.db"  # the same path for every binding: `path` answers alike
        conn = _connection_with_the_store(impl, path)
        try:
            _kept = STATES[state](conn)  # an iterator mid-pass lives until the call is made
            args = [good(a, i) for i, a in enumerate(annotations)]
            if position >= 0:
                args[position] = arg = made(value)
            call = _member_call(conn, member, args)
            outcomes[name] = _outcome(call, thread=state == "another thread")
            if position >= 0 and state == "open" and name != "pyo3":
                assert_let_go(f"{name}: {member} with {what}", arg)
                if outcomes[name][0] == "raise":
                    assert_refusals_keep_nothing(f"{name}: {member} with {what} as argument {position}", call)
        finally:
            conn.close()
            path.unlink()
    reference = outcomes.pop("pyo3")
    closed_first = state == "closed" and position >= 0  # the closed state may be reported before the argument
    wrong = {
        name: got
        for name, got in outcomes.items()
        if not (_agree(reference, got, expected) or (closed_first and got == ("raise", "InvalidStateError")))
    }
    assert not wrong, f"{member} ({state}, argument {position} {what}): native gave {reference}, {wrong}"


# --- module functions ---------------------------------------------------------------------------------

FUNCTION_CASES = [
    (name, pname, what, value, expected)
    for name in FUNCTIONS
    for pname, annotation in [("", ""), *_shared_params(name)]
    for what, value, expected in ([("good", None, ())] if not pname else bad_values(kind(annotation)))
]


def _close_if_connection(result: Any) -> None:
    if hasattr(result, "close") and hasattr(result, "put"):
        result.close()


@pytest.mark.parametrize("where", ["this thread", "another thread"])
@pytest.mark.parametrize(
    ("name", "pname", "what", "value", "expected"),
    FUNCTION_CASES,
    ids=[f"{n}-{p}-{w}" if p else n for n, p, w, _v, _e in FUNCTION_CASES],
)
def test_function_answers_as_native(
    tmp_path: Path, name: str, pname: str, what: str, value: Any, expected: tuple[type[BaseException], ...], where: str
) -> None:
    outcomes = {}
    for impl_name, impl in _impls_with(name).items():
        arg = made(value)
        base = function_call(impl, name, tmp_path / "f.db", (pname, arg) if pname else None)

        def call(base: Callable[[], Any] = base) -> Any:
            result = base()
            _close_if_connection(result)
            return result

        outcomes[impl_name] = _outcome(call, thread=where == "another thread")
        if pname and where == "this thread" and impl_name != "pyo3":
            assert_let_go(f"{impl_name}: {name}({pname}={what})", arg)
            if outcomes[impl_name][0] == "raise":
                assert_refusals_keep_nothing(f"{impl_name}: {name}({pname}={what})", call)
    reference = outcomes.pop("pyo3")
    wrong = {n: got for n, got in outcomes.items() if not _agree(reference, got, expected)}
    assert not wrong, f"{name}({pname or ''}={what}) from {where}: native gave {reference}, {wrong}"


ACCEPTED_CASES = [
    (impl_name, name, pname, form, make)
    for name in FUNCTIONS
    for pname, annotation in _shared_params(name)
    for form, make in accepted_values(kind(annotation))
    for impl_name in _impls_with(name)
    if impl_name != "pyo3"
]


@pytest.mark.skipif(not hasattr(sys, "getallocatedblocks"), reason="needs sys.getallocatedblocks")
@pytest.mark.parametrize(
    ("impl_name", "name", "pname", "form", "make"),
    ACCEPTED_CASES,
    ids=[f"{i}-{n}-{p}-{f}" for i, n, p, f, _m in ACCEPTED_CASES],
)
def test_function_accepted_argument_keeps_nothing(
    tmp_path: Path, impl_name: str, name: str, pname: str, form: str, make: Callable[[Path], Any]
) -> None:
    value = make(tmp_path / f"{name}.db")
    call = function_call(FUNCTION_IMPLS[impl_name], name, tmp_path / f"{name}.db", (pname, value))
    reference = _outcome(function_call(native, name, tmp_path / f"{name}.db", (pname, value)))
    assert _outcome(call) == reference, f"{impl_name}: {name}({pname}={form})"

    def once() -> None:
        _close_if_connection(call())

    if reference[0] == "ok":
        assert_calls_keep_nothing(f"{impl_name}: {name}({pname}={form})", once, [value])


def test_the_matrix_covers_the_shared_api() -> None:
    # Not vacuous: there are bindings to compare (ctypes and cffi ABI mode need only libnative), and the API
    # every binding shares with native is found, and it is what the bindings are for.
    assert {"ctypes", "cffi-abi"} <= set(AVAILABLE), AVAILABLE
    assert {"put", "get", "delete", "__len__", "items", "flush", "stats", "close"} <= set(METHODS), METHODS
    assert {"closed", "path"} <= set(PROPERTIES), PROPERTIES
    assert {"add", "checksum", "process", "connect"} <= set(FUNCTIONS), FUNCTIONS
    assert [p for p, _a in _shared_params("process")] == ["data", "key", "rounds"]
    assert [p for p, _a in _shared_params("connect")] == ["path", "timeout"]
    if capsule_native.module is None:
        pytest.skip(capsule_native.SKIP_REASON or "the capsule consumer is not built")
    assert {"checksum", "process"} <= {n for n in FUNCTIONS if "capsule" in _impls_with(n)}
