"""`ffi-harness fuzz MODULE`: discover a module's callables and fuzz them, guided by libFuzzer.

1. The module's shared objects are inspected without importing it (:mod:`ffi_harness.sanitizers`).
   An ASan build runs under clang's ASan runtime (preloaded) with ``PYTHONMALLOC=malloc``.
2. Discovery (:mod:`ffi_harness.discover`) runs in a child process under that environment: the plan.
3. ``--jobs`` engine processes (:mod:`ffi_harness.engine_main`, under the target's interpreter) share
   one corpus directory. In-process oracle failures are written as finding files and fuzzing goes on;
   a crash (sanitizer report, signal, hang) ends the process: its artifact is decoded
   (``_engine.describe``), classified from the report, and the job restarts for the remaining time. A
   crash site seen twice has its callable left out of the restarted jobs (said in the summary).
4. Every finding gets a standalone repro-*.py, checked by running it, then minimised.

Exit status: 0 no finding; 1 finding(s), or an engine run that died or hung with nothing to replay (a
PROBLEM line: no input reproduces it, but the run was not clean); 2 usage or set-up error, or a run that
exercised nothing.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ffi_harness import cmpshim, interpreter, sanitizers
from ffi_harness import findings as fnd
from ffi_harness.cli import EXIT_CLEAN, EXIT_FINDINGS, EXIT_USAGE, UsageError

PACKAGE_DIR = str(Path(__file__).resolve().parent)
_PULSE = re.compile(r"^#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+)", re.MULTILINE)
_STAT_EXECS = re.compile(r"stat::number_of_executed_units: (\d+)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("module", help="importable module name (e.g. mypkg or mypkg._native)")
    parser.add_argument(
        "--max-time", type=float, default=60.0, metavar="S", help="fuzzing time in seconds (default 60)"
    )
    parser.add_argument(
        "--artifacts",
        default="ffi-harness-artifacts",
        metavar="DIR",
        help="where repro-*.py, the corpus and logs go (default ./ffi-harness-artifacts)",
    )
    parser.add_argument(
        "--only", nargs="+", metavar="NAME", help="fuzz only these callables (a method keeps its class's constructor)"
    )
    parser.add_argument(
        "--setup", metavar="FILE", help="Python snippet run with the module imported; instances it leaves join the pool"
    )
    parser.add_argument(
        "--jobs", type=int, default=1, metavar="N", help="engine processes sharing one corpus (default 1)"
    )
    parser.add_argument("--python", metavar="PATH", help="interpreter to fuzz under (default: this one)")
    parser.add_argument(
        "--timeout", type=float, default=10.0, metavar="S", help="per-input deadlock watchdog (default 10)"
    )
    parser.add_argument(
        "--minimise-time",
        type=float,
        default=60.0,
        metavar="S",
        help="time budget per finding for minimisation (default 60; 0 = off)",
    )
    parser.add_argument("--no-probe", action="store_true", help="never call a callable to learn its arity")
    parser.add_argument("--seed", type=int, help="libFuzzer seed (default: random)")
    parser.add_argument("--corpus", metavar="DIR", help="corpus directory (default DIR/corpus)")
    parser.add_argument(
        "--libfuzzer-arg", action="append", default=[], metavar="ARG", help="extra libFuzzer flag, e.g. -max_len=256"
    )
    parser.add_argument(
        "--allow-hang",
        nargs="+",
        default=[],
        metavar="NAME",
        help="callables that may block for ever by design (a second lock taken with no timeout): their hangs are "
        f"counted, not reported; each leaves later runs after {ALLOWED_HANGS_BEFORE_EXCLUSION} of them",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the summary as JSON")
    parser.add_argument(
        "--max-findings",
        type=int,
        default=0,
        metavar="N",
        help="stop fuzzing once N distinct findings are in (0: never)",
    )


# A known crash that keeps coming back is first *masked*: after MASK_AFTER_REPEATS repeats it is
# minimised and later engine runs skip only the calls shaped like its minimised call (runtime.py:
# `mask_features`), so the rest of the callable is still fuzzed. Leaving the whole callable out hid
# deeper bugs behind a shallow one (ujson 5.1.0's `dumps`: a lone-surrogate key crashed it within
# seconds, so its `indent` overflow, a CVE, was never reached). Only a crash that still repeats with
# MASKS_PER_CRASH masks in place leaves its callable out, after REPEATS_BEFORE_EXCLUSION repeats in all. Each repeat
# costs one engine restart (about a second).
MASK_AFTER_REPEATS = 3
# One crash site may be reached in several shapes: each gets its mask, up to this many per callable.
MASKS_PER_CRASH = 3
REPEATS_BEFORE_EXCLUSION = 8
# A declared blocking callable (--allow-hang) stays in the runs after a hang, since leaving it out at once
# would stop fuzzing it for good; each hang costs the whole --timeout, so a few are tolerated, not more.
ALLOWED_HANGS_BEFORE_EXCLUSION = 3
ENGINE_GRACE = 30.0  # seconds an engine run may outlive its time limit (plus --timeout) before it is killed
# Minimisation for a mask runs while the engines run on; bounded so the loop gets back to them.
MASK_MINIMISE_TIME = 15.0


@dataclass
class Target:
    module: str
    python: str
    env: dict[str, str]  # the target's own: what a repro runs with
    engine_env: dict[str, str]  # env, plus what makes the interpreter import this ffi-harness (discovery, engine)
    asan: bool
    coverage: bool
    files: list[sanitizers.Instrumentation]


@dataclass
class EngineRun:
    job: int
    index: int
    log: Path
    stats: Path
    proc: subprocess.Popen[bytes]
    started: float
    excluded: list[str]
    masks: list[dict[str, Any]]
    ended: float = 0.0
    execs: int = 0
    cov: int = 0
    ft: int = 0
    killed: bool = False  # by us: it outlived its time limit by the timeout and a grace


@dataclass
class Totals:
    runs: list[EngineRun] = field(default_factory=list)
    calls: dict[str, list[int]] = field(default_factory=dict)
    signatures: int = 0
    native_modules: int = 0
    masked: int = 0
    # The refcount oracle's second runs: suspicions they cleared, and calls judged on None/True/False.
    kept_references: int = 0
    kept_by: dict[str, int] = field(default_factory=dict)  # the same, by callable
    singleton_checks: int = 0
    singleton_false_alarms: int = 0
    singletons_judged: bool | None = None  # None: no engine run reported (False: immortal singletons)
    type_cache_unsettled: int = 0  # engine processes whose type cache fill never went quiet (runtime.py)
    # Engine runs that died or hung with nothing to replay (no crash artifact): not findings, since no
    # input reproduces them, but never a clean run either.
    problems: list[str] = field(default_factory=list)
    allowed_hangs: dict[str, int] = field(default_factory=dict)  # callable -> hangs forgiven by --allow-hang


def resolve_target(module: str, python: str) -> Target:
    # Also prints the sys.path entry the top-level package was found in: the current directory (an
    # in-place build) is on sys.path here but not in the engine's scratch directory.
    code = (
        "import importlib.util, os, sys\n"
        "try:\n    spec = importlib.util.find_spec(sys.argv[1])\n"
        "    top = importlib.util.find_spec(sys.argv[1].split('.')[0])\n"
        "except Exception as e:\n    print('ERR', e); raise SystemExit(0)\n"
        "if not spec or not top:\n    print('MISSING'); raise SystemExit(0)\n"
        "where = list(top.submodule_search_locations or []) or [top.origin or '']\n"
        "print('OK', os.path.dirname(os.path.abspath(where[0])))\n"
    )
    out = subprocess.run([python, "-c", code, module], capture_output=True, text=True, check=False)
    status = out.stdout.strip()
    if out.returncode != 0 or not status.startswith("OK"):
        raise UsageError(f"no module named {module!r} in {python} ({status or out.stderr.strip()[-200:]})")
    files = sanitizers.inspect_module(module, python)
    if not files:
        raise UsageError(f"{module} is pure Python (no shared object in its package): there is no native code to fuzz")
    asan = any(f.asan for f in files)
    coverage = any(f.coverage for f in files)
    try:
        env = fnd.run_env(asan)
    except FileNotFoundError as e:
        raise UsageError(str(e)) from e
    env.pop("FFI_HARNESS_TRACE", None)
    if env.get("PYTHONPATH"):  # the engine runs in a scratch directory: relative entries would break
        env["PYTHONPATH"] = os.pathsep.join(os.path.abspath(p) for p in env["PYTHONPATH"].split(os.pathsep) if p)
    found_in = status[len("OK") :].strip()
    if found_in and os.path.realpath(found_in) == os.path.realpath(os.getcwd()):
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.getcwd(), env.get("PYTHONPATH")]))
    return Target(module, python, env, with_this_engine(python, env), asan, coverage, files)


_LOAD_ENGINE = "import os, ffi_harness._engine, ffi_harness.runtime; print(os.path.dirname(os.path.realpath(ffi_harness.__file__)))"


def with_this_engine(python: str, env: dict[str, str]) -> dict[str, str]:
    """`env`, changed if needed so that `python` imports this command's own ffi_harness package.

    Discovery and the engine run under the target's interpreter, which may hold another copy of
    ffi-harness (an older install in the target's venv). A plan written by one version and run by
    another fails in ways that look like findings or like a clean run, so this copy always wins: a
    directory holding only a link to it goes first on PYTHONPATH (the CLI's own site-packages would
    bring every other package installed beside it). A copy that cannot load there is a usage error.
    """
    first = subprocess.run([python, "-c", _LOAD_ENGINE], env=env, capture_output=True, text=True, check=False)
    theirs = first.stdout.strip() if first.returncode == 0 else None
    if theirs == PACKAGE_DIR:
        return env
    link_dir = (
        Path(tempfile.gettempdir()) / f"ffi-harness-package-{hashlib.sha256(PACKAGE_DIR.encode()).hexdigest()[:12]}"
    )
    link_dir.mkdir(exist_ok=True)
    link = link_dir / "ffi_harness"
    if not (link.is_symlink() and os.readlink(link) == PACKAGE_DIR):
        tmp = link_dir / f".ffi_harness.{os.getpid()}"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(PACKAGE_DIR, target_is_directory=True)
        os.replace(tmp, link)  # atomic: another run may be reading the link
    ours = dict(env)
    ours["PYTHONPATH"] = os.pathsep.join(filter(None, [str(link_dir), env.get("PYTHONPATH")]))
    probe = subprocess.run([python, "-c", _LOAD_ENGINE], env=ours, capture_output=True, text=True, check=False)
    if probe.returncode == 0 and probe.stdout.strip() == PACKAGE_DIR:
        return ours
    why = (probe.stderr.strip().splitlines() or [probe.stdout.strip()])[-1]
    if theirs:
        raise UsageError(
            f"{python} imports another copy of ffi-harness ({theirs}) and cannot load this command's "
            f"({PACKAGE_DIR}: {why}). Run the copy installed there ({python} -m ffi_harness fuzz ...), "
            f"or install this version into that interpreter"
        )
    raise UsageError(
        f"the ffi-harness engine cannot be loaded by {python}: {why}. Install ffi-harness into that "
        f"interpreter ({python} -m pip install ffi-harness, or maturin develop with that interpreter active)"
    )


def run_discovery(target: Target, workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    plan_path = workdir / "plan.json"
    cmd = [target.python, "-m", "ffi_harness.discover", target.module, "--out", str(plan_path)]
    if args.setup:
        if not Path(args.setup).is_file():
            raise UsageError(f"--setup {args.setup}: no such file")
        cmd += ["--setup", os.path.abspath(args.setup)]
    if args.only:
        cmd += ["--only", *args.only]
    if args.no_probe:
        cmd.append("--no-probe")
    try:
        # Probing calls the callables: in the engine's scratch directory, for what they write to relative paths.
        p = subprocess.run(
            cmd,
            env=target.engine_env,
            cwd=workdir / "cwd",
            capture_output=True,
            text=True,
            timeout=300,
            errors="replace",
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        raise UsageError(f"discovery of {target.module} did not finish in 300 s") from e
    if p.returncode != 0:
        err = re.search(r"FFI_HARNESS_ERROR (.*)", p.stderr)
        if err:
            raise UsageError(err.group(1))
        probing = re.findall(r"FFI_HARNESS_PROBING (.*)", p.stderr)
        verdict = fnd.classify_output(p.returncode, p.stdout, p.stderr)
        where = f" while probing {probing[-1]}" if probing else " while importing it or running the setup"
        tail = "\n".join(p.stderr.strip().splitlines()[-15:])
        if verdict.kind and verdict.kind != "exit:1" or p.returncode < 0:
            raise DiscoveryCrash(
                f"{target.module} crashed{where}: {verdict.kind or p.returncode} {verdict.site}\n{tail}"
            )
        raise UsageError(f"discovery of {target.module} failed{where}:\n{tail}")
    plan: dict[str, Any] = json.loads(plan_path.read_text())
    return plan


class DiscoveryCrash(Exception):
    """The target crashed while being imported or probed: a finding in itself."""


def _quarantine_if_from_corpus(art: Path, corpus: Path, crashes: Path, notes: list[str]) -> None:
    """A corpus input that crashes (one saved while its shape was masked, by an earlier session whose masks
    this one does not have yet) would end every engine run while the corpus loads, before any fuzzing:
    it is moved out of the corpus. libFuzzer names both an artifact and a corpus file by the input's SHA-1."""
    digest = art.name.rsplit("-", 1)[-1]
    source = corpus / digest
    if not source.is_file() or source.read_bytes() != art.read_bytes():
        return
    moved = crashes / f"from-corpus-{digest}"
    shutil.move(source, moved)
    notes.append(f"corpus input {digest[:12]} crashed: moved out of the corpus to {moved}, so later runs load the rest")


def _libfuzzer_args(
    args: argparse.Namespace,
    corpus: Path,
    crashes: Path,
    job: int,
    run_index: int,
    remaining: float,
    dictionary: Path | None = None,
) -> list[str]:
    a = [
        str(corpus),
        f"-max_total_time={max(1, int(remaining))}",
        f"-timeout={max(1, int(args.timeout))}",
        f"-artifact_prefix={crashes}/job{job}-",
        "-print_final_stats=1",
        "-rss_limit_mb=4096",
        "-malloc_limit_mb=65536",
        "-max_len=1024",
        "-report_slow_units=1000000",
    ]
    if args.seed is not None:
        # Reproducible, but a new sequence per engine run: a restart after a crash with the same seed
        # would replay the same mutations into the same crash.
        a.append(f"-seed={args.seed + 1000 * run_index + job}")
    if dictionary is not None:
        a.append(f"-dict={dictionary}")
    return a + list(args.libfuzzer_arg)


def _dictionary(plan: dict[str, Any], path: Path) -> Path | None:
    """A libFuzzer dictionary: the setup's literals and the callables' keyword names (values an input
    must spell out exactly, e.g. a key that exists; libFuzzer splices them into inputs)."""
    tokens: set[bytes] = set()
    for c in plan["callables"]:
        for kw in c.get("keywords", []):
            tokens.add(kw.encode())
    if plan.get("setup"):
        try:
            tree = ast.parse(plan["setup"])
        except SyntaxError:
            tree = None
        for node in ast.walk(tree) if tree is not None else []:
            if isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes)) and 1 <= len(node.value) <= 64:
                tokens.add(node.value if isinstance(node.value, bytes) else node.value.encode("utf-8", "replace"))
    if not tokens:
        return None
    lines = [
        '"' + "".join(chr(b) if 32 <= b < 127 and b not in (34, 92) else f"\\x{b:02x}" for b in t) + '"'
        for t in sorted(tokens)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def _plan_without(
    plan: dict[str, Any], excluded: list[str], workdir: Path, masks: list[dict[str, Any]] | None = None
) -> Path:
    """The plan an engine run uses: without the excluded callables, with the known-crash masks."""
    if not excluded and not masks:
        return workdir / "plan.json"
    p = dict(plan)
    p["callables"] = [c for c in plan["callables"] if c["name"] not in excluded]
    if masks:
        p["masks"] = [
            {"callable": m["callable"], "repeat": True}
            if m.get("repeat")
            else {"callable": m["callable"], "source": m["source"]}
            for m in masks
            if "source" in m or m.get("repeat")
        ]
    tag = json.dumps([sorted(excluded), p.get("masks", [])])
    path = workdir / f"plan-{hashlib.sha1(tag.encode()).hexdigest()[:8]}.json"
    path.write_text(json.dumps(p))
    return path


def _parse_log(run: EngineRun) -> str:
    try:
        text = run.log.read_text(errors="replace")
    except OSError:
        return ""
    pulses = _PULSE.findall(text)
    if pulses:
        n, cov, ft = pulses[-1]
        run.execs, run.cov, run.ft = int(n), int(cov), int(ft)
    m = _STAT_EXECS.search(text)
    if m:
        run.execs = max(run.execs, int(m.group(1)))
    try:
        stats = json.loads(run.stats.read_text())
        run.execs = max(run.execs, int(stats.get("execs", 0)))
    except (OSError, ValueError):
        pass
    return text


def _check_arguments(args: argparse.Namespace) -> None:
    """Refuse what would otherwise fail with a traceback, some of it only after the whole run."""
    for flag, seconds in (("--max-time", args.max_time), ("--timeout", args.timeout)):
        if not math.isfinite(seconds) or seconds <= 0:
            raise UsageError(f"{flag} must be a positive number of seconds, not {seconds}")
    if not math.isfinite(args.minimise_time) or args.minimise_time < 0:
        raise UsageError(f"--minimise-time must be 0 or a positive number of seconds, not {args.minimise_time}")
    if args.jobs < 1:
        raise UsageError("--jobs must be at least 1")
    if args.max_findings < 0:
        raise UsageError("--max-findings must be 0 (never stop) or more")
    for flag, folder in (("--artifacts", args.artifacts), ("--corpus", args.corpus)):
        if folder and Path(folder).exists() and not Path(folder).is_dir():
            raise UsageError(f"{flag} {folder}: exists and is not a directory")
    if args.json and not Path(args.json).resolve().parent.is_dir():
        raise UsageError(f"--json {args.json}: its directory does not exist")


def run(args: argparse.Namespace) -> int:
    _check_arguments(args)
    python = interpreter.resolve_python(args.python)
    target = resolve_target(args.module, python)
    artifacts = Path(args.artifacts).resolve()
    workdir = artifacts / ".work"
    findings_dir = workdir / "findings"
    crashes = workdir / "crashes"
    logs = workdir / "logs"
    for d in (findings_dir, crashes, logs):
        d.mkdir(parents=True, exist_ok=True)
    corpus = Path(args.corpus).resolve() if args.corpus else artifacts / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    cwd = workdir / "cwd"  # whatever the target writes to relative paths lands here
    cwd.mkdir(exist_ok=True)
    for stale in [*findings_dir.glob("finding-*.json"), *crashes.iterdir()]:
        stale.unlink()

    wall0 = time.time()
    try:
        plan = run_discovery(target, workdir, args)
    except DiscoveryCrash as e:
        print(f"ffi-harness fuzz: finding: {e}")
        return EXIT_FINDINGS
    if not plan["callables"]:
        raise UsageError(f"nothing to fuzz: no public callable discovered in {args.module}")
    unknown = sorted(set(args.allow_hang) - {c["name"] for c in plan["callables"]})
    if unknown:
        raise UsageError(f"--allow-hang: no callable named {', '.join(unknown)} among those fuzzed")
    native = (
        "native coverage: " + ", ".join(f.path.name for f in target.files if f.coverage) + " (libFuzzer-guided)"
        if target.coverage
        else "native coverage: none (not instrumented) — guided by outcome signatures"
    )
    print(
        f"ffi-harness fuzz: {args.module} under {python} ({'ASan' if target.asan else 'no sanitizer'}); {native}",
        flush=True,
    )
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        print(
            "warning: running as root: the target's file-system calls get fuzzed paths, absolute ones "
            "included (they land anywhere); prefer an unprivileged user or a throwaway container",
            flush=True,
        )
    print(
        f"discovered {len(plan['callables'])} callables; fuzzing for {args.max_time:g} s with {args.jobs} job(s)",
        flush=True,
    )

    dictionary = _dictionary(plan, workdir / "tokens.dict")
    engine_env, cmp_note = target.engine_env, "off (module not instrumented)"
    if os.environ.get("FFI_HARNESS_NO_CMP_TRACING"):
        cmp_note = "off (FFI_HARNESS_NO_CMP_TRACING is set)"
    elif target.coverage and target.asan:
        engine_env, why = cmpshim.engine_env(target.engine_env)
        cmp_note = why or "on (integer compares, switches, memcmp/strcmp via the preloaded shim)"
    elif target.coverage:
        cmp_note = "off (the shim needs an ASan build: it is preloaded ahead of the ASan runtime)"
    native += f"; comparison tracing: {cmp_note}"
    if any(f.ubsan for f in target.files):
        # UBSan reports do not end an engine run: each is a finding of the program that caused it.
        engine_env = dict(engine_env)
        opts = engine_env.get("UBSAN_OPTIONS", sanitizers.UBSAN_OPTIONS).replace("halt_on_error=1", "halt_on_error=0")
        engine_env["UBSAN_OPTIONS"] = opts if "halt_on_error" in opts else f"{opts}:halt_on_error=0"
        engine_env["FFI_HARNESS_UBSAN_SCAN"] = "1"
    deadline = time.monotonic() + args.max_time
    totals = Totals()
    found: dict[str, fnd.Finding] = {}
    crash_counts: dict[str, int] = {}
    replayed_as: dict[str, tuple[str, str]] = {}  # engine-reported key -> (kind, site) after replay
    excluded: list[str] = []
    masks: list[dict[str, Any]] = []  # {"callable", "source", "key"}: known crashes' shapes, skipped
    notes: list[str] = []
    run_index = 0
    active: dict[int, EngineRun] = {}
    setup_error: str | None = None

    def start(job: int) -> None:
        nonlocal run_index
        remaining = deadline - time.monotonic()
        if remaining < 1 or len(excluded) >= len(plan["callables"]):
            return
        run_index += 1
        log = logs / f"job{job}-run{run_index}.log"
        stats = workdir / f"stats-job{job}-run{run_index}.json"
        plan_path = _plan_without(plan, excluded, workdir, masks)
        cmd = [
            python,
            "-m",
            "ffi_harness.engine_main",
            str(plan_path),
            str(findings_dir),
            str(stats),
            "--",
            *_libfuzzer_args(args, corpus, crashes, job, run_index, remaining, dictionary),
        ]
        with open(log, "wb") as logf:
            proc = subprocess.Popen(
                cmd, env=engine_env, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=cwd
            )
        active[job] = EngineRun(job, run_index, log, stats, proc, time.monotonic(), list(excluded), list(masks))

    for job in range(args.jobs):
        start(job)
    # (name, mtime): libFuzzer names an artifact by its input's hash, so the same crash found again
    # rewrites the same file; it is a repeat all the same.
    seen_artifacts: set[tuple[str, int]] = set()
    try:
        while active:
            time.sleep(0.2)
            if args.max_findings and len(found) + len(list(findings_dir.glob("finding-*.json"))) >= args.max_findings:
                for er in active.values():
                    er.proc.kill()
                    er.proc.wait()
                    er.ended = time.monotonic()
                    totals.runs.append(er)
                    _parse_log(er)
                active.clear()
                notes.append(f"stopped after {args.max_findings} finding(s) (--max-findings)")
                break
            for job, er in list(active.items()):
                rc = er.proc.poll()
                if rc is None:
                    if time.monotonic() > deadline + args.timeout + ENGINE_GRACE:
                        er.killed = True
                        er.proc.kill()
                    continue
                er.ended = time.monotonic()
                del active[job]
                totals.runs.append(er)
                text = _parse_log(er)
                if "FFI_HARNESS_ERROR" in text or rc == 3:
                    m = re.search(r"FFI_HARNESS_ERROR (.*)|internal error[^\n]*", text)
                    setup_error = m.group(0) if m else f"engine exited with status {rc}"
                    continue
                new = sorted(
                    p for p in crashes.glob(f"job{job}-*") if (p.name, p.stat().st_mtime_ns) not in seen_artifacts
                )
                seen_artifacts.update((p.name, p.stat().st_mtime_ns) for p in new)
                for art in new:
                    _quarantine_if_from_corpus(art, corpus, crashes, notes)
                    run_plan = json.loads(_plan_without(plan, er.excluded, workdir, er.masks).read_text())
                    f = _crash_finding(art, text, rc, run_plan, wall0)
                    pre = f.key
                    replayed = False
                    if (
                        f.kind == "hang"
                        and f.callable not in args.allow_hang
                        and any(s["callable"] in args.allow_hang for s in f.steps)
                    ):
                        # The engine does not trace its steps, so a timeout is blamed on the program's last
                        # call; the replay traces them and names the call that hung, which may be one the
                        # user allowed (a second connect() to a locked store, then a method).
                        _replay(f, target, artifacts, args)
                        replayed = True
                    if f.kind == "hang" and f.callable in args.allow_hang:
                        # Declared by the user as a call that may wait for ever: not replayed (a replay
                        # costs the timeout again), not a finding.
                        totals.allowed_hangs[f.callable] = totals.allowed_hangs.get(f.callable, 0) + 1
                        _mask_repeated_hang(f, masks, notes)
                        if (
                            totals.allowed_hangs[f.callable] >= ALLOWED_HANGS_BEFORE_EXCLUSION
                            and f.callable not in excluded
                        ):
                            excluded.append(f.callable)
                            notes.append(
                                f"{f.callable} left out of later runs after {ALLOWED_HANGS_BEFORE_EXCLUSION} hangs "
                                "allowed by --allow-hang (each costs the whole timeout)"
                            )
                        continue
                    known_as = replayed_as.get(pre)
                    masked_callables = {m["callable"] for m in masks if known_as and m["key"] == _key(*known_as)}
                    # A crash already known from the engine's report is not replayed again (a process
                    # start each time, and a shallow bug may fire every few seconds) until it is
                    # masked: a masked crash that comes back came through a call its mask did not
                    # cover, and only a replay names that call's callable for a mask of its own.
                    if replayed or known_as is None or masked_callables:
                        if not replayed:
                            _replay(f, target, artifacts, args)
                        replayed_as[pre] = (f.kind, f.site)
                    else:
                        f.kind, f.site = known_as
                    crash_counts[f.key] = crash_counts.get(f.key, 0) + 1
                    if f.key not in found:
                        found[f.key] = f
                        print(
                            f"  finding after {f.found_after:.1f} s: {f.kind} in {f.site} (via {f.callable})"
                            f"{'' if f.reproduced else ' (did not replay outside the fuzzer)'}",
                            flush=True,
                        )
                    first = found[f.key]
                    key_masks = [m for m in masks if m["key"] == f.key]
                    mask: dict[str, Any] | None = None
                    if f.kind == "hang" or not first.reproduced:
                        pass  # nothing to shape a mask from (or a hang: its timeout is too dear to repeat)
                    elif not key_masks and crash_counts[f.key] >= MASK_AFTER_REPEATS:
                        mask = {"callable": first.callable, "key": f.key, "pending": first}
                    elif key_masks and f.reproduced and f.callable not in {m["callable"] for m in key_masks}:
                        # The same crash through another callable (an alias, a wrapper): the same shape.
                        shaped = [m for m in key_masks if "step" in m]
                        mask = _mask_named(shaped[0], f.callable) if shaped else None
                    elif (
                        f.reproduced
                        and f.callable in masked_callables
                        and sum(m["callable"] == f.callable for m in key_masks) < MASKS_PER_CRASH
                    ):
                        # Through a masked callable, in another shape (a key whose str() raises instead of
                        # a lone surrogate, both ending in the same NULL dereference): mask that shape too.
                        mask = {"callable": f.callable, "key": f.key, "pending": f}
                    if mask is not None and mask["callable"] not in excluded:
                        mask["repeats"] = crash_counts[f.key]
                        masks.append(mask)
                        if "pending" not in mask:
                            notes.append(_mask_note(mask))
                    if f.kind == "hang" and mask is None and f.callable not in excluded:
                        mask = _mask_repeated_hang(f, masks, notes)
                    # Left out: a hang at once; a crash its mask does not stop (it keeps coming back through
                    # the masked callable, or could not be masked) after REPEATS_BEFORE_EXCLUSION repeats.
                    unstoppable = (
                        not key_masks or sum(m["callable"] == f.callable for m in key_masks) >= MASKS_PER_CRASH
                    )
                    if (
                        (f.kind == "hang" or crash_counts[f.key] >= REPEATS_BEFORE_EXCLUSION and unstoppable)
                        and mask is None
                        and f.callable not in excluded
                        and f.callable != "?"
                    ):
                        excluded.append(f.callable)
                        notes.append(
                            f"{f.callable} left out of later runs after its {f.kind} "
                            f"{'(a hang costs the whole timeout)' if f.kind == 'hang' else f'repeated {crash_counts[f.key]} times'}"
                        )
                if er.killed:
                    totals.problems.append(
                        f"engine run {er.index} did not end within {args.timeout + ENGINE_GRACE:g} s of its time "
                        "limit and was killed: a hang outside any input (at exit: a thread the module started, an "
                        f"atexit handler...; log: {er.log})"
                    )
                elif rc != 0 and not new:
                    how = f"was killed by {_signal_name(-rc)}" if rc < 0 else f"exited with status {rc}"
                    totals.problems.append(
                        f"engine run {er.index} {how} without a crash report or an input to replay (log: {er.log})"
                    )
                start(job)
                # Masks that need a minimised crash are shaped while the engine runs on (a minimisation
                # takes seconds; an idle engine would waste them), and apply from the next engine run.
                for waiting in [w for w in masks if "pending" in w]:
                    mask_shape = _mask_for(waiting.pop("pending"), target, artifacts, args)
                    if mask_shape is None:
                        masks.remove(waiting)
                        continue
                    waiting.update(mask_shape)
                    notes.append(_mask_note(waiting))
    except KeyboardInterrupt:
        for er in active.values():
            er.proc.kill()
        raise
    if setup_error and not totals.runs or setup_error and all(r.execs == 0 for r in totals.runs):
        raise UsageError(f"the engine could not start: {setup_error}")
    if setup_error:
        # A restart that could not set up (the module vanished, the setup broke after a while): the fuzzing
        # stopped early, so the run is not clean even if nothing was found before.
        totals.problems.append(f"an engine run could not start, fuzzing stopped early: {setup_error}")

    # Oracle findings written by the engines.
    for path in sorted(findings_dir.glob("finding-*.json")):
        rec = json.loads(path.read_text())
        f0 = rec["finding"]
        key = f"{f0['kind']}:{f0['site']}"
        if key in found:
            continue
        program = rec["program"]
        step = f0.get("step")
        # The step's callable: the site is the callable for the runtime's own findings, but a C function for
        # a UBSan report the engine scanned from its output.
        callable_ = program[step]["callable"] if isinstance(step, int) and 0 <= step < len(program) else f0["site"]
        found[key] = fnd.Finding(
            f0["kind"],
            f0["site"],
            callable_,
            f0.get("detail", ""),
            program,
            "oracle",
            found_after=max(0.0, path.stat().st_mtime - wall0),
            plan=plan,
        )
        via = "" if callable_ == f0["site"] else f" (via {callable_})"
        print(f"  finding after {found[key].found_after:.1f} s: {f0['kind']} in {f0['site']}{via}", flush=True)

    _collect_stats(totals)
    fuzz_time = sum(max(0.0, r.ended - r.started) for r in totals.runs) / max(1, args.jobs)
    for f in found.values():
        _write_repro(f, plan, target, artifacts, args)
    return _summary(args, plan, target, totals, found, notes, excluded, fuzz_time, native)


def _meta(f: fnd.Finding, target: Target, args: argparse.Namespace, path: Path) -> dict[str, Any]:
    return {
        "kind": f.kind,
        "site": f.site,
        "module": target.module,
        "python": target.python,
        "python_version": fnd.python_version(target.python),
        "asan": target.asan,
        "timeout": args.timeout,
        "title": f"ffi-harness repro: {f.kind} in {f.site} ({target.module}) — {f.detail}"[:300],
        "run": fnd.run_line(target.python, target.env, target.asan, path.name),
        "pythonpath": [p for p in target.env.get("PYTHONPATH", "").split(os.pathsep) if p],
    }


def _verdict_for(
    f: fnd.Finding, steps: list[dict[str, Any]], target: Target, artifacts: Path, args: argparse.Namespace
) -> fnd.Verdict:
    cand = fnd.write_temp_repro(
        fnd.render(f.plan or {}, steps, _meta(f, target, args, Path("repro.py"))), artifacts / ".work"
    )
    try:
        return fnd.run_script(cand, target.python, target.env, args.timeout)
    finally:
        cand.unlink(missing_ok=True)


# Replays of a crash before it counts as not reproducing: a crash that needs a race (a buffer resized under
# a detached call, the target's own threads) may not happen on every run of its program.
CRASH_REPLAYS = 5


def _replay(f: fnd.Finding, target: Target, artifacts: Path, args: argparse.Namespace) -> None:
    """Replay a finding's whole program (a crash up to CRASH_REPLAYS times); when it reproduces, its verdict
    names kind, site, step."""
    v = _verdict_for(f, f.steps, target, artifacts, args)
    f.verdict = v
    f.reproduced = v.reproduced and (v.kind == f.kind or f.source == "crash")
    if f.source == "crash" and not f.reproduced:
        for attempt in range(2, CRASH_REPLAYS + 1):
            again = _verdict_for(f, f.steps, target, artifacts, args)
            if again.reproduced:
                f.notes.append(f"reproduced on replay {attempt} of up to {CRASH_REPLAYS}: it depends on timing")
                f.verdict = v = again
                f.reproduced = True
                break
    blamed = [i for i, s in enumerate(f.steps) if s["callable"] == f.callable]
    if not f.reproduced and f.source != "crash" and blamed and blamed[-1] < len(f.steps) - 1:
        # A finding judged when the program ends (a leaked reference) can be overtaken in the replay by a
        # later call the fuzzer skipped as shaped like a known crash (masks do not travel with a repro):
        # the program up to the last call of the blamed callable is the first thing to try.
        head = f.steps[: blamed[-1] + 1]
        again = _verdict_for(f, head, target, artifacts, args)
        if again.reproduced and again.kind == f.kind:
            f.notes.append(
                f"the {len(f.steps) - len(head)} step(s) after the last {f.callable} call were dropped: the whole"
                f" program replayed as {v.kind or 'a clean run'}{' in ' + v.site if v.site else ''} first"
            )
            f.steps, f.verdict, f.reproduced = head, again, True
    if f.reproduced and f.source == "crash":
        f.kind, f.site, f.detail = v.kind, v.site or f.site, v.detail or f.detail
        if v.step is not None and v.step < len(f.steps):
            f.callable = f.steps[v.step]["callable"]
    else:
        _name_by_its_first_symptom(f, v)


def _name_by_its_first_symptom(f: fnd.Finding, v: fnd.Verdict) -> None:
    """A finding of the program's own (a SystemError) whose replay stopped earlier, at a UBSan report in
    the same callable, is that report's bug: the engine prints a UBSan report once per source line and
    process, so a later program that reaches the line again shows only what follows it (the SystemError
    of a size that overflowed); in a fresh process the report comes first and is fatal."""
    if (
        f.reproduced
        or f.source == "crash"
        or not v.kind.startswith("ubsan")
        or v.step is None
        or v.step >= len(f.steps)
        or f.steps[v.step]["callable"] != f.callable
    ):
        return
    f.notes.append(
        f"found as {f.kind} in the engine, which prints a UBSan report once per source line and process;"
        " a fresh process stops at the report"
    )
    f.kind, f.site, f.detail, f.reproduced = v.kind, v.site or f.site, v.detail or f.detail, True


def _crash_finding(art: Path, log: str, rc: int, plan: dict[str, Any], wall0: float) -> fnd.Finding:
    from ffi_harness import _engine

    data = art.read_bytes()
    steps = _engine.describe(plan, data)
    kind_prefix = art.name.split("-", 2)[1] if art.name.count("-") >= 2 else "crash"
    verdict = fnd.classify_output(rc if rc != 0 else 1, "", log, timed_out=kind_prefix == "timeout")
    if kind_prefix == "timeout":
        verdict.kind = "hang"
    if "ffi-harness engine: internal error" in log:
        # The runtime itself raised (e.g. an exception the target left pending surfaced in our own code).
        last = [ln for ln in log.splitlines() if re.match(r"^\w*(Error|Exception)\b", ln)]
        verdict.kind, verdict.detail = "harness-error", (last[-1] if last else "see the engine log")
    if not verdict.kind:
        verdict.kind = f"crash:{kind_prefix}"
    callable_ = steps[verdict.step]["callable"] if verdict.step is not None and verdict.step < len(steps) else "?"
    if callable_ == "?":
        # the report names a native function: the step whose callable ran last is unknown; use the last step
        callable_ = steps[-1]["callable"] if steps else "?"
        for s in steps:
            if s["callable"].split(".")[-1] == verdict.site or verdict.site.endswith(s["callable"].split(".")[-1]):
                callable_ = s["callable"]
    site = verdict.site if verdict.site and verdict.site != "?" else callable_
    return fnd.Finding(
        verdict.kind,
        site,
        callable_,
        verdict.detail,
        steps,
        "crash",
        str(art),
        # When libFuzzer wrote the input, not when it was read: the artifacts of an engine run are read
        # after it ends, each after the replays of the ones before it, which made later finds look late.
        found_after=max(0.0, art.stat().st_mtime - wall0),
        plan=plan,
    )


def _collect_stats(totals: Totals) -> None:
    for r in totals.runs:
        try:
            stats = json.loads(r.stats.read_text())
        except (OSError, ValueError):
            continue
        for name, counts in stats.get("callables", {}).items():
            acc = totals.calls.setdefault(name, [0, 0, 0, 0])
            for i, c in enumerate(counts):
                acc[i] += int(c)
        totals.signatures = max(totals.signatures, int(stats.get("signatures", 0)))
        totals.native_modules = max(totals.native_modules, int(stats.get("native_modules", 0)))
        totals.masked += int(stats.get("masked", 0))
        totals.kept_references += int(stats.get("kept_references", 0))
        for name, n in stats.get("kept_by", {}).items():
            totals.kept_by[name] = totals.kept_by.get(name, 0) + int(n)
        totals.singleton_checks += int(stats.get("singleton_checks", 0))
        totals.singleton_false_alarms += int(stats.get("singleton_false_alarms", 0))
        if "singletons_judged" in stats:
            totals.singletons_judged = bool(totals.singletons_judged) or bool(stats["singletons_judged"])
        fill = stats.get("type_cache_fill")
        if fill is not None and fill[0] is None:
            totals.type_cache_unsettled += 1


def _refcount_line(totals: Totals) -> str:
    """What the refcount oracle's second runs cleared, and whether None/True/False were judged at all."""
    kept = f"{totals.kept_references} suspected leak(s) shown by a second run to be kept references"
    if totals.kept_by:  # which callables keep references (a cache, a registry): where a leak could hide
        most = sorted(totals.kept_by.items(), key=lambda kv: (-kv[1], kv[0]))
        named = ", ".join(f"{name} {n}" for name, n in most[:5])
        kept += f" ({named}{', ...' if len(most) > 5 else ''})"
    if totals.singletons_judged is False:
        return (
            f"refcounts: {kept}; None/True/False not judged (immortal in this interpreter: an over-decref is harmless)"
        )
    unsettled = (
        f"; in {totals.type_cache_unsettled} engine process(es) CPython's type cache still released references to "
        "None after it was filled: a loss of None there may be the cache's"
        if totals.type_cache_unsettled
        else ""
    )
    return (
        f"refcounts: {kept}; {totals.singleton_checks} calls judged on None/True/False "
        f"({totals.singleton_false_alarms} losses cleared by running the program again){unsettled}"
    )


def _minimise(f: fnd.Finding, target: Target, artifacts: Path, args: argparse.Namespace, budget: float) -> None:
    """Delta-debug a reproduced finding's program (cached on the finding: done once)."""
    first = f.verdict
    assert first is not None

    failing: dict[str, fnd.Verdict] = {}  # each candidate that still fails, by its JSON: its own verdict

    def still_fails(candidate: list[dict[str, Any]]) -> bool:
        v = _verdict_for(f, candidate, target, artifacts, args)
        if v.kind == first.kind and v.site == first.site:
            failing[json.dumps(candidate, sort_keys=True)] = v
            return True
        return False

    steps, runs = fnd.minimise(f.steps, still_fails, time.monotonic() + budget)
    f.notes.append(f"minimised {len(f.steps)} → {len(steps)} step(s) in {runs} run(s)")
    f.minimised = steps
    last = failing.get(json.dumps(steps, sort_keys=True))
    if last is not None:  # "... the str argument of step 0": the minimised program's words, and its output
        f.verdict = last
        f.detail = last.detail or f.detail


def _mask_for(f: fnd.Finding, target: Target, artifacts: Path, args: argparse.Namespace) -> dict[str, Any] | None:
    """The shape of a repeating crash's minimised call, for later runs to skip (see MASK_AFTER_REPEATS)."""
    if f.minimised is None and args.minimise_time > 0:
        _minimise(f, target, artifacts, args, min(args.minimise_time, MASK_MINIMISE_TIME))
    steps = f.minimised or f.steps
    crashing = [s for s in steps if s["callable"] == f.callable]
    if not crashing:
        return None
    return _mask_of(crashing[-1], f.kind, f.site)


def _mask_repeated_hang(f: fnd.Finding, masks: list[dict[str, Any]], notes: list[str]) -> dict[str, Any] | None:
    """A repeat mask (see runtime._call_key) for a hang whose call repeats an earlier call of the program (a
    second `connect(p)` waiting on the lock the first holds), instead of leaving the callable out: a
    constructor left out starves its class. None (the callable is then left out) for any other hang, and
    for a second hang of a callable already so masked: the mask did not stop it."""
    if any(m.get("repeat") and m["callable"] == f.callable for m in masks):
        return None
    methods = {c["name"] for c in (f.plan or {}).get("callables", []) if c["kind"] == "method"}
    v = f.verdict
    hung = [v.step] if v is not None and v.step is not None and v.step < len(f.steps) else range(len(f.steps))
    for i in hung:
        s = f.steps[i]
        if s["callable"] == f.callable and any(_same_call(e, s, methods) for e in f.steps[:i]):
            call = f"{s['callable']}({', '.join([*s['args'], *(f'{k}={v}' for k, v in s['kwargs'])])})"
            mask = {"callable": f.callable, "repeat": True, "key": f.key, "kind": f.kind, "site": f.site}
            masks.append(mask)
            notes.append(
                f"{f.kind} in {f.site} when a call repeats an earlier one ({call if len(call) <= 60 else call[:57] + '...'}"
                f" twice): later runs skip such repeats (the rest of {f.callable} is still fuzzed)"
            )
            return mask
    return None


def _same_call(a: dict[str, Any], b: dict[str, Any], methods: set[str]) -> bool:
    """Do two steps make the same call? (A function's steps also carry a receiver choice, which it ignores.)"""
    return (
        a["callable"] == b["callable"]
        and (a["receiver"] == b["receiver"] or a["callable"] not in methods)
        and a["args"] == b["args"]
        and sorted(map(tuple, a["kwargs"])) == sorted(map(tuple, b["kwargs"]))
    )


def _mask_note(mask: dict[str, Any]) -> str:
    return (
        f"{mask['kind']} in {mask['site']} repeated {mask['repeats']} times: later runs skip calls shaped"
        f" like {mask['call']} (the rest of {mask['callable']} is still fuzzed)"
    )


def _key(kind: str, site: str) -> str:
    return f"{kind}:{site}"


def _mask_named(mask: dict[str, Any], callable_: str) -> dict[str, Any]:
    """`mask`'s shape for another callable reaching the same crash."""
    step = dict(mask["step"], callable=callable_)
    return _mask_of(step, mask["kind"], mask["site"])


def _mask_of(step: dict[str, Any], kind: str, site: str) -> dict[str, Any]:
    call = f"{step['callable']}({', '.join([*step['args'], *(f'{k}={v}' for k, v in step['kwargs'])])})"
    return {
        "callable": step["callable"],
        "source": fnd.program_source([step]),
        "step": step,
        "key": _key(kind, site),
        "kind": kind,
        "site": site,
        "call": call if len(call) <= 80 else call[:77] + "...",
    }


def _write_repro(
    f: fnd.Finding, plan: dict[str, Any], target: Target, artifacts: Path, args: argparse.Namespace
) -> None:
    f.plan = f.plan or plan
    digest = hashlib.sha1(f.key.encode()).hexdigest()[:10]
    safe = re.sub(r"[^\w.-]+", "_", f"{f.kind}-{f.site}")[:60]
    path = artifacts / f"repro-{safe}-{digest}.py"
    if f.verdict is None:
        _replay(f, target, artifacts, args)
    first = f.verdict
    assert first is not None
    if f.reproduced and args.minimise_time > 0 and f.minimised is None:
        _minimise(f, target, artifacts, args, args.minimise_time)
    steps = f.minimised or f.steps
    if not f.reproduced:
        f.notes.append(
            f"did not reproduce outside the fuzzer ({first.kind or first.detail or 'clean run'}"
            f"{' in ' + first.site if first.site else ''})"
            + (f"; the crash artifact is {f.artifact}" if f.artifact else "")
        )
    f.minimised_steps = len(steps)
    path.write_text(fnd.render(f.plan, steps, _meta(f, target, args, path)))
    path.chmod(0o755)
    # The replay's full output (sanitizer report, or every thread's stack for a hang) beside it: of the
    # minimised program when there is one, so that its step numbers are the repro's.
    path.with_suffix(".log").write_text((f.verdict or first).output)
    f.repro = path


def _plural(kind: str) -> str:
    return "classes" if kind == "class" else f"{kind}s"


def _summary(
    args: argparse.Namespace,
    plan: dict[str, Any],
    target: Target,
    totals: Totals,
    found: dict[str, fnd.Finding],
    notes: list[str],
    excluded: list[str],
    fuzz_time: float,
    native: str,
) -> int:
    execs = sum(r.execs for r in totals.runs)
    cov = max((r.cov for r in totals.runs), default=0)
    ft = max((r.ft for r in totals.runs), default=0)
    kinds: dict[str, int] = {}
    for c in plan["callables"]:
        kinds[c["kind"]] = kinds.get(c["kind"], 0) + 1
    # An engine run that dies in a crash writes no call counts: a callable whose findings show it ran
    # counts as exercised, with its recorded calls marked as a lower bound.
    crashes = [f for f in found.values() if f.source == "crash"]
    crashed_in = {f.callable for f in crashes}
    for f in crashes:
        step = f.verdict.step if f.verdict is not None else None
        if step is not None:
            crashed_in.update(s["callable"] for s in f.steps[: step + 1])
    exercised = {n for n, c in totals.calls.items() if c[0] > 0} | (crashed_in & {c["name"] for c in plan["callables"]})
    total_calls = sum(c[0] for c in totals.calls.values())
    eps = execs / fuzz_time if fuzz_time > 0 else 0.0
    print()
    print(f"== ffi-harness fuzz {args.module} ==")
    print(
        f"callables: {len(plan['callables'])} found ({', '.join(f'{v} {_plural(k)}' for k, v in sorted(kinds.items()))}; "
        f"arity from {', '.join(f'{k} {v}' for k, v in sorted(plan.get('arity_sources', {}).items()))}), "
        f"{len(exercised)} exercised"
    )
    per = sorted(totals.calls.items(), key=lambda kv: -kv[1][0])
    line = "  " + ", ".join(
        f"{n} {c[0]}" + (f" ({c[3]} without receiver)" if c[3] and not c[0] else "") + ("+" if n in crashed_in else "")
        for n, c in per
    )
    print(line if per else "  (no calls recorded)")
    if crashed_in:
        print("  (N+: N calls counted, plus those of engine runs that ended in a crash)")
    never = [c["name"] for c in plan["callables"] if c["name"] not in exercised]
    if never:
        print(f"  never called: {', '.join(never[:20])}{' ...' if len(never) > 20 else ''}")
    masked = (
        f"; {totals.masked} calls skipped as shaped like a known crash or repeating a hung call"
        if totals.masked
        else ""
    )
    print(f"execs: {execs} in {fuzz_time:.1f} s ({eps:.0f} exec/s, {args.jobs} job(s)); calls: {total_calls}{masked}")
    native_edges = max(0, cov - totals.signatures)
    print(
        f"coverage: libFuzzer cov {cov} (ft {ft}) = {native_edges} native + {totals.signatures} outcome signatures; {native}"
    )
    print(_refcount_line(totals))
    if totals.allowed_hangs:
        print(
            "hangs allowed by --allow-hang (not findings): "
            + ", ".join(f"{n} {k}" for n, k in sorted(totals.allowed_hangs.items()))
        )
    for n in notes:
        print(f"note: {n}")
    for problem in totals.problems:
        print(f"PROBLEM: {problem}")
    in_order = sorted(found.values(), key=lambda x: x.found_after)
    duplicates = fnd.same_bug(in_order)
    if found:
        bugs = len(found) - len(duplicates)
        print(f"findings: {len(found)}" + (f" reports of {bugs} bugs" if duplicates else ""))
        for f in in_order:
            if id(f) in duplicates:
                continue
            status = "reproduces" if f.reproduced else "NOT reproduced"
            print(
                f"  [{f.kind}] {f.site} (callable {f.callable}) after {f.found_after:.1f} s — {status}, "
                f"{f.minimised_steps} step(s): {f.repro}"
            )
            if f.verdict is not None and f.verdict.detail or f.detail:
                print(f"      {(f.verdict.detail if f.verdict is not None and f.verdict.detail else f.detail)[:160]}")
            for n in f.notes:
                print(f"      {n}")
            for d in in_order:
                if duplicates.get(id(d)) is f:
                    line = "the same line" if d.location == f.location else f"line {d.location.rpartition(':')[2]}"
                    print(f"      {line} also reported as {d.kind} after {d.found_after:.1f} s: {d.repro}")
    else:
        print("findings: none")
    summary = {
        "module": args.module,
        "python": target.python,
        "asan": target.asan,
        "instrumented": target.coverage,
        "callables": len(plan["callables"]),
        "exercised": len(exercised),
        "calls": totals.calls,
        "execs": execs,
        "seconds": fuzz_time,
        "exec_per_s": eps,
        "cov": cov,
        "ft": ft,
        "signatures": totals.signatures,
        "native_edges": native_edges,
        "excluded": excluded,
        "masked_calls": totals.masked,
        "problems": totals.problems,
        "allowed_hangs": totals.allowed_hangs,
        "kept_references": totals.kept_references,
        "singleton_checks": totals.singleton_checks,
        "singleton_false_alarms": totals.singleton_false_alarms,
        "notes": notes,
        "findings": [
            {
                "kind": f.kind,
                "site": f.site,
                "callable": f.callable,
                "detail": f.detail,
                "found_after": f.found_after,
                "repro": str(f.repro),
                "reproduced": f.reproduced,
                "steps": f.minimised_steps,
                "location": f.location,
                "same_bug_as": duplicates[id(f)].key if id(f) in duplicates else None,
            }
            for f in found.values()
        ],
    }
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))
    # A finding means a call ran (one that crashed before returning is not counted as a call).
    if not found and (execs == 0 or total_calls == 0):
        print(
            "NOTHING WAS EXERCISED: no call reached the module (see the logs under "
            f"{Path(args.artifacts) / '.work' / 'logs'})"
        )
        return EXIT_USAGE
    return EXIT_FINDINGS if found or totals.problems else EXIT_CLEAN


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def main(argv: Sequence[str] | None = None) -> int:
    from ffi_harness.cli import main as cli_main

    return cli_main(["fuzz", *(argv or [])])
