"""Findings: standalone repro-*.py scripts, their classification, and their minimisation.

A repro embeds the harness prelude (hostile classes) and the runtime (the code the engine ran), the
plan (callables, classes, setup), and the program as Python source. Running it replays the program
once with the same checks; it exits 1 when a Python-level finding reproduces, and a memory bug
crashes it under the sanitizer environment its header prints. :func:`classify` runs one under that
environment and names what happened (kind + site); :func:`minimise` delta-debugs the steps, then
shrinks each argument, keeping only candidates that still fail with the same kind and site.
"""

from __future__ import annotations

import ast
import json
import os
import pprint
import re
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ffi_harness import sanitizers

HEADER_NAME = "FFI_HARNESS"
RUNTIME_PATH = Path(__file__).with_name("runtime.py")

_ASAN_ERROR = re.compile(r"ERROR: AddressSanitizer: ([\w-]+)")
_SUMMARY = re.compile(r"SUMMARY: (\w+Sanitizer): ([\w-]+) (\S+)(?: in (.+))?$", re.MULTILINE)
_UBSAN = re.compile(r"(\S+?):(\d+):\d+: runtime error: (.*)")
_STEP = re.compile(r"FFI_HARNESS_STEP (\d+) (\S+)")
_FRAME = re.compile(r"#\d+ 0x[0-9a-f]+ in (.+?) (/\S+|\(\S+\))", re.MULTILINE)
_LIBFUZZER_DEADLY = re.compile(r"ERROR: libFuzzer: ([\w-]+)")


@dataclass
class Verdict:
    """What one run of a program did."""

    kind: str  # e.g. heap-buffer-overflow, SystemError, refcount-leak, hang, crash:SIGSEGV; "" = clean
    site: str  # the crashing frame's function (sanitizer report) or the callable
    detail: str = ""
    step: int | None = None
    returncode: int = 0
    output: str = ""
    location: str = ""  # file:line of the sanitizer's report, when it names one

    @property
    def reproduced(self) -> bool:
        return bool(self.kind)

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.site}"


@dataclass
class Finding:
    """One deduplicated finding of a fuzz run."""

    kind: str
    site: str
    callable: str
    detail: str
    steps: list[dict[str, Any]]
    source: str  # "oracle" (found in-process) or "crash" (a libFuzzer artifact)
    artifact: str | None = None
    found_after: float = 0.0
    repro: Path | None = None
    reproduced: bool | None = None
    minimised_steps: int | None = None
    minimised: list[dict[str, Any]] | None = None  # the minimised program, once minimised
    notes: list[str] = field(default_factory=list)
    plan: dict[str, Any] | None = None  # the plan the program was decoded against
    verdict: Verdict | None = None  # the first replay's verdict

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.site}"

    @property
    def location(self) -> str:
        return self.verdict.location if self.verdict is not None else ""


# UBSan's pointer-overflow reports ("subtraction of unsigned offset from 0x... overflowed"): a bad memory
# access seen before it happens, like ASan's reports. Other UBSan kinds (a signed overflow) are other bugs.
_POINTER_UBSAN = ("ubsan:addition", "ubsan:subtraction", "ubsan:applying", "ubsan:pointer")


