"""The same work for ffi-harness and a peer: the buggy fixture's nine planted bugs, found or not.

The fixture (cli/tests/fixtures/buggy_ext) is built once with clang's ASan + UBSan and libFuzzer coverage
into a scratch directory. Then, for the same number of seconds each, on the same build and interpreter:

* ``ffi-harness fuzz buggy``: no code written;
* atheris with the harness a binding author writes by hand (cli/benches/atheris_buggy.py), in libFuzzer's
  fork mode with crashes, timeouts and OOMs ignored so that it goes on past the first one; each input it
  saved is replayed once and named by its report (atheris itself does not sort them).

A planted bug counts as found when a report names it: the sanitizer's function, the SystemError of
`describe`, a hang of `wait_for`, a refcount finding of the callable. The table says which tool found each
bug and after how many seconds, and what each left to triage.

    python cli/benches/peers.py --seconds 45        # the README's run
    python cli/benches/peers.py --seconds 15 --gate # CI: exit 1 unless ffi-harness finds what atheris
                                                     # found (but the hang, see main), and more

Exit status 2 when a tool did not run at all (nothing exercised is never a result).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ffi_harness import sanitizers

HERE = Path(__file__).resolve().parent
HARNESS = HERE / "atheris_buggy.py"
sys.path.insert(0, str(HERE.parent / "tests"))
from buggy_build import build_fixture

HANG = "wait_for(7): self-deadlock"
# The planted bugs (buggy.c's header), and how a report names each: (kind pattern, function).
BUGS = {
    "table_get: read past the table": (
        r"heap-buffer-overflow|heap-use-after-free|SEGV|ubsan:(subtraction|addition|pointer)",
        "table_get",
    ),
    "table_find: `return Py_None;`": (r"over-decref|none_dealloc", "table_find"),
    "pop_last: over-decref of an item": (r"over-decref|heap-use-after-free|SEGV", "pop_last"),
    "describe: NULL without an exception": (r"SystemError", "describe"),
    "remember: leaked reference": (r"refcount-leak", "remember"),
    "as_size: leaked __index__ answer": (r"refcount-leak", "as_size"),
    "each_entry: leaked callback argument tuple": (r"refcount-leak", "each_entry"),
    HANG: (r"hang|timeout", "wait_for"),
    "Counter.incr after close: use after free": (r"heap-use-after-free", "Counter_incr"),
}


def bug_of(kind: str, site: str) -> str | None:
    """The planted bug a report of `kind` in function or callable `site` names (Counter.incr is Counter_incr)."""
    for name, (kinds, function) in BUGS.items():
        if re.fullmatch(kinds, kind) and site.replace(".", "_") == function:
            return name
    return None


def asan_env(site: Path) -> dict[str, str]:
    """The sanitizer conditions `ffi-harness fuzz` runs an ASan build under, for atheris too."""
    env = sanitizers.sanitizer_env()
    env["PYTHONPATH"] = str(site)
    return env


def run_ffi_harness(site: Path, work: Path, seconds: int) -> tuple[dict[str, float], int, int]:
    """(bug -> seconds to its first report, reports, exit status)."""
    cli = shutil.which("ffi-harness", path=str(Path(sys.executable).parent)) or "ffi-harness"
    summary = work / "fuzz.json"
    env = dict(os.environ, PYTHONPATH=str(site))
    cmd = [cli, "fuzz", "buggy", "--max-time", str(seconds), "--timeout", "3", "--minimise-time", "2"]
    cmd += ["--artifacts", str(work / "fuzz"), "--json", str(summary)]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False, cwd=work)
    (work / "fuzz.log").write_text(p.stdout + p.stderr)
    if not summary.exists():
        sys.exit(f"peers: ffi-harness fuzz wrote no summary (exit {p.returncode}):\n{(p.stdout + p.stderr)[-2000:]}")
    data = json.loads(summary.read_text())
    found: dict[str, float] = {}
    for f in data["findings"]:
        bug = bug_of(f["kind"], f["site"]) or bug_of(f["kind"], f["callable"])
        if bug is not None:
            found[bug] = min(found.get(bug, f["found_after"]), f["found_after"])
    return found, len(data["findings"]), p.returncode


def classify(output: str) -> tuple[str, str]:
    """(kind, function) of one atheris replay's output."""
    m = re.search(r"SUMMARY: AddressSanitizer: ([\w-]+)", output)
    frame = re.search(
        r"#\d+ 0x[0-9a-f]+ in (table_get|table_find|pop_last|describe|remember|as_size|each_entry|wait_for|Counter_incr) ",
        output,
    )
    function = frame.group(1) if frame else "?"
    if m:
        return m.group(1), function
    u = re.search(r"runtime error: (\w+)", output)
    if u:
        return f"ubsan:{u.group(1)}", function
    s = re.search(r"SystemError: <built-in function (\w+)>", output)
    if s:
        return "SystemError", s.group(1)
    if "Fatal Python error: none_dealloc" in output:
        return "none_dealloc", "table_find"
    if "Timeout after" in output or "ALARM: working on the last Unit" in output:
        return "timeout", "wait_for" if "wait_for" in output else function
    return "unexplained", function


