#!/usr/bin/env python3
"""Builds every cargo-fuzz target and fuzzes each for a bounded time; prints a one-screen summary.

Used by ci/fuzz-smoke (CI) and ci/main (the harness run). For each target: execs, exec/s, coverage,
corpus size, findings, and for each finding the path of a repro.py (written by the target itself on
an oracle failure, or regenerated from the crash artifact with FFI_HARNESS_WRITE_REPRO=1 when the
process died, e.g. an ASan report). Exit status 1 on any finding.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FUZZ = ROOT / "fuzz"
TRIPLE = "x86_64-unknown-linux-gnu"


def env_for_fuzzing() -> dict[str, str]:
    env = dict(os.environ)
    env["RUSTC_BOOTSTRAP"] = "1"  # -Zsanitizer on the stable toolchain
    env["PATH"] = f"{Path.home() / '.cargo' / 'bin'}:{env.get('PATH', '')}"
    env.setdefault("FFI_HARNESS_VENV", str(ROOT / ".venv"))
    return env


def all_targets(env: dict[str, str]) -> list[str]:
    """Every target of fuzz/Cargo.toml, as cargo-fuzz itself lists them (no second list to keep)."""
    out = subprocess.run(["cargo", "fuzz", "list"], cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    return out.stdout.split()


def chosen_targets(arg: str, env: dict[str, str]) -> list[str]:
    """The targets `--targets` names (default: all), each checked against `cargo fuzz list` and built."""
    known = all_targets(env)
    targets = [t for t in arg.split(",") if t] or known
    unknown = [t for t in targets if t not in known]
    if unknown:
        sys.exit(f"{Path(sys.argv[0]).name}: no fuzz target {', '.join(unknown)} (cargo fuzz list: {', '.join(known)})")
    missing = [t for t in targets if not binary(t).exists()]
    if missing:
        sys.exit(
            f"{Path(sys.argv[0]).name}: {', '.join(missing)} not built (run without --no-build, or `cargo fuzz build -O`)"
        )
    return targets


# The same targets without sanitizers (libFuzzer coverage only), in their own target dir so the two builds
# never rebuild each other: the OSS-Fuzz model's fast exploring build, and the fair side of a comparison
# with atheris on a plain build.
PLAIN_TARGET_DIR = FUZZ / "target-plain"


def build(env: dict[str, str], plain: bool = False) -> None:
    extra = ["-s", "none", "--target-dir", str(PLAIN_TARGET_DIR)] if plain else []
    subprocess.run(["cargo", "fuzz", "build", "-O", *extra], cwd=ROOT, env=env, check=True)


def binary(target: str, plain: bool = False) -> Path:
    return (PLAIN_TARGET_DIR if plain else FUZZ / "target") / TRIPLE / "release" / target


def plain_env(env: dict[str, str]) -> dict[str, str]:
    """The environment of a plain-build run: CPython's own allocator (the ASan build's PYTHONMALLOC=malloc
    only serves ASan's use-after-free reports, and nothing here would report one)."""
    return dict(env, PYTHONMALLOC="pymalloc")


def last(pattern: str, text: str) -> str | None:
    found = re.findall(pattern, text)
    return found[-1] if found else None


def fuzz_one(target: str, seconds: int, env: dict[str, str], workdir: Path) -> dict:
    """Fuzz `target` for `seconds` on its committed seeds; new inputs go to a scratch corpus."""
    return run_target(
        target, workdir / "corpus" / target, [f"-max_total_time={seconds}"], env, workdir / f"{target}.log", seconds
    )