def same_bug(findings: list[Finding]) -> dict[int, Finding]:
    """Findings that are one bad memory access reported several ways, by id(): each later finding reached
    through the same callable whose sanitizer report names the same function and source line as an
    earlier one (a read past a table's end is a heap-buffer-overflow near it, a use-after-free, a SEGV or
    a UBSan pointer overflow farther away: several kinds, one line) maps to that first finding. Another
    callable crashing on the same line (a shared helper, the interpreter's list_dealloc) is kept apart.
    Findings of one kind, site and callable are one bug too: a finding renamed after its replay (see
    fuzz._name_by_its_first_symptom) can meet the one found under that name. So are a UBSan pointer
    overflow (an out-of-bounds pointer computed) and a memory-access report up to NEIGHBOUR_LINES lines
    from it, in the same function through the same callable: the pointer made on one line, read on the next.
    `findings` in the order they were found."""
    first: dict[tuple[str, str, str], Finding] = {}
    named: dict[tuple[str, str, str], Finding] = {}
    out: dict[int, Finding] = {}  # by id(): a renamed finding has the key of the one it duplicates
    for f in findings:
        ident = (f.kind, f.site, f.callable)
        if ident in named:
            out[id(f)] = named[ident]
            continue
        named[ident] = f
        if not f.location or (f.kind.startswith("ubsan") and f.kind not in _POINTER_UBSAN):
            continue
        where = (f.callable, f.site, f.location)  # reached through the same callable, too
        if where in first:
            out[id(f)] = first[where]
        elif (near := _pointer_made_or_used_nearby(f, first.values())) is not None:
            out[id(f)] = near
        else:
            first[where] = f
    return out


NEIGHBOUR_LINES = 2


def _pointer_made_or_used_nearby(f: Finding, earlier: Iterable[Finding]) -> Finding | None:
    """The earlier finding that is the other half of `f` (a pointer overflow and a memory access, each
    on its line of one function, reached through one callable), if any."""
    file, _, line = f.location.rpartition(":")
    if not line.isdigit():
        return None
    for e in earlier:
        e_file, _, e_line = e.location.rpartition(":")
        if (
            (e.callable, e.site, e_file) == (f.callable, f.site, file)
            and e_line.isdigit()
            and abs(int(e_line) - int(line)) <= NEIGHBOUR_LINES
            and (e.kind in _POINTER_UBSAN) != (f.kind in _POINTER_UBSAN)
        ):
            return e
    return None


def prelude_source() -> str:
    from ffi_harness import _engine

    return str(_engine.prelude_source())


def program_source(steps: list[dict[str, Any]]) -> str:
    lines = ["["]
    for s in steps:
        kwargs = ", ".join(f"{k!r}: {v}" for k, v in s["kwargs"])
        lines.append(f"    ({s['callable']!r}, {s['receiver']}, [{', '.join(s['args'])}], {{{kwargs}}}),")
    lines.append("]")
    return "\n".join(lines)


def _program_literal(source: str) -> str:
    if '"""' not in source and not source.endswith("\\"):
        return 'r"""\n' + source + '\n"""'
    return repr(source)


def render(plan: dict[str, Any], steps: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """A standalone repro script."""
    header = dict(meta)
    header["plan"] = {k: plan.get(k) for k in ("module", "callables", "classes", "setup", "setup_file")}
    run_line = meta.get("run", "python repro.py")
    title = meta.get("title", "ffi-harness repro")
    return f'''#!/usr/bin/env python3
"""{title}

Run it exactly so (the sanitizer conditions it was found under):
    {run_line}
or: ffi-harness repro THIS_FILE
Exit status 1 (or a sanitizer report) when the bug reproduces, 0 when it does not.
Generated by ffi-harness: the prelude and runtime below are the code the fuzzer ran.
"""
import sys
import types

{HEADER_NAME} = {pprint.pformat(header, width=110, sort_dicts=False)}

PROGRAM = {_program_literal(program_source(steps))}


def _load(name, source):
    module = types.ModuleType(name)
    sys.modules[name] = module
    exec(compile(source, "<" + name + ">", "exec"), module.__dict__)
    return module


_fh = _load("ffi_harness_prelude", {prelude_source()!r})
_rt = _load("ffi_harness_runtime", {RUNTIME_PATH.read_text()!r})

if __name__ == "__main__":
    raise SystemExit(_rt.main({HEADER_NAME}, PROGRAM))
'''


def read_header(path: Path) -> dict[str, Any]:
    """The FFI_HARNESS dict of a repro (read without running it)."""
    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == HEADER_NAME for t in node.targets):
            value = ast.literal_eval(node.value)
            if isinstance(value, dict):
                return value
    raise ValueError(f"{path}: not an ffi-harness repro (no {HEADER_NAME} header)")


