#!/usr/bin/env python3
"""Throughput side by side in one run: each cargo-fuzz target against atheris fuzzing the same `native`
operations with the same checks from Python (fuzz/atheris/native_atheris.py), each for the same time, one
after the other on the same machine, in two conditions:

- under ASan: the cargo-fuzz binaries (`cargo fuzz build -O`) against atheris on the ASan build of native
  (ci/asan-python: ASan preloaded, PYTHONMALLOC=malloc);
- without sanitizers: the same targets built with `-s none` (fuzz/target-plain) against atheris on the
  plain release build, both on CPython's own allocator.

Prints (and optionally writes) a Markdown table with the exec/s ratios. Builds the plain targets itself;
needs the ASan ones built (ci/fuzz-smoke or ci/fuzz_run.py builds them).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from fuzz_run import binary, build, env_for_fuzzing, plain_env

ROOT = Path(__file__).resolve().parent.parent
PY = ROOT / ".venv" / "bin" / "python"
PAIRS = ["buffers", "handles", "structs", "callbacks", "errors"]


def exec_per_sec(cmd: list[str], env: dict[str, str]) -> tuple[int, int]:
    out = subprocess.run(
        cmd,
        check=False,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        timeout=900,
    ).stdout
    rate = re.findall(r"stat::average_exec_per_sec:\s*(\d+)", out)
    execs = re.findall(r"stat::number_of_executed_units:\s*(\d+)", out)
    if not rate:
        sys.stderr.write(out[-3000:])
        raise SystemExit(f"no libFuzzer stats from {cmd[0]}")
    if not execs or int(execs[-1]) == 0:
        # A side that executed nothing has no rate to compare: never print a ratio for it.
        sys.stderr.write(out[-3000:])
        raise SystemExit(f"{' '.join(cmd[:2])} executed no input")
    return int(rate[-1]), int(execs[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--summary-file", type=Path)
    parser.add_argument("--targets", default=",".join(PAIRS), help=f"comma-separated (default {','.join(PAIRS)})")
    args = parser.parse_args()
    env = env_for_fuzzing()
    build(env, plain=True)
    rows = []
    targets = args.targets.split(",")
    if unknown := sorted(set(targets) - set(PAIRS)):
        parser.error(f"no atheris pair for {', '.join(unknown)} (pairs: {', '.join(PAIRS)})")
    for target in targets:
        common = [f"-max_total_time={args.seconds}", "-print_final_stats=1", "-detect_leaks=0"]
        harness = [str(ROOT / "fuzz/atheris/native_atheris.py"), target]

        def run(cmd: list[str], run_env: dict[str, str]) -> int:
            # Every run starts from an empty corpus. Its TMPDIR is removed after it: libFuzzer ends the
            # process with exit(), which runs no Python atexit hook, so the stores a harness made stay.
            with tempfile.TemporaryDirectory() as corpus, tempfile.TemporaryDirectory() as scratch:
                cmd = [*cmd, corpus, *common, f"-artifact_prefix={corpus}/"]
                return exec_per_sec(cmd, {**run_env, "TMPDIR": scratch})[0]

        ours = run([str(binary(target))], env)
        # Like for like: the same sanitizer conditions as the cargo-fuzz binaries (ASan build of
        # native, ASan runtime preloaded, every Python object in malloc).
        asan = run([str(ROOT / "ci/asan-python"), *harness], env)
        ours_plain = run([str(binary(target, plain=True))], plain_env(env))
        plain = run([str(PY), *harness], env)
        rows.append((target, ours, asan, ours_plain, plain))
    lines = [
        "| target | cargo-fuzz, ASan | atheris, ASan build | ratio | cargo-fuzz, plain | atheris, plain build | ratio |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for target, ours, asan, ours_plain, plain in rows:
        lines.append(
            f"| {target} | {ours} | {asan} | {ours / max(asan, 1):.1f}x | {ours_plain} | {plain} |"
            f" {ours_plain / max(plain, 1):.1f}x |"
        )
    table = "\n".join(lines)
    print(table)
    if args.summary_file:
        args.summary_file.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
