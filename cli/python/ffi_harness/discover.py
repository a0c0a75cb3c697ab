"""Discover a module's callables and their arity: the fuzz plan (JSON).

Run in a child process (``python -m ffi_harness.discover MODULE``) under the same sanitizer
environment as the engine, so that importing or probing a buggy extension cannot take the CLI down:
a crash while probing is reported by the parent with the callable named on stderr
(``FFI_HARNESS_PROBING name``).

Arity and keywords come from, in order: ``inspect.signature`` (which reads ``__text_signature__``),
a ``.pyi`` stub next to the module, the docstring's first line, and where all are silent the
interpreter's own argument errors (a call with too many arguments tells the limit; an unknown keyword
tells whether keywords are accepted).
"""

from __future__ import annotations

import argparse
import ast
import importlib
import inspect
import json
import re
import sys
import types
from pathlib import Path
from typing import Any

from ffi_harness.runtime import package_types, type_key

MAX_ARGS = 6
DEFAULT_MAX = 3
# Dunders that matter for stateful use; called as bound methods on pool instances.
DUNDERS = (
    "__len__",
    "__getitem__",
    "__setitem__",
    "__delitem__",
    "__contains__",
    "__iter__",
    "__next__",
    "__enter__",
    "__exit__",
    "__call__",
    "__reduce__",
    "__getstate__",
    "__setstate__",
    "__bool__",
    "__hash__",
    "__repr__",
    "__str__",
    "__eq__",
    "__lt__",
    "__add__",
    "__index__",
    "__int__",
    "__float__",
    "__buffer__",
    "__copy__",
    "__deepcopy__",
)
_TOO_MANY = re.compile(
    r"(?:takes|expected|expects)\s+(?:at most |exactly |from \d+ to )?(\d+|no|one)\s+(?:positional\s+)?arguments?"
)
_RANGE = re.compile(r"from (\d+) to (\d+) positional arguments")
_MISSING_POSITIONAL = re.compile(r"missing required argument .*\(pos (\d+)\)|Required argument .*\(pos (\d+)\)")
_UNKNOWN_KEYWORD = re.compile(r"invalid keyword argument|unexpected keyword argument")
_DOC_KEYWORD = re.compile(r"\b([a-z_][a-z0-9_]*)\s*=(?!=)")
# Keyword names tried on a callable that takes keywords without naming them anywhere (a C function
# parsing with PyArg_ParseTupleAndKeywords has no signature): the ones its docstring writes as
# `name=`, then names common across the standard library's and popular extensions' C functions.
COMMON_KEYWORDS = (
    "indent",
    "sort_keys",
    "default",
    "separators",
    "encoding",
    "errors",
    "strict",
    "timeout",
    "size",
    "length",
    "offset",
    "start",
    "end",
    "step",
    "mode",
    "flags",
    "key",
    "reverse",
    "seed",
    "level",
    "protocol",
    "buffering",
    "newline",
    "maxsize",
    "maxlen",
    "limit",
    "count",
    "width",
    "precision",
    "base",
    "byteorder",
    "signed",
    "copy",
    "order",
    "axis",
    "block",
    "blocking",
    "callback",
    "name",
    "path",
    "data",
    "value",
    "format",
    "kind",
    "hook",
    "object_hook",
    "max_length",
    "allow_nan",
)
MAX_KEYWORD_PROBES = 80
MAX_KEYWORDS = 12


def _stub_candidates(module: types.ModuleType) -> list[Path]:
    """Where a module's .pyi may be: beside its file, by its bare name, or its package's __init__.pyi."""
    origin = getattr(module, "__file__", None)
    if not origin:
        return []
    p = Path(origin)
    return [p.with_suffix(".pyi"), p.parent / (p.name.split(".")[0] + ".pyi"), p.parent / "__init__.pyi"]