def run_env(asan: bool, extra_path: list[str] | None = None) -> dict[str, str]:
    env = sanitizers.sanitizer_env(asan=asan) if asan else dict(os.environ)
    if extra_path:
        env["PYTHONPATH"] = os.pathsep.join([*extra_path, *filter(None, [env.get("PYTHONPATH")])])
    return env


def run_line(python: str, env: dict[str, str], asan: bool, path: str = "repro.py") -> str:
    keys = ["LD_PRELOAD", "PYTHONMALLOC", "ASAN_OPTIONS", "UBSAN_OPTIONS"] if asan else []
    if env.get("PYTHONPATH"):
        keys.append("PYTHONPATH")
    prefix = " ".join(f"{k}={shlex.quote(env[k])}" for k in keys if env.get(k))
    return f"{prefix} {shlex.quote(python)} {path}".strip()


def classify_output(returncode: int, stdout: str, stderr: str, timed_out: bool = False) -> Verdict:
    """Name what a run did from its exit status and output."""
    out = stdout + stderr
    steps = _STEP.findall(stderr)
    last_step = (int(steps[-1][0]), steps[-1][1]) if steps else (None, "")
    for line in stdout.splitlines():
        if line.startswith("FFI_HARNESS_RESULT "):
            d = json.loads(line.split(" ", 1)[1])
            return Verdict(d["kind"], d["site"], d.get("detail", ""), returncode=returncode, output=out)
    m = _SUMMARY.search(stderr)
    if m and m.group(1) == "AddressSanitizer":
        kind = m.group(2)  # the SUMMARY's bug type: heap-use-after-free, bad-free, double-free, ...
        if kind in ("unknown-crash", "") and (err := _ASAN_ERROR.search(stderr)):
            kind = err.group(1)
        func, location = m.group(4), _line_of(m.group(3))
        if not func or func in _NOISE_FUNCS or func.startswith("__") or in_runtime_code(m.group(3)):
            # A SEGV's summary names the signal path (pthread_kill), and a bad read in Rust's `CStr::from_ptr`
            # or C++'s `std::vector::operator[]` names the standard library: the bug is the first frame past.
            frame = _first_frame_at(stderr)
            func, location = frame if frame else (func or last_step[1], "")
            if kind == "SEGV" and _reraised(stderr):
                # The interpreter's faulthandler printed its traceback, then raised the signal again: ASan
                # reports that second signal, whose "address" is the sender's pid, not the fault's.
                detail = (
                    f"SEGV in {cython_name(func, stderr)} at {location or '?'} (raised again after faulthandler's "
                    "traceback: the report's address is the pid)"
                )
                return Verdict(kind, cython_name(func, stderr), detail, last_step[0], returncode, out, location)
        return Verdict(kind, cython_name(func, stderr), m.group(0), last_step[0], returncode, out, location)
    u = _UBSAN.search(stderr)
    if u or (m and m.group(1) == "UndefinedBehaviorSanitizer"):
        func = cython_name(_first_frame(stderr) or last_step[1], stderr)
        detail = u.group(3) if u else m.group(0) if m else ""
        kind = "ubsan:" + re.sub(r"[^a-z]+", "-", detail.split(" ")[0].lower()).strip("-") if u else "ubsan"
        return Verdict(kind, func, detail, last_step[0], returncode, out, f"{u.group(1)}:{u.group(2)}" if u else "")
    if timed_out or "Timeout (" in stderr or "ALARM: working on the last Unit" in stderr:
        return Verdict(
            "hang",
            last_step[1] or "?",
            "no progress within the timeout (every thread's stack in the output)",
            last_step[0],
            returncode,
            out,
        )
    lf = _LIBFUZZER_DEADLY.search(stderr)
    if "Fatal Python error" in stderr or returncode < 0 or lf:
        sig = f"signal {-returncode}" if returncode < 0 else (lf.group(1) if lf else "fatal error")
        fatal = re.search(r"Fatal Python error: (.*)", stderr)
        return Verdict(
            f"crash:{(lf.group(1) if lf else sig).replace(' ', '')}",
            last_step[1] or "?",
            fatal.group(1) if fatal else sig,
            last_step[0],
            returncode,
            out,
        )
    if returncode == 1 and "Traceback (most recent call last)" in stderr:
        last = stderr.strip().splitlines()[-1] if stderr.strip() else ""
        return Verdict("", "", f"error: the program itself failed: {last}", returncode=returncode, output=out)
    if returncode not in (0, 1):
        return Verdict(
            f"exit:{returncode}", last_step[1] or "?", "the process exited abnormally", last_step[0], returncode, out
        )
    return Verdict("", "", returncode=returncode, output=out)


