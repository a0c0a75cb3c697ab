"""`ffi-harness test`: a project's own pytest suite, with a verdict per test (crash, hang, leak, ASan, GIL).

Crash isolation: one worker process (the suite's interpreter running pytest with the plugin
``_pytest_worker/ffi_harness_pytest_plugin.py``) collects once and runs the tests in order, announcing
each test's start in an events file that the parent reads every 0.2 s. When the worker dies (signal,
abort, sanitizer report) or a test outlives ``--timeout`` (the parent sends SIGABRT: faulthandler dumps
every thread's Python stack; SIGKILL if even that fails), the death is attributed to the test that
started last, its report is cut from the worker's log, and a new worker starts after it (the tests
already judged are deselected). A clean suite costs one process; each crash costs one re-collection.

Exit status: 0 when every test passed, was skipped or xfailed ("not repeatable" is reported, not a
failure); 1 on any failed test, collection error, LEAK, OVER-DECREF, CRASH or HANG; 2 on a usage error, when no
test was collected, or when every test was skipped (nothing was exercised).
"""

from __future__ import annotations

# Start-up cost is isolation cost: the worker starts only after this module is imported, so it imports
# what starting the worker needs and nothing more (no dataclasses, pathlib, tempfile, typing: together
# 116 M instructions, 6 % of a 500-test suite). What only the reporting needs (json, shutil, the
# sanitizer helpers) is imported where it is used, while the worker's pytest starts on another core.
import argparse
import os
import re
import select
import signal
import subprocess
import sys
import time

from ffi_harness import interpreter
from ffi_harness.cli import EXIT_CLEAN, EXIT_FINDINGS, EXIT_USAGE, UsageError
from ffi_harness.findings import cython_name, in_runtime_code

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing; type checkers read it as True
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

DEFAULT_LEAKS = (2, 4)
DEFAULT_TIMEOUT = 60.0
DEFAULT_COLLECT_TIMEOUT = 300.0  # importing the test modules: an import that deadlocks never ends
KILL_GRACE = 10.0  # after --timeout the worker gets SIGABRT (faulthandler dumps its stacks), then SIGKILL
PLUGIN_NAME = "ffi_harness_pytest_plugin"
# The worker runs pytest as the `pytest` command does, not as `python -m pytest`: `-m` and `-c` put the
# current directory first on sys.path, so in a project's root the source package (`pkg/` without its
# compiled module, or with a stale one) would shadow the build that was installed (ModuleNotFoundError
# for `pkg._native`). `-c` puts an empty entry there, which this drops (none with -P / PYTHONSAFEPATH).
PYTEST_AS_THE_PYTEST_COMMAND = (
    "import sys\n"
    "if sys.path and sys.path[0] == '':\n"
    "    del sys.path[0]\n"
    "import pytest\n"
    "raise SystemExit(getattr(pytest, 'console_main', pytest.main)())\n"
)
PLUGIN_DIR = os.path.join(os.path.dirname(os.path.realpath(__file__)), "_pytest_worker")
REPORT_LINES = 30
POLL = 0.2  # seconds between two reads of the worker's events
SUMMARY_LINES = 15  # the summary stays one screen: the verdict lines above list everything

OK_VERDICTS = ("passed", "skipped", "xfailed", "xpassed", "not repeatable")
BAD_VERDICTS = ("failed", "error", "LEAK", "OVER-DECREF", "CRASH", "HANG")

# An instrumented extension imported without its sanitizer runtime fails on one of these symbols.
SANITIZER_SYMBOL = re.compile(r"undefined symbol: __(asan|ubsan|sancov|sanitizer)_")


