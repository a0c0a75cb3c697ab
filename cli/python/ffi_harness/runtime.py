"""ffi_harness runtime: runs a program of calls against a module and judges every call.

The fuzz engine and every repro-*.py run THIS code (a repro embeds it verbatim), so a repro replays
exactly what the fuzzer did: the same instance pool, receivers, re-entrancy hook and oracles.
Stdlib only. A program is a list of steps ``(callable_name, receiver, [args], {kwargs})``; an argument
is a value, ``R(k)`` (an earlier step's result) or ``I(k)`` (an instance from the pool).

A ``RacedByteArray`` argument (the prelude's) is resized by another thread while the call runs: a
binding that stops pinning a buffer native code still reads lets the resize free it (ASan sees it).
Oracles: ``SystemError`` (a NULL return without an exception, or a result with an exception set) and
PyO3's ``PanicException`` are findings; any other exception is an allowed outcome. Reference counts:
every argument object the program alone owns (top level, or an item of a list/tuple/dict argument) is
watched; after the program, its results and instances are dropped and (if anything moved) the garbage
collector has run, each watched object's count must be what its live holders
(``gc.get_referrers``) account for, compared with a control object held the same way: more is a
leaked reference, fewer an over-decref. What a call returns, and what a hostile dunder answers, must be
released the same way once the program dropped it. A suspected leak is run a second time (Context.run).
None, True and False (mortal before CPython 3.12) must not lose a reference across a call: a call that
returns one without its own reference (`return Py_None;`) or releases one it borrowed is confirmed by
further runs of the whole program, each of which must leave the singleton with fewer references that no
holder accounts for than it found (a correct program, run again, gives back what it takes).
Crashes, sanitizer reports and hangs are judged outside the
process (libFuzzer in the engine, the parent process for a repro).
"""

from __future__ import annotations

import gc
import importlib
import json
import math
import os
import sys
import zlib
from typing import Any, Callable

try:  # a PyDLL call checks the error indicator afterwards: it raises an exception left pending
    import ctypes

    _CHECK_PENDING: Any = ctypes.pythonapi.Py_IsInitialized
except (ImportError, AttributeError, OSError):  # pragma: no cover - no ctypes (then no such check)
    _CHECK_PENDING = None

_KNOWN_TYPES = (bytes, str, int, float, bytearray, tuple)
FINDING_KINDS = ("SystemError", "PanicException", "refcount-leak", "over-decref")
_KEEP: list[Any] = []  # objects over-decref'd during a run: kept alive forever rather than freed twice
_NO_RESULT = object()  # what a call's result slot holds until the call returns


def _singletons_are_mortal() -> bool:
    """CPython 3.12+ makes None, True and False immortal: an over-decref of one is then harmless, and
    sys.getrefcount cannot show it."""
    before = sys.getrefcount(None)
    held = [None] * 64
    mortal = sys.getrefcount(None) - before == len(held)
    del held
    return mortal


# The singletons whose reference counts each call is judged on (none when they are immortal).
SINGLETONS: tuple[Any, ...] = (None, True, False) if _singletons_are_mortal() else ()
# How many more runs of a program must each lose a singleton's reference before a loss is reported. A
# binding that over-decrefs loses on every run; a process warming up can release references gc cannot
# see for a while, on some calls and not others: `native.connect`'s error path released 62 references
# to None over its first thousand calls in a fresh process, in about one call in three, and then none,
# and one confirming run reported it in 30 of 40 processes (2026-12-06). Two runs: 1 of 40; four: none
# of 80. Most of that warm-up was CPython's type cache (see _fill_type_cache), now filled first.
SINGLETON_CONFIRMATIONS = 4


def _fill_type_cache(max_rounds: int = 16) -> tuple[int | None, int]:
    """Fill CPython's type attribute cache (`_PyType_Lookup`'s 4096 entries) with names of our own, and
    return (rounds until one released no reference to None, or None if none did; references to None
    released).

    Up to 3.11 every entry of a fresh cache holds a reference to None (`sys._clear_type_cache()` puts
    them back), which gc cannot see. The first lookup that lands on an entry replaces its name and
    releases that reference; from 3.10 the entry is chosen by the name's address, so code that looks
    attributes up by freshly made names (`PyObject_HasAttrString`) keeps landing on new entries for
    thousands of calls: ujson 5.1.0's `dumps(a_function)` released 868 references to None over its
    first thousand calls under ASan (324 with malloc, 14 with pymalloc), then none, and every one of its
    runs looked like an over-decref, in the fuzzer and in the repro. Filled first, no entry holds None
    any more, and no lookup can put one back. Names of several lengths (allocator size classes) on 64
    types (the type's version tag is XORed into the entry's index) reach every entry."""
    probes = [type(f"_FfiHarnessTypeCacheProbe{i}", (), {"__slots__": ()}) for i in range(64)]
    released = 0
    for r in range(max_rounds):
        names = [f"{'x' * (i % 48)}{r * 512 + i}" for i in range(512)]  # alive for the round: new addresses
        before = sys.getrefcount(None)
        for probe in probes:
            for name in names:
                hasattr(probe, name)
        gone = before - sys.getrefcount(None)
        released += gone
        if gone == 0:  # 32,768 lookups missing an entry that still holds None: about e**-8 per entry
            return r + 1, released
    return None, released


def _settle_gc(max_rounds: int = 8) -> None:
    """Collect until a collection untracks nothing more. gc stops tracking a tuple once everything in it
    is untracked, one level of nesting per collection, and an untracked holder of None is invisible to
    `_unaccounted`: a nested tuple of constants that went untracked during a measured run hid a real
    `return Py_None;` (seen in a pytest process: a code object's constants of pytest's own)."""
    tracked = -1
    for _ in range(max_rounds):
        gc.collect()
        now = len(gc.get_objects())
        if now == tracked:
            return
        tracked = now


# What _fill_type_cache did in this process: it runs once, at the first suspected singleton loss (0.04 s,
# 0.25 s under ASan: a process that never suspects one, such as most repro replays, does not pay it).
_TYPE_CACHE_FILL: tuple[int | None, int] | None = None


