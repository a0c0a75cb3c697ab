"""The worker side of `ffi-harness test`: a pytest plugin loaded into the suite's own interpreter.

Self-contained on purpose (standard library and pytest only): `ffi-harness test` puts this directory
(which holds nothing else) on the worker's PYTHONPATH and loads the module with ``-p``, so the
interpreter under test (another venv, a debug build) never needs ffi-harness installed. It talks to the parent through an events
file (``FFI_HARNESS_EVENTS_FILE``, appended with one unbuffered write per event: nothing is lost when the
process dies right after), one JSON object per line:

    {"ev": "collected", "ids": [...], "errors": [...]}     after collection (and deselection)
    {"ev": "start", "id": NODEID}                          before a test's first phase
    {"ev": "run", "id": NODEID, "i": K}                    before repetition K (``--leaks``): a heartbeat
    {"ev": "result", "id": NODEID, ...}                    the test's outcome, leak rounds, repeatability
    {"ev": "done"}                                         the session finished normally

When the process dies instead (signal, abort, sanitizer report, or the SIGABRT the parent sends when a
test outlives the timeout), the parent attributes the death to the test it last saw start. Python stacks go to the *real* stderr (a dup of fd 2
taken at import, before pytest's capture), each test preceded by a marker line the parent slices on.

Leak rounds (``FFI_HARNESS_LEAKS=WARMUP:RUNS``), regrtest ``-R`` style: run 0 is the ordinary run (its
outcome is the test's); then WARMUP unmeasured repetitions; then RUNS measured repetitions, each
followed by the same cleanup (interpreter and stdlib caches cleared, ``gc.collect()``) and a snapshot:
allocated blocks, gc-tracked objects, open fds, threads (OS tasks: native threads count),
``sys.gettotalrefcount()`` on a debug build, plus every ``ffi_harness_counters()`` function defined by a
loaded conftest (documented hook: it returns ``dict[str, int]`` of native counters that must not grow,
e.g. live handles). A metric leaks when its delta is >= 1 in every measured round. ``lost_refs:None``
(and True, False; before CPython 3.12, where they are mortal) counts references the singleton lost: a
test that loses one in every round but the first (see _Meter.leaks) calls code that over-decrefs it
(``return Py_None;``), which kills the interpreter once the count reaches zero.
"""

from __future__ import annotations

import faulthandler
import functools
import gc
import json
import os
import sys
import time
from typing import Any, Callable

import pytest
from _pytest.runner import runtestprotocol

_EVENTS_FILE = os.environ.get("FFI_HARNESS_EVENTS_FILE", "")
_EVENTS_FD = os.open(_EVENTS_FILE, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC) if _EVENTS_FILE else -1
_LEAKS = os.environ.get("FFI_HARNESS_LEAKS", "")
_SKIP_FILE = os.environ.get("FFI_HARNESS_SKIP_FILE", "")
NO_REPEAT_MARKER = "ffi_harness_no_repeat"
COUNTERS_HOOK = "ffi_harness_counters"

# The real stderr, before pytest's capture replaces fd 2 (this module is imported by `-p`, which
# happens before capture starts): faulthandler's stacks and the per-test markers must reach the log.
_STDERR_FD = os.dup(2)
_STDERR = os.fdopen(_STDERR_FD, "w", buffering=1, errors="backslashreplace")
faulthandler.enable(file=_STDERR, all_threads=True)

_collect_errors: list[dict[str, str]] = []


def _sanitizer_death_callback() -> object:
    """Under a preloaded sanitizer runtime, make its death go through abort(): the sanitizer ends the
    process through its own path, which faulthandler never sees, so without this a report has no
    Python stack. abort() raises SIGABRT, whose faulthandler handler dumps every thread's Python stack
    without taking the GIL (a Python callback would deadlock when the reporting thread does not hold
    it), then hands the signal back to the previous handler."""
    if "asan" not in os.environ.get("LD_PRELOAD", "") and "san" not in os.environ.get("FFI_HARNESS_SANITIZER", ""):
        return None  # no preloaded runtime: ctypes (and its import time) not needed
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        setter = libc.__sanitizer_set_death_callback
        abort = ctypes.cast(libc.abort, ctypes.c_void_p)
    except (OSError, AttributeError):
        return None
    setter.argtypes = [ctypes.c_void_p]
    setter(abort)
    return abort


