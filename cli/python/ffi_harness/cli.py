"""The `ffi-harness` command: one subcommand per module, one exit-code convention for all.

Exit codes: 0 nothing found, 1 finding(s) (crash, leak, hang, oracle failure), 2 usage or set-up error.
Each subcommand module exposes ``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

EXIT_CLEAN = 0
EXIT_FINDINGS = 1
EXIT_USAGE = 2

# subcommand -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "build-ext": (
        "ffi_harness.build_ext",
        "build a package's native code instrumented (ASan, UBSan, coverage) into an environment",
    ),
    "fuzz": ("ffi_harness.fuzz", "discover a module's callables and fuzz them with hostile values under oracles"),
    "repro": ("ffi_harness.repro", "replay a repro-*.py under the sanitizer conditions it was found in"),
    "test": ("ffi_harness.testrun", "run a pytest suite with per-test crash isolation, leak, ASan and GIL verdicts"),
}


class UsageError(Exception):
    """A usage or set-up problem: printed as one line, exit status 2."""


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The parser; only the subcommand named in `argv` imports its module (the others are listed by
    name and help text), so `ffi-harness test` does not pay for the fuzz engine's imports."""
    chosen = next((a for a in argv if not a.startswith("-")), None)
    parser = argparse.ArgumentParser(prog="ffi-harness", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"ffi-harness {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            importlib.import_module(module).add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def _version() -> str:
    from ffi_harness import __version__

    return __version__


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
    try:
        return int(importlib.import_module(args._module).run(args))
    except UsageError as e:
        print(f"ffi-harness {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"ffi-harness {args.command}: interrupted", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    raise SystemExit(main())