def package_types(top: str) -> list[type]:
    """Every ready type of package `top` (by `__module__`), named or not, in a stable order.

    Found through the subclass links each ready type keeps in its bases (PyType_Ready records them), so
    this includes the types a module never names: the iterator only an object's `__iter__` returns, a
    view class. Discovery plans them; the runtime resolves them by "module:qualname" and fuzzes their
    methods on instances the program's calls returned.
    """
    found: dict[str, type] = {}
    stack: list[type] = [object]
    seen = {id(object)}
    while stack:
        try:
            subclasses: list[type] = type.__subclasses__(stack.pop())
        except TypeError:
            continue
        for t in subclasses:
            if id(t) in seen:
                continue
            seen.add(id(t))
            stack.append(t)
            mod = getattr(t, "__module__", None)
            if isinstance(mod, str) and mod.split(".")[0] == top:
                found.setdefault(type_key(t), t)
    return [found[k] for k in sorted(found)]


def type_key(t: type) -> str:
    return f"{t.__module__}:{t.__qualname__}"


class R:
    """Argument marker: the result of an earlier step (k modulo the number of earlier steps)."""

    __slots__ = ("k",)

    def __init__(self, k: int) -> None:
        self.k = k

    def __repr__(self) -> str:
        return f"_rt.R({self.k})"


class I:
    """Argument marker: an instance from the pool, or a plain value the setup named (k modulo their number)."""

    __slots__ = ("k",)

    def __init__(self, k: int) -> None:
        self.k = k

    def __repr__(self) -> str:
        return f"_rt.I({self.k})"


def _crc(text: str) -> int:
    return zlib.crc32(text.encode("utf-8", "replace"))


def _message_words(exc: BaseException) -> str:
    """A coarse, stable shape of an exception's message: its first words, before any quoted or
    parenthesised value, letters only (values would make every input a new signature)."""
    try:
        text = str(exc)
    except BaseException:  # noqa: BLE001 - a hostile __str__
        return "?"
    for stop in ("'", '"', "(", "[", "{", ":"):
        cut = text.find(stop)
        if cut >= 0:
            text = text[:cut]
    words = [w for w in text[:80].split() if w.isalpha()][:4]
    return " ".join(words)


def _message_text(exc: BaseException, limit: int = 200) -> str:
    """An exception's message as a report shows it: the whole first line, cut at `limit` characters.
    ("method peek of object" is what _message_words keeps of "<method 'peek' of 'Ring' objects> returned
    NULL without setting an exception": the part a C author needs is after the quotes.)"""
    try:
        text = str(exc)
    except BaseException:  # noqa: BLE001 - a hostile __str__
        return "?"
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _fresh_copy(value: Any, seen: set[int] | None = None) -> Any:
    """Scalars that only their container owns, like the engine's materialiser builds them (compiled
    constants are shared with the code object and identifier-like strings are interned). Lists and
    dicts are updated in place (identity and cycles kept: a self-referential list stays one)."""
    t = type(value)
    if t is str and len(value) >= 2:
        return value[:1] + value[1:]
    if t is bytes and len(value) >= 2:
        return value[:1] + value[1:]
    if t is int and not -5 <= value <= 256:
        return int(str(value))
    if t is float:
        return float(repr(value))
    if t not in (list, tuple, dict):
        return value
    seen = set() if seen is None else seen
    if id(value) in seen:
        return value
    seen.add(id(value))
    if t is list:
        for i in range(len(value)):
            value[i] = _fresh_copy(value[i], seen)
        return value
    if t is dict:
        for k in list(value):
            value[k] = _fresh_copy(value[k], seen)
        return value
    return tuple(_fresh_copy(v, seen) for v in value)


def build(source: str, prelude: Any) -> list[Any]:
    """Evaluate a repro's program source into steps built like the engine builds them."""
    steps = eval(source, {"_fh": prelude, "_rt": sys.modules[__name__]})
    return [
        (name, recv, [_fresh_copy(a) for a in args], {k: _fresh_copy(v) for k, v in kwargs.items()})
        for name, recv, args, kwargs in steps
    ]


# --- known-crash masks ---------------------------------------------------------------------------
# A shallow crash that fires every few seconds (ujson 5.1.0's `dumps` on any lone-surrogate key) would
# hide every deeper bug of the same callable if the callable were left out. Instead, once a crash keeps
# coming back, the driver minimises it and masks calls *shaped like* its minimised call: the calls whose
# arguments have every unusual feature of the crashing arguments (a lone surrogate in a dict key, a
# negative or huge integer in position 1, a hostile object's type...). Everything else of that callable
# (other keywords, other values) is still fuzzed.


def _int_features(v: int) -> list[str]:
    out = ["neg"] if v < 0 else []
    bits = abs(v).bit_length()
    if bits > 16:
        out.append("bits>64" if bits > 64 else "bits>32" if bits > 32 else "bits>16")
    return out


def _value_features(v: Any) -> list[str]:
    """The unusual properties of one scalar (empty: nothing unusual about it)."""
    t = type(v)
    if t is str:
        out = []
        if any(0xD800 <= ord(c) <= 0xDFFF for c in v):
            out.append("surrogate")
        if "\0" in v:
            out.append("nul")
        if not v.isascii():
            out.append("non-ascii")
        return out
    if t in (bytes, bytearray):
        out = ["nul"] if b"\0" in v else []
        try:
            bytes(v).decode("utf-8")
        except UnicodeDecodeError:
            out.append("non-utf8")
        return out
    if t is int:
        return _int_features(v)
    if t is float:
        return ["nan"] if math.isnan(v) else ["inf"] if math.isinf(v) else []
    return []


_PLAIN = (type(None), bool, int, float, str, bytes, bytearray, list, tuple, dict, set, frozenset)


def _features(v: Any, where: str, out: set[str], budget: list[int]) -> None:
    """Tokens `where:type[:property]` for `v` and what it contains (bounded walk)."""
    budget[0] -= 1
    if budget[0] < 0:
        return
    t = type(v)
    if t.__name__ == "Indexable" and t.__module__ == "ffi_harness_prelude":
        # An int in another form (the engine's Indexable(n)) has the shape of that int: a crash minimised
        # to f(98) also masks f(Indexable(98)), instead of ending engine run after engine run.
        _features(v.value, where, out, budget)
        return
    name = t.__name__
    out.add(f"{where}:{name}")
    for prop in _value_features(v):
        out.add(f"{where}:{name}:{prop}")
    if t not in _PLAIN and t not in (R, I):
        # A hostile or user object (subclasses of builtins included): unusual by itself. Never walked:
        # its own code (a raising __iter__, a re-entrant __eq__) must run in the call, not here.
        out.add(f"{where}:{name}:object")
    inner = where.split("/")[0] + "/in"
    try:
        if t in (list, tuple, set, frozenset):
            for item in list(v)[:32]:
                _features(item, inner, out, budget)
        elif t is dict:
            for key, item in list(v.items())[:32]:
                _features(key, where.split("/")[0] + "/key", out, budget)
                _features(item, inner, out, budget)
    except Exception:  # noqa: BLE001 - a hostile container; what was seen so far is the shape
        out.add(f"{where}:{name}:raises")


