"""`ffi-harness repro FILE`: replay a repro-*.py under the conditions its header records.

The header (``FFI_HARNESS = {...}``) names the interpreter, whether the module was ASan-built (then
clang's ASan runtime is preloaded and ``PYTHONMALLOC=malloc`` set), extra ``PYTHONPATH`` entries and the
watchdog timeout. Exit 1 when the bug reproduces (the verdict names its kind and site), 0 when the
program runs clean, 2 on a usage error (no such file, not a repro).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

from ffi_harness import findings as fnd
from ffi_harness import interpreter
from ffi_harness.cli import EXIT_CLEAN, EXIT_FINDINGS, UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="a repro-*.py written by `ffi-harness fuzz`")
    parser.add_argument("--python", metavar="PATH", help="interpreter (default: the one in the header, else this one)")
    parser.add_argument("--timeout", type=float, metavar="S", help="deadlock watchdog (default: the header's)")
    parser.add_argument("-v", "--verbose", action="store_true", help="print the run's full output")


def run(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    try:
        header = fnd.read_header(path)
    except (SyntaxError, ValueError, UnicodeDecodeError) as e:
        raise UsageError(str(e).splitlines()[0]) from e
    python = interpreter.resolve_python(args.python) if args.python else header.get("python") or sys.executable
    if not (Path(python).exists() and os.access(python, os.X_OK)):
        python = sys.executable
    asan = bool(header.get("asan"))
    try:
        env = fnd.run_env(asan, list(header.get("pythonpath") or []))
    except FileNotFoundError as e:
        raise UsageError(str(e)) from e
    if args.timeout is not None and not (math.isfinite(args.timeout) and args.timeout > 0):
        raise UsageError(f"--timeout must be a positive number of seconds, not {args.timeout}")
    timeout = float(args.timeout if args.timeout is not None else header.get("timeout") or 10)
    env["FFI_HARNESS_TIMEOUT"] = str(timeout)  # the script's own watchdog (runtime.main) reads it
    verdict = fnd.run_script(path.resolve(), python, env, timeout)
    if args.verbose:
        sys.stderr.write(verdict.output)
    expected = f"{header.get('kind')} in {header.get('site')}"
    if verdict.reproduced:
        same = verdict.kind == header.get("kind")
        print(f"reproduced: {verdict.kind} in {verdict.site}" + ("" if same else f" (the repro recorded {expected})"))
        if verdict.detail:
            print(f"  {verdict.detail}")
        return EXIT_FINDINGS
    if verdict.detail.startswith("error"):
        raise UsageError(f"{path}: {verdict.detail}")
    print(f"not reproduced: the program ran clean under {python}{' with ASan' if asan else ''} (recorded: {expected})")
    return EXIT_CLEAN
