"""The third-party proof of `ffi-harness build-ext` (and, when asked, of `ffi-harness fuzz`): see ci/thirdparty.

For each package of ci/thirdparty.txt: download the pinned sdist (once, into target/thirdparty/sdists/),
create target/thirdparty/<name>/venv, build the sdist into it with `ffi-harness build-ext` (timed; the
instrumentation table and the log are kept beside the venv), then run the package's own pytest suite
(copied out of the sdist into target/thirdparty/<name>/tests) under the sanitizer conditions (clang's
ASan runtime preloaded, PYTHONMALLOC=malloc). With --fuzz SECONDS, `ffi-harness fuzz MODULE` runs on each
(at most --fuzz-jobs at a time) once that command works. Results: target/thirdparty/results.json and a
Markdown table on stdout. Nothing is downloaded after the set-up (build dependencies come from pip's
cache or the index at build time only).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TP = ROOT / "target" / "thirdparty"
SDISTS = TP / "sdists"
VENV_PY = ROOT / ".venv" / "bin" / "python"
CLI = ROOT / ".venv" / "bin" / "ffi-harness"
LIST = ROOT / "ci" / "thirdparty.txt"
TEST_TIMEOUT = 1800

sys.path.insert(0, str(ROOT / "cli" / "python"))
from ffi_harness.sanitizers import sanitizer_env


@dataclass
class Package:
    requirement: str
    module: str
    tests: str
    why: str
    versioned_dir: bool = False  # a second version of a package already listed: <name>-<version>/
    test_deps: list[str] = field(default_factory=list)  # what its tests import besides pytest

    @property
    def key(self) -> str:
        return f"{self.name}-{self.version}" if self.versioned_dir else self.name

    @property
    def name(self) -> str:
        return self.requirement.split("==")[0]

    @property
    def version(self) -> str:
        return self.requirement.split("==")[1]

    @property
    def dir(self) -> Path:
        return TP / self.key

    @property
    def venv(self) -> Path:
        return self.dir / "venv"


@dataclass
class Result:
    name: str
    version: str
    module: str
    why: str
    sdist: str = ""
    venv: str = ""
    kind: str = ""
    build_ok: bool = False
    build_seconds: float = 0.0
    build_error: str = ""
    instrumentation: list[str] = field(default_factory=list)
    tests_dir: str = ""
    tests_summary: str = ""
    tests_passed: int = 0
    tests_failed: int = 0
    tests_skipped: int = 0
    tests_seconds: float = 0.0
    tests_exit: int | None = None
    tests_crashes: list[str] = field(default_factory=list)
    fuzz_seconds: int = 0
    fuzz_exit: int | None = None
    fuzz_summary: str = ""
    fuzz: dict[str, Any] = field(default_factory=dict)  # `ffi-harness fuzz --json` of the last run
    fuzz_when: str = ""  # "this run", or when the earlier run that wrote `fuzz` ended


# What --skip-build takes from an earlier run's results.json.
BUILD_FIELDS = ("kind", "build_ok", "build_seconds", "build_error", "instrumentation")


def reuse_build(res: Result, earlier: dict[str, Any]) -> Result:
    """--skip-build: this run's result with an earlier run's build. Only the build is reused: test and
    fuzz results are this run's or none, so a stale one can neither fill the tables nor meet an
    --expect-* as if this run had shown it."""
    return replace(res, **{k: earlier[k] for k in BUILD_FIELDS if k in earlier})


def read_list(path: Path) -> list[Package]:
    pkgs = []
    for raw in path.read_text().splitlines():
        line, _, why = raw.partition("#")
        parts = line.split()
        if not parts:
            continue
        extra = [p for p in parts[3:] if p.startswith("deps=")]
        if len(parts) - len(extra) != 3 or "==" not in parts[0]:
            raise SystemExit(f"{path}: bad line: {raw!r}")
        seen = {p.name for p in pkgs}
        deps = [d for e in extra for d in e[len("deps=") :].split(",") if d]
        pkgs.append(Package(parts[0], parts[1], parts[2], why.strip(), parts[0].split("==")[0] in seen, deps))
    return pkgs


def log(msg: str) -> None:
    print(f"ci/thirdparty: {msg}", file=sys.stderr, flush=True)


def sdist_of(pkg: Package) -> Path | None:
    norm = re.sub(r"[-_.]+", "[-_.]", pkg.name)
    for f in sorted(SDISTS.glob("*")):
        if re.fullmatch(rf"(?i){norm}-{re.escape(pkg.version)}\.(tar\.gz|zip)", f.name):
            return f
    return None


def download(pkg: Package) -> Path:
    found = sdist_of(pkg)
    if found:
        return found
    SDISTS.mkdir(parents=True, exist_ok=True)
    log(f"downloading {pkg.requirement}")
    cmd = [str(VENV_PY), "-m", "pip", "download", "-q", "--no-deps", "--no-binary", pkg.name, "-d", str(SDISTS)]
    subprocess.run([*cmd, pkg.requirement], check=True)
    found = sdist_of(pkg)
    if not found:
        raise SystemExit(f"pip download {pkg.requirement} produced no sdist in {SDISTS}")
    return found


def base_python(explicit: str | None) -> str:
    if explicit:
        return explicit
    out = subprocess.run(
        [str(VENV_PY), "-c", "import sys; print(sys._base_executable)"], check=True, capture_output=True, text=True
    )
    return out.stdout.strip()


def make_venv(pkg: Package, python: str) -> None:
    if not (pkg.venv / "bin" / "python").exists():
        subprocess.run([python, "-m", "venv", str(pkg.venv)], check=True)
    pip = [str(pkg.venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "pytest", *pkg.test_deps], check=True)


def build(pkg: Package, sdist: Path, res: Result) -> None:
    out_path = pkg.dir / "build-ext.out"
    t0 = time.monotonic()
    cmd = [str(CLI), "build-ext", str(sdist), "--python", str(pkg.venv), "--log", str(pkg.dir / "build.log")]
    with out_path.open("w") as out:
        proc = subprocess.run(["nice", *cmd], check=False, stdout=out, stderr=subprocess.STDOUT)
    res.build_seconds = round(time.monotonic() - t0, 1)
    text = out_path.read_text(errors="replace")
    res.build_ok = proc.returncode == 0
    kind = re.search(r"ok: \S+ \S+ \((.*)\) is instrumented", text)
    res.kind = kind.group(1) if kind else ""
    rows = re.findall(r"^  (\S+\.so\S*)\s+(yes|NO)\s+(yes|no)\s+(yes|NO)\s*$", text, re.MULTILINE)
    res.instrumentation = [f"{so}: ASan {a}, UBSan {u}, coverage {c}" for so, a, u, c in rows]
    if not res.build_ok:
        res.build_error = (text.strip().splitlines() or ["?"])[-1]


def extract_tests(pkg: Package, sdist: Path) -> Path:
    dest = pkg.dir / "tests"
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    if sdist.name.endswith(".zip"):
        with zipfile.ZipFile(sdist) as z:
            names = z.namelist()
            top = names[0].split("/")[0]
            prefix = f"{top}/{pkg.tests}/"
            for n in names:
                if n.startswith(prefix) and not n.endswith("/"):
                    target = dest / n[len(prefix) :]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(z.read(n))
        return dest
    with tarfile.open(sdist) as tar:
        members = tar.getmembers()
        top = members[0].name.split("/")[0]
        prefix = f"{top}/{pkg.tests}/"
        for m in members:
            if m.isfile() and m.name.startswith(prefix):
                target = dest / m.name[len(prefix) :]
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(m)
                if src is not None:
                    target.write_bytes(src.read())
    return dest


SANITIZER_LINE = re.compile(
    r"(ERROR: AddressSanitizer: .*|SUMMARY: \w+Sanitizer: .*|\S+:\d+:\d+: runtime error: .*|runtime error: .*|Fatal Python error: .*)"
)


def run_tests(pkg: Package, sdist: Path, res: Result) -> None:
    """The package's own suite under ASan. A test that kills the interpreter (a sanitizer report is an
    abort) is recorded with its report and deselected, and the suite runs again, at most 5 times."""
    tests = extract_tests(pkg, sdist)
    res.tests_dir = str(tests.relative_to(ROOT))
    # The project's own pytest configuration stays in the sdist (coverage plugins, strict options): an
    # empty ini instead, the package directory as rootdir (node ids: tests/...). cwd holds no copy of the
    # package's sources, so the instrumented install is what the tests import; the tests directory is on
    # sys.path for its helper modules. -s: a sanitizer report written while pytest captures fd 2 would be
    # lost with the process.
    ini = pkg.dir / "pytest-thirdparty.ini"
    ini.write_text("[pytest]\n")
    base = [
        str(pkg.venv / "bin" / "python"),
        "-m",
        "pytest",
        "-v",
        "-s",
        "--continue-on-collection-errors",
        "-p",
        "no:cacheprovider",
        "-c",
        str(ini),
    ]
    base += ["--rootdir", str(pkg.dir), str(tests.relative_to(pkg.dir))]
    env = sanitizer_env()
    env["PYTHONPATH"] = str(tests)
    res.tests_crashes = []
    t0 = time.monotonic()
    for _attempt in range(6):
        cmd = base + [f"--deselect={c.split(' ')[0]}" for c in res.tests_crashes]
        out_path = pkg.dir / "tests.out"
        with out_path.open("w") as out:
            try:
                proc = subprocess.run(
                    cmd, check=False, env=env, cwd=pkg.dir, stdout=out, stderr=subprocess.STDOUT, timeout=TEST_TIMEOUT
                )
                res.tests_exit = proc.returncode
            except subprocess.TimeoutExpired:
                res.tests_exit = -1
        text = out_path.read_text(errors="replace")
        if res.tests_exit in (0, 1, 5, -1):
            break
        started = [m.group(1) for m in re.finditer(r"^(\S+::\S+)", text, re.MULTILINE)]
        finished = set(re.findall(r"^(\S+::\S+) (?:PASSED|FAILED|SKIPPED|XFAIL|XPASS|ERROR)", text, re.MULTILINE))
        victim = next((n for n in reversed(started) if n not in finished), None)
        if victim is None:
            break
        report = SANITIZER_LINE.search(text[text.rfind(victim) :])
        res.tests_crashes.append(f"{victim} ({report.group(1).strip() if report else f'exit {res.tests_exit}'})")
        shutil.copy(out_path, pkg.dir / f"tests-crash-{len(res.tests_crashes)}.out")
    res.tests_seconds = round(time.monotonic() - t0, 1)
    summary = [line for line in text.splitlines() if re.search(r"\d+ (passed|failed|error)", line)]
    res.tests_summary = summary[-1].strip("= ") if summary else (text.strip().splitlines() or ["no output"])[-1]
    for key in ("passed", "failed", "skipped"):
        m = re.search(rf"(\d+) {key}", res.tests_summary)
        setattr(res, f"tests_{key}", int(m.group(1)) if m else 0)
    if res.tests_crashes:
        res.tests_summary += f"; {len(res.tests_crashes)} crashed (deselected, re-run)"


def fuzz_available() -> bool:
    proc = subprocess.run([str(CLI), "fuzz", "--help"], check=False, capture_output=True, text=True)
    return proc.returncode == 0 and "--max-time" in proc.stdout


def run_fuzz(pkg: Package, seconds: int, res: Result) -> None:
    artifacts = pkg.dir / "fuzz"
    artifacts.mkdir(parents=True, exist_ok=True)
    (pkg.dir / "fuzz.json").unlink(missing_ok=True)  # a run that writes none must not show the last one's
    cmd = [str(CLI), "fuzz", pkg.module, "--python", str(pkg.venv / "bin" / "python"), "--max-time", str(seconds)]
    cmd += ["--artifacts", str(artifacts), "--json", str(pkg.dir / "fuzz.json")]
    with (pkg.dir / "fuzz.out").open("w") as out:
        proc = subprocess.run(["nice", *cmd], check=False, cwd=pkg.dir, stdout=out, stderr=subprocess.STDOUT)
    res.fuzz_seconds = seconds
    res.fuzz_exit = proc.returncode
    lines = (pkg.dir / "fuzz.out").read_text(errors="replace").strip().splitlines()
    res.fuzz_summary = "\n".join(lines[-25:])


def load_fuzz(pkg: Package, res: Result) -> None:
    """The last fuzz run's --json summary (from this run, or an earlier one)."""
    path = pkg.dir / "fuzz.json"
    if path.is_file():
        res.fuzz = json.loads(path.read_text())
        ended = datetime.fromtimestamp(path.stat().st_mtime, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        # A row from an earlier run must say so: without --fuzz (or for a package whose build failed this
        # time) the table would otherwise pass an old result off as this run's.
        res.fuzz_when = "this run" if res.fuzz_exit is not None else f"earlier run ({ended})"


def fuzz_table(results: list[Result]) -> str:
    rows = [
        "| package | module | fuzzed | time (s) | callables found / exercised | execs | exec/s | native edges | findings |",
        "|---|---|---|---:|---|---:|---:|---:|---|",
    ]
    for r in results:
        f = r.fuzz
        if not f:
            continue
        found = [
            f"{x['kind']} in {x['site']} after {x['found_after']:.0f} s ({Path(x['repro']).name if x.get('repro') else 'no repro'})"
            for x in f.get("findings", [])
        ]
        rows.append(
            f"| {r.name} | {f['module']} | {r.fuzz_when} | {f['seconds']:.0f} | {f['callables']} / {f['exercised']} "
            f"| {f['execs']} "
            f"| {f['exec_per_s']:.0f} | {f.get('native_edges', '?')} | {'; '.join(found) or 'none found'} |"
        )
    return "\n".join(rows) if len(rows) > 2 else ""


def table(results: list[Result]) -> str:
    head = "| package | version | kind | build (s) | instrumented .so (ASan/UBSan/coverage) | own tests under ASan | time (s) |"
    rows = [head, "|---|---|---|---:|---|---|---:|"]
    for r in results:
        inst = "; ".join(r.instrumentation) if r.build_ok else f"BUILD FAILED: {r.build_error}"
        inst = inst.replace(": ASan yes, UBSan yes, coverage yes", " (yes/yes/yes)")
        inst = inst.replace(": ASan yes, UBSan no, coverage yes", " (yes/no/yes)")
        tests = r.tests_summary or "not run"
        rows.append(
            f"| {r.name} | {r.version} | {r.kind} | {r.build_seconds:.0f} | {inst} | {tests} | {r.tests_seconds:.0f} |"
        )
    return "\n".join(rows)


def unmet_expectations(
    pkgs: list[Package], results: list[Result], tests_pass: set[str], buggy: set[str], fuzzed: bool
) -> list[str]:
    """What --expect-tests-pass / --expect-findings asked and the run did not show. A run that exercised
    nothing (no test passed, no execution) meets neither: it proves nothing either way."""
    unmet = []
    for p, r in zip(pkgs, results):
        names = {p.key, p.name, p.requirement}
        if not names & (tests_pass | buggy):
            continue
        if not r.build_ok:
            unmet.append(f"{p.requirement}: the build failed")
            continue
        f = r.fuzz
        if fuzzed and r.fuzz_exit is None:
            unmet.append(f"{p.requirement}: not fuzzed in this run")
        elif fuzzed and not (f.get("execs") and f.get("exercised")):
            unmet.append(f"{p.requirement}: `ffi-harness fuzz` exercised nothing")
        if names & tests_pass and (r.tests_passed == 0 or r.tests_failed or r.tests_crashes):
            got = r.tests_summary or "not run"
            unmet.append(f"{p.requirement}: expected its own tests to pass under ASan, got: {got}")
        if names & buggy and not any(x.get("reproduced") for x in f.get("findings", [])):
            unmet.append(f"{p.requirement}: expected a finding that its repro replays, got none")
    return unmet


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--only",
        nargs="+",
        metavar="NAME",
        help="only these packages (a name selects every version listed; NAME==VERSION one)",
    )
    ap.add_argument("--download-only", action="store_true", help="download the sdists and stop")
    ap.add_argument("--skip-build", action="store_true", help="reuse the venvs built by an earlier run")
    ap.add_argument("--no-tests", action="store_true", help="do not run the packages' own tests")
    ap.add_argument("--fuzz", type=int, metavar="SECONDS", help="run `ffi-harness fuzz` on each for SECONDS")
    ap.add_argument("--fuzz-jobs", type=int, default=2, help="fuzz runs at a time (default 2)")
    ap.add_argument("--python", help="base interpreter for the venvs (default: .venv's base interpreter)")
    ap.add_argument(
        "--expect-tests-pass",
        nargs="+",
        default=[],
        metavar="NAME",
        help="exit 1 unless these packages' own tests ran and all passed under ASan (nothing crashed)",
    )
    ap.add_argument(
        "--expect-findings",
        nargs="+",
        default=[],
        metavar="NAME",
        help="exit 1 unless fuzzing (--fuzz) finds a bug in these packages that its repro replays",
    )
    args = ap.parse_args()

    pkgs = read_list(LIST)
    expected = set(args.expect_tests_pass) | set(args.expect_findings)
    if args.expect_findings and not args.fuzz:
        ap.error("--expect-findings needs --fuzz SECONDS")
    known = {n for p in pkgs for n in (p.key, p.name, p.requirement)}
    if expected - known:
        raise SystemExit(f"not in {LIST.name}: {', '.join(sorted(expected - known))}")
    if args.only:
        unknown = set(args.only) - known
        if unknown:
            raise SystemExit(f"not in {LIST.name}: {', '.join(sorted(unknown))}")
        pkgs = [p for p in pkgs if {p.key, p.name, p.requirement} & set(args.only)]
    sdists = {p.key: download(p) for p in pkgs}
    if args.download_only:
        for p in pkgs:
            print(sdists[p.key])
        return 0
    if not CLI.exists():
        raise SystemExit(f"{CLI} not found: run ci/setup first")

    python = base_python(args.python)
    results_path = TP / "results.json"
    previous = {}
    if results_path.exists():
        previous = {r["name"]: r for r in json.loads(results_path.read_text())}
    results: list[Result] = []
    for p in pkgs:
        p.dir.mkdir(parents=True, exist_ok=True)
        res = Result(
            p.key, p.version, p.module, p.why, str(sdists[p.key].relative_to(ROOT)), str(p.venv.relative_to(ROOT))
        )
        if args.skip_build and p.key in previous:
            res = reuse_build(res, previous[p.key])
            make_venv(p, python)  # the test dependencies, in case the list changed
        else:
            log(f"{p.key}: venv + build-ext")
            make_venv(p, python)
            build(p, sdists[p.key], res)
            log(f"{p.key}: build {'ok' if res.build_ok else 'FAILED'} in {res.build_seconds} s")
        if res.build_ok and not args.no_tests:
            log(f"{p.key}: own tests under ASan")
            run_tests(p, sdists[p.key], res)
            log(f"{p.key}: {res.tests_summary} ({res.tests_seconds} s)")
        results.append(res)

    if args.fuzz:
        if not fuzz_available():
            log("`ffi-harness fuzz` is not available yet: fuzzing skipped")
        else:
            todo = [(p, r) for p, r in zip(pkgs, results) if r.build_ok]
            with ThreadPoolExecutor(max_workers=max(1, args.fuzz_jobs)) as pool:
                for p, r in todo:
                    pool.submit(run_fuzz, p, args.fuzz, r)
            for r in results:
                if r.fuzz_exit is not None:
                    log(f"{r.name}: fuzz exit {r.fuzz_exit}\n{r.fuzz_summary}")

    for p, r in zip(pkgs, results):
        load_fuzz(p, r)
    merged = {**previous, **{r.name: asdict(r) for r in results}}
    results_path.write_text(json.dumps(list(merged.values()), indent=2) + "\n")
    print(table(results))
    fuzzed = fuzz_table(results)
    if fuzzed:
        print()
        print(fuzzed)
    failed = [r.name for r in results if not r.build_ok]
    if failed:
        log(f"build failed: {', '.join(failed)}")
    unmet = unmet_expectations(pkgs, results, set(args.expect_tests_pass), set(args.expect_findings), bool(args.fuzz))
    for u in unmet:
        log(f"UNMET: {u}")
    selected = {n for p in pkgs for n in (p.key, p.name, p.requirement)}
    for name in sorted(expected - selected):
        log(f"UNMET: {name} was expected but not selected by --only")
        unmet.append(name)
    return 1 if failed or unmet else 0


if __name__ == "__main__":
    os.chdir(ROOT)
    raise SystemExit(main())