_NOISE_FUNCS = {
    "raise",
    "abort",
    "malloc",
    "free",
    "calloc",
    "realloc",
    "memcpy",
    "memmove",
    "memset",
    "strlen",
    "pthread_kill",
    "__pthread_kill_implementation",
    "__pthread_kill_internal",
    "faulthandler_fatal_error",
}
_NOISE_PLACES = ("libclang_rt", "libc.so", "nptl/", "signal/", "sysdeps/", "faulthandler.c", "stdlib/abort.c")
# The languages' standard libraries, inlined into the module: Rust's core/alloc/std (their sources sit under
# /rustc/<commit>/library/) and libstdc++'s headers. A report's first frame there is where a bad pointer was
# used, not the code that made it: the site is the first frame of the module's own code.
_RUNTIME_PLACES = ("/rustc/", "/usr/include/c++/")


def in_runtime_code(where: str) -> bool:
    """Whether a frame's location is the sanitizer runtime, libc, the signal path or a language's standard
    library: never the site of a bug in the module, though often the first frame of its report."""
    return any(p in where for p in _NOISE_PLACES + _RUNTIME_PLACES)


_CYTHON_FUNCTION = re.compile(r"__pyx_(pf|pw|f)_(\d.*)")


def cython_name(func: str, stderr: str = "") -> str:
    """A Cython function's dotted Python name from its generated C name, else `func` unchanged.

    Cython names a function by its scope, each part prefixed with its length and followed by "_", then
    the function: a cdef (`f`) by name, a def's wrapper (`pw`) by an odd number and name, the def's body
    (`pf`) by an even number, none for 0, and name. `__pyx_pw_5tally_6_tally_9Histogram_19__getitem__`
    is `tally._tally.Histogram.__getitem__`, `__pyx_f_5tally_6_tally_9Histogram__grow` is `..._grow`.
    A body's name is ambiguous (`..._2to_tuple`: `to_tuple`, or a class `to`'s first def, `tuple`), so
    the wrapper that called it, the next `pw` frame of the report, names it when there is one. Else the
    parse with the most scope parts whose rest has the right shape for its kind wins.
    """
    m = _CYTHON_FUNCTION.fullmatch(func)
    if not m:
        return func
    if m.group(1) == "pf":
        wrapper = next((f for f, _ in _FRAME.findall(stderr) if f.startswith("__pyx_pw_")), None)
        if wrapper:
            return cython_name(wrapper)
    tail_shape = {"pw": r"\d+([A-Za-z_]\w*)", "pf": r"\d*([A-Za-z_]\w*)", "f": r"([A-Za-z_]\w*)"}[m.group(1)]
    best: list[str] | None = None
    parts: list[str] = []
    rest = m.group(2)
    while True:
        tail = re.fullmatch(tail_shape, rest)
        if parts and tail:
            best = [*parts, tail.group(1)]
        n = re.match(r"\d+", rest)
        if not n:
            break
        size, body = int(n.group()), rest[n.end() :]
        if size == 0 or len(body) <= size or body[size] != "_":
            break
        parts.append(body[:size])
        rest = body[size + 1 :]
    return ".".join(best) if best else func


def _first_frame(stderr: str) -> str | None:
    """The function of the first stack frame outside the sanitizer runtime, libc and the signal path."""
    frame = _first_frame_at(stderr)
    return frame[0] if frame else None