_DEATH_CALLBACK = _sanitizer_death_callback()


def _allow_parent_debuggers() -> None:
    """Under Yama's ptrace_scope 1 (Ubuntu's default for non-root users) the gdb that `ffi-harness test`
    starts on a stuck worker is the worker's sibling and may not attach unless the worker allows its
    parent's descendants (PR_SET_PTRACER). Only then is ctypes imported: elsewhere it costs start-up."""
    try:
        with open("/proc/sys/kernel/yama/ptrace_scope", encoding="ascii") as f:
            if f.read().strip() != "1":
                return
        import ctypes

        pr_set_ptracer = 0x59616D61
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_ptracer, os.getppid(), 0, 0, 0)
    except (OSError, AttributeError):
        pass


_allow_parent_debuggers()


def _send(event: dict[str, Any]) -> None:
    if _EVENTS_FD < 0:
        return
    data = (json.dumps(event) + "\n").encode()
    while data:
        n = os.write(_EVENTS_FD, data)
        data = data[n:]


def _write(line: str) -> None:
    if _EVENTS_FD >= 0:
        os.write(_EVENTS_FD, line.encode())  # O_APPEND, one write: a line is never interleaved or cut


def _marker(text: str) -> None:
    os.write(_STDERR_FD, f"\n=== ffi-harness: {text}\n".encode(errors="backslashreplace"))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{NO_REPEAT_MARKER}: ffi-harness test --leaks runs this test once and reports it 'not repeatable'",
    )


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.failed:
        _collect_errors.append({"id": report.nodeid or ".", "longrepr": _text(report.longrepr)[-3000:]})


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    if not _SKIP_FILE:
        return
    with open(_SKIP_FILE, encoding="utf-8") as f:
        done = {line.rstrip("\n") for line in f if line.strip()}
    keep = [it for it in items if it.nodeid not in done]
    gone = [it for it in items if it.nodeid in done]
    if gone:
        config.hook.pytest_deselected(items=gone)
        items[:] = keep


def pytest_collection_finish(session: pytest.Session) -> None:
    _send({"ev": "collected", "ids": [it.nodeid for it in session.items], "errors": _collect_errors})


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _send({"ev": "done", "status": int(exitstatus)})


def _text(longrepr: object) -> str:
    if longrepr is None:
        return ""
    if isinstance(longrepr, tuple) and len(longrepr) == 3:  # skip: (path, lineno, reason)
        return str(longrepr[2])
    return str(longrepr)


def _summarise(reports: list[pytest.TestReport]) -> dict[str, Any]:
    """The outcome of one run of a test, from its setup/call/teardown reports."""
    outcome, when, longrepr, duration = "passed", "call", "", 0.0
    for r in reports:
        duration += r.duration
        if r.failed:
            if outcome != "failed":
                outcome, when, longrepr = "failed", r.when, _text(r.longrepr)
        elif r.skipped and outcome == "passed":
            outcome, when, longrepr = "skipped", r.when, _text(r.longrepr)
            if hasattr(r, "wasxfail"):
                outcome = "xfailed"
        elif r.when == "call" and hasattr(r, "wasxfail") and outcome == "passed":
            outcome = "xpassed"
    return {"outcome": outcome, "when": when, "longrepr": longrepr[-4000:], "duration": round(duration, 6)}


# --- leak rounds ------------------------------------------------------------------------------------


