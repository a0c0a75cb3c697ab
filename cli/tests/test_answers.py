"""The runtime's answers oracle (runtime._judge_answers): an object a hostile dunder handed out that
nothing accounts for after the program is a leaked reference; one a live object holds, or one released,
is not. And an Indexable(n) argument has n's shape for the known-crash masks."""

from __future__ import annotations

import ctypes
from typing import Any

from ffi_harness import _engine, runtime

fh: Any = _engine.prelude()  # registered as ffi_harness_prelude, as in the engine
_LIVE: list[Any] = []


def _judge(answers: list[Any]) -> dict[str, Any] | None:
    return runtime._judge_answers(answers, [0] * len(answers), [("as_size", 0, [], {})])


def test_an_answer_nothing_accounts_for_is_a_leak_and_a_held_or_released_one_is_not() -> None:
    fh.forget_answers()
    assert fh.Indexable(2**70).__index__() == 2**70
    assert fh.BadFloat("behave").__float__() == 1.5
    released = fh.take_answers()
    assert len(released) == 2 and _judge(released) is None

    fh.forget_answers()
    # A live list accounts for this reference: one a module holds (a list only a running function's local
    # names is held by nothing gc sees, like a leaked one; see test_refcount_oracle's leaked containers).
    _LIVE.append(fh.Indexable(10**30).__index__())
    assert _judge(fh.take_answers()) is None

    fh.forget_answers()
    leaked = fh.Indexable(10**30).__index__()
    ctypes.pythonapi.Py_IncRef(ctypes.py_object(leaked))  # a reference C code took and never gave back
    del leaked
    try:
        answers = fh.take_answers()
        finding = _judge(answers)
        assert finding is not None and finding["kind"] == "refcount-leak" and finding["site"] == "as_size", finding
        assert (
            "+1 reference(s) to the int a hostile dunder or a callable argument returned during step 0"
            in finding["detail"]
        )
    finally:
        ctypes.pythonapi.Py_DecRef(ctypes.py_object(answers[0]))


def test_an_indexable_int_has_the_shape_of_the_int() -> None:
    crash = ([98], {})
    assert runtime.mask_features(*crash) <= runtime.call_features([fh.Indexable(98)], {})
    assert runtime.call_features([fh.Indexable(2**40)], {}) == runtime.call_features([2**40], {})


def test_what_cpython_refuses_and_leaks_itself_is_not_an_answer() -> None:
    # hash() of an object whose __hash__ returns a str: CPython's slot_tp_hash raises TypeError and, before
    # python/cpython#140406 was fixed, keeps the str (a leak of the interpreter's, found by `ffi-harness
    # fuzz native` in EventKind(BadHash('wrong_type', 0)), blamed on native). The code under test never
    # receives it, so it is not recorded.
    fh.forget_answers()
    try:
        hash(fh.BadHash("wrong_type", 0))
    except TypeError:
        pass
    assert fh.take_answers() == []  # was ['42'], which then counted one reference nothing accounts for


def test_what_a_callable_argument_receives_is_recorded_only_when_made_for_the_call() -> None:
    # prelude._receive keeps an argument with few references (_RECEIVED_MAX_REFS): a dict the code under
    # test built for the call is judged after the program; a type, a module or an interned name, which
    # everybody holds, says nothing by its count and is never recorded.
    import sys

    fh.record_callable_results(True)
    try:
        fh.take_received()
        returner = fh.mk_returner(1)
        returner({"made": "for the call"}, key=["a", "list"])
        returner(int, sys, "__name__", key=str)
        received = fh.take_received()
    finally:
        fh.record_callable_results(False)
    assert [type(v).__name__ for v in received] == ["dict", "list"], received