def call_features(args: list[Any], kwargs: dict[str, Any]) -> set[str]:
    out: set[str] = set()
    budget = [200]
    for i, a in enumerate(args):
        _features(a, f"a{i}", out, budget)
    for k, a in kwargs.items():
        _features(a, f"kw.{k}", out, budget)
    out.add(f"nargs:{len(args)}")
    return out


# A hang is masked by what it repeats, not by its shape: a second `connect(p)` waits for ever on the lock
# the first one holds, whatever `p` looks like, and leaving `connect` out after such a hang starved every
# method of the class it makes. A repeat mask skips a call of its callable that repeats an earlier call of
# the program (same receiver choice, equal plain arguments); every other call is still made.


def _plain_key(v: Any, depth: int = 0) -> Any:
    """A stand-in for an argument as a C parser sees it, or None (a container too deep or too long to
    compare). Hashes, not values: a key that held the argument would be a reference the refcount oracle
    cannot account for. An int is an int in every form a parser takes it (False, Indexable(0), an int
    subclass); any other object is its type, since comparing it would run its code (a hostile __eq__)
    outside the call under test, and two `BadIndex('behave', 0)` are one lock name to the callee."""
    t = type(v)
    if t.__name__ == "Indexable" and t.__module__ == "ffi_harness_prelude":
        return _plain_key(v.value, depth)
    if t in (str, bytes, int, float) or v is None:
        return (t.__name__, hash(v))
    # A subclass of int, str or float is its base value, read through the base type's own slot, so no
    # method of the subclass runs.
    if issubclass(t, int):
        return ("int", hash(int.__pos__(v)))
    if issubclass(t, float):
        return ("float", hash(float.__pos__(v)))
    if issubclass(t, str):
        return ("str", hash(str.__str__(v)))
    if t is tuple or t is list:
        if depth >= 4 or len(v) > 32:  # bounded: a list may hold itself
            return None
        items = tuple(_plain_key(x, depth + 1) for x in v)
        return None if None in items else (t.__name__, items)
    return ("object", t.__module__, t.__qualname__)