def _stdlib_caches() -> list[Callable[[], None]]:
    """cache_clear of every functools cache in the standard library and pytest's own modules (regrtest's
    dash_R_cleanup clears the same kind of caches): they fill as a side effect of running anything and
    would otherwise look like growth. The project's own caches are left alone: growing them is its
    behaviour, and the warm-up runs absorb bounded ones."""
    import sysconfig

    roots = tuple(
        os.path.realpath(p) + os.sep for p in {sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["platstdlib"]}
    )
    out: list[Callable[[], None]] = []
    seen: set[int] = set()
    for name, mod in list(sys.modules.items()):
        path = getattr(mod, "__file__", None) or ""
        ours = name.split(".")[0] in ("_pytest", "pytest", "pluggy")
        if not ours and not (path and os.path.realpath(path).startswith(roots) and "site-packages" not in path):
            continue
        for obj in list(vars(mod).values()):
            if isinstance(obj, functools._lru_cache_wrapper) and id(obj) not in seen:
                seen.add(id(obj))
                out.append(obj.cache_clear)
    return out


_cache_clears: list[Callable[[], None]] = []
_cache_modules = 0


def _cleanup() -> None:
    global _cache_clears, _cache_modules
    if len(sys.modules) != _cache_modules:
        _cache_modules = len(sys.modules)
        _cache_clears = _stdlib_caches()
    for clear in _cache_clears:
        clear()
    sys._clear_type_cache()
    re = sys.modules.get("re")
    if re is not None:
        re.purge()
    typing = sys.modules.get("typing")
    for f in getattr(typing, "_cleanups", ()):
        f()
    linecache = sys.modules.get("linecache")
    if linecache is not None:
        linecache.clearcache()
    struct = sys.modules.get("struct")
    if struct is not None:
        struct._clearcache()
    gc.collect()
    gc.collect()


def _mortal_singletons() -> tuple[Any, ...]:
    """None, True and False when they are mortal (CPython 3.12+ makes them immortal: an over-decref is
    then harmless, and their counts never move)."""
    before = sys.getrefcount(None)
    held = [None] * 64
    mortal = sys.getrefcount(None) - before == len(held)
    del held
    return (None, True, False) if mortal else ()


SINGLETONS = _mortal_singletons()


def _counter_hooks(config: pytest.Config) -> list[Callable[[], dict[str, int]]]:
    hooks = []
    for plugin in config.pluginmanager.get_plugins():
        fn = getattr(plugin, COUNTERS_HOOK, None)
        if callable(fn):
            hooks.append(fn)
    return hooks


# Growth every measured round at or above which a metric leaks. Bytes move with allocator rounding and
# resized internal tables: a leaked object is at least a few dozen bytes, so smaller growth is noise.
MIN_GROWTH = {"asan_bytes": 32}


def _asan_allocated_bytes() -> Callable[[], int] | None:
    """ASan's count of bytes its allocator currently holds, when the ASan runtime is loaded."""
    import ctypes  # only under PYTHONMALLOC=malloc: a plain run never loads it

    try:
        fn = ctypes.CDLL(None).__sanitizer_get_current_allocated_bytes
    except (AttributeError, OSError):
        return None
    fn.restype = ctypes.c_size_t
    fn.argtypes = []
    return lambda: int(fn())