def _leaks_arg(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+):(\d+)", text)
    if not m or int(m.group(2)) < 1:
        raise argparse.ArgumentTypeError(f"expected WARMUP:RUNS with RUNS >= 1 (e.g. 2:4), not {text!r}")
    return int(m.group(1)), int(m.group(2))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.usage = "%(prog)s [options] -- PYTEST_ARGS..."
    parser.add_argument(
        "--leaks",
        nargs="?",
        const=DEFAULT_LEAKS,
        type=_leaks_arg,
        metavar="WARMUP:RUNS",
        help=f"repeat each test (warm-up runs, then measured runs, default {DEFAULT_LEAKS[0]}:{DEFAULT_LEAKS[1]}) "
        "and name the tests whose allocated blocks, gc objects, fds, threads, total refs (debug build) or "
        "native counters grow in every measured run",
    )
    parser.add_argument(
        "--asan",
        action="store_true",
        help="preload clang's ASan runtime and set PYTHONMALLOC=malloc (extensions built with build-ext)",
    )
    parser.add_argument(
        "--gil",
        action="store_true",
        help="PYTHONMALLOC=debug and -X dev, on the debug interpreter (pythonX.Yd) when it can run the suite",
    )
    parser.add_argument("--python", metavar="PY", help="the suite's interpreter (default: the one running ffi-harness)")
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="S",
        help="per-test timeout in seconds, per run under --leaks (default %(default)g): past it, HANG",
    )
    parser.add_argument(
        "--collect-timeout",
        type=float,
        default=DEFAULT_COLLECT_TIMEOUT,
        metavar="S",
        help="seconds a worker may take to start and collect the suite (default %(default)g): past it, every "
        "thread's stack is dumped and the session is a failure",
    )
    parser.add_argument("--junit", metavar="FILE", help="write the verdicts as JUnit XML")
    parser.add_argument("--logs", metavar="DIR", help="keep the workers' logs (and crash reports) in DIR")
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="print verdict lines only for tests that did not pass"
    )
    parser.add_argument("pytest_args", nargs=argparse.REMAINDER, help="arguments for pytest, after --")


# --- verdicts ---------------------------------------------------------------------------------------


class Verdict:
    __slots__ = ("detail", "duration", "nodeid", "report", "rounds", "verdict")

    def __init__(
        self,
        nodeid: str,
        verdict: str,  # passed | failed | skipped | xfailed | xpassed | error | not repeatable | LEAK | OVER-DECREF | CRASH | HANG
        detail: str = "",
        report: str = "",  # crash report / failure text (printed under the line, capped)
        duration: float = 0.0,
        rounds: dict[str, list[int]] | None = None,
    ) -> None:
        self.nodeid = nodeid
        self.verdict = verdict
        self.detail = detail
        self.report = report
        self.duration = duration
        self.rounds: dict[str, list[int]] = rounds or {}

    def __repr__(self) -> str:
        return f"Verdict({self.nodeid!r}, {self.verdict!r}, {self.detail!r})"

    @property
    def bad(self) -> bool:
        return self.verdict in BAD_VERDICTS

    def line(self) -> str:
        return f"{self.nodeid}  {self.verdict}" + (f"  {self.detail}" if self.detail else "")


def _from_result(ev: dict[str, Any]) -> Verdict:
    outcome = str(ev.get("outcome", "failed"))
    v = Verdict(ev["id"], outcome, duration=float(ev.get("wall", 0.0)), rounds=ev.get("rounds") or {})
    text = str(ev.get("longrepr") or "")
    if outcome == "failed":
        last = [ln for ln in text.strip().splitlines() if ln.strip()]
        v.detail = f"(in {ev.get('when')})" + (f"  {last[-1].strip()[:160]}" if last else "")
        v.report = text
    elif outcome in ("skipped", "xfailed") and text:
        v.detail = text.strip().splitlines()[-1][:160] if text.strip() else ""
    leaks: dict[str, list[int]] = ev.get("leaks") or {}
    if leaks:
        # A singleton that loses a reference every round is over-decref'd (the worker's lost_refs:None).
        v.verdict = "OVER-DECREF" if any(k.startswith("lost_refs:") for k in leaks) else "LEAK"
        v.detail = "  ".join(f"{k} {'/'.join(f'{d:+d}' for d in ds)}" for k, ds in leaks.items())
    elif ev.get("not_repeatable"):
        v.verdict = "not repeatable"
        v.detail = str(ev["not_repeatable"])
    return v


SIGNALS = {-s.value: s.name for s in signal.Signals}
_SAN = re.compile(
    r"(ERROR: (?:Address|Leak|Memory|Thread)Sanitizer: .*|runtime error: .*|UndefinedBehaviorSanitizer: .*)"
)
_FATAL = re.compile(r"Fatal Python error: (.*)")
_FRAME = re.compile(r'^\s+File "([^"]+)", line (\d+) in (\S+)')


def _innermost_test_frame(report: str, nodeid: str) -> str:
    """The first frame (most recent call first) of the current thread that lies in the test's file."""
    test_file = nodeid.split("::")[0]
    lines = report.splitlines()
    start = next((i for i, ln in enumerate(lines) if ln.startswith("Current thread")), None)
    if start is None:
        start = next((i for i, ln in enumerate(lines) if ln.startswith("Thread")), 0)
    first = ""
    for ln in lines[start + 1 :]:
        m = _FRAME.match(ln)
        if not m:
            if first:
                break
            continue
        where = f"{m.group(1)}:{m.group(2)} in {m.group(3)}"
        first = first or where
        if m.group(1).endswith(test_file):
            return f"{os.path.basename(m.group(1))}:{m.group(2)} in {m.group(3)}"
    # The dying thread runs no code of the test file (a thread it started): the test's line from the
    # other threads' stacks, usually where it waits for that thread.
    for ln in lines:
        m = _FRAME.match(ln)
        if m and m.group(1).endswith(test_file):
            return f"{os.path.basename(m.group(1))}:{m.group(2)} in {m.group(3)} (another thread)"
    return first


