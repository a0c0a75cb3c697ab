#!/usr/bin/env python3
"""Throughput side by side in one run: each cargo-fuzz target against atheris fuzzing the same `native`
operations with the same checks from Python (fuzz/atheris/native_atheris.py), each for the same time, one
after the other on the same machine. atheris runs twice: under the same sanitizer conditions as the
cargo-fuzz binaries (ASan build of native via ci/asan-python), and against the plain release build. Prints (and optionally writes) a Markdown table with the exec/s ratio.
Needs the fuzz targets built (ci/fuzz-smoke or ci/fuzz_run.py builds them).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

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
    return int(rate[-1]), int(execs[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--summary-file", type=Path)
    parser.add_argument("--targets", default=",".join(PAIRS), help=f"comma-separated (default {','.join(PAIRS)})")
    args = parser.parse_args()
    env = dict(os.environ)
    rows = []
    targets = args.targets.split(",")
    if unknown := sorted(set(targets) - set(PAIRS)):
        parser.error(f"no atheris pair for {', '.join(unknown)} (pairs: {', '.join(PAIRS)})")
    for target in targets:
        with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b, tempfile.TemporaryDirectory() as c:
            common = [f"-max_total_time={args.seconds}", "-print_final_stats=1", "-detect_leaks=0"]
            ours = exec_per_sec(
                [
                    str(ROOT / "fuzz/target/x86_64-unknown-linux-gnu/release" / target),
                    a,
                    *common,
                    f"-artifact_prefix={a}/",
                ],
                env,
            )
            harness = [str(ROOT / "fuzz/atheris/native_atheris.py"), target]
            plain = exec_per_sec([str(PY), *harness, b, *common, f"-artifact_prefix={b}/"], env)
            # Like for like: the same sanitizer conditions as the cargo-fuzz binaries (ASan build of
            # native, ASan runtime preloaded, every Python object in malloc).
            asan = exec_per_sec([str(ROOT / "ci/asan-python"), *harness, c, *common, f"-artifact_prefix={c}/"], env)
        rows.append((target, ours, plain, asan))
    lines = [
        "| target | cargo-fuzz (ASan, Rust oracles) | atheris, ASan build (same conditions) | ratio | atheris, plain build | ratio |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for target, (ours, _), (plain, _), (asan, _) in rows:
        lines.append(
            f"| {target} | {ours} | {asan} | {ours / max(asan, 1):.1f}x | {plain} | {ours / max(plain, 1):.2f}x |"
        )
    table = "\n".join(lines)
    print(table)
    if args.summary_file:
        args.summary_file.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
