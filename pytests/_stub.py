"""native's type stub (native/_native.pyi) read as data: the classes, methods, module functions and
parameters it declares, and the kind of value each parameter annotation takes. The conformance matrices
are generated from it (test_conformance.py for the PyO3 wrapper, bindings/test_binding_conformance.py for
every binding against the PyO3 wrapper), so a method added to the stub is covered without a new test.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

native = pytest.importorskip("native")

STUB = Path(native.__file__).with_name("_native.pyi")
STUB_TREE = ast.parse(STUB.read_text())


def is_property(f: ast.FunctionDef) -> bool:
    return any(isinstance(d, ast.Name) and d.id == "property" for d in f.decorator_list)


def stub_class(cls: str) -> ast.ClassDef:
    for node in STUB_TREE.body:
        if isinstance(node, ast.ClassDef) and node.name == cls:
            return node
    raise AssertionError(f"no class {cls} in {STUB}")


def stub_methods(cls: str) -> dict[str, list[str]]:
    """`{method: [annotation of each parameter after self]}` for the stub's class `cls` (no properties)."""
    out = {}
    for f in stub_class(cls).body:
        if isinstance(f, ast.FunctionDef) and not is_property(f):
            params = [*f.args.posonlyargs, *f.args.args][1:]
            out[f.name] = [ast.unparse(p.annotation) if p.annotation else "Any" for p in params]
    return out


def stub_properties(cls: str) -> list[str]:
    return [f.name for f in stub_class(cls).body if isinstance(f, ast.FunctionDef) and is_property(f)]


def stub_returns(cls: str) -> dict[str, str]:
    """`{method: its return annotation}` for the stub's class `cls`."""
    return {
        f.name: ast.unparse(f.returns) if f.returns else "Any"
        for f in stub_class(cls).body
        if isinstance(f, ast.FunctionDef) and not is_property(f)
    }


def kind(annotation: str) -> str:
    """The kind of value a parameter takes, from its annotation in the stub."""
    if annotation in ("int", "Buffer"):
        return annotation
    if "PathLike" in annotation:
        return "path"
    if annotation.startswith("Options"):
        return "options"
    if annotation.startswith("float"):
        return "seconds"
    if annotation.startswith("Callable"):
        return "callable"
    raise AssertionError(f"a parameter annotated {annotation!r}: teach kind, good and _arguments.bad_values")


def good(annotation: str, position: int) -> Any:
    what = kind(annotation)
    if what == "Buffer":
        return b"k" if position == 0 else b"v"
    if what == "callable":
        return lambda _event: None
    if what == "int":
        return 1
    raise AssertionError(f"no good value for a parameter annotated {annotation!r}: teach good")


def stub_functions() -> dict[str, ast.FunctionDef]:
    """The public module-level functions of the stub (a leading underscore marks test knobs and hooks)."""
    return {f.name: f for f in STUB_TREE.body if isinstance(f, ast.FunctionDef) and not f.name.startswith("_")}


def params(f: ast.FunctionDef) -> list[tuple[str, str, bool, bool]]:
    """(name, annotation, keyword-only, has a default) of each parameter."""
    positional = [*f.args.posonlyargs, *f.args.args]
    first_default = len(positional) - len(f.args.defaults)
    out = [
        (p.arg, ast.unparse(p.annotation) if p.annotation else "Any", False, i >= first_default)
        for i, p in enumerate(positional)
    ]
    out += [
        (p.arg, ast.unparse(p.annotation) if p.annotation else "Any", True, d is not None)
        for p, d in zip(f.args.kwonlyargs, f.args.kw_defaults)
    ]
    return out


def function_call(
    module: Any, name: str, store_path: Path, override: tuple[str, Any] | None = None
) -> Callable[[], Any]:
    """A call of `module.name` (a function the stub declares) with good values for the parameters without
    a default (a writable buffer, `store_path` for a path, 1 for an int), `override` = (parameter, value)
    replacing or adding one of them."""
    positional: list[Any] = []
    keywords: dict[str, Any] = {}
    for i, (pname, annotation, kw_only, has_default) in enumerate(params(stub_functions()[name])):
        value: Any
        if override is not None and override[0] == pname:
            value = override[1]
        elif has_default:
            continue
        elif kind(annotation) == "path":
            value = os.fspath(store_path)
        elif kind(annotation) == "Buffer":
            value = bytearray(b"payload")  # writable: process() transforms in place
        else:
            value = good(annotation, i)
        if kw_only:
            keywords[pname] = value
        else:
            positional.append(value)
    fn = getattr(module, name)
    return lambda: fn(*positional, **keywords)