_UBSAN = re.compile(r"(\S+:\d+:\d+): runtime error: (.*)")
_SAN_KIND = re.compile(r"ERROR: (\w+Sanitizer): ([\w-]+)")
_ACCESS = re.compile(r"^(READ|WRITE) of size \d+", re.MULTILINE)
_NATIVE_FRAME = re.compile(r"^\s*#\d+ 0x[0-9a-f]+ in (\S+) (\S+?)(?::\d+)?$", re.MULTILINE)
_RUNTIME_FUNCS = ("Py_", "_Py", "__asan", "__interceptor", "__sanitizer", "__ubsan", "malloc", "free", "realloc")


def _sanitizer_headline(report: str, m: re.Match[str]) -> str:
    """`AddressSanitizer: heap-use-after-free  READ of size 8  in pop_last buggy.c:67` (the first frame
    outside CPython's inline helpers and the sanitizer runtime)."""
    k = _SAN_KIND.search(report)
    if not k:
        ub = _UBSAN.search(report)
        if ub:
            return f"UndefinedBehaviorSanitizer: {ub.group(2).strip()[:120]}  in {os.path.basename(ub.group(1))}"
        return m.group(1).strip()[:160]
    out = f"{k.group(1)}: {k.group(2)}"
    acc = _ACCESS.search(report, k.end())
    if acc:
        out += f"  {acc.group(0)}"
    for f in _NATIVE_FRAME.finditer(report, k.end()):
        func, where = f.group(1), f.group(2)
        if not func.startswith(_RUNTIME_FUNCS) and not in_runtime_code(where):
            out += f"  in {cython_name(func, report)} {os.path.basename(where)}"
            break
    return out


def _death_verdict(nodeid: str, rc: int | None, report: str, hung: bool, timeout: float) -> Verdict:
    san = _SAN.search(report)
    fatal = _FATAL.search(report)
    where = _innermost_test_frame(report, nodeid)
    if hung or re.search(r"^Timeout \(\d+:\d+:\d+(\.\d+)?\)!", report, re.MULTILINE):
        # ours (SIGABRT after --timeout), or a watchdog of the suite's own (faulthandler's timeout dump)
        detail = f"no progress for {timeout:g}s" + (f"  at {where}" if where else "")
        return Verdict(nodeid, "HANG", detail, report)
    parts = [SIGNALS.get(rc or 0, f"exit status {rc}")]
    if san:
        parts.append(_sanitizer_headline(report, san))
    elif fatal:
        parts.append(f"Fatal Python error: {fatal.group(1).strip()[:120]}")
    if where:
        parts.append(f"at {where}")
    return Verdict(nodeid, "CRASH", "  ".join(parts), report)


# --- environment ------------------------------------------------------------------------------------


class Setup:
    __slots__ = ("debug_python", "env", "notes", "python", "xopts")

    def __init__(
        self,
        python: str,
        xopts: list[str],
        env: dict[str, str],
        notes: list[str],
        debug_python: str | None = None,  # --gil chose this debug interpreter
    ) -> None:
        self.python = python
        self.xopts = xopts
        self.env = env
        self.notes = notes
        self.debug_python = debug_python


