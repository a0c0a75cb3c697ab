"""`ffi-harness build-ext` (not written yet)."""

from __future__ import annotations

import argparse

from ffi_harness.cli import UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    raise UsageError("build-ext is not implemented yet")