def run_atheris(site: Path, work: Path, seconds: int) -> tuple[dict[str, float], int, int, int]:
    """(bug -> seconds to its first input, inputs saved, inputs that name no planted bug, exit status)."""
    art = work / "atheris"
    art.mkdir()
    # libFuzzer's fork mode starts each child from argv[0] (sys.argv[0]): the harness, made executable.
    launcher = work / "atheris_buggy.py"
    launcher.write_text(f"#!{sys.executable}\n" + HARNESS.read_text())
    launcher.chmod(0o755)
    env = asan_env(site)
    flags = ["-fork=1", "-ignore_crashes=1", "-ignore_timeouts=1", "-ignore_ooms=1", "-timeout=3"]
    t0 = time.time()
    p = subprocess.run(
        [str(launcher), *flags, f"-max_total_time={seconds}", f"-artifact_prefix={art}/"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        cwd=work,
        timeout=seconds + 120,
    )
    (work / "atheris.log").write_text(p.stdout + p.stderr)
    found: dict[str, float] = {}
    unexplained = 0
    saved = sorted(art.iterdir(), key=lambda q: q.stat().st_mtime)
    for q in saved:
        r = subprocess.run(
            [str(launcher), "-timeout=3", str(q)], env=env, capture_output=True, text=True, check=False, timeout=60
        )
        kind, function = classify(r.stdout + r.stderr)
        bug = bug_of(kind, function)
        if bug is None:
            unexplained += 1
        else:
            found.setdefault(bug, max(0.0, q.stat().st_mtime - t0))
    return found, len(saved), unexplained, p.returncode


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=45, help="fuzzing time per tool (default %(default)s)")
    ap.add_argument(
        "--gate",
        action="store_true",
        help="exit 1 unless ffi-harness finds what atheris found (but the hang), and more",
    )
    ap.add_argument("--keep", metavar="DIR", help="work in DIR and keep it (logs, artifacts)")
    args = ap.parse_args()
    if args.seconds <= 0:
        ap.error("--seconds must be > 0")
    if shutil.which("clang-19") is None:
        sys.exit("peers: clang-19 is needed for the instrumented build (run ci/setup)")
    work = Path(args.keep or tempfile.mkdtemp(prefix="peers-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        site = build_fixture(work, instrumented=True)
        ours, reports, our_rc = run_ffi_harness(site, work, args.seconds)
        theirs, saved, unexplained, their_rc = run_atheris(site, work, args.seconds)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    if our_rc == 2:
        print("peers: ffi-harness fuzz exercised nothing (exit 2): rerun with --keep to read its log", file=sys.stderr)
        return 2
    if saved == 0 and not theirs:
        print(
            f"peers: atheris saved no input in {args.seconds} s (exit {their_rc}): nothing to compare", file=sys.stderr
        )
        return 2
    lines = [
        f"The buggy fixture, {args.seconds} s each, ASan + UBSan build, {sys.version.split()[0]}:",
        "",
        f"| planted bug | ffi-harness fuzz (no code) | atheris ({len(HARNESS.read_text().splitlines())}-line harness) |",
        "|---|---|---|",
    ]
    for bug in BUGS:
        cells = [f"{d[bug]:.1f} s" if bug in d else "—" for d in (ours, theirs)]
        lines.append(f"| {bug} | {cells[0]} | {cells[1]} |")
    lines.append(f"| **found** | **{len(ours)} of {len(BUGS)}** | **{len(theirs)} of {len(BUGS)}** |")
    lines.append(
        f"| left to triage | {reports} findings, each minimised with a repro | {saved} inputs, unsorted "
        f"({unexplained} named no planted bug) |"
    )
    print("\n".join(lines))
    print(f"(ffi-harness fuzz exit {our_rc}; atheris exit {their_rc})")
    # Every bug atheris found too (but the hang: reaching wait_for(7) and then waiting out the timeout takes
    # either tool 15-50 s, a coin toss in CI's 15 s), and more: a count alone could hide broken crash
    # detection behind the refcount oracles atheris does not have.
    missed = sorted(set(theirs) - set(ours) - {HANG})
    if args.gate and (missed or len(ours) <= len(theirs)):
        print(
            f"peers: ffi-harness found {len(ours)} planted bugs, atheris {len(theirs)}; missed of atheris's: "
            f"{', '.join(missed) or 'none'}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