def _probe(python: str, code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([python, "-c", code], check=False, capture_output=True, text=True, env=env, timeout=120)


def _debug_interpreter(python: str) -> str | None:
    """$FFI_HARNESS_DEBUG_PYTHON, else pythonX.Yd for the suite interpreter's version (Debian's -dbg)."""
    explicit = os.environ.get("FFI_HARNESS_DEBUG_PYTHON")
    if explicit:
        return explicit
    out = _probe(python, "import sys; print('%d.%d' % sys.version_info[:2])")
    import shutil

    return shutil.which(f"python{out.stdout.strip()}d") if out.returncode == 0 else None


def prepare(args: argparse.Namespace) -> Setup:
    python = requested = interpreter.resolve_python(args.python)
    if not os.path.isfile(python):
        import shutil

        if shutil.which(python) is None:
            raise UsageError(f"--python {python}: no such interpreter")
    env = dict(os.environ)
    notes: list[str] = []
    xopts: list[str] = []
    if args.asan:
        try:
            from ffi_harness import sanitizers

            env = sanitizers.sanitizer_env(env)
        except FileNotFoundError as e:
            raise UsageError(str(e)) from None
        notes.append(f"--asan: LD_PRELOAD={env['LD_PRELOAD']} PYTHONMALLOC=malloc")
    if args.gil:
        env["PYTHONMALLOC"] = "malloc_debug" if args.asan else "debug"
        xopts += ["-X", "dev"]
        dbg = None
        probe = _probe(python, "import sys; print(hasattr(sys, 'gettotalrefcount'))")
        if probe.stdout.strip() == "True":
            notes.append(f"--gil: {python} is a debug build")
        elif args.python and os.environ.get("FFI_HARNESS_DEBUG_PYTHON") is None:
            notes.append(f"--gil: {python} is a release build (--python given): PYTHONMALLOC=debug -X dev only")
        else:
            dbg = _debug_interpreter(python)
            if dbg is None:
                notes.append(
                    "--gil: no debug interpreter (pythonX.Yd) found: PYTHONMALLOC=debug -X dev on the release build"
                )
        if dbg is not None:
            can = _probe(dbg, "import pytest", env)
            if can.returncode == 0:
                python = dbg
                notes.append(f"--gil: debug interpreter {dbg}")
            else:
                notes.append(
                    f"--gil: debug interpreter {dbg} cannot import pytest (install pytest for it and build the "
                    "extension for its ABI); PYTHONMALLOC=debug -X dev on the release build instead"
                )
    return Setup(python, xopts, env, notes, python if args.gil and python != requested else None)


# --- the worker loop --------------------------------------------------------------------------------


class Run:
    """What the workers reported, in the parent."""

    def __init__(self) -> None:
        self.collected: dict[str, None] = {}  # in collection order; a dict, not a list: n lookups
        self.collect_errors: list[dict[str, str]] = []
        self.verdicts: dict[str, Verdict] = {}
        self.workers = 0
        self.session_problem = ""


class Runner:
    def __init__(self, args: argparse.Namespace, setup: Setup, workdir: str) -> None:
        self.args = args
        self.setup = setup
        self.workdir = workdir
        self.run = Run()
        # A directory holding only the plugin module goes on the worker's PYTHONPATH: the suite's
        # interpreter needs neither ffi-harness installed nor any other of its modules importable.
        self.plugin_dir = PLUGIN_DIR
        self.skip_file = os.path.join(workdir, "done.txt")
        _write_file(self.skip_file, "")
        self.judged_before = 0

    def _emit(self, v: Verdict) -> None:
        self.run.verdicts[v.nodeid] = v
        if self.args.quiet and not v.bad and v.verdict != "not repeatable":
            return
        print(v.line(), flush=True)
        if v.verdict in ("CRASH", "HANG") and v.report:
            lines = v.report.strip().splitlines()
            shown = _report_excerpt(lines)
            for ln in shown:
                print(f"    | {ln}")
            if len(shown) < len(lines):
                print(f"    | ... ({len(lines)} lines in {self.log_path})")
            sys.stdout.flush()

    def command(self) -> list[str]:
        return [
            self.setup.python,
            *self.setup.xopts,
            "-c",
            PYTEST_AS_THE_PYTEST_COMMAND,
            "-p",
            PLUGIN_NAME,
            "-p",
            "no:faulthandler",
            "--capture=sys",  # C-level output (sanitizer reports, fatal errors) reaches the log, not a tmpfile
            *self.pytest_args(),
        ]

    def pytest_args(self) -> list[str]:
        a = list(self.args.pytest_args)
        if a and a[0] == "--":
            a = a[1:]
        return a

    def env(self, events: str) -> dict[str, str]:
        env = dict(self.setup.env)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(self.plugin_dir), env.get("PYTHONPATH", "")]))
        env["FFI_HARNESS_EVENTS_FILE"] = str(events)
        env["FFI_HARNESS_SKIP_FILE"] = self.skip_file
        env["FFI_HARNESS_LEAKS"] = "{}:{}".format(*self.args.leaks) if self.args.leaks else ""
        env.setdefault("PYTHONFAULTHANDLER", "1")
        return env

    def one_worker(self) -> bool:
        """Runs a worker until it ends; True when it ended normally (the suite is done)."""
        self.run.workers += 1
        self.log_path = os.path.join(self.workdir, f"worker-{self.run.workers}.log")
        events_path = os.path.join(self.workdir, f"events-{self.run.workers}.jsonl")
        _write_file(events_path, "")
        with open(self.log_path, "wb") as log:
            proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env(events_path),
                start_new_session=True,
            )
        current: str | None = None
        marker_offset = 0
        # Start-up and collection get their own watchdog: an import that deadlocks (a lock taken at module
        # level, a native init waiting for a thread) would otherwise keep the session waiting forever.
        deadline: float | None = time.monotonic() + self.args.collect_timeout
        collecting = True
        hung = False
        native = ""
        done = False
        buf = b""
        # The worker appends its events to a file; the parent reads them POLL seconds apart (and when the
        # worker ends) instead of waking up twice per test: that is what keeps the isolation cheap.
        import json  # after the worker started: its import overlaps the worker's start-up

        exited = _exit_waiter(proc)
        try:
            with open(events_path, "rb") as events:
                while True:
                    ended = exited(POLL)
                    buf += events.read()
                    *lines, buf = buf.split(b"\n")
                    for raw in lines:
                        ev = json.loads(raw)
                        kind = ev["ev"]
                        if kind == "collected":
                            collecting = False
                            for nid in ev["ids"]:
                                if nid not in self.run.verdicts:
                                    self.run.collected[nid] = None
                            if self.run.workers == 1:
                                self.run.collect_errors = ev["errors"]
                        elif kind in ("start", "run") and not hung:
                            if kind == "start":
                                current = ev["id"]
                                marker_offset = int(ev.get("log_offset", -1))
                                if marker_offset < 0:
                                    marker_offset = _find_marker(self.log_path, f"start {current}")
                            deadline = time.monotonic() + self.args.timeout
                        elif kind == "result":
                            self._emit(_from_result(ev))
                            current, deadline = None, None
                        elif kind == "done":
                            done = True
                            # A worker that does not exit after the suite (a non-daemon thread, an atexit
                            # deadlock) gets the same watchdog as a test.
                            deadline = time.monotonic() + self.args.timeout
                    if ended:
                        break
                    if deadline is not None and time.monotonic() >= deadline:
                        if not hung:
                            # The native half first (lock owners, every thread's native stack), while the
                            # worker is still stuck; then faulthandler dumps every thread's Python stack on
                            # SIGABRT, even with the GIL held by a deadlocked C call, and the process dies.
                            hung = True
                            native = _native_report(proc.pid)
                            _signal(proc, signal.SIGABRT)
                            deadline = time.monotonic() + KILL_GRACE
                        else:
                            _kill(proc)
        except BaseException:  # Ctrl-C, or our own error: the worker is in its own session, so end it here
            _kill(proc)
            proc.wait()
            raise
        rc = proc.wait()
        # The worker's own last words (faulthandler's Python stacks) before the native report goes after them.
        # faulthandler prints the innermost frame first: keep enough for every thread's whole stack.
        tail = "" if done or current is not None else _read_from(self.log_path, 0)[-16000:]
        if hung and native:  # into the worker's log, after its own last words: kept with --logs
            with open(self.log_path, "a", encoding="utf-8") as log_text:
                log_text.write("\n--- native (ffi-harness, while the test was stuck) ---\n" + native)
        if current is not None:
            report = _sanitizer_logs(self.setup.env, proc.pid) + _read_from(self.log_path, marker_offset)
            self._emit(_death_verdict(current, rc, report, hung, self.args.timeout))
            return False
        if not done:
            if hung and collecting:
                why = f"did not collect the suite within {self.args.collect_timeout:g} s (killed; every thread's stack is below)"
            elif hung:
                why = (
                    f"did not start a test within {self.args.collect_timeout:g} s of collecting (killed; stacks below)"
                )
            else:
                why = f"ended outside any test ({SIGNALS.get(rc, f'exit status {rc}')})"
            self.run.session_problem = f"the pytest worker {why}:\n{tail}"
            # Carry on after the last judged test, as long as workers make progress.
            judged = len(self.run.verdicts)
            progressed = judged > self.judged_before
            self.judged_before = judged
            return not (progressed and any(n not in self.run.verdicts for n in self.run.collected))
        elif hung:
            self.run.session_problem = (
                f"the pytest worker did not exit within {self.args.timeout:g} s of the suite's end (killed):"
                f" see {self.log_path}"
            )
        elif rc < 0:
            self.run.session_problem = f"the pytest worker died at exit ({SIGNALS.get(rc, rc)}): see {self.log_path}"
        return True

    def go(self) -> Run:
        while not self.one_worker():
            # The judged tests, which the next worker deselects (it continues after the dead one).
            _write_file(self.skip_file, "".join(f"{n}\n" for n in self.run.verdicts))
        return self.run


