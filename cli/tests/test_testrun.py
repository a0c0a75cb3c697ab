"""`ffi-harness test` on the buggy_ext fixture's own suite: every bug named by its test, the rest passes.

The fixture is built twice into private directories (never into the venv, see conftest.py): plainly,
and with clang's ASan+UBSan. Each run goes through the real command line, on the fixture's own suite.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

import pytest

HERE = Path(__file__).resolve().parent
FIXTURE = HERE / "fixtures" / "buggy_ext"
SUITE = FIXTURE / "tests"
T = "tests/test_buggy.py::"  # node ids are relative to the fixture's rootdir (its pyproject.toml)


@pytest.fixture(scope="module")
def builds(buggy_plain: Path, buggy_asan: Path) -> dict[str, Path]:
    """The fixture built plainly and with clang's ASan+UBSan (conftest.py), each in a private site dir."""
    return {"plain": buggy_plain, "asan": buggy_asan}


def harness(
    build: Path | None, *args: str, tmp: Path | None = None, cwd: Path = FIXTURE
) -> tuple[int, str, dict[str, str]]:
    env = dict(os.environ)
    env.pop("PYTHONMALLOC", None)
    env.pop("LD_PRELOAD", None)
    if build is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(build), env.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "ffi_harness", "test", *args]
    p = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env, timeout=300, cwd=cwd)
    verdicts: dict[str, str] = {}
    for line in p.stdout.splitlines():
        m = re.match(
            r"^(\S+::\S+)  (passed|failed|skipped|xfailed|xpassed|error|not repeatable|LEAK|OVER-DECREF|CRASH|HANG)",
            line,
        )
        if m and m.group(1) not in verdicts:
            verdicts[m.group(1)] = line
    return p.returncode, p.stdout + p.stderr, verdicts


def verdict(verdicts: dict[str, str], test: str) -> str:
    line = verdicts[T + test]
    return line[len(T + test) + 2 :]


CLEAN = ("test_add", "test_add_overflow", "test_checksum_empty", "test_table_in_range", "test_counter")


def test_plain_run_names_the_hang_and_continues(builds: dict[str, Path], tmp_path: Path) -> None:
    junit = tmp_path / "junit.xml"
    rc, out, v = harness(
        builds["plain"], "--timeout", "3", "--junit", str(junit), "--", "tests", "-p", "no:cacheprovider"
    )
    assert rc == 1, out
    for t in CLEAN:
        assert verdict(v, t) == "passed", out
    hang = verdict(v, "test_wait_for_hangs")
    assert hang.startswith("HANG") and "test_buggy.py:" in hang and "test_wait_for_hangs" in hang, out
    # The native half of the report: the self-deadlock on wait_lock, named, and the native stack.
    assert re.search(r"locks: thread \d+ \(.*\) waits for the mutex at 0x[0-9a-f]+, which it holds itself", out), out
    assert verdict(v, "test_after_the_crashes") == "passed", out  # the suite went on after the hang
    assert verdict(v, "test_marked_once") == "passed", out
    # The summary is computed from the verdicts.
    n_pass = sum(1 for line in v.values() if line.endswith("  passed"))
    assert re.search(rf"^{len(v)} tests: {n_pass} passed, 1 HANG in ", out, re.MULTILINE), out
    cases = ElementTree.parse(junit).getroot().iter("testcase")
    errors = {c.get("name"): c.find("error") for c in cases}
    assert len(errors) == len(v)
    hang_error = errors["test_wait_for_hangs"]
    assert hang_error is not None and hang_error.get("type") == "HANG"