def _call_key(recv: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """What makes two calls of one callable the same call, or None when it cannot tell (`args` and `kwargs`
    resolved: an earlier result passed on is the value it is)."""
    keys = [_plain_key(a) for a in args] + [_plain_key(kwargs[k]) for k in sorted(kwargs)]
    if any(k is None for k in keys):
        return None
    return (hash(recv), hash(tuple(sorted(kwargs))), tuple(keys))


def mask_features(args: list[Any], kwargs: dict[str, Any]) -> frozenset[str]:
    """What a call must have to look like this (minimised, crashing) one: its unusual features, or,
    when nothing about it is unusual, the type of each argument and the argument count."""
    every = call_features(args, kwargs)
    unusual = {f for f in every if f.count(":") >= 2}
    if unusual:
        return frozenset(unusual)
    return frozenset(f for f in every if "/" not in f)


class Context:
    """The target module, its callables and setup, resolved once per process."""

    def __init__(self, plan: dict[str, Any]) -> None:
        self.plan = plan
        self.module = importlib.import_module(plan["module"])
        self.specs: dict[str, dict[str, Any]] = {c["name"]: c for c in plan["callables"]}
        self.setup_code = (
            compile(plan["setup"], plan.get("setup_file") or "<setup>", "exec") if plan.get("setup") else None
        )
        self.classes: dict[str, type] = {}
        unnamed = {c["type"] for c in plan.get("classes", []) if c.get("type")}
        by_key = {type_key(t): t for t in package_types(plan["module"].split(".")[0])} if unnamed else {}
        for cls in plan.get("classes", []):
            obj = self._resolve_path(cls.get("path")) if cls.get("path") else by_key.get(cls.get("type") or "")
            if isinstance(obj, type):
                self.classes[cls["name"]] = obj
        self.functions: dict[str, Any] = {}
        for c in plan["callables"]:
            if c["kind"] in ("function", "class"):
                self.functions[c["name"]] = self._resolve_path(c.get("path"))
        self.zero_arg_methods = [c for c in plan["callables"] if c["kind"] == "method" and c["min_args"] == 0]
        # stats[name] = [calls, returned, raised, skipped (no receiver)]
        self.stats: dict[str, list[int]] = {c["name"]: [0, 0, 0, 0] for c in plan["callables"]}
        self.unraisable = 0
        self.setup_failures = 0
        self.masked = 0
        self.kept_references = 0  # suspected leaks the second run showed to be kept references (see run)
        self.kept_by: dict[str, int] = {}  # the same, by the callable the suspicion was sited at
        self._returned_ids: set[int] = set()  # ids of what the last program's calls returned (see run)
        self._received_ids: set[int] = set()  # ids of what its callables received (see run)
        self._kept_ids: set[int] = set()  # returned objects the second run showed to be kept (a cache)
        self.reported: set[str] = set()  # keys of the findings run() returned (see run)
        self.singleton_checks = 0  # calls whose singleton counts were judged
        self.singleton_false_alarms = 0  # suspected singleton over-decrefs that running again cleared
        self._singleton_sites: set[str] = set()  # callables that running again showed to over-decref one
        self._lost: list[tuple[int, int]] = []  # the last run's singleton losses: (step, singleton index)
        self._racer: Any = getattr(sys.modules.get("ffi_harness_prelude"), "RacedByteArray", None)
        # What a callable argument returns is judged like a hostile dunder's answer (see _judge_answers).
        record = getattr(sys.modules.get("ffi_harness_prelude"), "record_callable_results", None)
        if record is not None:
            record(True)
        self.masks: dict[str, list[frozenset[str]]] = {}
        self.repeat_masks: set[str] = set()  # callables whose repeated calls wait for ever (see _call_key)
        for m in plan.get("masks", []):
            if m.get("repeat"):
                self.repeat_masks.add(m["callable"])
                continue
            for name, _recv, m_args, m_kwargs in build(m["source"], sys.modules.get("ffi_harness_prelude")):
                self.masks.setdefault(name, []).append(mask_features(m_args, m_kwargs))
        self._pool: list[Any] = []
        self._known: list[Any] = []
        self.trace = bool(os.environ.get("FFI_HARNESS_TRACE"))
        sys.unraisablehook = self._unraisable
        prelude = sys.modules.get("ffi_harness_prelude")
        if prelude is not None:
            prelude.set_reenter_hook(self._reenter)
        if self.setup_code is not None:
            self._setup_namespace()  # fail now (a set-up error), not inside the first program

    def _resolve_path(self, path: str | None) -> Any:
        if not path:
            return None
        obj: Any = self.module
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                return None
        return obj

    def _unraisable(self, _info: Any) -> None:
        self.unraisable += 1

    def _setup_namespace(self) -> dict[str, Any]:
        top = self.plan["module"].split(".")[0]
        ns: dict[str, Any] = {
            "__name__": "__ffi_harness_setup__",
            top: importlib.import_module(top),
            "_fh": sys.modules.get("ffi_harness_prelude"),
        }
        ns[self.plan["module"].rsplit(".", 1)[-1]] = self.module
        if self.setup_code is not None:
            exec(self.setup_code, ns)  # noqa: S102 - the user's own setup snippet
        return ns

    def _initial_pool(self) -> list[Any]:
        if self.setup_code is None:
            return []
        ns = self._setup_namespace()
        pool = [v for k, v in sorted(ns.items()) if not k.startswith("_") and self._is_instance(v)]
        # Plain values the setup names (a key that exists, a valid path...): arguments too, through I(k).
        self._known = [v for k, v in sorted(ns.items()) if not k.startswith("_") and type(v) in _KNOWN_TYPES]
        for c in self.plan.get("classes", []):
            if c["name"] not in self.classes:
                for v in pool:
                    if type(v).__qualname__ == c["name"]:
                        self.classes[c["name"]] = type(v)
        return pool

    def _is_instance(self, v: Any) -> bool:
        plain = (type, type(sys), int, float, str, bytes, bool, type(len), type(_crc), type(None))
        if isinstance(v, plain):
            return False
        if self.classes and isinstance(v, tuple(self.classes.values())):
            return True
        mod = getattr(type(v), "__module__", "") or ""
        return mod.split(".")[0] == self.plan["module"].split(".")[0]

    def _reenter(self, n: int) -> Any:
        """The re-entrancy hook: call the n-th zero-argument method on a pool instance."""
        if not self.zero_arg_methods or not self._pool:
            return None
        spec = self.zero_arg_methods[n % len(self.zero_arg_methods)]
        cls = self.classes.get(spec["class"])
        for obj in self._pool:
            if cls is not None and isinstance(obj, cls):
                return getattr(obj, spec["attr"])()
        return None

    def _receiver(self, spec: dict[str, Any], k: int) -> Any:
        cls = self.classes.get(spec["class"])
        if cls is None:
            return None
        live = [o for o in self._pool if isinstance(o, cls)]
        return live[k % len(live)] if live else None

    def run(self, steps: list[Any]) -> tuple[list[int], dict[str, Any] | None]:
        """Run one program; returns (outcome signatures, finding or None). A finding this Context reported
        before is not reported again: the program is judged on, so that a shallow bug that every other
        program meets (a leak in a common call) does not hide the next one from the fuzzer."""
        sigs, finding = self._run_and_confirm(steps)
        if finding is not None:
            self.reported.add(finding["key"])
        return sigs, finding

    def _run_and_confirm(self, steps: list[Any]) -> tuple[list[int], dict[str, Any] | None]:
        """Run one program; returns (outcome signatures, finding or None).

        A suspected leaked reference is confirmed by running the program a second time: a leak grows (or,
        for an object the second run does not reuse, stays), while a reference a binding keeps in a C
        static or a cache gc cannot see (`Py_XSETREF(hook, Py_NewRef(cb))`) is replaced or released."""
        sigs, finding = self._run_program(steps)
        if finding is not None and "_suspects" in finding:
            return sigs, self._confirm_singleton(steps, finding["_suspects"])
        if finding is None or "_held" not in finding:
            return sigs, finding
        if "_orphans" in finding:
            return sigs, self._confirm_orphaned(steps, finding)
        held, excess, reused = finding.pop("_held"), finding.pop("_excess"), finding.pop("_reused")
        _again_sigs, again = self._run_program(steps)
        if reused is None:  # returned or received: the second run handed over the same one (a cache) or a new one
            reused = id(held) in self._returned_ids or id(held) in self._received_ids
        if again is not None and "_suspects" in again:
            again = None  # this run judges the leak; a singleton suspicion is judged when it comes first
        if again is not None:
            for private in ("_held", "_excess", "_reused"):
                again.pop(private, None)
            if again["kind"] != "refcount-leak":
                return sigs, again  # the second run found something else: report that
        gc.collect()
        probe = object()  # held like `held` (a local and a one-item list): what the measuring costs
        now = _unaccounted([held], 0, tuple(_program_containers(steps))) - _unaccounted([probe], 0)
        if now > excess or (now == excess and not reused):
            return sigs, finding
        self._count_kept(finding)  # replaced or released by the second run: kept, not leaked
        if reused and len(self._kept_ids) < 10_000:
            self._kept_ids.add(id(held))  # a cached object returned again: not judged again (lives on)
        return sigs, None

    def _confirm_orphaned(self, steps: list[Any], finding: dict[str, Any]) -> dict[str, Any] | None:
        """An object only orphaned containers held after the first run (see `_orphaned`), confirmed by a
        second run: a leak leaves the first run's container holding it and makes another (a new tuple each
        call); a registry a C static keeps is the same container again (it only grows), and a container a
        static replaces on each call is gone, with the object it held."""
        held, first = finding.pop("_held"), finding.pop("_orphans")
        _again_sigs, again = self._run_program(steps)
        later: set[int] = set()
        if again is not None and "_suspects" not in again:
            if again["kind"] != "refcount-leak":
                for private in ("_held", "_excess", "_reused", "_orphans"):
                    again.pop(private, None)
                return again  # the second run found something else: report that
            later |= again.get("_orphans", set())
        gc.collect()
        still: set[int] = set()
        box = [held]
        containers = tuple(_program_containers(steps))
        _unaccounted(box, 0, containers, still, frozenset(map(id, (box, containers, *containers))))
        del box, again
        if still & first and (still | later) - first:
            return finding
        self._count_kept(finding)
        return None

    def _count_kept(self, finding: dict[str, Any]) -> None:
        self.kept_references += 1
        self.kept_by[finding["site"]] = self.kept_by.get(finding["site"], 0) + 1

    def _confirm_singleton(self, steps: list[Any], suspects: list[tuple[int, int]]) -> dict[str, Any] | None:
        """Calls seemed to take a reference from a singleton. A correct call may also release one: a freed
        object that held None, a collection gc ran in mid-call, a first exception's lazy set-up, or a
        reference gc cannot see (a C static, a field of a type without GC support) that an earlier call
        took and this one replaces. The first run may start from another state than it ends in (what
        earlier programs left); a second run starts from the state the first left, and a correct program
        then gives back every reference it takes. So the second run must end with the singleton holding
        fewer references that no live object accounts for than it started with, and a call of that run
        must have lost one. A warming-up process can also release hidden references on some calls for a
        while, so each of SINGLETON_CONFIRMATIONS runs must lose one; the first loss of the first of them
        is reported."""
        global _TYPE_CACHE_FILL
        if _TYPE_CACHE_FILL is None:
            _TYPE_CACHE_FILL = _fill_type_cache()  # the runs below start with no entry holding None
        step, which = suspects[0]
        if steps[step][0] in self._singleton_sites:
            return _singleton_finding(steps, step, which)  # shown once: every later loss of it is it too
        first: tuple[int, int] | None = None
        _settle_gc()  # once: what earlier programs left half-untracked is untracked before the first run
        for _ in range(SINGLETON_CONFIRMATIONS):
            gc.collect()
            before = [_unaccounted([s], 0) for s in SINGLETONS]
            self._run_program(steps)
            gc.collect()
            after = [_unaccounted([s], 0) for s in SINGLETONS]
            lost = [(st, w) for st, w in self._lost if after[w] < before[w]]
            if not lost:
                self.singleton_false_alarms += 1
                return None
            first = first or lost[0]
        assert first is not None  # SINGLETON_CONFIRMATIONS >= 1
        self._singleton_sites.add(steps[first[0]][0])
        return _singleton_finding(steps, *first)

    def _run_program(self, steps: list[Any]) -> tuple[list[int], dict[str, Any] | None]:
        """Run the program once and judge it (its singleton losses also go to self._lost)."""
        try:
            self._pool = pool = self._initial_pool()
        except BaseException as e:  # noqa: BLE001 - the user's setup failed this time: no instances
            self.setup_failures += 1
            self._pool = pool = []
            del e
        results: list[Any] = []
        sigs: list[int] = []
        repeated: dict[str, set[Any]] = {}  # the calls made so far of each repeat-masked callable
        finding: dict[str, Any] | None = None
        guard: list[Any] = []  # two extra references to each watched object: none is freed mid-judgement
        wobjs: list[Any] = []  # watched objects
        wsteps: list[int] = []  # the first step each was passed to
        wbase: list[int] = []  # its count when watching started
        seen_ids: set[int] = set()
        classes = tuple(self.classes.values())
        # What hostile dunders hand out (the prelude's answers ledger), with the step that asked for each.
        prelude = sys.modules.get("ffi_harness_prelude")
        answers: list[Any] = []
        asteps: list[int] = []
        # What the calls returned that only the program owned (or owned once too often), with their steps.
        returned: list[Any] = []
        rsteps: list[int] = []
        # What the code under test passed to the program's callables (the prelude's received ledger).
        received: list[Any] = []
        vsteps: list[int] = []
        take_received = getattr(prelude, "take_received", None)
        lost: list[tuple[int, int]] = []  # (step, singleton index): the calls a singleton lost a reference in
        self._lost = lost
        if prelude is not None:
            prelude.forget_answers()
        if take_received is not None:
            take_received()

        def watch(obj: Any, step: int) -> None:
            if id(obj) in seen_ids:
                return
            seen_ids.add(id(obj))
            guard.append(obj)
            guard.append(obj)
            wobjs.append(obj)
            wsteps.append(step)

        def resolve(a: Any) -> Any:
            if type(a) is R:
                return results[a.k % len(results)] if results else None
            if type(a) is I:
                n = len(pool) + len(self._known)
                if not n:
                    return None
                j = a.k % n
                return pool[j] if j < len(pool) else self._known[j - len(pool)]
            return a

        for i, (name, recv, args, kwargs) in enumerate(steps):
            spec = self.specs.get(name)
            if spec is None:
                results.append(None)
                continue
            # Watch what only the program owns (the engine and a repro build these the same way).
            for j in range(len(args)):
                if sys.getrefcount(args[j]) == 2:
                    watch(args[j], i)
                _watch_items(args[j], i, watch)
            for key in kwargs:
                if sys.getrefcount(kwargs[key]) == 2:
                    watch(kwargs[key], i)
                _watch_items(kwargs[key], i, watch)
            while len(wbase) < len(wobjs):  # measured here, where no local variable holds them
                wbase.append(_rc_at(wobjs, len(wbase)))
            stat = self.stats[name]
            if name in self.repeat_masks:  # a repeated call that waited for ever before (see _call_key)
                call = _call_key(
                    recv if spec["kind"] == "method" else None,
                    [resolve(a) for a in args],
                    {k: resolve(v) for k, v in kwargs.items()},
                )
                if call is not None and call in repeated.setdefault(name, set()):
                    self.masked += 1
                    results.append(None)
                    sigs.append(_crc(f"{name}|masked"))
                    continue
                if call is not None:
                    repeated[name].add(call)
            masks = self.masks.get(name)
            if masks:
                feats = call_features(args, kwargs)
                if any(m <= feats for m in masks):
                    self.masked += 1
                    results.append(None)
                    sigs.append(_crc(f"{name}|masked"))
                    continue
            if spec["kind"] == "method":
                obj = self._receiver(spec, recv)
                if obj is None:
                    stat[3] += 1
                    results.append(None)
                    sigs.append(_crc(f"{name}|no-receiver"))
                    continue
                try:
                    target: Callable[..., Any] = getattr(obj, spec["attr"])
                except BaseException as e:  # noqa: BLE001 - any attribute error is an outcome
                    stat[2] += 1
                    results.append(None)
                    sigs.append(_crc(f"{name}|getattr|{type(e).__name__}"))
                    continue
            else:
                function: Any = self.functions.get(name)
                if function is None:
                    results.append(None)
                    continue
                target = function
            call_args = [resolve(a) for a in args]
            call_kwargs = {k: resolve(v) for k, v in kwargs.items()}
            stat[0] += 1
            if self.trace:
                print(f"FFI_HARNESS_STEP {i} {name}", file=sys.stderr, flush=True)
            # Singleton counts are judged unless another thread (the resizer) runs Python code meanwhile.
            counted = bool(SINGLETONS) and not (
                self._racer is not None and any(type(v) is self._racer for v in [*call_args, *call_kwargs.values()])
            )
            result = _NO_RESULT
            before: tuple[int, ...] = ()
            if counted:
                self.singleton_checks += 1
                before = _singleton_counts()
            try:
                if prelude is None:
                    result = target(*call_args, **call_kwargs)
                else:  # a RacedByteArray argument is resized by another thread for the whole call
                    with prelude.resized_during([*call_args, *call_kwargs.values()]):
                        result = target(*call_args, **call_kwargs)
            except BaseException as e:  # noqa: BLE001 - every exception is judged here
                if counted:
                    gone = _singleton_lost(before, _singleton_counts(), _NO_RESULT)
                    if gone >= 0:
                        lost.append((i, gone))
                stat[2] += 1
                results.append(None)
                tname = type(e).__name__
                sigs.append(_crc(f"{name}|raise|{tname}|{_message_words(e)}"))
                if (isinstance(e, SystemError) or tname == "PanicException") and f"{tname}:{name}" not in self.reported:
                    finding = {
                        "kind": "PanicException" if tname == "PanicException" else "SystemError",
                        "site": name,
                        "step": i,
                        "detail": f"{tname}: {_message_text(e)}",
                        "key": f"{tname}:{name}",
                    }
                    del e
                    break
                del e
            else:
                if counted:
                    # Counted here, not inside the helper: up to 3.10 a call's arguments stay on the
                    # caller's stack, so `result` passed on would count once more there.
                    gone = _singleton_lost(before, _singleton_counts(), result)
                    if gone >= 0:
                        lost.append((i, gone))
                pending = _pending_exception()
                if pending is not None and f"SystemError:{name}" not in self.reported:
                    # A result returned with an exception set (CPython does not always check).
                    stat[2] += 1
                    results.append(None)
                    finding = {
                        "kind": "SystemError",
                        "site": name,
                        "step": i,
                        "detail": f"returned a result with an exception set ({type(pending).__name__}: "
                        f"{_message_text(pending)})",
                        "key": f"SystemError:{name}",
                    }
                    del pending, result
                    break
                stat[1] += 1
                sigs.append(_crc(f"{name}|ok|{type(result).__name__}"))
                if _fresh_result(result) and id(result) not in self._kept_ids:
                    returned.append(result)
                    rsteps.append(i)
                results.append(result)
                if classes and isinstance(result, classes):
                    pool.append(result)
            del call_args, call_kwargs, target
            if prelude is not None:
                taken = prelude.take_answers()
                answers.extend(taken)
                asteps.extend([i] * len(taken))
                del taken
            if take_received is not None:
                got = take_received()
                received.extend(got)
                vsteps.extend([i] * len(got))
                del got
        # Drop everything the program made, then judge the watched objects' counts.
        self._returned_ids = {id(r) for r in results if r is not None}
        self._received_ids = {id(r) for r in received}
        results.clear()
        pool.clear()
        self._pool = []
        result = obj = None
        # This function's own lists, and the program's argument containers (a loop variable still names the
        # last step's): held by locals, which gc cannot see, so each would look orphaned (see `_orphaned`).
        mine = frozenset(map(id, (guard, wobjs, answers, returned, received, *_program_containers(steps))))
        skip = frozenset(self.reported)
        if finding is None and wobjs:
            finding = _judge_refcounts(wobjs, wsteps, wbase, steps, guard, mine, skip)
        if finding is None and answers:
            finding = _judge_answers(answers, asteps, steps, mine, skip)
        if finding is None and returned:
            finding = _judge_returned(returned, rsteps, steps, mine, skip)
        if finding is None and received:
            finding = _judge_handed_over(
                received, vsteps, steps, "passed to a callable argument during step {step}", None, mine, skip
            )
        lost[:] = [(st, w) for st, w in lost if f"over-decref:{steps[st][0]}" not in skip]  # self._lost too
        if finding is None and lost:
            finding = {"kind": "over-decref", "_suspects": lost}  # Context.run confirms one, or none
        if finding is None:
            guard.clear()
        return sigs, finding

    def dump_stats(self, path: str, extra: dict[str, Any]) -> None:
        data = {
            "callables": self.stats,
            "unraisable": self.unraisable,
            "setup_failures": self.setup_failures,
            "masked": self.masked,
            "kept_references": self.kept_references,
            "kept_by": self.kept_by,
            "singleton_checks": self.singleton_checks,
            "singleton_false_alarms": self.singleton_false_alarms,
            "singletons_judged": bool(SINGLETONS),
            "type_cache_fill": _TYPE_CACHE_FILL,
            **extra,
        }
        tmp = f"{path}.tmp"
        with open(tmp, "w") as f:
            json.dump(data, f)
        os.replace(tmp, path)


def _pending_exception() -> BaseException | None:
    """The exception a call left set although it returned a result (cleared here), or None."""
    if _CHECK_PENDING is None:
        return None
    try:
        _CHECK_PENDING()
    except BaseException as e:  # noqa: BLE001 - whatever was pending
        return e
    return None


def _singleton_counts() -> tuple[int, ...]:
    return tuple(map(sys.getrefcount, SINGLETONS))


def _singleton_lost(before: tuple[int, ...], after: tuple[int, ...], result: Any) -> int:
    """The index of the first singleton with fewer references `after` a call than `before` it, or -1. A
    returned singleton is held once more after the call, by the caller's `result`. Every loss is kept
    alive here (_KEEP): a binding that returns None without a reference would otherwise free None itself
    after enough calls."""
    first = -1
    for j in range(len(after)):
        missing = before[j] + (result is SINGLETONS[j]) - after[j]
        if missing > 0:
            _KEEP.extend([SINGLETONS[j]] * missing)
            first = j if first < 0 else first
    return first


def _step_finding(kind: str, steps: list[Any], step: int, detail: str) -> dict[str, Any]:
    """A finding of the program's `step`, sited at that step's callable."""
    name = steps[step][0]
    return {"kind": kind, "site": name, "step": step, "detail": detail, "key": f"{kind}:{name}"}


def _singleton_finding(steps: list[Any], step: int, which: int) -> dict[str, Any]:
    """The finding for a loss at `step` that a second run confirmed."""
    return _step_finding(
        "over-decref",
        steps,
        step,
        f"step {step} left {SINGLETONS[which]!r} with a reference fewer than it found it (returned "
        f"without a reference of its own, as `return Py_None;` does, or a borrowed one released)",
    )


def _rc_at(objs: list[Any], idx: int) -> int:
    return sys.getrefcount(objs[idx])


def _watch_items(container: Any, step: int, watch: Callable[[Any, int], None]) -> None:
    t = type(container)
    if t is list or t is tuple:
        for j in range(len(container)):
            if sys.getrefcount(container[j]) == 2:
                watch(container[j], step)
    elif t is dict:
        for key in list(container):
            if sys.getrefcount(container[key]) == 2:
                watch(container[key], step)


def _unaccounted(
    objs: list[Any],
    idx: int,
    containers: tuple[Any, ...] = (),
    orphans: set[int] | None = None,
    mine: frozenset[int] = frozenset(),
) -> int:
    """References to objs[idx] that no live object accounts for. `containers` are the program's own
    (argument lists, kwargs dicts, list/tuple/dict arguments): gc stops tracking a tuple or dict whose
    contents are all atomic, and `gc.get_referrers` cannot see an untracked holder, so theirs are counted
    here (otherwise a tuple item's over-decref would cancel out against its tuple). With `orphans`, a
    holder that is itself orphaned (see `_orphaned`) accounts for nothing; its id is added to `orphans`."""
    obj = objs[idx]
    untracked = sum(_count_in(c, obj) for c in containers if not gc.is_tracked(c))
    return sys.getrefcount(obj) - _holders(obj, orphans, mine) - untracked


def _count_in(container: Any, obj: Any) -> int:
    return sum(1 for x in gc.get_referents(container) if x is obj)


def _program_containers(steps: list[Any]) -> list[Any]:
    """The containers the program itself holds its arguments in (see `_unaccounted`)."""
    out: list[Any] = []
    for _name, _recv, args, kwargs in steps:
        out += [args, kwargs]
        out += [v for v in [*args, *kwargs.values()] if type(v) in (list, tuple, dict)]
    return out


def _holders(obj: Any, orphans: set[int] | None = None, mine: frozenset[int] = frozenset()) -> int:
    """References to `obj` that live gc-tracked objects account for (each referrer's own count of it);
    with `orphans`, not counting orphaned containers (whose ids go there) other than the runtime's own."""
    refs = gc.get_referrers(obj)
    total = 0
    for r in refs:
        if orphans is not None and type(r) in _PLAIN_CONTAINERS and id(r) not in mine and _orphaned(r):
            orphans.add(id(r))
            continue
        total += _count_in(r, obj)
    return total


_PLAIN_CONTAINERS = (tuple, list, dict, set, frozenset)
_LOOSE_BASE: list[int] = []  # what measuring a held container costs (see _orphaned), once per process


def _loose(r: Any) -> int:
    """References to `r` that no live gc-tracked object accounts for (the measuring code's included)."""
    return sys.getrefcount(r) - sum(_count_in(h, r) for h in gc.get_referrers(r))


def _orphaned(r: Any) -> bool:
    """A container that nothing gc can see holds: a tuple whose only reference leaked (`Py_BuildValue`
    never released), or one a C static keeps. It still "accounts for" what it holds, and a container of
    tracked objects stays tracked, so without this what a leaked tuple holds looked held."""
    if not _LOOSE_BASE:
        _LOOSE_BASE.append(_loose_base())
    return _loose(r) > _LOOSE_BASE[0]


def _loose_base() -> int:
    """`_loose` of a list a live list holds, reached as `_holders` reaches a referrer (a loop variable
    passed down two calls): the references measuring itself takes."""
    probe = object()
    held = [[probe]]
    for h in gc.get_referrers(probe):
        if h is held[0]:
            return _loose_of_a_held(h)
    return 0


def _loose_of_a_held(r: Any) -> int:  # the depth of `_orphaned`
    return _loose(r)


def _judge_refcounts(
    wobjs: list[Any],
    wsteps: list[int],
    wbase: list[int],
    steps: list[Any],
    guard: list[Any],
    mine: frozenset[int] = frozenset(),
    skip: frozenset[str] = frozenset(),
) -> dict[str, Any] | None:
    moved = [i for i in range(len(wobjs)) if _rc_at(wobjs, i) != wbase[i]]
    if not moved:
        return None
    gc.collect()
    calibration = [object()]
    invisible = _unaccounted(calibration, 0)  # the measuring code's own references
    containers = tuple(_program_containers(steps))
    for i in moved:
        excess = _unaccounted(wobjs, i, containers) - invisible
        if excess == 0:
            continue
        step = wsteps[i]
        obj = wobjs[i]
        if excess < 0:
            _KEEP.append(guard[:])  # never free what the target still thinks it owns
        finding = _step_finding(
            "refcount-leak" if excess > 0 else "over-decref",
            steps,
            step,
            f"{'+' if excess > 0 else ''}{excess} reference(s) to the {type(obj).__name__} argument "
            f"of step {step} beyond what live objects account for",
        )
        if finding["key"] in skip:
            continue  # reported already: the next suspect may be another bug
        if excess > 0:  # Context.run confirms it on a second run, which passes the same object again
            finding.update(_held=obj, _excess=excess, _reused=True)
        return finding
    mine = mine | {id(wobjs), id(calibration), id(containers)}
    return _held_by_orphans(wobjs, moved, wsteps, steps, containers, mine, "argument of step {step}", skip)


def _fresh_result(result: Any) -> bool:
    """True for a result the call made for the caller or returns from a cache of its own, possibly with
    one reference too many: besides the caller's, at most two references (`result`, this parameter and
    getrefcount's argument make 3). Singletons and CPython's shared small objects are left out."""
    t = type(result)
    if result is None or t is bool or (t is int and -5 <= result <= 256) or (t in (str, bytes) and len(result) <= 1):
        return False
    return sys.getrefcount(result) <= 5


def _judge_returned(
    returned: list[Any],
    rsteps: list[int],
    steps: list[Any],
    mine: frozenset[int] = frozenset(),
    skip: frozenset[str] = frozenset(),
) -> dict[str, Any] | None:
    """Every object a call returned is the caller's: once the program dropped its results, nothing that
    no live object accounts for may hold one (a result returned with one reference too many)."""
    return _judge_handed_over(returned, rsteps, steps, "returned by step {step}", None, mine, skip)


def _judge_answers(
    answers: list[Any],
    asteps: list[int],
    steps: list[Any],
    mine: frozenset[int] = frozenset(),
    skip: frozenset[str] = frozenset(),
) -> dict[str, Any] | None:
    """Every object a hostile dunder or a callable argument returned to the code under test (an `__index__`
    int, an `__fspath__` str, a `__buffer__` view, a callback's result) is the callee's to release once the
    call is over, on every path: one that no live object accounts for is still held by a reference the code
    under test never gave back. The argument's own count cannot show this, since what leaked is the answer,
    not the argument."""
    # A second run asks for a new answer: the first one's reference must still be there (reused=False).
    return _judge_handed_over(
        answers, asteps, steps, "a hostile dunder or a callable argument returned during step {step}", False, mine, skip
    )


def _judge_handed_over(
    objs: list[Any],
    osteps: list[int],
    steps: list[Any],
    what: str,
    reused: bool | None,
    mine: frozenset[int] = frozenset(),
    skip: frozenset[str] = frozenset(),
) -> dict[str, Any] | None:
    """The first of `objs` (each handed over during step osteps[i]) that something no live object
    accounts for holds, as a finding whose key is not in `skip`; `reused` is how Context.run's second
    run judges it (None: by whether the second run hands over the same object)."""
    # Ours: `objs` and getrefcount's argument. Anything more is looked at closely.
    moved = [i for i in range(len(objs)) if sys.getrefcount(objs[i]) != 2]
    if not moved:
        return None
    gc.collect()
    calibration = [object()]
    invisible = _unaccounted(calibration, 0)  # the measuring code's own references
    for i in moved:
        excess = _unaccounted(objs, i) - invisible
        if excess == 0:
            continue
        step = osteps[i]
        if excess < 0:
            _KEEP.append(objs[i])  # never free what the target still thinks it owns
        finding = _step_finding(
            "refcount-leak" if excess > 0 else "over-decref",
            steps,
            step,
            f"{'+' if excess > 0 else ''}{excess} reference(s) to the {type(objs[i]).__name__} "
            f"{what.format(step=step)}, beyond what live objects account for",
        )
        if finding["key"] in skip:
            continue  # reported already: the next suspect may be another bug
        if excess > 0:  # Context.run confirms it on a second run
            finding.update(_held=objs[i], _excess=excess, _reused=reused)
        return finding
    return _held_by_orphans(objs, moved, osteps, steps, (), mine | {id(objs), id(calibration)}, what, skip)


def _held_by_orphans(
    objs: list[Any],
    moved: list[int],
    osteps: list[int],
    steps: list[Any],
    containers: tuple[Any, ...],
    mine: frozenset[int],
    what: str,
    skip: frozenset[str] = frozenset(),
) -> dict[str, Any] | None:
    """The first of `objs` that only orphaned containers hold, as a suspected leak (see `_orphaned`): the
    count of such an object adds up, since the container holding it is alive, but nothing holds the
    container. Context.run tells a container leaked by each call from one a C static keeps."""
    for i in moved:
        orphans: set[int] = set()
        calibration = [object()]
        excess = _unaccounted(objs, i, containers, orphans, mine) - _unaccounted(
            calibration, 0, (), set(), mine | {id(calibration)}
        )
        if excess <= 0 or not orphans or f"refcount-leak:{steps[osteps[i]][0]}" in skip:
            continue
        step = osteps[i]
        return {
            **_step_finding(
                "refcount-leak",
                steps,
                step,
                f"+{excess} reference(s) to the {type(objs[i]).__name__} {what.format(step=step)}, held "
                "only by a container that nothing accounts for (a leaked tuple, list or dict)",
            ),
            "_held": objs[i],
            "_orphans": orphans,
        }
    return None


def main(header: dict[str, Any], program_source: str) -> int:
    """A repro's entry point: run the program once, report, exit 1 when the finding reproduces."""
    import faulthandler

    faulthandler.enable(all_threads=True)
    # `ffi-harness repro --timeout S` overrides the watchdog the header recorded.
    timeout = float(os.environ.get("FFI_HARNESS_TIMEOUT") or header.get("timeout") or 0)
    if timeout > 0:
        faulthandler.dump_traceback_later(timeout, exit=True)
    prelude = sys.modules["ffi_harness_prelude"]
    ctx = Context(header["plan"])
    steps = build(program_source, prelude)
    # The program runs in an empty directory of its own, as the fuzzer's did (its engine runs in a scratch
    # directory): a fuzzed relative path (a store named "h\U000fe2e2") must not land where the user ran
    # the replay, and a second run must not find the files an earlier one left there. A replay the CLI
    # runs gets its directory from the CLI (FFI_HARNESS_CWD), which removes it even after a crash.
    import shutil
    import tempfile

    given = os.environ.get("FFI_HARNESS_CWD")
    scratch = given or tempfile.mkdtemp(prefix="ffi-harness-repro-")
    home = os.getcwd()
    os.chdir(scratch)
    try:
        _sigs, finding = ctx.run(steps)
    finally:
        os.chdir(home)
        if not given:
            shutil.rmtree(scratch, ignore_errors=True)
    if timeout > 0:
        faulthandler.cancel_dump_traceback_later()
    if finding is not None:
        print("FFI_HARNESS_RESULT " + json.dumps({k: finding[k] for k in ("kind", "site", "detail")}), flush=True)
        print(f"reproduced: {finding['kind']} in {finding['site']}: {finding['detail']}", file=sys.stderr)
        return 1
    print("no finding: the program ran to completion and every check passed", file=sys.stderr)
    return 0