def _stub_signatures(module: types.ModuleType) -> dict[str, tuple[int, int, list[str]]]:
    """name or Class.method -> (min, max, keywords) from a .pyi next to the module."""
    out: dict[str, tuple[int, int, list[str]]] = {}
    for stub in _stub_candidates(module):
        if not stub.is_file():
            continue
        try:
            tree = ast.parse(stub.read_text())
        except (SyntaxError, OSError, UnicodeDecodeError):
            continue

        def fn_sig(node: ast.FunctionDef | ast.AsyncFunctionDef, method: bool) -> tuple[int, int, list[str]]:
            a = node.args
            pos = [*a.posonlyargs, *a.args]
            if method and pos:
                pos = pos[1:]
            n_def = len(a.defaults)
            mx = MAX_ARGS if a.vararg else len(pos)
            kws = [x.arg for x in a.args[1 if method else 0 :]] + [x.arg for x in a.kwonlyargs]
            return max(0, len(pos) - n_def), mx, kws

        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                out.setdefault(node.name, fn_sig(node, False))
            elif isinstance(node, ast.ClassDef):
                for sub in node.body:
                    if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        key = node.name if sub.name == "__init__" else f"{node.name}.{sub.name}"
                        out.setdefault(key, fn_sig(sub, True))
        break
    return out


def _stub_returns(module: types.ModuleType) -> dict[str, str]:
    """name or Class.method -> the name its .pyi says it returns (`-> Connection`, `-> Cursor | None`), from
    the stub next to the module and the sibling stubs it star-imports (`from ._native import *`)."""
    out: dict[str, str] = {}
    stub = next((c for c in _stub_candidates(module) if c.is_file()), None)
    todo, seen = [stub] if stub else [], set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        try:
            tree = ast.parse(path.read_text())
        except (SyntaxError, OSError, UnicodeDecodeError):
            continue
        for node in tree.body:
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module and node.names[0].name == "*":
                todo.append(path.parent / f"{node.module.replace('.', '/')}.pyi")
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                _add_return(out, node.name, node.returns)
            elif isinstance(node, ast.ClassDef):
                for sub in node.body:
                    if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        _add_return(out, f"{node.name}.{sub.name}", sub.returns)
    return out


def _add_return(out: dict[str, str], key: str, returns: ast.expr | None) -> None:
    """The one class name an annotation names, ignoring `None` (`X | None`, `Optional[X]`, `"X"`)."""
    names: list[str] = []
    parts = [returns]
    while parts:
        a = parts.pop()
        if isinstance(a, ast.Constant) and isinstance(a.value, str):  # a forward reference
            try:
                parts.append(ast.parse(a.value, mode="eval").body)
            except SyntaxError:
                return
        elif isinstance(a, ast.BinOp) and isinstance(a.op, ast.BitOr):
            parts += [a.left, a.right]
        elif isinstance(a, ast.Subscript) and isinstance(a.value, ast.Name) and a.value.id == "Optional":
            parts.append(a.slice)
        elif isinstance(a, ast.Name) and a.id != "None":
            names.append(a.id)
        elif isinstance(a, ast.Attribute):
            names.append(a.attr)
        elif not (isinstance(a, ast.Constant) and a.value is None):
            return  # a generic or anything else: no one class
    if len(names) == 1:
        out.setdefault(key, names[0])


def _from_signature(obj: Any, drop_self: bool) -> tuple[int, int, list[str]] | None:
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return None
    params = list(sig.parameters.values())
    if drop_self and params and params[0].name in ("self", "cls", "$self"):
        params = params[1:]
    lo = hi = 0
    kws: list[str] = []
    var = False
    for prm in params:
        if prm.kind in (prm.POSITIONAL_ONLY, prm.POSITIONAL_OR_KEYWORD):
            hi += 1
            if prm.default is prm.empty:
                lo += 1
        if prm.kind in (prm.POSITIONAL_OR_KEYWORD, prm.KEYWORD_ONLY):
            kws.append(prm.name)
        if prm.kind == prm.VAR_POSITIONAL:
            var = True
    return lo, (MAX_ARGS if var else hi), kws