class _Meter:
    """Snapshots into preallocated lists, ints pooled (regrtest's get_pooled_int): the bookkeeping
    allocates the same objects each round, so it cancels out of the deltas."""

    def __init__(self, config: pytest.Config, rounds: int) -> None:
        self.hooks = _counter_hooks(config)
        self.names: list[str] = []
        self.asan_bytes = None
        if os.environ.get("PYTHONMALLOC", "") not in ("malloc", "malloc_debug"):
            self.names.append("blocks")  # under PYTHONMALLOC=malloc the count is always 0
        else:
            # Under --asan every object is a malloc block of ASan's allocator, which counts the bytes
            # it holds: the stand-in for the block count (a leaked str is not gc-tracked).
            self.asan_bytes = _asan_allocated_bytes()
            if self.asan_bytes is not None:
                self.names.append("asan_bytes")
        if hasattr(sys, "gettotalrefcount"):
            self.names.append("refs")
        self.names += ["gc_objects", "fds", "threads"]
        self.names += [f"lost_refs:{s!r}" for s in SINGLETONS]
        for hook in self.hooks:
            self.names += [f"native:{k}" for k in sorted(hook())]
        n = len(self.names)
        self.rounds = rounds
        self.before = [0] * n
        self.after = [0] * n
        self.deltas = [[0] * rounds for _ in range(n)]
        self.pool: dict[int, int] = {}

    def _read(self, out: list[int]) -> None:
        i = 0
        native: dict[str, int] = {}
        for hook in self.hooks:
            native.update(hook())
        if self.names[i] == "blocks":
            out[i] = sys.getallocatedblocks()
            i += 1
        elif self.names[i] == "asan_bytes" and self.asan_bytes is not None:
            out[i] = self.asan_bytes()
            i += 1
        if self.names[i] == "refs":
            out[i] = sys.gettotalrefcount()
            i += 1
        out[i] = len(gc.get_objects())
        out[i + 1] = len(os.listdir("/proc/self/fd"))
        out[i + 2] = len(os.listdir("/proc/self/task"))
        i += 3
        for s in SINGLETONS:  # counted down: a reference lost every round is a delta of +1
            out[i] = -sys.getrefcount(s)
            i += 1
        for name in self.names[i:]:
            out[i] = int(native.get(name[len("native:") :], 0))
            i += 1

    def start(self) -> None:
        _cleanup()
        self._read(self.before)

    def measure(self, k: int) -> None:
        _cleanup()
        self._read(self.after)
        for j in range(len(self.names)):
            d = self.after[j] - self.before[j]
            self.deltas[j][k] = self.pool.setdefault(d, d)
            self.before[j] = self.after[j]

    def leaks(self) -> dict[str, list[int]]:
        out = {}
        for j, name in enumerate(self.names):
            # The first measured round gains a reference or two to None on every test (the bookkeeping's
            # own), which would hide a loss: a singleton's losses are judged on the rounds after it.
            judged = self.deltas[j][1:] if name.startswith("lost_refs:") else self.deltas[j]
            if judged and all(d >= MIN_GROWTH.get(name, 1) for d in judged):
                out[name] = list(self.deltas[j])
        return out

    def table(self) -> dict[str, list[int]]:
        return {name: list(self.deltas[j]) for j, name in enumerate(self.names)}


class _Bookkeeping:
    """pytest's own per-run records, trimmed back after each repetition: they grow with every run of a
    test, by pytest's design, and are not the code under test's. The item's report sections and user
    properties, the terminal reporter's stats (warnings), and the finalizer lists of the wider-scoped
    fixtures the test's function fixtures depend on: each run appends ``partial(finish, request)`` of
    every function fixture (tmp_path -> tmp_path_factory...), kept until the wider fixture ends. The
    function fixtures are already torn down when the trim runs, so the dropped entries are inert."""

    def __init__(self, item: pytest.Item) -> None:
        self.item = item
        self.sections = len(item._report_sections)
        self.props = len(item.user_properties)
        tr = item.config.pluginmanager.get_plugin("terminalreporter")
        self.stats: dict[str, list[object]] = getattr(tr, "stats", {}) if tr is not None else {}
        self.lens = {k: len(v) for k, v in self.stats.items()}
        info = getattr(item, "_fixtureinfo", None)
        self.fixturedefs: list[tuple[list[object], int]] = []
        for defs in getattr(info, "name2fixturedefs", {}).values():
            for fd in defs:
                fins = getattr(fd, "_finalizers", None)
                if isinstance(fins, list) and getattr(fd, "scope", "function") != "function":
                    self.fixturedefs.append((fins, len(fins)))

    def trim(self) -> None:
        del self.item._report_sections[self.sections :]
        del self.item.user_properties[self.props :]
        for k, v in list(self.stats.items()):
            if k not in self.lens:
                del self.stats[k]
            else:
                del v[self.lens[k] :]
        for fins, n in self.fixturedefs:
            if len(fins) > n:
                del fins[n:]


def _run_once(item: pytest.Item, nextitem: pytest.Item | pytest.Collector | None, log: bool) -> list[pytest.TestReport]:
    # nextitem may be the parent collector: SetupState.teardown_exact only needs its listchain().
    return runtestprotocol(item, log=log, nextitem=nextitem)  # type: ignore[arg-type]