def test_asan_names_both_memory_bugs_and_continues(builds: dict[str, Path]) -> None:
    rc, out, v = harness(builds["asan"], "--asan", "--timeout", "3", "--", "tests", "-p", "no:cacheprovider")
    assert rc == 1, out
    uaf = verdict(v, "test_pop_last_crashes")
    assert uaf.startswith("CRASH") and "heap-use-after-free" in uaf and "pop_last" in uaf, out
    assert "test_buggy.py:" in uaf, out  # the Python line, from the stacks dumped at the report
    oob = verdict(v, "test_table_out_of_range_crashes")
    assert oob.startswith("CRASH") and "heap-buffer-overflow" in oob and "table_get" in oob, out
    thread = verdict(v, "test_table_out_of_range_in_a_thread_crashes")
    assert thread.startswith("CRASH") and "heap-buffer-overflow" in thread, out
    assert "test_buggy.py:" in thread, out  # the test's line, from the other threads' stacks
    assert verdict(v, "test_wait_for_hangs").startswith("HANG"), out
    for t in (*CLEAN, "test_remember_leaks", "test_only_once", "test_after_the_crashes"):
        assert verdict(v, t) == "passed", out
    assert re.search(r"passed, 3 CRASH, 1 HANG in .*\(5 workers; asan\)", out), out


def test_leaks_under_asan_counts_the_sanitizer_allocator_bytes(builds: dict[str, Path]) -> None:
    # PYTHONMALLOC=malloc leaves sys.getallocatedblocks() at 0; a leaked str is not gc-tracked: only
    # ASan's own count of allocated bytes sees it.
    rc, out, v = harness(
        builds["asan"],
        "--asan",
        "--leaks=2:4",
        "--timeout",
        "3",
        "--",
        "tests",
        "-p",
        "no:cacheprovider",
        "-k",
        "remember or add or checksum or counter or in_range",
    )
    assert rc == 1, out
    assert re.match(r"LEAK +asan_bytes \+\d+/\+\d+/\+\d+/\+\d+", verdict(v, "test_remember_leaks")), out
    assert "cannot be counted" not in out, out  # they are: as asan_bytes (the notice is for plain malloc)
    for t in CLEAN:
        assert verdict(v, t) == "passed", out


def test_leaks_names_the_leak_and_the_unrepeatable_tests(builds: dict[str, Path]) -> None:
    rc, out, v = harness(
        builds["plain"],
        "--leaks=2:4",
        "--timeout",
        "3",
        "--",
        "tests",
        "-p",
        "no:cacheprovider",
        "-k",
        "not pop_last and not out_of_range and not hangs",
    )
    assert rc == 1, out
    leak = verdict(v, "test_remember_leaks")
    m = re.match(r"LEAK  .*blocks \+(\d+)/\+(\d+)/\+(\d+)/\+(\d+)", leak)
    assert m, out  # named with its four per-round deltas
    # A leak of objects the test never sees (each callback call's argument tuple): gc objects and blocks grow.
    assert verdict(v, "test_each_entry_leaks").startswith("LEAK"), out
    assert verdict(v, "test_only_once").startswith("not repeatable  run 2 of 7 failed"), out
    assert verdict(v, "test_marked_once") == "not repeatable  marked ffi_harness_no_repeat", out
    for t in (*CLEAN, "test_after_the_crashes"):
        assert verdict(v, t) == "passed", out  # no false LEAK on the clean tests
    assert sum("LEAK" in line for line in v.values()) == 2, out  # remember and each_entry
    lost = verdict(v, "test_table_find_loses_none")
    if sys.version_info < (3, 12):  # None loses a reference on every miss of table_find
        assert re.match(r"OVER-DECREF  lost_refs:None [+-]\d+/\+1/\+1/\+1$", lost), out
        assert re.search(r"2 LEAK, 1 OVER-DECREF in ", out), out
    else:  # immortal None: the bug is harmless there, and invisible
        assert lost == "passed", out


def test_no_test_collected_is_exit_2(builds: dict[str, Path]) -> None:
    rc, out, _ = harness(builds["plain"], "--", "tests", "-p", "no:cacheprovider", "-k", "no_such_test_anywhere")
    assert rc == 2, out
    assert "no test was collected" in out, out


def test_a_crash_while_collecting_is_a_finding_not_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "test_crashes_on_import.py").write_text("import ctypes\n\nctypes.string_at(0)\n")
    rc, out, _ = harness(None, "--", str(tmp_path), "-p", "no:cacheprovider", cwd=tmp_path)
    assert rc == 1, out
    assert "the pytest worker ended outside any test (SIGSEGV)" in out, out