def _from_docstring(obj: Any, name: str) -> tuple[int, int, list[str]] | None:
    doc = getattr(obj, "__doc__", None)
    if not isinstance(doc, str) or not doc.strip():
        return None
    first = doc.strip().splitlines()[0]
    m = re.match(rf"^\s*(?:[\w.]*\.)?{re.escape(name)}\s*\(", first)
    if not m:
        return None
    # Up to the parenthesis that closes the list, not the last one of the line: `f(buf, offset=0) -> (value,
    # next_offset)` has two parameters, not a `next_offset` keyword.
    depth, end = 1, m.end()
    while end < len(first) and depth:
        depth += {"(": 1, ")": -1}.get(first[end], 0)
        end += 1
    if depth:
        return None
    inner = re.sub(r"'[^']*'|\"[^\"]*\"", "''", first[m.end() : end - 1])  # a default's commas are not separators
    while re.search(r"\([^()]*\)|\{[^{}]*\}", inner):
        inner = re.sub(r"\([^()]*\)|\{[^{}]*\}", "_", inner)
    optional_from = inner.find("[")
    params = [x.strip() for x in re.split(r"[,\[\]]", inner) if x.strip() and x.strip() not in ("/", "*", "self")]
    if any(x.startswith("*") and not x.startswith("**") for x in params):
        return 0, MAX_ARGS, []
    params = [x for x in params if not x.startswith("**")]
    required = [x for x in params if "=" not in x]
    if optional_from >= 0:
        required = [x for x in required if inner.find(x) < optional_from]
    kws = [x.split("=")[0].strip() for x in params if re.match(r"^\w+", x)]
    return len(required), len(params), kws


def _probe(fn: Any, label: str) -> tuple[int, int, list[str]]:
    """Ask the interpreter: too many arguments, then an unknown keyword."""
    print(f"FFI_HARNESS_PROBING {label}", file=sys.stderr, flush=True)
    lo, hi = 0, DEFAULT_MAX
    kws: list[str] = []
    try:
        fn(*([None] * 40))
    except TypeError as e:
        msg = str(e)
        r = _RANGE.search(msg)
        m = _TOO_MANY.search(msg)
        if r:
            lo, hi = int(r.group(1)), int(r.group(2))
        elif m:
            word = m.group(1)
            hi = int(word) if word.isdigit() else {"no": 0, "one": 1}.get(word, 0)
            lo = hi if "exactly" in msg else 0
    except BaseException:  # noqa: BLE001 - 40 arguments accepted (or failed otherwise): varargs
        hi = MAX_ARGS
    print(f"FFI_HARNESS_PROBING {label} (keyword)", file=sys.stderr, flush=True)
    given = lo
    while given <= min(hi, MAX_ARGS):
        try:
            fn(*([None] * given), __ffi_harness_probe__=_ProbeValue())
        except TypeError as e:
            missing = _MISSING_POSITIONAL.search(str(e))
            pos = int(missing.group(missing.lastindex or 1)) if missing else 0
            if pos > given:
                # "missing required argument 'obj' (pos 1)": the minimum arity, and a retry with it
                given = lo = pos
                continue
            if _UNKNOWN_KEYWORD.search(str(e)):
                # The interpreter names an unknown keyword before running the call: each candidate
                # name it does not reject that way is a keyword the callable takes.
                kws = _probe_keywords(fn, given, getattr(fn, "__doc__", None), label)
        except BaseException:  # noqa: BLE001, S110 - keywords accepted, or the call failed otherwise
            pass
        break
    return lo, min(hi, MAX_ARGS), kws


class _ProbeValue:
    """A keyword probe's value: no argument converter accepts it as an int, str, bytes or float, so a
    probe of a known keyword fails in that keyword's conversion instead of running the call."""


def _probe_keywords(fn: Any, lo: int, doc: str | None, label: str) -> list[str]:
    candidates = list(dict.fromkeys([*_DOC_KEYWORD.findall(doc or ""), *COMMON_KEYWORDS]))
    found: list[str] = []
    for name in candidates[:MAX_KEYWORD_PROBES]:
        print(f"FFI_HARNESS_PROBING {label} (keyword {name})", file=sys.stderr, flush=True)
        try:
            fn(*([None] * lo), **{name: _ProbeValue()})
        except TypeError as e:
            if _UNKNOWN_KEYWORD.search(str(e)):
                continue
        except BaseException:  # noqa: BLE001, S110 - rejected otherwise: the keyword was accepted
            pass
        found.append(name)
        if len(found) >= MAX_KEYWORDS:
            break
    return found


