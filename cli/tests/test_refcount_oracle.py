"""The runtime's refcount oracle (runtime._judge_refcounts) on stand-ins for native code (ctypes.pythonapi
does what buggy C would do): an over-decref of a tuple item or of a keyword argument is caught although gc
stops tracking a tuple or dict of atomic values (its references are then invisible to gc.get_referrers),
and code that keeps an item of a tuple argument in a live list is not called a leak."""

from __future__ import annotations

import sys
from typing import Any

import pytest
from ffi_harness import runtime

STANDIN = """
import ctypes

_dec = ctypes.pythonapi.Py_DecRef
_dec.argtypes = [ctypes.py_object]
_registry = []


def overdec_item(pair):  # Py_DECREF(PyTuple_GET_ITEM(pair, 0)): a borrowed reference released
    _dec(pair[0])


def overdec_kw(name=None):  # Py_DECREF of a borrowed keyword argument
    _dec(name)


def register(pair):  # correct: keeps the first item in a live list
    _registry.append(pair[0])
"""


@pytest.fixture(scope="module")
def context(tmp_path_factory: pytest.TempPathFactory) -> runtime.Context:
    where = tmp_path_factory.mktemp("standin")
    (where / "refcount_standin.py").write_text(STANDIN)
    sys.path.insert(0, str(where))
    callables = [
        {"name": n, "kind": "function", "path": n, "min_args": 0, "max_args": 1, "keywords": ["name"]}
        for n in ("overdec_item", "overdec_kw", "register")
    ]
    return runtime.Context({"module": "refcount_standin", "classes": [], "callables": callables})


def _finding(context: runtime.Context, source: str) -> Any:
    _sigs, finding = context.run(runtime.build(source, None))
    return finding and (finding["kind"], finding["site"])


@pytest.mark.parametrize(
    "source",
    [
        "[('overdec_item', 0, [('abcdef', 'xyzw')], {})]",
        "[('overdec_item', 0, [['abcdef', 'xyzw']], {})]",
        "[('overdec_kw', 0, [], {'name': 'abcdef'})]",
    ],
    ids=["tuple item", "list item", "keyword argument"],
)
def test_an_over_decref_is_caught_whatever_holds_the_argument(context: runtime.Context, source: str) -> None:
    name = source.split("'")[1]
    assert _finding(context, source) == ("over-decref", name)


def test_an_item_of_a_tuple_argument_kept_in_a_live_list_is_not_a_leak(context: runtime.Context) -> None:
    assert _finding(context, "[('register', 0, [('abcdef', 'xyzw')], {})]") is None
    assert _finding(context, "[('register', 0, [['ghijkl', 'xyzw']], {})]") is None
