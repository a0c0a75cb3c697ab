"""Discovery's arity from a docstring's first line (the fallback for C functions without a text
signature): the parameter list ends at its own closing parenthesis, and a default's commas, parentheses
and braces do not split it."""

from __future__ import annotations

import types
from pathlib import Path

import pytest
from ffi_harness import discover


@pytest.mark.parametrize(
    ("first_line", "arity"),
    [
        # The return annotation is not a parameter list (a reviewer's `decode_varint` got a keyword `next_offset`).
        ("decode_varint(buf, offset=0) -> (value, next_offset)", (1, 2, ["buf", "offset"])),
        ("f(a, b=(1, (2, 3)), c=3)", (1, 3, ["a", "b", "c"])),
        ("f(a, sep=', ', d={1: 2, 3: 4})", (1, 3, ["a", "sep", "d"])),
        ("f(a[, b])", (1, 2, ["a", "b"])),
        ("f(*args)", (0, discover.MAX_ARGS, [])),
        ("f(a, b) -> int", (2, 2, ["a", "b"])),
        ("f(a", None),
    ],
)
def test_arity_from_the_first_line_of_a_docstring(first_line: str, arity: tuple[int, int, list[str]] | None) -> None:
    class Documented:
        __doc__ = first_line + "\n\nWhat it does."

    assert discover._from_docstring(Documented, first_line.split("(")[0]) == arity


def test_what_a_call_returns_comes_from_the_stub_and_the_stubs_it_star_imports(tmp_path: Path) -> None:
    # native's layout: __init__.pyi re-exports `from ._native import *`, where the signatures are. The
    # engine steers the picks after `connect()` to Connection's methods from this.
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "__init__.pyi").write_text("from ._native import *\n")
    (pkg / "_native.pyi").write_text(
        "from typing import Iterator, Optional\n"
        "def connect(path: str) -> Connection: ...\n"
        "def maybe() -> Optional['Cursor']: ...\n"
        "def either() -> Connection | Cursor: ...\n"
        "class Connection:\n"
        "    def cursor(self) -> Cursor | None: ...\n"
        "    def items(self) -> Iterator[bytes]: ...\n"
        "    def close(self) -> None: ...\n"
    )
    module = types.ModuleType("pkg")
    module.__file__ = str(pkg / "__init__.py")
    returns = discover._stub_returns(module)
    assert returns == {"connect": "Connection", "maybe": "Cursor", "Connection.cursor": "Cursor"}