def run_target(
    target: str,
    corpus: Path,
    limit: list[str],
    env: dict[str, str],
    log: Path,
    budget_s: int,
    plain: bool = False,
    inputs: list[Path] | None = None,
) -> dict:
    """One libFuzzer run of `target` (CI's flags, the `limit` flags, new inputs into `corpus`, the committed
    seeds read too): its stats and findings. `budget_s` bounds the run (plus 300 s of slack). `plain`: the
    build without sanitizers. `inputs`: run each of these files once instead of fuzzing."""
    artifacts = FUZZ / "artifacts" / target
    artifacts.mkdir(parents=True, exist_ok=True)
    corpus.mkdir(parents=True, exist_ok=True)  # new inputs go here: the committed seeds stay as they are
    seeds = FUZZ / "corpus" / target
    seeds.mkdir(parents=True, exist_ok=True)
    cmd = [
        str(binary(target, plain)),
        *([str(corpus), str(seeds)] if inputs is None else [str(p) for p in inputs]),
        *limit,
        "-print_final_stats=1",
        "-timeout=30",
        "-rss_limit_mb=4096",
        # Per-input leak scans cost ~10 ms each (the interpreter's caches always look like growth);
        # LeakSanitizer still runs at exit, and the ledger/leak-hunt oracles cover native leaks.
        "-detect_leaks=0",
        f"-artifact_prefix={artifacts}/",
    ]
    dictionary = FUZZ / "dicts" / f"{target}.dict"
    if dictionary.exists():
        cmd.append(f"-dict={dictionary}")
    run_env = dict(plain_env(env) if plain else env, FFI_HARNESS_REPRO_DIR=str(artifacts))
    started = time.monotonic()
    proc = subprocess.run(
        cmd,
        check=False,
        env=run_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        timeout=budget_s + 300,
    )
    out = proc.stdout
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(out)
    seconds = round(time.monotonic() - started, 1)
    execs = int(last(r"stat::number_of_executed_units:\s*(\d+)", out) or 0)
    # libFuzzer divides by whole seconds of fuzzing and reports 0 under one second (short soak chunks,
    # quick finds): then the rate is the run's executions over its wall time, start-up included.
    exec_s = int(last(r"stat::average_exec_per_sec:\s*(\d+)", out) or 0)
    if exec_s == 0 and execs and seconds:
        exec_s = round(execs / seconds)
    result = {
        "target": target,
        "seconds": seconds,
        "execs": execs,
        "exec_s": exec_s,
        "cov": last(r"cov: (\d+)", out) or "-",
        "ft": last(r"ft: (\d+)", out) or "-",
        "corpus": last(r"corp: (\d+)", out) or "-",
        "findings": [],
        "log": str(log),
    }
    crashed = proc.returncode != 0
    # Running files (`inputs`), libFuzzer writes no crash file: the input is the file it was running.
    artifact = last(r"Test unit written to (\S+)", out) or (last(r"Running: (\S+)", out) if inputs else None)
    leak_report = "ERROR: LeakSanitizer" in out
    if crashed or leak_report:
        repro = last(r"ffi-harness: repro written to (\S+)", out)
        if artifact and not repro:
            repro = regenerate_repro(target, Path(artifact), run_env, plain)
        # An oracle failure panics (then aborts): name the oracle, not the abort.
        kind = last(r"oracle failure in \w+: (\[[\w ]+\])", out) or last(
            r"(ERROR: AddressSanitizer: [\w-]+|ERROR: LeakSanitizer|deadly signal|timeout|out-of-memory)", out
        )
        result["findings"].append({"kind": kind or f"exit {proc.returncode}", "artifact": artifact, "repro": repro})
    elif result["execs"] == 0:
        # A run that exercised nothing is not a clean run.
        result["findings"].append({"kind": "executed nothing", "artifact": None, "repro": f"(log: {log})"})
    return result


def regenerate_repro(target: str, artifact: Path, env: dict[str, str], plain: bool = False) -> str | None:
    """The process died before it could write a repro (ASan abort): replay the artifact with
    FFI_HARNESS_WRITE_REPRO=1, which writes repro.py before running the input."""
    proc = subprocess.run(
        [str(binary(target, plain)), str(artifact)],
        check=False,
        env=dict(env, FFI_HARNESS_WRITE_REPRO="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        timeout=300,
    )
    return last(r"ffi-harness: repro written to (\S+)", proc.stdout)


def summary(results: list[dict]) -> str:
    lines = [
        "| target | time (s) | execs | exec/s | coverage (edges) | features | corpus | findings |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        findings = (
            "none"
            if not r["findings"]
            else "; ".join(f"{f['kind']}: repro {f['repro'] or '(none)'}" for f in r["findings"])
        )
        lines.append(
            f"| {r['target']} | {r['seconds']} | {r['execs']} | {r['exec_s']} | {r['cov']} | {r['ft']} "
            f"| {r['corpus']} | {findings} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--seconds",
        type=int,
        default=int(os.environ.get("FUZZ_SECONDS", "60")),
        help="fuzzing time per target (default 60, or $FUZZ_SECONDS)",
    )
    parser.add_argument("--targets", default="", help="comma-separated (default: every target `cargo fuzz list` names)")
    parser.add_argument(
        "--jobs",
        type=int,
        default=2,
        help="targets fuzzed at once (default 2: one per core)",
    )
    parser.add_argument("--no-build", action="store_true")
    parser.add_argument("--summary-file", type=Path, default=None)
    args = parser.parse_args()
    env = env_for_fuzzing()
    if not args.no_build:
        build(env)
    workdir = ROOT / "target" / "fuzz-run"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    targets = chosen_targets(args.targets, env)
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = list(pool.map(lambda t: fuzz_one(t, args.seconds, env, workdir), targets))
    table = summary(results)
    print("\n" + table + "\n")
    if args.summary_file:
        args.summary_file.parent.mkdir(parents=True, exist_ok=True)
        args.summary_file.write_text(table + "\n")
    findings = [f for r in results for f in r["findings"]]
    for f in findings:
        if f["artifact"] is None and f["kind"] == "executed nothing":
            print(f"FAILED: a target executed nothing {f['repro']}", file=sys.stderr)
            continue
        print(
            f"FINDING {f['kind']}: artifact {f['artifact']}\n  reproduce: python {f['repro']}"
            "  (memory bugs: against the ASan build, environment in the repro's header)",
            file=sys.stderr,
        )
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