def test_a_worker_that_does_not_exit_after_the_suite_is_killed_and_named(tmp_path: Path) -> None:
    (tmp_path / "test_keeps_a_thread.py").write_text(
        "import threading\nimport time\n\n\n"
        "def test_starts_a_thread_that_never_ends():\n"
        "    threading.Thread(target=time.sleep, args=(10**6,)).start()\n"
    )
    rc, out, verdicts = harness(None, "--timeout", "3", "--", str(tmp_path), "-p", "no:cacheprovider", cwd=tmp_path)
    assert rc == 1, out
    assert "did not exit within 3 s of the suite's end (killed)" in out, out
    assert any(line.endswith("passed") or "  passed" in line for line in verdicts.values()), out


def test_a_suite_whose_collection_hangs_is_killed_and_named(tmp_path: Path) -> None:
    # An import that never returns (here a lock taken twice at module level) would keep the session
    # waiting forever: the worker is killed after --collect-timeout, with every thread's stack.
    (tmp_path / "test_hangs_on_import.py").write_text(
        "import threading\n\n_lock = threading.Lock()\n_lock.acquire()\n_lock.acquire()\n\n\n"
        "def test_never_collected():\n    pass\n"
    )
    rc, out, _ = harness(None, "--collect-timeout", "2", "--", str(tmp_path), "-p", "no:cacheprovider", cwd=tmp_path)
    assert rc == 1, out
    assert "did not collect the suite within 2 s (killed; every thread's stack is below)" in out, out
    assert "test_hangs_on_import.py" in out, out  # the stuck import, in the dumped stack


@pytest.mark.parametrize("value", ["0", "-1", "nan"])
def test_a_bad_collect_timeout_is_a_usage_error(value: str) -> None:
    rc, out, _ = harness(None, f"--collect-timeout={value}", "--", "tests")
    assert rc == 2 and "--collect-timeout must be > 0" in out, out


def test_a_suite_whose_every_test_is_skipped_exercised_nothing(tmp_path: Path) -> None:
    (tmp_path / "test_all_skip.py").write_text(
        "import pytest\n\n\n@pytest.mark.skip(reason='not here')\ndef test_one():\n    pass\n\n\n"
        "def test_two():\n    pytest.skip('nor here')\n"
    )
    rc, out, _ = harness(None, "--", str(tmp_path), "-p", "no:cacheprovider", cwd=tmp_path)
    assert rc == 2, out
    assert "2 tests: 2 skipped" in out and "every test was skipped: nothing was exercised" in out, out


def test_bad_leaks_argument_is_a_usage_error() -> None:
    rc, out, _ = harness(None, "--leaks=3", "--", "tests")
    assert rc == 2 and "WARMUP:RUNS" in out, out


def _debug_python() -> str | None:
    """A debug CPython that can run pytest (ci/variants.sh's .venv-debug), or None."""
    for cand in (os.environ.get("FFI_HARNESS_DEBUG_PYTHON"), str(HERE.parents[1] / ".venv-debug" / "bin" / "python")):
        if cand and Path(cand).exists():
            ok = subprocess.run([cand, "-c", "import pytest, sys; sys.gettotalrefcount"], check=False).returncode
            if ok == 0:
                return cand
    return None