_SEGV_AT = re.compile(r"==(\d+)==ERROR: AddressSanitizer: SEGV on unknown address (0x[0-9a-f]+)")


def _reraised(stderr: str) -> bool:
    """Whether ASan's SEGV report is of a signal sent by the process to itself (kill/raise give the
    sender's pid where a fault gives the address): faulthandler's re-raise after its traceback."""
    m = _SEGV_AT.search(stderr)
    return m is not None and int(m.group(2), 16) == int(m.group(1))


def _first_frame_at(stderr: str) -> tuple[str, str] | None:
    """The first stack frame outside the sanitizer runtime, libc and the signal path: (function, file:line)."""
    for func, where in _FRAME.findall(stderr):
        if in_runtime_code(where) or func in _NOISE_FUNCS:
            continue
        if func.startswith(("__asan", "__interceptor", "__sanitizer", "__ubsan", "__GI_")):
            continue
        return func, _line_of(where)
    return None


def _line_of(where: str) -> str:
    """file:line of a report's file:line:column (empty for a module+offset such as `(libc.so.6+0x3c04f)`)."""
    if where.startswith("(") or ":" not in where:
        return ""
    return where.rsplit(":", 1)[0] if where.count(":") >= 2 else where


def run_script(path: Path, python: str, env: dict[str, str], timeout: float) -> Verdict:
    # The program runs in an empty directory (runtime.main changes into it) removed here, crash or not.
    with tempfile.TemporaryDirectory(prefix="ffi-harness-replay-") as scratch:
        return _run_script(path, python, {**env, "FFI_HARNESS_CWD": scratch}, timeout)


def _run_script(path: Path, python: str, env: dict[str, str], timeout: float) -> Verdict:
    env = dict(env)
    env["FFI_HARNESS_TRACE"] = "1"
    before = _children_cpu()
    start = time.monotonic()
    try:
        p = subprocess.run(
            [python, str(path)],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout + 30,
            errors="replace",
            check=False,
        )
        verdict = classify_output(p.returncode, p.stdout, p.stderr)
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = (e.stderr or b"").decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        verdict = classify_output(-9, out, err, timed_out=True)
    if verdict.kind == "hang":
        # Tell a blocked process (deadlock, or a wait with no end) from a busy one (an input that is slow).
        cpu, wall = _children_cpu() - before, time.monotonic() - start
        state = (
            "busy: CPU-bound past the timeout (a slow input)"
            if cpu > 0.25 * wall
            else "blocked: no CPU used (deadlock or endless wait)"
        )
        verdict.detail = f"{state}; {cpu:.1f} s CPU in {wall:.1f} s; every thread's stack is in the output"
    return verdict


def _children_cpu() -> float:
    try:
        import resource

        r = resource.getrusage(resource.RUSAGE_CHILDREN)
    except (ImportError, OSError):
        return 0.0
    return float(r.ru_utime + r.ru_stime)


# --- minimisation --------------------------------------------------------------------------------


