"""pytest plugin of the bug detectors (ci/sanitize, ci/valgrind, ci/gil-check, mutants/detectors.sh).

Loaded with `-p pytest_guard` (ci/ on PYTHONPATH). A test whose captured output shows that something
went wrong below Python fails, even if its assertions passed: a Rust panic (caught by a trampoline's
catch_unwind, so otherwise silent), a sanitizer report, a fatal interpreter error, or a libnative abort
message. The suite's tests assert behaviour; this guards the boundary underneath every one of them.

With FFI_HARNESS_TEST_TIMEOUT=<seconds> (set by ci/mutants; run pytest with -o faulthandler_timeout=0)
a test that runs longer (setup and teardown included) dumps every thread's stack and ends the process:
a deadlock fails fast instead of hanging the job.
"""

from __future__ import annotations

import faulthandler
import os
import re

import pytest

_TIMEOUT = float(os.environ.get("FFI_HARNESS_TEST_TIMEOUT") or 0)
# The real stderr, saved before pytest's capture replaces fd 2: the dump must reach the log.
_STDERR = os.fdopen(os.dup(2), "w") if _TIMEOUT > 0 else None

MARKERS = re.compile(
    r"panicked at"
    r"|ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error: |UndefinedBehaviorSanitizer"
    r"|Fatal Python error"
    r"|libnative: native_free"
    r"|Python memory allocator called without holding the GIL"
)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if not rep.passed:
        return
    for title, text in rep.sections:
        if not title.startswith("Captured"):
            continue
        m = MARKERS.search(text)
        if m:
            start = max(0, text.rfind("\n", 0, m.start()))
            rep.outcome = "failed"
            rep.longrepr = f"pytest_guard: {title!r} of this test shows {m.group(0)!r}:\n" + text[start : start + 3000]
            return


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_protocol(item, nextitem):
    if _TIMEOUT <= 0:
        yield
        return
    _STDERR.write(f"\npytest_guard: watchdog {_TIMEOUT:g}s armed for {item.nodeid}\n")
    _STDERR.flush()
    faulthandler.dump_traceback_later(_TIMEOUT, exit=True, file=_STDERR)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()