def _teardown_to(item: pytest.Item, nextitem: pytest.Item | None) -> str | None:
    """After a run that kept the module/class/session fixtures for a repetition, tear down to `nextitem`;
    the error text if a fixture's teardown raised."""
    try:
        item.session._setupstate.teardown_exact(nextitem)
    except Exception as e:  # noqa: BLE001 - reported as the test's teardown failure
        _STDERR.write(f"ffi-harness: teardown after {item.nodeid} failed: {e!r}\n")
        return f"teardown of the fixtures shared with other tests failed: {e!r}"
    return None


def _leak_protocol(item: pytest.Item, nextitem: pytest.Item | None, warmup: int, runs: int) -> dict[str, Any]:
    keep = item.parent  # tear down only the function level between repetitions
    # Everything alive before this test moves to the permanent generation: each snapshot's full
    # collection then walks only what this test created (a full walk of pytest's heap costs ~40 ms, and
    # a test takes 1 + WARMUP + RUNS snapshots). Cycles among objects already alive here are never
    # collected afterwards; the price is memory, not correctness, of this worker.
    gc.collect()
    gc.freeze()
    if item.get_closest_marker(NO_REPEAT_MARKER) is not None:
        res = _summarise(_run_once(item, nextitem, True))
        if res["outcome"] == "passed":
            res["not_repeatable"] = f"marked {NO_REPEAT_MARKER}"
        return res
    res = _summarise(_run_once(item, keep, True))
    if res["outcome"] != "passed":
        _teardown_to(item, nextitem)
        return res
    book = _Bookkeeping(item)
    meter = _Meter(item.config, runs)
    total = warmup + runs
    for k in range(1, total + 1):
        _send({"ev": "run", "id": item.nodeid, "i": k})
        if k == warmup + 1:
            meter.start()
        # Every run keeps the wider fixtures: the last measured round must not include the teardown
        # of module or session fixtures (it frees what earlier tests built, a negative delta).
        rep = _summarise(_run_once(item, keep, False))
        book.trim()
        if rep["outcome"] not in ("passed", "xfailed"):
            _teardown_to(item, nextitem)
            why = rep["longrepr"].strip().splitlines()
            res["not_repeatable"] = f"run {k + 1} of {total + 1} {rep['outcome']} in {rep['when']}" + (
                f": {why[-1][:200]}" if why else ""
            )
            return res
        if k > warmup:
            meter.measure(k - warmup - 1)
    res["rounds"] = meter.table()
    res["leaks"] = meter.leaks()
    err = _teardown_to(item, nextitem)
    if err is not None:
        res.update(outcome="error", when="teardown", longrepr=err)
    return res


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> bool:
    item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    try:
        offset = os.lseek(_STDERR_FD, 0, os.SEEK_CUR)  # where this test's part of the log starts
    except OSError:
        offset = -1  # a pipe or terminal: the parent searches for the marker instead
        _marker(f"start {item.nodeid}")
    # One write per event, formatted by hand: this runs for every test.
    _write(f'{{"ev":"start","id":{json.dumps(item.nodeid)},"log_offset":{offset}}}\n')
    t0 = time.perf_counter()
    try:
        if _LEAKS:
            w, r = (int(x) for x in _LEAKS.split(":"))
            res = _leak_protocol(item, nextitem, w, r)
        else:
            res = _summarise(_run_once(item, nextitem, True))
    except Exception:
        # A failure of the harness itself (not of the test): reported on the test, then pytest's
        # INTERNALERROR ends this worker and the parent starts a new one after this test.
        import traceback

        _send(
            {
                "ev": "result",
                "id": item.nodeid,
                "outcome": "error",
                "when": "ffi-harness",
                "longrepr": traceback.format_exc()[-4000:],
                "wall": 0.0,
            }
        )
        raise
    res["ev"] = "result"
    res["id"] = item.nodeid
    res["wall"] = round(time.perf_counter() - t0, 6)
    _send(res)
    item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
    return True