def _sanitizer_logs(env: dict[str, str], pid: int) -> str:
    """Reports a sanitizer wrote to its own files (``log_path=P`` in *SAN_OPTIONS: ``P.<pid>``, or
    ``P.<exe>.<pid>`` with log_exe_name) instead of stderr, for the worker that died."""
    out = []
    for var in ("ASAN_OPTIONS", "UBSAN_OPTIONS"):
        m = re.search(r"(?:^|:)log_path=([^:]+)", env.get(var, ""))
        if not m:
            continue
        base = m.group(1)
        folder, name = os.path.split(base)
        folder = folder or "."
        found = os.listdir(folder) if os.path.isdir(folder) else []
        for f in sorted(n for n in found if n.startswith(name) and n.endswith(f".{pid}")):
            with open(os.path.join(folder, f), encoding="utf-8", errors="replace") as fh:
                out.append(fh.read())
    return "\n".join(out) + ("\n" if out else "")


def _find_marker(log: str, text: str) -> int:
    """Offset of the worker's marker line for this test (written before the start event)."""
    with open(log, "rb") as f:
        data = f.read()
    i = data.rfind(f"=== ffi-harness: {text}".encode(errors="backslashreplace"))
    return max(i, 0)


def _read_from(log: str, offset: int) -> str:
    with open(log, "rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace")


