# The preamble of every `native` fuzz reproducer (fuzz/src/lib.rs: repro_helpers() puts pytests/_refs.py,
# rebuilt as the module `_refs`, in front of it). The steps that follow use these modules.
import array  # noqa: F401
import atexit
import gc
import mmap  # noqa: F401
import os  # noqa: F401
import shutil
import sys  # noqa: F401
import tempfile
import threading  # noqa: F401
import time

import native  # noqa: F401

# The pure-Python references and helpers of pytests/_refs.py (`_refs`, embedded in front of this).
_ref_fnv = _refs.fnv1a64  # noqa: F821
_ref_process = _refs.process_ref  # noqa: F821
_ledger = _refs.ledger_snapshot  # noqa: F821


def _wait_ledger(baseline, seconds=5.0):
    deadline = time.time() + seconds
    while True:
        gc.collect()
        if _ledger() == baseline or time.time() > deadline:
            break
        time.sleep(0.01)
    assert _ledger() == baseline, f"ledger {_ledger()} != baseline {baseline}"


def _read_only(obj):
    """Does obj export a read-only buffer? (False if it exports none.)"""
    try:
        with memoryview(obj) as view:
            return view.readonly
    except BaseException:  # noqa: BLE001 - a hostile export may raise anything
        return False


_BASELINE = _ledger()
_TMP = tempfile.mkdtemp(prefix="native-repro-")
atexit.register(shutil.rmtree, _TMP, True)  # a reproducer that ends normally leaves no directory