def _arity(
    obj: Any,
    name: str,
    key: str,
    stubs: dict[str, tuple[int, int, list[str]]],
    drop_self: bool,
    probe_target: Any | None,
) -> tuple[tuple[int, int, list[str]], str]:
    sig = _from_signature(obj, drop_self)
    if sig is not None:
        return sig, "signature"
    if key in stubs:
        return stubs[key], "stub"
    doc = _from_docstring(obj, name)
    if doc is not None:
        return doc, "docstring"
    if probe_target is not None:
        return _probe(probe_target, key), "probe"
    return (0, DEFAULT_MAX, []), "default"


def _belongs(obj: Any, top: str) -> bool:
    mod = getattr(obj, "__module__", None)
    if mod is None:
        self_mod = getattr(getattr(obj, "__self__", None), "__name__", None)
        return isinstance(self_mod, str) and self_mod.split(".")[0] == top
    return isinstance(mod, str) and mod.split(".")[0] == top


_CYTHON_MEMORYVIEW = {"Enum", "array", "memoryview", "_memoryviewslice"}


def _compiled(t: type) -> bool:
    """A type compiled into the extension (C, C++, Cython, PyO3), not a class its Python code defines:
    an unnamed Python helper class is the package's business, and it would only add work to the plan."""
    if type(t) is not type:
        return False  # an enum, an ABC, a class with its own metaclass: Python code
    if t.__qualname__.startswith("__pyx_"):
        return False  # Cython's closure scopes: no methods
    if t.__qualname__ in _CYTHON_MEMORYVIEW and hasattr(sys.modules.get(t.__module__), "__pyx_unpickle_Enum"):
        return False  # Cython's typed-memoryview support, in every module that uses one: not the module's code
    for v in vars(t).values():
        if isinstance(v, (staticmethod, classmethod)):
            v = v.__func__
        if isinstance(v, (types.FunctionType, property)):
            return False
    return True