def _native_report(pid: int) -> str:
    """Lock owners and every thread's native stack of a stuck worker, from the compiled engine (gdb
    under the hood); empty when the engine is not built (a source checkout run as `python -m`)."""
    try:
        from ffi_harness._engine import native_report
    except ImportError:
        return ""
    return native_report(pid)


def _exit_waiter(proc: subprocess.Popen[bytes]) -> Callable[[float], bool]:
    """wait(timeout) -> whether the worker has exited. On Linux a pidfd wakes the parent the moment the
    worker exits; Popen.wait(timeout) polls with sleeps of up to 50 ms instead, which a suite of fast
    tests pays at the end of every worker."""
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):  # not Linux >= 5.3 / Python >= 3.9
        pidfd = -1

    def exited(timeout: float) -> bool:
        if pidfd >= 0:
            select.select([pidfd], [], [], timeout)
            done = proc.poll() is not None
            if done:
                os.close(pidfd)
            return done
        try:
            proc.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    return exited


def _private_dir(prefix: str) -> str:
    """tempfile.mkdtemp's contract (a new 0700 directory in the first usable of $TMPDIR, /tmp, /var/tmp,
    the current directory) without importing tempfile, which pulls in random, hashlib and shutil before
    the worker can start."""
    bases = [os.environ.get("TMPDIR", ""), "/tmp", "/var/tmp", os.curdir]
    last: OSError | None = None
    for base in filter(None, bases):
        for _ in range(100):
            path = os.path.abspath(os.path.join(base, prefix + os.urandom(6).hex()))
            try:
                os.mkdir(path, 0o700)
                return path
            except FileExistsError:
                continue
            except OSError as e:  # not there, not writable: the next candidate
                last = e
                break
    raise UsageError(f"no writable temporary directory (TMPDIR, /tmp, /var/tmp, .): {last}")