def _int_candidates(src: str) -> list[str]:
    try:
        n = int(src)
    except ValueError:
        return []
    out = []
    for c in (0, 1, -1, n // 2, n - (1 if n > 0 else -1), n // 10):
        if abs(c) < abs(n) and str(c) not in out:
            out.append(str(c))
    return out


def _arg_candidates(src: str, depth: int = 0) -> list[str]:
    """Simpler versions of one argument's source: smaller ints, trivial values, fewer/simpler items."""
    ints = _int_candidates(src)
    if ints:
        return ints
    out = [c for c in ("None", "0", "1", "''", "b''") if c != src and len(c) < len(src)]
    try:
        node = ast.parse(src, mode="eval").body
    except SyntaxError:
        return out
    if isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes)) and len(node.value) > 1:
        out.append(repr(node.value[: len(node.value) // 2]))
    if isinstance(node, (ast.List, ast.Tuple)) and node.elts and depth < 2:
        parts = [ast.get_source_segment(src, e) or "None" for e in node.elts]
        open_, close = ("[", "]") if isinstance(node, ast.List) else ("(", ",)" if len(parts) == 2 else ")")
        for i in range(len(parts)):
            rest = parts[:i] + parts[i + 1 :]
            out.append(open_ + ", ".join(rest) + (close if rest else close.lstrip(",")))
        for i in range(len(parts)):
            for alt in _arg_candidates(parts[i], depth + 1)[:4]:
                changed = parts[:i] + [alt] + parts[i + 1 :]
                out.append(open_ + ", ".join(changed) + (")" if open_ == "(" and len(changed) > 1 else close))
    if isinstance(node, ast.Dict) and node.keys and depth < 2 and all(k is not None for k in node.keys):
        # fewer entries, then simpler values (None first: what a hostile value adds is rarely the bug),
        # then simpler keys
        keys = [ast.get_source_segment(src, k) or "None" for k in node.keys if k is not None]
        values = [ast.get_source_segment(src, v) or "None" for v in node.values]

        def render(ks: list[str], vs: list[str]) -> str:
            return "{" + ", ".join(f"{k}: {v}" for k, v in zip(ks, vs, strict=True)) + "}"

        for i in range(len(keys)):
            out.append(render(keys[:i] + keys[i + 1 :], values[:i] + values[i + 1 :]))
        for i in range(len(values)):
            for alt in dict.fromkeys(["None", *_arg_candidates(values[i], depth + 1)[:3]]):
                if alt != values[i]:
                    out.append(render(keys, values[:i] + [alt] + values[i + 1 :]))
        for i in range(len(keys)):
            for alt in _arg_candidates(keys[i], depth + 1)[:3]:
                out.append(render(keys[:i] + [alt] + keys[i + 1 :], values))
    return out


def minimise(steps: list[dict[str, Any]], still_fails: Any, deadline: float) -> tuple[list[dict[str, Any]], int]:
    """ddmin over steps, then argument shrinking; `still_fails(steps) -> bool`. Returns (steps, runs)."""
    runs = 0

    def test(candidate: list[dict[str, Any]]) -> bool:
        nonlocal runs
        if time.monotonic() > deadline or not candidate:
            return False
        runs += 1
        return bool(still_fails(candidate))

    current = list(steps)
    n = 2
    while len(current) >= 2 and time.monotonic() < deadline:
        chunk = max(1, len(current) // n)
        reduced = False
        for i in range(0, len(current), chunk):
            candidate = current[:i] + current[i + chunk :]
            if test(candidate):
                current, n, reduced = candidate, max(n - 1, 2), True
                break
        if not reduced:
            if n >= len(current):
                break
            n = min(len(current), n * 2)
    progress = True
    while progress and time.monotonic() < deadline:
        progress = False
        for si, step in enumerate(current):
            # fewer arguments first (trailing ones), then keyword arguments, then simpler values
            if step["kwargs"]:
                cand = [dict(s) for s in current]
                cand[si]["kwargs"] = []
                if test(cand):
                    current, progress = cand, True
                    continue
            if step["receiver"] != 0:
                cand = [dict(s) for s in current]
                cand[si]["receiver"] = 0
                if test(cand):
                    current, progress = cand, True
            if current[si]["args"]:
                cand = [dict(s) for s in current]
                cand[si]["args"] = list(cand[si]["args"][:-1])
                if test(cand):
                    current, progress = cand, True
                    continue
            for ai in range(len(current[si]["args"])):
                for alt in _arg_candidates(current[si]["args"][ai]):
                    cand = [dict(s) for s in current]
                    cand[si]["args"] = list(cand[si]["args"])
                    cand[si]["args"][ai] = alt
                    if test(cand):
                        current, progress = cand, True
                        break
    return current, runs


def write_temp_repro(text: str, directory: Path) -> Path:
    fd, name = tempfile.mkstemp(prefix="candidate-", suffix=".py", dir=directory)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return Path(name)


def python_version(python: str) -> str:
    try:
        return subprocess.run(
            [python, "-c", "import sys; print(sys.version.split()[0])"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def main_python() -> str:
    return sys.executable