def discover(
    module_name: str, setup: str | None, setup_file: str | None, only: list[str] | None, probe: bool = True
) -> dict[str, Any]:
    module = importlib.import_module(module_name)
    top = module_name.split(".")[0]
    stubs = _stub_signatures(module)
    names = getattr(module, "__all__", None)
    if not isinstance(names, (list, tuple)):
        names = [n for n in dir(module) if not n.startswith("_")]
    callables: list[dict[str, Any]] = []
    classes: list[dict[str, Any]] = []
    sources: dict[str, int] = {}
    setup_ns: dict[str, Any] = {}
    if setup:
        setup_ns = {
            "__name__": "__ffi_harness_setup__",
            top: importlib.import_module(top),
            module_name.rsplit(".", 1)[-1]: module,
        }
        exec(compile(setup, setup_file or "<setup>", "exec"), setup_ns)  # noqa: S102 - the user's snippet

    def add(entry: dict[str, Any], how: str) -> None:
        sources[how] = sources.get(how, 0) + 1
        entry["arity_from"] = how
        callables.append(entry)

    class_objs: list[tuple[str, type, str | None]] = []
    wanted_private = set(only or [])
    for n in sorted(set(names)):
        if n.startswith("_") and n not in wanted_private:
            continue  # private even when exported (e.g. a library-wide _shutdown): only when named by --only
        try:
            obj = getattr(module, n)
        except AttributeError:
            continue
        if isinstance(obj, type):
            if issubclass(obj, BaseException) or not _belongs(obj, top):
                continue
            class_objs.append((n, obj, n))
        elif callable(obj) and _belongs(obj, top) and not isinstance(obj, types.ModuleType):
            (lo, hi, kws), how = _arity(obj, n, n, stubs, False, obj if probe else None)
            add({"name": n, "kind": "function", "path": n, "min_args": lo, "max_args": hi, "keywords": kws}, how)
    # Classes of objects the setup built that discovery cannot reach by name.
    for v in setup_ns.values():
        t = type(v)
        if _belongs(t, top) and not isinstance(v, (type, types.ModuleType)) and all(t is not c[1] for c in class_objs):
            class_objs.append((t.__qualname__, t, None))
    # Classes the module never names (an iterator type only `__iter__` returns): fuzzed on the instances
    # the program's own calls return.
    unnamed: set[str] = set()
    for t in package_types(top):
        if issubclass(t, BaseException) or not _compiled(t) or any(t is c[1] for c in class_objs):
            continue
        if any(c[0] == t.__qualname__ for c in class_objs):
            continue  # two types of one name (in two submodules): the named one wins
        class_objs.append((t.__qualname__, t, None))
        unnamed.add(t.__qualname__)
    instances = {name: [v for v in setup_ns.values() if type(v) is cls] for name, cls, _ in class_objs}
    for cname, cls, path in class_objs:
        classes.append({"name": cname, "path": path, **({"type": type_key(cls)} if cname in unnamed else {})})
        if path is not None:
            probe_ctor = cls if probe else None
            (lo, hi, kws), how = _arity(cls, cname, cname, stubs, False, probe_ctor)
            add({"name": cname, "kind": "class", "path": path, "min_args": lo, "max_args": hi, "keywords": kws}, how)
            if probe and not instances[cname] and lo == 0:
                try:
                    instances[cname].append(cls())
                except BaseException:  # noqa: BLE001, S110 - not constructible without arguments
                    pass
        attrs: dict[str, Any] = {}
        for base in reversed(cls.__mro__):
            if base is object or not _belongs(base, top):
                continue
            attrs.update(vars(base))
        for attr, raw in sorted(attrs.items()):
            if attr.startswith("_") and attr not in DUNDERS:
                continue
            if isinstance(raw, (staticmethod, classmethod)):
                raw = raw.__func__
            if not callable(raw) or isinstance(raw, type):
                continue
            key = f"{cname}.{attr}"
            inst = instances[cname][0] if instances[cname] else None
            bound = getattr(inst, attr, None) if inst is not None else None
            (lo, hi, kws), how = _arity(raw, attr, key, stubs, True, bound if probe else None)
            add(
                {
                    "name": key,
                    "kind": "method",
                    "class": cname,
                    "attr": attr,
                    "min_args": lo,
                    "max_args": hi,
                    "keywords": kws,
                },
                how,
            )
    if only:
        wanted = set(only)
        keep_classes = {c["class"] for c in callables if c["kind"] == "method" and c["name"] in wanted}
        callables = [
            c
            for c in callables
            if c["name"] in wanted
            or (c["kind"] == "class" and c["name"] in keep_classes)
            or (c["kind"] == "method" and c["class"] in wanted)
        ]
        missing = sorted(wanted - {c["name"] for c in callables} - {c["name"] for c in classes})
        if missing:
            raise LookupError(f"--only: no callable named {', '.join(missing)}")
    for c in callables:
        c["max_args"] = max(c["min_args"], min(int(c["max_args"]), MAX_ARGS))
    # What a call returns, when its stub names a planned class: the engine then steers some of the next
    # picks to that class's methods (connect() -> Connection: put, items, close...).
    returns = _stub_returns(module)
    planned = {c["name"] for c in classes}
    for c in callables:
        if returns.get(c["name"]) in planned:
            c["returns"] = returns[c["name"]]
    return {
        "module": module_name,
        "module_file": getattr(module, "__file__", None),
        "callables": callables,
        "classes": classes,
        "setup": setup,
        "setup_file": setup_file,
        "arity_sources": sources,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ffi_harness.discover")
    p.add_argument("module")
    p.add_argument("--setup")
    p.add_argument("--only", nargs="*")
    p.add_argument("--no-probe", action="store_true")
    p.add_argument("--out")
    a = p.parse_args(argv)
    setup = Path(a.setup).read_text() if a.setup else None
    try:
        plan = discover(a.module, setup, a.setup, a.only, probe=not a.no_probe)
    except ImportError as e:
        print(f"FFI_HARNESS_ERROR cannot import {a.module}: {e}", file=sys.stderr)
        return 3
    except LookupError as e:
        print(f"FFI_HARNESS_ERROR {e}", file=sys.stderr)
        return 3
    text = json.dumps(plan, indent=1)
    if a.out:
        Path(a.out).write_text(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