def _write_file(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def _signal(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    try:
        os.kill(proc.pid, sig)
    except ProcessLookupError:
        pass


def _kill(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _report_excerpt(lines: list[str]) -> list[str]:
    """The lines worth a screen: the sanitizer's headline and first frames, the fatal error, the Python
    stacks (pytest's and pluggy's own frames left out); for a hang, the lock owners and each thread's
    first native frame outside the C library (where it waits)."""
    noise = re.compile(r'File "(<frozen runpy>|[^"]*/(_pytest|pluggy|pytest|_pytest_worker)/)')
    libc_frame = re.compile(r" at \.\.?/(sysdeps|nptl|misc)/| in \?\? ")
    lines = [ln for ln in lines if not noise.search(ln)]
    keep: list[int] = []
    native = thread_pending = False
    for i, ln in enumerate(lines):
        if ln.startswith("locks: ") or ln == "native stacks (gdb):":  # the lock owners: one line each
            native = native or ln == "native stacks (gdb):"
            keep.extend(k for k in (i,) if k not in keep)
        elif native and ln.startswith("Thread "):
            thread_pending = True
            keep.append(i)
        elif native and thread_pending and ln.startswith("#") and not libc_frame.search(ln):
            thread_pending = False
            keep.append(i)
        elif _SAN.search(ln) or _FATAL.search(ln) or ln.startswith(("Timeout (", "Current thread", "Thread 0x")):
            keep.extend(k for k in range(i, min(i + 8, len(lines))) if k not in keep)
    if not keep:
        keep = list(range(max(0, len(lines) - REPORT_LINES), len(lines)))
    # The lock owners come last in the report but must survive the cap: they go first.
    locks = [k for k in keep if lines[k].startswith("locks: ")]
    rest = [k for k in sorted(keep) if k not in locks]
    return [lines[k] for k in locks + rest][:REPORT_LINES]


# --- output -----------------------------------------------------------------------------------------


def summary(run: Run, elapsed: float, args: argparse.Namespace) -> tuple[str, int]:
    counts: dict[str, int] = {}
    for v in run.verdicts.values():
        counts[v.verdict] = counts.get(v.verdict, 0) + 1
    bad = [v for v in run.verdicts.values() if v.bad]
    out = ["", "=" * 30 + " ffi-harness test summary " + "=" * 30]
    for e in run.collect_errors:
        out.append(
            f"{e['id']}  error  (collection)  {e['longrepr'].strip().splitlines()[-1][:160] if e['longrepr'].strip() else ''}"
        )
    nr = [v for v in run.verdicts.values() if v.verdict == "not repeatable"]
    rank = {"CRASH": 0, "HANG": 1, "error": 2, "failed": 3, "OVER-DECREF": 4, "LEAK": 5}
    listed = sorted(bad, key=lambda v: rank.get(v.verdict, 6)) + nr
    for v in listed[:SUMMARY_LINES]:
        out.append(v.line())
    if len(listed) > SUMMARY_LINES:
        out.append(f"... and {len(listed) - SUMMARY_LINES} more (every verdict line is above)")
    if run.session_problem:
        out.append("session: " + run.session_problem.splitlines()[0])
    order = [
        "passed",
        "failed",
        "error",
        "skipped",
        "xfailed",
        "xpassed",
        "not repeatable",
        "LEAK",
        "OVER-DECREF",
        "CRASH",
        "HANG",
    ]
    parts = [f"{counts[k]} {k}" for k in order if counts.get(k)]
    if run.collect_errors:
        parts.append(f"{len(run.collect_errors)} collection error(s)")
    mode = ["leaks {}:{}".format(*args.leaks)] if args.leaks else []
    mode += [m for m, on in (("asan", args.asan), ("gil", args.gil)) if on]
    total = len(run.verdicts)
    out.append(
        f"{total} tests: {', '.join(parts) or 'nothing ran'} in {elapsed:.1f}s"
        f" ({run.workers} worker{'s' if run.workers != 1 else ''}{'; ' + ', '.join(mode) if mode else ''})"
    )
    if not args.asan and any(SANITIZER_SYMBOL.search(e["longrepr"]) for e in run.collect_errors):
        out.append(
            "hint: an extension was built with sanitizers (ffi-harness build-ext): its runtime is not loaded; "
            "run with --asan"
        )
    if total == 0:
        why = "collection failed" if run.collect_errors else "no test was collected"
        out.append(f"ffi-harness test: {why}: nothing was judged")
        # A worker that crashed before any test (importing the extension) is a finding, not a usage error.
        return "\n".join(out), EXIT_FINDINGS if run.session_problem else EXIT_USAGE
    if counts.get("skipped", 0) == total and not (run.collect_errors or run.session_problem):
        out.append("ffi-harness test: every test was skipped: nothing was exercised")
        return "\n".join(out), EXIT_USAGE
    missing = [n for n in run.collected if n not in run.verdicts]
    if missing:
        out.append(f"ffi-harness test: {len(missing)} collected test(s) got no verdict (first: {missing[0]})")
    status = EXIT_FINDINGS if bad or run.collect_errors or run.session_problem or missing else EXIT_CLEAN
    return "\n".join(out), status


def escape(text: str) -> str:
    """XML character data (xml.sax.saxutils would pull in urllib and http.client at start-up)."""
    text = "".join(c if c in "\t\n\r" or ord(c) >= 0x20 else f"\\x{ord(c):02x}" for c in text)
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def quoteattr(text: str) -> str:
    return '"' + escape(text).replace('"', "&quot;").replace("\n", "&#10;") + '"'


def write_junit(path: str, run: Run, elapsed: float) -> None:
    import json

    cases = []
    fails = errors = skips = 0
    for e in run.collect_errors:
        errors += 1
        cases.append(
            f'  <testcase classname="collection" name={quoteattr(e["id"])} time="0">'
            f'<error message="collection error">{escape(e["longrepr"])}</error></testcase>'
        )
    for v in run.verdicts.values():
        parts = v.nodeid.split("::")
        classname = ".".join([parts[0].removesuffix(".py").replace("/", "."), *parts[1:-1]])
        body = ""
        if v.verdict in ("failed", "LEAK", "OVER-DECREF", "CRASH", "HANG", "error"):
            kind = "error" if v.verdict in ("CRASH", "HANG", "error") else "failure"
            if kind == "error":
                errors += 1
            else:
                fails += 1
            msg = f"{v.verdict} {v.detail}".strip()
            text = v.report or json.dumps(v.rounds)
            body = f"<{kind} type={quoteattr(v.verdict)} message={quoteattr(msg)}>{escape(text)}</{kind}>"
        elif v.verdict in ("skipped", "xfailed"):
            skips += 1
            body = f"<skipped message={quoteattr(v.detail or v.verdict)}/>"
        elif v.verdict == "not repeatable":
            body = f"<system-out>{escape('not repeatable: ' + v.detail)}</system-out>"
        cases.append(
            f"  <testcase classname={quoteattr(classname)} name={quoteattr(parts[-1])} "
            f'time="{v.duration:.3f}">{body}</testcase>'
        )
    total = len(cases)
    xml = (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        f'<testsuites><testsuite name="ffi-harness test" tests="{total}" failures="{fails}" errors="{errors}" '
        f'skipped="{skips}" time="{elapsed:.3f}">\n' + "\n".join(cases) + "\n</testsuite></testsuites>\n"
    )
    with open(path, "w", encoding="utf-8") as f:
        f.write(xml)


def run(args: argparse.Namespace) -> int:
    pa = list(args.pytest_args)
    if pa and pa[0] == "--":
        pa = pa[1:]
    args.pytest_args = pa
    if not args.timeout > 0 or not args.collect_timeout > 0:  # `not >` refuses nan too
        raise UsageError("--timeout and --collect-timeout must be > 0")
    if any(a in ("-n", "--numprocesses", "--dist") or a.startswith(("-n=", "--numprocesses=")) for a in pa):
        raise UsageError("pytest-xdist (-n) cannot be combined: ffi-harness test runs the tests in its own worker")
    setup = prepare(args)
    for note in setup.notes:
        print(f"ffi-harness test: {note}", file=sys.stderr)
    if args.leaks and setup.env.get("PYTHONMALLOC") in ("malloc", "malloc_debug") and not args.asan:
        # Under --asan the blocks are counted too, as the bytes ASan's allocator holds (asan_bytes).
        print(
            "ffi-harness test: --leaks under PYTHONMALLOC=malloc: allocated blocks cannot be counted "
            "(gc objects, fds, threads, total refs and native counters still are)",
            file=sys.stderr,
        )
    t0 = time.monotonic()
    tmp = None
    if args.logs:
        workdir = args.logs
        os.makedirs(workdir, exist_ok=True)
    else:
        workdir = tmp = _private_dir("ffi-harness-test-")
    keep = bool(args.logs)
    try:
        result = Runner(args, setup, workdir).go()
        elapsed = time.monotonic() - t0
        text, status = summary(result, elapsed, args)
        if result.collect_errors:
            for e in result.collect_errors:
                print(f"\n--- collection error in {e['id']}:\n{e['longrepr'].rstrip()}")
            text_all = "\n".join(e["longrepr"] for e in result.collect_errors)
            if setup.debug_python and re.search(r"ModuleNotFoundError|ImportError|undefined symbol", text_all):
                print(
                    f"ffi-harness test: --gil runs the suite on the debug interpreter {setup.debug_python}, which "
                    "cannot import the modules above: install the package (and pytest) for that interpreter, "
                    "or pass --python <release interpreter> to use PYTHONMALLOC=debug -X dev alone"
                )
        if result.session_problem:
            print("\n" + result.session_problem)
            keep = True
        print(text)
        if args.junit:
            write_junit(args.junit, result, elapsed)
        if any(v.verdict in ("CRASH", "HANG") for v in result.verdicts.values()) and not args.logs:
            keep = True
        if keep:
            print(f"ffi-harness test: worker logs in {workdir}")
        return status
    finally:
        if tmp is not None and not keep:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """`python -m ffi_harness.testrun ...`: the same command without importing the other subcommands
    (the seeded-bug detector runs it from a scratch tree where the compiled fuzz engine is not built)."""
    parser = argparse.ArgumentParser(prog="ffi-harness test")
    add_arguments(parser)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return run(args)
    except UsageError as e:
        print(f"ffi-harness test: error: {e}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    raise SystemExit(main())
