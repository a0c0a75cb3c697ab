"""`--python`: one meaning for every subcommand.

PY may be an interpreter path (relative to the current directory), a venv directory, or a name on PATH.
The result is absolute but keeps a venv's `bin/python` symlink unresolved: resolving it would leave the
venv (its site-packages are found through the symlink's location). Absolute matters because the fuzz
engine and the test workers run in other working directories.
"""

from __future__ import annotations

import os
import sys

from ffi_harness.cli import UsageError


def resolve_python(arg: str | None) -> str:
    """The interpreter named by `--python` (None: the one running ffi-harness)."""
    if arg is None:
        return sys.executable
    if os.path.isdir(arg):
        for cand in (os.path.join(arg, "bin", "python3"), os.path.join(arg, "bin", "python")):
            if os.path.exists(cand):
                return os.path.abspath(cand)
        raise UsageError(f"--python {arg}: a directory without bin/python (not a venv)")
    import shutil  # here, not at the top: `ffi-harness test` pays for every import before its worker starts

    found = os.path.abspath(arg) if os.path.exists(arg) else shutil.which(arg)
    if not found or not os.access(found, os.X_OK):
        raise UsageError(f"--python {arg}: no such interpreter")
    return found
