"""ci/thirdparty's report: what it prints as this run's must come from this run.

Imported as a module (no package is built or fuzzed here): a fuzz summary left by an earlier run is
labelled as such, and --skip-build reuses an earlier build but never its tests' or fuzzing's outcome.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "ci" / "thirdparty.py"


@pytest.fixture
def thirdparty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    spec = importlib.util.spec_from_file_location("thirdparty_under_test", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while the class is made
    spec.loader.exec_module(mod)
    monkeypatch.setattr(mod, "TP", tmp_path)  # every package directory under tmp_path
    return mod


FUZZ_SUMMARY = {
    "module": "demo",
    "seconds": 15.2,
    "callables": 6,
    "exercised": 6,
    "execs": 1234,
    "exec_per_s": 81.0,
    "native_edges": 99,
    "findings": [],
}


def _package_with_old_summary(tp: ModuleType) -> tuple[object, object]:
    pkg = tp.Package("demo==1.0", "demo", "tests", "why")
    pkg.dir.mkdir(parents=True)
    (pkg.dir / "fuzz.json").write_text(json.dumps(FUZZ_SUMMARY))
    return pkg, tp.Result("demo", "1.0", "demo", "why")


def test_a_summary_from_an_earlier_run_says_so(thirdparty: ModuleType) -> None:
    pkg, res = _package_with_old_summary(thirdparty)
    thirdparty.load_fuzz(pkg, res)  # not fuzzed in this run: fuzz_exit stays None
    row = thirdparty.fuzz_table([res]).splitlines()[-1]
    assert "| earlier run (" in row and "this run" not in row, row


def test_a_summary_from_this_run_says_so(thirdparty: ModuleType) -> None:
    pkg, res = _package_with_old_summary(thirdparty)
    res.fuzz_exit = 0  # what run_fuzz records when it ran
    thirdparty.load_fuzz(pkg, res)
    row = thirdparty.fuzz_table([res]).splitlines()[-1]
    assert "| this run |" in row and "earlier" not in row, row


def test_skip_build_keeps_the_build_but_not_the_outcomes(thirdparty: ModuleType) -> None:
    earlier = thirdparty.Result(
        "demo",
        "1.0",
        "demo",
        "why",
        kind="c",
        build_ok=True,
        build_seconds=3.0,
        instrumentation=["demo.so (yes/yes/yes)"],
        tests_summary="79 passed",
        tests_passed=79,
        tests_exit=0,
        fuzz_exit=1,
        fuzz={"findings": [{"reproduced": True}]},
    )
    fresh = thirdparty.Result("demo", "1.0", "demo", "why")
    res = thirdparty.reuse_build(fresh, thirdparty.asdict(earlier))
    assert (res.kind, res.build_ok, res.instrumentation) == ("c", True, ["demo.so (yes/yes/yes)"])
    assert (res.tests_passed, res.tests_summary, res.tests_exit) == (0, "", None)
    assert (res.fuzz_exit, res.fuzz) == (None, {})
    # And so an expectation this run did not show stays unmet.
    pkg = thirdparty.Package("demo==1.0", "demo", "tests", "why")
    unmet = thirdparty.unmet_expectations([pkg], [res], {"demo"}, set(), False)
    assert unmet and "expected its own tests to pass" in unmet[0], unmet