def test_gil_on_the_debug_interpreter_names_the_over_decref(
    builds: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    dbg = _debug_python()
    if dbg is None:
        pytest.skip("no debug CPython with pytest (.venv-debug: ci/variants.sh ensure_venv_debug)")
    monkeypatch.setenv("FFI_HARNESS_DEBUG_PYTHON", dbg)  # the release-built fixture loads in it (3.8+ ABI)
    rc, out, v = harness(builds["plain"], "--gil", "--", "tests", "-p", "no:cacheprovider", "-k", "pop_last or add")
    assert rc == 1, out
    assert f"--gil: debug interpreter {dbg}" in out, out
    crash = verdict(v, "test_pop_last_crashes")
    assert crash.startswith("CRASH") and "Fatal Python error" in crash, out
    assert verdict(v, "test_add") == "passed", out


def test_native_counters_hook_names_the_growing_counter(tmp_path: Path) -> None:
    # A conftest-level ffi_harness_counters() (the documented hook): a counter that grows once per run
    # is a LEAK named native:<key>, with nothing else growing; a steady one is not.
    (tmp_path / "conftest.py").write_text(
        "STATE = {'open': 0, 'steady': 3}\ndef ffi_harness_counters():\n    return dict(STATE)\n"
    )
    (tmp_path / "test_counters.py").write_text(
        "from conftest import STATE\n"
        "def test_opens_without_closing():\n"
        "    STATE['open'] += 1\n"
        "def test_opens_and_closes():\n"
        "    STATE['open'] += 1\n"
        "    STATE['open'] -= 1\n"
    )
    p = subprocess.run(
        [sys.executable, "-m", "ffi_harness", "test", "--leaks=1:3", "--", "-p", "no:cacheprovider", str(tmp_path)],
        check=False,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    out = p.stdout + p.stderr
    assert p.returncode == 1, out
    assert re.search(r"test_opens_without_closing  LEAK  native:open \+1/\+1/\+1$", out, re.MULTILINE), out
    assert re.search(r"test_opens_and_closes  passed$", out, re.MULTILINE), out


def test_a_crash_in_a_standard_library_is_headlined_at_the_modules_frame() -> None:
    # A freed path read by Rust's CStr::from_ptr (mutant 15): the headline names the wrapper's function,
    # not core's strlen, as `ffi-harness fuzz` names its site (findings.in_runtime_code).
    from ffi_harness import testrun

    report = (
        "==1==ERROR: AddressSanitizer: heap-use-after-free on address 0x502000a1b2d0\n"
        "READ of size 1 at 0x502000a1b2d0 thread T0\n"
        "    #0 0x7f0a in strlen (/usr/lib/llvm-19/lib/clang/19/lib/linux/libclang_rt.asan-x86_64.so+0x82452)\n"
        "    #1 0x7f0a in core::ffi::c_str::strlen::runtime /rustc/5980761/library/core/src/ffi/c_str.rs:756:22\n"
        "    #2 0x7f0a in native_wrapper::connect /b/wrapper/src/handles/connection.rs:272:31\n"
    )
    m = re.search(r"ERROR: AddressSanitizer.*", report)
    assert m is not None
    headline = testrun._sanitizer_headline(report, m)
    assert headline.endswith("in native_wrapper::connect connection.rs:272"), headline
    cython = report.replace(
        "native_wrapper::connect /b/wrapper/src/handles/connection.rs:272:31",
        "__pyx_pf_3pkg_2_m_9Histogram_2__getitem__ /b/m.c:2301:9",
    )
    cython += "    #3 0x7f0a in __pyx_pw_3pkg_2_m_9Histogram_3__getitem__ /b/m.c:2270:13\n"
    assert testrun._sanitizer_headline(cython, m).endswith("in pkg._m.Histogram.__getitem__ m.c:2301")


def test_the_source_tree_does_not_shadow_the_installed_module(tmp_path: Path) -> None:
    # A project's root holds the package's source without its compiled module (built elsewhere and installed,
    # as `build-ext` does). Plain `pytest tests/` there imports the installed package; `python -m pytest`
    # would import the source directory first and fail. The worker must do what the `pytest` command does.
    project = tmp_path / "project"
    (project / "pkgx").mkdir(parents=True)
    (project / "pkgx" / "__init__.py").write_text("from ._native import answer\n")
    (project / "tests").mkdir()
    (project / "tests" / "test_pkgx.py").write_text(
        "import pkgx\n\n\ndef test_installed_answer():\n    assert pkgx.answer() == 42\n"
    )
    site = tmp_path / "site"
    (site / "pkgx").mkdir(parents=True)
    (site / "pkgx" / "__init__.py").write_text("from ._native import answer\n")
    (site / "pkgx" / "_native.py").write_text("def answer():\n    return 42\n")
    rc, out, v = harness(site, "--", "-p", "no:cacheprovider", "tests", cwd=project)
    assert rc == 0, out
    assert v["tests/test_pkgx.py::test_installed_answer"].endswith("  passed"), out
